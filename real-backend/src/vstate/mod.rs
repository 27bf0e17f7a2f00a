//! KVM-facing state, apart from configuration and persistence: memory, VM, vCPUs.

pub mod memory;
pub mod vcpu;
pub mod vm;

pub use memory::{GuestRegion, MemoryError};
pub use vcpu::{Running, Vcpu, VcpuError, VcpuState};
pub use vm::{Vm, VmError, VmState};

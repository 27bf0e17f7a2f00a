//! KVM-facing state, apart from configuration and persistence: memory, VM, vCPUs.

pub mod memory;
pub mod vcpu;
pub mod vm;

pub use memory::{GuestRegion, MemoryError};
pub use vcpu::{Vcpu, VcpuError, VcpuState, VcpuThread};
pub use vm::{Vm, VmError, VmState};

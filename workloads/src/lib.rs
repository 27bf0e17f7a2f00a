//! Page-dirtying workload models.
//!
//! One [`WorkloadSpec`] (from a scenario file) is checked against a VM's size into a
//! [`Workload`], which a [`WriteStream`] turns into a deterministic sequence of page writes in
//! guest time. The simulator applies those writes to its dirty bitmap; the KVM backend's guest
//! performs the very same writes, so both backends see the same workload.
//!
//! ```text
//!   WorkloadSpec --check(mem, page)--> Workload --WriteStream::new(seed)--> advance_to(t, |page| ..)
//! ```

pub mod pcg;
pub mod spec;
pub mod stream;
pub mod trace;
pub mod units;

pub use spec::{FieldError, Workload, WorkloadSpec};
pub use stream::{
    ceil_u64, f64_to_u64, hash_str, mix64, round_u64, u64_to_f64, writes_by, FnSink, WriteSink,
    WriteStream, TWO_POW_63,
};
pub use units::{Bandwidth, ByteSize, GIB, KIB, MIB};

//! Byte encoding of the machine state moved at switchover: VM-wide state and every vCPU's.

use crate::vstate::{VcpuState, VmState};
use kvm_bindings::kvm_xsave;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state blob truncated at byte {0}")]
    Truncated(usize),
    #[error("state blob has bad magic or version")]
    BadMagic,
}

const MAGIC: u64 = 0x4d49_4753_5354_0001; // "MIGSST" v1

/// Bytes of a plain-data KVM structure.
fn pod<T>(v: &T) -> &[u8] {
    // SAFETY: `T` is one of kvm-bindings' `#[repr(C)]` plain-data structs (integers and arrays
    // of integers, explicit padding fields); they start zero-initialised from `Default` and are
    // filled by the kernel, so every byte is initialised.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

fn pod_from<T: Default>(b: &[u8]) -> T {
    let mut v = T::default();
    let n = std::mem::size_of::<T>();
    assert_eq!(b.len(), n, "pod size mismatch");
    // SAFETY: as in `pod`: any bit pattern is a valid value of these integer-only structs, and
    // exactly `size_of::<T>()` bytes are copied into a properly aligned `T`.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), &mut v as *mut T as *mut u8, n) };
    v
}

struct W(Vec<u8>);
impl W {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn raw(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
}

struct R<'a>(&'a [u8], usize);
impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], StateError> {
        if self.1 + n > self.0.len() {
            return Err(StateError::Truncated(self.1));
        }
        let s = &self.0[self.1..self.1 + n];
        self.1 += n;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, StateError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn raw(&mut self) -> Result<&'a [u8], StateError> {
        let n = self.u64()? as usize;
        self.take(n)
    }
    fn pod<T: Default>(&mut self) -> Result<T, StateError> {
        let b = self.raw()?;
        if b.len() != std::mem::size_of::<T>() {
            return Err(StateError::BadMagic);
        }
        Ok(pod_from(b))
    }
}

/// The whole machine state, encoded.
pub fn encode(vm: &VmState, vcpus: &[VcpuState]) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(16 << 10));
    w.u64(MAGIC);
    w.raw(pod(&vm.pic_master));
    w.raw(pod(&vm.pic_slave));
    w.raw(pod(&vm.ioapic));
    w.raw(pod(&vm.clock));
    w.u64(vcpus.len() as u64);
    for v in vcpus {
        w.u64(v.id);
        w.raw(pod(&v.regs));
        w.raw(pod(&v.sregs));
        w.raw(pod(&v.fpu));
        w.raw(pod(&v.xsave.region));
        w.raw(pod(&v.xcrs));
        w.raw(pod(&v.lapic));
        w.raw(pod(&v.mp_state));
        w.raw(pod(&v.events));
        w.raw(pod(&v.debugregs));
        w.u64(v.tsc_khz as u64);
        w.u64(v.msrs.len() as u64);
        for &(i, d) in &v.msrs {
            w.u64(i as u64);
            w.u64(d);
        }
    }
    w.0
}

pub fn decode(b: &[u8]) -> Result<(VmState, Vec<VcpuState>), StateError> {
    let mut r = R(b, 0);
    if r.u64()? != MAGIC {
        return Err(StateError::BadMagic);
    }
    let vm = VmState {
        pic_master: r.pod()?,
        pic_slave: r.pod()?,
        ioapic: r.pod()?,
        clock: r.pod()?,
    };
    let n = r.u64()?;
    let mut vcpus = Vec::new();
    for _ in 0..n {
        let id = r.u64()?;
        let regs = r.pod()?;
        let sregs = r.pod()?;
        let fpu = r.pod()?;
        let region: [u32; 1024] = {
            let b = r.raw()?;
            if b.len() != 4096 {
                return Err(StateError::BadMagic);
            }
            let mut a = [0u32; 1024];
            for (i, c) in b.chunks_exact(4).enumerate() {
                a[i] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            a
        };
        let xsave = kvm_xsave {
            region,
            ..Default::default()
        };
        let xcrs = r.pod()?;
        let lapic = r.pod()?;
        let mp_state = r.pod()?;
        let events = r.pod()?;
        let debugregs = r.pod()?;
        let tsc_khz = r.u64()? as u32;
        let m = r.u64()?;
        let mut msrs = Vec::with_capacity(m as usize);
        for _ in 0..m {
            let i = r.u64()? as u32;
            msrs.push((i, r.u64()?));
        }
        vcpus.push(VcpuState {
            id,
            regs,
            sregs,
            fpu,
            xsave,
            xcrs,
            lapic,
            mp_state,
            events,
            debugregs,
            msrs,
            tsc_khz,
        });
    }
    Ok((vm, vcpus))
}

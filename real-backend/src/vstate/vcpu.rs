//! vCPUs: configuration, complete state save/restore, and a run thread that can be paused.

use kvm_bindings::{
    kvm_debugregs, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("vCPU call {0} failed: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
    #[error("vCPU {id} stopped unexpectedly: {what}")]
    Exit { id: u64, what: String },
    #[error("cannot set MSRs {0:x?} on the destination")]
    Msrs(Vec<u32>),
    #[error("vCPU thread panicked")]
    Panicked,
    #[error("vCPU thread did not stop within {0:?}")]
    StopTimeout(Duration),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VcpuError {
    move |e| VcpuError::Kvm(what, e)
}

/// Everything KVM exposes about one x86 vCPU (Firecracker's checklist).
pub struct VcpuState {
    pub id: u64,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub fpu: kvm_fpu,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub lapic: kvm_lapic_state,
    pub mp_state: kvm_mp_state,
    pub events: kvm_vcpu_events,
    pub debugregs: kvm_debugregs,
    /// (index, value) of every MSR KVM lets us read, IA32_TSC included.
    pub msrs: Vec<(u32, u64)>,
    pub tsc_khz: u32,
}

/// MSR holding the guest's time-stamp counter.
pub const MSR_IA32_TSC: u32 = 0x10;

pub struct Vcpu {
    pub fd: VcpuFd,
    pub id: u64,
    /// MSRs that read back successfully on this host.
    msr_list: Vec<u32>,
}

impl Vcpu {
    pub(crate) fn new(fd: VcpuFd, id: u64, kvm_sys: &Kvm) -> Result<Vcpu, VcpuError> {
        let list = kvm_sys
            .get_msr_index_list()
            .map_err(kvm("KVM_GET_MSR_INDEX_LIST"))?;
        // Keep only MSRs this host lets us read (nested KVM refuses some of the advertised ones).
        let mut msr_list = Vec::new();
        for &idx in list.as_slice() {
            if read_msrs(&fd, &[idx])
                .map(|v| v.len() == 1)
                .unwrap_or(false)
            {
                msr_list.push(idx);
            }
        }
        Ok(Vcpu { fd, id, msr_list })
    }

    pub(crate) fn set_cpuid(&self, cpuid: &CpuId) -> Result<(), VcpuError> {
        self.fd.set_cpuid2(cpuid).map_err(kvm("KVM_SET_CPUID2"))
    }

    /// Read one MSR.
    pub fn msr(&self, idx: u32) -> Result<u64, VcpuError> {
        let v = read_msrs(&self.fd, &[idx])?;
        v.first().map(|e| e.1).ok_or(VcpuError::Kvm(
            "KVM_GET_MSRS",
            kvm_ioctls::Error::new(libc::EINVAL),
        ))
    }

    pub fn save(&self) -> Result<VcpuState, VcpuError> {
        let fd = &self.fd;
        Ok(VcpuState {
            id: self.id,
            mp_state: fd.get_mp_state().map_err(kvm("KVM_GET_MP_STATE"))?,
            regs: fd.get_regs().map_err(kvm("KVM_GET_REGS"))?,
            sregs: fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?,
            fpu: fd.get_fpu().map_err(kvm("KVM_GET_FPU"))?,
            xsave: fd.get_xsave().map_err(kvm("KVM_GET_XSAVE"))?,
            xcrs: fd.get_xcrs().map_err(kvm("KVM_GET_XCRS"))?,
            lapic: fd.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?,
            events: fd.get_vcpu_events().map_err(kvm("KVM_GET_VCPU_EVENTS"))?,
            debugregs: fd.get_debug_regs().map_err(kvm("KVM_GET_DEBUGREGS"))?,
            msrs: read_msrs(fd, &self.msr_list)?,
            tsc_khz: fd.get_tsc_khz().map_err(kvm("KVM_GET_TSC_KHZ"))?,
        })
    }

    /// Load a saved state (order as in Firecracker: sregs before regs, LAPIC before events,
    /// MSRs with the TSC after the rest).
    pub fn restore(&self, s: &VcpuState) -> Result<(), VcpuError> {
        let fd = &self.fd;
        if s.tsc_khz != 0 && fd.get_tsc_khz().ok() != Some(s.tsc_khz) {
            fd.set_tsc_khz(s.tsc_khz).map_err(kvm("KVM_SET_TSC_KHZ"))?;
        }
        fd.set_sregs(&s.sregs).map_err(kvm("KVM_SET_SREGS"))?;
        fd.set_regs(&s.regs).map_err(kvm("KVM_SET_REGS"))?;
        fd.set_xsave(&s.xsave).map_err(kvm("KVM_SET_XSAVE"))?;
        fd.set_xcrs(&s.xcrs).map_err(kvm("KVM_SET_XCRS"))?;
        fd.set_fpu(&s.fpu).map_err(kvm("KVM_SET_FPU"))?;
        fd.set_debug_regs(&s.debugregs)
            .map_err(kvm("KVM_SET_DEBUGREGS"))?;
        fd.set_lapic(&s.lapic).map_err(kvm("KVM_SET_LAPIC"))?;
        fd.set_mp_state(s.mp_state)
            .map_err(kvm("KVM_SET_MP_STATE"))?;
        fd.set_vcpu_events(&s.events)
            .map_err(kvm("KVM_SET_VCPU_EVENTS"))?;
        let (rest, tsc): (Vec<_>, Vec<_>) = s.msrs.iter().partition(|e| e.0 != MSR_IA32_TSC);
        write_msrs(fd, &rest)?;
        write_msrs(fd, &tsc)?;
        Ok(())
    }

    /// Start running this vCPU on its own thread.
    pub fn start(self) -> Running {
        install_kick_handler();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name(format!("vcpu{}", self.id))
            .spawn(move || {
                let mut v = self;
                let r = v.run_until(&stop2);
                (v, r)
            });
        Running {
            // Spawning a thread only fails when the OS is out of resources; the caller sees it
            // as a panic-like failure on stop.
            handle: handle.ok(),
            stop,
        }
    }

    fn run_until(&mut self, stop: &AtomicBool) -> Result<(), VcpuError> {
        let id = self.id;
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            match self.fd.run() {
                Ok(VcpuExit::Intr) => {}
                Ok(VcpuExit::IoOut(..)) | Ok(VcpuExit::IoIn(..)) => {}
                Ok(other) => {
                    return Err(VcpuError::Exit {
                        id,
                        what: format!("{other:?}"),
                    })
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Err(e) => return Err(VcpuError::Kvm("KVM_RUN", e)),
            }
        }
    }
}

fn read_msrs(fd: &VcpuFd, idx: &[u32]) -> Result<Vec<(u32, u64)>, VcpuError> {
    let mut out = Vec::with_capacity(idx.len());
    for chunk in idx.chunks(kvm_bindings::KVM_MAX_MSR_ENTRIES) {
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries)
            .map_err(|_| VcpuError::Kvm("KVM_GET_MSRS", kvm_ioctls::Error::new(libc::E2BIG)))?;
        let n = fd.get_msrs(&mut msrs).map_err(kvm("KVM_GET_MSRS"))?;
        out.extend(msrs.as_slice()[..n].iter().map(|e| (e.index, e.data)));
    }
    Ok(out)
}

fn write_msrs(fd: &VcpuFd, list: &[&(u32, u64)]) -> Result<(), VcpuError> {
    let mut failed = Vec::new();
    let mut rest: Vec<kvm_msr_entry> = list
        .iter()
        .map(|e| kvm_msr_entry {
            index: e.0,
            data: e.1,
            ..Default::default()
        })
        .collect();
    // KVM stops at the first MSR it refuses: record it and carry on after it.
    while !rest.is_empty() {
        let msrs = Msrs::from_entries(&rest)
            .map_err(|_| VcpuError::Kvm("KVM_SET_MSRS", kvm_ioctls::Error::new(libc::E2BIG)))?;
        let n = fd.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
        if n >= rest.len() {
            break;
        }
        failed.push(rest[n].index);
        rest.drain(..=n);
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(VcpuError::Msrs(failed))
    }
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + 1
}

fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A failure leaves the default action (terminate) in place; registering a handler for
        // a real-time signal does not fail in practice, and a kick would then be fatal, loudly.
        let _ = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler);
    });
}

/// A vCPU running on its thread.
pub struct Running {
    handle: Option<JoinHandle<(Vcpu, Result<(), VcpuError>)>>,
    stop: Arc<AtomicBool>,
}

impl Running {
    /// True when the vCPU thread has ended by itself (a guest crash or KVM error).
    pub fn has_died(&self) -> bool {
        self.handle.as_ref().map_or(true, |h| h.is_finished())
    }

    /// Stop the vCPU: ask, kick it out of KVM_RUN with a signal until the thread ends, and
    /// return it with the reason it ended (Ok when it was stopped on request).
    pub fn stop(mut self) -> Result<(Vcpu, Result<(), VcpuError>), VcpuError> {
        self.stop.store(true, Ordering::Release);
        let h = self.handle.take().ok_or(VcpuError::Panicked)?;
        let t0 = Instant::now();
        let limit = Duration::from_secs(5);
        while !h.is_finished() {
            // SAFETY: the thread handle is alive (not joined yet), so its pthread_t is valid;
            // the signal has a no-op handler installed in `start`.
            unsafe {
                libc::pthread_kill(h.as_pthread_t(), kick_signal());
            }
            if t0.elapsed() > limit {
                return Err(VcpuError::StopTimeout(limit));
            }
            // Spin briefly (the pause latency is part of the blackout), then re-kick in case
            // the signal arrived before the thread entered KVM_RUN.
            let spin = Instant::now();
            while !h.is_finished() && spin.elapsed() < Duration::from_micros(200) {
                std::hint::spin_loop();
            }
        }
        h.join().map_err(|_| VcpuError::Panicked)
    }
}

//! vCPUs: configuration, complete state save/restore, and a run thread that can be paused.

use kvm_bindings::{
    kvm_debugregs, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once};
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

    /// Give this vCPU its own thread. The thread enters KVM_RUN once with `immediate_exit` set
    /// (so KVM binds the vCPU to it now rather than in a later blackout: a vCPU changing threads
    /// costs an RCU grace period, milliseconds) and then waits, parked, for [`VcpuThread::resume`].
    pub fn spawn(self) -> Result<VcpuThread, VcpuError> {
        install_kick_handler();
        let shared = Arc::new(Shared {
            ctl: Mutex::new(Ctl {
                cmd: Cmd::Pause,
                state: St::Starting,
            }),
            cv: Condvar::new(),
            stop: AtomicBool::new(true),
            vcpu: Mutex::new(self),
            tid: std::sync::atomic::AtomicI32::new(0),
        });
        let sh = shared.clone();
        let handle = std::thread::Builder::new()
            .name("vcpu".into())
            .spawn(move || vcpu_thread(&sh))
            .map_err(|_| VcpuError::Panicked)?;
        let t = VcpuThread {
            shared,
            handle: Some(handle),
        };
        t.wait_parked(Duration::from_secs(5))?;
        Ok(t)
    }

    fn run_until(&mut self, stop: &AtomicBool) -> Result<(), VcpuError> {
        let id = self.id;
        loop {
            if stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let r = self.fd.run();
            match r {
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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cmd {
    Run,
    Pause,
    Exit,
}

#[derive(Debug)]
enum St {
    Starting,
    Parked,
    Running,
    Dead(String),
}

struct Shared {
    ctl: Mutex<Ctl>,
    cv: Condvar,
    /// Raised to make the run loop return to userspace and park.
    stop: AtomicBool,
    vcpu: Mutex<Vcpu>,
    /// Kernel thread id of the vCPU thread (for `setpriority`).
    tid: std::sync::atomic::AtomicI32,
}

struct Ctl {
    cmd: Cmd,
    state: St,
}

/// Whether the kernel throttles real-time threads (so a spinning SCHED_FIFO thread cannot take
/// a CPU away from everything else for good).
pub fn rt_throttled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/sched_rt_runtime_us")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .is_some_and(|v| v >= 0)
}

/// Put a thread in SCHED_FIFO at `prio` (`None`: back to SCHED_OTHER). Only where the kernel
/// throttles real-time threads; failures (no privilege) are ignored: priority only changes
/// timing, never behaviour.
pub fn set_realtime(thread: libc::pthread_t, prio: Option<i32>) {
    if !rt_throttled() {
        return;
    }
    let (policy, p) = match prio {
        Some(p) => (libc::SCHED_FIFO, p),
        None => (libc::SCHED_OTHER, 0),
    };
    let param = libc::sched_param { sched_priority: p };
    // SAFETY: `thread` is a live thread of this process (callers pass their own or an unjoined
    // vCPU thread's id) and `param` is a valid sched_param for the policy.
    unsafe { libc::pthread_setschedparam(thread, policy, &param) };
}

/// The calling thread's id, for [`set_realtime`].
pub fn current_thread() -> libc::pthread_t {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() }
}

fn vcpu_thread(sh: &Shared) {
    // SAFETY: gettid has no preconditions.
    sh.tid.store(unsafe { libc::gettid() }, Ordering::Release);
    // Bind the vCPU to this thread: one KVM_RUN that returns at once.
    if let Ok(mut v) = sh.vcpu.lock() {
        v.fd.set_kvm_immediate_exit(1);
        let _ = v.fd.run();
        v.fd.set_kvm_immediate_exit(0);
    }
    loop {
        {
            let Ok(mut c) = sh.ctl.lock() else { return };
            while c.cmd == Cmd::Pause {
                if !matches!(c.state, St::Dead(_)) {
                    c.state = St::Parked;
                }
                sh.cv.notify_all();
                c = match sh.cv.wait(c) {
                    Ok(c) => c,
                    Err(_) => return,
                };
            }
            if c.cmd == Cmd::Exit {
                return;
            }
            c.state = St::Running;
        }
        let r = match sh.vcpu.lock() {
            Ok(mut v) => v.run_until(&sh.stop),
            Err(_) => Err(VcpuError::Panicked),
        };
        let Ok(mut c) = sh.ctl.lock() else { return };
        if let Err(e) = r {
            c.state = St::Dead(e.to_string());
            c.cmd = Cmd::Pause;
        } else if c.cmd == Cmd::Run {
            // Stopped without a pause command (cannot happen: `stop` is only raised by pause).
            c.cmd = Cmd::Pause;
        }
        sh.cv.notify_all();
    }
}

/// A vCPU with its own thread; parked or running.
pub struct VcpuThread {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl VcpuThread {
    /// Run the guest.
    pub fn resume(&self) -> Result<(), VcpuError> {
        let mut c = self.shared.ctl.lock().map_err(|_| VcpuError::Panicked)?;
        if let St::Dead(e) = &c.state {
            return Err(VcpuError::Exit {
                id: 0,
                what: e.clone(),
            });
        }
        self.shared.stop.store(false, Ordering::Release);
        c.cmd = Cmd::Run;
        self.shared.cv.notify_all();
        Ok(())
    }

    /// True when the guest stopped by itself (a crash or a KVM error).
    pub fn has_died(&self) -> bool {
        self.shared
            .ctl
            .lock()
            .map_or(true, |c| matches!(c.state, St::Dead(_)))
    }

    /// Stop the guest and park the thread: raise the stop flag, call `request` (e.g. to set
    /// the guest's pause-request word so it exits by itself), and kick the thread with a signal
    /// until it is parked. Returns an error when the guest had died.
    pub fn pause_with(&self, request: impl FnOnce()) -> Result<(), VcpuError> {
        self.shared.stop.store(true, Ordering::Release);
        {
            let mut c = self.shared.ctl.lock().map_err(|_| VcpuError::Panicked)?;
            c.cmd = Cmd::Pause;
        }
        request();
        let t0 = Instant::now();
        let limit = Duration::from_secs(5);
        loop {
            {
                let c = self.shared.ctl.lock().map_err(|_| VcpuError::Panicked)?;
                match &c.state {
                    St::Parked => return Ok(()),
                    St::Dead(e) => {
                        return Err(VcpuError::Exit {
                            id: 0,
                            what: e.clone(),
                        })
                    }
                    _ => {}
                }
            }
            if t0.elapsed() > limit {
                return Err(VcpuError::StopTimeout(limit));
            }
            if t0.elapsed() < Duration::from_millis(KICK_AFTER_MS) {
                std::hint::spin_loop();
                continue;
            }
            if let Some(h) = &self.handle {
                // SAFETY: the thread has not been joined, so its pthread_t is valid; the signal
                // has a no-op handler (installed in `spawn`) and only interrupts KVM_RUN.
                unsafe {
                    libc::pthread_kill(h.as_pthread_t(), kick_signal());
                }
            }
            let spin = Instant::now();
            while spin.elapsed() < Duration::from_micros(100) {
                if let Ok(c) = self.shared.ctl.try_lock() {
                    if !matches!(c.state, St::Running) {
                        break;
                    }
                }
                std::hint::spin_loop();
            }
        }
    }

    pub fn pause(&self) -> Result<(), VcpuError> {
        self.pause_with(|| {})
    }

    fn wait_parked(&self, limit: Duration) -> Result<(), VcpuError> {
        let c = self.shared.ctl.lock().map_err(|_| VcpuError::Panicked)?;
        let (c, _) = self
            .shared
            .cv
            .wait_timeout_while(c, limit, |c| matches!(c.state, St::Starting))
            .map_err(|_| VcpuError::Panicked)?;
        if matches!(c.state, St::Starting) {
            return Err(VcpuError::StopTimeout(limit));
        }
        Ok(())
    }

    /// Give the vCPU thread real-time priority for a switchover (`None` restores it). On a
    /// host whose CPUs are busy with other work, an ordinary thread waits for the scheduler's
    /// tick (4 ms here) both to see a pause request and to start after a resume.
    pub fn set_realtime(&self, prio: Option<i32>) {
        if let Some(h) = &self.handle {
            set_realtime(h.as_pthread_t(), prio);
        }
    }

    /// Set the vCPU thread's nice value (a softer boost than [`VcpuThread::set_realtime`]: the
    /// thread stays in the fair class, so kernel helpers KVM needs on its CPU still run).
    pub fn set_nice(&self, nice: i32) {
        let tid = self.shared.tid.load(Ordering::Acquire);
        if tid > 0 {
            // SAFETY: plain syscall on a thread id of this process; failure only leaves the
            // priority unchanged.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
        }
    }

    /// The vCPU, for state save/restore while parked (blocks while it runs).
    pub fn vcpu(&self) -> Result<MutexGuard<'_, Vcpu>, VcpuError> {
        self.shared.vcpu.lock().map_err(|_| VcpuError::Panicked)
    }
}

impl Drop for VcpuThread {
    fn drop(&mut self) {
        let _ = self.pause();
        if let Ok(mut c) = self.shared.ctl.lock() {
            c.cmd = Cmd::Exit;
            self.shared.cv.notify_all();
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
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

/// Port-I/O exits seen by all vCPU threads of this process (diagnostics).
pub static IO_EXITS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The guest's own pause exit normally ends KVM_RUN; signals are the fallback after this long.
const KICK_AFTER_MS: u64 = 1;

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

//! The source VMM: runs the guest, drives pre-copy rounds under a shared [`Policy`], and does the
//! stop-and-copy.
//!
//! Bookkeeping mirrors `sim::migration`: a *sync* harvests the dirty log (KVM's bits OR the
//! VMM's own bits for pages it wrote) into the send set and starts the next round; the sender
//! walks the send set in address order from a cursor; Trigger::Start before round 0, RoundEnd
//! when the send set is exhausted (Continue = sync and go on), Tick every `policy.tick_ns()`,
//! AfterSync after a requested sync. Page index space: RAM pages first, then the system region.

use crate::feeder::{Feeder, TscClock, VmmDirty};
use crate::guest::{self, ctrl, GuestMode, Layout, CTRL_OFF, PAGE};
use crate::transport::{
    self, kind, mono_ns, put_u64s, read_frame, PacedSender, PageBatch, TransportError, SYS_FLAG,
};
use crate::vstate::vcpu::MSR_IA32_TSC;
use crate::vstate::vm::{RAM_SLOT, SYS_SLOT};
use crate::vstate::{Vcpu, VcpuError, VcpuThread, Vm, VmError};
use crate::{DestLaunch, DestProgress, RealError, RealOptions, RealRun};
use sim::bitmap::Bitmap;
use sim::metrics::{Downtime, RoundRecord, RunReport, RunResult, Status};
use sim::migration::{initial_zero_pages, run_seed, transfer_ns, MAX_ROUNDS};
use sim::policy::{Decision, Observation, Policy, RoundSummary, StopReason, Trigger};
use sim::Checked;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workloads::mix64;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("scenario not supported by the real backend: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("cannot start the destination: {0}")]
    Launch(std::io::Error),
    #[error("integrity check failed: {0}")]
    Integrity(String),
}

/// Pages per frame.
const BATCH_PAGES: usize = 64;
/// Links at or above this rate are not paced at all (loopback speed).
pub const UNPACED_BPS: f64 = 1e11;
/// Wire bytes of a full page in this protocol (8-byte word + data), frame headers aside.
pub const PAGE_WIRE: u64 = PAGE + 8;

/// Fill the initial contents: pages the scenario says are non-zero get a pattern derived from
/// their index (byte [`guest::CHECK_BYTE`] stays 0 so the check loop starts consistent).
fn fill_initial(vm: &Vm, ck: &Checked, seed: u64) {
    let zero = initial_zero_pages(
        ck.mem_pages,
        ck.scenario.vm.zero_page_fraction,
        mix64(seed, 0x2E80),
    );
    let mut page = vec![0u8; PAGE as usize];
    for p in 0..ck.mem_pages {
        if zero.get(p) {
            continue;
        }
        for (k, c) in page.chunks_exact_mut(8).enumerate() {
            c.copy_from_slice(&mix64(p, k as u64).to_le_bytes());
        }
        page[guest::CHECK_BYTE as usize] = 0;
        vm.ram.write(p * PAGE, &page);
    }
}

pub(crate) fn link_rates(ck: &Checked, policy: &dyn Policy) -> (Option<f64>, Option<f64>) {
    let link = ck.scenario.link.bandwidth.0;
    let pre = policy.max_bandwidth_bps().map_or(link, |m| m.min(link));
    let f = |r: f64| if r >= UNPACED_BPS { None } else { Some(r) };
    (f(pre), f(link))
}

/// A started destination.
pub(crate) enum DestHandle {
    Child(Child),
    Thread(std::thread::JoinHandle<Result<crate::DestReport, crate::DestError>>),
}

impl DestHandle {
    pub(crate) fn kill(&mut self) {
        if let DestHandle::Child(c) = self {
            let _ = c.kill();
        }
    }
    pub(crate) fn reap(self, wait: Duration) {
        match self {
            DestHandle::Child(mut c) => {
                let t = Instant::now();
                while t.elapsed() < wait {
                    if let Ok(Some(_)) = c.try_wait() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
            DestHandle::Thread(h) => {
                let _ = h.join();
            }
        }
    }
}

/// Bind a loopback listener, start the destination, and accept its connection.
pub(crate) fn connect_dest(launch: &DestLaunch) -> Result<(TcpStream, DestHandle), SourceError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(SourceError::Launch)?;
    let addr = l.local_addr().map_err(SourceError::Launch)?;
    let mut handle = match launch {
        DestLaunch::Process { program, args } => {
            let a = addr.to_string();
            let mut argv: Vec<String> = args.iter().map(|x| x.replace("{addr}", &a)).collect();
            if !args.iter().any(|x| x.contains("{addr}")) {
                argv.push("--connect".into());
                argv.push(a);
            }
            let child = Command::new(program)
                .args(argv)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map_err(SourceError::Launch)?;
            DestHandle::Child(child)
        }
        DestLaunch::Thread => {
            let h = std::thread::Builder::new()
                .name("dest".into())
                .spawn(move || {
                    let s = TcpStream::connect(addr).map_err(crate::DestError::Connect)?;
                    crate::dest::serve(s, &crate::dest::DestOptions::default())
                })
                .map_err(SourceError::Launch)?;
            DestHandle::Thread(h)
        }
    };
    l.set_nonblocking(true).map_err(SourceError::Launch)?;
    let t = Instant::now();
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(SourceError::Launch)?;
                return Ok((s, handle));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let DestHandle::Child(c) = &mut handle {
                    if let Ok(Some(st)) = c.try_wait() {
                        return Err(SourceError::Launch(std::io::Error::other(format!(
                            "destination exited before connecting ({st})"
                        ))));
                    }
                }
                if t.elapsed() > Duration::from_secs(20) {
                    handle.kill();
                    return Err(SourceError::Launch(std::io::Error::other(
                        "destination did not connect within 20 s",
                    )));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(SourceError::Launch(e)),
        }
    }
}

/// Frames (or the link error that ended them) from the destination.
pub(crate) type FrameRx = Receiver<Result<(u8, Vec<u8>), TransportError>>;

/// Messages from the destination, read on their own thread.
pub(crate) fn spawn_reader(s: &TcpStream) -> std::io::Result<FrameRx> {
    let mut r = std::io::BufReader::new(s.try_clone()?);
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("dest-reader".into())
        .spawn(move || loop {
            let f = read_frame(&mut r);
            let end = f.is_err();
            if tx.send(f).is_err() || end {
                return;
            }
        })?;
    Ok(rx)
}

/// Wait for a frame of `want` kind from the destination; ERROR frames and link errors become
/// the failure reason.
pub(crate) fn expect(rx: &FrameRx, want: u8, timeout: Duration) -> Result<Vec<u8>, String> {
    match rx.recv_timeout(timeout) {
        Ok(Ok((k, p))) if k == want => Ok(p),
        Ok(Ok((kind::ERROR, p))) => Err(format!("destination: {}", String::from_utf8_lossy(&p))),
        Ok(Ok((k, _))) => Err(format!(
            "protocol: unexpected frame kind {k} (wanted {want})"
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Err(RecvTimeoutError::Timeout) => {
            Err(format!("no answer from the destination within {timeout:?}"))
        }
        Err(RecvTimeoutError::Disconnected) => Err("link: connection lost".into()),
    }
}

pub(crate) fn hello(ck: &Checked, opts: &RealOptions, vcpus: u64, one_way_ns: u64) -> Vec<u8> {
    let mut p = put_u64s(&[
        ck.mem_bytes(),
        vcpus,
        opts.mode.as_u8() as u64,
        opts.verify as u64,
        opts.run_after_ms,
        one_way_ns,
        opts.realtime_switchover as u64,
        opts.replicate as u64,
    ]);
    // The scenario itself, so the destination can carry the workload on.
    p.extend_from_slice(ck.scenario.to_toml().as_bytes());
    p
}

enum Outcome {
    Running,
    Stop(StopReason, String),
    End(Status, String),
}

struct Driver<'a> {
    ck: &'a Checked,
    opts: &'a RealOptions,
    vm: Arc<Vm>,
    vmm_dirty: Arc<VmmDirty>,
    policy: Box<dyn Policy>,
    link: PacedSender,
    rx: FrameRx,
    dest: Option<DestHandle>,
    cpu: VcpuThread,
    others: Vec<Vcpu>,
    feeder: Option<Feeder>,
    t_start: u64,
    ram_pages: u64,
    final_bps: Option<f64>,
    // memory state
    send: Bitmap,
    dirty: Bitmap,
    sent_once: Bitmap,
    cursor: u64,
    batch: PageBatch,
    idx: Vec<u64>,
    page_buf: Vec<u8>,
    trace: Vec<Bitmap>,
    harvests: Vec<crate::Harvest>,
    round_start_writes: u64,
    // counters (as in the simulator)
    total_bytes: u64,
    total_pages: u64,
    zero_sent: u64,
    resent: u64,
    round: u32,
    round_start: u64,
    round_bytes: u64,
    round_pages: u64,
    round_zero: u64,
    last_round: Option<RoundSummary>,
    last_bw: f64,
    rounds: Vec<RoundRecord>,
    throttle: u8,
    max_throttle: u8,
}

impl<'a> Driver<'a> {
    fn now(&self) -> u64 {
        mono_ns() - self.t_start
    }

    /// OR the current dirty log (KVM's RAM and system bits plus the VMM's own) into `dirty`;
    /// `clear` makes it a harvest.
    fn collect_dirty(&mut self, clear: bool) -> Result<(), SourceError> {
        let mut words = self.vm.dirty_log(RAM_SLOT, clear)?;
        let sys = self.vm.dirty_log(SYS_SLOT, clear)?;
        let vmm = self.vmm_dirty.collect(clear);
        words.extend(sys.iter().zip(vmm.iter()).map(|(a, b)| a | b));
        self.dirty.or_words(&words);
        Ok(())
    }

    fn observe(&self, trigger: Trigger) -> Observation {
        Observation {
            trigger,
            elapsed_ns: self.now(),
            round: self.round,
            mem_bytes: self.ck.mem_bytes(),
            page_size: PAGE,
            page_wire_bytes: PAGE_WIRE,
            total_bytes_sent: self.total_bytes,
            total_pages_sent: self.total_pages,
            round_bytes_sent: self.round_bytes,
            round_pages_sent: self.round_pages,
            round_elapsed_ns: self.now().saturating_sub(self.round_start),
            remaining_pages: self.send.count(),
            dirty_pages: self.dirty.count(),
            last_round: self.last_round,
            bandwidth_bps: self.last_bw,
            dirty_rate_pps: self.last_round.map_or(0.0, |r| {
                if r.duration_ns == 0 {
                    0.0
                } else {
                    r.pages_dirtied as f64 * 1e9 / r.duration_ns as f64
                }
            }),
            throttle_pct: self.throttle,
            vcpus: 1 + self.others.len() as u32,
        }
    }

    fn close_round(&mut self, t: u64) {
        let dur = t.saturating_sub(self.round_start);
        let bw = if dur > 0 {
            self.round_bytes as f64 * 8e9 / dur as f64
        } else {
            self.last_bw
        };
        let dirtied = self.dirty.count();
        let writes = self.vm.sys.read_u64(CTRL_OFF + ctrl::CONSUMED);
        let est_bw = if bw > 0.0 { bw } else { self.last_bw };
        self.rounds.push(RoundRecord {
            round: self.round,
            start_ns: self.round_start,
            duration_ns: dur,
            pages_sent: self.round_pages,
            zero_pages_sent: self.round_zero,
            bytes_sent: self.round_bytes,
            pages_dirtied: dirtied,
            bandwidth_bps: bw,
            // (A page both left to send and dirtied again goes once: at a sync in mid-pass
            // the two sets overlap.)
            est_downtime_ns: transfer_ns(self.send.union_count(&self.dirty) * PAGE_WIRE, est_bw),
            throttle_pct: self.throttle,
            guest_writes: writes - self.round_start_writes,
        });
        self.round_start_writes = writes;
        self.last_round = Some(RoundSummary {
            round: self.round,
            duration_ns: dur,
            pages_sent: self.round_pages,
            bytes_sent: self.round_bytes,
            pages_dirtied: dirtied,
        });
        if dur > 0 && self.round_bytes > 0 {
            self.last_bw = bw;
        }
    }

    fn set_throttle_ppm(&mut self, ppm: u32) {
        let ppm = ppm.min(990_000);
        self.throttle = (ppm / 10_000) as u8;
        self.max_throttle = self.max_throttle.max(self.throttle);
        if let Some(f) = &self.feeder {
            f.throttle_ppm
                .store(ppm, std::sync::atomic::Ordering::Release);
        }
    }

    fn sync(&mut self) -> Result<(), SourceError> {
        let h0 = mono_ns();
        self.collect_dirty(true)?;
        self.harvests.push(crate::Harvest {
            dirty_pages: self.dirty.count(),
            ns: mono_ns() - h0,
        });
        let t = self.now();
        self.close_round(t);
        if self.opts.record_trace {
            self.trace.push(self.dirty.clone());
        }
        self.send.or_with(&self.dirty);
        self.dirty.clear_all();
        self.round += 1;
        self.round_start = t;
        self.round_bytes = 0;
        self.round_pages = 0;
        self.round_zero = 0;
        Ok(())
    }

    /// Up to `max` page indices from the send set, from the cursor, wrapping.
    fn next_indices(&mut self, max: usize) {
        self.idx.clear();
        let words = self.send.words().len();
        if words == 0 {
            return;
        }
        let start = (self.cursor / 64) as usize % words;
        let mut wi = start;
        let mut scanned = 0;
        while self.idx.len() < max && self.send.count() > 0 && scanned <= words {
            let mut w = self.send.word(wi);
            if scanned == 0 {
                w &= !0u64 << (self.cursor % 64);
            }
            while w != 0 && self.idx.len() < max {
                let i = wi as u64 * 64 + w.trailing_zeros() as u64;
                w &= w - 1;
                self.send.clear(i);
                self.idx.push(i);
                self.cursor = i + 1;
            }
            if self.idx.len() >= max {
                break;
            }
            wi = (wi + 1) % words;
            scanned += 1;
            self.cursor = wi as u64 * 64;
        }
    }

    /// Send one frame of pages from the send set. Returns (pages, zero pages, wire bytes).
    fn send_batch(&mut self) -> Result<(u64, u64, u64), TransportError> {
        self.next_indices(BATCH_PAGES);
        self.batch.clear();
        for k in 0..self.idx.len() {
            let i = self.idx[k];
            let (region, off, word) = if i < self.ram_pages {
                (&self.vm.ram, i * PAGE, i)
            } else {
                let s = i - self.ram_pages;
                (&self.vm.sys, s * PAGE, s | SYS_FLAG)
            };
            region.read(off, &mut self.page_buf);
            self.batch.push(word, &self.page_buf);
            if self.sent_once.set(i) {
            } else {
                self.resent += 1;
            }
        }
        let n = self.link.send(kind::PAGES, &self.batch.buf)? as u64;
        if let Some(at) = self.opts.faults.kill_dest_after_bytes {
            if self.link.bytes >= at {
                if let Some(d) = &mut self.dest {
                    d.kill();
                }
            }
        }
        let (p, z) = (self.batch.pages, self.batch.zero);
        self.total_pages += p;
        self.total_bytes += n;
        self.zero_sent += z;
        self.round_pages += p;
        self.round_bytes += n;
        self.round_zero += z;
        Ok((p, z, n))
    }

    fn apply(&mut self, d: Decision, round_end: bool) -> Result<Outcome, SourceError> {
        Ok(match d {
            Decision::Stop(r, why) => Outcome::Stop(r, why),
            Decision::Cancel(why) => Outcome::End(Status::Cancelled, why),
            Decision::Throttle(pct) => {
                self.set_throttle_ppm(pct.min(99) as u32 * 10_000);
                return self.apply(Decision::Continue, round_end);
            }
            Decision::LimitDirtyRate(pps) => {
                // As the simulator: the cap slows guest time by the ratio to the nominal rate.
                let nominal = self.ck.workload.nominal_rate_pps();
                let ppm = if nominal > pps && nominal > 0.0 {
                    ((1.0 - pps / nominal) * 1e6) as u32
                } else {
                    0
                };
                self.set_throttle_ppm(ppm);
                return self.apply(Decision::Continue, round_end);
            }
            Decision::PostCopy(why) => Outcome::Stop(
                StopReason::Forced,
                format!("{why}; post-copy is not implemented by the kvm backend, so stop-and-copy"),
            ),
            Decision::Continue if !round_end => Outcome::Running,
            Decision::Continue | Decision::Sync => {
                if self.round + 1 >= MAX_ROUNDS {
                    return Ok(Outcome::End(
                        Status::Timeout,
                        format!("iteration cap of {MAX_ROUNDS} rounds reached"),
                    ));
                }
                self.sync()?;
                if d == Decision::Sync {
                    let d2 = self.policy.decide(&self.observe(Trigger::AfterSync));
                    if d2 != Decision::Sync {
                        return self.apply(d2, false);
                    }
                }
                Outcome::Running
            }
        })
    }

    /// Pre-copy until the policy stops, cancels, or the link fails (Err(reason)).
    fn precopy(&mut self) -> Result<Result<Outcome, String>, SourceError> {
        let max_ns = (self.ck.scenario.limits.max_time_s * 1e9) as u64;
        let first = self.policy.decide(&self.observe(Trigger::Start));
        let mut out = match first {
            Decision::Stop(r, w) => Outcome::Stop(r, w),
            Decision::Cancel(w) => Outcome::End(Status::Cancelled, w),
            Decision::Throttle(p) => self.apply(Decision::Throttle(p), false)?,
            _ => Outcome::Running,
        };
        let tick = self.policy.tick_ns();
        let mut next_tick = tick.map(|p| self.now() + p);
        while matches!(out, Outcome::Running) {
            if let Ok(m) = self.rx.try_recv() {
                return Ok(Err(match m {
                    Ok((kind::ERROR, p)) => {
                        format!("destination: {}", String::from_utf8_lossy(&p))
                    }
                    Ok((k, _)) => format!("protocol: unexpected frame kind {k}"),
                    Err(e) => e.to_string(),
                }));
            }
            if self.cpu.has_died() {
                return Ok(Err("the guest stopped on the source".into()));
            }
            let t = self.now();
            if t >= max_ns {
                out = Outcome::End(
                    Status::Timeout,
                    format!(
                        "time cap of {} s reached",
                        self.ck.scenario.limits.max_time_s
                    ),
                );
                break;
            }
            if self.send.count() == 0 {
                self.collect_dirty(false)?;
                let d = self.policy.decide(&self.observe(Trigger::RoundEnd));
                out = self.apply(d, true)?;
                // A sync restarts the check clock (as in QEMU and the simulator).
                next_tick = tick.map(|p| self.now() + p);
                continue;
            }
            if let Err(e) = self.send_batch() {
                return Ok(Err(self.explain(e)));
            }
            if let (Some(p), Some(nt)) = (tick, next_tick) {
                if self.now() >= nt {
                    self.collect_dirty(false)?;
                    let d = self.policy.decide(&self.observe(Trigger::Tick));
                    let round = self.round;
                    out = self.apply(d, false)?;
                    next_tick = Some(if self.round != round {
                        self.now() + p
                    } else {
                        nt + p * ((self.now() - nt) / p + 1)
                    });
                }
            }
        }
        Ok(Ok(out))
    }

    /// A send failed: prefer the destination's own account (an ERROR frame it sent before
    /// closing, e.g. a checksum failure) over our broken pipe.
    fn explain(&self, e: TransportError) -> String {
        let deadline = Instant::now() + Duration::from_millis(200);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.rx.recv_timeout(left) {
                Ok(Ok((kind::ERROR, p))) => {
                    return format!("destination: {} (then {e})", String::from_utf8_lossy(&p))
                }
                Ok(Ok(_)) => continue,
                _ => break,
            }
        }
        e.to_string()
    }

    /// The VM stays on the source: resume it if paused, stop the destination, and check that
    /// the guest runs on with its memory intact.
    fn fail(&mut self, paused: bool) -> (bool, Option<Result<(), String>>) {
        if let Some(f) = self.feeder.take() {
            f.stop();
        }
        if paused {
            let _ = resume_vcpu(&self.vm, &self.cpu);
        }
        let _ = self.link.send(kind::ABORT, &[]);
        if let Some(d) = self.dest.take() {
            d.reap(Duration::from_secs(2));
        }
        // Alive = the heartbeat moves (within 2 s: this host can keep a resumed vCPU from
        // running for tens of milliseconds).
        let hb0 = self.vm.sys.read_u64(CTRL_OFF + ctrl::HEARTBEAT);
        let t = Instant::now();
        let mut alive = false;
        while !alive && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(1));
            alive = self.vm.sys.read_u64(CTRL_OFF + ctrl::HEARTBEAT) != hb0;
        }
        let mut check = None;
        if pause_vcpu(&self.vm, &self.cpu, None).is_ok() {
            if self.opts.mode == GuestMode::Check {
                check = Some(check_ram(&self.vm));
            }
            let _ = resume_vcpu(&self.vm, &self.cpu);
        }
        (alive, check)
    }
}

/// Pause a running vCPU: raise the guest's pause-request word (the guest exits with an `out`
/// within one loop iteration) and kick the thread out of KVM_RUN.
pub(crate) fn pause_vcpu(
    vm: &Vm,
    t: &VcpuThread,
    vmm_dirty: Option<&VmmDirty>,
) -> Result<(), VcpuError> {
    t.pause_with(|| {
        vm.sys.write_u64(CTRL_OFF + ctrl::PAUSE_REQ, 1);
        if let Some(d) = vmm_dirty {
            d.mark(CTRL_OFF / PAGE);
        }
    })
}

/// Clear the pause request and run the vCPU again.
pub(crate) fn resume_vcpu(vm: &Vm, t: &VcpuThread) -> Result<(), VcpuError> {
    vm.sys.write_u64(CTRL_OFF + ctrl::PAUSE_REQ, 0);
    t.resume()
}

/// The check loop's invariant over RAM, read while the vCPUs are paused.
pub(crate) fn check_ram(vm: &Vm) -> Result<(), String> {
    let bytes: Vec<u8> = (0..vm.layout.ram_pages())
        .map(|p| vm.ram.read_u8(p * PAGE + guest::CHECK_BYTE))
        .collect();
    guest::check_steps(&bytes)
}

/// Every RAM page the guest wrote holds the number of its last write (1-based) in its first
/// 8 bytes: check that against the page sequence fed to it (`n` writes done).
pub(crate) fn check_write_sequence(vm: &Vm, writes: &[u64], n: u64) -> Result<(), String> {
    if (writes.len() as u64) < n {
        return Err(format!("{n} writes done but only {} fed", writes.len()));
    }
    let mut last = std::collections::HashMap::new();
    for (k, &p) in writes[..n as usize].iter().enumerate() {
        last.insert(p, k as u64 + 1);
    }
    let mut bad: Vec<(u64, u64, u64)> = Vec::new();
    for (&p, &k) in &last {
        let got = vm.ram.read_u64(p * PAGE);
        if got != k {
            bad.push((k, p, got));
        }
    }
    bad.sort();
    if let Some(&(k, p, got)) = bad.first() {
        return Err(format!(
            "{} of {} written pages differ (of {n} writes); first: page {p} holds write #{got}, expected #{k}; expected writes {:?}",
            bad.len(),
            last.len(),
            bad.iter().map(|b| b.0).take(20).collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// Digests of RAM then the system region.
///
/// # Safety
/// Every vCPU of `vm` must be paused.
pub(crate) unsafe fn digest(vm: &Vm) -> Vec<u64> {
    // SAFETY: forwarded from the caller.
    let mut d = unsafe { vm.ram.digest_paused() };
    // SAFETY: as above.
    d.extend(unsafe { vm.sys.digest_paused() });
    d
}

/// Set up a source VM for `ck`: memory contents, system region, vCPUs. Returns the VM, the
/// boot vCPU and the others, and the guest TSC clock.
pub(crate) fn build_source(
    ck: &Checked,
    opts: &RealOptions,
    dirty_log: bool,
) -> Result<(Arc<Vm>, Vcpu, Vec<Vcpu>, TscClock), SourceError> {
    if ck.page_size != PAGE {
        return Err(SourceError::Unsupported(format!(
            "page size must be 4096 B, got {}",
            ck.page_size
        )));
    }
    if !ck.mem_bytes().is_multiple_of(64 * PAGE) {
        return Err(SourceError::Unsupported(
            "memory must be a multiple of 256 KiB".into(),
        ));
    }
    let layout = Layout::new(ck.mem_bytes()).ok_or_else(|| {
        SourceError::Unsupported(format!("memory of {} bytes is too large", ck.mem_bytes()))
    })?;
    let vm = Vm::new(layout, dirty_log)?;
    let seed = run_seed(ck.scenario.seed, opts.replicate);
    fill_initial(&vm, ck, seed);
    // SAFETY: no vCPU exists yet and nothing else views the system region.
    guest::build_system(&layout, opts.mode, unsafe {
        vm.sys.as_mut_slice_unshared()
    });
    let n = ck.scenario.vm.vcpus.max(1) as u64;
    let v0 = vm.create_vcpu(0)?;
    let s = v0
        .fd
        .get_sregs()
        .map_err(|e| VcpuError::Kvm("KVM_GET_SREGS", e))?;
    v0.fd
        .set_sregs(&guest::entry_sregs(&layout, s))
        .map_err(|e| VcpuError::Kvm("KVM_SET_SREGS", e))?;
    v0.fd
        .set_regs(&guest::entry_regs(&layout, opts.mode))
        .map_err(|e| VcpuError::Kvm("KVM_SET_REGS", e))?;
    // Other vCPUs stay in their wait-for-SIPI state; their state migrates all the same.
    let others = (1..n)
        .map(|i| vm.create_vcpu(i))
        .collect::<Result<Vec<_>, _>>()?;
    let tsc = v0.msr(MSR_IA32_TSC)?;
    let at_ns = mono_ns();
    let khz = v0
        .fd
        .get_tsc_khz()
        .map_err(|e| VcpuError::Kvm("KVM_GET_TSC_KHZ", e))?;
    Ok((Arc::new(vm), v0, others, TscClock { at_ns, tsc, khz }))
}

/// Live-migrate a real guest running `ck`'s workload to a destination VMM and measure it.
pub fn migrate(ck: &Checked, opts: &RealOptions) -> Result<RealRun, RealError> {
    let sc = &ck.scenario;
    let (vm, v0, others, clock) = build_source(ck, opts, true)?;
    let policy = sc.policy.build(sc.vm.vcpus.max(1));
    let (precopy_bps, final_bps) = link_rates(ck, policy.as_ref());
    let one_way_ns = (sc.link.rtt_ms * 1e6 / 2.0).round() as u64;
    let cpu = v0.spawn().map_err(SourceError::from)?;
    resume_vcpu(&vm, &cpu).map_err(SourceError::from)?;
    std::thread::sleep(Duration::from_millis(opts.warmup_ms));
    let (sock, dest) = connect_dest(&opts.dest)?;
    let rx = spawn_reader(&sock).map_err(SourceError::Launch)?;
    let link = PacedSender::new(sock, precopy_bps, one_way_ns, opts.faults.send)
        .map_err(SourceError::Launch)?;
    let total_pages = vm.layout.ram_pages() + vm.layout.sys_pages();
    let seed = run_seed(sc.seed, opts.replicate);
    let mut d = Driver {
        ck,
        opts,
        vmm_dirty: Arc::new(VmmDirty::new(vm.layout.sys_pages())),
        vm: vm.clone(),
        policy,
        link,
        rx,
        dest: Some(dest),
        cpu,
        others,
        feeder: None,
        t_start: mono_ns(),
        ram_pages: vm.layout.ram_pages(),
        final_bps,
        send: Bitmap::full(total_pages),
        dirty: Bitmap::new(total_pages),
        sent_once: Bitmap::new(total_pages),
        cursor: 0,
        batch: PageBatch::default(),
        idx: Vec::with_capacity(BATCH_PAGES),
        page_buf: vec![0u8; PAGE as usize],
        trace: Vec::new(),
        harvests: Vec::new(),
        round_start_writes: 0,
        total_bytes: 0,
        total_pages: 0,
        zero_sent: 0,
        resent: 0,
        round: 0,
        round_start: 0,
        round_bytes: 0,
        round_pages: 0,
        round_zero: 0,
        last_round: None,
        last_bw: precopy_bps.unwrap_or(sc.link.bandwidth.0),
        rounds: Vec::new(),
        throttle: 0,
        max_throttle: 0,
    };
    if opts.mode == GuestMode::Workload {
        d.feeder = Some(Feeder::start(
            vm.clone(),
            d.vmm_dirty.clone(),
            &ck.workload,
            seed,
            clock,
            d.t_start,
            opts.record_writes,
        ));
    }
    let n_vcpus = 1 + d.others.len() as u64;
    let setup = d
        .link
        .send(kind::HELLO, &hello(ck, opts, n_vcpus, one_way_ns))
        .map_err(|e| e.to_string())
        .and_then(|_| expect(&d.rx, kind::READY, Duration::from_secs(30)));
    let outcome = match setup {
        Err(why) => Err(why),
        Ok(_) => {
            // Dirty logging has been on since the VM was built; round 0 sends everything, so
            // the log restarts here.
            d.collect_dirty(true)?;
            d.dirty.clear_all();
            d.round_start = d.now();
            d.precopy()?
        }
    };
    let target_pps = ck.workload.nominal_rate_pps();
    match outcome {
        Err(why) => {
            let t = d.now();
            let after = d.fail(false);
            Ok(finish_failed(
                d,
                t,
                Status::Failed,
                why,
                Some(after),
                target_pps,
            ))
        }
        Ok(Outcome::End(status, why)) => {
            let t = d.now();
            let _ = d.link.send(kind::ABORT, &[]);
            if let Some(f) = d.feeder.take() {
                f.stop();
            }
            if let Some(h) = d.dest.take() {
                h.reap(Duration::from_secs(2));
            }
            Ok(finish_failed(d, t, status, why, None, target_pps))
        }
        Ok(Outcome::Stop(reason, why)) => stop_and_copy(d, reason, why, target_pps),
        Ok(Outcome::Running) => unreachable!("pre-copy returns only when not running"),
    }
}

fn base_report(d: &Driver<'_>, status: Status, reason: String, total: u64) -> RunReport {
    let sc = &d.ck.scenario;
    RunReport {
        backend: "kvm".into(),
        scenario: sc.name.clone(),
        policy: sc.policy.label(),
        workload: sc.workload.kind_name().into(),
        seed: sc.seed,
        replicate: d.opts.replicate,
        status,
        reason,
        mem_bytes: d.ck.mem_bytes(),
        link_bps: sc.link.bandwidth.0,
        total_time_ns: total,
        downtime: None,
        rounds: d.rounds.len() as u32,
        bytes_sent: d.total_bytes,
        pages_sent: d.total_pages,
        zero_pages_sent: d.zero_sent,
        pages_resent: d.resent,
        final_pages: 0,
        final_bytes: 0,
        guest_writes: d.vm.sys.read_u64(CTRL_OFF + ctrl::CONSUMED),
        max_throttle_pct: d.max_throttle,
        kind: "live".into(),
        postcopy: None,
        xbzrle_hits: 0,
    }
}

fn finish_failed(
    mut d: Driver<'_>,
    t: u64,
    status: Status,
    why: String,
    after: Option<(bool, Option<Result<(), String>>)>,
    target_pps: f64,
) -> RealRun {
    if d.round_pages > 0 {
        let _ = d.collect_dirty(false);
        d.close_round(t);
    }
    let report = base_report(&d, status, why, t);
    let writes = report.guest_writes;
    RealRun {
        achieved_pps: writes as f64 * 1e9 / t.max(1) as f64,
        target_pps,
        result: RunResult {
            report,
            rounds: std::mem::take(&mut d.rounds),
        },
        verify_ns: 0,
        verified: false,
        dest: None,
        source_after_failure: after,
        trace: std::mem::take(&mut d.trace),
        harvests: std::mem::take(&mut d.harvests),
        writes: Vec::new(),
        guest_pages: d.send.len(),
    }
}

fn stop_and_copy(
    mut d: Driver<'_>,
    reason: StopReason,
    why: String,
    target_pps: f64,
) -> Result<RealRun, RealError> {
    // Barrier: let the destination catch up with what is already in flight, so the blackout
    // does not include draining socket buffers filled during pre-copy.
    let barrier = d
        .link
        .send(kind::BARRIER, &[])
        .map_err(|e| e.to_string())
        .and_then(|_| expect(&d.rx, kind::BARRIER_ACK, Duration::from_secs(60)));
    if let Err(why) = barrier {
        let t = d.now();
        let after = d.fail(false);
        return Ok(finish_failed(
            d,
            t,
            Status::Failed,
            why,
            Some(after),
            target_pps,
        ));
    }
    let fed = d.feeder.take().map(|f| f.stop());
    let writes_fed = fed.as_ref().map(|f| f.recorded.clone()).unwrap_or_default();
    let rt = d.opts.realtime_switchover;
    let me = crate::vstate::vcpu::current_thread();
    // The delay-line thread (alive until `drain` below ends it) gets the sender's priority
    // for the rest of its life.
    let set_vmm_rt = |prio: Option<i32>| crate::vstate::vcpu::set_realtime(me, prio);
    if rt {
        set_vmm_rt(Some(1));
        if let Some(t) = d.link.delay_thread() {
            crate::vstate::vcpu::set_realtime(t, Some(1));
        }
        d.cpu.set_realtime(Some(2));
    }
    // Blackout starts: pause the vCPU.
    let t0 = mono_ns();
    let paused = pause_vcpu(&d.vm, &d.cpu, Some(&d.vmm_dirty));
    let t1 = mono_ns();
    if rt {
        d.cpu.set_realtime(None);
    }
    paused.map_err(SourceError::from)?;
    let guest_writes = d.vm.sys.read_u64(CTRL_OFF + ctrl::CONSUMED);
    // Final harvest.
    d.collect_dirty(true)?;
    let t2 = mono_ns();
    let final_dirty = d.dirty.count();
    d.harvests.push(crate::Harvest {
        dirty_pages: final_dirty,
        ns: t2 - t1,
    });
    let t_rel = t0 - d.t_start;
    if d.round_pages > 0 {
        d.close_round(t_rel);
    }
    if d.opts.record_trace {
        d.trace.push(d.dirty.clone());
    }
    d.send.or_with(&d.dirty);
    d.dirty.clear_all();
    if d.opts.faults.lose_a_page {
        d.send.clear(d.ram_pages + CTRL_OFF / PAGE);
    }
    if d.opts.record_writes {
        // The guest's r15 counts writes begun: the pause can land between `inc r15` and the
        // page write (then the last write has not happened) or between the page write and the
        // CONSUMED update (then CONSUMED trails by one). Exactly one of the two holds.
        let begun = d
            .cpu
            .vcpu()
            .and_then(|v| v.save())
            .map_err(SourceError::from)?
            .regs
            .r15;
        let done = match begun
            .checked_sub(1)
            .and_then(|i| writes_fed.get(i as usize))
        {
            Some(&p) if d.vm.ram.read_u64(p * PAGE) != begun => begun - 1,
            _ => begun,
        };
        check_write_sequence(&d.vm, &writes_fed, done)
            .map_err(|e| SourceError::Integrity(format!("guest page writes: {e}")))?;
    }
    // Save the machine state.
    let others = std::mem::take(&mut d.others);
    let saved = (|| -> Result<Vec<u8>, SourceError> {
        let mut vs = vec![d.cpu.vcpu()?.save()?];
        for v in &others {
            vs.push(v.save()?);
        }
        let vms = d.vm.save_state()?;
        Ok(crate::state::encode(&vms, &vs))
    })()?;
    let t3 = mono_ns();
    // Send the rest at full link speed, then the state.
    d.link.bucket.set_rate(d.final_bps);
    let (mut fp, mut fb) = (0u64, 0u64);
    let mut sent: Result<(), TransportError> = Ok(());
    while d.send.count() > 0 {
        match d.send_batch() {
            Ok((p, _, b)) => {
                fp += p;
                fb += b;
            }
            Err(e) => {
                sent = Err(e);
                break;
            }
        }
    }
    let t_sent = mono_ns();
    if std::env::var_os("MIGSIM_DEBUG").is_some() {
        eprintln!(
            "debug: final pages handed to the socket after {} ns",
            t_sent - t3
        );
    }
    let mut verify = Ok(());
    if let (true, Some(f)) = (sent.is_ok(), &fed) {
        let mut p = vec![f.guest_ns, f.pending.len() as u64];
        p.extend_from_slice(&f.pending);
        sent = d.link.send(kind::FEEDER, &put_u64s(&p)).map(|_| ());
    }
    if sent.is_ok() {
        sent = d.link.send(kind::STATE, &saved).map(|_| ());
    }
    if sent.is_ok() && d.opts.verify {
        // SAFETY: every vCPU is paused (v0 stopped above; the others never ran).
        let dg = unsafe { digest(&d.vm) };
        sent = d.link.send(kind::DIGEST, &put_u64s(&dg)).map(|_| ());
    }
    if sent.is_ok() {
        sent = d.link.drain();
    }
    let resumed = match sent {
        Err(e) => Err(d.explain(e)),
        Ok(()) => expect(&d.rx, kind::RESUMED, Duration::from_secs(60)),
    };
    let p = match resumed {
        Ok(p) => p,
        Err(why) => {
            if rt {
                set_vmm_rt(None);
            }
            if why.contains("digest") {
                verify = Err(why.clone());
            }
            d.others = others;
            let after = d.fail(true);
            let t = mono_ns() - d.t_start;
            verify.map_err(SourceError::Integrity)?;
            return Ok(finish_failed(
                d,
                t,
                Status::Failed,
                why,
                Some(after),
                target_pps,
            ));
        }
    };
    if rt {
        set_vmm_rt(None);
    }
    let (v, _) = transport::get_u64s(&p, 7).map_err(|e| SourceError::Integrity(e.to_string()))?;
    let (d1, d2, d3, d4, _load_ns, hb_resume, w_resume) =
        (v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
    // The destination runs the guest: tear the source VM down.
    drop(others);
    if std::env::var_os("MIGSIM_DEBUG").is_some() {
        eprintln!(
            "debug: t0 {t0} t1 +{} t2 +{} t3 +{} | d1 +{} d2 +{} d3 +{} d4 +{} (ns from t0)",
            t1 - t0,
            t2 - t0,
            t3 - t0,
            d1 as i64 - t0 as i64,
            d2 - t0,
            d3 - t0,
            d4 - t0
        );
    }
    let dl = d1.max(t3);
    let downtime = Downtime {
        pause_ns: t1 - t0,
        final_sync_ns: t2 - t1,
        transfer_ns: dl - t3,
        state_ns: (t3 - t2) + d2.saturating_sub(dl),
        resume_ns: d4.saturating_sub(d3),
    };
    let total = d4 - d.t_start - (d3 - d2);
    let status = if reason == StopReason::Converged {
        Status::Converged
    } else {
        Status::Forced
    };
    let mut report = base_report(&d, status, why, total);
    report.downtime = Some(downtime);
    report.final_pages = fp;
    report.final_bytes = fb;
    report.guest_writes = guest_writes;
    // Progress on the destination.
    let fin = expect(
        &d.rx,
        kind::FINAL,
        Duration::from_millis(d.opts.run_after_ms + 30_000),
    );
    let mut progress = DestProgress {
        heartbeat_at_resume: hb_resume,
        writes_at_resume: w_resume,
        ..Default::default()
    };
    match fin {
        Ok(p) => {
            let (v, msg) =
                transport::get_u64s(&p, 3).map_err(|e| SourceError::Integrity(e.to_string()))?;
            progress.heartbeat_after = v[0];
            progress.writes_after = v[1];
            progress.check = match v[2] {
                1 => Some(Ok(())),
                2 => Some(Err(String::from_utf8_lossy(msg).into_owned())),
                _ => None,
            };
        }
        Err(e) => return Err(SourceError::Integrity(format!("no final report: {e}")).into()),
    }
    if let Some(h) = d.dest.take() {
        h.reap(Duration::from_secs(5));
    }
    if let Some(Err(e)) = &progress.check {
        return Err(
            SourceError::Integrity(format!("consistency check on the destination: {e}")).into(),
        );
    }
    if progress.heartbeat_after <= progress.heartbeat_at_resume {
        return Err(
            SourceError::Integrity("the guest made no progress on the destination".into()).into(),
        );
    }
    let elapsed = t0 - d.t_start;
    Ok(RealRun {
        achieved_pps: guest_writes as f64 * 1e9 / elapsed.max(1) as f64,
        target_pps,
        verify_ns: d3 - d2,
        verified: d.opts.verify,
        dest: Some(progress),
        source_after_failure: None,
        trace: std::mem::take(&mut d.trace),
        harvests: std::mem::take(&mut d.harvests),
        writes: writes_fed,
        guest_pages: d.send.len(),
        result: RunResult {
            report,
            rounds: std::mem::take(&mut d.rounds),
        },
    })
}

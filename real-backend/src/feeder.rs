//! The workload feeder: turns the scenario's [`WriteStream`] into `(deadline_tsc, page)` script
//! entries in the guest's ring, a few milliseconds ahead of the guest.
//!
//! The stream is advanced in 100 µs steps of wall time; every write of a step gets the step's
//! end as its deadline, converted to the guest's TSC. A throttle stretches guest time exactly as
//! the simulator does (guest time advances at `1 − ppm/10⁶` of wall time); a dirty-rate limit
//! is applied the same way, as the simulator does.

use crate::guest::{ctrl, CTRL_OFF, PAGE, RING_ENTRIES, RING_OFF};
use crate::transport::mono_ns;
use crate::vstate::Vm;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use workloads::{Workload, WriteStream};

const STEP_NS: u64 = 100_000;
const LOOKAHEAD_NS: u64 = 2_000_000;

/// Dirty bits for system-region pages the VMM itself writes (KVM does not log those).
pub struct VmmDirty {
    words: Vec<AtomicU64>,
}

impl VmmDirty {
    pub fn new(pages: u64) -> Self {
        VmmDirty {
            words: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
        }
    }
    pub fn mark(&self, page: u64) {
        self.words[(page / 64) as usize].fetch_or(1 << (page % 64), Ordering::AcqRel);
    }
    /// Current bits; `clear` takes them (a harvest), otherwise they stay (a peek).
    pub fn collect(&self, clear: bool) -> Vec<u64> {
        self.words
            .iter()
            .map(|w| {
                if clear {
                    w.swap(0, Ordering::AcqRel)
                } else {
                    w.load(Ordering::Acquire)
                }
            })
            .collect()
    }
}

/// Guest TSC as a linear function of CLOCK_MONOTONIC.
#[derive(Clone, Copy, Debug)]
pub struct TscClock {
    pub at_ns: u64,
    pub tsc: u64,
    pub khz: u32,
}

impl TscClock {
    pub fn tsc_at(&self, ns: u64) -> u64 {
        let d = ns.saturating_sub(self.at_ns) as u128 * self.khz as u128 / 1_000_000;
        self.tsc + d as u64
    }
}

pub struct Feeder {
    stop: Arc<AtomicBool>,
    /// Share of guest time taken away, in parts per million (throttle or dirty-rate limit).
    pub throttle_ppm: Arc<AtomicU32>,
    handle: Option<JoinHandle<FeederEnd>>,
}

/// Where a stopped feeder left the workload.
#[derive(Debug, Default)]
pub struct FeederEnd {
    /// The pages fed, in order (when recording).
    pub recorded: Vec<u64>,
    /// Guest time up to which the stream was advanced.
    pub guest_ns: u64,
    /// Pages drawn from the stream but not yet in the ring (the ring was full).
    pub pending: Vec<u64>,
}

impl Feeder {
    /// Start feeding at monotonic time `start_ns` (= guest time 0 of the workload).
    pub fn start(
        vm: Arc<Vm>,
        vmm_dirty: Arc<VmmDirty>,
        workload: &Workload,
        seed: u64,
        clock: TscClock,
        start_ns: u64,
        record: bool,
    ) -> Feeder {
        let stream = WriteStream::new(workload, seed);
        Self::resume(
            vm,
            vmm_dirty,
            stream,
            clock,
            start_ns,
            0,
            Vec::new(),
            record,
        )
    }

    /// Continue a workload whose `stream` has been advanced to guest time `guest_ns`, from
    /// monotonic time `wall_ns`, first feeding `pending` pages (the destination does this after
    /// a switchover).
    #[allow(clippy::too_many_arguments)]
    pub fn resume(
        vm: Arc<Vm>,
        vmm_dirty: Arc<VmmDirty>,
        mut stream: WriteStream,
        clock: TscClock,
        wall_ns: u64,
        guest_ns: u64,
        pending: Vec<u64>,
        record: bool,
    ) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let throttle = Arc::new(AtomicU32::new(0));
        let (s2, t2) = (stop.clone(), throttle.clone());
        let first_dl = clock.tsc_at(wall_ns);
        let handle = std::thread::Builder::new()
            .name("feeder".into())
            .spawn(move || {
                let mut recorded = Vec::new();
                let mut pending: VecDeque<(u64, u64)> =
                    pending.into_iter().map(|p| (first_dl, p)).collect();
                let mut produced = vm.sys.read_u64(CTRL_OFF + ctrl::PRODUCED);
                let mut fed_ns = wall_ns;
                let (mut anchor_wall, mut anchor_guest, mut ppm) = (wall_ns, guest_ns, 0u64);
                while !s2.load(Ordering::Acquire) {
                    let p = (t2.load(Ordering::Acquire) as u64).min(990_000);
                    if p != ppm {
                        let now = mono_ns().max(anchor_wall);
                        anchor_guest += (now - anchor_wall) * (1_000_000 - ppm) / 1_000_000;
                        anchor_wall = now;
                        ppm = p;
                    }
                    let horizon = mono_ns() + LOOKAHEAD_NS;
                    while fed_ns < horizon {
                        fed_ns += STEP_NS;
                        let g = anchor_guest
                            + fed_ns.saturating_sub(anchor_wall) * (1_000_000 - ppm) / 1_000_000;
                        let dl = clock.tsc_at(fed_ns);
                        stream.advance_to(g, |page| {
                            pending.push_back((dl, page));
                            if record {
                                recorded.push(page);
                            }
                        });
                    }
                    let consumed = vm.sys.read_u64(CTRL_OFF + ctrl::CONSUMED);
                    let mut wrote = false;
                    while let Some(&(dl, page)) = pending.front() {
                        if produced - consumed >= RING_ENTRIES - 1 {
                            break;
                        }
                        let slot = produced % RING_ENTRIES;
                        let off = RING_OFF + slot * 16;
                        vm.sys.write_u64(off, dl);
                        vm.sys.write_u64(off + 8, page * PAGE);
                        vmm_dirty.mark(off / PAGE);
                        produced += 1;
                        pending.pop_front();
                        wrote = true;
                    }
                    if wrote {
                        std::sync::atomic::fence(Ordering::Release);
                        vm.sys.write_u64(CTRL_OFF + ctrl::PRODUCED, produced);
                        vmm_dirty.mark(CTRL_OFF / PAGE);
                    }
                    std::thread::sleep(std::time::Duration::from_micros(500));
                }
                FeederEnd {
                    recorded,
                    guest_ns: anchor_guest
                        + fed_ns.saturating_sub(anchor_wall) * (1_000_000 - ppm) / 1_000_000,
                    pending: pending.into_iter().map(|e| e.1).collect(),
                }
            });
        Feeder {
            stop,
            throttle_ppm: throttle,
            handle: handle.ok(),
        }
    }

    /// Stop feeding; returns where the workload stands.
    pub fn stop(mut self) -> FeederEnd {
        self.stop.store(true, Ordering::Release);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

//! Exact pre-copy live migration at page granularity.
//!
//! The model (memory, link, dirty log) lives here; time and ordering come from
//! [`crate::engine::EventQueue`]; the stop decision comes from a [`Policy`].
//!
//! Bookkeeping, as in QEMU and Xen: a *sync* moves the dirty log into the send set and clears
//! the log. The sender walks the send set in address order (wrapping around after a mid-round
//! sync), clearing each bit as it sends the page. A guest write sets the page's bit in the dirty
//! log, so a page written after the sync is sent in this round if it is still in the send set
//! *and* again in the next one. Pages go out in chunks of about a millisecond of link time;
//! writes are applied at every chunk boundary, so the bitmaps are exact at every sync and at the
//! pause, and zero-page detection is exact to within one chunk.

use crate::bitmap::Bitmap;
use crate::engine::{EventQueue, Nanos};
use crate::metrics::{Downtime, RoundRecord, RunReport, RunResult, Status};
use crate::policy::{Decision, Observation, Policy, RoundSummary, StopReason, Trigger};
use crate::scenario::Checked;
use workloads::{mix64, WriteStream};

/// Time to push `bytes` through a link of `bps` bits/s, rounded up to whole nanoseconds.
#[inline]
pub fn transfer_ns(bytes: u64, bps: f64) -> Nanos {
    (bytes as f64 * 8e9 / bps).ceil() as Nanos
}

/// Link time one chunk of pages aims to occupy.
const CHUNK_TARGET_NS: f64 = 1e6;
/// Upper bound on pages per chunk.
const CHUNK_MAX_PAGES: u64 = 1 << 16;
/// Most pre-copy iterations a run may take before it ends with status `timeout`.
pub const MAX_ROUNDS: u32 = 100_000;
/// Minimum time a sync takes, so a policy that keeps syncing an empty log still moves time on.
const MIN_SYNC_NS: Nanos = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// The sender is free to put the next chunk on the link.
    Send,
    /// Periodic policy check.
    Tick,
    /// Simulated-time cap.
    Timeout,
}

enum Outcome {
    Running,
    Stopped {
        at: Nanos,
        reason: StopReason,
        why: String,
    },
    Ended {
        at: Nanos,
        status: Status,
        why: String,
    },
}

/// Seed of the workload stream for a run: derived from the scenario seed and replicate index only.
pub fn run_seed(scenario_seed: u64, replicate: u32) -> u64 {
    mix64(scenario_seed, 0x5EED_0000 + replicate as u64)
}

/// The zero-page map at migration start: zero-ness is drawn per 64-page block (256 KiB with
/// 4 KiB pages), as free memory comes in large runs.
pub fn initial_zero_pages(mem_pages: u64, fraction: f64, seed: u64) -> Bitmap {
    let mut zero = Bitmap::new(mem_pages);
    if fraction <= 0.0 {
        return zero;
    }
    let limit = (fraction * u64::MAX as f64) as u64;
    let words = mem_pages.div_ceil(64) as usize;
    for wi in 0..words {
        if fraction >= 1.0 || mix64(seed, wi as u64) < limit {
            let bits = if (wi as u64 + 1) * 64 > mem_pages {
                (1u64 << (mem_pages % 64)) - 1
            } else {
                !0
            };
            zero.set_word(wi, bits);
        }
    }
    zero
}

struct Sim<'a> {
    ck: &'a Checked,
    policy: Box<dyn Policy>,
    q: EventQueue<Event>,
    // configuration
    mem_pages: u64,
    page_wire: u64,
    zero_wire: u64,
    link_bps: f64,
    precopy_bps: f64,
    one_way_ns: Nanos,
    chunk_pages: u64,
    // memory state
    send: Bitmap,
    dirty: Bitmap,
    zero: Bitmap,
    sent_once: Bitmap,
    cursor: u64,
    stream: WriteStream,
    guest_writes: u64,
    // throttle: guest time = anchor_guest + (wall - anchor_wall) * (100 - pct) / 100
    throttle_pct: u8,
    max_throttle: u8,
    anchor_wall: Nanos,
    anchor_guest: Nanos,
    // link pacing: the current paced segment started at `seg_start` and has carried `seg_bytes`
    seg_start: Nanos,
    seg_bytes: u64,
    link_busy_until: Nanos,
    sender_ready_at: Nanos,
    // counters
    total_bytes: u64,
    total_pages: u64,
    zero_sent: u64,
    resent: u64,
    round: u32,
    round_start: Nanos,
    round_bytes: u64,
    round_pages: u64,
    round_zero: u64,
    last_round: Option<RoundSummary>,
    last_bw: f64,
    rounds: Vec<RoundRecord>,
}

impl<'a> Sim<'a> {
    fn new(ck: &'a Checked, replicate: u32) -> Self {
        let sc = &ck.scenario;
        let seed = run_seed(sc.seed, replicate);
        let policy = sc.policy.build();
        let link_bps = sc.link.bandwidth.0;
        let precopy_bps = policy
            .max_bandwidth_bps()
            .map_or(link_bps, |m| m.min(link_bps));
        let page_wire = ck.page_size + sc.link.page_header_bytes;
        let chunk_pages = ((CHUNK_TARGET_NS * precopy_bps / 8e9) / page_wire as f64).floor() as u64;
        Sim {
            ck,
            policy,
            q: EventQueue::new(),
            mem_pages: ck.mem_pages,
            page_wire,
            zero_wire: sc.link.zero_page_bytes,
            link_bps,
            precopy_bps,
            one_way_ns: (sc.link.rtt_ms * 1e6 / 2.0).round() as Nanos,
            chunk_pages: chunk_pages.clamp(1, CHUNK_MAX_PAGES),
            send: Bitmap::new(ck.mem_pages),
            dirty: Bitmap::new(ck.mem_pages),
            zero: initial_zero_pages(ck.mem_pages, sc.vm.zero_page_fraction, mix64(seed, 0x2E80)),
            sent_once: Bitmap::new(ck.mem_pages),
            cursor: 0,
            stream: WriteStream::new(&ck.workload, seed),
            guest_writes: 0,
            throttle_pct: 0,
            max_throttle: 0,
            anchor_wall: 0,
            anchor_guest: 0,
            seg_start: 0,
            seg_bytes: 0,
            link_busy_until: 0,
            sender_ready_at: 0,
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
            last_bw: link_bps.min(precopy_bps),
            rounds: Vec::new(),
        }
    }

    fn guest_time(&self, wall: Nanos) -> Nanos {
        let dt = wall.saturating_sub(self.anchor_wall) as u128;
        self.anchor_guest + (dt * (100 - self.throttle_pct as u128) / 100) as Nanos
    }

    /// Apply every guest write up to wall time `t`.
    fn apply_writes(&mut self, t: Nanos) {
        let g = self.guest_time(t);
        let dirty = &mut self.dirty;
        let zero = &mut self.zero;
        let mut n = 0u64;
        if zero.count() == 0 {
            self.stream.advance_to(g, |p| {
                dirty.set(p);
                n += 1;
            });
        } else {
            self.stream.advance_to(g, |p| {
                dirty.set(p);
                zero.clear(p);
                n += 1;
            });
        }
        self.guest_writes += n;
    }

    fn set_throttle(&mut self, t: Nanos, pct: u8) {
        let pct = pct.min(99);
        self.anchor_guest = self.guest_time(t);
        self.anchor_wall = t;
        self.throttle_pct = pct;
        self.max_throttle = self.max_throttle.max(pct);
    }

    fn sync_cost(&self, dirty_pages: u64) -> Nanos {
        let d = &self.ck.scenario.dirty_log;
        let gib = self.ck.mem_bytes() as f64 / (1u64 << 30) as f64;
        (d.sync_fixed_us * 1e3
            + d.sync_us_per_gib * 1e3 * gib
            + d.sync_ns_per_dirty_page * dirty_pages as f64)
            .round() as Nanos
    }

    fn observe(&self, trigger: Trigger, t: Nanos) -> Observation {
        // Bytes of the chunk in flight that have not left yet do not count as sent.
        let in_flight = if self.link_busy_until > t {
            (((self.link_busy_until - t) as f64 * self.precopy_bps / 8e9) as u64)
                .min(self.round_bytes)
        } else {
            0
        };
        Observation {
            trigger,
            elapsed_ns: t,
            round: self.round,
            mem_bytes: self.ck.mem_bytes(),
            page_size: self.ck.page_size,
            page_wire_bytes: self.page_wire,
            total_bytes_sent: self.total_bytes - in_flight,
            total_pages_sent: self.total_pages,
            round_bytes_sent: self.round_bytes - in_flight,
            round_pages_sent: self.round_pages,
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
            throttle_pct: self.throttle_pct,
        }
    }

    /// Close the current round at `t` (its dirty count is what a harvest at `t` returns).
    fn close_round(&mut self, t: Nanos) {
        let dur = t - self.round_start;
        let bw = if dur > 0 {
            self.round_bytes as f64 * 8e9 / dur as f64
        } else {
            self.last_bw
        };
        let dirtied = self.dirty.count();
        let est_bw = if bw > 0.0 { bw } else { self.precopy_bps };
        self.rounds.push(RoundRecord {
            round: self.round,
            start_ns: self.round_start,
            duration_ns: dur,
            pages_sent: self.round_pages,
            zero_pages_sent: self.round_zero,
            bytes_sent: self.round_bytes,
            pages_dirtied: dirtied,
            bandwidth_bps: bw,
            est_downtime_ns: transfer_ns((self.send.count() + dirtied) * self.page_wire, est_bw),
            throttle_pct: self.throttle_pct,
        });
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

    /// Harvest the dirty log into the send set at `t`; returns the sync's cost.
    fn sync(&mut self, t: Nanos) -> Nanos {
        self.apply_writes(t);
        self.close_round(t);
        let cost = self.sync_cost(self.dirty.count()).max(MIN_SYNC_NS);
        self.send.or_with(&self.dirty);
        self.dirty.clear_all();
        self.round += 1;
        self.round_start = t;
        self.round_bytes = 0;
        self.round_pages = 0;
        self.round_zero = 0;
        self.sender_ready_at = self.sender_ready_at.max(t + cost);
        cost
    }

    /// Take up to `max` pages from the send set, scanning from the cursor (wrapping), and
    /// account them. Returns (pages, zero pages, wire bytes).
    fn take_pages(&mut self, max: u64) -> (u64, u64, u64) {
        let words = self.mem_pages.div_ceil(64) as usize;
        let mut taken = 0u64;
        let mut zeros = 0u64;
        let mut resent = 0u64;
        let mut wi = (self.cursor / 64) as usize;
        let mut first_mask = !0u64 << (self.cursor % 64);
        let mut scanned = 0usize;
        while taken < max && self.send.count() > 0 && scanned <= words {
            let w = self.send.word(wi) & first_mask;
            first_mask = !0;
            if w != 0 {
                let need = max - taken;
                let mut pick = w;
                if (w.count_ones() as u64) > need {
                    // keep only the lowest `need` set bits
                    let mut m = 0u64;
                    let mut rest = w;
                    for _ in 0..need {
                        let low = rest & rest.wrapping_neg();
                        m |= low;
                        rest &= rest - 1;
                    }
                    pick = m;
                }
                let n = pick.count_ones() as u64;
                taken += n;
                zeros += (pick & self.zero.word(wi)).count_ones() as u64;
                resent += (pick & self.sent_once.word(wi)).count_ones() as u64;
                let so = self.sent_once.word(wi);
                self.sent_once.set_word(wi, so | pick);
                let sw = self.send.word(wi);
                self.send.set_word(wi, sw & !pick);
                if taken == max {
                    // resume at the bit after the highest one picked
                    let hi = 63 - pick.leading_zeros() as u64;
                    self.cursor = (wi as u64 * 64 + hi + 1) % self.mem_pages.max(1);
                    break;
                }
            }
            wi += 1;
            scanned += 1;
            if wi == words {
                wi = 0;
            }
            self.cursor = (wi as u64 * 64) % self.mem_pages.max(1);
        }
        let bytes = (taken - zeros) * self.page_wire + zeros * self.zero_wire;
        self.resent += resent;
        (taken, zeros, bytes)
    }

    fn account(&mut self, pages: u64, zeros: u64, bytes: u64) {
        self.total_pages += pages;
        self.total_bytes += bytes;
        self.zero_sent += zeros;
        self.round_pages += pages;
        self.round_bytes += bytes;
        self.round_zero += zeros;
    }

    /// Put the next chunk on the link at `t`, or end the round if the send set is empty.
    fn on_send(&mut self, t: Nanos) -> Outcome {
        if t < self.sender_ready_at {
            self.q.schedule(self.sender_ready_at, Event::Send);
            return Outcome::Running;
        }
        self.apply_writes(t);
        if self.send.count() == 0 {
            let obs = self.observe(Trigger::RoundEnd, t);
            let d = self.policy.decide(&obs);
            return self.apply(d, t, true);
        }
        let (pages, zeros, bytes) = self.take_pages(self.chunk_pages);
        self.account(pages, zeros, bytes);
        if t > self.seg_start + transfer_ns(self.seg_bytes, self.precopy_bps) {
            // the link went idle (sync, policy pause): start a new paced segment
            self.seg_start = t;
            self.seg_bytes = 0;
        }
        self.seg_bytes += bytes;
        let done = self.seg_start + transfer_ns(self.seg_bytes, self.precopy_bps);
        self.link_busy_until = done;
        self.q.schedule(done, Event::Send);
        Outcome::Running
    }

    fn on_tick(&mut self, t: Nanos, period: Nanos) -> Outcome {
        self.apply_writes(t);
        let obs = self.observe(Trigger::Tick, t);
        let d = self.policy.decide(&obs);
        let out = self.apply(d, t, false);
        if matches!(out, Outcome::Running) {
            self.q.schedule(t + period, Event::Tick);
        }
        out
    }

    /// Carry out a decision made at `t`. `round_end` is true when the send set is exhausted and
    /// the sender is waiting for it.
    fn apply(&mut self, d: Decision, t: Nanos, round_end: bool) -> Outcome {
        match d {
            Decision::Stop(reason, why) => Outcome::Stopped { at: t, reason, why },
            Decision::Cancel(why) => Outcome::Ended {
                at: t,
                status: Status::Cancelled,
                why,
            },
            Decision::Throttle(pct) => {
                self.set_throttle(t, pct);
                self.apply(Decision::Continue, t, round_end)
            }
            Decision::Continue if !round_end => Outcome::Running,
            Decision::Continue | Decision::Sync => {
                if self.round + 1 >= MAX_ROUNDS {
                    return Outcome::Ended {
                        at: t,
                        status: Status::Timeout,
                        why: format!("iteration cap of {MAX_ROUNDS} rounds reached"),
                    };
                }
                let cost = self.sync(t);
                let at = t + cost;
                let mut out = Outcome::Running;
                if d == Decision::Sync {
                    let obs = self.observe(Trigger::AfterSync, at);
                    let d2 = self.policy.decide(&obs);
                    out = match d2 {
                        Decision::Sync => Outcome::Running,
                        other => self.apply(other, at, false),
                    };
                }
                if round_end && matches!(out, Outcome::Running) {
                    self.q.schedule(at, Event::Send);
                }
                out
            }
        }
    }

    /// Pause at `t` and copy the rest. Returns the blackout breakdown and the end time.
    fn stop_and_copy(&mut self, t: Nanos) -> (Downtime, Nanos, u64, u64) {
        let sc = &self.ck.scenario;
        self.apply_writes(t);
        let pause_ns = (sc.switchover.pause_ms * 1e6).round() as Nanos;
        let sync_ns = self.sync_cost(self.dirty.count());
        // A round that sent nothing (the policy stopped right after a sync) is not a round.
        if self.round_pages > 0 {
            self.close_round(t);
        }
        self.send.or_with(&self.dirty);
        self.dirty.clear_all();
        let start = t + pause_ns + sync_ns;
        let wait = self.link_busy_until.saturating_sub(start);
        let (pages, zeros, bytes) = self.take_pages(u64::MAX);
        self.total_pages += pages;
        self.total_bytes += bytes;
        self.zero_sent += zeros;
        let transfer = wait + transfer_ns(bytes, self.link_bps) + self.one_way_ns;
        let d = Downtime {
            pause_ns,
            final_sync_ns: sync_ns,
            transfer_ns: transfer,
            state_ns: transfer_ns(sc.switchover.state.0, self.link_bps),
            resume_ns: (sc.switchover.resume_ms * 1e6).round() as Nanos,
        };
        (d, t + d.total_ns(), pages, bytes)
    }

    fn run(mut self, replicate: u32) -> RunResult {
        let sc = &self.ck.scenario;
        let setup = 2 * self.one_way_ns;
        let max_time = (sc.limits.max_time_s * 1e9).round() as Nanos;
        // Dirty logging starts now; round 0 sends every page.
        self.send = Bitmap::full(self.mem_pages);
        self.round_start = setup;
        self.anchor_wall = 0;
        self.q.schedule(max_time, Event::Timeout);
        let first = self.policy.decide(&self.observe(Trigger::Start, setup));
        let mut outcome = match first {
            Decision::Stop(reason, why) => Outcome::Stopped {
                at: setup,
                reason,
                why,
            },
            Decision::Cancel(why) => Outcome::Ended {
                at: setup,
                status: Status::Cancelled,
                why,
            },
            Decision::Throttle(p) => {
                self.set_throttle(setup, p);
                Outcome::Running
            }
            _ => Outcome::Running,
        };
        let tick = self.policy.tick_ns();
        if matches!(outcome, Outcome::Running) {
            self.q.schedule(setup, Event::Send);
            if let Some(p) = tick {
                self.q.schedule(setup + p, Event::Tick);
            }
        }
        while matches!(outcome, Outcome::Running) {
            let Some((t, ev)) = self.q.pop() else {
                outcome = Outcome::Ended {
                    at: self.q.now(),
                    status: Status::Timeout,
                    why: "no pending events".into(),
                };
                break;
            };
            outcome = match ev {
                Event::Timeout => Outcome::Ended {
                    at: t,
                    status: Status::Timeout,
                    why: format!("simulated-time cap of {} s reached", sc.limits.max_time_s),
                },
                Event::Send => self.on_send(t),
                Event::Tick => self.on_tick(t, tick.unwrap_or(1)),
            };
        }
        let (status, reason, total, downtime, final_pages, final_bytes) = match outcome {
            Outcome::Stopped { at, reason, why } => {
                let (d, end, fp, fb) = self.stop_and_copy(at);
                let st = if reason == StopReason::Converged {
                    Status::Converged
                } else {
                    Status::Forced
                };
                (st, why, end, Some(d), fp, fb)
            }
            Outcome::Ended { at, status, why } => {
                self.apply_writes(at);
                if self.round_pages > 0 {
                    self.close_round(at);
                }
                (status, why, at, None, 0, 0)
            }
            Outcome::Running => unreachable!("loop exits only when not running"),
        };
        let report = RunReport {
            backend: "sim".into(),
            scenario: sc.name.clone(),
            policy: sc.policy.name().into(),
            workload: sc.workload.kind_name().into(),
            seed: sc.seed,
            replicate,
            status,
            reason,
            mem_bytes: self.ck.mem_bytes(),
            link_bps: self.link_bps,
            total_time_ns: total,
            downtime,
            rounds: self.rounds.len() as u32,
            bytes_sent: self.total_bytes,
            pages_sent: self.total_pages,
            zero_pages_sent: self.zero_sent,
            pages_resent: self.resent,
            final_pages,
            final_bytes,
            guest_writes: self.guest_writes,
            max_throttle_pct: self.max_throttle,
        };
        RunResult {
            report,
            rounds: self.rounds,
        }
    }
}

/// Simulate one pre-copy migration of a checked scenario (replicate 0 uses the scenario's seed
/// as given; later replicates derive their own).
pub fn simulate(ck: &Checked, replicate: u32) -> RunResult {
    Sim::new(ck, replicate).run(replicate)
}

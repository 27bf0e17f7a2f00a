//! Exact live migration at page granularity: pre-copy, the stop-and-copy, and post-copy.
//!
//! The model (memory, link, dirty log) lives here; time and ordering come from
//! [`crate::engine::EventQueue`]; every decision comes from a [`Policy`].
//!
//! Bookkeeping, as in QEMU and Xen: a *sync* moves the dirty log into the send set and clears
//! the log. The sender walks the send set in address order (wrapping around after a mid-round
//! sync), clearing each bit as it sends the page. A guest write sets the page's bit in the dirty
//! log, so a page written after the sync is sent in this round if it is still in the send set
//! *and* again in the next one. Pages go out in chunks of about a millisecond of link time;
//! writes are applied at every chunk boundary, so the bitmaps are exact at every sync and at the
//! pause, and zero-page detection is exact to within one chunk. (The engine applies them later
//! wherever that cannot change a result: see `on_send`, `take_pages` and `zero_word`.)

use crate::bitmap::{Bitmap, Setter};
use crate::engine::{EventQueue, Nanos};
use crate::metrics::{Downtime, PostcopyStats, RoundRecord, RunReport, RunResult, Status};
use crate::policy::{Decision, Observation, Policy, RoundSummary, StopReason, Trigger};
use crate::scenario::Checked;
use workloads::{mix64, WriteSink, WriteStream};

/// Time to push `bytes` through a link of `bps` bits/s, rounded up to whole nanoseconds.
#[inline]
pub fn transfer_ns(bytes: u64, bps: f64) -> Nanos {
    workloads::ceil_u64(workloads::u64_to_f64(bytes) * 8e9 / bps)
}

/// Link time one chunk of pages aims to occupy.
const CHUNK_TARGET_NS: f64 = 1e6;
/// Upper bound on pages per chunk.
const CHUNK_MAX_PAGES: u64 = 1 << 16;
/// Most pre-copy iterations a run may take before it ends with status `timeout`.
pub const MAX_ROUNDS: u32 = 100_000;
/// Minimum time a sync takes, so a policy that keeps syncing an empty log still moves time on.
const MIN_SYNC_NS: Nanos = 1_000;
/// Guest-time step of the post-copy phase.
const POSTCOPY_STEP_NS: Nanos = 1_000_000;
const PPM: u64 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// The sender is free to put the next chunk on the link.
    Send,
    /// Periodic policy check; stale when its generation is not the current one.
    Tick(u32),
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
    PostCopy {
        at: Nanos,
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

/// The zero-page map at migration start: exactly round(fraction × blocks) of the 64-page blocks
/// (256 KiB with 4 KiB pages) are zero, as free memory comes in large runs; which ones is drawn
/// from the seed by a pseudorandom permutation of the block numbers.
pub fn initial_zero_pages(mem_pages: u64, fraction: f64, seed: u64) -> Bitmap {
    let blocks = mem_pages.div_ceil(64);
    let k = (fraction * blocks as f64).round() as u64;
    if k == 0 {
        return Bitmap::new(mem_pages);
    }
    // An affine map x -> (a·x + c) mod 2^m with odd a is a bijection of [0, 2^m); walking the
    // cycle until the value falls below `blocks` restricts it to a bijection of [0, blocks).
    let m = blocks.next_power_of_two();
    let a = (mix64(seed, 1) | 1) & (m - 1) | 1;
    let c = mix64(seed, 2) & (m - 1);
    let perm = |x: u64| {
        let mut y = x;
        loop {
            y = (a.wrapping_mul(y).wrapping_add(c)) & (m - 1);
            if y < blocks {
                return y;
            }
        }
    };
    // (Each word written once, in order: no read of fresh zeroed memory before the write.)
    let words = (0..blocks)
        .map(|wi| {
            if perm(wi) >= k {
                0
            } else if (wi + 1) * 64 > mem_pages {
                (1u64 << (mem_pages % 64)) - 1
            } else {
                !0
            }
        })
        .collect();
    Bitmap::from_words(mem_pages, words)
}

/// `w` with only its lowest `k` set bits kept; `k` must be below the number of set bits.
/// (Finds the byte holding the k-th set bit from the bytes' running popcounts, then the bit.)
#[inline]
fn lowest_set_bits(w: u64, k: u64) -> u64 {
    const L8: u64 = 0x0101_0101_0101_0101;
    const H8: u64 = 0x8080_8080_8080_8080;
    debug_assert!(k < w.count_ones() as u64);
    let mut s = w - ((w >> 1) & 0x5555_5555_5555_5555);
    s = (s & 0x3333_3333_3333_3333) + ((s >> 2) & 0x3333_3333_3333_3333);
    s = (s + (s >> 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // byte i of `prefix`: the set bits in bytes 0..=i (at most 64, so no carries)
    let prefix = s.wrapping_mul(L8);
    // bit 7 of byte i of `le`: prefix_i ≤ k (no borrows: 128 + k − prefix_i > 0); those
    // bytes are a run from byte 0, all kept whole
    let le = (((k * L8) | H8) - prefix) & H8;
    let whole = ((le >> 7).wrapping_mul(L8) >> 56) as u32;
    let shift = whole * 8;
    let before = if whole == 0 {
        0
    } else {
        (prefix >> (shift - 8)) & 0xff
    };
    // drop the lowest k − before set bits of the next byte: its lowest remaining one is the
    // first bit not kept
    let mut b = (w >> shift) & 0xff;
    for _ in 0..k - before {
        b &= b - 1;
    }
    let end = shift + b.trailing_zeros();
    w & ((1u64 << end) - 1)
}

/// The bitmap words covering page ranges `[start, end)` (sorted, disjoint), clipped to
/// `mem_pages`, as disjoint `[first, end)` word-index ranges.
fn word_spans(ranges: &[(u64, u64)], mem_pages: u64) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &(s, e) in ranges {
        let e = e.min(mem_pages);
        if s >= e {
            continue;
        }
        let (a, b) = ((s / 64) as usize, e.div_ceil(64) as usize);
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Marks the guest's writes in the dirty log.
struct MarkDirty<'a>(Setter<'a>);

impl WriteSink for MarkDirty<'_> {
    #[inline]
    fn write(&mut self, page: u64) {
        self.0.set(page);
    }
}

/// QEMU's XBZRLE page cache: direct-mapped by page number.
struct Xbzrle {
    tags: Vec<u64>,
    delta_wire: u64,
    overflow_limit: u64,
    seed: u64,
    /// Becomes true at the first sync (QEMU starts XBZRLE after the first full pass).
    active: bool,
    hits: u64,
}

impl Xbzrle {
    /// Wire bytes of sending non-zero page `p`, updating the cache. `last_stage` pages are not
    /// inserted on a miss (QEMU skips the insert during the stop-and-copy).
    fn cost(&mut self, p: u64, full_wire: u64, last_stage: bool, nth: u64) -> u64 {
        if !self.active {
            return full_wire;
        }
        let slot = (p % self.tags.len() as u64) as usize;
        if self.tags[slot] == p {
            if self.overflow_limit > 0 && mix64(self.seed ^ p, nth) < self.overflow_limit {
                return full_wire;
            }
            self.hits += 1;
            self.delta_wire
        } else {
            if !last_stage {
                self.tags[slot] = p;
            }
            full_wire
        }
    }
}

/// Records, at every point where the sender could have stopped, what the blackout would have
/// been: the hindsight oracle's candidates.
#[derive(Clone, Debug, Default)]
pub struct OracleProbe {
    /// Candidates after this time are ignored (and the run ends there).
    pub horizon_ns: Option<Nanos>,
    /// Only candidates whose total time stays within this count.
    pub max_total_ns: Option<Nanos>,
    /// Only candidates whose total bytes stay within this count.
    pub max_bytes: Option<u64>,
    /// Best candidate: (downtime, stop time, round, total time, total bytes).
    pub best: Option<(Nanos, Nanos, u32, Nanos, u64)>,
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
    /// The zero-page map as of the last sync (pages written since are in `dirty`: see
    /// `zero_word`); in probed runs, exact at every write.
    zero: Bitmap,
    /// The sender's first sweep through memory is complete (see `take_pages`).
    first_sweep_done: bool,
    /// |send ∩ dirty| and |send ∩ zero|, kept so the size of send ∪ dirty is known at any time.
    overlap: u64,
    send_zero: u64,
    cursor: u64,
    stream: WriteStream,
    /// Pages the workload may write (sorted, disjoint `[start, end)` ranges).
    writable: Vec<(u64, u64)>,
    /// The same as bitmap word-index ranges: the only words the dirty log can have bits in.
    dirty_spans: Vec<(usize, usize)>,
    guest_writes: u64,
    xbzrle: Option<Xbzrle>,
    // guest time = anchor_guest + (wall - anchor_wall) * (1e6 - throttle_ppm) / 1e6
    throttle_ppm: u64,
    max_throttle_ppm: u64,
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
    /// The policy's check period, and the generation of the pending check event.
    tick: Option<Nanos>,
    tick_gen: u32,
    round_start: Nanos,
    round_bytes: u64,
    round_pages: u64,
    round_zero: u64,
    round_start_writes: u64,
    last_round: Option<RoundSummary>,
    last_bw: f64,
    rounds: Vec<RoundRecord>,
    probe: Option<OracleProbe>,
    /// Apply the writes at every chunk (the straightforward schedule; tests compare with it).
    eager_writes: bool,
}

impl<'a> Sim<'a> {
    fn new(ck: &'a Checked, replicate: u32, policy: Box<dyn Policy>) -> Self {
        let sc = &ck.scenario;
        let seed = run_seed(sc.seed, replicate);
        let mut link_bps = sc.link.bandwidth.0;
        let mut page_wire = ck.page_size + sc.link.page_header_bytes;
        if let Some(m) = &sc.transfer.multifd {
            link_bps = link_bps.min(m.channels as f64 * m.channel_bandwidth.0);
            page_wire += (m.packet_header_bytes * ck.page_size).div_ceil(m.packet.0);
        }
        let precopy_bps = policy
            .max_bandwidth_bps()
            .map_or(link_bps, |m| m.min(link_bps));
        let chunk_pages = ((CHUNK_TARGET_NS * precopy_bps / 8e9) / page_wire as f64).floor() as u64;
        let xbzrle = sc.transfer.xbzrle.as_ref().map(|x| Xbzrle {
            tags: vec![u64::MAX; (x.cache.0 / ck.page_size).max(1) as usize],
            delta_wire: sc.link.page_header_bytes
                + (x.delta_fraction * ck.page_size as f64).ceil() as u64,
            overflow_limit: (x.overflow_fraction * u64::MAX as f64) as u64,
            seed: mix64(seed, 0xB2),
            active: false,
            hits: 0,
        });
        let zero = initial_zero_pages(ck.mem_pages, sc.vm.zero_page_fraction, mix64(seed, 0x2E80));
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
            // Dirty logging starts with the run; round 0 sends every page.
            send: Bitmap::full(ck.mem_pages),
            dirty: Bitmap::new(ck.mem_pages),
            zero,
            first_sweep_done: false,
            overlap: 0,
            send_zero: 0,
            cursor: 0,
            tick: None,
            tick_gen: 0,
            stream: WriteStream::new(&ck.workload, seed),
            writable: ck.workload.written_ranges(),
            dirty_spans: word_spans(&ck.workload.written_ranges(), ck.mem_pages),
            guest_writes: 0,
            xbzrle,
            throttle_ppm: 0,
            max_throttle_ppm: 0,
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
            round_start_writes: 0,
            last_round: None,
            last_bw: precopy_bps,
            rounds: Vec::new(),
            probe: None,
            eager_writes: false,
        }
    }

    fn guest_time(&self, wall: Nanos) -> Nanos {
        let dt = wall.saturating_sub(self.anchor_wall);
        if self.throttle_ppm == 0 {
            return self.anchor_guest + dt;
        }
        self.anchor_guest + (dt as u128 * (PPM - self.throttle_ppm) as u128 / PPM as u128) as Nanos
    }

    /// Apply every guest write up to wall time `t`.
    fn apply_writes(&mut self, t: Nanos) {
        let g = self.guest_time(t);
        let before = self.stream.total_writes();
        if self.probe.is_some() {
            // The oracle needs |send ∪ dirty| and |send ∩ zero| at every chunk: keep them exact.
            // Both mutating calls must run for every write (no short-circuit `&&`).
            let (dirty, zero, send) = (&mut self.dirty, &mut self.zero, &self.send);
            let (mut overlap, mut unzeroed) = (0u64, 0u64);
            self.stream.advance_to(g, |p| {
                let newly_dirty = dirty.set(p);
                let newly_nonzero = zero.clear(p);
                let in_send = send.get(p) as u64;
                overlap += newly_dirty as u64 & in_send;
                unzeroed += newly_nonzero as u64 & in_send;
            });
            self.overlap += overlap;
            self.send_zero -= unzeroed;
        } else {
            // (The zero-page map is brought up to date at the next sync: see `zero_word`.)
            self.stream.advance_sink(g, MarkDirty(self.dirty.setter()));
        }
        self.guest_writes += self.stream.total_writes() - before;
    }

    fn set_throttle_ppm(&mut self, t: Nanos, ppm: u64) {
        // Throttle decisions are capped at 99 % by the policies; a dirty-rate limit may go further.
        let ppm = ppm.min(999_900);
        self.anchor_guest = self.guest_time(t);
        self.anchor_wall = t;
        self.throttle_ppm = ppm;
        self.max_throttle_ppm = self.max_throttle_ppm.max(ppm);
    }

    fn throttle_pct(&self) -> u8 {
        ((self.throttle_ppm + 5_000) / 10_000) as u8
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
            round_elapsed_ns: t.saturating_sub(self.round_start),
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
            throttle_pct: self.throttle_pct(),
            vcpus: self.ck.scenario.vm.vcpus,
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
            est_downtime_ns: transfer_ns(self.pending_pages() * self.page_wire, est_bw),
            throttle_pct: self.throttle_pct(),
            guest_writes: self.guest_writes - self.round_start_writes,
        });
        self.round_start_writes = self.guest_writes;
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

    /// |send ∪ dirty|: what a stop now would have to send. Kept incrementally when the oracle
    /// watches; otherwise counted from the bitmaps (where the workload writes: the dirty log
    /// has no bits elsewhere).
    fn pending_pages(&self) -> u64 {
        if self.probe.is_some() {
            self.send.count() + self.dirty.count() - self.overlap
        } else {
            self.send.count() + self.send.count_new_within(&self.dirty, &self.dirty_spans)
        }
    }

    /// Move the dirty log into the send set.
    fn merge_dirty(&mut self) {
        if self.zero.count() > 0 {
            self.zero.remove_within(&self.dirty, &self.dirty_spans);
        }
        self.send.absorb_within(&mut self.dirty, &self.dirty_spans);
        self.overlap = 0;
    }

    /// Harvest the dirty log into the send set at `t`; returns the sync's cost.
    fn sync(&mut self, t: Nanos) -> Nanos {
        self.apply_writes(t);
        self.close_round(t);
        let cost = self.sync_cost(self.dirty.count()).max(MIN_SYNC_NS);
        self.merge_dirty();
        if let Some(x) = &mut self.xbzrle {
            x.active = true;
        }
        self.round += 1;
        self.round_start = t;
        self.round_bytes = 0;
        self.round_pages = 0;
        self.round_zero = 0;
        self.sender_ready_at = self.sender_ready_at.max(t + cost);
        // As in QEMU's iteration loop, the next periodic check comes one period after the
        // sync (a round end restarts the check clock), not on a fixed grid.
        if let Some(p) = self.tick {
            self.tick_gen = self.tick_gen.wrapping_add(1);
            self.q.schedule(t + cost + p, Event::Tick(self.tick_gen));
        }
        cost
    }

    /// Take up to `max` pages from the send set, scanning from the cursor (wrapping), and
    /// account them. Returns (pages, zero pages, wire bytes).
    ///
    /// `deferred`: the wall time of this chunk when the guest's writes up to it may not have
    /// been applied yet. Which pages a chunk takes does not depend on them; whether a page is a
    /// zero page does, but only for pages still marked zero that the workload can write: only
    /// when such a page is taken are the writes brought up to date first.
    ///
    /// Re-sent pages need no record of what went out before: the send set starts full and the
    /// sender's first sweep takes pages in address order from 0, so until that sweep reaches the
    /// end of memory no page it takes has gone out before, and after it every page has (pages
    /// that post-copy faults take out of the send set are never taken again).
    // (Inlined: returned through memory, its three counts were read back with a stall.)
    #[inline(always)]
    fn take_pages(
        &mut self,
        max: u64,
        last_stage: bool,
        deferred: Option<Nanos>,
    ) -> (u64, u64, u64) {
        let words = self.mem_pages.div_ceil(64) as usize;
        let per_page = self.xbzrle.as_ref().is_some_and(|x| x.active);
        let probe = self.probe.is_some();
        let (mut taken, mut zeros, mut resent, mut bytes) = (0u64, 0u64, 0u64, 0u64);
        let mut wi = (self.cursor / 64) as usize;
        let mut first_mask = !0u64 << (self.cursor % 64);
        let mut scanned = 0usize;
        while taken < max && self.send.count() > 0 && scanned <= words {
            let w = self.send.word(wi) & first_mask;
            first_mask = !0;
            if w != 0 {
                let need = max - taken;
                let low = w.trailing_zeros();
                let (pick, n) = if w == !0u64 << low {
                    // one run of set bits up to bit 63 (a full send set, as in round 0)
                    let ones = 64 - low as u64;
                    if ones > need {
                        (((1u64 << need) - 1) << low, need)
                    } else {
                        (w, ones)
                    }
                } else {
                    let ones = w.count_ones() as u64;
                    if ones > need {
                        (lowest_set_bits(w, need), need)
                    } else {
                        (w, ones)
                    }
                };
                let mut zw = pick & self.zero_word(wi);
                if zw != 0 {
                    if let Some(t) = deferred {
                        if zw & self.writable_bits(wi) != 0
                            && self.guest_time(t) > self.stream.now_ns()
                        {
                            self.apply_writes(t);
                            zw = pick & self.zero_word(wi);
                        }
                    }
                }
                // (zero pages come in whole 64-page blocks: mostly all or nothing)
                let z = if zw == 0 {
                    0
                } else if zw == pick {
                    n
                } else {
                    zw.count_ones() as u64
                };
                taken += n;
                zeros += z;
                if self.first_sweep_done {
                    resent += n;
                }
                if probe {
                    self.overlap -= (pick & self.dirty.word(wi)).count_ones() as u64;
                    self.send_zero -= z;
                }
                if per_page {
                    let mut rest = pick & !zw;
                    let nth = self.total_pages + taken;
                    while rest != 0 {
                        let p = wi as u64 * 64 + rest.trailing_zeros() as u64;
                        rest &= rest - 1;
                        let full = self.page_wire;
                        bytes += self
                            .xbzrle
                            .as_mut()
                            .map_or(full, |x| x.cost(p, full, last_stage, nth));
                    }
                } else {
                    bytes += (n - z) * self.page_wire;
                }
                bytes += z * self.zero_wire;
                self.send.clear_set_bits(wi, pick, n);
                if taken == max {
                    // resume at the bit after the highest one picked
                    let hi = 63 - pick.leading_zeros() as u64;
                    // (`next` ≤ mem_pages: the page picked last exists)
                    let next = wi as u64 * 64 + hi + 1;
                    self.cursor = if next == self.mem_pages {
                        self.first_sweep_done = true;
                        0
                    } else {
                        next
                    };
                    break;
                }
            }
            wi += 1;
            scanned += 1;
            if wi == words {
                wi = 0;
                self.first_sweep_done = true;
            }
            // (a word's first page is below mem_pages)
            self.cursor = wi as u64 * 64;
        }
        self.resent += resent;
        (taken, zeros, bytes)
    }

    /// Word `wi` of the zero-page map as of the writes applied so far. The map itself is
    /// brought up to date at each sync (a page written since is in the dirty log), except in
    /// probed runs, whose writes clear it at once.
    #[inline]
    fn zero_word(&self, wi: usize) -> u64 {
        self.zero.word(wi) & !self.dirty.word(wi)
    }

    /// The bits of word `wi` whose pages the workload may write.
    fn writable_bits(&self, wi: usize) -> u64 {
        let lo = wi as u64 * 64;
        let hi = lo + 64;
        // (most words a chunk takes lie wholly outside the written region)
        match (self.writable.first(), self.writable.last()) {
            (Some(&(start, _)), Some(&(_, end))) if lo < end && hi > start => {}
            _ => return 0,
        }
        let first = self.writable.partition_point(|&(_, e)| e <= lo);
        let mut m = 0u64;
        for &(s, e) in &self.writable[first..] {
            if s >= hi {
                break;
            }
            let (a, b) = (s.max(lo) - lo, e.min(hi) - lo);
            let below_b = if b == 64 { !0 } else { (1u64 << b) - 1 };
            m |= below_b & (!0u64 << a);
        }
        m
    }

    fn account(&mut self, pages: u64, zeros: u64, bytes: u64) {
        self.total_pages += pages;
        self.total_bytes += bytes;
        self.zero_sent += zeros;
        self.round_pages += pages;
        self.round_bytes += bytes;
        self.round_zero += zeros;
    }

    /// Bytes of a stop-and-copy that cost link time: a link idle at the pause (`wait == 0`)
    /// sends its `link.burst` at once.
    fn after_burst(&self, bytes: u64, wait: Nanos) -> u64 {
        if wait == 0 {
            bytes.saturating_sub(self.ck.scenario.link.burst.0)
        } else {
            bytes
        }
    }

    fn fixed_costs(&self) -> (Nanos, Nanos, Nanos) {
        let sw = &self.ck.scenario.switchover;
        (
            (sw.pause_ms * 1e6).round() as Nanos,
            transfer_ns(sw.state.0, self.link_bps),
            (sw.resume_ms * 1e6).round() as Nanos,
        )
    }

    /// Offer the hindsight oracle the option of stopping at `t`.
    fn probe(&mut self, t: Nanos) {
        let Some(pr) = &self.probe else { return };
        if pr.horizon_ns.is_some_and(|h| t > h) {
            return;
        }
        let (pause, state, resume) = self.fixed_costs();
        let union = self.pending_pages();
        let zeros = self.send_zero.min(union);
        let bytes = (union - zeros) * self.page_wire + zeros * self.zero_wire;
        let sync = self.sync_cost(self.dirty.count());
        let start = t + pause + sync;
        let wait = self.link_busy_until.saturating_sub(start);
        let dt = pause
            + sync
            + wait
            + transfer_ns(self.after_burst(bytes, wait), self.link_bps)
            + self.one_way_ns
            + state
            + resume;
        let total_t = t + dt;
        let total_b = self.total_bytes + bytes;
        let round = self.round;
        let pr = self.probe.as_mut().expect("checked above");
        if pr.max_total_ns.is_some_and(|m| total_t > m) || pr.max_bytes.is_some_and(|m| total_b > m)
        {
            return;
        }
        if pr.best.is_none_or(|b| dt < b.0) {
            pr.best = Some((dt, t, round, total_t, total_b));
        }
    }

    /// Put the next chunk on the link at `t`, or end the round if the send set is empty. While
    /// the chunk after it would be the next event anyway, carry on with it here (exactly as if
    /// it had been queued and popped).
    fn on_send(&mut self, mut t: Nanos) -> Outcome {
        loop {
            if t < self.sender_ready_at {
                self.q.schedule(self.sender_ready_at, Event::Send);
                return Outcome::Running;
            }
            // The oracle watches every chunk. Otherwise writes need to be in only where the
            // dirty log is looked at (every such place applies them first) and where a chunk
            // takes a page they may have made non-zero (take_pages sees to that).
            if self.probe.is_some() || self.eager_writes {
                self.apply_writes(t);
            }
            if self.probe.is_some() {
                self.probe(t);
            }
            if self.send.count() == 0 {
                self.apply_writes(t);
                let obs = self.observe(Trigger::RoundEnd, t);
                let d = self.policy.decide(&obs);
                return self.apply(d, t, true);
            }
            let deferred = if self.probe.is_some() { None } else { Some(t) };
            let (pages, zeros, bytes) = self.take_pages(self.chunk_pages, false, deferred);
            self.account(pages, zeros, bytes);
            // The paced segment ends at `link_busy_until` (= seg_start + its bytes' link time).
            if t > self.link_busy_until {
                // the link went idle (sync, policy pause): start a new paced segment
                self.seg_start = t;
                self.seg_bytes = 0;
            }
            self.seg_bytes += bytes;
            let done = self.seg_start + transfer_ns(self.seg_bytes, self.precopy_bps);
            self.link_busy_until = done;
            if !self.q.run_now(done) {
                self.q.schedule(done, Event::Send);
                return Outcome::Running;
            }
            t = done;
        }
    }

    fn on_tick(&mut self, t: Nanos, gen: u32) -> Outcome {
        let Some(period) = self.tick else {
            return Outcome::Running;
        };
        if gen != self.tick_gen {
            return Outcome::Running; // superseded by a sync
        }
        self.apply_writes(t);
        let obs = self.observe(Trigger::Tick, t);
        let d = self.policy.decide(&obs);
        let round = self.round;
        let out = self.apply(d, t, false);
        if matches!(out, Outcome::Running) && self.round == round {
            self.q.schedule(t + period, Event::Tick(self.tick_gen));
        }
        out
    }

    /// Carry out a decision made at `t`. `round_end` is true when the send set is exhausted and
    /// the sender is waiting for it.
    fn apply(&mut self, d: Decision, t: Nanos, round_end: bool) -> Outcome {
        match d {
            Decision::Stop(reason, why) => Outcome::Stopped { at: t, reason, why },
            Decision::PostCopy(why) => Outcome::PostCopy { at: t, why },
            Decision::Cancel(why) => Outcome::Ended {
                at: t,
                status: Status::Cancelled,
                why,
            },
            Decision::Throttle(pct) => {
                self.set_throttle_ppm(t, pct.min(99) as u64 * 10_000);
                self.apply(Decision::Continue, t, round_end)
            }
            Decision::LimitDirtyRate(pps) => {
                let nominal = self.ck.workload.nominal_rate_pps();
                let ppm = if nominal > pps && nominal > 0.0 {
                    ((1.0 - pps / nominal) * PPM as f64) as u64
                } else {
                    0
                };
                self.set_throttle_ppm(t, ppm);
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

    /// Pause at `t`: final harvest into the send set. Returns (pause, final sync) durations.
    fn pause(&mut self, t: Nanos) -> (Nanos, Nanos) {
        self.apply_writes(t);
        let (pause_ns, _, _) = self.fixed_costs();
        let sync_ns = self.sync_cost(self.dirty.count());
        // A round that sent nothing (the policy stopped right after a sync) is not a round.
        if self.round_pages > 0 {
            self.close_round(t);
        }
        self.merge_dirty();
        (pause_ns, sync_ns)
    }

    /// Pause at `t` and copy the rest. Returns the blackout breakdown, end time, pages, bytes.
    fn stop_and_copy(&mut self, t: Nanos) -> (Downtime, Nanos, u64, u64) {
        let (pause_ns, sync_ns) = self.pause(t);
        let (_, state_ns, resume_ns) = self.fixed_costs();
        let start = t + pause_ns + sync_ns;
        let wait = self.link_busy_until.saturating_sub(start);
        let (pages, zeros, bytes) = self.take_pages(u64::MAX, true, None);
        self.total_pages += pages;
        self.total_bytes += bytes;
        self.zero_sent += zeros;
        let d = Downtime {
            pause_ns,
            final_sync_ns: sync_ns,
            transfer_ns: wait
                + transfer_ns(self.after_burst(bytes, wait), self.link_bps)
                + self.one_way_ns,
            state_ns,
            resume_ns,
        };
        (d, t + d.total_ns(), pages, bytes)
    }

    /// Switch to post-copy at `t`: pause, send state and the bitmap of missing pages, resume on
    /// the destination; then push the missing pages in the background while the guest's writes
    /// to missing pages fault them in (one round trip plus the page each, the vCPU stalled).
    fn post_copy(&mut self, t: Nanos, max_time: Nanos) -> (Downtime, Nanos, PostcopyStats) {
        let guest_at_pause = {
            self.apply_writes(t);
            self.guest_time(t)
        };
        let (pause_ns, sync_ns) = self.pause(t);
        let (_, state_ns, resume_ns) = self.fixed_costs();
        let start = t + pause_ns + sync_ns;
        let wait = self.link_busy_until.saturating_sub(start);
        let bitmap_bytes = self.mem_pages.div_ceil(8);
        let d = Downtime {
            pause_ns,
            final_sync_ns: sync_ns,
            transfer_ns: wait + transfer_ns(bitmap_bytes, self.link_bps) + self.one_way_ns,
            state_ns,
            resume_ns,
        };
        let resume_at = t + d.total_ns();
        // The guest runs unthrottled on the destination from `resume_at`.
        self.throttle_ppm = 0;
        let mut stats = PostcopyStats {
            missing_pages: self.send.count(),
            ..Default::default()
        };
        let fault_ns = 2 * self.one_way_ns + transfer_ns(self.page_wire, self.link_bps);
        let page_ns = transfer_ns(self.page_wire, self.link_bps).max(1);
        let mut wall = resume_at;
        let mut guest = guest_at_pause;
        let mut writes = Vec::new();
        while self.send.count() > 0 && wall < max_time {
            writes.clear();
            self.stream
                .advance_to(guest + POSTCOPY_STEP_NS, |p| writes.push(p));
            self.guest_writes += writes.len() as u64;
            let mut stall = 0;
            let mut faulted = 0u64;
            for &p in &writes {
                if self.send.clear(p) {
                    faulted += 1;
                    stall += fault_ns;
                }
            }
            stats.faults += faulted;
            stats.stall_ns += stall;
            self.total_pages += faulted;
            self.total_bytes += faulted * self.page_wire;
            let step = POSTCOPY_STEP_NS + stall;
            // The background push gets the link time the faults did not use.
            let push_ns = step.saturating_sub(faulted * page_ns);
            let budget = push_ns / page_ns;
            let before = self.send.count();
            let (pages, zeros, bytes) = self.take_pages(budget.max(1), true, None);
            self.total_pages += pages;
            self.total_bytes += bytes;
            self.zero_sent += zeros;
            stats.pushed_pages += pages;
            if pages >= before || self.send.count() == 0 {
                wall += faulted * page_ns
                    + transfer_ns(bytes, self.link_bps).min(push_ns)
                    + self.one_way_ns;
                break;
            }
            wall += step;
            guest += POSTCOPY_STEP_NS;
        }
        stats.duration_ns = wall.saturating_sub(resume_at);
        (d, wall, stats)
    }

    fn run(&mut self, replicate: u32) -> RunResult {
        let sc = &self.ck.scenario;
        let setup = 2 * self.one_way_ns + (sc.link.setup_ms * 1e6).round() as Nanos;
        let mut max_time = (sc.limits.max_time_s * 1e9).round() as Nanos;
        if let Some(h) = self.probe.as_ref().and_then(|p| p.horizon_ns) {
            max_time = max_time.min(h.max(setup + 1));
        }
        // (`send` starts full: round 0 sends every page.)
        self.send_zero = self.zero.count();
        self.round_start = setup;
        self.q.schedule(max_time, Event::Timeout);
        self.probe(setup);
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
                self.set_throttle_ppm(setup, p as u64 * 10_000);
                Outcome::Running
            }
            _ => Outcome::Running,
        };
        self.tick = self.policy.tick_ns();
        if matches!(outcome, Outcome::Running) {
            self.q.schedule(setup, Event::Send);
            if let Some(p) = self.tick {
                self.q.schedule(setup + p, Event::Tick(self.tick_gen));
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
                Event::Tick(gen) => self.on_tick(t, gen),
            };
        }
        let mut postcopy = None;
        let (status, reason, total, downtime, final_pages, final_bytes) = match outcome {
            Outcome::Stopped { at, reason, why } => {
                self.apply_writes(at);
                self.probe(at);
                let (d, end, fp, fb) = self.stop_and_copy(at);
                let st = if reason == StopReason::Converged {
                    Status::Converged
                } else {
                    Status::Forced
                };
                (st, why, end, Some(d), fp, fb)
            }
            Outcome::PostCopy { at, why } => {
                let (d, end, stats) = self.post_copy(at, max_time.max(at + 1) + 3_600_000_000_000);
                postcopy = Some(stats);
                (Status::Converged, why, end, Some(d), 0, 0)
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
            policy: sc.policy.label(),
            workload: sc.workload.kind_name().into(),
            seed: sc.seed,
            replicate,
            status,
            reason,
            mem_bytes: self.ck.mem_bytes(),
            link_bps: sc.link.bandwidth.0,
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
            max_throttle_pct: ((self.max_throttle_ppm + 5_000) / 10_000) as u8,
            kind: "live".into(),
            postcopy,
            xbzrle_hits: self.xbzrle.as_ref().map_or(0, |x| x.hits),
        };
        RunResult {
            report,
            rounds: std::mem::take(&mut self.rounds),
        }
    }
}

/// Simulate one live migration of a checked scenario under its own policy.
pub fn simulate_live(ck: &Checked, replicate: u32) -> RunResult {
    let policy = ck.scenario.policy.build(ck.scenario.vm.vcpus);
    Sim::new(ck, replicate, policy).run(replicate)
}

/// [`simulate_live`] applying the guest's writes at every chunk, as the model describes it;
/// the engine defers them where that cannot change a result, and tests check it does not.
#[cfg(test)]
pub(crate) fn simulate_live_eager(ck: &Checked, replicate: u32) -> RunResult {
    let policy = ck.scenario.policy.build(ck.scenario.vm.vcpus);
    let mut sim = Sim::new(ck, replicate, policy);
    sim.eager_writes = true;
    sim.run(replicate)
}

/// A stop point the oracle considered: pausing at `stop_at_ns` gives `downtime_ns`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Oracle {
    /// The smallest achievable blackout.
    pub downtime_ns: Nanos,
    /// When to pause to get it, and in which iteration that falls.
    pub stop_at_ns: Nanos,
    pub round: u32,
    pub total_time_ns: Nanos,
    pub bytes_sent: u64,
}

impl Oracle {
    /// The better (smaller blackout) of two candidates.
    pub fn min(a: Option<Oracle>, b: Option<Oracle>) -> Option<Oracle> {
        match (a, b) {
            (Some(x), Some(y)) => Some(if y.downtime_ns < x.downtime_ns { y } else { x }),
            (x, None) => x,
            (None, y) => y,
        }
    }
}

/// Caps on the stop points the oracle may pick.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OracleCaps {
    pub max_total_ns: Option<Nanos>,
    pub max_bytes: Option<u64>,
}

fn run_probed(
    ck: &Checked,
    replicate: u32,
    policy: Box<dyn Policy>,
    horizon: Option<Nanos>,
    caps: OracleCaps,
) -> (RunResult, Option<Oracle>) {
    let mut sim = Sim::new(ck, replicate, policy);
    sim.probe = Some(OracleProbe {
        horizon_ns: horizon,
        max_total_ns: caps.max_total_ns,
        max_bytes: caps.max_bytes,
        best: None,
    });
    let res = sim.run(replicate);
    let best = sim.probe.and_then(|p| p.best).map(
        |(downtime_ns, stop_at_ns, round, total_time_ns, bytes_sent)| Oracle {
            downtime_ns,
            stop_at_ns,
            round,
            total_time_ns,
            bytes_sent,
        },
    );
    (res, best)
}

/// Simulate under the scenario's policy while recording the best stop point along the run's own
/// trajectory (every chunk boundary up to, and including, the policy's own stop).
pub fn simulate_probed(
    ck: &Checked,
    replicate: u32,
    caps: OracleCaps,
) -> (RunResult, Option<Oracle>) {
    run_probed(
        ck,
        replicate,
        ck.scenario.policy.build(ck.scenario.vm.vcpus),
        None,
        caps,
    )
}

/// Never stops: iterates round by round (syncing when a round is drained), or, with
/// `sync_every_ns`, also syncs periodically once the first pass is done.
#[derive(Clone)]
struct NeverStop {
    sync_every_ns: Option<Nanos>,
}

impl Policy for NeverStop {
    fn name(&self) -> &'static str {
        "oracle"
    }
    fn tick_ns(&self) -> Option<u64> {
        self.sync_every_ns
    }
    fn decide(&mut self, obs: &Observation) -> Decision {
        if obs.trigger == Trigger::Tick && obs.round > 0 {
            Decision::Sync
        } else {
            Decision::Continue
        }
    }
}

/// Period of the oracle's second replay, which syncs often (as QEMU does near convergence).
pub const ORACLE_SYNC_EVERY_NS: Nanos = 10_000_000;

/// Hindsight oracle: replay the scenario's exact write trace (no throttling) and find the pause
/// time that minimises the blackout among every chunk boundary up to `horizon_ns`, over two
/// trajectories — iterating round by round, and syncing every 10 ms after the first pass —
/// optionally subject to caps on total time or bytes.
pub fn oracle(ck: &Checked, replicate: u32, horizon_ns: Nanos, caps: OracleCaps) -> Option<Oracle> {
    let a = run_probed(
        ck,
        replicate,
        Box::new(NeverStop {
            sync_every_ns: None,
        }),
        Some(horizon_ns),
        caps,
    )
    .1;
    let b = run_probed(
        ck,
        replicate,
        Box::new(NeverStop {
            sync_every_ns: Some(ORACLE_SYNC_EVERY_NS),
        }),
        Some(horizon_ns),
        caps,
    )
    .1;
    Oracle::min(a, b)
}

#[cfg(test)]
mod tests {
    use super::{lowest_set_bits, word_spans};
    use proptest::prelude::*;

    #[test]
    fn word_spans_cover_the_ranges_once() {
        let r = [(0, 3), (60, 70), (100, 128), (130, 131), (1000, u64::MAX)];
        assert_eq!(word_spans(&r, 500), vec![(0, 3)]);
        assert_eq!(word_spans(&r, 2000), vec![(0, 3), (15, 32)]);
        assert_eq!(word_spans(&[(64, 128)], 200), vec![(1, 2)]);
    }

    proptest! {
        #[test]
        fn lowest_set_bits_keeps_exactly_the_lowest_k(w in any::<u64>(), k in 0u64..64, sparse in any::<u64>()) {
            for w in [w, w & sparse, !0, w | 1 << 63] {
                let ones = w.count_ones() as u64;
                if k >= ones {
                    continue;
                }
                let mut naive = 0u64;
                let mut rest = w;
                for _ in 0..k {
                    naive |= rest & rest.wrapping_neg();
                    rest &= rest - 1;
                }
                prop_assert_eq!(lowest_set_bits(w, k), naive, "w {:#x} k {}", w, k);
            }
        }
    }
}

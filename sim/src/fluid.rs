//! Fluid mode: the same iterations, syncs and policies as the exact engine, but each workload
//! class advances its *expected* number of distinct dirty pages analytically, so a migration
//! costs O(iterations + policy checks) instead of O(pages + writes).
//!
//! Per class, with n writes since the last sync over a region of W pages:
//! * uniform: W(1 − e^(−n/W));
//! * Zipf: Σ over rank buckets of n_b(1 − e^(−n·p_b)), p_b the bucket's per-page probability;
//! * sequential scan: min(W, n);
//! * `analytic` mode (the textbook geometric model): n, ignoring the working set (capped at
//!   memory), so round i sends M·λ^i.
//!
//! Pages of the send set are assumed spread over the classes in proportion, which is exact at
//! iteration ends (what round-by-round policies see) and an approximation for mid-round syncs.
//! Post-copy and XBZRLE are not modelled here (the scenario check rejects them).

use crate::engine::Nanos;
use crate::metrics::{Downtime, RoundRecord, RunReport, RunResult, Status};
use crate::migration::transfer_ns;
use crate::policy::{Cycle, Decision, Observation, RoundSummary, SteadyTicks, StopReason, Trigger};
use crate::scenario::Checked;
use workloads::spec::{Class, Pattern, Workload};

const MAX_ROUNDS: u32 = 100_000;
const MIN_SYNC_NS: f64 = 1_000.0;
/// Zipf ranks kept as single pages before buckets grow geometrically.
const ZIPF_EXACT_RANKS: u64 = 16;
/// Growth ratio of Zipf rank buckets beyond the exact ranks.
const ZIPF_BUCKET_RATIO: f64 = 1.3;

/// How a segment turns writes into distinct pages.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Curve {
    /// Writes spread uniformly: W(1 − e^(−n/W)).
    Uniform,
    /// A sequential scan: min(W, n).
    Sequential,
    /// The geometric model: every write is a new page.
    Linear,
}

/// A contiguous address range written by one class (a Zipf class is split into rank buckets,
/// each uniform within itself), or memory no class writes (rate 0). Within a segment, dirty
/// pages and send-set pages are taken as uniformly spread.
#[derive(Clone, Debug)]
struct Seg {
    first: f64,
    pages: f64,
    /// Writes per second of guest time while the segment's phase runs.
    rate: f64,
    /// Phase the segment belongs to (`usize::MAX`: never written).
    phase: usize,
    curve: Curve,
    /// Pages of the send set in this segment when the current iteration began.
    send: f64,
    /// Distinct dirty pages as last computed by `dirty_overlap` (reused by `harvest`).
    memo_dirty: std::cell::Cell<f64>,
}

impl Seg {
    /// Expected distinct pages after `n` writes.
    #[inline]
    fn distinct(&self, n: f64) -> f64 {
        if n <= 0.0 {
            return 0.0;
        }
        match self.curve {
            Curve::Uniform => {
                let x = n / self.pages;
                if x > 40.0 {
                    self.pages // saturated: e^(−40) is below f64's resolution of 1
                } else if x < 1e-3 {
                    // series to third order; the next term is below 5e-11 of the value
                    n * (1.0 - x * (0.5 - x / 6.0))
                } else {
                    self.pages * -(-x).exp_m1()
                }
            }
            Curve::Sequential => n.min(self.pages),
            Curve::Linear => n,
        }
    }

    /// Share of the segment the sender's sweep has passed: the sweep started at `x0` and has
    /// advanced `s` pages through an address space of `mem` pages, wrapping at the end.
    #[inline]
    fn swept(&self, x0: f64, s: f64, mem: f64) -> f64 {
        let (a, b) = (self.first, self.first + self.pages);
        let cover = |lo: f64, hi: f64| (hi.min(b) - lo.max(a)).max(0.0);
        let end = x0 + s;
        let c = if end <= mem {
            cover(x0, end)
        } else {
            cover(x0, mem) + cover(0.0, (end - mem).min(x0))
        };
        (c / self.pages).min(1.0)
    }
}

/// Split a class into segments.
fn class_segments(c: &Class, phase: usize, analytic: bool, out: &mut Vec<Seg>) {
    let seg = |first: f64, pages: f64, rate: f64, curve| Seg {
        first,
        pages,
        rate,
        phase,
        curve,
        send: 0.0,
        memo_dirty: std::cell::Cell::new(0.0),
    };
    match (analytic, c.pattern) {
        (true, _) => out.push(seg(
            c.first_page as f64,
            c.pages as f64,
            c.rate_pps,
            Curve::Linear,
        )),
        (false, Pattern::Uniform) => out.push(seg(
            c.first_page as f64,
            c.pages as f64,
            c.rate_pps,
            Curve::Uniform,
        )),
        (false, Pattern::Sequential) => out.push(seg(
            c.first_page as f64,
            c.pages as f64,
            c.rate_pps,
            Curve::Sequential,
        )),
        (false, Pattern::Zipf { exponent }) => {
            let mut rank0 = 0.0;
            for (n, share) in zipf_buckets(c.pages, exponent) {
                out.push(seg(
                    c.first_page as f64 + rank0,
                    n,
                    c.rate_pps * share,
                    Curve::Uniform,
                ));
                rank0 += n;
            }
        }
    }
}

/// Zipf rank buckets as (pages, share of the writes): single ranks first, then buckets growing
/// by [`ZIPF_BUCKET_RATIO`]. Within a bucket the probability varies by at most that ratio to
/// the power of the exponent, which the uniform-within-bucket curve averages.
fn zipf_buckets(pages: u64, s: f64) -> Vec<(f64, f64)> {
    let mut bounds = Vec::new();
    let mut lo = 1u64;
    while lo <= pages {
        let hi = if lo <= ZIPF_EXACT_RANKS {
            lo
        } else {
            ((lo as f64 * ZIPF_BUCKET_RATIO) as u64)
                .max(lo + 1)
                .min(pages)
        };
        bounds.push((lo, hi.min(pages)));
        lo = hi.min(pages) + 1;
    }
    let weight = |lo: u64, hi: u64| -> f64 {
        // Exact sums for the first ranks; beyond, the midpoint integral (its error per rank
        // is ~s(s+1)/24 · r^(−s−2), below 1e-6 of the rank's own weight from rank 64 on).
        if lo < 64 {
            (lo..=hi).map(|r| (r as f64).powf(-s)).sum()
        } else if (s - 1.0).abs() < 1e-12 {
            ((hi as f64 + 0.5) / (lo as f64 - 0.5)).ln()
        } else {
            ((hi as f64 + 0.5).powf(1.0 - s) - (lo as f64 - 0.5).powf(1.0 - s)) / (1.0 - s)
        }
    };
    let ws: Vec<f64> = bounds.iter().map(|&(l, h)| weight(l, h)).collect();
    let total: f64 = ws.iter().sum();
    bounds
        .iter()
        .zip(ws)
        .map(|(&(l, h), w)| ((h - l + 1) as f64, w / total))
        .collect()
}

/// Segments for a workload: every class of every phase, plus rate-0 segments for the memory no
/// class of the first phase covers, so that the first iteration's send set (all memory) is the
/// sum of the segments of phase 0 and the gaps.
fn segments(phases: &[Vec<Class>], mem: u64, analytic: bool) -> Vec<Seg> {
    let mut segs = Vec::new();
    for (i, classes) in phases.iter().enumerate() {
        for c in classes.iter().filter(|c| c.pages > 0) {
            class_segments(c, i, analytic, &mut segs);
        }
    }
    // Gaps around phase 0's classes.
    let mut covered: Vec<(u64, u64)> = phases
        .first()
        .map(|cs| {
            cs.iter()
                .filter(|c| c.pages > 0)
                .map(|c| (c.first_page, c.first_page + c.pages))
                .collect()
        })
        .unwrap_or_default();
    covered.sort_unstable();
    let mut at = 0u64;
    let mut gaps = Vec::new();
    for (a, b) in covered {
        if a > at {
            gaps.push((at, a));
        }
        at = at.max(b);
    }
    if at < mem {
        gaps.push((at, mem));
    }
    for (a, b) in gaps {
        segs.push(Seg {
            first: a as f64,
            pages: (b - a) as f64,
            rate: 0.0,
            phase: usize::MAX,
            curve: Curve::Uniform,
            send: 0.0,
            memo_dirty: std::cell::Cell::new(0.0),
        });
    }
    for sg in &mut segs {
        if sg.phase == 0 || sg.phase == usize::MAX {
            sg.send = sg.pages;
        }
    }
    segs
}

/// The send set's density along the address space: elementary intervals between segment
/// boundaries, each with the send-set pages per address it holds this iteration.
#[derive(Clone, Debug)]
struct Sweep {
    /// Interval starts (sorted, first 0) and ends.
    lo: Vec<f64>,
    hi: Vec<f64>,
    /// Segments overlapping each interval.
    members: Vec<Vec<usize>>,
    density: Vec<f64>,
    /// Where this iteration's sweep began, and how far it has gone (pages of address space).
    x0: f64,
    s: f64,
    /// Interval holding the sweep position.
    at: usize,
}

impl Sweep {
    fn new(segs: &[Seg], mem: f64) -> Self {
        let mut cuts: Vec<f64> = Vec::with_capacity(2 * segs.len() + 2);
        cuts.extend([0.0, mem]);
        for sg in segs {
            cuts.push(sg.first.min(mem));
            cuts.push((sg.first + sg.pages).min(mem));
        }
        cuts.sort_by(|a, b| a.total_cmp(b));
        cuts.dedup();
        let n = cuts.len() - 1;
        // Every segment boundary is a cut, so a segment covers a run of whole intervals.
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (k, sg) in segs.iter().enumerate() {
            let i0 = cuts.partition_point(|&c| c < sg.first.min(mem));
            let i1 = cuts.partition_point(|&c| c < (sg.first + sg.pages).min(mem));
            for m in &mut members[i0..i1.min(n)] {
                m.push(k);
            }
        }
        let mut sw = Sweep {
            lo: cuts[..n].to_vec(),
            hi: cuts[1..].to_vec(),
            members,
            density: vec![0.0; n],
            x0: 0.0,
            s: 0.0,
            at: 0,
        };
        sw.restart(segs, 0.0);
        sw
    }

    /// A new iteration begins at address `x0` with the segments' current send sets.
    fn restart(&mut self, segs: &[Seg], x0: f64) {
        for (d, m) in self.density.iter_mut().zip(&self.members) {
            *d = m
                .iter()
                .map(|&i| segs[i].send / segs[i].pages.max(1.0))
                .sum();
        }
        self.x0 = x0;
        self.s = 0.0;
        self.at = self.lo.partition_point(|&l| l <= x0).saturating_sub(1);
    }

    /// Advance the sweep past `pages` pages of the send set (never beyond one full turn).
    fn advance(&mut self, mut pages: f64, mem: f64) {
        let n = self.lo.len();
        while pages > 0.0 && self.s < mem {
            let x = (self.x0 + self.s) % mem;
            let i = self.at;
            let room = (self.hi[i] - x).max(0.0).min(mem - self.s);
            let d = self.density[i];
            let need = if d > 0.0 { pages / d } else { f64::INFINITY };
            if need < room {
                self.s += need;
                return;
            }
            self.s += room;
            pages -= room * d;
            self.at = (i + 1) % n;
        }
    }
}

struct Fluid<'a> {
    ck: &'a Checked,
    segs: Vec<Seg>,
    sweep: Sweep,
    phases: Vec<Nanos>,
    repeat: bool,
    analytic: bool,
    mem: f64,
    page_wire: f64,
    zero_wire: f64,
    link_bps: f64,
    one_way: Nanos,
    // send set: pages and bytes left in this iteration
    send_pages: f64,
    send_bytes: f64,
    throttle: f64,
    guest_ns: f64,
    guest_writes: f64,
    /// Guest time spent in each phase since the last sync (ns): a segment's writes since
    /// the sync are its rate times its phase's entry.
    phase_guest: Vec<f64>,
    /// Total write rate of each phase (pages/s).
    phase_rate: Vec<f64>,
    /// Bumped whenever writes or the sweep move; `memo` holds (version, dirty, overlap).
    version: u64,
    memo: std::cell::Cell<(u64, f64, f64)>,
}

impl Fluid<'_> {
    /// Writes to `sg` since the last sync.
    #[inline]
    fn writes(&self, sg: &Seg) -> f64 {
        self.phase_guest
            .get(sg.phase)
            .map_or(0.0, |g| sg.rate * g / 1e9)
    }

    fn phase_at(&self, guest: f64) -> (usize, f64) {
        if self.phases.len() <= 1 {
            return (0, f64::INFINITY);
        }
        let period: f64 = self.phases.iter().map(|&d| d as f64).sum();
        let mut g = guest;
        if self.repeat {
            g %= period;
        } else if g >= period - *self.phases.last().unwrap_or(&0) as f64 {
            return (self.phases.len() - 1, f64::INFINITY);
        }
        let mut acc = 0.0;
        for (i, &d) in self.phases.iter().enumerate() {
            if g < acc + d as f64 {
                return (i, acc + d as f64 - g);
            }
            acc += d as f64;
        }
        (self.phases.len() - 1, f64::INFINITY)
    }

    /// Expected pages dirtied since the last sync, and how many of them are still ahead of
    /// the sender in this iteration's send set (they go out in this iteration anyway).
    fn dirty_overlap(&self) -> (f64, f64) {
        let (v, d, o) = self.memo.get();
        if v == self.version {
            return (d, o);
        }
        let (mut dirty, mut overlap) = (0.0, 0.0);
        let (x0, s, mem) = (self.sweep.x0, self.sweep.s, self.mem);
        for sg in &self.segs {
            let n = self.writes(sg);
            if n <= 0.0 {
                sg.memo_dirty.set(0.0);
                continue;
            }
            let d = sg.distinct(n);
            sg.memo_dirty.set(d);
            dirty += d;
            if !self.analytic && sg.send > 0.0 {
                let ahead = sg.send * (1.0 - sg.swept(x0, s, mem));
                overlap += d * (ahead / sg.pages).min(1.0);
            }
        }
        let dirty = dirty.min(mem);
        let overlap = overlap.min(dirty);
        self.memo.set((self.version, dirty, overlap));
        (dirty, overlap)
    }

    fn dirty(&self) -> f64 {
        self.dirty_overlap().0
    }

    /// Let `wall_dt` ns of wall time pass for the guest.
    fn run_guest(&mut self, wall_dt: f64) {
        let mut g = wall_dt * (1.0 - self.throttle);
        self.version += (g > 0.0) as u64;
        while g > 0.0 {
            let (ph, left) = self.phase_at(self.guest_ns);
            let step = g.min(left.max(1.0));
            self.phase_guest[ph] += step;
            self.guest_writes += self.phase_rate[ph] * step / 1e9;
            self.guest_ns += step;
            g -= step;
        }
    }

    /// Send `pages` pages (`bytes` on the wire) of this iteration's send set.
    fn send(&mut self, pages: f64, bytes: f64) {
        self.version += 1;
        self.send_pages = (self.send_pages - pages).max(0.0);
        self.send_bytes = (self.send_bytes - bytes).max(0.0);
        self.sweep.advance(pages, self.mem);
    }

    /// Harvest the dirty log: the dirty pages not already pending join the send set and a new
    /// iteration starts where the sender stands. Returns the pages harvested.
    fn harvest(&mut self, dirty: f64, overlap: f64, wire_avg: f64) -> f64 {
        self.dirty_overlap(); // per-segment counts for this state
        self.version += 1;
        let (x0, s, mem) = (self.sweep.x0, self.sweep.s, self.mem);
        for sg in &mut self.segs {
            let ahead = sg.send * (1.0 - sg.swept(x0, s, mem));
            let d = sg.memo_dirty.get();
            let o = if self.analytic {
                0.0
            } else {
                d * (ahead / sg.pages).min(1.0)
            };
            sg.send = if self.analytic {
                ahead + d
            } else {
                (ahead + d - o).min(sg.pages)
            };
        }
        self.phase_guest.iter_mut().for_each(|g| *g = 0.0);
        let new = dirty - overlap;
        self.send_bytes = self.send_bytes.min(self.send_pages * wire_avg) + new * self.page_wire;
        self.send_pages += new;
        let x = (x0 + s) % mem;
        self.sweep.restart(&self.segs, x);
        new
    }

    fn sync_cost(&self, dirty: f64) -> f64 {
        let d = &self.ck.scenario.dirty_log;
        let gib = self.ck.mem_bytes() as f64 / (1u64 << 30) as f64;
        (d.sync_fixed_us * 1e3 + d.sync_us_per_gib * 1e3 * gib + d.sync_ns_per_dirty_page * dirty)
            .round()
    }
}

fn same_scalars(a: (f64, f64), b: (f64, f64)) -> bool {
    let eq = |x: f64, y: f64| (x - y).abs() <= 1e-12 * x.abs().max(y.abs()) + 1e-300;
    eq(a.0, b.0) && eq(a.1, b.1)
}

/// The state at the start of an iteration, to recognise a fixed point.
struct Snapshot {
    t: f64,
    x0: f64,
    sends: Vec<f64>,
    writes: Vec<f64>,
    send_pages: f64,
    send_bytes: f64,
    throttle: f64,
    ready_in: f64,
    tick_in: f64,
    total_pages: f64,
    total_bytes: f64,
    guest_writes: f64,
    guest_ns: f64,
    /// Round records so far.
    rounds: usize,
}

impl Snapshot {
    fn take(
        f: &Fluid,
        t: f64,
        ready: f64,
        next_tick: Option<f64>,
        total_pages: f64,
        total_bytes: f64,
    ) -> Self {
        Snapshot {
            t,
            x0: f.sweep.x0,
            sends: f.segs.iter().map(|s| s.send).collect(),
            writes: f.phase_guest.clone(),
            send_pages: f.send_pages,
            send_bytes: f.send_bytes,
            throttle: f.throttle,
            ready_in: ready - t,
            tick_in: next_tick.map_or(-1.0, |x| x - t),
            total_pages,
            total_bytes,
            guest_writes: f.guest_writes,
            guest_ns: f.guest_ns,
            rounds: 0,
        }
    }

    /// Same iteration-start state, to a relative 1e-12 (times to a picosecond).
    fn same_state(&self, o: &Snapshot) -> bool {
        let eq = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()) + 1e-300;
        let eq_t = |a: f64, b: f64| (a - b).abs() <= 1e-3;
        // Where the sweep starts only matters when it meets segments of different send
        // densities; with one (uniform) segment holding the send set, any start is the same.
        let holders = self.sends.iter().filter(|&&x| x > 0.0).count();
        (holders <= 1 || eq(self.x0, o.x0))
            && eq(self.send_pages, o.send_pages)
            && eq(self.send_bytes, o.send_bytes)
            && self.throttle == o.throttle
            && eq_t(self.ready_in, o.ready_in)
            && eq_t(self.tick_in, o.tick_in)
            && self.sends.iter().zip(&o.sends).all(|(a, b)| eq(*a, *b))
            && self.writes.iter().zip(&o.writes).all(|(a, b)| eq(*a, *b))
    }
}

/// Expected zero pages written before the first iteration's sender reaches them, for zero
/// fraction `z`, first-iteration duration `t0_ns`, with the sender moving through memory at a
/// steady pace (page x is sent at x·t0/mem). Closed form per segment.
fn zero_pages_lost(segs: &[Seg], z: f64, mem: f64, t0_ns: f64) -> f64 {
    let tau = t0_ns / mem / 1e9; // seconds until the sender reaches page x, per page
    let mut lost = 0.0;
    for sg in segs.iter().filter(|sg| sg.phase == 0) {
        if sg.rate <= 0.0 || sg.pages <= 0.0 {
            continue;
        }
        let (a, w) = (sg.first, sg.pages);
        lost += match sg.curve {
            Curve::Uniform => {
                // ∫_a^{a+w} 1 − e^(−k·x) dx with k = rate·tau/w
                let k = sg.rate * tau / w;
                if k * (a + w) < 1e-9 {
                    k * ((a + w).powi(2) - a * a) / 2.0
                } else {
                    w - ((-k * a).exp() - (-k * (a + w)).exp()) / k
                }
            }
            Curve::Sequential => {
                // page x is written first at (x − a)/rate seconds: lost when that is before x·tau
                let rt = sg.rate * tau;
                if rt >= 1.0 {
                    w
                } else {
                    (a / (1.0 - rt) - a).clamp(0.0, w)
                }
            }
            Curve::Linear => {
                // min(1, rate·x·tau/w) integrated over the segment
                let k = sg.rate * tau / w;
                let full_from = if k > 0.0 { 1.0 / k } else { f64::INFINITY };
                let lo = a;
                let hi = (a + w).min(full_from.max(a));
                let part = if hi > lo {
                    k * (hi * hi - lo * lo) / 2.0
                } else {
                    0.0
                };
                part + (a + w - hi).max(0.0)
            }
        };
    }
    (z * lost).clamp(0.0, z * mem)
}

/// Simulate one live migration in fluid (or, with `analytic`, geometric) mode.
pub fn simulate_fluid(ck: &Checked, replicate: u32, analytic: bool) -> RunResult {
    run(ck, replicate, analytic, true)
}

/// As [`simulate_fluid`]; `skip_ticks = false` consults the policy at every tick (tests check
/// that skipping changes nothing).
pub(crate) fn run(ck: &Checked, replicate: u32, analytic: bool, skip_ticks: bool) -> RunResult {
    let sc = &ck.scenario;
    let (phases, repeat, class_sets): (Vec<Nanos>, bool, Vec<Vec<Class>>) = match &ck.workload {
        Workload::Classes(c) => (vec![u64::MAX], false, vec![c.clone()]),
        Workload::Phased { phases, repeat } => (
            phases.iter().map(|p| p.0).collect(),
            *repeat,
            phases.iter().map(|p| p.1.clone()).collect(),
        ),
        // A recorded trace has no expected-count model: fluid mode sees no writes (the CLI
        // replays traces in exact mode only).
        Workload::Trace(_) => (vec![u64::MAX], false, vec![Vec::new()]),
    };
    let segs = segments(&class_sets, ck.mem_pages, analytic);
    let mut policy = sc.policy.build(sc.vm.vcpus);
    let mut link_bps = sc.link.bandwidth.0;
    let mut page_wire = (ck.page_size + sc.link.page_header_bytes) as f64;
    if let Some(m) = &sc.transfer.multifd {
        link_bps = link_bps.min(m.channels as f64 * m.channel_bandwidth.0);
        page_wire += (m.packet_header_bytes * ck.page_size).div_ceil(m.packet.0) as f64;
    }
    let precopy_bps = policy
        .max_bandwidth_bps()
        .map_or(link_bps, |m| m.min(link_bps));
    let mem = ck.mem_pages as f64;
    let sweep = Sweep::new(&segs, mem);
    let mut f = Fluid {
        ck,
        segs,
        sweep,
        phases,
        repeat,
        analytic,
        mem,
        page_wire,
        zero_wire: sc.link.zero_page_bytes as f64,
        link_bps,
        one_way: (sc.link.rtt_ms * 1e6 / 2.0).round() as Nanos,
        send_pages: mem,
        send_bytes: 0.0,
        throttle: 0.0,
        guest_ns: 0.0,
        guest_writes: 0.0,
        phase_guest: vec![0.0; class_sets.len()],
        phase_rate: class_sets
            .iter()
            .map(|cs| cs.iter().filter(|c| c.pages > 0).map(|c| c.rate_pps).sum())
            .collect(),
        version: 1,
        memo: std::cell::Cell::new((0, 0.0, 0.0)),
    };
    // Round 0: zero pages travel as markers, less those the guest writes before they are sent.
    let z = sc.vm.zero_page_fraction;
    let mut zero0 = z * mem;
    let mut t0 = (mem - zero0) * page_wire * 8e9 / precopy_bps;
    for _ in 0..3 {
        zero0 = z * mem - zero_pages_lost(&f.segs, z, mem, t0);
        t0 = ((mem - zero0) * page_wire + zero0 * f.zero_wire) * 8e9 / precopy_bps;
    }
    f.send_bytes = (mem - zero0) * page_wire + zero0 * f.zero_wire;
    let zero_sent = zero0;

    let setup = 2 * f.one_way;
    let max_time = (sc.limits.max_time_s * 1e9).round();
    let mut t = setup as f64;
    f.run_guest(t);
    let tick = policy.tick_ns().map(|x| x as f64);
    let mut next_tick = tick.map(|p| t + p);
    let mut ready = t;
    let mut round = 0u32;
    let mut round_start = t;
    let (mut round_pages, mut round_bytes) = (0.0f64, 0.0f64);
    let round_writes0 = 0.0;
    let mut round_writes_start = round_writes0;
    let (mut total_pages, mut total_bytes) = (0.0f64, 0.0f64);
    let mut last_round: Option<RoundSummary> = None;
    let mut last_bw = precopy_bps;
    let mut rounds: Vec<RoundRecord> = Vec::new();
    let mut max_throttle = 0.0f64;
    let wire_avg = |f: &Fluid| {
        if f.send_pages > 0.0 {
            f.send_bytes / f.send_pages
        } else {
            f.page_wire
        }
    };

    let observe = |f: &Fluid,
                   trigger,
                   t: f64,
                   round,
                   rp: f64,
                   rb: f64,
                   tp: f64,
                   tb: f64,
                   rs: f64,
                   lr,
                   lbw| Observation {
        trigger,
        elapsed_ns: t as u64,
        round,
        mem_bytes: ck.mem_bytes(),
        page_size: ck.page_size,
        page_wire_bytes: f.page_wire as u64,
        total_bytes_sent: tb as u64,
        total_pages_sent: tp as u64,
        round_bytes_sent: rb as u64,
        round_pages_sent: rp as u64,
        round_elapsed_ns: (t - rs).max(0.0) as u64,
        remaining_pages: f.send_pages.round() as u64,
        dirty_pages: f.dirty().round() as u64,
        last_round: lr,
        bandwidth_bps: lbw,
        dirty_rate_pps: 0.0,
        throttle_pct: (f.throttle * 100.0).round() as u8,
        vcpus: sc.vm.vcpus,
    };

    let mut decision = policy.decide(&observe(
        &f,
        Trigger::Start,
        t,
        0,
        0.0,
        0.0,
        0.0,
        0.0,
        round_start,
        None,
        last_bw,
    ));
    let mut pending_trigger: Option<Trigger> = None;
    let mut snaps: Option<Snapshot> = None;
    let mut last_scalars = (f64::NAN, f64::NAN);
    let outcome: (Status, String, f64, bool) = loop {
        // Carry out the decision in hand.
        let sync_now;
        match std::mem::replace(&mut decision, Decision::Continue) {
            Decision::Stop(r, why) => {
                break (
                    if r == StopReason::Converged {
                        Status::Converged
                    } else {
                        Status::Forced
                    },
                    why,
                    t,
                    true,
                )
            }
            Decision::Cancel(why) => break (Status::Cancelled, why, t, false),
            Decision::PostCopy(why) => break (Status::Converged, why, t, true),
            Decision::Throttle(p) => {
                f.throttle = p.min(99) as f64 / 100.0;
                sync_now = pending_trigger == Some(Trigger::RoundEnd);
            }
            Decision::LimitDirtyRate(pps) => {
                let nominal = ck.workload.nominal_rate_pps();
                f.throttle = if nominal > pps && nominal > 0.0 {
                    (1.0 - pps / nominal).min(0.9999)
                } else {
                    0.0
                };
                sync_now = pending_trigger == Some(Trigger::RoundEnd);
            }
            Decision::Continue => sync_now = pending_trigger == Some(Trigger::RoundEnd),
            Decision::Sync => sync_now = true,
        }
        max_throttle = max_throttle.max(f.throttle);
        if sync_now && pending_trigger != Some(Trigger::AfterSync) {
            if round + 1 >= MAX_ROUNDS {
                break (
                    Status::Timeout,
                    format!("iteration cap of {MAX_ROUNDS} rounds reached"),
                    t,
                    false,
                );
            }
            // Close the round and merge the expected dirty set into the send set.
            let (dirty, overlap) = f.dirty_overlap();
            let dur = t - round_start;
            let bw = if dur > 0.0 {
                round_bytes * 8e9 / dur
            } else {
                last_bw
            };
            let union = f.send_pages + dirty - overlap;
            rounds.push(RoundRecord {
                round,
                start_ns: round_start as u64,
                duration_ns: dur as u64,
                pages_sent: round_pages.round() as u64,
                zero_pages_sent: if round == 0 {
                    zero_sent.round() as u64
                } else {
                    0
                },
                bytes_sent: round_bytes.round() as u64,
                pages_dirtied: dirty.round() as u64,
                bandwidth_bps: bw,
                est_downtime_ns: transfer_ns(
                    (union * f.page_wire) as u64,
                    if bw > 0.0 { bw } else { precopy_bps },
                ),
                throttle_pct: (f.throttle * 100.0).round() as u8,
                guest_writes: (f.guest_writes - round_writes_start).round() as u64,
            });
            round_writes_start = f.guest_writes;
            last_round = Some(RoundSummary {
                round,
                duration_ns: dur as u64,
                pages_sent: round_pages as u64,
                bytes_sent: round_bytes as u64,
                pages_dirtied: dirty as u64,
            });
            if dur > 0.0 && round_bytes > 0.0 {
                last_bw = bw;
            }
            let wa = wire_avg(&f);
            f.harvest(dirty, overlap, wa);
            round += 1;
            round_start = t;
            round_pages = 0.0;
            round_bytes = 0.0;
            let cost = f.sync_cost(dirty).max(MIN_SYNC_NS);
            ready = ready.max(t + cost);
            let at = t + cost;
            f.run_guest(at - t);
            t = at;
            // The check clock restarts after a sync, as in the exact engine.
            next_tick = tick.map(|p| t + p);
            pending_trigger = Some(Trigger::AfterSync);
            let obs = observe(
                &f,
                Trigger::AfterSync,
                t,
                round,
                0.0,
                0.0,
                total_pages,
                total_bytes,
                round_start,
                last_round,
                last_bw,
            );
            decision = policy.decide(&obs);
            // A fixed point: this iteration began in exactly the state the previous one did.
            // Jump over as many identical iterations as the policy vouches for.
            // (A cheap scalar check first: the full state is compared only after the send set
            // came out the same twice.)
            let scalars = (f.send_pages, f.send_bytes);
            let repeat = same_scalars(last_scalars, scalars);
            last_scalars = scalars;
            if !repeat {
                snaps = None;
            }
            if skip_ticks && repeat && decision == Decision::Continue && f.phases.len() <= 1 {
                let now = Snapshot::take(&f, t, ready, next_tick, total_pages, total_bytes);
                if let Some(prev) = snaps.as_ref().filter(|p| p.same_state(&now)) {
                    let period = t - prev.t;
                    let n_max = ((max_time - t) / period).floor() as u64;
                    let per_round = rounds.len() - prev.rounds;
                    let cycle = Cycle {
                        period_ns: period.round() as u64,
                        bytes: (total_bytes - prev.total_bytes).round() as u64,
                        pages: (total_pages - prev.total_pages).round() as u64,
                        syncs: per_round as u32,
                        max_repeats: n_max
                            .saturating_sub(2)
                            .min((MAX_ROUNDS - round) as u64 / per_round.max(1) as u64)
                            .saturating_sub(1),
                    };
                    let n = if cycle.max_repeats > 0 && period > 0.0 {
                        policy.repeat_cycles(&obs, &cycle)
                    } else {
                        0
                    };
                    if n > 0 {
                        let nf = n as f64;
                        let template: Vec<RoundRecord> = rounds[prev.rounds..].to_vec();
                        for i in 1..=n {
                            for r in &template {
                                let mut r = r.clone();
                                r.round += (i as u32) * per_round as u32;
                                r.start_ns += (i as f64 * period) as u64;
                                rounds.push(r);
                            }
                        }
                        let shift = nf * period;
                        t += shift;
                        ready += shift;
                        round_start += shift;
                        next_tick = next_tick.map(|x| x + shift);
                        round += (n as u32) * per_round as u32;
                        total_pages += nf * (total_pages - prev.total_pages);
                        total_bytes += nf * (total_bytes - prev.total_bytes);
                        let gw = f.guest_writes - prev.guest_writes;
                        f.guest_writes += nf * gw;
                        round_writes_start += nf * gw;
                        f.guest_ns += nf * (f.guest_ns - prev.guest_ns);
                        if let Some(lr) = &mut last_round {
                            lr.round += (n as u32) * per_round as u32;
                        }
                    }
                    snaps = None;
                } else {
                    let mut now = now;
                    now.rounds = rounds.len();
                    snaps = Some(now);
                }
            }
            continue;
        }
        pending_trigger = None;
        // Advance to the next event: round end, tick or the time cap.
        let start = t.max(ready);
        let end_round = start + f.send_bytes * 8e9 / precopy_bps;
        let mut next = end_round.min(max_time);
        if let Some(nt) = next_tick {
            next = next.min(nt);
        }
        if next < t {
            next = t;
        }
        let sending = (next - start).max(0.0);
        let bytes = (sending * precopy_bps / 8e9).min(f.send_bytes);
        let wa = wire_avg(&f);
        let pages = if end_round <= next {
            f.send_pages
        } else {
            bytes / wa
        };
        f.send(pages, bytes);
        round_pages += pages;
        round_bytes += bytes;
        total_pages += pages;
        total_bytes += bytes;
        f.run_guest(next - t);
        t = next;
        if t >= max_time {
            break (
                Status::Timeout,
                format!("simulated-time cap of {} s reached", sc.limits.max_time_s),
                t,
                false,
            );
        }
        let trigger = if end_round <= t {
            f.send_pages = 0.0;
            f.send_bytes = 0.0;
            Some(Trigger::RoundEnd)
        } else {
            match (next_tick, tick) {
                (Some(nt), Some(p)) if t >= nt => {
                    next_tick = Some(nt + p);
                    Some(Trigger::Tick)
                }
                _ => None,
            }
        };
        if let Some(trig) = trigger {
            pending_trigger = Some(trig);
            let obs = observe(
                &f,
                trig,
                t,
                round,
                round_pages,
                round_bytes,
                total_pages,
                total_bytes,
                round_start,
                last_round,
                last_bw,
            );
            decision = policy.decide(&obs);
            // Over a steady stretch up to the next round end the policy may vouch for a run
            // of ticks that change nothing; jump over them.
            if let (Trigger::Tick, Decision::Continue, Some(p), Some(nt), true) = (
                trig,
                &decision,
                tick,
                next_tick,
                skip_ticks && f.phases.len() <= 1 && ready <= t,
            ) {
                let horizon = (t + f.send_bytes * 8e9 / precopy_bps).min(max_time);
                let max_ticks = ((horizon - t) / p).ceil() as u64;
                let max_ticks = max_ticks.saturating_sub(2);
                if max_ticks > 0 {
                    let bytes_per_tick = p * precopy_bps / 8e9;
                    let wa = wire_avg(&f);
                    let gdt = p * (1.0 - f.throttle) / 1e9;
                    let fr = &f;
                    let dirty_at = move |j: u64| -> u64 {
                        let jg = j as f64 * gdt;
                        let d: f64 = fr
                            .segs
                            .iter()
                            .filter(|sg| sg.phase == 0)
                            .map(|sg| sg.distinct(fr.writes(sg) + sg.rate * jg))
                            .sum();
                        d.min(fr.mem).round() as u64
                    };
                    let fc = SteadyTicks {
                        period_ns: p as u64,
                        max_ticks,
                        pages_per_tick: bytes_per_tick / wa,
                        bytes_per_tick,
                        dirty_at: &dirty_at,
                    };
                    let k = policy.skip_ticks(&obs, &fc);
                    if k > 0 {
                        next_tick = Some(nt + k as f64 * p);
                    }
                }
            }
        }
    };
    let (status, reason, at, moved) = outcome;
    let mut downtime = None;
    let mut total = at;
    let (mut final_pages, mut final_bytes) = (0.0, 0.0);
    if moved {
        let sw = &sc.switchover;
        let (dirty, overlap) = f.dirty_overlap();
        if round_pages > 0.0 {
            rounds.push(RoundRecord {
                round,
                start_ns: round_start as u64,
                duration_ns: (at - round_start) as u64,
                pages_sent: round_pages.round() as u64,
                zero_pages_sent: if round == 0 {
                    zero_sent.round() as u64
                } else {
                    0
                },
                bytes_sent: round_bytes.round() as u64,
                pages_dirtied: dirty.round() as u64,
                bandwidth_bps: round_bytes * 8e9 / (at - round_start).max(1.0),
                est_downtime_ns: 0,
                throttle_pct: (f.throttle * 100.0).round() as u8,
                guest_writes: (f.guest_writes - round_writes_start).round() as u64,
            });
        }
        final_pages = f.send_pages + dirty - overlap;
        final_bytes = f.send_bytes + (dirty - overlap) * f.page_wire;
        let pause_ns = (sw.pause_ms * 1e6).round() as Nanos;
        let sync_ns = f.sync_cost(dirty).round() as Nanos;
        let wait = (ready - (at + pause_ns as f64 + sync_ns as f64)).max(0.0) as Nanos;
        let d = Downtime {
            pause_ns,
            final_sync_ns: sync_ns,
            transfer_ns: wait + transfer_ns(final_bytes.round() as u64, f.link_bps) + f.one_way,
            state_ns: transfer_ns(sw.state.0, f.link_bps),
            resume_ns: (sw.resume_ms * 1e6).round() as Nanos,
        };
        total = at + d.total_ns() as f64;
        downtime = Some(d);
    }
    let pages_sent = (total_pages + final_pages).round() as u64;
    let report = RunReport {
        backend: if analytic {
            "analytic".into()
        } else {
            "fluid".into()
        },
        scenario: sc.name.clone(),
        policy: sc.policy.label(),
        workload: sc.workload.kind_name().into(),
        seed: sc.seed,
        replicate,
        status,
        reason,
        mem_bytes: ck.mem_bytes(),
        link_bps: sc.link.bandwidth.0,
        total_time_ns: total.round() as u64,
        downtime,
        rounds: rounds.len() as u32,
        bytes_sent: (total_bytes + final_bytes).round() as u64,
        pages_sent,
        zero_pages_sent: zero_sent.round() as u64,
        pages_resent: pages_sent.saturating_sub(ck.mem_pages),
        final_pages: final_pages.round() as u64,
        final_bytes: final_bytes.round() as u64,
        guest_writes: f.guest_writes.round() as u64,
        max_throttle_pct: (max_throttle * 100.0).round() as u8,
        kind: "live".into(),
        postcopy: None,
        xbzrle_hits: 0,
    };
    RunResult { report, rounds }
}

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
//! Where the send set lies matters once a policy harvests in mid-pass: the sender goes on from
//! where it stands, so the rest of the old pass (with the first pass's cheap zero pages) goes
//! out before the new dirty pages behind it, and pages dirtied ahead of the sender go out in
//! this iteration anyway. The send set is therefore kept as pieces of constant density along
//! the address space (see [`Sweep`]); pages dirtied since a harvest are taken as spread evenly
//! over their segment (a Zipf rank bucket, a class, or untouched memory).
//! Post-copy and XBZRLE are not modelled here (the scenario check rejects them).

use crate::engine::Nanos;
use crate::metrics::{Downtime, RoundRecord, RunReport, RunResult, Status};
use crate::migration::transfer_ns;
use crate::policy::{Cycle, Decision, Observation, RoundSummary, SteadyTicks, StopReason, Trigger};
use crate::scenario::Checked;
use workloads::spec::{Class, Pattern, Workload};

mod drift;
use drift::{Consult, Drift, IterLog, LoopVars, ObsCtx, ObsSrc, RecSrc, RoundSrc};

const MAX_ROUNDS: u32 = 100_000;
const MIN_SYNC_NS: f64 = 1_000.0;
/// Zipf ranks kept as single pages before buckets grow geometrically. (The first buckets split
/// into runs of whole ranks, see [`rank_parts`], so they count as their ranks do, exactly up to
/// four ranks and within 0.2 % beyond: more single-rank buckets would only add segments for
/// every step to go through.)
const ZIPF_EXACT_RANKS: u64 = 1;
/// Growth ratio of Zipf rank buckets beyond the exact ranks. Each bucket's distinct-page curve
/// is a mixture over [`MIX_PARTS`] parts of it, so wide buckets count as their ranks do (with
/// uniform buckets, a ratio of 1.3 was needed for the same agreement with the exact engine;
/// fewer buckets mean fewer segments and pieces for every step to go through).
const ZIPF_BUCKET_RATIO: f64 = 2.0;
/// Located scans that may overlap one elementary interval (more are spread evenly).
const MAX_LOCATED_MEMBERS: usize = 2;
/// Pieces of the send-set layout allowed beyond one per elementary interval.
const MAX_EXTRA_PIECES: usize = 8;

/// How a segment turns writes into distinct pages.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Curve {
    /// Writes spread uniformly: W(1 − e^(−n/W)).
    Uniform,
    /// A sequential scan: min(W, n).
    Sequential,
    /// The geometric model: every write is a new page.
    Linear,
    /// Writes spread unevenly: parts of the segment holding shares `f` of its pages and `g`
    /// of its writes, each uniform within itself (a Zipf rank bucket, whose ranks are written
    /// at rates up to its ratio to the power of the exponent apart): Σ f·W(1 − e^(−g·n/(f·W))).
    Mix([(f64, f64); MIX_PARTS]),
}

/// Parts of a [`Curve::Mix`].
const MIX_PARTS: usize = 4;

/// `W(1 − e^(−n/W))` for `n > 0`, with the series for small `n/W` and saturation for large.
#[inline]
fn uniform_distinct(n: f64, w: f64) -> f64 {
    let x = n / w;
    if x > 40.0 {
        w // saturated: e^(−40) is below f64's resolution of 1
    } else if x < 1e-3 {
        // series to third order; the next term is below 5e-11 of the value
        n * (1.0 - x * (0.5 - x / 6.0))
    } else {
        w * -(-x).exp_m1()
    }
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
    /// Their bytes on the wire (zero pages of the first pass travel as short markers).
    send_bytes: f64,
    /// Distinct dirty pages as last computed by `dirty_overlap` (reused by `harvest`).
    memo_dirty: std::cell::Cell<f64>,
    /// The last two (writes, distinct pages) computed by [`Seg::distinct`], latest first:
    /// iterations of equal length ask for the same counts again, and a policy that syncs in
    /// mid-pass asks in turn at its checks and right after its syncs.
    memo_distinct: std::cell::Cell<[(f64, f64); 2]>,
    /// A sequential scan whose position is tracked (outside analytic mode): the pages it
    /// dirtied since the last harvest are the runs its head covered, not an even spread.
    located: bool,
}

impl Seg {
    /// Expected distinct pages after `n` writes.
    #[inline]
    fn distinct(&self, n: f64) -> f64 {
        if n <= 0.0 {
            return 0.0;
        }
        match self.curve {
            Curve::Sequential => n.min(self.pages),
            Curve::Linear => n,
            Curve::Uniform | Curve::Mix(_) => {
                let [a, b] = self.memo_distinct.get();
                if a.0 == n {
                    return a.1;
                }
                if b.0 == n {
                    return b.1;
                }
                let d = match &self.curve {
                    Curve::Mix(parts) => (parts.iter())
                        .filter(|&&(f, g)| f > 0.0 && g > 0.0)
                        .map(|&(f, g)| uniform_distinct(g * n, f * self.pages))
                        .sum(),
                    _ => uniform_distinct(n, self.pages),
                };
                self.memo_distinct.set([(n, d), a]);
                d
            }
        }
    }
}

/// The pages a scan over `[a, a + w)` dirtied in the given runs of its write count (the head is
/// at page `a + e mod w` after `e` writes), as disjoint address ranges.
fn scan_dirt(a: f64, w: f64, runs: &[(f64, f64)]) -> Dirt {
    let mut parts: [(f64, f64); 8] = [(0.0, 0.0); 8];
    let mut n = 0;
    for &(e0, e1) in runs {
        if e1 <= e0 {
            continue;
        }
        if e1 - e0 >= w {
            let mut d = Dirt::default();
            d.ranges[0] = (a, a + w);
            return d;
        }
        let start = e0.rem_euclid(w);
        let end = start + (e1 - e0);
        if end <= w {
            parts[n] = (start, end);
            n += 1;
        } else {
            parts[n] = (start, w);
            parts[n + 1] = (0.0, end - w);
            n += 2;
        }
    }
    let parts = &mut parts[..n];
    parts.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut d = Dirt::default();
    let mut m = 0;
    for &(lo, hi) in parts.iter() {
        if m > 0 && a + lo <= d.ranges[m - 1].1 {
            d.ranges[m - 1].1 = d.ranges[m - 1].1.max(a + hi);
        } else {
            d.ranges[m] = (a + lo, a + hi);
            m += 1;
        }
    }
    d
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
        send_bytes: 0.0,
        memo_dirty: std::cell::Cell::new(0.0),
        memo_distinct: std::cell::Cell::new([(0.0, 0.0); 2]),
        located: false,
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
            for (n, share, curve) in zipf_buckets(c.pages, exponent) {
                out.push(seg(
                    c.first_page as f64 + rank0,
                    n,
                    c.rate_pps * share,
                    curve,
                ));
                rank0 += n;
            }
        }
    }
}

/// Zipf rank buckets as (pages, share of the writes, distinct-page curve): the first
/// [`ZIPF_EXACT_RANKS`] ranks singly, then buckets growing by [`ZIPF_BUCKET_RATIO`]. Within a
/// bucket the probability varies by up to that ratio to the power of the exponent; its curve
/// splits it into parts growing by the ratio's [`MIX_PARTS`]-th root, each taken as uniform.
fn zipf_buckets(pages: u64, s: f64) -> Vec<(f64, f64, Curve)> {
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
    // ∫ r^(−s) dr over [a, b] (rank as a continuous variable).
    let integral = |a: f64, b: f64| -> f64 {
        if (s - 1.0).abs() < 1e-12 {
            (b / a).ln()
        } else {
            (b.powf(1.0 - s) - a.powf(1.0 - s)) / (1.0 - s)
        }
    };
    // Exact sums for the first ranks; beyond, the midpoint integral (its error per rank is
    // ~s(s+1)/24 · r^(−s−2), below 1e-6 of the rank's own weight from rank 64 on).
    let weight = |lo: u64, hi: u64| -> f64 {
        if lo < 64 {
            (lo..=hi).map(|r| (r as f64).powf(-s)).sum()
        } else {
            integral(lo as f64 - 0.5, hi as f64 + 0.5)
        }
    };
    let ws: Vec<f64> = bounds.iter().map(|&(l, h)| weight(l, h)).collect();
    let total: f64 = ws.iter().sum();
    bounds
        .iter()
        .zip(ws)
        .map(|(&(l, h), w)| {
            // A bucket of several ranks: split [l − ½, h + ½] geometrically into parts and
            // give each its share of the bucket's pages and writes.
            // (Among the first ranks, where the integral is rough, parts of whole ranks with
            // exact sums.)
            let curve = if h > l {
                let (a, b) = (l as f64 - 0.5, h as f64 + 0.5);
                let at = |j: usize| a * (b / a).powf(j as f64 / MIX_PARTS as f64);
                let mut parts = [(0.0, 0.0); MIX_PARTS];
                // (`w`, the bucket's weight, is what its parts share.)
                if l < 64 {
                    let ends = rank_parts(l, h);
                    for (p, run) in parts.iter_mut().zip(ends.windows(2)) {
                        let (x, y) = (run[0], run[1]);
                        if y > x {
                            let part: f64 = (x..y).map(|r| (r as f64).powf(-s)).sum();
                            *p = ((y - x) as f64 / (h - l + 1) as f64, part / w);
                        }
                    }
                } else {
                    for (j, p) in parts.iter_mut().enumerate() {
                        let (x, y) = (at(j), at(j + 1));
                        *p = ((y - x) / (b - a), integral(x, y) / w);
                    }
                }
                Curve::Mix(parts)
            } else {
                Curve::Uniform
            };
            ((h - l + 1) as f64, w / total, curve)
        })
        .collect()
}

/// Ends of [`MIX_PARTS`] runs of whole ranks splitting `l..=h` (`ends[j]..ends[j + 1]` is run
/// `j`; some may be empty) so that the largest ratio of last to first rank within a run is as
/// small as it can be: one rank per run when there are few enough, and otherwise the fewest
/// runs lumping ranks written at rates far apart.
fn rank_parts(l: u64, h: u64) -> [u64; MIX_PARTS + 1] {
    // The greedy split into runs that span a ratio of at most `rho` each (None: it needs more
    // than MIX_PARTS); the smallest `rho` that fits gives the split.
    let split = |rho: f64| {
        let mut ends = [h + 1; MIX_PARTS + 1];
        ends[0] = l;
        let (mut j, mut first) = (0, l);
        for r in l + 1..=h {
            if r as f64 > rho * first as f64 {
                j += 1;
                if j >= MIX_PARTS {
                    return None;
                }
                ends[j] = r;
                first = r;
            }
        }
        Some(ends)
    };
    if let Some(ends) = split(1.0) {
        return ends;
    }
    // Bisect between a ratio that needs too many runs and one that fits in one (the ratios of
    // two ranks below 128 are at least 1/128² apart, far above the bracket left at the end).
    let (mut lo, mut hi) = (1.0, h as f64 / l as f64);
    for _ in 0..48 {
        let mid = 0.5 * (lo + hi);
        if split(mid).is_some() {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    split(hi).expect("the widest ratio fits one run")
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
            send_bytes: 0.0,
            memo_dirty: std::cell::Cell::new(0.0),
            memo_distinct: std::cell::Cell::new([(0.0, 0.0); 2]),
            located: false,
        });
    }
    for sg in &mut segs {
        sg.located = sg.curve == Curve::Sequential;
        if sg.phase == 0 || sg.phase == usize::MAX {
            sg.send = sg.pages;
        }
    }
    segs
}

/// A stretch of address space inside one elementary interval (between segment boundaries)
/// over which every segment's send set has a constant density.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Piece {
    lo: f64,
    hi: f64,
    /// Elementary interval it lies in (its member segments).
    elem: u32,
    /// Start of its per-member densities in `Sweep::dens` / `Sweep::bdens`.
    off: u32,
}

/// Dirty counts remembered (the latest): the checks of an iteration that repeats the one
/// before ask for the same counts at the same times since the sync (QEMU checks every 50 ms,
/// and skipping checks asks about the ones ahead).
const DIRT_MEMO_KEPT: usize = 8;

/// Remembered [`Fluid::dirt_count`]s: their keys (bits of the guest time since the last sync
/// and of the extra time), totals and per-segment counts (one segment list after another),
/// and which one the next new count replaces once all are taken.
#[derive(Clone, Debug, Default)]
struct DirtMemos {
    keys: [(u64, u64); DIRT_MEMO_KEPT],
    totals: [f64; DIRT_MEMO_KEPT],
    /// Counts kept so far (at most [`DIRT_MEMO_KEPT`]).
    len: usize,
    dirt: Vec<Dirt>,
    next: usize,
}

/// What a harvest adds to one segment's send set.
#[derive(Clone, Copy, Debug, Default)]
struct Dirt {
    /// Distinct pages of the segment dirtied.
    pages: f64,
    /// Share of the segment's pages dirtied, spread evenly over it.
    even: f64,
    /// Disjoint address ranges dirtied in full (a scan's runs since the last harvest); a
    /// range with `hi <= lo` is empty.
    ranges: [(f64, f64); 4],
}

impl Dirt {
    #[inline]
    fn covers(&self, x: f64) -> bool {
        self.ranges.iter().any(|&(lo, hi)| x >= lo && x < hi)
    }
}

/// `x` brought into [0, mem) for 0 ≤ x < 2·mem (a position at most one turn past the start).
#[inline]
fn wrap(x: f64, mem: f64) -> f64 {
    if x >= mem {
        x - mem
    } else {
        x
    }
}

/// The send set's pieces in address order, with each piece's per-member densities (at its
/// `off`) and their totals.
#[derive(Clone, Debug, Default)]
struct Layout {
    pieces: Vec<Piece>,
    /// Per piece and member: send-set pages and wire bytes per page of address space.
    dens: Vec<f64>,
    bdens: Vec<f64>,
    /// Per piece: the sums over its members.
    tot: Vec<f64>,
    btot: Vec<f64>,
}

impl Layout {
    /// Make `self` a copy of `o`, in the buffers it has.
    fn copy_from(&mut self, o: &Layout) {
        let Layout {
            pieces,
            dens,
            bdens,
            tot,
            btot,
        } = o;
        self.pieces.clone_from(pieces);
        self.dens.clone_from(dens);
        self.bdens.clone_from(bdens);
        self.tot.clone_from(tot);
        self.btot.clone_from(btot);
    }

    fn clear(&mut self) {
        self.pieces.clear();
        self.dens.clear();
        self.bdens.clear();
        self.tot.clear();
        self.btot.clear();
    }

    /// Append a rebuilt part `[lo, hi)` of interval `elem` (its member densities already
    /// pushed at `off`, totals `tot`), or widen the previous piece when nothing tells them
    /// apart. (The part comes as plain figures: built in memory by the caller and read back
    /// whole here, it cost a stalled load per piece.)
    #[inline]
    fn push_part(
        &mut self,
        (lo, hi): (f64, f64),
        elem: u32,
        off: u32,
        members: usize,
        tot: (f64, f64),
    ) {
        let part = Piece { lo, hi, elem, off };
        let start = part.off as usize;
        if let Some(last) = self.pieces.last_mut() {
            let prev = last.off as usize;
            let (d, b) = (&self.dens, &self.bdens);
            let eq = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
            if last.elem == part.elem
                && last.hi == part.lo
                && (0..members)
                    .all(|j| eq(d[prev + j], d[start + j]) && eq(b[prev + j], b[start + j]))
            {
                last.hi = part.hi;
                self.dens.truncate(start);
                self.bdens.truncate(start);
                return;
            }
        }
        self.pieces.push(part);
        self.tot.push(tot.0);
        self.btot.push(tot.1);
    }
}

/// The send set laid out along the address space, which the sender covers in address order
/// from where the last iteration stopped. Pieces record where each segment's send pages are:
/// after a mid-pass harvest the rest of the old pass lies ahead of the sender while the new
/// dirty pages spread over the whole segment, and the first pass's zero pages are cheap on the
/// wire while re-dirtied pages are not. So the pages a number of bytes buys, and how many of
/// the pages dirtied since the last harvest are still ahead, depend on where the sweep stands.
/// Segments overlapping each elementary interval, in one list (`members[e]` is interval `e`'s).
#[derive(Clone, Debug, Default)]
struct Members {
    segs: Vec<usize>,
    /// Where each interval's segments start in `segs`, and the end.
    start: Vec<usize>,
}

impl Members {
    /// Elementary intervals.
    fn len(&self) -> usize {
        self.start.len().saturating_sub(1)
    }

    fn iter(&self) -> impl Iterator<Item = &[usize]> {
        (0..self.len()).map(|e| &self[e])
    }
}

impl std::ops::Index<usize> for Members {
    type Output = [usize];
    #[inline]
    fn index(&self, e: usize) -> &[usize] {
        &self.segs[self.start[e]..self.start[e + 1]]
    }
}

#[derive(Clone, Debug, Default)]
struct Sweep {
    /// Segments overlapping each elementary interval.
    members: Members,
    lay: Layout,
    /// Per segment: send-set pages and bytes still ahead of the sweep in this iteration.
    ahead: Vec<f64>,
    ahead_b: Vec<f64>,
    /// Per elementary interval: its bounds, and send-set pages still ahead of the sweep.
    elem_lo: Vec<f64>,
    elem_hi: Vec<f64>,
    ahead_e: Vec<f64>,
    /// Some elementary interval is written by more than one segment (their dirty sets are
    /// then combined as independent events per page, not added).
    overlapping: bool,
    /// Where this iteration's sweep began, and how far it has gone (pages of address space).
    x0: f64,
    s: f64,
    /// Piece holding the sweep position.
    at: usize,
    /// Scratch buffers for rebuilding the pieces at a harvest, and for merging them.
    scratch: Layout,
    pairs: Vec<(f64, usize)>,
    /// Harvests whose pieces came within one of the cap: merges depend on where pieces
    /// meet the ends of the intervals, so a send set turned around its interval could have
    /// been merged differently.
    near_cap: u64,
}

impl Sweep {
    /// Make `self` a copy of `o`, in the buffers it has (its scratch buffers are kept as
    /// they are: every use clears them first).
    fn copy_from(&mut self, o: &Sweep) {
        let Sweep {
            members: Members { segs, start },
            lay,
            ahead,
            ahead_b,
            elem_lo,
            elem_hi,
            ahead_e,
            overlapping,
            x0,
            s,
            at,
            scratch: _,
            pairs: _,
            near_cap,
        } = o;
        self.members.segs.clone_from(segs);
        self.members.start.clone_from(start);
        self.lay.copy_from(lay);
        self.ahead.clone_from(ahead);
        self.ahead_b.clone_from(ahead_b);
        self.elem_lo.clone_from(elem_lo);
        self.elem_hi.clone_from(elem_hi);
        self.ahead_e.clone_from(ahead_e);
        (self.overlapping, self.x0, self.s, self.at) = (*overlapping, *x0, *s, *at);
        self.near_cap = *near_cap;
    }

    /// One piece per elementary interval, each segment's send set spread evenly over it.
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
        let spans: Vec<(usize, usize)> = (segs.iter())
            .map(|sg| {
                let i0 = cuts.partition_point(|&c| c < sg.first.min(mem));
                let i1 = cuts.partition_point(|&c| c < (sg.first + sg.pages).min(mem));
                (i0, i1.min(n))
            })
            .collect();
        // Count each interval's segments, then place them (in segment order).
        let mut start = vec![0usize; n + 1];
        for &(a, b) in &spans {
            for c in &mut start[a + 1..b + 1] {
                *c += 1;
            }
        }
        for e in 0..n {
            start[e + 1] += start[e];
        }
        let mut fill = start.clone();
        let mut list = vec![0usize; start[n]];
        for (k, &(a, b)) in spans.iter().enumerate() {
            for f in &mut fill[a..b] {
                list[*f] = k;
                *f += 1;
            }
        }
        let members = Members { segs: list, start };
        let mut sw = Sweep {
            members,
            lay: Layout::default(),
            ahead: vec![0.0; segs.len()],
            ahead_b: vec![0.0; segs.len()],
            elem_lo: cuts[..n].to_vec(),
            elem_hi: cuts[1..].to_vec(),
            ahead_e: vec![0.0; n],
            overlapping: false,
            x0: 0.0,
            s: 0.0,
            at: 0,
            scratch: Default::default(),
            pairs: Vec::new(),
            near_cap: 0,
        };
        for i in 0..n {
            let off = sw.lay.dens.len() as u32;
            let (mut t, mut bt) = (0.0, 0.0);
            for &k in &sw.members[i] {
                let w = segs[k].pages.max(1.0);
                let (d, b) = (segs[k].send / w, segs[k].send_bytes / w);
                sw.lay.dens.push(d);
                sw.lay.bdens.push(b);
                t += d;
                bt += b;
            }
            sw.lay.pieces.push(Piece {
                lo: cuts[i],
                hi: cuts[i + 1],
                elem: i as u32,
                off,
            });
            sw.lay.tot.push(t);
            sw.lay.btot.push(bt);
            sw.ahead_e[i] = t * (cuts[i + 1] - cuts[i]);
        }
        for (k, sg) in segs.iter().enumerate() {
            sw.ahead[k] = sg.send;
            sw.ahead_b[k] = sg.send_bytes;
        }
        sw.overlapping = sw
            .members
            .iter()
            .any(|m| m.iter().filter(|&&k| segs[k].rate > 0.0).count() > 1);
        sw
    }

    /// Advance the sweep past `bytes` wire bytes of the send set (never beyond one full
    /// turn); returns the pages they carried.
    fn advance(&mut self, mut bytes: f64, mem: f64) -> f64 {
        let n = self.lay.pieces.len();
        let mut pages = 0.0;
        while bytes > 0.0 && self.s < mem {
            let x = wrap(self.x0 + self.s, mem);
            let i = self.at;
            let pc = self.lay.pieces[i];
            let room = (pc.hi - x).max(0.0).min(mem - self.s);
            let b = self.lay.btot[i];
            let need = if b > 0.0 { bytes / b } else { f64::INFINITY };
            let step = need.min(room);
            if b > 0.0 {
                let off = pc.off as usize;
                for (j, &k) in self.members[pc.elem as usize].iter().enumerate() {
                    self.ahead[k] -= step * self.lay.dens[off + j];
                    self.ahead_b[k] -= step * self.lay.bdens[off + j];
                }
                self.ahead_e[pc.elem as usize] -= step * self.lay.tot[i];
            }
            self.s += step;
            if need < room {
                return pages + need * self.lay.tot[i];
            }
            bytes -= room * b;
            pages += room * self.lay.tot[i];
            self.at = (i + 1) % n;
        }
        pages
    }

    /// Send the rest of the send set: the sweep stops at the end of the last piece holding
    /// any (where the sender stands when the iteration ends). Returns the pages it carried.
    fn advance_to_end(&mut self, mem: f64) -> f64 {
        let n = self.lay.pieces.len();
        let (mut s, mut i, mut pages, mut end) = (self.s, self.at, 0.0, self.s);
        let mut end_at = self.at;
        while s < mem {
            let x = wrap(self.x0 + s, mem);
            let room = (self.lay.pieces[i].hi - x).max(0.0).min(mem - s);
            s += room;
            i = (i + 1) % n;
            if self.lay.btot[(i + n - 1) % n] > 0.0 {
                pages += room * self.lay.tot[(i + n - 1) % n];
                end = s;
                end_at = i;
            }
        }
        self.s = end;
        self.at = if end >= mem { self.at } else { end_at };
        self.ahead.iter_mut().for_each(|a| *a = 0.0);
        self.ahead_b.iter_mut().for_each(|a| *a = 0.0);
        self.ahead_e.iter_mut().for_each(|a| *a = 0.0);
        pages
    }

    /// The rest of this iteration's send set from the sweep's position, as cumulative (bytes,
    /// pages) at the end of each stretch holding any, into `out`: the pages a number of bytes
    /// carries, as [`Sweep::advance`] would send them.
    fn send_table(&self, mem: f64, out: &mut Vec<(f64, f64)>) {
        out.clear();
        let n = self.lay.pieces.len();
        let (mut s, mut i) = (self.s, self.at);
        let (mut bytes, mut pages) = (0.0, 0.0);
        while s < mem {
            let x = wrap(self.x0 + s, mem);
            let room = (self.lay.pieces[i].hi - x).max(0.0).min(mem - s);
            let b = self.lay.btot[i];
            if b > 0.0 && room > 0.0 {
                bytes += room * b;
                pages += room * self.lay.tot[i];
                out.push((bytes, pages));
            }
            s += room;
            i = (i + 1) % n;
        }
    }

    /// A harvest at the sweep's position: pages already swept this iteration are gone, those
    /// ahead stay, and each segment's `q[k]` share of its pages (those dirtied since the last
    /// harvest, spread evenly) joins the send set where it is not already in it (everywhere,
    /// `analytic`). The next iteration starts here. Fills `send`/`send_bytes` per segment.
    fn harvest(
        &mut self,
        dirt: &[Dirt],
        analytic: bool,
        page_wire: f64,
        mem: f64,
        segs: &mut [Seg],
    ) {
        let (x0, s) = (self.x0, self.s);
        let full = s >= mem;
        let mut new = std::mem::take(&mut self.scratch);
        new.clear();
        for sg in segs.iter_mut() {
            sg.send = 0.0;
            sg.send_bytes = 0.0;
        }
        let x = wrap(x0 + s, mem);
        for pc in &self.lay.pieces {
            // Cut at the sweep's start and end so each part is wholly swept or wholly ahead,
            // and at the ends of dirtied ranges so each is wholly inside or outside them.
            let mems = &self.members[pc.elem as usize];
            if let [k] = mems[..] {
                if dirt[k].ranges.iter().all(|&(lo, hi)| hi <= lo) {
                    self.harvest_even(
                        pc,
                        k,
                        dirt[k].even,
                        (x0, x),
                        analytic,
                        page_wire,
                        mem,
                        segs,
                        &mut new,
                    );
                    continue;
                }
            }
            let mut cuts = [pc.hi; 2 + 8 * MAX_LOCATED_MEMBERS + 1];
            cuts[0] = pc.lo;
            let mut nc = 1;
            let mut add_cut = |c: f64| {
                if c > pc.lo && c < pc.hi && nc < cuts.len() - 1 {
                    cuts[nc] = c;
                    nc += 1;
                }
            };
            add_cut(x0);
            add_cut(x);
            for &k in mems {
                for &(lo, hi) in &dirt[k].ranges {
                    if hi > lo {
                        add_cut(lo);
                        add_cut(hi);
                    }
                }
            }
            if nc > 2 {
                cuts[1..nc].sort_by(|a, b| a.total_cmp(b));
            }
            let off = pc.off as usize;
            for w in 0..nc {
                let (lo, hi) = (cuts[w], cuts[w + 1]);
                if hi <= lo {
                    continue;
                }
                let mid = 0.5 * (lo + hi);
                let swept = full || wrap(mid - x0 + mem, mem) < s;
                let start = new.dens.len();
                let (mut t, mut bt) = (0.0, 0.0);
                // Each member's chance that a page here was dirtied; a page joins the send set
                // when any member dirtied it and it is not in it already (the new pages are
                // credited to the members in proportion to their chances).
                let share = |k: usize| {
                    let dk = &dirt[k];
                    if dk.covers(mid) {
                        1.0
                    } else {
                        dk.even
                    }
                };
                // (1 − Π(1 − q) accumulated as D += q(1 − D): exact for one member, and no
                // cancellation when the chances are small.)
                let (mut any, mut sum, mut ahead) = (0.0, 0.0, 0.0);
                for (j, &k) in mems.iter().enumerate() {
                    let q = share(k);
                    any += q.min(1.0) * (1.0 - any);
                    sum += q;
                    if !swept {
                        ahead += self.lay.dens[off + j];
                    }
                }
                let fresh = any * (1.0 - ahead.min(1.0));
                for (j, &k) in mems.iter().enumerate() {
                    let (a, ab) = if swept {
                        (0.0, 0.0)
                    } else {
                        (self.lay.dens[off + j], self.lay.bdens[off + j])
                    };
                    let q = share(k);
                    let add = if analytic {
                        q
                    } else if sum > 0.0 {
                        fresh * q / sum
                    } else {
                        0.0
                    };
                    let (d, b) = (a + add, ab + add * page_wire);
                    new.dens.push(d);
                    new.bdens.push(b);
                    t += d;
                    bt += b;
                    segs[k].send += d * (hi - lo);
                    segs[k].send_bytes += b * (hi - lo);
                }
                new.push_part((lo, hi), pc.elem, start as u32, mems.len(), (t, bt));
            }
        }
        if new.pieces.len() + 1 >= self.members.len() + MAX_EXTRA_PIECES {
            self.near_cap += 1;
        }
        let mut pairs = std::mem::take(&mut self.pairs);
        self.cap_pieces(&mut new, page_wire, &mut pairs);
        self.pairs = pairs;
        std::mem::swap(&mut self.lay, &mut new);
        self.scratch = new;
        for (k, sg) in segs.iter().enumerate() {
            self.ahead[k] = sg.send;
            self.ahead_b[k] = sg.send_bytes;
        }
        self.ahead_e.iter_mut().for_each(|a| *a = 0.0);
        for (p, &t) in self.lay.pieces.iter().zip(&self.lay.tot) {
            self.ahead_e[p.elem as usize] += t * (p.hi - p.lo);
        }
        self.x0 = x;
        self.s = 0.0;
        self.at = self
            .lay
            .pieces
            .partition_point(|p| p.lo <= x)
            .saturating_sub(1);
    }

    /// [`Sweep::harvest`] for a piece of one segment that dirtied an even share `q` of its
    /// pages (no located ranges): the same sums, without the general case's bookkeeping.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn harvest_even(
        &self,
        pc: &Piece,
        k: usize,
        q: f64,
        (x0, x): (f64, f64),
        analytic: bool,
        page_wire: f64,
        mem: f64,
        segs: &mut [Seg],
        new: &mut Layout,
    ) {
        let (s, full) = (self.s, self.s >= mem);
        let mut cuts = [pc.lo, pc.hi, pc.hi, pc.hi];
        let mut nc = 1;
        for c in [x0, x] {
            if c > pc.lo && c < pc.hi {
                cuts[nc] = c;
                nc += 1;
            }
        }
        if nc == 3 && cuts[2] < cuts[1] {
            cuts.swap(1, 2);
        }
        let off = pc.off as usize;
        let (d0, b0) = (self.lay.dens[off], self.lay.bdens[off]);
        for w in 0..nc {
            let (lo, hi) = (cuts[w], cuts[w + 1]);
            if hi <= lo {
                continue;
            }
            let swept = full || wrap(0.5 * (lo + hi) - x0 + mem, mem) < s;
            let ahead = if swept { 0.0 } else { d0 };
            let fresh = q.min(1.0) * (1.0 - ahead.min(1.0));
            let (a, ab) = if swept { (0.0, 0.0) } else { (d0, b0) };
            // As the general case computes `fresh · q / Σq` with one member (the same
            // rounding, so both give the same layout to the bit).
            let add = if analytic {
                q
            } else if q > 0.0 {
                fresh * q / q
            } else {
                0.0
            };
            let (d, b) = (a + add, ab + add * page_wire);
            let start = new.dens.len();
            new.dens.push(d);
            new.bdens.push(b);
            segs[k].send += d * (hi - lo);
            segs[k].send_bytes += b * (hi - lo);
            new.push_part((lo, hi), pc.elem, start as u32, 1, (d, b));
        }
    }

    /// Keep at most [`MAX_EXTRA_PIECES`] pieces beyond one per elementary interval by merging
    /// the neighbours whose densities differ least (pages and bytes are conserved). Only
    /// migrations that harvest many times within a pass (a sawtooth of densities behind the
    /// sender) reach the cap.
    fn cap_pieces(&self, new: &mut Layout, page_wire: f64, pair: &mut Vec<(f64, usize)>) {
        let Layout {
            pieces: np,
            dens: nd,
            bdens: nb,
            tot: nt,
            btot: nbt,
        } = new;
        let limit = self.members.len() + MAX_EXTRA_PIECES;
        if np.len() <= limit {
            return;
        }
        // Each pass merges the cheapest pair of neighbours (the first in address order of the
        // cheapest); merged-away pieces get zero length and are dropped at the end, with their
        // densities, so equal layouts compare equal. A pair's cost is kept by its right-hand
        // piece and worked out again only for the two pairs a merge changes.
        let n = np.len();
        let cost_of = |np: &[Piece], nd: &[f64], nb: &[f64], h: usize, i: usize| -> f64 {
            let (a, b) = (np[h], np[i]);
            if a.elem != b.elem || a.hi != b.lo {
                return f64::INFINITY; // not neighbours in one interval: never merged
            }
            let k = self.members[a.elem as usize].len();
            let (oa, ob) = (a.off as usize, b.off as usize);
            let mut diff = 0.0;
            for j in 0..k {
                diff +=
                    (nd[oa + j] - nd[ob + j]).abs() + (nb[oa + j] - nb[ob + j]).abs() / page_wire;
            }
            diff * (a.hi - a.lo).min(b.hi - b.lo)
        };
        // Per piece: the cost of merging it into the live piece before it, and that piece.
        pair.clear();
        // (Most neighbours lie in different intervals: that test is made here, without a call.)
        pair.extend((0..n).map(|i| match i {
            0 => (f64::INFINITY, usize::MAX),
            _ if np[i - 1].elem != np[i].elem => (f64::INFINITY, i - 1),
            _ => (cost_of(np, nd, nb, i - 1, i), i - 1),
        }));
        let mut live = n;
        while live > limit {
            let mut best = (f64::INFINITY, usize::MAX);
            for (i, &(c, _)) in pair.iter().enumerate() {
                if c < best.0 {
                    best = (c, i);
                }
            }
            let i = best.1;
            if i == usize::MAX {
                break;
            }
            let h = pair[i].1;
            let (a, b) = (np[h], np[i]);
            let (la, lb) = (a.hi - a.lo, b.hi - b.lo);
            let k = self.members[a.elem as usize].len();
            let (oa, ob) = (a.off as usize, b.off as usize);
            let (mut t, mut bt) = (0.0, 0.0);
            for j in 0..k {
                nd[oa + j] = (nd[oa + j] * la + nd[ob + j] * lb) / (la + lb);
                nb[oa + j] = (nb[oa + j] * la + nb[ob + j] * lb) / (la + lb);
                t += nd[oa + j];
                bt += nb[oa + j];
            }
            nt[h] = t;
            nbt[h] = bt;
            np[h].hi = b.hi;
            np[i].lo = b.hi; // empty: dropped below
            live -= 1;
            // The pairs around the merged piece.
            pair[i] = (f64::INFINITY, usize::MAX);
            if let Some(nx) = (i + 1..n).find(|&x| np[x].hi > np[x].lo) {
                pair[nx] = (cost_of(np, nd, nb, h, nx), h);
            }
            let ph = pair[h].1;
            if ph != usize::MAX {
                pair[h] = (cost_of(np, nd, nb, ph, h), ph);
            }
        }
        // Compact in place (offsets only grow along the pieces).
        let (mut w, mut wd) = (0, 0);
        for r in 0..np.len() {
            let p = np[r];
            if p.hi <= p.lo {
                continue;
            }
            let k = self.members[p.elem as usize].len();
            let o = p.off as usize;
            // (Pieces before the first merged-away one stay where they are; a piece holds a
            // member or two, not worth a call to copy.)
            if o != wd {
                for j in 0..k {
                    nd[wd + j] = nd[o + j];
                    nb[wd + j] = nb[o + j];
                }
            }
            if w != r || o != wd {
                np[w] = Piece {
                    off: wd as u32,
                    ..p
                };
                nt[w] = nt[r];
                nbt[w] = nbt[r];
            }
            w += 1;
            wd += k;
        }
        np.truncate(w);
        nt.truncate(w);
        nbt.truncate(w);
        nd.truncate(wd);
        nb.truncate(wd);
    }

    /// Send-set pages of segment `k` in `[lo, hi)` that the sweep has not passed yet.
    fn ahead_in(&self, k: usize, lo: f64, hi: f64, mem: f64) -> f64 {
        self.ahead_of(Some(k), lo, hi, mem)
    }

    /// As [`Sweep::ahead_in`], for segment `k` or (`None`) every segment.
    fn ahead_of(&self, k: Option<usize>, lo: f64, hi: f64, mem: f64) -> f64 {
        let (x0, s) = (self.x0, self.s);
        let swept = |a: f64, b: f64| {
            let cover = |c: f64, d: f64| (b.min(d) - a.max(c)).max(0.0);
            if s >= mem {
                b - a
            } else if x0 + s <= mem {
                cover(x0, x0 + s)
            } else {
                cover(x0, mem) + cover(0.0, x0 + s - mem)
            }
        };
        let mut total = 0.0;
        let first = self.lay.pieces.partition_point(|p| p.hi <= lo);
        for (i, p) in self.lay.pieces.iter().enumerate().skip(first) {
            if p.lo >= hi {
                break;
            }
            let density = match k {
                None => self.lay.tot[i],
                Some(k) => {
                    let mems = &self.members[p.elem as usize];
                    let Some(j) = mems.iter().position(|&m| m == k) else {
                        continue;
                    };
                    self.lay.dens[p.off as usize + j]
                }
            };
            let (a, b) = (lo.max(p.lo), hi.min(p.hi));
            if b > a {
                total += density * (b - a - swept(a, b));
            }
        }
        total
    }

    /// Pieces with send-set pages in them.
    fn holders(&self) -> usize {
        self.lay.tot.iter().filter(|&&t| t > 0.0).count()
    }
}

/// The send set of a migration whose writes all fall on one elementary interval, seen from
/// where the sweep starts: pieces with offsets from `x0` around the interval (the rest of
/// memory holds nothing to send and nothing is written there). Two such states that differ
/// only by where the sweep starts evolve alike, shifted around the interval.
#[derive(Clone, Debug)]
struct Ring {
    elem: u32,
    /// Pieces with `lo`/`hi` as offsets from the sweep's start, wrapping at the interval's end.
    rel: Layout,
}

impl Sweep {
    /// The send set as a [`Ring`], when only one elementary interval holds or gets any of it:
    /// the sweep starts in it, no other piece holds send-set pages, and every written segment
    /// covers exactly it.
    fn ring(&self, segs: &[Seg]) -> Option<Ring> {
        let x0 = self.x0;
        let e = self
            .elem_lo
            .partition_point(|&lo| lo <= x0)
            .checked_sub(1)?;
        let (lo, hi) = (self.elem_lo[e], self.elem_hi[e]);
        if x0 >= hi
            || segs.iter().any(|sg| {
                sg.located || (sg.rate > 0.0 && (sg.first != lo || sg.first + sg.pages != hi))
            })
        {
            return None;
        }
        let lay = &self.lay;
        let mine = |i: usize| lay.pieces[i].elem as usize == e;
        if (0..lay.pieces.len()).any(|i| !mine(i) && (lay.tot[i] != 0.0 || lay.btot[i] != 0.0)) {
            return None;
        }
        let k = self.members[e].len();
        let mut rel = Layout::default();
        let put = |rel: &mut Layout, i: usize, a: f64, b: f64| {
            if b <= a {
                return;
            }
            let o = lay.pieces[i].off as usize;
            let off = rel.dens.len() as u32;
            rel.dens.extend_from_slice(&lay.dens[o..o + k]);
            rel.bdens.extend_from_slice(&lay.bdens[o..o + k]);
            rel.push_part((a, b), e as u32, off, k, (lay.tot[i], lay.btot[i]));
        };
        // From the start to the interval's end, then from its beginning back to the start.
        for i in (0..lay.pieces.len()).filter(|&i| mine(i)) {
            let p = lay.pieces[i];
            put(&mut rel, i, p.lo.max(x0) - x0, p.hi - x0);
        }
        for i in (0..lay.pieces.len()).filter(|&i| mine(i)) {
            let p = lay.pieces[i];
            put(
                &mut rel,
                i,
                p.lo - lo + (hi - x0),
                p.hi.min(x0) - lo + (hi - x0),
            );
        }
        Some(Ring {
            elem: e as u32,
            rel,
        })
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
    /// (version, dirty) from [`Fluid::dirty`], with `seg_dirt` as of that version.
    memo_count: std::cell::Cell<(u64, f64)>,
    /// What each segment dirtied since the last harvest, as of the memoised state.
    seg_dirt: std::cell::RefCell<Vec<Dirt>>,
    /// The last [`DIRT_MEMO_KEPT`] counts of [`Fluid::dirt_count`] (guest time since the last
    /// sync, extra time, total, per segment), when the counts depend on nothing else: one
    /// phase, no located scan. A policy that syncs in mid-pass asks in turn at its checks and
    /// right after its syncs, and iterations of equal length ask for the same counts again.
    dirt_memo: Option<std::cell::RefCell<DirtMemos>>,
    /// Per phase: its latest instance and the guest time into it at the last harvest.
    harvest_at: Vec<(i64, f64)>,
    /// Harvests at which some located scan had not covered its whole range since the one
    /// before (while every harvest finds a scan's range all dirty, where its head stands
    /// changes nothing).
    partial_scans: u64,
}

impl Fluid<'_> {
    /// Writes to `sg` since the last sync.
    #[inline]
    fn writes(&self, sg: &Seg) -> f64 {
        self.phase_guest
            .get(sg.phase)
            .map_or(0.0, |g| sg.rate * g / 1e9)
    }

    /// Phase `p`'s latest instance begun by guest time `guest` (−1: none yet) and the guest
    /// time spent in it (ns). Each instance restarts its classes' streams.
    fn phase_instance(&self, p: usize, guest: f64) -> (i64, f64) {
        let n = self.phases.len();
        if n <= 1 {
            return (0, guest);
        }
        let start: f64 = self.phases[..p].iter().map(|&d| d as f64).sum();
        let dur = self.phases[p] as f64;
        if !self.repeat {
            return if guest < start {
                (-1, 0.0)
            } else if p == n - 1 {
                (0, guest - start)
            } else {
                (0, (guest - start).min(dur))
            };
        }
        let period: f64 = self.phases.iter().map(|&d| d as f64).sum();
        let c = (guest / period).floor();
        let r = guest - c * period;
        if r >= start {
            (c as i64, (r - start).min(dur))
        } else if c >= 1.0 {
            (c as i64 - 1, dur)
        } else {
            (-1, 0.0)
        }
    }

    /// What a located scan dirtied since the last harvest: the run its head covered in the
    /// phase instance that was running then, and in the instances begun since (each starts at
    /// the segment's first page).
    fn scan_dirt(&self, sg: &Seg, guest_ns: f64) -> Dirt {
        let p = sg.phase;
        if p >= self.harvest_at.len() {
            return Dirt::default();
        }
        let r = sg.rate / 1e9;
        let (id0, l0) = self.harvest_at[p];
        let (id1, l1) = self.phase_instance(p, guest_ns);
        let dur = self.phases[p] as f64;
        let runs: [(f64, f64); 2] = if id1 < 0 {
            [(0.0, 0.0); 2]
        } else if id1 == id0 {
            [(r * l0, r * l1), (0.0, 0.0)]
        } else {
            let first = if id0 >= 0 {
                (r * l0, r * dur)
            } else {
                (0.0, 0.0)
            };
            let later = if id1 - id0 >= 2 { r * dur } else { r * l1 };
            [first, (0.0, later)]
        };
        scan_dirt(sg.first, sg.pages, &runs)
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
        let dirty = self.dirty();
        let dirt = self.seg_dirt.borrow();
        let overlap = self.overlap_of(&dirt, dirty);
        for (sg, dk) in self.segs.iter().zip(dirt.iter()) {
            sg.memo_dirty.set(dk.pages);
        }
        self.memo.set((self.version, dirty, overlap));
        (dirty, overlap)
    }

    /// Expected pages dirtied after `extra` more ns of guest time in the current phase (without
    /// moving the sweep); fills `dirt` with what each segment dirtied.
    fn dirt_count(&self, extra: f64, dirt: &mut Vec<Dirt>) -> f64 {
        let Some(memo) = &self.dirt_memo else {
            return self.count_dirt(extra, dirt);
        };
        let key = (self.phase_guest[0].to_bits(), extra.to_bits());
        let mut m = memo.borrow_mut();
        let n = self.segs.len();
        if let Some(i) = m.keys[..m.len].iter().position(|&k| k == key) {
            #[cfg(test)]
            DIRT_MEMO.with(|c| c.set((c.get().0, c.get().1 + 1)));
            dirt.clear();
            dirt.extend_from_slice(&m.dirt[i * n..(i + 1) * n]);
            return m.totals[i];
        }
        let total = self.count_dirt(extra, dirt);
        // The oldest gives way.
        let m = &mut *m;
        let at = if m.len < DIRT_MEMO_KEPT {
            if m.len == 0 {
                m.dirt.reserve_exact(DIRT_MEMO_KEPT * n);
            }
            m.len += 1;
            m.dirt.extend_from_slice(dirt);
            m.len - 1
        } else {
            let at = m.next;
            m.next = (at + 1) % DIRT_MEMO_KEPT;
            m.dirt[at * n..(at + 1) * n].copy_from_slice(dirt);
            at
        };
        m.keys[at] = key;
        m.totals[at] = total;
        total
    }

    /// [`Fluid::dirt_count`] worked out.
    fn count_dirt(&self, extra: f64, dirt: &mut Vec<Dirt>) -> f64 {
        let sw = &self.sweep;
        let apart = !sw.overlapping || self.analytic;
        let mut dirty = 0.0;
        dirt.clear();
        dirt.reserve(self.segs.len());
        for sg in &self.segs {
            let n = self.writes(sg) + sg.rate * extra / 1e9;
            let mut dk = Dirt::default();
            if n > 0.0 {
                if sg.located {
                    dk = self.scan_dirt(sg, self.guest_ns + extra);
                    dk.pages = dk.ranges.iter().map(|&(lo, hi)| (hi - lo).max(0.0)).sum();
                } else {
                    dk.pages = sg.distinct(n);
                    dk.even = dk.pages / sg.pages.max(1.0);
                }
                if apart {
                    dirty += dk.pages;
                }
            }
            dirt.push(dk);
        }
        if !apart {
            for e in 0..sw.members.len() {
                dirty += self.elem_dirt(e, dirt, false).0;
            }
        }
        dirty.min(self.mem)
    }

    /// How many of the `dirty` pages in `dirt` are still ahead of the sender in this
    /// iteration's send set (they go out in this iteration anyway).
    fn overlap_of(&self, dirt: &[Dirt], dirty: f64) -> f64 {
        let sw = &self.sweep;
        let mut overlap = 0.0;
        if !sw.overlapping || self.analytic {
            if self.analytic {
                return 0.0;
            }
            for (k, (sg, &ahead)) in self.segs.iter().zip(&sw.ahead).enumerate() {
                let dk = &dirt[k];
                if ahead <= 0.0 || dk.pages <= 0.0 {
                    continue;
                }
                if sg.located {
                    for (lo, hi) in dk.ranges {
                        if hi > lo {
                            overlap += sw.ahead_in(k, lo, hi, self.mem);
                        }
                    }
                } else {
                    overlap += dk.pages * (ahead / sg.pages).min(1.0);
                }
            }
        } else {
            for e in 0..sw.members.len() {
                overlap += self.elem_dirt(e, dirt, true).1;
            }
        }
        overlap.min(dirty)
    }

    /// Elementary interval `e` where segments share pages: a page is dirty unless no segment
    /// over it dirtied it. Returns its dirty pages and (with `overlap`) how many of them are
    /// still ahead of the sender.
    fn elem_dirt(&self, e: usize, dirt: &[Dirt], overlap: bool) -> (f64, f64) {
        let sw = &self.sweep;
        let (lo, hi) = (sw.elem_lo[e], sw.elem_hi[e]);
        let mut even = 0.0;
        let mut runs: [(f64, f64); 4 * MAX_LOCATED_MEMBERS] = [(0.0, 0.0); 4 * MAX_LOCATED_MEMBERS];
        let mut nr = 0;
        for &k in &sw.members[e] {
            let dk = &dirt[k];
            even += dk.even.min(1.0) * (1.0 - even);
            for &(a, b) in &dk.ranges {
                let (a, b) = (a.max(lo), b.min(hi));
                if b > a && nr < runs.len() {
                    runs[nr] = (a, b);
                    nr += 1;
                }
            }
        }
        let runs = &mut runs[..nr];
        runs.sort_by(|x, y| x.0.total_cmp(&y.0));
        let (mut in_runs, mut ahead_runs, mut reach) = (0.0, 0.0, lo);
        for &(a, b) in runs.iter() {
            let a = a.max(reach);
            if b > a {
                in_runs += b - a;
                if overlap {
                    ahead_runs += sw.ahead_of(None, a, b, self.mem);
                }
                reach = b;
            }
        }
        (
            (hi - lo) * even + (1.0 - even) * in_runs,
            even * sw.ahead_e[e].max(0.0) + (1.0 - even) * ahead_runs,
        )
    }

    /// Expected pages dirtied since the last sync (what a policy sees); leaves what each
    /// segment dirtied in `seg_dirt`.
    fn dirty(&self) -> f64 {
        let (v, d) = self.memo_count.get();
        if v == self.version {
            return d;
        }
        let mut dirt = self.seg_dirt.take();
        let d = self.dirt_count(0.0, &mut dirt);
        self.seg_dirt.replace(dirt);
        self.memo_count.set((self.version, d));
        d
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

    /// Send `bytes` of this iteration's send set (all of it with `to_end`); returns the pages
    /// they carried.
    fn send(&mut self, bytes: f64, to_end: bool) -> f64 {
        self.version += 1;
        let pages = if to_end {
            self.sweep.advance_to_end(self.mem);
            self.send_pages
        } else {
            self.sweep.advance(bytes, self.mem).min(self.send_pages)
        };
        self.send_pages = (self.send_pages - pages).max(0.0);
        self.send_bytes = (self.send_bytes - bytes).max(0.0);
        pages
    }

    /// Harvest the dirty log: the dirty pages not already pending join the send set and a new
    /// iteration starts where the sender stands. Returns the pages harvested.
    fn harvest(&mut self, dirty: f64, overlap: f64) -> f64 {
        self.dirty_overlap(); // per-segment counts for this state
        self.version += 1;
        let dirt = self.seg_dirt.take();
        let partial = |(sg, d): (&Seg, &Dirt)| sg.located && sg.rate > 0.0 && d.pages < sg.pages;
        if self.segs.iter().zip(&dirt).any(partial) {
            self.partial_scans += 1;
        }
        self.sweep.harvest(
            &dirt,
            self.analytic,
            self.page_wire,
            self.mem,
            &mut self.segs,
        );
        self.seg_dirt.replace(dirt);
        for p in 0..self.harvest_at.len() {
            self.harvest_at[p] = self.phase_instance(p, self.guest_ns);
        }
        self.phase_guest.iter_mut().for_each(|g| *g = 0.0);
        let new = dirty - overlap;
        self.send_bytes += new * self.page_wire;
        self.send_pages += new;
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
    lay: Layout,
    holders: usize,
    heads: Vec<f64>,
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
    /// The send set seen from the sweep's start, when it lies on one interval.
    ring: Option<Ring>,
    /// [`Sweep::near_cap`] then.
    near_cap: u64,
    /// [`Fluid::partial_scans`] then.
    partial_scans: u64,
}

impl Snapshot {
    /// The state now, in the buffers of `reuse` when given.
    fn take(
        reuse: Option<Snapshot>,
        f: &Fluid,
        t: f64,
        ready: f64,
        next_tick: Option<f64>,
        total_pages: f64,
        total_bytes: f64,
    ) -> Self {
        let (mut lay, mut heads, mut writes) = reuse
            .map(|o| (o.lay, o.heads, o.writes))
            .unwrap_or_default();
        lay.copy_from(&f.sweep.lay);
        heads.clear();
        heads.extend(
            (f.segs.iter())
                .filter(|s| s.located)
                .map(|s| (s.rate / 1e9 * f.harvest_at[s.phase].1).rem_euclid(s.pages.max(1.0))),
        );
        writes.clone_from(&f.phase_guest);
        Snapshot {
            t,
            x0: f.sweep.x0,
            lay,
            holders: f.sweep.holders(),
            heads,
            writes,
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
            ring: f.sweep.ring(&f.segs),
            near_cap: f.sweep.near_cap,
            partial_scans: f.partial_scans,
        }
    }

    /// Where located scans' heads stand need not match between `self` and the earlier `o`:
    /// every harvest since found their ranges all dirty, and the sweep starts where it did or
    /// (one piece over all of memory) moves on by as much each iteration, which a jump then
    /// carries on ([`Snapshot::sweep_start_after`]), so that heads and sweep keep their places
    /// relative to each other once the scans no longer cover their ranges.
    fn heads_free(&self, o: &Snapshot) -> bool {
        self.partial_scans == o.partial_scans
            && (self.x0 == o.x0 || (self.lay.pieces.len() == 1 && o.lay.pieces.len() == 1))
    }

    /// Where the sweep starts `n` more iterations after `self` (the earlier snapshot `o`
    /// one iteration back), for a send set in one piece over all of `mem`.
    fn sweep_start_after(&self, o: &Snapshot, n: f64, mem: f64) -> f64 {
        (self.x0 + n * (self.x0 - o.x0)).rem_euclid(mem)
    }

    /// Same iteration-start state, to a relative 1e-12 (times to a picosecond).
    fn same_state(&self, o: &Snapshot) -> bool {
        let eq = |a: f64, b: f64| (a - b).abs() <= 1e-12 * a.abs().max(b.abs()) + 1e-300;
        let eq_t = |a: f64, b: f64| (a - b).abs() <= 1e-3;
        let same =
            |a: &[f64], b: &[f64]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| eq(*x, *y));
        // Where the sweep starts only matters when it meets different send densities; with
        // one (even) piece holding the send set, any start is the same.
        let same_pieces = self.lay.pieces.len() == o.lay.pieces.len()
            && (self.lay.pieces.iter().zip(&o.lay.pieces))
                .all(|(a, b)| a.elem == b.elem && eq(a.lo, b.lo) && eq(a.hi, b.hi));
        // A send set on one interval may also have turned around it: compare it as seen
        // from where each sweep starts.
        let same_layout = match (&self.ring, &o.ring) {
            (Some(a), Some(b)) if self.near_cap == o.near_cap => {
                let w = a.rel.pieces.last().map_or(0.0, |p| p.hi);
                let eq_x = |x: f64, y: f64| (x - y).abs() <= 1e-12 * w;
                a.elem == b.elem
                    && a.rel.pieces.len() == b.rel.pieces.len()
                    && (a.rel.pieces.iter().zip(&b.rel.pieces))
                        .all(|(p, q)| eq_x(p.lo, q.lo) && eq_x(p.hi, q.hi))
                    && same(&a.rel.dens, &b.rel.dens)
                    && same(&a.rel.bdens, &b.rel.bdens)
            }
            _ => {
                (self.holders <= 1 || eq(self.x0, o.x0))
                    && same_pieces
                    && same(&self.lay.dens, &o.lay.dens)
                    && same(&self.lay.bdens, &o.lay.bdens)
            }
        };
        same_layout
            && eq(self.send_pages, o.send_pages)
            && eq(self.send_bytes, o.send_bytes)
            && self.throttle == o.throttle
            && eq_t(self.ready_in, o.ready_in)
            && eq_t(self.tick_in, o.tick_in)
            && (same(&self.heads, &o.heads) || self.heads_free(o))
            && same(&self.writes, &o.writes)
    }
}

/// When each phase of a workload runs, in guest seconds from the start of the migration.
struct PhaseClock<'a> {
    /// Phase durations (one phase: it runs all the time).
    durs: &'a [Nanos],
    repeat: bool,
}

/// Above this many phase switches within one segment's share of the first pass, the time a
/// phase has run is interpolated over this many equal steps instead (each step then spans
/// many phase periods, over which the phase's share of time is steady).
const MAX_PHASE_STEPS: usize = 512;

impl PhaseClock<'_> {
    /// (start, duration, period) of phase `p` in seconds; the period is infinite without
    /// repetition, and so is the duration of the last phase.
    fn window(&self, p: usize) -> (f64, f64, f64) {
        let n = self.durs.len();
        let start: f64 = self.durs[..p].iter().map(|&d| d as f64 / 1e9).sum();
        if !self.repeat {
            let dur = if p + 1 == n {
                f64::INFINITY
            } else {
                self.durs[p] as f64 / 1e9
            };
            return (start, dur, f64::INFINITY);
        }
        let period: f64 = self.durs.iter().map(|&d| d as f64 / 1e9).sum();
        (start, self.durs[p] as f64 / 1e9, period)
    }

    /// Guest seconds phase `p` has run by guest second `t`.
    fn active(&self, p: usize, t: f64) -> f64 {
        if self.durs.len() <= 1 {
            return t.max(0.0);
        }
        let (start, dur, period) = self.window(p);
        if period.is_finite() && period > 0.0 {
            let full = (t / period).floor();
            full * dur + (t - full * period - start).clamp(0.0, dur)
        } else {
            (t - start).clamp(0.0, dur)
        }
    }

    /// Times strictly inside `(t1, t2)` where phase `p` starts or stops, in order, into `out`;
    /// false (and `out` cleared) when there are more than [`MAX_PHASE_STEPS`].
    fn switches(&self, p: usize, t1: f64, t2: f64, out: &mut Vec<f64>) -> bool {
        out.clear();
        if self.durs.len() <= 1 {
            return true;
        }
        let (start, dur, period) = self.window(p);
        let mut push = |t: f64| {
            if t > t1 && t < t2 {
                out.push(t);
            }
        };
        if !(period.is_finite() && period > 0.0) {
            push(start);
            push(start + dur);
            return true;
        }
        if (t2 - t1) / period > MAX_PHASE_STEPS as f64 / 2.0 {
            return false;
        }
        let mut m = ((t1 - start) / period).floor() - 1.0;
        while start + m * period < t2 {
            push(start + m * period);
            push(start + m * period + dur);
            m += 1.0;
        }
        true
    }
}

/// Pages of `[x1, x2)` inside segment `sg` that the guest writes before the first iteration's
/// sender reaches them, the sender reaching page x at `x · tau` seconds. Closed form per curve
/// over each stretch where the segment's phase runs or rests.
fn written_early_in(
    sg: &Seg,
    x1: f64,
    x2: f64,
    pace: &Pace,
    clock: &PhaseClock,
    buf: &mut Vec<f64>,
) -> f64 {
    if sg.phase == usize::MAX || sg.rate <= 0.0 || sg.pages <= 0.0 || x2 <= x1 {
        return 0.0;
    }
    if sg.curve == Curve::Sequential {
        // Each instance of the phase restarts the scan at the segment's first page, so a page
        // is first written in the first instance (when at all): page a + y at
        // `start + y/rate`, for y below what one instance covers. Lost when that comes before
        // the sender, at `pace.at(a + y)`: y·(1/rate − tau) < pace.at(a) − start.
        let (start, dur) = if clock.durs.len() <= 1 {
            (0.0, f64::INFINITY)
        } else {
            let (s, d, _) = clock.window(sg.phase);
            (s, d)
        };
        let a = sg.first;
        let reach = (sg.rate * dur).min(sg.pages);
        let (y1, y2) = ((x1 - a).max(0.0), (x2 - a).min(reach));
        if y2 <= y1 {
            return 0.0;
        }
        let (g, h) = (1.0 / sg.rate - pace.tau, pace.at(a) - start);
        let (lo, hi) = if g > 0.0 {
            (y1, y2.min(h / g))
        } else if g < 0.0 {
            (y1.max(h / g), y2)
        } else if h > 0.0 {
            (y1, y2)
        } else {
            (y1, y1)
        };
        return (hi - lo).max(0.0);
    }
    // Distinct pages per write for the uniform curve, and the stretch's ends in sender time.
    let c = sg.rate / sg.pages;
    let steps = if clock.switches(sg.phase, pace.at(x1), pace.at(x2), buf) {
        buf.len() + 1
    } else {
        MAX_PHASE_STEPS
    };
    let mut total = 0.0;
    for i in 0..steps {
        // Stretch [u, v) of pages over which the phase's run time grows linearly.
        let (u, v) = if steps == buf.len() + 1 {
            (
                if i == 0 { x1 } else { pace.page_at(buf[i - 1]) },
                if i + 1 == steps {
                    x2
                } else {
                    pace.page_at(buf[i])
                },
            )
        } else {
            let l = (x2 - x1) / steps as f64;
            (
                x1 + i as f64 * l,
                if i + 1 == steps {
                    x2
                } else {
                    x1 + (i + 1) as f64 * l
                },
            )
        };
        let len = v - u;
        if len <= 0.0 {
            continue;
        }
        let g0 = c * clock.active(sg.phase, pace.at(u));
        let g1 = c * clock.active(sg.phase, pace.at(v));
        total += match sg.curve {
            Curve::Uniform => uniform_written(len, g0, g1),
            // ∫ min(1, g) with g linear from g0 to g1
            Curve::Linear => {
                if g1 <= 1.0 {
                    len * (g0 + g1) / 2.0
                } else if g0 >= 1.0 {
                    len
                } else {
                    let s = len * (1.0 - g0) / (g1 - g0);
                    s * (g0 + 1.0) / 2.0 + (len - s)
                }
            }
            // each part as the uniform curve, at its own rate per page
            Curve::Mix(parts) => (parts.iter())
                .filter(|&&(f, g)| f > 0.0 && g > 0.0)
                .map(|&(f, g)| uniform_written(f * len, g0 * g / f, g1 * g / f))
                .sum(),
            Curve::Sequential => unreachable!("handled above"),
        };
    }
    total
}

/// ∫ 1 − e^(−g) over a stretch of `len` pages with g growing linearly from `g0` to `g1` (writes
/// per page of the uniform curve): the pages of the stretch written at least once.
fn uniform_written(len: f64, g0: f64, g1: f64) -> f64 {
    let d = g1 - g0;
    let mean_decay = if d > 1e-9 {
        -(-d).exp_m1() / d
    } else {
        1.0 - d / 2.0
    };
    len * (1.0 - (-g0).exp() * mean_decay)
}

/// Where the first iteration's sender stands in time: it reaches page x at second
/// `t + (x − x0) · tau`.
struct Pace {
    x0: f64,
    t: f64,
    tau: f64,
}

impl Pace {
    fn at(&self, x: f64) -> f64 {
        self.t + (x - self.x0) * self.tau
    }
    fn page_at(&self, t: f64) -> f64 {
        self.x0 + (t - self.t) / self.tau
    }
}

/// The first iteration swept in address order: a zero page the guest has not written yet costs
/// only its marker, so the sender's pace over each stretch of memory depends on how many of its
/// zero pages the guest wrote first, which depends on when the sender gets there (sending at
/// `bps` throughout). Returns, per segment holding first-pass pages (`send > 0`; 0 for the
/// others), the pages written before the sender reached them. Where
/// several segments write the same pages, a page is lost when any of them writes it (taken as
/// independent over the stretch); the loss is shared among the segments holding those pages.
fn first_pass_writes(
    segs: &[Seg],
    z: f64,
    wire: (f64, f64),
    bps: f64,
    clock: &PhaseClock,
) -> Vec<f64> {
    let (full, zero) = (wire.0 * 8.0 / bps, wire.1 * 8.0 / bps); // seconds per page
    let mut cuts: Vec<f64> = Vec::with_capacity(2 * segs.len());
    for sg in segs {
        cuts.push(sg.first);
        cuts.push(sg.first + sg.pages);
    }
    cuts.sort_by(|a, b| a.total_cmp(b));
    cuts.dedup();
    // Segments over each stretch between cuts, as (stretch, segment) pairs in stretch order.
    let mut over: Vec<(usize, usize)> = Vec::with_capacity(segs.len() + cuts.len());
    for (k, sg) in segs.iter().enumerate() {
        let i0 = cuts.partition_point(|&c| c < sg.first);
        let i1 = cuts.partition_point(|&c| c < sg.first + sg.pages);
        over.extend((i0..i1).map(|i| (i, k)));
    }
    over.sort_unstable();
    let mut per_seg = vec![0.0; segs.len()];
    let (mut t, mut buf) = (0.0, Vec::new());
    let mem = cuts.last().copied().unwrap_or(0.0);
    let mut rest = &over[..];
    // Share of a step's pages written before the sender got there: the step before's is the
    // first guess for the next.
    let mut frac: f64 = 0.0;
    for (e, w) in cuts.windows(2).enumerate() {
        let (lo, hi) = (w[0], w[1]);
        let n = rest.iter().take_while(|&&(i, _)| i == e).count();
        let (here, after) = rest.split_at(n);
        rest = after;
        let writers = || {
            here.iter()
                .map(|&(_, k)| &segs[k])
                .filter(|sg| sg.rate > 0.0)
        };
        let holders = here.iter().filter(|&&(_, k)| segs[k].send > 0.0).count();
        let written = writers().next().is_some();
        if !written {
            t += (hi - lo) * (full - (full - zero) * z);
            frac = 0.0;
            continue;
        }
        // The pages of [u, v) written before the sender gets there, with the sender at `u` at
        // second `t`, and its pace: they agree after a few rounds of each other (the share
        // `frac` lost over the stretch before is the first guess).
        let mut step = |u: f64, v: f64, t: f64, mut frac: f64| -> (f64, f64, f64) {
            let len = v - u;
            let mut lost = frac * len;
            let mut tau = full - (full - zero) * z * (1.0 - frac);
            for _ in 0..FIRST_PASS_ROUNDS {
                let pace = Pace { x0: u, t, tau };
                let mut kept = 1.0; // chance a page here is written by none of the segments
                let mut n_writers = 0;
                for sg in writers() {
                    let l = written_early_in(sg, u, v, &pace, clock, &mut buf);
                    kept *= 1.0 - (l / len).min(1.0);
                    lost = l;
                    n_writers += 1;
                }
                if n_writers > 1 {
                    lost = len * (1.0 - kept);
                }
                let was = tau;
                frac = (lost / len).min(1.0);
                tau = full - (full - zero) * z * (1.0 - frac);
                if (tau - was).abs() <= 1e-9 * tau {
                    break;
                }
            }
            (lost, tau, frac)
        };
        // One step when little is lost (the pace hardly varies); otherwise steps of at most
        // 1/FIRST_PASS_STEPS of memory, over each of which the pace is taken as even.
        let whole = step(lo, hi, t, frac);
        let steps = if whole.2 <= FIRST_PASS_EVEN {
            1
        } else {
            ((hi - lo) / mem * FIRST_PASS_STEPS as f64).ceil().max(1.0) as usize
        };
        let mut lost_here = 0.0;
        if steps == 1 {
            (lost_here, frac) = (whole.0, whole.2);
            t += (hi - lo) * whole.1;
        } else {
            for i in 0..steps {
                let u = lo + (hi - lo) * i as f64 / steps as f64;
                let v = if i + 1 == steps {
                    hi
                } else {
                    lo + (hi - lo) * (i + 1) as f64 / steps as f64
                };
                let (lost, tau, f) = step(u, v, t, frac);
                lost_here += lost;
                frac = f;
                t += (v - u) * tau;
            }
        }
        for &(_, k) in here.iter().filter(|&&(_, k)| segs[k].send > 0.0) {
            per_seg[k] += lost_here / holders as f64;
        }
    }
    per_seg
}

/// Rounds of pace against loss per step in [`first_pass_writes`], at most (they stop once the
/// pace moves by less than a billionth).
const FIRST_PASS_ROUNDS: usize = 4;
/// Steps per memory size in [`first_pass_writes`], for stretches that lose more than
/// [`FIRST_PASS_EVEN`] of their pages.
const FIRST_PASS_STEPS: usize = 32;
const FIRST_PASS_EVEN: f64 = 0.01;

#[cfg(test)]
thread_local! {
    /// Iterations this thread's runs jumped over along a drift (tests check it is used).
    pub(crate) static DRIFTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Everything a run's set-up depends on: the workload's classes per phase, the VM and the link.
#[derive(Clone, Debug, PartialEq)]
struct SetupKey {
    class_sets: Vec<Vec<Class>>,
    mem_pages: u64,
    analytic: bool,
    /// Zero-page fraction, wire bytes of a page and of a zero page, pre-copy bandwidth.
    bits: [u64; 4],
    phases: Vec<Nanos>,
    repeat: bool,
}

/// A run's starting point: the segments with their first-pass bytes, the send set laid out,
/// and the zero pages the first pass sends as markers.
#[derive(Debug)]
struct Setup {
    segs: Vec<Seg>,
    sweep: Sweep,
    send_bytes: f64,
    zero_sent: f64,
}

/// Set-ups kept per thread. Sweeps vary the policy and its settings far more often than the
/// workload, the VM and the link, and a Zipf workload's set-up (its rank buckets and the first
/// pass over them) costs more than most whole runs; the set-up is a function of [`SetupKey`]
/// alone, so a kept one is the one that would be computed.
const SETUPS_KEPT: usize = 8;

thread_local! {
    static SETUPS: std::cell::RefCell<Vec<(SetupKey, Setup)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
thread_local! {
    /// Tests: (runs on this thread count every dirty set afresh, counts reused so far).
    pub(crate) static DIRT_MEMO: std::cell::Cell<(bool, u64)> =
        const { std::cell::Cell::new((false, 0)) };
}

thread_local! {
    /// The segment list and layout of this thread's last run, whose buffers the next one fills.
    static SPARE: std::cell::Cell<Option<(Vec<Seg>, Sweep)>> =
        const { std::cell::Cell::new(None) };
}

/// Forget the set-ups this thread kept (to time runs that compute their own).
pub fn clear_setups() {
    SETUPS.with(|c| c.borrow_mut().clear());
}

/// [`clear_setups`], and how many times a kept set-up was used since the last call.
#[cfg(test)]
pub(crate) fn forget_setups() -> u64 {
    clear_setups();
    SETUP_HITS.with(|h| h.replace(0))
}

#[cfg(test)]
thread_local! {
    static SETUP_HITS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Setup {
    /// The set-up for `key`, a kept one (the most recently used are kept) or else a new one,
    /// copied into `segs` and `sweep` (in the buffers they have); returns the send set's
    /// bytes and the zero pages sent.
    fn get_into(key: SetupKey, segs: &mut Vec<Seg>, sweep: &mut Sweep) -> (f64, f64) {
        SETUPS.with(|c| {
            let mut c = c.borrow_mut();
            let e = match c.iter().position(|(k, _)| *k == key) {
                Some(i) => {
                    #[cfg(test)]
                    SETUP_HITS.with(|h| h.set(h.get() + 1));
                    c.remove(i)
                }
                None => {
                    let set = Setup::new(&key);
                    if c.len() >= SETUPS_KEPT {
                        c.remove(0);
                    }
                    (key, set)
                }
            };
            let set = &e.1;
            segs.clone_from(&set.segs);
            sweep.copy_from(&set.sweep);
            let out = (set.send_bytes, set.zero_sent);
            c.push(e);
            out
        })
    }

    fn new(key: &SetupKey) -> Setup {
        let mut segs = segments(&key.class_sets, key.mem_pages, key.analytic);
        let [z, page_wire, zero_wire, bps] = key.bits.map(f64::from_bits);
        // Round 0: zero pages travel as markers, less those the guest writes before they are
        // sent.
        let clock = PhaseClock {
            durs: if key.phases.len() > 1 {
                &key.phases
            } else {
                &[]
            },
            repeat: key.repeat,
        };
        let early = first_pass_writes(&segs, z, (page_wire, zero_wire), bps, &clock);
        // Each segment's first-pass bytes: its zero pages less those written early.
        let mut zero_sent = 0.0;
        for (sg, early) in segs.iter_mut().zip(early).filter(|(sg, _)| sg.send > 0.0) {
            let zero = (z * (sg.pages - early)).clamp(0.0, sg.pages);
            sg.send_bytes = (sg.pages - zero) * page_wire + zero * zero_wire;
            zero_sent += zero;
        }
        let send_bytes = segs.iter().map(|sg| sg.send_bytes).sum();
        // A cut buffer per piece holds the range ends of a few located scans; beyond that,
        // scans sharing addresses are spread evenly.
        let sweep = Sweep::new(&segs, key.mem_pages as f64);
        for m in sweep.members.iter() {
            let mut located = 0;
            for &k in m {
                if segs[k].located {
                    located += 1;
                    segs[k].located = located <= MAX_LOCATED_MEMBERS;
                }
            }
        }
        Setup {
            segs,
            sweep,
            send_bytes,
            zero_sent,
        }
    }
}

/// Simulate one live migration in fluid (or, with `analytic`, geometric) mode.
pub fn simulate_fluid(ck: &Checked, replicate: u32, analytic: bool) -> RunResult {
    run(ck, replicate, analytic, true, true)
}

/// As [`simulate_fluid`], without building the round records (the report still counts them).
pub fn simulate_fluid_report(ck: &Checked, replicate: u32, analytic: bool) -> RunReport {
    run(ck, replicate, analytic, true, false).report
}

/// A run's round records as they close, or only their count when nobody will read them.
struct Rounds {
    keep: bool,
    n: usize,
    recs: Vec<RoundRecord>,
}

impl Rounds {
    fn len(&self) -> usize {
        self.n
    }

    fn push(&mut self, rec: &RecSrc, zero_pages_sent: u64) {
        self.n += 1;
        if self.keep {
            self.recs.push(rec.record(zero_pages_sent));
        }
    }

    /// Repeat the records from `from` on `n` more times, `period` ns apart.
    fn repeat_tail(&mut self, from: usize, n: u64, period: f64) {
        let per = self.n - from;
        self.n += n as usize * per;
        if !self.keep {
            return;
        }
        let template: Vec<RoundRecord> = self.recs[from..].to_vec();
        self.recs.reserve(n as usize * template.len());
        for i in 1..=n {
            for r in &template {
                let mut r = r.clone();
                r.round += (i as u32) * per as u32;
                r.start_ns += (i as f64 * period) as u64;
                self.recs.push(r);
            }
        }
    }

    /// The records of `n` iterations along `drift`.
    fn drift(&mut self, drift: &Drift, n: u64) {
        self.n += n as usize * drift.records_per_iteration();
        if self.keep {
            drift.records(n, &mut self.recs);
        }
    }
}

/// As [`simulate_fluid`]; `skip_ticks = false` consults the policy at every tick (tests check
/// that skipping changes nothing).
pub(crate) fn run(
    ck: &Checked,
    replicate: u32,
    analytic: bool,
    skip_ticks: bool,
    keep_rounds: bool,
) -> RunResult {
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
    let mut f = Fluid {
        ck,
        segs: Vec::new(),
        sweep: Sweep::default(), // laid out once the first pass's bytes are known
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
        memo_count: std::cell::Cell::new((0, 0.0)),
        seg_dirt: Default::default(),
        dirt_memo: None,
        harvest_at: Vec::new(),
        partial_scans: 0,
    };
    f.harvest_at = (0..f.phase_rate.len())
        .map(|p| f.phase_instance(p, 0.0))
        .collect();
    let key = SetupKey {
        class_sets,
        mem_pages: ck.mem_pages,
        analytic,
        bits: [
            sc.vm.zero_page_fraction.to_bits(),
            page_wire.to_bits(),
            f.zero_wire.to_bits(),
            precopy_bps.to_bits(),
        ],
        phases: f.phases.clone(),
        repeat: f.repeat,
    };
    // The last run's segment list and layout lend their buffers.
    (f.segs, f.sweep) = SPARE.with(|s| s.take()).unwrap_or_default();
    let (send_bytes, mut zero_sent) = Setup::get_into(key, &mut f.segs, &mut f.sweep);
    f.send_bytes = send_bytes;
    // The sender's loops walk the pieces until they have covered memory: a layout of another
    // size would never let them end.
    let laid = f.sweep.lay.pieces.last().map_or(0.0, |p| p.hi);
    assert!(
        laid == mem && f.sweep.lay.pieces.first().is_some_and(|p| p.lo == 0.0),
        "fluid set-up laid out over {laid} pages for a VM of {mem} pages"
    );
    if f.phase_guest.len() == 1 && !f.segs.iter().any(|sg| sg.located) {
        #[cfg(test)]
        let off = DIRT_MEMO.with(|m| m.get().0);
        #[cfg(not(test))]
        let off = false;
        if !off {
            f.dirt_memo = Some(Default::default());
        }
    }

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
    let mut last_round: Option<RoundSrc> = None;
    let mut last_bw = precopy_bps;
    let mut rounds = Rounds {
        keep: keep_rounds,
        n: 0,
        recs: Vec::with_capacity(if keep_rounds { 16 } else { 0 }),
    };
    let mut max_throttle = 0.0f64;
    let ctx = ObsCtx {
        mem_bytes: ck.mem_bytes(),
        page_size: ck.page_size,
        page_wire: f.page_wire,
        vcpus: sc.vm.vcpus,
    };
    let observe = |f: &Fluid,
                   t: f64,
                   round: u32,
                   rp: f64,
                   rb: f64,
                   tp: f64,
                   tb: f64,
                   rs: f64,
                   lr: Option<RoundSrc>,
                   lbw| ObsSrc {
        t,
        round: round as f64,
        round_pages: rp,
        round_bytes: rb,
        total_pages: tp,
        total_bytes: tb,
        round_start: rs,
        remaining: f.send_pages,
        dirty: f.dirty(),
        throttle: f.throttle,
        last_round: lr,
        last_bw: lbw,
    };
    let consult = |f: &Fluid, trigger, src: ObsSrc, decision: &Decision| Consult {
        trigger,
        decision: decision.clone(),
        src,
        x: wrap(f.sweep.x0 + f.sweep.s, f.mem),
        left: f.send_bytes,
    };

    let mut decision = policy.decide(
        &observe(&f, t, 0, 0.0, 0.0, 0.0, 0.0, round_start, None, last_bw)
            .observation(Trigger::Start, &ctx),
    );
    // Iterations that move the state by the same step are jumped over.
    let mut log = IterLog::default();
    let mut drift = Drift::default();
    let mut pending_trigger: Option<Trigger> = None;
    let mut snaps: Option<Snapshot> = None;
    // (A snapshot let go, whose buffers the next one fills.)
    let mut spare: Option<Snapshot> = None;
    let mut last_scalars = (f64::NAN, f64::NAN);
    // Buffers for skipping ticks: the send set's byte/page table, where its pages per tick
    // change, and per-segment dirt.
    let mut tick_bufs = (Vec::new(), Vec::new(), std::cell::RefCell::new(Vec::new()));
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
            let closed = RoundSrc {
                round: round as f64,
                dur,
                pages: round_pages,
                bytes: round_bytes,
                dirtied: dirty,
            };
            let rec = RecSrc {
                closed,
                start: round_start,
                bw,
                est_bw: if bw > 0.0 { bw } else { precopy_bps },
                union_bytes: union * f.page_wire,
                throttle: f.throttle,
                guest_writes: f.guest_writes - round_writes_start,
            };
            rounds.push(
                &rec,
                if round == 0 {
                    zero_sent.round() as u64
                } else {
                    0
                },
            );
            if log.recording {
                log.recs.push(rec);
            }
            round_writes_start = f.guest_writes;
            last_round = Some(closed);
            if dur > 0.0 && round_bytes > 0.0 {
                last_bw = bw;
            }
            f.harvest(dirty, overlap);
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
            let src = observe(
                &f,
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
            let obs = src.observation(Trigger::AfterSync, &ctx);
            decision = policy.decide(&obs);
            if log.recording {
                log.consults
                    .push(consult(&f, Trigger::AfterSync, src, &decision));
            }
            // A fixed point: this iteration began in exactly the state the previous one did.
            // Jump over as many identical iterations as the policy vouches for.
            // (A cheap scalar check first: the full state is compared only after the send set
            // came out the same twice.)
            let scalars = (f.send_pages, f.send_bytes);
            let repeat = same_scalars(last_scalars, scalars);
            last_scalars = scalars;
            if !repeat && snaps.is_some() {
                spare = snaps.take();
            }
            if skip_ticks && repeat && decision == Decision::Continue && f.phases.len() <= 1 {
                let now = Snapshot::take(
                    spare.take(),
                    &f,
                    t,
                    ready,
                    next_tick,
                    total_pages,
                    total_bytes,
                );
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
                        rounds.repeat_tail(prev.rounds, n, period);
                        if f.sweep.lay.pieces.len() == 1 && now.x0 != prev.x0 {
                            // One piece over all of memory: only where the sweep starts
                            // relative to the scans' heads tells iterations apart.
                            f.sweep.x0 = now.sweep_start_after(prev, nf, f.mem);
                            f.version += 1;
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
                        let gns = nf * (f.guest_ns - prev.guest_ns);
                        f.guest_ns += gns;
                        // The last harvest, which scans count their runs from, moved as much.
                        for h in &mut f.harvest_at {
                            h.1 += gns;
                        }
                        if let Some(lr) = &mut last_round {
                            lr.round += (n * per_round as u64) as f64;
                        }
                        log.irregular = true;
                    }
                    spare = snaps.take();
                } else {
                    let mut now = now;
                    now.rounds = rounds.len();
                    spare = snaps.replace(now);
                }
            }
            if skip_ticks && decision == Decision::Continue && !log.irregular {
                let mut lv = LoopVars {
                    t: &mut t,
                    ready: &mut ready,
                    next_tick: &mut next_tick,
                    round: &mut round,
                    round_start: &mut round_start,
                    total_pages: &mut total_pages,
                    total_bytes: &mut total_bytes,
                    round_writes_start: &mut round_writes_start,
                    last_bw: &mut last_bw,
                };
                let plan = drift.plan(
                    &mut f,
                    &mut lv,
                    &log,
                    policy.as_ref(),
                    &ctx,
                    max_time,
                    MAX_ROUNDS,
                );
                if let Some(jump) = plan {
                    #[cfg(test)]
                    DRIFTED.with(|d| d.set(d.get() + jump.n));
                    rounds.drift(&drift, jump.n);
                    drift.land(&mut f, &mut lv, jump.n);
                    policy = jump.policy;
                    last_round = jump.last_round;
                    if snaps.is_some() {
                        spare = snaps.take();
                    }
                    last_scalars = (f64::NAN, f64::NAN);
                }
            } else {
                drift.clear();
            }
            log.clear(drift.wants_log());
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
        let pages = f.send(bytes, end_round <= next);
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
            let src = observe(
                &f,
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
            let obs = src.observation(trig, &ctx);
            decision = policy.decide(&obs);
            if log.recording {
                log.consults.push(consult(&f, trig, src, &decision));
            }
            // Up to the next round end the policy may vouch for a run of ticks that change
            // nothing; jump over them.
            if let (Trigger::Tick, Decision::Continue, Some(p), Some(nt), true) = (
                trig,
                &decision,
                tick,
                next_tick,
                skip_ticks && f.phases.len() <= 1 && ready <= t,
            ) {
                // Up to the round end (the pages per tick follow the send set's layout).
                let horizon = (t + f.send_bytes * 8e9 / precopy_bps).min(max_time);
                let max_ticks = ((horizon - t) / p).ceil() as u64;
                let max_ticks = max_ticks.saturating_sub(2);
                let table = &mut tick_bufs.0;
                table.clear();
                f.sweep.send_table(f.mem, table);
                let table = &*table;
                if max_ticks > 0 && !table.is_empty() {
                    let bytes_per_tick = p * precopy_bps / 8e9;
                    let gdt = p * (1.0 - f.throttle) / 1e9;
                    let fr = &f;
                    let scratch = &tick_bufs.2;
                    let dirty_at = move |j: u64| -> u64 {
                        let extra = j as f64 * gdt * 1e9;
                        let d = fr.dirt_count(extra, &mut scratch.borrow_mut());
                        d.round() as u64
                    };
                    let sent_at = |j: u64| -> f64 {
                        let b = j as f64 * bytes_per_tick;
                        let i = table.partition_point(|&(cb, _)| cb < b);
                        let Some(&(cb, cp)) = table.get(i) else {
                            return table.last().map_or(0.0, |l| l.1);
                        };
                        let (b0, p0) = if i == 0 { (0.0, 0.0) } else { table[i - 1] };
                        p0 + (b - b0) * (cp - p0) / (cb - b0)
                    };
                    let kinks = &mut tick_bufs.1;
                    kinks.clear();
                    kinks.extend(table.iter().map(|&(cb, _)| cb / bytes_per_tick));
                    let fc = SteadyTicks {
                        period_ns: p as u64,
                        max_ticks,
                        bytes_per_tick,
                        sent_at: &sent_at,
                        dirty_at: &dirty_at,
                        kinks,
                    };
                    let k = policy.skip_ticks(&obs, &fc);
                    if k > 0 {
                        next_tick = Some(nt + k as f64 * p);
                        log.skipped = true;
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
            // The iteration cut short by the stop (no estimate: the stop is the blackout).
            let bw = round_bytes * 8e9 / (at - round_start).max(1.0);
            let rec = RecSrc {
                closed: RoundSrc {
                    round: round as f64,
                    dur: at - round_start,
                    pages: round_pages,
                    bytes: round_bytes,
                    dirtied: dirty,
                },
                start: round_start,
                bw,
                est_bw: bw,
                union_bytes: 0.0,
                throttle: f.throttle,
                guest_writes: f.guest_writes - round_writes_start,
            };
            rounds.push(
                &rec,
                if round == 0 {
                    zero_sent.round() as u64
                } else {
                    0
                },
            );
        }
        final_pages = f.send_pages + dirty - overlap;
        final_bytes = f.send_bytes + (dirty - overlap) * f.page_wire;
        if round == 0 && f.page_wire > f.zero_wire {
            // Stopped in the first pass: the zero pages still ahead are those the guest has not
            // written yet, not those it would have written before the pass reached them (all
            // of them when the VM pauses at once, as stop-and-copy does).
            let (pw, zw) = (f.page_wire, f.zero_wire);
            let z = sc.vm.zero_page_fraction;
            let mut more_zero = 0.0;
            for (k, sg) in f.segs.iter().enumerate() {
                let (ahead, ahead_b) = (f.sweep.ahead[k], f.sweep.ahead_b[k]);
                if ahead <= 0.0 {
                    continue;
                }
                let planned = ((ahead * pw - ahead_b) / (pw - zw)).max(0.0);
                let written = (sg.memo_dirty.get() / sg.pages.max(1.0)).min(1.0);
                more_zero += z * ahead * (1.0 - written) - planned;
            }
            final_bytes = (final_bytes - more_zero * (pw - zw)).max(0.0);
            zero_sent += more_zero;
        }
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
    SPARE.with(|s| s.set(Some((f.segs, f.sweep))));
    RunResult {
        report,
        rounds: rounds.recs,
    }
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    fn seg(first: f64, pages: f64, send: f64, wire: f64) -> Seg {
        Seg {
            first,
            pages,
            rate: 1.0,
            phase: 0,
            curve: Curve::Uniform,
            send,
            send_bytes: send * wire,
            memo_dirty: std::cell::Cell::new(0.0),
            memo_distinct: std::cell::Cell::new([(0.0, 0.0); 2]),
            located: false,
        }
    }

    #[test]
    fn a_rank_bucket_reaches_as_many_distinct_pages_as_its_ranks_do() {
        // A bucket's distinct pages against the sum over its ranks of 1 − e^(−n·p_r): its
        // mixture curve stays within 0.2 % at every write count (0.13 % at worst, with the
        // steepest exponent), while one uniform curve over the bucket (ranks written at rates
        // up to the bucket's ratio apart) is off by more than 0.5 % somewhere.
        let pages = 1u64 << 18;
        for s in [0.7, 0.99, 1.3] {
            let total: f64 = (1..=pages).map(|r| (r as f64).powf(-s)).sum();
            let (mut first, mut worst_uniform, mut checked) = (1u64, 0.0f64, 0);
            for (n, share, curve) in zipf_buckets(pages, s) {
                let last = first + n as u64 - 1;
                if last > first {
                    let mut sg = seg(0.0, n, 0.0, 1.0);
                    sg.curve = curve;
                    for per_page in [0.05, 0.3, 1.0, 3.0, 10.0, 40.0] {
                        let writes = per_page * n;
                        let ranks: f64 = (first..=last)
                            .map(|r| -(-(writes * (r as f64).powf(-s) / total / share)).exp_m1())
                            .sum();
                        let mix = sg.distinct(writes);
                        assert!(
                            (mix - ranks).abs() <= 2e-3 * ranks,
                            "s = {s}, ranks {first}..={last}, {writes} writes: {mix} against {ranks}"
                        );
                        let uniform = uniform_distinct(writes, n);
                        worst_uniform = worst_uniform.max((uniform - ranks).abs() / ranks);
                        checked += 1;
                    }
                }
                first = last + 1;
            }
            assert_eq!(first, pages + 1, "the buckets cover every rank once");
            assert!(checked > 50, "only {checked} bucket counts checked");
            assert!(
                worst_uniform > 5e-3,
                "s = {s}: one uniform curve per bucket is already within {worst_uniform}"
            );
        }
    }

    #[test]
    fn the_first_buckets_split_into_runs_of_ranks_as_evenly_as_any_split_can() {
        // Widest last ÷ first rank within one run of a split (empty runs span nothing).
        let widest = |e: &[u64]| {
            (e.windows(2))
                .filter(|w| w[1] > w[0])
                .map(|w| (w[1] - 1) as f64 / w[0] as f64)
                .fold(1.0, f64::max)
        };
        for (l, h) in [
            (2, 4),
            (5, 10),
            (11, 22),
            (23, 46),
            (47, 94),
            (3, 3),
            (40, 41),
        ] {
            let ends = rank_parts(l, h);
            assert_eq!(
                (ends[0], ends[MIX_PARTS]),
                (l, h + 1),
                "{l}..={h}: {ends:?}"
            );
            assert!(ends.windows(2).all(|w| w[1] >= w[0]), "{l}..={h}: {ends:?}");
            if h - l < MIX_PARTS as u64 {
                assert_eq!(widest(&ends), 1.0, "{l}..={h}: one rank per run, {ends:?}");
            }
            // Against every split into four runs (three inner ends).
            assert_eq!(MIX_PARTS, 4, "the search below tries splits into four runs");
            let mut best = f64::INFINITY;
            for a in l..=h + 1 {
                for b in a..=h + 1 {
                    for c in b..=h + 1 {
                        best = best.min(widest(&[l, a, b, c, h + 1]));
                    }
                }
            }
            assert_eq!(widest(&ends), best, "{l}..={h}: {ends:?}");
        }
    }

    /// Send pages of segment `k` in `[lo, hi)` not yet swept, from the pieces.
    fn ahead_ref(sw: &Sweep, k: usize, lo: f64, hi: f64, mem: f64) -> f64 {
        let mut total = 0.0;
        for p in &sw.lay.pieces {
            let (a, b) = (lo.max(p.lo), hi.min(p.hi));
            let Some(j) = sw.members[p.elem as usize].iter().position(|&m| m == k) else {
                continue;
            };
            // Cut the part where the sweep began and where it stands; classify each piece of
            // it by its midpoint.
            if b <= a {
                continue;
            }
            let x = (sw.x0 + sw.s).rem_euclid(mem);
            let mut cuts = vec![a, b];
            cuts.extend([sw.x0, x].into_iter().filter(|&c| c > a && c < b));
            cuts.sort_by(|p, q| p.total_cmp(q));
            for w in cuts.windows(2) {
                let (u, v) = (w[0], w[1]);
                if v <= u {
                    continue;
                }
                let off = ((u + v) / 2.0 - sw.x0).rem_euclid(mem);
                if sw.s < mem && off >= sw.s {
                    total += sw.lay.dens[p.off as usize + j] * (v - u);
                }
            }
        }
        total
    }

    /// Per segment: send pages and bytes laid out in the pieces, and those the sweep has not
    /// passed yet, recomputed from scratch.
    fn layout(sw: &Sweep, nseg: usize, mem: f64) -> Vec<(f64, f64, f64, f64)> {
        let mut out = vec![(0.0, 0.0, 0.0, 0.0); nseg];
        // Swept part of [lo, hi): overlap with the circular range [x0, x0 + s).
        let swept = |lo: f64, hi: f64| {
            let cover = |a: f64, b: f64| (hi.min(b) - lo.max(a)).max(0.0);
            let end = sw.x0 + sw.s;
            if end <= mem {
                cover(sw.x0, end)
            } else {
                cover(sw.x0, mem) + cover(0.0, end - mem)
            }
        };
        for p in &sw.lay.pieces {
            let len = p.hi - p.lo;
            let left = len - swept(p.lo, p.hi);
            for (j, &k) in sw.members[p.elem as usize].iter().enumerate() {
                let (d, b) = (
                    sw.lay.dens[p.off as usize + j],
                    sw.lay.bdens[p.off as usize + j],
                );
                out[k].0 += d * len;
                out[k].1 += b * len;
                out[k].2 += d * left;
                out[k].3 += b * left;
            }
        }
        out
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1e-6
    }

    #[test]
    fn pieces_conserve_the_send_set_through_harvests_and_merges() {
        let mem = 10_000.0;
        let page_wire = 4104.0;
        // A working set at the bottom (cheaper pages: some zero), a hot spot, and a gap.
        let mut segs = vec![
            seg(0.0, 2_000.0, 2_000.0, 3_000.0),
            seg(2_000.0, 500.0, 500.0, page_wire),
            seg(2_500.0, 7_500.0, 7_500.0, 3_100.0),
        ];
        let mut sw = Sweep::new(&segs, mem);
        // splitmix64: any fixed sequence of shares will do.
        let mut state = 7u64;
        let mut unit = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut max_pieces = 0;
        for step in 0..400 {
            // Send a random share of what is left, then harvest random dirty shares.
            let left_b: f64 = sw.ahead_b.iter().sum();
            let before = layout(&sw, segs.len(), mem);
            let pages = sw.advance(left_b * unit() * 0.5, mem);
            let after = layout(&sw, segs.len(), mem);
            let gone: f64 = before.iter().zip(&after).map(|(b, a)| b.2 - a.2).sum();
            assert!(close(pages, gone), "step {step}: sent {pages} vs {gone}");
            for e in 0..sw.members.len() {
                let (lo, hi) = (sw.elem_lo[e], sw.elem_hi[e]);
                let want: f64 = (0..segs.len())
                    .map(|k| ahead_ref(&sw, k, lo, hi, mem))
                    .sum();
                assert!(
                    close(want, sw.ahead_e[e]),
                    "step {step}: ahead in interval {e}"
                );
            }
            for (k, a) in after.iter().enumerate() {
                assert!(close(a.2, sw.ahead[k]), "step {step}: ahead of {k}");
                assert!(close(a.3, sw.ahead_b[k]), "step {step}: ahead bytes of {k}");
            }
            // Segment 1 is a located scan: a run of it (wrapping at its end) is dirtied.
            let head0 = (500.0 * unit()).floor();
            let n = (600.0 * unit()).floor();
            let dirt = [
                Dirt {
                    even: 0.05 * unit(),
                    ..Dirt::default()
                },
                scan_dirt(2_000.0, 500.0, &[(head0, head0 + n)]),
                Dirt::default(),
            ];
            let expect: Vec<(f64, f64)> = (0..segs.len())
                .map(|k| {
                    let (a, ab) = (sw.ahead[k], sw.ahead_b[k]);
                    let mut new = dirt[k].even * (segs[k].pages - a);
                    for (lo, hi) in dirt[k].ranges {
                        if hi > lo {
                            let inside = ahead_ref(&sw, k, lo, hi, mem);
                            assert!(
                                close(inside, sw.ahead_in(k, lo, hi, mem)),
                                "step {step}: ahead in [{lo}, {hi})"
                            );
                            new += (hi - lo) - inside;
                        }
                    }
                    (a + new, ab + new * page_wire)
                })
                .collect();
            sw.harvest(&dirt, false, page_wire, mem, &mut segs);
            max_pieces = max_pieces.max(sw.lay.pieces.len());
            let lay = layout(&sw, segs.len(), mem);
            for k in 0..segs.len() {
                assert!(
                    close(segs[k].send, expect[k].0),
                    "step {step}: seg {k} pages"
                );
                assert!(
                    close(segs[k].send_bytes, expect[k].1),
                    "step {step}: seg {k} bytes"
                );
                assert!(close(lay[k].0, segs[k].send), "step {step}: layout of {k}");
                assert!(
                    close(lay[k].1, segs[k].send_bytes),
                    "step {step}: layout bytes"
                );
                assert!(segs[k].send <= segs[k].pages * (1.0 + 1e-12));
            }
            // Pieces tile memory in order.
            assert_eq!(sw.lay.pieces[0].lo, 0.0);
            assert_eq!(sw.lay.pieces.last().unwrap().hi, mem);
            assert!(sw.lay.pieces.windows(2).all(|w| w[0].hi == w[1].lo));
        }
        // The cap was reached (the merges above were exercised) and held.
        assert_eq!(max_pieces, sw.members.len() + MAX_EXTRA_PIECES);
    }

    #[test]
    fn a_round_that_ends_stops_the_sweep_after_the_last_page() {
        let mem = 1_000.0;
        let segs = vec![
            seg(0.0, 300.0, 300.0, 4104.0),
            seg(300.0, 700.0, 0.0, 4104.0),
        ];
        let mut sw = Sweep::new(&segs, mem);
        sw.advance(100.0 * 4104.0, mem);
        assert!(close(sw.s, 100.0));
        let pages = sw.advance_to_end(mem);
        assert!(close(pages, 200.0), "{pages}");
        // It stands at the end of the working set, not after a full turn.
        assert_eq!(sw.x0 + sw.s, 300.0);
        assert!(sw.ahead.iter().all(|&a| a == 0.0));
    }

    /// A sweep over a written segment `[0, 1000)` and an unwritten rest `[1000, 4000)`, with
    /// the given pieces (one member each; bytes at 4104 per page) and the sweep starting at `x0`.
    fn laid_out(pieces: &[(f64, f64, f64)], x0: f64) -> (Sweep, Vec<Seg>) {
        let mut rest = seg(1000.0, 3000.0, 0.0, 4104.0);
        rest.rate = 0.0;
        let segs = vec![seg(0.0, 1000.0, 0.0, 4104.0), rest];
        let mut sw = Sweep::new(&segs, 4000.0);
        sw.lay.clear();
        for (i, &(lo, hi, d)) in pieces.iter().enumerate() {
            let elem = (lo >= 1000.0) as u32;
            sw.lay.pieces.push(Piece {
                lo,
                hi,
                elem,
                off: i as u32,
            });
            sw.lay.dens.push(d);
            sw.lay.bdens.push(d * 4104.0);
            sw.lay.tot.push(d);
            sw.lay.btot.push(d * 4104.0);
        }
        sw.x0 = x0;
        (sw, segs)
    }

    #[test]
    fn a_send_set_turned_around_its_working_set_is_the_same_ring() {
        let rest = (1000.0, 4000.0, 0.0);
        let ring = |p: &[(f64, f64, f64)], x0: f64| {
            let (sw, segs) = laid_out(p, x0);
            sw.ring(&segs)
        };
        let same = |a: &Ring, b: &Ring| {
            a.elem == b.elem
                && a.rel.pieces.len() == b.rel.pieces.len()
                && a.rel
                    .pieces
                    .iter()
                    .zip(&b.rel.pieces)
                    .all(|(p, q)| (p.lo - q.lo).abs() < 1e-9 && (p.hi - q.hi).abs() < 1e-9)
                && a.rel.dens == b.rel.dens
        };
        // 200 pages at 0.8 from the start, the other 800 at 0.5: once starting at 100, once at
        // 500, once with the dense stretch wrapping round the end of the working set.
        let a = ring(
            &[
                (0.0, 100.0, 0.5),
                (100.0, 300.0, 0.8),
                (300.0, 1000.0, 0.5),
                rest,
            ],
            100.0,
        )
        .expect("a ring");
        let b = ring(
            &[
                (0.0, 500.0, 0.5),
                (500.0, 700.0, 0.8),
                (700.0, 1000.0, 0.5),
                rest,
            ],
            500.0,
        )
        .expect("a ring");
        let c = ring(
            &[
                (0.0, 50.0, 0.8),
                (50.0, 850.0, 0.5),
                (850.0, 1000.0, 0.8),
                rest,
            ],
            850.0,
        )
        .expect("a ring");
        assert!(same(&a, &b) && same(&a, &c), "{a:?}\n{b:?}\n{c:?}");
        assert_eq!(
            a.rel.pieces.len(),
            2,
            "equal neighbours across the wrap are one piece"
        );
        assert_eq!((a.rel.pieces[0].hi, a.rel.pieces[1].hi), (200.0, 1000.0));
        // The same pieces seen from elsewhere are another state.
        let d = ring(
            &[
                (0.0, 500.0, 0.5),
                (500.0, 700.0, 0.8),
                (700.0, 1000.0, 0.5),
                rest,
            ],
            600.0,
        )
        .expect("a ring");
        assert!(!same(&a, &d));
        // No ring when pages wait outside the working set, or the sweep starts there.
        let pending_outside = [(0.0, 1000.0, 0.5), (1000.0, 4000.0, 0.1)];
        assert!(ring(&pending_outside, 100.0).is_none());
        assert!(ring(&[(0.0, 1000.0, 0.5), rest], 2000.0).is_none());
        // ... or when memory elsewhere is written.
        let (sw, mut segs) = laid_out(&[(0.0, 1000.0, 0.5), rest], 100.0);
        segs[1].rate = 1.0;
        assert!(sw.ring(&segs).is_none());
    }

    #[test]
    fn merging_pieces_picks_the_pairs_a_full_search_picks() {
        // Intervals of one and of two members; pieces cut at random points with densities from
        // a short list, so that many pairs cost the same and the order of choice matters.
        let segs = vec![
            seg(0.0, 1_000.0, 0.0, 4104.0),
            seg(1_000.0, 2_000.0, 0.0, 4104.0),
            seg(1_500.0, 1_500.0, 0.0, 4104.0),
            seg(3_000.0, 1_000.0, 0.0, 4104.0),
        ];
        let mem = 4_000.0;
        let page_wire = 4104.0;
        let sw = Sweep::new(&segs, mem);
        let mut state = 11u64;
        let mut next = |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        // (lo, hi, interval, densities, byte densities) per piece.
        type Naive = Vec<(f64, f64, u32, Vec<f64>, Vec<f64>)>;
        for round in 0..300 {
            let mut lay = Layout::default();
            let mut naive: Naive = Vec::new();
            for e in 0..sw.members.len() {
                let (lo, hi) = (sw.elem_lo[e], sw.elem_hi[e]);
                let mut cuts: Vec<f64> = (0..next(6))
                    .map(|_| lo + next(1000) as f64 * (hi - lo) / 1000.0)
                    .collect();
                cuts.extend([lo, hi]);
                cuts.sort_by(f64::total_cmp);
                cuts.dedup();
                for w in cuts.windows(2) {
                    let k = sw.members[e].len();
                    let d: Vec<f64> = (0..k)
                        .map(|_| [0.0, 0.25, 0.5, 1.0][next(4) as usize])
                        .collect();
                    let b: Vec<f64> = d.iter().map(|x| x * page_wire).collect();
                    let off = lay.dens.len() as u32;
                    lay.pieces.push(Piece {
                        lo: w[0],
                        hi: w[1],
                        elem: e as u32,
                        off,
                    });
                    lay.dens.extend(&d);
                    lay.bdens.extend(&b);
                    lay.tot.push(d.iter().sum());
                    lay.btot.push(b.iter().sum());
                    naive.push((w[0], w[1], e as u32, d, b));
                }
            }
            let limit = sw.members.len() + MAX_EXTRA_PIECES;
            // The full search: the first cheapest pair of neighbours in one interval, again
            // after every merge.
            while naive.len() > limit {
                let cost = |a: &(f64, f64, u32, Vec<f64>, Vec<f64>),
                            b: &(f64, f64, u32, Vec<f64>, Vec<f64>)| {
                    let diff: f64 = (0..a.3.len())
                        .map(|j| (a.3[j] - b.3[j]).abs() + (a.4[j] - b.4[j]).abs() / page_wire)
                        .sum();
                    diff * (a.1 - a.0).min(b.1 - b.0)
                };
                let mut best: Option<(f64, usize)> = None;
                for i in 1..naive.len() {
                    let (a, b) = (&naive[i - 1], &naive[i]);
                    if a.2 == b.2 && a.1 == b.0 && best.is_none_or(|(c, _)| cost(a, b) < c) {
                        best = Some((cost(a, b), i));
                    }
                }
                let Some((_, i)) = best else { break };
                let b = naive.remove(i);
                let a = &mut naive[i - 1];
                let (la, lb) = (a.1 - a.0, b.1 - b.0);
                for j in 0..a.3.len() {
                    a.3[j] = (a.3[j] * la + b.3[j] * lb) / (la + lb);
                    a.4[j] = (a.4[j] * la + b.4[j] * lb) / (la + lb);
                }
                a.1 = b.1;
            }
            sw.cap_pieces(&mut lay, page_wire, &mut Vec::new());
            assert_eq!(lay.pieces.len(), naive.len(), "round {round}");
            for (i, (p, q)) in lay.pieces.iter().zip(&naive).enumerate() {
                let k = q.3.len();
                let o = p.off as usize;
                assert_eq!(
                    (p.lo, p.hi, p.elem),
                    (q.0, q.1, q.2),
                    "round {round}, piece {i}"
                );
                assert_eq!(&lay.dens[o..o + k], &q.3[..], "round {round}, piece {i}");
                assert_eq!(&lay.bdens[o..o + k], &q.4[..], "round {round}, piece {i}");
                assert_eq!(
                    lay.tot[i],
                    q.3.iter().sum::<f64>(),
                    "round {round}, piece {i}"
                );
            }
        }
    }
}

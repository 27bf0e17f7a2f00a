//! Drift jumps: runs of iterations that each move the state on by the same step.
//!
//! A migration can settle into a regime where every iteration repeats the one before it, but
//! shifted: a scan runs through memory that is already dirty, the sender chases it, and each
//! iteration moves the sweep, a piece boundary and the scan's head on by the same number of
//! pages while the pending set shrinks or grows by the same amount. The engine's step is a
//! piecewise-affine map of the iteration-start state; within one region where every
//! comparison it makes (which position lies before which, whether a count is still positive)
//! comes out the same, it is affine. When three consecutive iteration starts S₀, S₁, S₂ show
//! the same step Δ = S₁ − S₀ = S₂ − S₁ and lie in one region, the map moves every state of that
//! region by Δ, so S₂ + iΔ follows for as long as the line stays in the region: a line leaves a
//! convex region once, and the positions it orders are lines in i, which first cross where two
//! neighbours in their starting order meet. The policy is then shown the forecast
//! consultations one by one (on a copy, so it can be stopped before the first answer that
//! differs; a policy whose answers between syncs cannot change is shown only the syncs, see
//! [`Policy::drift_syncs`]), and the engine jumps to the last iteration start before that.
//! Iterations whose checks were partly skipped cannot be replayed; when everything but clocks
//! and positions stands still along such a drift, each iteration looks to the policy like the
//! last one, and it is asked about them as about a fixed point ([`Policy::repeat_cycles`]).

use super::*;
use crate::policy::{Cycle, DriftSync, Policy};
use workloads::round_u64;

/// How a number of the state may move from one iteration start to the next.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Num {
    /// A position in memory (pages): its order among all positions must not change.
    Pos,
    /// A count that stays positive while it is (it must not reach zero within a jump).
    Plus,
    /// Moves freely (figures of an iteration).
    Free,
    /// A clock or a running total: moves freely, and is all that moves (positions apart)
    /// between iterations that look the same to the policy.
    Clock,
    /// Must not move at all (densities, the throttle).
    Fixed,
}

/// A closed iteration as the engine's own (unrounded) figures, so that forecast records round
/// exactly as real ones would.
#[derive(Clone, Copy, Debug)]
pub(super) struct RoundSrc {
    pub round: f64,
    pub dur: f64,
    pub pages: f64,
    pub bytes: f64,
    pub dirtied: f64,
}

impl RoundSrc {
    /// `self` carried `i` more steps of `self − prev`.
    fn ahead(&self, prev: &RoundSrc, i: f64) -> RoundSrc {
        self.along(&self.step_from(prev), i)
    }

    /// The step from `prev` to `self`, figure by figure.
    fn step_from(&self, prev: &RoundSrc) -> RoundSrc {
        RoundSrc {
            round: self.round - prev.round,
            dur: self.dur - prev.dur,
            pages: self.pages - prev.pages,
            bytes: self.bytes - prev.bytes,
            dirtied: self.dirtied - prev.dirtied,
        }
    }

    /// `self` carried `i` more steps of `d` ([`RoundSrc::step_from`]).
    fn along(&self, d: &RoundSrc, i: f64) -> RoundSrc {
        RoundSrc {
            round: self.round + i * d.round,
            dur: self.dur + i * d.dur,
            pages: self.pages + i * d.pages,
            bytes: self.bytes + i * d.bytes,
            dirtied: self.dirtied + i * d.dirtied,
        }
    }

    pub fn summary(&self) -> RoundSummary {
        RoundSummary {
            round: round_u64(self.round) as u32,
            duration_ns: self.dur as u64,
            pages_sent: self.pages as u64,
            bytes_sent: self.bytes as u64,
            pages_dirtied: self.dirtied as u64,
        }
    }

    fn nums(&mut self, v: &mut dyn FnMut(&mut f64, Num)) {
        v(&mut self.round, Num::Clock);
        v(&mut self.dur, Num::Free);
        v(&mut self.pages, Num::Free);
        v(&mut self.bytes, Num::Free);
        v(&mut self.dirtied, Num::Free);
    }
}

/// A round record's sources.
#[derive(Clone, Copy, Debug)]
pub(super) struct RecSrc {
    pub closed: RoundSrc,
    pub start: f64,
    pub bw: f64,
    /// Bandwidth the downtime estimate divides by, and the bytes it divides.
    pub est_bw: f64,
    pub union_bytes: f64,
    pub throttle: f64,
    pub guest_writes: f64,
}

impl RecSrc {
    /// The step from `prev` to `self`, figure by figure (the throttle is `self`'s).
    fn step_from(&self, prev: &RecSrc) -> RecSrc {
        RecSrc {
            closed: self.closed.step_from(&prev.closed),
            start: self.start - prev.start,
            bw: self.bw - prev.bw,
            est_bw: self.est_bw - prev.est_bw,
            union_bytes: self.union_bytes - prev.union_bytes,
            throttle: self.throttle,
            guest_writes: self.guest_writes - prev.guest_writes,
        }
    }

    /// `self` carried `i` more steps of `d` ([`RecSrc::step_from`]), as [`RoundSrc::along`]
    /// carries a round.
    fn along(&self, d: &RecSrc, i: f64) -> RecSrc {
        RecSrc {
            closed: self.closed.along(&d.closed, i),
            start: self.start + i * d.start,
            bw: self.bw + i * d.bw,
            est_bw: self.est_bw + i * d.est_bw,
            union_bytes: self.union_bytes + i * d.union_bytes,
            throttle: self.throttle,
            guest_writes: self.guest_writes + i * d.guest_writes,
        }
    }

    pub fn record(&self, zero_pages_sent: u64) -> RoundRecord {
        let c = &self.closed;
        RoundRecord {
            round: round_u64(c.round) as u32,
            start_ns: self.start as u64,
            duration_ns: c.dur as u64,
            pages_sent: round_u64(c.pages),
            zero_pages_sent,
            bytes_sent: round_u64(c.bytes),
            pages_dirtied: round_u64(c.dirtied),
            bandwidth_bps: self.bw,
            est_downtime_ns: transfer_ns(self.union_bytes as u64, self.est_bw),
            throttle_pct: round_u64(self.throttle * 100.0) as u8,
            guest_writes: round_u64(self.guest_writes),
        }
    }

    fn nums(&mut self, v: &mut dyn FnMut(&mut f64, Num)) {
        self.closed.nums(v);
        v(&mut self.start, Num::Clock);
        v(&mut self.bw, Num::Free);
        v(&mut self.est_bw, Num::Free);
        v(&mut self.union_bytes, Num::Free);
        v(&mut self.throttle, Num::Fixed);
        v(&mut self.guest_writes, Num::Free);
    }
}

/// What a policy is shown at one consultation, as the engine's unrounded figures.
#[derive(Clone, Copy, Debug)]
pub(super) struct ObsSrc {
    pub t: f64,
    pub round: f64,
    pub round_pages: f64,
    pub round_bytes: f64,
    pub total_pages: f64,
    pub total_bytes: f64,
    pub round_start: f64,
    pub remaining: f64,
    pub dirty: f64,
    pub throttle: f64,
    pub last_round: Option<RoundSrc>,
    pub last_bw: f64,
}

/// What every observation of one migration shares.
#[derive(Clone, Copy, Debug)]
pub(super) struct ObsCtx {
    pub mem_bytes: u64,
    pub page_size: u64,
    pub page_wire: f64,
    pub vcpus: u32,
}

impl ObsSrc {
    fn ahead(&self, prev: &ObsSrc, i: f64) -> ObsSrc {
        let go = |b: f64, a: f64| b + i * (b - a);
        ObsSrc {
            t: go(self.t, prev.t),
            round: go(self.round, prev.round),
            round_pages: go(self.round_pages, prev.round_pages),
            round_bytes: go(self.round_bytes, prev.round_bytes),
            total_pages: go(self.total_pages, prev.total_pages),
            total_bytes: go(self.total_bytes, prev.total_bytes),
            round_start: go(self.round_start, prev.round_start),
            remaining: go(self.remaining, prev.remaining),
            dirty: go(self.dirty, prev.dirty),
            throttle: self.throttle,
            last_round: match (&self.last_round, &prev.last_round) {
                (Some(b), Some(a)) => Some(b.ahead(a, i)),
                _ => None,
            },
            last_bw: go(self.last_bw, prev.last_bw),
        }
    }

    pub fn observation(&self, trigger: Trigger, c: &ObsCtx) -> Observation {
        Observation {
            trigger,
            elapsed_ns: self.t as u64,
            round: round_u64(self.round) as u32,
            mem_bytes: c.mem_bytes,
            page_size: c.page_size,
            page_wire_bytes: c.page_wire as u64,
            total_bytes_sent: self.total_bytes as u64,
            total_pages_sent: self.total_pages as u64,
            round_bytes_sent: self.round_bytes as u64,
            round_pages_sent: self.round_pages as u64,
            round_elapsed_ns: (self.t - self.round_start).max(0.0) as u64,
            remaining_pages: round_u64(self.remaining),
            dirty_pages: round_u64(self.dirty),
            last_round: self.last_round.map(|r| r.summary()),
            bandwidth_bps: self.last_bw,
            dirty_rate_pps: 0.0,
            throttle_pct: round_u64(self.throttle * 100.0) as u8,
            vcpus: c.vcpus,
        }
    }

    fn nums(&mut self, v: &mut dyn FnMut(&mut f64, Num)) {
        v(&mut self.t, Num::Clock);
        v(&mut self.round, Num::Clock);
        v(&mut self.round_pages, Num::Free);
        v(&mut self.round_bytes, Num::Free);
        v(&mut self.total_pages, Num::Clock);
        v(&mut self.total_bytes, Num::Clock);
        v(&mut self.round_start, Num::Clock);
        v(&mut self.remaining, Num::Plus);
        v(&mut self.dirty, Num::Free);
        v(&mut self.throttle, Num::Fixed);
        if let Some(r) = &mut self.last_round {
            r.nums(v);
        }
        v(&mut self.last_bw, Num::Free);
    }
}

/// One consultation of an iteration: what the policy saw and answered, where the sweep stood
/// and how many bytes the iteration still held.
#[derive(Clone, Debug)]
pub(super) struct Consult {
    pub trigger: Trigger,
    pub decision: Decision,
    pub src: ObsSrc,
    pub x: f64,
    pub left: f64,
}

/// What happened in one iteration: its consultations and the round records it closed.
#[derive(Clone, Debug, Default)]
pub(super) struct IterLog {
    pub consults: Vec<Consult>,
    pub recs: Vec<RecSrc>,
    /// A fixed point was jumped (the iteration is no step of a drift).
    pub irregular: bool,
    /// Ticks were skipped: the policy was not shown every consultation, so the log cannot be
    /// replayed, and only iterations that look the same to the policy may be jumped over.
    pub skipped: bool,
    /// The iteration is being logged (only once the last ones moved by even steps).
    pub recording: bool,
}

impl IterLog {
    /// Start the log of the next iteration.
    pub fn clear(&mut self, recording: bool) {
        self.consults.clear();
        self.recs.clear();
        self.irregular = false;
        self.skipped = false;
        self.recording = recording;
    }

    fn nums(&mut self, v: &mut dyn FnMut(&mut f64, Num)) {
        for c in &mut self.consults {
            c.src.nums(v);
            v(&mut c.x, Num::Pos);
            v(&mut c.left, Num::Plus);
        }
        for r in &mut self.recs {
            r.nums(v);
        }
    }

    /// Same consultations and answers, and as many records.
    fn same_shape(&self, o: &IterLog) -> bool {
        self.consults.len() == o.consults.len()
            && self.recs.len() == o.recs.len()
            && (self.consults.iter().zip(&o.consults)).all(|(a, b)| {
                a.trigger == b.trigger
                    && a.decision == b.decision
                    && a.src.last_round.is_some() == b.src.last_round.is_some()
            })
    }
}

/// The loop's own figures at an iteration start.
pub(super) struct LoopVars<'a> {
    pub t: &'a mut f64,
    pub ready: &'a mut f64,
    pub next_tick: &'a mut Option<f64>,
    pub round: &'a mut u32,
    pub round_start: &'a mut f64,
    pub total_pages: &'a mut f64,
    pub total_bytes: &'a mut f64,
    pub round_writes_start: &'a mut f64,
    pub last_bw: &'a mut f64,
}

/// Every number of the iteration-start state that may move, in a fixed order (read or
/// written through `v`).
fn state_nums(f: &mut Fluid, lv: &mut LoopVars, v: &mut dyn FnMut(&mut f64, Num)) {
    let sw = &mut f.sweep;
    v(&mut sw.x0, Num::Pos);
    v(&mut sw.s, Num::Fixed);
    for p in &mut sw.lay.pieces {
        v(&mut p.lo, Num::Pos);
        v(&mut p.hi, Num::Pos);
    }
    for x in sw.lay.dens.iter_mut().chain(&mut sw.lay.bdens) {
        v(x, Num::Fixed);
    }
    for x in sw.lay.tot.iter_mut().chain(&mut sw.lay.btot) {
        v(x, Num::Fixed);
    }
    for x in sw
        .ahead
        .iter_mut()
        .chain(&mut sw.ahead_b)
        .chain(&mut sw.ahead_e)
    {
        v(x, Num::Plus);
    }
    for sg in &mut f.segs {
        v(&mut sg.send, Num::Plus);
        v(&mut sg.send_bytes, Num::Plus);
    }
    v(&mut f.send_pages, Num::Plus);
    v(&mut f.send_bytes, Num::Plus);
    v(&mut f.throttle, Num::Fixed);
    v(&mut f.guest_ns, Num::Clock);
    v(&mut f.guest_writes, Num::Clock);
    for g in &mut f.phase_guest {
        v(g, Num::Fixed);
    }
    for h in &mut f.harvest_at {
        v(&mut h.1, Num::Clock);
    }
    let mut partial = f.partial_scans as f64;
    v(&mut partial, Num::Free);
    f.partial_scans = partial.round() as u64;
    v(lv.t, Num::Clock);
    v(lv.ready, Num::Clock);
    if let Some(nt) = lv.next_tick {
        v(nt, Num::Clock);
    }
    let mut round = *lv.round as f64;
    v(&mut round, Num::Clock);
    *lv.round = round.round() as u32;
    v(lv.round_start, Num::Clock);
    v(lv.total_pages, Num::Clock);
    v(lv.total_bytes, Num::Clock);
    v(lv.round_writes_start, Num::Clock);
    v(lv.last_bw, Num::Fixed);
}

/// Where each located scan's head stands (positions the harvest compares with the others).
fn heads<'f>(f: &'f Fluid<'_>) -> impl Iterator<Item = f64> + 'f {
    (f.segs.iter())
        .filter(|s| s.located)
        .map(|s| s.first + (s.rate / 1e9 * f.harvest_at[s.phase].1).rem_euclid(s.pages.max(1.0)))
}

/// An iteration start, with the log of the iteration that led to it.
#[derive(Default)]
struct Snap {
    /// The loop's time.
    t: f64,
    nums: Vec<f64>,
    kinds: Vec<Num>,
    heads: Vec<f64>,
    /// What must match exactly: the layout's shape and everything discrete.
    shape: Vec<u64>,
    log: IterLog,
    log_nums: Vec<f64>,
    log_kinds: Vec<Num>,
}

impl Snap {
    /// The iteration start now, in the buffers of `self`.
    fn fill(&mut self, f: &mut Fluid, lv: &mut LoopVars, log: &IterLog) {
        let (nums, kinds) = (&mut self.nums, &mut self.kinds);
        nums.clear();
        kinds.clear();
        state_nums(f, lv, &mut |x, k| {
            nums.push(*x);
            kinds.push(k);
        });
        let sw = &f.sweep;
        self.shape.clear();
        self.shape.extend([
            sw.lay.pieces.len() as u64,
            sw.at as u64,
            sw.near_cap,
            lv.next_tick.is_some() as u64,
        ]);
        (self.shape).extend(
            sw.lay
                .pieces
                .iter()
                .map(|p| (p.elem as u64) << 32 | p.off as u64),
        );
        (self.shape).extend(f.harvest_at.iter().map(|h| h.0 as u64));
        self.log.clone_from(log);
        let (log_nums, log_kinds) = (&mut self.log_nums, &mut self.log_kinds);
        log_nums.clear();
        log_kinds.clear();
        self.log.nums(&mut |x, k| {
            log_nums.push(*x);
            log_kinds.push(k);
        });
        self.t = *lv.t;
        self.heads.clear();
        self.heads.extend(heads(f));
    }
}

/// `b − a` and `c − b` are the same step, to a relative 1e-12 of the values or a billionth
/// (of a page, a nanosecond or a byte: small figures taken as differences of large ones
/// carry the rounding of the large ones).
fn same_step(a: f64, b: f64, c: f64) -> bool {
    let scale = a.abs().max(b.abs()).max(c.abs());
    ((c - b) - (b - a)).abs() <= 1e-12 * scale + 1e-9
}

/// The last three iteration starts, and a cheap first test that they may be drifting.
#[derive(Default)]
pub(super) struct Drift {
    snaps: Vec<Snap>,
    /// Snapshots let go, whose buffers the next ones fill.
    spare: Vec<Snap>,
    /// The cheap test's figures at the last three iteration starts (oldest first), and how
    /// many of them are filled in.
    quick: [[f64; 4]; 3],
    quick_n: usize,
    /// The cheap test passed at the last iteration start.
    quick_ok: bool,
    /// After a failed attempt, no new one before this iteration (the wait doubles with each
    /// failure, so that migrations that never drift spend little on trying).
    resume_at: u32,
    backoff: u32,
}

/// A jump found by [`Drift::plan`].
pub(super) struct Jump {
    /// Iterations jumped over.
    pub n: u64,
    /// The policy as it stands after answering them.
    pub policy: Box<dyn Policy>,
    /// The last closed round at the landing point.
    pub last_round: Option<RoundSrc>,
}

impl Drift {
    pub fn clear(&mut self) {
        self.spare.append(&mut self.snaps);
        self.quick_n = 0;
        self.quick_ok = false;
    }

    /// Whether the next iteration should be logged: the last ones moved by even steps.
    pub fn wants_log(&self) -> bool {
        self.quick_ok
    }

    /// Record the iteration start just reached (after `log`); once three starts in a row
    /// moved by the same step, find how far the state may be carried along it and let a copy
    /// of the policy answer the forecast consultations. Returns the jump, which
    /// [`Drift::land`] applies.
    #[allow(clippy::too_many_arguments)]
    pub fn plan(
        &mut self,
        f: &mut Fluid,
        lv: &mut LoopVars,
        log: &IterLog,
        policy: &dyn Policy,
        ctx: &ObsCtx,
        max_time: f64,
        max_rounds: u32,
    ) -> Option<Jump> {
        if log.irregular || f.phases.len() > 1 {
            self.clear();
            return None;
        }
        // A cheap test first: time, totals and the pending set move by constant steps.
        let q = [*lv.t, *lv.total_pages, f.send_pages, f.sweep.x0];
        self.quick = [self.quick[1], self.quick[2], q];
        self.quick_n = (self.quick_n + 1).min(3);
        self.quick_ok = self.quick_n == 3
            && *lv.round >= self.resume_at
            && (0..4).all(|j| same_step(self.quick[0][j], self.quick[1][j], self.quick[2][j]));
        if !self.quick_ok || !log.recording {
            self.spare.append(&mut self.snaps);
            return None;
        }
        let mut snap = self.spare.pop().unwrap_or_default();
        snap.fill(f, lv, log);
        self.snaps.push(snap);
        if self.snaps.len() > 3 {
            let old = self.snaps.remove(0);
            self.spare.push(old);
        }
        if self.snaps.len() < 3 {
            return None;
        }
        let (t, round) = (*lv.t, *lv.round);
        let jump = self.attempt(f.mem, t, round, policy, ctx, max_time, max_rounds);
        if jump.is_some() {
            self.backoff = 0;
        } else {
            self.backoff = (self.backoff * 2).clamp(4, 256);
            self.resume_at = *lv.round + self.backoff;
            self.spare.append(&mut self.snaps);
            self.quick_ok = false;
        }
        jump
    }

    /// Three iteration starts are at hand, the last at `t` after `round` iterations: see
    /// whether they drift and how far.
    #[allow(clippy::too_many_arguments)]
    fn attempt(
        &self,
        mem: f64,
        t: f64,
        round: u32,
        policy: &dyn Policy,
        ctx: &ObsCtx,
        max_time: f64,
        max_rounds: u32,
    ) -> Option<Jump> {
        let (s0, s1, s2) = (&self.snaps[0], &self.snaps[1], &self.snaps[2]);
        if s0.shape != s1.shape
            || s1.shape != s2.shape
            || s0.nums.len() != s2.nums.len()
            || s1.nums.len() != s2.nums.len()
            || s0.heads.len() != s2.heads.len()
            || !s0.log.same_shape(&s1.log)
            || !s1.log.same_shape(&s2.log)
        {
            return None;
        }
        let steps = |a: &[f64], b: &[f64], c: &[f64], kinds: Option<&[Num]>| -> bool {
            (0..c.len()).all(|j| {
                let fixed = kinds.is_some_and(|k| k[j] == Num::Fixed);
                same_step(a[j], b[j], c[j]) && (!fixed || same_step(a[j], a[j], c[j]))
            })
        };
        if !steps(&s0.nums, &s1.nums, &s2.nums, Some(&s2.kinds))
            || !steps(&s0.heads, &s1.heads, &s2.heads, None)
            || !steps(
                &s0.log_nums,
                &s1.log_nums,
                &s2.log_nums,
                Some(&s2.log_kinds),
            )
        {
            return None;
        }
        let d =
            |a: &[f64], b: &[f64]| -> Vec<f64> { a.iter().zip(b).map(|(x, y)| y - x).collect() };
        let (dn, dh, dl) = (
            d(&s1.nums, &s2.nums),
            d(&s1.heads, &s2.heads),
            d(&s1.log_nums, &s2.log_nums),
        );
        let period = s2.t - s1.t;
        if period <= 0.0 {
            return None;
        }
        let mut limit = self.reach(&dn, &dh, &dl, mem);
        limit = limit.min(((max_time - t) / period).floor() as i64 - 2);
        let syncs = s2.log.recs.len().max(1) as i64;
        limit = limit.min((max_rounds as i64 - round as i64) / syncs - 2);
        if limit < 2 {
            return None;
        }
        let (l1, l2) = (&s1.log, &s2.log);
        let (policy, done) = if s1.log.skipped || s2.log.skipped {
            Self::repeat(policy, s1, s2, ctx, period, limit)?
        } else {
            match Self::answer_syncs(policy, l1, l2, ctx, limit) {
                Some(answered) => answered,
                None => Self::replay(policy, l1, l2, ctx, limit),
            }
        };
        if done < 2 {
            return None;
        }
        let last_round = (l2.recs.last().zip(l1.recs.last()))
            .map(|(r, p)| r.closed.ahead(&p.closed, done as f64));
        Some(Jump {
            n: done as u64,
            policy,
            last_round,
        })
    }

    /// Iterations whose ticks were partly skipped: the policy can be asked about the ones
    /// ahead only if they all look to it as the last one did, apart from its clocks — every
    /// figure but clocks and positions stands still — and then as at a fixed point
    /// ([`Policy::repeat_cycles`]); what it sees between the logged consultations is made of
    /// the same figures (sending and dirtying do not depend on where the sweep stands).
    /// The copy, and how many iterations it answered as the last one.
    fn repeat(
        policy: &dyn Policy,
        s1: &Snap,
        s2: &Snap,
        ctx: &ObsCtx,
        period: f64,
        limit: i64,
    ) -> Option<(Box<dyn Policy>, i64)> {
        let still = |a: &[f64], b: &[f64], kinds: &[Num]| {
            (a.iter().zip(b).zip(kinds))
                .all(|((&x, &y), &k)| matches!(k, Num::Pos | Num::Clock) || same_step(x, x, y))
        };
        if !still(&s1.nums, &s2.nums, &s2.kinds)
            || !still(&s1.log_nums, &s2.log_nums, &s2.log_kinds)
        {
            return None;
        }
        let (c1, c2) = (s1.log.consults.last()?, s2.log.consults.last()?);
        if c2.trigger != Trigger::AfterSync || c2.decision != Decision::Continue {
            return None;
        }
        let cycle = Cycle {
            period_ns: period.round() as u64,
            bytes: (c2.src.total_bytes - c1.src.total_bytes).round() as u64,
            pages: (c2.src.total_pages - c1.src.total_pages).round() as u64,
            syncs: s2.log.recs.len() as u32,
            max_repeats: limit as u64,
        };
        let mut trial = policy.fork();
        let n = trial.repeat_cycles(&c2.src.observation(Trigger::AfterSync, ctx), &cycle);
        Some((trial, n.min(limit as u64) as i64))
    }

    /// A copy of the policy answers only the syncs ahead, when it can ([`Policy::drift_syncs`]):
    /// the copy, and how many iterations it answered as the last one.
    fn answer_syncs(
        policy: &dyn Policy,
        l1: &IterLog,
        l2: &IterLog,
        ctx: &ObsCtx,
        limit: i64,
    ) -> Option<(Box<dyn Policy>, i64)> {
        let (c2, c1) = (l2.consults.last()?, l1.consults.last()?);
        let pattern: Vec<(Trigger, Decision)> = (l2.consults.iter())
            .map(|c| (c.trigger, c.decision.clone()))
            .collect();
        // The figures the sync's observation would carry, rounded as there.
        // (Only the figures a sync shows, each carried as [`ObsSrc::ahead`] carries it.)
        let (a, b) = (&c1.src, &c2.src);
        let sync_at = |i: u64| {
            let go = |b: f64, a: f64| b + i as f64 * (b - a);
            DriftSync {
                pending_pages: round_u64(go(b.remaining, a.remaining))
                    + round_u64(go(b.dirty, a.dirty)),
                total_pages_sent: go(b.total_pages, a.total_pages) as u64,
                round: round_u64(go(b.round, a.round)) as u32,
                bandwidth_bps: go(b.last_bw, a.last_bw),
                page_wire_bytes: ctx.page_wire as u64,
            }
        };
        let mut trial = policy.fork();
        let done = trial.drift_syncs(&pattern, &sync_at, limit as u64)?;
        Some((trial, done as i64))
    }

    /// A copy of the policy is shown the forecast consultations, one iteration at a time,
    /// keeping a copy at the start of every block of iterations to restart from: the policy
    /// after the iterations it answered as the last one, and how many.
    fn replay(
        policy: &dyn Policy,
        l1: &IterLog,
        l2: &IterLog,
        ctx: &ObsCtx,
        limit: i64,
    ) -> (Box<dyn Policy>, i64) {
        const BLOCK: i64 = 64;
        let mut trial = policy.fork();
        let mut checkpoint = (0i64, policy.fork());
        let mut done = 0i64;
        'cycles: for i in 1..=limit {
            if (i - 1) % BLOCK == 0 {
                checkpoint = (i - 1, trial.fork());
            }
            for (c, p) in l2.consults.iter().zip(&l1.consults) {
                let obs = c.src.ahead(&p.src, i as f64).observation(c.trigger, ctx);
                if trial.decide(&obs) != c.decision {
                    break 'cycles;
                }
            }
            done = i;
        }
        if done == limit {
            return (trial, done);
        }
        // The copy answered one consultation too many: replay from the last checkpoint.
        let (from, mut p) = checkpoint;
        for i in from + 1..=done {
            for (c, q) in l2.consults.iter().zip(&l1.consults) {
                p.decide(&c.src.ahead(&q.src, i as f64).observation(c.trigger, ctx));
            }
        }
        (p, done)
    }

    /// How many iterations past the last start the state may be carried along its step
    /// (`dn` for the state, `dh` for the heads, `dl` for the log) without any two positions
    /// changing order or a positive count reaching zero, from the first of the three starts
    /// on; `i64::MAX` when nothing limits it.
    fn reach(&self, dn: &[f64], dh: &[f64], dl: &[f64], mem: f64) -> i64 {
        let s2 = &self.snaps[2];
        // Positions as lines a + b·i over the iterations i (0: the one from the last start):
        // each iteration compares the positions at its start, at its end and along its log.
        let mut lines: Vec<(f64, f64)> = vec![(0.0, 0.0), (mem, 0.0)];
        let pos = (s2.nums.iter().zip(dn).zip(&s2.kinds))
            .filter(|(_, &k)| k == Num::Pos)
            .map(|((&a, &b), _)| (a, b))
            .chain(s2.heads.iter().zip(dh).map(|(&a, &b)| (a, b)));
        for (a, b) in pos {
            lines.push((a, b));
            lines.push((a + b, b));
        }
        let logged = (s2.log_nums.iter().zip(dl).zip(&s2.log_kinds))
            .filter(|(_, &k)| k == Num::Pos)
            .map(|((&a, &b), _)| (a + b, b));
        lines.extend(logged);
        // Order at i = −2 (the first of the three starts); the first change of order is
        // between neighbours.
        let at = |l: &(f64, f64)| l.0 - 2.0 * l.1;
        lines.sort_by(|p, q| at(p).total_cmp(&at(q)).then(p.1.total_cmp(&q.1)));
        let tol = 1e-9 * mem.max(1.0);
        let mut limit = i64::MAX;
        for w in lines.windows(2) {
            let (p, q) = (w[0], w[1]);
            let gap = at(&q) - at(&p);
            let closing = p.1 - q.1;
            if gap <= tol {
                if closing.abs() > 1e-12 * mem.max(1.0) {
                    return -1; // tied positions moving apart: not one region
                }
                continue;
            }
            if closing > 0.0 {
                // They meet at i = −2 + gap / closing; the last iteration jumped over
                // must end a whole iteration before.
                let meet = -2.0 + gap / closing;
                limit = limit.min(meet.floor() as i64 - 2);
            }
        }
        // Positive counts stay positive (the state at start i, the log of iteration i).
        let plus = (s2.nums.iter().zip(dn).zip(&s2.kinds))
            .chain(s2.log_nums.iter().zip(dl).zip(&s2.log_kinds))
            .filter(|(_, &k)| k == Num::Plus);
        for ((&a, &b), _) in plus {
            if b < 0.0 && a > 0.0 {
                limit = limit.min((a / -b).floor() as i64 - 2);
            }
        }
        limit
    }

    /// How many round records one iteration along the drift closes.
    pub fn records_per_iteration(&self) -> usize {
        self.snaps[2].log.recs.len()
    }

    /// Append the round records of the `n` iterations jumped over to `out`.
    pub fn records(&self, n: u64, out: &mut Vec<RoundRecord>) {
        let (l1, l2) = (&self.snaps[1].log, &self.snaps[2].log);
        out.reserve(n as usize * l2.recs.len());
        // (The steps once, rather than per record.)
        let lines: Vec<(RecSrc, RecSrc)> = (l2.recs.iter().zip(&l1.recs))
            .map(|(r, p)| (*r, r.step_from(p)))
            .collect();
        for i in 1..=n {
            let i = i as f64;
            out.extend(lines.iter().map(|(r, d)| r.along(d, i).record(0)));
        }
    }

    /// Carry the state `n` iterations along its step from the last start.
    pub fn land(&mut self, f: &mut Fluid, lv: &mut LoopVars, n: u64) {
        let s2 = &self.snaps[2];
        let s1 = &self.snaps[1];
        let mut j = 0;
        state_nums(f, lv, &mut |x, k| {
            *x = if k == Num::Fixed {
                s2.nums[j]
            } else {
                s2.nums[j] + n as f64 * (s2.nums[j] - s1.nums[j])
            };
            j += 1;
        });
        f.version += 1;
        self.clear();
    }
}

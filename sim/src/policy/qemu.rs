//! QEMU's convergence machinery and the policies built on it: the downtime-limit rule,
//! auto-converge (vCPU throttling), dirty-limit, the stepped downtime ramp of OpenStack Nova /
//! KubeVirt, and the switch to post-copy.

use super::*;

/// QEMU's pre-copy rule: a bandwidth measured over ~100 ms windows sets a threshold
/// (bandwidth × downtime-limit); when the pending estimate falls below it the dirty log is
/// synced, and if the exact pending amount is still below it the VM is stopped. With
/// auto-converge or dirty-limit, every sync more than a second after the last evaluation checks
/// whether the guest dirtied more than `throttle_trigger_pct` % of what was sent in the period;
/// the second such period (counted, then reset) throttles the guest.
#[derive(Clone)]
pub struct Qemu {
    spec: QemuSpec,
    vcpus: u32,
    window_start_ns: u64,
    window_start_bytes: u64,
    bandwidth_bps: f64,
    /// Downtime limit in force (the ramp changes it).
    limit_ms: f64,
    period_start_ns: u64,
    period_start_bytes: u64,
    period_dirty_pages: u64,
    high_count: u32,
    throttle_pct: u8,
    dirty_limited: bool,
    /// Where the bandwidth window stood at the last three syncs, as (ns, bytes) before the
    /// sync: at a fixed point of the migration the window repeats every iteration or, with
    /// an odd number of window lengths per iteration, every other one.
    window_at_syncs: [Option<(u64, u64)>; 3],
}

impl Qemu {
    pub fn new(spec: QemuSpec, vcpus: u32) -> Self {
        Qemu {
            limit_ms: spec.downtime_limit_ms,
            spec,
            vcpus: vcpus.max(1),
            window_start_ns: 0,
            window_start_bytes: 0,
            bandwidth_bps: 0.0,
            period_start_ns: 0,
            period_start_bytes: 0,
            period_dirty_pages: 0,
            high_count: 0,
            throttle_pct: 0,
            dirty_limited: false,
            window_at_syncs: [None; 3],
        }
    }

    pub fn set_limit_ms(&mut self, ms: f64) {
        self.limit_ms = ms;
    }

    pub fn threshold_bytes(&self) -> f64 {
        self.bandwidth_bps / 8.0 * self.limit_ms / 1e3
    }

    pub fn bandwidth_bps(&self) -> f64 {
        self.bandwidth_bps
    }

    /// A bandwidth window of `dt_ns` is complete. Checks come every `check_ms`, which
    /// usually divides the window, so a window closes at a check exactly its length after
    /// the one that opened it; a microsecond of slack keeps a clock that counts in fractions
    /// of a nanosecond from deferring it to the next check.
    fn window_done(&self, dt_ns: u64) -> bool {
        dt_ns as f64 + 1e3 >= self.spec.window_ms * 1e6
    }

    fn update_bandwidth(&mut self, obs: &Observation, force: bool) {
        let dt = obs.elapsed_ns.saturating_sub(self.window_start_ns);
        if self.window_done(dt) || (force && dt > 0 && self.bandwidth_bps == 0.0) {
            let bytes = obs.total_bytes_sent - self.window_start_bytes;
            self.bandwidth_bps = bytes as f64 * 8e9 / dt as f64;
            self.window_start_ns = obs.elapsed_ns;
            self.window_start_bytes = obs.total_bytes_sent;
        }
    }

    /// QEMU's `migration_trigger_throttle`, run at every sync.
    fn after_sync_throttle(&mut self, obs: &Observation) -> Option<Decision> {
        self.period_dirty_pages += obs.last_round.map_or(0, |r| r.pages_dirtied);
        if obs.elapsed_ns <= self.period_start_ns + 1_000_000_000 {
            return None;
        }
        let xfer = obs.total_bytes_sent - self.period_start_bytes;
        let dirty = self.period_dirty_pages * obs.page_size;
        let threshold = xfer as f64 * self.spec.throttle_trigger_pct / 100.0;
        self.period_start_ns = obs.elapsed_ns;
        self.period_start_bytes = obs.total_bytes_sent;
        self.period_dirty_pages = 0;
        if !(self.spec.auto_converge || self.spec.dirty_limit) || (dirty as f64) <= threshold {
            return None;
        }
        self.high_count += 1;
        if self.high_count < 2 {
            return None;
        }
        self.high_count = 0;
        if self.spec.auto_converge {
            let next = if self.throttle_pct == 0 {
                self.spec.throttle_initial_pct
            } else {
                let inc = if self.spec.tailslow {
                    // Aim at the CPU share that would bring the dirty rate down to the threshold.
                    let cpu_now = 100.0 - self.throttle_pct as f64;
                    let cpu_ideal = cpu_now * (threshold / dirty as f64);
                    (cpu_now - cpu_ideal).clamp(0.0, self.spec.throttle_increment_pct as f64) as u8
                } else {
                    self.spec.throttle_increment_pct
                };
                self.throttle_pct.saturating_add(inc)
            };
            self.throttle_pct = next.min(self.spec.max_throttle_pct);
            Some(Decision::Throttle(self.throttle_pct))
        } else if !self.dirty_limited {
            self.dirty_limited = true;
            let per_vcpu_pps = self.spec.vcpu_dirty_limit_mbps * 1e6 / obs.page_size as f64;
            Some(Decision::LimitDirtyRate(per_vcpu_pps * self.vcpus as f64))
        } else {
            None
        }
    }
}

impl Qemu {
    /// The first tick `j ≥ from` whose check could fire with bandwidth `bw`, allowing a page
    /// and a millionth of the threshold for rounding (u64::MAX: none up to `f.max_ticks`).
    fn first_possible_sync(&self, obs: &Observation, f: &SteadyTicks, bw: f64, from: u64) -> u64 {
        let thr = bw / 8.0 * self.limit_ms / 1e3;
        let wire = obs.page_wire_bytes.max(1) as f64;
        let below = thr * (1.0 + 1e-6) / wire + 1.0;
        let r0 = obs.remaining_pages as f64 - 0.5;
        if r0 < below {
            return from;
        }
        // The estimate only falls: bisect for the first tick under the threshold.
        let fires = |j: u64| r0 - (f.sent_at)(j) < below;
        let (mut lo, mut hi) = (from.max(1), f.max_ticks);
        if lo > hi || !fires(hi) {
            return u64::MAX;
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if fires(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// The first tick `j ≥ from` at which the bandwidth window (started at `ws`) closes.
    fn next_window_close(&self, obs: &Observation, f: &SteadyTicks, ws: u64, from: u64) -> u64 {
        let w = self.spec.window_ms * 1e6;
        let need = ws as f64 + w - obs.elapsed_ns as f64;
        let j = (need / f.period_ns.max(1) as f64).ceil().max(0.0) as u64;
        let mut j = j.max(from);
        // `update_bandwidth` compares integer nanoseconds: settle the boundary exactly.
        while j > from && self.window_done(f.elapsed_at(obs, j - 1).saturating_sub(ws)) {
            j -= 1;
        }
        while !self.window_done(f.elapsed_at(obs, j).saturating_sub(ws)) {
            j += 1;
        }
        j
    }
}

impl Policy for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }
    fn repeat_cycles(&mut self, _obs: &Observation, cycle: &Cycle) -> u64 {
        // Throttling rules count one-second periods across iterations: no jumping with them.
        if self.spec.auto_converge || self.spec.dirty_limit {
            return 0;
        }
        // The bandwidth window moves on with the clock, provided it stands where it stood a
        // cycle ago; with an odd number of checks per cycle it may close on alternate checks
        // from one cycle to the next, and then only an even number of cycles is skipped. A
        // nanosecond is allowed for the clock's rounding.
        if cycle.syncs != 1 {
            return 0;
        }
        let same = |a: Option<(u64, u64)>, b: Option<(u64, u64)>| match (a, b) {
            (Some(a), Some(b)) => a.0.abs_diff(b.0) <= 1 && a.1 == b.1,
            _ => false,
        };
        let [w0, w1, w2] = self.window_at_syncs;
        let n = if same(w1, w2) {
            cycle.max_repeats
        } else if same(w0, w2) {
            cycle.max_repeats & !1
        } else {
            0
        };
        self.window_start_ns += n * cycle.period_ns;
        self.window_start_bytes += n * cycle.bytes;
        self.period_start_ns += n * cycle.period_ns;
        self.period_start_bytes += n * cycle.bytes;
        n
    }
    fn skip_ticks(&mut self, obs: &Observation, f: &SteadyTicks) -> u64 {
        if f.max_ticks == 0 || obs.trigger != Trigger::Tick {
            return 0;
        }
        // Bandwidth windows close every so many ticks; between closes the threshold is fixed
        // and the estimate falls linearly, so the first tick that could sync is found in
        // closed form. From the second close on, the window holds only steady sending and
        // the bandwidth no longer changes.
        let (mut ws, mut wb, mut bw) = (
            self.window_start_ns,
            self.window_start_bytes,
            self.bandwidth_bps,
        );
        let mut j = 1u64;
        let mut closes = 0;
        loop {
            let close = self.next_window_close(obs, f, ws, j);
            let fire = self.first_possible_sync(obs, f, bw, j);
            if closes >= 2 {
                // Steady: later closes only move the window along.
                let k = fire.saturating_sub(1).min(f.max_ticks);
                if close <= k {
                    let step =
                        self.next_window_close(obs, f, f.elapsed_at(obs, close), close + 1) - close;
                    let last = close + (k - close) / step.max(1) * step.max(1);
                    let (e, b) = (f.elapsed_at(obs, last), f.bytes_at(obs, last));
                    ws = e;
                    wb = b;
                }
                self.window_start_ns = ws;
                self.window_start_bytes = wb;
                self.bandwidth_bps = bw;
                return k;
            }
            if fire < close || close > f.max_ticks {
                let k = fire.saturating_sub(1).min(f.max_ticks);
                self.window_start_ns = ws;
                self.window_start_bytes = wb;
                self.bandwidth_bps = bw;
                return k;
            }
            // The window closes at tick `close` (and the check there uses the new figure).
            let (e, b) = (f.elapsed_at(obs, close), f.bytes_at(obs, close));
            let new_bw = b.saturating_sub(wb) as f64 * 8e9 / e.saturating_sub(ws).max(1) as f64;
            if self.first_possible_sync(obs, f, new_bw, close) == close {
                self.window_start_ns = ws;
                self.window_start_bytes = wb;
                self.bandwidth_bps = bw;
                return close - 1;
            }
            ws = e;
            wb = b;
            bw = new_bw;
            j = close + 1;
            closes += 1;
        }
    }
    fn tick_ns(&self) -> Option<u64> {
        Some((self.spec.check_ms * 1e6).round().max(1.0) as u64)
    }
    fn max_bandwidth_bps(&self) -> Option<f64> {
        self.spec.max_bandwidth.map(|b| b.0)
    }
    fn decide(&mut self, obs: &Observation) -> Decision {
        match obs.trigger {
            Trigger::Start => Decision::Continue,
            Trigger::Tick | Trigger::RoundEnd => {
                self.update_bandwidth(obs, obs.trigger == Trigger::RoundEnd);
                let estimate = (obs.remaining_pages * obs.page_wire_bytes) as f64;
                if obs.remaining_pages == 0 || estimate < self.threshold_bytes() {
                    Decision::Sync
                } else {
                    Decision::Continue
                }
            }
            Trigger::AfterSync => {
                self.window_at_syncs = [
                    self.window_at_syncs[1],
                    self.window_at_syncs[2],
                    Some((
                        obs.elapsed_ns.saturating_sub(self.window_start_ns),
                        obs.total_bytes_sent.saturating_sub(self.window_start_bytes),
                    )),
                ];
                let throttle = self.after_sync_throttle(obs);
                let pending = obs.pending_bytes();
                let threshold = self.threshold_bytes();
                if pending == 0 || (pending as f64) < threshold {
                    Decision::Stop(
                        StopReason::Converged,
                        format!(
                            "pending {} B < {:.0} B (bandwidth {:.1} Mbit/s × {} ms)",
                            pending,
                            threshold,
                            self.bandwidth_bps / 1e6,
                            self.limit_ms
                        ),
                    )
                } else {
                    throttle.unwrap_or(Decision::Continue)
                }
            }
        }
    }
}

/// OpenStack Nova's stepped downtime (KubeVirt works alike): the downtime limit starts at
/// `max/steps` and rises in `steps` equal steps to `max`, one step every `delay_s_per_gib` ×
/// memory GiB seconds; the migration is aborted when it exceeds the completion timeout, or when
/// the pending amount has not reached a new low for `progress_timeout_s`.
#[derive(Clone)]
pub struct DowntimeRamp {
    spec: DowntimeRampSpec,
    qemu: Qemu,
    best_pending: u64,
    best_at_ns: u64,
}

/// The ends of the stretches between `kinks` (increasing, in ticks) over ticks 1..=`k`, in order
/// and each once: 1, the ticks either side of each kink inside, and `k`. The floors and the
/// ceilings of increasing kinks each increase, so a value not above the last one given was
/// given already (two kinks within one tick repeat a value): no list to sort.
fn stretch_ends(kinks: &[f64], k: u64) -> impl Iterator<Item = u64> + '_ {
    let mut last = None;
    std::iter::once(1)
        .chain(
            (kinks.iter())
                .filter(move |&&x| x > 1.0 && x < k as f64)
                .flat_map(|&x| [x.floor() as u64, x.ceil() as u64]),
        )
        .chain(std::iter::once(k))
        .filter(move |&b| {
            let new = last.is_none_or(|l| b > l);
            if new {
                last = Some(b);
            }
            new
        })
}

impl DowntimeRamp {
    pub fn new(spec: DowntimeRampSpec, vcpus: u32) -> Self {
        let q = QemuSpec {
            downtime_limit_ms: spec.downtime_ms / spec.steps.max(1) as f64,
            ..QemuSpec::default()
        };
        DowntimeRamp {
            spec,
            qemu: Qemu::new(q, vcpus),
            best_pending: u64::MAX,
            best_at_ns: 0,
        }
    }

    /// Record the new lows of the pending set over ticks 1..=`k` as the checks there would.
    /// Pending (left + dirtied) is concave between the ticks where the pages a tick carries
    /// change (`f.kinks`), so over each such stretch a new low can only come at its end, and
    /// then the check that records it is the first of the stretch whose pending (rounded) is
    /// as low: the ticks at or below a value form a suffix of a stretch that starts higher.
    fn new_lows(&mut self, obs: &Observation, f: &SteadyTicks, k: u64) {
        let pending = |j: u64| {
            let (e, left, _) = f.at(obs, j);
            (left + (f.dirty_at)(j), e)
        };
        let ends = || stretch_ends(f.kinks, k);
        // Usually each tick sends more pages than the guest dirties (dirtying slows as it
        // goes, so the first tick dirties most): then every check is a new low, the last one
        // included, whatever rounding does (a page either way for the pages left and for the
        // dirtied ones).
        let sent_step = |j: u64| (f.sent_at)(j + 1) - (f.sent_at)(j);
        let least_sent = ends()
            .flat_map(|b| [b.saturating_sub(1), b.min(k - 1)])
            .map(sent_step)
            .fold(f64::INFINITY, f64::min);
        let most_dirtied = (f.dirty_at)(1).saturating_sub(obs.dirty_pages) as f64 + 1.0;
        if least_sent > most_dirtied + 2.0 {
            let (p, e) = pending(k);
            if p < self.best_pending {
                self.best_pending = p;
                self.best_at_ns = e;
            }
            return;
        }
        // Otherwise the lowest pending over the ticks is at one of the stretch ends: find the
        // first end that reaches it, then the first tick of its stretch that does.
        let (mut low, mut prev, mut at) = (self.best_pending, 0, None);
        for b in ends() {
            let (p, _) = pending(b);
            if p < low {
                low = p;
                at = Some((prev, b));
            }
            prev = b;
        }
        let Some((a, b)) = at else {
            return;
        };
        let (mut lo, mut hi) = (a + 1, b);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pending(mid).0 <= low {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        self.best_pending = low;
        self.best_at_ns = pending(lo).1;
    }

    /// The limit in force at `elapsed_ns` for a VM of `mem_gib`.
    pub fn limit_at(&self, elapsed_ns: u64, mem_gib: f64) -> f64 {
        let steps = self.spec.steps.max(1) as f64;
        let base = self.spec.downtime_ms / steps;
        let offset = (self.spec.downtime_ms - base) / steps;
        let delay_ns = self.spec.delay_s_per_gib * mem_gib * 1e9;
        let i = if delay_ns <= 0.0 {
            steps
        } else {
            (elapsed_ns as f64 / delay_ns).floor().min(steps)
        };
        base + offset * i
    }
}

impl Policy for DowntimeRamp {
    fn name(&self) -> &'static str {
        "downtime-ramp"
    }
    fn tick_ns(&self) -> Option<u64> {
        self.qemu.tick_ns()
    }
    fn repeat_cycles(&mut self, obs: &Observation, cycle: &Cycle) -> u64 {
        // At a fixed point the pending set makes no new lows: stop jumping before the next
        // step of the limit and before either timeout.
        let gib = obs.mem_bytes as f64 / (1u64 << 30) as f64;
        let steps = self.spec.steps.max(1) as f64;
        let delay_ns = self.spec.delay_s_per_gib * gib * 1e9;
        let mut deadline = f64::INFINITY;
        if delay_ns > 0.0 {
            let i = (obs.elapsed_ns as f64 / delay_ns).floor();
            // A cycle that saw the limit step up is no pattern for the cycles after it.
            let cycle_start = obs.elapsed_ns as f64 - cycle.period_ns as f64;
            if i >= 1.0 && cycle_start < i.min(steps) * delay_ns {
                return 0;
            }
            if i < steps {
                deadline = deadline.min((i + 1.0) * delay_ns);
            }
        }
        let completion_ns = self.spec.completion_timeout_s_per_gib * gib * 1e9;
        if completion_ns > 0.0 {
            deadline = deadline.min(completion_ns);
        }
        let progress_ns = self.spec.progress_timeout_s * 1e9;
        if progress_ns > 0.0 {
            deadline = deadline.min(self.best_at_ns as f64 + progress_ns);
        }
        let n = cycle.repeats_before(obs, deadline);
        if n == 0 {
            return 0;
        }
        let capped = Cycle {
            max_repeats: n,
            ..*cycle
        };
        self.qemu.repeat_cycles(obs, &capped)
    }
    fn skip_ticks(&mut self, obs: &Observation, f: &SteadyTicks) -> u64 {
        // Skip only ticks that see the same downtime limit, cannot hit the completion
        // timeout, and cannot hit the progress timeout even if the pending set made no
        // progress. Pending (left + dirtied) is concave over a steady stretch, so its lowest
        // value over the skipped ticks is at one end: only the last can be a new low.
        let gib = obs.mem_bytes as f64 / (1u64 << 30) as f64;
        let limit = self.limit_at(obs.elapsed_ns, gib);
        let completion_ns = self.spec.completion_timeout_s_per_gib * gib * 1e9;
        let progress_ns = self.spec.progress_timeout_s * 1e9;
        let ok = |j: u64| {
            let e = f.elapsed_at(obs, j);
            self.limit_at(e, gib) == limit
                && (completion_ns <= 0.0 || e as f64 <= completion_ns)
                && (progress_ns <= 0.0 || (e - self.best_at_ns) as f64 <= progress_ns)
        };
        // Largest j ≤ max_ticks with ok(j) (ok holds for a prefix of ticks).
        let (mut lo, mut hi) = (0u64, f.max_ticks);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if ok(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        if lo == 0 {
            return 0;
        }
        let capped = SteadyTicks {
            period_ns: f.period_ns,
            max_ticks: lo,
            bytes_per_tick: f.bytes_per_tick,
            sent_at: f.sent_at,
            dirty_at: f.dirty_at,
            kinks: f.kinks,
        };
        self.qemu.set_limit_ms(limit);
        let k = self.qemu.skip_ticks(obs, &capped);
        if k > 0 {
            self.new_lows(obs, f, k);
        }
        k
    }
    fn decide(&mut self, obs: &Observation) -> Decision {
        let gib = obs.mem_bytes as f64 / (1u64 << 30) as f64;
        self.qemu.set_limit_ms(self.limit_at(obs.elapsed_ns, gib));
        let pending = obs.pending_pages();
        if obs.trigger != Trigger::Start && pending < self.best_pending {
            self.best_pending = pending;
            self.best_at_ns = obs.elapsed_ns;
        }
        let completion_ns = self.spec.completion_timeout_s_per_gib * gib * 1e9;
        if completion_ns > 0.0 && obs.elapsed_ns as f64 > completion_ns {
            return Decision::Cancel(format!(
                "completion timeout ({} s per GiB) exceeded",
                self.spec.completion_timeout_s_per_gib
            ));
        }
        let progress_ns = self.spec.progress_timeout_s * 1e9;
        if progress_ns > 0.0 && (obs.elapsed_ns - self.best_at_ns) as f64 > progress_ns {
            return Decision::Cancel(format!(
                "no progress for {} s (stalled)",
                self.spec.progress_timeout_s
            ));
        }
        self.qemu.decide(obs)
    }
}

/// Pre-copy under QEMU's rule, switching to post-copy after `precopy_rounds` iterations, or as
/// soon as an iteration dirtied at least as many pages as it sent (the target cannot be met).
#[derive(Clone)]
pub struct PostCopy {
    spec: PostCopySpec,
    qemu: Qemu,
}

impl PostCopy {
    pub fn new(spec: PostCopySpec, vcpus: u32) -> Self {
        let q = QemuSpec {
            downtime_limit_ms: spec.downtime_limit_ms,
            ..QemuSpec::default()
        };
        PostCopy {
            spec,
            qemu: Qemu::new(q, vcpus),
        }
    }
}

impl Policy for PostCopy {
    fn name(&self) -> &'static str {
        "postcopy"
    }
    fn tick_ns(&self) -> Option<u64> {
        self.qemu.tick_ns()
    }
    fn skip_ticks(&mut self, obs: &Observation, f: &SteadyTicks) -> u64 {
        // Ticks only run QEMU's rule; the switch is considered after syncs.
        self.qemu.skip_ticks(obs, f)
    }
    fn decide(&mut self, obs: &Observation) -> Decision {
        let d = self.qemu.decide(obs);
        // QEMU's rule runs the pre-copy; its syncs (round ends or mid-round) are where the
        // switch is considered. `obs.round` right after a sync counts the finished iterations.
        if obs.trigger != Trigger::AfterSync || matches!(d, Decision::Stop(..)) {
            return d;
        }
        if obs.round >= self.spec.precopy_rounds {
            return Decision::PostCopy(format!(
                "switched to post-copy after {} pre-copy rounds",
                obs.round
            ));
        }
        if self.spec.switch_on_no_progress {
            if let Some(r) = obs
                .last_round
                .filter(|r| r.round > 0 && r.pages_dirtied >= r.pages_sent)
            {
                return Decision::PostCopy(format!(
                    "switched to post-copy: round {} dirtied as much as it sent",
                    r.round
                ));
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::stretch_ends;
    use rand::{Rng, SeedableRng};

    #[test]
    fn stretch_ends_are_the_sorted_distinct_ends() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(11);
        for case in 0..2000 {
            let k = rng.gen_range(1..60u64);
            // Increasing kinks, often several within one tick, some on whole ticks.
            let mut x = rng.gen_range(-2.0..3.0f64);
            let mut kinks = Vec::new();
            for _ in 0..rng.gen_range(0..12) {
                x += if rng.gen_bool(0.2) {
                    rng.gen_range(1..4) as f64
                } else {
                    rng.gen_range(0.01..2.5)
                };
                if rng.gen_bool(0.1) && x.ceil() > kinks.last().copied().unwrap_or(f64::MIN) {
                    x = x.ceil();
                }
                kinks.push(x);
            }
            let mut want = vec![1, k];
            for &x in kinks.iter().filter(|&&x| x > 1.0 && x < k as f64) {
                want.push(x.floor() as u64);
                want.push(x.ceil() as u64);
            }
            want.sort_unstable();
            want.dedup();
            let got: Vec<u64> = stretch_ends(&kinks, k).collect();
            assert_eq!(got, want, "case {case}: k {k}, kinks {kinks:?}");
        }
    }
}

//! migsim's own policy: find the floor of the pending set and stop on it.
//!
//! Pre-copy shrinks the set of pages a stop would have to send until the guest re-dirties pages
//! as fast as they go out; from then on more iterations only cost bytes. The floor depends on
//! the writable working set and the write rate, which this policy does not need to know: it
//! watches the pending set itself.
//!
//! * After the first full pass it syncs the dirty log often (every `sync_every_ms`), so pages
//!   re-dirtied ahead of the sender go out in the same pass (as QEMU does near convergence),
//!   and it sees the pending set at a fine grain.
//! * It keeps the smallest pending set seen. When the sender has sent as many pages as the
//!   pending set held at its last material improvement (by `min_gain`), over at least
//!   `patience_syncs` syncs, without another one, one more pass cannot materially shrink the
//!   final set: the floor is reached.
//! * On the floor it stops at the next sync whose pending set is within `floor_tolerance` of the
//!   minimum (the set fluctuates around the floor), and after one more pass's worth of pages at
//!   the latest.
//! * It also stops when nothing is pending, when the remainder fits an optional budget, or at
//!   `max_rounds` iterations (forced).

use super::*;

#[derive(Clone, Debug, PartialEq)]
pub struct Adaptive {
    spec: AdaptiveSpec,
    /// Smallest pending set seen at a sync after the first pass.
    best: u64,
    /// Pending set at the last material improvement, and pages sent by then.
    gain_ref: u64,
    sent_at_gain: u64,
    /// Syncs since the last material improvement.
    syncs_since_gain: u32,
    /// Pages sent when the floor was detected.
    floor_since: Option<u64>,
}

impl Adaptive {
    pub fn new(spec: AdaptiveSpec) -> Self {
        Adaptive {
            spec,
            best: u64::MAX,
            gain_ref: u64::MAX,
            sent_at_gain: 0,
            syncs_since_gain: 0,
            floor_since: None,
        }
    }
}

impl Policy for Adaptive {
    fn name(&self) -> &'static str {
        "adaptive"
    }

    fn tick_ns(&self) -> Option<u64> {
        Some((self.spec.sync_every_ms * 1e6).round().max(1.0) as u64)
    }

    fn skip_ticks(&mut self, obs: &Observation, f: &SteadyTicks) -> u64 {
        // During the first pass every tick is answered Continue and changes nothing.
        if obs.trigger == Trigger::Tick && obs.round == 0 {
            f.max_ticks
        } else {
            0
        }
    }

    fn repeat_cycles(&mut self, obs: &Observation, cycle: &Cycle) -> u64 {
        // At a fixed point every sync sees the same pending set, which just got `Continue`:
        // no new gain, no new low, one more sync without gain per cycle. What can change the
        // answer is the pages sent since the last gain (floor detection), since the floor
        // (stop after one more pass), and the iteration cap: stop before the first cycle
        // where any of them fires.
        if obs.trigger != Trigger::AfterSync || cycle.pages == 0 || cycle.syncs == 0 {
            return 0;
        }
        let sent = obs.total_pages_sent;
        let per = cycle.pages;
        // First cycle i ≥ 1 whose sync reaches `need` pages since `from`.
        let reach = |from: u64, need: u64| -> u64 {
            let have = sent.saturating_sub(from);
            if have >= need {
                1
            } else {
                (need - have).div_ceil(per).max(1)
            }
        };
        let mut fire = u64::MAX;
        match self.floor_since {
            None => {
                let by_pages = reach(self.sent_at_gain, self.gain_ref.max(1));
                let by_syncs = (self.spec.patience_syncs as u64)
                    .saturating_sub(self.syncs_since_gain as u64)
                    .max(1);
                fire = fire.min(by_pages.max(by_syncs));
            }
            Some(since) => fire = fire.min(reach(since, self.best.max(1))),
        }
        let rounds_left = self.spec.max_rounds.saturating_sub(obs.round) as u64;
        fire = fire.min(rounds_left / cycle.syncs as u64);
        let n = fire.saturating_sub(1).min(cycle.max_repeats);
        self.syncs_since_gain = self
            .syncs_since_gain
            .saturating_add(n.min(u32::MAX as u64) as u32);
        n
    }

    fn decide(&mut self, obs: &Observation) -> Decision {
        match obs.trigger {
            Trigger::Start => return Decision::Continue,
            // Let the first full pass finish; afterwards harvest often.
            Trigger::Tick if obs.round == 0 => return Decision::Continue,
            Trigger::Tick | Trigger::RoundEnd => return Decision::Sync,
            Trigger::AfterSync => {}
        }
        self.after_sync(&DriftSync {
            pending_pages: obs.pending_pages(),
            total_pages_sent: obs.total_pages_sent,
            round: obs.round,
            bandwidth_bps: obs.bandwidth_bps,
            page_wire_bytes: obs.page_wire_bytes,
        })
    }

    fn drift_syncs(
        &mut self,
        pattern: &[(Trigger, Decision)],
        sync_at: &dyn Fn(u64) -> DriftSync,
        max: u64,
    ) -> Option<u64> {
        // Checks between syncs are answered `Sync` whatever they see (after the first
        // pass), so only the syncs need answering.
        let (last, checks) = pattern.split_last()?;
        let checks_sync = checks
            .iter()
            .all(|(t, d)| matches!(t, Trigger::Tick | Trigger::RoundEnd) && *d == Decision::Sync);
        if !checks_sync || *last != (Trigger::AfterSync, Decision::Continue) {
            return None;
        }
        for i in 1..=max {
            let s = sync_at(i);
            if s.round == 0 {
                return None;
            }
            let before = self.clone();
            if self.after_sync(&s) != Decision::Continue {
                *self = before;
                return Some(i - 1);
            }
        }
        Some(max)
    }
}

impl Adaptive {
    /// The answer at a sync.
    fn after_sync(&mut self, obs: &DriftSync) -> Decision {
        let pending = obs.pending_pages;
        if pending == 0 {
            return Decision::Stop(StopReason::Converged, "nothing left to send".into());
        }
        if let Some(budget) = self.spec.downtime_budget_ms {
            let bw = obs.bandwidth_bps.max(1.0);
            let est_ms = (pending * obs.page_wire_bytes) as f64 * 8e3 / bw;
            if est_ms <= budget {
                return Decision::Stop(
                    StopReason::Converged,
                    format!("remainder fits the {budget} ms budget ({est_ms:.1} ms)"),
                );
            }
        }
        if obs.round >= self.spec.max_rounds {
            return Decision::Stop(
                StopReason::Forced,
                format!("round limit {} reached", self.spec.max_rounds),
            );
        }
        let sent = obs.total_pages_sent;
        if self.gain_ref == u64::MAX
            || (pending as f64) < (1.0 - self.spec.min_gain) * self.gain_ref as f64
        {
            self.gain_ref = pending;
            self.sent_at_gain = sent;
            self.syncs_since_gain = 0;
            self.floor_since = None;
        } else {
            self.syncs_since_gain += 1;
        }
        self.best = self.best.min(pending);
        let Some(since) = self.floor_since else {
            if sent - self.sent_at_gain >= self.gain_ref.max(1)
                && self.syncs_since_gain >= self.spec.patience_syncs
            {
                self.floor_since = Some(sent);
                if pending as f64 <= self.best as f64 * (1.0 + self.spec.floor_tolerance) {
                    return self.stop_on_floor(pending);
                }
            }
            return Decision::Continue;
        };
        if pending as f64 <= self.best as f64 * (1.0 + self.spec.floor_tolerance)
            || sent - since >= self.best.max(1)
        {
            return self.stop_on_floor(pending);
        }
        Decision::Continue
    }

    fn stop_on_floor(&self, pending: u64) -> Decision {
        Decision::Stop(
            StopReason::Converged,
            format!(
                "pending set on its floor ({pending} pages; lowest seen {})",
                self.best
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// An observation after `round` syncs, with the figures a sync ahead shows.
    fn obs(trigger: Trigger, s: &DriftSync) -> Observation {
        Observation {
            trigger,
            elapsed_ns: s.round as u64 * 20_000_000,
            round: s.round,
            mem_bytes: 1 << 32,
            page_size: 4096,
            page_wire_bytes: s.page_wire_bytes,
            total_bytes_sent: s.total_pages_sent * s.page_wire_bytes,
            total_pages_sent: s.total_pages_sent,
            round_bytes_sent: 0,
            round_pages_sent: 0,
            round_elapsed_ns: 0,
            remaining_pages: s.pending_pages / 2,
            dirty_pages: s.pending_pages - s.pending_pages / 2,
            last_round: None,
            bandwidth_bps: s.bandwidth_bps,
            dirty_rate_pps: 0.0,
            throttle_pct: 0,
            vcpus: 2,
        }
    }

    #[test]
    fn answering_only_the_syncs_of_a_drift_matches_answering_every_check() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(11);
        let mut stopped = 0;
        for case in 0..2000 {
            let spec = AdaptiveSpec {
                min_gain: [0.0, 0.01, 0.05, 0.2][rng.gen_range(0..4)],
                floor_tolerance: [0.0, 0.02, 0.1][rng.gen_range(0..3)],
                patience_syncs: rng.gen_range(0..8),
                max_rounds: rng.gen_range(5..400),
                downtime_budget_ms: [None, Some(50.0), Some(500.0)][rng.gen_range(0..3)],
                ..AdaptiveSpec::default()
            };
            // A history of a few syncs, then a drift: pending and sent move along lines.
            let (p0, dp) = (rng.gen_range(0.0..1e6), rng.gen_range(-3000.0..3000.0));
            let (s0, ds) = (rng.gen_range(1e6..2e6), rng.gen_range(0.0..3000.0));
            let at = |i: u64| DriftSync {
                pending_pages: workloads::round_u64((p0 + dp * i as f64).max(0.0)),
                total_pages_sent: (s0 + ds * i as f64) as u64,
                round: 3 + i as u32,
                bandwidth_bps: 1e9,
                page_wire_bytes: 4104,
            };
            let mut a = Adaptive::new(spec);
            for i in 0..3u64 {
                let s = DriftSync {
                    pending_pages: rng.gen_range(0..2_000_000),
                    total_pages_sent: 1_000_000 + i * 1000,
                    round: i as u32 + 1,
                    ..at(0)
                };
                a.decide(&obs(Trigger::AfterSync, &s));
            }
            let max = rng.gen_range(1..500u64);
            let pattern = [
                (Trigger::Tick, Decision::Sync),
                (Trigger::AfterSync, Decision::Continue),
            ];
            let mut fast = a.clone();
            let done = fast
                .drift_syncs(&pattern, &at, max)
                .expect("adaptive answers syncs");
            // Every check and sync, one by one, until the first answer that differs.
            let mut slow = a.clone();
            let mut n = 0;
            for i in 1..=max {
                let before = slow.clone();
                let s = at(i);
                let tick = slow.decide(&obs(Trigger::Tick, &s));
                let sync = slow.decide(&obs(Trigger::AfterSync, &s));
                if tick != Decision::Sync || sync != Decision::Continue {
                    slow = before;
                    break;
                }
                n = i;
            }
            assert_eq!(done, n, "case {case}: answered syncs");
            assert_eq!(fast, slow, "case {case}: state after them");
            stopped += (done < max) as u32;
        }
        // Both ways out occur: drifts cut short by an answer, and drifts answered in full.
        assert!(
            (200..1800).contains(&stopped),
            "{stopped} of 2000 stopped early"
        );
    }
}

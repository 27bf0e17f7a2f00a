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

#[derive(Clone)]
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
        let pending = obs.pending_pages();
        if pending == 0 {
            return Decision::Stop(StopReason::Converged, "nothing left to send".into());
        }
        if let Some(budget) = self.spec.downtime_budget_ms {
            let bw = obs.bandwidth_bps.max(1.0);
            let est_ms = obs.pending_bytes() as f64 * 8e3 / bw;
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
}

impl Adaptive {
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

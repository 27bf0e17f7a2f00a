//! migsim's own policy: estimate the writable working set and the write rate online, and stop
//! when one more iteration cannot materially shrink what the blackout must send.
//!
//! Model: uniform writes at rate D over a working set of W pages touch W(1 − e^(−D·T/W))
//! distinct pages in time T. After iteration k the pending set has p_k pages; sending it takes
//! T = p_k · page / bandwidth, after which the pending set is predicted to be
//! p_{k+1} = Ŵ(1 − e^(−D̂·T/Ŵ)). Estimates: D̂ from the shortest recent iteration (the linear
//! regime, where distinct ≈ writes), Ŵ as the largest dirty set seen (a lower bound that the long
//! first pass makes tight). Stop when p_{k+1} > (1 − min_gain) · p_k, when the pending set
//! stops shrinking for real, when the remainder fits an optional budget, or at `max_rounds`.

use super::*;

pub struct Adaptive {
    spec: AdaptiveSpec,
    w_hat: f64,
    d_hat: f64,
    prev_pending: Option<u64>,
}

impl Adaptive {
    pub fn new(spec: AdaptiveSpec) -> Self {
        Adaptive {
            spec,
            w_hat: 0.0,
            d_hat: 0.0,
            prev_pending: None,
        }
    }

    /// Predicted pending pages after one more iteration that sends `pending` pages.
    pub fn predict_next(&self, pending: u64, page_wire: u64, bw_bps: f64) -> f64 {
        if self.w_hat <= 0.0 {
            return 0.0;
        }
        let t = pending as f64 * page_wire as f64 * 8.0 / bw_bps;
        self.w_hat * (1.0 - (-self.d_hat * t / self.w_hat).exp())
    }
}

impl Policy for Adaptive {
    fn name(&self) -> &'static str {
        "adaptive"
    }
    fn decide(&mut self, obs: &Observation) -> Decision {
        if obs.trigger != Trigger::RoundEnd {
            return Decision::Continue;
        }
        let pending = obs.pending_pages();
        if pending == 0 {
            return Decision::Stop(StopReason::Converged, "nothing left to send".into());
        }
        let bw = if obs.round_elapsed_ns > 0 && obs.round_bytes_sent > 0 {
            obs.round_bytes_sent as f64 * 8e9 / obs.round_elapsed_ns as f64
        } else {
            obs.bandwidth_bps
        };
        if let Some(budget) = self.spec.downtime_budget_ms {
            let est_ms = obs.pending_bytes() as f64 * 8e3 / bw;
            if est_ms <= budget {
                return Decision::Stop(
                    StopReason::Converged,
                    format!("remainder fits the {budget} ms budget ({est_ms:.1} ms)"),
                );
            }
        }
        // Update the working-set and rate estimates from the iteration that just ended.
        self.w_hat = self.w_hat.max(obs.dirty_pages as f64);
        if obs.round_elapsed_ns > 0 {
            let rate = obs.dirty_pages as f64 * 1e9 / obs.round_elapsed_ns as f64;
            // The shortest iterations are the least saturated: keep the highest rate seen
            // recently, decaying old values so phase changes are followed.
            self.d_hat = rate.max(self.d_hat * 0.5);
        }
        let prev = self.prev_pending.replace(pending);
        if obs.round + 1 >= self.spec.max_rounds {
            return Decision::Stop(
                StopReason::Forced,
                format!("round limit {} reached", self.spec.max_rounds),
            );
        }
        if let Some(p) = prev {
            if pending as f64 > (1.0 - self.spec.min_gain) * p as f64 {
                return Decision::Stop(
                    StopReason::Converged,
                    format!("pending set stopped shrinking ({p} → {pending} pages)"),
                );
            }
        }
        let next = self.predict_next(pending, obs.page_wire_bytes, bw);
        if next > (1.0 - self.spec.min_gain) * pending as f64 {
            return Decision::Stop(
                StopReason::Converged,
                format!(
                    "one more round would leave ~{next:.0} of {pending} pages (gain < {:.0} %)",
                    self.spec.min_gain * 100.0
                ),
            );
        }
        Decision::Continue
    }
}

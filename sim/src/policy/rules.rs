//! The stop rules of real systems. Defaults and sources: see each spec type in the parent module
//! and REFERENCE notes in the README's policy table.

use super::*;

/// Pure stop-and-copy (optionally after one live pass).
pub struct StopAndCopy {
    spec: StopAndCopySpec,
}

impl StopAndCopy {
    pub fn new(spec: StopAndCopySpec) -> Self {
        StopAndCopy { spec }
    }
}

impl Policy for StopAndCopy {
    fn name(&self) -> &'static str {
        "stop-and-copy"
    }
    fn decide(&mut self, obs: &Observation) -> Decision {
        match obs.trigger {
            Trigger::Start if !self.spec.precopy_pass => Decision::Stop(
                StopReason::Converged,
                "stop-and-copy: pause before the first pass".into(),
            ),
            Trigger::RoundEnd => Decision::Stop(
                StopReason::Converged,
                "stop-and-copy: pause after one live pass".into(),
            ),
            _ => Decision::Continue,
        }
    }
}

/// Hyper-V 2008 R2 style: a fixed number of copy passes with early exits.
pub struct FixedPasses {
    spec: FixedPassesSpec,
}

impl FixedPasses {
    pub fn new(spec: FixedPassesSpec) -> Self {
        FixedPasses { spec }
    }
}

impl Policy for FixedPasses {
    fn name(&self) -> &'static str {
        "fixed-passes"
    }
    fn decide(&mut self, obs: &Observation) -> Decision {
        if obs.trigger != Trigger::RoundEnd {
            return Decision::Continue;
        }
        let passes_done = obs.round + 1;
        if obs.dirty_pages == 0 {
            Decision::Stop(
                StopReason::Converged,
                format!("no dirty pages after pass {passes_done}"),
            )
        } else if obs.pending_bytes() <= self.spec.stop_below.0 {
            Decision::Stop(
                StopReason::Converged,
                format!(
                    "remainder ≤ {} after pass {passes_done}",
                    self.spec.stop_below
                ),
            )
        } else if passes_done >= self.spec.passes {
            Decision::Stop(
                StopReason::Forced,
                format!("pass limit {} reached", self.spec.passes),
            )
        } else {
            Decision::Continue
        }
    }
}

/// Xen's legacy rule from libxc `xc_domain_save`, evaluated at the end of each iteration.
pub struct XenLegacy {
    spec: XenLegacySpec,
    prev_sent: Option<u64>,
}

impl XenLegacy {
    pub fn new(spec: XenLegacySpec) -> Self {
        XenLegacy {
            spec,
            prev_sent: None,
        }
    }
}

impl Policy for XenLegacy {
    fn name(&self) -> &'static str {
        "xen-legacy"
    }
    fn decide(&mut self, obs: &Observation) -> Decision {
        if obs.trigger != Trigger::RoundEnd {
            return Decision::Continue;
        }
        let iters = obs.round + 1;
        let sent = obs
            .last_round
            .map_or(obs.round_pages_sent, |r| r.pages_sent);
        let mem_pages = obs.mem_bytes / obs.page_size;
        let prev = self.prev_sent.replace(sent);
        if sent < self.spec.min_pages {
            Decision::Stop(
                StopReason::Converged,
                format!(
                    "iteration {iters} sent {sent} < {} pages",
                    self.spec.min_pages
                ),
            )
        } else if iters >= self.spec.max_iters {
            Decision::Stop(
                StopReason::Forced,
                format!("iteration limit {} reached", self.spec.max_iters),
            )
        } else if obs.total_pages_sent as f64 > self.spec.max_factor * mem_pages as f64 {
            Decision::Stop(
                StopReason::Forced,
                format!("sent more than {}x RAM", self.spec.max_factor),
            )
        } else if self.spec.stop_on_growth && prev.is_some_and(|p| sent > p) {
            Decision::Stop(
                StopReason::Forced,
                format!("iteration {iters} sent more than the one before"),
            )
        } else {
            Decision::Continue
        }
    }
}

/// QEMU's pre-copy rule: a bandwidth measured over ~100 ms windows sets a threshold
/// (bandwidth × downtime-limit); when the pending estimate falls below it the dirty log is
/// synced, and if the exact pending amount is still below it the VM is stopped.
pub struct Qemu {
    spec: QemuSpec,
    window_start_ns: u64,
    window_start_bytes: u64,
    bandwidth_bps: f64,
}

impl Qemu {
    pub fn new(spec: QemuSpec) -> Self {
        Qemu {
            spec,
            window_start_ns: 0,
            window_start_bytes: 0,
            bandwidth_bps: 0.0,
        }
    }

    fn threshold_bytes(&self) -> f64 {
        self.bandwidth_bps / 8.0 * self.spec.downtime_limit_ms / 1e3
    }

    fn update_bandwidth(&mut self, obs: &Observation, force: bool) {
        let dt = obs.elapsed_ns.saturating_sub(self.window_start_ns);
        if dt as f64 >= self.spec.window_ms * 1e6 || (force && dt > 0 && self.bandwidth_bps == 0.0)
        {
            let bytes = obs.total_bytes_sent - self.window_start_bytes;
            self.bandwidth_bps = bytes as f64 * 8e9 / dt as f64;
            self.window_start_ns = obs.elapsed_ns;
            self.window_start_bytes = obs.total_bytes_sent;
        }
    }
}

impl Policy for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
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
                            self.spec.downtime_limit_ms
                        ),
                    )
                } else {
                    Decision::Continue
                }
            }
        }
    }
}

//! The stop rules of real systems. Defaults and sources: see each spec type in the parent module
//! and REFERENCE notes in the README's policy table.

use super::*;

/// Pure stop-and-copy (optionally after one live pass).
#[derive(Clone)]
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
#[derive(Clone)]
pub struct FixedPasses {
    spec: FixedPassesSpec,
    name: &'static str,
}

impl FixedPasses {
    pub fn new(spec: FixedPassesSpec) -> Self {
        FixedPasses {
            spec,
            name: "fixed-passes",
        }
    }
    /// The same rule under another name (the Hyper-V versions).
    pub fn named(spec: FixedPassesSpec, name: &'static str) -> Self {
        FixedPasses { spec, name }
    }
}

impl Policy for FixedPasses {
    fn name(&self) -> &'static str {
        self.name
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
#[derive(Clone)]
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

/// Xen's migration v2 rule (`xc_sr_save.c`): after each harvest, stop when fewer than
/// `dirty_threshold` pages are dirty or after `max_iterations` iterations.
#[derive(Clone)]
pub struct XenV2 {
    spec: XenV2Spec,
}

impl XenV2 {
    pub fn new(spec: XenV2Spec) -> Self {
        XenV2 { spec }
    }
}

impl Policy for XenV2 {
    fn name(&self) -> &'static str {
        "xen-v2"
    }
    fn decide(&mut self, obs: &Observation) -> Decision {
        if obs.trigger != Trigger::RoundEnd {
            return Decision::Continue;
        }
        let iters = obs.round + 1;
        if obs.dirty_pages < self.spec.dirty_threshold {
            Decision::Stop(
                StopReason::Converged,
                format!(
                    "{} dirty pages < {}",
                    obs.dirty_pages, self.spec.dirty_threshold
                ),
            )
        } else if iters >= self.spec.max_iterations {
            Decision::Stop(
                StopReason::Forced,
                format!("iteration limit {} reached", self.spec.max_iterations),
            )
        } else {
            Decision::Continue
        }
    }
}

/// Cloud Hypervisor's rule: after each iteration, stop when nothing is dirty or when sending
/// the dirty set at the iteration's measured bandwidth fits the downtime budget; past the
/// timeout, cancel (stay on the source) or ignore (force the switchover).
#[derive(Clone)]
pub struct CloudHypervisor {
    spec: CloudHypervisorSpec,
}

impl CloudHypervisor {
    pub fn new(spec: CloudHypervisorSpec) -> Self {
        CloudHypervisor { spec }
    }
}

impl Policy for CloudHypervisor {
    fn name(&self) -> &'static str {
        "cloud-hypervisor"
    }
    fn repeat_cycles(&mut self, obs: &Observation, cycle: &Cycle) -> u64 {
        // Stateless apart from the timeout.
        cycle.repeats_before(obs, self.spec.timeout_s * 1e9)
    }
    fn decide(&mut self, obs: &Observation) -> Decision {
        if obs.trigger != Trigger::RoundEnd {
            return Decision::Continue;
        }
        if obs.dirty_pages == 0 {
            return Decision::Stop(StopReason::Converged, "nothing left to send".into());
        }
        let bw = obs.current_bandwidth_bps();
        let est_ms = obs.pending_bytes() as f64 * 8e3 / bw;
        if est_ms <= self.spec.downtime_budget_ms {
            return Decision::Stop(
                StopReason::Converged,
                format!(
                    "estimated downtime {est_ms:.1} ms ≤ budget {} ms",
                    self.spec.downtime_budget_ms
                ),
            );
        }
        if obs.elapsed_ns as f64 >= self.spec.timeout_s * 1e9 {
            return match self.spec.on_timeout {
                TimeoutAction::Cancel => Decision::Cancel(format!(
                    "timeout of {} s: migration cancelled",
                    self.spec.timeout_s
                )),
                TimeoutAction::Ignore => Decision::Stop(
                    StopReason::Forced,
                    format!("timeout of {} s: switchover forced", self.spec.timeout_s),
                ),
            };
        }
        Decision::Continue
    }
}

/// SimGrid's live-migration model: stop when the remainder can be sent within `max_downtime_ms`
/// at the bandwidth measured in the last iteration. No iteration cap.
#[derive(Clone)]
pub struct SimGrid {
    spec: SimGridSpec,
}

impl SimGrid {
    pub fn new(spec: SimGridSpec) -> Self {
        SimGrid { spec }
    }
}

impl Policy for SimGrid {
    fn name(&self) -> &'static str {
        "simgrid"
    }
    fn repeat_cycles(&mut self, _obs: &Observation, cycle: &Cycle) -> u64 {
        cycle.max_repeats // stateless
    }
    fn decide(&mut self, obs: &Observation) -> Decision {
        if obs.trigger != Trigger::RoundEnd {
            return Decision::Continue;
        }
        let bw = obs.current_bandwidth_bps();
        // SimGrid caps the dirty amount it models per round at a fraction of RAM.
        let cap = self.spec.dirty_cap_fraction * obs.mem_bytes as f64;
        let remaining = (obs.pending_bytes() as f64).min(cap);
        let threshold = bw / 8.0 * self.spec.max_downtime_ms / 1e3;
        if remaining < threshold {
            Decision::Stop(
                StopReason::Converged,
                format!("remaining {remaining:.0} B < {threshold:.0} B"),
            )
        } else {
            Decision::Continue
        }
    }
}

/// VMware vMotion's Stun During Page Send: while the guest dirties memory faster than it can
/// be sent, stall its vCPUs (here: a throttle) so the dirty rate falls below the send rate;
/// switch over when the remainder fits the switchover target.
#[derive(Clone)]
pub struct Sdps {
    spec: SdpsSpec,
    throttle: f64,
}

impl Sdps {
    pub fn new(spec: SdpsSpec) -> Self {
        Sdps {
            spec,
            throttle: 0.0,
        }
    }
}

impl Policy for Sdps {
    fn name(&self) -> &'static str {
        "vmware-sdps"
    }
    fn decide(&mut self, obs: &Observation) -> Decision {
        if obs.trigger != Trigger::RoundEnd {
            return Decision::Continue;
        }
        let bw = obs.current_bandwidth_bps();
        let est_ms = obs.pending_bytes() as f64 * 8e3 / bw;
        if est_ms <= self.spec.switchover_ms {
            return Decision::Stop(
                StopReason::Converged,
                format!(
                    "remainder fits {} ms ({est_ms:.1} ms)",
                    self.spec.switchover_ms
                ),
            );
        }
        if obs.round == 0 || obs.round_elapsed_ns == 0 {
            return Decision::Continue;
        }
        // Dirty rate of this iteration, as bytes per second, and what it would be unthrottled.
        let dirty_bps =
            obs.dirty_pages as f64 * obs.page_wire_bytes as f64 * 8e9 / obs.round_elapsed_ns as f64;
        let unthrottled = dirty_bps / (1.0 - self.throttle).max(0.01);
        let target = self.spec.send_margin * bw;
        let want = if unthrottled > target {
            (1.0 - target / unthrottled).clamp(0.0, 0.99)
        } else {
            0.0
        };
        if (want - self.throttle).abs() >= 0.01 {
            self.throttle = want;
            Decision::Throttle((want * 100.0).round() as u8)
        } else {
            Decision::Continue
        }
    }
}

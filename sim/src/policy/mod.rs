//! Convergence policies: the one place where "keep iterating or stop?" is decided.
//!
//! A policy sees an [`Observation`] of the migration and returns a [`Decision`]. It never reaches
//! into a backend: the simulator and the KVM backend both build the same observations and obey
//! the same decisions, so a policy is written once and measured twice.
//!
//! ```text
//!   backend (sim | kvm) --Observation--> Policy::decide --Decision--> backend
//!        ^ round ends, periodic ticks, right after a dirty-log sync
//! ```

mod rules;

pub use rules::{FixedPasses, Qemu, StopAndCopy, XenLegacy};

use serde::{Deserialize, Serialize};
use workloads::{ByteSize, FieldError};

/// Why the policy is being consulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Before anything is sent (dirty logging is on, the first pass is about to start).
    Start,
    /// The current iteration's send set is exhausted. `Continue` here means: sync the dirty log
    /// and start the next iteration.
    RoundEnd,
    /// A periodic check while pages are still being sent (see [`Policy::tick_ns`]).
    Tick,
    /// Immediately after a sync the policy asked for with [`Decision::Sync`].
    AfterSync,
}

/// Summary of a finished iteration.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RoundSummary {
    pub round: u32,
    pub duration_ns: u64,
    pub pages_sent: u64,
    pub bytes_sent: u64,
    /// Distinct pages dirtied during the iteration (the dirty count harvested at its end).
    pub pages_dirtied: u64,
}

/// What a policy may know about a migration in progress. Both backends fill every field.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub trigger: Trigger,
    /// Time since the migration started.
    pub elapsed_ns: u64,
    /// Current iteration: 0 is the first full pass; every dirty-log sync starts the next one.
    pub round: u32,
    pub mem_bytes: u64,
    pub page_size: u64,
    /// Wire bytes of one full page (page plus header).
    pub page_wire_bytes: u64,
    pub total_bytes_sent: u64,
    pub total_pages_sent: u64,
    /// Sent so far in the current iteration.
    pub round_bytes_sent: u64,
    pub round_pages_sent: u64,
    /// Pages of the current iteration's send set not sent yet (QEMU's "pending estimate").
    pub remaining_pages: u64,
    /// Pages dirtied since the last sync, as a harvest now would report them.
    pub dirty_pages: u64,
    /// The iteration that ended most recently, if any.
    pub last_round: Option<RoundSummary>,
    /// Send rate of the most recent finished iteration (bits/s); the link rate before any.
    pub bandwidth_bps: f64,
    /// Distinct pages dirtied per second in the most recent finished iteration.
    pub dirty_rate_pps: f64,
    /// Current vCPU throttle (percent of CPU time taken away from the guest).
    pub throttle_pct: u8,
}

impl Observation {
    /// Pages that a stop-and-copy right now would have to send.
    pub fn pending_pages(&self) -> u64 {
        self.remaining_pages + self.dirty_pages
    }
    pub fn pending_bytes(&self) -> u64 {
        self.pending_pages() * self.page_wire_bytes
    }
}

/// How a stop-and-copy was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The policy's convergence target was met.
    Converged,
    /// A policy limit (iteration cap, bytes cap, timeout with `ignore`) forced the switchover.
    Forced,
}

/// What the backend must do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Keep sending (at a round end: sync the dirty log and start the next iteration).
    Continue,
    /// Sync the dirty log now (starting a new iteration), then consult the policy again.
    Sync,
    /// Pause the VM and copy what is left. The string says which rule fired.
    Stop(StopReason, String),
    /// Set the vCPU throttle to this percentage and keep going.
    Throttle(u8),
    /// Give up: the VM stays on the source.
    Cancel(String),
}

/// A convergence policy. One instance serves one migration.
pub trait Policy: Send {
    /// Stable name, as in scenario files.
    fn name(&self) -> &'static str;
    /// Interval of [`Trigger::Tick`] observations; `None` means only round ends and syncs.
    fn tick_ns(&self) -> Option<u64> {
        None
    }
    /// Rate limit the policy applies to pre-copy (bits/s). Stop-and-copy is never limited.
    fn max_bandwidth_bps(&self) -> Option<f64> {
        None
    }
    fn decide(&mut self, obs: &Observation) -> Decision;
}

/// A policy as written in a scenario file (`[policy]`, `kind = "..."`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PolicySpec {
    /// Pure stop-and-copy: pause at once and send all memory during the blackout (optionally
    /// after one live pass).
    StopAndCopy(StopAndCopySpec),
    /// Hyper-V 2008 R2 style: stop when clean, when the remainder is tiny, or after N passes.
    FixedPasses(FixedPassesSpec),
    /// Xen's legacy `xc_domain_save` rule.
    XenLegacy(XenLegacySpec),
    /// QEMU's downtime-limit rule.
    Qemu(QemuSpec),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopAndCopySpec {
    /// Send every page once while the VM runs, then pause (default false: pause at once and
    /// send all memory during the blackout, the classic stop-and-copy baseline).
    #[serde(default)]
    pub precopy_pass: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedPassesSpec {
    /// Maximum number of copy passes, including the first full pass (Hyper-V 2008 R2: 10).
    #[serde(default = "ten")]
    pub passes: u32,
    /// Stop when the dirty remainder is at most this much (unverified default: 1 MiB).
    #[serde(default = "one_mib")]
    pub stop_below: ByteSize,
}

fn ten() -> u32 {
    10
}
fn one_mib() -> ByteSize {
    ByteSize(workloads::MIB)
}

impl Default for FixedPassesSpec {
    fn default() -> Self {
        FixedPassesSpec {
            passes: 10,
            stop_below: one_mib(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XenLegacySpec {
    /// Last round when iterations reach this (libxc: 29).
    #[serde(default = "xen_iters")]
    pub max_iters: u32,
    /// Last round when a round sent fewer pages than this (libxc: 50).
    #[serde(default = "fifty")]
    pub min_pages: u64,
    /// Last round when total sent exceeds this multiple of RAM (libxc: 3).
    #[serde(default = "three")]
    pub max_factor: f64,
    /// Last round when a round sent more pages than the one before. libxc only applies this when
    /// sending at its maximum rate under `ADAPTIVE_SAVE`, which default builds leave off, so it
    /// is off by default here too.
    #[serde(default)]
    pub stop_on_growth: bool,
}

fn xen_iters() -> u32 {
    29
}
fn fifty() -> u64 {
    50
}
fn three() -> f64 {
    3.0
}

impl Default for XenLegacySpec {
    fn default() -> Self {
        XenLegacySpec {
            max_iters: 29,
            min_pages: 50,
            max_factor: 3.0,
            stop_on_growth: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuSpec {
    /// `downtime-limit` (QEMU default 300 ms).
    #[serde(default = "three_hundred")]
    pub downtime_limit_ms: f64,
    /// `max-bandwidth` for pre-copy (QEMU default 128 MiB/s); omit for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bandwidth: Option<workloads::Bandwidth>,
    /// Bandwidth measurement window (QEMU: 100 ms).
    #[serde(default = "hundred")]
    pub window_ms: f64,
    /// Interval between pending checks (QEMU iterates at most 50 ms between checks).
    #[serde(default = "fifty_f")]
    pub check_ms: f64,
}

fn three_hundred() -> f64 {
    300.0
}
fn hundred() -> f64 {
    100.0
}
fn fifty_f() -> f64 {
    50.0
}

impl Default for QemuSpec {
    fn default() -> Self {
        QemuSpec {
            downtime_limit_ms: 300.0,
            max_bandwidth: None,
            window_ms: 100.0,
            check_ms: 50.0,
        }
    }
}

fn positive(v: f64, path: String, unit: &str, errs: &mut Vec<FieldError>) {
    if !v.is_finite() || v <= 0.0 {
        errs.push(FieldError::new(
            path,
            format!("must be a finite value > 0 {unit}, got {v}"),
        ));
    }
}

impl PolicySpec {
    /// Stable name of the policy kind, as written in scenario files.
    pub fn name(&self) -> &'static str {
        match self {
            PolicySpec::StopAndCopy(_) => "stop-and-copy",
            PolicySpec::FixedPasses(_) => "fixed-passes",
            PolicySpec::XenLegacy(_) => "xen-legacy",
            PolicySpec::Qemu(_) => "qemu",
        }
    }

    /// Every policy kind with its defaults.
    pub fn all_defaults() -> Vec<PolicySpec> {
        vec![
            PolicySpec::StopAndCopy(StopAndCopySpec::default()),
            PolicySpec::FixedPasses(FixedPassesSpec::default()),
            PolicySpec::XenLegacy(XenLegacySpec::default()),
            PolicySpec::Qemu(QemuSpec::default()),
        ]
    }

    /// Look up a policy kind by name with its default parameters.
    pub fn by_name(name: &str) -> Option<PolicySpec> {
        Self::all_defaults().into_iter().find(|p| p.name() == name)
    }

    pub fn check(&self, path: &str) -> Vec<FieldError> {
        let mut errs = Vec::new();
        match self {
            PolicySpec::StopAndCopy(_) => {}
            PolicySpec::FixedPasses(s) => {
                if s.passes == 0 {
                    errs.push(FieldError::new(
                        format!("{path}.passes"),
                        "must be at least 1",
                    ));
                }
            }
            PolicySpec::XenLegacy(s) => {
                if s.max_iters == 0 {
                    errs.push(FieldError::new(
                        format!("{path}.max_iters"),
                        "must be at least 1",
                    ));
                }
                positive(
                    s.max_factor,
                    format!("{path}.max_factor"),
                    "(multiple of RAM)",
                    &mut errs,
                );
            }
            PolicySpec::Qemu(s) => {
                if !s.downtime_limit_ms.is_finite() || s.downtime_limit_ms < 0.0 {
                    errs.push(FieldError::new(
                        format!("{path}.downtime_limit_ms"),
                        format!("must be a finite value ≥ 0 ms, got {}", s.downtime_limit_ms),
                    ));
                }
                positive(s.window_ms, format!("{path}.window_ms"), "ms", &mut errs);
                positive(s.check_ms, format!("{path}.check_ms"), "ms", &mut errs);
                if let Some(b) = s.max_bandwidth {
                    positive(b.0, format!("{path}.max_bandwidth"), "bit/s", &mut errs);
                }
            }
        }
        errs
    }

    /// A fresh policy instance for one migration.
    pub fn build(&self) -> Box<dyn Policy> {
        match self {
            PolicySpec::StopAndCopy(s) => Box::new(StopAndCopy::new(s.clone())),
            PolicySpec::FixedPasses(s) => Box::new(FixedPasses::new(s.clone())),
            PolicySpec::XenLegacy(s) => Box::new(XenLegacy::new(s.clone())),
            PolicySpec::Qemu(s) => Box::new(Qemu::new(s.clone())),
        }
    }
}

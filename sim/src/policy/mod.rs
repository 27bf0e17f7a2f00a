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

mod adaptive;
mod qemu;
mod rules;

pub use adaptive::Adaptive;
pub use qemu::{DowntimeRamp, PostCopy, Qemu};
pub use rules::{CloudHypervisor, FixedPasses, Sdps, SimGrid, StopAndCopy, XenLegacy, XenV2};

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
    /// Time since the current iteration's sync.
    pub round_elapsed_ns: u64,
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
    pub vcpus: u32,
}

impl Observation {
    /// Pages that a stop-and-copy right now would have to send.
    pub fn pending_pages(&self) -> u64 {
        self.remaining_pages + self.dirty_pages
    }
    pub fn pending_bytes(&self) -> u64 {
        self.pending_pages() * self.page_wire_bytes
    }
    /// Send rate of the current iteration so far, or of the last finished one if the current
    /// one has sent nothing yet (bits/s).
    pub fn current_bandwidth_bps(&self) -> f64 {
        if self.round_elapsed_ns > 0 && self.round_bytes_sent > 0 {
            self.round_bytes_sent as f64 * 8e9 / self.round_elapsed_ns as f64
        } else {
            self.bandwidth_bps
        }
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
    /// Cap the guest's page-write rate (all vCPUs together, pages/s) and keep going.
    LimitDirtyRate(f64),
    /// Stop the VM, move its vCPU state, resume it on the destination and fetch the remaining
    /// pages on demand (post-copy). The string says why.
    PostCopy(String),
    /// Give up: the VM stays on the source.
    Cancel(String),
}

/// A copy of a policy in its current state (fast modes try a policy on forecast observations
/// before committing to them). Every `Clone` policy has it.
pub trait ForkPolicy {
    fn fork(&self) -> Box<dyn Policy>;
}

impl<T: Policy + Clone + 'static> ForkPolicy for T {
    fn fork(&self) -> Box<dyn Policy> {
        Box::new(self.clone())
    }
}

/// A convergence policy. One instance serves one migration.
pub trait Policy: Send + ForkPolicy {
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
    /// Fast modes only: the policy has just answered `Continue` to the tick `obs`, and the
    /// engine forecasts the next ticks (see [`SteadyTicks`]). Return how many of them (at most
    /// `f.max_ticks`) would certainly be answered `Continue` as well, updating the policy's
    /// state as if it had seen them; the engine then skips them. Returning 0 (the default)
    /// keeps every tick.
    fn skip_ticks(&mut self, obs: &Observation, f: &SteadyTicks) -> u64 {
        let _ = (obs, f);
        0
    }
    /// Fast modes only: the migration has reached a fixed point — the iteration that just
    /// ended (`cycle`) left the state exactly as the one before it did, and the policy has
    /// just answered `Continue` after its sync (`obs`). Return how many more identical
    /// iterations (at most `cycle.max_repeats`) this policy would answer exactly as it did
    /// this one, with its own clocks moved on by the skipped time; the engine then jumps over
    /// them. Returning 0 (the default) simulates every iteration.
    fn repeat_cycles(&mut self, obs: &Observation, cycle: &Cycle) -> u64 {
        let _ = (obs, cycle);
        0
    }
    /// Fast modes only: the migration drifts — each iteration ahead repeats the last one
    /// moved on by the same step — and each consists of the consultations in `pattern` (what
    /// the policy saw and answered in the last iteration), ending with a sync. A policy whose
    /// answers to all but the sync cannot change may answer only the syncs: `sync_at(i)`
    /// gives what it would see at the i-th one ahead. Return how many of them (at most `max`)
    /// it answers `Continue`, with its state moved on by exactly those. `None` (the default)
    /// has the engine show it every consultation instead.
    fn drift_syncs(
        &mut self,
        pattern: &[(Trigger, Decision)],
        sync_at: &dyn Fn(u64) -> DriftSync,
        max: u64,
    ) -> Option<u64> {
        let _ = (pattern, sync_at, max);
        None
    }
}

/// What a policy sees at a sync ahead in a drift (see [`Policy::drift_syncs`]): the figures of
/// the [`Observation`] it would get there that a sync's answer may use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriftSync {
    pub pending_pages: u64,
    pub total_pages_sent: u64,
    pub round: u32,
    pub bandwidth_bps: f64,
    pub page_wire_bytes: u64,
}

/// One iteration of a migration at a fixed point (see [`Policy::repeat_cycles`]).
#[derive(Clone, Copy, Debug)]
pub struct Cycle {
    /// Wall time and bytes sent per iteration.
    pub period_ns: u64,
    pub bytes: u64,
    /// Pages sent and syncs (iterations begun) per cycle.
    pub pages: u64,
    pub syncs: u32,
    pub max_repeats: u64,
}

impl Cycle {
    /// The largest `n ≤ max_repeats` such that every consultation during the next `n`
    /// iterations happens before `deadline_ns` (iterations start at `obs.elapsed_ns`).
    pub fn repeats_before(&self, obs: &Observation, deadline_ns: f64) -> u64 {
        let room = deadline_ns - obs.elapsed_ns as f64;
        if room <= 0.0 || self.period_ns == 0 {
            return 0;
        }
        ((room / self.period_ns as f64).floor() as u64)
            .saturating_sub(1)
            .min(self.max_repeats)
    }
}

/// A forecast of upcoming ticks over a stretch where pre-copy sends at a steady rate and
/// nothing else happens (no round end, sync, phase change or throttle change): tick `j`
/// (1-based) comes `j · period_ns` after the current one, with `sent_at(j)` fewer pages left in
/// the iteration and `j · bytes_per_tick` more bytes sent. The pages a tick's bytes carry may
/// change along the way (zero pages of the first pass are cheap).
pub struct SteadyTicks<'a> {
    pub period_ns: u64,
    pub max_ticks: u64,
    pub bytes_per_tick: f64,
    /// Pages sent over the next `j` ticks (non-decreasing in `j`).
    pub sent_at: &'a dyn Fn(u64) -> f64,
    /// Pages dirtied since the last sync as seen at tick `j` (concave in `j`).
    pub dirty_at: &'a dyn Fn(u64) -> u64,
    /// Where (in ticks from now, increasing) the pages each tick's bytes carry change:
    /// between them `sent_at` is linear.
    pub kinks: &'a [f64],
}

impl SteadyTicks<'_> {
    /// `elapsed_ns`, `remaining_pages` and `total_bytes_sent` as tick `j` will report them.
    pub fn at(&self, obs: &Observation, j: u64) -> (u64, u64, u64) {
        (
            self.elapsed_at(obs, j),
            (obs.remaining_pages as f64 - (self.sent_at)(j))
                .round()
                .max(0.0) as u64,
            self.bytes_at(obs, j),
        )
    }

    /// `elapsed_ns` at tick `j` (as [`SteadyTicks::at`], without working out the pages).
    pub fn elapsed_at(&self, obs: &Observation, j: u64) -> u64 {
        obs.elapsed_ns + j * self.period_ns
    }

    /// `total_bytes_sent` at tick `j` (as [`SteadyTicks::at`]).
    pub fn bytes_at(&self, obs: &Observation, j: u64) -> u64 {
        obs.total_bytes_sent + (j as f64 * self.bytes_per_tick) as u64
    }
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
    /// Hyper-V 2008 R2: 10 passes.
    #[serde(rename = "hyperv-2008r2")]
    Hyperv2008R2(HypervSpec),
    /// Hyper-V 2012 R2 and later: 5 passes.
    #[serde(rename = "hyperv-2012r2")]
    Hyperv2012R2(HypervSpec),
    /// Xen's legacy `xc_domain_save` rule.
    XenLegacy(XenLegacySpec),
    /// Xen migration v2.
    XenV2(XenV2Spec),
    /// QEMU's downtime-limit rule (optionally with auto-converge or dirty-limit).
    Qemu(QemuSpec),
    /// Cloud Hypervisor: downtime budget plus timeout.
    CloudHypervisor(CloudHypervisorSpec),
    /// VMware vMotion with Stun During Page Send.
    VmwareSdps(SdpsSpec),
    /// OpenStack Nova / KubeVirt stepped downtime limit with abort on stall.
    DowntimeRamp(DowntimeRampSpec),
    /// QEMU pre-copy that switches to post-copy.
    Postcopy(PostCopySpec),
    /// SimGrid's model: remainder < bandwidth × 30 ms.
    Simgrid(SimGridSpec),
    /// migsim's own: stop when another round cannot materially shrink the final set.
    Adaptive(AdaptiveSpec),
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
    /// `auto-converge`: throttle the vCPUs when the guest dirties too fast.
    #[serde(default)]
    pub auto_converge: bool,
    /// `cpu-throttle-initial` (20 %).
    #[serde(default = "twenty")]
    pub throttle_initial_pct: u8,
    /// `cpu-throttle-increment` (10 %).
    #[serde(default = "ten_u8")]
    pub throttle_increment_pct: u8,
    /// `max-cpu-throttle` (99 %).
    #[serde(default = "ninety_nine")]
    pub max_throttle_pct: u8,
    /// `throttle-trigger-threshold`: dirtied bytes above this share of sent bytes count (50 %).
    #[serde(default = "fifty_f")]
    pub throttle_trigger_pct: f64,
    /// `cpu-throttle-tailslow`: later steps aim at the ideal throttle, at most the increment.
    #[serde(default)]
    pub tailslow: bool,
    /// `dirty-limit`: instead of throttling, cap each vCPU's dirty rate.
    #[serde(default)]
    pub dirty_limit: bool,
    /// `vcpu-dirty-limit` in MB/s per vCPU (QEMU default 1).
    #[serde(default = "one_f")]
    pub vcpu_dirty_limit_mbps: f64,
}

fn twenty() -> u8 {
    20
}
fn ten_u8() -> u8 {
    10
}
fn ninety_nine() -> u8 {
    99
}
fn one_f() -> f64 {
    1.0
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
            auto_converge: false,
            throttle_initial_pct: 20,
            throttle_increment_pct: 10,
            max_throttle_pct: 99,
            throttle_trigger_pct: 50.0,
            tailslow: false,
            dirty_limit: false,
            vcpu_dirty_limit_mbps: 1.0,
        }
    }
}

/// Hyper-V: a fixed number of copy passes; `passes` defaults by version (2008 R2: 10,
/// 2012 R2: 5).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HypervSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passes: Option<u32>,
    #[serde(default = "one_mib")]
    pub stop_below: ByteSize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XenV2Spec {
    /// Stop when fewer pages than this are dirty (50).
    #[serde(default = "fifty")]
    pub dirty_threshold: u64,
    /// Stop after this many iterations (5).
    #[serde(default = "five")]
    pub max_iterations: u32,
}

fn five() -> u32 {
    5
}

impl Default for XenV2Spec {
    fn default() -> Self {
        XenV2Spec {
            dirty_threshold: 50,
            max_iterations: 5,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutAction {
    /// Cancel the migration; the VM stays on the source.
    #[default]
    Cancel,
    /// Force the switchover whatever the downtime.
    Ignore,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudHypervisorSpec {
    /// Downtime budget (300 ms).
    #[serde(default = "three_hundred")]
    pub downtime_budget_ms: f64,
    /// Give up or force after this long (3600 s).
    #[serde(default = "hour")]
    pub timeout_s: f64,
    #[serde(default)]
    pub on_timeout: TimeoutAction,
}

fn hour() -> f64 {
    3600.0
}

impl Default for CloudHypervisorSpec {
    fn default() -> Self {
        CloudHypervisorSpec {
            downtime_budget_ms: 300.0,
            timeout_s: 3600.0,
            on_timeout: TimeoutAction::Cancel,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdpsSpec {
    /// Switch over when the remainder can be sent within this long (unverified: 500 ms).
    #[serde(default = "five_hundred")]
    pub switchover_ms: f64,
    /// Stall until the dirty rate is at most this share of the send rate (unverified: 0.8).
    #[serde(default = "send_margin")]
    pub send_margin: f64,
}

fn five_hundred() -> f64 {
    500.0
}
fn send_margin() -> f64 {
    0.8
}

impl Default for SdpsSpec {
    fn default() -> Self {
        SdpsSpec {
            switchover_ms: 500.0,
            send_margin: 0.8,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DowntimeRampSpec {
    /// Final downtime limit (Nova `live_migration_downtime`: 500 ms).
    #[serde(default = "five_hundred")]
    pub downtime_ms: f64,
    /// Number of steps (Nova: 10).
    #[serde(default = "ten")]
    pub steps: u32,
    /// Seconds per GiB between steps (Nova: 75).
    #[serde(default = "seventy_five")]
    pub delay_s_per_gib: f64,
    /// Abort when the migration takes longer than this per GiB (Nova: 800; 0 = never).
    #[serde(default = "eight_hundred")]
    pub completion_timeout_s_per_gib: f64,
    /// Abort when the pending amount has not reached a new low for this long (Nova's former
    /// progress timeout: 150 s; 0 = never).
    #[serde(default = "one_fifty")]
    pub progress_timeout_s: f64,
}

fn seventy_five() -> f64 {
    75.0
}
fn eight_hundred() -> f64 {
    800.0
}
fn one_fifty() -> f64 {
    150.0
}

impl Default for DowntimeRampSpec {
    fn default() -> Self {
        DowntimeRampSpec {
            downtime_ms: 500.0,
            steps: 10,
            delay_s_per_gib: 75.0,
            completion_timeout_s_per_gib: 800.0,
            progress_timeout_s: 150.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostCopySpec {
    /// Pre-copy iterations before switching (default 1: one full pass).
    #[serde(default = "one_u32")]
    pub precopy_rounds: u32,
    /// Converge normally if QEMU's downtime rule is met first.
    #[serde(default = "three_hundred")]
    pub downtime_limit_ms: f64,
    /// Switch early when an iteration dirtied at least as much as it sent.
    #[serde(default = "yes")]
    pub switch_on_no_progress: bool,
}

fn one_u32() -> u32 {
    1
}
fn yes() -> bool {
    true
}

impl Default for PostCopySpec {
    fn default() -> Self {
        PostCopySpec {
            precopy_rounds: 1,
            downtime_limit_ms: 300.0,
            switch_on_no_progress: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimGridSpec {
    /// SimGrid's fixed maximum downtime (30 ms).
    #[serde(default = "thirty")]
    pub max_downtime_ms: f64,
    /// SimGrid caps the dirty bytes it models per round at this share of RAM (0.9).
    #[serde(default = "point_nine")]
    pub dirty_cap_fraction: f64,
}

fn thirty() -> f64 {
    30.0
}
fn point_nine() -> f64 {
    0.9
}

impl Default for SimGridSpec {
    fn default() -> Self {
        SimGridSpec {
            max_downtime_ms: 30.0,
            dirty_cap_fraction: 0.9,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveSpec {
    /// An improvement of the pending set smaller than this share is not material (0.05).
    #[serde(default = "min_gain")]
    pub min_gain: f64,
    /// On the floor, stop when the pending set is within this share of the lowest seen (0.02).
    #[serde(default = "floor_tolerance")]
    pub floor_tolerance: f64,
    /// Dirty-log sync interval after the first pass (20 ms).
    #[serde(default = "twenty_f")]
    pub sync_every_ms: f64,
    /// Syncs without a material improvement before the floor is declared (5).
    #[serde(default = "five")]
    pub patience_syncs: u32,
    /// Hard cap on iterations (syncs).
    #[serde(default = "adaptive_rounds")]
    pub max_rounds: u32,
    /// Stop as soon as the remainder fits this blackout budget (off by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_budget_ms: Option<f64>,
}

fn min_gain() -> f64 {
    0.05
}
fn floor_tolerance() -> f64 {
    0.02
}
fn twenty_f() -> f64 {
    20.0
}
fn adaptive_rounds() -> u32 {
    10_000
}

impl Default for AdaptiveSpec {
    fn default() -> Self {
        AdaptiveSpec {
            min_gain: 0.05,
            floor_tolerance: 0.02,
            sync_every_ms: 20.0,
            patience_syncs: 5,
            max_rounds: 10_000,
            downtime_budget_ms: None,
        }
    }
}

fn nonneg(v: f64, path: String, unit: &str, errs: &mut Vec<FieldError>) {
    if !v.is_finite() || v < 0.0 {
        errs.push(FieldError::new(
            path,
            format!("must be a finite value ≥ 0 {unit}, got {v}"),
        ));
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
            PolicySpec::Hyperv2008R2(_) => "hyperv-2008r2",
            PolicySpec::Hyperv2012R2(_) => "hyperv-2012r2",
            PolicySpec::XenLegacy(_) => "xen-legacy",
            PolicySpec::XenV2(_) => "xen-v2",
            PolicySpec::Qemu(_) => "qemu",
            PolicySpec::CloudHypervisor(_) => "cloud-hypervisor",
            PolicySpec::VmwareSdps(_) => "vmware-sdps",
            PolicySpec::DowntimeRamp(_) => "downtime-ramp",
            PolicySpec::Postcopy(_) => "postcopy",
            PolicySpec::Simgrid(_) => "simgrid",
            PolicySpec::Adaptive(_) => "adaptive",
        }
    }

    /// Every policy kind with its defaults.
    pub fn all_defaults() -> Vec<PolicySpec> {
        vec![
            PolicySpec::StopAndCopy(StopAndCopySpec::default()),
            PolicySpec::FixedPasses(FixedPassesSpec::default()),
            PolicySpec::Hyperv2008R2(HypervSpec::default()),
            PolicySpec::Hyperv2012R2(HypervSpec::default()),
            PolicySpec::XenLegacy(XenLegacySpec::default()),
            PolicySpec::XenV2(XenV2Spec::default()),
            PolicySpec::Qemu(QemuSpec::default()),
            PolicySpec::Qemu(QemuSpec {
                auto_converge: true,
                ..QemuSpec::default()
            }),
            PolicySpec::CloudHypervisor(CloudHypervisorSpec::default()),
            PolicySpec::VmwareSdps(SdpsSpec::default()),
            PolicySpec::DowntimeRamp(DowntimeRampSpec::default()),
            PolicySpec::Postcopy(PostCopySpec::default()),
            PolicySpec::Simgrid(SimGridSpec::default()),
            PolicySpec::Adaptive(AdaptiveSpec::default()),
        ]
    }

    /// Look up a policy by name with its default parameters. `qemu-auto-converge` names QEMU
    /// with auto-converge on; `qemu-dirty-limit` with dirty-limit on.
    pub fn by_name(name: &str) -> Option<PolicySpec> {
        match name {
            "qemu-auto-converge" => Some(PolicySpec::Qemu(QemuSpec {
                auto_converge: true,
                ..QemuSpec::default()
            })),
            "qemu-dirty-limit" => Some(PolicySpec::Qemu(QemuSpec {
                dirty_limit: true,
                ..QemuSpec::default()
            })),
            _ => Self::all_defaults().into_iter().find(|p| p.name() == name),
        }
    }

    /// A label that tells variants of one kind apart (e.g. `qemu-auto-converge`).
    pub fn label(&self) -> String {
        match self {
            PolicySpec::Qemu(q) if q.auto_converge => "qemu-auto-converge".into(),
            PolicySpec::Qemu(q) if q.dirty_limit => "qemu-dirty-limit".into(),
            PolicySpec::StopAndCopy(s) if s.precopy_pass => "stop-and-copy-1pass".into(),
            other => other.name().into(),
        }
    }

    /// Names accepted by [`PolicySpec::by_name`].
    pub fn known_names() -> Vec<String> {
        let mut v: Vec<String> = Self::all_defaults().iter().map(|p| p.label()).collect();
        v.push("qemu-dirty-limit".into());
        v
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
            PolicySpec::Hyperv2008R2(s) | PolicySpec::Hyperv2012R2(s) => {
                if s.passes == Some(0) {
                    errs.push(FieldError::new(
                        format!("{path}.passes"),
                        "must be at least 1",
                    ));
                }
            }
            PolicySpec::XenV2(s) => {
                if s.max_iterations == 0 {
                    errs.push(FieldError::new(
                        format!("{path}.max_iterations"),
                        "must be at least 1",
                    ));
                }
            }
            PolicySpec::CloudHypervisor(s) => {
                nonneg(
                    s.downtime_budget_ms,
                    format!("{path}.downtime_budget_ms"),
                    "ms",
                    &mut errs,
                );
                positive(s.timeout_s, format!("{path}.timeout_s"), "s", &mut errs);
            }
            PolicySpec::VmwareSdps(s) => {
                nonneg(
                    s.switchover_ms,
                    format!("{path}.switchover_ms"),
                    "ms",
                    &mut errs,
                );
                if !(s.send_margin > 0.0 && s.send_margin <= 1.0) {
                    errs.push(FieldError::new(
                        format!("{path}.send_margin"),
                        format!("must be in (0, 1], got {}", s.send_margin),
                    ));
                }
            }
            PolicySpec::DowntimeRamp(s) => {
                positive(
                    s.downtime_ms,
                    format!("{path}.downtime_ms"),
                    "ms",
                    &mut errs,
                );
                if s.steps == 0 {
                    errs.push(FieldError::new(
                        format!("{path}.steps"),
                        "must be at least 1",
                    ));
                }
                nonneg(
                    s.delay_s_per_gib,
                    format!("{path}.delay_s_per_gib"),
                    "s",
                    &mut errs,
                );
                nonneg(
                    s.completion_timeout_s_per_gib,
                    format!("{path}.completion_timeout_s_per_gib"),
                    "s",
                    &mut errs,
                );
                nonneg(
                    s.progress_timeout_s,
                    format!("{path}.progress_timeout_s"),
                    "s",
                    &mut errs,
                );
            }
            PolicySpec::Postcopy(s) => {
                if s.precopy_rounds == 0 {
                    errs.push(FieldError::new(
                        format!("{path}.precopy_rounds"),
                        "must be at least 1",
                    ));
                }
                nonneg(
                    s.downtime_limit_ms,
                    format!("{path}.downtime_limit_ms"),
                    "ms",
                    &mut errs,
                );
            }
            PolicySpec::Simgrid(s) => {
                nonneg(
                    s.max_downtime_ms,
                    format!("{path}.max_downtime_ms"),
                    "ms",
                    &mut errs,
                );
                positive(
                    s.dirty_cap_fraction,
                    format!("{path}.dirty_cap_fraction"),
                    "",
                    &mut errs,
                );
            }
            PolicySpec::Adaptive(s) => {
                if !(s.min_gain > 0.0 && s.min_gain < 1.0) {
                    errs.push(FieldError::new(
                        format!("{path}.min_gain"),
                        format!("must be in (0, 1), got {}", s.min_gain),
                    ));
                }
                if s.max_rounds == 0 {
                    errs.push(FieldError::new(
                        format!("{path}.max_rounds"),
                        "must be at least 1",
                    ));
                }
                if let Some(b) = s.downtime_budget_ms {
                    nonneg(b, format!("{path}.downtime_budget_ms"), "ms", &mut errs);
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
                if s.auto_converge && s.dirty_limit {
                    errs.push(FieldError::new(
                        format!("{path}.dirty_limit"),
                        "cannot be combined with auto_converge",
                    ));
                }
                if s.max_throttle_pct > 99 {
                    errs.push(FieldError::new(
                        format!("{path}.max_throttle_pct"),
                        "must be at most 99",
                    ));
                }
                positive(
                    s.vcpu_dirty_limit_mbps,
                    format!("{path}.vcpu_dirty_limit_mbps"),
                    "MB/s",
                    &mut errs,
                );
                nonneg(
                    s.throttle_trigger_pct,
                    format!("{path}.throttle_trigger_pct"),
                    "%",
                    &mut errs,
                );
            }
        }
        errs
    }

    /// A fresh policy instance for one migration of a VM with `vcpus` vCPUs.
    pub fn build(&self, vcpus: u32) -> Box<dyn Policy> {
        match self {
            PolicySpec::StopAndCopy(s) => Box::new(StopAndCopy::new(s.clone())),
            PolicySpec::FixedPasses(s) => Box::new(FixedPasses::new(s.clone())),
            PolicySpec::Hyperv2008R2(s) => Box::new(FixedPasses::named(
                FixedPassesSpec {
                    passes: s.passes.unwrap_or(10),
                    stop_below: s.stop_below,
                },
                "hyperv-2008r2",
            )),
            PolicySpec::Hyperv2012R2(s) => Box::new(FixedPasses::named(
                FixedPassesSpec {
                    passes: s.passes.unwrap_or(5),
                    stop_below: s.stop_below,
                },
                "hyperv-2012r2",
            )),
            PolicySpec::XenLegacy(s) => Box::new(XenLegacy::new(s.clone())),
            PolicySpec::XenV2(s) => Box::new(XenV2::new(s.clone())),
            PolicySpec::Qemu(s) => Box::new(Qemu::new(s.clone(), vcpus)),
            PolicySpec::CloudHypervisor(s) => Box::new(CloudHypervisor::new(s.clone())),
            PolicySpec::VmwareSdps(s) => Box::new(Sdps::new(s.clone())),
            PolicySpec::DowntimeRamp(s) => Box::new(DowntimeRamp::new(s.clone(), vcpus)),
            PolicySpec::Postcopy(s) => Box::new(PostCopy::new(s.clone(), vcpus)),
            PolicySpec::Simgrid(s) => Box::new(SimGrid::new(s.clone())),
            PolicySpec::Adaptive(s) => Box::new(Adaptive::new(s.clone())),
        }
    }
}

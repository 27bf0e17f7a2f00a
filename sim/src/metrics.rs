//! Per-run and per-round records, and their CSV / JSON exporters.
//!
//! Both backends produce these records; the `backend` column (`sim` or `kvm`) tells them apart
//! so rows compare one to one. Column order and names are a stable schema (see docs/schema.md).

use serde::Serialize;
use std::io::{self, Write};

/// How a migration ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The policy's convergence target was met; the VM runs on the destination.
    Converged,
    /// A policy limit forced the switchover; the VM runs on the destination.
    Forced,
    /// The policy gave up; the VM stays on the source.
    Cancelled,
    /// The simulated-time cap was reached first; the VM stays on the source.
    Timeout,
    /// The migration broke (real backend: peer died, link cut, corrupt frame); VM on the source.
    Failed,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Converged => "converged",
            Status::Forced => "forced",
            Status::Cancelled => "cancelled",
            Status::Timeout => "timeout",
            Status::Failed => "failed",
        }
    }
    /// True when the VM ended up running on the destination.
    pub fn moved(&self) -> bool {
        matches!(self, Status::Converged | Status::Forced)
    }
}

/// Where the blackout went, in the order it happens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Downtime {
    /// Stopping the vCPUs (and, in the simulator, the fixed source-side switchover cost).
    pub pause_ns: u64,
    /// The final dirty-log harvest.
    pub final_sync_ns: u64,
    /// Sending the remaining pages (including link latency for the last byte).
    pub transfer_ns: u64,
    /// Saving, sending and loading vCPU/device state.
    pub state_ns: u64,
    /// Starting the vCPUs on the destination.
    pub resume_ns: u64,
}

impl Downtime {
    pub fn total_ns(&self) -> u64 {
        self.pause_ns + self.final_sync_ns + self.transfer_ns + self.state_ns + self.resume_ns
    }
}

/// One migration's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    pub backend: String,
    pub scenario: String,
    pub policy: String,
    pub workload: String,
    pub seed: u64,
    pub replicate: u32,
    pub status: Status,
    /// Which rule ended the migration.
    pub reason: String,
    pub mem_bytes: u64,
    pub link_bps: f64,
    pub total_time_ns: u64,
    /// Blackout, present when the VM moved.
    pub downtime: Option<Downtime>,
    /// Pre-copy iterations (dirty-log syncs before the pause), counting the first full pass.
    pub rounds: u32,
    pub bytes_sent: u64,
    pub pages_sent: u64,
    pub zero_pages_sent: u64,
    /// Sends of a page that had been sent before.
    pub pages_resent: u64,
    /// Pages sent during the blackout.
    pub final_pages: u64,
    pub final_bytes: u64,
    /// Page writes the guest performed during the migration.
    pub guest_writes: u64,
    pub max_throttle_pct: u8,
    /// `live`, `quick`, `offline` or `storage`.
    pub kind: String,
    /// Present when the migration finished in post-copy.
    pub postcopy: Option<PostcopyStats>,
    /// Pages sent as XBZRLE deltas.
    pub xbzrle_hits: u64,
}

/// The post-copy phase: from resume on the destination until the last page arrived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PostcopyStats {
    /// Pages still on the source at the switch.
    pub missing_pages: u64,
    /// Resume → last missing page received.
    pub duration_ns: u64,
    /// Guest accesses that had to fetch their page from the source.
    pub faults: u64,
    /// Pages pushed in the background.
    pub pushed_pages: u64,
    /// Time the guest spent stalled on faults (its degraded time).
    pub stall_ns: u64,
}

impl RunReport {
    pub fn downtime_ns(&self) -> Option<u64> {
        self.downtime.map(|d| d.total_ns())
    }
}

/// One pre-copy iteration (the stop-and-copy is not a round; see the run's `final_*` columns).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundRecord {
    pub round: u32,
    pub start_ns: u64,
    pub duration_ns: u64,
    pub pages_sent: u64,
    pub zero_pages_sent: u64,
    pub bytes_sent: u64,
    /// Distinct pages dirtied during the round (harvested at its end).
    pub pages_dirtied: u64,
    /// Achieved send rate over the round.
    pub bandwidth_bps: f64,
    /// Blackout a stop at the end of this round would cost for the page transfer alone, at the
    /// round's bandwidth (the quantity downtime-limit policies compare with their budget).
    pub est_downtime_ns: u64,
    pub throttle_pct: u8,
    /// Page writes the guest made during the round (its achieved write rate × duration).
    pub guest_writes: u64,
}

/// A finished run: the summary plus its per-round records.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunResult {
    pub report: RunReport,
    pub rounds: Vec<RoundRecord>,
}

/// Header of `runs.csv`. `run_id` is the row's index within the output; `param_*` columns (from
/// sweeps) are appended after these.
pub const RUNS_HEADER: &[&str] = &[
    "run_id",
    "backend",
    "scenario",
    "policy",
    "workload",
    "seed",
    "replicate",
    "status",
    "reason",
    "mem_bytes",
    "link_bps",
    "total_time_ns",
    "downtime_ns",
    "dt_pause_ns",
    "dt_final_sync_ns",
    "dt_transfer_ns",
    "dt_state_ns",
    "dt_resume_ns",
    "rounds",
    "bytes_sent",
    "pages_sent",
    "zero_pages_sent",
    "pages_resent",
    "final_pages",
    "final_bytes",
    "guest_writes",
    "max_throttle_pct",
    "kind",
    "postcopy_ns",
    "postcopy_faults",
    "postcopy_stall_ns",
    "xbzrle_hits",
];

pub const ROUNDS_HEADER: &[&str] = &[
    "run_id",
    "round",
    "start_ns",
    "duration_ns",
    "pages_sent",
    "zero_pages_sent",
    "bytes_sent",
    "pages_dirtied",
    "bandwidth_bps",
    "est_downtime_ns",
    "throttle_pct",
    "guest_writes",
];

/// Quote a CSV field when it needs it.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Deterministic float formatting: integers print without a fraction, others with up to 6
/// significant decimals so outputs are byte-stable and readable.
pub fn fmt_f64(x: f64) -> String {
    if !x.is_finite() {
        return String::new();
    }
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The values of one `runs.csv` row (without trailing `param_*` values).
pub fn run_row(run_id: usize, r: &RunReport) -> Vec<String> {
    let d = r.downtime;
    vec![
        run_id.to_string(),
        csv_field(&r.backend),
        csv_field(&r.scenario),
        csv_field(&r.policy),
        csv_field(&r.workload),
        r.seed.to_string(),
        r.replicate.to_string(),
        r.status.as_str().to_string(),
        csv_field(&r.reason),
        r.mem_bytes.to_string(),
        fmt_f64(r.link_bps),
        r.total_time_ns.to_string(),
        opt(r.downtime_ns()),
        opt(d.map(|d| d.pause_ns)),
        opt(d.map(|d| d.final_sync_ns)),
        opt(d.map(|d| d.transfer_ns)),
        opt(d.map(|d| d.state_ns)),
        opt(d.map(|d| d.resume_ns)),
        r.rounds.to_string(),
        r.bytes_sent.to_string(),
        r.pages_sent.to_string(),
        r.zero_pages_sent.to_string(),
        r.pages_resent.to_string(),
        r.final_pages.to_string(),
        r.final_bytes.to_string(),
        r.guest_writes.to_string(),
        r.max_throttle_pct.to_string(),
        csv_field(&r.kind),
        opt(r.postcopy.map(|p| p.duration_ns)),
        opt(r.postcopy.map(|p| p.faults)),
        opt(r.postcopy.map(|p| p.stall_ns)),
        r.xbzrle_hits.to_string(),
    ]
}

pub fn round_row(run_id: usize, r: &RoundRecord) -> Vec<String> {
    vec![
        run_id.to_string(),
        r.round.to_string(),
        r.start_ns.to_string(),
        r.duration_ns.to_string(),
        r.pages_sent.to_string(),
        r.zero_pages_sent.to_string(),
        r.bytes_sent.to_string(),
        r.pages_dirtied.to_string(),
        fmt_f64(r.bandwidth_bps),
        r.est_downtime_ns.to_string(),
        r.throttle_pct.to_string(),
        r.guest_writes.to_string(),
    ]
}

/// Write `runs.csv` for `results` (run ids are their indices).
pub fn write_runs_csv<W: Write>(mut w: W, results: &[RunResult]) -> io::Result<()> {
    writeln!(w, "{}", RUNS_HEADER.join(","))?;
    for (i, r) in results.iter().enumerate() {
        writeln!(w, "{}", run_row(i, &r.report).join(","))?;
    }
    Ok(())
}

/// Write `rounds.csv` for `results`.
pub fn write_rounds_csv<W: Write>(mut w: W, results: &[RunResult]) -> io::Result<()> {
    writeln!(w, "{}", ROUNDS_HEADER.join(","))?;
    for (i, r) in results.iter().enumerate() {
        for rr in &r.rounds {
            writeln!(w, "{}", round_row(i, rr).join(","))?;
        }
    }
    Ok(())
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The summary JSON object of one run (keys are stable; times in ms for reading, bytes exact).
pub fn summary_json(r: &RunReport) -> serde_json::Value {
    let d = r.downtime;
    serde_json::json!({
        "backend": r.backend,
        "scenario": r.scenario,
        "policy": r.policy,
        "workload": r.workload,
        "seed": r.seed,
        "status": r.status.as_str(),
        "reason": r.reason,
        "downtime_ms": r.downtime_ns().map(ms),
        "downtime_breakdown_ms": d.map(|d| serde_json::json!({
            "pause": ms(d.pause_ns),
            "final_sync": ms(d.final_sync_ns),
            "transfer": ms(d.transfer_ns),
            "state": ms(d.state_ns),
            "resume": ms(d.resume_ns),
        })),
        "total_time_ms": ms(r.total_time_ns),
        "rounds": r.rounds,
        "bytes_sent": r.bytes_sent,
        "pages_sent": r.pages_sent,
        "zero_pages_sent": r.zero_pages_sent,
        "pages_resent": r.pages_resent,
        "final_pages": r.final_pages,
        "final_bytes": r.final_bytes,
        "guest_writes": r.guest_writes,
        "max_throttle_pct": r.max_throttle_pct,
        "mem_bytes": r.mem_bytes,
        "link_bps": r.link_bps,
        "kind": r.kind,
        "postcopy": r.postcopy.map(|p| serde_json::json!({
            "missing_pages": p.missing_pages,
            "duration_ms": ms(p.duration_ns),
            "faults": p.faults,
            "pushed_pages": p.pushed_pages,
            "stall_ms": ms(p.stall_ns),
        })),
        "xbzrle_hits": r.xbzrle_hits,
    })
}

/// A human-readable summary of one run with its rounds.
pub fn render_summary(res: &RunResult) -> String {
    let r = &res.report;
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "scenario {}  backend {}  kind {}  policy {}  workload {}  seed {}",
        r.scenario, r.backend, r.kind, r.policy, r.workload, r.seed
    );
    let _ = writeln!(s, "status     {} ({})", r.status.as_str(), r.reason);
    match r.downtime {
        Some(d) => {
            let _ = writeln!(
                s,
                "downtime   {:.3} ms  = pause {:.3} + final sync {:.3} + transfer {:.3} + state {:.3} + resume {:.3}",
                ms(d.total_ns()),
                ms(d.pause_ns),
                ms(d.final_sync_ns),
                ms(d.transfer_ns),
                ms(d.state_ns),
                ms(d.resume_ns)
            );
        }
        None => {
            let _ = writeln!(s, "downtime   none (the VM stayed on the source)");
        }
    }
    let _ = writeln!(s, "total time {:.3} s", r.total_time_ns as f64 / 1e9);
    if let Some(p) = r.postcopy {
        let _ = writeln!(
            s,
            "post-copy  {:.3} s after resume: {} pages missing, {} faults, {} pushed; guest stalled {:.3} ms",
            p.duration_ns as f64 / 1e9,
            p.missing_pages,
            p.faults,
            p.pushed_pages,
            ms(p.stall_ns)
        );
    }
    if r.xbzrle_hits > 0 {
        let _ = writeln!(s, "xbzrle     {} pages sent as deltas", r.xbzrle_hits);
    }
    let _ = writeln!(
        s,
        "sent       {:.3} GiB in {} pages ({} zero, {} re-sent); {} pages in the blackout",
        r.bytes_sent as f64 / (1u64 << 30) as f64,
        r.pages_sent,
        r.zero_pages_sent,
        r.pages_resent,
        r.final_pages
    );
    let _ = writeln!(s, "rounds     {}", r.rounds);
    let _ = writeln!(
        s,
        "  round    start_s   dur_ms     pages_sent   dirtied      Mbit/s   est_dt_ms  thr%"
    );
    let shown: Vec<&RoundRecord> = if res.rounds.len() > 24 {
        res.rounds[..12]
            .iter()
            .chain(res.rounds[res.rounds.len() - 12..].iter())
            .collect()
    } else {
        res.rounds.iter().collect()
    };
    for (i, rr) in shown.iter().enumerate() {
        if res.rounds.len() > 24 && i == 12 {
            let _ = writeln!(s, "  ... {} rounds omitted ...", res.rounds.len() - 24);
        }
        let _ = writeln!(
            s,
            "  {:>5} {:>10.3} {:>8.1} {:>14} {:>9} {:>11.1} {:>11.1} {:>5}",
            rr.round,
            rr.start_ns as f64 / 1e9,
            ms(rr.duration_ns),
            rr.pages_sent,
            rr.pages_dirtied,
            rr.bandwidth_bps / 1e6,
            ms(rr.est_downtime_ns),
            rr.throttle_pct
        );
    }
    s
}

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
    let mut out = String::new();
    push_field(&mut out, s);
    out
}

/// Deterministic float formatting: integers print without a fraction, others with up to 6
/// significant decimals so outputs are byte-stable and readable.
pub fn fmt_f64(x: f64) -> String {
    let mut out = String::new();
    push_f64(&mut out, x);
    out
}

/// Append `s` as a CSV field (quoted when it holds a comma, quote or line break).
pub fn push_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        for part in s.split_inclusive('"') {
            out.push_str(part);
            if part.ends_with('"') {
                out.push('"');
            }
        }
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// Append `x` as [`fmt_f64`] writes it.
pub fn push_f64(out: &mut String, x: f64) {
    use std::fmt::Write as _;
    if !x.is_finite() {
        return;
    }
    if x.fract() == 0.0 && x.abs() < 1e15 {
        out.push_str(itoa::Buffer::new().format(x as i64));
    } else {
        // Consecutive rounds often share a rate: the last figure is kept, as exact decimal
        // formatting costs more than the rest of a row.
        LAST_F64.with(|last| {
            let mut last = last.borrow_mut();
            if last.0 != x.to_bits() || last.1.is_empty() {
                last.1.clear();
                // Writing to a String cannot fail.
                let _ = write!(last.1, "{x:.6}");
                let kept = last.1.trim_end_matches('0').trim_end_matches('.').len();
                last.1.truncate(kept);
                last.0 = x.to_bits();
            }
            out.push_str(&last.1);
        });
    }
}

thread_local! {
    /// The last fractional figure [`push_f64`] wrote: its bits and its text.
    static LAST_F64: std::cell::RefCell<(u64, String)> = const {
        std::cell::RefCell::new((0, String::new()))
    };
}

/// Append an integer in decimal.
#[inline]
fn push_int<I: itoa::Integer>(out: &mut String, v: I) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Append an optional integer (nothing when absent).
#[inline]
fn push_opt(out: &mut String, v: Option<u64>) {
    if let Some(v) = v {
        push_int(out, v);
    }
}

/// Append one `runs.csv` row (without trailing `param_*` values or the line break): the
/// columns of [`RUNS_HEADER`].
pub fn push_run_row(out: &mut String, run_id: usize, r: &RunReport) {
    let d = r.downtime;
    let c = |out: &mut String| out.push(',');
    push_int(out, run_id);
    for s in [&r.backend, &r.scenario, &r.policy, &r.workload] {
        c(out);
        push_field(out, s);
    }
    c(out);
    push_int(out, r.seed);
    c(out);
    push_int(out, r.replicate);
    c(out);
    out.push_str(r.status.as_str());
    c(out);
    push_field(out, &r.reason);
    c(out);
    push_int(out, r.mem_bytes);
    c(out);
    push_f64(out, r.link_bps);
    c(out);
    push_int(out, r.total_time_ns);
    for v in [
        r.downtime_ns(),
        d.map(|d| d.pause_ns),
        d.map(|d| d.final_sync_ns),
        d.map(|d| d.transfer_ns),
        d.map(|d| d.state_ns),
        d.map(|d| d.resume_ns),
    ] {
        c(out);
        push_opt(out, v);
    }
    for v in [
        r.rounds as u64,
        r.bytes_sent,
        r.pages_sent,
        r.zero_pages_sent,
        r.pages_resent,
        r.final_pages,
        r.final_bytes,
        r.guest_writes,
        r.max_throttle_pct as u64,
    ] {
        c(out);
        push_int(out, v);
    }
    c(out);
    push_field(out, &r.kind);
    for v in [
        r.postcopy.map(|p| p.duration_ns),
        r.postcopy.map(|p| p.faults),
        r.postcopy.map(|p| p.stall_ns),
    ] {
        c(out);
        push_opt(out, v);
    }
    c(out);
    push_int(out, r.xbzrle_hits);
}

/// One `runs.csv` row as a line (see [`push_run_row`]), without the line break.
pub fn run_row(run_id: usize, r: &RunReport) -> String {
    let mut out = String::with_capacity(256);
    push_run_row(&mut out, run_id, r);
    out
}

/// Append one `rounds.csv` row and its line break: the columns of [`ROUNDS_HEADER`].
pub fn push_round_line(out: &mut String, run_id: usize, r: &RoundRecord) {
    push_int(out, run_id);
    for v in [
        r.round as u64,
        r.start_ns,
        r.duration_ns,
        r.pages_sent,
        r.zero_pages_sent,
        r.bytes_sent,
        r.pages_dirtied,
    ] {
        out.push(',');
        push_int(out, v);
    }
    out.push(',');
    push_f64(out, r.bandwidth_bps);
    for v in [r.est_downtime_ns, r.throttle_pct as u64, r.guest_writes] {
        out.push(',');
        push_int(out, v);
    }
    out.push('\n');
}

/// Write `runs.csv` for `results` (run ids are their indices).
pub fn write_runs_csv<W: Write>(mut w: W, results: &[RunResult]) -> io::Result<()> {
    writeln!(w, "{}", RUNS_HEADER.join(","))?;
    let mut line = String::new();
    for (i, r) in results.iter().enumerate() {
        line.clear();
        push_run_row(&mut line, i, &r.report);
        line.push('\n');
        w.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// Write `rounds.csv` for `results`.
pub fn write_rounds_csv<W: Write>(mut w: W, results: &[RunResult]) -> io::Result<()> {
    writeln!(w, "{}", ROUNDS_HEADER.join(","))?;
    let mut lines = String::new();
    for (i, r) in results.iter().enumerate() {
        lines.clear();
        for rr in &r.rounds {
            push_round_line(&mut lines, i, rr);
        }
        w.write_all(lines.as_bytes())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `fmt_f64` as plainly as it can be written.
    fn plain_f64(x: f64) -> String {
        if !x.is_finite() {
            String::new()
        } else if x.fract() == 0.0 && x.abs() < 1e15 {
            format!("{}", x as i64)
        } else {
            let s = format!("{x:.6}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }

    #[test]
    fn fractions_print_the_same_whatever_printed_before() {
        // Repeats, alternations and integers in between: a kept figure must only ever stand
        // for the very same value.
        let xs = [
            1.5,
            1.5,
            2.25,
            1.5,
            998_869_337.674_637_1,
            998_869_337.674_637_2,
            f64::NAN,
            2.25,
            3.0,
            0.1 + 0.2,
            -0.000_000_4,
            1e20,
            998_869_337.674_637_1,
        ];
        for x in xs {
            let mut s = String::from("x,");
            push_f64(&mut s, x);
            assert_eq!(s, format!("x,{}", plain_f64(x)), "{x:e}");
            assert_eq!(fmt_f64(x), plain_f64(x));
        }
    }

    #[test]
    fn rows_hold_their_header_columns_with_fields_quoted() {
        let r = RunReport {
            backend: "sim".into(),
            scenario: "a,\"b\"".into(),
            policy: "qemu".into(),
            workload: "zipf".into(),
            seed: 7,
            replicate: 2,
            status: Status::Forced,
            reason: "limit \"x\", then y".into(),
            mem_bytes: 1 << 32,
            link_bps: 1.25e9,
            total_time_ns: 123,
            downtime: Some(Downtime {
                pause_ns: 1,
                final_sync_ns: 2,
                transfer_ns: 3,
                state_ns: 4,
                resume_ns: 5,
            }),
            rounds: 9,
            bytes_sent: 10,
            pages_sent: 11,
            zero_pages_sent: 12,
            pages_resent: 13,
            final_pages: 14,
            final_bytes: 15,
            guest_writes: 16,
            max_throttle_pct: 17,
            kind: "live".into(),
            postcopy: None,
            xbzrle_hits: 18,
        };
        let row = run_row(4, &r);
        assert_eq!(
            row,
            "4,sim,\"a,\"\"b\"\"\",qemu,zipf,7,2,forced,\"limit \"\"x\"\", then y\",4294967296,\
             1250000000,123,15,1,2,3,4,5,9,10,11,12,13,14,15,16,17,live,,,,18"
        );
        // Unquoted, the fields line up with the header.
        let plain = RunReport {
            scenario: "s".into(),
            reason: "r".into(),
            ..r.clone()
        };
        assert_eq!(run_row(4, &plain).split(',').count(), RUNS_HEADER.len());
        let rec = RoundRecord {
            round: 3,
            start_ns: 100,
            duration_ns: 200,
            pages_sent: 300,
            zero_pages_sent: 4,
            bytes_sent: 500,
            pages_dirtied: 6,
            bandwidth_bps: 998_869_337.674_637,
            est_downtime_ns: 7,
            throttle_pct: 8,
            guest_writes: 9,
        };
        let mut lines = String::new();
        push_round_line(&mut lines, 4, &rec);
        push_round_line(&mut lines, 5, &rec);
        assert_eq!(
            lines,
            "4,3,100,200,300,4,500,6,998869337.674637,7,8,9\n\
             5,3,100,200,300,4,500,6,998869337.674637,7,8,9\n"
        );
        assert_eq!(
            lines.lines().next().unwrap().split(',').count(),
            ROUNDS_HEADER.len()
        );
    }
}

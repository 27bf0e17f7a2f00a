//! `migsim validate GRID.toml`: predict every scenario of a grid with the (calibrated)
//! simulator, write the predictions, then migrate real KVM guests with the same scenario, seed
//! and policy, and report the errors.
//!
//! ```toml
//! [validate]
//! replicates = 3
//! calibration = "calibration.toml"   # relative to the grid file
//! scenarios = ["idle.toml", "u64-2k-125.toml"]
//! ```
//!
//! Output directory: `predictions/` (runs.csv, rounds.csv; written before any real run
//! starts), `runs.csv` + `rounds.csv` (sim and kvm rows, for `migsim plot --kind
//! predicted-vs-measured`), `trace/` (trace-driven predictions: the simulator replaying the
//! dirty sets each real run harvested, so workload-model error and engine error separate),
//! `validation.csv` (one row per scenario, both errors) and `summary.txt`.

use super::output::{write_atomic, write_run_outputs};
use super::real::harvest_trace;
use super::real::process_options;
use super::run::{calibrated, load_scenario, with_trace};
use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;
use sim::metrics::{RunResult, Status};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Grid file (TOML with a `[validate]` table).
    pub grid: PathBuf,
    /// Output directory (default: the grid's `out`, else `results/validation`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replicates per scenario (overrides the grid).
    #[arg(long)]
    pub replicates: Option<u32>,
    /// Calibration file for the simulator (overrides the grid's and the scenarios').
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Only write the predictions; run nothing on KVM.
    #[arg(long)]
    pub predict_only: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    validate: Grid,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Grid {
    #[serde(default = "three")]
    replicates: u32,
    #[serde(default)]
    calibration: Option<PathBuf>,
    scenarios: Vec<PathBuf>,
    #[serde(default)]
    out: Option<PathBuf>,
}

fn three() -> u32 {
    3
}

/// Tolerances of the goal (issue 6).
pub const DOWNTIME_REL: f64 = 0.10;
pub const DOWNTIME_ABS_MS: f64 = 0.5;
pub const TOTAL_REL: f64 = 0.05;

/// One scenario's comparison over its replicates.
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub scenario: String,
    pub policy: String,
    pub replicates: usize,
    pub pred_status: String,
    pub meas_status: String,
    pub pred_downtime_ms: Option<f64>,
    pub meas_downtime_ms: Option<f64>,
    pub meas_downtime_min_ms: Option<f64>,
    pub meas_downtime_max_ms: Option<f64>,
    pub pred_total_s: f64,
    pub meas_total_s: f64,
    pub meas_total_min_s: f64,
    pub meas_total_max_s: f64,
    pub pred_rounds: f64,
    pub meas_rounds: f64,
    /// Replicate pairs (same seed) whose round counts are equal.
    pub rounds_pairs_equal: usize,
    pub pred_bytes: f64,
    pub meas_bytes: f64,
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn dt_ms(r: &RunResult) -> Option<f64> {
    r.report.downtime.map(|d| d.total_ns() as f64 / 1e6)
}

fn statuses(v: &[&RunResult]) -> String {
    let mut s: Vec<&str> = v.iter().map(|r| r.report.status.as_str()).collect();
    s.dedup();
    s.join("/")
}

impl Row {
    /// Compare predictions and measurements replicate by replicate (`pred[i]` and `meas[i]`
    /// share a seed).
    pub fn new(pred: &[&RunResult], meas: &[&RunResult]) -> Row {
        let first = pred[0];
        let dts = |v: &[&RunResult]| -> Option<Vec<f64>> { v.iter().map(|r| dt_ms(r)).collect() };
        let tot = |v: &[&RunResult]| -> Vec<f64> {
            v.iter()
                .map(|r| r.report.total_time_ns as f64 / 1e9)
                .collect()
        };
        let md = dts(meas);
        let mt = tot(meas);
        Row {
            scenario: first.report.scenario.clone(),
            policy: first.report.policy.clone(),
            replicates: meas.len(),
            pred_status: statuses(pred),
            meas_status: statuses(meas),
            pred_downtime_ms: dts(pred).map(|v| mean(&v)),
            meas_downtime_ms: md.as_ref().map(|v| mean(v)),
            meas_downtime_min_ms: md
                .as_ref()
                .map(|v| v.iter().copied().fold(f64::MAX, f64::min)),
            meas_downtime_max_ms: md
                .as_ref()
                .map(|v| v.iter().copied().fold(f64::MIN, f64::max)),
            pred_total_s: mean(&tot(pred)),
            meas_total_s: mean(&mt),
            meas_total_min_s: mt.iter().copied().fold(f64::MAX, f64::min),
            meas_total_max_s: mt.iter().copied().fold(f64::MIN, f64::max),
            pred_rounds: mean(
                &pred
                    .iter()
                    .map(|r| r.report.rounds as f64)
                    .collect::<Vec<_>>(),
            ),
            meas_rounds: mean(
                &meas
                    .iter()
                    .map(|r| r.report.rounds as f64)
                    .collect::<Vec<_>>(),
            ),
            rounds_pairs_equal: pred
                .iter()
                .zip(meas)
                .filter(|(p, m)| p.report.rounds == m.report.rounds)
                .count(),
            pred_bytes: mean(
                &pred
                    .iter()
                    .map(|r| r.report.bytes_sent as f64)
                    .collect::<Vec<_>>(),
            ),
            meas_bytes: mean(
                &meas
                    .iter()
                    .map(|r| r.report.bytes_sent as f64)
                    .collect::<Vec<_>>(),
            ),
        }
    }

    /// Downtime within ±10 % or ±0.5 ms (whichever is looser); a scenario where neither side
    /// moved the VM (both timed out, say) counts when the statuses agree.
    pub fn downtime_ok(&self) -> bool {
        match (self.pred_downtime_ms, self.meas_downtime_ms) {
            (Some(p), Some(m)) => (p - m).abs() <= (DOWNTIME_REL * m).max(DOWNTIME_ABS_MS),
            (None, None) => self.pred_status == self.meas_status,
            _ => false,
        }
    }

    pub fn total_ok(&self) -> bool {
        (self.pred_total_s - self.meas_total_s).abs() <= TOTAL_REL * self.meas_total_s
    }

    /// Rounds exact: every replicate pair has the same number of rounds.
    pub fn rounds_ok(&self) -> bool {
        self.replicates > 0 && self.rounds_pairs_equal == self.replicates
    }
}

pub const CSV_HEADER: &str = "scenario,policy,replicates,pred_status,meas_status,pred_downtime_ms,meas_downtime_ms,meas_downtime_min_ms,meas_downtime_max_ms,downtime_abs_err_ms,downtime_rel_err,downtime_ok,pred_total_s,meas_total_s,meas_total_min_s,meas_total_max_s,total_abs_err_s,total_rel_err,total_ok,pred_rounds,meas_rounds,rounds_pairs_equal,rounds_ok,pred_bytes,meas_bytes,bytes_rel_err";

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or(String::new(), |x| format!("{x:.digits$}"))
}

pub fn csv_line(r: &Row) -> String {
    let dt_err = r
        .pred_downtime_ms
        .zip(r.meas_downtime_ms)
        .map(|(p, m)| p - m);
    let dt_rel = r
        .pred_downtime_ms
        .zip(r.meas_downtime_ms)
        .map(|(p, m)| (p - m) / m);
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{},{:.2},{:.2},{},{},{:.0},{:.0},{:.4}",
        r.scenario,
        r.policy,
        r.replicates,
        r.pred_status,
        r.meas_status,
        opt(r.pred_downtime_ms, 3),
        opt(r.meas_downtime_ms, 3),
        opt(r.meas_downtime_min_ms, 3),
        opt(r.meas_downtime_max_ms, 3),
        opt(dt_err, 3),
        opt(dt_rel, 4),
        r.downtime_ok(),
        r.pred_total_s,
        r.meas_total_s,
        r.meas_total_min_s,
        r.meas_total_max_s,
        r.pred_total_s - r.meas_total_s,
        (r.pred_total_s - r.meas_total_s) / r.meas_total_s,
        r.total_ok(),
        r.pred_rounds,
        r.meas_rounds,
        r.rounds_pairs_equal,
        r.rounds_ok(),
        r.pred_bytes,
        r.meas_bytes,
        (r.pred_bytes - r.meas_bytes) / r.meas_bytes.max(1.0),
    )
}

pub fn summary_line(rows: &[Row]) -> String {
    let n = rows.len().max(1) as f64;
    let share = |f: &dyn Fn(&Row) -> bool| rows.iter().filter(|r| f(r)).count();
    let (d, t, k) = (
        share(&|r| r.downtime_ok()),
        share(&|r| r.total_ok()),
        share(&|r| r.rounds_ok()),
    );
    format!(
        "downtime within ±10 % or ±0.5 ms: {d}/{} ({:.0} %); total time within ±5 %: {t}/{} ({:.0} %); rounds exact: {k}/{} ({:.0} %)",
        rows.len(),
        100.0 * d as f64 / n,
        rows.len(),
        100.0 * t as f64 / n,
        rows.len(),
        100.0 * k as f64 / n,
    )
}

pub fn render_table(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<26} {:<14} {:>10} {:>18} {:>7} {:>8} {:>17} {:>7} {:>9} {:>3}",
        "scenario",
        "policy",
        "pred dt ms",
        "meas dt ms (range)",
        "dt err",
        "pred s",
        "meas s (range)",
        "t err",
        "rounds",
        "ok"
    );
    for r in rows {
        let dt_err = r
            .pred_downtime_ms
            .zip(r.meas_downtime_ms)
            .map_or("-".to_string(), |(p, m)| {
                format!("{:+.1}%", 100.0 * (p - m) / m)
            });
        let _ = writeln!(
            s,
            "{:<26} {:<14} {:>10} {:>18} {:>7} {:>8.2} {:>17} {:>7} {:>9} {}{}{}",
            r.scenario,
            r.policy,
            opt(r.pred_downtime_ms, 2),
            match (
                r.meas_downtime_ms,
                r.meas_downtime_min_ms,
                r.meas_downtime_max_ms
            ) {
                (Some(m), Some(a), Some(b)) => format!("{m:.2} ({a:.1}-{b:.1})"),
                _ => r.meas_status.clone(),
            },
            dt_err,
            r.pred_total_s,
            format!(
                "{:.2} ({:.2}-{:.2})",
                r.meas_total_s, r.meas_total_min_s, r.meas_total_max_s
            ),
            format!(
                "{:+.1}%",
                100.0 * (r.pred_total_s - r.meas_total_s) / r.meas_total_s
            ),
            format!("{:.1}/{:.1}", r.pred_rounds, r.meas_rounds),
            if r.downtime_ok() { "d" } else { "-" },
            if r.total_ok() { "t" } else { "-" },
            if r.rounds_ok() { "r" } else { "-" },
        );
    }
    s
}

pub const TRACE_HEADER: &str = "trace_downtime_ms,trace_downtime_rel_err,trace_downtime_ok,trace_total_s,trace_total_rel_err,trace_total_ok,trace_rounds,trace_rounds_ok,achieved_pps,target_pps";

/// The trace-driven columns (a [`Row`] whose predictions replayed the real runs' traces).
fn trace_cols(t: &Row) -> String {
    format!(
        "{},{},{},{:.4},{:.4},{},{:.2},{}",
        opt(t.pred_downtime_ms, 3),
        opt(
            t.pred_downtime_ms
                .zip(t.meas_downtime_ms)
                .map(|(p, m)| (p - m) / m),
            4
        ),
        t.downtime_ok(),
        t.pred_total_s,
        (t.pred_total_s - t.meas_total_s) / t.meas_total_s,
        t.total_ok(),
        t.pred_rounds,
        t.rounds_ok(),
    )
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub fn run(a: ValidateArgs) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&a.grid)
        .with_context(|| format!("cannot read {}", a.grid.display()))?;
    let g: GridFile = sim::scenario::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.grid.display()))?;
    let g = g.validate;
    let base = a.grid.parent().unwrap_or(Path::new("")).to_path_buf();
    let reps = a.replicates.unwrap_or(g.replicates).max(1);
    let out = a
        .out
        .clone()
        .or_else(|| g.out.as_ref().map(|o| resolve(&base, o)))
        .unwrap_or_else(|| PathBuf::from("results/validation"));
    let cal_flag = a
        .calibration
        .clone()
        .or_else(|| g.calibration.as_ref().map(|c| resolve(&base, c)));
    // Load everything first so a bad file fails before any run.
    let mut cases = Vec::new();
    for p in &g.scenarios {
        let path = resolve(&base, p);
        let ck = load_scenario(Some(&path), None)?;
        let sim_ck = calibrated(ck.clone(), Some(&path), cal_flag.as_ref())?;
        cases.push((ck, sim_ck));
    }
    // 1. Predictions, written before anything is measured.
    let mut preds: Vec<RunResult> = Vec::new();
    for (_, sim_ck) in &cases {
        for r in 0..reps {
            preds.push(sim::simulate(sim_ck, r));
        }
    }
    write_run_outputs(&out.join("predictions"), &preds)?;
    eprintln!(
        "wrote {} predictions to {}/predictions before any real run",
        preds.len(),
        out.display()
    );
    if a.predict_only {
        return Ok(ExitCode::SUCCESS);
    }
    if !real_backend::kvm_available() {
        anyhow::bail!("/dev/kvm is not available on this machine");
    }
    // 2. Measurements.
    let mut meas: Vec<RunResult> = Vec::new();
    // Trace-driven predictions: the simulator replaying the dirty sets each real run harvested.
    let mut traced: Vec<RunResult> = Vec::new();
    let mut rates: Vec<(f64, f64)> = Vec::new();
    for (ck, sim_ck) in &cases {
        for r in 0..reps {
            let opts = real_backend::RealOptions {
                record_trace: true,
                ..process_options(r, true)?
            };
            let run = real_backend::migrate(ck, &opts)
                .with_context(|| format!("real run of {} replicate {r}", ck.scenario.name))?;
            let mut tck = sim_ck.clone();
            let trace = harvest_trace(&run, tck.mem_pages);
            with_trace(&mut tck, trace);
            traced.push(sim::simulate(&tck, r));
            rates.push((run.achieved_pps, run.target_pps));
            let res = run.result;
            eprintln!(
                "{} #{r}: {} downtime {} total {:.3} s rounds {}",
                ck.scenario.name,
                res.report.status.as_str(),
                dt_ms(&res).map_or("-".into(), |d| format!("{d:.3} ms")),
                res.report.total_time_ns as f64 / 1e9,
                res.report.rounds
            );
            if res.report.status == Status::Failed {
                eprintln!("  failed: {}", res.report.reason);
            }
            meas.push(res);
        }
    }
    // 3. Comparison.
    let n = reps as usize;
    let rows_of = |pred: &[RunResult]| -> Vec<Row> {
        (0..cases.len())
            .map(|i| {
                let p: Vec<&RunResult> = pred[i * n..(i + 1) * n].iter().collect();
                let m: Vec<&RunResult> = meas[i * n..(i + 1) * n].iter().collect();
                Row::new(&p, &m)
            })
            .collect()
    };
    let rows = rows_of(&preds);
    let trows = rows_of(&traced);
    write_run_outputs(&out.join("trace"), &traced)?;
    let mut all = preds.clone();
    all.extend(meas.iter().cloned());
    write_run_outputs(&out, &all)?;
    let mut csv = format!("{CSV_HEADER},{TRACE_HEADER}\n");
    for (i, (r, t)) in rows.iter().zip(&trows).enumerate() {
        let rs = &rates[i * n..(i + 1) * n];
        let ach = rs.iter().map(|x| x.0).sum::<f64>() / n as f64;
        csv.push_str(&format!(
            "{},{},{:.0},{:.0}\n",
            csv_line(r),
            trace_cols(t),
            ach,
            rs[0].1
        ));
    }
    write_atomic(&out.join("validation.csv"), |b| {
        b.extend_from_slice(csv.as_bytes());
        Ok(())
    })?;
    let table = format!(
        "model-driven prediction vs measurement:\n{}\ntrace-driven prediction (replaying the harvested dirty sets) vs measurement:\n{}",
        render_table(&rows),
        render_table(&trows)
    );
    let summary = format!(
        "model-driven: {}\ntrace-driven: {}",
        summary_line(&rows),
        summary_line(&trows)
    );
    write_atomic(&out.join("summary.txt"), |b| {
        b.extend_from_slice(format!("{table}\n{summary}\n").as_bytes());
        Ok(())
    })?;
    print!("{table}");
    println!("{summary}");
    println!(
        "wrote {}/{{validation.csv,summary.txt,runs.csv,rounds.csv,predictions/}}",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(dt_ms: f64, total_s: f64, rounds: u32) -> RunResult {
        let mut sc = sim::Scenario::default_scenario();
        sc.vm.memory = workloads::ByteSize(64 << 20);
        sc.workload = workloads::WorkloadSpec::Idle(workloads::spec::IdleSpec { rate_pps: 0.0 });
        let mut r = sim::simulate(&sc.check().unwrap(), 0);
        r.report.downtime = Some(sim::metrics::Downtime {
            transfer_ns: (dt_ms * 1e6) as u64,
            ..Default::default()
        });
        r.report.total_time_ns = (total_s * 1e9) as u64;
        r.report.rounds = rounds;
        r
    }

    #[test]
    fn tolerances_take_the_looser_bound() {
        let p = run_with(2.0, 10.0, 3);
        // 0.4 ms off a 2 ms downtime: 20 % but under 0.5 ms -> ok.
        let m = run_with(2.4, 10.4, 3);
        let row = Row::new(&[&p], &[&m]);
        assert!(row.downtime_ok());
        assert!(row.total_ok());
        assert!(row.rounds_ok());
        // 12 % off 100 ms -> not ok; total 6 % off -> not ok; rounds differ.
        let p = run_with(112.0, 10.6, 3);
        let m = run_with(100.0, 10.0, 4);
        let row = Row::new(&[&p], &[&m]);
        assert!(!row.downtime_ok());
        assert!(!row.total_ok());
        assert!(!row.rounds_ok());
        assert!(summary_line(&[row]).contains("0/1"));
    }

    #[test]
    fn csv_line_has_every_column() {
        let p = run_with(5.0, 1.0, 2);
        let row = Row::new(&[&p, &p], &[&p, &p]);
        assert_eq!(
            csv_line(&row).split(',').count(),
            CSV_HEADER.split(',').count()
        );
    }
}

//! `migsim compare`: every policy on the identical write trace, side by side, with the
//! hindsight oracle's best achievable blackout.

use super::output::write_atomic;
use super::run::{calibrated, load_scenario};
use anyhow::{bail, Result};
use clap::Args;
use rayon::prelude::*;
use sim::metrics::{self, fmt_f64, RunResult};
use sim::policy::PolicySpec;
use sim::{Checked, Oracle, OracleCaps};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Scenario files (the built-in default scenario if none). Each is compared separately.
    pub scenarios: Vec<PathBuf>,
    /// `all`, or a comma-separated list of policy names (`qemu,xen-legacy,adaptive`).
    #[arg(long, default_value = "all")]
    pub policies: String,
    /// Directory for compare.csv, runs.csv and rounds.csv.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Worker threads (output does not depend on it).
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Oracle: only stop points whose total migration time stays within this many seconds.
    #[arg(long)]
    pub oracle_max_time_s: Option<f64>,
    /// Oracle: only stop points whose total bytes stay within this many GiB.
    #[arg(long)]
    pub oracle_max_gib: Option<f64>,
    /// Calibration file overriding every scenario's fixed costs (default: each scenario's own
    /// `calibration` field, if any).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
}

/// Policies that leave the guest's speed alone and finish in pre-copy: the peers the adaptive
/// policy is measured against.
pub const PEERS: &[&str] = &[
    "hyperv-2008r2",
    "hyperv-2012r2",
    "xen-legacy",
    "xen-v2",
    "qemu",
    "cloud-hypervisor",
    "downtime-ramp",
    "simgrid",
];

pub fn parse_policies(list: &str) -> Result<Vec<PolicySpec>> {
    if list.trim() == "all" {
        return Ok(PolicySpec::all_defaults());
    }
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match PolicySpec::by_name(name) {
            Some(p) => out.push(p),
            None => bail!(
                "--policies: unknown policy `{name}` (known: {})",
                PolicySpec::known_names().join(", ")
            ),
        }
    }
    if out.is_empty() {
        bail!("--policies: no policy given");
    }
    Ok(out)
}

/// One scenario's comparison.
pub struct Comparison {
    pub scenario: String,
    pub results: Vec<RunResult>,
    pub oracle: Option<Oracle>,
}

/// Run every policy on the scenario (same seed, so the same write trace) and the oracle.
///
/// The oracle is the best stop point over (a) the two replays of [`sim::oracle`] and (b) the
/// trajectories of the policies that leave the guest's speed alone and end in pre-copy, up to
/// their own stops: so no such policy can beat it. Throttling and post-copy runs change the
/// write trace or the meaning of the blackout and are compared with it, not included.
pub fn compare(ck: &Checked, policies: &[PolicySpec], caps: OracleCaps) -> Comparison {
    let runs: Vec<(RunResult, Option<Oracle>)> = policies
        .par_iter()
        .map(|p| {
            let mut sc = ck.scenario.clone();
            sc.policy = p.clone();
            match sc.check() {
                Ok(c) => sim::simulate_probed(&c, 0, caps),
                Err(e) => unreachable!("policy defaults are valid: {e:?}"),
            }
        })
        .collect();
    let moved: Vec<u64> = runs
        .iter()
        .filter(|r| r.0.report.status.moved())
        .map(|r| r.0.report.total_time_ns)
        .collect();
    let horizon = moved.iter().copied().max().unwrap_or_else(|| {
        // Nobody finished: look three full passes ahead.
        let pass = ck.mem_bytes() as f64 * 8e9 / ck.scenario.link.bandwidth.0;
        (3.0 * pass) as u64
    });
    let mut oracle = sim::oracle(ck, 0, horizon, caps);
    let mut results = Vec::with_capacity(runs.len());
    for (r, cand) in runs {
        if r.report.max_throttle_pct == 0 && r.report.postcopy.is_none() {
            oracle = Oracle::min(oracle, cand);
        }
        results.push(r);
    }
    Comparison {
        scenario: ck.scenario.name.clone(),
        results,
        oracle,
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

pub fn ratio(r: &RunResult, o: Option<&Oracle>) -> Option<f64> {
    let d = r.report.downtime_ns()?;
    let o = o?;
    (r.report.postcopy.is_none() && o.downtime_ns > 0).then(|| d as f64 / o.downtime_ns as f64)
}

pub fn render(c: &Comparison) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "scenario {}", c.scenario);
    let _ = writeln!(
        s,
        "  {:<20} {:<10} {:>12} {:>10} {:>7} {:>9} {:>9}",
        "policy", "status", "downtime_ms", "total_s", "rounds", "GiB_sent", "dt/oracle"
    );
    for r in &c.results {
        let rep = &r.report;
        let _ = writeln!(
            s,
            "  {:<20} {:<10} {:>12} {:>10.3} {:>7} {:>9.3} {:>9}",
            rep.policy,
            rep.status.as_str(),
            rep.downtime_ns()
                .map_or("-".into(), |d| format!("{:.3}", ms(d))),
            rep.total_time_ns as f64 / 1e9,
            rep.rounds,
            rep.bytes_sent as f64 / (1u64 << 30) as f64,
            ratio(r, c.oracle.as_ref()).map_or("-".into(), |x| format!("{x:.3}")),
        );
    }
    match &c.oracle {
        Some(o) => {
            let _ = writeln!(
                s,
                "  {:<20} {:<10} {:>12.3} {:>10.3} {:>7} {:>9.3}   (pause at {:.3} s)",
                "oracle",
                "-",
                ms(o.downtime_ns),
                o.total_time_ns as f64 / 1e9,
                o.round + 1,
                o.bytes_sent as f64 / (1u64 << 30) as f64,
                o.stop_at_ns as f64 / 1e9
            );
        }
        None => {
            let _ = writeln!(s, "  oracle: no stop point satisfies the caps");
        }
    }
    s
}

pub const COMPARE_HEADER: &[&str] = &[
    "scenario",
    "policy",
    "status",
    "reason",
    "downtime_ns",
    "total_time_ns",
    "rounds",
    "bytes_sent",
    "max_throttle_pct",
    "postcopy_ns",
    "oracle_downtime_ns",
    "oracle_stop_ns",
    "downtime_vs_oracle",
];

pub fn compare_rows(c: &Comparison) -> Vec<Vec<String>> {
    c.results
        .iter()
        .map(|r| {
            let rep = &r.report;
            vec![
                metrics::csv_field(&c.scenario),
                metrics::csv_field(&rep.policy),
                rep.status.as_str().into(),
                metrics::csv_field(&rep.reason),
                rep.downtime_ns().map(|d| d.to_string()).unwrap_or_default(),
                rep.total_time_ns.to_string(),
                rep.rounds.to_string(),
                rep.bytes_sent.to_string(),
                rep.max_throttle_pct.to_string(),
                rep.postcopy
                    .map(|p| p.duration_ns.to_string())
                    .unwrap_or_default(),
                c.oracle
                    .map(|o| o.downtime_ns.to_string())
                    .unwrap_or_default(),
                c.oracle
                    .map(|o| o.stop_at_ns.to_string())
                    .unwrap_or_default(),
                ratio(r, c.oracle.as_ref()).map(fmt_f64).unwrap_or_default(),
            ]
        })
        .collect()
}

/// How `adaptive` fares against the peers on each scenario: (scenario, adaptive downtime ÷ best
/// peer downtime, adaptive bytes ÷ mean peer bytes).
pub fn adaptive_vs_peers(cs: &[Comparison]) -> Vec<(String, f64, f64)> {
    let mut out = Vec::new();
    for c in cs {
        let Some(a) = c.results.iter().find(|r| r.report.policy == "adaptive") else {
            continue;
        };
        let peers: Vec<&RunResult> = c
            .results
            .iter()
            .filter(|r| PEERS.contains(&r.report.policy.as_str()) && r.report.status.moved())
            .collect();
        let (Some(ad), Some(best)) = (
            a.report.downtime_ns(),
            peers.iter().filter_map(|r| r.report.downtime_ns()).min(),
        ) else {
            continue;
        };
        let mean_bytes = peers
            .iter()
            .map(|r| r.report.bytes_sent as f64)
            .sum::<f64>()
            / peers.len() as f64;
        out.push((
            c.scenario.clone(),
            ad as f64 / best as f64,
            a.report.bytes_sent as f64 / mean_bytes,
        ));
    }
    out
}

pub fn run(a: CompareArgs) -> Result<ExitCode> {
    let policies = parse_policies(&a.policies)?;
    let mut cks = Vec::new();
    if a.scenarios.is_empty() {
        let ck = load_scenario(None, None)?;
        cks.push(calibrated(ck, None, a.calibration.as_ref())?);
    }
    for p in &a.scenarios {
        let ck = load_scenario(Some(p), None)?;
        cks.push(calibrated(ck, Some(p), a.calibration.as_ref())?);
    }
    let caps = OracleCaps {
        max_total_ns: a.oracle_max_time_s.map(|s| (s * 1e9) as u64),
        max_bytes: a.oracle_max_gib.map(|g| (g * (1u64 << 30) as f64) as u64),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.jobs.unwrap_or(0))
        .build()?;
    let comps: Vec<Comparison> = pool.install(|| {
        cks.par_iter()
            .map(|ck| compare(ck, &policies, caps))
            .collect()
    });
    for c in &comps {
        print!("{}", render(c));
    }
    let av = adaptive_vs_peers(&comps);
    if !av.is_empty() {
        let worst = av.iter().map(|x| x.1).fold(0.0, f64::max);
        let mean_bytes = av.iter().map(|x| x.2).sum::<f64>() / av.len() as f64;
        println!(
            "adaptive vs best peer ({}): worst downtime ratio {:.3}; bytes vs peer mean {:.3} (averaged over {} scenarios)",
            PEERS.join(", "),
            worst,
            mean_bytes,
            av.len()
        );
    }
    if let Some(dir) = &a.out {
        let all: Vec<RunResult> = comps
            .iter()
            .flat_map(|c| c.results.iter().cloned())
            .collect();
        super::output::write_run_outputs(dir, &all)?;
        write_atomic(&dir.join("compare.csv"), |b| {
            use std::io::Write;
            writeln!(b, "{}", COMPARE_HEADER.join(","))?;
            for c in &comps {
                for row in compare_rows(c) {
                    writeln!(b, "{}", row.join(","))?;
                }
            }
            Ok(())
        })?;
        println!(
            "wrote {}/{{compare.csv,runs.csv,rounds.csv,summary.json}}",
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

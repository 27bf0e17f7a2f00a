//! `migsim bench`: performance figures of the simulator, printed as a table.
//! Benchmarks print numbers; they never assert on time.

use anyhow::Result;
use clap::Args;
use rayon::prelude::*;
use sim::Scenario;
use std::process::ExitCode;
use std::time::Instant;
use workloads::{Bandwidth, ByteSize, GIB};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Repetitions per case (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Only run cases whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
    /// Also list the N slowest scenarios of the fluid grid (where the time goes).
    #[arg(long, default_value_t = 0)]
    pub slowest: usize,
}

fn exact_16g() -> Scenario {
    Scenario::bench_exact_16g()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Peak resident set size of this process so far (VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    let reps = a.reps.max(1);
    let want = |name: &str| a.only.as_deref().is_none_or(|o| name.contains(o));
    println!(
        "{:<26} {:>14} {:>14}  {:<28} target",
        "case", "median", "best", "detail"
    );
    if want("exact-256g-rss") {
        // Run first, so the peak RSS is this case's.
        let mut s = exact_16g();
        s.vm.memory = ByteSize(256 * GIB);
        s.link.bandwidth = Bandwidth(1e10);
        let ck = s
            .check()
            .map_err(|e| anyhow::anyhow!("bench scenario invalid: {e:?}"))?;
        let t0 = Instant::now();
        let r = sim::simulate(&ck, 0);
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let rss = peak_rss_mib().unwrap_or(f64::NAN);
        println!(
            "{:<26} {:>11.1} ms {:>14}  {:<28} ≤ 1 GiB peak RSS",
            "exact-256g-rss",
            ms,
            "",
            format!("peak RSS {rss:.0} MiB, {} rounds", r.report.rounds)
        );
    }
    if want("exact-16g-qemu") {
        let ck = exact_16g()
            .check()
            .map_err(|e| anyhow::anyhow!("bench scenario invalid: {e:?}"))?;
        let mut times = Vec::with_capacity(reps);
        let mut rounds = 0;
        for _ in 0..reps {
            let t0 = Instant::now();
            let r = sim::simulate(&ck, 0);
            times.push(t0.elapsed().as_secs_f64() * 1e3);
            rounds = r.report.rounds;
        }
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{:<26} {:>11.2} ms {:>11.2} ms  {:<28} ≤ 50 ms per migration",
            "exact-16g-qemu",
            median(times),
            min,
            format!("{rounds} rounds, {reps} reps")
        );
    }
    if want("fluid-standard-grid") {
        let grid = sim::grids::standard_fluid_grid();
        // In grid order, as a sweep runs them (scenarios that share a workload, VM and link
        // share its set-up), and with every set-up computed.
        // (Also with each run's rounds.csv rows, as a sweep writes them.)
        for (name, cold, rounds) in [
            ("fluid-standard-grid", false, false),
            ("  every set-up computed", true, false),
            ("  with rounds.csv rows", false, true),
        ] {
            let (med, max) = grid_rates(&grid, reps, cold, rounds);
            println!(
                "{:<26} {:>10.0} /s {:>10.0} /s  {:<28} {}",
                name,
                med,
                max,
                format!(
                    "{} scenarios, 1 thread, {}",
                    grid.len(),
                    if rounds { "both CSVs" } else { "runs.csv rows" }
                ),
                if cold || rounds {
                    "–"
                } else {
                    "≥ 100,000 scenarios/s per core"
                }
            );
        }
        let timed = scenario_times(&grid);
        if !timed.is_empty() {
            let mut us: Vec<f64> = timed.iter().map(|t| t.0).collect();
            us.sort_by(|a, b| a.total_cmp(b));
            let mean = us.iter().sum::<f64>() / us.len() as f64;
            println!(
                "    per scenario (best of 3, set-up computed): median {:.1} µs, mean {:.1} µs, \
                 slowest {:.0} µs (SimGrid 3.32's model: ~130 µs per migration)",
                us[us.len() / 2],
                mean,
                us[us.len() - 1]
            );
        }
        // Where the time goes, per policy (best-of-3 times, so shares of their sum).
        let total: f64 = timed.iter().map(|t| t.0).sum();
        let mut per: Vec<(String, usize, f64)> = Vec::new();
        for (us, _, policy) in &timed {
            match per.iter_mut().find(|p| &p.0 == policy) {
                Some(p) => {
                    p.1 += 1;
                    p.2 += us;
                }
                None => per.push((policy.clone(), 1, *us)),
            }
        }
        per.sort_by(|a, b| b.2.total_cmp(&a.2));
        if let Some((top, n, us)) = per.first().filter(|_| total > 0.0) {
            let rest_n = timed.len() - n;
            println!(
                "    per policy: {top} takes {:.0} % ({n} scenarios, {:.0} µs); the other {rest_n} \
                 run at {:.0} scenarios/s",
                us / total * 100.0,
                us,
                rest_n as f64 / ((total - us) / 1e6)
            );
        }
        for (_, line, _) in timed.iter().take(a.slowest) {
            println!("    {line}");
        }
    }
    if want("sweep-scaling") && !sweep_scaling()? {
        return Ok(ExitCode::FAILURE);
    }
    if want("startup") {
        let exe = std::env::current_exe()?;
        let mut times = Vec::new();
        for _ in 0..reps.max(5) {
            let t0 = Instant::now();
            let st = std::process::Command::new(&exe)
                .args(["run", "--json"])
                .stdout(std::process::Stdio::null())
                .status()?;
            times.push(t0.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(st.success(), "migsim run failed");
        }
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{:<26} {:>11.2} ms {:>11.2} ms  {:<28} ≤ 5 ms",
            "process: migsim run",
            median(times),
            min,
            "default scenario, whole process"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The batch of `sweep-scaling`: the standard fluid grid's scenarios (12 workload × link
/// pairs × every policy fluid mode models) run by the exact engine.
pub fn sweep_scaling_batch() -> Vec<sim::Checked> {
    sim::grids::standard_fluid_grid()
        .into_iter()
        .filter_map(|ck| {
            let mut s = ck.scenario;
            s.mode = sim::scenario::Mode::Exact;
            s.check().ok()
        })
        .collect()
}

/// Run `batch` on a pool of `threads` threads; every run's CSV row, in batch order, the wall
/// time in seconds and the longest single run in seconds.
fn run_batch(batch: &[sim::Checked], threads: usize) -> Result<(Vec<String>, f64, f64)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let t0 = Instant::now();
    let (rows, times): (Vec<String>, Vec<f64>) = pool.install(|| {
        batch
            .par_iter()
            .enumerate()
            .map(|(i, ck)| {
                let t = Instant::now();
                let row = sim::metrics::run_row(i, &sim::simulate(ck, 0).report);
                (row, t.elapsed().as_secs_f64())
            })
            .unzip()
    });
    let longest = times.iter().copied().fold(0.0, f64::max);
    Ok((rows, t0.elapsed().as_secs_f64(), longest))
}

/// `sweep-scaling`: the same batch of exact runs on a pool of 1 thread, then 2 threads; prints
/// both wall times and the speed-up. Returns false (after a loud message) when the two runs'
/// outputs differ.
fn sweep_scaling() -> Result<bool> {
    let batch = sweep_scaling_batch();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into());
    let (one, t1, longest) = run_batch(&batch, 1)?;
    let (two, t2, _) = run_batch(&batch, 2)?;
    println!(
        "{:<26} {:>12.2} s {:>14}  {:<28}",
        "sweep-scaling, 1 thread",
        t1,
        "",
        format!(
            "{} exact runs (longest {longest:.2} s), load {load} before",
            batch.len()
        )
    );
    println!(
        "{:<26} {:>12.2} s {:>14}  {:<28} ≈ 2× on 2 idle cores",
        "sweep-scaling, 2 threads",
        t2,
        "",
        format!("speed-up {:.2}×", t1 / t2)
    );
    if one != two {
        let first = one.iter().zip(&two).position(|(a, b)| a != b);
        eprintln!(
            "ERROR: sweep-scaling: the 1-thread and 2-thread runs of the same batch differ \
             (first differing run: {first:?}); parallel sweeps are not deterministic"
        );
        return Ok(false);
    }
    println!("    outputs of the 1- and 2-thread runs are identical");
    Ok(true)
}

/// Scenarios per second over `reps` runs of the grid (median and best), each run writing its
/// runs.csv row as `migsim sweep --no-rounds` does; with `cold`, every scenario computes its
/// set-up; with `rounds`, each run's `rounds.csv` rows are built and written too.
fn grid_rates(grid: &[sim::Checked], reps: usize, cold: bool, rounds: bool) -> (f64, f64) {
    let mut rates = Vec::new();
    let mut sink = Vec::new();
    let mut lines = String::new();
    for _ in 0..reps {
        sink.clear();
        lines.clear();
        sim::fluid::clear_setups();
        let t0 = Instant::now();
        for (i, ck) in grid.iter().enumerate() {
            if cold {
                sim::fluid::clear_setups();
            }
            if rounds {
                let r = sim::simulate(ck, 0);
                sink.push(sim::metrics::run_row(i, &r.report));
                for rr in &r.rounds {
                    sim::metrics::push_round_line(&mut lines, i, rr);
                }
            } else {
                // As a sweep without rounds.csv (`--no-rounds`) runs: no round records built.
                sink.push(sim::metrics::run_row(i, &sim::simulate_report(ck, 0)));
            }
        }
        std::hint::black_box((&sink, &lines));
        rates.push(grid.len() as f64 / t0.elapsed().as_secs_f64());
    }
    let max = rates.iter().copied().fold(0.0, f64::max);
    (median(rates), max)
}

/// Every scenario of `grid` with its simulation time in µs (best of 3 runs, each computing its
/// set-up) and a description, slowest first.
fn scenario_times(grid: &[sim::Checked]) -> Vec<(f64, String, String)> {
    let mut timed: Vec<(f64, String, String)> = grid
        .iter()
        .map(|ck| {
            let mut best = f64::INFINITY;
            let mut r = None;
            for _ in 0..3 {
                sim::fluid::clear_setups();
                let t0 = Instant::now();
                r = Some(sim::simulate(ck, 0));
                best = best.min(t0.elapsed().as_secs_f64() * 1e6);
            }
            let r = r.expect("ran at least once").report;
            let what = format!(
                "{:>9.1} µs  {:<22} {:<10} {:>5.0} Gbit/s  {:<9} {:>6} rounds  {:.1} s",
                best,
                r.policy,
                r.workload,
                r.link_bps / 1e9,
                r.status.as_str(),
                r.rounds,
                r.total_time_ns as f64 / 1e9
            );
            (best, what, r.policy)
        })
        .collect();
    timed.sort_by(|a, b| b.0.total_cmp(&a.0));
    timed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_scaling_batch_gives_the_same_rows_on_one_and_two_threads() {
        let batch = sweep_scaling_batch();
        assert!(batch.iter().all(|ck| ck.scenario.mode.is_exact()));
        // A slice of the batch with both links and several policies keeps the test short.
        let some: Vec<sim::Checked> = batch.iter().step_by(7).cloned().collect();
        let policies: std::collections::BTreeSet<&str> =
            some.iter().map(|ck| ck.scenario.policy.name()).collect();
        assert!(policies.len() >= 5, "{policies:?}");
        let (one, _, _) = run_batch(&some, 1).unwrap();
        let (two, _, _) = run_batch(&some, 2).unwrap();
        assert_eq!(one.len(), some.len());
        assert_eq!(one, two);
        // Rows are in batch order: each starts with its index.
        for (i, r) in one.iter().enumerate() {
            assert!(r.starts_with(&format!("{i},")), "{r}");
        }
    }
}

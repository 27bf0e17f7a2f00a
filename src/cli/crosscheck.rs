//! `migsim crosscheck`: fluid (and analytic) mode against the exact engine on a generated grid,
//! next to the exact engine's own run-to-run spread (the same point with the next seed); and,
//! with `--geometric-plot`, the sweep that shows where the geometric (analytic) model leaves the
//! exact engine.

use anyhow::Result;
use clap::Args;
use rayon::prelude::*;
use sim::policy::PolicySpec;
use sim::scenario::Mode;
use sim::Scenario;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use workloads::spec::{
    HotColdSpec, IdleSpec, PhaseSpec, PhasedSpec, ScanSpec, UniformSpec, ZipfSpec,
};
use workloads::{Bandwidth, ByteSize, WorkloadSpec, GIB, MIB};

use super::plot::{render_ratio_figure, RatioFigure};

#[derive(Args, Debug)]
pub struct CrosscheckArgs {
    /// Write one row per point (exact, fluid, analytic and exact-with-the-next-seed figures) to
    /// this CSV file; with --geometric-plot, the sweep's points instead.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Worker threads.
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
    /// Instead of the grid, run the geometric-model sweep (uniform writes at fixed multiples of
    /// the link's page rate, working set from 4 MiB to all memory, exact and analytic mode) and
    /// draw analytic ÷ exact downtime and total time against the working-set size to this file
    /// (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub geometric_plot: Option<PathBuf>,
    /// Run the noise floor (the exact engine with the next seed) at every point, also where the
    /// first exact run timed out (by default those are skipped: their second run only
    /// re-measures the time cap, and costs most of the grid's time).
    #[arg(long)]
    pub noise_floor_all: bool,
    /// Exact runs per point, with the scenario's seed and the next ones: fluid mode models the
    /// expected run, so it is also compared with their mean. At least 2 (the second is the
    /// noise floor); points whose first exact run timed out get only the first (see
    /// --noise-floor-all).
    #[arg(long, default_value_t = 4)]
    pub seeds: u32,
}

/// The cross-check grid: every workload kind at several rates (a scan both slower and faster
/// than the link), links from 100 Mbit/s to 25 Gbit/s, three memory sizes, and the round-based,
/// QEMU and adaptive policies.
pub fn grid() -> Vec<Scenario> {
    let links: [f64; 5] = [1e8, 1e9, 2.5e9, 1e10, 2.5e10];
    let mems = [GIB / 2, GIB, 4 * GIB];
    let policies = [
        "hyperv-2008r2",
        "hyperv-2012r2",
        "xen-legacy",
        "xen-v2",
        "qemu",
        "cloud-hypervisor",
        "simgrid",
        "adaptive",
    ];
    let mut out = Vec::new();
    for &mem in &mems {
        for &bw in &links {
            // Writes per second the link could carry, to scale the rates.
            let link_pps: f64 = bw / 8.0 / 4104.0;
            let rate = |f: f64| (f * link_pps).round();
            let uniform = |wss: u64, f: f64| {
                WorkloadSpec::Uniform(UniformSpec {
                    wss: ByteSize(wss),
                    rate_pps: rate(f),
                    offset: ByteSize(0),
                })
            };
            let hot_cold = |hot: u64, f: f64| {
                WorkloadSpec::HotCold(HotColdSpec {
                    hot_wss: ByteSize(hot),
                    hot_rate_pps: rate(f),
                    cold_wss: None,
                    cold_rate_pps: (rate(f) / 50.0).round(),
                    offset: ByteSize(0),
                })
            };
            let scan = |wss: u64, f: f64| {
                WorkloadSpec::Scan(ScanSpec {
                    wss: Some(ByteSize(wss)),
                    rate_pps: rate(f),
                    offset: ByteSize(0),
                })
            };
            let mut wls = vec![(
                "idle".to_string(),
                WorkloadSpec::Idle(IdleSpec { rate_pps: 50.0 }),
            )];
            for f in [0.1, 0.5, 2.0] {
                wls.push((format!("uniform-{f}"), uniform(mem / 8, f)));
                wls.push((format!("hotcold-{f}"), hot_cold(64 * MIB, f)));
                wls.push((
                    format!("zipf-{f}"),
                    WorkloadSpec::Zipf(ZipfSpec {
                        wss: ByteSize(mem / 4),
                        rate_pps: rate(f),
                        exponent: 0.99,
                        offset: ByteSize(0),
                    }),
                ));
            }
            wls.push(("scan-slow".into(), scan(mem / 16, 0.05)));
            wls.push(("scan-fast".into(), scan(mem / 4, 1.6)));
            // Phased: a burst above the link rate between quiet spells; a wide working set
            // alternating with a hot set; a scan followed by a small hot set.
            let phased = |a: (f64, WorkloadSpec), b: (f64, WorkloadSpec)| {
                WorkloadSpec::Phased(PhasedSpec {
                    phases: [a, b]
                        .into_iter()
                        .map(|(duration_ms, workload)| PhaseSpec {
                            duration_ms,
                            workload,
                        })
                        .collect(),
                    repeat: true,
                })
            };
            let idle = WorkloadSpec::Idle(IdleSpec { rate_pps: 50.0 });
            wls.push((
                "phased-burst".into(),
                phased((2000.0, uniform(mem / 8, 2.0)), (3000.0, idle)),
            ));
            wls.push((
                "phased-wide-hot".into(),
                phased(
                    (1000.0, uniform(mem / 4, 0.5)),
                    (1000.0, hot_cold(32 * MIB, 0.1)),
                ),
            ));
            wls.push((
                "phased-scan-hot".into(),
                phased(
                    (2000.0, scan(mem / 8, 0.3)),
                    (4000.0, uniform(16 * MIB, 0.2)),
                ),
            ));
            for (wname, w) in wls {
                for p in policies {
                    let mut s = Scenario::default_scenario();
                    s.name = format!("{}m-{}-{}-{}", mem / MIB, bw / 1e6, wname, p);
                    s.vm.memory = ByteSize(mem);
                    s.link.bandwidth = Bandwidth(bw);
                    s.workload = w.clone();
                    s.policy = PolicySpec::by_name(p).expect("known policy");
                    s.limits.max_time_s = 600.0;
                    out.push(s);
                }
            }
        }
    }
    out
}

/// One mode's figures for one point: downtime (NaN when the VM never switched over), total
/// time, rounds, status.
#[derive(Clone, Debug)]
struct Fig {
    downtime: f64,
    total: f64,
    rounds: u32,
    status: String,
}

/// One grid point's figures: [exact, fluid, analytic, exact with the next seed, mean of the
/// exact runs]. The mean is None unless all `seeds` exact runs ran and agree on whether the VM
/// switched over.
type Row = [Option<Fig>; 5];

/// Every grid point's [`Row`], and how many points did not get their further exact runs: those
/// whose first exact run hit the time cap, unless `noise_all` (they are most of the exact
/// engine's time, and another seed re-measures the cap). The further runs follow the first in
/// the same task, so there is no barrier between them.
fn run_grid(
    pool: &rayon::ThreadPool,
    grid: &[Scenario],
    noise_all: bool,
    seeds: u32,
) -> (Vec<Row>, usize) {
    let timeout = sim::Status::Timeout.as_str();
    let flat: Vec<Vec<Fig>> = pool.install(|| {
        (0..grid.len() * 3)
            .into_par_iter()
            .map(|k| {
                let s = &grid[k / 3];
                let mode = [Mode::Exact, Mode::Fluid, Mode::Analytic][k % 3];
                let Some(first) = run_one(s, mode, 0) else {
                    return Vec::new();
                };
                let again = mode == Mode::Exact && (noise_all || first.status != timeout);
                let more = if again { 1..seeds as u64 } else { 0..0 };
                let mut figs = vec![first];
                figs.extend(more.filter_map(|d| run_one(s, Mode::Exact, d)));
                figs
            })
            .collect()
    });
    let rows: Vec<Row> = flat
        .chunks_exact(3)
        .map(|c| {
            let exact = &c[0];
            let mean = if exact.len() == seeds as usize {
                mean_fig(exact)
            } else {
                None
            };
            [
                exact.first().cloned(),
                c[1].first().cloned(),
                c[2].first().cloned(),
                exact.get(1).cloned(),
                mean,
            ]
        })
        .collect();
    let skipped = rows
        .iter()
        .filter(|r| r[0].as_ref().is_some_and(|e| e.status == timeout) && r[3].is_none())
        .count();
    (rows, skipped)
}

/// The mean of several runs of one point: None when some switched the VM over and some did
/// not (no mean downtime exists).
fn mean_fig(runs: &[Fig]) -> Option<Fig> {
    let moved = runs.iter().filter(|f| !f.downtime.is_nan()).count();
    if runs.is_empty() || (moved != 0 && moved != runs.len()) {
        return None;
    }
    let n = runs.len() as f64;
    let mean = |get: fn(&Fig) -> f64| runs.iter().map(get).sum::<f64>() / n;
    Some(Fig {
        downtime: mean(|f| f.downtime),
        total: mean(|f| f.total),
        rounds: (mean(|f| f.rounds as f64)).round() as u32,
        status: "mean".into(),
    })
}

/// Run `s` in `mode` with its seed moved by `seed_delta`; None when the mode rejects it.
fn run_one(s: &Scenario, mode: Mode, seed_delta: u64) -> Option<Fig> {
    let mut sc = s.clone();
    sc.mode = mode;
    sc.seed = sc.seed.wrapping_add(seed_delta);
    let ck = sc.check().ok()?;
    let r = sim::simulate_report(&ck, 0);
    Some(Fig {
        downtime: r.downtime_ns().map_or(f64::NAN, |d| d as f64),
        total: r.total_time_ns as f64,
        rounds: r.rounds,
        status: r.status.as_str().to_string(),
    })
}

/// Run every (scenario, variant) pair on the pool, one task each (so the two exact runs of an
/// expensive point can proceed in parallel); results come back grouped per scenario, in order.
fn run_all<const N: usize>(
    pool: &rayon::ThreadPool,
    scenarios: &[Scenario],
    variants: &[(Mode, u64); N],
) -> Vec<[Option<Fig>; N]> {
    let flat: Vec<Option<Fig>> = pool.install(|| {
        (0..scenarios.len() * N)
            .into_par_iter()
            .map(|k| {
                let (m, d) = variants[k % N];
                run_one(&scenarios[k / N], m, d)
            })
            .collect()
    });
    let mut it = flat.into_iter();
    scenarios
        .iter()
        .map(|_| std::array::from_fn(|_| it.next().flatten()))
        .collect()
}

fn rel(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        if a == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (a - b).abs() / b
    }
}

fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// Relative errors of one model against the exact engine (seed 1) over the grid.
#[derive(Default)]
struct Errors {
    downtime: Vec<f64>,
    total: Vec<f64>,
    /// Points where the VM switched over in both runs.
    both_moved: usize,
    /// Points where it switched over in one run only (left out of both lists).
    one_moved: usize,
}

impl Errors {
    /// Add one point: `model` against `exact`, when both ran.
    fn add(&mut self, exact: Option<&Fig>, model: Option<&Fig>) {
        let (Some(e), Some(m)) = (exact, model) else {
            return;
        };
        if e.downtime.is_nan() != m.downtime.is_nan() {
            self.one_moved += 1;
            return;
        }
        self.total.push(rel(m.total, e.total));
        if !e.downtime.is_nan() {
            self.both_moved += 1;
            self.downtime.push(rel(m.downtime, e.downtime));
        }
    }

    fn sort(&mut self) {
        self.downtime.sort_by(f64::total_cmp);
        self.total.sort_by(f64::total_cmp);
    }
}

/// Percentage of `v` at most `x` (NaN for an empty list).
fn within(v: &[f64], x: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().filter(|e| **e <= x).count() as f64 / v.len() as f64 * 100.0
}

fn distribution_line(label: &str, v: &[f64]) -> String {
    format!(
        "{:<44} {:>8.2}% {:>8.2}% {:>8.2}% {:>8.2}% {:>10.1}%",
        label,
        quantile(v, 0.5) * 100.0,
        quantile(v, 0.9) * 100.0,
        quantile(v, 0.95) * 100.0,
        v.last().copied().unwrap_or(f64::NAN) * 100.0,
        within(v, 0.02)
    )
}

/// Write the per-point CSV to `out` (atomically), if asked for.
fn write_csv(out: Option<&std::path::Path>, csv: &str) -> Result<()> {
    if let Some(p) = out {
        super::output::write_atomic(p, |b| {
            b.extend_from_slice(csv.as_bytes());
            Ok(())
        })?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// Points of one policy or workload: (name, points, fluid errors, noise-floor errors, fluid
/// errors against the mean of the exact seeds).
type Group = (String, usize, Errors, Errors, Errors);

fn add_to_group(groups: &mut Vec<Group>, name: &str, f: &Row) {
    let k = match groups.iter().position(|g| g.0 == name) {
        Some(k) => k,
        None => {
            groups.push((
                name.to_string(),
                0,
                Errors::default(),
                Errors::default(),
                Errors::default(),
            ));
            groups.len() - 1
        }
    };
    let g = &mut groups[k];
    g.1 += 1;
    g.2.add(f[0].as_ref(), f[1].as_ref());
    g.3.add(f[0].as_ref(), f[3].as_ref());
    g.4.add(f[4].as_ref(), f[1].as_ref());
}

/// The workload part of a grid point's name (`{mem}m-{link}-{workload}-{policy}`).
fn workload_label<'a>(point: &'a str, policy: &str) -> &'a str {
    let rest = point.splitn(3, '-').nth(2).unwrap_or(point);
    rest.strip_suffix(policy)
        .and_then(|r| r.strip_suffix('-'))
        .unwrap_or(rest)
}

fn print_groups(by: &str, groups: &[Group]) {
    println!();
    println!(
        "{:<20} {:>7} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13}",
        "within 2 %, per",
        "points",
        "fluid",
        "noise floor",
        "fluid",
        "fluid",
        "noise floor",
        "fluid"
    );
    println!(
        "{:<20} {:>7} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13}",
        by, "", "downtime", "downtime", "dt vs mean", "total time", "total time", "total vs mean"
    );
    for (name, n, fl, nf, fm) in groups {
        println!(
            "{:<20} {:>7} {:>12.1}% {:>12.1}% {:>12.1}% {:>12.1}% {:>12.1}% {:>12.1}%",
            name,
            n,
            within(&fl.downtime, 0.02),
            within(&nf.downtime, 0.02),
            within(&fm.downtime, 0.02),
            within(&fl.total, 0.02),
            within(&nf.total, 0.02),
            within(&fm.total, 0.02)
        );
    }
}

/// Downtime in ns, empty when the VM never switched over.
fn downtime_cell(f: &Fig) -> String {
    if f.downtime.is_nan() {
        String::new()
    } else {
        format!("{:.0}", f.downtime)
    }
}

fn csv_cell(x: Option<&Fig>) -> String {
    match x {
        Some(f) => format!("{},{},{}", downtime_cell(f), f.total as u64, f.rounds),
        None => ",,".into(),
    }
}

/// Header of `--out`: columns are only ever added at the end.
pub const CSV_HEADER: &str = "point,exact_status,exact_downtime_ns,exact_total_ns,exact_rounds,fluid_downtime_ns,fluid_total_ns,fluid_rounds,analytic_downtime_ns,analytic_total_ns,analytic_rounds,exact2_downtime_ns,exact2_total_ns,exact2_rounds,exact_mean_downtime_ns,exact_mean_total_ns,exact_mean_seeds";

pub fn run(a: CrosscheckArgs) -> Result<ExitCode> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.jobs.unwrap_or(0))
        .build()?;
    if let Some(plot) = &a.geometric_plot {
        return run_geometric(&pool, plot, a.out.as_deref());
    }
    if a.seeds < 2 {
        anyhow::bail!(
            "--seeds: {} is too few; at least 2 (the second seed is the noise floor)",
            a.seeds
        );
    }
    let grid = grid();
    let (rows, skipped) = run_grid(&pool, &grid, a.noise_floor_all, a.seeds);
    let mut csv = format!("{CSV_HEADER}\n");
    let (mut fluid, mut analytic, mut noise, mut to_mean) = (
        Errors::default(),
        Errors::default(),
        Errors::default(),
        Errors::default(),
    );
    // Per policy and per workload, in grid order.
    let (mut per_policy, mut per_workload) = (Vec::new(), Vec::new());
    for (s, f) in grid.iter().zip(&rows) {
        let status = f[0].as_ref().map_or("", |e| e.status.as_str());
        let mean = match &f[4] {
            Some(m) => format!("{},{:.0},{}", downtime_cell(m), m.total, a.seeds),
            None => ",,".into(),
        };
        let _ = writeln!(
            csv,
            "{},{status},{},{},{},{},{mean}",
            s.name,
            csv_cell(f[0].as_ref()),
            csv_cell(f[1].as_ref()),
            csv_cell(f[2].as_ref()),
            csv_cell(f[3].as_ref())
        );
        fluid.add(f[0].as_ref(), f[1].as_ref());
        analytic.add(f[0].as_ref(), f[2].as_ref());
        noise.add(f[0].as_ref(), f[3].as_ref());
        to_mean.add(f[4].as_ref(), f[1].as_ref());
        let policy = s.policy.name();
        add_to_group(&mut per_policy, policy, f);
        add_to_group(&mut per_workload, workload_label(&s.name, policy), f);
    }
    for e in [&mut fluid, &mut analytic, &mut noise, &mut to_mean] {
        e.sort();
    }
    let mixed = rows
        .iter()
        .filter(|r| r[4].is_none() && r[3].is_some())
        .count();
    println!(
        "crosscheck: {} points ({} moved in both modes, {} where only one mode moved the VM)",
        rows.len(),
        fluid.both_moved,
        fluid.one_moved,
    );
    println!(
        "noise floor: exact with the next seed at {} points ({} where only one seed moved the VM); \
         {skipped} points whose exact run timed out are not re-run{}",
        rows.len() - skipped,
        noise.one_moved,
        if skipped > 0 {
            " (--noise-floor-all runs them)"
        } else {
            ""
        }
    );
    println!(
        "exact mean: {} seeds at {} points ({mixed} where some seeds moved the VM and some did not, \
         {} where only the first seed ran)",
        a.seeds,
        rows.len() - mixed - skipped,
        skipped,
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "relative error vs exact (scenario seed)", "p50", "p90", "p95", "max", "within 2 %"
    );
    for (label, v) in [
        ("fluid downtime", &fluid.downtime),
        ("fluid total time", &fluid.total),
        ("analytic downtime", &analytic.downtime),
        ("analytic total time", &analytic.total),
        ("exact, other seed (noise floor): downtime", &noise.downtime),
        ("exact, other seed (noise floor): total time", &noise.total),
    ] {
        println!("{}", distribution_line(label, v));
    }
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9} {:>11}",
        format!("relative error vs the mean of {} exact seeds", a.seeds),
        "p50",
        "p90",
        "p95",
        "max",
        "within 2 %"
    );
    for (label, v) in [
        ("fluid downtime", &to_mean.downtime),
        ("fluid total time", &to_mean.total),
    ] {
        println!("{}", distribution_line(label, v));
    }
    print_groups("policy", &per_policy);
    print_groups("workload", &per_workload);
    write_csv(a.out.as_deref(), &csv)?;
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// The geometric model against the exact engine

/// Header of `--out` with `--geometric-plot`.
pub const GEOMETRIC_CSV_HEADER: &str = "policy,rate_factor,rate_pps,wss_bytes,exact_status,exact_downtime_ns,exact_total_ns,exact_rounds,analytic_status,analytic_downtime_ns,analytic_total_ns,analytic_rounds,downtime_ratio,total_ratio";

/// analytic ÷ exact, when the VM switched over in both modes.
fn ratios(e: Option<&Fig>, an: Option<&Fig>) -> (Option<f64>, Option<f64>) {
    match (e, an) {
        (Some(e), Some(an)) if !e.downtime.is_nan() && !an.downtime.is_nan() => {
            (Some(an.downtime / e.downtime), Some(an.total / e.total))
        }
        _ => (None, None),
    }
}

fn fmt_size(bytes: f64) -> String {
    let mib = bytes / MIB as f64;
    if mib >= 1024.0 {
        format!("{} GiB", mib / 1024.0)
    } else if mib >= 1.0 {
        format!("{mib:.0} MiB")
    } else {
        format!("{} KiB", bytes / 1024.0)
    }
}

fn rate_label(f: f64) -> String {
    format!("{f}× link page rate")
}

fn run_geometric(
    pool: &rayon::ThreadPool,
    plot: &std::path::Path,
    out: Option<&std::path::Path>,
) -> Result<ExitCode> {
    let sweep = sim::grids::geometric_sweep();
    let scenarios: Vec<Scenario> = sweep.iter().map(|p| p.scenario.clone()).collect();
    let rows = run_all(
        pool,
        &scenarios,
        &[(Mode::Exact, 0u64), (Mode::Analytic, 0u64)],
    );
    let mut csv = format!("{GEOMETRIC_CSV_HEADER}\n");
    println!(
        "geometric (analytic) model vs exact engine: {} GiB VM, {} Gbit/s, uniform writes, {} points",
        sim::grids::GEOMETRIC_MEM / GIB,
        sim::grids::GEOMETRIC_LINK_BPS / 1e9,
        sweep.len()
    );
    println!(
        "{:<11} {:>5} {:>9} {:>12} {:>12} {:>9} {:>10} {:>10} {:>9}",
        "policy", "rate", "wss", "exact dt ms", "analytic", "ratio", "exact s", "analytic", "ratio"
    );
    // (policy, rate) -> (wss, downtime ratio, total ratio)
    type RatioSeries<'a> = ((&'a str, f64), Vec<(f64, f64, f64)>);
    let mut series: Vec<RatioSeries> = Vec::new();
    let mut missing = 0usize;
    for (p, f) in sweep.iter().zip(&rows) {
        let (e, an) = (f[0].as_ref(), f[1].as_ref());
        let (dr, tr) = ratios(e, an);
        let num = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.6}"));
        let status = |x: Option<&Fig>| x.map_or(String::new(), |f| f.status.clone());
        let _ = writeln!(
            csv,
            "{},{},{},{},{},{},{},{},{},{}",
            p.policy,
            p.rate_factor,
            match &p.scenario.workload {
                WorkloadSpec::Uniform(u) => u.rate_pps,
                _ => f64::NAN,
            },
            p.wss,
            status(e),
            csv_cell(e),
            status(an),
            csv_cell(an),
            num(dr),
            num(tr)
        );
        let ms = |x: Option<&Fig>| {
            x.filter(|f| !f.downtime.is_nan())
                .map_or("-".to_string(), |f| format!("{:.1}", f.downtime / 1e6))
        };
        let secs = |x: Option<&Fig>| x.map_or("-".to_string(), |f| format!("{:.1}", f.total / 1e9));
        let ratio = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2}×"));
        println!(
            "{:<11} {:>5} {:>9} {:>12} {:>12} {:>9} {:>10} {:>10} {:>9}",
            p.policy,
            format!("{}×", p.rate_factor),
            fmt_size(p.wss as f64),
            ms(e),
            ms(an),
            ratio(dr),
            secs(e),
            secs(an),
            ratio(tr)
        );
        let (Some(dr), Some(tr)) = (dr, tr) else {
            missing += 1;
            continue;
        };
        let key = (p.policy, p.rate_factor);
        match series.iter_mut().find(|s| s.0 == key) {
            Some(s) => s.1.push((p.wss as f64, dr, tr)),
            None => series.push((key, vec![(p.wss as f64, dr, tr)])),
        }
    }
    let mut panels = Vec::new();
    for policy in sim::grids::GEOMETRIC_POLICIES {
        for (what, pick) in [("downtime", 1usize), ("total time", 2usize)] {
            let lines = series
                .iter()
                .filter(|s| s.0 .0 == policy)
                .map(|s| {
                    let pts =
                        s.1.iter()
                            .map(|&(w, d, t)| (w, if pick == 1 { d } else { t }))
                            .collect();
                    (rate_label(s.0 .1), pts)
                })
                .collect();
            panels.push((format!("{policy}: {what}"), lines));
        }
    }
    let fig = RatioFigure {
        title: "Geometric (analytic) model ÷ exact engine, against the working-set size".into(),
        note: format!(
            "{} GiB VM, {} Gbit/s, uniform writes over the working set at a fixed rate; \
             ratio > 1: the geometric model over-predicts; {missing} points where a mode never switched over are not shown",
            sim::grids::GEOMETRIC_MEM / GIB,
            sim::grids::GEOMETRIC_LINK_BPS / 1e9
        ),
        legend_heading: "guest write rate".into(),
        x_desc: "working-set size".into(),
        y_desc: "analytic ÷ exact".into(),
        cols: 2,
        panels,
        x_label: fmt_size,
        x_ticks: sim::grids::geometric_wss()
            .into_iter()
            .step_by(2)
            .map(|w| w as f64)
            .collect(),
    };
    render_ratio_figure(&fig, plot)?;
    println!("wrote {}", plot.display());
    write_csv(out, &csv)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_grid_point_names_its_workload() {
        // The per-workload table groups points by the name's workload part: each point must
        // yield one of the workloads the grid was built from, policy names with dashes and all.
        let known = [
            "idle",
            "uniform-0.1",
            "hotcold-0.1",
            "zipf-0.1",
            "uniform-0.5",
            "hotcold-0.5",
            "zipf-0.5",
            "uniform-2",
            "hotcold-2",
            "zipf-2",
            "scan-slow",
            "scan-fast",
            "phased-burst",
            "phased-wide-hot",
            "phased-scan-hot",
        ];
        let g = grid();
        for s in &g {
            let w = workload_label(&s.name, s.policy.name());
            assert!(known.contains(&w), "{} gave {w:?}", s.name);
        }
        for w in known {
            let n = g
                .iter()
                .filter(|s| workload_label(&s.name, s.policy.name()) == w)
                .count();
            assert_eq!(n, g.len() / known.len(), "{w}");
        }
    }

    #[test]
    fn csv_keeps_the_old_columns_first() {
        let old = "point,exact_status,exact_downtime_ns,exact_total_ns,exact_rounds,fluid_downtime_ns,fluid_total_ns,fluid_rounds,analytic_downtime_ns,analytic_total_ns,analytic_rounds";
        assert!(CSV_HEADER.starts_with(&format!("{old},")));
        let cols: Vec<&str> = CSV_HEADER.split(',').collect();
        assert_eq!(
            &cols[2 + 3 * 3..2 + 3 * 4],
            ["exact2_downtime_ns", "exact2_total_ns", "exact2_rounds"]
        );
        assert_eq!(
            &cols[2 + 3 * 4..],
            [
                "exact_mean_downtime_ns",
                "exact_mean_total_ns",
                "exact_mean_seeds"
            ]
        );
    }

    fn small(rate_pps: f64) -> Scenario {
        let mut s = Scenario::default_scenario();
        s.vm.memory = ByteSize(256 * MIB);
        s.workload = WorkloadSpec::Uniform(UniformSpec {
            wss: ByteSize(64 * MIB),
            rate_pps,
            offset: ByteSize(0),
        });
        s
    }

    #[test]
    fn the_noise_floor_runs_the_exact_engine_with_the_next_seed() {
        let s = small(20_000.0);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (rows, skipped) = run_grid(&pool, std::slice::from_ref(&s), false, 3);
        assert_eq!(skipped, 0);
        let [exact, _, _, exact2, mean] = &rows[0];
        let (exact, exact2) = (exact.clone().unwrap(), exact2.clone().unwrap());
        let direct = |d: u64| {
            let mut next = s.clone();
            next.seed += d;
            sim::simulate(&next.check().unwrap(), 0).report
        };
        assert_eq!(exact2.total, direct(1).total_time_ns as f64);
        assert_eq!(exact2.rounds, direct(1).rounds);
        // Another write sequence: the blackout differs (pages dirty at the pause differ).
        assert_ne!(exact.downtime, exact2.downtime);
        // The mean is over the scenario's seed and the next two.
        let runs: Vec<_> = (0..3).map(direct).collect();
        let mean = mean.clone().unwrap();
        let want = runs
            .iter()
            .map(|r| r.downtime_ns().unwrap() as f64)
            .sum::<f64>()
            / 3.0;
        assert!(
            (mean.downtime - want).abs() < 1e-6,
            "{} {want}",
            mean.downtime
        );
        let want = runs.iter().map(|r| r.total_time_ns as f64).sum::<f64>() / 3.0;
        assert!((mean.total - want).abs() < 1e-6, "{} {want}", mean.total);
        assert_ne!(runs[2].downtime_ns(), runs[1].downtime_ns());
    }

    #[test]
    fn a_mean_needs_every_seed_to_agree_on_switching_over() {
        let fig = |d: f64, t: f64| Fig {
            downtime: d,
            total: t,
            rounds: 2,
            status: String::new(),
        };
        let m = mean_fig(&[fig(100.0, 1000.0), fig(200.0, 3000.0)]).unwrap();
        assert_eq!((m.downtime, m.total, m.rounds), (150.0, 2000.0, 2));
        let m = mean_fig(&[fig(f64::NAN, 1000.0), fig(f64::NAN, 3000.0)]).unwrap();
        assert!(m.downtime.is_nan());
        assert_eq!(m.total, 2000.0);
        assert!(mean_fig(&[fig(100.0, 1000.0), fig(f64::NAN, 3000.0)]).is_none());
        assert!(mean_fig(&[]).is_none());
    }

    #[test]
    fn points_that_timed_out_get_a_second_seed_only_on_request() {
        // Writes at twice the link's page rate over all 256 MiB: most of memory stays dirty,
        // far above QEMU's 300 ms threshold, so the 5 s cap ends the run. The converging point
        // is re-run either way.
        let mut stuck = small(0.0);
        stuck.workload = WorkloadSpec::Uniform(UniformSpec {
            wss: ByteSize(256 * MIB),
            rate_pps: 2.0 * 1e9 / 8.0 / 4104.0,
            offset: ByteSize(0),
        });
        stuck.limits.max_time_s = 5.0;
        let grid = [small(20_000.0), stuck];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (rows, skipped) = run_grid(&pool, &grid, false, 2);
        assert_eq!(rows[1][0].as_ref().unwrap().status, "timeout");
        assert_eq!(skipped, 1);
        assert!(rows[0][3].is_some() && rows[0][4].is_some());
        assert!(rows[1][3].is_none() && rows[1][4].is_none());
        let (rows, skipped) = run_grid(&pool, &grid, true, 2);
        assert_eq!(skipped, 0);
        assert_eq!(rows[1][3].as_ref().unwrap().status, "timeout");
        assert!(rows[1][4].as_ref().unwrap().downtime.is_nan());
    }

    #[test]
    fn errors_leave_out_points_where_only_one_run_switched_over() {
        let fig = |d: f64, t: f64| Fig {
            downtime: d,
            total: t,
            rounds: 1,
            status: String::new(),
        };
        let mut e = Errors::default();
        e.add(Some(&fig(100.0, 1000.0)), Some(&fig(101.0, 1000.0)));
        e.add(Some(&fig(100.0, 1000.0)), Some(&fig(f64::NAN, 2000.0)));
        e.add(Some(&fig(f64::NAN, 600.0)), Some(&fig(f64::NAN, 660.0)));
        e.add(Some(&fig(100.0, 1000.0)), None);
        e.sort();
        assert_eq!((e.both_moved, e.one_moved), (1, 1));
        assert_eq!(e.downtime, vec![0.01]);
        assert_eq!(e.total.len(), 2);
        assert!((e.total[1] - 0.1).abs() < 1e-12);
        assert_eq!(within(&e.total, 0.02), 50.0);
    }
}

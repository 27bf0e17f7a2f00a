//! `migsim crosscheck`: fluid (and analytic) mode against the exact engine on a generated grid.

use anyhow::Result;
use clap::Args;
use rayon::prelude::*;
use sim::policy::PolicySpec;
use sim::scenario::Mode;
use sim::Scenario;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use workloads::spec::{HotColdSpec, IdleSpec, ScanSpec, UniformSpec, ZipfSpec};
use workloads::{Bandwidth, ByteSize, WorkloadSpec, GIB, MIB};

#[derive(Args, Debug)]
pub struct CrosscheckArgs {
    /// Write one row per point (exact, fluid and analytic figures) to this CSV file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Worker threads.
    #[arg(short = 'j', long)]
    pub jobs: Option<usize>,
}

/// The cross-check grid: every workload kind at several rates, links from 100 Mbit/s to
/// 25 Gbit/s, two memory sizes, and the round-based and QEMU-family policies.
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
            let mut wls = vec![(
                "idle".to_string(),
                WorkloadSpec::Idle(IdleSpec { rate_pps: 50.0 }),
            )];
            for f in [0.1, 0.5, 2.0] {
                let r = (f * link_pps).round();
                wls.push((
                    format!("uniform-{f}"),
                    WorkloadSpec::Uniform(UniformSpec {
                        wss: ByteSize(mem / 8),
                        rate_pps: r,
                        offset: ByteSize(0),
                    }),
                ));
                wls.push((
                    format!("hotcold-{f}"),
                    WorkloadSpec::HotCold(HotColdSpec {
                        hot_wss: ByteSize(64 * MIB),
                        hot_rate_pps: r,
                        cold_wss: None,
                        cold_rate_pps: (r / 50.0).round(),
                        offset: ByteSize(0),
                    }),
                ));
                wls.push((
                    format!("zipf-{f}"),
                    WorkloadSpec::Zipf(ZipfSpec {
                        wss: ByteSize(mem / 4),
                        rate_pps: r,
                        exponent: 0.99,
                        offset: ByteSize(0),
                    }),
                ));
            }
            wls.push((
                "scan-slow".into(),
                WorkloadSpec::Scan(ScanSpec {
                    wss: Some(ByteSize(mem / 16)),
                    rate_pps: (0.05 * link_pps).round(),
                    offset: ByteSize(0),
                }),
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

/// (point, [exact, fluid, analytic] as (downtime, total, rounds), exact status)
type Row = (String, [Option<(f64, f64, u32)>; 3], String);

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

pub fn run(a: CrosscheckArgs) -> Result<ExitCode> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.jobs.unwrap_or(0))
        .build()?;
    let grid = grid();
    let rows: Vec<Row> = pool.install(|| {
        grid.par_iter()
            .map(|s| {
                let mut figs = [None, None, None];
                let mut status = String::new();
                for (i, m) in [Mode::Exact, Mode::Fluid, Mode::Analytic]
                    .into_iter()
                    .enumerate()
                {
                    let mut sc = s.clone();
                    sc.mode = m;
                    let Ok(ck) = sc.check() else { continue };
                    let r = sim::simulate(&ck, 0).report;
                    if i == 0 {
                        status = r.status.as_str().to_string();
                    }
                    figs[i] = r
                        .downtime_ns()
                        .map(|d| (d as f64, r.total_time_ns as f64, r.rounds));
                    if r.downtime.is_none() {
                        figs[i] = Some((f64::NAN, r.total_time_ns as f64, r.rounds));
                    }
                }
                (s.name.clone(), figs, status)
            })
            .collect()
    });
    let mut dt_err = Vec::new();
    let mut tt_err = Vec::new();
    let mut an_dt_err = Vec::new();
    let mut csv = String::from("point,exact_status,exact_downtime_ns,exact_total_ns,exact_rounds,fluid_downtime_ns,fluid_total_ns,fluid_rounds,analytic_downtime_ns,analytic_total_ns,analytic_rounds\n");
    let mut both_moved = 0usize;
    let mut status_mismatch = 0usize;
    for (name, f, status) in &rows {
        let cell = |x: Option<(f64, f64, u32)>| match x {
            Some((d, t, r)) => format!(
                "{},{},{r}",
                if d.is_nan() {
                    String::new()
                } else {
                    format!("{d:.0}")
                },
                t as u64
            ),
            None => ",,".into(),
        };
        let _ = writeln!(
            csv,
            "{name},{status},{},{},{}",
            cell(f[0]),
            cell(f[1]),
            cell(f[2])
        );
        if let (Some(e), Some(fl)) = (f[0], f[1]) {
            if e.0.is_nan() != fl.0.is_nan() {
                status_mismatch += 1;
                continue;
            }
            tt_err.push(rel(fl.1, e.1));
            if !e.0.is_nan() {
                both_moved += 1;
                dt_err.push(rel(fl.0, e.0));
                if let Some(an) = f[2].filter(|x| !x.0.is_nan()) {
                    an_dt_err.push(rel(an.0, e.0));
                }
            }
        }
    }
    for v in [&mut dt_err, &mut tt_err, &mut an_dt_err] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    let within = |v: &[f64], x: f64| {
        v.iter().filter(|e| **e <= x).count() as f64 / v.len().max(1) as f64 * 100.0
    };
    println!(
        "crosscheck: {} points ({} moved in both modes, {} where only one mode moved the VM)",
        rows.len(),
        both_moved,
        status_mismatch
    );
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "relative error vs exact", "p50", "p90", "p95", "max", "within 2 %"
    );
    for (label, v) in [
        ("fluid downtime", &dt_err),
        ("fluid total time", &tt_err),
        ("analytic downtime", &an_dt_err),
    ] {
        println!(
            "{:<28} {:>8.2}% {:>8.2}% {:>8.2}% {:>8.2}% {:>10.1}%",
            label,
            quantile(v, 0.5) * 100.0,
            quantile(v, 0.9) * 100.0,
            quantile(v, 0.95) * 100.0,
            v.last().copied().unwrap_or(f64::NAN) * 100.0,
            within(v, 0.02)
        );
    }
    if let Some(p) = &a.out {
        super::output::write_atomic(p, |b| {
            b.extend_from_slice(csv.as_bytes());
            Ok(())
        })?;
        println!("wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}

//! `migsim calibrate`: measure the real backend's fixed costs on this host with a few small,
//! dedicated real migrations (never the validation runs) and write a calibration file the
//! simulator loads (`calibration = "FILE"` in a scenario, or `--calibration FILE`).
//!
//! ```text
//!  idle guests, 64/256/512 MiB, unpaced        -> pause, state+resume, setup (fixed + per GiB),
//!                                                 harvest cost with ~no dirty pages (per GiB)
//!  uniform writes, 10 passes, 125 MB/s link    -> harvest cost per dirty page (least squares),
//!  idle guest, 32 MB/s link                       link efficiency under the pacer
//!  uniform writes at 400K pages/s              -> the guest's achievable dirty rate
//! ```

use super::real::process_options;
use anyhow::{bail, Result};
use clap::Args;
use real_backend::RealRun;
use sim::calibration::{Calibration, GuestCalibration, LinkCalibration};
use sim::scenario::{DirtyLogSpec, SwitchoverSpec};
use sim::Scenario;
use std::path::PathBuf;
use std::process::ExitCode;
use workloads::{ByteSize, GIB};

#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// Calibration file to write (TOML).
    #[arg(long, short, default_value = "calibration.toml")]
    pub out: PathBuf,
    /// Repetitions of each micro-measurement (medians are kept).
    #[arg(long, default_value_t = 3)]
    pub repeats: u32,
}

/// A small scenario for one micro-measurement.
fn micro(
    name: &str,
    mem_mib: u64,
    workload: &str,
    link: &str,
    policy: &str,
) -> Result<sim::Checked> {
    let text = format!(
        "name = \"calibrate-{name}\"\nseed = 7\n[vm]\nmemory = \"{mem_mib} MiB\"\nzero_page_fraction = 0.25\n\
         [workload]\n{workload}\n[link]\nbandwidth = \"{link}\"\nrtt_ms = 0.0\n[policy]\n{policy}\n"
    );
    Scenario::from_toml_str(&text)?
        .check()
        .map_err(|e| anyhow::anyhow!("calibration scenario {name} is invalid: {e:?}"))
}

fn real(ck: &sim::Checked, replicate: u32) -> Result<RealRun> {
    let run = real_backend::migrate(ck, &process_options(replicate, false)?)?;
    if !run.result.report.status.moved() {
        bail!(
            "calibration run {} did not complete: {}",
            ck.scenario.name,
            run.result.report.reason
        );
    }
    Ok(run)
}

pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Least-squares line `y = a + b x`; `None` when the x values do not vary.
pub fn fit_line(pts: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = pts.len() as f64;
    if pts.len() < 2 {
        return None;
    }
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let b = sxy / sxx;
    Some((my - b * mx, b))
}

/// The least-squares line through `pts` for the quantity `what`; an error naming it when the
/// measurements cannot determine a line (fewer than two, or all at one x).
pub fn fit(what: &str, pts: &[(f64, f64)]) -> Result<(f64, f64)> {
    match fit_line(pts) {
        Some(line) if line.0.is_finite() && line.1.is_finite() => Ok(line),
        _ => {
            let mut xs: Vec<f64> = pts.iter().map(|p| p.0).collect();
            xs.sort_by(|a, b| a.total_cmp(b));
            xs.dedup();
            bail!(
                "cannot fit {what}: {} measurement(s) at {} distinct x value(s) {:?}; \
                 a line needs two",
                pts.len(),
                xs.len(),
                &xs[..xs.len().min(4)]
            )
        }
    }
}

/// `v` floored at 0; a negative fit (noise larger than the effect) is noted in `notes`.
pub fn non_negative(what: &str, v: f64, notes: &mut Vec<String>) -> f64 {
    if v < 0.0 {
        notes.push(format!("{what} fitted as {v:.4}, written as 0"));
        0.0
    } else {
        v
    }
}

/// Simulator wire bytes of a round's pages (the simulator's 8-byte page header and 9-byte zero
/// marker), so the efficiency is relative to what the simulator charges the link.
fn sim_round_bps(ck: &sim::Checked, r: &sim::metrics::RoundRecord) -> f64 {
    let l = &ck.scenario.link;
    let full = r.pages_sent - r.zero_pages_sent;
    let bytes = full * (ck.page_size + l.page_header_bytes) + r.zero_pages_sent * l.zero_page_bytes;
    bytes as f64 * 8e9 / r.duration_ns.max(1) as f64
}

pub fn run(a: CalibrateArgs) -> Result<ExitCode> {
    if !real_backend::kvm_available() {
        bail!("/dev/kvm is not available on this machine");
    }
    let n = a.repeats.max(1);
    let idle_wl = "kind = \"idle\"\nrate_pps = 0";
    let unpaced = "1000 Gbit/s";
    let qemu_small = "kind = \"qemu\"\ndowntime_limit_ms = 2.0";
    let mut pause = Vec::new();
    let mut state_resume = Vec::new();
    let mut harvest_pts: Vec<(f64, f64)> = Vec::new();
    // (memory GiB, setup ms) and (memory GiB, final-harvest µs with ~no dirty pages)
    let mut setup_pts: Vec<(f64, f64)> = Vec::new();
    let mut idle_h_pts: Vec<(f64, f64)> = Vec::new();
    for mem_mib in [64u64, 256, 512] {
        let ck = micro(
            &format!("idle-{mem_mib}m"),
            mem_mib,
            idle_wl,
            unpaced,
            qemu_small,
        )?;
        let gib = ck.mem_bytes() as f64 / GIB as f64;
        for r in 0..n {
            let run = real(&ck, r)?;
            let res = &run.result;
            let d = res.report.downtime.expect("a moved run has a downtime");
            pause.push(d.pause_ns as f64 / 1e6);
            state_resume.push((d.state_ns + d.resume_ns) as f64 / 1e6);
            let setup = res.rounds.first().map(|r0| r0.start_ns as f64 / 1e6);
            if let Some(s) = setup {
                setup_pts.push((gib, s));
            }
            for h in &run.harvests {
                harvest_pts.push((h.dirty_pages as f64, h.ns as f64));
            }
            let last = run.harvests.last();
            if let Some(h) = last {
                idle_h_pts.push((gib, h.ns as f64 / 1e3));
            }
            eprintln!(
                "idle {mem_mib} MiB #{r}: pause {:.3} ms, state {:.3}, resume {:.3}, setup {:.1} ms, final harvest {} pages {:.1} µs",
                d.pause_ns as f64 / 1e6,
                d.state_ns as f64 / 1e6,
                d.resume_ns as f64 / 1e6,
                setup.unwrap_or(f64::NAN),
                last.map_or(0, |h| h.dirty_pages),
                last.map_or(f64::NAN, |h| h.ns as f64 / 1e3),
            );
        }
    }
    // Destination setup (MAP_POPULATE of guest memory) is noisy on a busy nested host, with
    // outliers of seconds: fit the line through each size's median, not through every sample.
    let mut medians: Vec<(f64, f64)> = Vec::new();
    for g in setup_pts
        .iter()
        .map(|p| p.0)
        .fold(Vec::<f64>::new(), |mut v, g| {
            if !v.contains(&g) {
                v.push(g);
            }
            v
        })
    {
        let mut ys: Vec<f64> = setup_pts.iter().filter(|p| p.0 == g).map(|p| p.1).collect();
        medians.push((g, median(&mut ys)));
    }
    let mut notes: Vec<String> = Vec::new();
    let (setup_fixed, setup_per_gib) = fit("the destination set-up time per GiB", &medians)?;
    let setup_fixed = non_negative("link.setup_ms", setup_fixed, &mut notes);
    let setup_per_gib = non_negative("link.setup_ms_per_gib", setup_per_gib, &mut notes);
    let sync_per_gib = fit("the idle harvest cost per GiB", &idle_h_pts)?.1;
    let sync_per_gib = non_negative("dirty_log.sync_us_per_gib", sync_per_gib, &mut notes);
    let g0 = 64.0 / 1024.0;

    // Harvests with many dirty pages, and the pacer's efficiency at 125 MB/s.
    let dirty = micro(
        "dirty",
        128,
        "kind = \"uniform\"\nwss = \"64 MiB\"\nrate_pps = 40000",
        "125 MB/s",
        "kind = \"hyperv-2008r2\"",
    )?;
    let slow = micro("slow-link", 32, idle_wl, "32 MB/s", qemu_small)?;
    let mut eff = Vec::new();
    for r in 0..n {
        for ck in [&dirty, &slow] {
            let run = real(ck, r)?;
            for h in &run.harvests {
                harvest_pts.push((h.dirty_pages as f64, h.ns as f64));
            }
            if let Some(r0) = run.result.rounds.first() {
                let e = sim_round_bps(ck, r0) / ck.scenario.link.bandwidth.0;
                eprintln!(
                    "{} #{r}: round 0 at {:.4} of the nominal rate; {} harvests",
                    ck.scenario.name,
                    e,
                    run.harvests.len()
                );
                eff.push(e);
            }
        }
    }
    let (fit_fixed_ns, per_page_ns) = fit("the harvest cost per dirty page", &harvest_pts)?;
    let per_page_ns = non_negative("dirty_log.sync_ns_per_dirty_page", per_page_ns, &mut notes);
    // The fit's intercept holds the 64 MiB slot scan; the file's fixed part excludes it.
    let sync_fixed_us = non_negative(
        "dirty_log.sync_fixed_us",
        fit_fixed_ns / 1e3 - sync_per_gib * g0,
        &mut notes,
    );

    let fast = micro(
        "max-rate",
        64,
        "kind = \"uniform\"\nwss = \"32 MiB\"\nrate_pps = 400000",
        "125 MB/s",
        "kind = \"hyperv-2008r2\"\npasses = 2",
    )?;
    let mut max_pps = Vec::new();
    for r in 0..n.min(2) {
        let run = real(&fast, r)?;
        eprintln!("max-rate #{r}: {:.0} page writes/s", run.achieved_pps);
        max_pps.push(run.achieved_pps);
    }

    for w in &notes {
        eprintln!("warning: {w} (the measurements are noisier than the effect)");
    }
    let cal = Calibration {
        note: format!(
            "measured by `migsim calibrate --repeats {n}` on {} with {} micro-runs; state save/send/load time is folded into resume_ms{}",
            hostname(),
            3 * n + 2 * n + n.min(2),
            if notes.is_empty() {
                String::new()
            } else {
                format!("; {}", notes.join("; "))
            }
        ),
        switchover: Some(SwitchoverSpec {
            pause_ms: round3(median(&mut pause)),
            resume_ms: round3(median(&mut state_resume)),
            state: ByteSize(0),
        }),
        dirty_log: Some(DirtyLogSpec {
            sync_fixed_us: round3(sync_fixed_us),
            sync_us_per_gib: round3(sync_per_gib),
            sync_ns_per_dirty_page: round3(per_page_ns),
        }),
        link: Some(LinkCalibration {
            efficiency: Some((median(&mut eff) * 1e4).round() / 1e4),
            setup_ms: Some(round3(setup_fixed)),
            setup_ms_per_gib: Some(round3(setup_per_gib)),
            // Not set: the pacer's credit at the pause depends on how long the link stood idle
            // (see results/validation/README.md); `link.burst` stays opt-in.
            burst: None,
        }),
        guest: Some(GuestCalibration {
            max_rate_pps: median(&mut max_pps).round(),
        }),
    };
    let text = format!(
        "# Calibration of the real backend (see `migsim calibrate --help`).\n{}",
        cal.to_toml()
    );
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.out, &text)?;
    print!("{text}");
    println!("wrote {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "this host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_line_recovers_slope_and_intercept() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
        let (a, b) = fit_line(&pts).unwrap();
        assert!((a - 3.0).abs() < 1e-9 && (b - 2.0).abs() < 1e-9);
        assert!(fit_line(&[(1.0, 1.0), (1.0, 2.0)]).is_none());
    }

    #[test]
    fn a_fit_the_measurements_cannot_determine_is_refused_by_name() {
        let e = fit(
            "the harvest cost per dirty page",
            &[(0.0, 5.0), (0.0, 7.0), (0.0, 6.0)],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("the harvest cost per dirty page") && e.contains("1 distinct"),
            "{e}"
        );
        assert!(fit("x", &[(1.0, 2.0)]).is_err());
        assert!(fit("x", &[(f64::NAN, 1.0), (1.0, 2.0)]).is_err());
        let (a, b) = fit("x", &[(1.0, 3.0), (2.0, 5.0)]).unwrap();
        assert!((a - 1.0).abs() < 1e-12 && (b - 2.0).abs() < 1e-12);
    }

    #[test]
    fn negative_fits_are_floored_and_noted() {
        let mut notes = Vec::new();
        assert_eq!(non_negative("link.setup_ms", 3.5, &mut notes), 3.5);
        assert!(notes.is_empty());
        assert_eq!(non_negative("link.setup_ms", -0.25, &mut notes), 0.0);
        assert_eq!(
            notes,
            vec!["link.setup_ms fitted as -0.2500, written as 0".to_string()]
        );
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}

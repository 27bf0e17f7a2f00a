//! `migsim real`: live-migrate (or quick-migrate) a real KVM guest running the scenario's
//! workload, and print/write the same records as `migsim run`. `migsim __dest` is the hidden
//! destination process it starts.

use super::output::write_run_outputs;
use super::run::load_scenario;
use anyhow::{Context, Result};
use clap::Args;
use real_backend::{DestLaunch, GuestMode, RealOptions};
use sim::metrics;
use std::path::PathBuf;
use std::process::ExitCode;

/// Memory used for the default scenario on the real backend.
const DEFAULT_REAL_MEMORY: u64 = 1 << 30;

#[derive(Args, Debug)]
pub struct RealArgs {
    /// Scenario file (TOML). Without it, the built-in default scenario runs with its memory
    /// scaled down to 1 GiB.
    pub scenario: Option<PathBuf>,
    #[command(flatten)]
    pub common: super::run::RunOutputArgs,
    /// Quick migration: pause, save the whole VM to a file, restore it in the destination.
    #[arg(long)]
    pub quick: bool,
    /// Run the consistency-check guest (increments a byte in every page) instead of the workload.
    #[arg(long)]
    pub check: bool,
    /// Skip the memory digest comparison at switchover.
    #[arg(long)]
    pub no_verify: bool,
    /// How long the guest runs on the destination before it reports its progress.
    #[arg(long, default_value_t = 100)]
    pub run_after_ms: u64,
    /// Directory for the quick-migration image (default: the system temp directory).
    #[arg(long)]
    pub image_dir: Option<PathBuf>,
    /// Record the dirty bitmaps harvested each round and write them as a write trace
    /// (`t_ns,page` CSV) that `migsim run --trace FILE` replays.
    #[arg(long)]
    pub record_trace: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DestArgs {
    /// Address of the source VMM to connect to.
    #[arg(long)]
    pub connect: String,
}

/// The write trace of a real run: the RAM pages of each harvested dirty bitmap, spread evenly
/// over the interval that ended at that harvest (round ends, then the final harvest just after
/// the pause).
pub fn harvest_trace(run: &real_backend::RealRun, mem_pages: u64) -> workloads::trace::Trace {
    let rep = &run.result.report;
    let end = rep.total_time_ns;
    let pause_at = rep
        .downtime
        .map_or(end, |d| end.saturating_sub(d.total_ns()) + d.pause_ns);
    let mut times: Vec<u64> = run
        .result
        .rounds
        .iter()
        .map(|r| r.start_ns + r.duration_ns)
        .collect();
    times.truncate(run.trace.len().saturating_sub(1));
    while times.len() < run.trace.len() {
        times.push(pause_at.max(times.last().copied().unwrap_or(0)));
    }
    let sets: Vec<Vec<u64>> = run
        .trace
        .iter()
        .map(|b| b.iter_ones().take_while(|&p| p < mem_pages).collect())
        .collect();
    workloads::trace::from_harvests(&sets, &times)
}

/// Options for a live migration to a separate destination process (`migsim __dest`).
pub fn process_options(replicate: u32, verify: bool) -> Result<RealOptions> {
    let exe = std::env::current_exe().context("cannot find the migsim executable")?;
    Ok(RealOptions {
        replicate,
        dest: DestLaunch::Process {
            program: exe,
            args: vec!["__dest".into()],
        },
        verify,
        ..Default::default()
    })
}

pub fn run(a: RealArgs) -> Result<ExitCode> {
    let mut ck = load_scenario(a.scenario.as_ref(), a.common.seed)?;
    if a.scenario.is_none() && ck.mem_bytes() > DEFAULT_REAL_MEMORY {
        let mut sc = ck.scenario.clone();
        eprintln!(
            "note: the default scenario's {} of memory is scaled down to 1 GiB for the real backend",
            sc.vm.memory
        );
        sc.vm.memory = workloads::ByteSize(DEFAULT_REAL_MEMORY);
        ck = sc
            .check()
            .map_err(|e| anyhow::anyhow!("scaled default scenario is invalid: {e:?}"))?;
    }
    if !real_backend::kvm_available() {
        anyhow::bail!("/dev/kvm is not available on this machine");
    }
    let exe = std::env::current_exe().context("cannot find the migsim executable")?;
    let opts = RealOptions {
        replicate: a.common.replicate,
        mode: if a.check {
            GuestMode::Check
        } else {
            GuestMode::Workload
        },
        dest: DestLaunch::Process {
            program: exe,
            args: vec!["__dest".into()],
        },
        verify: !a.no_verify,
        run_after_ms: a.run_after_ms,
        record_trace: a.record_trace.is_some(),
        ..Default::default()
    };
    let run = if a.quick {
        let dir = a.image_dir.clone().unwrap_or_else(std::env::temp_dir);
        real_backend::quick::quick_migrate(&ck, &opts, &dir)?
    } else {
        real_backend::migrate(&ck, &opts)?
    };
    let res = &run.result;
    if let Some(dir) = &a.common.out {
        write_run_outputs(dir, std::slice::from_ref(res))?;
    }
    if let Some(file) = &a.record_trace {
        let t = harvest_trace(&run, ck.mem_pages);
        let mut buf = Vec::new();
        t.write_csv(
            &mut buf,
            &format!(
                "dirty pages harvested by a real migration of {} (seed {}, replicate {}), each set spread evenly over the interval before its harvest",
                ck.scenario.name, ck.scenario.seed, a.common.replicate
            ),
        )?;
        super::output::write_atomic(file, |b| {
            b.extend_from_slice(&buf);
            Ok(())
        })?;
        eprintln!(
            "wrote {} ({} writes from {} harvests)",
            file.display(),
            t.writes.len(),
            run.trace.len()
        );
    }
    if a.common.json {
        let mut v = metrics::summary_json(&res.report);
        v["kvm"] = serde_json::json!({
            "verified": run.verified,
            "verify_ms": run.verify_ns as f64 / 1e6,
            "achieved_pps": run.achieved_pps,
            "target_pps": run.target_pps,
            "dest_heartbeat_at_resume": run.dest.as_ref().map(|d| d.heartbeat_at_resume),
            "dest_heartbeat_after": run.dest.as_ref().map(|d| d.heartbeat_after),
            "dest_writes_at_resume": run.dest.as_ref().map(|d| d.writes_at_resume),
            "dest_writes_after": run.dest.as_ref().map(|d| d.writes_after),
            "harvests": run.harvests.iter().map(|h| serde_json::json!({
                "dirty_pages": h.dirty_pages,
                "us": h.ns as f64 / 1e3,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", metrics::render_summary(res));
        println!(
            "guest      {:.0} page writes/s achieved (target {:.0}); {} writes before the pause",
            run.achieved_pps, run.target_pps, res.report.guest_writes
        );
        if !run.harvests.is_empty() {
            let list: Vec<String> = run
                .harvests
                .iter()
                .map(|h| format!("{}p/{:.0}us", h.dirty_pages, h.ns as f64 / 1e3))
                .collect();
            println!(
                "harvests   {} (dirty pages / time; the last is the final one)",
                list.join(" ")
            );
        }
        if run.verified {
            println!(
                "verified   memory digest source == destination; the comparison kept the guest paused {:.3} ms more (not in the downtime above)",
                run.verify_ns as f64 / 1e6
            );
        }
        if let Some(d) = &run.dest {
            println!(
                "dest       guest running: heartbeat {} -> {}, page writes {} -> {}",
                d.heartbeat_at_resume, d.heartbeat_after, d.writes_at_resume, d.writes_after
            );
            if let Some(c) = &d.check {
                println!(
                    "check      consistency loop on the destination: {}",
                    match c {
                        Ok(()) => "ok".to_string(),
                        Err(e) => e.clone(),
                    }
                );
            }
        }
        if let Some((alive, check)) = &run.source_after_failure {
            println!(
                "source     guest still running on the source: {}{}",
                if *alive { "yes" } else { "NO" },
                match check {
                    Some(Ok(())) => ", memory consistent".to_string(),
                    Some(Err(e)) => format!(", memory INCONSISTENT: {e}"),
                    None => String::new(),
                }
            );
        }
        if let Some(dir) = &a.common.out {
            println!(
                "wrote {}/{{runs.csv,rounds.csv,summary.json}}",
                dir.display()
            );
        }
    }
    Ok(if res.report.status.moved() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn dest(a: DestArgs) -> Result<ExitCode> {
    let s = std::net::TcpStream::connect(&a.connect)
        .with_context(|| format!("cannot connect to the source at {}", a.connect))?;
    match real_backend::serve_dest(s, &Default::default()) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(real_backend::DestError::Aborted) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("destination: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

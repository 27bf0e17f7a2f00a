//! `migsim run`: simulate one scenario.

use super::output::write_run_outputs;
use anyhow::Result;
use clap::Args;
use sim::{metrics, Scenario};
use std::path::PathBuf;
use std::process::ExitCode;

/// Seed, replicate and output options shared by `run` and `real`.
#[derive(Args, Debug)]
pub struct RunOutputArgs {
    /// Directory to write runs.csv, rounds.csv and summary.json into.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the summary as JSON on stdout instead of the readable table.
    #[arg(long)]
    pub json: bool,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Replicate index (derives an independent seed from the scenario's).
    #[arg(long, default_value_t = 0)]
    pub replicate: u32,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenario file (TOML). Without it, the built-in default scenario runs.
    pub scenario: Option<PathBuf>,
    #[command(flatten)]
    pub common: RunOutputArgs,
    /// Calibration file (from `migsim calibrate`) overriding the scenario's fixed costs
    /// (default: the scenario's own `calibration` field, if any).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Replay a recorded write trace (`migsim real --record-trace FILE`) instead of the
    /// scenario's workload model (exact mode).
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

/// Load a scenario file, or the default scenario when `path` is `None`.
pub fn load_scenario(path: Option<&PathBuf>, seed: Option<u64>) -> Result<sim::Checked> {
    let mut sc = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
            Scenario::from_toml_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => Scenario::default_scenario(),
    };
    if let Some(s) = seed {
        sc.seed = s;
    }
    let name = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "default scenario".into());
    sc.check().map_err(|errs| {
        let list: Vec<String> = errs.iter().map(|e| format!("  - {e}")).collect();
        anyhow::anyhow!("invalid scenario {name}:\n{}", list.join("\n"))
    })
}

/// Apply the calibration the simulator should use for `ck` (the `--calibration` flag, else the
/// scenario's `calibration` field relative to its file); unchanged when there is none.
pub fn calibrated(
    ck: sim::Checked,
    path: Option<&PathBuf>,
    flag: Option<&PathBuf>,
) -> Result<sim::Checked> {
    let Some(file) = sim::calibration::resolve(
        &ck.scenario,
        path.map(|p| p.as_path()),
        flag.map(|p| p.as_path()),
    ) else {
        return Ok(ck);
    };
    let cal = sim::calibration::Calibration::load(&file)?;
    let mut sc = ck.scenario;
    cal.apply(&mut sc);
    sc.check().map_err(|errs| {
        let list: Vec<String> = errs.iter().map(|e| format!("  - {e}")).collect();
        anyhow::anyhow!(
            "scenario is invalid with calibration {}:\n{}",
            file.display(),
            list.join("\n")
        )
    })
}

/// Replace the workload by a recorded trace (replayed in exact mode).
pub fn with_trace(ck: &mut sim::Checked, t: workloads::trace::Trace) {
    ck.workload = workloads::Workload::Trace(t);
    ck.scenario.mode = sim::scenario::Mode::Exact;
}

pub fn run(a: RunArgs) -> Result<ExitCode> {
    let ck = load_scenario(a.scenario.as_ref(), a.common.seed)?;
    let mut ck = calibrated(ck, a.scenario.as_ref(), a.calibration.as_ref())?;
    if let Some(t) = &a.trace {
        let f = std::fs::File::open(t)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", t.display()))?;
        let tr = workloads::trace::Trace::read_csv(std::io::BufReader::new(f), ck.mem_pages)
            .map_err(|e| anyhow::anyhow!("{}: {e}", t.display()))?;
        with_trace(&mut ck, tr);
    }
    let res = sim::simulate(&ck, a.common.replicate);
    if let Some(dir) = &a.common.out {
        write_run_outputs(dir, std::slice::from_ref(&res))?;
    }
    if a.common.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&metrics::summary_json(&res.report))?
        );
    } else {
        print!("{}", metrics::render_summary(&res));
        if let Some(dir) = &a.common.out {
            println!(
                "wrote {}/{{runs.csv,rounds.csv,summary.json}}",
                dir.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

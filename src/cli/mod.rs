//! Command-line interface: argument parsing and one module per command.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod bench;
mod calibrate;
mod check;
mod compare;
mod crosscheck;
mod manifest;
mod merge;
pub mod output;
mod plot;
mod real;
mod run;
mod scenario_cmd;
mod sweep;
mod table;
mod validate;

#[derive(Parser, Debug)]
#[command(
    name = "migsim",
    version,
    about = "Predict (and measure) the blackout and duration of VM live migrations"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Simulate one migration (the built-in default scenario if no file is given).
    Run(run::RunArgs),
    /// Print or validate scenario files.
    Scenario(scenario_cmd::ScenarioArgs),
    /// Run several policies on the identical write trace and compare them with the oracle.
    Compare(compare::CompareArgs),
    /// Compare fluid and analytic mode with the exact engine on a generated grid.
    Crosscheck(crosscheck::CrosscheckArgs),
    /// Measure the simulator's speed on reference cases (prints a table).
    Bench(bench::BenchArgs),
    /// Run a parameter sweep (cartesian product of scenario variations), resumably.
    Sweep(sweep::SweepArgs),
    /// Merge the shard directories of one sweep.
    Merge(merge::MergeArgs),
    /// Draw plots (SVG/PNG) from a results directory.
    Plot(plot::PlotArgs),
    /// Check downtime budgets: exit 0 when all hold, 1 when any is exceeded, 2 on a bad file.
    Check(check::CheckArgs),
    /// Migrate a real KVM guest running the scenario's workload (live, or --quick).
    Real(real::RealArgs),
    /// Measure the real backend's fixed costs on this host and write a calibration file.
    Calibrate(calibrate::CalibrateArgs),
    /// Validate the simulator against real KVM migrations on a grid of scenarios.
    Validate(validate::ValidateArgs),
    /// The destination VMM process of `migsim real` (internal).
    #[command(name = "__dest", hide = true)]
    Dest(real::DestArgs),
}

/// Exit code for bad input (unreadable or invalid files, bad arguments).
pub const EXIT_BAD_INPUT: u8 = 2;

/// `println!` panics when stdout is a pipe whose reader has gone (`migsim ... | head`). That
/// is not an error of ours: end quietly, as command-line tools do.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

pub fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Scenario(a) => scenario_cmd::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Crosscheck(a) => crosscheck::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Plot(a) => plot::run(a),
        Command::Check(a) => check::run(a),
        Command::Real(a) => real::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Dest(a) => real::dest(a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

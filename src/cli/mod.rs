//! Command-line interface: argument parsing and one module per command.

use clap::{ArgMatches, Args, FromArgMatches, Parser, Subcommand};
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
    Run(Lazy<run::RunArgs>),
    /// Print or validate scenario files.
    Scenario(Lazy<scenario_cmd::ScenarioArgs>),
    /// Run several policies on the identical write trace and compare them with the oracle.
    Compare(Lazy<compare::CompareArgs>),
    /// Compare fluid and analytic mode with the exact engine on a generated grid.
    Crosscheck(Lazy<crosscheck::CrosscheckArgs>),
    /// Measure the simulator's speed on reference cases (prints a table).
    Bench(Lazy<bench::BenchArgs>),
    /// Run a parameter sweep (cartesian product of scenario variations), resumably.
    Sweep(Lazy<sweep::SweepArgs>),
    /// Merge the shard directories of one sweep.
    Merge(Lazy<merge::MergeArgs>),
    /// Draw plots (SVG/PNG) from a results directory.
    Plot(Lazy<plot::PlotArgs>),
    /// Check downtime budgets: exit 0 when all hold, 1 when any is exceeded, 2 on a bad file.
    Check(Lazy<check::CheckArgs>),
    /// Migrate a real KVM guest running the scenario's workload (live, or --quick).
    Real(Lazy<real::RealArgs>),
    /// Measure the real backend's fixed costs on this host and write a calibration file.
    Calibrate(Lazy<calibrate::CalibrateArgs>),
    /// Validate the simulator against real KVM migrations on a grid of scenarios.
    Validate(Lazy<validate::ValidateArgs>),
    /// The destination VMM process of `migsim real` (internal).
    #[command(name = "__dest", hide = true)]
    Dest(Lazy<real::DestArgs>),
}

/// A subcommand's arguments, declared to clap only when that subcommand is the one being
/// parsed (or its help shown): `migsim run` does not pay for building every other command's
/// arguments at start-up.
#[derive(Debug)]
pub struct Lazy<A>(pub A);

impl<A: FromArgMatches> FromArgMatches for Lazy<A> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        A::from_arg_matches(m).map(Lazy)
    }
    fn from_arg_matches_mut(m: &mut ArgMatches) -> Result<Self, clap::Error> {
        A::from_arg_matches_mut(m).map(Lazy)
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
    fn update_from_arg_matches_mut(&mut self, m: &mut ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(m)
    }
}

impl<A: Args> Args for Lazy<A> {
    fn group_id() -> Option<clap::Id> {
        A::group_id()
    }
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.defer(|cmd| keep_about(cmd, A::augment_args))
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        cmd.defer(|cmd| keep_about(cmd, A::augment_args_for_update))
    }
}

/// Apply `augment` keeping the command's about texts: they come from the subcommand's doc
/// comment, which the derive applies after the arguments (an argument struct's own doc comment
/// must not win when its arguments come later).
fn keep_about(cmd: clap::Command, augment: fn(clap::Command) -> clap::Command) -> clap::Command {
    let about = cmd.get_about().cloned();
    let long_about = cmd.get_long_about().cloned();
    let cmd = augment(cmd);
    let cmd = match about {
        Some(a) => cmd.about(a),
        None => cmd.about(None::<&str>),
    };
    match long_about {
        Some(a) => cmd.long_about(a),
        None => cmd.long_about(None::<&str>),
    }
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
        Command::Run(a) => run::run(a.0),
        Command::Scenario(a) => scenario_cmd::run(a.0),
        Command::Bench(a) => bench::run(a.0),
        Command::Compare(a) => compare::run(a.0),
        Command::Crosscheck(a) => crosscheck::run(a.0),
        Command::Sweep(a) => sweep::run(a.0),
        Command::Merge(a) => merge::run(a.0),
        Command::Plot(a) => plot::run(a.0),
        Command::Check(a) => check::run(a.0),
        Command::Real(a) => real::run(a.0),
        Command::Calibrate(a) => calibrate::run(a.0),
        Command::Validate(a) => validate::run(a.0),
        Command::Dest(a) => real::dest(a.0),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
    }
}

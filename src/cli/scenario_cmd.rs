//! `migsim scenario`: print the default scenario, or check scenario files.

use anyhow::{bail, Result};
use clap::Args;
use sim::Scenario;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ScenarioArgs {
    /// Print the built-in default scenario as TOML.
    #[arg(long)]
    pub default: bool,
    /// Scenario files to validate (every problem is reported with its field path).
    #[arg(long = "check", value_name = "FILE")]
    pub check: Vec<PathBuf>,
}

pub fn run(a: ScenarioArgs) -> Result<ExitCode> {
    if a.default {
        print!("{}", Scenario::default_scenario().to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    if a.check.is_empty() {
        bail!("nothing to do: pass --default or --check FILE");
    }
    let mut bad = false;
    for p in &a.check {
        match super::run::load_scenario(Some(p), None) {
            Ok(_) => println!("{}: ok", p.display()),
            Err(e) => {
                bad = true;
                println!("{e}");
            }
        }
    }
    Ok(if bad {
        ExitCode::from(super::EXIT_BAD_INPUT)
    } else {
        ExitCode::SUCCESS
    })
}

use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
pub const KINDS: &[&str] = &[
    "downtime-vs-rate",
    "time-vs-bandwidth",
    "downtime-cdf",
    "timeline",
];
#[derive(Args, Debug)]
pub struct PlotArgs {
    pub dir: PathBuf,
}
pub fn run(_a: PlotArgs) -> Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}
pub fn render_kinds(_dir: &Path, _k: &[&str]) -> Result<Vec<PathBuf>> {
    Ok(vec![])
}

//! `manifest.json` of a results directory: what produced the rows and how to reproduce them.

use super::output::write_atomic;
use super::sweep::{Plan, SweepSpec};
use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// How every run's seed is chosen (recorded verbatim in each manifest).
pub const SEED_SCHEME: &str = "each run simulates its point's concrete scenario with the \
scenario's own `seed` field and the replicate index (sim::simulate(&checked, replicate)); \
replicate 0 uses the seed as given, later replicates derive independent streams from it. \
Nothing depends on thread count or order. point_id = FNV-1a 64 of the canonical scenario TOML \
plus the replicate index; run_id = position in the plan (cartesian product in axis order, \
last axis fastest, replicates innermost).";

/// Cargo.lock of the build, to report the exact versions that produced the results.
const CARGO_LOCK: &str = include_str!("../../Cargo.lock");

/// Packages whose versions matter for reproducing results.
const TRACKED: &[&str] = &[
    "migsim",
    "sim",
    "workloads",
    "real-backend",
    "rand",
    "rand_pcg",
    "rand_distr",
    "rayon",
    "serde",
    "toml",
    "plotters",
];

pub fn crate_versions() -> Value {
    let mut out = serde_json::Map::new();
    if let Ok(lock) = CARGO_LOCK.parse::<toml::Table>() {
        if let Some(pkgs) = lock.get("package").and_then(|p| p.as_array()) {
            for p in pkgs {
                let name = p.get("name").and_then(|v| v.as_str()).unwrap_or_default();
                let ver = p
                    .get("version")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                if TRACKED.contains(&name) {
                    // A package can be locked at several versions; list them all.
                    let v = match out.get(name).and_then(|v| v.as_str()) {
                        Some(prev) => format!("{prev}, {ver}"),
                        None => ver.to_string(),
                    };
                    out.insert(name.to_string(), Value::String(v));
                }
            }
        }
    }
    Value::Object(out)
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The working tree's revision and whether it has uncommitted changes to tracked files.
pub fn git_info() -> Value {
    match git(&["rev-parse", "HEAD"]) {
        Some(rev) => json!({
            "revision": rev,
            "dirty": git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty()),
        }),
        None => json!({ "revision": null, "dirty": null }),
    }
}

pub fn host_info() -> Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    json!({
        "hostname": read("/proc/sys/kernel/hostname").or_else(|| std::env::var("HOSTNAME").ok()),
        "os": std::env::consts::OS,
        "arch": std::env::consts::ARCH,
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The manifest of one sweep output directory.
pub struct Manifest {
    value: Value,
}

impl Manifest {
    pub fn new(
        spec: &SweepSpec,
        plan: &Plan,
        shard: Option<(u64, u64)>,
        selected: usize,
        rounds: bool,
    ) -> Self {
        let value = json!({
            "tool": "migsim",
            "version": env!("CARGO_PKG_VERSION"),
            "command": std::env::args().collect::<Vec<_>>(),
            "git": git_info(),
            "crates": crate_versions(),
            "crates_note": "versions locked in Cargo.lock; a name locked at several versions lists them all (some only for dev-dependencies)",
            "host": host_info(),
            "seed_scheme": SEED_SCHEME,
            "sweep": {
                "name": spec.name,
                "description": spec.description,
                "spec_path": spec.path.display().to_string(),
                "spec_text": spec.text,
                "base_scenario": toml::to_string(&spec.base).unwrap_or_default(),
                "axes": spec.axes.iter().map(|a| json!({
                    "path": a.path,
                    "values": a.values.iter().map(|v| v.0.clone()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "replicates": spec.replicates,
            },
            "plan_id": plan.plan_id,
            "points": plan.points.len(),
            "invalid_points": plan.invalid_points(),
            "runs_in_plan": plan.runs.len(),
            "shard": shard.map(|(i, n)| format!("{i}/{n}")),
            "runs_selected": selected,
            "rounds_csv": rounds,
        });
        Manifest { value }
    }

    pub fn from_value(value: Value) -> Self {
        Manifest { value }
    }

    pub fn value_mut(&mut self) -> &mut Value {
        &mut self.value
    }

    /// Write (or rewrite) the manifest with the current timing and completion state.
    pub fn write(
        &mut self,
        dir: &Path,
        started: SystemTime,
        wall: Option<Duration>,
        complete: bool,
    ) -> Result<()> {
        if let Some(o) = self.value.as_object_mut() {
            o.insert("started_utc".into(), Value::String(rfc3339(started)));
            o.insert(
                "last_wall_time_s".into(),
                wall.map_or(Value::Null, |w| json!(w.as_secs_f64())),
            );
            o.insert("complete".into(), Value::Bool(complete));
        }
        write_atomic(&dir.join("manifest.json"), |b| {
            serde_json::to_writer_pretty(&mut *b, &self.value)?;
            b.push(b'\n');
            Ok(())
        })
    }
}

pub fn read(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

pub fn read_plan_id(path: &Path) -> Result<String> {
    read(path)?
        .get("plan_id")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no plan_id", path.display()))
}

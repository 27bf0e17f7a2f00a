//! `migsim sweep`: run the cartesian product of scenario variations, resumably.
//!
//! ```text
//!  spec.toml ──parse──> SweepSpec (base scenario as toml::Table + axes)
//!      └─expand──> Plan: points (concrete scenario, checked or failed) × replicates = runs
//!                    run_id = index in the plan, point_id = hash(canonical TOML, replicate)
//!  results/<name>/  runs.csv  rounds.csv  manifest.json  [plots/]
//!      appended one batch at a time, in plan order; a rerun skips finished run ids
//! ```
//!
//! Every point is turned into a concrete scenario by editing the base as a `toml::Value` and
//! deserialising it like any scenario file, so a sweep can vary any field the scenario format
//! has, including ones added after this code was written.

use super::manifest;
use super::output::write_atomic;
use super::table::{complete_lines, fnv1a64_from, Table, FNV_START};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Deserialize;
use sim::metrics::{self, csv_field, fmt_f64, RunResult, RUNS_HEADER};
use sim::policy::PolicySpec;
use sim::Scenario;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Columns the harness appends to `RUNS_HEADER`, before the `param_*` columns.
pub const HARNESS_COLUMNS: &[&str] = &["point_id", "write_rate_pps"];

/// Refuse plans larger than this many runs (a typo in a range can otherwise ask for billions).
const MAX_RUNS: usize = 50_000_000;

#[derive(Args, Debug)]
pub struct SweepArgs {
    /// Sweep spec (TOML): `[sweep]` name/replicates/base, optional `[base]`, and `[axes]`.
    pub spec: PathBuf,
    /// Worker threads (default: all cores). Output is identical for every value.
    #[arg(short = 'j', long = "jobs")]
    pub jobs: Option<usize>,
    /// Output directory (default `results/<name>`, or `results/<name>/shards/<i>-of-<N>` with
    /// `--shard`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run only shard I of N (1-based; runs are assigned by their point id), e.g. `--shard
    /// $SLURM_ARRAY_TASK_ID/16`. Combine the shards with `migsim merge`.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Discard existing results in the output directory instead of resuming.
    #[arg(long)]
    pub fresh: bool,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(short, long)]
    pub quiet: bool,
    /// Expand the spec and report the points (and every invalid one) without running anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the concrete scenario of one run id as TOML and exit.
    #[arg(long, value_name = "RUN_ID")]
    pub show: Option<usize>,
    /// Skip the plots listed in the spec's `[sweep] plots`.
    #[arg(long)]
    pub no_plots: bool,
    /// Write runs.csv only, as `[sweep] rounds = false` does: no rounds.csv, and the round
    /// records are not built (a large fluid sweep runs faster and takes far less disk).
    #[arg(long)]
    pub no_rounds: bool,
}

// ---------------------------------------------------------------------------------------------
// Spec

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    sweep: SweepSection,
    #[serde(default)]
    base: Option<toml::Table>,
    #[serde(default)]
    axes: BTreeMap<String, toml::Spanned<toml::Value>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct SweepSection {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default = "one")]
    replicates: u32,
    /// Base scenario file, relative to the spec file.
    #[serde(default)]
    base: Option<PathBuf>,
    /// Plot kinds to draw into `<out>/plots/` when the sweep completes.
    #[serde(default)]
    plots: Vec<String>,
    /// Write rounds.csv (one row per round of every run).
    #[serde(default = "yes")]
    rounds: bool,
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

/// One swept field: a dotted scenario path and its values (with the label used in the
/// `param_<path>` column).
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub path: String,
    pub values: Vec<(String, toml::Value)>,
}

/// A parsed sweep spec.
#[derive(Clone, Debug)]
pub struct SweepSpec {
    pub name: String,
    pub description: String,
    pub replicates: u32,
    pub base: toml::Table,
    pub axes: Vec<Axis>,
    pub plots: Vec<String>,
    /// Whether rounds.csv is written.
    pub rounds: bool,
    /// The spec file's text, kept for the manifest.
    pub text: String,
    pub path: PathBuf,
}

/// Read and validate a sweep spec; every error names the field (`axes."link.bandwidth"[1]`).
pub fn load_spec(path: &Path) -> Result<SweepSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read sweep spec {}", path.display()))?;
    parse_spec(&text, path).with_context(|| format!("invalid sweep spec {}", path.display()))
}

pub fn parse_spec(text: &str, path: &Path) -> Result<SweepSpec> {
    let f: SpecFile = sim::scenario::from_toml(text).map_err(anyhow::Error::msg)?;
    let s = f.sweep;
    if s.name.is_empty() || s.name.contains(['/', '\\']) || s.name.starts_with('.') {
        bail!(
            "sweep.name: must be a plain directory name, got `{}`",
            s.name
        );
    }
    if s.replicates == 0 {
        bail!("sweep.replicates: must be at least 1");
    }
    for k in &s.plots {
        if !super::plot::KINDS.contains(&k.as_str()) {
            bail!(
                "sweep.plots: unknown plot kind `{k}` (known: {})",
                super::plot::KINDS.join(", ")
            );
        }
    }
    if !s.rounds && s.plots.iter().any(|k| k == "timeline") {
        bail!("sweep.plots: `timeline` draws rounds.csv, which `rounds = false` leaves out");
    }
    let mut axes: Vec<(usize, Axis)> = Vec::new();
    for (key, v) in f.axes {
        let at = v.span().start;
        let field = format!("axes.\"{key}\"");
        check_path(&key).map_err(|e| anyhow::anyhow!("{field}: {e}"))?;
        let values =
            axis_values(&key, v.into_inner()).map_err(|e| anyhow::anyhow!("{field}{e}"))?;
        axes.push((at, Axis { path: key, values }));
    }
    let base = match (s.base, f.base) {
        (Some(_), Some(_)) => {
            bail!("sweep.base: give either a base file or a [base] table, not both")
        }
        (Some(p), None) => {
            let full = path.parent().unwrap_or(Path::new(".")).join(&p);
            let t = std::fs::read_to_string(&full)
                .with_context(|| format!("sweep.base: failed to read {}", full.display()))?;
            toml::from_str::<toml::Table>(&t)
                .with_context(|| format!("sweep.base: {} is not valid TOML", full.display()))?
        }
        (None, Some(t)) => t,
        (None, None) => bail!("sweep.base: missing (give a scenario file or a [base] table)"),
    };
    // The file's order, so that the last axis written varies fastest.
    axes.sort_by_key(|a| a.0);
    Ok(SweepSpec {
        name: s.name,
        description: s.description,
        replicates: s.replicates,
        base,
        axes: axes.into_iter().map(|a| a.1).collect(),
        plots: s.plots,
        rounds: s.rounds,
        text: text.to_string(),
        path: path.to_path_buf(),
    })
}

fn check_path(p: &str) -> Result<(), String> {
    if p.split('.').any(|s| s.is_empty()) {
        return Err("must be a dotted path such as `link.bandwidth`".into());
    }
    Ok(())
}

/// Expand one axis value into labelled values. Errors start with the suffix of the field path.
fn axis_values(path: &str, v: toml::Value) -> Result<Vec<(String, toml::Value)>, String> {
    use toml::Value as V;
    let is_policy = path == "policy" || path == "policy.kind";
    match v {
        V::String(s) if is_policy && s == "all" => {
            let mut out: Vec<(String, toml::Value)> = Vec::new();
            for p in PolicySpec::all_defaults() {
                if path == "policy" {
                    // Every default variant, labelled so that variants of one kind stay apart
                    // (`qemu`, `qemu-auto-converge`). Serialising plain data cannot fail.
                    let v = toml::Value::try_from(&p).expect("policy serialises to TOML");
                    out.push((p.label(), v));
                } else if out.iter().all(|(l, _)| l != p.name()) {
                    // `policy.kind` can only name kinds: one entry per kind.
                    out.push((p.name().to_string(), V::String(p.name().to_string())));
                }
            }
            Ok(out)
        }
        V::Array(items) => {
            if items.is_empty() {
                return Err(": must list at least one value".into());
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| labelled(item).map_err(|e| format!("[{i}]: {e}")))
                .collect()
        }
        V::Table(t) if t.contains_key("from") => range(&t).map_err(|e| format!(": {e}")),
        other => Err(format!(
            ": must be a list of values, a range table {{ from, to, steps | step, scale }}{}, got {}",
            if is_policy { ", or \"all\"" } else { "" },
            other.type_str()
        )),
    }
}

/// A list item; a table may carry a `label` key naming it in the `param_*` column.
fn labelled(v: toml::Value) -> Result<(String, toml::Value), String> {
    match v {
        toml::Value::Table(mut t) => match t.remove("label") {
            Some(toml::Value::String(l)) => Ok((l, toml::Value::Table(t))),
            Some(other) => Err(format!("label: must be a string, got {}", other.type_str())),
            None => {
                let v = toml::Value::Table(t);
                Ok((render_value(&v), v))
            }
        },
        v => Ok((render_value(&v), v)),
    }
}

fn range(t: &toml::Table) -> Result<Vec<(String, toml::Value)>, String> {
    const KEYS: &[&str] = &["from", "to", "steps", "step", "scale"];
    if let Some(k) = t.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown range key `{k}` (expected one of {})",
            KEYS.join(", ")
        ));
    }
    let num = |k: &str| -> Result<(f64, bool), String> {
        match t.get(k) {
            Some(toml::Value::Integer(i)) => Ok((*i as f64, true)),
            Some(toml::Value::Float(f)) if f.is_finite() => Ok((*f, false)),
            Some(other) => Err(format!("{k}: must be a finite number, got {other}")),
            None => Err(format!("{k}: missing")),
        }
    };
    let (from, fi) = num("from")?;
    let (to, ti) = num("to")?;
    let integer = fi && ti;
    let log = match t.get("scale") {
        None => false,
        Some(toml::Value::String(s)) if s == "linear" => false,
        Some(toml::Value::String(s)) if s == "log" => true,
        Some(other) => return Err(format!("scale: must be \"linear\" or \"log\", got {other}")),
    };
    let xs: Vec<f64> = match (t.get("steps"), t.get("step")) {
        (Some(_), Some(_)) => return Err("give either steps or step, not both".into()),
        (Some(toml::Value::Integer(n)), None) if *n >= 1 && *n <= 1_000_000 => {
            let n = *n as usize;
            if log && (from <= 0.0 || to <= 0.0) {
                return Err("scale = \"log\" needs from and to > 0".into());
            }
            // The ends are the values given, to the bit (a formula through logarithms or a
            // difference would round them).
            (0..n)
                .map(|i| {
                    if i == 0 {
                        return from;
                    }
                    if i == n - 1 {
                        return to;
                    }
                    let f = i as f64 / (n - 1) as f64;
                    if log {
                        from * (to / from).powf(f)
                    } else {
                        from + (to - from) * f
                    }
                })
                .collect()
        }
        (Some(other), None) => {
            return Err(format!(
                "steps: must be an integer in 1..=1000000, got {other}"
            ))
        }
        (None, Some(s)) => {
            if log {
                return Err(
                    "step: a fixed step needs scale = \"linear\"; use steps with log".into(),
                );
            }
            let step = match s {
                toml::Value::Integer(i) => *i as f64,
                toml::Value::Float(f) => *f,
                other => return Err(format!("step: must be a number, got {other}")),
            };
            if !(step.is_finite() && step > 0.0) {
                return Err(format!("step: must be > 0, got {step}"));
            }
            if to < from {
                return Err("to: must be ≥ from when a step is given".into());
            }
            let n = ((to - from) / step + 1e-9).floor() as usize + 1;
            if n > 1_000_000 {
                return Err(format!("step: gives {n} values, more than 1000000"));
            }
            (0..n).map(|i| from + step * i as f64).collect()
        }
        (None, None) => return Err("steps (a count) or step (an increment) is required".into()),
    };
    let mut out: Vec<(String, toml::Value)> = Vec::new();
    for x in xs {
        let v = if integer {
            toml::Value::Integer(x.round() as i64)
        } else {
            toml::Value::Float(x)
        };
        let label = render_value(&v);
        // Rounding to integers can repeat a value; keep the first.
        if out.iter().all(|(l, _)| *l != label) {
            out.push((label, v));
        }
    }
    Ok(out)
}

/// A compact, deterministic rendering of a TOML value for a `param_*` column.
pub fn render_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => fmt_f64(*f),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(a) => format!(
            "[{}]",
            a.iter().map(render_value).collect::<Vec<_>>().join(" ")
        ),
        toml::Value::Table(t) => {
            let kind = t.get("kind").map(render_value);
            let rest: Vec<String> = t
                .iter()
                .filter(|(k, _)| k.as_str() != "kind")
                .map(|(k, v)| format!("{k}={}", render_value(v)))
                .collect();
            match kind {
                Some(k) if rest.is_empty() => k,
                Some(k) => format!("{k}({})", rest.join(" ")),
                None => format!("{{{}}}", rest.join(" ")),
            }
        }
    }
}

/// Set `path` (dotted) in a TOML table, creating intermediate tables. Setting a `kind` to a
/// different value resets its table: the other keys belong to the old variant.
pub fn set_path(root: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
    check_path(path)?;
    let segs: Vec<&str> = path.split('.').collect();
    let mut cur = root;
    for (i, seg) in segs[..segs.len() - 1].iter().enumerate() {
        let entry = cur
            .entry(seg.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            other => {
                return Err(format!(
                    "`{}` is not a table (it holds a {})",
                    segs[..=i].join("."),
                    other.type_str()
                ))
            }
        };
    }
    let last = segs[segs.len() - 1];
    if last == "kind" && cur.get("kind").is_some_and(|k| *k != value) {
        cur.clear();
    }
    cur.insert(last.to_string(), value);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Plan

/// One concrete scenario of the sweep. (Its axis labels and, for rows of a failed point, its
/// identity are found again from the plan: [`Plan::params`], [`Plan::identity`].)
#[derive(Debug)]
pub struct Point {
    /// The checked scenario, or why this combination is invalid.
    pub scenario: Result<sim::Checked, String>,
    /// FNV-1a 64 state after the point's canonical TOML (the scenario re-serialised with every
    /// default filled in, or the edited table when it does not deserialise); the text itself
    /// is not kept ([`canonical_text`] builds it again).
    pub canonical_fnv: u64,
}

/// One simulation to run: a point and a replicate index.
#[derive(Clone, Debug)]
pub struct RunRef {
    pub run_id: usize,
    pub point: usize,
    pub replicate: u32,
    /// [`point_id`]: written in hex (16 digits) in the `point_id` column.
    pub point_id: u64,
}

#[derive(Debug)]
pub struct Plan {
    pub points: Vec<Point>,
    pub runs: Vec<RunRef>,
    /// Hash of every run's point id in order: two plans with the same id produce the same rows.
    pub plan_id: String,
    /// The spec's base table and axes, which every point's table is built from.
    pub base: toml::Table,
    pub axes: Vec<Axis>,
}

impl Plan {
    pub fn runs_header(&self) -> Vec<String> {
        RUNS_HEADER
            .iter()
            .chain(HARNESS_COLUMNS)
            .map(|s| s.to_string())
            .chain(self.axes.iter().map(|a| format!("param_{}", a.path)))
            .collect()
    }
    pub fn invalid_points(&self) -> usize {
        self.points.iter().filter(|p| p.scenario.is_err()).count()
    }

    /// Point `k`'s `param_*` labels, in axis order.
    pub fn params(&self, k: usize) -> impl Iterator<Item = &str> {
        (self.axes.iter().zip(point_digits(&self.axes, k))).map(|(a, i)| a.values[i].0.as_str())
    }

    /// Point `k`'s table, and the first axis value that could not be set in it.
    fn table(&self, k: usize) -> (toml::Table, Option<String>) {
        point_table(&self.base, &point_sets(&self.axes, k))
    }

    /// Best-effort identity of point `k` for the row of a run that failed: its `name`,
    /// `policy.kind`, `workload.kind` and `seed` as its table gives them.
    pub fn identity(&self, k: usize) -> [String; 4] {
        let (t, _) = self.table(k);
        let s = |k: &str| -> String {
            let mut cur = Some(&t);
            let segs: Vec<&str> = k.split('.').collect();
            for seg in &segs[..segs.len() - 1] {
                cur = cur.and_then(|c| c.get(*seg)).and_then(|v| v.as_table());
            }
            cur.and_then(|c| c.get(segs[segs.len() - 1]))
                .map(render_value)
                .unwrap_or_default()
        };
        [s("name"), s("policy.kind"), s("workload.kind"), s("seed")]
    }
}

/// The table of a point: `base` with each of `sets` set, and the first that could not be.
fn point_table(base: &toml::Table, sets: &[(&str, &toml::Value)]) -> (toml::Table, Option<String>) {
    let mut t = base.clone();
    let mut err = None;
    for (path, v) in sets {
        if let Err(e) = set_path(&mut t, path, (*v).clone()) {
            err.get_or_insert(format!("{path}: {e}"));
        }
    }
    (t, err)
}

/// Build the concrete scenario of one point from the base table and axis values.
pub fn concretise(base: &toml::Table, sets: &[(&str, &toml::Value)]) -> Point {
    let build = || point_table(base, sets);
    let (t, err) = build();
    // The table is read as it stands; only a point that fails is written out as text (the
    // line numbers of a message refer to it, and `--show` prints it), from its table built
    // again.
    let text = || toml::to_string(&build().0).unwrap_or_default();
    let parsed = match err {
        Some(e) => Err(e),
        None => match Scenario::from_toml_table(t) {
            Some(sc) => Ok(sc),
            None => match Scenario::from_toml_str(&text()) {
                Err(e) => Err(e.to_string()),
                Ok(sc) => Ok(sc),
            },
        },
    };
    let scenario = parsed.and_then(|sc| {
        sc.check().map_err(|errs| {
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })
    });
    let canonical = match &scenario {
        Ok(ck) => ck.scenario.to_toml_cached(),
        Err(_) => text(),
    };
    Point {
        scenario,
        canonical_fnv: fnv1a64_from(FNV_START, canonical.as_bytes()),
    }
}

/// The point id of a run: stable hash (FNV-1a 64) of the canonical scenario and the replicate
/// index, `canonical\nreplicate = N\n`; `canonical_fnv` is the state after the canonical text.
pub fn point_id(canonical_fnv: u64, replicate: u32) -> u64 {
    fnv1a64_from(
        canonical_fnv,
        format!("\nreplicate = {replicate}\n").as_bytes(),
    )
}

/// The canonical TOML of point `k` of `plan`, whose hash its point ids continue.
pub fn canonical_text(plan: &Plan, k: usize) -> String {
    match &plan.points[k].scenario {
        Ok(ck) => ck.scenario.to_toml(),
        Err(_) => toml::to_string(&plan.table(k).0).unwrap_or_default(),
    }
}

/// Point `k`'s value index on each of `axes`: the mixed-radix digits of `k` (last axis
/// fastest).
fn point_digits(axes: &[Axis], k: usize) -> Vec<usize> {
    let mut idx = vec![0usize; axes.len()];
    let mut rest = k;
    for (d, a) in axes.iter().enumerate().rev() {
        idx[d] = rest % a.values.len();
        rest /= a.values.len();
    }
    idx
}

/// Point `k`'s value on each of `axes`, with the axis path it sets.
fn point_sets(axes: &[Axis], k: usize) -> Vec<(&str, &toml::Value)> {
    (axes.iter().zip(point_digits(axes, k)))
        .map(|(a, i)| (a.path.as_str(), &a.values[i].1))
        .collect()
}

/// A run's point id as the `point_id` column writes it (16 hex digits).
fn point_id_hex(id: u64) -> String {
    format!("{id:016x}")
}

/// Expand a spec into its plan (cartesian product; the last axis varies fastest).
pub fn expand(spec: &SweepSpec) -> Result<Plan> {
    let n_points = spec
        .axes
        .iter()
        .try_fold(1usize, |acc, a| acc.checked_mul(a.values.len()))
        .filter(|n| n.saturating_mul(spec.replicates as usize) <= MAX_RUNS)
        .with_context(|| format!("the sweep has more than {MAX_RUNS} runs"))?;
    // Point k's value indices are the mixed-radix digits of k (last axis fastest). Points are
    // built in parallel (deserialising and checking thousands of scenarios adds up) and
    // collected in order.
    use rayon::prelude::*;
    let points: Vec<Point> = (0..n_points)
        .into_par_iter()
        .map(|k| concretise(&spec.base, &point_sets(&spec.axes, k)))
        .collect();
    let mut runs = Vec::with_capacity(n_points * spec.replicates as usize);
    for (pi, p) in points.iter().enumerate() {
        for r in 0..spec.replicates {
            runs.push(RunRef {
                run_id: runs.len(),
                point: pi,
                replicate: r,
                point_id: point_id(p.canonical_fnv, r),
            });
        }
    }
    // The hash of every run's point id in hex, then the axis paths, in one text (hashed as it
    // goes rather than written out: 16 bytes a run adds up in a plan of millions).
    let mut h = FNV_START;
    for r in &runs {
        h = fnv1a64_from(h, point_id_hex(r.point_id).as_bytes());
    }
    for a in &spec.axes {
        h = fnv1a64_from(h, a.path.as_bytes());
    }
    Ok(Plan {
        points,
        plan_id: format!("{h:016x}"),
        runs,
        base: spec.base.clone(),
        axes: spec.axes.clone(),
    })
}

// ---------------------------------------------------------------------------------------------
// Running

/// Simulate one run; invalid points and panics become errors.
fn simulate_run(plan: &Plan, r: &RunRef) -> Result<RunResult, String> {
    simulate_guarded(plan, r, sim::simulate)
}

/// [`simulate_run`] without the round records (see [`sim::simulate_report`]).
pub fn simulate_run_report(plan: &Plan, r: &RunRef) -> Result<sim::RunReport, String> {
    simulate_guarded(plan, r, sim::simulate_report)
}

/// `sim` on the run's checked scenario, with a panic turned into an error.
fn simulate_guarded<T>(
    plan: &Plan,
    r: &RunRef,
    sim: impl FnOnce(&sim::Checked, u32) -> T,
) -> Result<T, String> {
    let p = &plan.points[r.point];
    let ck = p.scenario.as_ref().map_err(|e| e.clone())?;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim(ck, r.replicate))).map_err(|e| {
        let msg = e
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| e.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        format!("simulator panicked: {msg}")
    })
}

/// The finished lines of one run for runs.csv and rounds.csv, and whether its status is
/// `invalid` or `error`.
struct RunLines {
    runs: String,
    rounds: String,
    bad: bool,
}

/// The last result a worker simulated for a point whose replicates all give it
/// ([`sim::replicates_differ`]): the point, its report and its round records.
type Reusable = Option<(usize, sim::RunReport, Vec<sim::metrics::RoundRecord>)>;

/// Render one run's lines; with `rounds` false its round records are not even built. A run
/// of the point in `reuse` takes its result from there instead of simulating it again (the
/// replicates of a point are next to each other in the plan).
fn render_run(plan: &Plan, r: &RunRef, rounds: bool, reuse: &mut Reusable) -> RunLines {
    let p = &plan.points[r.point];
    let same = (p.scenario.as_ref()).is_ok_and(|ck| !sim::replicates_differ(ck));
    let (report, records) = match reuse.as_ref().filter(|u| same && u.0 == r.point) {
        Some((_, report, records)) => {
            let mut report = report.clone();
            report.replicate = r.replicate;
            (Ok(report), records.clone())
        }
        None => {
            let (report, records) = if rounds {
                match simulate_run(plan, r) {
                    Ok(res) => (Ok(res.report), res.rounds),
                    Err(e) => (Err(e), Vec::new()),
                }
            } else {
                (simulate_run_report(plan, r), Vec::new())
            };
            // (Kept only when the next run in the plan is another replicate of the point.)
            let next_same = (plan.runs.get(r.run_id + 1)).is_some_and(|n| n.point == r.point);
            if let (true, true, Ok(report)) = (same, next_same, &report) {
                *reuse = Some((r.point, report.clone(), records.clone()));
            }
            (report, records)
        }
    };
    let mut runs = String::with_capacity(320);
    match &report {
        Ok(report) => metrics::push_run_row(&mut runs, r.run_id, report),
        Err(e) => {
            let mut row = vec![String::new(); RUNS_HEADER.len()];
            let mut put = |col: &str, v: String| {
                if let Some(i) = RUNS_HEADER.iter().position(|h| *h == col) {
                    row[i] = v;
                }
            };
            let [name, policy, workload, seed] = plan.identity(r.point);
            put("run_id", r.run_id.to_string());
            put("backend", "sim".into());
            put("scenario", csv_field(&name));
            put("policy", csv_field(&policy));
            put("workload", csv_field(&workload));
            put("seed", csv_field(&seed));
            put("replicate", r.replicate.to_string());
            put(
                "status",
                if p.scenario.is_err() {
                    "invalid"
                } else {
                    "error"
                }
                .into(),
            );
            put("reason", csv_field(e));
            runs.push_str(&row.join(","));
        }
    }
    runs.push(',');
    runs.push_str(&point_id_hex(r.point_id));
    runs.push(',');
    if let Ok(ck) = &p.scenario {
        metrics::push_f64(&mut runs, ck.workload.nominal_rate_pps());
    }
    for v in plan.params(r.point) {
        runs.push(',');
        metrics::push_field(&mut runs, v);
    }
    runs.push('\n');
    let mut rounds = String::with_capacity(records.len() * 80);
    for rr in &records {
        metrics::push_round_line(&mut rounds, r.run_id, rr);
    }
    RunLines {
        runs,
        rounds,
        bad: report.is_err(),
    }
}

/// Parse `I/N` (1-based).
pub fn parse_shard(s: &str) -> Result<(u64, u64)> {
    let (i, n) = s
        .split_once('/')
        .with_context(|| format!("--shard: expected I/N such as 1/4, got `{s}`"))?;
    let i: u64 = i
        .trim()
        .parse()
        .with_context(|| format!("--shard: `{i}` is not a number"))?;
    let n: u64 = n
        .trim()
        .parse()
        .with_context(|| format!("--shard: `{n}` is not a number"))?;
    if n == 0 || i == 0 || i > n {
        bail!("--shard: need 1 ≤ I ≤ N, got {i}/{n}");
    }
    Ok((i, n))
}

/// Whether a run belongs to shard `i` of `n`.
pub fn in_shard(point_id: u64, (i, n): (u64, u64)) -> bool {
    point_id % n == i - 1
}

/// An exclusive claim on an output directory, so that two sweeps (say, two array tasks given the
/// same `--out`) never append to the same files. Removed when dropped.
struct DirLock {
    path: PathBuf,
}

impl DirLock {
    fn take(dir: &Path) -> Result<DirLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let path = dir.join(".migsim-sweep.lock");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let me = format!("{host} {}\n", std::process::id());
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(me.as_bytes())
                        .with_context(|| format!("failed to write {}", path.display()))?;
                    return Ok(DirLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let owner = std::fs::read_to_string(&path).unwrap_or_default();
                    let mut it = owner.split_whitespace();
                    let (h, pid) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
                    let alive = h == host && Path::new("/proc").join(pid).exists();
                    if h == host && !alive {
                        // A crashed sweep on this host left it behind: take over.
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    bail!(
                        "{} is in use by another sweep (host {h}, pid {pid}); if that sweep is gone, delete {}",
                        dir.display(),
                        path.display()
                    );
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("failed to create {}", path.display()))
                }
            }
        }
        bail!("could not lock {}", dir.display())
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Set up the output directory; returns the run ids already finished there (a resume) and how
/// many of their rows are `invalid` or `error`.
///
/// With `rounds` false no rounds.csv is written; resuming rows written the other way is refused
/// (rounds.csv would cover only some of the runs).
fn prepare_dir(
    dir: &Path,
    plan: &Plan,
    header: &[String],
    fresh: bool,
    rounds: bool,
) -> Result<(HashSet<usize>, usize)> {
    let runs_p = dir.join("runs.csv");
    let rounds_p = dir.join("rounds.csv");
    let man_p = dir.join("manifest.json");
    if fresh {
        for p in [&runs_p, &rounds_p, &man_p] {
            if p.exists() {
                std::fs::remove_file(p)
                    .with_context(|| format!("failed to remove {}", p.display()))?;
            }
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    if !runs_p.exists() {
        let h = header.join(",") + "\n";
        if rounds {
            write_atomic(&rounds_p, |b| {
                b.extend_from_slice((metrics::ROUNDS_HEADER.join(",") + "\n").as_bytes());
                Ok(())
            })?;
        } else if rounds_p.exists() {
            // (Left by some earlier sweep; it would not describe these runs.)
            std::fs::remove_file(&rounds_p)
                .with_context(|| format!("failed to remove {}", rounds_p.display()))?;
        }
        write_atomic(&runs_p, |b| {
            b.extend_from_slice(h.as_bytes());
            Ok(())
        })?;
        return Ok((HashSet::new(), 0));
    }
    // Resume: the plan must be the one that produced these rows.
    let prev = manifest::read_plan_id(&man_p).with_context(|| {
        format!(
            "{} holds results but no readable manifest; pass --fresh to start over",
            dir.display()
        )
    })?;
    if prev != plan.plan_id {
        bail!(
            "{} holds results of a different plan ({prev}, this spec expands to {}); pass --fresh to start over or choose another --out",
            dir.display(),
            plan.plan_id
        );
    }
    if rounds && !rounds_p.exists() {
        bail!(
            "{} holds results written without rounds.csv (`--no-rounds` or `[sweep] rounds = false`); resume with --no-rounds, or pass --fresh to start over",
            dir.display()
        );
    }
    if !rounds && rounds_p.exists() {
        bail!(
            "{} holds results written with rounds.csv; resume without --no-rounds and with `[sweep] rounds` true, or pass --fresh to start over",
            dir.display()
        );
    }
    let text = std::fs::read_to_string(&runs_p)
        .with_context(|| format!("failed to read {}", runs_p.display()))?;
    let kept = complete_lines(&text);
    let table = Table::parse(kept).with_context(|| format!("in {}", runs_p.display()))?;
    if table.header != header {
        bail!(
            "{} has different columns than this sweep writes; pass --fresh to start over",
            runs_p.display()
        );
    }
    let mut done = HashSet::new();
    let status_col = table.need("status")?;
    let bad = (table.rows.iter())
        .filter(|r| matches!(r[status_col].as_str(), "invalid" | "error"))
        .count();
    for row in &table.rows {
        let id: usize = row[0]
            .parse()
            .with_context(|| format!("{}: bad run_id `{}`", runs_p.display(), row[0]))?;
        let pid_col = RUNS_HEADER.len();
        if plan
            .runs
            .get(id)
            .map(|r| point_id_hex(r.point_id))
            .as_deref()
            != Some(row[pid_col].as_str())
        {
            bail!(
                "{}: run {id} does not match this plan; pass --fresh to start over",
                runs_p.display()
            );
        }
        done.insert(id);
    }
    if kept.len() != text.len() {
        write_atomic(&runs_p, |b| {
            b.extend_from_slice(kept.as_bytes());
            Ok(())
        })?;
    }
    if !rounds {
        return Ok((done, bad));
    }
    // Keep only the rounds of finished runs (a crash may leave rounds of an unfinished batch).
    let rtext = std::fs::read_to_string(&rounds_p).unwrap_or_default();
    let rkept = complete_lines(&rtext);
    let mut lines = rkept.lines();
    let mut out = String::with_capacity(rkept.len());
    out.push_str(&metrics::ROUNDS_HEADER.join(","));
    out.push('\n');
    lines.next();
    for l in lines {
        let id = l.split(',').next().and_then(|s| s.parse::<usize>().ok());
        if id.is_some_and(|id| done.contains(&id)) {
            out.push_str(l);
            out.push('\n');
        }
    }
    if out != rtext {
        write_atomic(&rounds_p, |b| {
            b.extend_from_slice(out.as_bytes());
            Ok(())
        })?;
    }
    Ok((done, bad))
}

/// Finished output held before it is appended even if 0.5 s have not passed (a fluid sweep
/// renders tens of thousands of runs a second; each append waits for the disk).
const FLUSH_BYTES: usize = 4 << 20;

/// Append `parts` to the file at `path` and wait until they are on disk.
fn append<'a>(path: &Path, parts: impl Iterator<Item = &'a str>) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("failed to open {}", path.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    for p in parts {
        w.write_all(p.as_bytes())
            .with_context(|| format!("failed to append to {}", path.display()))?;
    }
    let f = w
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("failed to append to {}", path.display()))?;
    f.sync_data().ok();
    Ok(())
}

/// Rewrite both CSVs sorted by run id if they are not (only after unusual resumes).
fn ensure_sorted(dir: &Path) -> Result<()> {
    for name in ["runs.csv", "rounds.csv"] {
        let p = dir.join(name);
        if name == "rounds.csv" && !p.exists() {
            continue; // (a sweep without rounds)
        }
        let text = std::fs::read_to_string(&p)?;
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default().to_string();
        let body: Vec<&str> = lines.collect();
        let key = |l: &&str| l.split(',').next().and_then(|s| s.parse::<usize>().ok());
        if body.windows(2).all(|w| key(&w[0]) <= key(&w[1])) {
            continue;
        }
        let mut sorted = body.clone();
        sorted.sort_by_key(key);
        write_atomic(&p, |b| {
            writeln!(b, "{header}")?;
            for l in sorted {
                writeln!(b, "{l}")?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

pub fn run(a: SweepArgs) -> Result<ExitCode> {
    let spec = load_spec(&a.spec)?;
    let plan = expand(&spec)?;
    if let Some(id) = a.show {
        let r = plan
            .runs
            .get(id)
            .with_context(|| format!("--show: run id {id} is outside 0..{}", plan.runs.len()))?;
        let p = &plan.points[r.point];
        print!("{}", canonical_text(&plan, r.point));
        if r.replicate > 0 {
            println!(
                "# replicate {} (migsim run --replicate {})",
                r.replicate, r.replicate
            );
        }
        if let Err(e) = &p.scenario {
            println!("# invalid: {e}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let shard = a.shard.as_deref().map(parse_shard).transpose()?;
    if !a.dry_run && plan.invalid_points() == plan.points.len() {
        // Most likely a mistake in the base scenario: stop instead of writing only failures.
        let first = plan.points[0]
            .scenario
            .as_ref()
            .err()
            .cloned()
            .unwrap_or_default();
        bail!(
            "every point of sweep {} is invalid; the first: {first}",
            spec.name
        );
    }
    if a.dry_run {
        let selected = plan
            .runs
            .iter()
            .filter(|r| shard.is_none_or(|s| in_shard(r.point_id, s)))
            .count();
        println!(
            "sweep {}: {} points × {} replicates = {} runs ({} in this shard), {} invalid points, plan {}",
            spec.name,
            plan.points.len(),
            spec.replicates,
            plan.runs.len(),
            selected,
            plan.invalid_points(),
            plan.plan_id
        );
        for (i, p) in plan.points.iter().enumerate() {
            if let Err(e) = &p.scenario {
                let params: Vec<&str> = plan.params(i).collect();
                println!("  point {i} [{}]: {e}", params.join(", "));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let dir = a.out.clone().unwrap_or_else(|| {
        let base = PathBuf::from("results").join(&spec.name);
        match shard {
            Some((i, n)) => base.join("shards").join(format!("{i}-of-{n}")),
            None => base,
        }
    });
    let header = plan.runs_header();
    let _lock = DirLock::take(&dir)?;
    let rounds = spec.rounds && !a.no_rounds;
    let (done, bad_before) = prepare_dir(&dir, &plan, &header, a.fresh, rounds)?;
    let todo: Vec<&RunRef> = plan
        .runs
        .iter()
        .filter(|r| shard.is_none_or(|s| in_shard(r.point_id, s)))
        .filter(|r| !done.contains(&r.run_id))
        .collect();
    let selected = plan
        .runs
        .iter()
        .filter(|r| shard.is_none_or(|s| in_shard(r.point_id, s)))
        .count();
    let started = std::time::SystemTime::now();
    let mut man = manifest::Manifest::new(&spec, &plan, shard, selected, rounds);
    man.write(&dir, started, None, false)?;

    let threads = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("failed to start worker threads")?;
    let pb = progress_bar(todo.len() as u64, a.quiet);
    let t0 = std::time::Instant::now();
    let bad_now = write_in_order(&pool, threads, &plan, &todo, &dir, &pb, rounds)?;
    pb.finish_and_clear();
    let wall = t0.elapsed();
    // Rows are appended in plan order, so the files are sorted unless a resume found finished
    // runs after unfinished ones (e.g. results copied in from elsewhere); only then re-sort.
    if todo
        .first()
        .is_some_and(|first| done.iter().any(|&d| d > first.run_id))
    {
        ensure_sorted(&dir)?;
    }
    // runs.csv now holds the rows it held before and one per run just done.
    let bad = bad_before + bad_now;
    let complete = done.len() + todo.len() == selected;
    man.write(&dir, started, Some(wall), complete)?;
    println!(
        "sweep {}: ran {} runs in {:.2} s with {} threads ({:.1} runs/s); {} already done; {} rows invalid or failed; results in {}",
        spec.name,
        todo.len(),
        wall.as_secs_f64(),
        threads,
        todo.len() as f64 / wall.as_secs_f64().max(1e-9),
        done.len(),
        bad,
        dir.display()
    );
    if complete && shard.is_none() && !a.no_plots && !spec.plots.is_empty() {
        // (Without rounds.csv there is no timeline to draw: `--no-rounds` leaves it out.)
        let kinds: Vec<&str> = (spec.plots.iter())
            .map(|s| s.as_str())
            .filter(|k| rounds || *k != "timeline")
            .collect();
        for f in super::plot::render_kinds(&dir, &kinds)? {
            println!("wrote {}", f.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Wall time a worker aims to spend on the runs it takes at once: fast runs (fluid mode, tens
/// of microseconds each) go in blocks, so that handing results over costs little per run;
/// slow ones (exact mode) go one at a time.
const BLOCK_TARGET: std::time::Duration = std::time::Duration::from_millis(2);
/// Most runs a worker takes at once.
const MAX_BLOCK: usize = 64;

/// Simulate `todo` on `threads` workers of `pool` and append the results in plan order
/// (rounds.csv only with `rounds`); returns how many of the runs are `invalid` or `error`.
///
/// Workers take runs in order from a shared counter, in blocks sized to take about
/// [`BLOCK_TARGET`] by the time their last runs took (so a slow run never holds up others, and
/// the runs in flight are always near the front of the plan); the calling thread keeps a
/// reorder buffer and appends every contiguous finished prefix every 0.5 s, or sooner once it
/// holds [`FLUSH_BYTES`], `rounds.csv` first. Output bytes do not depend on the thread count
/// or on how the runs were blocked.
fn write_in_order(
    pool: &rayon::ThreadPool,
    threads: usize,
    plan: &Plan,
    todo: &[&RunRef],
    dir: &Path,
    pb: &indicatif::ProgressBar,
    rounds: bool,
) -> Result<usize> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Vec<RunLines>)>();
    let runs_p = dir.join("runs.csv");
    let rounds_p = dir.join("rounds.csv");
    pool.in_place_scope(|scope| -> Result<usize> {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            scope.spawn(move |_| {
                let mut block = 1usize;
                let mut reuse: Reusable = None;
                loop {
                    let i = next.fetch_add(block, Ordering::Relaxed);
                    if i >= todo.len() || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let end = (i + block).min(todo.len());
                    let t0 = std::time::Instant::now();
                    let lines: Vec<RunLines> = todo[i..end]
                        .iter()
                        .map(|r| render_run(plan, r, rounds, &mut reuse))
                        .collect();
                    // (Growing at most twofold, so that a streak of instant runs, such as
                    // invalid points, does not hand one worker a long block of slow ones.)
                    let per_run = t0.elapsed() / (end - i) as u32;
                    let fits = BLOCK_TARGET.as_nanos() / per_run.as_nanos().max(1);
                    block = (fits.min(2 * block as u128) as usize).clamp(1, MAX_BLOCK);
                    if tx.send((i, lines)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        // Finished blocks by their first run's index.
        let mut pending: BTreeMap<usize, Vec<RunLines>> = BTreeMap::new();
        let (mut written, mut bad) = (0usize, 0usize);
        let mut last = std::time::Instant::now();
        let mut held = 0usize; // bytes in `pending`
        let size = |b: &[RunLines]| {
            b.iter()
                .map(|l| l.runs.len() + l.rounds.len())
                .sum::<usize>()
        };
        let mut flush = |pending: &mut BTreeMap<usize, Vec<RunLines>>,
                         written: &mut usize,
                         held: &mut usize|
         -> Result<()> {
            let mut done = Vec::new();
            while let Some(b) = pending.remove(written) {
                *held -= size(&b);
                *written += b.len();
                bad += b.iter().filter(|l| l.bad).count();
                done.extend(b);
            }
            if !done.is_empty() {
                // Rounds first: a crash between the two appends leaves rounds without a run
                // row, which the next resume drops; never a run row without its rounds.
                if rounds {
                    append(&rounds_p, done.iter().map(|l| l.rounds.as_str()))?;
                }
                append(&runs_p, done.iter().map(|l| l.runs.as_str()))?;
            }
            Ok(())
        };
        let res = (|| -> Result<()> {
            for (i, lines) in rx.iter() {
                held += size(&lines);
                pb.inc(lines.len() as u64);
                pending.insert(i, lines);
                if pending.contains_key(&written)
                    && (held >= FLUSH_BYTES || last.elapsed().as_millis() >= 500)
                {
                    flush(&mut pending, &mut written, &mut held)?;
                    last = std::time::Instant::now();
                }
            }
            flush(&mut pending, &mut written, &mut held)
        })();
        if res.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        res.map(|()| bad)
    })
}

fn progress_bar(len: u64, quiet: bool) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} runs  {per_sec}  ETA {eta}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(axes: &str) -> SweepSpec {
        let base = Scenario::default_scenario().to_toml();
        let base = base
            .lines()
            .map(|l| {
                if let Some(rest) = l.strip_prefix('[') {
                    format!("[base.{rest}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let text =
            format!("[sweep]\nname = \"t\"\nreplicates = 2\n\n[axes]\n{axes}\n\n[base]\n{base}\n");
        parse_spec(&text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn axes_keep_file_order_and_last_varies_fastest() {
        let s =
            spec("\"link.bandwidth\" = [\"1 Gbit/s\", \"10 Gbit/s\"]\n\"vm.vcpus\" = [1, 2, 4]");
        assert_eq!(s.axes[0].path, "link.bandwidth");
        let plan = expand(&s).unwrap();
        assert_eq!(plan.points.len(), 6);
        assert_eq!(plan.runs.len(), 12);
        assert_eq!(plan.params(1).collect::<Vec<_>>(), ["1 Gbit/s", "2"]);
        assert_eq!(plan.params(3).collect::<Vec<_>>(), ["10 Gbit/s", "1"]);
    }

    #[test]
    fn ranges_of_floats_end_on_the_values_given() {
        let values = |axis: &str| -> Vec<f64> {
            spec(axis).axes[0]
                .values
                .iter()
                .map(|v| v.1.as_float().expect("a float"))
                .collect()
        };
        let v =
            values("\"link.bandwidth\" = { from = 1e8, to = 2.5e10, steps = 10, scale = \"log\" }");
        assert_eq!((v[0], v[9]), (1e8, 2.5e10));
        assert!(
            v.windows(2)
                .all(|w| w[1] > w[0] * 1.84 && w[1] < w[0] * 1.86),
            "{v:?}"
        );
        let v =
            values("\"link.bandwidth\" = { from = 1e8, to = 1e10, steps = 3, scale = \"log\" }");
        assert_eq!(v, [1e8, 1e9, 1e10]);
        let v = values("\"link.rtt_ms\" = { from = 0.1, to = 0.3, steps = 3 }");
        assert_eq!((v[0], v[2]), (0.1, 0.3));
        assert!((v[1] - 0.2).abs() < 1e-15, "{v:?}");
    }

    #[test]
    fn log_range_spans_the_ends_and_rounds_integers() {
        let s = spec(
            "\"workload.rate_pps\" = { from = 1000, to = 100000, steps = 3, scale = \"log\" }",
        );
        let labels: Vec<&str> = s.axes[0].values.iter().map(|v| v.0.as_str()).collect();
        assert_eq!(labels, ["1000", "10000", "100000"]);
    }

    #[test]
    fn changing_kind_resets_the_variant_table() {
        // The base policy is qemu with qemu-only fields; switching the kind must drop them.
        let s = spec("\"policy.kind\" = \"all\"");
        let plan = expand(&s).unwrap();
        let errs: Vec<&String> = plan
            .points
            .iter()
            .filter_map(|p| p.scenario.as_ref().err())
            .collect();
        assert!(errs.is_empty(), "{errs:?}");
        let kinds: HashSet<&str> = PolicySpec::all_defaults()
            .iter()
            .map(|p| p.name())
            .collect();
        assert_eq!(plan.points.len(), kinds.len());
    }

    #[test]
    fn policy_all_lists_every_default_variant_with_distinct_labels() {
        let s = spec("policy = \"all\"");
        let labels: HashSet<&str> = s.axes[0].values.iter().map(|v| v.0.as_str()).collect();
        assert_eq!(labels.len(), PolicySpec::all_defaults().len());
        assert_eq!(expand(&s).unwrap().invalid_points(), 0);
    }

    #[test]
    fn set_path_creates_tables_and_refuses_to_descend_into_values() {
        let mut t: toml::Table = toml::from_str("a = 1\n[b]\nkind = \"x\"\nk = 2\n").unwrap();
        set_path(&mut t, "c.d.e", toml::Value::Integer(3)).unwrap();
        assert_eq!(t["c"]["d"]["e"].as_integer(), Some(3));
        let e = set_path(&mut t, "a.z", toml::Value::Integer(1)).unwrap_err();
        assert!(e.contains("`a` is not a table"), "{e}");
        // Same kind: other keys stay; new kind: they go.
        set_path(&mut t, "b.kind", toml::Value::String("x".into())).unwrap();
        assert_eq!(t["b"]["k"].as_integer(), Some(2));
        set_path(&mut t, "b.kind", toml::Value::String("y".into())).unwrap();
        assert!(t["b"].get("k").is_none());
        assert!(set_path(&mut t, "b..k", toml::Value::Integer(1)).is_err());
    }

    #[test]
    fn invalid_points_are_kept_with_their_error() {
        let s = spec("\"vm.vcpus\" = [0, 1]");
        let plan = expand(&s).unwrap();
        let e = plan.points[0].scenario.as_ref().unwrap_err();
        assert!(e.contains("vm.vcpus"), "{e}");
        assert!(plan.points[1].scenario.is_ok());
    }

    #[test]
    fn a_point_s_labels_and_identity_are_found_again_from_the_plan() {
        let plan = expand(&spec(
            "\"vm.vcpus\" = [0, 2]\n\"policy.kind\" = [\"qemu\", \"xen-v2\"]\nseed = [5, 6]",
        ))
        .unwrap();
        assert_eq!(plan.points.len(), 8);
        // Point 3: vcpus 0 (invalid), xen-v2, seed 6.
        assert!(plan.points[3].scenario.is_err());
        assert_eq!(plan.params(3).collect::<Vec<_>>(), ["0", "xen-v2", "6"]);
        let base = Scenario::default_scenario();
        assert_eq!(
            plan.identity(3),
            [
                base.name.clone(),
                "xen-v2".into(),
                base.workload.kind_name().into(),
                "6".into()
            ]
        );
        assert_eq!(plan.identity(4)[1], "qemu");
        // The canonical text of a failed point is its table's, and its hash the point's.
        let text = canonical_text(&plan, 3);
        assert!(text.contains("vcpus = 0"), "{text}");
        assert_eq!(
            plan.points[3].canonical_fnv,
            fnv1a64_from(FNV_START, text.as_bytes())
        );
        let ok = canonical_text(&plan, 4);
        assert_eq!(
            plan.points[4].canonical_fnv,
            fnv1a64_from(FNV_START, ok.as_bytes())
        );
    }

    #[test]
    fn point_ids_depend_on_content_not_position() {
        let a = expand(&spec("\"vm.vcpus\" = [1, 2]")).unwrap();
        let b = expand(&spec("\"vm.vcpus\" = [2, 1]")).unwrap();
        assert_eq!(a.runs[0].point_id, b.runs[2].point_id);
        assert_ne!(a.runs[0].point_id, a.runs[1].point_id, "replicates differ");
    }

    #[test]
    fn bad_axis_names_the_field() {
        let base =
            "[sweep]\nname = \"t\"\nbase = \"x.toml\"\n[axes]\n\"vm.vcpus\" = [1, { label = 3 }]\n";
        let e = parse_spec(base, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("axes.\"vm.vcpus\"[1]: label"), "{e}");
        let e = parse_spec("[sweep]\nnam = \"t\"\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("sweep"), "{e}");
    }

    #[test]
    fn shards_partition_the_runs() {
        let plan = expand(&spec("\"vm.vcpus\" = [1, 2, 3, 4, 5, 6, 7, 8]")).unwrap();
        let mut count = 0;
        for i in 1..=3 {
            count += plan
                .runs
                .iter()
                .filter(|r| in_shard(r.point_id, (i, 3)))
                .count();
        }
        assert_eq!(count, plan.runs.len());
    }
}

//! `migsim check`: downtime budgets for CI.
//!
//! A budgets file lists scenarios (or sweeps) with limits. Every budget is simulated, each limit
//! is compared with the worst run, and a table with the margins is printed. Exit status: 0 when
//! every budget holds, 1 when any is exceeded, 2 when the file is bad.
//!
//! ```toml
//! [defaults]                                   # optional, inherited by every budget
//! scenario = "../sweeps/scenarios/standard-base.toml"
//!
//! [[budget]]
//! name = "qemu, uniform 5K pages/s, 1 Gbit/s"
//! set = { "link.bandwidth" = "1 Gbit/s", "policy.kind" = "qemu" }
//! max_downtime_ms = 400
//! max_total_time_s = 40
//! must_converge = true
//! max_bytes_sent = "5 GiB"
//! ```

use super::sweep::{self, Plan};
use super::table::xml_escape;
use anyhow::{bail, Context, Result};
use clap::Args;
use rayon::prelude::*;
use serde::Deserialize;
use sim::{RunReport, Status};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use workloads::ByteSize;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Budgets file (TOML).
    pub budgets: PathBuf,
    /// Write a JUnit XML report here (one test case per budget).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Worker threads (default: all cores).
    #[arg(short = 'j', long = "jobs")]
    pub jobs: Option<usize>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    name: Option<String>,
    /// A scenario file (relative to the budgets file) or an inline scenario table.
    #[serde(default)]
    scenario: Option<toml::Value>,
    /// A sweep spec (relative to the budgets file): every run of it must hold the limits.
    #[serde(default)]
    sweep: Option<PathBuf>,
    /// Dotted-path overrides applied to the scenario (or to the sweep's base).
    #[serde(default)]
    set: Option<toml::Table>,
    #[serde(default)]
    replicates: Option<u32>,
    /// `sim` (default) or `kvm`.
    #[serde(default)]
    backend: Option<String>,
    #[serde(default)]
    max_downtime_ms: Option<f64>,
    #[serde(default)]
    max_total_time_s: Option<f64>,
    #[serde(default)]
    must_converge: Option<bool>,
    #[serde(default)]
    max_bytes_sent: Option<ByteSize>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct BudgetFile {
    #[serde(default)]
    defaults: Option<Entry>,
    #[serde(default)]
    budget: Vec<Entry>,
}

/// A budget ready to run.
struct Budget {
    name: String,
    backend: String,
    plan: Plan,
    limits: Limits,
}

#[derive(Clone, Copy, Debug, Default)]
struct Limits {
    max_downtime_ms: Option<f64>,
    max_total_time_s: Option<f64>,
    must_converge: bool,
    max_bytes_sent: Option<u64>,
}

impl Entry {
    fn merged(&self, d: &Entry) -> Entry {
        let mut set = d.set.clone().unwrap_or_default();
        for (k, v) in self.set.clone().unwrap_or_default() {
            set.insert(k, v);
        }
        Entry {
            name: self.name.clone(),
            scenario: self.scenario.clone().or_else(|| {
                if self.sweep.is_some() {
                    None
                } else {
                    d.scenario.clone()
                }
            }),
            sweep: self.sweep.clone().or_else(|| {
                if self.scenario.is_some() {
                    None
                } else {
                    d.sweep.clone()
                }
            }),
            set: Some(set),
            replicates: self.replicates.or(d.replicates),
            backend: self.backend.clone().or_else(|| d.backend.clone()),
            max_downtime_ms: self.max_downtime_ms.or(d.max_downtime_ms),
            max_total_time_s: self.max_total_time_s.or(d.max_total_time_s),
            must_converge: self.must_converge.or(d.must_converge),
            max_bytes_sent: self.max_bytes_sent.or(d.max_bytes_sent),
        }
    }
}

/// Parse and validate a budgets file; errors name the field (`budget[3].max_downtime_ms`).
fn load(path: &Path) -> Result<Vec<Budget>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read budgets file {}", path.display()))?;
    let f: BudgetFile = sim::scenario::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("invalid budgets file {}: {e}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let defaults = f.defaults.unwrap_or_default();
    if f.budget.is_empty() {
        bail!(
            "invalid budgets file {}: budget: no [[budget]] entries",
            path.display()
        );
    }
    let mut out = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, raw) in f.budget.iter().enumerate() {
        let at = format!("budget[{i}]");
        let e = raw.merged(&defaults);
        let b = build(&e, &at, dir)
            .with_context(|| format!("invalid budgets file {}", path.display()))?;
        if !names.insert(b.name.clone()) {
            bail!(
                "invalid budgets file {}: {at}.name: `{}` is used twice",
                path.display(),
                b.name
            );
        }
        out.push(b);
    }
    Ok(out)
}

fn build(e: &Entry, at: &str, dir: &Path) -> Result<Budget> {
    let name = e
        .name
        .clone()
        .with_context(|| format!("{at}.name: missing"))?;
    let backend = e.backend.clone().unwrap_or_else(|| "sim".into());
    if backend != "sim" && backend != "kvm" {
        bail!("{at}.backend: must be \"sim\" or \"kvm\", got `{backend}`");
    }
    let limits = Limits {
        max_downtime_ms: e.max_downtime_ms,
        max_total_time_s: e.max_total_time_s,
        must_converge: e.must_converge.unwrap_or(false),
        max_bytes_sent: e.max_bytes_sent.map(|b| b.0),
    };
    for (field, v) in [
        ("max_downtime_ms", limits.max_downtime_ms),
        ("max_total_time_s", limits.max_total_time_s),
    ] {
        if let Some(v) = v {
            if !v.is_finite() || v < 0.0 {
                bail!("{at}.{field}: must be a finite value ≥ 0, got {v}");
            }
        }
    }
    if limits.max_downtime_ms.is_none()
        && limits.max_total_time_s.is_none()
        && !limits.must_converge
        && limits.max_bytes_sent.is_none()
    {
        bail!("{at}: no limits (give max_downtime_ms, max_total_time_s, must_converge or max_bytes_sent)");
    }
    let replicates = e.replicates.unwrap_or(1);
    if replicates == 0 {
        bail!("{at}.replicates: must be at least 1");
    }
    let set = e.set.clone().unwrap_or_default();
    let plan = match (&e.scenario, &e.sweep) {
        (Some(_), Some(_)) => bail!("{at}: give either scenario or sweep, not both"),
        (None, None) => {
            bail!("{at}.scenario: missing (a scenario file, an inline table, or sweep = FILE)")
        }
        (Some(sc), None) => {
            let base: toml::Table = match sc {
                toml::Value::String(p) => {
                    let full = dir.join(p);
                    let t = std::fs::read_to_string(&full).with_context(|| {
                        format!("{at}.scenario: failed to read {}", full.display())
                    })?;
                    toml::from_str(&t).with_context(|| {
                        format!("{at}.scenario: {} is not valid TOML", full.display())
                    })?
                }
                toml::Value::Table(t) => t.clone(),
                other => bail!(
                    "{at}.scenario: must be a file name or a table, got {}",
                    other.type_str()
                ),
            };
            let spec = sweep::SweepSpec {
                name: name.clone(),
                description: String::new(),
                replicates,
                base,
                axes: Vec::new(),
                plots: Vec::new(),
                rounds: true,
                text: String::new(),
                path: PathBuf::new(),
            };
            with_overrides(spec, &set, at)?
        }
        (None, Some(p)) => {
            let full = dir.join(p);
            let mut spec = sweep::load_spec(&full).with_context(|| format!("{at}.sweep"))?;
            if e.replicates.is_some() {
                spec.replicates = replicates;
            }
            with_overrides(spec, &set, at)?
        }
    };
    if e.sweep.is_none() {
        if let Some(Err(err)) = plan.points.first().map(|p| &p.scenario) {
            bail!("{at}: invalid scenario: {err}");
        }
    }
    Ok(Budget {
        name,
        backend,
        plan,
        limits,
    })
}

fn with_overrides(mut spec: sweep::SweepSpec, set: &toml::Table, at: &str) -> Result<Plan> {
    for (k, v) in set {
        sweep::set_path(&mut spec.base, k, v.clone())
            .map_err(|e| anyhow::anyhow!("{at}.set.\"{k}\": {e}"))?;
    }
    sweep::expand(&spec)
}

/// One compared limit.
struct Line {
    check: &'static str,
    limit: String,
    actual: String,
    margin: String,
    ok: bool,
}

struct Outcome {
    name: String,
    skipped: Option<String>,
    lines: Vec<Line>,
    runs: usize,
    secs: f64,
}

impl Outcome {
    fn ok(&self) -> bool {
        self.lines.iter().all(|l| l.ok)
    }
}

fn margin(limit: f64, actual: f64, unit: &str) -> String {
    let m = limit - actual;
    let pct = if limit > 0.0 { m / limit * 100.0 } else { 0.0 };
    format!("{m:+.3} {unit} ({pct:+.1}%)")
}

fn evaluate(b: &Budget, results: &[(usize, Result<RunReport, String>)]) -> Vec<Line> {
    let mut lines = Vec::new();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(id, r)| r.as_ref().err().map(|e| format!("run {id}: {e}")))
        .collect();
    if !failed.is_empty() {
        lines.push(Line {
            check: "valid",
            limit: "all runs valid".into(),
            actual: format!("{} invalid", failed.len()),
            margin: failed[0].clone(),
            ok: false,
        });
    }
    let ok_runs: Vec<&RunReport> = results.iter().filter_map(|r| r.1.as_ref().ok()).collect();
    if ok_runs.is_empty() {
        return lines;
    }
    let worst_by = |f: &dyn Fn(&RunReport) -> f64| {
        ok_runs
            .iter()
            .map(|r| f(r))
            .fold(f64::NEG_INFINITY, f64::max)
    };
    if let Some(lim) = b.limits.max_downtime_ms {
        let stuck: Vec<&RunReport> = ok_runs
            .iter()
            .copied()
            .filter(|r| r.downtime.is_none())
            .collect();
        if let Some(s) = stuck.first() {
            lines.push(Line {
                check: "downtime",
                limit: format!("{lim} ms"),
                actual: format!("none: {}", s.status.as_str()),
                margin: format!(
                    "{} of {} runs never switched over",
                    stuck.len(),
                    ok_runs.len()
                ),
                ok: false,
            });
        } else {
            let a = worst_by(&|r| r.downtime_ns().unwrap_or(0) as f64 / 1e6);
            lines.push(Line {
                check: "downtime",
                limit: format!("{lim} ms"),
                actual: format!("{a:.3} ms"),
                margin: margin(lim, a, "ms"),
                ok: a <= lim,
            });
        }
    }
    if let Some(lim) = b.limits.max_total_time_s {
        let a = worst_by(&|r| r.total_time_ns as f64 / 1e9);
        lines.push(Line {
            check: "total time",
            limit: format!("{lim} s"),
            actual: format!("{a:.3} s"),
            margin: margin(lim, a, "s"),
            ok: a <= lim,
        });
    }
    if let Some(lim) = b.limits.max_bytes_sent {
        let a = worst_by(&|r| r.bytes_sent as f64);
        let gib = |x: f64| x / (1u64 << 30) as f64;
        lines.push(Line {
            check: "bytes sent",
            limit: format!("{:.3} GiB", gib(lim as f64)),
            actual: format!("{:.3} GiB", gib(a)),
            margin: margin(gib(lim as f64), gib(a), "GiB"),
            ok: a <= lim as f64,
        });
    }
    if b.limits.must_converge {
        let bad: Vec<&RunReport> = ok_runs
            .iter()
            .copied()
            .filter(|r| r.status != Status::Converged)
            .collect();
        lines.push(Line {
            check: "converges",
            limit: "converged".into(),
            actual: bad
                .first()
                .map_or("converged".to_string(), |r| r.status.as_str().to_string()),
            margin: if bad.is_empty() {
                format!("all {} runs", ok_runs.len())
            } else {
                format!(
                    "{} of {} runs did not: {}",
                    bad.len(),
                    ok_runs.len(),
                    bad[0].reason
                )
            },
            ok: bad.is_empty(),
        });
    }
    lines
}

/// One real migration of a planned run, with the destination in a separate `migsim` process.
fn real_run(plan: &sweep::Plan, r: &sweep::RunRef) -> Result<RunReport, String> {
    let ck = plan.points[r.point]
        .scenario
        .as_ref()
        .map_err(|e| e.clone())?;
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the migsim executable: {e}"))?;
    let opts = real_backend::RealOptions {
        replicate: r.replicate,
        dest: real_backend::DestLaunch::Process {
            program: exe,
            args: vec!["__dest".into()],
        },
        ..Default::default()
    };
    real_backend::migrate(ck, &opts)
        .map(|run| run.result.report)
        .map_err(|e| format!("real migration failed: {e}"))
}

fn run_budgets(budgets: &[Budget], threads: usize) -> Result<Vec<Outcome>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("failed to start worker threads")?;
    let mut out = Vec::new();
    for b in budgets {
        if b.backend == "kvm" {
            if !real_backend::kvm_available() {
                out.push(Outcome {
                    name: b.name.clone(),
                    skipped: Some("/dev/kvm is not available on this machine".into()),
                    lines: Vec::new(),
                    runs: 0,
                    secs: 0.0,
                });
                continue;
            }
            // Real migrations run one at a time: they measure this host.
            let t0 = std::time::Instant::now();
            let results: Vec<(usize, Result<RunReport, String>)> = b
                .plan
                .runs
                .iter()
                .map(|r| (r.run_id, real_run(&b.plan, r)))
                .collect();
            out.push(Outcome {
                name: b.name.clone(),
                skipped: None,
                lines: evaluate(b, &results),
                runs: results.len(),
                secs: t0.elapsed().as_secs_f64(),
            });
            continue;
        }
        let t0 = std::time::Instant::now();
        // (Budgets read reports alone: round records are not built.)
        let results: Vec<(usize, Result<RunReport, String>)> = pool.install(|| {
            b.plan
                .runs
                .par_iter()
                .map(|r| (r.run_id, sweep::simulate_run_report(&b.plan, r)))
                .collect()
        });
        out.push(Outcome {
            name: b.name.clone(),
            skipped: None,
            lines: evaluate(b, &results),
            runs: results.len(),
            secs: t0.elapsed().as_secs_f64(),
        });
    }
    Ok(out)
}

fn render_table(out: &[Outcome]) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "budget".into(),
        "check".into(),
        "limit".into(),
        "actual (worst run)".into(),
        "margin".into(),
        "result".into(),
    ]];
    for o in out {
        if let Some(why) = &o.skipped {
            rows.push([
                o.name.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                why.clone(),
                "SKIP".into(),
            ]);
            continue;
        }
        for (i, l) in o.lines.iter().enumerate() {
            rows.push([
                if i == 0 {
                    o.name.clone()
                } else {
                    String::new()
                },
                l.check.into(),
                l.limit.clone(),
                l.actual.clone(),
                l.margin.clone(),
                if l.ok { "ok" } else { "FAIL" }.into(),
            ]);
        }
    }
    let mut w = [0usize; 6];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            let pad = w[i] - c.chars().count();
            line.push_str(c);
            if i + 1 < r.len() {
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
    s
}

fn junit(out: &[Outcome], suite: &str) -> String {
    let failures = out
        .iter()
        .filter(|o| o.skipped.is_none() && !o.ok())
        .count();
    let skipped = out.iter().filter(|o| o.skipped.is_some()).count();
    let time: f64 = out.iter().map(|o| o.secs).sum();
    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<testsuites name="migsim check" tests="{}" failures="{failures}" errors="0" skipped="{skipped}" time="{time:.3}">"#,
        out.len()
    );
    let _ = writeln!(
        s,
        r#"  <testsuite name="{}" tests="{}" failures="{failures}" errors="0" skipped="{skipped}" time="{time:.3}">"#,
        xml_escape(suite),
        out.len()
    );
    for o in out {
        let _ = write!(
            s,
            r#"    <testcase classname="migsim.budgets" name="{}" time="{:.3}">"#,
            xml_escape(&o.name),
            o.secs
        );
        let detail: String = o
            .lines
            .iter()
            .map(|l| {
                format!(
                    "{}: limit {}, actual {}, margin {} [{}]\n",
                    l.check,
                    l.limit,
                    l.actual,
                    l.margin,
                    if l.ok { "ok" } else { "FAIL" }
                )
            })
            .collect();
        if let Some(why) = &o.skipped {
            let _ = write!(s, r#"<skipped message="{}"/>"#, xml_escape(why));
        } else if !o.ok() {
            let msg: Vec<String> = o
                .lines
                .iter()
                .filter(|l| !l.ok)
                .map(|l| format!("{} {} exceeds {}", l.check, l.actual, l.limit))
                .collect();
            let _ = write!(
                s,
                r#"<failure message="{}" type="budget">{}</failure>"#,
                xml_escape(&msg.join("; ")),
                xml_escape(&detail)
            );
        } else {
            let _ = write!(
                s,
                "<system-out>{}</system-out>",
                xml_escape(&format!("{} runs\n{detail}", o.runs))
            );
        }
        let _ = writeln!(s, "</testcase>");
    }
    let _ = writeln!(s, "  </testsuite>\n</testsuites>");
    s
}

pub fn run(a: CheckArgs) -> Result<ExitCode> {
    let budgets = load(&a.budgets)?;
    let threads = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let out = run_budgets(&budgets, threads)?;
    print!("{}", render_table(&out));
    let failed = out
        .iter()
        .filter(|o| o.skipped.is_none() && !o.ok())
        .count();
    let skipped = out.iter().filter(|o| o.skipped.is_some()).count();
    println!(
        "{} budgets: {} held, {failed} exceeded, {skipped} skipped",
        out.len(),
        out.len() - failed - skipped
    );
    if let Some(p) = &a.junit {
        let xml = junit(&out, &a.budgets.display().to_string());
        super::output::write_atomic(p, |b| {
            b.extend_from_slice(xml.as_bytes());
            Ok(())
        })?;
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_are_signed_and_relative() {
        assert_eq!(margin(300.0, 240.0, "ms"), "+60.000 ms (+20.0%)");
        assert_eq!(margin(100.0, 150.0, "ms"), "-50.000 ms (-50.0%)");
    }

    #[test]
    fn junit_escapes_and_counts() {
        let out = vec![
            Outcome {
                name: "a <b> & \"c\"".into(),
                skipped: None,
                lines: vec![Line {
                    check: "downtime",
                    limit: "1 ms".into(),
                    actual: "2 ms".into(),
                    margin: "-1".into(),
                    ok: false,
                }],
                runs: 1,
                secs: 0.0,
            },
            Outcome {
                name: "k".into(),
                skipped: Some("no kvm".into()),
                lines: vec![],
                runs: 0,
                secs: 0.0,
            },
        ];
        let x = junit(&out, "s.toml");
        assert!(
            x.contains(r#"failures="1""#) && x.contains(r#"skipped="1""#),
            "{x}"
        );
        assert!(x.contains("a &lt;b&gt; &amp; &quot;c&quot;"), "{x}");
        assert!(!x.contains("a <b>"));
    }
}

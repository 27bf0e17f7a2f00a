//! `migsim merge`: combine the shard directories of one sweep into one results directory.
//!
//! Shards of the same plan share run ids (positions in the plan), so merging is a sort by run id;
//! the merged files are byte-identical to an unsharded run of the same spec.

use super::manifest::{self, Manifest};
use super::output::write_atomic;
use super::table::{complete_lines, Table};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Shard output directories (each with runs.csv, manifest.json and, unless run with
    /// `--no-rounds`, rounds.csv).
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// Directory to write the merged results into.
    #[arg(long)]
    pub out: PathBuf,
    /// Exit 0 even when runs of the plan are missing from every shard.
    #[arg(long)]
    pub allow_partial: bool,
}

pub fn run(a: MergeArgs) -> Result<ExitCode> {
    let mut plan_id: Option<String> = None;
    let mut header: Option<Vec<String>> = None;
    let mut first_manifest: Option<Value> = None;
    let mut rows: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut rounds: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    // Whether the shards wrote rounds.csv (all of them or none).
    let mut with_rounds: Option<bool> = None;
    for dir in &a.shards {
        let m = manifest::read(&dir.join("manifest.json"))?;
        let pid = m
            .get("plan_id")
            .and_then(|v| v.as_str())
            .with_context(|| format!("{}/manifest.json has no plan_id", dir.display()))?
            .to_string();
        match &plan_id {
            None => plan_id = Some(pid),
            Some(p) if *p != pid => bail!(
                "{} belongs to plan {pid}, the first shard to plan {p}: they are not shards of one sweep",
                dir.display()
            ),
            _ => {}
        }
        let t = Table::read(&dir.join("runs.csv"))?;
        match &header {
            None => header = Some(t.header.clone()),
            Some(h) if *h != t.header => {
                bail!("{}/runs.csv has different columns", dir.display())
            }
            _ => {}
        }
        let mut here = std::collections::HashSet::new();
        for r in t.rows {
            let id: usize = r[0]
                .parse()
                .with_context(|| format!("{}/runs.csv: bad run_id `{}`", dir.display(), r[0]))?;
            if let Some(prev) = rows.get(&id) {
                if *prev != r {
                    bail!(
                        "run {id} appears in two shards with different results ({})",
                        dir.display()
                    );
                }
                continue;
            }
            here.insert(id);
            rows.insert(id, r);
        }
        let rp = dir.join("rounds.csv");
        let has = rp.exists();
        match with_rounds {
            None => with_rounds = Some(has),
            Some(w) if w != has => bail!(
                "{} {} rounds.csv and an earlier shard {}: shards of one merge must all be run with rounds or all without (`--no-rounds`)",
                dir.display(),
                if has { "has" } else { "has no" },
                if w { "has one" } else { "has none" }
            ),
            _ => {}
        }
        let rtext = if has {
            std::fs::read_to_string(&rp)
                .with_context(|| format!("failed to read {}", rp.display()))?
        } else {
            String::new()
        };
        for l in complete_lines(&rtext).lines().skip(1) {
            if let Some(id) = l.split(',').next().and_then(|s| s.parse::<usize>().ok()) {
                if here.contains(&id) {
                    rounds.entry(id).or_default().push(l.to_string());
                }
            }
        }
        if first_manifest.is_none() {
            first_manifest = Some(m);
        }
    }
    let (Some(header), Some(m)) = (header, first_manifest) else {
        bail!("no shards given");
    };
    let in_plan = m.get("runs_in_plan").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
    let missing: Vec<usize> = (0..in_plan).filter(|i| !rows.contains_key(i)).collect();
    if with_rounds == Some(true) {
        write_atomic(&a.out.join("rounds.csv"), |b| {
            writeln!(b, "{}", sim::metrics::ROUNDS_HEADER.join(","))?;
            for ls in rounds.values() {
                for l in ls {
                    writeln!(b, "{l}")?;
                }
            }
            Ok(())
        })?;
    } else if a.out.join("rounds.csv").exists() {
        // (Left by an earlier merge; it would not describe these runs.)
        std::fs::remove_file(a.out.join("rounds.csv"))
            .with_context(|| format!("failed to remove {}/rounds.csv", a.out.display()))?;
    }
    write_atomic(&a.out.join("runs.csv"), |b| {
        writeln!(
            b,
            "{}",
            header
                .iter()
                .map(|h| sim::metrics::csv_field(h))
                .collect::<Vec<_>>()
                .join(",")
        )?;
        for r in rows.values() {
            let fields: Vec<String> = r.iter().map(|f| sim::metrics::csv_field(f)).collect();
            writeln!(b, "{}", fields.join(","))?;
        }
        Ok(())
    })?;
    let mut man = Manifest::from_value(m);
    if let Some(o) = man.value_mut().as_object_mut() {
        o.insert("shard".into(), Value::Null);
        o.insert("runs_selected".into(), json!(in_plan));
        o.insert(
            "merged_from".into(),
            json!(a
                .shards
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()),
        );
        o.insert(
            "command".into(),
            json!(std::env::args().collect::<Vec<_>>()),
        );
    }
    man.write(
        &a.out,
        std::time::SystemTime::now(),
        None,
        missing.is_empty(),
    )?;
    println!(
        "merged {} shards: {} of {} runs into {}",
        a.shards.len(),
        rows.len(),
        in_plan,
        a.out.display()
    );
    if !missing.is_empty() {
        let show: Vec<String> = missing.iter().take(10).map(|i| i.to_string()).collect();
        eprintln!(
            "warning: {} runs are missing (run ids {}{}); rerun the shards that own them, then merge again",
            missing.len(),
            show.join(", "),
            if missing.len() > 10 { ", ..." } else { "" }
        );
        if !a.allow_partial {
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

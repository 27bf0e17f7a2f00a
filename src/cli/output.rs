//! Writing result files so that nothing is left half-written: every file is written to a
//! temporary name in the same directory and renamed into place.

use anyhow::{Context, Result};
use sim::metrics::{self, RunResult};
use std::io::Write;
use std::path::Path;

/// Write `path` atomically with the bytes produced by `f`.
pub fn write_atomic(
    path: &Path,
    f: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
) -> Result<()> {
    let mut buf = Vec::new();
    f(&mut buf).with_context(|| format!("failed to render {}", path.display()))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("failed to create {}", dir.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    {
        let mut file = std::fs::File::create(&tmp)
            .with_context(|| format!("failed to create {}", tmp.display()))?;
        file.write_all(&buf)
            .with_context(|| format!("failed to write {}", tmp.display()))?;
        file.sync_all().ok();
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("failed to move {} into place", path.display()))?;
    Ok(())
}

/// Write `runs.csv`, `rounds.csv` and `summary.json` for `results` into `dir`.
pub fn write_run_outputs(dir: &Path, results: &[RunResult]) -> Result<()> {
    write_atomic(&dir.join("runs.csv"), |b| {
        metrics::write_runs_csv(b, results)
    })?;
    write_atomic(&dir.join("rounds.csv"), |b| {
        metrics::write_rounds_csv(b, results)
    })?;
    let summary = if results.len() == 1 {
        metrics::summary_json(&results[0].report)
    } else {
        serde_json::Value::Array(
            results
                .iter()
                .map(|r| metrics::summary_json(&r.report))
                .collect(),
        )
    };
    write_atomic(&dir.join("summary.json"), |b| {
        serde_json::to_writer_pretty(&mut *b, &summary)?;
        b.push(b'\n');
        Ok(())
    })?;
    Ok(())
}

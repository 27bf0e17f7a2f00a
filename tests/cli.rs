//! End-to-end tests of the `migsim` binary.

use std::path::Path;
use std::process::Command;

fn migsim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_migsim"))
}

fn run_ok(args: &[&str]) -> String {
    let out = migsim().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "migsim {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn run_json_has_the_documented_keys() {
    let out = run_ok(&["run", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in [
        "status",
        "downtime_ms",
        "total_time_ms",
        "rounds",
        "bytes_sent",
        "pages_sent",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {out}");
    }
    assert_eq!(v["status"], "converged");
    let dt = v["downtime_ms"].as_f64().unwrap();
    let parts: f64 = v["downtime_breakdown_ms"]
        .as_object()
        .unwrap()
        .values()
        .map(|x| x.as_f64().unwrap())
        .sum();
    assert!((dt - parts).abs() < 1e-6, "{dt} vs {parts}");
    assert!(v["rounds"].as_u64().unwrap() >= 2);
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn out_dir_files_are_byte_identical_for_the_same_seed() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    run_ok(&["run", "--out", a.path().to_str().unwrap()]);
    run_ok(&["run", "--out", b.path().to_str().unwrap()]);
    run_ok(&["run", "--seed", "7", "--out", c.path().to_str().unwrap()]);
    for f in ["runs.csv", "rounds.csv", "summary.json"] {
        assert_eq!(
            read(&a.path().join(f)),
            read(&b.path().join(f)),
            "{f} differs between identical runs"
        );
    }
    assert_ne!(
        read(&a.path().join("rounds.csv")),
        read(&c.path().join("rounds.csv"))
    );
    let runs = String::from_utf8(read(&a.path().join("runs.csv"))).unwrap();
    let mut lines = runs.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header, sim::metrics::RUNS_HEADER);
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(row.len(), header.len());
    let rounds = String::from_utf8(read(&a.path().join("rounds.csv"))).unwrap();
    let n_rounds = rounds.lines().count() - 1;
    let col = header.iter().position(|h| *h == "rounds").unwrap();
    assert_eq!(row[col].parse::<usize>().unwrap(), n_rounds);
}

#[test]
fn default_scenario_prints_as_toml_and_runs_from_a_file() {
    let toml = run_ok(&["scenario", "--default"]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.toml");
    std::fs::write(&p, &toml).unwrap();
    let from_file = run_ok(&["run", p.to_str().unwrap(), "--json"]);
    let builtin = run_ok(&["run", "--json"]);
    assert_eq!(from_file, builtin);
}

#[test]
fn invalid_scenario_exits_2_naming_every_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    let text = run_ok(&["scenario", "--default"])
        .replace("memory = \"4 GiB\"", "memory = 0")
        .replace("bandwidth = \"1 Gbit/s\"", "bandwidth = -1");
    std::fs::write(&p, text).unwrap();
    let out = migsim()
        .args(["run", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vm.memory: must be larger than zero"), "{err}");
    assert!(
        err.contains("link.bandwidth: must be a finite rate > 0"),
        "{err}"
    );
    let missing = migsim()
        .args(["run", "/nonexistent/x.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read /nonexistent/x.toml"));
}

#[test]
fn compare_writes_a_row_per_policy_with_the_oracle_and_rejects_unknown_policies() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.toml");
    let text =
        run_ok(&["scenario", "--default"]).replace("memory = \"4 GiB\"", "memory = \"512 MiB\"");
    std::fs::write(&p, text).unwrap();
    let out_dir = dir.path().join("cmp");
    let table = run_ok(&[
        "compare",
        p.to_str().unwrap(),
        "--policies",
        "qemu,xen-legacy,adaptive",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(table.contains("oracle"), "{table}");
    let csv = std::fs::read_to_string(out_dir.join("compare.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), 3);
    let col = |n: &str| header.iter().position(|h| *h == n).unwrap();
    for r in &rows {
        let dt: f64 = r[col("downtime_ns")].parse().unwrap();
        let o: f64 = r[col("oracle_downtime_ns")].parse().unwrap();
        let ratio: f64 = r[col("downtime_vs_oracle")].parse().unwrap();
        assert!(o <= dt, "{r:?}");
        assert!((ratio - dt / o).abs() < 1e-5);
    }
    let bad = migsim()
        .args(["compare", "--policies", "qemu,warp-drive"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown policy `warp-drive`"));
}

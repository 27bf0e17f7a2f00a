//! `migsim real` end to end: the CLI starts the destination as a separate `migsim __dest`
//! process and migrates a small real KVM guest over TCP on 127.0.0.1.

use std::process::Command;

/// One real migration at a time: overlapping migrations have stalled a resuming vCPU for
/// seconds on the nested host (see real-backend's `dest.rs`). Every test takes it first and
/// holds it to its end.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn kvm_or_skip() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        eprintln!("SKIPPED: /dev/kvm not available");
    }
    ok
}

#[test]
fn real_migration_writes_the_same_files_as_run() {
    let _serial = serial();
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sc = dir.path().join("small.toml");
    std::fs::write(
        &sc,
        "name = \"small\"\n[vm]\nmemory = \"16 MiB\"\n[workload]\nkind = \"uniform\"\n\
         wss = \"4 MiB\"\nrate_pps = 5000\n[link]\nbandwidth = \"1 Gbit/s\"\nrtt_ms = 0.2\n\
         [policy]\nkind = \"qemu\"\ndowntime_limit_ms = 50\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_migsim"))
        .args([
            "real",
            sc.to_str().unwrap(),
            "--run-after-ms",
            "20",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success());
    assert!(stdout.contains("backend kvm"));
    assert!(stdout.contains("verified"));
    assert!(stdout.contains("dest       guest running"));
    let runs = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    let row = runs.lines().nth(1).unwrap();
    assert!(row.starts_with("0,kvm,small,"), "{row}");
    assert!(
        std::fs::read_to_string(out.join("rounds.csv"))
            .unwrap()
            .lines()
            .count()
            >= 2
    );
}

const SMALL: &str = "name = \"small\"\ncalibration = \"cal.toml\"\n[vm]\nmemory = \"16 MiB\"\n\
    [workload]\nkind = \"uniform\"\nwss = \"4 MiB\"\nrate_pps = 5000\n[link]\n\
    bandwidth = \"1 Gbit/s\"\nrtt_ms = 0.2\n[policy]\nkind = \"qemu\"\ndowntime_limit_ms = 50\n";

#[test]
fn validate_writes_predictions_errors_and_both_summaries() {
    let _serial = serial();
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("small.toml"), SMALL).unwrap();
    std::fs::write(
        dir.path().join("cal.toml"),
        "[switchover]\npause_ms = 0.1\nresume_ms = 0.6\nstate = \"0 B\"\n",
    )
    .unwrap();
    let grid = dir.path().join("grid.toml");
    std::fs::write(
        &grid,
        "[validate]\nreplicates = 1\nscenarios = [\"small.toml\"]\nout = \"out\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_migsim"))
        .args(["validate", grid.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = dir.path().join("out");
    let csv = std::fs::read_to_string(out.join("validation.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].contains("downtime_rel_err") && lines[0].contains("trace_downtime_ok"));
    assert!(lines[1].starts_with("small,qemu,1,"), "{}", lines[1]);
    assert!(stdout.contains("model-driven: downtime within"), "{stdout}");
    assert!(stdout.contains("trace-driven: downtime within"), "{stdout}");
    // The scenario's calibration was applied to the prediction (pause 0.1 ms).
    let preds = std::fs::read_to_string(out.join("predictions/runs.csv")).unwrap();
    assert!(preds.lines().nth(1).unwrap().contains(",sim,"), "{preds}");
    assert!(preds.contains(",100000,"), "{preds}");
    let runs = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    assert!(runs.contains(",kvm,") && runs.contains(",sim,"));
}

#[test]
fn recorded_trace_replays_in_run() {
    let _serial = serial();
    if !kvm_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sc = dir.path().join("small.toml");
    std::fs::write(&sc, SMALL.replace("calibration = \"cal.toml\"\n", "")).unwrap();
    let trace = dir.path().join("t.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_migsim"))
        .args([
            "real",
            sc.to_str().unwrap(),
            "--no-verify",
            "--record-trace",
        ])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&trace).unwrap();
    assert!(text.lines().any(|l| l == "t_ns,page"));
    let writes = text.lines().filter(|l| !l.starts_with('#')).count() - 1;
    assert!(writes > 100, "only {writes} traced writes");
    let o = Command::new(env!("CARGO_BIN_EXE_migsim"))
        .args(["run", sc.to_str().unwrap(), "--json", "--trace"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let g = v["guest_writes"].as_u64().unwrap();
    assert!(
        g > 0 && g <= writes as u64,
        "replayed {g} of {writes} writes"
    );
    // A page outside the guest is rejected with exit code 2.
    std::fs::write(&trace, "t_ns,page\n5,999999999\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_migsim"))
        .args(["run", sc.to_str().unwrap(), "--trace"])
        .arg(&trace)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

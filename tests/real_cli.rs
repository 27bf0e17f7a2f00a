//! `migsim real` end to end: the CLI starts the destination as a separate `migsim __dest`
//! process and migrates a small real KVM guest over TCP on 127.0.0.1.

use std::process::Command;

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

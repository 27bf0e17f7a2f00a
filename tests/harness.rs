//! Integration tests of the research / CI harness: `migsim sweep`, `merge`, `plot`, `check`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_migsim");

fn migsim(args: &[&str], cwd: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("migsim runs")
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A small base scenario (256 MiB guest) so that every run takes milliseconds.
const BASE: &str = r#"
name = "small"
seed = 7

[vm]
memory = "256 MiB"

[workload]
kind = "uniform"
wss = "32 MiB"
rate_pps = 2000

[link]
bandwidth = "1 Gbit/s"

[policy]
kind = "qemu"

[limits]
max_time_s = 60.0
"#;

/// 3 rates × 2 links × every policy × 2 replicates, plus an invalid vCPU count (0) for half
/// of the points.
const SPEC: &str = r#"
[sweep]
name = "small"
base = "base.toml"
replicates = 2

[axes]
"workload.rate_pps" = { from = 1000, to = 40000, steps = 3, scale = "log" }
"link.bandwidth" = ["1 Gbit/s", "10 Gbit/s"]
"vm.vcpus" = [0, 2]
policy = "all"
"#;

fn setup() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("base.toml"), BASE).unwrap();
    std::fs::write(d.path().join("spec.toml"), SPEC).unwrap();
    let valid_only = SPEC.replace("\"vm.vcpus\" = [0, 2]\n", "");
    assert_ne!(valid_only, SPEC);
    std::fs::write(d.path().join("spec-valid.toml"), valid_only).unwrap();
    d
}

fn read(p: PathBuf) -> String {
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn sweep(d: &Path, out: &str, extra: &[&str]) -> Output {
    let mut args = vec!["sweep", "spec.toml", "--out", out, "-q"];
    args.extend_from_slice(extra);
    migsim(&args, d)
}

#[test]
fn sweep_output_is_identical_for_any_thread_count_and_records_invalid_points() {
    let d = setup();
    ok(&sweep(d.path(), "j1", &["-j", "1"]));
    ok(&sweep(d.path(), "j2", &["-j", "2"]));
    let runs1 = read(d.path().join("j1/runs.csv"));
    assert_eq!(runs1, read(d.path().join("j2/runs.csv")));
    assert_eq!(
        read(d.path().join("j1/rounds.csv")),
        read(d.path().join("j2/rounds.csv"))
    );
    let lines: Vec<&str> = runs1.lines().collect();
    let n_pol = lines[1..]
        .iter()
        .map(|l| l.split(',').nth(3).unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(n_pol >= 4, "every default policy appears");
    assert_eq!(lines.len() - 1, 3 * 2 * 2 * n_pol * 2);
    let header: Vec<&str> = lines[0].split(',').collect();
    for c in [
        "param_workload.rate_pps",
        "param_link.bandwidth",
        "param_vm.vcpus",
        "param_policy",
        "point_id",
    ] {
        assert!(header.contains(&c), "missing column {c}");
    }
    let status = header.iter().position(|h| *h == "status").unwrap();
    let invalid: Vec<&&str> = lines[1..]
        .iter()
        .filter(|l| l.split(',').nth(status) == Some("invalid"))
        .collect();
    assert_eq!(invalid.len(), (lines.len() - 1) / 2, "vcpus = 0 half");
    assert!(invalid[0].contains("vm.vcpus"), "{}", invalid[0]);
    let m = read(d.path().join("j1/manifest.json"));
    for key in [
        "\"plan_id\"",
        "\"seed_scheme\"",
        "\"git\"",
        "\"host\"",
        "\"spec_text\"",
        "\"crates\"",
    ] {
        assert!(m.contains(key), "manifest lacks {key}");
    }
}

#[test]
fn interrupted_sweep_resumes_to_the_same_bytes() {
    let d = setup();
    ok(&sweep(d.path(), "full", &[]));
    ok(&sweep(d.path(), "cut", &[]));
    let full_runs = read(d.path().join("full/runs.csv"));
    let full_rounds = read(d.path().join("full/rounds.csv"));
    // Simulate a crash: keep the first 10 runs plus half a line, and leave rounds of runs whose
    // rows were never written plus a torn rounds line.
    let keep: String = full_runs
        .lines()
        .take(11)
        .map(|l| format!("{l}\n"))
        .collect();
    let torn = &full_runs.lines().nth(11).unwrap()[..20];
    std::fs::write(d.path().join("cut/runs.csv"), format!("{keep}{torn}")).unwrap();
    let rounds_keep: String = full_rounds
        .lines()
        .filter(|l| {
            l.split(',')
                .next()
                .and_then(|s| s.parse::<usize>().ok())
                .is_none_or(|id| id < 14)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        d.path().join("cut/rounds.csv"),
        format!("{rounds_keep}13,4,12"),
    )
    .unwrap();
    let o = sweep(d.path(), "cut", &["-j", "2"]);
    ok(&o);
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains("10 already done"), "{said}");
    assert_eq!(read(d.path().join("cut/runs.csv")), full_runs);
    assert_eq!(read(d.path().join("cut/rounds.csv")), full_rounds);
    // The summary counts the invalid rows of both sittings, and the manifest says the
    // directory is complete.
    let invalid = full_runs
        .lines()
        .filter(|l| l.contains(",invalid,"))
        .count();
    assert!(invalid > 0);
    assert!(
        said.contains(&format!("; {invalid} rows invalid or failed")),
        "{invalid} invalid rows: {said}"
    );
    let m = read(d.path().join("cut/manifest.json"));
    assert!(m.contains("\"complete\": true"), "{m}");
    // A second rerun has nothing to do.
    let o = sweep(d.path(), "cut", &[]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("ran 0 runs"));
}

#[test]
fn resuming_with_a_different_spec_is_refused() {
    let d = setup();
    ok(&sweep(d.path(), "out", &[]));
    std::fs::write(
        d.path().join("spec.toml"),
        SPEC.replace("steps = 3", "steps = 4"),
    )
    .unwrap();
    let o = sweep(d.path(), "out", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--fresh"));
    ok(&sweep(d.path(), "out", &["--fresh"]));
}

/// Write `spec.toml` in `d` as [`SPEC`] with a `mode` axis of `modes`; returns its text.
fn spec_with_modes(d: &Path, modes: &str) -> String {
    let spec = SPEC.replace(
        "policy = \"all\"\n",
        &format!("policy = \"all\"\nmode = [{modes}]\n"),
    );
    assert_ne!(spec, SPEC);
    std::fs::write(d.join("spec.toml"), &spec).unwrap();
    spec
}

#[test]
fn a_sweep_without_rounds_writes_the_same_runs_and_no_rounds_csv() {
    // Exact and fluid points both: fluid runs do not even build their round records.
    let d = setup();
    let spec = spec_with_modes(d.path(), "\"exact\", \"fluid\"");
    let off = spec.replace("replicates = 2\n", "replicates = 2\nrounds = false\n");
    assert_ne!(off, spec);
    std::fs::write(d.path().join("spec-off.toml"), off).unwrap();
    ok(&sweep(d.path(), "with", &["-j", "2"]));
    ok(&sweep(d.path(), "flag", &["-j", "2", "--no-rounds"]));
    ok(&migsim(
        &["sweep", "spec-off.toml", "--out", "field", "-q", "-j", "1"],
        d.path(),
    ));
    let runs = read(d.path().join("with/runs.csv"));
    assert!(runs.contains(",fluid,") && runs.contains(",sim,"));
    let rounds = read(d.path().join("with/rounds.csv"));
    assert!(rounds.lines().count() > runs.lines().count());
    assert!(read(d.path().join("with/manifest.json")).contains("\"rounds_csv\": true"));
    for out in ["flag", "field"] {
        assert_eq!(read(d.path().join(out).join("runs.csv")), runs, "{out}");
        assert!(!d.path().join(out).join("rounds.csv").exists(), "{out}");
        let m = read(d.path().join(out).join("manifest.json"));
        assert!(m.contains("\"rounds_csv\": false"), "{out}");
    }
    // Resuming the other way would leave rounds.csv covering only some runs: refused.
    for (out, extra) in [("flag", &[][..]), ("with", &["--no-rounds"][..])] {
        let o = sweep(d.path(), out, extra);
        assert_eq!(o.status.code(), Some(2), "{out}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("--no-rounds") && err.contains("--fresh"),
            "{err}"
        );
    }
    // Shards without rounds merge into the same runs.csv, and no rounds.csv; shards of both
    // kinds do not merge.
    ok(&sweep(d.path(), "s1", &["--shard", "1/2", "--no-rounds"]));
    ok(&sweep(d.path(), "s2", &["--shard", "2/2", "--no-rounds"]));
    ok(&migsim(&["merge", "--out", "merged", "s1", "s2"], d.path()));
    assert_eq!(read(d.path().join("merged/runs.csv")), runs);
    assert!(!d.path().join("merged/rounds.csv").exists());
    ok(&sweep(d.path(), "r2", &["--shard", "2/2"]));
    let o = migsim(&["merge", "--out", "mixed", "s1", "r2"], d.path());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("rounds.csv"));
}

#[test]
fn the_replicates_of_a_fluid_point_give_its_one_result() {
    // A sweep simulates a fluid point once and gives its result to every replicate: the rows
    // must be those of the point run on its own, with each replicate's index.
    let d = setup();
    let spec = spec_with_modes(d.path(), "\"fluid\", \"exact\"");
    std::fs::write(
        d.path().join("one.toml"),
        spec.replace("replicates = 2", "replicates = 1"),
    )
    .unwrap();
    ok(&sweep(d.path(), "two", &["-j", "1"]));
    ok(&migsim(
        &["sweep", "one.toml", "--out", "one", "-q", "-j", "2"],
        d.path(),
    ));
    let rows = |out: &str| -> Vec<Vec<String>> {
        read(d.path().join(out).join("runs.csv"))
            .lines()
            .map(|l| l.split(',').map(String::from).collect())
            .collect()
    };
    let (two, one) = (rows("two"), rows("one"));
    let col = |name: &str| two[0].iter().position(|h| h == name).unwrap();
    let (rep, pid, backend) = (col("replicate"), col("point_id"), col("backend"));
    // Everything but the run id, the replicate and the point id.
    let result = |r: &[String]| -> Vec<String> {
        (r.iter().enumerate())
            .filter(|(i, _)| ![0, rep, pid].contains(i))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mut fluid = 0;
    for (i, r) in two[1..].iter().enumerate() {
        assert_eq!(r[rep], (i % 2).to_string(), "row {i}");
        if r[backend] == "fluid" {
            assert_eq!(result(r), result(&one[1 + i / 2]), "row {i}");
            fluid += 1;
        }
    }
    assert!(fluid > 20, "{fluid} fluid rows");
    // (Exact replicates are draws of their own: some differ from the point's first.)
    let exact_differ = (two[1..].chunks(2))
        .filter(|p| p[0][backend] == "sim" && p[0][col("status")] != "invalid")
        .any(|p| result(&p[0]) != result(&p[1]));
    assert!(exact_differ);
}

#[test]
fn shards_merge_into_the_unsharded_result() {
    let d = setup();
    ok(&sweep(d.path(), "whole", &[]));
    for i in 1..=3 {
        let s = format!("{i}/3");
        let out = format!("shard{i}");
        ok(&sweep(d.path(), &out, &["--shard", &s]));
    }
    // Merging two of three shards is partial: exit 1 and a warning.
    let o = migsim(&["merge", "--out", "partial", "shard1", "shard2"], d.path());
    assert_eq!(o.status.code(), Some(1));
    ok(&migsim(
        &["merge", "--out", "merged", "shard1", "shard2", "shard3"],
        d.path(),
    ));
    assert_eq!(
        read(d.path().join("merged/runs.csv")),
        read(d.path().join("whole/runs.csv"))
    );
    assert_eq!(
        read(d.path().join("merged/rounds.csv")),
        read(d.path().join("whole/rounds.csv"))
    );
    let rows = |p: &str| read(d.path().join(p)).lines().count() - 1;
    assert_eq!(
        rows("shard1/runs.csv") + rows("shard2/runs.csv") + rows("shard3/runs.csv"),
        rows("whole/runs.csv")
    );
}

#[test]
fn malformed_sweep_spec_names_the_field() {
    let d = setup();
    for (bad, field) in [
        (
            SPEC.replace("steps = 3", "steps = \"three\""),
            "axes.\"workload.rate_pps\"",
        ),
        (SPEC.replace("replicates = 2", "replicate = 2"), "replicate"),
        (
            SPEC.replace("[\"1 Gbit/s\", \"10 Gbit/s\"]", "\"1 Gbit/s\""),
            "axes.\"link.bandwidth\"",
        ),
        (
            SPEC.replace(
                "replicates = 2\n",
                "replicates = 2\nrounds = false\nplots = [\"timeline\"]\n",
            ),
            "sweep.plots: `timeline`",
        ),
    ] {
        std::fs::write(d.path().join("spec.toml"), &bad).unwrap();
        let o = sweep(d.path(), "out", &[]);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(field), "expected `{field}` in: {err}");
    }
}

fn budgets(max_downtime_ms: f64) -> String {
    format!(
        r#"
[defaults]
scenario = "base.toml"

[[budget]]
name = "qemu small"
max_downtime_ms = {max_downtime_ms}
max_total_time_s = 30
must_converge = true
max_bytes_sent = "1 GiB"

[[budget]]
name = "every policy, 10 Gbit/s"
sweep = "spec-valid.toml"
set = {{ "vm.vcpus" = 1, "link.bandwidth" = "10 Gbit/s" }}
replicates = 1
# Some policies time out at the 60 s cap on the fastest writer; the limit only bounds the attempt.
max_total_time_s = 61
"#
    )
}

#[test]
fn tightening_a_budget_makes_check_fail() {
    let d = setup();
    std::fs::write(d.path().join("budgets.toml"), budgets(1000.0)).unwrap();
    let o = migsim(&["check", "budgets.toml", "--junit", "ok.xml"], d.path());
    ok(&o);
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        table.contains("margin") && table.contains("qemu small"),
        "{table}"
    );
    let x = read(d.path().join("ok.xml"));
    assert!(x.contains(r#"failures="0""#), "{x}");

    // The same budget with a downtime limit below what the run achieves.
    std::fs::write(d.path().join("budgets.toml"), budgets(1.0)).unwrap();
    let o = migsim(&["check", "budgets.toml", "--junit", "fail.xml"], d.path());
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("FAIL"));
    let x = read(d.path().join("fail.xml"));
    assert!(
        x.contains(r#"failures="1""#) && x.contains("<failure"),
        "{x}"
    );
}

#[test]
fn bad_budget_file_exits_2_naming_the_field() {
    let d = setup();
    let cases = [
        (
            budgets(1000.0).replace("max_total_time_s = 30\nmust", "max_total_time = 30\nmust"),
            "max_total_time",
        ),
        (
            budgets(1000.0).replace("\"1 GiB\"", "\"1 GiBB\""),
            "budget[0].max_bytes_sent",
        ),
        (
            budgets(1000.0).replace("\"vm.vcpus\" = 1", "\"vm..vcpus\" = 1"),
            "budget[1].set",
        ),
    ];
    for (text, field) in cases {
        std::fs::write(d.path().join("b.toml"), text).unwrap();
        let o = migsim(&["check", "b.toml"], d.path());
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(field), "expected `{field}` in: {err}");
    }
}

#[test]
fn plots_are_written_as_svg_and_png() {
    let d = setup();
    ok(&sweep(d.path(), "res", &[]));
    let o = migsim(&["plot", "res"], d.path());
    ok(&o);
    for kind in [
        "downtime-vs-rate",
        "time-vs-bandwidth",
        "downtime-cdf",
        "timeline",
    ] {
        let png = std::fs::read(d.path().join(format!("res/plots/{kind}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{kind}.png");
        assert!(png.len() > 10_000, "{kind}.png is nearly empty");
        let svg = read(d.path().join(format!("res/plots/{kind}.svg")));
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
    }
    let svg = read(d.path().join("res/plots/downtime-vs-rate.svg"));
    assert!(svg.contains("downtime (ms)") && svg.contains("guest write rate (pages/s)"));
    // No kvm rows: that kind fails when asked for explicitly and leaves no file behind.
    let o = migsim(
        &["plot", "res", "--kind", "predicted-vs-measured"],
        d.path(),
    );
    assert!(!o.status.success());
    assert!(!d
        .path()
        .join("res/plots/predicted-vs-measured.svg")
        .exists());
}

#[test]
fn predicted_vs_measured_pairs_kvm_rows_with_sim_rows() {
    let d = setup();
    ok(&sweep(d.path(), "res", &[]));
    // Fake a KVM measurement of every valid sim run: same point, 10 % longer downtime.
    let text = read(d.path().join("res/runs.csv"));
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let header: Vec<String> = lines[0].split(',').map(String::from).collect();
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let (backend, dt) = (col("backend"), col("downtime_ns"));
    let extra: Vec<String> = lines[1..]
        .iter()
        .filter(|l| !l.contains("invalid"))
        .map(|l| {
            let mut f: Vec<String> = l.split(',').map(String::from).collect();
            f[backend] = "kvm".into();
            if let Ok(v) = f[dt].parse::<f64>() {
                f[dt] = ((v * 1.1) as u64).to_string();
            }
            f.join(",")
        })
        .collect();
    lines.extend(extra);
    std::fs::write(d.path().join("res/runs.csv"), lines.join("\n") + "\n").unwrap();
    let o = migsim(
        &[
            "plot",
            "res",
            "--kind",
            "predicted-vs-measured",
            "--out",
            "pvm.png",
        ],
        d.path(),
    );
    ok(&o);
    let png = std::fs::read(d.path().join("pvm.png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
}

#[test]
fn killed_sweep_resumes_to_the_same_bytes() {
    let d = setup();
    // Long enough (tens of thousands of runs, a second or more) that the sweep is still
    // running when its first rows reach the disk (it appends every 0.5 s).
    let big = SPEC
        .replace("replicates = 2", "replicates = 200")
        .replace("steps = 3", "steps = 6");
    std::fs::write(d.path().join("spec.toml"), big).unwrap();
    ok(&sweep(d.path(), "full", &[]));
    let full_lines = read(d.path().join("full/runs.csv")).lines().count();
    // Kill -9 a sweep as soon as some finished runs are on disk, then resume it.
    let mut child = Command::new(BIN)
        .args(["sweep", "spec.toml", "--out", "killed", "-q", "-j", "2"])
        .current_dir(d.path())
        .spawn()
        .unwrap();
    let lines = || {
        std::fs::read_to_string(d.path().join("killed/runs.csv")).map_or(0, |t| t.lines().count())
    };
    let t0 = std::time::Instant::now();
    while lines() <= 1
        && child.try_wait().unwrap().is_none()
        && t0.elapsed() < std::time::Duration::from_secs(120)
    {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().ok();
    child.wait().unwrap();
    let partial = lines();
    assert!(
        partial > 1 && partial < full_lines,
        "the kill did not land part-way: {partial} of {full_lines} lines of runs.csv written \
         (a faster machine needs a longer sweep here)"
    );
    eprintln!("killed after {partial} of {full_lines} lines of runs.csv");
    ok(&sweep(d.path(), "killed", &["-j", "1"]));
    assert_eq!(
        read(d.path().join("killed/runs.csv")),
        read(d.path().join("full/runs.csv")),
        "after a kill with {partial} lines written"
    );
    assert_eq!(
        read(d.path().join("killed/rounds.csv")),
        read(d.path().join("full/rounds.csv"))
    );
}

#[test]
fn resume_fills_runs_missing_from_the_middle() {
    let d = setup();
    ok(&sweep(d.path(), "full", &[]));
    ok(&sweep(d.path(), "holes", &[]));
    let id = |l: &str| l.split(',').next().unwrap().parse::<usize>().ok();
    let hole = |i: Option<usize>| i.is_some_and(|i| (5..9).contains(&i) || i % 7 == 3);
    for f in ["runs.csv", "rounds.csv"] {
        let kept: String = read(d.path().join("holes").join(f))
            .lines()
            .filter(|l| !hole(id(l)))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(d.path().join("holes").join(f), kept).unwrap();
    }
    ok(&sweep(d.path(), "holes", &["-j", "2"]));
    assert_eq!(
        read(d.path().join("holes/runs.csv")),
        read(d.path().join("full/runs.csv"))
    );
    assert_eq!(
        read(d.path().join("holes/rounds.csv")),
        read(d.path().join("full/rounds.csv"))
    );
}

#[test]
fn a_directory_in_use_by_another_sweep_is_refused() {
    let d = setup();
    std::fs::create_dir_all(d.path().join("busy")).unwrap();
    let lock = d.path().join("busy/.migsim-sweep.lock");
    std::fs::write(&lock, "some-other-host 4242\n").unwrap();
    let o = sweep(d.path(), "busy", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("in use by another sweep"));
    // A stale lock of a dead process on this host is taken over, and released afterwards.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    std::fs::write(&lock, format!("{} 4000000000\n", host.trim())).unwrap();
    ok(&sweep(d.path(), "busy", &[]));
    assert!(!lock.exists());
}

#[test]
fn a_sweep_whose_every_point_is_invalid_fails_fast() {
    let d = setup();
    std::fs::write(
        d.path().join("base.toml"),
        BASE.replace("memory = \"256 MiB\"", "memroy = \"256 MiB\""),
    )
    .unwrap();
    let o = sweep(d.path(), "out", &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("every point") && err.contains("memroy"),
        "{err}"
    );
    assert!(!d.path().join("out/runs.csv").exists());
}

//! Real migrations of small KVM guests. Every test skips (saying so) without /dev/kvm.
//!
//! Tests that need a destination in a separate process re-run this test binary: the ignored
//! test `dest_child_entry` is the destination when started with the source's address.

use real_backend::quick::quick_migrate;
use real_backend::transport::SendFaults;
use real_backend::{migrate, DestLaunch, Faults, GuestMode, RealError, RealOptions, RealRun};
use sim::migration::run_seed;
use sim::{Checked, Scenario, Status};
use workloads::WriteStream;

/// One guest migration at a time: on the nested host two overlapping migrations have stalled a
/// resuming vCPU for seconds (see `dest.rs`), which a test would report as a guest that made no
/// progress. Every test takes it first and holds it to its end.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn kvm_or_skip() -> bool {
    if real_backend::kvm_available() {
        true
    } else {
        eprintln!("SKIPPED: /dev/kvm not available");
        false
    }
}

fn scenario(mem: &str, workload: &str, link: &str, policy: &str) -> Checked {
    let text = format!(
        "name = \"test\"\nseed = 7\n[vm]\nmemory = \"{mem}\"\nvcpus = 2\nzero_page_fraction = 0.25\n\
         [workload]\n{workload}\n[link]\n{link}\n[policy]\n{policy}\n"
    );
    Scenario::from_toml_str(&text).unwrap().check().unwrap()
}

fn small_uniform() -> Checked {
    scenario(
        "16 MiB",
        "kind = \"uniform\"\nwss = \"4 MiB\"\nrate_pps = 20000",
        "bandwidth = \"1 Gbit/s\"\nrtt_ms = 0.2",
        "kind = \"qemu\"\ndowntime_limit_ms = 30",
    )
}

/// A guest running the check loop over 8 MiB, stopped after 3 passes.
fn small_check() -> Checked {
    scenario(
        "8 MiB",
        "kind = \"idle\"",
        "bandwidth = \"2 Gbit/s\"",
        "kind = \"fixed-passes\"\npasses = 3\nstop_below = \"0 B\"",
    )
}

/// Launch the destination as a separate process: this test binary, running `dest_child_entry`.
fn process_launch() -> DestLaunch {
    DestLaunch::Process {
        program: std::env::current_exe().unwrap(),
        args: vec![
            "dest_child_entry".into(),
            "--exact".into(),
            "--ignored".into(),
            "--nocapture".into(),
            "--test-threads=1".into(),
            "{addr}".into(),
        ],
    }
}

/// The destination process (only meaningful when started by `process_launch`).
#[test]
#[ignore]
fn dest_child_entry() {
    let Some(addr) = std::env::args().find(|a| a.starts_with("127.0.0.1:")) else {
        return;
    };
    let s = std::net::TcpStream::connect(addr).unwrap();
    match real_backend::serve_dest(s, &Default::default()) {
        Ok(_) | Err(real_backend::DestError::Aborted) => {}
        Err(e) => eprintln!("destination: {e}"),
    }
}

fn show(run: &RealRun) {
    eprintln!("{}", sim::metrics::render_summary(&run.result));
    eprintln!(
        "achieved {:.0} pps of {:.0}; verify {} us; dest {:?}; source after failure {:?}",
        run.achieved_pps,
        run.target_pps,
        run.verify_ns / 1000,
        run.dest,
        run.source_after_failure
    );
}

fn assert_moved(run: &RealRun) {
    let r = &run.result.report;
    assert!(r.status.moved(), "{:?}: {}", r.status, r.reason);
    assert_eq!(r.backend, "kvm");
    let d = run.dest.as_ref().expect("destination progress");
    assert!(
        d.heartbeat_after > d.heartbeat_at_resume,
        "guest stalled on the destination"
    );
    let dt = r.downtime.expect("downtime");
    assert!(dt.total_ns() > 0 && dt.pause_ns > 0 && dt.resume_ns > 0);
    assert!(r.total_time_ns >= dt.total_ns());
}

#[test]
fn live_migration_workload_same_pages_as_the_simulator() {
    let _serial = serial();
    if !kvm_or_skip() {
        return;
    }
    let ck = small_uniform();
    let opts = RealOptions {
        record_writes: true,
        record_trace: true,
        ..Default::default()
    };
    let run = migrate(&ck, &opts).unwrap();
    show(&run);
    assert_moved(&run);
    let r = &run.result.report;
    assert!(run.verified);
    assert!(r.guest_writes > 100, "guest wrote {} pages", r.guest_writes);
    assert!(!run.result.rounds.is_empty());
    // One harvested bitmap per sync plus the final one.
    assert!(run.trace.len() >= run.result.rounds.len());
    assert_eq!(run.harvests.len(), run.trace.len());
    assert!(run.harvests.iter().all(|h| h.ns > 0));
    // The feeder gave the guest exactly the simulator's page sequence.
    let mut expect = Vec::new();
    let mut stream = WriteStream::new(&ck.workload, run_seed(ck.scenario.seed, 0));
    let mut t = 0;
    while expect.len() < run.writes.len() {
        t += 100_000_000;
        stream.advance_to(t, |p| expect.push(p));
    }
    assert_eq!(run.writes, expect[..run.writes.len()]);
    // Pacing is checked loosely: on a loaded 2-core host the nested guest stalls for
    // milliseconds at a time and falls behind its script (it catches up when it can).
    assert!(
        run.achieved_pps > 0.1 * run.target_pps,
        "achieved {}",
        run.achieved_pps
    );
}

#[test]
fn live_migration_to_a_separate_process_over_tcp() {
    let _serial = serial();
    if !kvm_or_skip() {
        return;
    }
    let ck = small_uniform();
    let opts = RealOptions {
        dest: process_launch(),
        ..Default::default()
    };
    let run = migrate(&ck, &opts).unwrap();
    show(&run);
    assert_moved(&run);
    assert!(run.verified);
}

#[test]
fn check_loop_consistent_after_migration() {
    let _serial = serial();
    if !kvm_or_skip() {
        return;
    }
    let ck = small_check();
    let opts = RealOptions {
        mode: GuestMode::Check,
        ..Default::default()
    };
    let run = migrate(&ck, &opts).unwrap();
    show(&run);
    assert_moved(&run);
    // Three passes at most (fewer when this host stalls the guest long enough for a pass to
    // find nothing dirty).
    assert!(run.result.report.rounds <= 3);
    assert_eq!(run.dest.as_ref().unwrap().check, Some(Ok(())));
}

#[test]
fn lost_page_is_caught_by_the_digest() {
    let _serial = serial();
    if !kvm_or_skip() {
        return;
    }
    let ck = small_check();
    let opts = RealOptions {
        mode: GuestMode::Check,
        faults: Faults {
            lose_a_page: true,
            ..Default::default()
        },
        ..Default::default()
    };
    match migrate(&ck, &opts) {
        Err(RealError::Source(e)) => {
            let msg = e.to_string();
            eprintln!("failed as expected: {msg}");
            assert!(msg.contains("digest"), "{msg}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(run) => panic!("a lost page went unnoticed: {:?}", run.result.report),
    }
}

fn assert_failed_and_source_intact(run: &RealRun, what: &str) {
    show(run);
    let r = &run.result.report;
    assert_eq!(r.status, Status::Failed, "{what}: {}", r.reason);
    assert!(r.downtime.is_none());
    assert!(
        r.reason.contains(what),
        "reason {:?} should mention {what:?}",
        r.reason
    );
    let (alive, check) = run.source_after_failure.clone().expect("source check");
    assert!(alive, "guest not running on the source after the failure");
    assert_eq!(check, Some(Ok(())), "source memory inconsistent");
}

#[test]
fn destination_killed_mid_migration() {
    let _serial = serial();
    if !kvm_or_skip() {
        return;
    }
    let ck = small_check();
    let opts = RealOptions {
        mode: GuestMode::Check,
        dest: process_launch(),
        faults: Faults {
            kill_dest_after_bytes: Some(2 << 20),
            ..Default::default()
        },
        ..Default::default()
    };
    let run = migrate(&ck, &opts).unwrap();
    assert_failed_and_source_intact(&run, "link");
}

#[test]
fn connection_cut_mid_migration() {
    let _serial = serial();
    if !kvm_or_skip() {
        return;
    }
    let ck = small_check();
    let opts = RealOptions {
        mode: GuestMode::Check,
        faults: Faults {
            send: SendFaults {
                cut_after_bytes: Some(1 << 20),
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let run = migrate(&ck, &opts).unwrap();
    assert_failed_and_source_intact(&run, "link");
}

#[test]
fn corrupted_frame_fails_the_migration() {
    let _serial = serial();
    if !kvm_or_skip() {
        return;
    }
    let ck = small_check();
    let opts = RealOptions {
        mode: GuestMode::Check,
        faults: Faults {
            send: SendFaults {
                corrupt_after_bytes: Some(1 << 20),
                ..Default::default()
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let run = migrate(&ck, &opts).unwrap();
    assert_failed_and_source_intact(&run, "checksum");
}

#[test]
fn quick_migration_through_a_file() {
    let _serial = serial();
    if !kvm_or_skip() {
        return;
    }
    let ck = small_check();
    let dir = std::env::temp_dir();
    let opts = RealOptions {
        mode: GuestMode::Check,
        dest: process_launch(),
        ..Default::default()
    };
    let run = quick_migrate(&ck, &opts, &dir).unwrap();
    show(&run);
    assert_moved(&run);
    assert_eq!(run.result.report.kind, "quick");
    assert_eq!(run.dest.as_ref().unwrap().check, Some(Ok(())));
}

//! Real migrations of small KVM guests. Every test skips (saying so) without /dev/kvm.

use real_backend::{migrate, DestLaunch, Faults, GuestMode, RealOptions};
use sim::{Checked, Scenario, Status};

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

#[test]
fn live_migration_in_process_workload() {
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
    let r = &run.result.report;
    eprintln!("{}", sim::metrics::render_summary(&run.result));
    eprintln!(
        "achieved {:.0} pps of {:.0}; verify {} us; dest {:?}",
        run.achieved_pps,
        run.target_pps,
        run.verify_ns / 1000,
        run.dest
    );
    assert!(r.status.moved(), "{:?}: {}", r.status, r.reason);
    assert_eq!(r.backend, "kvm");
    assert!(run.verified);
    let d = run.dest.as_ref().unwrap();
    assert!(d.heartbeat_after > d.heartbeat_at_resume);
    assert!(r.guest_writes > 0);
    assert!(!run.result.rounds.is_empty());
    assert!(r.downtime.unwrap().total_ns() > 0);
}

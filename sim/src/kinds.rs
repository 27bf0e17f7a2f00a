//! The other kinds of move: quick migration (save/restore through shared storage), offline
//! moves, and quick storage migration (disk pre-copy, then a quick save/restore).

use crate::engine::Nanos;
use crate::metrics::{Downtime, RunReport, RunResult, Status};
use crate::migration::{simulate_live, transfer_ns};
use crate::scenario::{
    Checked, MigrationSpec, Mode, QuickSpec, Scenario, SwitchoverSpec, TransferSpec, VmSpec,
};

fn ms_ns(ms: f64) -> Nanos {
    (ms * 1e6).round() as Nanos
}

fn report(
    ck: &Checked,
    replicate: u32,
    kind: &str,
    reason: String,
    downtime: Downtime,
    total: Nanos,
) -> RunReport {
    let sc = &ck.scenario;
    RunReport {
        backend: "sim".into(),
        scenario: sc.name.clone(),
        policy: sc.policy.label(),
        workload: sc.workload.kind_name().into(),
        seed: sc.seed,
        replicate,
        status: Status::Converged,
        reason,
        mem_bytes: ck.mem_bytes(),
        link_bps: sc.link.bandwidth.0,
        total_time_ns: total,
        downtime: Some(downtime),
        rounds: 0,
        bytes_sent: 0,
        pages_sent: 0,
        zero_pages_sent: 0,
        pages_resent: 0,
        final_pages: 0,
        final_bytes: 0,
        guest_writes: 0,
        max_throttle_pct: 0,
        kind: kind.into(),
        postcopy: None,
        xbzrle_hits: 0,
    }
}

/// Save/restore of the whole memory image through shared storage. The breakdown puts the image
/// write + read under `transfer` and the failover (plus vCPU state) under `state`.
fn quick_blackout(ck: &Checked, q_write: f64, q_read: f64, failover_ms: f64) -> Downtime {
    let sw = &ck.scenario.switchover;
    let image = ck.mem_bytes();
    Downtime {
        pause_ns: ms_ns(sw.pause_ms),
        final_sync_ns: 0,
        transfer_ns: transfer_ns(image, q_write) + transfer_ns(image, q_read),
        state_ns: ms_ns(failover_ms)
            + transfer_ns(sw.state.0, q_write)
            + transfer_ns(sw.state.0, q_read),
        resume_ns: ms_ns(sw.resume_ms),
    }
}

fn quick(ck: &Checked, replicate: u32, q: &QuickSpec) -> RunResult {
    let d = quick_blackout(ck, q.storage_write.0, q.storage_read.0, q.failover_ms);
    let mut r = report(
        ck,
        replicate,
        "quick",
        "saved to shared storage, failed over, restored".into(),
        d,
        d.total_ns(),
    );
    r.bytes_sent = ck.mem_bytes() + ck.scenario.switchover.state.0;
    RunResult {
        report: r,
        rounds: Vec::new(),
    }
}

fn offline(ck: &Checked, replicate: u32, o: &crate::scenario::OfflineSpec) -> RunResult {
    let bw = ck.scenario.link.bandwidth.0;
    let one_way = ms_ns(ck.scenario.link.rtt_ms / 2.0);
    let d = Downtime {
        pause_ns: ms_ns(o.shutdown_ms),
        final_sync_ns: 0,
        transfer_ns: transfer_ns(o.config.0 + o.disk.0, bw) + one_way,
        state_ns: 0,
        resume_ns: ms_ns(o.boot_ms),
    };
    let setup = 2 * one_way;
    let mut r = report(
        ck,
        replicate,
        "offline",
        "shut down, moved, booted".into(),
        d,
        setup + d.total_ns(),
    );
    r.bytes_sent = o.config.0 + o.disk.0;
    RunResult {
        report: r,
        rounds: Vec::new(),
    }
}

fn storage(ck: &Checked, replicate: u32, st: &crate::scenario::StorageSpec) -> RunResult {
    // Pre-copy the disk with the same engine: blocks are pages, the disk workload dirties them.
    let sc = &ck.scenario;
    let disk = Scenario {
        vm: VmSpec {
            memory: st.disk,
            page_size: st.block,
            vcpus: sc.vm.vcpus,
            zero_page_fraction: 0.0,
        },
        workload: st.disk_workload.clone(),
        switchover: SwitchoverSpec {
            pause_ms: 0.0,
            resume_ms: 0.0,
            state: workloads::ByteSize(0),
        },
        transfer: TransferSpec::default(),
        migration: MigrationSpec::Live,
        ..sc.clone()
    };
    let Ok(disk_ck) = disk.check() else {
        unreachable!("the disk scenario is validated with the storage spec")
    };
    let mut res = simulate_live(&disk_ck, replicate);
    let r = &mut res.report;
    r.kind = "storage".into();
    r.mem_bytes = ck.mem_bytes();
    r.workload = sc.workload.kind_name().into();
    if let Some(d) = r.downtime {
        // The final disk delta, then a quick save/restore of memory.
        let q = quick_blackout(ck, st.storage_write.0, st.storage_read.0, st.failover_ms);
        let total = Downtime {
            pause_ns: q.pause_ns,
            final_sync_ns: d.final_sync_ns,
            transfer_ns: d.transfer_ns + q.transfer_ns,
            state_ns: q.state_ns,
            resume_ns: q.resume_ns,
        };
        r.total_time_ns = r.total_time_ns - d.total_ns() + total.total_ns();
        r.downtime = Some(total);
        r.reason = format!(
            "disk copied live ({}), then memory saved and restored",
            r.reason
        );
    }
    res
}

/// Simulate one migration of a checked scenario, whatever its kind.
pub fn simulate(ck: &Checked, replicate: u32) -> RunResult {
    match &ck.scenario.migration {
        MigrationSpec::Live => match ck.scenario.mode {
            Mode::Exact => simulate_live(ck, replicate),
            Mode::Fluid => crate::fluid::simulate_fluid(ck, replicate, false),
            Mode::Analytic => crate::fluid::simulate_fluid(ck, replicate, true),
        },
        MigrationSpec::Quick(q) => quick(ck, replicate, q),
        MigrationSpec::Offline(o) => offline(ck, replicate, o),
        MigrationSpec::Storage(st) => storage(ck, replicate, st),
    }
}

/// [`simulate`]'s report alone: the round records are not built where a mode can skip them
/// (fluid and analytic), and dropped otherwise. The report is the one [`simulate`] gives.
pub fn simulate_report(ck: &Checked, replicate: u32) -> RunReport {
    match (&ck.scenario.migration, ck.scenario.mode) {
        (MigrationSpec::Live, Mode::Fluid) => {
            crate::fluid::simulate_fluid_report(ck, replicate, false)
        }
        (MigrationSpec::Live, Mode::Analytic) => {
            crate::fluid::simulate_fluid_report(ck, replicate, true)
        }
        _ => simulate(ck, replicate).report,
    }
}

/// Whether the replicates of `ck` can differ: fluid and analytic mode model expected counts and
/// draw nothing at random, so every replicate of a live migration in those modes gives the
/// result of replicate 0 but for its `replicate` field (tested), and a caller may reuse it.
pub fn replicates_differ(ck: &Checked) -> bool {
    !(matches!(ck.scenario.migration, MigrationSpec::Live)
        && matches!(ck.scenario.mode, Mode::Fluid | Mode::Analytic))
}

//! Tests of each system's rule, the other kinds of move, and the oracle.

use crate::metrics::{RunResult, Status};
use crate::migration::{transfer_ns, OracleCaps};
use crate::policy::*;
use crate::scenario::*;
use crate::{oracle, simulate, simulate_probed};
use workloads::spec::{HotColdSpec, ScanSpec, UniformSpec};
use workloads::{Bandwidth, ByteSize, WorkloadSpec, GIB, MIB};

fn scenario(mem: u64, workload: WorkloadSpec, policy: PolicySpec) -> Scenario {
    let mut s = Scenario::default_scenario();
    s.name = "policy-test".into();
    s.vm.memory = ByteSize(mem);
    s.vm.zero_page_fraction = 0.0;
    s.workload = workload;
    s.policy = policy;
    s
}

/// Uniform writes at `rate` pages/s over the first `wss` bytes (shared with the fluid tests).
pub(crate) fn uniform(wss: u64, rate: f64) -> WorkloadSpec {
    WorkloadSpec::Uniform(UniformSpec {
        wss: ByteSize(wss),
        rate_pps: rate,
        offset: ByteSize(0),
    })
}

/// `s` as given (shared with the fluid tests).
pub(crate) fn run(s: &Scenario) -> RunResult {
    simulate(&s.clone().check().unwrap(), 0)
}

#[test]
fn xen_v2_stops_when_fewer_than_50_pages_are_dirty_or_after_5_iterations() {
    let s = scenario(
        256 * MIB,
        uniform(32 * MIB, 2000.0),
        PolicySpec::XenV2(XenV2Spec::default()),
    );
    let res = run(&s);
    assert_eq!(
        res.report.status,
        Status::Converged,
        "{}",
        res.report.reason
    );
    // The stop happened on the first harvest with < 50 dirty pages: every earlier one had ≥ 50.
    let last = res.rounds.last().unwrap();
    assert!(last.pages_dirtied < 50, "{last:?}");
    assert!(res.rounds[..res.rounds.len() - 1]
        .iter()
        .all(|r| r.pages_dirtied >= 50));
    assert_eq!(res.report.final_pages, last.pages_dirtied);
    // A workload that never gets below 50 pages stops, forced, after exactly 5 iterations.
    let s = scenario(
        64 * MIB,
        uniform(64 * MIB, 400_000.0),
        PolicySpec::XenV2(XenV2Spec::default()),
    );
    let res = run(&s);
    assert_eq!((res.report.status, res.report.rounds), (Status::Forced, 5));
}

#[test]
fn hyperv_versions_differ_only_in_their_pass_limit() {
    let w = WorkloadSpec::Scan(ScanSpec {
        wss: None,
        rate_pps: 5e6,
        offset: ByteSize(0),
    });
    let a = run(&scenario(
        16 * MIB,
        w.clone(),
        PolicySpec::Hyperv2008R2(HypervSpec::default()),
    ));
    let b = run(&scenario(
        16 * MIB,
        w,
        PolicySpec::Hyperv2012R2(HypervSpec::default()),
    ));
    assert_eq!((a.report.status, a.report.rounds), (Status::Forced, 10));
    assert_eq!((b.report.status, b.report.rounds), (Status::Forced, 5));
    assert_eq!(a.report.policy, "hyperv-2008r2");
}

/// Re-derive QEMU's auto-converge decisions from the per-round records and check the engine
/// applied them at those syncs, with the expected percentages.
#[test]
fn auto_converge_throttles_20_30_40_at_the_right_syncs_and_dirtying_slows_accordingly() {
    // 1 GiB guest dirtying 100K distinct-ish pages/s over 768 MiB: far more than the link sends.
    let q = QemuSpec {
        auto_converge: true,
        ..QemuSpec::default()
    };
    let mut s = scenario(GIB, uniform(768 * MIB, 100_000.0), PolicySpec::Qemu(q));
    s.limits.max_time_s = 60.0;
    let res = run(&s);
    let rounds = &res.rounds;
    assert!(rounds.len() > 10, "too few syncs: {}", rounds.len());
    // Replay the rule: at each sync (end of round i), add the round's dirtied pages to the
    // period; if more than 1 s passed since the period began, compare with bytes sent.
    let mut period_start = 0u64;
    let mut period_bytes = 0u64;
    let mut period_dirty = 0u64;
    let mut high = 0;
    let mut throttle = 0u8;
    let mut expected = Vec::new();
    for (i, r) in rounds.iter().enumerate().take(rounds.len() - 1) {
        let sync_at = r.start_ns + r.duration_ns;
        period_dirty += r.pages_dirtied;
        period_bytes += r.bytes_sent;
        if sync_at > period_start + 1_000_000_000 {
            if period_dirty * 4096 > period_bytes / 2 {
                high += 1;
                if high == 2 {
                    high = 0;
                    throttle = if throttle == 0 {
                        20
                    } else {
                        (throttle + 10).min(99)
                    };
                }
            }
            period_start = sync_at;
            period_bytes = 0;
            period_dirty = 0;
        }
        expected.push((i + 1, throttle));
    }
    for (i, t) in &expected {
        assert_eq!(
            rounds[*i].throttle_pct, *t,
            "round {i}: throttle {} expected {t}",
            rounds[*i].throttle_pct
        );
    }
    let steps: Vec<u8> = {
        let mut v: Vec<u8> = rounds.iter().map(|r| r.throttle_pct).collect();
        v.dedup();
        v
    };
    assert_eq!(&steps[..4], &[0, 20, 30, 40], "{steps:?}");
    // The guest's writes per second of wall time fall with the CPU share left to it.
    let rate = |pct: u8| {
        let rs: Vec<_> = rounds
            .iter()
            .filter(|r| r.throttle_pct == pct && r.duration_ns > 0)
            .collect();
        let pages: u64 = rs.iter().map(|r| r.guest_writes).sum();
        let ns: u64 = rs.iter().map(|r| r.duration_ns).sum();
        pages as f64 * 1e9 / ns as f64
    };
    let (r0, r40) = (rate(0), rate(40));
    assert!((r0 - 100_000.0).abs() < 1000.0, "unthrottled rate {r0}");
    let ratio = r40 / r0;
    assert!(
        (ratio - 0.6).abs() < 0.08,
        "rate at 40 % throttle is {ratio:.3} of unthrottled (expected ~0.6)"
    );
}

#[test]
fn tailslow_steps_are_never_larger_than_the_increment() {
    let q = QemuSpec {
        auto_converge: true,
        tailslow: true,
        ..QemuSpec::default()
    };
    let mut s = scenario(GIB, uniform(768 * MIB, 100_000.0), PolicySpec::Qemu(q));
    s.limits.max_time_s = 60.0;
    let res = run(&s);
    let mut v: Vec<u8> = res.rounds.iter().map(|r| r.throttle_pct).collect();
    v.dedup();
    assert_eq!(v[1], 20);
    assert!(
        v.windows(2).all(|w| w[1] >= w[0] && w[1] - w[0] <= 20),
        "{v:?}"
    );
}

#[test]
fn dirty_limit_caps_the_guest_write_rate() {
    let q = QemuSpec {
        dirty_limit: true,
        ..QemuSpec::default()
    };
    let mut s = scenario(GIB, uniform(768 * MIB, 100_000.0), PolicySpec::Qemu(q));
    s.limits.max_time_s = 120.0;
    let res = run(&s);
    // 2 vCPUs × 1 MB/s = 488 pages/s: QEMU converges once the limit is on.
    assert_eq!(
        res.report.status,
        Status::Converged,
        "{}",
        res.report.reason
    );
    let last = res
        .rounds
        .iter()
        .rev()
        .find(|r| r.duration_ns > 100_000_000)
        .unwrap();
    let rate = last.pages_dirtied as f64 * 1e9 / last.duration_ns as f64;
    assert!(
        rate < 2.0 * 2.0 * 1e6 / 4096.0,
        "dirty rate {rate} pages/s under the limit"
    );
}

#[test]
fn cloud_hypervisor_timeout_cancel_leaves_the_vm_on_the_source_and_ignore_forces() {
    let w = WorkloadSpec::Scan(ScanSpec {
        wss: None,
        rate_pps: 5e6,
        offset: ByteSize(0),
    });
    let ch = |on_timeout| {
        PolicySpec::CloudHypervisor(CloudHypervisorSpec {
            timeout_s: 2.0,
            on_timeout,
            ..Default::default()
        })
    };
    let cancel = run(&scenario(64 * MIB, w.clone(), ch(TimeoutAction::Cancel))).report;
    assert_eq!(cancel.status, Status::Cancelled, "{}", cancel.reason);
    assert!(cancel.downtime.is_none() && !cancel.status.moved());
    assert!(cancel.total_time_ns >= 2_000_000_000 && cancel.total_time_ns < 3_000_000_000);
    let ignore = run(&scenario(64 * MIB, w, ch(TimeoutAction::Ignore))).report;
    assert_eq!(ignore.status, Status::Forced);
    assert!(ignore.downtime.is_some());
    // Within budget it converges on its own rule.
    let ok = run(&scenario(
        256 * MIB,
        uniform(16 * MIB, 1000.0),
        ch(TimeoutAction::Cancel),
    ))
    .report;
    assert_eq!(ok.status, Status::Converged);
    assert!(ok.downtime.unwrap().transfer_ns < 300_000_000);
}

#[test]
fn sdps_throttles_a_guest_that_outruns_the_link_until_it_converges() {
    let s = scenario(
        GIB,
        uniform(768 * MIB, 100_000.0),
        PolicySpec::VmwareSdps(SdpsSpec::default()),
    );
    let r = run(&s).report;
    assert_eq!(r.status, Status::Converged, "{}", r.reason);
    assert!(r.max_throttle_pct > 50, "{}", r.max_throttle_pct);
    assert!(r.downtime.unwrap().transfer_ns <= 510_000_000);
}

#[test]
fn downtime_ramp_follows_novas_steps_and_aborts_on_a_stall() {
    let p = DowntimeRamp::new(DowntimeRampSpec::default(), 1);
    // 4 GiB: a step every 300 s, from 50 ms to 500 ms in 45 ms steps.
    assert_eq!(p.limit_at(0, 4.0), 50.0);
    assert_eq!(p.limit_at(299_000_000_000, 4.0), 50.0);
    assert_eq!(p.limit_at(300_000_000_000, 4.0), 95.0);
    assert_eq!(p.limit_at(3_000_000_000_000, 4.0), 500.0);
    assert_eq!(p.limit_at(9_000_000_000_000, 4.0), 500.0);
    let w = WorkloadSpec::Scan(ScanSpec {
        wss: None,
        rate_pps: 5e6,
        offset: ByteSize(0),
    });
    let spec = DowntimeRampSpec {
        progress_timeout_s: 5.0,
        ..Default::default()
    };
    let r = run(&scenario(256 * MIB, w, PolicySpec::DowntimeRamp(spec))).report;
    assert_eq!(r.status, Status::Cancelled);
    assert!(r.reason.contains("no progress"), "{}", r.reason);
}

#[test]
fn postcopy_blackout_excludes_the_fault_phase_but_the_report_has_it() {
    let spec = PostCopySpec {
        precopy_rounds: 1,
        ..Default::default()
    };
    let s = scenario(
        GIB,
        uniform(512 * MIB, 50_000.0),
        PolicySpec::Postcopy(spec),
    );
    let res = run(&s);
    let r = &res.report;
    let pc = r.postcopy.expect("post-copy stats");
    let d = r.downtime.unwrap();
    assert_eq!(r.status, Status::Converged);
    assert!(pc.faults > 0 && pc.missing_pages > 0);
    assert_eq!(pc.faults + pc.pushed_pages, pc.missing_pages);
    // Faults stall the guest after resume; none of that is blackout.
    assert!(
        pc.stall_ns > 10 * d.total_ns(),
        "stall {} vs blackout {}",
        pc.stall_ns,
        d.total_ns()
    );
    assert!(d.total_ns() < 50_000_000, "{d:?}");
    assert!(r.total_time_ns >= res.rounds[0].duration_ns + d.total_ns() + pc.duration_ns);
    // Every missing page crossed the link once after the switch.
    assert_eq!(r.final_pages, 0);
}

#[test]
fn quick_offline_and_storage_moves() {
    let mut s = scenario(
        2 * GIB,
        uniform(64 * MIB, 1000.0),
        PolicySpec::Qemu(QemuSpec::default()),
    );
    let (w, rd) = (
        Bandwidth::parse("500 MB/s").unwrap(),
        Bandwidth::parse("1 GB/s").unwrap(),
    );
    s.migration = MigrationSpec::Quick(QuickSpec {
        storage_write: w,
        storage_read: rd,
        failover_ms: 1000.0,
    });
    let r = run(&s).report;
    let d = r.downtime.unwrap();
    assert_eq!(
        d.transfer_ns,
        transfer_ns(2 * GIB, w.0) + transfer_ns(2 * GIB, rd.0)
    );
    assert!(
        d.total_ns() > 6_000_000_000,
        "quick migration blackout is seconds: {d:?}"
    );
    assert_eq!(r.total_time_ns, d.total_ns());
    s.migration = MigrationSpec::Offline(OfflineSpec {
        shutdown_ms: 100.0,
        boot_ms: 200.0,
        config: ByteSize(0),
        disk: ByteSize(GIB),
    });
    let r = run(&s).report;
    assert_eq!(
        r.downtime.unwrap().transfer_ns,
        transfer_ns(GIB, 1e9) + 100_000
    );
    s.migration = MigrationSpec::Storage(StorageSpec {
        disk: ByteSize(8 * GIB),
        block: ByteSize(MIB),
        disk_workload: uniform(512 * MIB, 20.0),
        storage_write: w,
        storage_read: rd,
        failover_ms: 1000.0,
    });
    let r = run(&s).report;
    assert_eq!(r.kind, "storage");
    assert!(r.rounds >= 2, "disk pre-copy iterates: {}", r.rounds);
    assert!(r.bytes_sent >= 8 * GIB);
    assert!(r.downtime.unwrap().total_ns() > 6_000_000_000);
}

#[test]
fn xbzrle_sends_deltas_for_rewritten_pages_and_multifd_is_capped_by_its_channels() {
    let w = WorkloadSpec::HotCold(HotColdSpec {
        hot_wss: ByteSize(16 * MIB),
        hot_rate_pps: 20_000.0,
        cold_wss: None,
        cold_rate_pps: 100.0,
        offset: ByteSize(0),
    });
    let fp = PolicySpec::FixedPasses(FixedPassesSpec {
        passes: 6,
        stop_below: ByteSize(0),
    });
    let plain = run(&scenario(512 * MIB, w.clone(), fp.clone()));
    let mut s = scenario(512 * MIB, w.clone(), fp.clone());
    s.transfer.xbzrle = Some(XbzrleSpec {
        cache: ByteSize(64 * MIB),
        delta_fraction: 0.1,
        overflow_fraction: 0.0,
    });
    let x = run(&s);
    assert!(x.report.xbzrle_hits > 0);
    // Round 1 only fills the cache; from round 2 on, re-sent hot pages are deltas.
    assert_eq!(x.rounds[1].bytes_sent, plain.rounds[1].bytes_sent);
    assert!(x.rounds[2].bytes_sent * 3 < plain.rounds[2].bytes_sent);
    assert!(x.report.bytes_sent < plain.report.bytes_sent);
    let mut m = scenario(512 * MIB, w, fp);
    m.link.bandwidth = Bandwidth(1e10);
    m.transfer.multifd = Some(MultifdSpec {
        channels: 2,
        channel_bandwidth: Bandwidth(1e9),
        ..MultifdSpec::default()
    });
    let mr = run(&m);
    let bw = mr.rounds[0].bandwidth_bps;
    assert!(bw <= 2e9 * 1.001 && bw > 1.9e9, "{bw}");
}

impl Default for MultifdSpec {
    fn default() -> Self {
        MultifdSpec {
            channels: 2,
            channel_bandwidth: Bandwidth(1e10),
            packet: ByteSize(512 * 1024),
            packet_header_bytes: 1104,
        }
    }
}

#[test]
fn oracle_is_never_worse_than_a_policy_that_leaves_the_guest_alone() {
    let workloads = [
        uniform(64 * MIB, 20_000.0),
        WorkloadSpec::HotCold(HotColdSpec {
            hot_wss: ByteSize(32 * MIB),
            hot_rate_pps: 40_000.0,
            cold_wss: None,
            cold_rate_pps: 1000.0,
            offset: ByteSize(0),
        }),
    ];
    for w in workloads {
        let base = scenario(512 * MIB, w, PolicySpec::Qemu(QemuSpec::default()));
        let ck = base.clone().check().unwrap();
        let mut best = None;
        let mut runs = Vec::new();
        for p in PolicySpec::all_defaults() {
            let mut s = base.clone();
            s.policy = p;
            let (res, cand) = simulate_probed(&s.check().unwrap(), 0, OracleCaps::default());
            if res.report.max_throttle_pct == 0
                && res.report.postcopy.is_none()
                && res.report.status.moved()
            {
                // The policy's own stop is one of the candidates, priced exactly as it happened.
                let c = cand.unwrap();
                assert!(c.downtime_ns <= res.report.downtime_ns().unwrap());
                best = crate::Oracle::min(best, Some(c));
                runs.push(res);
            }
        }
        let horizon = runs.iter().map(|r| r.report.total_time_ns).max().unwrap();
        let o = crate::Oracle::min(best, oracle(&ck, 0, horizon, OracleCaps::default())).unwrap();
        for r in &runs {
            assert!(
                o.downtime_ns <= r.report.downtime_ns().unwrap(),
                "{} beat the oracle",
                r.report.policy
            );
        }
        // The replay alone finds the stop of a round-based policy exactly: fixed-passes(N)
        // stopping at its Nth round end is a point on the replay's trajectory.
        let mut s = base.clone();
        s.policy = PolicySpec::FixedPasses(FixedPassesSpec {
            passes: 3,
            stop_below: ByteSize(0),
        });
        let fp = run(&s);
        let capped = oracle(
            &ck,
            0,
            fp.report.total_time_ns,
            OracleCaps {
                max_total_ns: Some(fp.report.total_time_ns),
                max_bytes: None,
            },
        )
        .unwrap();
        assert!(capped.downtime_ns <= fp.report.downtime_ns().unwrap());
        assert!(capped.total_time_ns <= fp.report.total_time_ns);
    }
}

#[test]
fn adaptive_stops_on_the_floor_of_a_hot_working_set() {
    let w = WorkloadSpec::HotCold(HotColdSpec {
        hot_wss: ByteSize(32 * MIB),
        hot_rate_pps: 60_000.0,
        cold_wss: None,
        cold_rate_pps: 500.0,
        offset: ByteSize(0),
    });
    let s = scenario(GIB, w, PolicySpec::Adaptive(AdaptiveSpec::default()));
    let ck = s.clone().check().unwrap();
    let res = simulate(&ck, 0);
    assert_eq!(
        res.report.status,
        Status::Converged,
        "{}",
        res.report.reason
    );
    assert!(res.report.reason.contains("floor"), "{}", res.report.reason);
    let o = oracle(&ck, 0, 2 * res.report.total_time_ns, OracleCaps::default()).unwrap();
    let ratio = res.report.downtime_ns().unwrap() as f64 / o.downtime_ns as f64;
    assert!(ratio < 1.15, "adaptive {:.1}x the oracle", ratio);
}

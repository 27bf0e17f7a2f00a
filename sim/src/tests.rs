//! Behavioural tests of the exact engine and the stop rules.

use crate::metrics::{self, Status};
use crate::migration::transfer_ns;
use crate::policy::*;
use crate::scenario::Mode;
use crate::scenario::*;
use crate::simulate;
use workloads::spec::{IdleSpec, ScanSpec, UniformSpec};
use workloads::{Bandwidth, ByteSize, WorkloadSpec, MIB};

fn base(mem_mib: u64, workload: WorkloadSpec, policy: PolicySpec) -> Scenario {
    let mut s = Scenario::default_scenario();
    s.name = "test".into();
    s.vm.memory = ByteSize(mem_mib * MIB);
    s.vm.zero_page_fraction = 0.0;
    s.workload = workload;
    s.policy = policy;
    s
}

fn idle0() -> WorkloadSpec {
    WorkloadSpec::Idle(IdleSpec { rate_pps: 0.0 })
}

#[test]
fn zero_dirty_rate_total_time_is_memory_over_bandwidth_plus_overheads() {
    for (bw, rtt) in [(1e9, 0.2), (3.3e8, 1.7), (1e10, 0.0)] {
        let mut s = base(
            64,
            idle0(),
            PolicySpec::FixedPasses(FixedPassesSpec::default()),
        );
        s.link.bandwidth = Bandwidth(bw);
        s.link.rtt_ms = rtt;
        let ck = s.clone().check().unwrap();
        let r = simulate(&ck, 0).report;
        let pages = 64 * MIB / 4096;
        let one_way = (rtt * 1e6 / 2.0).round() as u64;
        let gib = 64.0 / 1024.0;
        let final_sync = (s.dirty_log.sync_fixed_us * 1e3 + s.dirty_log.sync_us_per_gib * 1e3 * gib)
            .round() as u64;
        let expected = 2 * one_way // connection setup
            + transfer_ns(pages * (4096 + 8), bw) // one full pass
            + 2_000_000 // pause
            + final_sync
            + one_way // last byte's latency
            + transfer_ns(256 * 1024, bw) // vCPU/device state
            + 5_000_000; // resume
        assert_eq!(r.status, Status::Converged, "{}", r.reason);
        assert_eq!(r.total_time_ns, expected, "bw {bw} rtt {rtt}");
        assert_eq!(r.rounds, 1);
        assert_eq!(r.pages_sent, pages);
        assert_eq!(r.final_pages, 0);
        assert_eq!(r.bytes_sent, pages * 4104);
    }
}

#[test]
fn pure_stop_and_copy_sends_everything_in_the_blackout() {
    let s = base(
        32,
        idle0(),
        PolicySpec::StopAndCopy(StopAndCopySpec::default()),
    );
    let r = simulate(&s.clone().check().unwrap(), 0).report;
    let pages = 32 * MIB / 4096;
    assert_eq!(r.rounds, 0);
    assert_eq!(r.final_pages, pages);
    let d = r.downtime.unwrap();
    assert_eq!(d.transfer_ns, transfer_ns(pages * 4104, 1e9) + 100_000);
    assert_eq!(r.total_time_ns, 200_000 + d.total_ns());
}

/// A scan over all of memory much faster than the link re-dirties every page every round.
fn redirty_all() -> WorkloadSpec {
    WorkloadSpec::Scan(ScanSpec {
        wss: None,
        rate_pps: 5e6,
        offset: ByteSize(0),
    })
}

#[test]
fn fixed_passes_stops_after_exactly_n_passes_when_everything_is_redirtied() {
    for n in [1u32, 3, 10] {
        let s = base(
            16,
            redirty_all(),
            PolicySpec::FixedPasses(FixedPassesSpec {
                passes: n,
                ..Default::default()
            }),
        );
        let res = simulate(&s.check().unwrap(), 0);
        let r = &res.report;
        assert_eq!(r.status, Status::Forced, "{}", r.reason);
        assert_eq!(r.rounds, n);
        assert_eq!(res.rounds.len(), n as usize);
        // every pass sent all of memory, and the blackout sends it all again
        for rr in &res.rounds {
            assert_eq!(rr.pages_sent, 4096);
            assert_eq!(rr.pages_dirtied, 4096);
        }
        assert_eq!(r.final_pages, 4096);
        assert_eq!(r.pages_resent, 4096 * n as u64);
    }
}

#[test]
fn fixed_passes_stops_early_when_clean() {
    let s = base(
        16,
        idle0(),
        PolicySpec::FixedPasses(FixedPassesSpec {
            passes: 10,
            ..Default::default()
        }),
    );
    let r = simulate(&s.check().unwrap(), 0).report;
    assert_eq!((r.status, r.rounds), (Status::Converged, 1));
    assert!(r.reason.contains("no dirty pages"), "{}", r.reason);
}

#[test]
fn xen_legacy_stops_at_three_times_ram_on_a_non_converging_workload() {
    let s = base(
        16,
        redirty_all(),
        PolicySpec::XenLegacy(XenLegacySpec::default()),
    );
    let res = simulate(&s.check().unwrap(), 0);
    let r = &res.report;
    assert_eq!(r.status, Status::Forced);
    assert!(r.reason.contains("3x RAM"), "{}", r.reason);
    // 4 full passes are needed to exceed 3x RAM (after 3, sent == 3x, not more).
    assert_eq!(r.rounds, 4);
    let precopy: u64 = res.rounds.iter().map(|x| x.pages_sent).sum();
    assert!(precopy > 3 * 4096 && precopy - res.rounds.last().unwrap().pages_sent <= 3 * 4096);
}

#[test]
fn xen_legacy_stops_when_a_round_sends_fewer_than_50_pages() {
    // 40 writes/s over 16 pages: after the first pass (~17 ms at 1 Gbit/s... for 16 MiB ~134 ms)
    // the second round sends the few pages dirtied, fewer than 50.
    let w = WorkloadSpec::Uniform(UniformSpec {
        wss: ByteSize(16 * 4096),
        rate_pps: 40.0,
        offset: ByteSize(0),
    });
    let s = base(16, w, PolicySpec::XenLegacy(XenLegacySpec::default()));
    let res = simulate(&s.check().unwrap(), 0);
    let r = &res.report;
    assert_eq!(r.status, Status::Converged, "{}", r.reason);
    let last = res.rounds.last().unwrap();
    assert!(last.pages_sent < 50, "{last:?}");
    assert!(res.rounds[..res.rounds.len() - 1]
        .iter()
        .all(|x| x.pages_sent >= 50));
}

#[test]
fn qemu_stops_only_below_its_threshold_and_never_on_a_diverging_workload() {
    // Converging: the final blackout transfer is within the downtime limit.
    let w = WorkloadSpec::Uniform(UniformSpec {
        wss: ByteSize(64 * MIB),
        rate_pps: 5000.0,
        offset: ByteSize(0),
    });
    let s = base(256, w, PolicySpec::Qemu(QemuSpec::default()));
    let r = simulate(&s.check().unwrap(), 0).report;
    assert_eq!(r.status, Status::Converged);
    let d = r.downtime.unwrap();
    assert!(d.transfer_ns < 300_000_000 + 1_000_000, "{d:?}");
    // Diverging (re-dirties all memory faster than the link): no cap, so the time limit ends it.
    // (256 MiB, so that all of memory does not fit under the 300 ms threshold at 1 Gbit/s.)
    let mut s = base(256, redirty_all(), PolicySpec::Qemu(QemuSpec::default()));
    s.limits.max_time_s = 5.0;
    let r = simulate(&s.check().unwrap(), 0).report;
    assert_eq!(r.status, Status::Timeout, "{}", r.reason);
    assert!(r.downtime.is_none());
    assert_eq!(r.total_time_ns, 5_000_000_000);
}

#[test]
fn qemu_max_bandwidth_limits_precopy_but_not_the_switchover() {
    let w = WorkloadSpec::Uniform(UniformSpec {
        wss: ByteSize(8 * MIB),
        rate_pps: 1000.0,
        offset: ByteSize(0),
    });
    let limit = Bandwidth::parse("128 MiB/s").unwrap();
    let s = base(
        64,
        w,
        PolicySpec::Qemu(QemuSpec {
            max_bandwidth: Some(limit),
            ..Default::default()
        }),
    );
    let mut s10 = s.clone();
    s10.link.bandwidth = Bandwidth(1e10);
    let res = simulate(&s10.check().unwrap(), 0);
    for rr in &res.rounds {
        if rr.duration_ns > 10_000_000 {
            assert!(rr.bandwidth_bps <= limit.0 * 1.01, "{rr:?}");
        }
    }
    let d = res.report.downtime.unwrap();
    let full_rate = transfer_ns(res.report.final_bytes, 1e10);
    assert_eq!(d.transfer_ns, full_rate + 100_000);
}

#[test]
fn zero_pages_travel_as_markers_in_round_zero() {
    let mut s = base(
        64,
        idle0(),
        PolicySpec::FixedPasses(FixedPassesSpec::default()),
    );
    s.vm.zero_page_fraction = 0.5;
    let r = simulate(&s.check().unwrap(), 0).report;
    let pages = 64 * MIB / 4096;
    assert!(
        r.zero_pages_sent > pages / 4 && r.zero_pages_sent < 3 * pages / 4,
        "{}",
        r.zero_pages_sent
    );
    assert_eq!(
        r.bytes_sent,
        (pages - r.zero_pages_sent) * 4104 + r.zero_pages_sent * 9
    );
}

#[test]
fn pages_written_during_a_round_are_resent_next_round() {
    // Uniform over a small set: every page dirtied during round 0 is sent again in round 1.
    let w = WorkloadSpec::Uniform(UniformSpec {
        wss: ByteSize(MIB),
        rate_pps: 2000.0,
        offset: ByteSize(0),
    });
    let s = base(
        64,
        w,
        PolicySpec::FixedPasses(FixedPassesSpec {
            passes: 2,
            stop_below: ByteSize(0),
        }),
    );
    let res = simulate(&s.check().unwrap(), 0);
    assert_eq!(res.rounds[1].pages_sent, res.rounds[0].pages_dirtied);
    assert_eq!(res.report.final_pages, res.rounds[1].pages_dirtied);
    assert_eq!(
        res.report.pages_resent,
        res.rounds[1].pages_sent + res.report.final_pages
    );
}

#[test]
fn same_seed_gives_identical_csv_and_other_seeds_differ() {
    let ck = Scenario::default_scenario().check().unwrap();
    let csv = |ck: &Checked, rep| {
        let r = vec![simulate(ck, rep)];
        let mut a = Vec::new();
        metrics::write_runs_csv(&mut a, &r).unwrap();
        metrics::write_rounds_csv(&mut a, &r).unwrap();
        a
    };
    assert_eq!(csv(&ck, 0), csv(&ck, 0));
    assert_ne!(csv(&ck, 0), csv(&ck, 1));
    let mut other = Scenario::default_scenario();
    other.seed = 99;
    assert_ne!(csv(&ck, 0), csv(&other.check().unwrap(), 0));
}

#[test]
fn timeout_ends_a_run_that_cannot_converge() {
    let mut s = base(
        16,
        redirty_all(),
        PolicySpec::FixedPasses(FixedPassesSpec {
            passes: 1_000_000,
            ..Default::default()
        }),
    );
    s.limits.max_time_s = 2.0;
    let r = simulate(&s.check().unwrap(), 0).report;
    assert_eq!(r.status, Status::Timeout);
    assert_eq!(r.total_time_ns, 2_000_000_000);
}

fn problems(text: &str) -> Vec<String> {
    match Scenario::from_toml_str(text) {
        Err(e) => vec![e.to_string()],
        Ok(s) => s
            .check()
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.to_string())
            .collect(),
    }
}

const VALID: &str = r#"
[vm]
memory = "1 GiB"
[workload]
kind = "uniform"
wss = "64 MiB"
rate_pps = 1000
[link]
bandwidth = "1 Gbit/s"
[policy]
kind = "qemu"
"#;

#[test]
fn invalid_scenarios_name_the_field_and_the_problem() {
    assert!(problems(VALID).is_empty(), "{:?}", problems(VALID));
    let cases: &[(&str, &str, &str)] = &[
        (
            "memory = \"1 GiB\"",
            "memory = 0",
            "vm.memory: must be larger than zero",
        ),
        (
            "bandwidth = \"1 Gbit/s\"",
            "bandwidth = -5",
            "link.bandwidth: must be a finite rate > 0",
        ),
        (
            "bandwidth = \"1 Gbit/s\"",
            "bandwidth = 0",
            "link.bandwidth: must be a finite rate > 0",
        ),
        (
            "bandwidth = \"1 Gbit/s\"",
            "bandwidth = nan",
            "link.bandwidth: must be a finite rate > 0",
        ),
        (
            "wss = \"64 MiB\"",
            "wss = \"2 GiB\"",
            "workload.wss: region of 2 GiB at offset 0 B does not fit",
        ),
        (
            "rate_pps = 1000",
            "rate_pps = -1",
            "workload.rate_pps: must be a finite rate ≥ 0",
        ),
        (
            "kind = \"qemu\"",
            "kind = \"magic\"",
            "policy.kind: unknown variant `magic`",
        ),
        (
            "[vm]",
            "[vm]\ncolour = \"red\"",
            "vm.colour: unknown field `colour`",
        ),
        (
            "memory = \"1 GiB\"",
            "memory = \"1 GiBB\"",
            "vm.memory: unknown size unit `GiBB`",
        ),
        (
            "kind = \"qemu\"",
            "kind = \"qemu\"\ndowntime_limit_ms = -3",
            "policy.downtime_limit_ms: must be a finite value ≥ 0 ms",
        ),
    ];
    for (from, to, want) in cases {
        let text = VALID.replacen(from, to, 1);
        let p = problems(&text);
        assert!(
            p.iter().any(|e| e.contains(want)),
            "for `{to}` expected `{want}`, got {p:?}"
        );
    }
    // Several problems are reported together.
    let text = VALID
        .replace(
            "memory = \"1 GiB\"",
            "memory = \"1 GiB\"\nvcpus = 0\nzero_page_fraction = 2",
        )
        .replace("rate_pps = 1000", "rate_pps = -1");
    let p = problems(&text);
    assert_eq!(p.len(), 3, "{p:?}");
}

#[test]
fn default_scenario_round_trips_through_toml() {
    let s = Scenario::default_scenario();
    let back = Scenario::from_toml_str(&s.to_toml()).unwrap();
    assert_eq!(s, back);
}

/// A deliberately naive model of round-by-round pre-copy (a `Vec<bool>` per bitmap, one page at
/// a time), to check the engine's word-level bookkeeping on small VMs.
fn naive_rounds(s: &Scenario, passes: u32) -> (Vec<(u64, u64)>, u64, u64) {
    let ck = s.clone().check().unwrap();
    let n = ck.mem_pages as usize;
    let wire = ck.page_size + s.link.page_header_bytes;
    let bw = s.link.bandwidth.0;
    let one_way = (s.link.rtt_ms * 1e6 / 2.0).round() as u64;
    let gib = ck.mem_bytes() as f64 / (1u64 << 30) as f64;
    let sync_cost = |dirty: u64| {
        let d = &s.dirty_log;
        ((d.sync_fixed_us * 1e3
            + d.sync_us_per_gib * 1e3 * gib
            + d.sync_ns_per_dirty_page * dirty as f64)
            .round() as u64)
            .max(1_000)
    };
    let mut stream =
        workloads::WriteStream::new(&ck.workload, crate::migration::run_seed(s.seed, 0));
    let mut send = vec![true; n];
    let mut dirty = vec![false; n];
    let mut sent_before = vec![false; n];
    let mut resent = 0u64;
    let mut ready = 2 * one_way;
    let mut rounds = Vec::new();
    for pass in 0..passes {
        let pages: Vec<usize> = (0..n).filter(|&i| send[i]).collect();
        for &p in &pages {
            send[p] = false;
            resent += sent_before[p] as u64;
            sent_before[p] = true;
        }
        let end = ready + transfer_ns(pages.len() as u64 * wire, bw);
        stream.advance_to(end, |p| dirty[p as usize] = true);
        let dirtied = dirty.iter().filter(|&&d| d).count() as u64;
        rounds.push((pages.len() as u64, dirtied));
        if pass + 1 == passes {
            break;
        }
        for i in 0..n {
            if dirty[i] {
                send[i] = true;
                dirty[i] = false;
            }
        }
        ready = end + sync_cost(dirtied);
    }
    let final_pages = (0..n).filter(|&i| send[i] || dirty[i]).count() as u64;
    for i in 0..n {
        if send[i] || dirty[i] {
            resent += sent_before[i] as u64;
        }
    }
    (rounds, final_pages, resent)
}

#[test]
fn engine_matches_a_naive_per_page_model_on_small_vms() {
    let workloads = [
        WorkloadSpec::Uniform(UniformSpec {
            wss: ByteSize(3 * MIB),
            rate_pps: 30_000.0,
            offset: ByteSize(MIB),
        }),
        WorkloadSpec::Zipf(workloads::spec::ZipfSpec {
            wss: ByteSize(8 * MIB),
            rate_pps: 20_000.0,
            exponent: 0.9,
            offset: ByteSize(0),
        }),
        WorkloadSpec::Scan(ScanSpec {
            wss: Some(ByteSize(5 * MIB)),
            rate_pps: 9_000.0,
            offset: ByteSize(2 * MIB),
        }),
    ];
    for (i, w) in workloads.into_iter().enumerate() {
        for bw in [1e8, 1e9] {
            let mut s = base(
                12,
                w.clone(),
                PolicySpec::FixedPasses(FixedPassesSpec {
                    passes: 6,
                    stop_below: ByteSize(0),
                }),
            );
            s.link.bandwidth = Bandwidth(bw);
            s.seed = 40 + i as u64;
            let res = simulate(&s.clone().check().unwrap(), 0);
            let passes = res.report.rounds;
            let (naive, final_pages, resent) = naive_rounds(&s, passes);
            let engine: Vec<(u64, u64)> = res
                .rounds
                .iter()
                .map(|r| (r.pages_sent, r.pages_dirtied))
                .collect();
            assert_eq!(engine, naive, "workload {i} at {bw} bit/s");
            assert_eq!(res.report.final_pages, final_pages);
            assert_eq!(res.report.pages_resent, resent);
        }
    }
}

#[test]
fn fluid_mode_tracks_the_exact_engine_on_round_based_policies() {
    // No writes: both modes must agree to the nanosecond-rounding level.
    let mut s = base(
        256,
        idle0(),
        PolicySpec::Hyperv2008R2(HypervSpec::default()),
    );
    let exact = simulate(&s.clone().check().unwrap(), 0).report;
    s.mode = Mode::Fluid;
    let fluid = simulate(&s.clone().check().unwrap(), 0).report;
    assert_eq!(fluid.backend, "fluid");
    assert!(
        fluid.total_time_ns.abs_diff(exact.total_time_ns) < 1_000,
        "{} vs {}",
        fluid.total_time_ns,
        exact.total_time_ns
    );
    assert_eq!(fluid.rounds, exact.rounds);
    // A converging uniform workload: per-round dirty counts follow W(1 − e^(−n/W)).
    let w = WorkloadSpec::Uniform(UniformSpec {
        wss: ByteSize(64 * MIB),
        rate_pps: 8000.0,
        offset: ByteSize(0),
    });
    let mut s = base(1024, w, PolicySpec::Hyperv2008R2(HypervSpec::default()));
    let exact = simulate(&s.clone().check().unwrap(), 0);
    s.mode = Mode::Fluid;
    let fluid = simulate(&s.clone().check().unwrap(), 0);
    let rel = |a: u64, b: u64| (a as f64 - b as f64).abs() / b as f64;
    assert!(rel(fluid.report.total_time_ns, exact.report.total_time_ns) < 0.02);
    for (f, e) in fluid.rounds.iter().zip(&exact.rounds).take(3) {
        assert!(
            rel(f.pages_dirtied, e.pages_dirtied) < 0.03,
            "{f:?} vs {e:?}"
        );
    }
    // The geometric model ignores the working set, so it overestimates the dirty set.
    s.mode = Mode::Analytic;
    let an = simulate(&s.check().unwrap(), 0);
    assert!(an.rounds[0].pages_dirtied > 2 * exact.rounds[0].pages_dirtied);
}

#[test]
fn zero_page_map_has_exactly_the_requested_share_of_blocks() {
    use crate::migration::initial_zero_pages;
    for (pages, z) in [
        (64 * 1000u64, 0.25),
        (64 * 1000 + 17, 0.5),
        (64 * 4096, 0.1),
        (640, 1.0),
        (640, 0.0),
    ] {
        let blocks = pages.div_ceil(64);
        let k = (z * blocks as f64).round() as u64;
        let m = initial_zero_pages(pages, z, 7);
        let zero_blocks = (0..blocks).filter(|&b| m.get(b * 64)).count() as u64;
        assert_eq!(zero_blocks, k, "{pages} pages at {z}");
        // Blocks are all-or-nothing.
        for b in 0..blocks {
            let first = m.get(b * 64);
            assert!((b * 64..((b + 1) * 64).min(pages)).all(|p| m.get(p) == first));
        }
        // Another seed picks other blocks (when there is a choice).
        if k > 0 && k < blocks {
            assert_ne!(m, initial_zero_pages(pages, z, 8));
        }
    }
}

#[test]
fn deferred_writes_give_the_same_runs_as_writes_applied_at_every_chunk() {
    // Zero pages inside the written region, mid-round syncs (qemu, adaptive), XBZRLE, phases
    // and throttling: every place where the writes' timing could show.
    let hot_cold = WorkloadSpec::HotCold(workloads::spec::HotColdSpec {
        hot_wss: ByteSize(2 * MIB),
        hot_rate_pps: 40_000.0,
        cold_wss: None,
        cold_rate_pps: 3_000.0,
        offset: ByteSize(MIB),
    });
    let phased: WorkloadSpec = toml::from_str(
        r#"
        kind = "phased"
        repeat = true
        phases = [
          { duration_ms = 70, workload = { kind = "uniform", wss = "6 MiB", rate_pps = 30000 } },
          { duration_ms = 30, workload = { kind = "scan", wss = "20 MiB", offset = "4 MiB", rate_pps = 60000 } },
        ]
        "#,
    )
    .unwrap();
    let uniform = WorkloadSpec::Uniform(UniformSpec {
        wss: ByteSize(10 * MIB),
        rate_pps: 25_000.0,
        offset: ByteSize(3 * MIB),
    });
    let policies = [
        PolicySpec::Qemu(QemuSpec::default()),
        PolicySpec::Qemu(QemuSpec {
            auto_converge: true,
            ..QemuSpec::default()
        }),
        PolicySpec::Adaptive(AdaptiveSpec::default()),
        PolicySpec::XenLegacy(XenLegacySpec::default()),
        PolicySpec::Postcopy(PostCopySpec::default()),
    ];
    for (i, w) in [hot_cold, phased, uniform].into_iter().enumerate() {
        for (j, p) in policies.iter().enumerate() {
            for xbzrle in [false, true] {
                let mut s = base(32, w.clone(), p.clone());
                s.vm.zero_page_fraction = 0.4;
                s.link.bandwidth = Bandwidth(1e8);
                s.seed = 7 + i as u64;
                s.limits.max_time_s = 60.0;
                if xbzrle {
                    s.transfer.xbzrle = Some(XbzrleSpec {
                        cache: ByteSize(4 * MIB),
                        delta_fraction: 0.1,
                        overflow_fraction: 0.1,
                    });
                }
                let ck = s.check().unwrap();
                let eager = crate::migration::simulate_live_eager(&ck, 0);
                let r = simulate(&ck, 0);
                assert_eq!(r, eager, "workload {i}, policy {j}, xbzrle {xbzrle}");
                assert!(r.report.zero_pages_sent > 0);
            }
        }
    }
}

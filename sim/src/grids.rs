//! Scenario grids shared by the command-line tool, the benchmarks and the tests, so that a
//! figure printed by `migsim bench`, measured by `cargo bench` and checked by a test all come
//! from the same list of scenarios.

use crate::policy::PolicySpec;
use crate::scenario::{Checked, Mode, Scenario};
use workloads::spec::{HotColdSpec, IdleSpec, ScanSpec, UniformSpec, ZipfSpec};
use workloads::{Bandwidth, ByteSize, WorkloadSpec, GIB, MIB};

/// Guest-page writes per second that a link of `bps` carries as full pages (4 KiB page plus the
/// default 8-byte header).
pub fn link_page_rate(bps: f64) -> f64 {
    bps / 8.0 / 4104.0
}

/// The standard comparison grid in fluid mode: six workloads (idle, uniform at a low and a high
/// rate, hot/cold, Zipf, a scan faster than the link) on two links (1 and 10 Gbit/s), crossed
/// with every default policy fluid mode models (post-copy is exact-mode only), on the default
/// 4 GiB VM with a 600 s cap. `migsim bench` and `benches/fluid.rs` time this list.
pub fn standard_fluid_grid() -> Vec<Checked> {
    let mut out = Vec::new();
    for bw in [1e9f64, 1e10] {
        let link_pps = link_page_rate(bw);
        let wls = vec![
            WorkloadSpec::Idle(IdleSpec { rate_pps: 50.0 }),
            WorkloadSpec::Uniform(UniformSpec {
                wss: ByteSize(256 * MIB),
                rate_pps: 5000.0,
                offset: ByteSize(0),
            }),
            WorkloadSpec::Uniform(UniformSpec {
                wss: ByteSize(256 * MIB),
                rate_pps: 50_000.0,
                offset: ByteSize(0),
            }),
            WorkloadSpec::HotCold(HotColdSpec {
                hot_wss: ByteSize(64 * MIB),
                hot_rate_pps: 50_000.0,
                cold_wss: None,
                cold_rate_pps: 2000.0,
                offset: ByteSize(0),
            }),
            WorkloadSpec::Zipf(ZipfSpec {
                wss: ByteSize(GIB),
                rate_pps: 30_000.0,
                exponent: 0.99,
                offset: ByteSize(0),
            }),
            WorkloadSpec::Scan(ScanSpec {
                wss: None,
                rate_pps: (1.6 * link_pps).round(),
                offset: ByteSize(0),
            }),
        ];
        for w in wls {
            for p in PolicySpec::all_defaults() {
                if matches!(p, PolicySpec::Postcopy(_)) {
                    continue;
                }
                let mut s = Scenario::default_scenario();
                s.mode = Mode::Fluid;
                s.link.bandwidth = Bandwidth(bw);
                s.workload = w.clone();
                s.policy = p;
                s.limits.max_time_s = 600.0;
                if let Ok(ck) = s.check() {
                    out.push(ck);
                }
            }
        }
    }
    out
}

/// Guest write rates of the geometric-model sweep, as multiples of the link's page rate.
pub const GEOMETRIC_RATES: [f64; 4] = [0.2, 0.5, 0.9, 1.5];

/// Policies of the geometric-model sweep: a round-based rule that always switches over
/// (forced at 29 iterations or 3× RAM sent) and QEMU's threshold rule.
pub const GEOMETRIC_POLICIES: [&str; 2] = ["xen-legacy", "qemu"];

/// Guest memory of the geometric-model sweep.
pub const GEOMETRIC_MEM: u64 = 4 * GIB;

/// Link of the geometric-model sweep (bit/s).
pub const GEOMETRIC_LINK_BPS: f64 = 1e9;

/// One point of the geometric-model sweep.
#[derive(Clone, Debug)]
pub struct GeometricPoint {
    pub policy: &'static str,
    /// Write rate ÷ the link's page rate.
    pub rate_factor: f64,
    /// Working-set size in bytes.
    pub wss: u64,
    /// The scenario, in exact mode (set `mode` to run the other models).
    pub scenario: Scenario,
}

/// Working-set sizes of the geometric-model sweep: 4 MiB, 8 MiB, ... up to all of memory.
pub fn geometric_wss() -> Vec<u64> {
    let mut v = Vec::new();
    let mut w = 4 * MIB;
    while w <= GEOMETRIC_MEM {
        v.push(w);
        w *= 2;
    }
    v
}

/// The sweep behind `migsim crosscheck --geometric-plot`: a 4 GiB VM without zero pages on a
/// 1 Gbit/s link, writing uniformly over a working set at the start of memory at a fixed rate
/// ([`GEOMETRIC_RATES`] × the link's page rate) while the working set grows from 4 MiB to all
/// of memory, under each of [`GEOMETRIC_POLICIES`] with a 600 s cap. Ordered by policy, rate,
/// then working set.
pub fn geometric_sweep() -> Vec<GeometricPoint> {
    let link_pps = link_page_rate(GEOMETRIC_LINK_BPS);
    let mut out = Vec::new();
    for policy in GEOMETRIC_POLICIES {
        for rate_factor in GEOMETRIC_RATES {
            for wss in geometric_wss() {
                let mut s = Scenario::default_scenario();
                s.name = format!("geo-{policy}-{rate_factor}x-{}m", wss / MIB);
                s.vm.memory = ByteSize(GEOMETRIC_MEM);
                s.vm.zero_page_fraction = 0.0;
                s.link.bandwidth = Bandwidth(GEOMETRIC_LINK_BPS);
                s.workload = WorkloadSpec::Uniform(UniformSpec {
                    wss: ByteSize(wss),
                    rate_pps: (rate_factor * link_pps).round(),
                    offset: ByteSize(0),
                });
                s.policy = PolicySpec::by_name(policy).expect("known policy");
                s.limits.max_time_s = 600.0;
                out.push(GeometricPoint {
                    policy,
                    rate_factor,
                    wss,
                    scenario: s,
                });
            }
        }
    }
    out
}

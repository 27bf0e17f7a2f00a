//! `migsim bench`: performance figures of the simulator, printed as a table.
//! Benchmarks print numbers; they never assert on time.

use anyhow::Result;
use clap::Args;
use sim::policy::{PolicySpec, QemuSpec};
use sim::Scenario;
use std::process::ExitCode;
use std::time::Instant;
use workloads::spec::UniformSpec;
use workloads::{Bandwidth, ByteSize, WorkloadSpec, GIB};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Repetitions per case (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
    /// Only run cases whose name contains this.
    #[arg(long)]
    pub only: Option<String>,
}

/// The exact-engine reference case: 16 GiB VM, 1 Gbit/s, uniform 20K pages/s over 4 GiB, QEMU 300 ms.
pub fn exact_16g() -> Scenario {
    let mut s = Scenario::default_scenario();
    s.name = "bench-exact-16g".into();
    s.vm.memory = ByteSize(16 * GIB);
    s.vm.zero_page_fraction = 0.0;
    s.workload = WorkloadSpec::Uniform(UniformSpec {
        wss: ByteSize(4 * GIB),
        rate_pps: 20_000.0,
        offset: ByteSize(0),
    });
    s.link.bandwidth = Bandwidth(1e9);
    s.policy = PolicySpec::Qemu(QemuSpec::default());
    s
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    let reps = a.reps.max(1);
    let cases: Vec<(&str, Scenario, &str)> =
        vec![("exact-16g-qemu", exact_16g(), "≤ 50 ms per migration")];
    println!(
        "{:<22} {:>6} {:>12} {:>12} {:>10}  target",
        "case", "reps", "median_ms", "min_ms", "rounds"
    );
    for (name, sc, target) in cases {
        if a.only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let ck = sc
            .check()
            .map_err(|e| anyhow::anyhow!("bench scenario invalid: {e:?}"))?;
        let mut times = Vec::with_capacity(reps);
        let mut rounds = 0;
        for _ in 0..reps {
            let t0 = Instant::now();
            let r = sim::simulate(&ck, 0);
            times.push(t0.elapsed().as_secs_f64() * 1e3);
            rounds = r.report.rounds;
        }
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "{:<22} {:>6} {:>12.2} {:>12.2} {:>10}  {target}",
            name,
            reps,
            median(times),
            min,
            rounds
        );
    }
    Ok(ExitCode::SUCCESS)
}

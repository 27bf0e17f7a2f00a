//! Criterion benchmark of the exact engine on the reference case
//! (16 GiB VM, 1 Gbit/s, uniform 20K pages/s over 4 GiB, QEMU 300 ms).

use criterion::{criterion_group, criterion_main, Criterion};
use sim::policy::{PolicySpec, QemuSpec};
use sim::Scenario;
use workloads::spec::UniformSpec;
use workloads::{Bandwidth, ByteSize, WorkloadSpec, GIB};

fn exact_16g(c: &mut Criterion) {
    let mut s = Scenario::default_scenario();
    s.vm.memory = ByteSize(16 * GIB);
    s.vm.zero_page_fraction = 0.0;
    s.workload = WorkloadSpec::Uniform(UniformSpec {
        wss: ByteSize(4 * GIB),
        rate_pps: 20_000.0,
        offset: ByteSize(0),
    });
    s.link.bandwidth = Bandwidth(1e9);
    s.policy = PolicySpec::Qemu(QemuSpec::default());
    let ck = s.check().expect("valid bench scenario");
    let mut g = c.benchmark_group("exact");
    g.sample_size(20);
    g.bench_function("16g_1gbit_uniform20k_qemu300", |b| {
        b.iter(|| sim::simulate(&ck, 0))
    });
    g.finish();
}

criterion_group!(benches, exact_16g);
criterion_main!(benches);

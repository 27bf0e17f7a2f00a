//! Criterion benchmark of the exact engine on the reference case
//! (16 GiB VM, 1 Gbit/s, uniform 20K pages/s over 4 GiB, QEMU 300 ms).

use criterion::{criterion_group, criterion_main, Criterion};
use sim::Scenario;

fn exact_16g(c: &mut Criterion) {
    let s = Scenario::bench_exact_16g();
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

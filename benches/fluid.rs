//! Criterion benchmark of fluid mode on the standard grid (`sim::grids::standard_fluid_grid`:
//! the 12 standard scenarios × every policy fluid mode models), one thread, each run's runs.csv
//! row rendered as `migsim sweep --no-rounds` would (no round records built); a second case also
//! builds and renders every run's rounds.csv rows. Throughput is reported in scenarios per
//! second.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

fn fluid_standard_grid(c: &mut Criterion) {
    let grid = sim::grids::standard_fluid_grid();
    let mut g = c.benchmark_group("fluid");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(grid.len() as u64));
    g.bench_function("standard_grid_csv_rows", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            for (i, ck) in grid.iter().enumerate() {
                bytes += sim::metrics::run_row(i, &sim::simulate_report(ck, 0)).len();
            }
            black_box(bytes)
        })
    });
    g.bench_function("standard_grid_both_csvs", |b| {
        let mut lines = String::new();
        b.iter(|| {
            let mut bytes = 0usize;
            lines.clear();
            for (i, ck) in grid.iter().enumerate() {
                let r = sim::simulate(ck, 0);
                bytes += sim::metrics::run_row(i, &r.report).len();
                for rr in &r.rounds {
                    sim::metrics::push_round_line(&mut lines, i, rr);
                }
            }
            black_box((bytes, lines.len()))
        })
    });
    g.finish();
}

criterion_group!(benches, fluid_standard_grid);
criterion_main!(benches);

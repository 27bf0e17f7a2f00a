//! Deterministic generation of page writes from a checked [`Workload`].
//!
//! Each class writes at its own constant rate: write number `k` (1-based) of a class happens at
//! guest time `k / rate`, so the number of writes by guest time `t` is `floor(t · rate)`. Which page
//! each write touches is drawn from a per-class `Pcg64Mcg` generator (implemented here as
//! [`crate::pcg::Mcg128`], bit for bit the same) seeded from the run's seed and the class index, so
//! the same spec and seed give the same page sequence on every platform and in both backends.

use crate::pcg::Mcg128;
use crate::spec::{Class, Pattern, Workload};
use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};

/// Stable 64-bit mix of two values (SplitMix64 finaliser). Used to derive independent seeds.
pub fn mix64(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Stable hash of a string (FNV-1a), for deriving seeds from names.
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Number of writes a class at `rate_pps` has made by guest time `t_ns` (inclusive).
#[inline]
pub fn writes_by(rate_pps: f64, t_ns: u64) -> u64 {
    // `x as u64` equals `x.floor() as u64` for every f64 (both give 0 below 1, saturate above
    // 2^64 and map NaN to 0); written this way it needs no call into libm.
    f64_to_u64(u64_to_f64(t_ns) * rate_pps / 1e9)
}

/// 2^63 as an f64 (exact).
pub const TWO_POW_63: f64 = (1u64 << 63) as f64;

/// `x as f64`, by the short signed conversion when `x` < 2^63 (the same value there: both
/// round the same integer to nearest).
#[inline]
pub fn u64_to_f64(x: u64) -> f64 {
    if x < 1 << 63 {
        x as i64 as f64
    } else {
        x as f64
    }
}

/// `x as u64`, by the short signed conversion when 0 ≤ `x` < 2^63 (the same value there).
#[inline]
pub fn f64_to_u64(x: f64) -> u64 {
    if (0.0..TWO_POW_63).contains(&x) {
        x as i64 as u64
    } else {
        x as u64
    }
}

/// `x.ceil() as u64` for every f64, without a call into libm. For 0 ≤ x < 2^63: truncation,
/// plus one when that dropped a fraction (below 2^53 the truncated value converts back
/// exactly; above, every f64 is an integer). Otherwise `x` is an integer, or negative, NaN or
/// ≥ 2^64, where `as` gives what it gives for `x.ceil()` (0, 0, saturation).
#[inline]
pub fn ceil_u64(x: f64) -> u64 {
    if (0.0..TWO_POW_63).contains(&x) {
        let t = x as i64;
        return if (t as f64) < x {
            t as u64 + 1
        } else {
            t as u64
        };
    }
    x as u64
}

/// `x.round() as u64` for every f64, without a call into libm. For 0 ≤ x < 2^63: truncation,
/// plus one when the dropped fraction is at least a half (it is exact: below 2^53 the
/// truncated value converts back exactly; above, every f64 is an integer). Otherwise as
/// [`ceil_u64`].
#[inline]
pub fn round_u64(x: f64) -> u64 {
    if (0.0..TWO_POW_63).contains(&x) {
        let t = x as i64;
        return if x - t as f64 >= 0.5 {
            t as u64 + 1
        } else {
            t as u64
        };
    }
    x as u64
}

/// Receives a stream's writes one page at a time. The stream holds the sink by value (a local)
/// while it generates, so a sink that counts can keep its counters in registers.
pub trait WriteSink {
    fn write(&mut self, page: u64);
}

/// A closure as a [`WriteSink`].
pub struct FnSink<F: FnMut(u64)>(pub F);

impl<F: FnMut(u64)> WriteSink for FnSink<F> {
    #[inline]
    fn write(&mut self, page: u64) {
        (self.0)(page)
    }
}

struct ClassStream {
    first_page: u64,
    pages: u64,
    rate_pps: f64,
    pattern: Pattern,
    rng: Mcg128,
    zipf: Option<Zipf<f64>>,
    emitted: u64,
}

impl ClassStream {
    fn new(class: &Class, seed: u64) -> Self {
        let zipf = match class.pattern {
            // Parameters were checked (pages > 0, exponent > 0), so construction cannot fail.
            Pattern::Zipf { exponent } => Zipf::new(class.pages, exponent).ok(),
            _ => None,
        };
        ClassStream {
            first_page: class.first_page,
            pages: class.pages,
            rate_pps: class.rate_pps,
            pattern: class.pattern,
            rng: Mcg128::seed_from_u64(seed),
            zipf,
            emitted: 0,
        }
    }

    /// Emit this class's writes up to class-local time `local_ns` to `sink`, in order.
    /// Returns the sink and how many writes were emitted.
    #[inline]
    fn advance<S: WriteSink>(&mut self, local_ns: u64, sink: S) -> (S, u64) {
        let mut sink = sink;
        let target = writes_by(self.rate_pps, local_ns);
        let n = target.saturating_sub(self.emitted);
        match self.pattern {
            Pattern::Uniform => {
                // Multiply-shift range reduction (Lemire) without the rejection step: its bias is
                // below pages / 2^64 per value, far under any sampling error, and it is portable.
                // (The generator is copied into a local so its state stays in registers.)
                let range = self.pages as u128;
                let first = self.first_page;
                let mut rng = self.rng.clone();
                if self.pages.is_power_of_two() {
                    // (r · 2^k) >> 64 is r >> (64 − k): the same value without a multiplication
                    let k = self.pages.trailing_zeros();
                    if k == 0 {
                        rng.for_each_u64(n, |_| sink.write(first));
                    } else {
                        rng.for_each_u64(n, |r| sink.write(first + (r >> (64 - k))));
                    }
                } else {
                    rng.for_each_u64(n, |r| {
                        sink.write(first + ((r as u128 * range) >> 64) as u64);
                    });
                }
                self.rng = rng;
            }
            Pattern::Sequential => {
                for i in 0..n {
                    sink.write(self.first_page + (self.emitted + i) % self.pages);
                }
            }
            Pattern::Zipf { .. } => {
                if let Some(z) = &self.zipf {
                    for _ in 0..n {
                        let rank = z.sample(&mut self.rng) as u64;
                        sink.write(self.first_page + (rank.max(1) - 1).min(self.pages - 1));
                    }
                }
            }
        }
        self.emitted = self.emitted.max(target);
        (sink, n)
    }
}

enum Inner {
    Classes(Vec<ClassStream>),
    Trace {
        writes: std::sync::Arc<Vec<(u64, u64)>>,
        pos: usize,
    },
    Phased {
        phases: Vec<(u64, Vec<Class>)>,
        repeat: bool,
        /// Index of the current phase instance (cycle × phases + phase).
        instance: u64,
        start_ns: u64,
        current: Vec<ClassStream>,
    },
}

/// A deterministic source of page writes in guest time.
pub struct WriteStream {
    seed: u64,
    inner: Inner,
    now_ns: u64,
    total: u64,
}

fn class_streams(classes: &[Class], seed: u64, instance: u64) -> Vec<ClassStream> {
    classes
        .iter()
        .enumerate()
        .map(|(i, c)| ClassStream::new(c, mix64(mix64(seed, instance), i as u64)))
        .collect()
}

impl WriteStream {
    pub fn new(workload: &Workload, seed: u64) -> Self {
        let inner = match workload {
            Workload::Classes(c) => Inner::Classes(class_streams(c, seed, 0)),
            Workload::Trace(t) => Inner::Trace {
                writes: t.writes.clone(),
                pos: 0,
            },
            Workload::Phased { phases, repeat } => Inner::Phased {
                current: class_streams(&phases[0].1, seed, 0),
                phases: phases.clone(),
                repeat: *repeat,
                instance: 0,
                start_ns: 0,
            },
        };
        WriteStream {
            seed,
            inner,
            now_ns: 0,
            total: 0,
        }
    }

    /// Guest time up to which writes have been emitted.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Total writes emitted so far.
    pub fn total_writes(&self) -> u64 {
        self.total
    }

    /// Emit every write with guest time in `(now, t_ns]`, in no particular order across classes
    /// (order within a class is preserved). Calls with `t_ns` ≤ now emit nothing.
    pub fn advance_to<F: FnMut(u64)>(&mut self, t_ns: u64, sink: F) {
        self.advance_sink(t_ns, FnSink(sink));
    }

    /// [`advance_to`](Self::advance_to) with a [`WriteSink`], which it hands back.
    pub fn advance_sink<S: WriteSink>(&mut self, t_ns: u64, sink: S) -> S {
        let mut sink = sink;
        if t_ns <= self.now_ns {
            return sink;
        }
        let seed = self.seed;
        match &mut self.inner {
            Inner::Classes(cs) => {
                for c in cs.iter_mut() {
                    let n;
                    (sink, n) = c.advance(t_ns, sink);
                    self.total += n;
                }
            }
            Inner::Trace { writes, pos } => {
                while let Some(&(t, p)) = writes.get(*pos) {
                    if t > t_ns {
                        break;
                    }
                    sink.write(p);
                    *pos += 1;
                    self.total += 1;
                }
            }
            Inner::Phased {
                phases,
                repeat,
                instance,
                start_ns,
                current,
            } => loop {
                let n_phases = phases.len() as u64;
                let idx = (*instance % n_phases) as usize;
                let dur = phases[idx].0;
                let last = !*repeat && *instance + 1 >= n_phases;
                let end = start_ns.saturating_add(dur);
                if last || t_ns < end {
                    for c in current.iter_mut() {
                        let n;
                        (sink, n) = c.advance(t_ns - *start_ns, sink);
                        self.total += n;
                    }
                    break;
                }
                for c in current.iter_mut() {
                    let n;
                    (sink, n) = c.advance(dur, sink);
                    self.total += n;
                }
                *instance += 1;
                *start_ns = end;
                let next = (*instance % n_phases) as usize;
                *current = class_streams(&phases[next].1, seed, *instance);
            },
        }
        self.now_ns = t_ns;
        sink
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::*;
    use crate::units::{ByteSize, MIB};

    fn uniform(wss_pages: u64, rate: f64) -> Workload {
        WorkloadSpec::Uniform(UniformSpec {
            wss: ByteSize(wss_pages * 4096),
            rate_pps: rate,
            offset: ByteSize(0),
        })
        .check(1 << 20, 4096, "workload")
        .unwrap()
    }

    #[test]
    fn same_seed_same_sequence_and_chunking_does_not_matter() {
        let w = uniform(1000, 5000.0);
        let mut a = Vec::new();
        let mut s = WriteStream::new(&w, 7);
        s.advance_to(1_000_000_000, |p| a.push(p));
        let mut b = Vec::new();
        let mut s = WriteStream::new(&w, 7);
        for step in 1..=1000u64 {
            s.advance_to(step * 1_000_000, |p| b.push(p));
        }
        assert_eq!(a.len(), 5000);
        assert_eq!(a, b);
        let mut c = Vec::new();
        WriteStream::new(&w, 8).advance_to(1_000_000_000, |p| c.push(p));
        assert_ne!(a, c);
    }

    /// The page sequence is a contract (the KVM guest replays it): these values come from the
    /// original per-write implementation and must never change.
    #[test]
    fn page_sequence_matches_recorded_values() {
        let spec = WorkloadSpec::Phased(PhasedSpec {
            phases: vec![
                PhaseSpec {
                    duration_ms: 3.0,
                    workload: WorkloadSpec::HotCold(HotColdSpec {
                        hot_wss: ByteSize(64 << 20),
                        hot_rate_pps: 50_000.0,
                        cold_wss: None,
                        cold_rate_pps: 7_000.0,
                        offset: ByteSize(4096),
                    }),
                },
                PhaseSpec {
                    duration_ms: 2.0,
                    workload: WorkloadSpec::Zipf(ZipfSpec {
                        wss: ByteSize(1 << 30),
                        rate_pps: 20_000.0,
                        exponent: 0.99,
                        offset: ByteSize(0),
                    }),
                },
                PhaseSpec {
                    duration_ms: 1.0,
                    workload: WorkloadSpec::Scan(ScanSpec {
                        wss: None,
                        rate_pps: 30_000.0,
                        offset: ByteSize(0),
                    }),
                },
            ],
            repeat: true,
        });
        let w = spec.check(1 << 20, 4096, "w").unwrap();
        let mut s = WriteStream::new(&w, 42);
        let (mut h, mut n, mut first) = (0u64, 0u64, Vec::new());
        for step in 1..=40u64 {
            s.advance_to(step * 333_333, |p| {
                h = mix64(h, p);
                n += 1;
                if first.len() < 12 {
                    first.push(p);
                }
            });
        }
        assert_eq!(n, 557);
        assert_eq!(h, 0xad7a_d0ae_e44d_69be);
        assert_eq!(
            first,
            [15514, 11861, 13902, 1202, 11803, 6921, 14087, 11243, 1972, 704, 1911, 4623]
        );
        // A sink struct gets the same writes in the same order.
        struct Hash(u64);
        impl WriteSink for Hash {
            fn write(&mut self, p: u64) {
                self.0 = mix64(self.0, p);
            }
        }
        let mut b = WriteStream::new(&w, 42);
        let mut hb = Hash(0);
        for step in 1..=40u64 {
            hb = b.advance_sink(step * 333_333, hb);
        }
        let hb = hb.0;
        assert_eq!(hb, h);
    }

    #[test]
    fn trace_replays_its_writes_in_time_order() {
        let w = Workload::Trace(crate::trace::Trace::new(vec![(30, 5), (10, 1), (20, 2)]));
        let mut s = WriteStream::new(&w, 99);
        let mut v = Vec::new();
        s.advance_to(20, |p| v.push(p));
        assert_eq!(v, vec![1, 2]);
        s.advance_to(1000, |p| v.push(p));
        assert_eq!(v, vec![1, 2, 5]);
        assert_eq!(s.total_writes(), 3);
    }

    #[test]
    fn scan_is_sequential_and_wraps() {
        let w = WorkloadSpec::Scan(ScanSpec {
            wss: Some(ByteSize(10 * 4096)),
            rate_pps: 1000.0,
            offset: ByteSize(4096),
        })
        .check(100, 4096, "w")
        .unwrap();
        let mut v = Vec::new();
        WriteStream::new(&w, 1).advance_to(12_000_000, |p| v.push(p));
        assert_eq!(v, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2]);
    }

    #[test]
    fn phases_switch_on_guest_time() {
        let spec = WorkloadSpec::Phased(PhasedSpec {
            phases: vec![
                PhaseSpec {
                    duration_ms: 10.0,
                    workload: WorkloadSpec::Scan(ScanSpec {
                        wss: Some(ByteSize(MIB)),
                        rate_pps: 1000.0,
                        offset: ByteSize(0),
                    }),
                },
                PhaseSpec {
                    duration_ms: 10.0,
                    workload: WorkloadSpec::Idle(IdleSpec { rate_pps: 0.0 }),
                },
            ],
            repeat: true,
        });
        let w = spec.check(1024, 4096, "w").unwrap();
        let mut s = WriteStream::new(&w, 3);
        let mut v = Vec::new();
        s.advance_to(40_000_000, |p| v.push(p));
        // 10 writes in each active phase, none in the idle ones; the scan restarts each instance.
        assert_eq!(v.len(), 20);
        assert_eq!(&v[..10], &(0..10).collect::<Vec<_>>()[..]);
        assert_eq!(&v[10..], &(0..10).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn zipf_prefers_low_ranks() {
        let w = WorkloadSpec::Zipf(ZipfSpec {
            wss: ByteSize(1000 * 4096),
            rate_pps: 10000.0,
            exponent: 1.0,
            offset: ByteSize(0),
        })
        .check(1000, 4096, "w")
        .unwrap();
        let mut hits = vec![0u32; 1000];
        WriteStream::new(&w, 9).advance_to(10_000_000_000, |p| hits[p as usize] += 1);
        assert!(
            hits[0] > 10 * hits[99].max(1),
            "{} vs {}",
            hits[0],
            hits[99]
        );
        assert!(hits.iter().all(|&h| h < 100_000));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::spec::*;
    use crate::units::ByteSize;
    use proptest::prelude::*;

    /// Values where converting an f64 to an integer can go wrong.
    const EDGES: [f64; 24] = [
        0.0,
        -0.0,
        -0.4,
        -0.5,
        -1.0,
        -1.5,
        0.5,
        0.499_999_999_999_999_94,
        1.0,
        1.5,
        2.5,
        1.000_000_1,
        4.5e15,
        4.503_599_627_370_495_5e15,
        9.007_199_254_740_993e15,
        9.223_372_036_854_775e18,
        TWO_POW_63,
        1.8e19,
        1.9e19,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::MAX,
        f64::MIN_POSITIVE,
    ];

    #[test]
    fn ceil_and_round_match_libm_at_the_edges() {
        for x in EDGES {
            assert_eq!(ceil_u64(x), x.ceil() as u64, "ceil {x}");
            assert_eq!(round_u64(x), x.round() as u64, "round {x}");
        }
    }

    proptest! {
        #[test]
        fn ceil_and_round_match_libm(bits in any::<u64>(), x in 0.0f64..2e19, y in 0.0f64..1e6) {
            let f = f64::from_bits(bits);
            for v in [f, x, y, y.floor() + 0.5] {
                prop_assert_eq!(ceil_u64(v), v.ceil() as u64);
                prop_assert_eq!(round_u64(v), v.round() as u64);
            }
        }
    }

    #[test]
    fn conversions_match_as_at_the_edges() {
        let edges = [
            0u64,
            1,
            (1 << 53) + 1,
            (1 << 63) - 1,
            1 << 63,
            (1 << 63) + 1,
            u64::MAX,
        ];
        for x in edges {
            assert_eq!(u64_to_f64(x).to_bits(), (x as f64).to_bits(), "{x}");
        }
        for x in EDGES {
            assert_eq!(f64_to_u64(x), x as u64, "{x}");
        }
    }

    proptest! {
        #[test]
        fn conversions_match_as(x in any::<u64>(), bits in any::<u64>(), small in 0.0f64..1e19) {
            prop_assert_eq!(u64_to_f64(x).to_bits(), (x as f64).to_bits());
            let f = f64::from_bits(bits);
            prop_assert_eq!(f64_to_u64(f), f as u64);
            prop_assert_eq!(f64_to_u64(small), small as u64);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Uniform writes at rate D over W pages touch W(1 − e^(−D·t/W)) distinct pages by time t
        /// (exactly: W(1 − (1 − 1/W)^n) for n writes), within sampling error.
        #[test]
        fn uniform_distinct_pages_follow_the_saturation_curve(
            w in 50u64..20_000, rate in 100.0f64..200_000.0, ms in 1u64..3_000, seed in any::<u64>()
        ) {
            let spec = WorkloadSpec::Uniform(UniformSpec { wss: ByteSize(w * 4096), rate_pps: rate, offset: ByteSize(4096) });
            let wl = spec.check(w + 1, 4096, "workload").unwrap();
            let mut seen = vec![false; (w + 1) as usize];
            let mut distinct = 0u64;
            let mut outside = 0u64;
            let t_ns = ms * 1_000_000;
            WriteStream::new(&wl, seed).advance_to(t_ns, |p| {
                if p < 1 || p > w {
                    outside += 1;
                } else if !std::mem::replace(&mut seen[p as usize], true) {
                    distinct += 1;
                }
            });
            prop_assert_eq!(outside, 0);
            let n = writes_by(rate, t_ns) as f64;
            let wf = w as f64;
            let q1 = (1.0 - 1.0 / wf).powf(n);
            let q2 = (1.0 - 2.0 / wf).powf(n);
            let mean = wf * (1.0 - q1);
            let var = (wf * (wf - 1.0) * q2 + wf * q1 - wf * wf * q1 * q1).max(0.0);
            // The textbook form the simulator's fluid model uses agrees with the exact mean.
            let fluid = wf * (1.0 - (-(rate * t_ns as f64 / 1e9) / wf).exp());
            prop_assert!((fluid - mean).abs() <= 1.0 + 1e-3 * mean, "fluid {fluid} vs exact {mean}");
            let tol = 6.0 * var.sqrt() + 1.0;
            prop_assert!((distinct as f64 - mean).abs() <= tol, "distinct {distinct}, expected {mean:.1} ± {tol:.1} (n = {n})");
        }
    }
}

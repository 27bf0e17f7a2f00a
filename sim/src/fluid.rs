//! Fluid mode: the same iterations, syncs and policies as the exact engine, but each workload
//! class advances its *expected* number of distinct dirty pages analytically, so a migration
//! costs O(iterations + policy checks) instead of O(pages + writes).
//!
//! Per class, with n writes since the last sync over a region of W pages:
//! * uniform: W(1 − e^(−n/W));
//! * Zipf: Σ over rank buckets of n_b(1 − e^(−n·p_b)), p_b the bucket's per-page probability;
//! * sequential scan: min(W, n);
//! * `analytic` mode (the textbook geometric model): n, ignoring the working set (capped at
//!   memory), so round i sends M·λ^i.
//!
//! Pages of the send set are assumed spread over the classes in proportion, which is exact at
//! iteration ends (what round-by-round policies see) and an approximation for mid-round syncs.
//! Post-copy and XBZRLE are not modelled here (the scenario check rejects them).

use crate::engine::Nanos;
use crate::metrics::{Downtime, RoundRecord, RunReport, RunResult, Status};
use crate::migration::transfer_ns;
use crate::policy::{Decision, Observation, RoundSummary, StopReason, Trigger};
use crate::scenario::Checked;
use workloads::spec::{Class, Pattern, Workload};

const MAX_ROUNDS: u32 = 100_000;
const MIN_SYNC_NS: f64 = 1_000.0;

/// How a class turns writes into distinct pages.
#[derive(Clone, Debug)]
enum Curve {
    Uniform,
    Sequential,
    /// Rank buckets: (pages in bucket, per-page probability).
    Buckets(Vec<(f64, f64)>),
    Linear,
}

#[derive(Clone, Debug)]
struct FClass {
    first: f64,
    pages: f64,
    rate: f64,
    curve: Curve,
}

impl FClass {
    fn new(c: &Class, analytic: bool) -> Self {
        let curve = if analytic {
            Curve::Linear
        } else {
            match c.pattern {
                Pattern::Uniform => Curve::Uniform,
                Pattern::Sequential => Curve::Sequential,
                Pattern::Zipf { exponent } => Curve::Buckets(zipf_buckets(c.pages, exponent)),
            }
        };
        FClass {
            first: c.first_page as f64,
            pages: c.pages as f64,
            rate: c.rate_pps,
            curve,
        }
    }

    /// Expected distinct pages after `n` writes.
    fn distinct(&self, n: f64) -> f64 {
        if n <= 0.0 {
            return 0.0;
        }
        match &self.curve {
            Curve::Uniform => self.pages * -(-n / self.pages).exp_m1(),
            Curve::Sequential => n.min(self.pages),
            Curve::Linear => n,
            Curve::Buckets(b) => b.iter().map(|&(cnt, p)| cnt * -(-n * p).exp_m1()).sum(),
        }
    }
}

/// Zipf rank buckets (exact for the first 256 ranks, then geometric with ratio 1.05).
fn zipf_buckets(pages: u64, s: f64) -> Vec<(f64, f64)> {
    let mut bounds = Vec::new();
    let mut lo = 1u64;
    while lo <= pages {
        let hi = if lo < 256 {
            lo
        } else {
            ((lo as f64 * 1.05) as u64).max(lo + 1).min(pages)
        };
        bounds.push((lo, hi.min(pages)));
        lo = hi.min(pages) + 1;
    }
    let weight = |lo: u64, hi: u64| -> f64 {
        if hi - lo < 64 {
            (lo..=hi).map(|r| (r as f64).powf(-s)).sum()
        } else if (s - 1.0).abs() < 1e-12 {
            ((hi as f64 + 0.5) / (lo as f64 - 0.5)).ln()
        } else {
            ((hi as f64 + 0.5).powf(1.0 - s) - (lo as f64 - 0.5).powf(1.0 - s)) / (1.0 - s)
        }
    };
    let ws: Vec<f64> = bounds.iter().map(|&(l, h)| weight(l, h)).collect();
    let total: f64 = ws.iter().sum();
    bounds
        .iter()
        .zip(ws)
        .map(|(&(l, h), w)| ((h - l + 1) as f64, w / total / (h - l + 1) as f64))
        .collect()
}

struct Fluid<'a> {
    ck: &'a Checked,
    classes: Vec<Vec<FClass>>,
    phases: Vec<Nanos>,
    repeat: bool,
    mem: f64,
    page_wire: f64,
    zero_wire: f64,
    link_bps: f64,
    one_way: Nanos,
    // send set: pages and bytes left in this iteration
    send_pages: f64,
    send_bytes: f64,
    /// Writes per class since the last sync (current phase's classes).
    writes: Vec<f64>,
    dirty_base: f64,
    throttle: f64,
    guest_ns: f64,
    guest_writes: f64,
}

impl Fluid<'_> {
    fn phase_at(&self, guest: f64) -> (usize, f64) {
        if self.phases.len() <= 1 {
            return (0, f64::INFINITY);
        }
        let period: f64 = self.phases.iter().map(|&d| d as f64).sum();
        let mut g = guest;
        if self.repeat {
            g %= period;
        } else if g >= period - *self.phases.last().unwrap_or(&0) as f64 {
            return (self.phases.len() - 1, f64::INFINITY);
        }
        let mut acc = 0.0;
        for (i, &d) in self.phases.iter().enumerate() {
            if g < acc + d as f64 {
                return (i, acc + d as f64 - g);
            }
            acc += d as f64;
        }
        (self.phases.len() - 1, f64::INFINITY)
    }

    fn dirty(&self) -> f64 {
        let (ph, _) = self.phase_at(self.guest_ns);
        let d: f64 = self.classes[ph]
            .iter()
            .zip(&self.writes)
            .map(|(c, &n)| c.distinct(n))
            .sum();
        (self.dirty_base + d).min(self.mem)
    }

    /// Let `wall_dt` ns of wall time pass for the guest.
    fn run_guest(&mut self, wall_dt: f64) {
        let mut g = wall_dt * (1.0 - self.throttle);
        while g > 0.0 {
            let (ph, left) = self.phase_at(self.guest_ns);
            let step = g.min(left.max(1.0));
            for (c, n) in self.classes[ph].iter().zip(self.writes.iter_mut()) {
                *n += c.rate * step / 1e9;
                self.guest_writes += c.rate * step / 1e9;
            }
            self.guest_ns += step;
            g -= step;
            let (ph2, _) = self.phase_at(self.guest_ns);
            if ph2 != ph {
                // Phase change: freeze what the old phase dirtied; the new phase starts afresh.
                let d: f64 = self.classes[ph]
                    .iter()
                    .zip(&self.writes)
                    .map(|(c, &n)| c.distinct(n))
                    .sum();
                self.dirty_base += d;
                self.writes = vec![0.0; self.classes[ph2].len()];
            }
        }
    }

    fn sync_cost(&self, dirty: f64) -> f64 {
        let d = &self.ck.scenario.dirty_log;
        let gib = self.ck.mem_bytes() as f64 / (1u64 << 30) as f64;
        (d.sync_fixed_us * 1e3 + d.sync_us_per_gib * 1e3 * gib + d.sync_ns_per_dirty_page * dirty)
            .round()
    }
}

/// Expected zero pages written before the round-0 cursor reaches them, for zero fraction `z`,
/// round-0 duration `t0_ns`, with the cursor moving through memory at a steady pace (page x is
/// sent at x·t0/mem). Integrated numerically over each class's region.
fn zero_pages_lost(classes: &[FClass], z: f64, mem: f64, t0_ns: f64) -> f64 {
    const STEPS: usize = 256;
    let mut lost = 0.0;
    for c in classes {
        if c.rate <= 0.0 || c.pages <= 0.0 {
            continue;
        }
        let reach = |x: f64| x * t0_ns / mem / 1e9; // seconds until the cursor reaches page x
        match &c.curve {
            Curve::Buckets(b) => {
                let mut rank0 = 0.0;
                for &(n, p) in b {
                    let mid = c.first + rank0 + n / 2.0;
                    lost += n * -(-c.rate * p * reach(mid)).exp_m1();
                    rank0 += n;
                }
            }
            curve => {
                let dx = c.pages / STEPS as f64;
                for i in 0..STEPS {
                    let x = c.first + (i as f64 + 0.5) * dx;
                    let t = reach(x);
                    let p = match curve {
                        Curve::Sequential => ((c.rate * t >= x - c.first) as u8) as f64,
                        Curve::Linear => (c.rate * t / c.pages).min(1.0),
                        _ => -(-c.rate * t / c.pages).exp_m1(),
                    };
                    lost += p * dx;
                }
            }
        }
    }
    (z * lost).clamp(0.0, z * mem)
}

/// Simulate one live migration in fluid (or, with `analytic`, geometric) mode.
pub fn simulate_fluid(ck: &Checked, replicate: u32, analytic: bool) -> RunResult {
    let sc = &ck.scenario;
    let (phases, repeat, classes): (Vec<Nanos>, bool, Vec<Vec<FClass>>) = match &ck.workload {
        Workload::Classes(c) => (
            vec![u64::MAX],
            false,
            vec![c.iter().map(|c| FClass::new(c, analytic)).collect()],
        ),
        Workload::Phased { phases, repeat } => (
            phases.iter().map(|p| p.0).collect(),
            *repeat,
            phases
                .iter()
                .map(|p| p.1.iter().map(|c| FClass::new(c, analytic)).collect())
                .collect(),
        ),
        // A recorded trace has no expected-count model: fluid mode sees no writes (the CLI
        // replays traces in exact mode only).
        Workload::Trace(_) => (vec![u64::MAX], false, vec![Vec::new()]),
    };
    let mut policy = sc.policy.build(sc.vm.vcpus);
    let mut link_bps = sc.link.bandwidth.0;
    let mut page_wire = (ck.page_size + sc.link.page_header_bytes) as f64;
    if let Some(m) = &sc.transfer.multifd {
        link_bps = link_bps.min(m.channels as f64 * m.channel_bandwidth.0);
        page_wire += (m.packet_header_bytes * ck.page_size).div_ceil(m.packet.0) as f64;
    }
    let precopy_bps = policy
        .max_bandwidth_bps()
        .map_or(link_bps, |m| m.min(link_bps));
    let mem = ck.mem_pages as f64;
    let n0 = classes[0].len();
    let mut f = Fluid {
        ck,
        classes,
        phases,
        repeat,
        mem,
        page_wire,
        zero_wire: sc.link.zero_page_bytes as f64,
        link_bps,
        one_way: (sc.link.rtt_ms * 1e6 / 2.0).round() as Nanos,
        send_pages: mem,
        send_bytes: 0.0,
        writes: vec![0.0; n0],
        dirty_base: 0.0,
        throttle: 0.0,
        guest_ns: 0.0,
        guest_writes: 0.0,
    };
    // Round 0: zero pages travel as markers, less those the guest writes before they are sent.
    let z = sc.vm.zero_page_fraction;
    let mut zero0 = z * mem;
    let mut t0 = (mem - zero0) * page_wire * 8e9 / precopy_bps;
    for _ in 0..3 {
        zero0 = z * mem - zero_pages_lost(&f.classes[0], z, mem, t0);
        t0 = ((mem - zero0) * page_wire + zero0 * f.zero_wire) * 8e9 / precopy_bps;
    }
    f.send_bytes = (mem - zero0) * page_wire + zero0 * f.zero_wire;
    let zero_sent = zero0;

    let setup = 2 * f.one_way;
    let max_time = (sc.limits.max_time_s * 1e9).round();
    let mut t = setup as f64;
    f.run_guest(t);
    let tick = policy.tick_ns().map(|x| x as f64);
    let mut next_tick = tick.map(|p| t + p);
    let mut ready = t;
    let mut round = 0u32;
    let mut round_start = t;
    let (mut round_pages, mut round_bytes) = (0.0f64, 0.0f64);
    let round_writes0 = 0.0;
    let mut round_writes_start = round_writes0;
    let (mut total_pages, mut total_bytes) = (0.0f64, 0.0f64);
    let mut last_round: Option<RoundSummary> = None;
    let mut last_bw = precopy_bps;
    let mut rounds: Vec<RoundRecord> = Vec::new();
    let mut max_throttle = 0.0f64;
    let wire_avg = |f: &Fluid| {
        if f.send_pages > 0.0 {
            f.send_bytes / f.send_pages
        } else {
            f.page_wire
        }
    };

    let observe = |f: &Fluid,
                   trigger,
                   t: f64,
                   round,
                   rp: f64,
                   rb: f64,
                   tp: f64,
                   tb: f64,
                   rs: f64,
                   lr,
                   lbw| Observation {
        trigger,
        elapsed_ns: t as u64,
        round,
        mem_bytes: ck.mem_bytes(),
        page_size: ck.page_size,
        page_wire_bytes: f.page_wire as u64,
        total_bytes_sent: tb as u64,
        total_pages_sent: tp as u64,
        round_bytes_sent: rb as u64,
        round_pages_sent: rp as u64,
        round_elapsed_ns: (t - rs).max(0.0) as u64,
        remaining_pages: f.send_pages.round() as u64,
        dirty_pages: f.dirty().round() as u64,
        last_round: lr,
        bandwidth_bps: lbw,
        dirty_rate_pps: 0.0,
        throttle_pct: (f.throttle * 100.0).round() as u8,
        vcpus: sc.vm.vcpus,
    };

    let mut decision = policy.decide(&observe(
        &f,
        Trigger::Start,
        t,
        0,
        0.0,
        0.0,
        0.0,
        0.0,
        round_start,
        None,
        last_bw,
    ));
    let mut pending_trigger: Option<Trigger> = None;
    let outcome: (Status, String, f64, bool) = loop {
        // Carry out the decision in hand.
        let sync_now;
        match std::mem::replace(&mut decision, Decision::Continue) {
            Decision::Stop(r, why) => {
                break (
                    if r == StopReason::Converged {
                        Status::Converged
                    } else {
                        Status::Forced
                    },
                    why,
                    t,
                    true,
                )
            }
            Decision::Cancel(why) => break (Status::Cancelled, why, t, false),
            Decision::PostCopy(why) => break (Status::Converged, why, t, true),
            Decision::Throttle(p) => {
                f.throttle = p.min(99) as f64 / 100.0;
                sync_now = pending_trigger == Some(Trigger::RoundEnd);
            }
            Decision::LimitDirtyRate(pps) => {
                let nominal = ck.workload.nominal_rate_pps();
                f.throttle = if nominal > pps && nominal > 0.0 {
                    (1.0 - pps / nominal).min(0.9999)
                } else {
                    0.0
                };
                sync_now = pending_trigger == Some(Trigger::RoundEnd);
            }
            Decision::Continue => sync_now = pending_trigger == Some(Trigger::RoundEnd),
            Decision::Sync => sync_now = true,
        }
        max_throttle = max_throttle.max(f.throttle);
        if sync_now && pending_trigger != Some(Trigger::AfterSync) {
            if round + 1 >= MAX_ROUNDS {
                break (
                    Status::Timeout,
                    format!("iteration cap of {MAX_ROUNDS} rounds reached"),
                    t,
                    false,
                );
            }
            // Close the round and merge the expected dirty set into the send set.
            let dirty = f.dirty();
            let dur = t - round_start;
            let bw = if dur > 0.0 {
                round_bytes * 8e9 / dur
            } else {
                last_bw
            };
            let union = f.send_pages + dirty - overlap(&f);
            rounds.push(RoundRecord {
                round,
                start_ns: round_start as u64,
                duration_ns: dur as u64,
                pages_sent: round_pages.round() as u64,
                zero_pages_sent: if round == 0 {
                    zero_sent.round() as u64
                } else {
                    0
                },
                bytes_sent: round_bytes.round() as u64,
                pages_dirtied: dirty.round() as u64,
                bandwidth_bps: bw,
                est_downtime_ns: transfer_ns(
                    (union * f.page_wire) as u64,
                    if bw > 0.0 { bw } else { precopy_bps },
                ),
                throttle_pct: (f.throttle * 100.0).round() as u8,
                guest_writes: (f.guest_writes - round_writes_start).round() as u64,
            });
            round_writes_start = f.guest_writes;
            last_round = Some(RoundSummary {
                round,
                duration_ns: dur as u64,
                pages_sent: round_pages as u64,
                bytes_sent: round_bytes as u64,
                pages_dirtied: dirty as u64,
            });
            if dur > 0.0 && round_bytes > 0.0 {
                last_bw = bw;
            }
            let wa = wire_avg(&f);
            let rem_full = f.send_pages;
            f.send_bytes = f.send_bytes.min(rem_full * wa) + (dirty - overlap(&f)) * f.page_wire;
            f.send_pages = union;
            f.writes.iter_mut().for_each(|n| *n = 0.0);
            f.dirty_base = 0.0;
            round += 1;
            round_start = t;
            round_pages = 0.0;
            round_bytes = 0.0;
            let cost = f.sync_cost(dirty).max(MIN_SYNC_NS);
            ready = ready.max(t + cost);
            let at = t + cost;
            f.run_guest(at - t);
            t = at;
            // The check clock restarts after a sync, as in the exact engine.
            next_tick = tick.map(|p| t + p);
            pending_trigger = Some(Trigger::AfterSync);
            decision = policy.decide(&observe(
                &f,
                Trigger::AfterSync,
                t,
                round,
                0.0,
                0.0,
                total_pages,
                total_bytes,
                round_start,
                last_round,
                last_bw,
            ));
            continue;
        }
        pending_trigger = None;
        // Advance to the next event: round end, tick or the time cap.
        let start = t.max(ready);
        let end_round = start + f.send_bytes * 8e9 / precopy_bps;
        let mut next = end_round.min(max_time);
        if let Some(nt) = next_tick {
            next = next.min(nt);
        }
        if next < t {
            next = t;
        }
        let sending = (next - start).max(0.0);
        let bytes = (sending * precopy_bps / 8e9).min(f.send_bytes);
        let wa = wire_avg(&f);
        let pages = if end_round <= next {
            f.send_pages
        } else {
            bytes / wa
        };
        f.send_pages = (f.send_pages - pages).max(0.0);
        f.send_bytes = (f.send_bytes - bytes).max(0.0);
        round_pages += pages;
        round_bytes += bytes;
        total_pages += pages;
        total_bytes += bytes;
        f.run_guest(next - t);
        t = next;
        if t >= max_time {
            break (
                Status::Timeout,
                format!("simulated-time cap of {} s reached", sc.limits.max_time_s),
                t,
                false,
            );
        }
        let trigger = if end_round <= t {
            f.send_pages = 0.0;
            f.send_bytes = 0.0;
            Some(Trigger::RoundEnd)
        } else {
            match (next_tick, tick) {
                (Some(nt), Some(p)) if t >= nt => {
                    next_tick = Some(nt + p);
                    Some(Trigger::Tick)
                }
                _ => None,
            }
        };
        if let Some(trig) = trigger {
            pending_trigger = Some(trig);
            decision = policy.decide(&observe(
                &f,
                trig,
                t,
                round,
                round_pages,
                round_bytes,
                total_pages,
                total_bytes,
                round_start,
                last_round,
                last_bw,
            ));
        }
    };
    let (status, reason, at, moved) = outcome;
    let mut downtime = None;
    let mut total = at;
    let (mut final_pages, mut final_bytes) = (0.0, 0.0);
    if moved {
        let sw = &sc.switchover;
        let dirty = f.dirty();
        if round_pages > 0.0 {
            rounds.push(RoundRecord {
                round,
                start_ns: round_start as u64,
                duration_ns: (at - round_start) as u64,
                pages_sent: round_pages.round() as u64,
                zero_pages_sent: if round == 0 {
                    zero_sent.round() as u64
                } else {
                    0
                },
                bytes_sent: round_bytes.round() as u64,
                pages_dirtied: dirty.round() as u64,
                bandwidth_bps: round_bytes * 8e9 / (at - round_start).max(1.0),
                est_downtime_ns: 0,
                throttle_pct: (f.throttle * 100.0).round() as u8,
                guest_writes: (f.guest_writes - round_writes_start).round() as u64,
            });
        }
        final_pages = f.send_pages + dirty - overlap(&f);
        final_bytes = f.send_bytes + (dirty - overlap(&f)) * f.page_wire;
        let pause_ns = (sw.pause_ms * 1e6).round() as Nanos;
        let sync_ns = f.sync_cost(dirty).round() as Nanos;
        let wait = (ready - (at + pause_ns as f64 + sync_ns as f64)).max(0.0) as Nanos;
        let d = Downtime {
            pause_ns,
            final_sync_ns: sync_ns,
            transfer_ns: wait + transfer_ns(final_bytes.round() as u64, f.link_bps) + f.one_way,
            state_ns: transfer_ns(sw.state.0, f.link_bps),
            resume_ns: (sw.resume_ms * 1e6).round() as Nanos,
        };
        total = at + d.total_ns() as f64;
        downtime = Some(d);
    }
    let pages_sent = (total_pages + final_pages).round() as u64;
    let report = RunReport {
        backend: if analytic {
            "analytic".into()
        } else {
            "fluid".into()
        },
        scenario: sc.name.clone(),
        policy: sc.policy.label(),
        workload: sc.workload.kind_name().into(),
        seed: sc.seed,
        replicate,
        status,
        reason,
        mem_bytes: ck.mem_bytes(),
        link_bps: sc.link.bandwidth.0,
        total_time_ns: total.round() as u64,
        downtime,
        rounds: rounds.len() as u32,
        bytes_sent: (total_bytes + final_bytes).round() as u64,
        pages_sent,
        zero_pages_sent: zero_sent.round() as u64,
        pages_resent: pages_sent.saturating_sub(ck.mem_pages),
        final_pages: final_pages.round() as u64,
        final_bytes: final_bytes.round() as u64,
        guest_writes: f.guest_writes.round() as u64,
        max_throttle_pct: (max_throttle * 100.0).round() as u8,
        kind: "live".into(),
        postcopy: None,
        xbzrle_hits: 0,
    };
    RunResult { report, rounds }
}

/// Expected |send ∩ dirty|: dirty pages of each class are spread over its region, the send set
/// over all pages that can be in it.
fn overlap(f: &Fluid) -> f64 {
    if f.send_pages <= 0.0 {
        return 0.0;
    }
    let (ph, _) = f.phase_at(f.guest_ns);
    let cover: f64 = f.classes[ph]
        .iter()
        .map(|c| c.pages)
        .sum::<f64>()
        .max(1.0)
        .min(f.mem);
    let share = (f.send_pages / cover).min(1.0);
    f.dirty() * share
}

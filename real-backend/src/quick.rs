//! Quick migration: pause, save the whole machine (state and every non-zero page) to a file,
//! restore it in the destination process, resume. Blackout is measured as for live migration.
//!
//! Image file: `magic u64 | state_len u64 | state | { word u64 | page[4096] }* | u64::MAX`.

use crate::dest::DestError;
use crate::feeder::{Feeder, VmmDirty};
use crate::guest::{ctrl, GuestMode, CTRL_OFF, PAGE};
use crate::source::{build_source, connect_dest, digest, expect, hello, spawn_reader, SourceError};
use crate::transport::{self, kind, mono_ns, put_u64s, write_frame, INDEX_MASK, SYS_FLAG};
use crate::vstate::Vm;
use crate::{DestProgress, RealError, RealOptions, RealRun};
use sim::metrics::{Downtime, RunReport, RunResult, Status};
use sim::migration::run_seed;
use sim::Checked;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const MAGIC: u64 = 0x4d49_4753_5155_4b31; // "MIGSQUK1"

#[derive(Debug, thiserror::Error)]
pub enum QuickError {
    #[error("image file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("quick migration failed: {0}")]
    Failed(String),
}

/// Write the image of a paused VM. Returns (bytes, non-zero pages, zero pages).
///
/// # Safety
/// Every vCPU of `vm` must be paused.
unsafe fn write_image(path: &Path, vm: &Vm, state: &[u8]) -> std::io::Result<(u64, u64, u64)> {
    let f = std::fs::File::create(path)?;
    let mut w = BufWriter::with_capacity(4 << 20, f);
    w.write_all(&MAGIC.to_le_bytes())?;
    w.write_all(&(state.len() as u64).to_le_bytes())?;
    w.write_all(state)?;
    let mut bytes = 16 + state.len() as u64 + 8;
    let (mut pages, mut zeros) = (0, 0);
    for (region, flag) in [(&vm.ram, 0), (&vm.sys, SYS_FLAG)] {
        // SAFETY: forwarded from the caller (vCPUs paused).
        let mem = unsafe { region.as_slice_paused() };
        for (i, page) in mem.chunks_exact(PAGE as usize).enumerate() {
            if crate::vstate::memory::is_zero(page) {
                zeros += 1;
                continue;
            }
            w.write_all(&(i as u64 | flag).to_le_bytes())?;
            w.write_all(page)?;
            bytes += 8 + PAGE;
            pages += 1;
        }
    }
    w.write_all(&u64::MAX.to_le_bytes())?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok((bytes, pages, zeros))
}

/// Read an image into `vm` (whose memory starts zeroed); returns the state blob.
pub(crate) fn read_image(path: &str, vm: &Vm) -> Result<Vec<u8>, DestError> {
    let err = |e: std::io::Error| DestError::Restore(format!("{path}: {e}"));
    let f = std::fs::File::open(path).map_err(err)?;
    let mut r = BufReader::with_capacity(4 << 20, f);
    let mut w8 = [0u8; 8];
    r.read_exact(&mut w8).map_err(err)?;
    if u64::from_le_bytes(w8) != MAGIC {
        return Err(DestError::Restore(format!("{path}: not a migsim image")));
    }
    r.read_exact(&mut w8).map_err(err)?;
    let mut state = vec![0u8; u64::from_le_bytes(w8) as usize];
    r.read_exact(&mut state).map_err(err)?;
    let mut page = vec![0u8; PAGE as usize];
    loop {
        r.read_exact(&mut w8).map_err(err)?;
        let word = u64::from_le_bytes(w8);
        if word == u64::MAX {
            break;
        }
        r.read_exact(&mut page).map_err(err)?;
        let region = if word & SYS_FLAG != 0 {
            &vm.sys
        } else {
            &vm.ram
        };
        let idx = word & INDEX_MASK;
        if idx >= region.pages() {
            return Err(DestError::Restore(format!(
                "{path}: page {word:#x} out of range"
            )));
        }
        region.write(idx * PAGE, &page);
    }
    Ok(state)
}

/// Quick-migrate `ck`'s guest through an image file in `dir`.
pub fn quick_migrate(ck: &Checked, opts: &RealOptions, dir: &Path) -> Result<RealRun, RealError> {
    let sc = &ck.scenario;
    let (vm, v0, others, clock) = build_source(ck, opts, false)?;
    let cpu = v0.spawn().map_err(SourceError::from)?;
    crate::source::resume_vcpu(&vm, &cpu).map_err(SourceError::from)?;
    let t_start = mono_ns();
    let feeder = (opts.mode == GuestMode::Workload).then(|| {
        Feeder::start(
            vm.clone(),
            Arc::new(VmmDirty::new(vm.layout.sys_pages())),
            &ck.workload,
            run_seed(sc.seed, opts.replicate),
            clock,
            t_start,
            false,
        )
    });
    let (mut sock, dest) = connect_dest(&opts.dest)?;
    let rx = spawn_reader(&sock).map_err(SourceError::Launch)?;
    let fail = |why: String| -> RealError { QuickError::Failed(why).into() };
    write_frame(
        &mut sock,
        kind::HELLO,
        &hello(ck, opts, 1 + others.len() as u64, 0),
    )
    .map_err(|e| fail(e.to_string()))?;
    expect(&rx, kind::READY, Duration::from_secs(30)).map_err(fail)?;
    std::thread::sleep(Duration::from_millis(opts.warmup_ms));
    if let Some(f) = feeder {
        f.stop();
    }
    let t0 = mono_ns();
    crate::source::pause_vcpu(&vm, &cpu, None).map_err(SourceError::from)?;
    let t1 = mono_ns();
    let guest_writes = vm.sys.read_u64(CTRL_OFF + ctrl::CONSUMED);
    let mut vs = vec![cpu
        .vcpu()
        .and_then(|v| v.save())
        .map_err(SourceError::from)?];
    for v in &others {
        vs.push(v.save().map_err(SourceError::from)?);
    }
    let blob = crate::state::encode(&vm.save_state().map_err(SourceError::from)?, &vs);
    let t2 = mono_ns();
    let path = dir.join(format!("migsim-quick-{}.img", std::process::id()));
    // SAFETY: every vCPU is paused (v0 stopped above; the others never ran).
    let (bytes, pages, zeros) =
        unsafe { write_image(&path, &vm, &blob) }.map_err(|source| QuickError::Io {
            path: path.display().to_string(),
            source,
        })?;
    let t3 = mono_ns();
    write_frame(
        &mut sock,
        kind::RESTORE_FILE,
        path.display().to_string().as_bytes(),
    )
    .map_err(|e| fail(e.to_string()))?;
    if opts.verify {
        // SAFETY: as above.
        let dg = unsafe { digest(&vm) };
        write_frame(&mut sock, kind::DIGEST, &put_u64s(&dg)).map_err(|e| fail(e.to_string()))?;
    }
    let p = expect(&rx, kind::RESUMED, Duration::from_secs(120)).map_err(fail)?;
    let _ = std::fs::remove_file(&path);
    let (v, _) = transport::get_u64s(&p, 7).map_err(|e| fail(e.to_string()))?;
    let (d1, d2, d3, d4) = (v[0], v[1], v[2], v[3]);
    drop(cpu);
    drop(others);
    let fin = expect(
        &rx,
        kind::FINAL,
        Duration::from_millis(opts.run_after_ms + 30_000),
    )
    .map_err(fail)?;
    let (f, msg) = transport::get_u64s(&fin, 3).map_err(|e| fail(e.to_string()))?;
    dest.reap(Duration::from_secs(5));
    let check = match f[2] {
        1 => Some(Ok(())),
        2 => Some(Err(String::from_utf8_lossy(msg).into_owned())),
        _ => None,
    };
    if let Some(Err(e)) = &check {
        return Err(
            SourceError::Integrity(format!("consistency check on the destination: {e}")).into(),
        );
    }
    let downtime = Downtime {
        pause_ns: t1 - t0,
        final_sync_ns: 0,
        transfer_ns: (t3 - t2) + d1.saturating_sub(t3),
        state_ns: (t2 - t1) + d2.saturating_sub(d1),
        resume_ns: d4.saturating_sub(d3),
    };
    let report = RunReport {
        backend: "kvm".into(),
        scenario: sc.name.clone(),
        policy: sc.policy.label(),
        workload: sc.workload.kind_name().into(),
        seed: sc.seed,
        replicate: opts.replicate,
        status: Status::Forced,
        reason: "quick migration (save to file, restore)".into(),
        mem_bytes: ck.mem_bytes(),
        link_bps: sc.link.bandwidth.0,
        total_time_ns: d4 - t_start - (d3 - d2),
        downtime: Some(downtime),
        rounds: 0,
        bytes_sent: bytes,
        pages_sent: pages + zeros,
        zero_pages_sent: zeros,
        pages_resent: 0,
        final_pages: pages + zeros,
        final_bytes: bytes,
        guest_writes,
        max_throttle_pct: 0,
        kind: "quick".into(),
        postcopy: None,
        xbzrle_hits: 0,
    };
    Ok(RealRun {
        result: RunResult {
            report,
            rounds: Vec::new(),
        },
        verify_ns: d3 - d2,
        verified: opts.verify,
        achieved_pps: guest_writes as f64 * 1e9 / (t0 - t_start).max(1) as f64,
        target_pps: ck.workload.nominal_rate_pps(),
        dest: Some(DestProgress {
            heartbeat_at_resume: v[5],
            heartbeat_after: f[0],
            writes_at_resume: v[6],
            writes_after: f[1],
            check,
        }),
        source_after_failure: None,
        trace: Vec::new(),
        harvests: Vec::new(),
        writes: Vec::new(),
        guest_pages: vm.layout.ram_pages() + vm.layout.sys_pages(),
    })
}

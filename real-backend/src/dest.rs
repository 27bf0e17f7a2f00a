//! The destination VMM: builds an empty VM of the announced shape, writes incoming pages into
//! it, loads the machine state, checks the memory digest, resumes the guest, and reports.

use crate::guest::{ctrl, GuestMode, Layout, CTRL_OFF, PAGE};
use crate::source::check_ram;
use crate::state::StateError;
use crate::transport::{
    self, for_each_page, kind, mono_ns, put_u64s, read_frame, write_frame, TransportError,
    INDEX_MASK, SYS_FLAG,
};
use crate::vstate::{Vcpu, VcpuError, VcpuThread, Vm, VmError};
use std::io::BufReader;
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DestError {
    #[error("cannot connect to the source: {0}")]
    Connect(std::io::Error),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    #[error("bad machine state: {0}")]
    State(#[from] StateError),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("memory digest mismatch: {0}")]
    Digest(String),
    #[error("the source abandoned the migration")]
    Aborted,
    #[error("quick restore: {0}")]
    Restore(String),
}

#[derive(Clone, Debug, Default)]
pub struct DestOptions {}

/// What the destination did.
#[derive(Clone, Debug, Default)]
pub struct DestReport {
    pub heartbeat_at_resume: u64,
    pub heartbeat_after: u64,
    pub check: Option<Result<(), String>>,
}

pub(crate) struct Hello {
    pub ram_bytes: u64,
    pub vcpus: u64,
    pub mode: GuestMode,
    pub verify: bool,
    pub run_after_ms: u64,
    pub one_way_ns: u64,
    pub realtime: bool,
    /// The scenario's workload and the run's seed (to carry the workload on here).
    pub workload: Option<(workloads::Workload, u64)>,
}

fn parse_hello(p: &[u8]) -> Result<Hello, DestError> {
    let (v, rest) = transport::get_u64s(p, 8)?;
    let workload = std::str::from_utf8(rest)
        .ok()
        .and_then(|t| sim::Scenario::from_toml_str(t).ok())
        .and_then(|sc| sc.check().ok())
        .map(|ck| {
            let seed = sim::migration::run_seed(ck.scenario.seed, v[7] as u32);
            (ck.workload, seed)
        });
    Ok(Hello {
        ram_bytes: v[0],
        vcpus: v[1],
        mode: GuestMode::from_u8(v[2] as u8)
            .ok_or_else(|| DestError::Protocol(format!("unknown guest mode {}", v[2])))?,
        verify: v[3] != 0,
        run_after_ms: v[4],
        one_way_ns: v[5],
        realtime: v[6] != 0,
        workload,
    })
}

/// How long the resumed vCPU may keep real-time priority without showing progress.
const RT_GRACE_NS: u64 = 20_000_000;

/// Reply to the source after the link's one-way delay.
fn reply(w: &mut TcpStream, one_way_ns: u64, k: u8, p: &[u8]) -> Result<(), DestError> {
    if one_way_ns > 0 {
        transport::sleep_until(mono_ns() + one_way_ns);
    }
    write_frame(w, k, p)?;
    Ok(())
}

/// Serve one incoming migration on `stream` (the source's connection).
pub fn serve(stream: TcpStream, _opts: &DestOptions) -> Result<DestReport, DestError> {
    let _ = stream.set_nodelay(true);
    let mut w = stream.try_clone().map_err(DestError::Connect)?;
    let mut r = BufReader::with_capacity(1 << 20, stream);
    let res = serve_inner(&mut r, &mut w);
    if let Err(e) = &res {
        // Best effort: tell the source why (it may be gone already).
        if !matches!(e, DestError::Aborted) {
            let _ = write_frame(&mut w, kind::ERROR, e.to_string().as_bytes());
        }
    }
    res
}

fn serve_inner(r: &mut BufReader<TcpStream>, w: &mut TcpStream) -> Result<DestReport, DestError> {
    let (k, p) = read_frame(r)?;
    if k != kind::HELLO {
        return Err(DestError::Protocol(format!("expected HELLO, got kind {k}")));
    }
    let h = parse_hello(&p)?;
    let layout = Layout::new(h.ram_bytes)
        .ok_or_else(|| DestError::Protocol(format!("bad memory size {}", h.ram_bytes)))?;
    let vm = Vm::new_populated(layout)?;
    let mut vcpus = (0..h.vcpus.max(1))
        .map(|i| vm.create_vcpu(i))
        .collect::<Result<Vec<_>, _>>()?;
    // The boot vCPU gets its thread now, outside the blackout.
    let cpu = vcpus.remove(0).spawn()?;
    reply(w, h.one_way_ns, kind::READY, &[])?;
    let mut last_page_ns = 0u64;
    let mut feeder_at: Option<(u64, Vec<u64>)> = None;
    loop {
        let (k, p) = read_frame(r)?;
        match k {
            kind::PAGES => {
                let mut bad = None;
                for_each_page(&p, |word, data| {
                    let sys = word & SYS_FLAG != 0;
                    let idx = word & INDEX_MASK;
                    let region = if sys { &vm.sys } else { &vm.ram };
                    if idx >= region.pages() {
                        bad = Some(word);
                        return;
                    }
                    match data {
                        Some(d) => region.write(idx * PAGE, d),
                        None => region.zero(idx * PAGE, PAGE),
                    }
                })?;
                if let Some(word) = bad {
                    return Err(DestError::Protocol(format!(
                        "page word {word:#x} out of range"
                    )));
                }
                last_page_ns = mono_ns();
            }
            kind::STATE => {
                let t_state = mono_ns();
                load_state(&vm, &cpu, &vcpus, &p)?;
                let d2 = mono_ns();
                if h.verify {
                    verify(r, &vm, layout.ram_bytes)?;
                }
                let d3 = mono_ns();
                return resume_and_report(
                    vm,
                    cpu,
                    w,
                    &h,
                    [last_page_ns, d2, d3, d2 - t_state],
                    feeder_at,
                );
            }
            kind::RESTORE_FILE => {
                let path = String::from_utf8_lossy(&p).into_owned();
                let state = crate::quick::read_image(&path, &vm)?;
                let d1 = mono_ns();
                load_state(&vm, &cpu, &vcpus, &state)?;
                let d2 = mono_ns();
                if h.verify {
                    verify(r, &vm, layout.ram_bytes)?;
                }
                let d3 = mono_ns();
                return resume_and_report(vm, cpu, w, &h, [d1, d2, d3, d2 - d1], None);
            }
            kind::BARRIER => {
                // The switchover follows: take real-time priority until the guest runs here.
                if h.realtime {
                    crate::vstate::vcpu::set_realtime(
                        crate::vstate::vcpu::current_thread(),
                        Some(3),
                    );
                }
                reply(w, h.one_way_ns, kind::BARRIER_ACK, &[])?
            }
            kind::FEEDER => {
                let (v, _) = transport::get_u64s(&p, 2)?;
                let (pending, _) = transport::get_u64s(&p[16..], v[1] as usize)?;
                feeder_at = Some((v[0], pending));
            }
            kind::ABORT => return Err(DestError::Aborted),
            other => {
                return Err(DestError::Protocol(format!(
                    "unexpected frame kind {other}"
                )))
            }
        }
    }
}

pub(crate) fn load_state(
    vm: &Vm,
    cpu: &VcpuThread,
    others: &[Vcpu],
    blob: &[u8],
) -> Result<(), DestError> {
    let (vms, states) = crate::state::decode(blob)?;
    if states.len() != others.len() + 1 {
        return Err(DestError::Protocol(format!(
            "state for {} vCPUs, VM has {}",
            states.len(),
            others.len() + 1
        )));
    }
    vm.restore_state(&vms)?;
    cpu.vcpu()?.restore(&states[0])?;
    for (v, s) in others.iter().zip(&states[1..]) {
        v.restore(s)?;
    }
    Ok(())
}

/// Read the source's DIGEST frame and compare it with this VM's memory (vCPUs not yet run).
fn verify(r: &mut BufReader<TcpStream>, vm: &Vm, ram_bytes: u64) -> Result<(), DestError> {
    let (k, p) = read_frame(r)?;
    if k != kind::DIGEST {
        return Err(DestError::Protocol(format!(
            "expected DIGEST, got kind {k}"
        )));
    }
    let (theirs, _) = transport::get_u64s(&p, p.len() / 8)?;
    // SAFETY: no vCPU of this VM has run yet, so nothing writes its memory.
    let ours = unsafe { crate::source::digest(vm) };
    compare_digests(&theirs, &ours, ram_bytes)
}

fn compare_digests(theirs: &[u64], ours: &[u64], ram_bytes: u64) -> Result<(), DestError> {
    if theirs.len() != ours.len() {
        return Err(DestError::Digest(format!(
            "{} chunks from the source, {} here",
            theirs.len(),
            ours.len()
        )));
    }
    let bad: Vec<usize> = (0..ours.len()).filter(|&i| theirs[i] != ours[i]).collect();
    if let Some(&i) = bad.first() {
        let chunk = crate::vstate::memory::DIGEST_CHUNK as u64;
        let ram_chunks = ram_bytes.div_ceil(chunk) as usize;
        let at = if i < ram_chunks {
            format!("RAM bytes {:#x}..", i as u64 * chunk)
        } else {
            "the system region".to_string()
        };
        return Err(DestError::Digest(format!(
            "{} of {} chunks differ, first at {at}",
            bad.len(),
            ours.len()
        )));
    }
    Ok(())
}

/// Resume the boot vCPU, wait for the guest's first progress, report, let it run, report again.
/// `t` = [last page received, state loaded, verified, state load time].
fn resume_and_report(
    vm: Vm,
    cpu: VcpuThread,
    w: &mut TcpStream,
    h: &Hello,
    t: [u64; 4],
    feeder_at: Option<(u64, Vec<u64>)>,
) -> Result<DestReport, DestError> {
    let vm = std::sync::Arc::new(vm);
    // The guest TSC (restored from the source) keeps counting from here.
    let clock = {
        let v = cpu.vcpu()?;
        let tsc = v.msr(crate::vstate::vcpu::MSR_IA32_TSC)?;
        let at_ns = mono_ns();
        let khz =
            v.fd.get_tsc_khz()
                .map_err(|e| VcpuError::Kvm("KVM_GET_TSC_KHZ", e))?;
        crate::feeder::TscClock { at_ns, tsc, khz }
    };
    let hb0 = vm.sys.read_u64(CTRL_OFF + ctrl::HEARTBEAT);
    let w0 = vm.sys.read_u64(CTRL_OFF + ctrl::CONSUMED);
    let t_resume = mono_ns();
    if h.realtime {
        // Real-time only until the guest is seen running (this thread sits above the vCPU and
        // sleeps between polls, so it always gets to lower it again). If the guest has not
        // shown up within RT_GRACE_NS the vCPU drops back to the fair class: on this nested
        // host its first KVM_RUN sometimes waits for a kernel helper that a SCHED_FIFO thread
        // would keep off the CPU (stalls of seconds were seen when two migrations overlapped).
        cpu.set_realtime(Some(2));
    }
    let mut boosted = h.realtime;
    let resumed = crate::source::resume_vcpu(&vm, &cpu);
    let limit = t_resume + 2_000_000_000;
    let mut d4 = 0;
    while resumed.is_ok() && mono_ns() < limit {
        if vm.sys.read_u64(CTRL_OFF + ctrl::HEARTBEAT) != hb0 {
            d4 = mono_ns();
            break;
        }
        if cpu.has_died() {
            break;
        }
        if boosted && mono_ns() > t_resume + RT_GRACE_NS {
            cpu.set_realtime(None);
            boosted = false;
        }
        std::thread::sleep(Duration::from_micros(10));
    }
    if h.realtime {
        cpu.set_realtime(None);
        crate::vstate::vcpu::set_realtime(crate::vstate::vcpu::current_thread(), None);
    }
    resumed?;
    if d4 == 0 {
        crate::source::pause_vcpu(&vm, &cpu, None)?;
        return Err(DestError::Protocol(
            "the guest made no progress within 2 s of resuming".into(),
        ));
    }
    // Carry the workload on where the source's feeder stopped.
    let feeder = match (&h.workload, feeder_at) {
        (Some((w, seed)), Some((guest_ns, pending))) if h.mode == GuestMode::Workload => {
            let mut stream = workloads::WriteStream::new(w, *seed);
            stream.advance_to(guest_ns, |_| {});
            Some(crate::feeder::Feeder::resume(
                vm.clone(),
                std::sync::Arc::new(crate::feeder::VmmDirty::new(vm.layout.sys_pages())),
                stream,
                clock,
                mono_ns(),
                guest_ns,
                pending,
                false,
            ))
        }
        _ => None,
    };
    reply(
        w,
        h.one_way_ns,
        kind::RESUMED,
        &put_u64s(&[t[0], t[1], t[2], d4, t[3], hb0, w0]),
    )?;
    std::thread::sleep(Duration::from_millis(h.run_after_ms));
    if let Some(f) = feeder {
        f.stop();
    }
    crate::source::pause_vcpu(&vm, &cpu, None)?;
    let hb1 = vm.sys.read_u64(CTRL_OFF + ctrl::HEARTBEAT);
    let w1 = vm.sys.read_u64(CTRL_OFF + ctrl::CONSUMED);
    let check = (h.mode == GuestMode::Check).then(|| check_ram(&vm));
    let (flag, msg) = match &check {
        None => (0, String::new()),
        Some(Ok(())) => (1, String::new()),
        Some(Err(e)) => (2, e.clone()),
    };
    let mut p = put_u64s(&[hb1, w1, flag]);
    p.extend_from_slice(msg.as_bytes());
    reply(w, h.one_way_ns, kind::FINAL, &p)?;
    drop(cpu);
    Ok(DestReport {
        heartbeat_at_resume: hb0,
        heartbeat_after: hb1,
        check,
    })
}

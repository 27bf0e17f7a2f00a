//! migsim's real backend: a tiny KVM VMM that live-migrates its own guest between two processes
//! and measures the blackout, obeying the same [`sim::policy::Policy`] objects as the simulator.
//!
//! ```text
//!  source process                                   destination process (`migsim __dest`)
//!  ┌───────────────────────────────┐  TCP 127.0.0.1 ┌──────────────────────────────┐
//!  │ vCPU thread: guest at CPL 3   │  framed, CRC32 │ Vm (no dirty log)            │
//!  │ feeder: WriteStream -> ring   │ ─────────────> │ pages -> memory              │
//!  │ driver: dirty log, policy,    │  paced: token  │ state -> vCPUs, verify digest│
//!  │   rounds, stop-and-copy       │  bucket + RTT/2│ resume, report timestamps    │
//!  └───────────────────────────────┘ <───────────── └──────────────────────────────┘
//! ```
//!
//! Modules: [`vstate`] (KVM memory, VM, vCPUs), [`guest`] (code, page tables), [`feeder`]
//! (workload script), [`transport`] (frames, pacer), [`state`] (state encoding), [`source`]
//! (pre-copy driver), [`dest`] (destination), [`quick`] (save/restore through a file).

pub mod dest;
pub mod feeder;
pub mod guest;
pub mod quick;
pub mod source;
pub mod state;
pub mod transport;
pub mod vstate;

pub use dest::{serve as serve_dest, DestError, DestReport};
pub use guest::GuestMode;
pub use source::{migrate, SourceError};

use sim::bitmap::Bitmap;
use sim::metrics::RunResult;
use std::path::PathBuf;

/// Top-level error of a real migration: something on this host broke (not the migration
/// itself, which ends with [`sim::Status::Failed`] when the link or the destination fails).
#[derive(Debug, thiserror::Error)]
pub enum RealError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Dest(#[from] DestError),
    #[error(transparent)]
    Quick(#[from] quick::QuickError),
}

/// How the destination VMM is started.
#[derive(Clone, Debug)]
pub enum DestLaunch {
    /// A separate process: `program args...`, where an argument `{addr}` is replaced by the
    /// source's address; without one, `--connect ADDR` is appended (the CLI passes
    /// `migsim __dest`).
    Process { program: PathBuf, args: Vec<String> },
    /// A thread of this process (tests where a separate process is not the point).
    Thread,
}

/// Faults to inject (for tests and demonstrations).
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    pub send: transport::SendFaults,
    /// Kill the destination process (SIGKILL) once this many bytes have been sent.
    pub kill_dest_after_bytes: Option<u64>,
    /// "Forget" to send the control page in the stop-and-copy (a lost dirty page): the digest
    /// comparison must catch it.
    pub lose_a_page: bool,
}

/// Options of a real migration.
#[derive(Clone, Debug)]
pub struct RealOptions {
    pub replicate: u32,
    pub mode: GuestMode,
    pub dest: DestLaunch,
    /// Compare a digest of the source memory at pause with the destination's before resume.
    /// The comparison holds the guest paused; that time is reported apart from the blackout.
    pub verify: bool,
    /// How long the guest runs on the destination before it reports its progress (ms).
    pub run_after_ms: u64,
    /// How long the guest runs before the migration starts (ms).
    pub warmup_ms: u64,
    pub faults: Faults,
    /// Keep every harvested dirty bitmap (one per sync, plus the final one).
    pub record_trace: bool,
    /// Keep the page sequence the feeder gave the guest.
    pub record_writes: bool,
    /// Run the vCPU and VMM threads at SCHED_FIFO priority during the switchover (only where
    /// the kernel throttles real-time threads), so a busy host's scheduler does not add its
    /// tick to the blackout.
    pub realtime_switchover: bool,
}

impl Default for RealOptions {
    fn default() -> Self {
        RealOptions {
            replicate: 0,
            mode: GuestMode::Workload,
            dest: DestLaunch::Thread,
            verify: true,
            run_after_ms: 50,
            warmup_ms: 20,
            faults: Faults::default(),
            record_trace: false,
            record_writes: false,
            realtime_switchover: true,
        }
    }
}

/// One dirty-log harvest (KVM_GET_DIRTY_LOG + KVM_CLEAR_DIRTY_LOG of both slots, plus the
/// VMM's own bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Harvest {
    pub dirty_pages: u64,
    pub ns: u64,
}

/// What the guest did on the destination after the switchover.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DestProgress {
    /// Heartbeat counter just before resume and after `run_after_ms` of running there.
    pub heartbeat_at_resume: u64,
    pub heartbeat_after: u64,
    /// Script entries (page writes) done, at resume and after.
    pub writes_at_resume: u64,
    pub writes_after: u64,
    /// Check-mode consistency verdict on the destination (None in workload mode).
    pub check: Option<Result<(), String>>,
}

/// A real run: the record that compares one to one with the simulator's, plus what only a
/// real run has.
#[derive(Clone, Debug)]
pub struct RealRun {
    pub result: RunResult,
    /// Digest comparison time that kept the guest paused beyond the reported blackout.
    pub verify_ns: u64,
    /// Whether the memory digests were compared (and matched: a mismatch is an error).
    pub verified: bool,
    /// Page writes per second the guest achieved before the pause, and the workload's target.
    pub achieved_pps: f64,
    pub target_pps: f64,
    pub dest: Option<DestProgress>,
    /// After a failed migration: the guest's heartbeat advanced on the source afterwards, and
    /// (check mode) its memory passed the consistency check.
    pub source_after_failure: Option<(bool, Option<Result<(), String>>)>,
    /// Harvested dirty bitmaps (RAM pages then system pages), when recorded.
    pub trace: Vec<Bitmap>,
    /// Every dirty-log harvest (each sync, then the final one): pages found and time taken —
    /// the data to calibrate the simulator's `[dirty_log]` costs.
    pub harvests: Vec<Harvest>,
    /// The page sequence fed to the guest, when recorded.
    pub writes: Vec<u64>,
    /// Pages of guest memory actually used (RAM + system region).
    pub guest_pages: u64,
}

/// True when this host has a usable /dev/kvm.
pub fn kvm_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

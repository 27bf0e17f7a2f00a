//! Scenario files: what to migrate, how, over what link, under which policy.
//!
//! A [`Scenario`] is what the TOML says (with defaults filled in); [`Scenario::check`] validates
//! it into a [`Checked`] scenario, reporting every problem with its field path.

use crate::policy::PolicySpec;
use serde::{Deserialize, Serialize};
use workloads::{
    spec::UniformSpec, Bandwidth, ByteSize, FieldError, Workload, WorkloadSpec, GIB, KIB, MIB,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub vm: VmSpec,
    pub workload: WorkloadSpec,
    pub link: LinkSpec,
    #[serde(default)]
    pub switchover: SwitchoverSpec,
    #[serde(default)]
    pub dirty_log: DirtyLogSpec,
    pub policy: PolicySpec,
    #[serde(default)]
    pub limits: LimitsSpec,
    #[serde(default, skip_serializing_if = "TransferSpec::is_plain")]
    pub transfer: TransferSpec,
    #[serde(default, skip_serializing_if = "MigrationSpec::is_live")]
    pub migration: MigrationSpec,
    /// `exact` (page-level ground truth), `fluid` (expected dirty counts, O(iterations)) or
    /// `analytic` (the textbook geometric model: no writable working set).
    #[serde(default, skip_serializing_if = "Mode::is_exact")]
    pub mode: Mode,
    /// A calibration file (written by `migsim calibrate`) whose measured fixed costs replace
    /// the defaults above when the simulator runs; resolved relative to the scenario file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Exact,
    Fluid,
    Analytic,
}

impl Mode {
    pub fn is_exact(&self) -> bool {
        *self == Mode::Exact
    }
}

/// Data-reduction and parallel-transfer options (QEMU capabilities), usable with any policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xbzrle: Option<XbzrleSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multifd: Option<MultifdSpec>,
}

impl TransferSpec {
    pub fn is_plain(&self) -> bool {
        self.xbzrle.is_none() && self.multifd.is_none()
    }
}

/// QEMU XBZRLE: a cache of previously sent pages; a re-sent page whose old copy is cached goes
/// out as a run-length-encoded XOR delta. Used from the second iteration on (QEMU starts it
/// after the first full pass). Misses, and deltas that overflow, send the full page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XbzrleSpec {
    /// Cache size (QEMU default 64 MiB).
    #[serde(default = "xbzrle_cache")]
    pub cache: ByteSize,
    /// Encoded delta size as a fraction of a page: a property of the workload (how much of a
    /// page a write changes). Unverified default 0.1.
    #[serde(default = "xbzrle_delta")]
    pub delta_fraction: f64,
    /// Fraction of cache hits whose delta overflows the page and is sent in full.
    #[serde(default)]
    pub overflow_fraction: f64,
}

fn xbzrle_cache() -> ByteSize {
    ByteSize(64 * MIB)
}
fn xbzrle_delta() -> f64 {
    0.1
}

/// QEMU multifd: pages travel over several channels in packets of `packet` bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultifdSpec {
    /// Channels (QEMU default 2).
    #[serde(default = "two")]
    pub channels: u32,
    /// Most one channel can carry (its sending thread's limit). Unverified default 10 Gbit/s.
    #[serde(default = "channel_bw")]
    pub channel_bandwidth: Bandwidth,
    /// Packet payload (QEMU: 512 KiB).
    #[serde(default = "packet")]
    pub packet: ByteSize,
    /// Header bytes per packet (QEMU's packet header plus per-page offsets are of this order).
    #[serde(default = "packet_header")]
    pub packet_header_bytes: u64,
}

fn two() -> u32 {
    2
}
fn channel_bw() -> Bandwidth {
    Bandwidth(1e10)
}
fn packet() -> ByteSize {
    ByteSize(512 * KIB)
}
fn packet_header() -> u64 {
    1104
}

/// What kind of move this is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MigrationSpec {
    /// Live migration: pre-copy under the policy (which may also switch to post-copy).
    #[default]
    Live,
    /// Quick Migration: save the running state to shared storage, fail over, restore.
    Quick(QuickSpec),
    /// Offline: the VM is shut down, its configuration (and optionally its disk) moved, booted.
    Offline(OfflineSpec),
    /// Quick Storage Migration: the disk is copied while the VM runs (block-level dirty
    /// tracking), then a quick save/restore of memory completes the move.
    Storage(StorageSpec),
}

impl MigrationSpec {
    pub fn is_live(&self) -> bool {
        matches!(self, MigrationSpec::Live)
    }
    pub fn name(&self) -> &'static str {
        match self {
            MigrationSpec::Live => "live",
            MigrationSpec::Quick(_) => "quick",
            MigrationSpec::Offline(_) => "offline",
            MigrationSpec::Storage(_) => "storage",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuickSpec {
    /// Write rate of the shared storage when saving memory.
    pub storage_write: Bandwidth,
    /// Read rate when restoring.
    pub storage_read: Bandwidth,
    /// Cluster failover of the storage and VM resource between save and restore.
    #[serde(default)]
    pub failover_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineSpec {
    #[serde(default)]
    pub shutdown_ms: f64,
    #[serde(default)]
    pub boot_ms: f64,
    /// Configuration sent over the link.
    #[serde(default = "config_size")]
    pub config: ByteSize,
    /// Disk copied over the link while the VM is off (0 = shared storage).
    #[serde(default)]
    pub disk: ByteSize,
}

fn config_size() -> ByteSize {
    ByteSize(64 * KIB)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSpec {
    pub disk: ByteSize,
    /// Dirty-tracking granularity on the disk.
    #[serde(default = "block")]
    pub block: ByteSize,
    /// Disk writes, in blocks per second (same models as `[workload]`).
    pub disk_workload: WorkloadSpec,
    /// The final save/restore of memory.
    pub storage_write: Bandwidth,
    pub storage_read: Bandwidth,
    #[serde(default)]
    pub failover_ms: f64,
}

fn block() -> ByteSize {
    ByteSize(MIB)
}

fn default_name() -> String {
    "unnamed".into()
}
fn default_seed() -> u64 {
    1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub memory: ByteSize,
    #[serde(default = "default_page")]
    pub page_size: ByteSize,
    #[serde(default = "one")]
    pub vcpus: u32,
    /// Fraction of pages that are all zero when migration starts (sent as small markers).
    #[serde(default)]
    pub zero_page_fraction: f64,
}

fn default_page() -> ByteSize {
    ByteSize(4 * KIB)
}
fn one() -> u32 {
    1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub bandwidth: Bandwidth,
    /// Round-trip time.
    #[serde(default)]
    pub rtt_ms: f64,
    /// Header bytes sent with every full page (QEMU: an 8-byte address/flags word).
    #[serde(default = "eight")]
    pub page_header_bytes: u64,
    /// Wire bytes of a zero-page marker.
    #[serde(default = "nine")]
    pub zero_page_bytes: u64,
    /// Connection and destination setup before the first page is sent, on top of one RTT
    /// (building the destination VM; set by calibration).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub setup_ms: f64,
    /// Bytes the link sends at once after standing idle (a pacer's token-bucket depth): the
    /// stop-and-copy's first `burst` bytes cost no link time when the link was idle at the
    /// pause. Set by calibration; 0 = a fluid link.
    #[serde(default, skip_serializing_if = "ByteSize::is_zero")]
    pub burst: ByteSize,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

fn eight() -> u64 {
    8
}
fn nine() -> u64 {
    9
}

/// Switchover costs that do not scale with the pages sent (REFERENCE: QEMU measured 74 ms to
/// stop a VM and 225 ms to load on the destination in one report, and 26–29 ms total for an idle
/// guest on 10 GbE in another; calibrate for your platform).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverSpec {
    /// Stopping the vCPUs and saving device state on the source.
    #[serde(default = "pause_default")]
    pub pause_ms: f64,
    /// Loading state and starting the vCPUs on the destination.
    #[serde(default = "resume_default")]
    pub resume_ms: f64,
    /// vCPU and device state sent during the blackout.
    #[serde(default = "state_default")]
    pub state: ByteSize,
}

fn pause_default() -> f64 {
    2.0
}
fn resume_default() -> f64 {
    5.0
}
fn state_default() -> ByteSize {
    ByteSize(256 * KIB)
}

impl Default for SwitchoverSpec {
    fn default() -> Self {
        SwitchoverSpec {
            pause_ms: pause_default(),
            resume_ms: resume_default(),
            state: state_default(),
        }
    }
}

/// Cost of harvesting the dirty log (a sync). REFERENCE: KVM_GET_DIRTY_LOG on a 1 GiB slot took
/// ~8 ms with 256K dirty pages and ~0.02 ms with none.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirtyLogSpec {
    #[serde(default = "sync_fixed")]
    pub sync_fixed_us: f64,
    #[serde(default = "sync_gib")]
    pub sync_us_per_gib: f64,
    #[serde(default = "sync_page")]
    pub sync_ns_per_dirty_page: f64,
}

fn sync_fixed() -> f64 {
    10.0
}
fn sync_gib() -> f64 {
    20.0
}
fn sync_page() -> f64 {
    30.0
}

impl Default for DirtyLogSpec {
    fn default() -> Self {
        DirtyLogSpec {
            sync_fixed_us: sync_fixed(),
            sync_us_per_gib: sync_gib(),
            sync_ns_per_dirty_page: sync_page(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Simulated-time cap: a migration still running then ends with status `timeout`.
    #[serde(default = "max_time")]
    pub max_time_s: f64,
}

fn max_time() -> f64 {
    3600.0
}

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec {
            max_time_s: max_time(),
        }
    }
}

/// Most page writes a single run may generate (rate × time cap); beyond it a run could take hours.
pub const MAX_WRITES_PER_RUN: f64 = 2e10;

/// A validated scenario with derived quantities.
#[derive(Clone, Debug)]
pub struct Checked {
    pub scenario: Scenario,
    pub mem_pages: u64,
    pub page_size: u64,
    pub workload: Workload,
}

impl Checked {
    pub fn mem_bytes(&self) -> u64 {
        self.mem_pages * self.page_size
    }
}

/// Errors reading a scenario file.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("invalid scenario:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FieldError>),
}

impl ScenarioError {
    /// The individual field problems (one entry for a parse error).
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            ScenarioError::Invalid(v) => v.clone(),
            ScenarioError::Parse(s) => vec![FieldError::new("", s.clone())],
            ScenarioError::Read { path, .. } => {
                vec![FieldError::new(path.clone(), self.to_string())]
            }
        }
    }
}

/// Deserialize any TOML-backed type, reporting the failing field's path.
/// Parts of a scenario document [`Scenario::to_toml_cached`] writes: the top-level values,
/// then one per table.
const TOML_PARTS_N: usize = 10;
/// Texts it keeps per part (the latest), so that a sweep's fastest axis cycling through a few
/// values (every policy, say) finds them all.
const TOML_PART_KEPT: usize = 16;

type KeptParts = [Vec<(String, String)>; TOML_PARTS_N];

thread_local! {
    /// [`Scenario::to_toml_cached`]'s key buffer, and per part the keys and texts kept.
    static TOML_PARTS: std::cell::RefCell<(String, KeptParts)> = Default::default();
}

/// A scenario's tables behind one type, to write them out one by one.
mod erased {
    use serde::ser::SerializeStruct;

    pub trait Ser: std::fmt::Debug {
        /// The document of `self`'s own fields.
        fn text(&self) -> String;
        /// The document holding `self` as table `name`.
        fn table_text(&self, name: &'static str) -> String;
    }

    impl<T: serde::Serialize + std::fmt::Debug> Ser for T {
        fn text(&self) -> String {
            toml::to_string_pretty(self).expect("scenario serialises to TOML")
        }

        fn table_text(&self, name: &'static str) -> String {
            struct One<'a, T>(&'static str, &'a T);
            impl<T: serde::Serialize> serde::Serialize for One<'_, T> {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    let mut st = s.serialize_struct("Scenario", 1)?;
                    st.serialize_field(self.0, self.1)?;
                    st.end()
                }
            }
            toml::to_string_pretty(&One(name, self)).expect("scenario serialises to TOML")
        }
    }

    pub struct Dbg<'a>(pub &'a dyn Ser);

    impl std::fmt::Debug for Dbg<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(f)
        }
    }
}

pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.message().trim().to_string();
        let loc = inner
            .span()
            .map(|s| {
                let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            })
            .unwrap_or_default();
        if path.is_empty() || path == "." {
            format!("{msg}{loc}")
        } else {
            format!("{path}: {msg}{loc}")
        }
    })
}

impl Scenario {
    /// The built-in default: a 4 GiB VM writing 20,000 pages/s over a 256 MiB working set,
    /// migrated over 1 Gbit/s under QEMU's 300 ms downtime limit.
    pub fn default_scenario() -> Scenario {
        Scenario {
            name: "default".into(),
            seed: 1,
            vm: VmSpec {
                memory: ByteSize(4 * GIB),
                page_size: default_page(),
                vcpus: 2,
                zero_page_fraction: 0.25,
            },
            workload: WorkloadSpec::Uniform(UniformSpec {
                wss: ByteSize(256 * MIB),
                rate_pps: 20_000.0,
                offset: ByteSize(0),
            }),
            link: LinkSpec {
                bandwidth: Bandwidth(1e9),
                rtt_ms: 0.2,
                page_header_bytes: 8,
                zero_page_bytes: 9,
                setup_ms: 0.0,
                burst: ByteSize(0),
            },
            switchover: SwitchoverSpec::default(),
            dirty_log: DirtyLogSpec::default(),
            policy: PolicySpec::Qemu(crate::policy::QemuSpec::default()),
            limits: LimitsSpec::default(),
            transfer: TransferSpec::default(),
            migration: MigrationSpec::Live,
            mode: Mode::Exact,
            calibration: None,
        }
    }

    /// The exact engine's reference benchmark case: 16 GiB VM, 1 Gbit/s, uniform 20K pages/s over
    /// a 4 GiB working set, QEMU's rule at 300 ms.
    pub fn bench_exact_16g() -> Scenario {
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
        s.policy = PolicySpec::Qemu(crate::policy::QemuSpec::default());
        s
    }

    pub fn to_toml(&self) -> String {
        // Serialising plain data to TOML cannot fail for these types (no maps with non-string keys).
        toml::to_string_pretty(self).expect("scenario serialises to TOML")
    }

    /// [`Scenario::to_toml`]'s text, written table by table with each table's text remembered
    /// (per thread) for the next scenario holding the same table: a sweep writes out thousands
    /// of scenarios that differ in a field or two.
    pub fn to_toml_cached(&self) -> String {
        use std::fmt::Write;

        /// The top-level values, which the document writes before every table.
        #[derive(Debug, Serialize)]
        struct Head<'a> {
            name: &'a str,
            seed: u64,
            #[serde(skip_serializing_if = "Mode::is_exact")]
            mode: Mode,
            #[serde(skip_serializing_if = "Option::is_none")]
            calibration: &'a Option<std::path::PathBuf>,
        }
        // (Every field by name: a new one does not compile until it is written out here too.)
        let Scenario {
            name,
            seed,
            vm,
            workload,
            link,
            switchover,
            dirty_log,
            policy,
            limits,
            transfer,
            migration,
            mode,
            calibration,
        } = self;
        let head = Head {
            name,
            seed: *seed,
            mode: *mode,
            calibration,
        };
        let mut parts: Vec<(&'static str, &dyn erased::Ser)> = vec![
            ("", &head),
            ("vm", vm),
            ("workload", workload),
            ("link", link),
            ("switchover", switchover),
            ("dirty_log", dirty_log),
            ("policy", policy),
            ("limits", limits),
        ];
        if !transfer.is_plain() {
            parts.push(("transfer", transfer));
        }
        if !migration.is_live() {
            parts.push(("migration", migration));
        }
        TOML_PARTS.with(|c| {
            let mut c = c.borrow_mut();
            let (key, kept) = &mut *c;
            let mut text = String::new();
            for (i, (name, v)) in parts.into_iter().enumerate() {
                // (The key tells values apart to the bit, as the text does: `Debug` writes
                // -0.0 and 0.0 differently where `==` finds them equal.)
                key.clear();
                let _ = write!(key, "{:?}", erased::Dbg(v));
                let kept = &mut kept[i];
                let at = match kept.iter().position(|(k, _)| k == key) {
                    Some(at) => at,
                    None => {
                        let t = if name.is_empty() {
                            v.text()
                        } else {
                            v.table_text(name)
                        };
                        if kept.len() == TOML_PART_KEPT {
                            kept.remove(0);
                        }
                        kept.push((key.clone(), t));
                        kept.len() - 1
                    }
                };
                if i > 0 {
                    text.push('\n');
                }
                text.push_str(&kept[at].1);
            }
            text
        })
    }

    pub fn from_toml_str(text: &str) -> Result<Scenario, ScenarioError> {
        from_toml(text).map_err(ScenarioError::Parse)
    }

    /// A scenario from a TOML table already parsed (or built), as [`Scenario::from_toml_str`]
    /// reads the table's text; `None` where that would fail (its message needs the text: parse
    /// it to get one).
    pub fn from_toml_table(t: toml::Table) -> Option<Scenario> {
        Scenario::deserialize(toml::Value::Table(t)).ok()
    }

    /// Read, parse and validate a scenario file.
    pub fn load(path: &std::path::Path) -> Result<Checked, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::from_toml_str(&text)?
            .check()
            .map_err(ScenarioError::Invalid)
    }

    /// Validate every field; report all problems at once.
    pub fn check(self) -> Result<Checked, Vec<FieldError>> {
        let mut errs = Vec::new();
        let page_size = self.vm.page_size.0;
        if page_size == 0 || !page_size.is_power_of_two() || page_size < 512 {
            errs.push(FieldError::new(
                "vm.page_size",
                format!("must be a power of two ≥ 512 B, got {}", self.vm.page_size),
            ));
        }
        let page_ok = page_size.is_power_of_two() && page_size >= 512;
        let mem = self.vm.memory.0;
        if mem == 0 {
            errs.push(FieldError::new("vm.memory", "must be larger than zero"));
        } else if page_ok && !mem.is_multiple_of(page_size) {
            errs.push(FieldError::new(
                "vm.memory",
                format!(
                    "must be a multiple of the page size ({})",
                    self.vm.page_size
                ),
            ));
        } else if mem > 64 * 1024 * GIB {
            errs.push(FieldError::new("vm.memory", "must be at most 64 TiB"));
        }
        if self.vm.vcpus == 0 {
            errs.push(FieldError::new("vm.vcpus", "must be at least 1"));
        }
        let z = self.vm.zero_page_fraction;
        if !(0.0..=1.0).contains(&z) {
            errs.push(FieldError::new(
                "vm.zero_page_fraction",
                format!("must be between 0 and 1, got {z}"),
            ));
        }
        let bw = self.link.bandwidth.0;
        if !bw.is_finite() || bw <= 0.0 {
            errs.push(FieldError::new(
                "link.bandwidth",
                format!("must be a finite rate > 0, got {bw} bit/s"),
            ));
        }
        nonneg(self.link.rtt_ms, "link.rtt_ms", "ms", &mut errs);
        nonneg(self.link.setup_ms, "link.setup_ms", "ms", &mut errs);
        if self.link.zero_page_bytes == 0 {
            errs.push(FieldError::new(
                "link.zero_page_bytes",
                "must be at least 1 byte",
            ));
        }
        nonneg(
            self.switchover.pause_ms,
            "switchover.pause_ms",
            "ms",
            &mut errs,
        );
        nonneg(
            self.switchover.resume_ms,
            "switchover.resume_ms",
            "ms",
            &mut errs,
        );
        nonneg(
            self.dirty_log.sync_fixed_us,
            "dirty_log.sync_fixed_us",
            "µs",
            &mut errs,
        );
        nonneg(
            self.dirty_log.sync_us_per_gib,
            "dirty_log.sync_us_per_gib",
            "µs",
            &mut errs,
        );
        nonneg(
            self.dirty_log.sync_ns_per_dirty_page,
            "dirty_log.sync_ns_per_dirty_page",
            "ns",
            &mut errs,
        );
        let t = self.limits.max_time_s;
        if !t.is_finite() || t <= 0.0 {
            errs.push(FieldError::new(
                "limits.max_time_s",
                format!("must be a finite time > 0 s, got {t}"),
            ));
        }
        errs.extend(self.policy.check("policy"));
        self.check_transfer(&mut errs);
        self.check_migration(&mut errs);
        if !self.mode.is_exact() {
            if matches!(self.policy, PolicySpec::Postcopy(_)) {
                errs.push(FieldError::new(
                    "mode",
                    "post-copy is only modelled in exact mode",
                ));
            }
            if self.transfer.xbzrle.is_some() {
                errs.push(FieldError::new(
                    "mode",
                    "XBZRLE is only modelled in exact mode",
                ));
            }
        }
        let mut workload = None;
        if mem > 0 && page_ok && mem.is_multiple_of(page_size) {
            match self.workload.check(mem / page_size, page_size, "workload") {
                Ok(w) => {
                    let writes = max_rate(&w) * t;
                    if writes.is_finite() && writes > MAX_WRITES_PER_RUN {
                        errs.push(FieldError::new(
                            "workload",
                            format!(
                                "would generate up to {writes:.2e} page writes within limits.max_time_s; the cap is {MAX_WRITES_PER_RUN:.0e} (lower the rate or the time cap)"
                            ),
                        ));
                    }
                    workload = Some(w)
                }
                Err(e) => errs.extend(e),
            }
        }
        match workload {
            Some(workload) if errs.is_empty() => Ok(Checked {
                mem_pages: mem / page_size,
                page_size,
                workload,
                scenario: self,
            }),
            _ => Err(errs),
        }
    }
}

fn positive_bw(b: Bandwidth, path: &str, errs: &mut Vec<FieldError>) {
    if !b.0.is_finite() || b.0 <= 0.0 {
        errs.push(FieldError::new(
            path,
            format!("must be a finite rate > 0, got {} bit/s", b.0),
        ));
    }
}

fn fraction(v: f64, path: &str, errs: &mut Vec<FieldError>) {
    if !(0.0..=1.0).contains(&v) {
        errs.push(FieldError::new(
            path,
            format!("must be between 0 and 1, got {v}"),
        ));
    }
}

impl Scenario {
    fn check_transfer(&self, errs: &mut Vec<FieldError>) {
        if let Some(x) = &self.transfer.xbzrle {
            if x.cache.0 < self.vm.page_size.0.max(1) {
                errs.push(FieldError::new(
                    "transfer.xbzrle.cache",
                    "must hold at least one page",
                ));
            }
            fraction(x.delta_fraction, "transfer.xbzrle.delta_fraction", errs);
            fraction(
                x.overflow_fraction,
                "transfer.xbzrle.overflow_fraction",
                errs,
            );
        }
        if let Some(m) = &self.transfer.multifd {
            if m.channels == 0 || m.channels > 256 {
                errs.push(FieldError::new(
                    "transfer.multifd.channels",
                    format!("must be between 1 and 256, got {}", m.channels),
                ));
            }
            positive_bw(
                m.channel_bandwidth,
                "transfer.multifd.channel_bandwidth",
                errs,
            );
            if m.packet.0 < self.vm.page_size.0.max(1) {
                errs.push(FieldError::new(
                    "transfer.multifd.packet",
                    "must hold at least one page",
                ));
            }
        }
    }

    fn check_migration(&self, errs: &mut Vec<FieldError>) {
        match &self.migration {
            MigrationSpec::Live => {}
            MigrationSpec::Quick(q) => {
                positive_bw(q.storage_write, "migration.storage_write", errs);
                positive_bw(q.storage_read, "migration.storage_read", errs);
                nonneg(q.failover_ms, "migration.failover_ms", "ms", errs);
            }
            MigrationSpec::Offline(o) => {
                nonneg(o.shutdown_ms, "migration.shutdown_ms", "ms", errs);
                nonneg(o.boot_ms, "migration.boot_ms", "ms", errs);
            }
            MigrationSpec::Storage(st) => {
                positive_bw(st.storage_write, "migration.storage_write", errs);
                positive_bw(st.storage_read, "migration.storage_read", errs);
                nonneg(st.failover_ms, "migration.failover_ms", "ms", errs);
                let b = st.block.0;
                if b < 512 || !b.is_power_of_two() {
                    errs.push(FieldError::new(
                        "migration.block",
                        format!("must be a power of two ≥ 512 B, got {}", st.block),
                    ));
                } else if st.disk.0 == 0 || st.disk.0 % b != 0 {
                    errs.push(FieldError::new(
                        "migration.disk",
                        format!(
                            "must be a non-zero multiple of the block size ({})",
                            st.block
                        ),
                    ));
                } else if let Err(e) =
                    st.disk_workload
                        .check(st.disk.0 / b, b, "migration.disk_workload")
                {
                    errs.extend(e);
                }
            }
        }
    }
}

fn max_rate(w: &Workload) -> f64 {
    match w {
        Workload::Classes(c) => c.iter().map(|c| c.rate_pps).sum(),
        Workload::Phased { phases, .. } => phases
            .iter()
            .map(|p| p.1.iter().map(|c| c.rate_pps).sum::<f64>())
            .fold(0.0, f64::max),
        Workload::Trace(t) => t.rate_pps(),
    }
}

fn nonneg(v: f64, path: &str, unit: &str, errs: &mut Vec<FieldError>) {
    if !v.is_finite() || v < 0.0 {
        errs.push(FieldError::new(
            path,
            format!("must be a finite value ≥ 0 {unit}, got {v}"),
        ));
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    /// The text of every scenario file shipped under `scenarios/` that reads as a scenario.
    fn shipped_scenarios() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let (mut files, mut texts) = (vec![root.join("scenarios")], Vec::new());
        while let Some(p) = files.pop() {
            if p.is_dir() {
                files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            } else if p.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&p).unwrap();
                if Scenario::from_toml_str(&text).is_ok() {
                    texts.push(text);
                }
            }
        }
        texts
    }

    /// Both ways of reading `t`: as it stands, and as its text.
    fn both(t: &toml::Table) -> (Option<Scenario>, Option<Scenario>) {
        let text = toml::to_string(t).expect("a table serialises");
        (
            Scenario::from_toml_table(t.clone()),
            Scenario::from_toml_str(&text).ok(),
        )
    }

    #[test]
    fn scenarios_written_table_by_table_read_as_written_whole() {
        // Every shipped scenario file, then variations of each table in turn (so that each
        // table's text is remembered, reused and replaced), in an order where neighbours share
        // most of their tables, as the points of a sweep do.
        let mut all: Vec<Scenario> = (shipped_scenarios().iter())
            .map(|t| Scenario::from_toml_str(t).unwrap())
            .collect();
        let base = Scenario::default_scenario();
        for (i, p) in crate::policy::PolicySpec::all_defaults()
            .into_iter()
            .enumerate()
        {
            for mode in [Mode::Exact, Mode::Fluid, Mode::Analytic] {
                let mut s = base.clone();
                s.policy = p.clone();
                s.mode = mode;
                s.seed = i as u64;
                all.push(s.clone());
                s.link.bandwidth.0 = -0.0;
                all.push(s.clone());
                s.link.bandwidth.0 = 0.0;
                all.push(s.clone());
                s.calibration = Some("cal.json".into());
                all.push(s);
            }
        }
        let kinds = [
            "kind = \"idle\"",
            "kind = \"zipf\"\nwss = \"1 GiB\"\nrate_pps = 30000\nexponent = 0.99",
            "kind = \"phased\"\nrepeat = true\n[[phases]]\nduration_ms = 500\n[phases.workload]\nkind = \"scan\"\nrate_pps = 1000\n[[phases]]\nduration_ms = 100\n[phases.workload]\nkind = \"idle\"",
        ];
        for k in kinds {
            let mut s = base.clone();
            s.workload = toml::from_str(k).unwrap();
            all.push(s);
        }
        let moves = [
            "[transfer.xbzrle]\ncache = \"64 MiB\"\ndelta_fraction = 0.1\n[transfer.multifd]\nchannels = 2\nchannel_bandwidth = \"10 Gbit/s\"\npacket = \"512 KiB\"\npacket_header_bytes = 1104",
            "[migration]\nkind = \"quick\"\nstorage_write = \"500 MB/s\"\nstorage_read = \"1 GB/s\"\nfailover_ms = 2000",
        ];
        for m in moves {
            let mut t: toml::Table = toml::from_str(&base.to_toml()).unwrap();
            t.extend(toml::from_str::<toml::Table>(m).unwrap());
            all.push(Scenario::from_toml_table(t).expect(m));
        }
        assert!(all.len() >= 150, "only {} scenarios", all.len());
        for (i, s) in all.iter().enumerate() {
            assert_eq!(s.to_toml_cached(), s.to_toml(), "scenario {i}");
        }
        // (The scenarios include transfer options and another kind of move.)
        assert!(all.iter().any(|s| !s.transfer.is_plain()));
        assert!(all.iter().any(|s| !s.migration.is_live()));
    }

    #[test]
    fn a_table_reads_as_its_text_does() {
        // Every scenario file shipped, every default policy and every workload kind, and
        // tables broken in the ways sweep axes break them.
        let mut tables: Vec<toml::Table> = (shipped_scenarios().iter())
            .map(|t| toml::from_str(t).unwrap())
            .collect();
        assert!(tables.len() >= 20, "only {} scenario files", tables.len());
        let base = Scenario::default_scenario();
        for p in crate::policy::PolicySpec::all_defaults() {
            let mut s = base.clone();
            s.policy = p;
            tables.push(toml::from_str(&s.to_toml()).unwrap());
        }
        let kinds = [
            "kind = \"idle\"",
            "kind = \"uniform\"\nwss = \"64 MiB\"\nrate_pps = 5000",
            "kind = \"hot_cold\"\nhot_wss = \"64 MiB\"\nhot_rate_pps = 50000\ncold_rate_pps = 2000",
            "kind = \"zipf\"\nwss = \"1 GiB\"\nrate_pps = 30000\nexponent = 0.99",
            "kind = \"scan\"\nwss = \"1 GiB\"\nrate_pps = 400000",
        ];
        let valid = tables.clone();
        for k in kinds {
            let mut t = valid[0].clone();
            t.insert(
                "workload".into(),
                toml::Value::Table(toml::from_str(k).unwrap()),
            );
            tables.push(t);
        }
        let good = tables.len();
        for (i, t) in valid.iter().enumerate().take(8) {
            let mut bad = t.clone();
            match i % 4 {
                0 => bad.insert("bogus".into(), toml::Value::Integer(1)),
                1 => bad["link"]
                    .as_table_mut()
                    .unwrap()
                    .insert("bandwidth".into(), toml::Value::String("fast".into())),
                2 => bad["vm"]
                    .as_table_mut()
                    .unwrap()
                    .insert("memory".into(), toml::Value::Boolean(true)),
                _ => bad.remove("policy"),
            };
            tables.push(bad);
        }
        for (i, t) in tables.iter().enumerate() {
            let (direct, via_text) = both(t);
            assert_eq!(
                direct,
                via_text,
                "table {i}:\n{}",
                toml::to_string(t).unwrap()
            );
            assert_eq!(direct.is_some(), i < good, "table {i}");
        }
    }
}

//! Calibration files: fixed costs of a real backend measured on one host (`migsim calibrate`),
//! applied to a scenario before it is simulated.
//!
//! ```toml
//! [switchover]            # replaces the scenario's [switchover]
//! pause_ms = 0.07
//! resume_ms = 0.75        # includes saving/loading vCPU state (see `state`)
//! state = "0 B"
//! [dirty_log]             # replaces the scenario's [dirty_log]
//! sync_fixed_us = 20
//! sync_us_per_gib = 40
//! sync_ns_per_dirty_page = 35
//! [link]
//! efficiency = 0.995      # achieved ÷ nominal rate under the pacer (scales link.bandwidth)
//! setup_ms = 5            # destination setup before round 0: setup_ms + setup_ms_per_gib × GiB
//! setup_ms_per_gib = 200
//! burst = "256 KiB"       # optional: sets link.burst (stop-and-copy credit of an idle pacer)
//! ```
//!
//! Every table and key is optional: what is absent keeps the scenario's value. Unknown keys
//! are rejected. Calibration only changes what the simulator assumes; the real backend never
//! reads it (it paces the link at the scenario's nominal rate).

use crate::scenario::{DirtyLogSpec, Scenario, SwitchoverSpec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use workloads::GIB;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Free-text provenance (host, date, how measured).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<SwitchoverSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty_log: Option<DirtyLogSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkCalibration>,
    /// What the guest achieved (informative: not applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<GuestCalibration>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkCalibration {
    /// Achieved ÷ nominal send rate of the paced link (multiplies `link.bandwidth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efficiency: Option<f64>,
    /// Destination setup before round 0, fixed part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_ms: Option<f64>,
    /// Destination setup before round 0, per GiB of guest memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup_ms_per_gib: Option<f64>,
    /// The pacer's burst (token-bucket depth): sets `link.burst`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<workloads::ByteSize>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestCalibration {
    /// Highest unique-page write rate the guest reached (pages/s).
    pub max_rate_pps: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("cannot read calibration {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("calibration {path}: {msg}")]
    Parse { path: String, msg: String },
    #[error("calibration {path}: {msg}")]
    Invalid { path: String, msg: String },
}

impl Calibration {
    pub fn load(path: &Path) -> Result<Calibration, CalibrationError> {
        let text = std::fs::read_to_string(path).map_err(|source| CalibrationError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let c: Calibration =
            crate::scenario::from_toml(&text).map_err(|msg| CalibrationError::Parse {
                path: path.display().to_string(),
                msg,
            })?;
        c.check().map_err(|msg| CalibrationError::Invalid {
            path: path.display().to_string(),
            msg,
        })?;
        Ok(c)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("calibration serialises to TOML")
    }

    fn check(&self) -> Result<(), String> {
        if let Some(l) = &self.link {
            if let Some(e) = l.efficiency {
                if !(e > 0.0 && e <= 2.0) {
                    return Err(format!("link.efficiency must be in (0, 2], got {e}"));
                }
            }
            for (v, name) in [
                (l.setup_ms, "setup_ms"),
                (l.setup_ms_per_gib, "setup_ms_per_gib"),
            ] {
                if let Some(v) = v {
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(format!("link.{name} must be a finite time ≥ 0, got {v}"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Replace the scenario's fixed costs by the measured ones. The scenario must still be
    /// checked afterwards (negative values are rejected there).
    pub fn apply(&self, sc: &mut Scenario) {
        if let Some(s) = &self.switchover {
            sc.switchover = s.clone();
        }
        if let Some(d) = &self.dirty_log {
            sc.dirty_log = d.clone();
        }
        if let Some(l) = &self.link {
            if let Some(e) = l.efficiency {
                sc.link.bandwidth.0 *= e;
            }
            if let Some(b) = l.burst {
                sc.link.burst = b;
            }
            let gib = sc.vm.memory.0 as f64 / GIB as f64;
            if l.setup_ms.is_some() || l.setup_ms_per_gib.is_some() {
                sc.link.setup_ms =
                    l.setup_ms.unwrap_or(0.0) + l.setup_ms_per_gib.unwrap_or(0.0) * gib;
            }
        }
    }
}

/// The calibration file a scenario should use: `flag` when given, else the scenario's own
/// `calibration` field resolved relative to the directory of `scenario_path`.
pub fn resolve(
    sc: &Scenario,
    scenario_path: Option<&Path>,
    flag: Option<&Path>,
) -> Option<PathBuf> {
    if let Some(f) = flag {
        return Some(f.to_path_buf());
    }
    let c = sc.calibration.as_ref()?;
    if c.is_absolute() {
        return Some(c.clone());
    }
    let base = scenario_path
        .and_then(|p| p.parent())
        .unwrap_or_else(|| Path::new(""));
    Some(base.join(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
note = "test"
[switchover]
pause_ms = 0.1
resume_ms = 0.8
state = "0 B"
[dirty_log]
sync_fixed_us = 15
sync_us_per_gib = 40
sync_ns_per_dirty_page = 35
[link]
efficiency = 0.5
setup_ms = 4
setup_ms_per_gib = 100
"#;

    #[test]
    fn apply_overrides_the_scenario_defaults() {
        let c: Calibration = crate::scenario::from_toml(FILE).unwrap();
        c.check().unwrap();
        let mut sc = Scenario::default_scenario();
        let bw = sc.link.bandwidth.0;
        c.apply(&mut sc);
        assert_eq!(sc.switchover.pause_ms, 0.1);
        assert_eq!(sc.switchover.state.0, 0);
        assert_eq!(sc.dirty_log.sync_ns_per_dirty_page, 35.0);
        assert_eq!(sc.link.bandwidth.0, bw * 0.5);
        // 4 GiB default scenario: 4 + 100 × 4
        assert!((sc.link.setup_ms - 404.0).abs() < 1e-9);
        sc.check().unwrap();
    }

    #[test]
    fn calibration_changes_the_prediction() {
        let mut sc = Scenario::default_scenario();
        sc.vm.memory = workloads::ByteSize(256 * workloads::MIB);
        sc.workload = workloads::WorkloadSpec::Idle(workloads::spec::IdleSpec { rate_pps: 0.0 });
        let base = crate::simulate(&sc.clone().check().unwrap(), 0);
        let c: Calibration = crate::scenario::from_toml(FILE).unwrap();
        c.apply(&mut sc);
        let cal = crate::simulate(&sc.check().unwrap(), 0);
        let d0 = base.report.downtime.unwrap();
        let d1 = cal.report.downtime.unwrap();
        assert_eq!(d1.pause_ns, 100_000);
        assert_eq!(d1.resume_ns, 800_000);
        assert_ne!(d0.total_ns(), d1.total_ns());
        // Half the bandwidth and 29 ms of setup: the total grows by more than the setup.
        assert!(cal.report.total_time_ns > base.report.total_time_ns + 29_000_000);
    }

    #[test]
    fn burst_shortens_only_the_stop_and_copy() {
        let mut sc = Scenario::default_scenario();
        sc.vm.memory = workloads::ByteSize(64 * workloads::MIB);
        sc.workload = workloads::WorkloadSpec::Uniform(workloads::spec::UniformSpec {
            wss: workloads::ByteSize(32 * workloads::MIB),
            rate_pps: 100_000.0,
            offset: workloads::ByteSize(0),
        });
        sc.policy = crate::policy::PolicySpec::by_name("hyperv-2008r2").unwrap();
        let base = crate::simulate(&sc.clone().check().unwrap(), 0);
        let c: Calibration = crate::scenario::from_toml("[link]\nburst = \"256 KiB\"\n").unwrap();
        c.apply(&mut sc);
        assert_eq!(sc.link.burst.0, 256 * 1024);
        let b = crate::simulate(&sc.check().unwrap(), 0);
        let (d0, d1) = (base.report.downtime.unwrap(), b.report.downtime.unwrap());
        assert_eq!(base.report.rounds, b.report.rounds);
        assert!(
            base.report.final_bytes > 256 * 1024,
            "{}",
            base.report.final_bytes
        );
        // 256 KiB at 1 Gbit/s = 2.097 ms less link time in the blackout.
        let saved = d0.transfer_ns - d1.transfer_ns;
        assert!((2_090_000..=2_100_000).contains(&saved), "saved {saved} ns");
    }

    #[test]
    fn partial_file_keeps_the_rest_and_bad_values_are_rejected() {
        let c: Calibration = crate::scenario::from_toml("[link]\nefficiency = 0.9\n").unwrap();
        let mut sc = Scenario::default_scenario();
        let before = sc.clone();
        c.apply(&mut sc);
        assert_eq!(sc.switchover, before.switchover);
        assert_eq!(sc.link.setup_ms, 0.0);
        let bad: Calibration = crate::scenario::from_toml("[link]\nefficiency = -1\n").unwrap();
        assert!(bad.check().is_err());
        assert!(crate::scenario::from_toml::<Calibration>("[link]\nspeed = 1\n").is_err());
    }

    #[test]
    fn flag_wins_and_field_is_relative_to_the_scenario() {
        let mut sc = Scenario::default_scenario();
        assert_eq!(resolve(&sc, Some(Path::new("a/b.toml")), None), None);
        sc.calibration = Some("cal.toml".into());
        assert_eq!(
            resolve(&sc, Some(Path::new("a/b.toml")), None),
            Some(PathBuf::from("a/cal.toml"))
        );
        assert_eq!(
            resolve(&sc, Some(Path::new("a/b.toml")), Some(Path::new("x.toml"))),
            Some(PathBuf::from("x.toml"))
        );
        let text =
            "calibration = \"c.toml\"\n".to_string() + &Scenario::default_scenario().to_toml();
        let parsed = Scenario::from_toml_str(&text).unwrap();
        assert_eq!(parsed.calibration, Some(PathBuf::from("c.toml")));
    }
}

//! Workload specifications as written in scenario files, and their checked form.

use crate::units::ByteSize;
use serde::{Deserialize, Serialize};

/// A problem with one field of an input file, named by its dotted path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(path: impl Into<String>, problem: impl Into<String>) -> Self {
        FieldError {
            path: path.into(),
            problem: problem.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// Default write rate of an idle guest: 50 pages/s ≈ 0.2 MB/s (REFERENCE: idle Linux 0.15–0.3 MB/s).
pub const IDLE_RATE_PPS: f64 = 50.0;

/// A page-dirtying model as written in a scenario (`[workload]` table, `kind = ...`).
///
/// Rates are page writes per second of guest CPU time (a throttled guest writes proportionally
/// less per second of wall time). Regions are placed from `offset` (default 0) upward.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkloadSpec {
    /// Background writes spread over all of memory at a low rate.
    Idle(IdleSpec),
    /// Writes uniformly distributed over a working set.
    Uniform(UniformSpec),
    /// Two classes: a small hot set written often and a large cold set written rarely.
    HotCold(HotColdSpec),
    /// Writes whose page popularity follows a Zipf law over a working set.
    Zipf(ZipfSpec),
    /// A sequential scan that writes pages in address order, wrapping around its region.
    Scan(ScanSpec),
    /// A list of phases run one after the other (optionally repeated).
    Phased(PhasedSpec),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdleSpec {
    #[serde(default = "idle_rate")]
    pub rate_pps: f64,
}

fn idle_rate() -> f64 {
    IDLE_RATE_PPS
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UniformSpec {
    pub wss: ByteSize,
    pub rate_pps: f64,
    #[serde(default)]
    pub offset: ByteSize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HotColdSpec {
    pub hot_wss: ByteSize,
    pub hot_rate_pps: f64,
    /// Cold region size; defaults to the rest of memory after the hot set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_wss: Option<ByteSize>,
    pub cold_rate_pps: f64,
    #[serde(default)]
    pub offset: ByteSize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZipfSpec {
    pub wss: ByteSize,
    pub rate_pps: f64,
    #[serde(default = "zipf_exponent")]
    pub exponent: f64,
    #[serde(default)]
    pub offset: ByteSize,
}

fn zipf_exponent() -> f64 {
    0.99
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanSpec {
    /// Region scanned; defaults to all of memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wss: Option<ByteSize>,
    pub rate_pps: f64,
    #[serde(default)]
    pub offset: ByteSize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhasedSpec {
    pub phases: Vec<PhaseSpec>,
    /// Start over after the last phase (default true); otherwise the last phase runs forever.
    #[serde(default = "yes")]
    pub repeat: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    pub duration_ms: f64,
    pub workload: WorkloadSpec,
}

/// One class of writes in checked form: a page region and a pattern over it.
#[derive(Clone, Debug, PartialEq)]
pub struct Class {
    pub first_page: u64,
    pub pages: u64,
    pub rate_pps: f64,
    pub pattern: Pattern,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pattern {
    Uniform,
    Zipf { exponent: f64 },
    Sequential,
}

/// A checked workload: every region lies inside guest memory and every rate is finite and ≥ 0.
#[derive(Clone, Debug, PartialEq)]
pub enum Workload {
    /// Independent classes running concurrently.
    Classes(Vec<Class>),
    /// Phases of concurrent classes, each for `duration_ns` of guest time.
    Phased {
        phases: Vec<(u64, Vec<Class>)>,
        repeat: bool,
    },
    /// A recorded sequence of `(t_ns, page)` writes, replayed as it is (no seed involved);
    /// no writes after its end.
    Trace(crate::trace::Trace),
}

impl Workload {
    /// Total write rate (pages/s of guest time) of the first phase.
    pub fn nominal_rate_pps(&self) -> f64 {
        match self {
            Workload::Classes(c) => c.iter().map(|c| c.rate_pps).sum(),
            Workload::Phased { phases, .. } => phases
                .first()
                .map_or(0.0, |p| p.1.iter().map(|c| c.rate_pps).sum()),
            Workload::Trace(t) => t.rate_pps(),
        }
    }

    /// The pages the workload may ever write, as sorted, disjoint `[start, end)` ranges (a
    /// recorded trace: any page).
    pub fn written_ranges(&self) -> Vec<(u64, u64)> {
        let classes: Vec<&Class> = match self {
            Workload::Classes(c) => c.iter().collect(),
            Workload::Phased { phases, .. } => phases.iter().flat_map(|p| &p.1).collect(),
            Workload::Trace(_) => return vec![(0, u64::MAX)],
        };
        let mut r: Vec<(u64, u64)> = classes
            .into_iter()
            .filter(|c| c.rate_pps > 0.0 && c.pages > 0)
            .map(|c| (c.first_page, c.first_page + c.pages))
            .collect();
        r.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
        for (s, e) in r {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        out
    }
}

fn check_rate(rate: f64, path: &str, errs: &mut Vec<FieldError>) {
    if !rate.is_finite() || rate < 0.0 {
        errs.push(FieldError::new(
            path,
            format!("must be a finite rate ≥ 0 pages/s, got {rate}"),
        ));
    }
}

fn region(
    offset: ByteSize,
    size: ByteSize,
    page_size: u64,
    mem_pages: u64,
    path: &str,
    size_field: &str,
    errs: &mut Vec<FieldError>,
) -> (u64, u64) {
    let first = offset.0 / page_size;
    let pages = size.0.div_ceil(page_size);
    if pages == 0 {
        errs.push(FieldError::new(
            format!("{path}.{size_field}"),
            "must be larger than zero",
        ));
    } else if first.saturating_add(pages) > mem_pages {
        errs.push(FieldError::new(
            format!("{path}.{size_field}"),
            format!(
                "region of {size} at offset {offset} does not fit in guest memory of {}",
                ByteSize(mem_pages * page_size)
            ),
        ));
    }
    (first, pages)
}

impl WorkloadSpec {
    /// Validate against a VM of `mem_pages` pages of `page_size` bytes. `path` is the field path
    /// of this table in the input file (e.g. `workload`).
    pub fn check(
        &self,
        mem_pages: u64,
        page_size: u64,
        path: &str,
    ) -> Result<Workload, Vec<FieldError>> {
        let mut errs = Vec::new();
        let w = match self {
            WorkloadSpec::Phased(p) => {
                let mut phases = Vec::new();
                if p.phases.is_empty() {
                    errs.push(FieldError::new(
                        format!("{path}.phases"),
                        "needs at least one phase",
                    ));
                }
                for (i, ph) in p.phases.iter().enumerate() {
                    let pp = format!("{path}.phases[{i}]");
                    if !ph.duration_ms.is_finite() || ph.duration_ms <= 0.0 {
                        errs.push(FieldError::new(
                            format!("{pp}.duration_ms"),
                            "must be a finite duration > 0",
                        ));
                    }
                    if matches!(ph.workload, WorkloadSpec::Phased(_)) {
                        errs.push(FieldError::new(
                            format!("{pp}.workload"),
                            "phases cannot be nested",
                        ));
                        continue;
                    }
                    match ph
                        .workload
                        .classes(mem_pages, page_size, &format!("{pp}.workload"))
                    {
                        Ok(c) => phases.push(((ph.duration_ms * 1e6).round() as u64, c)),
                        Err(e) => errs.extend(e),
                    }
                }
                Workload::Phased {
                    phases,
                    repeat: p.repeat,
                }
            }
            other => match other.classes(mem_pages, page_size, path) {
                Ok(c) => Workload::Classes(c),
                Err(e) => return Err(e),
            },
        };
        if errs.is_empty() {
            Ok(w)
        } else {
            Err(errs)
        }
    }

    fn classes(
        &self,
        mem_pages: u64,
        page_size: u64,
        path: &str,
    ) -> Result<Vec<Class>, Vec<FieldError>> {
        let mut errs = Vec::new();
        let mut out = Vec::new();
        match self {
            WorkloadSpec::Idle(s) => {
                check_rate(s.rate_pps, &format!("{path}.rate_pps"), &mut errs);
                out.push(Class {
                    first_page: 0,
                    pages: mem_pages,
                    rate_pps: s.rate_pps,
                    pattern: Pattern::Uniform,
                });
            }
            WorkloadSpec::Uniform(s) => {
                check_rate(s.rate_pps, &format!("{path}.rate_pps"), &mut errs);
                let (first, pages) = region(
                    s.offset, s.wss, page_size, mem_pages, path, "wss", &mut errs,
                );
                out.push(Class {
                    first_page: first,
                    pages,
                    rate_pps: s.rate_pps,
                    pattern: Pattern::Uniform,
                });
            }
            WorkloadSpec::Zipf(s) => {
                check_rate(s.rate_pps, &format!("{path}.rate_pps"), &mut errs);
                if !s.exponent.is_finite() || s.exponent <= 0.0 {
                    errs.push(FieldError::new(
                        format!("{path}.exponent"),
                        format!("must be > 0, got {}", s.exponent),
                    ));
                }
                let (first, pages) = region(
                    s.offset, s.wss, page_size, mem_pages, path, "wss", &mut errs,
                );
                out.push(Class {
                    first_page: first,
                    pages,
                    rate_pps: s.rate_pps,
                    pattern: Pattern::Zipf {
                        exponent: s.exponent,
                    },
                });
            }
            WorkloadSpec::Scan(s) => {
                check_rate(s.rate_pps, &format!("{path}.rate_pps"), &mut errs);
                let size = s
                    .wss
                    .unwrap_or(ByteSize((mem_pages * page_size).saturating_sub(s.offset.0)));
                let (first, pages) =
                    region(s.offset, size, page_size, mem_pages, path, "wss", &mut errs);
                out.push(Class {
                    first_page: first,
                    pages,
                    rate_pps: s.rate_pps,
                    pattern: Pattern::Sequential,
                });
            }
            WorkloadSpec::HotCold(s) => {
                check_rate(s.hot_rate_pps, &format!("{path}.hot_rate_pps"), &mut errs);
                check_rate(s.cold_rate_pps, &format!("{path}.cold_rate_pps"), &mut errs);
                let (hf, hp) = region(
                    s.offset, s.hot_wss, page_size, mem_pages, path, "hot_wss", &mut errs,
                );
                let cold_off = ByteSize((hf + hp) * page_size);
                let cold = s
                    .cold_wss
                    .unwrap_or(ByteSize((mem_pages * page_size).saturating_sub(cold_off.0)));
                let (cf, cp) = region(
                    cold_off, cold, page_size, mem_pages, path, "cold_wss", &mut errs,
                );
                out.push(Class {
                    first_page: hf,
                    pages: hp,
                    rate_pps: s.hot_rate_pps,
                    pattern: Pattern::Uniform,
                });
                out.push(Class {
                    first_page: cf,
                    pages: cp,
                    rate_pps: s.cold_rate_pps,
                    pattern: Pattern::Uniform,
                });
            }
            WorkloadSpec::Phased(_) => {
                errs.push(FieldError::new(path.to_string(), "phases cannot be nested"));
            }
        }
        if errs.is_empty() {
            Ok(out)
        } else {
            Err(errs)
        }
    }
}

impl WorkloadSpec {
    /// Stable name of the workload kind, as written in scenario files.
    pub fn kind_name(&self) -> &'static str {
        match self {
            WorkloadSpec::Idle(_) => "idle",
            WorkloadSpec::Uniform(_) => "uniform",
            WorkloadSpec::HotCold(_) => "hot_cold",
            WorkloadSpec::Zipf(_) => "zipf",
            WorkloadSpec::Scan(_) => "scan",
            WorkloadSpec::Phased(_) => "phased",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_ranges_merge_the_classes_that_write() {
        let class = |first_page, pages, rate_pps| Class {
            first_page,
            pages,
            rate_pps,
            pattern: Pattern::Uniform,
        };
        let w = Workload::Phased {
            phases: vec![
                (1, vec![class(10, 5, 1.0), class(100, 10, 0.0)]),
                (
                    1,
                    vec![class(12, 8, 3.0), class(40, 2, 1.0), class(0, 3, 2.0)],
                ),
            ],
            repeat: false,
        };
        assert_eq!(w.written_ranges(), vec![(0, 3), (10, 20), (40, 42)]);
        let t = Workload::Trace(crate::trace::Trace::new(vec![(1, 5)]));
        assert_eq!(t.written_ranges(), vec![(0, u64::MAX)]);
    }
}

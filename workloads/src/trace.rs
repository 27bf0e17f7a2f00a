//! Recorded write traces: a list of `(t_ns, page)` writes, replayed instead of a model.
//!
//! File format (CSV, written by `migsim real --record-trace FILE`): lines starting with `#` are
//! comments, then a header `t_ns,page`, then one write per line with non-decreasing `t_ns`
//! (guest time since the migration started).

use std::io::{BufRead, Write};
use std::sync::Arc;

/// A checked trace: writes sorted by time, every page inside guest memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub writes: Arc<Vec<(u64, u64)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot read the trace: {0}")]
    Io(#[from] std::io::Error),
    #[error("trace line {line}: {problem}")]
    Bad { line: usize, problem: String },
}

impl Trace {
    /// Sort by time (stable: pages at the same time keep their order).
    pub fn new(mut writes: Vec<(u64, u64)>) -> Trace {
        writes.sort_by_key(|w| w.0);
        Trace {
            writes: Arc::new(writes),
        }
    }

    /// Duration covered (time of the last write).
    pub fn end_ns(&self) -> u64 {
        self.writes.last().map_or(0, |w| w.0)
    }

    /// Average write rate over the trace.
    pub fn rate_pps(&self) -> f64 {
        let end = self.end_ns();
        if end == 0 {
            0.0
        } else {
            self.writes.len() as f64 * 1e9 / end as f64
        }
    }

    pub fn write_csv<W: Write>(&self, mut w: W, comment: &str) -> std::io::Result<()> {
        for line in comment.lines() {
            writeln!(w, "# {line}")?;
        }
        writeln!(w, "t_ns,page")?;
        for (t, p) in self.writes.iter() {
            writeln!(w, "{t},{p}")?;
        }
        Ok(())
    }

    /// Read a trace; pages at or beyond `mem_pages` are an error.
    pub fn read_csv<R: BufRead>(r: R, mem_pages: u64) -> Result<Trace, TraceError> {
        let mut writes = Vec::new();
        let mut header = false;
        for (i, line) in r.lines().enumerate() {
            let line = line?;
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if !header {
                if l != "t_ns,page" {
                    return Err(TraceError::Bad {
                        line: i + 1,
                        problem: format!("expected the header `t_ns,page`, got `{l}`"),
                    });
                }
                header = true;
                continue;
            }
            let bad = |problem: String| TraceError::Bad {
                line: i + 1,
                problem,
            };
            let (t, p) = l
                .split_once(',')
                .ok_or_else(|| bad(format!("expected `t_ns,page`, got `{l}`")))?;
            let t: u64 = t
                .trim()
                .parse()
                .map_err(|e| bad(format!("bad time `{t}`: {e}")))?;
            let p: u64 = p
                .trim()
                .parse()
                .map_err(|e| bad(format!("bad page `{p}`: {e}")))?;
            if p >= mem_pages {
                return Err(bad(format!(
                    "page {p} is outside guest memory of {mem_pages} pages"
                )));
            }
            writes.push((t, p));
        }
        Ok(Trace::new(writes))
    }
}

/// Spread each harvested dirty set evenly over the interval before its harvest: the pages of
/// `sets[k]` are written at times in `(times[k-1], times[k]]` (from 0 for the first).
pub fn from_harvests(sets: &[Vec<u64>], times_ns: &[u64]) -> Trace {
    let mut writes = Vec::new();
    let mut prev = 0u64;
    for (pages, &t) in sets.iter().zip(times_ns) {
        let span = t.saturating_sub(prev);
        let n = pages.len() as u64;
        for (i, &p) in pages.iter().enumerate() {
            // i-th of n pages at prev + span·(i+1)/n: the last one exactly at the harvest.
            let at = prev + (span as u128 * (i as u128 + 1) / n.max(1) as u128) as u64;
            writes.push((at, p));
        }
        prev = prev.max(t);
    }
    Trace::new(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trip_and_errors() {
        let t = Trace::new(vec![(5, 1), (2, 3), (9, 0)]);
        let mut buf = Vec::new();
        t.write_csv(&mut buf, "made by a test").unwrap();
        let back = Trace::read_csv(&buf[..], 4).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.writes[0], (2, 3));
        assert!(Trace::read_csv(&buf[..], 3).is_err(), "page 3 of 3 pages");
        assert!(Trace::read_csv(&b"t,p\n1,2\n"[..], 4).is_err());
        assert!(Trace::read_csv(&b"t_ns,page\n1;2\n"[..], 4).is_err());
    }

    #[test]
    fn harvests_are_spread_before_their_harvest() {
        let t = from_harvests(&[vec![7, 8], vec![1, 2, 3, 4]], &[100, 500]);
        let w: Vec<(u64, u64)> = t.writes.iter().copied().collect();
        assert_eq!(
            w,
            vec![(50, 7), (100, 8), (200, 1), (300, 2), (400, 3), (500, 4)]
        );
    }
}

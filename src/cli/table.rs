//! Small shared helpers for the harness commands: reading the CSV files `migsim` writes, a stable
//! hash for point ids, and XML escaping for JUnit output.
//!
//! The CSV reader understands exactly the dialect `sim::metrics::csv_field` writes (RFC 4180
//! quoting, `\n` line ends); it is not a general CSV library.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// A CSV file held as strings: a header and rows of the same width.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    index: HashMap<String, usize>,
}

impl Table {
    pub fn new(header: Vec<String>, rows: Vec<Vec<String>>) -> Table {
        let index = header
            .iter()
            .enumerate()
            .map(|(i, h)| (h.clone(), i))
            .collect();
        Table {
            header,
            rows,
            index,
        }
    }

    /// Read and parse a CSV file. An incomplete trailing line (no final newline) is ignored: it
    /// is what an interrupted append leaves behind.
    pub fn read(path: &Path) -> Result<Table> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        Table::parse(complete_lines(&text)).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Table> {
        let mut records = parse_records(text)?.into_iter();
        let Some(header) = records.next() else {
            bail!("empty file (no header line)");
        };
        let mut rows = Vec::new();
        for (i, r) in records.enumerate() {
            if r.len() != header.len() {
                bail!(
                    "row {} has {} fields, the header has {}",
                    i + 1,
                    r.len(),
                    header.len()
                );
            }
            rows.push(r);
        }
        Ok(Table::new(header, rows))
    }

    /// Index of a column.
    pub fn col(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Index of a column that must exist.
    pub fn need(&self, name: &str) -> Result<usize> {
        self.col(name)
            .with_context(|| format!("column `{name}` is missing"))
    }

    /// The `param_*` columns, in file order.
    pub fn param_columns(&self) -> Vec<(usize, String)> {
        self.header
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.strip_prefix("param_").map(|n| (i, n.to_string())))
            .collect()
    }
}

/// The prefix of `text` made of complete (newline-terminated) lines.
pub fn complete_lines(text: &str) -> &str {
    match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    }
}

/// Split CSV text into records of fields, honouring quotes.
pub fn parse_records(text: &str) -> Result<Vec<Vec<String>>> {
    let mut out = Vec::new();
    let mut rec = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut line = 1usize;
    let mut any = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c)
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() => in_quotes = true,
            ',' => rec.push(std::mem::take(&mut field)),
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                rec.push(std::mem::take(&mut field));
                out.push(std::mem::take(&mut rec));
                line += 1;
                any = false;
                continue;
            }
            _ => field.push(c),
        }
        any = true;
    }
    if in_quotes {
        bail!("unterminated quoted field at line {line}");
    }
    if any {
        rec.push(field);
        out.push(rec);
    }
    Ok(out)
}

/// 64-bit FNV-1a's starting state. (FNV-1a: tiny, stable across platforms, Rust versions and
/// runs, unlike `DefaultHasher`.)
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64 of `bytes` continued from state `h` (the hash of a text is that of its pieces in
/// turn, from [`FNV_START`]).
pub fn fnv1a64_from(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Escape text for an XML attribute or element.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim::metrics::csv_field;

    #[test]
    fn csv_round_trips_quoted_fields() {
        let fields = ["plain", "a,b", "say \"hi\"", "", "two\nlines"];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        let text = format!("h1,h2,h3,h4,h5\n{}\n", line.join(","));
        let t = Table::parse(&text).unwrap();
        assert_eq!(t.rows.len(), 1);
        assert_eq!(t.rows[0], fields.map(String::from).to_vec());
    }

    #[test]
    fn incomplete_trailing_line_is_dropped() {
        let t = Table::parse(complete_lines("a,b\n1,2\n3,")).unwrap();
        assert_eq!(t.rows, vec![vec!["1".to_string(), "2".to_string()]]);
    }

    #[test]
    fn ragged_rows_are_rejected() {
        assert!(Table::parse("a,b\n1\n").is_err());
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64_from(FNV_START, b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64_from(FNV_START, b"a"), 0xaf63dc4c8601ec8c);
    }
}

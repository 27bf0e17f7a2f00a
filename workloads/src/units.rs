//! Quantities with units as they appear in scenario files.
//!
//! Sizes accept an integer number of bytes or a string such as `"4 GiB"`, `"256MiB"`, `"1.5 GB"`.
//! Bandwidths accept a number of bits per second or a string such as `"1 Gbit/s"`, `"125 MB/s"`,
//! `"10Gbps"`. Parsing never panics; errors are lowercase fragments that name the problem.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// A data rate in bits per second.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Default)]
pub struct Bandwidth(pub f64);

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

fn split_number(s: &str) -> Result<(f64, String), String> {
    let s = s.trim();
    let end = s
        .find(|c: char| {
            !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e' || c == 'E')
        })
        .unwrap_or(s.len());
    // "e" may start a unit such as "EiB"; only treat it as an exponent when followed by a digit.
    let (mut num, mut unit) = s.split_at(end);
    if let Some(pos) = num.find(['e', 'E']) {
        if !num[pos + 1..].starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') {
            (num, unit) = s.split_at(pos);
        }
    }
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` does not start with a number"))?;
    if !value.is_finite() {
        return Err(format!("`{s}` is not a finite number"));
    }
    Ok((value, unit.trim().to_string()))
}

impl ByteSize {
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let (value, unit) = split_number(s)?;
        let mult: u64 = match unit.as_str() {
            "" | "B" | "b" | "bytes" => 1,
            "K" | "KiB" | "k" => KIB,
            "M" | "MiB" => MIB,
            "G" | "GiB" => GIB,
            "T" | "TiB" => 1024 * GIB,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(format!(
                "unknown size unit `{other}` in `{s}` (use B, KiB, MiB, GiB, TiB, kB, MB, GB, TB)"
            ))
            }
        };
        if value < 0.0 {
            return Err(format!("size `{s}` is negative"));
        }
        let bytes = value * mult as f64;
        if bytes > u64::MAX as f64 / 2.0 {
            return Err(format!("size `{s}` is too large"));
        }
        if bytes.fract() != 0.0 {
            return Err(format!("size `{s}` is not a whole number of bytes"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, m) in [
            ("TiB", 1024 * GIB),
            ("GiB", GIB),
            ("MiB", MIB),
            ("KiB", KIB),
        ] {
            if b >= m && b.is_multiple_of(m) {
                return write!(f, "{} {unit}", b / m);
            }
        }
        write!(f, "{b} B")
    }
}

impl Bandwidth {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (value, unit) = split_number(s)?;
        let mult: f64 = match unit.as_str() {
            "" | "bit/s" | "bps" | "b/s" => 1.0,
            "kbit/s" | "Kbit/s" | "kbps" | "Kbps" => 1e3,
            "Mbit/s" | "Mbps" | "mbps" => 1e6,
            "Gbit/s" | "Gbps" | "gbps" => 1e9,
            "B/s" => 8.0,
            "kB/s" | "KB/s" => 8e3,
            "MB/s" => 8e6,
            "GB/s" => 8e9,
            "KiB/s" => 8.0 * KIB as f64,
            "MiB/s" => 8.0 * MIB as f64,
            "GiB/s" => 8.0 * GIB as f64,
            other => {
                return Err(format!(
                    "unknown bandwidth unit `{other}` in `{s}` (use bit/s, Mbit/s, Gbit/s, MB/s, MiB/s, GB/s)"
                ))
            }
        };
        Ok(Bandwidth(value * mult))
    }

    pub fn bytes_per_sec(&self) -> f64 {
        self.0 / 8.0
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, m) in [("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)] {
            if b >= m && (b / m).fract() == 0.0 {
                return write!(f, "{} {unit}", b / m);
            }
        }
        if b >= 8e6 && (b / 8e6).fract() == 0.0 {
            return write!(f, "{} MB/s", b / 8e6);
        }
        write!(f, "{b} bit/s")
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Int(i64),
    Float(f64),
    Text(String),
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Int(i) if i >= 0 => Ok(ByteSize(i as u64)),
            NumOrText::Int(i) => Err(serde::de::Error::custom(format!("size {i} is negative"))),
            NumOrText::Float(x) => {
                ByteSize::parse(&x.to_string()).map_err(serde::de::Error::custom)
            }
            NumOrText::Text(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Bandwidth {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrText::deserialize(d)? {
            NumOrText::Int(i) => Ok(Bandwidth(i as f64)),
            NumOrText::Float(x) => Ok(Bandwidth(x)),
            NumOrText::Text(s) => Bandwidth::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Bandwidth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes() {
        assert_eq!(ByteSize::parse("4 GiB").unwrap().0, 4 * GIB);
        assert_eq!(ByteSize::parse("256MiB").unwrap().0, 256 * MIB);
        assert_eq!(ByteSize::parse("1.5 GB").unwrap().0, 1_500_000_000);
        assert_eq!(ByteSize::parse("4096").unwrap().0, 4096);
        assert!(ByteSize::parse("2EiB")
            .unwrap_err()
            .contains("unknown size unit `EiB`"));
        assert!(ByteSize::parse("-1GiB").unwrap_err().contains("negative"));
        assert!(ByteSize::parse("lots").is_err());
    }

    #[test]
    fn parses_bandwidths() {
        assert_eq!(Bandwidth::parse("1 Gbit/s").unwrap().0, 1e9);
        assert_eq!(Bandwidth::parse("125 MB/s").unwrap().0, 1e9);
        assert_eq!(Bandwidth::parse("10Gbps").unwrap().0, 1e10);
        assert!(Bandwidth::parse("1 furlong/s").is_err());
    }

    #[test]
    fn display_round_trips() {
        for s in ["4 GiB", "1 KiB", "12345 B"] {
            let b = ByteSize::parse(s).unwrap();
            assert_eq!(ByteSize::parse(&b.to_string()).unwrap(), b);
        }
        for s in ["1 Gbit/s", "250 Mbit/s", "125 MB/s", "3 bit/s"] {
            let b = Bandwidth::parse(s).unwrap();
            assert_eq!(Bandwidth::parse(&b.to_string()).unwrap(), b);
        }
    }
}

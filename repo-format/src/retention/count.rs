//! Count rules' limit: how many buckets `last`, `hourly`, ... `yearly` may keep.
//!
//! Pure parsing and arithmetic; may use only [`crate::error`].

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// How many buckets a count rule keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeepCount {
    /// Keep up to this many buckets. `N(0)` switches the rule off.
    N(u32),
    /// Keep every bucket (restic's `-1`).
    All,
}

impl KeepCount {
    /// Whether the rule keeps anything at all (everything but `N(0)`).
    pub fn is_active(self) -> bool {
        self != KeepCount::N(0)
    }

    /// Whether one more bucket may be used after `used` buckets.
    pub(super) fn admits(self, used: u64) -> bool {
        match self {
            KeepCount::N(n) => used < u64::from(n),
            KeepCount::All => true,
        }
    }
}

impl fmt::Display for KeepCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepCount::N(n) => write!(f, "{n}"),
            KeepCount::All => f.write_str("all"),
        }
    }
}

impl FromStr for KeepCount {
    type Err = Error;

    /// Parses `7`, or `all` / `unlimited` / `-1` for [`KeepCount::All`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        match t {
            "all" | "unlimited" | "-1" => return Ok(KeepCount::All),
            _ => {}
        }
        let err = |reason: &str| Error::InvalidKeepCount {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(
                "expected a non-negative whole number, or \"all\" / -1 for unlimited",
            ));
        }
        t.parse::<u32>()
            .map(KeepCount::N)
            .map_err(|_| err("number too large (use \"all\" for unlimited)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_count_parse() {
        let ok: Vec<(&str, KeepCount)> = vec![
            ("7", KeepCount::N(7)),
            (" 0 ", KeepCount::N(0)),
            ("all", KeepCount::All),
            ("unlimited", KeepCount::All),
            ("-1", KeepCount::All),
            ("4294967295", KeepCount::N(u32::MAX)),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<KeepCount>().unwrap(), want, "{s}");
        }
        for s in ["", "-2", "x", "+3", "1.5", "4294967296"] {
            let e = s.parse::<KeepCount>().unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("invalid keep count {s:?}")),
                "{e}"
            );
        }
        assert_eq!(KeepCount::All.to_string(), "all");
        assert_eq!(KeepCount::N(3).to_string(), "3");
    }
}

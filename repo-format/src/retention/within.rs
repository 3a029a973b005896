//! The keep-within duration (`30d`, `1y6m`, `2w`, `12h`): its parsing, display and the
//! calendar-aware cut-off it puts before a reference time.
//!
//! Pure: the reference time and the zone are parameters, the clock is never read. May use
//! [`crate::error`] and jiff.

use std::fmt;
use std::str::FromStr;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};

use crate::error::Error;

/// A keep-within duration such as `1y6m`, `30d`, `2w` or `12h`.
///
/// Always non-zero and within jiff's span limits (guaranteed by
/// [`FromStr`] and [`KeepWithin::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeepWithin {
    years: u32,
    months: u32,
    weeks: u32,
    days: u32,
    hours: u32,
}

impl KeepWithin {
    /// Builds a duration from its parts; errors when all parts are zero or a
    /// part is out of range.
    pub fn new(years: u32, months: u32, weeks: u32, days: u32, hours: u32) -> Result<Self, Error> {
        let w = KeepWithin {
            years,
            months,
            weeks,
            days,
            hours,
        };
        w.validate().map_err(|reason| Error::InvalidKeepWithin {
            input: w.to_string(),
            reason,
        })?;
        Ok(w)
    }

    /// Years part.
    pub fn years(&self) -> u32 {
        self.years
    }

    /// Months part.
    pub fn months(&self) -> u32 {
        self.months
    }

    /// Weeks part (Coffer extension).
    pub fn weeks(&self) -> u32 {
        self.weeks
    }

    /// Days part.
    pub fn days(&self) -> u32 {
        self.days
    }

    /// Hours part.
    pub fn hours(&self) -> u32 {
        self.hours
    }

    pub(super) fn is_zero(&self) -> bool {
        self.years == 0 && self.months == 0 && self.weeks == 0 && self.days == 0 && self.hours == 0
    }

    fn validate(&self) -> Result<(), String> {
        if self.is_zero() {
            return Err("the duration must be greater than zero".to_string());
        }
        self.calendar_span()
            .and_then(|_| self.hours_span())
            .map(|_| ())
            .ok_or_else(|| "the duration is out of range".to_string())
    }

    fn calendar_span(&self) -> Option<Span> {
        Span::new()
            .try_years(self.years)
            .ok()?
            .try_months(self.months)
            .ok()?
            .try_weeks(self.weeks)
            .ok()?
            .try_days(self.days)
            .ok()
    }

    fn hours_span(&self) -> Option<Span> {
        Span::new().try_hours(self.hours).ok()
    }

    /// The instant `reference - self`, computed in `tz` (calendar parts in
    /// civil time, then hours as elapsed time). `None` when the result is
    /// before the earliest representable instant, i.e. everything is within.
    pub fn cutoff(&self, reference: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let shifted = reference
            .to_zoned(tz.clone())
            .checked_sub(self.calendar_span()?)
            .ok()?;
        shifted.timestamp().checked_sub(self.hours_span()?).ok()
    }
}

impl fmt::Display for KeepWithin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.weeks, 'w'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ];
        let mut wrote = false;
        for (n, unit) in parts {
            if n != 0 {
                write!(f, "{n}{unit}")?;
                wrote = true;
            }
        }
        if !wrote {
            // Not constructible through the public API; keep Display total.
            f.write_str("0h")?;
        }
        Ok(())
    }
}

impl FromStr for KeepWithin {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| Error::InvalidKeepWithin {
            input: s.to_string(),
            reason,
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(err(
                "empty duration (expected e.g. 30d, 2w, 12h or 1y6m)".to_string()
            ));
        }
        let mut parts: [Option<u32>; 5] = [None; 5]; // y m w d h
        let mut chars = text.chars().peekable();
        while chars.peek().is_some() {
            let mut digits = String::new();
            while let Some(c) = chars.peek().copied().filter(char::is_ascii_digit) {
                digits.push(c);
                chars.next();
            }
            let Some(unit) = chars.next() else {
                return Err(err(format!(
                    "missing unit after {digits} (expected y, m, w, d or h)"
                )));
            };
            if digits.is_empty() {
                return Err(err(if unit == '-' {
                    "negative durations are not allowed".to_string()
                } else {
                    format!("expected a number before {unit:?}")
                }));
            }
            let slot = match unit {
                'y' => 0,
                'm' => 1,
                'w' => 2,
                'd' => 3,
                'h' => 4,
                other => {
                    return Err(err(format!(
                        "unknown unit {other:?} after {digits} (expected y, m, w, d or h)"
                    )))
                }
            };
            if parts[slot].is_some() {
                return Err(err(format!("unit {unit:?} given more than once")));
            }
            let n = digits
                .parse::<u32>()
                .map_err(|_| err(format!("number {digits} is too large")))?;
            parts[slot] = Some(n);
        }
        let [y, m, w, d, h] = parts.map(|p| p.unwrap_or(0));
        let within = KeepWithin {
            years: y,
            months: m,
            weeks: w,
            days: d,
            hours: h,
        };
        within.validate().map_err(err)?;
        Ok(within)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::testing::*;
    use crate::retention::{Candidate, Policy};

    #[test]
    fn keep_within() {
        let utc = TimeZone::UTC;
        let base = [
            snap("newest", "2025-06-15T12:00:00Z"),
            snap("h12-in", "2025-06-15T00:00:01Z"),
            snap("h12-edge", "2025-06-15T00:00:00Z"),
            snap("w2-in", "2025-06-01T12:00:01Z"),
            snap("w2-out", "2025-06-01T11:59:00Z"),
            snap("d30-in", "2025-05-16T12:00:01Z"),
            snap("d30-edge", "2025-05-16T12:00:00Z"),
            snap("y1m6-in", "2023-12-15T12:00:01Z"),
            snap("y1m6-edge", "2023-12-15T12:00:00Z"),
        ];
        let berlin = zone("Europe/Berlin");
        // 1d across spring forward in Berlin: 2025-03-30 14:00 CEST minus one
        // civil day is 2025-03-29 14:00 CET = 13:00Z (23 real hours).
        let dst = [
            snap("ref", "2025-03-30T12:00:00Z"),
            snap("23h-ago+1s", "2025-03-29T13:00:01Z"),
            snap("23.5h-ago", "2025-03-29T12:30:00Z"),
            snap("24h-ago", "2025-03-29T12:00:00Z"),
        ];
        // Month-end clamping: 2025-03-31 minus 1m is 2025-02-28.
        let month_end = [
            snap("ref", "2025-03-31T12:00:00Z"),
            snap("feb28-in", "2025-02-28T12:00:01Z"),
            snap("feb28-out", "2025-02-28T11:00:00Z"),
        ];
        let cases: Vec<(&str, &TimeZone, &[Candidate], Vec<&str>)> = vec![
            ("12h", &utc, &base, vec!["newest", "h12-in"]),
            (
                "2w",
                &utc,
                &base,
                vec!["newest", "h12-in", "h12-edge", "w2-in"],
            ),
            (
                "30d",
                &utc,
                &base,
                vec!["newest", "h12-in", "h12-edge", "w2-in", "w2-out", "d30-in"],
            ),
            (
                "1y6m",
                &utc,
                &base,
                vec![
                    "newest", "h12-in", "h12-edge", "w2-in", "w2-out", "d30-in", "d30-edge",
                    "y1m6-in",
                ],
            ),
            ("1d", &berlin, &dst, vec!["ref", "23h-ago+1s"]),
            ("24h", &berlin, &dst, vec!["ref", "23h-ago+1s", "23.5h-ago"]),
            ("1d", &utc, &dst, vec!["ref", "23h-ago+1s", "23.5h-ago"]),
            ("1m", &utc, &month_end, vec!["ref", "feb28-in"]),
            ("30d", &utc, &[], vec![]),
            // Cut-off before the representable range: everything is within.
            (
                "19998y",
                &utc,
                &base,
                base.iter().map(|c| c.id.as_str()).collect(),
            ),
        ];
        for (dur, tz, cands, want) in cases {
            let p = Policy {
                within: within(dur),
                ..Policy::default()
            };
            assert_eq!(kept(&p, tz, cands), ids(&want), "within {dur}");
        }
        let p = Policy {
            within: within("12h"),
            ..Policy::default()
        };
        assert_eq!(
            reasons(&p, &utc, &base[..2]),
            vec![
                ("newest".to_string(), strs(&["within 12h"])),
                ("h12-in".to_string(), strs(&["within 12h"])),
            ]
        );
    }

    #[test]
    fn within_parse_ok() {
        let cases: Vec<(&str, [u32; 5], &str)> = vec![
            ("30d", [0, 0, 0, 30, 0], "30d"),
            ("1y6m", [1, 6, 0, 0, 0], "1y6m"),
            ("2w", [0, 0, 2, 0, 0], "2w"),
            ("12h", [0, 0, 0, 0, 12], "12h"),
            ("1y6m2d3h", [1, 6, 0, 2, 3], "1y6m2d3h"),
            (" 1y2m3w4d5h ", [1, 2, 3, 4, 5], "1y2m3w4d5h"),
            ("6m1y", [1, 6, 0, 0, 0], "1y6m"),
            ("0d1h", [0, 0, 0, 0, 1], "1h"),
            ("007d", [0, 0, 0, 7, 0], "7d"),
        ];
        for (input, [y, m, w, d, h], shown) in cases {
            let got: KeepWithin = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(
                [
                    got.years(),
                    got.months(),
                    got.weeks(),
                    got.days(),
                    got.hours()
                ],
                [y, m, w, d, h],
                "{input}"
            );
            assert_eq!(got.to_string(), shown, "{input}");
            assert_eq!(shown.parse::<KeepWithin>().unwrap(), got, "{input}");
        }
        assert_eq!(
            KeepWithin::new(0, 0, 2, 0, 0).unwrap(),
            "2w".parse().unwrap()
        );
        assert!(KeepWithin::new(0, 0, 0, 0, 0).is_err());
    }

    #[test]
    fn within_parse_errors() {
        let cases: Vec<(&str, &str)> = vec![
            ("30x", "unknown unit 'x' after 30"),
            ("", "empty duration"),
            ("   ", "empty duration"),
            ("d", "expected a number before 'd'"),
            ("30", "missing unit after 30"),
            ("1d2d", "unit 'd' given more than once"),
            ("-1d", "negative"),
            ("0d", "greater than zero"),
            ("0y0h", "greater than zero"),
            ("1.5d", "unknown unit '.' after 1"),
            ("3 d", "unknown unit ' ' after 3"),
            ("5M", "unknown unit 'M' after 5"),
            ("99999999999d", "number 99999999999 is too large"),
            ("20000y", "out of range"),
            ("1dä", "expected a number before 'ä'"),
        ];
        for (input, reason) in cases {
            let e = input.parse::<KeepWithin>().unwrap_err();
            match &e {
                Error::InvalidKeepWithin {
                    input: got,
                    reason: r,
                } => {
                    assert_eq!(got, input);
                    assert!(r.contains(reason), "{input:?}: {r}");
                }
                other => panic!("{input:?}: unexpected {other:?}"),
            }
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("invalid keep-within duration {input:?}")),
                "{msg}"
            );
        }
    }
}

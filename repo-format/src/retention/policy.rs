//! The retention policy: which keep rules are switched on, how they are checked before use, and
//! how a policy is shown to the user (`keep last 3, daily 7, within 30d`).
//!
//! Pure; may use the sibling rule types and [`crate::error`].

use std::fmt;

use super::count::KeepCount;
use super::period::Rule;
use super::within::KeepWithin;
use crate::error::Error;

/// A retention policy: which snapshots `forget` keeps. `None` (or
/// `Some(KeepCount::N(0))`) switches a count rule off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the N newest snapshots.
    pub last: Option<KeepCount>,
    /// Keep the newest snapshot of each of the N most recent local hours.
    pub hourly: Option<KeepCount>,
    /// Keep the newest snapshot of each of the N most recent local days.
    pub daily: Option<KeepCount>,
    /// Keep the newest snapshot of each of the N most recent ISO weeks.
    pub weekly: Option<KeepCount>,
    /// Keep the newest snapshot of each of the N most recent months.
    pub monthly: Option<KeepCount>,
    /// Keep the newest snapshot of each of the N most recent years.
    pub yearly: Option<KeepCount>,
    /// Keep every snapshot within this duration of the newest one.
    pub within: Option<KeepWithin>,
    /// Keep every snapshot carrying any of these tags.
    pub tags: Vec<String>,
}

impl Policy {
    /// True when no rule is active: applying it is refused with
    /// [`Error::NoKeepRules`].
    pub fn is_empty(&self) -> bool {
        self.counts()
            .iter()
            .all(|(_, c)| !c.is_some_and(KeepCount::is_active))
            && self.within.is_none_or(|w| w.is_zero())
            && self.tags.is_empty()
    }

    /// Checks that the policy can be applied: at least one rule, no blank
    /// tags.
    pub fn validate(&self) -> Result<(), Error> {
        if self.is_empty() {
            return Err(Error::NoKeepRules);
        }
        if let Some(tag) = self.tags.iter().find(|t| t.trim().is_empty()) {
            return Err(Error::InvalidKeepTag { tag: tag.clone() });
        }
        Ok(())
    }

    pub(super) fn counts(&self) -> [(Rule, Option<KeepCount>); 6] {
        [
            (Rule::Last, self.last),
            (Rule::Hourly, self.hourly),
            (Rule::Daily, self.daily),
            (Rule::Weekly, self.weekly),
            (Rule::Monthly, self.monthly),
            (Rule::Yearly, self.yearly),
        ]
    }
}

impl fmt::Display for Policy {
    /// E.g. `keep last 3, daily 7, weekly all, within 30d, tag db`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (rule, count) in self.counts() {
            if let Some(c) = count.filter(|c| c.is_active()) {
                parts.push(format!("{} {c}", rule.name()));
            }
        }
        if let Some(w) = self.within.filter(|w| !w.is_zero()) {
            parts.push(format!("within {w}"));
        }
        for t in &self.tags {
            parts.push(format!("tag {t}"));
        }
        if parts.is_empty() {
            f.write_str("no keep rules")
        } else {
            write!(f, "keep {}", parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::testing::*;
    use crate::retention::{apply, apply_grouped};
    use jiff::tz::TimeZone;

    #[test]
    fn no_rules_is_refused() {
        let utc = TimeZone::UTC;
        let zero_counts = Policy {
            last: Some(KeepCount::N(0)),
            daily: Some(KeepCount::N(0)),
            ..Policy::default()
        };
        let cands = [snap("a", "2025-01-01T00:00:00Z")];
        for p in [Policy::default(), zero_counts] {
            assert!(p.is_empty());
            assert!(matches!(
                apply(&p, &utc, &cands, now()),
                Err(Error::NoKeepRules)
            ));
            assert!(matches!(
                apply(&p, &utc, &[], now()),
                Err(Error::NoKeepRules)
            ));
            assert!(matches!(
                apply_grouped(&p, &utc, &[], now()),
                Err(Error::NoKeepRules)
            ));
        }
        assert!(Error::NoKeepRules
            .to_string()
            .contains("refusing to forget every snapshot"));
        let one = [
            Policy {
                yearly: Some(KeepCount::N(1)),
                ..Policy::default()
            },
            Policy {
                within: within("1h"),
                ..Policy::default()
            },
            Policy {
                tags: strs(&["x"]),
                ..Policy::default()
            },
            Policy {
                hourly: Some(KeepCount::All),
                ..Policy::default()
            },
        ];
        for p in one {
            assert!(!p.is_empty(), "{p:?}");
        }
    }

    #[test]
    fn policy_display() {
        let p = Policy {
            last: Some(KeepCount::N(3)),
            daily: Some(KeepCount::N(7)),
            weekly: Some(KeepCount::All),
            monthly: Some(KeepCount::N(0)),
            within: within("30d"),
            tags: strs(&["db"]),
            ..Policy::default()
        };
        assert_eq!(
            p.to_string(),
            "keep last 3, daily 7, weekly all, within 30d, tag db"
        );
        assert_eq!(Policy::default().to_string(), "no keep rules");
    }
}

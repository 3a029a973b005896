//! The keep/forget decision: walks one group's snapshots newest first, lets every active rule
//! claim the snapshots it keeps, and records each rule that keeps a snapshot as a reason.
//!
//! Pure: the current time is a parameter (`now`), used only to ignore future-dated snapshots
//! when picking the keep-within reference. May use the sibling modules and [`crate::error`].

use std::collections::{BTreeMap, HashSet};

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::count::KeepCount;
use super::period::{Bucket, Rule};
use super::policy::Policy;
use crate::error::Error;

/// A snapshot as seen by the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Snapshot id (used for output and as the tie-breaker at equal times).
    pub id: String,
    /// Snapshot time.
    pub time: Timestamp,
    /// Snapshot tags.
    pub tags: Vec<String>,
}

/// What happens to one snapshot. `reasons` is empty when it is forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Snapshot id.
    pub id: String,
    /// Whether the snapshot is kept.
    pub keep: bool,
    /// Why it is kept, e.g. `["last 1/2", "daily 1/7", "tag db"]`.
    pub reasons: Vec<String>,
}

/// The decisions for one group (see [`apply_grouped`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDecisions {
    /// The group key as passed in.
    pub key: String,
    /// Decisions, newest first.
    pub decisions: Vec<Decision>,
}

/// Applies `policy` to one group of snapshots, bucketing in `tz`.
///
/// Returns one decision per candidate, newest first (ties by id, descending).
///
/// `now` is taken as a parameter so that the decision is a pure function of its inputs (the
/// caller reads the clock once). It is used only for the keep-within reference: as in restic,
/// that is the newest snapshot that is not after `now`, so a snapshot with a bogus future date
/// cannot push the window forward and forget everything else. If every snapshot is in the
/// future, all of them are within. Future-dated snapshots are themselves always within (they
/// are after the cut-off).
pub fn apply(
    policy: &Policy,
    tz: &TimeZone,
    candidates: &[Candidate],
    now: Timestamp,
) -> Result<Vec<Decision>, Error> {
    policy.validate()?;
    Ok(decide(policy, tz, candidates.iter().collect(), now))
}

/// Applies `policy` independently to each group (see [`apply`] for `now`). Each candidate comes
/// with its group key (e.g. from [`GroupBy::key`](super::GroupBy::key)). Groups are returned
/// sorted by key; decisions within a group newest first.
pub fn apply_grouped(
    policy: &Policy,
    tz: &TimeZone,
    candidates: &[(String, Candidate)],
    now: Timestamp,
) -> Result<Vec<GroupDecisions>, Error> {
    policy.validate()?;
    let mut groups: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for (key, c) in candidates {
        groups.entry(key.as_str()).or_default().push(c);
    }
    Ok(groups
        .into_iter()
        .map(|(key, members)| GroupDecisions {
            key: key.to_string(),
            decisions: decide(policy, tz, members, now),
        })
        .collect())
}

/// One active count rule while a group is walked: how many buckets it has used, and which.
struct CountState {
    rule: Rule,
    limit: KeepCount,
    used: u64,
    seen: HashSet<Bucket>,
}

impl CountState {
    /// The active count rules of `policy`, in reason order (last, hourly, ... yearly).
    fn for_policy(policy: &Policy) -> Vec<CountState> {
        policy
            .counts()
            .into_iter()
            .filter_map(|(rule, count)| {
                count.filter(|c| c.is_active()).map(|limit| CountState {
                    rule,
                    limit,
                    used: 0,
                    seen: HashSet::new(),
                })
            })
            .collect()
    }

    /// The reason this rule keeps the snapshot at local time `local`, if it does; claims the
    /// snapshot's bucket.
    fn claim(&mut self, local: DateTime) -> Option<String> {
        if !self.limit.admits(self.used) {
            return None;
        }
        if let Some(bucket) = self.rule.bucket(local) {
            if !self.seen.insert(bucket) {
                return None;
            }
        }
        self.used += 1;
        Some(format!("{} {}/{}", self.rule.name(), self.used, self.limit))
    }
}

/// The policy engine for one group; `policy` is already validated.
fn decide(
    policy: &Policy,
    tz: &TimeZone,
    mut order: Vec<&Candidate>,
    now: Timestamp,
) -> Vec<Decision> {
    order.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let mut counts = CountState::for_policy(policy);

    // Outer None: rule off. Inner None: every snapshot is within.
    let within = policy.within.filter(|w| !w.is_zero()).map(|w| {
        let reference = order.iter().map(|c| c.time).find(|t| *t <= now);
        (w, reference.and_then(|r| w.cutoff(r, tz)))
    });

    let mut keep_tags: Vec<&str> = Vec::new();
    for t in &policy.tags {
        if !keep_tags.contains(&t.as_str()) {
            keep_tags.push(t);
        }
    }

    order
        .into_iter()
        .map(|c| {
            let local = tz.to_datetime(c.time);
            let mut reasons: Vec<String> =
                counts.iter_mut().filter_map(|st| st.claim(local)).collect();
            if let Some((w, cutoff)) = &within {
                if cutoff.is_none_or(|t| c.time > t) {
                    reasons.push(format!("within {w}"));
                }
            }
            for t in &keep_tags {
                if c.tags.iter().any(|have| have == t) {
                    reasons.push(format!("tag {t}"));
                }
            }
            Decision {
                id: c.id.clone(),
                keep: !reasons.is_empty(),
                reasons,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::testing::*;
    use crate::retention::GroupBy;

    #[test]
    fn keep_last() {
        let five = [
            snap("s1", "2025-01-01T01:00:00Z"),
            snap("s2", "2025-01-01T02:00:00Z"),
            snap("s3", "2025-01-01T03:00:00Z"),
            snap("s4", "2025-01-01T04:00:00Z"),
            snap("s5", "2025-01-01T05:00:00Z"),
        ];
        let ties = [
            snap("z", "2024-12-31T00:00:00Z"),
            snap("a", "2025-01-01T00:00:00Z"),
            snap("c", "2025-01-01T00:00:00Z"),
            snap("b", "2025-01-01T00:00:00Z"),
        ];
        let cases: Vec<(&str, KeepCount, &[Candidate], Vec<&str>)> = vec![
            ("more than N", KeepCount::N(2), &five, vec!["s5", "s4"]),
            (
                "exactly N",
                KeepCount::N(5),
                &five,
                vec!["s5", "s4", "s3", "s2", "s1"],
            ),
            (
                "fewer than N",
                KeepCount::N(9),
                &five[..2],
                vec!["s2", "s1"],
            ),
            ("empty input", KeepCount::N(3), &[], vec![]),
            ("ties by id desc", KeepCount::N(2), &ties, vec!["c", "b"]),
            ("ties, 3", KeepCount::N(3), &ties, vec!["c", "b", "a"]),
            (
                "all",
                KeepCount::All,
                &five,
                vec!["s5", "s4", "s3", "s2", "s1"],
            ),
        ];
        for (name, n, cands, want) in cases {
            let p = Policy {
                last: Some(n),
                ..Policy::default()
            };
            assert_eq!(kept(&p, &TimeZone::UTC, cands), ids(&want), "{name}");
        }
    }

    #[test]
    fn keep_last_reasons_and_order() {
        let utc = TimeZone::UTC;
        let p = Policy {
            last: Some(KeepCount::N(3)),
            ..Policy::default()
        };
        let cands = [
            snap("b", "2025-01-01T00:00:00Z"),
            snap("old", "2024-01-01T00:00:00Z"),
            snap("a", "2025-01-01T00:00:00Z"),
        ];
        let all = apply(&p, &utc, &cands, now()).unwrap();
        let order: Vec<&str> = all.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(order, ["b", "a", "old"]);
        assert_eq!(
            reasons(&p, &utc, &cands),
            vec![
                ("b".to_string(), strs(&["last 1/3"])),
                ("a".to_string(), strs(&["last 2/3"])),
                ("old".to_string(), strs(&["last 3/3"])),
            ]
        );
        let p_all = Policy {
            last: Some(KeepCount::All),
            ..Policy::default()
        };
        assert_eq!(
            reasons(&p_all, &utc, &cands[..1]),
            vec![("b".to_string(), strs(&["last 1/all"]))]
        );
    }

    #[test]
    fn daily_gaps_and_multiple_per_day() {
        let utc = TimeZone::UTC;
        let cands = [
            snap("jan10-late", "2025-01-10T18:00:00Z"),
            snap("jan10-early", "2025-01-10T09:00:00Z"),
            snap("jan08", "2025-01-08T12:00:00Z"),
            snap("jan05-late", "2025-01-05T20:00:00Z"),
            snap("jan05-early", "2025-01-05T08:00:00Z"),
            snap("jan01", "2025-01-01T10:00:00Z"),
        ];
        let cases: Vec<(KeepCount, Vec<&str>)> = vec![
            (KeepCount::N(1), vec!["jan10-late"]),
            (KeepCount::N(2), vec!["jan10-late", "jan08"]),
            (KeepCount::N(3), vec!["jan10-late", "jan08", "jan05-late"]),
            (
                KeepCount::N(7),
                vec!["jan10-late", "jan08", "jan05-late", "jan01"],
            ),
            (
                KeepCount::All,
                vec!["jan10-late", "jan08", "jan05-late", "jan01"],
            ),
        ];
        for (n, want) in cases {
            let p = Policy {
                daily: Some(n),
                ..Policy::default()
            };
            assert_eq!(kept(&p, &utc, &cands), ids(&want), "daily {n}");
        }
        let p = Policy {
            daily: Some(KeepCount::N(3)),
            ..Policy::default()
        };
        assert_eq!(
            reasons(&p, &utc, &cands),
            vec![
                ("jan10-late".to_string(), strs(&["daily 1/3"])),
                ("jan08".to_string(), strs(&["daily 2/3"])),
                ("jan05-late".to_string(), strs(&["daily 3/3"])),
            ]
        );
    }

    #[test]
    fn keep_within_ignores_future_snapshots_for_reference() {
        let utc = TimeZone::UTC;
        let p = Policy {
            within: within("30d"),
            ..Policy::default()
        };
        let cands = [
            snap("bogus-future", "2099-01-01T00:00:00Z"),
            snap("newest-real", "2025-06-15T12:00:00Z"),
            snap("in", "2025-05-20T00:00:00Z"),
            snap("out", "2025-05-01T00:00:00Z"),
        ];
        let now = ts("2025-06-16T00:00:00Z");
        let got: Vec<String> = apply(&p, &utc, &cands, now)
            .unwrap()
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id)
            .collect();
        assert_eq!(got, ids(&["bogus-future", "newest-real", "in"]));
        // All in the future: everything is within.
        let got: Vec<String> = apply(&p, &utc, &cands, ts("2000-01-01T00:00:00Z"))
            .unwrap()
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id)
            .collect();
        assert_eq!(got, ids(&["bogus-future", "newest-real", "in", "out"]));
    }

    #[test]
    fn keep_tag() {
        let utc = TimeZone::UTC;
        let cands = [
            tagged("both", "2025-01-05T00:00:00Z", &["db", "weekly"]),
            tagged("db", "2025-01-04T00:00:00Z", &["db"]),
            tagged("upper", "2025-01-03T00:00:00Z", &["DB"]),
            tagged("other", "2025-01-02T00:00:00Z", &["misc"]),
            tagged("weekly", "2025-01-01T00:00:00Z", &["weekly", "misc"]),
            tagged("none", "2024-12-31T00:00:00Z", &[]),
        ];
        let p = Policy {
            tags: strs(&["db", "weekly", "db"]),
            ..Policy::default()
        };
        assert_eq!(
            reasons(&p, &utc, &cands),
            vec![
                ("both".to_string(), strs(&["tag db", "tag weekly"])),
                ("db".to_string(), strs(&["tag db"])),
                ("weekly".to_string(), strs(&["tag weekly"])),
            ]
        );
        let blank = Policy {
            tags: strs(&["db", " "]),
            ..Policy::default()
        };
        assert!(matches!(
            apply(&blank, &utc, &cands, now()),
            Err(Error::InvalidKeepTag { tag }) if tag == " "
        ));
    }

    #[test]
    fn combined_rules_accumulate_reasons() {
        let utc = TimeZone::UTC;
        // ISO weeks: 06-16 is W25; 06-15, 06-14, 06-09 are W24; 06-08 W23;
        // 05-01 W18; 04-01 W14.
        let cands = [
            snap("s1", "2025-06-16T10:00:00Z"),
            snap("s2", "2025-06-16T08:00:00Z"),
            snap("s3", "2025-06-15T20:00:00Z"),
            snap("s4", "2025-06-14T20:00:00Z"),
            snap("s5", "2025-06-09T12:00:00Z"),
            snap("s6", "2025-06-08T12:00:00Z"),
            snap("s7", "2025-05-01T12:00:00Z"),
            snap("s8", "2025-04-01T12:00:00Z"),
            tagged("s9", "2025-03-01T12:00:00Z", &["keep"]),
            snap("s10", "2025-02-01T12:00:00Z"),
        ];
        let p = Policy {
            last: Some(KeepCount::N(2)),
            daily: Some(KeepCount::N(7)),
            weekly: Some(KeepCount::N(4)),
            ..Policy::default()
        };
        let r = |id: &str, rs: &[&str]| (id.to_string(), strs(rs));
        assert_eq!(
            reasons(&p, &utc, &cands),
            vec![
                r("s1", &["last 1/2", "daily 1/7", "weekly 1/4"]),
                r("s2", &["last 2/2"]),
                r("s3", &["daily 2/7", "weekly 2/4"]),
                r("s4", &["daily 3/7"]),
                r("s5", &["daily 4/7"]),
                r("s6", &["daily 5/7", "weekly 3/4"]),
                r("s7", &["daily 6/7", "weekly 4/4"]),
                r("s8", &["daily 7/7"]),
            ]
        );
        let p = Policy {
            monthly: Some(KeepCount::All),
            within: within("1d"),
            tags: strs(&["keep"]),
            ..p
        };
        assert_eq!(
            reasons(&p, &utc, &cands),
            vec![
                r(
                    "s1",
                    &[
                        "last 1/2",
                        "daily 1/7",
                        "weekly 1/4",
                        "monthly 1/all",
                        "within 1d"
                    ],
                ),
                r("s2", &["last 2/2", "within 1d"]),
                r("s3", &["daily 2/7", "weekly 2/4", "within 1d"]),
                r("s4", &["daily 3/7"]),
                r("s5", &["daily 4/7"]),
                r("s6", &["daily 5/7", "weekly 3/4"]),
                r("s7", &["daily 6/7", "weekly 4/4", "monthly 2/all"]),
                r("s8", &["daily 7/7", "monthly 3/all"]),
                r("s9", &["monthly 4/all", "tag keep"]),
                r("s10", &["monthly 5/all"]),
            ]
        );
    }

    #[test]
    fn grouped_apply() {
        let utc = TimeZone::UTC;
        let g = GroupBy::default();
        let none = BTreeMap::new();
        let web = g.key("web", &strs(&["/srv"]), &[], &none);
        let db = g.key("db", &strs(&["/var/lib/db"]), &[], &none);
        let items = vec![
            (web.clone(), snap("w-old", "2025-01-01T12:00:00Z")),
            (db.clone(), snap("d-new", "2025-01-03T00:00:00Z")),
            (web.clone(), snap("w-new", "2025-01-02T00:00:00Z")),
            (db.clone(), snap("d-old", "2024-01-01T00:00:00Z")),
        ];
        let p = Policy {
            last: Some(KeepCount::N(1)),
            ..Policy::default()
        };
        let got = apply_grouped(&p, &utc, &items, now()).unwrap();
        let d = |id: &str, keep: bool, rs: &[&str]| Decision {
            id: id.to_string(),
            keep,
            reasons: strs(rs),
        };
        assert_eq!(
            got,
            vec![
                GroupDecisions {
                    key: "host=db paths=/var/lib/db".to_string(),
                    decisions: vec![d("d-new", true, &["last 1/1"]), d("d-old", false, &[])],
                },
                GroupDecisions {
                    key: "host=web paths=/srv".to_string(),
                    decisions: vec![d("w-new", true, &["last 1/1"]), d("w-old", false, &[])],
                },
            ]
        );
        // keep-within is measured from each group's own newest snapshot.
        let p = Policy {
            within: within("1d"),
            ..Policy::default()
        };
        let got = apply_grouped(&p, &utc, &items, now()).unwrap();
        let kept: Vec<Vec<&str>> = got
            .iter()
            .map(|g| {
                g.decisions
                    .iter()
                    .filter(|d| d.keep)
                    .map(|d| d.id.as_str())
                    .collect()
            })
            .collect();
        assert_eq!(kept, vec![vec!["d-new"], vec!["w-new", "w-old"]]);
    }

    #[test]
    fn decision_json() {
        let d = Decision {
            id: "abc".to_string(),
            keep: true,
            reasons: strs(&["last 1/2", "daily 1/7"]),
        };
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            r#"{"id":"abc","keep":true,"reasons":["last 1/2","daily 1/7"]}"#
        );
        assert_eq!(serde_json::from_str::<Decision>(&json).unwrap(), d);
    }
}

//! Fixtures shared by the retention tests: snapshots from strings, and the kept ids or reasons
//! of a policy applied at a fixed `now`.

use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::{apply, Candidate, KeepWithin, Policy};

pub(crate) fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub(crate) fn zone(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap()
}

pub(crate) fn snap(id: &str, time: &str) -> Candidate {
    Candidate {
        id: id.to_string(),
        time: ts(time),
        tags: Vec::new(),
    }
}

pub(crate) fn tagged(id: &str, time: &str, tags: &[&str]) -> Candidate {
    Candidate {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..snap(id, time)
    }
}

/// Far after every test snapshot, so the future guard never triggers.
pub(crate) fn now() -> Timestamp {
    ts("2100-01-01T00:00:00Z")
}

/// Kept ids, newest first. Also checks that input order is irrelevant.
pub(crate) fn kept(policy: &Policy, tz: &TimeZone, cands: &[Candidate]) -> Vec<String> {
    let forward = apply(policy, tz, cands, now()).unwrap();
    let mut reversed_input = cands.to_vec();
    reversed_input.reverse();
    assert_eq!(
        forward,
        apply(policy, tz, &reversed_input, now()).unwrap(),
        "result depends on input order"
    );
    assert_eq!(forward.len(), cands.len());
    for d in &forward {
        assert_eq!(d.keep, !d.reasons.is_empty(), "{d:?}");
    }
    forward
        .into_iter()
        .filter(|d| d.keep)
        .map(|d| d.id)
        .collect()
}

/// (id, reasons) of kept snapshots, newest first.
pub(crate) fn reasons(
    policy: &Policy,
    tz: &TimeZone,
    cands: &[Candidate],
) -> Vec<(String, Vec<String>)> {
    apply(policy, tz, cands, now())
        .unwrap()
        .into_iter()
        .filter(|d| d.keep)
        .map(|d| (d.id, d.reasons))
        .collect()
}

pub(crate) fn ids(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn strs(v: &[&str]) -> Vec<String> {
    ids(v)
}

pub(crate) fn within(s: &str) -> Option<KeepWithin> {
    Some(s.parse().unwrap())
}

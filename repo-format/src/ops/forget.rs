//! `forget`: apply a retention policy (or take the ids the user names) and delete the snapshots
//! that are not kept.
//!
//! Two steps. Planning ([`plan`] for a policy, [`plan_ids`] for ids or prefixes) is pure: it gets
//! the snapshots (or their ids) and the current time as values, decides which snapshot ids are
//! kept and which are removed, with every reason, and touches no storage. Executing
//! ([`execute`]) deletes the planned snapshots. [`forget`] and [`forget_ids`] read what planning
//! needs, read the clock, plan and execute (unless it is a dry run).
//!
//! Snapshots are the only objects forget deletes, and deleting one is safe at any time: nothing
//! else refers to a snapshot, and the data it named stays until a prune finds it unreferenced.
//! The decision for each snapshot (keep or remove, and every rule that keeps it) comes from
//! [`crate::retention`]; see docs/retention.md. May use `format` (snapshot documents, ids),
//! `retention` and, for execution only, the [`Repository`].

use crate::error::{Error, Result};
use crate::format::id::SnapshotId;
use crate::format::snapshot::{self, Snapshot};
use crate::repository::Repository;
use crate::retention::{self, Candidate, GroupBy, GroupDecisions, Policy};
use jiff::Timestamp;
use serde::Serialize;
use std::collections::HashMap;

/// What to keep and how to decide.
#[derive(Clone, Debug)]
pub struct ForgetOptions {
    pub policy: Policy,
    pub group_by: GroupBy,
    /// Buckets (days, weeks ...) are computed in this zone.
    pub timezone: jiff::tz::TimeZone,
    /// Decide and report, delete nothing.
    pub dry_run: bool,
}

/// One snapshot's fate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    pub id: SnapshotId,
    pub time: String,
    pub hostname: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub keep: bool,
    /// Every rule that keeps it, e.g. `daily 3/7`; empty when removed.
    pub reasons: Vec<String>,
}

/// The snapshots of one group, newest first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupVerdicts {
    /// The group key, e.g. `host=web1 paths=/srv` (empty without grouping).
    pub key: String,
    pub snapshots: Vec<Verdict>,
}

/// What forget will do, decided without touching storage, so that it can be shown (a dry run),
/// tested without a repository, and then carried out by [`execute`] as decided.
#[derive(Clone, Debug, PartialEq)]
pub struct ForgetPlan {
    /// Every snapshot with its verdict, group by group (sorted by key), newest first within a
    /// group. Empty for a plan of ids ([`plan_ids`]), which judges nothing.
    pub groups: Vec<GroupVerdicts>,
    /// The snapshots to delete, in the order they are deleted: group by group, newest first, for
    /// a policy; sorted and without duplicates for ids.
    pub remove: Vec<SnapshotId>,
}

/// What forget decided and did.
#[derive(Clone, Debug, Serialize)]
pub struct ForgetReport {
    pub policy: String,
    pub timezone: String,
    pub dry_run: bool,
    pub groups: Vec<GroupVerdicts>,
    /// Snapshots deleted (empty on a dry run).
    pub removed: Vec<SnapshotId>,
    /// Snapshots that cannot be read, with why: retention cannot judge them, so they are kept
    /// (remove one with `coffer forget ID`).
    pub damaged: Vec<(SnapshotId, String)>,
}

/// Applies the policy to every snapshot, group by group, and deletes the ones not kept (none on
/// a dry run). The clock is read here, once, for the keep-within reference.
pub fn forget(repo: &Repository, options: &ForgetOptions) -> Result<ForgetReport> {
    options.policy.validate()?;
    let all = snapshot::Snapshot::load_all(repo.storage(), repo.keys())?;
    let planned = plan(&all.good, options, Timestamp::now())?;
    let removed = if options.dry_run {
        Vec::new()
    } else {
        execute(repo, &planned)?
    };
    Ok(ForgetReport {
        policy: options.policy.to_string(),
        timezone: options
            .timezone
            .iana_name()
            .unwrap_or("the local time zone")
            .to_string(),
        dry_run: options.dry_run,
        groups: planned.groups,
        removed,
        damaged: all
            .damaged
            .iter()
            .map(|(id, e)| (*id, e.to_string()))
            .collect(),
    })
}

/// Deletes the snapshots named by `specs` (full ids or unique prefixes of at least 4 hex
/// digits), matched against the names in `snapshots/` without reading them, so that a snapshot
/// that cannot be read can still be removed. Returns the ids, sorted; with `dry_run`, deletes
/// nothing. Fails before deleting anything if a spec matches no snapshot or several.
pub fn forget_ids(repo: &Repository, specs: &[String], dry_run: bool) -> Result<Vec<SnapshotId>> {
    let listed = snapshot::Snapshot::list_ids(repo.storage())?;
    let planned = plan_ids(&listed, specs)?;
    if !dry_run {
        execute(repo, &planned)?;
    }
    Ok(planned.remove)
}

/// Decides, for the readable `snapshots`, which are kept (with every reason) and which are
/// removed, as of `now` (used only for the keep-within reference, see
/// [`retention::apply`]). Pure: fails only for a policy that cannot be applied.
pub fn plan(
    snapshots: &[(SnapshotId, Snapshot)],
    options: &ForgetOptions,
    now: Timestamp,
) -> Result<ForgetPlan> {
    let mut by_hex: HashMap<String, &(SnapshotId, Snapshot)> = HashMap::new();
    let mut candidates = Vec::with_capacity(snapshots.len());
    for entry in snapshots {
        let (id, snap) = entry;
        let key = options
            .group_by
            .key(&snap.hostname, &snap.paths, &snap.tags, &snap.labels);
        candidates.push((
            key,
            Candidate {
                id: id.to_hex(),
                time: snap.timestamp(),
                tags: snap.tags.clone(),
            },
        ));
        by_hex.insert(id.to_hex(), entry);
    }
    let decided = retention::apply_grouped(&options.policy, &options.timezone, &candidates, now)?;
    let groups: Vec<GroupVerdicts> = decided.into_iter().map(|g| verdicts(g, &by_hex)).collect();
    let remove = groups
        .iter()
        .flat_map(|g| g.snapshots.iter().filter(|v| !v.keep).map(|v| v.id))
        .collect();
    Ok(ForgetPlan { groups, remove })
}

/// One group's decisions as verdicts that describe each snapshot.
fn verdicts(
    group: GroupDecisions,
    by_hex: &HashMap<String, &(SnapshotId, Snapshot)>,
) -> GroupVerdicts {
    GroupVerdicts {
        key: group.key,
        snapshots: group
            .decisions
            .into_iter()
            .filter_map(|d| {
                let (id, snap) = by_hex.get(&d.id)?;
                Some(Verdict {
                    id: *id,
                    time: snap.time.to_string(),
                    hostname: snap.hostname.clone(),
                    paths: snap.paths.clone(),
                    tags: snap.tags.clone(),
                    keep: d.keep,
                    reasons: d.reasons,
                })
            })
            .collect(),
    }
}

/// Resolves `specs` (full ids or unique prefixes of at least 4 hex digits, any case) among the
/// `listed` snapshot ids into a plan that removes them. Pure. Fails, so that nothing is deleted,
/// if a spec is not an id (`InvalidInput`), matches no snapshot (`SnapshotNotFound`) or several
/// (`AmbiguousSnapshot`).
pub fn plan_ids(listed: &[SnapshotId], specs: &[String]) -> Result<ForgetPlan> {
    let mut remove = Vec::with_capacity(specs.len());
    for spec in specs {
        let lower = spec.to_ascii_lowercase();
        if lower.len() < 4 || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidInput(format!(
                "{spec:?} is not a snapshot id: give a full id or at least 4 hex digits of one"
            )));
        }
        let matches: Vec<&SnapshotId> = listed
            .iter()
            .filter(|id| id.to_hex().starts_with(&lower))
            .collect();
        match matches[..] {
            [] => return Err(Error::SnapshotNotFound(spec.clone())),
            [id] => remove.push(*id),
            _ => {
                return Err(Error::AmbiguousSnapshot {
                    prefix: spec.clone(),
                    count: matches.len(),
                })
            }
        }
    }
    remove.sort();
    remove.dedup();
    Ok(ForgetPlan {
        groups: Vec::new(),
        remove,
    })
}

/// Deletes the snapshots the plan removes, `--connections` at a time (on an object store each
/// deletion is a round trip), and returns them in the plan's order. After a failed delete no
/// further one is started and the first error is returned; the snapshots deleted before it stay
/// deleted (each deletion is safe on its own).
pub fn execute(repo: &Repository, plan: &ForgetPlan) -> Result<Vec<SnapshotId>> {
    let keys: Vec<String> = plan
        .remove
        .iter()
        .map(|id| crate::format::key::ObjectKey::Snapshot(*id).to_string())
        .collect();
    crate::repository::stored::delete_each(repo.storage(), &keys, || Ok(()))?;
    Ok(plan.remove.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::retention::KeepCount;
    use crate::BlobId;

    fn snapshot(time: &str, hostname: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            time: time.parse().unwrap(),
            tree: BlobId([7; 32]),
            paths: vec!["/srv".into()],
            hostname: hostname.into(),
            username: "u".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            labels: Default::default(),
            parent: None,
            excludes: Vec::new(),
            program_version: "test".into(),
            key_id: String::new(),
            summary: Default::default(),
            sources: Vec::new(),
            original: None,
            copied_from: None,
        }
    }

    fn keep_last(n: u32) -> ForgetOptions {
        ForgetOptions {
            policy: Policy {
                last: Some(KeepCount::N(n)),
                ..Policy::default()
            },
            group_by: GroupBy::default(),
            timezone: jiff::tz::TimeZone::UTC,
            dry_run: false,
        }
    }

    fn now() -> Timestamp {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    /// Two hosts with two snapshots each; ids 1..=4, oldest first per host.
    fn two_hosts() -> Vec<(SnapshotId, Snapshot)> {
        vec![
            (
                SnapshotId([1; 32]),
                snapshot("2025-01-01T00:00:00+00:00", "web", &[]),
            ),
            (
                SnapshotId([2; 32]),
                snapshot("2025-01-02T00:00:00+00:00", "web", &[]),
            ),
            (
                SnapshotId([3; 32]),
                snapshot("2025-01-01T00:00:00+01:00", "db", &["x"]),
            ),
            (
                SnapshotId([4; 32]),
                snapshot("2025-01-03T00:00:00+01:00", "db", &[]),
            ),
        ]
    }

    #[test]
    fn a_policy_plan_keeps_per_group_and_removes_the_rest_in_group_order() {
        let snaps = two_hosts();
        let planned = plan(&snaps, &keep_last(1), now()).unwrap();
        let keys: Vec<&str> = planned.groups.iter().map(|g| g.key.as_str()).collect();
        assert_eq!(keys, ["host=db paths=/srv", "host=web paths=/srv"]);
        assert_eq!(planned.remove, [SnapshotId([3; 32]), SnapshotId([1; 32])]);
        let db = &planned.groups[0].snapshots;
        assert_eq!(db.len(), 2);
        assert_eq!(
            (db[0].id, db[0].keep, db[0].reasons.clone()),
            (SnapshotId([4; 32]), true, vec!["last 1/1".to_string()])
        );
        // The verdict describes the snapshot as stored (the time's text is kept).
        assert_eq!(
            (
                db[1].time.as_str(),
                db[1].hostname.as_str(),
                db[1].tags.clone()
            ),
            ("2025-01-01T00:00:00+01:00", "db", vec!["x".to_string()])
        );
        assert!(!db[1].keep && db[1].reasons.is_empty());

        // Without grouping, one group decides over all four.
        let options = ForgetOptions {
            group_by: GroupBy::none(),
            ..keep_last(2)
        };
        let planned = plan(&snaps, &options, now()).unwrap();
        assert_eq!(planned.groups.len(), 1);
        assert_eq!(planned.groups[0].key, "");
        assert_eq!(planned.remove, [SnapshotId([1; 32]), SnapshotId([3; 32])]);
    }

    #[test]
    fn a_policy_plan_uses_the_given_now_for_keep_within() {
        let snaps = two_hosts();
        let options = ForgetOptions {
            policy: Policy {
                within: Some("1d".parse().unwrap()),
                ..Policy::default()
            },
            group_by: GroupBy::none(),
            ..keep_last(1)
        };
        // Reference: the newest snapshot (db's, 01-02 23:00Z): web's 01-02 00:00Z is within a
        // day of it, web's 01-01 00:00Z and db's 12-31 23:00Z are not.
        let planned = plan(&snaps, &options, now()).unwrap();
        assert_eq!(planned.remove, [SnapshotId([1; 32]), SnapshotId([3; 32])]);
        // On 01-01 at noon the later two are in the future: the reference is web's 01-01
        // 00:00Z, and everything is within a day of it or after it.
        let early: Timestamp = "2025-01-01T12:00:00Z".parse().unwrap();
        let planned = plan(&snaps, &options, early).unwrap();
        assert!(planned.remove.is_empty(), "{:?}", planned.remove);
    }

    #[test]
    fn a_policy_without_rules_plans_nothing() {
        let options = ForgetOptions {
            policy: Policy::default(),
            ..keep_last(1)
        };
        let e = plan(&two_hosts(), &options, now()).unwrap_err();
        assert!(matches!(e, Error::NoKeepRules), "{e:?}");
    }

    #[test]
    fn ids_resolve_full_or_by_unique_prefix() {
        let a = SnapshotId([0xab; 32]);
        let b = SnapshotId::from_hex(&format!("abab{}", "00".repeat(30))).unwrap();
        let c = SnapshotId([0x12; 32]);
        let listed = [a, b, c];
        let specs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

        // Any case, duplicates once, sorted; a plan of ids judges nothing.
        let planned =
            plan_ids(&listed, &specs(&["1212", &a.to_hex(), "ABAB00", "121212"])).unwrap();
        assert!(planned.groups.is_empty());
        let mut want = vec![a, b, c];
        want.sort();
        assert_eq!(planned.remove, want);

        let e = plan_ids(&listed, &specs(&["abab"])).unwrap_err();
        assert!(
            matches!(e, Error::AmbiguousSnapshot { ref prefix, count: 2 } if prefix == "abab"),
            "{e:?}"
        );
        let e = plan_ids(&listed, &specs(&["aba"])).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "\"aba\" is not a snapshot id: give a full id or at least 4 hex digits of one"
        );
        let e = plan_ids(&listed, &specs(&["12g4"])).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
        // One bad spec fails the whole plan.
        let e = plan_ids(&listed, &specs(&["1212", "ffff"])).unwrap_err();
        assert!(
            matches!(e, Error::SnapshotNotFound(ref s) if s == "ffff"),
            "{e:?}"
        );
    }

    #[test]
    fn forget_deletes_what_the_plan_removes_and_a_dry_run_nothing() {
        let repo = crate::repository::test_repo();
        let mut saved = Vec::new();
        for (_, snap) in two_hosts() {
            saved.push(snap.save(repo.storage(), repo.keys()).unwrap());
        }
        let sorted = |mut v: Vec<SnapshotId>| {
            v.sort();
            v
        };
        let all = sorted(saved.clone());

        let dry = ForgetOptions {
            dry_run: true,
            ..keep_last(1)
        };
        let report = forget(&repo, &dry).unwrap();
        assert!(report.removed.is_empty());
        assert_eq!(report.groups.len(), 2);
        assert_eq!(sorted(Snapshot::list_ids(repo.storage()).unwrap()), all);

        let report = forget(&repo, &keep_last(1)).unwrap();
        // db's older one first (groups sorted by key), then web's.
        assert_eq!(report.removed, [saved[2], saved[0]]);
        assert_eq!(report.policy, "keep last 1");
        assert_eq!(report.timezone, "UTC");
        assert!(report.damaged.is_empty());
        assert_eq!(
            sorted(Snapshot::list_ids(repo.storage()).unwrap()),
            sorted(vec![saved[1], saved[3]])
        );

        // By id: a dry run deletes nothing, then the prefix removes exactly that one.
        let prefix = saved[3].to_hex()[..8].to_string();
        let ids = forget_ids(&repo, std::slice::from_ref(&prefix), true).unwrap();
        assert_eq!(ids, [saved[3]]);
        assert_eq!(Snapshot::list_ids(repo.storage()).unwrap().len(), 2);
        let ids = forget_ids(&repo, &[prefix], false).unwrap();
        assert_eq!(ids, [saved[3]]);
        assert_eq!(Snapshot::list_ids(repo.storage()).unwrap(), [saved[1]]);
    }
}

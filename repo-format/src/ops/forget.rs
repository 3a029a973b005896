//! `forget`: apply a retention policy and delete the snapshots it does not keep.
//!
//! Snapshots are the only objects forget deletes, and deleting one is safe at any time: nothing
//! else refers to a snapshot, and the data it named stays until a prune finds it unreferenced.
//! The decision for each snapshot (keep or remove, and every rule that keeps it) comes from
//! [`crate::retention`]; see docs/retention.md.

use crate::error::{Error, Result};
use crate::format::id::SnapshotId;
use crate::format::snapshot::{self, Snapshot};
use crate::repository::Repository;
use crate::retention::{self, Candidate, GroupBy, Policy};
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
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
pub struct GroupVerdicts {
    /// The group key, e.g. `host=web1 paths=/srv` (empty without grouping).
    pub key: String,
    pub snapshots: Vec<Verdict>,
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

/// Applies the policy to every snapshot, group by group, and deletes the ones not kept.
pub fn forget(repo: &Repository, options: &ForgetOptions) -> Result<ForgetReport> {
    options.policy.validate()?;
    let all = snapshot::Snapshot::load_all(repo.storage(), repo.keys())?;
    let mut report = decide(&all.good, options)?;
    report.damaged = all
        .damaged
        .iter()
        .map(|(id, e)| (*id, e.to_string()))
        .collect();
    if !options.dry_run {
        for group in &report.groups {
            for verdict in group.snapshots.iter().filter(|v| !v.keep) {
                repo.storage()
                    .delete(&crate::format::key::ObjectKey::Snapshot(verdict.id).to_string())?;
                report.removed.push(verdict.id);
            }
        }
    }
    Ok(report)
}

/// The decisions for `snapshots` without touching storage.
pub fn decide(
    snapshots: &[(SnapshotId, Snapshot)],
    options: &ForgetOptions,
) -> Result<ForgetReport> {
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
    let groups = retention::apply_grouped(&options.policy, &options.timezone, &candidates)?;
    let groups = groups
        .into_iter()
        .map(|g| GroupVerdicts {
            key: g.key,
            snapshots: g
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
        })
        .collect();
    Ok(ForgetReport {
        policy: options.policy.to_string(),
        timezone: options
            .timezone
            .iana_name()
            .unwrap_or("the local time zone")
            .to_string(),
        dry_run: options.dry_run,
        groups,
        removed: Vec::new(),
        damaged: Vec::new(),
    })
}

/// Deletes the snapshots named by `specs` (full ids or unique prefixes of at least 4 hex
/// digits), matched against the names in `snapshots/` without reading them, so that a snapshot
/// that cannot be read can still be removed. Returns the ids, sorted; with `dry_run`, deletes
/// nothing. Fails before deleting anything if a spec matches no snapshot or several.
pub fn forget_ids(repo: &Repository, specs: &[String], dry_run: bool) -> Result<Vec<SnapshotId>> {
    let ids = snapshot::Snapshot::list_ids(repo.storage())?;
    let mut chosen = Vec::new();
    for spec in specs {
        let lower = spec.to_ascii_lowercase();
        if lower.len() < 4 || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidInput(format!(
                "{spec:?} is not a snapshot id: give a full id or at least 4 hex digits of one"
            )));
        }
        let matches: Vec<&SnapshotId> = ids
            .iter()
            .filter(|id| id.to_hex().starts_with(&lower))
            .collect();
        match matches[..] {
            [] => return Err(Error::SnapshotNotFound(spec.clone())),
            [id] => chosen.push(*id),
            _ => {
                return Err(Error::AmbiguousSnapshot {
                    prefix: spec.clone(),
                    count: matches.len(),
                })
            }
        }
    }
    chosen.sort();
    chosen.dedup();
    if !dry_run {
        for id in &chosen {
            repo.storage().delete(&format!("snapshots/{id}"))?;
        }
    }
    Ok(chosen)
}

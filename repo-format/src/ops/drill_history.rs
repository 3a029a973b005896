//! The drill history: recording a drill's result as its own object (`drills/<id>`,
//! [`crate::format::drill`]) and reading every result back, together with the passed drills
//! that Coffer before 2026-12-06 recorded as the label [`VERIFIED_LABEL`] on a relabelled
//! snapshot. `coffer drill --list`, `coffer snapshots --details` and `coffer status` read it.
//!
//! Drill results outlive their snapshot: `forget` and `prune` leave them (a few KiB each, they
//! refer to no data), so `status` still knows the last drill of a source set after the drilled
//! snapshot was forgotten; they are then listed as of a removed snapshot.

use crate::error::{Error, Result};
use crate::format::drill::{bound_problems, bound_text, DrillResult, DrillSourceResult};
use crate::format::id::{DrillId, SnapshotId};
use crate::format::snapshot::{Snapshot, SnapshotTime};
use crate::ops::drill::{SourceResult, VERIFIED_LABEL};
use crate::repository::Repository;
use serde::Serialize;
use std::collections::HashSet;

/// What one drill did, as [`record`] stores it.
pub struct Run<'a> {
    pub started: &'a jiff::Zoned,
    pub hostname: &'a str,
    pub duration_seconds: f64,
    /// Each source's result (empty when an error stopped the drill before any).
    pub sources: &'a [SourceResult],
    /// What stopped the drill, if anything did.
    pub error: Option<&'a Error>,
}

/// A time as Coffer writes times (RFC 3339 with the local offset).
pub fn rfc3339(time: &jiff::Zoned) -> String {
    SnapshotTime::from_zoned(time).to_string()
}

/// The measured recovery time: the sum of the sources' restore times; `None` when no source
/// was restored.
pub fn rto(sources: &[SourceResult]) -> Option<f64> {
    let times: Vec<f64> = sources.iter().filter_map(|s| s.restore_seconds).collect();
    (!times.is_empty()).then(|| times.iter().sum())
}

/// The source set of a snapshot, as `status` groups snapshots: its source names, or its paths
/// for a snapshot without named sources.
pub fn source_set(snapshot: &Snapshot) -> Vec<String> {
    if snapshot.sources.is_empty() {
        snapshot.paths.clone()
    } else {
        snapshot.sources.iter().map(|r| r.name.clone()).collect()
    }
}

/// The stored form of a drill of snapshot `id`: problems and texts bounded
/// ([`bound_problems`]) so the object stays below its maximum.
pub fn result_of(id: &SnapshotId, snapshot: &Snapshot, run: &Run<'_>) -> DrillResult {
    let sources: Vec<DrillSourceResult> = run
        .sources
        .iter()
        .map(|s| DrillSourceResult {
            name: s.source.clone(),
            kind: s.kind.clone(),
            passed: s.ok,
            checked: bound_text(&s.checked),
            restore_seconds: s.restore_seconds.map(millis),
            verify_seconds: s.verify_seconds.map(millis),
            problems: bound_problems(&s.problems),
        })
        .collect();
    DrillResult {
        snapshot: *id,
        snapshot_time: snapshot.time.clone(),
        snapshot_hostname: snapshot.hostname.clone(),
        snapshot_sources: source_set(snapshot),
        time: SnapshotTime::from_zoned(run.started),
        hostname: run.hostname.to_string(),
        passed: run.error.is_none() && !sources.is_empty() && sources.iter().all(|s| s.passed),
        duration_seconds: Some(millis(run.duration_seconds)),
        rto_seconds: rto(run.sources).map(millis),
        sources,
        error: run.error.map(|e| bound_text(&e.to_string())),
        program_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Seconds rounded to milliseconds: what a drill result keeps (short decimals, which read
/// back from JSON exactly).
fn millis(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

/// Writes the result of a drill of snapshot `id`; returns its id.
pub fn record(
    repo: &Repository,
    id: &SnapshotId,
    snapshot: &Snapshot,
    run: &Run<'_>,
) -> Result<DrillId> {
    result_of(id, snapshot, run).save(repo.storage(), repo.keys())
}

/// One drill of the history.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    /// The drill result's id; absent for a drill recorded as a label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<DrillId>,
    /// Recorded by Coffer before 2026-12-06 as the label `drill.verified` on a relabelled
    /// snapshot: a passed drill of which only the time is known.
    pub legacy: bool,
    /// The drilled snapshot is still in the repository.
    pub snapshot_present: bool,
    #[serde(flatten)]
    pub result: DrillResult,
}

/// Every drill of a repository, oldest first, and the drill results that could not be read.
#[derive(Debug, Default)]
pub struct History {
    pub entries: Vec<Entry>,
    pub damaged: Vec<(DrillId, Error)>,
}

impl History {
    /// Reads every drill result, and the passed drills recorded as labels on `snapshots` (the
    /// repository's readable snapshots).
    pub fn load(repo: &Repository, snapshots: &[(SnapshotId, Snapshot)]) -> Result<History> {
        let stored = DrillResult::load_all(repo.storage(), repo.keys())?;
        Ok(History::from_parts(stored.good, stored.damaged, snapshots))
    }

    /// The history of `stored` results and the labels of `snapshots`, oldest first (by drill
    /// time; ties by id, legacy entries after).
    pub fn from_parts(
        stored: Vec<(DrillId, DrillResult)>,
        damaged: Vec<(DrillId, Error)>,
        snapshots: &[(SnapshotId, Snapshot)],
    ) -> History {
        let present: HashSet<SnapshotId> = snapshots.iter().map(|(id, _)| *id).collect();
        let mut entries: Vec<Entry> = stored
            .into_iter()
            .map(|(id, result)| Entry {
                id: Some(id),
                legacy: false,
                snapshot_present: present.contains(&result.snapshot),
                result,
            })
            .collect();
        entries.extend(snapshots.iter().filter_map(|(id, s)| legacy_entry(id, s)));
        entries.sort_by_key(|e| (e.result.time.timestamp(), e.legacy, e.id));
        History { entries, damaged }
    }

    /// The newest drill of snapshot `id`.
    pub fn last_of_snapshot(&self, id: &SnapshotId) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| e.result.snapshot == *id)
    }

    /// The newest drill of any snapshot of host `hostname` with source set `sources`
    /// ([`source_set`]), the drilled snapshot present or not.
    pub fn last_of_group(&self, hostname: &str, sources: &[String]) -> Option<&Entry> {
        self.entries.iter().rev().find(|e| {
            e.result.snapshot_hostname == hostname && e.result.snapshot_sources == sources
        })
    }
}

/// A passed drill recorded as the label [`VERIFIED_LABEL`] on snapshot `id`, if it has one
/// whose value is a time.
fn legacy_entry(id: &SnapshotId, snapshot: &Snapshot) -> Option<Entry> {
    let time: SnapshotTime = snapshot.labels.get(VERIFIED_LABEL)?.parse().ok()?;
    Some(Entry {
        id: None,
        legacy: true,
        snapshot_present: true,
        result: DrillResult {
            snapshot: *id,
            snapshot_time: snapshot.time.clone(),
            snapshot_hostname: snapshot.hostname.clone(),
            snapshot_sources: source_set(snapshot),
            time,
            hostname: String::new(),
            passed: true,
            duration_seconds: None,
            rto_seconds: None,
            sources: Vec::new(),
            error: None,
            program_version: String::new(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::BlobId;
    use std::collections::BTreeMap;

    fn snapshot(host: &str, time: &str, labels: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            time: time.parse().unwrap(),
            tree: BlobId([7; 32]),
            paths: vec!["/srv".into()],
            hostname: host.into(),
            username: "u".into(),
            tags: Vec::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
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

    fn source(name: &str, ok: bool, restore: Option<f64>) -> SourceResult {
        SourceResult {
            source: name.into(),
            kind: "path".into(),
            ok,
            checked: "checked".into(),
            problems: if ok { Vec::new() } else { vec!["bad".into()] },
            database: None,
            restore_seconds: restore,
            verify_seconds: None,
            missing_roles: Vec::new(),
        }
    }

    #[test]
    fn a_result_records_verdicts_timings_and_errors() {
        let snap = snapshot("app1", "2026-12-01T03:00:00Z", &[]);
        let started: jiff::Zoned = "2026-12-06T04:00:00+00:00[UTC]".parse().unwrap();
        let sources = [source("a", true, Some(1.5)), source("b", false, Some(2.0))];
        let run = Run {
            started: &started,
            hostname: "drillhost",
            duration_seconds: 4.0,
            sources: &sources,
            error: None,
        };
        let r = result_of(&SnapshotId([1; 32]), &snap, &run);
        assert!(!r.passed);
        assert_eq!(r.rto_seconds, Some(3.5));
        assert_eq!(r.snapshot_sources, ["/srv"]);
        assert_eq!(r.snapshot_hostname, "app1");
        assert_eq!(r.hostname, "drillhost");
        assert_eq!(r.failed_sources(), ["b"]);
        assert_eq!(r.time.as_str(), "2026-12-06T04:00:00+00:00");
        let passed = result_of(
            &SnapshotId([1; 32]),
            &snap,
            &Run {
                sources: &sources[..1],
                ..run
            },
        );
        assert!(passed.passed);
        let error = Error::InvalidInput("no scratch directory".into());
        let stopped = result_of(
            &SnapshotId([1; 32]),
            &snap,
            &Run {
                sources: &[],
                error: Some(&error),
                ..run
            },
        );
        assert!(!stopped.passed);
        assert_eq!(stopped.rto_seconds, None);
        assert_eq!(stopped.error.as_deref(), Some("no scratch directory"));
    }

    #[test]
    fn the_history_joins_results_and_labels_and_finds_the_last_of_each() {
        let labelled = snapshot(
            "app1",
            "2026-11-01T03:00:00Z",
            &[(VERIFIED_LABEL, "2026-11-02T03:00:00Z")],
        );
        let other_host = snapshot("app2", "2026-11-01T03:00:00Z", &[]);
        let unlabelled = snapshot("app1", "2026-12-01T03:00:00Z", &[]);
        let snaps = vec![
            (SnapshotId([1; 32]), labelled),
            (SnapshotId([2; 32]), other_host.clone()),
            (SnapshotId([3; 32]), unlabelled.clone()),
        ];
        let started: jiff::Zoned = "2026-12-06T04:00:00+00:00[UTC]".parse().unwrap();
        let failed_sources = [source("snapshot", false, Some(1.0))];
        let failed = result_of(
            &SnapshotId([3; 32]),
            &unlabelled,
            &Run {
                started: &started,
                hostname: "h",
                duration_seconds: 1.0,
                sources: &failed_sources,
                error: None,
            },
        );
        // A drill of a snapshot forgotten since.
        let gone = snapshot("app2", "2026-10-01T03:00:00Z", &[]);
        let early: jiff::Zoned = "2026-10-02T04:00:00+00:00[UTC]".parse().unwrap();
        let passed_sources = [source("snapshot", true, Some(1.0))];
        let old = result_of(
            &SnapshotId([9; 32]),
            &gone,
            &Run {
                started: &early,
                hostname: "h",
                duration_seconds: 1.0,
                sources: &passed_sources,
                error: None,
            },
        );
        let history = History::from_parts(
            vec![(DrillId([5; 32]), failed), (DrillId([6; 32]), old)],
            Vec::new(),
            &snaps,
        );
        let order: Vec<(bool, bool, bool)> = history
            .entries
            .iter()
            .map(|e| (e.legacy, e.result.passed, e.snapshot_present))
            .collect();
        assert_eq!(
            order,
            [
                (false, true, false),
                (true, true, true),
                (false, false, true)
            ]
        );
        let srv = vec!["/srv".to_string()];
        let last = history.last_of_group("app1", &srv).unwrap();
        assert!(!last.result.passed);
        assert_eq!(last.id, Some(DrillId([5; 32])));
        let last = history.last_of_group("app2", &srv).unwrap();
        assert!(last.result.passed && !last.snapshot_present);
        assert!(history.last_of_group("app3", &srv).is_none());
        let legacy = history.last_of_snapshot(&SnapshotId([1; 32])).unwrap();
        assert!(legacy.legacy && legacy.result.passed);
        assert_eq!(legacy.result.time.as_str(), "2026-11-02T03:00:00Z");
        assert!(history.last_of_snapshot(&SnapshotId([2; 32])).is_none());
        let json = serde_json::to_value(&history.entries[2]).unwrap();
        assert_eq!(json["id"], DrillId([5; 32]).to_hex());
        assert_eq!(json["passed"], false);
        assert_eq!(json["snapshot"], SnapshotId([3; 32]).to_hex());
        assert_eq!(json["legacy"], false);
        assert_eq!(json["sources"][0]["problems"][0], "bad");
    }
}

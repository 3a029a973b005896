//! `drill`: the restore test. Restores every source of a snapshot into scratch places (files
//! into a temporary directory, each database into a scratch database), checks every restored
//! file against the stored chunk ids and every table's row count against the snapshot's,
//! removes the scratch places again, and reports per source. A passed drill is recorded on the
//! snapshot as the label `drill.verified`.
//!
//! A failing source is a finding, not an error: it is reported with its problems and the drill
//! goes on with the next source. Errors are what stops the drill itself (no scratch directory,
//! an interruption, a failed relabel).

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::ops::restore::restore_subtree;
use crate::repository::Repository;
use crate::snapshot::{self, Snapshot, SourceRecord};
use crate::sources::postgres::PgSource;
use crate::sources::restore::{restore_database, verify_restored, DatabaseReport};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The label a passed drill leaves on the snapshot; its value is the drill's time.
pub const VERIFIED_LABEL: &str = "drill.verified";

/// Where the scratch files go and whether a pass is recorded.
#[derive(Clone, Debug, Default)]
pub struct DrillOptions {
    /// Parent of the temporary directory (default: the system's temporary directory).
    pub scratch_parent: Option<PathBuf>,
    /// Record a passed drill as the label [`VERIFIED_LABEL`] on the snapshot.
    pub record: bool,
}

/// The outcome for one source.
#[derive(Clone, Debug, Serialize)]
pub struct SourceResult {
    pub source: String,
    pub kind: String,
    pub ok: bool,
    /// What was checked, in words.
    pub checked: String,
    pub problems: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseReport>,
}

/// The outcome of a drill.
#[derive(Clone, Debug, Serialize)]
pub struct DrillReport {
    /// The drilled snapshot's id.
    pub snapshot: String,
    /// The drilled snapshot's time.
    pub time: String,
    /// Every source restored and matched.
    pub ok: bool,
    /// After a passed drill: the id of the snapshot as relabelled with `drill.verified`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded_as: Option<String>,
    pub sources: Vec<SourceResult>,
}

impl DrillReport {
    /// The names of the sources that failed, in order.
    pub fn failed(&self) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|r| !r.ok)
            .map(|r| r.source.as_str())
            .collect()
    }
}

impl SourceResult {
    /// Not yet checked: failed until a check says otherwise.
    fn new(record: &SourceRecord) -> SourceResult {
        SourceResult {
            source: record.name.clone(),
            kind: record.kind.clone(),
            ok: false,
            checked: String::new(),
            problems: Vec::new(),
            database: None,
        }
    }
}

/// A directory removed when dropped, whatever happened.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch_dir(parent: Option<&Path>) -> Result<ScratchDir> {
    let parent = parent.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = parent.join(format!("coffer-drill-{}-{nanos:08x}", std::process::id()));
    std::fs::create_dir(&dir).map_err(|e| {
        Error::InvalidInput(format!(
            "creating the drill directory {}: {e}",
            dir.display()
        ))
    })?;
    Ok(ScratchDir(dir))
}

/// The sources a drill restores: the snapshot's named sources, or, for a snapshot without
/// any, its whole tree as one `path` source named `snapshot`.
pub fn drilled_sources(snapshot: &Snapshot) -> Vec<SourceRecord> {
    if snapshot.sources.is_empty() {
        vec![SourceRecord {
            name: "snapshot".into(),
            kind: "path".into(),
            tree_path: "/".into(),
            origin: None,
            stream: None,
            postgres: None,
        }]
    } else {
        snapshot.sources.clone()
    }
}

/// Drills snapshot `id`. `connect` gives the connection of each `postgres` source (its
/// failure fails that source only). The scratch directory and databases are removed whatever
/// happens; a scratch database that cannot be dropped fails its source. With
/// `options.record`, a passed drill relabels the snapshot (a new snapshot id; see
/// [`snapshot::relabel`]).
pub fn drill(
    repo: &Repository,
    id: &SnapshotId,
    snapshot: &Snapshot,
    options: &DrillOptions,
    connect: &mut dyn FnMut(&SourceRecord) -> Result<PgSource>,
    cancel: &AtomicBool,
) -> Result<DrillReport> {
    let short = id.short();
    let dir = scratch_dir(options.scratch_parent.as_deref())?;
    let mut results = Vec::new();
    for (i, record) in drilled_sources(snapshot).iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let result = match record.kind.as_str() {
            "postgres" => drill_database(repo, snapshot, record, connect, &short, i),
            _ => drill_files(repo, snapshot, record, &dir.0, cancel),
        };
        results.push(result);
    }
    drop(dir);
    let ok = results.iter().all(|r| r.ok);
    // Snapshots are immutable objects, so recording writes a relabelled copy and removes the
    // original (docs/repository-format.md, section 10.2).
    let recorded_as = if ok && options.record {
        let now = jiff::Timestamp::now().to_string();
        let labels = std::collections::BTreeMap::from([(VERIFIED_LABEL.to_string(), now)]);
        let new_id = snapshot::relabel(repo.storage(), repo.keys(), id, snapshot, &labels)?;
        Some(new_id.to_hex())
    } else {
        None
    };
    Ok(DrillReport {
        snapshot: id.to_hex(),
        time: snapshot.time.clone(),
        ok,
        recorded_as,
        sources: results,
    })
}

fn drill_files(
    repo: &Repository,
    snapshot: &Snapshot,
    record: &SourceRecord,
    dir: &Path,
    cancel: &AtomicBool,
) -> SourceResult {
    let dest = dir.join(&record.name);
    let mut result = SourceResult::new(record);
    let restored = restore_subtree(repo, snapshot, &record.tree_path, &dest, false, cancel);
    if let Err(e) = restored {
        result.checked = "restore failed".into();
        result.problems.push(format!("{e}"));
        return result;
    }
    match verify_restored(repo, snapshot, &record.tree_path, &dest) {
        Ok(check) => {
            result.checked = format!(
                "{} files, {} restored and verified chunk by chunk",
                check.files,
                super::human_bytes(check.bytes)
            );
            result.ok = check.mismatches.is_empty();
            result.problems = check.mismatches;
        }
        Err(e) => {
            result.checked = "verification failed".into();
            result.problems.push(format!("{e}"));
        }
    }
    result
}

fn drill_database(
    repo: &Repository,
    snapshot: &Snapshot,
    record: &SourceRecord,
    connect: &mut dyn FnMut(&SourceRecord) -> Result<PgSource>,
    short: &str,
    index: usize,
) -> SourceResult {
    let mut result = SourceResult::new(record);
    let pg = match connect(record) {
        Ok(pg) => pg,
        Err(e) => {
            result.checked = "no connection".into();
            result.problems.push(format!("{e}"));
            return result;
        }
    };
    let scratch = format!("coffer_drill_{short}_{}_{index}", std::process::id());
    // A scratch database that already has tables is never touched.
    let mut refuse = |_: &str, _: u64| false;
    let restored = restore_database(repo, snapshot, record, &pg, &scratch, &mut refuse);
    let dropped = pg.drop_database(&scratch);
    match restored {
        Ok(report) => {
            let problems = report.mismatches();
            result.checked = format!(
                "{} restored into scratch database {scratch}, {} tables' row counts compared",
                super::human_bytes(report.bytes),
                report.tables.len()
            );
            result.ok = problems.is_empty();
            result.problems = problems;
            result.database = Some(report);
        }
        Err(e) => {
            result.checked = "restore failed".into();
            result.problems.push(format!("{e}"));
        }
    }
    if let Err(e) = dropped {
        result.problems.push(format!(
            "the scratch database {scratch} could not be dropped: {e}"
        ));
        result.ok = false;
    }
    result
}

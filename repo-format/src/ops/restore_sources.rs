//! Restoring a snapshot's named sources back where they came from: each `path` source to its
//! original path (or below a target directory at that path), each `postgres` source into its
//! database through `pg_restore` with the row counts and the dump's SHA-256 compared, and the
//! file of any other stream source below a target directory.
//!
//! The work comes in three steps so that a front end can show and decide. [`plan`] decides per
//! source what goes where and touches nothing. [`dry_run`] says, source by source, what a
//! restore would do. [`restore`] runs a preflight first, so that every reason to refuse (a file
//! conflict without `overwrite`, a database with tables that is neither forced nor confirmed)
//! is found before anything is changed, and then restores source by source. This module never
//! prints and never reads the terminal: connections, the confirmation of a replaced database and
//! progress output are the caller's, through [`Caller`].

use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::ops::restore::{check_subtree, restore_subtree, RestoreReport};
use crate::repository::Repository;
use crate::snapshot::{Snapshot, SourceRecord};
use crate::sources::postgres::{DumpFormat, PgSource};
use crate::sources::restore::{restore_database, DatabaseReport};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// What to restore and where.
#[derive(Clone, Debug, Default)]
pub struct SourcesOptions {
    /// Restore only these sources (empty: all of them).
    pub only: Vec<String>,
    /// Files go below this directory at their original paths instead of to those paths. Without
    /// it, stream sources other than `postgres` are skipped.
    pub target: Option<PathBuf>,
    /// Restore the database source into this database instead of the connection's (allowed
    /// with one database source only).
    pub pg_target: Option<String>,
    /// Replace existing files.
    pub overwrite: bool,
    /// Replace the contents of a database that already has tables without asking.
    pub force: bool,
}

/// Where one source goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The source's file or directory restored to this path.
    Files(PathBuf),
    /// A `postgres` source restored into this database, or (`None`) into the database its
    /// connection names.
    Database(Option<String>),
    /// Not restored: the file of a stream source needs a target directory.
    Skipped,
}

/// One selected source and where it goes.
#[derive(Clone, Debug)]
pub struct PlannedSource<'a> {
    pub record: &'a SourceRecord,
    pub destination: Destination,
}

/// The decisions of [`plan`], taken before anything is looked at on disk or in a database.
#[derive(Clone, Debug)]
pub struct Plan<'a> {
    pub id: SnapshotId,
    pub snapshot: &'a Snapshot,
    /// The selected sources in the snapshot's order.
    pub sources: Vec<PlannedSource<'a>>,
    pub overwrite: bool,
    pub force: bool,
}

/// What the caller supplies: connections, the decision to replace a database, progress output.
pub trait Caller {
    /// How to reach the database of a `postgres` source (see [`recorded_connection`] for the
    /// fallback without a configuration).
    fn connect(&mut self, record: &SourceRecord) -> Result<PgSource>;
    /// Asked during the preflight, when `force` is not set, for a database that already has
    /// tables: true replaces its contents, false refuses the whole restore.
    fn confirm_replace(&mut self, database: &str, tables: u64) -> bool;
    /// Each source as it is handled, in order. An error stops the restore there.
    fn progress(&mut self, event: Progress<'_>) -> Result<()>;
}

/// One source handled, as reported to [`Caller::progress`].
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// Dry run: what a restore would do with this source.
    Would {
        record: &'a SourceRecord,
        intended: &'a Intended,
    },
    /// Not restored (dry run or not): its file needs a target directory.
    Skipped { record: &'a SourceRecord },
    /// Restored.
    Restored(&'a RestoredSource),
}

/// What a restore would do with one source, found without changing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intended {
    /// Restore files to `destination`, which already exists (`exists`) or not.
    Files { destination: PathBuf, exists: bool },
    /// Restore into `database`, which is in `state`.
    Database {
        database: String,
        state: DatabaseState,
    },
}

/// A restore target database as found before the restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseState {
    /// It does not exist and would be created.
    Missing,
    /// It exists without tables.
    Empty,
    /// It has this many tables: replaced only with `force` or a confirmation.
    Tables(u64),
}

/// What restoring one source did.
#[derive(Clone, Debug, Serialize)]
pub struct RestoredSource {
    pub source: String,
    pub kind: String,
    /// Where its files went (absent for a database).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<PathBuf>,
    pub report: Restored,
}

/// The report of one restored source.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Restored {
    Files(RestoreReport),
    Database(DatabaseReport),
}

/// What [`restore`] did. Mismatches are reported, not raised: the caller decides what a
/// mismatch means (the command exits 1).
#[derive(Clone, Debug, Serialize)]
pub struct SourcesReport {
    /// The snapshot's short id.
    pub snapshot: String,
    pub sources: Vec<RestoredSource>,
    /// `source: what differs`, for every restored database whose row counts or dump hash
    /// differ from the snapshot's.
    pub mismatches: Vec<String>,
}

/// Why a dry run or restore stopped: the error, and what was being done when it happened
/// (`restoring source db`), which belongs in front of the error's own message.
#[derive(Debug)]
pub struct Failure {
    pub doing: Option<String>,
    pub error: Error,
}

impl Failure {
    fn doing(doing: String) -> impl FnOnce(Error) -> Failure {
        move |error| Failure {
            doing: Some(doing),
            error,
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure { doing: None, error }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.doing {
            Some(doing) => write!(f, "{doing}: {}", self.error),
            None => write!(f, "{}", self.error),
        }
    }
}

/// The connection for a recorded `postgres` source when no configuration names one: libpq's
/// environment (`PGHOST` ...) with the recorded database and dump format.
pub fn recorded_connection(record: &SourceRecord) -> Result<PgSource> {
    let recorded = record.postgres.as_ref().ok_or_else(|| {
        Error::InvalidInput(format!("source {} has no postgres record", record.name))
    })?;
    Ok(PgSource {
        database: recorded.database.clone(),
        url: None,
        command_prefix: Vec::new(),
        dump_args: Vec::new(),
        format: DumpFormat::parse(&recorded.format).unwrap_or(DumpFormat::Custom),
    })
}

/// Where a `path` source goes: its origin, or below `target` at its origin's path.
fn path_destination(record: &SourceRecord, target: Option<&Path>) -> PathBuf {
    let origin = PathBuf::from(record.origin.as_deref().unwrap_or(&record.tree_path));
    match target {
        Some(t) => t.join(origin.strip_prefix("/").unwrap_or(&origin)),
        None => origin,
    }
}

/// Decides per source what is restored where. Fails (`InvalidInput`, a usage error) for a name
/// in `only` that the snapshot does not have, and for `pg_target` with several database
/// sources selected.
pub fn plan<'a>(
    id: SnapshotId,
    snapshot: &'a Snapshot,
    options: &SourcesOptions,
) -> Result<Plan<'a>> {
    for name in &options.only {
        if !snapshot.sources.iter().any(|s| &s.name == name) {
            let names: Vec<&str> = snapshot.sources.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::InvalidInput(format!(
                "the snapshot has no source {name:?}; it has: {}",
                names.join(", ")
            )));
        }
    }
    let records: Vec<&SourceRecord> = snapshot
        .sources
        .iter()
        .filter(|s| options.only.is_empty() || options.only.contains(&s.name))
        .collect();
    let databases = records.iter().filter(|r| r.kind == "postgres").count();
    if options.pg_target.is_some() && databases > 1 {
        return Err(Error::InvalidInput(
            "--pg-target with several database sources: pick one with --only".into(),
        ));
    }
    let target = options.target.as_deref();
    let sources = records
        .into_iter()
        .map(|record| {
            let destination = match record.kind.as_str() {
                "path" => Destination::Files(path_destination(record, target)),
                "postgres" => Destination::Database(options.pg_target.clone()),
                _ => match target {
                    Some(t) => Destination::Files(t.join(record.tree_path.trim_start_matches('/'))),
                    None => Destination::Skipped,
                },
            };
            PlannedSource {
                record,
                destination,
            }
        })
        .collect();
    Ok(Plan {
        id,
        snapshot,
        sources,
        overwrite: options.overwrite,
        force: options.force,
    })
}

/// The database a `postgres` source goes into: the chosen one, else its connection's.
fn database_name(chosen: &Option<String>, pg: &PgSource) -> String {
    chosen.clone().unwrap_or_else(|| pg.database.clone())
}

/// Reports through [`Caller::progress`] what [`restore`] would do with each source, looking at
/// the destinations (does the path exist, does the database have tables) and changing nothing.
pub fn dry_run(plan: &Plan<'_>, caller: &mut dyn Caller) -> Result<(), Failure> {
    for planned in &plan.sources {
        let record = planned.record;
        let intended = match &planned.destination {
            Destination::Skipped => {
                caller.progress(Progress::Skipped { record })?;
                continue;
            }
            Destination::Files(destination) => Intended::Files {
                destination: destination.clone(),
                exists: destination.exists(),
            },
            Destination::Database(chosen) => {
                let pg = caller.connect(record)?;
                let database = database_name(chosen, &pg);
                let state = if pg.database_exists(&database)? {
                    match pg.table_count(&database)? {
                        0 => DatabaseState::Empty,
                        n => DatabaseState::Tables(n),
                    }
                } else {
                    DatabaseState::Missing
                };
                Intended::Database { database, state }
            }
        };
        caller.progress(Progress::Would {
            record,
            intended: &intended,
        })?;
    }
    Ok(())
}

/// Restores the planned sources. First the preflight: every file destination is checked for
/// conflicts and every target database that has tables must be forced or confirmed
/// ([`Caller::confirm_replace`]); any refusal fails here, with nothing changed. Then each source
/// in order, reported through [`Caller::progress`]. A failure while restoring stops there; the
/// sources before it stay restored.
pub fn restore(
    repo: &Repository,
    plan: &Plan<'_>,
    caller: &mut dyn Caller,
    cancel: &AtomicBool,
) -> Result<SourcesReport, Failure> {
    let mut connections = preflight(repo, plan, caller)?;
    let snapshot = plan.snapshot;
    let mut report = SourcesReport {
        snapshot: plan.id.short(),
        sources: Vec::new(),
        mismatches: Vec::new(),
    };
    for (planned, connection) in plan.sources.iter().zip(&mut connections) {
        let record = planned.record;
        let restoring = || Failure::doing(format!("restoring source {}", record.name));
        let restored = match &planned.destination {
            Destination::Skipped => {
                caller.progress(Progress::Skipped { record })?;
                continue;
            }
            Destination::Files(destination) => {
                let files = restore_subtree(
                    repo,
                    snapshot,
                    &record.tree_path,
                    destination,
                    plan.overwrite,
                    cancel,
                )
                .map_err(restoring())?;
                RestoredSource {
                    source: record.name.clone(),
                    kind: record.kind.clone(),
                    destination: Some(destination.clone()),
                    report: Restored::Files(files),
                }
            }
            Destination::Database(chosen) => {
                let pg = match connection.take() {
                    Some(pg) => pg,
                    None => caller.connect(record)?,
                };
                let database = database_name(chosen, &pg);
                // Approved (or empty) in the preflight.
                let mut allow = |_: &str, _: u64| true;
                let database = restore_database(repo, snapshot, record, &pg, &database, &mut allow)
                    .map_err(restoring())?;
                for m in database.mismatches() {
                    report.mismatches.push(format!("{}: {m}", record.name));
                }
                RestoredSource {
                    source: record.name.clone(),
                    kind: record.kind.clone(),
                    destination: None,
                    report: Restored::Database(database),
                }
            }
        };
        caller.progress(Progress::Restored(&restored))?;
        report.sources.push(restored);
    }
    Ok(report)
}

/// Everything that would refuse the restore, found before anything is changed. Returns the
/// connections of the database sources (in plan order, `None` for the others) for the restore.
fn preflight(
    repo: &Repository,
    plan: &Plan<'_>,
    caller: &mut dyn Caller,
) -> Result<Vec<Option<PgSource>>, Failure> {
    let mut connections = Vec::with_capacity(plan.sources.len());
    for planned in &plan.sources {
        let record = planned.record;
        let mut connection = None;
        match &planned.destination {
            Destination::Skipped => {}
            Destination::Files(destination) => check_subtree(
                repo,
                plan.snapshot,
                &record.tree_path,
                destination,
                plan.overwrite,
            )
            .map_err(Failure::doing(format!(
                "source {}: nothing was changed",
                record.name
            )))?,
            Destination::Database(chosen) => {
                let pg = caller.connect(record)?;
                let database = database_name(chosen, &pg);
                if pg.database_exists(&database)? {
                    let tables = pg.table_count(&database)?;
                    if tables > 0 && !plan.force && !caller.confirm_replace(&database, tables) {
                        return Err(Error::InvalidInput(format!(
                            "source {}: database {database} already has {tables} tables; \
                             refusing to restore into it (pass --force to replace its contents, \
                             or --pg-target to restore elsewhere); nothing was changed",
                            record.name
                        ))
                        .into());
                    }
                }
                connection = Some(pg);
            }
        }
        connections.push(connection);
    }
    Ok(connections)
}

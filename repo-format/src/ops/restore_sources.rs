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
use crate::format::id::SnapshotId;
use crate::format::snapshot::{Snapshot, SourceRecord};
use crate::ops::restore::{check_subtree, restore_subtree, RestoreReport};
use crate::repository::Repository;
use crate::sources::postgres::{DumpFormat, PgSource, RoleOptions};
use crate::sources::restore::{missing_roles, restore_database, roles_to_create, DatabaseReport};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

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
    /// Replace a database that already has tables without asking.
    pub force: bool,
    /// How long to wait for other sessions on a replaced database to end before terminating
    /// them.
    pub wait: Duration,
    /// Owners, privileges and missing roles of the database sources.
    pub roles: RoleOptions,
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
    pub wait: Duration,
    pub roles: RoleOptions,
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
    /// Counters to update while files are written (none by default).
    fn counters(&self) -> Option<&crate::ops::progress::Progress> {
        None
    }
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
        /// Roles the restore needs that the server lacks (see `RoleOptions`).
        missing_roles: Vec<String>,
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
        consistency: Default::default(),
        lock_timeout: None,
        role_passwords: false,
        restore_args: Vec::new(),
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
        wait: options.wait,
        roles: options.roles.clone(),
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
                let missing_roles = missing_roles(&pg, record, &plan.roles)?;
                Intended::Database {
                    database,
                    state,
                    missing_roles,
                }
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
    let mut report = SourcesReport {
        snapshot: plan.id.short(),
        sources: Vec::new(),
        mismatches: Vec::new(),
    };
    for (planned, connection) in plan.sources.iter().zip(&mut connections) {
        let record = planned.record;
        let restored = match &planned.destination {
            Destination::Skipped => {
                caller.progress(Progress::Skipped { record })?;
                continue;
            }
            Destination::Files(destination) => {
                let counters = caller.counters();
                if let Some(c) = counters {
                    c.set_current(&record.name);
                }
                restore_files(repo, plan, record, destination, cancel, counters)?
            }
            Destination::Database(chosen) => {
                let pg = match connection.take() {
                    Some(pg) => pg,
                    None => caller.connect(record)?,
                };
                let restored = restore_into_database(repo, plan, record, &pg, chosen)?;
                if let Restored::Database(database) = &restored.report {
                    for m in database.mismatches() {
                        report.mismatches.push(format!("{}: {m}", record.name));
                    }
                }
                restored
            }
        };
        caller.progress(Progress::Restored(&restored))?;
        report.sources.push(restored);
    }
    Ok(report)
}

/// What a failure while restoring `record` was doing.
fn restoring(record: &SourceRecord) -> impl FnOnce(Error) -> Failure {
    Failure::doing(format!("restoring source {}", record.name))
}

/// Restores the files of one source (a `path` source, or a stream's file) to `destination`.
fn restore_files(
    repo: &Repository,
    plan: &Plan<'_>,
    record: &SourceRecord,
    destination: &Path,
    cancel: &AtomicBool,
    counters: Option<&crate::ops::progress::Progress>,
) -> Result<RestoredSource, Failure> {
    let unused = crate::ops::progress::Progress::new();
    let files = restore_subtree(
        repo,
        plan.snapshot,
        &record.tree_path,
        destination,
        plan.overwrite,
        cancel,
        counters.unwrap_or(&unused),
    )
    .map_err(restoring(record))?;
    Ok(RestoredSource {
        source: record.name.clone(),
        kind: record.kind.clone(),
        destination: Some(destination.to_path_buf()),
        report: Restored::Files(files),
    })
}

/// Restores one `postgres` source through `pg` into the chosen database (else its
/// connection's). Replacing a database with tables was approved in the preflight.
fn restore_into_database(
    repo: &Repository,
    plan: &Plan<'_>,
    record: &SourceRecord,
    pg: &PgSource,
    chosen: &Option<String>,
) -> Result<RestoredSource, Failure> {
    let database = database_name(chosen, pg);
    let mut allow = |_: &str, _: u64| true;
    let database = restore_database(
        repo,
        plan.snapshot,
        record,
        pg,
        &database,
        &mut allow,
        plan.wait,
        &plan.roles,
    )
    .map_err(restoring(record))?;
    Ok(RestoredSource {
        source: record.name.clone(),
        kind: record.kind.clone(),
        destination: None,
        report: Restored::Database(database),
    })
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
                roles_to_create(&pg, record, &database, &plan.roles)?;
                connection = Some(pg);
            }
        }
        connections.push(connection);
    }
    Ok(connections)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::PostgresRecord;
    use crate::ops::backup::{backup, BackupOptions, Source, SourceInput, StreamSource};
    use crate::storage::Storage;

    /// The planned sources' names, in plan order.
    fn source_names<'p>(plan: &'p Plan<'_>) -> Vec<&'p str> {
        plan.sources
            .iter()
            .map(|p| p.record.name.as_str())
            .collect()
    }

    fn record(name: &str, kind: &str, tree_path: &str, origin: Option<&str>) -> SourceRecord {
        SourceRecord {
            name: name.into(),
            kind: kind.into(),
            tree_path: tree_path.into(),
            origin: origin.map(String::from),
            stream: None,
            postgres: (kind == "postgres").then(|| PostgresRecord {
                database: format!("{name}_db"),
                format: "custom".into(),
                ..PostgresRecord::default()
            }),
        }
    }

    /// A snapshot document with these sources (the tree is not looked at by `plan`).
    fn snapshot_with(sources: Vec<SourceRecord>) -> Snapshot {
        Snapshot {
            time: "2026-01-01T00:00:00+00:00".parse().unwrap(),
            tree: crate::BlobId([7; 32]),
            paths: Vec::new(),
            hostname: "h".into(),
            username: "u".into(),
            tags: Vec::new(),
            labels: Default::default(),
            parent: None,
            excludes: Vec::new(),
            program_version: "test".into(),
            key_id: String::new(),
            summary: Default::default(),
            sources,
            original: None,
            copied_from: None,
        }
    }

    fn four_sources() -> Snapshot {
        snapshot_with(vec![
            record("cmd", "command", "/cmd/out.txt", None),
            record("db", "postgres", "/db/app.dump", None),
            record("env", "path", "/opt/app/.env", Some("/opt/app/.env")),
            // Written before origins were recorded: the tree path is the origin.
            record("files", "path", "/srv/files", None),
        ])
    }

    fn destinations<'a>(plan: &Plan<'a>) -> Vec<(&'a str, Destination)> {
        plan.sources
            .iter()
            .map(|p| (p.record.name.as_str(), p.destination.clone()))
            .collect()
    }

    #[test]
    fn sources_go_back_to_their_origins_or_below_the_target() {
        let snap = four_sources();
        let id = SnapshotId([1; 32]);
        let plan = plan(id, &snap, &SourcesOptions::default()).unwrap();
        assert_eq!(
            destinations(&plan),
            [
                ("cmd", Destination::Skipped),
                ("db", Destination::Database(None)),
                ("env", Destination::Files("/opt/app/.env".into())),
                ("files", Destination::Files("/srv/files".into())),
            ]
        );

        let options = SourcesOptions {
            target: Some("/tmp/r".into()),
            pg_target: Some("elsewhere".into()),
            overwrite: true,
            ..SourcesOptions::default()
        };
        let plan = super::plan(id, &snap, &options).unwrap();
        assert_eq!(
            destinations(&plan),
            [
                ("cmd", Destination::Files("/tmp/r/cmd/out.txt".into())),
                ("db", Destination::Database(Some("elsewhere".into()))),
                ("env", Destination::Files("/tmp/r/opt/app/.env".into())),
                ("files", Destination::Files("/tmp/r/srv/files".into())),
            ]
        );
        assert!(plan.overwrite && !plan.force);
    }

    #[test]
    fn only_selects_in_snapshot_order_and_names_what_exists() {
        let snap = four_sources();
        let id = SnapshotId([1; 32]);
        let options = SourcesOptions {
            only: vec!["files".into(), "cmd".into()],
            ..SourcesOptions::default()
        };
        let plan = plan(id, &snap, &options).unwrap();
        let names = source_names(&plan);
        assert_eq!(names, ["cmd", "files"]);

        let options = SourcesOptions {
            only: vec!["files".into(), "uploads".into()],
            ..SourcesOptions::default()
        };
        let e = super::plan(id, &snap, &options).unwrap_err();
        assert!(matches!(e, Error::InvalidInput(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            "the snapshot has no source \"uploads\"; it has: cmd, db, env, files"
        );
    }

    #[test]
    fn a_pg_target_needs_a_single_database_source() {
        let mut sources = four_sources().sources;
        sources.push(record("db2", "postgres", "/db2/other.dump", None));
        let snap = snapshot_with(sources);
        let id = SnapshotId([1; 32]);
        let mut options = SourcesOptions {
            pg_target: Some("restored".into()),
            ..SourcesOptions::default()
        };
        let e = plan(id, &snap, &options).unwrap_err();
        assert!(e
            .to_string()
            .contains("--pg-target with several database sources"));
        // Without it, both go to their own databases.
        options.pg_target = None;
        assert!(plan(id, &snap, &options).is_ok());
        // One of them picked: fine.
        options.pg_target = Some("restored".into());
        options.only = vec!["db2".into(), "env".into()];
        let plan = plan(id, &snap, &options).unwrap();
        assert_eq!(
            destinations(&plan),
            [
                ("env", Destination::Files("/opt/app/.env".into())),
                ("db2", Destination::Database(Some("restored".into()))),
            ]
        );
    }

    #[test]
    fn recorded_connections_use_the_recorded_database() {
        let db = record("db", "postgres", "/db/app.dump", None);
        let pg = recorded_connection(&db).unwrap();
        assert_eq!(pg.database, "db_db");
        assert!(pg.url.is_none() && pg.command_prefix.is_empty());
        let files = record("files", "path", "/srv", None);
        let e = recorded_connection(&files).unwrap_err();
        assert_eq!(e.to_string(), "source files has no postgres record");
    }

    /// What a front end sees and decides: the progress events in order, as lines.
    #[derive(Default)]
    struct Recorder {
        events: Vec<String>,
        asked: u32,
    }

    impl Caller for Recorder {
        fn connect(&mut self, record: &SourceRecord) -> Result<PgSource> {
            Err(Error::InvalidInput(format!(
                "no server for {}",
                record.name
            )))
        }

        fn confirm_replace(&mut self, _: &str, _: u64) -> bool {
            self.asked += 1;
            false
        }

        fn progress(&mut self, event: Progress<'_>) -> Result<()> {
            self.events.push(match event {
                Progress::Would { record, intended } => {
                    format!("would {} {intended:?}", record.name)
                }
                Progress::Skipped { record } => format!("skipped {}", record.name),
                Progress::Restored(r) => format!("restored {} {:?}", r.source, r.destination),
            });
            Ok(())
        }
    }

    /// A repository holding one snapshot of two named path sources (a directory and a file)
    /// and a named stream; returns it reopened (so its index knows the new blobs), the
    /// snapshot and its id.
    fn repository_with_sources(dir: &Path) -> (Repository, SnapshotId, Snapshot) {
        let options = crate::repository::test_options();
        let repo = Repository::init(Storage::in_memory().unwrap(), b"pw", &options).unwrap();
        std::fs::create_dir_all(dir.join("app/files/deep")).unwrap();
        std::fs::write(dir.join("app/files/deep/a.txt"), "a").unwrap();
        std::fs::write(dir.join("app/files/b.txt"), "bb").unwrap();
        std::fs::write(dir.join("app/.env"), "SECRET=1\n").unwrap();
        let mut opts = BackupOptions::new(Vec::new());
        let named_path = |name: &str, path: PathBuf| Source {
            name: Some(name.into()),
            input: SourceInput::Path {
                path,
                excludes: Vec::new(),
            },
        };
        opts.sources = vec![
            named_path("files", dir.join("app/files")),
            named_path("env", dir.join("app/.env")),
            Source {
                name: Some("cmd".into()),
                input: SourceInput::Stream {
                    tree_name: "cmd/out.txt".into(),
                    stream: StreamSource::Reader(Box::new(std::io::Cursor::new(b"hello\n"))),
                    dump_chunking: false,
                },
            },
        ];
        opts.hostname = "h".into();
        let report = backup(&repo, opts).unwrap();
        let repo = Repository::open(repo.storage().clone(), b"pw").unwrap();
        (repo, report.id.unwrap(), report.snapshot)
    }

    #[test]
    fn a_file_conflict_refuses_the_restore_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let (repo, id, snap) = repository_with_sources(tmp.path());
        let target = tmp.path().join("restored");
        let options = SourcesOptions {
            target: Some(target.clone()),
            ..SourcesOptions::default()
        };
        let plan = plan(id, &snap, &options).unwrap();
        let names = source_names(&plan);
        assert_eq!(names, ["cmd", "env", "files"]);
        let below = |p: &Path| target.join(p.strip_prefix("/").unwrap());
        let env_dest = below(&tmp.path().join("app/.env"));
        let files_dest = below(&tmp.path().join("app/files"));
        // Only the last source conflicts.
        std::fs::create_dir_all(&files_dest).unwrap();
        std::fs::write(files_dest.join("b.txt"), "mine").unwrap();

        let mut caller = Recorder::default();
        let cancel = AtomicBool::new(false);
        let failure = restore(&repo, &plan, &mut caller, &cancel).unwrap_err();
        assert_eq!(
            failure.doing.as_deref(),
            Some("source files: nothing was changed")
        );
        assert!(
            matches!(failure.error, Error::WouldOverwrite(_)),
            "{failure}"
        );
        assert!(caller.events.is_empty(), "{:?}", caller.events);
        assert!(!env_dest.exists(), "an earlier source was restored");
        assert!(
            !target.join("cmd").exists(),
            "an earlier source was restored"
        );
        assert_eq!(std::fs::read(files_dest.join("b.txt")).unwrap(), b"mine");

        // With overwrite: every source, in order, reported as it is done.
        let options = SourcesOptions {
            overwrite: true,
            ..options
        };
        let plan = super::plan(id, &snap, &options).unwrap();
        let report = restore(&repo, &plan, &mut caller, &cancel).unwrap();
        assert_eq!(
            caller.events,
            [
                format!("restored cmd {:?}", Some(target.join("cmd/out.txt"))),
                format!("restored env {:?}", Some(&env_dest)),
                format!("restored files {:?}", Some(&files_dest)),
            ]
        );
        assert_eq!(caller.asked, 0);
        assert_eq!(
            std::fs::read(target.join("cmd/out.txt")).unwrap(),
            b"hello\n"
        );
        assert_eq!(std::fs::read(&env_dest).unwrap(), b"SECRET=1\n");
        assert_eq!(std::fs::read(files_dest.join("b.txt")).unwrap(), b"bb");
        assert_eq!(std::fs::read(files_dest.join("deep/a.txt")).unwrap(), b"a");
        assert_eq!(report.snapshot, id.short());
        assert!(report.mismatches.is_empty());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["sources"][2]["source"], "files");
        assert_eq!(json["sources"][2]["kind"], "path");
        assert_eq!(json["sources"][2]["report"]["files"], 2);
        assert_eq!(
            json["sources"][2]["destination"],
            files_dest.to_str().unwrap()
        );
    }

    #[test]
    fn a_dry_run_says_what_would_happen_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (_repo, id, snap) = repository_with_sources(tmp.path());
        let env = tmp.path().join("app/.env");
        std::fs::remove_dir_all(tmp.path().join("app/files")).unwrap();
        let plan = plan(id, &snap, &SourcesOptions::default()).unwrap();
        let mut caller = Recorder::default();
        dry_run(&plan, &mut caller).unwrap();
        let files = Intended::Files {
            destination: tmp.path().join("app/files"),
            exists: false,
        };
        let env_intended = Intended::Files {
            destination: env.clone(),
            exists: true,
        };
        assert_eq!(
            caller.events,
            [
                "skipped cmd".to_string(),
                format!("would env {env_intended:?}"),
                format!("would files {files:?}"),
            ]
        );
        assert!(!tmp.path().join("app/files").exists());
        assert_eq!(std::fs::read(&env).unwrap(), b"SECRET=1\n");
    }

    #[test]
    fn a_database_source_without_a_connection_stops_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let (repo, id, snap) = repository_with_sources(tmp.path());
        let mut snap = snap;
        // The database comes last, so the files would be restored first if the preflight
        // did not look at it.
        snap.sources
            .push(record("db", "postgres", "/db/app.dump", None));
        let target = tmp.path().join("restored");
        let options = SourcesOptions {
            target: Some(target.clone()),
            ..SourcesOptions::default()
        };
        let plan = plan(id, &snap, &options).unwrap();
        let mut caller = Recorder::default();
        let failure = restore(&repo, &plan, &mut caller, &AtomicBool::new(false)).unwrap_err();
        assert_eq!(failure.doing, None);
        assert_eq!(failure.to_string(), "no server for db");
        assert!(!target.exists());
        assert!(caller.events.is_empty());
    }
}

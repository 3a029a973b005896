//! `drill`: the restore test. Restores every source of a snapshot into scratch places (files
//! into a temporary directory, each database into a scratch database), checks every restored
//! file against the stored chunk ids and every table's row count against the snapshot's,
//! removes the scratch places again, and reports per source. The result, passed or failed, is
//! recorded as its own object `drills/<id>` ([`super::drill_history`]); the snapshot is never
//! rewritten and keeps its id. (Coffer before 2026-12-06 recorded a passed drill by relabelling
//! the snapshot with [`VERIFIED_LABEL`]; such snapshots still read as passed drills.)
//!
//! A failing source is a finding, not an error: it is reported with its problems and the drill
//! goes on with the next source. Errors are what stops the drill itself (no scratch directory,
//! an interruption, a failed write of the result); all but an interruption are recorded as a
//! failed drill too.
//!
//! A drill killed outright cannot remove its scratch directory; its name holds the drill's
//! process id, and the next drill removes those of processes no longer running before it starts.

use crate::error::{Error, Result};
use crate::format::id::SnapshotId;
use crate::format::snapshot::{Snapshot, SourceRecord};
use crate::ops::drill_history;
use crate::ops::restore::{restore, restore_subtree, RestoreOptions};
use crate::ops::walk;
use crate::repository::Repository;
use crate::sources::postgres::{PgSource, RoleOptions};
use crate::sources::restore::{missing_roles, restore_database, verify_restored, DatabaseReport};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The label with which Coffer before 2026-12-06 recorded a passed drill, by relabelling the
/// snapshot (a copy under a new id); its value is the drill's time. Read, never written.
pub const VERIFIED_LABEL: &str = "drill.verified";

/// Where the scratch files go and whether the result is recorded.
#[derive(Clone, Debug, Default)]
pub struct DrillOptions {
    /// Parent of the temporary directory (default: the system's temporary directory).
    pub scratch_parent: Option<PathBuf>,
    /// Record the result, passed or failed, as a drill result object (`drills/<id>`).
    pub record: bool,
    /// The host running the drill, as recorded in the result.
    pub hostname: String,
    /// Where and as whom database sources are drilled (`[drill]`, `--pg-url-env`).
    pub server: DrillServer,
}

// ---- The drill's database server (issue 15, item 3) -------------------------------------------

/// Where database sources are drilled: the connection is the caller's (`connect`); this says
/// which database and who owns what is restored.
#[derive(Clone, Debug, Default)]
pub struct DrillServer {
    /// Scratch database names start with this (default `coffer_drill`).
    pub database_prefix: Option<String>,
    /// Drill in this database, which the operator created for it (owned by the drilling role),
    /// instead of a scratch database of its own: for a role without CREATEDB. It must hold no
    /// tables; after the drill it is emptied again (`EMPTY_DRILL_DATABASE`).
    pub database: Option<String>,
    /// Every restored object is handed to this role (as `restore --owner`).
    pub owner: Option<String>,
}

/// The scratch database of source number `index` of a drill of snapshot `short`.
fn scratch_database(server: &DrillServer, short: &str, index: usize) -> String {
    if let Some(db) = &server.database {
        return db.clone();
    }
    let prefix = server.database_prefix.as_deref().unwrap_or("coffer_drill");
    format!("{prefix}_{short}_{}_{index}", std::process::id())
}

/// Refuses a pre-created drill database that is missing or holds tables (it is then not
/// touched at all).
fn check_drill_database(pg: &PgSource, database: &str) -> Result<()> {
    if !pg.database_exists(database)? {
        return Err(Error::InvalidInput(format!(
            "the drill database {database} ([drill] database) does not exist: create it for \
             the drilling role (CREATE DATABASE {} OWNER <role>)",
            crate::sources::postgres::quote_ident(database)
        )));
    }
    let tables = pg.table_count(database)?;
    if tables > 0 {
        return Err(Error::InvalidInput(format!(
            "the drill database {database} ([drill] database) has {tables} tables: a drill \
             restores only into an empty one, and did not touch it"
        )));
    }
    Ok(())
}

/// Empties a pre-created drill database after the drill: every schema dropped with what is in
/// it (`public` recreated as a new database has it), every large object unlinked. Never
/// `DROP OWNED`, which would also revoke the drilling role's privileges elsewhere (its
/// `CONNECT` on the app's database, say).
const EMPTY_DRILL_DATABASE: &str = r#"DO $coffer$
DECLARE
  r record;
BEGIN
  FOR r IN SELECT nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public')
      AND nspname NOT LIKE 'pg\_toast%' AND nspname NOT LIKE 'pg\_temp%'
  LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname);
  END LOOP;
  DROP SCHEMA IF EXISTS public CASCADE;
  CREATE SCHEMA public AUTHORIZATION pg_database_owner;
  GRANT USAGE ON SCHEMA public TO PUBLIC;
  PERFORM lo_unlink(oid) FROM pg_largeobject_metadata;
END
$coffer$;
"#;

/// The roles the drill server lacks for a restore that keeps owners (or hands them to
/// `server.owner`) and privileges, and the options the drill restores with: without those
/// owners and privileges when roles are missing, so that the data is still checked.
fn drill_roles(
    pg: &PgSource,
    record: &SourceRecord,
    server: &DrillServer,
) -> Result<(Vec<String>, RoleOptions)> {
    let mut options = RoleOptions {
        owner: server.owner.clone(),
        ..RoleOptions::default()
    };
    let missing = missing_roles(pg, record, &options)?;
    let custom = record.postgres.as_ref().is_none_or(|p| p.format != "plain");
    if !missing.is_empty() && custom {
        options.no_acl = true;
        if options.owner.is_none() {
            options.no_owner = true;
        }
    }
    // Owners are given only by a superuser or a member of the owning roles: a drilling role
    // that cannot (the app's own user, drilling a dump whose objects another role owns) checks
    // the data with the objects left to itself.
    if custom && !options.no_owner && options.owner.is_none() && !can_give_owners(pg, record)? {
        options.no_owner = true;
    }
    Ok((missing, options))
}

/// Whether the connected role is a superuser or a member of every recorded owner role.
fn can_give_owners(pg: &PgSource, record: &SourceRecord) -> Result<bool> {
    let owners: Vec<String> = record
        .postgres
        .as_ref()
        .and_then(|p| p.roles.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|r| r.owner)
        .map(|r| crate::sources::postgres::quote_literal(&r.name))
        .collect();
    if owners.is_empty() {
        return Ok(true);
    }
    let sql = format!(
        "SELECT coalesce(bool_and(pg_has_role(current_user, r.oid, 'MEMBER')), true) \
         FROM pg_roles r WHERE r.rolname IN ({});\n",
        owners.join(", ")
    );
    Ok(pg.psql("postgres", &sql)?.iter().any(|l| l.trim() == "t"))
}

// ---- end of the drill's database server --------------------------------------------------------

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
    /// Seconds the restore took (for a database: restore and row counts); absent when it
    /// was not attempted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_seconds: Option<f64>,
    /// Seconds the verification of restored files took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify_seconds: Option<f64>,
    /// Roles the dump needs that the drill's server lacks: what a new host would need (a
    /// restore there needs `--create-roles`). The drill then restores without owners and
    /// privileges. Not a failure.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_roles: Vec<String>,
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
    /// When the drill started (RFC 3339).
    pub started: String,
    /// Seconds from start to end.
    pub duration_seconds: f64,
    /// The measured recovery time: seconds spent restoring the sources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// The id of the drill result recorded (`drills/<id>`), unless told not to record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded: Option<String>,
    pub sources: Vec<SourceResult>,
    /// Scratch directories of earlier drills that died (their process no longer running),
    /// removed before this one started.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stale_scratch_removed: Vec<String>,
    /// Such directories that could not be removed, each with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stale_scratch_problems: Vec<String>,
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
            restore_seconds: None,
            verify_seconds: None,
            missing_roles: Vec::new(),
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

/// The start of every scratch directory's name: `coffer-drill-<process id>-<16 hex digits>`.
const SCRATCH_PREFIX: &str = "coffer-drill-";

/// The directory scratch directories are made in: `parent`, or the system's temporary
/// directory (`TMPDIR`, else `/tmp`).
fn scratch_parent(parent: Option<&Path>) -> PathBuf {
    parent.map_or_else(std::env::temp_dir, Path::to_path_buf)
}

/// The process id in `name` if it is a scratch directory's name ([`scratch_dir`]):
/// [`SCRATCH_PREFIX`], a process id (decimal, no leading zero), `-`, 16 lowercase hex digits.
fn scratch_owner(name: &std::ffi::OsStr) -> Option<u32> {
    let rest = name.to_str()?.strip_prefix(SCRATCH_PREFIX)?;
    let (pid, random) = rest.split_once('-')?;
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    if random.len() != 16 || !random.chars().all(hex) {
        return None;
    }
    if pid.is_empty() || pid.starts_with('0') || !pid.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes, from the scratch directories' parent, the scratch directories of earlier drills
/// whose process is no longer running (killed before it could clean up): only directories
/// (never a symlink, never followed) named as [`scratch_dir`] names them, owned by this user,
/// whose process id names no running process. Returns the paths removed and, for each one that
/// could not be removed, a problem naming it. A parent that cannot be listed is left alone.
fn remove_stale_scratch(parent: &Path) -> (Vec<String>, Vec<String>) {
    use std::os::unix::fs::MetadataExt;
    let (mut removed, mut problems) = (Vec::new(), Vec::new());
    let Ok(dir) = crate::fs::safe::Dir::open_trusted(parent) else {
        return (removed, problems);
    };
    let Ok(entries) = dir.entries() else {
        return (removed, problems);
    };
    let me = nix::unistd::geteuid().as_raw();
    for (name, kind) in entries {
        if kind != crate::fs::safe::Kind::Dir {
            continue;
        }
        let Some(pid) = scratch_owner(&name) else {
            continue;
        };
        let path = parent.join(&name);
        // Not following a symlink: one put there since the listing is not a directory.
        let mine = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if !mine || crate::fs::safe::process_alive(pid) {
            continue;
        }
        // remove_dir_all follows no symlink, neither at `path` nor below it.
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed.push(path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!(
                "the scratch directory {} of an earlier drill (process {pid}, no longer running) could not be removed: {e}",
                path.display()
            )),
        }
    }
    (removed, problems)
}

/// Creates the scratch directory below `parent` (default: the system's temporary directory)
/// as mkdtemp does: a name holding this process's id and a random part
/// (`coffer-drill-<pid>-<16 hex digits>`) that another local user cannot predict, created
/// exclusively (mkdir fails on anything already there, a symlink included, and then another
/// name is tried) and 0700, so nobody else can look or plant anything inside while the drill
/// restores into it. The process id lets a later drill tell a dead drill's directory from a
/// running one's ([`remove_stale_scratch`]).
fn scratch_dir(parent: Option<&Path>) -> Result<ScratchDir> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = scratch_parent(parent);
    let mut attempts = 0;
    loop {
        let mut random = [0u8; 8];
        coffer_crypto::random_fill(&mut random)
            .map_err(|e| Error::InvalidInput(format!("choosing a drill directory name: {e}")))?;
        let dir = parent.join(format!(
            "{SCRATCH_PREFIX}{}-{}",
            std::process::id(),
            hex::encode(random)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(ScratchDir(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempts < 16 => {
                attempts += 1;
            }
            Err(e) => {
                return Err(Error::InvalidInput(format!(
                    "creating the drill directory {}: {e}",
                    dir.display()
                )))
            }
        }
    }
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
/// `options.record`, the result is written as a drill result object, a failed drill's too, and
/// an error that stopped the drill (other than an interruption) is recorded as a failed drill
/// before it is returned. The snapshot itself is never rewritten.
pub fn drill(
    repo: &Repository,
    id: &SnapshotId,
    snapshot: &Snapshot,
    options: &DrillOptions,
    connect: &mut dyn FnMut(&SourceRecord) -> Result<PgSource>,
    cancel: &AtomicBool,
) -> Result<DrillReport> {
    let started = jiff::Zoned::now();
    let clock = std::time::Instant::now();
    let outcome = drill_sources(repo, id, snapshot, options, connect, cancel);
    let duration = clock.elapsed().as_secs_f64();
    let record = |results: &[SourceResult], error: Option<&Error>| {
        drill_history::record(
            repo,
            id,
            snapshot,
            &drill_history::Run {
                started: &started,
                hostname: &options.hostname,
                duration_seconds: duration,
                sources: results,
                error,
            },
        )
    };
    let (results, stale_scratch_removed, stale_scratch_problems) = match outcome {
        Ok(done) => done,
        Err(Error::Interrupted) => return Err(Error::Interrupted),
        Err(e) => {
            if options.record {
                if let Err(saving) = record(&[], Some(&e)) {
                    return Err(Error::InvalidInput(format!(
                        "{e}; recording the failed drill failed too: {saving}"
                    )));
                }
            }
            return Err(e);
        }
    };
    let ok = results.iter().all(|r| r.ok);
    let recorded = if options.record {
        Some(record(&results, None)?.to_hex())
    } else {
        None
    };
    Ok(DrillReport {
        snapshot: id.to_hex(),
        time: snapshot.time.to_string(),
        ok,
        started: drill_history::rfc3339(&started),
        duration_seconds: duration,
        rto_seconds: drill_history::rto(&results),
        recorded,
        sources: results,
        stale_scratch_removed,
        stale_scratch_problems,
    })
}

/// The sources' results, and the stale scratch directories removed and not removed.
type Drilled = (Vec<SourceResult>, Vec<String>, Vec<String>);

/// Restores and checks every source of the snapshot in a scratch directory removed after.
fn drill_sources(
    repo: &Repository,
    id: &SnapshotId,
    snapshot: &Snapshot,
    options: &DrillOptions,
    connect: &mut dyn FnMut(&SourceRecord) -> Result<PgSource>,
    cancel: &AtomicBool,
) -> Result<Drilled> {
    let short = id.short();
    let (stale_scratch_removed, stale_scratch_problems) =
        remove_stale_scratch(&scratch_parent(options.scratch_parent.as_deref()));
    let dir = scratch_dir(options.scratch_parent.as_deref())?;
    let mut results = Vec::new();
    for (i, record) in drilled_sources(snapshot).iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        let result = match record.kind.as_str() {
            "postgres" => {
                drill_database(repo, snapshot, record, connect, &short, i, &options.server)
            }
            _ => drill_files(repo, snapshot, record, &dir.0, cancel),
        };
        results.push(result);
    }
    drop(dir);
    Ok((results, stale_scratch_removed, stale_scratch_problems))
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
    let clock = std::time::Instant::now();
    let restored = if walk::split_path(&record.tree_path).is_empty() {
        // The whole snapshot: its root tree has no node of its own to restore as a subtree.
        let options = RestoreOptions {
            target: dest.clone(),
            includes: Vec::new(),
            overwrite: false,
            skip_damaged: false,
            ..RestoreOptions::default()
        };
        restore(repo, snapshot, &options, cancel)
    } else {
        let progress = crate::ops::progress::Progress::new();
        restore_subtree(
            repo,
            snapshot,
            &record.tree_path,
            &dest,
            false,
            cancel,
            &progress,
        )
    };
    result.restore_seconds = Some(clock.elapsed().as_secs_f64());
    if let Err(e) = restored {
        result.checked = "restore failed".into();
        result.problems.push(format!("{e}"));
        return result;
    }
    let clock = std::time::Instant::now();
    let verified = verify_restored(repo, snapshot, &record.tree_path, &dest);
    result.verify_seconds = Some(clock.elapsed().as_secs_f64());
    match verified {
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
    server: &DrillServer,
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
    let scratch = scratch_database(server, short, index);
    let prepared = match &server.database {
        Some(db) => check_drill_database(&pg, db),
        None => Ok(()),
    }
    .and_then(|()| drill_roles(&pg, record, server));
    let roles = match prepared {
        Ok((missing, roles)) => {
            result.missing_roles = missing;
            roles
        }
        Err(e) => {
            result.checked = "not restored".into();
            result.problems.push(format!("{e}"));
            return result;
        }
    };
    // A scratch database that already has tables is never touched.
    let mut refuse = |_: &str, _: u64| false;
    let clock = std::time::Instant::now();
    let restored = restore_database(
        repo,
        snapshot,
        record,
        &pg,
        &scratch,
        &mut refuse,
        std::time::Duration::ZERO,
        &roles,
    );
    result.restore_seconds = Some(clock.elapsed().as_secs_f64());
    let dropped = match &server.database {
        // Checked empty before the restore: what is in it now is the drill's.
        Some(db) => pg.psql(db, EMPTY_DRILL_DATABASE).map(|_| ()),
        None => pg.drop_database(&scratch),
    };
    match restored {
        Ok(report) => {
            let problems = report.mismatches();
            result.checked = format!(
                "{} restored into scratch database {scratch}, {} tables' row counts compared",
                super::human_bytes(report.bytes),
                report.tables.len()
            );
            if !result.missing_roles.is_empty() {
                result.checked.push_str(&format!(
                    "; this server lacks the role(s) {} that the dump needs (a new host needs \
                     them: restore there with --create-roles), so owners and privileges were \
                     not restored",
                    result.missing_roles.join(", ")
                ));
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::snapshot::PostgresRecord;
    use crate::ops::backup::{backup, BackupOptions, Source, SourceInput};

    fn repository() -> Repository {
        crate::repository::test_repo()
    }

    /// A drill whose snapshot has no database source to connect to.
    fn drill_without_databases(
        repo: &Repository,
        id: &SnapshotId,
        snap: &Snapshot,
        options: &DrillOptions,
    ) -> DrillReport {
        drill(
            repo,
            id,
            snap,
            options,
            &mut no_database,
            &AtomicBool::new(false),
        )
        .unwrap()
    }

    /// Backs up `sources` (name, path) below `dir`; unnamed when the name is empty. Returns
    /// the repository reopened (so its index knows the new blobs), the id and the snapshot.
    fn backed_up(
        repo: Repository,
        sources: &[(&str, PathBuf)],
    ) -> (Repository, SnapshotId, Snapshot) {
        let mut opts = BackupOptions::new(Vec::new());
        opts.sources = sources
            .iter()
            .map(|(name, path)| Source {
                name: (!name.is_empty()).then(|| name.to_string()),
                input: SourceInput::Path {
                    path: path.clone(),
                    excludes: Vec::new(),
                },
            })
            .collect();
        opts.hostname = "h".into();
        let report = backup(&repo, opts).unwrap();
        let repo = Repository::open(repo.storage().clone(), b"pw").unwrap();
        (repo, report.id.unwrap(), report.snapshot)
    }

    fn app(dir: &Path) -> (PathBuf, PathBuf) {
        let files = dir.join("app/files");
        std::fs::create_dir_all(files.join("deep")).unwrap();
        std::fs::write(files.join("deep/a.txt"), "a").unwrap();
        std::fs::write(files.join("b.txt"), vec![7u8; 3000]).unwrap();
        let env = dir.join("app/.env");
        std::fs::write(&env, "SECRET=1\n").unwrap();
        (files, env)
    }

    fn no_database(record: &SourceRecord) -> Result<PgSource> {
        Err(Error::InvalidInput(format!(
            "no server for {}",
            record.name
        )))
    }

    fn is_empty_dir(dir: &Path) -> bool {
        std::fs::read_dir(dir).unwrap().next().is_none()
    }

    #[test]
    fn a_passed_drill_checks_every_source_and_is_recorded_beside_the_snapshot() {
        let tmp = tempfile::tempdir().unwrap();
        let (files, env) = app(tmp.path());
        let (repo, id, snap) = backed_up(repository(), &[("files", files), ("env", env)]);
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let options = DrillOptions {
            scratch_parent: Some(scratch.clone()),
            record: true,
            hostname: "drillhost".into(),
            ..DrillOptions::default()
        };
        let report = drill_without_databases(&repo, &id, &snap, &options);
        assert!(report.ok, "{report:?}");
        assert!(report.failed().is_empty());
        assert_eq!(report.snapshot, id.to_hex());
        assert_eq!(report.time, snap.time.as_str());
        let by_name: Vec<(&str, &str)> = report
            .sources
            .iter()
            .map(|r| (r.source.as_str(), r.checked.as_str()))
            .collect();
        assert_eq!(
            by_name,
            [
                ("env", "1 files, 9 B restored and verified chunk by chunk"),
                (
                    "files",
                    "2 files, 2.9 KiB restored and verified chunk by chunk"
                ),
            ]
        );
        assert!(
            is_empty_dir(&scratch),
            "the scratch directory was left behind"
        );

        assert!(report.sources.iter().all(|s| s.restore_seconds.is_some()));
        assert!(report.sources.iter().all(|s| s.verify_seconds.is_some()));
        let rto = report.rto_seconds.unwrap();
        assert!(rto >= 0.0 && rto <= report.duration_seconds, "{report:?}");

        // Recorded as a drill result; the snapshot is unchanged, under its id.
        let all = Snapshot::load_all(repo.storage(), repo.keys())
            .unwrap()
            .good;
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, id);
        assert_eq!(all[0].1, snap);
        let results = crate::format::drill::DrillResult::load_all(repo.storage(), repo.keys())
            .unwrap()
            .good;
        assert_eq!(results.len(), 1);
        let (drill_id, result) = &results[0];
        assert_eq!(report.recorded.as_deref(), Some(drill_id.to_hex().as_str()));
        assert!(result.passed);
        assert_eq!(result.snapshot, id);
        assert_eq!(result.hostname, "drillhost");
        assert_eq!(result.snapshot_sources, ["env", "files"]);
        assert_eq!(result.time.as_str(), report.started);
        // Kept to the millisecond.
        let kept = result.rto_seconds.unwrap();
        assert!(
            (kept - report.rto_seconds.unwrap()).abs() <= 0.0005,
            "{kept}"
        );
        assert_eq!(result.sources.len(), 2);
        assert!(result.sources.iter().all(|s| s.passed));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["sources"][0]["source"], "env");
        assert!(json["sources"][0].get("database").is_none());
    }

    #[test]
    fn a_snapshot_without_named_sources_is_drilled_as_one_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let (files, _) = app(tmp.path());
        let (repo, id, snap) = backed_up(repository(), &[("", files)]);
        assert!(snap.sources.is_empty());
        let options = DrillOptions {
            scratch_parent: Some(tmp.path().to_path_buf()),
            record: false,
            hostname: "h".into(),
            ..DrillOptions::default()
        };
        let report = drill_without_databases(&repo, &id, &snap, &options);
        assert!(report.ok, "{report:?}");
        assert_eq!(report.sources.len(), 1);
        assert_eq!(report.sources[0].source, "snapshot");
        assert_eq!(report.sources[0].kind, "path");
        assert!(report.sources[0].checked.starts_with("2 files"));
        // Not recorded when not asked to.
        assert_eq!(report.recorded, None);
        assert!(
            crate::format::drill::DrillResult::load_all(repo.storage(), repo.keys())
                .unwrap()
                .good
                .is_empty()
        );
        let all = Snapshot::load_all(repo.storage(), repo.keys())
            .unwrap()
            .good;
        assert_eq!(all[0].0, id);
        assert!(all[0].1.labels.is_empty());
    }

    #[test]
    fn a_failing_source_is_named_and_the_others_still_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let (files, _) = app(tmp.path());
        let (repo, id, mut snap) = backed_up(repository(), &[("files", files)]);
        // A database source whose server cannot be reached, and a source whose content is
        // not in the tree.
        snap.sources.insert(
            0,
            SourceRecord {
                name: "db".into(),
                kind: "postgres".into(),
                tree_path: "/db/app.dump".into(),
                origin: None,
                stream: None,
                postgres: Some(PostgresRecord {
                    database: "app".into(),
                    format: "custom".into(),
                    ..PostgresRecord::default()
                }),
            },
        );
        snap.sources.push(SourceRecord {
            name: "lost".into(),
            kind: "path".into(),
            tree_path: "/nowhere".into(),
            origin: None,
            stream: None,
            postgres: None,
        });
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let options = DrillOptions {
            scratch_parent: Some(scratch.clone()),
            record: true,
            hostname: "h".into(),
            ..DrillOptions::default()
        };
        let report = drill_without_databases(&repo, &id, &snap, &options);
        assert!(!report.ok);
        assert_eq!(report.failed(), ["db", "lost"]);
        let db = &report.sources[0];
        assert_eq!(db.checked, "no connection");
        assert_eq!(db.problems, ["no server for db"]);
        assert!(report.sources[1].ok, "{:?}", report.sources[1]);
        let lost = &report.sources[2];
        assert_eq!(lost.checked, "restore failed");
        assert!(lost.problems[0].contains("/nowhere"), "{:?}", lost.problems);
        // A failed drill is recorded too, with each source's verdict, and leaves nothing
        // behind.
        let results = crate::format::drill::DrillResult::load_all(repo.storage(), repo.keys())
            .unwrap()
            .good;
        assert_eq!(results.len(), 1);
        let (drill_id, result) = &results[0];
        assert_eq!(report.recorded, Some(drill_id.to_hex()));
        assert!(!result.passed);
        assert_eq!(result.failed_sources(), ["db", "lost"]);
        assert_eq!(result.sources[0].problems, ["no server for db"]);
        assert_eq!(result.sources[0].restore_seconds, None);
        assert_eq!(result.error, None);
        assert_eq!(
            Snapshot::load_all(repo.storage(), repo.keys())
                .unwrap()
                .good[0]
                .0,
            id
        );
        assert!(is_empty_dir(&scratch));
    }

    #[test]
    fn an_interrupted_drill_stops_and_removes_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let (files, _) = app(tmp.path());
        let (repo, id, snap) = backed_up(repository(), &[("files", files)]);
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();
        let options = DrillOptions {
            scratch_parent: Some(scratch.clone()),
            record: true,
            hostname: "h".into(),
            ..DrillOptions::default()
        };
        let cancel = AtomicBool::new(true);
        let e = drill(&repo, &id, &snap, &options, &mut no_database, &cancel).unwrap_err();
        assert!(matches!(e, Error::Interrupted), "{e:?}");
        assert!(is_empty_dir(&scratch));
        // An interruption is no verdict: nothing recorded.
        let results = || {
            crate::format::drill::DrillResult::load_all(repo.storage(), repo.keys())
                .unwrap()
                .good
        };
        assert!(results().is_empty());

        // An error that stops the drill is recorded as a failed drill naming it.
        let missing = DrillOptions {
            scratch_parent: Some(tmp.path().join("absent")),
            record: true,
            hostname: "h".into(),
            ..DrillOptions::default()
        };
        let e = drill(&repo, &id, &snap, &missing, &mut no_database, &cancel).unwrap_err();
        assert!(
            e.to_string().starts_with("creating the drill directory"),
            "{e}"
        );
        let recorded = results();
        assert_eq!(recorded.len(), 1);
        assert!(!recorded[0].1.passed);
        assert!(recorded[0].1.sources.is_empty());
        assert_eq!(recorded[0].1.error.as_deref(), Some(e.to_string().as_str()));
    }

    #[test]
    fn the_scratch_directory_is_random_private_and_exclusive() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir().unwrap();
        // A group- and world-writable parent, like /tmp.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let a = scratch_dir(Some(tmp.path())).unwrap();
        let b = scratch_dir(Some(tmp.path())).unwrap();
        assert_ne!(a.0, b.0);
        for dir in [&a.0, &b.0] {
            let name = dir.file_name().unwrap().to_str().unwrap();
            let rest = name.strip_prefix("coffer-drill-").unwrap();
            let (pid, random) = rest.split_once('-').unwrap();
            assert_eq!(pid, std::process::id().to_string(), "{name}");
            assert_eq!(random.len(), 16, "{name}");
            assert!(random.bytes().all(|c| c.is_ascii_hexdigit()), "{name}");
            assert_eq!(
                scratch_owner(dir.file_name().unwrap()),
                Some(std::process::id())
            );
            let meta = std::fs::symlink_metadata(dir).unwrap();
            assert!(meta.is_dir());
            assert_eq!(meta.mode() & 0o7777, 0o700, "{name}");
        }
        let path = a.0.clone();
        drop(a);
        assert!(!path.exists(), "removed when dropped");
    }

    #[test]
    fn only_scratch_names_with_a_process_id_are_recognised() {
        let owner = |s: &str| scratch_owner(std::ffi::OsStr::new(s));
        assert_eq!(owner("coffer-drill-42-0123456789abcdef"), Some(42));
        for no in [
            "coffer-drill-0123456789abcdef", // an older drill's name: no process id
            "coffer-drill--0123456789abcdef", // empty process id
            "coffer-drill-042-0123456789abcdef", // leading zero
            "coffer-drill-4x-0123456789abcdef", // not a number
            "coffer-drill-42-0123456789abcde", // 15 digits
            "coffer-drill-42-0123456789ABCDEF", // upper case
            "coffer-drill-42-0123456789abcdef-x", // something after
            "coffer-drill-99999999999-0123456789abcdef",
            "other-42-0123456789abcdef",
        ] {
            assert_eq!(owner(no), None, "{no}");
        }
    }

    #[test]
    fn only_dead_drills_scratch_directories_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path();
        let outside = parent.join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"keep").unwrap();
        // A process id above any pid_max: no such process.
        let dead = parent.join(format!("coffer-drill-{}-00000000000000aa", i32::MAX));
        std::fs::create_dir(&dead).unwrap();
        std::os::unix::fs::symlink(&outside, dead.join("link")).unwrap();
        std::fs::write(dead.join("restored"), b"data").unwrap();
        let live = parent.join(format!(
            "coffer-drill-{}-00000000000000bb",
            std::process::id()
        ));
        std::fs::create_dir(&live).unwrap();
        // Kept: an older drill's name (no process id), a symlink named like a dead drill's
        // directory, a file named like one.
        let old = parent.join("coffer-drill-00000000000000cc");
        std::fs::create_dir(&old).unwrap();
        let link = parent.join(format!("coffer-drill-{}-00000000000000dd", i32::MAX));
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let file = parent.join(format!("coffer-drill-{}-00000000000000ee", i32::MAX));
        std::fs::write(&file, b"x").unwrap();
        let (removed, problems) = remove_stale_scratch(parent);
        assert_eq!(removed, vec![dead.display().to_string()]);
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!dead.exists());
        for kept in [&live, &old, &link, &file] {
            assert!(
                std::fs::symlink_metadata(kept).is_ok(),
                "{}",
                kept.display()
            );
        }
        assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"keep");
        // A parent that does not exist is nothing to clean.
        let (removed, problems) = remove_stale_scratch(&parent.join("absent"));
        assert!(removed.is_empty() && problems.is_empty());
    }
}

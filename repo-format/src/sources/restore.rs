//! Putting sources back: a database dump into PostgreSQL with its row counts checked, and the
//! end-to-end check of restored files against the ids their chunks were stored under.
//!
//! May use the repository (to read the dump and the stored chunk ids), the tree walk and the
//! PostgreSQL source; the choice of what goes where is `ops::restore_sources`'.

use super::postgres::{fresh_name, DumpFormat, PgSource, RoleOptions, Session};
use crate::error::{Error, Result};
use crate::format::snapshot::{PostgresRecord, RoleRecord, Snapshot, SourceRecord, TableRows};
use crate::format::tree::{Node, NodeKind};
use crate::ops::walk;
use crate::repository::Repository;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// One table's row count: recorded at backup, found after restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TableCheck {
    pub schema: String,
    pub table: String,
    /// Rows in the snapshot (absent: the table is not in the snapshot's record).
    pub expected: Option<u64>,
    /// Rows after the restore (absent: the table is missing).
    pub actual: Option<u64>,
}

impl TableCheck {
    pub fn matches(&self) -> bool {
        self.expected == self.actual
    }
}

/// What a database restore did and found.
#[derive(Clone, Debug, Serialize)]
pub struct DatabaseReport {
    pub source: String,
    pub database: String,
    /// The database did not exist and was created.
    pub created: bool,
    /// The database had tables and was replaced by a fresh one restored beside it.
    pub replaced: bool,
    pub bytes: u64,
    /// SHA-256 of the dump fed to the restore equals the one recorded at backup.
    pub sha256_matches: bool,
    pub tables: Vec<TableCheck>,
    /// Other sessions on the replaced database, terminated before the swap.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub closed_connections: Vec<Session>,
    /// The replaced database's name after the swap, when dropping it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_kept_as: Option<String>,
    /// Roles created from the snapshot's definitions (`--create-roles`) before the restore.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub created_roles: Vec<String>,
    /// The role every restored object was handed to (`--owner`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl DatabaseReport {
    /// Tables whose count differs, and a dump whose hash differs, as readable lines.
    pub fn mismatches(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .tables
            .iter()
            .filter(|t| !t.matches())
            .map(|t| {
                let show = |v: Option<u64>| v.map_or("missing".to_string(), |n| n.to_string());
                format!(
                    "table {}.{}: {} rows in the snapshot, {} restored",
                    t.schema,
                    t.table,
                    show(t.expected),
                    show(t.actual)
                )
            })
            .collect();
        if !self.sha256_matches {
            out.insert(0, "the dump's SHA-256 differs from the one recorded".into());
        }
        out
    }
}

/// The file node at `tree_path` of the snapshot.
fn file_node(repo: &Repository, snapshot: &Snapshot, tree_path: &str) -> Result<Node> {
    let node = walk::find(repo, &snapshot.tree, tree_path, &snapshot.time)?.ok_or_else(|| {
        Error::PathNotInSnapshot {
            path: tree_path.to_string(),
            snapshot: snapshot.time.to_string(),
        }
    })?;
    if node.kind != NodeKind::File {
        return Err(Error::corrupt(
            "snapshot",
            &snapshot.time,
            format!("{tree_path} should be a dump file"),
        ));
    }
    Ok(node)
}

/// Restores a `postgres` source into `target`.
///
/// - `target` missing: it is created and restored into; if the restore fails it is dropped
///   again.
/// - `target` exists without tables: restored into in one transaction, which a failure rolls
///   back.
/// - `target` has tables: `allow_existing(database, tables)` decides (false: refused, nothing
///   changed). Allowed, the snapshot is restored into a fresh database beside it, checked, and
///   renamed into its place (other sessions waited for up to `wait`, then terminated); see
///   `sources::postgres::replace`. Any failure before that rename leaves `target` untouched.
///
/// The restore is `pg_restore --clean --if-exists --no-owner --single-transaction
/// --exit-on-error` (or `psql --single-transaction` for plain SQL), then `ANALYZE` and the row
/// counts compared with the snapshot's. When creating or filling, mismatches are reported, not
/// raised (see [`DatabaseReport::mismatches`]); when replacing, a mismatch keeps the old
/// database and is an error. A failure says what was and was not changed
/// ([`Error::DatabaseRestore`]).
#[allow(clippy::too_many_arguments)]
pub fn restore_database(
    repo: &Repository,
    snapshot: &Snapshot,
    record: &SourceRecord,
    pg: &PgSource,
    target: &str,
    allow_existing: &mut dyn FnMut(&str, u64) -> bool,
    wait: Duration,
    roles: &RoleOptions,
) -> Result<DatabaseReport> {
    let recorded = record.postgres.as_ref().ok_or_else(|| {
        Error::InvalidInput(format!("source {:?} is not a postgres source", record.name))
    })?;
    let format = DumpFormat::parse(&recorded.format).ok_or_else(|| {
        Error::corrupt(
            "snapshot",
            &snapshot.time,
            format!("unknown dump format {:?}", recorded.format),
        )
    })?;
    let node = file_node(repo, snapshot, &record.tree_path)?;
    let to_create = roles_to_create(pg, record, target, roles)?;
    let dump = Dump {
        repo,
        snapshot,
        record,
        recorded,
        node,
        format,
        roles,
    };
    let exists = pg.database_exists(target)?;
    let tables = if exists { pg.table_count(target)? } else { 0 };
    if tables > 0 && !allow_existing(target, tables) {
        return Err(Error::InvalidInput(format!(
            "database {target} already has {tables} tables; refusing to restore into it \
             (pass --force to replace it, or --pg-target to restore elsewhere); \
             nothing was changed"
        )));
    }
    if tables > 0 {
        // Refused here, before a role is created, if the swap cannot be finished.
        pg.check_replace(target)?;
    }
    let recorded_roles = recorded.roles.as_deref().unwrap_or_default();
    let created_roles = pg.create_roles(&to_create, recorded_roles).map_err(|e| {
        outcome(
            e,
            format!("no role was created (one transaction) and database {target} was not changed"),
        )
    })?;
    let mut report =
        restore_prepared(&dump, pg, target, exists, tables, wait).map_err(|e| match e {
            Error::DatabaseRestore { cause, outcome } if !created_roles.is_empty() => {
                Error::DatabaseRestore {
                    cause,
                    outcome: format!(
                        "{outcome}\nthe role(s) {} were created from the snapshot before the \
                         restore and are kept",
                        created_roles.join(", ")
                    ),
                }
            }
            other => other,
        })?;
    report.created_roles = created_roles;
    report.owner = roles.owner.clone();
    Ok(report)
}

/// [`restore_database`] once the roles are there.
fn restore_prepared(
    dump: &Dump<'_>,
    pg: &PgSource,
    target: &str,
    exists: bool,
    tables: u64,
    wait: Duration,
) -> Result<DatabaseReport> {
    if tables > 0 {
        return replace_database(dump, pg, target, wait);
    }
    if exists {
        let loaded = dump.load(pg, target).map_err(|e| {
            outcome(
                e,
                format!("database {target} is as it was: the restore ran in one transaction, which was rolled back"),
            )
        })?;
        return Ok(dump.report(target, loaded, false));
    }
    match dump.database_owner(pg)? {
        Some(owner) => pg.create_database_owned(target, &owner)?,
        None => pg.create_database(target)?,
    }
    match dump.load(pg, target) {
        Ok(loaded) => Ok(dump.report(target, loaded, true)),
        Err(e) => Err(outcome(
            e,
            dropped(pg, target, "database {name} did not exist before"),
        )),
    }
}

/// Restores into a fresh database and swaps it in for `target` (see [`restore_database`]).
fn replace_database(
    dump: &Dump<'_>,
    pg: &PgSource,
    target: &str,
    wait: Duration,
) -> Result<DatabaseReport> {
    pg.check_replace(target)?;
    let fresh = fresh_name(target);
    let unchanged = format!("database {target} was not changed");
    pg.create_like(&fresh, target)
        .map_err(|e| outcome(e, unchanged.clone()))?;
    let loaded = dump.load(pg, &fresh).and_then(|loaded| {
        let report = dump.report(&fresh, loaded.clone(), false);
        let mismatches = report.mismatches();
        if mismatches.is_empty() {
            Ok(loaded)
        } else {
            Err(Error::Mismatch {
                name: dump.record.name.clone(),
                details: mismatches.join("; "),
            })
        }
    });
    let swapped = loaded.and_then(|loaded| Ok((loaded, pg.swap_in(&fresh, target, wait)?)));
    let (loaded, (closed, kept)) = swapped.map_err(|e| {
        outcome(
            e,
            format!(
                "{unchanged}; {}",
                dropped(
                    pg,
                    &fresh,
                    "the restored copy {name} was made for this restore"
                )
            ),
        )
    })?;
    let mut report = dump.report(target, loaded, false);
    report.replaced = true;
    report.closed_connections = closed;
    report.old_kept_as = kept;
    Ok(report)
}

/// `e` with what was and was not changed; an interruption stays an interruption.
fn outcome(e: Error, outcome: String) -> Error {
    match e {
        Error::Interrupted | Error::DatabaseRestore { .. } => e,
        cause => Error::DatabaseRestore {
            cause: Box::new(cause),
            outcome,
        },
    }
}

/// Drops `name`, which this restore created (`why`, with `{name}` in it, says so), and says
/// whether that worked.
fn dropped(pg: &PgSource, name: &str, why: &str) -> String {
    let why = why.replace("{name}", name);
    match pg.drop_database(name) {
        Ok(()) => format!("{why} and was dropped again"),
        Err(e) => format!("{why} and is left as it is: dropping it failed ({e})"),
    }
}

/// One recorded dump and how to read it.
struct Dump<'a> {
    repo: &'a Repository,
    snapshot: &'a Snapshot,
    record: &'a SourceRecord,
    recorded: &'a PostgresRecord,
    node: Node,
    format: DumpFormat,
    roles: &'a RoleOptions,
}

/// What loading a dump into a database found.
#[derive(Clone)]
struct Loaded {
    bytes: u64,
    sha256_matches: bool,
    after: Vec<TableRows>,
}

impl Dump<'_> {
    /// Feeds the dump into `database` through the restore program, then counts the rows. A blob
    /// that cannot be read stops the restore program before its transaction commits; the error
    /// names the blob, its pack and the dump's path in the snapshot.
    fn load(&self, pg: &PgSource, database: &str) -> Result<Loaded> {
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut bytes = 0u64;
        // On an object store: one request per pack touched.
        let _plan = self
            .repo
            .reader()
            .plan_reads([self.node.content.as_slice()]);
        pg.restore(
            database,
            self.format,
            self.roles,
            |stdin: &mut dyn Write| {
                self.repo
                    .read_blobs(&self.node.content, |chunk| {
                        sha2::Digest::update(&mut hasher, chunk);
                        bytes += chunk.len() as u64;
                        stdin
                            .write_all(chunk)
                            .map_err(|e| Error::io("writing the dump to", "the restore program", e))
                    })
                    .map_err(|e| match e {
                        Error::Corrupt { what, id, reason } => Error::Corrupt {
                            what,
                            id,
                            reason: format!(
                                "{reason} (in {} of snapshot {})",
                                self.record.tree_path, self.snapshot.time
                            ),
                        },
                        other => other,
                    })
            },
        )?;
        if let Some(owner) = &self.roles.owner {
            pg.reassign_to(database, owner)?;
        }
        let sha256 = hex::encode(sha2::Digest::finalize(hasher));
        let sha256_matches = self
            .record
            .stream
            .as_ref()
            .is_none_or(|s| s.sha256 == sha256);
        let after = pg.analyze_and_count(database)?;
        Ok(Loaded {
            bytes,
            sha256_matches,
            after,
        })
    }

    /// The owner a database created for this restore gets: the recorded owner of the dumped
    /// database when owners are restored as dumped (no `--owner`, no `--no-owner`), that role
    /// exists and the restoring role may give it a database (a superuser or a member of it);
    /// otherwise none (the restoring role owns it, and `--owner` hands it over afterwards).
    fn database_owner(&self, pg: &PgSource) -> Result<Option<String>> {
        if self.roles.owner.is_some() || self.roles.no_owner {
            return Ok(None);
        }
        let recorded = self.recorded.roles.as_deref().unwrap_or_default();
        let Some(owner) = recorded.iter().find(|r| r.database_owner) else {
            return Ok(None);
        };
        if !pg.missing_roles(&[owner.name.as_str()])?.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "SELECT pg_has_role(current_user, {}, 'MEMBER');\n",
            super::postgres::quote_literal(&owner.name)
        );
        let member = pg.psql("postgres", &sql)?.iter().any(|l| l.trim() == "t");
        Ok(member.then(|| owner.name.clone()))
    }

    fn report(&self, database: &str, loaded: Loaded, created: bool) -> DatabaseReport {
        DatabaseReport {
            source: self.record.name.clone(),
            database: database.to_string(),
            created,
            replaced: false,
            bytes: loaded.bytes,
            sha256_matches: loaded.sha256_matches,
            tables: compare_tables(&self.recorded.tables, &loaded.after),
            closed_connections: Vec::new(),
            old_kept_as: None,
            created_roles: Vec::new(),
            owner: None,
        }
    }
}

/// The roles a restore of `record` with `options` needs that the server lacks, and whether
/// `--owner`'s role is among them: found without changing anything. Old snapshots (no roles
/// recorded) need only the `--owner` role.
pub fn missing_roles(
    pg: &PgSource,
    record: &SourceRecord,
    options: &RoleOptions,
) -> Result<Vec<String>> {
    let Some(recorded) = record.postgres.as_ref() else {
        return Ok(Vec::new());
    };
    let format = DumpFormat::parse(&recorded.format).unwrap_or(DumpFormat::Custom);
    options.validate(format, &record.name)?;
    let roles = recorded.roles.as_deref().unwrap_or_default();
    let mut names: Vec<&str> = options
        .needed(roles, format)
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    if let Some(owner) = &options.owner {
        if !names.contains(&owner.as_str()) {
            names.push(owner);
        }
    }
    pg.missing_roles(&names)
}

/// The recorded roles to create before restoring `record` into `database`: none when the server
/// has every role it needs; with `--create-roles` the missing ones; otherwise the refusal
/// ([`Error::MissingRoles`]) naming them, before anything is changed.
pub fn roles_to_create<'a>(
    pg: &PgSource,
    record: &'a SourceRecord,
    database: &str,
    options: &RoleOptions,
) -> Result<Vec<&'a RoleRecord>> {
    let missing = missing_roles(pg, record, options)?;
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let recorded: &[RoleRecord] = record
        .postgres
        .as_ref()
        .and_then(|p| p.roles.as_deref())
        .unwrap_or_default();
    let definition = |name: &str| recorded.iter().find(|r| r.name == name);
    let undefined: Vec<String> = missing
        .iter()
        .filter(|n| definition(n).is_none())
        .cloned()
        .collect();
    if options.create_roles && undefined.is_empty() {
        return Ok(missing.iter().filter_map(|n| definition(n)).collect());
    }
    let hint = if options.create_roles {
        format!(
            "the snapshot records no definition of {} (create it on the server first:              CREATE ROLE ... LOGIN)",
            undefined.join(", ")
        )
    } else if record
        .postgres
        .as_ref()
        .is_some_and(|p| p.format == "plain")
    {
        "a plain-SQL dump runs its statements as written: pass --create-roles to create them \
         from the snapshot's definitions (passwords only if the backup recorded them), or \
         create them on the server first"
            .to_string()
    } else {
        "pass --create-roles to create them from the snapshot's definitions (passwords only if \
         the backup recorded them), or make them unnecessary: --owner ROLE (or --no-owner) for \
         owners, --no-acl for the roles in GRANTs"
            .to_string()
    };
    Err(Error::MissingRoles {
        source_name: record.name.clone(),
        database: database.to_string(),
        roles: missing,
        hint,
    })
}

/// Pairs the recorded and the restored row counts by table, sorted by schema and table; a table
/// on one side only has the other side's count absent.
fn compare_tables(expected: &[TableRows], actual: &[TableRows]) -> Vec<TableCheck> {
    let mut map: BTreeMap<(String, String), (Option<u64>, Option<u64>)> = BTreeMap::new();
    for t in expected {
        map.entry((t.schema.clone(), t.table.clone()))
            .or_default()
            .0 = Some(t.rows);
    }
    for t in actual {
        map.entry((t.schema.clone(), t.table.clone()))
            .or_default()
            .1 = Some(t.rows);
    }
    map.into_iter()
        .map(|((schema, table), (expected, actual))| TableCheck {
            schema,
            table,
            expected,
            actual,
        })
        .collect()
}

/// The result of checking restored files against the snapshot.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FileCheck {
    pub files: u64,
    pub bytes: u64,
    /// Files whose content differs, or that are missing, as readable lines.
    pub mismatches: Vec<String>,
}

/// Checks that every file below `tree_path` of the snapshot exists at the matching place below
/// `dest` with exactly the stored content: the restored bytes are cut at the stored chunk
/// lengths and every piece must hash (keyed BLAKE3) to the stored id. This checks the disk,
/// not the repository a second time. A `tree_path` of `/` checks the whole snapshot, restored
/// below `dest` at its paths.
pub fn verify_restored(
    repo: &Repository,
    snapshot: &Snapshot,
    tree_path: &str,
    dest: &Path,
) -> Result<FileCheck> {
    let mut check = FileCheck::default();
    let mut files: Vec<(std::path::PathBuf, Node)> = Vec::new();
    if walk::split_path(tree_path).is_empty() {
        // The whole snapshot: its root tree has no node of its own.
        files_below(repo, &snapshot.tree, dest, &mut files)?;
    } else {
        let root =
            walk::find(repo, &snapshot.tree, tree_path, &snapshot.time)?.ok_or_else(|| {
                Error::PathNotInSnapshot {
                    path: tree_path.to_string(),
                    snapshot: snapshot.time.to_string(),
                }
            })?;
        match root.kind {
            NodeKind::File => files.push((dest.to_path_buf(), root)),
            NodeKind::Dir => {
                if let Some(subtree) = &root.subtree {
                    files_below(repo, subtree, dest, &mut files)?;
                }
            }
            NodeKind::Symlink | NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {}
        }
    }
    for (path, node) in files {
        check.files += 1;
        match verify_file(repo, &node, &path) {
            Ok(n) => check.bytes += n,
            Err(reason) => check
                .mismatches
                .push(format!("{}: {reason}", path.display())),
        }
    }
    Ok(check)
}

/// Every file below `tree`, with where it was restored below `dest`.
fn files_below(
    repo: &Repository,
    tree: &crate::format::id::BlobId,
    dest: &Path,
    files: &mut Vec<(std::path::PathBuf, Node)>,
) -> Result<()> {
    walk::walk_local(repo, tree, "", dest, &mut |_, local, node| {
        if node.kind == NodeKind::File {
            files.push((local.to_path_buf(), node.clone()));
        }
        Ok(true)
    })
}

fn verify_file(repo: &Repository, node: &Node, path: &Path) -> std::result::Result<u64, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut total = 0u64;
    let mut buf = Vec::new();
    for (i, id) in node.content.iter().enumerate() {
        let length = repo.locate(id).map_err(|e| e.to_string())?.blob.raw_length;
        buf.resize(length as usize, 0);
        file.read_exact(&mut buf)
            .map_err(|e| format!("shorter than in the snapshot ({e})"))?;
        if repo.keys().content_id(&buf) != id.0 {
            return Err(format!(
                "chunk {i} at byte {total} differs from the snapshot"
            ));
        }
        total += u64::from(length);
    }
    let mut extra = [0u8; 1];
    if file.read(&mut extra).map_err(|e| e.to_string())? != 0 {
        return Err("longer than in the snapshot".into());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(schema: &str, table: &str, rows: u64) -> TableRows {
        TableRows {
            schema: schema.into(),
            table: table.into(),
            rows,
        }
    }

    #[test]
    fn row_counts_are_paired_by_table_and_mismatches_named() {
        let expected = [
            rows("public", "b", 2),
            rows("public", "a", 1),
            rows("s", "gone", 5),
        ];
        let actual = [
            rows("public", "a", 1),
            rows("public", "b", 3),
            rows("public", "new", 0),
        ];
        let tables = compare_tables(&expected, &actual);
        let check = |schema: &str, table: &str, expected, actual| TableCheck {
            schema: schema.into(),
            table: table.into(),
            expected,
            actual,
        };
        assert_eq!(
            tables,
            [
                check("public", "a", Some(1), Some(1)),
                check("public", "b", Some(2), Some(3)),
                check("public", "new", None, Some(0)),
                check("s", "gone", Some(5), None),
            ]
        );
        let matching: Vec<bool> = tables.iter().map(TableCheck::matches).collect();
        assert_eq!(matching, [true, false, false, false]);
        let mut report = DatabaseReport {
            source: "db".into(),
            database: "app".into(),
            created: false,
            replaced: false,
            bytes: 10,
            sha256_matches: true,
            tables,
            closed_connections: Vec::new(),
            old_kept_as: None,
            created_roles: Vec::new(),
            owner: None,
        };
        let lines = [
            "table public.b: 2 rows in the snapshot, 3 restored",
            "table public.new: missing rows in the snapshot, 0 restored",
            "table s.gone: 5 rows in the snapshot, missing restored",
        ];
        assert_eq!(report.mismatches(), lines);
        report.sha256_matches = false;
        let mismatches = report.mismatches();
        assert_eq!(
            mismatches[0],
            "the dump's SHA-256 differs from the one recorded"
        );
        assert_eq!(mismatches[1..], lines);
    }
}

//! PostgreSQL sources: a consistent dump, its facts, and its way back into a database.
//!
//! Coffer drives the PostgreSQL client programs (`psql`, `pg_dump`, `pg_restore`) instead of
//! linking a client library, so the client always matches the server it runs next to: a
//! configurable command prefix (`docker compose exec -T postgres`) runs them inside the
//! database's container.
//!
//! Consistency: a `psql` child holds a `REPEATABLE READ, READ ONLY` transaction open over its
//! stdin/stdout (or `SERIALIZABLE, READ ONLY, DEFERRABLE` with [`Consistency::SerializableDeferrable`]),
//! exports its snapshot (`pg_export_snapshot()`), reads the server version and the
//! exact row count of every table in that snapshot, and stays open while `pg_dump --snapshot`
//! dumps the very same state. The counts recorded in the snapshot are therefore the counts of
//! the dump, and a restore can be checked against them. A [`PgSource::lock_timeout`] applies to
//! both phases: `SET lock_timeout` in the counting session, `--lock-wait-timeout` for pg_dump.
//!
//! Secrets: a connection URL's parts reach the children through libpq's environment variables
//! (`PGHOST`, `PGPASSWORD` ...), never argv; [`PgUrl`]'s `Debug` and every error show it with the
//! password replaced (`url.rs`).

mod replace;
mod roles;
mod url;

pub use replace::{fresh_name, previous_name, Session};
pub use roles::{create_role_sql, validate_restore_args, RoleOptions};
pub use url::PgUrl;

use crate::error::{Error, Result};
use crate::format::snapshot::{RoleRecord, TableRows};
use crate::sources::child::Running;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};

/// The dump format of a PostgreSQL source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpFormat {
    /// `pg_dump -Fc -Z0`: custom format, uncompressed (Coffer compresses after deduplication).
    Custom,
    /// `pg_dump -Fp`: plain SQL, restored through `psql`.
    Plain,
}

impl DumpFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DumpFormat::Custom => "custom",
            DumpFormat::Plain => "plain",
        }
    }

    pub fn parse(s: &str) -> Option<DumpFormat> {
        match s {
            "custom" => Some(DumpFormat::Custom),
            "plain" => Some(DumpFormat::Plain),
            _ => None,
        }
    }

    /// File name extension inside the snapshot tree.
    pub fn extension(self) -> &'static str {
        match self {
            DumpFormat::Custom => "dump",
            DumpFormat::Plain => "sql",
        }
    }
}

/// How to reach one PostgreSQL database and which programs to run.
#[derive(Debug)]
pub struct PgSource {
    /// The database to dump (or to restore into by default).
    pub database: String,
    /// Connection; without it, libpq's own environment (`PGHOST` ...) applies.
    pub url: Option<PgUrl>,
    /// Words run before `pg_dump`, `pg_restore` and `psql` (e.g. `docker compose exec -T db`).
    pub command_prefix: Vec<String>,
    /// Extra `pg_dump` arguments.
    pub dump_args: Vec<String>,
    pub format: DumpFormat,
    /// The isolation of the exporting transaction.
    pub consistency: Consistency,
    /// How long the row count and pg_dump may wait for a table lock before failing (none:
    /// as long as it takes).
    pub lock_timeout: Option<std::time::Duration>,
    /// Record the roles' password hashes with the dump (`roles-with-passwords`).
    pub role_passwords: bool,
    /// Extra `pg_restore` arguments (checked by [`validate_restore_args`]).
    pub restore_args: Vec<String>,
}

/// The isolation of the transaction whose snapshot is dumped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// `REPEATABLE READ, READ ONLY` (the default): a consistent snapshot at once.
    #[default]
    RepeatableRead,
    /// `SERIALIZABLE, READ ONLY, DEFERRABLE`: waits, if need be, for a snapshot that no
    /// concurrent serializable transaction can make anomalous (pg_dump's
    /// `--serializable-deferrable`).
    SerializableDeferrable,
}

impl Consistency {
    /// The configuration's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::RepeatableRead => "repeatable-read",
            Consistency::SerializableDeferrable => "serializable-deferrable",
        }
    }

    /// From the configuration's word (`repeatable-read`, `serializable-deferrable`).
    pub fn parse(s: &str) -> Option<Consistency> {
        [
            Consistency::RepeatableRead,
            Consistency::SerializableDeferrable,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    /// The statement opening the exporting transaction.
    fn begin(self) -> &'static str {
        match self {
            Consistency::RepeatableRead => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;",
            Consistency::SerializableDeferrable => {
                "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE;"
            }
        }
    }
}

impl PgSource {
    /// A command for `program` with the prefix and the connection environment.
    pub fn command(&self, program: &str) -> Command {
        let mut words = self.command_prefix.iter();
        let mut cmd = match words.next() {
            Some(first) => {
                let mut c = crate::sources::child::command(first);
                c.args(words).arg(program);
                c
            }
            None => crate::sources::child::command(program),
        };
        if let Some(url) = &self.url {
            for (var, value) in &url.env {
                cmd.env(var, value.as_str());
            }
        }
        cmd
    }

    /// Starts `program` with `args` (behind the command prefix) and stdin piped (see
    /// [`Running`] for its stderr); returns the child and its display form for messages.
    fn spawn_piped(
        &self,
        program: &str,
        args: &[String],
        stdout: Stdio,
    ) -> Result<(Running, String)> {
        let display = self.display(program, args);
        let mut command = self.command(program);
        command.args(args);
        let child = Running::spawn(command, Stdio::piped(), stdout, None)
            .map_err(|e| start_error(&display, e))?;
        Ok((child, display))
    }

    /// How a command is shown in messages: the program and its arguments, never the environment.
    pub fn display(&self, program: &str, args: &[String]) -> String {
        self.command_prefix
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(program))
            .chain(args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The `pg_dump` arguments for a dump in `snapshot` (an exported snapshot id).
    pub fn dump_arguments(&self, snapshot: &str) -> Vec<String> {
        let mut args = match self.format {
            DumpFormat::Custom => vec!["--format=custom".to_string(), "--compress=0".into()],
            DumpFormat::Plain => vec!["--format=plain".to_string()],
        };
        args.push(format!("--snapshot={snapshot}"));
        if let Some(timeout) = self.lock_timeout {
            args.push(format!("--lock-wait-timeout={}", timeout.as_millis()));
        }
        args.extend(self.dump_args.iter().cloned());
        args.push(format!("--dbname={}", self.database));
        args
    }

    fn psql_args(database: &str) -> Vec<String> {
        [
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            database,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Runs `sql` through `psql` against `database` (sent on stdin, never argv); returns the
    /// output lines.
    pub fn psql(&self, database: &str, sql: &str) -> Result<Vec<String>> {
        let args = Self::psql_args(database);
        let (mut child, display) = self
            .spawn_piped("psql", &args, Stdio::piped())
            .map_err(client_error)?;
        let mut stdin = child.take_stdin().ok_or(Error::Interrupted)?;
        let sql = sql.to_string();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(sql.as_bytes());
        });
        let mut out = String::new();
        if let Some(mut stdout) = child.take_stdout() {
            let _ = stdout.read_to_string(&mut out);
        }
        let _ = writer.join();
        child
            .wait()
            .map_err(|e| Error::io("waiting for", "psql", e))?
            .check(&display)
            .map_err(client_error)?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Whether `database` exists on the server.
    pub fn database_exists(&self, database: &str) -> Result<bool> {
        let lines = self.psql(
            "postgres",
            &format!(
                "SELECT 1 FROM pg_database WHERE datname = {};\n",
                quote_literal(database)
            ),
        )?;
        Ok(lines.iter().any(|l| l.trim() == "1"))
    }

    pub fn create_database(&self, database: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE {};\n", quote_ident(database)),
        )
        .map(|_| ())
    }

    /// Creates `database` owned by `owner`.
    pub fn create_database_owned(&self, database: &str, owner: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!(
                "CREATE DATABASE {} OWNER {};\n",
                quote_ident(database),
                quote_ident(owner)
            ),
        )
        .map(|_| ())
    }

    pub fn drop_database(&self, database: &str) -> Result<()> {
        self.psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {};\n", quote_ident(database)),
        )
        .map(|_| ())
    }

    /// Ordinary and partitioned tables outside the system schemas.
    pub fn table_count(&self, database: &str) -> Result<u64> {
        let lines = self.psql(
            database,
            &format!("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_TABLES};\n"),
        )?;
        lines
            .iter()
            .find_map(|l| l.trim().parse().ok())
            .ok_or_else(|| {
                Error::InvalidInput(format!("psql returned no table count for {database}"))
            })
    }

    /// The `pg_restore` arguments of a restore into `database`: one transaction that stops at
    /// the first error, owners and privileges as `roles` says, the configured extra arguments.
    pub fn restore_arguments(&self, database: &str, roles: &RoleOptions) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--clean".into(),
            "--if-exists".into(),
            "--single-transaction".into(),
            "--exit-on-error".into(),
        ];
        if roles.no_owner || roles.owner.is_some() {
            args.push("--no-owner".into());
        }
        if roles.no_acl {
            args.push("--no-acl".into());
        }
        args.extend(self.restore_args.iter().cloned());
        args.push(format!("--dbname={database}"));
        args
    }

    /// `ANALYZE`, then the exact row count of every table.
    pub fn analyze_and_count(&self, database: &str) -> Result<Vec<TableRows>> {
        let lines = self.psql(database, &format!("ANALYZE;\n{ROW_COUNTS_SQL}\n"))?;
        parse_row_counts(&lines)
    }

    /// Feeds a dump into `database` (`pg_restore` for custom format, `psql` for plain SQL), in
    /// one transaction that stops at the first error. `feed` writes the dump into the writer it
    /// is given; an error from it aborts the restore.
    pub fn restore<F>(
        &self,
        database: &str,
        format: DumpFormat,
        roles: &RoleOptions,
        feed: F,
    ) -> Result<()>
    where
        F: FnOnce(&mut dyn Write) -> Result<()>,
    {
        let (program, args): (&str, Vec<String>) = match format {
            DumpFormat::Custom => ("pg_restore", self.restore_arguments(database, roles)),
            DumpFormat::Plain => {
                let mut a = Self::psql_args(database);
                a.push("--single-transaction".into());
                ("psql", a)
            }
        };
        let (mut child, display) = self
            .spawn_piped(program, &args, Stdio::null())
            .map_err(client_error)?;
        let mut stdin = child.take_stdin().ok_or(Error::Interrupted)?;
        let fed = feed(&mut stdin);
        if fed.is_err() {
            // Stopped before it sees the end of its input: a restorer that read a cut-short
            // dump to its end could commit what it had (psql commits at end of input), while
            // one that is stopped leaves its transaction to be rolled back by the server.
            child.stop();
        }
        drop(stdin);
        let exit = child
            .wait()
            .map_err(|e| Error::io("waiting for", program, e))?;
        // A dump that could not be read is the cause, not the restorer's complaint about its
        // input ending early ("could not read from input file: end of file").
        fed?;
        exit.check(&display).map_err(client_error)
    }
}

/// A failed client program of a restore, without the backup's "no snapshot was saved".
fn client_error(e: Error) -> Error {
    match e {
        Error::SourceCommand {
            command,
            status,
            stderr,
        } => Error::ClientCommand {
            command,
            status,
            stderr,
        },
        other => other,
    }
}

fn start_error(display: &str, e: std::io::Error) -> Error {
    crate::sources::child::start_error(
        display,
        e,
        " (is the PostgreSQL client installed, e.g. `apt-get install postgresql-client`, or is the command prefix right?)",
    )
}

/// A string as an SQL literal (standard_conforming_strings, the default since 9.1).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A name as an SQL identifier.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

const USER_TABLES: &str = "c.relkind IN ('r', 'p') \
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// One JSON object per table: exact `count(*)`, read inside the current transaction.
const ROW_COUNTS_SQL: &str = "SELECT json_build_object('schema', n.nspname, 'table', c.relname, \
    'rows', (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', \
    n.nspname, c.relname), false, true, '')))[1]::text::bigint) \
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind IN ('r', 'p') \
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
    AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
    ORDER BY n.nspname, c.relname;";

fn parse_row_counts(lines: &[String]) -> Result<Vec<TableRows>> {
    lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<TableRows>(l).map_err(|e| {
                Error::InvalidInput(format!("psql returned an unexpected row count line: {e}"))
            })
        })
        .collect()
}

/// `e`, a failure of the row count, said plainly when it was the lock timeout that ended it.
fn lock_timed_out(e: Error, timeout: Option<std::time::Duration>) -> Error {
    match (e, timeout) {
        (
            Error::SourceCommand {
                command,
                status,
                stderr,
            },
            Some(timeout),
        ) if stderr.contains("lock timeout") => Error::SourceCommand {
            command,
            status: format!(
                "{status}: counting the rows of the tables waited longer than lock-timeout \
                 ({} ms) for a table lock that another session holds (an ALTER TABLE, a \
                 migration, a LOCK TABLE); try again later, or raise lock-timeout",
                timeout.as_millis()
            ),
            stderr,
        },
        (e, _) => e,
    }
}

/// The exporting transaction: a `psql` child holding `REPEATABLE READ` (or `SERIALIZABLE
/// DEFERRABLE`) open.
pub struct SnapshotSession {
    child: Running,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    display: String,
    marker: u64,
    /// The exported snapshot id for `pg_dump --snapshot`.
    pub snapshot_id: String,
    pub server_version: String,
    /// Row counts in the exported snapshot.
    pub tables: Vec<TableRows>,
    /// The roles the dump needs (`roles.rs`), read in the same snapshot.
    pub roles: Vec<RoleRecord>,
}

impl SnapshotSession {
    /// Opens the transaction, exports its snapshot, reads the server version and the counts.
    pub fn begin(source: &PgSource) -> Result<SnapshotSession> {
        let args = PgSource::psql_args(&source.database);
        let (mut child, display) = source.spawn_piped("psql", &args, Stdio::piped())?;
        let stdin = child.take_stdin();
        let stdout = BufReader::new(child.take_stdout().ok_or(Error::Interrupted)?);
        let mut session = SnapshotSession {
            child,
            stdin,
            stdout,
            display,
            marker: 0,
            snapshot_id: String::new(),
            server_version: String::new(),
            tables: Vec::new(),
            roles: Vec::new(),
        };
        if let Some(timeout) = source.lock_timeout {
            session.query(&format!("SET lock_timeout = {};", timeout.as_millis()))?;
        }
        session.query(source.consistency.begin())?;
        let lines = session.query("SELECT pg_export_snapshot();")?;
        session.snapshot_id = lines
            .into_iter()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .ok_or_else(|| session.failure("no snapshot id returned"))?;
        let lines = session.query("SELECT current_setting('server_version');")?;
        session.server_version = lines.concat().trim().to_string();
        let lines = match session.query(ROW_COUNTS_SQL) {
            Ok(lines) => lines,
            Err(e) => return Err(lock_timed_out(e, source.lock_timeout)),
        };
        session.tables = parse_row_counts(&lines)?;
        if source.role_passwords {
            let lines =
                session.query("SELECT rolsuper FROM pg_roles WHERE rolname = current_user;")?;
            if !lines.iter().any(|l| l.trim() == "t") {
                return Err(Error::InvalidInput(
                    "roles-with-passwords = true needs a superuser connection (the password \
                     hashes are in pg_authid, which only superusers read); connect as one or \
                     leave roles-with-passwords out; no snapshot was saved"
                        .into(),
                ));
            }
        }
        let lines = session.query(&roles::roles_sql(source.role_passwords))?;
        session.roles = roles::parse_roles(&lines)?;
        Ok(session)
    }

    fn failure(&mut self, what: &str) -> Error {
        drop(self.stdin.take());
        match self.child.wait() {
            Ok(exit) => {
                let status = format!("{what} ({exit})");
                exit.failure(&self.display, status)
            }
            Err(e) => Error::SourceCommand {
                command: self.display.clone(),
                status: format!("{what} ({e})"),
                stderr: String::new(),
            },
        }
    }

    /// Sends one statement and returns its output lines, up to a marker echoed after it.
    fn query(&mut self, sql: &str) -> Result<Vec<String>> {
        self.marker += 1;
        let marker = format!("__coffer_done_{}__", self.marker);
        let sent = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(format!("{sql}\n\\echo {marker}\n").as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        if sent.is_err() {
            return Err(self.failure("psql stopped"));
        }
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return Err(self.failure("psql stopped")),
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\n', '\r']).to_string();
            if line == marker {
                return Ok(lines);
            }
            lines.push(line);
        }
    }

    /// Ends the read-only transaction and waits for `psql`.
    pub fn finish(mut self) -> Result<()> {
        self.query("COMMIT;")?;
        drop(self.stdin.take());
        self.child
            .wait()
            .map_err(|e| Error::io("waiting for", "psql", e))?
            .check(&self.display)
    }
}

impl Drop for SnapshotSession {
    fn drop(&mut self) {
        // An abandoned session (the dump failed): close psql's input so it rolls back and ends.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// `pg_restore --list` reading the head of the dump stream, counting the table of contents.
pub struct TocCheck {
    child: Running,
    stdin: Option<ChildStdin>,
    stdout: Option<std::thread::JoinHandle<String>>,
    display: String,
}

impl TocCheck {
    pub fn start(source: &PgSource) -> Result<TocCheck> {
        let args = vec!["--list".to_string()];
        let (mut child, display) = source.spawn_piped("pg_restore", &args, Stdio::piped())?;
        let stdin = child.take_stdin();
        let stdout = child.take_stdout().map(|mut out| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = out.read_to_string(&mut s);
                s
            })
        });
        Ok(TocCheck {
            child,
            stdin,
            stdout,
            display,
        })
    }

    /// Passes bytes on until `pg_restore` has read what it needs and closed its end.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        if let Some(stdin) = self.stdin.as_mut() {
            if stdin.write_all(bytes).is_err() {
                // A broken pipe: pg_restore read the table of contents and left. Expected.
                self.stdin = None;
            }
        }
    }

    /// Waits for `pg_restore --list` and returns the number of entries in the table of contents.
    pub fn finish(mut self) -> Result<u64> {
        drop(self.stdin.take());
        let exit = self
            .child
            .wait()
            .map_err(|e| Error::io("waiting for", "pg_restore", e))?;
        let out = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if !exit.success() {
            let status = format!("the dump's table of contents could not be read ({exit})");
            return Err(exit.failure(&self.display, status));
        }
        Ok(out
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
            .count() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_words_statements_and_the_lock_timeout_of_pg_dump() {
        assert_eq!(
            Consistency::parse("serializable-deferrable"),
            Some(Consistency::SerializableDeferrable)
        );
        assert_eq!(Consistency::parse("serializable"), None);
        assert_eq!(
            Consistency::default().begin(),
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;"
        );
        assert_eq!(
            Consistency::SerializableDeferrable.begin(),
            "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE;"
        );
        let mut pg = PgSource {
            database: "app".into(),
            url: None,
            command_prefix: Vec::new(),
            dump_args: vec!["--no-owner".into()],
            format: DumpFormat::Custom,
            consistency: Consistency::default(),
            lock_timeout: None,
            role_passwords: false,
            restore_args: Vec::new(),
        };
        assert!(!pg
            .dump_arguments("S")
            .iter()
            .any(|a| a.contains("lock-wait")));
        pg.lock_timeout = Some(std::time::Duration::from_millis(1500));
        let args = pg.dump_arguments("S");
        assert!(
            args.contains(&"--lock-wait-timeout=1500".to_string()),
            "{args:?}"
        );
        // A lock timeout in the row count is said plainly; other failures stay as they are.
        let failed = |stderr: &str| Error::SourceCommand {
            command: "psql".into(),
            status: "psql stopped (exit status: 3)".into(),
            stderr: stderr.into(),
        };
        let said = lock_timed_out(
            failed("ERROR:  canceling statement due to lock timeout"),
            pg.lock_timeout,
        )
        .to_string();
        assert!(said.contains("lock-timeout (1500 ms)"), "{said}");
        let other = lock_timed_out(failed("ERROR:  permission denied"), pg.lock_timeout);
        assert!(!other.to_string().contains("lock-timeout"), "{other}");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_literal("a'b"), "'a''b'");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn row_count_lines_parse() {
        let lines = vec![
            r#"{"schema" : "public", "table" : "t", "rows" : 42}"#.to_string(),
            String::new(),
        ];
        let rows = parse_row_counts(&lines).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].rows, 42);
    }
}

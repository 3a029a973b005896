//! The one error type of the repository crate: things a caller can act on.
//!
//! Messages are lowercase, name the object concerned, and never contain secret material.

use std::path::PathBuf;

/// Errors from repository operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No repository (no `config` object) at the location.
    #[error("no repository at {location}")]
    NoRepository { location: String },
    /// `init` found an existing repository.
    #[error("a repository already exists at {location}; refusing to overwrite it")]
    AlreadyInitialized { location: String },
    /// No key file opens with the given password.
    #[error("wrong password: no key file of the repository opens with it")]
    WrongPassword,
    /// Stored bytes failed a check: bad length, bad hash, failed authentication, bad encoding.
    #[error("{what} {id} is corrupt: {reason}")]
    Corrupt {
        what: &'static str,
        id: String,
        reason: String,
    },
    /// A stored object that should exist does not.
    #[error("{what} {id} is missing from the repository")]
    Missing { what: &'static str, id: String },
    /// The repository was written by a format version this program does not know.
    #[error("repository format version {found} is not supported (this coffer reads version {supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    /// Another process holds the repository's maintenance lease.
    #[error("repository is locked: {0}")]
    Locked(String),
    /// A storage operation failed. `path` names the location (bucket and key); `reason` is the
    /// store's message with every configured secret removed.
    #[error("storage {operation} of {path} failed: {reason}")]
    Storage {
        operation: &'static str,
        path: String,
        reason: String,
    },
    /// The storage location could not be opened or is not supported.
    #[error("cannot open storage {location}: {reason}")]
    StorageConfig { location: String, reason: String },
    /// A local file system operation failed.
    #[error("{operation} {}: {source}", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A command whose output was being backed up failed; nothing was saved.
    #[error(
        "source command `{command}` failed ({status}); no snapshot was saved{}",
        stderr_suffix(stderr)
    )]
    SourceCommand {
        command: String,
        status: String,
        stderr: String,
    },
    /// A PostgreSQL client program run by a restore or a drill (`pg_restore`, `psql`) failed.
    #[error("`{command}` failed ({status}){}", stderr_suffix(stderr))]
    ClientCommand {
        command: String,
        status: String,
        stderr: String,
    },
    /// A database restore stopped; `outcome` says what was and was not changed, so that the
    /// operator knows whether the old database is still there.
    #[error("{cause}\n{outcome}")]
    DatabaseRestore { cause: Box<Error>, outcome: String },
    /// The target server lacks roles the restore needs (owners or grantees of the dump's
    /// objects, or the `--owner` role); refused before anything was changed.
    #[error(
        "source {source_name}: the server lacks the role(s) {} that the dump needs{}; nothing was changed\n  {hint}",
        roles.join(", "),
        if database.is_empty() { String::new() } else { format!(" to restore into {database}") }
    )]
    MissingRoles {
        source_name: String,
        database: String,
        roles: Vec<String>,
        hint: String,
    },
    /// No snapshot matches the given id, prefix or `latest`.
    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),
    /// A snapshot id prefix matches several snapshots.
    #[error("snapshot prefix {prefix:?} is ambiguous: it matches {count} snapshots")]
    AmbiguousSnapshot { prefix: String, count: usize },
    /// A path does not exist inside a snapshot.
    #[error("{path} does not exist in snapshot {snapshot}")]
    PathNotInSnapshot { path: String, snapshot: String },
    /// The caller asked for something invalid.
    #[error("{0}")]
    InvalidInput(String),
    /// Restoring would overwrite an existing file.
    #[error("{} already exists; pass --overwrite to replace it", .0.display())]
    WouldOverwrite(PathBuf),
    /// The operation was interrupted (SIGINT/SIGTERM); nothing partial was committed.
    #[error("interrupted; no snapshot was saved")]
    Interrupted,
    /// One part of an operation stopped because another part failed first (an upload that
    /// found the disk full, say). Internal: the operation reports that first error instead; this
    /// one is only ever seen if the first error was lost, and is never taken for an interrupt.
    #[error("stopped after an earlier error; nothing was saved")]
    Stopped,
    /// One named source of a backup or restore failed; for a backup, nothing was saved.
    #[error("source {name:?}: {cause}")]
    Source { name: String, cause: Box<Error> },
    /// A restored database or file does not match what the snapshot recorded.
    #[error("source {name:?} does not match the snapshot: {details}")]
    Mismatch { name: String, details: String },
    /// A restore stopped before every file was written: at which file (if one), why, and
    /// exactly what it changed. Every file is whole or absent (renamed into place only when
    /// complete and verified); directories it made keep mode 0700.
    #[error(
        "restore stopped{}: {cause}\n{written} files were restored completely (each whole and verified); {} were not{}",
        at.as_ref().map(|p| format!(" at {}", p.display())).unwrap_or_default(),
        not_written.len(),
        path_list(not_written)
    )]
    RestoreStopped {
        at: Option<PathBuf>,
        cause: Box<Error>,
        /// The cause is damaged or missing data (not a failure to write the target).
        damaged: bool,
        written: u64,
        not_written: Vec<PathBuf>,
    },
    /// Key material could not be generated or used.
    #[error("cryptography: {0}")]
    Crypto(#[from] coffer_crypto::CryptoError),
    /// A retention policy has no active keep rule; applying it would forget every snapshot.
    #[error(
        "no keep rule given (use at least one of keep-last, keep-hourly, keep-daily, \
         keep-weekly, keep-monthly, keep-yearly, keep-within, keep-tag); \
         refusing to forget every snapshot"
    )]
    NoKeepRules,
    /// A keep count (`--keep-daily 7`) did not parse; `input` is the text as given.
    #[error("invalid keep count {input:?}: {reason}")]
    InvalidKeepCount { input: String, reason: String },
    /// A keep-within duration did not parse; `input` is the text as given.
    #[error("invalid keep-within duration {input:?}: {reason}")]
    InvalidKeepWithin { input: String, reason: String },
    /// A group-by spec did not parse: `input` is the whole spec as given, `item` the offending
    /// comma-separated item (trimmed).
    #[error("invalid group-by item {item:?} in {input:?}: {reason}")]
    InvalidGroupBy {
        input: String,
        item: String,
        reason: String,
    },
    /// A fault that is Coffer's own bug (a broken invariant, a worker that vanished, a value of
    /// its own that would not serialise), never bad input or bad stored data. Exit code 1.
    #[error("internal error: {0}; this is a bug in Coffer, please report it")]
    Internal(String),
    /// A keep-tag is empty or blank.
    #[error("invalid keep-tag {tag:?}: a tag must not be empty")]
    InvalidKeepTag { tag: String },
}

/// `: a, b, c and N more` for messages: the first few paths of a list.
fn path_list(paths: &[PathBuf]) -> String {
    const SHOWN: usize = 20;
    if paths.is_empty() {
        return String::new();
    }
    let mut out = String::from(":");
    for p in paths.iter().take(SHOWN) {
        out.push_str("\n  ");
        out.push_str(&p.display().to_string());
    }
    if paths.len() > SHOWN {
        out.push_str(&format!("\n  … and {} more", paths.len() - SHOWN));
    }
    out
}

fn stderr_suffix(stderr: &str) -> String {
    let trimmed = stderr.trim();
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("; its stderr:\n{trimmed}")
    }
}

impl Error {
    /// `self`, attributed to the named source (interruptions stay interruptions).
    pub fn in_source(self, name: &str) -> Error {
        match self {
            Error::Interrupted | Error::Stopped | Error::Source { .. } => self,
            other => Error::Source {
                name: name.to_string(),
                cause: Box::new(other),
            },
        }
    }

    pub(crate) fn corrupt(what: &'static str, id: impl ToString, reason: impl ToString) -> Self {
        Error::Corrupt {
            what,
            id: id.to_string(),
            reason: reason.to_string(),
        }
    }

    /// An [`Error::Internal`]: `what` says what went wrong, without secrets.
    pub(crate) fn internal(what: impl ToString) -> Self {
        Error::Internal(what.to_string())
    }

    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_say_they_are_a_bug_and_ask_for_a_report() {
        let e = Error::internal("a backup worker stopped unexpectedly");
        assert!(matches!(&e, Error::Internal(m) if m == "a backup worker stopped unexpectedly"));
        assert_eq!(
            e.to_string(),
            "internal error: a backup worker stopped unexpectedly; this is a bug in Coffer, \
             please report it"
        );
        // Attributed to a source, it stays recognisable as Coffer's own fault.
        let e = e.in_source("db");
        assert!(matches!(&e, Error::Source { cause, .. } if matches!(**cause, Error::Internal(_))));
        assert!(e.to_string().contains("this is a bug in Coffer"), "{e}");
    }
}

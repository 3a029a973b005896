//! What a backup says besides its snapshot, as typed values: [`Warning`]s (something was left
//! out, so the backup is partial) and [`Notice`]s (advice; the backup is complete). The command
//! line prints them with `Display` (the same words as before they were typed); `--json`,
//! notifications and tests can match on what happened instead of parsing text.
//!
//! Pure: no I/O.

use crate::format::id::SnapshotId;
use crate::sources::Sniffed;
use std::fmt;
use std::path::PathBuf;

/// A source file or directory the backup could not read. It is not in the snapshot (except a
/// file that kept changing while it was read: [`Step::Changed`], stored as read); the backup
/// goes on without it and is reported partial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The path as the walk met it.
    pub path: PathBuf,
    /// Which step failed.
    pub step: Step,
    /// The operating system's reason (or why the kind of file is not kept).
    pub reason: String,
}

/// The step of reading a source path that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `lstat` of the path.
    Stat,
    /// Reading a symlink's target.
    ReadLink,
    /// A kind of file the backup does not keep (a socket, a FIFO, a device).
    Unsupported,
    /// Listing a directory.
    ReadDir,
    /// Opening a file.
    Open,
    /// Reading a file's contents.
    Read,
    /// Reading extended attributes: the node IS in the snapshot, without the ones named.
    Xattr,
    /// A file whose size, mtime or ctime changed while it was read, and again while it was read
    /// a second time. Unlike the other steps, the file IS in the snapshot: as the second read
    /// saw it, which may mix old and new contents.
    Changed,
}

impl Step {
    /// The words the report uses for the step.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Stat => "cannot stat",
            Step::ReadLink => "cannot read link",
            Step::Unsupported => "skipped",
            Step::ReadDir => "cannot read directory",
            Step::Open => "cannot open",
            Step::Read => "read error",
            Step::Changed => "changed while being read; stored as read",
            Step::Xattr => "stored without an extended attribute",
        }
    }

    /// Whether the path is left out of the snapshot (every step but [`Step::Changed`] and
    /// [`Step::Xattr`]).
    pub fn left_out(self) -> bool {
        !matches!(self, Step::Changed | Step::Xattr)
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.path.display(),
            self.step.describe(),
            self.reason
        )
    }
}

/// Advice that does not make the backup partial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A stream or file holds a compressed database dump: it is stored, but will deduplicate
    /// poorly. Given once per backup.
    CompressedDump {
        /// The source or file it was found in.
        label: String,
        /// What it is (gzip, or a pg_dump custom-format dump with compression).
        kind: Sniffed,
    },
    /// A Unix socket was met and skipped: it is the live endpoint of a running program, which
    /// recreates it (as restic, coffer does not store sockets). Not a warning: the backup is
    /// complete.
    SocketSkipped(PathBuf),
    /// A snapshot could not be read while choosing the parent; it was not considered.
    DamagedSnapshot {
        /// Its id.
        id: SnapshotId,
        /// Why it could not be read.
        reason: String,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::CompressedDump { label, kind } => write!(
                f,
                "{label} is a compressed database dump ({}): it will deduplicate poorly, since \
                 any change reshuffles the compressed bytes; write dumps uncompressed \
                 (pg_dump -Fc -Z0, no gzip) and let coffer compress after deduplication, or \
                 back the database up with a postgres source",
                if *kind == Sniffed::GzipDump {
                    "gzip"
                } else {
                    "pg_dump custom format with compression"
                }
            ),
            Notice::SocketSkipped(path) => {
                write!(f, "{}: a socket, not stored", path.display())
            }
            Notice::DamagedSnapshot { reason, .. } => write!(f, "{reason}; skipped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_read_as_path_step_and_reason() {
        let w = Warning {
            path: PathBuf::from("/srv/app/uploads/x"),
            step: Step::Open,
            reason: "Permission denied (os error 13)".into(),
        };
        assert_eq!(
            w.to_string(),
            "/srv/app/uploads/x: cannot open: Permission denied (os error 13)"
        );
        let steps = [
            Step::Stat,
            Step::ReadLink,
            Step::Unsupported,
            Step::ReadDir,
            Step::Open,
            Step::Read,
            Step::Changed,
            Step::Xattr,
        ];
        let words: std::collections::BTreeSet<_> = steps.iter().map(|s| s.describe()).collect();
        assert_eq!(words.len(), steps.len(), "every step has its own words");
        let kept: Vec<_> = steps.iter().filter(|s| !s.left_out()).collect();
        assert_eq!(
            kept,
            [&Step::Changed, &Step::Xattr],
            "only a changed file and one without an attribute are still stored"
        );
        let changed = Warning {
            path: PathBuf::from("/var/log/app.log"),
            step: Step::Changed,
            reason: "size 10 → 20 bytes".into(),
        };
        assert_eq!(
            changed.to_string(),
            "/var/log/app.log: changed while being read; stored as read: size 10 → 20 bytes"
        );
    }

    #[test]
    fn notices_name_what_they_are_about() {
        let gz = Notice::CompressedDump {
            label: "db/app.sql.gz".into(),
            kind: Sniffed::GzipDump,
        };
        assert!(gz
            .to_string()
            .starts_with("db/app.sql.gz is a compressed database dump (gzip)"));
        let custom = Notice::CompressedDump {
            label: "db".into(),
            kind: Sniffed::CustomDumpCompressed,
        };
        assert!(custom
            .to_string()
            .contains("(pg_dump custom format with compression)"));
        let damaged = Notice::DamagedSnapshot {
            id: SnapshotId([7; 32]),
            reason: "snapshot 0707 is corrupt: bad tag".into(),
        };
        assert_eq!(
            damaged.to_string(),
            "snapshot 0707 is corrupt: bad tag; skipped"
        );
    }
}

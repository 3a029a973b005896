//! What the file-writing threads of a restore report back, and what the restore then says:
//! the bytes written, which files are complete (renamed into place, verified), the files left
//! out for damaged data (with `--skip-damaged`), and the first error that stops the rest.
//!
//! A restore that stops says exactly what it changed ([`Error::RestoreStopped`]): the files
//! restored completely, and the files not restored. Every file is whole or absent, never
//! partial, because each is renamed into place only when complete and verified.
//!
//! May use: `format/` (tree nodes), the error type.

use super::nodes::RestoreWarning;
use crate::error::{Error, Result};
use crate::format::tree::Node;
use crate::sync::lock;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// A file restore left out because its data in the repository is damaged or missing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DamagedFile {
    pub path: PathBuf,
    /// Why: the blob or pack that failed, and how.
    pub reason: String,
}

/// One file to write: its destination, its node, whether something existed there at planning.
pub(super) type FileJob<'p> = (&'p PathBuf, &'p Node, bool);

/// Shared by the writing threads of one restore; see the module doc.
pub(super) struct Outcome<'p> {
    files: &'p [FileJob<'p>],
    done: Vec<AtomicBool>,
    bytes: AtomicU64,
    skip_damaged: bool,
    damaged: Mutex<Vec<(usize, String)>>,
    /// Files restored without some of their extended attributes.
    warnings: Mutex<Vec<RestoreWarning>>,
    /// The first error that stops the restore, with the index of the file it met (if any).
    failed: Mutex<Option<(Option<usize>, Error)>>,
    stop: AtomicBool,
}

impl<'p> Outcome<'p> {
    pub(super) fn new(files: &'p [FileJob<'p>], skip_damaged: bool) -> Outcome<'p> {
        Outcome {
            files,
            done: files.iter().map(|_| AtomicBool::new(false)).collect(),
            bytes: AtomicU64::new(0),
            skip_damaged,
            damaged: Mutex::new(Vec::new()),
            warnings: Mutex::new(Vec::new()),
            failed: Mutex::new(None),
            stop: AtomicBool::new(false),
        }
    }

    /// The jobs of one batch.
    pub(super) fn files(&self, batch: std::ops::Range<usize>) -> &'p [FileJob<'p>] {
        &self.files[batch]
    }

    /// Whether files with damaged data are left out instead of stopping the restore.
    pub(super) fn skips_damaged(&self) -> bool {
        self.skip_damaged
    }

    /// Whether the threads should stop taking files (an error stopped the restore).
    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The flag the threads' pool watches.
    pub(super) fn stop_flag(&self) -> &AtomicBool {
        &self.stop
    }

    /// Whether file `i` is already complete (a batch retried file by file skips it).
    pub(super) fn is_done(&self, i: usize) -> bool {
        self.done[i].load(Ordering::Relaxed)
    }

    /// File `i` is complete and in place, with `bytes` bytes.
    pub(super) fn written(&self, i: usize, bytes: u64, warning: Option<RestoreWarning>) {
        self.done[i].store(true, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(w) = warning {
            lock(&self.warnings).push(w);
        }
    }

    /// File `i` (or, with `None`, no one file) failed with `e`. Returns whether the restore
    /// goes on: only with `--skip-damaged`, and only when the data was damaged or missing; a
    /// damaged file is then recorded and left out.
    pub(super) fn failed(&self, i: Option<usize>, e: Error) -> bool {
        if let (true, Some(i), true) = (self.skip_damaged, i, is_damage(&e)) {
            lock(&self.damaged).push((i, e.to_string()));
            return true;
        }
        self.stop.store(true, Ordering::Relaxed);
        lock(&self.failed).get_or_insert((i, e));
        false
    }

    /// The bytes written and the files left out for damage; or, when the restore stopped, the
    /// error saying what was and was not restored (an interrupt stays an interrupt).
    pub(super) fn finish(self) -> Result<(u64, Vec<DamagedFile>, Vec<RestoreWarning>)> {
        let failed = self.failed.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut damaged = self.damaged.into_inner().unwrap_or_else(|p| p.into_inner());
        damaged.sort();
        let damaged: Vec<DamagedFile> = damaged
            .into_iter()
            .map(|(i, reason)| DamagedFile {
                path: self.files[i].0.clone(),
                reason,
            })
            .collect();
        let Some((at, cause)) = failed else {
            let mut warnings = self
                .warnings
                .into_inner()
                .unwrap_or_else(|p| p.into_inner());
            warnings.sort_by(|a, b| a.path.cmp(&b.path));
            return Ok((self.bytes.into_inner(), damaged, warnings));
        };
        if matches!(cause, Error::Interrupted) {
            return Err(cause);
        }
        let mut written = 0;
        let mut not_written = Vec::new();
        for (i, done) in self.done.iter().enumerate() {
            if done.load(Ordering::Relaxed) {
                written += 1;
            } else {
                not_written.push(self.files[i].0.clone());
            }
        }
        Err(Error::RestoreStopped {
            at: at.map(|i| self.files[i].0.clone()),
            damaged: is_damage(&cause),
            cause: Box::new(cause),
            written,
            not_written,
        })
    }
}

/// Whether `e` says the repository's data for a file is damaged or missing (as opposed to a
/// failure to write the target, or of the storage connection).
pub(super) fn is_damage(e: &Error) -> bool {
    matches!(e, Error::Corrupt { .. } | Error::Missing { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tree::NodeKind;

    fn node() -> Node {
        Node {
            size: 1,
            ..Node::for_tests("f", NodeKind::File)
        }
    }

    fn corrupt() -> Error {
        Error::corrupt("blob", "ab", "authentication failed")
    }

    #[test]
    fn a_stop_names_what_was_and_was_not_written() {
        let paths: Vec<PathBuf> = ["a", "b", "c"].iter().map(PathBuf::from).collect();
        let n = node();
        let files: Vec<FileJob<'_>> = paths.iter().map(|p| (p, &n, false)).collect();
        let outcome = Outcome::new(&files, false);
        outcome.written(0, 1, None);
        assert!(!outcome.failed(Some(1), corrupt()));
        assert!(outcome.stopped());
        match outcome.finish() {
            Err(Error::RestoreStopped {
                at,
                damaged,
                written,
                not_written,
                ..
            }) => {
                assert_eq!(at, Some(PathBuf::from("b")));
                assert!(damaged);
                assert_eq!(written, 1);
                assert_eq!(not_written, vec![PathBuf::from("b"), PathBuf::from("c")]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn skip_damaged_goes_on_past_damage_only() {
        let paths: Vec<PathBuf> = ["a", "b"].iter().map(PathBuf::from).collect();
        let n = node();
        let files: Vec<FileJob<'_>> = paths.iter().map(|p| (p, &n, false)).collect();
        let outcome = Outcome::new(&files, true);
        assert!(outcome.failed(Some(1), corrupt()));
        outcome.written(0, 1, None);
        let (bytes, damaged, _) = outcome.finish().unwrap();
        assert_eq!(bytes, 1);
        assert_eq!(damaged.len(), 1);
        assert_eq!(damaged[0].path, PathBuf::from("b"));
        assert!(damaged[0].reason.contains("authentication failed"));

        // A failure to write the target is not damage: it stops the restore.
        let outcome = Outcome::new(&files, true);
        let io = Error::io("writing", "b", std::io::Error::other("disk full"));
        assert!(!outcome.failed(Some(1), io));
        assert!(matches!(
            outcome.finish(),
            Err(Error::RestoreStopped { damaged: false, .. })
        ));
        // An interrupt stays an interrupt.
        let outcome = Outcome::new(&files, true);
        outcome.failed(None, Error::Interrupted);
        assert!(matches!(outcome.finish(), Err(Error::Interrupted)));
    }
}

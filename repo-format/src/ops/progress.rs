//! Live progress of a long operation: counters the operation's threads update as they go and a
//! front end reads from another thread, as often as it likes, to draw a bar or print status
//! lines. Nothing here prints, sleeps or knows about terminals: the `coffer` command decides
//! whether and how progress is shown.
//!
//! Backup counts the files finished and the bytes read (a file taken unchanged from the parent
//! counts with its size) and names the source or file being read; its totals are unknown.
//! Restore knows its totals (files and bytes planned) before it writes (a restore of several
//! sources adds each one's when it starts), and counts the bytes written as they are written
//! and the files as they are complete.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The shared counters of one operation. Updates are relaxed atomics: cheap enough per chunk.
#[derive(Debug, Default)]
pub struct Progress {
    files: AtomicU64,
    bytes: AtomicU64,
    /// Meaningful once `totals_set` is.
    total_files: AtomicU64,
    total_bytes: AtomicU64,
    totals_set: std::sync::atomic::AtomicBool,
    current: Mutex<String>,
}

/// What [`Progress::read`] returns: the counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgressState {
    pub files_done: u64,
    pub bytes_done: u64,
    /// The totals, when the operation knows them in advance (restore).
    pub total_files: Option<u64>,
    pub total_bytes: Option<u64>,
    /// The source or file being worked on (empty before the first).
    pub current: String,
}

impl Progress {
    pub fn new() -> Progress {
        Progress::default()
    }

    /// One more file (or stream) complete.
    pub fn file_done(&self) {
        self.files.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` more bytes read or written.
    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` bytes counted before are to be counted again (a file read once more).
    pub fn take_back_bytes(&self, n: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
    }

    /// More work now known: `files` files of `bytes` bytes (a restore of several sources
    /// adds each one's as it starts).
    pub fn add_totals(&self, files: u64, bytes: u64) {
        self.total_files.fetch_add(files, Ordering::Relaxed);
        self.total_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.totals_set.store(true, Ordering::Release);
    }

    /// Names what is being worked on now.
    pub fn set_current(&self, what: &str) {
        if let Ok(mut current) = self.current.lock() {
            current.clear();
            current.push_str(what);
        }
    }

    /// The counters now.
    pub fn read(&self) -> ProgressState {
        let known = self.totals_set.load(Ordering::Acquire);
        ProgressState {
            files_done: self.files.load(Ordering::Relaxed),
            bytes_done: self.bytes.load(Ordering::Relaxed),
            total_files: known.then(|| self.total_files.load(Ordering::Relaxed)),
            total_bytes: known.then(|| self.total_bytes.load(Ordering::Relaxed)),
            current: self.current.lock().map(|c| c.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up_and_totals_are_unknown_until_set() {
        let p = Progress::new();
        assert_eq!(p.read(), ProgressState::default());
        p.set_current("db");
        p.add_bytes(100);
        p.add_bytes(50);
        p.take_back_bytes(30);
        p.file_done();
        let s = p.read();
        assert_eq!((s.files_done, s.bytes_done), (1, 120));
        assert_eq!((s.total_files, s.total_bytes), (None, None));
        assert_eq!(s.current, "db");
        p.take_back_bytes(1000);
        assert_eq!(p.read().bytes_done, 0);
        p.add_totals(0, 0);
        assert_eq!(p.read().total_bytes, Some(0));
        p.add_totals(2, 10);
        p.add_totals(1, 5);
        assert_eq!(
            (p.read().total_files, p.read().total_bytes),
            (Some(3), Some(15))
        );
    }
}

#[cfg(test)]
mod counted_by_the_operations {
    use super::*;
    use crate::ops::backup::{backup, BackupOptions};
    use crate::ops::check::{check_with_progress, CheckOptions, ReadData};
    use crate::ops::restore::{restore, RestoreOptions};
    use crate::repository::{test_repo, Repository};
    use std::sync::Arc;

    #[test]
    fn backup_restore_and_check_count_what_they_did() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let sizes = [10_000usize, 300_000, 1];
        for (i, size) in sizes.iter().enumerate() {
            std::fs::write(base.join(format!("f{i}")), vec![i as u8 + 1; *size]).unwrap();
        }
        let total: u64 = sizes.iter().map(|s| *s as u64).sum();
        let repo = test_repo();
        let mut options = BackupOptions::new(vec![base.clone()]);
        let counted = Arc::new(Progress::new());
        options.progress = counted.clone();
        let report = backup(&repo, options).unwrap();
        let s = counted.read();
        assert_eq!((s.files_done, s.bytes_done), (3, total));
        assert_eq!(s.total_bytes, None);
        assert!(s.current.starts_with(&*base.to_string_lossy()), "{s:?}");

        // A second backup takes every file unchanged from the first: counted with its size.
        let mut options = BackupOptions::new(vec![base.clone()]);
        let again = Arc::new(Progress::new());
        options.progress = again.clone();
        backup(&repo, options).unwrap();
        assert_eq!(
            (again.read().files_done, again.read().bytes_done),
            (3, total)
        );

        let repo = Repository::open(repo.storage().clone(), b"pw").unwrap();
        let target = tempfile::tempdir().unwrap();
        let options = RestoreOptions {
            target: target.path().join("r"),
            ..RestoreOptions::default()
        };
        let cancel = std::sync::atomic::AtomicBool::new(false);
        restore(&repo, &report.snapshot, &options, &cancel).unwrap();
        let s = options.progress.read();
        assert_eq!((s.total_files, s.total_bytes), (Some(3), Some(total)));
        assert_eq!((s.files_done, s.bytes_done), (3, total));

        let counted = Progress::new();
        let options = CheckOptions {
            read_data: ReadData::All,
            cancel: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let report = check_with_progress(&repo, &options, &counted).unwrap();
        assert!(report.is_clean());
        let s = counted.read();
        let packs: Vec<(crate::format::id::PackId, u64)> = repo.list_packs().unwrap();
        assert_eq!(s.total_files, Some(packs.len() as u64));
        assert_eq!(s.total_bytes, Some(packs.iter().map(|(_, n)| n).sum()));
        assert_eq!(
            (Some(s.files_done), Some(s.bytes_done)),
            (s.total_files, s.total_bytes)
        );
    }
}

//! A repository in a local directory: plain file system calls, no I/O runtime. Writes are
//! durable (a staging file flushed, linked under its name, the directory flushed) and large ones
//! go around the page cache; reads are `pread`s into a buffer each thread reuses, from pack
//! descriptors kept open, and large one-off reads of packs use `O_DIRECT`
//! ([`crate::fs::direct`]). New files and directories get the [`LocalModes`] the repository's
//! root directory asks for. May use `fs/` and the backend trait; nothing above storage.

use super::backend::{
    is_staging_name, missing, short_read, too_large, Backend, ObjectInfo, RangeSink,
};
use super::OpenMode;
use crate::error::{Error, Result};
use bytes::Bytes;
use std::collections::VecDeque;
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The permissions of what Coffer creates in a local repository.
///
/// Key files are enough for an offline guessing attack on the password, so by default nothing
/// is readable by anyone but the owner: files 0600, directories 0700. An owner who wants a
/// group to read (or write) the repository sets the group bits on the repository's directory;
/// new directories then get the same group bits and new files the group's read and write bits
/// (a 0750 directory gives 0640 files and 0750 directories). Permissions for others are never
/// given, and the process's umask still applies (restic behaves alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalModes {
    /// Mode of new files.
    pub file: u32,
    /// Mode of new directories.
    pub dir: u32,
}

impl LocalModes {
    /// Owner only.
    pub const PRIVATE: LocalModes = LocalModes {
        file: 0o600,
        dir: 0o700,
    };

    /// The modes for a repository whose root directory has permission bits `root_mode`.
    pub fn for_root(root_mode: u32) -> LocalModes {
        let group = root_mode & 0o070;
        LocalModes {
            file: LocalModes::PRIVATE.file | (group & 0o060),
            dir: LocalModes::PRIVATE.dir | group,
        }
    }
}

/// How many pack files a local store keeps open between reads.
const OPEN_PACKS: usize = 32;

/// Local reads of at most this many bytes go into a buffer the thread keeps for its next read
/// (a whole pack, 16 MiB and a little more by default, fits); larger ones get a buffer of
/// their own.
const KEPT_READ_BUFFER: u64 = 32 << 20;

/// Directory levels a listing descends (Coffer's layout has two: `data/ab/…`); a bound, since
/// listings follow symbolic links and a link may loop.
const MAX_LIST_DEPTH: usize = 16;

/// Pack files kept open for reading, the most recently used last, so that a restore of
/// thousands of small files opens each pack once instead of once per file (an `openat` and a
/// `close` each: 4% of a restore's CPU). Packs never change once written (their name is their
/// hash, and a write of an existing name writes nothing), so a kept descriptor reads exactly
/// what a fresh open would; a delete ([`Backend::delete`]) drops the key, so a deleted pack is
/// not read through here and its space is freed when the last descriptor closes.
#[derive(Default)]
struct OpenPacks(Mutex<VecDeque<(String, Arc<std::fs::File>)>>);

impl OpenPacks {
    fn get(&self, key: &str) -> Option<Arc<std::fs::File>> {
        let mut open = crate::sync::lock(&self.0);
        let at = open.iter().position(|(k, _)| k == key)?;
        let entry = open.remove(at)?;
        let file = entry.1.clone();
        open.push_back(entry);
        Some(file)
    }

    fn put(&self, key: &str, file: Arc<std::fs::File>) {
        let mut open = crate::sync::lock(&self.0);
        if open.iter().any(|(k, _)| k == key) {
            return;
        }
        open.push_back((key.to_string(), file));
        while open.len() > OPEN_PACKS {
            open.pop_front();
        }
    }

    /// Drops the descriptor kept for `key`, closing it after the lock is released: closing a
    /// deleted file frees its pages and blocks (8-10 ms for a 16 MiB pack on the benchmark VM),
    /// which would otherwise hold up every other reader and deleter.
    fn forget(&self, key: &str) {
        let closing = {
            let mut open = crate::sync::lock(&self.0);
            let at = open.iter().position(|(k, _)| k == key);
            at.and_then(|at| open.remove(at))
        };
        drop(closing);
    }

    /// The pack file `key` below `root`, kept open, or opened with `open` and kept.
    fn get_or_open(
        &self,
        root: &Path,
        key: &str,
        open: impl FnOnce(&Path) -> std::io::Result<std::fs::File>,
    ) -> std::io::Result<Arc<std::fs::File>> {
        if let Some(file) = self.get(key) {
            return Ok(file);
        }
        let file = Arc::new(open(&root.join(key))?);
        self.put(key, file.clone());
        Ok(file)
    }
}

/// A repository in a local directory.
pub struct LocalBackend {
    /// The directory, canonical.
    root: PathBuf,
    /// How the user named it, for messages.
    location: String,
    /// The modes of the files and directories it creates.
    modes: LocalModes,
    /// Pack files kept open for reading.
    open_packs: OpenPacks,
    /// The same, opened for direct reads ([`Backend::with_range_direct`]).
    direct_packs: OpenPacks,
    /// Cleared once the file system refuses a direct read: later reads go the ordinary way.
    direct_reads: AtomicBool,
}

impl LocalBackend {
    /// Opens the directory `path` (created 0700 with [`OpenMode::Create`] if missing; a
    /// directory that exists keeps its mode: its owner chose it). `shown` is the location as
    /// messages show it.
    pub fn open(path: &Path, mode: OpenMode, shown: &str) -> Result<LocalBackend> {
        match mode {
            OpenMode::Create => std::fs::DirBuilder::new()
                .recursive(true)
                .mode(LocalModes::PRIVATE.dir)
                .create(path)
                .map_err(|e| Error::io("creating repository directory", path, e))?,
            OpenMode::Existing => {
                if !path.is_dir() {
                    return Err(Error::NoRepository {
                        location: shown.to_string(),
                    });
                }
            }
        }
        let root = std::fs::canonicalize(path)
            .map_err(|e| Error::io("opening repository directory", path, e))?;
        let root_mode = std::fs::metadata(&root)
            .map_err(|e| Error::io("opening repository directory", path, e))?
            .permissions()
            .mode();
        Ok(LocalBackend {
            root,
            location: shown.trim_end_matches('/').to_string(),
            modes: LocalModes::for_root(root_mode),
            open_packs: OpenPacks::default(),
            direct_packs: OpenPacks::default(),
            direct_reads: AtomicBool::new(true),
        })
    }

    /// The modes of what this repository's writes create.
    pub fn modes(&self) -> LocalModes {
        self.modes
    }

    /// A failed listing, stat or delete, named as object stores name theirs.
    fn err(&self, operation: &'static str, key: &str, e: std::io::Error) -> Error {
        Error::Storage {
            operation,
            path: format!("{}/{key}", self.location),
            reason: e.to_string(),
        }
    }

    /// Opens the object `key` for reading (a pack from the kept descriptors when it is open
    /// already); a missing file is [`Error::Missing`] naming `what`.
    fn open_object(&self, what: &'static str, key: &str) -> Result<Arc<std::fs::File>> {
        let opened = if key.starts_with("data/") {
            self.open_packs
                .get_or_open(&self.root, key, |p| std::fs::File::open(p))
        } else {
            std::fs::File::open(self.root.join(key)).map(Arc::new)
        };
        opened.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => missing(what, key),
            _ => Error::io("reading", self.root.join(key), e),
        })
    }

    /// The size of an open object.
    fn file_size(&self, file: &std::fs::File, key: &str) -> Result<u64> {
        Ok(file
            .metadata()
            .map_err(|e| Error::io("reading", self.root.join(key), e))?
            .len())
    }

    /// Reads `range` of an object into a buffer of its own.
    fn read(&self, what: &'static str, key: &str, range: Range<u64>) -> Result<Bytes> {
        let file = self.open_object(what, key)?;
        self.read_from(&file, what, key, range)
    }

    /// Reads `range` of the open object `file` into a buffer of its own.
    fn read_from(
        &self,
        file: &std::fs::File,
        what: &'static str,
        key: &str,
        range: Range<u64>,
    ) -> Result<Bytes> {
        let want = usize::try_from(range.end.saturating_sub(range.start)).map_err(|_| {
            Error::corrupt(what, key, format!("range {range:?} too large for memory"))
        })?;
        let mut buf = vec![0u8; want];
        self.read_exact_at(file, what, key, range.start, &mut buf)?;
        Ok(Bytes::from(buf))
    }

    /// Fills `buf` from `offset` of `file`; running out of bytes means the object is shorter
    /// than the index says.
    fn read_exact_at(
        &self,
        file: &std::fs::File,
        what: &'static str,
        key: &str,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => {
                    let range = offset..offset + buf.len() as u64;
                    return Err(short_read(what, key, done, &range));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading", self.root.join(key), e)),
            }
        }
        Ok(())
    }

    /// Notes a refused direct read: the file system does not support them, so later reads go
    /// the ordinary way.
    fn note_direct_failure(&self, e: &std::io::Error) {
        if e.raw_os_error() == Some(nix::libc::EINVAL) {
            self.direct_reads.store(false, Ordering::Relaxed);
        }
    }

    /// Appends every object below the directory `path` (key `prefix`) to `out`, following
    /// symbolic links (a `data` directory may be a link to another disk) and skipping broken
    /// ones; staging files ([`put_local`]'s) are skipped, or with `staging` the only files
    /// appended.
    fn walk(
        &self,
        path: &Path,
        prefix: &str,
        depth: usize,
        staging: bool,
        out: &mut Vec<ObjectInfo>,
    ) -> Result<()> {
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            // A directory nothing was written to yet (or a file where one was asked): empty.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if depth == 0 && e.raw_os_error() == Some(nix::libc::ENOTDIR) => return Ok(()),
            // Looking for staging files from the root, a directory this user cannot read (the
            // `lost+found` of a repository at a mount point) holds none of its writes.
            Err(e) if staging && e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(()),
            Err(e) => return Err(self.err("list", prefix, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| self.err("list", prefix, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let key = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let meta = match std::fs::metadata(entry.path()) {
                Ok(meta) => meta,
                // Removed meanwhile, or a link to nothing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err("list", &key, e)),
            };
            if meta.is_dir() {
                if depth < MAX_LIST_DEPTH {
                    self.walk(&entry.path(), &key, depth + 1, staging, out)?;
                }
            } else if is_staging_name(&name) == staging {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| jiff::Timestamp::try_from(t).ok())
                    .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                out.push(ObjectInfo {
                    key,
                    size: meta.len(),
                    modified,
                });
            }
        }
        Ok(())
    }
}

thread_local! {
    /// The buffer of this thread's last read ([`Backend::with_range`]).
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Backend for LocalBackend {
    fn put_new(&self, key: &str, bytes: Bytes) -> Result<()> {
        put_local(&self.root, self.modes, key, &bytes)
    }

    fn get(&self, what: &'static str, key: &str) -> Result<Bytes> {
        let file = self.open_object(what, key)?;
        let size = self.file_size(&file, key)?;
        self.read_from(&file, what, key, 0..size)
    }

    /// The size comes from the open file's metadata (a listing may be stale), so a huge file is
    /// refused without a byte read; only that size is read.
    fn get_bounded(
        &self,
        what: &'static str,
        key: &str,
        max: u64,
        _known_size: Option<u64>,
    ) -> Result<Bytes> {
        let file = self.open_object(what, key)?;
        let size = self.file_size(&file, key)?;
        if size > max {
            return Err(too_large(what, key, size, max));
        }
        self.read_from(&file, what, key, 0..size)
    }

    fn get_range(&self, what: &'static str, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.read(what, key, range)
    }

    /// Reads into a buffer this thread keeps for the next read: no allocation and no fresh
    /// pages per read.
    fn with_range(
        &self,
        what: &'static str,
        key: &str,
        range: Range<u64>,
        sink: RangeSink<'_>,
    ) -> Result<()> {
        let want = range.end.saturating_sub(range.start);
        if want > KEPT_READ_BUFFER {
            return sink(&self.read(what, key, range)?);
        }
        BUFFER.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                let want = want as usize;
                if buf.len() < want {
                    buf.resize(want, 0);
                }
                let file = self.open_object(what, key)?;
                self.read_exact_at(&file, what, key, range.start, &mut buf[..want])?;
                sink(&buf[..want])
            }
            // A read from inside `sink` on this thread: use a buffer of its own.
            Err(_) => sink(&self.read(what, key, range)?),
        })
    }

    /// Reads a large range of a pack with `O_DIRECT` into this thread's reused buffer
    /// ([`crate::fs::direct::read_direct`]), so no page-cache pages are allocated and nothing
    /// is copied out of them. Ranges under [`crate::fs::direct::WORTH_IT`], other objects, and
    /// file systems that refuse direct reads go through [`Backend::with_range`].
    fn with_range_direct(
        &self,
        what: &'static str,
        key: &str,
        range: Range<u64>,
        sink: RangeSink<'_>,
    ) -> Result<()> {
        let len = range.end.saturating_sub(range.start);
        if !key.starts_with("data/")
            || len < crate::fs::direct::WORTH_IT as u64
            || len > KEPT_READ_BUFFER
            || !self.reads_directly()
        {
            return self.with_range(what, key, range, sink);
        }
        let opened = self.direct_packs.get_or_open(
            &self.root,
            key,
            crate::fs::direct::open_for_direct_reads,
        );
        let file = match opened {
            Ok(file) => file,
            // Missing, refused or anything else: the ordinary read names the problem.
            Err(e) => {
                self.note_direct_failure(&e);
                return self.with_range(what, key, range, sink);
            }
        };
        let mut handed_over = false;
        let read = crate::fs::direct::read_direct(&file, range.start, len as usize, |bytes| {
            if bytes.len() as u64 != len {
                return Err(short_read(what, key, bytes.len(), &range));
            }
            handed_over = true;
            sink(bytes)
        });
        match read {
            Ok(result) => result,
            // The direct read failed before handing anything over: read the ordinary way,
            // which reports any real problem with the object itself.
            Err(e) if !handed_over => {
                self.note_direct_failure(&e);
                self.with_range(what, key, range, sink)
            }
            Err(e) => Err(Error::io("reading", self.root.join(key), e)),
        }
    }

    fn prefetches(&self) -> bool {
        true
    }

    /// `posix_fadvise(WILLNEED)`, which starts the reads and returns. Packs are written around
    /// the page cache, so without this every read of a freshly written pack waits for the disk.
    fn prefetch(&self, key: &str, range: Range<u64>) {
        #[cfg(target_os = "linux")]
        if let Ok(file) = self.open_object("pack", key) {
            let len = range.end.saturating_sub(range.start);
            let _ = nix::fcntl::posix_fadvise(
                &*file,
                i64::try_from(range.start).unwrap_or(i64::MAX),
                i64::try_from(len).unwrap_or(i64::MAX),
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (key, range);
    }

    fn reads_directly(&self) -> bool {
        self.direct_reads.load(Ordering::Relaxed)
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        match std::fs::metadata(self.root.join(key)) {
            Ok(meta) if meta.is_dir() => Ok(None),
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("stat", key, e)),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        self.walk(&self.root.join(dir), dir, 0, false, &mut out)?;
        Ok(out)
    }

    /// Every `NAME#DIGITS` file below the root: a write (`put_local`) removes its staging file
    /// whether it succeeded or failed, so only a crash (or a power loss) leaves one.
    fn staging_leftovers(&self) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        self.walk(&self.root, "", 0, true, &mut out)?;
        Ok(out)
    }

    /// Removes the file (and the directories it leaves empty), refusing a key that is not a
    /// staging file's.
    fn delete_staging(&self, key: &str) -> Result<()> {
        let name = key.rsplit('/').next().unwrap_or(key);
        if !is_staging_name(name) || key.split('/').any(|part| part == "..") {
            return Err(Error::internal(format!(
                "asked to delete {key} as a staging file, which it is not"
            )));
        }
        self.delete(key)
    }

    /// Removes the file, then the directories it leaves empty up to the root (an emptied
    /// `data/ab/`), as object_store's local store did.
    fn delete(&self, key: &str) -> Result<()> {
        let path = self.root.join(key);
        let removed = match std::fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(self.err("delete", key, e)),
        };
        self.open_packs.forget(key);
        self.direct_packs.forget(key);
        if removed {
            let mut parent = path.parent();
            while let Some(dir) = parent {
                if dir == self.root || std::fs::remove_dir(dir).is_err() {
                    break;
                }
                parent = dir.parent();
            }
        }
        Ok(())
    }
}

/// Writes a new local object durably: to a staging file in the object's directory, flushed to
/// disk, then linked under its name (which fails if the name exists: it then holds these bytes,
/// since names are hashes) and the directory flushed, so that once this returns the object
/// survives a power loss, and the index or snapshot written after it never names a lost pack.
/// Files and directories get `modes`.
fn put_local(root: &Path, modes: LocalModes, key: &str, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let path = root.join(key);
    let dir = path.parent().unwrap_or(root);
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(modes.dir)
        .create(dir)
    {
        return Err(Error::io("creating directory", dir, e));
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut nonce = [0u8; 8];
    coffer_crypto::random_fill(&mut nonce)
        .map_err(|e| Error::InvalidInput(format!("random numbers: {e}")))?;
    // `name#digits` is the staging name listings skip, so a concurrent listing never sees a
    // half-written object.
    let tmp = dir.join(format!("{name}#{}", u64::from_le_bytes(nonce)));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(modes.file)
            .open(&tmp)?;
        if bytes.len() >= crate::fs::direct::WORTH_IT {
            // Flushed to disk at once below: no use for a copy in the page cache.
            let mut direct = crate::fs::direct::DirectWriter::new(&file);
            direct.write_all(bytes)?;
            direct.finish()?;
        } else {
            file.write_all(bytes)?;
        }
        ignore_unsupported(file.sync_all())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("writing", &path, e));
    }
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(Error::io("writing", &path, e)),
    }
    std::fs::File::open(dir)
        .and_then(|d| ignore_unsupported(d.sync_all()))
        .map_err(|e| Error::io("flushing directory", dir, e))
}

/// Some file systems (SMB mounts, some FUSE ones) cannot flush on request; writing there still
/// works, without the guarantee.
fn ignore_unsupported(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(e)
            if e.kind() == std::io::ErrorKind::Unsupported
                || e.raw_os_error() == Some(nix::libc::EINVAL)
                || e.raw_os_error() == Some(nix::libc::ENOTSUP) =>
        {
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Storage, StoreKind};

    #[test]
    fn staging_names_are_told_apart() {
        assert!(is_staging_name("abcd#123456"));
        for name in ["abcd", "abcd#", "abcd#12x", "#x", ".nfs0000abcd"] {
            assert!(!is_staging_name(name), "{name}");
        }
    }

    #[test]
    fn deleting_the_last_object_of_a_directory_removes_the_directory_not_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::open(dir.path(), OpenMode::Create, "repo").unwrap();
        backend
            .put_new("data/ab/x", Bytes::from_static(b"x"))
            .unwrap();
        backend
            .put_new("data/cd/y", Bytes::from_static(b"y"))
            .unwrap();
        backend.delete("data/ab/x").unwrap();
        assert!(!dir.path().join("data/ab").exists());
        assert!(dir.path().join("data/cd/y").exists());
        backend.delete("data/cd/y").unwrap();
        assert!(!dir.path().join("data").exists());
        assert!(dir.path().exists());
        assert!(backend.list("data").unwrap().is_empty());
    }

    #[test]
    fn listings_follow_symlinked_directories_and_skip_broken_links() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::create_dir(elsewhere.path().join("ab")).unwrap();
        std::fs::write(elsewhere.path().join("ab/x"), b"xyz").unwrap();
        let repo = dir.path().join("repo");
        let backend = LocalBackend::open(&repo, OpenMode::Create, "repo").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), repo.join("data")).unwrap();
        std::fs::create_dir(repo.join("index")).unwrap();
        std::os::unix::fs::symlink(repo.join("nothing"), repo.join("index/broken")).unwrap();
        let keys: Vec<_> = backend
            .list("data")
            .unwrap()
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        assert_eq!(keys, [("data/ab/x".to_string(), 3)]);
        assert!(backend.list("index").unwrap().is_empty());
        assert_eq!(backend.size("data/ab/x").unwrap(), Some(3));
        assert_eq!(backend.size("data/ab").unwrap(), None);
    }

    #[test]
    fn bounded_reads_on_a_local_directory_refuse_a_huge_sparse_file_unread() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap(), OpenMode::Create).unwrap();
        // 5 GiB of holes: reading it would need 5 GiB of memory.
        std::fs::create_dir_all(dir.path().join("index")).unwrap();
        let huge = std::fs::File::create(dir.path().join("index/huge")).unwrap();
        huge.set_len(5 << 30).unwrap();
        let err = storage
            .get_bounded("index", "index/huge", 1 << 20)
            .unwrap_err();
        assert!(err.to_string().contains("5368709120 bytes"), "{err}");
    }

    #[test]
    fn local_writes_leave_no_staging_files_and_listings_skip_stale_ones() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap(), OpenMode::Create).unwrap();
        storage
            .put_new("data/ab/abcd", Bytes::from_static(b"first"))
            .unwrap();
        // Same name again: already there, which counts as success; the bytes stay.
        storage
            .put_new("data/ab/abcd", Bytes::from_static(b"first"))
            .unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path().join("data/ab"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["abcd"]);
        assert_eq!(&storage.get("pack", "data/ab/abcd").unwrap()[..], b"first");
        // A staging file left by a crash is not an object.
        std::fs::write(dir.path().join("data/ab/abce#123456"), b"half").unwrap();
        let fresh = Storage::open(dir.path().to_str().unwrap(), OpenMode::Existing).unwrap();
        let listed: Vec<String> = fresh
            .list("data")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(listed, ["data/ab/abcd"]);
    }

    #[test]
    fn staging_leftovers_are_listed_everywhere_with_size_and_age_and_deleted_alone() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap(), OpenMode::Create).unwrap();
        assert!(storage.staging_leftovers().unwrap().is_empty());
        storage
            .put_new("data/ab/abcd", Bytes::from_static(b"object"))
            .unwrap();
        storage
            .put_new("config", Bytes::from_static(b"config"))
            .unwrap();
        // Successful writes leave none.
        assert!(storage.staging_leftovers().unwrap().is_empty());
        std::fs::write(dir.path().join("data/ab/abce#123456"), b"half").unwrap();
        std::fs::write(dir.path().join("config#9"), b"c").unwrap();
        std::fs::create_dir_all(dir.path().join("snapshots")).unwrap();
        std::fs::write(dir.path().join("snapshots/x#12x"), b"not staging").unwrap();
        let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(172_800);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("data/ab/abce#123456"))
            .unwrap()
            .set_modified(two_days_ago)
            .unwrap();
        let found = storage.staging_leftovers().unwrap();
        let keys: Vec<(&str, u64)> = found.iter().map(|o| (o.key.as_str(), o.size)).collect();
        assert_eq!(keys, [("config#9", 1), ("data/ab/abce#123456", 4)]);
        // A directory this user cannot read (`lost+found` at a mount point) is passed over
        // (as root, which reads it anyway, it is simply empty).
        let closed = dir.path().join("lost+found");
        std::fs::create_dir(&closed).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o000)).unwrap();
        assert_eq!(storage.staging_leftovers().unwrap().len(), 2);
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let age = |o: &ObjectInfo| jiff::Timestamp::now().duration_since(o.modified);
        let old = age(&found[1]).as_secs();
        assert!((172_700..172_900).contains(&old), "{old}");
        assert!(age(&found[0]).as_secs() < 600);

        // Only staging files can be deleted as such; the object stays.
        for key in ["data/ab/abcd", "snapshots/x#12x", "data/../config#9"] {
            let err = storage.delete_staging(key).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        storage.delete_staging("data/ab/abce#123456").unwrap();
        storage.delete_staging("data/ab/abce#123456").unwrap();
        assert!(dir.path().join("data/ab/abcd").exists());
        let keys: Vec<String> = storage
            .staging_leftovers()
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["config#9"]);
    }

    #[test]
    fn stores_without_staging_files_list_none_and_delete_none() {
        let storage = Storage::in_memory().unwrap();
        assert!(storage.staging_leftovers().unwrap().is_empty());
        assert!(storage.delete_staging("data/ab/abce#1").is_err());
    }

    #[test]
    fn local_modes_take_the_group_bits_of_the_root_and_never_others() {
        let m = |file, dir| LocalModes { file, dir };
        assert_eq!(LocalModes::for_root(0o700), m(0o600, 0o700));
        assert_eq!(LocalModes::for_root(0o750), m(0o640, 0o750));
        assert_eq!(LocalModes::for_root(0o770), m(0o660, 0o770));
        assert_eq!(LocalModes::for_root(0o2770), m(0o660, 0o770));
        assert_eq!(LocalModes::for_root(0o755), m(0o640, 0o750));
        assert_eq!(LocalModes::for_root(0o707), m(0o600, 0o700));
        assert_eq!(LocalModes::for_root(0o777), m(0o660, 0o770));
        assert_eq!(LocalModes::for_root(0o40710), m(0o600, 0o710));
    }

    #[test]
    fn kept_pack_descriptors_read_right_and_a_deleted_pack_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(LocalBackend::open(dir.path(), OpenMode::Create, "repo").unwrap());
        let storage = Storage::from_backend(backend.clone(), StoreKind::Local, "repo");
        // More packs than are kept open, each read twice in turn: every read returns its own
        // pack's bytes, whether its descriptor was kept or closed and opened again.
        let key = |i: usize| format!("data/{:02x}/pack-{i}", i % 256);
        for i in 0..OPEN_PACKS + 8 {
            let body = format!("pack number {i}");
            storage.put_new(&key(i), Bytes::from(body)).unwrap();
        }
        for _ in 0..2 {
            for i in 0..OPEN_PACKS + 8 {
                let want = format!("pack number {i}");
                let got = storage
                    .get_range("pack", &key(i), 5..want.len() as u64)
                    .unwrap();
                assert_eq!(&got[..], &want.as_bytes()[5..]);
                storage
                    .with_range("pack", &key(i), 0..4, |b| {
                        assert_eq!(b, b"pack");
                        Ok(())
                    })
                    .unwrap();
            }
        }
        assert!(crate::sync::lock(&backend.open_packs.0).len() <= OPEN_PACKS);
        // A pack read (so kept open) and then deleted through the handle is missing, not
        // served from the kept descriptor.
        let last = key(OPEN_PACKS + 7);
        storage.get_range("pack", &last, 0..4).unwrap();
        storage.delete(&last).unwrap();
        assert!(matches!(
            storage.get_range("pack", &last, 0..4),
            Err(Error::Missing { what: "pack", .. })
        ));
        // Written again (as prune's repair could), it reads back its new bytes.
        storage
            .put_new(&last, Bytes::from_static(b"rewritten"))
            .unwrap();
        assert_eq!(
            &storage.get_range("pack", &last, 0..9).unwrap()[..],
            b"rewritten"
        );
    }

    #[test]
    fn direct_range_reads_return_the_bytes_and_name_damage() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap(), OpenMode::Create).unwrap();
        let body: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 253) as u8).collect();
        storage
            .put_new("data/aa/pack", Bytes::from(body.clone()))
            .unwrap();
        let read = |range: Range<u64>| {
            storage.with_range_direct("pack", "data/aa/pack", range, |b| Ok(b.to_vec()))
        };
        // Large unaligned ranges (direct where the file system allows), a small one (ordinary).
        for (a, b) in [
            (1u64, 300_001u64),
            (4096, 2_000_000),
            (2_999_000 - 300_000, 2_999_000),
            (10, 20),
        ] {
            assert_eq!(
                read(a..b).unwrap(),
                &body[a as usize..b as usize],
                "{a}..{b}"
            );
        }
        // Past the end: the pack is shorter than the index says, an error naming it.
        let err = read(2_900_000..3_300_000).unwrap_err();
        assert!(
            matches!(&err, Error::Corrupt { .. })
                && err.to_string().contains("shorter than expected"),
            "{err}"
        );
        // Truncated after being kept open: still an error, not a panic or stale bytes.
        read(0..400_000).unwrap();
        let path = dir.path().join("data/aa/pack");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100_000)
            .unwrap();
        assert!(read(0..400_000).is_err());
        // Deleted through the handle: missing, not read from the kept descriptor.
        storage.delete("data/aa/pack").unwrap();
        assert!(matches!(
            read(0..400_000),
            Err(Error::Missing { what: "pack", .. })
        ));
    }
}

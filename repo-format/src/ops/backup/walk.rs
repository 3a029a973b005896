//! Backup stage 2 for path sources: the file walker and its prefetch thread. It reads the file
//! system in name order (each directory's entries `lstat`ed first, so the files to be read are
//! known and prefetched a few ahead), takes unchanged files' content from the parent snapshot,
//! skips excluded paths, and hands files to [`chunk`](super::chunk). Unreadable entries become
//! warnings; the backup goes on without them. A file whose size, mtime or ctime changed while it
//! was read is read once more, and if it changed again, stored as read with a warning.

use super::chunk::{Chunking, StreamError};
use super::pool::{PendingContent, PendingNode};
use super::{Notice, Run, Step};
use crate::error::{Error, Result};
use crate::format::tree::{encode_name, Device, Node, NodeKind, Tree};
use crate::fs::sparse::{has_holes, HoleSkippingReader};
use crossbeam_channel::Receiver;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// How many files to be read the prefetcher is asked for ahead of the one being read.
pub(super) const PREFETCH_AHEAD: usize = 16;

/// The prefetch thread: asks the kernel to read the start of each file into the page cache
/// (`posix_fadvise(WILLNEED)`, which returns without waiting), so that reading many small files
/// from a cold cache waits on several disk reads at once instead of one after another.
pub(super) fn prefetcher(paths: Receiver<PathBuf>) {
    /// Larger files are read ahead by the kernel once reading starts.
    const HEAD: i64 = 4 << 20;
    for path in paths {
        #[cfg(target_os = "linux")]
        if let Ok(file) = std::fs::File::open(&path) {
            let _ = nix::fcntl::posix_fadvise(
                &file,
                0,
                HEAD,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
        #[cfg(not(target_os = "linux"))]
        let _ = path;
    }
}

/// The node kind of a FIFO or device node, `None` for anything else.
fn special_kind(ft: std::fs::FileType) -> Option<NodeKind> {
    if ft.is_fifo() {
        Some(NodeKind::Fifo)
    } else if ft.is_char_device() {
        Some(NodeKind::Chardev)
    } else if ft.is_block_device() {
        Some(NodeKind::Blockdev)
    } else {
        None
    }
}

fn time_ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

pub(super) fn node_from_meta(name: &std::ffi::OsStr, kind: NodeKind, meta: &Metadata) -> Node {
    let (name, name_bytes) = encode_name(name);
    Node {
        name,
        name_bytes,
        kind,
        mode: meta.mode() & 0o7777,
        mtime_ns: time_ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: time_ns(meta.ctime(), meta.ctime_nsec()),
        inode: meta.ino(),
        uid: meta.uid(),
        gid: meta.gid(),
        size: 0,
        content: Vec::new(),
        subtree: None,
        target: None,
        target_bytes: None,
        device: None,
        // Hard links: restore links the nodes of a snapshot with the same device and inode.
        links: (kind == NodeKind::File && meta.nlink() > 1).then(|| meta.nlink()),
        device_id: (kind == NodeKind::File && meta.nlink() > 1).then(|| meta.dev()),
        sparse: false,
        xattrs: Vec::new(),
    }
}

/// Path components below `/`, as a trie, so that several source paths share their parents.
#[derive(Default)]
struct PathTrie {
    leaf: bool,
    children: BTreeMap<Vec<u8>, PathTrie>,
}

/// The root's content from the path sources.
pub(super) enum RootContent {
    /// Top-level nodes, to be merged with the streams'.
    Nodes(Vec<PendingNode>),
    /// `/` itself was backed up: its tree is the root.
    Whole(crate::format::id::BlobId),
}

impl Run<'_, '_> {
    pub(super) fn backup_paths(
        &mut self,
        paths: &[PathBuf],
        parent: Option<&Tree>,
    ) -> Result<RootContent> {
        let mut trie = PathTrie::default();
        for p in paths {
            let mut at = &mut trie;
            for c in p.components() {
                if let Component::Normal(n) = c {
                    at = at.children.entry(n.as_bytes().to_vec()).or_default();
                }
            }
            at.leaf = true;
        }
        if trie.leaf {
            // `/` itself: the root tree is the root directory's tree.
            let meta = std::fs::symlink_metadata("/").map_err(|e| Error::io("reading", "/", e))?;
            let node = self.backup_dir(Path::new("/"), &meta, parent)?;
            return node
                .and_then(|n| n.node.subtree)
                .map(RootContent::Whole)
                .ok_or_else(|| Error::InvalidInput("cannot read /".into()));
        }
        self.backup_level(Path::new("/"), &trie, parent)
            .map(RootContent::Nodes)
    }

    /// Intermediate directories of the source paths: their metadata, and only the named children.
    fn backup_level(
        &mut self,
        dir: &Path,
        trie: &PathTrie,
        parent: Option<&Tree>,
    ) -> Result<Vec<PendingNode>> {
        let mut out = Vec::new();
        for (name, child) in &trie.children {
            let name_os = std::ffi::OsStr::from_bytes(name);
            let path = dir.join(name_os);
            let parent_node = parent.and_then(|t| t.find(name));
            if child.leaf {
                if let Some(n) = self.backup_entry(&path, parent_node)? {
                    out.push(n);
                }
                continue;
            }
            let meta =
                std::fs::symlink_metadata(&path).map_err(|e| Error::io("reading", &path, e))?;
            let parent_subtree = self.parent_subtree(parent_node);
            let nodes = self.backup_level(&path, child, parent_subtree.as_ref())?;
            let subtree = self.finish_tree(nodes)?;
            self.counts.dirs += 1;
            let mut node = self.node_at(&path, name_os, NodeKind::Dir, &meta);
            node.subtree = Some(subtree);
            out.push(PendingNode::done(node));
        }
        Ok(out)
    }

    /// The node of `path` from its metadata, with its extended attributes unless they are left
    /// out; one that cannot be kept is named in a warning (the node is stored without it).
    fn node_at(
        &mut self,
        path: &Path,
        name: &std::ffi::OsStr,
        kind: NodeKind,
        meta: &Metadata,
    ) -> Node {
        let mut node = node_from_meta(name, kind, meta);
        if self.xattrs {
            let (read, mut skipped) = crate::fs::xattr::read(path, crate::format::tree::xattr_kept);
            node.xattrs = crate::format::tree::xattrs_from(read, &mut skipped);
            for reason in skipped {
                self.warn(path, Step::Xattr, reason);
            }
        }
        node
    }

    fn parent_subtree(&self, parent_node: Option<&Node>) -> Option<Tree> {
        let node = parent_node.filter(|n| n.kind == NodeKind::Dir)?;
        self.repo.load_tree(node.subtree.as_ref()?).ok()
    }

    fn backup_entry(
        &mut self,
        path: &Path,
        parent_node: Option<&Node>,
    ) -> Result<Option<PendingNode>> {
        let meta = std::fs::symlink_metadata(path);
        self.backup_entry_with(path, meta, parent_node)
    }

    /// As [`Self::backup_entry`], with the entry's `lstat` already made.
    fn backup_entry_with(
        &mut self,
        path: &Path,
        meta: std::io::Result<Metadata>,
        parent_node: Option<&Node>,
    ) -> Result<Option<PendingNode>> {
        self.check_cancel()?;
        let meta = match meta {
            Ok(m) => m,
            Err(e) => {
                self.warn(path, Step::Stat, e);
                return Ok(None);
            }
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            let parent_tree = self.parent_subtree(parent_node);
            self.backup_dir(path, &meta, parent_tree.as_ref())
        } else if ft.is_file() {
            self.backup_file(path, &meta, parent_node)
        } else if ft.is_symlink() {
            match std::fs::read_link(path) {
                Ok(target) => {
                    let name = path.file_name().unwrap_or_default();
                    let mut node = self.node_at(path, name, NodeKind::Symlink, &meta);
                    let (t, tb) = encode_name(target.as_os_str());
                    node.target = Some(t);
                    node.target_bytes = tb;
                    self.counts.symlinks += 1;
                    Ok(Some(PendingNode::done(node)))
                }
                Err(e) => {
                    self.warn(path, Step::ReadLink, e);
                    Ok(None)
                }
            }
        } else if let Some(kind) = special_kind(ft) {
            let name = path.file_name().unwrap_or_default();
            let mut node = self.node_at(path, name, kind, &meta);
            if kind != NodeKind::Fifo {
                let rdev = meta.rdev();
                node.device = Some(Device {
                    major: nix::sys::stat::major(rdev),
                    minor: nix::sys::stat::minor(rdev),
                });
            }
            self.counts.special += 1;
            Ok(Some(PendingNode::done(node)))
        } else if ft.is_socket() {
            // A socket is a live endpoint of a running program: nothing to store or restore.
            self.notices.push(Notice::SocketSkipped(path.to_path_buf()));
            Ok(None)
        } else {
            self.warn(
                path,
                Step::Unsupported,
                "not a regular file, directory, symlink, FIFO or device",
            );
            Ok(None)
        }
    }

    fn backup_dir(
        &mut self,
        path: &Path,
        meta: &Metadata,
        parent_tree: Option<&Tree>,
    ) -> Result<Option<PendingNode>> {
        let entries = match std::fs::read_dir(path) {
            Ok(rd) => rd
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<Vec<OsString>>>(),
            Err(e) => Err(e),
        };
        let mut names = match entries {
            Ok(n) => n,
            Err(e) => {
                self.warn(path, Step::ReadDir, e);
                return Ok(None);
            }
        };
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        // A mount point (with -x) or a tagged directory keeps nothing, or only its tag.
        if self.mount_points.remove(path) {
            tracing::debug!("directory {path:?}: another file system, stored empty");
            names.clear();
        } else if let Some(tag) = self.selection.tag_in(path, &names) {
            tracing::debug!("directory {path:?}: tagged by {tag:?}, only the tag is stored");
            names.retain(|n| *n == tag);
        }
        // Every entry's lstat first, so that the files that will be read (new or changed) are
        // known and can be prefetched a few files ahead of the reading.
        let entries: Vec<(PathBuf, Option<&Node>, std::io::Result<Metadata>)> = names
            .iter()
            .map(|name| {
                let child = path.join(name);
                let meta = std::fs::symlink_metadata(&child);
                (child, meta)
            })
            .filter(|(child, meta)| {
                let is_dir = meta.as_ref().is_ok_and(|m| m.is_dir());
                let too_large = meta.as_ref().is_ok_and(|m| {
                    m.is_file()
                        && self
                            .selection
                            .exclude_larger_than
                            .is_some_and(|limit| m.len() > limit)
                });
                !too_large && !self.excludes.excluded(child, is_dir)
            })
            .map(|(child, meta)| {
                let parent_child = parent_tree
                    .and_then(|t| t.find(child.file_name().unwrap_or_default().as_bytes()));
                (child, parent_child, meta)
            })
            .collect();
        if self.selection.one_file_system {
            for (child, _, m) in &entries {
                if m.as_ref()
                    .is_ok_and(|m| m.is_dir() && m.dev() != meta.dev())
                {
                    self.mount_points.insert(child.clone());
                }
            }
        }
        let to_read: Vec<usize> = entries
            .iter()
            .enumerate()
            .filter(|(_, (_, parent, meta))| {
                meta.as_ref()
                    .is_ok_and(|m| m.is_file() && !parent.is_some_and(|p| self.unchanged(m, p)))
            })
            .map(|(i, _)| i)
            .collect();
        let read_paths: Vec<PathBuf> = to_read.iter().map(|&i| entries[i].0.clone()).collect();
        let mut prefetched = 0;
        let mut pending = Vec::with_capacity(entries.len());
        for (i, (child, parent_child, meta)) in entries.into_iter().enumerate() {
            // Keep the prefetcher PREFETCH_AHEAD files ahead of this one.
            let reading = to_read.partition_point(|&j| j < i);
            while prefetched < to_read.len() && prefetched < reading + PREFETCH_AHEAD {
                self.prefetch(&read_paths[prefetched]);
                prefetched += 1;
            }
            if let Some(p) = self.backup_entry_with(&child, meta, parent_child)? {
                pending.push(p);
            }
        }
        let subtree = self.finish_tree(pending)?;
        self.counts.dirs += 1;
        let name = path.file_name().unwrap_or(std::ffi::OsStr::new("/"));
        let mut node = self.node_at(path, name, NodeKind::Dir, meta);
        node.subtree = Some(subtree);
        Ok(Some(PendingNode::done(node)))
    }

    /// Whether a file with metadata `meta` is unchanged since the parent snapshot's `p`, so its
    /// content is taken from there and not read.
    fn unchanged(&self, meta: &Metadata, p: &Node) -> bool {
        p.kind == NodeKind::File
            && p.size == meta.len()
            && p.mtime_ns == time_ns(meta.mtime(), meta.mtime_nsec())
            && p.ctime_ns == time_ns(meta.ctime(), meta.ctime_nsec())
            && p.inode == meta.ino()
            && p.content.iter().all(|id| self.repo.index().contains(id))
    }

    /// Asks the prefetcher to start reading `path` into the page cache (dropped if it is busy).
    fn prefetch(&self, path: &Path) {
        if let Some(tx) = &self.prefetch {
            let _ = tx.try_send(path.to_path_buf());
        }
    }

    fn backup_file(
        &mut self,
        path: &Path,
        meta: &Metadata,
        parent_node: Option<&Node>,
    ) -> Result<Option<PendingNode>> {
        let name = path.file_name().unwrap_or_default();
        if let Some(p) = parent_node {
            if self.unchanged(meta, p) {
                let mut node = self.node_at(path, name, NodeKind::File, meta);
                node.size = meta.len();
                node.content = p.content.clone();
                node.sparse = has_holes(meta);
                self.counts.files += 1;
                self.counts.files_unchanged += 1;
                self.counts.total_bytes += node.size;
                self.progress.add_bytes(node.size);
                self.progress.file_done();
                self.list(path, node.size, super::Change::Unchanged);
                tracing::debug!("file {path:?}: unchanged, {} bytes", node.size);
                return Ok(Some(PendingNode::done(node)));
            }
        }
        // A file that changes while it is read is read once more; if it changes again, it is
        // stored as the second read saw it, with a warning naming it. The first read's chunks
        // are stored already and deduplicate; its bytes are not counted twice.
        let bytes_before = self.counts.bytes_read;
        self.progress.set_current(&path.to_string_lossy());
        let mut attempt = 0;
        let (opened, content, size) = loop {
            match self.read_file(path, attempt)? {
                None => return Ok(None),
                Some(FileRead {
                    opened,
                    content,
                    size,
                    change: None,
                }) => break (opened, content, size),
                Some(FileRead {
                    opened,
                    content,
                    size,
                    change: Some(reason),
                }) => {
                    if attempt == 0 {
                        drop(content);
                        self.progress
                            .take_back_bytes(self.counts.bytes_read - bytes_before);
                        self.counts.bytes_read = bytes_before;
                        attempt += 1;
                        continue;
                    }
                    self.warn(path, Step::Changed, reason);
                    break (opened, content, size);
                }
            }
        };
        // The metadata as the file was opened for the kept read: a file stored torn has a
        // size or times that the next backup will not find again, so it is read again then.
        let mut node = self.node_at(path, name, NodeKind::File, &opened);
        node.size = size;
        node.sparse = has_holes(&opened);
        self.counts.files += 1;
        self.counts.total_bytes += size;
        self.progress.file_done();
        let change = if parent_node.is_some() {
            super::Change::Modified
        } else {
            super::Change::New
        };
        self.list(path, size, change);
        tracing::debug!("file {path:?}: read, {size} bytes");
        Ok(Some(PendingNode {
            node,
            content: Some(content),
        }))
    }

    /// Reads a file once: opens it, notes its metadata (of the open file), chunks it to its
    /// end, and compares the metadata then with the noted one. `None`: it could not be opened
    /// or read, and a warning names it.
    fn read_file(&mut self, path: &Path, attempt: u32) -> Result<Option<FileRead>> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.warn(path, Step::Open, e);
                return Ok(None);
            }
        };
        let opened = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.warn(path, Step::Stat, e);
                return Ok(None);
            }
        };
        // Dumps are recognised by content wherever they sit.
        // A sparse file's holes are not read: the file system says where they are.
        let chunked = if has_holes(&opened) {
            let reader = HoleSkippingReader::new(&file, opened.len());
            self.chunk_stream(reader, Chunking::ByContent, &path.display())
        } else {
            self.chunk_stream(&file, Chunking::ByContent, &path.display())
        };
        let (content, size) = match chunked {
            Ok(read) => read,
            Err(StreamError::Read(e)) => {
                self.warn(path, Step::Read, e);
                return Ok(None);
            }
            Err(StreamError::Fatal(e)) => return Err(e),
        };
        #[cfg(test)]
        tests::after_read(path, attempt);
        #[cfg(not(test))]
        let _ = attempt;
        let after = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.warn(path, Step::Stat, e);
                return Ok(None);
            }
        };
        let change = Stamp::of(&opened).change(&Stamp::of(&after));
        Ok(Some(FileRead {
            opened,
            content,
            size,
            change,
        }))
    }
}

/// One read of a file to its end.
struct FileRead {
    /// Its metadata when it was opened.
    opened: Metadata,
    content: PendingContent,
    /// How many bytes were read.
    size: u64,
    /// How it changed while it was read, in words (`None`: it did not).
    change: Option<String>,
}

/// What tells whether a file changed while it was read: its size, mtime and ctime (a write
/// moves mtime; a truncation, a `touch` back to an old mtime or a change of mode moves ctime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            size: meta.len(),
            mtime_ns: time_ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: time_ns(meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// How `after` differs from `self`, in words, or `None` if it does not.
    fn change(&self, after: &Stamp) -> Option<String> {
        let mut what = Vec::new();
        if self.size != after.size {
            what.push(format!("size {} → {} bytes", self.size, after.size));
        }
        if self.mtime_ns != after.mtime_ns {
            what.push("modification time changed".to_string());
        } else if self.ctime_ns != after.ctime_ns {
            what.push("status change time changed".to_string());
        }
        (!what.is_empty()).then(|| what.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::Stamp;
    use crate::format::tree::NodeKind;
    use crate::ops::backup::{backup, BackupOptions, BackupReport, ParentChoice, Step};
    use crate::repository::{test_repo, Repository};
    use std::cell::RefCell;
    use std::io::Write;
    use std::path::{Path, PathBuf};

    type Hook = Box<dyn FnMut(&Path, u32)>;

    thread_local! {
        /// Called by the walk between reading a file to its end and looking at its metadata
        /// again, with the attempt (0, then 1): a test changes the file there, deterministically.
        /// The walk runs on the thread that called `backup`.
        static AFTER_READ: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    pub(super) fn after_read(path: &Path, attempt: u32) {
        AFTER_READ.with(|h| {
            if let Some(hook) = h.borrow_mut().as_mut() {
                hook(path, attempt);
            }
        });
    }

    /// Backs up a directory holding `file` with `initial` contents, running `hook` after each
    /// read of it; returns the report, the repository and the stored contents.
    fn backup_with_hook(
        initial: &[u8],
        hook: impl FnMut(&Path, u32) + 'static,
    ) -> (BackupReport, Repository, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let file = base.join("file");
        std::fs::write(&file, initial).unwrap();
        AFTER_READ.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
        let repo = test_repo();
        let report = backup(&repo, BackupOptions::new(vec![base.clone()]));
        AFTER_READ.with(|h| *h.borrow_mut() = None);
        let report = report.unwrap();
        let repo = Repository::open(repo.storage().clone(), b"pw").unwrap();
        let mut content = Vec::new();
        let mut out = std::io::Cursor::new(&mut content);
        let at = file.to_string_lossy().into_owned();
        crate::ops::walk::dump(&repo, &report.snapshot.tree, &at, "s", &mut out).unwrap();
        (report, repo, file, content)
    }

    fn append(path: &Path, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn stamps_name_what_changed() {
        let s = Stamp {
            size: 10,
            mtime_ns: 1,
            ctime_ns: 1,
        };
        assert_eq!(s.change(&s), None);
        let grown = Stamp { size: 20, ..s };
        assert_eq!(s.change(&grown).as_deref(), Some("size 10 → 20 bytes"));
        let written = Stamp {
            size: 4,
            mtime_ns: 2,
            ctime_ns: 2,
        };
        assert_eq!(
            s.change(&written).as_deref(),
            Some("size 10 → 4 bytes, modification time changed")
        );
        // Same size and mtime (a rewrite with the mtime put back): ctime still tells.
        let touched = Stamp { ctime_ns: 3, ..s };
        assert_eq!(
            s.change(&touched).as_deref(),
            Some("status change time changed")
        );
    }

    #[test]
    fn a_file_changed_once_while_read_is_read_again_and_stored_whole() {
        let (report, _repo, _file, content) = backup_with_hook(b"first part", |path, attempt| {
            if attempt == 0 {
                append(path, b", and what was appended during the read");
            }
        });
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let whole = b"first part, and what was appended during the read";
        assert_eq!(content, whole);
        let summary = &report.snapshot.summary;
        assert_eq!(summary.files, 1);
        assert_eq!(summary.errors, 0);
        assert_eq!(summary.total_bytes, whole.len() as u64);
        // The first read's bytes are not counted on top of the second's.
        assert_eq!(summary.bytes_read, whole.len() as u64);
    }

    #[test]
    fn a_file_truncated_while_read_is_stored_short_without_a_stale_tail() {
        let long = vec![7u8; 300_000];
        let (report, repo, file, content) = backup_with_hook(&long, |path, attempt| {
            if attempt == 0 {
                std::fs::write(path, b"short now").unwrap();
            }
        });
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(content, b"short now");
        let node =
            crate::ops::walk::find(&repo, &report.snapshot.tree, &file.to_string_lossy(), "s")
                .unwrap()
                .unwrap();
        assert_eq!(node.size, 9);
        assert_eq!(report.snapshot.summary.bytes_read, 9);
    }

    #[test]
    fn a_file_that_keeps_changing_is_stored_as_read_with_a_warning() {
        let (report, _repo, file, content) = backup_with_hook(b"0", |path, attempt| {
            append(path, format!(" {}", attempt + 1).as_bytes());
        });
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        let w = &report.warnings[0];
        assert_eq!((&w.path, w.step), (&file, Step::Changed));
        // The size tells for certain; the mtime only if the clock ticked since the file was written.
        assert!(w.reason.starts_with("size 3 → 5 bytes"), "{}", w.reason);
        assert!(
            w.to_string().ends_with(&format!(
                "file: changed while being read; stored as read: {}",
                w.reason
            )),
            "{w}"
        );
        // Stored as the second read saw it: after the first change, before the second.
        assert_eq!(content, b"0 1");
        let summary = &report.snapshot.summary;
        assert_eq!((summary.files, summary.errors), (1, 1));
        assert_eq!(summary.bytes_read, 3);
        assert_eq!(summary.total_bytes, 3);
    }

    #[test]
    fn a_same_size_rewrite_is_seen_by_its_mtime() {
        let (report, _repo, _file, content) = backup_with_hook(b"aaaa", |path, attempt| {
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            (&f).write_all(if attempt == 0 { b"bbbb" } else { b"cccc" })
                .unwrap();
            // A distinct mtime whatever the file system's timestamp granularity.
            let when =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000 + attempt as u64);
            f.set_modified(when).unwrap();
        });
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert_eq!(report.warnings[0].step, Step::Changed);
        assert!(report.warnings[0]
            .reason
            .contains("modification time changed"));
        assert_eq!(content, b"bbbb");
    }

    fn names(repo: &Repository, tree: &crate::format::id::BlobId) -> Vec<String> {
        let tree = repo.load_tree(tree).unwrap();
        tree.nodes.iter().map(|n| n.name.clone()).collect()
    }

    #[test]
    fn the_walk_keeps_name_order_symlinks_and_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let write = |rel: &str, bytes: &[u8]| {
            let path = base.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        write("b.txt", b"bee");
        write("a.txt", b"ay");
        write("sub/c.txt", b"sea");
        write("sub/cache/x", b"cached");
        write("skip.log", b"noise");
        std::os::unix::fs::symlink("a.txt", base.join("link")).unwrap();
        let repo = test_repo();
        let mut opts = BackupOptions::new(vec![base.clone()]);
        opts.excludes = vec!["*.log".into(), format!("{}/sub/cache", base.display())];
        opts.workers = 2;
        let report = backup(&repo, opts).unwrap();
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        let repo = Repository::open(repo.storage().clone(), b"pw").unwrap();
        let at = |path: &Path| {
            crate::ops::walk::find(&repo, &report.snapshot.tree, &path.to_string_lossy(), "s")
                .unwrap()
                .unwrap()
        };
        let top = at(&base);
        assert_eq!(top.kind, NodeKind::Dir);
        let top_tree = top.subtree.unwrap();
        // Byte order of names; excluded by name (`*.log`) and by path (`…/sub/cache`).
        assert_eq!(names(&repo, &top_tree), ["a.txt", "b.txt", "link", "sub"]);
        assert_eq!(
            names(&repo, &at(&base.join("sub")).subtree.unwrap()),
            ["c.txt"]
        );
        let link = at(&base.join("link"));
        assert_eq!(link.kind, NodeKind::Symlink);
        assert_eq!(link.target.as_deref(), Some("a.txt"));
        let mut content = Vec::new();
        let mut out = std::io::Cursor::new(&mut content);
        let path = base.join("b.txt").to_string_lossy().into_owned();
        crate::ops::walk::dump(&repo, &report.snapshot.tree, &path, "s", &mut out).unwrap();
        assert_eq!(content, b"bee");
        let summary = &report.snapshot.summary;
        assert_eq!((summary.files, summary.symlinks), (3, 1));
        // The directories leading to the source and the source itself (`components` counts
        // `/` too, which is the root tree, not a node), plus `sub`; `sub/cache` is excluded.
        assert_eq!(summary.dirs as usize, base.components().count());
    }

    #[test]
    fn unchanged_files_are_taken_from_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(base.join("same"), b"same content").unwrap();
        std::fs::write(base.join("changes"), b"first").unwrap();
        let repo = test_repo();
        let first = backup(&repo, BackupOptions::new(vec![base.clone()])).unwrap();
        assert_eq!(first.snapshot.summary.files_unchanged, 0);
        // Reopened, the repository's index names the first backup's blobs.
        let repo = Repository::open(repo.storage().clone(), b"pw").unwrap();
        std::fs::write(base.join("changes"), b"second, longer").unwrap();
        let second = backup(&repo, BackupOptions::new(vec![base.clone()])).unwrap();
        assert_eq!(second.snapshot.parent, first.id);
        assert_eq!(second.snapshot.summary.files_unchanged, 1);
        let mut forced = BackupOptions::new(vec![base.clone()]);
        forced.parent = ParentChoice::None;
        let third = backup(&repo, forced).unwrap();
        assert_eq!(third.snapshot.parent, None);
        assert_eq!(third.snapshot.summary.files_unchanged, 0);
    }
}

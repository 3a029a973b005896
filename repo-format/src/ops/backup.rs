//! `backup`: read sources, chunk, deduplicate, compress, encrypt, pack, upload; then write the
//! index and, last, the snapshot.
//!
//! The pipeline has three kinds of threads joined by bounded channels, so memory depends on the
//! number of workers and the pack size, not on the size of the data:
//! - the walker (the calling thread) reads the file system in name order, cuts each file into
//!   chunks and hands them to the workers; it assembles trees bottom-up;
//! - workers hash each chunk (keyed BLAKE3), skip chunks the repository or this backup already
//!   has, compress and seal the rest, and append them to the open pack ([`BlobWriter`]);
//! - uploaders (one per storage connection) write finished packs to storage.
//!
//! A file's chunk ids come back through a per-file channel and are collected when its directory
//! is complete, so many small files are in flight at once. Nothing refers to a pack before it is
//! uploaded, the index is written after every pack, and the snapshot after the index: an
//! interrupted or failed backup leaves only unreferenced packs, which `prune` removes.

use crate::error::{Error, Result};
use crate::format::id::{BlobId, SnapshotId};
use crate::format::pack::BlobKind;
use crate::format::snapshot::{
    self, PostgresRecord, Snapshot, SnapshotTime, SourceRecord, StreamRecord, Summary,
};
use crate::format::tree::{encode_name, Node, NodeKind, Tree};
use crate::repository::writer::BlobWriter;
use crate::repository::Repository;
use crate::sources::child::Running;
use crate::sources::postgres::{
    finish_sha256, DumpFormat, DumpTee, PgSource, SnapshotSession, TocCheck,
};
use crate::sources::{sniff, Sniffed, SNIFF_LEN};
use coffer_chunker::{ChunkerParams, StreamChunker};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Where a stream's bytes come from.
pub enum StreamSource {
    /// Read from a reader (standard input).
    Reader(Box<dyn Read + Send>),
    /// Run a command and store its standard output. If it exits non-zero, the backup fails and
    /// no snapshot is saved.
    Command { program: String, args: Vec<String> },
}

/// What one source contributes to the snapshot.
pub enum SourceInput {
    /// A file, directory or symlink, stored at its absolute path.
    Path {
        path: PathBuf,
        /// Glob patterns for this source only (same rules as [`BackupOptions::excludes`]).
        excludes: Vec<String>,
    },
    /// A stream stored as the file `tree_name` (relative, like `db/app.dump`).
    Stream {
        tree_name: String,
        stream: StreamSource,
        /// Cut with the repository's dump chunk sizes instead of the file ones.
        dump_chunking: bool,
    },
    /// A PostgreSQL database, dumped in one consistent transaction snapshot and stored as
    /// `<name>/<database>.dump` (or `.sql` for plain dumps).
    Postgres(Box<PgSource>),
}

/// One source of a backup. Named sources (from a configuration) are recorded in the snapshot's
/// `sources` list, so restore can put each back where it came from; unnamed ones (`coffer
/// backup PATHS`, `--stdin-name`) are only files in the tree.
pub struct Source {
    pub name: Option<String>,
    pub input: SourceInput,
}

impl Source {
    /// An unnamed path source without its own excludes.
    pub fn path(path: impl Into<PathBuf>) -> Source {
        Source {
            name: None,
            input: SourceInput::Path {
                path: path.into(),
                excludes: Vec::new(),
            },
        }
    }

    fn label(&self) -> String {
        match (&self.name, &self.input) {
            (Some(n), _) => n.clone(),
            (None, SourceInput::Path { path, .. }) => path.display().to_string(),
            (None, SourceInput::Stream { tree_name, .. }) => tree_name.clone(),
            (None, SourceInput::Postgres(pg)) => pg.database.clone(),
        }
    }
}

/// Which snapshot to compare against to skip unchanged files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ParentChoice {
    /// The latest snapshot of the same host and paths.
    #[default]
    Auto,
    /// Read every file.
    None,
    /// This snapshot (id, prefix or `latest`).
    Id(String),
}

/// What to back up and how to label it.
pub struct BackupOptions {
    /// Everything that goes into the one snapshot.
    pub sources: Vec<Source>,
    /// Glob patterns for every path source: with a `/` they match the absolute path, without
    /// one the file name.
    pub excludes: Vec<String>,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub hostname: String,
    pub username: String,
    /// Snapshot time (default: now, in the local zone).
    pub time: Option<jiff::Zoned>,
    pub parent: ParentChoice,
    /// Set from a signal handler to stop the backup; nothing is committed then.
    pub cancel: Arc<AtomicBool>,
    /// Worker threads (0: one per core).
    pub workers: usize,
}

impl BackupOptions {
    /// Options for unnamed path sources with everything else at its default.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        BackupOptions {
            sources: paths.into_iter().map(Source::path).collect(),
            excludes: Vec::new(),
            tags: Vec::new(),
            labels: BTreeMap::new(),
            hostname: String::new(),
            username: String::new(),
            time: None,
            parent: ParentChoice::Auto,
            cancel: Arc::new(AtomicBool::new(false)),
            workers: 0,
        }
    }
}

/// The outcome of a backup.
#[derive(Debug)]
pub struct BackupReport {
    pub id: SnapshotId,
    pub snapshot: Snapshot,
    /// Source files or directories that could not be read (they are not in the snapshot).
    pub warnings: Vec<String>,
    /// Advice that does not make the backup partial (a compressed dump that will deduplicate
    /// poorly).
    pub notices: Vec<String>,
}

/// A path source after validation.
struct PathPlan {
    name: Option<String>,
    absolute: PathBuf,
}

/// A stream-like source after validation, with its place in the tree.
struct StreamPlan {
    name: Option<String>,
    tree_path: PathBuf,
    input: SourceInput,
}

/// Backs up every source into one snapshot. If any stream source fails (a dump, a command),
/// nothing is saved and the error names the source.
pub fn backup(repo: &Repository, mut opts: BackupOptions) -> Result<BackupReport> {
    let started = Instant::now();
    if opts.sources.is_empty() {
        return Err(Error::InvalidInput(
            "nothing to back up: no paths, streams or sources given".into(),
        ));
    }
    let mut excludes = ExcludeRules {
        global: Excludes::new(&opts.excludes)?,
        scoped: Vec::new(),
    };
    let time = opts.time.take().unwrap_or_else(jiff::Zoned::now);
    let mut path_plans = Vec::new();
    let mut stream_plans = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for source in std::mem::take(&mut opts.sources) {
        // Errors of named sources name them; unnamed ones (`coffer backup PATH`) speak for
        // themselves.
        let label = source.label();
        let named = source.name.is_some();
        let attribute = |e: Error| if named { e.in_source(&label) } else { e };
        if let Some(n) = &source.name {
            if !names.insert(n.clone()) {
                return Err(Error::InvalidInput(format!(
                    "source name {n:?} is used twice"
                )));
            }
        }
        match source.input {
            SourceInput::Path {
                path,
                excludes: own,
            } => {
                let absolute = absolute_path(&path).map_err(attribute)?;
                if !own.is_empty() {
                    excludes
                        .scoped
                        .push((absolute.clone(), Excludes::new(&own).map_err(attribute)?));
                }
                path_plans.push(PathPlan {
                    name: source.name,
                    absolute,
                });
            }
            SourceInput::Stream { ref tree_name, .. } => {
                let tree_path = validate_stream_name(tree_name).map_err(attribute)?;
                stream_plans.push(StreamPlan {
                    name: source.name,
                    tree_path,
                    input: source.input,
                });
            }
            SourceInput::Postgres(ref pg) => {
                let tree_name = format!(
                    "{}/{}.{}",
                    source.name.as_deref().unwrap_or("postgres"),
                    pg.database,
                    pg.format.extension()
                );
                let tree_path = validate_stream_name(&tree_name).map_err(attribute)?;
                stream_plans.push(StreamPlan {
                    name: source.name,
                    tree_path,
                    input: source.input,
                });
            }
        }
    }
    path_plans.sort_by(|a, b| a.absolute.cmp(&b.absolute));
    path_plans.dedup_by(|a, b| a.absolute == b.absolute);
    let paths: Vec<PathBuf> = path_plans.iter().map(|p| p.absolute.clone()).collect();
    check_tree_collisions(&paths, &stream_plans)?;
    let all_tree_paths: Vec<PathBuf> = paths
        .iter()
        .cloned()
        .chain(stream_plans.iter().map(|s| s.tree_path.clone()))
        .collect();
    // Damaged snapshots are not candidates for the parent; they are named in the notices.
    let mut damage = Vec::new();
    let parent = if paths.is_empty() {
        None
    } else {
        choose_parent(repo, &opts, &all_tree_paths, &mut damage)?
    };
    let parent_tree = parent
        .as_ref()
        .and_then(|(_, snap)| repo.load_tree(&snap.tree).ok());

    let workers = if opts.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.workers
    };
    let mut writer = BlobWriter::new(repo, repo.storage().connections(), opts.cancel.clone())?;
    if opts.parent == ParentChoice::None {
        // `--force` trusts nothing it has not seen: one listing of the packs, and a blob the
        // index places in a pack that is not there is stored again (a lost pack must not
        // poison every later backup).
        let present = repo.list_packs()?.into_iter().map(|(id, _)| id).collect();
        writer = writer.reuse_only_packs(present);
    }
    let (job_tx, job_rx) = bounded::<Job>(workers * 2);

    let (root, records, warnings, notices, counts) = std::thread::scope(|scope| {
        let worker_handles: Vec<_> = (0..workers)
            .map(|_| {
                let rx = job_rx.clone();
                let writer = &writer;
                scope.spawn(move || work(writer, rx))
            })
            .collect();
        drop(job_rx);
        let (prefetch_tx, prefetch_rx) = bounded::<PathBuf>(PREFETCH_AHEAD * 2);
        let prefetch_handle = scope.spawn(move || prefetcher(prefetch_rx));
        let mut walker = Walker {
            repo,
            writer: &writer,
            jobs: job_tx,
            cancel: &opts.cancel,
            cancel_flag: opts.cancel.clone(),
            excludes: &excludes,
            warnings: Vec::new(),
            notices: Vec::new(),
            warned_compressed_dump: false,
            counts: Counts::default(),
            compressor: None,
            prefetch: Some(prefetch_tx),
            chunk_buffer: Vec::new(),
        };
        let root = walker.backup_sources(&path_plans, stream_plans, parent_tree.as_ref(), &time);
        let Walker {
            jobs,
            warnings,
            notices,
            counts,
            prefetch,
            ..
        } = walker;
        drop(jobs);
        drop(prefetch);
        let _ = prefetch_handle.join();
        for handle in worker_handles {
            let _ = handle.join();
        }
        let (root, records) = match root {
            Ok((root, records)) => (Ok(root), records),
            Err(e) => (Err(e), Vec::new()),
        };
        (root, records, warnings, notices, counts)
    });
    // The first error wins over the stops it caused (a full disk is not an interrupt).
    let root = root.map_err(|e| writer.explain(e))?;
    if opts.cancel.load(Ordering::SeqCst) {
        return Err(Error::Interrupted);
    }
    let stats = &writer.stats;
    let (data_blobs_new, tree_blobs_new, added_raw_bytes, added_stored_bytes) = (
        stats.data_blobs_new.load(Ordering::Relaxed),
        stats.tree_blobs_new.load(Ordering::Relaxed),
        stats.added_raw.load(Ordering::Relaxed),
        stats.added_stored.load(Ordering::Relaxed),
    );
    // Packs, then the index: only after this may the snapshot refer to the new blobs.
    let written = writer.finish()?;
    let packs_written = written.packs.len() as u64;
    let summary = Summary {
        files: counts.files,
        dirs: counts.dirs,
        symlinks: counts.symlinks,
        total_bytes: counts.total_bytes,
        bytes_read: counts.bytes_read,
        files_unchanged: counts.files_unchanged,
        data_blobs_new,
        tree_blobs_new,
        added_raw_bytes,
        added_stored_bytes,
        packs_written,
        errors: warnings.len() as u64,
        duration_seconds: started.elapsed().as_secs_f64(),
    };
    let mut sources: Vec<SourceRecord> = path_plans
        .iter()
        .filter_map(|p| {
            let name = p.name.clone()?;
            let path = p.absolute.to_string_lossy().into_owned();
            Some(SourceRecord {
                name,
                kind: "path".into(),
                tree_path: path.clone(),
                origin: Some(path),
                stream: None,
                postgres: None,
            })
        })
        .chain(records)
        .collect();
    sources.sort_by(|a, b| a.name.cmp(&b.name));
    let snapshot = Snapshot {
        time: SnapshotTime::from_zoned(&time),
        tree: root,
        paths: all_tree_paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        hostname: opts.hostname.clone(),
        username: opts.username.clone(),
        tags: opts.tags.clone(),
        labels: opts.labels.clone(),
        parent: parent.map(|(id, _)| id),
        excludes: opts.excludes.clone(),
        program_version: env!("CARGO_PKG_VERSION").to_string(),
        key_id: repo.keys().fingerprint(),
        summary,
        sources,
        original: None,
        copied_from: None,
    };
    let id = snapshot.save(repo.storage(), repo.keys())?;
    Ok(BackupReport {
        id,
        snapshot,
        warnings,
        notices: damage.into_iter().chain(notices).collect(),
    })
}

/// Streams sit at the top of the tree under their own first component; it must not be a
/// path source's first component nor another stream's.
fn check_tree_collisions(paths: &[PathBuf], streams: &[StreamPlan]) -> Result<()> {
    let first = |p: &Path| -> Option<Vec<u8>> {
        p.components().find_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes().to_vec()),
            _ => None,
        })
    };
    if paths.iter().any(|p| first(p).is_none()) && !streams.is_empty() {
        return Err(Error::InvalidInput(
            "backing up / itself cannot be combined with dump or command sources".into(),
        ));
    }
    let mut taken: BTreeMap<Vec<u8>, String> = paths
        .iter()
        .filter_map(|p| Some((first(p)?, p.display().to_string())))
        .collect();
    for s in streams {
        let Some(f) = first(&s.tree_path) else {
            continue;
        };
        if let Some(other) = taken.insert(f, s.tree_path.display().to_string()) {
            return Err(Error::InvalidInput(format!(
                "{} would share its top-level directory with {other} in the snapshot; \
                 rename the source",
                s.tree_path.display()
            )));
        }
    }
    Ok(())
}

/// A stream's name inside the snapshot: relative, `/`-separated, no `.` or `..`.
fn validate_stream_name(name: &str) -> Result<PathBuf> {
    let trimmed = name.trim_start_matches('/');
    let ok = !trimmed.is_empty()
        && trimmed
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if !ok {
        return Err(Error::InvalidInput(format!(
            "stream name {name:?} must be a relative path like db/app.dump, without empty, . or .. parts"
        )));
    }
    Ok(PathBuf::from(format!("/{trimmed}")))
}

/// An absolute, lexically clean path; the last component is kept as is (a symlink stays a
/// symlink), the parent directories are resolved. The path must exist.
fn absolute_path(p: &Path) -> Result<PathBuf> {
    std::fs::symlink_metadata(p).map_err(|e| Error::io("cannot back up", p, e))?;
    let abs = std::path::absolute(p).map_err(|e| Error::io("resolving", p, e))?;
    let mut clean = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    Ok(match (clean.parent(), clean.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map_err(|e| Error::io("resolving", parent, e))?
            .join(name),
        _ => clean,
    })
}

fn same_paths(a: &[String], b: &[PathBuf]) -> bool {
    let mut a: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut b: Vec<String> = b.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    a.sort_unstable();
    b.sort_unstable();
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| *x == y)
}

fn choose_parent(
    repo: &Repository,
    opts: &BackupOptions,
    paths: &[PathBuf],
    damage: &mut Vec<String>,
) -> Result<Option<(SnapshotId, Snapshot)>> {
    if opts.parent == ParentChoice::None {
        return Ok(None);
    }
    let all = snapshot::Snapshot::load_all(repo.storage(), repo.keys())?;
    damage.extend(all.damage_warnings());
    match &opts.parent {
        ParentChoice::Id(spec) => Ok(Some(all.resolve(spec)?.clone())),
        _ => Ok(all
            .good
            .into_iter()
            .rev()
            .find(|(_, s)| s.hostname == opts.hostname && same_paths(&s.paths, paths))),
    }
}

/// Excludes for every path source plus those of one source, scoped to its root.
struct ExcludeRules {
    global: Excludes,
    scoped: Vec<(PathBuf, Excludes)>,
}

impl ExcludeRules {
    fn excluded(&self, path: &Path) -> bool {
        self.global.excluded(path)
            || self
                .scoped
                .iter()
                .any(|(root, ex)| path.starts_with(root) && ex.excluded(path))
    }
}

struct Excludes {
    by_path: GlobSet,
    by_name: GlobSet,
}

impl Excludes {
    fn new(patterns: &[String]) -> Result<Excludes> {
        let mut by_path = GlobSetBuilder::new();
        let mut by_name = GlobSetBuilder::new();
        for p in patterns {
            let glob = GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| {
                    Error::InvalidInput(format!("invalid --exclude pattern {p:?}: {e}"))
                })?;
            if p.contains('/') {
                by_path.add(glob);
            } else {
                by_name.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::InvalidInput(format!("invalid --exclude: {e}")))
        };
        Ok(Excludes {
            by_path: build(by_path)?,
            by_name: build(by_name)?,
        })
    }

    fn excluded(&self, path: &Path) -> bool {
        self.by_path.is_match(path) || path.file_name().is_some_and(|n| self.by_name.is_match(n))
    }
}

/// A chunk on its way to a worker.
struct Job {
    data: Vec<u8>,
    /// Cut with the dump chunk sizes (compressed at the dump level).
    dump: bool,
    seq: u64,
    reply: Sender<(u64, Result<BlobId>)>,
}

#[derive(Default)]
struct Counts {
    files: u64,
    dirs: u64,
    symlinks: u64,
    total_bytes: u64,
    bytes_read: u64,
    files_unchanged: u64,
}

/// A file's chunk ids on their way back from the workers (as `(sequence, id)`), and how many.
type PendingContent = (Receiver<(u64, Result<BlobId>)>, u64);

/// A worker: stores the chunks it is handed and reports each id to the chunk's file.
fn work(writer: &BlobWriter<'_>, jobs: Receiver<Job>) {
    // One context per level (and so per chunk size): a context sized for 1 MiB chunks would
    // otherwise be shrunk and regrown as dump and file chunks alternate.
    let mut compressor = writer.compressor().ok();
    let mut dump_compressor = writer.dump_compressor().ok();
    for job in jobs {
        let compressor = if job.dump {
            &mut dump_compressor
        } else {
            &mut compressor
        };
        // A panic (a bug) must become an error for this chunk's file, not a worker that
        // silently disappears and leaves the walker waiting for its answer forever.
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match compressor.as_mut() {
                Some(c) => writer.store(c, BlobKind::Data, &job.data).map(|(id, _)| id),
                None => Err(Error::InvalidInput(
                    "the zstd compressor could not be created".into(),
                )),
            }))
            .unwrap_or_else(|_| {
                Err(Error::internal(
                    "a backup worker panicked; nothing was saved",
                ))
            });
        let _ = job.reply.send((job.seq, result));
    }
}

/// A node whose content ids may still be on their way back from the workers.
struct PendingNode {
    node: Node,
    content: Option<PendingContent>,
}

impl PendingNode {
    fn resolve(self) -> Result<Node> {
        let mut node = self.node;
        if let Some((rx, count)) = self.content {
            let mut ids: Vec<(u64, BlobId)> = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let (seq, result) = rx
                    .recv()
                    .map_err(|_| Error::internal("a backup worker stopped unexpectedly"))?;
                ids.push((seq, result?));
            }
            ids.sort_by_key(|(seq, _)| *seq);
            node.content = ids.into_iter().map(|(_, id)| id).collect();
        }
        Ok(node)
    }
}

struct Walker<'a, 'r> {
    repo: &'r Repository,
    writer: &'a BlobWriter<'r>,
    jobs: Sender<Job>,
    cancel: &'a AtomicBool,
    cancel_flag: Arc<AtomicBool>,
    excludes: &'a ExcludeRules,
    warnings: Vec<String>,
    notices: Vec<String>,
    warned_compressed_dump: bool,
    counts: Counts,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    /// Paths of files about to be read, for the prefetch thread.
    prefetch: Option<Sender<PathBuf>>,
    /// The chunker's buffer, handed from one file to the next.
    chunk_buffer: Vec<u8>,
}

/// How many files to be read the prefetcher is asked for ahead of the one being read.
const PREFETCH_AHEAD: usize = 16;

/// The prefetch thread: asks the kernel to read the start of each file into the page cache
/// (`posix_fadvise(WILLNEED)`, which returns without waiting), so that reading many small files
/// from a cold cache waits on several disk reads at once instead of one after another.
fn prefetcher(paths: Receiver<PathBuf>) {
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

fn time_ns(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

fn node_from_meta(name: &std::ffi::OsStr, kind: NodeKind, meta: &Metadata) -> Node {
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
    }
}

/// Path components below `/`, as a trie, so that several source paths share their parents.
#[derive(Default)]
struct PathTrie {
    leaf: bool,
    children: BTreeMap<Vec<u8>, PathTrie>,
}

impl<'r> Walker<'_, 'r> {
    fn check_cancel(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        if self.writer.has_failed() {
            // Not an interrupt: `backup` reports the upload's own error (Writer::explain).
            return Err(Error::Stopped);
        }
        Ok(())
    }

    fn store_tree(&mut self, tree: &Tree) -> Result<BlobId> {
        if self.compressor.is_none() {
            self.compressor = Some(self.writer.compressor()?);
        }
        let compressor = self.compressor.as_mut().ok_or(Error::Stopped)?;
        self.writer
            .store(compressor, BlobKind::Tree, &tree.encode())
            .map(|(id, _)| id)
    }

    fn finish_tree(&mut self, pending: Vec<PendingNode>) -> Result<BlobId> {
        let nodes = pending
            .into_iter()
            .map(PendingNode::resolve)
            .collect::<Result<Vec<_>>>()?;
        let mut tree = Tree { nodes };
        tree.sort();
        self.store_tree(&tree)
    }

    /// Every source into the root tree: streams first (a database is dumped before the files
    /// are read, so uploads referenced by the dump are in the snapshot), then the paths.
    fn backup_sources(
        &mut self,
        paths: &[PathPlan],
        streams: Vec<StreamPlan>,
        parent: Option<&Tree>,
        time: &jiff::Zoned,
    ) -> Result<(BlobId, Vec<SourceRecord>)> {
        let mut records = Vec::new();
        let mut nodes = Vec::new();
        for plan in streams {
            let name = plan.name.clone();
            let (node, record) = match self.backup_stream_source(plan, time) {
                Ok(r) => r,
                // Unnamed streams (`--stdin-from-command`) keep the command's own message.
                Err(e) => {
                    return Err(match name {
                        Some(n) => e.in_source(&n),
                        None => e,
                    })
                }
            };
            nodes.push(node);
            records.extend(record);
        }
        if !paths.is_empty() {
            let absolute: Vec<PathBuf> = paths.iter().map(|p| p.absolute.clone()).collect();
            match self.backup_paths(&absolute, parent)? {
                RootContent::Whole(id) => return Ok((id, records)),
                RootContent::Nodes(n) => nodes.extend(n),
            }
        }
        Ok((self.finish_tree(nodes)?, records))
    }

    fn backup_paths(&mut self, paths: &[PathBuf], parent: Option<&Tree>) -> Result<RootContent> {
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
            let mut node = node_from_meta(name_os, NodeKind::Dir, &meta);
            node.subtree = Some(subtree);
            out.push(PendingNode {
                node,
                content: None,
            });
        }
        Ok(out)
    }

    fn parent_subtree(&self, parent_node: Option<&Node>) -> Option<Tree> {
        let node = parent_node.filter(|n| n.kind == NodeKind::Dir)?;
        self.repo.load_tree(node.subtree.as_ref()?).ok()
    }

    fn warn(&mut self, path: &Path, what: &str, e: impl std::fmt::Display) {
        self.warnings
            .push(format!("{}: {what}: {e}", path.display()));
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
                self.warn(path, "cannot stat", e);
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
                    let mut node = node_from_meta(name, NodeKind::Symlink, &meta);
                    let (t, tb) = encode_name(target.as_os_str());
                    node.target = Some(t);
                    node.target_bytes = tb;
                    self.counts.symlinks += 1;
                    Ok(Some(PendingNode {
                        node,
                        content: None,
                    }))
                }
                Err(e) => {
                    self.warn(path, "cannot read link", e);
                    Ok(None)
                }
            }
        } else {
            self.warn(path, "skipped", "not a regular file, directory or symlink");
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
                self.warn(path, "cannot read directory", e);
                return Ok(None);
            }
        };
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        // Every entry's lstat first, so that the files that will be read (new or changed) are
        // known and can be prefetched a few files ahead of the reading.
        let entries: Vec<(PathBuf, Option<&Node>, std::io::Result<Metadata>)> = names
            .iter()
            .map(|name| path.join(name))
            .filter(|child| !self.excludes.excluded(child))
            .map(|child| {
                let parent_child = parent_tree
                    .and_then(|t| t.find(child.file_name().unwrap_or_default().as_bytes()));
                let meta = std::fs::symlink_metadata(&child);
                (child, parent_child, meta)
            })
            .collect();
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
        let mut node = node_from_meta(name, NodeKind::Dir, meta);
        node.subtree = Some(subtree);
        Ok(Some(PendingNode {
            node,
            content: None,
        }))
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
        let mut node = node_from_meta(name, NodeKind::File, meta);
        node.size = meta.len();
        self.counts.files += 1;
        if let Some(p) = parent_node {
            if self.unchanged(meta, p) {
                node.content = p.content.clone();
                self.counts.files_unchanged += 1;
                self.counts.total_bytes += node.size;
                return Ok(Some(PendingNode {
                    node,
                    content: None,
                }));
            }
        }
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                self.counts.files -= 1;
                self.warn(path, "cannot open", e);
                return Ok(None);
            }
        };
        // Dumps are recognised by content wherever they sit.
        match self.chunk_stream(file, Chunking::ByContent, &path.display()) {
            Ok((content, size)) => {
                node.size = size;
                self.counts.total_bytes += size;
                Ok(Some(PendingNode {
                    node,
                    content: Some(content),
                }))
            }
            Err(StreamError::Read(e)) => {
                self.counts.files -= 1;
                self.warn(path, "read error", e);
                Ok(None)
            }
            Err(StreamError::Fatal(e)) => Err(e),
        }
    }

    /// Chunker parameters from the first bytes of a stream: uncompressed dumps get the small
    /// dump chunks, the rest the file chunks; a compressed dump adds a notice (once per backup)
    /// that it will deduplicate poorly, naming `label`.
    fn params_by_content(&mut self, head: &[u8], label: &dyn std::fmt::Display) -> ChunkerParams {
        let kind = sniff(head);
        if kind.compressed_dump() && !self.warned_compressed_dump {
            self.warned_compressed_dump = true;
            self.notices.push(format!(
                "{label} is a compressed database dump ({}): it will deduplicate poorly, since \
                 any change reshuffles the compressed bytes; write dumps uncompressed \
                 (pg_dump -Fc -Z0, no gzip) and let coffer compress after deduplication, or \
                 back the database up with a postgres source",
                if kind == Sniffed::Gzip {
                    "gzip"
                } else {
                    "pg_dump custom format with compression"
                }
            ));
        }
        if kind.dump_chunking() {
            self.repo.dump_params()
        } else {
            self.repo.file_params()
        }
    }

    /// Cuts a stream into chunks and queues them; returns the result channel and chunk count.
    fn chunk_stream<R: Read>(
        &mut self,
        mut reader: R,
        chunking: Chunking,
        label: &dyn std::fmt::Display,
    ) -> std::result::Result<(PendingContent, u64), StreamError> {
        let mut head = Vec::new();
        let params = match chunking {
            Chunking::Fixed(params) => params,
            Chunking::ByContent => {
                (&mut reader)
                    .take(SNIFF_LEN as u64)
                    .read_to_end(&mut head)
                    .map_err(StreamError::Read)?;
                self.params_by_content(&head, label)
            }
        };
        let (tx, rx) = unbounded();
        let reader = std::io::Cursor::new(head).chain(reader);
        let buffer = std::mem::take(&mut self.chunk_buffer);
        let mut chunker = StreamChunker::with_buffer(reader, self.repo.gear(), params, buffer);
        let dump = params == self.repo.dump_params();
        let result = self.chunk_all(&mut chunker, dump, tx);
        let position = chunker.position();
        self.chunk_buffer = chunker.into_buffer();
        result.map(|count| ((rx, count), position))
    }

    /// Queues every chunk of `chunker` for the workers, answering on `tx`; returns how many.
    fn chunk_all<R: Read>(
        &mut self,
        chunker: &mut StreamChunker<'_, R>,
        dump: bool,
        tx: Sender<(u64, Result<BlobId>)>,
    ) -> std::result::Result<u64, StreamError> {
        let mut seq = 0u64;
        loop {
            self.check_cancel().map_err(StreamError::Fatal)?;
            match chunker.next_chunk() {
                Ok(Some(data)) => {
                    self.counts.bytes_read += data.len() as u64;
                    let job = Job {
                        data,
                        dump,
                        seq,
                        reply: tx.clone(),
                    };
                    self.jobs
                        .send(job)
                        .map_err(|_| StreamError::Fatal(Error::Stopped))?;
                    seq += 1;
                }
                Ok(None) => break,
                Err(e) => return Err(StreamError::Read(e)),
            }
        }
        Ok(seq)
    }

    /// One stream-like source: its file node (with synthetic parent directories) and, for a
    /// named source, its record.
    fn backup_stream_source(
        &mut self,
        plan: StreamPlan,
        time: &jiff::Zoned,
    ) -> Result<(PendingNode, Option<SourceRecord>)> {
        let started = Instant::now();
        let (content, size, kind, stream_record, postgres) = match plan.input {
            SourceInput::Stream {
                stream,
                dump_chunking,
                ..
            } => {
                // Unnamed streams (`--stdin-name`) are chunked by what they turn out to be.
                let chunking = if dump_chunking {
                    Chunking::Fixed(self.repo.dump_params())
                } else {
                    Chunking::ByContent
                };
                let label = plan.tree_path.display().to_string();
                let (content, facts, kind) = match stream {
                    StreamSource::Reader(reader) => {
                        let (tee, facts, _) = DumpTee::new(reader, None);
                        let content = match self.chunk_stream(tee, chunking, &label) {
                            Ok(r) => r,
                            Err(StreamError::Read(e)) => {
                                return Err(Error::io("reading", "standard input", e))
                            }
                            Err(StreamError::Fatal(e)) => return Err(e),
                        };
                        (content, facts, "stdin")
                    }
                    StreamSource::Command { program, args } => {
                        let display = std::iter::once(program.as_str())
                            .chain(args.iter().map(String::as_str))
                            .collect::<Vec<_>>()
                            .join(" ");
                        let mut command = crate::sources::child::command(&program);
                        command.args(&args);
                        let mut facts = None;
                        let content = self.run_command(command, display, chunking, |out| {
                            let (tee, f, _) = DumpTee::new(out, None);
                            facts = Some(f);
                            Box::new(tee)
                        })?;
                        let facts = facts.ok_or(Error::Stopped)?;
                        (content, facts, "command")
                    }
                };
                let (bytes, sha256) = finish_sha256(&facts);
                let (content, size) = content;
                let record = StreamRecord {
                    bytes,
                    sha256,
                    duration_seconds: started.elapsed().as_secs_f64(),
                };
                (content, size, kind, record, None)
            }
            SourceInput::Postgres(pg) => {
                let (content, size, record, pg_record) = self.backup_postgres(&pg)?;
                (content, size, "postgres", record, Some(pg_record))
            }
            SourceInput::Path { .. } => {
                return Err(Error::internal(
                    "a path source cannot be stored as a stream",
                ))
            }
        };
        if size == 0 {
            return Err(Error::InvalidInput(format!(
                "the stream for {} delivered 0 bytes; refusing to save an empty backup \
                 (a failed dump piped into coffer looks like this: use --stdin-from-command)",
                plan.tree_path.display()
            )));
        }
        let node = self.stream_node(&plan.tree_path, content, size, time)?;
        let record = plan.name.map(|name| SourceRecord {
            name,
            kind: kind.to_string(),
            tree_path: plan.tree_path.to_string_lossy().into_owned(),
            origin: None,
            stream: Some(stream_record),
            postgres,
        });
        Ok((node, record))
    }

    /// A PostgreSQL dump: the exporting transaction, `pg_dump --snapshot` streamed into the
    /// chunker, `pg_restore --list` reading the head of the same stream.
    fn backup_postgres(
        &mut self,
        pg: &PgSource,
    ) -> Result<(PendingContent, u64, StreamRecord, PostgresRecord)> {
        let started = Instant::now();
        let mut session = SnapshotSession::begin(pg)?;
        let server_version = std::mem::take(&mut session.server_version);
        let tables = std::mem::take(&mut session.tables);
        let args = pg.dump_arguments(&session.snapshot_id);
        let display = pg.display("pg_dump", &args);
        let mut command = pg.command("pg_dump");
        command.args(&args);
        let toc = match pg.format {
            DumpFormat::Custom => Some(TocCheck::start(pg)?),
            DumpFormat::Plain => None,
        };
        let mut shared = None;
        let chunking = Chunking::Fixed(self.repo.dump_params());
        let (content, size) = self.run_command(command, display, chunking, |out| {
            let (tee, facts, toc_out) = DumpTee::new(out, toc);
            shared = Some((facts, toc_out));
            Box::new(tee)
        })?;
        let (facts, toc_out) = shared.ok_or(Error::Stopped)?;
        // The dump is complete; the transaction may end.
        session.finish()?;
        let toc = toc_out.lock().ok().and_then(|mut t| t.take());
        let toc_entries = match toc {
            Some(t) => t.finish()?,
            None => 0,
        };
        let (bytes, sha256) = finish_sha256(&facts);
        let record = StreamRecord {
            bytes,
            sha256,
            duration_seconds: started.elapsed().as_secs_f64(),
        };
        let pg_record = PostgresRecord {
            database: pg.database.clone(),
            server_version,
            format: pg.format.as_str().to_string(),
            toc_entries,
            tables,
        };
        Ok((content, size, record, pg_record))
    }

    /// The file node of a stream and its synthetic parent directories, as the top-level node.
    fn stream_node(
        &mut self,
        name: &Path,
        content: PendingContent,
        size: u64,
        time: &jiff::Zoned,
    ) -> Result<PendingNode> {
        let mtime_ns = i64::try_from(time.timestamp().as_nanosecond()).unwrap_or(0);
        let ids = std::fs::metadata("/proc/self")
            .map(|m| (m.uid(), m.gid()))
            .unwrap_or((0, 0));
        self.counts.files += 1;
        self.counts.total_bytes += size;
        let components: Vec<&std::ffi::OsStr> = name.iter().skip(1).collect();
        let synthetic = |n: &std::ffi::OsStr, kind: NodeKind, mode: u32| {
            let (name, name_bytes) = encode_name(n);
            Node {
                name,
                name_bytes,
                kind,
                mode,
                mtime_ns,
                ctime_ns: mtime_ns,
                inode: 0,
                uid: ids.0,
                gid: ids.1,
                size: 0,
                content: Vec::new(),
                subtree: None,
                target: None,
                target_bytes: None,
            }
        };
        let (last, dirs) = components
            .split_last()
            .ok_or_else(|| Error::InvalidInput("empty stream name".into()))?;
        let mut file = synthetic(last, NodeKind::File, 0o600);
        file.size = size;
        let mut pending = PendingNode {
            node: file,
            content: Some(content),
        };
        for dir in dirs.iter().rev() {
            let subtree = self.finish_tree(vec![pending])?;
            let mut node = synthetic(dir, NodeKind::Dir, 0o700);
            node.subtree = Some(subtree);
            self.counts.dirs += 1;
            pending = PendingNode {
                node,
                content: None,
            };
        }
        Ok(pending)
    }

    /// Runs a source command and chunks its standard output (passed through `wrap`, which may
    /// hash or tee it). A non-zero exit, a failed start or a failed read is an error carrying
    /// the command's stderr.
    fn run_command(
        &mut self,
        command: Command,
        display: String,
        chunking: Chunking,
        wrap: impl FnOnce(std::process::ChildStdout) -> Box<dyn Read + Send>,
    ) -> Result<(PendingContent, u64)> {
        let mut child = Running::spawn(
            command,
            Stdio::null(),
            Stdio::piped(),
            // Stopped (its whole process group) on cancel: a command that hangs must not hold an
            // interrupted backup hostage.
            Some(Arc::clone(&self.cancel_flag)),
        )
        .map_err(|e| {
            crate::sources::child::start_error(
                &display,
                e,
                " (not found: check the program name, the PATH or the command prefix)",
            )
        })?;
        let stdout = child.take_stdout().ok_or(Error::Stopped)?;
        let label = format!("the output of `{display}`");
        let chunked = self.chunk_stream(wrap(stdout), chunking, &label);
        if chunked.is_err() {
            child.stop();
        }
        let exit = child
            .wait()
            .map_err(|e| Error::io("waiting for", display.clone(), e))?;
        self.check_cancel()?;
        let result = match chunked {
            Ok(r) => r,
            Err(StreamError::Fatal(e)) => return Err(e),
            Err(StreamError::Read(e)) => {
                return Err(exit.failure(&display, format!("reading its output failed: {e}")))
            }
        };
        exit.check(&display)?;
        Ok(result)
    }
}

/// How a stream picks its chunker parameters.
#[derive(Clone, Copy)]
enum Chunking {
    Fixed(ChunkerParams),
    /// From its first bytes: see `Walker::params_by_content`.
    ByContent,
}

/// The root's content from the path sources.
enum RootContent {
    /// Top-level nodes, to be merged with the streams'.
    Nodes(Vec<PendingNode>),
    /// `/` itself was backed up: its tree is the root.
    Whole(BlobId),
}

enum StreamError {
    /// The source could not be read: a warning for files, an error for streams.
    Read(std::io::Error),
    /// The backup itself must stop.
    Fatal(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(tree: &str) -> StreamPlan {
        StreamPlan {
            name: Some("s".into()),
            tree_path: validate_stream_name(tree).unwrap(),
            input: SourceInput::Stream {
                tree_name: tree.into(),
                stream: StreamSource::Reader(Box::new(std::io::empty())),
                dump_chunking: true,
            },
        }
    }

    #[test]
    fn streams_may_not_hide_each_other_or_path_sources() {
        let paths = vec![
            PathBuf::from("/opt/app/files"),
            PathBuf::from("/etc/app.env"),
        ];
        assert!(check_tree_collisions(&paths, &[stream("db/app.dump")]).is_ok());
        assert!(check_tree_collisions(&paths, &[stream("db/a.dump"), stream("cache/x")]).is_ok());
        let e = check_tree_collisions(&paths, &[stream("opt/app.dump")]).unwrap_err();
        assert!(e.to_string().contains("/opt/app/files"), "{e}");
        assert!(check_tree_collisions(&[], &[stream("db/a.dump"), stream("db/b.dump")]).is_err());
        assert!(check_tree_collisions(&[PathBuf::from("/")], &[stream("db/a.dump")]).is_err());
    }

    #[test]
    fn stream_names_are_relative_clean_paths() {
        assert_eq!(
            validate_stream_name("db/app.dump").unwrap(),
            PathBuf::from("/db/app.dump")
        );
        for bad in ["", "/", "db//x", "db/../x", "./x", "a\0b"] {
            assert!(validate_stream_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scoped_excludes_apply_below_their_source_only() {
        let rules = ExcludeRules {
            global: Excludes::new(&["*.log".into()]).unwrap(),
            scoped: vec![(
                PathBuf::from("/opt/app/files"),
                Excludes::new(&["*.tmp".into()]).unwrap(),
            )],
        };
        assert!(rules.excluded(Path::new("/opt/app/files/a.tmp")));
        assert!(!rules.excluded(Path::new("/opt/other/a.tmp")));
        assert!(rules.excluded(Path::new("/opt/other/a.log")));
        assert!(!rules.excluded(Path::new("/opt/app/files/a.txt")));
    }
}

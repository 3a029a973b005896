//! `backup`: read sources, chunk, deduplicate, compress, encrypt, pack, upload; then write the
//! index and, last, the snapshot.
//!
//! The run goes through named stages, one module each:
//! 1. `plan`: validate the sources, place them in the tree, build the excludes, choose the
//!    parent snapshot;
//! 2. `walk` (path sources) and `streams` (stdin, commands, PostgreSQL) read the data;
//!    `chunk` decides, in one place, which chunker a stream gets and so the [`BlobClass`] of
//!    its chunks, cuts it, and queues the chunks;
//! 3. `pool`: worker threads hash each chunk (keyed BLAKE3), skip chunks the repository or
//!    this backup already has, compress and seal the rest, and append them to the open pack
//!    ([`BlobWriter`], whose uploader threads write finished packs, one per connection);
//! 4. `tree`: the walking thread assembles trees bottom-up as directories complete;
//! 5. `snapshot`: after the index, the snapshot document.
//!
//! Threads are joined by bounded channels, so memory depends on the number of workers and the
//! pack size, not on the size of the data. A file's chunk ids come back through a per-file
//! channel and are collected when its directory is complete, so many small files are in flight
//! at once. Nothing refers to a pack before it is uploaded, the index is written after every
//! pack, and the snapshot after the index: an interrupted or failed backup leaves only
//! unreferenced packs, which `prune` removes.
//!
//! May use: `format`, `repository` (the handle and its writer), `sources` (dump recognition,
//! PostgreSQL, the child-process helper). Nothing else in `ops` uses its internals.
//!
//! [`BlobClass`]: crate::format::compress::BlobClass

mod chunk;
mod plan;
mod pool;
pub mod report;
mod snapshot;
mod streams;
mod tree;
mod walk;

use crate::error::{Error, Result};
use crate::format::compress::BlobCompressor;
use crate::format::id::SnapshotId;
use crate::format::snapshot::Snapshot;
use crate::ops::progress::Progress;
use crate::repository::writer::BlobWriter;
use crate::repository::Repository;
use crate::sources::postgres::PgSource;
use crossbeam_channel::Sender;
pub use plan::exclude_matcher;
use pool::{Counts, Job};
pub use report::{Notice, Step, Warning};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
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
    /// Leave extended attributes (and so ACLs and file capabilities) out.
    pub no_xattrs: bool,
    /// What else leaves files out (restic's selection flags).
    pub selection: Selection,
    /// Counters a front end may read while the backup runs ([`Progress`]).
    pub progress: Arc<Progress>,
    /// Called with the assembled snapshot just before it is saved; what it returns is recorded
    /// as the snapshot summary's `anomalies` (the caller compares with the history).
    pub anomalies: Option<AnomalyCheck>,
    /// Read, chunk, compress and seal everything as a real backup would, but write nothing:
    /// no pack, no index, no snapshot (`backup --dry-run`). The report lists every file.
    pub dry_run: bool,
}

/// A file or stream a dry run would store ([`BackupReport::listed`]).
#[derive(Clone, Debug)]
pub struct Listed {
    pub path: PathBuf,
    pub size: u64,
    pub change: Change,
}

/// How a file compares with the parent snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Not in the parent (or no parent).
    New,
    /// In the parent, read again because its size or times changed.
    Modified,
    /// In the parent with the same size and times: its content is taken from there unread.
    Unchanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::New => "new",
            Change::Modified => "modified",
            Change::Unchanged => "unchanged",
        }
    }
}

/// See [`BackupOptions::anomalies`].
pub type AnomalyCheck = Box<dyn FnOnce(&Snapshot) -> Vec<String> + Send>;

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
            no_xattrs: false,
            selection: Selection::default(),
            progress: Arc::new(Progress::new()),
            anomalies: None,
            dry_run: false,
        }
    }
}

/// What leaves files out of a backup besides the exclude patterns ([`BackupOptions::excludes`],
/// restic's rules: docs/cli.md).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Exclude patterns matched with letters in either case (`--iexclude`).
    pub iexcludes: Vec<String>,
    /// A directory holding a file of one of these names keeps only that file
    /// (`--exclude-if-present`).
    pub exclude_if_present: Vec<String>,
    /// A directory holding a `CACHEDIR.TAG` with the standard's signature keeps only the tag
    /// (`--exclude-caches`).
    pub exclude_caches: bool,
    /// Stay on the file systems of the paths given: a mount point below them is stored as an
    /// empty directory (`-x`, `--one-file-system`).
    pub one_file_system: bool,
    /// Files larger than this many bytes are left out (`--exclude-larger-than`).
    pub exclude_larger_than: Option<u64>,
}

/// The first bytes of a valid `CACHEDIR.TAG` (<https://bford.info/cachedir/>).
pub const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// Whether `path` is a regular file that starts with [`CACHEDIR_SIGNATURE`]. A symlink is not
/// followed and a FIFO or device is not read (opened non-blocking, then checked to be a regular
/// file), so a hostile tag can neither point the backup elsewhere nor hang it.
fn valid_cachedir_tag(path: &std::path::Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let mut head = [0u8; CACHEDIR_SIGNATURE.len()];
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .and_then(|mut f| {
            if !f.metadata()?.is_file() {
                return Err(std::io::ErrorKind::InvalidInput.into());
            }
            std::io::Read::read_exact(&mut f, &mut head)
        })
        .is_ok_and(|()| head == CACHEDIR_SIGNATURE)
}

impl Selection {
    /// The tag file that empties directory `dir` (listing `names`), if any: the name to keep.
    fn tag_in(
        &self,
        dir: &std::path::Path,
        names: &[std::ffi::OsString],
    ) -> Option<std::ffi::OsString> {
        for name in names {
            if self
                .exclude_if_present
                .iter()
                .any(|t| name.as_os_str() == t.as_str())
            {
                return Some(name.clone());
            }
            if self.exclude_caches && name == "CACHEDIR.TAG" && valid_cachedir_tag(&dir.join(name))
            {
                return Some(name.clone());
            }
        }
        None
    }
}

/// The outcome of a backup.
#[derive(Debug)]
pub struct BackupReport {
    /// The saved snapshot's id; none on a dry run, which saves nothing.
    pub id: Option<SnapshotId>,
    /// The snapshot saved, or on a dry run the one that would have been (its summary counts
    /// what a real run would add).
    pub snapshot: Snapshot,
    /// Source files or directories that could not be read (they are not in the snapshot), and
    /// files that kept changing while being read (stored as read: [`Step::Changed`]).
    pub warnings: Vec<Warning>,
    /// Advice that does not make the backup partial (a compressed dump that will deduplicate
    /// poorly, a damaged snapshot left out of the parent choice).
    pub notices: Vec<Notice>,
    /// On a dry run: every file and stream, in the order met.
    pub listed: Vec<Listed>,
}

/// A backup writes a checkpoint index file after this many packs (1 GiB at the default pack
/// size) ...
pub const CHECKPOINT_PACKS: usize = 64;
/// ... or this long after the last one, whichever comes first: a backup killed outright loses
/// at most that much uploaded work; one interrupted (SIGINT, SIGTERM) or failing loses only
/// the packs not yet uploaded ([`BlobWriter::keep_uploaded`]).
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(300);

/// On the way out of a backup that stops early: a checkpoint naming every pack already
/// uploaded, so the next backup reuses them. Returns `e`, the reason for stopping; a failed
/// checkpoint is only logged (the packs stay unindexed and prune removes them).
fn keep_uploaded(writer: &BlobWriter<'_>, e: Error) -> Error {
    match writer.keep_uploaded() {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!("{n} packs already uploaded are indexed: the next backup reuses them")
        }
        Err(failed) => tracing::warn!("the packs already uploaded could not be indexed: {failed}"),
    }
    e
}

/// Backs up every source into one snapshot. If any stream source fails (a dump, a command),
/// nothing is saved and the error names the source.
pub fn backup(repo: &Repository, mut opts: BackupOptions) -> Result<BackupReport> {
    let started = Instant::now();
    let plan = plan::plan(
        std::mem::take(&mut opts.sources),
        &opts.excludes,
        &opts.selection.iexcludes,
    )?;
    tracing::info!(
        "planned {} path source(s) and {} stream source(s)",
        plan.paths.len(),
        plan.streams.len()
    );
    let time = opts.time.take().unwrap_or_else(jiff::Zoned::now);
    // Damaged snapshots are not candidates for the parent; they are named in the notices.
    let mut damage = Vec::new();
    let parent = if plan.paths.is_empty() {
        None
    } else {
        plan::choose_parent(repo, &opts, &plan.tree_paths, &mut damage)?
    };
    match &parent {
        Some((id, _)) => tracing::info!(
            "parent snapshot {} chosen in {:.2} s",
            id.short(),
            started.elapsed().as_secs_f64()
        ),
        None => tracing::info!("no parent snapshot: every file is read"),
    }
    let parent_tree = parent
        .as_ref()
        .and_then(|(_, snap)| repo.load_tree(&snap.tree).ok());
    let mut writer = BlobWriter::new(repo, repo.storage().connections(), opts.cancel.clone())?;
    writer = if opts.dry_run {
        writer.dry_run()
    } else {
        writer.with_checkpoints(CHECKPOINT_PACKS, CHECKPOINT_INTERVAL)
    };
    if opts.parent == ParentChoice::None {
        // `--force` trusts nothing it has not seen: one listing of the packs, and a blob the
        // index places in a pack that is not there is stored again (a lost pack must not
        // poison every later backup).
        let present = repo.list_packs()?.into_iter().map(|(id, _)| id).collect();
        writer = writer.reuse_only_packs(present);
    }
    let plan::Plan {
        paths,
        streams,
        excludes,
        tree_paths,
    } = plan;
    let walked = pool::run(repo, &writer, &opts, &excludes, |run| {
        run.backup_sources(&paths, streams, parent_tree.as_ref(), &time)
    });
    // The first error wins over the stops it caused (a full disk is not an interrupt).
    let root = match walked.root.map_err(|e| writer.explain(e)) {
        Ok(root) if !opts.cancel.load(Ordering::SeqCst) => root,
        Ok(_) => return Err(keep_uploaded(&writer, Error::Interrupted)),
        Err(e) => return Err(keep_uploaded(&writer, e)),
    };
    tracing::info!(
        "sources read in {:.2} s ({} files)",
        started.elapsed().as_secs_f64(),
        walked.counts.files
    );
    let stats = snapshot::WriterTotals::take(&writer);
    // Packs, then the index: only after this may the snapshot refer to the new blobs.
    let finishing = Instant::now();
    let writer_checkpointed = writer.checkpointed_packs();
    let written = writer.finish()?;
    tracing::info!(
        "packs and index written in {:.2} s ({} packs)",
        finishing.elapsed().as_secs_f64(),
        written.packs.len()
    );
    let mut snapshot = snapshot::Assembly {
        opts: &opts,
        time: &time,
        started,
        root,
        tree_paths: &tree_paths,
        paths: &paths,
        records: walked.records,
        counts: &walked.counts,
        warnings: walked.warnings.len(),
        stats,
        packs_written: written.packs.len() as u64 + writer_checkpointed,
        parent: parent.map(|(id, _)| id),
        key_id: repo.keys().fingerprint(),
    }
    .snapshot();
    let notices = damage.into_iter().chain(walked.notices).collect();
    if opts.dry_run {
        tracing::info!("dry run: nothing saved");
        return Ok(BackupReport {
            id: None,
            snapshot,
            warnings: walked.warnings,
            notices,
            listed: walked.listed,
        });
    }
    if let Some(check) = opts.anomalies.take() {
        snapshot.summary.anomalies = check(&snapshot);
    }
    let id = snapshot.save(repo.storage(), repo.keys())?;
    tracing::info!(
        "snapshot {} saved; backup took {:.2} s",
        id.short(),
        started.elapsed().as_secs_f64()
    );
    Ok(BackupReport {
        id: Some(id),
        snapshot,
        warnings: walked.warnings,
        notices,
        listed: Vec::new(),
    })
}

/// The walking thread's state for one run: it reads the sources, chunks them, hands the chunks
/// to the pool and assembles the trees. Its methods live with their stage: [`chunk`], [`walk`],
/// [`streams`], [`tree`].
struct Run<'a, 'r> {
    repo: &'r Repository,
    writer: &'a BlobWriter<'r>,
    jobs: Sender<Job>,
    cancel: &'a AtomicBool,
    cancel_flag: Arc<AtomicBool>,
    excludes: &'a plan::ExcludeRules,
    /// Read each node's extended attributes.
    xattrs: bool,
    selection: &'a Selection,
    /// Directories on another file system than their parent (with `one_file_system`): stored
    /// empty.
    mount_points: std::collections::HashSet<PathBuf>,
    warnings: Vec<Warning>,
    notices: Vec<Notice>,
    warned_compressed_dump: bool,
    counts: Counts,
    /// Compresses the trees this thread stores.
    compressor: BlobCompressor,
    /// Paths of files about to be read, for the prefetch thread.
    prefetch: Option<Sender<PathBuf>>,
    /// The chunker's buffer, handed from one file to the next.
    chunk_buffer: Vec<u8>,
    progress: &'a Progress,
    /// Files and streams as they are met, kept on a dry run only.
    listed: Option<Vec<Listed>>,
}

impl Run<'_, '_> {
    /// Notes a file or stream for the dry run's listing.
    fn list(&mut self, path: &Path, size: u64, change: Change) {
        if let Some(listed) = &mut self.listed {
            listed.push(Listed {
                path: path.to_path_buf(),
                size,
                change,
            });
        }
    }

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

    fn warn(&mut self, path: &Path, step: Step, reason: impl std::fmt::Display) {
        self.warnings.push(Warning {
            path: path.to_path_buf(),
            step,
            reason: reason.to_string(),
        });
    }
}

#[cfg(test)]
mod selection_tests {
    use super::*;
    use std::ffi::OsString;

    /// A tag must be a regular file with the signature: a symlink to a valid tag, a FIFO (which
    /// a blocking open would wait on forever) and a wrong signature do not count.
    #[test]
    fn only_a_real_cachedir_tag_empties_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let selection = Selection {
            exclude_caches: true,
            ..Selection::default()
        };
        let names = [OsString::from("CACHEDIR.TAG"), OsString::from("blob")];
        let d = |name: &str| {
            let p = dir.path().join(name);
            std::fs::create_dir(&p).unwrap();
            p
        };
        let mut signed = CACHEDIR_SIGNATURE.to_vec();
        signed.extend_from_slice(b"\n# a cache\n");
        let real = d("real");
        std::fs::write(real.join("CACHEDIR.TAG"), &signed).unwrap();
        assert_eq!(selection.tag_in(&real, &names), Some(names[0].clone()));
        let linked = d("linked");
        std::os::unix::fs::symlink(real.join("CACHEDIR.TAG"), linked.join("CACHEDIR.TAG")).unwrap();
        assert_eq!(selection.tag_in(&linked, &names), None);
        let fifo = d("fifo");
        nix::unistd::mkfifo(&fifo.join("CACHEDIR.TAG"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(selection.tag_in(&fifo, &names), None);
        let wrong = d("wrong");
        std::fs::write(wrong.join("CACHEDIR.TAG"), b"Signature: 0000").unwrap();
        assert_eq!(selection.tag_in(&wrong, &names), None);
        // --exclude-if-present counts any entry of that name.
        let present = Selection {
            exclude_if_present: vec!["blob".into()],
            ..Selection::default()
        };
        assert_eq!(present.tag_in(&wrong, &names), Some(names[1].clone()));
    }
}

//! Restore's execution: writing a planned restore below its root. Conflicts are checked first;
//! directories and symlinks are made in plan order, then file contents by several threads in
//! batches ([`super::plan::batches`]), each read through the one
//! [`crate::repository::BlobReader`], and directory metadata last. Everything below the root is
//! reached through directory handles without following symlinks, created exclusively under
//! temporary names and renamed into place, or (new files) written unnamed and linked to their
//! names ([`crate::fs::safe`]).
//!
//! May use: `fs/`, `format/` (tree nodes), the repository's reader.

use super::nodes::{restore_link, restore_special, restore_symlink, split_links, RestoreWarning};
use super::outcome::{is_damage, DamagedFile, FileJob, Outcome};
use super::plan::{self, not_below, place};
use super::RestoreReport;
use crate::error::{Error, Result};
use crate::format::id::PackId;
use crate::format::tree::{Node, NodeKind};
use crate::fs::direct::{self, DirectWriter};
use crate::fs::safe::{Dir, Kind};
use crate::fs::sparse::SparseWriter;
use crate::ops::progress::Progress;
use crate::repository::reader::Span;
use crate::repository::Repository;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Checks every destination for conflicts, then writes; `root` is created first. `root` is
/// trusted (the operator chose it); everything below it is reached through directory handles
/// without following symlinks ([`crate::fs::safe`]).
pub(super) fn execute(
    repo: &Repository,
    plan: &[(PathBuf, Node)],
    root: &Path,
    overwrite: bool,
    skip_damaged: bool,
    cancel: &AtomicBool,
    progress: &Progress,
) -> Result<RestoreReport> {
    let exists = check_conflicts(plan, overwrite)?;
    // Every destination must be plain names below the root (a name `..` or with a `/` from a
    // damaged or hostile tree would climb out of it).
    for (dest, _) in plan {
        place(root, dest)?;
    }
    // Write: directories and symlinks in plan order (parents first), then file contents in
    // parallel, one file per thread at a time, each written in order.
    std::fs::create_dir_all(root).map_err(|e| Error::io("creating", root, e))?;
    // A relative destination without a parent (`files`) is below the current directory.
    let opened = if root.as_os_str().is_empty() {
        Path::new(".")
    } else {
        root
    };
    let root = Root {
        dir: Dir::open_trusted(opened).map_err(|e| Error::io("opening", opened, e))?,
        path: root,
    };
    let mut report = RestoreReport::default();
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut stack = DirStack::new(&root);
    // Directories that were already there: they may hold leftovers of an interrupted restore.
    let mut existing: Vec<&PathBuf> = Vec::new();
    for ((dest, node), &exists) in plan.iter().zip(&exists) {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        match node.kind {
            NodeKind::Dir => {
                let (parent, name) = place(root.path, dest)?;
                let parent = stack.get(parent)?;
                // Not following a symlink: one where a directory goes is replaced (with
                // --overwrite), never followed. New directories stay 0700 until complete.
                let found = parent
                    .kind(name)
                    .map_err(|e| Error::io("inspecting", dest, e))?;
                match found {
                    Some(Kind::Dir) => existing.push(dest),
                    Some(_) if !overwrite => return Err(Error::WouldOverwrite(dest.clone())),
                    Some(_) => {
                        parent
                            .remove_file(name)
                            .map_err(|e| Error::io("replacing", dest, e))?;
                        parent
                            .create_dir(name, 0o700)
                            .map_err(|e| Error::io("creating", dest, e))?;
                    }
                    None => parent
                        .create_dir(name, 0o700)
                        .map_err(|e| Error::io("creating", dest, e))?,
                }
                report.dirs += 1;
                dirs.push((dest, node));
            }
            NodeKind::File => files.push((dest, node, exists)),
            NodeKind::Symlink => {
                let (parent, name) = place(root.path, dest)?;
                let warning = restore_symlink(stack.get(parent)?, name, node, dest, overwrite)?;
                report.warnings.extend(warning);
                report.symlinks += 1;
            }
            NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
                let (parent, name) = place(root.path, dest)?;
                match restore_special(stack.get(parent)?, name, node, dest, overwrite)? {
                    None => report.special_files += 1,
                    Some(warning) => report.warnings.push(warning),
                }
            }
        }
    }
    report.leftovers_removed = remove_leftovers(&root, &existing, &mut stack)?;
    let (files, links) = split_links(files);
    report.files = files.len() as u64;
    progress.add_totals(
        report.files,
        files.iter().map(|(_, node, _)| node.size).sum(),
    );
    let warnings;
    (report.bytes, report.damaged, warnings) =
        restore_files(repo, &root, &files, skip_damaged, cancel, progress)?;
    report.warnings.extend(warnings);
    report.files -= report.damaged.len() as u64;
    for (first, dest, exists) in links {
        // A link to a file left out for damaged data is left out with it.
        if let Some(d) = report.damaged.iter().find(|d| d.path == *first) {
            let damaged = DamagedFile {
                path: dest.clone(),
                reason: format!("a hard link to {}: {}", first.display(), d.reason),
            };
            report.damaged.push(damaged);
            continue;
        }
        restore_link(
            &root.open_parent(first)?,
            first,
            &root.open_parent(dest)?,
            dest,
            exists,
        )?;
        report.hard_links += 1;
    }
    // Directory metadata last, deepest first, so writing children does not change their mtimes;
    // through a handle opened without following symlinks.
    for (dest, node) in dirs.iter().rev() {
        let rel = dest
            .strip_prefix(root.path)
            .map_err(|_| not_below(root.path, dest))?;
        let dir = stack.get(rel)?;
        let failed = finish_file(node, dest, dir.file())?;
        report.warnings.extend(xattr_warning(dest, failed));
    }
    Ok(report)
}

/// Removes the temporary files an interrupted restore left in the directories this one writes
/// into (the root and the planned directories that were already there; new ones are empty):
/// regular files with a temporary name of a process no longer running
/// ([`Dir::remove_temp_leftovers`]). Returns how many were removed.
fn remove_leftovers(
    root: &Root<'_>,
    existing: &[&PathBuf],
    stack: &mut DirStack<'_>,
) -> Result<u64> {
    let mut removed = root
        .dir
        .remove_temp_leftovers()
        .map_err(|e| Error::io("removing leftover temporary files in", root.path, e))?;
    for dest in existing {
        let rel = dest
            .strip_prefix(root.path)
            .map_err(|_| not_below(root.path, dest))?;
        removed += stack
            .get(rel)?
            .remove_temp_leftovers()
            .map_err(|e| Error::io("removing leftover temporary files in", dest, e))?;
    }
    Ok(removed)
}

/// The trusted directory a restore writes below, opened.
struct Root<'a> {
    dir: Dir,
    path: &'a Path,
}

impl Root<'_> {
    /// Opens the directory that holds `dest`, walking down from the root without following
    /// symlinks.
    fn open_parent(&self, dest: &Path) -> Result<Dir> {
        let (parent, _) = place(self.path, dest)?;
        self.dir
            .open_path(parent)
            .map_err(|e| Error::io("opening directory", self.path.join(parent), e))
    }
}

/// The directories on one path below the root, kept open while the plan (in tree order) walks
/// through them: at most one descriptor per level of depth, each reached from its parent
/// without following a symlink.
struct DirStack<'r> {
    root: &'r Root<'r>,
    open: Vec<(std::ffi::OsString, Dir)>,
}

impl<'r> DirStack<'r> {
    fn new(root: &'r Root<'r>) -> DirStack<'r> {
        DirStack {
            root,
            open: Vec::new(),
        }
    }

    /// The directory at `rel` below the root.
    fn get(&mut self, rel: &Path) -> Result<&Dir> {
        let names: Vec<&OsStr> = rel.iter().collect();
        let keep = self
            .open
            .iter()
            .zip(&names)
            .take_while(|((open, _), name)| open.as_os_str() == **name)
            .count();
        self.open.truncate(keep);
        for (i, name) in names.iter().enumerate().skip(keep) {
            let parent = self.open.last().map_or(&self.root.dir, |(_, d)| d);
            let dir = parent.open_dir(name).map_err(|e| {
                let path: PathBuf = names[..=i].iter().collect();
                Error::io("opening directory", self.root.path.join(path), e)
            })?;
            self.open.push((name.to_os_string(), dir));
        }
        Ok(self.open.last().map_or(&self.root.dir, |(_, d)| d))
    }
}

/// Restores `files` with several threads, returning the bytes written and the files left out
/// for damaged data ([`Outcome`]). Files are handed out in batches of one directory's files, so
/// two threads rarely create files in the same directory at once (creating a file locks its
/// directory). An error that stops the restore stops the other threads and is returned, saying
/// what was and was not written.
fn restore_files(
    repo: &Repository,
    root: &Root<'_>,
    files: &[FileJob<'_>],
    skip_damaged: bool,
    cancel: &AtomicBool,
    progress: &Progress,
) -> Result<(u64, Vec<DamagedFile>, Vec<RestoreWarning>)> {
    let shape: Vec<(Option<&Path>, u64)> = files
        .iter()
        .map(|(dest, node, _)| (dest.parent(), node.size))
        .collect();
    let batches = plan::batches(&shape);
    // One thread more than the cores where reads go directly to the disk and wait for it.
    let threads = crate::repository::parallel::threads_for_reading(repo.storage());
    let outcome = Outcome::new(files, skip_damaged);
    let prefetch_stop = AtomicBool::new(false);
    // How many batches have been started (they start in order).
    let started = AtomicUsize::new(0);
    let numbered: Vec<(usize, std::ops::Range<usize>)> = batches.into_iter().enumerate().collect();
    let spans: Vec<Option<BatchSpan>> = numbered
        .iter()
        .map(|(_, batch)| batch_span(repo, &files[batch.clone()]))
        .collect();
    // On an object store: one request per pack touched, not one per file.
    let _plan = repo
        .reader()
        .plan_reads(files.iter().map(|(_, node, _)| node.content.as_slice()));
    std::thread::scope(|scope| {
        if repo.storage().prefetches() {
            let (numbered, spans, started, stop) = (&numbered, &spans, &started, &prefetch_stop);
            scope.spawn(move || {
                prefetch_batches(repo, files, numbered, spans, started, stop, cancel)
            });
        }
        let outcome = &outcome;
        crate::repository::parallel::map(
            &numbered,
            threads,
            outcome.stop_flag(),
            |(number, batch)| {
                started.fetch_max(number + 1, Ordering::Relaxed);
                match &spans[*number] {
                    Some(span) => {
                        restore_span(repo, root, batch.clone(), span, outcome, cancel, progress)
                    }
                    None => restore_batch(repo, root, batch.clone(), outcome, cancel, progress),
                }
            },
        );
        // The prefetcher stops once everything has been asked for, or on `stop`.
        prefetch_stop.store(true, Ordering::Relaxed);
    });
    outcome.finish()
}

/// The range of one pack that holds every blob of a batch of small files, when they lie there
/// close together (the files of one directory usually do): the batch is then read with one
/// read ([`BlobReader::span_of`], [`BlobReader::with_span`]). Large files are read on their own.
///
/// [`BlobReader::span_of`]: crate::repository::BlobReader::span_of
/// [`BlobReader::with_span`]: crate::repository::BlobReader::with_span
type BatchSpan = (PackId, std::ops::Range<u64>);

fn batch_span(repo: &Repository, batch: &[FileJob<'_>]) -> Option<BatchSpan> {
    if batch
        .iter()
        .any(|(_, node, _)| node.kind != NodeKind::File || node.size >= direct::WORTH_IT as u64)
    {
        return None;
    }
    repo.reader()
        .span_of(batch.iter().map(|(_, node, _)| node.content.as_slice()))
}

/// Asks storage to read the blobs of the batches ahead of the restoring threads, in the order
/// they take them, at most 64 MiB beyond the batches started; files read by several threads
/// ([`PARALLEL_FROM`]) and batches read directly in one span are left to those.
fn prefetch_batches(
    repo: &Repository,
    files: &[FileJob<'_>],
    batches: &[(usize, std::ops::Range<usize>)],
    spans: &[Option<BatchSpan>],
    started: &AtomicUsize,
    stop: &AtomicBool,
    cancel: &AtomicBool,
) {
    const PREFETCH_AHEAD: u64 = 64 << 20;
    let size = |range: &std::ops::Range<usize>| -> u64 {
        files[range.clone()].iter().map(|(_, n, _)| n.size).sum()
    };
    // Bytes of all batches before each one.
    let before: Vec<u64> = batches
        .iter()
        .scan(0u64, |sum, (_, r)| {
            let at = *sum;
            *sum += size(r);
            Some(at)
        })
        .collect();
    for (i, (number, range)) in batches.iter().enumerate() {
        if spans[*number]
            .as_ref()
            .is_some_and(|(_, s)| s.end - s.start >= direct::WORTH_IT as u64)
        {
            continue;
        }
        loop {
            if stop.load(Ordering::Relaxed) || cancel.load(Ordering::Relaxed) {
                return;
            }
            let s = started.load(Ordering::Relaxed).min(batches.len() - 1);
            if i <= s || before[i] <= before[s] + PREFETCH_AHEAD {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // Files of direct::WORTH_IT or more are mostly read with direct reads, which the page
        // cache cannot serve; large files are read by several threads at once anyway (asking
        // for them only queued their reads ahead of the small files': cold restore 2.7-2.9 s
        // with them, 2.0-2.3 s without).
        repo.reader().prefetch(
            files[range.clone()]
                .iter()
                .filter(|(_, node, _)| node.size < direct::WORTH_IT as u64)
                .map(|(_, node, _)| node.content.as_slice()),
        );
    }
}

/// Restores a batch whose blobs lie in `span`: the span is read once and every file's blobs
/// are taken from it. Errors go to `outcome`; when the span itself cannot be read and damaged
/// files are skipped, the batch is restored file by file instead, so only the damaged ones are
/// left out.
fn restore_span(
    repo: &Repository,
    root: &Root<'_>,
    batch: std::ops::Range<usize>,
    span: &BatchSpan,
    outcome: &Outcome<'_>,
    cancel: &AtomicBool,
    progress: &Progress,
) {
    let (pack, range) = span;
    let files = outcome.files(batch.clone());
    // The batch's files share one directory: opened once for all of them.
    let dir = match root.open_parent(files[0].0) {
        Ok(dir) => dir,
        Err(e) => {
            outcome.failed(Some(batch.start), e);
            return;
        }
    };
    let result = repo.reader().with_span(*pack, range.clone(), |span| {
        let source = Source::Span(span);
        for (i, (dest, node, exists)) in batch.clone().zip(files) {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            if outcome.stopped() {
                return Ok(());
            }
            let watch = Watch { cancel, progress };
            match restore_file(repo, node, &dir, dest, *exists, &source, watch) {
                Ok((n, failed)) => outcome.written(i, n, xattr_warning(dest, failed)),
                Err(e) => {
                    if !outcome.failed(Some(i), e) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        if outcome.skips_damaged() && is_damage(&e) {
            restore_batch(repo, root, batch, outcome, cancel, progress);
        } else {
            outcome.failed(None, e);
        }
    }
}

/// Restores one batch of files (those not already complete), each read on its own; errors go
/// to `outcome`.
fn restore_batch(
    repo: &Repository,
    root: &Root<'_>,
    batch: std::ops::Range<usize>,
    outcome: &Outcome<'_>,
    cancel: &AtomicBool,
    progress: &Progress,
) {
    let files = outcome.files(batch.clone());
    // The batch's files share one directory: opened once for all of them.
    let Some((first, _, _)) = files.first() else {
        return;
    };
    let dir = match root.open_parent(first) {
        Ok(dir) => dir,
        Err(e) => {
            outcome.failed(Some(batch.start), e);
            return;
        }
    };
    for (i, (dest, node, exists)) in batch.zip(files) {
        if outcome.is_done(i) {
            continue;
        }
        let result = if cancel.load(Ordering::Relaxed) {
            Err(Error::Interrupted)
        } else {
            let watch = Watch { cancel, progress };
            restore_file(repo, node, &dir, dest, *exists, &Source::Storage, watch)
        };
        match result {
            Ok((n, failed)) => outcome.written(i, n, xattr_warning(dest, failed)),
            Err(e) => {
                if !outcome.failed(Some(i), e) {
                    return;
                }
            }
        }
        if outcome.stopped() {
            return;
        }
    }
}

/// Every conflict with an existing file is found before anything is written. Returns, for each
/// destination, whether something exists there (so writing need not look again).
///
/// The plan lists directories before what is in them, so below a directory found missing
/// nothing is looked up (nothing can be there; something created there meanwhile is met when
/// writing: a new file is never put over anything).
pub(super) fn check_conflicts(plan: &[(PathBuf, Node)], overwrite: bool) -> Result<Vec<bool>> {
    let mut exists = Vec::with_capacity(plan.len());
    let mut missing_dirs: std::collections::HashSet<&Path> = std::collections::HashSet::new();
    for (dest, node) in plan {
        if dest.parent().is_some_and(|p| missing_dirs.contains(p)) {
            if node.kind == NodeKind::Dir {
                missing_dirs.insert(dest);
            }
            exists.push(false);
            continue;
        }
        let meta = std::fs::symlink_metadata(dest);
        let not_found = matches!(&meta, Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        if not_found && node.kind == NodeKind::Dir {
            missing_dirs.insert(dest);
        }
        if let Ok(meta) = &meta {
            let conflict = match node.kind {
                NodeKind::Dir => !meta.is_dir(),
                _ => true,
            };
            if conflict && !overwrite {
                return Err(Error::WouldOverwrite(dest.clone()));
            }
        }
        exists.push(meta.is_ok());
    }
    Ok(exists)
}

pub(super) fn mtime(node: &Node) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(
        node.mtime_ns.div_euclid(1_000_000_000),
        node.mtime_ns.rem_euclid(1_000_000_000) as u32,
    )
}

/// Writes one file into `dir` (the directory holding `dest`), always to a new file that nobody
/// else can open, so the final name never holds a partial file and nothing that already existed
/// is opened for writing. The file gets its content, owner, mode, extended attributes and time
/// through the open descriptor and only then its final name:
/// - a new file is written unnamed (`O_TMPFILE`) and linked to its name, which fails if
///   something was created at that name meanwhile (it is left alone); where the file system
///   cannot, it is written like a replacing one and renamed without replacing;
/// - a file that existed at planning (`replacing`, with --overwrite) is written under a fresh
///   random temporary name (`O_CREAT|O_EXCL|O_NOFOLLOW`, 0600) and renamed over the old one (a
///   symlink there is replaced, not followed).
///
/// On any error (or an interrupt) nothing is left: an unnamed file vanishes with its
/// descriptor, a temporary name is removed.
fn restore_file(
    repo: &Repository,
    node: &Node,
    dir: &Dir,
    dest: &Path,
    replacing: bool,
    source: &Source<'_>,
    watch: Watch<'_>,
) -> Result<(u64, Vec<String>)> {
    let name = dest.file_name().unwrap_or_default();
    let unnamed = if replacing {
        None
    } else {
        dir.create_unnamed_file(0o600)
            .map_err(|e| Error::io("creating", dest, e))?
    };
    if let Some(file) = unnamed {
        let result = write_content(repo, node, dest, dest, &file, source, watch)
            .and_then(|written| finish_file(node, dest, &file).map(|failed| (written, failed)))
            .and_then(|written| {
                dir.link_unnamed(&file, name)
                    .map_err(|e| placing_error(dest, e))
                    .map(|()| written)
            });
        if result.is_ok() {
            watch.progress.file_done();
        }
        return result;
    }
    let (temp, file) = dir
        .create_temp_file(name, 0o600)
        .map_err(|e| Error::io("creating", dest, e))?;
    let path = dest.with_file_name(&temp);
    let result = write_content(repo, node, dest, &path, &file, source, watch)
        .and_then(|written| finish_file(node, &path, &file).map(|failed| (written, failed)))
        .and_then(|written| {
            dir.rename(&temp, name, replacing)
                .map_err(|e| placing_error(dest, e))
                .map(|()| written)
        });
    drop(file);
    match &result {
        Ok(_) => watch.progress.file_done(),
        Err(_) => {
            let _ = dir.remove_file(&temp);
        }
    }
    result
}

/// The error for a finished file that could not be given its name.
fn placing_error(dest: &Path, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::AlreadyExists {
        Error::io(
            "renaming into place",
            dest,
            std::io::Error::new(
                e.kind(),
                "something was created at this name during the restore; it was left alone",
            ),
        )
    } else {
        Error::io("renaming into place", dest, e)
    }
}

/// What a file's writing looks at besides the file: the interrupt flag, the progress counters.
#[derive(Clone, Copy)]
struct Watch<'a> {
    cancel: &'a AtomicBool,
    progress: &'a Progress,
}

/// Files at least this large are read by several threads (ranged reads fetched and decrypted
/// ahead) and written in order by one, so one big dump restores as fast as many small files.
const PARALLEL_FROM: u64 = 8 << 20;

/// Where [`write_content`] takes a file's blobs from.
enum Source<'a> {
    /// Read from storage, file by file.
    Storage,
    /// A range of one pack read once for a batch ([`restore_span`]).
    Span(&'a Span<'a, 'a>),
}

/// Where [`write_content`] puts a file's bytes.
enum Out<'f> {
    Direct(DirectWriter<'f>),
    Buffered(std::io::BufWriter<&'f std::fs::File>),
    /// A small file of one blob: written with one call, without a copy into a buffer.
    Whole(&'f std::fs::File),
    /// A file that had holes: all-zero blocks are left as holes.
    Sparse(SparseWriter<'f>),
}

/// Writes a file's blobs in order and checks the length against the snapshot.
fn write_content(
    repo: &Repository,
    node: &Node,
    dest: &Path,
    path: &Path,
    file: &std::fs::File,
    source: &Source<'_>,
    watch: Watch<'_>,
) -> Result<u64> {
    let Watch { cancel, progress } = watch;
    let readers = if node.size >= PARALLEL_FROM {
        let storage = repo.storage();
        (storage.connections() / 2).clamp(2, 8) + usize::from(storage.reads_directly())
    } else {
        1
    };
    let mut written = 0u64;
    // Small chunks (dumps are cut at 16 KiB) are gathered into fewer, larger writes; large
    // files are written around the page cache where the file system allows (direct.rs).
    let mut out = if node.sparse {
        Out::Sparse(SparseWriter::new(file))
    } else if node.size >= direct::WORTH_IT as u64 {
        Out::Direct(DirectWriter::new(file))
    } else if node.content.len() <= 1 {
        Out::Whole(file)
    } else {
        Out::Buffered(std::io::BufWriter::with_capacity(256 << 10, file))
    };
    let mut put = |bytes: &[u8]| -> Result<()> {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        match &mut out {
            Out::Direct(w) => w.write_all(bytes),
            Out::Buffered(w) => w.write_all(bytes),
            Out::Whole(mut f) => f.write_all(bytes),
            Out::Sparse(w) => w.write_all(bytes),
        }
        .map_err(|e| Error::io("writing", path, e))?;
        written += bytes.len() as u64;
        progress.add_bytes(bytes.len() as u64);
        Ok(())
    };
    match source {
        Source::Storage => repo
            .reader()
            .read_blobs_parallel(&node.content, readers, &mut put)?,
        Source::Span(span) => span.read_blobs(&node.content, &mut put)?,
    }
    match out {
        Out::Direct(w) => w.finish(),
        Out::Buffered(mut w) => w.flush(),
        Out::Whole(_) => Ok(()),
        Out::Sparse(w) => w.finish(),
    }
    .map_err(|e| Error::io("writing", path, e))?;
    if written != node.size {
        return Err(Error::corrupt(
            "file",
            dest.display(),
            format!(
                "content has {written} bytes, the snapshot says {}",
                node.size
            ),
        ));
    }
    Ok(written)
}

/// Owner (when permitted), mode, extended attributes and modification time, through the open
/// handle. The attributes come after the owner (changing it clears `security.capability`) and
/// the mode (an access ACL sets the group bits to its mask, as they were). Returns the
/// attributes that could not be set, one line each.
fn finish_file(node: &Node, path: &Path, file: &std::fs::File) -> Result<Vec<String>> {
    // EPERM for non-root users is expected and not an error.
    let _ = std::os::unix::fs::fchown(file, Some(node.uid), Some(node.gid));
    file.set_permissions(std::fs::Permissions::from_mode(node.mode))
        .map_err(|e| Error::io("setting permissions of", path, e))?;
    let (values, mut failed) = node.xattr_values();
    failed.extend(crate::fs::xattr::apply(file, &values));
    let t = mtime(node);
    filetime::set_file_handle_times(file, Some(t), Some(t))
        .map_err(|e| Error::io("setting the modification time of", path, e))?;
    Ok(failed)
}

/// The warning for extended attributes that could not be set on `dest`.
pub(super) fn xattr_warning(dest: &Path, failed: Vec<String>) -> Option<RestoreWarning> {
    (!failed.is_empty()).then(|| RestoreWarning {
        path: dest.to_path_buf(),
        reason: format!("extended attributes not set: {}", failed.join("; ")),
        restored: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(kind: NodeKind) -> Node {
        Node::for_tests("n", kind)
    }

    #[test]
    fn conflicts_are_found_and_what_is_below_a_missing_directory_is_new() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("old")).unwrap();
        std::fs::write(root.join("old/f"), "x").unwrap();
        let plan: Vec<(PathBuf, Node)> = vec![
            (root.join("old"), node(NodeKind::Dir)),
            (root.join("old/f"), node(NodeKind::File)),
            (root.join("old/g"), node(NodeKind::File)),
            (root.join("new"), node(NodeKind::Dir)),
            (root.join("new/sub"), node(NodeKind::Dir)),
            (root.join("new/sub/f"), node(NodeKind::File)),
        ];
        let e = check_conflicts(&plan, false).unwrap_err();
        assert!(
            matches!(e, Error::WouldOverwrite(ref p) if p == &root.join("old/f")),
            "{e}"
        );
        let exists = check_conflicts(&plan, true).unwrap();
        assert_eq!(exists, [true, true, false, false, false, false]);
    }
}

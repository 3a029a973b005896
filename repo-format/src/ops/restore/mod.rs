//! `restore`: recreate a snapshot's files, directories, symlinks, FIFOs and device nodes under a
//! target directory, byte for byte, with modes, modification times and (when permitted) owners.
//!
//! Restore plans first and writes second: every conflict with an existing file is found before
//! anything is written, so a refused restore changes nothing. Below the target (which the
//! operator chose and is trusted) nothing is reached by path: directories are opened one name at
//! a time from the target without following symlinks, and everything restore creates is created
//! exclusively relative to such a handle ([`crate::fs::safe`]), so a symlink planted by whoever can
//! write a directory in the target is replaced or refused, never followed. Every file is written
//! where nobody else can open it, gets its owner, mode and time through its descriptor and its
//! name only when complete: a new file is written unnamed (`O_TMPFILE`) and linked to its name
//! without replacing anything, so nothing of it outlives the process; a file replaced with
//! --overwrite (or any file where the file system has no unnamed files) is written under a fresh
//! random temporary name (`.NAME.coffer-tmp-<pid>-<16 hex digits>`, mode 0600) and renamed into
//! place (over the old file, so the old content stays whole until the new content is). On an
//! error or interrupt the temporary file is removed; one a killed restore left behind is removed
//! by the next restore into that directory (the name holds the process id, and only names of
//! processes no longer running are removed, regular files only). New directories are 0700 until their
//! contents are complete. Every blob is authenticated and checked against its id on the way.
//! File contents are written by several threads (one per core, or one per connection for object
//! stores, plus one on local disk where reads bypass the page cache and wait for the device),
//! each file in order by one thread, one directory's files at a time per thread (the directory
//! opened once per batch); consecutive blobs of a file are fetched with one ranged read.

mod files;
mod nodes;
mod outcome;
mod plan;

pub use nodes::RestoreWarning;
pub use outcome::DamagedFile;

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind};
use crate::ops::progress::Progress;
use crate::repository::Repository;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// What to restore and where.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Snapshot paths to restore (with everything below them); empty restores everything.
    pub includes: Vec<String>,
    /// Replace existing files and symlinks.
    pub overwrite: bool,
    /// Restore every file whose data is intact, leaving out (and listing) those with damaged
    /// or missing data, instead of stopping at the first.
    pub skip_damaged: bool,
    /// Leave extended attributes (and so ACLs and file capabilities) unset.
    pub no_xattrs: bool,
    /// Counters a front end may read while the restore runs.
    pub progress: std::sync::Arc<Progress>,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// FIFOs and device nodes.
    pub special_files: u64,
    /// Files restored as hard links to a file restored before them (not counted in `files`).
    pub hard_links: u64,
    pub bytes: u64,
    /// Temporary files of an interrupted earlier restore removed from the directories restored
    /// into (`.NAME.coffer-tmp-<pid>-<16 hex digits>` of a process no longer running).
    pub leftovers_removed: u64,
    /// Files left out because their data is damaged or missing (with `skip_damaged`); not
    /// counted in `files`.
    pub damaged: Vec<DamagedFile>,
    /// Entries that could not be recreated (a device node without root); all else is restored.
    pub warnings: Vec<RestoreWarning>,
}

/// Restores `snapshot` according to `opts`.
pub fn restore(
    repo: &Repository,
    snapshot: &Snapshot,
    opts: &RestoreOptions,
    cancel: &AtomicBool,
) -> Result<RestoreReport> {
    // Plan: every entry the includes select, in tree order (parents first).
    let mut includes = plan::Includes::new(&opts.includes);
    let mut plan: Vec<(PathBuf, Node)> = Vec::new();
    let base = PathBuf::new();
    crate::ops::walk::walk_local(repo, &snapshot.tree, "", &base, &mut |path, rel, node| {
        if !includes.admit(path) {
            return Ok(false);
        }
        plan.push((rel.to_path_buf(), node.clone()));
        Ok(true)
    })?;
    if let Some(i) = includes.first_unmatched() {
        return Err(Error::PathNotInSnapshot {
            path: opts.includes[i].clone(),
            snapshot: snapshot.time.to_string(),
        });
    }
    let plan: Vec<(PathBuf, Node)> = plan
        .into_iter()
        .map(|(rel, mut node)| {
            if opts.no_xattrs {
                node.xattrs.clear();
            }
            (opts.target.join(rel), node)
        })
        .collect();
    files::execute(
        repo,
        &plan,
        &opts.target,
        opts.overwrite,
        opts.skip_damaged,
        cancel,
        &opts.progress,
    )
}

/// Restores the file or directory at `snapshot_path` (with everything below it) to `dest`
/// itself: `/opt/app/files` of the snapshot can go back to `/opt/app/files` or anywhere else.
/// Parent directories of `dest` are created as needed but their metadata is left alone.
/// `progress` counts what is written.
pub fn restore_subtree(
    repo: &Repository,
    snapshot: &Snapshot,
    snapshot_path: &str,
    dest: &Path,
    overwrite: bool,
    cancel: &AtomicBool,
    progress: &Progress,
) -> Result<RestoreReport> {
    let plan = plan_subtree(repo, snapshot, snapshot_path, dest)?;
    let parent = dest.parent().unwrap_or(Path::new("/"));
    files::execute(repo, &plan, parent, overwrite, false, cancel, progress)
}

/// Fails as [`restore_subtree`] would before writing anything (a conflicting existing file
/// without `overwrite`, a path missing from the snapshot), and writes nothing.
pub fn check_subtree(
    repo: &Repository,
    snapshot: &Snapshot,
    snapshot_path: &str,
    dest: &Path,
    overwrite: bool,
) -> Result<()> {
    let plan = plan_subtree(repo, snapshot, snapshot_path, dest)?;
    files::check_conflicts(&plan, overwrite).map(|_| ())
}

fn plan_subtree(
    repo: &Repository,
    snapshot: &Snapshot,
    snapshot_path: &str,
    dest: &Path,
) -> Result<Vec<(PathBuf, Node)>> {
    let node = crate::ops::walk::find(repo, &snapshot.tree, snapshot_path, &snapshot.time)?
        .ok_or_else(|| Error::PathNotInSnapshot {
            path: snapshot_path.to_string(),
            snapshot: snapshot.time.to_string(),
        })?;
    let mut plan = vec![(dest.to_path_buf(), node.clone())];
    if node.kind == NodeKind::Dir {
        if let Some(subtree) = &node.subtree {
            crate::ops::walk::walk_local(repo, subtree, "", dest, &mut |_, local, child| {
                plan.push((local.to_path_buf(), child.clone()));
                Ok(true)
            })?;
        }
    }
    Ok(plan)
}

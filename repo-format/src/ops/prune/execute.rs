//! Steps 5 and 6 of a prune pass: carry out what [`super::plan`] decided. Copy the used blobs
//! out of packs being repacked (read through the one [`BlobReader`], moved sealed) and write the
//! deletion plan (one after the other, or with a zero grace period at the same time), then the
//! one index file that names the new packs and supersedes the affected ones, then delete what
//! the due plans condemned, checking the lease before every change.
//!
//! May use: `format/`, `storage/`, the repository's reader and writer, the lease.

use super::mark::Marks;
use super::plan::{Decisions, Fate};
use super::PruneOptions;
use crate::error::{Error, Result};
use crate::format::id::{IndexId, PackId};
use crate::format::index::{BlobLocation, IndexFile};
use crate::format::pack::{self, PackedBlob, SealedBlob};
use crate::format::plan::DeletionPlan;
use crate::repository::lease::Lease;
use crate::repository::stored::delete_each;
use crate::repository::writer::BlobWriter;
use crate::repository::{BlobReader, Repository};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

/// Step 5a: copies the used blobs of the packs being repacked to new packs; returns the new
/// packs with their entries, which no index names yet ([`write_plan_and_index`] does).
pub(super) fn repack(
    repo: &Repository,
    reader: &BlobReader<'_>,
    marks: &Marks,
    decisions: &Decisions,
    options: &PruneOptions,
) -> Result<Vec<(PackId, Vec<PackedBlob>)>> {
    let cancel = &options.cancel;
    // Only the used blobs are read, by pack and offset: runs of neighbours in one read each.
    if !decisions.fates.values().any(|f| *f == Fate::Repack) {
        return Ok(Vec::new());
    }
    let mut wanted: Vec<BlobLocation> = reader
        .index()
        .iter()
        .enumerate()
        .filter(|(pos, (loc, _))| {
            marks.get(*pos) && matches!(decisions.fates.get(&loc.pack), Some(Fate::Repack))
        })
        .map(|(_, (loc, _))| loc)
        .collect();
    wanted.sort_by(|a, b| a.pack.cmp(&b.pack).then(a.blob.offset.cmp(&b.blob.offset)));
    let progress = &options.progress;
    progress.set_current("repacking");
    progress.add_totals(
        wanted.len() as u64,
        wanted.iter().map(|loc| u64::from(loc.blob.length)).sum(),
    );
    let storage = repo.storage();
    // On local disk one writer, with no pack waiting for it, keeps up: reading and moving
    // sealed blobs is faster than writing and flushing a pack, so more writers and a queue
    // only hold more packs in memory (a prune's peak RSS 78-96 MiB with two writers and a
    // queue, 76 MiB like this, in the same time: docs/benchmarks.md). An object store's
    // uploads wait for the network: there every connection gets one.
    let writer = if !storage.read_cost().plans_reads() {
        BlobWriter::with_queue(repo, 1, 0, cancel.clone())?.one_pack_waiting()
    } else {
        BlobWriter::new(repo, storage.connections(), cancel.clone())?
    };
    // Several runs are read and authenticated at once; the writer takes blobs from any thread.
    // One thread more than the cores where direct reads wait for the disk.
    let threads = crate::repository::parallel::threads_for_reading(storage);
    reader
        .read_sealed_runs(&wanted, threads, cancel, |loc, sealed| {
            progress.add_bytes(sealed.len() as u64);
            progress.file_done();
            // Authenticated, then moved as it is: sealed bytes do not depend on their pack, so
            // nothing is decompressed, hashed or compressed again.
            writer
                .store_sealed(SealedBlob {
                    kind: loc.blob.kind,
                    compression: loc.blob.compression,
                    id: loc.blob.id,
                    raw_length: loc.blob.raw_length,
                    bytes: sealed.to_vec(),
                })
                .map(|_| ())
        })
        .map_err(|e| writer.explain(e))?;
    if cancel.load(Ordering::SeqCst) {
        return Err(Error::Interrupted);
    }
    writer.finish_unindexed()
}

/// What steps 5b and 5c write, worked out from the decisions: the deletion plan's packs (every
/// condemned pack still present, with its entries, and the packs in no index) and the packs
/// that stay in the affected index files.
pub(super) struct Writes {
    plan_packs: Vec<(PackId, Vec<PackedBlob>)>,
    kept: Vec<(PackId, Vec<PackedBlob>)>,
    seen_kept: HashSet<PackId>,
    wrote_plan: bool,
}

/// Works out [`Writes`] (reads the affected index files, which are cached).
pub(super) fn writes(
    repo: &Repository,
    decisions: &Decisions,
    present: &HashMap<PackId, u64>,
) -> Result<Writes> {
    let (storage, keys) = (repo.storage(), repo.keys());
    let mut plan_packs: Vec<(PackId, Vec<PackedBlob>)> = Vec::new();
    let mut kept: Vec<(PackId, Vec<PackedBlob>)> = Vec::new();
    let mut seen_kept: HashSet<PackId> = HashSet::new();
    let mut seen_planned: HashSet<PackId> = HashSet::new();
    for file_id in &decisions.affected {
        let file = IndexFile::load(storage, keys, file_id)?;
        for (pack, blobs) in file.packs {
            if decisions.condemned_now(&pack) {
                if present.contains_key(&pack) && seen_planned.insert(pack) {
                    plan_packs.push((pack, blobs));
                }
            } else if seen_kept.insert(pack) {
                kept.push((pack, blobs));
            }
        }
    }
    plan_packs.extend(decisions.unindexed.iter().map(|p| (*p, Vec::new())));
    let wrote_plan = decisions.writes_plan(plan_packs.len());
    Ok(Writes {
        plan_packs,
        kept,
        seen_kept,
        wrote_plan,
    })
}

/// Step 5b: the deletion plan, if there is one; returns its index deadline (P6), counted from
/// now.
pub(super) fn write_plan(
    repo: &Repository,
    lease: Option<&Lease>,
    decisions: &Decisions,
    writes: &Writes,
    options: &PruneOptions,
) -> Result<Option<jiff::Timestamp>> {
    if !writes.wrote_plan {
        return Ok(None);
    }
    let created = jiff::Timestamp::now();
    let window = super::load::index_window(options.grace);
    let index_deadline = created
        .checked_add(window)
        .map_err(|e| Error::InvalidInput(format!("plan deadline: {e}")))?;
    if let Some(lease) = lease {
        lease.check()?;
    }
    DeletionPlan {
        created,
        index_deadline,
        index_files: decisions.affected.clone(),
        packs: writes.plan_packs.clone(),
    }
    .save(repo.storage(), repo.keys())?;
    Ok(Some(index_deadline))
}

/// Step 5c: one index file that names the packs `repacked` wrote, supersedes every affected
/// one and lists their packs that stay plus the re-indexed ones, written only before the
/// plan's `deadline` (P6). Returns whether a plan was written.
pub(super) fn write_index(
    repo: &Repository,
    lease: Option<&Lease>,
    decisions: Decisions,
    writes: Writes,
    deadline: Option<jiff::Timestamp>,
    repacked: Vec<(PackId, Vec<PackedBlob>)>,
    options: &PruneOptions,
) -> Result<bool> {
    let Writes {
        mut kept,
        mut seen_kept,
        wrote_plan,
        ..
    } = writes;
    for (pack, blobs) in decisions.reindex.into_iter().chain(repacked) {
        if seen_kept.insert(pack) {
            kept.push((pack, blobs));
        }
    }
    if !decisions.affected.is_empty() || !kept.is_empty() {
        // P6: past the plan's deadline, a backup that loaded the index since the plan was
        // written could outlive the grace period counted from the deadline. Stop instead: the
        // condemned packs stay live, the plan is harmless, and the next prune starts over.
        if let Some(deadline) = deadline {
            if !options.grace.is_zero() && jiff::Timestamp::now() > deadline {
                let window = super::load::index_window(options.grace);
                return Err(Error::InvalidInput(format!(
                    "prune took longer than {window:#} between writing its deletion plan and \
                     its index; nothing was removed, run prune again"
                )));
            }
        }
        if let Some(lease) = lease {
            lease.check()?;
        }
        IndexFile {
            supersedes: decisions.affected,
            packs: kept,
        }
        .save(repo.storage(), repo.keys())?;
    }
    Ok(wrote_plan)
}

/// What step 6 deletes: the due plans' packs and superseded index files, then the plans.
pub(super) struct Deletions {
    pub packs: Vec<(PackId, u64, String)>,
    pub files: Vec<IndexId>,
    pub plans: Vec<String>,
}

/// Step 6: deletes the packs and the superseded index files (several at once, together: D4),
/// then the plans carried out, checking the lease before each deletion; counts them in
/// `report`.
pub(super) fn delete(
    repo: &Repository,
    lease: Option<&Lease>,
    deletions: &Deletions,
    report: &mut super::PruneReport,
) -> Result<()> {
    let packs: Vec<String> = deletions
        .packs
        .iter()
        .map(|(p, _, _)| pack::pack_key(p))
        .collect();
    let files: Vec<String> = deletions
        .files
        .iter()
        .map(|f| format!("index/{f}"))
        .collect();
    let storage = repo.storage();
    let check = || lease.map_or(Ok(()), Lease::check);
    let both: Vec<String> = packs.iter().chain(&files).cloned().collect();
    delete_each(storage, &both, check)?;
    report.packs_deleted += packs.len();
    report.index_files_deleted += files.len();
    delete_each(storage, &deletions.plans, check)?;
    report.plans_carried_out += deletions.plans.len();
    Ok(())
}

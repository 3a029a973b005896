//! `prune`: remove data that no snapshot needs, without ever making a backup wait.
//!
//! One pass, under the maintenance lease ([`crate::format::lease`]):
//!
//! 1. **Load** every snapshot, then the index (live files and deletion plans), then the pack
//!    listing, in that order.
//! 2. **Mark** every blob reachable from a snapshot, as one bit per index position.
//! 3. **Decide due plans** (phase 2): a plan whose index deadline is a grace period past has
//!    each pack deleted unless a live index lists it again, a plan not yet due also lists it, or a
//!    snapshot written since needs a blob whose only copy is in it (then it is re-indexed
//!    instead); its index files are deleted if a present index file supersedes them.
//! 4. **Condemn** (phase 1): packs no snapshot uses, packs whose unused share exceeds
//!    `max_unused` (their used blobs are first copied to new packs), and packs in no index.
//! 5. **Write** the new packs and their index, then the new deletion plan, then (before the
//!    plan's index deadline) one index file that supersedes every index file naming a condemned
//!    pack and lists the packs re-indexed in step 3, and only then
//! 6. **Delete** what step 3 decided, checking the lease before every deletion.
//!
//! Every step can be interrupted; the next prune finishes the job. Why this is safe while
//! backups run is argued in docs/maintenance.md. Memory: the index (about 52 bytes a blob), one
//! bit a blob for the marks, a small record per pack, and while repacking one run of used
//! neighbouring blobs (at most 8 MiB) per reading thread; with a zero grace period, the ids of
//! the reachable blobs (32 bytes each, at most 2^20 of them) kept for the second pass.

use crate::error::{Error, Result};
use crate::format::id::{IndexId, PackId};
use crate::format::index::{IndexFile, MasterIndex};
use crate::format::lease::{Lease, LeaseOptions};
use crate::format::pack::{self, BlobKind, PackedBlob, SealedBlob};
use crate::format::plan::{self, DeletionPlan};
use crate::format::snapshot;
use crate::format::tree::Tree;
use crate::repository::writer::BlobWriter;
use crate::repository::Repository;
use crate::storage::Storage;
use coffer_crypto::MasterKeys;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How prune behaves.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Repack a pack when more than this fraction of its bytes is unused (0.0 to 1.0).
    pub max_unused: f64,
    /// Condemned objects are deleted by a prune that runs at least this long after they were
    /// condemned. Must exceed the longest backup. Zero deletes in the same run (only safe when
    /// no backup runs).
    pub grace: Duration,
    /// Decide and report, change nothing (no lease taken).
    pub dry_run: bool,
    pub lease: LeaseOptions,
    pub cancel: Arc<AtomicBool>,
}

/// One object prune removes or would remove.
#[derive(Clone, Debug, Serialize)]
pub struct Removal {
    /// Storage key, e.g. `data/ab/ab12...`.
    pub object: String,
    pub bytes: u64,
    /// Why: `unused`, `repacked`, `not indexed`, `superseded`.
    pub reason: String,
    /// `now` (a due plan) or `after grace` (condemned by this run).
    pub when: &'static str,
}

/// What prune found and did (summed over its passes).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub packs: usize,
    pub pack_bytes: u64,
    /// Blobs reachable from a snapshot.
    pub blobs_used: u64,
    /// Stored bytes of the reachable blobs.
    pub bytes_used: u64,
    pub packs_repacked: usize,
    pub blobs_repacked: u64,
    pub bytes_repacked: u64,
    pub packs_written: usize,
    /// Packs condemned by this run (deleted after the grace period).
    pub packs_condemned: usize,
    pub bytes_condemned: u64,
    pub index_files_superseded: usize,
    /// Packs of due plans that a snapshot still needed, put back into the index.
    pub packs_reindexed: usize,
    /// Deleted now (on a dry run: would be).
    pub packs_deleted: usize,
    pub index_files_deleted: usize,
    pub plans_carried_out: usize,
    /// Bytes freed by the deletions (or that would be, on a dry run).
    pub bytes_deleted: u64,
    /// Plans still waiting for their grace period.
    pub plans_pending: usize,
    pub removals: Vec<Removal>,
    /// Deletion plans that cannot be read, treated as absent (named, with why).
    pub warnings: Vec<String>,
}

/// Runs prune. With a zero grace period, a second pass carries out the plan the first wrote.
pub fn prune(repo: &Repository, options: &PruneOptions) -> Result<PruneReport> {
    if !(0.0..=1.0).contains(&options.max_unused) {
        return Err(Error::InvalidInput(format!(
            "max-unused must be between 0% and 100%, got {}",
            options.max_unused * 100.0
        )));
    }
    let mut report = PruneReport {
        dry_run: options.dry_run,
        ..PruneReport::default()
    };
    if options.dry_run {
        pass(repo, None, options, &mut report, None)?;
        return Ok(report);
    }
    let lease = Lease::acquire(repo.storage(), repo.keys(), options.lease.clone())?;
    let (wrote_plan, reachable) = pass(repo, Some(&lease), options, &mut report, None)?;
    if wrote_plan && options.grace.is_zero() {
        let mut second = PruneReport::default();
        pass(repo, Some(&lease), options, &mut second, reachable.as_ref())?;
        report.packs_reindexed += second.packs_reindexed;
        report.packs_deleted += second.packs_deleted;
        report.index_files_deleted += second.index_files_deleted;
        report.plans_carried_out += second.plans_carried_out;
        report.bytes_deleted += second.bytes_deleted;
        report.plans_pending = second.plans_pending;
        report.warnings = second.warnings;
        report.removals = second.removals;
    }
    lease.release()?;
    Ok(report)
}

/// The live index files and which packs each names, plus the loaded index (live and pending).
struct Loaded {
    index: MasterIndex,
    /// Live index files with the packs each lists.
    files: Vec<(IndexId, Vec<PackId>)>,
    /// Every index file present that a present index file supersedes.
    superseded: HashSet<IndexId>,
    plans: Vec<(String, DeletionPlan)>,
    /// Warnings about deletion plans that cannot be read.
    damaged_plans: Vec<String>,
    /// Sum of the stored lengths of every blob a live index lists in each pack (duplicates
    /// included): the pack's size minus its header.
    blob_bytes: HashMap<PackId, u64>,
}

fn load(storage: &Storage, keys: &MasterKeys) -> Result<Loaded> {
    let mut all = Vec::new();
    // Newest first, as `MasterIndex::load` reads them.
    for id in crate::format::index::list_ids_newest_first(storage)? {
        match IndexFile::load(storage, keys, &id) {
            Ok(file) => all.push((id, file)),
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    let superseded: HashSet<IndexId> = all
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut index = MasterIndex::default();
    let mut files = Vec::new();
    let mut blob_bytes: HashMap<PackId, u64> = HashMap::new();
    for (id, file) in all {
        if superseded.contains(&id) {
            continue;
        }
        let mut packs = Vec::with_capacity(file.packs.len());
        for (pack, blobs) in &file.packs {
            index.add_pack(*pack, blobs);
            packs.push(*pack);
            blob_bytes
                .entry(*pack)
                .or_insert_with(|| blobs.iter().map(|b| u64::from(b.length)).sum());
        }
        files.push((id, packs));
    }
    // A damaged plan is treated as absent (docs/maintenance.md, "Damaged deletion plans").
    let plans = plan::load_all(storage, keys)?;
    let damaged_plans = plans.damage_warnings();
    let plans = plans.good;
    for (_, p) in &plans {
        for (pack, blobs) in &p.packs {
            index.add_pending_pack(*pack, blobs);
        }
    }
    index.sort();
    Ok(Loaded {
        index,
        files,
        superseded,
        plans,
        damaged_plans,
        blob_bytes,
    })
}

/// How long after writing a plan prune may still write the index that supersedes the
/// condemned packs' index files: a tenth of the grace period, between 1 s and 60 s (zero for a
/// zero grace period, which promises nothing about concurrent backups).
fn index_window(grace: Duration) -> jiff::SignedDuration {
    if grace.is_zero() {
        return jiff::SignedDuration::ZERO;
    }
    let tenth = (grace / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    jiff::SignedDuration::try_from(tenth).unwrap_or(jiff::SignedDuration::from_secs(60))
}

/// How old a pack that no index names must be before prune may condemn or delete it: a
/// running backup uploads its packs before the index file naming them, so a young unindexed
/// pack may be one it is about to index (P4a in docs/maintenance.md). Judged by the store's
/// modification time, whatever the grace period.
pub const MIN_UNINDEXED_AGE: Duration = Duration::from_secs(3600);

/// Whether an unindexed pack last modified at `modified` is old enough, at `now`, to be
/// condemned. A time in the future (clocks that disagree) is young.
fn old_enough_unindexed(modified: jiff::Timestamp, now: jiff::Timestamp) -> bool {
    let age = jiff::SignedDuration::try_from(MIN_UNINDEXED_AGE)
        .unwrap_or(jiff::SignedDuration::from_hours(1));
    now.checked_sub(age).is_ok_and(|limit| modified <= limit)
}

/// Splits blobs sorted by offset into runs that lie back to back, each at most 8 MiB long (a
/// larger blob is a run of its own).
fn blob_runs(blobs: Vec<PackedBlob>) -> Vec<Vec<PackedBlob>> {
    const MAX_RUN: u64 = 8 << 20;
    let mut runs: Vec<Vec<PackedBlob>> = Vec::new();
    for blob in blobs {
        if let Some(run) = runs.last_mut() {
            let (start, end) = run_span(run);
            if end == u64::from(blob.offset) && end + u64::from(blob.length) - start <= MAX_RUN {
                run.push(blob);
                continue;
            }
        }
        runs.push(vec![blob]);
    }
    runs
}

/// The byte range a non-empty run of back-to-back blobs covers.
fn run_span(run: &[PackedBlob]) -> (u64, u64) {
    match (run.first(), run.last()) {
        (Some(first), Some(last)) => (
            u64::from(first.offset),
            u64::from(last.offset) + u64::from(last.length),
        ),
        _ => (0, 0),
    }
}

/// One bit per index position.
struct Marks(Vec<u64>);

impl Marks {
    fn new(n: usize) -> Marks {
        Marks(vec![0; n.div_ceil(64)])
    }
    /// Sets bit `i`; true if it was clear.
    fn set(&mut self, i: usize) -> bool {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let was = self.0[word] & bit != 0;
        self.0[word] |= bit;
        !was
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1u64 << (i % 64)) != 0
    }
    /// How many bits are set.
    fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// Reads a tree through `index` (which may differ from the repository's, loaded before the
/// lease was taken).
pub(crate) fn load_tree(
    storage: &Storage,
    keys: &MasterKeys,
    index: &MasterIndex,
    id: &crate::format::id::BlobId,
) -> Result<Tree> {
    let loc = index.get(id).ok_or_else(|| Error::Missing {
        what: "tree",
        id: format!("{id} (not in any index)"),
    })?;
    if loc.blob.kind != BlobKind::Tree {
        return Err(Error::corrupt(
            "tree",
            id,
            "the index lists it as a data blob",
        ));
    }
    let start = u64::from(loc.blob.offset);
    let bytes = storage.get_range(
        "pack",
        &pack::pack_key(&loc.pack),
        start..start + u64::from(loc.blob.length),
    )?;
    Tree::decode(id, &pack::open_blob(keys, &loc.pack, &loc.blob, &bytes)?)
}

/// The root tree of every snapshot. Read before the index: a snapshot is written after its
/// index, so every snapshot seen here has its blobs in the index loaded next.
fn snapshot_roots(
    storage: &Storage,
    keys: &MasterKeys,
) -> Result<Vec<(crate::format::id::SnapshotId, crate::format::id::BlobId)>> {
    let mut out = Vec::new();
    for id in snapshot::list_ids(storage)? {
        match snapshot::Snapshot::load(storage, keys, &id) {
            Ok(s) => out.push((id, s.tree)),
            // Forgotten while we listed: nothing to keep for it.
            Err(Error::Missing { .. }) => continue,
            // What it references is unknown, so nothing may be judged unused.
            Err(Error::Corrupt { reason, .. }) => {
                return Err(Error::corrupt(
                    "snapshot",
                    id,
                    format!(
                        "{reason}; prune cannot tell which data it needs and refuses to run: put \
                         back an intact copy of snapshots/{id}, or remove it with `coffer forget {id}`"
                    ),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Marks every blob reachable from the snapshots; refuses if one is in no index.
fn mark(
    storage: &Storage,
    keys: &MasterKeys,
    index: &MasterIndex,
    roots: &[(crate::format::id::SnapshotId, crate::format::id::BlobId)],
    cancel: &AtomicBool,
) -> Result<Marks> {
    let mut marks = Marks::new(index.len());
    for (id, root) in roots {
        let refuse = |what: &str, blob: &crate::format::id::BlobId| Error::Missing {
            what: "blob",
            id: format!("{blob} ({what} of snapshot {}, in no index)", id.short()),
        };
        let mut stack = vec![*root];
        while let Some(tree_id) = stack.pop() {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let pos = index
                .position(&tree_id)
                .ok_or_else(|| refuse("tree", &tree_id))?;
            if !marks.set(pos) {
                continue;
            }
            let tree = load_tree(storage, keys, index, &tree_id)?;
            for node in tree.nodes {
                for blob in &node.content {
                    let pos = index.position(blob).ok_or_else(|| refuse("data", blob))?;
                    marks.set(pos);
                }
                if let Some(sub) = node.subtree {
                    stack.push(sub);
                }
            }
        }
    }
    Ok(marks)
}

/// What one pass found reachable, for the pass that follows it: the snapshots (id and root
/// tree, sorted) and every blob reachable from them (sorted). Trees never change (a tree's id is
/// the hash of its content), so from the same snapshots the same blobs are reachable, and the
/// next pass need not read the trees again; it still looks every one of them up in the index
/// it loads, and refuses to go on if one is missing.
struct Reachable {
    roots: Vec<(crate::format::id::SnapshotId, crate::format::id::BlobId)>,
    blobs: Vec<crate::format::id::BlobId>,
}

impl Reachable {
    /// Kept for the next pass only up to this many blobs (32 MiB of ids); beyond that the next
    /// pass reads the trees again rather than hold the ids beside the index.
    const MAX_BLOBS: usize = 1 << 20;

    /// The blobs marked in `index`, if there are few enough to keep.
    fn collect(
        mut roots: Vec<(crate::format::id::SnapshotId, crate::format::id::BlobId)>,
        index: &MasterIndex,
        marks: &Marks,
    ) -> Option<Reachable> {
        let count = marks.count();
        if count > Self::MAX_BLOBS {
            return None;
        }
        roots.sort();
        let mut blobs = Vec::with_capacity(count);
        blobs.extend(
            index
                .iter()
                .enumerate()
                .filter(|(pos, _)| marks.get(*pos))
                .map(|(_, (loc, _))| loc.blob.id),
        );
        Some(Reachable { roots, blobs })
    }

    /// Marks the same blobs in `index` (which may differ from the one they were found in);
    /// refuses if one is in no index.
    fn mark(&self, index: &MasterIndex, cancel: &AtomicBool) -> Result<Marks> {
        let mut marks = Marks::new(index.len());
        for (n, blob) in self.blobs.iter().enumerate() {
            if n % 4096 == 0 && cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let pos = index.position(blob).ok_or_else(|| Error::Missing {
                what: "blob",
                id: format!("{blob} (reachable from a snapshot, in no index)"),
            })?;
            marks.set(pos);
        }
        Ok(marks)
    }
}

#[derive(Default, Clone, Copy)]
struct PackUse {
    used_blobs: u64,
    used_bytes: u64,
}

enum Fate {
    Keep,
    Repack,
    Condemn(&'static str),
}

/// One pass; returns whether it wrote a deletion plan and, when it did and a second pass
/// follows (zero grace), what it found reachable. `before` is what the pass before found: if
/// the snapshots are the same, their blobs are marked without reading the trees again.
fn pass(
    repo: &Repository,
    lease: Option<&Lease>,
    options: &PruneOptions,
    report: &mut PruneReport,
    before: Option<&Reachable>,
) -> Result<(bool, Option<Reachable>)> {
    let storage = repo.storage();
    let keys = repo.keys();
    let cancel = &options.cancel;
    // Order matters: snapshots, then the index, then the pack listing (docs/maintenance.md),
    // each listed afresh (not from listings this handle made before the lease was taken).
    storage.forget_listings();
    let roots = snapshot_roots(storage, keys)?;
    report.snapshots = roots.len();
    let loaded = load(storage, keys)?;
    report.warnings.clone_from(&loaded.damaged_plans);
    let index = &loaded.index;
    let listed = repo.list_packs_with_times()?;
    let present: HashMap<PackId, u64> = listed.iter().map(|(id, size, _)| (*id, *size)).collect();
    // Packs too young to be condemned or deleted while no index names them: a running
    // backup's fresh packs, whatever the grace period (P4a).
    let listed_at = jiff::Timestamp::now();
    let young: HashSet<PackId> = listed
        .iter()
        .filter(|(_, _, modified)| !old_enough_unindexed(*modified, listed_at))
        .map(|(id, _, _)| *id)
        .collect();
    report.packs = present.len();
    report.pack_bytes = present.values().sum();
    let same_snapshots = before.filter(|b| {
        let mut now = roots.clone();
        now.sort();
        b.roots == now
    });
    let marks = match same_snapshots {
        Some(b) => b.mark(index, cancel)?,
        None => mark(storage, keys, index, &roots, cancel)?,
    };

    // Per-pack use, counting each blob once, in the copy the index chose.
    let mut usage: HashMap<PackId, PackUse> = HashMap::new();
    for (pos, (loc, _pending)) in index.iter().enumerate() {
        let u = usage.entry(loc.pack).or_default();
        if marks.get(pos) {
            u.used_blobs += 1;
            u.used_bytes += u64::from(loc.blob.length);
            report.blobs_used += 1;
            report.bytes_used += u64::from(loc.blob.length);
        }
    }
    let live_packs: HashSet<PackId> = loaded
        .files
        .iter()
        .flat_map(|(_, packs)| packs.iter().copied())
        .collect();
    // Whether the copy the index chose for a blob of `pack` is a marked, pending one in `pack`.
    let needs = |pack: &PackId, blobs: &[PackedBlob]| {
        blobs.iter().any(|b| {
            index.position(&b.id).is_some_and(|pos| {
                marks.get(pos)
                    && index
                        .at(pos)
                        .is_some_and(|(loc, pending)| pending && loc.pack == *pack)
            })
        })
    };

    // Phase 2: decide the due plans.
    let now = jiff::Timestamp::now();
    let grace = jiff::SignedDuration::try_from(options.grace)
        .map_err(|e| Error::InvalidInput(format!("grace period: {e}")))?;
    let mut due_keys = Vec::new();
    let mut delete_packs: Vec<(PackId, u64, String)> = Vec::new();
    let mut delete_files: Vec<IndexId> = Vec::new();
    let mut reindex: Vec<(PackId, Vec<PackedBlob>)> = Vec::new();
    // Counted from the latest moment the planning prune could have superseded the condemned
    // packs' index files (docs/maintenance.md, D1 and P6).
    // A zero grace period promises nothing about running backups: every plan is due.
    let is_due = |p: &DeletionPlan| {
        grace.is_zero()
            || p.index_deadline
                .checked_add(grace)
                .is_ok_and(|due| due <= now)
    };
    // D1: a pack that a plan still waiting lists is left to that plan.
    let mut pending_packs: HashSet<PackId> = HashSet::new();
    for (_, p) in loaded.plans.iter().filter(|(_, p)| !is_due(p)) {
        report.plans_pending += 1;
        pending_packs.extend(p.packs.iter().map(|(id, _)| *id));
    }
    let mut decided: HashSet<PackId> = HashSet::new();
    for (key, p) in loaded.plans.iter().filter(|(_, p)| is_due(p)) {
        due_keys.push(key.clone());
        for (pack, blobs) in &p.packs {
            if live_packs.contains(pack) || pending_packs.contains(pack) || !decided.insert(*pack) {
                // Indexed again, still waiting in another plan, or decided already.
                continue;
            }
            if needs(pack, blobs) {
                if present.contains_key(pack) {
                    reindex.push((*pack, blobs.clone()));
                }
                continue;
            }
            // P4a: a pack condemned while in no index (no blob entries) and still young is
            // left for a later prune (plans written before this rule existed).
            if blobs.is_empty() && young.contains(pack) {
                continue;
            }
            if let Some(size) = present.get(pack) {
                delete_packs.push((*pack, *size, "condemned".into()));
            }
        }
        for file in &p.index_files {
            if loaded.superseded.contains(file) && !delete_files.contains(file) {
                delete_files.push(*file);
            }
        }
    }
    // Packs a due plan keeps (re-indexed) are not candidates for a new plan in this pass.
    let reindexed: HashSet<PackId> = reindex.iter().map(|(id, _)| *id).collect();
    let deleting: HashSet<PackId> = delete_packs.iter().map(|(id, _, _)| *id).collect();

    // Phase 1: the fate of every live pack, and packs in no index.
    let mut fates: HashMap<PackId, Fate> = HashMap::new();
    for pack in &live_packs {
        let u = usage.get(pack).copied().unwrap_or_default();
        let fate = match present.get(pack) {
            None if u.used_blobs > 0 => {
                return Err(Error::Missing {
                    what: "pack",
                    id: format!("{pack} (it holds blobs that snapshots need)"),
                })
            }
            None => Fate::Condemn("missing"),
            Some(_) if u.used_blobs == 0 => Fate::Condemn("unused"),
            Some(&size) => {
                // The header is overhead, not waste: only unused blobs count.
                let blobs = loaded.blob_bytes.get(pack).copied().unwrap_or(size);
                let unused = blobs.saturating_sub(u.used_bytes) as f64 / size.max(1) as f64;
                if unused > options.max_unused {
                    Fate::Repack
                } else {
                    Fate::Keep
                }
            }
        };
        fates.insert(*pack, fate);
    }
    let mut unindexed: Vec<PackId> = present
        .keys()
        .filter(|p| {
            !live_packs.contains(p)
                && !pending_packs.contains(p)
                && !reindexed.contains(p)
                && !deleting.contains(p)
                && !decided.contains(p)
                && !young.contains(p)
        })
        .copied()
        .collect();
    unindexed.sort();

    let condemned_now =
        |pack: &PackId| matches!(fates.get(pack), Some(Fate::Condemn(_) | Fate::Repack));
    let affected: Vec<IndexId> = loaded
        .files
        .iter()
        .filter(|(_, packs)| packs.iter().any(condemned_now))
        .map(|(id, _)| *id)
        .collect();

    for (pack, fate) in &fates {
        let size = present.get(pack).copied().unwrap_or(0);
        let reason = match fate {
            Fate::Keep => continue,
            Fate::Repack => {
                report.packs_repacked += 1;
                "repacked"
            }
            Fate::Condemn(why) => why,
        };
        report.packs_condemned += 1;
        report.bytes_condemned += size;
        if size > 0 {
            report.removals.push(Removal {
                object: pack::pack_key(pack),
                bytes: size,
                reason: reason.into(),
                when: "after grace",
            });
        }
    }
    for pack in &unindexed {
        let size = present.get(pack).copied().unwrap_or(0);
        report.packs_condemned += 1;
        report.bytes_condemned += size;
        report.removals.push(Removal {
            object: pack::pack_key(pack),
            bytes: size,
            reason: "not indexed".into(),
            when: "after grace",
        });
    }
    for (pack, size, reason) in &delete_packs {
        report.removals.push(Removal {
            object: pack::pack_key(pack),
            bytes: *size,
            reason: reason.clone(),
            when: "now",
        });
        report.bytes_deleted += size;
    }
    for file in &delete_files {
        report.removals.push(Removal {
            object: format!("index/{file}"),
            bytes: 0,
            reason: "superseded".into(),
            when: "now",
        });
    }
    report.index_files_superseded = affected.len();
    report.packs_reindexed = reindex.len();
    for (pos, (loc, _)) in index.iter().enumerate() {
        if marks.get(pos) && matches!(fates.get(&loc.pack), Some(Fate::Repack)) {
            report.blobs_repacked += 1;
            report.bytes_repacked += u64::from(loc.blob.length);
        }
    }
    report
        .removals
        .sort_by(|a, b| a.when.cmp(b.when).then(a.object.cmp(&b.object)));
    if options.dry_run {
        report.packs_deleted = delete_packs.len();
        report.index_files_deleted = delete_files.len();
        report.plans_carried_out = due_keys.len();
        return Ok((false, None));
    }
    if cancel.load(Ordering::SeqCst) {
        return Err(Error::Interrupted);
    }

    // Step 5a: copy the used blobs out of packs being repacked; `finish` writes their index.
    let mut to_repack: Vec<PackId> = fates
        .iter()
        .filter(|(_, f)| matches!(f, Fate::Repack))
        .map(|(p, _)| *p)
        .collect();
    to_repack.sort();
    if !to_repack.is_empty() {
        let mut wanted: HashMap<PackId, Vec<PackedBlob>> = HashMap::new();
        for (pos, (loc, _)) in index.iter().enumerate() {
            if marks.get(pos) && matches!(fates.get(&loc.pack), Some(Fate::Repack)) {
                wanted.entry(loc.pack).or_default().push(loc.blob);
            }
        }
        // Only the used blobs are read: runs of neighbours in one ranged read each.
        let runs: Vec<(PackId, Vec<PackedBlob>)> = to_repack
            .iter()
            .flat_map(|pack_id| {
                let mut blobs = wanted.remove(pack_id).unwrap_or_default();
                blobs.sort_by_key(|b| b.offset);
                blob_runs(blobs).into_iter().map(move |run| (*pack_id, run))
            })
            .collect();
        // Runs of 256 KiB or more are read directly (around the page cache: read once); the
        // smaller ones are asked for ahead.
        for (pack_id, run) in &runs {
            let (start, end) = run_span(run);
            if end - start < crate::fs::direct::WORTH_IT as u64 {
                storage.prefetch(&pack::pack_key(pack_id), start..end);
            }
        }
        let writer = BlobWriter::new(repo, storage.connections(), cancel.clone())?;
        // Several runs are read and authenticated at once; the writer takes blobs from any thread.
        // One thread more than the cores where direct reads wait for the disk.
        let stop = AtomicBool::new(false);
        let threads = crate::repository::parallel::threads_for_reading(storage);
        let results = crate::repository::parallel::map(&runs, threads, &stop, |(pack_id, run)| {
            let result = (|| {
                if cancel.load(Ordering::SeqCst) {
                    return Err(Error::Interrupted);
                }
                let (start, end) = run_span(run);
                storage.with_range_direct("pack", &pack::pack_key(pack_id), start..end, |bytes| {
                    for blob in run {
                        let from = (u64::from(blob.offset) - start) as usize;
                        let sealed = &bytes[from..from + blob.length as usize];
                        // Authenticated (every byte as sealed for this id, kind and
                        // compression), then moved as it is: sealed bytes do not depend on
                        // their pack, so nothing is decompressed, hashed or compressed again.
                        pack::authenticate_blob(keys, pack_id, blob, sealed)?;
                        writer.store_sealed(SealedBlob {
                            kind: blob.kind,
                            compression: blob.compression,
                            id: blob.id,
                            raw_length: blob.raw_length,
                            bytes: sealed.to_vec(),
                        })?;
                    }
                    Ok(())
                })
            })();
            if result.is_err() {
                stop.store(true, Ordering::SeqCst);
            }
            result
        });
        if let Some(e) = results.into_iter().flatten().find_map(|r| r.err()) {
            return Err(writer.explain(e));
        }
        if cancel.load(Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        let written = writer.finish()?;
        report.packs_written += written.packs.len();
    }

    // Step 5b: the plan, before the index that drops the condemned packs.
    let mut plan_packs: Vec<(PackId, Vec<PackedBlob>)> = Vec::new();
    let mut kept: Vec<(PackId, Vec<PackedBlob>)> = Vec::new();
    let mut seen_kept: HashSet<PackId> = HashSet::new();
    let mut seen_planned: HashSet<PackId> = HashSet::new();
    for file_id in &affected {
        let file = IndexFile::load(storage, keys, file_id)?;
        for (pack, blobs) in file.packs {
            if condemned_now(&pack) {
                if present.contains_key(&pack) && seen_planned.insert(pack) {
                    plan_packs.push((pack, blobs));
                }
            } else if seen_kept.insert(pack) {
                kept.push((pack, blobs));
            }
        }
    }
    plan_packs.extend(unindexed.iter().map(|p| (*p, Vec::new())));
    let wrote_plan = !plan_packs.is_empty() || !affected.is_empty();
    let created = jiff::Timestamp::now();
    let window = index_window(options.grace);
    let index_deadline = created
        .checked_add(window)
        .map_err(|e| Error::InvalidInput(format!("plan deadline: {e}")))?;
    let check = || lease.map_or(Ok(()), Lease::check);
    if wrote_plan {
        check()?;
        DeletionPlan {
            created,
            index_deadline,
            index_files: affected.clone(),
            packs: plan_packs,
        }
        .save(storage, keys)?;
    }

    // Step 5c: one index file replacing every affected one, plus re-indexed packs.
    for (pack, blobs) in reindex {
        if seen_kept.insert(pack) {
            kept.push((pack, blobs));
        }
    }
    if !affected.is_empty() || !kept.is_empty() {
        // P6: past the plan's deadline, a backup that loaded the index since the plan was
        // written could outlive the grace period counted from the deadline. Stop instead: the
        // condemned packs stay live, the plan is harmless, and the next prune starts over.
        if wrote_plan && !options.grace.is_zero() && jiff::Timestamp::now() > index_deadline {
            return Err(Error::InvalidInput(format!(
                "prune took longer than {window:#} between writing its deletion plan and its \
                 index; nothing was removed, run prune again"
            )));
        }
        check()?;
        IndexFile {
            supersedes: affected,
            packs: kept,
        }
        .save(storage, keys)?;
    }

    // Step 6: delete what the due plans condemned, checking the lease before each deletion:
    // the packs, several at once, then the index files, then the plans carried out.
    let stop = AtomicBool::new(false);
    let threads = crate::repository::parallel::threads_for(storage.connections());
    let deleted =
        crate::repository::parallel::map(&delete_packs, threads, &stop, |(pack, _, _)| {
            let result = check().and_then(|()| storage.delete(&pack::pack_key(pack)));
            if result.is_err() {
                stop.store(true, Ordering::SeqCst);
            }
            result
        });
    if let Some(e) = deleted.into_iter().flatten().find_map(|r| r.err()) {
        return Err(e);
    }
    report.packs_deleted += delete_packs.len();
    for file in &delete_files {
        check()?;
        storage.delete(&format!("index/{file}"))?;
        report.index_files_deleted += 1;
    }
    for key in &due_keys {
        check()?;
        storage.delete(key)?;
        report.plans_carried_out += 1;
    }
    let reachable = if wrote_plan && options.grace.is_zero() {
        Reachable::collect(roots, index, &marks)
    } else {
        None
    };
    Ok((wrote_plan, reachable))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> Repository {
        crate::repository::test_repo()
    }

    fn options(grace_secs: u64) -> PruneOptions {
        let mut lease = LeaseOptions::new("prune", "test-host");
        lease.refresh = Duration::from_secs(3600);
        PruneOptions {
            max_unused: 0.05,
            grace: Duration::from_secs(grace_secs),
            dry_run: false,
            lease,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// D1: a pack listed by a due plan and by one not yet due waits for the younger one; and
    /// D3: an index file in a due plan that nothing supersedes is kept.
    #[test]
    fn a_pack_waits_for_every_plan_that_lists_it() {
        let repo = repo();
        let (storage, keys) = (repo.storage(), repo.keys());
        let writer = BlobWriter::new(&repo, 1, Arc::new(AtomicBool::new(false))).unwrap();
        let mut compressor = writer.compressor();
        writer
            .store(
                &mut compressor,
                crate::format::compress::BlobClass::FileData,
                b"no snapshot needs this",
            )
            .unwrap();
        let written = writer.finish().unwrap();
        let (pack, blobs) = written.packs[0].clone();
        let index_id = written.index.unwrap();
        let key = pack::pack_key(&pack);
        // The pack leaves the live index, as a prune's superseding index would make it.
        IndexFile {
            supersedes: vec![index_id],
            packs: vec![],
        }
        .save(storage, keys)
        .unwrap();
        let hours_ago = |h: i64| {
            jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_hours(h))
                .unwrap()
        };
        let plan = |at: jiff::Timestamp, files: Vec<IndexId>| DeletionPlan {
            created: at,
            index_deadline: at,
            index_files: files,
            packs: vec![(pack, blobs.clone())],
        };
        plan(hours_ago(3), vec![index_id])
            .save(storage, keys)
            .unwrap();
        plan(jiff::Timestamp::now(), vec![])
            .save(storage, keys)
            .unwrap();
        // The pending pack is still readable for restores.
        let index = MasterIndex::load(storage, keys).unwrap();
        assert!(index.get(&blobs[0].id).is_some() && !index.contains(&blobs[0].id));

        let report = prune(&repo, &options(3600)).unwrap();
        assert_eq!(report.packs_deleted, 0, "{report:?}");
        assert_eq!(report.plans_carried_out, 1);
        assert_eq!(report.plans_pending, 1);
        assert!(storage.size(&key).unwrap().is_some());
        // The superseded index file in the due plan went; the plan that waits keeps the pack.
        assert_eq!(report.index_files_deleted, 1);

        // Once every plan listing it is due, it goes.
        let report = prune(&repo, &options(0)).unwrap();
        assert_eq!(report.packs_deleted, 1, "{report:?}");
        assert!(storage.size(&key).unwrap().is_none());
        assert!(plan::load_all(storage, keys).unwrap().good.is_empty());
    }

    /// D1: a pack still in the live index is never deleted, even if a due plan lists it (a
    /// prune that stopped between its plan and its index); P6's index file of a due plan that
    /// nothing supersedes stays.
    #[test]
    fn a_due_plan_never_deletes_what_the_live_index_still_names() {
        let repo = repo();
        let (storage, keys) = (repo.storage(), repo.keys());
        let writer = BlobWriter::new(&repo, 1, Arc::new(AtomicBool::new(false))).unwrap();
        let mut compressor = writer.compressor();
        writer
            .store(
                &mut compressor,
                crate::format::compress::BlobClass::FileData,
                b"still indexed",
            )
            .unwrap();
        let written = writer.finish().unwrap();
        let (pack, blobs) = written.packs[0].clone();
        let index_id = written.index.unwrap();
        let long_ago = jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_hours(48))
            .unwrap();
        DeletionPlan {
            created: long_ago,
            index_deadline: long_ago,
            index_files: vec![index_id],
            packs: vec![(pack, blobs)],
        }
        .save(storage, keys)
        .unwrap();
        let report = prune(&repo, &options(3600)).unwrap();
        assert_eq!(report.packs_deleted, 0, "{report:?}");
        assert_eq!(report.index_files_deleted, 0);
        assert!(storage.size(&pack::pack_key(&pack)).unwrap().is_some());
        // It is unused, so this run condemned it afresh in a new plan.
        assert_eq!(report.packs_condemned, 1);
        assert_eq!(report.plans_carried_out, 1);
    }

    #[test]
    fn used_blobs_are_read_in_runs_of_neighbours_of_at_most_8_mib() {
        let blob = |offset: u32, length: u32| PackedBlob {
            kind: BlobKind::Data,
            compression: crate::format::pack::Compression::None,
            id: crate::format::id::BlobId([offset as u8; 32]),
            offset,
            length,
            raw_length: length,
        };
        let mib = 1 << 20;
        let blobs = vec![
            blob(0, 100),
            blob(100, 50), // touches the first: same run
            blob(200, 10), // a gap: new run
            blob(210, 4 * mib),
            blob(210 + 4 * mib, 4 * mib), // would pass 8 MiB: new run
            blob(210 + 8 * mib, 9 * mib), // larger than a run: alone
        ];
        let runs = blob_runs(blobs);
        let spans: Vec<(u64, u64)> = runs.iter().map(|r| run_span(r)).collect();
        let m = u64::from(mib);
        assert_eq!(
            spans,
            vec![
                (0, 150),
                (200, 210 + 4 * m),
                (210 + 4 * m, 210 + 8 * m),
                (210 + 8 * m, 210 + 17 * m)
            ]
        );
        assert_eq!(runs.iter().map(Vec::len).sum::<usize>(), 6);
        assert!(blob_runs(Vec::new()).is_empty());
    }

    /// The second pass of a zero-grace prune marks what the first found reachable in the
    /// index it loads itself, where positions differ, and refuses if a blob has gone missing.
    #[test]
    fn the_reachable_blobs_of_one_pass_are_marked_in_the_next_passs_index() {
        let blob = |n: u8| PackedBlob {
            kind: BlobKind::Data,
            compression: crate::format::pack::Compression::None,
            id: crate::format::id::BlobId([n; 32]),
            offset: u32::from(n) * 10,
            length: 10,
            raw_length: 10,
        };
        let index_of = |packs: &[(u8, Vec<u8>)]| {
            let mut index = MasterIndex::default();
            for (pack, blobs) in packs {
                let blobs: Vec<PackedBlob> = blobs.iter().map(|n| blob(*n)).collect();
                index.add_pack(PackId([*pack; 32]), &blobs);
            }
            index.sort();
            index
        };
        // First pass: blobs 1 to 6 in two packs; 2, 3 and 5 reachable.
        let first = index_of(&[(1, vec![1, 2, 3]), (2, vec![4, 5, 6])]);
        let mut marks = Marks::new(first.len());
        for n in [2, 3, 5] {
            marks.set(first.position(&blob(n).id).unwrap());
        }
        let roots = vec![(
            crate::format::id::SnapshotId([9; 32]),
            crate::format::id::BlobId([2; 32]),
        )];
        let reachable = Reachable::collect(roots.clone(), &first, &marks).unwrap();
        assert_eq!(reachable.roots, roots);
        assert_eq!(reachable.blobs.len(), 3);

        // Second pass: 2 and 5 were repacked together with a new blob 0 in front of them;
        // pack 1 is gone from the index, pack 2 stays.
        let second = index_of(&[(3, vec![0, 2, 3, 5]), (2, vec![4, 5, 6])]);
        let cancel = AtomicBool::new(false);
        let marked = reachable.mark(&second, &cancel).unwrap();
        let set: Vec<u8> = second
            .iter()
            .enumerate()
            .filter(|(pos, _)| marked.get(*pos))
            .map(|(_, (loc, _))| loc.blob.id.0[0])
            .collect();
        assert_eq!(set, vec![2, 3, 5]);
        assert_eq!(marked.count(), 3);

        // Blob 3 lost: refused, naming it.
        let broken = index_of(&[(3, vec![0, 2, 5]), (2, vec![4, 6])]);
        let err = reachable.mark(&broken, &cancel).err().unwrap().to_string();
        assert!(
            err.contains(&blob(3).id.to_hex()) && err.contains("in no index"),
            "{err}"
        );
        cancel.store(true, Ordering::SeqCst);
        assert!(matches!(
            reachable.mark(&second, &cancel),
            Err(Error::Interrupted)
        ));
    }

    /// Issue 13 item 5: a pack that no index names is a running backup's until it is an hour
    /// old by its storage time, so even `--grace 0s` neither condemns nor deletes it; once it
    /// is older, a zero-grace prune removes it in the same run.
    #[test]
    fn a_young_unindexed_pack_survives_a_zero_grace_prune() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().to_str().unwrap();
        let repo = Repository::init(
            Storage::open(location, crate::storage::OpenMode::Create).unwrap(),
            b"pw",
            &crate::repository::test_options(),
        )
        .unwrap();
        let writer = BlobWriter::new(&repo, 1, Arc::new(AtomicBool::new(false))).unwrap();
        let mut compressor = writer.compressor();
        writer
            .store(
                &mut compressor,
                crate::format::compress::BlobClass::FileData,
                b"a running backup's blob",
            )
            .unwrap();
        let written = writer.finish().unwrap();
        let (pack, _) = written.packs[0].clone();
        // As before the backup writes its index: the pack is in no index.
        repo.storage()
            .delete(&format!("index/{}", written.index.unwrap()))
            .unwrap();
        let key = pack::pack_key(&pack);

        let report = prune(&repo, &options(0)).unwrap();
        assert_eq!(report.packs_condemned, 0, "{report:?}");
        assert_eq!(report.packs_deleted, 0, "{report:?}");
        assert!(repo.storage().size(&key).unwrap().is_some());
        let plans = plan::load_all(repo.storage(), repo.keys()).unwrap();
        assert!(plans.good.is_empty() && plans.damaged.is_empty());

        // Two hours later (by its modification time) it is anybody's leftover: removed at once.
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join(&key))
            .unwrap();
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        drop(file);
        let report = prune(&repo, &options(0)).unwrap();
        assert_eq!(report.packs_deleted, 1, "{report:?}");
        assert!(repo.storage().size(&key).unwrap().is_none());
    }

    #[test]
    fn unindexed_packs_are_old_enough_after_an_hour() {
        let now = jiff::Timestamp::now();
        let ago = |s: i64| now.checked_sub(jiff::SignedDuration::from_secs(s)).unwrap();
        assert!(!old_enough_unindexed(now, now));
        assert!(!old_enough_unindexed(ago(3599), now));
        assert!(old_enough_unindexed(ago(3600), now));
        assert!(old_enough_unindexed(ago(86_400), now));
        // A future time (another clock) is young.
        assert!(!old_enough_unindexed(ago(-60), now));
    }

    #[test]
    fn marks_set_once() {
        let mut m = Marks::new(130);
        assert!(!m.get(129));
        assert!(m.set(129));
        assert!(!m.set(129));
        assert!(m.get(129) && !m.get(128) && !m.get(0));
    }

    #[test]
    fn index_window_is_a_tenth_of_grace_within_bounds() {
        let secs = |s: u64| index_window(Duration::from_secs(s)).as_secs();
        assert_eq!(secs(0), 0);
        assert_eq!(secs(2), 1);
        assert_eq!(secs(300), 30);
        assert_eq!(secs(24 * 3600), 60);
    }
}

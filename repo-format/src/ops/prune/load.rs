//! Step 1 of a prune pass: what the repository holds. The snapshots' root trees, every index
//! file and deletion plan (the plans beside the index files: only the lease holder writes
//! them), and the age rules that keep a running backup's fresh packs safe. In which order they
//! are read is the caller's (docs/maintenance.md, P2 and P2a).
//!
//! May use: `format/`, `storage/` and the stored-object reads of `repository::stored` (index
//! files, snapshots and plans read `--connections` at a time). Decides nothing.

use crate::error::{Error, Result};
use crate::format::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::format::index::{IndexFile, MasterIndex};
use crate::format::plan::{self, DeletionPlan};
use crate::format::snapshot;
use crate::repository::stored::load_each;
use crate::storage::Storage;
use coffer_crypto::MasterKeys;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// The live index files and which packs each names, plus the loaded index (live and pending).
pub(super) struct Loaded {
    pub index: MasterIndex,
    /// Live index files with the packs each lists.
    pub files: Vec<(IndexId, Vec<PackId>)>,
    /// Every index file present that a present index file supersedes.
    pub superseded: HashSet<IndexId>,
    pub plans: Vec<(String, DeletionPlan)>,
    /// Warnings about deletion plans that cannot be read.
    pub damaged_plans: Vec<String>,
    /// Packs that only checkpoint index files name (a running, or interrupted, writer's):
    /// while young they are not condemned (P4b).
    pub checkpoint_only: HashSet<PackId>,
    /// Sum of the stored lengths of every blob a live index lists in each pack (duplicates
    /// included): the pack's size minus its header.
    pub blob_bytes: HashMap<PackId, u64>,
}

pub(super) fn load(storage: &Storage, keys: &MasterKeys) -> Result<Loaded> {
    // Deletion plans are written only under the lease, so they may be read at any point of the
    // pass: beside the index files.
    let (plans, files) = std::thread::scope(|scope| {
        let plans = scope.spawn(|| plan::DeletionPlan::load_all(storage, keys));
        let files = index_files(storage, keys);
        let plans = plans
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (plans, files)
    });
    let all = files?;
    let superseded: HashSet<IndexId> = all
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut index = MasterIndex::default();
    let mut files = Vec::new();
    let mut blob_bytes: HashMap<PackId, u64> = HashMap::new();
    let (mut in_checkpoints, mut in_others) = (HashSet::new(), HashSet::new());
    for (id, file) in all {
        if superseded.contains(&id) {
            continue;
        }
        let named = if file.is_checkpoint() {
            &mut in_checkpoints
        } else {
            &mut in_others
        };
        named.extend(file.packs.iter().map(|(pack, _)| *pack));
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
    let plans = plans?;
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
        checkpoint_only: in_checkpoints.difference(&in_others).copied().collect(),
        plans,
        damaged_plans,
        blob_bytes,
    })
}

/// Every index file present, newest first (as `MasterIndex::load` reads them); one deleted
/// between listing and reading is left out.
fn index_files(storage: &Storage, keys: &MasterKeys) -> Result<Vec<(IndexId, IndexFile)>> {
    let mut all = Vec::new();
    let ids = IndexFile::list_ids_newest_first(storage)?;
    let loaded = load_each(storage, &ids, |id| IndexFile::load(storage, keys, id));
    for (id, result) in ids.into_iter().zip(loaded) {
        match result {
            Ok(file) => all.push((id, file)),
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(all)
}

/// How long after writing a plan prune may still write the index that supersedes the
/// condemned packs' index files: a tenth of the grace period, between 1 s and 60 s (zero for a
/// zero grace period, which promises nothing about concurrent backups).
pub(super) fn index_window(grace: Duration) -> jiff::SignedDuration {
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
pub(super) fn old_enough_unindexed(modified: jiff::Timestamp, now: jiff::Timestamp) -> bool {
    let age = jiff::SignedDuration::try_from(MIN_UNINDEXED_AGE)
        .unwrap_or(jiff::SignedDuration::from_hours(1));
    now.checked_sub(age).is_ok_and(|limit| modified <= limit)
}

/// The root tree of every snapshot. Read in order, before the index: a snapshot is written
/// after its index, so every snapshot seen here has its blobs in the index loaded next (P2).
pub(super) fn snapshot_roots(
    storage: &Storage,
    keys: &MasterKeys,
) -> Result<Vec<(SnapshotId, BlobId)>> {
    let mut out = Vec::new();
    let ids = snapshot::Snapshot::list_ids(storage)?;
    let loaded = load_each(storage, &ids, |id| {
        snapshot::Snapshot::load(storage, keys, id)
    });
    for (id, result) in ids.into_iter().zip(loaded) {
        match result {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn index_window_is_a_tenth_of_grace_within_bounds() {
        let secs = |s: u64| index_window(Duration::from_secs(s)).as_secs();
        assert_eq!(secs(0), 0);
        assert_eq!(secs(2), 1);
        assert_eq!(secs(300), 30);
        assert_eq!(secs(24 * 3600), 60);
    }
}

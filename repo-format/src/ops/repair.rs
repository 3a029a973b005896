//! `repair`: recover a repository after data was lost (a pack deleted by a storage fault or a
//! bad manual cleanup), in two steps.
//!
//! 1. [`repair_index`] rebuilds the index from the packs present: it reads and authenticates
//!    every pack's header, writes one index file naming exactly those packs (superseding every
//!    index file it read), then removes the old index files. Blob entries of missing packs are
//!    dropped, so later backups store that data again instead of deduplicating against it. It
//!    holds the maintenance lease, as prune does (docs/maintenance.md).
//! 2. [`repair_snapshots`] rewrites every snapshot that refers to blobs the repository no longer
//!    holds: a file with lost content is removed from its directory, a directory whose tree is
//!    lost becomes an empty directory, and each is listed. The new snapshot carries the tag
//!    `repaired` and the label `repaired-from` (the original's id); `forget` removes the
//!    originals. No stored format changes: the marks are an ordinary tag and labels.

use crate::error::{Error, Result};
use crate::format::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::format::index::IndexFile;
use crate::format::pack::{self, PackedBlob};
use crate::format::snapshot::{self, Snapshot};
use crate::format::tree::{NodeKind, Tree};
use crate::repository::lease::{Lease, LeaseOptions};
use crate::repository::writer::BlobWriter;
use crate::repository::Repository;
use crate::storage::Storage;
use coffer_crypto::MasterKeys;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// How `repair index` runs.
#[derive(Clone, Debug)]
pub struct RepairIndexOptions {
    pub lease: LeaseOptions,
    pub cancel: Arc<AtomicBool>,
}

/// A present pack whose header could not be read or authenticated: not indexed.
#[derive(Clone, Debug, Serialize)]
pub struct DamagedPack {
    pub pack: String,
    pub reason: String,
}

/// What `repair index` found and did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairIndexReport {
    /// Packs present in storage.
    pub packs: usize,
    /// Packs the new index names.
    pub packs_indexed: usize,
    /// Blobs the new index names.
    pub blobs_indexed: u64,
    /// Packs present but named by no index before, now indexed.
    pub packs_added: Vec<String>,
    /// Packs an index named that are missing: their entries were dropped.
    pub packs_dropped: Vec<String>,
    /// Blob entries dropped with them.
    pub blobs_dropped: u64,
    /// Present packs whose header is damaged: left out of the index (and in storage).
    pub packs_damaged: Vec<DamagedPack>,
    /// Packs only a deletion plan names: left to that plan, not indexed.
    pub packs_pending: usize,
    /// The index file written (none when there is no pack to index).
    pub index_written: Option<IndexId>,
    /// Old index files removed (damaged ones included).
    pub index_files_removed: usize,
}

/// Rebuilds the index from the packs present. See the module documentation.
pub fn repair_index(repo: &Repository, options: &RepairIndexOptions) -> Result<RepairIndexReport> {
    let storage = repo.storage();
    let keys = repo.keys();
    let lease = Lease::acquire(storage, keys, options.lease.clone())?;
    let result = rebuild(repo, &lease, &options.cancel);
    match result {
        Ok(report) => {
            lease.release()?;
            Ok(report)
        }
        Err(e) => {
            let _ = lease.release();
            Err(e)
        }
    }
}

fn rebuild(repo: &Repository, lease: &Lease, cancel: &AtomicBool) -> Result<RepairIndexReport> {
    let storage = repo.storage();
    let keys = repo.keys();
    let mut report = RepairIndexReport::default();
    // What the store holds now, not what this handle listed before the lease was taken.
    storage.forget_listings();

    // The index files (every one, to be replaced) and the packs the live ones name.
    let (old_files, named) = current_index(storage, keys)?;
    // Packs that only a deletion plan names stay the plan's (prune decides them).
    let mut planned: HashSet<PackId> = HashSet::new();
    // (A damaged plan names nothing readable: its packs are added like any unindexed pack.)
    for (_, p) in crate::format::plan::DeletionPlan::load_all(storage, keys)?.good {
        planned.extend(p.packs.iter().map(|(id, _)| *id));
    }

    let present = repo.list_packs()?;
    report.packs = present.len();
    let present_ids: HashSet<PackId> = present.iter().map(|(id, _)| *id).collect();
    let mut dropped: Vec<(PackId, u64)> = named
        .iter()
        .filter(|(pack, _)| !present_ids.contains(pack))
        .map(|(pack, n)| (*pack, *n))
        .collect();
    dropped.sort();
    report.blobs_dropped = dropped.iter().map(|(_, n)| n).sum();
    report.packs_dropped = dropped.iter().map(|(p, _)| p.to_hex()).collect();

    let work: Vec<(PackId, u64)> = present
        .into_iter()
        .filter(|(id, _)| {
            let pending_only = planned.contains(id) && !named.contains_key(id);
            report.packs_pending += usize::from(pending_only);
            !pending_only
        })
        .collect();
    let stop = AtomicBool::new(false);
    let threads = crate::repository::parallel::threads_for(storage.connections());
    let headers = crate::repository::parallel::map(&work, threads, &stop, |(id, size)| {
        if cancel.load(Ordering::Relaxed) {
            stop.store(true, Ordering::SeqCst);
            return Err(Error::Interrupted);
        }
        match read_header(storage, keys, id, *size) {
            Ok(blobs) => Ok(Ok(blobs)),
            // A pack deleted since the listing, or one whose header is damaged: not indexed.
            Err(e @ (Error::Corrupt { .. } | Error::Missing { .. })) => Ok(Err(e.to_string())),
            Err(e) => {
                stop.store(true, Ordering::SeqCst);
                Err(e)
            }
        }
    });
    if cancel.load(Ordering::SeqCst) {
        return Err(Error::Interrupted);
    }
    let mut packs: Vec<(PackId, Vec<PackedBlob>)> = Vec::new();
    for ((id, _), found) in work.iter().zip(headers) {
        match found {
            Some(Ok(Ok(blobs))) => {
                if !named.contains_key(id) {
                    report.packs_added.push(id.to_hex());
                }
                report.blobs_indexed += blobs.len() as u64;
                packs.push((*id, blobs));
            }
            Some(Ok(Err(reason))) => report.packs_damaged.push(DamagedPack {
                pack: id.to_hex(),
                reason,
            }),
            Some(Err(e)) => return Err(e),
            None => return Err(Error::Interrupted),
        }
    }
    report.packs_indexed = packs.len();

    // The new index first (superseding every old file, so a reader that sees both uses the
    // new one), then the old files go. Index files written after our listing (a backup that
    // ran meanwhile) are not touched.
    lease.check()?;
    if !packs.is_empty() || !old_files.is_empty() {
        report.index_written = Some(
            IndexFile {
                supersedes: old_files.clone(),
                packs,
            }
            .save(storage, keys)?,
        );
    }
    for id in &old_files {
        lease.check()?;
        storage.delete(&crate::format::key::ObjectKey::Index(*id).to_string())?;
        report.index_files_removed += 1;
    }
    Ok(report)
}

/// Every index file in the store (all to be replaced; damaged ones too) and, from the readable
/// ones that no other supersedes, the packs they name with their blob counts.
fn current_index(
    storage: &Storage,
    keys: &MasterKeys,
) -> Result<(Vec<IndexId>, HashMap<PackId, u64>)> {
    let mut old_files: Vec<IndexId> = Vec::new();
    let mut loaded: Vec<(IndexId, IndexFile)> = Vec::new();
    // Names that are not Coffer's are not index files: left alone.
    for (key, _) in storage.list_objects("index")?.objects {
        let name = key.rsplit('/').next().unwrap_or(&key);
        let Some(id) = IndexId::from_hex(name) else {
            continue;
        };
        match IndexFile::load(storage, keys, &id) {
            Ok(file) => loaded.push((id, file)),
            // Gone since the listing (an older prune's work): nothing to replace.
            Err(Error::Missing { .. }) => continue,
            // Damaged: replaced like the rest (the packs' own headers say what they hold).
            Err(Error::Corrupt { .. }) => {}
            Err(e) => return Err(e),
        }
        old_files.push(id);
    }
    let superseded: HashSet<IndexId> = loaded
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut named: HashMap<PackId, u64> = HashMap::new();
    for (id, file) in &loaded {
        if superseded.contains(id) {
            continue;
        }
        for (pack, blobs) in &file.packs {
            named.entry(*pack).or_insert(blobs.len() as u64);
        }
    }
    Ok((old_files, named))
}

/// Reads and authenticates the header of the pack `id` of `size` bytes.
fn read_header(
    storage: &Storage,
    keys: &MasterKeys,
    id: &PackId,
    size: u64,
) -> Result<Vec<PackedBlob>> {
    let key = pack::pack_key(id);
    if size < 4 {
        return Err(Error::corrupt(
            "pack",
            id,
            format!("truncated: {size} bytes"),
        ));
    }
    let tail = storage.get_range("pack", &key, size - 4..size)?;
    let tail: [u8; 4] = tail
        .as_ref()
        .try_into()
        .map_err(|_| Error::corrupt("pack", id, "short read of its header length"))?;
    let header_len = u64::from(pack::header_length(id, tail, size)?);
    let data_len = size - 4 - header_len;
    let header = storage.get_range("pack", &key, data_len..size - 4)?;
    pack::parse_header(keys, id, &header, data_len)
}

/// How `repair snapshots` runs.
#[derive(Clone, Debug, Default)]
pub struct RepairSnapshotsOptions {
    /// Snapshots to repair (ids, prefixes or `latest`); empty: every snapshot.
    pub snapshots: Vec<String>,
    /// Remove each original once its repaired copy is saved.
    pub forget: bool,
    pub cancel: Arc<AtomicBool>,
}

/// One path of a snapshot that lost data.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Damage {
    /// The path inside the snapshot.
    pub path: String,
    /// `file removed` or `directory emptied`.
    pub action: &'static str,
    pub reason: String,
}

/// One snapshot that was rewritten.
#[derive(Clone, Debug, Serialize)]
pub struct RepairedSnapshot {
    pub original: SnapshotId,
    pub repaired: SnapshotId,
    pub damage: Vec<Damage>,
    /// Whether the original was removed (`--forget`).
    pub forgotten: bool,
}

/// What `repair snapshots` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairSnapshotsReport {
    /// Snapshots examined.
    pub snapshots: usize,
    /// Snapshots that referred to lost data, with what was lost.
    pub repaired: Vec<RepairedSnapshot>,
}

/// The tag every repaired snapshot carries.
pub const REPAIRED_TAG: &str = "repaired";
/// The label naming the snapshot a repaired one was made from.
pub const REPAIRED_FROM_LABEL: &str = "repaired-from";
/// The label saying how many paths a repaired snapshot lost.
pub const REPAIRED_DAMAGE_LABEL: &str = "repaired-damage";

/// A tree as rewritten: its new id (the same when nothing was lost) and what it lost, with
/// paths relative to it.
#[derive(Clone)]
struct Rewritten {
    id: BlobId,
    damage: Vec<Damage>,
}

struct Rewriter<'a, 'r> {
    repo: &'r Repository,
    writer: &'a BlobWriter<'r>,
    compressor: crate::format::compress::BlobCompressor,
    present: &'a HashSet<PackId>,
    done: HashMap<BlobId, Rewritten>,
    cancel: &'a AtomicBool,
}

impl Rewriter<'_, '_> {
    /// Whether blob `id` can be read: indexed, in a pack that is present.
    fn readable(&self, id: &BlobId) -> bool {
        self.repo
            .index()
            .get(id)
            .is_some_and(|location| self.present.contains(&location.pack))
    }

    fn store_tree(&mut self, tree: &Tree) -> Result<BlobId> {
        self.writer
            .store(
                &mut self.compressor,
                crate::format::compress::BlobClass::Tree,
                &tree.encode(),
            )
            .map(|(id, _)| id)
            .map_err(|e| self.writer.explain(e))
    }

    /// The tree `id`, rewritten without what was lost; `None` if the tree itself is lost.
    fn rewrite(&mut self, id: &BlobId) -> Result<Option<Rewritten>> {
        if let Some(done) = self.done.get(id) {
            return Ok(Some(done.clone()));
        }
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        if !self.readable(id) {
            return Ok(None);
        }
        let tree = match self.repo.load_tree(id) {
            Ok(tree) => tree,
            Err(Error::Missing { .. } | Error::Corrupt { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut damage = Vec::new();
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        let mut changed = false;
        for mut node in tree.nodes {
            let name = node.name.clone();
            match node.kind {
                NodeKind::File => {
                    let lost = node.content.iter().filter(|b| !self.readable(b)).count();
                    if lost > 0 {
                        damage.push(Damage {
                            path: name,
                            action: "file removed",
                            reason: format!(
                                "{lost} of its {} content blob(s) lost",
                                node.content.len()
                            ),
                        });
                        changed = true;
                        continue;
                    }
                }
                NodeKind::Dir => {
                    if let Some(sub) = node.subtree {
                        match self.rewrite(&sub)? {
                            Some(r) => {
                                if r.id != sub {
                                    node.subtree = Some(r.id);
                                    changed = true;
                                }
                                damage.extend(r.damage.into_iter().map(|d| Damage {
                                    path: format!("{name}/{}", d.path),
                                    ..d
                                }));
                            }
                            None => {
                                node.subtree = Some(self.store_tree(&Tree::default())?);
                                changed = true;
                                damage.push(Damage {
                                    path: name,
                                    action: "directory emptied",
                                    reason: format!("its tree {} is lost", sub.short()),
                                });
                            }
                        }
                    }
                }
                NodeKind::Symlink | NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {}
            }
            nodes.push(node);
        }
        let new_id = if changed {
            self.store_tree(&Tree { nodes })?
        } else {
            *id
        };
        let rewritten = Rewritten { id: new_id, damage };
        self.done.insert(*id, rewritten.clone());
        Ok(Some(rewritten))
    }
}

/// Rewrites the snapshots that refer to lost data. See the module documentation.
pub fn repair_snapshots(
    repo: &Repository,
    options: &RepairSnapshotsOptions,
) -> Result<RepairSnapshotsReport> {
    let storage = repo.storage();
    let keys = repo.keys();
    storage.forget_listings();
    // Damaged snapshot objects cannot be rewritten (their content is unknown): they are left
    // for `forget ID`, and naming one here fails naming it.
    let all = snapshot::Snapshot::load_all(storage, keys)?;
    let chosen: Vec<(SnapshotId, Snapshot)> = if options.snapshots.is_empty() {
        all.good.clone()
    } else {
        let mut out: Vec<(SnapshotId, Snapshot)> = Vec::new();
        for spec in &options.snapshots {
            let found = all.resolve(spec)?;
            if !out.iter().any(|(id, _)| id == &found.0) {
                out.push(found.clone());
            }
        }
        out
    };
    let present: HashSet<PackId> = repo.list_packs()?.into_iter().map(|(id, _)| id).collect();
    let writer = BlobWriter::new(repo, storage.connections(), options.cancel.clone())?
        .reuse_only_packs(present.clone());
    let mut rewriter = Rewriter {
        repo,
        writer: &writer,
        compressor: writer.compressor(),
        present: &present,
        done: HashMap::new(),
        cancel: &options.cancel,
    };
    let mut report = RepairSnapshotsReport {
        snapshots: chosen.len(),
        ..RepairSnapshotsReport::default()
    };
    let mut to_save: Vec<(SnapshotId, Snapshot, Vec<Damage>)> = Vec::new();
    for (id, snap) in chosen {
        let (tree, damage) = match rewriter.rewrite(&snap.tree)? {
            Some(r) => (r.id, r.damage),
            None => (
                rewriter.store_tree(&Tree::default())?,
                vec![Damage {
                    path: "/".into(),
                    action: "directory emptied",
                    reason: format!("its root tree {} is lost", snap.tree.short()),
                }],
            ),
        };
        if tree == snap.tree {
            continue;
        }
        let mut repaired = snap.clone();
        repaired.tree = tree;
        if !repaired.tags.iter().any(|t| t == REPAIRED_TAG) {
            repaired.tags.push(REPAIRED_TAG.into());
        }
        repaired
            .labels
            .insert(REPAIRED_FROM_LABEL.into(), id.to_hex());
        repaired.labels.insert(
            REPAIRED_DAMAGE_LABEL.into(),
            format!("{} path(s) lost data", damage.len()),
        );
        to_save.push((id, repaired, damage));
    }
    drop(rewriter);
    // Packs, then their index, then the snapshots that refer to them.
    writer.finish()?;
    for (id, repaired, damage) in to_save {
        if options.cancel.load(Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        let new_id = repaired.save(storage, keys)?;
        let forgotten = options.forget && new_id != id;
        if forgotten {
            storage.delete(&crate::format::key::ObjectKey::Snapshot(id).to_string())?;
        }
        report.repaired.push(RepairedSnapshot {
            original: id,
            repaired: new_id,
            damage,
            forgotten,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_options() -> RepairIndexOptions {
        let mut lease = LeaseOptions::new("repair index", "test-host");
        lease.refresh = std::time::Duration::from_secs(3600);
        RepairIndexOptions {
            lease,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Stores `blobs` in one new pack (its own writer) and returns the pack and its index file.
    fn store(repo: &Repository, blobs: &[&[u8]]) -> (PackId, Vec<PackedBlob>, IndexId) {
        let writer = BlobWriter::new(repo, 1, Arc::new(AtomicBool::new(false))).unwrap();
        let mut compressor = writer.compressor();
        for blob in blobs {
            writer
                .store(
                    &mut compressor,
                    crate::format::compress::BlobClass::FileData,
                    blob,
                )
                .unwrap();
        }
        let written = writer.finish().unwrap();
        let (pack, entries) = written.packs[0].clone();
        (pack, entries, written.index.unwrap())
    }

    #[test]
    fn repair_index_keeps_present_packs_adds_unindexed_ones_and_drops_missing_ones() {
        let repo = crate::repository::test_repo();
        let storage = repo.storage();
        let (kept, kept_blobs, _) = store(&repo, &[b"kept one", b"kept two"]);
        let (lost, lost_blobs, _) = store(&repo, &[b"lost"]);
        let (unindexed, _, unindexed_file) = store(&repo, &[b"unindexed"]);
        storage.delete(&pack::pack_key(&lost)).unwrap();
        storage.delete(&format!("index/{unindexed_file}")).unwrap();
        // A stray name in index/ is not Coffer's: left alone.
        storage
            .put_new("index/.nfs0000abcd", bytes::Bytes::from_static(b"x"))
            .unwrap();

        let report = repair_index(&repo, &index_options()).unwrap();
        assert_eq!(report.packs, 2);
        assert_eq!(report.packs_indexed, 2);
        assert_eq!(report.packs_added, vec![unindexed.to_hex()]);
        assert_eq!(report.packs_dropped, vec![lost.to_hex()]);
        assert_eq!(report.blobs_dropped, lost_blobs.len() as u64);
        assert_eq!(report.index_files_removed, 2);
        assert!(report.packs_damaged.is_empty());

        assert!(storage.size("index/.nfs0000abcd").unwrap().is_some());
        storage.delete("index/.nfs0000abcd").unwrap();
        let index = crate::format::index::MasterIndex::load(storage, repo.keys()).unwrap();
        assert_eq!(index.files().len(), 1);
        assert_eq!(index.len(), 3);
        for blob in &kept_blobs {
            assert_eq!(index.get(&blob.id).unwrap().pack, kept);
        }
        assert!(index.get(&lost_blobs[0].id).is_none());
        // The lease was released: a second run works and changes nothing.
        let again = repair_index(&repo, &index_options()).unwrap();
        assert!(again.packs_added.is_empty() && again.packs_dropped.is_empty());
        assert_eq!(again.packs_indexed, 2);
    }

    #[test]
    fn a_pack_with_a_damaged_header_is_left_out_and_named() {
        let repo = crate::repository::test_repo();
        let storage = repo.storage();
        let (pack, _, _) = store(&repo, &[b"soon damaged"]);
        let key = pack::pack_key(&pack);
        let mut bytes = storage.get("pack", &key).unwrap().to_vec();
        let at = bytes.len() - 10;
        bytes[at] ^= 1;
        storage.delete(&key).unwrap();
        storage.put_new(&key, bytes.into()).unwrap();
        let report = repair_index(&repo, &index_options()).unwrap();
        assert_eq!(report.packs_indexed, 0);
        assert_eq!(report.packs_damaged.len(), 1);
        assert_eq!(report.packs_damaged[0].pack, pack.to_hex());
        assert!(storage.size(&key).unwrap().is_some(), "nothing is deleted");
    }
}

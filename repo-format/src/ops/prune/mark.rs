//! Step 2 of a prune pass: which blobs a snapshot reaches, as one bit per index position, read
//! from the trees through the one [`BlobReader`] (and its metadata cache), or carried over from
//! the pass before when the snapshots are the same.
//!
//! May use: `format/` and the repository's reader.

use crate::error::{Error, Result};
use crate::format::id::{BlobId, SnapshotId};
use crate::format::index::MasterIndex;
use crate::repository::BlobReader;
use std::sync::atomic::{AtomicBool, Ordering};

/// One bit per index position.
pub(super) struct Marks(Vec<u64>);

impl Marks {
    pub(super) fn new(n: usize) -> Marks {
        Marks(vec![0; n.div_ceil(64)])
    }
    /// Sets bit `i`; true if it was clear.
    pub(super) fn set(&mut self, i: usize) -> bool {
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let was = self.0[word] & bit != 0;
        self.0[word] |= bit;
        !was
    }
    pub(super) fn get(&self, i: usize) -> bool {
        self.0[i / 64] & (1u64 << (i % 64)) != 0
    }
    /// How many bits are set.
    pub(super) fn count(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// Marks every blob reachable from the snapshots; refuses if one is in no index.
pub(super) fn mark(
    reader: &BlobReader<'_>,
    roots: &[(SnapshotId, BlobId)],
    cancel: &AtomicBool,
) -> Result<Marks> {
    let index = reader.index();
    // Without a metadata cache, on an object store: one request per tree pack, not per tree.
    let _trees = reader.plan_tree_reads();
    let mut marks = Marks::new(index.len());
    for (id, root) in roots {
        let refuse = |what: &str, blob: &BlobId| Error::Missing {
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
            let tree = reader.load_tree(&tree_id)?;
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
pub(super) struct Reachable {
    pub roots: Vec<(SnapshotId, BlobId)>,
    pub blobs: Vec<BlobId>,
}

impl Reachable {
    /// Kept for the next pass only up to this many blobs (32 MiB of ids); beyond that the next
    /// pass reads the trees again rather than hold the ids beside the index.
    const MAX_BLOBS: usize = 1 << 20;

    /// The blobs marked in `index`, if there are few enough to keep.
    pub(super) fn collect(
        mut roots: Vec<(SnapshotId, BlobId)>,
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
    pub(super) fn mark(&self, index: &MasterIndex, cancel: &AtomicBool) -> Result<Marks> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::PackId;
    use crate::format::pack::{BlobKind, PackedBlob};

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

    #[test]
    fn marks_set_once() {
        let mut m = Marks::new(130);
        assert!(!m.get(129));
        assert!(m.set(129));
        assert!(!m.set(129));
        assert!(m.get(129) && !m.get(128) && !m.get(0));
    }
}

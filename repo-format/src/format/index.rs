//! Index files (`index/<id>`) and the compact in-memory index built from them.
//!
//! An index file is a sealed object of kind Index whose plaintext is a zstd frame of:
//!
//! ```text
//! supersedes_count (u32 LE) || supersedes_count * index id [32]
//! pack_count (u32 LE) || pack_count * (pack id [32] || blob_count (u32 LE) ||
//!     blob_count * (kind u8 || compression u8 || offset u32 LE || length u32 LE ||
//!                   raw_length u32 LE || blob id [32]))
//! ```
//! `supersedes` lists index files whose content this one replaces (written by prune); readers
//! ignore superseded index files. The reserved id [`CHECKPOINT_MARK`] in `supersedes` marks a
//! *checkpoint*: an index file that a backup or copy wrote while still running (so that an
//! interrupted run's packs are reused), whose packs prune treats as a running writer's while
//! they are young (P4b in docs/maintenance.md). It names no file, so it supersedes nothing. The in-memory [`MasterIndex`] keeps one 52-byte entry per
//! blob in a sorted array, so lookups are a binary search and memory is about 52 bytes a blob.
//!
//! Packs that prune has condemned (listed in a deletion plan, `plans/<id>`, see `plan.rs` and
//! docs/maintenance.md) are loaded as *pending*: they can still be read ([`MasterIndex::get`]),
//! so a snapshot written by a backup that ran during prune restores, but they are not offered for
//! deduplication ([`MasterIndex::contains`] is false), so no new snapshot comes to depend on them.
//!
//! Pure: bytes in, typed values out; reading and writing index files, and loading the
//! [`MasterIndex`] from storage, is `repository/stored.rs`'s.

use crate::error::{Error, Result};
use crate::format::id::{storage_hash, BlobId, IndexId, PackId};
use crate::format::pack::{decode_compression, decode_kind, BlobKind, Compression, PackedBlob};
use crate::format::plan::Plans;
use crate::format::sealed::{self, ObjectKind};
use coffer_crypto::MasterKeys;
use std::collections::HashSet;
use std::io::Read;

/// Largest index file read from storage (bytes).
pub const MAX_INDEX_FILE_SIZE: u64 = 1024 * 1024 * 1024;
/// Largest decompressed index plaintext accepted (bytes).
pub const MAX_INDEX_PLAINTEXT: u64 = 4 * 1024 * 1024 * 1024;
const ENTRY_LEN: usize = 46;

/// The id in `supersedes` that marks an index file as a running writer's checkpoint: all bits
/// set, which no stored object's hash is (section 8 of docs/repository-format.md).
pub const CHECKPOINT_MARK: IndexId = IndexId([0xff; 32]);

/// The content of one index file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexFile {
    /// Index files this one replaces.
    pub supersedes: Vec<IndexId>,
    /// Packs and the blobs each holds.
    pub packs: Vec<(PackId, Vec<PackedBlob>)>,
}

impl IndexFile {
    /// A checkpoint index file naming `packs` (see [`CHECKPOINT_MARK`]).
    pub fn checkpoint(packs: Vec<(PackId, Vec<PackedBlob>)>) -> IndexFile {
        IndexFile {
            supersedes: vec![CHECKPOINT_MARK],
            packs,
        }
    }

    /// Whether a running writer wrote this file as a checkpoint.
    pub fn is_checkpoint(&self) -> bool {
        self.supersedes.contains(&CHECKPOINT_MARK)
    }

    /// Binary plaintext (before compression).
    pub fn encode(&self) -> Vec<u8> {
        let blobs: usize = self.packs.iter().map(|(_, b)| b.len()).sum();
        let mut out = Vec::with_capacity(
            8 + self.supersedes.len() * 32 + self.packs.len() * 36 + blobs * ENTRY_LEN,
        );
        out.extend_from_slice(&(self.supersedes.len() as u32).to_le_bytes());
        for id in &self.supersedes {
            out.extend_from_slice(&id.0);
        }
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for (pack, entries) in &self.packs {
            out.extend_from_slice(&pack.0);
            out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for b in entries {
                out.push(b.kind as u8);
                out.push(b.compression as u8);
                out.extend_from_slice(&b.offset.to_le_bytes());
                out.extend_from_slice(&b.length.to_le_bytes());
                out.extend_from_slice(&b.raw_length.to_le_bytes());
                out.extend_from_slice(&b.id.0);
            }
        }
        out
    }

    /// Parses the binary plaintext; `name` identifies the file in errors.
    pub fn decode(name: &str, plain: &[u8]) -> Result<IndexFile> {
        let what = "index";
        let mut r = Reader {
            buf: plain,
            name,
            what,
        };
        let n = r.u32()? as usize;
        let mut supersedes = Vec::with_capacity(n.min(plain.len() / 32));
        for _ in 0..n {
            supersedes.push(IndexId(r.id()?));
        }
        let packs_n = r.u32()? as usize;
        let mut packs = Vec::with_capacity(packs_n.min(plain.len() / 36));
        for _ in 0..packs_n {
            let pack = PackId(r.id()?);
            let count = r.u32()? as usize;
            if count.saturating_mul(ENTRY_LEN) > r.buf.len() {
                return Err(Error::corrupt(
                    what,
                    name,
                    format!("pack {pack} claims {count} blobs, more than the file holds"),
                ));
            }
            let mut blobs = Vec::with_capacity(count);
            for _ in 0..count {
                let kind = decode_kind(r.u8()?, what, name)?;
                let compression = decode_compression(r.u8()?, what, name)?;
                let offset = r.u32()?;
                let length = r.u32()?;
                let raw_length = r.u32()?;
                let id = BlobId(r.id()?);
                blobs.push(PackedBlob {
                    kind,
                    compression,
                    id,
                    offset,
                    length,
                    raw_length,
                });
            }
            packs.push((pack, blobs));
        }
        if !r.buf.is_empty() {
            return Err(Error::corrupt(
                what,
                name,
                format!("{} trailing bytes", r.buf.len()),
            ));
        }
        Ok(IndexFile { supersedes, packs })
    }

    /// The stored form: compressed, sealed, and the id it is stored under (the hash of the
    /// stored bytes).
    pub fn to_stored(&self, keys: &MasterKeys) -> Result<(IndexId, Vec<u8>)> {
        let bytes = seal_compressed(keys, ObjectKind::Index, "index", &self.encode())?;
        Ok((IndexId(storage_hash(&bytes)), bytes))
    }

    /// Verifies and parses the stored bytes of index file `id`: size, name, authentication,
    /// decompressed size, then the body, each checked before anything is allocated for it.
    pub fn from_stored(keys: &MasterKeys, id: &IndexId, bytes: &[u8]) -> Result<IndexFile> {
        let name = id.to_hex();
        let plain = open_compressed(keys, ObjectKind::Index, "index", &name, bytes)?;
        IndexFile::decode(&name, &plain)
    }
}

/// Compresses `plain` (zstd level 3) and seals it as an object of `kind`: the stored form of
/// index files and deletion plans.
pub(crate) fn seal_compressed(
    keys: &MasterKeys,
    kind: ObjectKind,
    what: &'static str,
    plain: &[u8],
) -> Result<Vec<u8>> {
    let compressed =
        zstd::bulk::compress(plain, 3).map_err(|e| Error::io("compressing", what, e))?;
    sealed::seal(keys, kind, &compressed)
}

/// The inverse of [`seal_compressed`] for the object named `name` (64 hex digits): refuses
/// stored bytes above [`MAX_INDEX_FILE_SIZE`], bytes that do not hash to the name, that fail
/// authentication, or that decompress to more than [`MAX_INDEX_PLAINTEXT`].
pub(crate) fn open_compressed(
    keys: &MasterKeys,
    kind: ObjectKind,
    what: &'static str,
    name: &str,
    bytes: &[u8],
) -> Result<Vec<u8>> {
    if bytes.len() as u64 > MAX_INDEX_FILE_SIZE {
        return Err(Error::corrupt(what, name, "too large"));
    }
    if hex::encode(storage_hash(bytes)) != name {
        return Err(Error::corrupt(
            what,
            name,
            "content does not match its name",
        ));
    }
    let compressed = sealed::open(keys, kind, what, name, bytes)?;
    let mut plain = Vec::new();
    zstd::stream::read::Decoder::new(&compressed[..])
        .and_then(|d| d.take(MAX_INDEX_PLAINTEXT + 1).read_to_end(&mut plain))
        .map_err(|e| Error::corrupt(what, name, format!("zstd: {e}")))?;
    if plain.len() as u64 > MAX_INDEX_PLAINTEXT {
        return Err(Error::corrupt(
            what,
            name,
            "decompresses to more than the maximum",
        ));
    }
    Ok(plain)
}

struct Reader<'a> {
    buf: &'a [u8],
    name: &'a str,
    what: &'static str,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.buf.len() < n {
            return Err(Error::corrupt(self.what, self.name, "truncated"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn id(&mut self) -> Result<[u8; 32]> {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.take(32)?);
        Ok(out)
    }
}

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub pack: PackId,
    pub blob: PackedBlob,
}

#[derive(Clone, Copy)]
struct Entry {
    id: BlobId,
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    kind: BlobKind,
    compression: Compression,
    /// From a deletion plan, not a live index file: readable, never used for deduplication.
    pending: bool,
}

/// The union of all live index files, as a sorted array.
pub struct MasterIndex {
    packs: Vec<PackId>,
    entries: Vec<Entry>,
    files: Vec<IndexId>,
    sorted: bool,
    /// Deletion plans that could not be read when the index was loaded, left out (warnings).
    damaged_plans: Vec<String>,
}

impl Default for MasterIndex {
    /// An empty index, which is sorted (a freshly initialised repository's).
    fn default() -> Self {
        MasterIndex {
            packs: Vec::new(),
            entries: Vec::new(),
            files: Vec::new(),
            sorted: true,
            damaged_plans: Vec::new(),
        }
    }
}

impl MasterIndex {
    /// The index of `files` (index file id and content, the most recently written first)
    /// and the deletion plans `plans`: every file that no other file supersedes is live, a
    /// blob listed by several files is looked up in the first (newest) one, and the plans'
    /// packs are pending. Damaged plans are left out and kept as warnings.
    pub fn from_files(files: Vec<(IndexId, IndexFile)>, plans: &Plans) -> MasterIndex {
        let superseded: HashSet<IndexId> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        let mut index = MasterIndex::default();
        for (id, file) in files {
            if superseded.contains(&id) {
                continue;
            }
            index.files.push(id);
            for (pack, blobs) in &file.packs {
                index.add_pack(*pack, blobs);
            }
        }
        // Added after the live files: sorting is stable and the first entry of a blob wins, so
        // a blob that is both live and pending is live.
        index.damaged_plans = plans.damage_warnings();
        for (_, plan) in &plans.good {
            for (pack, blobs) in &plan.packs {
                index.add_pending_pack(*pack, blobs);
            }
        }
        index.sort();
        index
    }

    /// Warnings about deletion plans that could not be read and were left out.
    pub fn damaged_plans(&self) -> &[String] {
        &self.damaged_plans
    }

    /// Adds a condemned pack's blobs: readable, never used for deduplication.
    pub fn add_pending_pack(&mut self, pack: PackId, blobs: &[PackedBlob]) {
        let start = self.entries.len();
        self.add_pack(pack, blobs);
        for e in &mut self.entries[start..] {
            e.pending = true;
        }
    }

    /// Adds a pack's blobs. Lookups sort lazily afterwards.
    pub fn add_pack(&mut self, pack: PackId, blobs: &[PackedBlob]) {
        let p = self.packs.len() as u32;
        self.packs.push(pack);
        self.entries.extend(blobs.iter().map(|b| Entry {
            id: b.id,
            pack: p,
            offset: b.offset,
            length: b.length,
            raw_length: b.raw_length,
            kind: b.kind,
            compression: b.compression,
            pending: false,
        }));
        self.sorted = false;
    }

    /// Sorts the entries and drops duplicate blobs (the same blob stored in two packs; the
    /// first listed wins).
    pub fn sort(&mut self) {
        if !self.sorted {
            self.entries.sort_by_key(|e| e.id.0);
            self.entries.dedup_by(|a, b| a.id.0 == b.id.0);
            self.sorted = true;
        }
    }

    fn find(&self, id: &BlobId) -> Option<&Entry> {
        debug_assert!(self.sorted, "MasterIndex used before sort()");
        self.entries
            .binary_search_by(|e| e.id.0.cmp(&id.0))
            .ok()
            .map(|i| &self.entries[i])
    }

    fn location(&self, e: &Entry) -> BlobLocation {
        BlobLocation {
            pack: self.packs[e.pack as usize],
            blob: PackedBlob {
                kind: e.kind,
                compression: e.compression,
                id: e.id,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            },
        }
    }

    /// Where blob `id` can be read, if indexed (live, or pending deletion).
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.find(id).map(|e| self.location(e))
    }

    /// Whether a live index file lists blob `id`: the question deduplication asks. Blobs that
    /// are only in packs pending deletion are not offered, so writers store them again.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.find(id).is_some_and(|e| !e.pending)
    }

    /// The position of blob `id` in the sorted entries (`0..len()`), for compact per-blob
    /// marks such as a bitmap.
    pub fn position(&self, id: &BlobId) -> Option<usize> {
        debug_assert!(self.sorted, "MasterIndex used before sort()");
        self.entries.binary_search_by(|e| e.id.0.cmp(&id.0)).ok()
    }

    /// The entry at `position`: where it is, and whether it is only pending deletion.
    pub fn at(&self, position: usize) -> Option<(BlobLocation, bool)> {
        self.entries
            .get(position)
            .map(|e| (self.location(e), e.pending))
    }

    /// Every entry in position order: location and whether it is pending deletion.
    pub fn iter(&self) -> impl Iterator<Item = (BlobLocation, bool)> + '_ {
        self.entries.iter().map(|e| (self.location(e), e.pending))
    }

    /// Number of distinct indexed blobs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No blob indexed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The live index files.
    pub fn files(&self) -> &[IndexId] {
        &self.files
    }

    /// Bytes of memory per indexed blob (the entry size).
    pub const BYTES_PER_BLOB: usize = std::mem::size_of::<Entry>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blob(id: u8, offset: u32) -> PackedBlob {
        PackedBlob {
            kind: if id % 2 == 0 {
                BlobKind::Data
            } else {
                BlobKind::Tree
            },
            compression: if id % 3 == 0 {
                Compression::Zstd
            } else {
                Compression::None
            },
            id: BlobId([id; 32]),
            offset,
            length: 100 + u32::from(id),
            raw_length: 50,
        }
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(sup in 0usize..3, packs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..10), 0..5)) {
            let file = IndexFile {
                supersedes: (0..sup).map(|i| IndexId([i as u8; 32])).collect(),
                packs: packs.iter().enumerate().map(|(i, ids)| {
                    (PackId([i as u8; 32]), ids.iter().enumerate().map(|(j, &b)| blob(b, j as u32 * 7)).collect())
                }).collect(),
            };
            let bytes = file.encode();
            prop_assert_eq!(IndexFile::decode("x", &bytes).unwrap(), file);
            for cut in 0..bytes.len() {
                prop_assert!(IndexFile::decode("x", &bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn huge_counts_are_refused_without_allocating() {
        let mut bytes = 0u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 32]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let err = IndexFile::decode("bad", &bytes).unwrap_err().to_string();
        assert!(err.contains("index bad is corrupt"), "{err}");
    }

    #[test]
    fn stored_form_round_trips_and_refuses_damage() {
        let keys = MasterKeys::generate().unwrap();
        let file = IndexFile {
            supersedes: vec![IndexId([4; 32])],
            packs: vec![(PackId([1; 32]), vec![blob(1, 0), blob(2, 200)])],
        };
        let (id, bytes) = file.to_stored(&keys).unwrap();
        assert_eq!(IndexFile::from_stored(&keys, &id, &bytes).unwrap(), file);
        // Another name, other keys, a flipped bit, a cut: errors naming the index.
        let other = MasterKeys::generate().unwrap();
        let err = IndexFile::from_stored(&keys, &IndexId([0; 32]), &bytes).unwrap_err();
        assert!(err.to_string().contains("does not match its name"), "{err}");
        assert!(IndexFile::from_stored(&other, &id, &bytes).is_err());
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert!(IndexFile::from_stored(&keys, &IndexId(storage_hash(&flipped)), &flipped).is_err());
        let cut = &bytes[..bytes.len() - 1];
        assert!(IndexFile::from_stored(&keys, &IndexId(storage_hash(cut)), cut).is_err());
    }

    #[test]
    fn superseded_files_are_left_out_and_the_newest_copy_wins() {
        let first = IndexFile {
            supersedes: vec![],
            packs: vec![(PackId([1; 32]), vec![blob(1, 0), blob(2, 200)])],
        };
        let second = IndexFile {
            supersedes: vec![IndexId([1; 32])],
            packs: vec![(PackId([9; 32]), vec![blob(2, 0)])],
        };
        let both = vec![
            (IndexId([2; 32]), second.clone()),
            (IndexId([1; 32]), first.clone()),
        ];
        let index = MasterIndex::from_files(both, &Plans::default());
        assert_eq!(index.len(), 1);
        assert_eq!(index.files(), &[IndexId([2; 32])]);
        assert_eq!(index.get(&BlobId([2; 32])).unwrap().pack, PackId([9; 32]));
        assert!(!index.contains(&BlobId([1; 32])));
        // Without the superseding file, both blobs of the first are live.
        let index = MasterIndex::from_files(vec![(IndexId([1; 32]), first)], &Plans::default());
        assert_eq!(index.len(), 2);
        assert_eq!(index.get(&BlobId([2; 32])).unwrap().pack, PackId([1; 32]));
        assert_eq!(MasterIndex::BYTES_PER_BLOB, 52);
    }

    #[test]
    fn pending_entries_are_readable_but_not_offered_for_dedup() {
        let mut index = MasterIndex::default();
        index.add_pack(PackId([1; 32]), &[blob(1, 0)]);
        index.add_pending_pack(PackId([2; 32]), &[blob(1, 0), blob(2, 100)]);
        index.sort();
        // Live wins over pending for the same blob.
        assert!(index.contains(&BlobId([1; 32])));
        assert_eq!(index.get(&BlobId([1; 32])).unwrap().pack, PackId([1; 32]));
        // Pending only: readable, not for dedup.
        assert!(!index.contains(&BlobId([2; 32])));
        assert_eq!(index.get(&BlobId([2; 32])).unwrap().pack, PackId([2; 32]));
        let pos = index.position(&BlobId([2; 32])).unwrap();
        assert!(index.at(pos).unwrap().1);
        assert_eq!(index.iter().filter(|(_, pending)| *pending).count(), 1);
    }
}

//! Deletion plans (`plans/<id>`): what prune has condemned and will delete once a grace period
//! has passed (two-phase deletion, docs/maintenance.md).
//!
//! A plan is a sealed object of kind DeletionPlan whose plaintext is a zstd frame of:
//!
//! ```text
//! created (i64 LE, Unix milliseconds) || index_deadline (i64 LE, Unix milliseconds) ||
//! index file body (see index.rs)
//! ```
//! The index file body's `supersedes` list names the index files to delete, and its packs the
//! packs to delete, each with the blobs it held when it was condemned (an empty list means the
//! pack was in no index when planned). The blob lists let readers still find blobs in condemned
//! packs, and let the second phase tell whether a snapshot written since needs one of them. The
//! name is the BLAKE3 of the stored bytes, like every other object. Plans are immutable: the
//! prune that carries one out deletes it last.

use crate::error::{Error, Result};
use crate::format::id::{storage_hash, IndexId, PackId};
use crate::format::index::{IndexFile, MAX_INDEX_FILE_SIZE, MAX_INDEX_PLAINTEXT};
use crate::format::pack::PackedBlob;
use crate::format::sealed::{self, ObjectKind};
use crate::storage::Storage;
use coffer_crypto::MasterKeys;
use std::io::Read;

/// Directory of deletion plans.
pub const PLANS_DIR: &str = "plans";

/// What one prune condemned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletionPlan {
    /// When the plan was written.
    pub created: jiff::Timestamp,
    /// The prune that wrote the plan wrote its superseding index by this time, or not at all;
    /// the plan may be carried out once `index_deadline + grace` has passed.
    pub index_deadline: jiff::Timestamp,
    /// Index files to delete (each superseded by an index file written before the plan).
    pub index_files: Vec<IndexId>,
    /// Packs to delete, with the blobs each held (empty: the pack was in no index).
    pub packs: Vec<(PackId, Vec<PackedBlob>)>,
}

impl DeletionPlan {
    fn encode(&self) -> Vec<u8> {
        let mut out = (self.created.as_millisecond()).to_le_bytes().to_vec();
        out.extend_from_slice(&self.index_deadline.as_millisecond().to_le_bytes());
        out.extend_from_slice(
            &IndexFile {
                supersedes: self.index_files.clone(),
                packs: self.packs.clone(),
            }
            .encode(),
        );
        out
    }

    fn decode(name: &str, plain: &[u8]) -> Result<DeletionPlan> {
        if plain.len() < 16 {
            return Err(Error::corrupt("deletion plan", name, "truncated"));
        }
        let time = |bytes: &[u8]| {
            let ms = i64::from_le_bytes(bytes.try_into().unwrap_or_default());
            jiff::Timestamp::from_millisecond(ms)
                .map_err(|e| Error::corrupt("deletion plan", name, format!("bad time: {e}")))
        };
        let created = time(&plain[..8])?;
        let index_deadline = time(&plain[8..16])?;
        let body = IndexFile::decode(name, &plain[16..])?;
        Ok(DeletionPlan {
            created,
            index_deadline,
            index_files: body.supersedes,
            packs: body.packs,
        })
    }

    /// Compresses, seals and writes the plan; returns its storage key.
    pub fn save(&self, storage: &Storage, keys: &MasterKeys) -> Result<String> {
        let compressed = zstd::bulk::compress(&self.encode(), 3)
            .map_err(|e| Error::io("compressing", "deletion plan", e))?;
        let bytes = sealed::seal(keys, ObjectKind::DeletionPlan, &compressed)?;
        let key = format!("{PLANS_DIR}/{}", hex::encode(storage_hash(&bytes)));
        storage.put_new(&key, bytes.into())?;
        Ok(key)
    }

    /// Reads and verifies the plan stored under `key`.
    pub fn load(storage: &Storage, keys: &MasterKeys, key: &str) -> Result<DeletionPlan> {
        let what = "deletion plan";
        let name = key.rsplit('/').next().unwrap_or(key);
        let bytes = storage.get_bounded(what, key, MAX_INDEX_FILE_SIZE)?;
        if bytes.len() as u64 > MAX_INDEX_FILE_SIZE {
            return Err(Error::corrupt(what, name, "too large"));
        }
        if hex::encode(storage_hash(&bytes)) != name {
            return Err(Error::corrupt(
                what,
                name,
                "content does not match its name",
            ));
        }
        let compressed = sealed::open(keys, ObjectKind::DeletionPlan, what, name, &bytes)?;
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
        DeletionPlan::decode(name, &plain)
    }
}

/// The deletion plans that could be read, and the ones that could not.
#[derive(Debug, Default)]
pub struct Plans {
    /// Storage key and plan, in key order.
    pub good: Vec<(String, DeletionPlan)>,
    /// Storage key and why the plan cannot be read. Every command treats such a plan as absent
    /// (docs/maintenance.md, "Damaged deletion plans"): nothing it names is deleted on its
    /// strength, and its packs, in no live index, are examined again by the next prune.
    pub damaged: Vec<(String, Error)>,
}

impl Plans {
    /// One line per damaged plan, naming it and the reason, for warnings.
    pub fn damage_warnings(&self) -> Vec<String> {
        self.damaged
            .iter()
            .map(|(key, e)| format!("{e}; ignored (treated as absent; stored as {key})"))
            .collect()
    }
}

/// Every deletion plan with its storage key, in key order, the damaged ones set apart. Keys
/// under `plans/` that are not plan names are ignored. A plan deleted between listing and
/// reading has been carried out and is skipped.
pub fn load_all(storage: &Storage, keys: &MasterKeys) -> Result<Plans> {
    let mut out = Plans::default();
    for (key, _) in storage.list_objects(PLANS_DIR)?.objects {
        match DeletionPlan::load(storage, keys, &key) {
            Ok(plan) => out.good.push((key, plan)),
            Err(Error::Missing { .. }) => continue,
            Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. })) => {
                out.damaged.push((key, e))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::BlobId;
    use crate::format::pack::{BlobKind, Compression};

    #[test]
    fn save_load_round_trip_and_tamper() {
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        let plan = DeletionPlan {
            created: jiff::Timestamp::from_millisecond(1_700_000_000_123).unwrap(),
            index_deadline: jiff::Timestamp::from_millisecond(1_700_000_001_123).unwrap(),
            index_files: vec![IndexId([3; 32])],
            packs: vec![
                (
                    PackId([1; 32]),
                    vec![PackedBlob {
                        kind: BlobKind::Data,
                        compression: Compression::Zstd,
                        id: BlobId([7; 32]),
                        offset: 0,
                        length: 90,
                        raw_length: 200,
                    }],
                ),
                (PackId([2; 32]), vec![]),
            ],
        };
        let key = plan.save(&storage, &keys).unwrap();
        assert!(key.starts_with("plans/"));
        assert_eq!(DeletionPlan::load(&storage, &keys, &key).unwrap(), plan);
        assert_eq!(
            load_all(&storage, &keys).unwrap().good,
            vec![(key.clone(), plan)]
        );
        let mut bytes = storage.get("x", &key).unwrap().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        storage.delete(&key).unwrap();
        storage.put_new(&key, bytes.into()).unwrap();
        let err = DeletionPlan::load(&storage, &keys, &key).unwrap_err();
        assert!(err.to_string().contains("deletion plan"), "{err}");
        let all = load_all(&storage, &keys).unwrap();
        assert!(all.good.is_empty());
        assert_eq!(all.damaged.len(), 1);
        assert_eq!(all.damaged[0].0, key);
        for cut in 0..16 {
            assert!(DeletionPlan::decode("x", &[0u8; 16][..cut]).is_err());
        }
    }
}

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
//!
//! Pure: bytes in, typed values out; reading and writing plans is `repository/stored.rs`'s.

use crate::error::{Error, Result};
use crate::format::id::{storage_hash, IndexId, PackId, PlanId};
use crate::format::index::{open_compressed, seal_compressed, IndexFile};
use crate::format::pack::PackedBlob;
use crate::format::sealed::ObjectKind;
use coffer_crypto::MasterKeys;

/// What a deletion plan is called in messages.
const WHAT: &str = "deletion plan";

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
    /// The plaintext (before compression).
    pub fn encode(&self) -> Vec<u8> {
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

    /// Parses the plaintext; `name` identifies the plan in errors.
    pub fn decode(name: &str, plain: &[u8]) -> Result<DeletionPlan> {
        if plain.len() < 16 {
            return Err(Error::corrupt(WHAT, name, "truncated"));
        }
        let time = |bytes: &[u8]| {
            let ms = i64::from_le_bytes(bytes.try_into().unwrap_or_default());
            jiff::Timestamp::from_millisecond(ms)
                .map_err(|e| Error::corrupt(WHAT, name, format!("bad time: {e}")))
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

    /// The stored form: compressed, sealed, and the id it is stored under.
    pub fn to_stored(&self, keys: &MasterKeys) -> Result<(PlanId, Vec<u8>)> {
        let bytes = seal_compressed(keys, ObjectKind::DeletionPlan, WHAT, &self.encode())?;
        Ok((PlanId(storage_hash(&bytes)), bytes))
    }

    /// Verifies and parses the stored bytes of plan `id` (limits as for index files).
    pub fn from_stored(keys: &MasterKeys, id: &PlanId, bytes: &[u8]) -> Result<DeletionPlan> {
        let name = id.to_hex();
        let plain = open_compressed(keys, ObjectKind::DeletionPlan, WHAT, &name, bytes)?;
        DeletionPlan::decode(&name, &plain)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::BlobId;
    use crate::format::pack::{BlobKind, Compression};

    pub(crate) fn sample() -> DeletionPlan {
        DeletionPlan {
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
        }
    }

    #[test]
    fn stored_form_round_trips_and_refuses_damage() {
        let keys = MasterKeys::generate().unwrap();
        let plan = sample();
        let (id, bytes) = plan.to_stored(&keys).unwrap();
        assert_eq!(DeletionPlan::from_stored(&keys, &id, &bytes).unwrap(), plan);
        let other = MasterKeys::generate().unwrap();
        let err = DeletionPlan::from_stored(&other, &id, &bytes).unwrap_err();
        assert!(err.to_string().contains("deletion plan"), "{err}");
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let err = DeletionPlan::from_stored(&keys, &id, &flipped).unwrap_err();
        assert!(err.to_string().contains("does not match its name"), "{err}");
        let renamed = PlanId(storage_hash(&flipped));
        assert!(DeletionPlan::from_stored(&keys, &renamed, &flipped).is_err());
        let plain = plan.encode();
        assert_eq!(DeletionPlan::decode("x", &plain).unwrap(), plan);
        for cut in 0..plain.len() {
            assert!(DeletionPlan::decode("x", &plain[..cut]).is_err(), "{cut}");
        }
    }
}

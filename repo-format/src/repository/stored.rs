//! Reading and writing the stored artifacts of `format/`: the one place where a format type
//! meets storage. Every whole-object read goes through [`read_bounded`], which asks storage for
//! the object with its class's named maximum (spec section 12), so an object above it is refused
//! before it is downloaded; the format module then verifies and decodes the bytes.
//!
//! The functions are inherent impls on the format types (`Snapshot::load`, `IndexFile::save`,
//! `KeyFile::open_any`, ...), so callers name the artifact they want, not this module. Uses
//! `format/` and [`Storage`]; the key file's creation time is the only clock read.

use crate::error::{Error, Result};
use crate::format::config::RepoConfig;
use crate::format::drill::{self, DrillResult};
use crate::format::id::{DrillId, IndexId, KeyId, PlanId, SnapshotId};
use crate::format::index::{IndexFile, MasterIndex};
use crate::format::key::{ObjectClass, ObjectKey};
use crate::format::keyfile::{kdf_cost, kdf_is_bounded, KeyFile};
use crate::format::plan::{DeletionPlan, Plans};
use crate::format::snapshot::{sort_by_time, Snapshot, Snapshots};
use crate::storage::Storage;
use bytes::Bytes;
use coffer_crypto::{KdfParams, MasterKeys};
use std::collections::BTreeMap;

/// Reads the whole object `key`. Storage learns its size first and refuses it, naming it and
/// the limit, if it is above its class's maximum ([`ObjectClass::max_size`]), before a byte is
/// downloaded or a buffer allocated. A missing object is [`Error::Missing`].
pub fn read_bounded(storage: &Storage, key: &ObjectKey) -> Result<Bytes> {
    let class = key.class();
    storage.get_bounded(class.what(), &key.to_string(), class.max_size())
}

/// Applies `load` to every id, up to `--connections` at a time (on an object store each read is
/// a round trip; from the cache or a local disk the decryption is spread over the cores), and
/// returns the results in the ids' order.
pub fn load_each<I, T, F>(storage: &Storage, ids: &[I], load: F) -> Vec<Result<T>>
where
    I: Sync,
    T: Send,
    F: Fn(&I) -> Result<T> + Sync,
{
    let threads = crate::repository::parallel::threads_for(storage.connections());
    crate::repository::parallel::map_all(ids, threads, load)
}

/// Deletes every object of `keys`, `--connections` at a time (on an object store each deletion
/// is a round trip), calling `before_each` (a lease check, say) before each. After a failure no
/// further deletion is started; the first error is returned once those in flight are done.
pub fn delete_each(
    storage: &Storage,
    keys: &[String],
    before_each: impl Fn() -> Result<()> + Sync,
) -> Result<()> {
    let threads = crate::repository::parallel::threads_for(storage.connections());
    crate::repository::parallel::try_each(keys, threads, |key: &String| {
        before_each()?;
        storage.delete(key)
    })
}

/// Writes an immutable object under `key` (create-only; the same bytes already there count as
/// written, since every name but `config`'s and lease records' is the hash of the bytes).
fn write(storage: &Storage, key: &ObjectKey, bytes: Vec<u8>) -> Result<()> {
    storage.put_new(&key.to_string(), bytes.into())
}

/// The keys of class `class` in its directory, in name order; stray names left out.
fn list_keys(storage: &Storage, class: ObjectClass) -> Result<Vec<(String, ObjectKey)>> {
    Ok(storage
        .list_objects(class.dir())?
        .objects
        .into_iter()
        .filter_map(|(key, _)| ObjectKey::parse_as(class, &key).map(|k| (key, k)))
        .collect())
}

impl IndexFile {
    /// Compresses, seals and writes the index file; returns its id.
    pub fn save(&self, storage: &Storage, keys: &MasterKeys) -> Result<IndexId> {
        let (id, bytes) = self.to_stored(keys)?;
        write(storage, &ObjectKey::Index(id), bytes)?;
        Ok(id)
    }

    /// Reads, verifies and parses one index file.
    pub fn load(storage: &Storage, keys: &MasterKeys, id: &IndexId) -> Result<IndexFile> {
        let bytes = read_bounded(storage, &ObjectKey::Index(*id))?;
        IndexFile::from_stored(keys, id, &bytes)
    }

    /// Ids of the index files present, in name order. Keys under `index/` that are not index
    /// file names are not Coffer's and are ignored ([`Storage::list_objects`]).
    pub fn list_ids(storage: &Storage) -> Result<Vec<IndexId>> {
        Ok(list_keys(storage, ObjectClass::Index)?
            .into_iter()
            .filter_map(|(_, key)| match key {
                ObjectKey::Index(id) => Some(id),
                _ => None,
            })
            .collect())
    }

    /// Ids of every index file, the most recently written (by storage time) first, ties by
    /// name: of two copies of a blob, the one stored again after its pack was lost
    /// (`backup --force`) is newer and is the one to use. Names that are not Coffer's are left
    /// out.
    pub fn list_ids_newest_first(storage: &Storage) -> Result<Vec<IndexId>> {
        let mut listed: Vec<(IndexId, &str, jiff::Timestamp)> = Vec::new();
        let all = storage.list_with_times(ObjectClass::Index.dir())?;
        for (key, _, time) in &all {
            if let Some(ObjectKey::Index(id)) = ObjectKey::parse_as(ObjectClass::Index, key) {
                listed.push((id, key, *time));
            }
        }
        listed.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.1.cmp(b.1)));
        Ok(listed.into_iter().map(|(id, _, _)| id).collect())
    }
}

impl MasterIndex {
    /// Loads every index file that no other index file supersedes, and the deletion plans'
    /// packs as pending ([`MasterIndex::from_files`]). A blob listed by several files is looked
    /// up in the most recently written one (by storage time): a copy stored again because its
    /// pack was lost (`backup --force`) is newer than the lost one.
    pub fn load(storage: &Storage, keys: &MasterKeys) -> Result<MasterIndex> {
        let mut files = Vec::new();
        let ids = IndexFile::list_ids_newest_first(storage)?;
        let loaded = load_each(storage, &ids, |id| IndexFile::load(storage, keys, id));
        for (id, result) in ids.into_iter().zip(loaded) {
            match result {
                Ok(file) => files.push((id, file)),
                // Listed, then deleted before we read it: only prune deletes index files, and
                // only ones superseded by a file written a grace period earlier, which this
                // listing therefore holds (docs/maintenance.md, rule D3).
                Err(Error::Missing { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        let plans = DeletionPlan::load_all(storage, keys)?;
        Ok(MasterIndex::from_files(files, &plans))
    }
}

impl Snapshot {
    /// Seals and writes the snapshot. Callers must have written its index first.
    pub(crate) fn save(&self, storage: &Storage, keys: &MasterKeys) -> Result<SnapshotId> {
        let (id, bytes) = self.to_stored(keys)?;
        write(storage, &ObjectKey::Snapshot(id), bytes)?;
        Ok(id)
    }

    /// Reads and verifies one snapshot.
    pub fn load(storage: &Storage, keys: &MasterKeys, id: &SnapshotId) -> Result<Snapshot> {
        let bytes = read_bounded(storage, &ObjectKey::Snapshot(*id))?;
        Snapshot::from_stored(keys, id, &bytes)
    }

    /// Ids of every snapshot in the repository. Keys under `snapshots/` that are not snapshot
    /// names are not Coffer's and are ignored ([`Storage::list_objects`]).
    pub fn list_ids(storage: &Storage) -> Result<Vec<SnapshotId>> {
        Ok(list_keys(storage, ObjectClass::Snapshot)?
            .into_iter()
            .filter_map(|(_, key)| match key {
                ObjectKey::Snapshot(id) => Some(id),
                _ => None,
            })
            .collect())
    }

    /// Every snapshot, oldest first (ties by id), with the damaged ones set apart. A snapshot
    /// deleted between listing and reading (forgotten meanwhile) is left out.
    pub fn load_all(storage: &Storage, keys: &MasterKeys) -> Result<Snapshots> {
        let mut out = Snapshots::default();
        let ids = Snapshot::list_ids(storage)?;
        let loaded = load_each(storage, &ids, |id| Snapshot::load(storage, keys, id));
        for (id, result) in ids.into_iter().zip(loaded) {
            match result {
                Ok(snap) => out.good.push((id, snap)),
                Err(Error::Missing { .. }) => continue,
                Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. })) => {
                    out.damaged.push((id, e))
                }
                Err(e) => return Err(e),
            }
        }
        sort_by_time(&mut out.good);
        Ok(out)
    }

    /// Replaces this snapshot, stored as `id`, with a copy carrying `labels` added
    /// ([`Snapshot::relabelled`]). The copy is written before the old one is deleted, so at
    /// every moment one of them refers to the data: a concurrent prune never sees the tree
    /// unreferenced. Returns the new id.
    pub fn relabel(
        &self,
        storage: &Storage,
        keys: &MasterKeys,
        id: &SnapshotId,
        labels: &BTreeMap<String, String>,
    ) -> Result<SnapshotId> {
        let new_id = self.relabelled(id, labels).save(storage, keys)?;
        if new_id != *id {
            storage.delete(&ObjectKey::Snapshot(*id).to_string())?;
        }
        Ok(new_id)
    }
}

/// Every drill result, oldest first, and the damaged ones apart (id and error).
#[derive(Debug, Default)]
pub struct DrillResults {
    pub good: Vec<(DrillId, DrillResult)>,
    pub damaged: Vec<(DrillId, Error)>,
}

impl DrillResult {
    /// Seals and writes the drill result; returns its id.
    pub fn save(&self, storage: &Storage, keys: &MasterKeys) -> Result<DrillId> {
        let (id, bytes) = self.to_stored(keys)?;
        write(storage, &ObjectKey::Drill(id), bytes)?;
        Ok(id)
    }

    /// Reads and verifies one drill result.
    pub fn load(storage: &Storage, keys: &MasterKeys, id: &DrillId) -> Result<DrillResult> {
        let bytes = read_bounded(storage, &ObjectKey::Drill(*id))?;
        DrillResult::from_stored(keys, id, &bytes)
    }

    /// Every drill result, oldest first (by drill time, ties by id), the damaged ones set
    /// apart. Names under `drills/` that are not drill result names are ignored; a result
    /// deleted between listing and reading is left out.
    pub fn load_all(storage: &Storage, keys: &MasterKeys) -> Result<DrillResults> {
        let mut out = DrillResults::default();
        let ids: Vec<DrillId> = list_keys(storage, ObjectClass::Drill)?
            .into_iter()
            .filter_map(|(_, key)| match key {
                ObjectKey::Drill(id) => Some(id),
                _ => None,
            })
            .collect();
        let loaded = load_each(storage, &ids, |id| DrillResult::load(storage, keys, id));
        for (id, result) in ids.into_iter().zip(loaded) {
            match result {
                Ok(result) => out.good.push((id, result)),
                Err(Error::Missing { .. }) => continue,
                Err(e @ (Error::Corrupt { .. } | Error::UnsupportedVersion { .. })) => {
                    out.damaged.push((id, e))
                }
                Err(e) => return Err(e),
            }
        }
        drill::sort_by_time(&mut out.good);
        Ok(out)
    }
}

impl RepoConfig {
    /// Seals and writes the config. Used once, by `init`.
    pub(crate) fn save(&self, storage: &Storage, keys: &MasterKeys) -> Result<()> {
        write(storage, &ObjectKey::Config, self.to_stored(keys)?)
    }

    /// Reads the stored config, not yet opened (needs no key: it can be fetched while the
    /// password is tried). A missing config is [`Error::Missing`].
    pub(crate) fn fetch(storage: &Storage) -> Result<Bytes> {
        read_bounded(storage, &ObjectKey::Config)
    }

    /// Opens and validates config bytes [`Self::fetch`] read.
    pub(crate) fn open(keys: &MasterKeys, bytes: &[u8]) -> Result<RepoConfig> {
        RepoConfig::from_stored(keys, bytes)
    }
}

impl DeletionPlan {
    /// Compresses, seals and writes the plan; returns its storage key.
    pub fn save(&self, storage: &Storage, keys: &MasterKeys) -> Result<String> {
        let (id, bytes) = self.to_stored(keys)?;
        let key = ObjectKey::Plan(id);
        write(storage, &key, bytes)?;
        Ok(key.to_string())
    }

    /// Reads and verifies plan `id`.
    pub fn load(storage: &Storage, keys: &MasterKeys, id: &PlanId) -> Result<DeletionPlan> {
        let bytes = read_bounded(storage, &ObjectKey::Plan(*id))?;
        DeletionPlan::from_stored(keys, id, &bytes)
    }

    /// Every deletion plan with its storage key, in key order, the damaged ones set apart.
    /// Keys under `plans/` that are not plan names are ignored. A plan deleted between listing
    /// and reading has been carried out and is skipped.
    pub fn load_all(storage: &Storage, keys: &MasterKeys) -> Result<Plans> {
        let mut out = Plans::default();
        let listed: Vec<(String, PlanId)> = list_keys(storage, ObjectClass::Plan)?
            .into_iter()
            .filter_map(|(key, parsed)| match parsed {
                ObjectKey::Plan(id) => Some((key, id)),
                _ => None,
            })
            .collect();
        let loaded = load_each(storage, &listed, |(_, id)| {
            DeletionPlan::load(storage, keys, id)
        });
        for ((key, _), result) in listed.into_iter().zip(loaded) {
            match result {
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
}

impl KeyFile {
    /// Wraps `keys` under `password` ([`KeyFile::wrap`]), created now.
    pub fn create(
        keys: &MasterKeys,
        password: &[u8],
        kdf: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<KeyFile> {
        let now = jiff::Timestamp::now();
        KeyFile::wrap(keys, password, kdf, now, hostname, username)
    }

    /// Writes the key file under its content hash and returns its id.
    pub fn save(&self, storage: &Storage) -> Result<KeyId> {
        let (id, bytes) = self.to_stored()?;
        write(storage, &ObjectKey::KeyFile(id), bytes)?;
        Ok(id)
    }

    /// Reads and verifies key file `id`.
    pub fn load(storage: &Storage, id: &KeyId) -> Result<KeyFile> {
        let bytes = read_bounded(storage, &ObjectKey::KeyFile(*id))?;
        KeyFile::from_stored(id, &bytes)
    }

    /// Finds the key file that `password` opens. Every listed key file is read (each refused
    /// above [`crate::format::keyfile::MAX_KEY_FILE_SIZE`] before it is downloaded) and parsed;
    /// then they are tried, each at most once: those of bounded cost
    /// ([`crate::format::keyfile::BOUNDED_KDF`]) first, cheapest first
    /// ([`crate::format::keyfile::kdf_cost`]), name order among equal costs; the costlier ones
    /// after; a key file above the hard maximum
    /// ([`crate::format::keyfile::MAX_KDF_MEMORY_KIB`]) is never tried. So other key files,
    /// however many and however named, cannot keep the password's own key file from being
    /// tried: before it come only key files no costlier than it, one Argon2id run each. If the
    /// password was tried against at least one key file, the result is [`Error::WrongPassword`];
    /// only if no key file could be tried at all does the error list the damaged ones.
    pub fn open_any(storage: &Storage, password: &[u8]) -> Result<(KeyId, MasterKeys)> {
        // Names that are not key file names are not Coffer's: ignored (check reports them).
        let listed = list_keys(storage, ObjectClass::KeyFile)?;
        if listed.is_empty() {
            return Err(Error::Missing {
                what: "key files",
                id: "keys/".into(),
            });
        }
        let mut damaged = Vec::new();
        let mut candidates = Vec::new();
        for (_, key) in listed {
            let ObjectKey::KeyFile(id) = key else {
                continue;
            };
            match KeyFile::load(storage, &id) {
                Ok(file) => candidates.push((id, file)),
                Err(e @ Error::Corrupt { .. }) => damaged.push(e.to_string()),
                Err(Error::Missing { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        // The sort is stable: name order (the listing's) among equal costs.
        candidates.sort_by_key(|(_, file)| (!kdf_is_bounded(&file.kdf), kdf_cost(&file.kdf)));
        let mut tried = 0usize;
        for (id, file) in candidates {
            match file.unwrap(&id.to_hex(), password) {
                Ok(Some(keys)) => return Ok((id, keys)),
                Ok(None) => tried += 1,
                Err(e) => damaged.push(e.to_string()),
            }
        }
        if tried > 0 || damaged.is_empty() {
            Err(Error::WrongPassword)
        } else {
            Err(Error::corrupt(
                "key files",
                "keys/",
                format!("no key file opened; damaged: {}", list_damaged(&damaged)),
            ))
        }
    }
}

/// The first few damaged key files' errors, and how many more there are.
fn list_damaged(damaged: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut text = damaged[..damaged.len().min(SHOWN)].join("; ");
    if damaged.len() > SHOWN {
        text.push_str(&format!("; and {} more", damaged.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::{BlobId, PackId};
    use crate::format::pack::{BlobKind, Compression, PackedBlob};
    use crate::format::snapshot::Summary;

    fn blob(id: u8, offset: u32) -> PackedBlob {
        PackedBlob {
            kind: BlobKind::Data,
            compression: Compression::None,
            id: BlobId([id; 32]),
            offset,
            length: 100,
            raw_length: 100,
        }
    }

    fn snapshot_at(time: &str) -> Snapshot {
        Snapshot {
            time: time.parse().unwrap(),
            tree: BlobId([7; 32]),
            paths: vec!["/srv".into()],
            hostname: "h".into(),
            username: "u".into(),
            tags: Vec::new(),
            labels: BTreeMap::new(),
            parent: None,
            excludes: Vec::new(),
            program_version: "test".into(),
            key_id: String::new(),
            summary: Summary::default(),
            sources: Vec::new(),
            original: None,
            copied_from: None,
        }
    }

    /// Replaces the object at `key` with `bytes` (storage is create-only).
    fn overwrite(storage: &Storage, key: &str, bytes: Vec<u8>) {
        storage.delete(key).unwrap();
        storage.put_new(key, bytes.into()).unwrap();
    }

    #[test]
    fn objects_above_their_maximum_are_refused_naming_the_limit() {
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        let huge = vec![0u8; ObjectClass::Snapshot.max_size() as usize + 1];
        let id = SnapshotId(crate::format::id::storage_hash(&huge));
        storage
            .put_new(&ObjectKey::Snapshot(id).to_string(), huge.into())
            .unwrap();
        let err = Snapshot::load(&storage, &keys, &id).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Corrupt {
                    what: "snapshot",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("maximum of 16777216 bytes"),
            "{err}"
        );
        let err = Snapshot::load(&storage, &keys, &SnapshotId([1; 32])).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Missing {
                    what: "snapshot",
                    ..
                }
            ),
            "{err}"
        );
        storage
            .put_new("config", vec![0u8; 64 * 1024 + 1].into())
            .unwrap();
        let err = RepoConfig::fetch(&storage)
            .and_then(|b| RepoConfig::open(&keys, &b))
            .unwrap_err();
        assert!(err.to_string().contains("maximum"), "{err}");
    }

    #[test]
    fn index_files_save_load_and_supersede() {
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        let first = IndexFile {
            supersedes: vec![],
            packs: vec![(PackId([1; 32]), vec![blob(1, 0), blob(2, 200)])],
        };
        let first_id = first.save(&storage, &keys).unwrap();
        assert_eq!(IndexFile::load(&storage, &keys, &first_id).unwrap(), first);
        assert_eq!(IndexFile::list_ids(&storage).unwrap(), vec![first_id]);
        let index = MasterIndex::load(&storage, &keys).unwrap();
        assert_eq!(index.len(), 2);
        let second = IndexFile {
            supersedes: vec![first_id],
            packs: vec![(PackId([9; 32]), vec![blob(2, 0)])],
        };
        let second_id = second.save(&storage, &keys).unwrap();
        storage
            .put_new("index/.nfs01", Bytes::from_static(b"x"))
            .unwrap();
        let mut ids = IndexFile::list_ids_newest_first(&storage).unwrap();
        ids.sort();
        let mut want = vec![first_id, second_id];
        want.sort();
        assert_eq!(ids, want);
        let index = MasterIndex::load(&storage, &keys).unwrap();
        assert_eq!(index.len(), 1);
        assert_eq!(index.files(), &[second_id]);
        assert_eq!(index.get(&BlobId([2; 32])).unwrap().pack, PackId([9; 32]));
    }

    #[test]
    fn plans_load_as_pending_and_damaged_plans_are_set_apart() {
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        let plan = DeletionPlan {
            created: jiff::Timestamp::from_millisecond(1_700_000_000_123).unwrap(),
            index_deadline: jiff::Timestamp::from_millisecond(1_700_000_001_123).unwrap(),
            index_files: vec![IndexId([3; 32])],
            packs: vec![
                (PackId([1; 32]), vec![blob(7, 0)]),
                (PackId([2; 32]), vec![]),
            ],
        };
        let key = plan.save(&storage, &keys).unwrap();
        assert!(key.starts_with("plans/"));
        let Some(ObjectKey::Plan(id)) = ObjectKey::parse(&key) else {
            panic!("{key}");
        };
        assert_eq!(DeletionPlan::load(&storage, &keys, &id).unwrap(), plan);
        assert_eq!(
            DeletionPlan::load_all(&storage, &keys).unwrap().good,
            vec![(key.clone(), plan)]
        );
        let index = MasterIndex::load(&storage, &keys).unwrap();
        assert!(index.get(&BlobId([7; 32])).is_some());
        assert!(!index.contains(&BlobId([7; 32])));
        let mut bytes = storage.get("x", &key).unwrap().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        overwrite(&storage, &key, bytes);
        let err = DeletionPlan::load(&storage, &keys, &id).unwrap_err();
        assert!(err.to_string().contains("deletion plan"), "{err}");
        let all = DeletionPlan::load_all(&storage, &keys).unwrap();
        assert!(all.good.is_empty());
        assert_eq!(all.damaged.len(), 1);
        assert_eq!(all.damaged[0].0, key);
        let index = MasterIndex::load(&storage, &keys).unwrap();
        assert!(index.get(&BlobId([7; 32])).is_none());
        assert_eq!(index.damaged_plans().len(), 1);
    }

    #[test]
    fn damaged_snapshots_are_set_apart_and_strays_ignored() {
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        let old = snapshot_at("2026-01-01T00:00:00Z")
            .save(&storage, &keys)
            .unwrap();
        let new = snapshot_at("2026-01-02T00:00:00Z")
            .save(&storage, &keys)
            .unwrap();
        storage
            .put_new("snapshots/.nfs0000abcd", Bytes::from_static(b"x"))
            .unwrap();
        let key = ObjectKey::Snapshot(new).to_string();
        let mut bytes = storage.get("snapshot", &key).unwrap().to_vec();
        bytes[40] ^= 1;
        overwrite(&storage, &key, bytes);
        let all = Snapshot::load_all(&storage, &keys).unwrap();
        assert_eq!(all.good.len(), 1);
        assert_eq!(all.good[0].0, old);
        assert_eq!(all.damaged.len(), 1);
        assert_eq!(all.damaged[0].0, new);
        assert!(all.resolve(&new.to_hex()).is_err());
        assert_eq!(all.resolve("latest").unwrap().0, old);
    }

    #[test]
    fn relabel_writes_the_copy_and_removes_the_original() {
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        let snap = snapshot_at("2026-01-01T00:00:00Z");
        let id = snap.save(&storage, &keys).unwrap();
        let labels = BTreeMap::from([("a".to_string(), "b".to_string())]);
        let new_id = snap.relabel(&storage, &keys, &id, &labels).unwrap();
        assert_ne!(new_id, id);
        assert_eq!(Snapshot::list_ids(&storage).unwrap(), vec![new_id]);
        let copy = Snapshot::load(&storage, &keys, &new_id).unwrap();
        assert_eq!(copy.original, Some(id));
        assert_eq!(copy.labels, labels);
    }

    #[test]
    fn drill_results_save_load_and_damaged_ones_are_set_apart() {
        use crate::format::drill::DrillSourceResult;
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        let at = |time: &str| DrillResult {
            snapshot: SnapshotId([3; 32]),
            snapshot_time: "2026-12-01T03:00:00Z".parse().unwrap(),
            snapshot_hostname: "h".into(),
            snapshot_sources: vec!["files".into()],
            time: time.parse().unwrap(),
            hostname: "h".into(),
            passed: true,
            duration_seconds: Some(1.0),
            rto_seconds: Some(0.5),
            sources: vec![DrillSourceResult {
                name: "files".into(),
                kind: "path".into(),
                passed: true,
                checked: "1 files".into(),
                restore_seconds: Some(0.5),
                verify_seconds: Some(0.1),
                problems: Vec::new(),
            }],
            error: None,
            program_version: "test".into(),
        };
        let late = at("2026-12-06T05:00:00Z").save(&storage, &keys).unwrap();
        let early = at("2026-12-06T04:00:00Z").save(&storage, &keys).unwrap();
        let bad = at("2026-12-06T06:00:00Z").save(&storage, &keys).unwrap();
        storage
            .put_new("drills/.nfs0001", Bytes::from_static(b"x"))
            .unwrap();
        assert_eq!(
            DrillResult::load(&storage, &keys, &early).unwrap(),
            at("2026-12-06T04:00:00Z")
        );
        let key = ObjectKey::Drill(bad).to_string();
        assert_eq!(key, format!("drills/{}", bad.to_hex()));
        let mut bytes = storage.get("x", &key).unwrap().to_vec();
        bytes[30] ^= 1;
        overwrite(&storage, &key, bytes);
        let all = DrillResult::load_all(&storage, &keys).unwrap();
        let ids: Vec<DrillId> = all.good.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [early, late]);
        assert_eq!(all.damaged.len(), 1);
        assert_eq!(all.damaged[0].0, bad);
        assert!(all.damaged[0].1.to_string().contains("drill result"));
    }

    #[test]
    fn a_key_file_above_the_maximum_is_never_tried_and_a_wrong_password_stays_wrong() {
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        let cheap = KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        };
        let good = KeyFile::create(&keys, b"pw", cheap, "h", "u").unwrap();
        let good_id = good.save(&storage).unwrap();
        assert_eq!(KeyFile::load(&storage, &good_id).unwrap(), good);
        let mut huge = good.clone();
        huge.kdf.memory_kib = 4 * 1024 * 1024;
        huge.save(&storage).unwrap();
        storage
            .put_new("keys/README", Bytes::from_static(b"not a key file"))
            .unwrap();
        let (id, _) = KeyFile::open_any(&storage, b"pw").unwrap();
        assert_eq!(id, good_id);
        assert!(matches!(
            KeyFile::open_any(&storage, b"wrong"),
            Err(Error::WrongPassword)
        ));
        // Were it tried, the refusal would come back as damage.
        let err = huge.unwrap("x", b"pw").unwrap_err();
        assert!(err.to_string().contains("not tried"), "{err}");
    }

    #[test]
    fn only_damaged_key_files_is_an_error_listing_them() {
        let storage = Storage::in_memory().unwrap();
        assert!(matches!(
            KeyFile::open_any(&storage, b"pw"),
            Err(Error::Missing { .. })
        ));
        let keys = MasterKeys::generate().unwrap();
        let cheap = KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        };
        let id = KeyFile::create(&keys, b"pw", cheap, "h", "u")
            .unwrap()
            .save(&storage)
            .unwrap();
        let key = ObjectKey::KeyFile(id).to_string();
        overwrite(&storage, &key, b"{}".to_vec());
        let err = KeyFile::open_any(&storage, b"pw").unwrap_err().to_string();
        assert!(err.contains("no key file opened"), "{err}");
        assert!(err.contains(&id.to_hex()), "{err}");
    }

    #[test]
    fn many_decoy_key_files_sorting_first_do_not_lock_the_owner_out() {
        let storage = Storage::in_memory().unwrap();
        let cheap = |m| KdfParams {
            memory_kib: m,
            iterations: 1,
            parallelism: 1,
        };
        let keys = MasterKeys::generate().unwrap();
        // The owner's key file, with a name late in the order.
        let good = loop {
            let file = KeyFile::create(&keys, b"pw", cheap(16), "h", "u").unwrap();
            if file.to_stored().unwrap().0.to_hex().as_bytes()[0] >= b'c' {
                break file;
            }
        };
        let good_id = good.save(&storage).unwrap();
        // 40 decoys of the same cost and 10 cheaper ones (other master keys, other
        // passwords), all named before it; costlier and damaged ones too.
        let other = MasterKeys::generate().unwrap();
        let (mut same, mut cheaper) = (0, 0);
        while same < 40 || cheaper < 10 {
            let memory = if same < 40 { 16 } else { 8 };
            let decoy = KeyFile::create(&other, b"decoy", cheap(memory), "h", "u").unwrap();
            if decoy.to_stored().unwrap().0 .0 >= good_id.0 {
                continue;
            }
            decoy.save(&storage).unwrap();
            if memory == 16 {
                same += 1;
            } else {
                cheaper += 1;
            }
        }
        let mut costly = good.clone();
        costly.kdf.memory_kib = 1024 * 1024 + 1;
        costly.save(&storage).unwrap();
        let mut huge = good.clone();
        huge.kdf.memory_kib = 4 * 1024 * 1024;
        huge.save(&storage).unwrap();
        let mut bad_salt = good.clone();
        bad_salt.salt = "zz".into();
        bad_salt.save(&storage).unwrap();
        storage
            .put_new(
                &format!("keys/{}", "0".repeat(64)),
                Bytes::from_static(b"{}"),
            )
            .unwrap();
        storage
            .put_new("keys/0-stray", Bytes::from_static(b"not a key file"))
            .unwrap();
        let listed = list_keys(&storage, ObjectClass::KeyFile).unwrap();
        let position = listed
            .iter()
            .position(|(_, k)| *k == ObjectKey::KeyFile(good_id))
            .unwrap();
        assert!(position > 50, "{position}");

        let (id, opened) = KeyFile::open_any(&storage, b"pw").unwrap();
        assert_eq!(id, good_id);
        assert_eq!(opened.fingerprint(), keys.fingerprint());
        let (_, opened) = KeyFile::open_any(&storage, b"decoy").unwrap();
        assert_eq!(opened.fingerprint(), other.fingerprint());
        assert!(matches!(
            KeyFile::open_any(&storage, b"wrong"),
            Err(Error::WrongPassword)
        ));
    }

    #[test]
    fn the_list_of_damaged_key_files_is_bounded() {
        let damaged: Vec<String> = (0..20).map(|i| format!("d{i}")).collect();
        assert_eq!(list_damaged(&damaged[..2]), "d0; d1");
        let text = list_damaged(&damaged);
        assert!(
            text.starts_with("d0; d1") && text.ends_with("d7; and 12 more"),
            "{text}"
        );
    }
}

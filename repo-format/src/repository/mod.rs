//! The repository handle: storage, the opened master keys, the configuration, the chunker's gear
//! table and the in-memory index. Operations in `ops/` take a `&Repository`.

pub mod parallel;
pub mod writer;

use crate::error::{Error, Result};
use crate::format::config::{
    ChunkSizes, RepoConfig, CONFIG_KEY, DEFAULT_COMPRESSION_LEVEL, DEFAULT_DUMP_COMPRESSION_LEVEL,
    DEFAULT_PACK_SIZE,
};
use crate::format::id::{BlobId, KeyId, PackId};
use crate::format::index::{BlobLocation, MasterIndex};
use crate::format::keyfile::{self, KeyFile};
use crate::format::pack::{self, BlobKind};
use crate::format::sealed::FORMAT_VERSION;
use crate::format::tree::Tree;
use crate::storage::Storage;
use coffer_chunker::{ChunkerParams, GearTable};
use coffer_crypto::{KdfParams, MasterKeys};

/// Choices made once, at `init`.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub kdf: KdfParams,
    pub chunker_files: ChunkerParams,
    pub chunker_dumps: ChunkerParams,
    pub pack_size: u32,
    pub compression_level: i32,
    /// zstd level for data blobs cut with the dump chunk sizes.
    pub dump_compression_level: i32,
    /// Recorded in the key file.
    pub hostname: String,
    pub username: String,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            kdf: KdfParams::DEFAULT,
            chunker_files: ChunkerParams::FILES,
            chunker_dumps: ChunkerParams::DUMPS,
            pack_size: DEFAULT_PACK_SIZE,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            dump_compression_level: DEFAULT_DUMP_COMPRESSION_LEVEL,
            hostname: String::new(),
            username: String::new(),
        }
    }
}

/// An open repository.
pub struct Repository {
    storage: Storage,
    keys: MasterKeys,
    key_id: KeyId,
    config: RepoConfig,
    gear: GearTable,
    index: MasterIndex,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.storage.location())
            .field("id", &self.config.id)
            .finish_non_exhaustive()
    }
}

impl Repository {
    /// Creates a repository: fresh master keys, one key file for `password`, and the config.
    /// Refuses if a config already exists. The config is written last, so an interrupted
    /// `init` leaves no repository (only a stray key file that a second `init` ignores).
    pub fn init(storage: Storage, password: &[u8], options: &InitOptions) -> Result<Repository> {
        if storage.size(CONFIG_KEY)?.is_some() {
            return Err(Error::AlreadyInitialized {
                location: storage.location().to_string(),
            });
        }
        if password.is_empty() {
            return Err(Error::InvalidInput("the password is empty".into()));
        }
        let keys = MasterKeys::generate()?;
        let mut id = [0u8; 16];
        coffer_crypto::random_fill(&mut id)?;
        let config = RepoConfig {
            version: u32::from(FORMAT_VERSION),
            id: hex::encode(id),
            created: jiff::Timestamp::now().to_string(),
            chunker_files: ChunkSizes::from(options.chunker_files),
            chunker_dumps: ChunkSizes::from(options.chunker_dumps),
            pack_size: options.pack_size,
            compression_level: options.compression_level,
            dump_compression_level: Some(options.dump_compression_level),
        };
        config.validate().map_err(Error::InvalidInput)?;
        let key_file = KeyFile::create(
            &keys,
            password,
            options.kdf,
            &options.hostname,
            &options.username,
        )?;
        let key_id = key_file.save(&storage)?;
        config.save(&storage, &keys)?;
        let gear = GearTable::from_key(keys.chunker_key());
        // An empty index is sorted; lookups on a fresh repository must not trip the assertion.
        let mut index = MasterIndex::default();
        index.sort();
        Ok(Repository {
            storage,
            keys,
            key_id,
            config,
            gear,
            index,
        })
    }

    /// Opens an existing repository with `password` and loads its index (through the metadata
    /// cache when the storage has one).
    pub fn open(storage: Storage, password: &[u8]) -> Result<Repository> {
        Repository::open_inner(storage, password, true)
    }

    /// Opens an existing repository without loading its index (the handle's index is empty).
    /// For `check`, which reads every index file itself so that a damaged one is reported
    /// with everything else instead of stopping the check, and for `forget` and `prune`
    /// (prune loads the index itself, after listing the snapshots).
    pub fn open_without_index(storage: Storage, password: &[u8]) -> Result<Repository> {
        Repository::open_inner(storage, password, false)
    }

    fn open_inner(mut storage: Storage, password: &[u8], load_index: bool) -> Result<Repository> {
        if storage.size(CONFIG_KEY)?.is_none() {
            return Err(Error::NoRepository {
                location: storage.location().to_string(),
            });
        }
        let (key_id, keys) = keyfile::open_any(&storage, password)?;
        let config = RepoConfig::load(&storage, &keys)?;
        storage.enable_cache(&config.id);
        let index = if load_index {
            MasterIndex::load(&storage, &keys)?
        } else {
            MasterIndex::default()
        };
        let gear = GearTable::from_key(keys.chunker_key());
        Ok(Repository {
            storage,
            keys,
            key_id,
            config,
            gear,
            index,
        })
    }

    /// Adds a key file so that `new_password` also opens the repository.
    pub fn add_password(
        &self,
        new_password: &[u8],
        kdf: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<KeyId> {
        if new_password.is_empty() {
            return Err(Error::InvalidInput("the password is empty".into()));
        }
        KeyFile::create(&self.keys, new_password, kdf, hostname, username)?.save(&self.storage)
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    pub fn keys(&self) -> &MasterKeys {
        &self.keys
    }
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }
    pub fn gear(&self) -> &GearTable {
        &self.gear
    }
    pub fn index(&self) -> &MasterIndex {
        &self.index
    }

    /// Chunker parameters for ordinary files.
    pub fn file_params(&self) -> ChunkerParams {
        // Validated when the config was loaded or created.
        self.config
            .chunker_files
            .params()
            .unwrap_or(ChunkerParams::FILES)
    }

    /// Chunker parameters for database dumps.
    pub fn dump_params(&self) -> ChunkerParams {
        self.config
            .chunker_dumps
            .params()
            .unwrap_or(ChunkerParams::DUMPS)
    }

    /// Where blob `id` is, or an error naming it.
    pub fn locate(&self, id: &BlobId) -> Result<BlobLocation> {
        self.index.get(id).ok_or_else(|| Error::Missing {
            what: "blob",
            id: format!("{id} (not in any index)"),
        })
    }

    /// Asks storage to start reading the blobs of several files into memory (see
    /// [`Storage::prefetch`]): their ranges are sorted by pack and offset, and ranges of one
    /// pack less than 64 KiB apart are asked for as one (the files of one directory usually lie
    /// back to back in a pack, so this makes one large read of what would be dozens of small
    /// ones). Blobs missing from the index are skipped; the read that follows reports them.
    pub fn prefetch_blob_lists<'a>(&self, lists: impl IntoIterator<Item = &'a [BlobId]>) {
        const GAP: u64 = 64 << 10;
        if !self.storage.prefetches() {
            return;
        }
        let mut ranges: Vec<(PackId, u64, u64)> = lists
            .into_iter()
            .flatten()
            .filter_map(|id| self.index.get(id))
            .map(|loc| {
                let start = u64::from(loc.blob.offset);
                (loc.pack, start, start + u64::from(loc.blob.length))
            })
            .collect();
        ranges.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut pending: Option<(PackId, u64, u64)> = None;
        let flush = |p: Option<(PackId, u64, u64)>| {
            if let Some((pack, start, end)) = p {
                self.storage.prefetch(&pack::pack_key(&pack), start..end);
            }
        };
        for (pack, start, end) in ranges {
            match &mut pending {
                Some((p, _, e)) if *p == pack && start <= e.saturating_add(GAP) => {
                    *e = (*e).max(end);
                }
                _ => flush(pending.replace((pack, start, end))),
            }
        }
        flush(pending);
    }

    /// Reads, decrypts and verifies one blob.
    pub fn load_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        let start = u64::from(loc.blob.offset);
        let bytes = self.storage.get_range(
            "pack",
            &pack::pack_key(&loc.pack),
            start..start + u64::from(loc.blob.length),
        )?;
        pack::open_blob(&self.keys, &loc.pack, &loc.blob, &bytes)
    }

    /// Reads and parses a tree blob. With a metadata cache, the whole tree pack is fetched once
    /// and kept (tree blobs live in packs of their own, so these packs are small and hold only
    /// metadata); without one, just the blob's range is read.
    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let loc = self.locate(id)?;
        if loc.blob.kind != BlobKind::Tree {
            return Err(Error::corrupt(
                "tree",
                id,
                "the index lists it as a data blob",
            ));
        }
        let plain = if self.storage.cache().is_some() {
            let max = pack::max_pack_size(self.config.pack_size);
            let pack_bytes =
                self.storage
                    .get_bounded_cached("pack", &pack::pack_key(&loc.pack), max)?;
            let start = loc.blob.offset as usize;
            let end = start.saturating_add(loc.blob.length as usize);
            let sealed = pack_bytes.get(start..end).ok_or_else(|| {
                Error::corrupt(
                    "pack",
                    loc.pack,
                    format!("blob {id} at {start}..{end} lies beyond its end"),
                )
            })?;
            pack::open_blob(&self.keys, &loc.pack, &loc.blob, sealed)?
        } else {
            self.load_blob(id)?
        };
        Tree::decode(id, &plain)
    }

    /// Adds packs that a [`crate::repository::writer::BlobWriter`] stored and indexed to the in-memory
    /// index, so a later writer on this handle deduplicates against them.
    pub fn add_indexed_packs(&mut self, packs: &[(PackId, Vec<crate::format::pack::PackedBlob>)]) {
        for (pack, blobs) in packs {
            self.index.add_pack(*pack, blobs);
        }
        self.index.sort();
    }

    /// Reads the blobs `ids` in order, each authenticated and checked against its id, and hands
    /// their plaintext to `sink` in that order. Consecutive blobs in one pack are fetched with
    /// one ranged read (up to 32 MiB).
    pub fn read_blobs(
        &self,
        ids: &[BlobId],
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let locations = self.locate_all(ids)?;
        for run in runs(&locations, 32 << 20) {
            self.read_run(&locations[run], |plaintext| sink(&plaintext))?;
        }
        Ok(())
    }

    /// As [`Self::read_blobs`], with up to `threads` ranged reads (of at most 4 MiB each) fetched
    /// and decrypted at once while `sink` receives the plaintext in order on the calling thread.
    /// At most `threads + 1` reads are ahead of `sink`, so memory stays bounded whatever the
    /// size of the file. The first error stops the readers and is returned.
    pub fn read_blobs_parallel(
        &self,
        ids: &[BlobId],
        threads: usize,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::{Condvar, Mutex};
        let locations = self.locate_all(ids)?;
        let runs = runs(&locations, 4 << 20);
        if threads <= 1 || runs.len() <= 1 {
            for run in runs {
                self.read_run(&locations[run], |plaintext| sink(&plaintext))?;
            }
            return Ok(());
        }
        let window = threads + 1;
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        // How many runs `sink` has consumed; a reader waits until its run is within the window.
        let written = Mutex::new(0usize);
        let moved = Condvar::new();
        let (tx, rx) = crossbeam_channel::bounded::<(usize, Result<Vec<Vec<u8>>>)>(window);
        std::thread::scope(|scope| {
            for _ in 0..threads.min(runs.len()) {
                let tx = tx.clone();
                let (runs, locations, next, stop) = (&runs, &locations, &next, &stop);
                let (written, moved) = (&written, &moved);
                scope.spawn(move || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(run) = runs.get(i) else { return };
                    {
                        let mut done = written.lock().unwrap_or_else(|p| p.into_inner());
                        while i >= *done + window && !stop.load(Ordering::Relaxed) {
                            done = moved.wait(done).unwrap_or_else(|p| p.into_inner());
                        }
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let mut blobs = Vec::with_capacity(run.len());
                    let result = self
                        .read_run(&locations[run.clone()], |plaintext| {
                            blobs.push(plaintext);
                            Ok(())
                        })
                        .map(|()| blobs);
                    if tx.send((i, result)).is_err() {
                        return;
                    }
                });
            }
            drop(tx);
            let mut pending = std::collections::BTreeMap::new();
            let mut want = 0usize;
            let result = (|| {
                for (i, result) in &rx {
                    pending.insert(i, result);
                    while let Some(result) = pending.remove(&want) {
                        for plaintext in result? {
                            sink(&plaintext)?;
                        }
                        want += 1;
                        *written.lock().unwrap_or_else(|p| p.into_inner()) = want;
                        moved.notify_all();
                    }
                }
                Ok(())
            })();
            if result.is_err() {
                // Set under the lock a waiting reader checks it with, so no reader can miss it
                // between its check and its wait.
                {
                    let _done = written.lock().unwrap_or_else(|p| p.into_inner());
                    stop.store(true, Ordering::Relaxed);
                }
                moved.notify_all();
                drop(rx);
            }
            result
        })
    }

    fn locate_all(&self, ids: &[BlobId]) -> Result<Vec<BlobLocation>> {
        ids.iter().map(|id| self.locate(id)).collect()
    }

    /// Fetches consecutive blobs of one pack with one ranged read, opens each and hands its
    /// plaintext to `each`, in order.
    fn read_run(
        &self,
        run: &[BlobLocation],
        mut each: impl FnMut(Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        let (Some(first), Some(last)) = (run.first(), run.last()) else {
            return Ok(());
        };
        let start = u64::from(first.blob.offset);
        let end = u64::from(last.blob.offset) + u64::from(last.blob.length);
        let key = pack::pack_key(&first.pack);
        // Runs are read once (restore, dump): large ones around the page cache.
        self.storage
            .with_range_direct("pack", &key, start..end, |bytes| {
                for loc in run {
                    let from = (u64::from(loc.blob.offset) - start) as usize;
                    let to = from + loc.blob.length as usize;
                    each(pack::open_blob(
                        &self.keys,
                        &loc.pack,
                        &loc.blob,
                        &bytes[from..to],
                    )?)?;
                }
                Ok(())
            })
    }

    /// Every pack file present in storage with its size.
    pub fn list_packs(&self) -> Result<Vec<(PackId, u64)>> {
        let mut out = Vec::new();
        // Keys that are not pack names are not Coffer's: ignored here, reported by check.
        for (key, size) in self.storage.list_objects("data")?.objects {
            if let Some(id) = PackId::from_hex(key.rsplit('/').next().unwrap_or(&key)) {
                out.push((id, size));
            }
        }
        Ok(out)
    }

    /// Every pack file with its size and storage modification time, listed afresh.
    pub fn list_packs_with_times(&self) -> Result<Vec<(PackId, u64, jiff::Timestamp)>> {
        let mut out = Vec::new();
        for (key, size, modified) in self.storage.list_with_times("data")? {
            // Keys that are not pack names are not Coffer's: ignored, as by `list_packs`.
            if !crate::storage::is_object_name("data", &key) {
                continue;
            }
            if let Some(id) = PackId::from_hex(key.rsplit('/').next().unwrap_or(&key)) {
                out.push((id, size, modified));
            }
        }
        Ok(out)
    }
}

/// Splits `locations` into runs of blobs that lie back to back in one pack, each spanning at
/// most `max_bytes` (a single larger blob is a run of its own).
fn runs(locations: &[BlobLocation], max_bytes: u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < locations.len() {
        let first = &locations[i];
        let start = u64::from(first.blob.offset);
        let mut end = start + u64::from(first.blob.length);
        let mut j = i + 1;
        while let Some(next) = locations.get(j) {
            let next_end = u64::from(next.blob.offset) + u64::from(next.blob.length);
            if next.pack != first.pack
                || u64::from(next.blob.offset) != end
                || next_end - start > max_bytes
            {
                break;
            }
            end = next_end;
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
}

/// Options for tests inside this crate: a key derivation that costs nothing.
#[cfg(test)]
pub(crate) fn test_options() -> InitOptions {
    InitOptions {
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    }
}

/// An in-memory repository for tests inside this crate.
#[cfg(test)]
pub(crate) fn test_repo() -> Repository {
    Repository::init(Storage::in_memory().unwrap(), b"pw", &test_options()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::writer::BlobWriter;
    use crate::storage::OpenMode;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// A local repository with 1 MiB packs holding 40 blobs of 100 KiB (incompressible, so
    /// stored raw), written by one writer; returns it reopened, with the ids in order.
    fn repo_with_blobs(dir: &std::path::Path) -> (Repository, Vec<BlobId>, Vec<u8>) {
        let options = InitOptions {
            pack_size: 1024 * 1024,
            ..crate::repository::test_options()
        };
        let location = dir.to_str().unwrap();
        let repo = Repository::init(
            Storage::open(location, OpenMode::Create).unwrap(),
            b"pw",
            &options,
        )
        .unwrap();
        let writer = BlobWriter::new(&repo, 1, Arc::new(AtomicBool::new(false))).unwrap();
        let mut compressor = writer.compressor();
        let mut all = Vec::new();
        let mut ids = Vec::new();
        let mut state = 7u64;
        for _ in 0..40 {
            let mut blob = Vec::with_capacity(100_000);
            while blob.len() < 100_000 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                blob.extend_from_slice(&state.to_le_bytes());
            }
            ids.push(
                writer
                    .store(
                        &mut compressor,
                        crate::format::compress::BlobClass::FileData,
                        &blob,
                    )
                    .unwrap()
                    .0,
            );
            all.extend_from_slice(&blob);
        }
        writer.finish().unwrap();
        let repo =
            Repository::open(Storage::open(location, OpenMode::Existing).unwrap(), b"pw").unwrap();
        (repo, ids, all)
    }

    #[test]
    fn parallel_reads_deliver_every_blob_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, mut ids, all) = repo_with_blobs(dir.path());
        // Blobs spread over several packs, and one read twice, out of pack order.
        ids.push(ids[3]);
        let mut want = all.clone();
        want.extend_from_slice(&all[300_000..400_000]);
        for threads in [1, 2, 3, 8] {
            let mut got = Vec::new();
            repo.read_blobs_parallel(&ids, threads, |b| {
                got.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
            assert!(got == want, "{threads} threads: content differs");
        }
        // An error from the sink stops the read and is returned.
        let mut calls = 0;
        let err = repo
            .read_blobs_parallel(&ids, 4, |_| {
                calls += 1;
                if calls == 5 {
                    Err(Error::Interrupted)
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        assert!(matches!(err, Error::Interrupted), "{err}");
        assert_eq!(calls, 5);
    }

    #[test]
    fn a_damaged_pack_fails_a_parallel_read_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, ids, _) = repo_with_blobs(dir.path());
        let loc = repo.locate(&ids[25]).unwrap();
        let path = dir.path().join(pack::pack_key(&loc.pack));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[loc.blob.offset as usize + 100] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let mut delivered = 0usize;
        let err = repo
            .read_blobs_parallel(&ids, 3, |b| {
                delivered += b.len();
                Ok(())
            })
            .unwrap_err();
        assert!(err.to_string().contains(&loc.pack.to_string()), "{err}");
        // Everything before the damaged blob was delivered, nothing after it.
        assert!(delivered <= 25 * 100_000, "{delivered}");
    }
}

//! The repository handle: storage, the opened master keys, the configuration, the chunker's gear
//! table and the in-memory index. Operations in `ops/` take a `&Repository`.

use crate::config::{
    ChunkSizes, RepoConfig, CONFIG_KEY, DEFAULT_COMPRESSION_LEVEL, DEFAULT_PACK_SIZE,
};
use crate::error::{Error, Result};
use crate::id::{BlobId, KeyId, PackId};
use crate::index::{BlobLocation, MasterIndex};
use crate::keyfile::{self, KeyFile};
use crate::pack::{self, BlobKind};
use crate::sealed::FORMAT_VERSION;
use crate::storage::Storage;
use crate::tree::Tree;
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
    pub fn open(mut storage: Storage, password: &[u8]) -> Result<Repository> {
        if storage.size(CONFIG_KEY)?.is_none() {
            return Err(Error::NoRepository {
                location: storage.location().to_string(),
            });
        }
        let (key_id, keys) = keyfile::open_any(&storage, password)?;
        let config = RepoConfig::load(&storage, &keys)?;
        storage.enable_cache(&config.id);
        let index = MasterIndex::load(&storage, &keys)?;
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
            let pack_bytes = self
                .storage
                .get_cached("pack", &pack::pack_key(&loc.pack))?;
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

    /// Adds packs that a [`crate::writer::BlobWriter`] stored and indexed to the in-memory
    /// index, so a later writer on this handle deduplicates against them.
    pub fn add_indexed_packs(&mut self, packs: &[(PackId, Vec<crate::pack::PackedBlob>)]) {
        for (pack, blobs) in packs {
            self.index.add_pack(*pack, blobs);
        }
        self.index.sort();
    }

    /// Streams the plaintext of `ids`, in order, to `sink`. Blobs that sit next to each other
    /// in the same pack are fetched with one ranged read of up to 32 MiB, which turns a file's
    /// consecutive chunks into a handful of requests.
    pub fn read_blobs(
        &self,
        ids: &[BlobId],
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        const MAX_RUN: u64 = 32 * 1024 * 1024;
        let locations = ids
            .iter()
            .map(|id| self.locate(id))
            .collect::<Result<Vec<_>>>()?;
        let mut i = 0;
        while i < locations.len() {
            let first = locations[i];
            let start = u64::from(first.blob.offset);
            let mut end = start + u64::from(first.blob.length);
            let mut j = i + 1;
            while j < locations.len() {
                let next = &locations[j];
                let next_end = u64::from(next.blob.offset) + u64::from(next.blob.length);
                if next.pack != first.pack
                    || u64::from(next.blob.offset) != end
                    || next_end - start > MAX_RUN
                {
                    break;
                }
                end = next_end;
                j += 1;
            }
            let bytes = self
                .storage
                .get_range("pack", &pack::pack_key(&first.pack), start..end)?;
            for loc in &locations[i..j] {
                let from = (u64::from(loc.blob.offset) - start) as usize;
                let to = from + loc.blob.length as usize;
                sink(&pack::open_blob(
                    &self.keys,
                    &loc.pack,
                    &loc.blob,
                    &bytes[from..to],
                )?)?;
            }
            i = j;
        }
        Ok(())
    }

    /// Every pack file present in storage with its size.
    pub fn list_packs(&self) -> Result<Vec<(PackId, u64)>> {
        let mut out = Vec::new();
        for (key, size) in self.storage.list("data")? {
            let name = key.rsplit('/').next().unwrap_or(&key);
            let id = PackId::from_hex(name)
                .ok_or_else(|| Error::corrupt("pack", &key, "not a pack file name"))?;
            out.push((id, size));
        }
        Ok(out)
    }
}

//! The repository handle: storage, the opened master keys, the configuration, the chunker's gear
//! table and the in-memory index. Operations in `ops/` take a `&Repository`.

pub mod lease;
pub mod parallel;
pub mod plan;
pub mod reader;
pub mod stored;
pub mod writer;

use crate::error::{Error, Result};
use crate::format::config::{
    ChunkSizes, RepoConfig, CONFIG_KEY, DEFAULT_COMPRESSION_LEVEL, DEFAULT_DUMP_COMPRESSION_LEVEL,
    DEFAULT_PACK_SIZE,
};
use crate::format::id::{BlobId, KeyId, PackId};
use crate::format::index::{BlobLocation, MasterIndex};
use crate::format::keyfile::KeyFile;

use crate::format::sealed::FORMAT_VERSION;
use crate::format::tree::Tree;
use crate::storage::Storage;
use coffer_chunker::{ChunkerParams, GearTable};
use coffer_crypto::{KdfParams, MasterKeys};
pub use reader::BlobReader;

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
        // The config is fetched while the key files are listed, read and tried (one round
        // trip instead of three on an object store); its absence says there is no repository
        // here, whatever the key files say. On a store where every request waits for a round
        // trip, the directories read next are listed meanwhile too ([`Storage::list_early`]):
        // the snapshots (nearly every command reads them) and, when the index is loaded, the
        // index files and deletion plans.
        let early: &[&str] = match (storage.read_cost().plans_reads(), load_index) {
            (false, _) => &[],
            (true, true) => &["index", "plans", "snapshots"],
            (true, false) => &["snapshots"],
        };
        let (opened, config) = std::thread::scope(|scope| {
            if !early.is_empty() {
                scope.spawn(|| storage.list_early(early));
            }
            let config = scope.spawn(|| RepoConfig::fetch(&storage));
            let opened = KeyFile::open_any(&storage, password);
            let config = config
                .join()
                .unwrap_or_else(|_| Err(Error::InvalidInput("reading the config failed".into())));
            (opened, config)
        });
        let config = match config {
            Ok(bytes) => bytes,
            Err(Error::Missing { .. }) => {
                return Err(Error::NoRepository {
                    location: storage.location().to_string(),
                })
            }
            Err(e) => return Err(e),
        };
        let (key_id, keys) = opened?;
        let config = RepoConfig::open(&keys, &config)?;
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

    /// A reader of the blobs this handle's index lists: the one read path ([`BlobReader`]).
    pub fn reader(&self) -> BlobReader<'_> {
        BlobReader::new(
            &self.storage,
            &self.keys,
            &self.index,
            self.config.pack_size,
        )
    }

    /// Where blob `id` is, or an error naming it ([`BlobReader::locate`]).
    pub fn locate(&self, id: &BlobId) -> Result<BlobLocation> {
        self.reader().locate(id)
    }

    /// Reads and parses a tree blob, through the metadata cache ([`BlobReader::load_tree`]).
    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        self.reader().load_tree(id)
    }

    /// Reads the blobs `ids` in order into `sink` ([`BlobReader::read_blobs`]).
    pub fn read_blobs(&self, ids: &[BlobId], sink: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.reader().read_blobs(ids, sink)
    }

    /// Adds packs that a [`crate::repository::writer::BlobWriter`] stored and indexed to the in-memory
    /// index, so a later writer on this handle deduplicates against them.
    pub fn add_indexed_packs(&mut self, packs: &[(PackId, Vec<crate::format::pack::PackedBlob>)]) {
        for (pack, blobs) in packs {
            self.index.add_pack(*pack, blobs);
        }
        self.index.sort();
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

//! The repository configuration: `config`, a sealed JSON document written once by `init`.
//!
//! Pure: bytes in, typed values out; reading and writing it is `repository/stored.rs`'s.

use crate::error::{Error, Result};
use crate::format::sealed::{self, ObjectKind};
use coffer_chunker::ChunkerParams;
use coffer_crypto::MasterKeys;
use serde::{Deserialize, Serialize};

/// Storage key of the configuration object ([`crate::format::key::ObjectKey::Config`]).
pub const CONFIG_KEY: &str = crate::format::key::CONFIG;
/// The largest config object read (bytes).
pub const MAX_CONFIG_SIZE: u64 = 64 * 1024;
/// Default target size of a pack file.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
/// Smallest and largest accepted pack target sizes.
pub const PACK_SIZE_RANGE: std::ops::RangeInclusive<u32> = 64 * 1024..=512 * 1024 * 1024;
/// Default zstd level.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;
/// Default zstd level for blobs cut with the dump chunk sizes (16 KiB on average). A block that
/// small gives zstd's slower match finders little history to use: on five corpora cut in
/// 16 KiB blocks, level 1 stored between 5.5% less and 3.5% more than level 3 and compressed
/// 1.0-1.8x as fast (docs/benchmarks.md, "Compression of dump chunks").
pub const DEFAULT_DUMP_COMPRESSION_LEVEL: i32 = 1;

/// Chunk sizes as stored in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSizes {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl ChunkSizes {
    /// Validated chunker parameters.
    pub fn params(&self) -> std::result::Result<ChunkerParams, String> {
        ChunkerParams::new(self.min, self.avg, self.max).map_err(|e| e.to_string())
    }
}

impl From<ChunkerParams> for ChunkSizes {
    fn from(p: ChunkerParams) -> Self {
        ChunkSizes {
            min: p.min_size(),
            avg: p.avg_size(),
            max: p.max_size(),
        }
    }
}

/// The repository configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Format version; equal to the envelope's version byte.
    pub version: u32,
    /// Random repository id (32 hex digits), stable for the repository's life.
    pub id: String,
    /// When `init` ran (RFC 3339).
    pub created: String,
    /// Chunk sizes for ordinary files.
    pub chunker_files: ChunkSizes,
    /// Chunk sizes for database dump streams.
    pub chunker_dumps: ChunkSizes,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// zstd level for file data and tree blobs (and dump data when `dump_compression_level` is
    /// absent); `format::compress::CompressionLevels` applies it.
    pub compression_level: i32,
    /// zstd level for data blobs cut with the dump chunk sizes; absent in configs written
    /// before it existed, which compress every blob at `compression_level`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_compression_level: Option<i32>,
}

impl RepoConfig {
    /// Checks every value that later code relies on.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.version != u32::from(sealed::FORMAT_VERSION) {
            return Err(format!(
                "config version {} differs from its envelope",
                self.version
            ));
        }
        self.chunker_files
            .params()
            .map_err(|e| format!("chunker_files: {e}"))?;
        self.chunker_dumps
            .params()
            .map_err(|e| format!("chunker_dumps: {e}"))?;
        if !PACK_SIZE_RANGE.contains(&self.pack_size) {
            return Err(format!(
                "pack_size {} outside {:?}",
                self.pack_size, PACK_SIZE_RANGE
            ));
        }
        if !(1..=19).contains(&self.compression_level) {
            return Err(format!(
                "compression_level {} outside 1..=19",
                self.compression_level
            ));
        }
        if let Some(level) = self.dump_compression_level {
            if !(1..=19).contains(&level) {
                return Err(format!("dump_compression_level {level} outside 1..=19"));
            }
        }
        Ok(())
    }

    /// The stored form: sealed JSON. Written once, by `init`.
    pub fn to_stored(&self, keys: &MasterKeys) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(self).map_err(Error::internal)?;
        sealed::seal(keys, ObjectKind::Config, &json)
    }

    /// Verifies, parses and validates the stored config.
    pub fn from_stored(keys: &MasterKeys, bytes: &[u8]) -> Result<RepoConfig> {
        if bytes.len() as u64 > MAX_CONFIG_SIZE {
            return Err(Error::corrupt(
                "config",
                CONFIG_KEY,
                format!("{} bytes is too large", bytes.len()),
            ));
        }
        let plain = sealed::open(keys, ObjectKind::Config, "config", CONFIG_KEY, bytes)?;
        let config: RepoConfig =
            serde_json::from_slice(&plain).map_err(|e| Error::corrupt("config", CONFIG_KEY, e))?;
        config
            .validate()
            .map_err(|e| Error::corrupt("config", CONFIG_KEY, e))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::compress::{BlobClass, CompressionLevels};

    fn config(dump: Option<i32>) -> RepoConfig {
        RepoConfig {
            version: u32::from(sealed::FORMAT_VERSION),
            id: "00".repeat(16),
            created: "2026-12-01T00:00:00Z".into(),
            chunker_files: ChunkerParams::FILES.into(),
            chunker_dumps: ChunkerParams::DUMPS.into(),
            pack_size: DEFAULT_PACK_SIZE,
            compression_level: 3,
            dump_compression_level: dump,
        }
    }

    #[test]
    fn a_config_without_a_dump_level_compresses_dumps_at_the_common_level() {
        // As written before the field existed.
        let mut json = serde_json::to_value(config(None)).unwrap();
        assert!(json.get("dump_compression_level").is_none());
        json["compression_level"] = 5.into();
        let old: RepoConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.validate(), Ok(()));
        assert_eq!(CompressionLevels::of(&old).level(BlobClass::DumpData), 5);
    }

    #[test]
    fn stored_form_round_trips_and_refuses_damage() {
        let keys = MasterKeys::generate().unwrap();
        let c = config(Some(2));
        let bytes = c.to_stored(&keys).unwrap();
        assert_eq!(RepoConfig::from_stored(&keys, &bytes).unwrap(), c);
        let other = MasterKeys::generate().unwrap();
        assert!(RepoConfig::from_stored(&other, &bytes).is_err());
        for cut in 0..bytes.len() {
            assert!(
                RepoConfig::from_stored(&keys, &bytes[..cut]).is_err(),
                "{cut}"
            );
        }
        // Sealed correctly but invalid: refused as corrupt, naming the config.
        let mut bad = c;
        bad.pack_size = 1;
        let err = RepoConfig::from_stored(&keys, &bad.to_stored(&keys).unwrap()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config config is corrupt: pack_size"),
            "{err}"
        );
    }

    #[test]
    fn the_dump_level_round_trips_and_is_validated() {
        let c = config(Some(DEFAULT_DUMP_COMPRESSION_LEVEL));
        let back: RepoConfig = serde_json::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!(CompressionLevels::of(&back).level(BlobClass::DumpData), 1);
        for bad in [0, 20, -1] {
            let err = config(Some(bad)).validate().unwrap_err();
            assert!(err.contains("dump_compression_level"), "{err}");
        }
    }
}

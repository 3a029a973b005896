//! How a blob is compressed: the one place that picks a zstd level (by [`BlobClass`], from the
//! repository configuration), decides whether compressing is worth it, and decompresses.
//!
//! Pure computation on bytes: it may use `format::config` and `format::pack`'s types and the
//! zstd library, never storage or the file system. The levels it picks are part of what a
//! repository stores (a blob's sealed bytes depend on them), so they are chosen exactly as every
//! earlier version chose them: file data and trees at `compression_level`, dump data at
//! `dump_compression_level` (or `compression_level` in configs written before that field).

use crate::error::{Error, Result};
use crate::format::config::RepoConfig;
use crate::format::pack::BlobKind;
use std::cell::RefCell;

/// What a blob holds, as far as compression cares: the kind stored in the pack, plus whether a
/// data blob was cut with the dump chunk sizes. The chunker decision sets it, and it travels
/// with the chunk to the writer, so nothing downstream has to guess it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlobClass {
    /// A chunk of an ordinary file or stream, cut with the file chunk sizes.
    FileData,
    /// A chunk of a database dump, cut with the dump chunk sizes (small blocks, which zstd's
    /// fast levels compress about as well as its slower ones).
    DumpData,
    /// A serialized directory tree.
    Tree,
}

impl BlobClass {
    /// The kind recorded in the pack header (dump data is data).
    pub fn kind(self) -> BlobKind {
        match self {
            BlobClass::FileData | BlobClass::DumpData => BlobKind::Data,
            BlobClass::Tree => BlobKind::Tree,
        }
    }

    /// The class of a blob copied from another repository that compresses at other levels: a
    /// pack does not record whether a data blob was a dump chunk, so every data blob gets the
    /// common level, [`BlobClass::FileData`]'s. (Between repositories with the same levels a
    /// copied blob keeps the frame it was stored as.)
    pub fn of_copied(kind: BlobKind) -> BlobClass {
        match kind {
            BlobKind::Data => BlobClass::FileData,
            BlobKind::Tree => BlobClass::Tree,
        }
    }

    fn slot(self) -> usize {
        match self {
            BlobClass::FileData => 0,
            BlobClass::DumpData => 1,
            BlobClass::Tree => 2,
        }
    }
}

/// The zstd level of each blob class, read once from the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressionLevels {
    pub file_data: i32,
    pub dump_data: i32,
    pub tree: i32,
}

impl CompressionLevels {
    /// The levels a repository's blobs get. A config without `dump_compression_level` (written
    /// before it existed) compresses dump chunks at `compression_level`, like everything else.
    pub fn of(config: &RepoConfig) -> CompressionLevels {
        CompressionLevels {
            file_data: config.compression_level,
            dump_data: config
                .dump_compression_level
                .unwrap_or(config.compression_level),
            tree: config.compression_level,
        }
    }

    /// The level for blobs of `class`.
    pub fn level(&self, class: BlobClass) -> i32 {
        match class {
            BlobClass::FileData => self.file_data,
            BlobClass::DumpData => self.dump_data,
            BlobClass::Tree => self.tree,
        }
    }
}

/// Compresses blobs at their class's level, for one thread. Each class keeps its own zstd
/// context, made on first use: a context sized for 1 MiB file chunks would otherwise be shrunk
/// and regrown as 16 KiB dump chunks and file chunks alternate, and a worker that only ever
/// sees data never pays for a tree context.
pub struct BlobCompressor {
    levels: CompressionLevels,
    contexts: [Option<zstd::bulk::Compressor<'static>>; 3],
}

impl std::fmt::Debug for BlobCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobCompressor")
            .field("levels", &self.levels)
            .finish_non_exhaustive()
    }
}

impl BlobCompressor {
    /// A compressor using `levels`; no zstd context is made until the first blob.
    pub fn new(levels: CompressionLevels) -> BlobCompressor {
        BlobCompressor {
            levels,
            contexts: [None, None, None],
        }
    }

    /// The levels this compressor uses.
    pub fn levels(&self) -> CompressionLevels {
        self.levels
    }

    /// `plaintext` compressed at its class's level, or `None` when it is stored as is: zstd
    /// would not shrink it by more than 1/64, the sample says it is incompressible, or zstd
    /// failed on it (the blob is then stored raw, which is always valid). Fails only when no
    /// zstd context can be made.
    pub fn compress(&mut self, class: BlobClass, plaintext: &[u8]) -> Result<Option<Vec<u8>>> {
        if looks_incompressible(plaintext) {
            return Ok(None);
        }
        let slot = &mut self.contexts[class.slot()];
        let context = match slot.take() {
            Some(context) => slot.insert(context),
            None => slot.insert(
                zstd::bulk::Compressor::new(self.levels.level(class))
                    .map_err(|e| Error::io("starting the compressor for", "backup", e))?,
            ),
        };
        Ok(context
            .compress(plaintext)
            .ok()
            .filter(|c| c.len() + c.len() / 64 < plaintext.len()))
    }
}

/// A cheap test for data that zstd cannot shrink (encrypted, already compressed, media): compress
/// a 4 KiB sample at the fastest level and see whether it shrinks by at least 3%. Blobs under
/// 64 KiB (dump chunks average 16 KiB) are not sampled: compressing them whole costs little,
/// and the sample would be extra work for every compressible one.
fn looks_incompressible(data: &[u8]) -> bool {
    const SAMPLE: usize = 4096;
    const SAMPLED_FROM: usize = 64 * 1024;
    if data.len() < SAMPLED_FROM {
        return false;
    }
    let mid = data.len() / 2;
    let sample = &data[mid..mid + SAMPLE];
    thread_local! {
        // One context per thread: creating a zstd context costs more than a 4 KiB sample.
        static SAMPLER: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    }
    SAMPLER.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = zstd::bulk::Compressor::new(1).ok();
        }
        match cell.as_mut().map(|c| c.compress(sample)) {
            Some(Ok(c)) => c.len() * 100 > SAMPLE * 97,
            _ => false,
        }
    })
}

/// Decompresses one zstd frame of at most `capacity` bytes with this thread's reusable context.
pub(crate) fn decompress(payload: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    }
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Decompressor::new()?);
        }
        match cell.as_mut() {
            Some(d) => d.decompress(payload, capacity),
            None => zstd::bulk::decompress(payload, capacity),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::config::DEFAULT_PACK_SIZE;
    use coffer_chunker::ChunkerParams;

    fn config(level: i32, dump: Option<i32>) -> RepoConfig {
        RepoConfig {
            version: u32::from(crate::format::sealed::FORMAT_VERSION),
            id: "00".repeat(16),
            created: "2026-12-01T00:00:00Z".into(),
            chunker_files: ChunkerParams::FILES.into(),
            chunker_dumps: ChunkerParams::DUMPS.into(),
            pack_size: DEFAULT_PACK_SIZE,
            compression_level: level,
            dump_compression_level: dump,
        }
    }

    #[test]
    fn levels_are_those_of_every_earlier_version() {
        let levels = CompressionLevels::of(&config(3, Some(1)));
        assert_eq!(levels.level(BlobClass::FileData), 3);
        assert_eq!(levels.level(BlobClass::DumpData), 1);
        assert_eq!(levels.level(BlobClass::Tree), 3);
        // A config written before the dump level existed: everything at the common level.
        let old = CompressionLevels::of(&config(5, None));
        for class in [BlobClass::FileData, BlobClass::DumpData, BlobClass::Tree] {
            assert_eq!(old.level(class), 5, "{class:?}");
        }
    }

    #[test]
    fn classes_map_to_their_stored_kind() {
        assert_eq!(BlobClass::FileData.kind(), BlobKind::Data);
        assert_eq!(BlobClass::DumpData.kind(), BlobKind::Data);
        assert_eq!(BlobClass::Tree.kind(), BlobKind::Tree);
        assert_eq!(BlobClass::of_copied(BlobKind::Data), BlobClass::FileData);
        assert_eq!(BlobClass::of_copied(BlobKind::Tree), BlobClass::Tree);
    }

    #[test]
    fn each_class_is_compressed_exactly_as_plain_zstd_at_its_level() {
        let text: Vec<u8> = (0..3000u32)
            .map(|i| format!("{i},{},'row {}',2026-12-06\n", i * 7919 % 1000, i % 37))
            .collect::<String>()
            .into_bytes();
        let mut compressor = BlobCompressor::new(CompressionLevels::of(&config(9, Some(1))));
        for (class, level) in [
            (BlobClass::FileData, 9),
            (BlobClass::DumpData, 1),
            (BlobClass::Tree, 9),
        ] {
            let expected = zstd::bulk::compress(&text, level).unwrap();
            let got = compressor.compress(class, &text).unwrap();
            assert_eq!(got.as_deref(), Some(&expected[..]), "{class:?}");
        }
        // Level 1 and level 9 really differ here, so the test would notice a swapped level.
        assert_ne!(
            zstd::bulk::compress(&text, 1).unwrap(),
            zstd::bulk::compress(&text, 9).unwrap()
        );
    }

    #[test]
    fn incompressible_blobs_are_stored_as_they_are() {
        let mut random = vec![0u8; 100_000];
        coffer_crypto::random_fill(&mut random).unwrap();
        assert!(looks_incompressible(&random));
        assert!(!looks_incompressible(&vec![0u8; 100_000]));
        // Below the threshold the blob is compressed whole; random bytes then stay raw
        // because the frame is not smaller.
        assert!(!looks_incompressible(&random[..20_000]));
        let mut compressor = BlobCompressor::new(CompressionLevels::of(&config(3, None)));
        assert_eq!(
            compressor.compress(BlobClass::FileData, &random).unwrap(),
            None
        );
        assert_eq!(
            compressor
                .compress(BlobClass::DumpData, &random[..20_000])
                .unwrap(),
            None
        );
        let zeros = compressor
            .compress(BlobClass::FileData, &[0u8; 100_000])
            .unwrap()
            .unwrap();
        assert_eq!(decompress(&zeros, 100_000).unwrap(), vec![0u8; 100_000]);
    }
}

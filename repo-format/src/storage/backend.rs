//! The primitive operations every store offers, as one trait: what a local directory, an object
//! store (S3, GCS) and the in-memory store each implement, and what a fault-injecting store will
//! wrap. Everything above it (the listings a handle remembers, the verified cache, connection
//! counts) lives once in the [`Storage`](super::Storage) facade. May use the error type and
//! `bytes`; knows nothing of the repository's format.
//!
//! Keys are relative to the repository root (`data/ab/ab12…`, `snapshots/…`); `what` names the
//! kind of object for messages (`"pack"`, `"snapshot"`). The contract, checked for every backend
//! by the conformance suite (`repo-format/tests/support/storage_conformance.rs`):
//! - a missing object is [`Error::Missing`] naming `what` and the key;
//! - a range read returns exactly the range's bytes, or [`Error::Corrupt`] when the object is
//!   shorter (the index promised more);
//! - `put_new` never replaces an object: an existing name already holds these bytes (names are
//!   hashes), so finding it is success;
//! - `delete` of a missing object succeeds;
//! - listings are by directory (`data` lists `data/…`, never `database/…`).

use crate::error::{Error, Result};
use bytes::Bytes;
use std::ops::Range;

/// One object in a listing.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectInfo {
    /// Its key, relative to the repository root.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When the store last wrote it (a file's mtime, an object's `Last-Modified`): leases and
    /// staging objects are judged stale by it.
    pub modified: jiff::Timestamp,
}

/// What one read request costs on a store, expressed in bytes, so that readers plan requests
/// without asking which kind of store they talk to. A local file's ranged read costs next to
/// nothing beyond its bytes, so reading exactly what is needed wins; an object store charges
/// each request a round trip (tens of milliseconds, more across a continent) and a price, so
/// reading a few megabytes more in one request beats a second request for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadCost {
    /// How many bytes take as long to transfer as one request's own overhead: two ranges of one
    /// object closer than this are cheaper read as one. Zero where requests cost nothing extra.
    pub request_bytes: u64,
}

impl ReadCost {
    /// A local directory (or memory): requests are free, read exactly what is needed.
    pub const LOCAL: ReadCost = ReadCost { request_bytes: 0 };

    /// An object store (S3, GCS): one request costs about as much as 8 MiB of transfer (a
    /// 40-80 ms round trip at 100-200 MB/s), so ranges of one 16 MiB pack closer than that are
    /// read together, which usually means the whole pack in one request.
    pub const REMOTE: ReadCost = ReadCost {
        request_bytes: 8 << 20,
    };

    /// Whether requests cost enough that reads are planned (fewer, larger requests).
    pub fn plans_reads(&self) -> bool {
        self.request_bytes > 0
    }
}

/// A closure handed the bytes of a range read, called once when the read succeeds. A trait
/// object cannot take a generic closure, so [`Storage::with_range`](super::Storage::with_range)
/// wraps its caller's one in this.
pub type RangeSink<'a> = &'a mut dyn FnMut(&[u8]) -> Result<()>;

/// A store's primitive operations. Implementations are shared by every clone of a handle and
/// called from many plain threads at once, so they are `Send + Sync` and block the caller.
pub trait Backend: Send + Sync {
    /// Writes an immutable, content-addressed object atomically (no reader sees part of it);
    /// an object already under `key` is kept and counts as success.
    fn put_new(&self, key: &str, bytes: Bytes) -> Result<()>;

    /// As [`Self::put_new`], for a pack of file data (no trees): rarely read after it is
    /// written, so a store configured with a cheaper storage class for data puts it there.
    /// Everything else (index, snapshots, keys, tree packs) goes through [`Self::put_new`].
    fn put_data_pack(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.put_new(key, bytes)
    }

    /// Reads a whole object.
    fn get(&self, what: &'static str, key: &str) -> Result<Bytes>;

    /// Reads a whole object of at most `max` bytes, refusing a larger one with
    /// [`too_large`] before downloading or allocating it. `known_size` is the object's size in
    /// a listing the caller remembers, which saves asking the store for it; an object deleted
    /// since then is still [`Error::Missing`].
    fn get_bounded(
        &self,
        what: &'static str,
        key: &str,
        max: u64,
        known_size: Option<u64>,
    ) -> Result<Bytes>;

    /// Reads `range` of an object: exactly that many bytes, or an error.
    fn get_range(&self, what: &'static str, key: &str, range: Range<u64>) -> Result<Bytes>;

    /// Reads `range` of an object and hands the bytes to `sink` (once, if the read succeeds).
    /// A backend that can read into a reused buffer does so here, saving an allocation per read.
    fn with_range(
        &self,
        what: &'static str,
        key: &str,
        range: Range<u64>,
        sink: RangeSink<'_>,
    ) -> Result<()> {
        sink(&self.get_range(what, key, range)?)
    }

    /// As [`Self::with_range`], for a large range of a pack read once and not again soon: a
    /// backend that can read around its page cache does so here.
    fn with_range_direct(
        &self,
        what: &'static str,
        key: &str,
        range: Range<u64>,
        sink: RangeSink<'_>,
    ) -> Result<()> {
        self.with_range(what, key, range, sink)
    }

    /// Whether [`Self::prefetch`] does anything on this backend.
    fn prefetches(&self) -> bool {
        false
    }

    /// Advice that `range` of `key` will be read soon; errors are ignored.
    fn prefetch(&self, _key: &str, _range: Range<u64>) {}

    /// Whether [`Self::with_range_direct`] currently reads around the page cache (such reads
    /// wait for the disk, so callers run one thread more).
    fn reads_directly(&self) -> bool {
        false
    }

    /// What a read request costs here ([`ReadCost`]): readers coalesce ranges by it.
    fn read_cost(&self) -> ReadCost {
        ReadCost::LOCAL
    }

    /// Forgets whatever the backend keeps about `key` (open descriptors), after it was deleted.
    fn forget(&self, _key: &str) {}

    /// The size of an object, or `None` if it does not exist.
    fn size(&self, key: &str) -> Result<Option<u64>>;

    /// Every object under `dir/`, in any order.
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>>;

    /// Deletes an object; deleting a missing object succeeds.
    fn delete(&self, key: &str) -> Result<()>;

    /// Every staging file a write left behind (a crash between writing it and linking it under
    /// its name), anywhere in the store, with its size and the time it was last written; keys
    /// are relative to the repository root and end in `#DIGITS` ([`is_staging_name`]). A store
    /// whose uploads are atomic (S3, GCS, memory) has none: the default is empty.
    fn staging_leftovers(&self) -> Result<Vec<ObjectInfo>> {
        Ok(Vec::new())
    }

    /// Deletes the staging file `key` (one [`Self::staging_leftovers`] listed); deleting a
    /// missing one succeeds. Only a store with staging files has anything to delete.
    fn delete_staging(&self, key: &str) -> Result<()> {
        Err(Error::internal(format!(
            "this store has no staging files, asked to delete {key}"
        )))
    }
}

/// Whether `name` (the last part of a key) is a staging file's: `NAME#DIGITS`, the local
/// store's convention and object_store's. Never an object; listings skip it.
pub fn is_staging_name(name: &str) -> bool {
    match name.split_once('#') {
        Some((_, suffix)) => !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// The error for an object of `size` bytes above the maximum `max` of its kind: damage (or an
/// attack), refused before reading it.
pub fn too_large(what: &'static str, key: &str, size: u64, max: u64) -> Error {
    Error::corrupt(
        what,
        key,
        format!("{size} bytes is more than the maximum of {max} bytes for a {what}"),
    )
}

/// The error for a read of `range` of `key` that found only `got` bytes: the object is shorter
/// than the index says.
pub fn short_read(what: &'static str, key: &str, got: usize, range: &Range<u64>) -> Error {
    Error::corrupt(
        what,
        key,
        format!(
            "shorter than expected (read {got} bytes of range {}..{})",
            range.start, range.end
        ),
    )
}

/// The error for a missing object.
pub fn missing(what: &'static str, key: &str) -> Error {
    Error::Missing {
        what,
        id: key.to_string(),
    }
}

//! The one seam between Coffer and the bytes at rest. Three floors, each its own file:
//!
//! - [`Backend`] (`backend.rs`): the primitive operations of a store (put-if-absent, get, range
//!   get, bounded get, size, list, delete; and the staging files crashed writes left, which only
//!   a local directory has), implemented by [`LocalBackend`] (a local directory:
//!   durable writes, file modes, kept descriptors, direct I/O), [`ObjectBackend`] (S3 and GCS
//!   through object_store, errors mapped by type) and [`MemoryBackend`] (tests, and the inner
//!   store of a fault-injecting one);
//! - the verified [`Cache`] (`cache.rs`) of immutable metadata, with its policy [`CacheUse`]
//!   saying which object classes it holds;
//! - [`Storage`] (here): the facade the rest of the crate calls, over any backend. It remembers
//!   listings (updated by its own writes and deletes, so a command lists each directory at most
//!   once), applies the cache policy, takes bounded reads' sizes from those listings, names the
//!   connection count, and scrubs secrets from messages (`scrub.rs`); `open.rs` opens it from a
//!   location, `listings.rs` keeps the listings.
//!
//! A location is a local path (or `file:///path`), `s3://bucket/prefix` or `gs://bucket/prefix`.
//! Object stores are configured the way object_store configures them: from the environment
//! (`AWS_*`, `GOOGLE_*`) and from `KEY=VALUE` options using object_store's configuration keys,
//! plus two keys of Coffer's own for the retry policy (`max_retries`, `retry_timeout`). Every
//! repository object is addressed by a key such as `data/ab/ab12…` relative to the repository
//! root (the prefix). Objects are immutable and content-addressed, so an object that already
//! exists under its name already holds those bytes: writing it again is success. Writes are
//! atomic on every supported store. Errors name the operation and the location (bucket and key)
//! and never carry a configured secret.
//!
//! The storage floor may use `fs/` (direct I/O, safe directory walks) and the format's storage
//! hash; it knows nothing else of the repository. It is synchronous: object stores block the
//! calling thread on a private runtime, so callers use plain threads (never a runtime's).

pub mod backend;
pub mod cache;
pub mod faulty;
mod listings;
pub mod local;
pub mod memory;
pub mod object;
mod open;
pub mod planned;
mod scrub;
pub mod throttle;

pub use backend::{Backend, ObjectInfo, ReadCost};
pub use cache::{Cache, CacheUse};
pub use listings::{is_object_name, Listing};
pub use local::{LocalBackend, LocalModes};
pub use memory::MemoryBackend;
pub use object::{
    parse_duration, ObjectBackend, DEFAULT_MAX_RETRIES, DEFAULT_RETRY_TIMEOUT, MULTIPART_PART_SIZE,
    MULTIPART_THRESHOLD,
};
pub use open::{
    OpenMode, StorageOptions, StoreKind, DEFAULT_LOCAL_CONNECTIONS, DEFAULT_REMOTE_CONNECTIONS,
};
pub use planned::{ReadPlan, Segment, PLANNED_BYTES};
pub use scrub::scrub_url_credentials;

use crate::error::{Error, Result};
use bytes::Bytes;
use listings::Listings;
use scrub::Secrets;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// A handle on the storage that holds one repository: a backend, and what every backend shares
/// (remembered listings, the verified cache, the connection count). Clones share all of it.
#[derive(Clone)]
pub struct Storage {
    backend: Arc<dyn Backend>,
    kind: StoreKind,
    /// How the user named the location, for messages (never carries credentials).
    location: String,
    /// How many requests to run at once (uploads during backup, downloads during copy).
    connections: usize,
    /// Configured secret values, removed from every message.
    secrets: Arc<Secrets>,
    /// Listings already made by this handle, by directory, kept current by its own writes.
    listings: Arc<Listings>,
    /// Listings made ahead of their use ([`Storage::list_early`]), each taken once.
    early: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<ObjectInfo>>>>,
    cache_root: Option<PathBuf>,
    cache: Option<Arc<Cache>>,
    /// The read plan an operation follows ([`Storage::follow_plan`]), shared by every clone.
    plan: Arc<std::sync::RwLock<Option<Arc<planned::Planned>>>>,
}

/// Keeps a plan followed by a [`Storage`] ([`Storage::follow_plan`]) while it lives; dropping
/// it goes back to the plan followed before (usually none), freeing every segment kept.
#[must_use = "the plan is followed only while the guard lives"]
pub struct PlanGuard {
    slot: Arc<std::sync::RwLock<Option<Arc<planned::Planned>>>>,
    before: Option<Arc<planned::Planned>>,
    planned: Arc<planned::Planned>,
    /// The threads fetching segments ahead of the readers; stopped and joined on drop.
    ahead: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for PlanGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanGuard").finish_non_exhaustive()
    }
}

impl Drop for PlanGuard {
    fn drop(&mut self) {
        self.planned
            .stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.ahead.drain(..) {
            let _ = thread.join();
        }
        *self.slot.write().unwrap_or_else(|p| p.into_inner()) = self.before.take();
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("location", &self.location)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

/// Calls `f` with the bytes a backend hands to a [`backend::RangeSink`] and keeps its result:
/// the bridge from a caller's generic closure to the trait object's.
fn once_sink<'a, R>(
    f: impl FnOnce(&[u8]) -> Result<R> + 'a,
    out: &'a mut Option<R>,
) -> impl FnMut(&[u8]) -> Result<()> + 'a {
    let mut f = Some(f);
    move |bytes| {
        let f = f
            .take()
            .ok_or_else(|| Error::internal("a storage backend handed a range over twice"))?;
        *out = Some(f(bytes)?);
        Ok(())
    }
}

impl Storage {
    /// Starts serving immutable metadata of repository `repo_id` from the cache, if this handle
    /// was opened with a cache root. A cache that cannot be created is skipped silently: it is
    /// an optimisation, never a requirement.
    pub fn enable_cache(&mut self, repo_id: &str) {
        if let Some(root) = &self.cache_root {
            self.cache = Cache::open(root, repo_id).ok().map(Arc::new);
        }
    }

    /// The cache in use, if any.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_deref()
    }

    /// What kind of store this is.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// How many requests to run at once.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Sets how many requests to run at once (at least 1).
    pub fn set_connections(&mut self, n: usize) {
        self.connections = n.max(1);
    }

    /// What one read request costs here: readers plan their requests by it
    /// ([`ReadCost::plans_reads`]).
    pub fn read_cost(&self) -> ReadCost {
        self.backend.read_cost()
    }

    /// Follows `plan` until the guard is dropped: every range read (by any clone of this
    /// handle) that lies inside a planned segment is served from that segment, fetched with
    /// one request and kept within [`PLANNED_BYTES`] (see [`planned`]). [`Self::connections`]
    /// threads fetch the segments ahead of the readers, in the plan's order, so that many
    /// requests are in flight however the operation reads.
    pub fn follow_plan(&self, plan: ReadPlan) -> PlanGuard {
        let spill_dir = self.cache.as_ref().map(|c| c.dir().to_path_buf());
        let planned = Arc::new(planned::Planned::new(plan, PLANNED_BYTES, spill_dir));
        let before = self
            .plan
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .replace(planned.clone());
        let ahead = (0..self.connections)
            .filter_map(|_| {
                let (planned, backend) = (planned.clone(), self.backend.clone());
                std::thread::Builder::new()
                    .name("coffer-fetch-ahead".into())
                    .spawn(move || {
                        planned.fetch_ahead(|key, range| backend.get_range("pack", key, range))
                    })
                    .ok()
            })
            .collect();
        PlanGuard {
            slot: self.plan.clone(),
            before,
            planned,
            ahead,
        }
    }

    /// `range` of `key` from the plan being followed, when a planned segment holds it.
    fn planned(&self, what: &'static str, key: &str, range: &Range<u64>) -> Option<Result<Bytes>> {
        let planned = self
            .plan
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        planned.serve(key, range, |segment| {
            self.backend.get_range(what, key, segment)
        })
    }

    /// Whether [`Self::prefetch`] does anything here (a local directory).
    pub fn prefetches(&self) -> bool {
        self.backend.prefetches()
    }

    /// How the user named this location.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// `text` with every configured secret replaced by `<redacted>` and the user information
    /// of every URL in it by `***`.
    pub fn scrub(&self, text: &str) -> String {
        self.secrets.scrub(text)
    }

    /// Writes an immutable, content-addressed object. If the key exists it already holds these
    /// bytes (its name is their hash), so that counts as success. An object the cache keeps
    /// ([`CacheUse::of`]: snapshots, index files, deletion plans, drill results, and packs written this way,
    /// which hold trees: data-only packs go through [`Self::put_data_pack`]) is also put in the
    /// cache once stored, so the next command does not download what this one wrote.
    pub fn put_new(&self, key: &str, bytes: Bytes) -> Result<()> {
        let size = bytes.len() as u64;
        let cached = match &self.cache {
            Some(cache) if CacheUse::of(key) != CacheUse::Never => Some((cache, bytes.clone())),
            _ => None,
        };
        self.backend.put_new(key, bytes)?;
        self.listings.note_put(key, size);
        self.drop_early_of(key);
        if let Some((cache, bytes)) = cached {
            cache.put(key, &bytes);
        }
        Ok(())
    }

    /// As [`Self::put_new`], for a pack holding only file data: it goes to the storage class
    /// configured for data (`-o storage_class=…`, object stores only), if any.
    pub fn put_data_pack(&self, key: &str, bytes: Bytes) -> Result<()> {
        let size = bytes.len() as u64;
        self.backend.put_data_pack(key, bytes)?;
        self.listings.note_put(key, size);
        self.drop_early_of(key);
        Ok(())
    }

    /// Reads through the cache when the policy ([`CacheUse::applies`]) and this handle allow:
    /// a cached copy (of at most `max` bytes) is used only if its hash matches its name, a
    /// fetched one is cached only if so.
    fn through_cache(
        &self,
        key: &str,
        asked: bool,
        max: u64,
        fetch: impl FnOnce() -> Result<Bytes>,
    ) -> Result<Bytes> {
        let cache = match &self.cache {
            Some(cache) if CacheUse::applies(key, asked) => cache,
            _ => return fetch(),
        };
        if let Some(bytes) = cache.get_bounded(key, max) {
            return Ok(bytes);
        }
        let bytes = fetch()?;
        cache.put(key, &bytes);
        Ok(bytes)
    }

    /// Reads a whole object. A missing object gives [`Error::Missing`] naming `what`. Snapshots
    /// and index files come from the cache when it holds them.
    pub fn get(&self, what: &'static str, key: &str) -> Result<Bytes> {
        self.through_cache(key, false, u64::MAX, || self.backend.get(what, key))
    }

    /// As [`Self::get`], also through the cache for objects cached on request (packs).
    pub fn get_cached(&self, what: &'static str, key: &str) -> Result<Bytes> {
        self.through_cache(key, true, u64::MAX, || self.backend.get(what, key))
    }

    /// Reads a whole object of at most `max` bytes. Its size is learned first, from this
    /// handle's listing of its directory when there is one, else from the file's metadata (a
    /// local directory) or a HEAD request, and an object above `max` is refused with
    /// [`Error::Corrupt`] naming it and the limit before a byte of it is read or a buffer
    /// allocated. Only the learned size is then read, so an object that grew meanwhile cannot
    /// make the read larger (its hash no longer matches its name). Snapshots and index files
    /// come from the cache when it holds them (a cached file above `max` is not read either).
    pub fn get_bounded(&self, what: &'static str, key: &str, max: u64) -> Result<Bytes> {
        self.through_cache(key, false, max, || self.fetch_bounded(what, key, max))
    }

    /// As [`Self::get_bounded`], also through the cache for objects cached on request (tree
    /// packs).
    pub fn get_bounded_cached(&self, what: &'static str, key: &str, max: u64) -> Result<Bytes> {
        self.through_cache(key, true, max, || self.fetch_bounded(what, key, max))
    }

    fn fetch_bounded(&self, what: &'static str, key: &str, max: u64) -> Result<Bytes> {
        self.backend
            .get_bounded(what, key, max, self.listings.size_of(key))
    }

    /// Reads `range` of an object; the result has exactly `range` length or is an error.
    pub fn get_range(&self, what: &'static str, key: &str, range: Range<u64>) -> Result<Bytes> {
        if let Some(planned) = self.planned(what, key, &range) {
            return planned;
        }
        self.backend.get_range(what, key, range)
    }

    /// Reads `range` of an object and hands the bytes to `f`. A local read goes into a buffer
    /// this thread keeps for the next read (no allocation and no fresh pages per read); other
    /// stores fetch as [`Self::get_range`] does.
    pub fn with_range<R>(
        &self,
        what: &'static str,
        key: &str,
        range: Range<u64>,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        if let Some(planned) = self.planned(what, key, &range) {
            return f(&planned?);
        }
        let mut out = None;
        self.backend
            .with_range(what, key, range, &mut once_sink(f, &mut out))?;
        out.ok_or_else(|| Error::internal("a storage backend returned without the range"))
    }

    /// As [`Self::with_range`], for a large range of a local pack read once and not again soon
    /// (a restored file's blobs): read with `O_DIRECT` into this thread's reused buffer
    /// ([`crate::fs::direct::read_direct`]), so no page-cache pages are allocated and nothing is
    /// copied out of them. Small ranges, other stores, and file systems that refuse direct
    /// reads go the way of [`Self::with_range`].
    pub fn with_range_direct<R>(
        &self,
        what: &'static str,
        key: &str,
        range: Range<u64>,
        f: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        if let Some(planned) = self.planned(what, key, &range) {
            return f(&planned?);
        }
        let mut out = None;
        self.backend
            .with_range_direct(what, key, range, &mut once_sink(f, &mut out))?;
        out.ok_or_else(|| Error::internal("a storage backend returned without the range"))
    }

    /// Asks for `range` of an object to be read into memory ahead of a [`Self::get_range`] or
    /// [`Self::with_range`] of it (local objects: `posix_fadvise(WILLNEED)`, which starts the
    /// reads and returns). Advice only: errors are ignored, and object stores do nothing
    /// (their reads are requests of their own).
    pub fn prefetch(&self, key: &str, range: Range<u64>) {
        self.backend.prefetch(key, range)
    }

    /// Whether large local reads of packs bypass the page cache ([`Self::with_range_direct`]):
    /// a local directory whose file system has not refused a direct read. Such reads wait for
    /// the disk, so the read-side operations run one thread more than the cores then.
    pub fn reads_directly(&self) -> bool {
        self.backend.reads_directly()
    }

    /// The size of an object, or `None` if it does not exist.
    pub fn size(&self, key: &str) -> Result<Option<u64>> {
        self.backend.size(key)
    }

    /// Every object under `dir/` with its size, as keys relative to the repository root,
    /// sorted. The store is listed once per handle and directory; later calls see this handle's
    /// own writes and deletes but not other writers'. Cached objects under `dir/` that the
    /// listing no longer shows (removed by prune) are dropped from the cache.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>> {
        if let Some(list) = self.listings.get(dir) {
            return Ok(list);
        }
        let out = match self.take_early(dir) {
            Some(early) => early.into_iter().map(|o| (o.key, o.size)).collect(),
            None => self.list_uncached(dir)?,
        };
        self.remember_listing(dir, out.clone());
        Ok(out)
    }

    /// Lists `dirs` now, one thread each, for the next [`Storage::list`] or
    /// [`Storage::list_with_times`] of each to use instead of asking the store again: a
    /// repository being opened on an object store lists the directories every command reads
    /// while its key is derived, instead of one round trip after another once it is. Such a
    /// listing is used at most once, is dropped by [`Storage::forget_listings`] and by this
    /// handle's own writes and deletes in its directory, and a failed one is left for the later
    /// listing to meet (and report).
    pub fn list_early(&self, dirs: &[&str]) {
        std::thread::scope(|scope| {
            for &dir in dirs {
                scope.spawn(move || {
                    if let Ok(listing) = self.list_sorted(dir) {
                        crate::sync::lock(&self.early).insert(dir.to_string(), listing);
                    }
                });
            }
        });
    }

    /// The early listing of `dir`, if one is waiting ([`Storage::list_early`]); taken.
    fn take_early(&self, dir: &str) -> Option<Vec<ObjectInfo>> {
        crate::sync::lock(&self.early).remove(dir)
    }

    /// Drops the early listing of the directory `key` is in: it no longer shows what is there.
    fn drop_early_of(&self, key: &str) {
        if let Some((dir, _)) = key.split_once('/') {
            crate::sync::lock(&self.early).remove(dir);
        }
    }

    /// Makes `listing` the one this handle remembers for `dir`, and drops cached objects it
    /// no longer shows.
    fn remember_listing(&self, dir: &str, listing: Vec<(String, u64)>) {
        if let Some(cache) = &self.cache {
            cache.retain(dir, &listing);
        }
        self.listings.insert(dir, listing);
    }

    /// The objects under `dir/` split by name: those Coffer writes there (see
    /// [`is_object_name`]) and stray ones (left by other programs, e.g. NFS's `.nfsXXXX` files,
    /// or put there by hand), which every command ignores and `check` reports.
    pub fn list_objects(&self, dir: &str) -> Result<Listing> {
        Ok(Listing::split(dir, self.list(dir)?))
    }

    /// Forgets every listing this handle remembers, so the next [`Storage::list`] of each
    /// directory asks the store again. Prune calls it once it holds the lease: what it decides
    /// must rest on what the store holds then, not on what it held when the handle was opened.
    pub fn forget_listings(&self) {
        self.listings.clear();
        crate::sync::lock(&self.early).clear();
    }

    /// Lists `dir/` in the store, bypassing this handle's memory of earlier listings.
    pub fn list_uncached(&self, dir: &str) -> Result<Vec<(String, u64)>> {
        Ok(self
            .list_sorted(dir)?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect())
    }

    /// Every object under `dir/` with its size and the store's modification time (a local
    /// file's mtime, an object's `Last-Modified`), asked of the store afresh (or
    /// during the opening that made this handle, [`Storage::list_early`]) and sorted; the
    /// listing this handle remembers for `dir` is replaced by it.
    pub fn list_with_times(&self, dir: &str) -> Result<Vec<(String, u64, jiff::Timestamp)>> {
        let listed = match self.take_early(dir) {
            Some(early) => early,
            None => self.list_sorted(dir)?,
        };
        let out: Vec<_> = listed
            .into_iter()
            .map(|o| (o.key, o.size, o.modified))
            .collect();
        self.remember_listing(dir, out.iter().map(|(k, s, _)| (k.clone(), *s)).collect());
        Ok(out)
    }

    /// Staging files left by interrupted writes (local repositories only: object stores'
    /// uploads are atomic), with size and modification time, sorted by key. Never objects:
    /// listings skip them; `prune` removes old ones and `check` reports them.
    pub fn staging_leftovers(&self) -> Result<Vec<ObjectInfo>> {
        let mut out = self.backend.staging_leftovers()?;
        out.sort();
        Ok(out)
    }

    /// Deletes a staging file [`Self::staging_leftovers`] listed; a missing one is success. No
    /// listing or cached object can name it, so neither is touched.
    pub fn delete_staging(&self, key: &str) -> Result<()> {
        self.backend.delete_staging(key)
    }

    fn list_sorted(&self, dir: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = self.backend.list(dir)?;
        out.sort();
        Ok(out)
    }

    /// Deletes an object; deleting a missing object succeeds (deletion is idempotent).
    pub fn delete(&self, key: &str) -> Result<()> {
        self.backend.delete(key)?;
        self.listings.note_delete(key);
        self.drop_early_of(key);
        if let Some(cache) = &self.cache {
            cache.remove(key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_and_stray_names_are_told_apart() {
        let id = "ab".to_string() + &"0".repeat(62);
        assert!(is_object_name("snapshots", &format!("snapshots/{id}")));
        assert!(is_object_name("data", &format!("data/ab/{id}")));
        for (dir, stray) in [
            ("snapshots", "snapshots/.nfs0000abcd".to_string()),
            ("snapshots", format!("snapshots/{}", id.to_uppercase())),
            ("snapshots", format!("snapshots/{id}0")),
            ("snapshots", format!("snapshots/{}", &id[1..])),
            ("snapshots", format!("snapshots/x/{id}")),
            ("snapshots", format!("index/{id}")),
            ("data", format!("data/cd/{id}")),
            ("data", format!("data/{id}")),
            ("data", format!("data/ab/{id}.tmp")),
        ] {
            assert!(!is_object_name(dir, &stray), "{stray}");
        }
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path().to_str().unwrap(), OpenMode::Create).unwrap();
        storage
            .put_new(&format!("snapshots/{id}"), Bytes::from_static(b"s"))
            .unwrap();
        std::fs::write(dir.path().join("snapshots/.nfs0000abcd"), b"junk").unwrap();
        std::fs::write(dir.path().join("snapshots/notes.txt"), b"junk!").unwrap();
        storage.forget_listings();
        let listing = storage.list_objects("snapshots").unwrap();
        assert_eq!(listing.objects, vec![(format!("snapshots/{id}"), 1)]);
        assert_eq!(
            listing.stray,
            vec![
                ("snapshots/.nfs0000abcd".to_string(), 4),
                ("snapshots/notes.txt".to_string(), 5)
            ]
        );
    }

    /// An early listing answers the next listing of its directory once, as the store was when
    /// it was made; this handle's own writes there and `forget_listings` drop it.
    #[test]
    fn early_listings_are_used_once_and_dropped_by_own_writes() {
        let backend: Arc<dyn Backend> = Arc::new(memory::MemoryBackend::new());
        let ours = Storage::from_backend(backend.clone(), StoreKind::Memory, "memory://");
        let other = Storage::from_backend(backend, StoreKind::Memory, "memory://");
        let key = |n: u8| format!("snapshots/{}", hex::encode([n; 32]));
        other.put_new(&key(1), Bytes::from_static(b"a")).unwrap();
        other
            .put_new(
                &format!("index/{}", hex::encode([9; 32])),
                Bytes::from_static(b"i"),
            )
            .unwrap();
        ours.list_early(&["snapshots", "index"]);
        // Written by another handle after the early listing: not in it.
        other.put_new(&key(2), Bytes::from_static(b"b")).unwrap();
        assert_eq!(ours.list("snapshots").unwrap(), vec![(key(1), 1)]);
        let index = ours.list_with_times("index").unwrap();
        assert_eq!(index.len(), 1);
        // Used once: the next listing with times asks the store again.
        other
            .put_new(
                &format!("index/{}", hex::encode([8; 32])),
                Bytes::from_static(b"j"),
            )
            .unwrap();
        assert_eq!(ours.list_with_times("index").unwrap().len(), 2);
        // Our own write in a directory drops its early listing.
        ours.forget_listings();
        ours.list_early(&["snapshots"]);
        ours.put_new(&key(3), Bytes::from_static(b"c")).unwrap();
        assert_eq!(ours.list("snapshots").unwrap().len(), 3);
        // forget_listings drops them too.
        ours.forget_listings();
        ours.list_early(&["snapshots"]);
        other.put_new(&key(4), Bytes::from_static(b"d")).unwrap();
        ours.forget_listings();
        assert_eq!(ours.list("snapshots").unwrap().len(), 4);
    }

    #[test]
    fn unsupported_locations_are_named() {
        for loc in ["memory://", "ftp://host/x", "", "s3://", "gs:///x"] {
            let err = Storage::open(loc, OpenMode::Existing)
                .unwrap_err()
                .to_string();
            assert!(err.contains("cannot open storage"), "{loc}: {err}");
        }
    }

    fn opts(pairs: &[(&str, &str)]) -> StorageOptions {
        StorageOptions {
            options: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..StorageOptions::default()
        }
    }

    #[test]
    fn s3_urls_and_options_build_offline() {
        let s = Storage::open_with(
            "s3://bucket/some//prefix/",
            OpenMode::Existing,
            &opts(&[
                ("aws_access_key_id", "AKIDEXAMPLE"),
                ("secret_access_key", "wJalrXUtnFEMI-very-secret"),
                ("region", "eu-west-1"),
                ("endpoint", "http://127.0.0.1:9"),
                ("allow_http", "true"),
                ("max_retries", "1"),
                ("retry_timeout", "2s"),
            ]),
        )
        .unwrap();
        assert_eq!(s.kind(), StoreKind::S3);
        assert_eq!(s.connections(), DEFAULT_REMOTE_CONNECTIONS);
        assert_eq!(
            s.scrub("x wJalrXUtnFEMI-very-secret y AKIDEXAMPLE"),
            "x <redacted> y <redacted>"
        );
        assert!(!format!("{s:?}").contains("very-secret"));
        let err = Storage::open_with(
            "s3://bucket",
            OpenMode::Existing,
            &opts(&[("no_such_option", "wJalrXUtnFEMI-very-secret")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("unknown S3 option \"no_such_option\""),
            "{err}"
        );
        assert!(!err.contains("very-secret"), "{err}");
        let err = Storage::open_with(
            "s3://b",
            OpenMode::Existing,
            &opts(&[("retry_timeout", "soon")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("retry_timeout"), "{err}");
        let err = Storage::open_with("/tmp/x", OpenMode::Existing, &opts(&[("region", "x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("s3:// and gs:// locations only"), "{err}");
    }

    #[test]
    fn endpoint_credentials_never_show_in_messages_or_debug_output() {
        let endpoint = "http://urluser:pa55-in-url@127.0.0.1:9";
        let s = Storage::open_with(
            "s3://bucket/prefix",
            OpenMode::Existing,
            &opts(&[
                ("endpoint", endpoint),
                ("allow_http", "true"),
                ("max_retries", "0"),
            ]),
        )
        .unwrap();
        for shown in [
            format!("{s:?}"),
            format!("{:?}", opts(&[("endpoint", endpoint)])),
            s.scrub(&format!(
                "failed: {endpoint}/x; user urluser, password pa55-in-url"
            )),
            s.list_uncached("snapshots").unwrap_err().to_string(),
        ] {
            assert!(!shown.contains("pa55-in-url"), "{shown}");
            assert!(!shown.contains("urluser"), "{shown}");
        }
        // A location carrying user information is shown without it.
        let err = Storage::open_with(
            "s3://key:pa55-in-url@bucket/prefix",
            OpenMode::Existing,
            &opts(&[("no_such_option", "x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("pa55-in-url"), "{err}");
        assert!(err.contains("s3://***@bucket/prefix"), "{err}");
    }

    /// GCS can't be reached here (no emulator speaks its XML API), so the configuration mapping
    /// is checked offline: a service-account key with `disable_oauth` builds without a request.
    #[test]
    fn gs_urls_and_options_build_offline() {
        let key = serde_json::json!({
            "private_key": "",
            "private_key_id": "",
            "client_email": "coffer@example.invalid",
            "gcs_base_url": "http://127.0.0.1:9",
            "disable_oauth": true,
        })
        .to_string();
        let s = Storage::open_with(
            "gs://my-bucket/backups/app",
            OpenMode::Existing,
            &opts(&[("service_account_key", &key), ("max_retries", "0")]),
        )
        .unwrap();
        assert_eq!(s.kind(), StoreKind::Gcs);
        assert!(s.scrub(&format!("leak {key}")).contains("<redacted>"));
        let err = Storage::open_with(
            "gs://my-bucket",
            OpenMode::Existing,
            &opts(&[("aws_region", "x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown GCS option"), "{err}");
        // Requests go to the configured base URL; nothing listens there, so the error names
        // the operation and the bucket after the (zero) retries.
        let err = s.list_uncached("snapshots").unwrap_err().to_string();
        assert!(
            err.contains("storage list of gs://my-bucket/backups/app/snapshots"),
            "{err}"
        );
    }

    #[test]
    fn the_cache_policy_decides_which_reads_go_through_the_cache() {
        let root = tempfile::tempdir().unwrap();
        let backend = Arc::new(MemoryBackend::new());
        let mut storage = Storage::from_backend(backend.clone(), StoreKind::Memory, "memory://")
            .with_cache_root(root.path().to_path_buf());
        storage.enable_cache("00ff");
        // Another handle on the same objects, without the cache.
        let other = Storage::from_backend(backend, StoreKind::Memory, "memory://");
        let named = |dir: &str, bytes: &[u8]| {
            let id = hex::encode(crate::format::id::storage_hash(bytes));
            match dir {
                "data" => format!("data/{}/{id}", &id[..2]),
                _ => format!("{dir}/{id}"),
            }
        };
        let index = named("index", b"index bytes");
        let pack = named("data", b"tree pack");
        let key = named("keys", b"key file");
        for (k, bytes) in [
            (&index, &b"index bytes"[..]),
            (&pack, b"tree pack"),
            (&key, b"key file"),
        ] {
            other.put_new(k, Bytes::copy_from_slice(bytes)).unwrap();
        }
        let cached = |storage: &Storage| storage.cache().unwrap().keys();
        // Index files always; a pack only when asked; key files never.
        storage.get("index", &index).unwrap();
        storage.get("pack", &pack).unwrap();
        storage.get_cached("key", &key).unwrap();
        assert_eq!(cached(&storage), std::slice::from_ref(&index));
        storage.get_bounded_cached("pack", &pack, 100).unwrap();
        assert_eq!(cached(&storage), [pack.clone(), index.clone()]);
        // Deleted by the other handle: the cached copy still serves reads within the maximum,
        // and one above its size goes to the store, which no longer has it.
        other.delete(&index).unwrap();
        assert_eq!(
            &storage.get_bounded("index", &index, 11).unwrap()[..],
            b"index bytes"
        );
        assert!(matches!(
            storage.get_bounded("index", &index, 10),
            Err(Error::Missing { what: "index", .. })
        ));
        // Deleting through the caching handle drops the cached copy too.
        storage.delete(&index).unwrap();
        assert_eq!(cached(&storage), std::slice::from_ref(&pack));
        assert!(matches!(
            storage.get("index", &index),
            Err(Error::Missing { what: "index", .. })
        ));
        // What this handle writes is cached as it is stored, by the same policy: a snapshot and
        // a pack written with put_new (tree packs), not a data pack nor a key file.
        let snapshot = named("snapshots", b"snapshot bytes");
        let tree_pack = named("data", b"another tree pack");
        let data_pack = named("data", b"data pack");
        let key2 = named("keys", b"another key file");
        for (k, bytes) in [
            (&snapshot, &b"snapshot bytes"[..]),
            (&tree_pack, b"another tree pack"),
            (&key2, b"another key file"),
        ] {
            storage.put_new(k, Bytes::copy_from_slice(bytes)).unwrap();
        }
        storage
            .put_data_pack(&data_pack, Bytes::from_static(b"data pack"))
            .unwrap();
        let mut want = vec![pack.clone(), tree_pack.clone(), snapshot.clone()];
        want.sort();
        let mut got = cached(&storage);
        got.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn a_range_read_hands_its_bytes_to_the_closure_once_even_when_nested() {
        let storage = Storage::in_memory().unwrap();
        storage
            .put_new("data/ab/x", Bytes::from_static(b"hello, world"))
            .unwrap();
        let got = storage
            .with_range("pack", "data/ab/x", 7..12, |outer| {
                let inner = storage.with_range("pack", "data/ab/x", 0..5, |b| Ok(b.to_vec()))?;
                Ok((outer.to_vec(), inner))
            })
            .unwrap();
        assert_eq!(got, (b"world".to_vec(), b"hello".to_vec()));
        let err = storage
            .with_range_direct("pack", "data/ab/x", 10..20, |b| Ok(b.len()))
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }
}

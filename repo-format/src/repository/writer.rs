//! Writing blobs: deduplicate, compress (at the level of the blob's class, see
//! [`crate::format::compress`]), seal, pack, upload, and finally index.
//!
//! A [`BlobWriter`] is shared by any number of threads (`store` takes `&self`). It keeps one open
//! pack for data blobs and one for tree blobs (metadata and data live in separate packs, so tree
//! packs stay small and cacheable), hands full packs to uploader threads through a bounded queue
//! (backpressure: on an object store at most two packs wait per connection, one uploading and
//! one queued; on local disk none is queued), and records what was uploaded.
//! [`BlobWriter::finish`] flushes the open packs, waits for every upload, and only then writes the
//! index file naming the new packs: callers write their snapshot after `finish` returns, which
//! keeps the order packs -> index -> snapshot.
//!
//! A long run also writes *checkpoint* index files as it goes ([`BlobWriter::with_checkpoints`],
//! and [`BlobWriter::keep_uploaded`] when it is interrupted): the packs they name are reused by
//! the next run instead of being uploaded again, and prune leaves them alone while they are
//! young (P4b in docs/maintenance.md).

use crate::error::{Error, Result};
use crate::format::compress::{BlobClass, BlobCompressor, CompressionLevels};
use crate::format::id::{BlobId, IndexId, PackId};
use crate::format::index::IndexFile;
use crate::format::pack::{self, BlobKind, FinishedPack, PackWriter, PackedBlob, SealedBlob};
use crate::repository::Repository;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// Counters of what a writer stored.
#[derive(Debug, Default)]
pub struct WriteStats {
    pub data_blobs_new: AtomicU64,
    pub tree_blobs_new: AtomicU64,
    /// Plaintext bytes of new blobs.
    pub added_raw: AtomicU64,
    /// Sealed bytes of new blobs.
    pub added_stored: AtomicU64,
}

/// What [`BlobWriter::finish`] wrote.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub packs: Vec<(PackId, Vec<PackedBlob>)>,
    /// The index file naming `packs` (none when nothing new was stored).
    pub index: Option<IndexId>,
}

/// State shared with the uploader threads.
struct Shared {
    uploaded: Mutex<Vec<(PackId, Vec<PackedBlob>)>>,
    /// Buffers of uploaded packs, for the next packs: reusing memory already paged in is
    /// cheaper than fresh pages (a fault and a zeroing each). At most one per connection is
    /// kept, never more than were in use at once.
    spare: Mutex<Vec<Vec<u8>>>,
    failed: Mutex<Option<Error>>,
    has_failed: AtomicBool,
    cancel: Arc<AtomicBool>,
}

impl Shared {
    fn fail(&self, e: Error) {
        let mut slot = lock(&self.failed);
        if slot.is_none() {
            *slot = Some(e);
        }
        self.has_failed.store(true, Ordering::SeqCst);
    }
}

/// Stores blobs into new packs. See the module documentation.
pub struct BlobWriter<'r> {
    repo: &'r Repository,
    pending: Mutex<HashSet<BlobId>>,
    data_pack: Mutex<PackWriter>,
    tree_pack: Mutex<PackWriter>,
    upload_tx: Mutex<Option<Sender<FinishedPack>>>,
    uploaders: Mutex<Vec<JoinHandle<()>>>,
    shared: Arc<Shared>,
    /// Bytes reserved for a new data pack up front (target size plus slack), so a pack's buffer
    /// never doubles past the target and is never copied while it grows.
    pack_capacity: usize,
    /// When set, a blob the index lists is reused only if its pack is in this set (the packs
    /// listed in storage): a blob whose pack is gone is stored again.
    present_packs: Option<HashSet<PackId>>,
    /// When set, a checkpoint index file is written once this many uploaded packs are in no
    /// index, or once this long has passed since the last one with any.
    checkpoints: Option<(usize, Duration)>,
    last_checkpoint: Mutex<Instant>,
    /// Packs named by the checkpoints written so far.
    checkpointed: AtomicU64,
    /// Seal and count new blobs, but store nothing (`backup --dry-run`).
    dry_run: bool,
    /// Start no new pack of a kind while a full one of it waits for a writing thread
    /// ([`Self::one_pack_waiting`]).
    hand_over_first: bool,
    /// Ids of all-zero blobs by length: a sparse file's holes come as many equal chunks of
    /// zeros, hashed once each length.
    zero_ids: Mutex<std::collections::HashMap<usize, BlobId>>,
    pub stats: WriteStats,
}

impl<'r> BlobWriter<'r> {
    /// A writer with `connections` uploader threads. Setting `cancel` stops uploads early.
    pub fn new(repo: &'r Repository, connections: usize, cancel: Arc<AtomicBool>) -> Result<Self> {
        // On an object store one finished pack may wait per connection, so that no connection
        // idles while the next pack is sealed: memory stays at about (2 open packs + 2 per
        // connection) x pack size, whatever the size of the backup. On local disk a write
        // waits for no network and keeps up with sealing, so a finished pack is handed straight
        // to a writer: (2 open packs + 1 per connection) x pack size (a first backup of
        // bench/run.py's data peaked at 124-128 MiB so, 124-158 MiB with the queue, in the
        // same time: docs/benchmarks.md).
        // Whether a request waits for a network round trip is what the backend's request cost
        // says (`ReadCost::plans_reads`), not which kind of store it is.
        let queued = if repo.storage().read_cost().plans_reads() {
            connections
        } else {
            0
        };
        Self::with_queue(repo, connections, queued, cancel)
    }

    /// A writer with `connections` uploader threads and room for `queued` finished packs
    /// waiting for one (0: a finished pack is handed straight to an uploader, its writer
    /// waiting until one is free). Memory stays at about
    /// (2 open packs + `connections` + `queued`) x pack size.
    pub fn with_queue(
        repo: &'r Repository,
        connections: usize,
        queued: usize,
        cancel: Arc<AtomicBool>,
    ) -> Result<Self> {
        let connections = connections.max(1);
        let (tx, rx) = bounded::<FinishedPack>(queued);
        let shared = Arc::new(Shared {
            uploaded: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            failed: Mutex::new(None),
            has_failed: AtomicBool::new(false),
            cancel,
        });
        let pack_size = repo.config().pack_size as usize;
        let mut uploaders = Vec::with_capacity(connections);
        for i in 0..connections {
            let rx: Receiver<FinishedPack> = rx.clone();
            let storage = repo.storage().clone();
            let shared = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("coffer-upload-{i}"))
                .spawn(move || {
                    for finished in rx {
                        if shared.cancel.load(Ordering::Relaxed)
                            || shared.has_failed.load(Ordering::Relaxed)
                        {
                            continue;
                        }
                        let buffer = finished.bytes.clone();
                        let key = pack::pack_key(&finished.id);
                        let data_only = finished.blobs.iter().all(|b| b.kind == BlobKind::Data);
                        let put = if data_only {
                            storage.put_data_pack(&key, finished.bytes)
                        } else {
                            storage.put_new(&key, finished.bytes)
                        };
                        match put {
                            Ok(()) => lock(&shared.uploaded).push((finished.id, finished.blobs)),
                            Err(e) => shared.fail(e),
                        }
                        // The store has let go of its copy: the buffer is ours alone again. Only
                        // data packs' buffers (tree packs are small) are worth keeping.
                        if let Ok(buffer) = buffer.try_into_mut() {
                            let mut spare = lock(&shared.spare);
                            if spare.len() < connections && buffer.capacity() >= pack_size {
                                spare.push(buffer.into());
                            }
                        }
                    }
                })
                .map_err(|e| Error::io("starting an uploader thread for", "backup", e))?;
            uploaders.push(handle);
        }
        Ok(BlobWriter {
            repo,
            pending: Mutex::new(HashSet::new()),
            data_pack: Mutex::new(PackWriter::default()),
            tree_pack: Mutex::new(PackWriter::default()),
            pack_capacity: repo.config().pack_size as usize + 1024 * 1024,
            upload_tx: Mutex::new(Some(tx)),
            uploaders: Mutex::new(uploaders),
            shared,
            present_packs: None,
            checkpoints: None,
            last_checkpoint: Mutex::new(Instant::now()),
            checkpointed: AtomicU64::new(0),
            dry_run: false,
            hand_over_first: false,
            zero_ids: Mutex::new(std::collections::HashMap::new()),
            stats: WriteStats::default(),
        })
    }

    /// Deduplicates only against blobs whose pack is in `present` (one listing of `data/`),
    /// storing again what the index names in a pack that is gone.
    pub fn reuse_only_packs(mut self, present: HashSet<PackId>) -> Self {
        self.present_packs = Some(present);
        self
    }

    /// Writes a checkpoint index file whenever `packs` uploaded packs are in no index yet, or
    /// `interval` after the last checkpoint if any is: an interrupted run then loses at most
    /// that much uploaded work, even when killed.
    pub fn with_checkpoints(mut self, packs: usize, interval: Duration) -> Self {
        self.checkpoints = Some((packs.max(1), interval));
        self
    }

    /// Starts no new pack while a full one waits for a writing thread: the thread that filled
    /// it keeps the open pack locked until a writer takes it, so other threads wait to add
    /// blobs instead of filling a third buffer. With one writer and no queue at most two packs
    /// of a kind are in memory (the one being written and the next), however far the callers
    /// get ahead of the storage. Prune's repack on local disk asks for this (its readers outrun
    /// the disk; without it a loaded machine peaked 14-17 MiB higher: docs/benchmarks.md).
    pub fn one_pack_waiting(mut self) -> Self {
        self.hand_over_first = true;
        self
    }

    /// A writer that stores nothing: new blobs are compressed and sealed, so that
    /// [`Self::stats`] count exactly what a real run would add, and then dropped; no pack and
    /// no index file is written.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// Whether the repository already holds blob `id` in a form this writer may reuse.
    fn reusable(&self, id: &BlobId) -> bool {
        let index = self.repo.index();
        index.contains(id)
            && self.present_packs.as_ref().is_none_or(|present| {
                index
                    .get(id)
                    .is_some_and(|location| present.contains(&location.pack))
            })
    }

    /// A compressor at the repository's levels, for one thread's calls to [`Self::store`]
    /// (zstd contexts are not shared between threads).
    pub fn compressor(&self) -> BlobCompressor {
        BlobCompressor::new(CompressionLevels::of(self.repo.config()))
    }

    /// Whether an upload failed (the error is returned by `finish`).
    pub fn has_failed(&self) -> bool {
        self.shared.has_failed.load(Ordering::Relaxed)
    }

    /// Takes the first upload error, if any.
    pub fn take_error(&self) -> Option<Error> {
        lock(&self.shared.failed).take()
    }

    /// `e`, or the error that made it: an [`Error::Stopped`] (the other side stopped, possibly
    /// wrapped in its source) becomes the first upload error, so that the cause is reported
    /// and not the cancellations it caused.
    pub fn explain(&self, e: Error) -> Error {
        let stopped = match &e {
            Error::Stopped => true,
            Error::Source { cause, .. } => matches!(**cause, Error::Stopped),
            _ => false,
        };
        if stopped {
            self.take_error().unwrap_or(e)
        } else {
            e
        }
    }

    /// Stores `data` as a blob of `class` (which sets its kind and compression level) unless
    /// the repository or this writer already has it. Returns its id and whether it was new.
    pub fn store(
        &self,
        compressor: &mut BlobCompressor,
        class: BlobClass,
        data: &[u8],
    ) -> Result<(BlobId, bool)> {
        self.store_new(data, |id| {
            let compressed = compressor.compress(class, data)?;
            pack::seal_blob(
                self.repo.keys(),
                class.kind(),
                id,
                data,
                compressed.as_deref(),
            )
        })
    }

    /// Stores a blob of `kind` read from another repository that compresses at the same levels
    /// ([`crate::ops::copy`]) unless this repository or this writer already has it: hashed with
    /// this repository's key and sealed as `frame`, the zstd frame it was stored as there (which
    /// decodes to `data`; `None` if it was stored uncompressed), so it is not compressed again.
    /// Returns its id and whether it was new.
    pub fn store_copied(
        &self,
        kind: BlobKind,
        data: &[u8],
        frame: Option<&[u8]>,
    ) -> Result<(BlobId, bool)> {
        self.store_new(data, |id| {
            pack::seal_blob(self.repo.keys(), kind, id, data, frame)
        })
    }

    /// Stores `data`, sealed by `seal` for its id, unless the repository or this writer
    /// already has it. Returns its id and whether it was new.
    fn store_new(
        &self,
        data: &[u8],
        seal: impl FnOnce(BlobId) -> Result<SealedBlob>,
    ) -> Result<(BlobId, bool)> {
        // The upload error itself is kept for `finish` / `explain`: a reply carrying it could
        // be dropped by a caller already stopping for another reason.
        if self.has_failed() {
            return Err(Error::Stopped);
        }
        let id = self.content_id(data);
        if self.reusable(&id) || !lock(&self.pending).insert(id) {
            return Ok((id, false));
        }
        let sealed = match seal(id) {
            Ok(sealed) => sealed,
            Err(e) => {
                // Not stored: a later store of the same content must not count it as written.
                lock(&self.pending).remove(&id);
                return Err(e);
            }
        };
        self.add(sealed)?;
        Ok((id, true))
    }

    /// The content id of `data`; for a run of zeros, remembered by its length.
    fn content_id(&self, data: &[u8]) -> BlobId {
        if data.len() < 4096 || !coffer_chunker::is_zero(data) {
            return BlobId(self.repo.keys().content_id(data));
        }
        *lock(&self.zero_ids)
            .entry(data.len())
            .or_insert_with(|| BlobId(self.repo.keys().content_id(data)))
    }

    /// Stores a blob that is already sealed, byte for byte, unless this writer already has it
    /// (prune moves blobs out of packs it deletes: the caller has opened and verified the blob,
    /// and its sealed bytes do not depend on the pack they sit in). Returns whether it was new.
    pub fn store_sealed(&self, sealed: SealedBlob) -> Result<bool> {
        // The upload error itself is kept for `finish` / `explain`: a reply carrying it could
        // be dropped by a caller already stopping for another reason.
        if self.has_failed() {
            return Err(Error::Stopped);
        }
        if !lock(&self.pending).insert(sealed.id) {
            return Ok(false);
        }
        self.add(sealed)?;
        Ok(true)
    }

    /// Counts a new sealed blob and adds it to the open pack of its kind, sending the pack off
    /// when it is full.
    fn add(&self, sealed: SealedBlob) -> Result<()> {
        self.count(&sealed);
        if self.dry_run {
            return Ok(());
        }
        let kind = sealed.kind;
        let target = self.repo.config().pack_size as usize;
        let sent = {
            let mut packer = lock(if kind == BlobKind::Data {
                &self.data_pack
            } else {
                &self.tree_pack
            });
            if packer.is_empty() && kind == BlobKind::Data {
                if let Some(buffer) = lock(&self.shared.spare).pop() {
                    packer.reuse(buffer);
                }
                packer.reserve(self.pack_capacity.max(sealed.bytes.len()));
            }
            packer.add(sealed);
            let full = (packer.len() >= target).then(|| std::mem::take(&mut *packer));
            match full {
                Some(p) if self.hand_over_first => {
                    self.send(p)?;
                    true
                }
                Some(p) => {
                    drop(packer);
                    self.send(p)?;
                    true
                }
                None => false,
            }
        };
        if sent {
            self.maybe_checkpoint()?;
        }
        Ok(())
    }

    /// Counts a new sealed blob in [`Self::stats`].
    fn count(&self, sealed: &SealedBlob) {
        let counter = if sealed.kind == BlobKind::Data {
            &self.stats.data_blobs_new
        } else {
            &self.stats.tree_blobs_new
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.stats
            .added_raw
            .fetch_add(u64::from(sealed.raw_length), Ordering::Relaxed);
        self.stats
            .added_stored
            .fetch_add(sealed.bytes.len() as u64, Ordering::Relaxed);
    }

    /// A checkpoint, if [`Self::with_checkpoints`] asked for one now.
    fn maybe_checkpoint(&self) -> Result<()> {
        let Some((packs, interval)) = self.checkpoints else {
            return Ok(());
        };
        let waiting = self.unindexed_packs();
        if waiting >= packs || (waiting > 0 && lock(&self.last_checkpoint).elapsed() >= interval) {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Seals a pack's header, reads it back, and queues the pack for upload.
    fn send(&self, writer: PackWriter) -> Result<()> {
        let finished = writer.finish(self.repo.keys())?;
        // Verify the header we are about to upload: a bug here would lose data silently.
        let parsed = pack::parse_pack(self.repo.keys(), &finished.id, &finished.bytes)?;
        if parsed != finished.blobs {
            return Err(Error::corrupt(
                "pack",
                finished.id,
                "freshly written header does not read back",
            ));
        }
        let tx = lock(&self.upload_tx).clone();
        match tx {
            Some(tx) => tx.send(finished).map_err(|_| Error::Stopped),
            None => Err(Error::Stopped),
        }
    }

    fn join_uploaders(&self) {
        drop(lock(&self.upload_tx).take());
        for handle in lock(&self.uploaders).drain(..) {
            let _ = handle.join();
        }
    }

    /// How many uploaded packs no index file names yet.
    pub fn unindexed_packs(&self) -> usize {
        lock(&self.shared.uploaded).len()
    }

    /// Writes a checkpoint index file naming the packs uploaded so far (not the open ones), so
    /// that an interrupted run keeps them: the next run finds their blobs in the index and does
    /// not upload them again. Returns the packs it indexed; `finish` indexes only later packs.
    pub fn checkpoint(&self) -> Result<Vec<(PackId, Vec<PackedBlob>)>> {
        let packs = std::mem::take(&mut *lock(&self.shared.uploaded));
        *lock(&self.last_checkpoint) = Instant::now();
        if packs.is_empty() {
            return Ok(packs);
        }
        let file = IndexFile::checkpoint(packs);
        match file.save(self.repo.storage(), self.repo.keys()) {
            Ok(id) => {
                tracing::debug!(
                    "checkpoint index {} names {} packs",
                    id.short(),
                    file.packs.len()
                );
                self.checkpointed
                    .fetch_add(file.packs.len() as u64, Ordering::Relaxed);
                Ok(file.packs)
            }
            Err(e) => {
                lock(&self.shared.uploaded).extend(file.packs);
                Err(e)
            }
        }
    }

    /// Packs named by this writer's checkpoints so far.
    pub fn checkpointed_packs(&self) -> u64 {
        self.checkpointed.load(Ordering::Relaxed)
    }

    /// For a run that stops early (interrupted, or failed): waits for the uploads already
    /// running (queued packs and the open ones are dropped) and writes a checkpoint naming every
    /// pack that was uploaded, so the next run reuses them. Returns how many packs it named.
    pub fn keep_uploaded(&self) -> Result<usize> {
        self.join_uploaders();
        Ok(self.checkpoint()?.len())
    }

    /// Flushes the open packs, waits for all uploads, then writes one index file for the new
    /// packs. Only after this returns may a snapshot refer to the stored blobs.
    pub fn finish(self) -> Result<Written> {
        let repo = self.repo;
        let packs = self.finish_unindexed()?;
        let index = if packs.is_empty() {
            None
        } else {
            Some(
                IndexFile {
                    supersedes: Vec::new(),
                    packs: packs.clone(),
                }
                .save(repo.storage(), repo.keys())?,
            )
        };
        Ok(Written { packs, index })
    }

    /// Flushes the open packs and waits for all uploads, like [`Self::finish`], but writes no
    /// index file: the caller names the packs returned in one of its own (prune, which names
    /// them in the index file that supersedes the repacked packs' files).
    pub fn finish_unindexed(self) -> Result<Vec<(PackId, Vec<PackedBlob>)>> {
        let flushed = [&self.data_pack, &self.tree_pack]
            .into_iter()
            .try_for_each(|slot| {
                let writer = std::mem::take(&mut *lock(slot));
                if writer.is_empty() {
                    Ok(())
                } else {
                    self.send(writer)
                }
            });
        self.join_uploaders();
        flushed?;
        if let Some(e) = self.take_error() {
            return Err(e);
        }
        if self.shared.cancel.load(Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        Ok(std::mem::take(&mut *lock(&self.shared.uploaded)))
    }
}

impl Drop for BlobWriter<'_> {
    /// A writer dropped without `finish` (an error path) stops its uploaders; packs already
    /// uploaded stay unindexed, which is harmless: prune removes them.
    fn drop(&mut self) {
        self.join_uploaders();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::Compression;
    use crate::repository::{test_options, InitOptions};
    use crate::storage::Storage;
    use std::collections::HashMap;

    /// A repository with the smallest packs (64 KiB), file data at level 9 and dump data at
    /// level 1, so that a swapped level shows in the stored sizes.
    fn repo() -> Repository {
        let options = InitOptions {
            pack_size: 64 * 1024,
            compression_level: 9,
            dump_compression_level: 1,
            ..test_options()
        };
        Repository::init(Storage::in_memory().unwrap(), b"pw", &options).unwrap()
    }

    fn writer(repo: &Repository) -> BlobWriter<'_> {
        BlobWriter::new(repo, 2, Arc::new(AtomicBool::new(false))).unwrap()
    }

    /// Deterministic incompressible bytes (SplitMix64).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    #[test]
    fn a_blob_is_stored_once_and_found_again_after_the_index() {
        let mut repo = repo();
        let w = writer(&repo);
        let mut c = w.compressor();
        let data = noise(1, 5000);
        let (id, new) = w.store(&mut c, BlobClass::FileData, &data).unwrap();
        assert!(new);
        // Pending in this writer: not stored twice, whatever the class.
        assert_eq!(
            w.store(&mut c, BlobClass::DumpData, &data).unwrap(),
            (id, false)
        );
        assert_eq!(w.stats.data_blobs_new.load(Ordering::Relaxed), 1);
        let written = w.finish().unwrap();
        assert!(written.index.is_some());
        assert_eq!(written.packs.len(), 1);
        assert_eq!(written.packs[0].1.len(), 1);
        repo.add_indexed_packs(&written.packs);
        // A later writer finds it in the index and writes nothing.
        let w = writer(&repo);
        let mut c = w.compressor();
        assert_eq!(
            w.store(&mut c, BlobClass::FileData, &data).unwrap(),
            (id, false)
        );
        let written = w.finish().unwrap();
        assert!(written.packs.is_empty() && written.index.is_none());
        assert_eq!(read_back(&repo, id), data);
    }

    /// The plaintext of blob `id`, read through the repository's index.
    fn read_back(repo: &Repository, id: BlobId) -> Vec<u8> {
        let mut back = Vec::new();
        repo.read_blobs(&[id], |bytes| {
            back.extend_from_slice(bytes);
            Ok(())
        })
        .unwrap();
        back
    }

    /// A repository on a store whose every request waits `delay`, with 64 KiB packs, and the
    /// memory store behind the delay (to look at without waiting).
    fn slow_repository(
        delay: Duration,
    ) -> (Repository, Arc<crate::storage::memory::MemoryBackend>) {
        use crate::storage::faulty::{FaultPlan, FaultyBackend};
        use crate::storage::memory::MemoryBackend;
        use crate::storage::StoreKind;
        let plan = FaultPlan {
            delay: Some(delay),
            ..FaultPlan::default()
        };
        let memory = Arc::new(MemoryBackend::new());
        let faulty = Arc::new(FaultyBackend::new(memory.clone(), plan));
        let storage = Storage::from_backend(faulty.clone(), StoreKind::Memory, "slow");
        faulty.set_enabled(false);
        let options = InitOptions {
            pack_size: 64 * 1024,
            ..test_options()
        };
        let repo = Repository::init(storage, b"pw", &options).unwrap();
        faulty.set_enabled(true);
        (repo, memory)
    }

    /// While a full pack waits for the one writer (busy writing the pack before it), another
    /// thread's store waits too instead of starting a third pack: when it returns, the writer
    /// has taken the waiting pack, so the first one is written. Without `one_pack_waiting` the
    /// store returns at once, while the first pack is still on its way.
    #[test]
    fn with_one_pack_waiting_a_store_waits_while_a_full_pack_does() {
        let (repo, memory) = slow_repository(Duration::from_millis(300));
        let w = BlobWriter::with_queue(&repo, 1, 0, Arc::new(AtomicBool::new(false)))
            .unwrap()
            .one_pack_waiting();
        std::thread::scope(|scope| {
            // Two packs of four 20 kB blobs: the first goes to the writer at once, the second
            // waits for it.
            let filler = scope.spawn(|| {
                let mut c = w.compressor();
                for seed in 0..8 {
                    w.store(&mut c, BlobClass::FileData, &noise(seed, 20_000))
                        .unwrap();
                }
            });
            while w.stats.data_blobs_new.load(Ordering::SeqCst) < 8 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut c = w.compressor();
            w.store(&mut c, BlobClass::FileData, &noise(100, 20_000))
                .unwrap();
            let written = crate::storage::Backend::list(&*memory, "data").unwrap();
            assert!(
                !written.is_empty(),
                "the store returned before any pack was written"
            );
            filler.join().unwrap();
        });
        assert_eq!(w.finish().unwrap().packs.len(), 3);
    }

    /// With one slow writer and several threads storing at once, a writer that starts no new
    /// pack while a full one waits (prune's repack on local disk) stores everything, in full
    /// packs, and every blob reads back.
    #[test]
    fn one_pack_waiting_stores_everything_from_many_threads() {
        let (mut repo, _) = slow_repository(Duration::from_millis(15));
        let w = BlobWriter::with_queue(&repo, 1, 0, Arc::new(AtomicBool::new(false)))
            .unwrap()
            .one_pack_waiting();
        let ids: Vec<(BlobId, Vec<u8>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4u64)
                .map(|t| {
                    let w = &w;
                    scope.spawn(move || {
                        let mut c = w.compressor();
                        (0..10u64)
                            .map(|i| {
                                let data = noise(t * 100 + i, 20_000);
                                let (id, new) =
                                    w.store(&mut c, BlobClass::FileData, &data).unwrap();
                                assert!(new);
                                (id, data)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let written = w.finish().unwrap();
        // 40 blobs of 20 kB, 4 to a 64 KiB pack.
        assert_eq!(written.packs.len(), 10);
        repo.add_indexed_packs(&written.packs);
        for (id, data) in ids {
            assert_eq!(read_back(&repo, id), data);
        }
    }

    #[test]
    fn full_packs_roll_over_and_trees_get_their_own() {
        let repo = repo();
        let w = writer(&repo);
        let mut c = w.compressor();
        for seed in 0..10 {
            w.store(&mut c, BlobClass::FileData, &noise(seed, 20_000))
                .unwrap();
        }
        let tree = crate::format::tree::Tree { nodes: Vec::new() }.encode();
        w.store(&mut c, BlobClass::Tree, &tree).unwrap();
        let written = w.finish().unwrap();
        let data_packs: Vec<_> = written
            .packs
            .iter()
            .filter(|(_, blobs)| blobs.iter().all(|b| b.kind == BlobKind::Data))
            .collect();
        let tree_packs: Vec<_> = written
            .packs
            .iter()
            .filter(|(_, blobs)| blobs.iter().all(|b| b.kind == BlobKind::Tree))
            .collect();
        assert_eq!(data_packs.len() + tree_packs.len(), written.packs.len());
        assert_eq!(tree_packs.len(), 1);
        // 200 kB of data in 64 KiB packs: a pack is sent once it reaches the target, so 4 blobs
        // of 20 kB go in each (4, 4 and the 2 left at the end).
        let mut counts: Vec<usize> = data_packs.iter().map(|(_, b)| b.len()).collect();
        counts.sort_unstable();
        assert_eq!(counts, [2, 4, 4]);
        for (id, blobs) in &data_packs {
            let size = repo.storage().size(&pack::pack_key(id)).unwrap().unwrap();
            assert!(size < 64 * 1024 + 20_100, "{size}");
            if blobs.len() == 4 {
                assert!(size >= 64 * 1024, "{size}");
            }
        }
    }

    #[test]
    fn each_class_is_stored_at_its_level() {
        let repo = repo();
        let w = writer(&repo);
        let mut c = w.compressor();
        let text = |tag: &str| {
            (0..3000u32)
                .map(|i| format!("{tag},{i},{},'row {}'\n", i * 7919 % 1000, i % 37))
                .collect::<String>()
                .into_bytes()
        };
        let raw = noise(9, 3000);
        let cases = [
            (BlobClass::FileData, text("file"), Some(9)),
            (BlobClass::DumpData, text("dump"), Some(1)),
            (BlobClass::Tree, text("tree"), Some(9)),
            (BlobClass::FileData, raw.clone(), None),
        ];
        let ids: Vec<BlobId> = cases
            .iter()
            .map(|(class, data, _)| w.store(&mut c, *class, data).unwrap().0)
            .collect();
        let written = w.finish().unwrap();
        let stored: HashMap<BlobId, PackedBlob> = written
            .packs
            .iter()
            .flat_map(|(_, blobs)| blobs.iter().map(|b| (b.id, *b)))
            .collect();
        // The seal adds the same overhead to every payload: learn it from the raw blob.
        let overhead = stored[&ids[3]].length - stored[&ids[3]].raw_length;
        assert_eq!(stored[&ids[3]].compression, Compression::None);
        let level_1 = zstd::bulk::compress(&cases[0].1, 1).unwrap();
        let level_9 = zstd::bulk::compress(&cases[0].1, 9).unwrap();
        assert_ne!(level_1.len(), level_9.len(), "the levels must differ here");
        for ((class, data, level), id) in cases.iter().zip(&ids).take(3) {
            let blob = stored[id];
            assert_eq!(blob.kind, class.kind());
            assert_eq!(blob.compression, Compression::Zstd);
            let frame = zstd::bulk::compress(data, level.unwrap()).unwrap();
            assert_eq!(blob.length - overhead, frame.len() as u32, "{class:?}");
        }
    }
}

//! Writing blobs: deduplicate, compress, seal, pack, upload, and finally index.
//!
//! A [`BlobWriter`] is shared by any number of threads (`store` takes `&self`). It keeps one open
//! pack for data blobs and one for tree blobs (metadata and data live in separate packs, so tree
//! packs stay small and cacheable), hands full packs to uploader threads through a bounded queue
//! (backpressure: at most two packs wait per connection), and records what was uploaded.
//! [`BlobWriter::finish`] flushes the open packs, waits for every upload, and only then writes the
//! index file naming the new packs: callers write their snapshot after `finish` returns, which
//! keeps the order packs -> index -> snapshot.

use crate::error::{Error, Result};
use crate::format::id::{BlobId, IndexId, PackId};
use crate::format::index::IndexFile;
use crate::format::pack::{self, BlobKind, FinishedPack, PackWriter, PackedBlob, SealedBlob};
use crate::repository::Repository;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
    pub stats: WriteStats,
}

impl<'r> BlobWriter<'r> {
    /// A writer with `connections` uploader threads. Setting `cancel` stops uploads early.
    pub fn new(repo: &'r Repository, connections: usize, cancel: Arc<AtomicBool>) -> Result<Self> {
        let connections = connections.max(1);
        // One finished pack may wait per connection: memory stays at about
        // (2 open packs + 2 per connection) x pack size, whatever the size of the backup.
        let (tx, rx) = bounded::<FinishedPack>(connections);
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
                        match storage.put_new(&pack::pack_key(&finished.id), finished.bytes) {
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
            stats: WriteStats::default(),
        })
    }

    /// Deduplicates only against blobs whose pack is in `present` (one listing of `data/`),
    /// storing again what the index names in a pack that is gone.
    pub fn reuse_only_packs(mut self, present: HashSet<PackId>) -> Self {
        self.present_packs = Some(present);
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

    /// A zstd compressor at the repository's level, for one thread's calls to [`Self::store`].
    pub fn compressor(&self) -> Result<zstd::bulk::Compressor<'static>> {
        zstd::bulk::Compressor::new(self.repo.config().compression_level)
            .map_err(|e| Error::io("starting the compressor for", "backup", e))
    }

    /// A zstd compressor at the repository's level for dump chunks.
    pub fn dump_compressor(&self) -> Result<zstd::bulk::Compressor<'static>> {
        zstd::bulk::Compressor::new(self.repo.config().dump_level())
            .map_err(|e| Error::io("starting the compressor for", "backup", e))
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

    /// Stores `data` as a blob of `kind` unless the repository or this writer already has it.
    /// Returns its id and whether it was new.
    pub fn store(
        &self,
        compressor: &mut zstd::bulk::Compressor<'_>,
        kind: BlobKind,
        data: &[u8],
    ) -> Result<(BlobId, bool)> {
        // The upload error itself is kept for `finish` / `explain`: a reply carrying it could
        // be dropped by a caller already stopping for another reason.
        if self.has_failed() {
            return Err(Error::Stopped);
        }
        let id = BlobId(self.repo.keys().content_id(data));
        if self.reusable(&id) || !lock(&self.pending).insert(id) {
            return Ok((id, false));
        }
        let sealed = pack::seal_blob(self.repo.keys(), compressor, kind, id, data)?;
        self.add(sealed)?;
        Ok((id, true))
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
        let kind = sealed.kind;
        let counter = if kind == BlobKind::Data {
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
        let target = self.repo.config().pack_size as usize;
        let full = {
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
            (packer.len() >= target).then(|| std::mem::take(&mut *packer))
        };
        if let Some(p) = full {
            self.send(p)?;
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

    /// Writes an index file naming the packs uploaded so far (not the open ones), so that an
    /// interrupted run keeps them: the next run finds their blobs in the index and does not
    /// upload them again. Returns the packs it indexed; `finish` indexes only later packs.
    pub fn checkpoint(&self) -> Result<Vec<(PackId, Vec<PackedBlob>)>> {
        let packs = std::mem::take(&mut *lock(&self.shared.uploaded));
        if packs.is_empty() {
            return Ok(packs);
        }
        let file = IndexFile {
            supersedes: Vec::new(),
            packs,
        };
        match file.save(self.repo.storage(), self.repo.keys()) {
            Ok(_) => Ok(file.packs),
            Err(e) => {
                lock(&self.shared.uploaded).extend(file.packs);
                Err(e)
            }
        }
    }

    /// Flushes the open packs, waits for all uploads, then writes one index file for the new
    /// packs. Only after this returns may a snapshot refer to the stored blobs.
    pub fn finish(self) -> Result<Written> {
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
        let packs = std::mem::take(&mut *lock(&self.shared.uploaded));
        let index = if packs.is_empty() {
            None
        } else {
            Some(
                IndexFile {
                    supersedes: Vec::new(),
                    packs: packs.clone(),
                }
                .save(self.repo.storage(), self.repo.keys())?,
            )
        };
        Ok(Written { packs, index })
    }
}

impl Drop for BlobWriter<'_> {
    /// A writer dropped without `finish` (an error path) stops its uploaders; packs already
    /// uploaded stay unindexed, which is harmless: prune removes them.
    fn drop(&mut self) {
        self.join_uploaders();
    }
}

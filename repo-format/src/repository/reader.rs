//! The one read path of the repository: [`BlobReader`] finds blobs in an index, coalesces
//! neighbouring blobs of a pack into runs read with one ranged read, asks storage to read ahead,
//! and authenticates and decompresses every blob on the way. Restore, dump, check, prune, copy,
//! drill and the tree walks all read through it, so how blobs come out of a pack is decided here
//! and nowhere else.
//!
//! May use: `format/` (index, pack, tree), `storage/` and the crypto keys. Never writes.

use crate::error::{Error, Result};
use crate::format::id::{BlobId, PackId};
use crate::format::index::{BlobLocation, MasterIndex};
use crate::format::pack::{self, BlobKind};
use crate::format::tree::Tree;
use crate::storage::Storage;
use coffer_crypto::MasterKeys;
use std::ops::Range;

/// Longest run read at once by a sequential reader ([`BlobReader::read_blobs`]): one request
/// per 32 MiB of back-to-back blobs keeps requests few on object stores while one run's buffer
/// stays a small share of memory.
pub const RUN_BYTES: u64 = 32 << 20;

/// Longest run of [`BlobReader::read_blobs_parallel`]: smaller than [`RUN_BYTES`] so that even
/// one file spread over a few packs gives every reading thread work, and the pieces ahead of
/// the writer ([`IN_FLIGHT_AHEAD`] plus one per thread, each one run or runs joined up to
/// [`PIECE_BYTES`]) bound its memory.
pub const PARALLEL_RUN_BYTES: u64 = 4 << 20;

/// Longest run [`BlobReader::read_sealed_runs`] (prune's repacking) holds per thread: its used
/// blobs are moved sealed to the writer, so a run is in memory twice (read buffer and the
/// writer's pack), once per reading thread. 2 MiB runs keep prune's peak at the key
/// derivation's, where 8 MiB ones added 5-9 MiB above it, in the same time (docs/benchmarks.md).
pub const REPACK_RUN_BYTES: u64 = 2 << 20;

/// Ranges of one pack at most this far apart are prefetched as one ([`BlobReader::prefetch`]):
/// the files of one directory usually lie back to back in a pack, with only a few small blobs
/// of other files between them, so one large read replaces dozens of small ones.
pub const PREFETCH_GAP: u64 = 64 << 10;

/// Longest span of one pack [`BlobReader::span_of`] accepts for a batch of small files, read at
/// once by one restoring thread: large enough for a directory of small files, small enough that
/// every thread can hold one.
pub const MAX_SPAN: u64 = 16 << 20;

/// Largest piece of work [`BlobReader::read_blobs_parallel`] makes by joining consecutive runs,
/// counting the larger of its sealed bytes and its plaintext: few enough hand-overs between
/// threads (a 300 MB churned dump: about 300 instead of thousands), little held ahead of the
/// writer (restore's peak RSS on bench/run.py's data: 74 MiB with single runs, 117-119 MiB
/// with pieces of 4 MiB of sealed bytes, 93-94 MiB with 4 MiB counting plaintext).
pub const PIECE_BYTES: u64 = 1 << 20;

/// How many pieces beyond one per reading thread [`BlobReader::read_blobs_parallel`] lets get
/// ahead of its sink: one, so that a thread finishing its piece always finds the next one to read
/// while memory stays bounded whatever the size of the file.
pub const IN_FLIGHT_AHEAD: usize = 1;

/// Reads blobs listed in one index. Cheap to make: it borrows the storage, the keys and the
/// index ([`crate::repository::Repository::reader`] gives one over the repository's own index;
/// check and prune make one over the index they load themselves).
#[derive(Clone, Copy)]
pub struct BlobReader<'a> {
    storage: &'a Storage,
    keys: &'a MasterKeys,
    index: &'a MasterIndex,
    /// The largest pack the configuration allows: a cached tree pack above it is refused.
    max_pack: u64,
}

impl std::fmt::Debug for BlobReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("location", &self.storage.location())
            .field("blobs", &self.index.len())
            .finish_non_exhaustive()
    }
}

/// A range of one pack read once, from which several files' blobs are opened
/// ([`BlobReader::with_span`]).
pub struct Span<'r, 'd> {
    reader: &'r BlobReader<'r>,
    pack: PackId,
    start: u64,
    data: &'d [u8],
}

impl<'a> BlobReader<'a> {
    /// A reader of the blobs `index` lists, in packs of at most `pack_size` bytes of data.
    pub fn new(
        storage: &'a Storage,
        keys: &'a MasterKeys,
        index: &'a MasterIndex,
        pack_size: u32,
    ) -> BlobReader<'a> {
        BlobReader {
            storage,
            keys,
            index,
            max_pack: pack::max_pack_size(pack_size),
        }
    }

    /// The index this reader finds blobs in.
    pub fn index(&self) -> &'a MasterIndex {
        self.index
    }

    /// Where blob `id` is, or an error naming it.
    pub fn locate(&self, id: &BlobId) -> Result<BlobLocation> {
        self.locate_as("blob", id)
    }

    fn locate_as(&self, what: &'static str, id: &BlobId) -> Result<BlobLocation> {
        self.index.get(id).ok_or_else(|| Error::Missing {
            what,
            id: format!("{id} (not in any index)"),
        })
    }

    /// Asks storage to start reading the blobs of several files into memory (see
    /// [`Storage::prefetch`]): their ranges are sorted by pack and offset, and ranges of one
    /// pack less than [`PREFETCH_GAP`] apart are asked for as one. Blobs missing from the index
    /// are skipped; the read that follows reports them.
    pub fn prefetch<'b>(&self, lists: impl IntoIterator<Item = &'b [BlobId]>) {
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
        for (pack, range) in merge_close(&ranges, PREFETCH_GAP) {
            self.storage.prefetch(&pack::pack_key(&pack), range);
        }
    }

    /// Plans the reads of the blobs of `lists` (every blob an operation will read, in any
    /// order) on a store whose requests cost something ([`crate::storage::ReadCost`]): while
    /// the returned guard lives, this reader's reads of them are served from segments of
    /// their packs fetched with one request each ([`super::plan`]), so the operation makes
    /// about one request per pack it touches. `None` on a local directory, whose direct ranged
    /// reads win. Blobs missing from the index are left out; their reads report them.
    pub fn plan_reads<'b>(
        &self,
        lists: impl IntoIterator<Item = &'b [BlobId]>,
    ) -> Option<crate::storage::PlanGuard> {
        let cost = self.storage.read_cost();
        if !cost.plans_reads() {
            return None;
        }
        let locations: Vec<BlobLocation> = lists
            .into_iter()
            .flatten()
            .filter_map(|id| self.index.get(id))
            .collect();
        super::plan::plan(&locations, cost).map(|plan| self.storage.follow_plan(plan))
    }

    /// Plans the reads of every tree blob of the index, for a walk of snapshots' trees (check,
    /// prune) on a store whose requests cost something and without a metadata cache: each
    /// tree pack is then fetched with one request (ahead of the walk) instead of one request
    /// per tree. `None` with a cache, which already fetches tree packs whole, and on a local
    /// directory.
    pub fn plan_tree_reads(&self) -> Option<crate::storage::PlanGuard> {
        if self.storage.cache().is_some() || !self.storage.read_cost().plans_reads() {
            return None;
        }
        let trees: Vec<BlobLocation> = self
            .index
            .iter()
            .map(|(loc, _)| loc)
            .filter(|loc| loc.blob.kind == BlobKind::Tree)
            .collect();
        super::plan::plan(&trees, self.storage.read_cost()).map(|p| self.storage.follow_plan(p))
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
        pack::open_blob(self.keys, &loc.pack, &loc.blob, &bytes)
    }

    /// Reads and parses a tree blob. With a metadata cache, the whole tree pack is fetched once
    /// and kept (tree blobs live in packs of their own, so these packs are small and hold only
    /// metadata, and the next tree is most likely in the same pack); without one, just the
    /// blob's range is read.
    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        let loc = self.locate_as("tree", id)?;
        if loc.blob.kind != BlobKind::Tree {
            return Err(Error::corrupt(
                "tree",
                id,
                "the index lists it as a data blob",
            ));
        }
        let plain = if self.storage.cache().is_some() {
            let key = pack::pack_key(&loc.pack);
            let pack_bytes = self
                .storage
                .get_bounded_cached("pack", &key, self.max_pack)?;
            let start = loc.blob.offset as usize;
            let end = start.saturating_add(loc.blob.length as usize);
            let sealed = pack_bytes.get(start..end).ok_or_else(|| {
                Error::corrupt(
                    "pack",
                    loc.pack,
                    format!("blob {id} at {start}..{end} lies beyond its end"),
                )
            })?;
            pack::open_blob(self.keys, &loc.pack, &loc.blob, sealed)?
        } else {
            self.load_blob(id)?
        };
        Tree::decode(id, &plain)
    }

    /// Reads the blobs `ids` in order, each authenticated and checked against its id, and hands
    /// their plaintext to `sink` in that order. Consecutive blobs in one pack are fetched with
    /// one ranged read (up to [`RUN_BYTES`]).
    pub fn read_blobs(
        &self,
        ids: &[BlobId],
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let locations = self.locate_all(ids)?;
        for run in runs(&locations, RUN_BYTES) {
            self.read_run(&locations[run], |_, plaintext| sink(&plaintext))?;
        }
        Ok(())
    }

    /// As [`Self::read_blobs`], with up to `threads` ranged reads (of at most
    /// [`PARALLEL_RUN_BYTES`] each) fetched and decrypted at once while `sink` receives the
    /// plaintext in order on the calling thread. Consecutive short runs are read by one thread
    /// as one piece of work of up to [`PIECE_BYTES`]; at most
    /// `threads + IN_FLIGHT_AHEAD` pieces are ahead of `sink`. The first error stops the readers
    /// and is returned.
    pub fn read_blobs_parallel(
        &self,
        ids: &[BlobId],
        threads: usize,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.read_opened_parallel(ids, threads, |opened| opened.plaintext, |p| sink(p))
    }

    /// As [`Self::read_blobs_parallel`], handing `sink` each blob opened: its plaintext and the
    /// zstd frame it was stored as, if compressed ([`pack::OpenedBlob`]). What is held ahead of
    /// `sink` is bounded as there, each run's frames on top of its plaintext.
    pub fn read_blobs_with_frames(
        &self,
        ids: &[BlobId],
        threads: usize,
        mut sink: impl FnMut(&pack::OpenedBlob) -> Result<()>,
    ) -> Result<()> {
        self.read_opened_parallel(ids, threads, |opened| opened, |o| sink(o))
    }

    /// Reads `ids` in runs with `threads` threads, keeps of each opened blob what `keep` takes,
    /// and hands that to `sink` in order on the calling thread.
    fn read_opened_parallel<K: Send>(
        &self,
        ids: &[BlobId],
        threads: usize,
        keep: impl Fn(pack::OpenedBlob) -> K + Sync,
        mut sink: impl FnMut(&K) -> Result<()>,
    ) -> Result<()> {
        let locations = self.locate_all(ids)?;
        let runs = runs(&locations, PARALLEL_RUN_BYTES);
        let pieces = pieces(&locations, &runs, PIECE_BYTES);
        if threads <= 1 || pieces.len() <= 1 {
            for run in runs {
                self.read_run_opened(&locations[run], |_, opened| sink(&keep(opened)))?;
            }
            return Ok(());
        }
        in_order(
            &pieces,
            threads,
            threads + IN_FLIGHT_AHEAD,
            |piece| {
                let mut blobs = Vec::new();
                for run in &runs[piece.clone()] {
                    self.read_run_opened(&locations[run.clone()], |_, opened| {
                        blobs.push(keep(opened));
                        Ok(())
                    })?;
                }
                Ok(blobs)
            },
            |blobs| blobs.iter().try_for_each(&mut sink),
        )
    }

    /// Reads the runs of back-to-back blobs `locations` holds (sorted by pack and offset, each
    /// run at most [`REPACK_RUN_BYTES`]) with `threads` threads, authenticates every blob
    /// (every byte as sealed for its id, kind and compression, without decompressing) and hands
    /// it still sealed to `each`, from any thread. Runs under [`crate::fs::direct::WORTH_IT`]
    /// are asked for ahead first; larger ones are read directly, around the page cache. The
    /// first error stops the threads and is returned; `cancel` stops them with
    /// [`Error::Interrupted`].
    pub fn read_sealed_runs(
        &self,
        locations: &[BlobLocation],
        threads: usize,
        cancel: &std::sync::atomic::AtomicBool,
        each: impl Fn(&BlobLocation, &[u8]) -> Result<()> + Sync,
    ) -> Result<()> {
        use std::sync::atomic::Ordering;
        let runs = runs(locations, REPACK_RUN_BYTES);
        let cost = self.storage.read_cost();
        let _plan = super::plan::plan(locations, cost).map(|plan| self.storage.follow_plan(plan));
        for run in &runs {
            let (pack, range) = span(&locations[run.clone()]);
            if range.end - range.start < crate::fs::direct::WORTH_IT as u64 {
                self.storage.prefetch(&pack::pack_key(&pack), range);
            }
        }
        crate::repository::parallel::try_each(&runs, threads, |run| {
            if cancel.load(Ordering::SeqCst) {
                return Err(Error::Interrupted);
            }
            self.with_run(&locations[run.clone()], |loc, sealed| {
                pack::authenticate_blob(self.keys, &loc.pack, &loc.blob, sealed)?;
                each(loc, sealed)
            })
        })
    }

    /// The range of one pack that holds every blob of `lists`, when they all lie in one pack
    /// close together: at most [`MAX_SPAN`] long and at least half filled by the blobs. Such a
    /// batch (the small files of one directory, usually) is then read once
    /// ([`Self::with_span`]). `None` if a blob is missing from the index.
    pub fn span_of<'b>(
        &self,
        lists: impl IntoIterator<Item = &'b [BlobId]>,
    ) -> Option<(PackId, Range<u64>)> {
        let mut span: Option<(PackId, Range<u64>)> = None;
        let mut used = 0u64;
        for id in lists.into_iter().flatten() {
            let loc = self.index.get(id)?;
            let start = u64::from(loc.blob.offset);
            let end = start + u64::from(loc.blob.length);
            used += end - start;
            match &mut span {
                None => span = Some((loc.pack, start..end)),
                Some((pack, range)) if *pack == loc.pack => {
                    range.start = range.start.min(start);
                    range.end = range.end.max(end);
                }
                Some(_) => return None,
            }
        }
        span.filter(|(_, r)| r.end - r.start <= MAX_SPAN && used * 2 >= r.end - r.start)
    }

    /// Reads `range` of `pack` once (directly, around the page cache, when large) and hands it
    /// to `f` as a [`Span`] that opens blobs from it.
    pub fn with_span<R>(
        &self,
        pack: PackId,
        range: Range<u64>,
        f: impl FnOnce(&Span<'_, '_>) -> Result<R>,
    ) -> Result<R> {
        let start = range.start;
        self.storage
            .with_range_direct("pack", &pack::pack_key(&pack), range, |data| {
                f(&Span {
                    reader: self,
                    pack,
                    start,
                    data,
                })
            })
    }

    fn locate_all(&self, ids: &[BlobId]) -> Result<Vec<BlobLocation>> {
        ids.iter().map(|id| self.locate(id)).collect()
    }

    /// Fetches a run of back-to-back blobs of one pack with one ranged read, opens each and
    /// hands its plaintext to `each`, in order.
    fn read_run(
        &self,
        run: &[BlobLocation],
        mut each: impl FnMut(&BlobLocation, Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        self.read_run_opened(run, |loc, opened| each(loc, opened.plaintext))
    }

    /// As [`Self::read_run`], handing on each blob opened with its frame.
    fn read_run_opened(
        &self,
        run: &[BlobLocation],
        mut each: impl FnMut(&BlobLocation, pack::OpenedBlob) -> Result<()>,
    ) -> Result<()> {
        self.with_run(run, |loc, sealed| {
            each(
                loc,
                pack::open_blob_with_frame(self.keys, &loc.pack, &loc.blob, sealed)?,
            )
        })
    }

    /// Fetches a run with one ranged read and hands each blob's sealed bytes to `each`. Runs
    /// are read once (restore, dump, repacking): large ones around the page cache.
    fn with_run(
        &self,
        run: &[BlobLocation],
        mut each: impl FnMut(&BlobLocation, &[u8]) -> Result<()>,
    ) -> Result<()> {
        if run.is_empty() {
            return Ok(());
        }
        let (pack, range) = span(run);
        let start = range.start;
        self.storage
            .with_range_direct("pack", &pack::pack_key(&pack), range, |bytes| {
                for loc in run {
                    let from = (u64::from(loc.blob.offset) - start) as usize;
                    let sealed = bytes
                        .get(from..from + loc.blob.length as usize)
                        .ok_or_else(|| {
                            Error::corrupt("pack", pack, "a run read shorter than its blobs")
                        })?;
                    each(loc, sealed)?;
                }
                Ok(())
            })
    }
}

impl Span<'_, '_> {
    /// Reads the blobs `ids` in order, as [`BlobReader::read_blobs`] does, taking each from the
    /// span when it lies there and reading it on its own otherwise.
    pub fn read_blobs(
        &self,
        ids: &[BlobId],
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let reader = self.reader;
        for id in ids {
            let loc = reader.locate(id)?;
            let from = u64::from(loc.blob.offset).wrapping_sub(self.start) as usize;
            let sealed = (loc.pack == self.pack)
                .then(|| {
                    self.data
                        .get(from..from.checked_add(loc.blob.length as usize)?)
                })
                .flatten();
            match sealed {
                Some(sealed) => sink(&pack::open_blob(
                    reader.keys,
                    &self.pack,
                    &loc.blob,
                    sealed,
                )?)?,
                // Not in the span (spans are planned from this same index, so this does not
                // happen): read it on its own.
                None => reader.read_blobs(std::slice::from_ref(id), &mut sink)?,
            }
        }
        Ok(())
    }
}

/// The pack and byte range a non-empty run of back-to-back blobs covers.
fn span(run: &[BlobLocation]) -> (PackId, Range<u64>) {
    match (run.first(), run.last()) {
        (Some(first), Some(last)) => (
            first.pack,
            u64::from(first.blob.offset)..u64::from(last.blob.offset) + u64::from(last.blob.length),
        ),
        _ => (PackId([0; 32]), 0..0),
    }
}

/// Joins consecutive `runs` of `locations` (as [`runs`] cut them) into pieces of work of at
/// most `max_bytes` (a larger run is a piece of its own); each piece is a range of `runs`. A
/// file whose blobs alternate between packs (a dump after churn: the unchanged chunks
/// in the first backup's packs, each changed one in a later pack) has thousands of short runs;
/// handed to [`in_order`] one by one, every one cost a hand-over between threads (a restore of
/// bench/run.py's data made ~19,500 futex calls, 62% of them readers waiting for the writer).
///
/// A piece is bounded by its plaintext too (what the reader holds until the sink takes it): a
/// compressed dump's 4 MiB of sealed blobs are 10 MiB and more of plaintext.
fn pieces(locations: &[BlobLocation], runs: &[Range<usize>], max_bytes: u64) -> Vec<Range<usize>> {
    let mut out: Vec<Range<usize>> = Vec::new();
    let mut bytes = 0u64;
    for (i, run) in runs.iter().enumerate() {
        let (_, span) = span(&locations[run.clone()]);
        let plaintext: u64 = locations[run.clone()]
            .iter()
            .map(|loc| u64::from(loc.blob.raw_length))
            .sum();
        let len = (span.end - span.start).max(plaintext);
        match out.last_mut() {
            Some(piece) if bytes + len <= max_bytes => {
                piece.end = i + 1;
                bytes += len;
            }
            _ => {
                out.push(i..i + 1);
                bytes = len;
            }
        }
    }
    out
}

/// Splits `locations` into runs of blobs that lie back to back in one pack, each spanning at
/// most `max_bytes` (a single larger blob is a run of its own).
pub fn runs(locations: &[BlobLocation], max_bytes: u64) -> Vec<Range<usize>> {
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

/// Applies `read` to every item with `threads` threads and hands the results to `sink` in item
/// order on the calling thread; a reader waits while its item is `window` or more ahead of the
/// last one `sink` took, so at most `window` results are held. The first error (from `read` or
/// `sink`) stops the readers and is returned.
fn in_order<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    window: usize,
    read: impl Fn(&T) -> Result<R> + Sync,
    mut sink: impl FnMut(R) -> Result<()>,
) -> Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // How many items `sink` has consumed; a reader waits until its item is within the window.
    let written = Mutex::new(0usize);
    let moved = Condvar::new();
    let (tx, rx) = crossbeam_channel::bounded::<(usize, Result<R>)>(window);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(items.len()) {
            let tx = tx.clone();
            let (next, stop, written, moved, read) = (&next, &stop, &written, &moved, &read);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { return };
                {
                    let mut done = crate::sync::lock(written);
                    while i >= *done + window && !stop.load(Ordering::Relaxed) {
                        done = moved.wait(done).unwrap_or_else(|p| p.into_inner());
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if tx.send((i, read(item))).is_err() {
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
                    sink(result?)?;
                    want += 1;
                    *crate::sync::lock(&written) = want;
                    moved.notify_all();
                }
            }
            Ok(())
        })();
        if result.is_err() {
            // Set under the lock a waiting reader checks it with, so no reader can miss it
            // between its check and its wait.
            {
                let _done = crate::sync::lock(&written);
                stop.store(true, Ordering::Relaxed);
            }
            moved.notify_all();
            drop(rx);
        }
        result
    })
}

/// Merges ranges sorted by pack and start that lie less than `gap` apart in one pack.
fn merge_close(ranges: &[(PackId, u64, u64)], gap: u64) -> Vec<(PackId, Range<u64>)> {
    let mut out: Vec<(PackId, Range<u64>)> = Vec::new();
    for &(pack, start, end) in ranges {
        match out.last_mut() {
            Some((p, r)) if *p == pack && start <= r.end.saturating_add(gap) => {
                r.end = r.end.max(end);
            }
            _ => out.push((pack, start..end)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::writer::BlobWriter;
    use crate::repository::{InitOptions, Repository};
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
            repo.reader()
                .read_blobs_parallel(&ids, threads, |b| {
                    got.extend_from_slice(b);
                    Ok(())
                })
                .unwrap();
            assert!(got == want, "{threads} threads: content differs");
        }
        // An error from the sink stops the read and is returned.
        let mut calls = 0;
        let err = repo
            .reader()
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
            .reader()
            .read_blobs_parallel(&ids, 3, |b| {
                delivered += b.len();
                Ok(())
            })
            .unwrap_err();
        assert!(err.to_string().contains(&loc.pack.to_string()), "{err}");
        // Everything before the damaged blob was delivered, nothing after it.
        assert!(delivered <= 25 * 100_000, "{delivered}");
    }

    fn loc(pack: u8, offset: u32, length: u32) -> BlobLocation {
        BlobLocation {
            pack: PackId([pack; 32]),
            blob: crate::format::pack::PackedBlob {
                kind: BlobKind::Data,
                compression: crate::format::pack::Compression::None,
                id: BlobId([offset as u8; 32]),
                offset,
                length,
                raw_length: length,
            },
        }
    }

    #[test]
    fn runs_join_back_to_back_blobs_of_one_pack_up_to_their_limit() {
        let mib = 1 << 20;
        let locations = vec![
            loc(1, 0, 100),
            loc(1, 100, 50), // touches the first: same run
            loc(1, 200, 10), // a gap: new run
            loc(1, 210, 4 * mib),
            loc(1, 210 + 4 * mib, 4 * mib), // would pass 8 MiB: new run
            loc(1, 210 + 8 * mib, 9 * mib), // larger than a run: alone
            loc(2, 210 + 17 * mib, 10),     // back to back, but another pack
        ];
        let limit = 8 << 20;
        assert_eq!(runs(&locations, limit), vec![0..2, 2..4, 4..5, 5..6, 6..7]);
        let spans: Vec<(PackId, Range<u64>)> = runs(&locations, limit)
            .into_iter()
            .map(|r| span(&locations[r]))
            .collect();
        assert_eq!(spans[0], (PackId([1; 32]), 0..150));
        assert_eq!(spans[1].1, 200..210 + 4 * u64::from(mib));
        assert!(runs(&[], RUN_BYTES).is_empty());
        // A larger limit joins what a smaller one splits.
        assert_eq!(runs(&locations[3..5], RUN_BYTES), vec![0..2]);
    }

    #[test]
    fn pieces_join_short_runs_of_alternating_packs_up_to_their_limit() {
        let mib: u32 = 1 << 20;
        // A churned dump: blobs alternate between an old pack (1) and a new one (2).
        let locations = vec![
            loc(1, 0, 100),
            loc(2, 0, 50),
            loc(1, 200, 100),
            loc(1, 300, 100), // back to back with the one before: same run
            loc(2, 50, 50),
            loc(1, 1000, 3 * mib),
            loc(2, 100, 2 * mib),     // would pass 4 MiB: a new piece
            loc(1, 5 * mib, 5 * mib), // larger than a piece: alone
            loc(2, 3 * mib, 10),
        ];
        let limit = u64::from(4 * mib);
        let cut = runs(&locations, limit);
        assert_eq!(cut, vec![0..1, 1..2, 2..4, 4..5, 5..6, 6..7, 7..8, 8..9]);
        // Pieces are ranges of runs: the first five runs (3 MiB and 400 bytes) make one.
        let joined = pieces(&locations, &cut, limit);
        assert_eq!(joined, vec![0..5, 5..6, 6..7, 7..8]);
        // The pieces cover every run once, in order.
        let mut next = 0;
        for piece in &joined {
            assert_eq!(piece.start, next);
            next = piece.end;
        }
        assert_eq!(next, cut.len());
        assert!(pieces(&[], &[], limit).is_empty());
        // Compressed blobs: 1 MiB sealed, 3 MiB of plaintext each; a piece holds at most
        // 4 MiB of plaintext, so each is alone although their sealed bytes would fit together.
        let compressed: Vec<BlobLocation> = (0..3u32)
            .map(|i| {
                let mut l = loc(1 + (i % 2) as u8, i * 2 * mib, mib);
                l.blob.raw_length = 3 * mib;
                l
            })
            .collect();
        let cut_compressed = runs(&compressed, limit);
        assert_eq!(cut_compressed.len(), 3);
        assert_eq!(
            pieces(&compressed, &cut_compressed, limit),
            vec![0..1, 1..2, 2..3]
        );
        // Runs larger than a piece stay whole; smaller pieces join fewer runs.
        assert_eq!(
            pieces(&locations, &cut, 250),
            vec![0..2, 2..4, 4..5, 5..6, 6..7, 7..8]
        );
    }

    #[test]
    fn prefetch_ranges_closer_than_the_gap_merge() {
        let (a, b) = (PackId([1; 32]), PackId([2; 32]));
        let gap = PREFETCH_GAP;
        let merged = merge_close(
            &[
                (a, 0, 100),
                (a, 100 + gap, 200 + gap), // exactly the gap apart: joined
                (a, 201 + 2 * gap, 300 + 2 * gap), // one byte more: apart
                (b, 300 + 2 * gap, 400 + 2 * gap),
            ],
            gap,
        );
        assert_eq!(
            merged,
            vec![
                (a, 0..200 + gap),
                (a, 201 + 2 * gap..300 + 2 * gap),
                (b, 300 + 2 * gap..400 + 2 * gap)
            ]
        );
    }

    #[test]
    fn a_span_is_read_once_and_serves_the_blobs_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, ids, all) = repo_with_blobs(dir.path());
        let reader = repo.reader();
        // Two neighbours of one pack: one span; blobs of two packs: none.
        let (pack, range) = reader.span_of([&ids[0..2]]).unwrap();
        assert_eq!(pack, repo.locate(&ids[0]).unwrap().pack);
        assert!(reader.span_of([&ids[..]]).is_none());
        assert!(reader.span_of([&[BlobId([7; 32])][..]]).is_none());
        let mut got = Vec::new();
        reader
            .with_span(pack, range, |span| {
                // The third blob lies outside the span: read on its own.
                span.read_blobs(&ids[0..3], |b| {
                    got.extend_from_slice(b);
                    Ok(())
                })
            })
            .unwrap();
        assert!(got == all[..300_000], "content differs");
    }

    #[test]
    fn sealed_runs_are_authenticated_before_they_are_handed_on() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, ids, _) = repo_with_blobs(dir.path());
        let reader = repo.reader();
        let mut locations: Vec<BlobLocation> =
            ids.iter().map(|id| reader.locate(id).unwrap()).collect();
        locations.sort_by(|a, b| a.pack.cmp(&b.pack).then(a.blob.offset.cmp(&b.blob.offset)));
        let cancel = AtomicBool::new(false);
        let seen = std::sync::Mutex::new(Vec::new());
        reader
            .read_sealed_runs(&locations, 3, &cancel, |loc, sealed| {
                assert_eq!(sealed.len(), loc.blob.length as usize);
                seen.lock().unwrap().push(loc.blob.id);
                Ok(())
            })
            .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        let mut want = ids.clone();
        want.sort();
        assert_eq!(seen, want);
        // One flipped byte: refused, naming the pack.
        let bad = locations[5];
        let path = dir.path().join(pack::pack_key(&bad.pack));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[bad.blob.offset as usize + 10] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let err = reader
            .read_sealed_runs(&locations, 2, &cancel, |_, _| Ok(()))
            .unwrap_err();
        assert!(err.to_string().contains(&bad.pack.to_string()), "{err}");
        cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        let err = reader
            .read_sealed_runs(&locations, 2, &cancel, |_, _| Ok(()))
            .unwrap_err();
        assert!(matches!(err, Error::Interrupted), "{err}");
    }
}

//! Copying snapshots between repositories (`coffer copy`), typically from a local repository to
//! an object store.
//!
//! The two repositories have their own master keys, so the same plaintext has different blob ids
//! in each (keyed BLAKE3). Copy therefore reads each data blob's plaintext from the source (with
//! several threads), stores it in the target through a [`BlobWriter`] (which hashes it with the
//! target's content-id key, deduplicates against the target's index, and seals it with the
//! target's keys: as the zstd frame the source stored when both repositories compress at the
//! same levels, else compressed anew), rewrites the trees bottom-up with the new ids, and
//! finally writes a snapshot
//! with the same time, host, paths, tags and labels whose `copied_from` names the source
//! snapshot. Blobs keep the source's chunk boundaries: nothing is re-chunked.
//!
//! Guarantees:
//! - **Only what the target lacks is uploaded**: blobs already in the target's index are skipped.
//! - **Idempotent**: a source snapshot that some target snapshot was `copied_from` is skipped.
//! - **Resumable**: every `index_every_packs` uploaded packs an index file is written, so after an
//!   interruption the next run finds those blobs in the target's index and does not upload them
//!   again. Packs are always indexed before the snapshot that needs them is written.
//! - **Little source reading on repeated copies**: the id mapping of snapshots copied earlier is
//!   recovered by walking their source and target trees side by side (metadata only); an
//!   unchanged directory maps whole, and only files with new content are read.

use crate::error::{Error, Result};
use crate::format::compress::{BlobClass, CompressionLevels};
use crate::format::id::{BlobId, PackId, SnapshotId};
use crate::format::pack::{BlobKind, PackedBlob};
use crate::format::snapshot::{self, Snapshot};
use crate::format::tree::{NodeKind, Tree};
use crate::repository::parallel::threads_for_reading;
use crate::repository::writer::BlobWriter;
use crate::repository::Repository;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Default number of uploaded packs between index checkpoints.
pub const DEFAULT_INDEX_EVERY_PACKS: usize = 64;

/// What to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Source snapshots (`latest`, ids or unique prefixes); empty copies every snapshot.
    pub snapshots: Vec<String>,
    /// Set to stop early (SIGINT/SIGTERM).
    pub cancel: Arc<AtomicBool>,
    /// Uploaded packs between index checkpoints (at least 1).
    pub index_every_packs: usize,
    /// Counters a front end may read while the copy runs: snapshots copied (of those to copy)
    /// and bytes of data read from the source.
    pub progress: Arc<crate::ops::progress::Progress>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            snapshots: Vec::new(),
            cancel: Arc::new(AtomicBool::new(false)),
            index_every_packs: DEFAULT_INDEX_EVERY_PACKS,
            progress: Arc::default(),
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    /// `(source, target)` of each snapshot copied by this run.
    pub copied: Vec<(SnapshotId, SnapshotId)>,
    /// `(source, target)` of each selected snapshot the target already had.
    pub already_present: Vec<(SnapshotId, SnapshotId)>,
    /// Plaintext bytes read from the source.
    pub bytes_read: u64,
    pub data_blobs_new: u64,
    pub tree_blobs_new: u64,
    /// Stored (compressed, encrypted) bytes uploaded in new blobs.
    pub added_stored_bytes: u64,
    pub packs_written: u64,
    /// Damaged snapshots of either repository, skipped (named, with why).
    pub warnings: Vec<String>,
}

/// Copies the selected snapshots of `source` into `target`. See the module documentation.
pub fn copy(
    source: &Repository,
    target: &mut Repository,
    opts: &CopyOptions,
) -> Result<CopyReport> {
    let every = opts.index_every_packs.max(1);
    let source_snapshots = snapshot::Snapshot::load_all(source.storage(), source.keys())?;
    let mut warnings = source_snapshots.damage_warnings();
    let selected = select(&source_snapshots, &opts.snapshots)?;
    let target_snapshots = snapshot::Snapshot::load_all(target.storage(), target.keys())?;
    warnings.extend(target_snapshots.damage_warnings());
    let target_snapshots = target_snapshots.good;
    let source_snapshots = &source_snapshots.good;
    // source snapshot id -> target snapshot id, for everything copied before.
    let mut copied: HashMap<SnapshotId, SnapshotId> = target_snapshots
        .iter()
        .filter_map(|(id, s)| s.copied_from.map(|from| (from, *id)))
        .collect();

    let mut report = CopyReport {
        warnings,
        ..CopyReport::default()
    };
    let mut mapper = Mapper {
        source,
        ids: HashMap::new(),
        seeded: HashSet::new(),
    };
    let to_copy: Vec<&(SnapshotId, Snapshot)> = selected
        .into_iter()
        .filter(|(id, _)| match copied.get(id) {
            Some(t) => {
                report.already_present.push((*id, *t));
                false
            }
            None => true,
        })
        .collect();
    if to_copy.is_empty() {
        return Ok(report);
    }
    // Recover the id mapping from earlier copies (trees only, no data).
    let source_by_id: HashMap<SnapshotId, &Snapshot> =
        source_snapshots.iter().map(|(id, s)| (*id, s)).collect();
    let target_by_id: HashMap<SnapshotId, &Snapshot> =
        target_snapshots.iter().map(|(id, s)| (*id, s)).collect();
    for (src_id, tgt_id) in &copied {
        if let (Some(s), Some(t)) = (source_by_id.get(src_id), target_by_id.get(tgt_id)) {
            mapper.seed(target, &s.tree, &t.tree)?;
        }
    }

    let reuse_frames =
        CompressionLevels::of(source.config()) == CompressionLevels::of(target.config());
    for (src_id, src) in to_copy {
        if opts.cancel.load(Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        opts.progress.set_current(&src_id.short());
        let mut indexed: Vec<(PackId, Vec<PackedBlob>)> = Vec::new();
        let root = {
            let writer =
                BlobWriter::new(target, target.storage().connections(), opts.cancel.clone())?;
            let mut compressor = writer.compressor();
            let mut ctx = CopyRun {
                writer: &writer,
                compressor: &mut compressor,
                reuse_frames,
                cancel: &opts.cancel,
                every,
                indexed: &mut indexed,
                bytes_read: 0,
                progress: &opts.progress,
            };
            // On an object store: the source's packs are read one request per pack touched.
            let missing = mapper.missing_data(&src.tree)?;
            let _plan = source.reader().plan_reads([missing.as_slice()]);
            let root = match mapper.copy_tree(&mut ctx, &src.tree) {
                Ok(root) => root,
                Err(e) => {
                    // Interrupted or failed: what was uploaded is indexed for the next run.
                    if let Err(failed) = writer.keep_uploaded() {
                        tracing::warn!("the packs already copied could not be indexed: {failed}");
                    }
                    return Err(e);
                }
            };
            report.bytes_read += ctx.bytes_read;
            let stats = &writer.stats;
            report.data_blobs_new += stats.data_blobs_new.load(Ordering::Relaxed);
            report.tree_blobs_new += stats.tree_blobs_new.load(Ordering::Relaxed);
            report.added_stored_bytes += stats.added_stored.load(Ordering::Relaxed);
            let written = writer.finish()?;
            indexed.extend(written.packs);
            root
        };
        report.packs_written += indexed.len() as u64;
        target.add_indexed_packs(&indexed);
        let mut snap = src.clone();
        snap.tree = root;
        snap.parent = src.parent.and_then(|p| copied.get(&p).copied());
        snap.key_id = target.keys().fingerprint();
        snap.copied_from = Some(*src_id);
        let new_id = snap.save(target.storage(), target.keys())?;
        copied.insert(*src_id, new_id);
        report.copied.push((*src_id, new_id));
        opts.progress.file_done();
    }
    Ok(report)
}

/// The snapshots to copy, oldest first: every readable one, or those `specs` name (ids or
/// prefixes, each once). Pure.
fn select<'a>(
    all: &'a snapshot::Snapshots,
    specs: &[String],
) -> Result<Vec<&'a (SnapshotId, Snapshot)>> {
    Ok(if specs.is_empty() {
        all.good.iter().collect()
    } else {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for spec in specs {
            let found = all.resolve(spec)?;
            if seen.insert(found.0) {
                out.push(found);
            }
        }
        out.sort_by(|a, b| {
            a.1.timestamp()
                .cmp(&b.1.timestamp())
                .then_with(|| a.0 .0.cmp(&b.0 .0))
        });
        out
    })
}

/// State of copying one snapshot.
struct CopyRun<'a, 'r> {
    writer: &'a BlobWriter<'r>,
    compressor: &'a mut crate::format::compress::BlobCompressor,
    /// Whether the two repositories compress every class of blob at the same level: data blobs
    /// then keep the zstd frame they were stored as in the source.
    reuse_frames: bool,
    cancel: &'a AtomicBool,
    every: usize,
    indexed: &'a mut Vec<(PackId, Vec<PackedBlob>)>,
    bytes_read: u64,
    progress: &'a crate::ops::progress::Progress,
}

impl CopyRun<'_, '_> {
    /// Stores a tree (re-encoded with the target's ids, so compressed anew).
    fn store_tree(&mut self, plain: &[u8]) -> Result<BlobId> {
        let stored =
            self.writer
                .store(self.compressor, BlobClass::of_copied(BlobKind::Tree), plain);
        self.stored(stored)
    }

    /// Stores a data blob read from the source: sealed as the zstd `frame` it was stored as
    /// there when the repositories compress alike ([`BlobWriter::store_copied`]), else
    /// compressed at the target's level for data.
    fn store_data(&mut self, plain: &[u8], frame: Option<&[u8]>) -> Result<BlobId> {
        let stored = if self.reuse_frames {
            self.writer.store_copied(BlobKind::Data, plain, frame)
        } else {
            let class = BlobClass::of_copied(BlobKind::Data);
            self.writer.store(self.compressor, class, plain)
        };
        self.stored(stored)
    }

    /// The id of a blob stored, after an index checkpoint when enough packs went up unindexed.
    fn stored(&mut self, stored: Result<(BlobId, bool)>) -> Result<BlobId> {
        let (id, _) = stored.map_err(|e| self.writer.explain(e))?;
        if self.writer.unindexed_packs() >= self.every {
            self.indexed.extend(self.writer.checkpoint()?);
        }
        Ok(id)
    }
}

/// Source blob ids mapped to target blob ids.
struct Mapper<'s> {
    source: &'s Repository,
    ids: HashMap<BlobId, BlobId>,
    /// Source trees already walked while seeding.
    seeded: HashSet<BlobId>,
}

impl Mapper<'_> {
    /// Learns the mapping from a source tree and its copy in the target, walking both side by
    /// side. Only pairs whose target blob is indexed are kept; any disagreement in shape stops
    /// the walk of that directory (its blobs are then simply read and stored again).
    fn seed(&mut self, target: &Repository, src_tree: &BlobId, tgt_tree: &BlobId) -> Result<()> {
        if self.ids.contains_key(src_tree) || !self.seeded.insert(*src_tree) {
            return Ok(());
        }
        if !target.index().contains(tgt_tree) {
            return Ok(());
        }
        let src = self.source.load_tree(src_tree)?;
        let tgt = target.load_tree(tgt_tree)?;
        if src.nodes.len() != tgt.nodes.len() {
            return Ok(());
        }
        let mut pairs = Vec::new();
        let mut subtrees = Vec::new();
        for (s, t) in src.nodes.iter().zip(&tgt.nodes) {
            if s.name != t.name || s.name_bytes != t.name_bytes || s.kind != t.kind {
                return Ok(());
            }
            match s.kind {
                NodeKind::File => {
                    if s.content.len() != t.content.len() {
                        return Ok(());
                    }
                    pairs.extend(s.content.iter().copied().zip(t.content.iter().copied()));
                }
                NodeKind::Dir => {
                    if let (Some(a), Some(b)) = (s.subtree, t.subtree) {
                        subtrees.push((a, b));
                    }
                }
                NodeKind::Symlink | NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {}
            }
        }
        for (s, t) in pairs {
            if target.index().contains(&t) {
                self.ids.insert(s, t);
            }
        }
        for (a, b) in subtrees {
            self.seed(target, &a, &b)?;
        }
        self.ids.insert(*src_tree, *tgt_tree);
        Ok(())
    }

    /// The data blobs below source tree `tree_id` that are not mapped yet (what
    /// [`Self::copy_tree`] will read), each once, in the order it reads them.
    fn missing_data(&self, tree_id: &BlobId) -> Result<Vec<BlobId>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![*tree_id];
        while let Some(id) = stack.pop() {
            if self.ids.contains_key(&id) || !seen.insert(id) {
                continue;
            }
            let tree = self.source.load_tree(&id)?;
            for node in &tree.nodes {
                out.extend(
                    node.content
                        .iter()
                        .filter(|b| !self.ids.contains_key(*b) && seen.insert(**b)),
                );
            }
            stack.extend(tree.nodes.iter().rev().filter_map(|n| n.subtree));
        }
        Ok(out)
    }

    /// Copies a source tree and everything below it; returns the target tree's id.
    fn copy_tree(&mut self, run: &mut CopyRun<'_, '_>, tree_id: &BlobId) -> Result<BlobId> {
        if let Some(mapped) = self.ids.get(tree_id) {
            return Ok(*mapped);
        }
        if run.cancel.load(Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        let mut tree: Tree = self.source.load_tree(tree_id)?;
        for node in &mut tree.nodes {
            match node.kind {
                NodeKind::Dir => {
                    if let Some(sub) = node.subtree {
                        node.subtree = Some(self.copy_tree(run, &sub)?);
                    }
                }
                NodeKind::File => {
                    let mut missing: Vec<BlobId> = Vec::new();
                    let mut seen = HashSet::new();
                    for id in &node.content {
                        if !self.ids.contains_key(id) && seen.insert(*id) {
                            missing.push(*id);
                        }
                    }
                    if !missing.is_empty() {
                        let mut i = 0;
                        let ids = &mut self.ids;
                        // Read and opened by other threads while this one stores.
                        let threads = threads_for_reading(self.source.storage());
                        self.source.reader().read_blobs_with_frames(
                            &missing,
                            threads,
                            |opened| {
                                let plain = &opened.plaintext;
                                let new_id = run.store_data(plain, opened.frame.as_deref())?;
                                run.bytes_read += plain.len() as u64;
                                run.progress.add_bytes(plain.len() as u64);
                                ids.insert(missing[i], new_id);
                                i += 1;
                                Ok(())
                            },
                        )?;
                    }
                    for id in &mut node.content {
                        *id = *self.ids.get(id).ok_or_else(|| {
                            Error::corrupt("blob", *id, "was not read from the source")
                        })?;
                    }
                }
                NodeKind::Symlink | NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {}
            }
        }
        let new_id = run.store_tree(&tree.encode())?;
        self.ids.insert(*tree_id, new_id);
        Ok(new_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::backup::{backup, BackupOptions, Source, SourceInput, StreamSource};
    use crate::repository::InitOptions;
    use crate::storage::Storage;

    fn repo() -> Repository {
        let options = InitOptions {
            pack_size: 1024 * 1024,
            ..crate::repository::test_options()
        };
        Repository::init(Storage::in_memory().unwrap(), b"pw", &options).unwrap()
    }

    /// The repository opened again (an in-process backup does not update the handle's index).
    fn reopen(repo: &Repository) -> Repository {
        Repository::open(repo.storage().clone(), b"pw").unwrap()
    }

    fn backup_bytes(repo: &Repository, name: &str, data: Vec<u8>) -> SnapshotId {
        let mut opts = BackupOptions::new(Vec::new());
        opts.sources = vec![Source {
            name: None,
            input: SourceInput::Stream {
                tree_name: name.into(),
                stream: StreamSource::Reader(Box::new(std::io::Cursor::new(data))),
                dump_chunking: false,
            },
        }];
        opts.hostname = "h".into();
        backup(repo, opts).unwrap().id.unwrap()
    }

    /// Deterministic incompressible bytes (SplitMix64).
    fn data(seed: u64, len: usize) -> Vec<u8> {
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

    fn read_file(repo: &Repository, snap: &Snapshot, name: &str) -> Vec<u8> {
        let tree = repo.load_tree(&snap.tree).unwrap();
        let node = tree.find(name.as_bytes()).unwrap();
        let mut out = Vec::new();
        repo.read_blobs(&node.content, |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn copies_rekeys_is_idempotent_and_uploads_only_new_data() {
        let source = repo();
        let mut target = repo();
        let first = data(1, 12 * 1024 * 1024);
        let s1 = backup_bytes(&source, "a.bin", first.clone());
        let source = reopen(&source);
        let report = copy(&source, &mut target, &CopyOptions::default()).unwrap();
        assert_eq!(report.copied.len(), 1);
        assert!(report.packs_written >= 2, "{report:?}");
        let snaps = snapshot::Snapshot::load_all(target.storage(), target.keys())
            .unwrap()
            .good;
        assert_eq!(snaps.len(), 1);
        let (_, copied) = &snaps[0];
        assert_eq!(copied.copied_from, Some(s1));
        let original = Snapshot::load(source.storage(), source.keys(), &s1).unwrap();
        assert_eq!(copied.time, original.time);
        assert_eq!(copied.paths, original.paths);
        assert_ne!(
            copied.tree, original.tree,
            "target ids use the target's key"
        );
        assert_eq!(read_file(&target, copied, "a.bin"), first);

        // Second run: nothing to do, nothing uploaded.
        let again = copy(&source, &mut target, &CopyOptions::default()).unwrap();
        assert!(again.copied.is_empty());
        assert_eq!(again.already_present.len(), 1);
        assert_eq!(again.bytes_read, 0);

        // A new snapshot sharing most data: only the new part is read and uploaded.
        let mut second = first.clone();
        second.extend(data(2, 512 * 1024));
        let s2 = backup_bytes(&source, "a.bin", second.clone());
        let source = reopen(&source);
        // A fresh target handle, as a second `coffer copy` process would have.
        let mut target = reopen(&target);
        let progress = Arc::new(crate::ops::progress::Progress::new());
        let third = copy(
            &source,
            &mut target,
            &CopyOptions {
                snapshots: vec![s2.to_hex()[..8].to_string()],
                progress: progress.clone(),
                ..CopyOptions::default()
            },
        )
        .unwrap();
        assert_eq!(third.copied.len(), 1);
        // The progress counters: one snapshot done, the bytes read counted as they were read.
        let counted = progress.read();
        assert_eq!(counted.files_done, 1);
        assert_eq!(counted.bytes_done, third.bytes_read);
        assert_eq!(counted.current, s2.short());
        assert!(third.bytes_read < second.len() as u64 / 2, "{third:?}");
        assert!(third.data_blobs_new <= 2, "{third:?}");
        let copied2 = Snapshot::load(target.storage(), target.keys(), &third.copied[0].1).unwrap();
        assert_eq!(read_file(&target, &copied2, "a.bin"), second);
    }

    /// Compressible text, different for each seed.
    fn text(seed: u64, len: usize) -> Vec<u8> {
        let words: Vec<String> = data(seed, 4096)
            .chunks(8)
            .map(|w| w.iter().map(|b| char::from(b'a' + b % 26)).collect())
            .collect();
        let mut out = Vec::with_capacity(len + 64);
        let mut i = 0usize;
        while out.len() < len {
            let line = format!(
                "{i}\t{}\t{}\n",
                words[i % words.len()],
                words[(i * 7) % words.len()]
            );
            out.extend_from_slice(line.as_bytes());
            i += 1;
        }
        out.truncate(len);
        out
    }

    /// The zstd frame each blob of file `name` is stored as (`None`: stored uncompressed).
    fn frames(repo: &Repository, snap: &Snapshot, name: &str) -> Vec<Option<Vec<u8>>> {
        let tree = repo.load_tree(&snap.tree).unwrap();
        let node = tree.find(name.as_bytes()).unwrap();
        let mut out = Vec::new();
        repo.reader()
            .read_blobs_with_frames(&node.content, 2, |opened| {
                out.push(opened.frame.clone());
                Ok(())
            })
            .unwrap();
        out
    }

    fn repo_with_levels(file: i32, dump: i32) -> Repository {
        let options = InitOptions {
            pack_size: 1024 * 1024,
            compression_level: file,
            dump_compression_level: dump,
            ..crate::repository::test_options()
        };
        Repository::init(Storage::in_memory().unwrap(), b"pw", &options).unwrap()
    }

    /// `source` copied into a new repository with these levels, and the one snapshot copied.
    fn copied_into(source: &Repository, file: i32, dump: i32) -> (Repository, Snapshot) {
        let mut target = repo_with_levels(file, dump);
        copy(source, &mut target, &CopyOptions::default()).unwrap();
        let (_, snap) = snapshot::Snapshot::load_all(target.storage(), target.keys())
            .unwrap()
            .good
            .swap_remove(0);
        (target, snap)
    }

    #[test]
    fn data_blobs_keep_their_frames_only_between_repositories_that_compress_alike() {
        let source = repo_with_levels(9, 1);
        let plain = text(3, 3 * 1024 * 1024);
        let mut opts = BackupOptions::new(Vec::new());
        opts.sources = vec![Source {
            name: None,
            input: SourceInput::Stream {
                tree_name: "db.dump".into(),
                stream: StreamSource::Reader(Box::new(std::io::Cursor::new(plain.clone()))),
                dump_chunking: true,
            },
        }];
        opts.hostname = "h".into();
        let s1 = backup(&source, opts).unwrap().id.unwrap();
        let source = reopen(&source);
        let original = Snapshot::load(source.storage(), source.keys(), &s1).unwrap();
        let stored = frames(&source, &original, "db.dump");
        assert!(stored.len() > 10 && stored.iter().all(Option::is_some));

        // Same levels: every data blob is sealed as the frame the source stored (dump chunks
        // at the dump level), not compressed again.
        let (alike, copied) = copied_into(&source, 9, 1);
        assert_eq!(read_file(&alike, &copied, "db.dump"), plain);
        assert_eq!(frames(&alike, &copied, "db.dump"), stored);

        // Other levels: compressed anew at the target's level for data.
        let (other, copied) = copied_into(&source, 3, 1);
        assert_eq!(read_file(&other, &copied, "db.dump"), plain);
        let recompressed = frames(&other, &copied, "db.dump");
        assert_ne!(recompressed, stored);
        let mut at = 0;
        for frame in &recompressed {
            let frame = frame.as_ref().unwrap();
            let blob = zstd::bulk::decompress(frame, 1 << 20).unwrap();
            assert_eq!(
                *frame,
                zstd::bulk::compress(&blob, 3).unwrap(),
                "level 3, the target's"
            );
            assert_eq!(blob, plain[at..at + blob.len()]);
            at += blob.len();
        }
        assert_eq!(at, plain.len());
    }

    #[test]
    fn a_damaged_source_pack_fails_the_copy_naming_it_and_writes_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().to_str().unwrap();
        let options = InitOptions {
            pack_size: 1024 * 1024,
            ..crate::repository::test_options()
        };
        let source = Repository::init(
            Storage::open(location, crate::storage::OpenMode::Create).unwrap(),
            b"pw",
            &options,
        )
        .unwrap();
        backup_bytes(&source, "a.bin", data(5, 6 * 1024 * 1024));
        // One byte flipped in the middle of the largest data pack.
        let packs = source.storage().list_uncached("data").unwrap();
        let (key, size) = packs.iter().max_by_key(|(_, size)| *size).unwrap();
        let path = dir.path().join(key);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(*size / 2) as usize] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let source = reopen(&source);

        let mut target = repo();
        let err = copy(&source, &mut target, &CopyOptions::default()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        let pack = key.rsplit('/').next().unwrap();
        assert!(err.to_string().contains(pack), "{err}");
        let snaps = snapshot::Snapshot::load_all(target.storage(), target.keys()).unwrap();
        assert!(snaps.good.is_empty());
    }

    #[test]
    fn checkpoints_index_packs_before_the_end() {
        let source = repo();
        let mut target = repo();
        backup_bytes(&source, "a.bin", data(3, 4 * 1024 * 1024));
        let source = reopen(&source);
        let report = copy(
            &source,
            &mut target,
            &CopyOptions {
                index_every_packs: 1,
                ..CopyOptions::default()
            },
        )
        .unwrap();
        assert!(report.packs_written >= 3, "{report:?}");
        // Every pack is named by exactly one index file, whether a checkpoint or the final one.
        let index =
            crate::format::index::MasterIndex::load(target.storage(), target.keys()).unwrap();
        let mut named = Vec::new();
        for file in index.files() {
            let f = crate::format::index::IndexFile::load(target.storage(), target.keys(), file)
                .unwrap();
            named.extend(f.packs.into_iter().map(|(p, _)| p));
        }
        let mut stored: Vec<PackId> = target
            .list_packs()
            .unwrap()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        named.sort();
        stored.sort();
        assert_eq!(named, stored);
    }

    /// A checkpoint indexes the packs uploaded so far, and `finish` indexes only the rest, so
    /// an interrupted copy keeps what it uploaded.
    #[test]
    fn writer_checkpoint_indexes_uploaded_packs() {
        let target = repo();
        let writer = BlobWriter::new(&target, 1, Arc::new(AtomicBool::new(false))).unwrap();
        let mut compressor = writer.compressor();
        writer
            .store(
                &mut compressor,
                crate::format::compress::BlobClass::FileData,
                &data(4, 1024 * 1024 + 1),
            )
            .unwrap();
        // The pack is full and queued; wait for its upload (a condition, not a timing).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while writer.unindexed_packs() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "upload never finished"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let checkpointed = writer.checkpoint().unwrap();
        assert_eq!(checkpointed.len(), 1);
        assert_eq!(target.storage().list_uncached("index").unwrap().len(), 1);
        writer
            .store(
                &mut compressor,
                crate::format::compress::BlobClass::FileData,
                &data(5, 1000),
            )
            .unwrap();
        let written = writer.finish().unwrap();
        assert_eq!(written.packs.len(), 1);
        assert_ne!(written.packs[0].0, checkpointed[0].0);
        assert_eq!(target.storage().list_uncached("index").unwrap().len(), 2);
        let reopened = reopen(&target);
        assert!(reopened.index().contains(&checkpointed[0].1[0].id));
    }
}

//! Backup stage 3, the chunk+store pool: worker threads take chunks from a bounded queue, store
//! each through the [`BlobWriter`] at its [`BlobClass`], and send the id back to the chunk's
//! file. [`run`] starts the workers and the prefetch thread around the walking thread and joins
//! them all, whatever the walk's outcome.

use super::plan::ExcludeRules;
use super::walk::{prefetcher, PREFETCH_AHEAD};
use super::{BackupOptions, Run};
use crate::error::{Error, Result};
use crate::format::compress::BlobClass;
use crate::format::id::BlobId;
use crate::format::snapshot::SourceRecord;
use crate::format::tree::Node;
use crate::repository::writer::BlobWriter;
use crate::repository::Repository;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::path::PathBuf;

/// A chunk on its way to a worker.
pub(super) struct Job {
    pub(super) data: Vec<u8>,
    /// Decided with the chunker ([`Run::chunking`](super::chunk)): sets the compression level.
    pub(super) class: BlobClass,
    pub(super) seq: u64,
    pub(super) reply: Sender<(u64, Result<BlobId>)>,
}

/// What the walk counted, for the snapshot's summary.
#[derive(Default)]
pub(super) struct Counts {
    pub(super) files: u64,
    pub(super) dirs: u64,
    pub(super) symlinks: u64,
    /// FIFOs and device nodes.
    pub(super) special: u64,
    pub(super) total_bytes: u64,
    pub(super) bytes_read: u64,
    pub(super) files_unchanged: u64,
}

/// A file's chunk ids on their way back from the workers (as `(sequence, id)`), and how many.
pub(super) type PendingContent = (Receiver<(u64, Result<BlobId>)>, u64);

/// A node whose content ids may still be on their way back from the workers.
pub(super) struct PendingNode {
    pub(super) node: Node,
    pub(super) content: Option<PendingContent>,
}

impl PendingNode {
    /// A node whose content (if any) is already known.
    pub(super) fn done(node: Node) -> PendingNode {
        PendingNode {
            node,
            content: None,
        }
    }

    /// The node with its content ids in order, once every chunk of it is stored.
    pub(super) fn resolve(self) -> Result<Node> {
        let mut node = self.node;
        if let Some((rx, count)) = self.content {
            let mut ids: Vec<(u64, BlobId)> = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let (seq, result) = rx
                    .recv()
                    .map_err(|_| Error::internal("a backup worker stopped unexpectedly"))?;
                ids.push((seq, result?));
            }
            ids.sort_by_key(|(seq, _)| *seq);
            node.content = ids.into_iter().map(|(_, id)| id).collect();
        }
        Ok(node)
    }
}

/// What the walking thread produced.
pub(super) struct Walked {
    pub(super) root: Result<crate::format::id::BlobId>,
    /// Records of the named stream sources (empty when the walk failed).
    pub(super) records: Vec<SourceRecord>,
    pub(super) warnings: Vec<super::Warning>,
    pub(super) notices: Vec<super::Notice>,
    pub(super) counts: Counts,
    /// Every file and stream, with its size and how it compares with the parent (dry runs).
    pub(super) listed: Vec<super::Listed>,
}

/// Runs `walk` on this thread with a pool of workers and the prefetch thread behind it, then
/// stops and joins them.
pub(super) fn run<'r>(
    repo: &'r Repository,
    writer: &BlobWriter<'r>,
    opts: &BackupOptions,
    excludes: &ExcludeRules,
    walk: impl FnOnce(&mut Run<'_, 'r>) -> Result<(BlobId, Vec<SourceRecord>)>,
) -> Walked {
    let workers = if opts.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.workers
    };
    let (job_tx, job_rx) = bounded::<Job>(workers * 2);
    std::thread::scope(|scope| {
        let worker_handles: Vec<_> = (0..workers)
            .map(|_| {
                let rx = job_rx.clone();
                scope.spawn(move || work(writer, rx))
            })
            .collect();
        drop(job_rx);
        let (prefetch_tx, prefetch_rx) = bounded::<PathBuf>(PREFETCH_AHEAD * 2);
        let prefetch_handle = scope.spawn(move || prefetcher(prefetch_rx));
        let mut run = Run {
            repo,
            writer,
            jobs: job_tx,
            cancel: &opts.cancel,
            cancel_flag: opts.cancel.clone(),
            excludes,
            xattrs: !opts.no_xattrs,
            selection: &opts.selection,
            mount_points: Default::default(),
            warnings: Vec::new(),
            notices: Vec::new(),
            warned_compressed_dump: false,
            counts: Counts::default(),
            compressor: writer.compressor(),
            prefetch: Some(prefetch_tx),
            chunk_buffer: Vec::new(),
            progress: &opts.progress,
            listed: opts.dry_run.then(Vec::new),
        };
        let root = walk(&mut run);
        let Run {
            jobs,
            warnings,
            notices,
            counts,
            prefetch,
            listed,
            ..
        } = run;
        drop(jobs);
        drop(prefetch);
        let _ = prefetch_handle.join();
        for handle in worker_handles {
            let _ = handle.join();
        }
        let (root, records) = match root {
            Ok((root, records)) => (Ok(root), records),
            Err(e) => (Err(e), Vec::new()),
        };
        Walked {
            root,
            records,
            warnings,
            notices,
            counts,
            listed: listed.unwrap_or_default(),
        }
    })
}

/// A worker: stores the chunks it is handed and reports each id to the chunk's file.
fn work(writer: &BlobWriter<'_>, jobs: Receiver<Job>) {
    // One zstd context per class (and so per chunk size) inside: a context sized for 1 MiB
    // chunks would otherwise be shrunk and regrown as dump and file chunks alternate.
    let mut compressor = writer.compressor();
    for job in jobs {
        // A panic (a bug) must become an error for this chunk's file, not a worker that
        // silently disappears and leaves the walker waiting for its answer forever.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            writer
                .store(&mut compressor, job.class, &job.data)
                .map(|(id, _)| id)
        }))
        .unwrap_or_else(|_| {
            Err(Error::internal(
                "a backup worker panicked; nothing was saved",
            ))
        });
        let _ = job.reply.send((job.seq, result));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_content_resolves_in_chunk_order_and_passes_errors_on() {
        let node = |content| PendingNode {
            node: Node::for_tests("f", crate::format::tree::NodeKind::File),
            content: Some(content),
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        for seq in [2u64, 0, 1] {
            tx.send((seq, Ok(BlobId([seq as u8; 32])))).unwrap();
        }
        let resolved = node((rx, 3)).resolve().unwrap();
        let order: Vec<u8> = resolved.content.iter().map(|id| id.0[0]).collect();
        assert_eq!(order, [0, 1, 2]);
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send((0, Err(Error::Stopped))).unwrap();
        assert!(matches!(node((rx, 1)).resolve(), Err(Error::Stopped)));
        // A worker that went away without answering is an error, not a hang.
        let (tx, rx) = crossbeam_channel::unbounded::<(u64, Result<BlobId>)>();
        drop(tx);
        assert!(node((rx, 1)).resolve().is_err());
    }
}

//! Backup stage 2, chunking: the one place that decides which chunker a stream gets
//! ([`Run::chunking`]) and so the [`BlobClass`] of its chunks, which travels with every chunk to
//! the writer (it sets the zstd level there). Files, stdin, commands and dumps all come through
//! [`Run::chunk_stream`].

use super::pool::{Job, PendingContent};
use super::{Notice, Run};
use crate::error::{Error, Result};
use crate::format::compress::BlobClass;
use crate::format::id::BlobId;
use crate::sources::{is_gzip, sniff, Sniffed, SNIFF_GZIP_LEN, SNIFF_LEN};
use coffer_chunker::{ChunkerParams, StreamChunker};
use crossbeam_channel::{unbounded, Sender};
use std::io::Read;

/// What a source says about its stream's chunking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Chunking {
    /// A database dump (a postgres source, a stream configured as a dump): dump chunk sizes.
    Dump,
    /// Whatever its first bytes turn out to be (files, unnamed streams).
    ByContent,
}

/// The chunker a stream gets: its parameters and the class of every chunk cut with them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ChunkerChoice {
    pub(super) params: ChunkerParams,
    pub(super) class: BlobClass,
}

/// Why chunking a stream stopped.
pub(super) enum StreamError {
    /// The source could not be read: a warning for files, an error for streams.
    Read(std::io::Error),
    /// The backup itself must stop.
    Fatal(Error),
}

/// The class of a stream's chunks, from what its source says and (for
/// [`Chunking::ByContent`]) its first bytes: uncompressed dumps are cut as dumps, everything else
/// as files. Also returns what the bytes were recognised as, when they were looked at.
fn classify(chunking: Chunking, head: &[u8]) -> (BlobClass, Option<Sniffed>) {
    match chunking {
        Chunking::Dump => (BlobClass::DumpData, None),
        Chunking::ByContent => {
            let kind = sniff(head);
            let class = if kind.dump_chunking() {
                BlobClass::DumpData
            } else {
                BlobClass::FileData
            };
            (class, Some(kind))
        }
    }
}

impl Run<'_, '_> {
    /// Decides the chunker of one stream (see [`classify`]). A compressed dump adds a notice
    /// (once per backup) that it will deduplicate poorly, naming `label`.
    pub(super) fn chunking(
        &mut self,
        chunking: Chunking,
        head: &[u8],
        label: &dyn std::fmt::Display,
    ) -> ChunkerChoice {
        let (class, sniffed) = classify(chunking, head);
        if let Some(kind) = sniffed {
            if kind.compressed_dump() && !self.warned_compressed_dump {
                self.warned_compressed_dump = true;
                self.notices.push(Notice::CompressedDump {
                    label: label.to_string(),
                    kind,
                });
            }
        }
        let params = match class {
            BlobClass::DumpData => self.repo.dump_params(),
            BlobClass::FileData | BlobClass::Tree => self.repo.file_params(),
        };
        ChunkerChoice { params, class }
    }

    /// Cuts a stream into chunks and queues them; returns the result channel and chunk count,
    /// and the stream's length.
    pub(super) fn chunk_stream<R: Read>(
        &mut self,
        mut reader: R,
        chunking: Chunking,
        label: &dyn std::fmt::Display,
    ) -> std::result::Result<(PendingContent, u64), StreamError> {
        let mut head = Vec::new();
        if chunking == Chunking::ByContent {
            (&mut reader)
                .take(SNIFF_LEN as u64)
                .read_to_end(&mut head)
                .map_err(StreamError::Read)?;
            if is_gzip(&head) {
                (&mut reader)
                    .take((SNIFF_GZIP_LEN - head.len()) as u64)
                    .read_to_end(&mut head)
                    .map_err(StreamError::Read)?;
            }
        }
        let choice = self.chunking(chunking, &head, label);
        let (tx, rx) = unbounded();
        let reader = std::io::Cursor::new(head).chain(reader);
        let buffer = std::mem::take(&mut self.chunk_buffer);
        let mut chunker =
            StreamChunker::with_buffer(reader, self.repo.gear(), choice.params, buffer);
        let result = self.chunk_all(&mut chunker, choice.class, tx);
        let position = chunker.position();
        self.chunk_buffer = chunker.into_buffer();
        result.map(|count| ((rx, count), position))
    }

    /// Queues every chunk of `chunker` for the workers as blobs of `class`, answering on `tx`;
    /// returns how many.
    fn chunk_all<R: Read>(
        &mut self,
        chunker: &mut StreamChunker<'_, R>,
        class: BlobClass,
        tx: Sender<(u64, Result<BlobId>)>,
    ) -> std::result::Result<u64, StreamError> {
        let mut seq = 0u64;
        loop {
            self.check_cancel().map_err(StreamError::Fatal)?;
            match chunker.next_chunk() {
                Ok(Some(data)) => {
                    self.counts.bytes_read += data.len() as u64;
                    self.progress.add_bytes(data.len() as u64);
                    let job = Job {
                        data,
                        class,
                        seq,
                        reply: tx.clone(),
                    };
                    self.jobs
                        .send(job)
                        .map_err(|_| StreamError::Fatal(Error::Stopped))?;
                    seq += 1;
                }
                Ok(None) => break,
                Err(e) => return Err(StreamError::Read(e)),
            }
        }
        Ok(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_are_cut_as_dumps_and_everything_else_as_files() {
        let uncompressed_dump = b"PGDMP\x01\x0f\x00\x04\x08\x01\x00";
        let compressed_dump = b"PGDMP\x01\x0f\x00\x04\x08\x01\x03";
        let plain_sql = b"--\n-- PostgreSQL database dump\n--\n";
        // A source that says it is a dump is believed without looking.
        for head in [&b"anything"[..], compressed_dump, b""] {
            assert_eq!(classify(Chunking::Dump, head), (BlobClass::DumpData, None));
        }
        let by_content = |head: &[u8]| classify(Chunking::ByContent, head);
        assert_eq!(
            by_content(uncompressed_dump),
            (BlobClass::DumpData, Some(Sniffed::CustomDumpUncompressed))
        );
        assert_eq!(
            by_content(plain_sql),
            (BlobClass::DumpData, Some(Sniffed::PlainSqlDump))
        );
        // Compressed dumps reshuffle on every change: small chunks would not help them.
        assert_eq!(
            by_content(compressed_dump),
            (BlobClass::FileData, Some(Sniffed::CustomDumpCompressed))
        );
        assert_eq!(
            by_content(&[0x1f, 0x8b, 8, 0]),
            (BlobClass::FileData, Some(Sniffed::Other))
        );
        assert_eq!(
            by_content(b"hello"),
            (BlobClass::FileData, Some(Sniffed::Other))
        );
    }
}

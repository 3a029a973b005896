//! Chunking a byte stream of unknown length with a bounded buffer.
//!
//! [`cut`] needs at most `max_size` bytes of look-ahead, so the chunker keeps a buffer of up to
//! `2 * max_size` bytes: it refills whenever fewer than `max_size` unconsumed bytes remain, and
//! only then moves the unconsumed tail (less than `max_size` bytes) to the front. Each input byte
//! is thus copied once into the buffer, at most once more by that compaction, and once into its
//! chunk. The buffer starts small and doubles, so chunking many small files stays cheap.

use crate::cut::cut;
use crate::gear::GearTable;
use crate::params::ChunkerParams;
use std::fmt;
use std::io::{self, Read};

/// First buffer size; enough for a small file in one read without committing `2 * max_size`.
const INITIAL_BUFFER: usize = 64 * 1024;

/// Splits everything a reader yields into content-defined chunks.
///
/// Guaranteed: the chunks concatenate to exactly the bytes read; every chunk is at most
/// `max_size` long and every chunk but the last at least `min_size`; the boundaries are those of
/// applying [`cut`] repeatedly to the whole input, however the reader splits its reads. Empty
/// input gives no chunks.
///
/// A read error other than [`io::ErrorKind::Interrupted`] (which is retried) is returned as is;
/// bytes read before it are kept, so calling again resumes where the reader left off.
pub struct StreamChunker<'g, R> {
    reader: R,
    gear: &'g GearTable,
    params: ChunkerParams,
    /// `buffer[start..end]` holds read but not yet returned bytes; the rest is scratch space.
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    /// The reader returned `Ok(0)`; it is not asked again.
    at_eof: bool,
    position: u64,
    /// The length of the first chunk of `max_size` zero bytes, once one was needed: a run of
    /// zeros (a sparse file's holes, a zeroed disk image) is cut without scanning it.
    zero_cut: Option<usize>,
}

impl<'g, R: Read> StreamChunker<'g, R> {
    /// A chunker that has read nothing yet; reading starts at the first [`next_chunk`].
    ///
    /// [`next_chunk`]: StreamChunker::next_chunk
    pub fn new(reader: R, gear: &'g GearTable, params: ChunkerParams) -> Self {
        Self::with_buffer(reader, gear, params, Vec::new())
    }

    /// As [`StreamChunker::new`], reading into `buffer` (its content is ignored) instead of a
    /// fresh one: a caller chunking many files hands the buffer of one to the next (see
    /// [`StreamChunker::into_buffer`]), so memory already paged in is used again.
    pub fn with_buffer(
        reader: R,
        gear: &'g GearTable,
        params: ChunkerParams,
        buffer: Vec<u8>,
    ) -> Self {
        StreamChunker {
            reader,
            gear,
            params,
            buffer,
            start: 0,
            end: 0,
            at_eof: false,
            position: 0,
            zero_cut: None,
        }
    }

    /// The next chunk as an owned buffer, or `None` once the reader is exhausted.
    pub fn next_chunk(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.fill()?;
        let pending = &self.buffer[self.start..self.end];
        if pending.is_empty() {
            return Ok(None);
        }
        // `fill` leaves fewer than `max_size` bytes only at end of stream, and `cut` reads no
        // further than `max_size`, so this is the cut of the whole remaining input.
        let max = self.params.max_size() as usize;
        let length = if pending.len() >= max && is_zero(&pending[..max]) {
            // `cut` looks at these `max` bytes only, and they are zeros: the cut of any run of
            // zeros this long, computed once.
            let (gear, params) = (self.gear, &self.params);
            *self
                .zero_cut
                .get_or_insert_with(|| cut(gear, params, &vec![0; max]))
        } else {
            cut(self.gear, &self.params, pending)
        };
        let chunk = pending[..length].to_vec();
        self.start += length;
        self.position += length as u64;
        Ok(Some(chunk))
    }

    /// Total bytes returned in chunks so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The buffer, for the next chunker (bytes not yet returned are dropped with it).
    pub fn into_buffer(self) -> Vec<u8> {
        self.buffer
    }

    /// Reads until at least `max_size` bytes are pending or the reader is exhausted.
    fn fill(&mut self) -> io::Result<()> {
        let look_ahead = self.params.max_size() as usize;
        while !self.at_eof && self.end - self.start < look_ahead {
            if self.end == self.buffer.len() {
                self.make_room();
            }
            match self.reader.read(&mut self.buffer[self.end..]) {
                Ok(0) => self.at_eof = true,
                Ok(read) => self.end += read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Frees space after `end`: grow while below `2 * max_size`, else move the pending bytes
    /// to the front. Called only with fewer than `max_size` bytes pending, so a full-size buffer
    /// has more than `max_size` consumed bytes to reclaim.
    fn make_room(&mut self) {
        let full_size = 2 * self.params.max_size() as usize;
        if self.buffer.len() < full_size {
            let grown = (self.buffer.len() * 2).clamp(INITIAL_BUFFER.min(full_size), full_size);
            self.buffer.resize(grown, 0);
        } else {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }
}

/// Whether every byte of `data` is zero. Stops at the first 64-byte block that is not, so it
/// costs next to nothing on ordinary data; the blocks themselves are checked with vector
/// instructions.
pub fn is_zero(data: &[u8]) -> bool {
    let mut blocks = data.chunks_exact(64);
    blocks.all(|b| b.iter().fold(0u8, |acc, &x| acc | x) == 0)
        && blocks.remainder().iter().all(|&x| x == 0)
}

impl<R: Read> Iterator for StreamChunker<'_, R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk().transpose()
    }
}

impl<R> fmt::Debug for StreamChunker<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamChunker")
            .field("params", &self.params)
            .field("position", &self.position)
            .field("buffered", &(self.end - self.start))
            .field("at_eof", &self.at_eof)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{chunk_lengths, counting_key, small_params, splitmix_bytes};
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// A reader that hands out its data in the given read sizes (cycled), answering
    /// `Interrupted` instead of a read of size 0.
    struct ChoppyReader {
        data: Vec<u8>,
        offset: usize,
        sizes: Vec<usize>,
        next_size: usize,
    }

    impl Read for ChoppyReader {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes[self.next_size % self.sizes.len()];
            self.next_size += 1;
            if size == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let size = size.min(out.len()).min(self.data.len() - self.offset);
            out[..size].copy_from_slice(&self.data[self.offset..self.offset + size]);
            self.offset += size;
            Ok(size)
        }
    }

    fn stream_chunks(data: &[u8], gear: &GearTable, params: ChunkerParams) -> Vec<Vec<u8>> {
        StreamChunker::new(data, gear, params)
            .collect::<io::Result<Vec<_>>>()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn stream_equals_whole_buffer_cuts(
            params in small_params(),
            seed in any::<u64>(),
            len in 0usize..150_000,
            sizes in proptest::collection::vec(0usize..5000, 1..20),
        ) {
            prop_assume!(sizes.iter().any(|&s| s > 0));
            let gear = GearTable::from_key(&counting_key());
            let data = splitmix_bytes(seed, len);
            let reader = ChoppyReader { data: data.clone(), offset: 0, sizes, next_size: 0 };
            let mut chunker = StreamChunker::new(reader, &gear, params);
            let mut chunks = Vec::new();
            while let Some(chunk) = chunker.next_chunk().unwrap() {
                chunks.push(chunk);
                prop_assert_eq!(chunker.position(), chunks.iter().map(|c| c.len() as u64).sum::<u64>());
            }
            prop_assert_eq!(chunks.concat(), data.clone());
            let lengths: Vec<usize> = chunks.iter().map(Vec::len).collect();
            prop_assert_eq!(lengths, chunk_lengths(&gear, &params, &data));
            prop_assert!(chunker.next_chunk().unwrap().is_none());
        }

        /// Runs of zeros (cut without scanning them) are cut exactly as `cut` cuts the whole
        /// buffer, wherever they start and end and however long they are.
        #[test]
        fn zero_runs_cut_like_the_whole_buffer(
            params in small_params(),
            seed in any::<u64>(),
            runs in proptest::collection::vec((0usize..150_000, 0usize..60_000), 1..4),
        ) {
            let gear = GearTable::from_key(&counting_key());
            let mut data = splitmix_bytes(seed, 200_000);
            for (at, len) in runs {
                let end = (at + len).min(data.len());
                data[at..end].fill(0);
            }
            let chunks = stream_chunks(&data, &gear, params);
            prop_assert_eq!(chunks.concat(), data.clone());
            let lengths: Vec<usize> = chunks.iter().map(Vec::len).collect();
            prop_assert_eq!(lengths, chunk_lengths(&gear, &params, &data));
        }

        #[test]
        fn is_zero_is_true_exactly_for_zeros(len in 0usize..300, at in any::<usize>(), byte in 1u8..) {
            let mut data = vec![0u8; len];
            prop_assert!(is_zero(&data));
            if len > 0 {
                data[at % len] = byte;
                prop_assert!(!is_zero(&data));
            }
        }

        /// A buffer handed on from an earlier stream (of other bytes, other parameters) cuts
        /// the next stream exactly as a fresh one.
        #[test]
        fn a_reused_buffer_cuts_like_a_fresh_one(
            first_params in small_params(),
            params in small_params(),
            seed in any::<u64>(),
            first_len in 0usize..100_000,
            len in 0usize..100_000,
        ) {
            let gear = GearTable::from_key(&counting_key());
            let first = splitmix_bytes(seed ^ 1, first_len);
            let mut used = StreamChunker::new(&first[..], &gear, first_params);
            // Stop halfway: unreturned bytes must not leak into the next stream.
            for _ in 0..3 {
                let _ = used.next_chunk().unwrap();
            }
            let data = splitmix_bytes(seed, len);
            let reused = StreamChunker::with_buffer(&data[..], &gear, params, used.into_buffer())
                .collect::<io::Result<Vec<_>>>()
                .unwrap();
            prop_assert_eq!(reused, stream_chunks(&data, &gear, params));
        }

        /// Edits change only the chunks around them: chunks that end before the edit are kept
        /// as they are, and the boundary chain after it falls back into step with the original.
        /// How soon is a matter of probability (see `most_small_edits_change_one_chunk`), so
        /// the bound here is loose: over 18,000 random edits with these parameters, none changed
        /// more than 9 chunks, and each further chunk was about 3x rarer than the one before.
        #[test]
        fn boundaries_resynchronise_after_an_edit(
            params in resync_params(),
            seed in any::<u64>(),
            edit_at in 0.2f64..0.6,
            edit in prop_oneof![
                Just(Edit::Insert(1)),
                Just(Edit::Delete(1)),
                Just(Edit::Insert(1000)),
            ],
        ) {
            let original = splitmix_bytes(seed, 128 * 1024);
            let at = (original.len() as f64 * edit_at) as usize;
            let edited = edit.apply(&original, at, seed);
            let gear = GearTable::from_key(&counting_key());
            let before = stream_chunks(&original, &gear, params);
            let after = stream_chunks(&edited, &gear, params);

            // A cut after position i depends on bytes up to and including i, so only chunks
            // ending strictly before the edit are certain to survive it.
            let mut end = 0;
            for (old, new) in before.iter().zip(&after) {
                end += old.len();
                if end >= at {
                    break;
                }
                prop_assert_eq!(old, new);
            }
            let (removed, added) = chunk_changes(&before, &after);
            prop_assert!(removed >= 1 && added >= 1, "the chunk holding the edit must change");
            prop_assert!(removed <= 12 && added <= 12, "removed {}, added {}", removed, added);
            // Resynchronised: the last chunk is shared, so the chains met before the end.
            prop_assert_eq!(before.last(), after.last());
        }
    }

    /// Parameters for the resynchronisation tests: the proportions of the two defaults
    /// (min = avg / 2 like FILES, min = avg / 4 like DUMPS) at a 2 KiB average.
    fn resync_params() -> impl Strategy<Value = ChunkerParams> {
        prop_oneof![
            Just(ChunkerParams::new(1024, 2048, 16 * 1024).unwrap()),
            Just(ChunkerParams::new(512, 2048, 16 * 1024).unwrap()),
        ]
    }

    #[derive(Clone, Copy, Debug)]
    enum Edit {
        Insert(usize),
        Delete(usize),
    }

    impl Edit {
        fn apply(self, original: &[u8], at: usize, seed: u64) -> Vec<u8> {
            let mut edited = original[..at].to_vec();
            match self {
                Edit::Insert(count) => {
                    edited.extend(splitmix_bytes(seed ^ 0x5eed, count));
                    edited.extend_from_slice(&original[at..]);
                }
                Edit::Delete(count) => edited.extend_from_slice(&original[at + count..]),
            }
            edited
        }
    }

    /// How many distinct chunks (by content hash) of `before` are missing from `after`, and how
    /// many of `after` are new.
    fn chunk_changes(before: &[Vec<u8>], after: &[Vec<u8>]) -> (usize, usize) {
        let hashes = |chunks: &[Vec<u8>]| {
            chunks
                .iter()
                .map(|chunk| *blake3::hash(chunk).as_bytes())
                .collect::<HashSet<_>>()
        };
        let before = hashes(before);
        let after = hashes(after);
        (
            before.difference(&after).count(),
            after.difference(&before).count(),
        )
    }

    fn edit_changes(
        original: &[u8],
        edit: Edit,
        at: usize,
        params: ChunkerParams,
    ) -> (usize, usize) {
        let gear = GearTable::from_key(&counting_key());
        let edited = edit.apply(original, at, at as u64);
        chunk_changes(
            &stream_chunks(original, &gear, params),
            &stream_chunks(&edited, &gear, params),
        )
    }

    #[test]
    fn most_small_edits_change_one_chunk() {
        // The typical case, on fixed inputs so the counts are reproducible: a one-byte edit
        // replaces exactly one chunk about 96% of the time (measured over 3,000 inputs);
        // otherwise the shift moved a candidate across the point where the mask loosens (or
        // moved a max-size cut), and the chain takes a chunk or more to fall back into step.
        let params = ChunkerParams::new(512, 2048, 16 * 1024).unwrap();
        for edit in [Edit::Insert(1), Edit::Delete(1)] {
            let mut one_chunk = 0;
            for seed in 0..200 {
                let original = splitmix_bytes(seed, 24 * 1024);
                let (removed, added) =
                    edit_changes(&original, edit, 8 * 1024 + seed as usize, params);
                assert!(
                    removed <= 6 && added <= 6,
                    "{edit:?} seed {seed}: {removed} / {added}"
                );
                if removed == 1 && added == 1 {
                    one_chunk += 1;
                }
            }
            assert!(
                one_chunk >= 180,
                "{edit:?}: only {one_chunk} of 200 changed one chunk"
            );
        }
    }

    #[test]
    fn dumps_resynchronise_over_8_mib() {
        // The real DUMPS parameters over ~400 chunks, edited in the middle. "At most 3" holds
        // for this input, not for every input: see `boundaries_resynchronise_after_an_edit`.
        let original = splitmix_bytes(2026, 8 << 20);
        let at = original.len() / 2 + 12_345;
        for edit in [Edit::Insert(1), Edit::Delete(1), Edit::Insert(1000)] {
            let (removed, added) = edit_changes(&original, edit, at, ChunkerParams::DUMPS);
            assert!(
                removed <= 3 && added <= 3,
                "{edit:?}: removed {removed}, added {added}"
            );
            assert!(
                removed >= 1 && added >= 1,
                "{edit:?}: the edited chunk must change"
            );
        }
    }

    #[test]
    fn empty_input_gives_no_chunks() {
        let gear = GearTable::from_key(&counting_key());
        let mut chunker = StreamChunker::new(io::empty(), &gear, ChunkerParams::DUMPS);
        assert!(chunker.next_chunk().unwrap().is_none());
        assert!(chunker.next().is_none());
        assert_eq!(chunker.position(), 0);
    }

    #[test]
    fn buffer_stays_within_twice_max_size() {
        let params = ChunkerParams::new(256, 1024, 4096).unwrap();
        let gear = GearTable::from_key(&counting_key());
        let data = splitmix_bytes(3, 1 << 20);
        let mut chunker = StreamChunker::new(&data[..], &gear, params);
        while chunker.next_chunk().unwrap().is_some() {
            assert!(chunker.buffer.len() <= 2 * params.max_size() as usize);
        }
        assert_eq!(chunker.position(), data.len() as u64);
    }

    /// Fails once with a non-retryable error after `fail_at` bytes, then reads normally.
    struct FlakyReader {
        data: Vec<u8>,
        offset: usize,
        fail_at: usize,
        failed: bool,
    }

    impl Read for FlakyReader {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if !self.failed && self.offset == self.fail_at {
                self.failed = true;
                return Err(io::Error::other("disk on fire"));
            }
            let limit = if self.failed {
                self.data.len()
            } else {
                self.fail_at
            };
            let size = out.len().min(limit - self.offset);
            out[..size].copy_from_slice(&self.data[self.offset..self.offset + size]);
            self.offset += size;
            Ok(size)
        }
    }

    #[test]
    fn read_errors_surface_and_reading_can_resume() {
        let params = ChunkerParams::DUMPS;
        let gear = GearTable::from_key(&counting_key());
        let data = splitmix_bytes(5, 600_000);
        let reader = FlakyReader {
            data: data.clone(),
            offset: 0,
            fail_at: 300_001,
            failed: false,
        };
        let mut chunker = StreamChunker::new(reader, &gear, params);
        let mut chunks = Vec::new();
        let mut errors = 0;
        loop {
            match chunker.next_chunk() {
                Ok(Some(chunk)) => chunks.push(chunk),
                Ok(None) => break,
                Err(error) => {
                    assert_eq!(error.to_string(), "disk on fire");
                    errors += 1;
                }
            }
        }
        assert_eq!(errors, 1);
        assert_eq!(chunks.concat(), data);
        let lengths: Vec<usize> = chunks.iter().map(Vec::len).collect();
        assert_eq!(lengths, chunk_lengths(&gear, &params, &data));
    }

    #[test]
    fn debug_shows_no_data() {
        let gear = GearTable::from_key(&counting_key());
        let chunker = StreamChunker::new(&b"secret"[..], &gear, ChunkerParams::DUMPS);
        let printed = format!("{chunker:?}");
        assert!(printed.starts_with("StreamChunker { params: ChunkerParams"));
        assert!(!printed.contains("secret"));
    }
}

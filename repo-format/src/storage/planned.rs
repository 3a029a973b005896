//! Planned reads: the ranges of objects an operation will read, grouped into segments that
//! are each fetched with one request and then shared by every read that falls inside them.
//!
//! On an object store every request pays a round trip and a price, so an operation that
//! needs a thousand small blobs of one pack should make one request, not a thousand. The
//! repository floor decides the segments (`repository/plan.rs`, from the index); this file
//! only serves them: a range read of a key that lies inside a planned segment is answered from
//! the segment, fetched once (threads asking for it at the same time wait for the one fetch).
//! Fetched segments are kept in memory within a byte budget ([`PLANNED_BYTES`]): segments whose
//! planned bytes were all read are dropped first, then the least recently used one. A segment
//! pushed out while reads still need it is set aside in a temporary file (`Spill`: unnamed,
//! removed when the plan ends, holding the segment as stored, so encrypted) and later reads of
//! it are served from there, so no segment is fetched twice however the operation's reads
//! wander between packs. Only beyond [`SPILL_LIMIT`] of such segments, or where no temporary
//! file can be written, is one dropped and fetched again. A read outside every segment is a
//! request of its own, so the plan changes how many requests are made, never what a read
//! returns.
//!
//! May use the error type, `bytes`, and files (the spill file: `tempfile`, and `nix` to punch
//! holes); knows nothing of packs or blobs.

use crate::error::Result;
use bytes::Bytes;
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How many bytes of fetched segments a plan keeps at most between reads. Reads in progress
/// hold their segment beyond it, so the most a plan holds is this plus one segment (at most a
/// pack) per reading thread: 96 MiB keeps a few packs per connection of the default eight,
/// enough that readers walking through the packs roughly in order find each one fetched once.
pub const PLANNED_BYTES: u64 = 96 << 20;

/// One range of an object to fetch with one request, and how many of its bytes the operation
/// will read (reads of them count down; at zero it is the first to be dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The range fetched.
    pub range: Range<u64>,
    /// The bytes inside it the operation reads (blobs, counted once per use).
    pub needed: u64,
}

/// The segments of every object an operation reads, by key, in the order the operation will
/// first read each object (the order they are fetched ahead in).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadPlan {
    /// Each key once, with its segments sorted by start and not overlapping.
    pub segments: Vec<(String, Vec<Segment>)>,
}

impl ReadPlan {
    /// How many requests the plan makes when every segment is fetched once.
    pub fn requests(&self) -> usize {
        self.segments.iter().map(|(_, s)| s.len()).sum()
    }

    /// The segments of `key`.
    pub fn of(&self, key: &str) -> Option<&[Segment]> {
        self.segments
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, s)| s.as_slice())
    }
}

/// A segment being served: its bytes once fetched, and what remains to be read of it.
struct Slot {
    range: Range<u64>,
    remaining: AtomicI64,
    /// Held while the segment is fetched, so a second reader waits for the first one's fetch.
    data: Mutex<Kept>,
    /// When it was last used ([`Planned::clock`]), for eviction.
    used: AtomicU64,
}

/// Where a segment's bytes are.
enum Kept {
    /// Not fetched, or dropped.
    Nothing,
    Memory(Bytes),
    /// Set aside in the spill file, `len` bytes from `at`, with `readers` reads of it under
    /// way (its space is freed only when none is).
    Spilled {
        at: u64,
        len: u64,
        readers: usize,
    },
}

/// At most this many bytes of segments still needed are set aside at once; beyond it, a
/// segment pushed out of memory is dropped (and fetched again if read again).
pub const SPILL_LIMIT: u64 = 2 << 30;

/// The temporary file segments still needed are set aside in when the budget pushes them out
/// of memory: created unnamed (`O_TMPFILE` where the system has it, else removed right after
/// it is created) on the first spill, in the metadata cache's directory when there is one (on
/// disk, where a temporary directory may be memory), else in the system's (`TMPDIR`); gone when
/// the plan ends. It holds pack bytes as stored (encrypted and authenticated: every blob read
/// from it is verified like one read from the store). A segment's space is given back (a hole
/// punched) once its last planned read is done, so the file holds at most the segments still
/// to be read, and never more than [`SPILL_LIMIT`] of them. If it cannot be created or
/// written, segments are dropped instead and fetched again.
struct Spill {
    dir: Option<std::path::PathBuf>,
    /// [`SPILL_LIMIT`], smaller in tests.
    limit: u64,
    /// Created on the first spill; `None` if it could not be.
    file: std::sync::OnceLock<Option<File>>,
    /// Where the next segment goes and the bytes held now; `None` once a write failed
    /// (nothing more is set aside).
    state: Mutex<Option<(u64, u64)>>,
}

/// The spill file: unnamed where the system allows it (`O_TMPFILE`), else created exclusively
/// (never through a symlink) with mode 0600 and its name removed at once; made 0600 before
/// anything is written to it either way. `None` if it cannot be made in `dir` or `TMPDIR`.
fn create(dir: Option<&std::path::Path>) -> Option<File> {
    use std::os::unix::fs::PermissionsExt;
    let file = match dir {
        Some(dir) => tempfile::tempfile_in(dir).or_else(|_| tempfile::tempfile()),
        None => tempfile::tempfile(),
    }
    .ok()?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .ok()?;
    Some(file)
}

impl Spill {
    fn new(dir: Option<std::path::PathBuf>) -> Spill {
        Spill {
            dir,
            limit: SPILL_LIMIT,
            file: std::sync::OnceLock::new(),
            state: Mutex::new(Some((0, 0))),
        }
    }

    /// Appends `bytes`, returning where they start; `None` if they could not be set aside.
    fn put(&self, bytes: &[u8]) -> Option<u64> {
        let mut state = crate::sync::lock(&self.state);
        let (end, held) = (*state)?;
        let len = bytes.len() as u64;
        if held + len > self.limit {
            return None;
        }
        let file = self
            .file
            .get_or_init(|| create(self.dir.as_deref()))
            .as_ref();
        let Some(file) = file else {
            *state = None;
            return None;
        };
        if file.write_all_at(bytes, end).is_err() {
            *state = None;
            return None;
        }
        *state = Some((end + len, held + len));
        Some(end)
    }

    /// `len` bytes from offset `at` (written before: reads need no lock).
    fn get(&self, at: u64, len: usize) -> Option<Bytes> {
        let file = self.file.get()?.as_ref()?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, at).ok()?;
        Some(Bytes::from(buf))
    }

    /// Gives back the space of `len` bytes at `at`, no longer read.
    fn free(&self, at: u64, len: u64) {
        let mut state = crate::sync::lock(&self.state);
        if let Some((_, held)) = state.as_mut() {
            *held = held.saturating_sub(len);
        }
        if let Some(Some(file)) = self.file.get() {
            use nix::fcntl::{fallocate, FallocateFlags};
            let (Ok(offset), Ok(size)) = (i64::try_from(at), i64::try_from(len)) else {
                return;
            };
            // A file system without hole punching keeps the bytes until the plan ends.
            let _ = fallocate(
                file,
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                offset,
                size,
            );
        }
    }

    /// Bytes set aside and still held.
    #[cfg(test)]
    fn held(&self) -> u64 {
        crate::sync::lock(&self.state).map_or(0, |(_, held)| held)
    }
}

/// A plan being followed by a [`Storage`](super::Storage): what [`ReadPlan`] planned, and the
/// segments fetched so far.
pub(crate) struct Planned {
    slots: HashMap<String, Vec<Arc<Slot>>>,
    /// Every segment in the plan's order, for fetching ahead ([`Planned::fetch_ahead`]).
    order: Vec<(String, Arc<Slot>)>,
    /// The next segment of `order` to fetch ahead.
    next: AtomicUsize,
    /// Bytes being fetched ahead right now.
    in_flight: AtomicU64,
    /// Set when the plan is no longer followed: fetching ahead stops.
    pub(crate) stopped: AtomicBool,
    /// Fetched segments currently kept, with their sizes.
    held: Mutex<Vec<(Arc<Slot>, u64)>>,
    budget: u64,
    clock: AtomicU64,
    spill: Spill,
}

impl Planned {
    /// Starts following `plan`, keeping at most `budget` bytes of fetched segments in memory
    /// and setting aside those pushed out while still needed in a file in `spill_dir` (else in
    /// the system's temporary directory).
    pub(crate) fn new(
        plan: ReadPlan,
        budget: u64,
        spill_dir: Option<std::path::PathBuf>,
    ) -> Planned {
        let order: Vec<String> = plan.segments.iter().map(|(k, _)| k.clone()).collect();
        let slots: HashMap<String, Vec<Arc<Slot>>> = plan
            .segments
            .into_iter()
            .map(|(key, segments)| {
                let slots = segments
                    .into_iter()
                    .map(|s| {
                        Arc::new(Slot {
                            range: s.range,
                            remaining: AtomicI64::new(i64::try_from(s.needed).unwrap_or(i64::MAX)),
                            data: Mutex::new(Kept::Nothing),
                            used: AtomicU64::new(0),
                        })
                    })
                    .collect();
                (key, slots)
            })
            .collect();
        let order = order
            .iter()
            .flat_map(|key| {
                slots
                    .get(key)
                    .into_iter()
                    .flatten()
                    .map(move |slot| (key.clone(), slot.clone()))
            })
            .collect();
        Planned {
            slots,
            order,
            next: AtomicUsize::new(0),
            in_flight: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
            budget,
            clock: AtomicU64::new(1),
            spill: Spill::new(spill_dir),
        }
    }

    /// The planned segment of `key` that holds all of `range`, if any.
    fn slot(&self, key: &str, range: &Range<u64>) -> Option<&Arc<Slot>> {
        let slots = self.slots.get(key)?;
        let i = slots.partition_point(|s| s.range.start <= range.start);
        let slot = slots.get(i.checked_sub(1)?)?;
        (range.end <= slot.range.end && range.start < range.end).then_some(slot)
    }

    /// Serves `range` of `key` from its planned segment, fetching the segment with `fetch`
    /// first if it is not held; `None` when no planned segment holds the range (the caller
    /// reads it on its own). A failed fetch is returned and not remembered: the next read of
    /// the segment tries again.
    pub(crate) fn serve(
        &self,
        key: &str,
        range: &Range<u64>,
        fetch: impl FnOnce(Range<u64>) -> Result<Bytes>,
    ) -> Option<Result<Bytes>> {
        let slot = self.slot(key, range)?;
        let len = range.end - range.start;
        let from = (range.start - slot.range.start) as usize;
        let to = from + len as usize;
        let bytes = {
            let mut data = crate::sync::lock(&slot.data);
            if let Kept::Spilled {
                at,
                len: kept,
                readers,
            } = &mut *data
            {
                // Set aside: read just this range back, outside the lock; the count of
                // readers keeps its space from being given back meanwhile. (A range beyond
                // what the store answered is not read from the file: the fetch below reports
                // it short.)
                let (at, inside) = (*at, from as u64 + len <= *kept);
                *readers += 1;
                drop(data);
                let read = inside
                    .then(|| self.spill.get(at + from as u64, len as usize))
                    .flatten();
                if read.is_some() {
                    self.count_read(slot, len);
                }
                data = crate::sync::lock(&slot.data);
                if let Kept::Spilled { at, len, readers } = &mut *data {
                    *readers -= 1;
                    let done = slot.remaining.load(Ordering::Relaxed) <= 0;
                    if *readers == 0 && (done || read.is_none()) {
                        self.spill.free(*at, *len);
                        *data = Kept::Nothing;
                    }
                }
                if let Some(bytes) = read {
                    return Some(Ok(bytes));
                }
            }
            match &*data {
                Kept::Memory(bytes) => bytes.clone(),
                Kept::Nothing | Kept::Spilled { .. } => {
                    let bytes = match fetch(slot.range.clone()) {
                        Ok(bytes) => bytes,
                        Err(e) => return Some(Err(e)),
                    };
                    *data = Kept::Memory(bytes.clone());
                    drop(data);
                    self.keep(slot, bytes.len() as u64);
                    bytes
                }
            }
        };
        self.count_read(slot, len);
        Some(match bytes.get(from..to) {
            Some(_) => Ok(bytes.slice(from..to)),
            // A store that answered a segment short: the read fails as a short read would.
            None => Err(super::backend::short_read("pack", key, bytes.len(), range)),
        })
    }

    /// Notes a read of `len` bytes of `slot`.
    fn count_read(&self, slot: &Slot, len: u64) {
        slot.used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        slot.remaining
            .fetch_sub(i64::try_from(len).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Notes that `slot` now holds `size` bytes, and pushes other segments out of memory until
    /// the kept ones fit the budget: first those read completely (dropped), then the least
    /// recently used (set aside in the spill file while reads still need them).
    fn keep(&self, slot: &Arc<Slot>, size: u64) {
        let victims = {
            let mut held = crate::sync::lock(&self.held);
            held.push((slot.clone(), size));
            let mut total: u64 = held.iter().map(|(_, n)| n).sum();
            let mut victims = Vec::new();
            while total > self.budget && held.len() > 1 {
                let pick = held
                    .iter()
                    .enumerate()
                    .filter(|(_, (s, _))| !Arc::ptr_eq(s, slot))
                    .min_by_key(|(_, (s, _))| {
                        let done = s.remaining.load(Ordering::Relaxed) <= 0;
                        (!done, s.used.load(Ordering::Relaxed))
                    })
                    .map(|(i, _)| i);
                let Some(i) = pick else { break };
                let (victim, n) = held.swap_remove(i);
                total -= n;
                victims.push(victim);
            }
            victims
        };
        // Outside the list's lock: a victim's lock may be held by a reader that is about to
        // take the list's lock.
        for victim in victims {
            let mut data = crate::sync::lock(&victim.data);
            let kept = std::mem::replace(&mut *data, Kept::Nothing);
            if let Kept::Memory(bytes) = kept {
                if victim.remaining.load(Ordering::Relaxed) > 0 {
                    if let Some(at) = self.spill.put(&bytes) {
                        *data = Kept::Spilled {
                            at,
                            len: bytes.len() as u64,
                            readers: 0,
                        };
                    }
                }
            }
        }
    }

    /// Fetches segments ahead of the readers, in the plan's order, until every one was taken
    /// or [`Self::stopped`] is set; several threads run this at once, one request each. A
    /// segment is fetched only while the segments still to be read, with those being fetched,
    /// fit the budget, so fetching ahead never pushes out what readers have not read yet; one
    /// already fetched (by a reader) is skipped. Errors are dropped: the reader that needs
    /// the segment fetches it again and gets the error.
    pub(crate) fn fetch_ahead(&self, fetch: impl Fn(&str, Range<u64>) -> Result<Bytes>) {
        while !self.stopped.load(Ordering::Relaxed) {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some((key, slot)) = self.order.get(i) else {
                return;
            };
            let size = slot.range.end - slot.range.start;
            loop {
                if self.stopped.load(Ordering::Relaxed) {
                    return;
                }
                let ahead = self.unread_bytes() + self.in_flight.load(Ordering::Relaxed);
                if ahead == 0 || ahead + size <= self.budget {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            self.in_flight.fetch_add(size, Ordering::Relaxed);
            {
                let mut data = crate::sync::lock(&slot.data);
                if matches!(*data, Kept::Nothing) && slot.remaining.load(Ordering::Relaxed) > 0 {
                    if let Ok(bytes) = fetch(key, slot.range.clone()) {
                        let n = bytes.len() as u64;
                        *data = Kept::Memory(bytes);
                        drop(data);
                        slot.used.store(
                            self.clock.fetch_add(1, Ordering::Relaxed),
                            Ordering::Relaxed,
                        );
                        self.keep(slot, n);
                    }
                }
            }
            self.in_flight.fetch_sub(size, Ordering::Relaxed);
        }
    }

    /// Bytes of kept segments that still have planned bytes to be read.
    fn unread_bytes(&self) -> u64 {
        crate::sync::lock(&self.held)
            .iter()
            .filter(|(s, _)| s.remaining.load(Ordering::Relaxed) > 0)
            .map(|(_, n)| n)
            .sum()
    }

    /// How many bytes of fetched segments are kept now.
    #[cfg(test)]
    fn held_bytes(&self) -> u64 {
        crate::sync::lock(&self.held).iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(key: &str, segments: &[(Range<u64>, u64)]) -> ReadPlan {
        let mut plan = ReadPlan::default();
        plan.segments.push((
            key.to_string(),
            segments
                .iter()
                .map(|(range, needed)| Segment {
                    range: range.clone(),
                    needed: *needed,
                })
                .collect(),
        ));
        plan
    }

    fn object() -> Bytes {
        Bytes::from((0..=255u8).cycle().take(10_000).collect::<Vec<u8>>())
    }

    /// A fetch of `obj`'s ranges that counts its calls in `fetches`.
    fn counting<'a>(
        obj: &'a Bytes,
        fetches: &'a AtomicUsize,
    ) -> impl Fn(Range<u64>) -> Result<Bytes> + Copy + 'a {
        move |r| {
            fetches.fetch_add(1, Ordering::SeqCst);
            Ok(obj.slice(r.start as usize..r.end as usize))
        }
    }

    #[test]
    fn reads_inside_a_segment_share_one_fetch_and_others_are_not_served() {
        let obj = object();
        let planned = Planned::new(
            plan("p", &[(100..1000, 300), (5000..6000, 10)]),
            1 << 20,
            None,
        );
        let fetches = AtomicUsize::new(0);
        let fetch = counting(&obj, &fetches);
        for range in [100..200, 300..400, 900..1000, 150..160] {
            let got = planned.serve("p", &range, fetch).unwrap().unwrap();
            assert_eq!(got, obj.slice(range.start as usize..range.end as usize));
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Across a segment's end, outside every segment, another key: not served.
        assert!(planned.serve("p", &(900..1001), fetch).is_none());
        assert!(planned.serve("p", &(2000..2100), fetch).is_none());
        assert!(planned.serve("q", &(100..200), fetch).is_none());
        assert!(planned.serve("p", &(99..200), fetch).is_none());
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn the_budget_drops_finished_segments_first_then_the_least_recently_used() {
        let obj = object();
        let segments = [(0..1000, 1000), (1000..2000, 1000), (2000..3000, 1000)];
        let planned = Planned::new(plan("p", &segments), 2000, None);
        let fetches = AtomicUsize::new(0);
        let fetch = counting(&obj, &fetches);
        // The first segment read completely, the second in part.
        planned.serve("p", &(0..1000), fetch).unwrap().unwrap();
        planned.serve("p", &(1000..1100), fetch).unwrap().unwrap();
        assert_eq!(planned.held_bytes(), 2000);
        // A third one pushes out the finished first one, not the older-used second.
        planned.serve("p", &(2000..2100), fetch).unwrap().unwrap();
        assert_eq!(planned.held_bytes(), 2000);
        planned.serve("p", &(1100..1200), fetch).unwrap().unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
        // The first one is fetched again when read again, pushing out the least recently used.
        planned.serve("p", &(0..10), fetch).unwrap().unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 4);
        planned.serve("p", &(1200..1300), fetch).unwrap().unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 4);
        assert_eq!(planned.held_bytes(), 2000);
    }

    #[test]
    fn a_segment_pushed_out_while_still_needed_is_set_aside_not_fetched_again() {
        let obj = object();
        // Three segments, room for two: each is read in part, then the rest of each, so
        // every one is pushed out while reads still need it.
        let segments = [(0..3000, 3000), (3000..6000, 3000), (6000..9000, 3000)];
        let planned = Planned::new(plan("p", &segments), 6000, None);
        let fetches = AtomicUsize::new(0);
        let fetch = counting(&obj, &fetches);
        for round in 0..3u64 {
            for seg in 0..3u64 {
                let range = seg * 3000 + round * 1000..seg * 3000 + round * 1000 + 1000;
                let got = planned.serve("p", &range, fetch).unwrap().unwrap();
                assert_eq!(got, obj.slice(range.start as usize..range.end as usize));
            }
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
        assert!(planned.held_bytes() <= 6000);
        // Once read completely, a segment set aside gives its space back, and one in memory
        // is dropped, not set aside: reading either again fetches it.
        assert_eq!(planned.spill.held(), 0);
        let state = *crate::sync::lock(&planned.spill.state);
        assert!(state.is_some_and(|(end, _)| end >= 3000), "{state:?}");
        for seg in 0..3u64 {
            let range = seg * 3000..seg * 3000 + 10;
            let got = planned.serve("p", &range, fetch).unwrap().unwrap();
            assert_eq!(got, obj.slice(range.start as usize..range.end as usize));
        }
        // The one whose space was given back is fetched again; nothing more is set aside.
        assert!(fetches.load(Ordering::SeqCst) > 3);
        assert_eq!(planned.spill.held(), 0);
    }

    #[test]
    fn beyond_the_spill_limit_a_segment_is_dropped_and_fetched_again() {
        let obj = object();
        let segments = [(0..3000, 3000), (3000..6000, 3000), (6000..9000, 3000)];
        let mut planned = Planned::new(plan("p", &segments), 3000, None);
        planned.spill.limit = 3000;
        let fetches = AtomicUsize::new(0);
        let fetch = counting(&obj, &fetches);
        // Room for one segment in memory and one in the file: the third read in part pushes
        // the second out with nowhere to go.
        for seg in 0..3u64 {
            planned
                .serve("p", &(seg * 3000..seg * 3000 + 10), fetch)
                .unwrap()
                .unwrap();
            assert!(planned.spill.held() <= 3000);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
        for seg in 0..3u64 {
            let range = seg * 3000 + 10..seg * 3000 + 3000;
            let got = planned.serve("p", &range, fetch).unwrap().unwrap();
            assert_eq!(got, obj.slice(range.start as usize..range.end as usize));
        }
        // The first came back from the file, the second was fetched again.
        assert_eq!(fetches.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn the_spill_file_is_private_and_nameless() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = create(Some(dir.path())).unwrap();
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_failed_fetch_is_returned_and_tried_again() {
        let obj = object();
        let planned = Planned::new(plan("p", &[(0..1000, 1000)]), 1 << 20, None);
        let err = planned
            .serve("p", &(0..10), |_| Err(crate::error::Error::Interrupted))
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, crate::error::Error::Interrupted));
        let got = planned
            .serve("p", &(0..10), |r| {
                Ok(obj.slice(r.start as usize..r.end as usize))
            })
            .unwrap()
            .unwrap();
        assert_eq!(got, obj.slice(0..10));
        // A store that answers short fails the read, naming the key.
        let planned = Planned::new(plan("k", &[(0..1000, 1000)]), 1 << 20, None);
        let err = planned
            .serve("k", &(900..1000), |_| Ok(obj.slice(0..10)))
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains('k'), "{err}");
    }

    #[test]
    fn fetching_ahead_takes_segments_in_order_within_the_budget() {
        let obj = object();
        let segments: Vec<(Range<u64>, u64)> =
            (0..10).map(|i| (i * 1000..i * 1000 + 1000, 1000)).collect();
        let planned = Planned::new(plan("p", &segments), 3000, None);
        let fetched = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    planned.fetch_ahead(|_, r| {
                        fetched.lock().unwrap().push(r.start);
                        Ok(obj.slice(r.start as usize..r.end as usize))
                    })
                });
            }
            // The reader reads every segment in order; what was fetched ahead is not fetched
            // again, and the fetchers never hold more than three unread segments.
            for i in 0..10u64 {
                let got = planned
                    .serve("p", &(i * 1000..i * 1000 + 1000), |r| {
                        fetched.lock().unwrap().push(r.start);
                        Ok(obj.slice(r.start as usize..r.end as usize))
                    })
                    .unwrap()
                    .unwrap();
                assert_eq!(got, obj.slice(i as usize * 1000..i as usize * 1000 + 1000));
                assert!(planned.unread_bytes() <= 3000);
            }
        });
        let mut fetched = fetched.into_inner().unwrap();
        fetched.sort_unstable();
        assert_eq!(fetched, (0..10).map(|i| i * 1000).collect::<Vec<u64>>());
        // Stopped: nothing more is fetched.
        let planned = Planned::new(plan("p", &segments), 3000, None);
        planned.stopped.store(true, Ordering::Relaxed);
        planned.fetch_ahead(|_, _| panic!("fetched after the stop"));
    }

    #[test]
    fn threads_asking_for_one_segment_wait_for_one_fetch() {
        let obj = object();
        let planned = Planned::new(plan("p", &[(0..10_000, 10_000)]), 1 << 20, None);
        let fetches = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for t in 0..8u64 {
                let (planned, fetches, obj) = (&planned, &fetches, &obj);
                scope.spawn(move || {
                    let range = t * 1000..t * 1000 + 500;
                    let got = planned
                        .serve("p", &range, |r| {
                            fetches.fetch_add(1, Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            Ok(obj.slice(r.start as usize..r.end as usize))
                        })
                        .unwrap()
                        .unwrap();
                    assert_eq!(got, obj.slice(range.start as usize..range.end as usize));
                });
            }
        });
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }
}

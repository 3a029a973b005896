//! The read planner: given the blobs an operation will read, which ranges of which packs to
//! fetch, each with one request. Pure: locations in, a [`ReadPlan`] out; the storage floor
//! follows it ([`Storage::follow_plan`](crate::storage::Storage::follow_plan)).
//!
//! Per pack: when the blobs needed fill at least half of the range from the first to the last
//! of them, that whole range is one request (in practice the pack's data, all of it); else
//! ranges closer than the store's per-request cost ([`ReadCost::request_bytes`]) are joined,
//! and further ranges stay separate requests. So an operation never makes more requests than
//! it touches packs, unless it needs only a few blobs far apart in a pack, where reading the
//! bytes between them would cost more than another request. A store whose requests cost
//! nothing (a local directory) gets no plan: its direct ranged reads win there.

use crate::format::id::PackId;
use crate::format::index::BlobLocation;
use crate::format::pack;
use crate::storage::{ReadCost, ReadPlan, Segment};
use std::collections::HashMap;

/// The plan for reading the blobs at `locations` (in any order, repeats counting once per
/// use) on a store whose requests cost `cost`; `None` when requests cost nothing extra there.
pub fn plan<'a>(
    locations: impl IntoIterator<Item = &'a BlobLocation>,
    cost: ReadCost,
) -> Option<ReadPlan> {
    if !cost.plans_reads() {
        return None;
    }
    // Packs in the order they are first read, each with its blobs' ranges.
    let mut position: HashMap<PackId, usize> = HashMap::new();
    let mut by_pack: Vec<(PackId, Vec<(u64, u64)>)> = Vec::new();
    for loc in locations {
        let start = u64::from(loc.blob.offset);
        let i = *position.entry(loc.pack).or_insert_with(|| {
            by_pack.push((loc.pack, Vec::new()));
            by_pack.len() - 1
        });
        by_pack[i]
            .1
            .push((start, start + u64::from(loc.blob.length)));
    }
    let segments = by_pack
        .into_iter()
        .map(|(pack, mut ranges)| {
            ranges.sort_unstable();
            (pack::pack_key(&pack), segments(&ranges, cost.request_bytes))
        })
        .collect();
    Some(ReadPlan { segments })
}

/// The segments of one pack for blob ranges sorted by start (repeats allowed).
fn segments(ranges: &[(u64, u64)], gap: u64) -> Vec<Segment> {
    let (Some(first), Some(last_end)) = (ranges.first(), ranges.iter().map(|r| r.1).max()) else {
        return Vec::new();
    };
    let needed: u64 = ranges.iter().map(|(s, e)| e - s).sum();
    if needed.saturating_mul(2) >= last_end - first.0 {
        return vec![Segment {
            range: first.0..last_end,
            needed,
        }];
    }
    let mut out: Vec<Segment> = Vec::new();
    for &(start, end) in ranges {
        match out.last_mut() {
            Some(seg) if start <= seg.range.end.saturating_add(gap) => {
                seg.range.end = seg.range.end.max(end);
                seg.needed += end - start;
            }
            _ => out.push(Segment {
                range: start..end,
                needed: end - start,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::BlobId;
    use crate::format::pack::{BlobKind, Compression, PackedBlob};

    fn loc(pack: u8, offset: u32, length: u32) -> BlobLocation {
        BlobLocation {
            pack: PackId([pack; 32]),
            blob: PackedBlob {
                kind: BlobKind::Data,
                compression: Compression::None,
                id: BlobId([offset as u8; 32]),
                offset,
                length,
                raw_length: length,
            },
        }
    }

    #[test]
    fn a_local_store_gets_no_plan() {
        assert!(plan(&[loc(1, 0, 10)], ReadCost::LOCAL).is_none());
    }

    #[test]
    fn many_small_blobs_of_one_pack_are_one_request_whatever_their_order() {
        // A thousand small files' blobs, asked for out of order, one of them twice.
        let mut locations: Vec<BlobLocation> =
            (0..1000u32).rev().map(|i| loc(1, i * 4096, 4000)).collect();
        locations.push(loc(1, 0, 4000));
        locations.push(loc(2, 100, 50));
        let plan = plan(&locations, ReadCost::REMOTE).unwrap();
        assert_eq!(plan.requests(), 2);
        // Packs in the order first read: pack 1 first.
        assert_eq!(plan.segments[0].0, pack::pack_key(&PackId([1; 32])));
        let one = plan.of(&pack::pack_key(&PackId([1; 32]))).unwrap();
        assert_eq!(one[0].range, 0..999 * 4096 + 4000);
        assert_eq!(one[0].needed, 1001 * 4000);
        let two = plan.of(&pack::pack_key(&PackId([2; 32]))).unwrap();
        assert_eq!(two[0].range, 100..150);
    }

    #[test]
    fn sparse_blobs_join_within_the_gap_and_stay_apart_beyond_it() {
        let mib = 1u32 << 20;
        let gap = ReadCost::REMOTE.request_bytes as u32;
        let locations = [
            loc(1, 0, 1000),
            loc(1, gap, 1000),                // within the gap of the first: joined
            loc(1, 2 * gap + 2000, 1000),     // one byte beyond it: a second request
            loc(1, 2 * gap + 10 * mib, 1000), // far beyond: a third
        ];
        let plan = plan(&locations, ReadCost::REMOTE).unwrap();
        let segs = plan.of(&pack::pack_key(&PackId([1; 32]))).unwrap();
        let ranges: Vec<_> = segs.iter().map(|s| s.range.clone()).collect();
        let (gap, mib) = (u64::from(gap), u64::from(mib));
        assert_eq!(
            ranges,
            vec![
                0..gap + 1000,
                2 * gap + 2000..2 * gap + 3000,
                2 * gap + 10 * mib..2 * gap + 10 * mib + 1000
            ]
        );
        assert_eq!(segs[0].needed, 2000);
        // A store with a small per-request cost joins less.
        let cheap = ReadCost { request_bytes: 10 };
        assert_eq!(super::plan(&locations[..2], cheap).unwrap().requests(), 2);
    }

    /// A store in memory whose requests cost what an object store's do, counting range reads.
    struct Remote {
        inner: crate::storage::MemoryBackend,
        ranges: std::sync::atomic::AtomicUsize,
    }

    impl crate::storage::Backend for Remote {
        fn put_new(&self, key: &str, bytes: bytes::Bytes) -> crate::error::Result<()> {
            self.inner.put_new(key, bytes)
        }
        fn get(&self, what: &'static str, key: &str) -> crate::error::Result<bytes::Bytes> {
            self.inner.get(what, key)
        }
        fn get_bounded(
            &self,
            what: &'static str,
            key: &str,
            max: u64,
            known: Option<u64>,
        ) -> crate::error::Result<bytes::Bytes> {
            self.inner.get_bounded(what, key, max, known)
        }
        fn get_range(
            &self,
            what: &'static str,
            key: &str,
            range: std::ops::Range<u64>,
        ) -> crate::error::Result<bytes::Bytes> {
            if key.starts_with("data/") {
                self.ranges
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            self.inner.get_range(what, key, range)
        }
        fn read_cost(&self) -> ReadCost {
            ReadCost::REMOTE
        }
        fn size(&self, key: &str) -> crate::error::Result<Option<u64>> {
            self.inner.size(key)
        }
        fn list(&self, dir: &str) -> crate::error::Result<Vec<crate::storage::ObjectInfo>> {
            self.inner.list(dir)
        }
        fn delete(&self, key: &str) -> crate::error::Result<()> {
            self.inner.delete(key)
        }
    }

    #[test]
    fn planned_reads_of_many_small_blobs_make_one_request_per_pack() {
        use crate::repository::{writer::BlobWriter, InitOptions, Repository};
        use crate::storage::{Storage, StoreKind};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let remote = Arc::new(Remote {
            inner: crate::storage::MemoryBackend::new(),
            ranges: Default::default(),
        });
        let storage = Storage::from_backend(remote.clone(), StoreKind::S3, "s3://test/repo");
        let options = InitOptions {
            pack_size: 1024 * 1024,
            ..crate::repository::test_options()
        };
        let repo = Repository::init(storage, b"pw", &options).unwrap();
        let writer = BlobWriter::new(&repo, 1, Arc::new(AtomicBool::new(false))).unwrap();
        let mut compressor = writer.compressor();
        // 600 small "files" of 3000 incompressible bytes: two packs of 1 MiB.
        let mut blobs = Vec::new();
        let mut state = 11u64;
        for _ in 0..600 {
            let blob: Vec<u8> = (0..375)
                .flat_map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    state.to_le_bytes()
                })
                .collect();
            let (id, _) = writer
                .store(
                    &mut compressor,
                    crate::format::compress::BlobClass::FileData,
                    &blob,
                )
                .unwrap();
            blobs.push((id, blob));
        }
        writer.finish().unwrap();
        let repo = Repository::open(repo.storage().clone(), b"pw").unwrap();
        let reader = repo.reader();
        let packs: std::collections::HashSet<PackId> = blobs
            .iter()
            .map(|(id, _)| reader.locate(id).unwrap().pack)
            .collect();
        assert!(packs.len() >= 2, "{} packs", packs.len());
        let ids: Vec<BlobId> = blobs.iter().map(|(id, _)| *id).collect();
        remote.ranges.store(0, Ordering::SeqCst);
        {
            let _plan = reader.plan_reads([ids.as_slice()]).unwrap();
            // One read per blob, from several threads, as restore reads small files.
            std::thread::scope(|scope| {
                for part in blobs.chunks(100) {
                    scope.spawn(move || {
                        for (id, want) in part {
                            reader
                                .read_blobs(std::slice::from_ref(id), |got| {
                                    assert!(got == &want[..]);
                                    Ok(())
                                })
                                .unwrap();
                        }
                    });
                }
            });
        }
        assert_eq!(remote.ranges.load(Ordering::SeqCst), packs.len());
        // Without the plan, every read is a request of its own.
        remote.ranges.store(0, Ordering::SeqCst);
        reader.read_blobs(&ids[..10], |_| Ok(())).unwrap();
        assert_eq!(remote.ranges.load(Ordering::SeqCst), 1);
        for id in &ids[..10] {
            reader
                .read_blobs(std::slice::from_ref(id), |_| Ok(()))
                .unwrap();
        }
        assert_eq!(remote.ranges.load(Ordering::SeqCst), 11);
    }
}

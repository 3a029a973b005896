//! What check verifies, decided without touching storage: the index and the packs it expects
//! from the index files and deletion plans, which present packs are read whole and which only
//! have their headers compared, which expected packs are missing (and what that damages), which
//! present packs no index names, and which repairs apply to what was found. Unit-tested without
//! a repository.
//!
//! May use: `format/` values only.

use super::{DamagedPath, Problem, ReadData, StagingLeftovers};
use crate::error::Result;
use crate::format::id::{BlobId, IndexId, PackId};
use crate::format::index::{IndexFile, MasterIndex};
use crate::format::pack::{self, PackedBlob};
use crate::format::plan::DeletionPlan;
use std::collections::{HashMap, HashSet};

/// What the index files and deletion plans say the repository holds.
pub(super) struct Expected {
    /// Live and pending blobs, sorted: the copy of each blob readers use.
    pub index: MasterIndex,
    /// Every pack an index file or plan names, with the entries it should hold.
    pub packs: HashMap<PackId, Vec<PackedBlob>>,
    /// Packs a live index file names.
    pub live: HashSet<PackId>,
    /// Packs a deletion plan names (with or without entries).
    pub planned: HashSet<PackId>,
    /// How many index files are live.
    pub index_files: usize,
}

/// Builds [`Expected`] from every readable index file (newest first, as
/// [`MasterIndex::load`] reads them: of two copies of a blob, the one stored again after its
/// pack was lost is the one restore reads, so snapshots that use it are not reported damaged)
/// and the readable plans. Superseded index files are left out.
pub(super) fn expected(
    files: Vec<(IndexId, IndexFile)>,
    plans: &[(String, DeletionPlan)],
) -> Expected {
    let superseded: HashSet<IndexId> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    let mut index = MasterIndex::default();
    let mut packs: HashMap<PackId, Vec<PackedBlob>> = HashMap::new();
    let mut index_files = 0;
    for (_, file) in files.iter().filter(|(id, _)| !superseded.contains(id)) {
        index_files += 1;
        for (pack, blobs) in &file.packs {
            index.add_pack(*pack, blobs);
            packs.entry(*pack).or_insert_with(|| blobs.clone());
        }
    }
    let live: HashSet<PackId> = packs.keys().copied().collect();
    let mut planned: HashSet<PackId> = HashSet::new();
    for (_, p) in plans {
        for (pack, blobs) in &p.packs {
            planned.insert(*pack);
            if !blobs.is_empty() {
                index.add_pending_pack(*pack, blobs);
                packs.entry(*pack).or_insert_with(|| blobs.clone());
            }
        }
    }
    index.sort();
    Expected {
        index,
        packs,
        live,
        planned,
        index_files,
    }
}

/// How one present pack is verified.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Depth {
    /// Read whole: its name must be the hash of its bytes and every blob must open.
    Read,
    /// Only its header is read and compared with the index.
    Header,
}

/// What check does with the packs, and what their absence already tells.
#[derive(Debug, Default)]
pub(super) struct PackPlan {
    /// Present expected packs, sorted, with their listed size and how deep to verify them.
    pub work: Vec<(PackId, u64, Depth)>,
    /// Live packs that are missing: damage.
    pub errors: Vec<Problem>,
    /// Blobs whose chosen copy is in a missing pack, with why.
    pub damaged: Vec<(BlobId, String)>,
    /// Whether a live pack is missing (then `repair index` applies).
    pub lost_packs: bool,
    /// Present packs that no index file or plan names, sorted: worth a warning.
    pub unindexed: Vec<PackId>,
}

/// Decides how every expected pack is verified, given the listing and the packs chosen to be
/// read whole ([`select`]).
pub(super) fn plan_packs(
    expected: &Expected,
    present: &HashMap<PackId, u64>,
    selected: &HashSet<PackId>,
) -> PackPlan {
    let mut plan = PackPlan::default();
    let mut ids: Vec<PackId> = expected.packs.keys().copied().collect();
    ids.sort();
    for pack_id in &ids {
        let blobs = &expected.packs[pack_id];
        match present.get(pack_id) {
            Some(&size) => {
                let depth = if selected.contains(pack_id) {
                    Depth::Read
                } else {
                    Depth::Header
                };
                plan.work.push((*pack_id, size, depth));
            }
            None => {
                // A pending pack may be gone after an interrupted prune; that is damage only
                // if a blob's chosen copy was in it (found by the snapshot walk).
                if expected.live.contains(pack_id) {
                    plan.lost_packs = true;
                    plan.errors.push(Problem {
                        object: pack::pack_key(pack_id),
                        message: format!(
                            "missing, but an index lists {} blob(s) in it",
                            blobs.len()
                        ),
                    });
                }
                let why = format!("its pack {} is missing", pack_id.short());
                plan.damaged
                    .extend(damaged_in(&expected.index, pack_id, blobs, &why));
            }
        }
    }
    let mut unindexed: Vec<PackId> = present
        .keys()
        .filter(|p| !expected.packs.contains_key(p) && !expected.planned.contains(p))
        .copied()
        .collect();
    unindexed.sort();
    plan.unindexed = unindexed;
    plan
}

/// The commands that recover from what was found, in order (docs/maintenance.md, "When a pack
/// is lost"): needed when a live pack is missing or a snapshot names a blob in no index (lost
/// with a pack already dropped from the index, or in a pack that no index names, which
/// `repair index` adds back).
pub(super) fn repairs(lost_packs: bool, damaged_paths: &[DamagedPath]) -> Vec<String> {
    let unindexed_blobs = damaged_paths
        .iter()
        .any(|d| d.reason.contains("in no index") || d.reason.contains("not in any index"));
    if lost_packs || unindexed_blobs {
        vec![
            "coffer repair index".into(),
            "coffer repair snapshots --forget".into(),
        ]
    } else {
        Vec::new()
    }
}

/// The packs to read in full, sorted.
pub(super) fn select(
    ids: &[PackId],
    present: &HashMap<PackId, u64>,
    read: ReadData,
) -> Result<Vec<PackId>> {
    let candidates: Vec<PackId> = ids
        .iter()
        .filter(|p| present.contains_key(p))
        .copied()
        .collect();
    Ok(match read {
        ReadData::None => Vec::new(),
        ReadData::All => candidates,
        ReadData::Part { n, m } => candidates
            .into_iter()
            .filter(|p| u32::from_be_bytes([p.0[0], p.0[1], p.0[2], p.0[3]]) % m == n - 1)
            .collect(),
        ReadData::Percent(p) => {
            let want = ((candidates.len() as f64) * p / 100.0).ceil() as usize;
            let mut seed = [0u8; 32];
            coffer_crypto::random_fill(&mut seed)?;
            // Random order: sort by a keyed hash of each id under a fresh seed.
            let mut keyed: Vec<([u8; 32], PackId)> = candidates
                .into_iter()
                .map(|id| (*blake3::keyed_hash(&seed, &id.0).as_bytes(), id))
                .collect();
            keyed.sort();
            let mut out: Vec<PackId> = keyed.into_iter().take(want).map(|(_, id)| id).collect();
            out.sort();
            out
        }
    })
}

/// The blobs of `pack` whose chosen copy (the one readers use) is in it, each with `why`.
pub(super) fn damaged_in(
    index: &MasterIndex,
    pack: &PackId,
    blobs: &[PackedBlob],
    why: &str,
) -> Vec<(BlobId, String)> {
    blobs
        .iter()
        .filter(|b| index.get(&b.id).is_some_and(|loc| loc.pack == *pack))
        .map(|b| (b.id, why.to_string()))
        .collect()
}

/// What check says of the staging files interrupted writes left (key, size, modification
/// time), judged at `now`: nothing when there are none, else their summary and one warning
/// naming the count, the bytes and the oldest age. Not damage: nothing reads them.
pub(super) fn staging(
    leftovers: &[(String, u64, jiff::Timestamp)],
    now: jiff::Timestamp,
) -> Option<(StagingLeftovers, Problem)> {
    let oldest = leftovers.iter().map(|(_, _, modified)| *modified).min()?;
    let min_age = crate::ops::prune::STAGING_MIN_AGE.as_secs() as i64;
    let age = |t: jiff::Timestamp| now.duration_since(t).as_secs();
    let summary = StagingLeftovers {
        files: leftovers.len(),
        bytes: leftovers.iter().map(|(_, size, _)| size).sum(),
        oldest,
        removable: leftovers
            .iter()
            .filter(|(_, _, t)| age(*t) >= min_age)
            .count(),
    };
    let problem = Problem {
        object: "staging files".into(),
        message: format!(
            "{} left by interrupted writes ({}, the oldest {}); never read, not damage; \
             `coffer prune` removes those at least a day old ({} now)",
            plural(summary.files, "file"),
            crate::ops::human_bytes(summary.bytes),
            age_words(age(oldest)),
            summary.removable
        ),
    };
    Some((summary, problem))
}

/// `3 days old`, `5 hours old`, `2 minutes old` (whole units, rounded down); a time ahead of
/// this clock says so.
fn age_words(secs: i64) -> String {
    match secs {
        s if s < 0 => "written in the future by this clock".into(),
        s if s < 120 => format!("{} old", plural(s as usize, "second")),
        s if s < 7200 => format!("{} old", plural((s / 60) as usize, "minute")),
        s if s < 2 * 86_400 => format!("{} old", plural((s / 3600) as usize, "hour")),
        s => format!("{} old", plural((s / 86_400) as usize, "day")),
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_leftovers_are_one_warning_with_count_bytes_and_oldest_age() {
        let now: jiff::Timestamp = "2026-01-10T12:00:00Z".parse().unwrap();
        let at = |s: &str| -> jiff::Timestamp { s.parse().unwrap() };
        assert!(staging(&[], now).is_none());
        let leftovers = vec![
            ("config#5".to_string(), 512, at("2026-01-10T11:58:00Z")),
            ("data/ab/a#1".to_string(), 2048, at("2026-01-07T11:00:00Z")),
            ("index/b#2".to_string(), 1024, at("2026-01-09T12:00:00Z")),
        ];
        let (summary, problem) = staging(&leftovers, now).unwrap();
        assert_eq!(summary.files, 3);
        assert_eq!(summary.bytes, 3584);
        assert_eq!(summary.oldest, at("2026-01-07T11:00:00Z"));
        assert_eq!(summary.removable, 2);
        assert_eq!(problem.object, "staging files");
        assert_eq!(
            problem.message,
            "3 files left by interrupted writes (3.5 KiB, the oldest 3 days old); never read, \
             not damage; `coffer prune` removes those at least a day old (2 now)"
        );
        let (_, one) = staging(&leftovers[..1], now).unwrap();
        assert!(
            one.message.starts_with("1 file left") && one.message.contains("2 minutes old"),
            "{}",
            one.message
        );
        assert_eq!(age_words(59), "59 seconds old");
        assert_eq!(age_words(3 * 3600), "3 hours old");
        assert_eq!(age_words(86_400 + 5), "24 hours old");
        assert!(age_words(-5).contains("future"));
    }

    #[test]
    fn subset_specs_parse_and_parts_cover_every_pack_once() {
        assert_eq!(
            "2/5".parse::<ReadData>().unwrap(),
            ReadData::Part { n: 2, m: 5 }
        );
        assert_eq!(
            " 10% ".parse::<ReadData>().unwrap(),
            ReadData::Percent(10.0)
        );
        for bad in ["0/5", "6/5", "1/0", "x", "0%", "101%", "-1%", "1/2/3"] {
            assert!(bad.parse::<ReadData>().is_err(), "{bad}");
        }
        let ids: Vec<PackId> = (0..200u8)
            .map(|i| PackId([i.wrapping_mul(37); 32]))
            .collect();
        let present: HashMap<PackId, u64> = ids.iter().map(|id| (*id, 1)).collect();
        let mut seen = Vec::new();
        for n in 1..=3 {
            seen.extend(select(&ids, &present, ReadData::Part { n, m: 3 }).unwrap());
        }
        seen.sort();
        let mut all = ids.clone();
        all.sort();
        all.dedup();
        assert_eq!(seen, all);
        let some = select(&ids, &present, ReadData::Percent(10.0)).unwrap();
        assert_eq!(some.len(), (all.len() as f64 * 0.1).ceil() as usize);
    }

    fn blob(n: u8) -> PackedBlob {
        PackedBlob {
            kind: crate::format::pack::BlobKind::Data,
            compression: crate::format::pack::Compression::None,
            id: BlobId([n; 32]),
            offset: u32::from(n) * 10,
            length: 10,
            raw_length: 10,
        }
    }

    fn index_file(supersedes: &[u8], packs: &[(u8, &[u8])]) -> IndexFile {
        IndexFile {
            supersedes: supersedes.iter().map(|n| IndexId([*n; 32])).collect(),
            packs: packs
                .iter()
                .map(|(p, blobs)| (PackId([*p; 32]), blobs.iter().map(|n| blob(*n)).collect()))
                .collect(),
        }
    }

    /// Packs 1 and 2 live (file 2 supersedes file 1, whose pack 9 is therefore not expected),
    /// pack 3 pending in a plan, pack 4 in a plan without entries.
    fn sample() -> Expected {
        let files = vec![
            (
                IndexId([2; 32]),
                index_file(&[1], &[(1, &[1, 2]), (2, &[3])]),
            ),
            (IndexId([1; 32]), index_file(&[], &[(9, &[9])])),
        ];
        let now = jiff::Timestamp::now();
        let plan = DeletionPlan {
            created: now,
            index_deadline: now,
            index_files: vec![],
            packs: vec![
                (PackId([3; 32]), vec![blob(4), blob(3)]),
                (PackId([4; 32]), vec![]),
            ],
        };
        expected(files, &[("plans/x".into(), plan)])
    }

    #[test]
    fn superseded_files_are_left_out_and_pending_packs_are_expected() {
        let e = sample();
        assert_eq!(e.index_files, 1);
        let mut packs: Vec<u8> = e.packs.keys().map(|p| p.0[0]).collect();
        packs.sort();
        assert_eq!(packs, vec![1, 2, 3]);
        assert_eq!(e.live.len(), 2);
        assert!(e.planned.contains(&PackId([4; 32])));
        // Blob 3 is live in pack 2: that copy is the one readers use.
        assert_eq!(e.index.get(&BlobId([3; 32])).unwrap().pack, PackId([2; 32]));
        assert!(e.index.get(&BlobId([4; 32])).is_some());
        assert!(e.index.get(&BlobId([9; 32])).is_none());
    }

    #[test]
    fn missing_packs_damage_only_the_blobs_whose_copy_they_hold() {
        let e = sample();
        // Pack 1 (live) and pack 3 (pending) are missing; 2, 4 and a stranger 7 are present.
        let present: HashMap<PackId, u64> = [(2u8, 50u64), (4, 60), (7, 70)]
            .into_iter()
            .map(|(p, size)| (PackId([p; 32]), size))
            .collect();
        let selected: HashSet<PackId> = [PackId([2; 32])].into_iter().collect();
        let plan = plan_packs(&e, &present, &selected);
        assert_eq!(plan.work, vec![(PackId([2; 32]), 50, Depth::Read)]);
        assert!(plan.lost_packs);
        assert_eq!(plan.errors.len(), 1);
        assert!(
            plan.errors[0].message.contains("2 blob(s)"),
            "{:?}",
            plan.errors
        );
        // Blobs 1 and 2 (pack 1) and 4 (pending, only copy in pack 3); not 3, read from pack 2.
        let mut damaged: Vec<u8> = plan.damaged.iter().map(|(b, _)| b.0[0]).collect();
        damaged.sort();
        assert_eq!(damaged, vec![1, 2, 4]);
        // Pack 4 is in a plan: not a stranger.
        assert_eq!(plan.unindexed, vec![PackId([7; 32])]);
        let header = plan_packs(&e, &present, &HashSet::new());
        assert_eq!(header.work[0].2, Depth::Header);
    }

    #[test]
    fn repairs_apply_to_lost_packs_and_blobs_in_no_index() {
        let path = |reason: &str| DamagedPath {
            snapshot: crate::format::id::SnapshotId([1; 32]),
            path: "/a".into(),
            reason: reason.into(),
        };
        assert!(repairs(false, &[]).is_empty());
        assert!(repairs(false, &[path("blob 12 in pack 34 is damaged")]).is_empty());
        assert_eq!(repairs(true, &[]).len(), 2);
        assert_eq!(
            repairs(false, &[path("data blob 12 is in no index")]),
            vec!["coffer repair index", "coffer repair snapshots --forget"]
        );
    }
}

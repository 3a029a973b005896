//! Steps 3 and 4 of a prune pass, pure: from what was loaded (index, marks, index files,
//! deletion plans, the pack listing) decide which due plans are carried out, which packs are
//! deleted now, re-indexed, kept, repacked or condemned, and which index files are superseded.
//! No I/O, so every rule of docs/maintenance.md (D1, D3, P4a, P6) is unit-tested here without a
//! repository.
//!
//! May use: `format/` values only.

use super::mark::Marks;
use super::{PruneReport, Removal};
use crate::error::{Error, Result};
use crate::format::id::{IndexId, PackId};
use crate::format::index::MasterIndex;
use crate::format::pack::{self, PackedBlob};
use crate::format::plan::DeletionPlan;
use std::collections::{HashMap, HashSet};

/// What a pass knows when it decides; everything borrowed from the loading and marking steps.
pub(super) struct Facts<'a> {
    /// The live and pending index, sorted.
    pub index: &'a MasterIndex,
    /// The blobs a snapshot reaches, by index position.
    pub marks: &'a Marks,
    /// Live index files with the packs each lists.
    pub files: &'a [(IndexId, Vec<PackId>)],
    /// Every index file present that a present index file supersedes.
    pub superseded: &'a HashSet<IndexId>,
    /// The readable deletion plans, with their keys.
    pub plans: &'a [(String, DeletionPlan)],
    /// Stored bytes of the blobs a live index lists in each pack.
    pub blob_bytes: &'a HashMap<PackId, u64>,
    /// Every pack present in storage, with its size.
    pub present: &'a HashMap<PackId, u64>,
    /// Packs too young to condemn or delete while no index names them (P4a), or only
    /// checkpoint index files (P4b).
    pub young: &'a HashSet<PackId>,
    /// Packs that only checkpoint index files name.
    pub checkpoint_only: &'a HashSet<PackId>,
}

/// The rules a pass decides by.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rules {
    /// Repack a pack when more than this fraction of its bytes is unused.
    pub max_unused: f64,
    /// A plan is due this long after its index deadline (zero: every plan is due).
    pub grace: jiff::SignedDuration,
    /// The time the pass judges by.
    pub now: jiff::Timestamp,
}

/// What becomes of a live pack.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Fate {
    Keep,
    /// Its used blobs are copied to new packs, then it is condemned.
    Repack,
    /// Condemned (why: `unused` or `missing`).
    Condemn(&'static str),
}

/// What a pass decided.
#[derive(Debug, Default)]
pub(super) struct Decisions {
    /// Keys of the due plans, deleted once carried out.
    pub due_keys: Vec<String>,
    /// Plans still waiting for their grace period.
    pub plans_pending: usize,
    /// Packs of due plans to delete now, with size and reason.
    pub delete_packs: Vec<(PackId, u64, String)>,
    /// Superseded index files of due plans to delete now.
    pub delete_files: Vec<IndexId>,
    /// Packs of due plans that a snapshot still needs: indexed again.
    pub reindex: Vec<(PackId, Vec<PackedBlob>)>,
    /// The fate of every live pack.
    pub fates: HashMap<PackId, Fate>,
    /// Present packs in no index, old enough to condemn, sorted.
    pub unindexed: Vec<PackId>,
    /// Live index files naming a pack condemned now: one new index file supersedes them.
    pub affected: Vec<IndexId>,
}

impl Decisions {
    /// Whether this pass condemns `pack` (repacked or not).
    pub fn condemned_now(&self, pack: &PackId) -> bool {
        matches!(self.fates.get(pack), Some(Fate::Condemn(_) | Fate::Repack))
    }

    /// Whether this pass writes a deletion plan.
    pub fn writes_plan(&self, plan_packs: usize) -> bool {
        plan_packs > 0 || !self.affected.is_empty()
    }
}

/// Decides the due plans (phase 2), then the fate of every live pack and of packs in no index
/// (phase 1). Refuses if a pack that snapshots need is missing.
pub(super) fn decide(facts: &Facts<'_>, rules: &Rules) -> Result<Decisions> {
    let mut decisions = Decisions::default();
    let live_packs: HashSet<PackId> = facts
        .files
        .iter()
        .flat_map(|(_, packs)| packs.iter().copied())
        .collect();
    let decided = decide_due_plans(facts, rules, &live_packs, &mut decisions);
    decisions.fates = fates(facts, rules.max_unused, &live_packs)?;
    let reindexed: HashSet<PackId> = decisions.reindex.iter().map(|(id, _)| *id).collect();
    let deleting: HashSet<PackId> = decisions
        .delete_packs
        .iter()
        .map(|(id, _, _)| *id)
        .collect();
    let pending = pending_packs(facts, rules);
    let mut unindexed: Vec<PackId> = facts
        .present
        .keys()
        .filter(|p| {
            !live_packs.contains(p)
                && !pending.contains(p)
                && !reindexed.contains(p)
                && !deleting.contains(p)
                && !decided.contains(p)
                && !facts.young.contains(p)
        })
        .copied()
        .collect();
    unindexed.sort();
    decisions.unindexed = unindexed;
    decisions.affected = facts
        .files
        .iter()
        .filter(|(_, packs)| packs.iter().any(|p| decisions.condemned_now(p)))
        .map(|(id, _)| *id)
        .collect();
    Ok(decisions)
}

/// Whether `plan` is due: its index deadline a grace period past. Counted from the latest moment
/// the planning prune could have superseded the condemned packs' index files (docs/maintenance.md,
/// D1 and P6). A zero grace period promises nothing about running backups: every plan is due.
fn is_due(plan: &DeletionPlan, rules: &Rules) -> bool {
    rules.grace.is_zero()
        || plan
            .index_deadline
            .checked_add(rules.grace)
            .is_ok_and(|due| due <= rules.now)
}

/// D1: the packs that a plan still waiting lists, left to that plan.
fn pending_packs(facts: &Facts<'_>, rules: &Rules) -> HashSet<PackId> {
    facts
        .plans
        .iter()
        .filter(|(_, p)| !is_due(p, rules))
        .flat_map(|(_, p)| p.packs.iter().map(|(id, _)| *id))
        .collect()
}

/// Phase 2: which packs and index files of the due plans go now, and which packs a snapshot
/// written since still needs (re-indexed instead). Returns every pack a due plan decided.
fn decide_due_plans(
    facts: &Facts<'_>,
    rules: &Rules,
    live_packs: &HashSet<PackId>,
    out: &mut Decisions,
) -> HashSet<PackId> {
    let (index, marks) = (facts.index, facts.marks);
    // Whether the copy the index chose for a blob of `pack` is a marked, pending one in `pack`.
    let needs = |pack: &PackId, blobs: &[PackedBlob]| {
        blobs.iter().any(|b| {
            index.position(&b.id).is_some_and(|pos| {
                marks.get(pos)
                    && index
                        .at(pos)
                        .is_some_and(|(loc, pending)| pending && loc.pack == *pack)
            })
        })
    };
    let pending = pending_packs(facts, rules);
    out.plans_pending = facts
        .plans
        .iter()
        .filter(|(_, p)| !is_due(p, rules))
        .count();
    let mut decided: HashSet<PackId> = HashSet::new();
    for (key, p) in facts.plans.iter().filter(|(_, p)| is_due(p, rules)) {
        out.due_keys.push(key.clone());
        for (pack, blobs) in &p.packs {
            if live_packs.contains(pack) || pending.contains(pack) || !decided.insert(*pack) {
                // Indexed again, still waiting in another plan, or decided already.
                continue;
            }
            if needs(pack, blobs) {
                if facts.present.contains_key(pack) {
                    out.reindex.push((*pack, blobs.clone()));
                }
                continue;
            }
            // P4a: a pack condemned while in no index (no blob entries) and still young is
            // left for a later prune (plans written before this rule existed).
            if blobs.is_empty() && facts.young.contains(pack) {
                continue;
            }
            if let Some(size) = facts.present.get(pack) {
                out.delete_packs.push((*pack, *size, "condemned".into()));
            }
        }
        for file in &p.index_files {
            if facts.superseded.contains(file) && !out.delete_files.contains(file) {
                out.delete_files.push(*file);
            }
        }
    }
    decided
}

/// Blobs and stored bytes used in one pack, counting each blob once, in the copy the index
/// chose.
#[derive(Default, Clone, Copy)]
struct PackUse {
    used_blobs: u64,
    used_bytes: u64,
}

fn usage(index: &MasterIndex, marks: &Marks) -> HashMap<PackId, PackUse> {
    let mut usage: HashMap<PackId, PackUse> = HashMap::new();
    for (pos, (loc, _pending)) in index.iter().enumerate() {
        let u = usage.entry(loc.pack).or_default();
        if marks.get(pos) {
            u.used_blobs += 1;
            u.used_bytes += u64::from(loc.blob.length);
        }
    }
    usage
}

/// Phase 1: the fate of every live pack by its use. Refuses if a pack snapshots need is missing.
fn fates(
    facts: &Facts<'_>,
    max_unused: f64,
    live_packs: &HashSet<PackId>,
) -> Result<HashMap<PackId, Fate>> {
    let usage = usage(facts.index, facts.marks);
    let mut fates = HashMap::new();
    for pack in live_packs {
        let u = usage.get(pack).copied().unwrap_or_default();
        let fate = match facts.present.get(pack) {
            None if u.used_blobs > 0 => {
                return Err(Error::Missing {
                    what: "pack",
                    id: format!("{pack} (it holds blobs that snapshots need)"),
                })
            }
            None => Fate::Condemn("missing"),
            // P4b: a running writer's checkpointed packs, which its snapshot may yet need.
            Some(_) if facts.checkpoint_only.contains(pack) && facts.young.contains(pack) => {
                Fate::Keep
            }
            Some(_) if u.used_blobs == 0 => Fate::Condemn("unused"),
            Some(&size) => {
                // The header is overhead, not waste: only unused blobs count.
                let blobs = facts.blob_bytes.get(pack).copied().unwrap_or(size);
                let unused = blobs.saturating_sub(u.used_bytes) as f64 / size.max(1) as f64;
                if unused > max_unused {
                    Fate::Repack
                } else {
                    Fate::Keep
                }
            }
        };
        fates.insert(*pack, fate);
    }
    Ok(fates)
}

/// Staging files left by interrupted writes are removed once they were last written at least
/// this long ago, whatever the grace period: a write still running may be filling a younger one
/// (a pack of at most 8 MiB takes seconds; a day is far beyond any stall).
pub const STAGING_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Which staging leftovers (key, size, modification time) a prune at `now` removes: those at
/// least [`STAGING_MIN_AGE`] old, in the order given. A time in the future (clocks that
/// disagree) is young. The others are kept; their count is the second value.
pub(super) fn stale_staging(
    leftovers: &[(String, u64, jiff::Timestamp)],
    now: jiff::Timestamp,
) -> (Vec<(String, u64)>, usize) {
    let age = jiff::SignedDuration::from_secs(STAGING_MIN_AGE.as_secs() as i64);
    let Ok(limit) = now.checked_sub(age) else {
        return (Vec::new(), leftovers.len());
    };
    let stale: Vec<(String, u64)> = leftovers
        .iter()
        .filter(|(_, _, modified)| *modified <= limit)
        .map(|(key, size, _)| (key.clone(), *size))
        .collect();
    let kept = leftovers.len() - stale.len();
    (stale, kept)
}

/// Adds what was decided to the report: use, condemned and deleted objects (as removals,
/// sorted), repacked blobs.
pub(super) fn account(facts: &Facts<'_>, d: &Decisions, report: &mut PruneReport) {
    for (pos, (loc, _)) in facts.index.iter().enumerate() {
        if facts.marks.get(pos) {
            report.blobs_used += 1;
            report.bytes_used += u64::from(loc.blob.length);
            if matches!(d.fates.get(&loc.pack), Some(Fate::Repack)) {
                report.blobs_repacked += 1;
                report.bytes_repacked += u64::from(loc.blob.length);
            }
        }
    }
    report.packs_kept_young = facts
        .checkpoint_only
        .iter()
        .filter(|p| facts.young.contains(p) && facts.present.contains_key(p))
        .count();
    // A live pack already gone is condemned (dropped from the index) but is not a removal.
    let condemn = |pack: &PackId, reason: &str, listed_anyway: bool, report: &mut PruneReport| {
        let size = facts.present.get(pack).copied().unwrap_or(0);
        report.packs_condemned += 1;
        report.bytes_condemned += size;
        if size > 0 || listed_anyway {
            report.removals.push(Removal {
                object: pack::pack_key(pack),
                bytes: size,
                reason: reason.into(),
                when: "after grace",
            });
        }
    };
    for (pack, fate) in &d.fates {
        match fate {
            Fate::Keep => {}
            Fate::Repack => {
                report.packs_repacked += 1;
                condemn(pack, "repacked", false, report);
            }
            Fate::Condemn(why) => condemn(pack, why, false, report),
        }
    }
    for pack in &d.unindexed {
        condemn(pack, "not indexed", true, report);
    }
    for (pack, size, reason) in &d.delete_packs {
        report.removals.push(Removal {
            object: pack::pack_key(pack),
            bytes: *size,
            reason: reason.clone(),
            when: "now",
        });
        report.bytes_deleted += size;
    }
    for file in &d.delete_files {
        report.removals.push(Removal {
            object: format!("index/{file}"),
            bytes: 0,
            reason: "superseded".into(),
            when: "now",
        });
    }
    report.index_files_superseded = d.affected.len();
    report.packs_reindexed = d.reindex.len();
    report.plans_pending = d.plans_pending;
    report
        .removals
        .sort_by(|a, b| a.when.cmp(b.when).then(a.object.cmp(&b.object)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::BlobId;
    use crate::format::pack::{BlobKind, Compression};

    fn blob(n: u8) -> PackedBlob {
        PackedBlob {
            kind: BlobKind::Data,
            compression: Compression::None,
            id: BlobId([n; 32]),
            offset: u32::from(n % 16) * 100,
            length: 100,
            raw_length: 100,
        }
    }

    fn pack(n: u8) -> PackId {
        PackId([n; 32])
    }

    fn file(n: u8) -> IndexId {
        IndexId([n; 32])
    }

    fn hours_ago(h: i64) -> jiff::Timestamp {
        jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_hours(h))
            .unwrap()
    }

    /// The loaded state of a small repository, owned, for [`Facts`] to borrow.
    #[derive(Default)]
    struct World {
        index: MasterIndex,
        used: Vec<BlobId>,
        files: Vec<(IndexId, Vec<PackId>)>,
        superseded: HashSet<IndexId>,
        plans: Vec<(String, DeletionPlan)>,
        blob_bytes: HashMap<PackId, u64>,
        present: HashMap<PackId, u64>,
        young: HashSet<PackId>,
        checkpoint_only: HashSet<PackId>,
    }

    impl World {
        /// A live pack listed by index file `f`, present with a 100-byte header.
        fn live(&mut self, f: u8, p: u8, blobs: &[u8]) {
            let blobs: Vec<PackedBlob> = blobs.iter().map(|n| blob(*n)).collect();
            self.index.add_pack(pack(p), &blobs);
            self.blob_bytes.insert(pack(p), 100 * blobs.len() as u64);
            self.present.insert(pack(p), 100 * blobs.len() as u64 + 100);
            match self.files.iter_mut().find(|(id, _)| *id == file(f)) {
                Some((_, packs)) => packs.push(pack(p)),
                None => self.files.push((file(f), vec![pack(p)])),
            }
        }

        fn plan(&mut self, at: jiff::Timestamp, files: &[u8], packs: &[(u8, &[u8])]) {
            let packs: Vec<(PackId, Vec<PackedBlob>)> = packs
                .iter()
                .map(|(p, blobs)| (pack(*p), blobs.iter().map(|n| blob(*n)).collect()))
                .collect();
            for (p, blobs) in &packs {
                self.index.add_pending_pack(*p, blobs);
            }
            let key = format!("plans/{}", self.plans.len());
            self.plans.push((
                key,
                DeletionPlan {
                    created: at,
                    index_deadline: at,
                    index_files: files.iter().map(|f| file(*f)).collect(),
                    packs,
                },
            ));
        }

        fn decide(&mut self, grace_hours: i64) -> (Decisions, PruneReport) {
            self.index.sort();
            let mut marks = Marks::new(self.index.len());
            for id in &self.used {
                marks.set(self.index.position(id).unwrap());
            }
            let facts = Facts {
                index: &self.index,
                marks: &marks,
                files: &self.files,
                superseded: &self.superseded,
                plans: &self.plans,
                blob_bytes: &self.blob_bytes,
                present: &self.present,
                young: &self.young,
                checkpoint_only: &self.checkpoint_only,
            };
            let rules = Rules {
                max_unused: 0.3,
                grace: jiff::SignedDuration::from_hours(grace_hours),
                now: jiff::Timestamp::now(),
            };
            let decisions = decide(&facts, &rules).unwrap();
            let mut report = PruneReport::default();
            account(&facts, &decisions, &mut report);
            (decisions, report)
        }
    }

    #[test]
    fn live_packs_are_kept_repacked_or_condemned_by_their_use() {
        let mut w = World::default();
        w.live(1, 1, &[1, 2, 3, 4]); // all used: kept
        w.live(1, 2, &[5, 6, 7, 8]); // half unused (> 30%): repacked
        w.live(2, 3, &[9, 10]); // nothing used: condemned
        w.live(3, 4, &[11]); // used, 100 of 200 bytes are header: kept
        w.used = [1, 2, 3, 4, 5, 6, 11].map(|n| blob(n).id).to_vec();
        let (d, report) = w.decide(1);
        assert_eq!(d.fates[&pack(1)], Fate::Keep);
        assert_eq!(d.fates[&pack(2)], Fate::Repack);
        assert_eq!(d.fates[&pack(3)], Fate::Condemn("unused"));
        assert_eq!(d.fates[&pack(4)], Fate::Keep);
        // Files 1 and 2 name condemned packs; file 3 names only a kept one.
        let mut affected = d.affected.clone();
        affected.sort();
        assert_eq!(affected, vec![file(1), file(2)]);
        assert_eq!(report.blobs_used, 7);
        assert_eq!((report.blobs_repacked, report.bytes_repacked), (2, 200));
        assert_eq!((report.packs_repacked, report.packs_condemned), (1, 2));
        assert_eq!(report.bytes_condemned, 500 + 300);
        assert!(d.delete_packs.is_empty() && d.due_keys.is_empty());
    }

    #[test]
    fn a_missing_pack_is_condemned_unless_a_snapshot_needs_it() {
        let mut w = World::default();
        w.live(1, 1, &[1]);
        w.present.remove(&pack(1));
        let (d, report) = w.decide(1);
        assert_eq!(d.fates[&pack(1)], Fate::Condemn("missing"));
        // Nothing to delete: not listed as a removal.
        assert!(report.removals.is_empty());

        w.used = vec![blob(1).id];
        w.index.sort();
        let mut marks = Marks::new(w.index.len());
        marks.set(w.index.position(&blob(1).id).unwrap());
        let facts = Facts {
            index: &w.index,
            marks: &marks,
            files: &w.files,
            superseded: &w.superseded,
            plans: &w.plans,
            blob_bytes: &w.blob_bytes,
            present: &w.present,
            young: &w.young,
            checkpoint_only: &w.checkpoint_only,
        };
        let rules = Rules {
            max_unused: 0.3,
            grace: jiff::SignedDuration::ZERO,
            now: jiff::Timestamp::now(),
        };
        let err = decide(&facts, &rules).unwrap_err().to_string();
        assert!(err.contains("snapshots need"), "{err}");
    }

    /// P4b: an unused pack that only a checkpoint index names is a running writer's while it
    /// is young: kept, however unused; once old, or once another index names it too, the usual
    /// rules apply.
    #[test]
    fn young_checkpointed_packs_are_kept_until_old() {
        let mut w = World::default();
        w.live(1, 1, &[1]);
        w.live(1, 2, &[2]);
        w.live(2, 3, &[3]);
        w.checkpoint_only = [pack(1), pack(2)].into();
        w.young = [pack(1), pack(3)].into();
        let (d, report) = w.decide(0);
        assert_eq!(d.fates[&pack(1)], Fate::Keep);
        assert_eq!(d.fates[&pack(2)], Fate::Condemn("unused"));
        assert_eq!(d.fates[&pack(3)], Fate::Condemn("unused"));
        assert_eq!(report.packs_kept_young, 1);
    }

    /// D1 and D3: a due plan's pack goes unless a plan still waiting lists it; its index file
    /// goes only if something supersedes it; a pack a snapshot needs again is re-indexed.
    #[test]
    fn due_plans_delete_only_what_nothing_else_holds() {
        let mut w = World::default();
        w.live(1, 1, &[1]);
        w.used = vec![blob(1).id, blob(4).id];
        for p in [2, 3, 4, 5] {
            w.present.insert(pack(p), 500);
        }
        w.superseded.insert(file(7));
        // Due: packs 2 (unused), 3 (also in a waiting plan), 4 (blob 4 needed), 1 (live again).
        w.plan(
            hours_ago(3),
            &[7, 8],
            &[(2, &[2]), (3, &[3]), (4, &[4]), (1, &[])],
        );
        // Waiting for its grace period.
        w.plan(jiff::Timestamp::now(), &[], &[(3, &[3])]);
        let (d, report) = w.decide(1);
        assert_eq!(d.due_keys, vec!["plans/0".to_string()]);
        assert_eq!(d.plans_pending, 1);
        let deleted: Vec<PackId> = d.delete_packs.iter().map(|(p, _, _)| *p).collect();
        assert_eq!(deleted, vec![pack(2)]);
        assert_eq!(d.reindex.len(), 1);
        assert_eq!(d.reindex[0].0, pack(4));
        // Index file 7 is superseded, 8 is not: only 7 goes.
        assert_eq!(d.delete_files, vec![file(7)]);
        // Pack 5 is in no index or plan, and old: condemned as not indexed.
        assert_eq!(d.unindexed, vec![pack(5)]);
        assert_eq!(report.bytes_deleted, 500);
        let now: Vec<&str> = report
            .removals
            .iter()
            .filter(|r| r.when == "now")
            .map(|r| r.reason.as_str())
            .collect();
        assert_eq!(now, vec!["condemned", "superseded"]);
        assert_eq!(report.packs_reindexed, 1);
    }

    /// P4a: a young pack in no index is neither condemned nor deleted, whatever the grace.
    #[test]
    fn young_unindexed_packs_are_left_alone() {
        let mut w = World::default();
        w.present.insert(pack(1), 500);
        w.present.insert(pack(2), 500);
        w.young.insert(pack(1));
        w.young.insert(pack(2));
        // An old plan condemned pack 2 while it was in no index.
        w.plan(hours_ago(48), &[], &[(2, &[])]);
        let (d, report) = w.decide(0);
        assert!(d.unindexed.is_empty() && d.delete_packs.is_empty(), "{d:?}");
        assert_eq!(report.packs_condemned, 0);
        // Once old, both are removed: 1 condemned, 2 deleted by the due plan.
        w.young.clear();
        let (d, _) = w.decide(0);
        assert_eq!(d.unindexed, vec![pack(1)]);
        assert_eq!(d.delete_packs.len(), 1);
        assert!(d.writes_plan(d.unindexed.len()));
    }

    /// Staging leftovers go at a day old, never younger (a running write), nor from the future.
    #[test]
    fn staging_leftovers_go_only_once_a_day_old() {
        let now: jiff::Timestamp = "2026-01-10T12:00:00Z".parse().unwrap();
        let at = |s: &str| -> jiff::Timestamp { s.parse().unwrap() };
        let leftovers = vec![
            ("data/ab/a#1".to_string(), 10, at("2026-01-01T00:00:00Z")),
            ("data/ab/b#2".to_string(), 20, at("2026-01-09T12:00:00Z")),
            ("data/ab/c#3".to_string(), 30, at("2026-01-09T12:00:01Z")),
            ("index/d#4".to_string(), 40, at("2026-01-10T11:59:00Z")),
            ("config#5".to_string(), 50, at("2026-02-01T00:00:00Z")),
        ];
        let (stale, kept) = stale_staging(&leftovers, now);
        assert_eq!(
            stale,
            [
                ("data/ab/a#1".to_string(), 10),
                ("data/ab/b#2".to_string(), 20)
            ]
        );
        assert_eq!(kept, 3);
        assert_eq!(stale_staging(&[], now), (vec![], 0));
    }
}

//! `prune`: remove data that no snapshot needs, without ever making a backup wait.
//!
//! One pass, under the maintenance lease ([`crate::format::lease`]):
//!
//! 1. **Load** every snapshot, the index (live files and deletion plans) and the pack listing,
//!    all at once; if what was read does not hold together (a pack the index names not listed,
//!    a blob a snapshot reaches in no index, as a backup finishing meanwhile can cause), read
//!    again in order: snapshots, then index, then listing (docs/maintenance.md, P2, P2a).
//! 2. **Mark** every blob reachable from a snapshot, as one bit per index position.
//! 3. **Decide due plans** (phase 2): a plan whose index deadline is a grace period past has
//!    each pack deleted unless a live index lists it again, a plan not yet due also lists it, or a
//!    snapshot written since needs a blob whose only copy is in it (then it is re-indexed
//!    instead); its index files are deleted if a present index file supersedes them.
//! 4. **Condemn** (phase 1): packs no snapshot uses, packs whose unused share exceeds
//!    `max_unused` (their used blobs are first copied to new packs), and packs in no index.
//! 5. **Write** the new packs, then the new deletion plan, then (before the plan's index
//!    deadline) one index file that names the new packs, supersedes every index file naming a
//!    condemned pack and lists the packs re-indexed in step 3, and only then
//! 6. **Delete** what step 3 decided, checking the lease before every deletion.
//!
//! Steps 1 and 2 are `load` and `mark`, steps 3 and 4 the pure `plan`, steps 5 and 6
//! `execute`. Every step can be interrupted; the next prune finishes the job. Why this is safe
//! while backups run is argued in docs/maintenance.md. Memory: the index (about 52 bytes a blob), one
//! bit a blob for the marks, a small record per pack, and while repacking one run of used
//! neighbouring blobs (at most 8 MiB) per reading thread and the packs being written (two on
//! local disk, two per connection on an object store); with a zero grace period, the ids of
//! the reachable blobs (32 bytes each, at most 2^20 of them) kept for the second pass.

mod execute;
mod load;
mod mark;
mod plan;

pub use load::MIN_UNINDEXED_AGE;
pub use plan::STAGING_MIN_AGE;

use crate::error::{Error, Result};
use crate::format::id::{BlobId, PackId, SnapshotId};
use crate::format::key::ObjectClass;
use crate::repository::lease::{Claim, Lease, LeaseOptions};
use crate::repository::{BlobReader, Repository};
use crate::storage::Storage;
use coffer_crypto::MasterKeys;
use mark::Reachable;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How prune behaves.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Repack a pack when more than this fraction of its bytes is unused (0.0 to 1.0).
    pub max_unused: f64,
    /// Condemned objects are deleted by a prune that runs at least this long after they were
    /// condemned. Must exceed the longest backup. Zero deletes in the same run (only safe when
    /// no backup runs).
    pub grace: Duration,
    /// Decide and report, change nothing (no lease taken).
    pub dry_run: bool,
    pub lease: LeaseOptions,
    pub cancel: Arc<AtomicBool>,
    /// Counters a front end may read while the prune runs: the phase, and while repacking the
    /// blobs moved (of those to move) and their bytes.
    pub progress: Arc<crate::ops::progress::Progress>,
}

/// One object prune removes or would remove.
#[derive(Clone, Debug, Serialize)]
pub struct Removal {
    /// Storage key, e.g. `data/ab/ab12...`.
    pub object: String,
    pub bytes: u64,
    /// Why: `unused`, `repacked`, `not indexed`, `superseded`.
    pub reason: String,
    /// `now` (a due plan) or `after grace` (condemned by this run).
    pub when: &'static str,
}

/// What prune found and did (summed over its passes).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: usize,
    pub packs: usize,
    pub pack_bytes: u64,
    /// Blobs reachable from a snapshot.
    pub blobs_used: u64,
    /// Stored bytes of the reachable blobs.
    pub bytes_used: u64,
    pub packs_repacked: usize,
    pub blobs_repacked: u64,
    pub bytes_repacked: u64,
    pub packs_written: usize,
    /// Packs condemned by this run (deleted after the grace period).
    pub packs_condemned: usize,
    pub bytes_condemned: u64,
    pub index_files_superseded: usize,
    /// Packs of due plans that a snapshot still needed, put back into the index.
    pub packs_reindexed: usize,
    /// Deleted now (on a dry run: would be).
    pub packs_deleted: usize,
    pub index_files_deleted: usize,
    pub plans_carried_out: usize,
    /// Bytes freed by the deletions (or that would be, on a dry run).
    pub bytes_deleted: u64,
    /// Plans still waiting for their grace period.
    pub plans_pending: usize,
    pub removals: Vec<Removal>,
    /// Deletion plans that cannot be read, treated as absent (named, with why).
    pub warnings: Vec<String>,
    /// Staging files left by interrupted writes (local repositories), at least
    /// [`STAGING_MIN_AGE`] old, removed now (on a dry run: would be); also in `removals`.
    pub staging_removed: usize,
    pub staging_bytes: u64,
    /// Younger staging files, kept: a running write may still be filling one.
    pub staging_kept: usize,
    /// Packs that only checkpoint index files name, kept while under an hour old however
    /// unused: a running backup or copy may yet save a snapshot that needs them (P4b).
    pub packs_kept_young: usize,
}

/// Runs prune. With a zero grace period, a second pass carries out the plan the first wrote.
pub fn prune(repo: &Repository, options: &PruneOptions) -> Result<PruneReport> {
    prune_after(repo, options, || Ok(()))?.1
}

/// Runs `first` (forget's deletions, for `forget --prune`) and then prune, overlapping their
/// round trips: the maintenance lease is claimed while `first` runs, and the claim is
/// confirmed while the first pass lists and reads the snapshots (docs/maintenance.md, L2: those
/// reads start after our lease record is written, and are dropped if the claim is lost).
/// Returns `first`'s value and the prune's result; if `first` fails, that error, the claim
/// given up and nothing pruned.
pub fn prune_after<F: Send>(
    repo: &Repository,
    options: &PruneOptions,
    first: impl FnOnce() -> Result<F> + Send,
) -> Result<(F, Result<PruneReport>)> {
    if !(0.0..=1.0).contains(&options.max_unused) {
        return Err(Error::InvalidInput(format!(
            "max-unused must be between 0% and 100%, got {}",
            options.max_unused * 100.0
        )));
    }
    let mut report = PruneReport {
        dry_run: options.dry_run,
        ..PruneReport::default()
    };
    if options.dry_run {
        let first = first()?;
        let dry = pass(repo, None, options, &mut report, None, None)
            .and_then(|_| staging(repo, None, options, &mut report))
            .map(|()| report);
        return Ok((first, dry));
    }
    let (storage, keys) = (repo.storage(), repo.keys());
    let (first, claim) = std::thread::scope(|scope| {
        let claim = scope.spawn(|| Lease::claim(storage, keys, options.lease.clone()));
        let first = first();
        let claim = claim
            .join()
            .unwrap_or_else(|_| Err(Error::Locked("taking the lease failed".into())));
        (first, claim)
    });
    // If `first` failed, the claim is dropped here, which gives it up.
    let first = first?;
    Ok((first, prune_claimed(repo, options, claim, report)))
}

/// The prune proper, once the lease is claimed.
fn prune_claimed(
    repo: &Repository,
    options: &PruneOptions,
    claim: Result<Claim>,
    mut report: PruneReport,
) -> Result<PruneReport> {
    let (lease, read) = claim?.confirm_while(|| read_at_once(repo))?;
    let (wrote_plan, reachable) =
        pass(repo, Some(&lease), options, &mut report, None, Some(read?))?;
    if wrote_plan && options.grace.is_zero() {
        let mut second = PruneReport::default();
        pass(
            repo,
            Some(&lease),
            options,
            &mut second,
            reachable.as_ref(),
            None,
        )?;
        report.packs_reindexed += second.packs_reindexed;
        report.packs_deleted += second.packs_deleted;
        report.index_files_deleted += second.index_files_deleted;
        report.plans_carried_out += second.plans_carried_out;
        report.bytes_deleted += second.bytes_deleted;
        report.plans_pending = second.plans_pending;
        report.warnings = second.warnings;
        report.removals = second.removals;
    }
    staging(repo, Some(&lease), options, &mut report)?;
    lease.release()?;
    Ok(report)
}

/// What a pass reads before it decides anything: the snapshots' root trees, the index (live
/// files and deletion plans) and the pack listing.
struct Read {
    roots: Vec<(SnapshotId, BlobId)>,
    loaded: load::Loaded,
    listed: Vec<(PackId, u64, jiff::Timestamp)>,
    /// Read all at once ([`read_at_once`]): read again in order if it does not hold together.
    at_once: bool,
}

impl Read {
    /// Whether every pack a live index file names is in the pack listing. Read in order, a
    /// pack that is not is missing (P2); read at once, it may be a running backup's newest
    /// pack, listed before it was uploaded and named by an index file read after.
    fn listing_covers_index(&self) -> bool {
        let listed: HashSet<PackId> = self.listed.iter().map(|(id, _, _)| *id).collect();
        self.loaded
            .files
            .iter()
            .all(|(_, packs)| packs.iter().all(|p| listed.contains(p)))
    }
}

/// Reads the snapshots, the index (files and plans) and the pack listing all at once: their
/// listings in one round trip, their objects in the next, where reading them in order takes
/// five (docs/maintenance.md, P2a). Made afresh, not from listings this handle made before.
/// What is read this way may not hold together: a backup that finished meanwhile may show its
/// snapshot but not its index file, or its index file but not its newest pack. [`pass`]
/// checks both (a blob a snapshot needs in no index, a pack the index names not listed) and
/// then reads again in order ([`read_in_order`]) before it decides anything.
fn read_at_once(repo: &Repository) -> Result<Read> {
    let (storage, keys) = (repo.storage(), repo.keys());
    storage.forget_listings();
    std::thread::scope(|scope| {
        let listed = scope.spawn(|| repo.list_packs_with_times());
        let loaded = scope.spawn(|| load::load(storage, keys));
        let roots = load::snapshot_roots(storage, keys);
        let listed = listed
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let loaded = loaded
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        Ok(Read {
            roots: roots?,
            loaded: loaded?,
            listed: listed?,
            at_once: true,
        })
    })
}

/// Reads the snapshots, then the index, then the pack listing (P2): every snapshot seen has its
/// blobs in the index loaded after it, and every pack that index names is in the listing made
/// after it, unless the pack is missing.
fn read_in_order(repo: &Repository) -> Result<Read> {
    let (storage, keys) = (repo.storage(), repo.keys());
    let roots = snapshots_and_plans(storage, keys)?;
    let loaded = load::load(storage, keys)?;
    let listed = repo.list_packs_with_times()?;
    Ok(Read {
        roots,
        loaded,
        listed,
        at_once: false,
    })
}

/// Marks every blob the snapshots of `read` reach: from the trees, or, when `before` (the
/// first pass of a zero-grace prune) found the same snapshots, from its list of their blobs.
/// Refuses (`Error::Missing`) if one is in no index.
fn mark_reachable(
    repo: &Repository,
    read: &Read,
    before: Option<&Reachable>,
    cancel: &AtomicBool,
) -> Result<mark::Marks> {
    let same_snapshots = before.filter(|b| {
        let mut now = read.roots.clone();
        now.sort();
        b.roots == now
    });
    match same_snapshots {
        Some(b) => b.mark(&read.loaded.index, cancel),
        None => {
            let index = &read.loaded.index;
            let reader =
                BlobReader::new(repo.storage(), repo.keys(), index, repo.config().pack_size);
            mark::mark(&reader, &read.roots, cancel)
        }
    }
}

/// The first step of reading in order: the snapshots' root trees, each listing made afresh (not from
/// listings this handle made before, such as forget's or the first pass's). Deletion plans
/// are written only under the lease, so their listing may be made at any point of the pass: it
/// is made beside the snapshots' (one round trip less on an object store), remembered, and
/// used when the plans are loaded.
fn snapshots_and_plans(storage: &Storage, keys: &MasterKeys) -> Result<Vec<(SnapshotId, BlobId)>> {
    storage.forget_listings();
    std::thread::scope(|scope| {
        let plans = scope.spawn(|| storage.list(ObjectClass::Plan.dir()));
        let roots = load::snapshot_roots(storage, keys);
        // A failed listing is not remembered: the plans are listed again when loaded, and the
        // failure reported then.
        let _ = plans.join();
        roots
    })
}

/// Removes the staging files interrupted writes left that are old enough
/// ([`plan::stale_staging`]), checking the lease before each deletion (a dry run, without a
/// lease, only counts them), and reports them as removals.
fn staging(
    repo: &Repository,
    lease: Option<&Lease>,
    options: &PruneOptions,
    report: &mut PruneReport,
) -> Result<()> {
    let storage = repo.storage();
    let leftovers: Vec<(String, u64, jiff::Timestamp)> = storage
        .staging_leftovers()?
        .into_iter()
        .map(|o| (o.key, o.size, o.modified))
        .collect();
    let (stale, kept) = plan::stale_staging(&leftovers, jiff::Timestamp::now());
    report.staging_kept = kept;
    for (key, size) in stale {
        if !options.dry_run {
            if options.cancel.load(Ordering::SeqCst) {
                return Err(Error::Interrupted);
            }
            if let Some(lease) = lease {
                lease.check()?;
            }
            storage.delete_staging(&key)?;
        }
        report.staging_removed += 1;
        report.staging_bytes += size;
        report.removals.push(Removal {
            object: key,
            bytes: size,
            reason: "staging leftover".into(),
            when: "now",
        });
    }
    Ok(())
}

/// One pass: read, mark, decide (pure, [`plan::decide`]), then carry out. Returns whether it
/// wrote a deletion plan and, when it did and a second pass follows (zero grace), what it found
/// reachable. `before` is what the pass before found: if the snapshots are the same, their blobs
/// are marked without reading the trees again. `read` is what was read while the lease was
/// confirmed (the first pass), else the pass reads it.
fn pass(
    repo: &Repository,
    lease: Option<&Lease>,
    options: &PruneOptions,
    report: &mut PruneReport,
    before: Option<&Reachable>,
    read: Option<Read>,
) -> Result<(bool, Option<Reachable>)> {
    let (storage, keys) = (repo.storage(), repo.keys());
    let cancel = &options.cancel;
    // Read at once, then checked: what does not hold together is read again in order, and only
    // what holds together is decided on (docs/maintenance.md, P2 and P2a).
    let mut read = match read {
        Some(read) => read,
        None => read_at_once(repo)?,
    };
    if read.at_once && !read.listing_covers_index() {
        read = read_in_order(repo)?;
    }
    let marks = match mark_reachable(repo, &read, before, cancel) {
        Err(Error::Missing { .. }) if read.at_once => {
            read = read_in_order(repo)?;
            mark_reachable(repo, &read, before, cancel)?
        }
        marks => marks?,
    };
    let Read {
        roots,
        loaded,
        listed,
        ..
    } = read;
    report.snapshots = roots.len();
    report.warnings.clone_from(&loaded.damaged_plans);
    let reader = BlobReader::new(storage, keys, &loaded.index, repo.config().pack_size);
    let present: HashMap<PackId, u64> = listed.iter().map(|(id, size, _)| (*id, *size)).collect();
    // Packs too young to be condemned or deleted while no index names them: a running
    // backup's fresh packs, whatever the grace period (P4a).
    let listed_at = jiff::Timestamp::now();
    let young: HashSet<PackId> = listed
        .iter()
        .filter(|(_, _, modified)| !load::old_enough_unindexed(*modified, listed_at))
        .map(|(id, _, _)| *id)
        .collect();
    report.packs = present.len();
    report.pack_bytes = present.values().sum();
    let facts = plan::Facts {
        index: &loaded.index,
        marks: &marks,
        files: &loaded.files,
        superseded: &loaded.superseded,
        plans: &loaded.plans,
        blob_bytes: &loaded.blob_bytes,
        present: &present,
        young: &young,
        checkpoint_only: &loaded.checkpoint_only,
    };
    let rules = plan::Rules {
        max_unused: options.max_unused,
        grace: jiff::SignedDuration::try_from(options.grace)
            .map_err(|e| Error::InvalidInput(format!("grace period: {e}")))?,
        now: jiff::Timestamp::now(),
    };
    let mut decisions = plan::decide(&facts, &rules)?;
    plan::account(&facts, &decisions, report);
    let deletions = execute::Deletions {
        packs: std::mem::take(&mut decisions.delete_packs),
        files: std::mem::take(&mut decisions.delete_files),
        plans: std::mem::take(&mut decisions.due_keys),
    };
    if options.dry_run {
        report.packs_deleted = deletions.packs.len();
        report.index_files_deleted = deletions.files.len();
        report.plans_carried_out = deletions.plans.len();
        return Ok((false, None));
    }
    if cancel.load(Ordering::SeqCst) {
        return Err(Error::Interrupted);
    }
    let writes = execute::writes(repo, &decisions, &present)?;
    // P5: the new packs and the plan, both before the index file. With a grace period the plan
    // follows the packs, since its index deadline (P6) runs from when it is written; with none
    // there is no deadline, and the plan is written while the packs are.
    let (repacked, deadline) = if options.grace.is_zero() {
        std::thread::scope(|scope| {
            let plan =
                scope.spawn(|| execute::write_plan(repo, lease, &decisions, &writes, options));
            let repacked = execute::repack(repo, &reader, &marks, &decisions, options);
            let plan = plan.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            Ok::<_, Error>((repacked?, plan?))
        })?
    } else {
        let repacked = execute::repack(repo, &reader, &marks, &decisions, options)?;
        let deadline = execute::write_plan(repo, lease, &decisions, &writes, options)?;
        (repacked, deadline)
    };
    report.packs_written += repacked.len();
    let wrote_plan =
        execute::write_index(repo, lease, decisions, writes, deadline, repacked, options)?;
    execute::delete(repo, lease, &deletions, report)?;
    let reachable = if wrote_plan && options.grace.is_zero() {
        Reachable::collect(roots, &loaded.index, &marks)
    } else {
        None
    };
    Ok((wrote_plan, reachable))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::IndexId;
    use crate::format::index::{IndexFile, MasterIndex};
    use crate::format::pack;
    use crate::format::plan::{self, DeletionPlan};
    use crate::repository::writer::BlobWriter;
    use crate::storage::Storage;

    fn repo() -> Repository {
        crate::repository::test_repo()
    }

    fn options(grace_secs: u64) -> PruneOptions {
        let mut lease = LeaseOptions::new("prune", "test-host");
        lease.refresh = Duration::from_secs(3600);
        PruneOptions {
            max_unused: 0.05,
            grace: Duration::from_secs(grace_secs),
            dry_run: false,
            lease,
            cancel: Arc::new(AtomicBool::new(false)),
            progress: Arc::default(),
        }
    }

    fn stream(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (state ^ (state >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn backup_stream(repo: &Repository, data: Vec<u8>) -> crate::format::id::SnapshotId {
        use crate::ops::backup::{backup, BackupOptions, Source, SourceInput, StreamSource};
        let mut opts = BackupOptions::new(Vec::new());
        opts.sources = vec![Source {
            name: None,
            input: SourceInput::Stream {
                tree_name: "a.bin".into(),
                stream: StreamSource::Reader(Box::new(std::io::Cursor::new(data))),
                dump_chunking: false,
            },
        }];
        opts.hostname = "h".into();
        backup(repo, opts).unwrap().id.unwrap()
    }

    /// A store whose next listing of a directory can be made to come back empty, as one made
    /// at the same moment as other readings can miss what was written just after it; counts
    /// the listings of each directory.
    #[derive(Default)]
    struct ListsEarly {
        inner: crate::storage::memory::MemoryBackend,
        early: std::sync::Mutex<HashSet<String>>,
        listed: std::sync::Mutex<HashMap<String, usize>>,
    }

    impl ListsEarly {
        fn next_listing_empty(&self, dir: &str) {
            self.early.lock().unwrap().insert(dir.to_string());
        }
        fn listings(&self, dir: &str) -> usize {
            self.listed.lock().unwrap().get(dir).copied().unwrap_or(0)
        }
    }

    impl crate::storage::backend::Backend for ListsEarly {
        fn put_new(&self, key: &str, bytes: bytes::Bytes) -> Result<()> {
            self.inner.put_new(key, bytes)
        }
        fn get(&self, what: &'static str, key: &str) -> Result<bytes::Bytes> {
            self.inner.get(what, key)
        }
        fn get_bounded(
            &self,
            what: &'static str,
            key: &str,
            max: u64,
            known_size: Option<u64>,
        ) -> Result<bytes::Bytes> {
            self.inner.get_bounded(what, key, max, known_size)
        }
        fn get_range(
            &self,
            what: &'static str,
            key: &str,
            range: std::ops::Range<u64>,
        ) -> Result<bytes::Bytes> {
            self.inner.get_range(what, key, range)
        }
        fn size(&self, key: &str) -> Result<Option<u64>> {
            self.inner.size(key)
        }
        fn list(&self, dir: &str) -> Result<Vec<crate::storage::backend::ObjectInfo>> {
            *self
                .listed
                .lock()
                .unwrap()
                .entry(dir.to_string())
                .or_default() += 1;
            if self.early.lock().unwrap().remove(dir) {
                return Ok(Vec::new());
            }
            self.inner.list(dir)
        }
        fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key)
        }
    }

    /// Two snapshots, the first forgotten, in a repository behind [`ListsEarly`].
    fn forgotten_first() -> (Arc<ListsEarly>, Repository) {
        let store = Arc::new(ListsEarly::default());
        let storage = Storage::from_backend(
            store.clone(),
            crate::storage::StoreKind::Memory,
            "memory://",
        );
        let repo = Repository::init(storage, b"pw", &crate::repository::test_options()).unwrap();
        let first = backup_stream(&repo, stream(1, 4 << 20));
        let repo = Repository::open(repo.storage().clone(), b"pw").unwrap();
        backup_stream(&repo, stream(2, 4 << 20));
        repo.storage()
            .delete(&format!("snapshots/{}", first.to_hex()))
            .unwrap();
        (store, repo)
    }

    /// After the prune: the kept snapshot is whole and only its packs are left.
    fn assert_pruned_and_whole(repo: &Repository, report: &PruneReport) {
        assert_eq!(report.snapshots, 1);
        assert!(report.packs_deleted > 0, "{report:?}");
        let repo = Repository::open(repo.storage().clone(), b"pw").unwrap();
        let checked = crate::ops::check::check(
            &repo,
            &crate::ops::check::CheckOptions {
                read_data: crate::ops::check::ReadData::All,
                cancel: Arc::default(),
            },
        )
        .unwrap();
        assert!(checked.errors.is_empty(), "{:?}", checked.errors);
        assert!(checked.damaged_snapshots.is_empty());
        assert_eq!(checked.snapshots, 1);
    }

    /// Read at once, the pack listing can miss packs an index file read at the same moment
    /// names (a backup that finished meanwhile): prune reads again in order instead of taking
    /// them for missing and refusing (P2a).
    #[test]
    fn packs_missing_from_a_listing_made_at_once_are_read_again_in_order() {
        let (store, repo) = forgotten_first();
        let before = store.listings("data");
        store.next_listing_empty("data");
        let report = prune(&repo, &options(0)).unwrap();
        // The first pass listed the packs twice (at once, then in order), the second once.
        assert_eq!(store.listings("data") - before, 3);
        assert_pruned_and_whole(&repo, &report);
    }

    /// Read at once, the snapshots can be read while the index files that hold their blobs are
    /// not yet listed: prune reads again in order instead of refusing (P2a).
    #[test]
    fn snapshots_read_before_their_index_at_once_are_read_again_in_order() {
        let (store, repo) = forgotten_first();
        let before = store.listings("index");
        store.next_listing_empty("index");
        let report = prune(&repo, &options(0)).unwrap();
        assert_eq!(store.listings("index") - before, 3);
        assert_pruned_and_whole(&repo, &report);
    }

    /// A reading that holds together is not read again: each pass lists each directory once.
    #[test]
    fn a_reading_at_once_that_holds_together_is_all_a_pass_reads() {
        let (store, repo) = forgotten_first();
        let dirs = ["data", "index", "snapshots", "plans"];
        let before = dirs.map(|dir| store.listings(dir));
        let report = prune(&repo, &options(0)).unwrap();
        for (dir, before) in dirs.iter().zip(before) {
            assert_eq!(
                store.listings(dir) - before,
                2,
                "{dir} listed once per pass"
            );
        }
        assert_pruned_and_whole(&repo, &report);
    }

    /// Repacking counts its blobs and bytes for a progress display, out of totals it knows
    /// before it starts.
    #[test]
    fn repacking_reports_its_progress() {
        let repo = repo();
        let mut both = stream(1, 8 << 20);
        both.extend(stream(2, 4 << 20));
        let first = backup_stream(&repo, both);
        // A new handle, as the next `coffer backup` would open: it sees the first one's index.
        let repo = Repository::open(repo.storage().clone(), b"pw").unwrap();
        let mut shared = stream(1, 8 << 20);
        shared.extend(stream(3, 1 << 20));
        backup_stream(&repo, shared);
        // The first snapshot forgotten: its second half's blobs share packs with live ones.
        repo.storage()
            .delete(&format!("snapshots/{}", first.to_hex()))
            .unwrap();
        let repo = Repository::open(repo.storage().clone(), b"pw").unwrap();
        let packs_before: HashSet<PackId> = repo
            .list_packs_with_times()
            .unwrap()
            .into_iter()
            .map(|(id, _, _)| id)
            .collect();
        let mut opts = options(0);
        opts.max_unused = 0.0;
        let report = prune(&repo, &opts).unwrap();
        assert!(report.packs_written > 0, "{report:?}");
        // P5: the new packs are named by the one index file that supersedes the repacked
        // packs' files, not by an index file of their own.
        let (storage, keys) = (repo.storage(), repo.keys());
        let naming_new: Vec<IndexFile> = IndexFile::list_ids_newest_first(storage)
            .unwrap()
            .iter()
            .map(|id| IndexFile::load(storage, keys, id).unwrap())
            .filter(|f| f.packs.iter().any(|(p, _)| !packs_before.contains(p)))
            .collect();
        assert_eq!(naming_new.len(), 1);
        assert!(!naming_new[0].supersedes.is_empty());
        let p = opts.progress.read();
        assert_eq!(p.current, "repacking");
        assert!(p.files_done > 0, "{p:?}");
        assert_eq!(Some(p.files_done), p.total_files, "{p:?}");
        assert_eq!(Some(p.bytes_done), p.total_bytes, "{p:?}");
    }

    /// D1: a pack listed by a due plan and by one not yet due waits for the younger one; and
    /// D3: an index file in a due plan that nothing supersedes is kept.
    #[test]
    fn a_pack_waits_for_every_plan_that_lists_it() {
        let repo = repo();
        let (storage, keys) = (repo.storage(), repo.keys());
        let writer = BlobWriter::new(&repo, 1, Arc::new(AtomicBool::new(false))).unwrap();
        let mut compressor = writer.compressor();
        writer
            .store(
                &mut compressor,
                crate::format::compress::BlobClass::FileData,
                b"no snapshot needs this",
            )
            .unwrap();
        let written = writer.finish().unwrap();
        let (pack, blobs) = written.packs[0].clone();
        let index_id = written.index.unwrap();
        let key = pack::pack_key(&pack);
        // The pack leaves the live index, as a prune's superseding index would make it.
        IndexFile {
            supersedes: vec![index_id],
            packs: vec![],
        }
        .save(storage, keys)
        .unwrap();
        let hours_ago = |h: i64| {
            jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_hours(h))
                .unwrap()
        };
        let plan = |at: jiff::Timestamp, files: Vec<IndexId>| DeletionPlan {
            created: at,
            index_deadline: at,
            index_files: files,
            packs: vec![(pack, blobs.clone())],
        };
        plan(hours_ago(3), vec![index_id])
            .save(storage, keys)
            .unwrap();
        plan(jiff::Timestamp::now(), vec![])
            .save(storage, keys)
            .unwrap();
        // The pending pack is still readable for restores.
        let index = MasterIndex::load(storage, keys).unwrap();
        assert!(index.get(&blobs[0].id).is_some() && !index.contains(&blobs[0].id));

        let report = prune(&repo, &options(3600)).unwrap();
        assert_eq!(report.packs_deleted, 0, "{report:?}");
        assert_eq!(report.plans_carried_out, 1);
        assert_eq!(report.plans_pending, 1);
        assert!(storage.size(&key).unwrap().is_some());
        // The superseded index file in the due plan went; the plan that waits keeps the pack.
        assert_eq!(report.index_files_deleted, 1);

        // Once every plan listing it is due, it goes.
        let report = prune(&repo, &options(0)).unwrap();
        assert_eq!(report.packs_deleted, 1, "{report:?}");
        assert!(storage.size(&key).unwrap().is_none());
        assert!(plan::DeletionPlan::load_all(storage, keys)
            .unwrap()
            .good
            .is_empty());
    }

    /// D1: a pack still in the live index is never deleted, even if a due plan lists it (a
    /// prune that stopped between its plan and its index); P6's index file of a due plan that
    /// nothing supersedes stays.
    #[test]
    fn a_due_plan_never_deletes_what_the_live_index_still_names() {
        let repo = repo();
        let (storage, keys) = (repo.storage(), repo.keys());
        let writer = BlobWriter::new(&repo, 1, Arc::new(AtomicBool::new(false))).unwrap();
        let mut compressor = writer.compressor();
        writer
            .store(
                &mut compressor,
                crate::format::compress::BlobClass::FileData,
                b"still indexed",
            )
            .unwrap();
        let written = writer.finish().unwrap();
        let (pack, blobs) = written.packs[0].clone();
        let index_id = written.index.unwrap();
        let long_ago = jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_hours(48))
            .unwrap();
        DeletionPlan {
            created: long_ago,
            index_deadline: long_ago,
            index_files: vec![index_id],
            packs: vec![(pack, blobs)],
        }
        .save(storage, keys)
        .unwrap();
        let report = prune(&repo, &options(3600)).unwrap();
        assert_eq!(report.packs_deleted, 0, "{report:?}");
        assert_eq!(report.index_files_deleted, 0);
        assert!(storage.size(&pack::pack_key(&pack)).unwrap().is_some());
        // It is unused, so this run condemned it afresh in a new plan.
        assert_eq!(report.packs_condemned, 1);
        assert_eq!(report.plans_carried_out, 1);
    }

    /// Issue 13 item 5: a pack that no index names is a running backup's until it is an hour
    /// old by its storage time, so even `--grace 0s` neither condemns nor deletes it; once it
    /// is older, a zero-grace prune removes it in the same run.
    #[test]
    fn a_young_unindexed_pack_survives_a_zero_grace_prune() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().to_str().unwrap();
        let repo = Repository::init(
            Storage::open(location, crate::storage::OpenMode::Create).unwrap(),
            b"pw",
            &crate::repository::test_options(),
        )
        .unwrap();
        let writer = BlobWriter::new(&repo, 1, Arc::new(AtomicBool::new(false))).unwrap();
        let mut compressor = writer.compressor();
        writer
            .store(
                &mut compressor,
                crate::format::compress::BlobClass::FileData,
                b"a running backup's blob",
            )
            .unwrap();
        let written = writer.finish().unwrap();
        let (pack, _) = written.packs[0].clone();
        // As before the backup writes its index: the pack is in no index.
        repo.storage()
            .delete(&format!("index/{}", written.index.unwrap()))
            .unwrap();
        let key = pack::pack_key(&pack);

        let report = prune(&repo, &options(0)).unwrap();
        assert_eq!(report.packs_condemned, 0, "{report:?}");
        assert_eq!(report.packs_deleted, 0, "{report:?}");
        assert!(repo.storage().size(&key).unwrap().is_some());
        let plans = plan::DeletionPlan::load_all(repo.storage(), repo.keys()).unwrap();
        assert!(plans.good.is_empty() && plans.damaged.is_empty());

        // Two hours later (by its modification time) it is anybody's leftover: removed at once.
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join(&key))
            .unwrap();
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        drop(file);
        let report = prune(&repo, &options(0)).unwrap();
        assert_eq!(report.packs_deleted, 1, "{report:?}");
        assert!(repo.storage().size(&key).unwrap().is_none());
    }

    /// Issue 17 item 5: prune removes staging files left by interrupted writes once they are a
    /// day old (a dry run only says it would), keeps younger ones, and reports both.
    #[test]
    fn prune_removes_day_old_staging_leftovers_and_keeps_fresh_ones() {
        let dir = tempfile::tempdir().unwrap();
        let location = dir.path().to_str().unwrap();
        let repo = Repository::init(
            Storage::open(location, crate::storage::OpenMode::Create).unwrap(),
            b"pw",
            &crate::repository::test_options(),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("data/ab")).unwrap();
        let old = dir.path().join("data/ab/abcd#123");
        let fresh = dir.path().join("data/ab/abce#456");
        std::fs::write(&old, vec![7u8; 1000]).unwrap();
        std::fs::write(&fresh, vec![7u8; 500]).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(25 * 3600))
            .unwrap();

        let mut dry = options(3600);
        dry.dry_run = true;
        let report = prune(&repo, &dry).unwrap();
        assert_eq!(
            (
                report.staging_removed,
                report.staging_bytes,
                report.staging_kept
            ),
            (1, 1000, 1),
            "{report:?}"
        );
        assert!(report
            .removals
            .iter()
            .any(|r| r.object == "data/ab/abcd#123" && r.reason == "staging leftover"));
        assert!(old.exists() && fresh.exists());

        let report = prune(&repo, &options(3600)).unwrap();
        assert_eq!(
            (
                report.staging_removed,
                report.staging_bytes,
                report.staging_kept
            ),
            (1, 1000, 1),
            "{report:?}"
        );
        assert!(!old.exists() && fresh.exists());
        let report = prune(&repo, &options(3600)).unwrap();
        assert_eq!((report.staging_removed, report.staging_kept), (0, 1));
    }
}

//! Every operation through a store that fails the way real stores fail ([`FaultyBackend`]):
//! requests that fail, writes that take effect and then report failure, short reads, flipped
//! bits, listings that miss recent objects, deletes that fail. Each seeded round runs backups
//! of a changing tree, restores, forget + prune, check, copy (to a second faulty repository)
//! and drill with faults on; every run must end in
//! success or a clear error (never a panic, never an internal error). Then, with faults off,
//! `check --read-data` must find no damage and every snapshot must restore: each one a backup
//! reported saved exactly as its tree was.
//!
//! `COFFER_FAULT_ROUNDS=N` runs N rounds (default 12); `COFFER_FAULT_SEED` starts elsewhere.

use coffer_repo::ops::backup::{backup, BackupOptions};
use coffer_repo::ops::check::{check, CheckOptions, ReadData};
use coffer_repo::ops::copy::{copy, CopyOptions};
use coffer_repo::ops::drill::{drill, DrillOptions};
use coffer_repo::ops::forget::{forget, ForgetOptions};
use coffer_repo::ops::prune::{prune, PruneOptions};
use coffer_repo::ops::restore::{restore, RestoreOptions};
use coffer_repo::repository::lease::LeaseOptions;
use coffer_repo::retention::{GroupBy, KeepCount, Policy};
use coffer_repo::storage::faulty::{FaultPlan, FaultyBackend, Injected};
use coffer_repo::storage::memory::MemoryBackend;
use coffer_repo::{Error, InitOptions, KdfParams, Repository, SnapshotId, Storage, StoreKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

const PASSWORD: &[u8] = b"fault injection";

type Contents = BTreeMap<PathBuf, Vec<u8>>;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The plan of round `seed`: each kind of fault on in some rounds, at rates that let most
/// operations through.
fn plan_for(seed: u64) -> FaultPlan {
    let mut r = Rng(seed);
    let stale = if r.below(3) == 0 {
        1 + r.below(4) as usize
    } else {
        0
    };
    let mut share = |max: f64| {
        if r.below(2) == 0 {
            0.0
        } else {
            (r.below(1000) as f64 / 1000.0) * max
        }
    };
    FaultPlan {
        seed,
        fail_share: share(0.08),
        fail_after_put_share: share(0.05),
        fail_nth: None,
        delay: None,
        truncate_share: share(0.03),
        flip_share: share(0.03),
        stale_listing: stale,
        fail_delete_share: share(0.2),
    }
}

/// Changes the tree: new files, rewritten files, removed files.
fn mutate(root: &Path, rng: &mut Rng, contents: &mut Contents) {
    for _ in 0..1 + rng.below(6) {
        let name = PathBuf::from(format!("d{}/f{}", rng.below(3), rng.below(12)));
        match rng.below(4) {
            0 if contents.contains_key(&name) => {
                std::fs::remove_file(root.join(&name)).unwrap();
                contents.remove(&name);
            }
            _ => {
                let len = match rng.below(5) {
                    0 => 0,
                    1 => 3 << 20,
                    _ => rng.below(200_000) as usize,
                };
                let data = rng.bytes(len);
                std::fs::create_dir_all(root.join(&name).parent().unwrap()).unwrap();
                std::fs::write(root.join(&name), &data).unwrap();
                contents.insert(name, data);
            }
        }
    }
}

/// How many runs of each operation succeeded and failed, over all rounds (for the report).
static TALLY: std::sync::Mutex<BTreeMap<(&'static str, bool), u64>> =
    std::sync::Mutex::new(BTreeMap::new());

fn tally(op: &'static str, ok: bool) {
    *TALLY.lock().unwrap().entry((op, ok)).or_default() += 1;
}

/// A failed operation's error must be a clear one: never an internal error (a bug).
fn clear(step: &'static str, e: &Error) {
    tally(step, false);
    let msg = e.to_string();
    assert!(!msg.is_empty(), "{step}: empty error");
    assert!(!matches!(e, Error::Internal(_)), "{step}: {msg}");
}

fn read_tree(root: &Path) -> Contents {
    let mut out = Contents::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

/// Opens the repository as a new command would: with listings fetched afresh.
fn open(storage: &Storage) -> Result<Repository, Error> {
    storage.forget_listings();
    Repository::open(storage.clone(), PASSWORD)
}

/// A new repository in memory behind a faulty store (faults on once it is made).
fn faulty_repository(plan: FaultPlan, name: &str) -> (Arc<FaultyBackend>, Storage) {
    let faulty = Arc::new(FaultyBackend::new(Arc::new(MemoryBackend::new()), plan));
    let storage = Storage::from_backend(faulty.clone(), StoreKind::Memory, name);
    faulty.set_enabled(false);
    let init = InitOptions {
        kdf: KdfParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    };
    Repository::init(storage.clone(), PASSWORD, &init).unwrap();
    faulty.set_enabled(true);
    (faulty, storage)
}

fn round(seed: u64) -> Injected {
    let (faulty, storage) = faulty_repository(plan_for(seed), "memory://faulty");
    // The target of `copy`, failing by a plan of its own.
    let (faulty_copy, copy_storage) =
        faulty_repository(plan_for(seed ^ 0xc0), "memory://faulty-copy");

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = Rng(seed.wrapping_mul(31));
    let mut contents = Contents::new();
    // Snapshot id -> the tree it holds, for every backup reported saved.
    let mut saved: BTreeMap<SnapshotId, Contents> = BTreeMap::new();
    let cancel = AtomicBool::new(false);

    for step in 0..10 {
        mutate(&src, &mut rng, &mut contents);
        let repo = match open(&storage) {
            Ok(repo) => repo,
            Err(e) => {
                clear("open", &e);
                continue;
            }
        };
        match rng.below(7) {
            0..=2 => match backup(&repo, BackupOptions::new(vec![src.clone()])) {
                Ok(report) => {
                    tally("backup", true);
                    saved.insert(report.id.unwrap(), contents.clone());
                }
                Err(e) => clear("backup", &e),
            },
            3 => {
                let options = ForgetOptions {
                    policy: Policy {
                        last: Some(KeepCount::N(2)),
                        ..Policy::default()
                    },
                    group_by: GroupBy::default(),
                    timezone: jiff::tz::TimeZone::UTC,
                    dry_run: false,
                };
                match forget(&repo, &options) {
                    Ok(_) => tally("forget", true),
                    Err(e) => clear("forget", &e),
                }
                let options = PruneOptions {
                    max_unused: 0.0,
                    grace: Duration::ZERO,
                    dry_run: false,
                    lease: LeaseOptions {
                        operation: "prune".into(),
                        hostname: "faults".into(),
                        lifetime: Duration::from_secs(1),
                        refresh: Duration::from_millis(300),
                    },
                    cancel: Arc::new(AtomicBool::new(false)),
                    progress: Arc::default(),
                };
                if let Err(e) = prune(&repo, &options).map(|_| tally("prune", true)) {
                    clear("prune", &e);
                    // A lease left behind by a failed release expires; wait it out so that
                    // later prunes are not refused for the rest of the round.
                    std::thread::sleep(Duration::from_millis(1100));
                }
            }
            4 => {
                let options = CheckOptions {
                    read_data: ReadData::All,
                    cancel: Arc::new(AtomicBool::new(false)),
                };
                match check(&repo, &options) {
                    Ok(_) => tally("check", true),
                    Err(e) => clear("check", &e),
                }
            }
            5 => match open(&copy_storage) {
                Ok(mut target) => {
                    let options = CopyOptions {
                        index_every_packs: 1,
                        ..CopyOptions::default()
                    };
                    match copy(&repo, &mut target, &options) {
                        Ok(_) => tally("copy", true),
                        Err(e) => clear("copy", &e),
                    }
                }
                Err(e) => clear("open the copy", &e),
            },
            _ => drill_newest(&repo, dir.path(), &saved),
        }
        if let Some((id, want)) = saved.iter().next_back() {
            let all = coffer_repo::Snapshot::load_all(repo.storage(), repo.keys());
            if let Ok(snap) = all.and_then(|a| a.resolve(&id.to_hex()).map(|(_, s)| s.clone())) {
                let target = dir.path().join(format!("restore-{step}"));
                let opts = RestoreOptions {
                    target: target.clone(),
                    ..RestoreOptions::default()
                };
                match restore(&repo, &snap, &opts, &cancel) {
                    // A restore that succeeds through faults restored the truth.
                    Ok(_) => {
                        tally("restore", true);
                        assert_eq!(&restored(&target, &src), want)
                    }
                    Err(e) => clear("restore", &e),
                }
            }
        }
    }

    // Faults off: both repositories are whole, and every snapshot restores as it was saved.
    faulty.set_enabled(false);
    faulty_copy.set_enabled(false);
    let injected = faulty.injected();
    verify(seed, &copy_storage, dir.path(), &src, &BTreeMap::new());
    verify(seed, &storage, dir.path(), &src, &saved);
    injected
}

/// Drills the newest saved snapshot, recording its result (a drill result object beside it;
/// the snapshot keeps its id).
fn drill_newest(repo: &Repository, scratch: &Path, saved: &BTreeMap<SnapshotId, Contents>) {
    let Some(id) = saved.keys().next_back().copied() else {
        return;
    };
    let snapshots = match coffer_repo::Snapshot::load_all(repo.storage(), repo.keys()) {
        Ok(all) => all,
        Err(e) => return clear("drill: listing", &e),
    };
    let Some((_, snap)) = snapshots.good.iter().find(|(i, _)| *i == id) else {
        return;
    };
    let options = DrillOptions {
        scratch_parent: Some(scratch.to_path_buf()),
        record: true,
        hostname: "faults".into(),
        ..DrillOptions::default()
    };
    let mut connect =
        |_: &_| -> Result<_, Error> { Err(Error::InvalidInput("no database in this test".into())) };
    match drill(
        repo,
        &id,
        snap,
        &options,
        &mut connect,
        &AtomicBool::new(false),
    ) {
        Ok(report) => tally("drill", report.ok),
        Err(e) => clear("drill", &e),
    }
}

/// With faults off: `check --read-data` finds no damage, and every snapshot restores, exactly
/// as saved where the test knows what was saved.
fn verify(
    seed: u64,
    storage: &Storage,
    scratch: &Path,
    src: &Path,
    saved: &BTreeMap<SnapshotId, Contents>,
) {
    let repo = open(storage).unwrap();
    let report = check(
        &repo,
        &CheckOptions {
            read_data: ReadData::All,
            cancel: Arc::new(AtomicBool::new(false)),
        },
    )
    .unwrap();
    assert!(
        report.errors.is_empty() && report.damaged_snapshots.is_empty(),
        "seed {seed}: check of {} found damage: {:?}",
        storage.location(),
        report.errors
    );
    let all = coffer_repo::Snapshot::load_all(repo.storage(), repo.keys()).unwrap();
    assert!(all.damaged.is_empty(), "seed {seed}: {:?}", all.damaged);
    let cancel = AtomicBool::new(false);
    for (id, snap) in &all.good {
        let target = scratch.join(format!("final-{}", id.to_hex()));
        let opts = RestoreOptions {
            target: target.clone(),
            ..RestoreOptions::default()
        };
        restore(&repo, snap, &opts, &cancel)
            .unwrap_or_else(|e| panic!("seed {seed}: snapshot {id:?} does not restore: {e}"));
        // A snapshot whose save was reported as failed (its write took effect, then timed out)
        // has no recorded tree; every other one must be exactly what was saved.
        if let Some(want) = saved.get(id) {
            assert_eq!(
                &restored(&target, src),
                want,
                "seed {seed}: snapshot {id:?}"
            );
        }
    }
}

fn restored(target: &Path, src: &Path) -> Contents {
    let inside = target.join(src.strip_prefix("/").unwrap());
    if inside.exists() {
        read_tree(&inside)
    } else {
        Contents::new()
    }
}

#[test]
fn every_operation_through_a_faulty_store_succeeds_or_fails_clearly_and_loses_nothing() {
    let rounds: u64 = std::env::var("COFFER_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let first: u64 = std::env::var("COFFER_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut total = Injected::default();
    for seed in first..first + rounds {
        let i = round(seed);
        total.requests += i.requests;
        total.failed += i.failed;
        total.failed_after_put += i.failed_after_put;
        total.truncated += i.truncated;
        total.flipped += i.flipped;
        total.failed_deletes += i.failed_deletes;
        total.stale_listings += i.stale_listings;
    }
    eprintln!("{rounds} rounds: {total:?}");
    eprintln!("runs (operation, succeeded): {:?}", TALLY.lock().unwrap());
    assert!(
        total.failed + total.truncated + total.flipped > 0,
        "no fault was injected"
    );
}

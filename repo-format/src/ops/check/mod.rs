//! `check`: verify the repository's structure and, optionally, every stored byte.
//!
//! Structure: every index file opens; every pack an index names exists and its header agrees
//! with the index; every tree and data blob that a snapshot names is in the index (or in a pack
//! awaiting deletion, which stays readable). With `read_data`, the selected packs are read
//! whole: the pack's name must be the hash of its bytes, and every blob must decrypt and match
//! its id. Damage is reported as the snapshots and the paths inside them that it reaches, so an
//! operator knows what a restore would lose. Nothing is changed.

mod packs;
mod plan;
mod walk;

use crate::error::{Error, Result};
use crate::format::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::format::index::IndexFile;
use crate::format::pack;
use crate::format::snapshot::{self, Snapshot};
use crate::ops::progress::Progress;
use crate::repository::{BlobReader, Repository};
use crate::storage::Storage;
use coffer_crypto::MasterKeys;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Which packs to read in full.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    /// Structure only.
    None,
    /// Every pack.
    All,
    /// Part `n` of `m` (1-based): the packs whose id, as a number, is `n - 1` modulo `m`. Running
    /// parts 1/m to m/m reads every pack once.
    Part { n: u32, m: u32 },
    /// A random share of the packs (0 < p <= 100).
    Percent(f64),
}

impl FromStr for ReadData {
    type Err = Error;

    /// `N/M` or `P%`.
    fn from_str(s: &str) -> Result<ReadData> {
        let bad = |why: &str| Error::InvalidInput(format!("read-data subset {s:?}: {why}"));
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| bad("expected a percentage such as 10%"))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad("the percentage must be above 0 and at most 100"));
            }
            return Ok(ReadData::Percent(p));
        }
        let (n, m) = t
            .split_once('/')
            .ok_or_else(|| bad("expected N/M (e.g. 2/5) or P% (e.g. 10%)"))?;
        let n: u32 = n.trim().parse().map_err(|_| bad("N is not a number"))?;
        let m: u32 = m.trim().parse().map_err(|_| bad("M is not a number"))?;
        if m == 0 || n == 0 || n > m {
            return Err(bad("need 1 <= N <= M"));
        }
        Ok(ReadData::Part { n, m })
    }
}

/// How to check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub read_data: ReadData,
    pub cancel: Arc<AtomicBool>,
}

/// One problem with a stored object.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    /// Storage key or description of the object.
    pub object: String,
    pub message: String,
}

/// A path in a snapshot whose data is damaged or missing.
#[derive(Clone, Debug, Serialize)]
pub struct DamagedPath {
    pub snapshot: SnapshotId,
    pub path: String,
    pub reason: String,
}

/// What check found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckReport {
    pub snapshots: usize,
    pub index_files: usize,
    pub packs: usize,
    pub blobs: usize,
    pub packs_read: usize,
    pub bytes_read: u64,
    pub blobs_verified: u64,
    /// Damage: each makes check fail.
    pub errors: Vec<Problem>,
    /// Worth knowing, not damage (e.g. packs left by an interrupted backup).
    pub warnings: Vec<Problem>,
    /// Snapshots that cannot be restored completely, sorted.
    pub damaged_snapshots: Vec<SnapshotId>,
    pub damaged_paths: Vec<DamagedPath>,
    /// The commands that recover from what was found, in order (empty when none applies).
    pub repairs: Vec<String>,
    /// Staging files left by interrupted writes (local repositories), if any: also a warning.
    pub staging: Option<StagingLeftovers>,
}

/// The staging files (`NAME#DIGITS`) that interrupted writes left in a local repository: never
/// read by any command, so not damage; `prune` removes those at least a day old.
#[derive(Clone, Debug, Serialize)]
pub struct StagingLeftovers {
    pub files: usize,
    pub bytes: u64,
    /// When the oldest was last written (RFC 3339 in JSON).
    #[serde(serialize_with = "serialize_timestamp")]
    pub oldest: jiff::Timestamp,
    /// How many the next prune would remove (at least a day old now).
    pub removable: usize,
}

impl CheckReport {
    /// No damage found.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.damaged_snapshots.is_empty()
    }
}

/// Directories whose stray names (not Coffer's) check reports.
const STRAY_CHECKED_DIRS: [&str; 6] = ["keys", "snapshots", "index", "plans", "data", "drills"];

/// Runs check; the report says whether the repository is clean.
pub fn check(repo: &Repository, options: &CheckOptions) -> Result<CheckReport> {
    check_with_progress(repo, options, &Progress::new())
}

/// As [`check`], counting in `progress` the packs verified (as files) and their bytes, out of
/// the packs to verify (read whole, or their headers only).
pub fn check_with_progress(
    repo: &Repository,
    options: &CheckOptions,
    progress: &Progress,
) -> Result<CheckReport> {
    let (storage, keys) = (repo.storage(), repo.keys());
    let cancel = &options.cancel;
    let mut report = CheckReport::default();
    stray_names(storage, &mut report)?;
    staging(storage, &mut report)?;
    drill_results(storage, keys, &mut report)?;
    let expected = load_expected(storage, keys, &mut report)?;
    report.blobs = expected.index.len();

    // Packs: present and named by an index; the selected ones are read whole (which checks
    // their headers too), the others have their headers compared with the index.
    let present: HashMap<PackId, u64> = repo.list_packs()?.into_iter().collect();
    report.packs = present.len();
    let mut ids: Vec<PackId> = expected.packs.keys().copied().collect();
    ids.sort();
    let selected: HashSet<PackId> = plan::select(&ids, &present, options.read_data)?
        .into_iter()
        .collect();
    let packs = plan::plan_packs(&expected, &present, &selected);
    report.errors.extend(packs.errors);
    let mut damaged: HashMap<BlobId, String> = packs.damaged.into_iter().collect();
    let max_pack = pack::max_pack_size(repo.config().pack_size);
    let work = &packs.work;
    progress.add_totals(
        work.len() as u64,
        work.iter().map(|(_, size, _)| *size).sum(),
    );
    for found in verify_packs(storage, keys, &expected, work, max_pack, cancel, progress)? {
        report.errors.extend(found.errors);
        damaged.extend(found.damaged);
        report.packs_read += found.packs_read;
        report.bytes_read += found.bytes_read;
        report.blobs_verified += found.blobs_verified;
    }
    for p in &packs.unindexed {
        report.warnings.push(Problem {
            object: pack::pack_key(p),
            message: "in no index (left by an interrupted backup or prune); prune removes it"
                .into(),
        });
    }

    // Snapshots: what the damage reaches.
    let reader = BlobReader::new(storage, keys, &expected.index, repo.config().pack_size);
    // Without a metadata cache, on an object store: one request per tree pack, not per tree.
    let _trees = reader.plan_tree_reads();
    let mut walk = walk::Walk {
        reader,
        damaged: &damaged,
        clean: HashSet::new(),
        damaged_paths: Vec::new(),
    };
    let mut damaged_snapshots: HashSet<SnapshotId> = HashSet::new();
    for id in snapshot::Snapshot::list_ids(storage)? {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        report.snapshots += 1;
        let snap = match Snapshot::load(storage, keys, &id) {
            Ok(s) => s,
            Err(e) => {
                report.error(format!("snapshots/{id}"), e.to_string());
                damaged_snapshots.insert(id);
                continue;
            }
        };
        let before = walk.damaged_paths.len();
        walk::walk(&mut walk, &id, snap.tree, "/".into());
        if walk.damaged_paths.len() > before {
            damaged_snapshots.insert(id);
        }
    }
    report.damaged_paths = walk.damaged_paths;
    let mut damaged: Vec<SnapshotId> = damaged_snapshots.into_iter().collect();
    damaged.sort();
    report.damaged_snapshots = damaged;
    report.repairs = plan::repairs(packs.lost_packs, &report.damaged_paths);
    Ok(report)
}

impl CheckReport {
    fn error(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem {
            object: object.into(),
            message: message.into(),
        });
    }
}

/// Names that are not Coffer's (an NFS `.nfsXXXX` file, a file put there by hand): every
/// command ignores them, so they are not damage, only worth knowing.
fn stray_names(storage: &Storage, report: &mut CheckReport) -> Result<()> {
    for dir in STRAY_CHECKED_DIRS {
        for (key, size) in storage.list_objects(dir)?.stray {
            report.warnings.push(Problem {
                object: key,
                message: format!(
                    "not a Coffer object name ({size} bytes); every command ignores it"
                ),
            });
        }
    }
    Ok(())
}

/// Drill results that cannot be read: worth knowing (the drill history misses them), but they
/// refer to no data, so they are warnings, not damage.
fn drill_results(storage: &Storage, keys: &MasterKeys, report: &mut CheckReport) -> Result<()> {
    for (id, e) in crate::format::drill::DrillResult::load_all(storage, keys)?.damaged {
        report.warnings.push(Problem {
            object: crate::format::key::ObjectKey::Drill(id).to_string(),
            message: format!(
                "{e}; only the drill history misses it (it refers to no data); remove it once \
                 you have kept a copy for analysis"
            ),
        });
    }
    Ok(())
}

fn serialize_timestamp<S: serde::Serializer>(
    t: &jiff::Timestamp,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_str(t)
}

/// Staging files interrupted writes left: summarised ([`plan::staging`]) as one warning.
fn staging(storage: &Storage, report: &mut CheckReport) -> Result<()> {
    let leftovers: Vec<(String, u64, jiff::Timestamp)> = storage
        .staging_leftovers()?
        .into_iter()
        .map(|o| (o.key, o.size, o.modified))
        .collect();
    if let Some((summary, problem)) = plan::staging(&leftovers, jiff::Timestamp::now()) {
        report.staging = Some(summary);
        report.warnings.push(problem);
    }
    Ok(())
}

/// Reads every index file and deletion plan, each on its own so one damaged file does not hide
/// the rest (each is reported), and assembles what they say the repository holds.
fn load_expected(
    storage: &Storage,
    keys: &MasterKeys,
    report: &mut CheckReport,
) -> Result<plan::Expected> {
    // Newest first, as `MasterIndex::load` reads them (see `plan::expected`).
    let mut files: Vec<(IndexId, IndexFile)> = Vec::new();
    for id in crate::format::index::IndexFile::list_ids_newest_first(storage)? {
        match IndexFile::load(storage, keys, &id) {
            Ok(f) => files.push((id, f)),
            Err(e) => report.error(format!("index/{id}"), e.to_string()),
        }
    }
    let plans = match crate::format::plan::DeletionPlan::load_all(storage, keys) {
        Ok(p) => p,
        Err(e) => {
            report.error("plans", e.to_string());
            crate::format::plan::Plans::default()
        }
    };
    for (key, e) in &plans.damaged {
        report.error(
            key,
            format!(
                "{e}; every command treats it as absent (its packs are examined again by the \
                 next prune); remove the object once you have kept a copy for analysis"
            ),
        );
    }
    if !plans.good.is_empty() {
        report.warnings.push(Problem {
            object: "plans".into(),
            message: format!(
                "{} deletion plan(s) wait for a later prune; their packs stay readable",
                plans.good.len()
            ),
        });
    }
    let expected = plan::expected(files, &plans.good);
    report.index_files = expected.index_files;
    Ok(expected)
}

/// Verifies the present packs with several threads at once (reading, decrypting and hashing),
/// returning what each found in pack order. Packs are read once, with direct reads on local
/// storage (around the page cache), so a thread waits for the disk while it reads: one thread
/// more than the cores keeps them busy.
fn verify_packs(
    storage: &Storage,
    keys: &MasterKeys,
    expected: &plan::Expected,
    work: &[(PackId, u64, plan::Depth)],
    max_pack: u64,
    cancel: &AtomicBool,
    progress: &Progress,
) -> Result<Vec<packs::PackFindings>> {
    let threads = crate::repository::parallel::threads_for_reading(storage);
    let index = &expected.index;
    let findings =
        crate::repository::parallel::map(work, threads, cancel, |(pack_id, size, depth)| {
            let blobs = &expected.packs[pack_id];
            let found = match depth {
                plan::Depth::Read => {
                    packs::read_pack(storage, keys, index, pack_id, *size, max_pack, blobs)
                }
                plan::Depth::Header => {
                    packs::header_findings(storage, keys, index, pack_id, *size, blobs)
                }
            };
            progress.add_bytes(*size);
            progress.file_done();
            found
        });
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    Ok(findings.into_iter().flatten().collect())
}

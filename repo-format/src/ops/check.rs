//! `check`: verify the repository's structure and, optionally, every stored byte.
//!
//! Structure: every index file opens; every pack an index names exists and its header agrees
//! with the index; every tree and data blob that a snapshot names is in the index (or in a pack
//! awaiting deletion, which stays readable). With `read_data`, the selected packs are read
//! whole: the pack's name must be the hash of its bytes, and every blob must decrypt and match
//! its id. Damage is reported as the snapshots and the paths inside them that it reaches, so an
//! operator knows what a restore would lose. Nothing is changed.

use crate::error::{Error, Result};
use crate::format::id::{storage_hash, BlobId, IndexId, PackId, SnapshotId};
use crate::format::index::{IndexFile, MasterIndex};
use crate::format::pack::{self, PackedBlob};
use crate::format::plan;
use crate::format::snapshot::{self, Snapshot};
use crate::repository::Repository;
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
}

impl CheckReport {
    /// No damage found.
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.damaged_snapshots.is_empty()
    }
}

struct Ctx<'a> {
    storage: &'a Storage,
    keys: &'a MasterKeys,
    report: CheckReport,
    /// Blobs known to be unreadable, with why.
    damaged: HashMap<BlobId, String>,
}

impl Ctx<'_> {
    fn error(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.report.errors.push(Problem {
            object: object.into(),
            message: message.into(),
        });
    }
}

/// Directories whose stray names (not Coffer's) check reports.
const STRAY_CHECKED_DIRS: [&str; 5] = ["keys", "snapshots", "index", "plans", "data"];

/// Runs check; the report says whether the repository is clean.
pub fn check(repo: &Repository, options: &CheckOptions) -> Result<CheckReport> {
    let mut ctx = Ctx {
        storage: repo.storage(),
        keys: repo.keys(),
        report: CheckReport::default(),
        damaged: HashMap::new(),
    };
    let cancel = &options.cancel;

    // Names that are not Coffer's (an NFS `.nfsXXXX` file, a file put there by hand): every
    // command ignores them, so they are not damage, only worth knowing.
    for dir in STRAY_CHECKED_DIRS {
        for (key, size) in ctx.storage.list_objects(dir)?.stray {
            ctx.report.warnings.push(Problem {
                object: key,
                message: format!(
                    "not a Coffer object name ({size} bytes); every command ignores it"
                ),
            });
        }
    }

    // Index files, each on its own so one damaged file does not hide the rest.
    // Newest first, as `MasterIndex::load` reads them: of two copies of a blob, the one stored
    // again after its pack was lost is the one restore reads, so snapshots that use it are not
    // reported damaged.
    let mut files: Vec<(IndexId, IndexFile)> = Vec::new();
    for id in IndexFile::list_ids_newest_first(ctx.storage)? {
        match IndexFile::load(ctx.storage, ctx.keys, &id) {
            Ok(f) => files.push((id, f)),
            Err(e) => ctx.error(format!("index/{id}"), e.to_string()),
        }
    }
    let superseded: HashSet<IndexId> = files
        .iter()
        .flat_map(|(_, f)| f.supersedes.iter().copied())
        .collect();
    files.retain(|(id, _)| !superseded.contains(id));
    ctx.report.index_files = files.len();
    let plans = match plan::DeletionPlan::load_all(ctx.storage, ctx.keys) {
        Ok(p) => p,
        Err(e) => {
            ctx.error("plans", e.to_string());
            plan::Plans::default()
        }
    };
    for (key, e) in &plans.damaged {
        ctx.error(
            key,
            format!(
                "{e}; every command treats it as absent (its packs are examined again by the \
                 next prune); remove the object once you have kept a copy for analysis"
            ),
        );
    }
    let plans = plans.good;
    if !plans.is_empty() {
        ctx.report.warnings.push(Problem {
            object: "plans".into(),
            message: format!(
                "{} deletion plan(s) wait for a later prune; their packs stay readable",
                plans.len()
            ),
        });
    }
    let mut index = MasterIndex::default();
    // Every pack an index or plan names, with the entries it should hold.
    let mut expected: HashMap<PackId, Vec<PackedBlob>> = HashMap::new();
    for (_, file) in &files {
        for (pack, blobs) in &file.packs {
            index.add_pack(*pack, blobs);
            expected.entry(*pack).or_insert_with(|| blobs.clone());
        }
    }
    let live: HashSet<PackId> = expected.keys().copied().collect();
    let mut planned: HashSet<PackId> = HashSet::new();
    for (_, p) in &plans {
        for (pack, blobs) in &p.packs {
            planned.insert(*pack);
            if !blobs.is_empty() {
                index.add_pending_pack(*pack, blobs);
                expected.entry(*pack).or_insert_with(|| blobs.clone());
            }
        }
    }
    index.sort();
    ctx.report.blobs = index.len();
    drop(files);

    // Packs: present and named by an index; the selected ones are read whole (which checks
    // their headers too), the others have their headers compared with the index. Packs are
    // checked by several threads at once (reading, decrypting and hashing), and what each
    // finds is applied in pack order.
    let present: HashMap<PackId, u64> = repo.list_packs()?.into_iter().collect();
    ctx.report.packs = present.len();
    let mut ids: Vec<PackId> = expected.keys().copied().collect();
    ids.sort();
    let selected: HashSet<PackId> = select(&ids, &present, options.read_data)?
        .into_iter()
        .collect();
    let mut work: Vec<(PackId, u64)> = Vec::new();
    let mut lost_packs = false;
    for pack_id in &ids {
        let blobs = &expected[pack_id];
        match present.get(pack_id) {
            Some(&size) => work.push((*pack_id, size)),
            None => {
                // A pending pack may be gone after an interrupted prune; that is damage only
                // if a blob's chosen copy was in it (found by the snapshot walk below).
                if live.contains(pack_id) {
                    lost_packs = true;
                    ctx.error(
                        pack::pack_key(pack_id),
                        format!("missing, but an index lists {} blob(s) in it", blobs.len()),
                    );
                }
                let why = format!("its pack {} is missing", pack_id.short());
                ctx.damaged.extend(damaged_in(&index, pack_id, blobs, &why));
            }
        }
    }
    // Packs are read once, with direct reads on local storage (around the page cache), so a
    // thread waits for the disk while it reads: one thread more than the cores keeps them busy.
    let threads = crate::repository::parallel::threads_for_reading(ctx.storage);
    let (storage, keys) = (ctx.storage, ctx.keys);
    let max_pack = pack::max_pack_size(repo.config().pack_size);
    let findings = crate::repository::parallel::map(&work, threads, cancel, |(pack_id, size)| {
        let blobs = &expected[pack_id];
        if selected.contains(pack_id) {
            read_pack(storage, keys, &index, pack_id, *size, max_pack, blobs)
        } else {
            let mut found = PackFindings::default();
            if let Err(e) = check_header(storage, keys, pack_id, *size, blobs) {
                found.error(pack::pack_key(pack_id), e.to_string());
                let why = format!("the header of pack {} is damaged", pack_id.short());
                found.damaged = damaged_in(&index, pack_id, blobs, &why);
            }
            found
        }
    });
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    for found in findings.into_iter().flatten() {
        ctx.report.errors.extend(found.errors);
        ctx.damaged.extend(found.damaged);
        ctx.report.packs_read += found.packs_read;
        ctx.report.bytes_read += found.bytes_read;
        ctx.report.blobs_verified += found.blobs_verified;
    }
    let mut unindexed: Vec<&PackId> = present
        .keys()
        .filter(|p| !expected.contains_key(p) && !planned.contains(p))
        .collect();
    unindexed.sort();
    for p in unindexed {
        ctx.report.warnings.push(Problem {
            object: pack::pack_key(p),
            message: "in no index (left by an interrupted backup or prune); prune removes it"
                .into(),
        });
    }

    // Snapshots: what the damage reaches.
    let mut clean_trees: HashSet<BlobId> = HashSet::new();
    let mut damaged_snapshots: HashSet<SnapshotId> = HashSet::new();
    for id in snapshot::Snapshot::list_ids(ctx.storage)? {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Interrupted);
        }
        ctx.report.snapshots += 1;
        let snap = match Snapshot::load(ctx.storage, ctx.keys, &id) {
            Ok(s) => s,
            Err(e) => {
                ctx.error(format!("snapshots/{id}"), e.to_string());
                damaged_snapshots.insert(id);
                continue;
            }
        };
        let before = ctx.report.damaged_paths.len();
        walk(
            &mut ctx,
            &index,
            &mut clean_trees,
            &id,
            snap.tree,
            "/".into(),
        );
        if ctx.report.damaged_paths.len() > before {
            damaged_snapshots.insert(id);
        }
    }
    let mut damaged: Vec<SnapshotId> = damaged_snapshots.into_iter().collect();
    damaged.sort();
    ctx.report.damaged_snapshots = damaged;
    // Blobs in no index: lost with a pack already dropped from the index, or in a pack that
    // no index names (which `repair index` adds back).
    let unindexed_blobs = ctx
        .report
        .damaged_paths
        .iter()
        .any(|d| d.reason.contains("in no index") || d.reason.contains("not in any index"));
    if lost_packs || unindexed_blobs {
        // docs/maintenance.md, "When a pack is lost".
        ctx.report.repairs = vec![
            "coffer repair index".into(),
            "coffer repair snapshots --forget".into(),
        ];
    }
    Ok(ctx.report)
}

/// The blobs of `pack` whose chosen copy (the one readers use) is in it, each with `why`.
fn damaged_in(
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

/// What checking one pack found, applied to the report in pack order.
#[derive(Default)]
struct PackFindings {
    errors: Vec<Problem>,
    damaged: Vec<(BlobId, String)>,
    packs_read: usize,
    bytes_read: u64,
    blobs_verified: u64,
}

impl PackFindings {
    fn error(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem {
            object: object.into(),
            message: message.into(),
        });
    }
}

/// Reads only a pack's header and compares it with the index's entries.
fn check_header(
    storage: &Storage,
    keys: &MasterKeys,
    id: &PackId,
    size: u64,
    blobs: &[PackedBlob],
) -> Result<()> {
    let key = pack::pack_key(id);
    if size < 4 {
        return Err(Error::corrupt(
            "pack",
            id,
            format!("truncated: {size} bytes"),
        ));
    }
    let tail = storage.get_range("pack", &key, size - 4..size)?;
    let header_len = pack::header_length(id, [tail[0], tail[1], tail[2], tail[3]], size)?;
    let start = size - 4 - u64::from(header_len);
    let header = storage.get_range("pack", &key, start..size - 4)?;
    let listed = pack::parse_header(keys, id, &header, start)?;
    compare(id, &listed, blobs)
}

fn compare(id: &PackId, header: &[PackedBlob], index: &[PackedBlob]) -> Result<()> {
    let by_id: HashMap<BlobId, &PackedBlob> = header.iter().map(|b| (b.id, b)).collect();
    for b in index {
        match by_id.get(&b.id) {
            Some(h) if *h == b => {}
            Some(_) => {
                return Err(Error::corrupt(
                    "pack",
                    id,
                    format!("header and index disagree about blob {}", b.id),
                ))
            }
            None => {
                return Err(Error::corrupt(
                    "pack",
                    id,
                    format!("index lists blob {} that the header does not", b.id),
                ))
            }
        }
    }
    Ok(())
}

/// The packs to read in full, sorted.
fn select(ids: &[PackId], present: &HashMap<PackId, u64>, read: ReadData) -> Result<Vec<PackId>> {
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

/// Reads one pack whole (`size` bytes, as listed) and verifies every blob; returns what is
/// damaged.
fn read_pack(
    storage: &Storage,
    keys: &MasterKeys,
    index: &MasterIndex,
    id: &PackId,
    size: u64,
    max: u64,
    expected: &[PackedBlob],
) -> PackFindings {
    let mut found = PackFindings::default();
    let key = pack::pack_key(id);
    // Into this thread's reused buffer: no fresh pages per pack.
    let read = if size > max {
        Err(Error::corrupt(
            "pack",
            &key,
            format!("{size} bytes is more than the maximum of {max} bytes for a pack"),
        ))
    } else {
        storage.with_range_direct("pack", &key, 0..size, |bytes| {
            verify_pack(keys, index, id, &key, bytes, expected, &mut found);
            Ok(())
        })
    };
    if let Err(e) = read {
        found.error(&key, e.to_string());
        let why = format!("pack {} unreadable", id.short());
        found.damaged = damaged_in(index, id, expected, &why);
    }
    found
}

/// Verifies a pack's name, header and every blob in `expected` against its bytes.
fn verify_pack(
    keys: &MasterKeys,
    index: &MasterIndex,
    id: &PackId,
    key: &str,
    bytes: &[u8],
    expected: &[PackedBlob],
    found: &mut PackFindings,
) {
    found.packs_read = 1;
    found.bytes_read = bytes.len() as u64;
    if storage_hash(bytes) != id.0 {
        found.error(
            key,
            "content does not match its name (the file was altered)",
        );
    }
    match pack::parse_pack(keys, id, bytes) {
        Ok(header) => {
            if let Err(e) = compare(id, &header, expected) {
                found.error(key, e.to_string());
            }
        }
        Err(e) => found.error(key, e.to_string()),
    }
    for blob in expected {
        let range = blob.offset as usize..blob.offset as usize + blob.length as usize;
        let result = match bytes.get(range) {
            Some(sealed) => pack::open_blob(keys, id, blob, sealed).map(|_| ()),
            None => Err(Error::corrupt("pack", id, "shorter than the index says")),
        };
        match result {
            Ok(()) => found.blobs_verified += 1,
            Err(e) => {
                found.error(format!("blob {}", blob.id), e.to_string());
                let why = format!("blob {} in pack {} is damaged", blob.id.short(), id.short());
                found
                    .damaged
                    .extend(damaged_in(index, id, std::slice::from_ref(blob), &why));
            }
        }
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Walks one snapshot's tree, recording every damaged path. Trees found clean are remembered
/// and not walked again.
fn walk(
    ctx: &mut Ctx<'_>,
    index: &MasterIndex,
    clean: &mut HashSet<BlobId>,
    snapshot: &SnapshotId,
    tree_id: BlobId,
    path: String,
) -> bool {
    if clean.contains(&tree_id) {
        return true;
    }
    let damage = |ctx: &mut Ctx<'_>, path: String, reason: String| {
        ctx.report.damaged_paths.push(DamagedPath {
            snapshot: *snapshot,
            path,
            reason,
        });
    };
    if let Some(why) = ctx.damaged.get(&tree_id).cloned() {
        damage(ctx, path, format!("directory listing lost: {why}"));
        return false;
    }
    let tree = match crate::ops::prune::load_tree(ctx.storage, ctx.keys, index, &tree_id) {
        Ok(t) => t,
        Err(e) => {
            damage(ctx, path, format!("directory listing lost: {e}"));
            return false;
        }
    };
    let mut ok = true;
    for node in &tree.nodes {
        let child = join(&path, &node.name);
        for blob in &node.content {
            let why = if let Some(why) = ctx.damaged.get(blob) {
                Some(why.clone())
            } else if index.get(blob).is_none() {
                Some(format!("data blob {} is in no index", blob.short()))
            } else {
                None
            };
            if let Some(why) = why {
                damage(ctx, child.clone(), why);
                ok = false;
                break;
            }
        }
        if let Some(sub) = node.subtree {
            ok &= walk(ctx, index, clean, snapshot, sub, child);
        }
    }
    if ok {
        clean.insert(tree_id);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

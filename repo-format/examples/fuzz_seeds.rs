//! Writes a seed corpus for the fuzz targets in `fuzz/` from a real repository: for each
//! decoder, the inputs it meets in practice (the plaintext of every config, index file,
//! snapshot, tree and pack header; the raw bytes of key files and sealed objects), so the
//! fuzzer starts from well-formed objects instead of having to discover the format.
//!
//! `COFFER_PASSWORD=... cargo run -p coffer-repo --example fuzz_seeds -- REPO OUT`
//! writes `OUT/<target>/<name>` files. `fuzz/run.sh` calls it on a repository it makes.

use coffer_repo::format::index::IndexFile;
use coffer_repo::format::lease::LeaseRecord;
use coffer_repo::format::plan::DeletionPlan;
use coffer_repo::format::sealed::{self, ObjectKind};
use coffer_repo::format::tree::NodeKind;

use coffer_repo::{BlobId, IndexId, OpenMode, PackId, Repository, Storage};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// At most this many seeds of one kind: a corpus of thousands of near-identical trees only
/// slows the fuzzer's start.
const PER_KIND: usize = 40;

fn main() {
    if let Err(e) = run() {
        eprintln!("fuzz_seeds: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let (Some(repo), Some(out)) = (args.next(), args.next()) else {
        return Err("usage: fuzz_seeds REPO OUT (password in COFFER_PASSWORD)".into());
    };
    let password = std::env::var("COFFER_PASSWORD").map_err(|_| "COFFER_PASSWORD is not set")?;
    let location = repo.to_str().ok_or("the repository path is not UTF-8")?;
    let storage = Storage::open(location, OpenMode::Existing)?;
    let repo = Repository::open(storage, password.as_bytes())?;
    let seeds = Seeds {
        root: PathBuf::from(out),
    };
    let st = repo.storage();

    seeds.put("config", "config", &serde_json::to_vec(repo.config())?)?;
    let raw_config = st.get("config", "config")?;
    seeds.put("sealed", "config", &raw_config)?;

    for (key, _) in st.list("keys")?.into_iter().take(PER_KIND) {
        let bytes = st.get("key file", &key)?;
        seeds.put("keyfile", &key, &bytes)?;
    }

    let mut index_ids = Vec::new();
    for (key, _) in st.list("index")?.into_iter().take(PER_KIND) {
        let Some(id) = key.rsplit('/').next().and_then(IndexId::from_hex) else {
            continue;
        };
        let file = IndexFile::load(st, repo.keys(), &id)?;
        seeds.put("index", &key, &file.encode())?;
        seeds.put("sealed", &key, &st.get("index", &key)?)?;
        index_ids.push((id, file));
    }

    let snapshots = coffer_repo::Snapshot::load_all(st, repo.keys())?;
    let mut roots = Vec::new();
    for (id, snapshot) in snapshots.good.iter().take(PER_KIND) {
        seeds.put("snapshot", &id.to_hex(), &serde_json::to_vec(snapshot)?)?;
        let key = format!("snapshots/{}", id.to_hex());
        seeds.put("sealed", &key, &st.get("snapshot", &key)?)?;
        roots.push(snapshot.tree);
    }
    let drills = coffer_repo::format::drill::DrillResult::load_all(st, repo.keys())?;
    for (id, result) in drills.good.iter().take(PER_KIND) {
        seeds.put("drill", &id.to_hex(), &serde_json::to_vec(result)?)?;
        let key = format!("drills/{}", id.to_hex());
        seeds.put("sealed", &key, &st.get("drill result", &key)?)?;
    }
    write_trees(&repo, &seeds, roots)?;
    write_pack_headers(&repo, &seeds)?;
    write_plan_and_lease(&seeds, &index_ids)?;
    println!("seeds written under {}", seeds.root.display());
    Ok(())
}

/// Every tree reachable from the snapshots, breadth first, up to [`PER_KIND`].
fn write_trees(
    repo: &Repository,
    seeds: &Seeds,
    roots: Vec<BlobId>,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut seen = BTreeSet::new();
    let mut queue = std::collections::VecDeque::from(roots);
    while let Some(id) = queue.pop_front() {
        if seen.len() >= PER_KIND || !seen.insert(id) {
            continue;
        }
        let tree = repo.load_tree(&id)?;
        seeds.put("tree", &id.to_hex(), &tree.encode())?;
        for node in &tree.nodes {
            if let (NodeKind::Dir, Some(sub)) = (&node.kind, node.subtree) {
                queue.push_back(sub);
            }
        }
    }
    Ok(())
}

/// The opened header of each pack, prefixed by its data length (the `pack_header` target's
/// input layout: 8 bytes little-endian data length, then the header plaintext).
fn write_pack_headers(repo: &Repository, seeds: &Seeds) -> Result<(), Box<dyn std::error::Error>> {
    let st = repo.storage();
    for (pack, size) in repo.list_packs()?.into_iter().take(PER_KIND) {
        let key = coffer_repo::format::pack::pack_key(&pack);
        let tail = st.get_range("pack", &key, size - 4..size)?;
        let tail: [u8; 4] = tail[..].try_into()?;
        let len = coffer_repo::format::pack::header_length(&pack, tail, size)?;
        let start = size - 4 - u64::from(len);
        let header = st.get_range("pack", &key, start..size - 4)?;
        let plain = sealed::open(
            repo.keys(),
            ObjectKind::PackHeader,
            "pack header",
            &key,
            &header,
        )?;
        let mut seed = start.to_le_bytes().to_vec();
        seed.extend_from_slice(&plain);
        seeds.put("pack_header", &pack.to_hex(), &seed)?;
    }
    Ok(())
}

/// A deletion plan and a lease record naming this repository's real index files and packs
/// (a repository holds them only while a prune runs, so they are built here as prune would).
fn write_plan_and_lease(
    seeds: &Seeds,
    index: &[(IndexId, IndexFile)],
) -> Result<(), Box<dyn std::error::Error>> {
    let now = jiff::Timestamp::now();
    let packs: Vec<(PackId, Vec<_>)> = index
        .iter()
        .flat_map(|(_, f)| f.packs.iter().cloned())
        .take(8)
        .collect();
    let plan = DeletionPlan {
        created: now,
        index_deadline: now,
        index_files: index.iter().map(|(id, _)| *id).take(4).collect(),
        packs,
    };
    seeds.put("plan", "plan", &plan.encode())?;
    let lease = LeaseRecord {
        holder: "0123456789abcdef0123456789abcdef".into(),
        operation: "prune".into(),
        hostname: "seed-host".into(),
        pid: std::process::id(),
        written: now.as_second(),
        expires: now.as_second() + 300,
        released: false,
    };
    seeds.put("lease", "lease", &serde_json::to_vec(&lease)?)?;
    Ok(())
}

struct Seeds {
    root: PathBuf,
}

impl Seeds {
    fn put(&self, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(file_name(name)), bytes)
    }
}

fn file_name(name: &str) -> PathBuf {
    Path::new(&name.replace('/', "_")).to_path_buf()
}

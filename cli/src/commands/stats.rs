//! `coffer stats`: how big the repository is and why: packs on storage, stored (compressed,
//! encrypted) against raw bytes, how much deduplication saves, and per snapshot the bytes it
//! alone holds (what forgetting it would free, once pruned).

use super::Context_;
use crate::output;
use anyhow::Result;
use coffer_repo::format::tree::Node;
use coffer_repo::ops::walk;
use coffer_repo::BlobId;
use serde_json::json;
use std::collections::{HashMap, HashSet};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Walks every snapshot's trees once to find the blobs each holds alone: on a \
large repository this reads all tree blobs (they are cached for object stores)."
)]
pub struct Args {
    /// Print JSON: `{"packs", "pack_bytes", "blobs", "stored_bytes", "raw_bytes",
    /// "snapshots", "logical_bytes", "compression_ratio", "dedup_ratio", "per_snapshot":
    /// [{"id", "short_id", "time", "total_bytes", "unique_stored_bytes"}]}`
    #[arg(long)]
    pub json: bool,
}

/// Every blob a snapshot refers to: its trees and its files' chunks.
fn blobs_of(repo: &coffer_repo::Repository, root: &BlobId) -> Result<HashSet<BlobId>> {
    let mut set = HashSet::from([*root]);
    walk::walk(repo, root, "", &mut |_, node: &Node| {
        set.extend(node.content.iter().copied());
        if let Some(sub) = node.subtree {
            // A subtree seen already (deduplicated within this snapshot) need not be walked again.
            return Ok(set.insert(sub));
        }
        Ok(true)
    })?;
    Ok(set)
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    let repo = super::open_repo(ctx)?;
    let all = super::load_snapshots(&repo)?;
    let packs = repo.list_packs()?;
    let pack_bytes: u64 = packs.iter().map(|(_, size)| size).sum();
    let (mut stored, mut raw, mut blobs) = (0u64, 0u64, 0u64);
    let mut length: HashMap<BlobId, u64> = HashMap::new();
    for (loc, pending) in repo.index().iter() {
        if pending {
            continue;
        }
        blobs += 1;
        stored += u64::from(loc.blob.length);
        raw += u64::from(loc.blob.raw_length);
        length.insert(loc.blob.id, u64::from(loc.blob.length));
    }
    let mut sets = Vec::new();
    let mut refs: HashMap<BlobId, u32> = HashMap::new();
    for (id, s) in &all.good {
        let set = blobs_of(&repo, &s.tree)?;
        for b in &set {
            *refs.entry(*b).or_default() += 1;
        }
        sets.push((id, s, set));
    }
    let logical: u64 = all.good.iter().map(|(_, s)| s.summary.total_bytes).sum();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per: Vec<_> = sets
        .iter()
        .map(|(id, s, set)| {
            let unique: u64 = set
                .iter()
                .filter(|b| refs.get(*b) == Some(&1))
                .filter_map(|b| length.get(b))
                .sum();
            (id, s, unique)
        })
        .collect();
    if args.json {
        let value = json!({
            "packs": packs.len(),
            "pack_bytes": pack_bytes,
            "blobs": blobs,
            "stored_bytes": stored,
            "raw_bytes": raw,
            "snapshots": all.good.len(),
            "logical_bytes": logical,
            "compression_ratio": ratio(raw, stored),
            "dedup_ratio": ratio(logical, raw),
            "per_snapshot": per.iter().map(|(id, s, unique)| json!({
                "id": id.to_hex(), "short_id": id.short(), "time": s.time.as_str(),
                "total_bytes": s.summary.total_bytes, "unique_stored_bytes": unique,
            })).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(crate::exit::OK);
    }
    outln!(
        "repository   {} in {} pack(s)",
        output::bytes(pack_bytes),
        packs.len()
    );
    outln!(
        "blobs        {blobs}: {} stored, {} raw (compression {:.2}x)",
        output::bytes(stored),
        output::bytes(raw),
        ratio(raw, stored)
    );
    outln!(
        "snapshots    {}: {} in all (deduplication {:.2}x)",
        all.good.len(),
        output::bytes(logical),
        ratio(logical, raw)
    );
    outln!(
        "{:<8}  {:<19}  {:>10}  {:>12}",
        "id",
        "time",
        "size",
        "alone holds"
    );
    for (id, s, unique) in &per {
        outln!(
            "{:<8}  {:<19}  {:>10}  {:>12}",
            id.short(),
            output::local_time(s.time.timestamp()),
            output::bytes(s.summary.total_bytes),
            output::bytes(*unique)
        );
    }
    Ok(crate::exit::OK)
}

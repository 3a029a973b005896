//! Walking every snapshot's trees to find what the damage found so far reaches: each damaged
//! path, named, so an operator knows what a restore would lose.
//!
//! May use: `format/` and the repository's reader.

use super::DamagedPath;
use crate::format::id::{BlobId, SnapshotId};
use crate::repository::BlobReader;
use std::collections::{HashMap, HashSet};

/// What the walk reads and records into.
pub(super) struct Walk<'a> {
    /// Reads trees from the index check assembled (through the metadata cache).
    pub reader: BlobReader<'a>,
    /// Blobs known to be unreadable, with why.
    pub damaged: &'a HashMap<BlobId, String>,
    /// Trees found clean: not walked again.
    pub clean: HashSet<BlobId>,
    /// Paths found damaged, in walk order.
    pub damaged_paths: Vec<DamagedPath>,
}

/// Joins a snapshot directory path and a name.
fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Walks one snapshot's tree, recording every damaged path. Trees found clean are remembered
/// and not walked again.
pub(super) fn walk(
    ctx: &mut Walk<'_>,
    snapshot: &SnapshotId,
    tree_id: BlobId,
    path: String,
) -> bool {
    if ctx.clean.contains(&tree_id) {
        return true;
    }
    let damage = |ctx: &mut Walk<'_>, path: String, reason: String| {
        ctx.damaged_paths.push(DamagedPath {
            snapshot: *snapshot,
            path,
            reason,
        });
    };
    if let Some(why) = ctx.damaged.get(&tree_id).cloned() {
        damage(ctx, path, format!("directory listing lost: {why}"));
        return false;
    }
    let tree = match ctx.reader.load_tree(&tree_id) {
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
            } else if ctx.reader.index().get(blob).is_none() {
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
            ok &= walk(ctx, snapshot, sub, child);
        }
    }
    if ok {
        ctx.clean.insert(tree_id);
    }
    ok
}

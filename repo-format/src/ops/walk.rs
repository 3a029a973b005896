//! Walking a snapshot's trees: listing (`ls`) and finding one path.

use crate::error::{Error, Result};
use crate::format::id::BlobId;
use crate::format::tree::{Node, NodeKind};
use crate::repository::Repository;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Splits a snapshot path (`/opt/app/.env` or `opt/app/.env`) into name components.
pub fn split_path(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// Calls `visit(path, node)` for every node under `tree`, depth first in name order. Paths are
/// absolute inside the snapshot (`/opt/app`). Returning `false` from `visit` skips a directory's
/// children.
pub fn walk(
    repo: &Repository,
    tree: &BlobId,
    prefix: &str,
    visit: &mut dyn FnMut(&str, &Node) -> Result<bool>,
) -> Result<()> {
    let t = repo.load_tree(tree)?;
    for node in &t.nodes {
        let path = format!("{}/{}", prefix.trim_end_matches('/'), node.name);
        let descend = visit(&path, node)?;
        if descend && node.kind == NodeKind::Dir {
            if let Some(sub) = &node.subtree {
                walk(repo, sub, &path, visit)?;
            }
        }
    }
    Ok(())
}

/// As [`walk`], also giving each node's place below `base` on the local file system, built from
/// the names' exact bytes (the snapshot path shows a non-UTF-8 name lossily; this one does not).
pub fn walk_local(
    repo: &Repository,
    tree: &BlobId,
    prefix: &str,
    base: &Path,
    visit: &mut dyn FnMut(&str, &Path, &Node) -> Result<bool>,
) -> Result<()> {
    let t = repo.load_tree(tree)?;
    for node in &t.nodes {
        let path = format!("{}/{}", prefix.trim_end_matches('/'), node.name);
        let local = base.join(OsStr::from_bytes(&node.name_raw()?));
        let descend = visit(&path, &local, node)?;
        if descend && node.kind == NodeKind::Dir {
            if let Some(sub) = &node.subtree {
                walk_local(repo, sub, &path, &local, visit)?;
            }
        }
    }
    Ok(())
}

/// The node at `path` below the root tree, or `None` for the root itself.
pub fn find(repo: &Repository, root: &BlobId, path: &str, snapshot: &str) -> Result<Option<Node>> {
    let mut tree_id = *root;
    let mut found = None;
    let parts = split_path(path);
    for (i, part) in parts.iter().enumerate() {
        let tree = repo.load_tree(&tree_id)?;
        let node = tree
            .find(part.as_bytes())
            .cloned()
            .ok_or_else(|| Error::PathNotInSnapshot {
                path: path.to_string(),
                snapshot: snapshot.to_string(),
            })?;
        if i + 1 < parts.len() {
            tree_id = match (&node.kind, &node.subtree) {
                (NodeKind::Dir, Some(sub)) => *sub,
                _ => {
                    return Err(Error::PathNotInSnapshot {
                        path: path.to_string(),
                        snapshot: snapshot.to_string(),
                    })
                }
            };
        }
        found = Some(node);
    }
    Ok(found)
}

/// Writes the content of the file at `path` to `out`.
pub fn dump(
    repo: &Repository,
    root: &BlobId,
    path: &str,
    snapshot: &str,
    out: &mut dyn std::io::Write,
) -> Result<u64> {
    let node = find(repo, root, path, snapshot)?.ok_or_else(|| {
        Error::InvalidInput("dump needs the path of a file in the snapshot".into())
    })?;
    if node.kind != NodeKind::File {
        return Err(Error::InvalidInput(
            format!(
                "{path} is a {:?}, not a file; dump writes one file",
                node.kind
            )
            .to_lowercase(),
        ));
    }
    let mut written = 0u64;
    // On an object store: one request per pack touched.
    let _plan = repo.reader().plan_reads([node.content.as_slice()]);
    repo.read_blobs(&node.content, |bytes| {
        out.write_all(bytes)
            .map_err(|e| Error::io("writing", "standard output", e))?;
        written += bytes.len() as u64;
        Ok(())
    })?;
    out.flush()
        .map_err(|e| Error::io("writing", "standard output", e))?;
    if written != node.size {
        return Err(Error::corrupt(
            "file",
            path,
            format!(
                "content has {written} bytes, the snapshot says {}",
                node.size
            ),
        ));
    }
    Ok(written)
}

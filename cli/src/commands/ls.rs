//! `coffer ls`: list a snapshot's files.

use super::Context_;
use anyhow::Result;
use coffer_repo::format::tree::NodeKind;
use coffer_repo::ops::walk;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Snapshot id, unique id prefix, or `latest`
    pub snapshot: String,
    /// Only this path and what is below it
    pub path: Option<String>,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

pub fn run(ctx: &Context_, args: Args) -> Result<u8> {
    let repo = super::open_repo(ctx)?;
    let all = super::load_snapshots(&repo)?;
    let (id, snap) = all.resolve(&args.snapshot)?;
    let (root, prefix) = match args
        .path
        .as_deref()
        .map(|p| walk::split_path(p))
        .filter(|p| !p.is_empty())
    {
        None => (snap.tree, String::new()),
        Some(parts) => {
            let path = format!("/{}", parts.join("/"));
            let node = walk::find(&repo, &snap.tree, &path, &id.short())?;
            match node {
                Some(n) if n.kind == NodeKind::Dir => {
                    print_node(&path, &n, args.json)?;
                    (n.subtree.unwrap_or(snap.tree), path)
                }
                Some(n) => {
                    print_node(&path, &n, args.json)?;
                    return Ok(crate::exit::OK);
                }
                None => (snap.tree, String::new()),
            }
        }
    };
    // `walk_local` builds each path from the names' exact bytes, so that human output shows a
    // name that is not UTF-8 byte for byte (`\xNN`) where `path` holds it lossily.
    let base = if prefix.is_empty() { "/" } else { &prefix };
    walk::walk_local(
        &repo,
        &root,
        &prefix,
        Path::new(base),
        &mut |path, exact, node| {
            print_node_exact(path, exact.as_os_str().as_bytes(), node, args.json)?;
            Ok(true)
        },
    )?;
    Ok(crate::exit::OK)
}

fn print_node(
    path: &str,
    node: &coffer_repo::format::tree::Node,
    json: bool,
) -> coffer_repo::Result<()> {
    print_node_exact(path, path.as_bytes(), node, json)
}

/// One line of the listing: JSON with the (lossy UTF-8) `path`, or a human line showing `exact`,
/// the path's bytes, escaped (`crate::escape::name_bytes`).
fn print_node_exact(
    path: &str,
    exact: &[u8],
    node: &coffer_repo::format::tree::Node,
    json: bool,
) -> coffer_repo::Result<()> {
    if json {
        let v = serde_json::json!({
            "path": path, "type": node.kind, "mode": node.mode, "size": node.size,
            "mtime_ns": node.mtime_ns, "uid": node.uid, "gid": node.gid, "target": node.target,
            "device": node.device, "links": node.links.unwrap_or(1),
        });
        outln!("{v}");
        return Ok(());
    }
    let kind = match node.kind {
        NodeKind::Dir => 'd',
        NodeKind::File => '-',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Chardev => 'c',
        NodeKind::Blockdev => 'b',
    };
    // A device shows its number where a file shows its size, as `ls -l` does.
    let size = match node.device {
        Some(d) => format!("{}, {}", d.major, d.minor),
        None => node.size.to_string(),
    };
    let mtime = jiff::Timestamp::from_nanosecond(i128::from(node.mtime_ns))
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default();
    // The exact target bytes when they decode; the lossy text when `target_bytes` is damaged.
    let suffix = match (&node.target, node.target_raw()) {
        (Some(_), Ok(raw)) => format!(" -> {}", crate::escape::name_bytes(&raw)),
        (Some(t), Err(_)) => format!(" -> {}", crate::escape::name(t)),
        (None, _) => String::new(),
    };
    outln!(
        "{} {:>3} {:>5}/{:<5} {:>12}  {}  {}{}",
        crate::output::mode(kind, node.mode),
        node.links.unwrap_or(1),
        node.uid,
        node.gid,
        size,
        mtime,
        crate::escape::name_bytes(exact),
        suffix
    );
    Ok(())
}

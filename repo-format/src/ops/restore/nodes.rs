//! Restore's nodes other than file contents: symlinks, hard links to a file restored before,
//! FIFOs and device nodes, each made under a temporary name in its directory
//! ([`crate::fs::safe`]), given owner, mode and time without following anything, and renamed
//! into place. A device node needs `CAP_MKNOD` (root outside a
//! user namespace): without it, the node is left out with a [`RestoreWarning`] and the restore
//! goes on.
//!
//! May use: `fs/`, `format/` (tree nodes).

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::fs::safe::Dir;
use nix::sys::stat::SFlag;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// An entry of the snapshot that the restore could not recreate; everything else was restored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RestoreWarning {
    /// Where it would have gone.
    pub path: PathBuf,
    /// Why it is not there (or, with `restored`, what it lacks).
    pub reason: String,
    /// The entry was restored, without some of its metadata (extended attributes the
    /// restoring user or the file system cannot set): a warning, not a failure.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub restored: bool,
}

impl std::fmt::Display for RestoreWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.restored {
            write!(f, "{}: restored, but {}", self.path.display(), self.reason)
        } else {
            write!(f, "{}: not restored: {}", self.path.display(), self.reason)
        }
    }
}

/// Creates the symlink `name` in `dir` under a fresh temporary name, sets its owner and time
/// (on the link itself), then renames it to `name`: replacing what is there with `overwrite`
/// (a symlink there is replaced, never followed), else only if nothing is.
pub(super) fn restore_symlink(
    dir: &Dir,
    name: &OsStr,
    node: &Node,
    dest: &Path,
    overwrite: bool,
) -> Result<Option<RestoreWarning>> {
    let target = node.target_raw()?;
    let temp = dir
        .create_temp_symlink(OsStr::from_bytes(&target), name)
        .map_err(|e| Error::io("creating symlink", dest, e))?;
    // EPERM for non-root users is expected and not an error.
    let _ = dir.set_symlink_owner(&temp, node.uid, node.gid);
    let failed = xattrs_in(dir, &temp, node);
    let t = super::files::mtime(node);
    let result = dir
        .set_symlink_times(&temp, t.unix_seconds(), t.nanoseconds())
        .map_err(|e| Error::io("setting the modification time of", dest, e))
        .and_then(|()| rename_into_place(dir, &temp, name, dest, overwrite, "creating symlink"));
    if result.is_err() {
        let _ = dir.remove_file(&temp);
    }
    result.map(|()| super::files::xattr_warning(dest, failed))
}

/// Sets `node`'s extended attributes on `temp` in `dir`, not following it; returns a line for
/// each one that could not be set.
fn xattrs_in(dir: &Dir, temp: &OsStr, node: &Node) -> Vec<String> {
    let (values, mut failed) = node.xattr_values();
    failed.extend(crate::fs::xattr::apply_in(dir.file(), temp, &values));
    failed
}

/// Renames the finished temporary node `temp` to `name` (over what is there only with
/// `overwrite`: otherwise an existing name is [`Error::WouldOverwrite`]).
fn rename_into_place(
    dir: &Dir,
    temp: &OsStr,
    name: &OsStr,
    dest: &Path,
    overwrite: bool,
    what: &'static str,
) -> Result<()> {
    dir.rename(temp, name, overwrite).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::WouldOverwrite(dest.to_path_buf())
        } else {
            Error::io(what, dest, e)
        }
    })
}

/// Makes `dest` (in `dir`) a hard link to `first` (in `first_dir`), already restored, under a
/// temporary name renamed into place: over what is there only if `replacing`.
pub(super) fn restore_link(
    first_dir: &Dir,
    first: &Path,
    dir: &Dir,
    dest: &Path,
    replacing: bool,
) -> Result<()> {
    let name = dest.file_name().unwrap_or_default();
    let temp = dir
        .link_temp(first_dir, first.file_name().unwrap_or_default(), name)
        .map_err(|e| Error::io("linking", dest, e))?;
    let result = dir.rename(&temp, name, replacing).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::WouldOverwrite(dest.to_path_buf())
        } else {
            Error::io("linking", dest, e)
        }
    });
    if result.is_err() {
        let _ = dir.remove_file(&temp);
    }
    result
}

/// Splits the files to restore into those to write and those to link, restic's rule: of the
/// nodes in the restored set that are links to one file ([`Node::link_group`]), the first is
/// written and the others become hard links to it. Returns the files to write and, for each
/// link, the file it links to, its destination and whether something is there.
#[allow(clippy::type_complexity)]
pub(super) fn split_links<'a>(
    files: Vec<(&'a PathBuf, &'a Node, bool)>,
) -> (
    Vec<(&'a PathBuf, &'a Node, bool)>,
    Vec<(&'a PathBuf, &'a PathBuf, bool)>,
) {
    let mut first: std::collections::HashMap<(u64, u64), &PathBuf> = Default::default();
    let mut write = Vec::with_capacity(files.len());
    let mut links = Vec::new();
    for (dest, node, exists) in files {
        match node.link_group() {
            Some(group) => match first.get(&group) {
                Some(target) => links.push((*target, dest, exists)),
                None => {
                    first.insert(group, dest);
                    write.push((dest, node, exists));
                }
            },
            None => write.push((dest, node, exists)),
        }
    }
    (write, links)
}

/// Creates the FIFO or device node `node` as `name` in `dir`, replacing what is there only with
/// `overwrite`. `Ok(Some(_))`: a device node this process may not create, left out.
pub(super) fn restore_special(
    dir: &Dir,
    name: &OsStr,
    node: &Node,
    dest: &Path,
    overwrite: bool,
) -> Result<Option<RestoreWarning>> {
    let (kind, device) = match (node.kind, node.device) {
        (NodeKind::Fifo, _) => (SFlag::S_IFIFO, 0),
        (NodeKind::Chardev, Some(d)) => (SFlag::S_IFCHR, nix::sys::stat::makedev(d.major, d.minor)),
        (NodeKind::Blockdev, Some(d)) => {
            (SFlag::S_IFBLK, nix::sys::stat::makedev(d.major, d.minor))
        }
        _ => {
            return Err(Error::corrupt(
                "tree",
                dest.display(),
                "a special file without its kind or device number",
            ))
        }
    };
    let temp = match dir.create_temp_node(name, kind, device) {
        Ok(temp) => temp,
        Err(e)
            if e.raw_os_error() == Some(nix::errno::Errno::EPERM as i32)
                && node.kind != NodeKind::Fifo =>
        {
            return Ok(Some(RestoreWarning {
                path: dest.to_path_buf(),
                reason: "creating a device node needs root (CAP_MKNOD)".into(),
                restored: false,
            }))
        }
        Err(e) => return Err(Error::io("creating", dest, e)),
    };
    // EPERM for non-root users is expected and not an error. The owner first: changing it
    // clears setuid and setgid bits, which the mode then sets.
    let _ = dir.set_symlink_owner(&temp, node.uid, node.gid);
    let mut failed = Vec::new();
    let nanos = node.mtime_ns.rem_euclid(1_000_000_000) as u32;
    let seconds = node.mtime_ns.div_euclid(1_000_000_000);
    let result = dir
        .set_mode(&temp, node.mode)
        .map_err(|e| Error::io("setting permissions of", dest, e))
        .and_then(|()| {
            // After the mode: an access ACL sets the group bits to its mask, as they were.
            failed = xattrs_in(dir, &temp, node);
            dir.set_symlink_times(&temp, seconds, nanos)
                .map_err(|e| Error::io("setting the modification time of", dest, e))
        })
        .and_then(|()| rename_into_place(dir, &temp, name, dest, overwrite, "creating"));
    if result.is_err() {
        let _ = dir.remove_file(&temp);
    }
    result.map(|()| super::files::xattr_warning(dest, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(inode: u64, links: Option<u64>) -> Node {
        Node {
            inode,
            links,
            device_id: links.map(|_| 66),
            ..Node::for_tests("f", NodeKind::File)
        }
    }

    #[test]
    fn the_first_link_in_the_restored_set_is_written_and_the_others_linked_to_it() {
        let paths: Vec<PathBuf> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(PathBuf::from)
            .collect();
        // a, c and e are links to inode 1; b has one link; d shares inode 1 but had one link
        // (another file system's inode numbers, or a link made after the backup): written.
        let nodes = [
            file(1, Some(3)),
            file(2, None),
            file(1, Some(3)),
            file(1, None),
            file(1, Some(3)),
        ];
        let files = paths
            .iter()
            .zip(&nodes)
            .map(|(p, n)| (p, n, false))
            .collect();
        let (write, links) = split_links(files);
        let written: Vec<&str> = write.iter().map(|(p, _, _)| p.to_str().unwrap()).collect();
        assert_eq!(written, ["a", "b", "d"]);
        let linked: Vec<(&str, &str)> = links
            .iter()
            .map(|(to, from, _)| (to.to_str().unwrap(), from.to_str().unwrap()))
            .collect();
        assert_eq!(linked, [("a", "c"), ("a", "e")]);
        // Another file system, same inode number: not a link.
        let mut other = file(1, Some(2));
        other.device_id = Some(67);
        assert_ne!(other.link_group(), nodes[0].link_group());
    }
}

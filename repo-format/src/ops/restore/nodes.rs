//! Restore's special files: FIFOs and device nodes, made under a temporary name in their
//! directory (as symlinks are, [`crate::fs::safe`]), given owner, mode and time without
//! following anything, and renamed into place. A device node needs `CAP_MKNOD` (root outside a
//! user namespace): without it, the node is left out with a [`RestoreWarning`] and the restore
//! goes on.
//!
//! May use: `fs/`, `format/` (tree nodes).

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind};
use crate::fs::safe::Dir;
use nix::sys::stat::SFlag;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// An entry of the snapshot that the restore could not recreate; everything else was restored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RestoreWarning {
    /// Where it would have gone.
    pub path: PathBuf,
    /// Why it is not there.
    pub reason: String,
}

impl std::fmt::Display for RestoreWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: not restored: {}", self.path.display(), self.reason)
    }
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
            }))
        }
        Err(e) => return Err(Error::io("creating", dest, e)),
    };
    // EPERM for non-root users is expected and not an error. The owner first: changing it
    // clears setuid and setgid bits, which the mode then sets.
    let _ = dir.set_symlink_owner(&temp, node.uid, node.gid);
    let seconds = node.mtime_ns.div_euclid(1_000_000_000);
    let nanos = node.mtime_ns.rem_euclid(1_000_000_000) as u32;
    let result = dir
        .set_mode(&temp, node.mode)
        .map_err(|e| Error::io("setting permissions of", dest, e))
        .and_then(|()| {
            dir.set_symlink_times(&temp, seconds, nanos)
                .map_err(|e| Error::io("setting the modification time of", dest, e))
        })
        .and_then(|()| {
            dir.rename(&temp, name, overwrite).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::WouldOverwrite(dest.to_path_buf())
                } else {
                    Error::io("creating", dest, e)
                }
            })
        });
    if result.is_err() {
        let _ = dir.remove_file(&temp);
    }
    result.map(|()| None)
}

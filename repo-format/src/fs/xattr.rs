//! Extended attributes, with POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`)
//! and file capabilities (`security.capability`): read on backup from a path without following
//! a symlink, set on restore through the open file or directory (or, for a symlink or a special
//! file, by its name below an open directory, without following it).
//!
//! Names and values are plain bytes here; which names a snapshot keeps and the limits are the
//! format's (`format::tree::xattrs_from`). What cannot be read or set is reported, never fatal.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use xattr::FileExt;

/// Whether an error means the file system keeps no extended attributes (not worth a word).
fn unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::errno::Errno::EOPNOTSUPP as i32)
        || e.raw_os_error() == Some(nix::errno::Errno::ENOTSUP as i32)
}

/// Whether an attribute vanished between listing and reading it.
fn vanished(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::errno::Errno::ENODATA as i32)
}

/// The extended attributes of `path` (not following a symlink) whose names `keep` accepts, as
/// (name, value), and a note for each one that could not be read (a name that is not UTF-8, an
/// error).
pub fn read(path: &Path, keep: impl Fn(&str) -> bool) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    let names: Vec<OsString> = match xattr::list(path) {
        Ok(names) => names.collect(),
        Err(e) if unsupported(&e) => return (kept, skipped),
        Err(e) => {
            skipped.push(format!("listing extended attributes: {e}"));
            return (kept, skipped);
        }
    };
    for raw in names {
        let Some(name) = raw.to_str() else {
            skipped.push(format!(
                "extended attribute {:?}: the name is not UTF-8",
                raw.to_string_lossy()
            ));
            continue;
        };
        if !keep(name) {
            continue;
        }
        match xattr::get(path, name) {
            Ok(Some(value)) => kept.push((name.to_string(), value)),
            Ok(None) => {}
            Err(e) if vanished(&e) => {}
            Err(e) => skipped.push(format!("extended attribute {name}: {e}")),
        }
    }
    (kept, skipped)
}

/// Sets `xattrs` on an open file or directory. Returns one line per attribute that could not
/// be set (the restoring user may lack the right, or the file system the support).
pub fn apply(file: &File, xattrs: &[(String, Vec<u8>)]) -> Vec<String> {
    set_each(xattrs, |name, value| file.set_xattr(name, value))
}

/// Sets `xattrs` on `name` in the open directory `dir`, not following it if it is a symlink
/// (through `/proc/self/fd`, so no path outside the directory handle is resolved).
pub fn apply_in(dir: &File, name: &OsStr, xattrs: &[(String, Vec<u8>)]) -> Vec<String> {
    let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    set_each(xattrs, |n, value| xattr::set(&path, n, value))
}

fn set_each(
    xattrs: &[(String, Vec<u8>)],
    mut set: impl FnMut(&str, &[u8]) -> io::Result<()>,
) -> Vec<String> {
    let mut failed = Vec::new();
    for (name, value) in xattrs {
        if let Err(e) = set(name, value) {
            failed.push(format!("{name}: {e}"));
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_attributes_round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"x").unwrap();
        if let Err(e) = xattr::set(&a, "user.comment", b"hello") {
            // A file system without user attributes (some tmpfs builds): nothing to test.
            assert!(unsupported(&e), "{e}");
            return;
        }
        xattr::set(&a, "user.bin", &[0u8, 255, 10]).unwrap();
        let (mut kept, skipped) = read(&a, |n| n.starts_with("user."));
        kept.sort();
        assert!(skipped.is_empty(), "{skipped:?}");
        let names: Vec<&str> = kept.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names, ["user.bin", "user.comment"]);
        assert!(read(&a, |_| false).0.is_empty());
        let b = dir.path().join("b");
        let file = File::create(&b).unwrap();
        assert!(apply(&file, &kept).is_empty());
        let mut again = read(&b, |_| true).0;
        again.sort();
        assert_eq!(again, kept);
    }

    #[test]
    fn an_attribute_that_cannot_be_set_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("a")).unwrap();
        // No such namespace: the kernel refuses it.
        let bad = [("nonsense.x".to_string(), b"1".to_vec())];
        let failed = apply(&file, &bad);
        assert_eq!(failed.len(), 1);
        assert!(failed[0].starts_with("nonsense.x: "), "{failed:?}");
    }
}

//! Restore's plan, pure: which snapshot paths the includes select (and whether every include
//! was found), where each entry goes below the root (plain names only), and in which batches
//! and order the files' contents are written. Unit-tested without a repository.
//!
//! May use: `format/` values and `ops::walk::split_path`.

use crate::error::{Error, Result};
use std::ffi::OsStr;
use std::ops::Range;
use std::path::Path;

/// Files written by one thread in one go at most: one directory's files, so two threads rarely
/// create files in the same directory at once (creating a file locks its directory)...
pub(super) const BATCH_FILES: usize = 64;
/// ...and at most this many bytes, so a directory of large files is shared out.
pub(super) const BATCH_BYTES: u64 = 64 << 20;

/// The include paths of a restore, split into names, and which of them the walk has met.
pub(super) struct Includes {
    paths: Vec<Vec<String>>,
    matched: Vec<bool>,
}

impl Includes {
    /// Parses `/opt/app` or `opt/app` style paths; none selects everything.
    pub fn new(includes: &[String]) -> Includes {
        let paths: Vec<Vec<String>> = includes
            .iter()
            .map(|i| {
                crate::ops::walk::split_path(i)
                    .into_iter()
                    .map(String::from)
                    .collect()
            })
            .collect();
        let matched = vec![false; paths.len()];
        Includes { paths, matched }
    }

    /// Whether the snapshot path `path` is restored (or leads to something that is), and if so
    /// records which includes it reaches.
    pub fn admit(&mut self, path: &str) -> bool {
        if self.paths.is_empty() {
            return true;
        }
        let parts: Vec<&str> = crate::ops::walk::split_path(path);
        let on_the_way = self.paths.iter().any(|inc| {
            let n = inc.len().min(parts.len());
            inc[..n].iter().zip(&parts[..n]).all(|(a, b)| a == b)
        });
        if !on_the_way {
            return false;
        }
        for (i, inc) in self.paths.iter().enumerate() {
            if parts.len() >= inc.len() && inc.iter().zip(&parts).all(|(a, b)| a == b) {
                self.matched[i] = true;
            }
        }
        true
    }

    /// The position of the first include no admitted path reached.
    pub fn first_unmatched(&self) -> Option<usize> {
        self.matched.iter().position(|m| !m)
    }
}

/// Splits files (each given by its destination's parent and its size, in plan order) into
/// batches of one directory's files, at most [`BATCH_FILES`] and about [`BATCH_BYTES`] each,
/// biggest first so that one large file does not finish alone at the end.
pub(super) fn batches(files: &[(Option<&Path>, u64)]) -> Vec<Range<usize>> {
    let mut batches: Vec<Range<usize>> = Vec::new();
    let mut start = 0;
    let mut bytes_in_batch = 0;
    for (i, (parent, size)) in files.iter().enumerate() {
        let same_dir = i > start && *parent == files[start].0;
        if i > start && (!same_dir || i - start >= BATCH_FILES || bytes_in_batch >= BATCH_BYTES) {
            batches.push(start..i);
            start = i;
            bytes_in_batch = 0;
        }
        bytes_in_batch += size;
    }
    if start < files.len() {
        batches.push(start..files.len());
    }
    batches
        .sort_by_key(|r| std::cmp::Reverse(files[r.clone()].iter().map(|(_, n)| n).sum::<u64>()));
    batches
}

/// `dest`'s parent relative to `root`, and its name; only plain names are accepted.
pub(super) fn place<'d>(root: &Path, dest: &'d Path) -> Result<(&'d Path, &'d OsStr)> {
    let rel = dest.strip_prefix(root).map_err(|_| not_below(root, dest))?;
    if !rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return Err(not_below(root, dest));
    }
    match (rel.parent(), rel.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(not_below(root, dest)),
    }
}

pub(super) fn not_below(root: &Path, dest: &Path) -> Error {
    Error::io(
        "restoring",
        dest,
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("not a plain name below {}", root.display()),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_below_the_root_are_restored() {
        let root = Path::new("/t/tgt");
        let (parent, name) = place(root, Path::new("/t/tgt/a/b/c.txt")).unwrap();
        assert_eq!((parent, name), (Path::new("a/b"), OsStr::new("c.txt")));
        let (parent, name) = place(root, Path::new("/t/tgt/top")).unwrap();
        assert_eq!((parent, name), (Path::new(""), OsStr::new("top")));
        // A relative destination without a parent: the root is empty (the current directory).
        let (parent, name) = place(Path::new(""), Path::new("files")).unwrap();
        assert_eq!((parent, name), (Path::new(""), OsStr::new("files")));
        // Names from a damaged or hostile tree that would climb out, and the root itself.
        for bad in [
            "/t/tgt/a/../../etc/passwd",
            "/t/tgt/..",
            "/t/tgt",
            "/etc/passwd",
        ] {
            assert!(place(root, Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn includes_admit_the_way_down_and_what_is_below_and_name_what_was_not_found() {
        let mut all = Includes::new(&[]);
        assert!(all.admit("/anything"));
        assert_eq!(all.first_unmatched(), None);

        let mut inc = Includes::new(&["/opt/app".into(), "etc/hosts".into(), "/nope".into()]);
        assert!(inc.admit("/opt")); // on the way
        assert!(!inc.admit("/var"));
        assert!(!inc.admit("/opt/other"));
        assert!(!inc.admit("/opt/application")); // a name, not a prefix
        assert_eq!(inc.first_unmatched(), Some(0));
        assert!(inc.admit("/opt/app"));
        assert!(inc.admit("/opt/app/bin/tool")); // below
        assert!(inc.admit("/etc/hosts"));
        assert_eq!(inc.first_unmatched(), Some(2));
    }

    #[test]
    fn batches_hold_one_directorys_files_within_bounds_biggest_first() {
        let (a, b) = (Some(Path::new("/t/a")), Some(Path::new("/t/b")));
        let mib = 1 << 20;
        let mut files = vec![(a, 10), (a, 20), (b, 100 * mib), (b, 5), (a, 1)];
        // A directory of many small files is split every BATCH_FILES.
        files.extend(std::iter::repeat_n(
            (Some(Path::new("/t/c")), 1),
            BATCH_FILES + 1,
        ));
        let got = batches(&files);
        // Sorted by bytes, biggest first; a batch is cut once it holds BATCH_BYTES.
        assert_eq!(
            got,
            vec![
                2..3,
                5..5 + BATCH_FILES,
                0..2,
                3..4,
                4..5,
                5 + BATCH_FILES..files.len()
            ]
        );
        let mut covered: Vec<usize> = got.into_iter().flatten().collect();
        covered.sort();
        assert_eq!(covered, (0..files.len()).collect::<Vec<_>>());
        assert!(batches(&[]).is_empty());
    }
}

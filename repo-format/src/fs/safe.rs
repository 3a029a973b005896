//! File-system operations relative to an open directory, for writing below a directory that
//! someone else may change at the same time (a restore target whose subdirectories belong to
//! other users, the cache).
//!
//! The guarantees: a [`Dir`] below a trusted root is reached one component at a time with
//! `O_DIRECTORY|O_NOFOLLOW`, so no symlink below the root is ever followed and no path is
//! resolved again after it was checked; files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`
//! under a fresh random name (so nothing that already exists, a planted symlink included, is
//! ever opened for writing), and put in place with `renameat`, which replaces a name and never
//! follows it. Owner, mode and times are then set on the open descriptor, or for a symlink
//! with the `AT_SYMLINK_NOFOLLOW` variants. Only the trusted root itself is opened by path,
//! following symlinks: the operator chose it.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path};

/// What is at a name in a directory (not following a symlink).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    Symlink,
    /// A regular file or anything else that is not a directory or symlink.
    Other,
}

/// An open directory. Every operation names a single entry of it.
#[derive(Debug)]
pub struct Dir(File);

fn to_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// The error for a name that is not one plain component (`""`, `.`, `..`, or with a `/`).
fn bad_name(name: &OsStr) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{:?} is not a single file name (empty, `.`, `..` or containing `/` or NUL)",
            name
        ),
    )
}

/// Checks that `name` is one plain component: it cannot climb out of or skip over a directory.
pub fn check_name(name: &OsStr) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(bad_name(name));
    }
    if bytes.contains(&0) {
        return Err(bad_name(name));
    }
    Ok(())
}

/// The longest name most file systems take (NAME_MAX).
const NAME_MAX: usize = 255;

/// A fresh temporary name for `name`: `.NAME.coffer-<16 random hex digits>`, with `NAME`
/// shortened so the whole stays within `NAME_MAX` (255) bytes.
pub fn temp_name(name: &OsStr) -> io::Result<OsString> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
    let suffix = format!(".coffer-{}", hex::encode(random));
    let keep = NAME_MAX - 1 - suffix.len();
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(NAME_MAX);
    out.push(b'.');
    out.extend_from_slice(&bytes[..bytes.len().min(keep)]);
    out.extend_from_slice(suffix.as_bytes());
    Ok(OsString::from_vec(out))
}

/// The error for a symlink met where a directory was to be opened.
fn symlink_not_followed() -> io::Error {
    io::Error::other("is a symlink, which is never followed here")
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

impl Dir {
    /// Opens the trusted directory at `path`, following symlinks in it (the operator chose it).
    pub fn open_trusted(path: &Path) -> io::Result<Dir> {
        let fd = nix::fcntl::open(path, DIR_FLAGS, Mode::empty()).map_err(to_io)?;
        Ok(Dir(File::from(fd)))
    }

    /// Opens the directory `name` of this one; a symlink there is not followed (an error).
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        check_name(name)?;
        let fd = nix::fcntl::openat(
            self.0.as_fd(),
            name,
            DIR_FLAGS | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // O_DIRECTORY|O_NOFOLLOW on a symlink gives ENOTDIR (or ELOOP): say which it was.
            Errno::ENOTDIR | Errno::ELOOP if matches!(self.kind(name), Ok(Some(Kind::Symlink))) => {
                symlink_not_followed()
            }
            e => to_io(e),
        })?;
        Ok(Dir(File::from(fd)))
    }

    /// Opens the directory `rel` below this one, one component at a time, following no
    /// symlink. `rel` may only hold plain names (no `..`, not absolute).
    pub fn open_path(&self, rel: &Path) -> io::Result<Dir> {
        let mut dir: Option<Dir> = None;
        for component in rel.components() {
            let Component::Normal(name) = component else {
                return Err(bad_name(rel.as_os_str()));
            };
            let next = dir.as_ref().unwrap_or(self).open_dir(name)?;
            dir = Some(next);
        }
        match dir {
            Some(dir) => Ok(dir),
            None => self.try_clone(),
        }
    }

    /// Another handle on the same directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir(self.0.try_clone()?))
    }

    /// The open directory, for setting its owner, mode and times through the descriptor.
    pub fn file(&self) -> &File {
        &self.0
    }

    /// What is at `name`, without following a symlink; `None` if nothing is.
    pub fn kind(&self, name: &OsStr) -> io::Result<Option<Kind>> {
        check_name(name)?;
        match nix::sys::stat::fstatat(self.0.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let format = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                Ok(Some(if format == SFlag::S_IFDIR {
                    Kind::Dir
                } else if format == SFlag::S_IFLNK {
                    Kind::Symlink
                } else {
                    Kind::Other
                }))
            }
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(to_io(e)),
        }
    }

    /// The names in this directory (without `.` and `..`) and what each is (not following
    /// symlinks).
    pub fn entries(&self) -> io::Result<Vec<(OsString, Kind)>> {
        // A descriptor of its own: reading a directory moves its offset.
        let fd =
            nix::fcntl::openat(self.0.as_fd(), ".", DIR_FLAGS, Mode::empty()).map_err(to_io)?;
        let mut listing = nix::dir::Dir::from_fd(fd).map_err(to_io)?;
        let mut out = Vec::new();
        for entry in listing.iter() {
            let entry = entry.map_err(to_io)?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let kind = match entry.file_type() {
                Some(nix::dir::Type::Directory) => Kind::Dir,
                Some(nix::dir::Type::Symlink) => Kind::Symlink,
                Some(_) => Kind::Other,
                // The file system does not say: look.
                None => match self.kind(name)? {
                    Some(kind) => kind,
                    None => continue,
                },
            };
            out.push((name.to_os_string(), kind));
        }
        Ok(out)
    }

    /// Creates the directory `name` with `mode` (exclusively: fails if anything is there).
    pub fn create_dir(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        check_name(name)?;
        nix::sys::stat::mkdirat(self.0.as_fd(), name, Mode::from_bits_truncate(mode)).map_err(to_io)
    }

    /// Creates a new file for writing under a fresh temporary name for `name` ([`temp_name`]),
    /// mode `mode`, with `O_CREAT|O_EXCL|O_NOFOLLOW`: nothing that existed is ever opened.
    /// Returns the temporary name and the open file.
    pub fn create_temp_file(&self, name: &OsStr, mode: u32) -> io::Result<(OsString, File)> {
        check_name(name)?;
        loop {
            let temp = temp_name(name)?;
            match nix::fcntl::openat(
                self.0.as_fd(),
                temp.as_os_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode),
            ) {
                Ok(fd) => return Ok((temp, File::from(fd))),
                // Someone took that random name: take another.
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(to_io(e)),
            }
        }
    }

    /// Creates a symlink to `target` under a fresh temporary name for `name`; returns the name.
    pub fn create_temp_symlink(&self, target: &OsStr, name: &OsStr) -> io::Result<OsString> {
        check_name(name)?;
        loop {
            let temp = temp_name(name)?;
            match nix::unistd::symlinkat(target, self.0.as_fd(), temp.as_os_str()) {
                Ok(()) => return Ok(temp),
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(to_io(e)),
            }
        }
    }

    /// Opens the existing regular file `name` for reading; a symlink there is an error.
    pub fn open_file(&self, name: &OsStr) -> io::Result<File> {
        check_name(name)?;
        let fd = nix::fcntl::openat(
            self.0.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(to_io)?;
        Ok(File::from(fd))
    }

    /// Renames `from` to `to` in this directory. With `replace`, whatever is at `to` is
    /// replaced (a symlink there is replaced, not followed). Without, the rename fails with
    /// `AlreadyExists` if `to` exists, atomically where the file system supports
    /// `RENAME_NOREPLACE`; elsewhere (`EINVAL`/`ENOSYS`) a plain rename is done.
    pub fn rename(&self, from: &OsStr, to: &OsStr, replace: bool) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        #[cfg(target_os = "linux")]
        if !replace {
            match nix::fcntl::renameat2(
                self.0.as_fd(),
                from,
                self.0.as_fd(),
                to,
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            ) {
                Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {}
                other => return other.map_err(to_io),
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = replace;
        nix::fcntl::renameat(self.0.as_fd(), from, self.0.as_fd(), to).map_err(to_io)
    }

    /// Removes the non-directory `name` (a symlink itself, never its target).
    pub fn remove_file(&self, name: &OsStr) -> io::Result<()> {
        check_name(name)?;
        nix::unistd::unlinkat(
            self.0.as_fd(),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .map_err(to_io)
    }

    /// Sets the owner of the symlink `name` itself.
    pub fn set_symlink_owner(&self, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        check_name(name)?;
        nix::unistd::fchownat(
            self.0.as_fd(),
            name,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(to_io)
    }

    /// Sets the access and modification times of the symlink `name` itself.
    pub fn set_symlink_times(&self, name: &OsStr, seconds: i64, nanos: u32) -> io::Result<()> {
        check_name(name)?;
        let t = nix::sys::time::TimeSpec::new(seconds, i64::from(nanos));
        nix::sys::stat::utimensat(
            self.0.as_fd(),
            name,
            &t,
            &t,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn names_that_could_leave_the_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "/", "a\0b"] {
            assert!(check_name(OsStr::new(bad)).is_err(), "{bad:?}");
        }
        for good in ["a", ".a", "...", "a b", "\u{e9}"] {
            check_name(OsStr::new(good)).unwrap();
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = Dir::open_trusted(tmp.path()).unwrap();
        assert!(root.open_path(Path::new("../x")).is_err());
        assert!(root.open_path(Path::new("/etc")).is_err());
        assert!(root.create_dir(OsStr::new(".."), 0o700).is_err());
    }

    #[test]
    fn temporary_names_are_random_and_fit_name_max() {
        let a = temp_name(OsStr::new("index.php")).unwrap();
        let b = temp_name(OsStr::new("index.php")).unwrap();
        assert_ne!(a, b);
        let a = a.to_str().unwrap();
        assert!(a.starts_with(".index.php.coffer-"), "{a}");
        assert_eq!(a.len(), ".index.php.coffer-".len() + 16);
        let long = "x".repeat(255);
        let t = temp_name(OsStr::new(&long)).unwrap();
        assert_eq!(t.len(), NAME_MAX);
        // A long name whose bytes are cut inside a character still makes a valid name.
        let t = temp_name(OsStr::new(&"\u{e9}".repeat(127))).unwrap();
        check_name(&t).unwrap();
        assert!(t.len() <= NAME_MAX);
    }

    #[test]
    fn a_symlinked_directory_below_the_root_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let root_path = tmp.path().join("root");
        std::fs::create_dir_all(root_path.join("a")).unwrap();
        std::os::unix::fs::symlink(&outside, root_path.join("a/link")).unwrap();
        let root = Dir::open_trusted(&root_path).unwrap();
        let e = root.open_path(Path::new("a/link")).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(root.open_path(Path::new("a")).is_ok());
        // The root itself may be reached through a symlink: the operator chose it.
        std::os::unix::fs::symlink(&root_path, tmp.path().join("root-link")).unwrap();
        let via_link = Dir::open_trusted(&tmp.path().join("root-link")).unwrap();
        assert_eq!(via_link.kind(OsStr::new("a")).unwrap(), Some(Kind::Dir));
        assert_eq!(
            via_link
                .open_dir(OsStr::new("a"))
                .unwrap()
                .kind(OsStr::new("link"))
                .unwrap(),
            Some(Kind::Symlink)
        );
        assert_eq!(via_link.kind(OsStr::new("none")).unwrap(), None);
    }

    #[test]
    fn files_are_created_exclusively_and_renamed_over_a_planted_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        let root_path = tmp.path().join("root");
        std::fs::create_dir(&root_path).unwrap();
        std::os::unix::fs::symlink(&victim, root_path.join("f")).unwrap();
        let root = Dir::open_trusted(&root_path).unwrap();
        let (temp, mut file) = root.create_temp_file(OsStr::new("f"), 0o600).unwrap();
        file.write_all(b"new").unwrap();
        assert_eq!(
            file.metadata().unwrap().permissions().mode() & 0o7777,
            0o600
        );
        drop(file);
        // Without replace, the existing name (the symlink) is kept and the rename fails.
        let e = root.rename(&temp, OsStr::new("f"), false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        root.rename(&temp, OsStr::new("f"), true).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
        assert_eq!(std::fs::read(root_path.join("f")).unwrap(), b"new");
        assert!(!std::fs::symlink_metadata(root_path.join("f"))
            .unwrap()
            .file_type()
            .is_symlink());
        // Reading refuses a symlink.
        std::os::unix::fs::symlink(&victim, root_path.join("g")).unwrap();
        assert!(root.open_file(OsStr::new("g")).is_err());
        let mut s = String::new();
        root.open_file(OsStr::new("f"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "new");
        root.remove_file(OsStr::new("g")).unwrap();
        assert!(victim.exists());
    }

    #[test]
    fn symlinks_are_made_under_a_temporary_name_with_their_own_times() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Dir::open_trusted(tmp.path()).unwrap();
        let temp = root
            .create_temp_symlink(OsStr::new("/nowhere"), OsStr::new("l"))
            .unwrap();
        root.set_symlink_times(&temp, 1_000_000_000, 5).unwrap();
        let uid = std::fs::metadata(tmp.path()).unwrap().uid();
        let gid = std::fs::metadata(tmp.path()).unwrap().gid();
        root.set_symlink_owner(&temp, uid, gid).unwrap();
        root.rename(&temp, OsStr::new("l"), false).unwrap();
        let meta = std::fs::symlink_metadata(tmp.path().join("l")).unwrap();
        assert!(meta.file_type().is_symlink());
        assert_eq!((meta.mtime(), meta.mtime_nsec()), (1_000_000_000, 5));
        assert_eq!(
            std::fs::read_link(tmp.path().join("l")).unwrap(),
            Path::new("/nowhere")
        );
        root.create_dir(OsStr::new("d"), 0o700).unwrap();
        let mode = std::fs::metadata(tmp.path().join("d")).unwrap().mode();
        assert_eq!(mode & 0o7077, 0, "group and others get nothing: {mode:o}");
        assert!(root.create_dir(OsStr::new("d"), 0o700).is_err());
    }
}

//! File-system operations relative to an open directory, for writing below a directory that
//! someone else may change at the same time (a restore target whose subdirectories belong to
//! other users, the cache).
//!
//! The guarantees: a [`Dir`] below a trusted root is reached one component at a time with
//! `O_DIRECTORY|O_NOFOLLOW`, so no symlink below the root is ever followed and no path is
//! resolved again after it was checked; files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`
//! under a fresh random name (so nothing that already exists, a planted symlink included, is
//! ever opened for writing), and put in place with `renameat`, which replaces a name and never
//! follows it; or created without a name (`O_TMPFILE`) and linked to their name when complete,
//! which fails if anything is there (so nothing is replaced or followed, and nothing is left
//! if the process dies first). Owner, mode and times are then set on the open descriptor, or for a symlink
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

/// The marker of every temporary name ([`temp_name`]).
pub const TEMP_MARKER: &str = ".coffer-tmp-";

/// The number of random hex digits at the end of a temporary name.
const TEMP_DIGITS: usize = 16;

/// A fresh temporary name for `name`, owned by this process:
/// `.NAME.coffer-tmp-<process id>-<16 random lowercase hex digits>`, with `NAME` shortened so
/// the whole stays within `NAME_MAX` (255) bytes. Such a name is recognised by
/// [`temp_name_owner`].
pub fn temp_name(name: &OsStr) -> io::Result<OsString> {
    let mut random = [0u8; TEMP_DIGITS / 2];
    getrandom::fill(&mut random).map_err(|e| io::Error::other(e.to_string()))?;
    let suffix = format!(
        "{TEMP_MARKER}{}-{}",
        std::process::id(),
        hex::encode(random)
    );
    let keep = NAME_MAX - 1 - suffix.len();
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(NAME_MAX);
    out.push(b'.');
    out.extend_from_slice(&bytes[..bytes.len().min(keep)]);
    out.extend_from_slice(suffix.as_bytes());
    Ok(OsString::from_vec(out))
}

/// The process id in `name` if it is a name [`temp_name`] makes: a `.`, at least one byte of
/// the original name, [`TEMP_MARKER`], a process id (decimal, no leading zero), `-` and exactly
/// 16 lowercase hex digits, at most `NAME_MAX` bytes. `None` for any other name.
pub fn temp_name_owner(name: &OsStr) -> Option<u32> {
    let bytes = name.as_bytes();
    if bytes.len() > NAME_MAX || bytes.first() != Some(&b'.') {
        return None;
    }
    let (rest, digits) = bytes.split_at(bytes.len().checked_sub(TEMP_DIGITS)?);
    if !digits
        .iter()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    {
        return None;
    }
    let rest = rest.strip_suffix(b"-")?;
    let start = rest
        .iter()
        .rposition(|c| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let (head, pid) = rest.split_at(start);
    let head = head.strip_suffix(TEMP_MARKER.as_bytes())?;
    if head.len() < 2 || pid.first() == Some(&b'0') {
        return None;
    }
    std::str::from_utf8(pid)
        .ok()?
        .parse()
        .ok()
        .filter(|&p| p > 0)
}

/// Whether process `pid` is running on this machine (`kill(pid, 0)`: it exists, ours or
/// another user's). A process that cannot be asked about counts as alive, so nothing of a
/// possibly live process is ever removed.
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return true;
    };
    if pid <= 0 {
        return true;
    }
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(Errno::ESRCH)
    )
}

/// How this process gives an unnamed file a name, found out by the first
/// [`names_unnamed_files`] that could create one: `linkat` of the descriptor itself
/// (`AT_EMPTY_PATH`, which needs `CAP_DAC_READ_SEARCH`), or of `/proc/self/fd/N` (any user,
/// where /proc is mounted), or neither.
#[cfg(target_os = "linux")]
static NAMING: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(NAMING_UNKNOWN);
#[cfg(target_os = "linux")]
const NAMING_UNKNOWN: u8 = 0;
#[cfg(target_os = "linux")]
const NAMING_EMPTY_PATH: u8 = 1;
#[cfg(target_os = "linux")]
const NAMING_PROC: u8 = 2;
#[cfg(target_os = "linux")]
const NAMING_NONE: u8 = 3;

#[cfg(target_os = "linux")]
#[derive(Clone, Copy)]
enum Naming {
    EmptyPath,
    Proc,
}

/// Links the open `file` to `name` in `dir` the way `how` says.
#[cfg(target_os = "linux")]
fn link_fd(file: &File, dir: &Dir, name: &OsStr, how: Naming) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    match how {
        Naming::EmptyPath => nix::unistd::linkat(
            file.as_fd(),
            "",
            dir.0.as_fd(),
            name,
            AtFlags::AT_EMPTY_PATH,
        ),
        Naming::Proc => {
            let path = format!("/proc/self/fd/{}", file.as_raw_fd());
            nix::unistd::linkat(
                dir.0.as_fd(),
                path.as_str(),
                dir.0.as_fd(),
                name,
                AtFlags::AT_SYMLINK_FOLLOW,
            )
        }
    }
}

/// Whether an `O_TMPFILE` open failed because the file system or kernel has no such files.
#[cfg(target_os = "linux")]
fn unnamed_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL)
    )
}

/// Whether this process can name unnamed files (`O_TMPFILE`): found out once, in `dir`, by
/// creating one and naming it with a fresh temporary name (removed at once), first through
/// its descriptor, then through /proc. Until a directory that can hold unnamed files is met,
/// the answer stays open (`true`: [`Dir::create_unnamed_file`] then finds the file system
/// cannot).
#[cfg(target_os = "linux")]
fn names_unnamed_files(dir: &Dir) -> bool {
    use std::sync::atomic::Ordering;
    match NAMING.load(Ordering::Relaxed) {
        NAMING_EMPTY_PATH | NAMING_PROC => return true,
        NAMING_NONE => return false,
        _ => {}
    }
    let Ok(file) = dir.open_unnamed(0o600) else {
        return true;
    };
    let Ok(temp) = temp_name(OsStr::new("probe")) else {
        return true;
    };
    for (how, code) in [
        (Naming::EmptyPath, NAMING_EMPTY_PATH),
        (Naming::Proc, NAMING_PROC),
    ] {
        match link_fd(&file, dir, &temp, how) {
            Ok(()) => {
                let _ = dir.remove_file(&temp);
                NAMING.store(code, Ordering::Relaxed);
                return true;
            }
            // Not permitted this way (no CAP_DAC_READ_SEARCH, no /proc): try the next.
            Err(_) => continue,
        }
    }
    NAMING.store(NAMING_NONE, Ordering::Relaxed);
    false
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

    /// Creates an unnamed regular file in this directory for writing (`O_TMPFILE`), mode
    /// `mode`: it has no name anyone could open or replace, and it vanishes if the process dies
    /// before [`Self::link_unnamed`] names it. `Ok(None)` where this directory cannot have such
    /// files: a file system without `O_TMPFILE` (`EOPNOTSUPP`), a kernel without it (`EISDIR`),
    /// a system other than Linux, or a process that cannot name them
    /// (`names_unnamed_files`); the caller then writes under a temporary name.
    pub fn create_unnamed_file(&self, mode: u32) -> io::Result<Option<File>> {
        #[cfg(target_os = "linux")]
        {
            if !names_unnamed_files(self) {
                return Ok(None);
            }
            match self.open_unnamed(mode) {
                Ok(file) => Ok(Some(file)),
                Err(e) if unnamed_unsupported(&e) => Ok(None),
                Err(e) => Err(e),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = mode;
            Ok(None)
        }
    }

    #[cfg(target_os = "linux")]
    fn open_unnamed(&self, mode: u32) -> io::Result<File> {
        let fd = nix::fcntl::openat(
            self.0.as_fd(),
            ".",
            OFlag::O_WRONLY | OFlag::O_TMPFILE | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(to_io)?;
        Ok(File::from(fd))
    }

    /// Gives the unnamed `file` ([`Self::create_unnamed_file`]) the name `name` in this
    /// directory, complete as it is: `AlreadyExists` if anything is at that name (nothing is
    /// replaced or followed), so a name created meanwhile by someone else is left alone.
    pub fn link_unnamed(&self, file: &File, name: &OsStr) -> io::Result<()> {
        check_name(name)?;
        #[cfg(target_os = "linux")]
        {
            let how = match NAMING.load(std::sync::atomic::Ordering::Relaxed) {
                NAMING_EMPTY_PATH => Naming::EmptyPath,
                NAMING_PROC => Naming::Proc,
                _ => return Err(io::Error::from(io::ErrorKind::Unsupported)),
            };
            link_fd(file, self, name, how).map_err(to_io)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = file;
            Err(io::Error::from(io::ErrorKind::Unsupported))
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

    /// Creates a FIFO or device node (`kind` is `S_IFIFO`, `S_IFCHR` or `S_IFBLK`, `device` its
    /// number) under a fresh temporary name for `name`, mode 0600 until [`Self::set_mode`];
    /// returns the name. Creating a device needs `CAP_MKNOD` (`EPERM` without).
    pub fn create_temp_node(&self, name: &OsStr, kind: SFlag, device: u64) -> io::Result<OsString> {
        check_name(name)?;
        loop {
            let temp = temp_name(name)?;
            match nix::sys::stat::mknodat(
                self.0.as_fd(),
                temp.as_os_str(),
                kind,
                Mode::from_bits_truncate(0o600),
                device,
            ) {
                Ok(()) => return Ok(temp),
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(to_io(e)),
            }
        }
    }

    /// Makes a hard link to `from_name` in `from` (never following a symlink there) under a
    /// fresh temporary name for `name` in this directory; returns the name.
    pub fn link_temp(&self, from: &Dir, from_name: &OsStr, name: &OsStr) -> io::Result<OsString> {
        check_name(from_name)?;
        check_name(name)?;
        loop {
            let temp = temp_name(name)?;
            match nix::unistd::linkat(
                from.0.as_fd(),
                from_name,
                self.0.as_fd(),
                temp.as_os_str(),
                AtFlags::empty(),
            ) {
                Ok(()) => return Ok(temp),
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(to_io(e)),
            }
        }
    }

    /// Sets the permission bits of `name`, which must not be a symlink (never followed: with
    /// `AT_SYMLINK_NOFOLLOW`, which the C library carries out on the entry itself through an
    /// `O_PATH` descriptor).
    pub fn set_mode(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        check_name(name)?;
        nix::sys::stat::fchmodat(
            self.0.as_fd(),
            name,
            Mode::from_bits_truncate(mode),
            nix::sys::stat::FchmodatFlags::NoFollowSymlink,
        )
        .map_err(to_io)
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

    /// Removes the leftovers of interrupted writes from this directory: every regular file
    /// (not a symlink, directory or anything else) with a temporary name ([`temp_name_owner`])
    /// whose process is no longer running ([`process_alive`]), so a restore running at the same
    /// time keeps its files. Returns how many were removed. Nothing is followed: names are
    /// listed and removed relative to this handle.
    pub fn remove_temp_leftovers(&self) -> io::Result<u64> {
        let mut removed = 0;
        for (name, kind) in self.entries()? {
            if kind != Kind::Other || temp_name_owner(&name).is_none_or(process_alive) {
                continue;
            }
            let st = match nix::sys::stat::fstatat(
                self.0.as_fd(),
                name.as_os_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => st,
                // Gone meanwhile (another restore cleaning the same directory).
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(to_io(e)),
            };
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                continue;
            }
            match self.remove_file(&name) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
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
        let me = std::process::id();
        assert_eq!(temp_name_owner(&a), Some(me));
        let a = a.to_str().unwrap();
        let prefix = format!(".index.php.coffer-tmp-{me}-");
        assert!(a.starts_with(&prefix), "{a}");
        assert_eq!(a.len(), prefix.len() + 16);
        let long = "x".repeat(255);
        let t = temp_name(OsStr::new(&long)).unwrap();
        assert_eq!(t.len(), NAME_MAX);
        assert_eq!(temp_name_owner(&t), Some(me));
        // A long name whose bytes are cut inside a character still makes a valid name.
        let t = temp_name(OsStr::new(&"\u{e9}".repeat(127))).unwrap();
        check_name(&t).unwrap();
        assert!(t.len() <= NAME_MAX);
        assert_eq!(temp_name_owner(&t), Some(me));
    }

    #[test]
    fn only_the_exact_temporary_pattern_is_recognised() {
        for (yes, pid) in [
            (".a.coffer-tmp-7-0123456789abcdef", 7),
            (".a-1.coffer-tmp-4194304-ffffffffffffffff", 4_194_304),
            (".x.coffer-tmp-12-0123456789abcdef", 12),
        ] {
            assert_eq!(temp_name_owner(OsStr::new(yes)), Some(pid), "{yes}");
        }
        for no in [
            "a.coffer-tmp-7-0123456789abcdef",            // no leading dot
            ".coffer-tmp-7-0123456789abcdef",             // no original name
            ".a.coffer-tmp-7-0123456789abcde",            // 15 digits
            ".a.coffer-tmp-7-0123456789abcdef0",          // 17 digits
            ".a.coffer-tmp-7-0123456789ABCDEF",           // upper case
            ".a.coffer-tmp-7-0123456789abcdeg",           // not hex
            ".a.coffer-tmp--0123456789abcdef",            // no process id
            ".a.coffer-tmp-0-0123456789abcdef",           // process 0
            ".a.coffer-tmp-07-0123456789abcdef",          // leading zero
            ".a.coffer-tmp-x7-0123456789abcdef",          // not a number
            ".a.coffer-tmp-0123456789abcdef",             // no process id at all
            ".a.coffer-tmp-99999999999-0123456789abcdef", // beyond u32
            ".a.coffer-0123456789abcdef",                 // the old marker
            ".a.coffer-tmp-7-0123456789abcdef.txt",       // something after
            "index.php",
            "",
        ] {
            assert_eq!(temp_name_owner(OsStr::new(no)), None, "{no}");
        }
    }

    #[test]
    fn liveness_is_by_process_id() {
        assert!(process_alive(std::process::id()));
        // Process 1 always runs (possibly as another user: still alive).
        assert!(process_alive(1));
        assert!(!process_alive(dead_pid()));
        // Ids that cannot name one process are never taken as dead.
        assert!(process_alive(0));
        assert!(process_alive(u32::MAX));
    }

    /// The id of a process that cannot exist: above any `pid_max` Linux allows (2^22).
    pub(crate) fn dead_pid() -> u32 {
        i32::MAX as u32
    }

    #[test]
    fn leftovers_removed_are_dead_processes_regular_files_with_the_exact_pattern_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root_path = tmp.path().join("root");
        std::fs::create_dir(&root_path).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let root = Dir::open_trusted(&root_path).unwrap();
        // This process's own temporary file is live: kept.
        let (live, file) = root.create_temp_file(OsStr::new("f"), 0o600).unwrap();
        drop(file);
        let dead = dead_pid();
        let name = |s: &str| root_path.join(s.replace("PID", &dead.to_string()));
        std::fs::write(name(".g.coffer-tmp-PID-00000000000000aa"), b"x").unwrap();
        std::fs::write(name(".h.coffer-tmp-PID-00000000000000ab"), b"x").unwrap();
        // Not removed: a symlink, a directory, a near miss and an ordinary file.
        std::os::unix::fs::symlink(&victim, name(".h.coffer-tmp-PID-00000000000000bb")).unwrap();
        std::fs::create_dir(name(".d.coffer-tmp-PID-00000000000000cc")).unwrap();
        std::fs::write(name(".g.coffer-tmp-PID-00000000000000a"), b"x").unwrap();
        std::fs::write(name("f"), b"x").unwrap();
        assert_eq!(root.remove_temp_leftovers().unwrap(), 2);
        assert!(!name(".g.coffer-tmp-PID-00000000000000aa").exists());
        assert!(!name(".h.coffer-tmp-PID-00000000000000ab").exists());
        for kept in [
            ".h.coffer-tmp-PID-00000000000000bb",
            ".d.coffer-tmp-PID-00000000000000cc",
            ".g.coffer-tmp-PID-00000000000000a",
            "f",
        ] {
            assert!(std::fs::symlink_metadata(name(kept)).is_ok(), "{kept}");
        }
        assert!(
            root_path.join(&live).exists(),
            "a live process's file is kept"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(root.remove_temp_leftovers().unwrap(), 0);
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

    #[cfg(target_os = "linux")]
    #[test]
    fn an_unnamed_file_is_named_only_when_linked_and_never_over_anything() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        let root_path = tmp.path().join("root");
        std::fs::create_dir(&root_path).unwrap();
        let root = Dir::open_trusted(&root_path).unwrap();
        let mut file = root
            .create_unnamed_file(0o600)
            .unwrap()
            .expect("ext4 and tmpfs have O_TMPFILE");
        file.write_all(b"new").unwrap();
        assert_eq!(
            file.metadata().unwrap().permissions().mode() & 0o7777,
            0o600
        );
        assert!(root.entries().unwrap().is_empty(), "no name while written");
        // A name that is taken (a planted symlink) is neither replaced nor followed.
        std::os::unix::fs::symlink(&victim, root_path.join("f")).unwrap();
        let e = root.link_unnamed(&file, OsStr::new("f")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
        root.link_unnamed(&file, OsStr::new("g")).unwrap();
        assert_eq!(std::fs::read(root_path.join("g")).unwrap(), b"new");
        let mut names: Vec<_> = root
            .entries()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        names.sort();
        assert_eq!(names, ["f", "g"], "the probe left no name behind");
        // Through /proc, the way for a process without CAP_DAC_READ_SEARCH.
        let mut other = root.create_unnamed_file(0o600).unwrap().unwrap();
        other.write_all(b"other").unwrap();
        link_fd(&other, &root, OsStr::new("h"), Naming::Proc).unwrap();
        assert_eq!(std::fs::read(root_path.join("h")).unwrap(), b"other");
        std::fs::remove_file(root_path.join("h")).unwrap();
        // Dropped without a name: nothing is left.
        let other = root.create_unnamed_file(0o600).unwrap().unwrap();
        drop(other);
        assert_eq!(root.entries().unwrap().len(), 2);
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

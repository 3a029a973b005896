//! One run at a time per configuration and command: a local lock (`flock`) on a file next to
//! the cache, so that a cron run that overlaps the previous run of the same job waits for it,
//! or with `--no-wait` exits at once with [`crate::exit::RUN_LOCKED`].
//!
//! The lock is per configuration file (its canonical path) or, without one, per repository
//! location, and per command: a backup still running when the next night's backup starts holds
//! it up, but never a prune or a check (backups never wait for maintenance, and maintenance
//! never waits for backups: the repository is safe under both at once). Two configurations
//! backing up to one repository run side by side. The lock is held by the open file: it goes
//! when the process ends, however it ends, so a crashed run never leaves it behind. backup,
//! forget, check, drill, copy and repair take it; prune has its maintenance lease instead (a
//! second prune exits 11); listings and restores never wait.

use crate::commands::Context_;
use anyhow::{Context as _, Result};
use nix::fcntl::{Flock, FlockArg};
use sha2::Digest as _;
use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Another run of the same configuration holds the lock and `--no-wait` was given.
#[derive(Debug)]
pub struct RunLocked(pub String);

impl std::fmt::Display for RunLocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunLocked {}

/// The held lock; dropping it (or the process ending) releases it.
pub struct RunLock {
    _lock: Flock<File>,
}

/// Where the lock file for `identity` lives below `root`: a hash of it, so that the path says
/// nothing about the repository (whose URL may hold a bucket name).
pub fn lock_path(root: &Path, identity: &str) -> PathBuf {
    let digest = sha2::Sha256::digest(identity.as_bytes());
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    root.join("locks").join(format!("run-{name}.lock"))
}

/// What the lock is for: the command, and the configuration file, else the repository location.
fn identity(ctx: &Context_, command: &str) -> Option<String> {
    if let Some(loaded) = &ctx.config {
        let path = std::fs::canonicalize(&loaded.path).unwrap_or_else(|_| loaded.path.clone());
        return Some(format!("{command} config:{}", path.display()));
    }
    ctx.global
        .repo
        .as_ref()
        .map(|r| format!("{command} repo:{r}"))
}

/// Takes the run lock for `command`: waits while another run holds it (saying so once, unless
/// `-q`), or fails with [`RunLocked`] under `--no-wait`. Without a cache directory (no `HOME`
/// nor `XDG_CACHE_HOME`) there is nowhere to put the lock: the run goes ahead with a warning.
pub fn acquire(ctx: &Context_, command: &str) -> Result<Option<RunLock>> {
    let Some(identity) = identity(ctx, command) else {
        return Ok(None);
    };
    let Some(root) = coffer_repo::storage::cache::default_root() else {
        eprintln!(
            "warning: no run lock (set HOME or XDG_CACHE_HOME): overlapping runs of this \
             configuration are not kept apart"
        );
        return Ok(None);
    };
    let path = lock_path(&root, &identity);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the run lock directory {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the run lock {}", path.display()))?;
    let mut said = false;
    let mut lock = loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => break lock,
            Err((back, nix::errno::Errno::EWOULDBLOCK)) => {
                file = back;
                let holder = holder(&mut file);
                if ctx.global.no_wait {
                    return Err(anyhow::Error::new(RunLocked(format!(
                        "another coffer {command} of this configuration is in progress ({holder}); \
                         not waiting because of --no-wait (lock file {})",
                        path.display()
                    ))));
                }
                if !said && !ctx.global.quiet {
                    eprintln!(
                        "waiting for another coffer {command} of this configuration to finish ({holder})"
                    );
                    said = true;
                }
                if ctx.cancel.load(Ordering::SeqCst) {
                    return Err(coffer_repo::Error::Interrupted.into());
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err((_, errno)) => {
                return Err(anyhow::Error::new(std::io::Error::from(errno)))
                    .with_context(|| format!("locking {}", path.display()))
            }
        }
    };
    // Who holds it, for the next run's message; the lock does not depend on it.
    let _ = lock.set_len(0);
    let _ = lock.rewind();
    let _ = writeln!(lock, "pid {} ({command})", std::process::id());
    Ok(Some(RunLock { _lock: lock }))
}

/// The holder's note (`pid 123 (backup)`), or `unknown holder`.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.take(200).read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() {
        "unknown holder".into()
    } else {
        crate::escape::message(text).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_paths_are_per_identity_and_hide_it() {
        let root = Path::new("/cache/coffer");
        let a = lock_path(root, "config:/etc/coffer/app.toml");
        let b = lock_path(root, "config:/etc/coffer/other.toml");
        assert_ne!(a, b);
        assert_eq!(a, lock_path(root, "config:/etc/coffer/app.toml"));
        assert!(a.starts_with("/cache/coffer/locks"));
        assert!(!a.display().to_string().contains("app"));
    }

    #[test]
    fn a_second_lock_on_the_same_file_is_refused_until_the_first_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let open = || File::create(&path).unwrap();
        let first = Flock::lock(open(), FlockArg::LockExclusiveNonblock).unwrap();
        assert!(Flock::lock(open(), FlockArg::LockExclusiveNonblock).is_err());
        drop(first);
        assert!(Flock::lock(open(), FlockArg::LockExclusiveNonblock).is_ok());
    }
}

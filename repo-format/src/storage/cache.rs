//! A local cache of a remote repository's immutable metadata: snapshots, index files, deletion
//! plans, drill results and tree packs, so that `snapshots`, repeated backups, prunes and copies
//! don't download them again. What a command writes of them it caches as well.
//!
//! Layout: `<root>/<repository id>/<key>`, where `<key>` is the object's key in the repository
//! (`snapshots/<id>`, `index/<id>`, `data/<xx>/<pack id>`). Every cached object is named by the
//! BLAKE3 of its stored bytes, so the cache is verified on every read: a file whose hash does not
//! match its name is deleted and fetched again. Objects are only ever added (written to a
//! temporary file, then renamed) or removed when a listing of the repository no longer shows them.
//! The cache holds ciphertext only, exactly as stored: it reveals no more than the repository.
//! Failures to write the cache are ignored; it is an optimisation, never a requirement.
//!
//! Its directories are created 0700 and its files 0600. Below `<root>/<repository id>` (which
//! is trusted: the user's own cache directory) nothing is reached by path: directories are
//! opened one name at a time without following symlinks and files are read with `O_NOFOLLOW`,
//! written under a fresh random name with `O_CREAT|O_EXCL|O_NOFOLLOW` and renamed into place
//! ([`crate::fs::safe`]), so a symlink planted in the cache is never followed, for reading or
//! writing.
//!
//! Which objects go through the cache is one policy, [`CacheUse::of`], by object class; the
//! [`Storage`](super::Storage) facade applies it in front of whichever backend it holds, so the
//! cache is a layer over any store. May use `fs/` and the format's storage hash; no backend.

use crate::error::{Error, Result};
use crate::format::id::storage_hash;
use crate::format::key::{ObjectClass, ObjectKey};
use crate::fs::safe::{Dir, Kind};
use bytes::Bytes;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Whether the verified cache holds an object of a class (the directory its key is in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// Every read goes through the cache: immutable, content-named metadata that most
    /// commands read (snapshots, index files, deletion plans, drill results).
    Always,
    /// Only reads that ask for it ([`Storage::get_cached`](super::Storage::get_cached),
    /// [`Storage::get_bounded_cached`](super::Storage::get_bounded_cached)): packs, where tree
    /// packs are worth keeping and data packs are not, which only the caller knows.
    OnRequest,
    /// Never: objects that change or are not named by their content (config, leases), and key
    /// files (read once per command, and kept out of the cache so that it holds no wrapped key).
    Never,
}

impl CacheUse {
    /// The policy for the object under `key`.
    pub fn of(key: &str) -> CacheUse {
        match ObjectKey::parse(key).map(|k| k.class()) {
            Some(
                ObjectClass::Snapshot | ObjectClass::Index | ObjectClass::Plan | ObjectClass::Drill,
            ) => CacheUse::Always,
            Some(ObjectClass::Pack) => CacheUse::OnRequest,
            _ => CacheUse::Never,
        }
    }

    /// Whether a read of `key` goes through the cache; `asked` says the caller asked for it.
    pub fn applies(key: &str, asked: bool) -> bool {
        match CacheUse::of(key) {
            CacheUse::Always => true,
            CacheUse::OnRequest => asked,
            CacheUse::Never => false,
        }
    }
}

/// The metadata cache of one repository.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
}

/// The default cache root: `$XDG_CACHE_HOME/coffer`, else `$HOME/.cache/coffer`.
pub fn default_root() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("coffer"))
}

/// The content hash a key names (its id), if it is a content-addressed object Coffer writes.
fn content_name(key: &str) -> Option<[u8; 32]> {
    ObjectKey::parse(key).and_then(|k| k.content_hash())
}

/// Whether `key` is safe to turn into a path below the cache directory.
fn safe_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains('\0'))
}

impl Cache {
    /// Opens (creating if needed) the cache of repository `repo_id` below `root`.
    pub fn open(root: &Path, repo_id: &str) -> Result<Cache> {
        if repo_id.is_empty() || !repo_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::InvalidInput(format!(
                "repository id {repo_id:?} is not hex"
            )));
        }
        let dir = root.join(repo_id);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io("creating cache directory", &dir, e))?;
        Ok(Cache { dir })
    }

    /// The directory of this repository's cache.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory holding `key` (opened without following symlinks, created 0700 where
    /// missing if `create`) and the key's file name, for a key that names content.
    fn place<'k>(&self, key: &'k str, create: bool) -> Option<(Dir, &'k OsStr)> {
        if !safe_key(key) || content_name(key).is_none() {
            return None;
        }
        let (parents, name) = key.rsplit_once('/').unwrap_or(("", key));
        let mut dir = Dir::open_trusted(&self.dir).ok()?;
        for part in parents.split('/').filter(|p| !p.is_empty()) {
            let part = OsStr::new(part);
            if create && dir.kind(part).ok()?.is_none() {
                // Another process may create it at the same moment: that is fine.
                let _ = dir.create_dir(part, 0o700);
            }
            dir = dir.open_dir(part).ok()?;
        }
        Some((dir, OsStr::new(name)))
    }

    /// The cached bytes of `key`, if present and their hash matches the name. A mismatching
    /// file (disk corruption, tampering) is removed.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.get_bounded(key, u64::MAX)
    }

    /// As [`Self::get`], for a file of at most `max` bytes: a larger one is not read (and is
    /// removed, since nothing Coffer caches can be larger than its kind's maximum).
    pub fn get_bounded(&self, key: &str, max: u64) -> Option<Bytes> {
        let (dir, name) = self.place(key, false)?;
        let mut file = dir.open_file(name).ok()?;
        if file.metadata().ok()?.len() > max {
            let _ = dir.remove_file(name);
            return None;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        if Some(storage_hash(&bytes)) == content_name(key) {
            Some(Bytes::from(bytes))
        } else {
            let _ = dir.remove_file(name);
            None
        }
    }

    /// Caches `bytes` as `key` if their hash matches the name.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        if Some(storage_hash(bytes)) != content_name(key) {
            return;
        }
        let Some((dir, name)) = self.place(key, true) else {
            return;
        };
        if !matches!(dir.kind(name), Ok(None)) {
            return;
        }
        let Ok((temp, mut file)) = dir.create_temp_file(name, 0o600) else {
            return;
        };
        let written = file.write_all(bytes).is_ok();
        drop(file);
        // Never replaces what is there (another process cached it meanwhile, or something was
        // planted): the name is content-addressed, so what a later read finds is verified.
        if !(written && dir.rename(&temp, name, false).is_ok()) {
            let _ = dir.remove_file(&temp);
        }
    }

    /// Removes `key` from the cache.
    pub fn remove(&self, key: &str) {
        if let Some((dir, name)) = self.place(key, false) {
            let _ = dir.remove_file(name);
        }
    }

    /// Calls `visit(key, directory holding it, name)` for every file below `prefix/` (a key
    /// prefix; empty for all), walking without following symlinks; a symlink counts as a file
    /// (removing it removes the link only). One directory per level of depth is open at a time.
    fn for_each_file(&self, prefix: &str, visit: &mut dyn FnMut(&str, &Dir, &OsStr)) {
        let Ok(root) = Dir::open_trusted(&self.dir) else {
            return;
        };
        let start = if prefix.is_empty() {
            Some(root)
        } else {
            root.open_path(Path::new(prefix)).ok()
        };
        if let Some(start) = start {
            walk_files(prefix, &start, visit);
        }
    }

    /// Drops cached objects under `dir/` that `listing` (the repository's current content of
    /// `dir/`) does not show: another client pruned them.
    pub fn retain(&self, dir: &str, listing: &[(String, u64)]) {
        if !safe_key(dir) {
            return;
        }
        let live: std::collections::HashSet<&str> =
            listing.iter().map(|(k, _)| k.as_str()).collect();
        self.for_each_file(dir, &mut |key, parent, name| {
            if !live.contains(key) {
                let _ = parent.remove_file(name);
            }
        });
    }

    /// Keys of every cached object (for tests and diagnostics).
    pub fn keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.for_each_file("", &mut |key, _, _| out.push(key.to_string()));
        out.sort();
        out
    }
}

fn walk_files(at: &str, dir: &Dir, visit: &mut dyn FnMut(&str, &Dir, &OsStr)) {
    let Ok(entries) = dir.entries() else {
        return;
    };
    for (name, kind) in entries {
        let key = if at.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{at}/{}", name.to_string_lossy())
        };
        if kind == Kind::Dir {
            if let Ok(sub) = dir.open_dir(&name) {
                walk_files(&key, &sub, visit);
            }
        } else {
            visit(&key, dir, &name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_caches_metadata_always_packs_on_request_and_nothing_else() {
        let id = "ab".repeat(32);
        for (key, want) in [
            (format!("snapshots/{id}"), CacheUse::Always),
            (format!("index/{id}"), CacheUse::Always),
            (format!("plans/{id}"), CacheUse::Always),
            (format!("drills/{id}"), CacheUse::Always),
            (format!("data/ab/{id}"), CacheUse::OnRequest),
            ("config".to_string(), CacheUse::Never),
            (format!("keys/{id}"), CacheUse::Never),
            (format!("locks/{id}"), CacheUse::Never),
            (
                "locks/lease-00000000000000000001".to_string(),
                CacheUse::Never,
            ),
            (format!("snapshotsx/{id}"), CacheUse::Never),
        ] {
            assert_eq!(CacheUse::of(&key), want, "{key}");
        }
        assert!(CacheUse::applies(&format!("index/{id}"), false));
        assert!(!CacheUse::applies(&format!("data/ab/{id}"), false));
        assert!(CacheUse::applies(&format!("data/ab/{id}"), true));
        assert!(!CacheUse::applies("config", true));
    }

    #[test]
    fn verified_on_read_and_pruned_by_listing() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(root.path(), "00ff").unwrap();
        assert!(Cache::open(root.path(), "../x").is_err());
        let bytes = b"sealed snapshot bytes";
        let key = format!("snapshots/{}", hex::encode(storage_hash(bytes)));
        assert!(cache.get(&key).is_none());
        cache.put(&key, bytes);
        assert_eq!(&cache.get(&key).unwrap()[..], bytes);
        // Bytes that don't match the name are never cached...
        let other = format!("index/{}", hex::encode(storage_hash(b"other")));
        cache.put(&other, b"not other");
        assert!(cache.get(&other).is_none());
        // ...and a damaged cached file is detected and removed.
        std::fs::write(cache.dir().join(&key), b"tampered").unwrap();
        assert!(cache.get(&key).is_none());
        assert!(!cache.dir().join(&key).exists());
        // Keys that could escape the directory are refused.
        cache.put("../../etc/passwd", bytes);
        assert!(cache.get("snapshots/../../x").is_none());
        cache.put(&key, bytes);
        assert_eq!(cache.keys(), vec![key.clone()]);
        cache.retain("snapshots", &[(key.clone(), 1)]);
        assert_eq!(cache.keys(), vec![key.clone()]);
        cache.retain("snapshots", &[]);
        assert!(cache.keys().is_empty());
    }

    #[test]
    fn directories_are_0700_and_files_0600() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        let cache_root = root.path().join("cache/coffer");
        let cache = Cache::open(&cache_root, "00ff").unwrap();
        let bytes = b"a pack";
        let hash = hex::encode(storage_hash(bytes));
        let key = format!("data/{}/{hash}", &hash[..2]);
        cache.put(&key, bytes);
        assert_eq!(&cache.get(&key).unwrap()[..], bytes);
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        for dir in [
            cache_root.clone(),
            cache.dir().to_path_buf(),
            cache.dir().join("data"),
            cache.dir().join("data").join(&hash[..2]),
        ] {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
        assert_eq!(mode(&cache.dir().join(&key)), 0o600);
        // No temporary file is left behind.
        assert_eq!(cache.keys(), vec![key]);
    }

    #[test]
    fn a_symlink_planted_in_the_cache_is_never_followed() {
        let root = tempfile::tempdir().unwrap();
        let cache = Cache::open(&root.path().join("cache"), "00ff").unwrap();
        let bytes = b"sealed index bytes";
        let name = hex::encode(storage_hash(bytes));
        let key = format!("index/{name}");
        // A directory of the cache replaced by a symlink to a directory elsewhere, which holds
        // a valid-looking object under the key's name.
        let outside = root.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join(&name), bytes).unwrap();
        std::os::unix::fs::symlink(&outside, cache.dir().join("index")).unwrap();
        assert!(
            cache.get(&key).is_none(),
            "read through a symlinked directory"
        );
        let other = b"other index bytes";
        let other_key = format!("index/{}", hex::encode(storage_hash(other)));
        cache.put(&other_key, other);
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            1,
            "written through a symlinked directory"
        );
        cache.retain("index", &[]);
        cache.remove(&key);
        assert!(outside.join(&name).exists(), "removed through a symlink");
        // A symlink at a file's own name: not read, not written through, not replaced.
        let victim = root.path().join("victim");
        std::fs::write(&victim, b"secret").unwrap();
        let snapshot = b"sealed snapshot";
        let snapshot_key = format!("snapshots/{}", hex::encode(storage_hash(snapshot)));
        cache.put(&snapshot_key, snapshot);
        std::fs::remove_file(cache.dir().join(&snapshot_key)).unwrap();
        std::os::unix::fs::symlink(&victim, cache.dir().join(&snapshot_key)).unwrap();
        assert!(cache.get(&snapshot_key).is_none());
        cache.put(&snapshot_key, snapshot);
        assert_eq!(std::fs::read(&victim).unwrap(), b"secret");
        assert!(std::fs::symlink_metadata(cache.dir().join(&snapshot_key))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}

//! A local cache of a remote repository's immutable metadata: snapshots, index files and tree
//! packs, so that `snapshots`, repeated backups and copies don't download them again.
//!
//! Layout: `<root>/<repository id>/<key>`, where `<key>` is the object's key in the repository
//! (`snapshots/<id>`, `index/<id>`, `data/<xx>/<pack id>`). Every cached object is named by the
//! BLAKE3 of its stored bytes, so the cache is verified on every read: a file whose hash does not
//! match its name is deleted and fetched again. Objects are only ever added (written to a
//! temporary file, then renamed) or removed when a listing of the repository no longer shows them.
//! The cache holds ciphertext only, exactly as stored: it reveals no more than the repository.
//! Failures to write the cache are ignored; it is an optimisation, never a requirement.

use crate::error::{Error, Result};
use crate::id::storage_hash;
use bytes::Bytes;
use std::path::{Path, PathBuf};

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

/// The 64-hex-digit name at the end of a key, if it has one.
fn content_name(key: &str) -> Option<[u8; 32]> {
    let name = key.rsplit('/').next()?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(name, &mut out).ok()?;
    Some(out)
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
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io("creating cache directory", &dir, e))?;
        Ok(Cache { dir })
    }

    /// The directory of this repository's cache.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, key: &str) -> Option<PathBuf> {
        (safe_key(key) && content_name(key).is_some()).then(|| self.dir.join(key))
    }

    /// The cached bytes of `key`, if present and their hash matches the name. A mismatching
    /// file (disk corruption, tampering) is removed.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.get_bounded(key, u64::MAX)
    }

    /// As [`Self::get`], for a file of at most `max` bytes: a larger one is not read (and is
    /// removed, since nothing Coffer caches can be larger than its kind's maximum).
    pub fn get_bounded(&self, key: &str, max: u64) -> Option<Bytes> {
        let file = self.file(key)?;
        let size = std::fs::metadata(&file).ok()?.len();
        if size > max {
            let _ = std::fs::remove_file(&file);
            return None;
        }
        let bytes = std::fs::read(&file).ok()?;
        if Some(storage_hash(&bytes)) == content_name(key) {
            Some(Bytes::from(bytes))
        } else {
            let _ = std::fs::remove_file(&file);
            None
        }
    }

    /// Caches `bytes` as `key` if their hash matches the name.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let Some(file) = self.file(key) else { return };
        if Some(storage_hash(bytes)) != content_name(key) || file.exists() {
            return;
        }
        let Some(parent) = file.parent() else { return };
        if std::fs::create_dir_all(parent).is_err() {
            return;
        }
        let mut suffix = [0u8; 8];
        if coffer_crypto::random_fill(&mut suffix).is_err() {
            return;
        }
        let tmp = parent.join(format!(".tmp-{}", hex::encode(suffix)));
        if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, &file).is_ok() {
            return;
        }
        let _ = std::fs::remove_file(&tmp);
    }

    /// Removes `key` from the cache.
    pub fn remove(&self, key: &str) {
        if let Some(file) = self.file(key) {
            let _ = std::fs::remove_file(file);
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
        let mut stack = vec![self.dir.join(dir)];
        while let Some(path) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                let p = entry.path();
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(p);
                    continue;
                }
                let Ok(rel) = p.strip_prefix(&self.dir) else {
                    continue;
                };
                let key = rel.to_string_lossy();
                if !live.contains(key.as_ref()) {
                    let _ = std::fs::remove_file(&p);
                }
            }
        }
    }

    /// Keys of every cached object (for tests and diagnostics).
    pub fn keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(path) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                let p = entry.path();
                if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(p);
                } else if let Ok(rel) = p.strip_prefix(&self.dir) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

//! The one seam between Coffer and the bytes at rest: a thin synchronous facade over
//! [`object_store`].
//!
//! Every repository object is addressed by a key such as `data/ab/ab12…` relative to the
//! repository root. Content-addressed objects are written with `PutMode::Create`: an object that
//! already exists under its content hash already holds those bytes, so `AlreadyExists` is success.
//! Writes are atomic on every supported store (object stores by nature, the local file system by
//! writing a temporary file and renaming it).
//!
//! The facade blocks the calling thread on a private tokio runtime, so the repository code stays
//! synchronous and may call it from any number of plain threads (never from inside a runtime).

use crate::error::{Error, Result};
use bytes::Bytes;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use std::ops::Range;
use std::sync::Arc;

/// A handle on the storage that holds one repository.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Key prefix of the repository inside the store (empty for a local directory).
    root: String,
    /// How the user named the location, for messages (never carries credentials).
    location: String,
    runtime: Arc<tokio::runtime::Runtime>,
    /// How many requests to run at once (uploads during backup).
    connections: usize,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// How to open a location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// The repository must already exist (its directory for local paths).
    Existing,
    /// Create the local directory if it is missing (for `init`).
    Create,
}

fn runtime() -> Result<Arc<tokio::runtime::Runtime>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("coffer-io")
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| Error::io("starting the I/O runtime for", "storage", e))
}

impl Storage {
    /// Opens a location: a local path or `file:///path`. Object-store URLs are recognised and
    /// refused with a clear message until a build supports them.
    pub fn open(location: &str, mode: OpenMode) -> Result<Storage> {
        let config_err = |reason: String| Error::StorageConfig {
            location: location.to_string(),
            reason,
        };
        if location.is_empty() {
            return Err(config_err("the repository location is empty".into()));
        }
        if let Some((scheme, _)) = location.split_once("://") {
            match scheme {
                "file" => {}
                "memory" => {
                    return Err(config_err(
                        "memory:// repositories live only inside one process; use a path".into(),
                    ))
                }
                "s3" | "gs" => {
                    return Err(config_err(format!(
                        "{scheme}:// repositories are not supported by this build yet; use a local path"
                    )))
                }
                other => return Err(config_err(format!("unknown URL scheme {other:?}"))),
            }
        }
        let path = location.strip_prefix("file://").unwrap_or(location);
        let path = std::path::Path::new(path);
        match mode {
            OpenMode::Create => std::fs::create_dir_all(path)
                .map_err(|e| Error::io("creating repository directory", path, e))?,
            OpenMode::Existing => {
                if !path.is_dir() {
                    return Err(Error::NoRepository {
                        location: location.to_string(),
                    });
                }
            }
        }
        let store = object_store::local::LocalFileSystem::new_with_prefix(path)
            .map_err(|e| config_err(e.to_string()))?
            .with_automatic_cleanup(true);
        Ok(Storage {
            store: Arc::new(store),
            root: String::new(),
            location: location.to_string(),
            runtime: runtime()?,
            connections: 1,
        })
    }

    /// A fresh in-memory store, for tests inside one process.
    pub fn in_memory() -> Result<Storage> {
        Ok(Storage {
            store: Arc::new(InMemory::new()),
            root: String::new(),
            location: "memory://".into(),
            runtime: runtime()?,
            connections: 1,
        })
    }

    /// How many requests to run at once.
    pub fn connections(&self) -> usize {
        self.connections
    }

    /// Sets how many requests to run at once (at least 1).
    pub fn set_connections(&mut self, n: usize) {
        self.connections = n.max(1);
    }

    /// How the user named this location.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, key: &str) -> StorePath {
        if self.root.is_empty() {
            StorePath::from(key)
        } else {
            StorePath::from(format!("{}/{}", self.root, key))
        }
    }

    fn err(&self, operation: &'static str, key: &str, source: object_store::Error) -> Error {
        Error::Storage {
            operation,
            path: format!("{}/{}", self.location.trim_end_matches('/'), key),
            source,
        }
    }

    /// Writes an immutable, content-addressed object. If the key exists it already holds these
    /// bytes (its name is their hash), so that counts as success.
    pub fn put_new(&self, key: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(key);
        let payload = PutPayload::from(bytes);
        let result =
            self.runtime
                .block_on(self.store.put_opts(&path, payload, PutMode::Create.into()));
        match result {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(self.err("write", key, e)),
        }
    }

    /// Reads a whole object. A missing object gives [`Error::Missing`] naming `what`.
    pub fn get(&self, what: &'static str, key: &str) -> Result<Bytes> {
        let path = self.path(key);
        let result = self
            .runtime
            .block_on(async { self.store.get(&path).await?.bytes().await });
        result.map_err(|e| self.map_read_err(what, key, e))
    }

    /// Reads `range` of an object; the result has exactly `range` length or is an error.
    pub fn get_range(&self, what: &'static str, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path(key);
        let want = range.end - range.start;
        let bytes = self
            .runtime
            .block_on(self.store.get_range(&path, range.clone()))
            .map_err(|e| self.map_read_err(what, key, e))?;
        if bytes.len() as u64 != want {
            return Err(Error::corrupt(
                what,
                key,
                format!(
                    "read {} bytes of range {}..{}, expected {want}",
                    bytes.len(),
                    range.start,
                    range.end
                ),
            ));
        }
        Ok(bytes)
    }

    fn map_read_err(&self, what: &'static str, key: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::Missing {
                what,
                id: key.to_string(),
            },
            // A range past the end of the object means it is shorter than the index says.
            e @ object_store::Error::Generic { .. } if e.to_string().contains("range") => {
                Error::corrupt(what, key, format!("shorter than expected ({e})"))
            }
            e => self.err("read", key, e),
        }
    }

    /// The size of an object, or `None` if it does not exist.
    pub fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key);
        match self.runtime.block_on(self.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("stat", key, e)),
        }
    }

    /// Every object under `dir/` with its size, as keys relative to the repository root,
    /// sorted. One listing request stream per call.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>> {
        let prefix = self.path(dir);
        let strip = if self.root.is_empty() {
            String::new()
        } else {
            format!("{}/", self.root)
        };
        let result: Result<Vec<(String, u64)>> = self.runtime.block_on(async {
            let mut stream = self.store.list(Some(&prefix));
            let mut out = Vec::new();
            while let Some(item) = stream.next().await {
                let meta = item.map_err(|e| self.err("list", dir, e))?;
                let key = meta.location.as_ref();
                let key = key.strip_prefix(&strip).unwrap_or(key).to_string();
                out.push((key, meta.size));
            }
            Ok(out)
        });
        let mut out = result?;
        out.sort();
        Ok(out)
    }

    /// Deletes an object; deleting a missing object succeeds (deletion is idempotent).
    pub fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match self.runtime.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conformance(storage: &Storage) {
        storage
            .put_new("data/ab/x", Bytes::from_static(b"hello"))
            .unwrap();
        // Content-addressed: a second write of the same key is a no-op success.
        storage
            .put_new("data/ab/x", Bytes::from_static(b"hello"))
            .unwrap();
        assert_eq!(&storage.get("pack", "data/ab/x").unwrap()[..], b"hello");
        assert_eq!(
            &storage.get_range("pack", "data/ab/x", 1..4).unwrap()[..],
            b"ell"
        );
        assert_eq!(storage.size("data/ab/x").unwrap(), Some(5));
        assert_eq!(storage.size("data/ab/y").unwrap(), None);
        assert!(matches!(
            storage.get("pack", "data/ab/y"),
            Err(Error::Missing { what: "pack", .. })
        ));
        assert!(storage.get_range("pack", "data/ab/x", 3..9).is_err());
        storage
            .put_new("snapshots/s1", Bytes::from_static(b"s"))
            .unwrap();
        assert_eq!(
            storage.list("data").unwrap(),
            vec![("data/ab/x".to_string(), 5)]
        );
        assert_eq!(storage.list("snapshots").unwrap().len(), 1);
        assert!(storage.list("index").unwrap().is_empty());
        storage.delete("data/ab/x").unwrap();
        storage.delete("data/ab/x").unwrap();
        assert!(storage.list("data").unwrap().is_empty());
    }

    #[test]
    fn memory_conformance() {
        conformance(&Storage::in_memory().unwrap());
    }

    #[test]
    fn local_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let loc = dir.path().join("repo");
        assert!(matches!(
            Storage::open(loc.to_str().unwrap(), OpenMode::Existing),
            Err(Error::NoRepository { .. })
        ));
        let storage = Storage::open(loc.to_str().unwrap(), OpenMode::Create).unwrap();
        conformance(&storage);
        let url = format!("file://{}", loc.display());
        conformance(&Storage::open(&url, OpenMode::Existing).unwrap());
    }

    #[test]
    fn unsupported_locations_are_named() {
        for loc in ["memory://", "s3://bucket/x", "ftp://host/x", ""] {
            let err = Storage::open(loc, OpenMode::Existing)
                .unwrap_err()
                .to_string();
            assert!(err.contains("cannot open storage"), "{err}");
        }
    }
}

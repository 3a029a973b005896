//! The storage conformance suite (`support/storage_conformance.rs`) on the stores that need no
//! server: the in-memory store, the same behind a wrapping backend of the test's own (as a
//! fault-injecting store will wrap one), a local directory named by its path, and one named by
//! a `file://` URL. S3 runs it in `tests/s3.rs` against a real server.

#[path = "support/storage_conformance.rs"]
mod storage_conformance;

use bytes::Bytes;
use coffer_repo::storage::backend::RangeSink;
use coffer_repo::storage::{Backend, MemoryBackend, ObjectInfo};
use coffer_repo::{Error, OpenMode, Storage, StoreKind};
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn in_memory_store() {
    storage_conformance::run("memory", &|_| Storage::in_memory().unwrap(), false);
}

/// A backend of the test's own that passes every call on to an in-memory store, counting them:
/// code outside the library plugs a store in through the public [`Backend`] trait only.
#[derive(Default)]
struct PassThrough {
    inner: MemoryBackend,
    calls: AtomicUsize,
}

impl PassThrough {
    fn count(&self) -> &MemoryBackend {
        self.calls.fetch_add(1, Ordering::Relaxed);
        &self.inner
    }
}

impl Backend for PassThrough {
    fn put_new(&self, key: &str, bytes: Bytes) -> Result<(), Error> {
        self.count().put_new(key, bytes)
    }
    fn get(&self, what: &'static str, key: &str) -> Result<Bytes, Error> {
        self.count().get(what, key)
    }
    fn get_bounded(
        &self,
        what: &'static str,
        key: &str,
        max: u64,
        known_size: Option<u64>,
    ) -> Result<Bytes, Error> {
        self.count().get_bounded(what, key, max, known_size)
    }
    fn get_range(&self, what: &'static str, key: &str, range: Range<u64>) -> Result<Bytes, Error> {
        self.count().get_range(what, key, range)
    }
    fn with_range(
        &self,
        what: &'static str,
        key: &str,
        range: Range<u64>,
        sink: RangeSink<'_>,
    ) -> Result<(), Error> {
        self.count().with_range(what, key, range, sink)
    }
    fn size(&self, key: &str) -> Result<Option<u64>, Error> {
        self.count().size(key)
    }
    fn list(&self, dir: &str) -> Result<Vec<ObjectInfo>, Error> {
        self.count().list(dir)
    }
    fn delete(&self, key: &str) -> Result<(), Error> {
        self.count().delete(key)
    }
}

#[test]
fn in_memory_store_behind_a_wrapping_backend() {
    let backends = std::sync::Mutex::new(Vec::new());
    storage_conformance::run(
        "a wrapped memory store",
        &|_| {
            let backend = Arc::new(PassThrough::default());
            backends.lock().unwrap().push(backend.clone());
            Storage::from_backend(backend, StoreKind::Memory, "wrapped://")
        },
        false,
    );
    // Every check went through the wrapper.
    for backend in backends.lock().unwrap().iter() {
        assert!(backend.calls.load(Ordering::Relaxed) > 0);
    }
}

#[test]
fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    storage_conformance::run(
        "a local directory",
        &|name| {
            let location = dir.path().join(name);
            Storage::open(location.to_str().unwrap(), OpenMode::Create).unwrap()
        },
        true,
    );
}

#[test]
fn local_directory_by_file_url() {
    let dir = tempfile::tempdir().unwrap();
    storage_conformance::run(
        "a file:// URL",
        &|name| {
            let location = dir.path().join(name);
            std::fs::create_dir_all(&location).unwrap();
            let url = format!("file://{}", location.display());
            Storage::open(&url, OpenMode::Existing).unwrap()
        },
        true,
    );
}

#[test]
fn a_missing_local_directory_is_no_repository() {
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().join("repo");
    assert!(matches!(
        Storage::open(location.to_str().unwrap(), OpenMode::Existing),
        Err(Error::NoRepository { .. })
    ));
    let url = format!("file://{}", location.display());
    assert!(matches!(
        Storage::open(&url, OpenMode::Existing),
        Err(Error::NoRepository { .. })
    ));
}

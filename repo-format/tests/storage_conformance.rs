//! The storage conformance suite (`support/storage_conformance.rs`) on the stores that need no
//! server: the in-memory store, a local directory named by its path, and one named by a
//! `file://` URL. S3 runs it in `tests/s3.rs` against a real server.

#[path = "support/storage_conformance.rs"]
mod storage_conformance;

use coffer_repo::{Error, OpenMode, Storage};

#[test]
fn in_memory_store() {
    storage_conformance::run("memory", &|_| Storage::in_memory().unwrap(), false);
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

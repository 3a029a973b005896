//! The storage conformance suite: what every store Coffer supports must do, as a list of named
//! checks, each run on a fresh, empty location. It is test code only and uses only the public
//! API of [`Storage`], so the library ships no test helpers: `repo-format/tests/
//! storage_conformance.rs` runs it on the in-memory store (directly and behind a wrapping
//! backend, the way a fault-injecting store plugs in) and on local directories, `tests/s3.rs`
//! on a real S3 server (moto) and `tests/gcs.rs` on a real GCS bucket, each including this file
//! with `#[path]`. A failing check does not stop the others: the run names every check that failed.

use bytes::Bytes;
use coffer_repo::storage::{MULTIPART_PART_SIZE, MULTIPART_THRESHOLD};
use coffer_repo::{Error, Storage};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// One named check.
enum Check {
    /// Needs one handle on an empty location.
    One(fn(&Storage)),
    /// Needs two independent handles on the same empty location (as two processes have): the
    /// first, and the other writer.
    Two(fn(&Storage, &Storage)),
}

/// Every check, by name.
const CHECKS: &[(&str, Check)] = &[
    ("put_get_round_trip", Check::One(put_get_round_trip)),
    (
        "put_new_never_replaces_an_existing_object",
        Check::One(put_new_never_replaces_an_existing_object),
    ),
    ("empty_object", Check::One(empty_object)),
    (
        "missing_object_is_missing",
        Check::One(missing_object_is_missing),
    ),
    ("ranged_reads", Check::One(ranged_reads)),
    (
        "ranged_read_past_the_end_is_corrupt",
        Check::One(ranged_read_past_the_end_is_corrupt),
    ),
    (
        "large_object_round_trip",
        Check::One(large_object_round_trip),
    ),
    ("listing_with_sizes", Check::One(listing_with_sizes)),
    (
        "listing_is_by_directory_not_by_string_prefix",
        Check::One(listing_is_by_directory_not_by_string_prefix),
    ),
    ("listing_with_times", Check::One(listing_with_times)),
    (
        "list_objects_splits_stray_names",
        Check::One(list_objects_splits_stray_names),
    ),
    ("delete", Check::One(delete)),
    (
        "delete_of_a_missing_key_succeeds",
        Check::One(delete_of_a_missing_key_succeeds),
    ),
    (
        "listing_cache_after_delete",
        Check::One(listing_cache_after_delete),
    ),
    ("bounded_reads", Check::One(bounded_reads)),
    (
        "bounded_read_refuses_an_object_above_its_maximum",
        Check::One(bounded_read_refuses_an_object_above_its_maximum),
    ),
    (
        "bounded_read_refuses_a_large_object_and_reads_it_at_its_size",
        Check::One(bounded_read_refuses_a_large_object_and_reads_it_at_its_size),
    ),
    (
        "bounded_read_after_delete_and_rewrite_sees_the_new_size",
        Check::One(bounded_read_after_delete_and_rewrite_sees_the_new_size),
    ),
    (
        "other_writers_are_seen_once_listings_are_forgotten",
        Check::Two(other_writers_are_seen_once_listings_are_forgotten),
    ),
    (
        "object_deleted_by_another_handle_is_missing",
        Check::Two(object_deleted_by_another_handle_is_missing),
    ),
];

/// Runs every check on the store `label` names. `open(name)` opens a handle on the location
/// `name`, empty until a check writes to it. With `second_handles`, opening the same name again
/// gives another, independent handle on the same objects; without it (the in-memory store, whose
/// objects live in one handle) the checks that need two handles are reported as skipped.
/// Panics naming every check that failed.
pub fn run(label: &str, open: &dyn Fn(&str) -> Storage, second_handles: bool) {
    let mut failed = Vec::new();
    for (name, check) in CHECKS {
        let outcome = match check {
            Check::One(check) => {
                let storage = open(name);
                catch_unwind(AssertUnwindSafe(|| check(&storage)))
            }
            Check::Two(_) if !second_handles => {
                eprintln!("storage conformance on {label}: {name} skipped (one handle only)");
                continue;
            }
            Check::Two(check) => {
                let (storage, other) = (open(name), open(name));
                catch_unwind(AssertUnwindSafe(|| check(&storage, &other)))
            }
        };
        match outcome {
            Ok(()) => eprintln!("storage conformance on {label}: {name} ok"),
            Err(_) => {
                eprintln!("storage conformance on {label}: {name} FAILED (message above)");
                failed.push(*name);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "storage conformance on {label}: {} failed: {failed:?}",
        failed.len()
    );
}

fn put(storage: &Storage, key: &str, bytes: &'static [u8]) {
    storage.put_new(key, Bytes::from_static(bytes)).unwrap();
}

fn keys(listing: &[(String, u64)]) -> Vec<&str> {
    listing.iter().map(|(k, _)| k.as_str()).collect()
}

fn assert_missing<T: std::fmt::Debug>(result: Result<T, Error>, want_what: &str, key: &str) {
    match result {
        Err(Error::Missing { what, id }) => assert_eq!((what, id.as_str()), (want_what, key)),
        other => panic!("{key}: expected Missing {want_what}, got {other:?}"),
    }
}

fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, Error>, want_what: &str, key: &str) {
    match result {
        Err(Error::Corrupt { what, id, .. }) => assert_eq!((what, id.as_str()), (want_what, key)),
        other => panic!("{key}: expected Corrupt {want_what}, got {other:?}"),
    }
}

/// A content-addressed object name under `dir` (`data/` packs under their fan-out directory).
fn object_key(dir: &str, fill: char) -> String {
    let id = fill.to_string().repeat(64);
    match dir {
        "data" => format!("data/{}/{id}", &id[..2]),
        _ => format!("{dir}/{id}"),
    }
}

fn put_get_round_trip(storage: &Storage) {
    put(storage, "data/ab/x", b"hello");
    assert_eq!(&storage.get("pack", "data/ab/x").unwrap()[..], b"hello");
    assert_eq!(storage.size("data/ab/x").unwrap(), Some(5));
    // Content-addressed: a second write of the same name is a success that changes nothing.
    put(storage, "data/ab/x", b"hello");
    assert_eq!(&storage.get("pack", "data/ab/x").unwrap()[..], b"hello");
    put(storage, "snapshots/s1", b"snapshot");
    assert_eq!(
        &storage.get("snapshot", "snapshots/s1").unwrap()[..],
        b"snapshot"
    );
}

/// Objects are written with `PutMode::Create`: a name that exists keeps its first bytes (its
/// name is their hash, so a second writer holds the same bytes), and the write still succeeds.
fn put_new_never_replaces_an_existing_object(storage: &Storage) {
    put(storage, "index/i1", b"first");
    put(storage, "index/i1", b"second!");
    assert_eq!(&storage.get("index", "index/i1").unwrap()[..], b"first");
    assert_eq!(storage.size("index/i1").unwrap(), Some(5));
    assert_eq!(
        storage.list_uncached("index").unwrap(),
        [("index/i1".to_string(), 5)]
    );
}

fn empty_object(storage: &Storage) {
    storage.put_new("locks/empty", Bytes::new()).unwrap();
    assert!(storage.get("lease", "locks/empty").unwrap().is_empty());
    assert_eq!(storage.size("locks/empty").unwrap(), Some(0));
    assert_eq!(
        storage.list("locks").unwrap(),
        [("locks/empty".to_string(), 0)]
    );
}

fn missing_object_is_missing(storage: &Storage) {
    put(storage, "data/ab/x", b"hello");
    assert_missing(storage.get("pack", "data/ab/y"), "pack", "data/ab/y");
    assert_missing(
        storage.get("snapshot", "snapshots/none"),
        "snapshot",
        "snapshots/none",
    );
    assert_missing(
        storage.get_range("pack", "data/ab/y", 0..2),
        "pack",
        "data/ab/y",
    );
    assert_missing(
        storage.get_bounded("index", "index/none", 100),
        "index",
        "index/none",
    );
    assert_eq!(storage.size("data/ab/y").unwrap(), None);
    assert!(storage.list("index").unwrap().is_empty());
}

fn ranged_reads(storage: &Storage) {
    put(storage, "data/ab/x", b"hello, world");
    for (range, want) in [
        (1..4, &b"ell"[..]),
        (0..12, b"hello, world"),
        (0..1, b"h"),
        (11..12, b"d"),
        (7..12, b"world"),
    ] {
        assert_eq!(
            &storage
                .get_range("pack", "data/ab/x", range.clone())
                .unwrap()[..],
            want,
            "{range:?}"
        );
        let read = storage.with_range("pack", "data/ab/x", range.clone(), |b| Ok(b.to_vec()));
        assert_eq!(read.unwrap(), want, "with_range {range:?}");
    }
}

/// A range that ends past the object means the object is shorter than the index says: an
/// error naming it as damaged, never fewer bytes than asked for.
fn ranged_read_past_the_end_is_corrupt(storage: &Storage) {
    put(storage, "data/ab/x", b"hello");
    assert_corrupt(
        storage.get_range("pack", "data/ab/x", 3..9),
        "pack",
        "data/ab/x",
    );
    assert_corrupt(
        storage.get_range("pack", "data/ab/x", 0..6),
        "pack",
        "data/ab/x",
    );
    assert!(storage.get_range("pack", "data/ab/x", 7..9).is_err());
    let read = storage.with_range("pack", "data/ab/x", 3..9, |b| Ok(b.len()));
    assert_corrupt(read, "pack", "data/ab/x");
}

/// An object above the multipart threshold (written in parts to object stores) reads back byte
/// for byte, whole and in ranges.
fn large_object_round_trip(storage: &Storage) {
    let big: Vec<u8> = (0..MULTIPART_THRESHOLD + MULTIPART_PART_SIZE / 2 + 3)
        .map(|i| (i % 251) as u8)
        .collect();
    storage
        .put_new("data/cd/big", Bytes::from(big.clone()))
        .unwrap();
    assert_eq!(storage.get("pack", "data/cd/big").unwrap(), big);
    let end = big.len() as u64;
    assert_eq!(storage.size("data/cd/big").unwrap(), Some(end));
    assert_eq!(
        &storage
            .get_range("pack", "data/cd/big", end - 10..end)
            .unwrap()[..],
        &big[big.len() - 10..]
    );
    let part = MULTIPART_PART_SIZE as u64;
    assert_eq!(
        &storage
            .get_range("pack", "data/cd/big", part - 5..part + 5)
            .unwrap()[..],
        &big[MULTIPART_PART_SIZE - 5..MULTIPART_PART_SIZE + 5]
    );
    assert_eq!(
        storage.list_uncached("data").unwrap(),
        [("data/cd/big".to_string(), end)]
    );
}

fn listing_with_sizes(storage: &Storage) {
    assert!(storage.list("data").unwrap().is_empty());
    put(storage, "data/cd/y", b"yy");
    put(storage, "data/ab/x", b"hello");
    put(storage, "data/ab/w", b"");
    put(storage, "snapshots/s1", b"s");
    let want = vec![
        ("data/ab/w".to_string(), 0),
        ("data/ab/x".to_string(), 5),
        ("data/cd/y".to_string(), 2),
    ];
    // Sorted, with sizes, across the fan-out directories; the store agrees with the handle.
    assert_eq!(storage.list("data").unwrap(), want);
    assert_eq!(storage.list_uncached("data").unwrap(), want);
    assert_eq!(
        storage.list("snapshots").unwrap(),
        [("snapshots/s1".to_string(), 1)]
    );
    assert!(storage.list("index").unwrap().is_empty());
    // The handle's listings follow its own writes.
    put(storage, "index/i1", b"i");
    put(storage, "data/aa/v", b"vvv");
    assert_eq!(
        storage.list("index").unwrap(),
        [("index/i1".to_string(), 1)]
    );
    assert_eq!(keys(&storage.list("data").unwrap())[0], "data/aa/v");
    assert_eq!(
        storage.list_uncached("data").unwrap(),
        storage.list("data").unwrap()
    );
    assert_eq!(storage.list_uncached("index").unwrap().len(), 1);
}

/// `list("snap")` is the directory `snap/`, not every key that starts with `snap`.
fn listing_is_by_directory_not_by_string_prefix(storage: &Storage) {
    put(storage, "snapshots/s1", b"s");
    put(storage, "data/ab/x", b"x");
    assert!(storage.list("snap").unwrap().is_empty());
    assert!(storage.list_uncached("snapshot").unwrap().is_empty());
    assert!(storage.list("data/a").unwrap().is_empty());
    assert_eq!(keys(&storage.list("data/ab").unwrap()), ["data/ab/x"]);
}

fn listing_with_times(storage: &Storage) {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let before = now();
    put(storage, "index/i1", b"one");
    put(storage, "index/i2", b"two!");
    let listed = storage.list_with_times("index").unwrap();
    let after = now();
    let plain: Vec<(String, u64)> = listed.iter().map(|(k, s, _)| (k.clone(), *s)).collect();
    assert_eq!(
        plain,
        [("index/i1".to_string(), 3), ("index/i2".to_string(), 4)]
    );
    // The store's clock and ours may differ a little, never by the years a misread time would.
    for (key, _, modified) in &listed {
        let at = modified.as_second();
        assert!(
            (before - 120..=after + 120).contains(&at),
            "{key}: modified at {modified}, written between {before} and {after}"
        );
    }
    // The listing it made is the one the handle remembers.
    assert_eq!(storage.list("index").unwrap(), plain);
    assert!(storage.list_with_times("snapshots").unwrap().is_empty());
}

/// Names Coffer does not write (`.nfsXXXX` files, notes put there by hand, packs under the wrong
/// fan-out directory) are listed apart as stray, with their sizes.
fn list_objects_splits_stray_names(storage: &Storage) {
    let snapshot = object_key("snapshots", 'a');
    let pack = object_key("data", 'b');
    let misplaced = format!("data/cd/{}", "b".repeat(64));
    put(storage, &snapshot, b"s");
    put(storage, "snapshots/.nfs0000abcd", b"junk");
    put(storage, "snapshots/notes.txt", b"junk!");
    put(storage, &pack, b"pack");
    put(storage, &misplaced, b"pk");
    let listing = storage.list_objects("snapshots").unwrap();
    assert_eq!(listing.objects, [(snapshot, 1)]);
    assert_eq!(
        listing.stray,
        [
            ("snapshots/.nfs0000abcd".to_string(), 4),
            ("snapshots/notes.txt".to_string(), 5)
        ]
    );
    let listing = storage.list_objects("data").unwrap();
    assert_eq!(listing.objects, [(pack, 4)]);
    assert_eq!(listing.stray, [(misplaced, 2)]);
    assert_eq!(storage.list_objects("index").unwrap(), Default::default());
}

fn delete(storage: &Storage) {
    put(storage, "data/ab/x", b"hello");
    put(storage, "data/ab/y", b"other");
    storage.delete("data/ab/x").unwrap();
    assert_missing(storage.get("pack", "data/ab/x"), "pack", "data/ab/x");
    assert_eq!(storage.size("data/ab/x").unwrap(), None);
    assert_eq!(
        storage.list_uncached("data").unwrap(),
        [("data/ab/y".to_string(), 5)]
    );
    assert_eq!(&storage.get("pack", "data/ab/y").unwrap()[..], b"other");
    // Once deleted, the name may be written again (prune's repair does) and reads its new bytes.
    put(storage, "data/ab/x", b"again");
    assert_eq!(&storage.get("pack", "data/ab/x").unwrap()[..], b"again");
}

/// Deletion is idempotent: deleting what is not there (never was, or already deleted) succeeds.
fn delete_of_a_missing_key_succeeds(storage: &Storage) {
    storage.delete("data/ab/never").unwrap();
    storage.delete("snapshots/never").unwrap();
    put(storage, "data/ab/x", b"hello");
    storage.delete("data/ab/x").unwrap();
    storage.delete("data/ab/x").unwrap();
    assert!(storage.list_uncached("data").unwrap().is_empty());
}

/// A delete through the handle updates the listings it remembers: the deleted key is gone from
/// them, and a bounded read does not take its size from the old listing.
fn listing_cache_after_delete(storage: &Storage) {
    put(storage, "data/ab/x", b"hello");
    put(storage, "snapshots/s1", b"s");
    put(storage, "snapshots/s2", b"ss");
    assert_eq!(storage.list("data").unwrap().len(), 1);
    assert_eq!(storage.list("snapshots").unwrap().len(), 2);
    storage.delete("data/ab/x").unwrap();
    storage.delete("snapshots/s1").unwrap();
    assert!(storage.list("data").unwrap().is_empty());
    assert_eq!(
        storage.list("snapshots").unwrap(),
        [("snapshots/s2".to_string(), 2)]
    );
    assert_eq!(storage.list_objects("snapshots").unwrap().stray.len(), 1);
    assert_missing(
        storage.get_bounded("snapshot", "snapshots/s1", 100),
        "snapshot",
        "snapshots/s1",
    );
    assert!(storage.list_uncached("data").unwrap().is_empty());
    assert_eq!(
        storage.list_uncached("snapshots").unwrap(),
        storage.list("snapshots").unwrap()
    );
}

/// `get_bounded` within the limit reads the bytes, with and without a listing of the directory
/// (the size comes from the listing when there is one); an empty object fits a limit of 0.
fn bounded_reads(storage: &Storage) {
    put(storage, "snapshots/small", b"0123456789");
    put(storage, "data/ab/p", b"pack bytes");
    storage.put_new("locks/empty", Bytes::new()).unwrap();
    for listed in [false, true] {
        if listed {
            storage.list("snapshots").unwrap();
            storage.list("data").unwrap();
            storage.list("locks").unwrap();
        }
        let read = storage
            .get_bounded("snapshot", "snapshots/small", 10)
            .unwrap();
        assert_eq!(&read[..], b"0123456789");
        let read = storage.get_bounded("pack", "data/ab/p", 1 << 20).unwrap();
        assert_eq!(&read[..], b"pack bytes");
        assert!(storage
            .get_bounded("lease", "locks/empty", 0)
            .unwrap()
            .is_empty());
        assert_missing(
            storage.get_bounded("snapshot", "snapshots/none", 9),
            "snapshot",
            "snapshots/none",
        );
    }
}

/// An object above the maximum is refused as damaged, naming it, its size and the limit, with
/// and without a listing.
fn bounded_read_refuses_an_object_above_its_maximum(storage: &Storage) {
    put(storage, "snapshots/small", b"0123456789");
    put(storage, "index/i1", b"index bytes");
    for listed in [false, true] {
        if listed {
            storage.list("snapshots").unwrap();
            storage.list("index").unwrap();
        }
        match storage.get_bounded("snapshot", "snapshots/small", 9) {
            Err(Error::Corrupt { what, id, reason }) => {
                assert_eq!((what, id.as_str()), ("snapshot", "snapshots/small"));
                assert!(
                    reason.contains("10 bytes") && reason.contains("maximum of 9"),
                    "{reason}"
                );
            }
            other => panic!("listed {listed}: {other:?}"),
        }
        assert_corrupt(
            storage.get_bounded("index", "index/i1", 0),
            "index",
            "index/i1",
        );
        let err = storage.get_bounded("lease", "index/i1", 10).unwrap_err();
        assert!(err.to_string().contains("index/i1"), "{err}");
    }
}

/// A multi-megabyte object one byte above the maximum is refused (naming its size), and read
/// whole when the maximum is its size, with and without a listing.
fn bounded_read_refuses_a_large_object_and_reads_it_at_its_size(storage: &Storage) {
    let big: Vec<u8> = (0..(3 << 20) + 1).map(|i| (i % 253) as u8).collect();
    let size = big.len() as u64;
    storage
        .put_new("data/ef/big", Bytes::from(big.clone()))
        .unwrap();
    for listed in [false, true] {
        if listed {
            storage.list("data").unwrap();
        }
        match storage.get_bounded("pack", "data/ef/big", size - 1) {
            Err(Error::Corrupt { what, id, reason }) => {
                assert_eq!((what, id.as_str()), ("pack", "data/ef/big"));
                assert!(reason.contains(&format!("{size} bytes")), "{reason}");
            }
            other => panic!("listed {listed}: {:?}", other.map(|b| b.len())),
        }
        let read = storage.get_bounded("pack", "data/ef/big", size).unwrap();
        assert!(read == big, "listed {listed}: the bytes differ");
    }
}

/// A delete and a new write of the same name through the handle leave the listing it remembers
/// with the new size, so a bounded read checks the new object against the maximum.
fn bounded_read_after_delete_and_rewrite_sees_the_new_size(storage: &Storage) {
    put(storage, "data/ab/x", b"hello");
    assert_eq!(
        storage.list("data").unwrap(),
        [("data/ab/x".to_string(), 5)]
    );
    storage.delete("data/ab/x").unwrap();
    put(storage, "data/ab/x", b"again!!");
    assert_eq!(
        storage.list("data").unwrap(),
        [("data/ab/x".to_string(), 7)]
    );
    assert_eq!(
        &storage.get_bounded("pack", "data/ab/x", 7).unwrap()[..],
        b"again!!"
    );
    assert_corrupt(
        storage.get_bounded("pack", "data/ab/x", 6),
        "pack",
        "data/ab/x",
    );
}

/// A handle remembers its listings: another writer's objects appear once it forgets them
/// ([`Storage::forget_listings`], as prune does under the lease) or lists afresh
/// ([`Storage::list_uncached`], [`Storage::list_with_times`], which replaces what it remembers).
fn other_writers_are_seen_once_listings_are_forgotten(storage: &Storage, other: &Storage) {
    assert!(storage.list("index").unwrap().is_empty());
    put(other, "index/i1", b"i");
    assert!(storage.list("index").unwrap().is_empty());
    assert_eq!(keys(&storage.list_uncached("index").unwrap()), ["index/i1"]);
    storage.forget_listings();
    assert_eq!(keys(&storage.list("index").unwrap()), ["index/i1"]);
    put(other, "index/i2", b"ii");
    assert_eq!(storage.list_with_times("index").unwrap().len(), 2);
    assert_eq!(
        storage.list("index").unwrap(),
        [("index/i1".to_string(), 1), ("index/i2".to_string(), 2)]
    );
    assert_eq!(&storage.get("index", "index/i2").unwrap()[..], b"ii");
}

/// An object another handle deleted reads as missing, even while this handle's listing still
/// shows it (a bounded read takes the size from there, then finds no object).
fn object_deleted_by_another_handle_is_missing(storage: &Storage, other: &Storage) {
    put(storage, "snapshots/s1", b"snapshot");
    assert_eq!(storage.list("snapshots").unwrap().len(), 1);
    other.delete("snapshots/s1").unwrap();
    assert_eq!(storage.list("snapshots").unwrap().len(), 1);
    assert_missing(
        storage.get_bounded("snapshot", "snapshots/s1", 100),
        "snapshot",
        "snapshots/s1",
    );
    assert_missing(
        storage.get("snapshot", "snapshots/s1"),
        "snapshot",
        "snapshots/s1",
    );
    assert_eq!(storage.size("snapshots/s1").unwrap(), None);
    assert!(storage.list_uncached("snapshots").unwrap().is_empty());
}

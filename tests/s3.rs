//! Off-site repositories against a real S3 server (moto, started by the harness): the storage
//! conformance suite, backup / restore / copy end to end on the local file system and on S3, no
//! plaintext in any stored object, the metadata cache, and a server that dies mid-backup.

use coffer_e2e::{pseudo_random, Env, FlakyProxy, MotoServer, S3_SECRET_KEY};
use coffer_repo::{OpenMode, Storage, StorageOptions};
use std::fs;
use std::path::Path;

/// The storage conformance suite, shared with repo-format's tests (which run it on memory and
/// local directories): test code included here, so the library ships no test helpers.
#[path = "../repo-format/tests/support/storage_conformance.rs"]
mod storage_conformance;

const MARKER: &str = "COFFER-PLAINTEXT-MARKER-7b1e";

/// Storage options that reach `endpoint` with the test credentials.
fn s3_options(endpoint: &str) -> StorageOptions {
    StorageOptions {
        options: MotoServer::env_for(endpoint)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        ..StorageOptions::default()
    }
}

/// Every object of a repository, read through the storage seam.
fn all_objects(storage: &Storage) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["config", "keys", "data", "index", "snapshots"] {
        for (key, _) in storage.list_uncached(dir).unwrap() {
            out.push((key.clone(), storage.get("object", &key).unwrap().to_vec()));
        }
    }
    out
}

fn s3_storage(env: &Env, endpoint: &str) -> Storage {
    Storage::open_with(&env.repo, OpenMode::Existing, &s3_options(endpoint)).unwrap()
}

fn make_source(root: &Path) {
    fs::create_dir_all(root.join("uploads/2026")).unwrap();
    fs::write(
        root.join(".env"),
        format!("SECRET_KEY={MARKER}\nDATABASE_URL=postgres://app:{MARKER}@db/app\n"),
    )
    .unwrap();
    let mut text = Vec::new();
    for i in 0..20_000 {
        text.extend_from_slice(format!("line {i} {MARKER}\n").as_bytes());
    }
    fs::write(root.join("uploads/2026/notes.txt"), &text).unwrap();
    fs::write(
        root.join("uploads/big.bin"),
        pseudo_random(7, 6 * 1024 * 1024),
    )
    .unwrap();
    std::os::unix::fs::symlink("2026", root.join("uploads/latest")).unwrap();
}

/// Files below `root` with their contents (symlinks as their targets).
fn contents(root: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.push((
                    rel,
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                ));
            } else if m.is_dir() {
                out.push((rel.clone(), Vec::new()));
                walk(root, &p, out);
            } else {
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

fn restore_and_compare(env: &Env, snapshot: &str, source: &Path) {
    let target = env.path(&format!("restore-{}", env.snapshots().len()));
    let _ = fs::remove_dir_all(&target);
    env.run(&["restore", snapshot, "--target", target.to_str().unwrap()])
        .ok();
    let inner = target.join(source.strip_prefix("/").unwrap());
    assert_eq!(contents(&inner), contents(source), "restored tree differs");
}

fn init(env: &Env, extra: &[&str]) {
    let mut args = vec![
        "init",
        "--insecure-kdf",
        "--argon2-memory-kib",
        "64",
        "--argon2-iterations",
        "1",
    ];
    args.extend_from_slice(extra);
    env.run(&args).ok();
}

#[test]
fn storage_conformance_on_s3() {
    let server = MotoServer::shared();
    let bucket = server.bucket();
    // Each check on a prefix of its own, reached by as many handles as it asks for.
    let open = |name: &str| {
        Storage::open_with(
            &format!("s3://{bucket}/conformance/{name}"),
            OpenMode::Existing,
            &s3_options(&server.endpoint),
        )
        .unwrap()
    };
    storage_conformance::run("S3 (moto)", &open, true);
    // A missing bucket is a permanent failure, reported at once with bucket and operation.
    let missing = Storage::open_with(
        "s3://no-such-bucket-coffer/x",
        OpenMode::Existing,
        &s3_options(&server.endpoint),
    )
    .unwrap();
    let err = missing
        .put_new("keys/k", bytes::Bytes::from_static(b"k"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("storage write of s3://no-such-bucket-coffer/x/keys/k"),
        "{err}"
    );
    assert!(err.contains("bucket does not exist"), "{err}");
    assert!(!err.contains(S3_SECRET_KEY), "{err}");
}

/// The same end-to-end run on a local directory and on S3.
fn backup_restore_suite(env: &Env) {
    let source = env.path("app");
    make_source(&source);
    init(env, &[]);
    env.run(&["backup", source.to_str().unwrap(), "--tag", "first"])
        .ok();
    fs::write(source.join("uploads/added.txt"), "second run\n").unwrap();
    env.run(&["backup", source.to_str().unwrap()]).ok();
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2);
    restore_and_compare(env, "latest", &source);
    // Dump one file from the first snapshot.
    let first = snaps[0]["id"].as_str().unwrap();
    let out = env
        .run(&["dump", first, &format!("{}/.env", source.display())])
        .ok();
    assert!(out.stdout.contains(MARKER));
}

#[test]
fn backup_restore_local() {
    backup_restore_suite(&Env::new());
}

#[test]
fn backup_restore_s3_without_plaintext_or_secrets() {
    let server = MotoServer::shared();
    let env = Env::s3(server);
    backup_restore_suite(&env);
    let storage = s3_storage(&env, &server.endpoint);
    let objects = all_objects(&storage);
    assert!(objects.iter().any(|(k, _)| k.starts_with("data/")));
    for (key, bytes) in &objects {
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{key} holds plaintext"
        );
    }
    // The metadata cache was filled (snapshots, index, tree packs) and is used: after the
    // snapshot objects are replaced by garbage on the server, `snapshots` still works from
    // the verified cache, and --no-cache sees the damage.
    let cache = env.path(".cache/coffer");
    let cached: Vec<String> = walk_files(&cache);
    assert!(
        cached.iter().any(|k| k.contains("/snapshots/")),
        "{cached:?}"
    );
    assert!(cached.iter().any(|k| k.contains("/index/")), "{cached:?}");
    assert!(cached.iter().any(|k| k.contains("/data/")), "{cached:?}");
    overwrite_snapshots(&env, &server.endpoint);
    assert_eq!(env.snapshots().len(), 2);
    // Damaged snapshots are named and skipped (listing the others is not blocked by them).
    let run = env.run(&["--no-cache", "snapshots"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stderr.matches("is corrupt").count(),
        2,
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("0 snapshot(s)"), "{}", run.stdout);
    // check fails naming them.
    let run = env.run(&["--no-cache", "check"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(!run.stderr.contains(S3_SECRET_KEY));
}

fn walk_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk_files(&e.path()));
        } else {
            out.push(e.path().to_string_lossy().into_owned());
        }
    }
    out
}

/// Replaces every snapshot object on the server with other bytes (bypassing coffer).
fn overwrite_snapshots(env: &Env, endpoint: &str) {
    use object_store::aws::AmazonS3Builder;
    use object_store::{ObjectStoreExt, PutPayload};
    let rest = env.repo.strip_prefix("s3://").unwrap();
    let (bucket, prefix) = rest.split_once('/').unwrap();
    let store = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("x")
        .with_secret_access_key("y")
        .build()
        .unwrap();
    let storage = s3_storage(env, endpoint);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for (key, _) in storage.list_uncached("snapshots").unwrap() {
        let path = object_store::path::Path::from(format!("{prefix}/{key}"));
        runtime
            .block_on(store.put(&path, PutPayload::from_static(b"garbage")))
            .unwrap();
    }
}

#[test]
fn copy_local_to_s3_is_idempotent_and_uploads_only_what_is_missing() {
    let server = MotoServer::shared();
    let local = Env::new();
    let source = local.path("app");
    make_source(&source);
    init(&local, &[]);
    local.run(&["backup", source.to_str().unwrap()]).ok();

    let mut remote = Env::s3(server);
    remote.password = "another password".into();
    init(&remote, &[]);
    let copy = |remote: &Env, args: &[&str]| {
        let mut cmd = remote.cmd(&[&["copy", "--from-repo", &local.repo][..], args].concat());
        cmd.env("COFFER_FROM_PASSWORD", &local.password);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = copy(&remote, &["--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["copied"].as_array().unwrap().len(), 1);
    let storage = s3_storage(&remote, &server.endpoint);
    let before = all_objects(&storage).len();

    // Idempotent: a second copy uploads nothing.
    let out = copy(&remote, &["--json"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report["copied"].as_array().unwrap().is_empty());
    assert_eq!(report["already_present"].as_array().unwrap().len(), 1);
    assert_eq!(all_objects(&storage).len(), before);

    // A second backup with a small change: copying it uploads little.
    fs::write(source.join("uploads/added.txt"), "more\n").unwrap();
    local.run(&["backup", source.to_str().unwrap()]).ok();
    let out = copy(&remote, &["--json", "latest"]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["copied"].as_array().unwrap().len(), 1);
    assert!(
        report["added_stored_bytes"].as_u64().unwrap() < 1024 * 1024,
        "{report}"
    );
    let snaps = remote.snapshots();
    assert_eq!(snaps.len(), 2);
    let local_snaps = local.snapshots();
    assert_eq!(
        snaps[1]["copied_from"], local_snaps[1]["id"],
        "copied_from names the source snapshot"
    );
    assert_eq!(snaps[1]["time"], local_snaps[1]["time"]);
    restore_and_compare(&remote, "latest", &source);
    for (key, bytes) in all_objects(&storage) {
        assert!(
            !bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "{key} holds plaintext"
        );
    }
}

/// The S3 server dies in the middle of a backup: a clear error naming the operation and the
/// bucket, no snapshot, the earlier snapshot still restores, and the next backup succeeds.
#[test]
fn server_dying_mid_backup() {
    let server = MotoServer::start();
    let proxy = FlakyProxy::start(server.port());
    let mut env = Env::s3(&server);
    env.extra_env = MotoServer::env_for(&proxy.endpoint());
    let source = env.path("app");
    make_source(&source);
    init(&env, &["--pack-size-mib", "1"]);
    env.run(&["backup", source.to_str().unwrap()]).ok();
    let first = env.snapshots();
    assert_eq!(first.len(), 1);

    fs::write(
        source.join("uploads/more.bin"),
        pseudo_random(99, 12 * 1024 * 1024),
    )
    .unwrap();
    // About a third of the new data gets through, then the server is gone.
    proxy.fail_after(4 * 1024 * 1024);
    let run = env.run(&[
        "-o",
        "max_retries=2",
        "-o",
        "retry_timeout=3s",
        "-o",
        "connect_timeout=2s",
        "-o",
        "timeout=10s",
        "backup",
        source.to_str().unwrap(),
    ]);
    assert!(proxy.is_down(), "the proxy never failed: {run:?}");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("backup failed"), "{}", run.stderr);
    assert!(run.stderr.contains("s3://coffer-"), "{}", run.stderr);
    assert!(run.stderr.contains("storage "), "{}", run.stderr);
    assert!(!run.stderr.contains(S3_SECRET_KEY), "{}", run.stderr);

    proxy.up();
    assert_eq!(
        env.snapshots().len(),
        1,
        "no snapshot from the failed backup"
    );
    // The repository still checks out: the interrupted backup left at most unindexed packs.
    let check = env.run(&["check", "--read-data"]).ok();
    assert!(check.stdout.contains("no damage found"), "{}", check.stdout);
    let first_id = first[0]["id"].as_str().unwrap().to_string();
    let target = env.path("restore-first");
    env.run(&["restore", &first_id, "--target", target.to_str().unwrap()])
        .ok();
    env.run(&["backup", source.to_str().unwrap()]).ok();
    assert_eq!(env.snapshots().len(), 2);
    restore_and_compare(&env, "latest", &source);
    env.run(&["check", "--read-data"]).ok();
}

/// The lease race of `repository/lease.rs`'s unit test, against the real S3 server: eight
/// threads, each with its own client, race for the maintenance lease of one repository in
/// every round; exactly one wins (conditional writes decide it, as on a real bucket).
#[test]
fn racing_lease_contenders_on_s3_have_one_winner() {
    use coffer_repo::repository::lease::{Lease, LeaseOptions};
    use coffer_repo::repository::Repository;
    let server = MotoServer::shared();
    for round in 0..5 {
        let env = Env::s3(server);
        init(&env, &[]);
        let repo =
            Repository::open(s3_storage(&env, &server.endpoint), env.password.as_bytes()).unwrap();
        let keys = repo.keys().clone();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                // Each contender opens its own client, as separate processes would.
                let storage = s3_storage(&env, &server.endpoint);
                let (keys, barrier) = (keys.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut options = LeaseOptions::new("prune", "race-host");
                    options.refresh = std::time::Duration::from_secs(3600);
                    barrier.wait();
                    Lease::acquire(&storage, &keys, options).ok()
                })
            })
            .collect();
        // Every contender is joined before any lease is dropped, so none wins after a release.
        let results: Vec<Option<Lease>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners = results.iter().filter(|l| l.is_some()).count();
        assert_eq!(winners, 1, "round {round}: exactly one contender must win");
    }
}

//! How many requests Coffer makes on a real S3 server (moto, started by the harness with its
//! request log on): restore, dump, check --read-data, prune's repacking and copy of a
//! repository holding many small files each read its packs with at most one GET per pack
//! (the read planner, `repository/plan.rs`), where one GET per file would be thousands; a
//! pack goes up with one PUT; and a restore lists each directory once although the listings
//! are made while the key is derived.

use coffer_e2e::{pseudo_random, requests, Env, MotoServer};
use coffer_repo::{OpenMode, Storage, StorageOptions};
use std::fs;
use std::path::Path;

/// How many small files the source holds: far more than it has packs.
const SMALL_FILES: usize = 1200;

/// Small files of 1-4 KiB in 24 directories, and two files of 3 MiB: about 6 MiB.
fn make_source(root: &Path) {
    for i in 0..SMALL_FILES {
        let dir = root.join(format!("dir{:02}", i % 24));
        fs::create_dir_all(&dir).unwrap();
        let len = 1024 + (i * 2654435761) % 3072;
        fs::write(dir.join(format!("f{i}.bin")), pseudo_random(i as u64, len)).unwrap();
    }
    for i in 0..2u64 {
        fs::write(
            root.join(format!("big{i}.bin")),
            pseudo_random(1000 + i, 3 << 20),
        )
        .unwrap();
    }
}

/// The packs (objects under `data/`) of the repository of `env`, with their sizes.
fn pack_sizes(env: &Env, server: &MotoServer) -> Vec<(String, u64)> {
    let options = StorageOptions {
        options: MotoServer::env_for(&server.endpoint)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        ..StorageOptions::default()
    };
    let storage = Storage::open_with(&env.repo, OpenMode::Existing, &options).unwrap();
    storage.list_uncached("data").unwrap()
}

/// The number of packs of the repository of `env`.
fn packs(env: &Env, server: &MotoServer) -> usize {
    pack_sizes(env, server).len()
}

/// Runs `f` and returns the GET requests of pack objects of `repo` it made.
fn pack_gets(log: &Path, repo: &str, f: impl FnOnce()) -> usize {
    repo_requests(log, repo, f)
        .iter()
        .filter(|(method, key)| method == "GET" && key.starts_with("data/"))
        .count()
}

fn same_files(a: &Path, b: &Path) {
    for entry in fs::read_dir(a).unwrap().flatten() {
        let other = b.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            same_files(&entry.path(), &other);
        } else {
            assert!(
                fs::read(entry.path()).unwrap() == fs::read(&other).unwrap(),
                "{} differs",
                other.display()
            );
        }
    }
}

#[test]
fn reads_make_at_most_one_get_per_pack_touched() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("moto.log");
    let server = MotoServer::start_logging(Some(&log));
    let env = Env::s3(&server);
    env.init();
    let source = env.path("src");
    make_source(&source);
    env.run(&["backup", source.to_str().unwrap()]).ok();
    let packs_before = packs(&env, &server);
    assert!(packs_before < SMALL_FILES / 10, "{packs_before} packs");

    // Restore: every file, one GET per pack at most.
    let target = env.path("restored");
    let gets = pack_gets(&log, &env.repo, || {
        env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
            .ok();
    });
    same_files(&source, &target.join(source.strip_prefix("/").unwrap()));
    // The log is read (the restore made requests), and at most one per pack.
    assert!(gets > 0, "no pack GET in the request log");
    eprintln!("restore: {gets} pack GETs, {packs_before} packs");
    assert!(
        gets <= packs_before,
        "restore made {gets} pack GETs for {packs_before} packs"
    );

    // Dump of one large file.
    let inside = format!("{}/big1.bin", source.display());
    let gets = pack_gets(&log, &env.repo, || {
        let out = env.run(&["dump", "latest", &inside]).ok();
        assert!(out.raw_stdout.len() == 3 << 20);
    });
    assert!(gets <= packs_before, "dump made {gets} pack GETs");

    // check --read-data reads every pack once.
    let gets = pack_gets(&log, &env.repo, || {
        env.run(&["check", "--read-data"]).ok();
    });
    assert!(
        gets <= packs_before,
        "check made {gets} pack GETs for {packs_before} packs"
    );

    // Without the metadata cache, check reads each pack's header with one GET and loads its
    // trees with one GET per tree pack (not one per tree: the source has 25 directories).
    let gets = pack_gets(&log, &env.repo, || {
        env.run(&["check", "--no-cache"]).ok();
    });
    assert!(
        gets <= 2 * packs_before,
        "check --no-cache made {gets} pack GETs for {packs_before} packs"
    );

    // Copy into a second repository on the same server reads each source pack once.
    let mut other = Env::s3(&server);
    other.password = "another password".into();
    other.init();
    let gets = pack_gets(&log, &env.repo, || {
        let mut cmd = other.cmd(&["copy", "--from-repo", &env.repo]);
        cmd.env("COFFER_FROM_PASSWORD", &env.password);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    assert!(
        gets <= packs_before,
        "copy made {gets} source pack GETs for {packs_before} packs"
    );

    // Half the small files go: prune repacks the pack that held them, reading it once.
    for i in (0..SMALL_FILES).step_by(2) {
        fs::remove_file(source.join(format!("dir{:02}/f{i}.bin", i % 24))).unwrap();
    }
    env.run(&["backup", source.to_str().unwrap()]).ok();
    let packs_now = packs(&env, &server);
    let gets = pack_gets(&log, &env.repo, || {
        env.run(&["forget", "--keep-last", "1", "--prune", "--grace", "0s"])
            .ok();
    });
    assert!(
        gets <= packs_now,
        "prune made {gets} pack GETs for {packs_now} packs"
    );
    let target = env.path("after-prune");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    same_files(&source, &target.join(source.strip_prefix("/").unwrap()));
}

/// The storage class of every object of `bucket`, by key, as moto records it (its state
/// dump, `/moto-api/data.json`).
fn storage_classes(port: u16, bucket: &str) -> std::collections::HashMap<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /moto-api/data.json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let state: serde_json::Value = serde_json::from_str(body).unwrap();
    state["s3"]["FakeKey"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["bucket_name"] == bucket)
        .map(|k| {
            (
                k["name"].as_str().unwrap().to_string(),
                k["storage_class"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `-o storage_class=STANDARD_IA` puts data packs in that class, and keeps tree packs, index files, snapshots, keys and the config in the standard
/// one; a local repository refuses the option.
#[test]
fn data_packs_go_to_the_configured_storage_class_and_metadata_does_not() {
    let server = MotoServer::shared();
    let env = Env::s3(server);
    env.init();
    let source = env.path("src");
    make_source(&source);
    env.run(&[
        "backup",
        "-o",
        "storage_class=STANDARD_IA",
        source.to_str().unwrap(),
    ])
    .ok();
    let options = StorageOptions {
        options: MotoServer::env_for(&server.endpoint)
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        ..StorageOptions::default()
    };
    let storage = Storage::open_with(&env.repo, OpenMode::Existing, &options).unwrap();
    let (bucket, prefix) = env
        .repo
        .trim_start_matches("s3://")
        .split_once('/')
        .unwrap();
    let classes = storage_classes(server.port(), bucket);
    let class = |key: &str| classes[&format!("{prefix}/{key}")].clone();
    let (mut infrequent, mut standard) = (0, 0);
    for (key, size) in storage.list_uncached("data").unwrap() {
        match class(&key).as_str() {
            "STANDARD_IA" => infrequent += 1,
            "STANDARD" => {
                standard += 1;
                // Tree packs: small here.
                assert!(size < 1 << 20, "{key} of {size} bytes is in STANDARD");
            }
            other => panic!("{key}: storage class {other}"),
        }
    }
    assert!(infrequent >= 1, "{infrequent} data packs in STANDARD_IA");
    assert!(standard >= 1, "no tree pack in STANDARD");
    for dir in ["index", "snapshots", "keys"] {
        for (key, _) in storage.list_uncached(dir).unwrap() {
            assert_eq!(class(&key), "STANDARD", "{key}");
        }
    }
    assert_eq!(class("config"), "STANDARD");
    env.run(&["check", "--read-data"]).ok();
    // A local repository has no storage classes: refused as a configuration error.
    let local = Env::new();
    let out = local.run(&["init", "-o", "storage_class=STANDARD_IA"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("storage_class"), "{}", out.stderr);
}

/// Every request `f` made on an object of `repo`, as (method, key below the repository) pairs;
/// bucket listings are left out.
fn repo_requests(log: &Path, repo: &str, f: impl FnOnce()) -> Vec<(String, String)> {
    let from = fs::metadata(log).map_or(0, |m| m.len());
    f();
    // The server writes its log line after answering: give it a moment to land.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let prefix = repo.trim_start_matches("s3:/");
    requests(log, from)
        .into_iter()
        .filter_map(|(method, path)| {
            let key = path.strip_prefix(prefix)?.strip_prefix('/')?;
            Some((method, key.to_string()))
        })
        .collect()
}

/// Metadata costs few requests and no HEAD: opening reads the config with one GET (fetched
/// while the key file is opened), and what a command wrote itself (snapshots, index files,
/// deletion plans, tree packs) is in the cache, so neither `snapshots` nor `forget --prune`
/// downloads any of it again.
#[test]
fn metadata_is_read_once_and_what_was_written_is_not_downloaded_again() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("moto.log");
    let server = MotoServer::start_logging(Some(&log));
    let env = Env::s3(&server);
    env.init();
    let source = env.path("src");
    for i in 0..40u64 {
        fs::create_dir_all(source.join(format!("d{}", i % 4))).unwrap();
        fs::write(
            source.join(format!("d{}/f{i}", i % 4)),
            pseudo_random(i, 5000),
        )
        .unwrap();
    }
    env.run(&["backup", source.to_str().unwrap()]).ok();
    for i in (0..40u64).step_by(3) {
        fs::write(
            source.join(format!("d{}/f{i}", i % 4)),
            pseudo_random(100 + i, 7000),
        )
        .unwrap();
    }
    env.run(&["backup", source.to_str().unwrap()]).ok();

    let seen = repo_requests(&log, &env.repo, || {
        env.run(&["snapshots"]).ok();
    });
    let heads = seen.iter().filter(|(m, _)| m == "HEAD").count();
    let gets: Vec<&String> = seen
        .iter()
        .filter(|(m, _)| m == "GET")
        .map(|(_, k)| k)
        .collect();
    assert_eq!(heads, 0, "snapshots made HEAD requests: {seen:?}");
    assert_eq!(
        gets.len(),
        2,
        "snapshots: config and key file only: {seen:?}"
    );
    assert!(gets.iter().any(|k| k.as_str() == "config"), "{seen:?}");

    let seen = repo_requests(&log, &env.repo, || {
        env.run(&["forget", "--keep-last", "1", "--prune", "--grace", "0s"])
            .ok();
    });
    assert!(
        !seen.iter().any(|(m, _)| m == "HEAD"),
        "forget --prune made HEAD requests: {seen:?}"
    );
    let fetched: Vec<&String> = seen
        .iter()
        .filter(|(m, k)| {
            m == "GET"
                && ["snapshots/", "index/", "plans/"]
                    .iter()
                    .any(|dir| k.starts_with(dir))
        })
        .map(|(_, k)| k)
        .collect();
    assert!(
        fetched.is_empty(),
        "forget --prune downloaded metadata this client wrote: {fetched:?}"
    );
    // It did prune: a plan was written and carried out, and what is left restores.
    assert!(
        seen.iter()
            .any(|(m, k)| m == "PUT" && k.starts_with("plans/")),
        "{seen:?}"
    );
    env.run(&["check", "--read-data"]).ok();
    let target = env.path("restored");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    same_files(&source, &target.join(source.strip_prefix("/").unwrap()));
}

/// A pack of the usual sizes goes up as one PUT (one request, one round trip), not as a
/// multipart upload (a POST to start, a PUT per part, a POST to complete).
#[test]
fn a_full_pack_goes_up_in_one_put() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("moto.log");
    let server = MotoServer::start_logging(Some(&log));
    let env = Env::s3(&server);
    env.init_with(&["--pack-size-mib", "20"]);
    let source = env.path("src");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("big.bin"), pseudo_random(7, 26 << 20)).unwrap();
    let seen = repo_requests(&log, &env.repo, || {
        env.run(&["backup", source.to_str().unwrap()]).ok();
    });
    let on_packs: Vec<&(String, String)> = seen
        .iter()
        .filter(|(_, k)| k.starts_with("data/"))
        .collect();
    let puts = on_packs.iter().filter(|(m, _)| m == "PUT").count();
    assert_eq!(puts, packs(&env, &server), "{on_packs:?}");
    assert_eq!(puts, on_packs.len(), "only PUTs of packs: {on_packs:?}");
    // One of them above 16 MiB, which went up in parts before.
    let sizes = pack_sizes(&env, &server);
    assert!(sizes.iter().any(|(_, size)| *size > 20 << 20), "{sizes:?}");
}

/// The directories listed by one command on the repository `repo` (`s3://bucket/prefix`), one
/// entry per LIST request, relative to the repository (`index/`, `snapshots/`, ...).
fn listed_dirs(log: &Path, repo: &str, f: impl FnOnce()) -> Vec<String> {
    let from = fs::metadata(log).map_or(0, |m| m.len());
    f();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (bucket, prefix) = repo
        .trim_start_matches("s3://")
        .split_once('/')
        .expect("an s3://bucket/prefix location");
    requests(log, from)
        .into_iter()
        .filter(|(method, path)| method == "GET" && path.starts_with(&format!("/{bucket}?")))
        .filter_map(|(_, path)| {
            let query = path.split_once('?')?.1;
            let listed = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("prefix="))?
                .replace("%2F", "/");
            Some(listed.strip_prefix(&format!("{prefix}/"))?.to_string())
        })
        .collect()
}

/// Opening a repository on an object store lists what the command reads next while the key is
/// derived (`Storage::list_early`), and the command uses those listings: a restore lists each
/// directory it reads exactly once, as it did when it listed them one after another.
#[test]
fn a_restore_lists_each_directory_once() {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("moto.log");
    let server = MotoServer::start_logging(Some(&log));
    let env = Env::s3(&server);
    env.init();
    let source = env.path("src");
    fs::create_dir_all(&source).unwrap();
    fs::write(source.join("a"), pseudo_random(1, 5000)).unwrap();
    env.run(&["backup", source.to_str().unwrap()]).ok();
    let target = env.path("restored");
    let mut listed = listed_dirs(&log, &env.repo, || {
        env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
            .ok();
    });
    listed.sort();
    assert_eq!(
        listed,
        ["index/", "keys/", "plans/", "snapshots/"],
        "restore's listings"
    );
    same_files(&source, &target.join(source.strip_prefix("/").unwrap()));
}

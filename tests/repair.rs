//! Issue 13 item 2: a lost pack. `backup --force` stops reusing it, `repair index` rebuilds the
//! index from the packs present (also on S3), a backup then stores the lost data again,
//! `repair snapshots --forget` rewrites the damaged snapshots, and check and prune work again.

use coffer_e2e::{pack_files, pseudo_random, tree_contents, Env, MotoServer};
use coffer_repo::{OpenMode, Storage, StorageOptions};
use serde_json::Value;
use std::fs;
use std::path::Path;

fn init_small(env: &Env) {
    env.run(&[
        "init",
        "--insecure-kdf",
        "--argon2-memory-kib",
        "64",
        "--argon2-iterations",
        "1",
        "--pack-size-mib",
        "1",
    ])
    .ok();
}

fn json(run: coffer_e2e::Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

/// A source tree: `keep/` (a file that stays), `gone/` (a file deleted after the first backups)
/// and a text file.
fn make_source(src: &Path) {
    fs::create_dir_all(src.join("keep")).unwrap();
    fs::create_dir_all(src.join("gone")).unwrap();
    fs::write(src.join("keep/keep.bin"), pseudo_random(1, 2_500_000)).unwrap();
    fs::write(src.join("gone/gone.bin"), pseudo_random(2, 1_500_000)).unwrap();
    fs::write(src.join("notes.txt"), b"still here\n").unwrap();
}

fn backup(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["backup", "--json"];
    all.extend_from_slice(args);
    json(env.run(&all).ok())["id"].as_str().unwrap().to_string()
}

/// Backs up `path` and returns the snapshot id and the largest pack it wrote.
fn backup_new_pack(env: &Env, path: &Path) -> (String, std::path::PathBuf) {
    let before = if Path::new(&env.repo).join("data").exists() {
        pack_files(Path::new(&env.repo))
    } else {
        Vec::new()
    };
    let id = backup(env, &[path.to_str().unwrap()]);
    let new = pack_files(Path::new(&env.repo))
        .into_iter()
        .filter(|p| !before.contains(p))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    (id, new)
}

/// Restores `snapshot` into a fresh directory and returns the restored copy of `src` in it.
fn restore(env: &Env, snapshot: &str, src: &Path) -> std::path::PathBuf {
    static RESTORES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RESTORES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let target = env.path(&format!("restored-{n}-{snapshot}"));
    env.run(&["restore", snapshot, "--target", target.to_str().unwrap()])
        .ok();
    target.join(src.strip_prefix("/").unwrap())
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_lost_pack_is_repaired_and_later_backups_restore() {
    let env = Env::new();
    init_small(&env);
    let src = env.path("src");
    make_source(&src);
    // Each file first on its own, so that we know a pack of each.
    let (keep_only, keep_pack) = backup_new_pack(&env, &src.join("keep"));
    let (gone_only, gone_pack) = backup_new_pack(&env, &src.join("gone"));
    let first = backup(&env, &[src.to_str().unwrap()]);

    // A pack of each file disappears; gone.bin then leaves the source for good.
    fs::remove_file(&keep_pack).unwrap();
    fs::remove_file(&gone_pack).unwrap();
    fs::remove_dir_all(src.join("gone")).unwrap();

    // check names the packs and says which repair to run.
    let out = env.run(&["check"]).expect_code(1);
    assert!(out.stderr.contains(&name(&keep_pack)), "{}", out.stderr);
    assert!(
        out.stderr.contains("coffer repair index")
            && out.stderr.contains("coffer repair snapshots"),
        "{}",
        out.stderr
    );
    // prune refuses, in words that parse.
    let out = env.run(&["prune", "--grace", "0s"]).expect_code(1);
    assert!(
        out.stderr
            .contains("prune refuses to run on a damaged repository")
            && out
                .stderr
                .contains("(it holds blobs that snapshots need) is missing from the repository")
            && !out.stderr.contains("`coffer check` is missing"),
        "{}",
        out.stderr
    );

    // backup --force no longer reuses the lost pack: its snapshot restores completely.
    let forced = backup(&env, &["--force", src.to_str().unwrap()]);
    assert_eq!(
        tree_contents(&restore(&env, &forced, &src)),
        tree_contents(&src)
    );
    // check still fails (an index names the lost pack) but does not call the forced snapshot
    // damaged: it reads the newest copy of each blob, as restore does.
    let report = json(env.run(&["check", "--json"]).expect_code(1));
    let damaged: Vec<&str> = report["damaged_snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(!damaged.is_empty(), "{report:#}");
    assert!(
        !damaged
            .iter()
            .any(|d| d.starts_with(forced.as_str()) || forced.starts_with(d)),
        "{report:#}"
    );

    // repair index drops the lost packs' entries and says so.
    let report = json(env.run(&["repair", "index", "--json"]).ok());
    let mut lost = vec![name(&keep_pack), name(&gone_pack)];
    lost.sort();
    assert_eq!(
        report["packs_dropped"],
        serde_json::json!(lost),
        "{report:#}"
    );
    assert!(report["blobs_dropped"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(
        report["packs_added"].as_array().unwrap().len(),
        0,
        "{report:#}"
    );
    assert!(
        report["index_files_removed"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    // Repeating it changes nothing more.
    let again = json(env.run(&["repair", "index", "--json"]).ok());
    assert_eq!(
        again["packs_dropped"].as_array().unwrap().len(),
        0,
        "{again:#}"
    );

    // A plain backup restores; so does a stream of keep.bin's bytes, which deduplicates only
    // against what is really there now.
    let plain = backup(&env, &[src.to_str().unwrap()]);
    assert_eq!(
        tree_contents(&restore(&env, &plain, &src)),
        tree_contents(&src)
    );
    let keep = fs::read(src.join("keep/keep.bin")).unwrap();
    let out = env
        .run_stdin(&["backup", "--json", "--stdin-name", "keep.copy"], &keep)
        .ok();
    let stream = json(out)["id"].as_str().unwrap().to_string();
    assert_eq!(
        env.run(&["dump", &stream, "keep.copy"]).ok().raw_stdout,
        keep
    );

    // The snapshots holding gone.bin are damaged; check says to repair the snapshots.
    let out = env.run(&["check"]).expect_code(1);
    assert!(
        out.stderr.contains(&first[..8]) && out.stderr.contains(&gone_only[..8]),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("coffer repair snapshots"),
        "{}",
        out.stderr
    );

    // repair snapshots --forget rewrites them, listing what each lost; keep.bin's data was
    // stored again by the forced backup, so its snapshot needs nothing.
    let out = env.run(&["repair", "snapshots", "--forget"]).ok();
    assert!(
        out.stdout.contains(&first[..8]) && out.stdout.contains(&gone_only[..8]),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("gone.bin: file removed"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(&keep_only[..8]), "{}", out.stdout);
    assert!(!out.stdout.contains("keep.bin"), "{}", out.stdout);
    let snapshots = env.snapshots();
    assert!(snapshots.iter().all(|s| s["id"] != first.as_str()));
    let repaired: Vec<&Value> = snapshots
        .iter()
        .filter(|s| s["labels"]["repaired-from"] == first.as_str())
        .collect();
    assert_eq!(repaired.len(), 1, "{snapshots:#?}");
    assert!(repaired[0]["tags"]
        .as_array()
        .unwrap()
        .contains(&Value::from("repaired")));
    env.run(&["check", "--read-data"]).ok();

    // Every snapshot restores; the repaired one without the damaged file.
    let repaired_id = repaired[0]["id"].as_str().unwrap().to_string();
    let restored = restore(&env, &repaired_id, &src);
    assert!(restored.join("gone").is_dir());
    assert!(!restored.join("gone/gone.bin").exists());
    assert_eq!(fs::read(restored.join("keep/keep.bin")).unwrap(), keep);
    assert_eq!(
        fs::read(restored.join("notes.txt")).unwrap(),
        b"still here\n"
    );
    for id in [&forced, &plain] {
        assert_eq!(tree_contents(&restore(&env, id, &src)), tree_contents(&src));
    }

    // prune works again, and leaves a clean repository.
    env.run(&["prune", "--grace", "0s"]).ok();
    env.run(&["check", "--read-data"]).ok();
    assert_eq!(
        env.run(&["dump", &stream, "keep.copy"]).ok().raw_stdout,
        keep
    );
}

#[test]
fn repair_index_adds_unindexed_packs_and_drops_missing_ones_on_s3() {
    let server = MotoServer::shared();
    let env = Env::s3(server);
    init_small(&env);
    let src = env.path("src");
    make_source(&src);
    backup(&env, &[src.to_str().unwrap()]);
    let storage = Storage::open_with(
        &env.repo,
        OpenMode::Existing,
        &StorageOptions {
            options: MotoServer::env_for(&server.endpoint)
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            ..StorageOptions::default()
        },
    )
    .unwrap();
    // One pack lost, and every index file lost too: repair must find the packs by listing.
    let packs = storage.list_uncached("data").unwrap();
    let (lost, _) = packs.iter().max_by_key(|(_, size)| *size).unwrap().clone();
    storage.delete(&lost).unwrap();
    for (key, _) in storage.list_uncached("index").unwrap() {
        storage.delete(&key).unwrap();
    }
    let out = env.run(&["check"]).expect_code(1);
    assert!(out.stderr.contains("coffer repair index"), "{}", out.stderr);

    let report = json(env.run(&["repair", "index", "--json"]).ok());
    assert_eq!(
        report["packs_added"].as_array().unwrap().len(),
        packs.len() - 1,
        "{report:#}"
    );
    assert_eq!(
        report["packs_indexed"].as_u64().unwrap() as usize,
        packs.len() - 1
    );
    env.run(&["repair", "snapshots", "--forget"]).ok();
    env.run(&["check", "--read-data"]).ok();
    let again = backup(&env, &[src.to_str().unwrap()]);
    assert_eq!(
        tree_contents(&restore(&env, &again, &src)),
        tree_contents(&src)
    );
}

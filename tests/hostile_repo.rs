//! A repository that holds things Coffer did not write, or damaged metadata, through the real
//! binary (issue 13, items 3 and 4): stray names are ignored by every command and reported by
//! check; a damaged snapshot or deletion plan is named and skipped by every command that does not
//! need it; oversized objects are refused before they are read.

use coffer_e2e::{pseudo_random, Env};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn json(run: coffer_e2e::Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

/// Backs up `input` as the stream `name` and returns the full snapshot id.
fn backup_stream(env: &Env, name: &str, input: &[u8]) -> String {
    let out = env
        .run_stdin(&["backup", "--json", "--stdin-name", name], input)
        .ok();
    json(out)["id"].as_str().unwrap().to_string()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Flips one bit near the end of a stored object (stored read-only).
fn flip_bit(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x04;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(path, &bytes).unwrap();
}

#[test]
fn stray_names_in_every_folder_are_ignored_by_every_command_and_reported_by_check() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.bin"), pseudo_random(1, 300_000)).unwrap();
    let src_arg = src.to_str().unwrap();
    env.run(&["backup", src_arg]).ok();
    let repo = PathBuf::from(&env.repo);
    let fan = fs::read_dir(repo.join("data"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    // An NFS leftover in every folder, a name that is nearly an id, and a file put by hand.
    let strays = [
        repo.join("snapshots/.nfs0000abcd"),
        repo.join("index/.nfs0000abce"),
        repo.join("plans/.nfs0000abcf"),
        repo.join("keys/.nfs0000abd0"),
        repo.join("data/.nfs0000abd1"),
        fan.join(".nfs0000abd2"),
        repo.join(format!("snapshots/{}", "A".repeat(64))),
        repo.join("index/README"),
    ];
    for stray in &strays {
        fs::create_dir_all(stray.parent().unwrap()).unwrap();
        fs::write(stray, b"not coffer's").unwrap();
    }

    fs::write(src.join("b.bin"), pseudo_random(2, 200_000)).unwrap();
    env.run(&["backup", src_arg]).ok();
    let ids: Vec<String> = env
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    let target = env.path("restored");
    env.run(&["restore", &ids[1], "--target", target.to_str().unwrap()])
        .ok();
    assert_eq!(
        fs::read(target.join(src.strip_prefix("/").unwrap()).join("b.bin")).unwrap(),
        pseudo_random(2, 200_000)
    );
    env.run(&["forget", "--keep-last", "1"]).ok();
    env.run(&["prune", "--grace", "0s"]).ok();
    env.run(&["unlock"]).ok();
    env.run(&["key", "list"]).ok();
    let check = env.run(&["check", "--read-data"]).ok();
    for stray in &strays {
        let key = stray.strip_prefix(&repo).unwrap().to_str().unwrap();
        assert!(check.stderr.contains(key), "{key}: {}", check.stderr);
        // Not Coffer's, so never deleted.
        assert!(stray.exists(), "{}", stray.display());
    }
    assert!(
        check.stderr.contains("not a Coffer object name"),
        "{}",
        check.stderr
    );
}

#[test]
fn a_bit_flipped_snapshot_is_named_and_skipped_and_can_be_forgotten_by_id() {
    let env = Env::new();
    env.init();
    let damaged = backup_stream(&env, "one.bin", &pseudo_random(3, 100_000));
    let good = backup_stream(&env, "two.bin", &pseudo_random(4, 100_000));
    flip_bit(&Path::new(&env.repo).join("snapshots").join(&damaged));

    // Listing: the good one listed, the damaged one named on stderr.
    let out = env.run(&["snapshots", "--json"]).ok();
    let listed = json(out);
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![good.as_str()]);
    let out = env.run(&["snapshots"]).ok();
    assert!(out.stderr.contains(&damaged), "{}", out.stderr);

    // The other snapshot restores by its full id; the damaged one fails naming itself.
    let dumped = env.run(&["dump", &good, "two.bin"]).ok().raw_stdout;
    assert_eq!(dumped, pseudo_random(4, 100_000));
    let out = env.run(&["dump", &damaged, "one.bin"]).expect_code(1);
    assert!(
        out.stderr.contains(&damaged) && out.stderr.contains("corrupt"),
        "{}",
        out.stderr
    );
    let out = env
        .run(&[
            "restore",
            &damaged,
            "--target",
            env.path("t").to_str().unwrap(),
        ])
        .expect_code(1);
    assert!(out.stderr.contains(&damaged), "{}", out.stderr);

    // A backup of paths (which looks for a parent) works and names it.
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("three.bin"), b"three").unwrap();
    let out = env.run(&["backup", src.to_str().unwrap()]).ok();
    assert!(out.stderr.contains(&damaged), "{}", out.stderr);

    // Retention cannot judge it: kept and named.
    let out = env.run(&["forget", "--keep-last", "1"]).ok();
    assert!(out.stderr.contains(&damaged), "{}", out.stderr);
    assert!(Path::new(&env.repo)
        .join("snapshots")
        .join(&damaged)
        .exists());

    // Prune cannot know what it references: refuses, naming it and the way out.
    let out = env.run(&["prune", "--grace", "0s"]).expect_code(1);
    assert!(out.stderr.contains(&damaged), "{}", out.stderr);
    assert!(out.stderr.contains("coffer forget"), "{}", out.stderr);
    let out = env.run(&["check"]).expect_code(1);
    assert!(
        out.stderr.contains(&format!("snapshots/{damaged}")),
        "{}",
        out.stderr
    );

    // `forget ID` removes it without reading it; then prune and check are clean.
    let out = env.run(&["forget", &damaged[..12]]).ok();
    assert!(out.stdout.contains(&damaged), "{}", out.stdout);
    assert!(!Path::new(&env.repo)
        .join("snapshots")
        .join(&damaged)
        .exists());
    env.run(&["prune", "--grace", "0s"]).ok();
    env.run(&["check", "--read-data"]).ok();
}

#[test]
fn a_damaged_deletion_plan_blocks_nothing_and_prune_deletes_nothing_on_its_strength() {
    let env = Env::new();
    env.init();
    let old = backup_stream(&env, "old.bin", &pseudo_random(5, 400_000));
    let kept = backup_stream(&env, "kept.bin", &pseudo_random(6, 400_000));
    assert_ne!(old, kept);
    env.run(&["forget", "--keep-last", "1", "--group-by", ""])
        .ok();
    // A plan that waits for its grace period.
    env.run(&["prune", "--grace", "1h"]).ok();
    let repo = PathBuf::from(&env.repo);
    let plans = files_in(&repo.join("plans"));
    assert_eq!(plans.len(), 1, "{plans:?}");
    let plan = &plans[0];
    let plan_name = plan.file_name().unwrap().to_str().unwrap().to_string();
    flip_bit(plan);

    // Backup, restore and unlock work, naming the plan.
    let out = env
        .run_stdin(&["backup", "--stdin-name", "new.bin"], b"new data")
        .ok();
    assert!(out.stderr.contains(&plan_name), "{}", out.stderr);
    assert_eq!(
        env.run(&["dump", &kept, "kept.bin"]).ok().raw_stdout,
        pseudo_random(6, 400_000)
    );
    let out = env
        .run(&[
            "restore",
            &kept,
            "--target",
            env.path("t").to_str().unwrap(),
        ])
        .ok();
    assert!(out.stderr.contains(&plan_name), "{}", out.stderr);
    env.run(&["unlock"]).ok();

    // Prune treats it as absent: the packs it condemned are in no index and are condemned
    // again (deleted only a grace period from now), never deleted on the damaged plan's word.
    let packs_before = coffer_e2e::pack_files(&repo);
    let out = env.run(&["prune", "--grace", "1h"]).ok();
    assert!(out.stderr.contains(&plan_name), "{}", out.stderr);
    for pack in &packs_before {
        assert!(pack.exists(), "prune deleted {}", pack.display());
    }
    assert!(plan.exists(), "the damaged plan is never deleted by prune");
    let out = env.run(&["check", "--read-data"]).expect_code(1);
    assert!(
        out.stderr.contains(&format!("plans/{plan_name}")),
        "{}",
        out.stderr
    );

    // Removed by hand (as check advises), the repository is clean, and `kept` still restores.
    fs::remove_file(plan).unwrap();
    env.run(&["check", "--read-data"]).ok();
    env.run(&["prune", "--grace", "0s"]).ok();
    assert_eq!(
        env.run(&["dump", &kept, "kept.bin"]).ok().raw_stdout,
        pseudo_random(6, 400_000)
    );
    env.run(&["check", "--read-data"]).ok();
}

/// Address space a coffer run gets in the tests below (KiB, for `ulimit -v`): far below the
/// 5 GiB objects and the 2 GiB Argon2id cost they plant, so reading one whole, or running
/// that KDF, fails loudly instead of passing unnoticed.
const ADDRESS_SPACE_KIB: u64 = 1_000_000;

/// Runs coffer under `ulimit -v ADDRESS_SPACE_KIB`.
fn run_limited(env: &Env, args: &[&str]) -> coffer_e2e::Run {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg(format!("ulimit -v {ADDRESS_SPACE_KIB}; exec \"$0\" \"$@\""))
        .arg(coffer_e2e::coffer_bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.dir.path())
        .env("COFFER_REPO", &env.repo)
        .env("COFFER_PASSWORD", &env.password)
        .stdin(std::process::Stdio::null());
    let out = cmd.output().expect("spawn bash");
    coffer_e2e::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        raw_stdout: out.stdout,
    }
}

/// A sparse file of 5 GiB at `path` (no blocks used).
fn plant_huge(path: &Path) {
    let file = fs::File::create(path).unwrap();
    file.set_len(5 << 30).unwrap();
}

#[test]
fn objects_above_their_maximum_are_refused_before_they_are_read() {
    let env = Env::new();
    env.init();
    let good = backup_stream(&env, "one.bin", &pseudo_random(7, 50_000));
    let repo = PathBuf::from(&env.repo);
    // The limited run itself works.
    run_limited(&env, &["snapshots"]).ok();

    // A snapshot: skipped with a warning by the listing, refused by name, damage for check.
    let huge = "f".repeat(64);
    plant_huge(&repo.join("snapshots").join(&huge));
    let out = run_limited(&env, &["snapshots", "--json"]).ok();
    assert!(out.stderr.contains(&huge), "{}", out.stderr);
    assert!(out.stdout.contains(&good), "{}", out.stdout);
    let out = run_limited(&env, &["dump", &huge, "one.bin"]).expect_code(1);
    assert!(
        out.stderr.contains(&huge) && out.stderr.contains("maximum"),
        "{}",
        out.stderr
    );
    let out = run_limited(&env, &["check"]).expect_code(1);
    assert!(
        out.stderr.contains(&format!("snapshots/{huge}")),
        "{}",
        out.stderr
    );
    fs::remove_file(repo.join("snapshots").join(&huge)).unwrap();

    // An index file: every command that loads the index stops, naming it.
    let huge_index = repo.join("index").join("e".repeat(64));
    plant_huge(&huge_index);
    let out = run_limited(&env, &["dump", &good, "one.bin"]).expect_code(1);
    assert!(
        out.stderr.contains(&"e".repeat(64)) && out.stderr.contains("maximum"),
        "{}",
        out.stderr
    );
    let out = run_limited(&env, &["check"]).expect_code(1);
    assert!(out.stderr.contains(&"e".repeat(64)), "{}", out.stderr);
    fs::remove_file(&huge_index).unwrap();

    // The config.
    let config = repo.join("config");
    let saved = fs::read(&config).unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
    fs::remove_file(&config).unwrap();
    plant_huge(&config);
    let out = run_limited(&env, &["snapshots"]).expect_code(1);
    assert!(
        out.stderr.contains("config") && out.stderr.contains("maximum"),
        "{}",
        out.stderr
    );
    fs::remove_file(&config).unwrap();
    fs::write(&config, saved).unwrap();
    assert_eq!(
        run_limited(&env, &["dump", &good, "one.bin"])
            .ok()
            .raw_stdout,
        pseudo_random(7, 50_000)
    );

    // A pack replaced by a huge file: check --read-data, which reads packs whole, names it.
    let pack = coffer_e2e::pack_files(&repo).pop().unwrap();
    fs::set_permissions(&pack, fs::Permissions::from_mode(0o644)).unwrap();
    fs::remove_file(&pack).unwrap();
    plant_huge(&pack);
    let out = run_limited(&env, &["check", "--read-data"]).expect_code(1);
    let name = pack.file_name().unwrap().to_str().unwrap();
    assert!(
        out.stderr.contains(name) && out.stderr.contains("maximum"),
        "{}",
        out.stderr
    );
}

/// Writes a key file with this Argon2id memory cost (and a sealed master that opens with no
/// password) whose name sorts before every present key file; returns its name.
fn plant_costly_key_file(env: &Env, memory_kib: u32) -> String {
    use coffer_repo::format::keyfile::{KdfRecord, KeyFile};
    let storage = coffer_repo::Storage::open(&env.repo, coffer_repo::OpenMode::Existing).unwrap();
    let first = files_in(&Path::new(&env.repo).join("keys"))[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    for attempt in 0.. {
        let file = KeyFile {
            version: 1,
            created: "2026-12-02T00:00:00Z".into(),
            hostname: "attacker".into(),
            username: format!("u{attempt}"),
            kdf: KdfRecord {
                algorithm: "argon2id".into(),
                version: 19,
                memory_kib,
                iterations: 1,
                parallelism: 1,
            },
            salt: "00".repeat(32),
            master: "00".repeat(136),
        };
        // Saved only if it sorts first (its name is the hash of its bytes).
        let bytes = serde_json::to_vec_pretty(&file).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let probe =
            coffer_repo::Storage::open(dir.path().to_str().unwrap(), coffer_repo::OpenMode::Create)
                .unwrap();
        let id = file.save(&probe).unwrap().to_hex();
        if id < first {
            let saved = file.save(&storage).unwrap().to_hex();
            assert_eq!(saved, id);
            assert_eq!(serde_json::to_vec_pretty(&file).unwrap(), bytes);
            return id;
        }
    }
    unreachable!()
}

#[test]
fn a_costly_key_file_sorted_first_is_tried_last_and_one_above_the_maximum_never() {
    let env = Env::new();
    env.init();
    let good = backup_stream(&env, "one.bin", &pseudo_random(8, 10_000));
    // 2 GiB: allowed, but above the bounded cost, so tried only after the others failed. Were
    // it tried first, Argon2id would need 2 GiB inside a 1 GB address space.
    let costly = plant_costly_key_file(&env, 2 * 1024 * 1024);
    let out = run_limited(&env, &["snapshots", "--json"]).ok();
    assert!(out.stdout.contains(&good), "{}", out.stdout);
    run_limited(&env, &["key", "list"]).ok();
    fs::remove_file(Path::new(&env.repo).join("keys").join(&costly)).unwrap();

    // 4 GiB: above the hard maximum, never tried: a wrong password is still exit 12, at once.
    plant_costly_key_file(&env, 4 * 1024 * 1024);
    let mut wrong = Env::new();
    wrong.repo = env.repo.clone();
    wrong.password = "not the password".into();
    run_limited(&wrong, &["snapshots"]).expect_code(12);
    run_limited(&env, &["snapshots"]).ok();
}

#[test]
fn forty_decoy_key_files_sorting_first_do_not_lock_the_owner_out() {
    use coffer_repo::format::keyfile::{KdfRecord, KeyFile};
    use coffer_repo::Storage;
    // A repository whose key file's name is in the upper three quarters of the order, so that
    // decoys named before it are quick to make.
    let (env, owner) = loop {
        let env = Env::new();
        env.init();
        let keys = files_in(&Path::new(&env.repo).join("keys"));
        let name = keys[0].file_name().unwrap().to_str().unwrap().to_string();
        if name.as_str() >= "4" {
            break (env, name);
        }
    };
    let good = backup_stream(&env, "one.bin", &pseudo_random(9, 10_000));
    // Well-formed key files of the same cost as the owner's (64 KiB, 1 pass) and cheaper,
    // whose sealed master opens under no password: each costs one Argon2id run, then fails.
    let storage = Storage::open(&env.repo, coffer_repo::OpenMode::Existing).unwrap();
    let mut planted = 0;
    for attempt in 0u32.. {
        if planted == 40 {
            break;
        }
        let decoy = KeyFile {
            version: 1,
            created: "2026-12-06T00:00:00Z".into(),
            hostname: "attacker".into(),
            username: format!("u{attempt}"),
            kdf: KdfRecord {
                algorithm: "argon2id".into(),
                version: 19,
                memory_kib: if planted % 2 == 0 { 64 } else { 8 },
                iterations: 1,
                parallelism: 1,
            },
            salt: format!("{attempt:064x}"),
            master: "00".repeat(136),
        };
        if decoy.to_stored().unwrap().0.to_hex() < owner {
            decoy.save(&storage).unwrap();
            planted += 1;
        }
    }
    fs::write(
        Path::new(&env.repo).join("keys").join("0".repeat(64)),
        b"{}",
    )
    .unwrap();
    let keys = files_in(&Path::new(&env.repo).join("keys"));
    assert_eq!(keys.len(), 42);
    assert_eq!(keys[41].file_name().unwrap().to_str().unwrap(), owner);

    let out = env.run(&["snapshots", "--json"]).ok();
    assert!(out.stdout.contains(&good), "{}", out.stdout);
    let mut wrong = Env::new();
    wrong.repo = env.repo.clone();
    wrong.password = "not the password".into();
    let out = wrong.run(&["snapshots"]).expect_code(12);
    assert!(out.stderr.contains("wrong password"), "{}", out.stderr);
}

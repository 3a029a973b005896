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

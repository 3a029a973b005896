//! Honest partial restores: a restore that meets damaged data stops and says exactly which
//! files it restored (each complete) and which it did not; `--skip-damaged` restores every
//! file whose data is intact and lists the damaged ones, exit 1. Real repositories, damaged
//! the way storage damages them (a flipped bit, a lost pack).

use coffer_e2e::{pack_files, pseudo_random, tree_contents, Env};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Two directories of 40 files, 40 KiB each, every one different (a bit flipped in the data
/// area of a pack lands in exactly one file's blob).
fn make_tree(root: &Path, dirs: &[&str]) {
    for (d, dir) in dirs.iter().enumerate() {
        fs::create_dir_all(root.join(dir)).unwrap();
        for i in 0..40u64 {
            let data = pseudo_random(d as u64 * 1000 + i, 40 << 10);
            fs::write(root.join(dir).join(format!("file-{i:02}")), data).unwrap();
        }
    }
}

/// The files of the restored snapshot: relative to the source root.
fn restored(target: &Path, source: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    tree_contents(&target.join(source.strip_prefix("/").unwrap()))
}

/// Every file present is byte for byte the source's; returns the relative paths missing.
fn missing_files(
    restored: &BTreeMap<PathBuf, Vec<u8>>,
    source: &BTreeMap<PathBuf, Vec<u8>>,
) -> Vec<PathBuf> {
    for (path, content) in restored {
        assert_eq!(
            Some(content),
            source.get(path),
            "{} was restored but differs from the source (partial?)",
            path.display()
        );
    }
    source
        .keys()
        .filter(|p| !restored.contains_key(*p))
        .cloned()
        .collect()
}

/// Flips one bit in the middle of the data pack (the biggest; trees have their own).
fn flip_a_bit(repo: &Path) {
    coffer_e2e::flip_byte_in_biggest_pack(repo);
}

#[test]
fn a_damaged_blob_stops_the_restore_and_says_what_was_and_was_not_restored() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src, &["a", "b"]);
    env.run(&["backup", src.to_str().unwrap()]).ok();
    flip_a_bit(Path::new(&env.repo));
    let source = tree_contents(&src);

    let target = env.path("out");
    let run = env
        .run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect_code(1);
    assert!(run.stderr.contains("restore stopped at "), "{}", run.stderr);
    assert!(run.stderr.contains("--skip-damaged"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("nothing was changed"),
        "{}",
        run.stderr
    );
    let got = restored(&target, &src);
    // What it says it restored is there, whole; nothing else is.
    let said = format!(
        "{} files were restored completely (each whole and verified); {} were not",
        got.len(),
        source.len() - got.len()
    );
    assert!(
        run.stderr.contains(&said),
        "wanted {said:?} in\n{}",
        run.stderr
    );
    let missing = missing_files(&got, &source);
    assert!(!missing.is_empty());
    for m in missing.iter().take(20) {
        assert!(
            run.stderr.contains(&m.display().to_string()),
            "{} not listed as not restored:\n{}",
            m.display(),
            run.stderr
        );
    }
    // No temporary file is left.
    let leftovers = walk_names(&target)
        .into_iter()
        .filter(|n| n.contains(".coffer-tmp-"))
        .count();
    assert_eq!(leftovers, 0);
}

#[test]
fn skip_damaged_restores_every_intact_file_and_lists_the_damaged_one() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src, &["a", "b"]);
    env.run(&["backup", src.to_str().unwrap()]).ok();
    flip_a_bit(Path::new(&env.repo));
    let source = tree_contents(&src);

    let target = env.path("out");
    let run = env
        .run(&[
            "restore",
            "latest",
            "--skip-damaged",
            "--target",
            target.to_str().unwrap(),
        ])
        .expect_code(1);
    let missing = missing_files(&restored(&target, &src), &source);
    assert_eq!(missing.len(), 1, "one blob damaged, one file left out");
    let damaged_lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("damaged: "))
        .collect();
    assert_eq!(damaged_lines.len(), 1, "{}", run.stderr);
    assert!(
        damaged_lines[0].contains(&missing[0].display().to_string()),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "1 file(s) were not restored because their data in the repository is damaged"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains(&format!("{} files", source.len() - 1)),
        "{}",
        run.stdout
    );
}

#[test]
fn skip_damaged_after_a_lost_pack_restores_the_other_packs_files() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src, &["a"]);
    env.run(&["backup", src.to_str().unwrap()]).ok();
    let first_packs = pack_files(Path::new(&env.repo));
    make_tree(&src, &["a", "b"]);
    env.run(&["backup", src.to_str().unwrap()]).ok();
    // The second backup stored b/ in a data pack of its own (and its trees in another); lose
    // the data pack.
    let lost = pack_files(Path::new(&env.repo))
        .into_iter()
        .filter(|p| !first_packs.contains(p))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    fs::remove_file(&lost).unwrap();
    let source = tree_contents(&src);

    // Without --skip-damaged: stops, names the lost pack.
    let target = env.path("stopped");
    let run = env
        .run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect_code(1);
    assert!(
        run.stderr.contains("is missing from the repository"),
        "{}",
        run.stderr
    );

    let target = env.path("out");
    let run = env
        .run(&[
            "restore",
            "latest",
            "--skip-damaged",
            "--target",
            target.to_str().unwrap(),
        ])
        .expect_code(1);
    let missing = missing_files(&restored(&target, &src), &source);
    let expected: Vec<PathBuf> = (0..40)
        .map(|i| PathBuf::from(format!("b/file-{i:02}")))
        .collect();
    assert_eq!(missing, expected);
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.starts_with("damaged: "))
            .count(),
        40,
        "{}",
        run.stderr
    );
}

fn walk_names(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

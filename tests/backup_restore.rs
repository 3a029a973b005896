//! Repository core, end to end through the real binary on a local repository: a generated tree
//! goes in and comes back equal in bytes and metadata; deduplication; and every bad-input path
//! gives its documented exit code without losing anything.

use coffer_e2e::{flip_byte_in_biggest_pack, pseudo_random, Env};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Type, permission bits, mtime (ns), uid/gid, size, content or link target of every entry.
fn describe_tree(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let meta = format!(
                "mode={:o} mtime={}.{} uid={} gid={}",
                m.mode() & 0o7777,
                m.mtime(),
                m.mtime_nsec(),
                m.uid(),
                m.gid()
            );
            if m.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("link {} -> {:?}", meta, fs::read_link(&p).unwrap()),
                );
            } else if m.is_dir() {
                out.insert(rel, format!("dir {meta}"));
                walk(root, &p, out);
            } else {
                let hash = digest(&fs::read(&p).unwrap());
                out.insert(rel, format!("file {meta} size={} {hash}", m.len()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn digest(data: &[u8]) -> String {
    // A stable digest for comparing trees (not security relevant): FNV-1a 64 over the bytes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The tree the issue asks for: unicode names, an empty file, a 100 MB file, symlinks (relative,
/// absolute, dangling), empty directories, a 0600 `.env`, a non-UTF-8 name.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("uploads/2026/11")).unwrap();
    fs::create_dir_all(root.join("empty/nested-empty")).unwrap();
    fs::write(
        root.join("uploads/2026/11/Ünïcödé файл 文件.txt"),
        "héllo wörld\n",
    )
    .unwrap();
    fs::write(root.join("uploads/zero-bytes"), b"").unwrap();
    fs::write(
        root.join("uploads/big.bin"),
        pseudo_random(1, 100 * 1000 * 1000),
    )
    .unwrap();
    fs::write(root.join("uploads/small.json"), br#"{"a": 1}"#).unwrap();
    std::os::unix::fs::symlink("2026/11", root.join("uploads/latest")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dangling")).unwrap();
    fs::write(
        root.join(".env"),
        "DATABASE_URL=postgres://app:s3cret@db/app\nSECRET_KEY=abc\n",
    )
    .unwrap();
    fs::set_permissions(root.join(".env"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(
        root.join("uploads/small.json"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let odd = <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"caf\xe9.txt");
    fs::write(root.join(odd), b"latin-1 name").unwrap();
    // A fixed, old mtime on one file and one directory, to see that it is restored.
    set_mtime(&root.join("uploads/small.json"), 1_600_000_000);
    set_mtime(&root.join("empty"), 1_600_000_000);
}

fn set_mtime(path: &Path, secs: i64) {
    let status = std::process::Command::new("touch")
        .args(["-h", "-d", &format!("@{secs}"), path.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn backup_json(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["backup", "--json"];
    all.extend_from_slice(args);
    let out = env.run(&all).ok();
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn backup_and_restore_round_trip_with_metadata_and_dedup() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src);
    let before = describe_tree(&src);

    let first = backup_json(
        &env,
        &[
            src.to_str().unwrap(),
            "--tag",
            "nightly",
            "--label",
            "app_version=2.3.1",
        ],
    );
    let summary = &first["snapshot"]["summary"];
    assert_eq!(summary["errors"], 0);
    let repo_after_first = env.repo_size();

    // Restore and compare bytes and metadata.
    let target = env.path("restored");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    let restored_root = target.join(src.strip_prefix("/").unwrap());
    assert_eq!(describe_tree(&restored_root), before);

    // A second backup of unchanged data adds under 0.1% of its size, and reads nothing.
    let second = backup_json(&env, &[src.to_str().unwrap()]);
    let added = env.repo_size() - repo_after_first;
    let total = second["snapshot"]["summary"]["total_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        added * 1000 < total,
        "second backup added {added} bytes for {total} bytes of data"
    );
    assert_eq!(
        second["snapshot"]["summary"]["bytes_read"], 0,
        "unchanged files are not re-read"
    );
    assert_eq!(second["snapshot"]["parent"], first["id"]);

    // Even without the parent shortcut, re-reading everything stores nothing new.
    let forced = backup_json(&env, &[src.to_str().unwrap(), "--force"]);
    assert_eq!(forced["snapshot"]["summary"]["data_blobs_new"], 0);

    // Restore refuses to overwrite, changing nothing, and --overwrite replaces.
    fs::write(restored_root.join("uploads/small.json"), b"changed").unwrap();
    let refused = env
        .run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect_code(1);
    assert!(
        refused.stderr.contains("already exists"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        fs::read(restored_root.join("uploads/small.json")).unwrap(),
        b"changed"
    );
    env.run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--overwrite",
    ])
    .ok();
    assert_eq!(describe_tree(&restored_root), before);

    // --include restores one subtree only.
    let partial = env.path("partial");
    let include = format!("{}/uploads/2026", src.display());
    env.run(&[
        "restore",
        "latest",
        "--target",
        partial.to_str().unwrap(),
        "--include",
        &include,
    ])
    .ok();
    let partial_root = partial.join(src.strip_prefix("/").unwrap());
    assert!(partial_root
        .join("uploads/2026/11/Ünïcödé файл 文件.txt")
        .exists());
    assert!(!partial_root.join("uploads/big.bin").exists());
    assert!(!partial_root.join(".env").exists());

    // dump writes one file's bytes; ls lists the tree; snapshots filter by label.
    let dumped = env
        .run(&["dump", "latest", &format!("{}/.env", src.display())])
        .ok();
    assert_eq!(dumped.raw_stdout, fs::read(src.join(".env")).unwrap());
    let ls = env.run(&["ls", "latest"]).ok();
    assert!(
        ls.stdout.contains("uploads/latest -> 2026/11"),
        "{}",
        ls.stdout
    );
    let labelled = env
        .run(&["snapshots", "--json", "--label", "app_version=2.3.1"])
        .ok();
    let labelled: Vec<serde_json::Value> = serde_json::from_str(&labelled.stdout).unwrap();
    assert_eq!(labelled.len(), 1);
    assert_eq!(labelled[0]["id"], first["id"]);
}

#[test]
fn one_byte_insertion_in_64_mib_adds_at_most_three_chunks() {
    let env = Env::new();
    env.init();
    let src = env.path("data");
    fs::create_dir_all(&src).unwrap();
    let mut data = pseudo_random(7, 64 << 20);
    fs::write(src.join("big.dump"), &data).unwrap();
    backup_json(&env, &[src.to_str().unwrap()]);
    data.insert(data.len() / 2, b'!');
    fs::write(src.join("big.dump"), &data).unwrap();
    let second = backup_json(&env, &[src.to_str().unwrap()]);
    let new_chunks = second["snapshot"]["summary"]["data_blobs_new"]
        .as_u64()
        .unwrap();
    assert!(
        (1..=3).contains(&new_chunks),
        "{new_chunks} new chunks after a 1-byte insertion"
    );
}

#[test]
fn stdin_and_failing_commands() {
    let env = Env::new();
    env.init();
    let dump = pseudo_random(3, 3_000_000);
    env.run_stdin(&["backup", "--stdin-name", "db/app.dump"], &dump)
        .ok();
    let out = env.run(&["dump", "latest", "db/app.dump"]).ok();
    assert_eq!(out.raw_stdout, dump);

    // A command that writes some output and then fails: nothing is saved, exit 1, stderr shown.
    let failing = env.run(&[
        "backup",
        "--stdin-from-command",
        "db/app.dump",
        "--",
        "sh",
        "-c",
        "head -c 100000 /dev/zero; echo 'pg_dump: error: connection refused' >&2; exit 1",
    ]);
    let failing = failing.expect_code(1);
    assert!(
        failing.stderr.contains("connection refused"),
        "{}",
        failing.stderr
    );
    assert!(
        failing.stderr.contains("no snapshot was saved"),
        "{}",
        failing.stderr
    );
    assert_eq!(env.snapshots().len(), 1);

    // A command that does not exist, and empty stdin: refused, nothing saved.
    env.run(&[
        "backup",
        "--stdin-from-command",
        "x",
        "--",
        "/nonexistent/pg_dump",
    ])
    .expect_code(1);
    let empty = env
        .run_stdin(&["backup", "--stdin-name", "db/app.dump"], b"")
        .expect_code(1);
    assert!(empty.stderr.contains("0 bytes"), "{}", empty.stderr);
    assert_eq!(env.snapshots().len(), 1);

    // A succeeding command is stored.
    env.run(&[
        "backup",
        "--stdin-from-command",
        "db/other.sql",
        "--",
        "printf",
        "hello",
    ])
    .ok();
    assert_eq!(
        env.run(&["dump", "latest", "db/other.sql"]).ok().stdout,
        "hello"
    );
}

#[test]
fn wrong_password_missing_repo_and_double_init() {
    let env = Env::new();
    env.run(&["snapshots"]).expect_code(10);
    env.init();
    let again = env
        .run(&[
            "init",
            "--insecure-kdf",
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
        ])
        .expect_code(1);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    env.run(&["backup", src.to_str().unwrap()]).ok();
    let listing_before = coffer_e2e::dir_size(Path::new(&env.repo));

    let mut wrong = env.cmd(&["backup", src.to_str().unwrap()]);
    wrong.env("COFFER_PASSWORD", "not the password");
    let out = wrong.output().unwrap();
    assert_eq!(out.status.code(), Some(12));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong password"));
    assert_eq!(
        coffer_e2e::dir_size(Path::new(&env.repo)),
        listing_before,
        "nothing modified"
    );

    // Password from a file and from a command work too; the secret is never echoed.
    let pw_file = env.path("pw");
    fs::write(&pw_file, format!("{}\n", env.password)).unwrap();
    let mut by_file = env.cmd(&["snapshots"]);
    by_file
        .env_remove("COFFER_PASSWORD")
        .env("COFFER_PASSWORD_FILE", &pw_file);
    assert_eq!(by_file.output().unwrap().status.code(), Some(0));
    let mut by_cmd = env.cmd(&["snapshots"]);
    by_cmd.env_remove("COFFER_PASSWORD").env(
        "COFFER_PASSWORD_COMMAND",
        format!("cat {}", pw_file.display()),
    );
    let out = by_cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&env.password));

    // A second password opens the same repository.
    let new_pw = env.path("newpw");
    fs::write(&new_pw, "second password").unwrap();
    let mut add = env.cmd(&[
        "key",
        "add",
        "--insecure-kdf",
        "--argon2-memory-kib",
        "64",
        "--argon2-iterations",
        "1",
    ]);
    add.env("COFFER_NEW_PASSWORD_FILE", &new_pw);
    assert_eq!(add.output().unwrap().status.code(), Some(0));
    let mut second = env.cmd(&["snapshots"]);
    second.env("COFFER_PASSWORD", "second password");
    assert_eq!(second.output().unwrap().status.code(), Some(0));
}

#[test]
fn tampered_pack_is_named_and_restore_fails() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("payload.bin"), pseudo_random(9, 3_000_000)).unwrap();
    env.run(&["backup", src.to_str().unwrap()]).ok();

    // Flip one byte in the middle of the largest pack (the data pack).
    let pack = flip_byte_in_biggest_pack(Path::new(&env.repo));
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();

    let out = env
        .run(&[
            "restore",
            "latest",
            "--target",
            env.path("out").to_str().unwrap(),
        ])
        .expect_code(1);
    assert!(
        out.stderr.contains(&pack_name),
        "error does not name the pack:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("blob"), "{}", out.stderr);
    // The file being written when the damage was found is removed, not left half-written
    // under its real name.
    let restored = env
        .path("out")
        .join(src.strip_prefix("/").unwrap())
        .join("payload.bin");
    assert!(
        !restored.exists(),
        "a partial file was left at {}",
        restored.display()
    );
    // An existing file replaced with --overwrite keeps its old content when the new one
    // cannot be read whole.
    fs::create_dir_all(restored.parent().unwrap()).unwrap();
    fs::write(&restored, b"the old content").unwrap();
    env.run(&[
        "restore",
        "latest",
        "--overwrite",
        "--target",
        env.path("out").to_str().unwrap(),
    ])
    .expect_code(1);
    assert_eq!(fs::read(&restored).unwrap(), b"the old content");
    let leftovers: Vec<_> = fs::read_dir(restored.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("payload.bin")]);
    let dump = env
        .run(&["dump", "latest", &format!("{}/payload.bin", src.display())])
        .expect_code(1);
    assert!(dump.stderr.contains("corrupt"), "{}", dump.stderr);
}

#[test]
fn a_directory_of_small_files_restores_from_one_read_and_damage_in_it_is_named() {
    // 400 files of 1-12 KB in one directory: restore reads each batch of them with one read of
    // the pack (ops/restore.rs, restore_span), direct when the batch spans 256 KiB or more.
    let env = Env::new();
    env.init();
    let src = env.path("src");
    let dir = src.join("notes");
    fs::create_dir_all(&dir).unwrap();
    for i in 0..400u64 {
        let len = 1_000 + (i as usize * 7_919) % 11_000;
        let mut body = pseudo_random(100 + i, len);
        if i % 2 == 0 {
            // Half compressible, half not, as uploads are.
            body = format!("note {i}: {}\n", "lorem ipsum ".repeat(len / 12)).into_bytes();
        }
        fs::write(dir.join(format!("note-{i:03}.txt")), body).unwrap();
    }
    env.run(&["backup", src.to_str().unwrap()]).ok();
    let out = env.path("out");
    env.run(&["restore", "latest", "--target", out.to_str().unwrap()])
        .ok();
    let restored = out.join(src.strip_prefix("/").unwrap());
    assert_eq!(describe_tree(&restored), describe_tree(&src));

    let pack = flip_byte_in_biggest_pack(Path::new(&env.repo));
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    let out2 = env.path("out2");
    let failed = env
        .run(&["restore", "latest", "--target", out2.to_str().unwrap()])
        .expect_code(1);
    assert!(failed.stderr.contains(&pack_name), "{}", failed.stderr);
    assert!(failed.stderr.contains("blob"), "{}", failed.stderr);
    // Whatever was restored before the damaged blob is whole; the file being written when it
    // was found is not left behind.
    let partial = out2.join(src.strip_prefix("/").unwrap()).join("notes");
    let mut whole = 0;
    for entry in fs::read_dir(&partial).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        assert_eq!(fs::read(&path).unwrap(), fs::read(dir.join(&name)).unwrap());
        whole += 1;
    }
    assert!(whole < 400, "every file restored from a damaged pack");
}

#[test]
fn truncated_pack_and_garbage_objects_give_errors_not_panics() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a"), pseudo_random(4, 200_000)).unwrap();
    env.run(&["backup", src.to_str().unwrap()]).ok();
    let repo = Path::new(&env.repo);
    for sub in fs::read_dir(repo.join("data")).unwrap() {
        for p in fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = p.unwrap().path();
            let bytes = fs::read(&p).unwrap();
            fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
        }
    }
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        env.path("o").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    // A garbage snapshot file: named in a warning and skipped by the listing (issue 13).
    fs::write(repo.join("snapshots").join("ab".repeat(32)), b"garbage").unwrap();
    let out = env.run(&["snapshots"]).ok();
    assert!(out.stderr.contains(&"ab".repeat(32)), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"));
}

#[test]
fn unreadable_source_file_is_reported_and_the_rest_saved() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("readable"), b"ok").unwrap();
    fs::write(src.join("secret"), b"no access").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads everything, so run coffer as an unprivileged user when we are root.
    let as_root = fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let run = |args: &[&str]| {
        let mut cmd = if as_root {
            let mut c = std::process::Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(coffer_e2e::coffer_bin())
                .args(args);
            c.env("COFFER_REPO", &env.repo)
                .env("COFFER_PASSWORD", &env.password)
                .env("HOME", "/tmp");
            c
        } else {
            env.cmd(args)
        };
        cmd.output().unwrap()
    };
    if as_root {
        fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(src.join("readable"), fs::Permissions::from_mode(0o644)).unwrap();
    }
    let init = run(&[
        "init",
        "--insecure-kdf",
        "--argon2-memory-kib",
        "64",
        "--argon2-iterations",
        "1",
    ]);
    assert_eq!(
        init.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let out = run(&["backup", src.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("secret") && stderr.contains("cannot open"),
        "{stderr}"
    );
    let ls = run(&["ls", "latest"]);
    let listing = String::from_utf8_lossy(&ls.stdout);
    assert!(
        listing.contains("/readable") && !listing.contains("/secret"),
        "{listing}"
    );
}

#[test]
fn interrupted_backup_saves_nothing_and_the_next_one_works() {
    let env = Env::new();
    env.init();
    // A source that produces data and then hangs, so the interrupt lands mid-backup.
    let child = env
        .cmd(&[
            "backup",
            "--stdin-from-command",
            "db/app.dump",
            "--",
            "sh",
            "-c",
            "head -c 20000000 /dev/urandom; sleep 60",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed().as_secs() < 30,
        "the interrupt did not stop the hanging source"
    );
    assert!(env.snapshots().is_empty());
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"after the interrupt").unwrap();
    env.run(&["backup", src.to_str().unwrap()]).ok();
    assert_eq!(env.snapshots().len(), 1);
}

/// Issue 18 item 5: `backup --dry-run` lists every file as new, modified or unchanged and says
/// what would be added, exactly what the real backup then adds, and writes nothing.
#[test]
fn a_dry_run_lists_the_files_and_what_would_be_added_and_writes_nothing() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a"), b"first").unwrap();
    fs::write(src.join("sub/b"), pseudo_random(7, 300_000)).unwrap();
    let s = src.to_str().unwrap();
    env.run(&["backup", s]).ok();
    fs::write(src.join("a"), b"second version").unwrap();
    fs::write(src.join("c"), pseudo_random(8, 200_000)).unwrap();
    let before = env.repo_size();
    let listing = env.run(&["backup", "--dry-run", s]).ok().stdout;
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.contains(&format!("/src/{name} ")))
            .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(line("a"), "modified");
    assert_eq!(line("sub/b"), "unchanged");
    assert_eq!(line("c"), "new");
    assert!(listing.contains("nothing was written"), "{listing}");
    assert_eq!(env.repo_size(), before, "a dry run wrote to the repository");
    assert_eq!(env.snapshots().len(), 1);

    let dry = env.run(&["backup", "-n", "--json", s]).ok();
    let dry: serde_json::Value = serde_json::from_str(dry.stdout.trim()).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["files"].as_array().unwrap().len(), 3);
    let real = env.run(&["backup", "--json", s]).ok();
    let real: serde_json::Value =
        serde_json::from_str(real.stdout.lines().last().unwrap()).unwrap();
    for key in [
        "added_stored_bytes",
        "added_raw_bytes",
        "data_blobs_new",
        "files",
    ] {
        assert_eq!(
            dry["summary"][key], real["snapshot"]["summary"][key],
            "{key}: the dry run and the backup disagree"
        );
    }
    assert!(dry["summary"]["added_stored_bytes"].as_u64().unwrap() > 200_000);
}

/// Issue 18 item 7: an interrupted backup's uploaded packs are indexed (a checkpoint) on the way
/// out, a zero-grace prune leaves them alone while they are young (P4b), and the next backup
/// reuses them: it stores the data the first had read again for less than 10% of its bytes.
#[test]
fn an_interrupted_backup_leaves_its_uploads_for_the_next_one() {
    const HALF: usize = 128 << 20;
    let env = Env::new();
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
    let (first, second) = (env.path("first"), env.path("second"));
    fs::write(&first, pseudo_random(1, HALF)).unwrap();
    fs::write(&second, pseudo_random(2, HALF)).unwrap();
    // The first run reads one half, then its source hangs; once its uploads have settled it is
    // interrupted.
    let child = env
        .cmd(&[
            "backup",
            "--stdin-from-command",
            "db/app.dump",
            "--",
            "sh",
            "-c",
            &format!("cat '{}'; sleep 60", first.display()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let data = Path::new(&env.repo).join("data");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut last = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let now = coffer_e2e::dir_size(&data);
        if now > (HALF as u64) * 8 / 10 && now == last {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "uploads did not settle"
        );
        last = now;
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.snapshots().is_empty());
    // A zero-grace prune right after keeps the young checkpointed packs.
    let pruned = env.run(&["prune", "--grace", "0s"]).ok();
    assert!(
        pruned
            .stdout
            .contains("checkpoint names, under an hour old"),
        "{}",
        pruned.stdout
    );
    let before = env.repo_size();

    env.run(&[
        "backup",
        "--stdin-from-command",
        "db/app.dump",
        "--",
        "cat",
        first.to_str().unwrap(),
        second.to_str().unwrap(),
    ])
    .ok();
    let added = env.repo_size() - before;
    let again = added.saturating_sub(HALF as u64);
    eprintln!("second backup: {added} bytes added, {again} of them the first half again");
    assert!(
        again < (HALF as u64) / 10,
        "the second backup added {added} bytes: {again} of the first half again"
    );
    env.run(&["check", "--read-data"]).ok();
    let mut whole = fs::read(&first).unwrap();
    whole.extend(fs::read(&second).unwrap());
    let dumped = env.run(&["dump", "latest", "db/app.dump"]).ok();
    assert!(
        dumped.raw_stdout == whole,
        "the stream did not come back whole"
    );
}

/// A source command that ignores SIGTERM (its whole process group does) does not hold an
/// interrupted backup hostage: after the grace it is killed, the backup exits 130, saves nothing.
#[test]
fn an_interrupt_kills_a_source_command_that_ignores_sigterm() {
    let env = Env::new();
    env.init();
    let child = env
        .cmd(&[
            "backup",
            "--stdin-from-command",
            "db/app.dump",
            "--",
            "sh",
            "-c",
            "trap '' TERM; head -c 20000000 /dev/urandom; sleep 60",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed().as_secs() < 20,
        "the interrupt did not stop the source that ignores SIGTERM ({:?})",
        started.elapsed()
    );
    assert!(env.snapshots().is_empty());
}

#[test]
fn excludes_tags_hosts_and_times() {
    let env = Env::new();
    env.init();
    let src = env.path("app");
    fs::create_dir_all(src.join("cache")).unwrap();
    fs::create_dir_all(src.join("files")).unwrap();
    fs::write(src.join("cache/x.tmp"), b"tmp").unwrap();
    fs::write(src.join("files/a.log"), b"log").unwrap();
    fs::write(src.join("files/a.txt"), b"txt").unwrap();
    let cache_glob = format!("{}/cache", src.display());
    env.run(&[
        "backup",
        src.to_str().unwrap(),
        "--exclude",
        "*.log",
        "--exclude",
        &cache_glob,
        "--host",
        "web1",
        "--time",
        "2026-01-31T02:00:00+01:00",
        "--tag",
        "nightly",
    ])
    .ok();
    let ls = env.run(&["ls", "latest"]).ok().stdout;
    assert!(ls.contains("files/a.txt"));
    assert!(!ls.contains("a.log") && !ls.contains("cache"), "{ls}");
    let snaps = env.snapshots();
    let s = &snaps[0];
    assert_eq!(s["hostname"], "web1");
    assert_eq!(s["tags"][0], "nightly");
    let t: &str = s["time"].as_str().unwrap();
    assert!(
        t.starts_with("2026-01-31T0") || t.starts_with("2026-01-30T"),
        "{t}"
    );
    assert_eq!(
        env.run(&["snapshots", "--json", "--host", "other"])
            .ok()
            .stdout
            .trim(),
        "[]"
    );
    env.run(&["backup", src.to_str().unwrap(), "--time", "yesterday"])
        .expect_code(2);
    env.run(&["backup", src.to_str().unwrap(), "--exclude", "[unclosed"])
        .expect_code(1);
}

#[test]
fn closed_stdout_is_not_a_failure() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..2000 {
        fs::write(src.join(format!("f{i:04}")), b"x").unwrap();
    }
    env.run(&["backup", src.to_str().unwrap()]).ok();
    // `coffer ls latest | head -1`: the reader goes away after one line.
    let mut child = env
        .cmd(&["ls", "latest"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn drill_of_a_plain_path_snapshot_restores_and_verifies_the_tree() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    make_tree(&src);
    // A directory whose name is not UTF-8, with a file in it: restored and verified by its
    // exact bytes.
    let odd_dir = src.join(std::ffi::OsStr::from_bytes(b"d\xe9j\xe0"));
    fs::create_dir_all(&odd_dir).unwrap();
    fs::write(odd_dir.join("inner.txt"), b"inside a Latin-1 directory").unwrap();
    env.run(&["backup", src.to_str().unwrap()]).ok();
    let restored = env.path("restored");
    env.run(&["restore", "latest", "--target", restored.to_str().unwrap()])
        .ok();
    assert_eq!(
        describe_tree(&restored.join(src.strip_prefix("/").unwrap())),
        describe_tree(&src)
    );
    let out = env.run(&["drill", "--json"]).ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{}", out.stdout);
    assert!(
        report["recorded"].is_string(),
        "a passed drill is recorded: {}",
        out.stdout
    );
    // Damage is found: flip a byte in the biggest pack and drill again.
    flip_byte_in_biggest_pack(Path::new(&env.repo));
    let out = env.run(&["drill", "--no-record"]).expect_code(1);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn drill_results_outlive_their_forgotten_snapshot_and_are_no_strays() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"first").unwrap();
    env.run(&["backup", src.to_str().unwrap()]).ok();
    let drilled = env.snapshots()[0]["id"].as_str().unwrap().to_string();
    let report: serde_json::Value =
        serde_json::from_str(&env.run(&["drill", "--json"]).ok().stdout).unwrap();
    assert_eq!(report["snapshot"], drilled.as_str());
    // The drilled snapshot keeps its id; check sees no stray and no damage.
    assert_eq!(env.snapshots()[0]["id"], drilled.as_str());
    let check = env.run(&["check"]).ok();
    assert!(!check.stdout.contains("drills/"), "{}", check.stdout);
    assert!(!check.stderr.contains("drills/"), "{}", check.stderr);

    // Forgotten and pruned: the drill result stays, listed as of a removed snapshot.
    fs::write(src.join("a.txt"), b"second").unwrap();
    env.run(&["backup", src.to_str().unwrap()]).ok();
    env.run(&["forget", &drilled, "--prune", "--grace", "0s"])
        .ok();
    assert_eq!(env.snapshots().len(), 1);
    let list: serde_json::Value =
        serde_json::from_str(&env.run(&["drill", "--list", "--json"]).ok().stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], report["recorded"]);
    assert_eq!(list[0]["snapshot"], drilled.as_str());
    assert_eq!(list[0]["snapshot_present"], false);
    assert_eq!(list[0]["passed"], true);
    let text = env.run(&["drill", "--list"]).ok().stdout;
    assert!(text.contains("(removed)"), "{text}");
    // Status still knows the set's last drill.
    let status = env.run(&["status"]).ok().stdout;
    assert!(status.contains("drill     passed"), "{status}");
    assert!(status.contains("removed since"), "{status}");
    env.run(&["check"]).ok();
}

#[test]
fn overwrite_replaces_a_symlink_where_a_directory_goes_without_following_it() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/file.txt"), b"from the snapshot").unwrap();
    env.run(&["backup", src.to_str().unwrap()]).ok();
    let target = env.path("out");
    let restored_src = target.join(src.strip_prefix("/").unwrap());
    fs::create_dir_all(&restored_src).unwrap();
    let elsewhere = env.path("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, restored_src.join("sub")).unwrap();
    // Without --overwrite the symlink is a conflict and nothing is written.
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect_code(1);
    env.run(&[
        "restore",
        "latest",
        "--overwrite",
        "--target",
        target.to_str().unwrap(),
    ])
    .ok();
    assert!(fs::symlink_metadata(restored_src.join("sub"))
        .unwrap()
        .is_dir());
    assert_eq!(
        fs::read(restored_src.join("sub/file.txt")).unwrap(),
        b"from the snapshot"
    );
    assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn init_records_the_dump_compression_level_and_refuses_a_bad_one() {
    let cheap = [
        "--insecure-kdf",
        "--argon2-memory-kib",
        "64",
        "--argon2-iterations",
        "1",
    ];
    let env = Env::new();
    env.init();
    let config: serde_json::Value =
        serde_json::from_str(&env.run(&["cat", "config"]).ok().stdout).unwrap();
    assert_eq!(config["dump_compression_level"], 1, "{config:#}");
    assert_eq!(config["compression_level"], 3, "{config:#}");

    let env = Env::new();
    let mut args = vec!["init", "--dump-compression-level", "3"];
    args.extend(cheap);
    env.run(&args).ok();
    let config: serde_json::Value =
        serde_json::from_str(&env.run(&["cat", "config"]).ok().stdout).unwrap();
    assert_eq!(config["dump_compression_level"], 3, "{config:#}");

    let env = Env::new();
    let mut args = vec!["init", "--dump-compression-level", "20"];
    args.extend(cheap);
    let out = env.run(&args);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("dump_compression_level"),
        "{}",
        out.stderr
    );
    // Nothing was created.
    env.run(&["snapshots"]).expect_code(10);
}

/// A small tmpfs mounted for one test, unmounted when dropped (also when the test fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs failed");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Issue 13 item 6: a backup onto a full file system fails with the storage error (exit 1,
/// "No space left on device"), never as an interrupt (exit 130), in every run; the repository
/// is left with nothing check calls damage. Needs root (mount); skipped otherwise.
#[test]
fn a_full_disk_is_reported_as_the_error_it_is_not_as_an_interrupt() {
    let uid = std::process::Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let mut env = Env::new();
    let mount = Tmpfs::mount(env.path("small"), "40m");
    env.repo = mount.0.join("repo").to_string_lossy().into_owned();
    env.run(&[
        "init",
        "--insecure-kdf",
        "--argon2-memory-kib",
        "64",
        "--argon2-iterations",
        "1",
        "--pack-size-mib",
        "4",
    ])
    .ok();
    // 64 MB that does not compress, in several files, into a 40 MiB file system.
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    for n in 0..8u64 {
        fs::write(
            src.join(format!("f{n}.bin")),
            pseudo_random(100 + n, 8_000_000),
        )
        .unwrap();
    }
    for run in 0..5 {
        let out = env.run(&["backup", src.to_str().unwrap()]).expect_code(1);
        assert!(
            out.stderr.contains("No space left on device"),
            "run {run}: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("interrupted"),
            "run {run}: {}",
            out.stderr
        );
        assert!(env.snapshots().is_empty());
        // What is left (packs no index names) is not damage.
        let check = env.run(&["check"]).ok();
        eprintln!("run {run}: check says:\n{}{}", check.stdout, check.stderr);
    }
    drop(mount);
}

#[test]
fn a_file_appended_to_throughout_the_backup_is_stored_as_read_with_a_warning_and_exit_3() {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let log = src.join("growing.log");
    let start = pseudo_random(17, 32 << 20);
    fs::write(&log, &start).unwrap();
    fs::write(src.join("steady"), b"not touched").unwrap();
    // A writer that appends a line every millisecond from before the backup opens the file
    // until after it has exited: both reads of the file (tens of milliseconds at least for
    // 32 MiB) see it grow, whatever the scheduling.
    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, appended, log) = (stop.clone(), appended.clone(), log.clone());
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(&log).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                writeln!(f, "line {n:012} appended while the backup runs").unwrap();
                n += 1;
                appended.store(n, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        })
    };
    while appended.load(Ordering::SeqCst) < 3 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let out = env
        .run(&["backup", "--json", src.to_str().unwrap()])
        .expect_code(3);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let warning = format!(
        "{}: changed while being read; stored as read: size ",
        log.display()
    );
    assert!(out.stderr.contains(&warning), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("1 source file(s) kept changing while being read and are stored as read"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("are not in the snapshot"),
        "{}",
        out.stderr
    );
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(json["warnings"].as_array().unwrap().len(), 1);
    assert_eq!(json["snapshot"]["summary"]["errors"], 1);
    assert_eq!(json["snapshot"]["summary"]["files"], 2);

    // Stored as read: the original contents and some of the appended lines, nothing else
    // (the file only grew, so what was read is a prefix of what it is now).
    let target = env.path("out");
    env.run(&["restore", "latest", "--target", target.to_str().unwrap()])
        .ok();
    let root = target.join(src.strip_prefix("/").unwrap());
    let stored = fs::read(root.join("growing.log")).unwrap();
    let now = fs::read(&log).unwrap();
    assert!(stored.len() > start.len() && stored.len() <= now.len());
    assert!(
        stored == now[..stored.len()],
        "the stored file is not a prefix"
    );
    assert_eq!(
        json["snapshot"]["summary"]["bytes_read"].as_u64().unwrap(),
        stored.len() as u64 + b"not touched".len() as u64,
        "the first read is not counted"
    );
    assert_eq!(fs::read(root.join("steady")).unwrap(), b"not touched");
    env.run(&["check"]).ok();
}

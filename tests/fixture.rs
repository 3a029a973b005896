//! The format fixture: a repository written by the coffer binary of 2026-12-02 (format version 1,
//! made by `tests/fixtures/make-format-v1.sh`) must open, check clean and restore byte for byte
//! with every later version. The fixture is never regenerated; a new format version adds a new
//! fixture beside it.

use coffer_e2e::{tree_contents, Env, PgCluster};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const FIXTURE: &str = "fixtures/format-v1";
const PASSWORD: &str = "fixture-password";
const SECOND_PASSWORD: &str = "second-password";
/// The snapshots the fixture holds (the third one made was forgotten and pruned).
const FIRST: &str = "bfc03d95";
const SECOND: &str = "181e3abb";
const STREAM: &str = "72cb67ba";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// A scratch area holding a copy of the fixture repository (opening it may write a lease or
/// a cache; the committed copy stays untouched).
fn fixture_env() -> Env {
    let mut env = Env::new();
    copy_tree(&fixture_dir().join("repo"), Path::new(&env.repo));
    env.password = PASSWORD.into();
    env
}

fn sha256(bytes: &[u8]) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    let mut stdin = child.stdin.take().unwrap();
    let data = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// The recorded listing of the fixture's snapshots.
fn recorded_snapshots() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixture_dir().join("snapshots.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn full_id(prefix: &str) -> String {
    recorded_snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .find(|id| id.starts_with(prefix))
        .unwrap()
}

#[test]
fn fixture_lists_with_both_keys_and_refuses_a_wrong_password() {
    let mut env = fixture_env();
    for password in [PASSWORD, SECOND_PASSWORD] {
        env.password = password.into();
        let out = env.run(&["snapshots", "--json"]).ok().stdout;
        // Ids, trees and times as recorded when the fixture was made (compared as strings, so a
        // later change of the listing's JSON shape does not matter, only what it says).
        for snap in recorded_snapshots() {
            let s = &snap["snapshot"];
            for want in [&snap["id"], &s["tree"], &s["hostname"]] {
                let want = want.as_str().unwrap();
                assert!(out.contains(want), "{want} missing from:\n{out}");
            }
        }
        assert_eq!(out.matches("\"tree\"").count(), 3, "{out}");
    }
    env.password = "not the password".into();
    env.run(&["snapshots"]).expect_code(12);
}

#[test]
fn fixture_checks_clean_with_every_byte_read() {
    let env = fixture_env();
    env.run(&["check", "--read-data"]).ok();
}

#[test]
fn fixture_restores_byte_for_byte_with_metadata() {
    let env = fixture_env();
    let target = env.path("target");
    let target_s = target.to_str().unwrap();
    env.run(&[
        "restore",
        &full_id(SECOND),
        "--target",
        target_s,
        "--only",
        "files",
        "--only",
        "env",
    ])
    .ok();
    let expected = std::fs::read_to_string(fixture_dir().join("EXPECTED-files.tsv")).unwrap();
    let root = running_as_root();
    let mut checked = 0;
    let mut files_below_uploads = 0;
    for line in expected.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        let [path, kind, mode, uid, gid, mtime_ns, size, digest] = f[..] else {
            panic!("bad line {line:?}");
        };
        let at = target.join(path.trim_start_matches('/'));
        let meta = std::fs::symlink_metadata(&at).unwrap_or_else(|e| panic!("{path}: {e}"));
        match kind {
            "file" => {
                assert!(meta.is_file(), "{path}");
                files_below_uploads += usize::from(path.contains("/uploads/"));
                assert_eq!(meta.len().to_string(), size, "{path}");
                assert_eq!(sha256(&std::fs::read(&at).unwrap()), digest, "{path}");
            }
            "dir" => assert!(meta.is_dir(), "{path}"),
            "symlink" => {
                assert_eq!(std::fs::read_link(&at).unwrap().to_str().unwrap(), digest);
            }
            other => panic!("kind {other}"),
        }
        if kind != "symlink" {
            assert_eq!(format!("{:o}", meta.mode() & 0o7777), mode, "{path}");
        }
        assert_eq!(
            (meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128).to_string(),
            mtime_ns,
            "{path}"
        );
        if root {
            assert_eq!(
                (meta.uid().to_string(), meta.gid().to_string()),
                (uid.into(), gid.into()),
                "{path}"
            );
        }
        checked += 1;
    }
    assert_eq!(checked, expected.lines().count() - 1);
    assert!(checked > 40, "{checked}");
    // Nothing more than the snapshot held below the sources.
    let restored = tree_contents(&target.join("tmp/coffer-fixture-v1/app/uploads"));
    assert_eq!(restored.len(), files_below_uploads, "{:?}", restored.keys());
}

/// Whether this test runs as root (owners are restored only then).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

#[test]
fn fixture_first_snapshot_holds_the_earlier_files() {
    let env = fixture_env();
    let target = env.path("first");
    env.run(&[
        "restore",
        &full_id(FIRST),
        "--target",
        target.to_str().unwrap(),
        "--only",
        "files",
    ])
    .ok();
    let dir = target.join("tmp/coffer-fixture-v1/app/uploads/2026/11");
    // note-N.txt is `seq N 997 9000` with "line N " before each number (the script's recipe).
    let note40: String = (40..=9000)
        .step_by(997)
        .map(|n| format!("line 40 {n}\n"))
        .collect();
    assert_eq!(
        std::fs::read_to_string(dir.join("note-40.txt")).unwrap(),
        note40
    );
    assert!(!dir.join("new.txt").exists());
    assert!(!dir.join("temporary.bin").exists());
}

#[test]
fn fixture_dumps_streams_and_database_dumps_byte_for_byte() {
    let env = fixture_env();
    let stream = env
        .run(&["dump", &full_id(STREAM), "/streams/numbers.txt"])
        .ok();
    let want = std::fs::read_to_string(fixture_dir().join("EXPECTED-stream.sha256")).unwrap();
    assert_eq!(sha256(&stream.raw_stdout), want.trim());
    let numbers: String = (1..=50000).map(|n| format!("{n}\n")).collect();
    assert_eq!(stream.raw_stdout, numbers.as_bytes());
    // Each database dump is the one pg_dump wrote: its SHA-256 was recorded in the snapshot.
    for snap in recorded_snapshots() {
        let Some(sources) = snap["snapshot"]["sources"].as_array() else {
            continue;
        };
        let db = sources.iter().find(|s| s["kind"] == "postgres").unwrap();
        let dump = env
            .run(&[
                "dump",
                snap["id"].as_str().unwrap(),
                db["tree_path"].as_str().unwrap(),
            ])
            .ok();
        assert_eq!(
            dump.raw_stdout.len() as u64,
            db["stream"]["bytes"].as_u64().unwrap()
        );
        assert_eq!(
            sha256(&dump.raw_stdout),
            db["stream"]["sha256"].as_str().unwrap()
        );
        assert!(dump.raw_stdout.starts_with(b"PGDMP"));
    }
}

#[test]
fn fixture_database_restores_into_a_real_server() {
    let pg = PgCluster::start();
    let mut env = fixture_env();
    env.extra_env = pg.env();
    env.run(&[
        "restore",
        &full_id(SECOND),
        "--only",
        "db",
        "--pg-target",
        "shop_again",
    ])
    .ok();
    let got = [
        pg.psql("shop_again", "SELECT count(*) FROM customers"),
        pg.psql("shop_again", "SELECT count(*) FROM orders"),
        pg.psql(
            "shop_again",
            "SELECT md5(string_agg(id || ':' || customer || ':' || total || ':' || note, ',' ORDER BY id)) FROM orders",
        ),
    ];
    let want = std::fs::read_to_string(fixture_dir().join("EXPECTED-db-counts.txt")).unwrap();
    let got: Vec<String> = got.iter().map(|s| s.trim().to_string()).collect();
    assert_eq!(got, want.lines().collect::<Vec<_>>());
}

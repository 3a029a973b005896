//! SIGKILL at random moments of backup, copy, restore and drill, through the real binary.
//!
//! Each round runs one operation, kills it outright after a random delay within that
//! operation's measured duration, and then requires: `check` finds no damage in either
//! repository; every snapshot that exists restores exactly the data its backup was given
//! (whether its run was killed after saving or not); a killed restore left no file under a
//! final name that differs from the snapshot's; and the next run of the operation works. At the
//! end both repositories pass `check --read-data` and every snapshot restores exactly.
//!
//! The normal suite runs [`DEFAULT_ROUNDS`] rounds; `COFFER_KILL_ROUNDS=N` runs N
//! (docs/reliability.md). `COFFER_KILL_SEED` changes the seed.

use coffer_e2e::{pseudo_random, tree_contents, Env};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const DEFAULT_ROUNDS: u64 = 24;

struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    BackupFiles,
    BackupStream,
    Copy,
    Restore,
    Drill,
}

const OPS: [Op; 5] = [
    Op::BackupFiles,
    Op::BackupStream,
    Op::Copy,
    Op::Restore,
    Op::Drill,
];

/// What a snapshot must restore: a tree (relative path -> bytes) or a stream's bytes.
#[derive(Clone)]
enum Expected {
    Tree(BTreeMap<PathBuf, Vec<u8>>),
    Stream(Vec<u8>),
}

struct World {
    a: Env,
    b: Env,
    src: PathBuf,
    rng: Lcg,
    serial: u64,
    /// By tag (each backup gets its own): what the snapshot holds.
    expected: BTreeMap<String, Expected>,
    /// The tag of the backup whose source is on disk now (files) and the stream to send.
    pending_stream: Vec<u8>,
    /// The newest restore started: its target directory and snapshot.
    last_restore: Option<(PathBuf, String)>,
}

impl World {
    fn new(seed: u64) -> World {
        let a = Env::new();
        a.init();
        let mut b = Env::new();
        b.password = "the copy's own password".into();
        b.init();
        let src = a.path("src");
        let mut w = World {
            a,
            b,
            src,
            rng: Lcg(seed),
            serial: 0,
            expected: BTreeMap::new(),
            pending_stream: Vec::new(),
            last_restore: None,
        };
        w.change_source();
        w
    }

    /// Rewrites part of the source tree and the next stream: some files change, some appear,
    /// some go, and one bigger file changes in its middle.
    fn change_source(&mut self) {
        self.serial += 1;
        let s = self.serial;
        let dir = self.src.join("uploads");
        fs::create_dir_all(&dir).unwrap();
        for f in 0..240u64 {
            let p = dir.join(format!("f{f:03}"));
            if (f + s) % 7 == 0 {
                let _ = fs::remove_file(&p);
            } else if f % 4 == (s % 4) || !p.exists() {
                let len = 1000 + (self.rng.below(24_000) as usize);
                fs::write(&p, pseudo_random(s * 10_000 + f, len)).unwrap();
            }
        }
        let mut big = pseudo_random(1, 3 << 20);
        big[(1 << 20)..(1 << 20) + 4096].copy_from_slice(&pseudo_random(s, 4096));
        fs::write(self.src.join("big.bin"), big).unwrap();
        fs::write(self.src.join(".env"), format!("SECRET=s{s}\n")).unwrap();
        let mut stream = pseudo_random(2, 2 << 20);
        stream.extend_from_slice(&pseudo_random(100 + s, 200_000));
        stream.extend_from_slice(&pseudo_random(3, 1 << 20));
        self.pending_stream = stream;
    }

    /// Starts `op` (its output discarded) and returns the child and what it will be checked
    /// against afterwards.
    fn start(&mut self, op: Op, round: u64) -> (Child, Option<(String, Expected)>) {
        let tag = format!("r{round}");
        let quiet = |mut c: std::process::Command| {
            c.stdout(Stdio::null()).stderr(Stdio::null());
            c
        };
        match op {
            Op::BackupFiles => {
                let expected = Expected::Tree(tree_contents(&self.src));
                let mut c =
                    quiet(
                        self.a
                            .cmd(&["backup", "-q", "--tag", &tag, self.src.to_str().unwrap()]),
                    );
                (c.spawn().unwrap(), Some((tag, expected)))
            }
            Op::BackupStream => {
                let data = self.pending_stream.clone();
                let mut c = quiet(self.a.cmd(&[
                    "backup",
                    "-q",
                    "--tag",
                    &tag,
                    "--stdin-name",
                    "db/app.dump",
                ]));
                c.stdin(Stdio::piped());
                let mut child = c.spawn().unwrap();
                let mut stdin = child.stdin.take().unwrap();
                std::thread::spawn(move || {
                    use std::io::Write;
                    let _ = stdin.write_all(&data);
                });
                (
                    child,
                    Some((tag, Expected::Stream(self.pending_stream.clone()))),
                )
            }
            Op::Copy => {
                let mut c = quiet(self.b.cmd(&["copy", "-q", "--from-repo", &self.a.repo]));
                c.env("COFFER_FROM_PASSWORD", &self.a.password);
                (c.spawn().unwrap(), None)
            }
            Op::Restore => {
                let target = self.a.path(&format!("restored-{tag}"));
                let newest_files = self.newest_files_snapshot();
                self.last_restore = Some((target.clone(), newest_files.clone()));
                let mut c = quiet(self.a.cmd(&[
                    "restore",
                    &newest_files,
                    "--target",
                    target.to_str().unwrap(),
                ]));
                (c.spawn().unwrap(), None)
            }
            Op::Drill => (
                quiet(self.a.cmd(&["drill", "-q", "--no-record"]))
                    .spawn()
                    .unwrap(),
                None,
            ),
        }
    }

    fn newest_files_snapshot(&self) -> String {
        let snaps = self.a.snapshots();
        snaps
            .iter()
            .rev()
            .find(|s| matches!(self.expected_of(s), Some(Expected::Tree(_))))
            .map(|s| s["id"].as_str().unwrap().to_string())
            .expect("a files snapshot")
    }

    fn expected_of(&self, snapshot: &Value) -> Option<&Expected> {
        let tags = snapshot["tags"].as_array()?;
        tags.iter()
            .filter_map(|t| t.as_str())
            .find_map(|t| self.expected.get(t))
    }

    /// Every snapshot of `env` restores exactly what its backup was given.
    fn verify_all(&self, env: &Env, which: &str) -> usize {
        let snaps = env.snapshots();
        for s in &snaps {
            let id = s["id"].as_str().unwrap();
            let expected = self
                .expected_of(s)
                .unwrap_or_else(|| panic!("{which}: snapshot {id} has no known tag: {s}"));
            verify_snapshot(env, id, expected, &self.src);
        }
        snaps.len()
    }
}

fn verify_snapshot(env: &Env, id: &str, expected: &Expected, src: &Path) {
    match expected {
        Expected::Stream(data) => {
            let out = env.run(&["dump", id, "db/app.dump"]).ok();
            assert!(out.raw_stdout == *data, "snapshot {id}: the stream differs");
        }
        Expected::Tree(tree) => {
            let target = env.path(&format!("verify-{id}"));
            env.run(&["restore", id, "--target", target.to_str().unwrap()])
                .ok();
            let restored = tree_contents(&target.join(src.strip_prefix("/").unwrap()));
            assert!(
                restored == *tree,
                "snapshot {id}: the restored tree differs ({} files against {})",
                restored.len(),
                tree.len()
            );
            fs::remove_dir_all(&target).unwrap();
        }
    }
}

/// After a killed restore: no file under a final name differs from the snapshot's, and what is
/// not final is a restore's temporary file.
fn assert_no_torn_file(restored_root: &Path, tree: &BTreeMap<PathBuf, Vec<u8>>) -> usize {
    if !restored_root.exists() {
        return 0;
    }
    let mut temps = 0;
    for (rel, bytes) in tree_contents(restored_root) {
        let name = rel.file_name().unwrap().to_string_lossy().into_owned();
        if name.contains(".coffer-tmp-") {
            temps += 1;
            continue;
        }
        let want = tree
            .get(&rel)
            .unwrap_or_else(|| panic!("a restored file not in the snapshot: {rel:?}"));
        assert!(bytes == *want, "{rel:?}: a torn file under its final name");
    }
    temps
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn operations_killed_at_random_moments_lose_nothing() {
    let rounds = env_u64("COFFER_KILL_ROUNDS", DEFAULT_ROUNDS);
    let seed = env_u64("COFFER_KILL_SEED", 0x6b11);
    let mut w = World::new(seed);

    // One unkilled run of each operation: its duration bounds the kill delays, and there is a
    // snapshot of each kind to restore and copy.
    let mut span: BTreeMap<Op, u64> = BTreeMap::new();
    for (i, op) in OPS.iter().enumerate() {
        let start = Instant::now();
        let (mut child, expected) = w.start(*op, 1000 + i as u64);
        if let Some((tag, e)) = expected {
            w.expected.insert(tag, e);
        }
        assert!(child.wait().unwrap().success(), "{op:?} failed unkilled");
        span.insert(*op, (start.elapsed().as_millis() as u64).max(20));
    }
    w.change_source();

    let mut killed: BTreeMap<Op, (u64, u64)> = BTreeMap::new(); // (while running, after it ended)
    let mut temps_seen = 0;
    for round in 0..rounds {
        let op = OPS[w.rng.below(OPS.len() as u64) as usize];
        let start = Instant::now();
        let (mut child, expected) = w.start(op, round);
        // Recorded before the kill: a backup killed after saving has a snapshot to check.
        if let Some((tag, e)) = expected {
            w.expected.insert(tag, e);
        }
        std::thread::sleep(Duration::from_millis(w.rng.below(span[&op])));
        let running = child.try_wait().unwrap().is_none();
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let entry = killed.entry(op).or_default();
        if running {
            entry.0 += 1;
        } else {
            entry.1 += 1;
            assert!(status.success(), "round {round}: {op:?} failed on its own");
            span.insert(op, span[&op].max(start.elapsed().as_millis() as u64));
        }

        // After every kill: no damage, and the operation's own invariant.
        w.a.run(&["check"]).ok();
        match op {
            Op::BackupFiles | Op::BackupStream => {
                w.change_source();
                // The newest snapshot, if this run saved one, restores exactly.
                let snaps = w.a.snapshots();
                let newest = snaps.last().unwrap();
                let id = newest["id"].as_str().unwrap();
                verify_snapshot(&w.a, id, w.expected_of(newest).unwrap(), &w.src);
            }
            Op::Copy => {
                w.b.run(&["check"]).ok();
            }
            Op::Restore => {
                let (target, id) = w.last_restore.clone().unwrap();
                let snaps = w.a.snapshots();
                let s = snaps.iter().find(|s| s["id"] == id.as_str()).unwrap();
                let Some(Expected::Tree(tree)) = w.expected_of(s) else {
                    unreachable!()
                };
                let root = target.join(w.src.strip_prefix("/").unwrap());
                temps_seen += assert_no_torn_file(&root, tree);
            }
            Op::Drill => {}
        }
    }

    // Faults over: the next run of each operation works.
    for op in [Op::BackupFiles, Op::BackupStream, Op::Copy, Op::Drill] {
        let (mut child, expected) = w.start(op, 10_000 + op as u64);
        if let Some((tag, e)) = expected {
            w.expected.insert(tag, e);
        }
        assert!(
            child.wait().unwrap().success(),
            "{op:?} failed after the kills"
        );
        w.change_source();
    }
    // A complete restore over what the last killed one left: it removes the temporary files and
    // leaves exactly the snapshot.
    let (target, id) = w.last_restore.clone().unwrap();
    w.a.run(&[
        "restore",
        &id,
        "--target",
        target.to_str().unwrap(),
        "--overwrite",
    ])
    .ok();
    let snaps = w.a.snapshots();
    let s = snaps.iter().find(|s| s["id"] == id.as_str()).unwrap();
    let Some(Expected::Tree(tree)) = w.expected_of(s) else {
        unreachable!()
    };
    let restored = tree_contents(&target.join(w.src.strip_prefix("/").unwrap()));
    assert!(restored == *tree, "the restore after the kills differs");
    w.a.run(&["check", "--read-data"]).ok();
    w.b.run(&["check", "--read-data"]).ok();
    let in_a = w.verify_all(&w.a, "source repository");
    let in_b = w.verify_all(&w.b, "copy");
    let total: u64 = killed.values().map(|k| k.0).sum();
    eprintln!(
        "{rounds} rounds; killed while running / after it ended, by operation: {killed:?}; \
         {total} kills in all; {temps_seen} restore temporary files seen after kills; \
         {in_a} snapshots verified in the source repository, {in_b} in the copy"
    );
    assert!(
        total * 2 >= rounds,
        "only {total} of {rounds} runs were killed while running"
    );
}

//! forget, prune, check and unlock through the real binary: retention decisions, space returned,
//! prune killed at random moments, a backup racing a prune, and damage that check must name.

use coffer_e2e::{index_files_oldest_first, pseudo_random, Env};
use serde_json::Value;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

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

/// Backs up `input` as the stream `name` and returns the snapshot id.
fn backup_stream(env: &Env, name: &str, input: &[u8], extra: &[&str]) -> String {
    let mut args = vec!["backup", "--json", "--stdin-name", name];
    args.extend_from_slice(extra);
    let out = env.run_stdin(&args, input).ok();
    json(out)["id"].as_str().unwrap().to_string()
}

fn dump(env: &Env, snapshot: &str, name: &str) -> Vec<u8> {
    env.run(&["dump", snapshot, name]).ok().raw_stdout
}

fn snapshot_ids(env: &Env) -> Vec<String> {
    env.snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn packs(repo: &Path) -> Vec<std::path::PathBuf> {
    coffer_e2e::pack_files(repo)
}

#[test]
fn forget_explains_itself_and_refuses_without_rules() {
    let env = Env::new();
    init_small(&env);
    // Berlin: 23:30 UTC on 2025-03-29 is already March 30 (and the day clocks spring forward).
    let times = [
        "2025-03-28T12:00:00Z",
        "2025-03-29T08:00:00Z",
        "2025-03-29T23:30:00Z",
        "2025-03-30T10:00:00Z",
    ];
    let mut ids = Vec::new();
    for (i, t) in times.iter().enumerate() {
        ids.push(backup_stream(
            &env,
            "db/app.dump",
            &pseudo_random(i as u64, 1000),
            &["--time", t, "--host", "web1"],
        ));
    }
    // A second host forms its own group.
    let other = backup_stream(
        &env,
        "db/app.dump",
        b"other",
        &["--time", "2025-01-01T00:00:00Z", "--host", "web2"],
    );

    let out = env.run(&["forget", "--dry-run"]).expect_code(2);
    assert!(out.stderr.contains("no keep rule"), "{}", out.stderr);
    assert_eq!(snapshot_ids(&env).len(), 5);

    let report = json(
        env.run(&[
            "forget",
            "--keep-daily",
            "2",
            "--timezone",
            "Europe/Berlin",
            "--dry-run",
            "--json",
        ])
        .ok(),
    );
    let groups = report["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{report:#}");
    let web1 = groups
        .iter()
        .find(|g| g["key"].as_str().unwrap().contains("host=web1"))
        .unwrap();
    let verdicts: Vec<(String, bool, Vec<String>)> = web1["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["id"].as_str().unwrap().to_string(),
                v["keep"].as_bool().unwrap(),
                v["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    // Newest first: March 30 (two snapshots in Berlin; the newer wins), then March 29.
    assert_eq!(
        verdicts[0],
        (ids[3].clone(), true, vec!["daily 1/2".into()])
    );
    assert_eq!(verdicts[1], (ids[2].clone(), false, vec![]));
    assert_eq!(
        verdicts[2],
        (ids[1].clone(), true, vec!["daily 2/2".into()])
    );
    assert_eq!(verdicts[3], (ids[0].clone(), false, vec![]));
    // In UTC the same policy keeps a different set: 23:30 is still March 29 there.
    let utc = json(
        env.run(&[
            "forget",
            "--keep-daily",
            "2",
            "--timezone",
            "UTC",
            "--group-by",
            "",
            "--dry-run",
            "--json",
        ])
        .ok(),
    );
    let kept: Vec<&str> = utc["groups"][0]["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["keep"].as_bool().unwrap())
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, vec![ids[3].as_str(), ids[2].as_str()]);

    // For real: the human output names each decision with its reasons.
    let out = env
        .run(&[
            "forget",
            "--keep-daily",
            "2",
            "--keep-within",
            "1h",
            "--timezone",
            "Europe/Berlin",
        ])
        .ok();
    assert!(
        out.stdout.contains("daily 1/2, within 1h"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("remove"), "{}", out.stdout);
    let left = snapshot_ids(&env);
    assert_eq!(left.len(), 3, "{left:?}");
    for id in [&ids[3], &ids[1], &other] {
        assert!(left.contains(id));
    }
    let out = env
        .run(&["forget", "--keep-within", "30x", "--dry-run"])
        .expect_code(2);
    assert!(out.stderr.contains("unknown unit"), "{}", out.stderr);
    let out = env
        .run(&["forget", "--keep-last", "1", "--timezone", "Mars/Olympus"])
        .expect_code(2);
    assert!(out.stderr.contains("Mars/Olympus"), "{}", out.stderr);
}

#[test]
fn forget_and_prune_return_exactly_the_space_of_removed_data() {
    let env = Env::new();
    init_small(&env);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    // Every snapshot: a shared file, and 1.5 MB of random (incompressible) bytes only it holds.
    fs::write(src.join("shared.bin"), pseudo_random(100, 1_500_000)).unwrap();
    let unique_name = format!("{}/unique.bin", src.display());
    let mut contents = Vec::new();
    for i in 0..4u64 {
        let data = pseudo_random(i, 1_500_000);
        fs::write(src.join("unique.bin"), &data).unwrap();
        let out = env
            .run(&[
                "backup",
                "--json",
                "--time",
                &format!("2026-01-0{}T10:00:00Z", i + 1),
                src.to_str().unwrap(),
            ])
            .ok();
        contents.push((json(out)["id"].as_str().unwrap().to_string(), data));
    }
    let before = env.repo_size();
    let packs_before = packs(Path::new(&env.repo));
    env.run(&["forget", "--keep-last", "2"]).ok();
    // The default grace period condemns but deletes nothing.
    let report = json(env.run(&["prune", "--json"]).ok());
    assert!(
        report["packs_condemned"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert_eq!(report["packs_deleted"].as_u64().unwrap(), 0);
    let packs_after = packs(Path::new(&env.repo));
    assert!(packs_before.iter().all(|p| packs_after.contains(p)));
    for (id, data) in &contents[2..] {
        assert_eq!(&dump(&env, id, &unique_name), data);
    }
    // A dry run with no grace shows what would go, and changes nothing.
    let dry = json(
        env.run(&["prune", "--grace", "0s", "--dry-run", "--json"])
            .ok(),
    );
    assert!(dry["packs_deleted"].as_u64().unwrap() > 0, "{dry:#}");
    let unchanged = env.repo_size();
    let out = env.run(&["prune", "--grace", "0s", "--dry-run"]).ok();
    assert!(out.stdout.contains("would remove"), "{}", out.stdout);
    assert_eq!(env.repo_size(), unchanged);

    let out = env
        .run(&["prune", "--grace", "0s", "--max-unused", "0%"])
        .ok();
    assert!(out.stdout.contains("reclaimed"), "{}", out.stdout);
    let freed = before - env.repo_size();
    let unique_removed = 2 * 1_500_000u64;
    // Sealing adds 40 bytes a blob; trees, snapshots and index entries are small.
    assert!(
        freed >= unique_removed && freed <= unique_removed + 100_000,
        "freed {freed} bytes, the removed snapshots alone held {unique_removed}"
    );
    for (id, data) in &contents[2..] {
        assert_eq!(&dump(&env, id, &unique_name), data, "snapshot {id}");
        assert_eq!(
            dump(&env, id, &format!("{}/shared.bin", src.display())),
            pseudo_random(100, 1_500_000)
        );
    }
    env.run(&["check", "--read-data"]).ok();
    // Nothing left to do.
    let again = json(env.run(&["prune", "--grace", "0s", "--json"]).ok());
    assert_eq!(again["packs_condemned"].as_u64().unwrap(), 0, "{again:#}");
    assert_eq!(again["plans_pending"].as_u64().unwrap(), 0);
    let plans = env.path("repo/plans");
    assert!(!plans.exists() || fs::read_dir(plans).unwrap().next().is_none());
}

/// A tiny deterministic generator for kill delays.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn prune_killed_at_random_moments_loses_nothing_and_the_next_prune_finishes() {
    let env = Env::new();
    init_small(&env);
    let mut rng = Lcg(0x5eed);
    let mut live: Vec<(String, Vec<u8>)> = Vec::new();
    let mut serial = 0u64;
    let mut add = |env: &Env, live: &mut Vec<(String, Vec<u8>)>| {
        serial += 1;
        // Many small files: many blobs, so each phase of prune takes a while.
        let src = env.path("src");
        fs::create_dir_all(&src).unwrap();
        for f in 0..300u64 {
            let seed = if f % 3 == 0 { f } else { serial * 1000 + f };
            fs::write(src.join(format!("f{f}")), pseudo_random(seed, 3000)).unwrap();
        }
        let mut data = pseudo_random(1000 + serial, 400_000);
        data.extend_from_slice(&pseudo_random(7, 600_000));
        let id = backup_stream(env, "db/app.dump", &data, &[]);
        env.run(&["backup", "-q", "--tag", "files", src.to_str().unwrap()])
            .ok();
        live.push((id, data));
    };
    for _ in 0..4 {
        add(&env, &mut live);
    }
    // Measure one prune's duration so the kill delays fall inside it.
    env.run(&["forget", "--keep-last", "3"]).ok();
    live.remove(0);
    let start = Instant::now();
    env.run(&["prune", "--grace", "0s", "--max-unused", "0%"])
        .ok();
    let span_ms = (start.elapsed().as_millis() as u64).clamp(20, 2000);

    let deadline = Instant::now() + Duration::from_secs(90);
    let mut kills = 0;
    let mut span_ms = span_ms;
    for round in 0..20 {
        if Instant::now() > deadline {
            break;
        }
        if round % 5 == 4 {
            // Let one prune run to completion now and then, to follow its growing duration.
            add(&env, &mut live);
            env.run(&["forget", "--keep-last", "3"]).ok();
            live.remove(0);
            let start = Instant::now();
            env.run(&["prune", "--grace", "0s", "--max-unused", "0%", "-q"])
                .ok();
            span_ms = span_ms.max(start.elapsed().as_millis() as u64);
            continue;
        }
        add(&env, &mut live);
        env.run(&["forget", "--keep-last", "3"]).ok();
        live.remove(0);
        let mut child = env
            .cmd(&["prune", "--grace", "0s", "--max-unused", "0%", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(rng.below(span_ms)));
        if child.try_wait().unwrap().is_none() {
            kills += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // After every kill: all remaining snapshots restore, and check finds no damage.
        for (id, data) in &live {
            assert_eq!(&dump(&env, id, "db/app.dump"), data, "snapshot {id}");
        }
        env.run(&["check"]).ok();
    }
    eprintln!("one prune took {span_ms} ms; {kills} prunes were killed while running");
    assert!(kills >= 5, "only {kills} prunes were killed while running");
    // The next prune is not blocked by the dead one's lease and finishes the job.
    env.run(&["prune", "--grace", "0s", "--max-unused", "0%"])
        .ok();
    let last = json(env.run(&["prune", "--grace", "0s", "--json"]).ok());
    assert_eq!(last["packs_condemned"].as_u64().unwrap(), 0, "{last:#}");
    assert_eq!(last["plans_pending"].as_u64().unwrap(), 0, "{last:#}");
    let check = env.run(&["check", "--read-data"]).ok();
    assert!(!check.stderr.contains("in no index"), "{}", check.stderr);
    for (id, data) in &live {
        assert_eq!(&dump(&env, id, "db/app.dump"), data, "snapshot {id}");
    }
}

#[test]
fn a_backup_running_during_prune_restores_completely() {
    let env = Env::new();
    init_small(&env);
    let dump_bytes = pseudo_random(42, 3_000_000);
    backup_stream(&env, "db/app.dump", &dump_bytes, &["--tag", "old"]);
    backup_stream(&env, "notes.txt", b"keep me", &["--tag", "keep"]);
    // The only snapshot holding the dump is forgotten: its packs are unused.
    env.run(&["forget", "--keep-tag", "keep"]).ok();

    // A backup of the same bytes starts (and loads the index, which still lists those packs),
    // then waits for its input while a prune condemns the packs.
    let mut backup = env
        .cmd(&["backup", "--json", "--stdin-name", "db/app.dump"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let first = json(env.run(&["prune", "--grace", "2s", "--json"]).ok());
    assert!(first["packs_condemned"].as_u64().unwrap() > 0, "{first:#}");
    let mut stdin = backup.stdin.take().unwrap();
    stdin.write_all(&dump_bytes).unwrap();
    drop(stdin);
    let out = backup.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = snap["id"].as_str().unwrap().to_string();
    // It deduplicated against the condemned packs, and still restores: they stay readable.
    assert_eq!(
        snap["snapshot"]["summary"]["data_blobs_new"].as_u64(),
        Some(0)
    );
    assert_eq!(dump(&env, &id, "db/app.dump"), dump_bytes);
    env.run(&["check"]).ok();

    // Once the grace period has passed, the next prune sees that the new snapshot needs them
    // and puts them back into the index instead of deleting them.
    // Due at: the plan's index deadline (1 s after it, for a 2 s grace) plus the grace.
    std::thread::sleep(Duration::from_millis(3200));
    let second = json(env.run(&["prune", "--grace", "2s", "--json"]).ok());
    assert!(
        second["packs_reindexed"].as_u64().unwrap() > 0,
        "{second:#}"
    );
    assert_eq!(dump(&env, &id, "db/app.dump"), dump_bytes);
    env.run(&["check", "--read-data"]).ok();
    let third = json(env.run(&["prune", "--grace", "0s", "--json"]).ok());
    assert_eq!(third["packs_reindexed"].as_u64().unwrap(), 0, "{third:#}");
    assert_eq!(dump(&env, &id, "db/app.dump"), dump_bytes);
    env.run(&["check", "--read-data"]).ok();
}

/// The highest lease sequence number present (0 when none).
fn max_lease_seq(env: &Env) -> u64 {
    let Ok(rd) = fs::read_dir(env.path("repo/locks")) else {
        return 0;
    };
    rd.flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("lease-")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn one_prune_at_a_time_backups_never_wait_and_unlock() {
    let env = Env::new();
    init_small(&env);
    backup_stream(&env, "keep", b"keep", &["--tag", "keep"]);
    // Freeze a prune while it holds the lease: taking the lease writes sequence m+1, releasing
    // it writes m+2, so "m+1 and still running" means held. A prune can finish between two
    // looks; then try again with fresh work.
    let mut held = None;
    for attempt in 0..10u64 {
        for i in 0..4 {
            backup_stream(&env, "b", &pseudo_random(attempt * 10 + i, 400_000), &[]);
        }
        env.run(&["forget", "--keep-tag", "keep"]).ok();
        let before = max_lease_seq(&env);
        let mut child = env
            .cmd(&["prune", "--grace", "0s", "--max-unused", "0%"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while max_lease_seq(&env) == before && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_micros(200));
        }
        let stopped = std::process::Command::new("kill")
            .args(["-STOP", &child.id().to_string()])
            .status()
            .unwrap()
            .success();
        if stopped && max_lease_seq(&env) == before + 1 && child.try_wait().unwrap().is_none() {
            held = Some(child);
            break;
        }
        let _ = child.kill();
        child.wait().unwrap();
    }
    let mut child = held.expect("never caught a prune holding its lease in 10 attempts");
    let out = env.run(&["prune", "--grace", "0s"]).expect_code(11);
    assert!(out.stderr.contains("held by prune"), "{}", out.stderr);
    // forget --prune (which claims the lease while it forgets) forgets, says why prune could
    // not run, and leaves no lease record of its own.
    let gone = backup_stream(&env, "d", b"forgotten while held", &[]);
    let seq = max_lease_seq(&env);
    let out = env.run(&["forget", &gone, "--prune"]).expect_code(11);
    assert!(
        out.stderr
            .contains("the snapshots were forgotten, but prune failed")
            && out.stderr.contains("held by prune"),
        "{}",
        out.stderr
    );
    assert!(!snapshot_ids(&env).contains(&gone));
    assert_eq!(max_lease_seq(&env), seq);
    // Backups never wait for it.
    let id = backup_stream(&env, "c", b"during a held lease", &[]);
    assert_eq!(dump(&env, &id, "c"), b"during a held lease");
    // unlock leaves a live lease alone unless told.
    env.run(&["unlock"]).expect_code(11);
    child.kill().unwrap(); // SIGKILL works on a stopped process
    child.wait().unwrap();
    // Its process is gone: on this host the lease is stale at once.
    let out = env.run(&["unlock"]).ok();
    assert!(out.stdout.contains("cleared"), "{}", out.stdout);
    env.run(&["prune", "--grace", "0s"]).ok();
    env.run(&["check", "--read-data"]).ok();
    assert_eq!(dump(&env, &id, "c"), b"during a held lease");
}

/// A repository with two snapshots of a small directory tree; returns (env, snapshot ids).
fn damaged_fixture() -> (Env, String, String, String) {
    let env = Env::new();
    init_small(&env);
    let src = env.path("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::write(src.join("docs/a.bin"), pseudo_random(1, 800_000)).unwrap();
    let first = json(env.run(&["backup", "--json", src.to_str().unwrap()]).ok());
    fs::write(src.join("b.bin"), pseudo_random(2, 300_000)).unwrap();
    let second = json(env.run(&["backup", "--json", src.to_str().unwrap()]).ok());
    let s = src.to_string_lossy().into_owned();
    (
        env,
        first["id"].as_str().unwrap().to_string(),
        second["id"].as_str().unwrap().to_string(),
        s,
    )
}

#[test]
fn check_names_a_flipped_byte() {
    let (env, first, second, src) = damaged_fixture();
    env.run(&["check", "--read-data"]).ok();
    // The biggest pack holds a.bin's data.
    let repo = Path::new(&env.repo).to_path_buf();
    let biggest = packs(&repo)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(&biggest).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x01;
    fs::write(&biggest, &bytes).unwrap();
    // Structure alone does not read the data; --read-data finds it and names the victims.
    let out = env.run(&["check", "--read-data"]).expect_code(1);
    assert!(out.stderr.contains("docs/a.bin"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&first) && out.stderr.contains(&second),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("{src}/docs/a.bin")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("b.bin:"), "{}", out.stderr);
    let report = json(env.run(&["check", "--read-data", "--json"]).expect_code(1));
    assert_eq!(report["damaged_snapshots"].as_array().unwrap().len(), 2);
    // A subset covering every pack (1/1) finds it too.
    env.run(&["check", "--read-data-subset", "1/1"])
        .expect_code(1);
    env.run(&["check", "--read-data-subset", "100%"])
        .expect_code(1);
    env.run(&["check", "--read-data-subset", "0/3"])
        .expect_code(2);
}

#[test]
fn check_names_a_deleted_pack() {
    let (env, first, _second, _src) = damaged_fixture();
    let repo = Path::new(&env.repo).to_path_buf();
    let biggest = packs(&repo)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    fs::remove_file(&biggest).unwrap();
    let out = env.run(&["check"]).expect_code(1);
    let name = biggest.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        out.stderr.contains(&name) && out.stderr.contains("missing"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("docs/a.bin") && out.stderr.contains(&first),
        "{}",
        out.stderr
    );
    // Prune refuses to work on a repository missing data that snapshots need.
    let out = env.run(&["prune", "--grace", "0s"]).expect_code(1);
    assert!(out.stderr.contains("coffer check"), "{}", out.stderr);
}

#[test]
fn check_names_a_missing_index_file() {
    let (env, first, second, src) = damaged_fixture();
    // The first backup's index file lists a.bin's data and the first snapshot's trees.
    let files = index_files_oldest_first(&env.path("repo"));
    assert_eq!(files.len(), 2);
    fs::remove_file(&files[0]).unwrap();
    let out = env.run(&["check"]).expect_code(1);
    // Both snapshots are named; the second one's `docs` directory (deduplicated from the first
    // backup, so listed only in the deleted file) is the damaged path.
    assert!(
        out.stderr.contains(&first) && out.stderr.contains(&second),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("{src}/docs:")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("not in any index"), "{}", out.stderr);
}

#[test]
fn check_reports_a_damaged_index_file_with_everything_else() {
    let (env, first, second, src) = damaged_fixture();
    let files = index_files_oldest_first(&env.path("repo"));
    let victim = files[0].clone();
    let mut bytes = fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&victim, &bytes).unwrap();
    // Other commands refuse to work from a damaged index, naming it ...
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    let out = env.run(&["snapshots"]);
    let out = if out.code == 0 {
        env.run(&["ls", "latest"]).expect_code(1)
    } else {
        out
    };
    assert!(out.stderr.contains(&name), "{}", out.stderr);
    // ... while check reads on and reports the file and what its loss reaches.
    let out = env.run(&["check"]).expect_code(1);
    assert!(out.stderr.contains(&name), "{}", out.stderr);
    assert!(
        out.stderr.contains(&first) && out.stderr.contains(&second),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("{src}/docs")),
        "{}",
        out.stderr
    );
}

/// Issue 13 item 5: a zero-grace prune that runs while a backup is still uploading must not
/// delete the backup's fresh packs (no index names them yet); it still deletes at once the packs
/// that only a forgotten snapshot needed.
#[test]
fn a_zero_grace_prune_during_a_backup_leaves_it_restorable() {
    let env = Env::new();
    init_small(&env);
    let forgotten = backup_stream(
        &env,
        "old.bin",
        &pseudo_random(5, 2_000_000),
        &["--tag", "old"],
    );
    backup_stream(&env, "notes.txt", b"keep me", &["--tag", "keep"]);
    let before = packs(Path::new(&env.repo)).len();

    // A gated stream: 12 MB (more than the largest chunk, so chunks are cut and packs
    // uploaded), then a wait until the test opens the gate, then 4 MB more. 1 MiB packs:
    // several are uploaded before the gate, and no index names them until the backup ends.
    // The gate is a file, not a clock, so a loaded machine cannot end the race early.
    let input = pseudo_random(6, 16_000_000);
    let file = env.path("input.bin");
    fs::write(&file, &input).unwrap();
    let gate = env.path("gate");
    let script = format!(
        "head -c 12000000 '{f}'; while [ ! -e '{g}' ]; do sleep 0.05; done; \
         tail -c +12000001 '{f}'",
        f = file.display(),
        g = gate.display()
    );
    let mut backup = env
        .cmd(&[
            "backup",
            "--json",
            "--stdin-from-command",
            "db/slow.dump",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while packs(Path::new(&env.repo)).len() < before + 2 {
        if started.elapsed() > Duration::from_secs(120) {
            fs::write(&gate, b"").unwrap();
            let _ = backup.kill();
            panic!("no pack uploaded in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    env.run(&["forget", "--keep-tag", "keep"]).ok();
    assert!(!snapshot_ids(&env).contains(&forgotten));
    let pruned = json(env.run(&["prune", "--grace", "0s", "--json"]).ok());
    // The forgotten snapshot's packs went at once.
    assert!(pruned["packs_deleted"].as_u64().unwrap() > 0, "{pruned:#}");
    // The backup was still waiting at the gate all along.
    assert!(
        backup.try_wait().unwrap().is_none(),
        "the backup ended before the prune could race it"
    );
    fs::write(&gate, b"").unwrap();

    let out = backup.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = json(coffer_e2e::Run {
        code: 0,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::new(),
        raw_stdout: out.stdout.clone(),
    })["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(dump(&env, &id, "db/slow.dump"), input);
    env.run(&["check", "--read-data"]).ok();
}

/// The retention errors, now variants of the one error type, reach the user with the same
/// messages and the same exit code (2, usage) as before, and before any repository is opened.
#[test]
fn forget_refuses_bad_retention_input_with_exit_2_and_the_same_messages() {
    let env = Env::new();
    let cases: [(&[&str], &str); 5] = [
        (
            &["forget"],
            "no keep rule given (use at least one of keep-last, keep-hourly, keep-daily, \
             keep-weekly, keep-monthly, keep-yearly, keep-within, keep-tag); refusing to forget \
             every snapshot",
        ),
        (
            &["forget", "--keep-tag", " "],
            "invalid keep-tag \" \": a tag must not be empty",
        ),
        (
            &["forget", "--keep-daily", "abc"],
            "invalid keep count \"abc\": expected a non-negative whole number, or \"all\" / -1 \
             for unlimited",
        ),
        (
            &["forget", "--keep-within", "30x"],
            "invalid keep-within duration \"30x\": ",
        ),
        (
            &["forget", "--keep-last", "1", "--group-by", "host,color"],
            "invalid group-by item \"color\" in \"host,color\": expected host, paths, tags or \
             label:NAME",
        ),
    ];
    for (args, message) in cases {
        let out = env.run(args).expect_code(2);
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
    }
}

/// Issue 17 item 5: staging files (`NAME#DIGITS`) that crashed writes left are reported by
/// check as a warning (exit 0: not damage) and removed by prune once a day old; a fresh one,
/// which a running backup may still be writing, is kept.
#[test]
fn check_reports_staging_leftovers_and_prune_removes_day_old_ones() {
    let env = Env::new();
    init_small(&env);
    let id = backup_stream(&env, "a.bin", &pseudo_random(17, 300_000), &[]);
    let repo = Path::new(&env.repo);
    fs::create_dir_all(repo.join("data/ab")).unwrap();
    let old = repo.join(format!("data/ab/ab{}#123", "0".repeat(62)));
    let fresh = repo.join(format!("index/{}#456", "cd".repeat(32)));
    fs::write(&old, vec![1u8; 4096]).unwrap();
    fs::write(&fresh, vec![2u8; 1024]).unwrap();
    fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3 * 86_400))
        .unwrap();

    let out = env.run(&["check"]).ok();
    assert!(
        out.stderr.contains("warning: staging files: 2 files left by interrupted writes (5.0 KiB, the oldest 3 days old)")
            && out.stderr.contains("`coffer prune` removes those at least a day old (1 now)"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("no damage found"), "{}", out.stdout);
    let report = json(env.run(&["check", "--json"]).ok());
    assert_eq!(report["staging"]["files"], 2, "{report}");
    assert_eq!(report["staging"]["bytes"], 5120);
    assert_eq!(report["staging"]["removable"], 1);

    let out = env.run(&["prune", "--dry-run"]).ok();
    assert!(
        out.stdout
            .contains("would remove: 1 staging file(s) left by interrupted writes")
            && out.stdout.contains("1 younger than a day kept"),
        "{}",
        out.stdout
    );
    assert!(old.exists() && fresh.exists());

    let out = env.run(&["prune"]).ok();
    assert!(
        out.stdout
            .contains("removed: 1 staging file(s) left by interrupted writes")
            && out.stdout.contains(
                &old.strip_prefix(repo)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            ),
        "{}",
        out.stdout
    );
    assert!(!old.exists(), "the day-old staging file is gone");
    assert!(fresh.exists(), "the fresh staging file is kept");
    let report = json(env.run(&["prune", "--json"]).ok());
    assert_eq!(report["staging_removed"], 0, "{report}");
    assert_eq!(report["staging_kept"], 1);

    // Nothing else was touched: the snapshot restores and check still finds no damage.
    assert_eq!(dump(&env, &id, "a.bin"), pseudo_random(17, 300_000));
    env.run(&["check", "--read-data"]).ok();
}

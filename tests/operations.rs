//! Running Coffer from cron and by hand: `-q` prints nothing on success, `-v` / `-vv` say what
//! is being done, the run lock keeps two runs of one config apart.

use coffer_e2e::*;

/// A gzipped pg_dump SQL dump: the backup saves it with a notice (a compressed dump
/// deduplicates poorly).
fn gzip_bytes() -> Vec<u8> {
    let mut sql = b"--\n-- PostgreSQL database dump\n--\n\n".to_vec();
    for i in 0..2000 {
        sql.extend(format!("INSERT INTO t VALUES ({i}, 'row {i}');\n").as_bytes());
    }
    let mut gzip = std::process::Command::new("gzip")
        .args(["-n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = gzip.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &sql));
    let out = gzip.wait_with_output().expect("gzip output");
    writer.join().expect("writer").expect("writing to gzip");
    out.stdout
}

#[test]
fn quiet_backup_prints_nothing_on_success() {
    let env = Env::new();
    env.init();
    // Without -q: the summary on stdout and the notice on stderr.
    let loud = env
        .run_stdin(&["backup", "--stdin-name", "db/app.sql.gz"], &gzip_bytes())
        .ok();
    assert!(loud.stdout.contains("saved"), "{loud:?}");
    assert!(loud.stderr.contains("notice:"), "{loud:?}");
    // With -q: nothing at all, on either stream.
    let quiet = env
        .run_stdin(
            &["-q", "backup", "--stdin-name", "db/app.sql.gz"],
            &gzip_bytes(),
        )
        .ok();
    assert_eq!(quiet.stdout, "", "{quiet:?}");
    assert_eq!(quiet.stderr, "", "{quiet:?}");
    // A path backup, a restore, a check, a forget and a key add: silent too.
    std::fs::create_dir_all(env.path("data/sub")).unwrap();
    std::fs::write(env.path("data/sub/a.txt"), b"alpha").unwrap();
    let data = env.path("data").display().to_string();
    let target = env.path("restored").display().to_string();
    for args in [
        vec!["-q", "backup", data.as_str()],
        vec!["-q", "restore", "latest", "--target", target.as_str()],
        vec!["-q", "check"],
        vec!["-q", "forget", "--keep-last", "5"],
        vec!["-q", "prune"],
    ] {
        let run = env.run(&args).ok();
        assert_eq!(run.stdout, "", "{args:?}: {run:?}");
        assert_eq!(run.stderr, "", "{args:?}: {run:?}");
    }
}

#[test]
fn quiet_still_reports_a_failure() {
    let env = Env::new();
    env.init();
    let run = env.run(&["-q", "backup", "/nonexistent/coffer-test"]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("coffer:"), "{run:?}");
}

#[test]
fn verbose_shows_phases_and_very_verbose_each_file() {
    let env = Env::new();
    env.init();
    std::fs::create_dir_all(env.path("data")).unwrap();
    std::fs::write(env.path("data/first.txt"), b"one").unwrap();
    std::fs::write(env.path("data/second.txt"), b"two").unwrap();
    let data = env.path("data").display().to_string();
    let v = env.run(&["-v", "backup", data.as_str()]).ok();
    assert!(v.stderr.contains("repository"), "{v:?}");
    assert!(v.stderr.contains("opened"), "{v:?}");
    assert!(v.stderr.contains("sources read in"), "{v:?}");
    assert!(v.stderr.contains("saved; backup took"), "{v:?}");
    assert!(!v.stderr.contains("first.txt"), "-v names no files: {v:?}");
    assert!(v.stdout.contains("saved"), "{v:?}");
    let vv = env.run(&["-vv", "backup", "--force", data.as_str()]).ok();
    assert!(vv.stderr.contains("first.txt"), "{vv:?}");
    assert!(vv.stderr.contains("second.txt"), "{vv:?}");
    // -q and -v contradict each other.
    env.run(&["-q", "-v", "snapshots"]).expect_code(2);
}

/// Waits until `path` exists (the first run has taken its lock), at most 30 s.
fn wait_for_lock_file(dir: &std::path::Path) {
    for _ in 0..300 {
        let any = std::fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("pid")))
            })
            .unwrap_or(false);
        if any {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no run lock appeared in {}", dir.display());
}

#[test]
fn overlapping_runs_of_one_config_wait_or_exit_14() {
    use std::io::Write;
    use std::process::Stdio;
    let env = Env::new();
    env.init();
    // The first run holds the lock while its standard input stays open.
    let mut first = env
        .cmd(&["backup", "--stdin-name", "slow.txt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_in = first.stdin.take().unwrap();
    first_in.write_all(b"first run").unwrap();
    wait_for_lock_file(&env.path(".cache/coffer/locks"));

    // --no-wait: a second backup exits 14 at once, naming the holder.
    let refused = env
        .run(&["--no-wait", "backup", "--stdin-name", "other.txt"])
        .expect_code(14);
    assert!(
        refused.stderr.contains("another coffer backup"),
        "{refused:?}"
    );
    assert!(refused.stderr.contains("(backup)"), "{refused:?}");
    // Other commands do not wait for a backup: a listing, forget, check, prune.
    env.run(&["--no-wait", "snapshots"]).ok();
    env.run(&["--no-wait", "forget", "--keep-last", "3"]).ok();
    env.run(&["--no-wait", "check"]).ok();
    env.run(&["--no-wait", "prune"]).ok();

    // Without --no-wait: it waits, says so, and runs once the first is done.
    let second = env
        .cmd(&["backup", "--stdin-name", "second.txt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(env.snapshots().len(), 0, "neither run has saved yet");
    drop(first_in);
    let first_out = first.wait_with_output().unwrap();
    assert!(first_out.status.success(), "{first_out:?}");
    let mut second = second;
    second
        .stdin
        .take()
        .unwrap()
        .write_all(b"second run")
        .unwrap();
    let second_out = second.wait_with_output().unwrap();
    assert!(second_out.status.success(), "{second_out:?}");
    let stderr = String::from_utf8_lossy(&second_out.stderr);
    assert!(
        stderr.contains("waiting for another coffer backup"),
        "{stderr}"
    );
    assert_eq!(env.snapshots().len(), 2);
}

#[test]
fn status_is_stale_or_fresh_with_and_without_the_password() {
    let env = Env::new();
    env.init();
    // No snapshot yet: stale for a watcher.
    env.run(&["status", "--max-age", "26h"]).expect_code(1);
    // A snapshot recorded three days ago.
    let old = jiff_like_days_ago(3);
    env.run_stdin(&["backup", "--stdin-name", "a.txt", "--time", &old], b"old")
        .ok();
    let stale = env.run(&["status", "--max-age", "26h"]).expect_code(1);
    assert!(stale.stderr.contains("more than --max-age"), "{stale:?}");
    assert!(stale.stdout.contains("STALE"), "{stale:?}");
    env.run(&["status", "--max-age", "4d"]).ok();

    // Without the password: the listing says the object was written just now.
    let no_pw = |args: &[&str]| {
        let mut c = env.cmd(args);
        c.env_remove("COFFER_PASSWORD");
        let out = c.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = no_pw(&["status", "--max-age", "26h", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["mode"], "listing");
    assert_eq!(v["snapshots"], 1);
    assert_eq!(v["stale"], false);
    // Age the snapshot object by three days: stale without the password too.
    let snaps_dir = std::path::Path::new(&env.repo).join("snapshots");
    let three_days = std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 86_400);
    for e in std::fs::read_dir(&snaps_dir).unwrap().flatten() {
        let f = std::fs::File::options().write(true).open(e.path()).unwrap();
        f.set_modified(three_days).unwrap();
    }
    let (code, out) = no_pw(&["status", "--max-age", "26h"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("STALE"), "{out}");

    // A fresh backup: fresh again, with the documented JSON fields.
    env.run_stdin(&["backup", "--stdin-name", "a.txt"], b"new")
        .ok();
    let fresh = env.run(&["status", "--max-age", "26h", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&fresh.stdout).unwrap();
    assert_eq!(v["mode"], "full");
    assert_eq!(v["ok"], true);
    let g = &v["groups"][0];
    for field in [
        "hostname",
        "sources",
        "snapshots",
        "newest",
        "age_seconds",
        "total_bytes",
        "usual_total_bytes",
        "last_drill",
        "stale",
    ] {
        assert!(g.get(field).is_some(), "{field} missing: {v:#}");
    }
    assert_eq!(g["snapshots"], 2);
    assert_eq!(g["usual_total_bytes"], 3);
    let (code, _) = no_pw(&["status", "--max-age", "26h"]);
    assert_eq!(code, 0);
    // -q: nothing on stdout when fresh.
    let quiet = env.run(&["-q", "status", "--max-age", "26h"]).ok();
    assert_eq!(quiet.stdout, "");
}

/// An RFC 3339 UTC time `days` days ago.
fn jiff_like_days_ago(days: u64) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - days * 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn completions_and_man_pages_come_from_the_definitions() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = env.run(&["completions", shell]).ok();
        assert!(out.stdout.contains("backup"), "{shell}: {}", out.stdout);
        assert!(out.stdout.contains("max-age"), "{shell}");
    }
    env.run(&["completions", "tcsh"]).expect_code(2);
    let page = env.run(&["man"]).ok();
    assert!(page.stdout.contains(".TH coffer"), "{}", page.stdout);
    let dir = env.path("man1");
    env.run(&["man", "--dir", dir.to_str().unwrap()]).ok();
    let backup = std::fs::read_to_string(dir.join("coffer-backup.1")).unwrap();
    assert!(
        backup.contains("stdin\\-name") || backup.contains("stdin-name"),
        "{backup}"
    );
    assert!(dir.join("coffer-status.1").exists());
}

#[test]
fn diff_names_added_removed_and_changed_files() {
    let env = Env::new();
    env.init();
    std::fs::create_dir_all(env.path("data/sub")).unwrap();
    std::fs::write(env.path("data/keep.txt"), b"same").unwrap();
    std::fs::write(env.path("data/change.txt"), b"before").unwrap();
    std::fs::write(env.path("data/sub/gone.txt"), b"bye").unwrap();
    let data = env.path("data").display().to_string();
    env.run(&["backup", &data]).ok();
    std::fs::write(env.path("data/change.txt"), b"after, longer").unwrap();
    std::fs::remove_file(env.path("data/sub/gone.txt")).unwrap();
    std::fs::write(env.path("data/new.txt"), b"hello").unwrap();
    env.run(&["backup", &data]).ok();
    let snaps = env.snapshots();
    let (a, b) = (
        snaps[0]["short_id"].as_str().unwrap(),
        snaps[1]["short_id"].as_str().unwrap(),
    );
    let out = env.run(&["diff", a, b]).ok();
    assert!(
        out.stdout.contains("+ ") && out.stdout.contains("new.txt"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("- ") && out.stdout.contains("gone.txt"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("M ") && out.stdout.contains("change.txt"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("keep.txt"), "{}", out.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&env.run(&["diff", a, b, "--json"]).ok().stdout).unwrap();
    assert_eq!(json["added"].as_array().unwrap().len(), 1, "{json:#}");
    assert_eq!(json["removed"].as_array().unwrap().len(), 1, "{json:#}");
    let changed = json["changed"].as_array().unwrap();
    assert_eq!(changed.len(), 1, "{json:#}");
    assert_eq!(changed[0]["old_size"], 6);
    assert_eq!(changed[0]["new_size"], 13);
    assert_eq!(json["tables"].as_array().unwrap().len(), 0);
}

#[test]
fn stats_count_dedup_and_what_each_snapshot_alone_holds() {
    let env = Env::new();
    env.init();
    std::fs::create_dir_all(env.path("data")).unwrap();
    std::fs::write(env.path("data/shared.bin"), pseudo_random(1, 300_000)).unwrap();
    let data = env.path("data").display().to_string();
    env.run(&["backup", &data]).ok();
    std::fs::write(env.path("data/only-second.bin"), pseudo_random(2, 200_000)).unwrap();
    env.run(&["backup", &data]).ok();
    let json: serde_json::Value =
        serde_json::from_str(&env.run(&["stats", "--json"]).ok().stdout).unwrap();
    for field in [
        "packs",
        "pack_bytes",
        "blobs",
        "stored_bytes",
        "raw_bytes",
        "snapshots",
        "logical_bytes",
        "compression_ratio",
        "dedup_ratio",
        "per_snapshot",
    ] {
        assert!(json.get(field).is_some(), "{field} missing: {json:#}");
    }
    assert_eq!(json["snapshots"], 2);
    assert_eq!(json["logical_bytes"], 800_000);
    let raw = json["raw_bytes"].as_u64().unwrap();
    assert!((500_000..520_000).contains(&raw), "{json:#}");
    assert!(json["dedup_ratio"].as_f64().unwrap() > 1.5, "{json:#}");
    let per = json["per_snapshot"].as_array().unwrap();
    // The second alone holds the 200 kB file (random: stored about as large) and its trees; the
    // first only its own root tree.
    let second = per[1]["unique_stored_bytes"].as_u64().unwrap();
    assert!(second > 190_000, "{json:#}");
    assert!(
        per[0]["unique_stored_bytes"].as_u64().unwrap() < 10_000,
        "{json:#}"
    );
    let human = env.run(&["stats"]).ok();
    assert!(human.stdout.contains("alone holds"), "{}", human.stdout);
}

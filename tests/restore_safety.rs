//! Restore run as root into a target where an unprivileged user can write (issue 13, item 1):
//! a symlink that user plants anywhere below the target (at a temporary name, at a directory in
//! the path, at a file's or a symlink's final name) is never followed, so nothing outside the
//! target is written, chowned or chmodded; and a restore still puts back modes (setuid
//! included), owners and times exactly. These tests need root (to restore owners and to act as
//! `nobody` with setpriv); they print why and pass without checking anything when not root.

use coffer_e2e::Env;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Skips the test (printing why) unless it runs as root.
macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: this test needs root (to restore owners and to act as nobody)");
            return;
        }
    };
}

/// Runs `sh -c script` as nobody and asserts it succeeded.
#[track_caller]
fn as_nobody(script: &str) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "as nobody: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

/// A repository with one snapshot of `src/www/index.php` ("new", owned by nobody), restored
/// once to `tgt`. Returns the env and the restored `www` directory. The scratch directory is
/// made 0755 so that nobody can reach the restored tree.
fn www_restored() -> (Env, PathBuf) {
    let env = Env::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    env.init();
    let www = env.path("src/www");
    fs::create_dir_all(&www).unwrap();
    fs::write(www.join("index.php"), "new\n").unwrap();
    chown(&www, NOBODY, NOBODY);
    chown(&www.join("index.php"), NOBODY, NOBODY);
    env.run(&["backup", env.path("src").to_str().unwrap()]).ok();
    let tgt = env.path("tgt");
    restore(&env, &tgt, false).ok();
    let restored = tgt.join(www.strip_prefix("/").unwrap());
    assert_eq!(fs::read(restored.join("index.php")).unwrap(), b"new\n");
    (env, restored)
}

fn restore(env: &Env, target: &Path, overwrite: bool) -> coffer_e2e::Run {
    let mut args = vec!["restore", "latest", "--target", target.to_str().unwrap()];
    if overwrite {
        args.push("--overwrite");
    }
    env.run(&args)
}

/// A root-owned 0600 file holding "secret", outside every target.
fn victim(env: &Env) -> PathBuf {
    let victim = env.path("victim");
    fs::write(&victim, "secret\n").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    victim
}

#[track_caller]
fn assert_victim_unchanged(victim: &Path) {
    let meta = fs::symlink_metadata(victim).unwrap();
    assert_eq!(fs::read(victim).unwrap(), b"secret\n", "victim's content");
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "victim's owner");
    assert_eq!(meta.mode() & 0o7777, 0o600, "victim's mode");
}

/// The reproduction, exactly: the old fixed temporary name `.index.php.coffer-restore`.
#[test]
fn symlink_planted_at_the_temporary_name_is_not_followed() {
    require_root!();
    let (env, www) = www_restored();
    let victim = victim(&env);
    let planted = www.join(".index.php.coffer-restore");
    as_nobody(&format!(
        "ln -s '{}' '{}'",
        victim.display(),
        planted.display()
    ));
    restore(&env, &env.path("tgt"), true).ok();
    assert_victim_unchanged(&victim);
    let restored = fs::symlink_metadata(www.join("index.php")).unwrap();
    assert!(restored.is_file());
    assert_eq!(restored.uid(), NOBODY);
    assert_eq!(fs::read(www.join("index.php")).unwrap(), b"new\n");
    // The planted link is left alone: not followed, not removed.
    assert!(fs::symlink_metadata(&planted)
        .unwrap()
        .file_type()
        .is_symlink());
    // No temporary file is left behind.
    let leftovers: Vec<_> = fs::read_dir(&www)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".coffer-") && *n != planted.file_name().unwrap())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A symlink at the final name of a file: a conflict without --overwrite, replaced (not
/// followed) with it.
#[test]
fn symlink_planted_at_a_files_final_name_is_replaced_not_followed() {
    require_root!();
    let (env, www) = www_restored();
    let victim = victim(&env);
    fs::remove_file(www.join("index.php")).unwrap();
    as_nobody(&format!(
        "ln -s '{}' '{}'",
        victim.display(),
        www.join("index.php").display()
    ));
    let out = restore(&env, &env.path("tgt"), false).expect_code(1);
    assert!(out.stderr.contains("index.php"), "{}", out.stderr);
    assert_victim_unchanged(&victim);
    restore(&env, &env.path("tgt"), true).ok();
    assert_victim_unchanged(&victim);
    let meta = fs::symlink_metadata(www.join("index.php")).unwrap();
    assert!(meta.is_file());
    assert_eq!(
        (meta.uid(), fs::read(www.join("index.php")).unwrap()),
        (NOBODY, b"new\n".to_vec())
    );
}

/// A symlink at the destination of a symlink of the snapshot: replaced, and the victim's
/// owner and times are not changed through it.
#[test]
fn symlink_planted_at_a_symlinks_destination_is_replaced_not_followed() {
    require_root!();
    let env = Env::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    env.init();
    let www = env.path("src/www");
    fs::create_dir_all(&www).unwrap();
    std::os::unix::fs::symlink("index.html", www.join("link")).unwrap();
    chown(&www, NOBODY, NOBODY);
    chown(&www.join("link"), NOBODY, NOBODY);
    let status = Command::new("touch")
        .args(["-h", "-d", "@1500000000"])
        .arg(www.join("link"))
        .status()
        .unwrap();
    assert!(status.success());
    env.run(&["backup", env.path("src").to_str().unwrap()]).ok();
    let tgt = env.path("tgt");
    restore(&env, &tgt, false).ok();
    let restored = tgt.join(www.strip_prefix("/").unwrap());
    let victim = victim(&env);
    let victim_mtime = fs::metadata(&victim).unwrap().mtime();
    fs::remove_file(restored.join("link")).unwrap();
    as_nobody(&format!(
        "ln -s '{}' '{}'",
        victim.display(),
        restored.join("link").display()
    ));
    restore(&env, &tgt, true).ok();
    assert_victim_unchanged(&victim);
    assert_eq!(fs::metadata(&victim).unwrap().mtime(), victim_mtime);
    let meta = fs::symlink_metadata(restored.join("link")).unwrap();
    assert!(meta.file_type().is_symlink());
    assert_eq!(
        fs::read_link(restored.join("link")).unwrap(),
        Path::new("index.html")
    );
    assert_eq!((meta.uid(), meta.mtime()), (NOBODY, 1_500_000_000));
}

/// A user replaces a restored subdirectory by a symlink to a directory outside the target,
/// before the restore and, over and over, while it runs: nothing is ever written outside.
#[test]
fn symlink_planted_at_a_directory_in_the_path_is_not_followed() {
    require_root!();
    let env = Env::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    env.init();
    let www = env.path("src/www");
    fs::create_dir_all(www.join("sub")).unwrap();
    for i in 0..200 {
        fs::write(www.join(format!("sub/f{i:03}")), format!("file {i}\n")).unwrap();
    }
    for p in [www.clone(), www.join("sub")] {
        chown(&p, NOBODY, NOBODY);
    }
    env.run(&["backup", env.path("src").to_str().unwrap()]).ok();
    let tgt = env.path("tgt");
    restore(&env, &tgt, false).ok();
    let restored = tgt.join(www.strip_prefix("/").unwrap());
    let outside = env.path("outside");
    fs::create_dir(&outside).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
    let sub = restored.join("sub");
    // Restoring `sub`'s owner (nobody), mode (0755) or time through the symlink would show here.
    let describe = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode(), m.mtime(), m.mtime_nsec())
    };
    let outside_before = describe(&outside);

    // Before the restore: the symlink is replaced by a directory (with --overwrite).
    as_nobody(&format!(
        "mv '{sub}' '{sub}.old' && ln -s '{out}' '{sub}'",
        sub = sub.display(),
        out = outside.display()
    ));
    restore(&env, &tgt, false).expect_code(1);
    restore(&env, &tgt, true).ok();
    assert!(fs::symlink_metadata(&sub).unwrap().is_dir());
    assert_eq!(fs::read(sub.join("f007")).unwrap(), b"file 7\n");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    assert_eq!(describe(&outside), outside_before);

    // During the restore: nobody moves the directory away (to a fresh name each time, so the
    // loop never gets stuck) and puts a symlink to `outside` in its place, as fast as it can. A
    // restore may fail (it meets a symlink and refuses to follow it, or the directory is gone)
    // or succeed, but it never writes into `outside` or changes it.
    let swapper = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(format!(
            "cd '{www}' && i=0; while :; do i=$((i+1)); mv -T sub moved.$i 2>/dev/null; \
             ln -s '{out}' sub 2>/dev/null; rm -f sub 2>/dev/null; done",
            www = restored.display(),
            out = outside.display()
        ))
        .spawn()
        .unwrap();
    let mut swapper = KillOnDrop(swapper);
    let started = std::time::Instant::now();
    let mut runs = 0;
    while runs < 40 && started.elapsed() < std::time::Duration::from_secs(30) {
        let out = restore(&env, &tgt, true);
        assert!(
            out.code == 0 || out.code == 1,
            "exit {}: {}",
            out.code,
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        runs += 1;
        let written: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            written.is_empty(),
            "run {runs} wrote outside the target: {written:?}"
        );
        assert_eq!(
            describe(&outside),
            outside_before,
            "run {runs} changed the owner, mode or time of a directory outside the target"
        );
    }
    swapper.0.kill().unwrap();
    let _ = swapper.0.wait();
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Modes (setuid, setgid, sticky, odd directory modes), owners and times come back exactly.
#[test]
fn a_restore_puts_back_modes_owners_and_times_exactly() {
    require_root!();
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d/locked")).unwrap();
    fs::write(src.join("d/suid"), "#!/bin/sh\n").unwrap();
    fs::write(src.join("d/sgid"), "x").unwrap();
    fs::write(src.join("d/locked/inner"), "y").unwrap();
    std::os::unix::fs::symlink("suid", src.join("d/link")).unwrap();
    chown(&src.join("d/suid"), NOBODY, 0);
    chown(&src.join("d/sgid"), 0, NOBODY);
    chown(&src.join("d/link"), NOBODY, NOBODY);
    chown(&src.join("d/locked"), NOBODY, NOBODY);
    let modes = [
        ("d/suid", 0o4755),
        ("d/sgid", 0o2710),
        ("d/locked", 0o500),
        ("d", 0o1750),
    ];
    for (p, mode) in modes {
        fs::set_permissions(src.join(p), fs::Permissions::from_mode(mode)).unwrap();
    }
    for (p, secs) in [
        ("d/suid", 1_400_000_000),
        ("d/link", 1_450_000_000),
        ("d/locked", 1_300_000_000),
        ("d", 1_200_000_000),
    ] {
        let status = Command::new("touch")
            .args(["-h", "-d", &format!("@{secs}.123456789")])
            .arg(src.join(p))
            .status()
            .unwrap();
        assert!(status.success());
    }
    env.run(&["backup", src.to_str().unwrap()]).ok();
    let tgt = env.path("tgt");
    restore(&env, &tgt, false).ok();
    let restored = tgt.join(src.strip_prefix("/").unwrap());
    for p in [
        "d",
        "d/suid",
        "d/sgid",
        "d/link",
        "d/locked",
        "d/locked/inner",
    ] {
        let a = fs::symlink_metadata(src.join(p)).unwrap();
        let b = fs::symlink_metadata(restored.join(p)).unwrap();
        let describe = |m: &fs::Metadata| {
            (
                m.mode(),
                m.uid(),
                m.gid(),
                m.mtime(),
                m.mtime_nsec(),
                m.len(),
            )
        };
        assert_eq!(describe(&a), describe(&b), "{p}");
    }
    // Restoring again over it (--overwrite) gives the same.
    restore(&env, &tgt, true).ok();
    assert_eq!(
        fs::symlink_metadata(restored.join("d/suid"))
            .unwrap()
            .mode()
            & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::symlink_metadata(restored.join("d")).unwrap().mode() & 0o7777,
        0o1750
    );
}

/// Starts restoring a snapshot of one 96 MiB file into a fresh target and returns the running
/// restore once its content is being written (something below the target's `src` directory has
/// bytes), with that directory. Needs no root.
fn restore_in_progress(env: &Env) -> (std::process::Child, PathBuf) {
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big"), coffer_e2e::pseudo_random(7, 96 << 20)).unwrap();
    env.run(&["backup", src.to_str().unwrap()]).ok();
    let tgt = env.path("tgt");
    let restored = tgt.join(src.strip_prefix("/").unwrap());
    let child = env
        .cmd(&["restore", "latest", "--target", tgt.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let writing = fs::read_dir(&restored).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.metadata().is_ok_and(|m| m.len() > 0))
        });
        if writing {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the restore never started writing"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    (child, restored)
}

/// A restore killed outright leaves no partial file under a restored name: at most its
/// temporary file (`.big.coffer-<random>`).
#[test]
fn a_killed_restore_leaves_no_partial_file_under_its_name() {
    let env = Env::new();
    let (mut child, restored) = restore_in_progress(&env);
    child.kill().unwrap();
    child.wait().unwrap();
    let names: Vec<String> = fs::read_dir(&restored)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    match fs::metadata(restored.join("big")) {
        // Killed just after it completed: then it is whole.
        Ok(m) => assert_eq!(
            m.len(),
            96 << 20,
            "a partial file under its name: {names:?}"
        ),
        Err(_) => assert!(
            names.iter().all(|n| n.starts_with(".big.coffer-")),
            "{names:?}"
        ),
    }
}

/// An interrupted restore (SIGINT, as Ctrl-C) exits 130 and removes its temporary file.
#[test]
fn an_interrupted_restore_removes_its_temporary_file() {
    let env = Env::new();
    let (child, restored) = restore_in_progress(&env);
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let names: Vec<String> = fs::read_dir(&restored)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    if out.status.code() == Some(0) {
        // It finished before the signal arrived: the file is whole and nothing else is there.
        assert_eq!(names, vec!["big".to_string()]);
        assert_eq!(fs::metadata(restored.join("big")).unwrap().len(), 96 << 20);
    } else {
        assert_eq!(out.status.code(), Some(130));
        assert!(names.is_empty(), "left behind: {names:?}");
    }
}

/// The same for the in-place restore of a configured source (restore_subtree): the planted
/// symlink at the old temporary name and a directory swapped for a symlink while restores run
/// write nothing outside the source's place.
#[test]
fn in_place_restore_of_a_configured_source_follows_no_symlink() {
    require_root!();
    let env = Env::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    env.init();
    let www = env.path("app/www");
    fs::create_dir_all(www.join("sub")).unwrap();
    fs::write(www.join("index.php"), "new\n").unwrap();
    for i in 0..200 {
        fs::write(www.join(format!("sub/f{i:03}")), format!("file {i}\n")).unwrap();
    }
    for p in [www.clone(), www.join("sub"), www.join("index.php")] {
        chown(&p, NOBODY, NOBODY);
    }
    let config = env.path("coffer.toml");
    fs::write(
        &config,
        format!(
            "repository = \"{}\"\n[sources.www]\nkind = \"path\"\npath = \"{}\"\n",
            env.repo,
            www.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    env.run(&["--config", config, "backup"]).ok();
    let victim = victim(&env);
    as_nobody(&format!(
        "ln -s '{}' '{}'",
        victim.display(),
        www.join(".index.php.coffer-restore").display()
    ));
    env.run(&["--config", config, "restore", "latest", "--overwrite"])
        .ok();
    assert_victim_unchanged(&victim);
    assert_eq!(fs::read(www.join("index.php")).unwrap(), b"new\n");

    let outside = env.path("outside");
    fs::create_dir(&outside).unwrap();
    fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
    let describe = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.uid(), m.gid(), m.mode(), m.mtime(), m.mtime_nsec())
    };
    let outside_before = describe(&outside);
    let swapper = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(format!(
            "cd '{www}' && i=0; while :; do i=$((i+1)); mv -T sub moved.$i 2>/dev/null; \
             ln -s '{out}' sub 2>/dev/null; rm -f sub 2>/dev/null; done",
            www = www.display(),
            out = outside.display()
        ))
        .spawn()
        .unwrap();
    let mut swapper = KillOnDrop(swapper);
    for run in 0..30 {
        let out = env.run(&["--config", config, "restore", "latest", "--overwrite"]);
        assert!(
            out.code == 0 || out.code == 1,
            "exit {}: {}",
            out.code,
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        let written: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(written.is_empty(), "run {run} wrote outside: {written:?}");
        assert_eq!(
            describe(&outside),
            outside_before,
            "run {run} changed outside"
        );
    }
    swapper.0.kill().unwrap();
    let _ = swapper.0.wait();
    assert_victim_unchanged(&victim);
}

//! No leftovers after a crash (issue 17, item 3): a restore removes the temporary files a
//! killed restore left in the directories it restores into, and says how many; a drill
//! removes the scratch directories of drills that died, never a running drill's.

use coffer_e2e::{Env, Run};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A process id above any Linux pid_max (2^22): no such process runs.
const DEAD_PID: u32 = i32::MAX as u32;

/// A repository with one snapshot of `src/` (a file at the top and one in `src/sub/`).
fn backed_up() -> Env {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), "a\n").unwrap();
    fs::write(src.join("sub/b.txt"), "b\n").unwrap();
    env.run(&["backup", src.to_str().unwrap()]).ok();
    env
}

fn leftover(dir: &Path, name: &str, pid: u32) -> std::path::PathBuf {
    let path = dir.join(format!(".{name}.coffer-tmp-{pid}-00000000000000aa"));
    fs::write(&path, "partial").unwrap();
    path
}

#[test]
fn a_restore_removes_a_killed_restores_temporary_files_and_says_so() {
    let env = backed_up();
    let tgt = env.path("tgt");
    let run = |overwrite: bool| -> Run {
        let mut args = vec!["restore", "latest", "--target", tgt.to_str().unwrap()];
        if overwrite {
            args.push("--overwrite");
        }
        env.run(&args)
    };
    let out = run(false).ok();
    assert!(!out.stdout.contains("leftover"), "{}", out.stdout);
    let src = env.path("src");
    let restored = tgt.join(src.strip_prefix("/").unwrap());
    // What a SIGKILLed restore leaves: temporary files of a process that no longer runs, in
    // the target's directories.
    let dead_top = leftover(&restored, "a.txt", DEAD_PID);
    let dead_sub = leftover(&restored.join("sub"), "b.txt", DEAD_PID);
    // Kept: a running process's temporary file (a restore going on now), a symlink with a
    // dead process's name, an ordinary file that only looks similar.
    let live = leftover(&restored, "a.txt", std::process::id());
    let outside = env.path("outside");
    fs::write(&outside, "keep").unwrap();
    let link = restored.join(format!(".x.coffer-tmp-{DEAD_PID}-00000000000000bb"));
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let similar = restored.join(".a.txt.coffer-tmp-00000000000000aa");
    fs::write(&similar, "mine").unwrap();
    let out = run(true).ok();
    assert!(
        out.stdout
            .contains("removed 2 leftover temporary files (.NAME.coffer-tmp-PID-*) of an interrupted earlier restore"),
        "{}",
        out.stdout
    );
    assert!(!dead_top.exists() && !dead_sub.exists());
    assert!(live.exists());
    assert!(fs::symlink_metadata(&link).is_ok());
    assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
    assert_eq!(fs::read_to_string(&similar).unwrap(), "mine");
    assert_eq!(fs::read_to_string(restored.join("a.txt")).unwrap(), "a\n");
    assert_eq!(
        fs::read_to_string(restored.join("sub/b.txt")).unwrap(),
        "b\n"
    );
    // Nothing left: nothing said.
    fs::remove_file(&live).unwrap();
    let out = run(true).ok();
    assert!(!out.stdout.contains("leftover"), "{}", out.stdout);
}

#[test]
fn a_drill_removes_dead_drills_scratch_directories_and_keeps_live_ones() {
    let mut env = backed_up();
    let scratch = env.path("scratch");
    fs::create_dir(&scratch).unwrap();
    let plant = |pid: u32, random: &str| {
        let dir = scratch.join(format!("coffer-drill-{pid}-{random}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("restored.txt"), "data").unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        dir
    };
    let dead = plant(DEAD_PID, "00000000000000aa");
    let live = plant(std::process::id(), "00000000000000bb");
    // Through TMPDIR, the default scratch parent.
    env.extra_env
        .push(("TMPDIR".into(), scratch.to_string_lossy().into_owned()));
    let out = env.run(&["drill", "--no-record"]).ok();
    assert!(
        out.stdout.contains(&format!(
            "removed the scratch directory {} of an earlier drill that died",
            dead.display()
        )),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("drill passed"), "{}", out.stdout);
    assert!(!dead.exists());
    assert!(
        live.join("restored.txt").exists(),
        "a running drill's directory is kept"
    );
    // The drill's own directory is gone too: only the live one is left.
    let left: Vec<_> = fs::read_dir(&scratch)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, vec![live.clone()]);
    // With --scratch-dir and --json: the removed directory is listed.
    let dead = plant(DEAD_PID, "00000000000000cc");
    let out = env
        .run(&[
            "drill",
            "--no-record",
            "--json",
            "--scratch-dir",
            scratch.to_str().unwrap(),
        ])
        .ok();
    let json: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        json["stale_scratch_removed"],
        serde_json::json!([dead.display().to_string()])
    );
    assert!(!dead.exists());
    assert!(live.exists());
}

/// The names below `dir` (recursively) that hold `.coffer-tmp-`.
fn temp_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(temp_files(&path));
        } else if entry.file_name().to_string_lossy().contains(".coffer-tmp-") {
            out.push(path);
        }
    }
    out
}

/// Whether process `pid` holds an unnamed file (`O_TMPFILE`) open in `dir`: /proc shows its
/// descriptor as `DIR/#INODE (deleted)`.
fn holds_unnamed_file_in(pid: u32, dir: &Path) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let prefix = format!("{}/#", dir.display());
    fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .any(|target| {
            let target = target.to_string_lossy();
            target.starts_with(&prefix) && target.ends_with(" (deleted)")
        })
}

/// Kills `child` (SIGKILL: no clean-up) as soon as `ready` says so; panics if it ends first.
fn kill_when(child: &mut std::process::Child, what: &str, mut ready: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    loop {
        if ready() {
            child.kill().unwrap();
            child.wait().unwrap();
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the restore ended ({status}) before {what}");
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "not within a minute: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// A repository with one snapshot of a 96 MiB file (long enough to write that a restore can be
/// killed in the middle); returns it, the file's bytes, the restore target and where the file
/// restores to.
fn big_file_backed_up() -> (Env, Vec<u8>, PathBuf, PathBuf) {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let big = coffer_e2e::pseudo_random(17, 96 << 20);
    fs::write(src.join("big.bin"), &big).unwrap();
    env.run(&["backup", src.to_str().unwrap()]).ok();
    let tgt = env.path("tgt");
    let restored = tgt.join(src.strip_prefix("/").unwrap()).join("big.bin");
    (env, big, tgt, restored)
}

/// `restore latest --target tgt` (with `--overwrite` if asked), started and not waited for.
fn spawn_restore(env: &Env, tgt: &Path, overwrite: bool) -> std::process::Child {
    let mut args = vec!["restore", "latest", "--target", tgt.to_str().unwrap()];
    if overwrite {
        args.push("--overwrite");
    }
    env.cmd(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_new_file_is_written_unnamed_so_a_killed_restore_leaves_nothing_behind() {
    let (env, big, tgt, restored) = big_file_backed_up();
    let dir = restored.parent().unwrap().to_path_buf();
    let mut child = spawn_restore(&env, &tgt, false);
    let pid = child.id();
    // Killed while it writes the file, which has no name yet.
    kill_when(&mut child, "its unnamed file was seen", || {
        holds_unnamed_file_in(pid, &dir)
    });
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.is_empty(), "the killed restore left {names:?}");
    let out = env
        .run(&["restore", "latest", "--target", tgt.to_str().unwrap()])
        .ok();
    assert!(!out.stdout.contains("leftover"), "{}", out.stdout);
    assert_eq!(fs::read(&restored).unwrap(), big);
}

#[test]
fn an_overwriting_restore_killed_while_writing_leaves_the_old_file_and_a_temporary_one_the_next_removes(
) {
    let (env, big, tgt, restored) = big_file_backed_up();
    fs::create_dir_all(restored.parent().unwrap()).unwrap();
    fs::write(&restored, "the old content").unwrap();
    // A file replaced (--overwrite) is written under a temporary name and renamed over the old
    // one: kill the restore (SIGKILL: no clean-up) as soon as that name appears.
    let mut child = spawn_restore(&env, &tgt, true);
    let mut left = Vec::new();
    kill_when(&mut child, "its temporary file was seen", || {
        left = temp_files(&tgt);
        !left.is_empty()
    });
    assert_eq!(
        fs::read_to_string(&restored).unwrap(),
        "the old content",
        "the old file is whole after the kill"
    );
    assert_eq!(
        temp_files(&tgt),
        left,
        "the killed restore's temporary file is left"
    );
    let out = env
        .run(&[
            "restore",
            "latest",
            "--overwrite",
            "--target",
            tgt.to_str().unwrap(),
        ])
        .ok();
    assert!(
        out.stdout
            .contains("removed 1 leftover temporary file (.NAME.coffer-tmp-PID-*)"),
        "{}",
        out.stdout
    );
    assert!(temp_files(&tgt).is_empty());
    assert_eq!(fs::read(&restored).unwrap(), big);
}

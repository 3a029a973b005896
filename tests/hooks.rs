//! `[hooks]`: before- and after-hooks of backup and restore run in order with the documented
//! environment, their output kept out of `--json`; a failing or timed-out before-hook stops the
//! operation with nothing saved or changed (exit 15); a failing after-hook exits 1 with the
//! backup saved.

use coffer_e2e::Env;
use std::path::PathBuf;

struct Setup {
    env: Env,
    config: PathBuf,
    log: PathBuf,
}

/// A hook line appending its name and environment to the log.
fn logging(name: &str) -> String {
    format!(
        "echo \"{name} hook=$COFFER_HOOK sources=$COFFER_SOURCES snapshot=${{COFFER_SNAPSHOT_ID:-none}} \
         target=${{COFFER_RESTORE_TARGET-unset}} status=${{COFFER_STATUS:-none}} \
         code=${{COFFER_EXIT_CODE:-none}} password=${{COFFER_PASSWORD:-none}}\" >> \"$LOG\"; \
         echo \"{name} says hello on stdout\""
    )
}

impl Setup {
    fn new() -> Setup {
        let mut env = Env::new();
        let log = env.path("hooks.log");
        env.extra_env
            .push(("LOG".into(), log.to_string_lossy().into_owned()));
        env.init();
        std::fs::create_dir_all(env.path("app/files")).unwrap();
        std::fs::write(env.path("app/files/a.txt"), "a").unwrap();
        std::fs::write(env.path("app/.env"), "SECRET=1\n").unwrap();
        let config = env.path("coffer.toml");
        let s = Setup { env, config, log };
        s.write_config(&[
            ("before-backup", logging("before-backup")),
            ("after-backup", logging("after-backup")),
            ("before-restore", logging("before-restore")),
            ("after-restore", logging("after-restore")),
        ]);
        s
    }

    fn write_config(&self, hooks: &[(&str, String)]) {
        let mut text = format!(
            "repository = \"{}\"\n\n[sources.files]\nkind = \"path\"\npath = \"app/files\"\n\n\
             [sources.env]\nkind = \"path\"\npath = \"app/.env\"\n\n[hooks]\ntimeout = \"2s\"\n",
            self.env.repo
        );
        for (name, line) in hooks {
            text.push_str(&format!("{name} = {}\n", toml_string(line)));
        }
        std::fs::write(&self.config, text).unwrap();
    }

    fn coffer(&self, args: &[&str]) -> coffer_e2e::Run {
        let mut all = vec!["--config", self.config.to_str().unwrap()];
        all.extend_from_slice(args);
        self.env.run(&all)
    }

    /// The log's lines, and the log emptied.
    fn take_log(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_file(&self.log);
        text.lines().map(str::to_string).collect()
    }
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn hooks_run_in_order_with_the_documented_environment() {
    let s = Setup::new();
    let run = s.coffer(&["backup", "--json"]).ok();
    // Hook output goes to stderr; stdout is the JSON alone.
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let id = report["id"].as_str().unwrap().to_string();
    assert!(
        run.stderr.contains("before-backup says hello on stdout"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("after-backup says hello on stdout"),
        "{}",
        run.stderr
    );
    assert_eq!(
        s.take_log(),
        [
            "before-backup hook=before-backup sources=env files snapshot=none target=unset \
             status=none code=none password=none"
                .to_string(),
            format!(
                "after-backup hook=after-backup sources=env files snapshot={id} target=unset \
                 status=success code=0 password=none"
            ),
        ]
    );

    let target = s.env.path("restored");
    let run = s
        .coffer(&[
            "restore",
            "latest",
            "--only",
            "env",
            "--target",
            target.to_str().unwrap(),
        ])
        .ok();
    assert!(
        run.stderr.contains("after-restore says hello"),
        "{}",
        run.stderr
    );
    let t = target.display();
    assert_eq!(
        s.take_log(),
        [
            format!(
                "before-restore hook=before-restore sources=env snapshot={id} target={t} \
                 status=none code=none password=none"
            ),
            format!(
                "after-restore hook=after-restore sources=env snapshot={id} target={t} \
                 status=success code=0 password=none"
            ),
        ]
    );
    assert!(target
        .join(s.env.path("app/.env").strip_prefix("/").unwrap())
        .exists());
    // A dry run changes nothing and runs no hook.
    s.coffer(&["restore", "latest", "--dry-run"]).ok();
    assert!(s.take_log().is_empty());
}

#[test]
fn a_failing_before_hook_saves_nothing_and_a_failing_after_hook_exits_1() {
    let s = Setup::new();
    s.write_config(&[
        ("before-backup", "echo before >> \"$LOG\"; exit 7".into()),
        ("after-backup", logging("after-backup")),
    ]);
    let run = s.coffer(&["backup"]).expect_code(15);
    assert!(
        run.stderr.contains("before-backup hook failed"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("nothing was saved"), "{}", run.stderr);
    assert!(s.env.snapshots().is_empty());
    // The operation did not start: no after-hook either.
    assert_eq!(s.take_log(), ["before"]);

    // One that does not finish within the timeout (2 s) is stopped: the same.
    s.write_config(&[("before-backup", "sleep 60".into())]);
    let started = std::time::Instant::now();
    let run = s.coffer(&["backup"]).expect_code(15);
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
    assert!(run.stderr.contains("timeout"), "{}", run.stderr);
    assert!(s.env.snapshots().is_empty());

    // A failing after-hook: reported, exit 1, the snapshot saved.
    s.write_config(&[
        ("before-backup", "true".into()),
        ("after-backup", "echo after >> \"$LOG\"; exit 3".into()),
    ]);
    let run = s.coffer(&["backup"]).expect_code(1);
    assert!(
        run.stderr.contains("after-backup hook failed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("the backup was saved"),
        "{}",
        run.stderr
    );
    assert_eq!(s.env.snapshots().len(), 1);
    assert_eq!(s.take_log(), ["after"]);

    // A failing before-restore hook changes nothing.
    s.write_config(&[("before-restore", "exit 1".into())]);
    let target = s.env.path("restored");
    let run = s
        .coffer(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect_code(15);
    assert!(
        run.stderr.contains("before-restore hook failed"),
        "{}",
        run.stderr
    );
    assert!(!target.exists());

    // A failed restore still runs the after-hook, which learns it failed.
    s.write_config(&[("after-restore", logging("after-restore"))]);
    std::fs::create_dir_all(&target).unwrap();
    let blocker = target.join(s.env.path("app/.env").strip_prefix("/").unwrap());
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, "already here").unwrap();
    s.coffer(&["restore", "latest", "--target", target.to_str().unwrap()])
        .expect_code(1);
    let log = s.take_log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].contains("status=failure code=1"), "{log:?}");

    // A bad timeout is a usage error naming it.
    std::fs::write(
        &s.config,
        format!(
            "repository = \"{}\"\n[hooks]\ntimeout = \"soon\"\n",
            s.env.repo
        ),
    )
    .unwrap();
    let run = s.coffer(&["snapshots"]).expect_code(2);
    assert!(run.stderr.contains("[hooks] timeout"), "{}", run.stderr);
}

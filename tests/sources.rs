//! Configured backups without a database: command sources, per-source excludes, config errors.

use coffer_e2e::Env;
use serde_json::Value;

fn write_config(env: &Env, body: &str) -> String {
    let path = env.path("coffer.toml");
    std::fs::write(&path, format!("repository = \"{}\"\n{body}", env.repo)).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn command_sources_and_per_source_excludes_go_into_one_snapshot() {
    let env = Env::new();
    env.init();
    std::fs::create_dir_all(env.path("app/files")).unwrap();
    std::fs::write(env.path("app/files/keep.txt"), "keep").unwrap();
    std::fs::write(env.path("app/files/skip.tmp"), "skip").unwrap();
    let config = write_config(
        &env,
        r#"
[sources.files]
kind = "path"
path = "app/files"
excludes = ["*.tmp"]

[sources.sqlite]
kind = "command"
command = ["sh", "-c", "printf 'CREATE TABLE t(x);\n'"]
file-name = "app.sql"
"#,
    );
    let out = env.run(&["--config", &config, "backup", "--json"]).ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let sources = v["snapshot"]["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    let cmd = sources.iter().find(|s| s["name"] == "sqlite").unwrap();
    assert_eq!(cmd["kind"], "command");
    assert_eq!(cmd["tree_path"], "/sqlite/app.sql");
    assert_eq!(cmd["stream"]["bytes"], 19);
    let dump = env.run(&["dump", "latest", "/sqlite/app.sql"]).ok();
    assert_eq!(dump.stdout, "CREATE TABLE t(x);\n");
    let ls = env.run(&["ls", "latest"]).ok();
    assert!(ls.stdout.contains("keep.txt"), "{}", ls.stdout);
    assert!(!ls.stdout.contains("skip.tmp"), "{}", ls.stdout);

    // Restore under --target: the file source at its path, the command's file at its tree path.
    let target = env.path("r");
    env.run(&[
        "--config",
        &config,
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
    ])
    .ok();
    let files = env.path("app/files").canonicalize().unwrap();
    let restored = target.join(files.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(restored.join("keep.txt")).unwrap(), b"keep");
    assert!(!restored.join("skip.tmp").exists());
    assert_eq!(
        std::fs::read(target.join("sqlite/app.sql")).unwrap(),
        b"CREATE TABLE t(x);\n"
    );
}

#[test]
fn a_failing_command_source_saves_nothing_and_names_the_source() {
    let env = Env::new();
    env.init();
    std::fs::write(env.path("keep.txt"), "keep").unwrap();
    let config = write_config(
        &env,
        r#"
[sources.files]
kind = "path"
path = "keep.txt"

[sources.mysql]
kind = "command"
command = ["sh", "-c", "echo partial; echo 'access denied for user' >&2; exit 3"]
"#,
    );
    let run = env.run(&["--config", &config, "backup"]).expect_code(1);
    assert!(run.stderr.contains("source \"mysql\""), "{}", run.stderr);
    assert!(
        run.stderr.contains("access denied for user"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("no snapshot was saved"),
        "{}",
        run.stderr
    );
    assert!(env.snapshots().is_empty());
}

#[test]
fn config_errors_name_the_key_and_the_file() {
    let env = Env::new();
    let config = write_config(&env, "[retention]\nkeep-dayly = 7\n");
    let run = env.run(&["--config", &config, "snapshots"]).expect_code(2);
    assert!(run.stderr.contains("keep-dayly"), "{}", run.stderr);
    assert!(run.stderr.contains(&config), "{}", run.stderr);
    // A named file that does not exist is an error, not silently ignored.
    let missing = env.path("nope.toml");
    let run = env
        .run(&["--config", missing.to_str().unwrap(), "snapshots"])
        .expect_code(2);
    assert!(run.stderr.contains("nope.toml"), "{}", run.stderr);
}

#[test]
fn flags_and_environment_win_over_the_config_file() {
    let env = Env::new();
    env.init();
    // The file names a repository that does not exist; COFFER_REPO (set by the harness) wins.
    let path = env.path("coffer.toml");
    std::fs::write(&path, "repository = \"/nonexistent/repo\"\n").unwrap();
    env.run(&["--config", path.to_str().unwrap(), "snapshots"])
        .ok();
    // Without COFFER_REPO the file's repository is used (and does not exist: exit 10).
    let out = env
        .cmd(&["--config", path.to_str().unwrap(), "snapshots"])
        .env_remove("COFFER_REPO")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --repo beats both.
    let other = env.path("other");
    let out = env
        .cmd(&[
            "--config",
            path.to_str().unwrap(),
            "--repo",
            other.to_str().unwrap(),
            "snapshots",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&out.stderr).contains("other"));
}

#[test]
fn sources_go_back_to_where_they_came_from() {
    let env = Env::new();
    env.init();
    std::fs::create_dir_all(env.path("app/files/deep")).unwrap();
    std::fs::write(env.path("app/files/deep/a.txt"), "a").unwrap();
    std::fs::write(env.path("app/.env"), "SECRET=1\n").unwrap();
    let config = write_config(
        &env,
        "[sources.files]\nkind = \"path\"\npath = \"app/files\"\n\
         [sources.env]\nkind = \"path\"\npath = \"app/.env\"\n",
    );
    env.run(&["--config", &config, "backup"]).ok();

    // The host lost its data: restore puts every source back at its path.
    std::fs::remove_dir_all(env.path("app")).unwrap();
    let dry = env
        .run(&["--config", &config, "restore", "latest", "--dry-run"])
        .ok();
    assert!(
        dry.stdout.contains("would restore source files"),
        "{}",
        dry.stdout
    );
    assert!(!env.path("app").exists(), "--dry-run wrote something");
    env.run(&["--config", &config, "restore", "latest"]).ok();
    assert_eq!(
        std::fs::read(env.path("app/files/deep/a.txt")).unwrap(),
        b"a"
    );
    assert_eq!(std::fs::read(env.path("app/.env")).unwrap(), b"SECRET=1\n");

    // Restoring again over the existing files needs --overwrite; refused, nothing changes.
    std::fs::write(env.path("app/.env"), "SECRET=2\n").unwrap();
    let run = env
        .run(&["--config", &config, "restore", "latest"])
        .expect_code(1);
    assert!(run.stderr.contains("--overwrite"), "{}", run.stderr);
    assert_eq!(std::fs::read(env.path("app/.env")).unwrap(), b"SECRET=2\n");
    env.run(&[
        "--config",
        &config,
        "restore",
        "latest",
        "--only",
        "env",
        "--overwrite",
    ])
    .ok();
    assert_eq!(std::fs::read(env.path("app/.env")).unwrap(), b"SECRET=1\n");
}

#[test]
fn forget_takes_its_policy_from_the_config_unless_flags_give_one() {
    let env = Env::new();
    env.init();
    std::fs::create_dir_all(env.path("app")).unwrap();
    std::fs::write(env.path("app/f"), "x").unwrap();
    let config = write_config(
        &env,
        r#"
[sources.files]
kind = "path"
path = "app"

[retention]
keep-last = 2
timezone = "Europe/Berlin"
"#,
    );
    for day in ["2026-01-01", "2026-01-02", "2026-01-03"] {
        let time = format!("{day}T12:00:00+00:00");
        env.run(&["--config", &config, "backup", "--time", &time])
            .ok();
    }
    let decisions = |args: &[&str]| -> Vec<(bool, String)> {
        let mut all = vec!["--config", &config, "forget", "--dry-run", "--json"];
        all.extend_from_slice(args);
        let out = env.run(&all).ok();
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        let mut list = Vec::new();
        for group in v["groups"].as_array().unwrap() {
            for d in group["snapshots"].as_array().unwrap() {
                list.push((d["keep"].as_bool().unwrap(), d["reasons"].to_string()));
            }
        }
        list
    };
    // From the config: keep-last 2 of 3.
    let from_config = decisions(&[]);
    assert_eq!(
        from_config.iter().filter(|(keep, _)| *keep).count(),
        2,
        "{from_config:?}"
    );
    assert!(from_config[0].1.contains("last 1/2"), "{from_config:?}");
    assert!(from_config.len() == 3);
    let out = env
        .run(&["--config", &config, "forget", "--dry-run", "--json"])
        .ok();
    assert!(
        out.stdout.contains("Europe/Berlin"),
        "the config's time zone is used: {}",
        out.stdout
    );
    // A flag replaces the config's rules.
    let from_flags = decisions(&["--keep-last", "1"]);
    assert_eq!(
        from_flags.iter().filter(|(keep, _)| *keep).count(),
        1,
        "{from_flags:?}"
    );
    // A bad [retention] is a usage error naming the key.
    let bad = write_config(&env, "[retention]\nkeep-within = \"30x\"\n");
    let out = env
        .run(&["--config", &bad, "forget", "--dry-run"])
        .expect_code(2);
    assert!(out.stderr.contains("keep-within"), "{}", out.stderr);
}

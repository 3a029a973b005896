//! Secrets and modes (issue 13, item 7): child processes never see Coffer's own `COFFER_*`
//! variables (the repository password among them), local repositories are private to their
//! owner (or to the group the owner chose), and credentials in an S3 endpoint URL never reach a
//! message.

use coffer_e2e::{Env, PgCluster};
use std::path::Path;

/// Variables set for coffer besides `COFFER_REPO` and `COFFER_PASSWORD` (set by `Env::cmd`):
/// one Coffer reads and one it does not; no child may see any of them.
const OWN: &[(&str, &str)] = &[
    ("COFFER_FROM_PASSWORD", "from-password-do-not-leak"),
    ("COFFER_SOMETHING_ELSE", "other-value-do-not-leak"),
];

/// Panics unless `listing` (the output of `env` in a child) has no `COFFER_*` variable and
/// none of the secret values, but has PATH and the given variable that must pass through.
#[track_caller]
fn assert_clean_child_env(what: &str, listing: &str, passes: &str) {
    let lines: Vec<&str> = listing.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("PATH=")),
        "{what}: no PATH\n{listing}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&format!("{passes}="))),
        "{what}: no {passes}\n{listing}"
    );
    for line in &lines {
        assert!(!line.starts_with("COFFER_"), "{what} saw {line}\n{listing}");
    }
    for secret in ["correct horse battery staple", OWN[0].1, OWN[1].1] {
        assert!(!listing.contains(secret), "{what} saw {secret}\n{listing}");
    }
}

/// Runs coffer in `env` with the extra `COFFER_*` variables and `KEEP_ME` set.
fn run_with_own_variables(env: &Env, args: &[&str]) -> coffer_e2e::Run {
    let mut cmd = env.cmd(args);
    cmd.envs(OWN.iter().copied()).env("KEEP_ME", "kept");
    let out = cmd.output().expect("spawn coffer");
    coffer_e2e::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        raw_stdout: out.stdout,
    }
}

#[test]
fn stdin_commands_and_command_sources_see_no_coffer_variables() {
    let env = Env::new();
    env.init();
    // `--stdin-from-command`: the child's environment is what it stores.
    run_with_own_variables(
        &env,
        &["backup", "--stdin-from-command", "env.txt", "--", "env"],
    )
    .ok();
    let stored = env.run(&["dump", "latest", "env.txt"]).ok().stdout;
    assert_clean_child_env("--stdin-from-command", &stored, "KEEP_ME");

    // A configured command source.
    let config = env.path("coffer.toml");
    std::fs::write(
        &config,
        format!(
            "repository = \"{}\"\n[sources.envdump]\nkind = \"command\"\ncommand = [\"env\"]\nfile-name = \"env.txt\"\n",
            env.repo
        ),
    )
    .unwrap();
    run_with_own_variables(&env, &["--config", config.to_str().unwrap(), "backup"]).ok();
    let stored = env.run(&["dump", "latest", "/envdump/env.txt"]).ok().stdout;
    assert_clean_child_env("command source", &stored, "KEEP_ME");
}

#[test]
fn the_password_command_sees_no_coffer_variables() {
    let env = Env::new();
    env.init();
    let log = env.path("password-command.env");
    let mut cmd = env.cmd(&["snapshots"]);
    cmd.env_remove("COFFER_PASSWORD")
        .envs(OWN.iter().copied())
        .env("KEEP_ME", "kept")
        .env(
            "COFFER_PASSWORD_COMMAND",
            format!("env > '{}'; echo '{}'", log.display(), env.password),
        );
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = std::fs::read_to_string(&log).unwrap();
    assert_clean_child_env("password command", &listing, "KEEP_ME");
}

/// A command prefix (written to `script`) that writes its environment to `DIR/env.<pid>` and
/// runs the rest.
fn env_logging_prefix(script: &Path, dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(
        script,
        format!("#!/bin/sh\nenv > '{}/env.'$$\nexec \"$@\"\n", dir.display()),
    )
    .unwrap();
    std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn postgres_programs_see_no_coffer_variables_but_their_pg_environment() {
    let pg = PgCluster::start();
    let mut env = Env::new();
    env.extra_env = pg.env();
    env.init();
    pg.create_db("app");
    pg.psql(
        "app",
        "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2);",
    );
    let logs = env.path("logs");
    std::fs::create_dir(&logs).unwrap();
    let prefix = env.path("log-env");
    env_logging_prefix(&prefix, &logs);
    let config = env.path("coffer.toml");
    std::fs::write(
        &config,
        format!(
            "repository = \"{}\"\n[sources.db]\nkind = \"postgres\"\ndatabase = \"app\"\ncommand-prefix = [\"{}\"]\n",
            env.repo,
            prefix.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    run_with_own_variables(&env, &["--config", config, "backup"]).ok();
    // In-place restore of the database (pg_restore behind the prefix too).
    run_with_own_variables(
        &env,
        &[
            "--config", config, "restore", "latest", "--only", "db", "--force",
        ],
    )
    .ok();
    assert_eq!(pg.psql("app", "SELECT count(*) FROM t").trim(), "2");
    let mut seen = 0;
    for entry in std::fs::read_dir(&logs).unwrap() {
        let path = entry.unwrap().path();
        let listing = std::fs::read_to_string(&path).unwrap();
        assert_clean_child_env(&path.display().to_string(), &listing, "PGHOST");
        seen += 1;
    }
    // psql (the exporting session), pg_dump, pg_restore --list, and the restore's programs.
    assert!(seen >= 4, "only {seen} programs ran behind the prefix");
}

/// Runs coffer as `env.cmd(args)` would, under `umask`.
fn run_with_umask(env: &Env, umask: &str, args: &[&str]) -> std::process::Output {
    let template = env.cmd(args);
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {umask} && exec \"$@\""))
        .arg("sh")
        .arg(template.get_program())
        .args(template.get_args())
        .env_clear()
        .stdin(std::process::Stdio::null());
    for (name, value) in template.get_envs() {
        if let Some(value) = value {
            cmd.env(name, value);
        }
    }
    let out = cmd.output().expect("spawn coffer");
    assert!(
        out.status.success(),
        "coffer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every file and directory below `root` (the root itself included) with its permission bits.
fn modes_below(root: &Path) -> Vec<(std::path::PathBuf, bool, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
        out.push((path, meta.is_dir(), meta.permissions().mode() & 0o7777));
    }
    out
}

/// init and a backup of a small tree under `umask`, then the repository's modes.
fn init_and_back_up(env: &Env, umask: &str) -> Vec<(std::path::PathBuf, bool, u32)> {
    let data = env.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/a.txt"), "private").unwrap();
    run_with_umask(
        env,
        umask,
        &[
            "init",
            "--insecure-kdf",
            "--argon2-memory-kib",
            "64",
            "--argon2-iterations",
            "1",
        ],
    );
    run_with_umask(env, umask, &["backup", data.to_str().unwrap()]);
    let modes = modes_below(Path::new(&env.repo));
    let names: Vec<String> = modes
        .iter()
        .map(|(p, _, _)| p.display().to_string())
        .collect();
    for kind in ["/keys/", "/data/", "/index/", "/snapshots/", "/config"] {
        assert!(
            names.iter().any(|n| n.contains(kind)),
            "no {kind}: {names:?}"
        );
    }
    modes
}

#[test]
fn a_new_local_repository_is_private_to_its_owner() {
    let env = Env::new();
    let modes = init_and_back_up(&env, "022");
    for (path, is_dir, mode) in &modes {
        let wanted = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, wanted, "{} is {mode:o}", path.display());
    }
}

#[test]
fn a_group_readable_repository_directory_gives_its_group_access() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    std::fs::create_dir(&env.repo).unwrap();
    std::fs::set_permissions(&env.repo, std::fs::Permissions::from_mode(0o750)).unwrap();
    let modes = init_and_back_up(&env, "022");
    for (path, is_dir, mode) in &modes {
        let wanted = if *is_dir { 0o750 } else { 0o640 };
        assert_eq!(*mode, wanted, "{} is {mode:o}", path.display());
    }
}

#[test]
fn credentials_in_an_s3_endpoint_url_never_reach_a_message() {
    // Nothing listens on the port: every request fails at once (no retries) with an error
    // that names the URL.
    let port = coffer_e2e::free_port();
    let endpoint = format!("http://urluser:s3cr3t-in-url@127.0.0.1:{port}");
    let base = [
        ("AWS_ACCESS_KEY_ID", "AKIACOFFERTEST"),
        ("AWS_SECRET_ACCESS_KEY", "not-the-url-secret"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let option = format!("endpoint={endpoint}");
    let cases: Vec<(Vec<&str>, Option<&str>)> = vec![
        (vec!["-o", &option], None),
        (vec![], Some("AWS_ENDPOINT")),
        (vec![], Some("AWS_ENDPOINT_URL")),
    ];
    for (options, variable) in cases {
        for command in [
            &["snapshots"][..],
            &[
                "init",
                "--insecure-kdf",
                "--argon2-memory-kib",
                "64",
                "--argon2-iterations",
                "1",
            ][..],
        ] {
            let mut env = Env::new();
            env.repo = "s3://bucket/repo".into();
            env.extra_env = base
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            if let Some(variable) = variable {
                env.extra_env.push((variable.into(), endpoint.clone()));
            }
            let mut args = options.clone();
            args.extend(["-o", "max_retries=0"]);
            args.extend_from_slice(command);
            let run = env.run(&args).expect_code(1);
            let all = format!("{}{}", run.stdout, run.stderr);
            let what = format!("{args:?} with {variable:?}");
            assert!(all.contains(&format!("127.0.0.1:{port}")), "{what}: {all}");
            assert!(!all.contains("s3cr3t-in-url"), "{what}: {all}");
            assert!(!all.contains("urluser"), "{what}: {all}");
        }
    }
}

#[test]
fn argon2_costs_below_the_floor_are_refused_unless_insecure_kdf() {
    let weak = ["--argon2-memory-kib", "32", "--argon2-iterations", "1"];
    let mut env = Env::new();
    let mut args = vec!["init"];
    args.extend(weak);
    let out = env.run(&args).expect_code(2);
    assert!(
        out.stderr.contains("m=32 KiB t=1") && out.stderr.contains("--insecure-kdf"),
        "{}",
        out.stderr
    );
    assert!(!Path::new(&env.repo).exists(), "nothing is created");
    // 19 MiB with 2 passes is the floor itself: accepted without a word.
    let floor = Env::new();
    let out = floor
        .run(&[
            "init",
            "--argon2-memory-kib",
            "19456",
            "--argon2-iterations",
            "2",
        ])
        .ok();
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);

    args.push("--insecure-kdf");
    let out = env.run(&args).ok();
    assert!(
        out.stderr.contains("warning:") && out.stderr.contains("--insecure-kdf"),
        "{}",
        out.stderr
    );
    let new_pw = env.path("new-password");
    std::fs::write(&new_pw, "second password").unwrap();
    env.extra_env.push((
        "COFFER_NEW_PASSWORD_FILE".into(),
        new_pw.to_string_lossy().into_owned(),
    ));
    let key_add = |extra: &[&str]| env.run(&[["key", "add"].as_slice(), &weak, extra].concat());
    let out = key_add(&[]).expect_code(2);
    assert!(out.stderr.contains("--insecure-kdf"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_dir(Path::new(&env.repo).join("keys"))
            .unwrap()
            .count(),
        1
    );
    key_add(&["--insecure-kdf"]).ok();
    assert_eq!(
        std::fs::read_dir(Path::new(&env.repo).join("keys"))
            .unwrap()
            .count(),
        2
    );
}

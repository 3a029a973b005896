//! `coffer key list | add | remove | passwd` against a real repository: the new password opens
//! it, the old one stops, and the refusals (the last key file; the key in use without
//! `--force`) leave every key file in place.

use coffer_e2e::*;
use serde_json::Value;

const CHEAP: [&str; 5] = [
    "--insecure-kdf",
    "--argon2-memory-kib",
    "64",
    "--argon2-iterations",
    "1",
];

/// Runs coffer with `password` as the password in use and `new` (if any) as the new one.
fn run_as(env: &Env, password: &str, new: Option<&str>, args: &[&str]) -> Run {
    let mut cmd = env.cmd(args);
    cmd.env("COFFER_PASSWORD", password);
    if let Some(new) = new {
        let file = env.path("new-password");
        std::fs::write(&file, format!("{new}\n")).unwrap();
        cmd.env("COFFER_NEW_PASSWORD_FILE", &file);
    }
    let out = cmd.output().expect("spawn coffer");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        raw_stdout: out.stdout,
    }
}

fn keys(env: &Env, password: &str) -> Vec<Value> {
    let out = run_as(env, password, None, &["key", "list", "--json"]).ok();
    serde_json::from_str(&out.stdout).expect("key list json")
}

fn with_cheap<'a>(args: &[&'a str]) -> Vec<&'a str> {
    args.iter().copied().chain(CHEAP).collect()
}

#[test]
fn add_passwd_remove_with_refusals() {
    let env = Env::new();
    env.init();
    let first = env.password.clone();

    // One key file: the one in use; removing it is refused even with --force.
    let listed = keys(&env, &first);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["current"], true);
    for field in ["id", "short_id", "created", "username", "hostname", "kdf"] {
        assert!(
            listed[0].get(field).is_some(),
            "{field} missing: {listed:?}"
        );
    }
    assert_eq!(listed[0]["kdf"]["memory_kib"], 64);
    let first_id = listed[0]["id"].as_str().unwrap().to_string();
    let last = run_as(&env, &first, None, &["key", "remove", &first_id, "--force"]).expect_code(2);
    assert!(last.stderr.contains("last readable key file"), "{last:?}");

    // A second password.
    let added = run_as(
        &env,
        &first,
        Some("second pw"),
        &with_cheap(&["key", "add"]),
    )
    .ok();
    assert!(added.stdout.contains("added key file"), "{added:?}");
    // A weak KDF without --insecure-kdf is refused before anything is asked.
    run_as(
        &env,
        &first,
        Some("x"),
        &["key", "add", "--argon2-memory-kib", "64"],
    )
    .expect_code(2);
    let listed = keys(&env, "second pw");
    assert_eq!(listed.len(), 2, "{listed:?}");
    let second_id = listed.iter().find(|k| k["current"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(second_id, first_id);

    // Removing the key in use needs --force; a bad or unknown id is a usage error.
    let in_use = run_as(&env, &first, None, &["key", "remove", &first_id[..8]]).expect_code(2);
    assert!(in_use.stderr.contains("--force"), "{in_use:?}");
    run_as(&env, &first, None, &["key", "remove", "zz"]).expect_code(2);
    run_as(&env, &first, None, &["key", "remove", "0000000"]).expect_code(2);
    assert_eq!(keys(&env, &first).len(), 2);

    // passwd: the first password is replaced by a third one.
    let changed = run_as(
        &env,
        &first,
        Some("third pw"),
        &with_cheap(&["key", "passwd"]),
    )
    .ok();
    assert!(changed.stdout.contains("password changed"), "{changed:?}");
    run_as(&env, &first, None, &["snapshots"]).expect_code(12);
    run_as(&env, "third pw", None, &["snapshots"]).ok();
    let listed = keys(&env, "third pw");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|k| k["id"] != first_id.as_str()));

    // Removing another key (not the one in use) needs no --force; then it is the last one.
    let removed = run_as(&env, "third pw", None, &["key", "remove", &second_id[..8]]).ok();
    assert!(removed.stdout.contains("removed key file"), "{removed:?}");
    run_as(&env, "second pw", None, &["snapshots"]).expect_code(12);
    let listed = keys(&env, "third pw");
    assert_eq!(listed.len(), 1);
    let third_id = listed[0]["id"].as_str().unwrap().to_string();
    run_as(
        &env,
        "third pw",
        None,
        &["key", "remove", &third_id, "--force"],
    )
    .expect_code(2);
    run_as(&env, "third pw", None, &["snapshots"]).ok();

    // The human list marks the key in use.
    let human = run_as(&env, "third pw", None, &["key", "list"]).ok();
    assert!(
        human.stdout.starts_with(&format!("* {}", &third_id[..8])),
        "{human:?}"
    );
}

#[test]
fn new_passwords_never_come_from_argv() {
    let env = Env::new();
    env.init();
    // Without COFFER_NEW_PASSWORD_FILE and without a terminal there is no new password.
    let out = run_as(&env, &env.password, None, &with_cheap(&["key", "passwd"])).expect_code(2);
    assert!(out.stderr.contains("COFFER_NEW_PASSWORD_FILE"), "{out:?}");
    assert_eq!(keys(&env, &env.password).len(), 1);
}

//! The binary's own contract: help, version and usage errors with their documented exit codes.
//! (Also makes `cargo test --workspace` build the `coffer` binary the end-to-end suite runs.)
// These tests start coffer itself, which may be given COFFER_* variables on purpose.
#![allow(clippy::disallowed_methods)]

use std::process::Command;

fn coffer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(args)
        .env_remove("COFFER_REPO")
        .env_remove("COFFER_PASSWORD")
        .output()
        .unwrap()
}

#[test]
fn help_lists_exit_codes() {
    let out = coffer(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Exit codes",
        "12   wrong password",
        "10   no repository",
        "130  interrupted",
    ] {
        assert!(text.contains(needle), "help lacks {needle:?}:\n{text}");
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(coffer(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(
        coffer(&["snapshots"]).status.code(),
        Some(2),
        "missing --repo is a usage error"
    );
    let out = coffer(&["backup", "--repo", "/nonexistent-coffer-repo"]);
    assert_eq!(out.status.code(), Some(2), "backup with nothing to back up");
}

#[test]
fn missing_repository_exits_10() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("none");
    let out = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["snapshots", "--repo", repo.to_str().unwrap()])
        .env("COFFER_PASSWORD", "x")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no repository at"));
}

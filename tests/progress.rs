//! Progress while a backup or restore runs: `--json` status lines ending with a summary line,
//! and a bar only under a pseudo-terminal (made with `script`), never with `-q` or without one.

use coffer_e2e::*;
use serde_json::Value;
use std::process::{Command, Stdio};

/// A stream that takes a while: 20 MB, a megabyte every tenth of a second.
const SLOW_DUMP: &str =
    "for i in $(seq 20); do head -c 1000000 /dev/urandom; sleep 0.1; done; sleep 0.5";
const SLOW_BYTES: u64 = 20_000_000;

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l:?}")))
        .collect()
}

fn progress_env() -> Env {
    let mut env = Env::new();
    env.extra_env
        .push(("COFFER_PROGRESS_FPS".into(), "10".into()));
    env
}

#[test]
fn json_status_lines_end_with_a_summary() {
    let env = progress_env();
    env.init();
    let run = env
        .run(&[
            "backup",
            "--json",
            "--stdin-from-command",
            "db/slow.dump",
            "--",
            "sh",
            "-c",
            SLOW_DUMP,
        ])
        .ok();
    let all = lines(&run.stdout);
    let (summary, status) = all.split_last().expect("no output");
    assert_eq!(summary["message_type"], "summary", "{summary:#}");
    assert_eq!(summary["id"], env.snapshots()[0]["id"]);
    assert_eq!(summary["snapshot"]["summary"]["total_bytes"], SLOW_BYTES);
    // Over two seconds at ten a second: several status lines, in order.
    assert!(
        status.len() >= 5,
        "{} status lines: {}",
        status.len(),
        run.stdout
    );
    let mut last_bytes = 0;
    for s in status {
        assert_eq!(s["message_type"], "status", "{s:#}");
        assert_eq!(s["action"], "backup");
        for field in [
            "seconds_elapsed",
            "files_done",
            "bytes_done",
            "bytes_per_second",
        ] {
            assert!(s[field].is_u64(), "{field} in {s:#}");
        }
        // Nothing before the first source starts, then the source being read.
        assert!(
            s["current"] == "" || s["current"] == "/db/slow.dump",
            "{s:#}"
        );
        // A backup does not know its total in advance.
        assert!(s.get("total_bytes").is_none(), "{s:#}");
        let bytes = s["bytes_done"].as_u64().unwrap();
        assert!(bytes >= last_bytes && bytes <= SLOW_BYTES, "{s:#}");
        last_bytes = bytes;
    }
    assert!(last_bytes > 0, "no bytes were ever counted: {}", run.stdout);
    assert!(
        status.iter().any(|s| s["current"] == "/db/slow.dump"),
        "{}",
        run.stdout
    );

    // Restore: its status lines (if it lasts long enough for one) know the totals; it ends
    // with the summary of what was restored.
    let target = env.path("restored").display().to_string();
    let run = env
        .run(&["restore", "latest", "--target", &target, "--json"])
        .ok();
    let all = lines(&run.stdout);
    let (summary, status) = all.split_last().expect("no output");
    assert_eq!(summary["message_type"], "summary", "{summary:#}");
    assert_eq!(summary["files"], 1);
    assert_eq!(summary["bytes"], SLOW_BYTES);
    assert_eq!(summary["target"], target);
    for s in status {
        assert_eq!(s["message_type"], "status", "{s:#}");
        assert_eq!(s["total_bytes"], SLOW_BYTES, "{s:#}");
        assert!(s["percent_done"].is_f64(), "{s:#}");
    }
    // -q: the summary alone.
    let target = env.path("restored-quiet").display().to_string();
    let run = env
        .run(&["-q", "restore", "latest", "--target", &target, "--json"])
        .ok();
    assert_eq!(lines(&run.stdout).len(), 1, "{run:?}");
    // A bad rate is a usage error naming the variable.
    let mut bad = Env::new();
    bad.extra_env
        .push(("COFFER_PROGRESS_FPS".into(), "fast".into()));
    bad.init();
    let run = bad
        .run_stdin(&["backup", "--stdin-name", "x"], b"x")
        .expect_code(2);
    assert!(run.stderr.contains("COFFER_PROGRESS_FPS"), "{run:?}");
}

/// Runs `coffer ARGS` under a pseudo-terminal (`script`), returning everything the terminal
/// showed (stdout and stderr together) and the exit code.
fn under_pty(env: &Env, args: &[&str]) -> (String, i32) {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let line = std::iter::once(coffer_bin().display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", env.dir.path())
        .env("TERM", "xterm")
        .env("COFFER_REPO", &env.repo)
        .env("COFFER_PASSWORD", &env.password)
        .env("COFFER_PROGRESS_FPS", "10")
        .stdin(Stdio::null())
        .output()
        .expect("the script command (util-linux) is needed for the pseudo-terminal tests");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn a_bar_under_a_terminal_only() {
    let env = progress_env();
    env.init();
    let backup = [
        "backup",
        "--stdin-from-command",
        "db/slow.dump",
        "--",
        "sh",
        "-c",
        SLOW_DUMP,
    ];
    // At a terminal: the bar names the action and the source, counts files and bytes.
    let (screen, code) = under_pty(&env, &backup);
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("backup"), "{screen}");
    assert!(screen.contains("0 files /db/slow.dump"), "{screen}");
    assert!(screen.contains("MB"), "no byte count drawn: {screen}");
    // The bar is drawn over itself: carriage returns or cursor movement.
    assert!(
        screen.contains('\r') || screen.contains("\x1b["),
        "{screen:?}"
    );
    // With -q at a terminal: nothing at all.
    let mut quiet = vec!["-q"];
    quiet.extend_from_slice(&backup);
    let (screen, code) = under_pty(&env, &quiet);
    assert_eq!(code, 0, "{screen}");
    assert_eq!(screen.trim(), "", "{screen:?}");
    // Restore at a terminal: ends with its usual line, the bar cleared.
    let target = env.path("restored").display().to_string();
    let (screen, code) = under_pty(&env, &["restore", "latest", "--target", &target]);
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("restored snapshot"), "{screen}");
    // Without a terminal (stderr a pipe): no bar, only the usual lines.
    let run = env.run(&backup).ok();
    assert_eq!(run.stderr, "", "{run:?}");
    assert!(!run.stdout.contains('\r'), "{run:?}");
}

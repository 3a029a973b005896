//! Output safety (issue 17, item 6): host names, tags, labels, file names and symlink targets
//! holding control characters, bidirectional overrides or bytes that are not UTF-8 reach human
//! output escaped (`\n`, `\x1b`, `\u{202e}`, `\xff`), so that no listing line can be forged and
//! no escape sequence reaches the terminal; `--json` keeps the exact strings.

use coffer_e2e::Env;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;

const HOST: &str = "evil\x1b[2Jhost";
const TAG: &str = "a\nb";
const LABEL: &str = "note=x\ry\u{9b}31m";

/// Panics unless `out` is free of every byte or character that acts on a terminal or a line:
/// C0 controls other than the line feeds that end lines, DEL, C1 controls, bidirectional
/// overrides and isolates, line and paragraph separators.
#[track_caller]
fn assert_inert(what: &str, out: &[u8]) {
    let text = std::str::from_utf8(out)
        .unwrap_or_else(|e| panic!("{what}: output is not UTF-8 ({e}):\n{out:?}"));
    for (i, c) in text.char_indices() {
        let bad = (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}');
        assert!(!bad, "{what}: raw {c:?} at byte {i} in:\n{text:?}");
    }
}

/// A source tree whose names hold a newline, an escape sequence, a right-to-left override and
/// a byte that is not UTF-8, with a symlink whose target holds an escape sequence.
fn hostile_tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("new\nline"), b"1").unwrap();
    fs::write(src.join("esc\x1b[31mred"), b"2").unwrap();
    fs::write(src.join("invoice\u{202e}fdp.exe"), b"3").unwrap();
    fs::write(src.join(OsStr::from_bytes(b"bad\xffbyte")), b"4").unwrap();
    fs::write(src.join("back\\nslash"), b"5").unwrap();
    std::os::unix::fs::symlink("to\x1b]0;title\x07", src.join("link")).unwrap();
    src
}

#[test]
fn human_output_escapes_stored_strings_and_json_keeps_them() {
    let env = Env::new();
    env.init();
    let src = hostile_tree(&env);
    let src_s = src.to_str().unwrap();
    env.run(&[
        "backup", src_s, "--host", HOST, "--tag", TAG, "--tag", "plain", "--label", LABEL,
    ])
    .ok();

    // snapshots: one header, one snapshot line, one labels line, the count; all escaped.
    let out = env.run(&["snapshots"]).ok();
    assert_inert("snapshots", &out.raw_stdout);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert!(lines[1].contains("evil\\x1b[2Jhost"), "{}", out.stdout);
    assert!(lines[1].contains("a\\nb,plain"), "{}", out.stdout);
    assert!(
        lines[2].contains("labels: note=x\\ry\\u{9b}31m"),
        "{}",
        out.stdout
    );

    let out = env.run(&["snapshots", "latest", "--details"]).ok();
    assert_inert("snapshots --details", &out.raw_stdout);
    assert!(
        out.stdout.contains("  host      evil\\x1b[2Jhost (user "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("  tags      a\\nb, plain"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("  label     note=x\\ry\\u{9b}31m"),
        "{}",
        out.stdout
    );

    // The filters still take the exact strings.
    let out = env.run(&["snapshots", "--host", HOST, "--tag", TAG]).ok();
    assert!(out.stdout.contains("1 snapshot(s)"), "{}", out.stdout);

    // --json: the exact strings.
    let snaps = env.snapshots();
    let s = &snaps[0];
    assert_eq!(s["hostname"], HOST);
    assert_eq!(s["tags"], serde_json::json!([TAG, "plain"]));
    assert_eq!(s["labels"]["note"], "x\ry\u{9b}31m");

    // ls: one line per node, every name shown escaped, the symlink target too.
    let out = env.run(&["ls", "latest"]).ok();
    assert_inert("ls", &out.raw_stdout);
    let json = env.run(&["ls", "latest", "--json"]).ok();
    assert_eq!(
        out.stdout.lines().count(),
        json.stdout.lines().count(),
        "{}",
        out.stdout
    );
    for shown in [
        "/new\\nline",
        "/esc\\x1b[31mred",
        "/invoice\\u{202e}fdp.exe",
        "/bad\\xffbyte",
        "/back\\\\nslash",
        "/link -> to\\x1b]0;title\\x07",
    ] {
        assert!(
            out.stdout.lines().any(|l| l.ends_with(shown)),
            "{shown} not in:\n{}",
            out.stdout
        );
    }
    // ls --json: exact paths (the non-UTF-8 one lossily, as before) and target.
    let entries: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let has = |p: String| entries.iter().any(|e| e["path"] == p.as_str());
    assert!(has(format!("{src_s}/new\nline")), "{}", json.stdout);
    assert!(has(format!("{src_s}/esc\x1b[31mred")), "{}", json.stdout);
    assert!(
        has(format!("{src_s}/invoice\u{202e}fdp.exe")),
        "{}",
        json.stdout
    );
    assert!(has(format!("{src_s}/bad\u{fffd}byte")), "{}", json.stdout);
    assert!(entries.iter().any(|e| e["target"] == "to\x1b]0;title\x07"));

    // ls of one path given exactly, and an error message that quotes a path.
    let out = env
        .run(&["ls", "latest", &format!("{src_s}/new\nline")])
        .ok();
    assert_inert("ls PATH", &out.raw_stdout);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let out = env.run(&["ls", "latest", "/no\x1b[2Jsuch\nfile"]);
    assert_ne!(out.code, 0);
    assert_inert("ls error", out.stderr.as_bytes());
    // The error keeps the line break, indented under the first line; the escape is escaped.
    assert!(
        out.stderr.contains("no\\x1b[2Jsuch\n  file"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.lines().skip(1).all(|l| l.starts_with("  ")),
        "{}",
        out.stderr
    );

    // forget: group keys name the host and tags; verdict lines stay one per snapshot.
    let out = env.run(&["forget", "--keep-last", "1", "--dry-run"]).ok();
    assert_inert("forget", &out.raw_stdout);
    assert_inert("forget stderr", out.stderr.as_bytes());
    assert!(out.stdout.contains("host=evil"), "{}", out.stdout);
    assert_eq!(
        out.stdout.lines().filter(|l| l.contains(" keep ")).count(),
        1,
        "{}",
        out.stdout
    );

    // check names nothing raw either.
    let out = env.run(&["check"]).ok();
    assert_inert("check", &out.raw_stdout);
    assert_inert("check stderr", out.stderr.as_bytes());
}

#[test]
fn backup_notices_escape_the_names_of_files_left_out() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("ok"), b"x").unwrap();
    // A socket is not backed up: the backup says so in a notice naming it (exit 0).
    let socket = src.join("sock\n\x1b[2Jwarning: forged");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let out = env.run(&["backup", src.to_str().unwrap()]).expect_code(0);
    assert_inert("backup notices", out.stderr.as_bytes());
    assert!(
        out.stderr.contains("sock\\n\\x1b[2Jwarning: forged"),
        "{}",
        out.stderr
    );
    // One notice line for the socket: no forged warning line.
    let notices = out.stderr.lines().filter(|l| l.starts_with("notice:"));
    assert_eq!(notices.count(), 1, "{}", out.stderr);
    let warnings = out.stderr.lines().filter(|l| l.starts_with("warning:"));
    assert_eq!(warnings.count(), 0, "{}", out.stderr);
}

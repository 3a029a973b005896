//! Safe display of stored and foreign strings in human-readable output.
//!
//! Host names, user names, tags, labels, paths, file names and symlink targets come from the
//! repository (or from the file system being backed up) and may hold any character. Printed raw,
//! a newline in a file name forges a line of `coffer ls`, and an escape sequence in a host name
//! drives the terminal that shows `coffer snapshots`. Every human-readable line that prints such a
//! string passes it through this module; `--json` output keeps the exact strings (JSON escapes
//! control characters itself).
//!
//! The forms (documented in docs/cli.md, "How names are shown"):
//! - `\t`, `\n`, `\r` for tab, line feed and carriage return;
//! - `\xNN` (two lowercase hex digits) for the other C0 controls and DEL (U+0000–U+001F, U+007F),
//!   and for each byte of a file name or symlink target that is not valid UTF-8 (`\x80`–`\xff`);
//! - `\u{NN}` (lowercase hex) for the C1 controls (U+0080–U+009F) and for the characters that
//!   reorder or break a line: the bidirectional marks and overrides U+061C, U+200E, U+200F,
//!   U+202A–U+202E, U+2066–U+2069, and the separators U+2028, U+2029;
//! - in names and values ([`name`], [`name_bytes`]), `\\` for a backslash, so that every shown
//!   form reads back to exactly one string. Whole messages ([`message`]) keep backslashes as
//!   they are: they may quote text that is already escaped.
//!
//! The final error message ([`error_lines`]) keeps its line breaks (a program's stderr, a parse
//! error's caret lines) but indents every line after the first.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal as it is.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Appends `c`, escaped if it must be; a backslash is doubled when `backslash` is set.
fn push_char(out: &mut String, c: char, backslash: bool) {
    match c {
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\\' if backslash => out.push_str("\\\\"),
        c if unsafe_char(c) && u32::from(c) < 0x80 => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c if unsafe_char(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

fn escape(s: &str, backslash: bool) -> Cow<'_, str> {
    if !s
        .chars()
        .any(|c| unsafe_char(c) || (backslash && c == '\\'))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_char(&mut out, c, backslash);
    }
    Cow::Owned(out)
}

/// A stored name or value (host, user, tag, label, path, source name) as shown in human output:
/// control and bidirectional characters escaped, backslashes doubled.
pub fn name(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

/// As [`name`], for raw bytes (a file name or symlink target): bytes that are not valid UTF-8
/// are shown as `\xNN`.
pub fn name_bytes(b: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(b) {
        return name(s);
    }
    let mut out = String::with_capacity(b.len() + 8);
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c, true);
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    Cow::Owned(out)
}

/// A local path (a restore's destination) as [`name_bytes`] shows its bytes.
pub fn path(p: &std::path::Path) -> Cow<'_, str> {
    use std::os::unix::ffi::OsStrExt;
    name_bytes(p.as_os_str().as_bytes())
}

/// A whole message (a warning, an error, a report line built elsewhere) that may quote stored
/// strings: control and bidirectional characters escaped, backslashes kept.
pub fn message(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// An error message that may span lines (a program's stderr, a config file's parse error with
/// its caret lines): as [`message`], except that each line feed stays a line break and every
/// line after the first is indented by two spaces, so that no text in it can pass for a line
/// of its own.
pub fn error_lines(s: &str) -> String {
    s.split('\n')
        .map(|line| message(line))
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// Each of `items` as [`name`], joined with `sep`.
pub fn names<S: AsRef<str>>(items: &[S], sep: &str) -> String {
    items
        .iter()
        .map(|s| name(s.as_ref()))
        .collect::<Vec<_>>()
        .join(sep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        for s in ["", "web1", "/srv/app/data.db", "café 日本", "a b=c,d"] {
            assert!(matches!(name(s), Cow::Borrowed(x) if x == s));
            assert!(matches!(message(s), Cow::Borrowed(x) if x == s));
        }
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(name("a\nb"), "a\\nb");
        assert_eq!(name("a\tb\rc"), "a\\tb\\rc");
        assert_eq!(name("evil\x1b[2Jhost"), "evil\\x1b[2Jhost");
        assert_eq!(name("\0\x07\x7f"), "\\x00\\x07\\x7f");
        // C1 controls: U+009B is a one-character CSI on some terminals.
        assert_eq!(name("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(name("\u{85}"), "\\u{85}");
    }

    #[test]
    fn every_control_character_is_escaped() {
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            let shown = name(&c.to_string()).into_owned();
            assert!(shown.starts_with('\\'), "{c:?} shown as {shown:?}");
            assert!(
                !shown.chars().any(char::is_control),
                "{c:?} shown as {shown:?}"
            );
            let shown = message(&c.to_string()).into_owned();
            assert!(
                !shown.chars().any(char::is_control),
                "{c:?} shown as {shown:?}"
            );
        }
    }

    #[test]
    fn bidirectional_controls_and_separators_are_escaped() {
        assert_eq!(name("invoice\u{202e}fdp.exe"), "invoice\\u{202e}fdp.exe");
        for c in [
            '\u{61c}', '\u{200e}', '\u{200f}', '\u{2028}', '\u{2029}', '\u{202a}', '\u{202b}',
            '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ] {
            assert_eq!(name(&c.to_string()), format!("\\u{{{:x}}}", u32::from(c)));
        }
        // Neighbours that do not reorder text pass.
        assert_eq!(name("\u{2027}\u{2030}\u{2065}"), "\u{2027}\u{2030}\u{2065}");
    }

    #[test]
    fn backslashes_double_in_names_only() {
        assert_eq!(name("a\\nb"), "a\\\\nb");
        // A literal backslash-n and a real newline are told apart.
        assert_ne!(name("a\\nb"), name("a\nb"));
        assert_eq!(message("C:\\x \"q\\\"\" \n"), "C:\\x \"q\\\"\" \\n");
    }

    #[test]
    fn invalid_utf8_bytes_are_shown_as_hex() {
        assert_eq!(name_bytes(b"plain"), "plain");
        assert_eq!(name_bytes(b"bad\xff\xfename"), "bad\\xff\\xfename");
        assert_eq!(name_bytes(b"\xe2\x82"), "\\xe2\\x82");
        assert_eq!(name_bytes(b"caf\xc3\xa9\n\x80"), "caf\u{e9}\\n\\x80");
        assert_eq!(name_bytes(b"a\\b\x1b\xc0"), "a\\\\b\\x1b\\xc0");
    }

    #[test]
    fn paths_show_their_exact_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(b"/srv/a\nb/\xff\x1b"));
        assert_eq!(path(p), "/srv/a\\nb/\\xff\\x1b");
        assert_eq!(path(std::path::Path::new("/srv/app")), "/srv/app");
    }

    #[test]
    fn error_lines_keep_breaks_indented() {
        assert_eq!(error_lines("one line"), "one line");
        assert_eq!(
            error_lines("parse error\n  |\n1 | x\n  | ^"),
            "parse error\n    |\n  1 | x\n    | ^"
        );
        assert_eq!(
            error_lines("path /a\ncoffer: forged\x1b[2J"),
            "path /a\n  coffer: forged\\x1b[2J"
        );
        assert!(error_lines("a\r\nb\u{202e}")
            .lines()
            .skip(1)
            .all(|l| l.starts_with("  ")));
        assert!(!error_lines("a\r\n\tb").contains(['\r', '\t']));
    }

    #[test]
    fn names_joins_escaped_items() {
        assert_eq!(names(&["a\nb", "c"], ","), "a\\nb,c");
        assert_eq!(names::<String>(&[], " "), "");
    }
}

//! Small formatting helpers shared by commands.

/// `1.5 MiB` style sizes (the same words as the library's reports).
pub fn bytes(n: u64) -> String {
    coffer_repo::ops::human_bytes(n)
}

/// A time as people read it in a table: local time, no fractions, no offset
/// (`2026-12-02 14:43:23`). JSON keeps the stored RFC 3339 text.
pub fn local_time(at: jiff::Timestamp) -> String {
    at.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// `rwxr-xr-x` for permission bits, with a type letter.
pub fn mode(kind: char, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(kind);
    // Setuid, setgid and sticky take the execute places, as `ls -l` shows them (`s`/`t` over
    // an execute bit, `S`/`T` without one).
    for (shift, special, letter) in [(6u32, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => letter,
            (false, true) => letter.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// With `-v` (1) each phase of an operation and its duration, with `-vv` (2) each file too,
/// on stderr through `tracing`; without `-v` nothing is logged. Only Coffer's own events are
/// shown: the storage client's (which may name endpoints) stay off.
pub fn init_tracing(verbose: u8) {
    use tracing_subscriber::prelude::*;
    let level = match verbose {
        0 => return,
        1 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    };
    let targets = tracing_subscriber::filter::Targets::new()
        .with_target("coffer", level)
        .with_target("coffer_repo", level);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_filter(targets);
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Standard output that ends quietly when its reader goes away: `coffer ls latest | head` must
/// not panic. Expands to a `writeln!` whose error (a broken pipe, usually) returns from the
/// enclosing function; `main` treats a broken pipe as success.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(|source| coffer_repo::Error::Io {
            operation: "writing",
            path: "standard output".into(),
            source,
        })?
    }};
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::bytes(10), "10 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::mode('d', 0o755), "drwxr-xr-x");
    }

    #[test]
    fn modes_read_as_ls_shows_them() {
        assert_eq!(super::mode('-', 0o644), "-rw-r--r--");
        assert_eq!(super::mode('-', 0o4755), "-rwsr-xr-x");
        assert_eq!(super::mode('-', 0o2644), "-rw-r-Sr--");
        assert_eq!(super::mode('d', 0o1777), "drwxrwxrwt");
        assert_eq!(super::mode('d', 0o1770), "drwxrwx--T");
    }
}

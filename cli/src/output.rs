//! Small formatting helpers shared by commands.

/// `1.5 MiB` style sizes (the same words as the library's reports).
pub fn bytes(n: u64) -> String {
    coffer_repo::ops::human_bytes(n)
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

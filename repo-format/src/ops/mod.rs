//! Operations on a repository, one module each.

pub mod backup;
pub mod check;
pub mod copy;
pub mod drill;
pub mod drill_history;
pub mod forget;
pub mod progress;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod restore_sources;
pub mod walk;

/// `1.5 MiB` style sizes, for the words of reports (the `checked` line of a drill).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes_names_the_unit() {
        assert_eq!(super::human_bytes(0), "0 B");
        assert_eq!(super::human_bytes(1023), "1023 B");
        assert_eq!(super::human_bytes(1536), "1.5 KiB");
        assert_eq!(super::human_bytes(3 << 30), "3.0 GiB");
        // Beyond the last unit the number grows instead.
        assert_eq!(super::human_bytes(2048 << 40), "2048.0 TiB");
    }
}

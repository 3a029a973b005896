//! Exclude patterns (`--exclude`, the config's `excludes`): any list of patterns compiles or is
//! refused with a message naming the pattern, and matching any path never panics. Input: one
//! pattern per line up to an empty line, then paths to match, one per line.
#![no_main]

use coffer_repo::ops::backup::exclude_matcher;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (patterns, paths) = text.split_once("\n\n").unwrap_or((text, "/a/b.log"));
    let patterns: Vec<String> = patterns.lines().map(str::to_string).collect();
    match exclude_matcher(&patterns) {
        Ok(excluded) => {
            for p in paths.lines() {
                let _ = excluded(Path::new(p), false);
                let _ = excluded(Path::new(p), true);
            }
        }
        Err(e) => assert!(e.to_string().contains("exclude"), "{e}"),
    }
});

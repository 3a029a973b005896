//! An index file's plaintext: an error naming the file, or a file whose own encoding gives the
//! input back (nothing read past, nothing made up).
#![no_main]

use coffer_repo::format::index::IndexFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match IndexFile::decode("x", data) {
        Ok(file) => assert_eq!(file.encode(), data),
        Err(e) => assert!(e.to_string().contains("index x is corrupt"), "{e}"),
    }
});

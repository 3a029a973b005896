//! Key files are read before any key is known, so they are parsed from raw, unauthenticated
//! bytes: any input gives an error or a key file, never a panic.
#![no_main]

use coffer_repo::format::keyfile::KeyFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = KeyFile::parse("keys/x", data);
});

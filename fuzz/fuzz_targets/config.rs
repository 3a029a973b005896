//! The repository config, through its real entry point (size limit, envelope, JSON,
//! validation): an error or a valid config, never a panic.
#![no_main]

use coffer_repo::format::config::RepoConfig;
use coffer_repo::format::sealed::ObjectKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = coffer_fuzz::sealed(ObjectKind::Config, data);
    if let Ok(config) = RepoConfig::from_stored(coffer_fuzz::keys(), &bytes) {
        // What was accepted is valid.
        assert!(config.validate().is_ok());
    }
});

//! What the fuzz targets share: one set of master keys per process, so that a target can seal
//! the fuzzer's bytes and hand them to the decoder through its real entry point (the one that
//! reads storage), reaching the parsing behind authentication.

use coffer_crypto::MasterKeys;
use coffer_repo::format::sealed::{self, ObjectKind};
use std::sync::OnceLock;

/// The process's master keys, made once.
pub fn keys() -> &'static MasterKeys {
    static KEYS: OnceLock<MasterKeys> = OnceLock::new();
    KEYS.get_or_init(|| MasterKeys::generate().expect("the system random source works"))
}

/// `plaintext` sealed as an object of `kind` under [`keys`].
pub fn sealed(kind: ObjectKind, plaintext: &[u8]) -> Vec<u8> {
    sealed::seal(keys(), kind, plaintext).expect("sealing in memory cannot fail")
}

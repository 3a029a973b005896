//! Key files: `keys/<id>`, plaintext JSON, each holding the master keys sealed under one password.
//!
//! The key file's id is the BLAKE3 of its bytes. Several key files may wrap the same master keys;
//! opening tries each until one authenticates.
//!
//! Pure: bytes in, typed values out, no clock; finding and reading key files is
//! `repository/stored.rs`'s (`KeyFile::open_any`).

use crate::error::{Error, Result};
use crate::format::id::{storage_hash, KeyId};
use coffer_crypto::{KdfParams, MasterKeys, WrappedKeys, SALT_LEN};
use serde::{Deserialize, Serialize};

/// The largest key file read (bytes).
pub const MAX_KEY_FILE_SIZE: u64 = 64 * 1024;

/// Argon2id parameters as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfRecord {
    /// Always `argon2id`.
    pub algorithm: String,
    /// Argon2 version, always 19 (0x13).
    pub version: u32,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// A key file as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// Key file format version (1).
    pub version: u32,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Host and user that created it (informational).
    pub hostname: String,
    pub username: String,
    pub kdf: KdfRecord,
    /// 32-byte salt, hex.
    pub salt: String,
    /// `nonce || ciphertext || tag` of the 96 master-key bytes, hex.
    pub master: String,
}

impl KeyFile {
    /// Wraps `keys` under `password`, recording `created` and who made it. The caller supplies
    /// the time so this module reads no clock (`KeyFile::create` in `repository/stored.rs`
    /// passes the current one).
    pub fn wrap(
        keys: &MasterKeys,
        password: &[u8],
        kdf: KdfParams,
        created: jiff::Timestamp,
        hostname: &str,
        username: &str,
    ) -> Result<KeyFile> {
        if let Some(why) = kdf_refusal(&kdf) {
            return Err(Error::InvalidInput(format!(
                "refusing to create a key file that would never be opened: {why}"
            )));
        }
        let wrapped = coffer_crypto::wrap_master_keys(keys, password, kdf)?;
        Ok(KeyFile {
            version: 1,
            created: created.to_string(),
            hostname: hostname.to_string(),
            username: username.to_string(),
            kdf: KdfRecord {
                algorithm: "argon2id".into(),
                version: 19,
                memory_kib: kdf.memory_kib,
                iterations: kdf.iterations,
                parallelism: kdf.parallelism,
            },
            salt: hex::encode(wrapped.salt),
            master: hex::encode(&wrapped.sealed),
        })
    }

    /// The stored form (pretty-printed JSON) and the id it is stored under.
    pub fn to_stored(&self) -> Result<(KeyId, Vec<u8>)> {
        let bytes = serde_json::to_vec_pretty(self).map_err(Error::internal)?;
        Ok((KeyId(storage_hash(&bytes)), bytes))
    }

    /// Verifies and parses the stored bytes of key file `id`: size, name (compared in
    /// constant time), then [`KeyFile::parse`].
    pub fn from_stored(id: &KeyId, bytes: &[u8]) -> Result<KeyFile> {
        let name = id.to_hex();
        if bytes.len() as u64 > MAX_KEY_FILE_SIZE {
            return Err(Error::corrupt("key file", &name, "too large"));
        }
        if !coffer_crypto::ct_eq(&storage_hash(bytes), &id.0) {
            return Err(Error::corrupt(
                "key file",
                &name,
                "content does not match its name",
            ));
        }
        KeyFile::parse(&name, bytes)
    }

    /// Parses and checks a stored key file.
    pub fn parse(id: &str, bytes: &[u8]) -> Result<KeyFile> {
        let file: KeyFile =
            serde_json::from_slice(bytes).map_err(|e| Error::corrupt("key file", id, e))?;
        if file.version != 1 || file.kdf.algorithm != "argon2id" || file.kdf.version != 19 {
            return Err(Error::corrupt(
                "key file",
                id,
                "unknown key file version or algorithm",
            ));
        }
        Ok(file)
    }

    /// Tries to open the master keys with `password`. `Ok(None)` means wrong password.
    pub fn unwrap(&self, id: &str, password: &[u8]) -> Result<Option<MasterKeys>> {
        let mut salt = [0u8; SALT_LEN];
        hex::decode_to_slice(&self.salt, &mut salt)
            .map_err(|e| Error::corrupt("key file", id, format!("salt: {e}")))?;
        let sealed = hex::decode(&self.master)
            .map_err(|e| Error::corrupt("key file", id, format!("master: {e}")))?;
        let kdf = KdfParams {
            memory_kib: self.kdf.memory_kib,
            iterations: self.kdf.iterations,
            parallelism: self.kdf.parallelism,
        };
        if let Some(why) = kdf_refusal(&kdf) {
            return Err(Error::corrupt("key file", id, why));
        }
        let wrapped = WrappedKeys { kdf, salt, sealed };
        match coffer_crypto::unwrap_master_keys(&wrapped, password) {
            Ok(keys) => Ok(Some(keys)),
            Err(coffer_crypto::CryptoError::Authentication) => Ok(None),
            Err(e) => Err(Error::corrupt("key file", id, e)),
        }
    }
}

/// Key files whose Argon2id cost is within these bounds are tried first: every cost Coffer
/// offers (and the default, 64 MiB and 3 passes) is within them, and trying one costs at most
/// 1 GiB of memory for a few seconds.
pub const BOUNDED_KDF: KdfParams = KdfParams {
    memory_kib: 1024 * 1024,
    iterations: 10,
    parallelism: 16,
};
/// The most memory a key file may ask Argon2id for (2 GiB): a key file above it is never tried
/// (a tampered one must not exhaust the machine's memory on every open), and none is created.
pub const MAX_KDF_MEMORY_KIB: u32 = 2 * 1024 * 1024;

/// The weakest Argon2id cost a new key file gets without `--insecure-kdf`: OWASP's Password
/// Storage Cheat Sheet minimum, 19 MiB (19456 KiB) with 2 passes, or 46 MiB (47104 KiB) with
/// 1 pass. Below it a stolen key file gives up its password to a guessing attack too cheaply.
pub const MIN_KDF_MEMORY_KIB: u32 = 19 * 1024;
/// Passes needed at [`MIN_KDF_MEMORY_KIB`]; see there.
pub const MIN_KDF_ITERATIONS: u32 = 2;
/// Memory with which a single pass meets the floor; see [`MIN_KDF_MEMORY_KIB`].
pub const MIN_KDF_MEMORY_KIB_ONE_PASS: u32 = 46 * 1024;

/// Why `kdf` is below the floor for new key files ([`MIN_KDF_MEMORY_KIB`]), if it is. Readers
/// do not apply it: key files below it (tests, benchmarks, `--insecure-kdf`) still open.
pub fn kdf_weakness(kdf: &KdfParams) -> Option<String> {
    let strong = kdf.iterations >= 1
        && (kdf.memory_kib >= MIN_KDF_MEMORY_KIB_ONE_PASS
            || (kdf.memory_kib >= MIN_KDF_MEMORY_KIB && kdf.iterations >= MIN_KDF_ITERATIONS));
    (!strong).then(|| {
        format!(
            "Argon2id cost m={} KiB t={} is below the minimum (m>={} KiB with t>={}, or \
             m>={} KiB with t>=1; OWASP)",
            kdf.memory_kib,
            kdf.iterations,
            MIN_KDF_MEMORY_KIB,
            MIN_KDF_ITERATIONS,
            MIN_KDF_MEMORY_KIB_ONE_PASS
        )
    })
}

/// Whether `kdf` is within [`BOUNDED_KDF`].
pub fn kdf_is_bounded(kdf: &KdfRecord) -> bool {
    kdf.memory_kib <= BOUNDED_KDF.memory_kib
        && kdf.iterations <= BOUNDED_KDF.iterations
        && kdf.parallelism <= BOUNDED_KDF.parallelism
}

/// The work of one Argon2id run with `kdf`: memory times passes (the lanes share the memory,
/// so they do not add work). Opening tries cheaper key files first.
pub fn kdf_cost(kdf: &KdfRecord) -> u64 {
    u64::from(kdf.memory_kib) * u64::from(kdf.iterations.max(1))
}

/// Why `kdf` is refused outright, if it is: above the hard maximum of memory, or of passes or
/// lanes ([`KdfParams::MAX_ITERATIONS`], [`KdfParams::MAX_PARALLELISM`]).
pub fn kdf_refusal(kdf: &KdfParams) -> Option<String> {
    (kdf.memory_kib > MAX_KDF_MEMORY_KIB
        || kdf.iterations > KdfParams::MAX_ITERATIONS
        || kdf.parallelism > KdfParams::MAX_PARALLELISM)
        .then(|| {
            format!(
                "Argon2id cost m={} KiB t={} p={} is above the maximum m<={} KiB t<={} p<={}; \
                 not tried",
                kdf.memory_kib,
                kdf.iterations,
                kdf.parallelism,
                MAX_KDF_MEMORY_KIB,
                KdfParams::MAX_ITERATIONS,
                KdfParams::MAX_PARALLELISM
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(memory_kib: u32, iterations: u32, parallelism: u32) -> KdfRecord {
        KdfRecord {
            algorithm: "argon2id".into(),
            version: 19,
            memory_kib,
            iterations,
            parallelism,
        }
    }

    #[test]
    fn kdf_costs_are_bounded_costly_or_refused() {
        assert!(kdf_is_bounded(&record(64 * 1024, 3, 4)));
        assert!(kdf_is_bounded(&record(1024 * 1024, 10, 16)));
        assert!(!kdf_is_bounded(&record(1024 * 1024 + 1, 1, 1)));
        assert!(!kdf_is_bounded(&record(8, 11, 1)));
        assert!(!kdf_is_bounded(&record(8, 1, 17)));
        let params = |m, t, p| KdfParams {
            memory_kib: m,
            iterations: t,
            parallelism: p,
        };
        assert!(kdf_refusal(&params(MAX_KDF_MEMORY_KIB, 64, 64)).is_none());
        let why = kdf_refusal(&params(4 * 1024 * 1024, 1, 1)).unwrap();
        assert!(
            why.contains("4194304 KiB") && why.contains("not tried"),
            "{why}"
        );
        assert!(kdf_refusal(&params(8, 65, 1)).is_some());
        assert!(kdf_refusal(&params(8, 1, 65)).is_some());
        let keys = MasterKeys::generate().unwrap();
        assert!(matches!(
            KeyFile::wrap(&keys, b"pw", params(4 * 1024 * 1024, 1, 1), now(), "h", "u"),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn the_floor_for_new_key_files_is_owasps_minimum() {
        let params = |m, t| KdfParams {
            memory_kib: m,
            iterations: t,
            parallelism: 1,
        };
        assert!(kdf_weakness(&KdfParams::DEFAULT).is_none());
        assert!(kdf_weakness(&params(19456, 2)).is_none());
        assert!(kdf_weakness(&params(47104, 1)).is_none());
        let why = kdf_weakness(&params(32, 1)).unwrap();
        assert!(
            why.contains("m=32 KiB t=1") && why.contains("19456"),
            "{why}"
        );
        assert!(kdf_weakness(&params(19455, 2)).is_some());
        assert!(kdf_weakness(&params(19456, 1)).is_some());
        assert!(kdf_weakness(&params(47103, 1)).is_some());
        assert!(kdf_weakness(&params(1024 * 1024, 0)).is_some());
        assert!(kdf_cost(&record(64, 1, 1)) < kdf_cost(&record(64, 2, 1)));
        assert_eq!(
            kdf_cost(&record(u32::MAX, u32::MAX, 1)),
            u64::from(u32::MAX).pow(2)
        );
    }

    fn now() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000).unwrap()
    }

    const CHEAP: KdfParams = KdfParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };

    #[test]
    fn stored_form_round_trips_and_opens_only_with_its_password() {
        let keys = MasterKeys::generate().unwrap();
        let file = KeyFile::wrap(&keys, b"pw", CHEAP, now(), "h", "u").unwrap();
        assert_eq!(file.created, "2027-01-15T08:00:00Z");
        let (id, bytes) = file.to_stored().unwrap();
        let back = KeyFile::from_stored(&id, &bytes).unwrap();
        assert_eq!(back, file);
        let opened = back.unwrap("x", b"pw").unwrap().unwrap();
        assert_eq!(opened.content_id(b"probe"), keys.content_id(b"probe"));
        assert!(back.unwrap("x", b"wrong").unwrap().is_none());
        // A master sealed by other keys' file is not these keys.
        let other = MasterKeys::generate().unwrap();
        let theirs = KeyFile::wrap(&other, b"pw", CHEAP, now(), "h", "u").unwrap();
        let opened = theirs.unwrap("x", b"pw").unwrap().unwrap();
        assert_ne!(opened.content_id(b"probe"), keys.content_id(b"probe"));
    }

    #[test]
    fn damaged_key_files_are_errors_naming_them() {
        let keys = MasterKeys::generate().unwrap();
        let file = KeyFile::wrap(&keys, b"pw", CHEAP, now(), "h", "u").unwrap();
        let (_, bytes) = file.to_stored().unwrap();
        let err = KeyFile::from_stored(&KeyId([0; 32]), &bytes).unwrap_err();
        assert!(err.to_string().contains("does not match its name"), "{err}");
        assert!(err.to_string().contains(&"00".repeat(32)), "{err}");
        for cut in 0..bytes.len() {
            let short = &bytes[..cut];
            assert!(KeyFile::from_stored(&KeyId(storage_hash(short)), short).is_err());
        }
        let huge = vec![b' '; MAX_KEY_FILE_SIZE as usize + 1];
        let err = KeyFile::from_stored(&KeyId(storage_hash(&huge)), &huge).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        // A known layout with an unknown version is refused.
        let mut future = file.clone();
        future.version = 2;
        let (fid, fbytes) = future.to_stored().unwrap();
        let err = KeyFile::from_stored(&fid, &fbytes).unwrap_err();
        assert!(
            err.to_string().contains("unknown key file version"),
            "{err}"
        );
        // Bad hex in the salt is an error, not a panic.
        let mut bad_salt = file;
        bad_salt.salt = "zz".into();
        assert!(bad_salt.unwrap("x", b"pw").is_err());
    }
}

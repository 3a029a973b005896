//! Key files: `keys/<id>`, plaintext JSON, each holding the master keys sealed under one password.
//!
//! The key file's id is the BLAKE3 of its bytes. Several key files may wrap the same master keys;
//! opening tries each until one authenticates.

use crate::error::{Error, Result};
use crate::format::id::{storage_hash, KeyId};
use crate::storage::Storage;
use coffer_crypto::{KdfParams, MasterKeys, WrappedKeys, SALT_LEN};
use serde::{Deserialize, Serialize};

/// The largest key file read (bytes).
pub const MAX_KEY_FILE_SIZE: u64 = 64 * 1024;
/// At most this many key files are tried when opening (each costs one Argon2id run).
pub const MAX_KEY_FILES_TRIED: usize = 32;

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
    /// Wraps `keys` under `password`.
    pub fn create(
        keys: &MasterKeys,
        password: &[u8],
        kdf: KdfParams,
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
            created: jiff::Timestamp::now().to_string(),
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

    /// Writes the key file under its content hash and returns its id.
    pub fn save(&self, storage: &Storage) -> Result<KeyId> {
        let bytes = serde_json::to_vec_pretty(self).map_err(Error::internal)?;
        let id = KeyId(storage_hash(&bytes));
        storage.put_new(&format!("keys/{id}"), bytes.into())?;
        Ok(id)
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
/// At most this many key files are read when opening (each at most [`MAX_KEY_FILE_SIZE`]).
pub const MAX_KEY_FILES_READ: usize = 1024;

/// Whether `kdf` is within [`BOUNDED_KDF`].
pub fn kdf_is_bounded(kdf: &KdfRecord) -> bool {
    kdf.memory_kib <= BOUNDED_KDF.memory_kib
        && kdf.iterations <= BOUNDED_KDF.iterations
        && kdf.parallelism <= BOUNDED_KDF.parallelism
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

/// Finds the key file that `password` opens. Key files are read (each refused above
/// [`MAX_KEY_FILE_SIZE`] before it is downloaded) and parsed first; then those of bounded cost
/// ([`BOUNDED_KDF`]) are tried in name order, and only if none opens, the costlier ones; a key
/// file above the hard maximum ([`MAX_KDF_MEMORY_KIB`]) is never tried. At most
/// [`MAX_KEY_FILES_TRIED`] Argon2id runs are made. If the password was tried against at least
/// one key file, the result is [`Error::WrongPassword`]; only if no key file could be tried at
/// all does the error list the damaged ones.
pub fn open_any(storage: &Storage, password: &[u8]) -> Result<(KeyId, MasterKeys)> {
    // Names that are not key file names are not Coffer's: ignored (check reports them).
    let listed = storage.list_objects("keys")?.objects;
    if listed.is_empty() {
        return Err(Error::Missing {
            what: "key files",
            id: "keys/".into(),
        });
    }
    let mut damaged = Vec::new();
    let mut candidates = Vec::new();
    for (key, _) in listed.into_iter().take(MAX_KEY_FILES_READ) {
        let name = key.rsplit('/').next().unwrap_or(&key).to_string();
        let Some(id) = KeyId::from_hex(&name) else {
            continue;
        };
        let bytes = match storage.get_bounded("key file", &key, MAX_KEY_FILE_SIZE) {
            Ok(bytes) => bytes,
            Err(e @ Error::Corrupt { .. }) => {
                damaged.push(e.to_string());
                continue;
            }
            Err(Error::Missing { .. }) => continue,
            Err(e) => return Err(e),
        };
        if !coffer_crypto::ct_eq(&storage_hash(&bytes), &id.0) {
            damaged.push(format!("{key}: content does not match its name"));
            continue;
        }
        let file = match KeyFile::parse(&name, &bytes) {
            Ok(f) => f,
            Err(e) => {
                damaged.push(e.to_string());
                continue;
            }
        };
        candidates.push((id, name, file));
    }
    // Bounded costs first; the sort is stable, so name order within each group.
    candidates.sort_by_key(|(_, _, file)| !kdf_is_bounded(&file.kdf));
    let mut tried = 0;
    for (id, name, file) in candidates {
        if tried == MAX_KEY_FILES_TRIED {
            break;
        }
        match file.unwrap(&name, password) {
            Ok(Some(keys)) => return Ok((id, keys)),
            Ok(None) => tried += 1,
            Err(e) => damaged.push(e.to_string()),
        }
    }
    if tried > 0 || damaged.is_empty() {
        Err(Error::WrongPassword)
    } else {
        Err(Error::corrupt(
            "key files",
            "keys/",
            format!("no key file opened; damaged: {}", damaged.join("; ")),
        ))
    }
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
            KeyFile::create(&keys, b"pw", params(4 * 1024 * 1024, 1, 1), "h", "u"),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn a_key_file_above_the_maximum_is_never_tried_and_a_wrong_password_stays_wrong() {
        let storage = Storage::in_memory().unwrap();
        let keys = MasterKeys::generate().unwrap();
        let cheap = KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        };
        let good = KeyFile::create(&keys, b"pw", cheap, "h", "u").unwrap();
        let good_id = good.save(&storage).unwrap();
        let mut huge = good.clone();
        huge.kdf.memory_kib = 4 * 1024 * 1024;
        huge.save(&storage).unwrap();
        let (id, _) = open_any(&storage, b"pw").unwrap();
        assert_eq!(id, good_id);
        assert!(matches!(
            open_any(&storage, b"wrong"),
            Err(Error::WrongPassword)
        ));
        // Were it tried, the refusal would come back as damage.
        let err = huge.unwrap("x", b"pw").unwrap_err();
        assert!(err.to_string().contains("not tried"), "{err}");
    }
}

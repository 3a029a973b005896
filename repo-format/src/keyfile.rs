//! Key files: `keys/<id>`, plaintext JSON, each holding the master keys sealed under one password.
//!
//! The key file's id is the BLAKE3 of its bytes. Several key files may wrap the same master keys;
//! opening tries each until one authenticates.

use crate::error::{Error, Result};
use crate::id::{storage_hash, KeyId};
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
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| Error::InvalidInput(e.to_string()))?;
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
        let wrapped = WrappedKeys {
            kdf: KdfParams {
                memory_kib: self.kdf.memory_kib,
                iterations: self.kdf.iterations,
                parallelism: self.kdf.parallelism,
            },
            salt,
            sealed,
        };
        match coffer_crypto::unwrap_master_keys(&wrapped, password) {
            Ok(keys) => Ok(Some(keys)),
            Err(coffer_crypto::CryptoError::Authentication) => Ok(None),
            Err(e) => Err(Error::corrupt("key file", id, e)),
        }
    }
}

/// Finds the key file that `password` opens. Key files that fail to parse are skipped, but if
/// none opens and some were damaged, the error says so.
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
    for (key, size) in listed.into_iter().take(MAX_KEY_FILES_TRIED) {
        let name = key.rsplit('/').next().unwrap_or(&key).to_string();
        let Some(id) = KeyId::from_hex(&name) else {
            damaged.push(format!("{key}: not a key file name"));
            continue;
        };
        if size > MAX_KEY_FILE_SIZE {
            damaged.push(format!("{key}: {size} bytes is too large"));
            continue;
        }
        let bytes = storage.get("key file", &key)?;
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
        match file.unwrap(&name, password) {
            Ok(Some(keys)) => return Ok((id, keys)),
            Ok(None) => {}
            Err(e) => damaged.push(e.to_string()),
        }
    }
    if damaged.is_empty() {
        Err(Error::WrongPassword)
    } else {
        Err(Error::corrupt(
            "key files",
            "keys/",
            format!("no key file opened; damaged: {}", damaged.join("; ")),
        ))
    }
}

//! Coffer's cryptography: the repository's master keys, the password KDF that wraps them,
//! authenticated encryption of every stored object, and keyed content ids.
//!
//! This crate knows nothing of repositories. It offers four things:
//! - [`MasterKeys`]: three independent random 256-bit keys (encryption, content id, chunker),
//!   generated once per repository and never stored in the clear.
//! - [`KdfParams`] / [`wrap_master_keys`] / [`unwrap_master_keys`]: Argon2id turns a password into
//!   a key-encryption key that seals the master keys; each key file of a repository holds one such
//!   wrapping, so several passwords can open the same repository.
//! - [`seal`] / [`open`]: XChaCha20-Poly1305 with a fresh random 192-bit nonce per message and
//!   caller-supplied associated data, laid out as `nonce || ciphertext || tag`.
//! - [`MasterKeys::content_id`]: keyed BLAKE3, so an id reveals nothing about the plaintext to
//!   anyone without the content-id key.
//!
//! Secrets zeroize on drop and print as `<redacted>`; tags and ids compare in constant time.

mod kdf_memory;

use argon2::{Algorithm, Argon2, Params, Version};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Length of every symmetric key, in bytes.
pub const KEY_LEN: usize = 32;
/// Length of an XChaCha20-Poly1305 nonce, in bytes.
pub const NONCE_LEN: usize = 24;
/// Length of a Poly1305 tag, in bytes.
pub const TAG_LEN: usize = 16;
/// Bytes that [`seal`] adds to a plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Length of a KDF salt, in bytes.
pub const SALT_LEN: usize = 32;
/// Length of the serialized master keys (three keys).
pub const MASTER_KEYS_LEN: usize = 3 * KEY_LEN;

/// What can go wrong in this crate. Messages are lowercase and never contain secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CryptoError {
    /// Authentication failed: wrong key, or the bytes were changed.
    #[error("authentication failed (wrong key or modified data)")]
    Authentication,
    /// The input is shorter than a nonce and a tag.
    #[error("sealed data is truncated: {0} bytes, at least {SEAL_OVERHEAD} needed")]
    Truncated(usize),
    /// KDF parameters out of the accepted range.
    #[error("invalid key derivation parameters: {0}")]
    KdfParams(String),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
    /// A serialized key had the wrong length.
    #[error("key material has the wrong length: {0} bytes")]
    KeyLength(usize),
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_fill(buf: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(buf).map_err(|e| CryptoError::Random(e.to_string()))
}

/// Constant-time equality of two byte strings (lengths are not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A 256-bit secret key. Zeroized on drop; `Debug` prints `<redacted>`.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SecretKey(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut key = SecretKey([0; KEY_LEN]);
        random_fill(&mut key.0)?;
        Ok(key)
    }

    /// The raw key bytes. Callers must not copy them into memory that outlives the key.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// The repository's master keys. They never leave memory unencrypted.
///
/// - `encryption` seals every stored object (XChaCha20-Poly1305).
/// - `content_id` keys the BLAKE3 hash that names blobs.
/// - `chunker` derives the content-defined chunker's gear table.
#[derive(Clone)]
pub struct MasterKeys {
    encryption: SecretKey,
    content_id: SecretKey,
    chunker: SecretKey,
}

impl fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKeys(<redacted>)")
    }
}

impl MasterKeys {
    /// Three fresh independent random keys.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(MasterKeys {
            encryption: SecretKey::generate()?,
            content_id: SecretKey::generate()?,
            chunker: SecretKey::generate()?,
        })
    }

    /// Serializes as `encryption || content_id || chunker` (96 bytes), zeroized on drop.
    pub fn to_bytes(&self) -> Zeroizing<[u8; MASTER_KEYS_LEN]> {
        let mut out = Zeroizing::new([0u8; MASTER_KEYS_LEN]);
        out[..KEY_LEN].copy_from_slice(&self.encryption.0);
        out[KEY_LEN..2 * KEY_LEN].copy_from_slice(&self.content_id.0);
        out[2 * KEY_LEN..].copy_from_slice(&self.chunker.0);
        out
    }

    /// Inverse of [`MasterKeys::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != MASTER_KEYS_LEN {
            return Err(CryptoError::KeyLength(bytes.len()));
        }
        let take = |i: usize| {
            let mut k = [0u8; KEY_LEN];
            k.copy_from_slice(&bytes[i * KEY_LEN..(i + 1) * KEY_LEN]);
            SecretKey(k)
        };
        Ok(MasterKeys {
            encryption: take(0),
            content_id: take(1),
            chunker: take(2),
        })
    }

    /// The key that seals stored objects.
    pub fn encryption_key(&self) -> &SecretKey {
        &self.encryption
    }

    /// The key from which the chunker derives its gear table.
    pub fn chunker_key(&self) -> &[u8; KEY_LEN] {
        &self.chunker.0
    }

    /// The content id of a blob: keyed BLAKE3 of its plaintext.
    pub fn content_id(&self, plaintext: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.content_id.0, plaintext).as_bytes()
    }

    /// A short public fingerprint of the master keys (BLAKE3 in derive-key mode), used as the
    /// "key id" recorded in snapshots. It reveals nothing about the keys.
    pub fn fingerprint(&self) -> String {
        let bytes = self.to_bytes();
        let hash = blake3::derive_key("coffer 2026-11 master key fingerprint v1", &bytes[..]);
        hex::encode(&hash[..8])
    }

    /// Seals `plaintext` with the encryption key. See [`seal`].
    pub fn seal(&self, associated_data: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        seal(&self.encryption, associated_data, plaintext)
    }

    /// Appends the sealed form of `plaintext` to `out`. See [`seal`].
    pub fn seal_into(
        &self,
        associated_data: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        seal_into(&self.encryption, associated_data, plaintext, out)
    }

    /// Opens data sealed with the encryption key. See [`open`].
    pub fn open(&self, associated_data: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        open(&self.encryption, associated_data, sealed)
    }
}

/// Encrypts and authenticates `plaintext` bound to `associated_data`.
///
/// Output layout: `nonce (24) || ciphertext (len(plaintext)) || tag (16)`. The nonce is drawn from
/// the OS CSPRNG inside this function, so no caller can reuse one; 192-bit random nonces make a
/// collision negligible for any number of objects a repository will ever hold.
pub fn seal(
    key: &SecretKey,
    associated_data: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    seal_into(key, associated_data, plaintext, &mut out)?;
    Ok(out)
}

/// Like [`seal`], appending to `out`.
pub fn seal_into(
    key: &SecretKey,
    associated_data: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    random_fill(&mut nonce)?;
    seal_with_nonce(key, &nonce, associated_data, plaintext, out)
}

/// [`seal_into`] with a given nonce (which must never repeat under one key).
fn seal_with_nonce(
    key: &SecretKey,
    nonce: &[u8; NONCE_LEN],
    associated_data: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CryptoError> {
    let (cipher, inner_nonce) = message_key(key, nonce)?;
    out.reserve(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(nonce);
    let start = out.len();
    out.extend_from_slice(plaintext);
    let tag = cipher
        .seal_in_place_separate_tag(inner_nonce, Aad::from(associated_data), &mut out[start..])
        .map_err(|_| CryptoError::Authentication)?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// XChaCha20-Poly1305 as draft-irtf-cfrg-xchacha (section 2.3) builds it: HChaCha20 turns the
/// key and the nonce's first 16 bytes into a one-message subkey, and ChaCha20-Poly1305
/// (RFC 8439) runs under that subkey with the nonce `0x00000000 || nonce[16..24]`. The AEAD
/// itself is ring's, which computes ChaCha20 and Poly1305 in one pass over the data (about
/// twice the speed of separate passes; docs/benchmarks.md). The subkey is zeroized here; ring's
/// expanded copy of it, one message's key, lives on the stack until overwritten.
fn message_key(
    key: &SecretKey,
    nonce: &[u8; NONCE_LEN],
) -> Result<(LessSafeKey, Nonce), CryptoError> {
    let (prefix, suffix) = nonce.split_at(16);
    let prefix: &[u8; 16] = prefix.try_into().map_err(|_| CryptoError::Authentication)?;
    let mut subkey = Zeroizing::new([0u8; KEY_LEN]);
    subkey.copy_from_slice(&chacha20::hchacha::<chacha20::R20>(
        (&key.0).into(),
        prefix.into(),
    ));
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, &subkey[..])
        .map_err(|_| CryptoError::KeyLength(KEY_LEN))?;
    let mut inner = [0u8; 12];
    inner[4..].copy_from_slice(suffix);
    Ok((
        LessSafeKey::new(unbound),
        Nonce::assume_unique_for_key(inner),
    ))
}

/// Verifies and decrypts the output of [`seal`]. Fails with [`CryptoError::Authentication`] if the
/// key or the associated data differ, or if any byte was changed.
pub fn open(
    key: &SecretKey,
    associated_data: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError::Truncated(sealed.len()));
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let nonce: &[u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Authentication)?;
    let tag = Tag::try_from(tag).map_err(|_| CryptoError::Authentication)?;
    let (cipher, inner_nonce) = message_key(key, nonce)?;
    let mut plaintext = ciphertext.to_vec();
    // ring compares the tag in constant time.
    match cipher.open_in_place_separate_tag(
        inner_nonce,
        Aad::from(associated_data),
        tag,
        &mut plaintext,
        0..,
    ) {
        Ok(_) => Ok(plaintext),
        Err(_) => {
            plaintext.zeroize();
            Err(CryptoError::Authentication)
        }
    }
}

/// Argon2id parameters, stored in each key file so they can be raised later without breaking
/// older key files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The default for new key files: 64 MiB, 3 passes, 4 lanes, the second recommended option
    /// of RFC 9106 (section 4). The lanes are computed on up to 4 cores at once, so on 2 cores
    /// opening a repository takes half the time of 1 lane for the same memory and passes.
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 4,
    };

    /// The largest memory cost Coffer accepts from a key file (4 GiB), so a tampered key file
    /// cannot make `open` allocate without bound.
    pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
    /// The largest pass count accepted from a key file.
    pub const MAX_ITERATIONS: u32 = 64;
    /// The largest lane count accepted from a key file.
    pub const MAX_PARALLELISM: u32 = 64;

    fn to_argon2(self) -> Result<Params, CryptoError> {
        if self.memory_kib > Self::MAX_MEMORY_KIB
            || self.iterations > Self::MAX_ITERATIONS
            || self.parallelism > Self::MAX_PARALLELISM
        {
            return Err(CryptoError::KdfParams(format!(
                "m={} KiB t={} p={} exceeds the limits m<={} t<={} p<={}",
                self.memory_kib,
                self.iterations,
                self.parallelism,
                Self::MAX_MEMORY_KIB,
                Self::MAX_ITERATIONS,
                Self::MAX_PARALLELISM
            )));
        }
        Params::new(
            self.memory_kib,
            self.iterations,
            self.parallelism,
            Some(KEY_LEN),
        )
        .map_err(|e| CryptoError::KdfParams(e.to_string()))
    }
}

/// Derives a key-encryption key from a password with Argon2id (version 0x13).
pub fn derive_key(
    password: &[u8],
    salt: &[u8; SALT_LEN],
    params: KdfParams,
) -> Result<SecretKey, CryptoError> {
    let params = params.to_argon2()?;
    let mut memory = kdf_memory::KdfMemory::new(params.block_count()).ok_or_else(|| {
        CryptoError::KdfParams(format!(
            "{} blocks do not fit in memory",
            params.block_count()
        ))
    })?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let mut key = SecretKey([0; KEY_LEN]);
    argon
        .hash_password_into_with_memory(password, salt, &mut key.0, memory.blocks())
        .map_err(|e| CryptoError::KdfParams(e.to_string()))?;
    Ok(key)
}

/// Associated data that binds a wrapped master key to its purpose.
const WRAP_AAD: &[u8] = b"coffer key file v1";

/// Master keys sealed under a password: what a key file stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKeys {
    /// Argon2id parameters.
    pub kdf: KdfParams,
    /// Random salt.
    pub salt: [u8; SALT_LEN],
    /// `seal(argon2id(password, salt), "coffer key file v1", master_keys)`.
    pub sealed: Vec<u8>,
}

/// Seals `keys` under `password` with a fresh salt.
pub fn wrap_master_keys(
    keys: &MasterKeys,
    password: &[u8],
    kdf: KdfParams,
) -> Result<WrappedKeys, CryptoError> {
    let mut salt = [0u8; SALT_LEN];
    random_fill(&mut salt)?;
    let kek = derive_key(password, &salt, kdf)?;
    let sealed = seal(&kek, WRAP_AAD, &keys.to_bytes()[..])?;
    Ok(WrappedKeys { kdf, salt, sealed })
}

/// Opens a wrapping with `password`. A wrong password gives [`CryptoError::Authentication`].
pub fn unwrap_master_keys(
    wrapped: &WrappedKeys,
    password: &[u8],
) -> Result<MasterKeys, CryptoError> {
    let kek = derive_key(password, &wrapped.salt, wrapped.kdf)?;
    let plain = Zeroizing::new(open(&kek, WRAP_AAD, &wrapped.sealed)?);
    MasterKeys::from_bytes(&plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Cheap parameters for tests: the minimum Argon2 accepts.
    const CHEAP: KdfParams = KdfParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };

    fn key(byte: u8) -> SecretKey {
        SecretKey::from_bytes([byte; KEY_LEN])
    }

    proptest! {
        #[test]
        fn open_of_seal_is_identity(plain in proptest::collection::vec(any::<u8>(), 0..4096),
                                    aad in proptest::collection::vec(any::<u8>(), 0..64)) {
            let k = key(7);
            let sealed = seal(&k, &aad, &plain).unwrap();
            prop_assert_eq!(sealed.len(), plain.len() + SEAL_OVERHEAD);
            prop_assert_eq!(open(&k, &aad, &sealed).unwrap(), plain);
        }

        #[test]
        fn any_flipped_bit_fails(plain in proptest::collection::vec(any::<u8>(), 0..512),
                                 pos in any::<usize>(), bit in 0u8..8) {
            let k = key(9);
            let mut sealed = seal(&k, b"aad", &plain).unwrap();
            let i = pos % sealed.len();
            sealed[i] ^= 1 << bit;
            prop_assert_eq!(open(&k, b"aad", &sealed), Err(CryptoError::Authentication));
        }
    }

    proptest! {
        /// The one-pass AEAD gives exactly the bytes of an independent XChaCha20-Poly1305
        /// (RustCrypto's, which sealed every repository before it), in both directions: what
        /// either sealed, the other opens.
        #[test]
        fn sealing_matches_an_independent_xchacha20_poly1305(
            plain in proptest::collection::vec(any::<u8>(), 0..3000),
            aad in proptest::collection::vec(any::<u8>(), 0..80),
            nonce in any::<[u8; NONCE_LEN]>(),
            key_bytes in any::<[u8; KEY_LEN]>(),
        ) {
            use chacha20poly1305::aead::{AeadInOut, KeyInit};
            use chacha20poly1305::{XChaCha20Poly1305, XNonce};
            let k = SecretKey::from_bytes(key_bytes);
            let mut ours = Vec::new();
            seal_with_nonce(&k, &nonce, &aad, &plain, &mut ours).unwrap();
            let other = XChaCha20Poly1305::new(&key_bytes.into());
            let mut theirs = plain.clone();
            let tag = other
                .encrypt_inout_detached(&XNonce::from(nonce), &aad, theirs.as_mut_slice().into())
                .unwrap();
            let mut expected = nonce.to_vec();
            expected.extend_from_slice(&theirs);
            expected.extend_from_slice(tag.as_slice());
            prop_assert_eq!(&ours, &expected);
            prop_assert_eq!(open(&k, &aad, &expected).unwrap(), plain.clone());
            let (ct, tag) = ours[NONCE_LEN..].split_at(plain.len());
            let mut back = ct.to_vec();
            other
                .decrypt_inout_detached(
                    &XNonce::from(nonce),
                    &aad,
                    back.as_mut_slice().into(),
                    tag.try_into().unwrap(),
                )
                .unwrap();
            prop_assert_eq!(back, plain);
        }
    }

    #[test]
    fn wrong_key_or_aad_fails() {
        let sealed = seal(&key(1), b"snapshot", b"hello").unwrap();
        assert_eq!(
            open(&key(2), b"snapshot", &sealed),
            Err(CryptoError::Authentication)
        );
        assert_eq!(
            open(&key(1), b"index", &sealed),
            Err(CryptoError::Authentication)
        );
        assert_eq!(
            open(&key(1), b"snapshot", &sealed[..10]),
            Err(CryptoError::Truncated(10))
        );
    }

    #[test]
    fn nonces_are_fresh() {
        let a = seal(&key(1), b"", b"same").unwrap();
        let b = seal(&key(1), b"", b"same").unwrap();
        assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN]);
    }

    /// Known-answer vector: a fixed key, nonce and AAD opened by our `open`. The ciphertext
    /// was produced once with the XChaCha20-Poly1305 construction (draft-irtf-cfrg-xchacha
    /// test vector, section A.3.1), so this pins the algorithm, not just our round trip.
    #[test]
    fn xchacha_known_answer() {
        let key_bytes: [u8; 32] =
            hex::decode("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
                .unwrap()
                .try_into()
                .unwrap();
        let nonce = hex::decode("404142434445464748494a4b4c4d4e4f5051525354555657").unwrap();
        let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let ciphertext = hex::decode(concat!(
            "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb",
            "731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452",
            "2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9",
            "21f9664c97637da9768812f615c68b13b52e"
        ))
        .unwrap();
        let tag = hex::decode("c0875924c1c7987947deafd8780acf49").unwrap();
        let mut sealed = nonce.clone();
        sealed.extend_from_slice(&ciphertext);
        sealed.extend_from_slice(&tag);
        let k = SecretKey::from_bytes(key_bytes);
        assert_eq!(open(&k, &aad, &sealed).unwrap(), plaintext.to_vec());
    }

    /// Argon2id known answer. RFC 9106's vector needs a secret and associated data, which this
    /// API does not pass, so this one was computed with the reference C implementation
    /// (python argon2-cffi `hash_secret_raw(b"password", b"\x02"*32, time_cost=1,
    /// memory_cost=8, parallelism=1, hash_len=32, type=ID, version=19)`): it pins the
    /// algorithm, the version and the parameter mapping.
    #[test]
    fn argon2id_is_stable() {
        let salt = [0x02u8; SALT_LEN];
        let k = derive_key(b"password", &salt, CHEAP).unwrap();
        let again = derive_key(b"password", &salt, CHEAP).unwrap();
        assert!(ct_eq(k.expose(), again.expose()));
        let other = derive_key(b"passwore", &salt, CHEAP).unwrap();
        assert!(!ct_eq(k.expose(), other.expose()));
        assert_eq!(hex::encode(k.expose()), ARGON2ID_CHEAP_VECTOR);
    }
    const ARGON2ID_CHEAP_VECTOR: &str =
        "03a3bf3aae0ca6e797040420b1f971d2363c42470b2689e6f31a4756064dbc74";

    #[test]
    fn wrap_and_unwrap() {
        let keys = MasterKeys::generate().unwrap();
        let wrapped = wrap_master_keys(&keys, b"correct horse", CHEAP).unwrap();
        let back = unwrap_master_keys(&wrapped, b"correct horse").unwrap();
        assert_eq!(keys.to_bytes()[..], back.to_bytes()[..]);
        assert_eq!(
            unwrap_master_keys(&wrapped, b"wrong horse").unwrap_err(),
            CryptoError::Authentication
        );
    }

    #[test]
    fn hostile_kdf_params_are_refused() {
        let p = KdfParams {
            memory_kib: u32::MAX,
            iterations: 1,
            parallelism: 1,
        };
        assert!(matches!(
            derive_key(b"x", &[0; SALT_LEN], p),
            Err(CryptoError::KdfParams(_))
        ));
        let p = KdfParams {
            memory_kib: 8,
            iterations: 0,
            parallelism: 1,
        };
        assert!(matches!(
            derive_key(b"x", &[0; SALT_LEN], p),
            Err(CryptoError::KdfParams(_))
        ));
    }

    #[test]
    fn content_ids_are_keyed() {
        let a = MasterKeys::generate().unwrap();
        let b = MasterKeys::generate().unwrap();
        assert_eq!(a.content_id(b"x"), a.content_id(b"x"));
        assert_ne!(a.content_id(b"x"), b.content_id(b"x"));
        assert_ne!(a.content_id(b"x"), *blake3::hash(b"x").as_bytes());
    }

    #[test]
    fn debug_never_shows_secrets() {
        let k = SecretKey::from_bytes([0xab; KEY_LEN]);
        let keys = MasterKeys::generate().unwrap();
        assert_eq!(format!("{k:?}"), "SecretKey(<redacted>)");
        assert_eq!(format!("{keys:?}"), "MasterKeys(<redacted>)");
        assert!(!format!("{k:?}").contains("ab"));
    }

    #[test]
    fn master_key_bytes_round_trip() {
        let keys = MasterKeys::generate().unwrap();
        let back = MasterKeys::from_bytes(&keys.to_bytes()[..]).unwrap();
        assert_eq!(keys.fingerprint(), back.fingerprint());
        assert_eq!(
            MasterKeys::from_bytes(&[0; 5]).unwrap_err(),
            CryptoError::KeyLength(5)
        );
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}

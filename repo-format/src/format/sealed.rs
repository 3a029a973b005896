//! The envelope of every encrypted metadata object (config, index, snapshot, pack header).
//!
//! Layout: `"CFFR" || kind (1 byte) || format version (1 byte) || seal(header, plaintext)` where
//! `seal` is XChaCha20-Poly1305 with the 6-byte header as associated data. The header is readable
//! without a key, so a reader can refuse an unknown format version before decrypting, and it is
//! authenticated, so storage cannot relabel an index as a snapshot or downgrade a version.

use crate::error::{Error, Result};
use coffer_crypto::MasterKeys;

/// Magic bytes that open every sealed object.
pub const MAGIC: &[u8; 4] = b"CFFR";
/// The format version this program reads and writes.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes before the sealed payload.
pub const HEADER_LEN: usize = 6;

/// Which kind of object an envelope holds; part of the authenticated header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectKind {
    /// The repository configuration (`config`).
    Config = 1,
    /// An index file (`index/<id>`).
    Index = 2,
    /// A snapshot (`snapshots/<id>`).
    Snapshot = 3,
    /// The header at the end of a pack file.
    PackHeader = 4,
    /// A deletion plan written by prune (`plans/<id>`).
    DeletionPlan = 5,
    /// A maintenance lease (`locks/lease-<sequence>`).
    Lease = 6,
    /// The result of one `coffer drill` (`drills/<id>`).
    DrillResult = 7,
}

impl ObjectKind {
    fn header(self) -> [u8; HEADER_LEN] {
        [
            MAGIC[0],
            MAGIC[1],
            MAGIC[2],
            MAGIC[3],
            self as u8,
            FORMAT_VERSION,
        ]
    }
}

/// Seals `plaintext` as an object of `kind`.
pub fn seal(keys: &MasterKeys, kind: ObjectKind, plaintext: &[u8]) -> Result<Vec<u8>> {
    let header = kind.header();
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + coffer_crypto::SEAL_OVERHEAD);
    out.extend_from_slice(&header);
    keys.seal_into(&header, plaintext, &mut out)?;
    Ok(out)
}

/// Checks the header and opens an object of `kind`. `what` and `id` name it in errors.
pub fn open(
    keys: &MasterKeys,
    kind: ObjectKind,
    what: &'static str,
    id: &str,
    bytes: &[u8],
) -> Result<Vec<u8>> {
    if bytes.len() < HEADER_LEN + coffer_crypto::SEAL_OVERHEAD {
        return Err(Error::corrupt(
            what,
            id,
            format!("truncated: {} bytes", bytes.len()),
        ));
    }
    if &bytes[..4] != MAGIC {
        return Err(Error::corrupt(what, id, "not a coffer object (bad magic)"));
    }
    if bytes[5] != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            found: bytes[5].into(),
            supported: FORMAT_VERSION.into(),
        });
    }
    if bytes[4] != kind as u8 {
        return Err(Error::corrupt(
            what,
            id,
            format!("holds object kind {}, expected {}", bytes[4], kind as u8),
        ));
    }
    keys.open(&bytes[..HEADER_LEN], &bytes[HEADER_LEN..])
        .map_err(|e| Error::corrupt(what, id, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let keys = MasterKeys::generate().unwrap();
        let sealed = seal(&keys, ObjectKind::Snapshot, b"{}").unwrap();
        assert_eq!(
            open(&keys, ObjectKind::Snapshot, "snapshot", "x", &sealed).unwrap(),
            b"{}"
        );
        // Relabelled as another kind: refused before and by authentication.
        let mut relabelled = sealed.clone();
        relabelled[4] = ObjectKind::Index as u8;
        assert!(open(&keys, ObjectKind::Index, "index", "x", &relabelled).is_err());
        assert!(open(&keys, ObjectKind::Index, "index", "x", &sealed).is_err());
        let mut future = sealed.clone();
        future[5] = 9;
        assert!(matches!(
            open(&keys, ObjectKind::Snapshot, "snapshot", "x", &future),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
        let err = open(
            &keys,
            ObjectKind::Snapshot,
            "snapshot",
            "abc",
            &sealed[..20],
        )
        .unwrap_err();
        assert!(err.to_string().contains("snapshot abc is corrupt"), "{err}");
        let mut flipped = sealed;
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(open(&keys, ObjectKind::Snapshot, "snapshot", "x", &flipped).is_err());
    }
}

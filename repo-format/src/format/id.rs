//! Typed 256-bit identifiers: blobs, packs, indexes, snapshots, key files, deletion plans,
//! drill results.
//!
//! Every id is 32 bytes shown as 64 lowercase hex digits. Blob ids are keyed BLAKE3 of the
//! plaintext; every other id is the unkeyed BLAKE3 of the stored bytes, so a file's name
//! verifies its content. Equality is constant time.

use std::fmt;

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// What this id names, for messages.
            pub const WHAT: &'static str = $what;

            /// Parses 64 hex digits.
            pub fn from_hex(s: &str) -> Option<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).ok()?;
                Some($name(out))
            }

            /// The 64-digit lowercase hex form.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex digits, for display.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// The id from a slice of exactly 32 bytes.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                Some($name(bytes.try_into().ok()?))
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                coffer_crypto::ct_eq(&self.0, &other.0)
            }
        }
        impl Eq for $name {}

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.0.hash(state)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::from_hex(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!("invalid {} id {:?}", $what, s))
                })
            }
        }
    };
}

define_id!(
    /// A blob: keyed BLAKE3 of its plaintext under the content-id key.
    BlobId, "blob"
);
define_id!(
    /// A pack file: BLAKE3 of its stored bytes.
    PackId, "pack"
);
define_id!(
    /// An index file: BLAKE3 of its stored bytes.
    IndexId, "index"
);
define_id!(
    /// A snapshot: BLAKE3 of its stored bytes.
    SnapshotId, "snapshot"
);
define_id!(
    /// A key file: BLAKE3 of its stored bytes.
    KeyId, "key"
);
define_id!(
    /// A deletion plan: BLAKE3 of its stored bytes.
    PlanId, "deletion plan"
);
define_id!(
    /// A drill result: BLAKE3 of its stored bytes.
    DrillId, "drill result"
);

/// BLAKE3 of stored bytes, the name of every non-blob object.
pub(crate) fn storage_hash(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects() {
        let id = BlobId([0xab; 32]);
        assert_eq!(BlobId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(BlobId::from_hex("abc"), None);
        assert_eq!(BlobId::from_hex(&"zz".repeat(32)), None);
        assert_eq!(id.short(), "abababab");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<BlobId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<BlobId>("\"00\"").is_err());
    }
}

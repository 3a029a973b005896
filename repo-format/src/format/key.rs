//! Object keys: the one place that knows where each stored object lives (spec section 2).
//!
//! ```text
//! config                          the configuration
//! keys/<key id>                   key files
//! data/<first 2 hex of id>/<id>   packs
//! index/<index id>                index files
//! snapshots/<snapshot id>         snapshots
//! plans/<plan id>                 deletion plans
//! locks/lease-<n>                 lease records, n = 20 decimal digits, zero-padded
//! drills/<drill result id>       drill results
//! ```
//!
//! [`ObjectKey`] renders a key ([`std::fmt::Display`]) and parses one back
//! ([`ObjectKey::parse`]), strictly: any other name under these directories (an NFS `.nfsXXXX`
//! file, an upper-case copy, a pack in the wrong fan-out directory) is a stray, not Coffer's.
//! [`ObjectClass`] names each kind of object with its directory, the word used for it in messages
//! and the named maximum size of a whole-object read (spec section 12).
//!
//! Pure: uses only the id types and the size constants of the other format modules.

use crate::format::config::{MAX_CONFIG_SIZE, PACK_SIZE_RANGE};
use crate::format::drill::MAX_DRILL_SIZE;
use crate::format::id::{DrillId, IndexId, KeyId, PackId, PlanId, SnapshotId};
use crate::format::index::MAX_INDEX_FILE_SIZE;
use crate::format::keyfile::MAX_KEY_FILE_SIZE;
use crate::format::lease::MAX_LEASE_SIZE;
use crate::format::pack::max_pack_size;
use crate::format::snapshot::MAX_SNAPSHOT_SIZE;
use std::fmt;

/// The key of the configuration object.
pub const CONFIG: &str = "config";
/// Prefix of a lease record's name inside `locks/`.
const LEASE_PREFIX: &str = "lease-";
/// Digits of a lease record's sequence number (rendered with `{:020}`).
const LEASE_DIGITS: usize = 20;

/// A kind of stored object: where it lives and how large a whole read of it may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectClass {
    /// `config`.
    Config,
    /// `keys/<id>`.
    KeyFile,
    /// `data/<ab>/<id>`.
    Pack,
    /// `index/<id>`.
    Index,
    /// `snapshots/<id>`.
    Snapshot,
    /// `plans/<id>`.
    Plan,
    /// `locks/lease-<n>`.
    Lease,
    /// `drills/<id>`.
    Drill,
}

impl ObjectClass {
    /// Every class, in the order of the layout table.
    pub const ALL: [ObjectClass; 8] = [
        ObjectClass::Config,
        ObjectClass::KeyFile,
        ObjectClass::Pack,
        ObjectClass::Index,
        ObjectClass::Snapshot,
        ObjectClass::Plan,
        ObjectClass::Lease,
        ObjectClass::Drill,
    ];

    /// The top-level directory the class's objects live in (for `config`, its own key): what
    /// storage listings are asked for.
    pub fn dir(self) -> &'static str {
        match self {
            ObjectClass::Config => CONFIG,
            ObjectClass::KeyFile => "keys",
            ObjectClass::Pack => "data",
            ObjectClass::Index => "index",
            ObjectClass::Snapshot => "snapshots",
            ObjectClass::Plan => "plans",
            ObjectClass::Lease => "locks",
            ObjectClass::Drill => "drills",
        }
    }

    /// The class whose objects live in `dir`, if any.
    pub fn from_dir(dir: &str) -> Option<ObjectClass> {
        ObjectClass::ALL.into_iter().find(|c| c.dir() == dir)
    }

    /// What an object of the class is called in messages (`index`, `key file`): errors name the
    /// object by it, so it is kept exactly as the messages always had it.
    pub fn what(self) -> &'static str {
        match self {
            ObjectClass::Config => "config",
            ObjectClass::KeyFile => "key file",
            ObjectClass::Pack => "pack",
            ObjectClass::Index => "index",
            ObjectClass::Snapshot => "snapshot",
            ObjectClass::Plan => "deletion plan",
            ObjectClass::Lease => "lease",
            ObjectClass::Drill => "drill result",
        }
    }

    /// The named maximum size of a whole object of the class (spec section 12), which a reader
    /// checks before downloading it or allocating for it. For packs it is the largest pack any
    /// repository may write (the largest target size); a reader that knows the repository's
    /// target size uses the tighter [`max_pack_size`] of it.
    pub fn max_size(self) -> u64 {
        match self {
            ObjectClass::Config => MAX_CONFIG_SIZE,
            ObjectClass::KeyFile => MAX_KEY_FILE_SIZE,
            ObjectClass::Pack => max_pack_size(*PACK_SIZE_RANGE.end()),
            // A deletion plan reuses the index file body and its limits (spec section 11a).
            ObjectClass::Index | ObjectClass::Plan => MAX_INDEX_FILE_SIZE,
            ObjectClass::Snapshot => MAX_SNAPSHOT_SIZE,
            ObjectClass::Lease => MAX_LEASE_SIZE,
            ObjectClass::Drill => MAX_DRILL_SIZE,
        }
    }
}

/// The key of one stored object. Rendering it ([`fmt::Display`], `to_string()`) gives the
/// storage key; [`ObjectKey::parse`] gives it back from a key, so a listing is read with the
/// same rules the writer used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKey {
    /// `config`.
    Config,
    /// `keys/<id>`.
    KeyFile(KeyId),
    /// `data/<first two hex digits>/<id>`.
    Pack(PackId),
    /// `index/<id>`.
    Index(IndexId),
    /// `snapshots/<id>`.
    Snapshot(SnapshotId),
    /// `plans/<id>`.
    Plan(PlanId),
    /// `locks/lease-<sequence, 20 digits>`.
    Lease(u64),
    /// `drills/<id>`.
    Drill(DrillId),
}

impl ObjectKey {
    /// The object's class.
    pub fn class(&self) -> ObjectClass {
        match self {
            ObjectKey::Config => ObjectClass::Config,
            ObjectKey::KeyFile(_) => ObjectClass::KeyFile,
            ObjectKey::Pack(_) => ObjectClass::Pack,
            ObjectKey::Index(_) => ObjectClass::Index,
            ObjectKey::Snapshot(_) => ObjectClass::Snapshot,
            ObjectKey::Plan(_) => ObjectClass::Plan,
            ObjectKey::Lease(_) => ObjectClass::Lease,
            ObjectKey::Drill(_) => ObjectClass::Drill,
        }
    }

    /// The object's name within its directory, as errors name it: the 64 hex digits of its id,
    /// `config`, or `lease-<n>`.
    pub fn name(&self) -> String {
        match self {
            ObjectKey::Config => CONFIG.to_string(),
            ObjectKey::KeyFile(id) => id.to_hex(),
            ObjectKey::Pack(id) => id.to_hex(),
            ObjectKey::Index(id) => id.to_hex(),
            ObjectKey::Snapshot(id) => id.to_hex(),
            ObjectKey::Plan(id) => id.to_hex(),
            ObjectKey::Lease(seq) => format!("{LEASE_PREFIX}{seq:020}"),
            ObjectKey::Drill(id) => id.to_hex(),
        }
    }

    /// The hash the object's bytes must have, for content-named objects (all but `config` and
    /// lease records, spec section 2): what a verified cache compares a stored copy with.
    pub fn content_hash(&self) -> Option<[u8; 32]> {
        match self {
            ObjectKey::Config | ObjectKey::Lease(_) => None,
            ObjectKey::KeyFile(id) => Some(id.0),
            ObjectKey::Pack(id) => Some(id.0),
            ObjectKey::Index(id) => Some(id.0),
            ObjectKey::Snapshot(id) => Some(id.0),
            ObjectKey::Plan(id) => Some(id.0),
            ObjectKey::Drill(id) => Some(id.0),
        }
    }

    /// Parses a storage key. Only the names Coffer writes are accepted: ids as exactly 64
    /// lowercase hex digits, a pack in the fan-out directory of its id's first two digits, a
    /// lease sequence as exactly 20 decimal digits. Anything else is `None` (a stray).
    pub fn parse(key: &str) -> Option<ObjectKey> {
        if key == CONFIG {
            return Some(ObjectKey::Config);
        }
        let (dir, rest) = key.split_once('/')?;
        let class = ObjectClass::from_dir(dir)?;
        ObjectKey::parse_name(class, rest)
    }

    /// Parses `key` as an object of `class`; `None` if it is anything else.
    pub fn parse_as(class: ObjectClass, key: &str) -> Option<ObjectKey> {
        ObjectKey::parse(key).filter(|k| k.class() == class)
    }

    /// Parses the part of a key after `<dir>/`.
    fn parse_name(class: ObjectClass, rest: &str) -> Option<ObjectKey> {
        match class {
            ObjectClass::Config => None,
            ObjectClass::KeyFile => id_hex(rest).map(|b| ObjectKey::KeyFile(KeyId(b))),
            ObjectClass::Index => id_hex(rest).map(|b| ObjectKey::Index(IndexId(b))),
            ObjectClass::Snapshot => id_hex(rest).map(|b| ObjectKey::Snapshot(SnapshotId(b))),
            ObjectClass::Plan => id_hex(rest).map(|b| ObjectKey::Plan(PlanId(b))),
            ObjectClass::Drill => id_hex(rest).map(|b| ObjectKey::Drill(DrillId(b))),
            ObjectClass::Pack => {
                let (fan, id) = rest.split_once('/')?;
                let bytes = id_hex(id)?;
                (fan.len() == 2 && id.starts_with(fan)).then_some(ObjectKey::Pack(PackId(bytes)))
            }
            ObjectClass::Lease => {
                let digits = rest.strip_prefix(LEASE_PREFIX)?;
                if digits.len() != LEASE_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                digits.parse().ok().map(ObjectKey::Lease)
            }
        }
    }
}

/// Exactly 64 lowercase hex digits, as bytes.
fn id_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::Config => f.write_str(CONFIG),
            ObjectKey::Pack(id) => {
                let hex = id.to_hex();
                write!(f, "{}/{}/{}", ObjectClass::Pack.dir(), &hex[..2], hex)
            }
            other => write!(f, "{}/{}", other.class().dir(), other.name()),
        }
    }
}

/// Whether `key` is a name Coffer writes under `dir` (what storage listings split objects from
/// strays by): `key` parses as an [`ObjectKey`] whose class lives in `dir`.
pub fn is_object_name(dir: &str, key: &str) -> bool {
    ObjectClass::from_dir(dir).is_some_and(|class| ObjectKey::parse_as(class, key).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<ObjectKey> {
        let b = [0xa7; 32];
        vec![
            ObjectKey::Config,
            ObjectKey::KeyFile(KeyId(b)),
            ObjectKey::Pack(PackId(b)),
            ObjectKey::Index(IndexId(b)),
            ObjectKey::Snapshot(SnapshotId(b)),
            ObjectKey::Plan(PlanId(b)),
            ObjectKey::Lease(0),
            ObjectKey::Lease(42),
            ObjectKey::Lease(u64::MAX),
            ObjectKey::Drill(DrillId(b)),
        ]
    }

    #[test]
    fn keys_render_as_the_spec_lays_them_out() {
        let hex = "a7".repeat(32);
        let rendered: Vec<String> = every_kind().iter().map(|k| k.to_string()).collect();
        assert_eq!(
            rendered,
            [
                "config".to_string(),
                format!("keys/{hex}"),
                format!("data/a7/{hex}"),
                format!("index/{hex}"),
                format!("snapshots/{hex}"),
                format!("plans/{hex}"),
                "locks/lease-00000000000000000000".to_string(),
                "locks/lease-00000000000000000042".to_string(),
                "locks/lease-18446744073709551615".to_string(),
                format!("drills/{hex}"),
            ]
        );
    }

    #[test]
    fn render_and_parse_round_trip() {
        for key in every_kind() {
            let text = key.to_string();
            assert_eq!(ObjectKey::parse(&text), Some(key), "{text}");
            assert_eq!(ObjectKey::parse_as(key.class(), &text), Some(key));
            assert!(
                text == "config" || is_object_name(key.class().dir(), &text),
                "{text}"
            );
            assert!(text.ends_with(&key.name()), "{text}");
            let named_by_hash = !matches!(key, ObjectKey::Config | ObjectKey::Lease(_));
            assert_eq!(key.content_hash(), named_by_hash.then_some([0xa7; 32]));
        }
        // The class of every other directory refuses it.
        let index = ObjectKey::Index(IndexId([1; 32])).to_string();
        assert_eq!(ObjectKey::parse_as(ObjectClass::Snapshot, &index), None);
        assert!(!is_object_name("snapshots", &index));
    }

    #[test]
    fn stray_names_are_refused() {
        let id = "ab".repeat(32);
        for stray in [
            format!("snapshots/{}", id.to_uppercase()),
            format!("snapshots/{id}0"),
            format!("snapshots/{}", &id[1..]),
            format!("snapshots/x/{id}"),
            format!("snapshots/{}", "g".repeat(64)),
            "snapshots/.nfs0000abcd".to_string(),
            format!("index/{id}.tmp"),
            format!("keys/{id}~"),
            format!("plans/{id}/"),
            format!("drills/{id}.tmp"),
            format!("drills/x/{id}"),
            format!("data/cd/{id}"),
            format!("data/{id}"),
            format!("data/ab/{id}.tmp"),
            format!("data/a/{id}"),
            format!("data/abc/{id}"),
            format!("other/{id}"),
            format!("/snapshots/{id}"),
            "config/x".to_string(),
            "Config".to_string(),
            "locks/lease-7".to_string(),
            "locks/lease-+0000000000000000007".to_string(),
            "locks/lease-000000000000000000007".to_string(),
            "locks/lease-99999999999999999999".to_string(),
            "locks/LEASE-00000000000000000007".to_string(),
            format!("locks/{id}"),
            String::new(),
        ] {
            assert_eq!(ObjectKey::parse(&stray), None, "{stray}");
        }
    }

    #[test]
    fn is_object_name_accepts_what_it_always_accepted() {
        // The cases of storage's earlier name check, for each directory it was asked about.
        let id = "0123456789abcdef".repeat(4);
        for dir in ["keys", "index", "snapshots", "plans", "drills"] {
            assert!(is_object_name(dir, &format!("{dir}/{id}")), "{dir}");
            assert!(!is_object_name(
                dir,
                &format!("{dir}/{}", id.to_uppercase())
            ));
            assert!(!is_object_name(dir, &format!("{dir}/{id}0")));
            assert!(!is_object_name(dir, &format!("{dir}/x/{id}")));
        }
        assert!(is_object_name("data", &format!("data/01/{id}")));
        assert!(!is_object_name("data", &format!("data/02/{id}")));
        assert!(!is_object_name("data", &format!("data/{id}")));
        assert!(is_object_name("locks", "locks/lease-00000000000000000001"));
        assert!(!is_object_name("locks", &format!("locks/{id}")));
    }

    #[test]
    fn classes_know_their_directory_and_maximum() {
        for class in ObjectClass::ALL {
            assert_eq!(ObjectClass::from_dir(class.dir()), Some(class));
            assert!(class.max_size() > 0);
        }
        assert_eq!(ObjectClass::from_dir("tmp"), None);
        assert_eq!(ObjectClass::Snapshot.max_size(), MAX_SNAPSHOT_SIZE);
        assert_eq!(ObjectClass::Plan.max_size(), MAX_INDEX_FILE_SIZE);
        assert_eq!(ObjectClass::Lease.max_size(), 64 * 1024);
        assert_eq!(ObjectClass::Config.max_size(), 64 * 1024);
        assert_eq!(ObjectClass::KeyFile.what(), "key file");
        assert_eq!(ObjectClass::Drill.max_size(), 1024 * 1024);
        assert_eq!(ObjectClass::Drill.what(), "drill result");
    }
}

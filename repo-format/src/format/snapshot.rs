//! Snapshots: `snapshots/<id>`, sealed JSON documents naming a root tree and describing the
//! backup (time, host, paths, tags, labels, parent, summary). A snapshot is written last, after
//! the packs and the index it relies on, so a snapshot that exists is complete.
//!
//! Pure: bytes in, typed values out; reading and writing them is `repository/stored.rs`'s.

use crate::error::{Error, Result};
use crate::format::id::{storage_hash, BlobId, SnapshotId};
use crate::format::sealed::{self, ObjectKind};
use coffer_crypto::MasterKeys;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest snapshot object read (bytes).
pub const MAX_SNAPSHOT_SIZE: u64 = 16 * 1024 * 1024;

/// What a backup did, recorded in its snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// FIFOs and device nodes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub special_files: u64,
    /// Total size of the files in the snapshot.
    pub total_bytes: u64,
    /// Bytes actually read from the sources (unchanged files reused from the parent are not read).
    pub bytes_read: u64,
    /// Files reused from the parent snapshot without reading.
    pub files_unchanged: u64,
    pub data_blobs_new: u64,
    pub tree_blobs_new: u64,
    /// Plaintext bytes of new blobs.
    pub added_raw_bytes: u64,
    /// Stored (compressed, encrypted) bytes of new blobs.
    pub added_stored_bytes: u64,
    pub packs_written: u64,
    /// Source files that could not be read and are missing from the snapshot.
    pub errors: u64,
    pub duration_seconds: f64,
    /// Warnings that this backup looks wrong against the history of its sources (a dump much
    /// smaller than usual, tables that lost their rows), decided before it was saved. Optional:
    /// absent when there are none, and in snapshots written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A snapshot document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the backup was taken (RFC 3339 with offset): the text as stored, and the instant.
    pub time: SnapshotTime,
    /// Root tree.
    pub tree: BlobId,
    /// Backed-up paths as given (absolute), or the stdin name.
    pub paths: Vec<String>,
    pub hostname: String,
    pub username: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<SnapshotId>,
    #[serde(default)]
    pub excludes: Vec<String>,
    /// The coffer version that wrote it.
    pub program_version: String,
    /// Fingerprint of the master keys that sealed the data.
    pub key_id: String,
    #[serde(default)]
    pub summary: Summary,
    /// The named sources of a configured backup (empty for `coffer backup PATHS` and streams,
    /// and in snapshots written before sources existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceRecord>,
    /// Set when this snapshot replaced another with changed labels (a recorded drill): the
    /// replaced snapshot's id. The tree and everything else are the original's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<SnapshotId>,
    /// The snapshot of another repository this one was copied from by `coffer copy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<SnapshotId>,
}

/// One named source of a snapshot: where its content sits in the tree and what it was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The source's name in the configuration (`db`, `files`, `env`).
    pub name: String,
    /// `path`, `postgres` or `command`.
    pub kind: String,
    /// Absolute path of the source's content inside the snapshot tree.
    pub tree_path: String,
    /// For `path` sources: where the content came from on the backed-up host (restore puts it
    /// back there). For the others: absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// For stream sources (`postgres`, `command`): bytes, SHA-256 and duration of the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamRecord>,
    /// For `postgres` sources: what the dump holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresRecord>,
}

/// The measured facts of a stream source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub bytes: u64,
    /// SHA-256 of the stream as produced (hex), comparable with `sha256sum` of a dump file.
    pub sha256: String,
    pub duration_seconds: f64,
}

/// A PostgreSQL dump source, read in the same transaction snapshot as the dump.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PostgresRecord {
    pub database: String,
    /// `server_version` of the server that was dumped.
    pub server_version: String,
    /// `custom` (pg_dump -Fc) or `plain` (SQL).
    pub format: String,
    /// Entries in the dump's table of contents (`pg_restore --list`); 0 for plain dumps.
    pub toc_entries: u64,
    /// Exact row counts of every ordinary table, in schema and name order.
    pub tables: Vec<TableRows>,
    /// The roles the dump needs (owners of its objects, roles in its privileges, the
    /// database's owner), with their definitions, in name order. Absent in snapshots written
    /// before roles were recorded; an empty list means the dump needs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<RoleRecord>>,
    /// The roles' password hashes were stored (`roles-with-passwords = true`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub role_passwords: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One role a dump needs, as `pg_roles` and `pg_auth_members` describe it on the dumped server.
/// Its `Debug` never shows the password hash.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleRecord {
    /// The role's name as stored in the catalog (unquoted).
    pub name: String,
    /// It owns objects of the dump.
    #[serde(default)]
    pub owner: bool,
    /// It appears in the dump's privileges (a grantee or grantor, default privileges).
    #[serde(default)]
    pub acl: bool,
    /// It owns the dumped database.
    #[serde(default)]
    pub database_owner: bool,
    #[serde(default)]
    pub superuser: bool,
    #[serde(default)]
    pub inherit: bool,
    #[serde(default)]
    pub createrole: bool,
    #[serde(default)]
    pub createdb: bool,
    #[serde(default)]
    pub login: bool,
    #[serde(default)]
    pub replication: bool,
    #[serde(default)]
    pub bypassrls: bool,
    /// `-1`: no limit.
    #[serde(default = "no_limit")]
    pub connection_limit: i64,
    /// `rolvaliduntil` as the server printed it; absent when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// The stored password hash (`SCRAM-SHA-256$...` or `md5...`), only with
    /// `role_passwords`; absent otherwise and for roles without a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The recorded roles this one is a member of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_of: Vec<Membership>,
}

fn no_limit() -> i64 {
    -1
}

impl std::fmt::Debug for RoleRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleRecord")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("acl", &self.acl)
            .field("database_owner", &self.database_owner)
            .field("superuser", &self.superuser)
            .field("inherit", &self.inherit)
            .field("createrole", &self.createrole)
            .field("createdb", &self.createdb)
            .field("login", &self.login)
            .field("replication", &self.replication)
            .field("bypassrls", &self.bypassrls)
            .field("connection_limit", &self.connection_limit)
            .field("valid_until", &self.valid_until)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("member_of", &self.member_of)
            .finish()
    }
}

/// A role membership: the member is a member of `role`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub role: String,
    /// WITH ADMIN OPTION.
    #[serde(default)]
    pub admin: bool,
}

/// The row count of one table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    pub schema: String,
    pub table: String,
    pub rows: u64,
}

/// A snapshot's time: the RFC 3339 text exactly as stored (written back byte for byte, offset
/// form included) and the instant it names, parsed once when the snapshot is read or made, so
/// sorting and retention compare instants without parsing again.
///
/// It serialises as the text alone (the stored JSON is unchanged) and refuses, when
/// deserialised, a text that is not an RFC 3339 time with an offset. It dereferences to the
/// text and displays as it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotTime {
    text: String,
    at: jiff::Timestamp,
}

impl SnapshotTime {
    /// The time of a backup taken at `time`, in the form Coffer writes
    /// (`2026-01-02T03:04:05.123456789+01:00`).
    pub fn from_zoned(time: &jiff::Zoned) -> SnapshotTime {
        let text = time.strftime("%Y-%m-%dT%H:%M:%S%.f%:z").to_string();
        // The instant is the one the text names when it is read back (an offset with seconds,
        // which `%:z` drops, would otherwise make the two differ).
        let at = text.parse().unwrap_or_else(|_| time.timestamp());
        SnapshotTime { text, at }
    }

    /// The instant.
    pub fn timestamp(&self) -> jiff::Timestamp {
        self.at
    }

    /// The text as stored.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl std::str::FromStr for SnapshotTime {
    type Err = jiff::Error;

    /// Parses a stored time; the text is kept as given.
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(SnapshotTime {
            at: s.parse()?,
            text: s.to_string(),
        })
    }
}

impl std::ops::Deref for SnapshotTime {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for SnapshotTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for SnapshotTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for SnapshotTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("bad time {text:?}: {e}")))
    }
}

impl Snapshot {
    /// The snapshot time as a timestamp (parsed when the snapshot was read or made).
    pub fn timestamp(&self) -> jiff::Timestamp {
        self.time.timestamp()
    }

    /// The stored form: sealed JSON, and the id it is stored under.
    pub fn to_stored(&self, keys: &MasterKeys) -> Result<(SnapshotId, Vec<u8>)> {
        let json = serde_json::to_vec(self).map_err(Error::internal)?;
        let bytes = sealed::seal(keys, ObjectKind::Snapshot, &json)?;
        Ok((SnapshotId(storage_hash(&bytes)), bytes))
    }

    /// Verifies and parses the stored bytes of snapshot `id`: size, name, authentication, then
    /// the JSON (a time that is not RFC 3339 with an offset is refused).
    pub fn from_stored(keys: &MasterKeys, id: &SnapshotId, bytes: &[u8]) -> Result<Snapshot> {
        let name = id.to_hex();
        if bytes.len() as u64 > MAX_SNAPSHOT_SIZE {
            return Err(Error::corrupt("snapshot", &name, "too large"));
        }
        if storage_hash(bytes) != id.0 {
            return Err(Error::corrupt(
                "snapshot",
                &name,
                "content does not match its name",
            ));
        }
        let plain = sealed::open(keys, ObjectKind::Snapshot, "snapshot", &name, bytes)?;
        serde_json::from_slice(&plain).map_err(|e| Error::corrupt("snapshot", &name, e))
    }

    /// A copy carrying `labels` added (same tree, time and summary), whose `original` names
    /// the first snapshot of the chain; `id` is this snapshot's id.
    pub fn relabelled(&self, id: &SnapshotId, labels: &BTreeMap<String, String>) -> Snapshot {
        let mut copy = self.clone();
        copy.labels
            .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        copy.original = Some(self.original.unwrap_or(*id));
        copy
    }
}

/// Every snapshot that could be read, and the ones that could not.
#[derive(Debug, Default)]
pub struct Snapshots {
    /// Oldest first (ties by id).
    pub good: Vec<(SnapshotId, Snapshot)>,
    /// Snapshots that failed to load (damaged, or sealed with other keys), by id, with why.
    /// Commands that do not need them skip them with a warning; asking for one by id fails.
    pub damaged: Vec<(SnapshotId, Error)>,
}

impl Snapshots {
    /// Resolves `spec` as [`resolve`] does among the good snapshots, except that an id or prefix
    /// that names a damaged snapshot fails naming it (or is ambiguous) instead of finding
    /// nothing. `latest` is the latest good snapshot.
    pub fn resolve(&self, spec: &str) -> Result<&(SnapshotId, Snapshot)> {
        let spec_lower = spec.to_ascii_lowercase();
        let damaged: Vec<&(SnapshotId, Error)> = if spec == "latest" || spec_lower.len() < 4 {
            Vec::new()
        } else {
            self.damaged
                .iter()
                .filter(|(id, _)| id.to_hex().starts_with(&spec_lower))
                .collect()
        };
        let Some((id, error)) = damaged.first() else {
            return resolve(&self.good, spec);
        };
        let good = match resolve(&self.good, spec) {
            Ok(_) => 1,
            Err(Error::AmbiguousSnapshot { count, .. }) => count,
            Err(_) => 0,
        };
        if good + damaged.len() > 1 {
            return Err(Error::AmbiguousSnapshot {
                prefix: spec.into(),
                count: good + damaged.len(),
            });
        }
        let reason = match error {
            Error::Corrupt { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        Err(Error::corrupt("snapshot", id, reason))
    }

    /// One line per damaged snapshot, naming it and the reason, for warnings.
    pub fn damage_warnings(&self) -> Vec<String> {
        self.damaged
            .iter()
            .map(|(_, e)| format!("{e}; skipped"))
            .collect()
    }
}

/// Sorts oldest first; snapshots with equal times by id.
pub fn sort_by_time(snapshots: &mut [(SnapshotId, Snapshot)]) {
    snapshots.sort_by(|(ia, a), (ib, b)| {
        a.timestamp()
            .cmp(&b.timestamp())
            .then_with(|| ia.0.cmp(&ib.0))
    });
}

/// Resolves `latest`, a full id, or a unique id prefix (at least 4 hex digits) among
/// `snapshots` (oldest first).
pub fn resolve<'a>(
    snapshots: &'a [(SnapshotId, Snapshot)],
    spec: &str,
) -> Result<&'a (SnapshotId, Snapshot)> {
    if spec == "latest" {
        return snapshots
            .last()
            .ok_or_else(|| Error::SnapshotNotFound(spec.into()));
    }
    let spec_lower = spec.to_ascii_lowercase();
    if spec_lower.len() < 4 || !spec_lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidInput(format!(
            "{spec:?} is not a snapshot id: give `latest`, a full id, or at least 4 hex digits of one"
        )));
    }
    let matches: Vec<_> = snapshots
        .iter()
        .filter(|(id, _)| id.to_hex().starts_with(&spec_lower))
        .collect();
    match matches.len() {
        0 => Err(Error::SnapshotNotFound(spec.into())),
        1 => Ok(matches[0]),
        n => Err(Error::AmbiguousSnapshot {
            prefix: spec.into(),
            count: n,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_at(time: &str) -> Snapshot {
        Snapshot {
            time: time.parse().unwrap(),
            tree: BlobId([7; 32]),
            paths: vec!["/srv".into()],
            hostname: "h".into(),
            username: "u".into(),
            tags: Vec::new(),
            labels: BTreeMap::new(),
            parent: None,
            excludes: Vec::new(),
            program_version: "test".into(),
            key_id: String::new(),
            summary: Summary::default(),
            sources: Vec::new(),
            original: None,
            copied_from: None,
        }
    }

    #[test]
    fn snapshot_time_is_written_back_exactly_as_read() {
        for text in [
            "2026-01-02T03:04:05.123456789+01:00",
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00+00:00",
            "2025-11-02T01:30:00-05:00",
            "2026-06-01T12:00:00.5+05:45",
        ] {
            let snap = snapshot_at(text);
            let json = serde_json::to_vec(&snap).unwrap();
            let back: Snapshot = serde_json::from_slice(&json).unwrap();
            assert_eq!(back.time.as_str(), text);
            assert_eq!(&*back.time, text);
            assert_eq!(back.time.to_string(), text);
            assert_eq!(back.timestamp(), text.parse::<jiff::Timestamp>().unwrap());
            // Byte for byte: the time is a plain JSON string, as it was when it was a String.
            assert_eq!(serde_json::to_vec(&back).unwrap(), json);
            let as_string = serde_json::to_string(&text).unwrap();
            let found = String::from_utf8(json.clone()).unwrap();
            assert!(
                found.starts_with(&format!("{{\"time\":{as_string},")),
                "{found}"
            );
        }
    }

    #[test]
    fn snapshot_time_of_a_backup_is_the_text_coffer_always_wrote() {
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        let zoned = jiff::civil::date(2026, 3, 29)
            .at(1, 2, 3, 500_000_000)
            .to_zoned(berlin.clone())
            .unwrap();
        let t = SnapshotTime::from_zoned(&zoned);
        assert_eq!(t.as_str(), "2026-03-29T01:02:03.5+01:00");
        assert_eq!(t.timestamp(), zoned.timestamp());
        let whole = jiff::civil::date(2026, 7, 1)
            .at(0, 0, 0, 0)
            .to_zoned(berlin)
            .unwrap();
        let t = SnapshotTime::from_zoned(&whole);
        assert_eq!(t.as_str(), "2026-07-01T00:00:00+02:00");
        assert_eq!(
            t.as_str(),
            whole.strftime("%Y-%m-%dT%H:%M:%S%.f%:z").to_string()
        );
    }

    #[test]
    fn a_snapshot_with_a_bad_time_is_corrupt_and_named() {
        let keys = MasterKeys::generate().unwrap();
        let good = serde_json::to_string(&snapshot_at("2026-01-01T00:00:00Z")).unwrap();
        for bad in ["yesterday", "2026-01-01T00:00:00", ""] {
            let json = good.replace("2026-01-01T00:00:00Z", bad);
            assert!(serde_json::from_str::<Snapshot>(&json).is_err(), "{bad:?}");
            let bytes = sealed::seal(&keys, ObjectKind::Snapshot, json.as_bytes()).unwrap();
            let id = SnapshotId(storage_hash(&bytes));
            match Snapshot::from_stored(&keys, &id, &bytes) {
                Err(Error::Corrupt {
                    what,
                    id: named,
                    reason,
                }) => {
                    assert_eq!(what, "snapshot");
                    assert_eq!(named, id.to_hex());
                    assert!(reason.contains("bad time"), "{reason}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn snapshots_sort_by_instant_not_by_text() {
        // As text, "10:00+05:00" sorts after "06:00Z"; as instants it is 05:00Z, before it.
        let mut snaps = vec![
            (SnapshotId([1; 32]), snapshot_at("2026-01-01T06:00:00Z")),
            (
                SnapshotId([2; 32]),
                snapshot_at("2026-01-01T10:00:00+05:00"),
            ),
            (
                SnapshotId([3; 32]),
                snapshot_at("2026-01-01T01:00:00-05:00"),
            ),
            (
                SnapshotId([0; 32]),
                snapshot_at("2026-01-01T06:00:00+00:00"),
            ),
        ];
        sort_by_time(&mut snaps);
        let order: Vec<u8> = snaps.iter().map(|(id, _)| id.0[0]).collect();
        assert_eq!(order, [2, 0, 1, 3]);
    }

    #[test]
    fn stored_form_round_trips_and_refuses_damage() {
        let keys = MasterKeys::generate().unwrap();
        let mut snap = snapshot_at("2026-01-02T03:04:05.5+01:00");
        snap.labels.insert("k".into(), "v".into());
        snap.parent = Some(SnapshotId([9; 32]));
        let (id, bytes) = snap.to_stored(&keys).unwrap();
        assert_eq!(Snapshot::from_stored(&keys, &id, &bytes).unwrap(), snap);
        // Sealed with other keys: refused, naming the snapshot.
        let other = MasterKeys::generate().unwrap();
        let err = Snapshot::from_stored(&other, &id, &bytes).unwrap_err();
        assert!(err.to_string().contains(&id.to_hex()), "{err}");
        // Under another name.
        let err = Snapshot::from_stored(&keys, &SnapshotId([1; 32]), &bytes).unwrap_err();
        assert!(err.to_string().contains("does not match its name"), "{err}");
        // Every truncation, even one renamed to match its bytes.
        for cut in 0..bytes.len() {
            let short = &bytes[..cut];
            let renamed = SnapshotId(storage_hash(short));
            assert!(
                Snapshot::from_stored(&keys, &renamed, short).is_err(),
                "{cut}"
            );
        }
        // Above the maximum: refused before anything else is looked at.
        let huge = vec![0u8; MAX_SNAPSHOT_SIZE as usize + 1];
        let err = Snapshot::from_stored(&keys, &SnapshotId(storage_hash(&huge)), &huge);
        assert!(err.unwrap_err().to_string().contains("too large"));
    }

    #[test]
    fn a_relabelled_copy_keeps_everything_and_names_the_first_original() {
        let snap = snapshot_at("2026-01-01T00:00:00Z");
        let labels = BTreeMap::from([("drill.verified".to_string(), "yes".to_string())]);
        let first = snap.relabelled(&SnapshotId([1; 32]), &labels);
        assert_eq!(first.original, Some(SnapshotId([1; 32])));
        assert_eq!(first.labels, labels);
        assert_eq!((first.tree, &first.time), (snap.tree, &snap.time));
        let second = first.relabelled(&SnapshotId([2; 32]), &BTreeMap::new());
        assert_eq!(second.original, Some(SnapshotId([1; 32])));
    }

    #[test]
    fn damaged_snapshots_are_named_when_asked_for() {
        let old = SnapshotId([0x11; 32]);
        let new = SnapshotId([0x22; 32]);
        let all = Snapshots {
            good: vec![(old, snapshot_at("2026-01-01T00:00:00Z"))],
            damaged: vec![(new, Error::corrupt("snapshot", new, "bad tag"))],
        };
        assert!(all.damage_warnings()[0].contains(&new.to_hex()));
        // `latest` is the latest good one; the good one resolves by id.
        assert_eq!(all.resolve("latest").unwrap().0, old);
        assert_eq!(all.resolve(&old.to_hex()).unwrap().0, old);
        // The damaged one, asked for by id or prefix, fails naming it.
        for spec in [new.to_hex(), new.to_hex()[..8].to_string()] {
            match all.resolve(&spec) {
                Err(Error::Corrupt { what, id, reason }) => {
                    assert_eq!(what, "snapshot");
                    assert_eq!(id, new.to_hex());
                    assert_eq!(reason, "bad tag");
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
        assert!(matches!(
            all.resolve("33333333"),
            Err(Error::SnapshotNotFound(_))
        ));
    }
}

//! Drill results: `drills/<id>`, sealed JSON documents recording one `coffer drill` of one
//! snapshot (when, on which host, each source's verdict and timings, the measured restore time,
//! the error that stopped it). Snapshots stay immutable: a drill never rewrites the snapshot it
//! tested, it adds one of these (spec section 10.4).
//!
//! Pure: bytes in, typed values out; reading and writing them is `repository/stored.rs`'s.

use crate::error::{Error, Result};
use crate::format::id::{storage_hash, DrillId, SnapshotId};
use crate::format::sealed::{self, ObjectKind};
use crate::format::snapshot::SnapshotTime;
use coffer_crypto::MasterKeys;
use serde::{Deserialize, Serialize};

/// Largest drill result object read or written (bytes).
pub const MAX_DRILL_SIZE: u64 = 1024 * 1024;
/// Most problems kept per source in a stored result (the rest are counted in one last line).
pub const MAX_PROBLEMS_KEPT: usize = 20;
/// Longest problem or error text kept in a stored result (characters; longer ones are cut).
pub const MAX_TEXT_KEPT: usize = 2000;

/// One drill of one snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillResult {
    /// The drilled snapshot (its id when the drill ran: snapshots keep their ids).
    pub snapshot: SnapshotId,
    /// The drilled snapshot's time, host and source set (its source names, or its paths for a
    /// snapshot without named sources): the result stays attributable after the snapshot is
    /// forgotten.
    pub snapshot_time: SnapshotTime,
    pub snapshot_hostname: String,
    pub snapshot_sources: Vec<String>,
    /// When the drill started (RFC 3339 with offset).
    pub time: SnapshotTime,
    /// The host that ran the drill.
    pub hostname: String,
    /// Every source restored and matched, and nothing stopped the drill.
    pub passed: bool,
    /// Seconds from start to end of the drill (restores, checks, clean-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// The measured recovery time: seconds spent restoring the sources (the sum of each
    /// source's `restore_seconds`). Absent when no source was restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    #[serde(default)]
    pub sources: Vec<DrillSourceResult>,
    /// What stopped the drill before it could judge every source, if anything did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The coffer version that ran the drill.
    pub program_version: String,
}

/// One source's verdict in a drill.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrillSourceResult {
    pub name: String,
    /// `path`, `postgres` or `command`.
    pub kind: String,
    pub passed: bool,
    /// What was checked, in words.
    pub checked: String,
    /// Seconds the restore took (for a database: restore and row counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_seconds: Option<f64>,
    /// Seconds the verification of the restored files took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_seconds: Option<f64>,
    /// What did not match or failed (at most [`MAX_PROBLEMS_KEPT`] kept, then a count).
    #[serde(default)]
    pub problems: Vec<String>,
}

impl DrillResult {
    /// The stored form: sealed JSON, and its id. Refuses a result above [`MAX_DRILL_SIZE`]
    /// (the writer keeps it below by [`bound_problems`] and [`bound_text`]).
    pub fn to_stored(&self, keys: &MasterKeys) -> Result<(DrillId, Vec<u8>)> {
        let json = serde_json::to_vec(self).map_err(Error::internal)?;
        let bytes = sealed::seal(keys, ObjectKind::DrillResult, &json)?;
        if bytes.len() as u64 > MAX_DRILL_SIZE {
            return Err(Error::InvalidInput(format!(
                "the drill result is {} bytes, above the maximum of {MAX_DRILL_SIZE} bytes",
                bytes.len()
            )));
        }
        Ok((DrillId(storage_hash(&bytes)), bytes))
    }

    /// Verifies and parses the stored bytes of drill result `id`: size, name, authentication,
    /// then the JSON (times must be RFC 3339 with an offset). Unknown fields are ignored.
    pub fn from_stored(keys: &MasterKeys, id: &DrillId, bytes: &[u8]) -> Result<DrillResult> {
        const WHAT: &str = "drill result";
        let name = id.to_hex();
        if bytes.len() as u64 > MAX_DRILL_SIZE {
            return Err(Error::corrupt(WHAT, &name, "too large"));
        }
        if storage_hash(bytes) != id.0 {
            return Err(Error::corrupt(
                WHAT,
                &name,
                "content does not match its name",
            ));
        }
        let plain = sealed::open(keys, ObjectKind::DrillResult, WHAT, &name, bytes)?;
        serde_json::from_slice(&plain).map_err(|e| Error::corrupt(WHAT, &name, e))
    }

    /// Names of the sources that failed, in order.
    pub fn failed_sources(&self) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|s| !s.passed)
            .map(|s| s.name.as_str())
            .collect()
    }
}

/// `problems` as stored: at most [`MAX_PROBLEMS_KEPT`], each cut to [`MAX_TEXT_KEPT`], and a
/// last line counting the ones left out.
pub fn bound_problems(problems: &[String]) -> Vec<String> {
    let mut out: Vec<String> = problems
        .iter()
        .take(MAX_PROBLEMS_KEPT)
        .map(|p| bound_text(p))
        .collect();
    if problems.len() > MAX_PROBLEMS_KEPT {
        out.push(format!(
            "and {} more problem(s), not kept",
            problems.len() - MAX_PROBLEMS_KEPT
        ));
    }
    out
}

/// `text` cut to at most [`MAX_TEXT_KEPT`] characters (marked with `…` when cut).
pub fn bound_text(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT_KEPT) {
        None => text.to_string(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

/// Sorts results by drill time (the instant), ties by id: oldest first.
pub fn sort_by_time(results: &mut [(DrillId, DrillResult)]) {
    results.sort_by_key(|a| (a.1.time.timestamp(), a.0));
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn result() -> DrillResult {
        DrillResult {
            snapshot: SnapshotId([3; 32]),
            snapshot_time: "2026-12-01T03:00:00+01:00".parse().unwrap(),
            snapshot_hostname: "app1".into(),
            snapshot_sources: vec!["db".into(), "files".into()],
            time: "2026-12-06T04:00:00Z".parse().unwrap(),
            hostname: "drillhost".into(),
            passed: false,
            duration_seconds: Some(12.5),
            rto_seconds: Some(10.25),
            sources: vec![
                DrillSourceResult {
                    name: "db".into(),
                    kind: "postgres".into(),
                    passed: false,
                    checked: "restore failed".into(),
                    restore_seconds: Some(10.0),
                    verify_seconds: None,
                    problems: vec!["pg_restore failed".into()],
                },
                DrillSourceResult {
                    name: "files".into(),
                    kind: "path".into(),
                    passed: true,
                    checked: "2 files".into(),
                    restore_seconds: Some(0.25),
                    verify_seconds: Some(0.5),
                    problems: Vec::new(),
                },
            ],
            error: None,
            program_version: "test".into(),
        }
    }

    #[test]
    fn stored_form_round_trips_and_refuses_damage() {
        let keys = MasterKeys::generate().unwrap();
        let (id, bytes) = result().to_stored(&keys).unwrap();
        assert_eq!(
            DrillResult::from_stored(&keys, &id, &bytes).unwrap(),
            result()
        );
        assert_eq!(result().failed_sources(), ["db"]);
        // Other keys, another name, every truncation, another kind.
        let other = MasterKeys::generate().unwrap();
        let err = DrillResult::from_stored(&other, &id, &bytes).unwrap_err();
        assert!(err.to_string().contains(&id.to_hex()), "{err}");
        assert!(err.to_string().contains("drill result"), "{err}");
        let err = DrillResult::from_stored(&keys, &DrillId([1; 32]), &bytes).unwrap_err();
        assert!(err.to_string().contains("does not match its name"), "{err}");
        for cut in 0..bytes.len() {
            let short = &bytes[..cut];
            let renamed = DrillId(storage_hash(short));
            assert!(DrillResult::from_stored(&keys, &renamed, short).is_err());
        }
        let json = serde_json::to_vec(&result()).unwrap();
        let as_snapshot = sealed::seal(&keys, ObjectKind::Snapshot, &json).unwrap();
        let renamed = DrillId(storage_hash(&as_snapshot));
        assert!(DrillResult::from_stored(&keys, &renamed, &as_snapshot).is_err());
        let huge = vec![0u8; MAX_DRILL_SIZE as usize + 1];
        let err = DrillResult::from_stored(&keys, &DrillId(storage_hash(&huge)), &huge);
        assert!(err.unwrap_err().to_string().contains("too large"));
    }

    #[test]
    fn unknown_fields_are_ignored_and_bad_times_refused() {
        let keys = MasterKeys::generate().unwrap();
        let mut json = serde_json::to_value(result()).unwrap();
        json["added_later"] = 1.into();
        let sealed =
            sealed::seal(&keys, ObjectKind::DrillResult, json.to_string().as_bytes()).unwrap();
        let id = DrillId(storage_hash(&sealed));
        assert_eq!(
            DrillResult::from_stored(&keys, &id, &sealed).unwrap(),
            result()
        );
        json["time"] = "2026-12-06 04:00".into();
        let sealed =
            sealed::seal(&keys, ObjectKind::DrillResult, json.to_string().as_bytes()).unwrap();
        let id = DrillId(storage_hash(&sealed));
        let err = DrillResult::from_stored(&keys, &id, &sealed).unwrap_err();
        assert!(err.to_string().contains("bad time"), "{err}");
    }

    #[test]
    fn stored_problems_and_texts_are_bounded() {
        let many: Vec<String> = (0..30).map(|i| format!("p{i}")).collect();
        let kept = bound_problems(&many);
        assert_eq!(kept.len(), MAX_PROBLEMS_KEPT + 1);
        assert_eq!(kept[MAX_PROBLEMS_KEPT], "and 10 more problem(s), not kept");
        assert_eq!(bound_problems(&many[..2]), ["p0", "p1"]);
        let long = "é".repeat(MAX_TEXT_KEPT + 5);
        let cut = bound_text(&long);
        assert_eq!(cut.chars().count(), MAX_TEXT_KEPT + 1);
        assert!(cut.ends_with('…'));
        // A result made of bounded parts for many sources stays storable.
        let keys = MasterKeys::generate().unwrap();
        let mut big = result();
        let source = DrillSourceResult {
            problems: bound_problems(&vec!["x".repeat(5000); 100]),
            ..big.sources[0].clone()
        };
        big.sources = vec![source; 20];
        let (id, bytes) = big.to_stored(&keys).unwrap();
        assert_eq!(DrillResult::from_stored(&keys, &id, &bytes).unwrap(), big);
        big.sources = vec![big.sources[0].clone(); 40];
        let err = big.to_stored(&keys).unwrap_err();
        assert!(err.to_string().contains("above the maximum"), "{err}");
    }

    #[test]
    fn results_sort_by_instant() {
        let mut a = result();
        a.time = "2026-12-06T10:00:00+05:00".parse().unwrap(); // 05:00Z
        let b = result(); // 04:00Z
        let mut list = vec![(DrillId([1; 32]), a), (DrillId([2; 32]), b)];
        sort_by_time(&mut list);
        assert_eq!(list[0].0, DrillId([2; 32]));
    }
}

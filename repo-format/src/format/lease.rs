//! The maintenance lease: at most one prune at a time, and a crashed prune frees itself.
//!
//! A lease is a run of create-only objects `locks/lease-<sequence>` (20 decimal digits). Each is
//! a sealed object of kind Lease holding a JSON [`LeaseRecord`]. The object with the highest
//! sequence number is the current state of the lease; it is held when that record is not
//! released, has not expired, and (on the holder's own host) its process is alive. Taking the
//! lease means creating the next sequence number; refreshing it (the heartbeat) means creating
//! the one after; releasing it means creating one more with `released: true`. Because every
//! write is `PutMode::Create`, two contenders for the same number cannot both win, and because
//! an object is deleted only once a higher one exists, the highest number never goes backwards.
//! The full protocol and its race analysis are in docs/maintenance.md. Backups never look at
//! the lease.
//!
//! This module is the record's encoding only (pure); taking, refreshing and releasing the lease
//! against storage is `repository/lease.rs`.

use crate::error::{Error, Result};
use crate::format::key::ObjectKey;
use crate::format::sealed::{self, ObjectKind};
use coffer_crypto::MasterKeys;
use serde::{Deserialize, Serialize};

/// Largest lease object read (bytes).
pub const MAX_LEASE_SIZE: u64 = 64 * 1024;

/// The content of one lease object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRecord {
    /// Random id of one acquisition (32 hex digits); refreshes keep it.
    pub holder: String,
    /// What holds it (`prune`).
    pub operation: String,
    pub hostname: String,
    pub pid: u32,
    /// When this record was written (Unix seconds, the writer's clock).
    pub written: i64,
    /// Until when the lease is held unless refreshed (Unix seconds, the writer's clock).
    pub expires: i64,
    /// The holder gave the lease up.
    pub released: bool,
}

impl LeaseRecord {
    /// The stored form: sealed JSON.
    pub fn to_stored(&self, keys: &MasterKeys) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(self).map_err(Error::internal)?;
        sealed::seal(keys, ObjectKind::Lease, &json)
    }

    /// Verifies and parses the stored bytes of lease record `seq`; errors name its key.
    pub fn from_stored(keys: &MasterKeys, seq: u64, bytes: &[u8]) -> Result<LeaseRecord> {
        let key = ObjectKey::Lease(seq).to_string();
        if bytes.len() as u64 > MAX_LEASE_SIZE {
            return Err(Error::corrupt("lease", &key, "too large"));
        }
        let plain = sealed::open(keys, ObjectKind::Lease, "lease", &key, bytes)?;
        serde_json::from_slice(&plain).map_err(|e| Error::corrupt("lease", &key, e))
    }

    /// One line for messages.
    pub fn describe(&self) -> String {
        let at = |s: i64| {
            jiff::Timestamp::from_second(s)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| s.to_string())
        };
        format!(
            "{} on host {} (pid {}), refreshed {}, expires {}",
            self.operation,
            self.hostname,
            self.pid,
            at(self.written),
            at(self.expires)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LeaseRecord {
        LeaseRecord {
            holder: "ab".repeat(16),
            operation: "prune".into(),
            hostname: "web1".into(),
            pid: 4242,
            written: 1_763_790_000,
            expires: 1_763_790_300,
            released: false,
        }
    }

    #[test]
    fn stored_form_round_trips_and_refuses_damage() {
        let keys = MasterKeys::generate().unwrap();
        let bytes = record().to_stored(&keys).unwrap();
        assert_eq!(
            LeaseRecord::from_stored(&keys, 3, &bytes).unwrap(),
            record()
        );
        let other = MasterKeys::generate().unwrap();
        let err = LeaseRecord::from_stored(&other, 3, &bytes).unwrap_err();
        assert!(
            err.to_string().contains("locks/lease-00000000000000000003"),
            "{err}"
        );
        for cut in 0..bytes.len() {
            assert!(LeaseRecord::from_stored(&keys, 3, &bytes[..cut]).is_err());
        }
        // Unknown fields are refused.
        let mut json = serde_json::to_value(record()).unwrap();
        json["extra"] = 1.into();
        let sealed = sealed::seal(&keys, ObjectKind::Lease, json.to_string().as_bytes()).unwrap();
        assert!(LeaseRecord::from_stored(&keys, 3, &sealed).is_err());
        let huge = vec![0u8; MAX_LEASE_SIZE as usize + 1];
        let err = LeaseRecord::from_stored(&keys, 3, &huge).unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn a_record_describes_its_holder() {
        let text = record().describe();
        assert!(text.starts_with("prune on host web1 (pid 4242)"), "{text}");
        assert!(text.contains("2025-11-22T05:40:00Z"), "{text}");
    }
}

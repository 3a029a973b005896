//! A snapshot through its real entry point (size limit, name = hash of the stored bytes,
//! envelope, JSON): an error or a snapshot whose time is usable, never a panic.
#![no_main]

use coffer_repo::format::sealed::ObjectKind;
use coffer_repo::{Snapshot, SnapshotId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = coffer_fuzz::keys();
    let bytes = coffer_fuzz::sealed(ObjectKind::Snapshot, data);
    // Named wrongly: refused before the JSON is looked at.
    assert!(Snapshot::from_stored(keys, &SnapshotId([0; 32]), &bytes).is_err());
    let Ok(snapshot) = Snapshot::from_stored(keys, &SnapshotId(name(&bytes)), &bytes) else {
        return;
    };
    let _ = snapshot.timestamp();
    let (id, stored) = snapshot.to_stored(keys).expect("an accepted snapshot stores");
    assert!(Snapshot::from_stored(keys, &id, &stored).is_ok());
});

/// The id storage gives `bytes` (their plain BLAKE3 hash, as the spec says for snapshots).
fn name(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

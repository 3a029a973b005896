//! A drill result through its real entry point (size limit, name = hash of the stored bytes,
//! envelope, JSON): an error or a result whose times are usable and that stores again, never a
//! panic.
#![no_main]

use coffer_repo::format::drill::DrillResult;
use coffer_repo::format::id::DrillId;
use coffer_repo::format::sealed::ObjectKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = coffer_fuzz::keys();
    let bytes = coffer_fuzz::sealed(ObjectKind::DrillResult, data);
    // Named wrongly: refused before the JSON is looked at.
    assert!(DrillResult::from_stored(keys, &DrillId([0; 32]), &bytes).is_err());
    let name = DrillId(*blake3::hash(&bytes).as_bytes());
    let Ok(result) = DrillResult::from_stored(keys, &name, &bytes) else {
        return;
    };
    let _ = (result.time.timestamp(), result.snapshot_time.timestamp());
    let _ = result.failed_sources();
    // What was accepted stores again, unless it is above the maximum the writer keeps to.
    if let Ok((id, stored)) = result.to_stored(keys) {
        // (Not compared for equality: a float may not survive a JSON round trip bit for bit.)
        assert!(DrillResult::from_stored(keys, &id, &stored).is_ok());
    }
});

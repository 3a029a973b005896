//! A lease record through its real entry point: an error or a record that describes itself
//! and stores again, never a panic.
#![no_main]

use coffer_repo::format::lease::LeaseRecord;
use coffer_repo::format::sealed::ObjectKind;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = coffer_fuzz::keys();
    let bytes = coffer_fuzz::sealed(ObjectKind::Lease, data);
    if let Ok(lease) = LeaseRecord::from_stored(keys, 1, &bytes) {
        let _ = lease.describe();
        let again = lease.to_stored(keys).expect("an accepted lease stores");
        assert_eq!(LeaseRecord::from_stored(keys, 1, &again).ok(), Some(lease));
    }
});

//! The sealed envelope: any bytes, opened as any kind, give an error or (for bytes sealed
//! here) exactly the plaintext; never a panic.
#![no_main]

use coffer_repo::format::sealed::{self, ObjectKind};
use libfuzzer_sys::fuzz_target;

const KINDS: [ObjectKind; 6] = [
    ObjectKind::Config,
    ObjectKind::Index,
    ObjectKind::Snapshot,
    ObjectKind::PackHeader,
    ObjectKind::DeletionPlan,
    ObjectKind::Lease,
];

fuzz_target!(|data: &[u8]| {
    let keys = coffer_fuzz::keys();
    for kind in KINDS {
        // Stored bytes as found: authentication must refuse them (the fuzzer cannot forge a tag).
        assert!(sealed::open(keys, kind, "object", "x", data).is_err());
    }
    let Some((&selector, plain)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(selector) % KINDS.len()];
    let bytes = coffer_fuzz::sealed(kind, plain);
    let opened = sealed::open(keys, kind, "object", "x", &bytes).expect("own seal opens");
    assert_eq!(opened, plain);
    // Any single flipped bit is refused.
    if let Some(&pick) = plain.first() {
        let mut flipped = bytes.clone();
        let at = usize::from(pick) % flipped.len();
        flipped[at] ^= 1 << (pick % 8);
        assert!(sealed::open(keys, kind, "object", "x", &flipped).is_err());
    }
});

//! A deletion plan's plaintext: an error naming it, or a plan whose own encoding gives the
//! input back.
#![no_main]

use coffer_repo::format::plan::DeletionPlan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match DeletionPlan::decode("x", data) {
        Ok(plan) => assert_eq!(plan.encode(), data),
        Err(e) => assert!(e.to_string().contains("x is corrupt"), "{e}"),
    }
});

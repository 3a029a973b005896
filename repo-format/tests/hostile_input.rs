//! Storage is hostile: every decoder of stored bytes must return an error, never panic or
//! allocate without bound, whatever it is given. Random bytes, and valid objects with random
//! bytes flipped or cut, go through each decoder, and each must say the input is bad.

use coffer_crypto::MasterKeys;
use coffer_repo::format::drill::{DrillResult, DrillSourceResult};
use coffer_repo::format::id::DrillId;
use coffer_repo::format::index::IndexFile;
use coffer_repo::format::keyfile::KeyFile;
use coffer_repo::format::lease::LeaseRecord;
use coffer_repo::format::pack::{self, BlobKind, PackWriter};
use coffer_repo::format::plan::DeletionPlan;
use coffer_repo::format::sealed::{self, ObjectKind};
use coffer_repo::format::snapshot::Snapshot;
use coffer_repo::format::tree::Tree;
use coffer_repo::{BlobId, IndexId, KeyId, PackId, SnapshotId};
use proptest::prelude::*;

fn valid_pack(keys: &MasterKeys) -> (PackId, Vec<u8>) {
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    let mut w = PackWriter::default();
    for data in [
        &b"first blob, compressible compressible compressible"[..],
        &[7u8; 3000][..],
        b"x",
    ] {
        let id = BlobId(keys.content_id(data));
        w.add(
            pack::seal_blob(
                keys,
                BlobKind::Data,
                id,
                data,
                c.compress(data).ok().as_deref(),
            )
            .unwrap(),
        );
    }
    let p = w.finish(keys).unwrap();
    (p.id, p.bytes.to_vec())
}

fn valid_plan() -> DeletionPlan {
    DeletionPlan {
        created: jiff::Timestamp::from_millisecond(1_700_000_000_000).unwrap(),
        index_deadline: jiff::Timestamp::from_millisecond(1_700_000_060_000).unwrap(),
        index_files: vec![IndexId([5; 32])],
        packs: vec![(PackId([6; 32]), Vec::new())],
    }
}

fn valid_lease() -> LeaseRecord {
    LeaseRecord {
        holder: "cd".repeat(16),
        operation: "prune".into(),
        hostname: "h".into(),
        pid: 1,
        written: 1_700_000_000,
        expires: 1_700_000_300,
        released: false,
    }
}

fn valid_drill() -> DrillResult {
    DrillResult {
        snapshot: SnapshotId([3; 32]),
        snapshot_time: "2026-12-01T03:00:00+01:00".parse().unwrap(),
        snapshot_hostname: "h".into(),
        snapshot_sources: vec!["db".into()],
        time: "2026-12-06T04:00:00Z".parse().unwrap(),
        hostname: "h".into(),
        passed: false,
        duration_seconds: Some(2.5),
        rto_seconds: Some(2.0),
        sources: vec![DrillSourceResult {
            name: "db".into(),
            kind: "postgres".into(),
            passed: false,
            checked: "restore failed".into(),
            restore_seconds: Some(2.0),
            verify_seconds: None,
            problems: vec!["pg_restore failed".into()],
        }],
        error: None,
        program_version: "test".into(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let keys = MasterKeys::generate().unwrap();
        // An unsealed body could by chance be well formed; then it must be exactly what its
        // own encoding gives back (nothing read past, nothing made up).
        match IndexFile::decode("x", &bytes) {
            Ok(file) => prop_assert_eq!(file.encode(), bytes.clone()),
            Err(e) => prop_assert!(e.to_string().contains("index x is corrupt"), "{}", e),
        }
        match DeletionPlan::decode("x", &bytes) {
            Ok(plan) => prop_assert_eq!(plan.encode(), bytes.clone()),
            Err(e) => prop_assert!(e.to_string().contains("x is corrupt"), "{}", e),
        }
        prop_assert!(Tree::decode(&BlobId([0; 32]), &bytes).is_err());
        prop_assert!(pack::parse_pack(&keys, &PackId([0; 32]), &bytes).is_err());
        prop_assert!(KeyFile::parse("x", &bytes).is_err());
        for kind in [
            ObjectKind::Config,
            ObjectKind::Index,
            ObjectKind::Snapshot,
            ObjectKind::PackHeader,
            ObjectKind::DeletionPlan,
            ObjectKind::Lease,
            ObjectKind::DrillResult,
        ] {
            prop_assert!(sealed::open(&keys, kind, "object", "x", &bytes).is_err());
        }
        // The stored-object decoders, under the name the bytes hash to (so the name check
        // passes and the content itself is judged).
        let name = *blake3::hash(&bytes).as_bytes();
        prop_assert!(IndexFile::from_stored(&keys, &IndexId(name), &bytes).is_err());
        prop_assert!(Snapshot::from_stored(&keys, &SnapshotId(name), &bytes).is_err());
        prop_assert!(KeyFile::from_stored(&KeyId(name), &bytes).is_err());
        prop_assert!(DeletionPlan::from_stored(&keys, &coffer_repo::format::id::PlanId(name), &bytes).is_err());
        prop_assert!(LeaseRecord::from_stored(&keys, 1, &bytes).is_err());
        prop_assert!(DrillResult::from_stored(&keys, &DrillId(name), &bytes).is_err());
    }

    #[test]
    fn damaged_drill_results_are_errors(flip in any::<usize>(), bit in 0u8..8, cut in any::<usize>()) {
        let keys = MasterKeys::generate().unwrap();
        let (id, bytes) = valid_drill().to_stored(&keys).unwrap();
        let mut flipped = bytes.clone();
        let i = flip % flipped.len();
        flipped[i] ^= 1 << bit;
        let renamed = DrillId(*blake3::hash(&flipped).as_bytes());
        prop_assert!(DrillResult::from_stored(&keys, &id, &flipped).is_err());
        prop_assert!(DrillResult::from_stored(&keys, &renamed, &flipped).is_err());
        let short = &bytes[..cut % bytes.len()];
        let renamed = DrillId(*blake3::hash(short).as_bytes());
        prop_assert!(DrillResult::from_stored(&keys, &renamed, short).is_err());
    }

    #[test]
    fn damaged_plans_and_lease_records_are_errors(flip in any::<usize>(), bit in 0u8..8, cut in any::<usize>()) {
        let keys = MasterKeys::generate().unwrap();
        let (plan_id, plan) = valid_plan().to_stored(&keys).unwrap();
        let lease = valid_lease().to_stored(&keys).unwrap();
        for bytes in [&plan, &lease] {
            let mut flipped = bytes.clone();
            let i = flip % flipped.len();
            flipped[i] ^= 1 << bit;
            let renamed = coffer_repo::format::id::PlanId(*blake3::hash(&flipped).as_bytes());
            prop_assert!(DeletionPlan::from_stored(&keys, &plan_id, &flipped).is_err());
            prop_assert!(DeletionPlan::from_stored(&keys, &renamed, &flipped).is_err());
            prop_assert!(LeaseRecord::from_stored(&keys, 1, &flipped).is_err());
            let c = cut % bytes.len();
            let short = &bytes[..c];
            let renamed = coffer_repo::format::id::PlanId(*blake3::hash(short).as_bytes());
            prop_assert!(DeletionPlan::from_stored(&keys, &renamed, short).is_err());
            prop_assert!(LeaseRecord::from_stored(&keys, 1, short).is_err());
        }
        // The plan's plaintext cut anywhere is an error too.
        let body = valid_plan().encode();
        prop_assert!(DeletionPlan::decode("x", &body[..cut % body.len()]).is_err());
    }

    #[test]
    fn damaged_packs_are_errors(flip in any::<usize>(), bit in 0u8..8, cut in any::<usize>()) {
        let keys = MasterKeys::generate().unwrap();
        let (id, bytes) = valid_pack(&keys);
        let mut flipped = bytes.clone();
        let i = flip % flipped.len();
        flipped[i] ^= 1 << bit;
        // A flipped bit is caught either by the header or by the blob it lands in.
        let header_ok = pack::parse_pack(&keys, &id, &flipped);
        if let Ok(blobs) = header_ok {
            let any_blob_fails = blobs.iter().any(|b| {
                let s = &flipped[b.offset as usize..(b.offset + b.length) as usize];
                pack::open_blob(&keys, &id, b, s).is_err()
            });
            prop_assert!(any_blob_fails, "flip at {} went unnoticed", i);
        }
        let c = cut % bytes.len();
        prop_assert!(pack::parse_pack(&keys, &id, &bytes[..c]).is_err());
    }

    #[test]
    fn index_with_random_counts_is_an_error(count in any::<u32>(), tail in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut bytes = 0u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(&tail);
        // Either a well-formed (tiny) index that is exactly its input, or an error; never a
        // huge allocation or panic. Each pack needs at least 36 bytes, so a count beyond what
        // the tail can hold is always an error.
        match IndexFile::decode("x", &bytes) {
            Ok(file) => {
                prop_assert_eq!(file.packs.len(), count as usize);
                prop_assert_eq!(file.encode(), bytes.clone());
            }
            Err(e) => prop_assert!(e.to_string().contains("index x is corrupt"), "{}", e),
        }
        if count as usize * 36 > tail.len() {
            prop_assert!(IndexFile::decode("x", &bytes).is_err());
        }
    }
}

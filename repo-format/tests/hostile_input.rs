//! Storage is hostile: every decoder of stored bytes must return an error, never panic or
//! allocate without bound, whatever it is given. Random bytes, and valid objects with random
//! bytes flipped or cut, go through each decoder.

use coffer_crypto::MasterKeys;
use coffer_repo::format::index::IndexFile;
use coffer_repo::format::keyfile::KeyFile;
use coffer_repo::format::pack::{self, BlobKind, PackWriter};
use coffer_repo::format::sealed::{self, ObjectKind};
use coffer_repo::format::tree::Tree;
use coffer_repo::{BlobId, PackId};
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let keys = MasterKeys::generate().unwrap();
        let _ = IndexFile::decode("x", &bytes);
        let _ = Tree::decode(&BlobId([0; 32]), &bytes);
        let _ = pack::parse_pack(&keys, &PackId([0; 32]), &bytes);
        let _ = KeyFile::parse("x", &bytes);
        for kind in [ObjectKind::Config, ObjectKind::Index, ObjectKind::Snapshot, ObjectKind::PackHeader] {
            let _ = sealed::open(&keys, kind, "object", "x", &bytes);
        }
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
        // Either a well-formed (tiny) index or an error; never a huge allocation or panic.
        let _ = IndexFile::decode("x", &bytes);
    }
}

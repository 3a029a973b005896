//! A tree blob's plaintext: an error, or a tree that encodes and decodes to itself.
#![no_main]

use coffer_repo::format::tree::Tree;
use coffer_repo::BlobId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = BlobId([3; 32]);
    if let Ok(tree) = Tree::decode(&id, data) {
        let again = Tree::decode(&id, &tree.encode()).expect("an accepted tree re-encodes");
        assert_eq!(again, tree);
    }
});

//! The working memory of Argon2id (64 MiB by default), allocated for each key derivation.
//!
//! It holds values derived from the password, enough to finish the derivation without it, so
//! it is zeroed before it is freed. The argon2 crate's own allocation is freed without being
//! cleared; Coffer allocates the blocks itself and hands them to it.

use argon2::Block;
use zeroize::Zeroize;

/// Argon2id's memory blocks, zeroed when dropped.
pub(crate) struct KdfMemory(Vec<Block>);

impl KdfMemory {
    /// `blocks` zeroed 1 KiB blocks.
    pub(crate) fn new(blocks: usize) -> KdfMemory {
        KdfMemory(vec![Block::new(); blocks])
    }

    pub(crate) fn blocks(&mut self) -> &mut [Block] {
        &mut self.0
    }
}

impl Drop for KdfMemory {
    fn drop(&mut self) {
        for block in &mut self.0 {
            block.zeroize();
        }
    }
}

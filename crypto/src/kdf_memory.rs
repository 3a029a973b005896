//! The working memory of Argon2id (64 MiB by default), allocated for each key derivation.
//!
//! It holds values derived from the password, enough to finish the derivation without it, so
//! it is zeroed before it is freed. The argon2 crate's own allocation is freed without being
//! cleared; Coffer allocates the blocks itself and hands them to it.
//!
//! The blocks are not written when allocated: they come from `calloc`, which for an allocation
//! this large maps fresh pages the kernel zeroes on first touch. Argon2id overwrites every block
//! before reading it, so the first touch happens in the lane threads, in parallel, instead of
//! one thread writing 64 MiB of zeros before they start. With the zeroing on drop done in
//! 64-bit words, `coffer snapshots` on a repository with the default cost took a median 0.141 s
//! before and 0.117 s after (20 alternating runs; docs/benchmarks.md). This file holds the
//! crate's one `unsafe` block: viewing the zeroed bytes as blocks.

use argon2::Block;
use zeroize::Zeroize;

/// Bytes of one Argon2 block.
const BLOCK_BYTES: usize = std::mem::size_of::<Block>();

/// Argon2id's memory blocks, zeroed when dropped.
pub(crate) struct KdfMemory {
    /// Zeroed bytes, a block's alignment (64) more than the blocks need so that they can start
    /// at it.
    bytes: Vec<u8>,
    blocks: usize,
}

impl KdfMemory {
    /// `blocks` zeroed 1 KiB blocks; `None` if their size does not fit in memory's address range.
    pub(crate) fn new(blocks: usize) -> Option<KdfMemory> {
        let len = blocks
            .checked_mul(BLOCK_BYTES)?
            .checked_add(std::mem::align_of::<Block>())?;
        Some(KdfMemory {
            bytes: vec![0u8; len],
            blocks,
        })
    }

    #[allow(unsafe_code)]
    pub(crate) fn blocks(&mut self) -> &mut [Block] {
        let align = std::mem::align_of::<Block>();
        let offset = self.bytes.as_ptr().align_offset(align);
        assert!(offset < align && offset + self.blocks * BLOCK_BYTES <= self.bytes.len());
        // SAFETY: the range [offset, offset + blocks * BLOCK_BYTES) lies inside `bytes` (checked
        // above) and starts at Block's alignment; a Block is 128 u64s with no invariant (argon2's
        // `Block([u64; 128])`, Copy), so any bytes, zeros included, are a valid Block; the slice
        // borrows `self` mutably, so nothing else reads or writes `bytes` while it lives.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.bytes.as_mut_ptr().add(offset).cast::<Block>(),
                self.blocks,
            )
        }
    }
}

impl Drop for KdfMemory {
    /// Block by block (64-bit volatile writes; `Vec<u8>`'s zeroize writes byte by byte, several
    /// times slower on 64 MiB).
    fn drop(&mut self) {
        for block in self.blocks() {
            block.zeroize();
        }
    }
}

//! Content-defined chunking for Coffer: FastCDC (the 2020 variant, normalization level 1) over a
//! gear table derived entirely from a secret 32-byte chunker key.
//!
//! Chunk boundaries depend only on the bytes near them, so an insertion or deletion in a large
//! input changes the chunks around the edit and leaves the rest identical, which is what makes
//! deduplication work. Boundaries also leak information: an observer who sees chunk sizes and
//! knows the gear table can test guesses about the plaintext. restic-style "seed XOR fixed table"
//! keying leaves most of that structure intact (eprint 2025/558, 2025/532), so every one of the
//! 256 gear entries here comes from a keyed BLAKE3 XOF ([`GearTable::from_key`]).
//!
//! The crate knows nothing of repositories or encryption. It offers:
//! - [`ChunkerParams`]: validated min/avg/max chunk sizes, with [`ChunkerParams::FILES`] and
//!   [`ChunkerParams::DUMPS`] defaults.
//! - [`cut`]: a pure function giving the length of the first chunk of a slice.
//! - [`StreamChunker`]: chunks any [`std::io::Read`] with a bounded buffer.
//!
//! Changing anything that moves a boundary (the derivation context, the masks, the scan loop)
//! changes every chunk id of every repository; the checked-in vectors in `cut.rs` exist to catch
//! that.

mod cut;
mod gear;
mod params;
mod stream;

#[cfg(test)]
mod test_support;

pub use cut::cut;
pub use gear::GearTable;
pub use params::{ChunkerParams, ParamsError, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
pub use stream::{is_zero, StreamChunker};

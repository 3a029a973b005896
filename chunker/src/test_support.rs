//! Helpers shared by the unit tests: the documented test-input generator and whole-buffer
//! chunking.

use crate::{cut, ChunkerParams, GearTable};
use proptest::prelude::*;

/// The key of the checked-in vectors: bytes 0, 1, ..., 31.
pub fn counting_key() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

/// Test input anyone can regenerate: the SplitMix64 sequence (Steele, Lea, Flood 2014) from
/// `seed`, each output written as 8 little-endian bytes, truncated to `len`. One step is
/// `state += 0x9e3779b97f4a7c15; z = state; z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
/// z = (z ^ (z >> 27)) * 0x94d049bb133111eb; output z ^ (z >> 31)`, all mod 2^64.
pub fn splitmix_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Chunk lengths from applying [`cut`] repeatedly to the whole buffer.
pub fn chunk_lengths(gear: &GearTable, params: &ChunkerParams, data: &[u8]) -> Vec<usize> {
    let mut lengths = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let length = cut(gear, params, rest);
        lengths.push(length);
        rest = &rest[length..];
    }
    lengths
}

/// Valid parameters small enough that a few hundred KiB hold many chunks: averages 128 B to
/// 4 KiB, minimums from 64 B to half the average, maximums from just above the average to 8x.
pub fn small_params() -> impl Strategy<Value = ChunkerParams> {
    (7u32..=12, 1u32..=8, 1u32..=8).prop_map(|(avg_log, min_div, max_mul)| {
        let avg = 1u32 << avg_log;
        let min = (avg / 2 / min_div).max(64) & !1;
        ChunkerParams::new(min, avg, avg * max_mul + 2).unwrap()
    })
}

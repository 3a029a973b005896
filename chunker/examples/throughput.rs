//! Chunking throughput on 512 MiB of in-memory pseudo-random data, for the FILES and DUMPS
//! parameters: once with bare [`cut`] calls over the slice (the scan alone) and once through
//! [`StreamChunker`] (adds the copies into its buffer and into each owned chunk).
//!
//! Run in release mode: `cargo run -p coffer-chunker --release --example throughput`.

use coffer_chunker::{cut, ChunkerParams, GearTable, StreamChunker};
use std::time::Instant;

const INPUT_SIZE: usize = 512 * 1024 * 1024;

/// SplitMix64 output as little-endian bytes: random enough that cuts are content-defined, and
/// fast to generate.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state = 2026u64;
    let mut out = Vec::with_capacity(len);
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

fn report(label: &str, name: &str, seconds: f64, chunks: usize) {
    println!(
        "{label:<6} {name:<14} {:>7.0} MB/s  ({chunks} chunks, mean {} bytes)",
        INPUT_SIZE as f64 / seconds / 1e6,
        INPUT_SIZE / chunks.max(1),
    );
}

fn main() -> std::io::Result<()> {
    let data = pseudo_random(INPUT_SIZE);
    let gear = GearTable::from_key(&[7; 32]);
    for (label, params) in [
        ("FILES", ChunkerParams::FILES),
        ("DUMPS", ChunkerParams::DUMPS),
    ] {
        let started = Instant::now();
        let mut rest = &data[..];
        let mut chunks = 0;
        while !rest.is_empty() {
            rest = &rest[cut(&gear, &params, rest)..];
            chunks += 1;
        }
        report(label, "cut", started.elapsed().as_secs_f64(), chunks);

        let started = Instant::now();
        let mut chunks = 0;
        let mut total = 0;
        for chunk in StreamChunker::new(&data[..], &gear, params) {
            total += chunk?.len();
            chunks += 1;
        }
        assert_eq!(total, data.len());
        report(
            label,
            "StreamChunker",
            started.elapsed().as_secs_f64(),
            chunks,
        );
    }
    Ok(())
}

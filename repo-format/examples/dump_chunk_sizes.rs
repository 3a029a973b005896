//! Which average chunk size suits database dumps: for two consecutive dumps A and B, the bytes
//! of B that a repository holding A must store again, the repository's total stored size
//! (zstd-3 after deduplication, as Coffer stores), the number of index entries, and the
//! chunking speed, for several chunker parameter sets. docs/databases.md has the numbers and
//! the commands that made the dumps.
//!
//! cargo run --release -p coffer-repo --example dump_chunk_sizes -- A.dump B.dump

use coffer_chunker::{ChunkerParams, GearTable, StreamChunker};
use std::collections::HashSet;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [a, b] = args.as_slice() else {
        eprintln!("usage: dump_chunk_sizes A.dump B.dump");
        std::process::exit(2);
    };
    let a = std::fs::read(a).expect("read A");
    let b = std::fs::read(b).expect("read B");
    let gear = GearTable::from_key(&[7u8; 32]);
    let sets = [
        ("8 KiB", ChunkerParams::new(2 << 10, 8 << 10, 64 << 10)),
        ("16 KiB", Ok(ChunkerParams::DUMPS)),
        ("32 KiB", ChunkerParams::new(8 << 10, 32 << 10, 256 << 10)),
        ("64 KiB", ChunkerParams::new(16 << 10, 64 << 10, 512 << 10)),
        ("1 MiB", Ok(ChunkerParams::FILES)),
    ];
    println!(
        "| average | B stored again (raw) | B new, stored (zstd-3) | repository after A+B (zstd-3) | index entries | chunking speed |"
    );
    println!("|---|---|---|---|---|---|");
    let mut compressor = zstd::bulk::Compressor::new(3).expect("zstd");
    for (name, params) in sets {
        let params = params.expect("valid parameters");
        let mut seen = HashSet::new();
        let mut stored = 0u64;
        let started = Instant::now();
        let mut chunk_time = 0.0;
        for data in [&a, &b] {
            let t = Instant::now();
            let chunks: Vec<Vec<u8>> = StreamChunker::new(data.as_slice(), &gear, params)
                .map(|c| c.expect("in-memory read"))
                .collect();
            chunk_time += t.elapsed().as_secs_f64();
            let mut new_raw = 0u64;
            let mut new_stored = 0u64;
            for c in &chunks {
                if seen.insert(*blake3::hash(c).as_bytes()) {
                    new_raw += c.len() as u64;
                    new_stored += compressor.compress(c).expect("zstd").len() as u64;
                }
            }
            stored += new_stored;
            if std::ptr::eq(data, &b) {
                println!(
                    "| {name} | {:.1} MB ({:.1}%) | {:.1} MB | {:.1} MB | {} | {:.0} MB/s |",
                    new_raw as f64 / 1e6,
                    100.0 * new_raw as f64 / b.len() as f64,
                    new_stored as f64 / 1e6,
                    stored as f64 / 1e6,
                    seen.len(),
                    (a.len() + b.len()) as f64 / 1e6 / chunk_time,
                );
            }
        }
        let _ = started;
    }
}

//! What this machine can do per core, to compare Coffer's pipeline against: zstd level 3 and 1
//! on a realistic dump, keyed BLAKE3, XChaCha20-Poly1305, FastCDC, and the page cache. Also the
//! in-memory index's cost per blob.
//!
//! `cargo run --release -p coffer-repo --example machine_limits [FILE]` (FILE: a realistic input
//! such as a `pg_dump -Fc -Z0` dump; default: generated text).

use coffer_chunker::{ChunkerParams, GearTable, StreamChunker};
use coffer_crypto::MasterKeys;
use coffer_repo::format::index::MasterIndex;
use coffer_repo::format::pack::{BlobKind, Compression, PackedBlob};
use coffer_repo::{BlobId, PackId};
use std::time::Instant;

fn rate(label: &str, bytes: usize, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    let s = t.elapsed().as_secs_f64();
    println!("{label:<40} {:>8.0} MB/s", bytes as f64 / s / 1e6);
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    // First, while the heap is fresh (freed input buffers would otherwise hide the growth).
    measure_index();
    let data = match std::env::args().nth(1) {
        Some(path) => std::fs::read(&path).expect("read input"),
        None => {
            let words = [
                "invoice",
                "customer",
                "2026-11-22",
                "12345",
                "paid",
                "shipped",
                "note",
                "NULL",
            ];
            let mut out = Vec::with_capacity(256 << 20);
            let mut x: u64 = 1;
            while out.len() < 256 << 20 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                out.extend_from_slice(words[(x % 8) as usize].as_bytes());
                out.push(if x % 11 == 0 { b'\n' } else { b'\t' });
            }
            out
        }
    };
    let n = data.len();
    println!("input: {} MB", n / 1_000_000);
    let keys = MasterKeys::generate().unwrap();
    // 1 MiB: the average file chunk; 16 KiB: the average dump chunk.
    for (block_name, block_size) in [("1 MiB", 1 << 20), ("16 KiB", 16 << 10)] {
        for level in [1, 3] {
            let mut c = zstd::bulk::Compressor::new(level).unwrap();
            let mut out = 0;
            rate(
                &format!("zstd level {level} ({block_name} blocks)"),
                n,
                || {
                    for block in data.chunks(block_size) {
                        out += c.compress(block).unwrap().len();
                    }
                },
            );
            println!(
                "{:<40} {:>8.1} %",
                format!("  size after level {level}"),
                100.0 * out as f64 / n as f64
            );
        }
    }
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    let frames: Vec<Vec<u8>> = data
        .chunks(16 << 10)
        .map(|b| c.compress(b).unwrap())
        .collect();
    let mut d = zstd::bulk::Decompressor::new().unwrap();
    rate("zstd decompress (16 KiB blocks)", n, || {
        for f in &frames {
            std::hint::black_box(d.decompress(f, 16 << 10).unwrap());
        }
    });
    drop(frames);
    rate("keyed BLAKE3 (1 MiB blocks)", n, || {
        for block in data.chunks(1 << 20) {
            std::hint::black_box(keys.content_id(block));
        }
    });
    rate("XChaCha20-Poly1305 seal (1 MiB blocks)", n, || {
        for block in data.chunks(1 << 20) {
            std::hint::black_box(keys.seal(b"ad", block).unwrap());
        }
    });
    let sealed: Vec<Vec<u8>> = data
        .chunks(1 << 20)
        .map(|b| keys.seal(b"ad", b).unwrap())
        .collect();
    rate("XChaCha20-Poly1305 open (1 MiB blocks)", n, || {
        for s in &sealed {
            std::hint::black_box(keys.open(b"ad", s).unwrap());
        }
    });
    drop(sealed);
    let gear = GearTable::from_key(&[7; 32]);
    for (name, params) in [
        ("FastCDC 1 MiB avg", ChunkerParams::FILES),
        ("FastCDC 16 KiB avg", ChunkerParams::DUMPS),
    ] {
        rate(name, n, || {
            let mut chunker = StreamChunker::new(&data[..], &gear, params);
            while let Some(c) = chunker.next_chunk().unwrap() {
                std::hint::black_box(c);
            }
        });
    }
    let path = std::env::temp_dir().join("coffer-machine-limits.bin");
    std::fs::write(&path, &data).unwrap();
    let _ = std::fs::read(&path).unwrap();
    rate("page cache read (warm)", n, || {
        std::hint::black_box(std::fs::read(&path).unwrap());
    });
    let _ = std::fs::remove_file(&path);
    drop(data);
}

/// Memory per blob of the in-memory index, measured as RSS growth for 5 million blobs.
fn measure_index() {
    let blobs = 5_000_000u32;
    let before = rss_kib();
    let mut index = MasterIndex::default();
    let entries: Vec<PackedBlob> = (0..10_000u32)
        .map(|i| PackedBlob {
            kind: BlobKind::Data,
            compression: Compression::Zstd,
            id: BlobId([0; 32]),
            offset: i,
            length: 1,
            raw_length: 1,
        })
        .collect();
    let mut seed = 0u64;
    for p in 0..blobs / 10_000 {
        let mut pack = entries.clone();
        for e in &mut pack {
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&seed.to_le_bytes());
            id[8..16].copy_from_slice(&seed.rotate_left(17).to_le_bytes());
            e.id = BlobId(id);
        }
        index.add_pack(PackId([p as u8; 32]), &pack);
    }
    index.sort();
    let after = rss_kib();
    println!(
        "in-memory index: {} blobs, {} bytes/blob by layout, {:.1} bytes/blob measured (RSS)",
        index.len(),
        MasterIndex::BYTES_PER_BLOB,
        (after.saturating_sub(before)) as f64 * 1024.0 / f64::from(blobs)
    );
}

//! How many chunks change after a one-byte insertion in the middle of a 64 MiB random file,
//! over many random chunker keys (FILES parameters). Run in release mode.
use coffer_chunker::{ChunkerParams, GearTable, StreamChunker};
use std::collections::HashSet;

fn splitmix(seed: &mut u64) -> u64 {
    *seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn chunks(gear: &GearTable, data: &[u8]) -> Vec<Vec<u8>> {
    StreamChunker::new(data, gear, ChunkerParams::FILES)
        .map(|c| c.unwrap())
        .collect()
}

fn main() {
    let trials: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mut seed = 42u64;
    let mut data = vec![0u8; 64 << 20];
    for c in data.chunks_mut(8) {
        c.copy_from_slice(&splitmix(&mut seed).to_le_bytes());
    }
    let mut hist = std::collections::BTreeMap::new();
    for _ in 0..trials {
        let mut key = [0u8; 32];
        for c in key.chunks_mut(8) {
            c.copy_from_slice(&splitmix(&mut seed).to_le_bytes());
        }
        let gear = GearTable::from_key(&key);
        let pos = (data.len() / 4) + (splitmix(&mut seed) as usize % (data.len() / 2));
        let before: HashSet<Vec<u8>> = chunks(&gear, &data).into_iter().collect();
        let mut edited = data.clone();
        edited.insert(pos, 0x5a);
        let new = chunks(&gear, &edited)
            .into_iter()
            .filter(|c| !before.contains(c))
            .count();
        *hist.entry(new).or_insert(0) += 1;
    }
    println!("new chunks after a 1-byte insertion -> trials: {hist:?}");
}

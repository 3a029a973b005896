//! The keyed gear table: 256 pseudo-random 64-bit words, one per byte value, that drive the
//! rolling gear hash deciding where chunks end.
//!
//! Every entry comes from the chunker key through BLAKE3 in key-derivation mode, so without the
//! key the table is indistinguishable from random and chunk boundaries reveal no more about the
//! content than their count. The table is key material: it lives on the heap (so moves copy a
//! pointer, not the entries), is wiped on drop and never printed.

use std::fmt;
use zeroize::Zeroize;

/// BLAKE3 derive-key context. Fixed forever: changing it moves every chunk boundary of every
/// repository.
const GEAR_CONTEXT: &str = "coffer 2026-11 chunker gear table v1";

/// A gear table derived from a secret chunker key, ready for [`cut`](crate::cut).
pub struct GearTable {
    /// `gear[b]` is added to the hash when byte `b` enters it.
    pub(crate) gear: Box<[u64; 256]>,
    /// `gear[b] << 1`: the 2020 scan rolls two bytes per step and needs the first of the pair
    /// pre-shifted. Derived, not keyed separately, so that the two-byte scan equals a one-byte
    /// scan over `gear`.
    pub(crate) gear_ls: Box<[u64; 256]>,
}

impl GearTable {
    /// Derives the table: entry `i` is bytes `8 i .. 8 i + 8`, little-endian, of the BLAKE3 XOF
    /// output of `derive_key` mode with context `"coffer 2026-11 chunker gear table v1"` over the
    /// 32-byte key. Deterministic, so every client of a repository finds the same boundaries.
    pub fn from_key(key: &[u8; 32]) -> GearTable {
        let mut hasher = blake3::Hasher::new_derive_key(GEAR_CONTEXT);
        hasher.update(key);
        let mut output = hasher.finalize_xof();
        hasher.zeroize();

        // Zeros are no secret, so building the boxes on the stack first leaks nothing; the key
        // material is written straight into the heap.
        let mut gear = Box::new([0u64; 256]);
        let mut gear_ls = Box::new([0u64; 256]);
        let mut word = [0u8; 8];
        for (entry, entry_ls) in gear.iter_mut().zip(gear_ls.iter_mut()) {
            output.fill(&mut word);
            *entry = u64::from_le_bytes(word);
            *entry_ls = *entry << 1;
        }
        word.zeroize();
        output.zeroize();
        GearTable { gear, gear_ls }
    }
}

impl Drop for GearTable {
    fn drop(&mut self) {
        self.gear.zeroize();
        self.gear_ls.zeroize();
    }
}

impl fmt::Debug for GearTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GearTable(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::counting_key;

    #[test]
    fn matches_an_independent_derivation() {
        // The same derivation through blake3's other API: one 2 KiB XOF read instead of 8-byte
        // reads, so a mistake in the word loop would show.
        let mut bytes = [0u8; 256 * 8];
        blake3::Hasher::new_derive_key(GEAR_CONTEXT)
            .update(&counting_key())
            .finalize_xof()
            .fill(&mut bytes);
        let table = GearTable::from_key(&counting_key());
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            let expected = u64::from_le_bytes(chunk.try_into().unwrap());
            assert_eq!(table.gear[i], expected, "entry {i}");
            assert_eq!(table.gear_ls[i], expected << 1, "shifted entry {i}");
        }
    }

    #[test]
    fn first_entries_are_frozen() {
        // Key bytes 0, 1, ..., 31. Frozen after cross-checking the scan against the reference
        // implementation; a change here moves every boundary of every repository.
        let table = GearTable::from_key(&counting_key());
        assert_eq!(
            table.gear[..4],
            [
                0x0d2a_9fb2_9e36_33dd,
                0x9441_dc43_2cde_6b11,
                0x8049_57d5_b661_4493,
                0x31f9_477b_d000_9283,
            ]
        );
    }

    #[test]
    fn every_entry_depends_on_every_key_bit() {
        // A seed XORed into a fixed table would keep entry differences constant across keys;
        // a derived table must not. Flip each key bit and check that all 256 entries change.
        let base = GearTable::from_key(&counting_key());
        for bit in 0..256 {
            let mut key = counting_key();
            key[bit / 8] ^= 1 << (bit % 8);
            let other = GearTable::from_key(&key);
            let same = base
                .gear
                .iter()
                .zip(other.gear.iter())
                .filter(|(a, b)| a == b)
                .count();
            assert_eq!(same, 0, "key bit {bit}");
        }
    }

    #[test]
    fn debug_hides_entries() {
        let table = GearTable::from_key(&counting_key());
        let printed = format!("{table:?} {table:#?}");
        assert_eq!(printed, "GearTable(<redacted>) GearTable(<redacted>)");
        for entry in table.gear.iter() {
            assert!(!printed.contains(&format!("{entry:x}")));
            assert!(!printed.contains(&entry.to_string()));
        }
    }
}

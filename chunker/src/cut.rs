//! The FastCDC 2020 cut: where the first chunk of a slice ends.
//!
//! The scan itself is `fastcdc::v2020::cut_gear`, which accepts any 256-entry gear table and its
//! left-shifted twin; masks come from `fastcdc::v2020::select_masks` at normalization level 1.
//! In one-byte-at-a-time terms (the reference implementation in the tests) it computes, for
//! each position `i` from `min_size` on, `hash = (hash << 1) + gear[data[i]]` and ends the chunk
//! *before* byte `i` when `hash & mask == 0`, with a stricter mask before `avg_size` and a looser
//! one after it. The real scan rolls two bytes per step, so when a short final slice has odd
//! length its last byte is never a candidate; the reference reproduces that too.

use crate::gear::GearTable;
use crate::params::ChunkerParams;
use fastcdc::v2020::{cut_gear, select_masks, Normalization};

/// Level 1 is what the 2020 paper recommends and the `fastcdc` crate defaults to: most chunks
/// land between half and twice the average without hurting deduplication.
const NORMALIZATION: Normalization = Normalization::Level1;

/// The length of the first chunk of `data`.
///
/// The result is in `[min(len, min_size), min(len, max_size)]`; if `data.len() <= min_size` it is
/// `data.len()`. Only the first `max_size` bytes are looked at, so a caller streaming a large
/// input gets the same boundaries from any slice holding at least `max_size` bytes (or the rest
/// of the input). Never 0 for non-empty `data`.
pub fn cut(gear: &GearTable, params: &ChunkerParams, data: &[u8]) -> usize {
    let (mask_s, mask_l) = select_masks(params.avg_size() as usize, NORMALIZATION);
    let (_hash, length) = cut_gear(
        data,
        params.min_size() as usize,
        params.avg_size() as usize,
        params.max_size() as usize,
        mask_s,
        mask_l,
        mask_s << 1,
        mask_l << 1,
        &gear.gear[..],
        &gear.gear_ls[..],
    );
    length
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{chunk_lengths, counting_key, small_params, splitmix_bytes};
    use proptest::prelude::*;

    /// FastCDC 2020 written out one byte at a time from the paper, independent of `fastcdc`'s
    /// loop and mask selection (only the mask table is shared: it is data, not logic).
    fn reference_cut(gear: &[u64; 256], params: &ChunkerParams, data: &[u8]) -> usize {
        let min = params.min_size() as usize;
        let avg = params.avg_size() as usize;
        let max = params.max_size() as usize;
        if data.len() <= min {
            return data.len();
        }
        let end = data.len().min(max);
        // Normalized chunking: a mask with more one bits (cuts rarer) below the average, fewer
        // (cuts likelier) above it; level 1 is one bit either way of log2(avg).
        let bits = avg.trailing_zeros() as usize;
        let strict = fastcdc::v2020::MASKS[bits + 1];
        let loose = fastcdc::v2020::MASKS[bits - 1];
        // Candidates come in pairs (i, i + 1) starting at `min`, which is even, so an odd tail
        // byte has no partner and is never tested.
        let last_candidate = end & !1;
        let mut hash = 0u64;
        for (i, &byte) in data.iter().enumerate().take(last_candidate).skip(min) {
            hash = (hash << 1).wrapping_add(gear[byte as usize]);
            let mask = if i < avg { strict } else { loose };
            if hash & mask == 0 {
                return i;
            }
        }
        end
    }

    fn reference_lengths(gear: &GearTable, params: &ChunkerParams, data: &[u8]) -> Vec<usize> {
        let mut lengths = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let length = reference_cut(&gear.gear, params, rest);
            lengths.push(length);
            rest = &rest[length..];
        }
        lengths
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn matches_reference(
            key in any::<[u8; 32]>(),
            params in small_params(),
            seed in any::<u64>(),
            len in 0usize..200_000,
        ) {
            let gear = GearTable::from_key(&key);
            let data = splitmix_bytes(seed, len);
            prop_assert_eq!(chunk_lengths(&gear, &params, &data), reference_lengths(&gear, &params, &data));
        }

        /// Low-entropy input (few distinct bytes, long runs) exercises max-size cuts and the
        /// mask switch at `avg`, which random bytes rarely reach.
        #[test]
        fn matches_reference_on_low_entropy(
            params in small_params(),
            data in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(255u8)], 0..20_000),
        ) {
            let gear = GearTable::from_key(&counting_key());
            prop_assert_eq!(chunk_lengths(&gear, &params, &data), reference_lengths(&gear, &params, &data));
        }

        #[test]
        fn lengths_are_within_bounds(params in small_params(), seed in any::<u64>(), len in 0usize..100_000) {
            let gear = GearTable::from_key(&counting_key());
            let data = splitmix_bytes(seed, len);
            let length = cut(&gear, &params, &data);
            let min = params.min_size() as usize;
            let max = params.max_size() as usize;
            prop_assert!(length >= len.min(min));
            prop_assert!(length <= len.min(max));
            if len > 0 {
                prop_assert!(length > 0);
            }
            let lengths = chunk_lengths(&gear, &params, &data);
            prop_assert_eq!(lengths.iter().sum::<usize>(), len);
            if let Some((_last, all_but_last)) = lengths.split_last() {
                prop_assert!(all_but_last.iter().all(|&l| (min..=max).contains(&l)));
            }
        }

        /// The documented streaming contract: bytes past `max_size` never change the cut.
        #[test]
        fn only_the_first_max_size_bytes_matter(params in small_params(), seed in any::<u64>(), extra in 0usize..10_000) {
            let gear = GearTable::from_key(&counting_key());
            let max = params.max_size() as usize;
            let data = splitmix_bytes(seed, max + extra);
            prop_assert_eq!(cut(&gear, &params, &data), cut(&gear, &params, &data[..max]));
        }
    }

    #[test]
    fn constant_input_is_cut_at_max_size() {
        // All zeros never satisfies a mask for most keys: the gear hash of a constant run
        // settles to a fixed value. Either way the reference must agree.
        let gear = GearTable::from_key(&counting_key());
        let params = ChunkerParams::DUMPS;
        let data = vec![0u8; 1 << 20];
        assert_eq!(
            chunk_lengths(&gear, &params, &data),
            reference_lengths(&gear, &params, &data)
        );
    }

    #[test]
    fn same_key_same_boundaries_other_key_other_boundaries() {
        let data = splitmix_bytes(7, 1 << 20);
        let params = ChunkerParams::DUMPS;
        let first = chunk_lengths(&GearTable::from_key(&counting_key()), &params, &data);
        let again = chunk_lengths(&GearTable::from_key(&counting_key()), &params, &data);
        assert_eq!(first, again);

        let mut other_key = counting_key();
        other_key[31] ^= 0x80;
        let other = chunk_lengths(&GearTable::from_key(&other_key), &params, &data);
        assert_ne!(first, other);
        // Not just a shifted sequence: hardly any boundary positions are shared.
        let boundaries = |lengths: &[usize]| {
            lengths
                .iter()
                .scan(0, |end, l| {
                    *end += l;
                    Some(*end)
                })
                .collect::<std::collections::HashSet<usize>>()
        };
        let shared = boundaries(&first).intersection(&boundaries(&other)).count();
        assert!(shared <= 2, "{shared} shared boundaries of {}", first.len());
    }

    /// One frozen vector: a description of the input, the input, and the chunk lengths.
    struct Vector {
        input: &'static str,
        data: Vec<u8>,
        lengths: &'static [usize],
    }

    /// Checked-in chunk lengths for the key 0, 1, ..., 31. Inputs are prefixes of
    /// `splitmix_bytes(0, ..)` (SplitMix64 from state 0, outputs as little-endian bytes, so the
    /// input starts `af cd 1d 7b 39 a8 20 e2`), plus one run of zeros. Frozen after the
    /// cross-check against `reference_cut`; if they change, every stored chunk id changes.
    fn vectors(
        params: &ChunkerParams,
        long: usize,
        expected: [&'static [usize]; 9],
    ) -> Vec<Vector> {
        let min = params.min_size() as usize;
        let max = params.max_size() as usize;
        let inputs = [
            ("empty: no chunks at all", splitmix_bytes(0, 0)),
            ("1 byte: a lone short final chunk", splitmix_bytes(0, 1)),
            (
                "min_size - 1: below the first candidate",
                splitmix_bytes(0, min - 1),
            ),
            (
                "min_size: exactly fills the skipped prefix",
                splitmix_bytes(0, min),
            ),
            // One byte past min, odd: that byte is hashed but, lacking a pair, never tested.
            (
                "min_size + 1: the odd tail byte is no candidate",
                splitmix_bytes(0, min + 1),
            ),
            (
                "max_size: the longest input one cut could take whole",
                splitmix_bytes(0, max),
            ),
            (
                "max_size + 1: one byte more than any chunk",
                splitmix_bytes(0, max + 1),
            ),
            (
                "long random input: many content-defined cuts",
                splitmix_bytes(0, long),
            ),
            // The gear hash of a constant run settles to one value; here it never matches a
            // mask, so only forced max_size cuts remain, then a 1-byte tail.
            ("zeros, 2 * max_size + 1: forced cuts", vec![0; 2 * max + 1]),
        ];
        inputs
            .into_iter()
            .zip(expected)
            .map(|((input, data), lengths)| Vector {
                input,
                data,
                lengths,
            })
            .collect()
    }

    fn check_vectors(params: ChunkerParams, vectors: Vec<Vector>) {
        let gear = GearTable::from_key(&counting_key());
        for vector in vectors {
            let fast = chunk_lengths(&gear, &params, &vector.data);
            assert_eq!(fast, vector.lengths, "{params:?}, {}", vector.input);
            let slow = reference_lengths(&gear, &params, &vector.data);
            assert_eq!(
                slow, vector.lengths,
                "reference, {params:?}, {}",
                vector.input
            );
        }
    }

    #[test]
    fn test_input_generator_is_splitmix64() {
        // Published first output of SplitMix64 from state 0: 0xe220a8397b1dcdaf.
        assert_eq!(
            splitmix_bytes(0, 8),
            0xe220_a839_7b1d_cdaf_u64.to_le_bytes()
        );
    }

    #[test]
    fn frozen_vectors_files_proportions() {
        // FILES scaled down 256x (min = avg / 2, max = 8 avg), so the vectors stay short.
        let params = ChunkerParams::new(2048, 4096, 32768).unwrap();
        check_vectors(
            params,
            vectors(
                &params,
                256 * 1024,
                [
                    &[],
                    &[1],
                    &[2047],
                    &[2048],
                    &[2049],
                    &[4247, 6916, 6443, 5435, 3398, 6329],
                    &[4247, 6916, 6443, 5435, 3398, 6330],
                    &[
                        4247, 6916, 6443, 5435, 3398, 8028, 14990, 3334, 5803, 6246, 9013, 7811,
                        4515, 7987, 4577, 6274, 6029, 2104, 4257, 6257, 11236, 4958, 5509, 5611,
                        4511, 4737, 5401, 4133, 4078, 5091, 4151, 5796, 2224, 5613, 5286, 4353,
                        3926, 2919, 5419, 13286, 4698, 4298, 12895, 4476, 3875,
                    ],
                    &[32768, 32768, 1],
                ],
            ),
        );
    }

    #[test]
    fn frozen_vectors_dumps() {
        let params = ChunkerParams::DUMPS;
        check_vectors(
            params,
            vectors(
                &params,
                1 << 20,
                [
                    &[],
                    &[1],
                    &[4095],
                    &[4096],
                    &[4097],
                    &[4247, 18794, 29750, 47974, 23600, 6707],
                    &[4247, 18794, 29750, 47974, 23600, 6708],
                    &[
                        4247, 18794, 29750, 47974, 23600, 41262, 17453, 6969, 16387, 31615, 15742,
                        4476, 29488, 37444, 27765, 19766, 31103, 23328, 18287, 28080, 7235, 20712,
                        9804, 17590, 17308, 49990, 16920, 30394, 10712, 17290, 7974, 15784, 33069,
                        19313, 21799, 21574, 13776, 23757, 21538, 22487, 23589, 13109, 19925,
                        19718, 21878, 5796, 32338, 19398, 20269,
                    ],
                    &[131072, 131072, 1],
                ],
            ),
        );
    }
}

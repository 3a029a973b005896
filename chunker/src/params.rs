//! Chunk-size parameters and the rules that make them safe to hand to the FastCDC scan.
//!
//! The rules come from the algorithm, not from taste: the 2020 scan tests candidates in byte
//! pairs, so odd sizes would silently shift boundaries by one byte (fastcdc issue #52); the
//! normalization masks exist only for power-of-two averages from 128 B to 16 MiB; and a reader
//! must be able to bound its buffers, hence [`MAX_CHUNK_SIZE`].

use std::fmt;

/// Smallest accepted `min_size`, in bytes. Below this the gear hash (a 64-bit shift register)
/// has not seen a full window of chunk bytes before the first candidate.
pub const MIN_CHUNK_SIZE: u32 = 64;

/// Largest accepted `max_size`, in bytes; no chunk is ever longer. Readers of stored chunks can
/// check lengths against it before allocating.
pub const MAX_CHUNK_SIZE: u32 = 64 * 1024 * 1024;

/// Largest accepted `avg_size`: the FastCDC mask table ends at 16 MiB (with level-1
/// normalization the scan needs the mask one step above the average).
const MAX_AVG_SIZE: u32 = 16 * 1024 * 1024;

/// Validated chunk-size parameters, in bytes.
///
/// Guaranteed: `MIN_CHUNK_SIZE <= min_size < avg_size < max_size <= MAX_CHUNK_SIZE`, all three
/// even, and `avg_size` a power of two no larger than 16 MiB. Every chunk is at most `max_size`
/// long, and every chunk except the last of a stream is at least `min_size` long. Chunks average
/// somewhat above `avg_size` because nothing is cut before `min_size`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkerParams {
    min_size: u32,
    avg_size: u32,
    max_size: u32,
}

impl ChunkerParams {
    /// Default for files (upload trees): 512 KiB / 1 MiB / 8 MiB. Large chunks keep the index
    /// small; files are rarely edited in place in ways finer chunks would catch.
    pub const FILES: ChunkerParams = ChunkerParams {
        min_size: 512 * 1024,
        avg_size: 1024 * 1024,
        max_size: 8 * 1024 * 1024,
    };

    /// Default for database dump streams: 4 KiB / 16 KiB / 128 KiB. Successive dumps differ in
    /// many small scattered places, so smaller chunks deduplicate far better.
    pub const DUMPS: ChunkerParams = ChunkerParams {
        min_size: 4 * 1024,
        avg_size: 16 * 1024,
        max_size: 128 * 1024,
    };

    /// Checks the rules listed on [`ChunkerParams`]; a violation names the offending value.
    pub fn new(min_size: u32, avg_size: u32, max_size: u32) -> Result<Self, ParamsError> {
        let violation = if min_size < MIN_CHUNK_SIZE {
            Some(Violation::MinTooSmall(min_size))
        } else if max_size > MAX_CHUNK_SIZE {
            Some(Violation::MaxTooLarge(max_size))
        } else if !(min_size < avg_size && avg_size < max_size) {
            Some(Violation::NotIncreasing {
                min_size,
                avg_size,
                max_size,
            })
        } else if !avg_size.is_power_of_two() {
            Some(Violation::AvgNotPowerOfTwo(avg_size))
        } else if avg_size > MAX_AVG_SIZE {
            Some(Violation::AvgTooLarge(avg_size))
        } else if min_size % 2 != 0 {
            Some(Violation::Odd("min_size", min_size))
        } else if max_size % 2 != 0 {
            Some(Violation::Odd("max_size", max_size))
        } else {
            None
        };
        match violation {
            Some(violation) => Err(ParamsError(violation)),
            None => Ok(ChunkerParams {
                min_size,
                avg_size,
                max_size,
            }),
        }
    }

    /// No chunk but the last of a stream is shorter than this.
    pub fn min_size(&self) -> u32 {
        self.min_size
    }

    /// The target size; a power of two.
    pub fn avg_size(&self) -> u32 {
        self.avg_size
    }

    /// No chunk is longer than this.
    pub fn max_size(&self) -> u32 {
        self.max_size
    }
}

/// Chunk-size parameters that break one of the rules on [`ChunkerParams`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamsError(Violation);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Violation {
    MinTooSmall(u32),
    MaxTooLarge(u32),
    NotIncreasing {
        min_size: u32,
        avg_size: u32,
        max_size: u32,
    },
    AvgNotPowerOfTwo(u32),
    AvgTooLarge(u32),
    Odd(&'static str, u32),
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Violation::MinTooSmall(min) => {
                write!(f, "chunk min_size {min} is below {MIN_CHUNK_SIZE} bytes")
            }
            Violation::MaxTooLarge(max) => {
                write!(f, "chunk max_size {max} is above {MAX_CHUNK_SIZE} bytes")
            }
            Violation::NotIncreasing {
                min_size,
                avg_size,
                max_size,
            } => write!(
                f,
                "chunk sizes must satisfy min < avg < max, got {min_size} / {avg_size} / {max_size}"
            ),
            Violation::AvgNotPowerOfTwo(avg) => {
                write!(f, "chunk avg_size {avg} is not a power of two")
            }
            Violation::AvgTooLarge(avg) => {
                write!(f, "chunk avg_size {avg} is above {MAX_AVG_SIZE} bytes")
            }
            Violation::Odd(name, value) => write!(f, "chunk {name} {value} is odd"),
        }
    }
}

impl std::error::Error for ParamsError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(min: u32, avg: u32, max: u32) -> String {
        ChunkerParams::new(min, avg, max).unwrap_err().to_string()
    }

    #[test]
    fn defaults_pass_validation() {
        for params in [ChunkerParams::FILES, ChunkerParams::DUMPS] {
            let checked = ChunkerParams::new(params.min_size, params.avg_size, params.max_size);
            assert_eq!(checked, Ok(params));
        }
    }

    #[test]
    fn extremes_are_accepted() {
        // The smallest and largest parameters the rules allow, to pin down the inclusive ends.
        assert!(ChunkerParams::new(64, 128, 130).is_ok());
        assert!(ChunkerParams::new(64, 16 * 1024 * 1024, MAX_CHUNK_SIZE).is_ok());
    }

    #[test]
    fn each_rule_has_its_own_message() {
        assert_eq!(
            message(62, 128, 1024),
            "chunk min_size 62 is below 64 bytes"
        );
        assert_eq!(
            message(64, 128, MAX_CHUNK_SIZE + 2),
            "chunk max_size 67108866 is above 67108864 bytes"
        );
        assert_eq!(
            message(1024, 1024, 4096),
            "chunk sizes must satisfy min < avg < max, got 1024 / 1024 / 4096"
        );
        assert_eq!(
            message(1024, 8192, 8192),
            "chunk sizes must satisfy min < avg < max, got 1024 / 8192 / 8192"
        );
        assert_eq!(
            message(1024, 3000, 8192),
            "chunk avg_size 3000 is not a power of two"
        );
        assert_eq!(
            message(1024, 32 * 1024 * 1024, MAX_CHUNK_SIZE),
            "chunk avg_size 33554432 is above 16777216 bytes"
        );
        assert_eq!(message(1025, 2048, 8192), "chunk min_size 1025 is odd");
        assert_eq!(message(1024, 2048, 8191), "chunk max_size 8191 is odd");
    }

    #[test]
    fn error_is_a_std_error() {
        let error: Box<dyn std::error::Error> = Box::new(ChunkerParams::new(0, 0, 0).unwrap_err());
        assert!(error.to_string().contains("min_size 0"));
    }

    proptest! {
        /// Whatever comes in, `new` either refuses or returns exactly the documented invariants.
        #[test]
        fn accepted_params_satisfy_invariants(min in 0u32..5000, avg_log in 0u32..30, max in 0u32..70_000_000) {
            let avg = 1u32 << avg_log;
            if let Ok(params) = ChunkerParams::new(min, avg, max) {
                prop_assert!(MIN_CHUNK_SIZE <= params.min_size());
                prop_assert!(params.min_size() < params.avg_size());
                prop_assert!(params.avg_size() < params.max_size());
                prop_assert!(params.max_size() <= MAX_CHUNK_SIZE);
                prop_assert!(params.avg_size() <= MAX_AVG_SIZE);
                prop_assert_eq!(params.min_size() % 2, 0);
                prop_assert_eq!(params.max_size() % 2, 0);
            }
        }
    }
}

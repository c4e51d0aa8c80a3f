//! Content-defined chunking with FastCDC (2020) over uncompressed input, so
//! that an insertion shifts only the chunks around it and deduplication
//! survives edits anywhere in a file or stream.

use serde::{Deserialize, Serialize};
use std::io::Read;

/// Chunk size bounds, stored in the repository config so every writer cuts alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    /// No chunk is smaller, except the last of an input.
    pub min: u32,
    /// Target average size.
    pub avg: u32,
    /// No chunk is larger.
    pub max: u32,
    /// FastCDC normalization level (0 to 3). Level 0 resynchronizes soonest
    /// after an edit, which is what deduplication of changed data needs;
    /// chunks then average about `min + avg`.
    #[serde(default)]
    pub normalization: u8,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min: 512 * 1024,
            avg: 512 * 1024,
            max: 8 * 1024 * 1024,
            normalization: 0,
        }
    }
}

impl ChunkerParams {
    /// Bounds 32 times smaller (min 4 KiB), for streams whose changes are
    /// small and scattered, such as a Redis RDB in hash-table order: a 1%
    /// change spread over 1 KiB values touches nearly every 1 MiB chunk but
    /// few 32 KiB ones. Derived from the repository's bounds, so every
    /// writer cuts such streams alike too.
    pub fn fine(self) -> ChunkerParams {
        let min = (self.min / 32).max(4096);
        ChunkerParams {
            min,
            avg: (self.avg / 32).max(min),
            max: (self.max / 32).max(4 * min),
            normalization: self.normalization,
        }
    }
}

/// Cuts `reader` into chunks; memory is bounded by `max` whatever the input size.
pub fn chunks<R: Read>(
    reader: R,
    params: ChunkerParams,
) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
    use fastcdc::v2020::Normalization;
    let level = match params.normalization {
        0 => Normalization::Level0,
        1 => Normalization::Level1,
        2 => Normalization::Level2,
        _ => Normalization::Level3,
    };
    fastcdc::v2020::StreamCDC::with_level(reader, params.min, params.avg, params.max, level).map(
        |r| {
            r.map(|c| c.data).map_err(|e| match e {
                fastcdc::v2020::Error::IoError(io) => io,
                other => std::io::Error::other(other.to_string()),
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn an_insertion_changes_few_chunks() {
        let params = ChunkerParams {
            min: 4096,
            avg: 16384,
            max: 65536,
            normalization: 0,
        };
        let data = pseudo_random(2 * 1024 * 1024, 7);
        let mut edited = data.clone();
        edited.splice(1_000_000..1_000_000, b"inserted bytes".iter().copied());
        let a: Vec<Vec<u8>> = chunks(&data[..], params).map(|c| c.unwrap()).collect();
        let b: Vec<Vec<u8>> = chunks(&edited[..], params).map(|c| c.unwrap()).collect();
        assert_eq!(a.concat(), data);
        assert_eq!(b.concat(), edited);
        let common = b.iter().filter(|c| a.contains(c)).count();
        assert!(
            common + 3 >= b.len(),
            "{common} of {} chunks shared",
            b.len()
        );
        assert!(a.iter().all(|c| c.len() <= 65536));
    }
}

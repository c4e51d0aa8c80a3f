//! Content-defined chunking with FastCDC (2020) over uncompressed input, so
//! that an insertion shifts only the chunks around it and deduplication
//! survives edits anywhere in a file or stream.

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::sync::{Arc, Mutex};

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
    /// Finer bounds (min /128, at least 4 KiB; average /64; max /32), for
    /// streams whose changes are small and scattered, such as a Redis RDB
    /// in hash-table order: a 1% change spread over 1 KiB values touches
    /// nearly every 1 MiB chunk, a third of 32 KiB ones, an eighth of the
    /// 12 KiB these give. Derived from the repository's bounds, so every
    /// writer cuts such streams alike too.
    pub fn fine(self) -> ChunkerParams {
        let min = (self.min / 128).max(4096);
        ChunkerParams {
            min,
            avg: (self.avg / 64).max(min),
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
    StreamChunker::new(reader, params, None)
}

/// [`chunks`], each chunk in a buffer from `pool` (hand it back with
/// [`BufferPool::give`] when done with it).
pub fn chunks_pooled<R: Read>(
    reader: R,
    params: ChunkerParams,
    pool: Arc<BufferPool>,
) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
    StreamChunker::new(reader, params, Some(pool))
}

/// Chunk buffers handed back after use: a backup reuses a few instead of
/// allocating one per chunk, which costs page faults and, with glibc,
/// leaves freed megabytes scattered over every thread's arena.
#[derive(Debug)]
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
    largest: usize,
}

impl BufferPool {
    /// A pool keeping up to `keep` buffers of at most `largest` bytes'
    /// capacity (a rare long chunk's buffer is freed, not kept resident).
    pub fn new(keep: usize, largest: usize) -> BufferPool {
        BufferPool {
            free: Mutex::new(Vec::with_capacity(keep)),
            keep,
            largest,
        }
    }

    /// An empty buffer with room for `len` bytes.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let found = self.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match found {
            Some(mut v) => {
                v.reserve(len);
                v
            }
            None => Vec::with_capacity(len),
        }
    }

    /// Hands a buffer back.
    pub fn give(&self, mut v: Vec<u8>) {
        if v.capacity() == 0 || v.capacity() > self.largest {
            return;
        }
        v.clear();
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.keep {
            free.push(v);
        }
    }
}

/// FastCDC over a reader with one buffer of `max` bytes. A cut found
/// before the end of what is buffered is final (the scan would find the
/// same first boundary with more data behind it), so the buffer is only
/// refilled, moving the unconsumed tail to its front, when a chunk runs
/// past its end: about one partial chunk moved per buffer, where fastcdc's
/// own `StreamCDC` moves the whole buffer after every chunk. The cuts are
/// the same as `StreamCDC`'s, so repositories written before deduplicate.
struct StreamChunker<R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    len: usize,
    eof: bool,
    min: usize,
    avg: usize,
    max: usize,
    masks: (u64, u64),
    pool: Option<Arc<BufferPool>>,
}

impl<R: Read> StreamChunker<R> {
    fn new(reader: R, params: ChunkerParams, pool: Option<Arc<BufferPool>>) -> StreamChunker<R> {
        use fastcdc::v2020::{logarithm2, MASKS};
        let clamp = |v: u32, lo: u32, hi: u32| v.clamp(lo, hi) as usize;
        let min = clamp(
            params.min,
            fastcdc::v2020::MINIMUM_MIN,
            fastcdc::v2020::MINIMUM_MAX,
        );
        let avg = clamp(
            params.avg,
            fastcdc::v2020::AVERAGE_MIN,
            fastcdc::v2020::AVERAGE_MAX,
        );
        let max = clamp(
            params.max,
            fastcdc::v2020::MAXIMUM_MIN,
            fastcdc::v2020::MAXIMUM_MAX,
        );
        let bits = logarithm2(avg as u32) as usize;
        let norm = usize::from(params.normalization.min(3));
        StreamChunker {
            reader,
            buf: Vec::new(),
            start: 0,
            len: 0,
            eof: false,
            min,
            avg,
            max,
            masks: (MASKS[bits + norm], MASKS[bits - norm]),
            pool,
        }
    }

    /// Moves the unconsumed bytes to the front and reads until the buffer
    /// is full or the input ends.
    fn refill(&mut self) -> std::io::Result<()> {
        if self.buf.len() < self.max {
            self.buf.resize(self.max, 0);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.len, 0);
            self.len -= self.start;
            self.start = 0;
        }
        while self.len < self.buf.len() && !self.eof {
            match self.reader.read(&mut self.buf[self.len..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            let avail = self.len - self.start;
            if avail == 0 && self.eof {
                return Ok(None);
            }
            if avail < self.avg.min(self.max) && !self.eof {
                // Too little buffered for the cut to be final whatever it finds.
                self.refill()?;
                continue;
            }
            let (mask_s, mask_l) = self.masks;
            let (_, count) = fastcdc::v2020::cut(
                &self.buf[self.start..self.len],
                self.min,
                self.avg,
                self.max,
                mask_s,
                mask_l,
                mask_s << 1,
                mask_l << 1,
            );
            if count >= avail && avail < self.max && !self.eof {
                // No boundary in what is buffered: a later one may lie beyond.
                self.refill()?;
                continue;
            }
            let data = &self.buf[self.start..self.start + count];
            let mut chunk = match &self.pool {
                Some(p) => p.take(count),
                None => Vec::with_capacity(count),
            };
            chunk.extend_from_slice(data);
            self.start += count;
            return Ok(Some(chunk));
        }
    }
}

impl<R: Read> Iterator for StreamChunker<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_chunk() {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => None,
            Err(e) => {
                // An error ends the stream.
                self.eof = true;
                self.start = self.len;
                Some(Err(e))
            }
        }
    }
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

    /// A reader that hands out its data a few odd-sized pieces at a time.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.step = (self.step * 7 + 13) % 50_000 + 1;
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn cuts_are_fastcdcs_own_whatever_the_reads() {
        let data = pseudo_random(3 * 1024 * 1024 + 12345, 11);
        for params in [
            ChunkerParams {
                min: 4096,
                avg: 16384,
                max: 65536,
                normalization: 0,
            },
            ChunkerParams {
                min: 8192,
                avg: 32768,
                max: 131072,
                normalization: 2,
            },
            ChunkerParams::default(),
        ] {
            let theirs: Vec<Vec<u8>> = fastcdc::v2020::StreamCDC::with_level(
                &data[..],
                params.min,
                params.avg,
                params.max,
                match params.normalization {
                    0 => fastcdc::v2020::Normalization::Level0,
                    _ => fastcdc::v2020::Normalization::Level2,
                },
            )
            .map(|c| c.unwrap().data)
            .collect();
            let pool = Arc::new(BufferPool::new(4, 1 << 20));
            let ours: Vec<Vec<u8>> = chunks_pooled(
                Trickle {
                    data: &data,
                    step: 1,
                },
                params,
                pool.clone(),
            )
            .map(|c| c.unwrap())
            .collect();
            let lens = |v: &[Vec<u8>]| v.iter().map(Vec::len).collect::<Vec<_>>();
            assert_eq!(lens(&ours), lens(&theirs), "{params:?}");
            assert_eq!(ours, theirs);
            for c in ours {
                pool.give(c);
            }
        }
        assert_eq!(chunks(&b""[..], ChunkerParams::default()).count(), 0);
    }

    #[test]
    fn a_read_error_ends_the_chunks_with_it() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk gone"))
            }
        }
        let mut it = chunks(Failing, ChunkerParams::default());
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
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

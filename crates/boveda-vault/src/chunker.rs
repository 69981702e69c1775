//! Content-defined chunking (FastCDC 2020) with a secret gear table.

use std::borrow::Cow;
use std::io::{self, Read};

use fastcdc::v2020::{Normalization, cut_gear, get_gear_with_seed, select_masks};
use serde::{Deserialize, Serialize};

/// Chunk size bounds, fixed when a vault is created (changing them would
/// break deduplication against existing points).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl ChunkerParams {
    /// 512 KiB / 1 MiB / 4 MiB: see docs/FORMAT.md for the measurement.
    pub const DEFAULT: Self = Self { min_size: 512 << 10, avg_size: 1 << 20, max_size: 4 << 20 };

    pub fn is_valid(&self) -> bool {
        use fastcdc::v2020::{AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN};
        let (min, avg, max) = (self.min_size as usize, self.avg_size as usize, self.max_size as usize);
        (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min < avg
            && avg < max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0
    }
}

/// Cuts a byte stream into chunks; reusable across files so the buffer is
/// allocated once per thread.
pub struct Chunker {
    params: ChunkerParams,
    masks: (u64, u64),
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
    buf: Vec<u8>,
}

impl Chunker {
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        let masks = select_masks(params.avg_size as usize, Normalization::Level1);
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Self { params, masks, gear, gear_ls, buf: Vec::new() }
    }

    fn next_cut(&self, data: &[u8]) -> usize {
        let p = &self.params;
        let (mask_s, mask_l) = self.masks;
        let (_, n) = cut_gear(
            data,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &self.gear,
            &self.gear_ls,
        );
        n
    }

    /// Reads `reader` to its end and hands each chunk to `emit`, in order.
    ///
    /// # Errors
    /// The reader's errors, or the first error `emit` returns.
    pub fn chunk<R: Read, E: From<io::Error>>(
        &mut self,
        mut reader: R,
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let max = self.params.max_size as usize;
        let cap = max * 2;
        let mut buf = std::mem::take(&mut self.buf);
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        let mut len = 0usize;
        let mut eof = false;
        let mut total = 0u64;
        let result = loop {
            while !eof && len < cap {
                match reader.read(&mut buf[len..]) {
                    Ok(0) => eof = true,
                    Ok(n) => len += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.buf = buf;
                        return Err(e.into());
                    }
                }
            }
            let mut start = 0usize;
            let mut failed = None;
            while start < len && (eof || len - start >= max) {
                let n = self.next_cut(&buf[start..len]).max(1);
                if let Err(e) = emit(&buf[start..start + n]) {
                    failed = Some(e);
                    break;
                }
                total += n as u64;
                start += n;
            }
            if let Some(e) = failed {
                break Err(e);
            }
            buf.copy_within(start..len, 0);
            len -= start;
            if eof && len == 0 {
                break Ok(total);
            }
        };
        self.buf = buf;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn small() -> ChunkerParams {
        ChunkerParams { min_size: 1024, avg_size: 4096, max_size: 16384 }
    }

    fn cuts(data: &[u8], seed: u64) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(small(), seed);
        let mut out = Vec::new();
        c.chunk::<_, io::Error>(data, |ch| {
            out.push(ch.to_vec());
            Ok(())
        })
        .expect("chunk");
        out
    }

    proptest! {
        #[test]
        fn chunks_reassemble_and_respect_bounds(data in proptest::collection::vec(any::<u8>(), 0..100_000), seed in any::<u64>()) {
            let chunks = cuts(&data, seed);
            prop_assert_eq!(chunks.concat(), data);
            for (i, c) in chunks.iter().enumerate() {
                prop_assert!(c.len() <= 16384);
                if i + 1 < chunks.len() { prop_assert!(c.len() >= 1024); }
            }
        }
    }

    #[test]
    fn an_insert_changes_few_chunks() {
        let mut rng = 1u64;
        let data: Vec<u8> = (0..400_000)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        let mut edited = data.clone();
        edited.splice(200_000..200_000, b"inserted bytes".iter().copied());
        let a = cuts(&data, 7);
        let b = cuts(&edited, 7);
        let common = b.iter().filter(|c| a.contains(c)).count();
        assert!(common + 3 >= b.len(), "{common} of {} chunks shared", b.len());
        assert!(ChunkerParams::DEFAULT.is_valid());
        assert!(!ChunkerParams { min_size: 10, avg_size: 5, max_size: 1 }.is_valid());
    }
}

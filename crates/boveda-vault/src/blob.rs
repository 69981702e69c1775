//! A blob is one chunk or one tree, compressed when that helps, then sealed.
//!
//! Sealed plaintext: `mode (u8) || payload`, mode 0 = stored raw, 1 = zstd.
//! Blobs carry no associated data: their id is the keyed hash of the
//! plaintext, checked on every read, which binds a blob to its name.

use serde::{Deserialize, Serialize};

use std::cell::RefCell;

#[cfg(test)]
use crate::crypto::MasterKey;
use crate::crypto::{AuthError, BlobKey, NONCE_LEN, Sealer, TAG_LEN};

/// What a blob holds. Values are part of the format: do not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum BlobKind {
    /// File or disk content.
    Data = 0,
    /// A directory listing (tree object).
    Tree = 1,
}

impl BlobKind {
    pub fn folder(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
        }
    }
}

/// What sealing adds to a chunk's stored bytes: nonce, mode byte, tag.
pub const BLOB_OVERHEAD: usize = NONCE_LEN + 1 + TAG_LEN;

const MODE_RAW: u8 = 0;
const MODE_ZSTD: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("unknown compression mode {0}")]
    Mode(u8),
    #[error("decompression failed: {0}")]
    Decompress(std::io::Error),
    #[error("content does not match its id")]
    IdMismatch,
}

thread_local! {
    // zstd contexts hold megabytes of tables: one per thread, reused.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses `plaintext` into `out` after its current end; returns false
/// when compression fails or does not shrink it.
fn compress_into(plaintext: &[u8], level: i32, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = zstd::bulk::Compressor::new(level).ok().map(|c| (level, c));
        }
        let Some((_, c)) = slot.as_mut() else { return false };
        let mut cursor = std::io::Cursor::new(&mut *out);
        cursor.set_position(start as u64);
        match c.compress_to_buffer(plaintext, &mut cursor) {
            Ok(n) if n < plaintext.len() => {
                out.truncate(start + n);
                true
            }
            _ => {
                out.truncate(start);
                false
            }
        }
    })
}

/// Compresses (when that shrinks it) and seals a plaintext.
pub fn encode_blob(sealer: &Sealer, plaintext: &[u8], zstd_level: i32) -> Vec<u8> {
    let bound = zstd::zstd_safe::compress_bound(plaintext.len()).max(plaintext.len());
    let mut out = Vec::with_capacity(NONCE_LEN + 1 + bound + TAG_LEN);
    out.resize(NONCE_LEN, 0);
    out.push(MODE_ZSTD);
    let compressed = zstd_level > 0 && plaintext.len() > 64 && compress_into(plaintext, zstd_level, &mut out);
    if !compressed {
        out.truncate(NONCE_LEN);
        out.push(MODE_RAW);
        out.extend_from_slice(plaintext);
    }
    sealer.seal_in_place(b"", &mut out);
    out
}

fn decompress(payload: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress(payload, raw_len),
            None => zstd::bulk::decompress(payload, raw_len),
        }
    })
}

/// [`decode_blob`] without copies: the blob is opened where it lies in
/// `sealed` (which it overwrites) and decompressed into `out` (a buffer the
/// caller reuses); the plaintext is a part of one of them.
///
/// # Errors
/// As [`decode_blob`].
pub fn decode_blob_in_place<'a>(
    key: &BlobKey,
    sealed: &'a mut [u8],
    raw_len: usize,
    expected: &crate::ChunkId,
    out: &'a mut Vec<u8>,
) -> Result<&'a [u8], BlobError> {
    let framed = key.sealer.open_in_place(b"", sealed)?;
    let (&mode, payload) = framed.split_first().ok_or(BlobError::Mode(255))?;
    let plain: &[u8] = match mode {
        MODE_RAW => payload,
        MODE_ZSTD => {
            out.clear();
            out.reserve(raw_len);
            DECOMPRESSOR
                .with(|cell| {
                    let mut slot = cell.borrow_mut();
                    if slot.is_none() {
                        *slot = Some(zstd::bulk::Decompressor::new()?);
                    }
                    match slot.as_mut() {
                        Some(d) => d.decompress_to_buffer(payload, out),
                        None => Err(std::io::Error::other("no decompressor")),
                    }
                })
                .map_err(BlobError::Decompress)?;
            out
        }
        m => return Err(BlobError::Mode(m)),
    };
    if plain.len() != raw_len || &key.chunk_id(plain) != expected {
        return Err(BlobError::IdMismatch);
    }
    Ok(plain)
}

/// Opens, decompresses and verifies a blob against its expected id.
///
/// # Errors
/// [`BlobError`] naming authentication, compression or id failure.
pub fn decode_blob(
    key: &BlobKey,
    sealed: &[u8],
    raw_len: usize,
    expected: &crate::ChunkId,
) -> Result<Vec<u8>, BlobError> {
    let mut framed = key.sealer.open(b"", sealed)?;
    let mode = *framed.first().ok_or(BlobError::Mode(255))?;
    let plain = match mode {
        MODE_RAW => {
            framed.remove(0);
            framed
        }
        MODE_ZSTD => decompress(&framed[1..], raw_len).map_err(BlobError::Decompress)?,
        m => return Err(BlobError::Mode(m)),
    };
    if plain.len() != raw_len || &key.chunk_id(&plain) != expected {
        return Err(BlobError::IdMismatch);
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunk_compress_encrypt_round_trip(data in proptest::collection::vec(any::<u8>(), 0..20_000), repeat in 1usize..4, level in 0i32..4) {
            let key = MasterKey::generate();
            let plain: Vec<u8> = data.iter().copied().cycle().take(data.len() * repeat).collect();
            let id = key.chunk_id(&plain);
            let sealed = encode_blob(key.sealer(), &plain, level);
            prop_assert!(sealed.len() <= plain.len() + 1 + crate::crypto::SEAL_OVERHEAD);
            let bk = key.blob_key(None).expect("key");
            prop_assert_eq!(decode_blob(&bk, &sealed, plain.len(), &id).expect("decode"), plain);
        }
    }

    #[test]
    fn compressible_data_shrinks_and_wrong_id_is_caught() {
        let key = MasterKey::generate();
        let plain = vec![7u8; 100_000];
        let sealed = encode_blob(key.sealer(), &plain, 3);
        assert!(sealed.len() < 1000);
        let other = key.chunk_id(b"other");
        let bk = key.blob_key(None).expect("key");
        assert!(matches!(decode_blob(&bk, &sealed, plain.len(), &other), Err(BlobError::IdMismatch)));
    }
}

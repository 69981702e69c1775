//! A blob is one chunk or one tree, compressed when that helps, then sealed.
//!
//! Sealed plaintext: `mode (u8) || payload`, mode 0 = stored raw, 1 = zstd.
//! Blobs carry no associated data: their id is the keyed hash of the
//! plaintext, checked on every read, which binds a blob to its name.

use serde::{Deserialize, Serialize};

use crate::crypto::{AuthError, MasterKey};

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

/// Compresses (when that shrinks it) and seals a plaintext.
pub fn encode_blob(key: &MasterKey, plaintext: &[u8], zstd_level: i32) -> Vec<u8> {
    let mut framed = Vec::with_capacity(plaintext.len() + 1);
    let compressed = if zstd_level > 0 && plaintext.len() > 64 {
        zstd::bulk::compress(plaintext, zstd_level)
            .ok()
            .filter(|c| c.len() < plaintext.len())
    } else {
        None
    };
    match compressed {
        Some(c) => {
            framed.push(MODE_ZSTD);
            framed.extend_from_slice(&c);
        }
        None => {
            framed.push(MODE_RAW);
            framed.extend_from_slice(plaintext);
        }
    }
    key.sealer().seal(b"", &framed)
}

/// Opens, decompresses and verifies a blob against its expected id.
///
/// # Errors
/// [`BlobError`] naming authentication, compression or id failure.
pub fn decode_blob(
    key: &MasterKey,
    sealed: &[u8],
    raw_len: usize,
    expected: &crate::ChunkId,
) -> Result<Vec<u8>, BlobError> {
    let framed = key.sealer().open(b"", sealed)?;
    let (&mode, payload) = framed.split_first().ok_or(BlobError::Mode(255))?;
    let plain = match mode {
        MODE_RAW => payload.to_vec(),
        MODE_ZSTD => zstd::bulk::decompress(payload, raw_len).map_err(BlobError::Decompress)?,
        m => return Err(BlobError::Mode(m)),
    };
    if &key.chunk_id(&plain) != expected {
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
            let sealed = encode_blob(&key, &plain, level);
            prop_assert!(sealed.len() <= plain.len() + 1 + crate::crypto::SEAL_OVERHEAD);
            prop_assert_eq!(decode_blob(&key, &sealed, plain.len(), &id).expect("decode"), plain);
        }
    }

    #[test]
    fn compressible_data_shrinks_and_wrong_id_is_caught() {
        let key = MasterKey::generate();
        let plain = vec![7u8; 100_000];
        let sealed = encode_blob(&key, &plain, 3);
        assert!(sealed.len() < 1000);
        let other = key.chunk_id(b"other");
        assert!(matches!(
            decode_blob(&key, &sealed, plain.len(), &other),
            Err(BlobError::IdMismatch)
        ));
    }
}

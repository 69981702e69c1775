//! Pack files: many sealed blobs in one object, with a sealed footer that
//! lists them, so an index can be rebuilt from the packs alone.
//!
//! ```text
//! header (8 bytes, kind Pack)
//! blob 0 | blob 1 | ... | blob n-1        each nonce || ciphertext || tag
//! footer: sealed postcard(PackFooter), associated data = header
//! footer length: u32 little-endian
//! ```
//! A pack's id is the BLAKE3 hash of all its bytes, so `check` can verify a
//! pack file against its name without the key.
//!
//! A pack a registered host wrote (format version 3) has a host's header
//! followed by who sealed it (`crate::object::Envelope`); its blobs and
//! footer are sealed under that host session's key, the footer with the
//! header and who sealed it as associated data.

use serde::{Deserialize, Serialize};

use crate::blob::BlobKind;
use crate::crypto::{MasterKey, Sealer};
use crate::error::{Result, VaultError};
use crate::host_keys::SealedBy;
use crate::object::{Envelope, ObjectKind, Sealing, parse_any_header};
use crate::{ChunkId, PackId};

/// Where one blob sits inside a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    pub id: ChunkId,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackFooter {
    pub kind: BlobKind,
    pub entries: Vec<PackEntry>,
}

/// A pack being filled in memory.
pub struct PackBuilder {
    kind: BlobKind,
    envelope: Envelope,
    /// The envelope's prefix: what the pack starts with.
    prefix: usize,
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A pack ready to be stored.
pub struct FinishedPack {
    pub id: PackId,
    pub kind: BlobKind,
    pub bytes: Vec<u8>,
    pub entries: Vec<PackEntry>,
    /// Who sealed it, for a host's pack.
    pub sealed_by: Option<SealedBy>,
}

impl PackBuilder {
    #[cfg(test)]
    pub fn new(kind: BlobKind) -> Self {
        Self::with_buffer(kind, Envelope::MASTER, Vec::new())
    }

    /// A pack in `envelope` (the vault's, or a host session's) that fills
    /// a recycled buffer (its capacity is kept).
    pub fn with_buffer(kind: BlobKind, envelope: Envelope, mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.extend_from_slice(&envelope.prefix(ObjectKind::Pack));
        Self { kind, envelope, prefix: buf.len(), buf, entries: Vec::new() }
    }

    /// Reserves room for `bytes` more, so a filling pack never doubles its buffer.
    pub fn reserve(&mut self, bytes: usize) {
        self.buf.reserve_exact(bytes.saturating_sub(self.buf.capacity() - self.buf.len()));
    }

    pub fn add(&mut self, id: ChunkId, raw_len: u32, sealed: &[u8]) {
        self.entries.push(PackEntry { id, offset: self.buf.len() as u32, length: sealed.len() as u32, raw_len });
        self.buf.extend_from_slice(sealed);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seals the footer under `sealer` (the key the blobs were sealed
    /// under: the master key's, or the host session's of the envelope).
    pub fn finish(self, sealer: &Sealer) -> Result<FinishedPack> {
        let footer = PackFooter { kind: self.kind, entries: self.entries };
        let plain = postcard::to_stdvec(&footer).map_err(|e| VaultError::Invalid(e.to_string()))?;
        let mut bytes = self.buf;
        let before = bytes.len();
        let aad = bytes[..self.prefix].to_vec();
        sealer.seal_into(&aad, &plain, &mut bytes);
        let footer_len = (bytes.len() - before) as u32;
        bytes.extend_from_slice(&footer_len.to_le_bytes());
        let id = PackId(*blake3::hash(&bytes).as_bytes());
        let sealed_by = match self.envelope.sealing {
            Sealing::Host(by) => Some(by),
            Sealing::Master => None,
        };
        Ok(FinishedPack { id, kind: footer.kind, bytes, entries: footer.entries, sealed_by })
    }
}

/// `packs/<data|tree>/<first two hex digits>/<pack id>`
pub fn pack_name(kind: BlobKind, id: &PackId) -> String {
    let hex = id.to_hex();
    format!("packs/{}/{}/{}", kind.folder(), &hex[..2], hex)
}

/// The inverse of [`pack_name`].
pub fn parse_pack_name(name: &str) -> Option<(BlobKind, PackId)> {
    let mut parts = name.split('/');
    if parts.next()? != "packs" {
        return None;
    }
    let kind = match parts.next()? {
        "data" => BlobKind::Data,
        "tree" => BlobKind::Tree,
        _ => return None,
    };
    let _fanout = parts.next()?;
    let id = PackId::from_hex(parts.next()?)?;
    // only the name [`pack_name`] gives: one pack, one name
    (parts.next().is_none() && pack_name(kind, &id) == name).then_some((kind, id))
}

/// Reads and authenticates the footer of a whole pack file.
///
/// # Errors
/// `Damaged` naming the pack when the footer is unreadable.
pub fn read_footer(key: &MasterKey, name: &str, bytes: &[u8]) -> Result<PackFooter> {
    let (envelope, body) = parse_any_header(name, bytes, ObjectKind::Pack)?;
    let prefix = bytes.len() - body.len();
    let damaged = |why: &str| VaultError::damaged(name, why);
    if bytes.len() < prefix + 4 {
        return Err(damaged("too short for a pack"));
    }
    let (rest, len_bytes) = bytes.split_at(bytes.len() - 4);
    let footer_len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]) as usize;
    if footer_len > rest.len() - prefix {
        return Err(damaged("footer length runs past the start"));
    }
    let sealed = &rest[rest.len() - footer_len..];
    let sealer = envelope.sealer(key).map_err(|e| VaultError::damaged(name, e))?;
    let plain = sealer.open(&bytes[..prefix], sealed).map_err(|_| damaged("pack footer fails authentication"))?;
    postcard::from_bytes(&plain).map_err(|e| damaged(&format!("pack footer does not parse: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{decode_blob, encode_blob};

    proptest::proptest! {
        #[test]
        fn any_pack_round_trips(blobs in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000), 0..12)) {
            let key = MasterKey::generate();
            let mut b = PackBuilder::new(BlobKind::Tree);
            for blob in &blobs {
                b.add(key.chunk_id(blob), blob.len() as u32, &encode_blob(key.sealer(), blob, 1));
            }
            let p = b.finish(key.sealer()).expect("finish");
            let footer = read_footer(&key, "p", &p.bytes).expect("footer");
            proptest::prop_assert_eq!(footer.kind, BlobKind::Tree);
            proptest::prop_assert_eq!(footer.entries.len(), blobs.len());
            for (e, blob) in footer.entries.iter().zip(&blobs) {
                let sealed = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
                proptest::prop_assert_eq!(&decode_blob(&key.blob_key(None).expect("key"), sealed, e.raw_len as usize, &e.id).expect("blob"), blob);
            }
        }
    }

    #[test]
    fn pack_round_trip() {
        let key = MasterKey::generate();
        let mut b = PackBuilder::new(BlobKind::Data);
        let blobs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 + i as usize]).collect();
        for blob in &blobs {
            b.add(key.chunk_id(blob), blob.len() as u32, &encode_blob(key.sealer(), blob, 3));
        }
        let p = b.finish(key.sealer()).expect("finish");
        assert_eq!(PackId(*blake3::hash(&p.bytes).as_bytes()), p.id);
        let name = pack_name(p.kind, &p.id);
        assert_eq!(parse_pack_name(&name), Some((BlobKind::Data, p.id)));
        let footer = read_footer(&key, &name, &p.bytes).expect("footer");
        assert_eq!(footer.entries, p.entries);
        for (e, blob) in footer.entries.iter().zip(&blobs) {
            let sealed = &p.bytes[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(
                &decode_blob(&key.blob_key(None).expect("key"), sealed, e.raw_len as usize, &e.id).expect("blob"),
                blob
            );
        }
        let mut bad = p.bytes.clone();
        let n = bad.len();
        bad[n - 10] ^= 1;
        assert!(read_footer(&key, &name, &bad).is_err());
        assert!(parse_pack_name("packs/data/ab").is_none());
    }
}

//! Index objects: which packs a backup wrote and the blobs in each, sealed
//! and named after their bytes.
//!
//! The payload is postcard. Format version 2 lists packs the vault sealed;
//! version 3 (see `crate::object`) adds to each pack who sealed it, for
//! packs a registered host wrote: a host's index object lists only packs
//! of its own session, and the vault writes version 3 only for an object
//! that lists a host's pack (when prune merges index objects).

use serde::{Deserialize, Serialize};

use crate::PackId;
use crate::blob::BlobKind;
use crate::crypto::MasterKey;
use crate::error::{Result, VaultError};
use crate::host_keys::SealedBy;
use crate::object::{Envelope, FORMAT_VERSION, ObjectKind, Sealing, open_enveloped, seal_enveloped};
use crate::pack::PackEntry;

/// Where index objects live; also what they are bound to when sealed.
const INDEX_FOLDER: &str = "index";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    pub id: PackId,
    pub kind: BlobKind,
    pub size: u64,
    pub entries: Vec<PackEntry>,
    /// Who sealed the pack, for a pack a host wrote (format version 3).
    pub sealed_by: Option<SealedBy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexObject {
    pub packs: Vec<IndexPack>,
}

/// The payload of format version 2: packs the vault sealed.
#[derive(Serialize, Deserialize)]
struct PackV2 {
    id: PackId,
    kind: BlobKind,
    size: u64,
    entries: Vec<PackEntry>,
}

fn name_of(bytes: &[u8]) -> String {
    format!("{INDEX_FOLDER}/{}", blake3::hash(bytes).to_hex())
}

impl IndexObject {
    /// Seals the index and names it after the hash of its bytes: format
    /// version 2 unless it lists a host's pack.
    pub fn seal(&self, key: &MasterKey) -> Result<(String, Vec<u8>)> {
        let bytes = if self.packs.iter().any(|p| p.sealed_by.is_some()) {
            let plain = postcard::to_stdvec(&self.packs).map_err(|e| VaultError::Invalid(e.to_string()))?;
            seal_enveloped(&Envelope::MASTER_V3, key.sealer(), ObjectKind::Index, INDEX_FOLDER, &plain)
        } else {
            let v2: Vec<PackV2> = self
                .packs
                .iter()
                .map(|p| PackV2 { id: p.id, kind: p.kind, size: p.size, entries: p.entries.clone() })
                .collect();
            let plain = postcard::to_stdvec(&v2).map_err(|e| VaultError::Invalid(e.to_string()))?;
            seal_enveloped(&Envelope::MASTER, key.sealer(), ObjectKind::Index, INDEX_FOLDER, &plain)
        };
        Ok((name_of(&bytes), bytes))
    }

    /// Seals the index for the vault, as a host's session (see
    /// `crate::host_keys`), and names it after the hash of its bytes. Every
    /// pack it lists must be of the session.
    ///
    /// # Errors
    /// `Invalid` for a pack sealed by another session.
    pub fn seal_for_vault(&self, session: &crate::HostSession) -> Result<(String, Vec<u8>)> {
        if self.packs.iter().any(|p| p.sealed_by != Some(session.sealed_by())) {
            return Err(VaultError::Invalid("a host's index object lists only its session's packs".into()));
        }
        let plain = postcard::to_stdvec(&self.packs).map_err(|e| VaultError::Invalid(e.to_string()))?;
        let bytes = crate::object::seal_bytes_for_vault(session, ObjectKind::Index, INDEX_FOLDER, &plain);
        Ok((name_of(&bytes), bytes))
    }

    /// Opens an index object, which is named after the hash of its bytes:
    /// a copy under another name is detected as surely as an altered byte.
    ///
    /// # Errors
    /// `Damaged` when the name does not match the content, authentication
    /// fails or the content does not parse.
    pub fn open(key: &MasterKey, name: &str, bytes: &[u8]) -> Result<Self> {
        if name.strip_prefix(INDEX_FOLDER).and_then(|n| n.strip_prefix('/'))
            != Some(blake3::hash(bytes).to_hex().as_str())
        {
            return Err(VaultError::damaged(
                name,
                "content does not match its name (altered, or a copy of another index object)",
            ));
        }
        let (envelope, plain) = open_enveloped(key, name, INDEX_FOLDER, bytes, ObjectKind::Index)?;
        let packs: Vec<IndexPack> = if envelope.version == FORMAT_VERSION {
            let v2: Vec<PackV2> = postcard::from_bytes(&plain).map_err(|e| VaultError::damaged(name, e))?;
            v2.into_iter()
                .map(|p| IndexPack { id: p.id, kind: p.kind, size: p.size, entries: p.entries, sealed_by: None })
                .collect()
        } else {
            postcard::from_bytes(&plain).map_err(|e| VaultError::damaged(name, e))?
        };
        // a host lists only its own session's packs
        if let Sealing::Host(by) = envelope.sealing
            && packs.iter().any(|p| p.sealed_by != Some(by))
        {
            return Err(VaultError::damaged(name, "a host's index object lists a pack another session sealed"));
        }
        Ok(IndexObject { packs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChunkId;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn index_object_round_trip(n in 0usize..50, seed in any::<u8>()) {
            let key = MasterKey::generate();
            let entries: Vec<PackEntry> = (0..n).map(|i| PackEntry {
                id: ChunkId([seed.wrapping_add(i as u8); 32]), offset: i as u32 * 10, length: 10, raw_len: 20,
            }).collect();
            let pack = IndexPack { id: PackId([seed; 32]), kind: BlobKind::Tree, size: 99, entries, sealed_by: None };
            let obj = IndexObject { packs: vec![pack.clone()] };
            let (name, bytes) = obj.seal(&key).expect("seal");
            prop_assert!(name.starts_with("index/"));
            prop_assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), FORMAT_VERSION, "version 2 without a host's pack");
            prop_assert_eq!(IndexObject::open(&key, &name, &bytes).expect("open"), obj.clone());
            // sealed by a host for the vault: the vault opens it, named the same way
            let host = key.host_keys(crate::RecordId::random(), crate::ChunkerParams::DEFAULT, crate::RecordId::random());
            let session = host.new_session().expect("session");
            prop_assert!(obj.seal_for_vault(&session).is_err(), "a host lists only its session's packs");
            let ours = IndexObject { packs: vec![IndexPack { sealed_by: Some(session.sealed_by()), ..pack.clone() }] };
            let (name, bytes) = ours.seal_for_vault(&session).expect("seal");
            prop_assert!(name.starts_with("index/"));
            prop_assert_eq!(IndexObject::open(&key, &name, &bytes).expect("open"), ours.clone());
            prop_assert!(IndexObject::open(&MasterKey::generate(), &name, &bytes).is_err());
            // merged by the vault (prune): version 3 under the master key, who sealed each pack kept
            let merged = IndexObject { packs: vec![pack, ours.packs[0].clone()] };
            let (name, bytes) = merged.seal(&key).expect("seal");
            prop_assert_eq!(IndexObject::open(&key, &name, &bytes).expect("open"), merged);
        }
    }
}

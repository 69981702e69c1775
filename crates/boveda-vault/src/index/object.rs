//! Index objects: which packs a backup wrote and the blobs in each, sealed
//! and named after their bytes.

use serde::{Deserialize, Serialize};

use crate::PackId;
use crate::blob::BlobKind;
use crate::crypto::MasterKey;
use crate::error::{Result, VaultError};
use crate::object::{ObjectKind, open_bytes, seal_bytes};
use crate::pack::PackEntry;

/// Where index objects live; also what they are bound to when sealed.
const INDEX_FOLDER: &str = "index";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexPack {
    pub id: PackId,
    pub kind: BlobKind,
    pub size: u64,
    pub entries: Vec<PackEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexObject {
    pub packs: Vec<IndexPack>,
}

impl IndexObject {
    /// Seals the index and names it after the hash of its bytes.
    pub fn seal(&self, key: &MasterKey) -> Result<(String, Vec<u8>)> {
        let plain = postcard::to_stdvec(self).map_err(|e| VaultError::Invalid(e.to_string()))?;
        let bytes = seal_bytes(key, ObjectKind::Index, INDEX_FOLDER, &plain);
        Ok((format!("{INDEX_FOLDER}/{}", blake3::hash(&bytes).to_hex()), bytes))
    }

    /// Seals the index for the vault, as a host's session (see
    /// `crate::host_keys`), and names it after the hash of its bytes.
    pub fn seal_for_vault(&self, session: &crate::HostSession) -> Result<(String, Vec<u8>)> {
        let plain = postcard::to_stdvec(self).map_err(|e| VaultError::Invalid(e.to_string()))?;
        let bytes = crate::object::seal_bytes_for_vault(session, ObjectKind::Index, INDEX_FOLDER, &plain);
        Ok((format!("{INDEX_FOLDER}/{}", blake3::hash(&bytes).to_hex()), bytes))
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
        let plain = open_bytes(key, name, INDEX_FOLDER, bytes, ObjectKind::Index)?;
        postcard::from_bytes(&plain).map_err(|e| VaultError::damaged(name, e))
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
            let obj = IndexObject { packs: vec![IndexPack { id: PackId([seed; 32]), kind: BlobKind::Tree, size: 99, entries }] };
            let (name, bytes) = obj.seal(&key).expect("seal");
            prop_assert!(name.starts_with("index/"));
            prop_assert_eq!(IndexObject::open(&key, &name, &bytes).expect("open"), obj.clone());
            // sealed by a host for the vault: the vault opens it, named the same way
            let host = key.host_keys(crate::RecordId::random(), crate::RecordId::random());
            let (name, bytes) = obj.seal_for_vault(&host.new_session().expect("session")).expect("seal");
            prop_assert!(name.starts_with("index/"));
            prop_assert_eq!(IndexObject::open(&key, &name, &bytes).expect("open"), obj);
            prop_assert!(IndexObject::open(&MasterKey::generate(), &name, &bytes).is_err());
        }
    }
}

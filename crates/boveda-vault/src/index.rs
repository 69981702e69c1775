//! Index objects say which pack holds each blob. Every pack written gets an
//! index object of its own right after it (so a backup killed midway leaves
//! only indexed packs behind, which the next backup reuses); readers merge
//! all index objects into a [`ChunkIndex`] in memory.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::blob::BlobKind;
use crate::crypto::MasterKey;
use crate::error::{Result, VaultError};
use crate::object::{ObjectKind, open_bytes, seal_bytes};
use crate::pack::PackEntry;
use crate::{ChunkId, PackId};

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

/// Where a blob is, as callers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRef {
    pub pack: PackId,
    pub kind: BlobKind,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
}

#[derive(Debug, Clone, Copy)]
struct Loc {
    pack: u32,
    offset: u32,
    length: u32,
    raw_len: u32,
}

/// All index objects merged: about 60 bytes a blob in memory.
/// Where every chunk of a vault is. Packs marked for deletion can be added
/// as *readable only*: their chunks are found by [`ChunkIndex::get`] (a
/// backup still reads its parent's trees from them) but are not
/// [`ChunkIndex::contains`]ed, so nothing new comes to depend on them.
#[derive(Default)]
pub struct ChunkIndex {
    packs: Vec<(PackId, BlobKind, u64)>,
    pack_pos: HashMap<PackId, u32>,
    blobs: HashMap<ChunkId, Loc>,
    /// Positions of the readable-only packs.
    read_only: std::collections::HashSet<u32>,
}

impl ChunkIndex {
    /// Adds a pack. A chunk already located keeps its first location, so
    /// packs added readable-only after the others never shadow them.
    pub fn add_pack(&mut self, pack: &IndexPack) {
        let pos = *self.pack_pos.entry(pack.id).or_insert_with(|| {
            self.packs.push((pack.id, pack.kind, pack.size));
            (self.packs.len() - 1) as u32
        });
        for e in &pack.entries {
            self.blobs.entry(e.id).or_insert(Loc { pack: pos, offset: e.offset, length: e.length, raw_len: e.raw_len });
        }
    }

    /// Adds a pack marked for deletion: readable, never deduplicated against.
    pub fn add_read_only_pack(&mut self, pack: &IndexPack) {
        let before = self.packs.len();
        self.add_pack(pack);
        if let Some(&pos) = self.pack_pos.get(&pack.id)
            && pos as usize >= before
        {
            self.read_only.insert(pos);
        }
    }

    pub fn get(&self, id: &ChunkId) -> Option<BlobRef> {
        let loc = self.blobs.get(id)?;
        let (pack, kind, _) = self.packs[loc.pack as usize];
        Some(BlobRef { pack, kind, offset: loc.offset, length: loc.length, raw_len: loc.raw_len })
    }

    /// Whether the chunk is stored in a pack new data may depend on (not
    /// one marked for deletion): what deduplication asks.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.blobs.get(id).is_some_and(|loc| !self.read_only.contains(&loc.pack))
    }

    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Every indexed pack: id, kind and size.
    pub fn packs(&self) -> impl Iterator<Item = (PackId, BlobKind, u64)> + '_ {
        self.packs.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
            prop_assert_eq!(IndexObject::open(&key, &name, &bytes).expect("open"), obj);
        }
    }

    #[test]
    fn first_location_wins() {
        let e = PackEntry { id: ChunkId([1; 32]), offset: 8, length: 5, raw_len: 5 };
        let mut idx = ChunkIndex::default();
        idx.add_pack(&IndexPack { id: PackId([1; 32]), kind: BlobKind::Data, size: 1, entries: vec![e] });
        idx.add_pack(&IndexPack { id: PackId([2; 32]), kind: BlobKind::Data, size: 1, entries: vec![e] });
        assert_eq!(idx.get(&e.id).map(|r| r.pack), Some(PackId([1; 32])));
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.packs().count(), 2);
    }
}

//! Index objects say which pack holds each blob. Every pack written gets an
//! index object of its own right after it (so a backup killed midway leaves
//! only indexed packs behind, which the next backup reuses); readers merge
//! all index objects into a [`ChunkIndex`].

use std::collections::{HashMap, HashSet};

use crate::blob::BlobKind;
use crate::host_keys::SealedBy;
use crate::{ChunkId, PackId};

pub mod merged;
mod object;

use merged::{Loc, MergedIndex};
pub use object::{IndexObject, IndexPack};

/// Where a blob is, as callers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRef {
    pub pack: PackId,
    pub kind: BlobKind,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
    /// Who sealed the pack, for a pack a registered host wrote.
    pub sealed_by: Option<SealedBy>,
}

/// Where every chunk of a vault is: the merged index file when the vault
/// has a cache folder (see [`merged`]), and in memory what
/// it lacks (index objects listed since, or every object without a cache:
/// about 60 bytes a chunk).
///
/// Packs marked for deletion are marked *readable only*: their chunks are
/// found by [`ChunkIndex::get`] (a backup still reads its parent's trees
/// from them) but are not [`ChunkIndex::contains`]ed, so nothing new comes
/// to depend on them. A chunk in several packs is found in the first one
/// listed that new data may depend on.
/// A pack as the index keeps it.
type Pack = (PackId, BlobKind, u64, Option<SealedBy>);

#[derive(Default)]
pub struct ChunkIndex {
    base: Option<MergedIndex>,
    /// Base packs left out: the index objects that listed them are gone.
    base_gone: HashSet<u32>,
    /// Packs not in the base, at positions after the base's.
    packs: Vec<Pack>,
    pack_pos: HashMap<PackId, u32>,
    blobs: HashMap<ChunkId, Loc>,
    /// Positions of the readable-only packs.
    read_only: HashSet<u32>,
}

impl ChunkIndex {
    /// An index over a merged index file, less the packs at `gone`.
    pub(crate) fn with_base(base: MergedIndex, gone: HashSet<u32>) -> Self {
        Self { base: Some(base), base_gone: gone, ..Self::default() }
    }

    fn base_packs(&self) -> u32 {
        self.base.as_ref().map_or(0, |b| u32::try_from(b.pack_count()).unwrap_or(u32::MAX))
    }

    fn position(&self, id: &PackId) -> Option<u32> {
        self.base.as_ref().and_then(|b| b.find_pack(id)).or_else(|| self.pack_pos.get(id).copied())
    }

    fn pack_at(&self, pos: u32) -> Pack {
        match &self.base {
            Some(b) if pos < self.base_packs() => {
                let p = b.pack(pos);
                (p.id, p.kind, p.size, p.sealed_by)
            }
            _ => self.packs[(pos - self.base_packs()) as usize],
        }
    }

    /// Adds a pack. A chunk already located keeps its first location, so
    /// packs added readable-only after the others never shadow them. A
    /// pack the base holds is only counted again (listed by a new index
    /// object that replaced the one that listed it before).
    pub fn add_pack(&mut self, pack: &IndexPack) {
        if let Some(pos) = self.base.as_ref().and_then(|b| b.find_pack(&pack.id)) {
            self.base_gone.remove(&pos);
            return;
        }
        let base = self.base_packs();
        let pos = *self.pack_pos.entry(pack.id).or_insert_with(|| {
            self.packs.push((pack.id, pack.kind, pack.size, pack.sealed_by));
            base + (self.packs.len() - 1) as u32
        });
        for e in &pack.entries {
            self.blobs.entry(e.id).or_insert(Loc { pack: pos, offset: e.offset, length: e.length, raw_len: e.raw_len });
        }
    }

    /// Adds a pack marked for deletion: readable, never deduplicated against.
    pub fn add_read_only_pack(&mut self, pack: &IndexPack) {
        let known = self.position(&pack.id).is_some_and(|p| !self.base_gone.contains(&p));
        self.add_pack(pack);
        if !known && let Some(pos) = self.position(&pack.id) {
            self.read_only.insert(pos);
        }
    }

    /// Marks an indexed pack readable only (it is marked for deletion).
    pub(crate) fn mark_read_only(&mut self, id: &PackId) {
        if let Some(pos) = self.position(id) {
            self.read_only.insert(pos);
        }
    }

    /// The chunk's locations, first first: the base's valid ones, then the
    /// one in memory.
    fn locations(&self, id: ChunkId) -> impl Iterator<Item = Loc> + '_ {
        let base = self.base.iter().flat_map(move |b| b.locations(id)).filter(|l| !self.base_gone.contains(&l.pack));
        base.chain(self.blobs.get(&id).copied())
    }

    pub fn get(&self, id: &ChunkId) -> Option<BlobRef> {
        let mut first = None;
        for loc in self.locations(*id) {
            if !self.read_only.contains(&loc.pack) {
                first = Some(loc);
                break;
            }
            first.get_or_insert(loc);
        }
        let loc = first?;
        let (pack, kind, _, sealed_by) = self.pack_at(loc.pack);
        Some(BlobRef { pack, kind, offset: loc.offset, length: loc.length, raw_len: loc.raw_len, sealed_by })
    }

    /// Whether the chunk is stored in a pack new data may depend on (not
    /// one marked for deletion): what deduplication asks.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.locations(*id).any(|loc| !self.read_only.contains(&loc.pack))
    }

    /// Chunks indexed (a chunk whose only copies are in packs of index
    /// objects no longer listed may still be counted when the merged index
    /// holds it twice).
    pub fn len(&self) -> usize {
        let Some(base) = &self.base else { return self.blobs.len() };
        let gone: u64 = self.base_gone.iter().map(|&p| u64::from(base.pack(p).entries)).sum();
        let in_base = |id: &ChunkId| base.locations(*id).iter().any(|l| !self.base_gone.contains(&l.pack));
        let added = self.blobs.keys().filter(|id| !in_base(id)).count();
        usize::try_from(base.distinct().saturating_sub(gone)).unwrap_or(usize::MAX) + added
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every indexed pack: id, kind and size.
    pub fn packs(&self) -> impl Iterator<Item = (PackId, BlobKind, u64)> + '_ {
        (0..self.base_packs())
            .filter(|p| !self.base_gone.contains(p))
            .map(|p| self.pack_at(p))
            .chain(self.packs.iter().copied())
            .map(|(id, kind, size, _)| (id, kind, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::PackEntry;

    #[test]
    fn first_location_wins() {
        let e = PackEntry { id: ChunkId([1; 32]), offset: 8, length: 5, raw_len: 5 };
        let mut idx = ChunkIndex::default();
        idx.add_pack(&IndexPack {
            id: PackId([1; 32]),
            kind: BlobKind::Data,
            size: 1,
            entries: vec![e],
            sealed_by: None,
        });
        idx.add_pack(&IndexPack {
            id: PackId([2; 32]),
            kind: BlobKind::Data,
            size: 1,
            entries: vec![e],
            sealed_by: None,
        });
        assert_eq!(idx.get(&e.id).map(|r| r.pack), Some(PackId([1; 32])));
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.packs().count(), 2);
    }
}

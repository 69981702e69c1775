//! The index and reading blobs and trees.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use boveda_store::StoreErrorKind;
use rayon::prelude::*;

use crate::ChunkId;
use crate::blob::decode_blob;
use crate::error::{Result, VaultError};
use crate::index::merged::{MergedIndex, MergedIndexBuilder};
use crate::index::{BlobRef, ChunkIndex, IndexObject};
use crate::pack::pack_name;
use crate::tree::Tree;

use super::Vault;

/// Index objects listed since a merged index was written that are read
/// and added in memory, at most; more, and the file is built again.
const PATCH_OBJECTS: usize = 256;
/// Sealed bytes of those objects at most (about 180 000 entries, some
/// 15 MB in memory): memory stays bounded whatever was added.
const PATCH_BYTES: u64 = 8 << 20;

/// Whether a merged index file is close enough to the listing to be
/// patched: then the base packs whose objects are gone, and the names of
/// the objects to add. `None` when it should be built again.
fn patchable(base: MergedIndex, listed: &[boveda_store::ObjectInfo]) -> Option<(MergedIndex, HashSet<u32>, Vec<&str>)> {
    let merged: HashSet<&str> = base.names().iter().map(String::as_str).collect();
    let added: Vec<&boveda_store::ObjectInfo> = listed.iter().filter(|o| !merged.contains(o.name.as_str())).collect();
    if added.len() > PATCH_OBJECTS || added.iter().map(|o| o.size).sum::<u64>() > PATCH_BYTES {
        return None;
    }
    let added: Vec<&str> = added.iter().map(|o| o.name.as_str()).collect();
    let listed: HashSet<&str> = listed.iter().map(|o| o.name.as_str()).collect();
    let removed: HashSet<u32> = (0..base.names().len())
        .filter(|&i| !listed.contains(base.names()[i].as_str()))
        .filter_map(|i| u32::try_from(i).ok())
        .collect();
    let mut gone = HashSet::new();
    if !removed.is_empty() {
        let mut entries = 0u64;
        for pos in 0..u32::try_from(base.pack_count()).ok()? {
            let pack = base.pack(pos);
            if removed.contains(&pack.source) {
                gone.insert(pos);
                entries += u64::from(pack.entries);
            }
        }
        // packs swept away cost a lookup each time they are skipped
        if entries > (base.distinct() / 8).max(100_000) {
            return None;
        }
    }
    Some((base, gone, added))
}

/// Bytes of tree packs a vault keeps in memory at most (then it starts over).
const TREE_PACKS_KEPT: usize = 64 << 20;

impl Vault {
    /// Reads every index object and merges them.
    ///
    /// # Errors
    /// A store error, or `Damaged` naming an index object.
    pub fn load_index(&self) -> Result<ChunkIndex> {
        self.load_index_without(&HashSet::new())
    }

    /// Reads every index object; the packs in `skip` (marked for deletion)
    /// are added readable-only and last: a backup reads its parent's trees
    /// from them but never deduplicates against them.
    ///
    /// With a cache folder the index is the merged index file, patched in
    /// memory with the index objects listed since it was written, or built
    /// again when it is missing, damaged or far behind.
    ///
    /// # Errors
    /// As [`Vault::load_index`].
    pub fn load_index_without(&self, skip: &HashSet<crate::PackId>) -> Result<ChunkIndex> {
        self.with_index_listing(|listed| match &self.merged_index {
            Some(path) => self.load_merged_index(path, listed, skip),
            None => self.load_index_in_memory(&listed.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), skip),
        })
    }

    /// Lists the index objects and runs `read` on the listing. An object
    /// listed and then deleted was rewritten by a prune: one that
    /// consolidated small objects, or swept a pack out of a bigger one,
    /// wrote the replacement before deleting, so listing again finds it.
    pub(super) fn with_index_listing<T>(&self, read: impl Fn(&[boveda_store::ObjectInfo]) -> Result<T>) -> Result<T> {
        for _ in 0..4 {
            let listed = self.store.list("index")?;
            match read(&listed) {
                Err(VaultError::Store(e)) if e.kind() == StoreErrorKind::NotFound => continue,
                Err(e) => return Err(e),
                Ok(value) => {
                    self.forget_unlisted("index", listed.iter().map(|o| o.name.as_str()));
                    return Ok(value);
                }
            }
        }
        Err(VaultError::Busy("the index keeps changing while being read; try again".into()))
    }

    pub(super) fn open_index_object(&self, name: &str) -> Result<IndexObject> {
        self.read_immutable(name, |b| IndexObject::open(&self.key, name, b))
    }

    /// Reads index objects in parallel, in order; damaged ones are noted
    /// and left out.
    pub(super) fn read_index_objects<'n>(&self, names: &[&'n str]) -> Result<Vec<(&'n str, IndexObject)>> {
        names
            .par_iter()
            .filter_map(|&name| self.skip_damaged(self.open_index_object(name).map(|o| (name, o))))
            .collect()
    }

    pub(super) fn load_index_in_memory(&self, names: &[&str], skip: &HashSet<crate::PackId>) -> Result<ChunkIndex> {
        let objects = self.read_index_objects(names)?;
        let mut index = ChunkIndex::default();
        for (_, obj) in &objects {
            for pack in obj.packs.iter().filter(|p| !skip.contains(&p.id)) {
                index.add_pack(pack);
            }
        }
        for (_, obj) in &objects {
            for pack in obj.packs.iter().filter(|p| skip.contains(&p.id)) {
                index.add_read_only_pack(pack);
            }
        }
        Ok(index)
    }

    pub(super) fn load_merged_index(
        &self,
        path: &std::path::Path,
        listed: &[boveda_store::ObjectInfo],
        skip: &HashSet<crate::PackId>,
    ) -> Result<ChunkIndex> {
        let mac_key = self.key.cache_mac_key();
        let names: Vec<&str> = listed.iter().map(|o| o.name.as_str()).collect();
        let names = names.as_slice();
        let mut index = match MergedIndex::open(path, &mac_key).and_then(|base| patchable(base, listed)) {
            Some((base, gone, added)) => {
                let added = self.read_index_objects(&added)?;
                let mut index = ChunkIndex::with_base(base, gone);
                for (_, obj) in &added {
                    obj.packs.iter().for_each(|p| index.add_pack(p));
                }
                index
            }
            None => match self.build_merged_index(path, listed, &mac_key)? {
                Some(base) => ChunkIndex::with_base(base, HashSet::new()),
                // the cache folder cannot take the file: do without it
                None => return self.load_index_in_memory(names, skip),
            },
        };
        skip.iter().for_each(|id| index.mark_read_only(id));
        Ok(index)
    }

    /// Builds the merged index file from every index object listed, a
    /// batch at a time (64 objects or 16 MiB of them, read in parallel).
    /// `None` when the file cannot be written.
    pub(super) fn build_merged_index(
        &self,
        path: &std::path::Path,
        listed: &[boveda_store::ObjectInfo],
        mac_key: &[u8; 32],
    ) -> Result<Option<MergedIndex>> {
        let Ok(mut builder) = MergedIndexBuilder::new(path) else { return Ok(None) };
        let mut batches: Vec<Vec<&str>> = Vec::new();
        let mut bytes = 0;
        for o in listed {
            match batches.last_mut() {
                Some(batch) if batch.len() < 64 && bytes + o.size <= 16 << 20 => {
                    bytes += o.size;
                    batch.push(&o.name);
                }
                _ => {
                    bytes = o.size;
                    batches.push(vec![&o.name]);
                }
            }
        }
        for batch in &batches {
            for (name, obj) in self.read_index_objects(batch)? {
                if builder.add(name, &obj).is_err() {
                    return Ok(None);
                }
            }
        }
        if builder.finish(path, mac_key).is_err() {
            return Ok(None);
        }
        Ok(MergedIndex::open(path, mac_key))
    }

    /// Every index object with its name, read through the cache.
    ///
    /// # Errors
    /// A store error. A damaged index object is skipped and noted in the
    /// damage log: only the chunks it lists are lost.
    pub fn index_objects(&self) -> Result<Vec<(String, IndexObject)>> {
        self.with_index_listing(|listed| {
            let names: Vec<&str> = listed.iter().map(|o| o.name.as_str()).collect();
            Ok(self.read_index_objects(&names)?.into_iter().map(|(n, o)| (n.to_string(), o)).collect())
        })
    }

    /// The chunks of registered host `host` the vault holds now (in packs
    /// the host sealed, not marked for deletion): what the host's next
    /// backup may deduplicate against. It cannot list them itself.
    ///
    /// # Errors
    /// A store error.
    pub fn host_chunks(&self, host: &crate::RecordId) -> Result<HashSet<ChunkId>> {
        let marked = crate::gc::marked_packs(self)?;
        let mut out = HashSet::new();
        for (_, object) in self.index_objects()? {
            for pack in object.packs {
                if pack.sealed_by.is_some_and(|b| b.host == *host) && !marked.contains(&pack.id) {
                    out.extend(pack.entries.iter().map(|e| e.id));
                }
            }
        }
        Ok(out)
    }

    /// Checks what a registered host says it backed up before a point may
    /// name it: every tree from `root` down, and every chunk they name, is
    /// in the index, in a pack `host` sealed and not marked for deletion,
    /// and every tree opens under the host's keys. A host cannot make a
    /// point of chunks it did not write (another host's, or the vault's
    /// own), which a restore onto that host would hand it. Returns the
    /// packs the point reaches, by name.
    ///
    /// # Errors
    /// `Invalid` naming the first chunk that fails and why; a store error.
    pub fn check_host_tree(&self, host: &crate::RecordId, root: &ChunkId) -> Result<HashSet<String>> {
        let index = self.load_index_without(&crate::gc::marked_packs(self)?)?;
        let refuse = |id: &ChunkId, why: &str| {
            VaultError::Invalid(format!("chunk {id} of the point {why}: the point is refused"))
        };
        let reached = std::cell::RefCell::new(HashSet::new());
        let owned = |id: &ChunkId| -> Result<()> {
            let r = index.get(id).filter(|_| index.contains(id)).ok_or_else(|| refuse(id, "is not in the vault"))?;
            reached.borrow_mut().insert(pack_name(r.kind, &r.pack));
            match r.sealed_by {
                Some(by) if by.host == *host => Ok(()),
                Some(_) => Err(refuse(id, "is another host's")),
                None => Err(refuse(id, "was not written by this host")),
            }
        };
        let mut trees = vec![*root];
        let mut seen = HashSet::new();
        while let Some(id) = trees.pop() {
            if !seen.insert(id) {
                continue;
            }
            owned(&id)?;
            let tree = self.load_tree(&index, &id).map_err(|e| refuse(&id, &format!("does not open ({e})")))?;
            for node in &tree.nodes {
                trees.extend(node.subtree);
                for piece in &node.content {
                    if let crate::Piece::Data { id, .. } = piece {
                        owned(id)?;
                    }
                }
            }
        }
        Ok(reached.into_inner())
    }

    /// Where and how this vault's writers store: its store, compression,
    /// pack size and parallel requests.
    pub fn writer_target(&self) -> crate::blob_writer::WriterTarget {
        crate::blob_writer::WriterTarget {
            store: self.store.clone(),
            compression_level: self.settings().compression_level,
            pack_size: self.settings().pack_size as usize,
            parallel: self.parallel_requests(),
        }
    }

    /// Reads, authenticates and decompresses one blob.
    ///
    /// # Errors
    /// `MissingChunk` when no index lists it; `Damaged` naming the pack.
    pub fn read_blob(&self, index: &ChunkIndex, id: &ChunkId) -> Result<Vec<u8>> {
        let r = index.get(id).ok_or(VaultError::MissingChunk { chunk: *id })?;
        let name = pack_name(r.kind, &r.pack);
        let sealed = self.store.get_range(&name, u64::from(r.offset), u64::from(r.length))?;
        self.decode_blob_at(&r, id, &sealed)
    }

    /// Whether `plaintext` is chunk `id`: its keyed hash under the key of
    /// whoever wrote the chunk (this vault or a host), as a restore drill
    /// checks the bytes it restored, without reading the chunk again.
    ///
    /// # Errors
    /// `MissingChunk` when no index lists it; `Damaged` for a writer's key
    /// that cannot be worked out.
    pub fn chunk_matches(&self, index: &ChunkIndex, id: &ChunkId, plaintext: &[u8]) -> Result<bool> {
        let r = index.get(id).ok_or(VaultError::MissingChunk { chunk: *id })?;
        let key =
            self.key.blob_key(r.sealed_by.as_ref()).map_err(|e| VaultError::damaged(pack_name(r.kind, &r.pack), e))?;
        Ok(key.chunk_id(plaintext) == *id)
    }

    /// Decodes a blob whose sealed bytes the caller read from its pack.
    ///
    /// # Errors
    /// `Damaged` naming the pack and chunk.
    pub fn decode_blob_at(&self, r: &BlobRef, id: &ChunkId, sealed: &[u8]) -> Result<Vec<u8>> {
        let key =
            self.key.blob_key(r.sealed_by.as_ref()).map_err(|e| VaultError::damaged(pack_name(r.kind, &r.pack), e))?;
        decode_blob(&key, sealed, r.raw_len as usize, id)
            .map_err(|e| VaultError::damaged(pack_name(r.kind, &r.pack), format!("chunk {id}: {e}")))
    }

    /// [`Vault::decode_blob_at`] without copies (see
    /// [`crate::blob::decode_blob_in_place`]): `sealed` is overwritten.
    ///
    /// # Errors
    /// `Damaged` naming the pack and chunk.
    pub fn decode_blob_in_place<'a>(
        &self,
        r: &BlobRef,
        id: &ChunkId,
        sealed: &'a mut [u8],
        out: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        let key =
            self.key.blob_key(r.sealed_by.as_ref()).map_err(|e| VaultError::damaged(pack_name(r.kind, &r.pack), e))?;
        crate::blob::decode_blob_in_place(&key, sealed, r.raw_len as usize, id, out)
            .map_err(|e| VaultError::damaged(pack_name(r.kind, &r.pack), format!("chunk {id}: {e}")))
    }

    /// Reads and decodes one tree.
    ///
    /// # Errors
    /// As [`Vault::read_blob`], or `Damaged` when the tree does not parse.
    pub fn load_tree(&self, index: &ChunkIndex, id: &ChunkId) -> Result<Tree> {
        let r = index.get(id).ok_or(VaultError::MissingChunk { chunk: *id })?;
        if r.kind != crate::BlobKind::Tree || !self.store.capabilities().remote {
            return Tree::decode(id, &self.read_blob(index, id)?);
        }
        let name = pack_name(r.kind, &r.pack);
        let pack = self.tree_pack(&r.pack, &name)?;
        let (start, end) = (r.offset as usize, r.offset as usize + r.length as usize);
        let sealed = pack.get(start..end).ok_or_else(|| VaultError::damaged(&name, "shorter than its index says"))?;
        Tree::decode(id, &self.decode_blob_at(&r, id, sealed)?)
    }

    /// A whole tree pack, read once and kept (up to [`TREE_PACKS_KEPT`]).
    pub(super) fn tree_pack(&self, id: &crate::PackId, name: &str) -> Result<Arc<Vec<u8>>> {
        if let Ok(kept) = self.tree_packs.lock()
            && let Some(pack) = kept.1.get(id)
        {
            return Ok(pack.clone());
        }
        let pack = Arc::new(self.store.get(name)?);
        if let Ok(mut kept) = self.tree_packs.lock() {
            if kept.0 + pack.len() > TREE_PACKS_KEPT {
                *kept = (0, HashMap::new());
            }
            kept.0 += pack.len();
            kept.1.insert(*id, pack.clone());
        }
        Ok(pack)
    }
}

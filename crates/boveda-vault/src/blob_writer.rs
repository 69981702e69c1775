//! Adds blobs to a vault from many threads at once.
//!
//! A blob already in the index, or already added in this session, is not
//! stored again. New blobs are sealed outside any lock, appended to the open
//! pack of their kind (data and trees never share a pack), and a full pack is
//! written, then its index object, outside the lock. [`BlobWriter::flush`]
//! writes the partial packs; only after it returns may a point manifest
//! refer to the blobs.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ChunkId;
use crate::blob::{BlobKind, encode_blob};
use crate::error::{Result, VaultError};
use crate::index::{ChunkIndex, IndexObject, IndexPack};
use crate::pack::{PackBuilder, pack_name};
use crate::vault::Vault;

/// Tree packs are flushed at this size: trees are small and read often.
const TREE_PACK_SIZE: usize = 4 << 20;
/// Room past the target size for the last blob (at most a maximal chunk) and the footer.
const PACK_SLACK: usize = 5 << 20;

/// What a writer added to the store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    pub chunks_new: u64,
    pub bytes_new: u64,
    pub bytes_stored: u64,
    pub packs_written: u64,
}

pub struct BlobWriter<'a> {
    vault: &'a Vault,
    index: &'a ChunkIndex,
    seen: Mutex<HashSet<ChunkId>>,
    data: Mutex<PackBuilder>,
    tree: Mutex<PackBuilder>,
    chunks_new: AtomicU64,
    bytes_new: AtomicU64,
    bytes_stored: AtomicU64,
    packs_written: AtomicU64,
}

fn poisoned() -> VaultError {
    VaultError::Invalid("a backup thread panicked".into())
}

impl<'a> BlobWriter<'a> {
    pub fn new(vault: &'a Vault, index: &'a ChunkIndex) -> Self {
        Self {
            vault,
            index,
            seen: Mutex::new(HashSet::new()),
            data: Mutex::new(PackBuilder::new(BlobKind::Data)),
            tree: Mutex::new(PackBuilder::new(BlobKind::Tree)),
            chunks_new: AtomicU64::new(0),
            bytes_new: AtomicU64::new(0),
            bytes_stored: AtomicU64::new(0),
            packs_written: AtomicU64::new(0),
        }
    }

    /// Whether the vault (or this session) already holds the blob.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.index.contains(id) || self.seen.lock().is_ok_and(|s| s.contains(id))
    }

    /// Adds a blob; returns its id. Stores nothing when it exists.
    ///
    /// # Errors
    /// A store error when a full pack cannot be written.
    pub fn add(&self, kind: BlobKind, plaintext: &[u8]) -> Result<ChunkId> {
        let id = self.vault.key().chunk_id(plaintext);
        if self.index.contains(&id) || !self.seen.lock().map_err(|_| poisoned())?.insert(id) {
            return Ok(id);
        }
        let sealed = encode_blob(self.vault.key(), plaintext, self.vault.settings().compression_level);
        self.chunks_new.fetch_add(1, Ordering::Relaxed);
        self.bytes_new.fetch_add(plaintext.len() as u64, Ordering::Relaxed);
        let (lock, limit) = match kind {
            BlobKind::Data => (&self.data, self.vault.settings().pack_size as usize),
            BlobKind::Tree => (&self.tree, TREE_PACK_SIZE),
        };
        let full = {
            let mut pack = lock.lock().map_err(|_| poisoned())?;
            if pack.is_empty() {
                pack.reserve(limit + PACK_SLACK);
            }
            pack.add(id, plaintext.len() as u32, &sealed);
            (pack.len() >= limit).then(|| std::mem::replace(&mut *pack, PackBuilder::new(kind)))
        };
        if let Some(pack) = full {
            self.write_pack(pack)?;
        }
        Ok(id)
    }

    fn write_pack(&self, pack: PackBuilder) -> Result<()> {
        if pack.is_empty() {
            return Ok(());
        }
        let finished = pack.finish(self.vault.key())?;
        let store = self.vault.store();
        store.put(&pack_name(finished.kind, &finished.id), &finished.bytes)?;
        let index = IndexObject {
            packs: vec![IndexPack {
                id: finished.id,
                kind: finished.kind,
                size: finished.bytes.len() as u64,
                entries: finished.entries,
            }],
        };
        let (name, bytes) = index.seal(self.vault.key())?;
        store.put(&name, &bytes)?;
        self.bytes_stored.fetch_add((finished.bytes.len() + bytes.len()) as u64, Ordering::Relaxed);
        self.packs_written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the partial packs; afterwards every added blob is durable.
    ///
    /// # Errors
    /// A store error.
    pub fn flush(&self) -> Result<()> {
        for (lock, kind) in [(&self.data, BlobKind::Data), (&self.tree, BlobKind::Tree)] {
            let pack = std::mem::replace(&mut *lock.lock().map_err(|_| poisoned())?, PackBuilder::new(kind));
            self.write_pack(pack)?;
        }
        Ok(())
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            chunks_new: self.chunks_new.load(Ordering::Relaxed),
            bytes_new: self.bytes_new.load(Ordering::Relaxed),
            bytes_stored: self.bytes_stored.load(Ordering::Relaxed),
            packs_written: self.packs_written.load(Ordering::Relaxed),
        }
    }
}

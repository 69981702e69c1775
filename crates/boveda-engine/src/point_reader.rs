//! Reading a file of a recovery point at any offset, decrypting only the
//! chunks a read covers (the last few are cached) and reading holes as
//! zeros: what `boveda mount` and the NBD export of a point's disks serve.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use boveda_vault::{ChunkId, ChunkIndex, Node, Piece, Vault, VaultError};

use crate::error::Result;

/// How many decrypted chunks a reader keeps.
const CACHED_CHUNKS: usize = 8;

/// The last chunks read, shared by every reader of one mount or export.
#[derive(Default)]
pub struct ChunkCache {
    chunks: Mutex<Vec<(ChunkId, Arc<Vec<u8>>)>>,
    /// Bytes of sealed chunks read from the store so far.
    fetched: AtomicU64,
}

impl ChunkCache {
    /// The chunk `id`, from the cache or decrypted from the vault.
    ///
    /// # Errors
    /// The vault's errors (a missing or damaged pack).
    pub fn get(&self, vault: &Vault, index: &ChunkIndex, id: &ChunkId) -> Result<Arc<Vec<u8>>> {
        if let Ok(cache) = self.chunks.lock()
            && let Some((_, data)) = cache.iter().find(|(c, _)| c == id)
        {
            return Ok(data.clone());
        }
        let data = Arc::new(vault.read_blob(index, id)?);
        if let Some(r) = index.get(id) {
            self.fetched.fetch_add(u64::from(r.length), Ordering::Relaxed);
        }
        if let Ok(mut cache) = self.chunks.lock() {
            if cache.len() >= CACHED_CHUNKS {
                cache.remove(0);
            }
            cache.push((*id, data.clone()));
        }
        Ok(data)
    }

    /// Bytes of sealed chunks this cache read from the store.
    pub fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }
}

/// The pieces of one file of a point, with the offset each starts at.
#[derive(Debug, Clone)]
pub struct PointFile {
    pieces: Vec<Piece>,
    offsets: Vec<u64>,
    size: u64,
}

impl PointFile {
    /// The content of a file node.
    pub fn new(node: &Node) -> Self {
        let mut at = 0;
        let offsets = node
            .content
            .iter()
            .map(|p| {
                let start = at;
                at += p.len();
                start
            })
            .collect();
        Self { pieces: node.content.clone(), offsets, size: node.size }
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Up to `len` bytes from `offset` (fewer at the end of the file).
    ///
    /// # Errors
    /// The vault's errors reading a chunk.
    pub fn read_at(
        &self,
        vault: &Vault,
        index: &ChunkIndex,
        cache: &ChunkCache,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let end = self.size.min(offset.saturating_add(len));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut pos = offset;
        let mut i = self.offsets.partition_point(|&o| o <= offset).saturating_sub(1);
        while pos < end && i < self.pieces.len() {
            let (start, piece) = (self.offsets[i], self.pieces[i]);
            let stop = (start + piece.len()).min(end);
            if stop > pos {
                match piece {
                    Piece::Hole { .. } => out.resize(out.len() + (stop - pos) as usize, 0),
                    Piece::Data { id, .. } => {
                        let data = cache.get(vault, index, &id)?;
                        let part = data.get((pos - start) as usize..(stop - start) as usize).ok_or_else(|| {
                            VaultError::Damaged {
                                object: format!("chunk {id}"),
                                reason: format!("{} bytes where the tree says {}", data.len(), piece.len()),
                            }
                        })?;
                        out.extend_from_slice(part);
                    }
                }
                pos = stop;
            }
            i += 1;
        }
        Ok(out)
    }
}

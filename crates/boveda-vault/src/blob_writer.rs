//! Adds blobs to a vault from many threads at once.
//!
//! A blob already in the index, or already added in this session, is not
//! stored again. New blobs are sealed outside any lock and appended to the
//! open pack of their kind (data and trees never share a pack). A full pack
//! is handed through a rendezvous channel to one of the upload threads (as
//! many as the vault's parallel requests), which writes the pack and then
//! its index object: the compute threads wait on the store only while every
//! upload thread is busy, which also bounds memory to one pack per upload
//! thread plus the packs being filled. [`BlobWriter::flush`] writes the partial packs and waits for the
//! uploads; only after it returns may a point manifest refer to the blobs.
//!
//! A writer seals with the vault's keys, or as a registered host's backup
//! session ([`WriterKeys`]): then chunks are named with the host's chunk
//! key, and packs and index objects are sealed for the vault, which only
//! the master key opens (`crate::host_keys`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use boveda_store::Store;

use crate::ChunkId;
use crate::blob::{BlobKind, encode_blob};
use crate::crypto::{MasterKey, Sealer};
use crate::error::{Result, VaultError};
use crate::host_keys::{HostKeys, HostSession};
use crate::index::{ChunkIndex, IndexObject, IndexPack};
use crate::object::Envelope;
use crate::pack::{FinishedPack, PackBuilder, pack_name};
use crate::vault::Vault;

/// Whose keys a writer seals with.
#[derive(Clone)]
pub enum WriterKeys {
    /// The vault's: everything under the master key.
    Vault(MasterKey),
    /// A registered host's backup session: chunks named with the host's
    /// chunk key, everything sealed for the vault.
    Host { keys: HostKeys, session: HostSession },
}

impl WriterKeys {
    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        match self {
            WriterKeys::Vault(key) => key.chunk_id(plaintext),
            WriterKeys::Host { keys, .. } => keys.chunk_id(plaintext),
        }
    }

    fn sealer(&self) -> &Sealer {
        match self {
            WriterKeys::Vault(key) => key.sealer(),
            WriterKeys::Host { session, .. } => session.sealer(),
        }
    }

    fn envelope(&self) -> Envelope {
        match self {
            WriterKeys::Vault(_) => Envelope::MASTER,
            WriterKeys::Host { session, .. } => Envelope::host(session.sealed_by()),
        }
    }

    fn seal_index(&self, index: &IndexObject) -> Result<(String, Vec<u8>)> {
        match self {
            WriterKeys::Vault(key) => index.seal(key),
            WriterKeys::Host { session, .. } => index.seal_for_vault(session),
        }
    }
}

/// The chunks a writer need not store again.
pub trait KnownChunks: Sync {
    fn contains(&self, id: &ChunkId) -> bool;
}

impl KnownChunks for ChunkIndex {
    fn contains(&self, id: &ChunkId) -> bool {
        ChunkIndex::contains(self, id)
    }
}

impl KnownChunks for HashSet<ChunkId> {
    fn contains(&self, id: &ChunkId) -> bool {
        HashSet::contains(self, id)
    }
}

/// Told of every tree blob a writer adds (a host keeps its own trees, to
/// read its parent's from, since it cannot read the vault).
pub type TreeSink = Box<dyn Fn(&ChunkId, &[u8]) + Send + Sync>;

/// Where a writer stores, and how it fills packs.
#[derive(Clone)]
pub struct WriterTarget {
    pub store: Arc<dyn Store>,
    /// zstd level; 0 stores chunks uncompressed.
    pub compression_level: i32,
    /// Target size of a data pack in bytes.
    pub pack_size: usize,
    /// Packs uploaded at once.
    pub parallel: usize,
}

/// Tree packs are flushed at this size: trees are small and read often.
const TREE_PACK_SIZE: usize = 4 << 20;
/// Room past the target size for the last blob (at most a maximal chunk) and the footer.
const PACK_SLACK: usize = 5 << 20;

/// What a writer added to the store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    pub chunks_new: u64,
    pub bytes_new: u64,
    /// Of `bytes_new`, data that did not compress (see [`incompressible`]).
    pub bytes_new_incompressible: u64,
    pub bytes_stored: u64,
    pub packs_written: u64,
}

/// Whether a chunk of `plain` bytes sealed into `sealed` bytes did not
/// compress: stored at 97% or more of its size (encrypted or already
/// compressed data; what a point's suspicion looks at).
pub fn incompressible(plain: usize, sealed: usize) -> bool {
    let payload = sealed.saturating_sub(crate::blob::BLOB_OVERHEAD);
    plain > 0 && payload * 100 >= plain * 97
}

/// Pack buffers kept for reuse once uploaded: allocating a fresh 16 MiB
/// buffer per pack cost a page fault for every 4 KiB of it.
const RECYCLED_BUFFERS: usize = 2;

#[derive(Default)]
struct UploadState {
    bytes_stored: AtomicU64,
    packs_written: AtomicU64,
    error: Mutex<Option<VaultError>>,
    /// What the first failed upload said, for every caller after the one
    /// that took the error itself.
    failure: Mutex<Option<String>>,
    buffers: Mutex<Vec<Vec<u8>>>,
}

struct Uploader {
    sender: Option<crossbeam_channel::Sender<FinishedPack>>,
    threads: Vec<JoinHandle<()>>,
}

pub struct BlobWriter<'a> {
    keys: WriterKeys,
    target: WriterTarget,
    index: &'a dyn KnownChunks,
    tree_sink: Option<TreeSink>,
    seen: Mutex<HashSet<ChunkId>>,
    data: Mutex<PackBuilder>,
    tree: Mutex<PackBuilder>,
    chunks_new: AtomicU64,
    bytes_new: AtomicU64,
    bytes_new_incompressible: AtomicU64,
    uploads: Arc<UploadState>,
    uploader: Mutex<Uploader>,
}

fn poisoned() -> VaultError {
    VaultError::Invalid("a backup thread panicked".into())
}

fn upload(store: &dyn Store, keys: &WriterKeys, pack: FinishedPack, state: &UploadState) -> Result<()> {
    store.put_new(&pack_name(pack.kind, &pack.id), &pack.bytes)?;
    let index = IndexObject {
        packs: vec![IndexPack {
            id: pack.id,
            kind: pack.kind,
            size: pack.bytes.len() as u64,
            entries: pack.entries,
            sealed_by: pack.sealed_by,
        }],
    };
    let (name, bytes) = keys.seal_index(&index)?;
    store.put_new(&name, &bytes)?;
    state.bytes_stored.fetch_add((pack.bytes.len() + bytes.len()) as u64, Ordering::Relaxed);
    state.packs_written.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut pool) = state.buffers.lock()
        && pool.len() < RECYCLED_BUFFERS
    {
        pool.push(pack.bytes);
    }
    Ok(())
}

impl<'a> BlobWriter<'a> {
    /// A writer with the vault's keys, into its store, deduplicating
    /// against `index`.
    pub fn new(vault: &'a Vault, index: &'a ChunkIndex) -> Self {
        Self::with_keys(WriterKeys::Vault(vault.key().clone()), vault.writer_target(), index)
    }

    /// A writer of a registered host's backup session (see
    /// `crate::host_keys`), deduplicating against `index` (the host's own
    /// chunks, which it cannot read back).
    pub fn for_host(keys: HostKeys, session: HostSession, target: WriterTarget, index: &'a dyn KnownChunks) -> Self {
        Self::with_keys(WriterKeys::Host { keys, session }, target, index)
    }

    /// Calls `sink` with every new tree blob added from now on.
    #[must_use]
    pub fn with_tree_sink(mut self, sink: TreeSink) -> Self {
        self.tree_sink = Some(sink);
        self
    }

    fn with_keys(keys: WriterKeys, target: WriterTarget, index: &'a dyn KnownChunks) -> Self {
        let uploads = Arc::new(UploadState::default());
        // a rendezvous: a full pack waits until an upload thread is free
        let (sender, receiver) = crossbeam_channel::bounded::<FinishedPack>(0);
        let mut threads = Vec::new();
        for n in 0..target.parallel.max(1) {
            let (store, key, state, receiver) = (target.store.clone(), keys.clone(), uploads.clone(), receiver.clone());
            let spawned = std::thread::Builder::new().name(format!("pack-upload-{n}")).spawn(move || {
                // On the first error every thread stops; senders then see a closed channel.
                for pack in receiver {
                    if state.error.lock().map_or(true, |e| e.is_some()) {
                        return;
                    }
                    if let Err(e) = upload(store.as_ref(), &key, pack, &state) {
                        if let Ok(mut said) = state.failure.lock() {
                            said.get_or_insert_with(|| e.to_string());
                        }
                        if let Ok(mut slot) = state.error.lock() {
                            slot.get_or_insert(e);
                        }
                        return;
                    }
                }
            });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    if let Ok(mut slot) = uploads.error.lock() {
                        *slot = Some(VaultError::Invalid(format!("cannot start an upload thread: {e}")));
                    }
                    break;
                }
            }
        }
        let sender = (!threads.is_empty()).then_some(sender);
        let envelope = keys.envelope();
        Self {
            keys,
            target,
            index,
            tree_sink: None,
            seen: Mutex::new(HashSet::new()),
            data: Mutex::new(PackBuilder::with_buffer(BlobKind::Data, envelope, Vec::new())),
            tree: Mutex::new(PackBuilder::with_buffer(BlobKind::Tree, envelope, Vec::new())),
            chunks_new: AtomicU64::new(0),
            bytes_new: AtomicU64::new(0),
            bytes_new_incompressible: AtomicU64::new(0),
            uploads,
            uploader: Mutex::new(Uploader { sender, threads }),
        }
    }

    /// Whether the vault (or this session) already holds the blob.
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.index.contains(id) || self.seen.lock().is_ok_and(|s| s.contains(id))
    }

    /// Adds a blob; returns its id. Stores nothing when it exists.
    ///
    /// # Errors
    /// A store error from an earlier pack upload (such as a full disk).
    pub fn add(&self, kind: BlobKind, plaintext: &[u8]) -> Result<ChunkId> {
        let id = self.keys.chunk_id(plaintext);
        if self.index.contains(&id) || !self.seen.lock().map_err(|_| poisoned())?.insert(id) {
            return Ok(id);
        }
        if kind == BlobKind::Tree
            && let Some(sink) = &self.tree_sink
        {
            sink(&id, plaintext);
        }
        let sealed = encode_blob(self.keys.sealer(), plaintext, self.target.compression_level);
        self.chunks_new.fetch_add(1, Ordering::Relaxed);
        self.bytes_new.fetch_add(plaintext.len() as u64, Ordering::Relaxed);
        if kind == BlobKind::Data && incompressible(plaintext.len(), sealed.len()) {
            self.bytes_new_incompressible.fetch_add(plaintext.len() as u64, Ordering::Relaxed);
        }
        let (lock, limit) = match kind {
            BlobKind::Data => (&self.data, self.target.pack_size),
            BlobKind::Tree => (&self.tree, TREE_PACK_SIZE),
        };
        let full = {
            let mut pack = lock.lock().map_err(|_| poisoned())?;
            if pack.is_empty() {
                let recycled = self.uploads.buffers.lock().ok().and_then(|mut b| b.pop());
                if let Some(buf) = recycled {
                    *pack = PackBuilder::with_buffer(kind, self.keys.envelope(), buf);
                }
                pack.reserve(limit + PACK_SLACK);
            }
            pack.add(id, plaintext.len() as u32, &sealed);
            (pack.len() >= limit).then(|| std::mem::replace(&mut *pack, self.new_pack(kind)))
        };
        if let Some(pack) = full {
            self.send(pack)?;
        }
        Ok(id)
    }

    fn new_pack(&self, kind: BlobKind) -> PackBuilder {
        PackBuilder::with_buffer(kind, self.keys.envelope(), Vec::new())
    }

    /// Every chunk this writer stored (once [`BlobWriter::flush`] returned,
    /// all durable).
    pub fn added(&self) -> Vec<ChunkId> {
        self.seen.lock().map(|s| s.iter().copied().collect()).unwrap_or_default()
    }

    /// The keys this writer names and seals chunks with.
    pub fn keys(&self) -> &WriterKeys {
        &self.keys
    }

    fn upload_error(&self) -> VaultError {
        self.uploads.error.lock().ok().and_then(|mut e| e.take()).unwrap_or_else(|| {
            match self.uploads.failure.lock().ok().and_then(|f| f.clone()) {
                Some(said) => VaultError::Invalid(format!("an upload failed: {said}")),
                None => VaultError::Invalid("the upload thread stopped".into()),
            }
        })
    }

    fn send(&self, pack: PackBuilder) -> Result<()> {
        if pack.is_empty() {
            return Ok(());
        }
        let finished = pack.finish(self.keys.sealer())?;
        let sender = self.uploader.lock().map_err(|_| poisoned())?.sender.clone();
        match sender {
            Some(s) if s.send(finished).is_ok() => Ok(()),
            _ => Err(self.upload_error()),
        }
    }

    /// Writes the partial packs and waits for every upload; afterwards every
    /// added blob is durable. The writer accepts no blobs after this.
    ///
    /// # Errors
    /// The first store error of any upload.
    pub fn flush(&self) -> Result<()> {
        for (lock, kind) in [(&self.data, BlobKind::Data), (&self.tree, BlobKind::Tree)] {
            let pack = std::mem::replace(&mut *lock.lock().map_err(|_| poisoned())?, self.new_pack(kind));
            self.send(pack)?;
        }
        let threads = {
            let mut up = self.uploader.lock().map_err(|_| poisoned())?;
            up.sender = None; // closing the channel ends the threads once it is drained
            std::mem::take(&mut up.threads)
        };
        for t in threads {
            if t.join().is_err() {
                return Err(poisoned());
            }
        }
        match self.uploads.error.lock().ok().and_then(|mut e| e.take()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn stats(&self) -> WriterStats {
        WriterStats {
            chunks_new: self.chunks_new.load(Ordering::Relaxed),
            bytes_new: self.bytes_new.load(Ordering::Relaxed),
            bytes_new_incompressible: self.bytes_new_incompressible.load(Ordering::Relaxed),
            bytes_stored: self.uploads.bytes_stored.load(Ordering::Relaxed),
            packs_written: self.uploads.packs_written.load(Ordering::Relaxed),
        }
    }
}

impl Drop for BlobWriter<'_> {
    /// A writer dropped without `flush` (a failed or cancelled backup) still
    /// waits for the packs already queued, so none is left half-written.
    fn drop(&mut self) {
        if let Ok(mut up) = self.uploader.lock() {
            up.sender = None;
            for t in std::mem::take(&mut up.threads) {
                let _ = t.join();
            }
        }
    }
}

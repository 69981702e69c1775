//! Backing up file trees.
//!
//! The walk is a recursion over directories run on a rayon pool: the entries
//! of a directory, and the chunks of a large file, are processed in
//! parallel, so reading, chunking, hashing, compressing, sealing and writing
//! overlap on every core. Memory stays bounded: each task holds one
//! directory listing or one batch of chunks, and the blob writer holds at
//! most one open pack per kind plus the ones being written.
//!
//! A file whose size, times, inode and mode match the parent point's node is
//! not read: its content list is reused (after checking that every chunk is
//! still indexed). An unchanged directory then encodes to the same tree id,
//! which is already stored.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use boveda_vault::{
    BlobKind, BlobWriter, ChunkId, ChunkIndex, Chunker, Node, NodeKind, Piece, PointStats, Tree, Vault, VaultError,
};
use rayon::prelude::*;

use crate::error::{EngineError, Result};
use crate::exclude::Excludes;
use crate::metadata::{node_from_meta, read_xattrs, unchanged};
use crate::progress::BackupProgress;

/// Chunks of one file sealed in parallel at once.
const CHUNK_BATCH: usize = 4;

/// What to back up.
pub struct FileBackupOptions<'a> {
    /// Absolute source paths.
    pub paths: Vec<PathBuf>,
    pub excludes: Vec<String>,
    /// The root tree of the parent point, to skip unchanged files.
    pub parent_tree: Option<ChunkId>,
    /// Set to stop the backup early (a cancelled job).
    pub cancel: Option<&'a AtomicBool>,
}

/// The result of a file backup, before it becomes a point.
pub struct FileBackupOutcome {
    pub tree: ChunkId,
    pub stats: PointStats,
    pub warnings: Vec<String>,
}

/// What a tree of the parent point is read from: the vault, or (for a
/// registered host, which cannot read the vault) the host's own cache.
pub trait ParentTrees: Sync {
    /// # Errors
    /// The tree cannot be read, or is not the tree `id` names.
    fn load_tree(&self, id: &ChunkId) -> std::result::Result<Tree, VaultError>;
}

/// The parent's trees read from the vault, through an index.
pub struct VaultTrees<'a> {
    pub vault: &'a Vault,
    pub index: &'a ChunkIndex,
}

impl ParentTrees for VaultTrees<'_> {
    fn load_tree(&self, id: &ChunkId) -> std::result::Result<Tree, VaultError> {
        self.vault.load_tree(self.index, id)
    }
}

/// Where a file backup writes its blobs, how it cuts files, and where it
/// reads its parent's trees.
pub struct BackupDest<'a> {
    pub writer: BlobWriter<'a>,
    /// Makes a chunker (one per thread).
    pub chunker: &'a (dyn Fn() -> Chunker + Sync),
    pub parents: &'a dyn ParentTrees,
}

struct Ctx<'a> {
    writer: BlobWriter<'a>,
    new_chunker: &'a (dyn Fn() -> Chunker + Sync),
    parents: &'a dyn ParentTrees,
    excludes: Excludes,
    progress: &'a dyn BackupProgress,
    cancel: Option<&'a AtomicBool>,
    chunkers: Mutex<Vec<Chunker>>,
    warnings: Mutex<Vec<String>>,
    files: AtomicU64,
    dirs: AtomicU64,
    other: AtomicU64,
    bytes: AtomicU64,
    bytes_read: AtomicU64,
    unchanged: AtomicU64,
    /// Files new at their path, read again, gone from a folder (against
    /// the parent point; what a point's suspicion compares).
    added: AtomicU64,
    changed: AtomicU64,
    removed: AtomicU64,
}

#[derive(Default)]
struct Trie {
    selected: bool,
    children: BTreeMap<Vec<u8>, Trie>,
}

fn build_trie(paths: &[PathBuf]) -> Result<Trie> {
    let mut root = Trie::default();
    for p in paths {
        if !p.is_absolute() {
            return Err(EngineError::SourceNotAbsolute(p.clone()));
        }
        let link = match fs::symlink_metadata(p) {
            Ok(m) => m.file_type().is_symlink(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(EngineError::SourceMissing(p.clone())),
            Err(e) => return Err(EngineError::io(p, e)),
        };
        // A symlink named as a source is followed, as tar -h and restic do:
        // the user named what it points to. One that leads nowhere is
        // refused here rather than stored as an empty point.
        if link && let Err(e) = fs::metadata(p) {
            let reason = match e.raw_os_error() {
                Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => "it is a symlink loop".to_string(),
                _ if e.kind() == io::ErrorKind::NotFound => "its target does not exist".to_string(),
                _ => e.to_string(),
            };
            return Err(EngineError::SourceLink { path: p.clone(), reason });
        }
        let mut node = &mut root;
        for c in p.components() {
            match c {
                Component::RootDir => {}
                Component::Normal(name) => node = node.children.entry(name.as_bytes().to_vec()).or_default(),
                _ => return Err(EngineError::SourceNotAbsolute(p.clone())),
            }
        }
        node.selected = true;
    }
    if root.selected {
        // "/" itself was selected
        return Ok(Trie { selected: true, children: BTreeMap::new() });
    }
    Ok(root)
}

/// Whether a symlink is followed: only for the source paths themselves.
#[derive(Clone, Copy)]
enum Follow {
    Yes,
    No,
}

/// Backs up `opts.paths` into the vault and returns the root tree.
///
/// # Errors
/// A missing source path, an invalid exclude, a store failure (such as a
/// full disk), or cancellation. Unreadable or vanished files are warnings.
pub fn backup_files(
    vault: &Vault,
    index: &ChunkIndex,
    opts: &FileBackupOptions<'_>,
    progress: &dyn BackupProgress,
) -> Result<FileBackupOutcome> {
    let parents = VaultTrees { vault, index };
    let dest = BackupDest { writer: BlobWriter::new(vault, index), chunker: &|| vault.chunker(), parents: &parents };
    backup_files_to(dest, opts, progress)
}

/// [`backup_files`] into any destination: the vault's own writer, or a
/// registered host's (see `boveda_vault::host_keys`).
///
/// # Errors
/// As [`backup_files`].
pub fn backup_files_to(
    dest: BackupDest<'_>,
    opts: &FileBackupOptions<'_>,
    progress: &dyn BackupProgress,
) -> Result<FileBackupOutcome> {
    let trie = build_trie(&opts.paths)?;
    let ctx = Ctx {
        writer: dest.writer,
        new_chunker: dest.chunker,
        parents: dest.parents,
        excludes: Excludes::new(&opts.excludes)?,
        progress,
        cancel: opts.cancel,
        chunkers: Mutex::new(Vec::new()),
        warnings: Mutex::new(Vec::new()),
        files: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        other: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
        unchanged: AtomicU64::new(0),
        added: AtomicU64::new(0),
        changed: AtomicU64::new(0),
        removed: AtomicU64::new(0),
    };
    let tree = crate::workers::in_own_pool("backup", || {
        let parent = opts.parent_tree.and_then(|id| ctx.load_parent(&id));
        let tree = if trie.selected {
            ctx.backup_dir(Path::new("/"), parent)?
        } else {
            ctx.trie_dir(Path::new("/"), &trie, parent)?
        };
        ctx.writer.flush()?;
        Ok::<_, EngineError>(tree)
    })?;
    let w = ctx.writer.stats();
    let stats = PointStats {
        files: ctx.files.into_inner(),
        dirs: ctx.dirs.into_inner(),
        other_nodes: ctx.other.into_inner(),
        bytes: ctx.bytes.into_inner(),
        bytes_read: ctx.bytes_read.into_inner(),
        files_unchanged: ctx.unchanged.into_inner(),
        bytes_new: w.bytes_new,
        bytes_stored: w.bytes_stored,
        chunks_new: w.chunks_new,
        packs_written: w.packs_written,
        bytes_new_incompressible: w.bytes_new_incompressible,
        files_added: ctx.added.into_inner(),
        files_changed: ctx.changed.into_inner(),
        files_removed: ctx.removed.into_inner(),
    };
    let warnings = ctx.warnings.into_inner().unwrap_or_default();
    Ok(FileBackupOutcome { tree, stats, warnings })
}

/// Why reading one file stopped.
enum ReadFail {
    Io(io::Error),
    Vault(VaultError),
}

impl From<io::Error> for ReadFail {
    fn from(e: io::Error) -> Self {
        ReadFail::Io(e)
    }
}

impl Ctx<'_> {
    fn warn(&self, message: String) {
        self.progress.warning(&message);
        if let Ok(mut w) = self.warnings.lock() {
            w.push(message);
        }
    }

    fn check_cancel(&self) -> Result<()> {
        match self.cancel {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(EngineError::Cancelled),
            _ => Ok(()),
        }
    }

    fn load_parent(&self, id: &ChunkId) -> Option<Tree> {
        match self.parents.load_tree(id) {
            Ok(t) => Some(t),
            Err(e) => {
                self.warn(format!("parent tree unreadable, files below it are read again: {e}"));
                None
            }
        }
    }

    fn store_tree(&self, nodes: Vec<Node>) -> Result<ChunkId> {
        let tree = Tree::new(nodes);
        Ok(self.writer.add(BlobKind::Tree, &tree.encode()?)?)
    }

    /// A directory on the way to the selected paths: only its selected
    /// descendants are included.
    fn trie_dir(&self, path: &Path, trie: &Trie, parent: Option<Tree>) -> Result<ChunkId> {
        let nodes: Vec<Option<Node>> = trie
            .children
            .par_iter()
            .map(|(name, child)| {
                let p = path.join(std::ffi::OsStr::from_bytes(name));
                let old = parent.as_ref().and_then(|t| t.find(name));
                if child.selected {
                    return self.backup_entry(&p, name, old, Follow::Yes);
                }
                let meta = fs::symlink_metadata(&p).map_err(|e| EngineError::io(&p, e))?;
                let mut node = node_from_meta(name.clone(), &meta);
                node.kind = NodeKind::Dir;
                let sub_parent = old.and_then(|o| o.subtree).and_then(|id| self.load_parent(&id));
                node.subtree = Some(self.trie_dir(&p, child, sub_parent)?);
                Ok(Some(node))
            })
            .collect::<Result<_>>()?;
        self.store_tree(nodes.into_iter().flatten().collect())
    }

    fn backup_dir(&self, path: &Path, parent: Option<Tree>) -> Result<ChunkId> {
        let mut names: Vec<OsString> = match fs::read_dir(path) {
            Ok(rd) => rd
                .filter_map(|e| match e {
                    Ok(e) => Some(e.file_name()),
                    Err(err) => {
                        self.warn(format!("{}: cannot list an entry: {err}", path.display()));
                        None
                    }
                })
                .collect(),
            Err(e) => {
                self.warn(format!("{}: cannot list directory: {e}", path.display()));
                Vec::new()
            }
        };
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        if let Some(parent) = &parent {
            let gone = parent
                .nodes
                .iter()
                .filter(|n| n.kind == NodeKind::File)
                .filter(|n| names.binary_search_by(|x| x.as_bytes().cmp(&n.name)).is_err())
                .count();
            self.removed.fetch_add(gone as u64, Ordering::Relaxed);
        }
        let nodes: Vec<Option<Node>> = names
            .into_par_iter()
            .map(|name| {
                let old = parent.as_ref().and_then(|t| t.find(name.as_bytes()));
                self.backup_entry(&path.join(&name), &name.into_vec(), old, Follow::No)
            })
            .collect::<Result<_>>()?;
        self.store_tree(nodes.into_iter().flatten().collect())
    }

    fn backup_entry(&self, path: &Path, name: &[u8], old: Option<&Node>, follow: Follow) -> Result<Option<Node>> {
        self.check_cancel()?;
        if self.excludes.is_excluded(path, name) {
            return Ok(None);
        }
        let meta = match follow {
            Follow::Yes => fs::metadata(path),
            Follow::No => fs::symlink_metadata(path),
        };
        let meta = match meta {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!("{}: vanished before it could be read", path.display()));
                return Ok(None);
            }
            Err(e) => {
                self.warn(format!("{}: cannot read metadata: {e}", path.display()));
                return Ok(None);
            }
        };
        let mut node = node_from_meta(name.to_vec(), &meta);
        match read_xattrs(path) {
            Ok(x) => node.xattrs = x,
            Err(e) => self.warn(format!("{}: cannot read extended attributes: {e}", path.display())),
        }
        match node.kind {
            NodeKind::Dir => {
                self.dirs.fetch_add(1, Ordering::Relaxed);
                let sub_parent = old
                    .filter(|o| o.kind == NodeKind::Dir)
                    .and_then(|o| o.subtree)
                    .and_then(|id| self.load_parent(&id));
                node.subtree = Some(self.backup_dir(path, sub_parent)?);
            }
            NodeKind::File => {
                let reusable = old.filter(|o| unchanged(o, &node)).filter(|o| {
                    o.content.iter().all(|p| match p {
                        Piece::Data { id, .. } => self.writer.contains(id),
                        Piece::Hole { .. } => true,
                    })
                });
                if let Some(o) = reusable {
                    node.content = o.content.clone();
                    self.unchanged.fetch_add(1, Ordering::Relaxed);
                    self.progress.file_done(path, node.size, true);
                } else {
                    let was_file = old.is_some_and(|o| o.kind == NodeKind::File);
                    let counter = if was_file { &self.changed } else { &self.added };
                    counter.fetch_add(1, Ordering::Relaxed);
                    match self.read_file(path, &mut node) {
                        Ok(()) => self.progress.file_done(path, node.size, false),
                        Err(ReadFail::Io(e)) => {
                            let what = if e.kind() == io::ErrorKind::NotFound {
                                "vanished before it could be read".to_string()
                            } else {
                                format!("cannot read: {e}")
                            };
                            self.warn(format!("{}: {what}", path.display()));
                            return Ok(None);
                        }
                        Err(ReadFail::Vault(e)) => return Err(e.into()),
                    }
                }
                self.files.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(node.size, Ordering::Relaxed);
            }
            NodeKind::Symlink => match fs::read_link(path) {
                Ok(t) => {
                    node.link_target = t.into_os_string().into_vec();
                    self.other.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.warn(format!("{}: cannot read symlink: {e}", path.display()));
                    return Ok(None);
                }
            },
            _ => {
                self.other.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(Some(node))
    }

    fn take_chunker(&self) -> Chunker {
        self.chunkers.lock().ok().and_then(|mut c| c.pop()).unwrap_or_else(|| (self.new_chunker)())
    }

    fn give_chunker(&self, c: Chunker) {
        if let Ok(mut pool) = self.chunkers.lock() {
            pool.push(c);
        }
    }

    fn add_batch(&self, batch: &mut Vec<Vec<u8>>, pieces: &mut Vec<Piece>) -> Result<(), ReadFail> {
        let ids: Vec<ChunkId> = if batch.len() == 1 {
            vec![self.writer.add(BlobKind::Data, &batch[0]).map_err(ReadFail::Vault)?]
        } else {
            batch
                .par_iter()
                .map(|c| self.writer.add(BlobKind::Data, c))
                .collect::<Result<_, VaultError>>()
                .map_err(ReadFail::Vault)?
        };
        for (id, c) in ids.into_iter().zip(batch.drain(..)) {
            pieces.push(Piece::Data { id, len: c.len() as u32 });
        }
        Ok(())
    }

    fn read_file(&self, path: &Path, node: &mut Node) -> Result<(), ReadFail> {
        self.progress.file_started(path);
        let file = open_for_backup(path)?;
        let before = file.metadata()?;
        if !before.is_file() {
            return Err(io::Error::other("was replaced by something that is not a file").into());
        }
        let extents = data_extents(&file, &before);
        let mut chunker = self.take_chunker();
        let mut pieces = Vec::new();
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut pos = 0u64;
        let mut result = Ok(());
        for (start, len) in extents {
            if start > pos {
                pieces.push(Piece::Hole { len: start - pos });
            }
            let mut reader = &file;
            if let Err(e) = reader.seek(SeekFrom::Start(start)) {
                result = Err(e.into());
                break;
            }
            let read = chunker.chunk(reader.take(len), |c: &[u8]| {
                self.bytes_read.fetch_add(c.len() as u64, Ordering::Relaxed);
                self.progress.bytes_read(c.len() as u64);
                batch.push(c.to_vec());
                if batch.len() >= CHUNK_BATCH {
                    self.add_batch(&mut batch, &mut pieces)?;
                }
                Ok::<(), ReadFail>(())
            });
            match read {
                Ok(n) => {
                    if !batch.is_empty()
                        && let Err(e) = self.add_batch(&mut batch, &mut pieces)
                    {
                        result = Err(e);
                        break;
                    }
                    pos = start + n;
                    if n < len {
                        break; // the file shrank while being read
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.give_chunker(chunker);
        result?;
        let after = file.metadata()?;
        if pos < before.len() && after.len() >= before.len() {
            pieces.push(Piece::Hole { len: before.len() - pos });
            pos = before.len();
        }
        if after.mtime() != before.mtime()
            || after.mtime_nsec() != before.mtime_nsec()
            || after.len() != before.len()
            || after.ctime_nsec() != before.ctime_nsec()
        {
            self.warn(format!("{}: changed while being read; the point holds the bytes as read", path.display()));
        }
        node.size = pos;
        node.content = pieces;
        Ok(())
    }
}

fn open_for_backup(path: &Path) -> io::Result<File> {
    let open = |flags| OpenOptions::new().read(true).custom_flags(flags).open(path);
    match open(libc_flags::O_NOFOLLOW | libc_flags::O_NOATIME) {
        // O_NOATIME is refused for files the caller does not own
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::PERM.raw_os_error()) => open(libc_flags::O_NOFOLLOW),
        other => other,
    }
}

mod libc_flags {
    pub const O_NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    pub const O_NOATIME: i32 = rustix::fs::OFlags::NOATIME.bits() as i32;
}

/// The (start, length) runs of a file that hold data. Files whose blocks
/// cover their size are one run; sparse ones are mapped with SEEK_DATA and
/// SEEK_HOLE so holes are never read.
fn data_extents(file: &File, meta: &fs::Metadata) -> Vec<(u64, u64)> {
    let len = meta.len();
    if len == 0 {
        return Vec::new();
    }
    if meta.blocks() * 512 >= len {
        return vec![(0, len)];
    }
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let data = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(e) if e == rustix::io::Errno::NXIO => break,
            Err(_) => return vec![(0, len)],
        };
        if data >= len {
            break;
        }
        let hole = rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(data)).unwrap_or(len).min(len);
        out.push((data, hole - data));
        pos = hole;
    }
    out
}

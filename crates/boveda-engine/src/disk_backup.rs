//! Backing up disk images: fixed-size chunks of guest space.
//!
//! The guest is cut at multiples of [`DISK_CHUNK`], so a change costs about
//! its own size and identical disks deduplicate. Only windows that hold
//! allocated data are read; windows that read as all zeros are stored as
//! holes (nothing). The point's root tree holds one file node, `disk`,
//! whose content is the guest image. An image file whose size, times and
//! inode match the parent point's is not read again; otherwise all its
//! allocated data is re-read and deduplicated. A disk of a running VM is
//! read from a live snapshot over NBD instead ([`DiskSource::Live`]); with
//! the dirty bitmap started at the parent point's snapshot, only the
//! windows it marks are read, and the others are the parent's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use boveda_vault::{BlobKind, BlobWriter, ChunkId, ChunkIndex, NodeKind, Piece, PointStats, Tree, Vault};

use crate::file_backup::{BackupDest, VaultTrees};
use rayon::prelude::*;

use crate::disk_image::{DiskImage, Extent};
use crate::error::{EngineError, Result};
use crate::file_backup::FileBackupOutcome;
use crate::metadata::node_from_meta;
use crate::nbd::{BASE_ALLOCATION, NbdClient, STATE_DIRTY, STATE_ZERO, dirty_bitmap_context};
use crate::progress::BackupProgress;

/// 256 KiB: the ~1% change of the benchmark (40 writes of 1 MiB at 4 KiB
/// aligned offsets) then costs 1.25 MiB a write, within the 1.5x growth
/// target; 1 MiB chunks would cost 2 MiB a write (docs/FORMAT.md).
pub const DISK_CHUNK: u64 = 256 << 10;

/// The name of the node holding the guest image in a disk point's tree.
pub const DISK_NODE: &str = "disk";

/// Where a disk's guest bytes come from.
#[derive(Debug, Clone)]
pub enum DiskSource {
    /// An image file or a block device, read as it lies.
    Image(PathBuf),
    /// An export of a running VM's snapshot (see [`crate::live`]).
    Live(LiveSource),
}

/// A disk of a live snapshot, exported over NBD.
#[derive(Debug, Clone)]
pub struct LiveSource {
    /// The NBD server's UNIX socket.
    pub socket: PathBuf,
    pub export: String,
    /// The dirty bitmap exported with the disk that holds every change
    /// since the parent point's snapshot: only what it marks is read.
    /// `None` reads all allocated data.
    pub changed_since_parent: Option<String>,
}

pub struct DiskBackupOptions<'a> {
    /// The disks, each under its node name in the point (`disk` for a disk
    /// item, the guest device such as `vda` for a VM).
    pub disks: Vec<(String, DiskSource)>,
    /// Small files kept beside the disks, such as a VM's definition.
    pub extra_files: Vec<(String, Vec<u8>)>,
    pub parent_tree: Option<ChunkId>,
    pub cancel: Option<&'a AtomicBool>,
}

/// A node name safe for a disk or extra file: a plain name.
pub fn is_safe_disk_name(name: &str) -> bool {
    boveda_vault::is_safe_name(name.as_bytes())
}

/// Guest windows that hold allocated data, in order.
fn data_windows(extents: &[Extent]) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for e in extents {
        let first = e.guest / DISK_CHUNK;
        let last = (e.guest + e.len).div_ceil(DISK_CHUNK);
        for w in first..last {
            if out.last() != Some(&w) {
                out.push(w);
            }
        }
    }
    out
}

/// Backs up disk images (and small extra files) into one root tree, taken
/// together: one point holds every disk of a VM.
///
/// # Errors
/// `Disk` for an unreadable or unsupported image (all are opened before any
/// is read); store errors; `Cancelled`.
pub fn backup_disk(
    vault: &Vault,
    index: &ChunkIndex,
    opts: &DiskBackupOptions<'_>,
    progress: &dyn BackupProgress,
) -> Result<FileBackupOutcome> {
    let parents = VaultTrees { vault, index };
    let dest = BackupDest { writer: BlobWriter::new(vault, index), chunker: &|| vault.chunker(), parents: &parents };
    backup_disk_to(dest, opts, progress)
}

/// [`backup_disk`] into any destination: the vault's own writer, or a
/// registered host's. A parent tree that cannot be read (a host's cache
/// lost it) is a warning: every disk is then read whole.
///
/// # Errors
/// As [`backup_disk`].
pub fn backup_disk_to(
    dest: BackupDest<'_>,
    opts: &DiskBackupOptions<'_>,
    progress: &dyn BackupProgress,
) -> Result<FileBackupOutcome> {
    // every disk is opened before any is read
    let sources: Vec<(String, Opened)> =
        opts.disks.iter().map(|(name, src)| Ok((name.clone(), Opened::open(src)?))).collect::<Result<_>>()?;
    progress.expected(sources.len() as u64, sources.iter().map(|(_, s)| s.data_bytes()).sum());
    let mut warnings = Vec::new();
    let parent = match opts.parent_tree.map(|id| dest.parents.load_tree(&id)) {
        Some(Ok(tree)) => Some(tree),
        Some(Err(e)) => {
            warnings.push(format!("parent tree unreadable, every disk is read whole: {e}"));
            None
        }
        None => None,
    };
    let writer = dest.writer;
    let bytes_read = AtomicU64::new(0);
    let mut nodes = Vec::new();
    let mut stats = PointStats::default();
    for (name, source) in &sources {
        let old = parent.as_ref().and_then(|t| t.find(name.as_bytes())).cloned();
        let all_kept = |p: &boveda_vault::Node| {
            p.content.iter().all(|piece| match piece {
                Piece::Data { id, .. } => writer.contains(id),
                Piece::Hole { .. } => true,
            })
        };
        let label = source.label();
        progress.file_started(&label);
        let before = bytes_read.load(Ordering::Relaxed);
        let mut node = match source {
            Opened::Image(image) => {
                let mut node = node_from_meta(name.as_bytes().to_vec(), &image.meta);
                let reusable =
                    old.filter(|p| image.unchanged_since(p.size, p.mtime_ns, p.ctime_ns, p.inode) && all_kept(p));
                node.content = match reusable {
                    Some(p) => {
                        stats.files_unchanged += 1;
                        p.content
                    }
                    None => {
                        let read = |at: u64, buf: &mut [u8]| image.read_window(at, buf);
                        let windows = data_windows(&image.extents);
                        let chunks =
                            read_windows(&windows, image.size, &read, &label, &writer, opts, progress, &bytes_read)?;
                        pieces(chunks, image.size)
                    }
                };
                node
            }
            Opened::Live(live) => {
                let mut node = boveda_vault::Node::new(name.as_bytes().to_vec(), NodeKind::File);
                // windows the bitmap leaves clean are the parent's
                let kept: HashMap<u64, (ChunkId, u32)> = match (&live.changed, &old) {
                    (Some(_), Some(p)) if p.size == live.size && all_kept(p) => window_pieces(&p.content),
                    _ => HashMap::new(),
                };
                let holes = old.as_ref().map(|p| hole_ranges(&p.content)).unwrap_or_default();
                // read when the bitmap marks it, or when the parent's
                // content of it cannot be taken
                let changed = |w: &u64| {
                    live.changed.as_ref().is_none_or(|c| window_in(c, *w))
                        || !(kept.contains_key(w) || (!holes.is_empty() && window_in(&holes, *w)))
                };
                let windows: Vec<u64> = data_windows(&live.extents).into_iter().filter(|w| changed(w)).collect();
                let read = |at: u64, buf: &mut [u8]| live.read_window(at, buf);
                let mut chunks =
                    read_windows(&windows, live.size, &read, &label, &writer, opts, progress, &bytes_read)?;
                if live.changed.is_some() {
                    let clean = data_windows(&live.extents).into_iter().filter(|w| !changed(w));
                    chunks.extend(clean.filter_map(|w| kept.get(&w).map(|&(id, len)| (w * DISK_CHUNK, id, len))));
                    chunks.sort_by_key(|c| c.0);
                }
                node.content = pieces(chunks, live.size);
                node
            }
        };
        node.kind = NodeKind::File;
        node.mode = 0o100600;
        node.size = source.size();
        progress.file_done(&label, node.size, bytes_read.load(Ordering::Relaxed) == before);
        stats.files += 1;
        stats.bytes += node.size;
        nodes.push(node);
    }
    for (name, bytes) in &opts.extra_files {
        let mut node = boveda_vault::Node::new(name.as_bytes().to_vec(), NodeKind::File);
        node.mode = 0o100644;
        node.size = bytes.len() as u64;
        if !bytes.is_empty() {
            node.content = vec![Piece::Data { id: writer.add(BlobKind::Data, bytes)?, len: bytes.len() as u32 }];
        }
        stats.other_nodes += 1;
        nodes.push(node);
    }
    let tree = Tree::new(nodes);
    let root = writer.add(BlobKind::Tree, &tree.encode()?)?;
    writer.flush()?;
    let w = writer.stats();
    stats.bytes_read = bytes_read.into_inner();
    stats.bytes_new = w.bytes_new;
    stats.bytes_new_incompressible = w.bytes_new_incompressible;
    stats.bytes_stored = w.bytes_stored;
    stats.chunks_new = w.chunks_new;
    stats.packs_written = w.packs_written;
    Ok(FileBackupOutcome { tree: root, stats, warnings })
}

/// Reads the given windows of a disk in parallel, and stores each that is
/// not all zeros: (guest offset, chunk, length), in order.
#[allow(clippy::too_many_arguments)]
fn read_windows(
    windows: &[u64],
    size: u64,
    read: &(dyn Fn(u64, &mut [u8]) -> std::io::Result<u64> + Sync),
    label: &std::path::Path,
    writer: &BlobWriter<'_>,
    opts: &DiskBackupOptions<'_>,
    progress: &dyn BackupProgress,
    bytes_read: &AtomicU64,
) -> Result<Vec<(u64, ChunkId, u32)>> {
    let chunks: Vec<Option<(u64, ChunkId, u32)>> = windows
        .par_iter()
        .map_init(
            || vec![0u8; DISK_CHUNK as usize],
            |buf, &w| {
                if opts.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(EngineError::Cancelled);
                }
                let start = w * DISK_CHUNK;
                let len = DISK_CHUNK.min(size - start) as usize;
                let n = read(start, &mut buf[..len]).map_err(|e| EngineError::io(label, e))?;
                bytes_read.fetch_add(n, Ordering::Relaxed);
                progress.bytes_read(n);
                if buf[..len].iter().all(|&b| b == 0) {
                    return Ok(None);
                }
                Ok(Some((start, writer.add(BlobKind::Data, &buf[..len])?, len as u32)))
            },
        )
        .collect::<Result<_>>()?;
    Ok(chunks.into_iter().flatten().collect())
}

/// A disk's content from its stored chunks in guest order: holes between.
fn pieces(chunks: Vec<(u64, ChunkId, u32)>, size: u64) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut pos = 0u64;
    let push_hole = |pieces: &mut Vec<Piece>, len: u64| {
        if len == 0 {
            return;
        }
        match pieces.last_mut() {
            Some(Piece::Hole { len: l }) => *l += len,
            _ => pieces.push(Piece::Hole { len }),
        }
    };
    for (start, id, len) in chunks {
        push_hole(&mut pieces, start - pos);
        pieces.push(Piece::Data { id, len });
        pos = start + u64::from(len);
    }
    push_hole(&mut pieces, size - pos);
    pieces
}

/// The chunk of each window of a stored disk that has one.
fn window_pieces(content: &[Piece]) -> HashMap<u64, (ChunkId, u32)> {
    let mut out = HashMap::new();
    let mut pos = 0u64;
    for piece in content {
        match piece {
            Piece::Data { id, len } => {
                if pos.is_multiple_of(DISK_CHUNK) {
                    out.insert(pos / DISK_CHUNK, (*id, *len));
                }
                pos += u64::from(*len);
            }
            Piece::Hole { len } => pos += len,
        }
    }
    out
}

/// The holes of a stored disk: (offset, length), in order.
fn hole_ranges(content: &[Piece]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    for piece in content {
        match piece {
            Piece::Data { len, .. } => pos += u64::from(*len),
            Piece::Hole { len } => {
                out.push((pos, *len));
                pos += len;
            }
        }
    }
    out
}

/// Whether window `w` meets one of the sorted `ranges`.
fn window_in(ranges: &[(u64, u64)], w: u64) -> bool {
    let (start, end) = (w * DISK_CHUNK, (w + 1) * DISK_CHUNK);
    let i = ranges.partition_point(|&(o, l)| o + l <= start);
    ranges.get(i).is_some_and(|&(o, _)| o < end)
}

/// A disk opened for reading.
enum Opened {
    Image(DiskImage),
    Live(LiveDisk),
}

impl Opened {
    fn open(source: &DiskSource) -> Result<Self> {
        Ok(match source {
            DiskSource::Image(path) => Opened::Image(DiskImage::open(path)?),
            DiskSource::Live(live) => Opened::Live(LiveDisk::open(live)?),
        })
    }

    /// How the disk is named in progress and errors.
    fn label(&self) -> PathBuf {
        match self {
            Opened::Image(image) => image.path.clone(),
            Opened::Live(live) => live.label.clone(),
        }
    }

    fn size(&self) -> u64 {
        match self {
            Opened::Image(image) => image.size,
            Opened::Live(live) => live.size,
        }
    }

    /// The most a backup reads of the disk: its allocated windows.
    fn data_bytes(&self) -> u64 {
        let (extents, size) = match self {
            Opened::Image(image) => (&image.extents, image.size),
            Opened::Live(live) => (&live.extents, live.size),
        };
        data_windows(extents).iter().map(|w| DISK_CHUNK.min(size.saturating_sub(w * DISK_CHUNK))).sum()
    }
}

/// A live snapshot's disk: its allocated ranges, what changed since the
/// parent (when a bitmap says), and connections to read it, one per
/// reading thread at most.
struct LiveDisk {
    source: LiveSource,
    label: PathBuf,
    size: u64,
    extents: Vec<Extent>,
    changed: Option<Vec<(u64, u64)>>,
    idle: Mutex<Vec<NbdClient>>,
}

impl LiveDisk {
    fn open(source: &LiveSource) -> Result<Self> {
        let label = PathBuf::from(format!("nbd+unix:///{}?socket={}", source.export, source.socket.display()));
        let io = |e| EngineError::io(&label, e);
        let bitmap = source.changed_since_parent.as_deref().map(dirty_bitmap_context);
        let mut contexts = vec![BASE_ALLOCATION];
        contexts.extend(bitmap.as_deref());
        let mut nbd = NbdClient::connect(&source.socket, &source.export, &contexts).map_err(io)?;
        let size = nbd.size();
        let extents = nbd
            .block_status(BASE_ALLOCATION)
            .map_err(io)?
            .into_iter()
            .filter(|e| e.flags & STATE_ZERO == 0)
            .map(|e| Extent { guest: e.offset, len: e.len, host: e.offset })
            .collect();
        let changed = match &bitmap {
            Some(ctx) => Some(
                nbd.block_status(ctx)
                    .map_err(io)?
                    .into_iter()
                    .filter(|e| e.flags & STATE_DIRTY != 0)
                    .map(|e| (e.offset, e.len))
                    .collect(),
            ),
            None => None,
        };
        Ok(Self { source: source.clone(), label, size, extents, changed, idle: Mutex::new(vec![nbd]) })
    }

    fn read_window(&self, at: u64, buf: &mut [u8]) -> std::io::Result<u64> {
        let idle = self.idle.lock().ok().and_then(|mut v| v.pop());
        let mut nbd = match idle {
            Some(c) => c,
            None => NbdClient::connect(&self.source.socket, &self.source.export, &[])?,
        };
        nbd.read(at, buf)?;
        if let Ok(mut v) = self.idle.lock() {
            v.push(nbd);
        }
        Ok(buf.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_extents_once() {
        let e = |guest, len| Extent { guest, len, host: guest };
        let extents = [e(0, 10), e(100, 10), e(DISK_CHUNK - 1, 2), e(5 * DISK_CHUNK, 3 * DISK_CHUNK)];
        assert_eq!(data_windows(&extents), vec![0, 1, 5, 6, 7]);
        assert!(data_windows(&[]).is_empty());
    }
}

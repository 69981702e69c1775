//! Backing up disk images: fixed-size chunks of guest space.
//!
//! The guest is cut at multiples of [`DISK_CHUNK`], so a change costs about
//! its own size and identical disks deduplicate. Only windows that hold
//! allocated data are read; windows that read as all zeros are stored as
//! holes (nothing). The point's root tree holds one file node, `disk`,
//! whose content is the guest image. An image file whose size, times and
//! inode match the parent point's is not read again; otherwise all its
//! allocated data is re-read and deduplicated (changed-block tracking for
//! running VMs comes later).

use std::path::PathBuf;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use boveda_vault::{BlobKind, BlobWriter, ChunkId, ChunkIndex, NodeKind, Piece, PointStats, Tree, Vault};
use rayon::prelude::*;

use crate::disk_image::{DiskImage, Extent};
use crate::error::{EngineError, Result};
use crate::file_backup::FileBackupOutcome;
use crate::metadata::node_from_meta;
use crate::progress::BackupProgress;

/// 256 KiB: the ~1% change of the benchmark (40 writes of 1 MiB at 4 KiB
/// aligned offsets) then costs 1.25 MiB a write, within the 1.5x growth
/// target; 1 MiB chunks would cost 2 MiB a write (docs/FORMAT.md).
pub const DISK_CHUNK: u64 = 256 << 10;

/// The name of the node holding the guest image in a disk point's tree.
pub const DISK_NODE: &str = "disk";

pub struct DiskBackupOptions<'a> {
    /// The disks, each under its node name in the point (`disk` for a disk
    /// item, the guest device such as `vda` for a VM).
    pub disks: Vec<(String, PathBuf)>,
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
    let images: Vec<(String, DiskImage)> =
        opts.disks.iter().map(|(name, path)| Ok((name.clone(), DiskImage::open(path)?))).collect::<Result<_>>()?;
    let parent = match opts.parent_tree {
        Some(id) => Some(vault.load_tree(index, &id)?),
        None => None,
    };
    let writer = BlobWriter::new(vault, index);
    let bytes_read = AtomicU64::new(0);
    let mut nodes = Vec::new();
    let mut stats = PointStats::default();
    for (name, image) in &images {
        let mut node = node_from_meta(name.as_bytes().to_vec(), &image.meta);
        node.kind = NodeKind::File;
        node.mode = 0o100600;
        node.size = image.size;
        let old = parent.as_ref().and_then(|t| t.find(name.as_bytes())).cloned();
        let reusable = old.filter(|p| {
            image.unchanged_since(p.size, p.mtime_ns, p.ctime_ns, p.inode)
                && p.content.iter().all(|piece| match piece {
                    Piece::Data { id, .. } => writer.contains(id),
                    Piece::Hole { .. } => true,
                })
        });
        progress.file_started(&image.path);
        let before = bytes_read.load(Ordering::Relaxed);
        node.content = match reusable {
            Some(p) => {
                stats.files_unchanged += 1;
                p.content
            }
            None => read_image(image, &writer, opts.cancel, progress, &bytes_read)?,
        };
        progress.file_done(&image.path, image.size, bytes_read.load(Ordering::Relaxed) == before);
        stats.files += 1;
        stats.bytes += image.size;
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
    stats.bytes_stored = w.bytes_stored;
    stats.chunks_new = w.chunks_new;
    stats.packs_written = w.packs_written;
    Ok(FileBackupOutcome { tree: root, stats, warnings: Vec::new() })
}

fn read_image(
    image: &DiskImage,
    writer: &BlobWriter<'_>,
    cancel: Option<&AtomicBool>,
    progress: &dyn BackupProgress,
    bytes_read: &AtomicU64,
) -> Result<Vec<Piece>> {
    let windows = data_windows(&image.extents);
    let chunks: Vec<Option<(u64, ChunkId, u32)>> = windows
        .par_iter()
        .map_init(
            || vec![0u8; DISK_CHUNK as usize],
            |buf, &w| {
                if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(EngineError::Cancelled);
                }
                let start = w * DISK_CHUNK;
                let len = DISK_CHUNK.min(image.size - start) as usize;
                let n = image.read_window(start, &mut buf[..len]).map_err(|e| EngineError::io(&image.path, e))?;
                bytes_read.fetch_add(n, Ordering::Relaxed);
                progress.bytes_read(n);
                if buf[..len].iter().all(|&b| b == 0) {
                    return Ok(None);
                }
                Ok(Some((start, writer.add(BlobKind::Data, &buf[..len])?, len as u32)))
            },
        )
        .collect::<Result<_>>()?;
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
    for (start, id, len) in chunks.into_iter().flatten() {
        push_hole(&mut pieces, start - pos);
        pieces.push(Piece::Data { id, len });
        pos = start + u64::from(len);
    }
    push_hole(&mut pieces, image.size - pos);
    Ok(pieces)
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

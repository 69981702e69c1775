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
pub const DISK_NODE: &[u8] = b"disk";

pub struct DiskBackupOptions<'a> {
    pub path: PathBuf,
    pub parent_tree: Option<ChunkId>,
    pub cancel: Option<&'a AtomicBool>,
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

/// Backs up one disk image into a root tree.
///
/// # Errors
/// `Disk` for an unreadable or unsupported image; store errors; `Cancelled`.
pub fn backup_disk(
    vault: &Vault,
    index: &ChunkIndex,
    opts: &DiskBackupOptions<'_>,
    progress: &dyn BackupProgress,
) -> Result<FileBackupOutcome> {
    let image = DiskImage::open(&opts.path)?;
    let writer = BlobWriter::new(vault, index);
    let mut node = node_from_meta(DISK_NODE.to_vec(), &image.meta);
    node.kind = NodeKind::File;
    node.mode = 0o100600;
    node.size = image.size;
    let parent = match opts.parent_tree {
        Some(id) => vault.load_tree(index, &id)?.find(DISK_NODE).cloned(),
        None => None,
    };
    let reusable = parent.filter(|p| {
        image.unchanged_since(p.size, p.mtime_ns, p.ctime_ns, p.inode)
            && p.content.iter().all(|piece| match piece {
                Piece::Data { id, .. } => writer.contains(id),
                Piece::Hole { .. } => true,
            })
    });
    let bytes_read = AtomicU64::new(0);
    progress.file_started(&opts.path);
    node.content = match reusable {
        Some(p) => p.content,
        None => read_image(&image, &writer, opts.cancel, progress, &bytes_read)?,
    };
    progress.file_done(&opts.path, image.size, bytes_read.load(Ordering::Relaxed) == 0);
    let tree = Tree::new(vec![node]);
    let root = writer.add(BlobKind::Tree, &tree.encode()?)?;
    writer.flush()?;
    let w = writer.stats();
    let read = bytes_read.into_inner();
    let stats = PointStats {
        files: 1,
        bytes: image.size,
        bytes_read: read,
        files_unchanged: u64::from(read == 0 && image.allocated() > 0),
        bytes_new: w.bytes_new,
        bytes_stored: w.bytes_stored,
        chunks_new: w.chunks_new,
        packs_written: w.packs_written,
        ..PointStats::default()
    };
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

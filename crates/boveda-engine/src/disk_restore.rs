//! Restoring disk images: to a sparse raw file (holes stay holes), to a
//! block device (holes written as zeros), or to qcow2 through `qemu-img
//! convert`. Never touches anything but the target.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use boveda_vault::{ChunkId, ChunkIndex, Node, Piece, Vault};

use crate::chunk_fetch::{ChunkSink, fetch_chunks};
use crate::error::{EngineError, Result};
use crate::file_restore::RestoreOutcome;
use crate::progress::RestoreProgress;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOutputFormat {
    Raw,
    Qcow2,
}

impl DiskOutputFormat {
    /// As QEMU and libvirt name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
        }
    }
}

fn target_err(path: &Path, reason: impl Into<String>) -> EngineError {
    EngineError::Target { path: path.to_path_buf(), reason: reason.into() }
}

/// Blocks of this size that are all zeros are not written to a sparse
/// target, so a restored image is no more allocated than its source.
const SPARSE_BLOCK: usize = 4096;

/// Decoding threads hand chunks to one writer thread: two threads writing
/// into one file spin on its inode lock (15% of the restore's time, measured).
struct DiskSink {
    queue: SyncSender<(u64, Vec<u8>)>,
    errors: Arc<Mutex<Vec<String>>>,
}

/// Chunks waiting for the writer thread.
const WRITE_QUEUE: usize = 16;

impl ChunkSink<u64> for DiskSink {
    type State = ();

    fn deliver(&self, _: &mut (), &at: &u64, plain: &[u8]) {
        if self.queue.send((at, plain.to_vec())).is_err() {
            self.fail(&at, "the writer stopped".into());
        }
    }

    fn fail(&self, &at: &u64, why: String) {
        if let Ok(mut e) = self.errors.lock() {
            e.push(format!("guest offset {at}: {why}"));
        }
    }
}

/// Writes the runs of `data` that are not all-zero blocks.
fn write_sparse(file: &File, data: &[u8], at: u64) -> std::io::Result<()> {
    let is_zero = |b: &[u8]| b.iter().all(|&x| x == 0);
    let blocks: Vec<&[u8]> = data.chunks(SPARSE_BLOCK).collect();
    let mut i = 0;
    while i < blocks.len() {
        if is_zero(blocks[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < blocks.len() && !is_zero(blocks[i]) {
            i += 1;
        }
        let from = start * SPARSE_BLOCK;
        let to = (i * SPARSE_BLOCK).min(data.len());
        file.write_all_at(&data[from..to], at + from as u64)?;
    }
    Ok(())
}

/// Which disk of a point to restore, where, and how.
pub struct DiskRestoreRequest<'a> {
    /// `disk` for a disk item, a guest device such as `vda` for a VM.
    pub disk: &'a str,
    /// The image file or block device to write.
    pub target: &'a Path,
    pub format: DiskOutputFormat,
    pub cancel: Option<&'a AtomicBool>,
    /// A symbolic link at `target` is replaced, never followed (a restore
    /// into a folder others may write: a link there must not lead the
    /// image onto a device or a file elsewhere). Without it, a link given
    /// as the target (`/dev/disk/by-id/...`) is the user's own and followed.
    pub no_follow: bool,
}

/// Restores one disk of a point.
///
/// # Errors
/// `NotInPoint` when the point holds no such disk; `Target` when the target
/// is too small or unusable; `Disk` when qemu-img fails.
pub fn restore_disk(
    vault: &Vault,
    index: &ChunkIndex,
    root: &ChunkId,
    req: &DiskRestoreRequest<'_>,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    let (target, cancel) = (req.target, req.cancel);
    let tree = vault.load_tree(index, root)?;
    let node = tree.find(req.disk.as_bytes()).ok_or_else(|| EngineError::NotInPoint(req.disk.to_string()))?;
    match req.format {
        DiskOutputFormat::Raw => write_raw(vault, index, node, target, req.no_follow, cancel, progress),
        DiskOutputFormat::Qcow2 => {
            let tmp = sibling(target, ".boveda-raw.tmp");
            let converted = sibling(target, ".boveda-restore.tmp");
            let out = write_raw(vault, index, node, &tmp, true, cancel, progress);
            let out = out.and_then(|o| {
                if !o.errors.is_empty() {
                    return Ok(o);
                }
                // converted beside the target, then renamed over it: never
                // written into a file that was already there
                remove_stale(&converted).map_err(|e| target_err(target, e.to_string()))?;
                let status = Command::new("qemu-img")
                    .args(["convert", "-f", "raw", "-O", "qcow2"])
                    .arg(&tmp)
                    .arg(&converted)
                    .output()
                    .map_err(|e| EngineError::Disk {
                        path: target.to_path_buf(),
                        reason: format!("cannot run qemu-img: {e}"),
                    })?;
                if !status.status.success() {
                    let why = String::from_utf8_lossy(&status.stderr).trim().to_string();
                    return Err(EngineError::Disk {
                        path: target.to_path_buf(),
                        reason: format!("qemu-img convert failed: {why}"),
                    });
                }
                fs::rename(&converted, target).map_err(|e| target_err(target, e.to_string()))?;
                Ok(o)
            });
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(&converted);
            out
        }
    }
}

fn write_raw(
    vault: &Vault,
    index: &ChunkIndex,
    node: &Node,
    target: &Path,
    no_follow: bool,
    cancel: Option<&AtomicBool>,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    let data_bytes: u64 = node.content.iter().filter(|p| matches!(p, Piece::Data { .. })).map(Piece::len).sum();
    let meta = if no_follow { fs::symlink_metadata(target) } else { fs::metadata(target) };
    let is_device = meta.is_ok_and(|m| m.file_type().is_block_device());
    let temp = sibling(target, ".boveda-restore.tmp");
    let file = if is_device {
        let mut open = OpenOptions::new();
        open.write(true);
        if no_follow {
            open.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
        }
        let f = open.open(target).map_err(|e| target_err(target, e.to_string()))?;
        let size = rustix::fs::seek(&f, rustix::fs::SeekFrom::End(0)).map_err(|e| target_err(target, e.to_string()))?;
        if size < node.size {
            return Err(target_err(
                target,
                format!("is too small: the disk has {} bytes, the device {size}", node.size),
            ));
        }
        f
    } else {
        if fs::symlink_metadata(target).is_ok_and(|m| m.is_dir()) {
            return Err(target_err(target, "is a directory; give the path of the image file to write"));
        }
        let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let free =
            rustix::fs::statvfs(dir).map(|s| s.f_bavail * s.f_frsize).map_err(|e| target_err(target, e.to_string()))?;
        if free < data_bytes {
            return Err(target_err(
                target,
                format!("is too small: the disk holds {data_bytes} bytes of data, {free} bytes are free there"),
            ));
        }
        // a new file beside the target, renamed over it once complete: an
        // existing file there (a hard link to another image, say) is
        // replaced, never written through
        remove_stale(&temp).map_err(|e| target_err(target, e.to_string()))?;
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&temp)
            .map_err(|e| target_err(target, e.to_string()))?;
        f.set_len(node.size).map_err(|e| target_err(target, e.to_string()))?;
        f
    };
    let result = fill_raw(vault, index, node, &file, is_device, target, cancel, progress);
    if !is_device {
        match &result {
            Ok(o) if o.errors.is_empty() => fs::rename(&temp, target).map_err(|e| target_err(target, e.to_string()))?,
            _ => {
                let _ = fs::remove_file(&temp);
            }
        }
    }
    result
}

/// `path` with `suffix` appended to its name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Removes what an interrupted restore left at a temporary name.
fn remove_stale(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Writes the disk's data into `file` (the device, or the new image file).
#[allow(clippy::too_many_arguments)]
fn fill_raw(
    vault: &Vault,
    index: &ChunkIndex,
    node: &Node,
    file: &File,
    is_device: bool,
    target: &Path,
    cancel: Option<&AtomicBool>,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    let data_bytes: u64 = node.content.iter().filter(|p| matches!(p, Piece::Data { .. })).map(Piece::len).sum();
    progress.planned(1, data_bytes);
    let mut wanted: HashMap<ChunkId, Vec<u64>> = HashMap::new();
    let mut offset = 0;
    let zeros = vec![0u8; 1 << 20];
    for piece in &node.content {
        match piece {
            Piece::Data { id, .. } => wanted.entry(*id).or_default().push(offset),
            Piece::Hole { len } if is_device => {
                // a device keeps old bytes where the image has holes
                let mut done = 0;
                while done < *len {
                    let n = (*len - done).min(zeros.len() as u64) as usize;
                    file.write_all_at(&zeros[..n], offset + done).map_err(|e| target_err(target, e.to_string()))?;
                    done += n as u64;
                }
            }
            Piece::Hole { .. } => {}
        }
        offset += piece.len();
    }
    let written = AtomicU64::new(0);
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (queue, chunks) = sync_channel::<(u64, Vec<u8>)>(WRITE_QUEUE);
    let fetched = std::thread::scope(|scope| {
        let writer_errors = errors.clone();
        let written = &written;
        scope.spawn(move || {
            for (at, data) in chunks {
                let res = if is_device { file.write_all_at(&data, at) } else { write_sparse(file, &data, at) };
                match res {
                    Ok(()) => {
                        written.fetch_add(data.len() as u64, Ordering::Relaxed);
                        progress.bytes_written(data.len() as u64);
                    }
                    Err(e) => {
                        if let Ok(mut errs) = writer_errors.lock() {
                            errs.push(format!("guest offset {at}: cannot write: {e}"));
                        }
                    }
                }
            }
        });
        let sink = DiskSink { queue, errors: errors.clone() };
        fetch_chunks(vault, index, &wanted, cancel, &sink)
        // the sink, and so the queue, is dropped here: the writer drains it and ends
    });
    fetched?;
    if is_device {
        // a device has no page cache of its own to trust; files are left to
        // the kernel like every other restored file
        file.sync_all().map_err(|e| target_err(target, e.to_string()))?;
    }
    let mut errors = errors.lock().map(|e| e.clone()).unwrap_or_default();
    errors.sort();
    Ok(RestoreOutcome {
        files: u64::from(errors.is_empty()),
        bytes_written: written.into_inner(),
        errors,
        ..RestoreOutcome::default()
    })
}

/// Reads a small file kept in a disk point (a VM's definition, its UEFI
/// variables) of at most `max` bytes: the tree says how large it is, and
/// a registered host writes the trees of its points.
///
/// # Errors
/// `NotInPoint` when the point has no such file; `Domain` when it is
/// larger than `max`; vault errors.
pub fn read_point_file(vault: &Vault, index: &ChunkIndex, root: &ChunkId, name: &str, max: u64) -> Result<Vec<u8>> {
    let tree = vault.load_tree(index, root)?;
    let node = tree.find(name.as_bytes()).ok_or_else(|| EngineError::NotInPoint(name.to_string()))?;
    let too_large = || EngineError::Domain {
        path: PathBuf::from(name),
        reason: format!("{} bytes in the point, more than the {max} such a file may have", node.size),
    };
    if node.size > max {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(node.size as usize);
    for piece in &node.content {
        match piece {
            Piece::Data { id, len } => {
                // what it decodes to, and what is read of it, as the index
                // says (a host writes its index objects too)
                let stored = index.get(id).map_or(0, |r| u64::from(r.raw_len).max(u64::from(r.length)));
                if out.len() as u64 + u64::from(*len).max(stored) > max {
                    return Err(too_large());
                }
                out.extend(vault.read_blob(index, id)?);
            }
            Piece::Hole { len } if out.len() as u64 + *len <= max => out.resize(out.len() + *len as usize, 0),
            Piece::Hole { .. } => return Err(too_large()),
        }
        if out.len() as u64 > max {
            return Err(too_large());
        }
    }
    Ok(out)
}

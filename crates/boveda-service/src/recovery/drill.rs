//! Restore drills: a file or disk item's point restored (all of it, or a
//! sample of its files) into a scratch folder, every restored byte
//! compared with the point's chunk hashes, the time the restore took
//! recorded as the measured recovery time, and the scratch folder removed.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use boveda_engine::{DISK_NODE, DiskOutputFormat, NoProgress};
use boveda_vault::{ChunkIndex, Node, NodeKind, Piece, RecoveryPoint, Vault};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};
use crate::items::{Item, ItemSource};

/// What a drill measured and found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillOutcome {
    /// Files (or 1 disk) restored and compared.
    pub files: u64,
    pub bytes: u64,
    /// The measured recovery time: seconds the restore took.
    pub restore_seconds: f64,
    pub bytes_per_second: f64,
    /// The share of the point's files restored, when sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_percent: Option<u8>,
    /// How long restoring the whole point takes at the throughput
    /// measured (the restore time itself, when nothing was sampled).
    pub full_restore_seconds: f64,
    /// Chunks whose restored bytes were hashed and compared.
    pub chunks_compared: u64,
    /// What differs from the point (the first 20), by path.
    pub mismatches: Vec<String>,
    /// Bytes of sealed chunks the restore read from the store (each chunk
    /// once): the verification's `bytes_read`, its own however many run
    /// at once.
    #[serde(skip)]
    pub stored_bytes: u64,
}

/// A file of the point: its path in the point and its node.
struct PointFile {
    /// For messages and for picking paths to restore (lossy text).
    path: String,
    /// The path's bytes, as the file system has it.
    raw: Vec<u8>,
    node: Node,
}

fn walk(
    vault: &Vault,
    index: &ChunkIndex,
    tree: &boveda_vault::ChunkId,
    at: &[u8],
    out: &mut Vec<PointFile>,
) -> Result<()> {
    for node in vault.load_tree(index, tree)?.nodes {
        let mut raw = at.to_vec();
        raw.push(b'/');
        raw.extend_from_slice(&node.name);
        match node.kind {
            NodeKind::Dir => {
                if let Some(sub) = node.subtree {
                    walk(vault, index, &sub, &raw, out)?;
                }
            }
            NodeKind::File => {
                out.push(PointFile { path: String::from_utf8_lossy(&raw).into_owned(), raw, node });
            }
            _ => {}
        }
    }
    Ok(())
}

/// A path's place in a sample: a hash of the path under the point's id, so
/// that the same point samples the same files.
fn rank(path: &str, seed: &[u8]) -> [u8; 8] {
    let mut h = blake3::Hasher::new();
    h.update(seed).update(path.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    out
}

/// About `percent`% of `files`, stratified by size (files of each size
/// class, sizes within a factor of 4, sampled alike, at least one of each
/// class): the sample holds about that share of the files and of the
/// bytes, so its restore time scales to the whole point's.
fn sample<'a>(files: &'a [PointFile], percent: u8, seed: &[u8]) -> Vec<&'a PointFile> {
    let mut classes: std::collections::BTreeMap<u32, Vec<&PointFile>> = std::collections::BTreeMap::new();
    // restored by path: names that are not UTF-8 are left to full drills
    for f in files.iter().filter(|f| f.raw == f.path.as_bytes()) {
        classes.entry((64 - f.node.size.leading_zeros()) / 2).or_default().push(f);
    }
    let mut out = Vec::new();
    for (_, mut class) in classes {
        class.sort_by_key(|f| rank(&f.path, seed));
        let take = (class.len() * usize::from(percent)).div_ceil(100);
        out.extend(class.into_iter().take(take));
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// A scratch folder of the drill's own, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch_in(dir: &Path) -> Result<Scratch> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("boveda-drill-{}-{n}", std::process::id()));
    // only its owner reads what the drill restores
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&path)
        .map_err(|e| ServiceError::Invalid(format!("cannot make the scratch folder {}: {e}", path.display())))?;
    Ok(Scratch(path))
}

/// Compares a restored file with its node's pieces: each chunk's bytes
/// hashed under its writer's key, holes read as zeros, nothing after.
fn compare_file(
    vault: &Vault,
    index: &ChunkIndex,
    file: &Path,
    node: &Node,
    chunks: &mut u64,
) -> Result<Option<String>> {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) => return Ok(Some(format!("not restored: {e}"))),
    };
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut at = 0u64;
    let mut buf = Vec::new();
    let mut hole = vec![0u8; 1 << 20];
    for piece in &node.content {
        let want = piece.len();
        match piece {
            Piece::Data { id, len } => {
                buf.resize(*len as usize, 0);
                if r.read_exact(&mut buf).is_err() {
                    return Ok(Some(format!("ends before byte {}, the point has {} bytes", at + want, node.size)));
                }
                *chunks += 1;
                if !vault.chunk_matches(index, id, &buf)? {
                    return Ok(Some(format!("bytes {at}..{} differ from the point's chunk {}", at + want, id.short())));
                }
            }
            Piece::Hole { len } => {
                let mut left = *len;
                while left > 0 {
                    let n = left.min(hole.len() as u64) as usize;
                    if r.read_exact(&mut hole[..n]).is_err() {
                        return Ok(Some(format!("ends in the hole at byte {at} of the point")));
                    }
                    if hole[..n].iter().any(|&b| b != 0) {
                        return Ok(Some(format!("bytes in the hole at {at} are not zero")));
                    }
                    left -= n as u64;
                }
            }
        }
        at += want;
    }
    let mut extra = [0u8; 1];
    if r.read(&mut extra).unwrap_or(0) != 0 {
        return Ok(Some(format!("is longer than the point's {} bytes", node.size)));
    }
    Ok(None)
}

/// What the running drills of this process hold in one file system, and
/// what it had free when the first of them took its hold.
#[derive(Debug, Clone, Copy)]
struct Room {
    bytes: u64,
    files: u64,
    free: u64,
    /// Free inodes then; `None` where the file system counts none.
    inodes: Option<u64>,
}

/// Holds by file system (device).
type HeldRoom = std::sync::Mutex<HashMap<u64, Room>>;

/// The room the drills of this process running now hold, per file system;
/// and a signal when one ends.
static HELD: std::sync::LazyLock<(HeldRoom, std::sync::Condvar)> = std::sync::LazyLock::new(Default::default);

/// A drill's hold on room in its scratch file system, given back when
/// dropped.
struct Held {
    dev: u64,
    bytes: u64,
    files: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        let (lock, ended) = &*HELD;
        let mut held = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(r) = held.get_mut(&self.dev) {
            r.bytes = r.bytes.saturating_sub(self.bytes);
            r.files = r.files.saturating_sub(self.files);
            if (r.bytes, r.files) == (0, 0) {
                held.remove(&self.dev);
            }
        }
        ended.notify_all();
    }
}

/// Holds room in the scratch folder's file system for the files to
/// restore (their data, each rounded up to whole blocks; holes take none;
/// and an inode each) before anything is written: a drill that fills a
/// disk would fail on whichever file came last, a fine point recorded as
/// failed. Drills running at once into one file system share what it had
/// free when the first of them began: one that does not fit beside the
/// others waits for them (its phase says so); one that could not fit even
/// once they are done is refused at once.
fn hold_room(scratch: &Path, picked: &[&PointFile], phase: &dyn Fn(&str)) -> Result<Held> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(scratch).map_err(|e| ServiceError::io(scratch, e))?.dev();
    let (lock, ended) = &*HELD;
    let place = scratch.display();
    let files = picked.len() as u64;
    loop {
        // read outside the lock: a slow file system stalls only its drills
        let fs = rustix::fs::statvfs(scratch).map_err(|e| ServiceError::io(scratch, e.into()))?;
        let block = fs.f_frsize.max(512);
        let needed: u64 = picked.iter().map(|f| data_bytes(&f.node).div_ceil(block) * block).sum();
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        // some file systems count no inodes (f_files 0): nothing to hold there
        let inodes = (fs.f_files > 0).then_some(fs.f_favail);
        let mut held = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = held.get(&dev).copied();
        let (others, other_files) = now.map_or((0, 0), |r| (r.bytes, r.files));
        if needed > free + others {
            return Err(ServiceError::Invalid(format!(
                "the scratch folder {place} has {} bytes free; the drill restores {needed} bytes of data: \
                 verify into a larger scratch folder, or a smaller sample",
                free + others
            )));
        }
        if let Some(i) = inodes
            && files > i + other_files
        {
            return Err(ServiceError::Invalid(format!(
                "the scratch folder {place} has room for {} more files; the drill restores {files}: \
                 verify into a larger scratch folder, or a smaller sample",
                i + other_files
            )));
        }
        let room = now.unwrap_or(Room { bytes: 0, files: 0, free, inodes });
        if needed + room.bytes <= room.free && room.inodes.is_none_or(|i| files + room.files <= i) {
            held.insert(dev, Room { bytes: room.bytes + needed, files: room.files + files, ..room });
            return Ok(Held { dev, bytes: needed, files });
        }
        phase("waiting for room in the scratch folder");
        drop(
            ended
                .wait_timeout(held, std::time::Duration::from_secs(5))
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
    }
}

/// The bytes of a file's data (its holes take no room).
fn data_bytes(node: &Node) -> u64 {
    node.content
        .iter()
        .map(|p| match p {
            Piece::Data { len, .. } => u64::from(*len),
            Piece::Hole { .. } => 0,
        })
        .sum()
}

/// Runs a drill of `point` of `item` in a new folder inside `scratch_dir`
/// (removed after, whatever happens).
///
/// # Errors
/// `Invalid` for a VM item (its points are boot-verified) or a scratch
/// folder that cannot be made; the restore's and the vault's errors.
pub fn drill(
    vault: &Vault,
    item: &Item,
    point: &RecoveryPoint,
    sample_percent: Option<u8>,
    scratch_dir: &Path,
    phase: &dyn Fn(&str),
) -> Result<DrillOutcome> {
    let index = vault.load_index()?;
    let mut files = Vec::new();
    walk(vault, &index, &point.tree, b"", &mut files)?;
    let total_bytes: u64 = files.iter().map(|f| f.node.size).sum();
    let picked: Vec<&PointFile> = match (&item.source, sample_percent) {
        (ItemSource::Files { .. }, Some(p)) if p < 100 => sample(&files, p, &point.id.0),
        _ => files.iter().collect(),
    };
    let sample = match (&item.source, sample_percent) {
        (ItemSource::Files { .. }, Some(p)) if p < 100 => Some(p),
        _ => None,
    };
    // the room is held until the scratch folder is gone (dropped after it)
    let _room = match item.source {
        ItemSource::Files { .. } | ItemSource::Disk { .. } => Some(hold_room(scratch_dir, &picked, phase)?),
        ItemSource::Vm { .. } => None,
    };
    let scratch = scratch_in(scratch_dir)?;
    phase("restore");
    let started = std::time::Instant::now();
    let bytes = match &item.source {
        ItemSource::Files { .. } => {
            let paths = if sample.is_some() { picked.iter().map(|f| f.path.clone()).collect() } else { Vec::new() };
            let o = super::restore(vault, point, scratch.0.clone(), None, paths, None, &NoProgress)?;
            if !o.errors.is_empty() {
                return Err(ServiceError::Invalid(format!(
                    "the restore left {} file(s) out: {}",
                    o.errors.len(),
                    o.errors.first().cloned().unwrap_or_default()
                )));
            }
            picked.iter().map(|f| f.node.size).sum::<u64>()
        }
        ItemSource::Disk { .. } => {
            let image = scratch.0.join("disk.img");
            super::restore_disk_image(vault, point, image, None, DiskOutputFormat::Raw, None, &NoProgress)?;
            total_bytes
        }
        ItemSource::Vm { .. } => {
            return Err(ServiceError::Invalid(format!(
                "item {} is a VM: its points are verified by booting them, not by a restore drill",
                item.name
            )));
        }
    };
    let restore_seconds = started.elapsed().as_secs_f64();
    phase("compare");
    let mut chunks = 0;
    let mut mismatches = Vec::new();
    for f in &picked {
        let on_disk = match &item.source {
            ItemSource::Disk { .. } if f.path == format!("/{DISK_NODE}") => scratch.0.join("disk.img"),
            ItemSource::Disk { .. } => continue,
            _ => {
                use std::os::unix::ffi::OsStrExt;
                scratch.0.join(std::ffi::OsStr::from_bytes(f.raw.strip_prefix(b"/").unwrap_or(&f.raw)))
            }
        };
        if let Some(why) = compare_file(vault, &index, &on_disk, &f.node, &mut chunks)?
            && mismatches.len() < 20
        {
            mismatches.push(format!("{}: {why}", f.path));
        }
    }
    let bytes_per_second = if restore_seconds > 0.0 { bytes as f64 / restore_seconds } else { 0.0 };
    let full_restore_seconds = match sample {
        Some(_) if bytes_per_second > 0.0 => total_bytes as f64 / bytes_per_second,
        _ => restore_seconds,
    };
    let chunks_read: std::collections::HashSet<_> = picked
        .iter()
        .flat_map(|f| &f.node.content)
        .filter_map(|p| match p {
            Piece::Data { id, .. } => Some(*id),
            Piece::Hole { .. } => None,
        })
        .collect();
    let stored_bytes = chunks_read.iter().filter_map(|id| index.get(id)).map(|r| u64::from(r.length)).sum();
    Ok(DrillOutcome {
        stored_bytes,
        files: picked.len() as u64,
        bytes,
        restore_seconds,
        bytes_per_second,
        sample_percent: sample,
        full_restore_seconds,
        chunks_compared: chunks,
        mismatches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_about_its_share_of_files_and_bytes_and_the_same_each_time() {
        let file = |i: u64| {
            let mut node = Node::new(format!("f{i}").into_bytes(), NodeKind::File);
            // many small files, a few large ones
            node.size = if i.is_multiple_of(100) { 50 << 20 } else { 1000 + i };
            PointFile { path: format!("/data/f{i}"), raw: format!("/data/f{i}").into_bytes(), node }
        };
        let files: Vec<PointFile> = (0..10_000).map(file).collect();
        let picked = sample(&files, 10, b"seed");
        assert!((950..1100).contains(&picked.len()), "{}", picked.len());
        let total: u64 = files.iter().map(|f| f.node.size).sum();
        let share = picked.iter().map(|f| f.node.size).sum::<u64>() as f64 / total as f64;
        assert!((0.09..0.12).contains(&share), "bytes {share}");
        let again: Vec<&str> = sample(&files, 10, b"seed").iter().map(|f| f.path.as_str()).collect();
        assert_eq!(picked.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(), again);
        assert_eq!(sample(&files, 100, b"seed").len(), 10_000);
        assert_eq!(sample(&files[..1], 1, b"seed").len(), 1, "at least one");
    }
}

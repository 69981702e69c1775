//! File-level access to the ext2/3/4 file system inside a disk point.
//!
//! The disk is first written from the point to a temporary sparse image
//! (only its data chunks are read), then e2fsprogs' `debugfs` reads the file
//! system in user space: `ls -p` to browse, `rdump` to extract. An MBR or
//! GPT partition table is read here to find the file system's offset, which
//! `debugfs` takes as `image?offset=N`. Only ext2, ext3 and ext4 are
//! supported; anything else is refused by name.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use boveda_vault::{ChunkId, ChunkIndex, Vault};
use rustix::fs::{AtFlags, Mode, OFlags};

use crate::beneath::{Beneath, clear_at};
use crate::disk_restore::{DiskOutputFormat, DiskRestoreRequest, restore_disk};
use crate::error::{EngineError, Result};
use crate::point_path::split_point_path;
use crate::progress::NoProgress;

const SECTOR: u64 = 512;
const EXT_MAGIC_OFFSET: u64 = 1024 + 56;

/// One entry listed inside a disk's file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskEntry {
    pub name: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub is_dir: bool,
}

/// A disk of a point written to a temporary image, removed when dropped.
pub struct MaterializedDisk {
    dir: PathBuf,
    image: PathBuf,
    /// Byte offset of the ext file system in the image.
    offset: u64,
}

impl Drop for MaterializedDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unsupported(disk: &str, why: String) -> EngineError {
    EngineError::Disk { path: PathBuf::from(disk), reason: why }
}

fn is_ext(file: &File, offset: u64) -> bool {
    let mut magic = [0u8; 2];
    file.read_exact_at(&mut magic, offset + EXT_MAGIC_OFFSET).is_ok() && magic == [0x53, 0xEF]
}

/// The file system (or volume) at `offset`, by its signature, for saying
/// what file-level restore cannot read.
fn other_file_system(file: &File, offset: u64) -> Option<&'static str> {
    let at = |pos: u64, sig: &[u8]| {
        let mut b = vec![0u8; sig.len()];
        file.read_exact_at(&mut b, offset + pos).is_ok() && b == sig
    };
    [
        (0, &b"XFSB"[..], "XFS"),
        (0x10040, b"_BHRfS_M", "Btrfs"),
        (3, b"NTFS    ", "NTFS"),
        (3, b"EXFAT   ", "exFAT"),
        (0x52, b"FAT32   ", "FAT"),
        (0x36, b"FAT1", "FAT"),
        (0x218, b"LVM2 001", "LVM"),
        (0, b"LUKS\xba\xbe", "LUKS (encrypted)"),
        (4086, b"SWAPSPACE2", "swap"),
    ]
    .iter()
    .find(|(pos, sig, _)| at(*pos, sig))
    .map(|(_, _, name)| *name)
}

/// Offsets of the partitions an MBR or GPT lists; `[0]` without a table.
fn partition_offsets(file: &File) -> Vec<u64> {
    let mut mbr = [0u8; 512];
    if file.read_exact_at(&mut mbr, 0).is_err() || mbr[510..512] != [0x55, 0xAA] {
        return vec![0];
    }
    let entries: Vec<(u8, u64)> = (0..4)
        .map(|i| {
            let e = &mbr[446 + i * 16..446 + (i + 1) * 16];
            (e[4], u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]])))
        })
        .filter(|(kind, _)| *kind != 0)
        .collect();
    if entries.iter().any(|(kind, _)| *kind == 0xEE) {
        return gpt_offsets(file);
    }
    let found: Vec<u64> = entries.iter().map(|(_, lba)| lba * SECTOR).collect();
    if found.is_empty() { vec![0] } else { found }
}

fn gpt_offsets(file: &File) -> Vec<u64> {
    let mut hdr = [0u8; 92];
    if file.read_exact_at(&mut hdr, SECTOR).is_err() || &hdr[..8] != b"EFI PART" {
        return Vec::new();
    }
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
    let table = u64_at(&hdr, 72) * SECTOR;
    let (count, size) = (u32_at(&hdr, 80).min(256) as u64, u32_at(&hdr, 84).clamp(128, 4096) as u64);
    let mut out = Vec::new();
    for i in 0..count {
        let mut e = vec![0u8; size as usize];
        if file.read_exact_at(&mut e, table + i * size).is_err() {
            break;
        }
        if e[..16].iter().any(|&b| b != 0) {
            out.push(u64_at(&e, 32) * SECTOR);
        }
    }
    out
}

/// Writes disk `disk` of a point to a temporary image and finds its ext
/// file system.
///
/// # Errors
/// `Disk` when no ext2/3/4 file system is found; restore errors.
pub fn materialize_disk(vault: &Vault, index: &ChunkIndex, root: &ChunkId, disk: &str) -> Result<MaterializedDisk> {
    let base = std::env::temp_dir().join(format!("boveda-disk-{}-{}", std::process::id(), disk));
    std::fs::create_dir_all(&base).map_err(|e| EngineError::io(&base, e))?;
    let image = base.join("disk.img");
    let mut m = MaterializedDisk { dir: base, image, offset: 0 };
    let req =
        DiskRestoreRequest { disk, target: &m.image, format: DiskOutputFormat::Raw, cancel: None, no_follow: true };
    let out = restore_disk(vault, index, root, &req, &NoProgress)?;
    if let Some(e) = out.errors.first() {
        return Err(unsupported(disk, format!("cannot be read from the vault: {e}")));
    }
    let file = File::open(&m.image).map_err(|e| EngineError::io(&m.image, e))?;
    let offsets = partition_offsets(&file);
    m.offset = offsets.iter().copied().find(|&o| is_ext(&file, o)).ok_or_else(|| {
        // a FAT or NTFS volume on a whole disk ends its first sector as an
        // MBR does: the disk's start is looked at too
        let mut found: Vec<&str> =
            std::iter::once(0).chain(offsets.iter().copied()).filter_map(|o| other_file_system(&file, o)).collect();
        found.dedup();
        let holds = if found.is_empty() { "no file system boveda knows".to_string() } else { found.join(", ") };
        unsupported(
            disk,
            format!(
                "holds {holds} ({} partition(s) looked at): file recovery reads ext2, ext3 and ext4 only, not XFS, \
                 Btrfs, NTFS, FAT, LVM or LUKS; restore the disk and mount it instead",
                offsets.len()
            ),
        )
    })?;
    Ok(m)
}

impl MaterializedDisk {
    fn debugfs(&self, request: &str) -> Result<String> {
        let device = format!("{}?offset={}", self.image.display(), self.offset);
        let out = Command::new("debugfs")
            .args(["-R", request, &device])
            .output()
            .map_err(|e| unsupported("debugfs", format!("cannot run debugfs (install e2fsprogs): {e}")))?;
        let err = String::from_utf8_lossy(&out.stderr);
        // debugfs reports a bad path on stderr and still exits 0
        if let Some(line) = err.lines().find(|l| !l.starts_with("debugfs ") && !l.trim().is_empty()) {
            return Err(unsupported("file system", line.trim().to_string()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn fs_path(path: &str) -> Result<String> {
        let parts = split_point_path(path)?;
        let parts: Vec<String> = parts.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
        Ok(format!("/{}", parts.join("/")))
    }

    /// Lists a directory (or one file) of the file system.
    ///
    /// # Errors
    /// `NotInPoint` when the path does not exist there.
    pub fn list(&self, path: &str) -> Result<Vec<DiskEntry>> {
        let p = Self::fs_path(path)?;
        let text = self.debugfs(&format!("ls -p \"{p}\"")).map_err(|_| EngineError::NotInPoint(path.to_string()))?;
        let mut out = Vec::new();
        for line in text.lines() {
            // /inode/mode/uid/gid/name/size/
            let f: Vec<&str> = line.split('/').collect();
            if f.len() < 7 || f[5] == "." || f[5] == ".." {
                continue;
            }
            let mode = u32::from_str_radix(f[2], 8).unwrap_or(0);
            out.push(DiskEntry {
                name: f[5].to_string(),
                mode,
                uid: f[3].parse().unwrap_or(0),
                gid: f[4].parse().unwrap_or(0),
                size: f[6].parse().unwrap_or(0),
                is_dir: mode & 0o170000 == 0o040000,
            });
        }
        Ok(out)
    }

    /// Extracts a file or directory tree below the held folder `target`,
    /// keeping its path (`/etc/hosts` becomes `TARGET/etc/hosts`). The
    /// folders on the way are made without following links; `debugfs`
    /// writes into a private folder (0700) reached through the held handle,
    /// and what it wrote is then renamed into place.
    ///
    /// # Errors
    /// `NotInPoint` for a missing path; a directory already at the path;
    /// I/O errors.
    pub fn extract(&self, path: &str, target: &Beneath) -> Result<()> {
        let p = Self::fs_path(path)?;
        if p == "/" {
            return Err(EngineError::BadPointPath("give a path below / to extract from a disk".into()));
        }
        let inner = Path::new(&p);
        let (parent, name) = match (inner.parent(), inner.file_name()) {
            (Some(parent), Some(name)) => (parent.strip_prefix("/").unwrap_or(parent), name),
            _ => return Err(EngineError::BadPointPath(path.to_string())),
        };
        let shown = target.show(parent);
        let dest = target.mkdir_all(parent).map_err(|e| EngineError::io(&shown, e))?;
        let staging_name = format!(".boveda-extract-{}", std::process::id());
        let _ = rustix::fs::unlinkat(&dest, staging_name.as_str(), AtFlags::REMOVEDIR);
        rustix::fs::mkdirat(&dest, staging_name.as_str(), Mode::from_raw_mode(0o700))
            .map_err(|e| EngineError::io(&shown, e.into()))?;
        let staged = (|| -> Result<()> {
            let staging = rustix::fs::openat(
                &dest,
                staging_name.as_str(),
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| EngineError::io(&shown, e.into()))?;
            let via = format!("/proc/{}/fd/{}", std::process::id(), staging.as_raw_fd());
            self.debugfs(&format!("rdump \"{p}\" \"{via}\"")).map_err(|e| match e {
                EngineError::Disk { reason, .. } if reason.contains("not found") => {
                    EngineError::NotInPoint(path.to_string())
                }
                other => other,
            })?;
            let at = target.show(&Path::new(parent).join(name));
            clear_at(dest.as_fd(), name).map_err(|e| EngineError::io(&at, e))?;
            rustix::fs::renameat(&staging, name, &dest, name).map_err(|e| match e {
                rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST => {
                    EngineError::Target { path: at.clone(), reason: "a folder is already there".into() }
                }
                other => EngineError::io(&at, other.into()),
            })
        })();
        let _ = remove_tree_at(dest.as_fd(), OsStr::new(&staging_name));
        staged
    }
}

/// Removes the tree `name` in `dir` without following links.
fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<()> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let sub = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {
            return Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?);
        }
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut entries = Vec::new();
    for entry in rustix::fs::Dir::read_from(&sub)? {
        let entry = entry?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            entries.push(std::ffi::OsString::from_vec(n.to_vec()));
        }
    }
    for e in entries {
        remove_tree_at(sub.as_fd(), &e)?;
    }
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

//! Disk images as a source: raw files, block devices and qcow2 images,
//! read so that only allocated data is touched.
//!
//! - raw files: `SEEK_DATA`/`SEEK_HOLE` map the allocated ranges;
//! - block devices: the whole device;
//! - qcow2: `qemu-img map --output=json` (qemu's own reader, in user space)
//!   lists each allocated guest range with its offset in the image file,
//!   which is then read directly. Images with a backing file or compressed
//!   clusters are refused with a clear message (convert them with
//!   `qemu-img convert` first).

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::error::{EngineError, Result};

/// qcow2's magic bytes.
const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
    BlockDevice,
}

/// A run of guest data and where it lives in the source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub guest: u64,
    pub len: u64,
    pub host: u64,
}

pub struct DiskImage {
    pub path: PathBuf,
    pub format: DiskFormat,
    /// Guest (virtual) size in bytes.
    pub size: u64,
    /// Allocated guest ranges, sorted; everything else reads as zeros.
    pub extents: Vec<Extent>,
    pub meta: std::fs::Metadata,
    file: File,
}

#[derive(Deserialize)]
struct MapEntry {
    start: u64,
    length: u64,
    depth: u32,
    data: bool,
    #[serde(default)]
    compressed: bool,
    offset: Option<u64>,
}

#[derive(Deserialize)]
struct ImageInfo {
    #[serde(rename = "virtual-size")]
    virtual_size: u64,
    #[serde(rename = "backing-filename")]
    backing_filename: Option<String>,
}

fn invalid(path: &Path, why: impl Into<String>) -> EngineError {
    EngineError::Disk { path: path.to_path_buf(), reason: why.into() }
}

fn qemu_img(path: &Path, args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new("qemu-img")
        .args(args)
        .arg(path)
        .output()
        .map_err(|e| invalid(path, format!("cannot run qemu-img (install qemu-utils): {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("qemu-img failed");
        return Err(invalid(path, format!("not a readable qcow2 image: {}", first.trim())));
    }
    Ok(out.stdout)
}

fn qcow2_layout(path: &Path) -> Result<(u64, Vec<Extent>)> {
    let info: ImageInfo = serde_json::from_slice(&qemu_img(path, &["info", "--output=json", "-f", "qcow2"])?)
        .map_err(|e| invalid(path, format!("unexpected qemu-img info output: {e}")))?;
    if let Some(b) = info.backing_filename {
        return Err(invalid(
            path,
            format!(
                "qcow2 images with a backing file ({b}) are not supported; flatten it with `qemu-img convert` first"
            ),
        ));
    }
    let map: Vec<MapEntry> = serde_json::from_slice(&qemu_img(path, &["map", "--output=json", "-f", "qcow2"])?)
        .map_err(|e| invalid(path, format!("unexpected qemu-img map output: {e}")))?;
    let mut extents = Vec::new();
    for e in map.into_iter().filter(|e| e.data) {
        match (e.offset, e.compressed, e.depth) {
            (Some(host), false, 0) => extents.push(Extent { guest: e.start, len: e.length, host }),
            _ => {
                return Err(invalid(
                    path,
                    "qcow2 images with compressed clusters are not supported; rewrite it with `qemu-img convert -O qcow2` first",
                ));
            }
        }
    }
    Ok((info.virtual_size, extents))
}

fn raw_extents(file: &File, size: u64) -> Vec<Extent> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let data = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(e) if e == rustix::io::Errno::NXIO => break,
            Err(_) => return vec![Extent { guest: 0, len: size, host: 0 }],
        };
        if data >= size {
            break;
        }
        let hole = rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(data)).unwrap_or(size).min(size);
        out.push(Extent { guest: data, len: hole - data, host: data });
        pos = hole;
    }
    out
}

impl DiskImage {
    /// Opens an image or device and maps its allocated data.
    ///
    /// # Errors
    /// `Disk` naming the path: missing, unreadable, or an unsupported or
    /// damaged qcow2.
    pub fn open(path: &Path) -> Result<Self> {
        // opened without blocking: a FIFO (or a device that waits) named as
        // a disk must be refused, not wait forever for a writer
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new().read(true).custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32).open(path)
        }
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => invalid(path, "does not exist"),
            _ => invalid(path, format!("cannot be read: {}", boveda_store::io_in_words(&e))),
        })?;
        let meta = file.metadata().map_err(|e| EngineError::io(path, e))?;
        if !(meta.is_file() || meta.file_type().is_block_device()) {
            return Err(invalid(path, "is neither a disk image file nor a block device"));
        }
        rustix::fs::fcntl_setfl(&file, rustix::fs::OFlags::empty()).map_err(|e| EngineError::io(path, e.into()))?;
        refuse_if_in_use(path, &file, &meta)?;
        let (format, size, extents) = if meta.file_type().is_block_device() {
            let size =
                rustix::fs::seek(&file, rustix::fs::SeekFrom::End(0)).map_err(|e| EngineError::io(path, e.into()))?;
            (DiskFormat::BlockDevice, size, vec![Extent { guest: 0, len: size, host: 0 }])
        } else if meta.is_file() {
            let mut magic = [0u8; 4];
            let is_qcow2 = meta.len() >= 4 && file.read_exact_at(&mut magic, 0).is_ok() && magic == QCOW2_MAGIC;
            if is_qcow2 {
                let (size, extents) = qcow2_layout(path)?;
                if let Some(e) = extents.iter().find(|e| e.host + e.len > meta.len()) {
                    return Err(invalid(
                        path,
                        format!("qcow2 data at offset {} runs past the end of the file (truncated image)", e.host),
                    ));
                }
                (DiskFormat::Qcow2, size, extents)
            } else {
                (DiskFormat::Raw, meta.len(), raw_extents(&file, meta.len()))
            }
        } else {
            return Err(invalid(path, "is neither a disk image file nor a block device"));
        };
        Ok(Self { path: path.to_path_buf(), format, size, extents, meta, file })
    }

    /// Bytes of allocated data (what a backup reads).
    pub fn allocated(&self) -> u64 {
        self.extents.iter().map(|e| e.len).sum()
    }

    /// Fills `buf` with the guest bytes at `guest`: allocated ranges are
    /// read, the rest is zeros. Returns the bytes read from the file.
    ///
    /// # Errors
    /// I/O errors of the source file.
    pub fn read_window(&self, guest: u64, buf: &mut [u8]) -> io::Result<u64> {
        buf.fill(0);
        let end = guest + buf.len() as u64;
        let first = self.extents.partition_point(|e| e.guest + e.len <= guest);
        let mut read = 0;
        for e in self.extents[first..].iter().take_while(|e| e.guest < end) {
            let from = e.guest.max(guest);
            let to = (e.guest + e.len).min(end);
            let dst = &mut buf[(from - guest) as usize..(to - guest) as usize];
            self.file.read_exact_at(dst, e.host + (from - e.guest))?;
            read += to - from;
        }
        Ok(read)
    }

    /// Identity of the image file, to notice that it did not change.
    pub fn unchanged_since(&self, size: u64, mtime_ns: i64, ctime_ns: i64, inode: u64) -> bool {
        self.format != DiskFormat::BlockDevice
            && self.size == size
            && self.meta.ino() == inode
            && self.meta.mtime() * 1_000_000_000 + self.meta.mtime_nsec() == mtime_ns
            && self.meta.ctime() * 1_000_000_000 + self.meta.ctime_nsec() == ctime_ns
    }
}

/// Refuses an image a running QEMU holds open. QEMU (and qemu-nbd, and
/// qemu-img while it writes) takes open-file-description locks on the
/// images it uses; reading one while its VM runs gives a torn image (blocks
/// from different instants), which must not be recorded as a point.
fn refuse_if_in_use(path: &Path, file: &File, meta: &std::fs::Metadata) -> Result<()> {
    if !held_by_another(file).map_err(|e| EngineError::io(path, e))? {
        return Ok(());
    }
    let holder = match holders(meta).first() {
        Some(h) => format!(" ({h})"),
        None => String::new(),
    };
    Err(invalid(
        path,
        format!(
            "is in use by a running VM{holder}: a backup now would read a torn image; shut the VM down first (live backup of running VMs is not available yet)"
        ),
    ))
}

/// Whether another open file description holds a lock on the file: what a
/// write lock over the whole file would conflict with.
fn held_by_another(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` is plain data; all-zero is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: a valid descriptor and a valid `flock` for F_OFD_GETLK.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

/// The processes that have the file open (OFD locks carry no owner), named
/// as "QEMU pid 123, VM web" where the command line says so.
fn holders(meta: &std::fs::Metadata) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for entry in procs.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        let opens = fds
            .flatten()
            .any(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino()));
        if opens {
            out.push(describe_process(&pid));
        }
    }
    out
}

fn describe_process(pid: &str) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let program = args.first().and_then(|a| a.rsplit('/').next()).unwrap_or("?").to_string();
    // `-name web` or `-name guest=web,debug-threads=on`
    let vm = args.iter().position(|a| a == "-name").and_then(|i| args.get(i + 1)).map(|v| {
        let first = v.split(',').next().unwrap_or(v);
        first.strip_prefix("guest=").unwrap_or(first).to_string()
    });
    match vm {
        Some(vm) => format!("{program} pid {pid}, VM {vm}"),
        None => format!("{program} pid {pid}"),
    }
}

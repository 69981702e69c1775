//! Reading file-system metadata into tree nodes, and applying it on restore.

use std::ffi::OsStr;
use std::fs::{self, Metadata};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use boveda_vault::{Node, NodeKind};

pub fn kind_of(meta: &Metadata) -> NodeKind {
    let ft = meta.file_type();
    if ft.is_dir() {
        NodeKind::Dir
    } else if ft.is_symlink() {
        NodeKind::Symlink
    } else if ft.is_fifo() {
        NodeKind::Fifo
    } else if ft.is_char_device() {
        NodeKind::CharDevice
    } else if ft.is_block_device() {
        NodeKind::BlockDevice
    } else if ft.is_socket() {
        NodeKind::Socket
    } else {
        NodeKind::File
    }
}

fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// A node carrying `meta`'s metadata (no content yet).
pub fn node_from_meta(name: Vec<u8>, meta: &Metadata) -> Node {
    let mut n = Node::new(name, kind_of(meta));
    n.mode = meta.mode();
    n.uid = meta.uid();
    n.gid = meta.gid();
    n.size = if n.kind == NodeKind::File { meta.size() } else { 0 };
    n.mtime_ns = ns(meta.mtime(), meta.mtime_nsec());
    n.ctime_ns = ns(meta.ctime(), meta.ctime_nsec());
    n.inode = meta.ino();
    n.device = meta.dev();
    n.nlink = meta.nlink();
    n.rdev = meta.rdev();
    n
}

/// Reads extended attributes; a file system without them yields none.
/// Extended attributes as (name, value) pairs.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

pub fn read_xattrs(path: &Path) -> Result<Xattrs, std::io::Error> {
    use std::os::unix::ffi::OsStrExt;
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        if let Some(value) = xattr::get(path, &name)? {
            out.push((name.as_bytes().to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a file looks untouched since the parent point recorded it.
pub fn unchanged(old: &Node, new: &Node) -> bool {
    old.kind == NodeKind::File
        && new.kind == NodeKind::File
        && old.size == new.size
        && old.mtime_ns == new.mtime_ns
        && old.ctime_ns == new.ctime_ns
        && old.inode == new.inode
        && old.mode == new.mode
        && old.content.iter().map(|p| p.len()).sum::<u64>() == old.size
}

fn restored_times(node: &Node) -> rustix::fs::Timestamps {
    let mtime = rustix::fs::Timespec {
        tv_sec: node.mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: node.mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    rustix::fs::Timestamps { last_access: mtime, last_modification: mtime }
}

/// What creating a file already made right: applying its metadata skips it.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlreadySet {
    /// The new file's owner and group are the node's (or are not ours to set).
    pub owner: bool,
    /// The new file's permissions are the node's.
    pub mode: bool,
}

/// Applies ownership, extended attributes, permissions and times to a
/// restored file or directory through its open handle `fd` (so the entry
/// written is the entry changed, whatever happens to its path); warnings
/// name it as `shown`. Each failure is returned as a warning; the others
/// still apply.
pub fn apply_metadata_fd(fd: BorrowedFd<'_>, shown: &Path, node: &Node, is_root: bool) -> Vec<String> {
    apply_new_metadata_fd(fd, shown, node, is_root, AlreadySet::default())
}

/// [`apply_metadata_fd`] for a file this process just created, skipping
/// what its creation already set (`done`).
pub fn apply_new_metadata_fd(
    fd: BorrowedFd<'_>,
    shown: &Path,
    node: &Node,
    is_root: bool,
    done: AlreadySet,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut warn =
        |what: &str, e: std::io::Error| warnings.push(format!("{}: cannot restore {what}: {e}", shown.display()));
    let ids = (Some(rustix::fs::Uid::from_raw(node.uid)), Some(rustix::fs::Gid::from_raw(node.gid)));
    if is_root
        && !done.owner
        && let Err(e) = rustix::fs::fchown(fd, ids.0, ids.1)
    {
        warn("ownership", e.into());
    }
    for (name, value) in &node.xattrs {
        let Ok(name) = std::ffi::CString::new(name.clone()) else { continue };
        // SAFETY: a valid descriptor, a NUL-terminated name and a buffer of the length given
        let rc = unsafe { libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        if rc != 0 {
            warn("extended attribute", std::io::Error::last_os_error());
        }
    }
    if !done.mode
        && let Err(e) = rustix::fs::fchmod(fd, rustix::fs::Mode::from_raw_mode(node.mode & 0o7777))
    {
        warn("permissions", e.into());
    }
    if let Err(e) = rustix::fs::futimens(fd, &restored_times(node)) {
        warn("times", e.into());
    }
    warnings
}

/// This process's file-creation mask, when the kernel tells it without
/// changing it (`/proc/self/status`, Linux 4.7 and later).
pub fn process_umask() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
    u32::from_str_radix(line.trim(), 8).ok()
}

/// Applies metadata to the symbolic link or special file `name` in the
/// directory held as `dir`: ownership and times without following it;
/// permissions and extended attributes of a special file through a handle
/// opened on it (`O_PATH | O_NOFOLLOW`), never through a path.
pub fn apply_metadata_at(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path, node: &Node, is_root: bool) -> Vec<String> {
    use rustix::fs::{AtFlags, Gid, Uid};
    let mut warnings = Vec::new();
    let mut warn =
        |what: &str, e: std::io::Error| warnings.push(format!("{}: cannot restore {what}: {e}", shown.display()));
    if is_root
        && let Err(e) = rustix::fs::chownat(
            dir,
            name,
            Some(Uid::from_raw(node.uid)),
            Some(Gid::from_raw(node.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
    {
        warn("ownership", e.into());
    }
    if node.kind != NodeKind::Symlink {
        let flags = rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC;
        match rustix::fs::openat(dir, name, flags, rustix::fs::Mode::empty()) {
            Ok(fd) => {
                // /proc/self/fd/N names this inode, not a path that may change
                let via = std::path::PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                for (xname, value) in &node.xattrs {
                    use std::os::unix::ffi::OsStrExt;
                    let (Ok(p), Ok(n)) =
                        (std::ffi::CString::new(via.as_os_str().as_bytes()), std::ffi::CString::new(xname.clone()))
                    else {
                        continue;
                    };
                    // SAFETY: NUL-terminated path and name, a buffer of the length given;
                    // setxattr (not lsetxattr) follows the magic link to the inode
                    let rc = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
                    if rc != 0 {
                        warn("extended attribute", std::io::Error::last_os_error());
                    }
                }
                if let Err(e) = fs::set_permissions(&via, fs::Permissions::from_mode(node.mode & 0o7777)) {
                    warn("permissions", e);
                }
            }
            Err(e) => warn("permissions", e.into()),
        }
    }
    if let Err(e) = rustix::fs::utimensat(dir, name, &restored_times(node), AtFlags::SYMLINK_NOFOLLOW) {
        warn("times", e.into());
    }
    warnings
}

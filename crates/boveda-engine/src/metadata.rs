//! Reading file-system metadata into tree nodes, and applying it on restore.

use std::fs::{self, Metadata};
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

/// Applies ownership, permissions, xattrs and times to a restored entry at
/// `path`; warnings name it as `shown` (its final path when `path` is the
/// temporary name it is written under). Each failure is returned as a
/// warning; the others still apply.
pub fn apply_metadata(path: &Path, shown: &Path, node: &Node, is_root: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut warn =
        |what: &str, e: std::io::Error| warnings.push(format!("{}: cannot restore {what}: {e}", shown.display()));
    if is_root && let Err(e) = std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid)) {
        warn("ownership", e);
    }
    for (name, value) in &node.xattrs {
        use std::os::unix::ffi::OsStrExt;
        if let Err(e) = xattr::set(path, std::ffi::OsStr::from_bytes(name), value) {
            warn("extended attribute", e);
        }
    }
    if node.kind != NodeKind::Symlink
        && let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(node.mode & 0o7777))
    {
        warn("permissions", e);
    }
    let mtime = rustix::fs::Timespec {
        tv_sec: node.mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: node.mtime_ns.rem_euclid(1_000_000_000) as _,
    };
    let times = rustix::fs::Timestamps { last_access: mtime, last_modification: mtime };
    if let Err(e) = rustix::fs::utimensat(rustix::fs::CWD, path, &times, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
        warn("times", e.into());
    }
    warnings
}

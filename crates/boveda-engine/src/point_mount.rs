//! `boveda mount`: recovery points as a read-only FUSE file system.
//!
//! The root holds one directory per point (named by its short id), or the
//! chosen point's own tree. Files are read on demand: each read decrypts
//! only the chunks it covers (the last few are cached), holes read as
//! zeros. A disk or VM point shows its disks as image files (`disk`, `vda`,
//! ...), so tools such as `debugfs` or `qemu-img` can open them in place.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boveda_vault::{ChunkId, ChunkIndex, Node, NodeKind, Vault};
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, LockOwner, MountOption, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, Request,
};

use crate::error::{EngineError, Result};
use crate::point_reader::{ChunkCache, PointFile};

const TTL: Duration = Duration::from_secs(3600);

/// One point shown in the mount: a directory name and its root tree.
pub struct MountedPoint {
    pub name: String,
    pub tree: ChunkId,
    pub time: SystemTime,
}

struct Inode {
    node: Node,
    /// Children by name, once the directory was listed.
    children: Option<Vec<(Vec<u8>, u64)>>,
    /// The content of a file, once it was read.
    file: Option<PointFile>,
}

struct PointFs {
    vault: Vault,
    index: ChunkIndex,
    inodes: Mutex<Vec<Inode>>,
    cache: ChunkCache,
}

fn time_of(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    if ns >= 0 { UNIX_EPOCH + d } else { UNIX_EPOCH - d }
}

fn attr(ino: u64, n: &Node) -> FileAttr {
    let kind = match n.kind {
        NodeKind::Dir => FileType::Directory,
        NodeKind::Symlink => FileType::Symlink,
        NodeKind::Fifo => FileType::NamedPipe,
        NodeKind::CharDevice => FileType::CharDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        NodeKind::Socket => FileType::Socket,
        NodeKind::File => FileType::RegularFile,
    };
    let size = match n.kind {
        NodeKind::Symlink => n.link_target.len() as u64,
        _ => n.size,
    };
    let t = time_of(n.mtime_ns);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind,
        perm: (n.mode & 0o7777) as u16,
        nlink: if n.kind == NodeKind::Dir { 2 } else { 1 },
        uid: n.uid,
        gid: n.gid,
        rdev: n.rdev as u32,
        flags: 0,
        blksize: 4096,
    }
}

impl PointFs {
    /// Lists a directory inode's children, loading its tree once.
    fn children(&self, ino: u64) -> std::result::Result<Vec<(Vec<u8>, u64)>, Errno> {
        let subtree = {
            let inodes = self.inodes.lock().map_err(|_| Errno::EIO)?;
            let entry = inodes.get(ino as usize).ok_or(Errno::ENOENT)?;
            if let Some(c) = &entry.children {
                return Ok(c.clone());
            }
            if entry.node.kind != NodeKind::Dir {
                return Err(Errno::ENOTDIR);
            }
            entry.node.subtree
        };
        let nodes = match subtree {
            Some(id) => self.vault.load_tree(&self.index, &id).map_err(|_| Errno::EIO)?.nodes,
            None => Vec::new(),
        };
        let mut inodes = self.inodes.lock().map_err(|_| Errno::EIO)?;
        if let Some(c) = &inodes[ino as usize].children {
            return Ok(c.clone());
        }
        let mut list = Vec::with_capacity(nodes.len());
        for n in nodes {
            let child = inodes.len() as u64;
            list.push((n.name.clone(), child));
            inodes.push(Inode { node: n, children: None, file: None });
        }
        inodes[ino as usize].children = Some(list.clone());
        Ok(list)
    }

    fn read_at(&self, ino: u64, offset: u64, size: u32) -> std::result::Result<Vec<u8>, Errno> {
        let file = {
            let mut inodes = self.inodes.lock().map_err(|_| Errno::EIO)?;
            let entry = inodes.get_mut(ino as usize).ok_or(Errno::ENOENT)?;
            if entry.node.kind != NodeKind::File {
                return Err(Errno::EISDIR);
            }
            entry.file.get_or_insert_with(|| PointFile::new(&entry.node)).clone()
        };
        file.read_at(&self.vault, &self.index, &self.cache, offset, u64::from(size)).map_err(|_| Errno::EIO)
    }
}

impl Filesystem for PointFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.children(parent.0).and_then(|c| {
            c.into_iter().find(|(n, _)| n.as_slice() == name.as_bytes()).map(|(_, ino)| ino).ok_or(Errno::ENOENT)
        });
        match found.and_then(|ino| {
            let inodes = self.inodes.lock().map_err(|_| Errno::EIO)?;
            Ok(attr(ino, &inodes[ino as usize].node))
        }) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inodes.lock() {
            Ok(inodes) => match inodes.get(ino.0 as usize) {
                Some(e) if ino.0 > 0 => reply.attr(&TTL, &attr(ino.0, &e.node)),
                _ => reply.error(Errno::ENOENT),
            },
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.inodes.lock() {
            Ok(inodes) => match inodes.get(ino.0 as usize) {
                Some(e) if e.node.kind == NodeKind::Symlink => reply.data(&e.node.link_target),
                _ => reply.error(Errno::EINVAL),
            },
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_at(ino.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let children = match self.children(ino.0) {
            Ok(c) => c,
            Err(e) => return reply.error(e),
        };
        let kinds: Vec<FileType> = match self.inodes.lock() {
            Ok(inodes) => children.iter().map(|(_, c)| attr(*c, &inodes[*c as usize].node).kind).collect(),
            Err(_) => return reply.error(Errno::EIO),
        };
        let mut entries =
            vec![(ino.0, FileType::Directory, b".".to_vec()), (ino.0, FileType::Directory, b"..".to_vec())];
        entries.extend(children.into_iter().zip(kinds).map(|((name, c), k)| (c, k, name)));
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, OsStr::from_bytes(&name)) {
                break;
            }
        }
        reply.ok();
    }
}

fn dir_node(name: &[u8], subtree: Option<ChunkId>, time: SystemTime) -> Node {
    let mut n = Node::new(name.to_vec(), NodeKind::Dir);
    n.mode = 0o040555;
    n.subtree = subtree;
    n.mtime_ns = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
    n
}

/// Mounts points read-only at `dir` and serves until it is unmounted
/// (`fusermount -u DIR`, or `umount DIR`). With one point and `flat`, its
/// tree is the root; otherwise each point is a directory.
///
/// # Errors
/// `Io` when the mount fails (no FUSE, not permitted, busy folder).
pub fn mount_points(vault: Vault, points: Vec<MountedPoint>, dir: &Path, flat: bool) -> Result<()> {
    let index = vault.load_index()?;
    // inode 0 is unused; 1 is the root
    let mut inodes = vec![Inode { node: dir_node(b"", None, UNIX_EPOCH), children: Some(Vec::new()), file: None }];
    if flat && points.len() == 1 {
        inodes.push(Inode { node: dir_node(b"", Some(points[0].tree), points[0].time), children: None, file: None });
    } else {
        let mut children = Vec::new();
        let mut root = Inode { node: dir_node(b"", None, SystemTime::now()), children: None, file: None };
        let mut rest = Vec::new();
        for (i, p) in points.iter().enumerate() {
            children.push((p.name.as_bytes().to_vec(), (i + 2) as u64));
            rest.push(Inode { node: dir_node(p.name.as_bytes(), Some(p.tree), p.time), children: None, file: None });
        }
        root.children = Some(children);
        inodes.push(root);
        inodes.extend(rest);
    }
    let fs = PointFs { vault, index, inodes: Mutex::new(inodes), cache: ChunkCache::default() };
    let mut config = Config::default();
    config.mount_options.extend([MountOption::RO, MountOption::FSName("boveda".into())]);
    fuser::mount(fs, dir, &config).map_err(|e| EngineError::io(dir, e))?;
    Ok(())
}

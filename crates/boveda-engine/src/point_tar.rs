//! A point (or some of its paths) as a tar stream, and a tar stream
//! written into a folder. The server streams a point to a registered host
//! that restores it (it cannot read the vault itself, docs/FLEET.md), and
//! the host writes it below its target the way every restore writes:
//! relative to directory handles it holds, never following a link
//! (`beneath`), so a link in the archive or one made meanwhile cannot lead
//! a write out of the target.
//!
//! Carried: directories, regular files (holes read as zeros), symbolic
//! links, with mode, owner and modification time. Not carried: extended
//! attributes, hard links (each name gets its own copy), device nodes,
//! FIFOs and sockets (skipped, and counted).

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use boveda_vault::{ChunkId, ChunkIndex, Node, NodeKind, Piece, Vault};
use std::os::fd::AsFd;

use rustix::fs::{Mode, OFlags, Timestamps};
use serde::{Deserialize, Serialize};

use crate::beneath::{Beneath, clear_at, split};
use crate::error::{EngineError, Result};
use crate::point_path::split_point_path;

/// What went into, or came out of, an archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarStats {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    /// Entries of kinds a tar of a point does not carry.
    pub skipped: u64,
}

/// A file's content, read chunk by chunk as the archive takes it.
struct Content<'a> {
    vault: &'a Vault,
    index: &'a ChunkIndex,
    pieces: std::vec::IntoIter<Piece>,
    current: Vec<u8>,
    at: usize,
}

impl Read for Content<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            self.at = 0;
            self.current = match self.pieces.next() {
                None => return Ok(0),
                Some(Piece::Hole { len }) => vec![0; len as usize],
                Some(Piece::Data { id, .. }) => {
                    self.vault.read_blob(self.index, &id).map_err(|e| io::Error::other(e.to_string()))?
                }
            };
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn tar_err(e: io::Error) -> EngineError {
    EngineError::Io { path: PathBuf::from("(archive)"), source: e }
}

struct Writer<'a, W: Write> {
    vault: &'a Vault,
    index: &'a ChunkIndex,
    tar: tar::Builder<W>,
    stats: TarStats,
}

impl<W: Write> Writer<'_, W> {
    fn header(node: &Node, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(node.mode & 0o7777);
        h.set_uid(u64::from(node.uid));
        h.set_gid(u64::from(node.gid));
        h.set_mtime(u64::try_from(node.mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0));
        h.set_size(size);
        h
    }

    /// A PAX header before the entry, with its modification time to the
    /// nanosecond (a tar header holds whole seconds).
    fn pax_mtime(&mut self, mtime_ns: i64) -> Result<()> {
        let kv = format!("mtime={}.{:09}\n", mtime_ns.div_euclid(1_000_000_000), mtime_ns.rem_euclid(1_000_000_000));
        // a record says its own length, digits included
        let mut len = kv.len() + 2;
        let record = loop {
            let r = format!("{len} {kv}");
            if r.len() == len {
                break r;
            }
            len = r.len();
        };
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(record.len() as u64);
        self.tar.append_data(&mut h, "PaxHeader", record.as_bytes()).map_err(tar_err)
    }

    fn node(&mut self, path: &Path, node: &Node) -> Result<()> {
        if matches!(node.kind, NodeKind::Dir | NodeKind::File | NodeKind::Symlink) {
            self.pax_mtime(node.mtime_ns)?;
        }
        match node.kind {
            NodeKind::Dir => {
                let mut h = Self::header(node, tar::EntryType::Directory, 0);
                self.tar.append_data(&mut h, path, io::empty()).map_err(tar_err)?;
                self.stats.dirs += 1;
                if let Some(sub) = &node.subtree {
                    let tree = self.vault.load_tree(self.index, sub)?;
                    for child in &tree.nodes {
                        self.node(&path.join(OsStr::from_bytes(&child.name)), child)?;
                    }
                }
            }
            NodeKind::File => {
                let mut h = Self::header(node, tar::EntryType::Regular, node.size);
                let content = Content {
                    vault: self.vault,
                    index: self.index,
                    pieces: node.content.clone().into_iter(),
                    current: Vec::new(),
                    at: 0,
                };
                self.tar.append_data(&mut h, path, content.take(node.size)).map_err(tar_err)?;
                self.stats.files += 1;
                self.stats.bytes += node.size;
            }
            NodeKind::Symlink => {
                let mut h = Self::header(node, tar::EntryType::Symlink, 0);
                let target = Path::new(OsStr::from_bytes(&node.link_target));
                self.tar.append_link(&mut h, path, target).map_err(tar_err)?;
                self.stats.links += 1;
            }
            _ => self.stats.skipped += 1,
        }
        Ok(())
    }
}

/// Writes the point whose root tree is `root` (or only `paths` of it,
/// each with everything below) into `out` as a tar archive; entries are
/// named by their path in the point, without the leading `/`.
///
/// # Errors
/// `NotInPoint` for a path the point lacks; the vault's errors reading a
/// tree or chunk; `out`'s write errors.
pub fn write_point_tar<W: Write>(
    vault: &Vault,
    index: &ChunkIndex,
    root: &ChunkId,
    paths: &[String],
    out: W,
) -> Result<TarStats> {
    let mut w = Writer { vault, index, tar: tar::Builder::new(out), stats: TarStats::default() };
    let top = vault.load_tree(index, root)?;
    if paths.is_empty() {
        for node in &top.nodes {
            w.node(Path::new(OsStr::from_bytes(&node.name)), node)?;
        }
    }
    for p in paths {
        let parts = split_point_path(p)?;
        let mut tree = top.clone();
        let mut rel = PathBuf::new();
        for (i, part) in parts.iter().enumerate() {
            let node = tree.find(part).cloned().ok_or_else(|| EngineError::NotInPoint(p.clone()))?;
            rel.push(OsStr::from_bytes(part));
            if i + 1 == parts.len() {
                w.node(&rel, &node)?;
            } else if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
                tree = vault.load_tree(index, &sub)?;
            } else {
                return Err(EngineError::NotInPoint(p.clone()));
            }
        }
    }
    w.tar.into_inner().map_err(tar_err)?.flush().map_err(tar_err)?;
    Ok(w.stats)
}

/// What writing an archive into a folder did: counts, and the entries it
/// could not write (each with why).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Unpacked {
    pub stats: TarStats,
    pub errors: Vec<String>,
}

/// Writes a tar archive below `target` (made if missing): directories,
/// files (replacing what is there) and symbolic links, never through a
/// link, every write relative to a held directory handle. An entry that
/// cannot be written is named in the result and the rest go on; `told`
/// hears of every file written (its size).
///
/// # Errors
/// The target cannot be opened or made; the archive is not one.
pub fn unpack_tar(input: impl Read, target: &Path, told: &dyn Fn(u64)) -> Result<Unpacked> {
    let root = Beneath::create_target(target).map_err(|e| EngineError::Io { path: target.to_path_buf(), source: e })?;
    let mut archive = tar::Archive::new(input);
    let mut out = Unpacked::default();
    let mut dirs: Vec<(PathBuf, u32, i64)> = Vec::new();
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let rel = PathBuf::from(OsStr::from_bytes(&entry.path_bytes()));
        if rel.is_absolute() || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
            out.errors.push(format!("{}: not a plain relative path, skipped", rel.display()));
            continue;
        }
        let pax_mtime = entry.pax_extensions().ok().flatten().and_then(|mut pax| {
            pax.find_map(|e| {
                e.ok().filter(|e| e.key_bytes() == b"mtime").and_then(|e| e.value().ok().and_then(parse_time))
            })
        });
        let h = entry.header();
        let whole = h.mtime().map_or(0, |t| i64::try_from(t).unwrap_or(0)) * 1_000_000_000;
        let (mode, mtime) = (h.mode().unwrap_or(0o644), pax_mtime.unwrap_or(whole));
        let (uid, gid) = (h.uid().ok(), h.gid().ok());
        let written = match h.entry_type() {
            tar::EntryType::Directory => root.mkdir_all(&rel).map(|_| {
                dirs.push((rel.clone(), mode, mtime));
                out.stats.dirs += 1;
            }),
            tar::EntryType::Regular => write_file(&root, &rel, &mut entry, mode, mtime, (uid, gid)).map(|n| {
                out.stats.files += 1;
                out.stats.bytes += n;
                told(n);
            }),
            tar::EntryType::Symlink => match entry.link_name_bytes() {
                Some(link) => write_symlink(&root, &rel, &link, mtime).map(|()| out.stats.links += 1),
                None => Err(io::Error::other("a link without a target")),
            },
            _ => {
                out.stats.skipped += 1;
                Ok(())
            }
        };
        if let Err(e) = written {
            out.errors.push(format!("{}: {e}", root.show(&rel).display()));
        }
    }
    // directories last, deepest first: their files are written by now
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (rel, mode, mtime) in dirs {
        let done = root.open_dir(&rel).and_then(|fd| {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode & 0o7777))?;
            rustix::fs::futimens(&fd, &times(mtime)).map_err(io::Error::from)
        });
        if let Err(e) = done {
            out.errors.push(format!("{}: {e}", root.show(&rel).display()));
        }
    }
    Ok(out)
}

/// `secs.nanos` (a PAX time) in nanoseconds.
fn parse_time(text: &str) -> Option<i64> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, "0"));
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    secs.parse::<i64>().ok()?.checked_mul(1_000_000_000)?.checked_add(digits.parse::<i64>().ok()?)
}

fn times(mtime_ns: i64) -> Timestamps {
    let t = rustix::fs::Timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
    };
    Timestamps { last_access: t, last_modification: t }
}

fn write_file(
    root: &Beneath,
    rel: &Path,
    data: &mut impl Read,
    mode: u32,
    mtime: i64,
    owner: (Option<u64>, Option<u64>),
) -> io::Result<u64> {
    let (parent, name) = split(rel)?;
    let dir = root.mkdir_all(parent)?;
    clear_at(dir.as_fd(), name)?;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&dir, name, flags, Mode::from_raw_mode(0o600))?;
    let mut file = std::fs::File::from(fd);
    let n = io::copy(data, &mut file)?;
    if let (Some(uid), Some(gid)) = owner
        && rustix::process::geteuid().is_root()
    {
        let (uid, gid) = (u32::try_from(uid).ok(), u32::try_from(gid).ok());
        let ids = uid.zip(gid).map(|(u, g)| (rustix::fs::Uid::from_raw(u), rustix::fs::Gid::from_raw(g)));
        if let Some((u, g)) = ids {
            rustix::fs::fchown(&file, Some(u), Some(g))?;
        }
    }
    rustix::fs::fchmod(&file, Mode::from_raw_mode(mode & 0o7777))?;
    rustix::fs::futimens(&file, &times(mtime))?;
    file.sync_all()?;
    Ok(n)
}

fn write_symlink(root: &Beneath, rel: &Path, target: &[u8], mtime: i64) -> io::Result<()> {
    let (parent, name) = split(rel)?;
    let dir = root.mkdir_all(parent)?;
    clear_at(dir.as_fd(), name)?;
    rustix::fs::symlinkat(OsStr::from_bytes(target), &dir, name)?;
    rustix::fs::utimensat(&dir, name, &times(mtime), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

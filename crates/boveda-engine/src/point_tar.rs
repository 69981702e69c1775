//! A point (or some of its paths) as a tar stream, and a tar stream
//! written into a folder. The server streams a point to a registered host
//! that restores it (it cannot read the vault itself, docs/FLEET.md), and
//! the host writes it below its target the way every restore writes:
//! relative to directory handles it holds, never following a link
//! (`beneath`), so a link in the archive or one made meanwhile cannot lead
//! a write out of the target.
//!
//! Carried: directories, regular files (holes read as zeros), symbolic
//! links, hard links (a file's second name is a link entry to its first),
//! FIFOs and device nodes (made by root only, as any restore makes them),
//! with mode, owner, modification time to the nanosecond and extended
//! attributes (PAX records `mtime` and `LIBARCHIVE.xattr.NAME`, as
//! libarchive writes them; GNU tar's `SCHILY.xattr.NAME` is read too). Not carried: sockets (their programs make them again;
//! skipped, and counted).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use boveda_vault::{ChunkId, ChunkIndex, Node, NodeKind, Piece, Vault};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use serde::{Deserialize, Serialize};

use crate::beneath::{Beneath, clear_at, split};
use crate::error::{EngineError, Result};
use crate::metadata::{apply_metadata_at, apply_metadata_fd};
use crate::point_path::split_point_path;

/// What went into, or came out of, an archive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TarStats {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    /// Second and further names of a file (hard links).
    #[serde(default)]
    pub hard_links: u64,
    /// FIFOs and device nodes.
    #[serde(default)]
    pub specials: u64,
    /// Entries of kinds a tar of a point does not carry (sockets).
    pub skipped: u64,
}

/// The PAX key prefix of an extended attribute as boveda writes it (and
/// libarchive): the name percent-encoded, the value in base64, so any
/// bytes of either survive (a PAX reader may end a value at a newline).
const XATTR_PREFIX: &str = "LIBARCHIVE.xattr.";
const XATTR_KEY: &[u8] = XATTR_PREFIX.as_bytes();
/// GNU tar's and star's prefix (the name and value as they are): read.
const SCHILY_XATTR_KEY: &[u8] = b"SCHILY.xattr.";

/// What a name keeps unencoded in a PAX key.
const NAME_SET: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'.').remove(b'_').remove(b'-');

fn base64_engine() -> base64::engine::GeneralPurpose {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let config = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    GeneralPurpose::new(&base64::alphabet::STANDARD, config)
}

/// An extended attribute from a PAX record, if it is one.
fn xattr_of(key: &[u8], value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    use base64::Engine;
    if let Some(name) = key.strip_prefix(XATTR_KEY) {
        let name: Vec<u8> = percent_encoding::percent_decode(name).collect();
        return Some((name, base64_engine().decode(value).ok()?));
    }
    key.strip_prefix(SCHILY_XATTR_KEY).map(|name| (name.to_vec(), value.to_vec()))
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

/// One PAX record, `LEN KEY=VALUE\n`, its length counting its own digits.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while body + len.to_string().len() != len {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

struct Writer<'a, W: Write> {
    vault: &'a Vault,
    index: &'a ChunkIndex,
    tar: tar::Builder<W>,
    stats: TarStats,
    /// The first name written of each file that has more than one.
    first_names: HashMap<(u64, u64), PathBuf>,
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

    /// A PAX header before the entry: its modification time to the
    /// nanosecond (a tar header holds whole seconds) and its extended
    /// attributes.
    fn pax(&mut self, node: &Node) -> Result<()> {
        use base64::Engine;
        let mut records = Vec::new();
        let secs = (node.mtime_ns.div_euclid(1_000_000_000), node.mtime_ns.rem_euclid(1_000_000_000));
        pax_record(&mut records, b"mtime", format!("{}.{:09}", secs.0, secs.1).as_bytes());
        for (name, value) in &node.xattrs {
            let key = format!("{XATTR_PREFIX}{}", percent_encoding::percent_encode(name, NAME_SET));
            pax_record(&mut records, key.as_bytes(), base64_engine().encode(value).as_bytes());
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_mode(0o644);
        h.set_size(records.len() as u64);
        self.tar.append_data(&mut h, "PaxHeader", records.as_slice()).map_err(tar_err)
    }

    fn node(&mut self, path: &Path, node: &Node) -> Result<()> {
        if node.kind == NodeKind::File && node.nlink > 1 {
            if let Some(first) = self.first_names.get(&(node.device, node.inode)).cloned() {
                let mut h = Self::header(node, tar::EntryType::Link, 0);
                self.tar.append_link(&mut h, path, &first).map_err(tar_err)?;
                self.stats.hard_links += 1;
                return Ok(());
            }
            self.first_names.insert((node.device, node.inode), path.to_path_buf());
        }
        if node.kind != NodeKind::Socket {
            self.pax(node)?;
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
            NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice => {
                let kind = match node.kind {
                    NodeKind::Fifo => tar::EntryType::Fifo,
                    NodeKind::CharDevice => tar::EntryType::Char,
                    _ => tar::EntryType::Block,
                };
                let mut h = Self::header(node, kind, 0);
                h.set_device_major(rustix::fs::major(node.rdev)).map_err(tar_err)?;
                h.set_device_minor(rustix::fs::minor(node.rdev)).map_err(tar_err)?;
                self.tar.append_data(&mut h, path, io::empty()).map_err(tar_err)?;
                self.stats.specials += 1;
            }
            NodeKind::Socket => self.stats.skipped += 1,
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
    let mut w =
        Writer { vault, index, tar: tar::Builder::new(out), stats: TarStats::default(), first_names: HashMap::new() };
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
/// could not write, or not write fully (each with why).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Unpacked {
    pub stats: TarStats,
    pub errors: Vec<String>,
}

fn plain_relative(path: &Path) -> bool {
    !path.as_os_str().is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}

/// An entry's metadata as a node, for the restore's own metadata code.
fn entry_node(entry: &mut tar::Entry<'_, impl Read>, kind: NodeKind) -> Node {
    let mut node = Node::new(Vec::new(), kind);
    let pax: Vec<(Vec<u8>, Vec<u8>)> = entry
        .pax_extensions()
        .ok()
        .flatten()
        .map(|records| {
            records.filter_map(|r| r.ok().map(|r| (r.key_bytes().to_vec(), r.value_bytes().to_vec()))).collect()
        })
        .unwrap_or_default();
    let h = entry.header();
    let whole = h.mtime().map_or(0, |t| i64::try_from(t).unwrap_or(0)).saturating_mul(1_000_000_000);
    node.mtime_ns = pax
        .iter()
        .find(|(k, _)| k == b"mtime")
        .and_then(|(_, v)| std::str::from_utf8(v).ok().and_then(parse_time))
        .unwrap_or(whole);
    node.mode = h.mode().unwrap_or(0o644);
    node.uid = h.uid().ok().and_then(|u| u32::try_from(u).ok()).unwrap_or(0);
    node.gid = h.gid().ok().and_then(|g| u32::try_from(g).ok()).unwrap_or(0);
    let (major, minor) = (h.device_major().ok().flatten(), h.device_minor().ok().flatten());
    node.rdev = rustix::fs::makedev(major.unwrap_or(0), minor.unwrap_or(0));
    node.xattrs = pax.iter().filter_map(|(k, v)| xattr_of(k, v)).collect();
    node
}

/// Writes a tar archive below `target` (made if missing): directories,
/// files (replacing what is there), symbolic and hard links, FIFOs and
/// device nodes, never through a link, every write relative to a held
/// directory handle, with owners (as root), modes, times and extended
/// attributes. An entry that cannot be written is named in the result and
/// the rest go on; `told` hears of every file written (its size).
///
/// # Errors
/// The target cannot be opened or made; the archive is not one.
pub fn unpack_tar(input: impl Read, target: &Path, told: &dyn Fn(u64)) -> Result<Unpacked> {
    let root = Beneath::create_target(target).map_err(|e| EngineError::Io { path: target.to_path_buf(), source: e })?;
    let is_root = rustix::process::geteuid().is_root();
    let mut archive = tar::Archive::new(input);
    let mut out = Unpacked::default();
    let mut dirs: Vec<(PathBuf, Node)> = Vec::new();
    for entry in archive.entries().map_err(tar_err)? {
        let mut entry = entry.map_err(tar_err)?;
        let rel = PathBuf::from(OsStr::from_bytes(&entry.path_bytes()));
        if !plain_relative(&rel) {
            out.errors.push(format!("{}: not a plain relative path, skipped", rel.display()));
            continue;
        }
        let shown = root.show(&rel);
        let kind = match entry.header().entry_type() {
            tar::EntryType::Directory => NodeKind::Dir,
            tar::EntryType::Regular => NodeKind::File,
            tar::EntryType::Symlink => NodeKind::Symlink,
            tar::EntryType::Fifo => NodeKind::Fifo,
            tar::EntryType::Char => NodeKind::CharDevice,
            tar::EntryType::Block => NodeKind::BlockDevice,
            tar::EntryType::Link => {
                let to = entry.link_name_bytes().map(|l| PathBuf::from(OsStr::from_bytes(&l)));
                match to
                    .ok_or_else(|| io::Error::other("a hard link without a target"))
                    .and_then(|to| hard_link(&root, &rel, &to))
                {
                    Ok(()) => out.stats.hard_links += 1,
                    Err(e) => out.errors.push(format!("{}: {e}", shown.display())),
                }
                continue;
            }
            _ => {
                out.stats.skipped += 1;
                continue;
            }
        };
        let node = entry_node(&mut entry, kind);
        let written = match kind {
            NodeKind::Dir => root.mkdir_all(&rel).map(|_| {
                dirs.push((rel.clone(), node));
                out.stats.dirs += 1;
            }),
            NodeKind::File => write_file(&root, &rel, &mut entry, &node, is_root).map(|(n, warnings)| {
                out.errors.extend(warnings);
                out.stats.files += 1;
                out.stats.bytes += n;
                told(n);
            }),
            NodeKind::Symlink => match entry.link_name_bytes() {
                Some(link) => write_other(&root, &rel, &node, Some(&link), is_root).map(|warnings| {
                    out.errors.extend(warnings);
                    out.stats.links += 1;
                }),
                None => Err(io::Error::other("a link without a target")),
            },
            _ => write_other(&root, &rel, &node, None, is_root).map(|warnings| {
                out.errors.extend(warnings);
                out.stats.specials += 1;
            }),
        };
        if let Err(e) = written {
            out.errors.push(format!("{}: {e}", shown.display()));
        }
    }
    // directories last, deepest first: their files are written by now
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (rel, node) in dirs {
        match root.open_dir(&rel) {
            Ok(fd) => out.errors.extend(apply_metadata_fd(fd.as_fd(), &root.show(&rel), &node, is_root)),
            Err(e) => out.errors.push(format!("{}: {e}", root.show(&rel).display())),
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

/// A new file `rel` with `data`, then its metadata through its handle;
/// returns its size and what of its metadata could not be set.
fn write_file(
    root: &Beneath,
    rel: &Path,
    data: &mut impl Read,
    node: &Node,
    is_root: bool,
) -> io::Result<(u64, Vec<String>)> {
    let (parent, name) = split(rel)?;
    let dir = root.mkdir_all(parent)?;
    clear_at(dir.as_fd(), name)?;
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(&dir, name, flags, Mode::from_raw_mode(0o600))?;
    let mut file = std::fs::File::from(fd);
    let n = io::copy(data, &mut file)?;
    let warnings = apply_metadata_fd(file.as_fd(), &root.show(rel), node, is_root);
    file.sync_all()?;
    Ok((n, warnings))
}

/// A symbolic link to `link`, or (none) a FIFO or device node, at `rel`,
/// then its metadata, never through a path that may change.
fn write_other(root: &Beneath, rel: &Path, node: &Node, link: Option<&[u8]>, is_root: bool) -> io::Result<Vec<String>> {
    let (parent, name) = split(rel)?;
    let dir = root.mkdir_all(parent)?;
    clear_at(dir.as_fd(), name)?;
    match link {
        Some(target) => rustix::fs::symlinkat(OsStr::from_bytes(target), &dir, name)?,
        None => {
            let kind = match node.kind {
                NodeKind::Fifo => FileType::Fifo,
                NodeKind::CharDevice => FileType::CharacterDevice,
                _ => FileType::BlockDevice,
            };
            rustix::fs::mknodat(&dir, name, kind, Mode::from_raw_mode(node.mode & 0o7777), node.rdev)?;
        }
    }
    Ok(apply_metadata_at(dir.as_fd(), name, &root.show(rel), node, is_root))
}

/// `rel` as a second name of the file at `to` (both below the target): the
/// link is made between held directory handles, and never follows a link
/// at `to` (a symbolic link there is itself linked, inside the target).
fn hard_link(root: &Beneath, rel: &Path, to: &Path) -> io::Result<()> {
    if !plain_relative(to) {
        return Err(io::Error::other(format!("a hard link to {}, outside the target", to.display())));
    }
    let (to_parent, to_name) = split(to)?;
    let from = root.open_dir(to_parent)?;
    let (parent, name) = split(rel)?;
    let dir = root.mkdir_all(parent)?;
    clear_at(dir.as_fd(), name)?;
    rustix::fs::linkat(&from, to_name, &dir, name, AtFlags::empty())?;
    Ok(())
}

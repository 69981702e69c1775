//! Restoring file trees.
//!
//! 1. Plan: walk the point's trees, choosing the selected paths.
//! 2. Directories are created top-down; every existing path component is
//!    checked to be a real directory, never followed through a symlink.
//! 3. Files are created at full size (holes stay holes), then filled by
//!    reading packs in parallel: each pack's needed blobs are fetched in a
//!    few ranged reads and written at their offsets.
//! 4. Hard links, symlinks and special files, then metadata (files first,
//!    directories deepest first so their times stick).
//!
//! Files are opened with `O_NOFOLLOW` and tree names are validated when
//! decoded, so nothing is ever written outside the target. A file whose size
//! and mtime already match is skipped: re-running an interrupted restore
//! completes it (a file's mtime is set only after all its data is written).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use boveda_vault::{ChunkId, ChunkIndex, Node, NodeKind, Piece, Vault};
use rayon::prelude::*;

use crate::chunk_fetch::{ChunkSink, fetch_chunks};
use crate::error::{EngineError, Result};
use crate::metadata::apply_metadata;
use crate::point_path::split_point_path;
use crate::progress::RestoreProgress;

pub struct RestoreOptions<'a> {
    pub target: PathBuf,
    /// Paths inside the point; empty restores everything.
    pub paths: Vec<String>,
    pub cancel: Option<&'a AtomicBool>,
}

#[derive(Debug, Default, Clone)]
pub struct RestoreOutcome {
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    pub bytes_written: u64,
    /// Files already complete from an earlier run, left as they were.
    pub files_skipped: u64,
    pub warnings: Vec<String>,
    /// Files that could not be restored, each with the reason.
    pub errors: Vec<String>,
}

#[derive(Default)]
struct Plan {
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<(PathBuf, Node)>,
    links: Vec<(PathBuf, Node)>,
    specials: Vec<(PathBuf, Node)>,
}

struct Planner<'a> {
    vault: &'a Vault,
    index: &'a ChunkIndex,
    plan: Plan,
}

impl Planner<'_> {
    /// `sel`: None = everything below; Some = only the listed sub-paths.
    fn dir(&mut self, tree: &ChunkId, rel: &Path, sel: Option<&[Vec<Vec<u8>>]>) -> Result<()> {
        let tree = self.vault.load_tree(self.index, tree)?;
        for node in tree.nodes {
            let child_sel: Option<Vec<Vec<Vec<u8>>>> = match sel {
                None => None,
                Some(sel) => {
                    let matching: Vec<&Vec<Vec<u8>>> = sel.iter().filter(|p| p[0] == node.name).collect();
                    if matching.is_empty() {
                        continue;
                    }
                    if matching.iter().any(|p| p.len() == 1) {
                        None
                    } else {
                        Some(matching.iter().map(|p| p[1..].to_vec()).collect())
                    }
                }
            };
            let path = rel.join(OsStr::from_bytes(&node.name));
            self.node(node, path, child_sel)?;
        }
        Ok(())
    }

    fn node(&mut self, node: Node, path: PathBuf, sel: Option<Vec<Vec<Vec<u8>>>>) -> Result<()> {
        match node.kind {
            NodeKind::Dir => {
                let sub = node.subtree;
                self.plan.dirs.push((path.clone(), node));
                if let Some(sub) = sub {
                    self.dir(&sub, &path, sel.as_deref())?;
                }
            }
            _ if sel.is_some() => {} // a selector goes deeper than this non-directory
            NodeKind::File => self.plan.files.push((path, node)),
            NodeKind::Symlink => self.plan.links.push((path, node)),
            _ => self.plan.specials.push((path, node)),
        }
        Ok(())
    }
}

fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Makes `path` a real directory, replacing a file or symlink there.
fn ensure_dir(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => {
            fs::remove_file(path)?;
            fs::create_dir(path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(path),
        Err(e) => Err(e),
    }
}

/// Removes whatever non-directory is at `path`, so a new entry can be made.
fn clear_path(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(io::Error::other("a directory is in the way")),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn create_sized(path: &Path, size: u64) -> io::Result<()> {
    let open = || OpenOptions::new().write(true).create(true).truncate(true).custom_flags(nofollow()).open(path);
    let file = match open() {
        Ok(f) => f,
        Err(_) => {
            clear_path(path)?;
            open()?
        }
    };
    file.set_len(size)
}

fn is_complete(path: &Path, node: &Node) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| {
        m.is_file()
            && m.len() == node.size
            && m.mtime().saturating_mul(1_000_000_000).saturating_add(m.mtime_nsec()) == node.mtime_ns
    })
}

/// Restores a point's tree (or chosen paths of it) below `opts.target`.
///
/// # Errors
/// An unusable target, a path not in the point, cancellation, or a damaged
/// tree. Damaged data chunks are reported per file in `errors`.
pub fn restore_files(
    vault: &Vault,
    index: &ChunkIndex,
    root: &ChunkId,
    opts: &RestoreOptions<'_>,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    let selectors: Vec<Vec<Vec<u8>>> = opts.paths.iter().map(|p| split_point_path(p)).collect::<Result<_>>()?;
    for (sel, raw) in selectors.iter().zip(&opts.paths) {
        if sel.is_empty() {
            continue;
        }
        crate::point_path::list_point_path(vault, index, root, raw)?;
    }
    let sel =
        if selectors.iter().any(|s| s.is_empty()) || selectors.is_empty() { None } else { Some(selectors.as_slice()) };
    let mut planner = Planner { vault, index, plan: Plan::default() };
    planner.dir(root, Path::new(""), sel)?;
    let plan = planner.plan;

    let target = &opts.target;
    fs::create_dir_all(target).map_err(|e| EngineError::Target { path: target.clone(), reason: e.to_string() })?;
    if !fs::metadata(target).is_ok_and(|m| m.is_dir()) {
        return Err(EngineError::Target { path: target.clone(), reason: "is not a directory".into() });
    }
    let mut out = RestoreOutcome::default();
    let is_root = rustix::process::geteuid().is_root();

    for (rel, _) in &plan.dirs {
        let p = target.join(rel);
        ensure_dir(&p).map_err(|e| EngineError::io(&p, e))?;
        out.dirs += 1;
    }

    // Hard links: the first path of each inode is written, the others linked to it.
    let mut leaders: HashMap<(u64, u64), usize> = HashMap::new();
    let mut hard_links: Vec<(usize, usize)> = Vec::new();
    let mut to_write: Vec<usize> = Vec::new();
    let mut candidates: Vec<usize> = Vec::new();
    for (i, (_, node)) in plan.files.iter().enumerate() {
        if node.nlink > 1 {
            if let Some(&leader) = leaders.get(&(node.device, node.inode)) {
                hard_links.push((leader, i));
                continue;
            }
            leaders.insert((node.device, node.inode), i);
        }
        candidates.push(i);
    }
    let complete: Vec<bool> =
        candidates.par_iter().map(|&i| is_complete(&target.join(&plan.files[i].0), &plan.files[i].1)).collect();
    for (&i, done) in candidates.iter().zip(complete) {
        if done {
            out.files_skipped += 1;
        } else {
            to_write.push(i);
        }
    }
    let total_bytes: u64 = to_write.iter().map(|&i| plan.files[i].1.size).sum();
    progress.planned(plan.files.len() as u64, total_bytes);

    let failed: Mutex<HashMap<usize, String>> = Mutex::new(HashMap::new());
    let fail = |i: usize, why: String| {
        if let Ok(mut f) = failed.lock() {
            f.entry(i).or_insert(why);
        }
    };
    // where each needed chunk goes, grouped by pack
    // Files are created in parallel, one directory per task: two threads
    // creating entries in one directory contend on its lock (measured: three
    // times the system time), threads in different directories do not.
    let mut by_dir: HashMap<&Path, Vec<usize>> = HashMap::new();
    for &i in &to_write {
        by_dir.entry(plan.files[i].0.parent().unwrap_or(Path::new(""))).or_default().push(i);
    }
    let created: Vec<(usize, bool)> = by_dir
        .into_values()
        .collect::<Vec<_>>()
        .par_iter()
        .flat_map_iter(|group| {
            group.iter().map(|&i| {
                let (rel, node) = &plan.files[i];
                match create_sized(&target.join(rel), node.size) {
                    Ok(()) => (i, true),
                    Err(e) => {
                        fail(i, format!("cannot create: {e}"));
                        (i, false)
                    }
                }
            })
        })
        .collect();
    let mut targets: HashMap<ChunkId, Vec<(usize, u64)>> = HashMap::new();
    for (i, ok) in created {
        if !ok {
            continue;
        }
        let node = &plan.files[i].1;
        let mut offset = 0u64;
        for piece in &node.content {
            if let Piece::Data { id, .. } = piece {
                targets.entry(*id).or_default().push((i, offset));
            }
            offset += piece.len();
        }
    }
    let written = AtomicU64::new(0);
    let sink = FileSink { target, plan: &plan, written: &written, progress, failed: &failed };
    fetch_chunks(vault, index, &targets, opts.cancel, &sink)?;
    out.bytes_written = written.into_inner();
    let failed = failed.into_inner().unwrap_or_default();

    for (leader, member) in hard_links {
        let (lp, mp) = (target.join(&plan.files[leader].0), target.join(&plan.files[member].0));
        if failed.contains_key(&leader) {
            continue;
        }
        if let Err(e) = clear_path(&mp).and_then(|()| fs::hard_link(&lp, &mp)) {
            out.warnings.push(format!("{}: cannot create hard link: {e}", mp.display()));
        }
    }
    for (rel, node) in &plan.links {
        let p = target.join(rel);
        let res = clear_path(&p).and_then(|()| std::os::unix::fs::symlink(OsStr::from_bytes(&node.link_target), &p));
        match res {
            Ok(()) => out.other += 1,
            Err(e) => out.warnings.push(format!("{}: cannot create symlink: {e}", p.display())),
        }
    }
    for (rel, node) in &plan.specials {
        let p = target.join(rel);
        match make_special(&p, node) {
            Ok(true) => out.other += 1,
            Ok(false) => {}
            Err(e) => out.warnings.push(format!("{}: cannot create special file: {e}", p.display())),
        }
    }

    for (i, (rel, _)) in plan.files.iter().enumerate() {
        if let Some(why) = failed.get(&i) {
            out.errors.push(format!("{}: {why}", target.join(rel).display()));
        }
    }
    let file_warnings: Vec<Vec<String>> = plan
        .files
        .par_iter()
        .enumerate()
        .filter(|(i, _)| !failed.contains_key(i))
        .map(|(_, (rel, node))| apply_metadata(&target.join(rel), node, is_root))
        .collect();
    out.files += (plan.files.len() - failed.len()) as u64;
    out.warnings.extend(file_warnings.into_iter().flatten());
    for (rel, node) in plan.links.iter().chain(&plan.specials) {
        let p = target.join(rel);
        if fs::symlink_metadata(&p).is_ok() {
            out.warnings.extend(apply_metadata(&p, node, is_root));
        }
    }
    for (rel, node) in plan.dirs.iter().rev() {
        out.warnings.extend(apply_metadata(&target.join(rel), node, is_root));
    }
    out.errors.sort();
    Ok(out)
}

/// Writes fetched chunks into the restored files at their offsets.
struct FileSink<'a> {
    target: &'a Path,
    plan: &'a Plan,
    written: &'a AtomicU64,
    progress: &'a dyn RestoreProgress,
    failed: &'a Mutex<HashMap<usize, String>>,
}

impl ChunkSink<(usize, u64)> for FileSink<'_> {
    /// Files opened during one merged read.
    type State = HashMap<usize, File>;

    fn deliver(&self, open: &mut Self::State, &(i, at): &(usize, u64), plain: &[u8]) {
        let res = match open.entry(i) {
            std::collections::hash_map::Entry::Occupied(f) => f.get().write_all_at(plain, at),
            std::collections::hash_map::Entry::Vacant(v) => OpenOptions::new()
                .write(true)
                .custom_flags(nofollow())
                .open(self.target.join(&self.plan.files[i].0))
                .and_then(|f| v.insert(f).write_all_at(plain, at)),
        };
        match res {
            Ok(()) => {
                self.written.fetch_add(plain.len() as u64, Ordering::Relaxed);
                self.progress.bytes_written(plain.len() as u64);
            }
            Err(e) => self.fail(&(i, at), format!("cannot write: {e}")),
        }
    }

    fn fail(&self, &(i, _): &(usize, u64), why: String) {
        if let Ok(mut f) = self.failed.lock() {
            f.entry(i).or_insert(why);
        }
    }
}

fn make_special(path: &Path, node: &Node) -> io::Result<bool> {
    use rustix::fs::{CWD, FileType, Mode, mknodat};
    let ft = match node.kind {
        NodeKind::Fifo => FileType::Fifo,
        NodeKind::CharDevice => FileType::CharacterDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        _ => return Ok(false), // sockets are recreated by their programs
    };
    clear_path(path)?;
    mknodat(CWD, path, ft, Mode::from_raw_mode(node.mode & 0o7777), node.rdev as _).map_err(io::Error::from)?;
    Ok(true)
}

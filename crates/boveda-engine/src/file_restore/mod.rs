//! Restoring file trees.
//!
//! 1. Plan: walk the point's trees, choosing the selected paths.
//! 2. Directories are created top-down, each relative to the handle of its
//!    parent (see [`crate::beneath`]): a symbolic link on the way, made
//!    before or during the restore, is never followed; the paths it would
//!    have led to are named as not restored.
//! 3. Packs are read in parallel: each pack's needed blobs are fetched in
//!    a few ranged reads into a buffer each reading thread reuses, opened
//!    where they lie and written at their offsets. A file is created by the
//!    first delivery of its data; a file whose data comes in one piece (most
//!    files) is created, written, given its metadata and linked into place
//!    through one handle.
//! 4. Hard links, symlinks and special files, then metadata (files first,
//!    directories deepest first so their times stick).
//!
//! Every file is written as a new inode, without a name (`O_TMPFILE`) when
//! one handle writes all of it and the file system allows, else under a
//! temporary name in its directory, and appears at its path only once its
//! data and metadata are written (linked there, or renamed over what was
//! there): a restore never writes into an inode it did not create, and a
//! restored path holds either the point's whole file or what was there
//! before. Creating a file with its final permissions (when nothing is
//! changed after) and owner (when it is this process's) saves the calls
//! that would set them again. Tree names are validated when decoded, so
//! nothing is written outside the target. Re-running an interrupted restore
//! keeps a file already at its path only when its content is verified equal
//! to the point (chunk by chunk, against the keyed ids) and it has no other
//! hard link; everything else is written again.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use boveda_vault::{ChunkId, ChunkIndex, Node, NodeKind, Piece, Vault};
use rayon::prelude::*;

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::beneath::{Beneath, DirHandles, clear_at, make_dir_in, split};
use crate::chunk_fetch::fetch_chunks;
use crate::error::{EngineError, Result};
use crate::metadata::{apply_metadata_at, apply_metadata_fd, process_umask};
use crate::point_path::split_point_path;
use crate::progress::RestoreProgress;

mod sink;

use sink::{Creation, FileSink, FileState};

pub struct RestoreOptions<'a> {
    pub target: PathBuf,
    /// The folder `target` must stay inside (a server's restore root):
    /// the way down to `target` is then made without following links too.
    pub within: Option<PathBuf>,
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
    /// How many files failed for each reason (one full disk fails
    /// thousands of files for one reason: say it once, with the count).
    pub failure_reasons: std::collections::BTreeMap<String, u64>,
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

/// Prefix of the temporary names files are written under before they are
/// renamed into place. A re-run removes its own leftovers by name.
pub const RESTORE_TEMP_PREFIX: &str = ".boveda-restore-";

/// The temporary name a file is written under: in the same directory (so
/// the rename is atomic), of fixed length (so long names still fit), and the
/// same on every run (so a re-run finds what an interrupted one left).
fn temp_name(vault: &Vault, rel: &Path) -> OsString {
    let tag = vault.key().chunk_id(rel.as_os_str().as_bytes());
    OsString::from(format!("{RESTORE_TEMP_PREFIX}{}", &tag.to_hex()[..24]))
}

fn parent_of(rel: &Path) -> &Path {
    rel.parent().unwrap_or(Path::new(""))
}

/// Whether the file at `rel` already is exactly the point's file: a plain
/// file with no other link (so nothing outside the target shares it), of
/// the right size, whose every chunk hashes to the id the point records and
/// whose holes read as zeros. Only such a file is left in place by a re-run.
fn is_complete(vault: &Vault, root: &Beneath, rel: &Path, node: &Node) -> bool {
    let Ok(fd) = root.open_at(rel, OFlags::RDONLY, 0) else { return false };
    let file = File::from(fd);
    let Ok(meta) = file.metadata() else { return false };
    if !meta.is_file() || meta.nlink() != 1 || meta.len() != node.size {
        return false;
    }
    let mut buf = Vec::new();
    let mut at = 0u64;
    for piece in &node.content {
        let len = piece.len();
        let Ok(n) = usize::try_from(len) else { return false };
        buf.resize(n.min(1 << 20), 0);
        match piece {
            Piece::Data { id, .. } => {
                buf.resize(n, 0);
                if file.read_exact_at(&mut buf, at).is_err() || vault.key().chunk_id(&buf) != *id {
                    return false;
                }
            }
            Piece::Hole { .. } => {
                let mut done = 0u64;
                while done < len {
                    let step = (len - done).min(buf.len() as u64) as usize;
                    if file.read_exact_at(&mut buf[..step], at + done).is_err() || buf[..step].iter().any(|&b| b != 0) {
                        return false;
                    }
                    done += step as u64;
                }
            }
        }
        at += len;
    }
    at == node.size
}

/// Restores a point's tree (or chosen paths of it) below `opts.target`.
///
/// Every file is written under a temporary name as a new inode and renamed
/// over its final path only once all its data and metadata are in place, so
/// a restore never writes into a file it did not create (a hard link to a
/// file outside the target is replaced, never written through) and a
/// restored path is either complete or absent. A file already at its path
/// is kept only when [`is_complete`] proves its content equal to the point.
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
    let plan = plan_restore(vault, index, root, &opts.paths)?;
    let root = Beneath::open(&opts.target, opts.within.as_deref())
        .map_err(|e| EngineError::Target { path: opts.target.clone(), reason: e.to_string() })?;
    let root = &root;
    let mut out = RestoreOutcome::default();
    let is_root = rustix::process::geteuid().is_root();
    let handles = DirHandles::new(root);
    let handles = &handles;
    let MadeDirs { fresh, made: made_dirs, failed: failed_dirs } = make_dirs(&plan, handles, root, &mut out);
    let (candidates, hard_links) = hard_link_leaders(&plan);
    // only a directory that was there before can hold a complete file
    let complete: Vec<bool> = candidates
        .par_iter()
        .map(|&i| {
            let rel = &plan.files[i].0;
            !fresh.contains(parent_of(rel)) && is_complete(vault, root, rel, &plan.files[i].1)
        })
        .collect();
    let mut to_write: Vec<usize> = Vec::new();
    let mut kept: Vec<usize> = Vec::new();
    for (&i, done) in candidates.iter().zip(complete) {
        if done {
            out.files_skipped += 1;
            kept.push(i);
        } else {
            to_write.push(i);
        }
    }
    let total_bytes: u64 = to_write.iter().map(|&i| plan.files[i].1.size).sum();
    progress.planned(plan.files.len() as u64, total_bytes);

    let failed: Mutex<HashMap<usize, String>> = Mutex::new(HashMap::new());
    let states: Vec<FileState> = plan
        .files
        .iter()
        .map(|(_, node)| FileState {
            created: OnceLock::new(),
            unnamed: AtomicBool::new(false),
            remaining: AtomicUsize::new(node.content.iter().filter(|p| matches!(p, Piece::Data { .. })).count()),
            done: AtomicBool::new(false),
        })
        .collect();
    let temps: Vec<OsString> = plan.files.iter().map(|(rel, _)| temp_name(vault, rel)).collect();
    let creations = creations(&plan, handles, is_root);
    let sink = FileSink {
        root,
        handles,
        plan: &plan,
        temps: &temps,
        creations: &creations,
        states: &states,
        written: AtomicU64::new(0),
        progress,
        failed: &failed,
        is_root,
        no_tmpfile: AtomicBool::new(false),
        link_by_proc: AtomicBool::new(false),
        warnings: Mutex::new(Vec::new()),
    };

    // A file is created by the first delivery of its data, which writes it
    // through the handle that created it (a small file: create, write,
    // times, rename). Files without data are made here, one directory per
    // task (two threads creating entries in one directory contend on its
    // lock; packs, read in parallel, mostly hold different directories).
    let (targets, empty) = chunk_uses(&plan, &to_write);
    empty.par_iter().for_each(|group| {
        for &i in group {
            if let Ok(file) = sink.create(i) {
                sink.finish(i, Some(file)); // empty or all holes: nothing to fetch
            }
        }
    });
    let fetched = fetch_chunks(vault, index, &targets, opts.cancel, &sink);
    // whatever was not renamed into place (failed, or cancelled) leaves no
    // temporary file behind
    for &i in &to_write {
        if !states[i].done.load(Ordering::Relaxed)
            && let Ok(d) = handles.get(parent_of(&plan.files[i].0))
        {
            let _ = rustix::fs::unlinkat(&*d, temps[i].as_os_str(), AtFlags::empty());
        }
    }
    fetched?;
    out.bytes_written = sink.written.load(Ordering::Relaxed);
    out.warnings.extend(sink.warnings.into_inner().unwrap_or_default());
    let failed = failed.into_inner().unwrap_or_default();

    make_other_entries(&plan, handles, root, &hard_links, &failed, &mut out);

    name_failures(&plan, root, &failed, failed_dirs, &mut out);
    final_metadata(&plan, handles, root, &kept, &made_dirs, is_root, &mut out);
    out.files += (plan.files.len() - failed.len()) as u64;
    out.errors.sort();
    Ok(out)
}

/// The uses of each chunk: (file, offset).
type ChunkTargets = HashMap<ChunkId, Vec<(usize, u64)>>;

/// Where each chunk goes (file, offset) among the files to write, and the
/// files without data (empty, or all holes), grouped by directory.
fn chunk_uses(plan: &Plan, to_write: &[usize]) -> (ChunkTargets, Vec<Vec<usize>>) {
    let mut by_dir: HashMap<&Path, Vec<usize>> = HashMap::new();
    for &i in to_write {
        by_dir.entry(parent_of(&plan.files[i].0)).or_default().push(i);
    }
    let mut targets = ChunkTargets::new();
    let mut empty: Vec<Vec<usize>> = Vec::new();
    for group in by_dir.values() {
        let mut none = Vec::new();
        for &i in group {
            let node = &plan.files[i].1;
            let mut offset = 0u64;
            for piece in &node.content {
                if let Piece::Data { id, .. } = piece {
                    targets.entry(*id).or_default().push((i, offset));
                }
                offset += piece.len();
            }
            if !node.content.iter().any(|p| matches!(p, Piece::Data { .. })) {
                none.push(i);
            }
        }
        if !none.is_empty() {
            empty.push(none);
        }
    }
    (targets, empty)
}

/// Every file and directory that could not be restored, named with its
/// reason, and counted by reason.
fn name_failures(
    plan: &Plan,
    root: &Beneath,
    failed: &HashMap<usize, String>,
    failed_dirs: Vec<(PathBuf, String)>,
    out: &mut RestoreOutcome,
) {
    for (i, (rel, _)) in plan.files.iter().enumerate() {
        if let Some(why) = failed.get(&i) {
            out.errors.push(format!("{}: {why}", root.show(rel).display()));
            *out.failure_reasons.entry(why.clone()).or_default() += 1;
        }
    }
    for (rel, why) in failed_dirs {
        out.errors.push(format!("{}: directory not restored: {why}", root.show(&rel).display()));
        *out.failure_reasons.entry("directory not restored".into()).or_default() += 1;
    }
}

/// The plan of a restore: the point's entries below the selected paths
/// (every path named must be in the point).
fn plan_restore(vault: &Vault, index: &ChunkIndex, root: &ChunkId, paths: &[String]) -> Result<Plan> {
    let selectors: Vec<Vec<Vec<u8>>> = paths.iter().map(|p| split_point_path(p)).collect::<Result<_>>()?;
    for (sel, raw) in selectors.iter().zip(paths) {
        if sel.is_empty() {
            continue;
        }
        crate::point_path::list_point_path(vault, index, root, raw)?;
    }
    let sel =
        if selectors.iter().any(|s| s.is_empty()) || selectors.is_empty() { None } else { Some(selectors.as_slice()) };
    let mut planner = Planner { vault, index, plan: Plan::default() };
    planner.dir(root, Path::new(""), sel)?;
    Ok(planner.plan)
}

/// The directories a restore made or found.
struct MadeDirs<'p> {
    /// Made now: they hold nothing from an earlier run.
    fresh: HashSet<&'p Path>,
    /// Each directory as made (device, inode), to tell at the end whether
    /// its path still leads to it.
    made: HashMap<&'p Path, (u64, u64)>,
    /// Directories that could not be made, with the reason.
    failed: Vec<(PathBuf, String)>,
}

/// Makes the plan's directories top-down, each in its parent's handle: a
/// link put in the way fails that directory (and so what is below it),
/// never followed.
fn make_dirs<'p>(plan: &'p Plan, handles: &DirHandles<'_>, root: &Beneath, out: &mut RestoreOutcome) -> MadeDirs<'p> {
    let mut dirs = MadeDirs { fresh: HashSet::new(), made: HashMap::new(), failed: Vec::new() };
    for (rel, _) in &plan.dirs {
        let made = split(rel).and_then(|(parent, name)| {
            let pfd = handles.get(parent)?;
            make_dir_in(pfd.as_fd(), name, &root.show(rel))
        });
        match made.and_then(|new| Ok((new, handles.get(rel)?))) {
            Ok((new, fd)) => {
                out.dirs += 1;
                if new {
                    dirs.fresh.insert(rel.as_path());
                }
                if let Ok(st) = rustix::fs::fstat(&*fd) {
                    dirs.made.insert(rel.as_path(), (st.st_dev, st.st_ino));
                }
            }
            Err(e) => dirs.failed.push((rel.clone(), e.to_string())),
        }
    }
    dirs
}

/// Hard links: the first path of each inode is written (the files to
/// write, by index), the others linked to it (leader, member).
fn hard_link_leaders(plan: &Plan) -> (Vec<usize>, Vec<(usize, usize)>) {
    let mut leaders: HashMap<(u64, u64), usize> = HashMap::new();
    let mut hard_links: Vec<(usize, usize)> = Vec::new();
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
    (candidates, hard_links)
}

/// How each file is created: the owner and group a file created now in
/// each directory gets (a set-group-ID directory gives its own group).
fn creations(plan: &Plan, handles: &DirHandles<'_>, is_root: bool) -> Vec<Creation> {
    let umask = process_umask();
    let (euid, egid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
    let mut new_owner: HashMap<&Path, Option<(u32, u32)>> = HashMap::new();
    plan.files
        .iter()
        .map(|(rel, node)| {
            let owner = *new_owner.entry(parent_of(rel)).or_insert_with(|| {
                let st = handles.get(parent_of(rel)).ok().and_then(|fd| rustix::fs::fstat(&*fd).ok())?;
                let setgid = st.st_mode & 0o2000 != 0;
                Some((euid, if setgid { st.st_gid } else { egid }))
            });
            Creation::of(node, owner, is_root, umask)
        })
        .collect()
}

/// Hard links, symbolic links and special files, each made in its
/// directory's handle (what is in the way is replaced, never followed).
fn make_other_entries(
    plan: &Plan,
    handles: &DirHandles<'_>,
    root: &Beneath,
    hard_links: &[(usize, usize)],
    failed: &HashMap<usize, String>,
    out: &mut RestoreOutcome,
) {
    for &(leader, member) in hard_links {
        let mp = root.show(&plan.files[member].0);
        if failed.contains_key(&leader) {
            fail_member(out, &mp);
            continue;
        }
        let linked = (|| -> io::Result<()> {
            let (lrel, mrel) = (&plan.files[leader].0, &plan.files[member].0);
            let (ldir, lname) = split(lrel)?;
            let (mdir, mname) = split(mrel)?;
            let (lfd, mfd) = (handles.get(ldir)?, handles.get(mdir)?);
            clear_at(mfd.as_fd(), mname)?;
            Ok(rustix::fs::linkat(&*lfd, lname, &*mfd, mname, AtFlags::empty())?)
        })();
        if let Err(e) = linked {
            out.warnings.push(format!("{}: cannot create hard link: {e}", mp.display()));
        }
    }
    for (rel, node) in &plan.links {
        let made = (|| -> io::Result<()> {
            let (dir, name) = split(rel)?;
            let dfd = handles.get(dir)?;
            clear_at(dfd.as_fd(), name)?;
            Ok(rustix::fs::symlinkat(OsStr::from_bytes(&node.link_target), &*dfd, name)?)
        })();
        match made {
            Ok(()) => out.other += 1,
            Err(e) => out.warnings.push(format!("{}: cannot create symlink: {e}", root.show(rel).display())),
        }
    }
    for (rel, node) in &plan.specials {
        match make_special(handles, rel, node) {
            Ok(true) => out.other += 1,
            Ok(false) => {}
            Err(e) => out.warnings.push(format!("{}: cannot create special file: {e}", root.show(rel).display())),
        }
    }
}

/// Metadata last: files kept from an earlier run (written files got theirs
/// before they appeared), links and special files, then directories,
/// deepest first so their times stick.
fn final_metadata(
    plan: &Plan,
    handles: &DirHandles<'_>,
    root: &Beneath,
    kept: &[usize],
    made_dirs: &HashMap<&Path, (u64, u64)>,
    is_root: bool,
    out: &mut RestoreOutcome,
) {
    // files kept from an earlier run get their metadata again; written
    // files got theirs before the rename
    let kept_warnings: Vec<Vec<String>> = kept
        .par_iter()
        .map(|&i| {
            let (rel, node) = &plan.files[i];
            match root.open_at(rel, OFlags::RDONLY, 0) {
                Ok(fd) => apply_metadata_fd(fd.as_fd(), &root.show(rel), node, is_root),
                Err(e) => vec![format!("cannot restore metadata: {e}")],
            }
        })
        .collect();
    out.warnings.extend(kept_warnings.into_iter().flatten());
    for (rel, node) in plan.links.iter().chain(&plan.specials) {
        let Ok((dir, name)) = split(rel) else { continue };
        if let Ok(dfd) = handles.get(dir)
            && rustix::fs::statat(&*dfd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok()
        {
            out.warnings.extend(apply_metadata_at(dfd.as_fd(), name, &root.show(rel), node, is_root));
        }
    }
    // Each directory gets its metadata through its path, checked to lead to
    // the directory the restore made: one another process moved or replaced
    // meanwhile (by a link, say) is named; what was restored into it went
    // into the directory the restore held, never through a link.
    for (rel, node) in plan.dirs.iter().rev() {
        let Some(&(dev, ino)) = made_dirs.get(rel.as_path()) else { continue };
        let replaced = || {
            let why = "directory moved or replaced by another process during the restore; nothing was written through what took its place".to_string();
            (format!("{}: {why}", root.show(rel).display()), why)
        };
        match root.open_dir(rel) {
            Ok(fd) if rustix::fs::fstat(&fd).is_ok_and(|st| (st.st_dev, st.st_ino) == (dev, ino)) => {
                out.warnings.extend(apply_metadata_fd(fd.as_fd(), &root.show(rel), node, is_root));
            }
            _ => {
                let (line, why) = replaced();
                out.errors.push(line);
                *out.failure_reasons.entry(why).or_default() += 1;
            }
        }
    }
}

/// A hard link whose leader could not be restored is not restored either.
fn fail_member(out: &mut RestoreOutcome, path: &Path) {
    let why = "not restored: the file it is a hard link of could not be restored".to_string();
    out.errors.push(format!("{}: {why}", path.display()));
    *out.failure_reasons.entry(why).or_default() += 1;
    out.files = out.files.saturating_sub(1);
}

fn make_special(handles: &DirHandles<'_>, rel: &Path, node: &Node) -> io::Result<bool> {
    use rustix::fs::{FileType, mknodat};
    let ft = match node.kind {
        NodeKind::Fifo => FileType::Fifo,
        NodeKind::CharDevice => FileType::CharacterDevice,
        NodeKind::BlockDevice => FileType::BlockDevice,
        _ => return Ok(false), // sockets are recreated by their programs
    };
    let (dir, name) = split(rel)?;
    let dfd = handles.get(dir)?;
    clear_at(dfd.as_fd(), name)?;
    mknodat(&*dfd, name, ft, Mode::from_raw_mode(node.mode & 0o7777), node.rdev as _).map_err(io::Error::from)?;
    Ok(true)
}

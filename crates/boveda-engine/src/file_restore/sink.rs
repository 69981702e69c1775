//! Writing restored files: how each is created (`Creation`), and the
//! sink that writes fetched chunks into them and makes each appear at its
//! path once complete (`FileSink`).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use boveda_vault::{Node, Piece};
use rustix::fs::{AtFlags, Mode, OFlags};

use crate::beneath::{Beneath, DirHandles, clear_at, split};
use crate::chunk_fetch::ChunkSink;
use crate::metadata::{AlreadySet, apply_new_metadata_fd};
use crate::progress::RestoreProgress;

use super::{Plan, parent_of};

/// How one file is created: with which permissions, what that already
/// set right, and whether it must be extended past its last data.
#[derive(Clone, Copy)]
pub(super) struct Creation {
    pub(super) mode: u32,
    pub(super) set: AlreadySet,
    /// Its last piece is a hole: the file is truncated up to its size.
    pub(super) trailing_hole: bool,
    /// Its data comes in one delivery at most, so one handle creates,
    /// writes and links it: it is made without a name (`O_TMPFILE`).
    pub(super) unnamed: bool,
}

impl Creation {
    /// `owner`: the owner and group a file created now in its directory
    /// gets. Permissions are given at creation only when nothing is written
    /// or changed after the one handle that creates the file closes (one
    /// delivery of data at most, no extended attributes, no owner to set).
    pub(super) fn of(node: &Node, owner: Option<(u32, u32)>, is_root: bool, umask: Option<u32>) -> Self {
        let data = node.content.iter().filter(|p| matches!(p, Piece::Data { .. })).count();
        let owner_set = !is_root || owner == Some((node.uid, node.gid));
        let plain = node.mode & 0o777;
        let mode_set =
            owner_set && data <= 1 && node.xattrs.is_empty() && umask.is_some_and(|u| node.mode & 0o7777 == plain & !u);
        Creation {
            mode: if mode_set { plain } else { 0o600 },
            set: AlreadySet { owner: owner_set, mode: mode_set },
            trailing_hole: node.size > 0 && !matches!(node.content.last(), Some(Piece::Data { .. })),
            unnamed: data <= 1,
        }
    }
}

/// Creates a new, empty file named `name` in `dir`, extended to `size`
/// when it ends in a hole: always a new inode (`O_EXCL`), never a file that
/// was already there.
pub(super) fn create_temp(dir: BorrowedFd<'_>, name: &OsStr, how: Creation, size: u64) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let open = || rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(how.mode));
    let fd = match open() {
        Ok(f) => f,
        Err(rustix::io::Errno::EXIST) => {
            clear_at(dir, name)?; // left by an interrupted run
            open()?
        }
        Err(e) => return Err(e.into()),
    };
    if how.trailing_hole {
        rustix::fs::ftruncate(&fd, size)?; // holes stay holes
    }
    Ok(File::from(fd))
}

/// Per file being written: whether it was created (by the first delivery
/// of its data), how many chunk uses are still to come, and whether it has
/// been renamed into place.
pub(super) struct FileState {
    pub(super) created: OnceLock<bool>,
    /// Created without a name: linked into place, not renamed.
    pub(super) unnamed: AtomicBool,
    pub(super) remaining: AtomicUsize,
    pub(super) done: AtomicBool,
}

/// How many files one merged read keeps open at most: small files are
/// closed as soon as they are complete, and a read over many large files
/// reopens the ones it dropped. Keeps restore within any open-file limit.
pub(super) const MAX_OPEN_PER_READ: usize = 16;

/// Writes fetched chunks into the restored files at their offsets, and
/// renames each file into place when its last chunk is written.
pub(super) struct FileSink<'a> {
    pub(super) root: &'a Beneath,
    pub(super) handles: &'a DirHandles<'a>,
    pub(super) plan: &'a Plan,
    pub(super) temps: &'a [OsString],
    pub(super) creations: &'a [Creation],
    pub(super) states: &'a [FileState],
    pub(super) written: AtomicU64,
    pub(super) progress: &'a dyn RestoreProgress,
    pub(super) failed: &'a Mutex<HashMap<usize, String>>,
    pub(super) is_root: bool,
    /// The file system refused `O_TMPFILE`: files are created under names.
    pub(super) no_tmpfile: AtomicBool,
    /// Linking by handle needs a capability this process lacks: files are
    /// linked through `/proc/self/fd`.
    pub(super) link_by_proc: AtomicBool,
    pub(super) warnings: Mutex<Vec<String>>,
}

impl FileSink<'_> {
    pub(super) fn has_failed(&self, i: usize) -> bool {
        self.failed.lock().is_ok_and(|f| f.contains_key(&i))
    }

    /// All data of file `i` is written (into `file`, when still open):
    /// metadata onto the new inode through its handle, then the link or
    /// rename, in its directory's handle, that makes it appear at its path.
    pub(super) fn finish(&self, i: usize, file: Option<File>) {
        if self.has_failed(i) {
            return;
        }
        let (rel, node) = &self.plan.files[i];
        let dest = self.root.show(rel);
        let done = (|| -> io::Result<Vec<String>> {
            let (dir, name) = split(rel)?;
            let dfd = self.handles.get(dir)?;
            let file = match file {
                Some(f) => f,
                None => File::from(rustix::fs::openat(
                    &*dfd,
                    self.temps[i].as_os_str(),
                    OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?),
            };
            let warnings = apply_new_metadata_fd(file.as_fd(), &dest, node, self.is_root, self.creations[i].set);
            let temp = self.temps[i].as_os_str();
            if self.states[i].unnamed.load(Ordering::Relaxed) {
                match self.link(&file, dfd.as_fd(), name) {
                    Ok(()) => return Ok(warnings),
                    // something is at the path: the new file gets its
                    // temporary name and replaces it by a rename
                    Err(rustix::io::Errno::EXIST) => {
                        clear_at(dfd.as_fd(), temp)?;
                        self.link(&file, dfd.as_fd(), temp)?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            drop(file);
            match rustix::fs::renameat(&*dfd, temp, &*dfd, name) {
                Err(rustix::io::Errno::ISDIR) => Err(io::Error::other("a directory is in the way")),
                other => other.map_err(io::Error::from),
            }?;
            Ok(warnings)
        })();
        match done {
            Ok(warnings) => {
                self.states[i].done.store(true, Ordering::Relaxed);
                if !warnings.is_empty()
                    && let Ok(mut w) = self.warnings.lock()
                {
                    w.extend(warnings);
                }
            }
            Err(e) => self.fail(&(i, 0), format!("cannot move into place: {}", boveda_store::io_in_words(&e))),
        }
    }

    /// Gives the unnamed file `file` the name `name` in `dir`; never
    /// replaces what is there.
    pub(super) fn link(&self, file: &File, dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<()> {
        if !self.link_by_proc.load(Ordering::Relaxed) {
            match rustix::fs::linkat(file, "", dir, name, AtFlags::EMPTY_PATH) {
                Err(rustix::io::Errno::NOENT) => self.link_by_proc.store(true, Ordering::Relaxed),
                other => return other,
            }
        }
        let by = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(file));
        rustix::fs::linkat(rustix::fs::CWD, by.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)
    }

    /// Creates file `i`, without a name when it is written by one handle
    /// and the file system allows, else under its temporary name; a failure
    /// fails the file.
    pub(super) fn create(&self, i: usize) -> io::Result<File> {
        let how = self.creations[i];
        let size = self.plan.files[i].1.size;
        let made = self.handles.get(parent_of(&self.plan.files[i].0)).and_then(|dir| {
            if how.unnamed && !self.no_tmpfile.load(Ordering::Relaxed) {
                let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
                match rustix::fs::openat(&*dir, ".", flags, Mode::from_raw_mode(how.mode)) {
                    Ok(fd) => {
                        if how.trailing_hole {
                            rustix::fs::ftruncate(&fd, size)?;
                        }
                        self.states[i].unnamed.store(true, Ordering::Relaxed);
                        return Ok(File::from(fd));
                    }
                    Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::ISDIR | rustix::io::Errno::INVAL) => {
                        self.no_tmpfile.store(true, Ordering::Relaxed);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            create_temp(dir.as_fd(), &self.temps[i], how, size)
        });
        if let Err(e) = &made {
            self.fail(&(i, 0), format!("cannot create: {}", boveda_store::io_in_words(e)));
        }
        made
    }

    pub(super) fn open_temp(&self, i: usize) -> io::Result<File> {
        let dir = self.handles.get(parent_of(&self.plan.files[i].0))?;
        let flags = OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        Ok(File::from(rustix::fs::openat(&*dir, self.temps[i].as_os_str(), flags, Mode::empty())?))
    }
}

impl ChunkSink<(usize, u64)> for FileSink<'_> {
    /// Files opened during one merged read, at most [`MAX_OPEN_PER_READ`].
    type State = HashMap<usize, File>;

    fn deliver(&self, open: &mut Self::State, &(i, at): &(usize, u64), plain: &[u8]) {
        if !open.contains_key(&i) && open.len() >= MAX_OPEN_PER_READ {
            open.clear();
        }
        // the first delivery creates the file (others wait for it) and
        // keeps the handle; later ones reopen it by its temporary name
        let mut made = None;
        let created = *self.states[i].created.get_or_init(|| match self.create(i) {
            Ok(f) => {
                made = Some(f);
                true
            }
            Err(_) => false,
        });
        if created {
            let res = match open.entry(i) {
                std::collections::hash_map::Entry::Occupied(f) => f.get().write_all_at(plain, at),
                std::collections::hash_map::Entry::Vacant(v) => match made {
                    Some(f) => v.insert(f).write_all_at(plain, at),
                    None => self.open_temp(i).and_then(|f| v.insert(f).write_all_at(plain, at)),
                },
            };
            match res {
                Ok(()) => {
                    self.written.fetch_add(plain.len() as u64, Ordering::Relaxed);
                    self.progress.bytes_written(plain.len() as u64);
                }
                Err(e) => self.fail(&(i, at), format!("cannot write: {}", boveda_store::io_in_words(&e))),
            }
        }
        if self.states[i].remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let file = open.remove(&i); // closed after its metadata, before the rename
            self.finish(i, file);
        }
    }

    fn fail(&self, &(i, _): &(usize, u64), why: String) {
        if let Ok(mut f) = self.failed.lock() {
            f.entry(i).or_insert(why);
        }
    }
}

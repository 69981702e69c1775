//! Writing below a directory held open.
//!
//! A restore is checked once, when it is asked for, but it writes for
//! minutes while other processes may change the tree: replace a directory
//! it created by a symbolic link, or restore a symbolic link into a folder
//! another restore writes through. So a restore never writes by path from
//! the root of the file system. It holds its target directory open and
//! resolves every path below it with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`: a symbolic link anywhere on the way, or a `..`,
//! fails the one operation (named, skipped) instead of being followed. On a
//! kernel without `openat2` the same is done one component at a time with
//! `O_NOFOLLOW`. Entries are created relative to the handle of their
//! directory (`mkdirat`, `openat(O_EXCL)`, `renameat`, `linkat`, ...).
//!
//! Programs that take a path (`qemu-img`, `debugfs`) are given one through
//! `/proc/PID/fd/N`, which names the held directory itself, whatever
//! happens to its path meanwhile.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// A directory a restore writes below, held open.
#[derive(Debug)]
pub struct Beneath {
    fd: OwnedFd,
    shown: PathBuf,
}

fn dir_flags() -> OFlags {
    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// The error of an operation that met something it must not follow.
fn explain(e: Errno, shown: &Path) -> io::Error {
    match e {
        Errno::LOOP => io::Error::other(format!(
            "{}: a symbolic link is in the way (changed during the restore?); not followed",
            shown.display()
        )),
        Errno::XDEV => io::Error::other(format!("{}: leads outside the restore target; not followed", shown.display())),
        other => io::Error::other(format!("{}: {}", shown.display(), io::Error::from(other))),
    }
}

/// The names of a relative path, refusing `..`, `/` and the like.
fn names(rel: &Path) -> io::Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: only plain names may lead below the restore target", rel.display()),
                ));
            }
        }
    }
    Ok(out)
}

/// Creates the directory `name` in `dir` unless a directory is there; a
/// file or symbolic link in its place is removed first with `replace`
/// (never followed), else refused as a link in the way. A new directory is
/// made with `mode`.
/// Whether the directory was made now (it holds nothing yet).
fn ensure_dir_at(dir: BorrowedFd<'_>, name: &OsStr, replace: bool, mode: u32) -> Result<bool, Errno> {
    // made first, looked at only when something is there: a restore into a
    // new folder makes each directory with one call
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode)) {
        Ok(()) => return Ok(true),
        Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory => Ok(false),
        Ok(_) if !replace => Err(Errno::LOOP),
        Ok(_) => {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode)).map(|()| true)
        }
        Err(Errno::NOENT) => Ok(false), // removed meanwhile: met when it is used
        Err(e) => Err(e),
    }
}

impl Beneath {
    /// Holds the directory `target`, creating it (and its parents) when
    /// missing. The path is the caller's own choice and is followed as the
    /// system follows it; everything below it is not.
    ///
    /// # Errors
    /// The directory cannot be made or opened, or is not a directory.
    pub fn create_target(target: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(target).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", target.display())))?;
        let fd = rustix::fs::openat(CWD, target, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| explain(e, target))?;
        Ok(Self { fd, shown: target.to_path_buf() })
    }

    /// Holds `target`, which must lie below `root` (the folder a server
    /// restores to): `root` is opened as configured, and every directory
    /// from it down to `target` is created or opened without following a
    /// symbolic link, so that no link, made before or during the restore,
    /// leads the restore out of `root`.
    ///
    /// # Errors
    /// `target` is not below `root`, or a link or a non-directory is on the way.
    pub fn create_within(root: &Path, target: &Path) -> io::Result<Self> {
        let rel = target.strip_prefix(root).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not inside {}", target.display(), root.display()),
            )
        })?;
        let base = Self::create_target_existing(root)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", root.display())))?;
        let held = base.walk_dirs(rel, false, 0o755)?;
        Ok(Self { fd: held, shown: target.to_path_buf() })
    }

    fn create_target_existing(root: &Path) -> io::Result<Self> {
        let fd = rustix::fs::openat(CWD, root, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Self { fd, shown: root.to_path_buf() })
    }

    /// Holds `target`: below `within` when given (see [`Self::create_within`]),
    /// else as given (see [`Self::create_target`]).
    ///
    /// # Errors
    /// As those two.
    pub fn open(target: &Path, within: Option<&Path>) -> io::Result<Self> {
        match within {
            Some(root) => Self::create_within(root, target),
            None => Self::create_target(target),
        }
    }

    /// The directory `rel` below this one, made as [`Self::mkdir_all`] makes
    /// it (no link followed), held in its turn.
    ///
    /// # Errors
    /// As [`Self::mkdir_all`].
    pub fn sub(&self, rel: &Path) -> io::Result<Beneath> {
        Ok(Beneath { fd: self.mkdir_all(rel)?, shown: self.show(rel) })
    }

    /// The target as the user named it, for messages.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// `rel` below the target as the user would see it, for messages.
    pub fn show(&self, rel: &Path) -> PathBuf {
        self.shown.join(rel)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// A path other programs can use for `name` in the held directory:
    /// through `/proc/PID/fd/N`, so it names this very directory.
    pub fn proc_path(&self, name: impl AsRef<Path>) -> PathBuf {
        let dir = PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd()));
        let name = name.as_ref();
        if name.as_os_str().is_empty() { dir } else { dir.join(name) }
    }

    /// Opens `rel` below the target with `flags` (and `mode` when creating),
    /// following no symbolic link on the way or at the end, and no `..`.
    ///
    /// # Errors
    /// A link on the way (named as such), a missing entry, permissions.
    pub fn open_at(&self, rel: &Path, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(mode);
        let parts = names(rel)?;
        if parts.is_empty() {
            return rustix::fs::openat(self.fd(), ".", flags, mode).map_err(|e| explain(e, &self.shown));
        }
        let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        match rustix::fs::openat2(self.fd(), rel, flags, mode, how) {
            Err(Errno::NOSYS) => {}
            Err(Errno::AGAIN) => {} // a rename raced the lookup: walk instead
            other => return other.map_err(|e| explain(e, &self.show(rel))),
        }
        // one component at a time, none followed
        let mut dir: Option<OwnedFd> = None;
        for name in &parts[..parts.len() - 1] {
            let at = dir.as_ref().map_or(self.fd(), |d| d.as_fd());
            let next =
                rustix::fs::openat(at, *name, dir_flags(), Mode::empty()).map_err(|e| explain(e, &self.show(rel)))?;
            dir = Some(next);
        }
        let at = dir.as_ref().map_or(self.fd(), |d| d.as_fd());
        let last = parts[parts.len() - 1];
        rustix::fs::openat(at, last, flags, mode).map_err(|e| explain(e, &self.show(rel)))
    }

    /// Opens the directory `rel` below the target (the target itself for
    /// an empty path).
    ///
    /// # Errors
    /// As [`Self::open_at`].
    pub fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_at(rel, OFlags::DIRECTORY | OFlags::RDONLY, 0)
    }

    /// Makes `rel` a directory below the target, creating each missing
    /// one relative to its parent's handle, and holds it.
    ///
    /// # Errors
    /// A link or non-directory on the way that cannot be replaced; permissions.
    pub fn mkdir_all(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.walk_dirs(rel, true, 0o700)
    }

    fn walk_dirs(&self, rel: &Path, replace: bool, mode: u32) -> io::Result<OwnedFd> {
        let mut dir = rustix::fs::openat(self.fd(), ".", dir_flags(), Mode::empty())?;
        for name in names(rel)? {
            let fail = |e: Errno| explain(e, &self.show(rel));
            ensure_dir_at(dir.as_fd(), name, replace, mode).map_err(fail)?;
            dir = rustix::fs::openat(dir.as_fd(), name, dir_flags(), Mode::empty()).map_err(fail)?;
        }
        Ok(dir)
    }

    /// Makes `rel` a directory in its parent (which must exist), replacing
    /// a file or link there. It is made private (0700) until the restore
    /// gives it its recorded mode, last.
    ///
    /// # Errors
    /// As [`Self::open_at`].
    pub fn ensure_dir(&self, rel: &Path) -> io::Result<bool> {
        let (parent, name) = split(rel)?;
        let pfd = self.open_dir(parent)?;
        // a link put in its place after this is met when it is used
        ensure_dir_at(pfd.as_fd(), name, true, 0o700).map_err(|e| explain(e, &self.show(rel)))
    }
}

/// Directory handles a restore holds, by path below its target, so that a
/// file is created, written and renamed relative to its directory's handle
/// without resolving the path again. Bounded (a share of the open-file
/// limit), so any limit holds; a directory dropped from it is opened again
/// the same safe way. A handle names the directory the restore made: if
/// another process moves that directory meanwhile, files still go into it,
/// never through a link put in its place.
pub struct DirHandles<'a> {
    root: &'a Beneath,
    held: std::sync::Mutex<std::collections::HashMap<PathBuf, std::sync::Arc<OwnedFd>>>,
    most: usize,
}

impl<'a> DirHandles<'a> {
    pub fn new(root: &'a Beneath) -> Self {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(1024);
        let most = usize::try_from(limit / 8).unwrap_or(128).clamp(4, 256);
        Self { root, held: std::sync::Mutex::default(), most }
    }

    /// The handle of directory `rel` (the target itself for an empty path).
    ///
    /// # Errors
    /// As [`Beneath::open_dir`].
    pub fn get(&self, rel: &Path) -> io::Result<std::sync::Arc<OwnedFd>> {
        if let Ok(held) = self.held.lock()
            && let Some(fd) = held.get(rel)
        {
            return Ok(fd.clone());
        }
        let fd = std::sync::Arc::new(self.root.open_dir(rel)?);
        if let Ok(mut held) = self.held.lock() {
            if held.len() >= self.most {
                held.clear();
            }
            held.insert(rel.to_path_buf(), fd.clone());
        }
        Ok(fd)
    }
}

/// Makes directory `name` in the held directory `dir` (see
/// [`Beneath::ensure_dir`]); whether it was made now. `shown` names it in
/// errors.
///
/// # Errors
/// A link or non-directory that cannot be replaced; permissions.
pub fn make_dir_in(dir: BorrowedFd<'_>, name: &OsStr, shown: &Path) -> io::Result<bool> {
    ensure_dir_at(dir, name, true, 0o700).map_err(|e| explain(e, shown))
}

/// The parent and last name of a relative path.
///
/// # Errors
/// An empty path.
pub fn split(rel: &Path) -> io::Result<(&Path, &OsStr)> {
    match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => Ok((p, n)),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{}: no file name", rel.display()))),
    }
}

/// Removes the non-directory `name` in `dir`, if any, so a new entry can
/// take its place. Unlinking never writes into the inode.
///
/// # Errors
/// A directory is in the way; permissions.
pub fn clear_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory => {
            Err(io::Error::other("a directory is in the way"))
        }
        Ok(_) => Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?),
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_below_the_target_are_never_followed() {
        let t = tempfile::tempdir().expect("tempdir");
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).expect("test setup");
        let target = t.path().join("target");
        let b = Beneath::create_target(&target).expect("test setup");
        std::fs::create_dir(target.join("d")).expect("test setup");
        std::os::unix::fs::symlink(&outside, target.join("d/door")).expect("test setup");
        let e = b.open_at(Path::new("d/door/f"), OFlags::WRONLY | OFlags::CREATE, 0o600).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(b.mkdir_all(Path::new("d/door/x")).is_ok()); // the link is replaced by a directory
        assert!(std::fs::symlink_metadata(target.join("d/door")).expect("test setup").is_dir());
        assert!(b.open_dir(Path::new("../outside")).is_err());
        assert_eq!(std::fs::read_dir(&outside).expect("test setup").count(), 0);
    }

    #[test]
    fn a_target_below_a_root_is_reached_without_links() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&root).expect("test setup");
        std::fs::create_dir_all(&outside).expect("test setup");
        std::os::unix::fs::symlink(&outside, root.join("door")).expect("test setup");
        let e = Beneath::create_within(&root, &root.join("door/pwn")).unwrap_err();
        assert!(e.to_string().contains("not followed"), "{e}");
        assert!(Beneath::create_within(&root, &t.path().join("elsewhere")).is_err());
        let b = Beneath::create_within(&root, &root.join("a/b")).expect("test setup");
        assert!(root.join("a/b").is_dir());
        assert_eq!(b.shown(), root.join("a/b"));
        assert_eq!(std::fs::read_dir(&outside).expect("test setup").count(), 0);
    }
}

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::ops::ControlFlow;

use crate::store::{LIST_PAGE, check_name, check_prefix};
use crate::{AbandonedUpload, Capabilities, ObjectInfo, PutMode, Store, StoreError, StoreErrorKind};

/// A vault's objects as files below one folder: the embedded default store.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// Whether the folder existed when the store was opened. A folder that
    /// did not is made by the first write (a new vault); one that did and
    /// is gone (moved away, its disk unmounted) is never made again: writes
    /// fail instead of starting a stray copy in its place.
    existed: bool,
    /// Every object written is given the immutable attribute at once, as an
    /// S3 bucket's default retention locks every version: a vault whose
    /// `config` has it (one made with `--object-lock`; docs/SECURITY.md).
    lock_on_write: bool,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Self {
        let existed = root.is_dir();
        let lock_on_write = immutable(&root.join("config")).unwrap_or(false);
        Self { root, existed, lock_on_write }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// What an unfinished `put`'s file is called before its rename.
const TEMP_PREFIX: &str = ".tmp-";

fn temp_name() -> String {
    let mut raw = [0u8; 12];
    // A weak name only risks a create_new collision, which is retried by the caller.
    let _ = getrandom::fill(&mut raw);
    let mut s = String::from(TEMP_PREFIX);
    for b in raw {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Moves `from` to `to` unless `to` exists; atomic on every Linux file system
/// that supports `RENAME_NOREPLACE`, and through `link` + `unlink` elsewhere.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(e) => Err(io::Error::from(e)),
    }
}

/// A local file's version tag: its inode, change time and size, which a
/// replace (a new inode renamed into place) always changes.
fn local_etag(meta: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{:x}-{:x}.{:x}-{:x}", meta.ino(), meta.ctime(), meta.ctime_nsec(), meta.len())
}

fn local_info(name: &str, meta: &fs::Metadata) -> ObjectInfo {
    ObjectInfo {
        name: name.to_string(),
        size: meta.len(),
        etag: Some(local_etag(meta)),
        modified: meta.modified().ok(),
    }
}

impl LocalStore {
    /// Writes `data` to a new temporary file beside `dest` and moves it into
    /// place with `install` (create-only or replacing); the folder is synced.
    fn write_through_temp(
        &self,
        dest: &Path,
        data: &[u8],
        install: impl FnOnce(&Path, &Path) -> io::Result<()>,
    ) -> io::Result<()> {
        if self.existed && !self.root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("the store's folder {} is gone (moved, or its disk not mounted)", self.root.display()),
            ));
        }
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir)?;
        let tmp = dir.join(temp_name());
        let result = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            drop(f);
            install(&tmp, dest)?;
            sync_dir(&dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Replaces `dest` only while its version tag is `etag`. Writers of the
    /// same object serialize on an exclusive lock of the current file; one
    /// that locked a file already replaced tries again on the new one.
    fn replace_if_match(&self, name: &str, dest: &Path, data: &[u8], etag: &str) -> Result<ObjectInfo, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let io_err = |e| StoreError::from_io("replace", name, e);
        let changed = || StoreError::new(StoreErrorKind::ConditionNotMet, "replace", name);
        loop {
            let current = match File::open(dest) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(changed()),
                Err(e) => return Err(io_err(e)),
            };
            rustix::fs::flock(&current, rustix::fs::FlockOperation::LockExclusive)
                .map_err(|e| io_err(io::Error::from(e)))?;
            let locked = current.metadata().map_err(io_err)?;
            match fs::metadata(dest) {
                Ok(now) if now.ino() == locked.ino() => {}
                Ok(_) => continue, // replaced while we waited for the lock
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(changed()),
                Err(e) => return Err(io_err(e)),
            }
            if local_etag(&locked) != etag {
                return Err(changed());
            }
            self.write_through_temp(dest, data, |tmp, to| fs::rename(tmp, to)).map_err(io_err)?;
            let meta = fs::metadata(dest).map_err(io_err)?;
            return Ok(local_info(name, &meta));
        }
    }
}

impl Store for LocalStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { conditional_replace: true, parallel_requests: 1, remote: false }
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        check_name("read", name)?;
        fs::read(self.path(name)).map_err(|e| StoreError::from_io("read", name, e))
    }

    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let mut buf = Vec::new();
        self.get_range_into(name, offset, len, &mut buf)?;
        Ok(buf)
    }

    fn get_range_into(&self, name: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        check_name("read", name)?;
        let file = File::open(self.path(name)).map_err(|e| StoreError::from_io("read", name, e))?;
        let len = usize::try_from(len).map_err(|_| StoreError::new(StoreErrorKind::Other, "read", name))?;
        buf.resize(len, 0); // zeroes only what the buffer grows by
        file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                StoreError::from_io(
                    "read",
                    name,
                    io::Error::other(format!(
                        "the object is shorter than its index says (bytes {offset}..{} asked for)",
                        offset + len as u64
                    )),
                )
            } else {
                StoreError::from_io("read", name, e)
            }
        })
    }

    fn put(&self, name: &str, data: &[u8], mode: PutMode) -> Result<ObjectInfo, StoreError> {
        check_name("write", name)?;
        let dest = self.path(name);
        match mode {
            PutMode::Create => {
                if dest.exists() {
                    return Err(StoreError::new(StoreErrorKind::AlreadyExists, "write", name));
                }
                self.write_through_temp(&dest, data, rename_noreplace)
                    .map_err(|e| StoreError::from_io("write", name, e))?;
                // (the prune lease is replaced in place: never locked)
                if self.lock_on_write && !name.starts_with("locks/") {
                    set_immutable(&dest, true).map_err(|e| StoreError::from_io("lock", name, e))?;
                }
                self.stat(name)
            }
            PutMode::ReplaceIfMatch(etag) => self.replace_if_match(name, &dest, data, &etag),
        }
    }

    fn list_pages(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        check_prefix(prefix)?;
        let mut page = Vec::with_capacity(LIST_PAGE);
        let flow = self.walk_sorted(&self.path(prefix), prefix, &mut page, visit)?;
        if flow.is_continue() && !page.is_empty() {
            let _ = visit(page);
        }
        Ok(())
    }

    fn stat(&self, name: &str) -> Result<ObjectInfo, StoreError> {
        check_name("stat", name)?;
        let meta = fs::metadata(self.path(name)).map_err(|e| StoreError::from_io("stat", name, e))?;
        Ok(local_info(name, &meta))
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        check_name("delete", name)?;
        let path = self.path(name);
        match remove_if_present(&path) {
            // boveda's own lock (the immutable attribute): boveda deletes
            // only what its records say lapsed, so it lifts it first
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && immutable(&path).unwrap_or(false) => {
                set_immutable(&path, false).and_then(|()| remove_if_present(&path))
            }
            other => other,
        }
        .map_err(|e| StoreError::from_io("delete", name, e))
    }

    fn delete_version(&self, name: &str) -> Result<(), StoreError> {
        self.delete(name)
    }

    /// The file system's immutable attribute (`chattr +i`): no process can
    /// delete, replace or change the file until it is lifted, which needs
    /// CAP_LINUX_IMMUTABLE (root). The date is boveda's to keep (the
    /// vault's records): the file system holds the attribute until lifted.
    fn lock_object(&self, name: &str, _lock: &crate::store::ObjectLock) -> Result<bool, StoreError> {
        check_name("lock", name)?;
        set_immutable(&self.path(name), true).map_err(|e| StoreError::from_io("lock", name, e))?;
        Ok(true)
    }

    fn can_lock(&self) -> Result<bool, StoreError> {
        // a new vault's folder is made by its first write: made here first
        if !self.existed && !self.root.is_dir() {
            fs::create_dir_all(&self.root).map_err(|e| StoreError::from_io("lock", "", e))?;
        }
        let probe = self.root.join(format!("{TEMP_PREFIX}lock-probe-{}", std::process::id()));
        let tried = (|| {
            File::create(&probe)?;
            set_immutable(&probe, true)?;
            set_immutable(&probe, false)
        })();
        let _ = fs::remove_file(&probe);
        Ok(tried.is_ok())
    }

    fn abandoned_uploads(&self, before: std::time::SystemTime) -> Result<Vec<AbandonedUpload>, StoreError> {
        let mut out = Vec::new();
        self.walk("", &mut |child, meta, is_temp| {
            let modified = meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            if is_temp && modified < before {
                out.push(AbandonedUpload { name: child, size: meta.len(), modified });
            }
        })?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn discard_upload(&self, upload: &AbandonedUpload) -> Result<(), StoreError> {
        let is_temp = upload.name.rsplit('/').next().is_some_and(|f| f.starts_with(TEMP_PREFIX));
        let parent_ok = upload.name.rsplit_once('/').is_none_or(|(dir, _)| check_name("discard", dir).is_ok());
        if !is_temp || !parent_ok || upload.name.starts_with('/') {
            return Err(StoreError::new(StoreErrorKind::InvalidName, "discard", &upload.name));
        }
        remove_if_present(&self.path(&upload.name)).map_err(|e| StoreError::from_io("discard", &upload.name, e))
    }
}

/// Whether `path` has the immutable attribute.
fn immutable(path: &Path) -> io::Result<bool> {
    let f = File::open(path)?;
    Ok(rustix::fs::ioctl_getflags(&f)?.contains(rustix::fs::IFlags::IMMUTABLE))
}

/// Sets or lifts `path`'s immutable attribute.
fn set_immutable(path: &Path, on: bool) -> io::Result<()> {
    let f = File::open(path)?;
    let flags = rustix::fs::ioctl_getflags(&f)?;
    let wanted = if on { flags | rustix::fs::IFlags::IMMUTABLE } else { flags - rustix::fs::IFlags::IMMUTABLE };
    if wanted != flags {
        rustix::fs::ioctl_setflags(&f, wanted)?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl LocalStore {
    /// Lists the objects below `dir` (named `rel`) in ascending byte order
    /// of their names, handing `visit` a page whenever one fills. Sorting
    /// siblings by name, with a folder's name followed by `/`, gives the
    /// byte order of whole names.
    fn walk_sorted(
        &self,
        dir: &Path,
        rel: &str,
        page: &mut Vec<ObjectInfo>,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> ControlFlow<()>,
    ) -> Result<ControlFlow<()>, StoreError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                return Ok(ControlFlow::Continue(()));
            }
            Err(e) => return Err(StoreError::from_io("list", rel, e)),
        };
        let mut children = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::from_io("list", rel, e))?;
            let Ok(fname) = entry.file_name().into_string() else { continue };
            if fname.starts_with(TEMP_PREFIX) {
                continue;
            }
            let meta = match entry.metadata() {
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // renamed or removed meanwhile
                other => other.map_err(|e| StoreError::from_io("list", &fname, e))?,
            };
            let key = if meta.is_dir() { format!("{fname}/") } else { fname };
            children.push((key, meta));
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, meta) in children {
            let child = if rel.is_empty() { key.clone() } else { format!("{rel}/{key}") };
            if let Some(sub) = child.strip_suffix('/') {
                if self.walk_sorted(&self.path(sub), sub, page, visit)?.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            } else {
                page.push(local_info(&child, &meta));
                if page.len() >= LIST_PAGE && visit(std::mem::take(page)).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Visits every file below `prefix` with its name, metadata and whether
    /// it is a temporary file of an unfinished `put`.
    fn walk(&self, prefix: &str, visit: &mut dyn FnMut(String, fs::Metadata, bool)) -> Result<(), StoreError> {
        let start = self.path(prefix);
        let mut stack = vec![(start, prefix.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::from_io("list", &rel, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| StoreError::from_io("list", &rel, e))?;
                let Ok(fname) = entry.file_name().into_string() else {
                    continue;
                };
                let child = if rel.is_empty() { fname.clone() } else { format!("{rel}/{fname}") };
                let meta = match entry.metadata() {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // renamed or removed meanwhile
                    other => other.map_err(|e| StoreError::from_io("list", &child, e))?,
                };
                if meta.is_dir() {
                    stack.push((entry.path(), child));
                } else {
                    visit(child, meta, fname.starts_with(TEMP_PREFIX));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
fn read_tail(path: &Path, n: u64) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(n)))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalStore::new(dir.path().join("vault"));
        (dir, s)
    }

    #[test]
    fn put_get_list_stat_delete() {
        let (_d, s) = store();
        s.put_new("packs/ab/abcd", b"hello").expect("put");
        s.put_new("index/1", b"x").expect("put");
        assert_eq!(s.get("packs/ab/abcd").expect("get"), b"hello");
        assert_eq!(s.get_range("packs/ab/abcd", 1, 3).expect("range"), b"ell");
        assert!(s.get_range("packs/ab/abcd", 3, 3).is_err());
        let names: Vec<_> = s.list("packs").expect("list").into_iter().map(|o| o.name).collect();
        assert_eq!(names, vec!["packs/ab/abcd"]);
        assert_eq!(s.stat("index/1").expect("stat").size, 1);
        s.delete("index/1").expect("delete");
        assert_eq!(s.get("index/1").map_err(|e| e.kind()).err(), Some(StoreErrorKind::NotFound));
        assert!(s.list("nothing").expect("list").is_empty());
    }

    #[test]
    fn a_store_folder_that_went_away_is_not_made_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = LocalStore::new(dir.path().join("new"));
        fresh.put_new("config", b"a new vault").expect("a new folder is made by the first write");
        let opened = LocalStore::new(dir.path().join("new"));
        fs::rename(dir.path().join("new"), dir.path().join("away")).expect("move away");
        let err = opened.put_new("packs/x", b"data").expect_err("the folder is gone");
        assert_eq!(err.kind(), StoreErrorKind::NotFound);
        assert!(!dir.path().join("new").exists(), "no stray copy where the folder was");
    }

    #[test]
    fn put_never_replaces() {
        let (_d, s) = store();
        s.put_new("a/b", b"one").expect("put");
        let err = s.put_new("a/b", b"two").expect_err("second put must fail");
        assert_eq!(err.kind(), StoreErrorKind::AlreadyExists);
        assert_eq!(s.get("a/b").expect("get"), b"one");
    }

    #[test]
    fn temp_files_are_not_listed_and_names_are_checked() {
        let (_d, s) = store();
        s.put_new("a/b", b"one").expect("put");
        fs::write(s.root().join("a/.tmp-123"), b"partial").expect("write");
        assert_eq!(s.list("a").expect("list").len(), 1);
        for bad in ["", "/abs", "a/../b", "a//b", "a/.tmp-1"] {
            assert_eq!(s.put_new(bad, b"x").expect_err(bad).kind(), StoreErrorKind::InvalidName);
        }
        assert_eq!(read_tail(&s.root().join("a/b"), 2).expect("tail"), b"ne");
    }

    #[test]
    fn abandoned_uploads_are_found_by_age_and_discarded() {
        let (_d, s) = store();
        s.put_new("a/b", b"one").expect("put");
        fs::write(s.root().join("a/.tmp-123"), b"partial").expect("write");
        let now = std::time::SystemTime::now();
        assert!(s.abandoned_uploads(now - std::time::Duration::from_secs(60)).expect("list").is_empty(), "fresh");
        let found = s.abandoned_uploads(now + std::time::Duration::from_secs(60)).expect("list");
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].name.as_str(), found[0].size), ("a/.tmp-123", 7));
        s.discard_upload(&found[0]).expect("discard");
        assert!(s.abandoned_uploads(now + std::time::Duration::from_secs(60)).expect("list").is_empty());
        assert_eq!(s.get("a/b").expect("object kept"), b"one");
        let not_an_upload = AbandonedUpload { name: "a/b".into(), size: 3, modified: now };
        assert_eq!(s.discard_upload(&not_an_upload).expect_err("an object").kind(), StoreErrorKind::InvalidName);
    }
}

//! A local copy of a vault's immutable objects: index objects, point
//! manifests and catalog revisions. Their names never change meaning (an
//! index object is named after its hash; manifests and revisions get new,
//! random names), so a copy read by name is the object, or is damaged.
//!
//! It is only a cache: every copy is authenticated as the object itself
//! would be, a copy that fails is deleted and fetched again, copies of
//! objects no longer listed are deleted, and deleting the whole folder
//! loses nothing. It spares a vault in an object store one GET per object
//! per command: opening the vault and listing points, reading the index or
//! the catalog fetch only what is new since the last command.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

/// Cached copies of one vault's objects, below `<cache dir>/<vault id>/`.
#[derive(Debug, Clone)]
pub struct ObjectCache {
    root: PathBuf,
}

impl ObjectCache {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The cached copy of an object, if there is one.
    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        fs::read(self.path(name)).ok()
    }

    /// Keeps a copy (best effort: a cache that cannot be written only
    /// costs requests). Written to a temporary name and renamed, so a
    /// reader never sees half a copy.
    pub fn write(&self, name: &str, bytes: &[u8]) {
        let path = self.path(name);
        let Some(dir) = path.parent() else { return };
        let tmp = dir.join(format!(".tmp-{}-{:?}", std::process::id(), std::thread::current().id()));
        let written = fs::create_dir_all(dir)
            .and_then(|()| fs::File::create(&tmp))
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|()| fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }

    /// Drops a copy that failed authentication or whose object is gone.
    pub fn forget(&self, name: &str) {
        let _ = fs::remove_file(self.path(name));
    }

    /// Deletes the copies below `folder` (one level of names or two) whose
    /// objects a listing no longer shows.
    pub fn retain(&self, folder: &str, listed: &std::collections::HashSet<&str>) {
        let mut stack = vec![(self.path(folder), folder.to_string())];
        while let Some((dir, rel)) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let Ok(file) = entry.file_name().into_string() else { continue };
                let name = format!("{rel}/{file}");
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), name));
                } else if !listed.contains(name.as_str()) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
}

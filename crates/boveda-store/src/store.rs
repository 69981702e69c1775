use std::path::PathBuf;
use std::sync::Arc;

use crate::{LocalStore, StoreError, StoreErrorKind};

/// One object as listed by a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
}

/// What a writer began and never finished: a local folder's temporary file,
/// an object store's incomplete upload. Never listed as an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedUpload {
    /// The backend's own name for it (for a local folder, its path below
    /// the store's root).
    pub name: String,
    pub size: u64,
    /// When it was last written to.
    pub modified: std::time::SystemTime,
}

/// The storage contract every backend fulfils (see the crate docs).
pub trait Store: Send + Sync {
    /// A human-readable location, such as the folder path or URL.
    fn location(&self) -> String;

    /// Reads a whole object.
    ///
    /// # Errors
    /// `NotFound` when the object is absent; `Other` on I/O failure.
    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError>;

    /// Reads `len` bytes at `offset`. A short object is an error.
    ///
    /// # Errors
    /// As [`Store::get`]; `Other` when the range runs past the end.
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError>;

    /// Writes a new object atomically; never replaces one.
    ///
    /// # Errors
    /// `AlreadyExists` when the name is taken, `NoSpace` when the store is full.
    fn put(&self, name: &str, data: &[u8]) -> Result<(), StoreError>;

    /// Lists every object whose name starts with `prefix` followed by `/`,
    /// at any depth. An absent prefix lists nothing.
    ///
    /// # Errors
    /// `Other` on I/O failure.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;

    /// Size of one object.
    ///
    /// # Errors
    /// `NotFound` when the object is absent.
    fn stat(&self, name: &str) -> Result<ObjectInfo, StoreError>;

    /// Removes an object. Removing an absent object succeeds.
    ///
    /// # Errors
    /// `Other` on I/O failure.
    fn delete(&self, name: &str) -> Result<(), StoreError>;

    /// Uploads begun and not finished, last written before `before`: what
    /// writers killed mid-`put` left behind. A live `put` keeps writing to
    /// its upload, so one untouched for long has no owner.
    ///
    /// # Errors
    /// `Other` on I/O failure.
    fn abandoned_uploads(&self, before: std::time::SystemTime) -> Result<Vec<AbandonedUpload>, StoreError>;

    /// Removes an abandoned upload. Removing one already gone succeeds.
    ///
    /// # Errors
    /// `InvalidName` for a name that is no upload; `Other` on I/O failure.
    fn discard_upload(&self, upload: &AbandonedUpload) -> Result<(), StoreError>;
}

/// Opens a store from a URL: a plain path or `file://PATH` for a local folder.
///
/// # Errors
/// `InvalidName` for a scheme this build does not know.
pub fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(Arc::new(LocalStore::new(PathBuf::from(path))));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(StoreError::new(
            StoreErrorKind::InvalidName,
            "open store",
            &format!("{url} (the {scheme}:// store is not supported yet: use a local folder path)"),
        ));
    }
    Ok(Arc::new(LocalStore::new(PathBuf::from(url))))
}

/// Checks an object name: relative, `/`-separated, no empty, `.` or `..` parts.
pub(crate) fn check_name(operation: &'static str, name: &str) -> Result<(), StoreError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.split('/').any(|p| p.is_empty() || p == "." || p == ".." || p.starts_with(".tmp-"));
    if bad {
        return Err(StoreError::new(StoreErrorKind::InvalidName, operation, name));
    }
    Ok(())
}

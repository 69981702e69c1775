use std::ops::ControlFlow;
use std::time::{Duration, SystemTime};

use crate::{StoreError, StoreErrorKind};

/// One object as a store describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
    /// The store's version tag of these bytes (an object store's ETag; for a
    /// local folder, one derived from the file's identity and change time).
    /// What a conditional replace names.
    pub etag: Option<String>,
    pub modified: Option<SystemTime>,
}

impl ObjectInfo {
    pub fn new(name: &str, size: u64) -> Self {
        Self { name: name.to_string(), size, etag: None, modified: None }
    }
}

/// What a `put` may find at its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Create-only (`If-None-Match: *`): fails with `AlreadyExists` when
    /// the name is taken. Every vault object is written this way.
    Create,
    /// Replace-only-if-unchanged (`If-Match`): replaces the object only
    /// while its version tag is still this one; fails with
    /// `ConditionNotMet` when it changed or is gone.
    ReplaceIfMatch(String),
}

/// Optional operations a store offers (the required ones are in [`Store`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// [`PutMode::ReplaceIfMatch`] works.
    pub conditional_replace: bool,
    /// Requests this kind of store serves well at once: the default for a
    /// vault's parallel uploads and downloads.
    pub parallel_requests: usize,
    /// Objects travel over a network: immutable ones are worth a local copy.
    pub remote: bool,
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
    pub modified: SystemTime,
}

/// A short-lived grant to create one object straight in the store,
/// without the store's keys: the request its holder sends (`PUT` to `url`
/// with `headers` and the object's bytes as the body). What it allows is
/// bound by the store's own signature: that one name, create-only, and
/// where the store signs it, that one length (docs/FLEET.md).
#[derive(Clone, PartialEq, Eq)]
pub struct CreateGrant {
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// When the store stops honouring it.
    pub expires: SystemTime,
    /// Whether the store refuses a body of another length.
    pub length_bound: bool,
}

impl std::fmt::Debug for CreateGrant {
    // the url carries the signature: never in a log
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let base = self.url.split('?').next().unwrap_or_default();
        write!(f, "CreateGrant {{ {base}, length bound: {} }}", self.length_bound)
    }
}

/// Objects a listing hands over at once, at most.
pub const LIST_PAGE: usize = 1000;

/// The storage contract every backend and every layer fulfils (see the
/// crate docs for the promises the vault format relies on).
pub trait Store: Send + Sync {
    /// A human-readable location, such as the folder path or URL.
    fn location(&self) -> String;

    /// What this store offers beyond the required operations.
    fn capabilities(&self) -> Capabilities;

    /// Reads a whole object.
    ///
    /// # Errors
    /// `NotFound` when the object is absent.
    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError>;

    /// Reads `len` bytes at `offset`. A short object is an error.
    ///
    /// # Errors
    /// As [`Store::get`]; `Other` when the range runs past the end.
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError>;

    /// [`Store::get_range`] into `buf`, which then holds exactly the `len`
    /// bytes read: a reader that reuses one buffer for many reads keeps its
    /// memory mapped (a fresh buffer per read costs a page fault per page).
    ///
    /// # Errors
    /// As [`Store::get_range`]; `buf` then holds nothing useful.
    fn get_range_into(&self, name: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        *buf = self.get_range(name, offset, len)?;
        Ok(())
    }

    /// Writes an object atomically (readers see all of it or none) under
    /// the condition `mode` names, and describes what was stored.
    ///
    /// A create-only put that was retried after an answer was lost may find
    /// its own first attempt already landed: the retry layer reads the
    /// object back, and identical bytes count as success (vault objects are
    /// content-addressed or unique by name, so equal bytes mean the same
    /// write).
    ///
    /// # Errors
    /// `AlreadyExists` (create-only, name taken), `ConditionNotMet`
    /// (replace, version changed), `Unsupported` (replace on a store
    /// without it), `NoSpace`.
    fn put(&self, name: &str, data: &[u8], mode: PutMode) -> Result<ObjectInfo, StoreError>;

    /// Streams every object whose name starts with `prefix` followed by
    /// `/`, at any depth (or every object, for an empty prefix), in
    /// ascending byte order of names, a page at a time; `visit` may stop
    /// the listing early. An absent prefix lists nothing.
    ///
    /// # Errors
    /// A store error; pages already visited stay visited.
    fn list_pages(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> ControlFlow<()>,
    ) -> Result<(), StoreError>;

    /// Describes one object.
    ///
    /// # Errors
    /// `NotFound` when the object is absent.
    fn stat(&self, name: &str) -> Result<ObjectInfo, StoreError>;

    /// Removes an object. Removing an absent object succeeds.
    ///
    /// # Errors
    /// A store error.
    fn delete(&self, name: &str) -> Result<(), StoreError>;

    /// Uploads begun and not finished, last written before `before`: what
    /// writers killed mid-`put` left behind. A live `put` keeps writing to
    /// its upload, so one untouched for long has no owner. Stores whose
    /// every put is a single request have none.
    ///
    /// # Errors
    /// A store error.
    fn abandoned_uploads(&self, before: SystemTime) -> Result<Vec<AbandonedUpload>, StoreError>;

    /// Removes an abandoned upload. Removing one already gone succeeds.
    ///
    /// # Errors
    /// `InvalidName` for a name that is no upload.
    fn discard_upload(&self, upload: &AbandonedUpload) -> Result<(), StoreError>;

    /// A grant for someone without the store's keys to create `name`, of
    /// `len` bytes, for `ttl` (see [`CreateGrant`]); `None` for a store
    /// that cannot grant one (a local folder, a replicated store), whose
    /// objects are written by its holder.
    ///
    /// # Errors
    /// `InvalidName` for a bad name; `Other` when the grant cannot be
    /// signed.
    fn grant_create(&self, name: &str, len: u64, ttl: Duration) -> Result<Option<CreateGrant>, StoreError> {
        let _ = (name, len, ttl);
        Ok(None)
    }

    /// Locks `name` in the store itself until `lock.until` (S3 Object
    /// Lock); `false` from a store that cannot lock. Extending a lock
    /// rewrites no data.
    ///
    /// # Errors
    /// The service's refusal (a bucket without Object Lock, an earlier date
    /// in compliance mode).
    fn lock_object(&self, name: &str, lock: &ObjectLock) -> Result<bool, StoreError> {
        let _ = (name, lock);
        Ok(false)
    }

    /// `name`'s lock in the store itself, if it has one.
    ///
    /// # Errors
    /// A store error.
    fn object_lock(&self, name: &str) -> Result<Option<ObjectLock>, StoreError> {
        let _ = name;
        Ok(None)
    }

    /// Deletes `name` itself: in a versioned bucket, its current version
    /// (which the store refuses while it is locked), not a delete marker
    /// over it; elsewhere as [`Store::delete`].
    ///
    /// # Errors
    /// `PermissionDenied` for a locked object; a store error.
    fn delete_version(&self, name: &str) -> Result<(), StoreError> {
        self.delete(name)
    }

    /// Whether this store can lock objects (an S3 bucket with Object Lock
    /// enabled).
    ///
    /// # Errors
    /// A store error.
    fn can_lock(&self) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Writes a new object; never replaces one (create-only).
    ///
    /// # Errors
    /// As [`Store::put`].
    fn put_new(&self, name: &str, data: &[u8]) -> Result<ObjectInfo, StoreError> {
        self.put(name, data, PutMode::Create)
    }

    /// Every object below `prefix` (see [`Store::list_pages`]).
    ///
    /// # Errors
    /// A store error.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        self.list_pages(prefix, &mut |page| {
            out.extend(page);
            ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// Whether no object lies below `prefix`; reads one page at most.
    ///
    /// # Errors
    /// A store error.
    fn is_empty_below(&self, prefix: &str) -> Result<bool, StoreError> {
        let mut empty = true;
        self.list_pages(prefix, &mut |page| {
            empty = page.is_empty();
            if empty { ControlFlow::Continue(()) } else { ControlFlow::Break(()) }
        })?;
        Ok(empty)
    }
}

/// Checks an object name: relative, `/`-separated, no empty, `.` or `..`
/// parts, no part that starts with `.tmp-` (a backend's in-flight files).
pub(crate) fn check_name(operation: &'static str, name: &str) -> Result<(), StoreError> {
    let bad = name.is_empty()
        || name.starts_with('/')
        || name.split('/').any(|p| p.is_empty() || p == "." || p == ".." || p.starts_with(".tmp-"));
    if bad {
        return Err(StoreError::new(StoreErrorKind::InvalidName, operation, name));
    }
    Ok(())
}

/// Checks a listing prefix: empty, or a valid name.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() { Ok(()) } else { check_name("list", prefix) }
}

/// Who may lift a lock before its date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Nobody, not even the account's root.
    Compliance,
    /// A credential with `s3:BypassGovernanceRetention`.
    Governance,
}

impl LockMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }

    /// # Errors
    /// `InvalidName` for another word.
    pub fn parse(text: &str) -> Result<LockMode, StoreError> {
        match text.to_ascii_lowercase().as_str() {
            "compliance" => Ok(LockMode::Compliance),
            "governance" => Ok(LockMode::Governance),
            _ => Err(StoreError::new(StoreErrorKind::InvalidName, "lock", text)
                .with_source("an object lock mode is compliance or governance")),
        }
    }
}

/// An object's lock: its mode and the time it holds until.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    pub until: SystemTime,
}

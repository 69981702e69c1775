use std::fmt;
use std::io;

/// What kind of failure a store reported; callers branch on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The object does not exist.
    NotFound,
    /// A create-only `put` found the object already there.
    AlreadyExists,
    /// The store ran out of space.
    NoSpace,
    /// The store refused access.
    PermissionDenied,
    /// The object name is not a valid name.
    InvalidName,
    /// Any other failure (I/O, network).
    Other,
}

/// A store failure, naming the object and the operation.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    operation: &'static str,
    object: String,
    source: Option<io::Error>,
}

impl StoreError {
    pub fn new(kind: StoreErrorKind, operation: &'static str, object: &str) -> Self {
        Self { kind, operation, object: object.to_string(), source: None }
    }

    pub fn from_io(operation: &'static str, object: &str, err: io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => StoreErrorKind::NotFound,
            io::ErrorKind::AlreadyExists => StoreErrorKind::AlreadyExists,
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StoreErrorKind::NoSpace,
            io::ErrorKind::PermissionDenied => StoreErrorKind::PermissionDenied,
            _ => StoreErrorKind::Other,
        };
        Self { kind, operation, object: object.to_string(), source: Some(err) }
    }

    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The object the failure concerns.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// Whether trying the same call again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, StoreErrorKind::Other)
            && self.source.as_ref().is_some_and(|e| {
                matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)
            })
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            StoreErrorKind::NotFound => "not found",
            StoreErrorKind::AlreadyExists => "already exists",
            StoreErrorKind::NoSpace => "no space left in the store",
            StoreErrorKind::PermissionDenied => "permission denied",
            StoreErrorKind::InvalidName => "invalid object name",
            StoreErrorKind::Other => "failed",
        };
        write!(f, "{} of object {}: {what}", self.operation, self.object)?;
        if let Some(src) = &self.source
            && !matches!(self.kind, StoreErrorKind::NotFound | StoreErrorKind::AlreadyExists)
        {
            write!(f, " ({src})")?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

use std::fmt;
use std::io;
use std::time::Duration;

/// What kind of failure a store reported; callers branch on this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreErrorKind {
    /// The object (or the container or bucket itself) does not exist.
    NotFound,
    /// A create-only `put` found the object already there.
    AlreadyExists,
    /// A conditional replace found the object changed (or gone) since the
    /// version it named was read.
    ConditionNotMet,
    /// The store asked the caller to slow down.
    RateLimited,
    /// The store ran out of space.
    NoSpace,
    /// The store refused access: wrong credentials or a missing permission.
    PermissionDenied,
    /// The store cannot do what was asked (such as a conditional replace on
    /// a service without `If-Match`).
    Unsupported,
    /// The object name is not a valid name.
    InvalidName,
    /// Any other failure (I/O, network, a server error).
    Other,
}

impl StoreErrorKind {
    fn describe(self) -> &'static str {
        match self {
            StoreErrorKind::NotFound => "not found",
            StoreErrorKind::AlreadyExists => "already exists",
            StoreErrorKind::ConditionNotMet => "changed since it was read",
            StoreErrorKind::RateLimited => "the store asked to slow down",
            StoreErrorKind::NoSpace => "no space left in the store",
            StoreErrorKind::PermissionDenied => "permission denied",
            StoreErrorKind::Unsupported => "not supported by this store",
            StoreErrorKind::InvalidName => "invalid object name",
            StoreErrorKind::Other => "failed",
        }
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A store failure, naming the object and the operation. The backend sets
/// its kind and whether a retry may help; the backend's own error is kept
/// as the source.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    operation: &'static str,
    object: String,
    retryable: bool,
    retry_after: Option<Duration>,
    /// One line from the backend's answer, for people.
    detail: Option<String>,
    source: Option<Source>,
}

impl StoreError {
    /// A failure that a retry will not mend.
    pub fn new(kind: StoreErrorKind, operation: &'static str, object: &str) -> Self {
        let retryable = kind == StoreErrorKind::RateLimited;
        Self { kind, operation, object: object.to_string(), retryable, retry_after: None, detail: None, source: None }
    }

    /// Keeps the backend's own error as the source.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// One line that says what the store answered (its error code and
    /// message), shown instead of the source's full text.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Says whether trying the same call again may succeed.
    #[must_use]
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The wait the store asked for before a retry (`Retry-After`).
    #[must_use]
    pub fn with_retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// A local file system's error: the kind follows the I/O error, and
    /// only an interrupted or timed-out call is worth retrying.
    pub fn from_io(operation: &'static str, object: &str, err: io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => StoreErrorKind::NotFound,
            io::ErrorKind::AlreadyExists => StoreErrorKind::AlreadyExists,
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => StoreErrorKind::NoSpace,
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => StoreErrorKind::PermissionDenied,
            io::ErrorKind::Unsupported => StoreErrorKind::Unsupported,
            _ => StoreErrorKind::Other,
        };
        let retryable = matches!(err.kind(), io::ErrorKind::Interrupted | io::ErrorKind::TimedOut);
        Self::new(kind, operation, object).retryable(retryable).with_source(err)
    }

    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// The operation that failed ("read", "write", "list", ...).
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The object the failure concerns.
    pub fn object(&self) -> &str {
        &self.object
    }

    /// Whether trying the same call again may succeed, as the backend judged.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// How long the store asked the caller to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}: {}", self.operation, self.object, self.kind.describe())?;
        match (&self.detail, &self.source) {
            (Some(detail), _) => write!(f, " ({detail})"),
            (None, Some(src)) if !matches!(self.kind, StoreErrorKind::NotFound | StoreErrorKind::AlreadyExists) => {
                write!(f, " ({src})")
            }
            _ => Ok(()),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e.as_ref() as _)
    }
}

/// An I/O error as a user reads it: the common kinds in words ("permission
/// denied", "no space left on the device"), others as the system said them
/// without its error number.
pub fn io_in_words(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    let words = match e.kind() {
        K::NotFound => "does not exist",
        K::PermissionDenied => "permission denied (the user boveda runs as may not do this)",
        K::StorageFull => "no space left on the device",
        K::ReadOnlyFilesystem => "the file system is read-only",
        K::AlreadyExists => "already exists",
        K::NotADirectory => "is not a folder (something on the way is a file)",
        K::IsADirectory => "is a folder",
        K::DirectoryNotEmpty => "is a folder that is not empty",
        K::QuotaExceeded => "the disk quota is exceeded",
        K::FileTooLarge => "the file is too large for the file system",
        K::Interrupted | K::TimedOut => "timed out or was interrupted",
        _ => "",
    };
    if !words.is_empty() {
        return words.to_string();
    }
    let said = e.to_string();
    match said.rfind(" (os error ") {
        Some(at) if said.ends_with(')') => said[..at].to_string(),
        _ => said,
    }
}

#[cfg(test)]
mod words_tests {
    use super::io_in_words;

    #[test]
    fn io_errors_are_words_without_error_numbers() {
        let denied = std::io::Error::from_raw_os_error(13);
        assert_eq!(io_in_words(&denied), "permission denied (the user boveda runs as may not do this)");
        let full = std::io::Error::from_raw_os_error(28);
        assert_eq!(io_in_words(&full), "no space left on the device");
        let other = std::io::Error::from_raw_os_error(71); // EPROTO
        assert!(!io_in_words(&other).contains("os error"), "{}", io_in_words(&other));
    }
}

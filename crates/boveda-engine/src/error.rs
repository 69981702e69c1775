use std::path::PathBuf;

use boveda_vault::VaultError;

/// The data plane's one public error type.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("source path {} does not exist", .0.display())]
    SourceMissing(PathBuf),
    #[error("source path {} must be absolute", .0.display())]
    SourceNotAbsolute(PathBuf),
    #[error("source path {} is a symlink that cannot be followed: {reason}", path.display())]
    SourceLink { path: PathBuf, reason: String },
    #[error("{}: {}", path.display(), boveda_store::io_in_words(source))]
    Io { path: PathBuf, source: std::io::Error },
    #[error("invalid exclude pattern {pattern:?}: {reason}")]
    Exclude { pattern: String, reason: String },
    #[error("the operation was cancelled")]
    Cancelled,
    #[error("path {0:?} is not in the recovery point")]
    NotInPoint(String),
    #[error("invalid path {0:?}: it must not contain `..` or `.` components")]
    BadPointPath(String),
    #[error("domain definition {}: {reason}", path.display())]
    Domain { path: PathBuf, reason: String },
    #[error("disk {}: {reason}", path.display())]
    Disk { path: PathBuf, reason: String },
    #[error("drive {}: {reason}", path.display())]
    Drive { path: PathBuf, reason: String },
    #[error("restore target {}: {reason}", path.display())]
    Target { path: PathBuf, reason: String },
}

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io { path: path.into(), source }
    }

    /// The vault-level kind, when the failure came from the vault.
    pub fn vault_kind(&self) -> Option<boveda_vault::VaultErrorKind> {
        match self {
            EngineError::Vault(v) => Some(v.kind()),
            _ => None,
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

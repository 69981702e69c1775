use boveda_engine::EngineError;
use boveda_vault::{VaultError, VaultErrorKind};

/// The control plane's one public error type: what the CLI and the server
/// report. `kind` lets callers map it to exit or status codes.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("user configuration {path}: {reason}")]
    Config { path: String, reason: String },
    /// A bug: a panic caught inside a job.
    #[error("{0}")]
    Internal(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceErrorKind {
    Invalid,
    NotFound,
    Conflict,
    WrongPassphrase,
    Damaged,
    NoSpace,
    Cancelled,
    Other,
}

impl ServiceError {
    pub fn kind(&self) -> ServiceErrorKind {
        let vault_kind = |k| match k {
            VaultErrorKind::WrongPassphrase => ServiceErrorKind::WrongPassphrase,
            VaultErrorKind::Damaged | VaultErrorKind::Missing => ServiceErrorKind::Damaged,
            VaultErrorKind::NoSpace => ServiceErrorKind::NoSpace,
            VaultErrorKind::NotAVault | VaultErrorKind::NewerFormat | VaultErrorKind::Invalid => {
                ServiceErrorKind::Invalid
            }
            VaultErrorKind::Store => ServiceErrorKind::Other,
            VaultErrorKind::Busy => ServiceErrorKind::Conflict,
        };
        match self {
            ServiceError::Vault(v) => vault_kind(v.kind()),
            ServiceError::Engine(EngineError::Cancelled) => ServiceErrorKind::Cancelled,
            ServiceError::Engine(EngineError::Vault(v)) => vault_kind(v.kind()),
            ServiceError::Engine(EngineError::NotInPoint(_)) => ServiceErrorKind::NotFound,
            ServiceError::Engine(_) => ServiceErrorKind::Invalid,
            ServiceError::Invalid(_) | ServiceError::Config { .. } => ServiceErrorKind::Invalid,
            ServiceError::NotFound(_) => ServiceErrorKind::NotFound,
            ServiceError::Conflict(_) => ServiceErrorKind::Conflict,
            ServiceError::Internal(_) => ServiceErrorKind::Other,
        }
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

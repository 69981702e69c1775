use std::path::PathBuf;

use boveda_engine::EngineError;
use boveda_store::{StoreError, StoreErrorKind};
use boveda_vault::{VaultError, VaultErrorKind};

/// The control plane's one public error type: what the CLI and the server
/// report. `kind` lets callers map it to exit or status codes.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A file the control plane reads or writes itself (a staging folder,
    /// a drive, a configuration file), with what the system said.
    #[error("{}: {}", path.display(), boveda_store::io_in_words(source))]
    Io { path: PathBuf, source: std::io::Error },
    /// A store the control plane reaches itself (a secondary store, a
    /// vault's store before it is opened), with what the store said.
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// A field of the request at fault, named as the API's JSON names it
    /// (`retention.daily_days`); a front end may name it its own way.
    #[error("{field}: {message}")]
    Field { field: &'static str, message: String },
    /// Refused for a reason the user can act on: the message says why,
    /// the remedy what to do, as data (the CLI says it as a command).
    #[error("{message}")]
    Refused { kind: ServiceErrorKind, message: String, remedy: Remedy },
}

/// What a user can do about a refusal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Remedy {
    /// Look the name up among the vault's items.
    ListItems,
    /// Look the id up among the vault's jobs.
    ListJobs,
    /// Look the id up among the vault's alerts.
    ListAlerts,
    /// Look the name up among the vault's policies.
    ListPolicies,
    /// Look the id up among the vault's access tokens.
    ListTokens,
    /// Resume the item's protection with a policy (the one it had, when
    /// known).
    ResumeProtection { item: String, policy: Option<String> },
    /// Undelete the item's soft-deleted backup data.
    Undelete { item: String },
    /// Check the vault: the check names what a damaged object affects.
    CheckVault,
    /// Create a vault, or name one.
    CreateVault,
    /// Name one of the vaults known.
    ChooseVault,
    /// A registered host's identity is refused: it needs new credentials
    /// from the vault's admin, and to register again.
    RegisterHost,
    /// A registered host was refused something only the vault's admin can
    /// change (its items, its quota, what it may write).
    AskAdmin,
    /// A host cannot reach its vault's server.
    ReachServer { server: String },
    /// The vault's guard must approve the request (`crate::guard`), then
    /// the operation is run again.
    AskGuard { request: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceErrorKind {
    Invalid,
    NotFound,
    Conflict,
    WrongPassphrase,
    Damaged,
    NoSpace,
    /// The system or the store refused access (a file's permissions, a
    /// store credential without the right).
    PermissionDenied,
    Cancelled,
    /// The vault's guard must approve the operation first; a request for
    /// it was made (`crate::guard`).
    NeedsApproval,
    Other,
}

fn io_kind(e: &std::io::Error) -> ServiceErrorKind {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound => ServiceErrorKind::NotFound,
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => ServiceErrorKind::NoSpace,
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => ServiceErrorKind::PermissionDenied,
        // a path given that cannot be used as it is
        _ => ServiceErrorKind::Invalid,
    }
}

fn store_kind(kind: StoreErrorKind) -> ServiceErrorKind {
    match kind {
        StoreErrorKind::NotFound => ServiceErrorKind::NotFound,
        StoreErrorKind::AlreadyExists | StoreErrorKind::ConditionNotMet => ServiceErrorKind::Conflict,
        StoreErrorKind::NoSpace => ServiceErrorKind::NoSpace,
        StoreErrorKind::PermissionDenied => ServiceErrorKind::PermissionDenied,
        StoreErrorKind::InvalidName => ServiceErrorKind::Invalid,
        StoreErrorKind::RateLimited | StoreErrorKind::Unsupported | StoreErrorKind::Other => ServiceErrorKind::Other,
    }
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
            VaultErrorKind::NeedsApproval => ServiceErrorKind::NeedsApproval,
        };
        match self {
            // what the store said about an object of the vault: a vault
            // object not found is damage, not a request's fault
            ServiceError::Vault(VaultError::Store(e))
            | ServiceError::Engine(EngineError::Vault(VaultError::Store(e)))
                if e.kind() == StoreErrorKind::PermissionDenied =>
            {
                ServiceErrorKind::PermissionDenied
            }
            ServiceError::Vault(v) => vault_kind(v.kind()),
            ServiceError::Io { source, .. } | ServiceError::Engine(EngineError::Io { source, .. }) => io_kind(source),
            ServiceError::Store(e) => store_kind(e.kind()),
            ServiceError::Engine(EngineError::Cancelled) => ServiceErrorKind::Cancelled,
            ServiceError::Engine(EngineError::Vault(v)) => vault_kind(v.kind()),
            ServiceError::Engine(EngineError::NotInPoint(_)) => ServiceErrorKind::NotFound,
            ServiceError::Engine(_) => ServiceErrorKind::Invalid,
            ServiceError::Invalid(_) | ServiceError::Config { .. } => ServiceErrorKind::Invalid,
            ServiceError::NotFound(_) => ServiceErrorKind::NotFound,
            ServiceError::Conflict(_) => ServiceErrorKind::Conflict,
            ServiceError::Internal(_) => ServiceErrorKind::Other,
            ServiceError::Field { .. } => ServiceErrorKind::Invalid,
            ServiceError::Refused { kind, .. } => *kind,
        }
    }

    /// The request field at fault, if one is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ServiceError::Field { field, .. } => Some(field),
            _ => None,
        }
    }

    /// What the user can do about it, if the service knows.
    pub fn remedy(&self) -> Option<&Remedy> {
        match self {
            ServiceError::Refused { remedy, .. } => Some(remedy),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ServiceError::Io { path: path.into(), source }
    }

    pub(crate) fn field_error(field: &'static str, message: impl std::fmt::Display) -> Self {
        ServiceError::Field { field, message: message.to_string() }
    }

    pub fn refused(kind: ServiceErrorKind, message: String, remedy: Remedy) -> Self {
        ServiceError::Refused { kind, message, remedy }
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_or_store_error_keeps_what_the_lower_layer_said() {
        use std::io::{Error, ErrorKind};
        let io = |kind| ServiceError::io("/drive/objects/x", Error::from(kind));
        assert_eq!(io(ErrorKind::StorageFull).kind(), ServiceErrorKind::NoSpace);
        assert_eq!(io(ErrorKind::NotFound).kind(), ServiceErrorKind::NotFound);
        assert_eq!(io(ErrorKind::PermissionDenied).kind(), ServiceErrorKind::PermissionDenied);
        assert!(io(ErrorKind::StorageFull).to_string().starts_with("/drive/objects/x: "));
        let engine = ServiceError::from(EngineError::Io {
            path: "/restore/a".into(),
            source: Error::from(ErrorKind::StorageFull),
        });
        assert_eq!(engine.kind(), ServiceErrorKind::NoSpace);
        let store = |kind| ServiceError::from(StoreError::new(kind, "put", "packs/ab/x"));
        assert_eq!(store(StoreErrorKind::NoSpace).kind(), ServiceErrorKind::NoSpace);
        assert_eq!(store(StoreErrorKind::PermissionDenied).kind(), ServiceErrorKind::PermissionDenied);
        assert_eq!(store(StoreErrorKind::NotFound).kind(), ServiceErrorKind::NotFound);
        let through_vault =
            ServiceError::from(VaultError::from(StoreError::new(StoreErrorKind::PermissionDenied, "get", "x")));
        assert_eq!(through_vault.kind(), ServiceErrorKind::PermissionDenied);
    }
}

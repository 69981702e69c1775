use boveda_store::{StoreError, StoreErrorKind};

use crate::ChunkId;
use crate::ids::RecordId;

/// What went wrong, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaultErrorKind {
    /// The store failed (see the message for the object).
    Store,
    /// The store ran out of space.
    NoSpace,
    /// The location holds no vault.
    NotAVault,
    /// The vault was written by a newer boveda.
    NewerFormat,
    /// No key slot opens with the passphrase.
    WrongPassphrase,
    /// An object failed authentication or does not parse.
    Damaged,
    /// Something the vault refers to is absent.
    Missing,
    /// The request itself is invalid.
    Invalid,
    /// Another process holds what this one needs (the prune lease).
    Busy,
    /// The vault's guard must approve the operation first.
    NeedsApproval,
}

/// The vault layer's one public error type.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{location} is not a boveda vault (it has no config object)")]
    NotAVault { location: String },
    #[error(
        "the vault at {location} uses format version {found}, newer than this boveda supports ({supported}); upgrade boveda to open it"
    )]
    NewerFormat { location: String, found: u16, supported: u16 },
    #[error("wrong passphrase for the vault at {location} (no key slot of {slots} opens with it{})", skipped_slots(.damaged))]
    WrongPassphrase { location: String, slots: usize, damaged: Vec<(String, String)> },
    #[error("object {object} is damaged: {reason}")]
    Damaged { object: String, reason: String },
    #[error("chunk {chunk} is not in any index of the vault")]
    MissingChunk { chunk: ChunkId },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Busy(String),
    #[error(
        "{operation} needs the approval of guard {guard}: request {} {}; once the guard approves it (its code: boveda guard show {}), run this again",
        request.short(),
        if *new { "was made" } else { "is waiting" },
        request.short()
    )]
    NeedsApproval { guard: String, request: RecordId, operation: String, new: bool },
}

impl VaultError {
    pub fn kind(&self) -> VaultErrorKind {
        match self {
            VaultError::Store(e) if e.kind() == StoreErrorKind::NoSpace => VaultErrorKind::NoSpace,
            VaultError::Store(e) if e.kind() == StoreErrorKind::NotFound => VaultErrorKind::Missing,
            VaultError::Store(_) => VaultErrorKind::Store,
            VaultError::NotAVault { .. } => VaultErrorKind::NotAVault,
            VaultError::NewerFormat { .. } => VaultErrorKind::NewerFormat,
            VaultError::WrongPassphrase { .. } => VaultErrorKind::WrongPassphrase,
            VaultError::Damaged { .. } => VaultErrorKind::Damaged,
            VaultError::MissingChunk { .. } | VaultError::NotFound(_) => VaultErrorKind::Missing,
            VaultError::Invalid(_) => VaultErrorKind::Invalid,
            VaultError::Busy(_) => VaultErrorKind::Busy,
            VaultError::NeedsApproval { .. } => VaultErrorKind::NeedsApproval,
        }
    }

    pub(crate) fn damaged(object: impl Into<String>, reason: impl ToString) -> Self {
        VaultError::Damaged { object: object.into(), reason: reason.to_string() }
    }
}

fn skipped_slots(damaged: &[(String, String)]) -> String {
    damaged.iter().map(|(name, why)| format!("; {name} skipped: damaged, {why}")).collect()
}

pub type Result<T, E = VaultError> = std::result::Result<T, E>;

//! Multi-user authorization: a vault bound to a **guard** runs a critical
//! operation only with the guard's approval (docs/SECURITY.md).
//!
//! The guard is a second authority, held by someone other than the vault's
//! admins: an Ed25519 key derived from the guard's own passphrase. The
//! vault keeps only its public key, in its settings ([`GuardBinding`]). An
//! operation that needs approval is refused with a request
//! ([`GuardRequest`], a catalog record); the guard signs an approval of
//! that request, for that operation's digest, until an expiry; the admin
//! runs the operation again and [`Vault::guard_authorize`] finds the
//! approval, checks its signature against the bound key, and marks it used
//! by compare-and-swap, so it goes through once. Whoever holds the vault's
//! passphrase can write catalog records, but cannot sign: an approval is
//! never taken on the word of the record that carries it.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{Result, VaultError};
use crate::ids::RecordId;

use super::{Vault, VaultSettings};

const REQUESTS_KIND: &str = "guard-requests";
/// How long an approval may last at most.
pub const APPROVAL_MAX: SignedDuration = SignedDuration::from_hours(24);
/// How long an approval lasts unless the guard says otherwise.
pub const APPROVAL_DEFAULT: SignedDuration = SignedDuration::from_hours(4);
/// A request not approved within this time is stale; running the
/// operation again makes a new one.
pub const REQUEST_LIFETIME: SignedDuration = SignedDuration::from_hours(7 * 24);

/// The guard a vault is bound to: its name, id and public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardBinding {
    pub name: String,
    /// The guard's id, also the salt its key is derived with.
    pub id: RecordId,
    /// Ed25519 public key, hex.
    pub public_key: String,
    pub bound: Timestamp,
}

/// An operation that needs the guard's approval on a bound vault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardedOp {
    /// What is done, such as `disable immutability` or `delete backup data`.
    pub action: String,
    /// What it is done to: the vault, an item, a policy, a key.
    pub target: String,
    /// What exactly changes, so that an approval of one change is not one
    /// of another to the same target.
    pub detail: String,
}

impl GuardedOp {
    pub fn new(action: impl Into<String>, target: impl Into<String>, detail: impl Into<String>) -> Self {
        GuardedOp { action: action.into(), target: target.into(), detail: detail.into() }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        if self.detail.is_empty() {
            format!("{} of {}", self.action, self.target)
        } else {
            format!("{} of {} ({})", self.action, self.target, self.detail)
        }
    }

    /// SHA-256 of the operation's fields, each after its length (8 bytes,
    /// little-endian), hex: what an approval signs. SHA-256 so that a
    /// browser works it out with WebCrypto from what it shows.
    pub fn digest(&self) -> String {
        let mut bytes = Vec::new();
        for part in [&self.action, &self.target, &self.detail] {
            bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
            bytes.extend_from_slice(part.as_bytes());
        }
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes))
    }
}

/// The guard's signed yes to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardApproval {
    /// Who submitted it (a token, a host), for the record.
    pub approved_by: String,
    pub approved: Timestamp,
    pub expires: Timestamp,
    /// Ed25519 signature of [`approval_message`], hex.
    pub signature: String,
}

/// A request for the guard's approval, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardRequest {
    pub id: RecordId,
    /// The guard the vault was bound to when it was made.
    pub guard: RecordId,
    pub operation: GuardedOp,
    pub digest: String,
    pub requested_by: String,
    pub requested: Timestamp,
    pub approval: Option<GuardApproval>,
    pub used: Option<Timestamp>,
    pub used_by: Option<String>,
    pub rejected: Option<Timestamp>,
}

/// Where a request stands at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum GuardRequestState {
    Pending,
    Approved,
    Used,
    Rejected,
    Expired,
}

impl GuardRequestState {
    pub fn as_str(&self) -> &'static str {
        match self {
            GuardRequestState::Pending => "Pending",
            GuardRequestState::Approved => "Approved",
            GuardRequestState::Used => "Used",
            GuardRequestState::Rejected => "Rejected",
            GuardRequestState::Expired => "Expired",
        }
    }
}

impl GuardRequest {
    pub fn state(&self, now: Timestamp) -> GuardRequestState {
        if self.used.is_some() {
            GuardRequestState::Used
        } else if self.rejected.is_some() {
            GuardRequestState::Rejected
        } else if let Some(a) = &self.approval {
            if a.expires > now { GuardRequestState::Approved } else { GuardRequestState::Expired }
        } else if self.requested + REQUEST_LIFETIME > now {
            GuardRequestState::Pending
        } else {
            GuardRequestState::Expired
        }
    }
}

/// What [`Vault::guard_authorize`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardOutcome {
    /// The vault has no guard: nothing to approve.
    NotGuarded,
    /// The operation was approved, and this approval is now used.
    Approved(Box<GuardRequest>),
}

/// The bytes the guard signs to approve `request` of vault `vault` until
/// `expires`.
pub fn approval_message(vault: &RecordId, request: &RecordId, digest: &str, expires: Timestamp) -> Vec<u8> {
    format!(
        "boveda guard approval v1\nvault {}\nrequest {}\noperation {digest}\nexpires {}\n",
        vault.to_hex(),
        request.to_hex(),
        expires.as_second()
    )
    .into_bytes()
}

/// Whether `approval` is the bound guard's signature of `request`.
pub fn approval_is_signed(
    binding: &GuardBinding,
    vault: &RecordId,
    request: &GuardRequest,
    approval: &GuardApproval,
) -> bool {
    let (Ok(key), Ok(sig)) = (hex::decode(&binding.public_key), hex::decode(&approval.signature)) else {
        return false;
    };
    let message = approval_message(vault, &request.id, &request.digest, approval.expires);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key).verify(&message, &sig).is_ok()
}

/// The settings changes that need the guard's approval, in words; empty
/// when none does.
pub fn guarded_changes(old: &VaultSettings, new: &VaultSettings) -> Vec<String> {
    let mut changes = Vec::new();
    if !old.immutability.is_disabled() && new.immutability.is_disabled() {
        changes.push(format!("immutability {} to disabled", old.immutability.as_str()));
    }
    if new.soft_delete_days < old.soft_delete_days {
        changes.push(format!("soft delete {} to {} days", old.soft_delete_days, new.soft_delete_days));
    }
    if old.soft_delete_always_on && !new.soft_delete_always_on {
        changes.push("always-on soft delete turned off".into());
    }
    if old.secondary != new.secondary && old.secondary.is_some() {
        changes.push(match &new.secondary {
            Some(s) => format!("secondary store changed to {s}"),
            None => "secondary store removed".into(),
        });
    }
    if old.guard.is_some() && new.guard.as_ref().map(|g| &g.id) != old.guard.as_ref().map(|g| &g.id) {
        changes.push(match &new.guard {
            Some(g) => format!("guard replaced by {}", g.name),
            None => "guard unbound".into(),
        });
    }
    changes
}

impl Vault {
    /// Every request for the guard's approval, oldest first.
    ///
    /// # Errors
    /// A store error.
    pub fn guard_requests(&self) -> Result<Vec<GuardRequest>> {
        let mut all: Vec<GuardRequest> = self.catalog_list(REQUESTS_KIND)?.into_iter().map(|(_, r)| r).collect();
        all.sort_by(|a, b| a.requested.cmp(&b.requested).then(a.id.cmp(&b.id)));
        Ok(all)
    }

    /// The request whose id starts with `prefix`.
    ///
    /// # Errors
    /// `NotFound`; `Invalid` for a prefix of several.
    pub fn guard_request(&self, prefix: &str) -> Result<GuardRequest> {
        let all = self.guard_requests()?;
        let hits: Vec<&GuardRequest> =
            all.iter().filter(|r| !prefix.is_empty() && r.id.to_hex().starts_with(&prefix.to_lowercase())).collect();
        match hits.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(VaultError::NotFound(format!("guard request {prefix:?}"))),
            _ => Err(VaultError::Invalid(format!("guard request id {prefix:?} matches several requests"))),
        }
    }

    /// Lets `op` go through once if the vault has no guard or the guard
    /// approved it; otherwise refuses with a request for approval (the
    /// pending one for the same operation, or a new one).
    ///
    /// # Errors
    /// `NeedsApproval` naming the request; a store error.
    pub fn guard_authorize(&self, op: &GuardedOp, by: &str, now: Timestamp) -> Result<GuardOutcome> {
        self.refresh_settings()?;
        let Some(binding) = self.settings().guard.clone() else { return Ok(GuardOutcome::NotGuarded) };
        let vault = self.config().id;
        let digest = op.digest();
        let requests = self.guard_requests()?;
        let mine = |r: &&GuardRequest| r.digest == digest && r.guard == binding.id;
        for r in requests.iter().filter(mine).filter(|r| r.state(now) == GuardRequestState::Approved) {
            let Some(approval) = &r.approval else { continue };
            if !approval_is_signed(&binding, &vault, r, approval) {
                continue;
            }
            let mut taken = false;
            let used = self.catalog_update(REQUESTS_KIND, &r.id, |current: Option<GuardRequest>| {
                let mut c = current.ok_or_else(|| VaultError::NotFound(format!("guard request {}", r.id.short())))?;
                taken = c.used.is_none() && c.approval.as_ref() == Some(approval);
                if !taken {
                    return Ok(Some(c));
                }
                c.used = Some(now);
                c.used_by = Some(by.to_string());
                Ok(Some(c))
            })?;
            if taken && let Some(used) = used {
                return Ok(GuardOutcome::Approved(Box::new(used)));
            }
        }
        let pending = requests.iter().filter(mine).find(|r| r.state(now) == GuardRequestState::Pending);
        let (request, new) = match pending {
            Some(r) => (r.clone(), false),
            None => {
                let r = GuardRequest {
                    id: RecordId::random(),
                    guard: binding.id,
                    operation: op.clone(),
                    digest,
                    requested_by: by.to_string(),
                    requested: now,
                    approval: None,
                    used: None,
                    used_by: None,
                    rejected: None,
                };
                self.catalog_put(REQUESTS_KIND, &r.id, Some(&r))?;
                (r, true)
            }
        };
        Err(VaultError::NeedsApproval {
            guard: binding.name,
            request: request.id,
            operation: request.operation.describe(),
            new,
        })
    }

    /// Records the guard's approval of request `prefix`, after checking
    /// that the bound guard signed it and that it has not expired, does not
    /// outlast [`APPROVAL_MAX`], and was not submitted by whoever made the
    /// request.
    ///
    /// # Errors
    /// `Invalid` for a bad signature, an expiry out of bounds, an approver
    /// who made the request, a request no longer pending; `NotFound`.
    pub fn guard_approve(&self, prefix: &str, approval: GuardApproval, now: Timestamp) -> Result<GuardRequest> {
        self.refresh_settings()?;
        let binding =
            self.settings().guard.clone().ok_or_else(|| VaultError::Invalid("the vault has no guard".into()))?;
        let request = self.guard_request(prefix)?;
        if request.guard != binding.id {
            return Err(VaultError::Invalid(format!(
                "request {} was made for another guard than {}",
                request.id.short(),
                binding.name
            )));
        }
        if approval.approved_by == request.requested_by {
            return Err(VaultError::Invalid(format!(
                "request {} was made by {}: it cannot approve its own request",
                request.id.short(),
                request.requested_by
            )));
        }
        if approval.expires <= now || approval.expires > now + APPROVAL_MAX + SignedDuration::from_mins(5) {
            return Err(VaultError::Invalid(format!(
                "an approval expires within {} hours of now, not at {}",
                APPROVAL_MAX.as_hours(),
                approval.expires
            )));
        }
        if !approval_is_signed(&binding, &self.config().id, &request, &approval) {
            return Err(VaultError::Invalid(format!(
                "the approval of request {} is not signed by guard {} (wrong guard passphrase?)",
                request.id.short(),
                binding.name
            )));
        }
        let written = self.catalog_update(REQUESTS_KIND, &request.id, |current: Option<GuardRequest>| {
            let mut c = current.ok_or_else(|| VaultError::NotFound(format!("guard request {}", request.id.short())))?;
            let state = c.state(now);
            if state != GuardRequestState::Pending {
                return Err(VaultError::Invalid(format!(
                    "request {} is {}, not pending: it cannot be approved",
                    c.id.short(),
                    state.as_str()
                )));
            }
            c.approval = Some(approval.clone());
            Ok(Some(c))
        })?;
        written.ok_or_else(|| VaultError::NotFound(format!("guard request {}", request.id.short())))
    }

    /// Rejects a pending request (by the guard).
    ///
    /// # Errors
    /// As [`Vault::guard_approve`] for the request's state.
    pub fn guard_reject(&self, prefix: &str, now: Timestamp) -> Result<GuardRequest> {
        let request = self.guard_request(prefix)?;
        let written = self.catalog_update(REQUESTS_KIND, &request.id, |current: Option<GuardRequest>| {
            let mut c = current.ok_or_else(|| VaultError::NotFound(format!("guard request {}", request.id.short())))?;
            if c.state(now) != GuardRequestState::Pending {
                return Err(VaultError::Invalid(format!("request {} is not pending", c.id.short())));
            }
            c.rejected = Some(now);
            Ok(Some(c))
        })?;
        written.ok_or_else(|| VaultError::NotFound(format!("guard request {}", request.id.short())))
    }
}

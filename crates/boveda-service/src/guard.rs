//! Multi-user authorization as people use it: creating a guard, binding a
//! vault to it, the guard's approvals (by code, CLI or API), and each
//! request, approval and use recorded as a job. The vault crate enforces
//! it (`boveda_vault::Vault::guard_authorize`); see docs/SECURITY.md.
//!
//! A guard's key is derived from its passphrase (PBKDF2-HMAC-SHA256 with
//! the guard's id as salt, then an Ed25519 seed), so the guard keeps no key
//! file, and a browser derives the same key with WebCrypto.

use std::num::NonZeroU32;

use base64::Engine as _;
use boveda_vault::{GuardApproval, GuardBinding, GuardOutcome, GuardRequest, GuardedOp, RecordId, Vault, VaultError};
use jiff::{SignedDuration, Timestamp};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};
use crate::runtime::clock::Clock;
use crate::runtime::job::{JobDone, JobSpec, Observers, Operation, run_job};

/// What a guard's public identity starts with.
pub const GUARD_PREFIX: &str = "bvg_";
/// PBKDF2 rounds deriving a guard's key from its passphrase.
pub const KDF_ROUNDS: u32 = 600_000;
/// A guard passphrase is at least this long: its public key is in every
/// bound vault's settings, so a short one could be guessed offline.
pub const MIN_PASSPHRASE: usize = 12;

/// A guard's public identity: its id and public key, as `bvg_<id><key>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardKey {
    pub id: RecordId,
    pub public_key: String,
}

impl GuardKey {
    pub fn encode(&self) -> String {
        format!("{GUARD_PREFIX}{}{}", self.id.to_hex(), self.public_key)
    }

    /// # Errors
    /// `Field` (`guard`) when it is not a guard's identity.
    pub fn parse(text: &str) -> Result<GuardKey> {
        let bad = || {
            ServiceError::field_error(
                "guard",
                "not a guard's identity (bvg_ and 96 hex digits, from `boveda guard create`)",
            )
        };
        let rest = text.trim().strip_prefix(GUARD_PREFIX).ok_or_else(bad)?;
        if rest.len() != 96 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let id = RecordId::from_hex(&rest[..32]).ok_or_else(bad)?;
        Ok(GuardKey { id, public_key: rest[32..].to_ascii_lowercase() })
    }
}

fn key_pair(passphrase: &str, id: &RecordId) -> Result<Ed25519KeyPair> {
    let mut seed = [0u8; 32];
    let rounds = NonZeroU32::new(KDF_ROUNDS).unwrap_or(NonZeroU32::MIN);
    let salt = format!("boveda guard {}", id.to_hex());
    ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, rounds, salt.as_bytes(), passphrase.as_bytes(), &mut seed);
    Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| ServiceError::Internal("guard key derivation".into()))
}

/// Makes a new guard from its passphrase; the identity to bind vaults to.
///
/// # Errors
/// `Field` (`passphrase`) for one shorter than [`MIN_PASSPHRASE`].
pub fn create_guard(passphrase: &str) -> Result<GuardKey> {
    if passphrase.chars().count() < MIN_PASSPHRASE {
        return Err(ServiceError::field_error(
            "passphrase",
            format!("a guard passphrase has at least {MIN_PASSPHRASE} characters"),
        ));
    }
    let id = RecordId::random();
    let pair = key_pair(passphrase, &id)?;
    Ok(GuardKey { id, public_key: hex_of(pair.public_key().as_ref()) })
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the guard is shown of a request, and signs: one string to copy
/// between people (`boveda guard approve CODE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCode {
    pub vault: RecordId,
    pub vault_name: String,
    pub request: RecordId,
    pub guard: RecordId,
    pub operation: GuardedOp,
    pub requested_by: String,
    pub requested: Timestamp,
}

/// The guard's approval as one string for the admin
/// (`boveda guard accept CODE`, or the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalCode {
    pub request: RecordId,
    pub expires: Timestamp,
    pub signature: String,
}

fn encode<T: Serialize>(value: &T) -> Result<String> {
    let json = serde_json::to_vec(value).map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
}

fn decode<T: serde::de::DeserializeOwned>(field: &'static str, code: &str) -> Result<T> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(code.trim())
        .map_err(|_| ServiceError::field_error(field, "not a code boveda printed (it does not decode)"))?;
    serde_json::from_slice(&bytes).map_err(|_| ServiceError::field_error(field, "not a code boveda printed"))
}

impl RequestCode {
    pub fn of(vault: &Vault, request: &GuardRequest) -> RequestCode {
        RequestCode {
            vault: vault.config().id,
            vault_name: vault.settings().name.clone(),
            request: request.id,
            guard: request.guard,
            operation: request.operation.clone(),
            requested_by: request.requested_by.clone(),
            requested: request.requested,
        }
    }

    /// # Errors
    /// Never in practice (JSON of plain values).
    pub fn encode(&self) -> Result<String> {
        encode(self)
    }

    /// # Errors
    /// `Field` (`code`).
    pub fn decode(code: &str) -> Result<RequestCode> {
        decode("code", code)
    }
}

impl ApprovalCode {
    /// # Errors
    /// Never in practice.
    pub fn encode(&self) -> Result<String> {
        encode(self)
    }

    /// # Errors
    /// `Field` (`approval`).
    pub fn decode(code: &str) -> Result<ApprovalCode> {
        decode("approval", code)
    }
}

/// The guard's side: signs an approval of the request in `code` with the
/// key its passphrase derives, valid for `valid_for` from `now`.
///
/// # Errors
/// `Field` for a code of another guard, or an operation whose digest is
/// not the one shown; `Invalid` for a validity out of bounds.
pub fn sign_approval(
    code: &RequestCode,
    guard: &GuardKey,
    passphrase: &str,
    valid_for: SignedDuration,
    now: Timestamp,
) -> Result<ApprovalCode> {
    if code.guard != guard.id {
        return Err(ServiceError::field_error("code", "the request is for another guard"));
    }
    if valid_for <= SignedDuration::ZERO || valid_for > boveda_vault::APPROVAL_MAX {
        return Err(ServiceError::field_error("expires", "an approval lasts more than nothing and at most 24 hours"));
    }
    let pair = key_pair(passphrase, &guard.id)?;
    if hex_of(pair.public_key().as_ref()) != guard.public_key {
        return Err(ServiceError::refused(
            crate::error::ServiceErrorKind::WrongPassphrase,
            format!("wrong passphrase for guard {}", guard.encode()),
            crate::error::Remedy::AskAdmin,
        ));
    }
    let expires = now + valid_for;
    // the digest is worked out here from what is shown, never taken from
    // the code: what is approved is what the guard read
    let message = boveda_vault::approval_message(&code.vault, &code.request, &code.operation.digest(), expires);
    Ok(ApprovalCode { request: code.request, expires, signature: hex_of(pair.sign(&message).as_ref()) })
}

/// Binds `vault` to a guard (or replaces its guard: that needs the current
/// guard's approval).
///
/// # Errors
/// `Field` for a malformed identity; `NeedsApproval`; a store error.
pub fn bind_guard(vault: &Vault, identity: &str, name: &str, by: &str, clock: &dyn Clock) -> Result<GuardBinding> {
    let key = GuardKey::parse(identity)?;
    let name = name.trim().to_string();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ServiceError::field_error("name", "a guard's name is 1 to 64 printable characters"));
    }
    let binding = GuardBinding { name, id: key.id, public_key: key.public_key, bound: clock.now() };
    let b = binding.clone();
    let result = vault.change_settings_by(by, clock.now(), move |s| s.guard = Some(b.clone()));
    recorded(vault, clock, by, result.map_err(ServiceError::from))?;
    Ok(binding)
}

/// Unbinds the vault's guard, with its approval.
///
/// # Errors
/// `Invalid` when there is none; `NeedsApproval`; a store error.
pub fn unbind_guard(vault: &Vault, by: &str, clock: &dyn Clock) -> Result<()> {
    vault.refresh_settings()?;
    if vault.settings().guard.is_none() {
        return Err(ServiceError::Invalid(format!("vault {} has no guard", vault.settings().name)));
    }
    let result = vault.change_settings_by(by, clock.now(), |s| s.guard = None);
    recorded(vault, clock, by, result.map_err(ServiceError::from))
}

/// Asks the guard before `op`: goes on when it approved (recording the
/// use) or when the vault has no guard; otherwise refuses with the request
/// (recording a new one).
///
/// # Errors
/// `NeedsApproval`; a store error.
pub fn authorize(vault: &Vault, op: &GuardedOp, by: &str, clock: &dyn Clock) -> Result<()> {
    let result = vault.guard_authorize(op, by, clock.now()).map_err(ServiceError::from);
    recorded(vault, clock, by, result)
}

/// Records what a guarded operation's check did: a new request, or an
/// approval used; passes the refusal on.
///
/// # Errors
/// The refusal; a store error recording the job.
pub fn recorded(vault: &Vault, clock: &dyn Clock, by: &str, result: Result<GuardOutcome>) -> Result<()> {
    match result {
        Ok(GuardOutcome::NotGuarded) => Ok(()),
        Ok(GuardOutcome::Approved(r)) => {
            let approver = r.approval.as_ref().map_or("?", |a| a.approved_by.as_str());
            job(
                vault,
                clock,
                by,
                Operation::GuardUse,
                format!("request {} used: {} (approved by {approver})", r.id.short(), r.operation.describe()),
            )
        }
        Err(ServiceError::Vault(VaultError::NeedsApproval { request, operation, new, guard })) => {
            if new {
                let detail = format!("request {} made for guard {guard}: {operation}", request.short());
                job(vault, clock, by, Operation::GuardRequest, detail)?;
            }
            Err(ServiceError::Vault(VaultError::NeedsApproval { request, operation, new, guard }))
        }
        Err(e) => Err(e),
    }
}

/// [`recorded`] for an operation that returns a value with its outcome.
///
/// # Errors
/// As [`recorded`].
pub fn recorded_with<T>(
    vault: &Vault,
    clock: &dyn Clock,
    by: &str,
    result: std::result::Result<(T, GuardOutcome), VaultError>,
) -> Result<T> {
    match result {
        Ok((value, outcome)) => recorded(vault, clock, by, Ok(outcome)).map(|()| value),
        Err(e) => recorded(vault, clock, by, Err(e.into())).and(Err(ServiceError::Internal("a refusal lost".into()))),
    }
}

fn job(vault: &Vault, clock: &dyn Clock, by: &str, operation: Operation, detail: String) -> Result<()> {
    let spec = JobSpec {
        operation,
        item: None,
        scheduled_for: None,
        heartbeat: crate::runtime::job::DEFAULT_HEARTBEAT,
        hostname: by.to_string(),
        started: None,
        id: None,
        workers: false,
    };
    let (_, result) = run_job(vault, clock, &spec, Observers::default(), |_| {
        Ok(((), JobDone { details: vec![detail], ..JobDone::default() }))
    })?;
    result
}

/// Records the guard's approval (an [`ApprovalCode`]) of a request,
/// submitted by `by`, as a `GuardApproval` job.
///
/// # Errors
/// `Invalid` for a signature not the guard's, an expiry out of bounds, a
/// request not pending or made by `by`; `NotFound`.
pub fn approve(vault: &Vault, code: &ApprovalCode, by: &str, clock: &dyn Clock) -> Result<GuardRequest> {
    let now = clock.now();
    let approval = GuardApproval {
        approved_by: by.to_string(),
        approved: now,
        expires: code.expires,
        signature: code.signature.clone(),
    };
    let request = vault.guard_approve(&code.request.to_hex(), approval, now)?;
    job(
        vault,
        clock,
        by,
        Operation::GuardApproval,
        format!("request {} approved until {}: {}", request.id.short(), code.expires, request.operation.describe()),
    )?;
    Ok(request)
}

/// Rejects a pending request, as a `GuardApproval` job that says so.
///
/// # Errors
/// `NotFound`; `Invalid` for a request not pending.
pub fn reject(vault: &Vault, request: &str, by: &str, clock: &dyn Clock) -> Result<GuardRequest> {
    let r = vault.guard_reject(request, clock.now())?;
    job(
        vault,
        clock,
        by,
        Operation::GuardApproval,
        format!("request {} rejected: {}", r.id.short(), r.operation.describe()),
    )?;
    Ok(r)
}

/// A vault's guard and its requests, as shown to people.
#[derive(Debug, Clone, Serialize)]
pub struct GuardView {
    pub vault: RecordId,
    pub guard: Option<GuardBinding>,
    pub requests: Vec<RequestView>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    #[serde(flatten)]
    pub request: GuardRequest,
    pub state: &'static str,
    pub description: String,
    /// What `boveda guard approve` takes.
    pub code: String,
}

/// The vault's guard and every request, newest first.
///
/// # Errors
/// A store error.
pub fn guard_view(vault: &Vault, now: Timestamp) -> Result<GuardView> {
    vault.refresh_settings()?;
    let mut requests = Vec::new();
    for r in vault.guard_requests()?.into_iter().rev() {
        requests.push(RequestView {
            state: r.state(now).as_str(),
            description: r.operation.describe(),
            code: RequestCode::of(vault, &r).encode()?,
            request: r,
        });
    }
    Ok(GuardView { vault: vault.config().id, guard: vault.settings().guard.clone(), requests })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_identity_round_trips_and_junk_is_refused() {
        let key = GuardKey { id: RecordId::random(), public_key: "ab".repeat(32) };
        assert_eq!(GuardKey::parse(&key.encode()).ok(), Some(key));
        for bad in ["", "bvg_", "bvg_zz", &format!("bvt_{}", "a".repeat(96))] {
            assert!(GuardKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_short_guard_passphrase_is_refused() {
        assert!(matches!(create_guard("short"), Err(ServiceError::Field { field: "passphrase", .. })));
    }
}

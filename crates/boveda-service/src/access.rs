//! Who may use a served vault: access tokens with a role, optionally
//! scoped to some items.
//!
//! A token is printed once, when it is created; the vault keeps only the
//! BLAKE3 hash of its secret part, in its catalog. The roles are Azure
//! Backup's:
//! - **Reader** sees everything and changes nothing;
//! - **Operator** may also back up now, restore and stop jobs;
//! - **Contributor** may do everything (vaults, policies, protection,
//!   deleting backup data, tokens), but approve the guard's requests;
//! - **SecurityAdmin** may only see the vault's guard and its requests and
//!   submit the guard's approvals (which only the guard's passphrase can
//!   sign: `crate::guard`); it sees nothing else.
//!
//! A token scoped to items sees only those items, their points and jobs,
//! and nothing of the vault as a whole that would reveal the others.

use boveda_vault::{RecordId, Vault};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError, ServiceErrorKind};
use crate::items::find_item;

const TOKENS: &str = "tokens";
/// What every token starts with, so that a leaked one is recognizable.
pub const TOKEN_PREFIX: &str = "bvd_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// First, so that it ranks below every other role (a token's most
    /// capable grant is never its SecurityAdmin one).
    SecurityAdmin,
    Reader,
    Operator,
    Contributor,
}

/// What a request needs of its token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Permission {
    /// See.
    Read,
    /// Back up now, restore, stop jobs.
    Operate,
    /// Change configuration or delete data.
    Manage,
    /// See the guard and its requests: every role.
    SeeGuard,
    /// Submit the guard's approval or rejection of a request.
    Guard,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Reader, Role::Operator, Role::Contributor, Role::SecurityAdmin];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Reader => "Reader",
            Role::Operator => "Operator",
            Role::Contributor => "Contributor",
            Role::SecurityAdmin => "SecurityAdmin",
        }
    }

    pub fn parse(s: &str) -> Result<Role> {
        Role::ALL.into_iter().find(|r| r.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            ServiceError::field_error("role", format!("{s:?} is not Reader, Operator, Contributor or SecurityAdmin"))
        })
    }

    pub fn allows(&self, needed: Permission) -> bool {
        let admin = *self == Role::SecurityAdmin;
        match needed {
            Permission::Read => !admin,
            Permission::Operate => matches!(self, Role::Operator | Role::Contributor),
            Permission::Manage => *self == Role::Contributor,
            Permission::SeeGuard => true,
            Permission::Guard => admin,
        }
    }
}

/// An item a token is scoped to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopedItem {
    pub id: RecordId,
    pub name: String,
}

/// A token as it is shown: everything but its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessToken {
    pub id: RecordId,
    pub role: Role,
    /// The items it may see; empty for all.
    pub items: Vec<ScopedItem>,
    pub description: String,
    pub created: Timestamp,
    pub created_on: String,
    pub expires: Option<Timestamp>,
    pub revoked: Option<Timestamp>,
}

impl AccessToken {
    /// Who this token is, in a guard's records: `token <id> (<role>: <description>)`.
    pub fn by(&self) -> String {
        let what = if self.description.is_empty() { String::new() } else { format!(": {}", self.description) };
        format!("token {} ({}{what})", self.id.short(), self.role.as_str())
    }

    /// Whether the token may see this item.
    pub fn sees_item(&self, id: &RecordId) -> bool {
        self.items.is_empty() || self.items.iter().any(|i| i.id == *id)
    }

    /// Whether the token is limited to some items.
    pub fn is_scoped(&self) -> bool {
        !self.items.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    token: AccessToken,
    /// BLAKE3 of the secret part, hex.
    secret_hash: String,
}

/// A request for a new token.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewToken {
    pub role: String,
    #[serde(default)]
    pub items: Vec<String>,
    #[serde(default)]
    pub description: String,
    /// When it stops working: a date (the end of that day) or a time;
    /// none for never.
    #[serde(default)]
    pub expires: Option<String>,
}

/// Why a presented token was not accepted. All are "401" to a client; the
/// reason is for the server's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TokenRefusal {
    Missing,
    Malformed,
    Unknown,
    Expired,
    Revoked,
}

impl TokenRefusal {
    pub fn as_str(&self) -> &'static str {
        match self {
            TokenRefusal::Missing => "no token given",
            TokenRefusal::Malformed => "the token is malformed",
            TokenRefusal::Unknown => "the token is not known",
            TokenRefusal::Expired => "the token has expired",
            TokenRefusal::Revoked => "the token was revoked",
        }
    }
}

fn hash_secret(secret: &str) -> blake3::Hash {
    blake3::hash(secret.as_bytes())
}

/// Splits `bvd_<id hex><secret hex>`.
fn split(presented: &str) -> Option<(RecordId, &str)> {
    let rest = presented.strip_prefix(TOKEN_PREFIX)?;
    if rest.len() != 96 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((RecordId::from_hex(&rest[..32])?, &rest[32..]))
}

/// Creates a token; returns it and the string to give the client, which
/// is not kept anywhere.
///
/// # Errors
/// `Field` for an unknown role (`role`), an unknown item (`items`) or an
/// expiry not in the future (`expires`); a store error.
pub fn create_token(vault: &Vault, req: &NewToken, now: Timestamp, hostname: &str) -> Result<(AccessToken, String)> {
    let role = Role::parse(&req.role)?;
    let expires = req
        .expires
        .as_deref()
        .map(|text| {
            let t = crate::model::time_input::parse_retain_until(text, now, &jiff::tz::TimeZone::system())?;
            if t <= now {
                return Err(ServiceError::Invalid(format!("{text:?} is not in the future")));
            }
            Ok(t)
        })
        .transpose()
        .map_err(|e| ServiceError::field_error("expires", e))?;
    let mut items = Vec::new();
    for name in &req.items {
        let item = find_item(vault, name).map_err(|e| ServiceError::field_error("items", e))?;
        if !items.iter().any(|i: &ScopedItem| i.id == item.id) {
            items.push(ScopedItem { id: item.id, name: item.name });
        }
    }
    let id = RecordId::random();
    let secret = format!("{}{}", RecordId::random().to_hex(), RecordId::random().to_hex());
    let token = AccessToken {
        id,
        role,
        items,
        description: req.description.clone(),
        created: now,
        created_on: hostname.to_string(),
        expires,
        revoked: None,
    };
    let record = TokenRecord { token: token.clone(), secret_hash: hash_secret(&secret).to_hex().to_string() };
    vault.catalog_put(TOKENS, &id, Some(&record))?;
    Ok((token, format!("{TOKEN_PREFIX}{}{secret}", id.to_hex())))
}

/// Every token of the vault, oldest first, revoked ones too.
///
/// # Errors
/// A store error.
pub fn list_tokens(vault: &Vault) -> Result<Vec<AccessToken>> {
    Ok(TokenSet::load(vault)?.records.into_iter().map(|r| r.token).collect())
}

/// Revokes the token whose id starts with `id_prefix`; it is refused from
/// then on (by a running server within [`TokenSet`]'s reload period).
///
/// # Errors
/// `NotFound`, `Invalid` for an ambiguous prefix, `Conflict` when already
/// revoked.
pub fn revoke_token(vault: &Vault, id_prefix: &str, now: Timestamp) -> Result<AccessToken> {
    let set = TokenSet::load(vault)?;
    let matches: Vec<&TokenRecord> =
        set.records.iter().filter(|r| !id_prefix.is_empty() && r.token.id.to_hex().starts_with(id_prefix)).collect();
    let record = match matches.as_slice() {
        [one] => *one,
        [] => {
            return Err(ServiceError::refused(
                ServiceErrorKind::NotFound,
                format!("no token with id {id_prefix:?} in this vault"),
                crate::error::Remedy::ListTokens,
            ));
        }
        _ => return Err(ServiceError::Invalid(format!("token id prefix {id_prefix:?} matches several tokens"))),
    };
    if record.token.revoked.is_some() {
        return Err(ServiceError::Conflict(format!("token {} is already revoked", record.token.id.short())));
    }
    let mut revoked = record.clone();
    revoked.token.revoked = Some(now);
    vault.catalog_put(TOKENS, &revoked.token.id, Some(&revoked))?;
    Ok(revoked.token)
}

/// Gives a token of one vault the same access to another (the creator of
/// a vault manages it with the token that created it).
///
/// # Errors
/// `NotFound` when `from` has no such token; store errors.
pub fn copy_token(from: &Vault, to: &Vault, id: &RecordId) -> Result<()> {
    let record: TokenRecord = from
        .catalog_get(TOKENS, id)?
        .ok_or_else(|| ServiceError::NotFound(format!("no token {} in vault {}", id.short(), from.settings().name)))?;
    to.catalog_put(TOKENS, id, Some(&record))?;
    Ok(())
}

/// A vault's tokens as read at one time, for checking presented tokens.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    records: Vec<TokenRecord>,
}

impl TokenSet {
    /// # Errors
    /// A store error.
    pub fn load(vault: &Vault) -> Result<TokenSet> {
        let mut records: Vec<TokenRecord> = vault.catalog_list(TOKENS)?.into_iter().map(|(_, r)| r).collect();
        records.sort_by(|a, b| a.token.created.cmp(&b.token.created).then(a.token.id.cmp(&b.token.id)));
        Ok(TokenSet { records })
    }

    /// The token a client presented, if it is valid now.
    ///
    /// # Errors
    /// Why it is not.
    pub fn check(&self, presented: &str, now: Timestamp) -> Result<&AccessToken, TokenRefusal> {
        let (id, secret) = split(presented).ok_or(TokenRefusal::Malformed)?;
        let record = self.records.iter().find(|r| r.token.id == id).ok_or(TokenRefusal::Unknown)?;
        let stored = blake3::Hash::from_hex(&record.secret_hash).map_err(|_| TokenRefusal::Unknown)?;
        // blake3::Hash compares in constant time
        if hash_secret(secret) != stored {
            return Err(TokenRefusal::Unknown);
        }
        if record.token.revoked.is_some() {
            return Err(TokenRefusal::Revoked);
        }
        if record.token.expires.is_some_and(|t| t <= now) {
            return Err(TokenRefusal::Expired);
        }
        Ok(&record.token)
    }

    /// Whether the presented string names one of these tokens (by id),
    /// valid or not.
    pub fn names(&self, presented: &str) -> bool {
        split(presented).is_some_and(|(id, _)| self.records.iter().any(|r| r.token.id == id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_what_they_allow() {
        assert!(Role::Reader.allows(Permission::Read));
        assert!(!Role::Reader.allows(Permission::Operate));
        assert!(Role::Operator.allows(Permission::Operate));
        assert!(!Role::Operator.allows(Permission::Manage));
        assert!(Role::Contributor.allows(Permission::Manage));
        assert!(!Role::Contributor.allows(Permission::Guard));
        assert!(Role::SecurityAdmin.allows(Permission::Guard));
        for p in [Permission::Read, Permission::Operate, Permission::Manage] {
            assert!(!Role::SecurityAdmin.allows(p), "{p:?}");
        }
        assert_eq!(Role::parse("operator").ok(), Some(Role::Operator));
        assert!(matches!(Role::parse("Owner"), Err(ServiceError::Field { field: "role", .. })));
    }

    #[test]
    fn malformed_tokens_are_refused_before_any_lookup() {
        let set = TokenSet::default();
        for bad in ["", "bvd_", "abc", &format!("bvd_{}", "g".repeat(96)), &format!("xyz_{}", "a".repeat(96))] {
            assert_eq!(set.check(bad, Timestamp::now()).err(), Some(TokenRefusal::Malformed), "{bad:?}");
        }
        assert_eq!(set.check(&format!("bvd_{}", "a".repeat(96)), Timestamp::now()).err(), Some(TokenRefusal::Unknown));
    }
}

//! Many hosts, one vault (docs/FLEET.md): hosts registered with the
//! vault's server, each backing up its own items with keys that cannot
//! read or delete the vault.
//!
//! This file holds what the vault records of hosts: single-use expiring
//! **credentials** an admin hands to a host, the **host** records they
//! become when redeemed (name, OS, version, the hash of the host's secret),
//! and unregistering. `intake` is what the server does with a host's
//! backup (objects create-only, the point written after its checks);
//! `identity`, `client` and `host_backup` are the host's side.

pub mod client;
pub mod discover;
pub mod host_backup;
pub mod host_restore;
pub mod host_vm;
pub mod identity;
pub mod intake;
pub mod protocol;
pub mod restores;
pub mod uploads;
pub mod watch;
pub mod work;

use boveda_vault::{HostKeys, RecordId, Vault, VaultError};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::access::TokenRefusal;
use crate::error::{Result, ServiceError, ServiceErrorKind};
use crate::items::Item;
use crate::model::names::validate_item_name;

pub(crate) const HOSTS: &str = "hosts";
const CREDENTIALS: &str = "host-credentials";
/// What a host's token starts with.
pub const HOST_TOKEN_PREFIX: &str = "bvh_";
/// How long credentials stay valid unless told otherwise.
pub const DEFAULT_CREDENTIALS_LIFE: SignedDuration = SignedDuration::from_hours(48);
/// What a credentials file says it is.
const CREDENTIALS_FORMAT: &str = "boveda host credentials 1";

/// A registered host, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub id: RecordId,
    pub name: String,
    pub os: String,
    pub version: String,
    pub registered: Timestamp,
    /// The credentials it registered with.
    pub credentials: RecordId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_contact: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unregistered: Option<Timestamp>,
    /// Bytes it uploaded in jobs that failed since the last prune: what no
    /// point may reference, counted against its next jobs' quota.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreferenced: u64,
    /// The last contact whose silence an alert was raised for (one alert
    /// per silence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerted_silence: Option<Timestamp>,
}

/// A host not heard from for this long shows Unreachable (its agent asks
/// for work every 20 seconds; its last contact is recorded once a minute).
pub const UNREACHABLE_AFTER: SignedDuration = SignedDuration::from_mins(5);

impl Host {
    /// Registered (heard from lately), Unreachable since its last contact,
    /// or Unregistered.
    pub fn state_at(&self, now: Timestamp) -> String {
        match (self.unregistered, self.last_contact) {
            (Some(_), _) => "Unregistered".into(),
            (None, Some(seen)) if now.duration_since(seen) > UNREACHABLE_AFTER => format!("Unreachable since {seen}"),
            (None, _) => "Online".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct HostRecord {
    host: Host,
    /// BLAKE3 of the host's secret, hex.
    secret_hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CredentialsRecord {
    id: RecordId,
    secret_hash: String,
    created: Timestamp,
    expires: Timestamp,
    #[serde(default)]
    used: Option<Timestamp>,
    #[serde(default)]
    used_by: Option<RecordId>,
}

/// The vault credentials file an admin gives a host: where the server is,
/// the SHA-256 fingerprint of its TLS certificate (the host trusts that
/// certificate alone), and a secret that registers one host once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCredentials {
    pub format: String,
    pub server: String,
    pub fingerprint: String,
    pub vault: String,
    pub id: RecordId,
    pub secret: String,
    pub expires: Timestamp,
}

impl HostCredentials {
    /// Reads a credentials file's text.
    ///
    /// # Errors
    /// `Invalid` when it is not one.
    pub fn parse(text: &str) -> Result<HostCredentials> {
        let c: HostCredentials = serde_json::from_str(text)
            .map_err(|e| ServiceError::Invalid(format!("not a boveda vault credentials file: {e}")))?;
        if c.format != CREDENTIALS_FORMAT {
            return Err(ServiceError::Invalid(format!(
                "not a boveda vault credentials file (format {:?}, expected {CREDENTIALS_FORMAT:?})",
                c.format
            )));
        }
        normalize_fingerprint(&c.fingerprint)?;
        Ok(c)
    }
}

/// `sha256:<64 hex digits>` from that or from openssl's `AB:CD:...` form.
///
/// # Errors
/// `Invalid` for anything else.
pub fn normalize_fingerprint(text: &str) -> Result<String> {
    let hex: String = text.trim().trim_start_matches("sha256:").chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ServiceError::Invalid(format!("{text:?} is not a SHA-256 certificate fingerprint")));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// The fingerprint of a DER certificate, as credentials name it.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn hash_secret(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

fn new_secret() -> String {
    format!("{}{}", RecordId::random().to_hex(), RecordId::random().to_hex())
}

/// Makes single-use credentials that register one host until `expires`.
///
/// # Errors
/// `Invalid` for a life that is not positive or a bad fingerprint; a
/// store error.
pub fn create_credentials(
    vault: &Vault,
    server: &str,
    fingerprint: &str,
    life: SignedDuration,
    now: Timestamp,
) -> Result<HostCredentials> {
    if life <= SignedDuration::ZERO {
        return Err(ServiceError::field_error("expires", "credentials must last some time"));
    }
    if !server.starts_with("https://") {
        return Err(ServiceError::field_error("server", format!("{server:?} is not an https:// address")));
    }
    let fingerprint = normalize_fingerprint(fingerprint)?;
    let (id, secret) = (RecordId::random(), new_secret());
    let expires = now + life;
    let record =
        CredentialsRecord { id, secret_hash: hash_secret(&secret), created: now, expires, used: None, used_by: None };
    vault.catalog_put(CREDENTIALS, &id, Some(&record))?;
    Ok(HostCredentials {
        format: CREDENTIALS_FORMAT.into(),
        server: server.into(),
        fingerprint,
        vault: vault.settings().name.clone(),
        id,
        secret,
        expires,
    })
}

/// What a host sends to register.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    pub credentials: RecordId,
    pub secret: String,
    pub name: String,
    pub os: String,
    pub version: String,
}

/// What a host gets back: its record, its token (shown once) and its keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registered {
    pub host: Host,
    pub token: String,
    pub keys: HostKeys,
}

fn refused(message: String) -> ServiceError {
    ServiceError::refused(ServiceErrorKind::PermissionDenied, message, crate::error::Remedy::AskAdmin)
}

/// Redeems credentials: the host is recorded and gets its token and keys.
/// Credentials work once: of two hosts redeeming the same ones at once,
/// exactly one succeeds (the record is changed by compare-and-swap).
///
/// # Errors
/// `PermissionDenied` for unknown, wrong, expired or used credentials;
/// `Invalid` for a bad host name; `Conflict` when a registered host has
/// that name.
pub fn register_host(vault: &Vault, req: &Registration, now: Timestamp) -> Result<Registered> {
    validate_item_name(&req.name).map_err(|e| ServiceError::field_error("name", e))?;
    if list_hosts(vault)?.iter().any(|h| h.unregistered.is_none() && h.name.eq_ignore_ascii_case(&req.name)) {
        return Err(ServiceError::Conflict(format!("a registered host is named {:?} already", req.name)));
    }
    let host_id = RecordId::random();
    let redeem = |current: Option<CredentialsRecord>| {
        let mut c =
            current.ok_or_else(|| VaultError::Invalid("these credentials are not known to the vault".into()))?;
        if blake3::Hash::from_hex(&c.secret_hash).ok() != Some(blake3::hash(req.secret.as_bytes())) {
            return Err(VaultError::Invalid("the credentials' secret is wrong".into()));
        }
        if let Some(used) = c.used {
            return Err(VaultError::Invalid(format!("these credentials were used already, at {used}")));
        }
        if c.expires <= now {
            return Err(VaultError::Invalid(format!("these credentials expired at {}", c.expires)));
        }
        c.used = Some(now);
        c.used_by = Some(host_id);
        Ok(Some(c))
    };
    let refusal = |e: VaultError| match e {
        VaultError::Invalid(why) => refused(format!("registration refused: {why}")),
        e => e.into(),
    };
    // checked first without a change, so that only good credentials mark
    // the vault for hosts (builds older than the fleet refuse it from then on)
    redeem(vault.catalog_get(CREDENTIALS, &req.credentials)?).map_err(refusal)?;
    vault.mark_hosts_in_use()?;
    vault.catalog_update(CREDENTIALS, &req.credentials, redeem).map_err(refusal)?;
    let secret = new_secret();
    let host = Host {
        id: host_id,
        name: req.name.clone(),
        os: req.os.chars().take(200).collect(),
        version: req.version.chars().take(60).collect(),
        registered: now,
        credentials: req.credentials,
        last_contact: Some(now),
        unregistered: None,
        unreferenced: 0,
        alerted_silence: None,
    };
    let record = HostRecord { host: host.clone(), secret_hash: hash_secret(&secret) };
    vault.catalog_put(HOSTS, &host_id, Some(&record))?;
    Ok(Registered {
        keys: vault.host_keys(host_id),
        token: format!("{HOST_TOKEN_PREFIX}{}{secret}", host_id.to_hex()),
        host,
    })
}

/// Every host ever registered, by name.
///
/// # Errors
/// A store error.
pub fn list_hosts(vault: &Vault) -> Result<Vec<Host>> {
    let mut hosts: Vec<Host> = vault.catalog_list::<HostRecord>(HOSTS)?.into_iter().map(|(_, r)| r.host).collect();
    hosts.sort_by(|a, b| a.name.cmp(&b.name).then(a.registered.cmp(&b.registered)));
    Ok(hosts)
}

/// A host as lists show it: its record, its state now and its items.
#[derive(Debug, Clone, Serialize)]
pub struct HostOverview {
    #[serde(flatten)]
    pub host: Host,
    /// Online, Unreachable since ..., or Unregistered.
    pub state: String,
    /// The names of the items that live on it.
    pub items: Vec<String>,
}

/// Every host with its state at `now` and its items.
///
/// # Errors
/// A store error.
pub fn host_overview(vault: &Vault, now: Timestamp) -> Result<Vec<HostOverview>> {
    let items = crate::items::list_items(vault)?;
    Ok(list_hosts(vault)?
        .into_iter()
        .map(|host| HostOverview {
            state: host.state_at(now),
            items: items.iter().filter(|i| i.host == Some(host.id)).map(|i| i.name.clone()).collect(),
            host,
        })
        .collect())
}

/// The registered host named `name` (or whose id starts with it).
///
/// # Errors
/// `NotFound`.
pub fn find_host(vault: &Vault, name: &str) -> Result<Host> {
    let hosts = list_hosts(vault)?;
    let found =
        hosts.iter().rev().find(|h| h.unregistered.is_none() && h.name.eq_ignore_ascii_case(name)).or_else(|| {
            hosts.iter().find(|h| h.unregistered.is_none() && name.len() >= 4 && h.id.to_hex().starts_with(name))
        });
    found.cloned().ok_or_else(|| ServiceError::NotFound(format!("no registered host named {name:?} in this vault")))
}

/// Revokes a host: its token is refused from then on (by a running server
/// within seconds), and the protection of its items stops, their points
/// kept.
///
/// # Errors
/// `NotFound`; a store error.
pub fn unregister_host(vault: &Vault, name: &str, now: Timestamp) -> Result<Host> {
    let host = find_host(vault, name)?;
    let written = vault.catalog_update(HOSTS, &host.id, |current: Option<HostRecord>| {
        let mut r = current.ok_or_else(|| VaultError::NotFound(format!("host {}", host.name)))?;
        r.host.unregistered.get_or_insert(now);
        Ok(Some(r))
    })?;
    for item in crate::items::list_items(vault)?.iter().filter(|i| i.host == Some(host.id)) {
        crate::items::update_item(vault, &item.id, |i| {
            if i.protection.state == crate::items::ProtectionState::Protected {
                i.protection.state = crate::items::ProtectionState::Stopped;
            }
        })?;
    }
    written.map(|r| r.host).ok_or_else(|| ServiceError::NotFound(format!("host {}", host.name)))
}

/// The items that live on `host`.
///
/// # Errors
/// A store error.
pub fn host_items(vault: &Vault, host: &Host) -> Result<Vec<Item>> {
    Ok(crate::items::list_items(vault)?.into_iter().filter(|i| i.host == Some(host.id)).collect())
}

/// `host`'s item named `name`; another host's (or the server's own) is
/// refused as if it did not exist.
///
/// # Errors
/// `NotFound`.
pub fn host_item(vault: &Vault, host: &Host, name: &str) -> Result<Item> {
    host_items(vault, host)?
        .into_iter()
        .find(|i| i.name.eq_ignore_ascii_case(name) || i.id.to_hex() == name)
        .ok_or_else(|| ServiceError::NotFound(format!("host {} has no item named {name:?}", host.name)))
}

/// Adds an item: of the registered host the request names, or of this
/// machine.
///
/// # Errors
/// `NotFound` for a host not registered; as `add_host_item` and the
/// item kinds' own checks.
pub fn add_item(vault: &Vault, req: &crate::items::NewItem) -> Result<crate::items::Item> {
    use crate::items::{ItemSource, NewItem};
    let Some(host) = req.host() else {
        return crate::items::add_local_item(vault, req);
    };
    let host = find_host(vault, host)?;
    match req {
        NewItem::Files { name, paths, excludes, .. } => intake::add_host_item(
            vault,
            &host,
            name,
            ItemSource::Files { paths: paths.clone(), excludes: excludes.clone() },
        ),
        NewItem::Disk { name, path, .. } => {
            intake::add_host_item(vault, &host, name, ItemSource::Disk { path: path.clone() })
        }
        NewItem::Vm { name, definition, qmp, guest_agent, .. } => {
            let domain = definition.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let source = ItemSource::Vm {
                domain_xml: definition.clone(),
                domain,
                disks: vec![],
                qmp: qmp.clone(),
                guest_agent: guest_agent.clone(),
            };
            intake::add_host_item(vault, &host, name, source)
        }
    }
}

/// Counts `bytes` a failed job of `host` uploaded as unreferenced.
///
/// # Errors
/// A store error; `NotFound` for an unknown host.
pub fn add_unreferenced(vault: &Vault, host: &RecordId, bytes: u64) -> Result<()> {
    vault.catalog_update(HOSTS, host, |current: Option<HostRecord>| {
        let mut r = current.ok_or_else(|| VaultError::NotFound(format!("host {host}")))?;
        r.host.unreferenced = r.host.unreferenced.saturating_add(bytes);
        Ok(Some(r))
    })?;
    Ok(())
}

/// What failed jobs of `host` uploaded since the last prune.
///
/// # Errors
/// A store error.
pub fn unreferenced(vault: &Vault, host: &RecordId) -> Result<u64> {
    Ok(vault.catalog_get::<HostRecord>(HOSTS, host)?.map_or(0, |r| r.host.unreferenced))
}

/// Starts every host's count of unreferenced uploads again: a prune is
/// about to reclaim what no point references.
///
/// # Errors
/// A store error.
pub fn forget_unreferenced(vault: &Vault) -> Result<()> {
    for host in list_hosts(vault)?.into_iter().filter(|h| h.unreferenced > 0) {
        vault.catalog_update(HOSTS, &host.id, |current: Option<HostRecord>| {
            Ok(current.map(|mut r| {
                r.host.unreferenced = 0;
                r
            }))
        })?;
    }
    Ok(())
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Records that a host was heard from (at most once a minute is enough).
///
/// # Errors
/// A store error.
pub fn touch_host(vault: &Vault, host: &RecordId, now: Timestamp) -> Result<()> {
    vault.catalog_update(HOSTS, host, |current: Option<HostRecord>| {
        let mut r = current.ok_or_else(|| VaultError::NotFound(format!("host {host}")))?;
        r.host.last_contact = Some(now);
        Ok(Some(r))
    })?;
    Ok(())
}

/// A vault's hosts as read at one time, for checking presented tokens.
#[derive(Debug, Clone, Default)]
pub struct HostSet {
    records: Vec<HostRecord>,
}

impl HostSet {
    /// # Errors
    /// A store error.
    pub fn load(vault: &Vault) -> Result<HostSet> {
        Ok(HostSet { records: vault.catalog_list::<HostRecord>(HOSTS)?.into_iter().map(|(_, r)| r).collect() })
    }

    /// The host a token belongs to, if it is valid.
    ///
    /// # Errors
    /// Why it is not.
    pub fn check(&self, presented: &str) -> std::result::Result<&Host, TokenRefusal> {
        let rest = presented.strip_prefix(HOST_TOKEN_PREFIX).ok_or(TokenRefusal::Malformed)?;
        if rest.len() != 96 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenRefusal::Malformed);
        }
        let id = RecordId::from_hex(&rest[..32]).ok_or(TokenRefusal::Malformed)?;
        let record = self.records.iter().find(|r| r.host.id == id).ok_or(TokenRefusal::Unknown)?;
        let stored = blake3::Hash::from_hex(&record.secret_hash).map_err(|_| TokenRefusal::Unknown)?;
        if blake3::hash(&rest.as_bytes()[32..]) != stored {
            return Err(TokenRefusal::Unknown);
        }
        if record.host.unregistered.is_some() {
            return Err(TokenRefusal::Revoked);
        }
        Ok(&record.host)
    }
}

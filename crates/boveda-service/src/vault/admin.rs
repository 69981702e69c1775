//! Creating, opening and describing vaults.

use boveda_store::{RetryPolicy, StoreOptions, faults_from_env, layer, open_backend, open_store_with};
use boveda_vault::{ChunkerParams, CreateOptions, KdfParams, RecordId, Vault, VaultSettings};
use boveda_vault::{StoreSettings, VaultError};
use serde::Serialize;

use crate::error::{Result, ServiceError};
use crate::items::list_items;
use crate::model::names::validate_vault_name;
use crate::runtime::control::{VaultControl, change_control, vault_control};
use crate::runtime::host::{hostname, normalize_store, retry_policy};
use crate::runtime::registry::{KnownVault, Registry};

/// A new vault; as a client gives it, what is left out takes the
/// defaults.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewVault {
    pub name: String,
    /// A folder, `s3://bucket/prefix?...` or `azblob://container/prefix?...`.
    pub store: String,
    #[serde(default = "NewVault::default_location")]
    pub location: String,
    #[serde(default = "NewVault::default_redundancy")]
    pub redundancy: String,
    #[serde(default)]
    pub secondary: Option<String>,
    #[serde(default = "NewVault::default_pack_size")]
    pub pack_size_mib: u32,
    #[serde(default = "NewVault::default_compression")]
    pub compression_level: i32,
    /// Set by the process that creates the vault, never by a client.
    #[serde(skip, default = "NewVault::default_kdf")]
    pub kdf: KdfParams,
    /// Create the store's container or bucket when it is missing.
    #[serde(default)]
    pub create_container: bool,
    /// S3 Object Lock on every pack and manifest: `compliance` or
    /// `governance` (docs/SECURITY.md).
    #[serde(default)]
    pub object_lock: Option<String>,
    /// Days every lock holds past the retention it covers (default 7).
    #[serde(default)]
    pub lock_margin_days: Option<u32>,
}

impl NewVault {
    pub const DEFAULT_PACK_SIZE_MIB: u32 = 16;

    fn default_location() -> String {
        "local".into()
    }
    fn default_redundancy() -> String {
        "lrs".into()
    }
    fn default_pack_size() -> u32 {
        Self::DEFAULT_PACK_SIZE_MIB
    }
    fn default_compression() -> i32 {
        VaultSettings::DEFAULT_COMPRESSION
    }
    fn default_kdf() -> KdfParams {
        KdfParams::DEFAULT
    }
}

/// Creates a vault and records it in the user's registry.
///
/// # Errors
/// `Invalid` for a bad name, redundancy or store; `Conflict` for a name
/// already known; vault errors for a non-empty location.
pub fn create_vault(req: &NewVault, passphrase: &[u8]) -> Result<Vault> {
    validate_vault_name(&req.name)?;
    match (req.redundancy.as_str(), &req.secondary) {
        ("lrs", None) | ("grs", Some(_)) => {}
        ("lrs", Some(_)) => {
            return Err(ServiceError::field_error(
                "secondary",
                "a secondary store is only for geo-redundant storage (grs)",
            ));
        }
        ("grs", None) => {
            return Err(ServiceError::field_error("secondary", "geo-redundant storage (grs) needs a secondary store"));
        }
        (other, _) => {
            return Err(ServiceError::Invalid(format!("redundancy {other:?} is not lrs or grs")));
        }
    }
    if !(1..=1024).contains(&req.pack_size_mib) {
        return Err(ServiceError::Invalid("pack size must be 1 to 1024 MiB".into()));
    }
    if !(0..=19).contains(&req.compression_level) {
        return Err(ServiceError::Invalid("compression level must be 0 (off) to 19".into()));
    }
    if passphrase.is_empty() {
        return Err(ServiceError::Invalid("the passphrase must not be empty".into()));
    }
    let mut registry = Registry::load()?;
    if registry.find(&req.name).is_some() {
        return Err(ServiceError::Conflict(format!(
            "a vault named {:?} is already known (vault names are unique among the vaults this user's configuration knows)",
            req.name
        )));
    }
    let store_url = normalize_store(&req.store)?;
    let object_lock = object_lock_of(req, &store_url)?;
    let create_container = req.create_container && object_lock.is_none();
    let opts = StoreOptions { create_container, ..StoreOptions::default() };
    let store = open_store_with(&store_url, &opts).map_err(boveda_vault::VaultError::from)?;
    if let Some(lock) = &object_lock {
        check_store_locks(&*store, &store_url, lock)?;
    }
    let secondary = match &req.secondary {
        Some(url) => {
            let url = normalize_store(url)?;
            let secondary = open_store_with(&url, &opts).map_err(boveda_vault::VaultError::from)?;
            if !secondary.is_empty_below("").map_err(boveda_vault::VaultError::from)? {
                return Err(ServiceError::Invalid(format!(
                    "the secondary store {} is not empty: choose a new or empty location",
                    secondary.location()
                )));
            }
            Some(url)
        }
        None => None,
    };
    let settings = VaultSettings {
        name: req.name.clone(),
        location: req.location.clone(),
        redundancy: req.redundancy.clone(),
        secondary,
        pack_size: req.pack_size_mib << 20,
        compression_level: req.compression_level,
        soft_delete_days: VaultSettings::DEFAULT_SOFT_DELETE_DAYS,
        webhook: None,
        store: boveda_vault::StoreSettings::default(),
        replication_lag_alert_mins: None,
        shipping_address: None,
        replicate_during_backup: None,
        immutability: boveda_vault::Immutability::Disabled,
        soft_delete_always_on: false,
        object_lock,
        guard: None,
    };
    let opts = CreateOptions { settings, kdf: req.kdf, chunker: ChunkerParams::DEFAULT, hostname: hostname() };
    let mut vault = Vault::create(store, passphrase, opts)?;
    // a local folder: its owner's alone (no other user reads, adds or
    // deletes anything in it; docs/SECURITY.md)
    if let Ok(boveda_store::StoreUrl::Local(path)) = boveda_store::StoreUrl::parse(&store_url) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| ServiceError::Io { path: path.clone(), source: e })?;
    }
    crate::policies::create_policy(&vault, &crate::model::policy::Policy::default_policy())?;
    lock_local_vault(&vault, &store_url)?;
    registry.add(KnownVault {
        name: req.name.clone(),
        store: store_url,
        id: vault.config().id.to_hex(),
        secondary: vault.settings().secondary.clone(),
    })?;
    if vault.settings().redundancy == "grs" {
        crate::replication::attach(&mut vault);
        // the secondary holds a vault from the start; a failure here is
        // only lag, which the next pass (and `vault replication status`) sees
        let _ = crate::replication::replicate(&vault, &|_| {});
    }
    Ok(vault)
}

/// Resolves `--vault`: a known name, else a store URL or path. With no
/// selector, the only known vault.
///
/// # Errors
/// `Invalid` when nothing selects a vault.
pub fn resolve_vault(selector: Option<&str>) -> Result<String> {
    let registry = Registry::load()?;
    match selector {
        Some(s) => Ok(registry.find(s).map(|v| v.store.clone()).unwrap_or_else(|| s.to_string())),
        None => Ok(only_vault(&registry)?.store.clone()),
    }
}

/// The one vault the registry knows, when no vault is named.
fn only_vault(registry: &Registry) -> Result<&KnownVault> {
    match registry.vaults.as_slice() {
        [only] => Ok(only),
        [] => Err(ServiceError::refused(
            crate::error::ServiceErrorKind::Invalid,
            "no vault given, and none is known".into(),
            crate::error::Remedy::CreateVault,
        )),
        _ => Err(ServiceError::refused(
            crate::error::ServiceErrorKind::Invalid,
            "several vaults are known, and none was chosen".into(),
            crate::error::Remedy::ChooseVault,
        )),
    }
}

/// Opens the vault a selector names.
///
/// # Errors
/// As [`resolve_vault`] and [`Vault::open`].
pub fn open_vault(selector: Option<&str>, passphrase: &[u8]) -> Result<Vault> {
    open_vault_at(&resolve_vault(selector)?, passphrase)
}

/// The store a selector names, without opening the vault (no passphrase):
/// for the import of an offline seed, on the store's side.
///
/// # Errors
/// As [`resolve_vault`]; a store error for a bad URL or credentials;
/// `NotFound` when the store holds no vault.
pub fn open_vault_store(selector: Option<&str>) -> Result<std::sync::Arc<dyn boveda_store::Store>> {
    let url = resolve_vault(selector)?;
    let backend = open_backend(&url, false).map_err(VaultError::from)?;
    let faults = faults_from_env().map_err(VaultError::from)?;
    let store = layer(backend, RetryPolicy::default(), faults);
    match store.stat("config") {
        Ok(_) => Ok(store),
        Err(e) if e.kind() == boveda_store::StoreErrorKind::NotFound => {
            Err(ServiceError::NotFound(format!("{} holds no vault", store.location())))
        }
        Err(e) => Err(VaultError::from(e).into()),
    }
}

/// Opens the copy of a geo-redundant vault in its secondary store (found
/// in the user's registry, so the primary need not answer): cross-region
/// restore.
///
/// # Errors
/// `Invalid` when the vault is unknown here or has no secondary; as
/// [`Vault::open`].
pub fn open_secondary_vault(selector: Option<&str>, passphrase: &[u8]) -> Result<Vault> {
    let registry = Registry::load()?;
    let known = match selector {
        Some(s) => registry.find(s).ok_or_else(|| {
            ServiceError::Invalid(format!(
                "the secondary store is found by the vault's name, and {s:?} is not a vault this configuration knows"
            ))
        })?,
        None => only_vault(&registry)?,
    };
    let Some(url) = &known.secondary else {
        return Err(ServiceError::Invalid(format!(
            "vault {} is locally redundant (lrs): it has no secondary store",
            known.name
        )));
    };
    open_copy_at(url, passphrase)
}

fn open_vault_at(url: &str, passphrase: &[u8]) -> Result<Vault> {
    let mut vault = open_copy_at(url, passphrase)?;
    crate::replication::attach(&mut vault);
    Ok(vault)
}

/// Opens the vault in a store without any replicating layer: the copy in
/// a secondary store, or a primary whose secondary must not be written.
fn open_copy_at(url: &str, passphrase: &[u8]) -> Result<Vault> {
    let url = url.to_string();
    let backend = open_backend(&url, false).map_err(VaultError::from)?;
    let faults = faults_from_env().map_err(VaultError::from)?;
    let mut vault = Vault::open(layer(backend.clone(), RetryPolicy::default(), faults.clone()), passphrase)?;
    let policy = retry_policy(&vault.settings().store);
    if policy != RetryPolicy::default() {
        vault.set_store(layer(backend, policy, faults));
    }
    // A vault in a folder is its own copy of its objects; every vault gets
    // the merged index file.
    if vault.store().capabilities().remote {
        vault.use_cache(&crate::runtime::registry::cache_dir());
    } else {
        vault.use_index_cache(&crate::runtime::registry::cache_dir());
    }
    Ok(vault)
}

/// A field that is present, `null` included (`Some(None)`); serde's own
/// reading of `Option<Option<_>>` takes `null` for a field left out.
fn present<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// Changes to a vault's settings; `None` leaves a setting as it is.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VaultUpdate {
    /// `Some(None)` stops posting alerts: `"webhook": null` in JSON (a
    /// field left out leaves it as it is).
    #[serde(deserialize_with = "present")]
    pub webhook: Option<Option<String>>,
    pub soft_delete_days: Option<u32>,
    pub store_retries: Option<u32>,
    pub store_retry_max_wait_secs: Option<u32>,
    pub parallel_requests: Option<u32>,
    /// Minutes a geo-redundant vault's secondary may lag before an alert.
    pub replication_lag_alert_mins: Option<u32>,
    /// Where drives of offline seeding are shipped; `Some(None)` (`null`)
    /// removes it.
    #[serde(deserialize_with = "present")]
    pub shipping_address: Option<Option<String>>,
    /// Copy packs to the secondary while a backup writes them.
    pub replicate_during_backup: Option<bool>,
    /// `disabled`, `enabled` or `locked` (docs/SECURITY.md).
    pub immutability: Option<String>,
    /// The vault's name, to confirm a change that cannot be undone (locking
    /// immutability, making soft delete always-on).
    pub confirm: Option<String>,
    /// Soft delete that can be neither shortened nor turned off.
    pub soft_delete_always_on: Option<bool>,
}

impl VaultUpdate {
    /// The two waits given as durations a user writes (`30s`, `2h`).
    ///
    /// # Errors
    /// `Field` naming the wait that does not parse.
    pub fn with_waits(
        mut self,
        store_retry_max_wait: Option<&str>,
        replication_lag_alert: Option<&str>,
    ) -> Result<Self> {
        let secs = |field, text: Option<&str>| -> Result<Option<u64>> {
            text.map(|t| crate::model::time_input::parse_duration(field, t).map(|d| d.as_secs().unsigned_abs()))
                .transpose()
        };
        if let Some(s) = secs("store_retry_max_wait_secs", store_retry_max_wait)? {
            self.store_retry_max_wait_secs = Some(u32::try_from(s).unwrap_or(u32::MAX));
        }
        if let Some(s) = secs("replication_lag_alert_mins", replication_lag_alert)? {
            self.replication_lag_alert_mins = Some(u32::try_from(s.div_ceil(60)).unwrap_or(u32::MAX));
        }
        Ok(self)
    }
}

/// Checks and applies changes to a vault's settings, asked for by `by`;
/// nothing changes when one is invalid. An immutable vault's points are
/// then held until their retention ends. On a vault bound to a guard, a
/// change that weakens what protects points needs its approval.
///
/// # Errors
/// `Invalid` naming the setting and its bounds; `NeedsApproval`; a store
/// error.
pub fn update_vault(
    vault: &Vault,
    update: &VaultUpdate,
    by: &str,
    clock: &dyn crate::runtime::clock::Clock,
) -> Result<()> {
    let now = clock.now();
    check_vault_update(update)?;
    let immutability = update
        .immutability
        .as_deref()
        .map(|t| {
            boveda_vault::Immutability::parse(t).map_err(|e| ServiceError::field_error("immutability", e.to_string()))
        })
        .transpose()?;
    let name = vault.settings().name.clone();
    let for_good =
        immutability == Some(boveda_vault::Immutability::Locked) || update.soft_delete_always_on == Some(true);
    if for_good && update.confirm.as_deref() != Some(name.as_str()) {
        return Err(ServiceError::field_error(
            "confirm",
            format!(
                "locked immutability and always-on soft delete cannot be undone, by anyone, with any credential: confirm by naming the vault ({name})"
            ),
        ));
    }
    // applied to the settings as they are in the store now, so that a
    // change another process made meanwhile is kept
    let changed = vault.change_settings_by(by, now, |settings| {
        apply_vault_update(update, settings);
        if let Some(i) = immutability {
            settings.immutability = i;
        }
        if let Some(on) = update.soft_delete_always_on {
            settings.soft_delete_always_on = on;
        }
    });
    crate::guard::recorded(vault, clock, by, changed.map_err(ServiceError::from))?;
    // made (or kept) immutable: each point held until its retention ends
    if immutability.is_some() {
        crate::policies::holds::hold_by_retention(vault, now)?;
    }
    let control_changes =
        update.webhook.is_some() || update.replication_lag_alert_mins.is_some() || update.shipping_address.is_some();
    if control_changes {
        change_control(vault, |control| apply_control_update(update, control))?;
    }
    if let Some(address) = &update.shipping_address {
        crate::offline::readdress_import_jobs(&**vault.store(), address.as_deref())?;
    }
    Ok(())
}

fn check_vault_update(update: &VaultUpdate) -> Result<()> {
    let within = |field: &'static str, what: &str, v: Option<u32>, range: std::ops::RangeInclusive<u32>| match v {
        Some(n) if !range.contains(&n) => Err(ServiceError::field_error(
            field,
            format!("{what} must be {} to {}, not {n}", range.start(), range.end()),
        )),
        _ => Ok(()),
    };
    if let Some(Some(url)) = &update.webhook
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(ServiceError::field_error("webhook", format!("{url:?}: give an http:// or https:// URL")));
    }
    within("soft_delete_days", "the soft-delete window (days)", update.soft_delete_days, 14..=180)?;
    within("store_retries", "store tries", update.store_retries, StoreSettings::RETRIES)?;
    within(
        "store_retry_max_wait_secs",
        "the longest wait between store tries (seconds)",
        update.store_retry_max_wait_secs,
        StoreSettings::RETRY_MAX_WAIT_SECS,
    )?;
    within("parallel_requests", "parallel requests", update.parallel_requests, StoreSettings::PARALLEL_REQUESTS)?;
    within(
        "replication_lag_alert_mins",
        "the replication lag that raises an alert (minutes)",
        update.replication_lag_alert_mins,
        VaultControl::LAG_ALERT_MINS,
    )
}

/// Applies a checked update to the control-plane settings.
fn apply_control_update(update: &VaultUpdate, control: &mut VaultControl) {
    if let Some(webhook) = &update.webhook {
        control.webhook = webhook.clone();
    }
    if let Some(m) = update.replication_lag_alert_mins {
        control.replication_lag_alert_mins = Some(m);
    }
    if let Some(address) = &update.shipping_address {
        control.shipping_address.clone_from(address);
    }
}

/// Applies a checked update to the vault's settings.
fn apply_vault_update(update: &VaultUpdate, settings: &mut VaultSettings) {
    if let Some(days) = update.soft_delete_days {
        settings.soft_delete_days = days;
    }
    let store = &mut settings.store;
    if let Some(n) = update.store_retries {
        store.retries = Some(n);
    }
    if let Some(secs) = update.store_retry_max_wait_secs {
        store.retry_max_wait_secs = Some(secs);
    }
    if let Some(n) = update.parallel_requests {
        store.parallel_requests = Some(n);
    }
    if let Some(on) = update.replicate_during_backup {
        settings.replicate_during_backup = Some(on);
    }
}

#[derive(Debug, Serialize)]
pub struct VaultSummary {
    pub name: String,
    pub id: String,
    pub store: String,
    pub location: String,
    pub redundancy: String,
    pub secondary: Option<String>,
    pub format_version: u16,
    pub created: String,
    pub pack_size: u32,
    pub compression_level: i32,
    pub chunk_sizes: ChunkerParams,
    pub items: usize,
    pub recovery_points: usize,
    pub packs: usize,
    pub chunks: usize,
    pub stored_bytes: u64,
    pub protected_bytes: u64,
    pub soft_delete_days: u32,
    /// `disabled`, `enabled` or `locked`.
    pub immutability: String,
    pub soft_delete_always_on: bool,
    /// S3 Object Lock: its mode and margin, when the vault has it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<String>,
    pub webhook: Option<String>,
    /// Tries of a failing store call, the longest wait between them, and
    /// requests at once, as in effect (the vault's settings, else defaults).
    pub store_retries: u32,
    pub store_retry_max_wait_secs: u64,
    pub parallel_requests: usize,
    /// A geo-redundant vault's replication, as last recorded.
    pub replication: Option<crate::replication::ReplicationSummary>,
    /// Where drives of offline seeding are shipped.
    pub shipping_address: Option<String>,
    /// Whether packs are copied to the secondary while a backup writes them.
    pub replicate_during_backup: bool,
}

/// Settings and totals of a vault.
///
/// # Errors
/// A store error or damaged object.
pub fn summarize(vault: &Vault) -> Result<VaultSummary> {
    let index = vault.load_index()?;
    let points = vault.list_points()?;
    let items = list_items(vault)?;
    let stored_bytes = vault.stored_bytes()?;
    let mut protected_bytes = 0;
    for item in &items {
        if let Some(p) = points.iter().rev().find(|p| p.item_id == item.id) {
            protected_bytes += p.stats.bytes;
        }
    }
    let s = vault.settings();
    let control = vault_control(vault)?;
    Ok(VaultSummary {
        name: s.name.clone(),
        id: vault.config().id.to_hex(),
        store: vault.location(),
        location: s.location.clone(),
        redundancy: s.redundancy.clone(),
        secondary: s.secondary.clone(),
        format_version: boveda_vault::FORMAT_VERSION,
        created: vault.config().created.to_string(),
        pack_size: s.pack_size,
        compression_level: s.compression_level,
        chunk_sizes: vault.config().chunker,
        items: items.len(),
        recovery_points: points.len(),
        packs: index.packs().count(),
        chunks: index.len(),
        stored_bytes,
        protected_bytes,
        soft_delete_days: s.soft_delete_days,
        immutability: s.immutability.as_str().into(),
        soft_delete_always_on: s.soft_delete_always_on,
        object_lock: s.object_lock.as_ref().map(|l| format!("{}, {} day(s) past retention", l.mode, l.margin_days)),
        webhook: control.webhook,
        store_retries: retry_policy(&s.store).attempts,
        store_retry_max_wait_secs: retry_policy(&s.store).max_delay.as_secs(),
        parallel_requests: vault.parallel_requests(),
        replication: crate::replication::replication_summary(vault)?,
        shipping_address: control.shipping_address,
        replicate_during_backup: s.replicate_during_backup == Some(true),
    })
}

/// Adds a key slot that opens the vault with another passphrase, as an
/// `UpdateKeys` job; its id.
///
/// # Errors
/// `Field` for an empty passphrase (nothing recorded); a store error
/// recording the job; inside the result, the vault's errors.
pub fn add_key_job(
    vault: &Vault,
    env: &crate::runtime::job::JobEnv<'_>,
    passphrase: &[u8],
    label: &str,
    kdf: KdfParams,
) -> Result<(crate::runtime::job::Job, Result<RecordId>)> {
    if passphrase.is_empty() {
        return Err(ServiceError::field_error("passphrase", "must not be empty"));
    }
    key_job(env, vault, |_| {
        let id = vault.add_key(passphrase, label, kdf, &env.hostname)?;
        Ok((id, format!("added key slot {} ({label})", id.short())))
    })
}

/// Removes the key slot whose id starts with `id_prefix`, as an
/// `UpdateKeys` job (the vault refuses to remove the last one, or the one
/// this process opened it with); the id removed.
///
/// # Errors
/// A store error recording the job; inside the result, `NotFound` or the
/// vault's refusal.
pub fn remove_key_job(
    vault: &Vault,
    env: &crate::runtime::job::JobEnv<'_>,
    id_prefix: &str,
) -> Result<(crate::runtime::job::Job, Result<RecordId>)> {
    key_job(env, vault, |_| {
        let removed = vault.remove_key(id_prefix, &env.by, env.clock.now());
        let id = crate::guard::recorded_with(vault, env.clock, &env.by, removed)?;
        Ok((id, format!("removed key slot {}", id.short())))
    })
}

fn key_job(
    env: &crate::runtime::job::JobEnv<'_>,
    vault: &Vault,
    body: impl FnOnce(&crate::runtime::job::JobCtx<'_>) -> Result<(RecordId, String)> + Send,
) -> Result<(crate::runtime::job::Job, Result<RecordId>)> {
    let spec = env.vault_spec(crate::runtime::job::Operation::UpdateKeys);
    crate::runtime::job::run_job(vault, env.clock, &spec, crate::runtime::job::Observers::default(), |jctx| {
        let (id, detail) = body(jctx)?;
        Ok((id, crate::runtime::job::JobDone { details: vec![detail], ..crate::runtime::job::JobDone::default() }))
    })
}

/// The vaults a long-running process (the agent, the server) serves: those
/// `named`, else the `current` one, else every vault the registry knows.
///
/// # Errors
/// `Refused` when there is none; a registry that cannot be read.
pub fn vaults_to_serve(named: &[String], current: Option<&str>) -> Result<Vec<String>> {
    let chosen: Vec<String> = if !named.is_empty() {
        named.to_vec()
    } else if let Some(v) = current {
        vec![v.to_string()]
    } else {
        Registry::load()?.vaults.iter().map(|v| v.name.clone()).collect()
    };
    if chosen.is_empty() {
        return Err(ServiceError::refused(
            crate::error::ServiceErrorKind::Invalid,
            "no vault to serve".into(),
            crate::error::Remedy::CreateVault,
        ));
    }
    Ok(chosen)
}

/// The Object Lock a new vault asks for; its bucket created with Object
/// Lock when boveda creates the bucket.
fn object_lock_of(req: &NewVault, store_url: &str) -> Result<Option<boveda_vault::ObjectLockSettings>> {
    let object_lock = req
        .object_lock
        .as_deref()
        .map(|mode| boveda_vault::ObjectLockSettings::new(mode, req.lock_margin_days.unwrap_or(7)))
        .transpose()
        .map_err(|e| ServiceError::field_error("object_lock", e.to_string()))?;
    if object_lock.is_some() && req.create_container && store_url.starts_with("s3://") {
        boveda_store::create_locked_bucket(store_url)
            .map_err(|e| ServiceError::field_error("object_lock", e.to_string()))?;
    }
    Ok(object_lock)
}

/// Refuses a store that cannot lock; on S3, sets the bucket's default
/// retention, so that every object version written from now on is locked
/// a margin by the store itself (prune extends what the vault needs).
fn check_store_locks(
    store: &dyn boveda_store::Store,
    store_url: &str,
    lock: &boveda_vault::ObjectLockSettings,
) -> Result<()> {
    let s3 = store_url.starts_with("s3://");
    if !store.can_lock().map_err(boveda_vault::VaultError::from)? {
        let why = if s3 {
            "has no S3 Object Lock: create the bucket with Object Lock enabled (or let boveda create it: --create-container)"
        } else {
            "cannot lock objects: on S3, a bucket with Object Lock; on a local folder, a file system with the immutable attribute (ext4, XFS, Btrfs) and root (CAP_LINUX_IMMUTABLE)"
        };
        return Err(ServiceError::field_error("object_lock", format!("{} {why}", store.location())));
    }
    if s3 {
        let mode = boveda_store::LockMode::parse(&lock.mode).map_err(boveda_vault::VaultError::from)?;
        boveda_store::set_bucket_lock(store_url, mode, lock.margin_days)
            .map_err(|e| ServiceError::field_error("object_lock", e.to_string()))?;
    }
    Ok(())
}

/// A local folder with locks: what the new vault holds is locked now, and
/// every process that opens it after locks what it writes (its `config`
/// is immutable); on S3 the bucket's default retention does both.
fn lock_local_vault(vault: &Vault, store_url: &str) -> Result<()> {
    let Some(lock) = vault.settings().object_lock.clone() else { return Ok(()) };
    if store_url.starts_with("s3://") {
        return Ok(());
    }
    let lock = boveda_store::ObjectLock {
        mode: boveda_store::LockMode::parse(&lock.mode).map_err(boveda_vault::VaultError::from)?,
        until: std::time::SystemTime::from(jiff::Timestamp::now() + lock.margin()),
    };
    let store = vault.store().clone();
    for o in store.list("").map_err(boveda_vault::VaultError::from)? {
        if !o.name.starts_with("locks/") {
            store.lock_object(&o.name, &lock).map_err(boveda_vault::VaultError::from)?;
        }
    }
    Ok(())
}

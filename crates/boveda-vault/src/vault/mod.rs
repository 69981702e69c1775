//! The open vault handle: creating and opening a vault, its config and
//! settings, and the caches it keeps. Each other concern is an `impl Vault`
//! block of its own: `keys` (key slots), `blobs` (the index and reading
//! blobs and trees), `points`, `catalog`, `deletes` (every deletion of a
//! stored object), `host_intake` (what a registered host may add), `replica` (what geo-redundancy needs of the primary), and `crate::lease` (the prune lease).

mod blobs;
mod catalog;
mod deletes;
mod guard;
mod holds;
mod host_intake;
mod keys;
mod locks;
mod points;
mod replica;

pub use deletes::Removal;
pub use guard::{
    APPROVAL_DEFAULT, APPROVAL_MAX, GuardApproval, GuardBinding, GuardOutcome, GuardRequest, GuardRequestState,
    GuardedOp, approval_is_signed, approval_message, guarded_changes,
};
pub use holds::{Hold, Immutability, PointHold, check_settings_change};
pub use host_intake::{HostObject, JobPacks};
pub use locks::{LockReport, ObjectLockSettings};
pub use replica::Replica;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use boveda_store::{Store, StoreErrorKind};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::RecordId;
use crate::chunker::{Chunker, ChunkerParams};
use crate::crypto::{KdfParams, MasterKey};
use crate::error::{Result, VaultError};
use crate::key_slot::KeySlot;
use crate::object::{Envelope, ObjectKind, parse_any_header};

/// The clear-text `config` object: what a reader needs before any key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VaultConfig {
    pub id: RecordId,
    pub created: Timestamp,
    pub chunker: ChunkerParams,
    /// Point ids begin with a tag of their item (see
    /// [`Vault::new_point_id`]); vaults made before tags have none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub point_tags: bool,
    /// Registered hosts write to this vault (docs/FLEET.md): objects they
    /// seal have format version 3, so the config object has it too, and a
    /// build older than the fleet refuses the vault at open, saying it is
    /// newer, instead of meeting such an object mid-way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hosts: bool,
}

/// The `config` object as stored: the config and its authentication code
/// (keyed by the master key), checked once a key slot has opened.
#[derive(Serialize, Deserialize)]
struct StoredConfig {
    #[serde(flatten)]
    config: VaultConfig,
    mac: String,
}

impl VaultConfig {
    /// The config object's header: format version 3 once hosts write.
    fn header(&self) -> Vec<u8> {
        let envelope = if self.hosts { Envelope::MASTER_V3 } else { Envelope::MASTER };
        envelope.prefix(ObjectKind::Config).to_vec()
    }

    fn mac(&self, key: &MasterKey) -> Result<String> {
        let mut bytes = self.header();
        serde_json::to_writer(&mut bytes, self).map_err(|e| VaultError::Invalid(e.to_string()))?;
        Ok(hex::encode(key.config_mac(&bytes)))
    }

    /// The config object's bytes, authenticated by `key`.
    fn encode(&self, key: &MasterKey) -> Result<Vec<u8>> {
        let stored = StoredConfig { config: self.clone(), mac: self.mac(key)? };
        let mut bytes = self.header();
        serde_json::to_writer(&mut bytes, &stored).map_err(|e| VaultError::Invalid(e.to_string()))?;
        Ok(bytes)
    }

    /// Reads the clear-text config, bounding every number before use.
    fn parse(location: &str, bytes: &[u8]) -> Result<StoredConfig> {
        let (envelope, body) = parse_any_header("config", bytes, ObjectKind::Config).map_err(|e| match e {
            VaultError::NewerFormat { found, supported, .. } => {
                VaultError::NewerFormat { location: location.to_string(), found, supported }
            }
            other => other,
        })?;
        let stored: StoredConfig = serde_json::from_slice(body).map_err(|e| VaultError::damaged("config", e))?;
        let expected = if stored.config.hosts { Envelope::MASTER_V3 } else { Envelope::MASTER };
        if envelope != expected {
            return Err(VaultError::damaged("config", "its format version does not fit what it says of hosts"));
        }
        if !stored.config.chunker.is_valid() {
            return Err(VaultError::damaged("config", "chunker sizes are out of bounds"));
        }
        Ok(stored)
    }
}

/// Objects a read skipped because they are damaged, each with the reason:
/// the rest of the vault stays usable, and the caller warns about these.
#[derive(Debug, Default)]
pub struct DamageLog(std::sync::Mutex<std::collections::BTreeMap<String, String>>);

impl DamageLog {
    pub(crate) fn note(&self, err: &VaultError) {
        if let VaultError::Damaged { object, reason } = err
            && let Ok(mut m) = self.0.lock()
        {
            m.entry(object.clone()).or_insert_with(|| reason.clone());
        }
    }

    /// Every damaged object skipped so far, by name, with the reason.
    pub fn entries(&self) -> Vec<(String, String)> {
        self.0.lock().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
    }
}

/// Settings that may change over a vault's life (a catalog record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaultSettings {
    pub name: String,
    pub location: String,
    /// `lrs` or `grs`.
    pub redundancy: String,
    pub secondary: Option<String>,
    /// Target size of a data pack in bytes.
    pub pack_size: u32,
    /// zstd level; 0 stores chunks uncompressed.
    pub compression_level: i32,
    /// Days deleted backup data stays recoverable (`protection undelete`).
    #[serde(default = "default_soft_delete_days")]
    pub soft_delete_days: u32,
    /// Vaults made before the control plane kept its own settings record
    /// (`catalog/control/`) kept its webhook, replication lag threshold and
    /// shipping address here: this crate reads none of them, the service
    /// takes them over once and clears them (`None` in every vault made or
    /// changed since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// How this vault's store is talked to; unset values take the store
    /// kind's defaults.
    #[serde(default)]
    pub store: StoreSettings,
    /// See `webhook`: from before the control plane's own record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_lag_alert_mins: Option<u32>,
    /// See `webhook`: from before the control plane's own record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<String>,
    /// A geo-redundant vault copies packs to its secondary while a backup
    /// writes them (`Some(true)`), rather than in the pass after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicate_during_backup: Option<bool>,
    /// Whether points may be deleted before their retention ends
    /// (`holds.rs`; docs/SECURITY.md).
    #[serde(default, skip_serializing_if = "Immutability::is_disabled")]
    pub immutability: Immutability,
    /// Soft delete that can be neither shortened nor turned off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub soft_delete_always_on: bool,
    /// S3 Object Lock on every pack and point manifest (`locks.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<ObjectLockSettings>,
    /// The guard whose approval critical operations need (`guard.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guard: Option<GuardBinding>,
}

/// Limits for talking to a vault's store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSettings {
    /// Tries of a failing store call, the first included.
    pub retries: Option<u32>,
    /// The longest wait between two tries, in seconds.
    pub retry_max_wait_secs: Option<u32>,
    /// Uploads or downloads at once.
    pub parallel_requests: Option<u32>,
}

impl StoreSettings {
    pub const RETRIES: std::ops::RangeInclusive<u32> = 1..=30;
    pub const RETRY_MAX_WAIT_SECS: std::ops::RangeInclusive<u32> = 1..=600;
    pub const PARALLEL_REQUESTS: std::ops::RangeInclusive<u32> = 1..=64;
}

fn default_soft_delete_days() -> u32 {
    VaultSettings::DEFAULT_SOFT_DELETE_DAYS
}

impl VaultSettings {
    /// 16 MiB data packs: few enough objects for an object store, small
    /// enough that two packs in flight keep memory low (docs/FORMAT.md).
    pub const DEFAULT_PACK_SIZE: u32 = 16 << 20;
    pub const DEFAULT_COMPRESSION: i32 = 2;
    /// As Azure Backup's soft delete.
    pub const DEFAULT_SOFT_DELETE_DAYS: u32 = 14;
}

/// Options for [`Vault::create`].
pub struct CreateOptions {
    pub settings: VaultSettings,
    pub kdf: KdfParams,
    pub chunker: ChunkerParams,
    pub hostname: String,
}

impl CreateOptions {
    /// What tests create: 1 MiB packs, zstd level 1, and the cheapest key
    /// derivation (never for a real vault).
    pub fn for_tests(name: &str) -> Self {
        let settings = VaultSettings {
            name: name.into(),
            location: "test".into(),
            redundancy: "lrs".into(),
            secondary: None,
            pack_size: 1 << 20,
            compression_level: 1,
            soft_delete_days: VaultSettings::DEFAULT_SOFT_DELETE_DAYS,
            webhook: None,
            store: StoreSettings::default(),
            replication_lag_alert_mins: None,
            shipping_address: None,
            replicate_during_backup: None,
            immutability: Immutability::Disabled,
            soft_delete_always_on: false,
            object_lock: None,
            guard: None,
        };
        Self { settings, kdf: KdfParams::TESTING, chunker: ChunkerParams::DEFAULT, hostname: "h".into() }
    }
}

const SETTINGS_KIND: &str = "settings";
const SETTINGS_ID: RecordId = RecordId([0; 16]);

/// An open, unlocked vault.
pub struct Vault {
    store: Arc<dyn Store>,
    key: MasterKey,
    config: VaultConfig,
    /// As last read: [`Vault::refresh_settings`] reads them again, for a
    /// process that keeps the vault open while others change them.
    settings: RwLock<Arc<VaultSettings>>,
    slot: RecordId,
    damage: Arc<DamageLog>,
    cache: Option<crate::ObjectCache>,
    /// Where the merged index file is kept (see [`crate::index::merged`]).
    merged_index: Option<std::path::PathBuf>,
    /// Whole tree packs read from a remote store, so that walking a tree
    /// costs one request per tree pack, not one per directory.
    tree_packs: Mutex<TreePacks>,
    /// The primary of a geo-redundant vault, when this process writes to it
    /// through the replicating layer.
    replicating: Option<Arc<boveda_store::ReplicatingStore>>,
    /// What this host saw of the catalog (see [`crate::catalog_seen`]).
    seen: Option<Arc<crate::catalog_seen::SeenCatalog>>,
}

/// Tree packs kept in memory: their total size, and each by id.
type TreePacks = (usize, HashMap<crate::PackId, Arc<Vec<u8>>>);

impl Vault {
    /// Makes a new vault in an empty store location.
    ///
    /// # Errors
    /// `Invalid` when the location already holds a vault or other objects.
    pub fn create(store: Arc<dyn Store>, passphrase: &[u8], opts: CreateOptions) -> Result<Vault> {
        let location = store.location();
        match store.get("config") {
            Ok(_) => {
                return Err(VaultError::Invalid(format!("{location} already holds a vault")));
            }
            Err(e) if e.kind() == StoreErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if !store.is_empty_below("")? {
            return Err(VaultError::Invalid(format!(
                "{location} is not empty and holds no vault: choose a new or empty folder"
            )));
        }
        if !opts.chunker.is_valid() {
            return Err(VaultError::Invalid("invalid chunker parameters".into()));
        }
        let key = MasterKey::generate();
        let slot = KeySlot::create(&key, passphrase, opts.kdf, "initial", &opts.hostname)?;
        store.put_new(&KeySlot::name(&slot.id), &slot.to_bytes()?)?;
        let config = VaultConfig {
            id: RecordId::random(),
            created: Timestamp::now(),
            chunker: opts.chunker,
            point_tags: true,
            hosts: false,
        };
        let vault = Vault {
            store,
            key,
            config,
            settings: RwLock::new(Arc::new(opts.settings.clone())),
            slot: slot.id,
            damage: Arc::default(),
            cache: None,
            seen: None,
            merged_index: None,
            tree_packs: Mutex::default(),
            replicating: None,
        };
        vault.catalog_put(SETTINGS_KIND, &SETTINGS_ID, Some(&opts.settings))?;
        // The config object is written last: its presence is what makes a vault.
        vault.store.put_new("config", &vault.config.encode(&vault.key)?)?;
        Ok(vault)
    }

    /// Opens a vault with a passphrase.
    ///
    /// # Errors
    /// `NotAVault`, `NewerFormat`, `WrongPassphrase`, or a store error.
    pub fn open(store: Arc<dyn Store>, passphrase: &[u8]) -> Result<Vault> {
        let location = store.location();
        let cfg_bytes = match store.get("config") {
            Ok(b) => b,
            Err(e) if e.kind() == StoreErrorKind::NotFound => {
                return Err(VaultError::NotAVault { location });
            }
            Err(e) => return Err(e.into()),
        };
        let stored = VaultConfig::parse(&location, &cfg_bytes)?;
        let mut slots = store.list("keys")?;
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        // A damaged slot, or one whose numbers are out of bounds, is skipped
        // (and named): it must not lock out the passphrase of a good one.
        let damage = Arc::new(DamageLog::default());
        for info in &slots {
            let unlocked = store
                .get(&info.name)
                .map_err(VaultError::from)
                .and_then(|b| KeySlot::from_bytes(&info.name, &b))
                .and_then(|slot| Ok((slot.id, slot.unlock(passphrase)?)));
            let (slot, key) = match unlocked {
                Ok((slot, Some(key))) => (slot, key),
                Ok((_, None)) => continue,
                Err(e @ VaultError::Damaged { .. }) => {
                    damage.note(&e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if stored.config.mac(&key)? != stored.mac {
                return Err(VaultError::damaged(
                    "config",
                    "fails authentication (its vault id or chunker sizes were changed)",
                ));
            }
            let mut vault = Vault {
                store,
                key,
                config: stored.config,
                settings: RwLock::new(Arc::new(VaultSettings {
                    name: String::new(),
                    location: String::new(),
                    redundancy: "lrs".into(),
                    secondary: None,
                    pack_size: VaultSettings::DEFAULT_PACK_SIZE,
                    compression_level: VaultSettings::DEFAULT_COMPRESSION,
                    soft_delete_days: VaultSettings::DEFAULT_SOFT_DELETE_DAYS,
                    webhook: None,
                    store: StoreSettings::default(),
                    replication_lag_alert_mins: None,
                    shipping_address: None,
                    replicate_during_backup: None,
                    immutability: Immutability::Disabled,
                    soft_delete_always_on: false,
                    object_lock: None,
                    guard: None,
                })),
                slot,
                damage,
                cache: None,
                seen: None,
                merged_index: None,
                tree_packs: Mutex::default(),
                replicating: None,
            };
            let settings = vault.catalog_list::<VaultSettings>(SETTINGS_KIND)?;
            if let Some((_, s)) = settings.into_iter().next() {
                vault.settings = RwLock::new(Arc::new(s));
            }
            return Ok(vault);
        }
        Err(VaultError::WrongPassphrase { location, slots: slots.len(), damaged: damage.entries() })
    }

    /// Damaged objects that reads of this vault skipped so far.
    pub fn damage(&self) -> &Arc<DamageLog> {
        &self.damage
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    pub fn config(&self) -> &VaultConfig {
        &self.config
    }

    /// The settings as last read (at open, by a change through this
    /// handle, or by [`Vault::refresh_settings`]).
    pub fn settings(&self) -> Arc<VaultSettings> {
        self.settings.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Reads the settings again from the store: a long-running process
    /// (the agent, the server) sees what another process changed.
    ///
    /// # Errors
    /// A store error or a damaged record; the settings stay as they were.
    pub fn refresh_settings(&self) -> Result<()> {
        if let Some((_, s)) = self.catalog_list::<VaultSettings>(SETTINGS_KIND)?.into_iter().next() {
            *self.settings.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(s);
        }
        Ok(())
    }

    pub fn location(&self) -> String {
        self.store.location()
    }

    /// Keeps local copies of the vault's immutable objects below
    /// `dir/<vault id>/` (see [`crate::ObjectCache`]).
    /// Also keeps the merged index there (see [`Vault::use_index_cache`]).
    pub fn use_cache(&mut self, dir: &std::path::Path) {
        self.cache = Some(crate::ObjectCache::new(dir.join(self.config.id.to_hex())));
        self.use_index_cache(dir);
    }

    /// Keeps the merged index as a file below `dir/<vault id>/`, so that
    /// opening the index costs neither reads nor memory in proportion to
    /// the vault (see [`crate::index::merged`]).
    pub fn use_index_cache(&mut self, dir: &std::path::Path) {
        let here = dir.join(self.config.id.to_hex());
        self.merged_index = Some(here.join("index.merged"));
        self.seen = Some(Arc::new(crate::catalog_seen::SeenCatalog::open(here.join("catalog-seen"))));
    }

    /// What this host saw of the catalog, when the vault has a cache folder.
    pub fn seen_catalog(&self) -> Option<&crate::catalog_seen::SeenCatalog> {
        self.seen.as_deref()
    }

    fn note_seen(&self, name: &str, tombstone: bool) {
        if let Some(seen) = &self.seen {
            seen.note(name, tombstone);
        }
    }

    /// Reads an immutable object through the cache: a cached copy that
    /// `open` accepts is used as is; one it refuses is dropped and the
    /// object fetched again; a fetched object `open` accepts is cached.
    fn read_immutable<T>(&self, name: &str, open: impl Fn(&[u8]) -> Result<T>) -> Result<T> {
        if let Some(cache) = &self.cache
            && let Some(bytes) = cache.read(name)
        {
            match open(&bytes) {
                Ok(v) => return Ok(v),
                Err(_) => cache.forget(name),
            }
        }
        let bytes = self.store.get(name)?;
        let value = open(&bytes)?;
        if let Some(cache) = &self.cache {
            cache.write(name, &bytes);
        }
        Ok(value)
    }

    /// Drops cached copies below `folder` that a listing no longer shows.
    fn forget_unlisted<'n>(&self, folder: &str, listed: impl Iterator<Item = &'n str>) {
        if let Some(cache) = &self.cache {
            cache.retain(folder, &listed.collect());
        }
    }

    /// Swaps the store this vault talks through for another stack over the
    /// same objects (the service re-layers it with the vault's own limits).
    pub fn set_store(&mut self, store: Arc<dyn Store>) {
        self.store = store;
        self.replicating = None;
    }

    /// The same vault (keys, settings) over another store stack, such as
    /// one that keeps an offline seed's data in a staging folder. It starts
    /// with no cache and reads its index from that stack.
    pub fn with_store(&self, store: Arc<dyn Store>) -> Vault {
        Vault {
            store,
            key: self.key.clone(),
            config: self.config.clone(),
            settings: RwLock::new(self.settings()),
            slot: self.slot,
            damage: Arc::new(DamageLog::default()),
            cache: None,
            seen: None,
            merged_index: None,
            tree_packs: Mutex::default(),
            replicating: None,
        }
    }

    /// Writes from now on through a replicating layer over this vault's
    /// store (a geo-redundant vault's primary).
    pub fn set_replicating_store(&mut self, store: Arc<boveda_store::ReplicatingStore>) {
        self.store = store.clone();
        self.replicating = Some(store);
    }

    /// The replicating layer, when writes go through one.
    pub fn replicating_store(&self) -> Option<&Arc<boveda_store::ReplicatingStore>> {
        self.replicating.as_ref()
    }

    /// Uploads or downloads to run at once: the vault's setting, else what
    /// suits its kind of store.
    pub fn parallel_requests(&self) -> usize {
        self.settings()
            .store
            .parallel_requests
            .map_or_else(|| self.store.capabilities().parallel_requests, |n| n as usize)
            .max(1)
    }

    /// Bytes the vault's objects take in its store, listed folder by folder
    /// (never the whole store: a prefix may hold other data beside it).
    ///
    /// # Errors
    /// A store error.
    pub fn stored_bytes(&self) -> Result<u64> {
        let mut total = self.store.stat("config")?.size;
        for folder in Self::FOLDERS {
            self.store.list_pages(folder, &mut |page| {
                total += page.iter().map(|o| o.size).sum::<u64>();
                std::ops::ControlFlow::Continue(())
            })?;
        }
        Ok(total)
    }

    /// The folders a vault's objects live in, besides its `config`.
    pub const FOLDERS: [&str; 6] = ["keys", "catalog", "points", "index", "packs", "locks"];

    /// A chunker with this vault's sizes and secret gear table.
    pub fn chunker(&self) -> Chunker {
        Chunker::new(self.config.chunker, self.key.chunker_seed())
    }

    /// Replaces the settings (a new catalog revision).
    ///
    /// # Errors
    /// A store error.
    pub fn update_settings(&self, settings: VaultSettings) -> Result<()> {
        self.change_settings(|s| *s = settings.clone())
    }

    /// Changes the settings as they are in the store now (not as this
    /// handle read them), by compare-and-swap: two processes changing
    /// different settings at once both keep their change.
    ///
    /// # Errors
    /// `Invalid` for a change [`check_settings_change`] refuses (nothing
    /// is written); a store error; `Busy` when others keep changing them.
    pub fn change_settings(&self, change: impl Fn(&mut VaultSettings)) -> Result<()> {
        self.change_settings_by("this process", Timestamp::now(), change).map(|_| ())
    }

    /// [`Vault::change_settings`] by `by` at `now`: on a vault bound to a
    /// guard, a change [`guarded_changes`] names goes through only with
    /// the guard's approval of exactly that change (`guard.rs`).
    ///
    /// # Errors
    /// As [`Vault::change_settings`]; `NeedsApproval`.
    pub fn change_settings_by(
        &self,
        by: &str,
        now: Timestamp,
        change: impl Fn(&mut VaultSettings),
    ) -> Result<GuardOutcome> {
        self.refresh_settings()?;
        let current = (*self.settings()).clone();
        let mut proposed = current.clone();
        change(&mut proposed);
        check_settings_change(&current, &proposed)?;
        let guarded = guarded_changes(&current, &proposed);
        let mut outcome = GuardOutcome::NotGuarded;
        if !guarded.is_empty() && current.guard.is_some() {
            let op = GuardedOp::new("change settings", format!("vault {}", current.name), guarded.join("; "));
            outcome = self.guard_authorize(&op, by, now)?;
        }
        let opened = current.clone();
        let written = self.catalog_update(SETTINGS_KIND, &SETTINGS_ID, |stored: Option<VaultSettings>| {
            let old = stored.unwrap_or_else(|| opened.clone());
            let mut settings = old.clone();
            change(&mut settings);
            // what protects points is weakened only as its rules allow
            check_settings_change(&old, &settings)?;
            // and what the guard approved is what is written
            let now_guarded = guarded_changes(&old, &settings);
            if !now_guarded.is_empty() && old.guard.is_some() && (now_guarded != guarded || opened.guard != old.guard) {
                return Err(VaultError::Busy(format!(
                    "the settings of vault {} changed while this change was authorized; run it again",
                    old.name
                )));
            }
            Ok(Some(settings))
        })?;
        if let Some(settings) = written {
            *self.settings.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(settings);
        }
        Ok(outcome)
    }
}

//! Opening, creating and reading a vault.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use boveda_store::{Store, StoreErrorKind};
use jiff::Timestamp;
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::blob::decode_blob;
use crate::catalog::{CatalogRecord, is_live, newest_revisions, revision_name};
use crate::chunker::{Chunker, ChunkerParams};
use crate::crypto::{KdfParams, MasterKey};
use crate::error::{Result, VaultError};
use crate::index::merged::{MergedIndex, MergedIndexBuilder};
use crate::index::{BlobRef, ChunkIndex, IndexObject};
use crate::key_slot::{KeySlot, KeySlotInfo};
use crate::object::{ObjectKind, header, open_json, parse_header, seal_json};
use crate::pack::pack_name;
use crate::point::{RecoveryPoint, point_name};
use crate::tree::Tree;
use crate::{ChunkId, PointId, RecordId};

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
    fn mac(&self, key: &MasterKey) -> Result<String> {
        let mut bytes = header(ObjectKind::Config).to_vec();
        serde_json::to_writer(&mut bytes, self).map_err(|e| VaultError::Invalid(e.to_string()))?;
        Ok(hex::encode(key.config_mac(&bytes)))
    }

    /// Reads the clear-text config, bounding every number before use.
    fn parse(location: &str, bytes: &[u8]) -> Result<StoredConfig> {
        let body = parse_header("config", bytes, ObjectKind::Config).map_err(|e| match e {
            VaultError::NewerFormat { found, supported, .. } => {
                VaultError::NewerFormat { location: location.to_string(), found, supported }
            }
            other => other,
        })?;
        let stored: StoredConfig = serde_json::from_slice(body).map_err(|e| VaultError::damaged("config", e))?;
        if !stored.config.chunker.is_valid() {
            return Err(VaultError::damaged("config", "chunker sizes are out of bounds"));
        }
        Ok(stored)
    }
}

/// Index objects listed since a merged index was written that are read
/// and added in memory, at most; more, and the file is built again.
const PATCH_OBJECTS: usize = 256;
/// Sealed bytes of those objects at most (about 180 000 entries, some
/// 15 MB in memory): memory stays bounded whatever was added.
const PATCH_BYTES: u64 = 8 << 20;

/// Whether a merged index file is close enough to the listing to be
/// patched: then the base packs whose objects are gone, and the names of
/// the objects to add. `None` when it should be built again.
fn patchable(base: MergedIndex, listed: &[boveda_store::ObjectInfo]) -> Option<(MergedIndex, HashSet<u32>, Vec<&str>)> {
    let merged: HashSet<&str> = base.names().iter().map(String::as_str).collect();
    let added: Vec<&boveda_store::ObjectInfo> = listed.iter().filter(|o| !merged.contains(o.name.as_str())).collect();
    if added.len() > PATCH_OBJECTS || added.iter().map(|o| o.size).sum::<u64>() > PATCH_BYTES {
        return None;
    }
    let added: Vec<&str> = added.iter().map(|o| o.name.as_str()).collect();
    let listed: HashSet<&str> = listed.iter().map(|o| o.name.as_str()).collect();
    let removed: HashSet<u32> = (0..base.names().len())
        .filter(|&i| !listed.contains(base.names()[i].as_str()))
        .filter_map(|i| u32::try_from(i).ok())
        .collect();
    let mut gone = HashSet::new();
    if !removed.is_empty() {
        let mut entries = 0u64;
        for pos in 0..u32::try_from(base.pack_count()).ok()? {
            let pack = base.pack(pos);
            if removed.contains(&pack.source) {
                gone.insert(pos);
                entries += u64::from(pack.entries);
            }
        }
        // packs swept away cost a lookup each time they are skipped
        if entries > (base.distinct() / 8).max(100_000) {
            return None;
        }
    }
    Some((base, gone, added))
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
    /// Where alerts are POSTed as JSON, if anywhere.
    #[serde(default)]
    pub webhook: Option<String>,
    /// How this vault's store is talked to; unset values take the store
    /// kind's defaults.
    #[serde(default)]
    pub store: StoreSettings,
    /// A geo-redundant vault's secondary may lag this many minutes before
    /// an alert is raised (unset: [`VaultSettings::DEFAULT_LAG_ALERT_MINS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_lag_alert_mins: Option<u32>,
    /// Where the drives of offline seeding are shipped (shown by diskprep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<String>,
    /// A geo-redundant vault copies packs to its secondary while a backup
    /// writes them (`Some(true)`), rather than in the pass after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicate_during_backup: Option<bool>,
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
    /// Minutes a secondary may lag before an alert.
    pub const DEFAULT_LAG_ALERT_MINS: u32 = 60;
    pub const LAG_ALERT_MINS: std::ops::RangeInclusive<u32> = 1..=7 * 24 * 60;
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

/// Bytes of tree packs a vault keeps in memory at most (then it starts over).
const TREE_PACKS_KEPT: usize = 64 << 20;

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
        let config =
            VaultConfig { id: RecordId::random(), created: Timestamp::now(), chunker: opts.chunker, point_tags: true };
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
        let stored = StoredConfig { config: vault.config.clone(), mac: vault.config.mac(&vault.key)? };
        let mut cfg = header(ObjectKind::Config).to_vec();
        serde_json::to_writer(&mut cfg, &stored).map_err(|e| VaultError::Invalid(e.to_string()))?;
        vault.store.put_new("config", &cfg)?;
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
    pub fn update_settings(&mut self, settings: VaultSettings) -> Result<()> {
        self.change_settings(|s| *s = settings.clone())
    }

    /// Changes the settings as they are in the store now (not as this
    /// handle read them), by compare-and-swap: two processes changing
    /// different settings at once both keep their change.
    ///
    /// # Errors
    /// A store error; `Busy` when others keep changing them.
    pub fn change_settings(&mut self, change: impl Fn(&mut VaultSettings)) -> Result<()> {
        let opened = (*self.settings()).clone();
        let written = self.catalog_update(SETTINGS_KIND, &SETTINGS_ID, |current: Option<VaultSettings>| {
            let mut settings = current.unwrap_or_else(|| opened.clone());
            change(&mut settings);
            Ok(Some(settings))
        })?;
        if let Some(settings) = written {
            *self.settings.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(settings);
        }
        Ok(())
    }

    // ----- key slots -----

    /// Adds a key slot for another passphrase.
    ///
    /// # Errors
    /// A store error.
    pub fn add_key(&self, passphrase: &[u8], label: &str, kdf: KdfParams, hostname: &str) -> Result<RecordId> {
        let slot = KeySlot::create(&self.key, passphrase, kdf, label, hostname)?;
        self.store.put_new(&KeySlot::name(&slot.id), &slot.to_bytes()?)?;
        Ok(slot.id)
    }

    /// Lists key slots.
    ///
    /// # Errors
    /// A store error or a damaged slot.
    pub fn list_keys(&self) -> Result<Vec<KeySlotInfo>> {
        let mut out = Vec::new();
        for info in self.store.list("keys")? {
            let read = self.store.get(&info.name).map_err(VaultError::from);
            let Some(slot) = self.skip_damaged(read.and_then(|b| KeySlot::from_bytes(&info.name, &b))).transpose()?
            else {
                continue;
            };
            out.push(KeySlotInfo {
                id: slot.id,
                created: slot.created,
                hostname: slot.hostname,
                label: slot.label,
                current: slot.id == self.slot,
            });
        }
        out.sort_by_key(|k| k.created);
        Ok(out)
    }

    /// Removes a key slot; never the last one, nor the one in use.
    ///
    /// # Errors
    /// `NotFound` or `Invalid` with the reason.
    pub fn remove_key(&self, id_prefix: &str) -> Result<RecordId> {
        let keys = self.list_keys()?;
        let matches: Vec<_> = keys.iter().filter(|k| k.id.to_hex().starts_with(id_prefix)).collect();
        let slot = match matches.as_slice() {
            [one] => *one,
            [] => return Err(VaultError::NotFound(format!("key slot {id_prefix}"))),
            _ => {
                return Err(VaultError::Invalid(format!("key slot prefix {id_prefix} is ambiguous")));
            }
        };
        if keys.len() == 1 {
            return Err(VaultError::Invalid("cannot remove the vault's last key slot".into()));
        }
        if slot.current {
            return Err(VaultError::Invalid(
                "cannot remove the key slot this passphrase opened; open the vault with another passphrase to remove it".into(),
            ));
        }
        self.store.delete(&KeySlot::name(&slot.id))?;
        Ok(slot.id)
    }

    // ----- index and blobs -----

    /// Reads every index object and merges them.
    ///
    /// # Errors
    /// A store error, or `Damaged` naming an index object.
    pub fn load_index(&self) -> Result<ChunkIndex> {
        self.load_index_without(&HashSet::new())
    }

    /// Reads every index object; the packs in `skip` (marked for deletion)
    /// are added readable-only and last: a backup reads its parent's trees
    /// from them but never deduplicates against them.
    ///
    /// With a cache folder the index is the merged index file, patched in
    /// memory with the index objects listed since it was written, or built
    /// again when it is missing, damaged or far behind.
    ///
    /// # Errors
    /// As [`Vault::load_index`].
    pub fn load_index_without(&self, skip: &HashSet<crate::PackId>) -> Result<ChunkIndex> {
        self.with_index_listing(|listed| match &self.merged_index {
            Some(path) => self.load_merged_index(path, listed, skip),
            None => self.load_index_in_memory(&listed.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), skip),
        })
    }

    /// Lists the index objects and runs `read` on the listing. An object
    /// listed and then deleted was rewritten by a prune: one that
    /// consolidated small objects, or swept a pack out of a bigger one,
    /// wrote the replacement before deleting, so listing again finds it.
    fn with_index_listing<T>(&self, read: impl Fn(&[boveda_store::ObjectInfo]) -> Result<T>) -> Result<T> {
        for _ in 0..4 {
            let listed = self.store.list("index")?;
            match read(&listed) {
                Err(VaultError::Store(e)) if e.kind() == StoreErrorKind::NotFound => continue,
                Err(e) => return Err(e),
                Ok(value) => {
                    self.forget_unlisted("index", listed.iter().map(|o| o.name.as_str()));
                    return Ok(value);
                }
            }
        }
        Err(VaultError::Busy("the index keeps changing while being read; try again".into()))
    }

    fn open_index_object(&self, name: &str) -> Result<IndexObject> {
        self.read_immutable(name, |b| IndexObject::open(&self.key, name, b))
    }

    /// Reads index objects in parallel, in order; damaged ones are noted
    /// and left out.
    fn read_index_objects<'n>(&self, names: &[&'n str]) -> Result<Vec<(&'n str, IndexObject)>> {
        names
            .par_iter()
            .filter_map(|&name| self.skip_damaged(self.open_index_object(name).map(|o| (name, o))))
            .collect()
    }

    fn load_index_in_memory(&self, names: &[&str], skip: &HashSet<crate::PackId>) -> Result<ChunkIndex> {
        let objects = self.read_index_objects(names)?;
        let mut index = ChunkIndex::default();
        for (_, obj) in &objects {
            for pack in obj.packs.iter().filter(|p| !skip.contains(&p.id)) {
                index.add_pack(pack);
            }
        }
        for (_, obj) in &objects {
            for pack in obj.packs.iter().filter(|p| skip.contains(&p.id)) {
                index.add_read_only_pack(pack);
            }
        }
        Ok(index)
    }

    fn load_merged_index(
        &self,
        path: &std::path::Path,
        listed: &[boveda_store::ObjectInfo],
        skip: &HashSet<crate::PackId>,
    ) -> Result<ChunkIndex> {
        let mac_key = self.key.cache_mac_key();
        let names: Vec<&str> = listed.iter().map(|o| o.name.as_str()).collect();
        let names = names.as_slice();
        let mut index = match MergedIndex::open(path, &mac_key).and_then(|base| patchable(base, listed)) {
            Some((base, gone, added)) => {
                let added = self.read_index_objects(&added)?;
                let mut index = ChunkIndex::with_base(base, gone);
                for (_, obj) in &added {
                    obj.packs.iter().for_each(|p| index.add_pack(p));
                }
                index
            }
            None => match self.build_merged_index(path, listed, &mac_key)? {
                Some(base) => ChunkIndex::with_base(base, HashSet::new()),
                // the cache folder cannot take the file: do without it
                None => return self.load_index_in_memory(names, skip),
            },
        };
        skip.iter().for_each(|id| index.mark_read_only(id));
        Ok(index)
    }

    /// Builds the merged index file from every index object listed, a
    /// batch at a time (64 objects or 16 MiB of them, read in parallel).
    /// `None` when the file cannot be written.
    fn build_merged_index(
        &self,
        path: &std::path::Path,
        listed: &[boveda_store::ObjectInfo],
        mac_key: &[u8; 32],
    ) -> Result<Option<MergedIndex>> {
        let Ok(mut builder) = MergedIndexBuilder::new(path) else { return Ok(None) };
        let mut batches: Vec<Vec<&str>> = Vec::new();
        let mut bytes = 0;
        for o in listed {
            match batches.last_mut() {
                Some(batch) if batch.len() < 64 && bytes + o.size <= 16 << 20 => {
                    bytes += o.size;
                    batch.push(&o.name);
                }
                _ => {
                    bytes = o.size;
                    batches.push(vec![&o.name]);
                }
            }
        }
        for batch in &batches {
            for (name, obj) in self.read_index_objects(batch)? {
                if builder.add(name, &obj).is_err() {
                    return Ok(None);
                }
            }
        }
        if builder.finish(path, mac_key).is_err() {
            return Ok(None);
        }
        Ok(MergedIndex::open(path, mac_key))
    }

    /// Every index object with its name, read through the cache.
    ///
    /// # Errors
    /// A store error. A damaged index object is skipped and noted in the
    /// damage log: only the chunks it lists are lost.
    pub fn index_objects(&self) -> Result<Vec<(String, IndexObject)>> {
        self.with_index_listing(|listed| {
            let names: Vec<&str> = listed.iter().map(|o| o.name.as_str()).collect();
            Ok(self.read_index_objects(&names)?.into_iter().map(|(n, o)| (n.to_string(), o)).collect())
        })
    }

    /// Reads, authenticates and decompresses one blob.
    ///
    /// # Errors
    /// `MissingChunk` when no index lists it; `Damaged` naming the pack.
    pub fn read_blob(&self, index: &ChunkIndex, id: &ChunkId) -> Result<Vec<u8>> {
        let r = index.get(id).ok_or(VaultError::MissingChunk { chunk: *id })?;
        let name = pack_name(r.kind, &r.pack);
        let sealed = self.store.get_range(&name, u64::from(r.offset), u64::from(r.length))?;
        self.decode_blob_at(&r, id, &sealed)
    }

    /// Decodes a blob whose sealed bytes the caller read from its pack.
    ///
    /// # Errors
    /// `Damaged` naming the pack and chunk.
    pub fn decode_blob_at(&self, r: &BlobRef, id: &ChunkId, sealed: &[u8]) -> Result<Vec<u8>> {
        decode_blob(&self.key, sealed, r.raw_len as usize, id)
            .map_err(|e| VaultError::damaged(pack_name(r.kind, &r.pack), format!("chunk {id}: {e}")))
    }

    /// [`Vault::decode_blob_at`] without copies (see
    /// [`crate::blob::decode_blob_in_place`]): `sealed` is overwritten.
    ///
    /// # Errors
    /// `Damaged` naming the pack and chunk.
    pub fn decode_blob_in_place<'a>(
        &self,
        r: &BlobRef,
        id: &ChunkId,
        sealed: &'a mut [u8],
        out: &'a mut Vec<u8>,
    ) -> Result<&'a [u8]> {
        crate::blob::decode_blob_in_place(&self.key, sealed, r.raw_len as usize, id, out)
            .map_err(|e| VaultError::damaged(pack_name(r.kind, &r.pack), format!("chunk {id}: {e}")))
    }

    /// Reads and decodes one tree.
    ///
    /// # Errors
    /// As [`Vault::read_blob`], or `Damaged` when the tree does not parse.
    pub fn load_tree(&self, index: &ChunkIndex, id: &ChunkId) -> Result<Tree> {
        let r = index.get(id).ok_or(VaultError::MissingChunk { chunk: *id })?;
        if r.kind != crate::BlobKind::Tree || !self.store.capabilities().remote {
            return Tree::decode(id, &self.read_blob(index, id)?);
        }
        let name = pack_name(r.kind, &r.pack);
        let pack = self.tree_pack(&r.pack, &name)?;
        let (start, end) = (r.offset as usize, r.offset as usize + r.length as usize);
        let sealed = pack.get(start..end).ok_or_else(|| VaultError::damaged(&name, "shorter than its index says"))?;
        Tree::decode(id, &self.decode_blob_at(&r, id, sealed)?)
    }

    /// A whole tree pack, read once and kept (up to [`TREE_PACKS_KEPT`]).
    fn tree_pack(&self, id: &crate::PackId, name: &str) -> Result<Arc<Vec<u8>>> {
        if let Ok(kept) = self.tree_packs.lock()
            && let Some(pack) = kept.1.get(id)
        {
            return Ok(pack.clone());
        }
        let pack = Arc::new(self.store.get(name)?);
        if let Ok(mut kept) = self.tree_packs.lock() {
            if kept.0 + pack.len() > TREE_PACKS_KEPT {
                *kept = (0, HashMap::new());
            }
            kept.0 += pack.len();
            kept.1.insert(*id, pack.clone());
        }
        Ok(pack)
    }

    // ----- recovery points -----

    /// Writes a point's manifest: the last step of a backup.
    ///
    /// # Errors
    /// A store error.
    pub fn save_point(&self, point: &RecoveryPoint) -> Result<()> {
        let name = point_name(&point.id);
        let bytes = seal_json(&self.key, ObjectKind::Point, &name, point)?;
        self.store.put_new(&name, &bytes)?;
        Ok(())
    }

    /// A new point id for an item: 12 random bytes, then the item's tag (a
    /// keyed hash of the item id, so names in the store do not link to
    /// the catalog). The tag comes last so that the short ids people type
    /// stay random. [`Vault::list_item_points`] then
    /// reads only the manifests whose names carry the item's tag.
    pub fn new_point_id(&self, item: &RecordId) -> PointId {
        let mut id = PointId::random();
        if self.config.point_tags {
            id.0[12..].copy_from_slice(&self.key.item_tag(&item.0));
        }
        id
    }

    /// Every point in the vault, oldest first.
    ///
    /// # Errors
    /// A store error or a damaged manifest (named).
    pub fn list_points(&self) -> Result<Vec<RecoveryPoint>> {
        self.read_points(|_| true)
    }

    /// One item's points, oldest first. Reads only the manifests named
    /// with the item's tag (others' that share it are read and dropped);
    /// in a vault made before tags, every manifest.
    ///
    /// # Errors
    /// As [`Vault::list_points`].
    pub fn list_item_points(&self, item: &RecordId) -> Result<Vec<RecoveryPoint>> {
        let tag = hex::encode(self.key.item_tag(&item.0));
        let tagged = self.config.point_tags;
        let mut points = self.read_points(|name| !tagged || name.ends_with(&tag))?;
        points.retain(|p| p.item_id == *item);
        Ok(points)
    }

    /// The points whose manifest names `wanted` accepts, oldest first.
    fn read_points(&self, wanted: impl Fn(&str) -> bool + Sync) -> Result<Vec<RecoveryPoint>> {
        let names = self.store.list("points")?;
        // a manifest listed and then deleted was expired by a concurrent prune
        // a damaged manifest is skipped and noted: the other points stay usable
        let open = |name: &str| self.read_immutable(name, |b| open_json(&self.key, name, b, ObjectKind::Point));
        let mut points: Vec<RecoveryPoint> = names
            .par_iter()
            .filter(|info| wanted(&info.name))
            .filter_map(|info| match open(&info.name) {
                Err(VaultError::Store(e)) if e.kind() == StoreErrorKind::NotFound => None,
                got => self.skip_damaged(got),
            })
            .collect::<Result<_>>()?;
        self.forget_unlisted("points", names.iter().map(|o| o.name.as_str()));
        points.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        Ok(points)
    }

    /// Deletes a point's manifest (prune and purge only).
    ///
    /// # Errors
    /// A store error.
    pub fn delete_point(&self, id: &PointId) -> Result<()> {
        // recorded first: a point named elsewhere (by its backup job) and
        // gone without this record was lost, not pruned (`vault check`)
        let record = DeletedPoint { point: *id, deleted: jiff::Timestamp::now() };
        self.catalog_put(DELETED_POINTS_KIND, &RecordId(id.0), Some(&record))?;
        self.store.delete(&point_name(id))?;
        Ok(())
    }

    /// The points deleted on purpose (by prune), by id.
    ///
    /// # Errors
    /// A store error.
    pub fn deleted_points(&self) -> Result<std::collections::HashSet<PointId>> {
        Ok(self.catalog_list::<DeletedPoint>(DELETED_POINTS_KIND)?.into_iter().map(|(_, d)| d.point).collect())
    }

    /// Reads one point.
    ///
    /// # Errors
    /// `NotFound` or `Damaged`.
    pub fn load_point(&self, id: &PointId) -> Result<RecoveryPoint> {
        let name = point_name(id);
        self.read_immutable(&name, |b| open_json(&self.key, &name, b, ObjectKind::Point)).map_err(|e| match e {
            VaultError::Store(e) if e.kind() == StoreErrorKind::NotFound => {
                VaultError::NotFound(format!("recovery point {id}"))
            }
            other => other,
        })
    }

    // ----- catalog -----

    /// Writes a new revision of a catalog entity; `None` deletes it.
    ///
    /// # Errors
    /// A store error.
    pub fn catalog_put<T: Serialize>(&self, kind: &str, id: &RecordId, body: Option<&T>) -> Result<String> {
        let now = Timestamp::now();
        let rec = CatalogRecord { id: *id, revision: now, body };
        let name = revision_name(kind, id, now);
        let bytes = seal_json(&self.key, ObjectKind::Catalog, &name, &rec)?;
        self.store.put_new(&name, &bytes)?;
        self.note_seen(&name, rec.body.is_none());
        Ok(name)
    }

    /// Changes one entity's record by compare-and-swap: reads the newest
    /// revision, applies `change` to its body, and writes the result
    /// create-only under the name that follows the revision read. When
    /// another writer changed the record first, the name is taken: the
    /// record is read again and `change` applied again, so two writers
    /// never lose each other's changes. Returns the body written.
    ///
    /// # Errors
    /// What `change` returns; a store error; `Busy` after 16 lost races.
    pub fn catalog_update<T: Serialize + DeserializeOwned>(
        &self,
        kind: &str,
        id: &RecordId,
        mut change: impl FnMut(Option<T>) -> Result<Option<T>>,
    ) -> Result<Option<T>> {
        for _ in 0..16 {
            let (read, current) = match self.catalog_read_newest_named::<T>(kind, id)? {
                Some((name, rec)) => (Some(name), rec.body),
                None => (None, None),
            };
            let body = change(current)?;
            let now = Timestamp::now();
            let name = match &read {
                Some(read) => crate::catalog::next_revision_name(read)
                    .ok_or_else(|| VaultError::damaged(read, "not a catalog revision name"))?,
                None => revision_name(kind, id, now),
            };
            let rec = CatalogRecord { id: *id, revision: now, body: body.as_ref() };
            let bytes = seal_json(&self.key, ObjectKind::Catalog, &name, &rec)?;
            match self.store.put_new(&name, &bytes) {
                Ok(_) => {
                    self.note_seen(&name, body.is_none());
                    return Ok(body);
                }
                Err(e) if e.kind() == StoreErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::Busy(format!("catalog/{kind}/{id} is being changed by others; try again")))
    }

    /// Removes one revision this process wrote and has since superseded
    /// (a job's earlier heartbeats).
    ///
    /// # Errors
    /// A store error.
    pub fn catalog_drop_revision(&self, name: &str) -> Result<()> {
        self.store.delete(name)?;
        Ok(())
    }

    /// The newest live revision of one entity, if any; a damaged one is
    /// noted and read as absent.
    ///
    /// # Errors
    /// A store error.
    pub fn catalog_get<T: DeserializeOwned>(&self, kind: &str, id: &RecordId) -> Result<Option<T>> {
        Ok(self.skip_damaged(self.catalog_read_newest::<T>(kind, id, None)).transpose()?.flatten().and_then(|r| r.body))
    }

    /// `Ok` and other errors pass; `Damaged` is noted in the damage log and
    /// dropped (`None`), so one damaged object never blocks the others.
    fn skip_damaged<T>(&self, r: Result<T>) -> Option<Result<T>> {
        match r {
            Err(e @ VaultError::Damaged { .. }) => {
                self.damage.note(&e);
                None
            }
            other => Some(other),
        }
    }

    /// Reads an entity's newest revision. A writer may supersede and
    /// delete the revision a listing named (a job's heartbeat) or prune may
    /// compact it: then the entity is listed again.
    fn catalog_read_newest<T: DeserializeOwned>(
        &self,
        kind: &str,
        id: &RecordId,
        listed: Option<&str>,
    ) -> Result<Option<CatalogRecord<T>>> {
        Ok(self.catalog_read_newest_from::<T>(kind, id, listed)?.map(|(_, rec)| rec))
    }

    /// The newest revision of an entity, with its name.
    fn catalog_read_newest_named<T: DeserializeOwned>(
        &self,
        kind: &str,
        id: &RecordId,
    ) -> Result<Option<(String, CatalogRecord<T>)>> {
        self.catalog_read_newest_from(kind, id, None)
    }

    fn catalog_read_newest_from<T: DeserializeOwned>(
        &self,
        kind: &str,
        id: &RecordId,
        listed: Option<&str>,
    ) -> Result<Option<(String, CatalogRecord<T>)>> {
        let mut name = listed.map(str::to_string);
        for _ in 0..8 {
            let current = match name.take() {
                Some(n) => n,
                None => {
                    let names = self.store.list(&format!("catalog/{kind}/{}", id.to_hex()))?;
                    match newest_revisions(kind, names.into_iter().map(|o| o.name)).into_iter().next() {
                        Some((_, n)) => n,
                        None => return Ok(None),
                    }
                }
            };
            match self.read_immutable(&current, |b| open_json(&self.key, &current, b, ObjectKind::Catalog)) {
                Err(VaultError::Store(e)) if e.kind() == StoreErrorKind::NotFound => continue,
                other => {
                    return other.map(|rec: CatalogRecord<T>| {
                        self.note_seen(&current, rec.body.is_none());
                        Some((current, rec))
                    });
                }
            }
        }
        Err(VaultError::Invalid(format!("catalog/{kind}/{id} keeps changing while being read")))
    }

    /// Deletes catalog revisions superseded before `before`: every revision
    /// but an entity's newest, and whole entities whose newest is a
    /// tombstone (older revisions first). Returns how many were deleted.
    ///
    /// # Errors
    /// A store error.
    pub fn catalog_compact(&self, before: Timestamp) -> Result<usize> {
        let names: Vec<String> = self.store.list("catalog")?.into_iter().map(|o| o.name).collect();
        let mut entities: std::collections::BTreeMap<&str, Vec<&String>> = Default::default();
        for name in &names {
            if let Some((entity, _)) = name.rsplit_once('/') {
                entities.entry(entity).or_default().push(name);
            }
        }
        let mut deleted = 0;
        for (_, mut revisions) in entities {
            revisions.sort();
            let Some(newest) = revisions.pop() else { continue };
            for old in revisions {
                if crate::catalog::revision_time(old).is_some_and(|t| t < before) {
                    self.store.delete(old)?;
                    deleted += 1;
                }
            }
            if crate::catalog::revision_time(newest).is_some_and(|t| t < before) {
                // a revision superseded and dropped meanwhile (a job's heartbeat)
                let bytes = match self.store.get(newest) {
                    Err(e) if e.kind() == StoreErrorKind::NotFound => continue,
                    other => other?,
                };
                let read = open_json(&self.key, newest, &bytes, ObjectKind::Catalog);
                let Some(rec): Option<CatalogRecord<serde::de::IgnoredAny>> = self.skip_damaged(read).transpose()?
                else {
                    continue;
                };
                if rec.body.is_none() {
                    self.store.delete(newest)?;
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// The newest live revision of every entity of a kind.
    ///
    /// # Errors
    /// A store error or a damaged record (named).
    pub fn catalog_list<T: DeserializeOwned + Send>(&self, kind: &str) -> Result<Vec<(RecordId, T)>> {
        let folder = format!("catalog/{kind}");
        let listed = self.store.list(&folder)?;
        self.forget_unlisted(&folder, listed.iter().map(|o| o.name.as_str()));
        let newest = newest_revisions(kind, listed.into_iter().map(|o| o.name));
        // a damaged record is skipped and noted: the other entities stay usable
        let records: Vec<Option<CatalogRecord<T>>> = newest
            .par_iter()
            .filter_map(|(id, name)| self.skip_damaged(self.catalog_read_newest(kind, id, Some(name))))
            .collect::<Result<_>>()?;
        Ok(records.into_iter().flatten().filter(is_live).filter_map(|r| r.body.map(|b| (r.id, b))).collect())
    }
}

/// The catalog kind of the records of points deleted on purpose.
pub const DELETED_POINTS_KIND: &str = "deleted-points";

/// A point deleted on purpose: its manifest is gone, and that is no loss.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeletedPoint {
    pub point: PointId,
    pub deleted: jiff::Timestamp,
}

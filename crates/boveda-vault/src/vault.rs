//! Opening, creating and reading a vault.

use std::sync::Arc;

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

const SETTINGS_KIND: &str = "settings";
const SETTINGS_ID: RecordId = RecordId([0; 16]);

/// An open, unlocked vault.
pub struct Vault {
    store: Arc<dyn Store>,
    key: MasterKey,
    config: VaultConfig,
    settings: VaultSettings,
    slot: RecordId,
}

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
        if !store.list("")?.is_empty() {
            return Err(VaultError::Invalid(format!(
                "{location} is not empty and holds no vault: choose a new or empty folder"
            )));
        }
        if !opts.chunker.is_valid() {
            return Err(VaultError::Invalid("invalid chunker parameters".into()));
        }
        let key = MasterKey::generate();
        let slot = KeySlot::create(&key, passphrase, opts.kdf, "initial", &opts.hostname)?;
        store.put(&KeySlot::name(&slot.id), &slot.to_bytes()?)?;
        let config = VaultConfig { id: RecordId::random(), created: Timestamp::now(), chunker: opts.chunker };
        let vault = Vault { store, key, config, settings: opts.settings.clone(), slot: slot.id };
        vault.catalog_put(SETTINGS_KIND, &SETTINGS_ID, Some(&opts.settings))?;
        // The config object is written last: its presence is what makes a vault.
        let mut cfg = header(ObjectKind::Config).to_vec();
        serde_json::to_writer(&mut cfg, &vault.config).map_err(|e| VaultError::Invalid(e.to_string()))?;
        vault.store.put("config", &cfg)?;
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
        let body = parse_header("config", &cfg_bytes, ObjectKind::Config).map_err(|e| match e {
            VaultError::NewerFormat { found, supported, .. } => {
                VaultError::NewerFormat { location: location.clone(), found, supported }
            }
            other => other,
        })?;
        let config: VaultConfig = serde_json::from_slice(body).map_err(|e| VaultError::damaged("config", e))?;
        let slots = store.list("keys")?;
        for info in &slots {
            let slot = KeySlot::from_bytes(&info.name, &store.get(&info.name)?)?;
            if let Some(key) = slot.unlock(passphrase)? {
                let mut vault = Vault {
                    store,
                    key,
                    config,
                    settings: VaultSettings {
                        name: String::new(),
                        location: String::new(),
                        redundancy: "lrs".into(),
                        secondary: None,
                        pack_size: VaultSettings::DEFAULT_PACK_SIZE,
                        compression_level: VaultSettings::DEFAULT_COMPRESSION,
                        soft_delete_days: VaultSettings::DEFAULT_SOFT_DELETE_DAYS,
                        webhook: None,
                    },
                    slot: slot.id,
                };
                let settings = vault.catalog_list::<VaultSettings>(SETTINGS_KIND)?;
                if let Some((_, s)) = settings.into_iter().next() {
                    vault.settings = s;
                }
                return Ok(vault);
            }
        }
        Err(VaultError::WrongPassphrase { location, slots: slots.len() })
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

    pub fn settings(&self) -> &VaultSettings {
        &self.settings
    }

    pub fn location(&self) -> String {
        self.store.location()
    }

    /// A chunker with this vault's sizes and secret gear table.
    pub fn chunker(&self) -> Chunker {
        Chunker::new(self.config.chunker, self.key.chunker_seed())
    }

    /// Writes new settings (a new catalog revision).
    ///
    /// # Errors
    /// A store error.
    pub fn update_settings(&mut self, settings: VaultSettings) -> Result<()> {
        self.catalog_put(SETTINGS_KIND, &SETTINGS_ID, Some(&settings))?;
        self.settings = settings;
        Ok(())
    }

    // ----- key slots -----

    /// Adds a key slot for another passphrase.
    ///
    /// # Errors
    /// A store error.
    pub fn add_key(&self, passphrase: &[u8], label: &str, kdf: KdfParams, hostname: &str) -> Result<RecordId> {
        let slot = KeySlot::create(&self.key, passphrase, kdf, label, hostname)?;
        self.store.put(&KeySlot::name(&slot.id), &slot.to_bytes()?)?;
        Ok(slot.id)
    }

    /// Lists key slots.
    ///
    /// # Errors
    /// A store error or a damaged slot.
    pub fn list_keys(&self) -> Result<Vec<KeySlotInfo>> {
        let mut out = Vec::new();
        for info in self.store.list("keys")? {
            let slot = KeySlot::from_bytes(&info.name, &self.store.get(&info.name)?)?;
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
        self.load_index_without(&std::collections::HashSet::new())
    }

    /// Reads every index object but those of the given packs: what a backup
    /// deduplicates against, leaving out packs marked for deletion.
    ///
    /// # Errors
    /// As [`Vault::load_index`].
    pub fn load_index_without(&self, skip: &std::collections::HashSet<crate::PackId>) -> Result<ChunkIndex> {
        let names = self.store.list("index")?;
        // an index object listed and then deleted was swept by a concurrent prune
        let objects: Vec<IndexObject> = names
            .par_iter()
            .filter_map(|info| match self.store.get(&info.name) {
                Err(e) if e.kind() == StoreErrorKind::NotFound => None,
                got => Some(got.map_err(VaultError::from).and_then(|b| IndexObject::open(&self.key, &info.name, &b))),
            })
            .collect::<Result<_>>()?;
        let mut index = ChunkIndex::default();
        for obj in &objects {
            for pack in obj.packs.iter().filter(|p| !skip.contains(&p.id)) {
                index.add_pack(pack);
            }
        }
        Ok(index)
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

    /// Reads and decodes one tree.
    ///
    /// # Errors
    /// As [`Vault::read_blob`], or `Damaged` when the tree does not parse.
    pub fn load_tree(&self, index: &ChunkIndex, id: &ChunkId) -> Result<Tree> {
        Tree::decode(id, &self.read_blob(index, id)?)
    }

    // ----- recovery points -----

    /// Writes a point's manifest: the last step of a backup.
    ///
    /// # Errors
    /// A store error.
    pub fn save_point(&self, point: &RecoveryPoint) -> Result<()> {
        let bytes = seal_json(&self.key, ObjectKind::Point, point)?;
        self.store.put(&point_name(&point.id), &bytes)?;
        Ok(())
    }

    /// Every point in the vault, oldest first.
    ///
    /// # Errors
    /// A store error or a damaged manifest (named).
    pub fn list_points(&self) -> Result<Vec<RecoveryPoint>> {
        let names = self.store.list("points")?;
        // a manifest listed and then deleted was expired by a concurrent prune
        let mut points: Vec<RecoveryPoint> = names
            .par_iter()
            .filter_map(|info| match self.store.get(&info.name) {
                Err(e) if e.kind() == StoreErrorKind::NotFound => None,
                got => Some(
                    got.map_err(VaultError::from).and_then(|b| open_json(&self.key, &info.name, &b, ObjectKind::Point)),
                ),
            })
            .collect::<Result<_>>()?;
        points.sort_by(|a, b| a.time.cmp(&b.time).then(a.id.cmp(&b.id)));
        Ok(points)
    }

    /// Deletes a point's manifest (prune and purge only).
    ///
    /// # Errors
    /// A store error.
    pub fn delete_point(&self, id: &PointId) -> Result<()> {
        self.store.delete(&point_name(id))?;
        Ok(())
    }

    /// Reads one point.
    ///
    /// # Errors
    /// `NotFound` or `Damaged`.
    pub fn load_point(&self, id: &PointId) -> Result<RecoveryPoint> {
        let name = point_name(id);
        let bytes = self.store.get(&name).map_err(|e| match e.kind() {
            StoreErrorKind::NotFound => VaultError::NotFound(format!("recovery point {id}")),
            _ => e.into(),
        })?;
        open_json(&self.key, &name, &bytes, ObjectKind::Point)
    }

    // ----- catalog -----

    /// Writes a new revision of a catalog entity; `None` deletes it.
    ///
    /// # Errors
    /// A store error.
    pub fn catalog_put<T: Serialize>(&self, kind: &str, id: &RecordId, body: Option<&T>) -> Result<String> {
        let now = Timestamp::now();
        let rec = CatalogRecord { id: *id, revision: now, body };
        let bytes = seal_json(&self.key, ObjectKind::Catalog, &rec)?;
        let name = revision_name(kind, id, now);
        self.store.put(&name, &bytes)?;
        Ok(name)
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

    /// The newest live revision of one entity, if any.
    ///
    /// # Errors
    /// A store error or a damaged record (named).
    pub fn catalog_get<T: DeserializeOwned>(&self, kind: &str, id: &RecordId) -> Result<Option<T>> {
        Ok(self.catalog_read_newest::<T>(kind, id, None)?.and_then(|r| r.body))
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
            match self.store.get(&current) {
                Ok(bytes) => return open_json(&self.key, &current, &bytes, ObjectKind::Catalog).map(Some),
                Err(e) if e.kind() == StoreErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
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
                let rec: CatalogRecord<serde::de::IgnoredAny> =
                    open_json(&self.key, newest, &self.store.get(newest)?, ObjectKind::Catalog)?;
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
        let names = self.store.list(&format!("catalog/{kind}"))?.into_iter().map(|o| o.name);
        let newest = newest_revisions(kind, names);
        let records: Vec<Option<CatalogRecord<T>>> = newest
            .par_iter()
            .map(|(id, name)| self.catalog_read_newest(kind, id, Some(name)))
            .collect::<Result<_>>()?;
        Ok(records.into_iter().flatten().filter(is_live).filter_map(|r| r.body.map(|b| (r.id, b))).collect())
    }
}

//! Geo-redundant (`grs`) vaults: every object of the vault copied to its
//! secondary store. A pass copies what the secondary lacks and deletes what
//! the primary no longer has ([`boveda_store::Replicator`]: nothing is
//! written down, so a pass cut short by a crash loses nothing and any
//! process continues it).

use std::sync::Arc;

use boveda_store::{PassReport, PutMode, Replicator, Store, StoreErrorKind, faults_from_env, layer, open_backend};
use boveda_vault::{Vault, VaultError};
use serde::Serialize;

use crate::error::{Result, ServiceError};

/// The vault's folders in the order a secondary needs them: what is
/// referred to before what refers to it. `config`, whose presence makes a
/// vault, is copied after them.
const FOLDERS: [&str; 5] = ["packs", "index", "catalog", "points", "keys"];

/// How far a vault's secondary store is behind.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicationStatus {
    pub secondary: String,
    /// Objects (and their bytes) on the primary not yet on the secondary.
    pub objects_behind: u64,
    pub bytes_behind: u64,
    /// When the oldest of them was written.
    pub oldest_behind: Option<jiff::Timestamp>,
    /// Objects gone from the primary still to delete on the secondary.
    pub to_delete: u64,
}

/// The secondary store of a `grs` vault, with the vault's retry limits.
///
/// # Errors
/// `Invalid` for a locally redundant vault; a store error when the
/// secondary's URL or credentials are wrong.
pub fn open_secondary(vault: &Vault) -> Result<Arc<dyn Store>> {
    let settings = vault.settings();
    let url = match (settings.redundancy.as_str(), &settings.secondary) {
        ("grs", Some(url)) => url,
        _ => {
            return Err(ServiceError::Invalid(format!(
                "vault {} is locally redundant (lrs): it has no secondary store",
                settings.name
            )));
        }
    };
    let backend = open_backend(url, false).map_err(VaultError::from)?;
    let faults = faults_from_env().map_err(VaultError::from)?;
    Ok(layer(backend, crate::vault_admin::retry_policy(&settings.store), faults))
}

fn replicator(vault: &Vault, secondary: Arc<dyn Store>) -> Replicator {
    Replicator::new(vault.store().clone(), secondary, &FOLDERS, vault.parallel_requests())
}

/// How far the secondary is behind now (lists both stores).
///
/// # Errors
/// As [`open_secondary`]; a store error of either side.
pub fn replication_status(vault: &Vault) -> Result<ReplicationStatus> {
    let secondary = open_secondary(vault)?;
    let lag = replicator(vault, secondary.clone()).lag().map_err(VaultError::from)?;
    let config_missing = u64::from(missing(&*secondary, "config")?);
    let config_size = if config_missing > 0 { vault.store().stat("config").map_err(VaultError::from)?.size } else { 0 };
    Ok(ReplicationStatus {
        secondary: secondary.location(),
        objects_behind: lag.objects + config_missing,
        bytes_behind: lag.bytes + config_size,
        oldest_behind: lag.oldest.and_then(|t| jiff::Timestamp::try_from(t).ok()),
        to_delete: lag.to_delete,
    })
}

fn missing(store: &dyn Store, name: &str) -> Result<bool> {
    match store.stat(name) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == StoreErrorKind::NotFound => Ok(true),
        Err(e) => Err(VaultError::from(e).into()),
    }
}

/// One replication pass: copies what the secondary lacks (`config` last),
/// then deletes what the primary no longer has. `progress` hears of every
/// object copied (its size).
///
/// # Errors
/// As [`open_secondary`]; the first store error of the pass (what was
/// copied stays, and the next pass continues).
pub fn replicate(vault: &Vault, progress: &(dyn Fn(u64) + Sync)) -> Result<PassReport> {
    let secondary = open_secondary(vault)?;
    let mut report = replicator(vault, secondary.clone()).pass(progress).map_err(VaultError::from)?;
    if missing(&*secondary, "config")? {
        let config = vault.store().get("config").map_err(VaultError::from)?;
        match secondary.put("config", &config, PutMode::Create) {
            Ok(_) => {
                report.copied += 1;
                report.copied_bytes += config.len() as u64;
                progress(config.len() as u64);
            }
            Err(e) if e.kind() == StoreErrorKind::AlreadyExists => {}
            Err(e) => return Err(VaultError::from(e).into()),
        }
    }
    Ok(report)
}

/// After a command wrote to a vault: a replication pass if the vault is
/// geo-redundant (`None` for a locally redundant one). A failed pass is
/// only lag; callers warn and the next pass continues.
///
/// # Errors
/// As [`replicate`].
pub fn replicate_if_geo_redundant(vault: &Vault) -> Result<Option<PassReport>> {
    if vault.settings().redundancy != "grs" {
        return Ok(None);
    }
    replicate(vault, &|_| {}).map(Some)
}

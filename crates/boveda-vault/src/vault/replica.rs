//! What a geo-redundant vault's replication needs of the primary store
//! beyond what `boveda_store::Replicator` copies: whether a secondary holds
//! this vault, `config` (copied last, since its presence makes a vault),
//! and the clear record of the last replication pass,
//! `replication/status`, which the control plane writes and reads.

use std::sync::Arc;

use boveda_store::{PutMode, Store, StoreErrorKind};

use super::Vault;
use crate::error::Result;

/// The record of the last replication pass, on the primary (outside the
/// folders that are replicated).
const STATUS: &str = "replication/status";

/// What a secondary store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replica {
    /// This vault (its `config` is the primary's).
    ThisVault,
    /// Another vault.
    AnotherVault,
    /// No vault (not reachable, not mounted, or not copied yet).
    NoVault,
}

impl Vault {
    /// The primary store, below any replicating layer.
    pub fn primary_store(&self) -> &Arc<dyn Store> {
        self.replicating_store().map_or(self.store(), |r| r.primary())
    }

    /// What `secondary` holds.
    ///
    /// # Errors
    /// A store error of either store.
    pub fn replica_in(&self, secondary: &dyn Store) -> Result<Replica> {
        let theirs = match secondary.get("config") {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == StoreErrorKind::NotFound => return Ok(Replica::NoVault),
            Err(e) => return Err(e.into()),
        };
        let ours = self.primary_store().get("config")?;
        // the same bytes, or the same vault's config before it was marked
        // for hosts (a pass brings the mark over)
        let same_id = || {
            let location = secondary.location();
            let parsed = super::VaultConfig::parse(&location, &theirs)
                .ok()
                .zip(super::VaultConfig::parse(&location, &ours).ok());
            parsed.is_some_and(|(t, o)| {
                t.config.id == o.config.id && t.mac == t.config.mac(self.key()).unwrap_or_default()
            })
        };
        Ok(if theirs == ours || same_id() { Replica::ThisVault } else { Replica::AnotherVault })
    }

    /// The size of `config` when `secondary` lacks it (what a pass has
    /// still to copy), else `None`.
    ///
    /// # Errors
    /// A store error.
    pub fn config_missing_in(&self, secondary: &dyn Store) -> Result<Option<u64>> {
        match secondary.stat("config") {
            Ok(_) => Ok(None),
            Err(e) if e.kind() == StoreErrorKind::NotFound => Ok(Some(self.primary_store().stat("config")?.size)),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies `config` to `secondary` when it lacks it, create-only, once
    /// everything it refers to is there; the bytes copied, if any.
    ///
    /// # Errors
    /// A store error.
    pub fn copy_config_to(&self, secondary: &dyn Store) -> Result<Option<u64>> {
        if self.config_missing_in(secondary)?.is_none() {
            return self.mark_hosts_in(secondary);
        }
        let config = self.primary_store().get("config")?;
        match secondary.put("config", &config, PutMode::Create) {
            Ok(_) => Ok(Some(config.len() as u64)),
            Err(e) if e.kind() == StoreErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Brings the primary's mark for hosts (`Vault::mark_hosts_in_use`) to
    /// the secondary's config, so that the secondary too is refused by
    /// builds older than the fleet; the bytes written, if any.
    fn mark_hosts_in(&self, secondary: &dyn Store) -> Result<Option<u64>> {
        let ours = self.primary_store().get("config")?;
        let seen = secondary.stat("config")?;
        let theirs = secondary.get("config")?;
        let location = secondary.location();
        let (Ok(o), Ok(t)) =
            (super::VaultConfig::parse(&location, &ours), super::VaultConfig::parse(&location, &theirs))
        else {
            return Ok(None);
        };
        if ours == theirs || !o.config.hosts || t.config.hosts || o.config.id != t.config.id {
            return Ok(None);
        }
        let (Some(tag), true) = (seen.etag, secondary.capabilities().conditional_replace) else {
            return Ok(None);
        };
        match secondary.put("config", &ours, PutMode::ReplaceIfMatch(tag)) {
            Ok(_) => Ok(Some(ours.len() as u64)),
            Err(e) if e.kind() == StoreErrorKind::ConditionNotMet => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The record of the last replication pass, as written.
    ///
    /// # Errors
    /// A store error.
    pub fn replication_record(&self) -> Result<Option<Vec<u8>>> {
        match self.primary_store().get(STATUS) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == StoreErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the record of the last pass when nobody changed it
    /// meanwhile; a record another process wrote meanwhile is as new and is
    /// kept (and so is the record on a store without version tags).
    ///
    /// # Errors
    /// A store error.
    pub fn write_replication_record(&self, bytes: &[u8]) -> Result<()> {
        let primary = self.primary_store();
        let mode = match primary.stat(STATUS) {
            Ok(info) => match info.etag {
                Some(tag) => PutMode::ReplaceIfMatch(tag),
                None => return Ok(()),
            },
            Err(e) if e.kind() == StoreErrorKind::NotFound => PutMode::Create,
            Err(e) => return Err(e.into()),
        };
        match primary.put(STATUS, bytes, mode) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), StoreErrorKind::AlreadyExists | StoreErrorKind::ConditionNotMet) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

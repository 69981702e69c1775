//! A vault's store as the side that receives an offline seed sees it:
//! store access and drive keys, never the passphrase (docs/FORMAT.md,
//! "Offline seeding"). Through a [`StoreSide`] that side reads and replaces
//! the clear import job records (`imports/<name>.json`, compare-and-swap)
//! and adds the seed's vault objects as they are: it never replaces an
//! object of another content and never deletes one, so a drive or a
//! staging folder cannot change what the vault already holds.

use boveda_store::{PutMode, Store, StoreErrorKind};

use crate::error::{Result, VaultError};

/// Where import job records live: clear JSON, not replicated.
pub const IMPORTS: &str = "imports";

/// The folders an import adds objects to, in the order it adds them:
/// packs before the index objects naming them, points last.
pub const SEED_FOLDERS: [&str; 3] = ["packs", "index", "points"];

/// What [`StoreSide::add_object`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// The object was written.
    New,
    /// The store held the same bytes under the name already (a re-run).
    AlreadyThere,
}

/// A vault's store without its passphrase (see the module's notes).
#[derive(Clone, Copy)]
pub struct StoreSide<'a> {
    store: &'a dyn Store,
}

/// A record and the version tag a replace must name.
pub struct Record {
    pub name: String,
    pub bytes: Vec<u8>,
    pub etag: Option<String>,
}

impl<'a> StoreSide<'a> {
    pub fn new(store: &'a dyn Store) -> Self {
        StoreSide { store }
    }

    fn record_name(name: &str) -> Result<String> {
        let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(VaultError::Invalid(format!("{name:?} cannot name an import job record")));
        }
        Ok(format!("{IMPORTS}/{name}.json"))
    }

    /// Every import job record, by object name.
    ///
    /// # Errors
    /// A store error.
    pub fn records(&self) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for o in self.store.list(IMPORTS)? {
            let bytes = self.store.get(&o.name)?;
            out.push(Record { name: o.name, bytes, etag: o.etag });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The import job record `name` (letters, digits and `-`), if there is
    /// one.
    ///
    /// # Errors
    /// `Invalid` for a name that cannot be a record's; a store error.
    pub fn record(&self, name: &str) -> Result<Option<Record>> {
        let key = Self::record_name(name)?;
        let info = match self.store.stat(&key) {
            Ok(info) => info,
            Err(e) if e.kind() == StoreErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let bytes = self.store.get(&key)?;
        Ok(Some(Record { name: key, bytes, etag: info.etag }))
    }

    /// Writes a new record; `false` when one of that name exists.
    ///
    /// # Errors
    /// `Invalid` for a bad name; a store error.
    pub fn create_record(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        match self.store.put(&Self::record_name(name)?, bytes, PutMode::Create) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == StoreErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces a record if it is still the version `etag` names; `false`
    /// when another process changed it first.
    ///
    /// # Errors
    /// `Invalid` for a bad name; a store error.
    pub fn replace_record(&self, name: &str, bytes: &[u8], etag: &str) -> Result<bool> {
        match self.store.put(&Self::record_name(name)?, bytes, PutMode::ReplaceIfMatch(etag.to_string())) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == StoreErrorKind::ConditionNotMet => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds a vault object of a seed (`packs/`, `index/` or `points/`),
    /// create-only. An object already there with the same bytes is a
    /// re-run; with other bytes it is refused, and the store keeps its own.
    ///
    /// # Errors
    /// `Invalid` for a name outside the seed's folders, or an object of
    /// another content under the name; a store error.
    pub fn add_object(&self, name: &str, bytes: &[u8]) -> Result<Added> {
        let folder = name.split('/').next().unwrap_or_default();
        if !SEED_FOLDERS.contains(&folder) || name.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
            return Err(VaultError::Invalid(format!("{name:?} is not an object of a seed")));
        }
        match self.store.put(name, bytes, PutMode::Create) {
            Ok(_) => Ok(Added::New),
            Err(e) if e.kind() == StoreErrorKind::AlreadyExists => {
                if self.store.get(name)? == bytes {
                    Ok(Added::AlreadyThere)
                } else {
                    Err(VaultError::Invalid(format!("the store holds another object named {name}: not replaced")))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// In a geo-redundant vault (one with replication records), leaves a
    /// pending marker so that the next process to open the vault copies
    /// what this side adds to the secondary: this side has no passphrase to
    /// open the vault's settings and replicate itself.
    ///
    /// # Errors
    /// A store error.
    pub fn mark_for_replication(&self, host: &str) -> Result<()> {
        if !self.store.is_empty_below("replication")? {
            boveda_store::mark_pending(self.store, host)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use boveda_store::LocalStore;

    use super::*;

    #[test]
    fn a_seed_object_is_added_once_and_never_replaced_by_other_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path().to_path_buf());
        let side = StoreSide::new(&store);
        assert_eq!(side.add_object("packs/data/ab/x", b"one").expect("add"), Added::New);
        assert_eq!(side.add_object("packs/data/ab/x", b"one").expect("again"), Added::AlreadyThere);
        let err = side.add_object("packs/data/ab/x", b"two").expect_err("other bytes").to_string();
        assert!(err.contains("packs/data/ab/x"), "{err}");
        assert_eq!(store.get("packs/data/ab/x").expect("get"), b"one");
        for bad in ["config", "keys/a", "catalog/items/x/1", "packs/../config", "imports/x.json"] {
            assert!(side.add_object(bad, b"x").is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn an_import_record_is_replaced_only_at_the_version_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::new(dir.path().to_path_buf());
        let side = StoreSide::new(&store);
        assert!(side.create_record("seed", b"1").expect("create"));
        assert!(!side.create_record("seed", b"2").expect("exists"));
        let first = side.record("seed").expect("read").expect("there");
        let tag = first.etag.expect("local store gives tags");
        assert!(side.replace_record("seed", b"3", &tag).expect("replace"));
        assert!(!side.replace_record("seed", b"4", &tag).expect("stale"));
        assert_eq!(side.record("seed").expect("read").expect("there").bytes, b"3");
        assert!(side.record("../config").is_err());
        assert_eq!(side.records().expect("list").len(), 1);
    }
}

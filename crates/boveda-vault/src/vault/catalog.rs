//! Catalog records: revisions written, read, listed and compacted.

use boveda_store::StoreErrorKind;
use jiff::Timestamp;
use rayon::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::RecordId;
use crate::catalog::{CatalogRecord, is_live, newest_revisions, revision_name};
use crate::error::{Result, VaultError};
use crate::object::{ObjectKind, open_json, seal_json};

use super::{Removal, Vault};

impl Vault {
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
        self.remove(name, Removal::SupersededRevision)?;
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
    pub(super) fn skip_damaged<T>(&self, r: Result<T>) -> Option<Result<T>> {
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
    pub(super) fn catalog_read_newest<T: DeserializeOwned>(
        &self,
        kind: &str,
        id: &RecordId,
        listed: Option<&str>,
    ) -> Result<Option<CatalogRecord<T>>> {
        Ok(self.catalog_read_newest_from::<T>(kind, id, listed)?.map(|(_, rec)| rec))
    }

    /// The newest revision of an entity, with its name.
    pub(super) fn catalog_read_newest_named<T: DeserializeOwned>(
        &self,
        kind: &str,
        id: &RecordId,
    ) -> Result<Option<(String, CatalogRecord<T>)>> {
        self.catalog_read_newest_from(kind, id, None)
    }

    pub(super) fn catalog_read_newest_from<T: DeserializeOwned>(
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
                    self.remove(old, Removal::CompactedRevision)?;
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
                    self.remove(newest, Removal::CompactedRevision)?;
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

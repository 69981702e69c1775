//! Every deletion of a stored object, in one place.
//!
//! Objects are never changed, only added (docs/FORMAT.md), and deleted
//! for one of the reasons [`Removal`] names. Every delete of the vault crate
//! goes through [`Vault::remove`] or [`Vault::discard_upload`], so a rule
//! about deletes is one check here: a point's manifest is deleted only
//! once nothing holds it (`holds.rs`: soft delete, immutability). Nothing above the vault crate deletes vault objects.

use boveda_store::AbandonedUpload;

use crate::error::{Result, VaultError};
use crate::ids::PointId;

use super::Vault;

/// Why a stored object is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// A catalog revision this process wrote and has since superseded (a
    /// job's earlier heartbeat).
    SupersededRevision,
    /// A catalog revision compacted away: superseded long enough ago, or
    /// the tombstone of an entity deleted long enough ago.
    CompactedRevision,
    /// A recovery point's manifest (expired, or its item's soft-delete
    /// window passed), deleted at the time given: refused while a hold
    /// (`holds.rs`) keeps it then.
    Point { at: jiff::Timestamp },
    /// A key slot: a passphrase no longer opens the vault.
    KeySlot,
    /// A pack prune swept (nothing uses its chunks).
    Pack,
    /// An index object, replaced first by one without what it no longer
    /// lists (merged, swept or lost packs).
    IndexObject,
    /// The prune lease, released by its holder or taken over from a dead one.
    PruneLease,
}

impl Vault {
    /// Deletes the stored object `name` for the reason `why`.
    ///
    /// # Errors
    /// A store error.
    pub(crate) fn remove(&self, name: &str, why: Removal) -> Result<()> {
        if let Removal::Point { at } = why {
            let point = name.strip_prefix("points/").and_then(PointId::from_hex);
            let Some(point) = point else {
                return Err(VaultError::Invalid(format!("{name} is not a point's manifest")));
            };
            // soft delete and immutability (holds.rs)
            if let Some(held) = self.point_held(&point, at)? {
                return Err(VaultError::Invalid(format!("point {} is not deleted: {held}", point.short())));
            }
        }
        // on a vault with Object Lock, the version itself: a plain delete
        // in its versioned bucket would only hide it behind a marker
        let deleted = if self.settings().object_lock.is_some() {
            self.store.delete_version(name)
        } else {
            self.store.delete(name)
        };
        match deleted {
            // the store's own lock (S3 Object Lock) refuses it, whatever
            // boveda's clock says
            Err(e)
                if e.kind() == boveda_store::StoreErrorKind::PermissionDenied
                    && self.settings().object_lock.is_some() =>
            {
                Err(VaultError::Busy(format!(
                    "the store refuses to delete {name}: it is locked in the store (Object Lock) and its lock has not lapsed"
                )))
            }
            other => Ok(other?),
        }
    }

    /// Discards an upload a killed writer left unfinished (never an object).
    ///
    /// # Errors
    /// A store error.
    pub(crate) fn discard_upload(&self, upload: &AbandonedUpload) -> Result<()> {
        self.store.discard_upload(upload)?;
        Ok(())
    }
}

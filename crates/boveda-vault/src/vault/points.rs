//! Recovery points: writing, listing, reading and deleting manifests.

use boveda_store::StoreErrorKind;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Result, VaultError};
use crate::object::{ObjectKind, open_json, seal_json};
use crate::point::{RecoveryPoint, point_name};
use crate::{PointId, RecordId};

use super::{Removal, Vault};

impl Vault {
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
    pub(super) fn read_points(&self, wanted: impl Fn(&str) -> bool + Sync) -> Result<Vec<RecoveryPoint>> {
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

    /// Deletes a point's manifest at `now` (prune and purge only); a point
    /// a hold keeps then (soft delete, an immutable vault) is not deleted.
    ///
    /// # Errors
    /// `Invalid` naming the hold; a store error.
    pub fn delete_point(&self, id: &PointId, now: jiff::Timestamp) -> Result<()> {
        if let Some(held) = self.point_held(id, now)? {
            return Err(crate::error::VaultError::Invalid(held));
        }
        // recorded first: a point named elsewhere (by its backup job) and
        // gone without this record was lost, not pruned (`vault check`)
        let record = DeletedPoint { point: *id, deleted: jiff::Timestamp::now() };
        self.catalog_put(DELETED_POINTS_KIND, &RecordId(id.0), Some(&record))?;
        self.remove(&point_name(id), Removal::Point { at: now })?;
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
}

/// The catalog kind of the records of points deleted on purpose.
pub const DELETED_POINTS_KIND: &str = "deleted-points";

/// A point deleted on purpose: its manifest is gone, and that is no loss.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeletedPoint {
    pub point: PointId,
    pub deleted: jiff::Timestamp,
}

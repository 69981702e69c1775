//! The holds an immutable vault keeps on its points: each point held
//! until the end of its retention as the policy then in force says, and
//! never less (`boveda_vault` refuses to delete a held point and never
//! moves a hold earlier). Written when the vault becomes immutable, after
//! each backup, and at each prune (a point promoted to a weekly or
//! monthly one is held longer); a soft-deleted item's points are held
//! until its window ends, immutable vault or not.

use boveda_vault::{Hold, PointId, RecordId, RecoveryPoint, Vault};
use jiff::Timestamp;

use crate::error::Result;
use crate::items::{Item, list_items};
use crate::policies::list_policies;
use crate::policies::retention::evaluate;

/// Holds every point until its retention ends, when the vault is
/// immutable (at prune, and when it becomes immutable); returns how many
/// points are held.
///
/// # Errors
/// A store error.
pub fn hold_by_retention(vault: &Vault, now: Timestamp) -> Result<usize> {
    hold_where(vault, now, |_, _| true)
}

/// Holds a new point of `item` until its retention ends, when the vault
/// is immutable (after its backup: the item's other points keep their
/// holds, which the next prune extends where retention now keeps longer).
///
/// # Errors
/// A store error.
pub fn hold_new_point(vault: &Vault, item: RecordId, point: PointId, now: Timestamp) -> Result<usize> {
    hold_where(vault, now, |i, p| i == item && p == point)
}

fn hold_where(vault: &Vault, now: Timestamp, wanted: impl Fn(RecordId, PointId) -> bool) -> Result<usize> {
    if vault.settings().immutability.is_disabled() {
        return Ok(0);
    }
    let policies = list_policies(vault)?;
    let points = vault.list_points()?;
    let mut held = 0;
    for item in list_items(vault)?.iter().filter(|i| points.iter().any(|p| wanted(i.id, p.id))) {
        let mine: Vec<&RecoveryPoint> = points.iter().filter(|p| p.item_id == item.id).collect();
        let policy = policies.iter().find(|p| Some(p.id) == item.protection.policy);
        for e in evaluate(item, policy, &mine, now) {
            if let Some(until) = e.expires.filter(|t| *t > now && wanted(item.id, e.point)) {
                vault.hold_point(&e.point, Hold::Retention, until)?;
                held += 1;
            }
        }
    }
    Ok(held)
}

/// Holds every point of `item` until `until` (its soft-delete window).
///
/// # Errors
/// A store error.
pub fn hold_soft_deleted(vault: &Vault, item: &Item, until: Timestamp) -> Result<()> {
    for point in vault.list_item_points(&item.id)? {
        vault.hold_point(&point.id, Hold::SoftDelete, until)?;
    }
    Ok(())
}

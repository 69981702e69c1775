//! Object Lock dates from retention (`boveda_vault` `vault/locks.rs`): a
//! new point's packs and manifest are locked until the point expires plus
//! the vault's margin; at each prune, every pack and manifest still needed
//! is extended to cover the latest expiry of the points that use it, and
//! kept a margin ahead where no end is known. Garbage is left to lapse.

use std::collections::HashMap;

use boveda_vault::{LockReport, PointId, RecordId, RecoveryPoint, Vault};
use jiff::{SignedDuration, Timestamp};

use crate::error::Result;
use crate::items::list_items;
use crate::policies::list_policies;
use crate::policies::retention::evaluate;

/// The expiry of every point of the vault by retention at `now` (`None`:
/// none known, such as a point of an item whose protection stopped with
/// its data kept).
///
/// # Errors
/// A store error.
pub fn expiries(vault: &Vault, now: Timestamp) -> Result<Vec<(RecoveryPoint, Option<Timestamp>)>> {
    let policies = list_policies(vault)?;
    let points = vault.list_points()?;
    let mut out = Vec::new();
    for item in list_items(vault)? {
        let mine: Vec<&RecoveryPoint> = points.iter().filter(|p| p.item_id == item.id).collect();
        let policy = policies.iter().find(|p| Some(p.id) == item.protection.policy);
        for (p, e) in mine.iter().zip(evaluate(&item, policy, &mine, now)) {
            out.push(((*p).clone(), e.expires));
        }
    }
    Ok(out)
}

/// Locks what a backup of `item` just wrote (its point `point`), until the
/// point's expiry plus the margin (a year ahead when it has none yet);
/// nothing on a vault without Object Lock.
///
/// # Errors
/// A store error (the store refusing the lock).
pub fn lock_new_point(vault: &Vault, item: RecordId, point: PointId, now: Timestamp) -> Result<usize> {
    let Some(lock) = vault.settings().object_lock.clone() else { return Ok(0) };
    let expiry = expiries(vault, now)?
        .into_iter()
        .find(|(p, _)| p.id == point && p.item_id == item)
        .and_then(|(_, e)| e)
        .filter(|e| *e > now)
        .unwrap_or(now + SignedDuration::from_hours(24 * 365));
    // never earlier than what the bucket's default retention already set
    // (a compliance lock cannot be shortened)
    let until = (expiry + lock.margin()).max(now + lock.margin() + SignedDuration::from_hours(1));
    Ok(vault.lock_new_objects(until)?)
}

/// Extends the locks of every pack and manifest the vault's points still
/// need (a prune's last step).
///
/// # Errors
/// A store error; a damaged tree.
pub fn extend_locks(vault: &Vault, now: Timestamp) -> Result<LockReport> {
    if vault.settings().object_lock.is_none() {
        return Ok(LockReport::default());
    }
    let points = expiries(vault, now)?;
    let needed: HashMap<String, Option<Timestamp>> = boveda_vault::needed_until(vault, &points)?;
    Ok(vault.extend_locks(now, &needed)?)
}

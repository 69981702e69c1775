//! Listing, browsing and restoring recovery points.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use boveda_engine::{
    DiskOutputFormat, RestoreOptions, RestoreOutcome, RestoreProgress, list_point_path, restore_files,
};
use boveda_vault::{Node, RecoveryPoint, Vault};

use crate::error::{Result, ServiceError};
use crate::item::Item;

/// An item's points, oldest first.
///
/// # Errors
/// A store error or a damaged manifest.
pub fn list_item_points(vault: &Vault, item: &Item) -> Result<Vec<RecoveryPoint>> {
    Ok(vault.list_points()?.into_iter().filter(|p| p.item_id == item.id).collect())
}

/// Resolves `latest` or a point id prefix (at least 4 hex digits).
///
/// # Errors
/// `NotFound` or `Invalid` (ambiguous prefix).
pub fn find_point(vault: &Vault, item: &Item, selector: &str) -> Result<RecoveryPoint> {
    let points = list_item_points(vault, item)?;
    if selector == "latest" {
        return points
            .into_iter()
            .next_back()
            .ok_or_else(|| ServiceError::NotFound(format!("item {} has no recovery point yet", item.name)));
    }
    let sel = selector.to_ascii_lowercase();
    let found: Vec<_> = points.into_iter().filter(|p| sel.len() >= 4 && p.id.to_hex().starts_with(&sel)).collect();
    match found.len() {
        1 => Ok(found.into_iter().next().ok_or_else(|| ServiceError::NotFound(selector.into()))?),
        0 => Err(ServiceError::NotFound(format!("item {} has no recovery point {selector:?}", item.name))),
        _ => Err(ServiceError::Invalid(format!("recovery point prefix {selector:?} is ambiguous; give more digits"))),
    }
}

/// Entries at `path` inside a point.
///
/// # Errors
/// `NotFound` when the path is not in the point.
pub fn browse(vault: &Vault, point: &RecoveryPoint, path: &str) -> Result<Vec<Node>> {
    let index = vault.load_index()?;
    Ok(list_point_path(vault, &index, &point.tree, path)?)
}

/// Restores the disk of a disk point to an image file or block device.
///
/// # Errors
/// `Invalid` for a point that holds no disk; target and qemu-img errors.
pub fn restore_disk_image(
    vault: &Vault,
    point: &RecoveryPoint,
    target: PathBuf,
    format: DiskOutputFormat,
    cancel: Option<&AtomicBool>,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    let index = vault.load_index()?;
    Ok(boveda_engine::restore_disk(vault, &index, &point.tree, &target, format, cancel, progress)?)
}

/// Restores a point (or chosen paths of it) into `target`.
///
/// # Errors
/// An unusable target, a path not in the point, a damaged tree.
pub fn restore(
    vault: &Vault,
    point: &RecoveryPoint,
    target: PathBuf,
    paths: Vec<String>,
    cancel: Option<&AtomicBool>,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    let index = vault.load_index()?;
    let opts = RestoreOptions { target, paths, cancel };
    Ok(restore_files(vault, &index, &point.tree, &opts, progress)?)
}

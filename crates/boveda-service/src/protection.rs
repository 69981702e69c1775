//! Taking recovery points.

use std::sync::atomic::AtomicBool;

use boveda_engine::{BackupProgress, DiskBackupOptions, FileBackupOptions, backup_disk, backup_files};
use boveda_vault::{Consistency, PointId, RecoveryPoint, Vault};
use jiff::{SignedDuration, Timestamp};

use crate::error::{Result, ServiceError};
use crate::item::{Item, ItemSource};

/// How long an ad-hoc point is kept when no date is given.
pub const DEFAULT_AD_HOC_RETENTION_DAYS: i64 = 30;

pub struct BackupRequest<'a> {
    pub retain_until: Option<Timestamp>,
    pub now: Timestamp,
    pub cancel: Option<&'a AtomicBool>,
    pub hostname: String,
}

/// Takes an ad-hoc recovery point of an item ("backup now").
///
/// The parent is the item's newest point, so unchanged files are not read.
///
/// # Errors
/// `Invalid` for a retain-until date in the past; engine and vault errors
/// (missing source, full store, cancellation). On error no point is
/// written and the vault stays valid.
pub fn backup_now(
    vault: &Vault,
    item: &Item,
    req: &BackupRequest<'_>,
    progress: &dyn BackupProgress,
) -> Result<RecoveryPoint> {
    let retain_until = match req.retain_until {
        Some(t) if t <= req.now => {
            return Err(ServiceError::Invalid(format!("retain-until date {t} is not in the future")));
        }
        Some(t) => t,
        None => req.now + SignedDuration::from_hours(24 * DEFAULT_AD_HOC_RETENTION_DAYS),
    };
    let index = vault.load_index()?;
    let parent = vault.list_points()?.into_iter().rfind(|p| p.item_id == item.id);
    let parent_tree = parent.as_ref().map(|p| p.tree);
    let (outcome, sources) = match &item.source {
        ItemSource::Files { paths, excludes } => {
            let opts =
                FileBackupOptions { paths: paths.clone(), excludes: excludes.clone(), parent_tree, cancel: req.cancel };
            (backup_files(vault, &index, &opts, progress)?, paths.clone())
        }
        ItemSource::Disk { path } => {
            let opts = DiskBackupOptions { path: path.clone(), parent_tree, cancel: req.cancel };
            (backup_disk(vault, &index, &opts, progress)?, vec![path.clone()])
        }
    };
    let point = RecoveryPoint {
        id: PointId::random(),
        item_id: item.id,
        item_name: item.name.clone(),
        started: req.now,
        time: Timestamp::now().max(req.now),
        tree: outcome.tree,
        parent: parent.map(|p| p.id),
        hostname: req.hostname.clone(),
        sources: sources.iter().map(|p| p.display().to_string()).collect(),
        consistency: Consistency::CrashConsistent,
        retain_until: Some(retain_until),
        kept_by: "ad-hoc".into(),
        stats: outcome.stats,
        warnings: outcome.warnings,
    };
    vault.save_point(&point)?;
    Ok(point)
}

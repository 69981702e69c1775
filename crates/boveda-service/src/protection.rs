//! Taking recovery points.

use std::sync::atomic::AtomicBool;

use boveda_engine::{
    BackupProgress, DISK_NODE, DiskBackupOptions, Domain, FileBackupOptions, backup_disk, backup_files,
};
use std::path::PathBuf;

use boveda_engine::FileBackupOutcome;
use boveda_vault::{PointId, RecoveryPoint, Vault};

use crate::consistency::with_consistency;
use jiff::{SignedDuration, Timestamp};

use crate::error::{Result, ServiceError};
use crate::item::{Item, ItemSource, domain_disks};

/// The name of a VM's definition inside its points.
pub const VM_DEFINITION: &str = "domain.xml";

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
    let run = || -> Result<(FileBackupOutcome, Vec<PathBuf>)> {
        Ok(match &item.source {
            ItemSource::Files { paths, excludes } => {
                let opts = FileBackupOptions {
                    paths: paths.clone(),
                    excludes: excludes.clone(),
                    parent_tree,
                    cancel: req.cancel,
                };
                (backup_files(vault, &index, &opts, progress)?, paths.clone())
            }
            ItemSource::Disk { path } => {
                let opts = DiskBackupOptions {
                    disks: vec![(DISK_NODE.to_string(), path.clone())],
                    extra_files: vec![],
                    parent_tree,
                    cancel: req.cancel,
                };
                (backup_disk(vault, &index, &opts, progress)?, vec![path.clone()])
            }
            ItemSource::Vm { domain_xml, .. } => {
                // the definition as it is now: disks may have been added or moved
                let domain = Domain::load(domain_xml)?;
                let disks = domain_disks(&domain, domain_xml)?;
                let sources = disks.iter().map(|(_, p)| p.clone()).chain([domain_xml.clone()]).collect();
                let opts = DiskBackupOptions {
                    disks,
                    extra_files: vec![(VM_DEFINITION.to_string(), domain.xml().as_bytes().to_vec())],
                    parent_tree,
                    cancel: req.cancel,
                };
                (backup_disk(vault, &index, &opts, progress)?, sources)
            }
        })
    };
    // scripts apply to disks and VMs; a file backup reads files, not a disk snapshot
    let cfg = match item.source {
        ItemSource::Files { .. } => None,
        _ => item.consistency.as_ref(),
    };
    let ((mut outcome, sources), consistency, script_warnings) = with_consistency(cfg, run)?;
    outcome.warnings.extend(script_warnings);
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
        consistency,
        retain_until: Some(retain_until),
        kept_by: "ad-hoc".into(),
        stats: outcome.stats,
        warnings: outcome.warnings,
    };
    vault.save_point(&point)?;
    Ok(point)
}

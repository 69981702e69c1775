//! The backup job of an item: a backup now, or, for an item whose first
//! backup travels on drives, the offline seed into its staging folder or
//! a job that says it waits for its import. Above both `protection` (the
//! backup itself) and `offline` (import jobs and the staging journal).

use std::sync::Arc;

use boveda_engine::BackupProgress;
use boveda_store::{LocalStore, RoutedStore, Store};
use boveda_vault::{RecoveryPoint, Vault, VaultError};
use jiff::Timestamp;

use crate::error::{Result, ServiceError};
use crate::items::Item;
use crate::offline::{
    ImportJob, ImportState, SEED_FOLDERS, STAGING_JOURNAL, StagedObject, StagingJournal, find_import_job,
    item_import_job, update_import_job,
};
use crate::protection::{BackupRequest, backup_now, check_can_back_up};
use crate::runtime::job::{Job, JobDone, JobEnv, Observers, Operation, run_job};

/// Takes a recovery point as a `Backup` job: ad-hoc ("backup now", kept
/// until `retain_until`) or for a policy slot.
///
/// # Errors
/// `Invalid` before any job is recorded for a retain-until time not in the
/// future or an item that cannot be backed up; a store error recording the
/// job; the backup's own error is in the second value (and the job is
/// `Failed` or `Cancelled`).
pub fn backup_job(
    vault: &Vault,
    env: &JobEnv<'_>,
    item: &Item,
    retain_until: Option<Timestamp>,
    scheduled_for: Option<Timestamp>,
    progress: &dyn BackupProgress,
) -> Result<(Job, Result<RecoveryPoint>)> {
    // what can be refused at once is refused before a job is recorded
    check_can_back_up(item)?;
    if item.host.is_some() {
        return Err(ServiceError::Conflict(format!(
            "item {} is on a registered host: its backups run there (`boveda host backup {}` on that host)",
            item.name, item.name
        )));
    }
    if let Some(t) = retain_until {
        crate::model::time_input::check_retain_until(t, env.clock.now())?;
    }
    // an item seeded offline: its first backup goes to the staging folder,
    // and later ones wait until the import job completed
    if let Some(import) = item_import_job(vault, item)? {
        return if import.state == ImportState::SeedPending {
            seed_backup(vault, env, item, &import.name, retain_until, scheduled_for, progress)
        } else {
            waiting_backup(vault, env, item, &import, scheduled_for)
        };
    }
    let spec = env.spec(Operation::Backup, item, scheduled_for);
    let observers = Observers { backup: Some(progress), restore: None };
    run_job(vault, env.clock, &spec, observers, |ctx| {
        ctx.set_phase("backing up");
        expect_like_last(vault, item, ctx);
        let req = request(env, &ctx.cancel, retain_until, scheduled_for);
        let point = backup_now(vault, item, &req, ctx)?;
        ctx.finished_backup(&point.stats);
        let mut details: Vec<String> =
            point.freeze_ms.map(|ms| format!("the guest's file systems were frozen for {ms} ms")).into_iter().collect();
        if let Some(why) = crate::protection::suspicion::judge(vault, item, &point, env.clock.now())? {
            details.push(format!("{}{why}", crate::protection::suspicion::SUSPICIOUS));
        }
        let done = JobDone { warnings: point.warnings.clone(), details, point: Some(point.id) };
        Ok((point, done))
    })
}

/// A backup's totals until it knows its own: those of the item's
/// previous point (none before the first; a listing that fails is no
/// reason to stop a backup).
fn expect_like_last(vault: &Vault, item: &Item, ctx: &crate::runtime::job::JobCtx<'_>) {
    if let Ok(mut points) = vault.list_item_points(&item.id)
        && let Some(last) = points.pop()
    {
        ctx.estimate(last.stats.files, last.stats.bytes);
    }
}

/// The item's offline seed: its first full backup, written to the staging
/// folder as an `OfflineSeed` job, then journaled.
///
/// # Errors
/// A store error writing the job's first record.
pub fn seed_backup(
    vault: &Vault,
    env: &JobEnv<'_>,
    item: &Item,
    job_name: &str,
    retain_until: Option<Timestamp>,
    scheduled_for: Option<Timestamp>,
    progress: &dyn BackupProgress,
) -> Result<(Job, Result<RecoveryPoint>)> {
    let import = find_import_job(&**vault.store(), job_name)?;
    let dir = import.staging_dir();
    let spec = env.spec(Operation::OfflineSeed, item, scheduled_for);
    let observers = Observers { backup: Some(progress), restore: None };
    run_job(vault, env.clock, &spec, observers, |ctx| {
        ctx.set_phase("backing up to the staging folder");
        std::fs::create_dir_all(&dir)
            .map_err(|e| ServiceError::Invalid(format!("staging folder {}: {e}", dir.display())))?;
        // a seed killed midway left objects of no point: start again clean
        for folder in SEED_FOLDERS {
            let _ = std::fs::remove_dir_all(dir.join(folder));
        }
        let faults = boveda_store::faults_from_env().map_err(VaultError::from)?;
        let staging: Arc<dyn Store> =
            boveda_store::layer(Arc::new(LocalStore::new(dir.clone())), boveda_store::RetryPolicy::default(), faults);
        let routed: Arc<dyn Store> = Arc::new(RoutedStore::new(vault.store().clone(), staging.clone(), &SEED_FOLDERS));
        let seeding = vault.with_store(routed);
        let req = request(env, &ctx.cancel, retain_until, scheduled_for);
        let point = backup_now(&seeding, item, &req, ctx)?;
        ctx.finished_backup(&point.stats);
        ctx.set_phase("journaling the staged objects");
        let mut objects = Vec::new();
        for folder in SEED_FOLDERS {
            for o in staging.list(folder).map_err(VaultError::from)? {
                let bytes = staging.get(&o.name).map_err(VaultError::from)?;
                objects.push(StagedObject {
                    name: o.name,
                    size: bytes.len() as u64,
                    blake3: blake3::hash(&bytes).to_hex().to_string(),
                });
            }
        }
        let journal = StagingJournal {
            vault_id: vault.config().id.to_hex(),
            import_job: import.name.clone(),
            import_job_id: import.id,
            point: point.id.to_hex(),
            objects,
        };
        let body = serde_json::to_vec_pretty(&journal).map_err(|e| ServiceError::Internal(e.to_string()))?;
        boveda_engine::drive_files::write_atomically(&dir.join(STAGING_JOURNAL), &body)?;
        let (count, bytes) = (journal.objects.len() as u64, journal.objects.iter().map(|o| o.size).sum::<u64>());
        let now = env.clock.now();
        update_import_job(&**vault.store(), &import.name, |j| {
            j.state = ImportState::Staged;
            j.point = Some(point.id.to_hex());
            j.objects = count;
            j.bytes = bytes;
            j.note(now, format!("seed staged: point {}, {count} objects, {bytes} bytes", point.id.short()));
            Ok(())
        })?;
        let done = JobDone {
            warnings: point.warnings.clone(),
            details: vec![format!(
                "offline seed of import job {} staged in {}: {count} objects, {bytes} bytes; nothing was sent to the store",
                import.name,
                dir.display()
            )],
            point: Some(point.id),
        };
        Ok((point, done))
    })
}

/// A backup of an item that waits for its import job: a job that says so
/// and uploads nothing.
///
/// # Errors
/// A store error writing the job.
pub fn waiting_backup(
    vault: &Vault,
    env: &JobEnv<'_>,
    item: &Item,
    import: &ImportJob,
    scheduled_for: Option<Timestamp>,
) -> Result<(Job, Result<RecoveryPoint>)> {
    let spec = env.spec(Operation::Backup, item, scheduled_for);
    let reason = format!(
        "item {} waits for import job {} to complete ({}): its first backup travels on drives, so nothing was uploaded",
        item.name,
        import.name,
        import.state.as_str()
    );
    let (job, _) = run_job(vault, env.clock, &spec, Observers::default(), |_| {
        Ok(((), JobDone { details: vec![reason.clone()], ..JobDone::default() }))
    })?;
    Ok((job, Err(ServiceError::Conflict(reason))))
}

/// The backup a job of `env` asks for, stopped by `cancel`.
fn request<'c>(
    env: &JobEnv<'_>,
    cancel: &'c std::sync::atomic::AtomicBool,
    retain_until: Option<Timestamp>,
    scheduled_for: Option<Timestamp>,
) -> BackupRequest<'c> {
    BackupRequest {
        retain_until,
        now: env.clock.now(),
        cancel: Some(cancel),
        hostname: env.hostname.clone(),
        scheduled_for,
    }
}

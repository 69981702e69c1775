//! Protection: taking recovery points, and the life of an item's
//! protection (enable, stop, delete data, undelete, resume), each a job.

pub(crate) mod backups;
pub mod suspicion;

use std::sync::atomic::AtomicBool;

use boveda_engine::{
    BackupProgress, DISK_NODE, DiskBackupOptions, DiskSource, Domain, FileBackupOptions, backup_disk, backup_files,
};
use std::path::PathBuf;

use boveda_engine::FileBackupOutcome;
use boveda_vault::{RecoveryPoint, Vault};

use crate::items::consistency::with_consistency;
use jiff::{SignedDuration, Timestamp};

use crate::error::{Remedy, Result, ServiceError, ServiceErrorKind};
use crate::items::{Item, ItemSource, Protection, ProtectionState, domain_disks, update_item};
use crate::model::policy::Policy;
use crate::policies::{find_policy, list_policies};
use crate::runtime::job::{JobDone, JobEnv, Observers, Operation, run_job};

/// The name of a VM's definition inside its points.
pub const VM_DEFINITION: &str = "domain.xml";

/// The name of a UEFI VM's variables (its NVRAM: boot entries, boot order)
/// inside its points.
pub const VM_NVRAM: &str = "nvram.fd";

/// What a VM's points hold beside its disks.
pub const VM_FILES: [&str; 2] = [VM_DEFINITION, VM_NVRAM];

/// The files a VM's point holds beside its disks: its definition, and a
/// UEFI VM's variables when the definition names a file that holds a
/// variable store; warnings for variables named and not kept (a restore
/// or verification of the point starts with fresh ones).
pub(crate) fn vm_files(domain: &Domain) -> (Vec<(String, Vec<u8>)>, Vec<String>) {
    let mut files = vec![(VM_DEFINITION.to_string(), domain.xml().as_bytes().to_vec())];
    let mut warnings = Vec::new();
    if let Some(path) = &domain.nvram_file {
        match read_firmware_vars(path) {
            Ok(bytes) => files.push((VM_NVRAM.to_string(), bytes)),
            Err(why) => warnings.push(format!(
                "the VM's UEFI variables {} are not kept ({why}): a restore or verification of this point starts \
                 with fresh ones",
                path.display()
            )),
        }
    }
    (files, warnings)
}

/// A UEFI variable store's bytes: a regular file (never waited on, never
/// through a link) of at most [`boveda_engine::MAX_FIRMWARE_VARS`] that is
/// one.
fn read_firmware_vars(path: &std::path::Path) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // what the path names, before it is opened: opening a device can do
    // something (a watchdog starts counting)
    let named = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !named.is_file() {
        return Err("not a regular file".into());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32 | rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.take(boveda_engine::MAX_FIRMWARE_VARS + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    if !boveda_engine::is_firmware_vars(&bytes) {
        return Err("not a UEFI variable store".into());
    }
    Ok(bytes)
}

/// How long an ad-hoc point is kept when no date is given.
pub const DEFAULT_AD_HOC_RETENTION_DAYS: i64 = 30;

pub struct BackupRequest<'a> {
    pub retain_until: Option<Timestamp>,
    pub now: Timestamp,
    pub cancel: Option<&'a AtomicBool>,
    pub hostname: String,
    /// The policy slot of a scheduled backup; `None` for "backup now".
    pub scheduled_for: Option<Timestamp>,
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
    check_can_back_up(item)?;
    let retain_until = point_retention(req.retain_until, req.scheduled_for, req.now)?;
    // the parent first: a point is saved after its index objects, so the
    // index read next holds the parent's trees even when another backup of
    // the item saved it a moment ago (docs/FORMAT.md)
    let parent = vault.list_item_points(&item.id)?.pop();
    // packs marked for deletion are not deduplicated against (docs/FORMAT.md)
    let index = vault.load_index_without(&boveda_vault::marked_packs(vault)?)?;
    let clock_start = std::time::Instant::now();
    let parent_tree = parent.as_ref().map(|p| p.tree);
    let live_state = std::sync::Mutex::new(None::<crate::items::live_vm::LiveOutcome>);
    // a VM that runs (a monitor listens, or libvirt runs it), and its
    // definition as it is now
    let running_vm = match &item.source {
        ItemSource::Vm { domain_xml, qmp, guest_agent, .. } => {
            let domain = Domain::load(domain_xml)?;
            crate::items::live_vm::find_running(qmp.as_deref(), guest_agent.as_deref(), &domain).map(|vm| (vm, domain))
        }
        _ => None,
    };
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
                    disks: vec![(DISK_NODE.to_string(), DiskSource::Image(path.clone()))],
                    extra_files: vec![],
                    parent_tree,
                    cancel: req.cancel,
                };
                (backup_disk(vault, &index, &opts, progress)?, vec![path.clone()])
            }
            ItemSource::Vm { domain_xml, .. } if let Some((vm, domain)) = &running_vm => {
                let previous = parent.as_ref().and_then(|p| p.live_bitmap.as_deref());
                let live = LiveRun { vm, domain, domain_xml, previous, parent_tree };
                let (outcome, sources, state) = live.backup(vault, &index, item, req, progress)?;
                *live_state.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(state);
                (outcome, sources)
            }
            ItemSource::Vm { domain_xml, .. } => {
                // the definition as it is now: disks may have been added or moved
                let domain = Domain::load(domain_xml)?;
                let disks = domain_disks(&domain, domain_xml)?;
                let sources = disks.iter().map(|(_, p)| p.clone()).chain([domain_xml.clone()]).collect();
                let (extra_files, warnings) = vm_files(&domain);
                let opts = DiskBackupOptions {
                    disks: disks.into_iter().map(|(name, path)| (name, DiskSource::Image(path))).collect(),
                    extra_files,
                    parent_tree,
                    cancel: req.cancel,
                };
                let mut outcome = backup_disk(vault, &index, &opts, progress)?;
                outcome.warnings.extend(warnings);
                (outcome, sources)
            }
        })
    };
    // scripts apply to disks and VMs; a file backup reads files, not a
    // disk snapshot, and a running VM's snapshot runs them itself
    let cfg = match item.source {
        ItemSource::Files { .. } => None,
        _ if running_vm.is_some() => None,
        _ => item.consistency.as_ref(),
    };
    let ((mut outcome, sources), consistency, script_warnings) = with_consistency(cfg, run)?;
    outcome.warnings.extend(script_warnings);
    let live = live_state.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let point = RecoveryPoint {
        id: vault.new_point_id(&item.id),
        item_id: item.id,
        item_name: item.name.clone(),
        started: req.now,
        time: req.now + SignedDuration::try_from(clock_start.elapsed()).unwrap_or_default(),
        tree: outcome.tree,
        parent: parent.map(|p| p.id),
        hostname: req.hostname.clone(),
        sources: sources.iter().map(|p| p.display().to_string()).collect(),
        consistency: live.as_ref().map_or(consistency, |l| l.consistency),
        retain_until,
        scheduled_for: req.scheduled_for,
        kept_by: if req.scheduled_for.is_some() { "scheduled" } else { "ad-hoc" }.into(),
        stats: outcome.stats,
        warnings: outcome.warnings,
        live_bitmap: live.as_ref().map(|l| l.bitmap.clone()),
        freeze_ms: live.as_ref().and_then(|l| l.freeze_ms),
    };
    vault.save_point(&point)?;
    crate::policies::holds::hold_new_point(vault, item.id, point.id, req.now)?;
    crate::policies::locks::lock_new_point(vault, item.id, point.id, req.now)?;
    Ok(point)
}

/// Until when a new point is kept: the date asked for (checked to be in
/// the future), none for a scheduled point (its policy keeps it), or
/// [`DEFAULT_AD_HOC_RETENTION_DAYS`] for an ad-hoc one.
///
/// # Errors
/// `Invalid` for a date not in the future.
pub(crate) fn point_retention(
    retain_until: Option<Timestamp>,
    scheduled_for: Option<Timestamp>,
    now: Timestamp,
) -> Result<Option<Timestamp>> {
    Ok(match (retain_until, scheduled_for) {
        (Some(t), _) => {
            crate::model::time_input::check_retain_until(t, now)?;
            Some(t)
        }
        (None, Some(_)) => None,
        (None, None) => Some(now + SignedDuration::from_hours(24 * DEFAULT_AD_HOC_RETENTION_DAYS)),
    })
}

/// The backup of a running VM: a snapshot of all its disks at one instant,
/// the guest quiesced for that instant only.
struct LiveRun<'a> {
    vm: &'a crate::items::live_vm::RunningVm,
    domain: &'a Domain,
    domain_xml: &'a PathBuf,
    /// The parent point's dirty bitmap, for an incremental read.
    previous: Option<&'a str>,
    parent_tree: Option<boveda_vault::ChunkId>,
}

impl LiveRun<'_> {
    fn backup(
        &self,
        vault: &Vault,
        index: &boveda_vault::ChunkIndex,
        item: &Item,
        req: &BackupRequest<'_>,
        progress: &dyn BackupProgress,
    ) -> Result<(FileBackupOutcome, Vec<PathBuf>, crate::items::live_vm::LiveOutcome)> {
        let (vm, domain) = (self.vm, self.domain);
        let quiesced = crate::items::live_vm::start_quiesced(vm, domain, self.previous, item.consistency.as_ref())?;
        let sources = domain.disks.iter().map(|d| d.path.clone()).chain([self.domain_xml.clone()]).collect();
        let (files, warnings) = vm_files(domain);
        let (mut outcome, state) =
            crate::items::live_vm::back_up_snapshot(quiesced, files, self.parent_tree, req.cancel, |opts| {
                backup_disk(vault, index, opts, progress)
            })?;
        outcome.warnings.extend(warnings);
        Ok((outcome, sources, state))
    }
}

pub(crate) fn check_can_back_up(item: &Item) -> Result<()> {
    match item.protection.state {
        ProtectionState::NotProtected | ProtectionState::Protected => Ok(()),
        ProtectionState::Stopped => Err(ServiceError::refused(
            ServiceErrorKind::Conflict,
            format!("protection of item {} is stopped", item.name),
            Remedy::ResumeProtection { item: item.name.clone(), policy: None },
        )),
        ProtectionState::SoftDeleted => Err(ServiceError::refused(
            ServiceErrorKind::Conflict,
            format!("the backup data of item {} is soft deleted", item.name),
            Remedy::Undelete { item: item.name.clone() },
        )),
    }
}

fn simple_job(
    vault: &Vault,
    env: &JobEnv<'_>,
    operation: Operation,
    item: &Item,
    detail: String,
    change: impl Fn(&mut Item) + Sync,
) -> Result<Item> {
    let (_, updated) = run_job(vault, env.clock, &env.spec(operation, item, None), Observers::default(), |_| {
        let updated = update_item(vault, &item.id, &change)?;
        Ok((updated, JobDone { details: vec![detail], ..JobDone::default() }))
    })?;
    updated
}

/// `protection enable`: protects an item with a policy (a
/// `ConfigureBackup` job). Its first backup runs at the policy's next slot.
///
/// # Errors
/// `Conflict` when the item is already protected, stopped or soft deleted;
/// `NotFound` for the policy.
pub fn enable_protection(vault: &Vault, env: &JobEnv<'_>, item: &Item, policy: &str) -> Result<Item> {
    let policy = find_policy(vault, policy)?;
    match item.protection.state {
        ProtectionState::NotProtected => {}
        ProtectionState::Protected => {
            let current = list_policies(vault)?
                .into_iter()
                .find(|p| Some(p.id) == item.protection.policy)
                .map(|p| p.name)
                .unwrap_or_else(|| "a deleted policy".into());
            return Err(ServiceError::Conflict(format!(
                "item {} is already protected by policy {current}; an item is protected by one policy at a time",
                item.name
            )));
        }
        ProtectionState::Stopped => {
            return Err(ServiceError::refused(
                ServiceErrorKind::Conflict,
                format!("protection of item {} is stopped", item.name),
                Remedy::ResumeProtection { item: item.name.clone(), policy: Some(policy.name.clone()) },
            ));
        }
        ProtectionState::SoftDeleted => check_can_back_up(item)?,
    }
    protect(vault, env, item, &policy, format!("protected with policy {}", policy.name))
}

/// The `ConfigureBackup` job of enable and resume: from now on the
/// policy's slots apply.
fn protect(vault: &Vault, env: &JobEnv<'_>, item: &Item, policy: &Policy, detail: String) -> Result<Item> {
    let now = env.clock.now();
    simple_job(vault, env, Operation::ConfigureBackup, item, detail, |i| {
        i.protection = Protection {
            state: ProtectionState::Protected,
            policy: Some(policy.id),
            since: Some(now),
            ..Protection::default()
        };
    })
}

/// `protection change-policy`: a protected item takes another policy (a
/// `ConfigureBackup` job); its points fall under the new retention at
/// once. A change that makes any point expire sooner is refused by an
/// immutable vault and needs the guard's approval on a guarded one, as a
/// policy's own shortened retention does.
///
/// # Errors
/// `Conflict` unless the item is protected, or for the policy it has, or
/// (immutable vault) for a shorter retention; `NeedsApproval` for the
/// guard; `NotFound` for the policy.
pub fn change_item_policy(vault: &Vault, env: &JobEnv<'_>, item: &Item, policy: &str) -> Result<Item> {
    let new = find_policy(vault, policy)?;
    if item.protection.state != ProtectionState::Protected {
        return Err(ServiceError::Conflict(format!(
            "item {} is not protected ({}): protect or resume it with a policy",
            item.name,
            item.protection.state.as_str()
        )));
    }
    let policies = list_policies(vault)?;
    let old = policies.iter().find(|p| Some(p.id) == item.protection.policy);
    if old.is_some_and(|p| p.id == new.id) {
        return Err(ServiceError::Conflict(format!("item {} is protected by policy {} already", item.name, new.name)));
    }
    refuse_sooner_expiry(vault, env, item, old, &new)?;
    let detail = format!("policy changed from {} to {}", old.map_or("-", |p| p.name.as_str()), new.name);
    let id = new.id;
    simple_job(vault, env, Operation::ConfigureBackup, item, detail, move |i| i.protection.policy = Some(id))
}

/// Refuses (immutable vault) or asks the guard about (guarded vault) a
/// policy that would make any of `item`'s points expire sooner than under
/// `old`, the policy it is protected by (or was, when stopped).
///
/// # Errors
/// `Conflict` on an immutable vault; `NeedsApproval` for the guard.
fn refuse_sooner_expiry(
    vault: &Vault,
    env: &JobEnv<'_>,
    item: &Item,
    old: Option<&Policy>,
    new: &Policy,
) -> Result<()> {
    // judged as protected: a stopped item's points never expire, and
    // resuming it must not shorten what its old policy kept
    let mut protected = item.clone();
    protected.protection.state = ProtectionState::Protected;
    let points = vault.list_item_points(&item.id)?;
    let refs: Vec<&RecoveryPoint> = points.iter().collect();
    let now = env.clock.now();
    let before = crate::policies::retention::evaluate(&protected, old, &refs, now);
    let after = crate::policies::retention::evaluate(&protected, Some(new), &refs, now);
    let sooner: Vec<String> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| match (b.expires, a.expires) {
            (Some(b), Some(a)) => a < b,
            (None, Some(_)) => true,
            _ => false,
        })
        .map(|(_, a)| a.point.short())
        .collect();
    if sooner.is_empty() {
        return Ok(());
    }
    let old_name = old.map_or("-", |p| p.name.as_str());
    if !vault.settings().immutability.is_disabled() {
        return Err(ServiceError::Conflict(format!(
            "item {} keeps policy {old_name}: the vault is immutable and policy {} would make {} point(s) expire sooner ({})",
            item.name,
            new.name,
            sooner.len(),
            sooner.join(", ")
        )));
    }
    let op = boveda_vault::GuardedOp::new(
        "reduce retention",
        format!("item {}", item.name),
        format!("policy {old_name} to {}", new.name),
    );
    crate::guard::authorize(vault, &op, &env.by, env.clock)
}

/// `protection resume`: protects a stopped item again (a
/// `ConfigureBackup` job); its points fall under the policy's retention.
///
/// # Errors
/// `Conflict` unless protection is stopped; `NotFound` for the policy.
pub fn resume_protection(vault: &Vault, env: &JobEnv<'_>, item: &Item, policy: &str) -> Result<Item> {
    let policy = find_policy(vault, policy)?;
    if item.protection.state != ProtectionState::Stopped {
        check_can_back_up(item)?;
        return Err(ServiceError::Conflict(format!(
            "item {} is {}: resume applies to stopped protection (use `protection enable`)",
            item.name,
            item.protection.state.as_str()
        )));
    }
    // resumed with a shorter policy than the one it was stopped under: as a
    // change of policy (stopping and resuming must not get round the guard)
    let old = list_policies(vault)?.into_iter().find(|p| Some(p.id) == item.protection.policy);
    if old.as_ref().is_none_or(|o| o.id != policy.id) {
        refuse_sooner_expiry(vault, env, item, old.as_ref(), &policy)?;
    }
    protect(vault, env, item, &policy, format!("protection resumed with policy {}", policy.name))
}

/// `protection disable`: stops backups and keeps every point
/// (`DisableBackup`), or with `delete_data` soft-deletes the backup data
/// (`DeleteBackupData`, which raises an alert): the points stay
/// recoverable with `protection undelete` for the vault's soft-delete days.
///
/// # Errors
/// `Conflict` when there is nothing to stop or the data is already deleted.
pub fn disable_protection(vault: &Vault, env: &JobEnv<'_>, item: &Item, delete_data: bool) -> Result<Item> {
    let now = env.clock.now();
    if item.protection.state == ProtectionState::SoftDeleted {
        return Err(ServiceError::Conflict(format!(
            "the backup data of item {} is already soft deleted (purged after {})",
            item.name,
            item.protection.purge_after.map(|t| t.to_string()).unwrap_or_default()
        )));
    }
    if delete_data {
        let op = boveda_vault::GuardedOp::new("delete backup data", format!("item {}", item.name), item.id.to_hex());
        crate::guard::authorize(vault, &op, &env.by, env.clock)?;
        let days = vault.settings().soft_delete_days;
        let purge = now + SignedDuration::from_hours(24 * i64::from(days));
        // the points are held until then, in the vault itself
        crate::policies::holds::hold_soft_deleted(vault, item, purge)?;
        let detail = format!("backup data soft deleted; recoverable with `protection undelete` until {purge}");
        return simple_job(vault, env, Operation::DeleteBackupData, item, detail, |i| {
            i.protection.state = ProtectionState::SoftDeleted;
            i.protection.deleted_at = Some(now);
            i.protection.purge_after = Some(purge);
        });
    }
    if item.protection.state != ProtectionState::Protected {
        return Err(ServiceError::Conflict(format!(
            "item {} is {}: there is no protection to stop",
            item.name,
            item.protection.state.as_str()
        )));
    }
    simple_job(vault, env, Operation::DisableBackup, item, "protection stopped, data retained".into(), |i| {
        i.protection.state = ProtectionState::Stopped;
    })
}

/// `protection undelete`: brings soft-deleted backup data back (an
/// `Undelete` job); the item's protection is then stopped, data retained.
///
/// # Errors
/// `Conflict` unless the item's data is soft deleted.
pub fn undelete_protection(vault: &Vault, env: &JobEnv<'_>, item: &Item) -> Result<Item> {
    if item.protection.state != ProtectionState::SoftDeleted {
        return Err(ServiceError::Conflict(format!(
            "item {} is {}: only soft-deleted backup data can be undeleted",
            item.name,
            item.protection.state.as_str()
        )));
    }
    simple_job(
        vault,
        env,
        Operation::Undelete,
        item,
        "backup data undeleted; protection stopped, data retained".into(),
        |i| {
            i.protection.state = ProtectionState::Stopped;
            i.protection.deleted_at = None;
            i.protection.purge_after = None;
        },
    )
}

//! Listing, browsing and restoring recovery points.

mod download;
pub mod drill;
pub mod verify;
pub mod vm_restore;
pub use download::download_point;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use boveda_engine::beneath::Beneath;
use boveda_engine::{
    DISK_NODE, DiskEntry, DiskOutputFormat, DiskRestoreRequest, RestoreOptions, RestoreOutcome, RestoreProgress,
    list_point_path, restore_files,
};
use boveda_vault::{Node, RecoveryPoint, Vault};
use serde::Serialize;

use crate::error::{Result, ServiceError};
use crate::items::{Item, ItemSource};
use crate::protection::VM_FILES;

/// An item's points, oldest first.
///
/// # Errors
/// A store error or a damaged manifest.
pub fn list_item_points(vault: &Vault, item: &Item) -> Result<Vec<RecoveryPoint>> {
    Ok(vault.list_item_points(&item.id)?)
}

/// Resolves `latest` or a point id prefix (at least 4 hex digits).
///
/// # Errors
/// `NotFound` or `Invalid` (ambiguous prefix); `Conflict` when the item's
/// data is soft deleted.
pub fn find_point(vault: &Vault, item: &Item, selector: &str) -> Result<RecoveryPoint> {
    if item.protection.state == crate::items::ProtectionState::SoftDeleted {
        return Err(ServiceError::refused(
            crate::error::ServiceErrorKind::Conflict,
            format!(
                "the backup data of item {} is soft deleted (it is purged after {}); undelete it to restore from it",
                item.name,
                item.protection.purge_after.map(|t| t.to_string()).unwrap_or_default()
            ),
            crate::error::Remedy::Undelete { item: item.name.clone() },
        ));
    }
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
    within: Option<&Path>,
    format: DiskOutputFormat,
    cancel: Option<&AtomicBool>,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    let index = vault.load_index()?;
    // inside a restore root, the image is written in its folder held open
    // (reached without links), through that handle
    let held = match within {
        Some(root) => {
            let (dir, name) = match (target.parent(), target.file_name()) {
                (Some(d), Some(n)) => (d, n.to_os_string()),
                _ => return Err(ServiceError::field_error("target", "give the path of the image file to write")),
            };
            let b = Beneath::create_within(root, dir).map_err(|e| ServiceError::field_error("target", e))?;
            Some((b, name))
        }
        None => None,
    };
    let path = held.as_ref().map_or(target.clone(), |(b, name)| b.proc_path(name));
    let req = DiskRestoreRequest { disk: DISK_NODE, target: &path, format, cancel, no_follow: within.is_some() };
    Ok(boveda_engine::restore_disk(vault, &index, &point.tree, &req, progress)?)
}

pub use vm_restore::{VmRestore, restore_vm};

/// Restores a point (or chosen paths of it) into `target` (inside
/// `within`, when given: see [`RestoreRequest::within`]).
///
/// # Errors
/// An unusable target, a path not in the point, a damaged tree.
pub fn restore(
    vault: &Vault,
    point: &RecoveryPoint,
    target: PathBuf,
    within: Option<PathBuf>,
    paths: Vec<String>,
    cancel: Option<&AtomicBool>,
    progress: &dyn RestoreProgress,
) -> Result<RestoreOutcome> {
    let index = vault.load_index()?;
    let opts = RestoreOptions { target, within, paths, cancel };
    Ok(restore_files(vault, &index, &point.tree, &opts, progress)?)
}

/// Splits a path inside a disk or VM point into the disk it names and the
/// path within that disk's file system: `/etc/hosts` for a disk item,
/// `/vda/etc/hosts` for a VM.
fn disk_and_path(item: &Item, path: &str) -> Result<(String, String)> {
    match &item.source {
        ItemSource::Disk { .. } => Ok((DISK_NODE.to_string(), path.to_string())),
        ItemSource::Vm { .. } => {
            let trimmed = path.trim_start_matches('/');
            let (dev, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
            if dev.is_empty() {
                return Err(ServiceError::Invalid("give the disk first, such as /vda/etc/hosts".into()));
            }
            Ok((dev.to_string(), format!("/{rest}")))
        }
        ItemSource::Files { .. } => Err(ServiceError::Invalid("not a disk or VM item".into())),
    }
}

/// Whether a VM point's root entry `name` is one of its files (its
/// definition, its UEFI variables) rather than a disk.
fn is_vm_file(name: &[u8]) -> bool {
    VM_FILES.iter().any(|f| f.as_bytes() == name)
}

/// Lists files inside the ext2/3/4 file system of a disk or VM point.
/// For a VM, `/` lists its disks.
///
/// # Errors
/// `Invalid` for a disk without an ext file system; `NotFound` for a path
/// that is not there.
pub fn browse_disk(vault: &Vault, item: &Item, point: &RecoveryPoint, path: &str) -> Result<Vec<DiskEntry>> {
    let index = vault.load_index()?;
    if let ItemSource::Vm { .. } = item.source
        && path.trim_matches('/').is_empty()
    {
        let nodes = list_point_path(vault, &index, &point.tree, "/")?;
        return Ok(nodes
            .iter()
            .map(|n| DiskEntry {
                name: n.name_lossy(),
                mode: if is_vm_file(&n.name) { 0o100644 } else { 0o040755 },
                uid: 0,
                gid: 0,
                size: n.size,
                is_dir: !is_vm_file(&n.name),
            })
            .collect());
    }
    let (disk, inner) = disk_and_path(item, path)?;
    let m = boveda_engine::materialize_disk(vault, &index, &point.tree, &disk)?;
    Ok(m.list(&inner)?)
}

/// Extracts paths from the file system inside a disk or VM point.
///
/// # Errors
/// As [`browse_disk`]; I/O errors writing the target.
pub fn restore_disk_files(
    vault: &Vault,
    item: &Item,
    point: &RecoveryPoint,
    paths: &[String],
    target: &std::path::Path,
    within: Option<&Path>,
) -> Result<()> {
    let held =
        Beneath::open(target, within).map_err(|e| ServiceError::Invalid(format!("cannot use the target: {e}")))?;
    let index = vault.load_index()?;
    let mut by_disk: Vec<(String, Vec<String>)> = Vec::new();
    for p in paths {
        let (disk, inner) = disk_and_path(item, p)?;
        match by_disk.iter_mut().find(|(d, _)| *d == disk) {
            Some((_, v)) => v.push(inner),
            None => by_disk.push((disk, vec![inner])),
        }
    }
    for (disk, inner_paths) in by_disk {
        let m = boveda_engine::materialize_disk(vault, &index, &point.tree, &disk)?;
        let sub;
        let dest = match item.source {
            ItemSource::Vm { .. } => {
                let shown = target.join(&disk);
                // made below the held target, no link followed
                sub = held
                    .sub(std::path::Path::new(&disk))
                    .map_err(|e| ServiceError::Invalid(format!("cannot create {}: {e}", shown.display())))?;
                &sub
            }
            _ => &held,
        };
        for p in &inner_paths {
            m.extract(p, dest)?;
        }
    }
    Ok(())
}

/// Mounts an item's points (or one of them) read-only at `dir` and serves
/// until the folder is unmounted.
///
/// # Errors
/// `NotFound` without points; mount errors (no FUSE, busy folder).
pub fn mount(vault: Vault, item: &Item, point: Option<&str>, dir: &std::path::Path) -> Result<()> {
    let points = match point {
        Some(sel) => vec![find_point(&vault, item, sel)?],
        None => list_item_points(&vault, item)?,
    };
    if points.is_empty() {
        return Err(ServiceError::NotFound(format!("item {} has no recovery point yet", item.name)));
    }
    let mounted = points
        .iter()
        .map(|p| boveda_engine::MountedPoint {
            name: p.id.short(),
            tree: p.tree,
            time: std::time::UNIX_EPOCH + std::time::Duration::from_secs(p.time.as_second().max(0) as u64),
        })
        .collect();
    Ok(boveda_engine::mount_points(vault, mounted, dir, point.is_some())?)
}

/// Instant restore: exports the disks of a disk or VM item's `point`
/// read-only over NBD on the UNIX socket `socket` (each disk under its
/// name in the point, `disk` or the VM's `vda`, ...), reading chunks on
/// demand, until `stop` is set; `ready` gets the disks and their sizes
/// once the socket accepts clients. A VM boots from it at once with a
/// qcow2 overlay taking its writes (docs/VMS.md).
///
/// # Errors
/// `Invalid` for an item of files; the socket's errors (missing folder,
/// another process serving on it); the vault's errors.
pub fn serve_point_disks(
    vault: &Vault,
    item: &Item,
    point: &RecoveryPoint,
    socket: &std::path::Path,
    stop: &AtomicBool,
    ready: impl FnOnce(&[(String, u64)]),
) -> Result<()> {
    if let ItemSource::Files { .. } = item.source {
        return Err(ServiceError::Invalid(format!(
            "item {} holds files, not disks: only the points of disk and VM items can be served as disks",
            item.name
        )));
    }
    boveda_engine::serve_point_disks(vault, &point.tree, &VM_FILES, socket, stop, ready)?;
    Ok(())
}

/// What a restore writes, whatever the item's kind.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    /// Files: the folder to restore into (paths are recreated below it).
    /// Disk: the image file or block device to write. VM: the folder for
    /// the disks and the new definition.
    pub target: PathBuf,
    /// Only these paths of the point: of its files, or inside the file
    /// system of its disk (`/etc/hosts`) or of one of its VM's disks
    /// (`/vda/etc/hosts`).
    pub paths: Vec<String>,
    /// Disk and VM items: the format of the restored disks.
    pub format: DiskOutputFormat,
    /// VM items: a folder, a new VM or the existing VM's disks.
    pub vm: vm_restore::VmTarget,
    /// The folder `target` must stay inside (a server's restore root):
    /// everything from it down is then made without following a symbolic
    /// link, whatever other processes do meanwhile. `None` (the CLI): the
    /// target path is the user's own and followed as given; below it,
    /// nothing is followed either way.
    pub within: Option<PathBuf>,
}

/// What a restore wrote: plain data, as the CLI prints it and the API
/// returns it.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    /// The point's id.
    pub point: String,
    pub item: String,
    pub target: PathBuf,
    /// Files written; for a disk or VM, the disks.
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    pub bytes_written: u64,
    /// Files already complete from an earlier run, left as they were.
    pub files_skipped: u64,
    /// Paths picked inside a disk or VM point, when some were.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// A VM point restored as a new VM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmRestore>,
    pub warnings: Vec<String>,
    /// What could not be restored, each with its reason.
    pub errors: Vec<String>,
    /// How many failed for each reason.
    pub failure_reasons: std::collections::BTreeMap<String, u64>,
    pub seconds: f64,
}

/// Restores `point` of `item` as a `Restore` job: its files, chosen paths,
/// its disk or a new VM, by the item's kind. The report comes back also
/// when some files could not be restored; the job is then `Failed`, and
/// the report's `errors` say which and why.
///
/// # Errors
/// A store error recording the job (nothing was restored); inside the
/// returned result, the restore's own error (an unusable target, a path
/// not in the point, a stopped job: `Cancelled`).
pub fn restore_job(
    vault: &Vault,
    env: &crate::runtime::job::JobEnv<'_>,
    item: &Item,
    point: &RecoveryPoint,
    req: &RestoreRequest,
    progress: Option<&dyn RestoreProgress>,
) -> Result<(crate::runtime::job::Job, Result<RestoreReport>)> {
    let spec = env.spec(crate::runtime::job::Operation::Restore, item, None);
    let observers = crate::runtime::job::Observers { backup: None, restore: progress };
    let partial = std::sync::Mutex::new(None);
    let (job, result) = crate::runtime::job::run_job(vault, env.clock, &spec, observers, |jctx| {
        let report = restore_report(vault, item, point, req, jctx)?;
        let done = crate::runtime::job::JobDone {
            warnings: report.warnings.clone(),
            details: restore_details(item, point, &report, &req.paths),
            point: Some(point.id),
        };
        if report.errors.is_empty() {
            return Ok((report, done));
        }
        let why = restore_failure(&report);
        *partial.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(report);
        Err(ServiceError::Invalid(why))
    })?;
    Ok((job, partial.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).map_or(result, Ok)))
}

/// What a restore wrote and where, for its job: the point by its time,
/// the target, the counts, and the paths picked.
fn restore_details(item: &Item, point: &RecoveryPoint, report: &RestoreReport, picked: &[String]) -> Vec<String> {
    let target = report.target.display();
    let what = match &item.source {
        ItemSource::Files { .. } => format!(
            "restored the point of {} into {target}: {} files, {} folders, {} bytes",
            point.time.round(jiff::Unit::Second).unwrap_or(point.time),
            report.files,
            report.dirs,
            report.bytes_written
        ),
        ItemSource::Disk { .. } if report.paths.is_empty() => format!(
            "restored the disk of the point of {} as the image file {target} ({} bytes written)",
            point.time.round(jiff::Unit::Second).unwrap_or(point.time),
            report.bytes_written
        ),
        _ => format!(
            "restored the point of {} into {target}: {} disks, {} bytes written",
            point.time.round(jiff::Unit::Second).unwrap_or(point.time),
            report.files,
            report.bytes_written
        ),
    };
    let mut out = vec![what];
    if let Some(vm) = &report.vm {
        if vm.defined {
            out.push(format!(
                "new VM {} defined in libvirt{}",
                vm.domain,
                if vm.started { " and started" } else { "" }
            ));
        }
        for c in &vm.safety_copies {
            out.push(format!("the disks of VM {} replaced; the disk before kept as {}", vm.domain, c.display()));
        }
    }
    if !picked.is_empty() {
        out.push(format!("paths picked: {}", picked.join(", ")));
    }
    out
}

/// One line for a restore that left files out.
pub fn restore_failure(report: &RestoreReport) -> String {
    if report.vm.is_some() {
        return format!("{} disk range(s) could not be restored: {}", report.errors.len(), report.errors.join("; "));
    }
    let reasons: Vec<String> = report.failure_reasons.iter().map(|(why, n)| format!("{why}: {n}")).collect();
    let reasons = if reasons.is_empty() { report.errors.join("; ") } else { reasons.join("; ") };
    format!(
        "{} of {} file(s) were not restored ({reasons}); the other {} are restored complete",
        report.errors.len(),
        report.files + report.errors.len() as u64,
        report.files
    )
}

fn restore_report(
    vault: &Vault,
    item: &Item,
    point: &RecoveryPoint,
    req: &RestoreRequest,
    jctx: &crate::runtime::job::JobCtx<'_>,
) -> Result<RestoreReport> {
    let started = std::time::Instant::now();
    let cancel = Some(&jctx.cancel);
    let mut vm = None;
    let out = match &item.source {
        ItemSource::Files { .. } => {
            restore(vault, point, req.target.clone(), req.within.clone(), req.paths.clone(), cancel, jctx)?
        }
        ItemSource::Disk { .. } | ItemSource::Vm { .. } if !req.paths.is_empty() => {
            restore_disk_files(vault, item, point, &req.paths, &req.target, req.within.as_deref())?;
            RestoreOutcome::default()
        }
        ItemSource::Vm { .. } => {
            let restored = match &req.vm {
                vm_restore::VmTarget::Disks => {
                    restore_vm(vault, point, req.target.clone(), req.within.as_deref(), req.format, cancel, jctx)?
                }
                vm_restore::VmTarget::NewVm { name, start } => {
                    vm_restore::new_vm(vault, item, point, req, (name, *start), cancel, jctx)?
                }
                vm_restore::VmTarget::ReplaceDisks { confirm } => {
                    vm_restore::replace_disks(vault, item, point, req, confirm.as_deref(), cancel, jctx)?
                }
            };
            let out = restored.outcome.clone();
            vm = Some(restored);
            out
        }
        ItemSource::Disk { .. } => {
            restore_disk_image(vault, point, req.target.clone(), req.within.as_deref(), req.format, cancel, jctx)?
        }
    };
    let paths = match item.source {
        ItemSource::Files { .. } => Vec::new(),
        _ => req.paths.clone(),
    };
    Ok(RestoreReport {
        point: point.id.to_hex(),
        item: item.name.clone(),
        target: req.target.clone(),
        files: out.files,
        dirs: out.dirs,
        other: out.other,
        bytes_written: out.bytes_written,
        files_skipped: out.files_skipped,
        paths,
        vm,
        warnings: out.warnings,
        errors: out.errors,
        failure_reasons: out.failure_reasons,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A recovery point with when it expires and which rule keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct PointSummary {
    pub point: RecoveryPoint,
    /// `None`: kept until something changes.
    pub expires: Option<jiff::Timestamp>,
    pub kept_by: String,
    /// On the primary of a geo-redundant vault: whether the secondary
    /// holds the point yet (`null`: the secondary does not answer); absent
    /// for other vaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_secondary: Option<Option<bool>>,
    /// A point that looked like an attack, and its review.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspicious: Option<crate::protection::suspicion::PointReview>,
    /// The suspicious point whose review holds this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_for_review_of: Option<boveda_vault::PointId>,
    /// Its latest verification (booted, or restored and compared).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verification: Option<verify::PointVerification>,
}

/// An item's points, oldest first, each with its expiry (by the item's
/// policy or its retain-until date) and, with `secondary`, whether a
/// geo-redundant vault's secondary holds it yet. The second value says why
/// that is unknown, when the secondary does not answer.
///
/// # Errors
/// A store error or a damaged record.
pub fn list_points(
    vault: &Vault,
    item: &Item,
    now: jiff::Timestamp,
    secondary: bool,
) -> Result<(Vec<PointSummary>, Option<String>)> {
    let points = list_item_points(vault, item)?;
    let policies = crate::policies::list_policies(vault)?;
    let policy = policies.iter().find(|p| Some(p.id) == item.protection.policy);
    let refs: Vec<_> = points.iter().collect();
    let expiries = crate::policies::retention::evaluate(item, policy, &refs, now);
    let mut unknown = None;
    let on_secondary: Option<Vec<Option<bool>>> = if secondary {
        let ids: Vec<_> = points.iter().map(|p| p.id).collect();
        match crate::replication::points_on_secondary(vault, &ids) {
            Ok(v) => v.map(|v| v.into_iter().map(Some).collect()),
            Err(e) => {
                unknown = Some(format!("the secondary store does not answer ({e})"));
                Some(vec![None; points.len()])
            }
        }
    } else {
        None
    };
    let reviews = crate::protection::suspicion::reviews(vault)?;
    let holds = vault.point_holds()?;
    let verified = verify::verifications(vault)?;
    let list = points
        .into_iter()
        .zip(expiries)
        .enumerate()
        .map(|(i, (point, e))| PointSummary {
            suspicious: reviews.iter().find(|r| r.point == point.id).cloned(),
            held_for_review_of: holds.iter().find(|h| h.point == point.id).and_then(|h| h.review_of),
            verification: verified.iter().find(|v| v.point == point.id).cloned(),
            point,
            expires: e.expires,
            kept_by: e.kept_by,
            on_secondary: on_secondary.as_ref().map(|v| v.get(i).copied().flatten()),
        })
        .collect();
    Ok((list, unknown))
}

/// One point of an item (`latest` or an id prefix) with its expiry.
///
/// # Errors
/// As [`find_point`].
pub fn show_point(vault: &Vault, item: &Item, selector: &str, now: jiff::Timestamp) -> Result<PointSummary> {
    let point = find_point(vault, item, selector)?;
    let (list, _) = list_points(vault, item, now, false)?;
    list.into_iter()
        .find(|s| s.point.id == point.id)
        .ok_or_else(|| ServiceError::NotFound(format!("point {} vanished while being read", point.id.short())))
}

/// One entry of a folder inside a point: of its files, or of the file
/// system inside its disk (or one of its VM's disks).
#[derive(Debug, Clone, Serialize)]
pub struct PointEntry {
    pub name: String,
    /// `Dir`, `File`, `Symlink`, ...
    pub kind: String,
    /// Permission bits.
    pub mode: u32,
    pub size: u64,
    pub uid: u32,
    pub gid: u32,
    /// Known for entries of files points.
    pub mtime_ns: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
}

/// Lists a folder inside a point, whatever the item's kind: `path` is in
/// the backed-up tree for files, in the disk's file system for a disk
/// (`/etc`), below the disk's name for a VM (`/vda/etc`; `/` lists its
/// disks). One shape for one question.
///
/// # Errors
/// `NotFound` for a path not in the point; `Invalid` for a disk without an
/// ext file system.
pub fn browse_point(vault: &Vault, item: &Item, point: &RecoveryPoint, path: &str) -> Result<Vec<PointEntry>> {
    if let ItemSource::Files { .. } = item.source {
        return Ok(browse(vault, point, path)?
            .into_iter()
            .map(|n| PointEntry {
                name: n.name_lossy(),
                kind: format!("{:?}", n.kind),
                mode: n.mode & 0o7777,
                size: n.size,
                uid: n.uid,
                gid: n.gid,
                mtime_ns: Some(n.mtime_ns),
                link_target: (n.kind == boveda_vault::NodeKind::Symlink)
                    .then(|| String::from_utf8_lossy(&n.link_target).into_owned()),
            })
            .collect());
    }
    Ok(browse_disk(vault, item, point, path)?
        .into_iter()
        .map(|e| PointEntry {
            name: e.name,
            kind: if e.is_dir { "Dir" } else { "File" }.into(),
            mode: e.mode & 0o7777,
            size: e.size,
            uid: e.uid,
            gid: e.gid,
            mtime_ns: None,
            link_target: None,
        })
        .collect())
}

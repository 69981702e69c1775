//! Azure's restore options for a VM point: its disks and definition into
//! a folder (`Disks`), a new VM defined in libvirt (`NewVm`: another
//! name, UUID and MAC addresses, optionally started), or the disks of the
//! existing VM replaced (`ReplaceDisks`: the VM shut off, its current
//! disks kept beside as named safety copies, its definition kept).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boveda_engine::{DiskOutputFormat, DiskRestoreRequest, Domain, RestoreOutcome, RestoreProgress, read_point_file};
use boveda_vault::{PointId, RecordId, RecoveryPoint, Vault};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::VmRestore;
use crate::error::{Result, ServiceError};
use crate::items::Item;
use crate::items::live_vm::virsh;
use crate::protection::VM_DEFINITION;

const SAFETY_COPIES: &str = "safety-copies";
const VIRSH_LIMIT: Duration = Duration::from_secs(60);

/// How a VM point is restored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "as")]
pub enum VmTarget {
    /// Its disks and a definition (`<name>-restored`) into the target folder.
    #[default]
    Disks,
    /// A new VM, defined in libvirt under `name`, its disks in the target
    /// folder; started when `start`.
    NewVm {
        name: String,
        #[serde(default)]
        start: bool,
    },
    /// The existing VM's disks replaced; a running VM is shut off only
    /// when `confirm` names it.
    ReplaceDisks {
        #[serde(default)]
        confirm: Option<String>,
    },
}

/// A disk a replace kept beside, before the point's disk took its place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SafetyCopy {
    pub id: RecordId,
    pub item: String,
    pub domain: String,
    pub disk: String,
    /// The VM's disk, now the point's.
    pub original: PathBuf,
    /// What it held before.
    pub path: PathBuf,
    pub made: Timestamp,
    pub point: PointId,
}

fn stored_domain(vault: &Vault, point: &RecoveryPoint) -> Result<Domain> {
    let index = vault.load_index()?;
    let xml = read_point_file(vault, &index, &point.tree, VM_DEFINITION)?;
    let xml = String::from_utf8(xml)
        .map_err(|_| ServiceError::Invalid("the stored domain definition is not UTF-8".into()))?;
    Ok(Domain::parse(Path::new(VM_DEFINITION), xml)?)
}

fn libvirt(args: &[&str]) -> Result<String> {
    virsh(args, VIRSH_LIMIT).map_err(ServiceError::Invalid)
}

/// A libvirt domain name: 1 to 64 letters, digits, `-`, `_` and `.`.
fn check_vm_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::field_error("name", format!("{name:?} is not a VM name (letters, digits, - _ .)")))
    }
}

/// Restores the point as a new VM `name` defined in libvirt, its disks in
/// `target_dir`; started when `start`.
///
/// # Errors
/// `Field` for a name libvirt already has or that is not a name; libvirt's
/// refusal; the restore's errors.
pub(super) fn new_vm(
    vault: &Vault,
    point: &RecoveryPoint,
    req: &super::RestoreRequest,
    (name, start): (&str, bool),
    cancel: Option<&std::sync::atomic::AtomicBool>,
    progress: &dyn RestoreProgress,
) -> Result<VmRestore> {
    check_vm_name(name)?;
    if libvirt(&["dominfo", name]).is_ok() {
        return Err(ServiceError::field_error(
            "name",
            format!("a VM named {name} already exists in libvirt: choose another name"),
        ));
    }
    let mut restored = super::restore_vm_as(
        vault,
        point,
        req.target.clone(),
        req.within.as_deref(),
        req.format,
        Some(name),
        cancel,
        progress,
    )?;
    let definition = restored.definition.clone().unwrap_or_default();
    libvirt(&["define", &definition.display().to_string()])
        .map_err(|e| ServiceError::Invalid(format!("libvirt did not define {name}: {e}")))?;
    restored.defined = true;
    if start {
        libvirt(&["start", name])
            .map_err(|e| ServiceError::Invalid(format!("{name} is defined but did not start: {e}")))?;
        restored.started = true;
    }
    Ok(restored)
}

/// Shuts the VM off: asked politely for 30 s, then powered off.
fn shut_off(name: &str) -> Result<()> {
    let _ = libvirt(&["shutdown", name]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if libvirt(&["domstate", name]).is_ok_and(|s| s.trim() == "shut off") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    libvirt(&["destroy", name]).map(|_| ())
}

/// Replaces the disks of the VM the point is of with the point's: the VM
/// is shut off (running, it is shut off only when `confirm` names it), each
/// current disk file is renamed beside itself as a safety copy, and the
/// point's disk is written in its place in the disk's own format. The
/// definition is kept. With `within` (a server's restore root), every disk
/// replaced must lie inside it.
///
/// # Errors
/// `Invalid` for a VM libvirt does not know, a running VM not confirmed,
/// a disk outside `within` or not a file; the restore's errors (the
/// safety copy is then put back).
pub(super) fn replace_disks(
    vault: &Vault,
    item: &Item,
    point: &RecoveryPoint,
    req: &super::RestoreRequest,
    confirm: Option<&str>,
    now: Timestamp,
    cancel: Option<&std::sync::atomic::AtomicBool>,
    progress: &dyn RestoreProgress,
) -> Result<VmRestore> {
    let stored = stored_domain(vault, point)?;
    let name = stored.name.clone();
    let xml = libvirt(&["dumpxml", &name]).map_err(|e| {
        ServiceError::Invalid(format!(
            "VM {name} is not defined in libvirt ({e}): restore its disks into a folder, or as a new VM"
        ))
    })?;
    let current = Domain::parse(Path::new(&name), xml)?;
    let state = libvirt(&["domstate", &name])?;
    if state.trim() != "shut off" {
        if confirm != Some(name.as_str()) {
            return Err(ServiceError::field_error(
                "confirm",
                format!(
                    "VM {name} is {}: shut it off first, or confirm with its name and it is shut off",
                    state.trim()
                ),
            ));
        }
        shut_off(&name)?;
    }
    let mut plan = Vec::new();
    for d in &stored.disks {
        let Some(cur) = current.disks.iter().find(|c| c.target == d.target) else { continue };
        if !cur.path.is_file() {
            return Err(ServiceError::Invalid(format!(
                "disk {} of {name} ({}) is not a file: restore into a folder and copy it",
                d.target,
                cur.path.display()
            )));
        }
        if let Some(root) = &req.within {
            let inside =
                cur.path.canonicalize().ok().zip(root.canonicalize().ok()).is_some_and(|(p, r)| p.starts_with(r));
            if !inside {
                return Err(ServiceError::field_error(
                    "target",
                    format!("disk {} of {name} is outside the folders this server restores to", cur.path.display()),
                ));
            }
        }
        plan.push((d.target.clone(), cur.path.clone(), cur.format.clone()));
    }
    let stamp = point.time.strftime("%Y%m%dT%H%M%SZ").to_string();
    let index = vault.load_index()?;
    let mut outcome = RestoreOutcome::default();
    let mut disks = Vec::new();
    for (target, path, format) in plan {
        let safety = PathBuf::from(format!("{}.boveda-safety-{stamp}", path.display()));
        if safety.exists() {
            return Err(ServiceError::Invalid(format!(
                "{} exists: a replace from this point was made before; remove that safety copy first",
                safety.display()
            )));
        }
        std::fs::rename(&path, &safety).map_err(|e| {
            ServiceError::Invalid(format!("cannot keep {} as {}: {e}", path.display(), safety.display()))
        })?;
        let fmt = if format.as_deref() == Some("qcow2") { DiskOutputFormat::Qcow2 } else { DiskOutputFormat::Raw };
        let r = DiskRestoreRequest { disk: &target, target: &path, format: fmt, cancel, no_follow: true };
        match boveda_engine::restore_disk(vault, &index, &point.tree, &r, progress) {
            Ok(o) => {
                outcome.files += o.files;
                outcome.bytes_written += o.bytes_written;
                outcome.errors.extend(o.errors);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::rename(&safety, &path);
                return Err(e.into());
            }
        }
        let copy = SafetyCopy {
            id: RecordId::random(),
            item: item.name.clone(),
            domain: name.clone(),
            disk: target.clone(),
            original: path.clone(),
            path: safety,
            made: now,
            point: point.id,
        };
        vault.catalog_put(SAFETY_COPIES, &copy.id, Some(&copy))?;
        disks.push((target, path));
    }
    Ok(VmRestore {
        domain: name,
        definition: None,
        disks,
        outcome,
        defined: false,
        started: false,
        safety_copies: list_safety_copies(vault)?.into_iter().filter(|c| c.point == point.id).map(|c| c.path).collect(),
    })
}

/// The safety copies replaces left that are still there, oldest first.
///
/// # Errors
/// A store error.
pub fn list_safety_copies(vault: &Vault) -> Result<Vec<SafetyCopy>> {
    let mut all: Vec<SafetyCopy> = vault
        .catalog_list::<SafetyCopy>(SAFETY_COPIES)?
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| c.path.exists())
        .collect();
    all.sort_by_key(|c| c.made);
    Ok(all)
}

/// Removes the safety copy at `path` (one that a replace made, and only
/// such): the file, and its record.
///
/// # Errors
/// `NotFound` for a path no replace left; the file system's errors.
pub fn remove_safety_copy(vault: &Vault, path: &Path) -> Result<SafetyCopy> {
    let copy = list_safety_copies(vault)?
        .into_iter()
        .find(|c| c.path == path)
        .ok_or_else(|| ServiceError::NotFound(format!("{} is not a safety copy a replace left", path.display())))?;
    std::fs::remove_file(&copy.path)
        .map_err(|e| ServiceError::Invalid(format!("cannot remove {}: {e}", copy.path.display())))?;
    vault.catalog_put::<SafetyCopy>(SAFETY_COPIES, &copy.id, None)?;
    Ok(copy)
}

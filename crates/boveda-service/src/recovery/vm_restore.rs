//! Azure's restore options for a VM point: its disks and definition into
//! a folder (`Disks`), a new VM defined in libvirt (`NewVm`: another
//! name, UUID and MAC addresses, optionally started), or the disks of the
//! existing VM replaced (`ReplaceDisks`: the VM shut off, its current
//! disks kept beside as named safety copies, its definition kept).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use boveda_engine::beneath::Beneath;
use boveda_engine::{DiskOutputFormat, DiskRestoreRequest, Domain, RestoreOutcome, RestoreProgress, read_point_file};
use boveda_vault::{PointId, RecordId, RecoveryPoint, Vault};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};
use crate::items::Item;
use crate::items::live_vm::virsh;
use crate::protection::{VM_DEFINITION, VM_NVRAM};

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

/// The most a VM's stored definition may hold.
const MAX_DEFINITION: u64 = 16 << 20;

/// A VM's definition as its point holds it, its UEFI variables when the
/// point holds them, and why they could not be read when they could not
/// (the VM's disks are restored or booted all the same).
pub(super) fn stored_vm(
    vault: &Vault,
    index: &boveda_vault::ChunkIndex,
    point: &RecoveryPoint,
) -> Result<(Domain, Option<Vec<u8>>, Option<String>)> {
    let xml = read_point_file(vault, index, &point.tree, VM_DEFINITION, MAX_DEFINITION)?;
    let xml = String::from_utf8(xml)
        .map_err(|_| ServiceError::Invalid("the stored domain definition is not UTF-8".into()))?;
    let domain = Domain::parse(Path::new(VM_DEFINITION), xml)?;
    Ok(match read_point_file(vault, index, &point.tree, VM_NVRAM, boveda_engine::MAX_FIRMWARE_VARS) {
        Ok(bytes) => (domain, Some(bytes), None),
        Err(boveda_engine::EngineError::NotInPoint(_)) => (domain, None, None),
        Err(e) => (domain, None, Some(format!("the point's UEFI variables could not be read: {e}"))),
    })
}

fn stored_domain(vault: &Vault, point: &RecoveryPoint) -> Result<Domain> {
    Ok(stored_vm(vault, &vault.load_index()?, point)?.0)
}

fn libvirt(args: &[&str]) -> Result<String> {
    virsh(args, VIRSH_LIMIT).map_err(ServiceError::Invalid)
}

/// A libvirt domain name: 1 to 64 letters, digits, `-`, `_` and `.`.
fn check_vm_name(name: &str) -> Result<()> {
    // begins with a letter or digit: never taken for one of virsh's options
    let ok = name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
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
    item: &Item,
    point: &RecoveryPoint,
    req: &super::RestoreRequest,
    (name, start): (&str, bool),
    cancel: Option<&std::sync::atomic::AtomicBool>,
    progress: &dyn RestoreProgress,
) -> Result<VmRestore> {
    refuse_host_item(item)?;
    check_vm_name(name)?;
    if libvirt(&["dominfo", name]).is_ok() {
        return Err(ServiceError::field_error(
            "name",
            format!("a VM named {name} already exists in libvirt: choose another name"),
        ));
    }
    let mut restored = restore_vm_as(
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

/// A registered host's definition is the host's to write: defined or
/// acted on in this machine's libvirt, it could name any device or file
/// here. Its points restore as disks, onto the host, or as files.
fn refuse_host_item(item: &Item) -> Result<()> {
    match item.host {
        Some(_) => Err(ServiceError::Invalid(format!(
            "item {} is a registered host's VM: it is not defined or replaced in this machine's libvirt; restore its \
             disks into a folder",
            item.name
        ))),
        None => Ok(()),
    }
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
    cancel: Option<&std::sync::atomic::AtomicBool>,
    progress: &dyn RestoreProgress,
) -> Result<VmRestore> {
    refuse_host_item(item)?;
    let stored = stored_domain(vault, point)?;
    let name = stored.name.clone();
    check_vm_name(&name)?;
    let xml = libvirt(&["dumpxml", "--domain", &name]).map_err(|e| {
        ServiceError::Invalid(format!(
            "VM {name} is not defined in libvirt ({e}): restore its disks into a folder, or as a new VM"
        ))
    })?;
    let current = Domain::parse(Path::new(&name), xml)?;
    if stored.uuid.is_some() && current.uuid != stored.uuid {
        return Err(ServiceError::Invalid(format!(
            "the VM named {name} in libvirt is another VM than the point's (its UUID differs): restore as a new VM"
        )));
    }
    let state = libvirt(&["domstate", "--domain", &name])?;
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
        if !matches!(cur.format.as_deref(), None | Some("raw" | "qcow2")) {
            return Err(ServiceError::Invalid(format!(
                "disk {} of {name} is {}: only raw and qcow2 disks are replaced",
                d.target,
                cur.format.as_deref().unwrap_or_default()
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
    let (done, outcome) = swap_disks(vault, point, plan, cancel, progress)?;
    let mut disks = Vec::new();
    for (target, path, safety) in done {
        let copy = SafetyCopy {
            id: RecordId::random(),
            item: item.name.clone(),
            domain: name.clone(),
            disk: target.clone(),
            original: path.clone(),
            path: safety,
            made: Timestamp::now(),
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

/// A disk replaced: its name in the guest, its path, its safety copy.
type Swapped = (String, PathBuf, PathBuf);

/// Each planned disk renamed beside itself (its safety copy) and the
/// point's disk written in its place: all of them, or, on a failure, none
/// (those done are put back). The disks done, with their safety copies.
fn swap_disks(
    vault: &Vault,
    point: &RecoveryPoint,
    plan: Vec<(String, PathBuf, Option<String>)>,
    cancel: Option<&AtomicBool>,
    progress: &dyn RestoreProgress,
) -> Result<(Vec<Swapped>, RestoreOutcome)> {
    let stamp = point.time.strftime("%Y%m%dT%H%M%SZ").to_string();
    let safety_of = |path: &Path| PathBuf::from(format!("{}.boveda-safety-{stamp}", path.display()));
    if let Some((_, path, _)) = plan.iter().find(|(_, path, _)| safety_of(path).exists()) {
        return Err(ServiceError::Invalid(format!(
            "{} exists: a replace from this point was made before; remove that safety copy first",
            safety_of(path).display()
        )));
    }
    let index = vault.load_index()?;
    let mut outcome = RestoreOutcome::default();
    let mut done: Vec<Swapped> = Vec::new();
    // every disk or none: a failure puts back the disks replaced before it
    let undo = |done: &[Swapped]| {
        for (_, path, safety) in done {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::rename(safety, path);
        }
    };
    for (target, path, format) in plan {
        let safety = safety_of(&path);
        if let Err(e) = std::fs::rename(&path, &safety) {
            undo(&done);
            return Err(ServiceError::Invalid(format!("cannot keep {} as {}: {e}", path.display(), safety.display())));
        }
        done.push((target.clone(), path.clone(), safety));
        let fmt = if format.as_deref() == Some("qcow2") { DiskOutputFormat::Qcow2 } else { DiskOutputFormat::Raw };
        let r = DiskRestoreRequest { disk: &target, target: &path, format: fmt, cancel, no_follow: true };
        match boveda_engine::restore_disk(vault, &index, &point.tree, &r, progress) {
            Ok(o) if o.errors.is_empty() => {
                outcome.files += o.files;
                outcome.bytes_written += o.bytes_written;
            }
            Ok(o) => {
                undo(&done);
                return Err(ServiceError::Invalid(format!(
                    "disk {target} could not be restored ({}); the VM's disks are as they were",
                    o.errors.join("; ")
                )));
            }
            Err(e) => {
                undo(&done);
                return Err(e.into());
            }
        }
    }
    Ok((done, outcome))
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

/// What restoring a VM wrote.
#[derive(Debug, Clone, Serialize)]
pub struct VmRestore {
    pub domain: String,
    /// The definition written (none when the disks of the existing VM
    /// were replaced: its definition is kept).
    pub definition: Option<PathBuf>,
    pub disks: Vec<(String, PathBuf)>,
    #[serde(skip)]
    pub outcome: RestoreOutcome,
    /// Defined in libvirt (a new VM).
    pub defined: bool,
    pub started: bool,
    /// The disks a replace kept beside (`boveda recoverypoint safety-copies`).
    pub safety_copies: Vec<PathBuf>,
}

/// Restores a VM point as a new VM in `target_dir`: every disk as an image
/// file and a definition named `<domain>-restored` whose disks point at
/// them. The original VM and its disks are not touched.
///
/// # Errors
/// `Invalid` for a point without a definition; target and qemu-img errors.
pub fn restore_vm(
    vault: &Vault,
    point: &RecoveryPoint,
    target_dir: PathBuf,
    within: Option<&Path>,
    format: DiskOutputFormat,
    cancel: Option<&AtomicBool>,
    progress: &dyn RestoreProgress,
) -> Result<VmRestore> {
    restore_vm_as(vault, point, target_dir, within, format, None, cancel, progress)
}

/// [`restore_vm`] under the name `name` (none: `<domain>-restored`).
///
/// # Errors
/// As [`restore_vm`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn restore_vm_as(
    vault: &Vault,
    point: &RecoveryPoint,
    target_dir: PathBuf,
    within: Option<&Path>,
    format: DiskOutputFormat,
    name: Option<&str>,
    cancel: Option<&AtomicBool>,
    progress: &dyn RestoreProgress,
) -> Result<VmRestore> {
    let index = vault.load_index()?;
    let (domain, nvram, unread) = stored_vm(vault, &index, point)?;
    let held = Beneath::open(&target_dir, within)
        .map_err(|e| ServiceError::Invalid(format!("cannot create {}: {e}", target_dir.display())))?;
    let mut outcome = RestoreOutcome::default();
    outcome.warnings.extend(unread);
    // files are named after it: a name from the point is checked (a
    // registered host writes its definitions), the item's taken instead
    let new_name = match name {
        Some(n) => n.to_string(),
        None if check_vm_name(&domain.name).is_ok() => format!("{}-restored", domain.name),
        None => {
            outcome.warnings.push(format!(
                "the stored definition's name {:?} is not a VM name: the restored VM is named after the item",
                domain.name
            ));
            format!("{}-restored", point.item_name)
        }
    };
    check_vm_name(&new_name)?;
    let ext = if format == DiskOutputFormat::Qcow2 { "qcow2" } else { "img" };
    let mut disks = Vec::new();
    for d in &domain.disks {
        let file = format!("{new_name}-{}.{ext}", d.target);
        let path = target_dir.join(&file);
        let via = held.proc_path(&file);
        // the names are boveda's own: a link there is never followed
        let req = DiskRestoreRequest { disk: &d.target, target: &via, format, cancel, no_follow: true };
        let o = boveda_engine::restore_disk(vault, &index, &point.tree, &req, progress)?;
        outcome.files += o.files;
        outcome.bytes_written += o.bytes_written;
        outcome.errors.extend(o.errors);
        disks.push((d.target.clone(), path));
    }
    // the VM's own UEFI variables (its boot entries), in a file of the
    // copy's own
    let vars = match nvram.filter(|v| domain.hardware.uefi && boveda_engine::is_firmware_vars(v)) {
        Some(v) => {
            let file = format!("{new_name}_VARS.fd");
            let path = target_dir.join(&file);
            write_new_file(&held, &file, &v)
                .map_err(|e| ServiceError::Invalid(format!("cannot write {}: {e}", path.display())))?;
            outcome.other += 1;
            outcome.bytes_written += v.len() as u64;
            Some(path)
        }
        None => None,
    };
    let definition = target_dir.join(format!("{new_name}.xml"));
    let xml = domain.rewritten(&new_name, &disks, format.as_str(), vars.as_deref());
    write_new_file(&held, &format!("{new_name}.xml"), xml.as_bytes())
        .map_err(|e| ServiceError::Invalid(format!("cannot write {}: {e}", definition.display())))?;
    outcome.other += 1;
    Ok(VmRestore {
        domain: new_name,
        definition: Some(definition),
        disks,
        outcome,
        defined: false,
        started: false,
        safety_copies: Vec::new(),
    })
}

/// Writes `bytes` as the new file `name` in the held folder: a new inode
/// under a temporary name, renamed over whatever was there.
fn write_new_file(dir: &Beneath, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temp = format!(".boveda-restore-{name}");
    let fd = dir.fd();
    boveda_engine::beneath::clear_at(fd, std::ffi::OsStr::new(&temp))?;
    let flags = rustix::fs::OFlags::WRONLY
        | rustix::fs::OFlags::CREATE
        | rustix::fs::OFlags::EXCL
        | rustix::fs::OFlags::NOFOLLOW
        | rustix::fs::OFlags::CLOEXEC;
    let file = rustix::fs::openat(fd, temp.as_str(), flags, rustix::fs::Mode::from_raw_mode(0o644))?;
    std::fs::File::from(file).write_all(bytes)?;
    Ok(rustix::fs::renameat(fd, temp.as_str(), fd, name)?)
}

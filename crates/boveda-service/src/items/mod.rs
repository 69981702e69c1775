//! Protected items, stored as catalog records (`catalog/items/...`).

pub(crate) mod consistency;
pub(crate) mod live_vm;

use std::path::{Path, PathBuf};

use boveda_vault::{RecordId, Vault};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Remedy, Result, ServiceError, ServiceErrorKind};
use crate::items::consistency::ConsistencyConfig;
use crate::model::names::validate_item_name;

const ITEMS: &str = boveda_vault::ITEMS_KIND;

/// What an item protects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ItemSource {
    Files {
        paths: Vec<PathBuf>,
        excludes: Vec<String>,
    },
    /// A raw or qcow2 image file, or a block device.
    Disk {
        path: PathBuf,
    },
    /// A libvirt domain: its definition file and every disk it names.
    Vm {
        domain_xml: PathBuf,
        domain: String,
        disks: Vec<(String, PathBuf)>,
        /// The QMP monitor socket of the VM's QEMU, for backups while it
        /// runs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        qmp: Option<PathBuf>,
        /// The socket of the VM's guest agent channel, when it is not the
        /// one the definition names.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guest_agent: Option<PathBuf>,
    },
}

impl ItemSource {
    pub fn type_name(&self) -> &'static str {
        match self {
            ItemSource::Files { .. } => "files",
            ItemSource::Disk { .. } => "disk",
            ItemSource::Vm { .. } => "vm",
        }
    }
}

/// Where an item stands, in Azure Backup's words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtectionState {
    /// Registered, no policy: backups only on demand.
    #[default]
    NotProtected,
    /// A policy schedules its backups and keeps its points.
    Protected,
    /// No more backups; every point is kept until deleted.
    Stopped,
    /// Backup data deleted: recoverable with `protection undelete` until
    /// the purge time, then purged by prune.
    SoftDeleted,
}

impl ProtectionState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ProtectionState::NotProtected => "Not protected",
            ProtectionState::Protected => "Protected",
            ProtectionState::Stopped => "Protection stopped, data retained",
            ProtectionState::SoftDeleted => "Soft deleted",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protection {
    pub state: ProtectionState,
    /// The policy, while protected (and kept when stopped, for `resume`).
    pub policy: Option<RecordId>,
    /// When the current protection began: no scheduled slot before it runs.
    pub since: Option<Timestamp>,
    pub deleted_at: Option<Timestamp>,
    pub purge_after: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: RecordId,
    pub name: String,
    pub source: ItemSource,
    pub created: Timestamp,
    /// Pre/post snapshot scripts (disk and VM items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<ConsistencyConfig>,
    #[serde(default)]
    pub protection: Protection,
    /// The registered host the item lives on (docs/FLEET.md); none for an
    /// item of the machine that opens the vault itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<RecordId>,
    /// How its points are verified (`boveda recoverypoint verify --save`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<crate::model::verify_settings::VerifySettings>,
}

/// Writes an item's new revision.
///
/// # Errors
/// A store error.
pub fn save_item(vault: &Vault, item: &Item) -> Result<()> {
    vault.catalog_put(ITEMS, &item.id, Some(item))?;
    Ok(())
}

/// Changes an item's record as it is in the store now, by compare-and-swap
/// (see `Vault::catalog_update`): changes two processes make to one item at
/// once are both kept. Returns the item written.
///
/// # Errors
/// `NotFound` when the item was removed; a store error.
pub fn update_item(vault: &Vault, id: &RecordId, change: impl Fn(&mut Item)) -> Result<Item> {
    let written = vault.catalog_update(ITEMS, id, |current: Option<Item>| {
        let mut item = current.ok_or_else(|| boveda_vault::VaultError::NotFound(format!("item {id}")))?;
        change(&mut item);
        Ok(Some(item))
    })?;
    written.ok_or_else(|| ServiceError::NotFound(format!("item {id}")))
}

/// Removes an item's record (a tombstone): purge only.
///
/// # Errors
/// A store error.
pub(crate) fn remove_item(vault: &Vault, item: &Item) -> Result<()> {
    vault.catalog_put::<Item>(ITEMS, &item.id, None)?;
    Ok(())
}

/// Every item of the vault, by name.
///
/// # Errors
/// A store error or a damaged record.
pub fn list_items(vault: &Vault) -> Result<Vec<Item>> {
    let mut items: Vec<Item> = vault.catalog_list::<Item>(ITEMS)?.into_iter().map(|(_, i)| i).collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(items)
}

/// Finds an item by name (case-insensitive) or id prefix.
///
/// # Errors
/// `NotFound` naming the item.
pub fn find_item(vault: &Vault, name_or_id: &str) -> Result<Item> {
    let items = list_items(vault)?;
    if let Some(i) = items.iter().find(|i| i.name.eq_ignore_ascii_case(name_or_id)) {
        return Ok(i.clone());
    }
    let by_id: Vec<_> =
        items.iter().filter(|i| name_or_id.len() >= 4 && i.id.to_hex().starts_with(name_or_id)).collect();
    match by_id.as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(ServiceError::refused(
            ServiceErrorKind::NotFound,
            format!("no item named {name_or_id:?} in this vault"),
            Remedy::ListItems,
        )),
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| ServiceError::Invalid(format!("cannot resolve {}: {e}", p.display())))?
            .join(p)
    };
    // Resolve `.`/`..` and symlinked parents, but keep a symlink named as a source as itself.
    let name = abs.file_name().map(|n| n.to_os_string());
    let parent = abs.parent().filter(|_| name.is_some());
    let resolved = match (parent, name) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent).map(|p| p.join(name)),
        _ => std::fs::canonicalize(&abs),
    };
    let resolved =
        resolved.map_err(|_| ServiceError::Invalid(format!("source path {} does not exist", p.display())))?;
    if std::fs::symlink_metadata(&resolved).is_err() {
        return Err(ServiceError::Invalid(format!("source path {} does not exist", p.display())));
    }
    Ok(resolved)
}

fn check_new_name(vault: &Vault, name: &str) -> Result<()> {
    validate_item_name(name)?;
    if list_items(vault)?.iter().any(|i| i.name.eq_ignore_ascii_case(name)) {
        return Err(ServiceError::Conflict(format!("an item named {name:?} already exists in this vault")));
    }
    Ok(())
}

/// Records a new item whose source was checked by the caller (a
/// registered host's item, whose paths are the host's).
///
/// # Errors
/// `Invalid` for a bad name; `Conflict` when the name is taken.
pub(crate) fn add_item_record(vault: &Vault, name: &str, source: ItemSource) -> Result<Item> {
    check_new_name(vault, name)?;
    save_new(vault, name, source)
}

fn save_new(vault: &Vault, name: &str, source: ItemSource) -> Result<Item> {
    save_new_with(vault, name, source, None)
}

fn save_new_with(
    vault: &Vault,
    name: &str,
    source: ItemSource,
    consistency: Option<ConsistencyConfig>,
) -> Result<Item> {
    let item = Item {
        id: RecordId::random(),
        name: name.to_string(),
        source,
        created: Timestamp::now(),
        consistency,
        protection: Protection::default(),
        host: None,
        verify: None,
    };
    save_item(vault, &item)?;
    Ok(item)
}

/// Registers a disk item: a raw or qcow2 image file, or a block device.
///
/// # Errors
/// `Invalid` for a bad name or an image that is missing, unreadable or an
/// unsupported qcow2; `Conflict` when the name is taken.
pub fn add_disk_item(vault: &Vault, name: &str, path: &Path, consistency: Option<ConsistencyConfig>) -> Result<Item> {
    check_new_name(vault, name)?;
    let abs = absolute(path)?;
    boveda_engine::DiskImage::open(&abs)?;
    save_new_with(vault, name, ItemSource::Disk { path: abs }, consistency)
}

/// A domain's disks, each checked to be a readable image.
///
/// # Errors
/// `Invalid` naming the domain file or the missing disk.
pub fn domain_disks(domain: &boveda_engine::Domain, file: &Path) -> Result<Vec<(String, PathBuf)>> {
    if domain.disks.is_empty() {
        return Err(ServiceError::Invalid(format!(
            "domain {} in {} names no file or block disk",
            domain.name,
            file.display()
        )));
    }
    let mut out = Vec::new();
    for d in &domain.disks {
        boveda_engine::DiskImage::open(&d.path).map_err(|e| {
            ServiceError::Invalid(format!("domain {} ({}), disk {}: {e}", domain.name, file.display(), d.target))
        })?;
        out.push((d.target.clone(), d.path.clone()));
    }
    Ok(out)
}

/// Registers a VM item from its libvirt domain definition.
///
/// # Errors
/// `Invalid` for a malformed definition or a disk that is missing or
/// unreadable; `Conflict` when the name is taken.
pub fn add_vm_item(
    vault: &Vault,
    name: &str,
    domain_xml: &Path,
    qmp: Option<&Path>,
    guest_agent: Option<&Path>,
    consistency: Option<ConsistencyConfig>,
) -> Result<Item> {
    check_new_name(vault, name)?;
    let file = absolute(domain_xml)?;
    let domain = boveda_engine::Domain::load(&file)?;
    let qmp = qmp.map(absolute).transpose()?;
    let guest_agent = guest_agent.map(absolute).transpose()?;
    if guest_agent.is_some() && qmp.is_none() && domain.qmp.is_none() {
        return Err(ServiceError::Invalid(format!(
            "VM item {name}: a guest agent freezes a running VM for its live snapshot, which needs the VM's QMP monitor too"
        )));
    }
    // a running VM holds its disks: they are checked through its monitor;
    // a VM shut off is checked as files
    let disks = match crate::items::live_vm::find_running(qmp.as_deref(), guest_agent.as_deref(), &domain) {
        Some(vm) => crate::items::live_vm::check_running(&vm, &domain)?,
        None => domain_disks(&domain, &file)?,
    };
    save_new_with(
        vault,
        name,
        ItemSource::Vm { domain_xml: file, domain: domain.name.clone(), disks, qmp, guest_agent },
        consistency,
    )
}

/// One domain found by `item discover`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiscoveredVm {
    pub domain: String,
    pub definition: PathBuf,
    pub disks: Vec<(String, PathBuf)>,
    /// The item protecting it, if any.
    pub item: Option<String>,
    /// Why it cannot be protected as it is, if so.
    pub problem: Option<String>,
}

/// Lists the libvirt domains defined in a folder (`*.xml`), with the
/// item protecting each.
///
/// # Errors
/// `Invalid` when the folder cannot be read.
pub fn discover_vms(vault: &Vault, dir: &Path) -> Result<Vec<DiscoveredVm>> {
    let items = list_items(vault)?;
    let mut found = domains_in(dir)?;
    for vm in &mut found {
        let item = items
            .iter()
            .find(|i| matches!(&i.source, ItemSource::Vm { domain_xml, .. } if *domain_xml == vm.definition));
        vm.item = item.map(|i| i.name.clone());
    }
    Ok(found)
}

/// The libvirt domains defined in a folder (`*.xml`), each with its disks
/// or why it cannot be protected as it is.
///
/// # Errors
/// `Invalid` when the folder cannot be read.
pub fn domains_in(dir: &Path) -> Result<Vec<DiscoveredVm>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ServiceError::Invalid(format!("cannot read libvirt folder {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    Ok(files
        .into_iter()
        .map(|file| match boveda_engine::Domain::load(&file) {
            Ok(d) => {
                let disks: Vec<(String, PathBuf)> =
                    d.disks.iter().map(|x| (x.target.clone(), x.path.clone())).collect();
                let problem = domain_disks(&d, &file).err().map(|e| e.to_string());
                DiscoveredVm { domain: d.name.clone(), definition: file, disks, item: None, problem }
            }
            Err(e) => DiscoveredVm {
                domain: String::new(),
                definition: file,
                disks: vec![],
                item: None,
                problem: Some(e.to_string()),
            },
        })
        .collect())
}

/// Registers a file-tree item.
///
/// # Errors
/// `Invalid` for a bad name, no path, a missing path or a bad exclude;
/// `Conflict` when the name is taken.
pub fn add_files_item(vault: &Vault, name: &str, paths: &[PathBuf], excludes: &[String]) -> Result<Item> {
    check_new_name(vault, name)?;
    if paths.is_empty() {
        return Err(ServiceError::field_error("paths", "a files item needs at least one path"));
    }
    boveda_engine::Excludes::new(excludes)?;
    let mut abs = paths.iter().map(|p| absolute(p)).collect::<Result<Vec<_>>>()?;
    abs.sort();
    abs.dedup();
    save_new(vault, name, ItemSource::Files { paths: abs, excludes: excludes.to_vec() })
}

/// A new item as a client gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum NewItem {
    /// Files and folders.
    Files {
        name: String,
        paths: Vec<PathBuf>,
        #[serde(default)]
        excludes: Vec<String>,
        /// The registered host the files are on (none: this machine).
        #[serde(default)]
        host: Option<String>,
    },
    /// A disk image or block device.
    Disk {
        name: String,
        path: PathBuf,
        #[serde(default)]
        host: Option<String>,
    },
    /// A virtual machine by its libvirt definition.
    Vm {
        name: String,
        definition: PathBuf,
        #[serde(default)]
        qmp: Option<PathBuf>,
        #[serde(default)]
        guest_agent: Option<PathBuf>,
        /// The registered host the VM runs on (none: this machine).
        #[serde(default)]
        host: Option<String>,
    },
}

impl NewItem {
    /// The registered host it is on, if any.
    pub fn host(&self) -> Option<&str> {
        match self {
            NewItem::Files { host, .. } | NewItem::Disk { host, .. } | NewItem::Vm { host, .. } => host.as_deref(),
        }
    }
}

/// Adds an item of any kind of this machine (`crate::fleet::add_item`
/// adds one of a registered host).
///
/// # Errors
/// As [`add_files_item`], [`add_disk_item`], [`add_vm_item`].
/// Checks a new item as adding it would, without adding it: its name (valid,
/// free) and, for an item of this machine, that its paths are absolute and
/// exist, its excludes parse and its image opens. The configure-backup
/// wizard asks this when its items step is left.
///
/// # Errors
/// As adding the item would fail.
pub fn check_new_item(vault: &Vault, req: &NewItem) -> Result<()> {
    let (name, host) = match req {
        NewItem::Files { name, host, .. } | NewItem::Disk { name, host, .. } | NewItem::Vm { name, host, .. } => {
            (name, host)
        }
    };
    check_new_name(vault, name).map_err(|e| ServiceError::field_error("name", e))?;
    let must_be_absolute = |p: &Path| {
        if p.is_absolute() {
            Ok(())
        } else {
            Err(ServiceError::field_error("paths", format!("{} is not an absolute path", p.display())))
        }
    };
    match req {
        NewItem::Files { paths, excludes, .. } => {
            if paths.is_empty() {
                return Err(ServiceError::field_error("paths", "a files item needs at least one path"));
            }
            boveda_engine::Excludes::new(excludes).map_err(|e| ServiceError::field_error("excludes", e))?;
            for p in paths {
                must_be_absolute(p)?;
                if host.is_none() {
                    absolute(p).map_err(|e| ServiceError::field_error("paths", e))?;
                }
            }
        }
        NewItem::Disk { path, .. } => {
            must_be_absolute(path)?;
            if host.is_none() {
                boveda_engine::DiskImage::open(path).map_err(|e| ServiceError::field_error("paths", e))?;
            }
        }
        NewItem::Vm { definition, .. } => must_be_absolute(definition)?,
    }
    Ok(())
}

pub(crate) fn add_local_item(vault: &Vault, req: &NewItem) -> Result<Item> {
    match req {
        NewItem::Files { name, paths, excludes, .. } => add_files_item(vault, name, paths, excludes),
        NewItem::Disk { name, path, .. } => add_disk_item(vault, name, path, None),
        NewItem::Vm { name, definition, qmp, guest_agent, .. } => {
            add_vm_item(vault, name, definition, qmp.as_deref(), guest_agent.as_deref(), None)
        }
    }
}

//! Protected items, stored as catalog records (`catalog/items/...`).

use std::path::{Path, PathBuf};

use boveda_vault::{RecordId, Vault};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};
use crate::names::validate_item_name;

const ITEMS: &str = "items";

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
}

impl ItemSource {
    pub fn type_name(&self) -> &'static str {
        match self {
            ItemSource::Files { .. } => "files",
            ItemSource::Disk { .. } => "disk",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: RecordId,
    pub name: String,
    pub source: ItemSource,
    pub created: Timestamp,
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
        _ => {
            Err(ServiceError::NotFound(format!("no item named {name_or_id:?} in this vault (see `boveda item list`)")))
        }
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

fn save_new(vault: &Vault, name: &str, source: ItemSource) -> Result<Item> {
    let item = Item { id: RecordId::random(), name: name.to_string(), source, created: Timestamp::now() };
    vault.catalog_put(ITEMS, &item.id, Some(&item))?;
    Ok(item)
}

/// Registers a disk item: a raw or qcow2 image file, or a block device.
///
/// # Errors
/// `Invalid` for a bad name or an image that is missing, unreadable or an
/// unsupported qcow2; `Conflict` when the name is taken.
pub fn add_disk_item(vault: &Vault, name: &str, path: &Path) -> Result<Item> {
    check_new_name(vault, name)?;
    let abs = absolute(path)?;
    boveda_engine::DiskImage::open(&abs)?;
    save_new(vault, name, ItemSource::Disk { path: abs })
}

/// Registers a file-tree item.
///
/// # Errors
/// `Invalid` for a bad name, no path, a missing path or a bad exclude;
/// `Conflict` when the name is taken.
pub fn add_files_item(vault: &Vault, name: &str, paths: &[PathBuf], excludes: &[String]) -> Result<Item> {
    check_new_name(vault, name)?;
    if paths.is_empty() {
        return Err(ServiceError::Invalid("a files item needs at least one --path".into()));
    }
    boveda_engine::Excludes::new(excludes)?;
    let mut abs = paths.iter().map(|p| absolute(p)).collect::<Result<Vec<_>>>()?;
    abs.sort();
    abs.dedup();
    save_new(vault, name, ItemSource::Files { paths: abs, excludes: excludes.to_vec() })
}

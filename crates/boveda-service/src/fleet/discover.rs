//! What a registered host shows of itself for "configure backup": the
//! entries of one of its folders (folders, files, disk images, links) and
//! the libvirt VMs defined on it, read on the host when the server asks
//! (the server cannot see a host's files). The host answers what it
//! finds, as it is: names are shown as text, never run or followed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::items::DiscoveredVm;

/// Entries of one folder a host lists, at most.
pub const MAX_ENTRIES: usize = 1000;

/// Where the server asks a host to look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoverOrder {
    /// The folder to list (absolute).
    pub path: PathBuf,
    /// The folder of libvirt definitions (default `/etc/libvirt/qemu`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt_dir: Option<PathBuf>,
}

/// One entry of a host's folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundEntry {
    pub name: String,
    /// `dir`, `file`, `link` or `other`.
    pub kind: String,
    pub size: u64,
    /// A file that looks like a disk image (raw, qcow2, vmdk, vdi).
    #[serde(default)]
    pub disk_image: bool,
}

/// What a host found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Discovery {
    pub host: String,
    pub path: PathBuf,
    pub entries: Vec<FoundEntry>,
    /// More entries than [`MAX_ENTRIES`]: the first ones by name.
    #[serde(default)]
    pub truncated: bool,
    /// Why the folder could not be listed.
    #[serde(default)]
    pub error: Option<String>,
    pub libvirt_dir: PathBuf,
    pub vms: Vec<DiscoveredVm>,
    #[serde(default)]
    pub vms_error: Option<String>,
}

const DEFAULT_LIBVIRT_DIR: &str = "/etc/libvirt/qemu";

fn looks_like_disk_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["img", "raw", "qcow2", "vmdk", "vdi", "iso"].iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Lists what `order` asks for, here.
pub fn discover_here(host: &str, order: &DiscoverOrder) -> Discovery {
    let libvirt_dir = order.libvirt_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_LIBVIRT_DIR));
    let mut out = Discovery { host: host.to_string(), path: order.path.clone(), libvirt_dir, ..Discovery::default() };
    if order.path.is_absolute() {
        match list(&order.path) {
            Ok((entries, truncated)) => (out.entries, out.truncated) = (entries, truncated),
            Err(e) => out.error = Some(format!("cannot list {}: {e}", order.path.display())),
        }
    } else {
        out.error = Some(format!("{} is not an absolute path", order.path.display()));
    }
    match crate::items::domains_in(&out.libvirt_dir) {
        Ok(vms) => out.vms = vms,
        Err(e) => out.vms_error = Some(e.to_string()),
    }
    out
}

fn list(dir: &Path) -> std::io::Result<(Vec<FoundEntry>, bool)> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // not followed: a link is shown as one
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        let kind = if meta.is_dir() {
            "dir"
        } else if meta.is_file() {
            "file"
        } else if meta.file_type().is_symlink() {
            "link"
        } else {
            "other"
        };
        let disk_image = meta.is_file() && looks_like_disk_image(&entry.path());
        let name = entry.file_name().to_string_lossy().into_owned();
        entries.push(FoundEntry { name, kind: kind.into(), size: meta.len(), disk_image });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    let truncated = entries.len() > MAX_ENTRIES;
    entries.truncate(MAX_ENTRIES);
    Ok((entries, truncated))
}

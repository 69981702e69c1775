//! A VM on a registered host, backed up there. While it runs (its QEMU
//! monitor answers): a snapshot of all its disks at one instant, the guest
//! frozen through its agent for that instant when it has one, read
//! incrementally by the dirty bitmap the host's last point of it started
//! (the host keeps that bitmap's name in its cache, since it cannot read
//! its points). When it is off: its disk files as its definition names
//! them. Either way the definition is stored in the point beside the
//! disks, as on the server's own machine.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use boveda_engine::{
    BackupDest, BackupProgress, DiskBackupOptions, DiskSource, Domain, FileBackupOutcome, backup_disk_to,
};
use boveda_vault::{ChunkId, RecordId};

use crate::error::{Result, ServiceError};
use crate::fleet::protocol::LiveClaim;
use crate::items::live_vm::{back_up_snapshot, find_running, start_quiesced};

/// A VM item's sources on the host.
pub(crate) struct HostVm<'a> {
    pub definition: &'a Path,
    pub qmp: Option<&'a Path>,
    pub guest_agent: Option<&'a Path>,
}

impl HostVm<'_> {
    /// Backs the VM up into `dest`; what a live backup adds to the point.
    ///
    /// # Errors
    /// A definition that does not read, a disk that cannot be read, a
    /// monitor that refuses the snapshot; the engine's errors.
    pub(crate) fn backup(
        &self,
        dest: BackupDest<'_>,
        previous: Option<&str>,
        parent_tree: Option<ChunkId>,
        cancel: &AtomicBool,
        progress: &dyn BackupProgress,
    ) -> Result<(FileBackupOutcome, Option<LiveClaim>)> {
        let domain = Domain::load(self.definition)?;
        let (files, warnings) = crate::protection::vm_files(&domain);
        let Some(vm) = find_running(self.qmp, self.guest_agent, &domain) else {
            let disks = crate::items::domain_disks(&domain, self.definition)?;
            let opts = DiskBackupOptions {
                disks: disks.into_iter().map(|(name, path)| (name, DiskSource::Image(path))).collect(),
                extra_files: files,
                parent_tree,
                cancel: Some(cancel),
            };
            let mut outcome = backup_disk_to(dest, &opts, progress)?;
            outcome.warnings.extend(warnings);
            return Ok((outcome, None));
        };
        // the item's scripts run on the server's own machine only: a
        // host's VM is quiesced through its guest agent
        let quiesced = start_quiesced(&vm, &domain, previous, None)?;
        let (mut outcome, live) =
            back_up_snapshot(quiesced, files, parent_tree, Some(cancel), |opts| backup_disk_to(dest, opts, progress))?;
        outcome.warnings.extend(warnings);
        Ok((outcome, Some(live)))
    }
}

fn bitmap_file(cache: &Path, item: &RecordId) -> PathBuf {
    cache.join("items").join(format!("{}.bitmap", item.to_hex()))
}

/// The dirty bitmap the host's last point of the VM started, if it was
/// live.
pub(crate) fn last_bitmap(cache: &Path, item: &RecordId) -> Option<String> {
    let text = std::fs::read_to_string(bitmap_file(cache, item)).ok()?;
    let name = text.trim();
    valid_bitmap(name).then(|| name.to_string())
}

/// Remembers the bitmap a point started (none: a backup from the files,
/// after which the next live one reads in full).
///
/// # Errors
/// The cache cannot be written.
pub(crate) fn remember_bitmap(cache: &Path, item: &RecordId, bitmap: Option<&str>) -> Result<()> {
    let file = bitmap_file(cache, item);
    match bitmap {
        Some(b) => boveda_engine::drive_files::write_atomically(&file, b.as_bytes())?,
        None => match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ServiceError::Io { path: file, source }),
        },
    }
    Ok(())
}

/// A bitmap name as boveda makes them: what a host may claim.
pub fn valid_bitmap(name: &str) -> bool {
    name.starts_with("boveda-")
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

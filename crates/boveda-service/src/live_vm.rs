//! Backups of a VM while it runs: a snapshot of all its disks at one
//! instant through its QEMU's monitor, read over NBD (see
//! `boveda_engine::live`), incremental by the dirty bitmap the previous
//! live backup started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use boveda_engine::live::{self, LiveDisk};
use boveda_engine::qmp::QmpClient;
use boveda_engine::{DiskSource, Domain, LiveSource};
use boveda_vault::RecordId;

use crate::error::{Result, ServiceError};

/// The temporary folders of live backups: `boveda-live-<pid>-<bitmap>`,
/// holding the snapshot's temporary images and NBD socket.
const WORK_PREFIX: &str = "boveda-live-";

/// Removes the temporary folders of live backups whose process is gone
/// (killed): their images held the blocks the guest overwrote.
fn remove_stale_work() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(WORK_PREFIX).and_then(|r| r.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// How long the monitor may take to answer.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(60);

fn unreachable_monitor(socket: &Path, domain: &Domain, e: &std::io::Error) -> ServiceError {
    ServiceError::Invalid(format!(
        "VM {}: its QEMU monitor {} does not answer ({e}): is the VM running, and is that its QMP socket?",
        domain.name,
        socket.display()
    ))
}

fn connect(socket: &Path, domain: &Domain) -> Result<QmpClient> {
    QmpClient::connect(socket, MONITOR_TIMEOUT).map_err(|e| unreachable_monitor(socket, domain, &e))
}

fn disk_files(domain: &Domain) -> Vec<(String, PathBuf)> {
    domain.disks.iter().map(|d| (d.target.clone(), d.path.clone())).collect()
}

/// Checks that the VM behind `socket` runs with every disk of `domain`;
/// the disks as an item records them.
///
/// # Errors
/// `Invalid` naming the VM: the monitor does not answer, or a disk is not
/// one the VM has open.
pub(crate) fn check_running(socket: &Path, domain: &Domain) -> Result<Vec<(String, PathBuf)>> {
    let mut qmp = connect(socket, domain)?;
    let files = disk_files(domain);
    live::find_disks(&mut qmp, &files).map_err(|e| ServiceError::Invalid(format!("VM {}: {e}", domain.name)))?;
    Ok(files)
}

/// A live backup in progress: the snapshot, and the monitor that ends it.
pub(crate) struct LiveBackup {
    qmp: QmpClient,
    snapshot: live::Snapshot,
    pub disks: Vec<(String, DiskSource)>,
    /// Why the disks are read in full, when they are.
    pub warning: Option<String>,
}

impl LiveBackup {
    /// Cleans what an earlier, killed backup left in the VM, and takes
    /// the snapshot; `previous` is the bitmap the parent point started.
    ///
    /// # Errors
    /// `Invalid` naming the VM for a monitor that does not answer, a disk
    /// it does not have open, or a snapshot QEMU refuses.
    pub(crate) fn start(socket: &Path, domain: &Domain, previous: Option<&str>) -> Result<Self> {
        let mut qmp = connect(socket, domain)?;
        let fail = |e: std::io::Error| ServiceError::Invalid(format!("VM {}: live snapshot: {e}", domain.name));
        live::clean_leftovers(&mut qmp).map_err(fail)?;
        remove_stale_work();
        let found: Vec<LiveDisk> = live::find_disks(&mut qmp, &disk_files(domain)).map_err(fail)?;
        let new_bitmap = format!("{}{}", live::PREFIX, &RecordId::random().to_hex()[..16]);
        let work = std::env::temp_dir().join(format!("{WORK_PREFIX}{}-{}", std::process::id(), &new_bitmap));
        let snapshot = live::take(&mut qmp, &found, &work, previous, &new_bitmap).map_err(fail)?;
        let warning = match (previous, &snapshot.since_previous) {
            (Some(_), Some(_)) | (None, _) => None,
            (Some(p), None) => Some(format!(
                "the VM's dirty bitmap {p} is gone (the VM restarted?): every disk was read in full, and a new bitmap started"
            )),
        };
        let disks = snapshot
            .exports
            .iter()
            .map(|(d, export)| {
                let source = LiveSource {
                    socket: snapshot.socket.clone(),
                    export: export.clone(),
                    changed_since_parent: snapshot.since_previous.clone(),
                };
                (d.target.clone(), DiskSource::Live(source))
            })
            .collect();
        Ok(Self { qmp, snapshot, disks, warning })
    }

    /// The bitmap this backup started (recorded in its point).
    pub(crate) fn new_bitmap(&self) -> String {
        self.snapshot.new_bitmap.clone()
    }

    /// Removes everything the backup added to the VM; keeps the new bitmap
    /// when the backup `succeeded`.
    ///
    /// # Errors
    /// `Invalid` when the monitor fails the cleanup (the next backup
    /// cleans what is left).
    pub(crate) fn finish(mut self, succeeded: bool) -> Result<()> {
        live::finish(&mut self.qmp, &self.snapshot, succeeded)
            .map_err(|e| ServiceError::Invalid(format!("live snapshot cleanup: {e}")))
    }
}

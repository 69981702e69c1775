//! Offline seeding's drives as files: reading a drive's label and journal,
//! appending to a journal, drive keys. `diskprep` (sealing a staged seed
//! onto drives) and `import` (checking and uploading it where the store is
//! reachable) build on these; the bytes on a drive are
//! `boveda_vault::drive_format`.
//!
//! A drive (a mounted file system, or any folder) holds:
//! - `boveda-drive.json`: the drive's id, its import job (name and id) and
//!   the vault's id;
//! - `objects/<name>`: each vault object sealed under the drive's key in
//!   segments of 1 MiB (AES-256-GCM; the import job's id, the name, the
//!   segment's index and whether it is the last as associated data, so
//!   nothing moved to another name, job or position, or cut off, opens);
//! - `journal.jsonl`: one line per object, appended once it is on the
//!   drive: name, size and BLAKE3 checksum of the vault object, and the
//!   import job.
//!
//! The staging folder keeps a copy of every drive's journal
//! (`drives/<id>.jsonl`) and the drives' keys (`drives/<id>.key`), so a
//! re-run knows what is placed even on drives it is not given again, and
//! continues where the last run stopped.

use std::io::Write;
use std::path::Path;

use boveda_store::Store;
use boveda_vault::drive_format::{DRIVE_FORMAT, DRIVE_LABEL, DriveLabel, JournalEntry};
use jiff::Timestamp;

use crate::error::{Result, ServiceError};
use crate::offline::{DriveRecord, DriveState, ImportJob, ImportState, update_import_job};

pub(super) fn io_err(what: &Path, e: std::io::Error) -> ServiceError {
    ServiceError::Invalid(format!("{}: {e}", what.display()))
}

pub(super) fn read_label(drive: &Path) -> Result<Option<DriveLabel>> {
    match std::fs::read(drive.join(DRIVE_LABEL)) {
        Ok(bytes) => {
            let label: DriveLabel = serde_json::from_slice(&bytes).map_err(|e| {
                ServiceError::Invalid(format!("drive {}: {DRIVE_LABEL} does not parse: {e}", drive.display()))
            })?;
            if label.format != DRIVE_FORMAT {
                return Err(ServiceError::Invalid(format!(
                    "drive {} ({}) is in drive format {}, this boveda reads format {DRIVE_FORMAT}: prepare it again with this version",
                    label.drive_id,
                    drive.display(),
                    label.format
                )));
            }
            Ok(Some(label))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(drive, e)),
    }
}

/// The entries of a journal; a last line cut short by a kill is ignored.
pub(super) fn read_journal(path: &Path) -> Result<Vec<JournalEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path, e)),
    };
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// Appends a journal line. Its object is durable before it; the line
/// itself is synced at the end of the run (a line lost in a crash only
/// makes the re-run copy its object again).
pub(super) fn append_line(path: &Path, entry: &JournalEntry) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)
}

/// `n` random bytes as hex (`n` up to 32).
pub(super) fn random_hex(n: usize) -> String {
    let hex = format!("{}{}", boveda_vault::RecordId::random().to_hex(), boveda_vault::RecordId::random().to_hex());
    hex[..2 * n.min(32)].to_string()
}

pub(super) fn parse_key(hex: &str) -> Option<[u8; 32]> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    bytes.try_into().ok()
}

/// Records the drives in the import job (`Creating`, drives `Specified`).
pub(super) fn record_drives(store: &dyn Store, name: &str, state_dir: &Path) -> Result<ImportJob> {
    let mut drives = Vec::new();
    for entry in std::fs::read_dir(state_dir).map_err(|e| io_err(state_dir, e))?.flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "key")
            && let Some(id) = p.file_stem().map(|s| s.to_string_lossy().to_string())
        {
            let key = std::fs::read_to_string(&p).map_err(|e| io_err(&p, e))?.trim().to_string();
            let entries = read_journal(&state_dir.join(format!("{id}.jsonl")))?;
            drives.push(DriveRecord {
                id,
                key,
                state: DriveState::Specified,
                objects: entries.len() as u64,
                bytes: entries.iter().map(|e| e.size).sum(),
                problems: Vec::new(),
            });
        }
    }
    // a drive labelled but given nothing holds no part of the seed
    drives.retain(|d| d.objects > 0);
    drives.sort_by(|a, b| a.id.cmp(&b.id));
    let now = Timestamp::now();
    update_import_job(store, name, |j| {
        j.state = ImportState::Creating;
        j.drives.clone_from(&drives);
        j.note(
            now,
            format!(
                "{} drive(s) prepared: {}",
                drives.len(),
                drives.iter().map(|d| d.id.as_str()).collect::<Vec<_>>().join(", ")
            ),
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drive_of_another_drive_format_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let label = DriveLabel {
            format: 1,
            drive_id: "0a1b2c3d".into(),
            import_job: "seed".into(),
            import_job_id: "00".into(),
            vault_id: "00".into(),
            key_check: String::new(),
        };
        std::fs::write(dir.path().join(DRIVE_LABEL), serde_json::to_vec(&label).expect("json")).expect("write");
        let err = read_label(dir.path()).expect_err("format 1").to_string();
        assert!(err.contains("drive 0a1b2c3d") && err.contains("drive format 1"), "{err}");
    }
}

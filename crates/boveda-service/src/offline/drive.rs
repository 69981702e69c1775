//! The drives of an import job as the control plane keeps them: drive ids
//! and keys, and the job's record of its drives. The files on a drive
//! (label, journal, sealed objects) are `boveda_engine::drive_files`; the
//! bytes are `boveda_vault::drive_format`.
//!
//! The staging folder keeps a copy of every drive's journal
//! (`drives/<id>.jsonl`) and the drives' keys (`drives/<id>.key`), so a
//! re-run knows what is placed even on drives it is not given again, and
//! continues where the last run stopped.

use std::path::Path;

use boveda_engine::drive_files::read_journal;
use boveda_store::Store;
use jiff::Timestamp;

use crate::error::{Result, ServiceError};
use crate::offline::{DriveRecord, DriveState, ImportJob, ImportState, update_import_job};

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
    for entry in std::fs::read_dir(state_dir).map_err(|e| ServiceError::io(state_dir, e))?.flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "key")
            && let Some(id) = p.file_stem().map(|s| s.to_string_lossy().to_string())
        {
            let key = std::fs::read_to_string(&p).map_err(|e| ServiceError::io(&p, e))?.trim().to_string();
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

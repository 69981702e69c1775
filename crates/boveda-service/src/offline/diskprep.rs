//! `diskprep`: seals a staged seed onto drives, as many as it takes,
//! resuming where an earlier run stopped (see `drive`).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use boveda_engine::drive_files::{self, LockError, PlaceError, Placement};
use boveda_store::Store;
use boveda_vault::DriveSealer;
use boveda_vault::drive_format::{
    DRIVE_FORMAT, DRIVE_JOURNAL, DRIVE_LABEL, DRIVE_OBJECTS, DriveLabel, JournalEntry, key_check, sealed_len,
};
use serde::Serialize;

use super::drive::{parse_key, random_hex, record_drives};
use crate::error::{Result, ServiceError};
use crate::offline::{ImportJob, ImportState, StagedObject, StagingJournal, find_import_job, read_staging_journal};

/// Held (flock) by a diskprep in the staging folder's `drives/` and on
/// each drive it writes.
const DISKPREP_LOCK: &str = "diskprep.lock";
/// Objects diskprep reads, seals and writes at once.
const DISKPREP_PARALLEL: usize = 4;

/// A drive given to diskprep, as it was filled.
#[derive(Debug, Clone, Serialize)]
pub struct PreparedDrive {
    pub id: String,
    pub path: PathBuf,
    /// Shown once, when the drive is first labelled.
    pub key: Option<String>,
    pub objects: u64,
    pub bytes: u64,
}

/// What a diskprep run did.
#[derive(Debug, Clone, Serialize)]
pub struct DiskprepReport {
    pub import_job: String,
    pub drives: Vec<PreparedDrive>,
    /// Objects and bytes copied by this run.
    pub copied: u64,
    pub copied_bytes: u64,
    /// Objects and bytes that still need a drive (0 when done).
    pub remaining: u64,
    pub remaining_bytes: u64,
    /// Where the drives go (`vault update --shipping-address`).
    pub shipping_address: Option<String>,
}

/// A drive as diskprep uses it.
struct Slot {
    id: String,
    path: PathBuf,
    key: [u8; 32],
    shown_key: Option<String>,
    used: u64,
    room: u64,
    objects: u64,
    bytes: u64,
}

/// `offline diskprep`: seals the staged seed of an import job onto drives.
/// A drive's capacity is its free space, or `capacity` when given (tests).
/// When the drives are full before the seed is placed, the report says how
/// much still needs a drive; a re-run with more drives continues.
///
/// # Errors
/// `Invalid` for a staging folder without a finished seed, a drive of
/// another import job, a staged object that fails its checksum (named),
/// or a drive that cannot be written (named); a store error recording
/// the job.
pub fn diskprep(
    store: &dyn Store,
    staging: &Path,
    drives: &[PathBuf],
    capacity: Option<u64>,
) -> Result<DiskprepReport> {
    let (journal, job) = check_job(store, staging)?;
    let state_dir = staging.join("drives");
    std::fs::create_dir_all(&state_dir).map_err(|e| ServiceError::io(&state_dir, e))?;
    // one diskprep at a time per staging folder, and per drive
    let mut locks =
        vec![take_lock(&state_dir.join(DISKPREP_LOCK), || format!("staging folder {}", staging.display()))?];
    let (mut placed, known) = placed_so_far(&state_dir)?;
    let mut slots = Vec::new();
    for path in drives {
        std::fs::create_dir_all(path.join(DRIVE_OBJECTS))
            .map_err(|e| ServiceError::Invalid(format!("drive {} cannot be written: {e}", path.display())))?;
        // taken before the label is read or written
        locks.push(take_lock(&path.join(DISKPREP_LOCK), || format!("drive {}", path.display()))?);
        let slot = open_drive(&job, &journal, &state_dir, path, capacity, &known)?;
        for e in drive_files::read_journal(&path.join(DRIVE_JOURNAL))? {
            placed.insert(e.name);
        }
        slots.push(slot);
    }
    let todo: Vec<&StagedObject> = journal.objects.iter().filter(|o| !placed.contains(&o.name)).collect();
    let progress = copy_objects(staging, &job, slots, &todo)?;
    // the journals' lines were written after their objects were durable;
    // now the journals themselves
    for s in &progress.slots {
        drive_files::sync_file(&s.path.join(DRIVE_JOURNAL))?;
        drive_files::sync_file(&state_dir.join(format!("{}.jsonl", s.id)))?;
    }
    if let Some(e) = progress.error {
        return Err(e);
    }
    if progress.remaining == 0 {
        record_drives(store, &job.name, &state_dir)?;
    }
    Ok(DiskprepReport {
        import_job: job.name.clone(),
        drives: progress
            .slots
            .iter()
            .map(|s| PreparedDrive {
                id: s.id.clone(),
                path: s.path.clone(),
                key: s.shown_key.clone(),
                objects: s.objects,
                bytes: s.bytes,
            })
            .collect(),
        copied: progress.copied,
        copied_bytes: progress.copied_bytes,
        remaining: progress.remaining,
        remaining_bytes: progress.remaining_bytes,
        shipping_address: job.shipping_address.clone(),
    })
}

/// The staging folder's seed and its import job, which must be waiting
/// for drives.
fn check_job(store: &dyn Store, staging: &Path) -> Result<(StagingJournal, ImportJob)> {
    let journal = read_staging_journal(staging)?;
    let job = find_import_job(store, &journal.import_job)?;
    if job.id != journal.import_job_id {
        return Err(ServiceError::Invalid(format!(
            "staging folder {} holds a seed of another import job named {}",
            staging.display(),
            job.name
        )));
    }
    match job.state {
        ImportState::Staged | ImportState::Creating => Ok((journal, job)),
        other => Err(ServiceError::Conflict(format!(
            "import job {} is {}: its drives are prepared already",
            job.name,
            other.as_str()
        ))),
    }
}

/// What every drive of the job holds, from the staging folder's copies of
/// their journals: the objects placed, and each drive's objects and bytes.
type Known = BTreeMap<String, (u64, u64)>;

fn placed_so_far(state_dir: &Path) -> Result<(HashSet<String>, Known)> {
    let mut placed = HashSet::new();
    let mut known = Known::new();
    for entry in std::fs::read_dir(state_dir).map_err(|e| ServiceError::io(state_dir, e))?.flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "jsonl")
            && let Some(id) = p.file_stem().map(|s| s.to_string_lossy().to_string())
        {
            let totals = known.entry(id).or_default();
            for e in drive_files::read_journal(&p)? {
                totals.0 += 1;
                totals.1 += e.size;
                placed.insert(e.name);
            }
        }
    }
    Ok((placed, known))
}

/// A drive given to diskprep: labelled (with a new key kept in the staging
/// folder) when it is new, its key found again when it is this job's, and
/// its room measured.
fn open_drive(
    job: &ImportJob,
    journal: &StagingJournal,
    state_dir: &Path,
    path: &Path,
    capacity: Option<u64>,
    known: &Known,
) -> Result<Slot> {
    let job_id = job.id.to_hex();
    let (id, key, shown_key) = match drive_files::read_label(path)? {
        Some(label) if label.import_job_id == job_id => {
            let key_file = state_dir.join(format!("{}.key", label.drive_id));
            let hex = std::fs::read_to_string(&key_file).map_err(|e| {
                ServiceError::Invalid(format!(
                    "drive {} ({}) was labelled from another staging folder: its key is not in {} ({e})",
                    label.drive_id,
                    path.display(),
                    key_file.display()
                ))
            })?;
            let key = parse_key(hex.trim())
                .ok_or_else(|| ServiceError::Invalid(format!("{} does not hold a drive key", key_file.display())))?;
            (label.drive_id, key, None)
        }
        Some(label) => {
            return Err(ServiceError::Invalid(format!(
                "drive {} ({}) belongs to import job {}, not {}",
                label.drive_id,
                path.display(),
                label.import_job,
                job.name
            )));
        }
        None => {
            let id = random_hex(4);
            let hex = random_hex(32);
            let key = parse_key(&hex).ok_or_else(|| ServiceError::Internal("a drive key of 32 bytes".into()))?;
            drive_files::write_atomically(&state_dir.join(format!("{id}.key")), hex.as_bytes())?;
            let label = DriveLabel {
                format: DRIVE_FORMAT,
                drive_id: id.clone(),
                import_job: job.name.clone(),
                import_job_id: job_id.clone(),
                vault_id: journal.vault_id.clone(),
                key_check: key_check(&key, &id),
            };
            let body = serde_json::to_vec_pretty(&label).map_err(|e| ServiceError::Internal(e.to_string()))?;
            drive_files::write_atomically(&path.join(DRIVE_LABEL), &body)?;
            (id, key, Some(hex))
        }
    };
    let used: u64 = drive_files::read_journal(&path.join(DRIVE_JOURNAL))?.iter().map(|e| sealed_len(e.size)).sum();
    let free = drive_files::free_space(path)?;
    let room = capacity.map_or(free, |c| c.saturating_sub(used).min(free));
    let (objects, bytes) = known.get(&id).copied().unwrap_or_default();
    Ok(Slot { id, path: path.to_path_buf(), key, shown_key, used, room, objects, bytes })
}

/// What diskprep's workers share.
struct Progress {
    slots: Vec<Slot>,
    copied: u64,
    copied_bytes: u64,
    remaining: u64,
    remaining_bytes: u64,
    /// The first error; the workers stop at it.
    error: Option<ServiceError>,
}

/// Places the objects on the drives, [`DISKPREP_PARALLEL`] at a time:
/// reading, checking and sealing one object overlaps writing another.
fn copy_objects(staging: &Path, job: &ImportJob, slots: Vec<Slot>, todo: &[&StagedObject]) -> Result<Progress> {
    // a test hook: a pause before each object, so a test can kill diskprep
    // or take a drive away in the middle of a copy of a small seed
    let pause = std::env::var("BOVEDA_TEST_DISKPREP_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_millis);
    let shared =
        Mutex::new(Progress { slots, copied: 0, copied_bytes: 0, remaining: 0, remaining_bytes: 0, error: None });
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..DISKPREP_PARALLEL.min(todo.len()) {
            scope.spawn(|| {
                let mut buffer = Vec::new();
                loop {
                    if let Some(p) = pause {
                        std::thread::sleep(p);
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(object) = todo.get(i) else { return };
                    if copy_one(staging, &shared, object, job, &mut buffer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    shared.into_inner().map_err(|_| ServiceError::Internal("a diskprep worker panicked".into()))
}

/// Places one staged object on the first drive with room: the room is
/// reserved under the lock, the object read, checked against the staging
/// journal, sealed and written (and made durable) outside it, and its
/// journal lines appended under it. `Err` when the workers must stop.
fn copy_one(
    staging: &Path,
    shared: &Mutex<Progress>,
    object: &StagedObject,
    job: &ImportJob,
    buffer: &mut Vec<u8>,
) -> std::result::Result<(), ()> {
    let need = sealed_len(object.size);
    let lock = || shared.lock().map_err(|_| ());
    let reserved = {
        let mut p = lock()?;
        if p.error.is_some() {
            return Err(());
        }
        match p.slots.iter_mut().find(|s| s.room >= need) {
            Some(slot) => {
                slot.room -= need;
                Some((slot.id.clone(), slot.path.clone(), slot.key))
            }
            None => {
                p.remaining += 1;
                p.remaining_bytes += object.size;
                None
            }
        }
    };
    let Some((id, path, key)) = reserved else { return Ok(()) };
    let source = staging.join(&object.name);
    let job_id = job.id.to_hex();
    let placement =
        Placement { source: &source, name: &object.name, size: object.size, blake3: &object.blake3, job_id: &job_id };
    let failed = |p: &mut Progress, e: ServiceError| {
        p.error.get_or_insert(e);
        Err(())
    };
    match drive_files::place_sealed(&path, &DriveSealer::new(&key), &placement, buffer) {
        Ok(()) => {
            let entry = JournalEntry {
                name: object.name.clone(),
                size: object.size,
                blake3: object.blake3.clone(),
                import_job: job.name.clone(),
            };
            let mut p = lock()?;
            let copy = staging.join("drives").join(format!("{id}.jsonl"));
            let appended = drive_files::append_journal_line(&path.join(DRIVE_JOURNAL), &entry)
                .and_then(|()| drive_files::append_journal_line(&copy, &entry));
            if let Err(e) = appended {
                return failed(&mut p, e.into());
            }
            p.copied += 1;
            p.copied_bytes += object.size;
            if let Some(slot) = p.slots.iter_mut().find(|s| s.id == id) {
                slot.used += need;
                slot.objects += 1;
                slot.bytes += object.size;
            }
            Ok(())
        }
        Err(PlaceError::Full) => {
            // the drive filled before its measured room: none is left on it
            let mut p = lock()?;
            if let Some(slot) = p.slots.iter_mut().find(|s| s.id == id) {
                slot.room = 0;
            }
            p.remaining += 1;
            p.remaining_bytes += object.size;
            Ok(())
        }
        Err(e) => {
            let e = match e {
                PlaceError::Gone => ServiceError::Invalid(format!(
                    "drive {id} ({}) is gone (unplugged?): run diskprep again once it is back, or with another drive",
                    path.display()
                )),
                PlaceError::Drive(e) => {
                    ServiceError::Invalid(format!("drive {id} ({}) cannot be written: {e}", path.display()))
                }
                PlaceError::Source(src, e) => ServiceError::io(src, e),
                PlaceError::Checksum(src) => ServiceError::Invalid(format!(
                    "staged object {} fails its checksum: the staging folder is damaged (run the seed backup again)",
                    src.display()
                )),
                PlaceError::Full => return Ok(()),
            };
            match shared.lock() {
                Ok(mut p) => failed(&mut p, e),
                Err(_) => Err(()),
            }
        }
    }
}

/// Takes the diskprep lock at `path`; `Conflict` naming `what` and the
/// holder's process id when another diskprep holds it.
fn take_lock(path: &Path, what: impl Fn() -> String) -> Result<std::fs::File> {
    match drive_files::lock_exclusive(path) {
        Ok(file) => Ok(file),
        Err(LockError::Held(holder)) => Err(ServiceError::Conflict(format!(
            "another diskprep (process {holder}) is writing {} now: wait for it to end",
            what()
        ))),
        Err(LockError::Io(e)) => Err(ServiceError::Invalid(format!("{} cannot be written: {e}", what()))),
    }
}

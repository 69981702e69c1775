//! `diskprep`: seals a staged seed onto drives, as many as it takes,
//! resuming where an earlier run stopped (see `drive`).

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use boveda_store::Store;
use boveda_vault::DriveSealer;
use boveda_vault::drive_format::{
    self, DRIVE_FORMAT, DRIVE_JOURNAL, DRIVE_LABEL, DRIVE_OBJECTS, DriveLabel, JournalEntry, SealError, SegmentAad,
    key_check, sealed_len,
};
use serde::Serialize;

use super::drive::{append_line, io_err, parse_key, random_hex, read_journal, read_label, record_drives};
use crate::error::{Result, ServiceError};
use crate::offline::{ImportJob, ImportState, StagedObject, find_import_job, free_space, read_staging_journal};

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
        ImportState::Staged | ImportState::Creating => {}
        other => {
            return Err(ServiceError::Conflict(format!(
                "import job {} is {}: its drives are prepared already",
                job.name,
                other.as_str()
            )));
        }
    }
    let job_id = job.id.to_hex();
    let state_dir = staging.join("drives");
    std::fs::create_dir_all(&state_dir).map_err(|e| io_err(&state_dir, e))?;
    // one diskprep at a time per staging folder, and per drive
    let mut locks =
        vec![lock_for_diskprep(&state_dir.join(DISKPREP_LOCK), || format!("staging folder {}", staging.display()))?];

    // what every drive of this job holds, from the staging folder's copies
    let mut placed: HashSet<String> = HashSet::new();
    let mut known: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for entry in std::fs::read_dir(&state_dir).map_err(|e| io_err(&state_dir, e))?.flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "jsonl")
            && let Some(id) = p.file_stem().map(|s| s.to_string_lossy().to_string())
        {
            let entries = read_journal(&p)?;
            let totals = known.entry(id).or_default();
            for e in entries {
                totals.0 += 1;
                totals.1 += e.size;
                placed.insert(e.name);
            }
        }
    }

    let mut slots = Vec::new();
    for path in drives {
        std::fs::create_dir_all(path.join(DRIVE_OBJECTS))
            .map_err(|e| ServiceError::Invalid(format!("drive {} cannot be written: {e}", path.display())))?;
        // taken before the label is read or written
        locks.push(lock_for_diskprep(&path.join(DISKPREP_LOCK), || format!("drive {}", path.display()))?);
        let (id, key, shown_key) = match read_label(path)? {
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
                let key = parse_key(hex.trim()).ok_or_else(|| {
                    ServiceError::Invalid(format!("{} does not hold a drive key", key_file.display()))
                })?;
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
                crate::offline::write_atomically(&state_dir.join(format!("{id}.key")), hex.as_bytes())?;
                let label = DriveLabel {
                    format: DRIVE_FORMAT,
                    drive_id: id.clone(),
                    import_job: job.name.clone(),
                    import_job_id: job_id.clone(),
                    vault_id: journal.vault_id.clone(),
                    key_check: key_check(&key, &id),
                };
                let body = serde_json::to_vec_pretty(&label).map_err(|e| ServiceError::Internal(e.to_string()))?;
                crate::offline::write_atomically(&path.join(DRIVE_LABEL), &body)?;
                (id, key, Some(hex))
            }
        };
        let on_drive = read_journal(&path.join(DRIVE_JOURNAL))?;
        let used: u64 = on_drive.iter().map(|e| sealed_len(e.size)).sum();
        for e in on_drive {
            placed.insert(e.name);
        }
        let free = free_space(path)?;
        let room = capacity.map_or(free, |c| c.saturating_sub(used).min(free));
        let (objects, bytes) = known.get(&id).copied().unwrap_or_default();
        slots.push(Slot { id, path: path.clone(), key, shown_key, used, room, objects, bytes });
    }

    // a test hook: a pause before each object, so a test can kill diskprep
    // or take a drive away in the middle of a copy of a small seed
    let pause = std::env::var("BOVEDA_TEST_DISKPREP_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_millis);
    let todo: Vec<&StagedObject> = journal.objects.iter().filter(|o| !placed.contains(&o.name)).collect();
    let shared =
        Mutex::new(Progress { slots, copied: 0, copied_bytes: 0, remaining: 0, remaining_bytes: 0, error: None });
    let next = AtomicUsize::new(0);
    // reading, checking and sealing one object overlaps writing another
    std::thread::scope(|scope| {
        for _ in 0..DISKPREP_PARALLEL.min(todo.len()) {
            scope.spawn(|| {
                let mut buffers: Buffers = Vec::new();
                loop {
                    if let Some(p) = pause {
                        std::thread::sleep(p);
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(object) = todo.get(i) else { return };
                    if copy_one(staging, &shared, object, &job, &mut buffers).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let Progress { slots, copied, copied_bytes, remaining, remaining_bytes, error } =
        shared.into_inner().map_err(|_| ServiceError::Internal("a diskprep worker panicked".into()))?;
    // the journals' lines were written after their objects were durable;
    // now the journals themselves
    for s in &slots {
        for journal in [s.path.join(DRIVE_JOURNAL), state_dir.join(format!("{}.jsonl", s.id))] {
            if let Ok(f) = std::fs::File::open(&journal) {
                f.sync_all().map_err(|e| io_err(&journal, e))?;
            }
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    let report = DiskprepReport {
        import_job: job.name.clone(),
        drives: slots
            .iter()
            .map(|s| PreparedDrive {
                id: s.id.clone(),
                path: s.path.clone(),
                key: s.shown_key.clone(),
                objects: s.objects,
                bytes: s.bytes,
            })
            .collect(),
        copied,
        copied_bytes,
        remaining,
        remaining_bytes,
        shipping_address: job.shipping_address.clone(),
    };
    if remaining == 0 {
        record_drives(store, &job.name, &state_dir)?;
    }
    Ok(report)
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

/// Places one staged object on the first drive with room: the room is
/// reserved under the lock, the object read, checked against the staging
/// journal, sealed and written (and made durable) outside it, and its
/// journal lines appended under it. `Err` when the workers must stop.
fn copy_one(
    staging: &Path,
    shared: &Mutex<Progress>,
    object: &StagedObject,
    job: &ImportJob,
    buffers: &mut Buffers,
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
    match write_sealed(staging, &id, &path, &key, object, job, buffers) {
        Ok(()) => {
            let entry = JournalEntry {
                name: object.name.clone(),
                size: object.size,
                blake3: object.blake3.clone(),
                import_job: job.name.clone(),
            };
            let mut p = lock()?;
            let copy = staging.join("drives").join(format!("{id}.jsonl"));
            let appended = append_line(&path.join(DRIVE_JOURNAL), &entry)
                .map_err(|e| io_err(&path.join(DRIVE_JOURNAL), e))
                .and_then(|()| append_line(&copy, &entry).map_err(|e| io_err(&copy, e)));
            if let Err(e) = appended {
                p.error.get_or_insert(e);
                return Err(());
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
        Err(PlaceError::Other(e)) => {
            if let Ok(mut p) = shared.lock() {
                p.error.get_or_insert(e);
            }
            Err(())
        }
    }
}

/// Takes the diskprep lock at `path` (made if missing) and writes this
/// process's id in it; `Conflict` naming `what` and the holder's process id
/// when another diskprep holds it.
fn lock_for_diskprep(path: &Path, what: impl Fn() -> String) -> Result<std::fs::File> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| ServiceError::Invalid(format!("{} cannot be written: {e}", what())))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            let holder = std::fs::read_to_string(path).unwrap_or_default();
            return Err(ServiceError::Conflict(format!(
                "another diskprep (process {}) is writing {} now: wait for it to end",
                holder.trim(),
                what()
            )));
        }
        Err(e) => return Err(io_err(path, e.into())),
    }
    file.set_len(0).map_err(|e| io_err(path, e))?;
    file.write_all(std::process::id().to_string().as_bytes()).map_err(|e| io_err(path, e))?;
    Ok(file)
}

/// What a diskprep worker reuses from one object to the next: room for
/// one sealed segment.
type Buffers = Vec<u8>;

enum PlaceError {
    Full,
    Other(ServiceError),
}

/// Reads a staged object, seals it segment by segment to `out` (see
/// [`boveda_vault::drive_format::seal_object`]), then makes `out`'s data
/// durable. The sealed segments are written through the page cache (with
/// direct writes, each one waits for the disk), 1 MiB at a time: measured
/// here, 800 MiB written in 8 MiB writes took 1.36 s of system time, in
/// 1 MiB writes 0.32 s.
fn seal_object(
    src: &Path,
    out: &mut std::fs::File,
    sealer: &DriveSealer,
    aad: &mut SegmentAad,
    object: &StagedObject,
    buf: &mut Buffers,
) -> std::result::Result<(), SealError> {
    let mut input = std::fs::File::open(src).map_err(SealError::Source)?;
    drive_format::seal_object(&mut input, out, sealer, aad, (object.size, &object.blake3), buf)?;
    out.sync_data().map_err(SealError::Drive)
}

/// Reads a staged object, checks it against the staging journal, seals it
/// under the drive key and writes it beside its name, durable, then
/// renames it into place.
fn write_sealed(
    staging: &Path,
    drive_id: &str,
    drive: &Path,
    key: &[u8; 32],
    object: &StagedObject,
    job: &ImportJob,
    buf: &mut Buffers,
) -> std::result::Result<(), PlaceError> {
    let gone = || {
        PlaceError::Other(ServiceError::Invalid(format!(
            "drive {drive_id} ({}) is gone (unplugged?): run diskprep again once it is back, or with another drive",
            drive.display()
        )))
    };
    let drive_err = |e: std::io::Error, partial: &Path| {
        if e.kind() == std::io::ErrorKind::StorageFull {
            let _ = std::fs::remove_file(partial);
            return PlaceError::Full;
        }
        // taken away while this object was written
        if !drive.join(DRIVE_LABEL).exists() {
            return gone();
        }
        PlaceError::Other(ServiceError::Invalid(format!(
            "drive {drive_id} ({}) cannot be written: {e}",
            drive.display()
        )))
    };
    if !drive.join(DRIVE_LABEL).exists() {
        return Err(gone());
    }
    let src = staging.join(&object.name);
    let dest = drive.join(DRIVE_OBJECTS).join(&object.name);
    let partial = dest.with_extension("partial");
    // folders below the drive's `objects/` only: a drive taken away
    // meanwhile is never made again
    let mut dir = drive.join(DRIVE_OBJECTS);
    let below = Path::new(&object.name).parent().unwrap_or(Path::new(""));
    for part in below.components() {
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(drive_err(e, &partial)),
            _ => {}
        }
    }
    let mut out = std::fs::File::create(&partial).map_err(|e| drive_err(e, &partial))?;
    let mut aad = SegmentAad::new(&job.id.to_hex(), &object.name);
    match seal_object(&src, &mut out, &DriveSealer::new(key), &mut aad, object, buf) {
        Ok(()) => {}
        Err(SealError::Drive(e)) => return Err(drive_err(e, &partial)),
        Err(SealError::Source(e)) => {
            let _ = std::fs::remove_file(&partial);
            return Err(PlaceError::Other(io_err(&src, e)));
        }
        Err(SealError::Checksum) => {
            let _ = std::fs::remove_file(&partial);
            return Err(PlaceError::Other(ServiceError::Invalid(format!(
                "staged object {} fails its checksum: the staging folder is damaged (run the seed backup again)",
                src.display()
            ))));
        }
    }
    std::fs::rename(&partial, &dest).map_err(|e| drive_err(e, &partial))
}

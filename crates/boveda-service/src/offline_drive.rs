//! Offline seeding's drives: `diskprep` seals a staged seed onto drives,
//! `import` checks and uploads it where the store is reachable.
//!
//! A drive (a mounted file system, or any folder) holds:
//! - `boveda-drive.json`: the drive's id, its import job (name and id) and
//!   the vault's id;
//! - `objects/<name>`: each vault object sealed under the drive's key
//!   (XChaCha20-Poly1305, the import job's id and the name as associated
//!   data, so an object moved to another name or job does not open);
//! - `journal.jsonl`: one line per object, appended once it is on the
//!   drive: name, size and BLAKE3 checksum of the vault object, and the
//!   import job.
//!
//! The staging folder keeps a copy of every drive's journal
//! (`drives/<id>.jsonl`) and the drives' keys (`drives/<id>.key`), so a
//! re-run knows what is placed even on drives it is not given again, and
//! continues where the last run stopped.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use boveda_store::{PutMode, Store, StoreErrorKind};
use boveda_vault::{Sealer, VaultError};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};
use crate::offline::{
    DriveRecord, DriveState, ImportJob, ImportState, SEED_FOLDERS, StagedObject, find_import_job, free_space,
    read_staging_journal, update_import_job,
};

const DRIVE_LABEL: &str = "boveda-drive.json";
const DRIVE_JOURNAL: &str = "journal.jsonl";
const DRIVE_OBJECTS: &str = "objects";
/// Objects diskprep reads, seals and writes at once.
const DISKPREP_PARALLEL: usize = 4;
/// Objects an import uploads at once.
const IMPORT_PARALLEL: usize = 8;
/// Bytes a sealed object takes beyond the object: nonce and tag.
const SEAL_OVERHEAD: u64 = 24 + 16;

/// What `boveda-drive.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveLabel {
    pub format: u32,
    pub drive_id: String,
    pub import_job: String,
    pub import_job_id: String,
    pub vault_id: String,
    /// Keyed BLAKE3 of the drive id under the drive key: tells a wrong key
    /// from an altered object.
    #[serde(default)]
    pub key_check: String,
}

/// One line of a drive's journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub name: String,
    pub size: u64,
    pub blake3: String,
    pub import_job: String,
}

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
}

fn io_err(what: &Path, e: std::io::Error) -> ServiceError {
    ServiceError::Invalid(format!("{}: {e}", what.display()))
}

fn key_check(key: &[u8; 32], drive_id: &str) -> String {
    blake3::keyed_hash(key, format!("boveda drive key check\0{drive_id}").as_bytes()).to_hex().to_string()
}

fn aad(job_id: &str, name: &str) -> Vec<u8> {
    format!("boveda-drive\0{job_id}\0{name}").into_bytes()
}

fn read_label(drive: &Path) -> Result<Option<DriveLabel>> {
    match std::fs::read(drive.join(DRIVE_LABEL)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            ServiceError::Invalid(format!("drive {}: {DRIVE_LABEL} does not parse: {e}", drive.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(drive, e)),
    }
}

/// The entries of a journal; a last line cut short by a kill is ignored.
fn read_journal(path: &Path) -> Result<Vec<JournalEntry>> {
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
fn append_line(path: &Path, entry: &JournalEntry) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)
}

/// `n` random bytes as hex (`n` up to 32).
fn random_hex(n: usize) -> String {
    let hex = format!("{}{}", boveda_vault::RecordId::random().to_hex(), boveda_vault::RecordId::random().to_hex());
    hex[..2 * n.min(32)].to_string()
}

fn parse_key(hex: &str) -> Option<[u8; 32]> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    bytes.try_into().ok()
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
                    format: 1,
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
        let used: u64 = on_drive.iter().map(|e| e.size + SEAL_OVERHEAD).sum();
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
                // one object's bytes and its sealed form, reused: no fresh
                // pages to fault in for every object
                let mut buffers: Buffers = (Vec::new(), Vec::new(), Vec::new());
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
    let need = object.size + SEAL_OVERHEAD;
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

/// A diskprep worker's reused buffers: an object, its sealed form, and
/// room for an aligned copy of it.
type Buffers = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Block alignment of direct writes.
const DIRECT_ALIGN: usize = 4096;

/// Writes `data` to a new file at `path` and makes it durable. Written
/// with O_DIRECT when the file system takes it: the data goes to the disk
/// without being copied into the page cache first (which measured at twice
/// the system time of the copy itself), padded to whole blocks, then cut
/// to its length. Elsewhere (tmpfs, some network file systems), written
/// through the page cache.
fn write_durable(path: &Path, data: &[u8], aligned: &mut Vec<u8>) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let padded = data.len().div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
    aligned.clear();
    aligned.resize(padded + DIRECT_ALIGN, 0);
    let off = aligned.as_ptr().align_offset(DIRECT_ALIGN);
    let direct = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .and_then(|mut f| {
            let block = &mut aligned[off..off + padded];
            block[..data.len()].copy_from_slice(data);
            std::io::Write::write_all(&mut f, block)?;
            f.set_len(data.len() as u64)?;
            f.sync_all()
        });
    match direct {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let mut f = std::fs::File::create(path)?;
            f.write_all(data)?;
            f.sync_all()
        }
        Err(e) => Err(e),
    }
}

enum PlaceError {
    Full,
    Other(ServiceError),
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
    (bytes, sealed, aligned): &mut Buffers,
) -> std::result::Result<(), PlaceError> {
    let gone = || {
        PlaceError::Other(ServiceError::Invalid(format!(
            "drive {drive_id} ({}) is gone (unplugged?): run diskprep again once it is back, or with another drive",
            drive.display()
        )))
    };
    if !drive.join(DRIVE_LABEL).exists() {
        return Err(gone());
    }
    let src = staging.join(&object.name);
    bytes.clear();
    std::fs::File::open(&src)
        .and_then(|mut f| std::io::Read::read_to_end(&mut f, bytes))
        .map_err(|e| PlaceError::Other(io_err(&src, e)))?;
    if bytes.len() as u64 != object.size || blake3::hash(bytes).to_hex().as_str() != object.blake3 {
        return Err(PlaceError::Other(ServiceError::Invalid(format!(
            "staged object {} fails its checksum: the staging folder is damaged (run the seed backup again)",
            src.display()
        ))));
    }
    sealed.clear();
    Sealer::new(key).seal_into(&aad(&job.id.to_hex(), &object.name), bytes, sealed);
    let dest = drive.join(DRIVE_OBJECTS).join(&object.name);
    let written = (|| {
        // folders below the drive's `objects/` only: a drive taken away
        // meanwhile is never made again
        let mut dir = drive.join(DRIVE_OBJECTS);
        let below = Path::new(&object.name).parent().unwrap_or(Path::new(""));
        for part in below.components() {
            dir.push(part);
            match std::fs::create_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        let tmp = dest.with_extension("partial");
        write_durable(&tmp, sealed, aligned)?;
        std::fs::rename(&tmp, &dest)
    })();
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
            let _ = std::fs::remove_file(dest.with_extension("partial"));
            Err(PlaceError::Full)
        }
        // taken away while this object was written
        Err(_) if !drive.join(DRIVE_LABEL).exists() => Err(gone()),
        Err(e) => Err(PlaceError::Other(ServiceError::Invalid(format!(
            "drive {drive_id} ({}) cannot be written: {e}",
            drive.display()
        )))),
    }
}

/// Records the drives in the import job (`Creating`, drives `Specified`).
fn record_drives(store: &dyn Store, name: &str, state_dir: &Path) -> Result<ImportJob> {
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

/// What an import did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub job: ImportJob,
    /// Objects uploaded by this run (those already in the store are not
    /// uploaded again).
    pub uploaded: u64,
    pub uploaded_bytes: u64,
    /// Every problem found, each naming its drive or object.
    pub problems: Vec<String>,
}

/// What an import is asked to do.
#[derive(Clone, Copy)]
pub struct ImportRequest<'a> {
    /// The import job.
    pub name: &'a str,
    /// The drives that arrived.
    pub drives: &'a [PathBuf],
    /// Drive keys given out of band (drive id to hex key), over the job's.
    pub keys: &'a BTreeMap<String, String>,
    /// The staging folder still holding the seed, for what no drive brought.
    pub from_staging: Option<&'a Path>,
    /// Import drives that arrived after the deadline.
    pub force: bool,
    pub now: Timestamp,
    /// This machine, in the replication marker an import leaves.
    pub host: &'a str,
}

/// A drive given to the import, checked.
struct Arrived {
    record: usize,
    path: PathBuf,
    sealer: Sealer,
    entries: Vec<JournalEntry>,
}

/// `offline import`, on the store's side: checks every object of the
/// drives against their journals and uploads it unchanged, packs first and
/// point manifests last (only when every object of the seed is in the
/// store). Idempotent: a re-run after a failure or a kill finishes the job.
/// `keys` replaces drive keys of the job (drive id to hex key). `force`
/// imports after the shipping deadline.
///
/// # Errors
/// `NotFound` for the job; `Conflict` for a job not shipped yet, or expired
/// without `force`; a store error. Problems with drives and objects are in
/// the report and the job, not errors.
pub fn import(store: &dyn Store, req: &ImportRequest<'_>) -> Result<ImportReport> {
    let ImportRequest { name, drives, keys, from_staging, force, now, host } = *req;
    let job = find_import_job(store, name)?;
    // the staging folder still holding the seed: what no drive brought (a
    // lost drive, an altered object) is uploaded from it over the network
    let staged = match from_staging {
        Some(dir) => {
            let journal = read_staging_journal(dir)?;
            if journal.import_job_id != job.id {
                return Err(ServiceError::Invalid(format!(
                    "{} holds the seed of import job {}, not {}",
                    dir.display(),
                    journal.import_job,
                    job.name
                )));
            }
            Some((dir, journal))
        }
        None => None,
    };
    match job.state {
        ImportState::Shipping
        | ImportState::Received
        | ImportState::Transferring
        | ImportState::Packaging
        | ImportState::Closed => {}
        ImportState::Completed => {
            return Ok(ImportReport { job, uploaded: 0, uploaded_bytes: 0, problems: Vec::new() });
        }
        other => {
            return Err(ServiceError::Conflict(format!(
                "import job {} is {}: its drives are not shipped yet (record the shipping first)",
                job.name,
                other.as_str()
            )));
        }
    }
    if job.is_expired(now) && !force {
        return Err(ServiceError::Conflict(format!(
            "import job {} expired: its drives were due by {}; force the import to take them anyway",
            job.name,
            job.deadline.map(|d| d.to_string()).unwrap_or_default()
        )));
    }
    let job_id = job.id.to_hex();
    let mut problems: Vec<String> = Vec::new();
    let mut drive_problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut arrived: Vec<Arrived> = Vec::new();
    let mut bad_drive: HashSet<usize> = HashSet::new();
    for path in drives {
        let label = match read_label(path) {
            Ok(Some(label)) => label,
            Ok(None) => {
                problems.push(format!("{} is not a boveda drive (no {DRIVE_LABEL})", path.display()));
                continue;
            }
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        if label.import_job_id != job_id {
            problems.push(format!(
                "drive {} ({}) belongs to import job {}, not {}: not imported",
                label.drive_id,
                path.display(),
                label.import_job,
                job.name
            ));
            continue;
        }
        let Some(record) = job.drives.iter().position(|d| d.id == label.drive_id) else {
            problems.push(format!(
                "drive {} ({}) is not one of import job {}'s drives: not imported",
                label.drive_id,
                path.display(),
                job.name
            ));
            continue;
        };
        let hex = keys.get(&label.drive_id).unwrap_or(&job.drives[record].key);
        let Some(key) = parse_key(hex) else {
            drive_problems.entry(label.drive_id.clone()).or_default().push("its drive key is not 64 hex digits".into());
            bad_drive.insert(record);
            continue;
        };
        if !label.key_check.is_empty() && key_check(&key, &label.drive_id) != label.key_check {
            drive_problems
                .entry(label.drive_id.clone())
                .or_default()
                .push("wrong drive key: its objects do not open".to_string());
            bad_drive.insert(record);
            continue;
        }
        let entries = read_journal(&path.join(DRIVE_JOURNAL))?;
        arrived.push(Arrived { record, path: path.clone(), sealer: Sealer::new(&key), entries });
    }
    // drives that arrived, whether they open or not
    let given: HashSet<usize> = arrived.iter().map(|a| a.record).chain(bad_drive.iter().copied()).collect();
    let job = update_import_job(store, name, |j| {
        if matches!(j.state, ImportState::Shipping | ImportState::Closed) {
            j.state = ImportState::Received;
            j.note(now, format!("received {} drive(s)", given.len()));
        }
        for (i, d) in j.drives.iter_mut().enumerate() {
            if given.contains(&i) && matches!(d.state, DriveState::Specified | DriveState::NeverReceived) {
                d.state = DriveState::Received;
            }
        }
        Ok(())
    })?;
    // replication of a geo-redundant vault: the next process that opens it
    // copies what this import writes
    let geo = !store.is_empty_below("replication").map_err(VaultError::from)?;
    if geo {
        boveda_store::mark_pending(store, host).map_err(VaultError::from)?;
    }
    update_import_job(store, name, |j| {
        j.state = ImportState::Transferring;
        for (i, d) in j.drives.iter_mut().enumerate() {
            if given.contains(&i) && d.state == DriveState::Received {
                d.state = DriveState::Transferring;
            }
        }
        j.note(now, "transferring");
        Ok(())
    })?;

    let mut uploaded = 0;
    let mut uploaded_bytes = 0;
    let mut in_store: HashSet<String> = HashSet::new();
    let mut staged_uploads = 0u64;
    // packs, then index objects, then (only when the seed is whole) manifests
    for folder in SEED_FOLDERS {
        if folder == "points" {
            // a manifest only once every object it needs is in the store
            let whole = match &staged {
                Some((_, journal)) => journal
                    .objects
                    .iter()
                    .filter(|o| !o.name.starts_with("points/"))
                    .all(|o| in_store.contains(&o.name)),
                None => {
                    problems.is_empty()
                        && drive_problems.is_empty()
                        && bad_drive.is_empty()
                        && given.len() == job.drives.len()
                }
            };
            if !whole {
                problems.push(format!(
                    "the seed's point was not imported: {} of its {} objects are in the store, and every drive must arrive intact",
                    in_store.len(),
                    job.objects
                ));
                break;
            }
        }
        // the folder's objects of every drive, uploaded in parallel
        let work: Vec<(&Arrived, &JournalEntry)> = arrived
            .iter()
            .filter(|a| !bad_drive.contains(&a.record))
            .flat_map(|a| a.entries.iter().filter(|e| e.name.split('/').next() == Some(folder)).map(move |e| (a, e)))
            .collect();
        let next = AtomicUsize::new(0);
        let outcomes: Mutex<Vec<Outcome<'_>>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..IMPORT_PARALLEL.min(work.len()) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((a, entry)) = work.get(i) else { return };
                        let outcome = import_object(store, a, &job_id, entry);
                        let stop = matches!(outcome, Err(ObjectError::Store(_)));
                        if let Ok(mut o) = outcomes.lock() {
                            o.push((a.record, *entry, outcome));
                        }
                        if stop {
                            return;
                        }
                    }
                });
            }
        });
        let mut outcomes = outcomes.into_inner().unwrap_or_default();
        outcomes.sort_by(|x, y| x.1.name.cmp(&y.1.name));
        for (record, entry, outcome) in outcomes {
            let drive = &job.drives[record];
            match outcome {
                Ok(Some(size)) => {
                    uploaded += 1;
                    uploaded_bytes += size;
                    in_store.insert(entry.name.clone());
                }
                Ok(None) => {
                    in_store.insert(entry.name.clone());
                }
                Err(ObjectError::Auth) => drive_problems
                    .entry(drive.id.clone())
                    .or_default()
                    .push(format!("object {} fails authentication (altered on the drive)", entry.name)),
                Err(ObjectError::Checksum) => drive_problems
                    .entry(drive.id.clone())
                    .or_default()
                    .push(format!("object {} fails its checksum", entry.name)),
                Err(ObjectError::Missing(e)) => drive_problems
                    .entry(drive.id.clone())
                    .or_default()
                    .push(format!("object {} cannot be read ({e})", entry.name)),
                Err(ObjectError::Store(e)) => return Err(e),
            }
        }
        if let Some((dir, journal)) = &staged {
            for o in journal.objects.iter().filter(|o| o.name.split('/').next() == Some(folder)) {
                if in_store.contains(&o.name) {
                    continue;
                }
                if let Some(size) = upload_staged(store, dir, o)? {
                    uploaded += 1;
                    uploaded_bytes += size;
                    staged_uploads += 1;
                }
                in_store.insert(o.name.clone());
            }
        }
    }
    let complete = in_store.len() as u64 >= job.objects
        && (staged.is_some() || (problems.is_empty() && drive_problems.is_empty()));
    for (id, ps) in &drive_problems {
        for p in ps {
            problems.push(format!("drive {id}: {p}"));
        }
    }
    let missing: Vec<String> =
        job.drives.iter().enumerate().filter(|(i, _)| !given.contains(i)).map(|(_, d)| d.id.clone()).collect();
    for id in &missing {
        problems.push(if staged.is_some() {
            format!("drive {id} never arrived: its objects were uploaded from the staging folder")
        } else {
            format!("drive {id} never arrived: its objects are not in the store")
        });
    }
    let imported = in_store.len() as u64;
    update_import_job(store, name, |j| {
        j.state = ImportState::Packaging;
        j.imported = imported;
        Ok(())
    })?;
    let job = update_import_job(store, name, |j| {
        for (i, d) in j.drives.iter_mut().enumerate() {
            let ps = drive_problems.get(&d.id).cloned().unwrap_or_default();
            d.state = if !given.contains(&i) {
                DriveState::NeverReceived
            } else if ps.is_empty() {
                DriveState::Completed
            } else {
                DriveState::CompletedMoreInfo
            };
            d.problems = ps;
        }
        if staged_uploads > 0 {
            j.note(now, format!("{staged_uploads} object(s) no drive brought uploaded from the staging folder"));
        }
        if complete {
            j.state = ImportState::Completed;
            j.note(now, format!("completed: {imported} objects in the store"));
        } else {
            j.state = ImportState::Closed;
            j.note(
                now,
                format!("closed with {} problem(s); run the import again with the missing drives", problems.len()),
            );
        }
        Ok(())
    })?;
    Ok(ImportReport { job, uploaded, uploaded_bytes, problems })
}

/// Uploads one object from the staging folder, checked against the
/// staging journal; `None` when the store has it already.
///
/// # Errors
/// `Invalid` naming an object that is missing or fails its checksum; a
/// store error.
fn upload_staged(store: &dyn Store, dir: &Path, object: &StagedObject) -> Result<Option<u64>> {
    let path = dir.join(&object.name);
    let bytes = std::fs::read(&path).map_err(|e| io_err(&path, e))?;
    if bytes.len() as u64 != object.size || blake3::hash(&bytes).to_hex().as_str() != object.blake3 {
        return Err(ServiceError::Invalid(format!("staged object {} fails its checksum", path.display())));
    }
    match store.put(&object.name, &bytes, PutMode::Create) {
        Ok(_) => Ok(Some(object.size)),
        Err(e) if e.kind() == StoreErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(VaultError::from(e).into()),
    }
}

/// One object's import: its drive (index in the job), journal entry and
/// result.
type Outcome<'a> = (usize, &'a JournalEntry, std::result::Result<Option<u64>, ObjectError>);

enum ObjectError {
    Auth,
    Checksum,
    Missing(std::io::Error),
    Store(ServiceError),
}

/// Opens, checks and uploads one object; `Ok(None)` when the store has it
/// already (a re-run).
fn import_object(
    store: &dyn Store,
    drive: &Arrived,
    job_id: &str,
    entry: &JournalEntry,
) -> std::result::Result<Option<u64>, ObjectError> {
    let sealed = std::fs::read(drive.path.join(DRIVE_OBJECTS).join(&entry.name)).map_err(ObjectError::Missing)?;
    let bytes = drive.sealer.open(&aad(job_id, &entry.name), &sealed).map_err(|_| ObjectError::Auth)?;
    if bytes.len() as u64 != entry.size || blake3::hash(&bytes).to_hex().as_str() != entry.blake3 {
        return Err(ObjectError::Checksum);
    }
    match store.put(&entry.name, &bytes, PutMode::Create) {
        Ok(_) => Ok(Some(entry.size)),
        Err(e) if e.kind() == StoreErrorKind::AlreadyExists => match store.get(&entry.name) {
            Ok(there) if there == bytes => Ok(None),
            Ok(_) => Err(ObjectError::Store(ServiceError::Conflict(format!(
                "the store holds another object named {}: not replaced",
                entry.name
            )))),
            Err(e) => Err(ObjectError::Store(VaultError::from(e).into())),
        },
        Err(e) => Err(ObjectError::Store(VaultError::from(e).into())),
    }
}

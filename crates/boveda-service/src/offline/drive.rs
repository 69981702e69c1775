//! Offline seeding's drives: `diskprep` seals a staged seed onto drives,
//! `import` checks and uploads it where the store is reachable.
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

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use boveda_store::{PutMode, Store, StoreErrorKind};
use boveda_vault::{DriveSealer, VaultError};
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
/// Held (flock) by a diskprep in the staging folder's `drives/` and on
/// each drive it writes.
const DISKPREP_LOCK: &str = "diskprep.lock";
/// Objects diskprep reads, seals and writes at once.
const DISKPREP_PARALLEL: usize = 4;
/// Objects an import uploads at once.
const IMPORT_PARALLEL: usize = 8;
/// An object is sealed in segments of this many bytes (the last shorter),
/// each under its own nonce: one segment is read, hashed, sealed and
/// written while it stays in the CPU's cache.
const SEGMENT: usize = 1 << 20;
/// The drive format this version writes and reads: 2 seals with
/// AES-256-GCM (1, of development builds, with XChaCha20-Poly1305).
const DRIVE_FORMAT: u32 = 2;

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
    /// Where the drives go (`vault update --shipping-address`).
    pub shipping_address: Option<String>,
}

fn io_err(what: &Path, e: std::io::Error) -> ServiceError {
    ServiceError::Invalid(format!("{}: {e}", what.display()))
}

fn key_check(key: &[u8; 32], drive_id: &str) -> String {
    blake3::keyed_hash(key, format!("boveda drive key check\0{drive_id}").as_bytes()).to_hex().to_string()
}

/// Segments of an object of `size` bytes: at least one, so an empty
/// object has a tag too.
fn segments(size: u64) -> u64 {
    size.div_ceil(SEGMENT as u64).max(1)
}

/// Bytes an object of `size` bytes takes sealed on a drive.
fn sealed_len(size: u64) -> u64 {
    size + segments(size) * DriveSealer::OVERHEAD as u64
}

/// The associated data of one segment: the import job, the object's name,
/// the segment's position and whether it is the last, so no segment can
/// be moved to another object, job or position, and none cut off the end.
struct SegmentAad(Vec<u8>, usize);

impl SegmentAad {
    fn new(job_id: &str, name: &str) -> Self {
        let base = format!("boveda-drive\0{job_id}\0{name}\0").into_bytes();
        let len = base.len();
        Self(base, len)
    }

    fn of(&mut self, index: u64, last: bool) -> &[u8] {
        self.0.truncate(self.1);
        self.0.extend_from_slice(&index.to_le_bytes());
        self.0.push(u8::from(last));
        &self.0
    }
}

fn read_label(drive: &Path) -> Result<Option<DriveLabel>> {
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

/// Why sealing one object stopped.
enum SealError {
    /// Reading the staged object.
    Source(std::io::Error),
    /// The staged object is not what the staging journal says.
    Checksum,
    /// Writing to the drive.
    Drive(std::io::Error),
}

/// Reads a staged object segment by segment, and writes each sealed to
/// `out`, hashing as it goes; then makes `out`'s data durable. The sealed
/// segments are written through the page cache (with direct writes, each
/// one waits for the disk), 1 MiB at a time: measured here, 800 MiB
/// written in 8 MiB writes took 1.36 s of system time, in 1 MiB writes
/// 0.32 s.
fn seal_object(
    src: &Path,
    out: &mut std::fs::File,
    sealer: &DriveSealer,
    aad: &mut SegmentAad,
    object: &StagedObject,
    buf: &mut Buffers,
) -> std::result::Result<(), SealError> {
    use std::io::Read;
    let mut input = std::fs::File::open(src).map_err(SealError::Source)?;
    let mut hasher = blake3::Hasher::new();
    let count = segments(object.size);
    let mut left = object.size;
    for index in 0..count {
        let len = left.min(SEGMENT as u64) as usize;
        left -= len as u64;
        buf.resize(len + DriveSealer::OVERHEAD, 0);
        let body = &mut buf[DriveSealer::NONCE_LEN..DriveSealer::NONCE_LEN + len];
        match input.read_exact(body) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(SealError::Checksum),
            Err(e) => return Err(SealError::Source(e)),
        }
        hasher.update(body);
        sealer.seal_in_place(aad.of(index, index + 1 == count), buf).map_err(|_| SealError::Checksum)?;
        out.write_all(buf).map_err(SealError::Drive)?;
    }
    // longer than the journal says, or another content
    let mut byte = [0u8; 1];
    if input.read(&mut byte).map_err(SealError::Source)? != 0 || hasher.finalize().to_hex().as_str() != object.blake3 {
        return Err(SealError::Checksum);
    }
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

/// The import writes to the store without the replicating layer (it
/// needs no passphrase): in a geo-redundant vault, a pending marker made
/// before it writes has the next process that opens the vault copy what
/// it wrote.
fn mark_if_geo(store: &dyn Store, host: &str) -> Result<()> {
    if !store.is_empty_below("replication").map_err(VaultError::from)? {
        boveda_store::mark_pending(store, host).map_err(VaultError::from)?;
    }
    Ok(())
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
    /// What needs no action, such as a drive given that holds nothing.
    pub notes: Vec<String>,
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
    sealer: DriveSealer,
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
            return Ok(ImportReport { job, uploaded: 0, uploaded_bytes: 0, problems: Vec::new(), notes: Vec::new() });
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
    let mut notes: Vec<String> = Vec::new();
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
            // labelled by diskprep, then not needed: nothing of the seed
            if read_journal(&path.join(DRIVE_JOURNAL))?.is_empty() {
                notes.push(format!(
                    "drive {} ({}) holds nothing of the seed (diskprep did not need it): skipped",
                    label.drive_id,
                    path.display()
                ));
                continue;
            }
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
        arrived.push(Arrived { record, path: path.clone(), sealer: DriveSealer::new(&key), entries });
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
    mark_if_geo(store, host)?;
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
    Ok(ImportReport { job, uploaded, uploaded_bytes, problems, notes })
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

/// Opens a sealed object of `size` bytes in place, segment by segment,
/// and returns its bytes (moved to the head of `sealed`). A file of
/// another length than `size` sealed is an altered one.
fn open_object<'a>(
    sealer: &DriveSealer,
    aad: &mut SegmentAad,
    size: u64,
    sealed: &'a mut [u8],
) -> std::result::Result<&'a [u8], ObjectError> {
    if sealed.len() as u64 != sealed_len(size) {
        return Err(ObjectError::Auth);
    }
    let count = segments(size);
    let (mut read, mut written) = (0usize, 0usize);
    for index in 0..count {
        let len = (size - written as u64).min(SEGMENT as u64) as usize;
        let end = read + len + DriveSealer::OVERHEAD;
        let opened = sealer
            .open_in_place(aad.of(index, index + 1 == count), &mut sealed[read..end])
            .map_err(|_| ObjectError::Auth)?;
        debug_assert_eq!(opened.len(), len);
        sealed.copy_within(read + DriveSealer::NONCE_LEN..read + DriveSealer::NONCE_LEN + len, written);
        read = end;
        written += len;
    }
    Ok(&sealed[..written])
}

/// Opens, checks and uploads one object; `Ok(None)` when the store has it
/// already (a re-run).
fn import_object(
    store: &dyn Store,
    drive: &Arrived,
    job_id: &str,
    entry: &JournalEntry,
) -> std::result::Result<Option<u64>, ObjectError> {
    let mut sealed = std::fs::read(drive.path.join(DRIVE_OBJECTS).join(&entry.name)).map_err(ObjectError::Missing)?;
    let bytes = open_object(&drive.sealer, &mut SegmentAad::new(job_id, &entry.name), entry.size, &mut sealed)?;
    if blake3::hash(bytes).to_hex().as_str() != entry.blake3 {
        return Err(ObjectError::Checksum);
    }
    match store.put(&entry.name, bytes, PutMode::Create) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals `data` as a staged object named `packs/x` would be, and
    /// returns the sealed file's bytes.
    fn sealed(dir: &Path, data: &[u8], claimed: &StagedObject) -> std::result::Result<Vec<u8>, &'static str> {
        let src = dir.join("staged");
        std::fs::write(&src, data).expect("write staged");
        let out_path = dir.join("sealed");
        let mut out = std::fs::File::create(&out_path).expect("create");
        let mut aad = SegmentAad::new("job", &claimed.name);
        match seal_object(&src, &mut out, &DriveSealer::new(&[9; 32]), &mut aad, claimed, &mut Vec::new()) {
            Ok(()) => Ok(std::fs::read(&out_path).expect("read sealed")),
            Err(SealError::Checksum) => Err("checksum"),
            Err(_) => Err("io"),
        }
    }

    fn staged(data: &[u8]) -> StagedObject {
        StagedObject {
            name: "packs/x".into(),
            size: data.len() as u64,
            blake3: blake3::hash(data).to_hex().to_string(),
        }
    }

    fn open(bytes: &mut [u8], size: u64) -> std::result::Result<Vec<u8>, ()> {
        let mut aad = SegmentAad::new("job", "packs/x");
        open_object(&DriveSealer::new(&[9; 32]), &mut aad, size, bytes).map(<[u8]>::to_vec).map_err(|_| ())
    }

    #[test]
    fn objects_of_every_segment_count_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT + 12_345] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut bytes = sealed(dir.path(), &data, &staged(&data)).expect("seal");
            assert_eq!(bytes.len() as u64, sealed_len(len as u64), "length {len}");
            assert_eq!(open(&mut bytes, len as u64), Ok(data), "length {len}");
        }
    }

    #[test]
    fn a_segment_moved_cut_off_or_altered_does_not_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..3 * SEGMENT).map(|i| (i * 7 % 253) as u8).collect();
        let good = sealed(dir.path(), &data, &staged(&data)).expect("seal");
        let seg = SEGMENT + DriveSealer::OVERHEAD;
        let size = data.len() as u64;

        let mut swapped = good.clone();
        swapped[..seg].copy_from_slice(&good[seg..2 * seg]);
        swapped[seg..2 * seg].copy_from_slice(&good[..seg]);
        assert!(open(&mut swapped, size).is_err(), "two segments swapped");

        // the last segment dropped, and the object claimed that much shorter
        let mut cut = good[..2 * seg].to_vec();
        assert!(open(&mut cut, 2 * SEGMENT as u64).is_err(), "the last segment cut off");

        let mut short = good[..good.len() - 1].to_vec();
        assert!(open(&mut short, size).is_err(), "one byte short");

        let mut flipped = good.clone();
        flipped[2 * seg + 100] ^= 0x20;
        assert!(open(&mut flipped, size).is_err(), "a bit flipped");

        let mut other_name = good.clone();
        let mut aad = SegmentAad::new("job", "packs/y");
        assert!(open_object(&DriveSealer::new(&[9; 32]), &mut aad, size, &mut other_name).is_err(), "renamed");

        let mut intact = good;
        assert_eq!(open(&mut intact, size), Ok(data));
    }

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

    #[test]
    fn a_staged_object_longer_shorter_or_other_than_its_journal_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..SEGMENT + 10).map(|i| (i % 256) as u8).collect();
        let claimed = staged(&data);
        assert_eq!(sealed(dir.path(), &data[..data.len() - 1], &claimed), Err("checksum"), "shorter");
        let mut longer = data.clone();
        longer.push(0);
        assert_eq!(sealed(dir.path(), &longer, &claimed), Err("checksum"), "longer");
        let mut other = data.clone();
        other[5] ^= 1;
        assert_eq!(sealed(dir.path(), &other, &claimed), Err("checksum"), "altered");
    }
}

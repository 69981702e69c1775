//! `import`: checks the drives of an import job where the store is
//! reachable, opens and verifies every object, and uploads it.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use boveda_store::{PutMode, Store, StoreErrorKind};
use boveda_vault::drive_format::{
    self, DRIVE_JOURNAL, DRIVE_LABEL, DRIVE_OBJECTS, JournalEntry, SegmentAad, key_check,
};
use boveda_vault::{DriveSealer, VaultError};
use jiff::Timestamp;
use serde::Serialize;

use super::drive::{io_err, parse_key, read_journal, read_label};
use crate::error::{Result, ServiceError};
use crate::offline::{
    DriveState, ImportJob, ImportState, SEED_FOLDERS, StagedObject, find_import_job, read_staging_journal,
    update_import_job,
};

/// Objects an import uploads at once.
const IMPORT_PARALLEL: usize = 8;

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

/// Opens, checks and uploads one object; `Ok(None)` when the store has it
/// already (a re-run).
fn import_object(
    store: &dyn Store,
    drive: &Arrived,
    job_id: &str,
    entry: &JournalEntry,
) -> std::result::Result<Option<u64>, ObjectError> {
    let mut sealed = std::fs::read(drive.path.join(DRIVE_OBJECTS).join(&entry.name)).map_err(ObjectError::Missing)?;
    let bytes =
        drive_format::open_object(&drive.sealer, &mut SegmentAad::new(job_id, &entry.name), entry.size, &mut sealed)
            .map_err(|_| ObjectError::Auth)?;
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

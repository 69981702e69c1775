//! `import`: checks the drives of an import job where the store is
//! reachable, opens and verifies every object, and uploads it.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use boveda_engine::drive_files::{read_journal, read_label};
use boveda_store::Store;
use boveda_vault::drive_format::{
    self, DRIVE_JOURNAL, DRIVE_LABEL, DRIVE_OBJECTS, JournalEntry, SegmentAad, key_check,
};
use boveda_vault::{Added, DriveSealer, StoreSide};
use jiff::Timestamp;
use serde::Serialize;

use super::drive::parse_key;
use crate::error::{Result, ServiceError};
use crate::offline::{
    DriveState, ImportJob, ImportState, SEED_FOLDERS, StagedObject, StagingJournal, find_import_job,
    read_staging_journal, update_import_job,
};

/// Objects an import uploads at once.
const IMPORT_PARALLEL: usize = 8;

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

/// What an import run has found and done so far.
#[derive(Default)]
struct Tally {
    /// Problems not of one drive.
    problems: Vec<String>,
    notes: Vec<String>,
    /// Problems of each drive, by drive id.
    drive_problems: BTreeMap<String, Vec<String>>,
    /// Drives (indexes in the job) whose key does not open them.
    bad_drive: HashSet<usize>,
    /// Drives that arrived, whether they open or not.
    given: HashSet<usize>,
    uploaded: u64,
    uploaded_bytes: u64,
    /// Objects of the seed in the store now.
    in_store: HashSet<String>,
    /// Objects uploaded from the staging folder.
    staged_uploads: u64,
}

impl Tally {
    fn drive_problem(&mut self, drive: &str, problem: impl Into<String>) {
        self.drive_problems.entry(drive.to_string()).or_default().push(problem.into());
    }
}

/// `offline import`, on the store's side: checks every object of the
/// drives against their journals and uploads it unchanged, packs first and
/// point manifests last (only when every object of the seed is in the
/// store). Idempotent: a re-run after a failure or a kill finishes the job.
/// `keys` replaces drive keys of the job (drive id to hex key). `force`
/// imports after the shipping deadline. It needs no passphrase: it goes
/// through the vault's [`StoreSide`].
///
/// # Errors
/// `NotFound` for the job; `Conflict` for a job not shipped yet, or expired
/// without `force`; a store error. Problems with drives and objects are in
/// the report and the job, not errors.
pub fn import(store: &dyn Store, req: &ImportRequest<'_>) -> Result<ImportReport> {
    let side = StoreSide::new(store);
    let job = find_import_job(store, req.name)?;
    let staged = match req.from_staging {
        Some(dir) => Some((dir, staging_of(&job, dir)?)),
        None => None,
    };
    if job.state == ImportState::Completed {
        return Ok(ImportReport { job, uploaded: 0, uploaded_bytes: 0, problems: Vec::new(), notes: Vec::new() });
    }
    check_importable(&job, req)?;
    let mut tally = Tally::default();
    let arrived = check_drives(&job, req, &mut tally)?;
    let job = mark_received(store, req, &tally.given)?;
    side.mark_for_replication(req.host)?;
    for folder in SEED_FOLDERS {
        // a manifest only once every object it needs is in the store
        if folder == "points" && !seed_is_whole(&job, staged.as_ref().map(|s| &s.1), &tally) {
            tally.problems.push(format!(
                "the seed's point was not imported: {} of its {} objects are in the store, and every drive must arrive intact",
                tally.in_store.len(),
                job.objects
            ));
            break;
        }
        upload_from_drives(side, &job, &arrived, folder, &mut tally)?;
        if let Some((dir, journal)) = &staged {
            upload_from_staging(side, dir, journal, folder, &mut tally)?;
        }
    }
    finish(store, req, &job, staged.is_some(), tally)
}

/// The staging folder still holding the seed: what no drive brought (a
/// lost drive, an altered object) is uploaded from it over the network.
fn staging_of(job: &ImportJob, dir: &Path) -> Result<StagingJournal> {
    let journal = read_staging_journal(dir)?;
    if journal.import_job_id != job.id {
        return Err(ServiceError::Invalid(format!(
            "{} holds the seed of import job {}, not {}",
            dir.display(),
            journal.import_job,
            job.name
        )));
    }
    Ok(journal)
}

/// A job whose drives are shipped and within their deadline (or forced).
fn check_importable(job: &ImportJob, req: &ImportRequest<'_>) -> Result<()> {
    match job.state {
        ImportState::Shipping
        | ImportState::Received
        | ImportState::Transferring
        | ImportState::Packaging
        | ImportState::Closed
        | ImportState::Completed => {}
        other => {
            return Err(ServiceError::Conflict(format!(
                "import job {} is {}: its drives are not shipped yet (record the shipping first)",
                job.name,
                other.as_str()
            )));
        }
    }
    if job.is_expired(req.now) && !req.force {
        return Err(ServiceError::Conflict(format!(
            "import job {} expired: its drives were due by {}; force the import to take them anyway",
            job.name,
            job.deadline.map(|d| d.to_string()).unwrap_or_default()
        )));
    }
    Ok(())
}

/// The drives given, checked: each must be labelled for this job, be one
/// of its drives, and open with its key. What does not is in the tally.
fn check_drives(job: &ImportJob, req: &ImportRequest<'_>, tally: &mut Tally) -> Result<Vec<Arrived>> {
    let job_id = job.id.to_hex();
    let mut arrived = Vec::new();
    for path in req.drives {
        let label = match read_label(path) {
            Ok(Some(label)) => label,
            Ok(None) => {
                tally.problems.push(format!("{} is not a boveda drive (no {DRIVE_LABEL})", path.display()));
                continue;
            }
            Err(e) => {
                tally.problems.push(e.to_string());
                continue;
            }
        };
        if label.import_job_id != job_id {
            tally.problems.push(format!(
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
                tally.notes.push(format!(
                    "drive {} ({}) holds nothing of the seed (diskprep did not need it): skipped",
                    label.drive_id,
                    path.display()
                ));
            } else {
                tally.problems.push(format!(
                    "drive {} ({}) is not one of import job {}'s drives: not imported",
                    label.drive_id,
                    path.display(),
                    job.name
                ));
            }
            continue;
        };
        tally.given.insert(record);
        let hex = req.keys.get(&label.drive_id).unwrap_or(&job.drives[record].key);
        let Some(key) = parse_key(hex) else {
            tally.drive_problem(&label.drive_id, "its drive key is not 64 hex digits");
            tally.bad_drive.insert(record);
            continue;
        };
        if !label.key_check.is_empty() && key_check(&key, &label.drive_id) != label.key_check {
            tally.drive_problem(&label.drive_id, "wrong drive key: its objects do not open");
            tally.bad_drive.insert(record);
            continue;
        }
        let entries = read_journal(&path.join(DRIVE_JOURNAL))?;
        arrived.push(Arrived { record, path: path.clone(), sealer: DriveSealer::new(&key), entries });
    }
    Ok(arrived)
}

/// Records the drives that arrived (`Received`), then the job as
/// `Transferring`.
fn mark_received(store: &dyn Store, req: &ImportRequest<'_>, given: &HashSet<usize>) -> Result<ImportJob> {
    let now = req.now;
    update_import_job(store, req.name, |j| {
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
    update_import_job(store, req.name, |j| {
        j.state = ImportState::Transferring;
        for (i, d) in j.drives.iter_mut().enumerate() {
            if given.contains(&i) && d.state == DriveState::Received {
                d.state = DriveState::Transferring;
            }
        }
        j.note(now, "transferring");
        Ok(())
    })
}

/// Whether every object a point manifest needs is in the store: with the
/// staging folder, its journal says which; without it, every drive must
/// have arrived intact.
fn seed_is_whole(job: &ImportJob, staged: Option<&StagingJournal>, tally: &Tally) -> bool {
    match staged {
        Some(journal) => {
            journal.objects.iter().filter(|o| !o.name.starts_with("points/")).all(|o| tally.in_store.contains(&o.name))
        }
        None => {
            tally.problems.is_empty()
                && tally.drive_problems.is_empty()
                && tally.bad_drive.is_empty()
                && tally.given.len() == job.drives.len()
        }
    }
}

/// Uploads a folder's objects of every drive that opens, [`IMPORT_PARALLEL`]
/// at a time; objects that fail are named in the tally.
///
/// # Errors
/// The first store error (the workers stop at it).
fn upload_from_drives(
    side: StoreSide<'_>,
    job: &ImportJob,
    arrived: &[Arrived],
    folder: &str,
    tally: &mut Tally,
) -> Result<()> {
    let job_id = job.id.to_hex();
    let work: Vec<(&Arrived, &JournalEntry)> = arrived
        .iter()
        .filter(|a| !tally.bad_drive.contains(&a.record))
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
                    let outcome = import_object(side, a, &job_id, entry);
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
        let drive = &job.drives[record].id;
        match outcome {
            Ok(added) => {
                if added == Added::New {
                    tally.uploaded += 1;
                    tally.uploaded_bytes += entry.size;
                }
                tally.in_store.insert(entry.name.clone());
            }
            Err(ObjectError::Auth) => {
                tally
                    .drive_problem(drive, format!("object {} fails authentication (altered on the drive)", entry.name));
            }
            Err(ObjectError::Checksum) => {
                tally.drive_problem(drive, format!("object {} fails its checksum", entry.name));
            }
            Err(ObjectError::Missing(e)) => {
                tally.drive_problem(drive, format!("object {} cannot be read ({e})", entry.name));
            }
            Err(ObjectError::Store(e)) => return Err(e),
        }
    }
    Ok(())
}

/// Uploads a folder's objects no drive brought from the staging folder.
fn upload_from_staging(
    side: StoreSide<'_>,
    dir: &Path,
    journal: &StagingJournal,
    folder: &str,
    tally: &mut Tally,
) -> Result<()> {
    for o in journal.objects.iter().filter(|o| o.name.split('/').next() == Some(folder)) {
        if tally.in_store.contains(&o.name) {
            continue;
        }
        if upload_staged(side, dir, o)? == Added::New {
            tally.uploaded += 1;
            tally.uploaded_bytes += o.size;
            tally.staged_uploads += 1;
        }
        tally.in_store.insert(o.name.clone());
    }
    Ok(())
}

/// Records the outcome: each drive's state and problems, then the job
/// `Completed` when the whole seed is in the store, else `Closed` (a
/// re-run with the missing drives continues).
fn finish(
    store: &dyn Store,
    req: &ImportRequest<'_>,
    job: &ImportJob,
    from_staging: bool,
    mut tally: Tally,
) -> Result<ImportReport> {
    let now = req.now;
    let complete = tally.in_store.len() as u64 >= job.objects
        && (from_staging || (tally.problems.is_empty() && tally.drive_problems.is_empty()));
    for (id, ps) in &tally.drive_problems {
        for p in ps {
            tally.problems.push(format!("drive {id}: {p}"));
        }
    }
    for (_, d) in job.drives.iter().enumerate().filter(|(i, _)| !tally.given.contains(i)) {
        tally.problems.push(if from_staging {
            format!("drive {} never arrived: its objects were uploaded from the staging folder", d.id)
        } else {
            format!("drive {} never arrived: its objects are not in the store", d.id)
        });
    }
    let imported = tally.in_store.len() as u64;
    update_import_job(store, req.name, |j| {
        j.state = ImportState::Packaging;
        j.imported = imported;
        Ok(())
    })?;
    let problems = tally.problems.len();
    let job = update_import_job(store, req.name, |j| {
        for (i, d) in j.drives.iter_mut().enumerate() {
            let ps = tally.drive_problems.get(&d.id).cloned().unwrap_or_default();
            d.state = if !tally.given.contains(&i) {
                DriveState::NeverReceived
            } else if ps.is_empty() {
                DriveState::Completed
            } else {
                DriveState::CompletedMoreInfo
            };
            d.problems = ps;
        }
        if tally.staged_uploads > 0 {
            j.note(
                now,
                format!("{} object(s) no drive brought uploaded from the staging folder", tally.staged_uploads),
            );
        }
        if complete {
            j.state = ImportState::Completed;
            j.note(now, format!("completed: {imported} objects in the store"));
        } else {
            j.state = ImportState::Closed;
            j.note(now, format!("closed with {problems} problem(s); run the import again with the missing drives"));
        }
        Ok(())
    })?;
    Ok(ImportReport {
        job,
        uploaded: tally.uploaded,
        uploaded_bytes: tally.uploaded_bytes,
        problems: tally.problems,
        notes: tally.notes,
    })
}

/// Uploads one object from the staging folder, checked against the
/// staging journal.
///
/// # Errors
/// `Invalid` naming an object that is missing or fails its checksum; a
/// store error.
fn upload_staged(side: StoreSide<'_>, dir: &Path, object: &StagedObject) -> Result<Added> {
    let path = dir.join(&object.name);
    let bytes = std::fs::read(&path).map_err(|e| ServiceError::io(&path, e))?;
    if bytes.len() as u64 != object.size || blake3::hash(&bytes).to_hex().as_str() != object.blake3 {
        return Err(ServiceError::Invalid(format!("staged object {} fails its checksum", path.display())));
    }
    Ok(side.add_object(&object.name, &bytes)?)
}

/// One object's import: its drive (index in the job), journal entry and
/// result.
type Outcome<'a> = (usize, &'a JournalEntry, std::result::Result<Added, ObjectError>);

enum ObjectError {
    Auth,
    Checksum,
    Missing(std::io::Error),
    Store(ServiceError),
}

/// Opens, checks and adds one object to the store.
fn import_object(
    side: StoreSide<'_>,
    drive: &Arrived,
    job_id: &str,
    entry: &JournalEntry,
) -> std::result::Result<Added, ObjectError> {
    let mut sealed = std::fs::read(drive.path.join(DRIVE_OBJECTS).join(&entry.name)).map_err(ObjectError::Missing)?;
    let bytes =
        drive_format::open_object(&drive.sealer, &mut SegmentAad::new(job_id, &entry.name), entry.size, &mut sealed)
            .map_err(|_| ObjectError::Auth)?;
    if blake3::hash(bytes).to_hex().as_str() != entry.blake3 {
        return Err(ObjectError::Checksum);
    }
    side.add_object(&entry.name, bytes).map_err(|e| ObjectError::Store(e.into()))
}

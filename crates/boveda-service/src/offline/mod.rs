//! Offline seeding: an item's first full backup travels on shipped drives
//! (Azure Backup's offline backup through the Import/Export service).
//!
//! 1. [`init_offline`] records an **import job** for a protected item and
//!    its staging folder.
//! 2. The item's next backup is the **offline seed** ([`seed_backup`]): an
//!    `OfflineSeed` job writes the point's packs, index objects and manifest
//!    into the staging folder (a [`RoutedStore`]: the job's records stay in
//!    the vault's store, the data never reaches it), then a journal of every
//!    staged object with its BLAKE3 checksum.
//! 3. `diskprep` ([`crate::offline::drive`]) seals the staged objects onto
//!    drives under per-drive keys; `shipping` records the package.
//! 4. `import` ([`crate::offline::drive`]), where the store is reachable,
//!    checks and uploads the objects unchanged. Once the job is `Completed`
//!    the seeded point is an ordinary point of the item, and its next
//!    backup is incremental against it.
//!
//! Import jobs are kept as plain JSON in the vault's store
//! (`imports/<name>.json`, replaced by compare-and-swap): the importing side
//! reads and advances them with store access alone, never the vault
//! passphrase. They hold no data of the vault: names, states, drive ids and
//! keys (which only open the drives, whose objects are vault-encrypted).

pub(crate) mod diskprep;
pub(crate) mod drive;
pub(crate) mod import;

use std::path::{Path, PathBuf};

use boveda_engine::drive_files;
use boveda_store::Store;
use boveda_vault::{RecordId, StoreSide, Vault};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};
use crate::items::{Item, ProtectionState};
use crate::runtime::job::JobEnv;

pub use boveda_vault::store_side::SEED_FOLDERS;

/// The journal of a staged seed, in its staging folder.
pub const STAGING_JOURNAL: &str = "seed-journal.json";

/// How long drives may take to arrive after shipping.
pub const SHIPPING_WINDOW: SignedDuration = SignedDuration::from_hours(14 * 24);

pub const IMPORT_JOB_NAME_RULE: &str =
    "an import-job name has 2 to 50 characters, begins with a letter, and holds only letters, digits and hyphens";

/// An import job's state: the seed's own two, then Azure's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImportState {
    /// Initiated: the item's next backup is the seed.
    SeedPending,
    /// The seed is in the staging folder, not yet on drives.
    Staged,
    Creating,
    Shipping,
    Received,
    Transferring,
    Packaging,
    Completed,
    /// Ended with errors (see the drives' problems).
    Closed,
}

impl ImportState {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportState::SeedPending => "SeedPending",
            ImportState::Staged => "Staged",
            ImportState::Creating => "Creating",
            ImportState::Shipping => "Shipping",
            ImportState::Received => "Received",
            ImportState::Transferring => "Transferring",
            ImportState::Packaging => "Packaging",
            ImportState::Completed => "Completed",
            ImportState::Closed => "Closed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DriveState {
    Specified,
    Received,
    Transferring,
    Completed,
    CompletedMoreInfo,
    NeverReceived,
}

impl DriveState {
    pub fn as_str(self) -> &'static str {
        match self {
            DriveState::Specified => "Specified",
            DriveState::Received => "Received",
            DriveState::Transferring => "Transferring",
            DriveState::Completed => "Completed",
            DriveState::CompletedMoreInfo => "CompletedMoreInfo",
            DriveState::NeverReceived => "NeverReceived",
        }
    }
}

/// One shipped drive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveRecord {
    pub id: String,
    /// The drive key, hex (opens the drive's objects).
    pub key: String,
    pub state: DriveState,
    /// Objects and bytes sealed onto it.
    pub objects: u64,
    pub bytes: u64,
    /// What the import found wrong with it.
    #[serde(default)]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub time: Timestamp,
    pub event: String,
}

/// An import job (plain JSON in the vault's store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportJob {
    pub name: String,
    pub id: RecordId,
    pub vault_id: String,
    pub item_id: RecordId,
    /// The staging folder, on the host that made the seed.
    pub staging: PathBuf,
    pub host: String,
    pub state: ImportState,
    pub created: Timestamp,
    /// The estimated size of the seed when it was initiated.
    pub estimated_bytes: u64,
    /// The seeded point, once staged.
    pub point: Option<String>,
    /// Objects and bytes staged.
    pub objects: u64,
    pub bytes: u64,
    pub drives: Vec<DriveRecord>,
    pub carrier: Option<String>,
    pub tracking: Option<String>,
    pub shipped: Option<Timestamp>,
    /// Drives must arrive before this (two weeks after shipping).
    pub deadline: Option<Timestamp>,
    /// Objects uploaded by the import, of `objects`.
    #[serde(default)]
    pub imported: u64,
    /// Where the drives go: the vault's shipping address, recorded when
    /// the job is initiated and whenever the address changes before the
    /// drives are shipped, so that diskprep needs no passphrase.
    #[serde(default)]
    pub shipping_address: Option<String>,
    pub history: Vec<HistoryEntry>,
}

impl ImportJob {
    /// The state shown: `Expired` once the deadline passed before the
    /// drives were received.
    pub fn shown_state(&self, now: Timestamp) -> String {
        if self.is_expired(now) { "Expired".into() } else { self.state.as_str().into() }
    }

    pub fn is_expired(&self, now: Timestamp) -> bool {
        matches!(self.state, ImportState::Shipping) && self.deadline.is_some_and(|d| now > d)
    }

    pub(crate) fn note(&mut self, time: Timestamp, event: impl Into<String>) {
        self.history.push(HistoryEntry { time, event: event.into() });
    }

    /// The staging folder of this job's seed.
    pub fn staging_dir(&self) -> PathBuf {
        self.staging.join(&self.name)
    }
}

/// What an item shows about its offline seeding, if any.
pub fn seeding_status(job: &ImportJob) -> Option<String> {
    match job.state {
        ImportState::SeedPending => Some("Offline seeding: initial backup pending".into()),
        ImportState::Completed => None,
        _ => Some(format!("Waiting for import job {} to complete ({})", job.name, job.state.as_str())),
    }
}

/// # Errors
/// `Invalid` quoting the rule.
pub fn validate_import_job_name(name: &str) -> Result<()> {
    let ok = (2..=50).contains(&name.chars().count())
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::Invalid(format!("invalid import-job name {name:?}: {IMPORT_JOB_NAME_RULE}")))
    }
}

fn record_name(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Every import job of the vault whose store this is, by name.
///
/// # Errors
/// A store error; `Invalid` for a record that does not parse (named).
pub fn list_import_jobs(store: &dyn Store) -> Result<Vec<ImportJob>> {
    let mut jobs = Vec::new();
    for record in StoreSide::new(store).records()? {
        jobs.push(parse_job(&record.name, &record.bytes)?);
    }
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(jobs)
}

fn parse_job(name: &str, bytes: &[u8]) -> Result<ImportJob> {
    serde_json::from_slice(bytes)
        .map_err(|e| ServiceError::Invalid(format!("import job record {name} does not parse: {e}")))
}

/// One import job, by name (case-insensitive).
///
/// # Errors
/// `NotFound` naming it; a store error.
pub fn find_import_job(store: &dyn Store, name: &str) -> Result<ImportJob> {
    Ok(read_job(store, name)?.0)
}

fn read_job(store: &dyn Store, name: &str) -> Result<(ImportJob, Option<String>)> {
    let not_found = || ServiceError::NotFound(format!("no import job named {name:?} in this vault"));
    validate_import_job_name(name).map_err(|_| not_found())?;
    let record = StoreSide::new(store).record(&record_name(name))?.ok_or_else(not_found)?;
    Ok((parse_job(&record.name, &record.bytes)?, record.etag))
}

/// Changes an import job by compare-and-swap: re-read and re-applied when
/// another process changed it first. Returns the job written.
///
/// # Errors
/// What `change` returns; a store error; `Conflict` after 16 lost races.
pub fn update_import_job(
    store: &dyn Store,
    name: &str,
    change: impl Fn(&mut ImportJob) -> Result<()>,
) -> Result<ImportJob> {
    for _ in 0..16 {
        let (mut job, etag) = read_job(store, name)?;
        change(&mut job)?;
        let bytes = serde_json::to_vec_pretty(&job).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let Some(tag) = etag else {
            return Err(ServiceError::Invalid(
                "this store gives no version tags: import jobs cannot be changed safely".into(),
            ));
        };
        if StoreSide::new(store).replace_record(&record_name(&job.name), &bytes, &tag)? {
            return Ok(job);
        }
    }
    Err(ServiceError::Conflict(format!("import job {name} kept changing under this update; try again")))
}

/// Records a new shipping address in the import jobs whose drives are not
/// shipped yet.
///
/// # Errors
/// A store error.
pub(crate) fn readdress_import_jobs(store: &dyn Store, address: Option<&str>) -> Result<()> {
    for job in list_import_jobs(store)? {
        if matches!(job.state, ImportState::SeedPending | ImportState::Staged | ImportState::Creating)
            && job.shipping_address.as_deref() != address
        {
            update_import_job(store, &job.name, |j| {
                j.shipping_address = address.map(str::to_string);
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// The import job of an item that is not completed, if any.
///
/// # Errors
/// A store error.
pub fn item_import_job(vault: &Vault, item: &Item) -> Result<Option<ImportJob>> {
    Ok(list_import_jobs(&**vault.store())?
        .into_iter()
        .find(|j| j.item_id == item.id && j.state != ImportState::Completed))
}

/// What offline seeding of an item will need.
#[derive(Debug, Clone, Serialize)]
pub struct SeedEstimate {
    /// The item's source size: the seed is at most about this (less after
    /// compression and deduplication).
    pub source_bytes: u64,
    /// Free space in the staging folder.
    pub staging_free: u64,
}

/// `offline init`: marks a protected item for offline seeding into a
/// staging folder, under a new import job.
///
/// # Errors
/// `Invalid` for a bad name, a staging folder that is missing, not a
/// folder, read-only, or clearly too small (with the numbers); `Conflict`
/// for a taken name, an item that is not protected, already has points, or
/// already has an import job.
pub fn init_offline(
    vault: &Vault,
    env: &JobEnv<'_>,
    item: &Item,
    staging: &Path,
    name: &str,
) -> Result<(ImportJob, SeedEstimate)> {
    validate_import_job_name(name)?;
    if item.protection.state != ProtectionState::Protected {
        return Err(ServiceError::Conflict(format!(
            "item {} is not protected: offline seeding is for a protected item's first backup",
            item.name
        )));
    }
    if !vault.list_item_points(&item.id)?.is_empty() {
        return Err(ServiceError::Conflict(format!(
            "item {} already has recovery points: offline seeding is for an item's first backup",
            item.name
        )));
    }
    let jobs = list_import_jobs(&**vault.store())?;
    if let Some(j) = jobs.iter().find(|j| j.name.eq_ignore_ascii_case(name)) {
        return Err(ServiceError::Conflict(format!("an import job named {:?} already exists in this vault", j.name)));
    }
    if let Some(j) = jobs.iter().find(|j| j.item_id == item.id && j.state != ImportState::Completed) {
        return Err(ServiceError::Conflict(format!("item {} is already seeded by import job {}", item.name, j.name)));
    }
    let staging = check_staging(staging)?;
    let estimate = SeedEstimate { source_bytes: source_bytes(item), staging_free: drive_files::free_space(&staging)? };
    // refused only when it clearly cannot fit: not even at 2:1 compression
    if estimate.staging_free < estimate.source_bytes / 2 {
        return Err(ServiceError::Invalid(format!(
            "the staging folder {} has {} bytes free, and item {}'s seed needs up to about {} bytes (its source size; at least half of it even well compressed)",
            staging.display(),
            estimate.staging_free,
            item.name,
            estimate.source_bytes
        )));
    }
    let now = env.clock.now();
    let mut job = ImportJob {
        name: name.to_string(),
        id: RecordId::random(),
        vault_id: vault.config().id.to_hex(),
        item_id: item.id,
        staging: staging.clone(),
        host: env.hostname.clone(),
        state: ImportState::SeedPending,
        created: now,
        estimated_bytes: estimate.source_bytes,
        point: None,
        objects: 0,
        bytes: 0,
        drives: Vec::new(),
        carrier: None,
        tracking: None,
        shipped: None,
        deadline: None,
        imported: 0,
        shipping_address: crate::runtime::control::vault_control(vault)?.shipping_address,
        history: Vec::new(),
    };
    job.note(now, format!("initiated for item {} with staging folder {}", item.name, staging.display()));
    let bytes = serde_json::to_vec_pretty(&job).map_err(|e| ServiceError::Internal(e.to_string()))?;
    if !StoreSide::new(&**vault.store()).create_record(&record_name(name), &bytes)? {
        return Err(ServiceError::Conflict(format!("an import job named {name:?} already exists in this vault")));
    }
    Ok((job, estimate))
}

/// A staging folder that exists, is a folder and takes writes; made
/// absolute.
fn check_staging(staging: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(staging)
        .map_err(|e| ServiceError::Invalid(format!("staging folder {}: {e}", staging.display())))?;
    match std::fs::metadata(&abs) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(ServiceError::Invalid(format!("staging location {} is not a folder", abs.display()))),
        Err(e) => return Err(ServiceError::Invalid(format!("staging folder {}: {e}", abs.display()))),
    }
    let probe = abs.join(format!(".boveda-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| ServiceError::Invalid(format!("staging folder {} cannot be written: {e}", abs.display())))?;
    Ok(abs)
}

/// The bytes an item's source holds (what a full backup reads).
fn source_bytes(item: &Item) -> u64 {
    fn tree(p: &Path) -> u64 {
        match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => {
                std::fs::read_dir(p).map(|entries| entries.flatten().map(|e| tree(&e.path())).sum()).unwrap_or(0)
            }
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        }
    }
    match &item.source {
        crate::items::ItemSource::Files { paths, .. } => paths.iter().map(|p| tree(p)).sum(),
        crate::items::ItemSource::Disk { path } => tree(path),
        crate::items::ItemSource::Vm { disks, .. } => disks.iter().map(|(_, p)| tree(p)).sum(),
    }
}

/// An object staged for seeding, as the journal lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedObject {
    pub name: String,
    pub size: u64,
    /// BLAKE3 of the object's bytes, hex.
    pub blake3: String,
}

/// The journal of a staged seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingJournal {
    pub vault_id: String,
    pub import_job: String,
    pub import_job_id: RecordId,
    pub point: String,
    pub objects: Vec<StagedObject>,
}

/// The folder holding a finished seed, from what a user gives: the seed's
/// own folder, or the staging folder holding it (the import job's seed
/// inside it, or its only seed).
///
/// # Errors
/// `Invalid` for a folder that holds no finished seed, or several without
/// an import job named (`Field`, naming `import_job`); `Io` when it
/// cannot be read.
pub fn find_seed(staging: &Path, import_job: Option<&str>) -> Result<PathBuf> {
    if staging.join(STAGING_JOURNAL).exists() {
        return Ok(staging.to_path_buf());
    }
    if let Some(name) = import_job {
        return Ok(staging.join(name));
    }
    let seeds: Vec<PathBuf> = std::fs::read_dir(staging)
        .map_err(|e| ServiceError::io(staging, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(STAGING_JOURNAL).exists())
        .collect();
    match seeds.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ServiceError::Invalid(format!(
            "{} holds no finished offline seed: run the item's backup first",
            staging.display()
        ))),
        _ => Err(ServiceError::field_error(
            "import_job",
            format!("{} holds several seeds: choose one by its import job", staging.display()),
        )),
    }
}

/// Reads a staging folder's journal.
///
/// # Errors
/// `Invalid` when the folder holds no finished seed.
pub fn read_staging_journal(dir: &Path) -> Result<StagingJournal> {
    let path = dir.join(STAGING_JOURNAL);
    let bytes = std::fs::read(&path).map_err(|e| {
        ServiceError::Invalid(format!("{} holds no finished offline seed ({}: {e})", dir.display(), path.display()))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ServiceError::Invalid(format!("{} does not parse: {e}", path.display())))
}

/// `offline shipping`: records the package that carries the drives; the
/// drives must arrive within two weeks.
///
/// # Errors
/// `NotFound` for the job; `Conflict` for a job without drives, or a
/// tracking number another import job uses; `Invalid` for empty values.
pub fn record_shipping(
    store: &dyn Store,
    name: &str,
    carrier: &str,
    tracking: &str,
    now: Timestamp,
) -> Result<ImportJob> {
    if carrier.trim().is_empty() || tracking.trim().is_empty() {
        return Err(ServiceError::Invalid("the carrier and the tracking number must not be empty".into()));
    }
    if let Some(other) = list_import_jobs(store)?
        .into_iter()
        .find(|j| !j.name.eq_ignore_ascii_case(name) && j.tracking.as_deref() == Some(tracking))
    {
        return Err(ServiceError::Conflict(format!(
            "tracking number {tracking} is already used by import job {}: one package per import job",
            other.name
        )));
    }
    update_import_job(store, name, |j| {
        match j.state {
            ImportState::Creating | ImportState::Shipping => {}
            ImportState::SeedPending | ImportState::Staged => {
                return Err(ServiceError::Conflict(format!(
                    "import job {} has no drives yet: prepare them first (diskprep)",
                    j.name
                )));
            }
            other => {
                return Err(ServiceError::Conflict(format!(
                    "import job {} is {} already: its shipping cannot change",
                    j.name,
                    other.as_str()
                )));
            }
        }
        j.state = ImportState::Shipping;
        j.carrier = Some(carrier.to_string());
        j.tracking = Some(tracking.to_string());
        j.shipped = Some(now);
        j.deadline = Some(now + SHIPPING_WINDOW);
        j.note(now, format!("shipped with {carrier}, tracking {tracking}; drives due by {}", now + SHIPPING_WINDOW));
        Ok(())
    })
}

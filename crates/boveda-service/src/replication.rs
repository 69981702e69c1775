//! Geo-redundant (`grs`) vaults: every object of the vault copied to its
//! secondary store.
//!
//! A process that opens a geo-redundant vault writes through a
//! [`ReplicatingStore`]: each write is covered by a pending marker, data
//! packs are copied to the secondary as the backup writes them, and
//! [`finish_replication`] (which every command, the agent and the server
//! call after their work) runs a pass that copies the rest and removes the
//! markers. A process that finds another writer's marker when it opens the
//! vault (one that was killed, or is still running) runs the pass too. What
//! a pass copies is the difference of the two stores' listings
//! ([`boveda_store::Replicator`]), so nothing is lost in a crash.
//!
//! The outcome of the last pass is kept in `replication/status` on the
//! primary (like the markers, outside the folders that are replicated).

use std::sync::Arc;
use std::time::Duration;

use boveda_store::{
    PassReport, ReplicatingStore, Replicator, RetryPolicy, Store, faults_from_env, faults_from_var, layer, open_backend,
};
use boveda_vault::{Replica, Vault, VaultError, VaultSettings};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};
use crate::runtime::alert::{Severity, raise_alert};
use crate::runtime::clock::Clock;
use crate::runtime::control::vault_control;
use crate::runtime::job::{JobDone, JobSpec, Observers, Operation, run_job};

/// The vault's folders in the order a secondary needs them: what is
/// referred to before what refers to it. `config`, whose presence makes a
/// vault, is copied after them.
const FOLDERS: [&str; 5] = ["packs", "index", "catalog", "points", "keys"];

/// The folder copied as it is written (see [`ReplicatingStore`]).
const EAGER: &str = "packs";

/// Fault injection for the secondary store alone (the form of
/// `BOVEDA_STORE_FAULTS`).
pub const SECONDARY_FAULTS: &str = "BOVEDA_SECONDARY_FAULTS";

/// How far a vault's secondary store is behind.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicationStatus {
    pub secondary: String,
    /// Objects (and their bytes) on the primary not yet on the secondary,
    /// counted now; `None` when the stores could not be listed (`error`).
    pub objects_behind: Option<u64>,
    pub bytes_behind: Option<u64>,
    /// When the oldest of them was written.
    pub oldest_behind: Option<Timestamp>,
    /// Objects gone from the primary still to delete on the secondary.
    pub to_delete: Option<u64>,
    /// Why the lag could not be counted now.
    pub error: Option<String>,
    /// Since when writes wait for a pass (the oldest pending marker).
    pub pending_since: Option<Timestamp>,
    /// The last pass of any process, as recorded on the primary.
    pub last_pass: Option<PassRecord>,
    /// Lag older than this raises an alert.
    pub alert_after_mins: u32,
}

/// The outcome of the last pass, kept on the primary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PassRecord {
    pub time: Option<Timestamp>,
    pub host: String,
    /// When a pass last caught up (copied and deleted all it found).
    pub last_success: Option<Timestamp>,
    /// The last pass's error, when it failed.
    pub error: Option<String>,
    pub copied: u64,
    pub copied_bytes: u64,
    pub deleted: u64,
    /// The lag an alert was raised for (the pending marker's time), so that
    /// one episode of lag raises one alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerted_for: Option<Timestamp>,
}

/// The secondary store of a `grs` vault, with the vault's retry limits.
///
/// # Errors
/// `Invalid` for a locally redundant vault; a store error when the
/// secondary's URL or credentials are wrong.
pub fn open_secondary(vault: &Vault) -> Result<Arc<dyn Store>> {
    secondary_of(&vault.settings())
}

fn secondary_of(settings: &VaultSettings) -> Result<Arc<dyn Store>> {
    secondary_with(settings, crate::runtime::host::retry_policy(&settings.store))
}

/// Whether the secondary answers and holds this vault now, asked with two
/// quick tries (a secondary that is down must not hold up every command
/// for the whole retry policy).
///
/// # Errors
/// `NotFound` when the secondary does not hold the vault (not reachable,
/// or its disk not mounted); `Conflict` when it holds another vault; a
/// store error.
fn probe(vault: &Vault) -> Result<()> {
    let quick = RetryPolicy { attempts: 2, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
    let secondary = secondary_with(&vault.settings(), quick)?;
    match vault.replica_in(&*secondary)? {
        Replica::ThisVault => Ok(()),
        Replica::AnotherVault => Err(ServiceError::Conflict(format!(
            "the secondary store {} holds another vault: nothing was copied",
            secondary.location()
        ))),
        Replica::NoVault => Err(ServiceError::NotFound(format!(
            "the secondary store {} does not hold this vault (not reachable, or not mounted?): nothing was copied; `vault replication run` copies it in full",
            secondary.location()
        ))),
    }
}

fn secondary_with(settings: &VaultSettings, retry: RetryPolicy) -> Result<Arc<dyn Store>> {
    let url = match (settings.redundancy.as_str(), &settings.secondary) {
        ("grs", Some(url)) => url,
        _ => return Err(not_geo(settings)),
    };
    let backend = open_backend(url, false).map_err(VaultError::from)?;
    // faults for the secondary alone (tests and benchmarks of a secondary
    // that is down or slow), else those of every store
    let faults = match faults_from_var(SECONDARY_FAULTS).map_err(VaultError::from)? {
        Some(plan) => Some(plan),
        None => faults_from_env().map_err(VaultError::from)?,
    };
    Ok(layer(backend, retry, faults))
}

/// Makes the vault's writes go through a [`ReplicatingStore`] when it is
/// geo-redundant, and notes whether another writer's pass is due. The
/// vault opens even when its secondary cannot be reached: replication is
/// only late then.
pub(crate) fn attach(vault: &mut Vault) {
    if vault.settings().redundancy != "grs" || vault.replicating_store().is_some() {
        return;
    }
    let Ok(secondary) = secondary_of(&vault.settings()) else { return };
    // packs are copied as they are written when the vault asks for it
    // (docs/PERFORMANCE.md: on a busy machine it costs the backup time),
    // and only into a secondary that holds this vault now (never into an
    // empty folder where a disk should be mounted)
    let eager = (vault.settings().replicate_during_backup == Some(true) && probe(vault).is_ok()).then_some(EAGER);
    let store = Arc::new(ReplicatingStore::new(
        vault.store().clone(),
        secondary,
        &FOLDERS,
        eager,
        vault.parallel_requests(),
        &crate::runtime::host::hostname(),
    ));
    // a failed look is retried by the next process; this one may write
    let _ = store.look_for_pending();
    vault.set_replicating_store(store);
}

fn replicator(vault: &Vault, secondary: Arc<dyn Store>) -> Replicator {
    Replicator::new(primary(vault).clone(), secondary, &FOLDERS, vault.parallel_requests())
}

/// The primary store below any replicating layer.
fn primary(vault: &Vault) -> &Arc<dyn Store> {
    vault.primary_store()
}

/// How far the secondary is behind now (lists both stores), with the last
/// pass's outcome. A secondary that cannot be reached is an `error` in the
/// status, not a failure.
///
/// # Errors
/// `Invalid` for a locally redundant vault; a store error of the primary.
pub fn replication_status(vault: &Vault) -> Result<ReplicationStatus> {
    let settings = vault.settings();
    let url = match (settings.redundancy.as_str(), &settings.secondary) {
        ("grs", Some(url)) => url.clone(),
        _ => return Err(not_geo(&settings)),
    };
    let mut status = ReplicationStatus {
        secondary: url,
        objects_behind: None,
        bytes_behind: None,
        oldest_behind: None,
        to_delete: None,
        error: None,
        pending_since: pending_since(vault)?,
        last_pass: read_record(vault)?,
        alert_after_mins: vault_control(vault)?.lag_alert_mins(),
    };
    let counted = open_secondary(vault).and_then(|secondary| {
        let lag = replicator(vault, secondary.clone()).lag().map_err(VaultError::from)?;
        let config = vault.config_missing_in(&*secondary)?;
        Ok((lag, u64::from(config.is_some()), config.unwrap_or(0), secondary.location()))
    });
    match counted {
        Ok((lag, config_missing, config_size, location)) => {
            status.secondary = location;
            status.objects_behind = Some(lag.objects + config_missing);
            status.bytes_behind = Some(lag.bytes + config_size);
            status.oldest_behind = lag.oldest.and_then(|t| Timestamp::try_from(t).ok());
            status.to_delete = Some(lag.to_delete);
        }
        Err(e) => status.error = Some(e.to_string()),
    }
    Ok(status)
}

fn not_geo(settings: &VaultSettings) -> ServiceError {
    ServiceError::Invalid(format!("vault {} is locally redundant (lrs): it has no secondary store", settings.name))
}

/// The oldest pending marker's time: since when writes wait for a pass.
fn pending_since(vault: &Vault) -> Result<Option<Timestamp>> {
    let markers = match vault.replicating_store() {
        Some(r) => r.pending(),
        None => return Ok(None),
    }
    .map_err(VaultError::from)?;
    Ok(markers.iter().filter_map(|m| m.since).min().and_then(|t| Timestamp::try_from(t).ok()))
}

/// What `vault show` says of replication (no listing of the secondary).
#[derive(Debug, Clone, Serialize)]
pub struct ReplicationSummary {
    pub pending_since: Option<Timestamp>,
    pub last_success: Option<Timestamp>,
    pub last_error: Option<String>,
}

/// The replication part of a vault's summary, for a geo-redundant vault.
///
/// # Errors
/// A store error of the primary.
pub fn replication_summary(vault: &Vault) -> Result<Option<ReplicationSummary>> {
    if vault.settings().redundancy != "grs" {
        return Ok(None);
    }
    let record = read_record(vault)?.unwrap_or_default();
    Ok(Some(ReplicationSummary {
        pending_since: pending_since(vault)?,
        last_success: record.last_success,
        last_error: record.error,
    }))
}

/// One replication pass: copies what the secondary lacks (`config` last),
/// then deletes what the primary no longer has. `progress` hears of every
/// object copied (its size). Through the replicating layer, the pass also
/// clears the pending markers it covered.
///
/// # Errors
/// As [`open_secondary`]; the first store error of the pass (what was
/// copied stays, and the next pass continues).
pub fn replicate(vault: &Vault, progress: &(dyn Fn(u64) + Sync)) -> Result<PassReport> {
    pass(vault, progress, true)
}

/// A pass; unless `initial`, only into a secondary that holds this vault
/// already: a secondary folder whose disk is not mounted lists as empty,
/// and must not be filled up as a new copy (nor a store of another vault
/// be written into).
fn pass(vault: &Vault, progress: &(dyn Fn(u64) + Sync), initial: bool) -> Result<PassReport> {
    if !initial {
        probe(vault)?;
    }
    let mut report = match vault.replicating_store() {
        Some(r) => r.finish(progress),
        None => replicator(vault, open_secondary(vault)?).pass(progress),
    }
    .map_err(VaultError::from)?;
    let secondary = open_secondary(vault)?;
    if let Some(size) = vault.copy_config_to(&*secondary)? {
        report.copied += 1;
        report.copied_bytes += size;
        progress(size);
    }
    Ok(report)
}

/// What a pass after a command did, and the alert it raised.
#[derive(Debug, Clone)]
pub struct PassOutcome {
    pub report: Result<PassReport, String>,
    /// The lag alert's reason, when this pass raised one.
    pub alert: Option<String>,
}

/// After a process's work on a vault: a replication pass when the vault is
/// geo-redundant and a pass is due (this process wrote, or found another
/// writer's marker). The outcome is recorded on the primary, and a lag
/// older than the vault's threshold raises one alert per episode. `None`
/// when no pass was due.
///
/// # Errors
/// A store error of the primary recording the outcome; a failed pass is
/// not an error (it is lag: the outcome says why).
pub fn finish_replication(vault: &Vault, clock: &dyn Clock) -> Result<Option<PassOutcome>> {
    let Some(r) = vault.replicating_store() else { return Ok(None) };
    if !r.is_due() {
        return Ok(None);
    }
    let report = pass(vault, &|_| {}, false);
    record_and_alert(vault, clock, report.map_err(|e| e.to_string())).map(Some)
}

fn record_and_alert(vault: &Vault, clock: &dyn Clock, report: Result<PassReport, String>) -> Result<PassOutcome> {
    let now = clock.now();
    let mut record = read_record(vault)?.unwrap_or_default();
    record.time = Some(now);
    record.host = crate::runtime::host::hostname();
    match &report {
        Ok(r) => {
            record.error = None;
            record.copied = r.copied;
            record.copied_bytes = r.copied_bytes;
            record.deleted = r.deleted;
        }
        Err(e) => record.error = Some(e.clone()),
    }
    let since = pending_since(vault)?;
    if report.is_ok() && since.is_none() {
        record.last_success = Some(now);
        record.alerted_for = None;
    }
    let threshold = vault_control(vault)?.lag_alert_mins();
    let mut alert = None;
    if let Some(since) = since
        && now.duration_since(since) > SignedDuration::from_mins(i64::from(threshold))
        && record.alerted_for != Some(since)
    {
        let minutes = now.duration_since(since).as_mins();
        let reason = format!(
            "the secondary store is {minutes} minute(s) behind (writes since {since} not yet replicated; the alert threshold is {threshold} minute(s)){}",
            record.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        );
        raise_lag_alert(vault, clock, &reason)?;
        record.alerted_for = Some(since);
        alert = Some(reason);
    }
    write_record(vault, &record)?;
    Ok(PassOutcome { report, alert })
}

/// A lag alert belongs to a failed replication job, which says why.
fn raise_lag_alert(vault: &Vault, clock: &dyn Clock, reason: &str) -> Result<()> {
    let spec = replication_spec();
    let (job, _) = run_job(vault, clock, &spec, Observers::default(), |_| {
        Err::<((), JobDone), _>(ServiceError::Conflict(reason.to_string()))
    })?;
    raise_alert(vault, &job, Severity::Warning, reason, job.end.unwrap_or(job.start))?;
    Ok(())
}

fn replication_spec() -> JobSpec<'static> {
    JobSpec {
        operation: Operation::Replication,
        item: None,
        scheduled_for: None,
        heartbeat: crate::runtime::job::DEFAULT_HEARTBEAT,
        hostname: crate::runtime::host::hostname(),
        started: None,
        id: None,
        workers: true,
    }
}

fn read_record(vault: &Vault) -> Result<Option<PassRecord>> {
    // a record that does not parse is as good as none: the next pass
    // writes a new one
    Ok(vault.replication_record()?.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Replaces the record when nobody changed it meanwhile.
fn write_record(vault: &Vault, record: &PassRecord) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(|e| ServiceError::Internal(e.to_string()))?;
    Ok(vault.write_replication_record(&bytes)?)
}

/// A replication pass run as a job (`vault replication run`, and the full
/// copy after a vault becomes geo-redundant), with its progress: objects
/// and bytes to copy are counted first.
///
/// # Errors
/// A store error writing the job's first record; the pass's error is the
/// job's.
pub fn replication_job(
    vault: &Vault,
    clock: &dyn Clock,
    observers: Observers<'_>,
) -> Result<(crate::runtime::job::Job, Result<PassReport>)> {
    let spec = replication_spec();
    let (job, result) = run_job(vault, clock, &spec, observers, |ctx| {
        ctx.set_phase("counting");
        let secondary = open_secondary(vault)?;
        let lag = replicator(vault, secondary).lag().map_err(VaultError::from)?;
        boveda_engine::RestoreProgress::planned(ctx, lag.objects, lag.bytes);
        ctx.set_phase("copying");
        let report = replicate(vault, &|n| boveda_engine::RestoreProgress::bytes_written(ctx, n))?;
        let details = vec![format!(
            "copied {} object(s), {} bytes, to the secondary; deleted {} there",
            report.copied, report.copied_bytes, report.deleted
        )];
        Ok((report, JobDone { details, ..JobDone::default() }))
    })?;
    let recorded = record_and_alert(vault, clock, result.as_ref().map(Clone::clone).map_err(ToString::to_string));
    recorded?;
    Ok((job, result))
}

/// Changes a vault's redundancy, which is allowed only while it has no
/// item (as in Azure Backup, where replication is chosen before anything
/// is protected). Becoming geo-redundant needs an empty secondary store;
/// the caller then runs [`replication_job`], the full copy. Returns whether
/// that copy is due.
///
/// # Errors
/// `Invalid` for an unknown redundancy, a missing or needless secondary, a
/// secondary that is not empty, or no change; `Conflict` while the vault
/// has items; a store error.
pub fn change_redundancy(vault: &mut Vault, redundancy: &str, secondary: Option<&str>) -> Result<bool> {
    let secondary = match (redundancy, secondary) {
        ("lrs", None) => None,
        ("grs", Some(url)) => Some(crate::runtime::host::normalize_store(url)?),
        ("lrs", Some(_)) => {
            return Err(ServiceError::Invalid("a locally redundant (lrs) vault has no secondary store".into()));
        }
        ("grs", None) => {
            return Err(ServiceError::Invalid("a geo-redundant (grs) vault needs a secondary store URL".into()));
        }
        (other, _) => return Err(ServiceError::Invalid(format!("redundancy {other:?} is not lrs or grs"))),
    };
    let current = vault.settings();
    if current.redundancy == redundancy && current.secondary == secondary {
        return Err(ServiceError::Invalid(format!("vault {} is already {redundancy}", current.name)));
    }
    let items = crate::items::list_items(vault)?;
    if !items.is_empty() {
        let names: Vec<&str> = items.iter().map(|i| i.name.as_str()).collect();
        return Err(ServiceError::Conflict(format!(
            "the redundancy of vault {} can only change while it has no item, and it has {}: {}",
            current.name,
            items.len(),
            names.join(", ")
        )));
    }
    if let Some(url) = &secondary {
        let store = open_backend(url, false).map_err(VaultError::from)?;
        if !store.is_empty_below("").map_err(VaultError::from)? {
            return Err(ServiceError::Invalid(format!(
                "the secondary store {} is not empty: choose a new or empty location",
                store.location()
            )));
        }
    }
    let plain = primary(vault).clone();
    vault.set_store(plain);
    let changed = vault.change_settings(|s| {
        s.redundancy = redundancy.to_string();
        s.secondary.clone_from(&secondary);
    });
    if let Err(e) = changed {
        // refused (the vault's immutability, its guard): as it was
        attach(vault);
        return Err(e.into());
    }
    let id = vault.config().id.to_hex();
    crate::runtime::registry::Registry::load()?.set_secondary(&id, secondary.clone())?;
    attach(vault);
    Ok(secondary.is_some())
}

/// Which of `points` the secondary holds already, for a geo-redundant vault
/// (`None` for a locally redundant one). A point reaches the secondary
/// after its data, so one listed there is complete; one not yet there is
/// not offered for a restore from the secondary.
///
/// # Errors
/// As [`probe`]: the secondary does not answer or does not hold the vault.
pub fn points_on_secondary(vault: &Vault, points: &[boveda_vault::PointId]) -> Result<Option<Vec<bool>>> {
    if vault.settings().redundancy != "grs" {
        return Ok(None);
    }
    // a secondary that does not hold the vault now (away, not mounted) is
    // unknown, not empty
    probe(vault)?;
    let listed: std::collections::HashSet<String> =
        open_secondary(vault)?.list("points").map_err(VaultError::from)?.into_iter().map(|o| o.name).collect();
    Ok(Some(points.iter().map(|p| listed.contains(&format!("points/{}", p.to_hex()))).collect()))
}

//! Jobs: every operation on a vault is recorded in the vault itself
//! (`catalog/jobs/<id>/<revision>`) with its state and live progress.
//!
//! The process running a job writes a revision when it starts, one per
//! heartbeat with the progress so far (deleting its own previous one), and
//! a last one with the outcome. `job stop` writes a stop request
//! (`catalog/job-stops/<id>`) that the running process sees at its next
//! heartbeat. A job whose heartbeat is older than three intervals is shown
//! as `Failed`: the process that ran it died.

use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use boveda_engine::{BackupProgress, RestoreProgress};
use boveda_vault::{PointId, RecordId, Vault};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError, ServiceErrorKind};
use crate::items::Item;
pub use crate::model::job_record::{Job, JobProgress, JobState, Operation};
use crate::runtime::alert::{Severity, raise_alert};
pub use crate::runtime::job_ctx::JobCtx;

/// How a backup job's details mark a suspicious point
/// (`crate::protection::suspicion`, which imports this room).
pub const SUSPICIOUS: &str = "suspicious point: ";
use crate::runtime::clock::Clock;

const JOBS: &str = "jobs";
const STOPS: &str = "job-stops";

/// How often a running job's progress is published to its own process
/// (`runtime::live`).
const LIVE_TICK: Duration = Duration::from_secs(1);

/// The heartbeat interval of jobs run from the command line.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// What a job's body reports when it succeeds.
#[derive(Debug, Default)]
pub struct JobDone {
    pub warnings: Vec<String>,
    pub details: Vec<String>,
    pub point: Option<PointId>,
}

/// What a new job is.
pub struct JobSpec<'a> {
    pub operation: Operation,
    pub item: Option<(&'a str, RecordId)>,
    pub scheduled_for: Option<Timestamp>,
    pub heartbeat: Duration,
    pub hostname: String,
    /// Told the job as soon as its first record is written, for a caller
    /// that starts a job in the background and answers with its id.
    pub started: Option<crossbeam_channel::Sender<Job>>,
    /// The id of the job's record when it was recorded before it ran (a
    /// job that waited in the queue).
    pub id: Option<RecordId>,
    /// Whether the job works on data here, in parallel, and so runs in a
    /// pool of worker threads of its own (a backup, a restore, a check);
    /// not a record's change, nor a job a registered host runs while this
    /// process waits for its reports.
    pub workers: bool,
}

/// Whether an operation works on data (see [`JobSpec::workers`]).
pub(crate) fn works_on_data(operation: Operation) -> bool {
    matches!(
        operation,
        Operation::Backup
            | Operation::Restore
            | Operation::Verify
            | Operation::VerifyPoint
            | Operation::Prune
            | Operation::Replication
            | Operation::OfflineSeed
            | Operation::Repair
            | Operation::DeleteBackupData
    )
}

/// Observers a job forwards progress to.
#[derive(Default, Clone, Copy)]
pub struct Observers<'a> {
    pub backup: Option<&'a dyn BackupProgress>,
    pub restore: Option<&'a dyn RestoreProgress>,
}

/// The message a panic carried.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("internal error (a bug in boveda, please report it): {what}")
}

/// Runs `body` as a job: records it, beats while it runs, honours stop
/// requests through [`JobCtx::cancel`], records the outcome, and raises an
/// alert for a failed backup or restore and for every deletion of backup
/// data. Returns the final job and the body's result.
///
/// # Errors
/// A store error writing the first record (the body does not run then).
pub fn run_job<T: Send>(
    vault: &Vault,
    clock: &dyn Clock,
    spec: &JobSpec<'_>,
    observers: Observers<'_>,
    body: impl FnOnce(&JobCtx<'_>) -> Result<(T, JobDone)> + Send,
) -> Result<(Job, Result<T>)> {
    let start = clock.now();
    let wall_start = std::time::Instant::now();
    let mut job = new_job(spec, start);
    // Reading what is stored never depends on writing: a restore or a
    // check against a full or read-only store runs without its record, and
    // says so as a warning.
    let reads_only = matches!(spec.operation, Operation::Restore | Operation::Verify);
    let mut unrecorded = None;
    let first = match vault.catalog_put(JOBS, &job.id, Some(&job)) {
        Ok(name) => name,
        Err(e) if reads_only => {
            unrecorded = Some(e.to_string());
            String::new()
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(started) = &spec.started {
        // the caller may have stopped listening; the job runs anyway
        let _ = started.send(job.clone());
    }
    let ctx = JobCtx::new(observers.backup, observers.restore);
    let last_name = Mutex::new(first);
    let finished = (Mutex::new(false), Condvar::new());

    let beats = Heartbeat { vault, every: spec.heartbeat, job: &job, ctx: &ctx, last_name: &last_name };
    let result = std::thread::scope(|s| {
        if unrecorded.is_none() {
            s.spawn(|| beats.run(&finished));
        }
        // the heartbeat is told to stop however the body ends: a panic is
        // caught and recorded as the job's failure, never left beating
        // a job that works on data does it in a pool of its own: the
        // process's shared pool stays free for the reads that answer a
        // server's requests meanwhile
        let ctx = &ctx;
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if spec.workers { boveda_engine::in_own_pool("job", || body(ctx)) } else { body(ctx) }
        }))
        .unwrap_or_else(|panic| Err(ServiceError::Internal(panic_message(panic.as_ref()))));
        let (lock, cv) = &finished;
        match lock.lock() {
            Ok(mut done) => *done = true,
            Err(poisoned) => *poisoned.into_inner() = true,
        }
        cv.notify_all();
        result
    });

    if spec.operation == Operation::Restore && result.is_ok() {
        ctx.finished_restore();
    }
    crate::runtime::live::forget(&job.id);
    job.progress = ctx.snapshot();
    job.end = Some(start + SignedDuration::try_from(wall_start.elapsed()).unwrap_or_default());
    job.heartbeat = Timestamp::now();
    let outcome = settle(&mut job, result);
    if let Some(why) = &unrecorded {
        warn(&mut job, format!("this job is not recorded in the vault: its record could not be written ({why})"));
    }
    // a listing read from now on, before the last record is written, is
    // stale: so is one read from then until the count moves again
    crate::runtime::live::ended();
    let last = vault.catalog_put(JOBS, &job.id, Some(&job));
    crate::runtime::live::ended();
    let name = match last {
        Ok(name) => name,
        Err(e) if reads_only => {
            if unrecorded.is_none() {
                warn(&mut job, format!("this job's outcome is not recorded in the vault ({e})"));
            }
            String::new()
        }
        // a job that failed keeps its own reason: the store that refused
        // its work most likely refuses its record too, and the first
        // failure is the one to name
        Err(e) if outcome.is_err() => {
            job.warnings.push(format!("the failure could not be recorded in the vault ({e})"));
            return Ok((job, outcome));
        }
        Err(e) => return Err(e.into()),
    };
    if let Ok(last) = last_name.lock()
        && !last.is_empty()
        && *last != name
    {
        let _ = vault.catalog_drop_revision(&last);
    }
    raise_job_alert(vault, &job, start);
    Ok((job, outcome))
}

/// Adds a warning; a job that completed now completed with warnings.
fn warn(job: &mut Job, warning: String) {
    job.warnings.push(warning);
    if job.state == JobState::Completed {
        job.state = JobState::CompletedWithWarnings;
    }
}

/// A job's first record, `InProgress` from `start`.
fn new_job(spec: &JobSpec<'_>, start: Timestamp) -> Job {
    Job {
        id: spec.id.unwrap_or_else(RecordId::random),
        operation: spec.operation,
        item: spec.item.map(|(n, _)| n.to_string()),
        item_id: spec.item.map(|(_, id)| id),
        state: JobState::InProgress,
        start,
        end: None,
        progress: JobProgress::default(),
        warnings: Vec::new(),
        error: None,
        details: Vec::new(),
        point: None,
        scheduled_for: spec.scheduled_for,
        host: spec.hostname.clone(),
        pid: std::process::id(),
        heartbeat: Timestamp::now(),
        heartbeat_secs: spec.heartbeat.as_secs_f64(),
    }
}

/// The job's state, warnings and point from how its body ended.
fn settle<T>(job: &mut Job, result: Result<(T, JobDone)>) -> Result<T> {
    match result {
        Ok((value, done)) => {
            job.state = if done.warnings.is_empty() { JobState::Completed } else { JobState::CompletedWithWarnings };
            job.warnings = done.warnings;
            job.details = done.details;
            job.point = done.point;
            Ok(value)
        }
        Err(e) => {
            job.state = if e.kind() == ServiceErrorKind::Cancelled { JobState::Cancelled } else { JobState::Failed };
            job.error = Some(e.to_string());
            Err(e)
        }
    }
}

/// A failed backup or restore raises a critical alert, and so does a
/// backup whose point looks like an attack; deleted backup data a warning. An alert that cannot be stored is reported by the job itself.
fn raise_job_alert(vault: &Vault, job: &Job, start: Timestamp) {
    let alert = match (job.operation, job.state) {
        (Operation::Backup | Operation::Restore | Operation::VerifyPoint, JobState::Failed) => {
            Some((Severity::Critical, job.error.clone().unwrap_or_default()))
        }
        (Operation::Backup, JobState::Completed | JobState::CompletedWithWarnings) => job
            .details
            .iter()
            .find_map(|d| d.strip_prefix(SUSPICIOUS))
            .map(|why| (Severity::Critical, format!("the backup looks like an attack (ransomware?): {why}"))),
        (Operation::DeleteBackupData, JobState::Completed | JobState::CompletedWithWarnings) => {
            Some((Severity::Warning, "backup data was deleted (soft delete: recoverable until purged)".to_string()))
        }
        _ => None,
    };
    if let Some((severity, reason)) = alert {
        let _ = raise_alert(vault, job, severity, &reason, job.end.unwrap_or(start));
    }
}

/// A running job's heartbeat: every `every`, its record rewritten with the
/// progress so far (the previous revision dropped), and a stop request
/// looked for.
struct Heartbeat<'a> {
    vault: &'a Vault,
    every: std::time::Duration,
    job: &'a Job,
    ctx: &'a JobCtx<'a>,
    last_name: &'a Mutex<String>,
}

impl Heartbeat<'_> {
    /// Beats until `finished` holds `true`.
    fn run(&self, finished: &(Mutex<bool>, Condvar)) {
        let (lock, cv) = finished;
        let Ok(mut done) = lock.lock() else { return };
        let tick = self.every.min(LIVE_TICK);
        let mut last_beat = std::time::Instant::now();
        loop {
            // the flag is tested before every wait: a body that ended
            // before this thread first waited must not cost a heartbeat
            let next = cv.wait_timeout_while(done, tick, |done| !*done);
            let Ok((guard, _)) = next else { return };
            done = guard;
            if *done {
                return;
            }
            crate::runtime::live::publish(self.job.id, self.ctx.snapshot());
            if last_beat.elapsed() + tick / 2 >= self.every {
                last_beat = std::time::Instant::now();
                self.beat();
            }
        }
    }

    fn beat(&self) {
        let ctx = self.ctx;
        if !ctx.is_cancelled() && stop_requested(self.vault, &self.job.id) {
            ctx.cancel.store(true, Ordering::Relaxed);
        }
        let mut beat = self.job.clone();
        beat.progress = ctx.snapshot();
        beat.heartbeat = Timestamp::now();
        if ctx.is_cancelled() {
            beat.state = JobState::Cancelling;
        }
        // a failed heartbeat is retried at the next one; the job goes on
        if let Ok(name) = self.vault.catalog_put(JOBS, &beat.id, Some(&beat))
            && let Ok(mut last) = self.last_name.lock()
        {
            let old = std::mem::replace(&mut *last, name);
            let _ = self.vault.catalog_drop_revision(&old);
        }
    }
}

/// A job waiting for a slot, as its record says.
#[derive(Clone, Copy)]
pub(crate) struct WaitingJob<'a> {
    pub id: RecordId,
    pub operation: Operation,
    pub item: Option<(&'a str, RecordId)>,
    pub hostname: &'a str,
    pub heartbeat: Duration,
}

/// Records a job that waits for a slot (`Queued`) under `id`, with its
/// heartbeat now; written again at every beat while it waits.
///
/// # Errors
/// A store error.
pub(crate) fn record_waiting(vault: &Vault, clock: &dyn Clock, w: &WaitingJob<'_>, state: JobState) -> Result<Job> {
    let WaitingJob { id, operation, item, hostname, heartbeat } = *w;
    let now = clock.now();
    let job = Job {
        id,
        operation,
        item: item.map(|(n, _)| n.to_string()),
        item_id: item.map(|(_, i)| i),
        state,
        start: now,
        end: (state == JobState::Cancelled).then_some(now),
        progress: JobProgress { phase: "waiting for a free slot".into(), ..JobProgress::default() },
        warnings: Vec::new(),
        error: (state == JobState::Cancelled).then(|| "stopped while it waited in the queue".to_string()),
        details: Vec::new(),
        point: None,
        scheduled_for: None,
        host: hostname.to_string(),
        pid: std::process::id(),
        heartbeat: Timestamp::now(),
        heartbeat_secs: heartbeat.as_secs_f64(),
    };
    vault.catalog_put(JOBS, &job.id, Some(&job))?;
    Ok(job)
}

pub(crate) fn stop_requested(vault: &Vault, id: &RecordId) -> bool {
    matches!(vault.catalog_get::<StopRequest>(STOPS, id), Ok(Some(_)))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StopRequest {
    requested: Timestamp,
    host: String,
}

/// Filters of `job list`.
#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub operation: Option<Operation>,
    pub item: Option<String>,
    pub since: Option<Timestamp>,
    /// Jobs started at or before this time.
    pub until: Option<Timestamp>,
    /// The machine that ran the job: this one's host name, or a
    /// registered host's name.
    pub host: Option<String>,
}

/// A job filter as a client writes it (`JobFilter::parse`).
#[derive(Debug, Default, Clone, Deserialize)]
pub struct JobQuery {
    pub state: Option<String>,
    pub operation: Option<String>,
    pub item: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub host: Option<String>,
}

impl JobQuery {
    pub fn is_empty(&self) -> bool {
        let JobQuery { state, operation, item, since, until, host } = self;
        [state, operation, item, since, until, host].iter().all(|f| f.is_none())
    }
}

impl JobFilter {
    pub fn matches(&self, j: &Job) -> bool {
        self.state.is_none_or(|s| j.state == s)
            && self.operation.is_none_or(|o| j.operation == o)
            && self.item.as_ref().is_none_or(|i| j.item.as_ref().is_some_and(|n| n.eq_ignore_ascii_case(i)))
            && self.since.is_none_or(|t| j.start >= t)
            && self.until.is_none_or(|t| j.start <= t)
            && self.host.as_ref().is_none_or(|h| j.host.eq_ignore_ascii_case(h))
    }

    /// A filter as a client writes it: names of a state and an operation,
    /// an item's name, times (`parse_time`'s forms; a date alone is the
    /// start of that day for `since`, its end for `until`), a host name.
    ///
    /// # Errors
    /// `Field` naming the one that does not parse.
    pub fn parse(q: &JobQuery) -> Result<JobFilter> {
        use crate::model::time_input::{DayBound, parse_time};
        let field = |name| move |e: ServiceError| ServiceError::field_error(name, e);
        let time = |t: &Option<String>, bound, name| {
            t.as_deref().map(|t| parse_time(t, &jiff::tz::TimeZone::system(), bound)).transpose().map_err(field(name))
        };
        Ok(JobFilter {
            state: q.state.as_deref().map(JobState::parse).transpose().map_err(field("state"))?,
            operation: q.operation.as_deref().map(Operation::parse).transpose().map_err(field("operation"))?,
            item: q.item.clone(),
            since: time(&q.since, DayBound::Start, "since")?,
            until: time(&q.until, DayBound::End, "until")?,
            host: q.host.clone(),
        })
    }
}

/// Every job of the vault, oldest first, as readers should see them.
///
/// # Errors
/// A store error or a damaged record.
pub fn list_jobs(vault: &Vault, filter: &JobFilter) -> Result<Vec<Job>> {
    let stops: std::collections::HashSet<RecordId> =
        vault.catalog_list::<StopRequest>(STOPS)?.into_iter().map(|(id, _)| id).collect();
    let now = Timestamp::now();
    let mut jobs: Vec<Job> = vault
        .catalog_list::<Job>(JOBS)?
        .into_iter()
        .map(|(_, j)| {
            let stop = stops.contains(&j.id);
            j.settle(now, stop)
        })
        .filter(|j| filter.matches(j))
        .collect();
    jobs.sort_by(|a, b| a.start.cmp(&b.start).then(a.id.cmp(&b.id)));
    Ok(jobs)
}

/// Finds a job by id or unique id prefix.
///
/// # Errors
/// `NotFound` naming the id; `Invalid` for an ambiguous prefix.
pub fn find_job(vault: &Vault, id: &str) -> Result<Job> {
    let jobs = list_jobs(vault, &JobFilter::default())?;
    let matches: Vec<&Job> = jobs.iter().filter(|j| !id.is_empty() && j.id.to_hex().starts_with(id)).collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ServiceError::refused(
            ServiceErrorKind::NotFound,
            format!("no job with id {id:?} in this vault"),
            crate::error::Remedy::ListJobs,
        )),
        _ => {
            Err(ServiceError::Invalid(format!("job id prefix {id:?} matches {} jobs; give more of it", matches.len())))
        }
    }
}

/// Asks the process running a job to stop it.
///
/// # Errors
/// `NotFound`; `Conflict` when the job is not running.
pub fn stop_job(vault: &Vault, id: &str, hostname: &str) -> Result<Job> {
    let job = find_job(vault, id)?;
    if !job.state.is_running() {
        return Err(ServiceError::Conflict(format!("job {} is {}, not running", job.id.short(), job.state.as_str())));
    }
    let req = StopRequest { requested: Timestamp::now(), host: hostname.to_string() };
    vault.catalog_put(STOPS, &job.id, Some(&req))?;
    find_job(vault, &job.id.to_hex())
}

/// Waits until a job is no longer running and returns it.
///
/// # Errors
/// As [`find_job`].
pub fn wait_job(vault: &Vault, id: &str, poll: Duration) -> Result<Job> {
    loop {
        let job = find_job(vault, id)?;
        if !job.state.is_running() {
            return Ok(job);
        }
        std::thread::sleep(poll);
    }
}

/// When the oldest backup still running started (for prune's sweep).
///
/// # Errors
/// As [`list_jobs`].
pub fn oldest_running_writer(vault: &Vault) -> Result<Option<Timestamp>> {
    let jobs = list_jobs(vault, &JobFilter { operation: Some(Operation::Backup), ..JobFilter::default() })?;
    Ok(jobs.iter().filter(|j| j.state.is_running()).map(|j| j.start).min())
}

/// What every job of a command or of the agent shares.
pub struct JobEnv<'a> {
    pub clock: &'a dyn Clock,
    pub heartbeat: Duration,
    pub hostname: String,
    /// Who asked (this host's name, or a token): what a request for the
    /// guard's approval records (`crate::guard`).
    pub by: String,
    /// Told each job as soon as it is recorded (see [`JobSpec::started`]).
    pub started: Option<crossbeam_channel::Sender<Job>>,
    /// The id the job was queued under (see [`JobSpec::id`]).
    pub job_id: Option<boveda_vault::RecordId>,
}

impl<'a> JobEnv<'a> {
    pub fn new(clock: &'a dyn Clock, heartbeat: Duration, hostname: String) -> Self {
        JobEnv { clock, heartbeat, by: hostname.clone(), hostname, started: None, job_id: None }
    }

    /// Who asks for what this environment's jobs do (a token), when it is
    /// not this host's user: what a guard's request records.
    pub fn by(mut self, by: String) -> Self {
        self.by = by;
        self
    }

    /// The spec of a job of the whole vault (no item).
    pub(crate) fn vault_spec(&self, operation: Operation) -> JobSpec<'static> {
        JobSpec {
            operation,
            item: None,
            scheduled_for: None,
            heartbeat: self.heartbeat,
            hostname: self.hostname.clone(),
            started: self.started.clone(),
            id: self.job_id,
            workers: works_on_data(operation),
        }
    }

    pub(crate) fn spec<'i>(
        &self,
        operation: Operation,
        item: &'i Item,
        scheduled_for: Option<Timestamp>,
    ) -> JobSpec<'i> {
        JobSpec {
            operation,
            item: Some((item.name.as_str(), item.id)),
            scheduled_for,
            heartbeat: self.heartbeat,
            hostname: self.hostname.clone(),
            started: self.started.clone(),
            id: self.job_id,
            workers: works_on_data(operation),
        }
    }
}

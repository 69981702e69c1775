//! Jobs started in the background: the caller (the server) gets the job
//! as soon as it is recorded and follows it through the job records, as
//! any other process would.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use boveda_engine::{DiskOutputFormat, NoProgress};
use boveda_vault::Vault;
use serde::Deserialize;

use crate::error::{Result, ServiceError};
use crate::items::Item;
use crate::model::time_input::{check_retain_until, parse_retain_until};
use crate::protection::backups::backup_job;
use crate::recovery::{RestoreRequest, find_point, restore_job};
use crate::runtime::clock::Clock;
use crate::runtime::job::JobEnv;
use crate::runtime::job::{Job, JobState, Operation};

/// What a job started in the background needs besides the vault: owned,
/// since the job outlives the request that started it.
#[derive(Clone)]
pub struct BackgroundEnv {
    pub clock: Arc<dyn Clock>,
    pub heartbeat: Duration,
    pub hostname: String,
    /// How many jobs run at once per vault; the others wait, `Queued`.
    pub slots: Arc<JobSlots>,
}

impl BackgroundEnv {
    pub fn new(clock: Arc<dyn Clock>, heartbeat: Duration, hostname: String) -> Self {
        Self { clock, heartbeat, hostname, slots: JobSlots::new(DEFAULT_JOBS_PER_VAULT) }
    }
}

/// Jobs started in the background that run at once on one vault; the
/// others wait in the order they came (two cores read and decrypt for a
/// few jobs well, and for twenty badly: each gets slower and the server's
/// own reads wait behind them).
pub const DEFAULT_JOBS_PER_VAULT: usize = 2;

/// The running jobs of each vault and the queue of those waiting.
pub struct JobSlots {
    per_vault: usize,
    state: Mutex<HashMap<String, Lane>>,
    turn: Condvar,
}

#[derive(Default)]
struct Lane {
    running: usize,
    waiting: VecDeque<u64>,
    next: u64,
}

impl JobSlots {
    pub fn new(per_vault: usize) -> Arc<Self> {
        Arc::new(Self { per_vault: per_vault.max(1), state: Mutex::default(), turn: Condvar::new() })
    }

    /// Joins `vault`'s queue; the ticket says its place.
    fn join(&self, vault: &str) -> u64 {
        let Ok(mut state) = self.state.lock() else { return 0 };
        let lane = state.entry(vault.to_string()).or_default();
        lane.next += 1;
        lane.waiting.push_back(lane.next);
        lane.next
    }

    /// Takes a slot when `ticket` is first in line and one is free, waiting
    /// at most `wait`; whether it got one.
    fn take(&self, vault: &str, ticket: u64, wait: Duration) -> bool {
        let Ok(mut state) = self.state.lock() else { return true };
        let deadline = std::time::Instant::now() + wait;
        loop {
            let lane = state.entry(vault.to_string()).or_default();
            if lane.waiting.front() == Some(&ticket) && lane.running < self.per_vault {
                lane.waiting.pop_front();
                lane.running += 1;
                self.turn.notify_all(); // the next in line may fit too
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.turn.wait_timeout(state, left) {
                Ok((s, _)) => state = s,
                Err(_) => return true,
            }
        }
    }

    /// Leaves the queue without running (stopped while waiting).
    fn leave(&self, vault: &str, ticket: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.entry(vault.to_string()).or_default().waiting.retain(|t| *t != ticket);
        }
        self.turn.notify_all();
    }

    /// Takes one of `vault`'s slots (by its store's location) for work of
    /// the caller's own, waiting for its turn like a job; the slot is free
    /// again when the guard is dropped.
    pub fn occupy(self: &Arc<Self>, vault: &str) -> SlotGuard {
        let ticket = self.join(vault);
        while !self.take(vault, ticket, Duration::from_secs(3600)) {}
        SlotGuard { slots: self.clone(), vault: vault.to_string() }
    }

    /// A job ended: its slot is free.
    fn release(&self, vault: &str) {
        if let Ok(mut state) = self.state.lock() {
            let lane = state.entry(vault.to_string()).or_default();
            lane.running = lane.running.saturating_sub(1);
        }
        self.turn.notify_all();
    }
}

/// A slot taken with [`JobSlots::occupy`].
pub struct SlotGuard {
    slots: Arc<JobSlots>,
    vault: String,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.release(&self.vault);
    }
}

/// What a job started in the background is, for its record while it
/// waits in the queue.
struct Waiting {
    vault: Arc<Vault>,
    operation: Operation,
    item: Option<(String, boveda_vault::RecordId)>,
}

/// Runs `run` on a thread of its own and returns its job once recorded.
/// When the vault already runs as many jobs as it may, the job is recorded
/// `Queued` (and answered so), waits for its turn beating its record, and
/// ends `Cancelled` if stopped meanwhile.
///
/// # Errors
/// What `run` refused with before recording a job (a bad request); a
/// thread that cannot be started.
fn start<T: Send + 'static>(
    env: &BackgroundEnv,
    what: &str,
    waiting: Waiting,
    run: impl FnOnce(&JobEnv<'_>) -> Result<(Job, Result<T>)> + Send + 'static,
) -> Result<Job> {
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let (refused_tx, refused_rx) = crossbeam_channel::bounded(1);
    let env = env.clone();
    let lane = waiting.vault.store().location();
    std::thread::Builder::new()
        .name(what.to_string())
        .spawn(move || {
            let mut job_env = JobEnv::new(env.clock.as_ref(), env.heartbeat, env.hostname.clone());
            let ticket = env.slots.join(&lane);
            if !env.slots.take(&lane, ticket, Duration::ZERO) {
                let id = boveda_vault::RecordId::random();
                let item = waiting.item.as_ref().map(|(n, i)| (n.as_str(), *i));
                let w = crate::runtime::job::WaitingJob {
                    id,
                    operation: waiting.operation,
                    item,
                    hostname: &env.hostname,
                    heartbeat: env.heartbeat,
                };
                let record = |state| crate::runtime::job::record_waiting(&waiting.vault, env.clock.as_ref(), &w, state);
                match record(JobState::Queued) {
                    Ok(job) => {
                        let _ = started_tx.send(job);
                    }
                    Err(e) => {
                        env.slots.leave(&lane, ticket);
                        let _ = refused_tx.send(e);
                        return;
                    }
                }
                loop {
                    let turn = env.slots.take(&lane, ticket, env.heartbeat);
                    // a stop asked while it waited ends it, also when its turn came
                    if crate::runtime::job::stop_requested(&waiting.vault, &id) {
                        if turn {
                            env.slots.release(&lane);
                        } else {
                            env.slots.leave(&lane, ticket);
                        }
                        let _ = record(JobState::Cancelled);
                        return;
                    }
                    if turn {
                        break;
                    }
                    let _ = record(JobState::Queued); // a beat: the queue is alive
                }
                job_env.job_id = Some(id);
            } else {
                job_env.started = Some(started_tx);
            }
            // the job's own outcome is in its record
            if let Err(e) = run(&job_env) {
                let _ = refused_tx.send(e);
            }
            env.slots.release(&lane);
        })
        .map_err(|e| ServiceError::Internal(format!("cannot start a thread for the {what}: {e}")))?;
    crossbeam_channel::select! {
        recv(started_rx) -> job => job.map_err(|_| ServiceError::Internal(format!("the {what} ended unrecorded"))),
        recv(refused_rx) -> refused => match refused {
            Ok(e) => Err(e),
            // ended without a refusal: it was recorded, and said so first
            Err(_) => started_rx.try_recv().map_err(|_| ServiceError::Internal(format!("the {what} ended unrecorded"))),
        },
    }
}

/// "Backup now" in the background: the `Backup` job, once recorded.
/// `retain_until` as a user types it (a date or a time), in the
/// server's time zone; without it the point is kept for the default days.
///
/// # Errors
/// `Field` `retain_until` for a time that does not parse or is not in the
/// future; as [`backup_job`] before it records the job (an item that
/// cannot be backed up).
pub fn start_backup(vault: Arc<Vault>, env: &BackgroundEnv, item: Item, retain_until: Option<&str>) -> Result<Job> {
    let retain_until = retain_until
        .map(|text| {
            let now = env.clock.now();
            let t = parse_retain_until(text, now, &jiff::tz::TimeZone::system())?;
            check_retain_until(t, now)?;
            Ok(t)
        })
        .transpose()
        .map_err(|e: ServiceError| ServiceError::field_error("retain_until", e))?;
    let waiting =
        Waiting { vault: vault.clone(), operation: Operation::Backup, item: Some((item.name.clone(), item.id)) };
    start(env, "backup", waiting, move |env| {
        let pace = TestPace::for_item(&item.name);
        let progress: &dyn boveda_engine::BackupProgress = match &pace {
            Some(pace) => pace,
            None => &NoProgress,
        };
        backup_job(&vault, env, &item, retain_until, None, progress)
    })
}

/// A test hook: `BOVEDA_TEST_BACKUP_PACE=ITEM:MS` makes each file of
/// `ITEM`'s backups started here take at least `MS` milliseconds, so a
/// browser test can watch a backup while it runs (others are untouched).
struct TestPace(std::time::Duration);

impl TestPace {
    fn for_item(item: &str) -> Option<TestPace> {
        let value = std::env::var("BOVEDA_TEST_BACKUP_PACE").ok()?;
        let (name, ms) = value.split_once(':')?;
        (name == item).then_some(())?;
        Some(TestPace(std::time::Duration::from_millis(ms.parse().ok()?)))
    }
}

impl boveda_engine::BackupProgress for TestPace {
    fn file_done(&self, _path: &std::path::Path, _size: u64, _reused: bool) {
        // one file at a time, however many threads the walk has
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock();
        std::thread::sleep(self.0);
    }
}

/// A restore as a client asks for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreTarget {
    /// The point's id, a unique prefix of it, or `latest`.
    pub point: String,
    /// An absolute path inside one of the folders the server restores to.
    pub target: PathBuf,
    /// Only these paths of the point (see [`RestoreRequest::paths`]).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Disk and VM items: `raw` (default) or `qcow2`.
    #[serde(default)]
    pub format: Option<String>,
    /// VM items: into the target folder (default), as a new VM defined in
    /// libvirt, or replacing the existing VM's disks (each inside a
    /// folder this server restores to).
    #[serde(default)]
    pub vm: crate::recovery::vm_restore::VmTarget,
}

/// Whether `target` lies inside one of `roots`, judged on the real paths
/// (symbolic links resolved as far as the target exists), so that `..` or
/// a link cannot lead outside; returns the root it lies in, as named in
/// `target` (the root as configured, or its real path). The restore then
/// walks from that root down without following any link, so a link made
/// after this check cannot lead it out either.
///
/// # Errors
/// `Field` `target` when it does not, when it is not a plain path (a NUL
/// byte), or when it reaches the root only through a link.
pub fn check_restore_target(target: &Path, roots: &[PathBuf]) -> Result<PathBuf> {
    let refuse = |why: String| Err(ServiceError::field_error("target", why));
    if target.as_os_str().as_encoded_bytes().contains(&0) {
        return refuse("a path cannot hold a NUL byte".into());
    }
    if !target.is_absolute() {
        return refuse(format!("{} is not an absolute path", target.display()));
    }
    if roots.is_empty() {
        return refuse("this server restores to no folder: its administrator names the folders allowed".into());
    }
    // the deepest part that exists, resolved, and the rest as given
    let mut existing = target.to_path_buf();
    let mut rest = Vec::new();
    let resolved = loop {
        match existing.canonicalize() {
            Ok(p) => break p,
            // a link that leads nowhere (yet): where it leads is not known
            Err(_) if existing.symlink_metadata().is_ok() => {
                return refuse(format!("{} leads through a symbolic link to nowhere", target.display()));
            }
            Err(_) => match (existing.file_name().map(|n| n.to_os_string()), existing.parent()) {
                (Some(name), Some(parent)) => {
                    rest.push(name);
                    existing = parent.to_path_buf();
                }
                _ => return refuse(format!("{} cannot be resolved", target.display())),
            },
        }
    };
    if target.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return refuse(format!("{} must not contain ..", target.display()));
    }
    let full = rest.iter().rev().fold(resolved, |p, n| p.join(n));
    let inside = roots.iter().filter_map(|r| r.canonicalize().ok()).any(|r| full.starts_with(&r));
    if !inside {
        let allowed: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
        return refuse(format!(
            "{} is outside the folders this server restores to ({})",
            target.display(),
            allowed.join(", ")
        ));
    }
    // the root as the target names it: below it, nothing is followed
    for r in roots {
        for named in [Some(r.clone()), r.canonicalize().ok()].into_iter().flatten() {
            if target.starts_with(&named) {
                return Ok(named);
            }
        }
    }
    refuse(format!(
        "{} reaches the folder it restores to through a symbolic link; give the path without links",
        target.display()
    ))
}

/// A restore in the background: the `Restore` job, once recorded.
///
/// # Errors
/// `Field` for a target outside `roots` (`target`), an unknown point
/// (`point`) or format (`format`); as [`restore_job`] before it records
/// the job.
pub fn start_restore(
    vault: Arc<Vault>,
    env: &BackgroundEnv,
    item: Item,
    req: RestoreTarget,
    roots: &[PathBuf],
) -> Result<Job> {
    let within = check_restore_target(&req.target, roots)?;
    for p in &req.paths {
        if p.as_bytes().contains(&0) {
            return Err(ServiceError::field_error("paths", "a path cannot hold a NUL byte"));
        }
    }
    let format = match req.format.as_deref() {
        None | Some("raw") => DiskOutputFormat::Raw,
        Some("qcow2") => DiskOutputFormat::Qcow2,
        Some(other) => return Err(ServiceError::field_error("format", format!("{other:?} is not raw or qcow2"))),
    };
    let point = find_point(&vault, &item, &req.point).map_err(|e| match e.kind() {
        crate::error::ServiceErrorKind::NotFound | crate::error::ServiceErrorKind::Invalid => {
            ServiceError::field_error("point", e)
        }
        _ => e,
    })?;
    let req = RestoreRequest { target: req.target, paths: req.paths, format, vm: req.vm, within: Some(within) };
    let waiting =
        Waiting { vault: vault.clone(), operation: Operation::Restore, item: Some((item.name.clone(), item.id)) };
    start(env, "restore", waiting, move |env| restore_job(&vault, env, &item, &point, &req, None))
}

/// What a "verify now" asks for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyNow {
    /// The point's id, a unique prefix of it, or none: the newest.
    #[serde(default)]
    pub point: Option<String>,
    /// File items: restore this share of the files (1 to 100).
    #[serde(default)]
    pub sample_percent: Option<u8>,
}

/// A verification in the background, with the item's saved settings: the
/// `VerifyPoint` job, once recorded.
///
/// # Errors
/// `Field` for an unknown point (`point`) or a sample out of range.
pub fn start_verify(vault: Arc<Vault>, env: &BackgroundEnv, item: Item, req: VerifyNow) -> Result<Job> {
    let mut settings = item.verify.clone().unwrap_or_default();
    if req.sample_percent.is_some() {
        settings.sample_percent = req.sample_percent;
    }
    settings.check()?;
    if let Some(p) = &req.point {
        find_point(&vault, &item, p).map_err(|e| ServiceError::field_error("point", e))?;
    }
    let waiting =
        Waiting { vault: vault.clone(), operation: Operation::VerifyPoint, item: Some((item.name.clone(), item.id)) };
    start(env, "verify", waiting, move |env| {
        crate::recovery::verify::verify_point_job(&vault, env, &item, req.point.as_deref(), &settings)
    })
}

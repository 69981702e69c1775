//! The server's side of a registered host's backup.
//!
//! The host runs the backup; the server keeps it honest:
//! - the objects it sends are added create-only, only packs and index
//!   objects it sealed itself (`Vault::add_host_object`), and at most
//!   [`UPLOAD_QUOTA`] bytes of them before a point references them;
//! - the backup is a job like any other, run on the server for the time
//!   the host works: its record, heartbeats and progress are the server's,
//!   so the portal, the event stream and prune's care for running writers
//!   see it; a host silent for longer than its limit fails the job;
//! - the point is written by the server, under the master key, once the
//!   item is found to be the host's and every tree and chunk the host
//!   names is found in packs that host sealed (`Vault::check_host_tree`).

use std::time::{Duration, Instant};

use boveda_engine::BackupProgress;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use boveda_vault::{HostObject, RecordId, RecoveryPoint, Vault};
use jiff::Timestamp;

use crate::error::{Remedy, Result, ServiceError, ServiceErrorKind};
use crate::fleet::Host;
use crate::fleet::host_item;
pub use crate::fleet::protocol::{
    DirectGrant, HostClaim, HostProgress, HostReport, ReportReply, StartedJob, UploadAsk, UploadWay,
};
use crate::fleet::restores::Grant;
pub use crate::fleet::uploads::{GRANT_TTL, Intake, MAX_HOST_OBJECT, Quota, add_object, upload_way};
use crate::fleet::work::{Assignment, HostWork};
use crate::items::{Item, ItemSource};
use crate::protection::{check_can_back_up, point_retention};
use crate::runtime::clock::Clock;
use crate::runtime::job::{Job, JobDone, JobEnv, Observers, Operation, run_job};

/// Bytes a host may upload in one backup job (what no point references
/// yet); past it, every upload of that job is refused, naming the quota.
pub const UPLOAD_QUOTA: u64 = 64 << 30;

fn refused(message: String) -> ServiceError {
    ServiceError::refused(ServiceErrorKind::PermissionDenied, message, Remedy::AskAdmin)
}

/// Adds an item that lives on a registered host. Its paths are the host's:
/// they must be absolute and are checked there, when it backs up.
///
/// # Errors
/// `Invalid` for a bad name, a relative path or a source type a host
/// cannot back up yet; `Conflict` when the name is taken.
pub fn add_host_item(vault: &Vault, host: &Host, name: &str, source: ItemSource) -> Result<Item> {
    let paths: Vec<&std::path::Path> = match &source {
        ItemSource::Files { paths, .. } => paths.iter().map(|p| p.as_path()).collect(),
        ItemSource::Disk { path } => vec![path.as_path()],
        ItemSource::Vm { domain_xml, qmp, guest_agent, .. } => {
            [Some(domain_xml), qmp.as_ref(), guest_agent.as_ref()].into_iter().flatten().map(|p| p.as_path()).collect()
        }
    };
    if paths.is_empty() {
        return Err(ServiceError::field_error("paths", "an item needs at least one path"));
    }
    if let Some(p) = paths.iter().find(|p| !p.is_absolute()) {
        return Err(ServiceError::field_error(
            "paths",
            format!("{} is not an absolute path on host {}", p.display(), host.name),
        ));
    }
    let mut item = crate::items::add_item_record(vault, name, source)?;
    item = crate::items::update_item(vault, &item.id, |i| i.host = Some(host.id))?;
    Ok(item)
}

/// The ids of the chunks the vault holds of `host`'s, 32 bytes each: what
/// its next backup need not send again.
///
/// # Errors
/// A store error.
pub fn known_chunks(vault: &Vault, host: &Host) -> Result<Vec<u8>> {
    let ids = vault.host_chunks(&host.id)?;
    let mut out = Vec::with_capacity(ids.len() * 32);
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    Ok(out)
}

/// A host's backup job as the server runs it.
pub struct HostJob<'a> {
    pub host: &'a Host,
    pub item: &'a Item,
    pub retain_until: Option<Timestamp>,
    pub scheduled_for: Option<Timestamp>,
    /// How long the host may stay silent before the job fails.
    pub silence: Duration,
    /// Told the packs the point reaches, once it is checked.
    pub reached: Reached,
}

/// The packs a host job's point reaches, once known.
pub type Reached = Arc<Mutex<Option<HashSet<String>>>>;

impl HostJob<'_> {
    /// Runs the job until the host reports its point (checked, then
    /// written), its failure, or falls silent. `env`'s host name should be
    /// the host's.
    ///
    /// # Errors
    /// As [`crate::backup_job`]: refused before a job is recorded for an
    /// item that cannot be backed up; the backup's own failure is in the
    /// second value.
    pub fn run(
        &self,
        vault: &Vault,
        env: &JobEnv<'_>,
        reports: &crossbeam_channel::Receiver<HostReport>,
    ) -> Result<(Job, Result<RecoveryPoint>)> {
        let (host, item) = (self.host, self.item);
        if item.host != Some(host.id) {
            return Err(refused(format!("item {} is not host {}'s", item.name, host.name)));
        }
        check_can_back_up(item)?;
        let now = env.clock.now();
        let retain_until = point_retention(self.retain_until, self.scheduled_for, now)?;
        let mut spec = env.spec(Operation::Backup, item, self.scheduled_for);
        // the job ran on the host: its record says so (the jobs' "ran on");
        // this process only waits for its reports
        spec.hostname = host.name.clone();
        spec.workers = false;
        run_job(vault, env.clock, &spec, Observers::default(), |ctx| {
            ctx.set_phase(&format!("running on host {}", host.name));
            let mut last = HostProgress::default();
            let mut heard = Instant::now();
            let claim = loop {
                if ctx.is_cancelled() {
                    return Err(ServiceError::Engine(boveda_engine::EngineError::Cancelled));
                }
                match reports.recv_timeout(Duration::from_millis(250)) {
                    Ok(HostReport::Progress(p)) => {
                        heard = Instant::now();
                        ctx.set_phase(&format!("{} (on host {})", p.phase, host.name));
                        ctx.bytes_read(p.bytes_read.saturating_sub(last.bytes_read));
                        for _ in last.files..p.files {
                            ctx.file_done(std::path::Path::new(""), 0, false);
                        }
                        last = p;
                    }
                    Ok(HostReport::Done(claim)) => break claim,
                    Ok(HostReport::Await | HostReport::Restored(_)) => {}
                    Ok(HostReport::Failed { error }) => {
                        return Err(ServiceError::Invalid(format!("on host {}: {error}", host.name)));
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) if heard.elapsed() < self.silence => {}
                    Err(_) => {
                        return Err(ServiceError::Invalid(format!(
                            "host {} stopped reporting (nothing for {} s): the backup is abandoned, its uploads are reclaimed by prune",
                            host.name,
                            heard.elapsed().as_secs()
                        )));
                    }
                }
            };
            ctx.set_phase("checking what the host backed up");
            let reached = vault
                .check_host_tree(&host.id, &claim.tree)
                .map_err(|e| refused(format!("host {}: {e}", host.name)))?;
            if let Ok(mut slot) = self.reached.lock() {
                *slot = Some(reached);
            }
            if let Some(live) = &claim.live
                && !crate::fleet::host_vm::valid_bitmap(&live.bitmap)
            {
                return Err(refused(format!(
                    "host {}: {:?} is not a bitmap name boveda makes",
                    host.name, live.bitmap
                )));
            }
            let parent = vault.list_item_points(&item.id)?.pop();
            let point = RecoveryPoint {
                id: vault.new_point_id(&item.id),
                item_id: item.id,
                item_name: item.name.clone(),
                started: now,
                time: env.clock.now().max(now),
                tree: claim.tree,
                parent: parent.map(|p| p.id),
                hostname: host.name.clone(),
                sources: claim.sources,
                consistency: claim.live.as_ref().map_or(boveda_vault::Consistency::CrashConsistent, |l| l.consistency),
                retain_until,
                scheduled_for: self.scheduled_for,
                kept_by: if self.scheduled_for.is_some() { "scheduled" } else { "ad-hoc" }.into(),
                stats: claim.stats,
                warnings: claim.warnings,
                live_bitmap: claim.live.as_ref().map(|l| l.bitmap.clone()),
                freeze_ms: claim.live.as_ref().and_then(|l| l.freeze_ms),
            };
            vault.save_point(&point)?;
            crate::policies::holds::hold_new_point(vault, point.item_id, point.id, point.time)?;
            crate::policies::locks::lock_new_point(vault, point.item_id, point.id, point.time)?;
            // the signals are what the host reports of its own backup
            let details = crate::protection::suspicion::judge(vault, item, &point, point.time)?
                .map(|why| format!("{}{why}", crate::protection::suspicion::SUSPICIOUS))
                .into_iter()
                .collect();
            let done = JobDone { warnings: point.warnings.clone(), details, point: Some(point.id) };
            Ok((point, done))
        })
    }
}

/// How long a host may stay silent during a backup by default.
pub const DEFAULT_SILENCE: Duration = Duration::from_secs(60);

/// Jobs one host may run at once (each may upload up to its quota).
pub const JOBS_PER_HOST: usize = 2;

/// How long a host's `done` report waits for the server's check and the
/// point's write before it is told to ask again (well within a request's
/// time limit).
const REPLY_WAIT: Duration = Duration::from_secs(15);

/// How the server runs hosts' backup jobs.
#[derive(Clone)]
pub struct HostJobTerms {
    pub clock: Arc<dyn Clock>,
    /// How often the job's record beats.
    pub heartbeat: Duration,
    /// How long a host may stay silent before its job fails.
    pub silence: Duration,
    /// Bytes a host may upload in one job (see [`UPLOAD_QUOTA`]).
    pub quota: u64,
    /// Whether hosts may upload packs straight to the store, where it can
    /// sign grants (else everything passes through the server).
    pub direct: bool,
}

struct Running {
    host: RecordId,
    quota: Quota,
    direct: bool,
    reports: crossbeam_channel::Sender<HostReport>,
    outcome: crossbeam_channel::Receiver<Result<String>>,
    intake: Mutex<Intake>,
    reached: Reached,
    /// A restore's point.
    grant: Option<Grant>,
    archive_taken: std::sync::atomic::AtomicBool,
}

/// The host backup jobs a server runs now, by job id.
#[derive(Default)]
pub struct HostJobs {
    running: Mutex<HashMap<RecordId, Arc<Running>>>,
}

fn gone(job: &RecordId) -> ServiceError {
    ServiceError::Conflict(format!("job {} is not running (it ended, was stopped, or is not this host's)", job.short()))
}

impl HostJobs {
    fn get(&self, host: &Host, job: &RecordId) -> Result<Arc<Running>> {
        let running = self.running.lock().map_err(|_| ServiceError::Internal("host jobs poisoned".into()))?;
        running.get(job).filter(|r| r.host == host.id).cloned().ok_or_else(|| gone(job))
    }

    /// Starts a job of `host`: a backup of its item (its own asking, a
    /// scheduled slot the server gave out, or a backup now), or a restore
    /// the server ordered; run on a thread of its own until the host
    /// reports its end (or falls silent for `silence`). Returns once the
    /// job is recorded. When the host names a request, what it may do is
    /// what the server asked under it, never what the host says.
    ///
    /// # Errors
    /// `NotFound` for an item that is not the host's; `PermissionDenied`
    /// for a request or slot the server did not give this host; a refusal
    /// before the job is recorded (protection stopped, a past date).
    pub fn start(
        self: &Arc<Self>,
        vault: Arc<Vault>,
        terms: &HostJobTerms,
        host: Host,
        req: &Assignment,
        work: &HostWork,
    ) -> Result<StartedJob> {
        let asked = match &req.request {
            Some(request) => work.asked(&host, request).ok_or_else(|| {
                refused(format!("host {}: the server made no request {} of it", host.name, request.short()))
            })?,
            None if req.restore.is_some() => {
                return Err(refused(format!("host {}: a restore is ordered by the server, not by a host", host.name)));
            }
            None => req.clone(),
        };
        let (clock, heartbeat, silence) = (terms.clock.clone(), terms.heartbeat, terms.silence);
        let item = host_item(&vault, &host, &asked.item)?;
        // jobs at once multiply what a host may upload: a bound
        let running = self.running.lock().map_or(0, |r| r.values().filter(|j| j.host == host.id).count());
        if running >= JOBS_PER_HOST {
            return Err(refused(format!(
                "host {} runs {running} jobs already, the most a host may run at once",
                host.name
            )));
        }
        // what earlier jobs left unreferenced counts against this one
        let left = crate::fleet::unreferenced(&vault, &host.id)?;
        let quota = Quota { bytes: terms.quota, carried: left };
        if left >= terms.quota && asked.restore.is_none() {
            return Err(refused(format!(
                "host {} left {} MiB that no point references in earlier jobs, its quota of {} MiB; a prune reclaims it",
                host.name,
                left >> 20,
                terms.quota >> 20
            )));
        }
        let target = vault.writer_target();
        let job = if let Some(order) = &asked.restore {
            let grant = crate::fleet::restores::grant(&vault, &item, order)?;
            let kept = grant.clone();
            self.spawn(
                &host,
                (quota, terms.direct, Reached::default()),
                Some(kept),
                move |jobs_env_host, reports| {
                    let (vault, env, host) = jobs_env_host;
                    crate::fleet::restores::run_restore_job(&vault, env, &host, &item, &grant, reports, silence)
                },
                (vault, clock, heartbeat),
            )?
        } else {
            // a scheduled point only for the slot the server gave out
            if let Some(slot) = asked.scheduled_for
                && !work.is_given(&item.id, slot)
            {
                return Err(refused(format!(
                    "host {}: no backup of {} was scheduled for {slot}",
                    host.name, item.name
                )));
            }
            let retain_until = asked
                .retain_until
                .as_deref()
                .map(|t| crate::model::time_input::parse_retain_until(t, clock.now(), &jiff::tz::TimeZone::system()))
                .transpose()?;
            let scheduled_for = asked.scheduled_for;
            let reached = Reached::default();
            let told = reached.clone();
            self.spawn(
                &host,
                (quota, terms.direct, reached),
                None,
                move |jobs_env_host, reports| {
                    let (vault, env, host) = jobs_env_host;
                    let spec =
                        HostJob { host: &host, item: &item, retain_until, scheduled_for, silence, reached: told };
                    spec.run(&vault, env, reports).map(|(job, result)| (job, result.map(|p| p.id.to_hex())))
                },
                (vault, clock, heartbeat),
            )?
        };
        if let Some(request) = &req.request {
            work.started(request, job.id);
        }
        Ok(StartedJob { job: job.id, compression_level: target.compression_level, pack_size: target.pack_size as u64 })
    }

    /// Runs `run` on a thread of its own with the job's environment and its
    /// reports; returns the job once recorded.
    fn spawn(
        self: &Arc<Self>,
        host: &Host,
        (quota, direct, reached): (Quota, bool, Reached),
        grant: Option<Grant>,
        run: impl FnOnce(
            (Arc<Vault>, &JobEnv<'_>, Host),
            &crossbeam_channel::Receiver<HostReport>,
        ) -> Result<(Job, Result<String>)>
        + Send
        + 'static,
        (vault, clock, heartbeat): (Arc<Vault>, Arc<dyn Clock>, Duration),
    ) -> Result<Job> {
        let (reports_tx, reports) = crossbeam_channel::unbounded();
        let (started_tx, started) = crossbeam_channel::bounded(1);
        let (outcome_tx, outcome) = crossbeam_channel::bounded(1);
        let (jobs, who, kept) = (self.clone(), host.clone(), vault.clone());
        std::thread::spawn(move || {
            let mut job_env = JobEnv::new(clock.as_ref(), heartbeat, who.name.clone());
            job_env.started = Some(started_tx);
            let host = who.id;
            let (id, result) = match run((vault, &job_env, who), &reports) {
                Ok((job, result)) => (Some(job.id), result),
                Err(e) => (None, Err(e)),
            };
            let _ = outcome_tx.send(result);
            let ended = id.and_then(|id| jobs.running.lock().ok().and_then(|mut r| r.remove(&id)));
            // what the job uploaded and its point does not reach stays
            // unreferenced until a prune: it counts against the host's
            // next jobs
            if let Some(ended) = ended
                && let Ok(intake) = ended.intake.lock()
            {
                let reached = ended.reached.lock().ok().and_then(|r| r.clone());
                crate::fleet::uploads::carry(&kept, &host, &intake, reached.as_ref());
            }
        });
        let job: Job = crossbeam_channel::select! {
            recv(started) -> job => job.map_err(|_| ServiceError::Internal("the host job ended unrecorded".into()))?,
            recv(outcome) -> refused => {
                return Err(match refused {
                    Ok(Err(e)) => e,
                    _ => ServiceError::Internal("the host job ended unrecorded".into()),
                });
            }
        };
        let running = Arc::new(Running {
            host: host.id,
            quota,
            direct,
            reports: reports_tx,
            outcome,
            intake: Mutex::new(Intake::default()),
            reached,
            grant,
            archive_taken: std::sync::atomic::AtomicBool::new(false),
        });
        self.running.lock().map_err(|_| ServiceError::Internal("host jobs poisoned".into()))?.insert(job.id, running);
        Ok(job)
    }

    /// Writes the point a restore job of `host` was granted into `out`, as
    /// a tar archive: once. `ready` is called once the request is found
    /// good, before the first byte.
    ///
    /// # Errors
    /// `Conflict` when the job does not run; `PermissionDenied` when it is
    /// not a restore, or its archive was taken already; the vault's errors.
    pub fn archive(
        &self,
        vault: &Vault,
        host: &Host,
        job: &RecordId,
        out: impl std::io::Write,
        ready: &dyn Fn(),
    ) -> Result<()> {
        let running = self.get(host, job)?;
        let grant = running.grant.as_ref().ok_or_else(|| refused(format!("job {} is not a restore", job.short())))?;
        if running.archive_taken.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(refused(format!("the point of restore job {} was fetched already", job.short())));
        }
        ready();
        crate::fleet::restores::write_archive(vault, grant, out)?;
        Ok(())
    }

    /// Whether `job` runs for `host`.
    ///
    /// # Errors
    /// `Conflict` when it does not.
    pub fn check_running(&self, host: &Host, job: &RecordId) -> Result<()> {
        self.get(host, job).map(|_| ())
    }

    /// Adds an object the host sent for its running job `job`.
    ///
    /// # Errors
    /// `Conflict` when the job does not run (or is another host's);
    /// `PermissionDenied` for an object refused (see [`add_object`]).
    pub fn upload(&self, vault: &Vault, host: &Host, job: &RecordId, name: &str, bytes: &[u8]) -> Result<HostObject> {
        let running = self.get(host, job)?;
        if running.grant.is_some() {
            return Err(refused(format!("job {} is a restore: it uploads nothing", job.short())));
        }
        let mut intake = running.intake.lock().map_err(|_| ServiceError::Internal("poisoned".into()))?;
        add_object(vault, host, name, bytes, &mut intake, running.quota)
    }

    /// How the host is to upload a pack of its running job `job` (see
    /// [`upload_way`]).
    ///
    /// # Errors
    /// `Conflict` when the job does not run; as [`upload_way`].
    pub fn upload_way(&self, vault: &Vault, host: &Host, job: &RecordId, ask: &UploadAsk) -> Result<UploadWay> {
        let running = self.get(host, job)?;
        if running.grant.is_some() {
            return Err(refused(format!("job {} is a restore: it uploads nothing", job.short())));
        }
        if !running.direct {
            return Ok(UploadWay::default());
        }
        let mut intake = running.intake.lock().map_err(|_| ServiceError::Internal("poisoned".into()))?;
        upload_way(vault, host, ask, &mut intake, running.quota)
    }

    /// Takes a host's report on its running job. A `done` report is
    /// answered once the point is checked and written (or refused).
    ///
    /// # Errors
    /// `Conflict` when the job does not run; the refusal of the point.
    pub fn report(&self, host: &Host, job: &RecordId, report: HostReport) -> Result<ReportReply> {
        let running = self.get(host, job)?;
        match report {
            HostReport::Await => {}
            HostReport::Progress(_) => {
                running.reports.send(report).map_err(|_| gone(job))?;
                return Ok(ReportReply::default());
            }
            ends => running.reports.send(ends).map_err(|_| gone(job))?,
        }
        match running.outcome.recv_timeout(REPLY_WAIT) {
            Ok(Ok(point)) => Ok(ReportReply { point: Some(point), ..ReportReply::default() }),
            Ok(Err(e)) => Err(e),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                Ok(ReportReply { pending: true, ..ReportReply::default() })
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(gone(job)),
        }
    }
}

//! Jobs started in the background: the caller (the server) gets the job
//! as soon as it is recorded and follows it through the job records, as
//! any other process would.

use std::sync::Arc;
use std::time::Duration;

use boveda_engine::NoProgress;
use boveda_vault::Vault;
use jiff::Timestamp;

use crate::clock::Clock;
use crate::error::{Result, ServiceError};
use crate::item::Item;
use crate::job::Job;
use crate::protection::{JobEnv, backup_job};
use crate::recovery::{RestoreRequest, find_point, restore_job};

/// What a job started in the background needs besides the vault: owned,
/// since the job outlives the request that started it.
#[derive(Clone)]
pub struct BackgroundEnv {
    pub clock: Arc<dyn Clock>,
    pub heartbeat: Duration,
    pub hostname: String,
}

/// Runs `run` on a thread of its own and returns its job once recorded.
///
/// # Errors
/// What `run` refused with before recording a job (a bad request); a
/// thread that cannot be started.
fn start<T: Send + 'static>(
    env: &BackgroundEnv,
    what: &str,
    run: impl FnOnce(&JobEnv<'_>) -> Result<(Job, Result<T>)> + Send + 'static,
) -> Result<Job> {
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let (refused_tx, refused_rx) = crossbeam_channel::bounded(1);
    let env = env.clone();
    std::thread::Builder::new()
        .name(what.to_string())
        .spawn(move || {
            let mut job_env = JobEnv::new(env.clock.as_ref(), env.heartbeat, env.hostname.clone());
            job_env.started = Some(started_tx);
            // the job's own outcome is in its record
            if let Err(e) = run(&job_env) {
                let _ = refused_tx.send(e);
            }
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
///
/// # Errors
/// As [`backup_job`] before it records the job (an item that cannot be
/// backed up, a retain-until time not in the future).
pub fn start_backup(
    vault: Arc<Vault>,
    env: &BackgroundEnv,
    item: Item,
    retain_until: Option<Timestamp>,
) -> Result<Job> {
    start(env, "backup", move |env| backup_job(&vault, env, &item, retain_until, None, &NoProgress))
}

/// A restore in the background: the `Restore` job, once recorded.
///
/// # Errors
/// `NotFound` for the point; as [`restore_job`] before it records the job.
pub fn start_restore(
    vault: Arc<Vault>,
    env: &BackgroundEnv,
    item: Item,
    point: &str,
    req: RestoreRequest,
) -> Result<Job> {
    let point = find_point(&vault, &item, point)?;
    start(env, "restore", move |env| restore_job(&vault, env, &item, &point, &req, None))
}

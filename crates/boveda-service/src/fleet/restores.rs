//! Restores onto a registered host. A host cannot read the vault, so a
//! restore onto it is started by an Operator through the server (the API,
//! the portal), which orders it from the host's agent; the host starts the
//! job naming that order, and may then fetch that one point (those paths)
//! once, as a tar stream the server makes from the vault; it writes it
//! below its target and reports. Nothing lets a host ask for another
//! point, another item's, or the same one twice.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use boveda_engine::{RestoreProgress, TarStats};
use boveda_vault::{ChunkId, Vault};
use serde::Deserialize;

use crate::error::{Result, ServiceError};
use crate::fleet::Host;
use crate::fleet::protocol::HostReport;
pub use crate::fleet::protocol::Restored;
use crate::fleet::work::{Assignment, HostWork, RestoreOrder};
use crate::items::Item;
use crate::runtime::job::{Job, JobDone, JobEnv, Observers, Operation, run_job};

/// A restore a host was granted: the point's root tree and the paths.
#[derive(Debug, Clone)]
pub struct Grant {
    pub tree: ChunkId,
    pub point: String,
    pub paths: Vec<String>,
    pub target: std::path::PathBuf,
}

/// A restore of a point onto the item's host, as an Operator asks it.
#[derive(Debug, Clone, Deserialize)]
pub struct HostRestore {
    /// The point's id, a unique prefix of it, or `latest`.
    pub point: String,
    /// An absolute path on the host.
    pub target: std::path::PathBuf,
    #[serde(default)]
    pub paths: Vec<String>,
}

/// Orders the restore of `req` onto `item`'s host; returns its job once the
/// host started it (at most `wait`).
///
/// # Errors
/// `Field` `target` for a relative target; `NotFound` for the point;
/// `Conflict` when the host is not registered or does not start in time.
pub fn restore_on_host(vault: &Vault, work: &HostWork, item: &Item, req: &HostRestore, wait: Duration) -> Result<Job> {
    if !req.target.is_absolute() {
        return Err(ServiceError::field_error("target", "must be an absolute path on the host"));
    }
    let host = crate::fleet::list_hosts(vault)?
        .into_iter()
        .find(|h| Some(h.id) == item.host && h.unregistered.is_none())
        .ok_or_else(|| ServiceError::Conflict(format!("item {}'s host is not registered any more", item.name)))?;
    let point = crate::recovery::find_point(vault, item, &req.point)?;
    let order = RestoreOrder { point: point.id.to_hex(), target: req.target.clone(), paths: req.paths.clone() };
    let assignment = Assignment { item: item.name.clone(), restore: Some(order), ..Assignment::default() };
    let job = work.ask(&host, assignment, wait, "restore")?;
    crate::runtime::job::find_job(vault, &job.to_hex())
}

/// The grant of `order` for `item`: the point must be the item's.
///
/// # Errors
/// `NotFound` for a point the item lacks.
pub(crate) fn grant(vault: &Vault, item: &Item, order: &RestoreOrder) -> Result<Grant> {
    let point = crate::recovery::find_point(vault, item, &order.point)?;
    Ok(Grant { tree: point.tree, point: point.id.to_hex(), paths: order.paths.clone(), target: order.target.clone() })
}

/// Runs a host's restore job until it reports its end or falls silent.
///
/// # Errors
/// A store error recording the job; the restore's own failure is in the
/// second value.
pub(crate) fn run_restore_job(
    vault: &Vault,
    env: &JobEnv<'_>,
    host: &Host,
    item: &Item,
    grant: &Grant,
    reports: &crossbeam_channel::Receiver<HostReport>,
    silence: Duration,
) -> Result<(Job, Result<String>)> {
    let mut spec = env.spec(Operation::Restore, item, None);
    // the host restores; this process only waits for its reports
    spec.hostname = host.name.clone();
    spec.workers = false;
    run_job(vault, env.clock, &spec, Observers::default(), |ctx| {
        let short = &grant.point[..grant.point.len().min(8)];
        ctx.set_phase(&format!("restoring point {short} on host {} into {}", host.name, grant.target.display()));
        let mut heard = Instant::now();
        let mut written = 0u64;
        loop {
            if ctx.is_cancelled() {
                return Err(ServiceError::Engine(boveda_engine::EngineError::Cancelled));
            }
            match reports.recv_timeout(Duration::from_millis(250)) {
                Ok(HostReport::Progress(p)) => {
                    heard = Instant::now();
                    ctx.bytes_written(p.bytes_read.saturating_sub(written));
                    written = written.max(p.bytes_read);
                }
                Ok(HostReport::Restored(r)) => {
                    let s = r.stats;
                    let details = vec![format!(
                        "restored point {short} onto host {} into {}: {} files, {} dirs, {} links, {} hard links, {} special files, {} bytes",
                        host.name,
                        grant.target.display(),
                        s.files,
                        s.dirs,
                        s.links,
                        s.hard_links,
                        s.specials,
                        s.bytes
                    )];
                    ctx.planned(s.files, s.bytes);
                    ctx.bytes_written(s.bytes.saturating_sub(written));
                    let mut warnings = r.errors.clone();
                    if s.skipped > 0 {
                        warnings.push(format!("{} sockets were skipped (their programs make them again)", s.skipped));
                    }
                    return Ok((details[0].clone(), JobDone { warnings, details, point: None }));
                }
                Ok(HostReport::Failed { error }) => {
                    return Err(ServiceError::Invalid(format!("on host {}: {error}", host.name)));
                }
                Ok(_) => {}
                Err(crossbeam_channel::RecvTimeoutError::Timeout) if heard.elapsed() < silence => {}
                Err(_) => {
                    return Err(ServiceError::Invalid(format!(
                        "host {} stopped reporting (nothing for {} s): the restore is abandoned",
                        host.name,
                        heard.elapsed().as_secs()
                    )));
                }
            }
        }
    })
}

/// Streams the granted point as a tar archive into `out`.
///
/// # Errors
/// The vault's errors; `out`'s.
pub(crate) fn write_archive(vault: &Vault, grant: &Grant, out: impl Write) -> Result<TarStats> {
    let index = vault.load_index()?;
    Ok(boveda_engine::write_point_tar(vault, &index, &grant.tree, &grant.paths, out)?)
}

/// Whether `target` lies in one of `roots` (a host's agent restores only
/// there); checked on the host, with its own roots.
pub fn within_roots(target: &Path, roots: &[std::path::PathBuf]) -> bool {
    let real = |p: &Path| {
        let mut probe = p.to_path_buf();
        // the deepest part of the path that exists, resolved
        loop {
            if let Ok(r) = std::fs::canonicalize(&probe) {
                return Some(r.join(p.strip_prefix(&probe).ok()?));
            }
            if !probe.pop() {
                return None;
            }
        }
    };
    let Some(t) = real(target) else { return false };
    target.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::RootDir))
        && roots.iter().filter_map(|r| std::fs::canonicalize(r).ok()).any(|r| t.starts_with(&r))
}

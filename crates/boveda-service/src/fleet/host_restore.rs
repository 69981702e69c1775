//! A restore as a registered host runs it, on the server's order: the
//! target must lie in one of the folders the host's agent restores to
//! (`--restore-root`), checked here, on the host; the host starts the job
//! naming the order, fetches the point as a tar stream (once), writes it
//! below the target (`boveda_engine::unpack_tar`: relative to held
//! directory handles, never through a link), reporting as it goes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{Result, ServiceError};
use crate::fleet::client::HostClient;
use crate::fleet::intake::{HostProgress, HostReport};
use crate::fleet::restores::{Restored, within_roots};
use crate::fleet::work::Assignment;

/// Runs the restore the server ordered in `work` into its target, if the
/// target lies in one of `roots`.
///
/// # Errors
/// `PermissionDenied` for a target outside `roots` (the job ends Failed
/// saying so); the server's refusal; the archive's or the target's errors
/// (the job ends Failed saying so).
pub fn restore_ordered(client: Arc<HostClient>, work: &Assignment, roots: &[PathBuf]) -> Result<Restored> {
    let order = work.restore.as_ref().ok_or_else(|| ServiceError::Invalid("not a restore".into()))?;
    // the job first, so that a refusal here is the job's recorded outcome
    let started = client.start_backup(work)?;
    let job = started.job;
    if !within_roots(&order.target, roots) {
        let roots = if roots.is_empty() {
            "no folder".to_string()
        } else {
            roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", ")
        };
        let why = format!(
            "restore of {} into {} refused: this host restores only into {roots} (boveda host agent --restore-root)",
            work.item,
            order.target.display()
        );
        let _ = client.report(&job, &HostReport::Failed { error: why.clone() });
        return Err(ServiceError::refused(
            crate::error::ServiceErrorKind::PermissionDenied,
            why,
            crate::error::Remedy::AskAdmin,
        ));
    }
    let written = AtomicU64::new(0);
    let (finished, stop) = crossbeam_channel::bounded::<()>(0);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(Duration::from_secs(2)) {
                let p =
                    HostProgress { phase: "restoring".into(), files: 0, bytes_read: written.load(Ordering::Relaxed) };
                let _ = client.report(&job, &HostReport::Progress(p));
            }
        });
        let result = client.archive(&job).and_then(|archive| {
            let told = |n: u64| {
                written.fetch_add(n, Ordering::Relaxed);
            };
            Ok(boveda_engine::unpack_tar(archive, &order.target, &told)?)
        });
        drop(finished);
        result
    });
    match result {
        Ok(unpacked) => {
            let restored = Restored { stats: unpacked.stats, errors: unpacked.errors };
            client.report(&job, &HostReport::Restored(restored.clone()))?;
            Ok(restored)
        }
        Err(e) => {
            let _ = client.report(&job, &HostReport::Failed { error: e.to_string() });
            Err(e)
        }
    }
}

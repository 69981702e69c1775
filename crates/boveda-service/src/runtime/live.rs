//! The progress of the jobs this process runs, as of the last second.
//!
//! A job's record in the vault is rewritten once per heartbeat (10 s by
//! default: a record per second would cost a store write per second per
//! job). The process running it publishes its progress here every second
//! too, so that what shows jobs in the same process (the server's API and
//! portal) shows them live, and a job shorter than one heartbeat is not
//! seen standing still at zero.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

use boveda_vault::RecordId;

use crate::model::job_record::{Job, JobProgress};

static LIVE: LazyLock<Mutex<HashMap<RecordId, JobProgress>>> = LazyLock::new(Mutex::default);
/// How many jobs of this process have ended: a listing read before the
/// last one ended is stale.
static ENDED: AtomicU64 = AtomicU64::new(0);

/// Records `progress` as job `id`'s latest.
pub(crate) fn publish(id: RecordId, progress: JobProgress) {
    if let Ok(mut live) = LIVE.lock() {
        live.insert(id, progress);
    }
}

/// Job `id` is ending: its record says the rest.
pub(crate) fn forget(id: &RecordId) {
    if let Ok(mut live) = LIVE.lock() {
        live.remove(id);
    }
}

/// Job `id`'s last record is written.
pub(crate) fn ended() {
    ENDED.fetch_add(1, Ordering::SeqCst);
}

/// How many jobs of this process have ended so far.
pub fn jobs_ended() -> u64 {
    ENDED.load(Ordering::SeqCst)
}

/// The latest progress of job `id`, when this process runs it.
pub fn live_progress(id: &RecordId) -> Option<JobProgress> {
    LIVE.lock().ok()?.get(id).cloned()
}

/// Gives the running jobs of `jobs` that this process runs their latest
/// progress; says whether any changed.
pub fn with_live_progress(jobs: &mut [Job]) -> bool {
    let Ok(live) = LIVE.lock() else { return false };
    if live.is_empty() {
        return false;
    }
    let mut changed = false;
    for j in jobs.iter_mut().filter(|j| j.state.is_running()) {
        if let Some(p) = live.get(&j.id)
            && *p != j.progress
        {
            j.progress = p.clone();
            changed = true;
        }
    }
    changed
}

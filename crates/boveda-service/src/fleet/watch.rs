//! Hosts that fall silent. A registered host not heard from for
//! [`UNREACHABLE_AFTER`] shows "Unreachable since …", and one alert is
//! raised for that silence: a failed `HostContact` job that says why, and
//! a critical alert naming the host (delivered to the vault's webhook like
//! any other). The host's record remembers the contact the alert was
//! raised for, so a server that watches again, or two servers of one
//! vault, raise it once; once the host is heard from again, its next
//! silence raises the next.

use boveda_vault::{RecordId, Vault, VaultError};
use jiff::Timestamp;

use crate::error::{Result, ServiceError};
use crate::fleet::{HOSTS, Host, HostRecord, UNREACHABLE_AFTER, list_hosts};
use crate::model::job_record::Operation;
use crate::runtime::alert::{Severity, raise_alert};
use crate::runtime::clock::Clock;
use crate::runtime::job::{JobDone, JobSpec, Observers, run_job};

/// Raises one alert for each host that fell silent and has none yet for
/// this silence; returns what each says.
///
/// # Errors
/// A store error.
pub fn watch_hosts(vault: &Vault, clock: &dyn Clock) -> Result<Vec<String>> {
    let now = clock.now();
    let mut raised = Vec::new();
    for host in list_hosts(vault)? {
        let Some(seen) = host.last_contact else { continue };
        if host.unregistered.is_some()
            || now.duration_since(seen) <= UNREACHABLE_AFTER
            || host.alerted_silence == Some(seen)
            || !claim_silence(vault, &host.id, seen)?
        {
            continue;
        }
        let reason = format!(
            "host {} has not been heard from since {seen} ({} minutes): its backups cannot run; check that `boveda agent` runs on it and reaches the server",
            host.name,
            now.duration_since(seen).as_mins()
        );
        alert(vault, clock, &host, &reason)?;
        raised.push(reason);
    }
    Ok(raised)
}

/// Marks the host's silence since `seen` as alerted, unless it was heard
/// from meanwhile or someone marked it first; whether this caller did.
fn claim_silence(vault: &Vault, host: &RecordId, seen: Timestamp) -> Result<bool> {
    let mut claimed = false;
    vault.catalog_update(HOSTS, host, |current: Option<HostRecord>| {
        let mut r = current.ok_or_else(|| VaultError::NotFound(format!("host {host}")))?;
        claimed = r.host.last_contact == Some(seen) && r.host.alerted_silence != Some(seen);
        if claimed {
            r.host.alerted_silence = Some(seen);
        }
        Ok(Some(r))
    })?;
    Ok(claimed)
}

fn alert(vault: &Vault, clock: &dyn Clock, host: &Host, reason: &str) -> Result<()> {
    let spec = JobSpec {
        operation: Operation::HostContact,
        item: None,
        scheduled_for: None,
        heartbeat: crate::runtime::job::DEFAULT_HEARTBEAT,
        hostname: host.name.clone(),
        started: None,
        id: None,
        workers: false,
    };
    let (job, _) = run_job(vault, clock, &spec, Observers::default(), |_| {
        Err::<((), JobDone), _>(ServiceError::Conflict(reason.to_string()))
    })?;
    raise_alert(vault, &job, Severity::Critical, reason, job.end.unwrap_or(job.start))?;
    Ok(())
}

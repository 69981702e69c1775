//! Alerts as the lists show them: each with its state (active, resolved by
//! a later success of its item, acknowledged), worked out from the jobs
//! when read, never stored.

use boveda_vault::Vault;
use jiff::Timestamp;

use crate::error::Result;
use crate::runtime::alert::{Alert, acknowledge, settle_state, stored_alerts};
use crate::runtime::job::{JobFilter, list_jobs};

/// Every alert, newest first, with its state.
///
/// # Errors
/// A store error or a damaged record.
pub fn list_alerts(vault: &Vault) -> Result<Vec<Alert>> {
    let mut all = stored_alerts(vault)?;
    let jobs = list_jobs(vault, &JobFilter::default())?;
    for a in &mut all {
        settle_state(a, &jobs);
    }
    Ok(all)
}

/// Marks alert `id` (or the only one whose id starts so) acknowledged by
/// `by` at `now`; the alert with its state.
///
/// # Errors
/// `NotFound` for no such alert; a store error.
pub fn acknowledge_alert(vault: &Vault, id: &str, by: &str, now: Timestamp) -> Result<Alert> {
    let mut alert = acknowledge(vault, id, by, now)?;
    settle_state(&mut alert, &list_jobs(vault, &JobFilter::default())?);
    Ok(alert)
}

//! Alerts: a failed backup or restore, and every deletion of backup data,
//! raise an alert stored in the vault (`catalog/alerts/<id>`), listed by
//! `boveda alert list` and, when the vault has a webhook URL, POSTed to it
//! as JSON. An alert the webhook did not take stays undelivered and is
//! retried (by the agent on every pass, and by `alert list --retry`); a
//! webhook that is down never fails the job that raised the alert.

use std::time::Duration;

use boveda_vault::{RecordId, Vault};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::job_record::{Job, Operation};
use crate::runtime::control::vault_control;

const ALERTS: &str = "alerts";
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    Critical,
    Warning,
    Information,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub id: RecordId,
    pub severity: Severity,
    pub time: Timestamp,
    pub item: Option<String>,
    pub operation: Operation,
    pub job: RecordId,
    pub reason: String,
    /// Whether the vault's webhook took it (always true without a webhook).
    pub delivered: bool,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// Records an alert for a job and tries the webhook once.
///
/// # Errors
/// A store error writing the alert.
pub fn raise_alert(vault: &Vault, job: &Job, severity: Severity, reason: &str, time: Timestamp) -> Result<Alert> {
    let webhook = vault_control(vault)?.webhook;
    let mut alert = Alert {
        id: RecordId::random(),
        severity,
        time,
        item: job.item.clone(),
        operation: job.operation,
        job: job.id,
        reason: reason.to_string(),
        delivered: webhook.is_none(),
        attempts: 0,
        last_error: None,
    };
    vault.catalog_put(ALERTS, &alert.id, Some(&alert))?;
    if let Some(url) = webhook {
        deliver(vault, &url, &mut alert)?;
    }
    Ok(alert)
}

/// Every alert, newest first.
///
/// # Errors
/// A store error or a damaged record.
pub fn list_alerts(vault: &Vault) -> Result<Vec<Alert>> {
    let mut all: Vec<Alert> = vault.catalog_list::<Alert>(ALERTS)?.into_iter().map(|(_, a)| a).collect();
    all.sort_by(|a, b| b.time.cmp(&a.time).then(a.id.cmp(&b.id)));
    Ok(all)
}

/// Posts every undelivered alert to the webhook again; returns how many
/// were delivered now.
///
/// # Errors
/// A store error.
pub fn retry_alerts(vault: &Vault) -> Result<usize> {
    let Some(url) = vault_control(vault)?.webhook else {
        return Ok(0);
    };
    let mut delivered = 0;
    for mut alert in list_alerts(vault)?.into_iter().filter(|a| !a.delivered) {
        deliver(vault, &url, &mut alert)?;
        delivered += usize::from(alert.delivered);
    }
    Ok(delivered)
}

fn deliver(vault: &Vault, url: &str, alert: &mut Alert) -> Result<()> {
    alert.attempts += 1;
    match post_json(url, alert) {
        Ok(()) => {
            alert.delivered = true;
            alert.last_error = None;
        }
        Err(e) => alert.last_error = Some(e),
    }
    vault.catalog_put(ALERTS, &alert.id, Some(&*alert))?;
    Ok(())
}

fn post_json(url: &str, alert: &Alert) -> std::result::Result<(), String> {
    let body = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
    let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(WEBHOOK_TIMEOUT)).build().into();
    agent
        .post(url)
        .header("content-type", "application/json")
        .send(&body[..])
        .map(|_| ())
        .map_err(|e| format!("webhook {url}: {e}"))
}

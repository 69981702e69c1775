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
use crate::model::job_record::{Job, JobState, Operation};
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
    /// Who acknowledged it, and when: seen, being dealt with.
    #[serde(default)]
    pub acknowledged: Option<Acknowledgement>,
    /// Where it stands now, from the jobs that came after it (not stored:
    /// worked out whenever alerts are listed).
    #[serde(default)]
    pub state: AlertState,
    /// When a later job of the same item and operation succeeded.
    #[serde(default)]
    pub resolved: Option<Timestamp>,
    /// What to do about it, in one sentence.
    #[serde(default)]
    pub action: String,
    /// Its e-mail, when the vault sent e-mail as it was raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailOutcome>,
}

/// Whether an alert's e-mail went out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailOutcome {
    pub sent: bool,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledgement {
    pub time: Timestamp,
    pub by: String,
}

/// An alert is active until a later job of its item and operation
/// succeeds (resolved) or someone acknowledges it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlertState {
    #[default]
    Active,
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Active => "Active",
            AlertState::Acknowledged => "Acknowledged",
            AlertState::Resolved => "Resolved",
        }
    }
}

/// Records an alert for a job and tries the webhook once.
///
/// # Errors
/// A store error writing the alert.
pub fn raise_alert(vault: &Vault, job: &Job, severity: Severity, reason: &str, time: Timestamp) -> Result<Alert> {
    let control = vault_control(vault)?;
    let webhook = control.webhook;
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
        acknowledged: None,
        state: AlertState::Active,
        resolved: None,
        action: String::new(),
        email: control.email.as_ref().map(|_| EmailOutcome { sent: false, attempts: 0, last_error: None }),
    };
    alert.action = action_for(&alert);
    vault.catalog_put(ALERTS, &alert.id, Some(&alert))?;
    if let Some(url) = webhook {
        deliver(vault, &url, &mut alert)?;
    }
    if let Some(settings) = &control.email {
        mail(vault, settings, &mut alert)?;
    }
    Ok(alert)
}

/// Every alert as stored, newest first (their states not yet worked out:
/// `reports::alerts::list_alerts` does).
///
/// # Errors
/// A store error or a damaged record.
pub(crate) fn stored_alerts(vault: &Vault) -> Result<Vec<Alert>> {
    let mut all: Vec<Alert> = vault.catalog_list::<Alert>(ALERTS)?.into_iter().map(|(_, a)| a).collect();
    all.sort_by(|a, b| b.time.cmp(&a.time).then(a.id.cmp(&b.id)));
    Ok(all)
}

/// An alert's state from the jobs after it: a failed backup or restore is
/// resolved by the next one of its item that succeeds.
pub(crate) fn settle_state(alert: &mut Alert, jobs: &[Job]) {
    alert.action = action_for(alert);
    let resolves = matches!(alert.operation, Operation::Backup | Operation::Restore | Operation::VerifyPoint)
        && !alert.reason.starts_with("the backup looks like an attack");
    alert.resolved = jobs
        .iter()
        .filter(|j| resolves && j.operation == alert.operation && j.item.is_some() && j.item == alert.item)
        .filter(|j| j.start > alert.time && matches!(j.state, JobState::Completed | JobState::CompletedWithWarnings))
        .filter_map(|j| j.end)
        .min();
    alert.state = match (&alert.resolved, &alert.acknowledged) {
        (Some(_), _) => AlertState::Resolved,
        (None, Some(_)) => AlertState::Acknowledged,
        (None, None) => AlertState::Active,
    };
}

/// What to do about an alert, in one sentence.
fn action_for(alert: &Alert) -> String {
    let item = alert.item.as_deref().unwrap_or("the item");
    match alert.operation {
        _ if alert.reason.starts_with("the backup looks like an attack") => format!(
            "Check {item}'s machine for ransomware before trusting its new data; the point before is held: \
             review it (`boveda recoverypoint review {item}`)"
        ),
        Operation::Backup => format!(
            "Fix what the reason names (a path, a disk, the store), then run Backup now for {item}; \
             the alert resolves when a backup succeeds"
        ),
        Operation::Restore => {
            "Fix what the reason names (the target folder, its space, its permissions) and restore again".to_string()
        }
        Operation::VerifyPoint => format!(
            "Read the console lines in the verification (`boveda recoverypoint show {item} POINT`): a point that \
             does not boot or restore is no backup; fix the machine, back it up, and verify the new point"
        ),
        Operation::DeleteBackupData => {
            format!("If nobody meant to delete {item}'s data, undelete it before its soft-delete window ends")
        }
        _ => "Read the job's details; acknowledge the alert once it is dealt with".to_string(),
    }
}

/// Marks alert `id` (or the only one whose id starts so) acknowledged by
/// `by` at `now`; its state is worked out by the caller.
///
/// # Errors
/// `NotFound` for no such alert; a store error.
pub(crate) fn acknowledge(vault: &Vault, id: &str, by: &str, now: Timestamp) -> Result<Alert> {
    let all: Vec<Alert> = vault.catalog_list::<Alert>(ALERTS)?.into_iter().map(|(_, a)| a).collect();
    let found: Vec<&Alert> = all.iter().filter(|a| !id.is_empty() && a.id.to_hex().starts_with(id)).collect();
    let [one] = found.as_slice() else {
        return Err(crate::error::ServiceError::refused(
            crate::error::ServiceErrorKind::NotFound,
            format!("no single alert with id {id:?} in this vault"),
            crate::error::Remedy::ListAlerts,
        ));
    };
    let mut alert = (*one).clone();
    alert.acknowledged = Some(Acknowledgement { time: now, by: by.to_string() });
    vault.catalog_put(ALERTS, &alert.id, Some(&alert))?;
    Ok(alert)
}

/// Posts every undelivered alert to the webhook again; returns how many
/// were delivered now.
///
/// # Errors
/// A store error.
pub fn retry_alerts(vault: &Vault) -> Result<usize> {
    let control = vault_control(vault)?;
    let mut delivered = 0;
    for mut alert in stored_alerts(vault)? {
        if let Some(url) = control.webhook.as_deref().filter(|_| !alert.delivered) {
            deliver(vault, url, &mut alert)?;
            delivered += usize::from(alert.delivered);
        }
        if let Some(settings) = &control.email
            && alert.email.as_ref().is_some_and(|e| !e.sent)
        {
            mail(vault, settings, &mut alert)?;
            delivered += usize::from(alert.email.as_ref().is_some_and(|e| e.sent));
        }
    }
    Ok(delivered)
}

/// Sends an alert's e-mail and records how it went.
fn mail(vault: &Vault, settings: &crate::runtime::email::EmailSettings, alert: &mut Alert) -> Result<()> {
    let (subject, body) = alert_message(&vault.settings().name, alert);
    let outcome = settings.send(&subject, &body);
    let e = alert.email.get_or_insert(EmailOutcome { sent: false, attempts: 0, last_error: None });
    e.attempts += 1;
    match outcome {
        Ok(()) => {
            e.sent = true;
            e.last_error = None;
        }
        Err(why) => e.last_error = Some(why),
    }
    vault.catalog_put(ALERTS, &alert.id, Some(&*alert))?;
    Ok(())
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

/// An alert as a message: the subject names the severity, what failed and
/// the vault; the body what happened and what to do.
fn alert_message(vault: &str, alert: &Alert) -> (String, String) {
    let item = alert.item.as_deref().map(|i| format!(" of {i}")).unwrap_or_default();
    let subject = format!("[boveda] {:?}: {}{item} (vault {vault})", alert.severity, alert.operation.as_str());
    let body = format!(
        "What happened: {}\n\nWhat to do: {}\n\nVault: {vault}\nItem: {}\nOperation: {}\nTime: {} (UTC)\nJob: {}\nAlert: {}\n\n\
         Acknowledge it in the portal (Alerts) or with `boveda alert ack {}`.\n",
        alert.reason,
        alert.action,
        alert.item.as_deref().unwrap_or("-"),
        alert.operation.as_str(),
        alert.time,
        alert.job,
        alert.id,
        alert.id.short()
    );
    (subject, body)
}

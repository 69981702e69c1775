//! The item list as the CLI and the portal show it: each item with its
//! protection state, policy, last backup and next one. A read model, made
//! from items, points, policies, jobs, import jobs and hosts; nothing imports it
//! but the commands, the server and the dashboard.

use boveda_vault::Vault;

use crate::error::Result;
use crate::items::{Item, ProtectionState, list_items};
use crate::offline::{ImportState, list_import_jobs, seeding_status};
use crate::policies::list_policies;
use crate::runtime::job::{Job, JobState};

/// An item as the item list shows it: its protection state (with
/// "Warning (initial backup pending)" and an offline seed's progress), its
/// policy, its last backup and when the next one is due.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemOverview {
    pub name: String,
    pub kind: String,
    pub protection: String,
    pub policy: Option<String>,
    /// The state of its last backup job (`-` before any).
    pub last_backup_status: String,
    pub last_backup: Option<jiff::Timestamp>,
    pub next_backup: Option<jiff::Timestamp>,
    pub recovery_points: usize,
    /// The registered host it is on (none: the server's own machine).
    pub host: Option<String>,
    /// How it is doing, from its last finished backup (Azure's item
    /// health): `Healthy`, `Warning`, `Critical` or `Pending` (no
    /// backup has finished yet).
    pub health: Health,
    /// Why, when it is not healthy: the last backup's error or warning.
    pub health_reason: Option<String>,
    /// The newest verification of any of its points: when, whether it
    /// passed, how long a full restore (or a boot) takes.
    pub last_verification: Option<crate::recovery::verify::PointVerification>,
    pub item: Item,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Health {
    Healthy,
    Warning,
    Critical,
    Pending,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "Healthy",
            Health::Warning => "Warning",
            Health::Critical => "Critical",
            Health::Pending => "Pending",
        }
    }
}

/// An item's health from its last finished backup job and its last point.
fn health(last_done: Option<&Job>, last_point: Option<&boveda_vault::RecoveryPoint>) -> (Health, Option<String>) {
    match (last_done, last_point) {
        (Some(j), _) if j.state == JobState::Failed => {
            (Health::Critical, Some(format!("the last backup failed: {}", j.error.clone().unwrap_or_default())))
        }
        (Some(j), _) if j.state == JobState::Cancelled => (Health::Warning, Some("the last backup was stopped".into())),
        (Some(j), _) if j.state == JobState::CompletedWithWarnings => (
            Health::Warning,
            Some(j.warnings.first().cloned().unwrap_or_else(|| "the last backup had warnings".into())),
        ),
        (_, Some(p)) if !p.warnings.is_empty() && last_done.is_none() => (Health::Warning, p.warnings.first().cloned()),
        (_, Some(_)) => (Health::Healthy, None),
        (_, None) => (Health::Pending, Some("initial backup pending".into())),
    }
}

/// Every item of the vault as the item list shows it, at `now`.
///
/// # Errors
/// A store error or a damaged record.
pub fn item_overview(vault: &Vault, now: jiff::Timestamp) -> Result<Vec<ItemOverview>> {
    let items = list_items(vault)?;
    let points = vault.list_points()?;
    let policies = list_policies(vault)?;
    let filter = crate::runtime::job::JobFilter {
        operation: Some(crate::runtime::job::Operation::Backup),
        ..Default::default()
    };
    let jobs = crate::runtime::job::list_jobs(vault, &filter)?;
    let imports = list_import_jobs(&**vault.store())?;
    let hosts = crate::fleet::list_hosts(vault)?;
    let verified = crate::recovery::verify::verifications(vault)?;
    Ok(items
        .into_iter()
        .map(|i| {
            let seeding = imports
                .iter()
                .find(|j| j.item_id == i.id && j.state != ImportState::Completed)
                .and_then(seeding_status);
            let last_point = points.iter().rev().find(|p| p.item_id == i.id);
            let last_job = jobs.iter().rev().find(|j| j.item_id == Some(i.id));
            let policy = policies.iter().find(|p| Some(p.id) == i.protection.policy);
            let status = match (last_job, last_point) {
                (Some(j), _) => j.state.as_str().to_string(),
                (None, Some(p)) if !p.warnings.is_empty() => "CompletedWithWarnings".into(),
                (None, Some(_)) => "Completed".into(),
                (None, None) => "-".into(),
            };
            let last_done = jobs.iter().rev().find(|j| j.item_id == Some(i.id) && !j.state.is_running());
            let (health, health_reason) = health(last_done, last_point);
            let protection = match (i.protection.state, last_point) {
                (state, _) if seeding.is_some() => {
                    format!("{} - {}", state.as_str(), seeding.clone().unwrap_or_default())
                }
                (state, None) if health == Health::Critical => {
                    format!("{} - Critical (last backup failed)", state.as_str())
                }
                (ProtectionState::NotProtected | ProtectionState::Protected, None) => {
                    format!("{} - Warning (initial backup pending)", i.protection.state.as_str())
                }
                (state, _) => state.as_str().to_string(),
            };
            let next = match (i.protection.state, policy) {
                (ProtectionState::Protected, Some(p)) => crate::model::schedule::next_slot(p, now),
                _ => None,
            };
            ItemOverview {
                name: i.name.clone(),
                kind: i.source.type_name().into(),
                protection,
                policy: policy.map(|p| p.name.clone()),
                last_backup_status: status,
                last_backup: last_job.map(|j| j.start).or(last_point.map(|p| p.time)),
                next_backup: next,
                recovery_points: points.iter().filter(|p| p.item_id == i.id).count(),
                host: i.host.and_then(|h| hosts.iter().find(|o| o.id == h)).map(|o| o.name.clone()),
                health,
                health_reason,
                last_verification: verified.iter().find(|v| v.item == i.id).cloned(),
                item: i,
            }
        })
        .collect())
}

//! A vault at a glance: what the portal's dashboard shows.

use std::collections::BTreeMap;

use boveda_vault::Vault;
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde::Serialize;

use crate::error::Result;
use crate::reports::usage::{PriceTable, usage};
use crate::runtime::job::{JobFilter, list_jobs};

/// How many days the dashboard's series cover.
pub const DASHBOARD_DAYS: usize = 30;

#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    pub vault: String,
    /// Items by protection state; items protected or not that have no
    /// point yet are counted as "initial backup pending" too.
    pub items_by_state: BTreeMap<String, usize>,
    pub initial_backup_pending: usize,
    /// Items by health (`Healthy`, `Warning`, `Critical`, `Pending`): a
    /// failed last backup makes an item `Critical` whatever its
    /// protection state.
    pub items_by_health: BTreeMap<String, usize>,
    /// Alerts neither resolved nor acknowledged, whenever raised.
    pub active_alerts: usize,
    /// Jobs started in the last 24 hours, by state.
    pub jobs_last_24h: BTreeMap<String, usize>,
    /// Alerts raised in the last 24 hours.
    pub alerts_last_24h: usize,
    pub stored_bytes: u64,
    pub monthly_cost: f64,
    pub currency: String,
    /// The last [`DASHBOARD_DAYS`] days (UTC), oldest first.
    pub days: Vec<DayStats>,
    /// What could not be read (a damaged tree), named; the rest is shown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DayStats {
    pub date: jiff::civil::Date,
    /// Bytes the points kept now had added to the store by the end of the
    /// day (points deleted since are no longer counted).
    pub stored_bytes: u64,
    /// Jobs started that day, by state.
    pub jobs: BTreeMap<String, usize>,
}

/// The dashboard of a vault at `now`.
///
/// # Errors
/// A store error or a damaged record.
pub fn dashboard(vault: &Vault, prices: &PriceTable, now: Timestamp) -> Result<Dashboard> {
    let used = usage(vault, prices)?;
    dashboard_with(vault, &used, now)
}

/// The dashboard of a vault at `now` with a usage report already made
/// (the costly part: it walks every point's trees), for a caller that
/// shares one report between many dashboards.
///
/// # Errors
/// A store error or a damaged record.
pub fn dashboard_with(vault: &Vault, used: &crate::reports::usage::Usage, now: Timestamp) -> Result<Dashboard> {
    let items = crate::items::list_items(vault)?;
    let points = vault.list_points()?;
    let jobs = list_jobs(vault, &JobFilter::default())?;
    let alerts = crate::reports::alerts::list_alerts(vault)?;
    let day_ago = now - SignedDuration::from_hours(24);

    let mut items_by_state = BTreeMap::new();
    let mut initial_backup_pending = 0;
    for i in &items {
        *items_by_state.entry(i.protection.state.as_str().to_string()).or_insert(0) += 1;
        if !points.iter().any(|p| p.item_id == i.id) {
            initial_backup_pending += 1;
        }
    }
    let mut jobs_last_24h = BTreeMap::new();
    for j in jobs.iter().filter(|j| j.start >= day_ago) {
        *jobs_last_24h.entry(j.state.as_str().to_string()).or_insert(0) += 1;
    }
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let mut days = Vec::with_capacity(DASHBOARD_DAYS);
    for back in (0..DASHBOARD_DAYS as i64).rev() {
        let date = today.checked_sub(back.days()).unwrap_or(today);
        let day_of = |t: Timestamp| t.to_zoned(jiff::tz::TimeZone::UTC).date();
        let stored_bytes = points.iter().filter(|p| day_of(p.time) <= date).map(|p| p.stats.bytes_stored).sum();
        let mut by_state = BTreeMap::new();
        for j in jobs.iter().filter(|j| day_of(j.start) == date) {
            *by_state.entry(j.state.as_str().to_string()).or_insert(0) += 1;
        }
        days.push(DayStats { date, stored_bytes, jobs: by_state });
    }
    let mut items_by_health = BTreeMap::new();
    for o in crate::reports::overview::item_overview(vault, now)? {
        *items_by_health.entry(o.health.as_str().to_string()).or_insert(0) += 1;
    }
    Ok(Dashboard {
        vault: vault.settings().name.clone(),
        items_by_state,
        initial_backup_pending,
        items_by_health,
        active_alerts: alerts.iter().filter(|a| a.state == crate::runtime::alert::AlertState::Active).count(),
        jobs_last_24h,
        alerts_last_24h: alerts.iter().filter(|a| a.time >= day_ago).count(),
        stored_bytes: used.stored_bytes,
        monthly_cost: used.monthly_cost,
        currency: used.prices.currency.clone(),
        days,
        warnings: used.warnings.clone(),
    })
}

/// What a vault's jobs add up to, for monitoring (`/metrics`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct VaultMetrics {
    /// Jobs by (operation, state).
    pub jobs: BTreeMap<(String, String), u64>,
    /// Bytes read and written by jobs, by operation.
    pub bytes_read: BTreeMap<String, u64>,
    pub bytes_written: BTreeMap<String, u64>,
    /// Durations of ended jobs by operation: (sum of seconds, count).
    pub durations: BTreeMap<String, (f64, u64)>,
    /// When each item's last successful backup ended.
    pub last_success: BTreeMap<String, Timestamp>,
    /// For a geo-redundant vault, how long changes have waited to reach
    /// the secondary (0 when none waits).
    pub replication_lag_secs: Option<f64>,
}

/// Adds up a vault's jobs (as [`list_jobs`] returns them) at `now`.
///
/// # Errors
/// A store error reading the replication status.
pub fn vault_metrics(vault: &Vault, jobs: &[crate::runtime::job::Job], now: Timestamp) -> Result<VaultMetrics> {
    let mut m = VaultMetrics::default();
    for j in jobs {
        let op = j.operation.as_str().to_string();
        *m.jobs.entry((op.clone(), j.state.as_str().to_string())).or_insert(0) += 1;
        *m.bytes_read.entry(op.clone()).or_insert(0) += j.progress.bytes_read;
        *m.bytes_written.entry(op.clone()).or_insert(0) += j.progress.bytes_written;
        if let Some(d) = j.duration() {
            let e = m.durations.entry(op).or_insert((0.0, 0));
            e.0 += d.as_secs_f64();
            e.1 += 1;
        }
        let ok = matches!(
            j.state,
            crate::runtime::job::JobState::Completed | crate::runtime::job::JobState::CompletedWithWarnings
        );
        if j.operation == crate::runtime::job::Operation::Backup
            && ok
            && let (Some(item), Some(end)) = (&j.item, j.end)
        {
            let last = m.last_success.entry(item.clone()).or_insert(end);
            *last = (*last).max(end);
        }
    }
    m.replication_lag_secs = crate::replication::replication_summary(vault)?
        .map(|r| r.pending_since.map_or(0.0, |t| now.duration_since(t).as_secs_f64().max(0.0)));
    Ok(m)
}

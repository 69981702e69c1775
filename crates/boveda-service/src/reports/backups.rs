//! Backup reports: per item over the last 7, 30 or 90 days, how many
//! backups ran and succeeded, how long they took (per day, for a trend),
//! and how much the period's backups added to the store; as a table the
//! portal draws and as CSV to export.

use boveda_vault::Vault;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::error::{Result, ServiceError};
use crate::items::list_items;
use crate::runtime::job::{JobFilter, JobState, Operation, list_jobs};

/// The periods a report covers, in days.
pub const REPORT_PERIODS: [u32; 3] = [7, 30, 90];

#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    pub days: u32,
    pub from: Timestamp,
    pub to: Timestamp,
    pub items: Vec<ItemReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ItemReport {
    pub item: String,
    /// Backup jobs started in the period that ended.
    pub backups: u32,
    /// Completed, with warnings or not.
    pub succeeded: u32,
    pub failed: u32,
    /// Stopped by someone.
    pub cancelled: u32,
    /// `succeeded / backups`; none without backups.
    pub success_rate: Option<f64>,
    /// Of the backups that succeeded.
    pub average_seconds: Option<f64>,
    /// Per day (UTC), oldest first: the average duration of that day's
    /// successful backups.
    pub durations: Vec<DayDuration>,
    /// What the points taken in the period (and kept now) added to the
    /// store: new chunks, compressed and encrypted.
    pub stored_added_bytes: u64,
    /// What all the item's points kept now added to the store.
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DayDuration {
    pub date: jiff::civil::Date,
    pub seconds: Option<f64>,
}

/// The backup report of the `days` (7, 30 or 90) before `now`.
///
/// # Errors
/// `Invalid` for another period; a store error or a damaged record.
pub fn backup_report(vault: &Vault, days: u32, now: Timestamp) -> Result<BackupReport> {
    if !REPORT_PERIODS.contains(&days) {
        return Err(ServiceError::field_error("days", format!("a report covers 7, 30 or 90 days, not {days}")));
    }
    let from = now - SignedDuration::from_hours(24 * i64::from(days));
    let filter = JobFilter { operation: Some(Operation::Backup), since: Some(from), ..JobFilter::default() };
    let jobs = list_jobs(vault, &filter)?;
    let points = vault.list_points()?;
    let utc = |t: Timestamp| t.to_zoned(jiff::tz::TimeZone::UTC).date();
    let first_day = utc(from);
    let mut items = Vec::new();
    for item in list_items(vault)? {
        let mine: Vec<_> = jobs.iter().filter(|j| j.item_id == Some(item.id) && j.end.is_some()).collect();
        let ok =
            |j: &&&crate::runtime::job::Job| matches!(j.state, JobState::Completed | JobState::CompletedWithWarnings);
        let secs = |j: &crate::runtime::job::Job| j.end.map(|e| e.duration_since(j.start).as_secs_f64()).unwrap_or(0.0);
        let good: Vec<_> = mine.iter().filter(ok).collect();
        let count = |s: JobState| mine.iter().filter(|j| j.state == s).count() as u32;
        let durations = (0..=days)
            .filter_map(|d| first_day.checked_add(jiff::Span::new().days(i64::from(d))).ok())
            .filter(|d| *d <= utc(now))
            .map(|date| {
                let that_day: Vec<f64> = good.iter().filter(|j| utc(j.start) == date).map(|j| secs(j)).collect();
                let seconds = (!that_day.is_empty()).then(|| that_day.iter().sum::<f64>() / that_day.len() as f64);
                DayDuration { date, seconds }
            })
            .collect();
        let kept: Vec<_> = points.iter().filter(|p| p.item_id == item.id).collect();
        let backups = mine.len() as u32;
        items.push(ItemReport {
            item: item.name.clone(),
            backups,
            succeeded: good.len() as u32,
            failed: count(JobState::Failed),
            cancelled: count(JobState::Cancelled),
            success_rate: (backups > 0).then(|| good.len() as f64 / f64::from(backups)),
            average_seconds: (!good.is_empty()).then(|| good.iter().map(|j| secs(j)).sum::<f64>() / good.len() as f64),
            durations,
            stored_added_bytes: kept.iter().filter(|p| p.time >= from).map(|p| p.stats.bytes_stored).sum(),
            stored_bytes: kept.iter().map(|p| p.stats.bytes_stored).sum(),
        });
    }
    Ok(BackupReport { days, from, to: now, items })
}

impl BackupReport {
    /// The report as CSV: a header, then one line per item.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "item,backups,succeeded,failed,cancelled,success_rate,average_seconds,stored_added_bytes,stored_bytes\n",
        );
        let opt = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.3}"));
        for i in &self.items {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\n",
                csv_field(&i.item),
                i.backups,
                i.succeeded,
                i.failed,
                i.cancelled,
                opt(i.success_rate),
                opt(i.average_seconds),
                i.stored_added_bytes,
                i.stored_bytes
            ));
        }
        out
    }
}

/// A CSV field, quoted when it must be; a leading `=`, `+`, `-` or `@`
/// is prefixed with `'` so a spreadsheet never runs it as a formula.
fn csv_field(s: &str) -> String {
    let safe = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    if safe.contains([',', '"', '\n', '\r']) { format!("\"{}\"", safe.replace('"', "\"\"")) } else { safe }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_never_formulas() {
        assert_eq!(csv_field("docs"), "docs");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("=cmd"), "'=cmd");
    }
}

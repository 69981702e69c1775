//! Where retention is computed: each point's expiry and the rule that
//! keeps it, from the item's protection state and its policy.
//!
//! The rules, matched on the time a scheduled point was taken for, in the
//! policy's time zone, as Azure Backup applies them:
//! - **daily**: every scheduled point is kept N days;
//! - **weekly**: the first point of a chosen weekday (every scheduled day,
//!   for a weekly schedule) is kept N weeks;
//! - **monthly**: the first point of the chosen day of the month (`1`-`28`,
//!   `last`, `first-<day>`, `last-<day>`) is kept N months;
//! - **yearly**: the same day in the chosen month is kept N years.
//!
//! A point is kept by whichever rule keeps it longest, and says so
//! ("weekly of 2026-W47"). Ad-hoc points keep their own retain-until date.
//! While an item is protected its newest point never expires, so a failing
//! source never leaves it with no point at all. Expiries are computed when
//! read, never stored, so changing a policy re-evaluates every point.

use std::collections::HashMap;

use boveda_vault::{PointId, RecoveryPoint};
use jiff::civil::Date;
use jiff::{Timestamp, ToSpan, Zoned};
use serde::Serialize;

use crate::items::{Item, ProtectionState};
use crate::model::policy::{DaySpec, Frequency, Policy, parse_weekday};
use crate::model::schedule::{weekday_of, zone};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointExpiry {
    pub point: PointId,
    /// `None`: kept until something changes (never expires on its own).
    pub expires: Option<Timestamp>,
    pub kept_by: String,
}

impl PointExpiry {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// Whether `date` is the day a monthly or yearly rule names.
pub(crate) fn matches_day(spec: &DaySpec, date: Date) -> bool {
    let days_in_month = date.days_in_month();
    let s = spec.0.as_str();
    if s == "last" {
        return date.day() == days_in_month;
    }
    if let Ok(n) = s.parse::<i8>() {
        return date.day() == n;
    }
    match s.split_once('-') {
        Some((which, day)) => {
            let Ok(wd) = parse_weekday(day) else { return false };
            if weekday_of(date) != wd {
                return false;
            }
            match which {
                "first" => date.day() <= 7,
                "last" => date.day() + 7 > days_in_month,
                _ => false,
            }
        }
        None => false,
    }
}

fn add(z: &Zoned, span: jiff::Span) -> Option<Timestamp> {
    z.checked_add(span).ok().map(|z| z.timestamp())
}

/// The rule that keeps a scheduled point longest, if any.
fn scheduled_expiry(policy: &Policy, at: Timestamp, first_of_day: bool) -> Option<(Timestamp, String)> {
    let z = at.to_zoned(zone(policy));
    let date = z.date();
    let r = &policy.retention;
    let mut best: Option<(Timestamp, String)> = None;
    let mut consider = |until: Option<Timestamp>, label: String| {
        if let Some(u) = until
            && best.as_ref().is_none_or(|(b, _)| u >= *b)
        {
            best = Some((u, label));
        }
    };
    if let Some(days) = r.daily_days {
        consider(add(&z, i64::from(days).days()), format!("daily of {date}"));
    }
    if !first_of_day {
        return best;
    }
    if let Some(w) = &r.weekly {
        let on_day = policy.schedule.frequency == Frequency::Weekly || w.days.contains(&weekday_of(date));
        if on_day {
            let iso = date.iso_week_date();
            let label = format!("weekly of {}-W{:02}", iso.year(), iso.week());
            consider(add(&z, i64::from(w.weeks).weeks()), label);
        }
    }
    if let Some(m) = &r.monthly
        && matches_day(&m.on, date)
    {
        let label = format!("monthly of {}-{:02}", date.year(), date.month());
        consider(add(&z, i64::from(m.months).months()), label);
    }
    if let Some(y) = &r.yearly
        && date.month() == y.month as i8
        && matches_day(&y.on, date)
    {
        consider(add(&z, i64::from(y.years).years()), format!("yearly of {}", date.year()));
    }
    best
}

/// Expiry of each of an item's points (any order in, same order out).
pub fn evaluate(item: &Item, policy: Option<&Policy>, points: &[&RecoveryPoint], now: Timestamp) -> Vec<PointExpiry> {
    let prot = &item.protection;
    // the first scheduled point of each local date, for weekly/monthly/yearly
    let mut first: HashMap<Date, (Timestamp, PointId)> = HashMap::new();
    if let Some(policy) = policy {
        let tz = zone(policy);
        for p in points {
            if let Some(at) = p.scheduled_for {
                let date = at.to_zoned(tz.clone()).date();
                let e = first.entry(date).or_insert((at, p.id));
                if (at, p.id) < *e {
                    *e = (at, p.id);
                }
            }
        }
    }
    let newest = points.iter().max_by_key(|p| (p.time, p.id)).map(|p| p.id);
    points
        .iter()
        .map(|p| {
            let (expires, kept_by) = match prot.state {
                ProtectionState::SoftDeleted => {
                    (prot.purge_after, format!("soft deleted; purged after {}", fmt_opt(prot.purge_after)))
                }
                ProtectionState::Stopped => (None, "protection stopped, data retained".to_string()),
                ProtectionState::NotProtected | ProtectionState::Protected => match (p.scheduled_for, policy) {
                    (None, _) => (p.retain_until, format!("ad-hoc until {}", fmt_opt(p.retain_until))),
                    (Some(at), Some(policy)) if prot.state == ProtectionState::Protected => {
                        let tz = zone(policy);
                        let is_first = first.get(&at.to_zoned(tz).date()).is_some_and(|(_, id)| *id == p.id);
                        match scheduled_expiry(policy, at, is_first) {
                            Some((until, label)) => (Some(until), label),
                            None => (Some(at), "no retention rule of the policy keeps it".to_string()),
                        }
                    }
                    (Some(_), _) => (None, "scheduled point of an item with no policy".to_string()),
                },
            };
            let guarded =
                prot.state == ProtectionState::Protected && Some(p.id) == newest && expires.is_some_and(|e| e <= now);
            if guarded {
                PointExpiry {
                    point: p.id,
                    expires: None,
                    kept_by: "latest point (kept while the item is protected)".into(),
                }
            } else {
                PointExpiry { point: p.id, expires, kept_by }
            }
        })
        .collect()
}

fn fmt_opt(t: Option<Timestamp>) -> String {
    t.map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> Date {
        s.parse().expect("date")
    }

    #[test]
    fn day_specs() {
        let d = |s: &str| DaySpec(s.into());
        assert!(matches_day(&d("last"), date("2026-02-28")));
        assert!(!matches_day(&d("last"), date("2028-02-28")));
        assert!(matches_day(&d("last"), date("2028-02-29")));
        assert!(matches_day(&d("15"), date("2026-11-15")));
        // 2026-11-01 is a Sunday, 2026-11-29 the last Sunday
        assert!(matches_day(&d("first-sun"), date("2026-11-01")));
        assert!(!matches_day(&d("first-sun"), date("2026-11-08")));
        assert!(matches_day(&d("last-sun"), date("2026-11-29")));
        assert!(!matches_day(&d("last-sun"), date("2026-11-22")));
        assert!(matches_day(&d("last-fri"), date("2026-11-27")));
    }
}

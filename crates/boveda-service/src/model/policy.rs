//! Backup policies: a schedule and grandfather-father-son retention, as in
//! Azure Backup, stored as catalog records (`catalog/policies/...`).
//!
//! This module holds the model and its validation (limits as Azure's:
//! daily up to 9999 days, weekly 5163 weeks, monthly 1188 months, yearly 99
//! years); `crate::policies` keeps the vault's policies, `crate::policies::retention`
//! and `crate::model::schedule` apply them.

use boveda_vault::RecordId;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};
use crate::model::names::validate_policy_name;

/// The policy every vault starts with: daily at 02:00, kept 30 days.
pub const DEFAULT_POLICY: &str = "DefaultPolicy";

pub const MAX_DAILY_DAYS: u32 = 9999;
pub const MAX_WEEKLY_WEEKS: u32 = 5163;
pub const MAX_MONTHLY_MONTHS: u32 = 1188;
pub const MAX_YEARLY_YEARS: u32 = 99;

/// A day of the week, as policies store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Frequency {
    Daily,
    Weekly,
    /// Azure's "Enhanced" policy: every 4, 6, 8 or 12 hours within a daily
    /// window ([`HourlyWindow`]), every day.
    Hourly,
}

/// The window of an hourly schedule: from `start`, every `every_hours`
/// for `hours` (the last slot starts before the window ends). Its slots
/// are also written out as the schedule's `times`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourlyWindow {
    pub every_hours: u32,
    /// `HH:MM`, in the schedule's zone.
    pub start: String,
    pub hours: u32,
}

/// The intervals of an hourly schedule, as Azure's enhanced policy.
pub const HOURLY_INTERVALS: [u32; 4] = [4, 6, 8, 12];

impl HourlyWindow {
    /// The times of day the window's slots fall at, in order (a window
    /// that passes midnight wraps to the next day's early hours).
    ///
    /// # Errors
    /// `Field` for an interval, start or length out of range.
    pub fn times(&self) -> Result<Vec<String>> {
        if !HOURLY_INTERVALS.contains(&self.every_hours) {
            return Err(field(
                "schedule.window.every_hours",
                format!("must be 4, 6, 8 or 12, not {}", self.every_hours),
            ));
        }
        if !(self.every_hours..=24).contains(&self.hours) {
            return Err(field(
                "schedule.window.hours",
                format!(
                    "a window of every {} hours lasts {} to 24 hours, not {}",
                    self.every_hours, self.every_hours, self.hours
                ),
            ));
        }
        let start: jiff::civil::Time =
            self.start.parse().ok().filter(|_| self.start.len() == 5).ok_or_else(|| {
                field("schedule.window.start", format!("{:?} is not a time of day as HH:MM", self.start))
            })?;
        let first = u32::from(start.hour().unsigned_abs()) * 60 + u32::from(start.minute().unsigned_abs());
        let mut times: Vec<String> = (0..self.hours.div_ceil(self.every_hours))
            .map(|k| (first + k * self.every_hours * 60) % (24 * 60))
            .map(|m| format!("{:02}:{:02}", m / 60, m % 60))
            .collect();
        times.sort();
        times.dedup();
        Ok(times)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub frequency: Frequency,
    /// Days of a weekly schedule.
    #[serde(default)]
    pub days: Vec<Weekday>,
    /// Times of day, `HH:MM`.
    pub times: Vec<String>,
    /// An IANA time zone, such as `Europe/Madrid`.
    pub time_zone: String,
    /// An hourly schedule's window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<HourlyWindow>,
}

/// Which day of a month (or of a year's month) keeps a point: `1` to `28`,
/// `last`, or `first-<weekday>` / `last-<weekday>` such as `last-fri`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaySpec(pub String);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeeklyRule {
    pub days: Vec<Weekday>,
    pub weeks: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthlyRule {
    pub on: DaySpec,
    pub months: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct YearlyRule {
    pub month: u8,
    pub on: DaySpec,
    pub years: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Retention {
    pub daily_days: Option<u32>,
    pub weekly: Option<WeeklyRule>,
    pub monthly: Option<MonthlyRule>,
    pub yearly: Option<YearlyRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: RecordId,
    pub name: String,
    pub schedule: Schedule,
    pub retention: Retention,
    pub created: Timestamp,
    /// Verify the newest point of each item every this many days (a VM's
    /// booted, a file or disk item's restored and compared), right after
    /// a backup made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_every_days: Option<u32>,
}

fn field(name: &'static str, why: impl std::fmt::Display) -> ServiceError {
    ServiceError::field_error(name, why)
}

fn in_range(name: &'static str, value: u32, max: u32) -> Result<()> {
    if (1..=max).contains(&value) { Ok(()) } else { Err(field(name, format!("must be 1 to {max}, not {value}"))) }
}

/// Parses a weekday: `mon`, `monday`, `Mon`...
///
/// # Errors
/// `Invalid` naming the value.
pub fn parse_weekday(s: &str) -> Result<Weekday> {
    let l = s.to_ascii_lowercase();
    let days = [
        ("mon", Weekday::Monday),
        ("tue", Weekday::Tuesday),
        ("wed", Weekday::Wednesday),
        ("thu", Weekday::Thursday),
        ("fri", Weekday::Friday),
        ("sat", Weekday::Saturday),
        ("sun", Weekday::Sunday),
    ];
    days.iter()
        .find(|(short, _)| l.len() >= 3 && short.starts_with(&l[..3]) && l.chars().all(|c| c.is_ascii_alphabetic()))
        .map(|(_, d)| *d)
        .ok_or_else(|| ServiceError::Invalid(format!("{s:?} is not a day of the week")))
}

fn check_day_spec(name: &'static str, spec: &DaySpec) -> Result<()> {
    let s = spec.0.as_str();
    if s == "last" {
        return Ok(());
    }
    if let Ok(n) = s.parse::<u32>() {
        return if (1..=28).contains(&n) {
            Ok(())
        } else {
            Err(field(name, "a day of the month is 1 to 28, or `last` (the 29th to 31st do not exist in every month)"))
        };
    }
    match s.split_once('-') {
        Some(("first" | "last", day)) if parse_weekday(day).is_ok() => Ok(()),
        _ => Err(field(name, format!("{s:?} is not 1-28, `last`, `first-<day>` or `last-<day>`"))),
    }
}

impl Policy {
    /// Checks every field, naming the first one at fault.
    ///
    /// # Errors
    /// `Invalid` with the field and the rule.
    pub fn validate(&self) -> Result<()> {
        validate_policy_name(&self.name).map_err(|e| field("name", e))?;
        let s = &self.schedule;
        if s.times.is_empty() {
            return Err(field("schedule.times", "a schedule needs at least one time of day"));
        }
        for t in &s.times {
            let parsed: std::result::Result<jiff::civil::Time, _> = t.parse();
            if parsed.is_err() || t.len() != 5 {
                return Err(field("schedule.times", format!("{t:?} is not a time of day as HH:MM")));
            }
        }
        jiff::tz::TimeZone::get(&s.time_zone)
            .map_err(|_| field("schedule.time_zone", format!("{:?} is not a known time zone", s.time_zone)))?;
        match (s.frequency, &s.window) {
            (Frequency::Hourly, None) => {
                return Err(field(
                    "schedule.window",
                    "an hourly schedule needs its window: every N hours from a start",
                ));
            }
            (Frequency::Hourly, Some(w)) if w.times()? != s.times => {
                return Err(field("schedule.times", "an hourly schedule's times are its window's"));
            }
            (Frequency::Daily | Frequency::Weekly, Some(_)) => {
                return Err(field("schedule.window", "a window is for an hourly schedule"));
            }
            _ => {}
        }
        match s.frequency {
            Frequency::Hourly if !s.days.is_empty() => {
                return Err(field(
                    "schedule.days",
                    "an hourly schedule runs every day; days are for a weekly schedule",
                ));
            }
            Frequency::Weekly if s.days.is_empty() => {
                return Err(field("schedule.days", "a weekly schedule needs at least one day"));
            }
            Frequency::Daily if !s.days.is_empty() => {
                return Err(field("schedule.days", "a daily schedule runs every day; days are for a weekly schedule"));
            }
            _ => {}
        }
        let r = &self.retention;
        if r.daily_days.is_none() && r.weekly.is_none() && r.monthly.is_none() && r.yearly.is_none() {
            return Err(field("retention", "keep points by at least one rule: daily, weekly, monthly or yearly"));
        }
        if let Some(d) = r.daily_days {
            in_range("retention.daily_days", d, MAX_DAILY_DAYS)?;
            if s.frequency == Frequency::Weekly {
                return Err(field("retention.daily_days", "a weekly schedule takes no daily points; keep weekly ones"));
            }
        }
        if let Some(w) = &r.weekly {
            in_range("retention.weekly.weeks", w.weeks, MAX_WEEKLY_WEEKS)?;
            if w.days.is_empty() {
                return Err(field("retention.weekly.days", "give the day whose point is kept weekly"));
            }
            if s.frequency == Frequency::Weekly
                && let Some(d) = w.days.iter().find(|d| !s.days.contains(d))
            {
                return Err(field("retention.weekly.days", format!("the schedule takes no point on {d:?}")));
            }
        }
        if let Some(m) = &r.monthly {
            in_range("retention.monthly.months", m.months, MAX_MONTHLY_MONTHS)?;
            check_day_spec("retention.monthly.on", &m.on)?;
        }
        if let Some(y) = &r.yearly {
            in_range("retention.yearly.years", y.years, MAX_YEARLY_YEARS)?;
            if !(1..=12).contains(&y.month) {
                return Err(field("retention.yearly.month", format!("must be 1 to 12, not {}", y.month)));
            }
            check_day_spec("retention.yearly.on", &y.on)?;
        }
        Ok(())
    }

    /// The policy every vault starts with.
    pub fn default_policy() -> Self {
        Policy {
            id: RecordId::random(),
            name: DEFAULT_POLICY.into(),
            schedule: Schedule {
                frequency: Frequency::Daily,
                days: Vec::new(),
                times: vec!["02:00".into()],
                time_zone: jiff::tz::TimeZone::system().iana_name().unwrap_or("UTC").to_string(),
                window: None,
            },
            retention: Retention { daily_days: Some(30), ..Retention::default() },
            created: Timestamp::now(),
            verify_every_days: None,
        }
    }
}

/// A policy as a request gives it: on a new policy, what is left out takes
/// the defaults; on an update, it keeps the policy's values.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyPatch {
    pub name: String,
    pub frequency: Option<Frequency>,
    pub days: Vec<Weekday>,
    pub times: Vec<String>,
    pub time_zone: Option<String>,
    /// An hourly schedule: every 4, 6, 8 or 12 hours...
    pub every_hours: Option<u32>,
    /// ...from this time (`HH:MM`)...
    pub window_start: Option<String>,
    /// ...for this many hours.
    pub window_hours: Option<u32>,
    pub daily_keep: Option<u32>,
    pub weekly_keep: Option<u32>,
    pub weekly_on: Vec<Weekday>,
    pub monthly_keep: Option<u32>,
    pub monthly_on: Option<String>,
    pub yearly_keep: Option<u32>,
    pub yearly_month: Option<u8>,
    pub yearly_on: Option<String>,
    /// On an update: the retention rules to remove (`daily`, `weekly`,
    /// `monthly`, `yearly`).
    pub drop_rules: Vec<String>,
    /// Verify the newest point every this many days; 0 stops it.
    pub verify_every_days: Option<u32>,
}

/// How often a patched policy verifies: 0 stops it, none keeps the base's.
fn verify_days(given: Option<u32>, base: Option<&Policy>) -> Result<Option<u32>> {
    match given {
        Some(0) => Ok(None),
        Some(n) if n > 366 => Err(field("verify_every_days", "verify at least once a year (1 to 366)")),
        Some(n) => Ok(Some(n)),
        None => Ok(base.and_then(|b| b.verify_every_days)),
    }
}

impl Policy {
    /// The policy `patch` makes: a new one (`base` is `None`), or `base`
    /// with the fields the patch gives. Checked as [`Policy::validate`]
    /// checks it later; here only what the patch alone gets wrong.
    ///
    /// # Errors
    /// `Field` for a rule dropped on a new policy or unknown, or a rule's
    /// day without how long its points are kept.
    pub fn patched(base: Option<&Policy>, patch: PolicyPatch) -> Result<Policy> {
        let a = patch;
        if base.is_none() && !a.drop_rules.is_empty() {
            return Err(field("drop_rules", "rules are only dropped from an existing policy"));
        }
        if let Some(r) = a.drop_rules.iter().find(|r| !["daily", "weekly", "monthly", "yearly"].contains(&r.as_str())) {
            return Err(field("drop_rules", format!("{r:?} is not daily, weekly, monthly or yearly")));
        }
        let fresh = Policy::default_policy();
        let base_schedule = base.map(|b| b.schedule.clone());
        let frequency = a.frequency.or(base_schedule.as_ref().map(|s| s.frequency)).unwrap_or(Frequency::Daily);
        let days = match (&base_schedule, a.days.is_empty()) {
            (Some(s), true) if frequency == s.frequency => s.days.clone(),
            _ => a.days,
        };
        let times = match (&base_schedule, a.times.is_empty()) {
            (Some(s), true) => s.times.clone(),
            _ => a.times,
        };
        let time_zone = a.time_zone.or_else(|| base_schedule.as_ref().map(|s| s.time_zone.clone()));
        let base_window = base_schedule.as_ref().and_then(|s| s.window.clone());
        let (window, times) = if frequency == Frequency::Hourly {
            let every_hours = a.every_hours.or(base_window.as_ref().map(|w| w.every_hours));
            let every_hours = every_hours
                .ok_or_else(|| field("schedule.window.every_hours", "an hourly schedule needs every how many hours"))?;
            let start =
                a.window_start.or(base_window.as_ref().map(|w| w.start.clone())).unwrap_or_else(|| "00:00".into());
            let hours = a.window_hours.or(base_window.as_ref().map(|w| w.hours)).unwrap_or(24);
            let window = HourlyWindow { every_hours, start, hours };
            let times = window.times()?;
            (Some(window), times)
        } else if a.every_hours.is_some() || a.window_start.is_some() || a.window_hours.is_some() {
            return Err(field("schedule.window", "a window is for an hourly schedule"));
        } else {
            (None, times)
        };
        let base_r = base.map(|b| b.retention.clone()).unwrap_or_default();
        let dropped = |rule: &str| a.drop_rules.iter().any(|r| r == rule);
        let orphan = [
            (
                !a.weekly_on.is_empty() && a.weekly_keep.is_none() && base_r.weekly.is_none(),
                "retention.weekly.days",
                "a weekly day needs how many weeks its points are kept",
            ),
            (
                a.monthly_on.is_some() && a.monthly_keep.is_none() && base_r.monthly.is_none(),
                "retention.monthly.on",
                "a monthly day needs how many months its points are kept",
            ),
            (
                (a.yearly_on.is_some() || a.yearly_month.is_some())
                    && a.yearly_keep.is_none()
                    && base_r.yearly.is_none(),
                "retention.yearly.on",
                "a yearly day needs how many years its points are kept",
            ),
        ];
        if let Some((_, name, why)) = orphan.iter().find(|(bad, _, _)| *bad) {
            return Err(field(name, why));
        }
        let weekly_on = a.weekly_on;
        let weekly = match (a.weekly_keep, &base_r.weekly) {
            _ if dropped("weekly") => None,
            (Some(weeks), b) => Some(WeeklyRule {
                days: if weekly_on.is_empty() {
                    b.as_ref().map(|w| w.days.clone()).unwrap_or_default()
                } else {
                    weekly_on
                },
                weeks,
            }),
            (None, Some(b)) => {
                Some(WeeklyRule { days: if weekly_on.is_empty() { b.days.clone() } else { weekly_on }, ..b.clone() })
            }
            (None, None) => None,
        };
        let monthly = match (a.monthly_keep, &base_r.monthly) {
            _ if dropped("monthly") => None,
            (keep, b) if keep.is_some() || b.is_some() => Some(MonthlyRule {
                on: a
                    .monthly_on
                    .map(DaySpec)
                    .or_else(|| b.as_ref().map(|m| m.on.clone()))
                    .unwrap_or(DaySpec(String::new())),
                months: keep.or(b.as_ref().map(|m| m.months)).unwrap_or(0),
            }),
            _ => None,
        };
        let yearly = match (a.yearly_keep, &base_r.yearly) {
            _ if dropped("yearly") => None,
            (keep, b) if keep.is_some() || b.is_some() => Some(YearlyRule {
                month: a.yearly_month.or(b.as_ref().map(|y| y.month)).unwrap_or(0),
                on: a
                    .yearly_on
                    .map(DaySpec)
                    .or_else(|| b.as_ref().map(|y| y.on.clone()))
                    .unwrap_or(DaySpec(String::new())),
                years: keep.or(b.as_ref().map(|y| y.years)).unwrap_or(0),
            }),
            _ => None,
        };
        let daily_days = if dropped("daily") { None } else { a.daily_keep.or(base_r.daily_days) };
        Ok(Policy {
            id: base.map_or_else(RecordId::random, |b| b.id),
            name: a.name,
            schedule: Schedule {
                frequency,
                days,
                times,
                time_zone: time_zone.unwrap_or(fresh.schedule.time_zone),
                window,
            },
            retention: Retention { daily_days, weekly, monthly, yearly },
            created: base.map_or_else(Timestamp::now, |b| b.created),
            verify_every_days: verify_days(a.verify_every_days, base)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weekly() -> Policy {
        let mut p = Policy::default_policy();
        p.name = "weekly".into();
        p.schedule.frequency = Frequency::Weekly;
        p.schedule.days = vec![Weekday::Sunday, Weekday::Wednesday];
        p.retention = Retention {
            daily_days: None,
            weekly: Some(WeeklyRule { days: vec![Weekday::Sunday], weeks: 12 }),
            monthly: Some(MonthlyRule { on: DaySpec("first-sun".into()), months: 12 }),
            yearly: Some(YearlyRule { month: 12, on: DaySpec("last".into()), years: 10 }),
        };
        p
    }

    fn err(p: &Policy) -> String {
        p.validate().expect_err("invalid").to_string()
    }

    #[test]
    fn an_hourly_policy_takes_its_slots_from_its_window() {
        let patch = |every, start: &str, hours| PolicyPatch {
            name: "enhanced".into(),
            frequency: Some(Frequency::Hourly),
            every_hours: Some(every),
            window_start: Some(start.into()),
            window_hours: Some(hours),
            daily_keep: Some(7),
            ..PolicyPatch::default()
        };
        let p = Policy::patched(None, patch(4, "08:00", 12)).expect("hourly");
        p.validate().expect("valid");
        assert_eq!(p.schedule.times, ["08:00", "12:00", "16:00"], "the last slot starts before the window ends");
        let night = Policy::patched(None, patch(6, "20:30", 24)).expect("wraps");
        assert_eq!(night.schedule.times, ["02:30", "08:30", "14:30", "20:30"]);
        let bad = Policy::patched(None, patch(5, "08:00", 12)).expect_err("5 h").to_string();
        assert!(bad.contains("4, 6, 8 or 12"), "{bad}");
        let short = Policy::patched(None, patch(8, "08:00", 4)).expect_err("window shorter than the interval");
        assert!(short.to_string().contains("8 to 24 hours"), "{short}");
        // an update keeps the window and changes only what it gives
        let wider = Policy::patched(
            Some(&p),
            PolicyPatch { name: "enhanced".into(), window_hours: Some(24), ..PolicyPatch::default() },
        )
        .expect("update");
        assert_eq!(wider.schedule.times.len(), 6);
        let daily = PolicyPatch { name: "d".into(), every_hours: Some(4), ..PolicyPatch::default() };
        assert!(Policy::patched(None, daily).is_err(), "a window on a daily schedule is refused");
    }

    #[test]
    fn valid_policies_pass() {
        Policy::default_policy().validate().expect("default");
        weekly().validate().expect("weekly");
    }

    #[test]
    fn limits_and_rules_name_the_field() {
        let mut p = Policy::default_policy();
        p.retention.daily_days = Some(10_000);
        assert!(err(&p).contains("retention.daily_days: must be 1 to 9999"));
        let e = p.validate().expect_err("too long");
        assert_eq!(e.field(), Some("retention.daily_days"), "the field, for the API and the CLI's flag");
        assert!(!e.to_string().contains("--"), "no CLI flag in a service error: {e}");
        let mut p = weekly();
        p.retention.weekly = Some(WeeklyRule { days: vec![Weekday::Sunday], weeks: 5164 });
        assert!(err(&p).contains("retention.weekly.weeks: must be 1 to 5163"));
        let mut p = weekly();
        p.retention.monthly = Some(MonthlyRule { on: DaySpec("1".into()), months: 1189 });
        assert!(err(&p).contains("retention.monthly.months: must be 1 to 1188"));
        let mut p = weekly();
        p.retention.yearly = Some(YearlyRule { month: 1, on: DaySpec("1".into()), years: 100 });
        assert!(err(&p).contains("retention.yearly.years: must be 1 to 99"));
        let mut p = weekly();
        p.retention.daily_days = Some(7);
        assert!(err(&p).contains("retention.daily_days: a weekly schedule takes no daily points"));
        let mut p = weekly();
        p.retention.weekly = Some(WeeklyRule { days: vec![Weekday::Monday], weeks: 4 });
        assert!(err(&p).contains("retention.weekly.days"));
        let mut p = weekly();
        p.schedule.days.clear();
        assert!(err(&p).contains("schedule.days: a weekly schedule needs at least one day"));
        let mut p = Policy::default_policy();
        p.schedule.times.clear();
        assert!(err(&p).contains("schedule.times"));
        let mut p = Policy::default_policy();
        p.schedule.times = vec!["25:00".into()];
        assert!(err(&p).contains("schedule.times"));
        let mut p = Policy::default_policy();
        p.schedule.time_zone = "Mars/Olympus".into();
        assert!(err(&p).contains("schedule.time_zone"));
        let mut p = Policy::default_policy();
        p.retention = Retention::default();
        assert!(err(&p).contains("retention"));
        let mut p = weekly();
        p.retention.monthly = Some(MonthlyRule { on: DaySpec("31".into()), months: 3 });
        assert!(err(&p).contains("retention.monthly.on"));
        let mut p = weekly();
        p.retention.yearly = Some(YearlyRule { month: 13, on: DaySpec("last".into()), years: 3 });
        assert!(err(&p).contains("retention.yearly.month"));
    }

    #[test]
    fn weekdays_parse() {
        assert_eq!(parse_weekday("Sun").expect("sun"), Weekday::Sunday);
        assert_eq!(parse_weekday("wednesday").expect("wed"), Weekday::Wednesday);
        assert!(parse_weekday("xyz").is_err());
        assert!(parse_weekday("su").is_err());
    }
}

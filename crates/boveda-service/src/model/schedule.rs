//! When a policy's backups are due: the slots of its schedule, in its time
//! zone (a time that a clock change skips is taken at the first instant
//! after the gap; a repeated time, at its first occurrence).

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

use crate::model::policy::{Frequency, Policy, Weekday};

pub(crate) fn weekday_of(d: Date) -> Weekday {
    match d.weekday() {
        jiff::civil::Weekday::Monday => Weekday::Monday,
        jiff::civil::Weekday::Tuesday => Weekday::Tuesday,
        jiff::civil::Weekday::Wednesday => Weekday::Wednesday,
        jiff::civil::Weekday::Thursday => Weekday::Thursday,
        jiff::civil::Weekday::Friday => Weekday::Friday,
        jiff::civil::Weekday::Saturday => Weekday::Saturday,
        jiff::civil::Weekday::Sunday => Weekday::Sunday,
    }
}

pub(crate) fn zone(policy: &Policy) -> TimeZone {
    TimeZone::get(&policy.schedule.time_zone).unwrap_or(TimeZone::UTC)
}

fn times(policy: &Policy) -> Vec<Time> {
    let mut t: Vec<Time> = policy.schedule.times.iter().filter_map(|s| s.parse().ok()).collect();
    t.sort();
    t.dedup();
    t
}

/// The slots of one local date, in order.
fn slots_on(policy: &Policy, tz: &TimeZone, times: &[Time], date: Date) -> Vec<Timestamp> {
    let runs = match policy.schedule.frequency {
        Frequency::Daily | Frequency::Hourly => true,
        Frequency::Weekly => policy.schedule.days.contains(&weekday_of(date)),
    };
    if !runs {
        return Vec::new();
    }
    times.iter().filter_map(|t| date.to_datetime(*t).to_zoned(tz.clone()).ok()).map(|z| z.timestamp()).collect()
}

/// The latest slot at or before `at` and after `after`, if any.
pub fn latest_slot(policy: &Policy, at: Timestamp, after: Timestamp) -> Option<Timestamp> {
    let tz = zone(policy);
    let times = times(policy);
    let mut date = at.to_zoned(tz.clone()).date();
    for _ in 0..9 {
        if let Some(t) = slots_on(policy, &tz, &times, date).into_iter().rev().find(|t| *t <= at) {
            return (t > after).then_some(t);
        }
        date = date.checked_sub(1.day()).ok()?;
    }
    None
}

/// The first slot strictly after `after`.
pub fn next_slot(policy: &Policy, after: Timestamp) -> Option<Timestamp> {
    let tz = zone(policy);
    let times = times(policy);
    let mut date = after.to_zoned(tz.clone()).date();
    for _ in 0..9 {
        if let Some(t) = slots_on(policy, &tz, &times, date).into_iter().find(|t| *t > after) {
            return Some(t);
        }
        date = date.checked_add(1.day()).ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn daily_and_weekly_slots() {
        let mut p = Policy::default_policy();
        p.schedule.time_zone = "Europe/Madrid".into();
        p.schedule.times = vec!["02:00".into(), "14:30".into()];
        // 2026-11-21 is a Saturday; Madrid is UTC+1 in November
        assert_eq!(next_slot(&p, ts("2026-11-21T10:00:00Z")), Some(ts("2026-11-21T13:30:00Z")));
        assert_eq!(next_slot(&p, ts("2026-11-21T13:30:00Z")), Some(ts("2026-11-22T01:00:00Z")));
        assert_eq!(
            latest_slot(&p, ts("2026-11-21T10:00:00Z"), ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-11-21T01:00:00Z"))
        );
        assert_eq!(latest_slot(&p, ts("2026-11-21T10:00:00Z"), ts("2026-11-21T01:00:00Z")), None);
        p.schedule.frequency = Frequency::Weekly;
        p.schedule.days = vec![Weekday::Wednesday];
        assert_eq!(next_slot(&p, ts("2026-11-21T10:00:00Z")), Some(ts("2026-11-25T01:00:00Z")));
        assert_eq!(
            latest_slot(&p, ts("2026-11-21T10:00:00Z"), ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-11-18T13:30:00Z"))
        );
    }

    #[test]
    fn hourly_slots_come_every_n_hours_within_the_window_every_day() {
        let patch = crate::model::policy::PolicyPatch {
            name: "enhanced".into(),
            frequency: Some(Frequency::Hourly),
            time_zone: Some("Europe/Madrid".into()),
            every_hours: Some(4),
            window_start: Some("08:00".into()),
            window_hours: Some(12),
            daily_keep: Some(7),
            ..Default::default()
        };
        let p = Policy::patched(None, patch).expect("hourly");
        let mut at = ts("2026-11-21T00:00:00Z");
        let mut seen = Vec::new();
        for _ in 0..4 {
            at = next_slot(&p, at).expect("a slot");
            seen.push(at);
        }
        // Madrid is UTC+1: 08:00, 12:00 and 16:00 local, then the next day
        let want = ["2026-11-21T07:00:00Z", "2026-11-21T11:00:00Z", "2026-11-21T15:00:00Z", "2026-11-22T07:00:00Z"];
        assert_eq!(seen, want.map(ts));
    }

    #[test]
    fn clock_changes_keep_one_slot_a_day() {
        let mut p = Policy::default_policy();
        p.schedule.time_zone = "Europe/Madrid".into();
        p.schedule.times = vec!["02:30".into()];
        // 2026-03-29: 02:00 -> 03:00 in Madrid; the skipped 02:30 runs at 03:30 local (01:30Z)
        assert_eq!(next_slot(&p, ts("2026-03-28T12:00:00Z")), Some(ts("2026-03-29T01:30:00Z")));
        // 2026-10-25: 03:00 -> 02:00; 02:30 happens twice, the first is taken (00:30Z)
        assert_eq!(next_slot(&p, ts("2026-10-24T12:00:00Z")), Some(ts("2026-10-25T00:30:00Z")));
        assert_eq!(next_slot(&p, ts("2026-10-25T00:30:00Z")), Some(ts("2026-10-26T01:30:00Z")));
    }
}

//! A year and more of scheduled points under several GFS policies, in
//! memory: after every slot the expired points are dropped (as the agent's
//! prune does), and the survivors are checked against lists worked out by
//! hand from the policies' rules.

mod common;

use boveda_service::{
    DaySpec, Frequency, HourlyWindow, Item, ItemSource, MonthlyRule, Policy, Protection, ProtectionState, Retention,
    Schedule, Weekday, WeeklyRule, evaluate_retention, next_slot,
};
use boveda_vault::{ChunkId, Consistency, PointId, RecordId, RecoveryPoint};
use jiff::Timestamp;
use jiff::tz::TimeZone;

const ZONE: &str = "Europe/Madrid";

fn at(local: &str) -> Timestamp {
    let dt: jiff::civil::DateTime = local.parse().expect("local time");
    dt.to_zoned(TimeZone::get(ZONE).expect("zone")).expect("zoned").timestamp()
}

fn policy(frequency: Frequency, days: Vec<Weekday>, times: &[&str], retention: Retention) -> Policy {
    let mut p = Policy::default_policy();
    p.name = "p".into();
    p.schedule = Schedule {
        frequency,
        days,
        times: times.iter().map(|t| t.to_string()).collect(),
        time_zone: ZONE.into(),
        window: None,
    };
    p.retention = retention;
    p.validate().expect("valid policy");
    p
}

fn item(policy: &Policy) -> Item {
    Item {
        id: RecordId::random(),
        name: "it".into(),
        source: ItemSource::Files { paths: vec![], excludes: vec![] },
        created: at("2025-11-01T00:00"),
        consistency: None,
        protection: Protection {
            state: ProtectionState::Protected,
            policy: Some(policy.id),
            since: Some(at("2025-11-01T00:00")),
            ..Protection::default()
        },
        host: None,
        verify: None,
    }
}

fn point(item: &Item, t: Timestamp) -> RecoveryPoint {
    RecoveryPoint {
        id: PointId::random(),
        item_id: item.id,
        item_name: item.name.clone(),
        started: t,
        time: t,
        tree: ChunkId([0; 32]),
        parent: None,
        hostname: "h".into(),
        sources: vec![],
        consistency: Consistency::CrashConsistent,
        retain_until: None,
        scheduled_for: Some(t),
        kept_by: "scheduled".into(),
        stats: Default::default(),
        warnings: vec![],
        live_bitmap: None,
        freeze_ms: None,
    }
}

/// Runs every slot from 2025-12-01 to the end of 2027-01-10, pruning after
/// each; returns the survivors' local times and rules.
fn simulate(policy: &Policy) -> Vec<(String, String)> {
    let item = item(policy);
    let end = at("2027-01-10T23:59");
    let mut points: Vec<RecoveryPoint> = Vec::new();
    let mut slot = next_slot(policy, at("2025-12-01T00:00")).expect("slot");
    let mut last = slot;
    while slot <= end {
        points.push(point(&item, slot));
        let refs: Vec<&RecoveryPoint> = points.iter().collect();
        let expired: Vec<PointId> = evaluate_retention(&item, Some(policy), &refs, slot)
            .into_iter()
            .filter(|e| e.is_expired(slot))
            .map(|e| e.point)
            .collect();
        points.retain(|p| !expired.contains(&p.id));
        last = slot;
        slot = next_slot(policy, slot).expect("next slot");
    }
    let refs: Vec<&RecoveryPoint> = points.iter().collect();
    let rules = evaluate_retention(&item, Some(policy), &refs, last);
    let tz = TimeZone::get(ZONE).expect("zone");
    points
        .iter()
        .zip(rules)
        .map(|(p, r)| (p.time.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M").to_string(), r.kept_by))
        .collect()
}

fn dates(survivors: &[(String, String)]) -> Vec<String> {
    survivors.iter().map(|(d, _)| d.clone()).collect()
}

fn rule_of<'a>(survivors: &'a [(String, String)], date: &str) -> &'a str {
    survivors.iter().find(|(d, _)| d == date).map(|(_, r)| r.as_str()).unwrap_or("(not kept)")
}

#[test]
fn daily_schedule_with_weekly_monthly_and_yearly_rules() {
    let p = policy(Frequency::Daily, vec![], &["02:00"], common::gfs_retention());
    let s = simulate(&p);
    let expected: Vec<String> = common::GFS_SURVIVORS.iter().map(|d| format!("{d} 02:00")).collect();
    assert_eq!(dates(&s), expected);
    assert_eq!(rule_of(&s, "2025-12-31 02:00"), "yearly of 2025");
    assert_eq!(rule_of(&s, "2026-10-31 02:00"), "monthly of 2026-10");
    assert_eq!(rule_of(&s, "2026-12-20 02:00"), "weekly of 2026-W51");
    assert_eq!(rule_of(&s, "2026-12-31 02:00"), "yearly of 2026");
    assert_eq!(rule_of(&s, "2027-01-03 02:00"), "weekly of 2026-W53");
    assert_eq!(rule_of(&s, "2027-01-05 02:00"), "daily of 2027-01-05");
    // Jan 10 is a Sunday: its weekly rule (4 weeks) outlasts the daily one
    assert_eq!(rule_of(&s, "2027-01-10 02:00"), "weekly of 2027-W01");
}

#[test]
fn weekly_schedule_with_first_saturday_monthly_rule() {
    let p = policy(
        Frequency::Weekly,
        vec![Weekday::Wednesday, Weekday::Saturday],
        &["22:30"],
        Retention {
            daily_days: None,
            weekly: Some(WeeklyRule { days: vec![Weekday::Saturday], weeks: 6 }),
            monthly: Some(MonthlyRule { on: DaySpec("first-sat".into()), months: 3 }),
            yearly: None,
        },
    );
    let s = simulate(&p);
    // The last slot is Saturday 2027-01-09 22:30. Every scheduled point of
    // a weekly schedule is kept 6 weeks: those after Nov 28 (whose 6 weeks
    // end exactly now). First Saturdays kept 3 months: after Oct 9, so Nov 7
    // (Dec 5 and Jan 2 are kept weekly anyway).
    let expected = [
        "2026-11-07",
        "2026-12-02",
        "2026-12-05",
        "2026-12-09",
        "2026-12-12",
        "2026-12-16",
        "2026-12-19",
        "2026-12-23",
        "2026-12-26",
        "2026-12-30",
        "2027-01-02",
        "2027-01-06",
        "2027-01-09",
    ];
    let expected: Vec<String> = expected.iter().map(|d| format!("{d} 22:30")).collect();
    assert_eq!(dates(&s), expected);
    assert_eq!(rule_of(&s, "2026-11-07 22:30"), "monthly of 2026-11");
}

#[test]
fn two_slots_a_day_keep_the_first_for_monthly() {
    let p = policy(
        Frequency::Daily,
        vec![],
        &["14:00", "02:00"],
        Retention {
            daily_days: Some(3),
            weekly: None,
            monthly: Some(MonthlyRule { on: DaySpec("15".into()), months: 12 }),
            yearly: None,
        },
    );
    let s = simulate(&p);
    // Now is 2027-01-10 14:00: both points of Jan 8, 9 and 10 are inside
    // 3 days; the first point (02:00) of every 15th after 2026-01-10 is
    // kept 12 months.
    let mut expected: Vec<String> = (1..=12).map(|m| format!("2026-{m:02}-15 02:00")).collect();
    for d in ["08", "09", "10"] {
        expected.push(format!("2027-01-{d} 02:00"));
        expected.push(format!("2027-01-{d} 14:00"));
    }
    assert_eq!(dates(&s), expected);
    // daylight saving time changed twice in the year; the 15ths kept their slot
    assert_eq!(rule_of(&s, "2026-07-15 02:00"), "monthly of 2026-07");
}

#[test]
fn the_newest_point_of_a_protected_item_never_expires() {
    let p = policy(Frequency::Daily, vec![], &["02:00"], Retention { daily_days: Some(1), ..Retention::default() });
    let it = item(&p);
    let only = point(&it, at("2026-01-01T02:00"));
    let later = at("2026-03-01T00:00");
    let e = evaluate_retention(&it, Some(&p), &[&only], later);
    assert!(!e[0].is_expired(later), "{e:?}");
    assert!(e[0].kept_by.starts_with("latest point"));
    // stopped protection keeps everything; soft delete expires at the purge time
    let mut stopped = it.clone();
    stopped.protection.state = ProtectionState::Stopped;
    let old = point(&it, at("2025-12-01T02:00"));
    let e = evaluate_retention(&stopped, Some(&p), &[&old, &only], later);
    assert!(e.iter().all(|e| e.expires.is_none()));
    let mut deleted = it.clone();
    deleted.protection.state = ProtectionState::SoftDeleted;
    deleted.protection.purge_after = Some(at("2026-03-15T00:00"));
    let e = evaluate_retention(&deleted, Some(&p), &[&old, &only], later);
    assert!(e.iter().all(|e| e.expires == deleted.protection.purge_after && !e.is_expired(later)));
    assert!(e.iter().all(|e| e.is_expired(at("2026-03-15T00:00"))));
}

#[test]
fn an_enhanced_policy_keeps_every_point_daily_and_the_first_of_the_day_for_longer_rules() {
    // Azure's enhanced policy: every 6 hours from 06:00 for 18 hours, three
    // points a day; daily keeps all of them, the longer rules one a day
    let mut p = policy(
        Frequency::Daily,
        vec![],
        &["06:00"],
        Retention {
            daily_days: Some(3),
            weekly: Some(WeeklyRule { days: vec![Weekday::Sunday], weeks: 2 }),
            monthly: Some(MonthlyRule { on: DaySpec("1".into()), months: 2 }),
            yearly: None,
        },
    );
    let window = HourlyWindow { every_hours: 6, start: "06:00".into(), hours: 18 };
    p.schedule = Schedule {
        frequency: Frequency::Hourly,
        days: vec![],
        times: window.times().expect("times"),
        time_zone: ZONE.into(),
        window: Some(window),
    };
    p.validate().expect("valid policy");
    assert_eq!(p.schedule.times, ["06:00", "12:00", "18:00"]);
    let s = simulate(&p);
    // Now is Sunday 2027-01-10 18:00: every point of Jan 8, 9 and 10; the
    // first point of Sunday Jan 3 (two weeks reach past now), and of Dec 1
    // and Jan 1 (two months); never the 12:00 or 18:00 point of those days
    let mut expected = vec!["2026-12-01 06:00".to_string(), "2027-01-01 06:00".into(), "2027-01-03 06:00".into()];
    for d in ["08", "09", "10"] {
        for t in ["06:00", "12:00", "18:00"] {
            expected.push(format!("2027-01-{d} {t}"));
        }
    }
    assert_eq!(dates(&s), expected);
    assert_eq!(rule_of(&s, "2027-01-03 06:00"), "weekly of 2026-W53");
    assert_eq!(rule_of(&s, "2027-01-01 06:00"), "monthly of 2027-01");
    assert_eq!(rule_of(&s, "2027-01-09 18:00"), "daily of 2027-01-09");
}

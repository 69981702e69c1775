//! The scheduler, jobs, alerts, soft delete and prune on real vaults in
//! local folders, with a fake clock: a year of backups runs in seconds.

mod common;

use common::{digest, new_vault, noise};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use boveda_engine::NoProgress;
use boveda_service::{
    AgentOptions, AgentReport, Clock, FakeClock, Frequency, Item, JobEnv, JobFilter, JobState, Operation, Policy,
    PolicyPatch, Retention, Schedule, ServiceErrorKind, Severity, VaultUpdate, add_files_item, apply_policy_update,
    backup_job, create_policy, disable_protection, enable_protection, find_item, find_point, list_alerts, list_jobs,
    plan_policy_update, plan_prune, prune_job, restore, retry_alerts, run_agent, stop_job, undelete_protection,
    update_policy, update_vault, vault_control,
};
use boveda_vault::{CheckOptions, Vault, check};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

const ZONE: &str = "Europe/Madrid";
const HEARTBEAT: Duration = Duration::from_millis(20);

fn at(local: &str) -> Timestamp {
    let dt: jiff::civil::DateTime = local.parse().expect("local time");
    dt.to_zoned(TimeZone::get(ZONE).expect("zone")).expect("zoned").timestamp()
}

fn daily_policy(vault: &Vault, name: &str, times: &[&str], retention: Retention) -> Policy {
    let mut p = Policy::default_policy();
    p.name = name.into();
    p.schedule = Schedule {
        frequency: Frequency::Daily,
        days: vec![],
        times: times.iter().map(|t| t.to_string()).collect(),
        time_zone: ZONE.into(),
        window: None,
    };
    p.retention = retention;
    create_policy(vault, &p).expect("create policy");
    p
}

fn env(clock: &dyn Clock) -> JobEnv<'_> {
    JobEnv::new(clock, HEARTBEAT, "test".into())
}

fn agent(vaults: &[Vault], clock: &FakeClock, until: Timestamp, max_jobs: usize) -> AgentReport {
    let opts = AgentOptions {
        max_jobs,
        heartbeat: HEARTBEAT,
        safety_margin: SignedDuration::from_hours(24),
        until: Some(until),
        poll: Duration::from_secs(30),
        hostname: "test".into(),
    };
    run_agent(vaults, clock, &opts, &AtomicBool::new(false), &|l| {
        if l.contains("Failed") {
            eprintln!("{l}")
        }
    })
    .expect("agent runs")
}

fn assert_check_passes(vault: &Vault) {
    let report = check(vault, CheckOptions { read_data: true }, &|_| {}).expect("check runs");
    assert!(report.is_ok(), "check found problems: {:?}", report.problems);
}

fn restored_digest(vault: &Vault, item: &Item, point: &str, src: &Path, scratch: &Path) -> BTreeMap<String, String> {
    let p = find_point(vault, item, point).expect("point");
    let target = scratch.join(format!("r-{}", p.id.short()));
    restore(vault, &p, target.clone(), None, vec![], None, &NoProgress).expect("restore");
    let inner: PathBuf = target.join(src.strip_prefix("/").expect("absolute source"));
    digest(&inner)
}

#[test]
fn a_year_of_scheduled_backups_keeps_what_the_policy_says_and_every_survivor_restores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    let vault = new_vault(dir.path());
    daily_policy(&vault, "gfs", &["02:00"], common::gfs_retention());
    let item = add_files_item(&vault, "docs", std::slice::from_ref(&src), &[]).expect("item");
    let clock = FakeClock::new(at("2025-11-30T12:00"));
    enable_protection(&vault, &env(&clock), &item, "gfs").expect("enable");

    // one segment a month; the tree changes between segments
    let mut states: Vec<(Timestamp, BTreeMap<String, String>)> = Vec::new();
    let mut boundary = at("2025-11-30T12:00");
    let mut month = 0u64;
    let mut total_backups = 0;
    while boundary < at("2027-01-10T23:59") {
        std::fs::write(src.join(format!("m{month}")), noise(month, 300_000)).expect("write");
        if month >= 2 {
            std::fs::remove_file(src.join(format!("m{}", month - 2))).expect("remove");
        }
        std::fs::write(src.join("log"), format!("month {month}\n")).expect("write");
        states.push((boundary, digest(&src)));
        let next = boundary.to_zoned(TimeZone::get(ZONE).expect("zone")).first_of_month().expect("month");
        let next = next.checked_add(jiff::Span::new().months(1)).expect("next month").timestamp();
        let until = next.min(at("2027-01-10T23:59"));
        let report = agent(std::slice::from_ref(&vault), &clock, until, 1);
        assert_eq!(report.failed, 0);
        total_backups += report.backups;
        boundary = until;
        month += 1;
    }
    assert_eq!(total_backups, 406, "one backup a day from 2025-12-01 to 2027-01-10");

    let tz = TimeZone::get(ZONE).expect("zone");
    let points = boveda_service::list_item_points(&vault, &item).expect("points");
    let survivors: Vec<String> =
        points.iter().map(|p| p.time.to_zoned(tz.clone()).strftime("%Y-%m-%d").to_string()).collect();
    // the same survivors as worked out by hand (tests/common/mod.rs)
    let expected = common::GFS_SURVIVORS;
    assert_eq!(survivors, expected);

    // every survivor restores the tree as it was in its month
    for p in &points {
        let state = &states.iter().rev().find(|(b, _)| *b < p.time).expect("a state before the point").1;
        let got = restored_digest(&vault, &item, &p.id.to_hex(), &src, &dir.path().join("restores"));
        assert_eq!(&got, state, "point of {}", p.time);
    }
    // space was reclaimed: far fewer packs remain than were written
    let written: u64 = list_jobs(&vault, &JobFilter { operation: Some(Operation::Backup), ..JobFilter::default() })
        .expect("jobs")
        .len() as u64;
    assert_eq!(written, 406);
    let packs = vault.store().list("packs").expect("list packs").len();
    assert!(packs < 60, "{packs} packs remain after a year of pruning");
    assert_check_passes(&vault);
}

#[test]
fn after_downtime_an_item_gets_one_catch_up_backup_not_one_per_missed_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("f"), b"content").expect("write");
    let vault = new_vault(dir.path());
    daily_policy(&vault, "daily", &["02:00"], Retention { daily_days: Some(30), ..Retention::default() });
    let item = add_files_item(&vault, "docs", std::slice::from_ref(&src), &[]).expect("item");
    let clock = FakeClock::new(at("2026-03-01T12:00"));
    enable_protection(&vault, &env(&clock), &item, "daily").expect("enable");
    let r = agent(std::slice::from_ref(&vault), &clock, at("2026-03-03T12:00"), 2);
    assert_eq!(r.backups, 2, "March 2 and 3");
    // the agent is down from March 3 noon to March 10 noon: 7 slots missed
    clock.set(at("2026-03-10T12:00"));
    let r = agent(std::slice::from_ref(&vault), &clock, at("2026-03-10T13:00"), 2);
    assert_eq!(r.backups, 1, "one catch-up backup");
    let points = boveda_service::list_item_points(&vault, &item).expect("points");
    let slots: Vec<Timestamp> = points.iter().filter_map(|p| p.scheduled_for).collect();
    assert_eq!(slots, vec![at("2026-03-02T02:00"), at("2026-03-03T02:00"), at("2026-03-10T02:00")]);
    // a restarted agent does not repeat a slot it already took
    let r = agent(std::slice::from_ref(&vault), &clock, at("2026-03-10T14:00"), 2);
    assert_eq!(r.backups, 0);
}

#[test]
fn the_agent_runs_at_most_max_jobs_backups_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = new_vault(dir.path());
    daily_policy(&vault, "daily", &["02:00"], Retention { daily_days: Some(30), ..Retention::default() });
    let clock = FakeClock::new(at("2026-03-01T12:00"));
    for i in 0..3u64 {
        let src = dir.path().join(format!("src{i}"));
        std::fs::create_dir(&src).expect("mkdir");
        std::fs::write(src.join("big"), noise(i + 100, 24 << 20)).expect("write");
        let item = add_files_item(&vault, &format!("item{i}"), &[src], &[]).expect("item");
        enable_protection(&vault, &env(&clock), &item, "daily").expect("enable");
    }
    let r = agent(std::slice::from_ref(&vault), &clock, at("2026-03-02T12:00"), 2);
    assert_eq!((r.backups, r.failed), (3, 0));
    assert_eq!(r.peak_jobs, 2, "three due backups, two at once");
    assert_check_passes(&vault);
}

/// A one-shot HTTP server that answers 200 to every request and returns the
/// bodies it got.
fn set_webhook(vault: &mut Vault, url: &str) {
    let update = VaultUpdate { webhook: Some(Some(url.to_string())), ..VaultUpdate::default() };
    update_vault(vault, &update, "test", &boveda_service::SystemClock).expect("set the webhook");
}

fn webhook_server(requests: usize) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/alerts", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        for _ in 0..requests {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = s.read(&mut chunk).expect("read");
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len || n == 0 {
                        bodies.push(String::from_utf8_lossy(&buf[end + 4..]).to_string());
                        break;
                    }
                }
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").expect("reply");
        }
        bodies
    });
    (url, handle)
}

#[test]
fn a_failing_backup_raises_one_alert_and_is_retried_at_the_next_slot_while_a_down_webhook_fails_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("f"), b"content").expect("write");
    let mut vault = new_vault(dir.path());
    // a webhook nobody listens on
    set_webhook(&mut vault, "http://127.0.0.1:9/down");
    daily_policy(&vault, "daily", &["02:00"], Retention { daily_days: Some(30), ..Retention::default() });
    let item = add_files_item(&vault, "docs", std::slice::from_ref(&src), &[]).expect("item");
    let clock = FakeClock::new(at("2026-03-01T12:00"));
    enable_protection(&vault, &env(&clock), &item, "daily").expect("enable");

    std::fs::rename(&src, dir.path().join("moved")).expect("move the source away");
    let r = agent(std::slice::from_ref(&vault), &clock, at("2026-03-03T12:00"), 1);
    assert_eq!((r.backups, r.failed), (2, 2), "each slot tried once");
    let failed = list_jobs(&vault, &JobFilter { state: Some(JobState::Failed), ..JobFilter::default() }).expect("jobs");
    assert_eq!(failed.len(), 2);
    let alerts = list_alerts(&vault).expect("alerts");
    assert_eq!(alerts.len(), 2, "one alert per failed backup: {alerts:?}");
    for a in &alerts {
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.item.as_deref(), Some("docs"));
        assert!(a.reason.contains("does not exist") || a.reason.contains("No such file"), "{}", a.reason);
        assert!(!a.delivered && a.attempts >= 1, "webhook down: kept undelivered: {a:?}");
    }

    // the source is back: the next slot succeeds although the webhook is still down
    std::fs::rename(dir.path().join("moved"), &src).expect("move back");
    let r = agent(std::slice::from_ref(&vault), &clock, at("2026-03-04T12:00"), 1);
    assert_eq!((r.backups, r.failed), (1, 0));
    assert_eq!(list_alerts(&vault).expect("alerts").len(), 2, "a success raises nothing");

    // the webhook comes up: the kept alerts are delivered once
    let (url, server) = webhook_server(2);
    set_webhook(&mut vault, &url);
    assert_eq!(retry_alerts(&vault).expect("retry"), 2);
    let bodies = server.join().expect("server");
    assert_eq!(bodies.len(), 2);
    for b in &bodies {
        let v: serde_json::Value = serde_json::from_str(b).expect("json body");
        assert_eq!(v["item"], "docs");
        assert_eq!(v["severity"], "Critical");
        assert_eq!(v["operation"], "Backup");
    }
    assert!(list_alerts(&vault).expect("alerts").iter().all(|a| a.delivered));
    assert_eq!(retry_alerts(&vault).expect("retry"), 0, "nothing left to send");
}

/// The agent keeps its vault open for days: a webhook that another
/// process sets meanwhile gets the alerts of the agent's next failure (the
/// settings were read once, at open, before settings were read again).
#[test]
fn settings_another_process_changes_reach_the_running_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = new_vault(dir.path());
    daily_policy(&vault, "daily", &["02:00"], Retention { daily_days: Some(30), ..Retention::default() });
    let missing = dir.path().join("gone");
    std::fs::create_dir(&missing).expect("mkdir");
    let item = add_files_item(&vault, "docs", std::slice::from_ref(&missing), &[]).expect("item");
    let clock = FakeClock::new(at("2026-03-01T12:00"));
    enable_protection(&vault, &env(&clock), &item, "daily").expect("enable");
    std::fs::remove_dir(&missing).expect("the source goes away");

    // another process (another handle on the same store) sets the webhook
    let (url, server) = webhook_server(1);
    let mut other =
        Vault::open(Arc::new(boveda_store::LocalStore::new(dir.path().join("vault"))), b"pw").expect("open");
    set_webhook(&mut other, &url);

    let r = agent(std::slice::from_ref(&vault), &clock, at("2026-03-02T12:00"), 1);
    assert_eq!((r.backups, r.failed), (1, 1));
    assert_eq!(vault_control(&vault).expect("control").webhook.as_deref(), Some(url.as_str()));
    let alerts = list_alerts(&vault).expect("alerts");
    assert!(alerts.len() == 1 && alerts[0].delivered, "delivered to the new webhook: {alerts:?}");
    assert_eq!(server.join().expect("server").len(), 1);
}

#[test]
fn a_stopped_backup_is_cancelled_and_leaves_the_vault_valid_and_reusable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    for i in 0..4u64 {
        std::fs::write(src.join(format!("big{i}")), noise(i + 7, 64 << 20)).expect("write");
    }
    let vault = new_vault(dir.path());
    let item = add_files_item(&vault, "big", std::slice::from_ref(&src), &[]).expect("item");
    let clock = FakeClock::new(at("2026-03-01T12:00"));
    let (job, result) = std::thread::scope(|s| {
        let runner = s.spawn(|| backup_job(&vault, &env(&clock), &item, None, None, &NoProgress).expect("job runs"));
        // stop it as soon as it shows as running
        loop {
            let running = list_jobs(&vault, &JobFilter { state: Some(JobState::InProgress), ..JobFilter::default() })
                .expect("jobs");
            if let Some(j) = running.first() {
                stop_job(&vault, &j.id.to_hex(), "test").expect("stop");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        runner.join().expect("runner")
    });
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    assert_eq!(result.expect_err("cancelled").kind(), ServiceErrorKind::Cancelled);
    assert!(boveda_service::list_item_points(&vault, &item).expect("points").is_empty());
    assert_check_passes(&vault);
    // stopping it again is refused; a job id that does not exist is named
    assert_eq!(stop_job(&vault, &job.id.to_hex(), "t").expect_err("not running").kind(), ServiceErrorKind::Conflict);
    assert_eq!(stop_job(&vault, "ffffffff", "t").expect_err("unknown").kind(), ServiceErrorKind::NotFound);

    let (job, result) = backup_job(&vault, &env(&clock), &item, None, None, &NoProgress).expect("job runs");
    assert_eq!(job.state, JobState::Completed);
    let point = result.expect("point");
    let got = restored_digest(&vault, &item, &point.id.to_hex(), &src, &dir.path().join("restore"));
    assert_eq!(got, digest(&src));
    assert_check_passes(&vault);
}

#[test]
fn soft_deleted_data_can_be_undeleted_in_the_window_and_is_purged_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("f"), noise(1, 2 << 20)).expect("write");
    let vault = new_vault(dir.path());
    daily_policy(&vault, "daily", &["02:00"], Retention { daily_days: Some(30), ..Retention::default() });
    let item = add_files_item(&vault, "docs", std::slice::from_ref(&src), &[]).expect("item");
    let clock = FakeClock::new(at("2026-03-01T12:00"));
    let e = env(&clock);
    let item = enable_protection(&vault, &e, &item, "daily").expect("enable");
    let (_, point) = backup_job(&vault, &e, &item, None, None, &NoProgress).expect("job");
    point.expect("point");

    let deleted = disable_protection(&vault, &e, &item, true).expect("delete data");
    assert_eq!(deleted.protection.purge_after, Some(at("2026-03-15T12:00")));
    let alerts = list_alerts(&vault).expect("alerts");
    assert_eq!(alerts.len(), 1);
    assert_eq!((alerts[0].operation, alerts[0].severity), (Operation::DeleteBackupData, Severity::Warning));
    assert_eq!(find_point(&vault, &deleted, "latest").expect_err("soft deleted").kind(), ServiceErrorKind::Conflict);
    // refused before a job is recorded
    let err = backup_job(&vault, &e, &deleted, None, None, &NoProgress).map(|_| ()).expect_err("refused");
    assert_eq!(err.kind(), ServiceErrorKind::Conflict);

    // undelete within the window: data back, protection stopped
    let back = undelete_protection(&vault, &e, &deleted).expect("undelete");
    assert_eq!(back.protection.state, boveda_service::ProtectionState::Stopped);
    let got = restored_digest(&vault, &back, "latest", &src, &dir.path().join("r1"));
    assert_eq!(got, digest(&src));
    assert_eq!(
        undelete_protection(&vault, &e, &back).expect_err("nothing to undelete").kind(),
        ServiceErrorKind::Conflict
    );

    // delete again; 13 days later nothing is purged, 15 days later all is
    let deleted = disable_protection(&vault, &e, &back, true).expect("delete data");
    clock.set(at("2026-03-14T12:00"));
    let (job, plan) = prune_job(&vault, &e, SignedDuration::from_hours(24)).expect("prune");
    assert_eq!(job.state, JobState::Completed);
    assert!(plan.expect("plan").expired.is_empty());
    assert!(find_item(&vault, "docs").is_ok());
    clock.set(at("2026-03-16T12:00"));
    let plan = prune_job(&vault, &e, SignedDuration::from_hours(24)).expect("prune").1.expect("plan");
    assert_eq!((plan.expired.len(), plan.purged_items.clone()), (1, vec!["docs".to_string()]));
    assert!(!plan.packs.mark.is_empty(), "the item's packs are marked");
    assert_eq!(find_item(&vault, "docs").expect_err("purged").kind(), ServiceErrorKind::NotFound);
    assert!(vault.list_points().expect("points").is_empty());
    // within the safety margin the marked packs wait; after it they go
    let dry = plan_prune(&vault, at("2026-03-16T18:00"), SignedDuration::from_hours(24)).expect("plan");
    assert!(dry.packs.sweep.is_empty() && dry.packs.waiting.len() == 1);
    clock.set(at("2026-03-17T13:00"));
    let plan = prune_job(&vault, &e, SignedDuration::from_hours(24)).expect("prune").1.expect("plan");
    assert!(!plan.packs.sweep.is_empty());
    assert!(vault.store().list("packs").expect("packs").is_empty(), "every pack of the purged item is gone");
    assert!(vault.store().list("index").expect("index").is_empty());
    assert_check_passes(&vault);
    let _ = deleted;
}

#[test]
fn a_mostly_unused_pack_is_repacked_and_its_space_reclaimed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    std::fs::write(src.join("keep"), noise(1, 200_000)).expect("write");
    std::fs::write(src.join("drop"), noise(2, 600_000)).expect("write");
    let vault = new_vault(dir.path());
    let item = add_files_item(&vault, "docs", std::slice::from_ref(&src), &[]).expect("item");
    let clock = FakeClock::new(at("2026-03-01T12:00"));
    let e = env(&clock);
    let soon = Some(at("2026-03-01T13:00"));
    backup_job(&vault, &e, &item, soon, None, &NoProgress).expect("job").1.expect("first point");
    std::fs::remove_file(src.join("drop")).expect("remove");
    let (_, second) = backup_job(&vault, &e, &item, Some(at("2026-06-01T00:00")), None, &NoProgress).expect("job");
    let second = second.expect("second point");
    let stored = |v: &Vault| -> u64 { v.store().list("packs").expect("list").iter().map(|o| o.size).sum() };
    let before = stored(&vault);

    // the first point expires: the pack holding both files is three quarters unused
    clock.set(at("2026-03-02T12:00"));
    let plan = prune_job(&vault, &e, SignedDuration::from_hours(24)).expect("prune").1.expect("plan");
    assert_eq!(plan.expired.len(), 1);
    assert!(!plan.packs.repack.is_empty(), "{:?}", plan.packs);
    let copied = plan.packs.repack_copy_bytes;
    assert!((150_000..300_000).contains(&copied), "copies only the kept file's chunks: {copied}");
    clock.set(at("2026-03-03T13:00"));
    let plan = prune_job(&vault, &e, SignedDuration::from_hours(24)).expect("prune").1.expect("plan");
    assert!(plan.packs.sweep.iter().any(|p| p.kind == boveda_vault::BlobKind::Data));
    let after = stored(&vault);
    assert!(after + 500_000 < before, "the dropped file's bytes are reclaimed: {before} -> {after}");
    let got = restored_digest(&vault, &item, &second.id.to_hex(), &src, &dir.path().join("r"));
    assert_eq!(got, digest(&src));
    assert_check_passes(&vault);
}

#[test]
fn a_shortened_retention_names_the_points_it_deletes_deletes_nothing_until_applied_and_a_stale_plan_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir(&src).expect("mkdir");
    let vault = new_vault(dir.path());
    let month = Retention { daily_days: Some(30), ..Retention::default() };
    daily_policy(&vault, "daily", &["02:00"], month);
    let item = add_files_item(&vault, "docs", std::slice::from_ref(&src), &[]).expect("item");
    // April: no change of summer time moves the 02:00 slot
    let clock = FakeClock::new(at("2026-03-31T12:00"));
    enable_protection(&vault, &env(&clock), &item, "daily").expect("enable");
    for day in 0..30u64 {
        std::fs::write(src.join(format!("day{day}")), noise(day, 20_000)).expect("write");
        let report = agent(std::slice::from_ref(&vault), &clock, at(&format!("2026-04-{:02}T03:00", day + 1)), 1);
        assert_eq!((report.backups, report.failed), (1, 0), "day {day}");
    }
    let points = || boveda_service::list_item_points(&vault, &item).expect("points");
    assert_eq!(points().len(), 30, "a month kept under daily 30");

    // daily 7: the plan names the 23 points it would delete, oldest first
    let now = clock.now();
    let week = PolicyPatch { daily_keep: Some(7), ..PolicyPatch::default() };
    let plan = update_policy(&vault, "daily", week.clone(), &clock, None).expect("plan");
    let before = points();
    let named: Vec<_> = plan.deleted.iter().map(|c| c.point).collect();
    let oldest: Vec<_> = before.iter().take(23).map(|p| p.id).collect();
    assert_eq!(named, oldest, "the 23 oldest points are the ones to delete");
    assert!(plan.deleted.iter().all(|c| c.item == "docs" && c.after.is_some_and(|t| t <= now)));
    // a plan applies nothing: a prune now keeps every point
    prune_job(&vault, &env(&clock), SignedDuration::from_hours(24)).expect("prune").1.expect("prune runs");
    assert_eq!(points().len(), 30, "planning deletes nothing");

    // a plan made before another change of the policy is refused
    let stale = plan_policy_update(&vault, "daily", &plan.policy, now).expect("plan again");
    let fortnight = PolicyPatch { daily_keep: Some(14), ..PolicyPatch::default() };
    update_policy(&vault, "daily", fortnight, &clock, Some("test")).expect("another change first");
    let err = apply_policy_update(&vault, &stale, "test", &clock).expect_err("stale plan");
    assert!(err.to_string().contains("plan it again"), "{err}");

    // applied: the next prune deletes exactly what the plan named
    let plan = update_policy(&vault, "daily", week, &clock, Some("test")).expect("apply");
    // daily 14 already let the 16 oldest expire: daily 7 names 7 more
    assert_eq!(plan.deleted.len(), 7);
    prune_job(&vault, &env(&clock), SignedDuration::from_hours(24)).expect("prune").1.expect("prune runs");
    let kept: Vec<_> = points().iter().map(|p| p.id).collect();
    let newest: Vec<_> = before.iter().skip(23).map(|p| p.id).collect();
    assert_eq!(kept, newest, "the 7 newest points remain");
    let got = restored_digest(&vault, &item, &kept[0].to_hex(), &src, &dir.path().join("restores"));
    assert_eq!(got.len(), 24, "the oldest survivor holds the files of its day");
    assert_check_passes(&vault);
}

/// Vaults made before the control plane kept its own record hold the
/// webhook, lag threshold and shipping address in the vault's settings:
/// they are read from there, and taken over (not lost) by the first change.
#[test]
fn control_settings_of_an_older_vault_are_read_and_taken_over_by_the_first_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = new_vault(dir.path());
    let mut settings = (*vault.settings()).clone();
    settings.webhook = Some("http://127.0.0.1:9/old".into());
    settings.replication_lag_alert_mins = Some(90);
    settings.shipping_address = Some("Dock 4".into());
    vault.update_settings(settings).expect("settings as an older boveda wrote them");
    let control = vault_control(&vault).expect("control");
    assert_eq!(control.webhook.as_deref(), Some("http://127.0.0.1:9/old"));
    assert_eq!((control.lag_alert_mins(), control.shipping_address.as_deref()), (90, Some("Dock 4")));

    update_vault(
        &vault,
        &VaultUpdate { replication_lag_alert_mins: Some(30), ..VaultUpdate::default() },
        "test",
        &boveda_service::SystemClock,
    )
    .expect("change one");
    let other = Vault::open(Arc::new(boveda_store::LocalStore::new(dir.path().join("vault"))), b"pw").expect("open");
    let control = vault_control(&other).expect("control");
    assert_eq!(control.webhook.as_deref(), Some("http://127.0.0.1:9/old"), "kept");
    assert_eq!((control.lag_alert_mins(), control.shipping_address.as_deref()), (30, Some("Dock 4")));
    let s = other.settings();
    assert_eq!((&s.webhook, s.replication_lag_alert_mins, &s.shipping_address), (&None, None, &None), "moved");
}

//! The control plane from the command line: protection states, jobs,
//! alerts, policy updates, prune, usage and the agent with a fake clock.

use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Env, StoreKind, noise};
use serde_json::Value;

fn json(env: &Env, args: &[&str]) -> Value {
    let mut full = vec!["--output", "json"];
    full.extend_from_slice(args);
    serde_json::from_str(&env.ok(&full)).expect("json output")
}

fn item_row(env: &Env, name: &str) -> Value {
    let rows = json(env, &["item", "list"]);
    rows.as_array().expect("rows").iter().find(|r| r["name"] == name).expect("item listed").clone()
}

fn jobs(env: &Env, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["job", "list"];
    full.extend_from_slice(args);
    json(env, &full).as_array().expect("jobs").clone()
}

fn setup(env: &Env) {
    env.create_vault();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("a"), noise(1, 300_000)).expect("write");
    std::fs::write(src.join("sub/b"), b"hello").expect("write");
    env.ok(&["item", "add", "files", "docs", "--path", src.to_str().expect("utf8")]);
}

#[test]
fn protection_states_jobs_and_alerts_from_the_command_line() {
    let env = Env::new();
    setup(&env);
    let row = item_row(&env, "docs");
    assert_eq!(row["protection"], "Not protected - Warning (initial backup pending)");

    env.ok(&["protection", "enable", "docs", "--policy", "DefaultPolicy"]);
    let row = item_row(&env, "docs");
    assert_eq!(row["protection"], "Protected - Warning (initial backup pending)");
    assert_eq!(row["policy"], "DefaultPolicy");
    assert!(row["next_backup"].is_string(), "{row}");
    // bad input: protected twice, an unknown policy, deleting a policy in use
    assert!(env.fails(&["protection", "enable", "docs", "--policy", "DefaultPolicy"]).contains("already protected"));
    env.ok(&["item", "add", "files", "other", "--path", env.path("src").to_str().expect("utf8")]);
    assert!(env.fails(&["protection", "enable", "other", "--policy", "nope"]).contains("no policy named"));
    assert!(env.fails(&["policy", "delete", "DefaultPolicy"]).contains("protects docs"));

    let point = env.backup("docs", 0);
    let row = item_row(&env, "docs");
    assert_eq!(
        (row["protection"].as_str(), row["last_backup_status"].as_str()),
        (Some("Protected"), Some("Completed"))
    );
    let backups = jobs(&env, &["--operation", "backup", "--item", "docs"]);
    assert_eq!(backups.len(), 1);
    let job = &backups[0];
    assert_eq!(job["state"], "Completed");
    assert_eq!(job["point"], point["id"]);
    assert_eq!(job["progress"]["files"], 2);
    assert_eq!(job["progress"]["bytes_read"], 300_005);
    let id = job["id"].as_str().expect("id");
    let shown = env.ok(&["job", "show", &id[..8]]);
    assert!(shown.contains("Backup") && shown.contains("Completed") && shown.contains("2 files"), "{shown}");
    env.expect(0, &["job", "wait", id]);
    assert!(env.fails(&["job", "show", "0123456789abcdef"]).contains("no job with id"));
    assert!(env.fails(&["job", "wait", "0123456789abcdef"]).contains("no job with id"));
    assert!(env.fails(&["job", "list", "--status", "Sleeping"]).contains("unknown job status"));
    assert!(env.fails(&["job", "stop", id]).contains("not running"));
    let configure = jobs(&env, &["--operation", "ConfigureBackup"]);
    assert_eq!(configure.len(), 1);

    // stop protection, keep data: no backups until resumed
    env.ok(&["protection", "disable", "docs"]);
    assert_eq!(item_row(&env, "docs")["protection"], "Protection stopped, data retained");
    assert!(env.fails(&["protection", "backup-now", "docs"]).contains("protection resume"));
    env.ok(&["protection", "resume", "docs", "--policy", "DefaultPolicy"]);
    assert_eq!(item_row(&env, "docs")["protection"], "Protected");

    // delete data: soft deleted, restore refused, an alert raised
    let out = env.ok(&["protection", "disable", "docs", "--delete-data"]);
    assert!(out.contains("soft deleted") && out.contains("undelete"), "{out}");
    assert_eq!(item_row(&env, "docs")["protection"], "Soft deleted");
    let target = env.path("restore");
    let t = target.to_str().expect("utf8");
    assert!(env.fails(&["restore", "docs", "--target", t]).contains("undelete"));
    let alerts = json(&env, &["alert", "list"]);
    assert_eq!(alerts[0]["operation"], "DeleteBackupData");
    assert_eq!(alerts[0]["item"], "docs");
    assert!(env.ok(&["alert", "list"]).contains("DeleteBackupData"));
    assert!(env.fails(&["protection", "disable", "docs", "--delete-data"]).contains("already soft deleted"));

    env.ok(&["protection", "undelete", "docs"]);
    assert_eq!(item_row(&env, "docs")["protection"], "Protection stopped, data retained");
    env.ok(&["restore", "docs", "--target", t]);
    let restored = target.join(env.path("src").strip_prefix("/").expect("abs"));
    common::assert_same_tree(&env.path("src"), &restored);
    env.ok(&["vault", "check"]);
    for op in ["Restore", "Verify", "DisableBackup", "DeleteBackupData", "Undelete"] {
        let found = jobs(&env, &["--operation", op]);
        assert!(!found.is_empty() && found.iter().all(|j| j["state"] == "Completed"), "{op}: {found:?}");
    }

    let usage = json(&env, &["usage"]);
    let docs = usage["items"].as_array().expect("items").iter().find(|i| i["item"] == "docs").expect("docs").clone();
    assert_eq!(docs["front_end_bytes"], 300_005);
    assert_eq!(docs["instances"], 1);
    assert!(docs["stored_bytes"].as_u64().expect("stored") > 290_000);
    assert!((docs["monthly_cost"].as_f64().expect("cost") - 5.0).abs() < 0.01);
    // an edited price table
    let prices = env.path("prices.json");
    std::fs::write(&prices, r#"{"currency": "EUR", "small_instance": 4.5}"#).expect("write");
    let usage = json(&env, &["usage", "--prices", prices.to_str().expect("utf8")]);
    assert_eq!(usage["prices"]["currency"], "EUR");
    std::fs::write(&prices, r#"{"small_instance": -1}"#).expect("write");
    assert!(env.fails(&["usage", "--prices", prices.to_str().expect("utf8")]).contains("prices must be"));
}

on_every_store!(the_agent_with_a_fake_clock_and_a_policy_update_that_deletes_points);

fn the_agent_with_a_fake_clock_and_a_policy_update_that_deletes_points(kind: StoreKind) {
    let env = Env::on(kind);
    setup(&env);
    env.ok(&["policy", "create", "daily", "--time", "02:00", "--time-zone", "UTC", "--daily-keep", "30"]);
    let fake = |t: &str, args: &[&str]| -> std::process::Output {
        env.cmd(args).env("BOVEDA_FAKE_NOW", t).output().expect("run")
    };
    assert!(fake("2026-01-01T00:00:00Z", &["protection", "enable", "docs", "--policy", "daily"]).status.success());
    let out = fake("2026-01-01T00:00:00Z", &["agent", "--until", "2026-01-10T12:00:00Z"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("10 backup(s) (0 failed"), "{out:?}");

    let now = "2026-01-10T12:00:00Z";
    // keeping 3 days instead of 30 would delete 7 points: listed, and refused without --yes
    let out = fake(now, &["policy", "update", "daily", "--daily-keep", "3"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("these 7 point(s) expire"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    let unchanged = json(&env, &["policy", "show", "daily"]);
    assert_eq!(unchanged["retention"]["daily_days"], 30);
    // malformed flags on update name the field and change nothing
    let out = fake(now, &["policy", "update", "daily", "--daily-keep", "0", "--yes"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--daily-keep: must be 1 to 9999"));

    let out = fake(now, &["policy", "update", "daily", "--daily-keep", "3", "--yes"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = fake(now, &["--output", "json", "prune", "--dry-run", "--safety-margin", "0s"]);
    let plan: Value = serde_json::from_slice(&out.stdout).expect("plan json");
    assert_eq!(plan["expired"].as_array().expect("expired").len(), 7);
    assert_eq!(json(&env, &["recoverypoint", "list", "docs"]).as_array().expect("points").len(), 10, "dry run");
    assert!(fake(now, &["prune", "--safety-margin", "0s"]).status.success());
    let out = fake(now, &["--output", "json", "recoverypoint", "list", "docs"]);
    let points: Value = serde_json::from_slice(&out.stdout).expect("json");
    let kept: Vec<&str> =
        points.as_array().expect("points").iter().map(|p| p["kept_by"].as_str().unwrap_or("")).collect();
    assert_eq!(kept, ["daily of 2026-01-08", "daily of 2026-01-09", "daily of 2026-01-10"]);
    assert!(env.fails(&["prune", "--safety-margin", "soon"]).contains("invalid duration"));
    env.ok(&["vault", "check", "--read-data"]);
}

fn wait_for_running_job(env: &Env, operation: &str) -> String {
    let start = Instant::now();
    loop {
        let running = jobs(env, &["--status", "InProgress", "--operation", operation]);
        if let Some(j) = running.first() {
            return j["id"].as_str().expect("id").to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no running {operation} job appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn job_stop_cancels_a_running_backup_and_a_killed_one_shows_failed() {
    let env = Env::new();
    setup(&env);
    for i in 0..6u64 {
        std::fs::write(env.path("src").join(format!("big{i}")), noise(i + 50, 48 << 20)).expect("write");
    }
    // stopped from another process
    let mut child = env
        .cmd(&["protection", "backup-now", "docs"])
        .env("BOVEDA_JOB_HEARTBEAT_MS", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let id = wait_for_running_job(&env, "Backup");
    env.ok(&["job", "stop", &id]);
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(1));
    env.expect(1, &["job", "wait", &id]);
    let job = json(&env, &["job", "show", &id]);
    assert_eq!(job["state"], "Cancelled", "{job}");
    env.ok(&["vault", "check"]);

    // killed: its heartbeat stops and the job shows Failed, not InProgress forever
    let mut child = env
        .cmd(&["protection", "backup-now", "docs"])
        .env("BOVEDA_JOB_HEARTBEAT_MS", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let id = wait_for_running_job(&env, "Backup");
    child.kill().expect("kill");
    child.wait().expect("reap");
    std::thread::sleep(Duration::from_millis(5_400));
    let job = json(&env, &["job", "show", &id]);
    assert_eq!(job["state"], "Failed", "{job}");
    assert!(job["error"].as_str().expect("error").contains("no heartbeat"), "{job}");
    env.ok(&["vault", "check"]);
    // the vault is reusable: a full backup and restore
    env.backup("docs", 0);
    let target = env.path("r");
    // a restore can be stopped too, and is recorded as Cancelled
    let stopped = env.path("stopped");
    let child = env
        .cmd(&["restore", "docs", "--target", stopped.to_str().expect("utf8")])
        .env("BOVEDA_JOB_HEARTBEAT_MS", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let id = wait_for_running_job(&env, "Restore");
    env.ok(&["job", "stop", &id]);
    assert_eq!(child.wait_with_output().expect("wait").status.code(), Some(1));
    assert_eq!(json(&env, &["job", "show", &id])["state"], "Cancelled");
    env.ok(&["restore", "docs", "--target", target.to_str().expect("utf8")]);
    common::assert_same_tree(&env.path("src"), &target.join(env.path("src").strip_prefix("/").expect("abs")));
}

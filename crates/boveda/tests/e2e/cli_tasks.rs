//! The portal's day-to-day tasks from the command line too: an hourly
//! (enhanced) policy, an item's policy changed, files taken out of a point
//! as a tar archive, alerts acknowledged and resolved, jobs filtered by
//! time and by the machine that ran them, backup reports as CSV, and the
//! Backup center across vaults.

use crate::common;

use std::io::Read;

use common::{Env, noise};
use serde_json::Value;

fn json(env: &Env, args: &[&str]) -> Value {
    let mut full = vec!["--output", "json"];
    full.extend_from_slice(args);
    serde_json::from_str(&env.ok(&full)).expect("json output")
}

#[test]
fn the_portals_tasks_work_from_the_command_line() {
    let env = Env::new();
    env.create_vault();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    let data = noise(7, 200_000);
    std::fs::write(src.join("sub/data.bin"), &data).expect("write");
    std::fs::write(src.join("note.txt"), b"note").expect("write");
    env.ok(&["item", "add", "files", "docs", "--path", src.to_str().expect("utf8")]);

    // several backups a day, in a named zone
    let out = env.ok(&[
        "policy",
        "create",
        "enhanced",
        "--schedule",
        "hourly",
        "--every-hours",
        "4",
        "--window-start",
        "08:00",
        "--window-hours",
        "12",
        "--time-zone",
        "Europe/Madrid",
        "--daily-keep",
        "7",
    ]);
    assert!(out.contains("enhanced"), "{out}");
    let p = json(&env, &["policy", "show", "enhanced"]);
    assert_eq!(p["schedule"]["times"], serde_json::json!(["08:00", "12:00", "16:00"]), "{p}");
    let bad = env.fails(&["policy", "create", "odd", "--schedule", "hourly", "--every-hours", "5"]);
    assert!(bad.contains("4, 6, 8 or 12"), "{bad}");
    let bad = env.fails(&["policy", "create", "bad name", "--daily-keep", "7"]);
    assert!(bad.contains("invalid policy name"), "a policy's name is called a policy name: {bad}");

    // an item's policy changed
    env.ok(&["protection", "enable", "docs", "--policy", "DefaultPolicy"]);
    env.ok(&["protection", "change-policy", "docs", "--policy", "enhanced"]);
    let items = json(&env, &["item", "list"]);
    assert_eq!(items[0]["policy"], "enhanced", "{items}");
    assert!(env.fails(&["protection", "change-policy", "docs", "--policy", "enhanced"]).contains("already"));

    // a point's files as a tar archive, byte for byte; a wrong path refused
    // and no archive left behind
    env.backup("docs", 0);
    let tar_file = env.path("out.tar");
    let picked = src.join("sub/data.bin");
    let picked = picked.to_str().expect("utf8");
    env.ok(&["restore", "docs", "--tar", tar_file.to_str().expect("utf8"), "--path", picked]);
    let mut archive = tar::Archive::new(std::fs::File::open(&tar_file).expect("archive"));
    let mut found = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut e = entry.expect("entry");
        if e.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).expect("read");
            found.push((e.path().expect("path").display().to_string(), bytes));
        }
    }
    assert_eq!(found.len(), 1, "only the picked file");
    assert!(picked.ends_with(&found[0].0), "{}", found[0].0);
    assert_eq!(found[0].1, data, "the archive's bytes are the bytes backed up");
    let missing = env.path("missing.tar");
    let err = env.fails(&["restore", "docs", "--tar", missing.to_str().expect("utf8"), "--path", "/no/such"]);
    assert!(err.contains("is not in the point"), "{err}");
    assert!(!missing.exists() && !env.path("missing.tar.part").exists(), "nothing left of a refused archive");

    // a failure, its alert acknowledged, a later one resolved by a success
    std::fs::rename(&src, env.path("away")).expect("move");
    env.expect(1, &["protection", "backup-now", "docs"]);
    env.expect(1, &["protection", "backup-now", "docs"]);
    let alerts = json(&env, &["alert", "list"]);
    let first = alerts[1]["id"].as_str().expect("id").to_string();
    let out = env.ok(&["alert", "ack", &first[..8]]);
    assert!(out.contains("Acknowledged"), "{out}");
    let listed = env.ok(&["alert", "list"]);
    assert!(listed.contains("Acknowledged") && listed.contains("Active") && listed.contains("What to do"), "{listed}");
    std::fs::rename(env.path("away"), &src).expect("back");
    env.backup("docs", 0);
    let alerts = json(&env, &["alert", "list"]);
    assert!(alerts.as_array().expect("alerts").iter().all(|a| a["state"] == "Resolved"), "{alerts}");

    // jobs filtered by time and by the machine that ran them
    let host = json(&env, &["job", "list"])[0]["host"].as_str().expect("host").to_string();
    let all = json(&env, &["job", "list", "--host", &host]).as_array().expect("jobs").len();
    assert!(all >= 5, "{all}");
    assert_eq!(json(&env, &["job", "list", "--host", "no-such-host"]), serde_json::json!([]));
    assert_eq!(json(&env, &["job", "list", "--until", "2000-01-01"]), serde_json::json!([]));
    let failed = json(&env, &["job", "list", "--status", "Failed", "--until", "2999-12-31"]);
    assert_eq!(failed.as_array().map(Vec::len), Some(2));
    // the point a backup made, in the job list
    let done = json(&env, &["job", "list", "--operation", "Backup", "--status", "Completed"]);
    let point = done[0]["point"].as_str().expect("a completed backup names its point").to_string();
    let table = env.ok(&["job", "list", "--operation", "Backup"]);
    assert!(table.lines().next().is_some_and(|h| h.contains("DURATION") && h.contains("POINT")), "{table}");
    assert!(table.contains(&point[..8]), "{table}");

    // an item whose first backups fail, with no point at all, is Critical
    // (it read "initial backup pending")
    let fresh = env.path("fresh");
    std::fs::create_dir_all(&fresh).expect("mkdir");
    env.ok(&["item", "add", "files", "fresh", "--path", fresh.to_str().expect("utf8")]);
    std::fs::remove_dir(&fresh).expect("rmdir");
    env.expect(1, &["protection", "backup-now", "fresh"]);
    env.expect(1, &["protection", "backup-now", "fresh"]);
    let items = json(&env, &["item", "list"]);
    let row = items.as_array().expect("items").iter().find(|i| i["name"] == "fresh").expect("fresh").clone();
    assert_eq!((row["health"].as_str(), row["recovery_points"].as_u64()), (Some("Critical"), Some(0)), "{row}");
    assert!(!row["protection"].as_str().unwrap_or_default().contains("pending"), "{row}");

    // the report as CSV, and the Backup center over two vaults
    let csv = env.ok(&["report", "--days", "7", "--csv"]);
    assert!(csv.starts_with("item,backups,succeeded,failed"), "{csv}");
    assert!(csv.lines().any(|l| l.starts_with("docs,4,2,2,0,0.500,")), "{csv}");
    let second = env.path("second");
    env.ok(&["vault", "create", "second", "--store", second.to_str().expect("utf8"), "--insecure-fast-kdf"]);
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::fs::write(elsewhere.join("e.txt"), b"in the second vault").expect("write");
    env.ok(&["--vault", "second", "item", "add", "files", "etc2", "--path", elsewhere.to_str().expect("utf8")]);
    env.ok(&["--vault", "second", "protection", "backup-now", "etc2"]);
    let center = env.ok(&["center", "test-vault", "second"]);
    let row =
        |vault: &str, item: &str| center.lines().find(|l| l.starts_with(vault) && l.contains(item)).map(str::to_string);
    assert!(row("test-vault", "docs").is_some_and(|l| l.contains("Healthy")), "{center}");
    assert!(row("test-vault", "fresh").is_some_and(|l| l.contains("Critical")), "{center}");
    assert!(row("second", "etc2").is_some_and(|l| l.contains("Healthy")), "{center}");
}

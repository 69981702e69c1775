//! What the portal's pages stand on, through the API: live job progress
//! with totals, item health and alert states, downloads of a point's
//! files, where a restore may write, backup reports, the Backup center,
//! an item's policy changed, and an item checked before it is added.

mod common;

use std::io::Read;
use std::time::Duration;

use axum::http::StatusCode;
use boveda_service as svc;
use serde_json::json;

/// Backs `item` up through the API a minute after the last one (the
/// fake clock moved on) and waits; the job.
async fn backup(f: &common::Fixture, item: &str) -> serde_json::Value {
    use svc::Clock;
    f.clock.set(f.clock.now() + jiff::SignedDuration::from_secs(60));
    let c = f.token("Contributor").to_string();
    let r = f.call("POST", &format!("/api/v1/vaults/{{vault}}/items/{item}/backup"), Some(&c), Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    f.wait_job(r.body["id"].as_str().expect("id"), &c).await
}

/// The first running job, as a Reader sees it through the API, once its
/// progress is `ready` (polled for up to 30 s); none if it never was.
async fn running_job(f: &common::Fixture, ready: impl Fn(&serde_json::Value) -> bool) -> Option<serde_json::Value> {
    let r = f.token("Reader").to_string();
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let jobs = f.call("GET", "/api/v1/vaults/{vault}/jobs?state=InProgress", Some(&r), None).await;
        if let Some(j) = jobs.body.as_array().and_then(|a| a.first()).cloned()
            && ready(&j["progress"])
        {
            return Some(j);
        }
    }
    None
}

/// A backup observer that takes its time over every file, so that a test
/// sees the job while it runs.
struct Slow;

impl svc::BackupProgress for Slow {
    fn file_done(&self, _path: &std::path::Path, _size: u64, _reused: bool) {
        // 12 files: the run lasts about 12 s, many of the job's
        // once-a-second progress reports
        a_second_at_a_time();
    }
}

/// A second's pause, one at a time whatever the backup's threads.
fn a_second_at_a_time() {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock();
    std::thread::sleep(Duration::from_millis(1000));
}

/// Backs `item` up as a job of this process (not through the API, with a
/// heartbeat far longer than the run), observed by `progress`, in a thread.
fn backup_in_thread(
    f: &common::Fixture,
    item: &'static str,
    progress: impl svc::BackupProgress + Send + 'static,
) -> std::thread::JoinHandle<svc::Job> {
    let (vault, clock) = (f.vault.clone(), f.clock.clone());
    std::thread::spawn(move || {
        let item = svc::find_item(&vault, item).expect("item");
        let env = svc::JobEnv::new(clock.as_ref(), Duration::from_secs(60), "test".into());
        svc::backup_job(&vault, &env, &item, None, None, &progress).expect("job").0
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_backup_shows_live_progress_against_its_totals_and_ends_with_the_real_ones() {
    let f = common::fixture();
    let docs = f.dir.path().join("docs");
    for i in 0..10 {
        std::fs::write(docs.join(format!("f{i}.txt")), format!("file {i}\n").repeat(1000)).expect("write");
    }
    let first = backup(&f, "docs").await;
    assert_eq!(first["state"], "Completed", "{first}");
    // the regression: a finished backup said it wrote 0 bytes while the
    // vault had grown
    let stored = first["progress"]["bytes_written"].as_u64().expect("written");
    assert!(stored > 0, "a first backup stores something: {first}");
    assert_eq!(first["progress"]["files"], first["progress"]["files_total"], "real totals at the end: {first}");
    assert_eq!(first["progress"]["totals_estimated"], false);
    std::fs::write(docs.join("f0.txt"), "changed\n".repeat(5000)).expect("change");

    // a second backup, slowed, with a heartbeat far longer than the run:
    // what the API shows while it runs comes from the live progress
    let worker = backup_in_thread(&f, "docs", Slow);
    let seen = running_job(&f, |p| p["files"].as_u64().is_some_and(|n| n >= 2)).await;
    let done = tokio::task::spawn_blocking(move || worker.join().expect("worker")).await.expect("join");
    let seen = seen.expect("the running job showed files done before it ended");
    let p = &seen["progress"];
    assert_eq!(p["phase"], "backing up", "{seen}");
    assert_eq!(p["files_total"], first["progress"]["files_total"], "the totals are the previous point's: {seen}");
    assert_eq!(p["totals_estimated"], true, "{seen}");
    assert!(p["bytes_done"].as_u64().unwrap_or(0) > 0, "{seen}");
    assert!(done.progress.bytes_written > 0 && !done.progress.totals_estimated, "{:?}", done.progress);
    assert_eq!(done.progress.files_total, Some(done.progress.files));
}

/// A disk backup observer that takes its time over every read.
struct SlowReads;

impl svc::BackupProgress for SlowReads {
    fn bytes_read(&self, _n: u64) {
        a_second_at_a_time();
    }
}

/// Adds item `disk`: a 64 MiB raw image with `mib` MiB written, a MiB at
/// 0, 20 and 40 MiB, the rest from 41 MiB on.
fn sparse_disk_item(f: &common::Fixture, mib: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let image = f.dir.path().join("disk.raw");
    let mut file = std::fs::File::create(&image).expect("image");
    file.set_len(64 << 20).expect("size");
    let block: Vec<u8> = (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for at in [0u64, 20, 40].into_iter().chain(41..).take(mib as usize) {
        file.seek(SeekFrom::Start(at << 20)).expect("seek");
        file.write_all(&block).expect("write");
    }
    svc::add_disk_item(&f.vault, "disk", &image, None).expect("disk item");
}

/// A disk backup observer whose reads wait at a gate until the test
/// opens it; counts the reads waiting.
#[derive(Clone, Default)]
struct Gate(std::sync::Arc<(std::sync::Mutex<(bool, usize)>, std::sync::Condvar)>);

impl Gate {
    fn open(&self) {
        let (lock, cv) = &*self.0;
        lock.lock().expect("gate").0 = true;
        cv.notify_all();
    }

    /// Waits (up to 30 s) until `n` reads wait at the gate.
    fn wait_for(&self, n: usize) -> bool {
        let (lock, cv) = &*self.0;
        let guard = lock.lock().expect("gate");
        let (guard, _) =
            cv.wait_timeout_while(guard, Duration::from_secs(30), |(_, waiting)| *waiting < n).expect("gate");
        guard.1 >= n
    }
}

impl svc::BackupProgress for Gate {
    fn bytes_read(&self, _n: u64) {
        let (lock, cv) = &*self.0;
        let mut guard = lock.lock().expect("gate");
        guard.1 += 1;
        cv.notify_all();
        let _open = cv.wait_while(guard, |(open, _)| !*open).expect("gate");
    }
}

/// The CI failure's cause: a disk backup reads its windows on the
/// process's shared worker threads, and a worker takes work from outside
/// only when it has none of its own left, so the catalog listing a
/// request needs waited for the whole backup (a GET of a job took 6.4 s
/// behind an 8 GiB backup through `boveda serve`, minutes behind a large
/// disk). A job now runs in a pool of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_not_held_up_behind_a_running_disk_backup() {
    let f = common::fixture();
    // more windows of 256 KiB than the shared pool has threads (one per
    // core), so that without a pool of its own the backup takes them all
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get) as u64;
    let mib = (cores / 4 + 1).clamp(3, 20);
    sparse_disk_item(&f, mib);
    let gate = Gate::default();
    let worker = backup_in_thread(&f, "disk", gate.clone());
    // every worker thread of the backup is busy (waits at the gate)
    assert!(gate.wait_for(cores.min(mib * 4) as usize), "the backup's reads did not all start");
    let r = f.token("Reader").to_string();
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        f.call("GET", "/api/v1/vaults/{vault}/jobs?state=InProgress", Some(&r), None),
    )
    .await;
    gate.open();
    let done = tokio::task::spawn_blocking(move || worker.join().expect("worker")).await.expect("join");
    let answer = answer.expect("the job list answered while the disk backup ran");
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    assert_eq!(answer.body[0]["item"], "disk", "{}", answer.text);
    assert_eq!(answer.body[0]["state"], "InProgress", "{}", answer.text);
    assert_eq!(done.state, svc::JobState::Completed, "{done:?}");
    assert_eq!(done.progress.bytes_read, mib << 20, "{:?}", done.progress);
}

/// The report's case: a large disk backup showed "0 B, Files 0, Phase -"
/// for its whole run. A disk's totals are known from the start: its
/// allocated bytes, not its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_disk_backup_shows_its_allocated_bytes_as_the_total_from_the_start() {
    let f = common::fixture();
    sparse_disk_item(&f, 3);
    let worker = backup_in_thread(&f, "disk", SlowReads);
    let seen = running_job(&f, |p| p["bytes_read"].as_u64().unwrap_or(0) > 0).await;
    let done = tokio::task::spawn_blocking(move || worker.join().expect("worker")).await.expect("join");
    let seen = seen.expect("the running disk backup showed bytes read before it ended");
    let p = &seen["progress"];
    assert_eq!(p["phase"], "backing up", "{seen}");
    assert_eq!(p["files_total"], 1, "{seen}");
    assert_eq!(p["totals_estimated"], false, "a disk knows its totals: {seen}");
    assert_eq!(p["bytes_total"], 3u64 << 20, "the allocated bytes, not the 64 MiB size: {seen}");
    assert_eq!(
        (seen["state"].as_str(), p["files"].as_u64()),
        (Some("InProgress"), Some(0)),
        "seen while it ran: {seen}"
    );
    assert_eq!((done.progress.files, done.progress.files_total), (1, Some(1)), "{:?}", done.progress);
    assert_eq!(done.progress.bytes_read, 3 << 20, "{:?}", done.progress);
    assert!(done.progress.bytes_written > 0, "{:?}", done.progress);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_backup_turns_its_item_critical_and_its_alert_resolves_when_a_backup_succeeds() {
    let f = common::fixture();
    let (r, o) = (f.token("Reader").to_string(), f.token("Operator").to_string());
    assert_eq!(backup(&f, "docs").await["state"], "Completed");
    let docs = f.dir.path().join("docs");
    std::fs::rename(&docs, f.dir.path().join("docs-away")).expect("move");
    // the list read (and shared) before the backup fails is not what the
    // next request gets once the job ended: the regression of an item
    // shown InProgress after its job had failed
    let before = f.call("GET", "/api/v1/vaults/{vault}/items", Some(&r), None).await;
    assert_eq!(before.body[0]["last_backup_status"], "Completed", "{}", before.text);
    for _ in 0..2 {
        assert_eq!(backup(&f, "docs").await["state"], "Failed");
    }
    let list = f.call("GET", "/api/v1/vaults/{vault}/items", Some(&r), None).await;
    let docs_row = list.body.as_array().expect("items").iter().find(|i| i["name"] == "docs").expect("docs").clone();
    assert_eq!(
        (docs_row["last_backup_status"].as_str(), docs_row["health"].as_str()),
        (Some("Failed"), Some("Critical")),
        "{}",
        list.text
    );
    let item = f.call("GET", "/api/v1/vaults/{vault}/items/docs", Some(&r), None).await;
    assert_eq!(item.body["health"], "Critical", "{}", item.text);
    assert!(
        item.body["health_reason"].as_str().unwrap_or_default().contains("the last backup failed"),
        "{}",
        item.text
    );
    let dash = f.call("GET", "/api/v1/vaults/{vault}/dashboard", Some(&r), None).await;
    assert_eq!(dash.body["items_by_health"]["Critical"], 1, "{}", dash.text);
    assert_eq!(dash.body["active_alerts"], 2, "{}", dash.text);
    let alerts = f.call("GET", "/api/v1/vaults/{vault}/alerts", Some(&r), None).await;
    let list = alerts.body.as_array().expect("alerts").clone();
    assert!(list.iter().all(|a| a["state"] == "Active"), "{}", alerts.text);
    assert!(
        list[0]["action"].as_str().unwrap_or_default().contains("Backup now"),
        "an alert says what to do: {}",
        alerts.text
    );

    // one acknowledged (by an Operator; a Reader may not)
    let id = list[0]["id"].as_str().expect("id");
    let path = format!("/api/v1/vaults/{{vault}}/alerts/{}/acknowledge", &id[..8]);
    assert_eq!(f.call("POST", &path, Some(&r), None).await.status, StatusCode::FORBIDDEN);
    let acked = f.call("POST", &path, Some(&o), None).await;
    assert_eq!(acked.status, StatusCode::OK, "{}", acked.text);
    assert_eq!(acked.body["state"], "Acknowledged");
    assert!(acked.body["acknowledged"]["by"].as_str().unwrap_or_default().contains("Operator"), "{}", acked.text);
    // an item-scoped token cannot touch another item's alert
    let scoped = f.token("Operator/docs").to_string();
    let other = f.call("POST", "/api/v1/vaults/{vault}/alerts/ffffffff/acknowledge", Some(&scoped), None).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND, "{}", other.text);

    // the source back, a backup succeeds: both resolved, the item healthy
    std::fs::rename(f.dir.path().join("docs-away"), &docs).expect("back");
    assert_eq!(backup(&f, "docs").await["state"], "Completed");
    let alerts = f.call("GET", "/api/v1/vaults/{vault}/alerts", Some(&r), None).await;
    assert!(
        alerts.body.as_array().expect("alerts").iter().all(|a| a["state"] == "Resolved" && a["resolved"].is_string()),
        "{}",
        alerts.text
    );
    let item = f.call("GET", "/api/v1/vaults/{vault}/items/docs", Some(&r), None).await;
    assert_eq!(item.body["health"], "Healthy", "{}", item.text);
    let dash = f.call("GET", "/api/v1/vaults/{vault}/dashboard", Some(&r), None).await;
    assert_eq!(dash.body["active_alerts"], 0, "{}", dash.text);
}

/// The report's exact case: a new item whose first two backups fail has
/// no point at all; it read "Protected - Warning (initial backup pending)"
/// and the dashboard counted it healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_whose_first_backups_fail_is_critical_before_it_has_any_point() {
    let f = common::fixture();
    let r = f.token("Reader").to_string();
    let other = f.dir.path().join("other");
    std::fs::rename(&other, f.dir.path().join("other-away")).expect("move");
    for _ in 0..2 {
        assert_eq!(backup(&f, "other").await["state"], "Failed");
    }
    let item = f.call("GET", "/api/v1/vaults/{vault}/items/other", Some(&r), None).await;
    assert_eq!(item.body["recovery_points"], 0, "{}", item.text);
    assert_eq!(item.body["health"], "Critical", "{}", item.text);
    let protection = item.body["protection"].as_str().unwrap_or_default();
    assert!(
        protection.contains("Critical (last backup failed)") && !protection.contains("initial backup pending"),
        "{}",
        item.text
    );
    assert!(item.body["health_reason"].as_str().unwrap_or_default().contains("does not exist"), "{}", item.text);
    let list = f.call("GET", "/api/v1/vaults/{vault}/items", Some(&r), None).await;
    let row = list.body.as_array().expect("items").iter().find(|i| i["name"] == "other").expect("other").clone();
    assert_eq!(row["health"], "Critical", "{}", list.text);
    let dash = f.call("GET", "/api/v1/vaults/{vault}/dashboard", Some(&r), None).await;
    assert_eq!(dash.body["items_by_health"]["Critical"], 1, "{}", dash.text);
    assert!(dash.body["items_by_health"].get("Healthy").is_none_or(|n| n != 2), "{}", dash.text);
    let alerts = f.call("GET", "/api/v1/vaults/{vault}/alerts", Some(&r), None).await;
    let active: Vec<_> = alerts.body.as_array().expect("alerts").iter().filter(|a| a["state"] == "Active").collect();
    assert_eq!(active.len(), 2, "one per failed backup, each with its state: {}", alerts.text);
}

/// The files of a tar archive: path → bytes.
fn untar(bytes: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().expect("entries") {
        let mut e = entry.expect("entry");
        if e.header().entry_type().is_file() {
            let path = e.path().expect("path").display().to_string();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read");
            out.insert(path, data);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_streams_the_picked_files_of_a_point_byte_for_byte() {
    let f = common::fixture();
    assert_eq!(backup(&f, "docs").await["state"], "Completed");
    let o = f.token("Operator").to_string();
    let docs = f.dir.path().join("docs");
    let big = docs.join("sub/b.bin");
    let wanted = big.display().to_string();
    let url = format!("/api/v1/vaults/{{vault}}/items/docs/points/latest/download?path={}", wanted.replace('/', "%2F"));
    let r = f.call("GET", &url, Some(&o), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/x-tar");
    assert!(r.headers["content-disposition"].to_str().unwrap_or_default().contains("docs.tar"));
    let files = untar(&r.bytes);
    assert_eq!(files.len(), 1, "only the picked file: {:?}", files.keys());
    let (path, data) = files.iter().next().expect("one");
    assert!(wanted.ends_with(path.as_str()), "{path}");
    assert_eq!(data, &std::fs::read(&big).expect("source"), "the bytes downloaded are the bytes backed up");

    // the whole point
    let all = f.call("GET", "/api/v1/vaults/{vault}/items/docs/points/latest/download", Some(&o), None).await;
    assert_eq!(untar(&all.bytes).len(), 2, "both files");
    // a path not in the point: a clear refusal, before any byte
    let missing = f
        .call("GET", "/api/v1/vaults/{vault}/items/docs/points/latest/download?path=%2Fno%2Fsuch", Some(&o), None)
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST, "{}", missing.text);
    assert!(
        missing.body["message"].as_str().unwrap_or_default().contains("/no/such is not in the point"),
        "{}",
        missing.text
    );
    // a Reader may see points, not take their data away; a scoped token
    // sees its own item only
    let reader =
        f.call("GET", "/api/v1/vaults/{vault}/items/docs/points/latest/download", Some(f.token("Reader")), None).await;
    assert_eq!(reader.status, StatusCode::FORBIDDEN);
    let scoped = f
        .call("GET", "/api/v1/vaults/{vault}/items/other/points/latest/download", Some(f.token("Operator/docs")), None)
        .await;
    assert_eq!(scoped.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_says_where_it_may_write_and_what_it_wrote() {
    let f = common::fixture();
    assert_eq!(backup(&f, "docs").await["state"], "Completed");
    let o = f.token("Operator").to_string();
    let opts = f.call("GET", "/api/v1/vaults/{vault}/items/docs/restore", Some(&o), None).await;
    assert_eq!(opts.status, StatusCode::OK, "{}", opts.text);
    assert_eq!(opts.body["roots"], json!([f.restores.display().to_string()]));
    assert_eq!(opts.body["target"], "folder");
    let points = f.call("GET", "/api/v1/vaults/{vault}/items/docs/points", Some(&o), None).await;
    let point = points.body["points"][0]["point"]["id"].as_str().expect("point").to_string();
    let target = f.restores.join("r1");
    let body = json!({"point": point, "target": target.display().to_string(), "paths": []});
    let r = f.call("POST", "/api/v1/vaults/{vault}/items/docs/restore", Some(&o), Some(body)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let job = f.wait_job(r.body["id"].as_str().expect("id"), &o).await;
    assert_eq!(job["state"], "Completed", "{job}");
    let details = job["details"][0].as_str().unwrap_or_default();
    assert!(
        details.contains(&target.display().to_string()) && details.contains("2 files"),
        "the job names its target: {job}"
    );
    // the regression: a finished restore showed "Files 0"
    assert_eq!(job["progress"]["files"], 2, "{job}");

    // a disk's target is an image file, not a folder (a disk restored into
    // a field labelled as a folder wrote a file named `disk-whole`)
    let image = f.dir.path().join("disk.img");
    std::fs::write(&image, vec![7u8; 1 << 20]).expect("image");
    svc::add_disk_item(&f.vault, "disk1", &image, None).expect("disk item");
    let opts = f.call("GET", "/api/v1/vaults/{vault}/items/disk1/restore", Some(&o), None).await;
    assert_eq!(opts.body["target"], "image file", "{}", opts.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_count_backups_per_item_and_export_csv() {
    let f = common::fixture();
    assert_eq!(backup(&f, "docs").await["state"], "Completed");
    let docs = f.dir.path().join("docs");
    std::fs::rename(&docs, f.dir.path().join("away")).expect("move");
    assert_eq!(backup(&f, "docs").await["state"], "Failed");
    let r = f.token("Reader").to_string();
    let rep = f.call("GET", "/api/v1/vaults/{vault}/reports?days=7", Some(&r), None).await;
    assert_eq!(rep.status, StatusCode::OK, "{}", rep.text);
    let docs_row =
        rep.body["items"].as_array().expect("items").iter().find(|i| i["item"] == "docs").expect("docs").clone();
    assert_eq!(
        (docs_row["backups"].as_u64(), docs_row["succeeded"].as_u64(), docs_row["failed"].as_u64()),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(docs_row["success_rate"], 0.5);
    assert!(docs_row["stored_added_bytes"].as_u64().unwrap_or(0) > 0, "{docs_row}");
    let csv = f.call("GET", "/api/v1/vaults/{vault}/reports?days=7&format=csv", Some(&r), None).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.headers["content-type"].to_str().unwrap_or_default().starts_with("text/csv"));
    let lines: Vec<&str> = csv.text.lines().collect();
    assert!(lines[0].starts_with("item,backups,succeeded,failed"), "{}", csv.text);
    assert!(lines.iter().any(|l| l.starts_with("docs,2,1,1,0,0.500,")), "{}", csv.text);
    let bad = f.call("GET", "/api/v1/vaults/{vault}/reports?days=5", Some(&r), None).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    // a token scoped to docs reports docs alone
    let scoped = f.call("GET", "/api/v1/vaults/{vault}/reports", Some(f.token("Reader/docs")), None).await;
    assert_eq!(scoped.body["items"].as_array().map(Vec::len), Some(1), "{}", scoped.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_center_shows_what_each_token_sees_and_nothing_else() {
    let f = common::fixture();
    assert_eq!(backup(&f, "docs").await["state"], "Completed");
    let all = f.call("GET", "/api/v1/center", Some(f.token("Reader")), None).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.text);
    assert_eq!(all.body["vaults"], json!([f.name]));
    assert_eq!(all.body["items"].as_array().map(Vec::len), Some(2), "{}", all.text);
    assert_eq!(all.body["items"][0]["vault"], f.name.as_str());
    assert!(!all.body["jobs"].as_array().expect("jobs").is_empty());
    let scoped = f.call("GET", "/api/v1/center", Some(f.token("Reader/docs")), None).await;
    let names: Vec<&str> =
        scoped.body["items"].as_array().expect("items").iter().filter_map(|i| i["name"].as_str()).collect();
    assert_eq!(names, ["docs"], "{}", scoped.text);
    let guard = f.call("GET", "/api/v1/center", Some(f.token("SecurityAdmin")), None).await;
    assert_eq!(guard.status, StatusCode::FORBIDDEN, "the guard's token sees its requests only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_changes_policy_and_is_checked_before_it_is_added() {
    let f = common::fixture();
    let c = f.token("Contributor").to_string();
    let p = json!({"name": "hourly", "frequency": "hourly", "every_hours": 6, "window_start": "06:00", "window_hours": 18, "daily_keep": 7});
    let made = f.call("POST", "/api/v1/vaults/{vault}/policies", Some(&c), Some(p)).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    assert_eq!(made.body["schedule"]["times"], json!(["06:00", "12:00", "18:00"]));
    let on = f
        .call(
            "POST",
            "/api/v1/vaults/{vault}/items/docs/protection",
            Some(&c),
            Some(json!({"policy": "DefaultPolicy"})),
        )
        .await;
    assert_eq!(on.status, StatusCode::OK, "{}", on.text);
    let changed = f
        .call("PUT", "/api/v1/vaults/{vault}/items/docs/protection", Some(&c), Some(json!({"policy": "hourly"})))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    let item = f.call("GET", "/api/v1/vaults/{vault}/items/docs", Some(&c), None).await;
    assert_eq!(item.body["policy"], "hourly", "{}", item.text);
    let again = f
        .call("PUT", "/api/v1/vaults/{vault}/items/docs/protection", Some(&c), Some(json!({"policy": "hourly"})))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);

    // the wizard's check: nothing is added, a wrong path is named
    let missing =
        json!({"kind": "files", "name": "new-item", "paths": [f.dir.path().join("nope").display().to_string()]});
    let r = f.call("POST", "/api/v1/vaults/{vault}/items?dry_run=true", Some(&c), Some(missing)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["field"], "paths", "{}", r.text);
    let relative = json!({"kind": "files", "name": "new-item", "paths": ["docs"]});
    let r = f.call("POST", "/api/v1/vaults/{vault}/items?dry_run=true", Some(&c), Some(relative)).await;
    assert!(r.body["message"].as_str().unwrap_or_default().contains("not an absolute path"), "{}", r.text);
    let taken = json!({"kind": "files", "name": "docs", "paths": [f.dir.path().display().to_string()]});
    let r = f.call("POST", "/api/v1/vaults/{vault}/items?dry_run=true", Some(&c), Some(taken)).await;
    assert_eq!(r.body["field"], "name", "{}", r.text);
    let good =
        json!({"kind": "files", "name": "new-item", "paths": [f.dir.path().join("other").display().to_string()]});
    let r = f.call("POST", "/api/v1/vaults/{vault}/items?dry_run=true", Some(&c), Some(good)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let items = f.call("GET", "/api/v1/vaults/{vault}/items", Some(&c), None).await;
    assert_eq!(items.body.as_array().map(Vec::len), Some(2), "a dry run adds nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_few_at_once_per_token_and_a_repeated_path_is_taken_once() {
    use tower::ServiceExt;
    let f = common::fixture_with(|c| c.max_downloads_per_token = 1);
    // larger than what the stream buffers, so a download not read holds on
    std::fs::write(f.dir.path().join("docs/big.bin"), random_bytes(24 << 20)).expect("write");
    assert_eq!(backup(&f, "docs").await["state"], "Completed");
    let o = f.token("Operator").to_string();
    let url = f.path("/api/v1/vaults/{vault}/items/docs/points/latest/download");
    let held = f
        .router
        .clone()
        .oneshot(
            axum::http::Request::builder()
                .uri(&url)
                .header("authorization", format!("Bearer {o}"))
                .body(axum::body::Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(held.status(), StatusCode::OK);
    let second = f.call("GET", "/api/v1/vaults/{vault}/items/docs/points/latest/download", Some(&o), None).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS, "{}", second.text);
    assert!(second.headers.contains_key("retry-after"));
    // another token is not held up by this one's
    let c = f.token("Contributor").to_string();
    let other = f.call("GET", "/api/v1/vaults/{vault}/items/docs/points/latest/download", Some(&c), None).await;
    assert_eq!(other.status, StatusCode::OK);
    drop(held);
    let mut again = StatusCode::TOO_MANY_REQUESTS;
    for _ in 0..100 {
        let url = "/api/v1/vaults/{vault}/items/docs/points/latest/download?path=%2Fnone";
        again = f.call("GET", url, Some(&o), None).await.status;
        if again != StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(again, StatusCode::BAD_REQUEST, "the place is given back when the download is dropped");
    // the same path five times: one copy in the archive
    let a = f.dir.path().join("docs/a.txt").display().to_string().replace('/', "%2F");
    let url = format!(
        "/api/v1/vaults/{{vault}}/items/docs/points/latest/download?{}",
        vec![format!("path={a}"); 5].join("&")
    );
    let r = f.call("GET", &url, Some(&o), None).await;
    assert_eq!(untar(&r.bytes).len(), 1);
    assert!(r.bytes.len() < 16 << 10, "{} bytes for one small file", r.bytes.len());
}

/// `len` random bytes (they do not compress: the archive stays large).
fn random_bytes(len: u64) -> Vec<u8> {
    let mut out = Vec::new();
    std::fs::File::open("/dev/urandom").expect("urandom").take(len).read_to_end(&mut out).expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_named_as_a_disk_is_refused_at_once_not_waited_on() {
    let f = common::fixture();
    let fifo = f.dir.path().join("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let c = f.token("Contributor").to_string();
    let body = json!({"kind": "disk", "name": "pipe", "path": fifo.display().to_string()});
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        f.call("POST", "/api/v1/vaults/{vault}/items?dry_run=true", Some(&c), Some(body)),
    )
    .await
    .expect("answered at once, not after a writer came");
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.text.contains("neither a disk image file nor a block device"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_an_alert_was_not_delivered_is_for_contributors() {
    let f = common::fixture();
    let c = f.token("Contributor").to_string();
    let hook = json!({"webhook": "http://127.0.0.1:9/hook"});
    let set = f.call("PATCH", "/api/v1/vaults/{vault}/settings", Some(&c), Some(hook)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    std::fs::rename(f.dir.path().join("docs"), f.dir.path().join("away")).expect("move");
    assert_eq!(backup(&f, "docs").await["state"], "Failed");
    // the alert is written after the job's last record, once its webhook was tried
    let mut by_contributor = f.call("GET", "/api/v1/vaults/{vault}/alerts", Some(&c), None).await;
    for _ in 0..100 {
        if by_contributor.body[0]["attempts"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        by_contributor = f.call("GET", "/api/v1/vaults/{vault}/alerts", Some(&c), None).await;
    }
    assert!(
        by_contributor.body[0]["last_error"].as_str().unwrap_or_default().contains("127.0.0.1:9"),
        "{}",
        by_contributor.text
    );
    let by_reader = f.call("GET", "/api/v1/vaults/{vault}/alerts", Some(f.token("Reader")), None).await;
    assert!(!by_reader.text.contains("127.0.0.1:9"), "{}", by_reader.text);
    assert!(by_reader.body[0]["last_error"].as_str().unwrap_or_default().contains("a Contributor sees why"));
}

/// The regression: the portal cleared a vault's webhook by saving an empty
/// field (`"webhook": null`), which was read as "leave it as it is".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_cleared_by_null_and_kept_when_left_out() {
    let f = common::fixture();
    let c = f.token("Contributor").to_string();
    let webhook = |body: serde_json::Value| {
        let c = c.clone();
        let f = &f;
        async move {
            let r = f.call("PATCH", "/api/v1/vaults/{vault}/settings", Some(&c), Some(body)).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            f.call("GET", "/api/v1/vaults/{vault}", Some(&c), None).await.body["webhook"].clone()
        }
    };
    assert_eq!(webhook(json!({"webhook": "https://alerts.example/hook"})).await, "https://alerts.example/hook");
    assert_eq!(webhook(json!({"soft_delete_days": 20})).await, "https://alerts.example/hook", "left out: kept");
    // a Reader or an Operator learns that one is set, not its URL (it often
    // holds the hook's secret)
    for role in ["Reader", "Operator"] {
        let seen = f.call("GET", "/api/v1/vaults/{vault}", Some(f.token(role)), None).await;
        let shown = seen.body["webhook"].as_str().unwrap_or_default().to_string();
        assert!(shown.starts_with("(set") && !shown.contains("alerts.example"), "{role}: {}", seen.text);
    }
    assert!(webhook(json!({"webhook": null})).await.is_null(), "null: no webhook");
}

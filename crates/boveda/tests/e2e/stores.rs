//! Vaults in object stores, end to end with the real binary: Azurite (Azure
//! Blob) and the moto S3 server, started by `scripts/test.sh`. Backup,
//! restore, check and prune work as on a local folder; transient faults are
//! retried; a store that keeps failing fails the job naming its error and
//! leaves the vault valid; a missing container, wrong credentials and an
//! unreachable endpoint each get one clear line.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{Env, StoreKind, assert_same_tree, make_full_tree, noise};

fn restored_root(env: &Env, target: &str, src: &Path) -> PathBuf {
    env.path(target).join(src.strip_prefix("/").expect("absolute"))
}

/// Backup, a second backup after changes, restore of both, check with data,
/// prune of an expired point.
fn backup_restore_check_and_prune(kind: StoreKind) {
    let env = Env::on(kind);
    env.create_vault();
    let src = env.path("src");
    make_full_tree(&src);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1)).to_string();
    let first = env.ok(&["--output", "json", "protection", "backup-now", "t", "--retain-until", &soon]);
    let first: serde_json::Value = serde_json::from_str(&first).expect("json");
    let target = env.path("r1");
    env.ok(&["restore", "t", "--point", first["id"].as_str().expect("id"), "--target", target.to_str().expect("utf8")]);
    assert_same_tree(&src, &restored_root(&env, "r1", &src));

    fs::write(src.join("docs/readme.txt"), b"changed").expect("write");
    fs::write(src.join("new.bin"), noise(9, 2_000_000)).expect("write");
    env.backup("t", 0);
    env.ok(&["restore", "t", "--target", env.path("r2").to_str().expect("utf8")]);
    assert_same_tree(&src, &restored_root(&env, "r2", &src));

    std::thread::sleep(std::time::Duration::from_millis(1_100));
    let plan = env.ok(&["--output", "json", "prune", "--safety-margin", "0s"]);
    let plan: serde_json::Value = serde_json::from_str(&plan).expect("json");
    assert_eq!(plan["expired"].as_array().expect("expired").len(), 1, "{plan}");
    let points: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["--output", "json", "recoverypoint", "list", "t"])).expect("json");
    assert_eq!(points.len(), 1);
    let report = env.ok(&["vault", "check", "--read-data"]);
    assert!(report.contains("no problems found"), "{report}");
    let summary: serde_json::Value =
        serde_json::from_str(&env.ok(&["--output", "json", "vault", "show"])).expect("json");
    assert_eq!(summary["store"].as_str(), Some(env.store.as_str()));
    assert!(summary["stored_bytes"].as_u64().expect("bytes") > 2_000_000, "{summary}");
}

on_every_store!(backup_restore_check_and_prune, faults_are_retried);

/// A tree of `files` small and a few large files.
fn many_files(root: &Path, files: usize) {
    for i in 0..files {
        let dir = root.join(format!("d{:02}", i % 40));
        fs::create_dir_all(&dir).expect("mkdir");
        let len = if i % 500 == 0 { 3_000_000 } else { 200 + (i * 37) % 9_000 };
        fs::write(dir.join(format!("f{i:05}")), noise(i as u64, len)).expect("write");
    }
}

/// With 5% of store calls failing at random (and a few answered "slow
/// down"), a backup of thousands of files completes, restores byte-exactly,
/// and the vault checks clean.
fn faults_are_retried(kind: StoreKind) {
    let env = Env::on(kind);
    env.create_vault();
    let src = env.path("src");
    many_files(&src, 3_000);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    let faulty = |args: &[&str], seed: u32| {
        let out = env
            .cmd(args)
            .env("BOVEDA_STORE_FAULTS", format!("fail=0.05,throttle=0.01,throttle-wait=20ms,lost=0.02,seed={seed}"))
            .output()
            .expect("run");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    faulty(&["protection", "backup-now", "t"], 1);
    faulty(&["restore", "t", "--target", env.path("r").to_str().expect("utf8")], 2);
    assert_same_tree(&src, &restored_root(&env, "r", &src));
    faulty(&["vault", "check", "--read-data"], 3);
    let report = env.ok(&["vault", "check", "--read-data"]);
    assert!(report.contains("no problems found"), "{report}");
}

/// A store that fails every call: the backup's job fails naming the
/// store's error, and the vault stays valid for the next backup.
#[test]
fn a_store_that_keeps_failing_fails_the_job_and_the_vault_stays_valid() {
    let env = Env::on(StoreKind::Azurite);
    env.create_vault();
    env.ok(&["vault", "update", "--store-retries", "3", "--store-retry-max-wait", "1s"]);
    let src = env.path("src");
    many_files(&src, 200);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    let out = env.cmd(&["protection", "backup-now", "t"]).env("BOVEDA_STORE_FAULTS", "lost=1.0").output().expect("run");
    // every write lands but its answer is lost: the retries find their own
    // bytes, so the backup completes
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // the store fails every call on data (reading the parent's trees,
    // uploading packs) and answers the rest
    fs::write(src.join("d01/f00001"), noise(77, 300_000)).expect("write");
    let out = env.cmd(&["protection", "backup-now", "t"]).env("BOVEDA_STORE_FAULTS", "fail=1.0,only=packs/").output();
    let out = out.expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("503 Service Unavailable") && stderr.lines().count() <= 3, "{stderr}");
    let jobs: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["--output", "json", "job", "list"])).expect("json");
    assert!(
        jobs.iter().any(|j| j["state"] == "Failed" && j["error"].as_str().is_some_and(|e| e.contains("503"))),
        "{jobs:?}"
    );
    fs::write(src.join("d00/f00000"), b"after the outage").expect("write");
    env.backup("t", 0);
    env.ok(&["restore", "t", "--target", env.path("r").to_str().expect("utf8")]);
    assert_same_tree(&src, &restored_root(&env, "r", &src));
    let report = env.ok(&["vault", "check", "--read-data"]);
    assert!(report.contains("no problems found"), "{report}");
}

/// One clear line for each way of not reaching a vault.
#[test]
fn unreachable_or_refused_stores_get_one_clear_line() {
    let env = Env::on(StoreKind::Azurite);
    let line = |mut cmd: std::process::Command| {
        let out = cmd.output().expect("run");
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        stderr
    };
    let missing = line(env.cmd(&["vault", "create", "vx", "--store", &env.store, "--insecure-fast-kdf"]));
    assert!(missing.contains("not found") && missing.contains("container"), "{missing}");
    env.create_vault();
    let conn = std::env::var("AZURE_STORAGE_CONNECTION_STRING").expect("set by scripts/test.sh");
    let wrong_key = conn.replace("AccountKey=Eby8", "AccountKey=Xby8");
    let denied = line({
        let mut c = env.cmd(&["vault", "show"]);
        c.env("AZURE_STORAGE_CONNECTION_STRING", wrong_key);
        c
    });
    assert!(denied.contains("permission denied") && denied.contains("AuthorizationFailure"), "{denied}");
    let endpoint = std::env::var("BOVEDA_TEST_AZURITE").expect("set");
    let closed = line({
        let mut c = env.cmd(&["vault", "show"]);
        c.env("AZURE_STORAGE_CONNECTION_STRING", conn.replace(&endpoint, "http://127.0.0.1:9/devstoreaccount1"));
        c
    });
    assert!(closed.contains("connection refused"), "{closed}");
    let none = line({
        let mut c = env.cmd(&["vault", "show"]);
        c.env_remove("AZURE_STORAGE_CONNECTION_STRING").env_remove("AZURE_STORAGE_ACCOUNT");
        c
    });
    assert!(none.contains("AZURE_STORAGE_CONNECTION_STRING"), "{none}");
    let s3 = Env::on(StoreKind::S3);
    let no_bucket = line(s3.cmd(&["vault", "create", "vx", "--store", &s3.store, "--insecure-fast-kdf"]));
    assert!(no_bucket.contains("bucket") && no_bucket.contains("not found"), "{no_bucket}");
}

/// The store requests a command made, from `BOVEDA_STORE_METRICS`'s line:
/// (requests in all, whole-object gets).
fn requests(env: &Env, args: &[&str]) -> (u64, u64) {
    let out = env.cmd(args).env("BOVEDA_STORE_METRICS", "1").output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    let line = stderr.lines().rfind(|l| l.starts_with("boveda: store: ")).expect("metrics line");
    let number_after = |label: &str| -> u64 {
        let rest = &line[line.find(label).expect(label) + label.len()..];
        rest.trim_start().split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).expect("count")
    };
    (number_after("boveda: store: "), number_after("(get "))
}

/// On an object store, a command fetches only the immutable objects it has
/// not cached yet; a damaged or stale cached copy is detected and fetched
/// again; deleting the cache loses nothing.
#[test]
fn the_local_cache_spares_requests_and_is_only_a_cache() {
    let env = Env::on(StoreKind::S3);
    env.create_vault();
    let src = env.path("src");
    many_files(&src, 300);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    for round in 0..5 {
        fs::write(src.join("d00/f00000"), noise(round, 50_000)).expect("write");
        env.backup("t", 0);
    }
    let list = ["recoverypoint", "list", "t"];
    let cache = env.path("cache");
    fs::remove_dir_all(&cache).expect("start cold");
    let (cold_total, cold_gets) = requests(&env, &list);
    let (warm_total, warm_gets) = requests(&env, &list);
    assert!(warm_gets + 5 <= cold_gets, "manifests come from the cache: {cold_gets} then {warm_gets} gets");
    assert!(warm_total < cold_total);

    // a restore caches the index objects too
    env.ok(&["restore", "t", "--target", env.path("r0").to_str().expect("utf8")]);
    // damage every cached copy: each is refused, fetched again and replaced
    let mut damaged = 0;
    let mut stack = vec![cache.clone()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).expect("read cache") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let mut bytes = fs::read(&p).expect("read");
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x55;
                fs::write(&p, bytes).expect("write");
                damaged += 1;
            }
        }
    }
    assert!(damaged > 10, "the cache held manifests, index objects and catalog revisions: {damaged}");
    let out = env.ok(&list);
    assert_eq!(out.lines().count(), 6, "{out}");
    let (_, refetched) = requests(&env, &["recoverypoint", "list", "t"]);
    assert_eq!(refetched, warm_gets, "the damaged copies were replaced by good ones");
    env.ok(&["restore", "t", "--target", env.path("r1").to_str().expect("utf8")]);
    assert_same_tree(&src, &restored_root(&env, "r1", &src));

    fs::remove_dir_all(&cache).expect("delete the cache");
    env.ok(&["restore", "t", "--target", env.path("r2").to_str().expect("utf8")]);
    assert_same_tree(&src, &restored_root(&env, "r2", &src));
    let report = env.ok(&["vault", "check", "--read-data"]);
    assert!(report.contains("no problems found"), "{report}");
}

/// Two prunes at once: the second finds the first's lease and stops with
/// one line naming it; once the first ends, a prune runs again.
fn one_prune_at_a_time(kind: StoreKind) {
    let env = Env::on(kind);
    env.create_vault();
    let src = env.path("src");
    many_files(&src, 50);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    env.backup("t", 0);
    let slow = env
        .cmd(&["prune", "--safety-margin", "0s"])
        .env("BOVEDA_STORE_FAULTS", "latency=40ms")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(1_500));
    let out = env.run(&["prune", "--safety-margin", "0s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another prune is running") && stderr.lines().count() == 1, "{stderr}");
    let first = slow.wait_with_output().expect("wait");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    env.ok(&["prune", "--safety-margin", "0s"]);
}

on_every_store!(one_prune_at_a_time);

fn index_objects(env: &Env) -> usize {
    let report = env.ok(&["vault", "check"]);
    let at = report.find(" index object(s)").expect("index count");
    report[..at].rsplit(' ').next().and_then(|n| n.parse().ok()).expect("number")
}

/// Every backup adds an index object per pack; prune merges the small ones,
/// and a later sweep rewrites a merged object without the packs it deletes.
/// Every point restores byte-exactly throughout and the vault checks clean.
fn prune_merges_small_index_objects(kind: StoreKind) {
    let env = Env::on(kind);
    env.create_vault();
    let (kept, brief) = (env.path("kept"), env.path("brief"));
    fs::create_dir_all(&kept).expect("mkdir");
    fs::create_dir_all(&brief).expect("mkdir");
    env.ok(&["item", "add", "files", "kept", "--path", kept.to_str().expect("utf8")]);
    env.ok(&["item", "add", "files", "brief", "--path", brief.to_str().expect("utf8")]);
    let mut points = Vec::new();
    for round in 0..12u64 {
        fs::write(kept.join(format!("f{round}")), noise(round, 300_000)).expect("write");
        fs::write(brief.join("only-here"), noise(1_000 + round, 1_200_000)).expect("write");
        let p = env.backup("kept", 0);
        points.push((p["id"].as_str().expect("id").to_string(), round));
        let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2)).to_string();
        env.ok(&["protection", "backup-now", "brief", "--retain-until", &soon]);
    }
    let before = index_objects(&env);
    assert!(before >= 36, "a data and a tree pack per backup: {before}");
    env.ok(&["prune", "--safety-margin", "0s"]);
    let merged = index_objects(&env);
    assert!(merged <= 4, "merged from {before} to {merged}");
    // the brief points expire: their packs are marked, then swept out of
    // the merged index objects
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    let mut swept = 0;
    for _ in 0..2 {
        let plan = env.ok(&["--output", "json", "prune", "--safety-margin", "0s"]);
        let plan: serde_json::Value = serde_json::from_str(&plan).expect("json");
        swept += plan["packs"]["sweep"].as_array().expect("sweep").len();
    }
    assert!(swept > 0, "the brief points' packs were swept");
    for (id, round) in &points {
        let target = env.path(&format!("r{round}"));
        env.ok(&["restore", "kept", "--point", id, "--target", target.to_str().expect("utf8")]);
        let restored = restored_root(&env, &format!("r{round}"), &kept);
        for r in 0..=*round {
            let name = format!("f{r}");
            assert_eq!(fs::read(restored.join(&name)).expect("read"), noise(r, 300_000), "point {round}, {name}");
        }
    }
    let report = env.ok(&["vault", "check", "--read-data"]);
    assert!(report.contains("no problems found"), "{report}");
}

on_every_store!(prune_merges_small_index_objects);

//! Geo-redundant vaults end to end with the real binary: every backup is
//! followed by a replication pass; the secondary holds a vault that lists
//! the same points, checks clean with data, and restores byte-exactly when
//! the primary is gone; a prune's deletions reach it.

use crate::common;

use std::path::Path;

use common::{Env, StoreKind, assert_same_tree, kill_when, make_full_tree, unique, walk_files};

fn url(kind: StoreKind, env: &Env, tag: &str) -> String {
    match kind {
        StoreKind::Local => env.path(tag).display().to_string(),
        StoreKind::Azurite => format!("azblob://{}/vault", unique(tag)),
        StoreKind::S3 => format!("s3://{}/vault", unique(tag)),
    }
}

fn behind(env: &Env) -> (u64, u64) {
    let s: serde_json::Value =
        serde_json::from_str(&env.ok(&["--output", "json", "vault", "replication", "status"])).expect("json");
    (s["objects_behind"].as_u64().expect("n"), s["to_delete"].as_u64().expect("n"))
}

fn grs_vault_survives_its_primary(primary: StoreKind, secondary: StoreKind) {
    let env = Env::new();
    let (p, s) = (url(primary, &env, "primary"), url(secondary, &env, "secondary"));
    let mut args = vec!["vault", "create", "geo", "--store", &p, "--redundancy", "grs", "--secondary", &s];
    args.extend(["--insecure-fast-kdf", "--pack-size-mib", "1", "--create-container"]);
    env.ok(&args);
    assert_eq!(behind(&env), (0, 0), "the secondary holds a vault from the start");

    let src = env.path("src");
    make_full_tree(&src);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    let point = env.backup("t", 0);
    assert_eq!(behind(&env), (0, 0), "the backup was replicated");
    let listed = |secondary: bool| -> String {
        let mut a = vec!["--output", "json", "recoverypoint", "list", "t"];
        if secondary {
            a.push("--from-secondary");
        }
        let v: serde_json::Value = serde_json::from_str(&env.ok(&a)).expect("json");
        v.as_array().expect("list").iter().map(|p| p["point"]["id"].as_str().unwrap_or_default().to_string()).collect()
    };
    assert_eq!(listed(true), listed(false));
    assert!(listed(true).contains(point["id"].as_str().expect("id")));
    env.ok(&["vault", "check", "--secondary", "--read-data"]);

    // a point that expires: prune deletes it from the primary, then the
    // pass after the prune from the secondary
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1)).to_string();
    let brief = env.ok(&["--output", "json", "protection", "backup-now", "t", "--retain-until", &soon]);
    let brief: serde_json::Value = serde_json::from_str(&brief).expect("json");
    let brief = brief["id"].as_str().expect("id").to_string();
    assert!(listed(true).contains(&brief), "replicated after the backup");
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    env.ok(&["prune"]);
    assert!(!listed(false).contains(&brief) && !listed(true).contains(&brief), "gone from both sides");
    assert_eq!(listed(true), listed(false));
    assert_eq!(behind(&env), (0, 0));

    // the primary gone: restore from the secondary, byte for byte
    if primary == StoreKind::Local {
        std::fs::rename(&p, env.path("primary-away")).expect("move the primary away");
        let err = env.fails(&["restore", "t", "--target", env.path("r0").to_str().expect("utf8")]);
        assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    }
    let target = env.path("r1");
    env.ok(&["restore", "t", "--from-secondary", "--target", target.to_str().expect("utf8")]);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").expect("absolute")));
    if primary == StoreKind::Local {
        std::fs::rename(env.path("primary-away"), &p).expect("bring the primary back");
    }
}

#[test]
fn folder_to_folder() {
    grs_vault_survives_its_primary(StoreKind::Local, StoreKind::Local);
}

#[test]
fn azurite_to_s3() {
    grs_vault_survives_its_primary(StoreKind::Azurite, StoreKind::S3);
}

#[test]
fn s3_to_azurite() {
    grs_vault_survives_its_primary(StoreKind::S3, StoreKind::Azurite);
}

/// `vault create` refuses a secondary that already holds objects.
#[test]
fn a_secondary_that_is_not_empty_is_refused() {
    let env = Env::new();
    let s = env.path("secondary");
    std::fs::create_dir_all(s.join("packs")).expect("mkdir");
    std::fs::write(s.join("packs/x"), b"someone else's").expect("write");
    let p = env.path("primary");
    let err = env.fails(&[
        "vault",
        "create",
        "geo",
        "--store",
        p.to_str().expect("utf8"),
        "--redundancy",
        "grs",
        "--secondary",
        s.to_str().expect("utf8"),
        "--insecure-fast-kdf",
    ]);
    assert!(err.contains("not empty"), "{err}");
    assert!(!Path::new(&p).join("config").exists(), "no vault was made");
}

fn status(env: &Env) -> serde_json::Value {
    serde_json::from_str(&env.ok(&["--output", "json", "vault", "replication", "status"])).expect("json")
}

/// Files of pseudo-random bytes: `n` of `mib` MiB each (1 MiB packs, so
/// a backup writes many of them).
fn noisy_tree(env: &Env, n: u64, mib: usize) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    for i in 0..n {
        std::fs::write(src.join(format!("f{i}")), common::noise(i + 1, mib << 20)).expect("write");
    }
    src
}

fn create_grs(env: &Env, p: &str, s: &str) {
    let mut args = vec!["vault", "create", "geo", "--store", p, "--redundancy", "grs", "--secondary", s];
    args.extend(["--insecure-fast-kdf", "--pack-size-mib", "1", "--create-container"]);
    env.ok(&args);
}

fn files_below(dir: &Path) -> usize {
    walk_files(dir).len()
}

/// A backup killed with SIGKILL mid-way leaves a pending marker; the next
/// command of any kind runs the pass it owed, and the secondary then holds
/// all the primary holds, checks clean with data, and lists the same points.
#[test]
fn a_grs_backup_killed_mid_way_is_replicated_by_the_next_command() {
    let env = Env::new();
    let p = env.path("primary");
    create_grs(&env, p.to_str().expect("utf8"), &url(StoreKind::S3, &env, "secondary"));
    let src = noisy_tree(&env, 6, 4);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    env.ok(&["vault", "update", "--replicate-during-backup", "true"]);
    let mut child = env.cmd(&["protection", "backup-now", "t"]).spawn().expect("spawn");
    let killed = kill_when(&mut child, || files_below(&p.join("packs")) >= 4);
    assert!(killed, "the backup ended before it could be killed; the source is too small for this machine");
    assert!(files_below(&p.join("replication/pending")) > 0, "the killed writer's marker is left");
    assert!(status(&env)["pending_since"].is_string(), "status shows writes waiting for a pass");

    env.ok(&["job", "list"]);
    let s = status(&env);
    assert_eq!((s["objects_behind"].as_u64(), s["to_delete"].as_u64()), (Some(0), Some(0)), "{s}");
    assert!(s["pending_since"].is_null(), "the pass cleared the dead writer's marker: {s}");
    env.ok(&["vault", "check", "--secondary", "--read-data"]);

    let point = env.backup("t", 0);
    assert_eq!(behind(&env), (0, 0));
    let on_secondary = env.ok(&["--output", "json", "recoverypoint", "list", "t", "--from-secondary"]);
    assert!(on_secondary.contains(point["id"].as_str().expect("id")));
    let target = env.path("restored");
    env.ok(&["restore", "t", "--from-secondary", "--target", target.to_str().expect("utf8")]);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").expect("absolute")));
}

/// The secondary away for a while (its folder moved, as a disk that is
/// not mounted): backups go on, the lag grows and is shown, an alert is
/// raised once the lag is older than the threshold, points are marked not
/// replicated; back, the catch-up is killed mid-way, and the next command
/// finishes it with nothing missing.
#[test]
fn a_secondary_away_lags_alerts_and_catches_up_after_a_killed_catch_up() {
    let env = Env::new();
    let s = env.path("secondary");
    create_grs(&env, &url(StoreKind::Azurite, &env, "primary"), s.to_str().expect("utf8"));
    let src = noisy_tree(&env, 4, 4);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    env.backup("t", 0);
    assert_eq!(behind(&env), (0, 0));

    let away = env.path("secondary-away");
    std::fs::rename(&s, &away).expect("take the secondary away");
    let out = env.run(&["protection", "backup-now", "t"]);
    assert_eq!(out.status.code(), Some(0), "backups go on without the secondary");
    let warning = String::from_utf8_lossy(&out.stderr);
    assert!(warning.contains("does not hold this vault"), "the failed pass is named: {warning}");
    assert!(!s.exists(), "nothing was written where the secondary should be");
    let err = env.fails(&["recoverypoint", "list", "t", "--from-secondary"]);
    assert_eq!(err.lines().count(), 1, "the secondary is away, said in one line: {err}");
    let points: serde_json::Value =
        serde_json::from_str(&env.ok(&["--output", "json", "recoverypoint", "list", "t"])).expect("json");
    let point = points.as_array().and_then(|a| a.last()).map(|e| e["point"].clone()).expect("the new point");
    let first = status(&env);
    std::fs::write(src.join("more"), common::noise(99, 3 << 20)).expect("write");
    env.backup("t", 0);
    let second = status(&env);
    assert!(
        second["objects_behind"].as_u64() > first["objects_behind"].as_u64(),
        "the lag grows: {first} then {second}"
    );
    assert!(second["last_pass"]["error"].as_str().is_some_and(|e| e.contains("does not hold this vault")));
    assert!(second["pending_since"].is_string());
    let listed = env.ok(&["recoverypoint", "list", "t"]);
    assert!(listed.contains("SECONDARY"), "{listed}");
    let marks: serde_json::Value =
        serde_json::from_str(&env.ok(&["--output", "json", "recoverypoint", "list", "t"])).expect("json");
    let mark = marks
        .as_array()
        .expect("list")
        .iter()
        .find(|e| e["point"]["id"] == point["id"])
        .map(|e| e["on_secondary"].clone());
    assert_eq!(mark, Some(serde_json::Value::Null), "unknown while the secondary does not answer");
    assert!(env.ok(&["alert", "list"]).lines().all(|l| !l.contains("behind")), "no alert before the threshold");

    // two hours later, still away: one alert
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2)).to_string();
    let run_later = |args: &[&str]| env.cmd(args).env("BOVEDA_FAKE_NOW", &later).output().expect("run");
    let out = run_later(&["job", "list"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("alert: the secondary store is"), "{out:?}");
    run_later(&["job", "list"]);
    let alerts: serde_json::Value =
        serde_json::from_str(&env.ok(&["--output", "json", "alert", "list"])).expect("json");
    let lag_alerts: Vec<_> =
        alerts.as_array().expect("list").iter().filter(|a| a["operation"] == "Replication").collect();
    assert_eq!(lag_alerts.len(), 1, "one alert per episode of lag: {alerts}");
    assert_eq!(lag_alerts[0]["severity"], "Warning");
    let summary = env.ok(&["vault", "show"]);
    assert!(summary.contains("behind since"), "vault show tells the lag: {summary}");

    // back: a catch-up killed mid-way, then any command finishes it
    std::fs::rename(&away, &s).expect("bring the secondary back");
    let before = files_below(&s.join("packs"));
    let mut child =
        env.cmd(&["vault", "replication", "run"]).env("BOVEDA_STORE_FAULTS", "latency=40ms").spawn().expect("spawn");
    let killed = kill_when(&mut child, || files_below(&s.join("packs")) >= before + 2);
    assert!(killed, "the catch-up ended before it could be killed");
    assert!(behind(&env).0 > 0, "the kill left work to do");
    env.ok(&["item", "list"]);
    assert_eq!(behind(&env), (0, 0), "the next command caught up");
    let s_now = status(&env);
    assert!(s_now["pending_since"].is_null() && s_now["last_pass"]["error"].is_null(), "{s_now}");
    env.ok(&["vault", "check", "--secondary", "--read-data"]);
    let marks: serde_json::Value =
        serde_json::from_str(&env.ok(&["--output", "json", "recoverypoint", "list", "t"])).expect("json");
    assert!(marks.as_array().expect("list").iter().all(|e| e["on_secondary"] == true), "{marks}");
}

/// The primary made unreachable in the middle of a restore: the restore
/// fails with one clear line, and the secondary restores byte-exactly.
#[test]
fn a_restore_whose_primary_goes_away_fails_clearly_and_the_secondary_restores() {
    let env = Env::new();
    let p = env.path("primary");
    create_grs(&env, p.to_str().expect("utf8"), &url(StoreKind::Azurite, &env, "secondary"));
    let src = noisy_tree(&env, 6, 4);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    env.backup("t", 0);
    let target = env.path("r0");
    let mut child = env
        .cmd(&["restore", "t", "--target", target.to_str().expect("utf8")])
        .env("BOVEDA_STORE_FAULTS", "latency=30ms")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while walk_files(&target).iter().all(|f| std::fs::metadata(f).map_or(0, |m| m.len()) == 0) {
        assert!(std::time::Instant::now() < deadline, "the restore never wrote");
        assert!(child.try_wait().expect("wait").is_none(), "the restore ended before the primary went away");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::rename(&p, env.path("primary-away")).expect("the primary goes away");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(1), "the restore fails");
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().rfind(|l| !l.trim().is_empty()).unwrap_or_default().to_string();
    assert!(last.contains("error:") && last.contains("not found"), "one clear line: {err}");

    let target = env.path("r1");
    env.ok(&["restore", "t", "--from-secondary", "--target", target.to_str().expect("utf8")]);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").expect("absolute")));
}

/// A prune on a geo-redundant vault deletes from the primary first: with
/// the secondary away during the prune, it still holds the point; the
/// deletion reaches it with the next pass.
#[test]
fn prune_never_deletes_from_the_secondary_first() {
    let env = Env::new();
    let s = env.path("secondary");
    create_grs(&env, env.path("primary").to_str().expect("utf8"), s.to_str().expect("utf8"));
    let src = noisy_tree(&env, 1, 1);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    env.backup("t", 0);
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1)).to_string();
    let brief = env.ok(&["--output", "json", "protection", "backup-now", "t", "--retain-until", &soon]);
    let brief: serde_json::Value = serde_json::from_str(&brief).expect("json");
    let manifest = format!("points/{}", brief["id"].as_str().expect("id"));
    assert!(s.join(&manifest).exists() && env.path("primary").join(&manifest).exists());
    std::thread::sleep(std::time::Duration::from_millis(1_100));

    let away = env.path("secondary-away");
    std::fs::rename(&s, &away).expect("take the secondary away");
    env.ok(&["prune"]);
    std::fs::rename(&away, &s).expect("bring it back");
    assert!(!env.path("primary").join(&manifest).exists(), "pruned from the primary");
    assert!(s.join(&manifest).exists(), "the secondary still holds it");
    env.ok(&["vault", "replication", "run"]);
    assert!(!s.join(&manifest).exists(), "the pass deleted it there too");
    assert_eq!(behind(&env), (0, 0));
}

/// Redundancy changes only while the vault has no item; becoming grs
/// copies the whole vault as a Replication job.
#[test]
fn redundancy_changes_only_without_items_and_a_change_to_grs_copies_the_vault() {
    let env = Env::on(StoreKind::S3);
    env.create_vault();
    let s = env.path("secondary");
    let out = env.ok(&["vault", "update", "--redundancy", "grs", "--secondary", s.to_str().expect("utf8")]);
    assert!(out.contains("redundancy grs"), "{out}");
    let jobs: serde_json::Value =
        serde_json::from_str(&env.ok(&["--output", "json", "job", "list", "--operation", "Replication"]))
            .expect("json");
    let job = &jobs.as_array().expect("list")[0];
    assert_eq!(job["state"], "Completed", "{job}");
    assert!(job["progress"]["bytes_written"].as_u64() > Some(0), "the full copy reported its progress: {job}");
    assert!(s.join("config").exists(), "the secondary holds the vault");
    assert_eq!(behind(&env), (0, 0));
    env.ok(&["vault", "check", "--secondary"]);

    let src = noisy_tree(&env, 1, 1);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    let err = env.fails(&["vault", "update", "--redundancy", "lrs"]);
    assert!(err.contains("only change while it has no item") && err.contains(": t"), "{err}");
    let shown: serde_json::Value = serde_json::from_str(&env.ok(&["--output", "json", "vault", "show"])).expect("json");
    assert_eq!(shown["redundancy"], "grs", "nothing changed");
}

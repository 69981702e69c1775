//! Pre/post snapshot scripts and the consistency each point records.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::Env;

fn script(env: &Env, name: &str, body: &str) -> PathBuf {
    let p = env.path(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

fn config(env: &Env, name: &str, pre: &Path, post: &Path, timeout: u64, cont: bool) -> PathBuf {
    let p = env.path(name);
    let cfg = serde_json::json!({
        "preScriptLocation": pre, "postScriptLocation": post,
        "preScriptParams": ["--app", "db"], "postScriptParams": [],
        "timeoutInSeconds": timeout, "continueBackupOnFailure": cont,
    });
    fs::write(&p, cfg.to_string()).expect("write");
    p
}

fn disk(env: &Env) -> PathBuf {
    let img = env.path("d.img");
    let f = fs::File::create(&img).expect("create");
    f.set_len(8 << 20).expect("size");
    std::os::unix::fs::FileExt::write_all_at(&f, b"data", 4096).expect("write");
    img
}

/// Creates the vault and protects a small disk `d` with the given config.
fn protect(env: &Env, cfg: &Path) {
    let img = disk(env);
    env.create_vault();
    env.ok(&[
        "item",
        "add",
        "disk",
        "d",
        "--path",
        img.to_str().expect("utf8"),
        "--consistency-config",
        cfg.to_str().expect("utf8"),
    ]);
}

/// Tries to protect `img` as item `e` with a config; returns the error.
fn add_with(env: &Env, img: &Path, cfg: &Path) -> String {
    env.fails(&[
        "item",
        "add",
        "disk",
        "e",
        "--path",
        img.to_str().expect("utf8"),
        "--consistency-config",
        cfg.to_str().expect("utf8"),
    ])
}

fn points(env: &Env, item: &str) -> Vec<serde_json::Value> {
    serde_json::from_str::<serde_json::Value>(&env.ok(&["--output", "json", "recoverypoint", "list", item]))
        .expect("json")
        .as_array()
        .expect("list")
        .clone()
}

#[test]
fn a_successful_pre_script_makes_an_app_consistent_point() {
    let env = Env::new();
    let marks = env.path("marks");
    let pre = script(&env, "pre.sh", &format!("echo \"pre $*\" >> {}", marks.display()));
    let post = script(&env, "post.sh", &format!("echo post >> {}", marks.display()));
    let cfg = config(&env, "c.json", &pre, &post, 30, false);
    protect(&env, &cfg);
    let p = env.backup("d", 0);
    assert_eq!(p["consistency"], "app-consistent");
    assert_eq!(fs::read_to_string(&marks).expect("marks"), "pre --app db\npost\n");
    let listed = env.ok(&["recoverypoint", "list", "d"]);
    assert!(listed.contains("app-consistent"), "{listed}");
}

#[test]
fn a_failing_pre_script_fails_the_backup_and_still_runs_post() {
    let env = Env::new();
    let marks = env.path("marks");
    let pre = script(&env, "pre.sh", "echo 'database would not quiesce' >&2; exit 7");
    let post = script(&env, "post.sh", &format!("echo post >> {}", marks.display()));
    let cfg = config(&env, "c.json", &pre, &post, 30, false);
    protect(&env, &cfg);
    let packs_before = fs::read_dir(env.vault.join("packs")).map(|d| d.count()).unwrap_or(0);
    let err = env.fails(&["protection", "backup-now", "d"]);
    assert!(
        err.contains("pre-snapshot script") && err.contains("exit 7") && err.contains("would not quiesce"),
        "{err}"
    );
    assert!(points(&env, "d").is_empty(), "no point");
    assert_eq!(fs::read_dir(env.vault.join("packs")).map(|d| d.count()).unwrap_or(0), packs_before, "vault unchanged");
    assert_eq!(fs::read_to_string(&marks).expect("post ran"), "post\n");
}

#[test]
fn continue_on_failure_takes_a_crash_consistent_point_with_a_warning() {
    let env = Env::new();
    let pre = script(&env, "pre.sh", "exit 1");
    let post = script(&env, "post.sh", "exit 0");
    let cfg = config(&env, "c.json", &pre, &post, 30, true);
    protect(&env, &cfg);
    let p = env.backup("d", 3);
    assert_eq!(p["consistency"], "crash-consistent");
    assert!(p["warnings"].to_string().contains("pre-snapshot script"), "{p}");
}

#[test]
fn a_hanging_pre_script_is_killed_with_its_children() {
    let env = Env::new();
    let child_pid = env.path("child.pid");
    let pre = script(&env, "pre.sh", &format!("sleep 300 & echo $! > {}; sleep 300", child_pid.display()));
    let post = script(&env, "post.sh", "exit 0");
    let cfg = config(&env, "c.json", &pre, &post, 1, true);
    protect(&env, &cfg);
    let started = std::time::Instant::now();
    let p = env.backup("d", 3);
    assert!(started.elapsed().as_secs() < 30, "the timeout was not enforced");
    assert_eq!(p["consistency"], "crash-consistent");
    assert!(p["warnings"].to_string().contains("timeout"), "{p}");
    let pid = fs::read_to_string(&child_pid).expect("pid").trim().to_string();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let alive = fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z ")).unwrap_or(false);
    assert!(!alive, "the script's child {pid} survived the timeout");
}

#[test]
fn a_script_printing_megabytes_does_not_block_and_bad_configs_are_named() {
    let env = Env::new();
    let pre = script(&env, "pre.sh", "head -c 5000000 /dev/zero | tr '\\0' 'x'; echo; echo last-line >&2; exit 2");
    let post = script(&env, "post.sh", "exit 0");
    let cfg = config(&env, "c.json", &pre, &post, 60, false);
    protect(&env, &cfg);
    let err = env.fails(&["protection", "backup-now", "d"]);
    assert!(err.len() < 10_000, "the output is cut to its tail ({} bytes)", err.len());
    assert!(err.contains("exit 2"), "{err}");

    let img = env.path("d.img");
    let bad = config(&env, "bad.json", &pre, &post, 4000, false);
    let err = add_with(&env, &img, &bad);
    assert!(err.contains("timeoutInSeconds must be 1 to 1800"), "{err}");
    let typo = env.path("typo.json");
    fs::write(&typo, r#"{"preScriptLocaton": "/x"}"#).expect("write");
    let err = add_with(&env, &img, &typo);
    assert!(err.contains("preScriptLocaton"), "{err}");
}

#[test]
fn freeze_and_thaw_without_scripts_make_a_file_system_consistent_point() {
    let env = Env::new();
    let marks = env.path("marks");
    let freeze = script(&env, "freeze.sh", &format!("echo \"freeze $*\" >> {}", marks.display()));
    let thaw = script(&env, "thaw.sh", &format!("echo \"thaw $*\" >> {}", marks.display()));
    let cfg = env.path("f.json");
    let body = serde_json::json!({
        "fsFreezeCommand": [freeze, "-f", "/srv"], "fsThawCommand": [thaw, "-u", "/srv"], "timeoutInSeconds": 10,
    });
    fs::write(&cfg, body.to_string()).expect("write");
    protect(&env, &cfg);
    let p = env.backup("d", 0);
    assert_eq!(p["consistency"], "file-system-consistent");
    assert_eq!(fs::read_to_string(&marks).expect("marks"), "freeze -f /srv\nthaw -u /srv\n");
}

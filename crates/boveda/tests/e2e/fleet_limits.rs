//! A registered host at the limits users hit: a store that fills during
//! its backup, many files under the default open-file limit of 1024, and
//! every kind of entry a file system holds restored onto it (real
//! processes: the server, the host's `boveda host backup` and agent).
//!
//! `BOVEDA_TEST_HOST_FILES` sets how many files the many-files test backs
//! up (default 20 000; docs/FLEET.md gives the full-size command).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Env, Tmpfs, assert_same_tree, bin, is_root, make_full_tree, noise};
use crate::fleet::{
    admin, agent_restoring, backup_json, credentials, fleet_vault, host_cmd, register, restore_on_host, restored,
    serve, text,
};

/// `boveda ARGS` as `host` runs it, under an open-file limit of 1024.
fn host_limited(env: &Env, host: &str, args: &[&str]) -> std::process::Output {
    let plain = host_cmd(env, host, args);
    let mut c = Command::new("sh");
    c.arg("-c").arg("ulimit -n 1024 && exec \"$0\" \"$@\"").arg(bin()).args(args).env_clear();
    for (k, v) in plain.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c.output().expect("run boveda")
}

#[test]
fn a_host_backup_into_a_full_store_fails_with_the_reason_and_the_next_one_works() {
    if !is_root() {
        eprintln!(
            "a_host_backup_into_a_full_store_fails_with_the_reason_and_the_next_one_works needs root to mount a tmpfs; CI runs it as root"
        );
        return;
    }
    let mut env = Env::new();
    let small = env.path("small-store");
    let _disk = Tmpfs::mount(&small, "12m");
    env.vault = small.join("vault");
    env.store = env.vault.display().to_string();
    let (env, cert, key, port) = fleet_vault(env);
    let server = serve(&env, port, &cert, &key, &[]);
    register(&env, "web1", &credentials(&env, &server.url, &cert, "web1", "48h"));
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    for i in 0..20 {
        std::fs::write(src.join(format!("f{i:02}.bin")), noise(i, 1_000_000)).expect("write");
    }
    admin(&env, &["item", "add", "files", "web1-files", "--path", src.to_str().expect("utf8"), "--host", "web1"]);

    let out = host_limited(&env, "web1", &["host", "backup", "web1-files"]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "a backup larger than the store succeeded: {err}");
    assert!(err.contains("no space left"), "the reason is named: {err}");
    let points = admin(&env, &["--output", "json", "recoverypoint", "list", "web1-files"]);
    assert_eq!(points.trim(), "[]", "no point from a failed backup");
    let jobs = admin(&env, &["--output", "json", "job", "list", "--item", "web1-files"]);
    assert!(jobs.contains("\"Failed\"") && jobs.contains("no space left"), "the job says why: {jobs}");

    // room again: the next backup works and restores
    let status = Command::new("mount").args(["-o", "remount,size=200m"]).arg(&small).status().expect("remount");
    assert!(status.success());
    let point = backup_json(&env, "web1", "web1-files");
    assert_eq!(point["stats"]["files"], 20, "{point}");
    restored(&env, "web1-files", &src, "r");
    admin(&env, &["vault", "check", "--read-data"]);
    drop(server);
}

fn many_files(root: &Path, count: usize) -> PathBuf {
    for i in 0..count {
        let dir = root.join(format!("d{:03}", i % 400));
        if i < 400 {
            std::fs::create_dir_all(&dir).expect("mkdir");
        }
        std::fs::write(dir.join(format!("f{i}")), format!("file {i}\n").repeat(1 + i % 7)).expect("write");
    }
    root.to_path_buf()
}

#[test]
fn a_host_backs_up_many_files_under_the_default_open_file_limit() {
    let count: usize = std::env::var("BOVEDA_TEST_HOST_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let (env, cert, key, port) = fleet_vault(Env::new());
    let server = serve(&env, port, &cert, &key, &[]);
    register(&env, "web1", &credentials(&env, &server.url, &cert, "web1", "48h"));
    let src = many_files(&env.path("many"), count);
    admin(&env, &["item", "add", "files", "many", "--path", src.to_str().expect("utf8"), "--host", "web1"]);

    let json = |out: std::process::Output| -> serde_json::Value {
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_str(&text(&out.stdout)).expect("json")
    };
    let first = json(host_limited(&env, "web1", &["--output", "json", "host", "backup", "many"]));
    assert_eq!(first["stats"]["files"], count, "{first}");
    // one file changes: the rest come from the host's cache, unread
    std::fs::write(src.join("d007/f7"), b"changed\n").expect("change");
    let second = json(host_limited(&env, "web1", &["--output", "json", "host", "backup", "many"]));
    assert_eq!(second["stats"]["files_unchanged"], count - 1, "{second}");
    restored(&env, "many", &src, "r");
    drop(server);
}

#[test]
fn every_kind_of_entry_restored_onto_a_host_comes_back_the_same() {
    let (env, cert, key, port) = fleet_vault(Env::new());
    let server = serve(&env, port, &cert, &key, &[]);
    register(&env, "web1", &credentials(&env, &server.url, &cert, "web1", "48h"));
    let src = env.path("full");
    make_full_tree(&src);
    admin(&env, &["item", "add", "files", "full", "--path", src.to_str().expect("utf8"), "--host", "web1"]);
    backup_json(&env, "web1", "full");
    let (roots, _agent) = agent_restoring(&env, "web1");
    let operator = admin(&env, &["token", "create", "--role", "Operator"]).trim().to_string();
    let into = roots.join("r");
    let job = restore_on_host(&server.url, &cert, &operator, "full", &into);
    // hard links, extended attributes, a FIFO, owners, modes (setuid,
    // none at all), times before 1970, names that are not UTF-8, a path of
    // 3000 bytes, a sparse file: all as they were
    assert_eq!(job["state"], "Completed", "{job}");
    assert_same_tree(&src, &into.join(src.strip_prefix("/").expect("absolute")));
    drop(server);
}

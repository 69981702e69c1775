//! Kills, interrupts and a full disk during a backup leave a valid vault,
//! and the next backup succeeds, reusing what was written.

use crate::common;

use std::fs;
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

use common::{Env, Tmpfs, assert_same_tree, is_root, noise};

fn big_source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    for i in 0..40 {
        fs::write(src.join(format!("f{i:02}.bin")), noise(i, 2_000_000)).expect("write");
    }
    src
}

fn chunks_in_vault(env: &Env) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["--output", "json", "vault", "show"])).expect("json");
    v["chunks"].as_u64().expect("chunks")
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn interrupt_backup(env: &Env, signal: &str, after: Duration) -> bool {
    let mut child = env.cmd(&["protection", "backup-now", "t"]).spawn().expect("spawn");
    sleep(after);
    let sig = if signal == "-KILL" { 9 } else { 2 };
    // SAFETY: sends a signal to our own child, which has not been reaped yet.
    unsafe {
        kill(child.id() as i32, sig);
    }
    let status = child.wait().expect("wait");
    status.code().is_none() // true when the signal ended it mid-way
}

#[test]
fn kills_at_several_points_leave_a_valid_vault_and_writes_are_reused() {
    let env = Env::new();
    let src = big_source(&env);
    env.create_vault();
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    let mut reused = false;
    let mut killed = 0;
    for (i, ms) in [40u64, 150, 400, 800, 1500].iter().enumerate() {
        let signal = if i % 2 == 0 { "-KILL" } else { "-INT" };
        if interrupt_backup(&env, signal, Duration::from_millis(*ms)) {
            killed += 1;
        }
        // the vault is valid after every interruption
        let check = env.run(&["vault", "check", "--read-data"]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "check after {signal} at {ms} ms:\n{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let before = chunks_in_vault(&env);
        if before > 0 {
            let p = env.backup("t", 0);
            let total = p["stats"]["files"].as_u64().expect("files");
            assert_eq!(total, 40);
            let new = p["stats"]["chunks_new"].as_u64().expect("new");
            // chunks written before the kill are not stored again: a chunk
            // stored twice would count in `new` but not in the distinct total
            let after = chunks_in_vault(&env);
            assert_eq!(after, before + new, "chunks written before the interruption were stored again");
            reused = true;
            break;
        }
    }
    assert!(killed > 0, "no backup was interrupted mid-way; the source is too small for this machine");
    assert!(reused, "a backup after an interruption must reuse the chunks already written");
    env.backup("t", 0);
    env.ok(&["vault", "check", "--read-data"]);
    env.ok(&["restore", "t", "--target", env.path("out").to_str().expect("utf8")]);
    assert_same_tree(&src, &env.path("out").join(src.strip_prefix("/").expect("abs")));
}

#[test]
fn every_interruption_point_passes_check() {
    let env = Env::new();
    let src = big_source(&env);
    env.create_vault();
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    for ms in [20u64, 100, 250, 500, 900] {
        interrupt_backup(&env, "-KILL", Duration::from_millis(ms));
        let check = env.run(&["vault", "check"]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "check after kill at {ms} ms:\n{}",
            String::from_utf8_lossy(&check.stdout)
        );
    }
    env.backup("t", 0);
    env.ok(&["vault", "check", "--read-data"]);
}

#[test]
fn a_full_disk_fails_cleanly_and_the_next_backup_works() {
    if !is_root() {
        eprintln!(
            "a_full_disk_fails_cleanly_and_the_next_backup_works needs root to mount a small tmpfs; CI runs it as root"
        );
        return;
    }
    let env = Env::new();
    let src = big_source(&env);
    let mnt = env.path("small-disk");
    fs::create_dir_all(&mnt).expect("mkdir");
    let _guard = Tmpfs::mount(&mnt, "12m");
    let vault = mnt.join("vault");
    env.ok(&[
        "vault",
        "create",
        "small",
        "--store",
        vault.to_str().expect("utf8"),
        "--insecure-fast-kdf",
        "--pack-size-mib",
        "1",
    ]);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    let err = env.fails(&["protection", "backup-now", "t"]);
    assert!(err.contains("no space left"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
    // The store may still be full: then the check finds no problem but
    // cannot record its own job, and says so as a warning (exit code 3).
    let check = env.run(&["vault", "check", "--read-data"]);
    let (stdout, stderr) = (String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(stdout.contains("no problems found"), "{stdout}\n{stderr}");
    match check.status.code() {
        Some(0) => {}
        Some(3) => assert!(stderr.contains("not recorded") && stderr.contains("no space left"), "{stderr}"),
        other => panic!("vault check on a full store exited {other:?}\n{stdout}\n{stderr}"),
    }
    assert_eq!(
        env.ok(&["--output", "json", "recoverypoint", "list", "t"]).trim(),
        "[]",
        "no point from a failed backup"
    );

    let status = Command::new("mount").args(["-o", "remount,size=200m"]).arg(&mnt).status().expect("remount");
    assert!(status.success());
    env.backup("t", 0);
    env.ok(&["vault", "check", "--read-data"]);
    env.ok(&["restore", "t", "--target", env.path("out").to_str().expect("utf8")]);
    assert_same_tree(&src, &env.path("out").join(src.strip_prefix("/").expect("abs")));
}

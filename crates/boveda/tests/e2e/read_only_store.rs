//! Issue 22, 16: with a store that refuses every write (full, or
//! credentials that may only read), restore failed because it could not
//! write its job record first. Reading what is stored never depends on
//! writing: restore, check and `recoverypoint list` work, say that their
//! job could not be recorded, and exit 0 or 3.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{Env, bin, is_root, noise};

fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    fs::write(src.join("a.bin"), noise(1, 400_000)).expect("write");
    fs::write(src.join("sub/b.txt"), b"second file\n").expect("write");
    src
}

fn reads_work(run: &dyn Fn(&[&str]) -> std::process::Output, src: &Path, target: &Path) {
    let out = run(&["restore", "t", "--target", target.to_str().expect("utf8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 3)), "restore: {err}");
    assert!(err.contains("not recorded in the vault"), "says the job was not recorded: {err}");
    // the bytes (an unprivileged restore cannot give files their owners back)
    let back = target.join(src.strip_prefix("/").expect("abs"));
    for f in ["a.bin", "sub/b.txt"] {
        assert_eq!(fs::read(src.join(f)).expect("read"), fs::read(back.join(f)).expect("restored"), "{f}");
    }
    let out = run(&["vault", "check", "--read-data"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(matches!(out.status.code(), Some(0 | 3)), "check: {said}{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("no problems found"), "{said}");
    let out = run(&["recoverypoint", "list", "t"]);
    assert!(out.status.success(), "list: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2, "a header and the point");
}

#[test]
fn restore_check_and_listing_work_against_a_full_store() {
    let env = Env::new();
    env.create_vault();
    let src = source(&env);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    env.backup("t", 0);
    // every write is refused as by a full store
    let full = |args: &[&str]| env.cmd(args).env("BOVEDA_STORE_FAULTS", "budget=0").output().expect("run");
    let out = full(&["protection", "backup-now", "t"]);
    assert_eq!(out.status.code(), Some(1), "a backup cannot work: {}", String::from_utf8_lossy(&out.stderr));
    reads_work(&full, &src, &env.path("back"));
}

#[test]
fn restore_check_and_listing_work_against_a_read_only_store() {
    if !is_root() {
        return; // needs another user: as that user the store is read-only
    }
    let env = Env::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
    let src = source(&env);
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o755)).expect("chmod");
    let vault = env.path("ro-vault");
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .args(args)
            .env("BOVEDA_CONFIG_DIR", env.path("config-nobody"))
            .env("BOVEDA_CACHE_DIR", env.path("cache-nobody"))
            .env("BOVEDA_PASSWORD", "correct horse")
            .output()
            .expect("run boveda")
    };
    let ok = |args: &[&str]| {
        let out = as_nobody(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ok(&["vault", "create", "ro", "--store", vault.to_str().expect("utf8"), "--insecure-fast-kdf"]);
    ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    ok(&["protection", "backup-now", "t"]);
    // the store becomes read-only for its user (as read-only credentials)
    let chmod = |mode: &str| {
        let st = Command::new("chmod").args(["-R", mode]).arg(&vault).status().expect("chmod");
        assert!(st.success());
    };
    chmod("a-w");
    let target = env.path("back");
    fs::create_dir_all(&target).expect("mkdir");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o777)).expect("chmod");
    reads_work(&as_nobody, &src, &target);
    chmod("u+w");
}

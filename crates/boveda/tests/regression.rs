//! One test per defect found by using boveda as its users do, named after
//! what broke. Each drives the real binary and fails on the code before the
//! fix.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{Env, Tmpfs, is_root, noise, set_mtime};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

/// Backs up `src` as item `name` into a fresh vault.
fn vault_with(env: &Env, name: &str, src: &Path) {
    env.create_vault();
    env.ok(&["item", "add", "files", name, "--path", s(src)]);
    env.backup(name, 0);
}

/// `boveda ARGS` with the open-file limit lowered to `limit`.
fn with_open_file_limit(env: &Env, limit: u32, args: &[&str]) -> std::process::Output {
    let c = env.cmd(&[]);
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\"")).arg(common::bin()).args(args);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh.output().expect("run boveda")
}

fn small_files(dir: &Path, n: usize) {
    fs::create_dir_all(dir).expect("mkdir");
    for i in 0..n {
        fs::write(dir.join(format!("f{i:06}")), format!("small file {i}\n").repeat(i % 5 + 1)).expect("write");
    }
}

fn assert_small_files(dir: &Path, n: usize) {
    assert_eq!(fs::read_dir(dir).expect("read_dir").count(), n, "every file restored, nothing else left");
    for i in 0..n {
        let got = fs::read(dir.join(format!("f{i:06}"))).expect("restored file");
        assert_eq!(got, format!("small file {i}\n").repeat(i % 5 + 1).into_bytes(), "f{i:06}");
    }
}

#[test]
fn restore_of_many_small_files_in_one_folder_fails_with_too_many_open_files() {
    let env = Env::new();
    let src = env.path("src");
    small_files(&src.join("flat"), 3000);
    vault_with(&env, "flat", &src);
    let target = env.path("out");
    let out = with_open_file_limit(&env, 64, &["restore", "flat", "--target", s(&target)]);
    assert!(out.status.success(), "restore at ulimit -n 64: {}", String::from_utf8_lossy(&out.stderr));
    assert_small_files(&target.join(src.strip_prefix("/").expect("abs")).join("flat"), 3000);
}

#[test]
fn restore_of_hundreds_of_thousands_of_small_files_at_the_default_open_file_limit() {
    let env = Env::new();
    let src = env.path("src");
    let n = 200_000;
    small_files(&src.join("many"), n);
    vault_with(&env, "many", &src);
    let target = env.path("out");
    let out = with_open_file_limit(&env, 1024, &["restore", "many", "--target", s(&target)]);
    assert!(out.status.success(), "restore at ulimit -n 1024: {}", String::from_utf8_lossy(&out.stderr));
    assert_small_files(&target.join(src.strip_prefix("/").expect("abs")).join("many"), n);
}

#[test]
fn restore_writes_through_a_hard_link_to_a_file_outside_its_target() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("data.txt"), b"what the point holds\n").expect("write");
    vault_with(&env, "t", &src);

    let outside = env.path("outside.txt");
    fs::write(&outside, b"a file outside the target that must not change").expect("write");
    let target = env.path("out");
    let in_target = target.join(src.strip_prefix("/").expect("abs")).join("data.txt");
    fs::create_dir_all(in_target.parent().expect("parent")).expect("mkdir");
    fs::hard_link(&outside, &in_target).expect("hard link into the target");

    env.ok(&["restore", "t", "--target", s(&target)]);
    assert_eq!(fs::read(&outside).expect("read"), b"a file outside the target that must not change");
    assert_eq!(fs::metadata(&outside).expect("stat").nlink(), 1, "the link in the target was replaced");
    assert_eq!(fs::read(&in_target).expect("read"), b"what the point holds\n");
}

#[test]
fn restore_rerun_leaves_a_wrong_file_that_has_the_backed_up_size_and_mtime() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let right = noise(7, 300_000);
    fs::write(src.join("a.bin"), &right).expect("write");
    set_mtime(&src.join("a.bin"), 1_700_000_000, 42);
    fs::write(src.join("b.txt"), b"second file").expect("write");
    vault_with(&env, "t", &src);

    let target = env.path("out");
    env.ok(&["restore", "t", "--target", s(&target)]);
    let restored = target.join(src.strip_prefix("/").expect("abs"));
    // the same size and mtime, other bytes: an earlier restore's file damaged since
    let mut wrong = right.clone();
    wrong[150_000] ^= 0xff;
    fs::write(restored.join("a.bin"), &wrong).expect("write");
    set_mtime(&restored.join("a.bin"), 1_700_000_000, 42);

    let out = env.ok(&["--output", "json", "restore", "t", "--target", s(&target)]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(fs::read(restored.join("a.bin")).expect("read"), right, "the wrong content was replaced");
    assert_eq!(v["files_skipped"], 1, "only the verified file is kept: {v}");
    assert_eq!(fs::metadata(restored.join("a.bin")).expect("stat").mtime_nsec(), 42);
}

#[test]
fn restore_into_a_full_disk_prints_a_line_per_file() {
    if !is_root() {
        eprintln!(
            "restore_into_a_full_disk_prints_a_line_per_file needs root to mount a small tmpfs; CI runs it as root"
        );
        return;
    }
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).expect("mkdir");
    for i in 0..1500 {
        fs::write(src.join(format!("d/f{i:05}")), noise(i, 8_000)).expect("write");
    }
    vault_with(&env, "t", &src);
    let mnt = env.path("small");
    let _disk = Tmpfs::mount(&mnt, "4m");
    let out = env.run(&["restore", "t", "--target", s(&mnt.join("out"))]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().count() <= 12, "a bounded report, not a line per file:\n{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("of 1500 file(s) were not restored"), "{last}");
    assert!(last.contains("No space left on device"), "{last}");
    // what is at its path is complete: every restored file equals its source
    let restored = mnt.join("out").join(src.strip_prefix("/").expect("abs")).join("d");
    let mut complete = 0;
    for e in fs::read_dir(&restored).expect("read_dir") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(name.starts_with('f'), "no temporary file left: {name}");
        assert_eq!(fs::read(e.path()).expect("read"), fs::read(src.join("d").join(&name)).expect("read"), "{name}");
        complete += 1;
    }
    assert!(last.contains(&format!("the other {complete} are restored complete")), "{last}");
}

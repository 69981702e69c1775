//! Back up a tree holding every case, restore it, compare bytes and metadata.

use crate::common;

use std::fs;
use std::path::Path;

use common::{Env, allocated, assert_same_tree, make_full_tree, noise};

fn restored_root(env: &Env, target: &str, src: &Path) -> std::path::PathBuf {
    env.path(target).join(src.strip_prefix("/").expect("absolute"))
}

/// The full tree, backed up as item `t`; returns its path.
fn full_tree_backed_up(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    make_full_tree(&src);
    env.create_vault();
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    env.backup("t", 0);
    src
}

#[test]
fn full_tree_round_trips_with_metadata() {
    let env = Env::new();
    let src = env.path("src");
    make_full_tree(&src);
    env.create_vault();
    env.ok(&["item", "add", "files", "everything", "--path", src.to_str().expect("utf8")]);
    let p1 = env.backup("everything", 0);
    assert!(p1["stats"]["files"].as_u64().expect("files") > 1500);
    assert!(p1["warnings"].as_array().expect("warnings").is_empty(), "{p1}");

    env.ok(&["restore", "everything", "--target", env.path("out").to_str().expect("utf8")]);
    let out = restored_root(&env, "out", &src);
    assert_same_tree(&src, &out);
    // holes stay holes: only the written regions are allocated
    assert!(allocated(&out.join("sparse.img")) < 2 << 20, "sparse file restored dense");
}

#[test]
fn unchanged_files_are_not_read_and_changes_are_captured() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("a")).expect("mkdir");
    for i in 0..50 {
        fs::write(src.join(format!("a/f{i}")), noise(i, 50_000)).expect("write");
    }
    fs::write(src.join("big"), noise(99, 24_000_000)).expect("write");
    env.create_vault();
    env.ok(&["item", "add", "files", "data", "--path", src.to_str().expect("utf8")]);
    let p1 = env.backup("data", 0);
    assert_eq!(p1["stats"]["bytes_read"].as_u64(), Some(50 * 50_000 + 24_000_000));

    let p2 = env.backup("data", 0);
    assert_eq!(p2["stats"]["bytes_read"].as_u64(), Some(0), "an unchanged tree must not be read");
    // only the trees of the directories above the source (such as /tmp,
    // which other processes change) may be new
    assert!(p2["stats"]["bytes_new"].as_u64().expect("new") < 10_000, "{p2}");

    // change one small file and a few bytes in the middle of the big one
    fs::write(src.join("a/f3"), b"changed").expect("write");
    let mut big = fs::read(src.join("big")).expect("read");
    big[12_000_000..12_000_010].copy_from_slice(b"0123456789");
    fs::write(src.join("big"), &big).expect("write");
    fs::remove_file(src.join("a/f7")).expect("rm");
    let p3 = env.backup("data", 0);
    let read = p3["stats"]["bytes_read"].as_u64().expect("read");
    assert_eq!(read, 7 + 24_000_000, "only the changed files are read");
    let new = p3["stats"]["bytes_new"].as_u64().expect("new");
    // at most the edited chunk and the next (a cut point may move), each at
    // most 4 MiB, plus the small file: far below the 24 MB file
    assert!(new <= 2 * (4 << 20) + 100, "a 10-byte edit must not re-store the whole file ({new} new bytes)");

    // each point restores to its own state
    let id1 = p1["id"].as_str().expect("id");
    env.ok(&["restore", "data", "--point", &id1[..8], "--target", env.path("out1").to_str().expect("utf8")]);
    let r1 = restored_root(&env, "out1", &src);
    assert_eq!(fs::read(r1.join("a/f3")).expect("read"), noise(3, 50_000));
    assert!(r1.join("a/f7").exists());
    env.ok(&["restore", "data", "--target", env.path("out3").to_str().expect("utf8")]);
    assert_same_tree(&src, &restored_root(&env, "out3", &src));
}

#[test]
fn excludes_and_selected_paths() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("keep/cache")).expect("mkdir");
    fs::create_dir_all(src.join("other")).expect("mkdir");
    fs::write(src.join("keep/a.txt"), b"a").expect("write");
    fs::write(src.join("keep/b.tmp"), b"b").expect("write");
    fs::write(src.join("keep/cache/c"), b"c").expect("write");
    fs::write(src.join("other/d"), b"d").expect("write");
    env.create_vault();
    let cache = format!("{}/keep/cache", src.display());
    env.ok(&[
        "item",
        "add",
        "files",
        "sel",
        "--path",
        src.to_str().expect("utf8"),
        "--exclude",
        "*.tmp",
        "--exclude",
        &cache,
    ]);
    env.backup("sel", 0);
    let ls = env.ok(&["recoverypoint", "ls", "sel", "latest", &format!("{}/keep", src.display())]);
    assert!(ls.contains("a.txt") && !ls.contains("b.tmp") && !ls.contains("cache"), "{ls}");

    let only = format!("{}/keep/a.txt", src.display());
    env.ok(&["restore", "sel", "--path", &only, "--target", env.path("out").to_str().expect("utf8")]);
    let root = restored_root(&env, "out", &src);
    assert_eq!(fs::read(root.join("keep/a.txt")).expect("read"), b"a");
    assert!(!root.join("other").exists(), "unselected paths must not be restored");

    let err = env.fails(&["restore", "sel", "--path", "/nope/x", "--target", env.path("out2").to_str().expect("utf8")]);
    assert!(err.contains("not in the recovery point"), "{err}");
    let err =
        env.fails(&["restore", "sel", "--path", "/a/../etc", "--target", env.path("out2").to_str().expect("utf8")]);
    assert!(err.contains("`..`"), "{err}");
}

#[test]
fn rerunning_an_interrupted_restore_completes_it() {
    let env = Env::new();
    let src = full_tree_backed_up(&env);
    let target = env.path("out");
    env.ok(&["restore", "t", "--target", target.to_str().expect("utf8")]);
    let root = restored_root(&env, "out", &src);
    // what an interruption leaves: a truncated file, a missing one, a file with
    // partial content (right size, wrong time), a missing directory
    fs::OpenOptions::new()
        .write(true)
        .open(root.join("docs/nested/random.bin"))
        .expect("open")
        .set_len(1000)
        .expect("truncate");
    fs::remove_file(root.join("many/f00010")).expect("rm");
    fs::write(root.join("hard-a"), vec![0u8; 10_000]).expect("write");
    fs::remove_dir_all(root.join("docs/nested/deeper")).expect("rm");
    let out = env.ok(&["--output", "json", "restore", "t", "--target", target.to_str().expect("utf8")]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(v["files_skipped"].as_u64().expect("skipped") > 1000, "complete files are not rewritten: {v}");
    assert_same_tree(&src, &root);
}

#[test]
fn restore_never_writes_outside_the_target() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).expect("mkdir");
    fs::write(src.join("d/file"), b"payload").expect("write");
    env.create_vault();
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    env.backup("t", 0);
    // the target already holds a symlink where a restored directory goes,
    // pointing outside the target
    let target = env.path("out");
    let outside = env.path("outside");
    fs::create_dir_all(&outside).expect("mkdir");
    let root = restored_root(&env, "out", &src);
    fs::create_dir_all(root.parent().expect("parent")).expect("mkdir");
    std::os::unix::fs::symlink(&outside, &root).expect("symlink");
    env.ok(&["restore", "t", "--target", target.to_str().expect("utf8")]);
    assert!(fs::read_dir(&outside).expect("read").next().is_none(), "something was written outside the target");
    assert!(fs::symlink_metadata(&root).expect("lstat").is_dir(), "the symlink was replaced by a real directory");
    assert_eq!(fs::read(root.join("d/file")).expect("read"), b"payload");
}

/// Files are created with their final permissions when nothing changes them
/// afterwards, and given their owner only when creation did not: a folder
/// that hands its group to new files (set-group-ID) must not leave that
/// group on them.
#[test]
fn a_restore_into_a_set_group_id_folder_gives_each_file_its_own_group() {
    if !common::is_root() {
        return; // only root restores owners and groups
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::new();
    let src = full_tree_backed_up(&env);
    let target = env.path("out");
    fs::create_dir(&target).expect("mkdir");
    std::os::unix::fs::chown(&target, None, Some(4242)).expect("chown");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o2775)).expect("chmod");
    env.ok(&["restore", "t", "--target", target.to_str().expect("utf8")]);
    let root = restored_root(&env, "out", &src);
    assert_eq!(fs::metadata(root.join("many/f00001")).expect("stat").gid(), 0, "the folder's group stayed on a file");
    assert_same_tree(&src, &root);
}

/// A file created with its final permissions is still subject to the
/// process's umask: under `umask 077` every mode must still come back.
#[test]
fn a_restore_under_a_strict_umask_gives_each_file_its_own_mode() {
    let env = Env::new();
    let src = full_tree_backed_up(&env);
    let target = env.path("out");
    let restore = env.cmd(&["restore", "t", "--target", target.to_str().expect("utf8")]);
    let prog = restore.get_program().to_owned();
    let args: Vec<_> = restore.get_args().map(std::ffi::OsStr::to_owned).collect();
    let envs: Vec<_> = restore.get_envs().map(|(k, v)| (k.to_owned(), v.map(std::ffi::OsStr::to_owned))).collect();
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c").arg("umask 077; exec \"$@\"").arg("sh").arg(prog).args(args);
    for (k, v) in envs {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    let out = sh.output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = restored_root(&env, "out", &src);
    assert_same_tree(&src, &root);
}

/// A user without privileges restores files created without a name and
/// linked into place (by handle on Linux 6.10 and later, through
/// `/proc/self/fd` on kernels that keep linking by handle to root), and
/// files reopened for each piece: read-only files, large and small, one
/// with an extended attribute, come back with their modes, bytes and times.
#[test]
fn a_plain_user_restores_read_only_files_with_their_modes() {
    if !common::is_root() {
        return; // needs another user to drop to
    }
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    let file = |name: &str, data: &[u8], mode: u32| {
        fs::write(src.join(name), data).expect("write");
        if name.starts_with("xattr") {
            let _ = common::xattr_set(&src.join(name), "user.boveda.test", b"kept");
        }
        fs::set_permissions(src.join(name), fs::Permissions::from_mode(mode)).expect("chmod");
    };
    file("read-only", b"r", 0o444);
    file("owner-only", b"o", 0o400);
    file("group-read", b"g", 0o640);
    file("script", b"#!/bin/sh\n", 0o755);
    file("empty-read-only", b"", 0o444);
    file("xattr-read-only", b"x", 0o444);
    file("sub/large-read-only.bin", &noise(5, 3_000_000), 0o444);
    for i in 0..200 {
        file(&format!("sub/f{i:03}"), format!("{i}").as_bytes(), 0o444);
    }
    let st = std::process::Command::new("chown").args(["-R", "65534:65534"]).arg(&src).status().expect("chown");
    assert!(st.success());
    let as_nobody = |args: &[&str]| {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(common::bin())
            .args(args)
            .env("BOVEDA_CONFIG_DIR", env.path("config-nobody"))
            .env("BOVEDA_CACHE_DIR", env.path("cache-nobody"))
            .env("BOVEDA_PASSWORD", "correct horse")
            .output()
            .expect("run boveda");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let vault = env.path("vault-nobody");
    as_nobody(&["vault", "create", "plain", "--store", vault.to_str().expect("utf8"), "--insecure-fast-kdf"]);
    as_nobody(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    as_nobody(&["protection", "backup-now", "t"]);
    let target = env.path("out");
    fs::create_dir(&target).expect("mkdir");
    fs::set_permissions(&target, fs::Permissions::from_mode(0o777)).expect("chmod");
    as_nobody(&["restore", "t", "--target", target.to_str().expect("utf8")]);
    assert_same_tree(&src, &restored_root(&env, "out", &src));
}

//! Back up a tree holding every case, restore it, compare bytes and metadata.

mod common;

use std::fs;
use std::path::Path;

use common::{Env, allocated, assert_same_tree, make_full_tree, noise};

fn restored_root(env: &Env, target: &str, src: &Path) -> std::path::PathBuf {
    env.path(target).join(src.strip_prefix("/").expect("absolute"))
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
    let src = env.path("src");
    make_full_tree(&src);
    env.create_vault();
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    env.backup("t", 0);
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

//! Disk images as protected items, end to end with real images made by
//! mkfs.ext4 and qemu-img; restored images are checked with
//! `qemu-img compare` and `e2fsck -fn`.

use crate::common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::{Env, allocated, is_root, noise};

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A 64 MiB sparse raw image holding an ext4 file system made from real files.
fn make_image(env: &Env, name: &str) -> std::path::PathBuf {
    let files = env.path(&format!("{name}-files"));
    fs::create_dir_all(files.join("docs")).expect("mkdir");
    for i in 0..12 {
        fs::write(files.join(format!("docs/f{i}.bin")), noise(i, 700_000)).expect("write");
    }
    fs::write(files.join("readme.txt"), b"a disk for boveda\n".repeat(2000)).expect("write");
    let img = env.path(&format!("{name}.img"));
    fs::File::create(&img).expect("create").set_len(64 << 20).expect("size");
    sh(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&files).arg(&img));
    img
}

fn same_image(a: &Path, b: &Path) {
    sh(Command::new("qemu-img").arg("compare").arg(a).arg(b));
}

fn fsck_clean(img: &Path) {
    sh(Command::new("e2fsck").arg("-fn").arg(img));
}

#[test]
fn raw_image_backup_restore_and_incremental_change() {
    let env = Env::new();
    let img = make_image(&env, "raw");
    let original = env.path("raw-original.img");
    sh(Command::new("cp").arg("--sparse=always").arg(&img).arg(&original));
    env.create_vault();
    env.ok(&["item", "add", "disk", "vm-disk", "--path", img.to_str().expect("utf8")]);
    let p1 = env.backup("vm-disk", 0);
    let read = p1["stats"]["bytes_read"].as_u64().expect("read");
    assert!(read <= allocated(&img), "reads only allocated data: {read} > {}", allocated(&img));
    assert!(read > 8_000_000, "the files' data was read ({read})");

    // an unchanged image is not read again
    let p2 = env.backup("vm-disk", 0);
    assert_eq!(p2["stats"]["bytes_read"].as_u64(), Some(0));

    // a guest writes 3 MiB at 4 KiB-aligned offsets
    let f = fs::OpenOptions::new().write(true).open(&img).expect("open");
    for (i, off) in [5u64 << 20, (20 << 20) + 4096 * 7, (50 << 20) + 4096 * 3].iter().enumerate() {
        f.write_all_at(&noise(100 + i as u64, 1 << 20), *off).expect("write");
    }
    drop(f);
    let p3 = env.backup("vm-disk", 0);
    let new = p3["stats"]["bytes_new"].as_u64().expect("new");
    assert!(new <= 3 * (1 << 20) * 3 / 2, "vault growth {new} exceeds 1.5x the 3 MiB changed");

    let out_new = env.path("restored-new.img");
    env.ok(&["restore", "vm-disk", "--target", out_new.to_str().expect("utf8")]);
    same_image(&img, &out_new);
    assert!(allocated(&out_new) <= allocated(&img) + allocated(&img) / 100, "holes stay holes");
    let out_old = env.path("restored-old.img");
    let id = p1["id"].as_str().expect("id");
    env.ok(&["restore", "vm-disk", "--point", &id[..8], "--target", out_old.to_str().expect("utf8")]);
    same_image(&original, &out_old);
    fsck_clean(&out_old);
    env.ok(&["vault", "check", "--read-data"]);
}

#[test]
fn qcow2_image_reads_allocated_clusters_and_restores_as_raw_or_qcow2() {
    let env = Env::new();
    let raw = make_image(&env, "base");
    let q = env.path("disk.qcow2");
    sh(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&raw).arg(&q));
    env.create_vault();
    env.ok(&["item", "add", "disk", "raw", "--path", raw.to_str().expect("utf8")]);
    env.ok(&["item", "add", "disk", "q", "--path", q.to_str().expect("utf8")]);
    env.backup("raw", 0);
    let pq = env.backup("q", 0);
    assert!(pq["stats"]["bytes_read"].as_u64().expect("read") <= fs::metadata(&q).expect("stat").len());
    assert!(
        pq["stats"]["bytes_new"].as_u64().expect("new") < 100_000,
        "the same disk as qcow2 deduplicates against the raw one: {pq}"
    );

    let out_raw = env.path("q-as-raw.img");
    env.ok(&["restore", "q", "--target", out_raw.to_str().expect("utf8")]);
    same_image(&q, &out_raw);
    fsck_clean(&out_raw);
    let out_q = env.path("q-restored.qcow2");
    env.ok(&["restore", "q", "--target", out_q.to_str().expect("utf8"), "--format", "qcow2"]);
    sh(Command::new("qemu-img").arg("check").arg(&out_q));
    let info = sh(Command::new("qemu-img").args(["info", "--output=json"]).arg(&out_q));
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    same_image(&q, &out_q);
}

#[test]
fn a_disk_that_grows_or_shrinks_restores_to_the_right_size() {
    let env = Env::new();
    let img = make_image(&env, "size");
    env.create_vault();
    env.ok(&["item", "add", "disk", "d", "--path", img.to_str().expect("utf8")]);
    env.backup("d", 0);
    for size in [96u64 << 20, 48 << 20] {
        let f = fs::OpenOptions::new().write(true).open(&img).expect("open");
        f.set_len(size).expect("resize");
        f.write_all_at(b"end marker", size - 10).expect("write");
        drop(f);
        env.backup("d", 0);
        let out = env.path(&format!("out-{size}.img"));
        env.ok(&["restore", "d", "--target", out.to_str().expect("utf8")]);
        assert_eq!(fs::metadata(&out).expect("stat").len(), size);
        same_image(&img, &out);
    }
}

#[test]
fn bad_disk_input_gets_a_clear_error() {
    let env = Env::new();
    env.create_vault();
    let err = env.fails(&["item", "add", "disk", "gone", "--path", env.path("missing.img").to_str().expect("utf8")]);
    assert!(err.contains("does not exist"), "{err}");

    // a qcow2 header followed by garbage
    let bad = env.path("bad.qcow2");
    let mut bytes = b"QFI\xfb".to_vec();
    bytes.extend(noise(9, 4096));
    fs::write(&bad, &bytes).expect("write");
    let err = env.fails(&["item", "add", "disk", "bad", "--path", bad.to_str().expect("utf8")]);
    assert!(err.contains("not a readable qcow2 image"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // a truncated qcow2: valid header, data cut off
    let raw = make_image(&env, "t");
    let q = env.path("t.qcow2");
    sh(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&raw).arg(&q));
    let len = fs::metadata(&q).expect("stat").len();
    fs::OpenOptions::new().write(true).open(&q).expect("open").set_len(len / 2).expect("truncate");
    let err = env.fails(&["item", "add", "disk", "trunc", "--path", q.to_str().expect("utf8")]);
    assert!(err.contains("truncated") || err.contains("not a readable qcow2"), "{err}");

    env.ok(&["item", "add", "disk", "ok", "--path", raw.to_str().expect("utf8")]);
    env.backup("ok", 0);
    let err = env.fails(&["restore", "ok", "--target", env.dir.path().to_str().expect("utf8")]);
    assert!(err.contains("is a directory"), "{err}");
    let err = env.fails(&["restore", "ok", "--path", "/etc", "--target", env.path("x.img").to_str().expect("utf8")]);
    assert!(err.contains("not in the recovery point"), "{err}");
}

#[test]
fn a_restore_target_too_small_is_refused() {
    if !is_root() {
        eprintln!("a_restore_target_too_small_is_refused needs root to mount a small tmpfs; CI runs it as root");
        return;
    }
    let env = Env::new();
    let img = make_image(&env, "big");
    env.create_vault();
    env.ok(&["item", "add", "disk", "d", "--path", img.to_str().expect("utf8")]);
    env.backup("d", 0);
    let mnt = env.path("small");
    fs::create_dir_all(&mnt).expect("mkdir");
    sh(Command::new("mount").args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"]).arg(&mnt));
    let err = env.fails(&["restore", "d", "--target", mnt.join("d.img").to_str().expect("utf8")]);
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(err.contains("too small"), "{err}");
}

struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

fn attach(img: &Path) -> Option<Loop> {
    let out = Command::new("losetup").args(["-f", "--show"]).arg(img).output().ok()?;
    out.status.success().then(|| Loop(String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

#[test]
fn a_block_device_is_backed_up_and_restored_to_a_file_and_a_device() {
    if !is_root() {
        eprintln!(
            "a_block_device_is_backed_up_and_restored_to_a_file_and_a_device needs root for loop devices; CI runs it as root"
        );
        return;
    }
    let env = Env::new();
    let img = make_image(&env, "dev");
    let Some(dev) = attach(&img) else {
        eprintln!("no loop device could be attached here; the block-device test did not run");
        return;
    };
    env.create_vault();
    env.ok(&["item", "add", "disk", "blk", "--path", &dev.0]);
    env.backup("blk", 0);
    let out = env.path("from-device.img");
    env.ok(&["restore", "blk", "--target", out.to_str().expect("utf8")]);
    same_image(&img, &out);

    // onto another device holding other data: holes must come back as zeros
    let other = env.path("other.img");
    fs::write(&other, noise(77, 64 << 20)).expect("write");
    let dev2 = attach(&other).expect("losetup");
    env.ok(&["restore", "blk", "--target", &dev2.0]);
    drop(dev2);
    same_image(&img, &other);
    fsck_clean(&other);

    // a device smaller than the disk is refused
    let small = env.path("small.img");
    fs::File::create(&small).expect("create").set_len(8 << 20).expect("size");
    let dev3 = attach(&small).expect("losetup");
    let err = env.fails(&["restore", "blk", "--target", &dev3.0]);
    assert!(err.contains("too small"), "{err}");
}

//! File-level restore from the ext4 file system inside disk and VM points,
//! with and without a partition table.

use crate::common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Env, noise};

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn guest_files(env: &Env) -> PathBuf {
    let src = env.path("guest");
    fs::create_dir_all(src.join("etc/app")).expect("mkdir");
    fs::write(src.join("etc/hosts"), b"127.0.0.1 localhost\n").expect("write");
    fs::write(src.join("etc/app/data.bin"), noise(7, 300_000)).expect("write");
    src
}

/// A 48 MiB disk with an MBR whose one partition (type 0x83, from sector
/// 2048) holds ext4 made from `src`.
fn partitioned_disk(env: &Env, src: &Path) -> PathBuf {
    let part = env.path("part.img");
    fs::File::create(&part).expect("create").set_len(40 << 20).expect("size");
    sh(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(src).arg(&part));
    let disk = env.path("disk.img");
    let f = fs::File::create(&disk).expect("create");
    f.set_len(48 << 20).expect("size");
    let mut mbr = [0u8; 512];
    mbr[446 + 4] = 0x83;
    mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&((40u32 << 20) / 512).to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    f.write_all_at(&mbr, 0).expect("mbr");
    let data = fs::read(&part).expect("read");
    for (i, block) in data.chunks(1 << 16).enumerate() {
        if block.iter().any(|&b| b != 0) {
            f.write_all_at(block, (1 << 20) + (i as u64) * (1 << 16)).expect("write");
        }
    }
    disk
}

#[test]
fn files_are_listed_and_extracted_from_a_partitioned_disk() {
    let env = Env::new();
    let src = guest_files(&env);
    let disk = partitioned_disk(&env, &src);
    env.create_vault();
    env.ok(&["item", "add", "disk", "d", "--path", disk.to_str().expect("utf8")]);
    env.backup("d", 0);
    let ls = env.ok(&["recoverypoint", "ls", "d", "latest", "/etc"]);
    assert!(ls.contains("hosts") && ls.contains("app"), "{ls}");
    let ls = env.ok(&["recoverypoint", "ls", "d", "latest", "/etc/app"]);
    assert!(ls.contains("300000") && ls.contains("data.bin"), "{ls}");

    let out = env.path("out");
    env.ok(&["restore", "d", "--path", "/etc/hosts", "--path", "/etc/app", "--target", out.to_str().expect("utf8")]);
    assert_eq!(fs::read(out.join("etc/hosts")).expect("read"), fs::read(src.join("etc/hosts")).expect("read"));
    assert_eq!(fs::read(out.join("etc/app/data.bin")).expect("read"), noise(7, 300_000));

    let err = env.fails(&["recoverypoint", "ls", "d", "latest", "/nope"]);
    assert!(err.contains("not in the recovery point"), "{err}");
}

#[test]
fn a_whole_disk_qcow2_file_system_and_a_vm_path_work() {
    let env = Env::new();
    let src = guest_files(&env);
    let raw = env.path("whole.raw");
    fs::File::create(&raw).expect("create").set_len(32 << 20).expect("size");
    sh(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&src).arg(&raw));
    let q = env.path("whole.qcow2");
    sh(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&raw).arg(&q));
    let xml = env.path("vm.xml");
    fs::write(
        &xml,
        format!(
            "<domain><name>app</name><devices><disk type='file' device='disk'><source file='{}'/><target dev='vda'/></disk></devices></domain>",
            q.display()
        ),
    )
    .expect("write");
    env.create_vault();
    env.ok(&["item", "add", "vm", "app", "--domain-xml", xml.to_str().expect("utf8")]);
    env.backup("app", 0);
    let ls = env.ok(&["recoverypoint", "ls", "app", "latest", "/"]);
    assert!(ls.contains("vda") && ls.contains("domain.xml"), "{ls}");
    let ls = env.ok(&["recoverypoint", "ls", "app", "latest", "/vda/etc"]);
    assert!(ls.contains("hosts"), "{ls}");
    let out = env.path("out");
    env.ok(&["restore", "app", "--path", "/vda/etc/hosts", "--target", out.to_str().expect("utf8")]);
    assert_eq!(fs::read(out.join("vda/etc/hosts")).expect("read"), b"127.0.0.1 localhost\n");
}

#[test]
fn a_disk_without_ext_is_refused_by_name() {
    let env = Env::new();
    let img = env.path("plain.img");
    let f = fs::File::create(&img).expect("create");
    f.set_len(8 << 20).expect("size");
    f.write_all_at(&noise(3, 1 << 20), 1 << 20).expect("write");
    env.create_vault();
    env.ok(&["item", "add", "disk", "d", "--path", img.to_str().expect("utf8")]);
    env.backup("d", 0);
    let err = env.fails(&["recoverypoint", "ls", "d", "latest", "/"]);
    assert!(
        err.contains("holds no file system boveda knows") && err.contains("reads ext2, ext3 and ext4 only"),
        "{err}"
    );
    let err = env.fails(&["restore", "d", "--path", "/x", "--target", env.path("o").to_str().expect("utf8")]);
    assert!(err.contains("reads ext2, ext3 and ext4 only"), "{err}");
}

/// A disk whose file system boveda does not read is named in the one line.
#[test]
fn a_disk_of_another_file_system_is_named() {
    let env = Env::new();
    let img = env.path("fat.img");
    fs::File::create(&img).expect("create").set_len(16 << 20).expect("size");
    let out = std::process::Command::new("mkfs.vfat").arg(&img).output().expect("mkfs.vfat (dosfstools)");
    assert!(out.status.success());
    env.create_vault();
    env.ok(&["item", "add", "disk", "d", "--path", img.to_str().expect("utf8")]);
    env.backup("d", 0);
    let err = env.fails(&["recoverypoint", "ls", "d", "latest", "/"]);
    assert!(err.contains("holds FAT (1 partition(s) looked at)") && err.contains("not XFS"), "{err}");
}

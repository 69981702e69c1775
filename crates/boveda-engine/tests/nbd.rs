//! The NBD client against QEMU's own NBD server (`qemu-nbd`, from
//! qemu-utils) on a UNIX socket: reads equal the image's bytes, block
//! status gives the allocated ranges, and a persistent dirty bitmap gives
//! exactly the ranges written since it was added.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use boveda_engine::nbd::{BASE_ALLOCATION, NbdClient, STATE_DIRTY, STATE_HOLE, dirty_bitmap_context};
use common::{Qemu, sh};

/// `qemu-nbd` serving `image` read-only on a socket, with the bitmap when
/// given; stopped when dropped.
struct Server {
    _qemu: Qemu,
    socket: PathBuf,
}

impl Server {
    fn start(dir: &Path, image: &Path, bitmap: Option<&str>) -> Server {
        let socket = dir.join("nbd.sock");
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new("qemu-nbd");
        cmd.args(["--read-only", "--persistent", "--shared=4", "--format=qcow2", "--export-name=disk"]);
        cmd.arg(format!("--socket={}", socket.display()));
        if let Some(b) = bitmap {
            cmd.arg(format!("--bitmap={b}"));
        }
        let qemu = Qemu::start(cmd.arg(image), || socket.exists());
        Server { _qemu: qemu, socket }
    }
}

fn qemu_io(image: &Path, commands: &[&str]) {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "qcow2"]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    sh(cmd.arg(image));
}

#[test]
fn reads_and_allocation_match_the_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("disk.qcow2");
    sh(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&image).arg("40M"));
    qemu_io(&image, &["write -P 0xab 1M 64k", "write -P 0x5c 20M 9M", "write -P 0x01 39M 1M"]);
    let raw = dir.path().join("disk.raw");
    sh(Command::new("qemu-img").args(["convert", "-f", "qcow2", "-O", "raw"]).arg(&image).arg(&raw));
    let expected = std::fs::read(&raw).expect("raw");

    let server = Server::start(dir.path(), &image, None);
    let mut nbd = NbdClient::connect(&server.socket, "disk", &[BASE_ALLOCATION]).expect("connect");
    assert_eq!(nbd.size(), 40 << 20);
    // the whole disk in reads larger than one request, and one odd window
    let mut all = vec![0u8; expected.len()];
    nbd.read(0, &mut all).expect("read");
    assert!(all == expected, "the disk read over NBD equals qemu-img's raw conversion");
    let mut window = vec![0u8; 100_001];
    nbd.read(20 * (1 << 20) - 7, &mut window).expect("read");
    assert_eq!(&window[..], &expected[20 * (1 << 20) - 7..20 * (1 << 20) - 7 + 100_001]);

    let extents = nbd.block_status(BASE_ALLOCATION).expect("block status");
    assert_eq!(extents.first().map(|e| e.offset), Some(0));
    assert_eq!(extents.iter().map(|e| e.len).sum::<u64>(), 40 << 20, "extents cover the disk: {extents:?}");
    let data: Vec<(u64, u64)> =
        extents.iter().filter(|e| e.flags & STATE_HOLE == 0).map(|e| (e.offset, e.len)).collect();
    // allocation is per cluster (64 KiB): each write is one run
    assert_eq!(data, vec![(1 << 20, 64 << 10), (20 << 20, 9 << 20), (39 << 20, 1 << 20)], "{extents:?}");
}

#[test]
fn a_dirty_bitmap_marks_only_what_was_written_since_it_was_added() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("disk.qcow2");
    sh(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&image).arg("64M"));
    qemu_io(&image, &["write -P 0x11 0 32M"]);
    sh(Command::new("qemu-img").args(["bitmap", "--add", "-f", "qcow2"]).arg(&image).arg("since-b1"));
    qemu_io(&image, &["write -P 0x22 4M 1M", "write -P 0x33 50M 128k"]);

    let server = Server::start(dir.path(), &image, Some("since-b1"));
    let ctx = dirty_bitmap_context("since-b1");
    let mut nbd = NbdClient::connect(&server.socket, "disk", &[BASE_ALLOCATION, &ctx]).expect("connect");
    let dirty: Vec<(u64, u64)> = nbd
        .block_status(&ctx)
        .expect("block status")
        .iter()
        .filter(|e| e.flags & STATE_DIRTY != 0)
        .map(|e| (e.offset, e.len))
        .collect();
    assert_eq!(dirty, vec![(4 << 20, 1 << 20), (50 << 20, 128 << 10)]);
    let mut b = vec![0u8; 128 << 10];
    nbd.read(50 << 20, &mut b).expect("read");
    assert!(b.iter().all(|&x| x == 0x33));

    // a context not granted is named
    drop(nbd);
    let err = NbdClient::connect(&server.socket, "disk", &["qemu:dirty-bitmap:nope"]).err().expect("refused");
    assert!(err.to_string().contains("qemu:dirty-bitmap:nope"), "{err}");
    let err = NbdClient::connect(&server.socket, "other", &[]).err().expect("refused");
    assert!(err.to_string().contains("refused"), "{err}");
}

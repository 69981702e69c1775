//! Point-in-time snapshots of disks in use, through QEMU's block layer:
//! `qemu-storage-daemon` holds two disks (qcow2 and raw) as a VM would,
//! and exposes each as a writable FUSE file that stands for the guest's
//! writes. The snapshot reads over NBD as the disks were at its instant,
//! both disks from the same instant; dirty bitmaps give the changes
//! between snapshots, also after a backup killed midway; nothing boveda
//! added stays behind.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use boveda_engine::live::{self, LiveDisk};
use boveda_engine::nbd::{NbdClient, STATE_DIRTY, dirty_bitmap_context};
use boveda_engine::qmp::QmpClient;
use boveda_engine::{
    DiskBackupOptions, DiskOutputFormat, DiskRestoreRequest, DiskSource, LiveSource, NoProgress, backup_disk,
    restore_disk,
};
use common::{Qemu, sh};
use serde_json::json;

/// The daemon, its monitor socket, and the guest's view of each disk.
struct Vm {
    _qemu: Qemu,
    qmp: PathBuf,
    guest: Vec<PathBuf>,
}

impl Vm {
    fn start(dir: &Path) -> Vm {
        let a = dir.join("vda.qcow2");
        sh(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&a).arg("16M"));
        sh(Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 0x11 1M 2M"]).arg(&a));
        let b = dir.join("vdb.img");
        let f = std::fs::File::create(&b).expect("create");
        f.set_len(8 << 20).expect("size");
        f.write_all_at(&[0x22; 512 << 10], 2 << 20).expect("write");
        let guest = vec![dir.join("guest-vda"), dir.join("guest-vdb")];
        for g in &guest {
            std::fs::File::create(g).expect("mountpoint");
        }
        let qmp = dir.join("qmp.sock");
        let ready = || qmp.exists() && std::fs::metadata(&guest[0]).is_ok_and(|m| m.len() > 0);
        let qemu = Qemu::start(
            Command::new("qemu-storage-daemon")
                .arg("--blockdev")
                .arg(format!("driver=file,node-name=vm-file-a,filename={}", a.display()))
                .args(["--blockdev", "driver=qcow2,node-name=vm-vda,file=vm-file-a"])
                .arg("--blockdev")
                .arg(format!("driver=file,node-name=vm-file-b,filename={}", b.display()))
                .args(["--blockdev", "driver=raw,node-name=vm-vdb,file=vm-file-b"])
                .arg("--export")
                .arg(format!("type=fuse,id=g0,node-name=vm-vda,mountpoint={},writable=on", guest[0].display()))
                .arg("--export")
                .arg(format!("type=fuse,id=g1,node-name=vm-vdb,mountpoint={},writable=on", guest[1].display()))
                .arg("--chardev")
                .arg(format!("socket,path={},server=on,wait=off,id=mon0", qmp.display()))
                .args(["--monitor", "chardev=mon0"]),
            ready,
        );
        Vm { _qemu: qemu, qmp, guest }
    }

    fn monitor(&self) -> QmpClient {
        QmpClient::connect(&self.qmp, Duration::from_secs(30)).expect("QMP")
    }

    /// What the guest sees on disk `i`.
    fn read(&self, i: usize) -> Vec<u8> {
        std::fs::read(&self.guest[i]).expect("read the guest's disk")
    }

    /// The guest writes `len` bytes of `byte` at `at` on disk `i`.
    fn write(&self, i: usize, at: u64, len: usize, byte: u8) {
        let f = std::fs::OpenOptions::new().write(true).open(&self.guest[i]).expect("open");
        f.write_all_at(&vec![byte; len], at).expect("write");
        f.sync_all().expect("sync");
    }
}

fn disks(qmp: &mut QmpClient, dir: &Path) -> Vec<LiveDisk> {
    let files = [("vda".to_string(), dir.join("vda.qcow2")), ("vdb".to_string(), dir.join("vdb.img"))];
    live::find_disks(qmp, &files).expect("find the disks")
}

fn read_export(s: &live::Snapshot, disk: &str, contexts: &[&str]) -> (Vec<u8>, NbdClient) {
    let mut nbd = NbdClient::connect(&s.socket, disk, contexts).expect("connect to the export");
    let mut all = vec![0u8; nbd.size() as usize];
    nbd.read(0, &mut all).expect("read");
    (all, nbd)
}

fn dirty(nbd: &mut NbdClient, bitmap: &str) -> Vec<(u64, u64)> {
    nbd.block_status(&dirty_bitmap_context(bitmap))
        .expect("block status")
        .iter()
        .filter(|e| e.flags & STATE_DIRTY != 0)
        .map(|e| (e.offset, e.len))
        .collect()
}

/// What boveda added that is still in the VM: nodes, jobs, exports.
fn leftovers(qmp: &mut QmpClient) -> Vec<String> {
    let mut out = Vec::new();
    for (cmd, key) in
        [("query-named-block-nodes", "node-name"), ("query-block-jobs", "device"), ("query-block-exports", "id")]
    {
        let list = qmp.execute(cmd, json!({})).expect(cmd);
        for x in list.as_array().cloned().unwrap_or_default() {
            if let Some(name) = x[key].as_str().filter(|n| n.starts_with(live::PREFIX)) {
                out.push(name.to_string());
            }
        }
    }
    out
}

fn bitmaps(qmp: &mut QmpClient, node: &str) -> Vec<(String, bool)> {
    let nodes = qmp.execute("query-named-block-nodes", json!({"flat": true})).expect("nodes");
    let n = nodes.as_array().and_then(|a| a.iter().find(|n| n["node-name"] == node)).cloned().expect("node");
    let mut out: Vec<(String, bool)> = n["dirty-bitmaps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|b| (b["name"].as_str().unwrap_or("").to_string(), b["recording"].as_bool().unwrap_or(false)))
        .collect();
    out.sort();
    out
}

#[test]
fn a_snapshot_reads_as_both_disks_were_at_its_instant_and_bitmaps_give_the_changes_since() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vm = Vm::start(dir.path());
    let mut qmp = vm.monitor();
    let disks = disks(&mut qmp, dir.path());
    assert_eq!(
        disks.iter().map(|d| (d.node.as_str(), d.size)).collect::<Vec<_>>(),
        [("vm-vda", 16 << 20), ("vm-vdb", 8 << 20)]
    );

    // first snapshot: no previous bitmap
    let before = [vm.read(0), vm.read(1)];
    let s1 = live::take(&mut qmp, &disks, &dir.path().join("s1"), None, "boveda-b1", &mut live::NoQuiesce)
        .expect("snapshot 1");
    assert_eq!(s1.since_previous, None);
    // the guest writes over both disks while the snapshot is read
    vm.write(0, 1 << 20, 64 << 10, 0x99);
    vm.write(1, 2 << 20, 128 << 10, 0x98);
    for (i, name) in ["vda", "vdb"].iter().enumerate() {
        let (bytes, _) = read_export(&s1, name, &[]);
        assert!(bytes == before[i], "{name} reads as it was at the snapshot's instant, not after");
    }
    assert_ne!(vm.read(0), before[0], "the guest's writes landed");
    live::finish(&mut qmp, &s1, true).expect("finish");
    assert_eq!(leftovers(&mut qmp), Vec::<String>::new());
    assert_eq!(bitmaps(&mut qmp, "vm-vda"), [("boveda-b1".to_string(), true)]);

    // second snapshot: the bitmap gives exactly what changed since the first
    vm.write(0, 5 << 20, 256 << 10, 0x77);
    let s2 = live::take(&mut qmp, &disks, &dir.path().join("s2"), Some("boveda-b1"), "boveda-b2", &mut live::NoQuiesce)
        .expect("snapshot 2");
    assert_eq!(s2.since_previous.as_deref(), Some("boveda-b1"));
    let (_, mut a) = read_export(&s2, "vda", &[&dirty_bitmap_context("boveda-b1")]);
    assert_eq!(dirty(&mut a, "boveda-b1"), [(1 << 20, 64 << 10), (5 << 20, 256 << 10)]);
    let (_, mut b) = read_export(&s2, "vdb", &[&dirty_bitmap_context("boveda-b1")]);
    assert_eq!(dirty(&mut b, "boveda-b1"), [(2 << 20, 128 << 10)]);
    drop((a, b));
    live::finish(&mut qmp, &s2, true).expect("finish");
    assert_eq!(bitmaps(&mut qmp, "vm-vda"), [("boveda-b2".to_string(), true)]);

    // a backup killed after its snapshot: its monitor connection just ends
    vm.write(1, 6 << 20, 64 << 10, 0x55);
    let s3 = live::take(&mut qmp, &disks, &dir.path().join("s3"), Some("boveda-b2"), "boveda-b3", &mut live::NoQuiesce)
        .expect("snapshot 3");
    drop(qmp);
    vm.write(0, 9 << 20, 64 << 10, 0x44);
    let mut qmp = vm.monitor();
    assert!(!leftovers(&mut qmp).is_empty(), "the killed backup left its nodes");
    live::clean_leftovers(&mut qmp).expect("clean");
    assert_eq!(leftovers(&mut qmp), Vec::<String>::new(), "nothing of the killed backup stays");
    drop(s3);
    // the next backup, whose parent is the second point, still gets every
    // change since the second snapshot: before and after the killed one's
    let s4 = live::take(&mut qmp, &disks, &dir.path().join("s4"), Some("boveda-b2"), "boveda-b4", &mut live::NoQuiesce)
        .expect("snapshot 4");
    let (bytes, mut a) = read_export(&s4, "vda", &[&dirty_bitmap_context("boveda-b2")]);
    assert_eq!(bytes, vm.read(0));
    assert_eq!(dirty(&mut a, "boveda-b2"), [(9 << 20, 64 << 10)]);
    let (_, mut b) = read_export(&s4, "vdb", &[&dirty_bitmap_context("boveda-b2")]);
    assert_eq!(dirty(&mut b, "boveda-b2"), [(6 << 20, 64 << 10)]);
    drop((a, b));
    live::finish(&mut qmp, &s4, true).expect("finish");
    assert_eq!(leftovers(&mut qmp), Vec::<String>::new());
    assert_eq!(bitmaps(&mut qmp, "vm-vdb"), [("boveda-b4".to_string(), true)]);
}

/// Backs up the snapshot's two disks into `vault`, reading only what
/// `since` marks when given; returns the point's tree and bytes read.
fn back_up(
    vault: &boveda_vault::Vault,
    s: &live::Snapshot,
    since: Option<&str>,
    parent: Option<boveda_vault::ChunkId>,
) -> (boveda_vault::ChunkId, u64) {
    let index = vault.load_index().expect("index");
    let disks = ["vda", "vdb"]
        .iter()
        .map(|d| {
            let source = LiveSource {
                socket: s.socket.clone(),
                export: d.to_string(),
                changed_since_parent: since.map(String::from),
            };
            (d.to_string(), DiskSource::Live(source))
        })
        .collect();
    let opts = DiskBackupOptions { disks, extra_files: vec![], parent_tree: parent, cancel: None };
    let out = backup_disk(vault, &index, &opts, &NoProgress).expect("backup");
    (out.tree, out.stats.bytes_read)
}

fn restored(vault: &boveda_vault::Vault, tree: &boveda_vault::ChunkId, disk: &str, dir: &Path) -> Vec<u8> {
    let index = vault.load_index().expect("index");
    let target = dir.join(format!("restored-{disk}"));
    let _ = std::fs::remove_file(&target);
    let req =
        DiskRestoreRequest { disk, target: &target, format: DiskOutputFormat::Raw, cancel: None, no_follow: false };
    restore_disk(vault, &index, tree, &req, &NoProgress).expect("restore");
    std::fs::read(&target).expect("read restored")
}

#[test]
fn a_live_backup_restores_the_snapshot_and_the_next_reads_only_what_the_bitmap_marks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vm = Vm::start(dir.path());
    let vault = common::local_vault(dir.path());
    let mut qmp = vm.monitor();
    let disks = disks(&mut qmp, dir.path());

    // full: every allocated window of both disks
    let before = [vm.read(0), vm.read(1)];
    let s1 = live::take(&mut qmp, &disks, &dir.path().join("s1"), None, "boveda-p1", &mut live::NoQuiesce)
        .expect("snapshot 1");
    vm.write(0, 2 << 20, 64 << 10, 0x99); // during the backup: not in the point
    let (t1, read1) = back_up(&vault, &s1, None, None);
    live::finish(&mut qmp, &s1, true).expect("finish");
    assert_eq!(read1, (2 << 20) + (512 << 10), "the allocated data of both disks: {read1}");
    assert!(restored(&vault, &t1, "vda", dir.path()) == before[0], "vda as it was at the snapshot");
    assert!(restored(&vault, &t1, "vdb", dir.path()) == before[1], "vdb as it was at the snapshot");

    // incremental: 64 KiB written during the first backup, 3 windows now
    vm.write(1, 7 << 20, 600 << 10, 0x42);
    let now = [vm.read(0), vm.read(1)];
    let s2 = live::take(&mut qmp, &disks, &dir.path().join("s2"), Some("boveda-p1"), "boveda-p2", &mut live::NoQuiesce)
        .expect("snapshot 2");
    let (t2, read2) = back_up(&vault, &s2, Some("boveda-p1"), Some(t1));
    live::finish(&mut qmp, &s2, true).expect("finish");
    // 1 window of vda, 3 of vdb (600 KiB from 7 MiB), of 256 KiB each
    assert_eq!(read2, 4 * (256 << 10), "only the windows the bitmap marks are read: {read2}");
    assert!(restored(&vault, &t2, "vda", dir.path()) == now[0], "vda at the second snapshot");
    assert!(restored(&vault, &t2, "vdb", dir.path()) == now[1], "vdb at the second snapshot");
    assert!(restored(&vault, &t1, "vda", dir.path()) == before[0], "the first point is unchanged");
}

/// A backup killed between starting QEMU's NBD server and adding its
/// exports leaves a server with none: the next snapshot stops it and
/// starts its own (the concurrency of a CI run once hit that window).
#[test]
fn a_backup_killed_before_its_exports_leaves_no_nbd_server_in_the_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vm = Vm::start(dir.path());
    let mut qmp = vm.monitor();
    let disks = disks(&mut qmp, dir.path());
    let socket = dir.path().join("killed-nbd.sock");
    qmp.execute("nbd-server-start", json!({"addr": {"type": "unix", "data": {"path": socket}}})).expect("server");
    drop(qmp);
    let mut qmp = vm.monitor();
    live::clean_leftovers(&mut qmp).expect("clean");
    let s = live::take(&mut qmp, &disks, &dir.path().join("s"), None, "boveda-k1", &mut live::NoQuiesce)
        .expect("the next snapshot starts its own server");
    live::finish(&mut qmp, &s, true).expect("finish");
    assert_eq!(leftovers(&mut qmp), Vec::<String>::new());
}

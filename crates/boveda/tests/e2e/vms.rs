//! Virtual machines: discovered from libvirt definitions, all disks and
//! the definition backed up together, restored as a new VM.

use crate::common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::process::Command;

use common::{Env, TwoDiskVm, domain_xml, noise, sh, two_disk_vm};

#[test]
fn a_vm_with_two_disks_is_backed_up_changed_and_restored_as_a_new_vm() {
    let env = Env::new();
    let libvirt = env.path("libvirt");
    let TwoDiskVm { xml, vda, vdb } = two_disk_vm(&env, &libvirt, "web");
    fs::write(libvirt.join("broken.xml"), "<domain><name>broken</name>").expect("write");

    env.create_vault();
    let listed = env.ok(&["item", "discover", "--libvirt-dir", libvirt.to_str().expect("utf8")]);
    assert!(listed.contains("web") && listed.contains("not protected") && listed.contains("vda="), "{listed}");
    assert!(listed.contains("malformed domain XML"), "{listed}");

    env.ok(&["item", "add", "vm", "web", "--domain-xml", xml.to_str().expect("utf8")]);
    let listed = env.ok(&["item", "discover", "--libvirt-dir", libvirt.to_str().expect("utf8")]);
    assert!(listed.contains("protected by web"), "{listed}");
    let p1 = env.backup("web", 0);
    assert_eq!(p1["stats"]["files"].as_u64(), Some(2), "both disks in one point: {p1}");
    let vdb_before = fs::read(&vdb).expect("read");

    // the guest writes to its data disk; back up again
    fs::OpenOptions::new()
        .write(true)
        .open(&vdb)
        .expect("open")
        .write_all_at(&noise(51, 1 << 20), 8 << 20)
        .expect("write");
    let p2 = env.backup("web", 0);
    assert!(p2["stats"]["bytes_new"].as_u64().expect("new") < 2 << 20, "{p2}");

    // restore the first point as a new VM; the original is untouched
    let out = env.path("restored");
    let id = p1["id"].as_str().expect("id");
    // a link where a restored disk goes (another restore may put one there)
    // is replaced, never written through
    let victim = env.path("victim");
    fs::write(&victim, b"precious").expect("write");
    fs::create_dir_all(&out).expect("mkdir");
    std::os::unix::fs::symlink(&victim, out.join("web-restored-vda.img")).expect("symlink");
    env.ok(&["restore", "web", "--point", &id[..8], "--target", out.to_str().expect("utf8")]);
    assert_eq!(fs::read(&victim).expect("read"), b"precious", "the link was not followed");
    assert!(fs::symlink_metadata(out.join("web-restored-vda.img")).expect("stat").is_file());
    let def = fs::read_to_string(out.join("web-restored.xml")).expect("definition");
    let new_vda = out.join("web-restored-vda.img");
    let new_vdb = out.join("web-restored-vdb.img");
    assert!(def.contains("<name>web-restored</name>"), "{def}");
    assert!(def.contains(&format!("file='{}'", new_vda.display())), "{def}");
    assert!(def.contains(&format!("file='{}'", new_vdb.display())), "{def}");
    assert!(!def.contains("<uuid>"), "a new VM gets a new UUID: {def}");
    sh(Command::new("qemu-img").arg("compare").arg(&vda).arg(&new_vda));
    sh(Command::new("e2fsck").arg("-fn").arg(&new_vda));
    assert_eq!(fs::read(&new_vdb).expect("read"), vdb_before, "vdb as it was at the first point");
    assert_ne!(fs::read(&vdb).expect("read"), vdb_before, "the original disk keeps its new content");
    assert_eq!(
        fs::read_to_string(&xml).expect("read"),
        domain_xml("web", &vda, &vdb),
        "the original definition is untouched"
    );

    // as qcow2
    let outq = env.path("restored-q");
    env.ok(&["restore", "web", "--target", outq.to_str().expect("utf8"), "--format", "qcow2"]);
    sh(Command::new("qemu-img").arg("compare").arg(&vdb).arg(outq.join("web-restored-vdb.qcow2")));
}

#[test]
fn bad_domain_definitions_are_refused_clearly() {
    let env = Env::new();
    env.create_vault();
    let bad = env.path("bad.xml");
    fs::write(&bad, "<domain><name>x</name><devices>").expect("write");
    let err = env.fails(&["item", "add", "vm", "x", "--domain-xml", bad.to_str().expect("utf8")]);
    assert!(err.contains("malformed domain XML"), "{err}");
    let missing = env.path("missing-disk.xml");
    fs::write(&missing, domain_xml("m", &env.path("nope.qcow2"), &env.path("nope.img"))).expect("write");
    let err = env.fails(&["item", "add", "vm", "m", "--domain-xml", missing.to_str().expect("utf8")]);
    assert!(err.contains("disk vda") && err.contains("does not exist"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// QEMU's block layer holding a VM's two disks as a running VM does
/// (`qemu-storage-daemon`, with the same locks and monitor), each also
/// exposed as a writable FUSE file that stands for the guest's writes.
struct RunningVm {
    child: std::process::Child,
    qmp: std::path::PathBuf,
    guest: Vec<std::path::PathBuf>,
}

impl RunningVm {
    fn start(env: &Env, vm: &TwoDiskVm) -> RunningVm {
        let guest = vec![env.path("guest-vda"), env.path("guest-vdb")];
        for g in &guest {
            fs::File::create(g).expect("mountpoint");
        }
        let qmp = env.path("qmp.sock");
        let child = Command::new("qemu-storage-daemon")
            .arg("--blockdev")
            .arg(format!("driver=file,node-name=f-vda,filename={}", vm.vda.display()))
            .args(["--blockdev", "driver=qcow2,node-name=vda,file=f-vda"])
            .arg("--blockdev")
            .arg(format!("driver=file,node-name=f-vdb,filename={}", vm.vdb.display()))
            .args(["--blockdev", "driver=raw,node-name=vdb,file=f-vdb"])
            .arg("--export")
            .arg(format!("type=fuse,id=g0,node-name=vda,mountpoint={},writable=on", guest[0].display()))
            .arg("--export")
            .arg(format!("type=fuse,id=g1,node-name=vdb,mountpoint={},writable=on", guest[1].display()))
            .arg("--chardev")
            .arg(format!("socket,path={},server=on,wait=off,id=mon0", qmp.display()))
            .args(["--monitor", "chardev=mon0"])
            .spawn()
            .expect("qemu-storage-daemon (qemu-utils) runs");
        let running = RunningVm { child, qmp, guest };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !running.qmp.exists() || fs::metadata(&running.guest[0]).map_or(0, |m| m.len()) == 0 {
            assert!(std::time::Instant::now() < deadline, "qemu-storage-daemon never came up");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        running
    }

    fn write(&self, disk: usize, at: u64, len: usize, byte: u8) {
        let f = fs::OpenOptions::new().write(true).open(&self.guest[disk]).expect("open");
        f.write_all_at(&vec![byte; len], at).expect("write");
        f.sync_all().expect("sync");
    }
}

impl Drop for RunningVm {
    /// SIGTERM, so that the FUSE exports unmount.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// A VM whose disks a running QEMU holds: a plain read is refused; with
/// its monitor, each backup is a snapshot of both disks at one instant,
/// the second reads only what the guest wrote, and both restore exactly.
#[test]
fn a_running_vm_is_backed_up_from_snapshots_incrementally() {
    let env = Env::new();
    let vm = two_disk_vm(&env, &env.path("libvirt"), "web");
    let running = RunningVm::start(&env, &vm);
    env.create_vault();
    let xml = vm.xml.to_str().expect("utf8");
    let err = env.fails(&["item", "add", "vm", "cold", "--domain-xml", xml]);
    assert!(err.contains("is in use by a running VM"), "{err}");
    let socket = running.qmp.to_str().expect("utf8");
    env.ok(&["item", "add", "vm", "web", "--domain-xml", xml, "--qmp", socket]);

    let (vda0, vdb0) = (guest_bytes(&running.guest[0]), guest_bytes(&running.guest[1]));
    // no guest agent: crash-consistent, with a warning (exit code 3)
    let p1 = env.backup("web", 3);
    assert_eq!(p1["stats"]["files"].as_u64(), Some(2), "{p1}");
    assert_eq!(p1["consistency"], "crash-consistent", "{p1}");
    running.write(1, 9 << 20, 600 << 10, 0x42);
    running.write(0, 20 << 20, 100 << 10, 0x43);
    let (vda1, vdb1) = (guest_bytes(&running.guest[0]), guest_bytes(&running.guest[1]));
    let p2 = env.backup("web", 3);
    let read = p2["stats"]["bytes_read"].as_u64().expect("bytes read");
    // 600 KiB at 9 MiB on vdb: 3 windows of 256 KiB; 100 KiB at 20 MiB on vda: 1
    assert_eq!(read, 4 * (256 << 10), "the second backup reads the 4 windows written: {p2}");

    for (p, vda, vdb) in [(&p1, &vda0, &vdb0), (&p2, &vda1, &vdb1)] {
        let out = env.path(&format!("restored-{}", &p["id"].as_str().expect("id")[..8]));
        env.ok(&[
            "restore",
            "web",
            "--point",
            &p["id"].as_str().expect("id")[..8],
            "--target",
            out.to_str().expect("utf8"),
        ]);
        let raw = out.join("web-restored-vda.img");
        assert!(fs::read(&raw).expect("vda") == *vda, "vda at its snapshot");
        assert!(fs::read(out.join("web-restored-vdb.img")).expect("vdb") == *vdb, "vdb at its snapshot");
    }
}

fn guest_bytes(guest: &std::path::Path) -> Vec<u8> {
    fs::read(guest).expect("read the guest's disk")
}

/// Runs one QMP command on the monitor at `socket` and returns its answer.
fn qmp(socket: &std::path::Path, command: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).expect("monitor");
    let mut lines = BufReader::new(stream.try_clone().expect("clone"));
    let mut answer = move |line: &mut String| loop {
        line.clear();
        lines.read_line(line).expect("read");
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        if v.get("return").is_some() || v.get("QMP").is_some() {
            return v;
        }
    };
    let mut line = String::new();
    answer(&mut line);
    stream.write_all(b"{\"execute\": \"qmp_capabilities\"}\n").expect("write");
    answer(&mut line);
    stream.write_all(format!("{{\"execute\": \"{command}\"}}\n").as_bytes()).expect("write");
    answer(&mut line)["return"].clone()
}

/// What boveda added that is still in the VM: nodes, jobs, exports, and
/// its bitmaps.
fn in_vm(socket: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let mut added = Vec::new();
    let mut bitmaps = Vec::new();
    for (cmd, key) in
        [("query-named-block-nodes", "node-name"), ("query-block-jobs", "device"), ("query-block-exports", "id")]
    {
        for x in qmp(socket, cmd).as_array().cloned().unwrap_or_default() {
            if let Some(name) = x[key].as_str().filter(|n| n.starts_with("boveda-")) {
                added.push(name.to_string());
            }
            if cmd == "query-named-block-nodes" {
                for b in x["dirty-bitmaps"].as_array().cloned().unwrap_or_default() {
                    bitmaps.push(format!("{}:{}", x[key].as_str().unwrap_or(""), b["name"].as_str().unwrap_or("")));
                }
            }
        }
    }
    bitmaps.sort();
    (added, bitmaps)
}

/// A live backup killed midway leaves the VM running with boveda's nodes;
/// the next backup removes them (and the killed one's temporary images),
/// and still reads only what changed since the last point. A VM restarted
/// without its (in-memory) bitmap is read in full, and the job says so.
#[test]
fn a_killed_live_backup_is_cleaned_and_a_restarted_vm_is_read_in_full() {
    let env = Env::new();
    let vm = two_disk_vm(&env, &env.path("libvirt"), "web");
    let running = RunningVm::start(&env, &vm);
    env.create_vault();
    let socket = running.qmp.clone();
    env.ok(&[
        "item",
        "add",
        "vm",
        "web",
        "--domain-xml",
        vm.xml.to_str().expect("utf8"),
        "--qmp",
        socket.to_str().expect("utf8"),
    ]);
    env.backup("web", 3);
    let (_, first) = in_vm(&socket);
    assert_eq!(first.len(), 2, "one bitmap per disk: {first:?}");

    running.write(0, 6 << 20, 64 << 10, 0x51);
    let mut child = env
        .cmd(&["protection", "backup-now", "web"])
        .env("BOVEDA_STORE_FAULTS", "latency=400ms")
        .spawn()
        .expect("spawn");
    let work = format!("boveda-live-{}-", child.id());
    let snapshot_open = || {
        fs::read_dir(std::env::temp_dir())
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(&work) && e.path().join("nbd.sock").exists())
            })
            .unwrap_or(false)
    };
    assert!(common::kill_when(&mut child, snapshot_open), "the backup ended before it could be killed");
    let (left, _) = in_vm(&socket);
    assert!(!left.is_empty(), "the killed backup left its snapshot in the VM");

    running.write(1, 3 << 20, 64 << 10, 0x52);
    let vdb_now = fs::read(&running.guest[1]).expect("read");
    let p = env.backup("web", 3);
    let (left, bitmaps) = in_vm(&socket);
    assert_eq!(left, Vec::<String>::new(), "nothing of the killed backup stays in the VM");
    assert_eq!(bitmaps.len(), 2, "one bitmap per disk again: {bitmaps:?}");
    assert!(
        !fs::read_dir(std::env::temp_dir())
            .expect("tmp")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&work)),
        "the killed backup's temporary images are removed"
    );
    // the changes before and after the killed backup, one window each
    assert_eq!(p["stats"]["bytes_read"].as_u64(), Some(2 * (256 << 10)), "{p}");
    let out = env.path("restored");
    env.ok(&["restore", "web", "--target", out.to_str().expect("utf8")]);
    assert!(fs::read(out.join("web-restored-vdb.img")).expect("vdb") == vdb_now);

    // the VM restarts: the raw disk's bitmap lived in its memory
    drop(running);
    let running = RunningVm::start(&env, &vm);
    // completed with a warning: exit code 3
    let p = env.backup("web", 3);
    let warnings = p["warnings"].to_string();
    assert!(warnings.contains("read in full"), "{p}");
    assert!(p["stats"]["bytes_read"].as_u64().expect("read") > 1 << 20, "{p}");
    drop(running);
}

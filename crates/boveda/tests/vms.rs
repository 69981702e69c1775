//! Virtual machines: discovered from libvirt definitions, all disks and
//! the definition backed up together, restored as a new VM.

mod common;

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
    env.ok(&["restore", "web", "--point", &id[..8], "--target", out.to_str().expect("utf8")]);
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

    let (vda0, vdb0) = (sh_out(&running.guest[0]), sh_out(&running.guest[1]));
    let p1 = env.backup("web", 0);
    assert_eq!(p1["stats"]["files"].as_u64(), Some(2), "{p1}");
    running.write(1, 9 << 20, 600 << 10, 0x42);
    running.write(0, 20 << 20, 100 << 10, 0x43);
    let (vda1, vdb1) = (sh_out(&running.guest[0]), sh_out(&running.guest[1]));
    let p2 = env.backup("web", 0);
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

fn sh_out(guest: &std::path::Path) -> Vec<u8> {
    fs::read(guest).expect("read the guest's disk")
}

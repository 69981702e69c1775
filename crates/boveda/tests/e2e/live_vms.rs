//! VMs backed up while they run in a real QEMU (`qemu-system-x86_64`):
//! the disks written through QEMU's monitor before, during and after the
//! snapshot instant; a tiny Debian guest whose agent freezes its file
//! systems for that instant; and a point served over NBD (instant restore).

use crate::common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, TwoDiskVm, sh, two_disk_vm};

/// A VM running in QEMU with the two disks of a [`TwoDiskVm`] (qcow2 `vda`
/// and raw `vdb`), booting the test guest when asked.
pub(super) struct QemuVm {
    child: Child,
    /// The monitor boveda uses.
    pub(super) qmp: PathBuf,
    /// A second monitor, the test's: QEMU serves one client per monitor.
    test_qmp: PathBuf,
    console: PathBuf,
}

/// The test guest's kernel and initramfs (scripts/test-guest.sh, built
/// once from Debian's packages).
pub(crate) fn test_guest() -> PathBuf {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools/guest");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-guest.sh");
    sh(Command::new("bash").arg(script).arg(&out));
    out
}

impl QemuVm {
    pub(super) fn start(env: &Env, vm: &TwoDiskVm, guest: Option<&Path>, agent: Option<&Path>) -> QemuVm {
        let qmp = env.path("qmp.sock");
        let test_qmp = env.path("test-qmp.sock");
        let console = env.path("console.log");
        // those of a QEMU killed before
        let _ = fs::remove_file(&qmp);
        let _ = fs::remove_file(&test_qmp);
        let mut cmd = Command::new("qemu-system-x86_64");
        // software emulation: the same on every machine, nested or not
        cmd.args(["-accel", "tcg", "-m", "256", "-nodefaults", "-display", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .arg("-blockdev")
            .arg(format!("driver=file,node-name=f-vda,filename={}", vm.vda.display()))
            .args(["-blockdev", "driver=qcow2,node-name=vda,file=f-vda"])
            .args(["-device", "virtio-blk-pci,drive=vda,id=disk-vda"])
            .arg("-blockdev")
            .arg(format!("driver=file,node-name=f-vdb,filename={}", vm.vdb.display()))
            .arg("-blockdev")
            .arg(format!(
                "driver={},node-name=vdb,file=f-vdb",
                if vm.vdb.extension().is_some_and(|e| e == "qcow2") { "qcow2" } else { "raw" }
            ))
            .args(["-device", "virtio-blk-pci,drive=vdb,id=disk-vdb"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", test_qmp.display()));
        if let Some(g) = guest {
            cmd.arg("-kernel")
                .arg(g.join("vmlinuz"))
                .arg("-initrd")
                .arg(g.join("initrd.img"))
                .args(["-append", "console=ttyS0 quiet panic=-1"]);
        }
        if let Some(a) = agent {
            cmd.arg("-chardev")
                .arg(format!("socket,path={},server=on,wait=off,id=qga0", a.display()))
                .args(["-device", "virtio-serial", "-device"])
                .arg("virtserialport,chardev=qga0,name=org.qemu.guest_agent.0");
        }
        let child = cmd.stdout(Stdio::null()).spawn().expect("qemu-system-x86_64 (qemu-system-x86) runs");
        let vm = QemuVm { child, qmp, test_qmp, console };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !vm.qmp.exists() || !vm.test_qmp.exists() {
            assert!(Instant::now() < deadline, "QEMU never opened its monitor");
            std::thread::sleep(Duration::from_millis(20));
        }
        vm
    }

    /// Waits for the test guest to say it is ready (under emulation, it
    /// takes some seconds to boot).
    fn wait_for_guest(&self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let console = fs::read_to_string(&self.console).unwrap_or_default();
            if console.contains("boveda-guest-ready") {
                return;
            }
            assert!(Instant::now() < deadline, "the guest never booted: {console}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Writes `len` bytes of `byte` at `at` into disk `dev` through the
    /// guest's own device, as the guest would (qemu-io in QEMU's monitor).
    pub(super) fn write(&self, dev: &str, at: u64, len: u64, byte: u8) {
        let cmd = format!("qemu-io -d disk-{dev}/virtio-backend \"write -P {byte:#x} {at} {len}\"");
        let out = qmp(&self.test_qmp, "human-monitor-command", serde_json::json!({"command-line": cmd}));
        // QEMU 7.2 prints qemu-io's own output elsewhere; the points show the writes
        assert!(out.as_str().is_some_and(|o| !o.contains("rror")), "{cmd}: {out}");
    }
}

impl QemuVm {
    /// Shuts QEMU down cleanly (SIGTERM): it stores qcow2 bitmaps.
    pub(super) fn stop(mut self) {
        sh(Command::new("kill").arg(self.child.id().to_string()));
        let _ = self.child.wait();
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one QMP command on the monitor at `socket`; its answer.
fn qmp(socket: &Path, command: &str, arguments: serde_json::Value) -> serde_json::Value {
    // QEMU makes the socket file a moment before it listens on it: a
    // connection refused in that moment is tried again (seen in CI under load)
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut stream = loop {
        match UnixStream::connect(socket) {
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("monitor {}: {e}", socket.display()),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut lines = BufReader::new(stream.try_clone().expect("clone"));
    let mut answer = move || loop {
        let mut line = String::new();
        lines.read_line(&mut line).expect("read");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        if v.get("return").is_some() || v.get("QMP").is_some() {
            return v;
        }
        assert!(v.get("error").is_none(), "{command}: {v}");
    };
    answer();
    stream.write_all(b"{\"execute\": \"qmp_capabilities\"}\n").expect("write");
    answer();
    let request = serde_json::json!({"execute": command, "arguments": arguments});
    stream.write_all(format!("{request}\n").as_bytes()).expect("write");
    answer()["return"].clone()
}

/// What boveda added that is still in the VM (nodes, jobs, exports), and
/// its bitmaps.
fn added_to_vm(socket: &Path) -> (Vec<String>, usize) {
    let mut added = Vec::new();
    let mut bitmaps = 0;
    for (cmd, key) in
        [("query-named-block-nodes", "node-name"), ("query-block-jobs", "device"), ("query-block-exports", "id")]
    {
        for x in qmp(socket, cmd, serde_json::json!({})).as_array().cloned().unwrap_or_default() {
            if let Some(name) = x[key].as_str().filter(|n| n.starts_with("boveda-")) {
                added.push(name.to_string());
            }
            bitmaps += x["dirty-bitmaps"].as_array().map_or(0, Vec::len);
        }
    }
    (added, bitmaps)
}

/// A disk's guest content as raw bytes (qcow2 converted).
fn raw_content(env: &Env, image: &Path, name: &str) -> PathBuf {
    let out = env.path(name);
    sh(Command::new("qemu-img").args(["convert", "-U", "-O", "raw"]).arg(image).arg(&out));
    out
}

fn write_pattern(file: &Path, at: u64, len: u64, byte: u8) {
    let f = fs::OpenOptions::new().write(true).open(file).expect("open");
    f.write_all_at(&vec![byte; len as usize], at).expect("write");
}

pub(super) fn restore_point(env: &Env, item: &str, point: &serde_json::Value, dir: &str) -> PathBuf {
    let out = env.path(dir);
    let id = &point["id"].as_str().expect("id")[..8];
    env.ok(&["restore", item, "--point", id, "--target", out.to_str().expect("utf8")]);
    out
}

pub(super) fn same_bytes(a: &Path, b: &Path) -> bool {
    fs::read(a).expect("read") == fs::read(b).expect("read")
}

pub(super) const MIB: u64 = 1 << 20;
const WINDOW: u64 = 256 << 10;

/// A running VM's disks written before, during and after the snapshot:
/// each point holds both disks as they were at its instant, an incremental
/// backup reads what was written, nothing boveda added stays in the VM,
/// and a plain read of its disks is refused.
#[test]
fn a_running_qemu_vm_is_backed_up_at_one_instant_while_its_disks_are_written() {
    let env = Env::new();
    let vm = two_disk_vm(&env, &env.path("libvirt"), "web");
    // the guest's view at the start: QEMU changes nothing until written
    let vda = raw_content(&env, &vm.vda, "expected-vda.raw");
    let vdb = env.path("expected-vdb.raw");
    fs::copy(&vm.vdb, &vdb).expect("copy");
    let qemu = QemuVm::start(&env, &vm, None, None);
    env.create_vault();
    let xml = vm.xml.to_str().expect("utf8");
    let err = env.fails(&["item", "add", "vm", "cold", "--domain-xml", xml]);
    assert!(err.contains("is in use by a running VM"), "QEMU's locks are seen: {err}");
    let socket = qemu.qmp.to_str().expect("utf8");
    env.ok(&["item", "add", "vm", "web", "--domain-xml", xml, "--qmp", socket]);

    // without a guest agent, crash-consistent, and the job says so
    let p1 = env.backup("web", 3);
    assert_eq!(p1["consistency"], "crash-consistent", "{p1}");
    assert!(p1["warnings"].to_string().contains("no guest agent channel"), "{p1}");
    let r1 = restore_point(&env, "web", &p1, "r1");
    assert!(same_bytes(&r1.join("web-restored-vda.img"), &vda), "vda at the first snapshot");
    assert!(same_bytes(&r1.join("web-restored-vdb.img"), &vdb), "vdb at the first snapshot");

    // written before the second backup: 1 MiB on vda, 2 MiB on vdb
    qemu.write("vda", 10 * MIB, MIB, 0x41);
    qemu.write("vdb", 6 * MIB, 2 * MIB, 0x42);
    write_pattern(&vda, 10 * MIB, MIB, 0x41);
    write_pattern(&vdb, 6 * MIB, 2 * MIB, 0x42);
    let (vda2, vdb2) = (env.path("expected-vda-2.raw"), env.path("expected-vdb-2.raw"));
    fs::copy(&vda, &vda2).expect("copy");
    fs::copy(&vdb, &vdb2).expect("copy");

    // written while the second backup reads its snapshot (a slow store)
    let mut child = env
        .cmd(&["--output", "json", "protection", "backup-now", "web"])
        .env("BOVEDA_STORE_FAULTS", "latency=300ms")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    // the snapshot's NBD socket, in the backup's temporary folder
    let work = format!("boveda-live-{}-", child.id());
    let exported = || {
        fs::read_dir(std::env::temp_dir())
            .expect("tmp")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&work) && e.path().join("nbd.sock").exists())
    };
    while !exported() {
        assert!(Instant::now() < deadline, "the snapshot was never exported");
        assert!(child.try_wait().expect("wait").is_none(), "the backup ended before the snapshot was seen");
        std::thread::sleep(Duration::from_millis(10));
    }
    qemu.write("vda", 10 * MIB, MIB, 0x61);
    qemu.write("vdb", 12 * MIB, MIB / 2, 0x62);
    let mut out = String::new();
    child.stdout.take().expect("stdout").read_to_string(&mut out).expect("read");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(3), "crash-consistent again: {out}");
    let p2: serde_json::Value = serde_json::from_str(&out).expect("point json");
    assert_eq!(
        p2["stats"]["bytes_read"].as_u64(),
        Some((MIB + 2 * MIB) / WINDOW * WINDOW),
        "only what was written before the snapshot is read: {p2}"
    );
    let r2 = restore_point(&env, "web", &p2, "r2");
    assert!(same_bytes(&r2.join("web-restored-vda.img"), &vda2), "vda as at the snapshot, not after");
    assert!(same_bytes(&r2.join("web-restored-vdb.img"), &vdb2), "vdb from the same instant as vda");

    // the writes during the backup go to the next point
    write_pattern(&vda, 10 * MIB, MIB, 0x61);
    write_pattern(&vdb, 12 * MIB, MIB / 2, 0x62);
    let p3 = env.backup("web", 3);
    assert_eq!(p3["stats"]["bytes_read"].as_u64(), Some(MIB + MIB / 2), "{p3}");
    let r3 = restore_point(&env, "web", &p3, "r3");
    assert!(same_bytes(&r3.join("web-restored-vda.img"), &vda), "vda at the third snapshot");
    assert!(same_bytes(&r3.join("web-restored-vdb.img"), &vdb), "vdb at the third snapshot");

    let (added, bitmaps) = added_to_vm(&qemu.test_qmp);
    assert!(added.is_empty(), "nothing boveda added stays in the VM: {added:?}");
    assert_eq!(bitmaps, 2, "one dirty bitmap per disk, for the next backup");
    let status = qmp(&qemu.test_qmp, "query-status", serde_json::json!({}));
    assert_eq!(status["status"], "running", "{status}");
}

/// Whether the guest's agent says its file systems are frozen.
fn guest_frozen(agent: &Path) -> String {
    let mut s = UnixStream::connect(agent).expect("agent");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.write_all(b"{\"execute\": \"guest-sync-delimited\", \"arguments\": {\"id\": 77}}\n").expect("write");
    s.write_all(b"{\"execute\": \"guest-fsfreeze-status\"}\n").expect("write");
    let mut r = BufReader::new(s);
    let mut line = Vec::new();
    loop {
        line.clear();
        r.read_until(b'\n', &mut line).expect("read");
        line.retain(|&b| b != 0xff);
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap_or_default();
        if let Some(state) = v["return"].as_str() {
            return state.to_string();
        }
    }
}

/// A file the guest wrote without syncing it is in the point only when the
/// guest agent froze the file systems for the snapshot: the point is then
/// file-system-consistent (app-consistent with the item's scripts), its
/// ext4 checks clean, and the guest runs on thawed.
#[test]
fn a_guest_with_an_agent_is_frozen_for_the_snapshot_instant() {
    let guest = test_guest();
    let env = Env::new();
    let vm = two_disk_vm(&env, &env.path("libvirt"), "app");
    let agent = env.path("qga.sock");
    // the definition names the agent's channel, as libvirt writes it
    let xml = fs::read_to_string(&vm.xml).expect("read").replace(
        "  </devices>",
        &format!(
            "    <channel type='unix'>\n      <source mode='bind' path='{}'/>\n      <target type='virtio' name='org.qemu.guest_agent.0'/>\n    </channel>\n  </devices>",
            agent.display()
        ),
    );
    fs::write(&vm.xml, xml).expect("write");
    let qemu = QemuVm::start(&env, &vm, Some(&guest), Some(&agent));
    qemu.wait_for_guest();
    env.create_vault();
    let (xml, socket) = (vm.xml.to_str().expect("utf8"), qemu.qmp.to_str().expect("utf8"));

    // an agent that does not answer: crash-consistent, the unsynced file absent
    let nowhere = env.path("no-agent.sock");
    fs::write(&nowhere, "").expect("a socket nobody listens on");
    let nowhere = nowhere.to_str().expect("utf8");
    env.ok(&["item", "add", "vm", "crash", "--domain-xml", xml, "--qmp", socket, "--guest-agent", nowhere]);
    let p = env.backup("crash", 3);
    assert_eq!(p["consistency"], "crash-consistent", "{p}");
    assert!(p["warnings"].to_string().contains("no guest agent answers"), "{p}");
    let r = restore_point(&env, "crash", &p, "r-crash");
    let greeting = sh(Command::new("debugfs").args(["-R", "cat /greeting"]).arg(r.join("crash-restored-vda.img")));
    assert!(!greeting.contains("never synced"), "a crash-consistent point lacks what was in the guest's cache");

    // through the definition's channel: frozen for the instant
    let pre = env.path("pre.sh");
    let post = env.path("post.sh");
    fs::write(&pre, format!("#!/bin/sh\ntouch {}\n", env.path("pre-ran").display())).expect("write");
    fs::write(&post, format!("#!/bin/sh\ntouch {}\n", env.path("post-ran").display())).expect("write");
    sh(Command::new("chmod").arg("+x").arg(&pre).arg(&post));
    env.ok(&["item", "add", "vm", "app", "--domain-xml", xml, "--qmp", socket]);
    let p = env.backup("app", 0);
    assert_eq!(p["consistency"], "file-system-consistent", "{p}");
    assert!(p["freeze_ms"].as_u64().is_some(), "the stall is recorded: {p}");
    assert_eq!(guest_frozen(&agent), "thawed", "the guest runs on");
    let r = restore_point(&env, "app", &p, "r-app");
    let vda = r.join("app-restored-vda.img");
    let greeting = sh(Command::new("debugfs").args(["-R", "cat /greeting"]).arg(&vda));
    assert!(greeting.contains("written by the guest, never synced"), "the freeze flushed it: {greeting:?}");
    sh(Command::new("e2fsck").arg("-fn").arg(&vda));
    let jobs = env.ok(&["--output", "json", "job", "list"]);
    assert!(jobs.contains("frozen for"), "the job reports the stall: {jobs}");

    // with the item's scripts too: app-consistent, the scripts around the instant
    let cfg = env.path("scripts.json");
    fs::write(
        &cfg,
        serde_json::json!({"preScriptLocation": pre, "postScriptLocation": post, "timeoutInSeconds": 30}).to_string(),
    )
    .expect("write");
    env.ok(&[
        "item",
        "add",
        "vm",
        "app2",
        "--domain-xml",
        xml,
        "--qmp",
        socket,
        "--consistency-config",
        cfg.to_str().expect("utf8"),
    ]);
    let p = env.backup("app2", 0);
    assert_eq!(p["consistency"], "app-consistent", "{p}");
    assert!(env.path("pre-ran").exists() && env.path("post-ran").exists(), "both scripts ran");
    assert_eq!(guest_frozen(&agent), "thawed");
}

/// Instant restore: the disks of a point served over NBD read back
/// byte-identical, take no writes, and a VM's qcow2 overlay over them
/// takes its writes; an unknown disk is refused by name, and Ctrl-C ends
/// the export and removes its socket.
#[test]
fn a_point_is_served_over_nbd_for_an_instant_restore() {
    let env = Env::new();
    let vm = two_disk_vm(&env, &env.path("libvirt"), "web");
    env.create_vault();
    env.ok(&["item", "add", "vm", "web", "--domain-xml", vm.xml.to_str().expect("utf8")]);
    env.backup("web", 0);
    env.ok(&["item", "add", "files", "docs", "--path", env.path("web-guest-files").to_str().expect("utf8")]);
    env.backup("docs", 0);

    let socket = env.path("point.sock");
    let s = socket.to_str().expect("utf8");
    let err = env.fails(&["restore", "docs", "--serve-nbd", s]);
    assert!(err.contains("holds files, not disks"), "{err}");
    let usage = env.run(&["restore", "web", "--serve-nbd", s, "--target", "/tmp/x"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("cannot be used with"), "{usage:?}");

    let mut child = env.cmd(&["restore", "web", "--serve-nbd", s]).stdout(Stdio::piped()).spawn().expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
    let mut banner = String::new();
    while !banner.contains("Ctrl-C") {
        assert!(lines.read_line(&mut banner).expect("read") > 0, "the export never started: {banner}");
    }
    assert!(banner.contains(&format!("nbd+unix:///vda?socket={s}")), "{banner}");
    let url = |disk: &str| format!("nbd+unix:///{disk}?socket={s}");
    sh(Command::new("qemu-img").arg("compare").arg(&vm.vda).arg(url("vda")));
    sh(Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "raw"]).arg(&vm.vdb).arg(url("vdb")));
    let unknown = Command::new("qemu-img").args(["info", &url("vdc")]).output().expect("run");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no disk \"vdc\""), "{unknown:?}");
    let write = Command::new("qemu-io").args(["-f", "raw", "-c", "write 0 4096", &url("vdb")]).output().expect("run");
    assert!(!String::from_utf8_lossy(&write.stdout).contains("wrote"), "a read-only export: {write:?}");

    // a VM boots from the point through an overlay that takes its writes
    let overlay = env.path("overlay.qcow2");
    sh(Command::new("qemu-img").args(["create", "-f", "qcow2", "-F", "raw", "-b", &url("vdb")]).arg(&overlay));
    let wrote =
        sh(Command::new("qemu-io").args(["-c", "write -P 0x77 1M 64k", "-c", "read -P 0x77 1M 64k"]).arg(&overlay));
    assert!(wrote.contains("wrote") && wrote.contains("read"), "{wrote}");
    sh(Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "raw"]).arg(&vm.vdb).arg(url("vdb")));

    sh(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let status = child.wait().expect("wait");
    assert!(status.success(), "Ctrl-C ends the export cleanly: {status:?}");
    assert!(!socket.exists(), "the socket is removed");
}

/// A definition that passes QEMU a monitor for boveda (libvirt keeps its
/// own): no `--qmp` is needed; while the VM runs its points are live
/// snapshots, once it is shut off its disk files are read as they lie.
#[test]
fn a_vm_whose_definition_names_a_monitor_is_backed_up_live_while_it_runs_and_from_files_when_off() {
    let env = Env::new();
    let vm = two_disk_vm(&env, &env.path("libvirt"), "web");
    let monitor = env.path("qmp.sock");
    let xml = fs::read_to_string(&vm.xml)
        .expect("read")
        .replace("<domain type='kvm'>", "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>")
        .replace(
            "</domain>",
            &format!(
                "  <qemu:commandline>\n    <qemu:arg value='-qmp'/>\n    <qemu:arg value='unix:{},server=on,wait=off'/>\n  </qemu:commandline>\n</domain>",
                monitor.display()
            ),
        );
    fs::write(&vm.xml, xml).expect("write");
    let qemu = QemuVm::start(&env, &vm, None, None);
    assert_eq!(qemu.qmp, monitor);
    env.create_vault();
    env.ok(&["item", "add", "vm", "web", "--domain-xml", vm.xml.to_str().expect("utf8")]);
    let p1 = env.backup("web", 3);
    assert!(p1["live_bitmap"].as_str().is_some_and(|b| b.starts_with("boveda-")), "a live snapshot: {p1}");
    qemu.write("vdb", 2 * MIB, MIB, 0x33);
    let p2 = env.backup("web", 3);
    assert_eq!(p2["stats"]["bytes_read"].as_u64(), Some(MIB), "{p2}");

    drop(qemu);
    let p3 = env.backup("web", 0);
    assert!(p3["live_bitmap"].is_null(), "read from the files: {p3}");
    assert_eq!(p3["consistency"], "crash-consistent");
    let r3 = restore_point(&env, "web", &p3, "r3");
    assert!(same_bytes(&r3.join("web-restored-vdb.img"), &vm.vdb), "vdb as QEMU left it");
    let vdb = fs::read(r3.join("web-restored-vdb.img")).expect("read");
    assert!(
        vdb[2 * MIB as usize..3 * MIB as usize].iter().all(|&b| b == 0x33),
        "the write through QEMU is on the disk"
    );
}

/// A domain libvirt runs; destroyed and undefined on drop.
struct LibvirtVm {
    name: String,
    console: PathBuf,
}

impl LibvirtVm {
    fn start(env: &Env, vm: &TwoDiskVm, name: &str, guest: &Path) -> LibvirtVm {
        let console = env.path("libvirt-console.log");
        let xml = format!(
            r#"<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{vda}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{vdb}'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <serial type='file'><source path='{console}'/></serial>
  </devices>
</domain>
"#,
            kernel = guest.join("vmlinuz").display(),
            initrd = guest.join("initrd.img").display(),
            vda = vm.vda.display(),
            vdb = vm.vdb.display(),
            console = console.display(),
        );
        fs::write(&vm.xml, xml).expect("write");
        sh(Command::new("virsh").arg("define").arg(&vm.xml));
        let started = LibvirtVm { name: name.to_string(), console };
        sh(Command::new("virsh").args(["start", name]));
        started
    }

    fn wait_for_guest(&self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !fs::read_to_string(&self.console).unwrap_or_default().contains("boveda-guest-ready") {
            assert!(Instant::now() < deadline, "the guest never booted");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A QMP command through libvirt's monitor.
    fn qmp(&self, command: &str) -> serde_json::Value {
        let out = sh(Command::new("virsh").args([
            "qemu-monitor-command",
            &self.name,
            &serde_json::json!({"execute": command}).to_string(),
        ]));
        serde_json::from_str::<serde_json::Value>(&out).expect("json")["return"].clone()
    }

    /// Writes through the guest's device `virtio-disk<n>` (libvirt's names).
    fn write(&self, disk: usize, at: u64, len: u64, byte: u8) {
        let cmd = format!("qemu-io -d virtio-disk{disk}/virtio-backend \"write -P {byte:#x} {at} {len}\"");
        let out = sh(Command::new("virsh").args(["qemu-monitor-command", &self.name, "--hmp", &cmd]));
        assert!(!out.contains("rror"), "{cmd}: {out}");
    }
}

impl Drop for LibvirtVm {
    fn drop(&mut self) {
        let _ = Command::new("virsh").args(["destroy", &self.name]).output();
        let _ = Command::new("virsh").args(["undefine", &self.name]).output();
    }
}

/// A VM that libvirt runs needs nothing but its definition: boveda sees
/// that libvirt runs it, speaks to its QEMU through libvirt's monitor
/// (`virsh qemu-monitor-command`) and freezes it through libvirt (which
/// holds the guest agent); the point is file-system-consistent, the next
/// reads what was written, nothing boveda added stays, and once libvirt
/// stops the VM its files are read.
#[test]
fn a_vm_that_libvirt_runs_is_backed_up_live_through_libvirt() {
    let guest = test_guest();
    let env = Env::new();
    let name = common::unique("boveda-test");
    let vm = two_disk_vm(&env, &env.path("libvirt"), &name);
    let domain = LibvirtVm::start(&env, &vm, &name, &guest);
    domain.wait_for_guest();
    env.create_vault();
    env.ok(&["item", "add", "vm", "web", "--domain-xml", vm.xml.to_str().expect("utf8")]);

    let p1 = env.backup("web", 0);
    assert_eq!(p1["consistency"], "file-system-consistent", "{p1}");
    assert!(p1["live_bitmap"].as_str().is_some(), "{p1}");
    let r1 = restore_point(&env, "web", &p1, "r1");
    let greeting =
        sh(Command::new("debugfs").args(["-R", "cat /greeting"]).arg(r1.join(format!("{name}-restored-vda.img"))));
    assert!(greeting.contains("never synced"), "frozen through libvirt: {greeting:?}");

    domain.write(1, 5 * MIB, MIB, 0x5a);
    let p2 = env.backup("web", 0);
    // what was written, and what the guest's own freeze and thaw wrote
    // (its ext4 superblock and journal)
    let read = p2["stats"]["bytes_read"].as_u64().expect("read");
    assert!((MIB..=MIB + 4 * WINDOW).contains(&read), "{p2}");
    let r2 = restore_point(&env, "web", &p2, "r2");
    let vdb = fs::read(r2.join(format!("{name}-restored-vdb.img"))).expect("read");
    assert!(vdb[5 * MIB as usize..6 * MIB as usize].iter().all(|&b| b == 0x5a));
    let nodes = domain.qmp("query-named-block-nodes").to_string();
    assert!(!nodes.contains("boveda-fleece"), "no temporary node stays: {nodes}");
    assert!(domain.qmp("query-block-exports").as_array().is_some_and(Vec::is_empty));

    sh(Command::new("virsh").args(["destroy", &name]));
    let p3 = env.backup("web", 0);
    assert!(p3["live_bitmap"].is_null(), "read from its files once stopped: {p3}");

    // issue 22, 13: the restored VM (its qcow2 disk restored as raw) is
    // defined and started by libvirt as written
    let restored = r1.join(format!("{name}-restored.xml"));
    let def = fs::read_to_string(&restored).expect("restored definition");
    assert!(!def.contains("type='qcow2'") && def.matches("type='raw'").count() == 2, "{def}");
    let copy = LibvirtVm { name: format!("{name}-restored"), console: domain.console.clone() };
    sh(Command::new("virsh").arg("define").arg(&restored));
    sh(Command::new("virsh").args(["start", &copy.name]));
    let state = sh(Command::new("virsh").args(["domstate", &copy.name]));
    assert!(state.contains("running"), "{state}");
}

/// A QEMU killed outright loses the bitmaps it held in memory and leaves
/// a qcow2 disk's stored bitmap marked inconsistent: the next backup of
/// the restarted VM removes it, reads every disk in full with a warning,
/// and the one after is incremental again.
#[test]
fn a_vm_whose_qemu_was_killed_is_read_in_full_and_then_incrementally_again() {
    let env = Env::new();
    let mut vm = two_disk_vm(&env, &env.path("libvirt"), "web");
    // both disks qcow2: both bitmaps stored, both inconsistent after the kill
    let vdb = env.path("web-vdb.qcow2");
    sh(Command::new("qemu-img").args(["convert", "-O", "qcow2"]).arg(&vm.vdb).arg(&vdb));
    let xml = fs::read_to_string(&vm.xml).expect("read").replace(
        &format!("<driver name='qemu' type='raw'/>\n      <source file='{}'/>", vm.vdb.display()),
        &format!("<driver name='qemu' type='qcow2'/>\n      <source file='{}'/>", vdb.display()),
    );
    fs::write(&vm.xml, xml).expect("write");
    vm.vdb = vdb;
    let qemu = QemuVm::start(&env, &vm, None, None);
    env.create_vault();
    let xml = vm.xml.to_str().expect("utf8");
    env.ok(&["item", "add", "vm", "web", "--domain-xml", xml, "--qmp", qemu.qmp.to_str().expect("utf8")]);
    env.backup("web", 3);
    // shut down cleanly: vda's bitmap is stored in the image, and loaded
    // (marked in use) by the next QEMU, which is then killed
    qemu.stop();
    let qemu = QemuVm::start(&env, &vm, None, None);
    qemu.write("vda", 3 * MIB, MIB, 0x21);
    drop(qemu);

    let qemu = QemuVm::start(&env, &vm, None, None);
    let nodes = qmp(&qemu.test_qmp, "query-named-block-nodes", serde_json::json!({})).to_string();
    assert_eq!(
        nodes.matches("\"inconsistent\":true").count(),
        2,
        "QEMU marks the stored bitmaps inconsistent: {nodes}"
    );
    let p = env.backup("web", 3);
    assert!(p["warnings"].to_string().contains("read in full"), "{p}");
    // every allocated byte of both disks
    assert!(p["stats"]["bytes_read"].as_u64().expect("read") > 3 * MIB, "{p}");
    qemu.write("vdb", 7 * MIB, MIB, 0x22);
    let p = env.backup("web", 3);
    assert_eq!(p["stats"]["bytes_read"].as_u64(), Some(MIB), "incremental again: {p}");
    let (added, bitmaps) = added_to_vm(&qemu.test_qmp);
    assert!(added.is_empty(), "{added:?}");
    assert_eq!(bitmaps, 2, "the inconsistent bitmap is gone, one per disk remains");
}

//! A VM on a registered host, backed up there by the host (real QEMU,
//! real processes): live while it runs, incrementally by the dirty bitmap
//! its last point started, and from its disk files once it is off; each
//! point restores on the server's side to the disks as they were.

use std::fs;

use crate::common::{Env, two_disk_vm};
use crate::fleet::{admin, credentials, fleet_vault, host_cmd, register, run, serve, text};
use crate::live_vms::{MIB, QemuVm, same_bytes};

/// A host's backup, which ends with `code` (3: completed with warnings).
fn backup_json(env: &Env, host: &str, item: &str, code: i32) -> serde_json::Value {
    let out = run(host_cmd(env, host, &["--output", "json", "host", "backup", item]));
    assert_eq!(out.status.code(), Some(code), "{}\n{}", text(&out.stdout), text(&out.stderr));
    serde_json::from_str(&text(&out.stdout)).expect("backup json")
}

fn points(env: &Env, item: &str) -> Vec<serde_json::Value> {
    let out = admin(env, &["--output", "json", "recoverypoint", "list", item]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    list.as_array().expect("points").iter().map(|p| p["point"].clone()).collect()
}

#[test]
fn a_vm_on_a_registered_host_is_backed_up_there_live_while_it_runs_and_from_its_files_when_off() {
    let (env, cert, key, port) = fleet_vault(Env::new());
    let server = serve(&env, port, &cert, &key, &[]);
    register(&env, "web1", &credentials(&env, &server.url, &cert, "web1", "48h"));
    let vm = two_disk_vm(&env, &env.path("libvirt"), "web");
    let qemu = QemuVm::start(&env, &vm, None, None);
    let (xml, qmp) = (vm.xml.to_str().expect("utf8"), qemu.qmp.to_str().expect("utf8"));
    admin(&env, &["item", "add", "vm", "web", "--domain-xml", xml, "--qmp", qmp, "--host", "web1"]);
    // the server's own backup of it is refused: it runs on the host
    let err = env.fails(&["--vault", "test-vault", "protection", "backup-now", "web"]);
    assert!(err.contains("registered host"), "{err}");

    let first = backup_json(&env, "web1", "web", 3);
    assert!(first["stats"]["bytes_read"].as_u64().expect("read") > 2 * MIB, "what the disks hold, read: {first}");
    assert!(text_of(&first).contains("crash-consistent"), "no guest agent: said so: {first}");
    let p1 = points(&env, "web").pop().expect("a point");
    assert!(p1["live_bitmap"].as_str().is_some_and(|b| b.starts_with("boveda-")), "a live snapshot: {p1}");
    assert_eq!(p1["hostname"], "web1");

    // written through QEMU: the next backup reads only that
    qemu.write("vdb", 2 * MIB, MIB, 0x33);
    let second = backup_json(&env, "web1", "web", 3);
    assert_eq!(second["stats"]["bytes_read"].as_u64(), Some(MIB), "incremental by the bitmap: {second}");

    // off: read from its files, the write on the disk
    qemu.stop();
    let third = backup_json(&env, "web1", "web", 0);
    assert!(third["stats"]["bytes_read"].as_u64().expect("read") > 0, "{third}");
    let p3 = points(&env, "web").pop().expect("a point");
    assert!(p3["live_bitmap"].is_null(), "from the files: {p3}");
    let out = env.path("r3");
    let id = &p3["id"].as_str().expect("id")[..8];
    admin(&env, &["restore", "web", "--point", id, "--target", out.to_str().expect("utf8")]);
    assert!(same_bytes(&out.join("web-restored-vdb.img"), &vm.vdb), "vdb as QEMU left it");
    let vdb = fs::read(out.join("web-restored-vdb.img")).expect("read");
    assert!(vdb[2 * MIB as usize..3 * MIB as usize].iter().all(|&b| b == 0x33), "the write is on the disk");
    assert!(out.join("domain.xml").exists() || fs::read_dir(&out).expect("dir").count() >= 2);
    // a host taken over names a file of the server as its VM's kernel:
    // the server's verification refuses to boot it
    let def = fs::read_to_string(&vm.xml).expect("read");
    let def = def.replacen(
        "<devices>",
        "<os><type arch='x86_64'>hvm</type><kernel>/etc/shadow</kernel></os>\n  <devices>",
        1,
    );
    fs::write(&vm.xml, def).expect("write");
    backup_json(&env, "web1", "web", 0);
    let out = env
        .cmd(&["--vault", "test-vault", "recoverypoint", "verify", "web", "--accel", "tcg", "--time-limit", "5"])
        .output()
        .expect("verify");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("boots a kernel file of its host directly"), "{err}");
    admin(&env, &["vault", "check", "--read-data"]);
    drop(server);
}

fn text_of(v: &serde_json::Value) -> String {
    v.to_string()
}

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

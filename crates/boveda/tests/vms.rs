//! Virtual machines: discovered from libvirt definitions, all disks and
//! the definition backed up together, restored as a new VM.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::{Env, noise};

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn domain_xml(name: &str, vda: &Path, vdb: &Path) -> String {
    format!(
        r#"<domain type='kvm'>
  <name>{name}</name>
  <uuid>2b8e5a4c-9d1f-4c2a-8f3e-6a7b8c9d0e1f</uuid>
  <memory unit='MiB'>512</memory>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{}'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/nonexistent/install.iso'/>
      <target dev='sda' bus='sata'/>
    </disk>
  </devices>
</domain>
"#,
        vda.display(),
        vdb.display()
    )
}

#[test]
fn a_vm_with_two_disks_is_backed_up_changed_and_restored_as_a_new_vm() {
    let env = Env::new();
    let libvirt = env.path("libvirt");
    fs::create_dir_all(&libvirt).expect("mkdir");
    // vda: qcow2 holding ext4 made from real files; vdb: a sparse raw data disk
    let files = env.path("guest-files");
    fs::create_dir_all(&files).expect("mkdir");
    for i in 0..5 {
        fs::write(files.join(format!("f{i}")), noise(i, 400_000)).expect("write");
    }
    let raw_root = env.path("root.raw");
    fs::File::create(&raw_root).expect("create").set_len(32 << 20).expect("size");
    sh(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&files).arg(&raw_root));
    let vda = env.path("web-vda.qcow2");
    sh(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&raw_root).arg(&vda));
    let vdb = env.path("web-vdb.img");
    let f = fs::File::create(&vdb).expect("create");
    f.set_len(16 << 20).expect("size");
    f.write_all_at(&noise(50, 300_000), 4 << 20).expect("write");
    drop(f);
    let xml = libvirt.join("web.xml");
    fs::write(&xml, domain_xml("web", &vda, &vdb)).expect("write");
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

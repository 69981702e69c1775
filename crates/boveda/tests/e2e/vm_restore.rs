//! Azure's restore options for a VM point, with a VM libvirt defines and
//! runs (scripts/libvirt.sh starts libvirtd for the tests): a new VM
//! (defined, started, its own UUID), refused when the name is taken, and
//! the disks of the existing VM replaced with safety copies kept.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{self, Env};
use crate::live_vms::test_guest;

fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh").args(args).output().expect("virsh");
    assert!(out.status.success(), "virsh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Domains undefined (and their copies) when the test ends.
struct Undefine(Vec<String>);

impl Drop for Undefine {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("virsh").args(["destroy", n]).output();
            let _ = Command::new("virsh").args(["undefine", n]).output();
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

/// A UEFI VM restored as a new VM gets variables of its own, restored
/// from its point: the copy names a file of its own beside its disks (the
/// original's is not shared) that holds the original's boot entries, and
/// boots by them under libvirt (its loader is found only by its entry).
#[test]
fn a_uefi_vm_restored_as_a_new_vm_boots_by_its_own_copy_of_the_variables() {
    let env = Env::new();
    env.create_vault();
    let name = common::unique("boveda-efi");
    let copy = format!("{name}-copy");
    let _cleanup = UndefineUefi(vec![name.clone(), copy.clone()]);
    let nvram = env.path("web_VARS.fd");
    let entry = fs::read(test_guest().join("boot-entry-vars.fd")).expect("variables");
    fs::write(&nvram, &entry).expect("write");
    let os = format!(
        "<os><type arch='x86_64' machine='pc'>hvm</type>\
         <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\
         <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>{}</nvram></os>\n  <features><acpi/></features>",
        nvram.display()
    );
    define_test_vm(&env, &name, "boot-entry.img", &os);
    let dir = env.path("copies");
    env.ok(&["restore", "web", "--as-new-vm", &copy, "--target", s(&dir)]);
    let own = dir.join(format!("{copy}_VARS.fd"));
    assert!(fs::read(&own).expect("the copy's variables") == entry, "the point's variables, byte for byte");
    virsh(&["start", &copy]);
    assert_eq!(virsh(&["domstate", &copy]), "running");
    let copy_xml = virsh(&["dumpxml", &copy]);
    assert!(copy_xml.contains(&format!(">{}</nvram>", own.display())), "{copy_xml}");
    assert!(!copy_xml.contains(s(&nvram)), "the copy has variables of its own: {copy_xml}");
    assert!(virsh(&["dumpxml", &name]).contains(s(&nvram)), "the original keeps its own");
    assert!(fs::read(&nvram).expect("original's") == entry, "and they are untouched");
    // it booted by UEFI, by its boot entry: the firmware names itself on
    // the console, then the guest
    let console = env.path("console.log");
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen = String::new();
    while Instant::now() < deadline && !seen.contains("boveda-guest-ready") {
        std::thread::sleep(Duration::from_millis(500));
        seen = String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
    }
    assert!(seen.contains("boveda-guest-ready") && seen.contains("EDK II"), "{seen}");
}

/// The test guest's disk `image` copied for a VM `name` that libvirt
/// defines with the `<os>` (and features) given, protected as item `web`
/// and backed up once; the disk's path.
fn define_test_vm(env: &Env, name: &str, image: &str, os: &str) -> std::path::PathBuf {
    let disk = env.path("vda.img");
    let out = Command::new("cp").arg("--sparse=always").arg(test_guest().join(image)).arg(&disk).output();
    assert!(out.expect("cp").status.success());
    let xml = env.path("vm.xml");
    fs::write(
        &xml,
        format!(
            "<domain type='qemu'>\n  <name>{name}</name>\n  <memory unit='MiB'>256</memory>\n  <vcpu>1</vcpu>\n  \
             {os}\n  <devices>\n    \
             <emulator>/usr/bin/qemu-system-x86_64</emulator>\n    <disk type='file' device='disk'>\n      \
             <driver name='qemu' type='raw'/>\n      <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    \
             </disk>\n    <serial type='file'><source path='{}'/></serial>\n  </devices>\n</domain>\n",
            disk.display(),
            env.path("console.log").display()
        ),
    )
    .expect("write");
    virsh(&["define", s(&xml)]);
    env.ok(&["item", "add", "vm", "web", "--domain-xml", s(&xml)]);
    env.backup("web", 0);
    disk
}

/// UEFI domains undefined with their variables when the test ends.
struct UndefineUefi(Vec<String>);

impl Drop for UndefineUefi {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("virsh").args(["destroy", n]).output();
            let _ = Command::new("virsh").args(["undefine", "--nvram", n]).output();
        }
    }
}

#[test]
fn a_vm_point_restores_as_a_new_vm_or_over_the_disks_of_the_vm_with_safety_copies() {
    let env = Env::new();
    // geo-redundant: the last restore reads the secondary (cross-region)
    let secondary = env.path("secondary");
    let store = env.store.clone();
    env.ok(&[
        "vault",
        "create",
        "test-vault",
        "--store",
        &store,
        "--redundancy",
        "grs",
        "--secondary",
        s(&secondary),
        "--insecure-fast-kdf",
    ]);
    let name = common::unique("boveda-vmr");
    let _cleanup = Undefine(vec![name.clone(), format!("{name}-copy"), format!("{name}-dr")]);
    let disk = define_test_vm(&env, &name, "boot.img", "<os><type arch='x86_64' machine='pc'>hvm</type></os>");
    let backed_up = fs::read(&disk).expect("read");
    // the VM's disk changes after the point
    let mut changed = backed_up.clone();
    changed[40 << 20..41 << 20].fill(0x5a);
    fs::write(&disk, &changed).expect("write");

    // a new VM: defined in libvirt, its own UUID, started
    let dir = env.path("copies");
    let copy = format!("{name}-copy");
    env.ok(&["restore", "web", "--as-new-vm", &copy, "--target", s(&dir), "--start"]);
    assert_eq!(virsh(&["domstate", &copy]), "running");
    assert_ne!(virsh(&["domuuid", &copy]), virsh(&["domuuid", &name]));
    let copy_xml = virsh(&["dumpxml", &copy]);
    let copy_disk = dir.join(format!("{copy}-vda.img"));
    assert!(copy_xml.contains(s(&copy_disk)), "{copy_xml}");
    assert!(fs::read(&copy_disk).expect("read") == backed_up, "the new VM's disk is the point's");
    // the name is taken now: refused in one line, nothing written
    let err = env.fails(&["restore", "web", "--as-new-vm", &copy, "--target", s(&env.path("again"))]);
    assert!(err.contains(&format!("a VM named {copy} already exists")), "{err}");
    assert!(!env.path("again").exists());

    // replace the disks of the VM, shut off: the point's bytes in place,
    // the disk before kept beside, the definition kept
    let before = virsh(&["dumpxml", &name]);
    env.ok(&["restore", "web", "--replace-disks"]);
    assert!(fs::read(&disk).expect("read") == backed_up, "the VM's disk is the point's");
    let copies: serde_json::Value =
        serde_json::from_str(&env.ok(&["--output", "json", "recoverypoint", "safety-copies"])).expect("json");
    let safety = copies[0]["path"].as_str().expect("a safety copy").to_string();
    assert!(safety.starts_with(s(&disk)) && safety.contains(".boveda-safety-"), "{safety}");
    assert!(fs::read(&safety).expect("read") == changed, "the safety copy holds the disk before");
    assert_eq!(virsh(&["dumpxml", &name]), before, "the definition is kept");
    env.ok(&["recoverypoint", "safety-copies", "--remove", &safety]);
    assert!(!Path::new(&safety).exists());

    // a running VM is replaced only when the name is confirmed
    virsh(&["start", &name]);
    let err = env.fails(&["restore", "web", "--replace-disks"]);
    assert!(err.contains(&format!("VM {name} is running")) && err.contains("confirm"), "{err}");
    let started = Instant::now();
    env.ok(&["restore", "web", "--replace-disks", "--confirm", &name]);
    assert_eq!(virsh(&["domstate", &name]), "shut off");
    assert!(started.elapsed() < Duration::from_secs(120));
    assert!(fs::read(&disk).expect("read") == backed_up);

    // cross-region: with the primary gone, a new VM from the secondary
    let away = env.path("primary-away");
    fs::rename(&env.vault, &away).expect("hide the primary");
    let dr = format!("{name}-dr");
    env.ok(&["restore", "web", "--from-secondary", "--as-new-vm", &dr, "--target", s(&env.path("dr"))]);
    fs::rename(&away, &env.vault).expect("put the primary back");
    assert_eq!(virsh(&["domstate", &dr]), "shut off", "defined, not started");
    assert!(fs::read(env.path("dr").join(format!("{dr}-vda.img"))).expect("read") == backed_up);
}

/// Restored files are named after the VM's stored name. One that is not a
/// VM name (a space) gives files named after the item, and the restore
/// says so; one that would lead out of the target folder (`../../x`, as a
/// registered host could write) is not taken as a definition at all.
#[test]
fn a_vm_whose_stored_name_is_not_a_vm_name_is_restored_under_its_items_name() {
    let env = Env::new();
    env.create_vault();
    let disk = env.path("vda.img");
    fs::write(&disk, common::noise(7, 1 << 20)).expect("disk");
    let definition = |name: &str| {
        let xml = env.path("vm.xml");
        fs::write(
            &xml,
            format!(
                "<domain type='kvm'>\n  <name>{name}</name>\n  <devices>\n    <disk type='file' device='disk'>\n      \
                 <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n",
                disk.display()
            ),
        )
        .expect("write");
        xml
    };
    let err = env.fails(&["item", "add", "vm", "away", "--domain-xml", s(&definition("../../x"))]);
    assert!(err.contains("<name> is not a name libvirt takes"), "{err}");
    env.ok(&["item", "add", "vm", "web", "--domain-xml", s(&definition("web site"))]);
    env.backup("web", 0);
    let dir = env.path("out");
    let out = env.run(&["restore", "web", "--target", s(&dir)]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "completed with a warning: {said}");
    assert!(said.contains("is not a VM name: the restored VM is named after the item"), "{said}");
    assert!(fs::read(dir.join("web-restored-vda.img")).expect("disk") == fs::read(&disk).expect("source"));
    let xml = fs::read_to_string(dir.join("web-restored.xml")).expect("definition");
    assert!(xml.contains("<name>web-restored</name>"), "{xml}");
    let names: Vec<_> = fs::read_dir(&dir).expect("dir").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

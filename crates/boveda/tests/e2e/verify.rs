//! Proving points (`boveda recoverypoint verify`): VM points booted in an
//! isolated QEMU from the vault (the test guest's disks boot by themselves:
//! BIOS, syslinux, Debian's kernel, an initramfs with the guest agent),
//! file and disk points restored to scratch and compared byte by byte.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{self, Env, noise};
use crate::live_vms::test_guest;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

fn json(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&env.ok(&all)).expect("json")
}

/// A VM item `name` whose one disk is a copy of the test guest's `disk`
/// (`boot.img` or `boot-noagent.img`); the copy's path.
fn vm_item(env: &Env, name: &str, disk: &str) -> PathBuf {
    vm_item_os(env, name, disk, "<os><type arch='x86_64' machine='pc'>hvm</type></os>")
}

/// As [`vm_item`], with the definition's `<os>` element.
fn vm_item_os(env: &Env, name: &str, disk: &str, os: &str) -> PathBuf {
    let image = env.path(&format!("{name}.img"));
    let out = Command::new("cp").arg("--sparse=always").arg(test_guest().join(disk)).arg(&image).output().expect("cp");
    assert!(out.status.success());
    let xml = env.path(&format!("{name}.xml"));
    fs::write(
        &xml,
        format!(
            "<domain type='kvm'>\n  <name>{name}</name>\n  <memory unit='MiB'>256</memory>\n  <vcpu>1</vcpu>\n  \
             {os}\n  <devices>\n    \
             <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      \
             <source file='{}'/>\n      <target dev='vda' bus='virtio'/>\n    </disk>\n  </devices>\n</domain>\n",
            image.display()
        ),
    )
    .expect("write");
    env.ok(&["item", "add", "vm", name, "--domain-xml", s(&xml)]);
    image
}

/// Verify under software emulation: the same on every machine, nested or not.
fn verify(env: &Env, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--output", "json", "recoverypoint", "verify", "--accel", "tcg"];
    all.extend_from_slice(args);
    env.cmd(&all).env("TMPDIR", env.path("tmp")).output().expect("run boveda")
}

fn verified(out: &std::process::Output) -> Vec<serde_json::Value> {
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    })
}

fn new_env() -> Env {
    let env = Env::new();
    fs::create_dir_all(env.path("tmp")).expect("mkdir");
    env.create_vault();
    env
}

/// A good point boots: its guest agent answers, the probe command runs in
/// the guest, the point's list shows it verified, and the point's disk is
/// still what was backed up (the boot wrote only to a temporary overlay).
#[test]
fn a_vm_point_boots_from_the_vault_and_its_guest_agent_and_probe_answer() {
    let env = new_env();
    let image = vm_item(&env, "web", "boot.img");
    let p = env.backup("web", 0);
    let out = verify(&env, &["web", "--probe-command", "/bin/busybox cat /proc/uptime"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let v = &verified(&out)[0];
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["kind"], "Boot");
    assert_eq!(v["boot"]["answered_by"], "guest agent");
    assert_eq!(v["boot"]["accelerator"], "tcg");
    assert_eq!(v["boot"]["memory_mib"], 256, "the definition's memory, under the cap");
    assert!(v["boot"]["seconds_to_answer"].as_f64().is_some_and(|s| s > 0.5), "{v}");
    assert_eq!(v["boot"]["probe"]["passed"], true, "{v}");
    assert!(v["boot"]["probe"]["output"].as_str().is_some_and(|o| o.contains('.')), "uptime printed: {v}");
    // only what the boot touched was read: the kernel and initramfs, not the 64 MiB disk
    let read = v["bytes_read"].as_u64().expect("bytes_read");
    assert!(read > 1 << 20 && read < 32 << 20, "{read}");

    let points = json(&env, &["recoverypoint", "list", "web"]);
    assert_eq!(points[0]["verification"]["passed"], true, "{points}");
    assert_eq!(points[0]["point"]["id"], p["id"]);
    // the vault was not written: the point restores as the disk was
    let target = env.path("restored");
    env.ok(&["restore", "web", "--target", s(&target)]);
    assert!(fs::read(target.join("web-restored-vda.img")).expect("read") == fs::read(&image).expect("read"));
    let jobs = json(&env, &["job", "list", "--operation", "VerifyPoint"]);
    assert_eq!(jobs[0]["state"], "Completed", "{jobs}");
    assert!(fs::read_dir(env.path("tmp")).expect("tmp").next().is_none(), "the work folder is removed");
}

/// A UEFI VM boots with this machine's own firmware (OVMF) and fresh
/// variables, by its removable-media path: the definition's loader and
/// NVRAM paths are never opened (here they name /etc/shadow and
/// /etc/passwd, as a hostile host's definition could).
#[test]
fn a_uefi_vm_point_boots_with_this_machines_firmware_not_its_definitions_paths() {
    let env = new_env();
    vm_item_os(
        &env,
        "efi",
        "boot.img",
        "<os><type arch='x86_64' machine='q35'>hvm</type>\
         <loader readonly='yes' type='pflash'>/etc/shadow</loader><nvram>/etc/passwd</nvram></os>",
    );
    // the file the definition names as its variables is not one: it is
    // not kept in the point, and the backup warns
    let point = env.backup("efi", 3);
    assert!(
        point["warnings"].to_string().contains("UEFI variables /etc/passwd are not kept (not a UEFI variable store)"),
        "{point}"
    );
    // the guest's kernel sees UEFI's tables only when UEFI booted it
    let out =
        verify(&env, &["efi", "--time-limit", "300", "--probe-command", "/bin/busybox test -d /sys/firmware/efi"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let v = &verified(&out)[0];
    assert_eq!((v["passed"].as_bool(), v["boot"]["answered_by"].as_str()), (Some(true), Some("guest agent")), "{v}");
    assert_eq!(v["boot"]["probe"]["passed"], true, "booted by UEFI: {v}");
    assert_eq!(v["boot"]["firmware_vars"], "fresh: the point holds none", "{v}");
    assert!(
        fs::read_dir(env.path("tmp")).expect("tmp").next().is_none(),
        "the work folder, and its variables, removed"
    );
}

/// A UEFI guest whose loader is found only by a boot entry in its
/// variables (none at the removable-media path, as many installed systems
/// are) boots from a point that keeps its variables, even once the file
/// they came from is gone; the same disk in a point without them does not
/// boot.
#[test]
fn a_uefi_vm_that_boots_only_by_its_boot_entry_is_verified_with_the_variables_its_point_keeps() {
    let env = new_env();
    let vars = env.path("entry_VARS.fd");
    fs::copy(test_guest().join("boot-entry-vars.fd"), &vars).expect("variables");
    let os = |nvram: &str| format!("<os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type>{nvram}</os>");
    vm_item_os(&env, "entry", "boot-entry.img", &os(&format!("<nvram>{}</nvram>", vars.display())));
    assert_eq!(env.backup("entry", 0)["warnings"], serde_json::json!([]));
    // a verification boots with what the point keeps, never the file
    fs::write(&vars, b"changed since").expect("overwrite");
    let probe = "/bin/busybox test -d /sys/firmware/efi";
    let out = verify(&env, &["entry", "--time-limit", "300", "--probe-command", probe]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let v = &verified(&out)[0];
    assert_eq!((v["passed"].as_bool(), v["boot"]["firmware_vars"].as_str()), (Some(true), Some("the point's")), "{v}");
    assert_eq!(v["boot"]["probe"]["passed"], true, "booted by UEFI: {v}");

    // the control: without the variables, UEFI finds nothing to boot on
    // the disk (its console says so, not only a time limit that ran out)
    vm_item_os(&env, "fresh", "boot-entry.img", &os(""));
    env.backup("fresh", 0);
    let out = verify(&env, &["fresh", "--time-limit", "60"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let v = &verified(&out)[0];
    assert_eq!(
        (v["passed"].as_bool(), v["boot"]["firmware_vars"].as_str()),
        (Some(false), Some("fresh: the point holds none")),
        "{v}"
    );
    let tail = v["boot"]["console_tail"].to_string();
    assert!(tail.contains("BdsDxe: failed to load Boot0001") && tail.contains("Not Found"), "{tail}");
}

/// A point whose kernel was damaged on the disk does not boot: the
/// verification fails in its time limit with the console's last lines
/// (syslinux loaded the kernel, nothing after), and raises an alert.
#[test]
fn a_point_whose_boot_files_were_damaged_fails_with_its_console_lines_and_an_alert() {
    let env = new_env();
    let image = vm_item(&env, "web", "boot.img");
    // the kernel's bytes on the disk, past its first page: zeros
    let kernel = fs::read(test_guest().join("vmlinuz")).expect("kernel");
    let mut disk = fs::read(&image).expect("disk");
    let at = disk.windows(4096).position(|w| w == &kernel[..4096]).expect("the kernel is on the disk");
    disk[at + 4096..at + 4096 + (2 << 20)].fill(0);
    fs::write(&image, &disk).expect("write");
    env.backup("web", 0);

    let out = verify(&env, &["web", "--time-limit", "30"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("verification failed: web"));
    let v = &verified(&out)[0];
    assert_eq!(v["passed"], false);
    assert!(v["reason"].as_str().is_some_and(|r| r.contains("did not answer within 30 s")), "{v}");
    let tail = v["boot"]["console_tail"].to_string();
    assert!(tail.contains("Loading vmlinuz"), "{tail}");
    assert!(!tail.contains("boveda-guest-ready"), "{tail}");

    let alerts = json(&env, &["alert", "list"]);
    let alert = alerts.as_array().expect("alerts").iter().find(|a| a["operation"] == "VerifyPoint").expect("alert");
    assert_eq!(alert["severity"], "Critical", "{alert}");
    let shown = json(&env, &["recoverypoint", "show", "web", "latest"]);
    assert_eq!(shown["verification"]["passed"], false);
}

/// A guest that runs no agent is verified by a marker on its console.
#[test]
fn a_guest_without_an_agent_is_verified_by_its_console_marker() {
    let env = new_env();
    vm_item(&env, "quiet", "boot-noagent.img");
    env.backup("quiet", 0);
    let out = verify(&env, &["quiet", "--marker", "boveda-guest-ready", "--save"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let v = &verified(&out)[0];
    assert_eq!(v["boot"]["answered_by"], "console marker", "{v}");
    // saved on the item: the next verification needs no flags
    let out = verify(&env, &["quiet"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    assert_eq!(verified(&out)[0]["boot"]["answered_by"], "console marker");
}

/// Two VM points are verified at once, each in its own QEMU.
#[test]
fn two_vm_points_are_verified_at_once() {
    let env = new_env();
    vm_item(&env, "web", "boot.img");
    vm_item(&env, "db", "boot.img");
    env.backup("web", 0);
    env.backup("db", 0);
    let started = Instant::now();
    let out = verify(&env, &["web", "db", "--max-memory-mib", "256"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let both = verified(&out);
    assert_eq!(both.len(), 2);
    assert!(both.iter().all(|v| v["passed"] == true), "{both:?}");
    // at once: the jobs' times overlap
    let jobs = json(&env, &["job", "list", "--operation", "VerifyPoint"]);
    let span = |j: &serde_json::Value| {
        let t = |k: &str| j[k].as_str().expect("time").parse::<jiff::Timestamp>().expect("ts");
        (t("start"), t("end"))
    };
    let (a, b) = (span(&jobs[0]), span(&jobs[1]));
    assert!(a.0 < b.1 && b.0 < a.1, "the two verifications overlap: {jobs}");
    eprintln!("two verifications at once: {:.1} s", started.elapsed().as_secs_f64());
    // each counts what its own boot read, not the other's too: about what
    // one boot alone reads (counted for the process, each was about twice)
    let alone = verified(&verify(&env, &["web", "--max-memory-mib", "256"]))[0]["bytes_read"].as_u64().expect("read");
    for v in &both {
        let read = v["bytes_read"].as_u64().expect("read");
        assert!(read * 4 <= alone * 5, "{} read {read} bytes at once, {alone} alone", v["item_name"]);
    }
}

fn qemu_of(dir: &Path) -> Vec<u32> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline);
        if text.starts_with("qemu-system") && text.contains(s(dir)) {
            found.push(pid);
        }
    }
    found
}

/// boveda killed with kill -9 while its guest boots leaves no QEMU
/// running, and the next verification removes what it left in TMPDIR.
#[test]
fn a_verify_killed_with_kill_9_leaves_no_qemu_running() {
    let env = new_env();
    vm_item(&env, "web", "boot.img");
    env.backup("web", 0);
    let tmp = env.path("tmp");
    let mut child = env
        .cmd(&["recoverypoint", "verify", "web", "--accel", "tcg"])
        .env("TMPDIR", &tmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(60);
    while qemu_of(&tmp).is_empty() {
        assert!(Instant::now() < deadline, "QEMU never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    child.kill().expect("kill -9");
    child.wait().expect("wait");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !qemu_of(&tmp).is_empty() {
        assert!(Instant::now() < deadline, "QEMU outlived boveda: {:?}", qemu_of(&tmp));
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<_> = fs::read_dir(&tmp).expect("tmp").flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 1, "the killed verification's work folder: {left:?}");
    let out = verify(&env, &["web"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    assert!(fs::read_dir(&tmp).expect("tmp").next().is_none(), "removed by the next verification");
    let _ = common::unique("x");
}

/// A file item's drill restores every file to scratch, compares each
/// chunk, records the restore time, and removes the scratch folder; a
/// sample restores about its share; a damaged pack fails the drill,
/// named, with an alert.
#[test]
fn a_restore_drill_compares_every_byte_and_records_the_recovery_time() {
    let env = new_env();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    for i in 0..200 {
        fs::write(src.join("sub").join(format!("f{i:03}")), noise(i, 3000 + i as usize * 50)).expect("write");
    }
    fs::write(src.join("big.bin"), noise(7, 3 << 20)).expect("write");
    let sparse = fs::File::create(src.join("sparse.img")).expect("create");
    sparse.set_len(8 << 20).expect("hole");
    env.ok(&["item", "add", "files", "docs", "--path", s(&src)]);
    env.backup("docs", 0);
    let scratch = env.path("scratch");
    fs::create_dir_all(&scratch).expect("mkdir");

    let out = verify(&env, &["docs", "--scratch", s(&scratch)]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let v = &verified(&out)[0];
    assert_eq!(v["kind"], "Drill");
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["drill"]["files"], 202, "{v}");
    assert!(v["drill"]["chunks_compared"].as_u64().is_some_and(|c| c >= 202), "{v}");
    assert!(v["drill"]["restore_seconds"].as_f64().is_some_and(|s| s > 0.0));
    assert!(fs::read_dir(&scratch).expect("scratch").next().is_none(), "scratch removed");

    let out = verify(&env, &["docs", "--scratch", s(&scratch), "--sample", "10%"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let v = &verified(&out)[0];
    let files = v["drill"]["files"].as_u64().expect("files");
    assert!((5..=50).contains(&files), "about a tenth of 202 files: {files}");
    assert_eq!(v["drill"]["sample_percent"], 10);
    assert!(v["drill"]["full_restore_seconds"].as_f64() >= v["drill"]["restore_seconds"].as_f64(), "{v}");

    // a pack damaged in the store: the drill fails and names it
    let packs = common::walk_files(&env.vault.join("packs").join("data"));
    let pack = packs.iter().max_by_key(|p| fs::metadata(p).map(|m| m.len()).unwrap_or(0)).expect("a pack");
    let mut bytes = fs::read(pack).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(pack, &bytes).expect("write");
    let out = verify(&env, &["docs", "--scratch", s(&scratch)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let name = pack.file_name().expect("name").to_string_lossy();
    assert!(err.contains(&name[..16]), "names the damaged pack: {err}");
    // recorded on the point as failed, with the reason
    let v = &verified(&out)[0];
    assert_eq!(v["passed"], false, "{v}");
    assert!(v["reason"].as_str().is_some_and(|r| r.contains(&name[..16])), "{v}");
    let points = json(&env, &["recoverypoint", "list", "docs"]);
    assert_eq!(points[0]["verification"]["passed"], false, "the last drill shown: {points}");
    let alerts = json(&env, &["alert", "list"]);
    assert!(alerts.as_array().expect("alerts").iter().any(|a| a["operation"] == "VerifyPoint"), "{alerts}");
    assert!(fs::read_dir(&scratch).expect("scratch").next().is_none(), "scratch removed after a failure too");
}

/// A drill whose scratch folder has less room than the data it would
/// restore is refused before it writes anything, saying how much each is
/// (it failed on whichever file filled the disk); the refusal is recorded.
#[test]
fn a_drill_into_a_scratch_folder_too_small_is_refused_before_it_writes() {
    if !common::is_root() {
        eprintln!(
            "a_drill_into_a_scratch_folder_too_small_is_refused_before_it_writes needs root to mount a small tmpfs; CI runs it as root"
        );
        return;
    }
    let env = new_env();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("big.bin"), noise(11, 3 << 20)).expect("write");
    // a hole takes no room: 64 MiB apparent, nothing to write
    fs::File::create(src.join("sparse.img")).expect("create").set_len(64 << 20).expect("hole");
    // a small file takes a whole block (4 KiB on tmpfs)
    for i in 0..20 {
        fs::write(src.join(format!("s{i:02}")), b"small").expect("write");
    }
    env.ok(&["item", "add", "files", "docs", "--path", s(&src)]);
    env.backup("docs", 0);
    let small = env.path("small");
    let _disk = common::Tmpfs::mount(&small, "2m");
    let out = verify(&env, &["docs", "--scratch", s(&small)]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bytes free; the drill restores 3227648 bytes of data"), "3 MiB and 20 blocks: {err}");
    assert!(fs::read_dir(&small).expect("scratch").next().is_none(), "nothing written");
    let v = &verified(&out)[0];
    assert_eq!(v["passed"], false, "{v}");
    // with room for the data it runs: the 64 MiB sparse file takes none
    let big = env.path("big");
    let _room = common::Tmpfs::mount(&big, "8m");
    let out = verify(&env, &["docs", "--scratch", s(&big)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(verified(&out)[0]["drill"]["files"], 22);
    // room for the bytes, not for as many files
    let few = env.path("few");
    let _inodes = common::Tmpfs::mount(&few, "8m,nr_inodes=10");
    let out = verify(&env, &["docs", "--scratch", s(&few)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more files; the drill restores 22"), "{err}");
    assert!(fs::read_dir(&few).expect("scratch").next().is_none(), "nothing written");
    // two drills at once into a file system with room for one at a time:
    // the second waits for the first instead of filling the disk
    let other = env.path("other");
    fs::create_dir_all(&other).expect("mkdir");
    fs::write(other.join("more.bin"), noise(12, 3 << 20)).expect("write");
    env.ok(&["item", "add", "files", "more", "--path", s(&other)]);
    env.backup("more", 0);
    let five = env.path("five");
    let _five = common::Tmpfs::mount(&five, "5m");
    let out = verify(&env, &["docs", "more", "--scratch", s(&five)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(verified(&out).iter().all(|v| v["passed"] == true));
    // they did run at once (the second waiting inside its job)
    let jobs = json(&env, &["job", "list", "--operation", "VerifyPoint"]);
    let span = |j: &serde_json::Value| {
        let t = |k: &str| j[k].as_str().expect("time").parse::<jiff::Timestamp>().expect("ts");
        (t("start"), t("end"))
    };
    let all = jobs.as_array().expect("jobs");
    let (a, b) = (span(&all[all.len() - 2]), span(&all[all.len() - 1]));
    assert!(a.0 < b.1 && b.0 < a.1, "the two drills overlap: {jobs}");
}

/// A disk item's drill restores its image and compares it.
#[test]
fn a_disk_items_drill_restores_the_image_and_compares_it() {
    let env = new_env();
    let disk = env.path("disk.img");
    let mut bytes = noise(3, 6 << 20);
    bytes[1 << 20..2 << 20].fill(0);
    fs::write(&disk, &bytes).expect("write");
    env.ok(&["item", "add", "disk", "d", "--path", s(&disk)]);
    env.backup("d", 0);
    let out = verify(&env, &["d"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let v = &verified(&out)[0];
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["drill"]["bytes"], 6 << 20, "{v}");
}

/// A policy that verifies every 3 days: over 10 days of daily backups the
/// agent drills the newest point right after its backup, once in 3 days.
#[test]
fn a_policy_verifies_the_newest_point_every_n_days() {
    let env = new_env();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a.bin"), noise(1, 100_000)).expect("write");
    env.ok(&["item", "add", "files", "docs", "--path", s(&src)]);
    env.ok(&["policy", "create", "daily", "--time", "02:00", "--time-zone", "UTC", "--daily-keep", "30"]);
    env.ok(&["policy", "update", "daily", "--verify-every-days", "3"]);
    let fake = |t: &str, args: &[&str]| env.cmd(args).env("BOVEDA_FAKE_NOW", t).env("TMPDIR", env.path("tmp")).output();
    let out = fake("2026-01-01T00:00:00Z", &["protection", "enable", "docs", "--policy", "daily"]).expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = fake("2026-01-01T00:00:00Z", &["agent", "--until", "2026-01-10T12:00:00Z"]).expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let jobs = json(&env, &["job", "list", "--operation", "VerifyPoint"]);
    let jobs = jobs.as_array().expect("jobs");
    // days 1, 4, 7 and 10
    assert_eq!(jobs.len(), 4, "{jobs:?}");
    assert!(jobs.iter().all(|j| j["state"] == "Completed"), "{jobs:?}");
    let points = json(&env, &["recoverypoint", "list", "docs"]);
    let verified = points.as_array().expect("points").iter().filter(|p| p["verification"]["passed"] == true).count();
    assert_eq!(verified, 4, "{points}");
    let policy = json(&env, &["policy", "show", "daily"]);
    assert_eq!(policy["verify_every_days"], 3);
}

/// A port probe: the guest gets a user-mode network that reaches nothing
/// outside, with only the probed port forwarded in; a port nothing
/// listens on fails the point, named.
#[test]
fn a_port_probe_passes_when_the_guest_serves_it_and_fails_when_not() {
    let env = new_env();
    vm_item(&env, "web", "boot.img");
    env.backup("web", 0);
    let out = verify(&env, &["web", "--probe-port", "8080"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    let v = &verified(&out)[0];
    assert_eq!(v["boot"]["probe"]["passed"], true, "{v}");
    assert_eq!(v["boot"]["probe"]["probe"], "TCP port 8080");
    let out = verify(&env, &["web", "--probe-port", "8081", "--time-limit", "30"]);
    assert_eq!(out.status.code(), Some(1));
    let v = &verified(&out)[0];
    assert_eq!(v["passed"], false);
    assert!(v["reason"].as_str().is_some_and(|r| r.contains("port 8081 did not accept")), "{v}");
}

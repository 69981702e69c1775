//! Offline seeding end to end with the real binary, into a local folder,
//! Azurite and the S3 server: the seed backup reaches the staging folder
//! and nothing of it the store; diskprep needs three drives and continues
//! after running out; shipping, import, adoption; the next backup uploads
//! only what changed. Then every bad case: a wrong drive key, a corrupted
//! object, a drive of another import job, a missing drive, a duplicate
//! tracking number, the two-week deadline, a staging folder missing,
//! read-only or too small, and kills of the seed, diskprep and import.

use crate::common;

use std::path::{Path, PathBuf};

use common::{Env, StoreKind, assert_same_tree, kill_when, noise, sh, store_objects, two_disk_vm, walk_files};

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).expect("json")
}

/// A vault with a protected item `t` over `files` noise files of 2 MiB.
fn setup(kind: StoreKind, files: u64) -> (Env, PathBuf) {
    let env = Env::on(kind);
    env.create_vault();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    for i in 0..files {
        std::fs::write(src.join(format!("f{i}")), noise(i + 7, 2 << 20)).expect("write");
    }
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    env.ok(&["protection", "enable", "t", "--policy", "DefaultPolicy"]);
    (env, src)
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf8")
}

fn item_protection(env: &Env) -> String {
    let items = json(&env.ok(&["--output", "json", "item", "list"]));
    items[0]["protection"].as_str().expect("protection").to_string()
}

/// Initiates, seeds and stages: returns the staging folder.
fn seed(env: &Env, name: &str) -> PathBuf {
    let staging = env.path(&format!("staging-{name}"));
    std::fs::create_dir_all(&staging).expect("mkdir");
    env.ok(&["offline", "init", "t", "--staging", path(&staging), "--import-job", name]);
    assert_eq!(item_protection(env), "Protected - Offline seeding: initial backup pending");
    env.ok(&["protection", "backup-now", "t"]);
    staging
}

fn drives(env: &Env, names: &[&str]) -> Vec<PathBuf> {
    names.iter().map(|n| env.path(n)).collect()
}

fn with_drives<'a>(args: &mut Vec<&'a str>, drives: &'a [PathBuf]) {
    for d in drives {
        args.extend(["--drive", path(d)]);
    }
}

fn seeding_on_three_drives(kind: StoreKind) {
    let (env, src) = setup(kind, 3);
    let staging = seed(&env, "seed-1");
    let jobs = json(&env.ok(&["--output", "json", "job", "list", "--operation", "OfflineSeed"]));
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "an OfflineSeed job: {jobs}");
    assert_eq!(jobs[0]["state"], "Completed");
    let listed = json(&env.ok(&["--output", "json", "recoverypoint", "list", "t"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "nothing of the seed reached the store");
    assert!(item_protection(&env).contains("Waiting for import job seed-1 to complete (Staged)"));

    // two drives of 3 MiB cannot hold 6 MiB and more: the run says how much is left
    let first_two = drives(&env, &["d1", "d2"]);
    let mut args = vec!["offline", "diskprep", "--staging", path(&staging), "--capacity", "3M"];
    with_drives(&mut args, &first_two);
    let err = env.fails(&args);
    assert!(err.contains("still need a drive"), "{err}");
    // the address set after the job began is the one printed; the run
    // needs the store, not the vault's passphrase
    env.ok(&["vault", "update", "--shipping-address", "Dock 4, Example Datacenter"]);
    let all = drives(&env, &["d1", "d2", "d3"]);
    let mut args = vec!["offline", "diskprep", "--staging", path(&staging), "--capacity", "3M"];
    with_drives(&mut args, &all);
    let out = env.cmd(&args).env_remove("BOVEDA_PASSWORD").output().expect("run");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed} {}", String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("every staged object is on the drives"), "{printed}");
    assert!(printed.contains("ship the drives to:\nDock 4, Example Datacenter"), "{printed}");
    let status = json(&env.ok(&["--output", "json", "offline", "status", "--import-job", "seed-1"]));
    assert_eq!(status[0]["state"], "Creating");
    let drives_used = status[0]["drives"].as_array().expect("drives");
    assert_eq!(drives_used.len(), 3, "the seed needs three drives: {status}");
    assert!(drives_used.iter().all(|d| d["state"] == "Specified"));

    env.ok(&["offline", "shipping", "--import-job", "seed-1", "--carrier", "DHL", "--tracking", "TRK-1"]);
    // a scheduled backup meanwhile waits, and says so
    let out = env.run(&["protection", "backup-now", "t"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("waits for import job seed-1"), "{out:?}");
    let waited = json(&env.ok(&["--output", "json", "job", "list", "--operation", "Backup"]));
    let last = waited.as_array().and_then(|a| a.last()).expect("a backup job");
    assert_eq!(last["state"], "Completed", "a waiting backup is no failure: {last}");
    assert!(last["details"][0].as_str().is_some_and(|d| d.contains("nothing was uploaded")));

    let mut args = vec!["offline", "import", "--import-job", "seed-1"];
    with_drives(&mut args, &all);
    let out = env.ok(&args);
    assert!(out.contains("Completed"), "{out}");
    let status = json(&env.ok(&["--output", "json", "offline", "status", "--import-job", "seed-1"]));
    assert_eq!(status[0]["state"], "Completed");
    assert!(status[0]["drives"].as_array().expect("drives").iter().all(|d| d["state"] == "Completed"));
    assert_eq!(item_protection(&env), "Protected");

    // adopted: an ordinary point, restored byte for byte, checked with data
    let listed = json(&env.ok(&["--output", "json", "recoverypoint", "list", "t"]));
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let target = env.path("restored");
    env.ok(&["restore", "t", "--target", path(&target)]);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").expect("absolute")));
    env.ok(&["vault", "check", "--read-data"]);

    // the next backup is incremental against the seed
    std::fs::write(src.join("changed"), noise(99, 300_000)).expect("write");
    let point = env.backup("t", 0);
    let stored = point["stats"]["bytes_stored"].as_u64().expect("bytes stored");
    assert!(stored < 1_000_000, "the backup after the seed uploads about what changed, not 6 MiB: {stored}");
    // a re-run of the import changes nothing
    let mut args = vec!["offline", "import", "--import-job", "seed-1"];
    with_drives(&mut args, &all);
    env.ok(&args);
}

#[test]
fn a_seed_on_three_drives_into_a_folder_vault() {
    seeding_on_three_drives(StoreKind::Local);
}

#[test]
fn a_seed_on_three_drives_into_azurite() {
    seeding_on_three_drives(StoreKind::Azurite);
}

#[test]
fn a_seed_on_three_drives_into_s3() {
    seeding_on_three_drives(StoreKind::S3);
}

/// Prepares and ships a seed of item `t` onto drives d1, d2 (2 files).
fn shipped(env: &Env, name: &str, tracking: &str) -> Vec<PathBuf> {
    let staging = seed(env, name);
    let ds = drives(env, &[&format!("{name}-d1"), &format!("{name}-d2")]);
    let mut args = vec!["offline", "diskprep", "--staging", path(&staging), "--capacity", "3M"];
    with_drives(&mut args, &ds);
    env.ok(&args);
    env.ok(&["offline", "shipping", "--import-job", name, "--carrier", "UPS", "--tracking", tracking]);
    ds
}

fn import(env: &Env, name: &str, ds: &[PathBuf], extra: &[&str]) -> std::process::Output {
    let mut args = vec!["offline", "import", "--import-job", name];
    with_drives(&mut args, ds);
    args.extend(extra);
    env.run(&args)
}

/// Records the shipping of `job`'s drives, imports them all, and checks
/// that item `t` restores equal to `src`.
fn ship_import_and_restore(env: &Env, job: &str, tracking: &str, ds: &[PathBuf], src: &Path) {
    env.ok(&["offline", "shipping", "--import-job", job, "--carrier", "UPS", "--tracking", tracking]);
    let out = import(env, job, ds, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let target = env.path("restored");
    env.ok(&["restore", "t", "--target", path(&target)]);
    assert_same_tree(src, &target.join(src.strip_prefix("/").expect("absolute")));
}

fn drive_id(d: &Path) -> String {
    let label: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("boveda-drive.json")).expect("label")).expect("json");
    label["drive_id"].as_str().expect("id").to_string()
}

/// A wrong drive key, a corrupted object and a missing drive are each
/// named, nothing is skipped silently, the point waits; the re-run with
/// everything right completes the job.
fn import_names_a_wrong_key_a_corrupted_object_and_a_missing_drive(kind: StoreKind) {
    let (env, src) = setup(kind, 2);
    let ds = shipped(&env, "seed-bad", "TRK-BAD");
    let (d1, d2) = (drive_id(&ds[0]), drive_id(&ds[1]));

    // a missing drive
    let out = import(&env, "seed-bad", &ds[..1], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("drive {d2} never arrived")), "{err}");
    let status = json(&env.ok(&["--output", "json", "offline", "status", "--import-job", "seed-bad"]));
    assert_eq!(status[0]["state"], "Closed");
    let never = status[0]["drives"].as_array().expect("drives").iter().find(|d| d["id"] == d2.as_str()).cloned();
    assert_eq!(never.map(|d| d["state"].clone()), Some("NeverReceived".into()));
    assert_eq!(json(&env.ok(&["--output", "json", "recoverypoint", "list", "t"])).as_array().map(Vec::len), Some(0));

    // a wrong drive key
    let wrong = format!("{d1}={}", "00".repeat(32));
    let out = import(&env, "seed-bad", &ds, &["--drive-key", &wrong]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("drive {d1}: wrong drive key")), "{err}");

    // a corrupted object
    let victim = walk_files(&ds[1].join("objects"))[0].clone();
    let mut bytes = std::fs::read(&victim).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&victim, &bytes).expect("write");
    let out = import(&env, "seed-bad", &ds, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    let name = victim.strip_prefix(ds[1].join("objects")).expect("below").display().to_string();
    assert!(err.contains(&format!("drive {d2}: object {name} fails authentication")), "{err}");
    assert_eq!(json(&env.ok(&["--output", "json", "recoverypoint", "list", "t"])).as_array().map(Vec::len), Some(0));

    // repaired (the object sealed again from staging by a new diskprep is
    // not possible once shipped: the drive is fixed by copying the good
    // bytes back), the import completes
    bytes[mid] ^= 1;
    std::fs::write(&victim, &bytes).expect("write");
    let out = import(&env, "seed-bad", &ds, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let target = env.path("restored");
    env.ok(&["restore", "t", "--target", path(&target)]);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").expect("absolute")));
    env.ok(&["vault", "check", "--read-data"]);
}

on_every_store!(import_names_a_wrong_key_a_corrupted_object_and_a_missing_drive);

/// A drive of another import job is refused by name; a tracking number
/// is one package's; the two-week deadline needs --force.
#[test]
fn another_jobs_drive_a_duplicate_tracking_number_and_the_deadline() {
    let (env, _) = setup(StoreKind::Local, 1);
    let first = shipped(&env, "seed-a", "TRK-SAME");
    env.ok(&["item", "add", "files", "u", "--path", path(&env.path("src"))]);
    env.ok(&["protection", "enable", "u", "--policy", "DefaultPolicy"]);
    let staging = env.path("staging-b");
    std::fs::create_dir_all(&staging).expect("mkdir");
    env.ok(&["offline", "init", "u", "--staging", path(&staging), "--import-job", "seed-b"]);
    env.ok(&["protection", "backup-now", "u"]);
    let second = drives(&env, &["b-d1"]);
    let mut args = vec!["offline", "diskprep", "--staging", path(&staging)];
    with_drives(&mut args, &second);
    env.ok(&args);
    let err =
        env.fails(&["offline", "shipping", "--import-job", "seed-b", "--carrier", "UPS", "--tracking", "TRK-SAME"]);
    assert!(err.contains("already used by import job seed-a"), "{err}");
    env.ok(&["offline", "shipping", "--import-job", "seed-b", "--carrier", "UPS", "--tracking", "TRK-B"]);

    // seed-b's drive given to seed-a's import
    let out = import(&env, "seed-a", &[first[0].clone(), first[1].clone(), second[0].clone()], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    let b = drive_id(&second[0]);
    assert!(err.contains(&format!("drive {b}")) && err.contains("belongs to import job seed-b, not seed-a"), "{err}");

    // fifteen days after shipping: expired, imported only with --force
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(15 * 24)).to_string();
    let status = env
        .cmd(&["--output", "json", "offline", "status", "--import-job", "seed-b"])
        .env("BOVEDA_FAKE_NOW", &later)
        .output()
        .expect("run");
    assert_eq!(json(&String::from_utf8_lossy(&status.stdout))[0]["shown_state"], "Expired");
    let mut args = vec!["offline", "import", "--import-job", "seed-b"];
    with_drives(&mut args, &second);
    let out = env.cmd(&args).env("BOVEDA_FAKE_NOW", &later).output().expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"), "{out:?}");
    args.push("--force");
    let out = env.cmd(&args).env("BOVEDA_FAKE_NOW", &later).output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A staging folder that is missing, read-only or clearly too small is
/// refused with a clear line, and nothing is recorded.
#[test]
fn a_staging_folder_missing_read_only_or_too_small_is_refused() {
    let (env, _) = setup(StoreKind::Local, 1);
    let missing = env.path("nowhere");
    let err = env.fails(&["offline", "init", "t", "--staging", path(&missing), "--import-job", "s1"]);
    assert!(err.contains("nowhere"), "{err}");
    if !common::is_root() {
        let ro = env.path("read-only");
        std::fs::create_dir_all(&ro).expect("mkdir");
        std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o555)).expect("chmod");
        let err = env.fails(&["offline", "init", "t", "--staging", path(&ro), "--import-job", "s1"]);
        assert!(err.contains("cannot be written"), "{err}");
    }
    // a source of 8 TiB (sparse) cannot fit any staging folder here
    let huge = env.path("huge");
    std::fs::create_dir_all(&huge).expect("mkdir");
    std::fs::File::create(huge.join("sparse")).and_then(|f| f.set_len(1 << 43)).expect("sparse file");
    env.ok(&["item", "add", "files", "big", "--path", path(&huge)]);
    env.ok(&["protection", "enable", "big", "--policy", "DefaultPolicy"]);
    let staging = env.path("staging");
    std::fs::create_dir_all(&staging).expect("mkdir");
    let err = env.fails(&["offline", "init", "big", "--staging", path(&staging), "--import-job", "s2"]);
    assert!(err.contains("bytes free") && err.contains("needs up to about"), "{err}");
    let status = json(&env.ok(&["--output", "json", "offline", "status"]));
    assert_eq!(status.as_array().map(Vec::len), Some(0), "nothing recorded: {status}");
}

/// Kills with SIGKILL of the seed backup, of diskprep and of the import,
/// each followed by a re-run that finishes.
fn kills_of_the_seed_diskprep_and_import_are_finished_by_a_rerun(kind: StoreKind) {
    let (env, src) = setup(kind, 6);
    let staging = env.path("staging");
    std::fs::create_dir_all(&staging).expect("mkdir");
    env.ok(&["offline", "init", "t", "--staging", path(&staging), "--import-job", "seed-k"]);
    let slow = |args: &[&str]| {
        let mut c = env.cmd(args);
        c.env("BOVEDA_STORE_FAULTS", "latency=30ms");
        c
    };
    let seed_dir = staging.join("seed-k");
    let mut child = slow(&["protection", "backup-now", "t"]).spawn().expect("spawn");
    assert!(
        kill_when(&mut child, || count(&seed_dir.join("packs")) >= 2),
        "the process ended before it could be killed; the data set is too small for this machine"
    );
    env.ok(&["protection", "backup-now", "t"]);
    assert!(seed_dir.join("seed-journal.json").exists());

    let ds = drives(&env, &["k1", "k2"]);
    let mut args = vec!["offline", "diskprep", "--staging", path(&staging), "--capacity", "8M"];
    with_drives(&mut args, &ds);
    let mut child = env.cmd(&args).env("BOVEDA_TEST_DISKPREP_PAUSE_MS", "50").spawn().expect("spawn");
    assert!(
        kill_when(&mut child, || count(&ds[0].join("objects")) >= 2),
        "the process ended before it could be killed; the data set is too small for this machine"
    );
    env.ok(&args);
    env.ok(&["offline", "shipping", "--import-job", "seed-k", "--carrier", "DHL", "--tracking", "K-1"]);

    // slow enough that the import is seen uploading packs before its
    // index and manifest follow
    let mut args = vec!["offline", "import", "--import-job", "seed-k"];
    with_drives(&mut args, &ds);
    let mut child = env.cmd(&args).env("BOVEDA_STORE_FAULTS", "latency=300ms").spawn().expect("spawn");
    assert!(
        kill_when(&mut child, || store_objects(&env, "packs") >= 2),
        "the process ended before it could be killed; the data set is too small for this machine"
    );
    env.ok(&args);
    // nothing uploaded twice: the store holds the seed's packs, once each
    assert_eq!(store_objects(&env, "packs"), count(&seed_dir.join("packs")));
    let target = env.path("restored");
    env.ok(&["restore", "t", "--target", path(&target)]);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").expect("absolute")));
    env.ok(&["vault", "check", "--read-data"]);
}

fn count(dir: &Path) -> usize {
    walk_files(dir).len()
}

on_every_store!(kills_of_the_seed_diskprep_and_import_are_finished_by_a_rerun);

/// A disk item seeds like a file item: its raw image travels on a drive,
/// is imported into S3, restores byte for byte, and its next backup reads
/// and stores only the changed blocks.
#[test]
fn a_disk_item_is_seeded_and_continues_incrementally() {
    use std::os::unix::fs::FileExt;
    let env = Env::on(StoreKind::S3);
    env.create_vault();
    let img = env.path("disk.img");
    let f = std::fs::File::create(&img).expect("create");
    f.set_len(32 << 20).expect("size");
    for (i, off) in [0u64, 5 << 20, 20 << 20].iter().enumerate() {
        f.write_all_at(&noise(50 + i as u64, 1 << 20), *off).expect("write");
    }
    drop(f);
    env.ok(&["item", "add", "disk", "t", "--path", path(&img)]);
    env.ok(&["protection", "enable", "t", "--policy", "DefaultPolicy"]);
    let staging = seed(&env, "disk-seed");
    let ds = drives(&env, &["dd1"]);
    let mut args = vec!["offline", "diskprep", "--staging", path(&staging)];
    with_drives(&mut args, &ds);
    env.ok(&args);
    env.ok(&["offline", "shipping", "--import-job", "disk-seed", "--carrier", "DHL", "--tracking", "DISK-1"]);
    let out = import(&env, "disk-seed", &ds, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let restored = env.path("restored.img");
    env.ok(&["restore", "t", "--target", path(&restored)]);
    assert_eq!(std::fs::read(&img).expect("read"), std::fs::read(&restored).expect("read"), "the seeded image");

    let f = std::fs::OpenOptions::new().write(true).open(&img).expect("open");
    f.write_all_at(&noise(77, 256 << 10), 10 << 20).expect("write");
    drop(f);
    let point = env.backup("t", 0);
    let stored = point["stats"]["bytes_stored"].as_u64().expect("bytes stored");
    assert!(stored < 1 << 20, "the backup after the seed stores about the 256 KiB changed: {stored}");
    env.ok(&["vault", "check", "--read-data"]);
}

/// A VM item (a qcow2 system disk and a raw data disk, with its
/// definition) seeds into Azurite: restored as a new VM, both disks equal
/// the originals; the next backup stores about what the guest changed.
#[test]
fn a_vm_item_is_seeded_and_continues_incrementally() {
    use std::os::unix::fs::FileExt;
    let env = Env::on(StoreKind::Azurite);
    env.create_vault();
    let vm = two_disk_vm(&env, &env.path("libvirt"), "web");
    env.ok(&["item", "add", "vm", "web", "--domain-xml", path(&vm.xml)]);
    env.ok(&["protection", "enable", "web", "--policy", "DefaultPolicy"]);
    let staging = env.path("staging");
    std::fs::create_dir_all(&staging).expect("mkdir");
    env.ok(&["offline", "init", "web", "--staging", path(&staging), "--import-job", "vm-seed"]);
    env.ok(&["protection", "backup-now", "web"]);
    let ds = drives(&env, &["vd1", "vd2"]);
    let mut args = vec!["offline", "diskprep", "--staging", path(&staging), "--capacity", "2M"];
    with_drives(&mut args, &ds);
    env.ok(&args);
    let status = json(&env.ok(&["--output", "json", "offline", "status", "--import-job", "vm-seed"]));
    assert_eq!(status[0]["drives"].as_array().map(Vec::len), Some(2), "the VM's seed needs two drives: {status}");
    env.ok(&["offline", "shipping", "--import-job", "vm-seed", "--carrier", "DHL", "--tracking", "VM-1"]);
    let out = import(&env, "vm-seed", &ds, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let restored = env.path("restored");
    env.ok(&["restore", "web", "--target", path(&restored)]);
    let def = std::fs::read_to_string(restored.join("web-restored.xml")).expect("definition");
    assert!(def.contains("<name>web-restored</name>"), "{def}");
    sh(std::process::Command::new("qemu-img").arg("compare").arg(&vm.vda).arg(restored.join("web-restored-vda.img")));
    let vdb = std::fs::read(&vm.vdb).expect("read");
    assert_eq!(std::fs::read(restored.join("web-restored-vdb.img")).expect("read"), vdb, "the data disk");

    // the guest writes 256 KiB to its data disk
    let f = std::fs::OpenOptions::new().write(true).open(&vm.vdb).expect("open");
    f.write_all_at(&noise(78, 256 << 10), 10 << 20).expect("write");
    drop(f);
    let point = env.backup("web", 0);
    let stored = point["stats"]["bytes_stored"].as_u64().expect("bytes stored");
    assert!(stored < 1 << 20, "the backup after the seed stores about the 256 KiB changed: {stored}");
    env.ok(&["vault", "check", "--read-data"]);
}

/// Regression: a drive that diskprep labelled but did not need (the seed
/// fit on the others) made the import close with a problem when it was
/// given too. It is now said to be unneeded by diskprep, skipped with a
/// note by the import, and the import completes.
#[test]
fn a_labelled_drive_diskprep_did_not_need_does_not_stop_the_import() {
    let (env, src) = setup(StoreKind::Local, 1);
    let staging = seed(&env, "seed-spare");
    let ds = drives(&env, &["used", "spare"]);
    let mut args = vec!["offline", "diskprep", "--staging", path(&staging)];
    with_drives(&mut args, &ds);
    let out = env.ok(&args);
    let spare = drive_id(&ds[1]);
    assert!(out.contains(&format!("drive {spare} ({}) was not needed", ds[1].display())), "{out}");
    env.ok(&["offline", "shipping", "--import-job", "seed-spare", "--carrier", "UPS", "--tracking", "SPARE-1"]);
    let out = import(&env, "seed-spare", &ds, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains(&format!("note: drive {spare}")) && err.contains("holds nothing of the seed"), "{err}");
    let target = env.path("restored");
    env.ok(&["restore", "t", "--target", path(&target)]);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").expect("absolute")));
}

/// On a terminal, diskprep asks for another drive when the drives given
/// are full, and continues onto the one typed; an empty answer stops it,
/// saying how to continue. The terminal is a real pseudo-terminal, made by
/// `script` (util-linux).
#[test]
fn diskprep_on_a_terminal_asks_for_another_drive() {
    use std::io::{Read, Write};
    let (env, src) = setup(StoreKind::Local, 3);
    let staging = seed(&env, "seed-tty");
    let ds = drives(&env, &["t1", "t2", "t3"]);
    // runs diskprep on a terminal with t1 and t2, answering the prompt with `answer`
    let on_terminal = |answer: &str| -> (bool, String) {
        let args = ["offline", "diskprep", "--staging", path(&staging), "--capacity", "3M"];
        let line = std::iter::once(common::bin().display().to_string())
            .chain(args.iter().map(|a| a.to_string()))
            .chain(["--drive", path(&ds[0]), "--drive", path(&ds[1])].iter().map(|a| a.to_string()))
            .collect::<Vec<_>>()
            .join(" ");
        let template = env.cmd(&[]);
        let mut script = std::process::Command::new("script");
        script.args(["-q", "-e", "-c", &line, "/dev/null"]);
        for (k, v) in template.get_envs() {
            match v {
                Some(v) => script.env(k, v),
                None => script.env_remove(k),
            };
        }
        let mut child = script
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("script (util-linux) runs");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("Path of another drive") {
            let n = stdout.read(&mut buf).expect("read");
            assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(format!("{answer}\n").as_bytes()).expect("answer");
        stdout.read_to_end(&mut seen).expect("read");
        drop(stdin);
        let ok = child.wait().expect("wait").success();
        (ok, String::from_utf8_lossy(&seen).into_owned())
    };

    let (ok, out) = on_terminal("");
    assert!(!ok, "{out}");
    assert!(out.contains("still need a drive; run diskprep again with another --drive to continue"), "{out}");
    let (ok, out) = on_terminal(path(&ds[2]));
    assert!(ok, "{out}");
    assert!(out.contains("every staged object is on the drives"), "{out}");
    let status = json(&env.ok(&["--output", "json", "offline", "status", "--import-job", "seed-tty"]));
    assert_eq!(status[0]["drives"].as_array().map(Vec::len), Some(3), "{status}");

    ship_import_and_restore(&env, "seed-tty", "TTY-1", &ds, &src);
}

/// Two diskpreps at once: the second, on the same staging folder or onto a
/// drive the first is writing, is refused naming the first's process; the
/// first finishes, and its drives import whole.
#[test]
fn a_second_diskprep_at_once_is_refused() {
    let (env, src) = setup(StoreKind::Local, 4);
    let staging = seed(&env, "seed-two");
    // another item's seed, in another staging folder
    env.ok(&["item", "add", "files", "u", "--path", path(&src)]);
    env.ok(&["protection", "enable", "u", "--policy", "DefaultPolicy"]);
    let other = env.path("staging-other");
    std::fs::create_dir_all(&other).expect("mkdir");
    env.ok(&["offline", "init", "u", "--staging", path(&other), "--import-job", "seed-other"]);
    env.ok(&["protection", "backup-now", "u"]);

    let ds = drives(&env, &["w1"]);
    let mut args = vec!["offline", "diskprep", "--staging", path(&staging)];
    with_drives(&mut args, &ds);
    let mut first = env.cmd(&args).env("BOVEDA_TEST_DISKPREP_PAUSE_MS", "1000").spawn().expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count(&ds[0].join("objects")) < 1 {
        assert!(std::time::Instant::now() < deadline && first.try_wait().expect("wait").is_none(), "no copy seen");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let err = env.fails(&args);
    let pid = first.id();
    assert!(err.contains(&format!("another diskprep (process {pid}) is writing staging folder")), "{err}");

    // the other staging folder's diskprep onto the drive being written
    let err =
        env.fails(&["offline", "diskprep", "--staging", path(&other.join("seed-other")), "--drive", path(&ds[0])]);
    assert!(err.contains(&format!("another diskprep (process {pid}) is writing drive")), "{err}");

    assert!(first.wait().expect("wait").success());
    ship_import_and_restore(&env, "seed-two", "TWO-1", &ds, &src);
}

/// A drive taken away in the middle of diskprep (its folder disappears) is
/// named, nothing is written where it was; with it back, the re-run
/// continues where it stopped.
#[test]
fn a_drive_unplugged_mid_copy_is_named_and_the_rerun_continues() {
    let (env, src) = setup(StoreKind::Local, 4);
    let staging = seed(&env, "seed-u");
    let ds = drives(&env, &["u1"]);
    let mut args = vec!["offline", "diskprep", "--staging", path(&staging)];
    with_drives(&mut args, &ds);
    let away = env.path("u1-away");
    let mut child = env
        .cmd(&args)
        .env("BOVEDA_TEST_DISKPREP_PAUSE_MS", "100")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count(&ds[0].join("objects")) < 2 {
        assert!(std::time::Instant::now() < deadline && child.try_wait().expect("wait").is_none(), "no copy seen");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    std::fs::rename(&ds[0], &away).expect("unplug");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is gone (unplugged?)"), "{err}");
    assert!(!ds[0].exists(), "nothing was written where the drive was");
    std::fs::rename(&away, &ds[0]).expect("plug back");
    let before = count(&ds[0].join("objects"));
    env.ok(&args);
    assert!(count(&ds[0].join("objects")) > before, "the re-run continued");
    ship_import_and_restore(&env, "seed-u", "U-1", &ds, &src);
}

/// A drive that fills (a small file system, its capacity its free space):
/// the run stops saying what is left, and a re-run with another drive
/// finishes. Needs root to mount the tmpfs.
#[test]
fn a_drive_that_fills_is_followed_by_another() {
    if !common::is_root() {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    }
    let (env, _) = setup(StoreKind::Local, 3);
    let staging = seed(&env, "seed-f");
    let small = env.path("small-drive");
    let _mounted = common::Tmpfs::mount(&small, "3m");
    let mut args = vec!["offline", "diskprep", "--staging", path(&staging), "--drive", path(&small)];
    let err = env.fails(&args);
    assert!(err.contains("still need a drive"), "{err}");
    let second = env.path("second-drive");
    args.extend(["--drive", path(&second)]);
    let out = env.ok(&args);
    assert!(out.contains("every staged object is on the drives"), "{out}");
}

/// A drive lost in shipping: the job closes with the drive NeverReceived
/// and no point; the lost share is then uploaded from the staging folder,
/// and the job completes.
#[test]
fn a_lost_drives_share_is_uploaded_from_the_staging_folder() {
    let (env, src) = setup(StoreKind::Local, 2);
    let ds = shipped(&env, "seed-lost", "TRK-LOST");
    let lost = drive_id(&ds[1]);
    let out = import(&env, "seed-lost", &ds[..1], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("drive {lost} never arrived")));
    let staging = env.path("staging-seed-lost");
    let out = import(&env, "seed-lost", &ds[..1], &["--from-staging", path(&staging)]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("drive {lost} never arrived: its objects were uploaded from the staging folder")),
        "{said}"
    );
    let status = json(&env.ok(&["--output", "json", "offline", "status", "--import-job", "seed-lost"]));
    assert_eq!(status[0]["state"], "Completed");
    let never = status[0]["drives"].as_array().expect("drives").iter().find(|d| d["id"] == lost.as_str()).cloned();
    assert_eq!(never.map(|d| d["state"].clone()), Some("NeverReceived".into()), "{status}");
    let target = env.path("restored");
    env.ok(&["restore", "t", "--target", path(&target)]);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").expect("absolute")));
    env.ok(&["vault", "check", "--read-data"]);
}

//! Offline seeding through the service's own functions, on a real vault in
//! a local folder and drives that are folders: init, the seed backup,
//! diskprep over two small drives, shipping, an import missing a drive,
//! the import that completes, and the incremental backup after it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use boveda_engine::NoProgress;
use boveda_service::{
    Clock, DriveState, FakeClock, ImportRequest, ImportState, JobEnv, Policy, add_files_item, backup_job,
    create_policy, diskprep, enable_protection, find_import_job, find_item, find_seed, import, init_offline,
    list_item_points, record_shipping, restore,
};
use boveda_vault::{CheckOptions, Vault, check};
use common::{digest, new_vault, noise};

const JOB: &str = "seed-one";

fn source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    for i in 0..24 {
        let sub = src.join(format!("d{}", i % 3));
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join(format!("f{i}")), noise(i, 96 * 1024)).expect("write");
    }
    src
}

fn restored(vault: &Vault, point: &boveda_vault::RecoveryPoint, src: &Path, into: &Path) -> BTreeMap<String, String> {
    restore(vault, point, into.to_path_buf(), None, vec![], None, &NoProgress).expect("restore");
    digest(&into.join(src.strip_prefix("/").expect("absolute")))
}

#[test]
fn a_seed_travels_on_two_drives_is_imported_whole_only_with_both_and_the_next_backup_is_incremental() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = new_vault(dir.path());
    let clock = FakeClock::new("2026-03-02T10:00:00Z".parse().expect("time"));
    let env = JobEnv::new(&clock, Duration::from_millis(20), "test".into());
    let src = source(dir.path());
    let mut policy = Policy::default_policy();
    policy.name = "daily".into();
    create_policy(&vault, &policy).expect("policy");
    let item = add_files_item(&vault, "docs", std::slice::from_ref(&src), &[]).expect("item");
    let item = enable_protection(&vault, &env, &item, "daily").expect("protect");
    let staging = dir.path().join("staging");
    std::fs::create_dir_all(&staging).expect("staging");
    init_offline(&vault, &env, &item, &staging, JOB).expect("init");

    // the seed: the point's objects go to the staging folder, not the store
    let (_, seeded) = backup_job(&vault, &env, &item, None, None, &NoProgress).expect("seed job");
    let seeded = seeded.expect("seed backup");
    assert!(list_item_points(&vault, &item).expect("points").is_empty(), "the seed's point is not in the store yet");
    assert!(!dir.path().join("vault/points").join(seeded.id.to_string()).exists());
    let seed = find_seed(&staging, None).expect("the only seed in the staging folder");
    assert_eq!(find_import_job(&**vault.store(), JOB).expect("job").state, ImportState::Staged);

    // two drives, each too small for the whole seed
    let job = find_import_job(&**vault.store(), JOB).expect("job");
    let capacity = job.bytes / 2 + 256 * 1024;
    let drives = [dir.path().join("drive-a"), dir.path().join("drive-b")];
    let report = diskprep(&**vault.store(), &seed, &drives[..1], Some(capacity)).expect("diskprep one drive");
    assert!(report.remaining > 0, "one drive of {capacity} bytes does not hold a seed of {} bytes", job.bytes);
    let report = diskprep(&**vault.store(), &seed, &drives, Some(capacity)).expect("diskprep both");
    assert_eq!(report.remaining, 0);
    assert!(report.drives.iter().all(|d| d.objects > 0), "both drives hold part of the seed: {:?}", report.drives);
    let now = clock.now();
    record_shipping(&**vault.store(), JOB, "carrier", "TRACK-1", now).expect("shipping");

    let keys = BTreeMap::new();
    let request = |drives: &[PathBuf]| {
        let req = ImportRequest {
            name: JOB,
            drives,
            keys: &keys,
            from_staging: None,
            force: false,
            now: clock.now(),
            host: "store-side",
        };
        import(&**vault.store(), &req).expect("import runs")
    };
    // one drive: its objects are uploaded, the point is not
    let first = request(&drives[..1]);
    assert_eq!(first.job.state, ImportState::Closed);
    assert!(first.problems.iter().any(|p| p.contains("never arrived")), "{:?}", first.problems);
    assert!(first.uploaded > 0);
    assert!(list_item_points(&vault, &item).expect("points").is_empty(), "no point before the whole seed is in");
    // both drives: the rest is uploaded, the point last
    let second = request(&drives);
    assert_eq!(second.job.state, ImportState::Completed, "{:?}", second.problems);
    assert!(second.job.drives.iter().all(|d| d.state == DriveState::Completed));
    assert!(second.uploaded > 0 && second.uploaded < job.objects, "only what the first run left is uploaded");
    let points = list_item_points(&vault, &item).expect("points");
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].id, seeded.id);
    assert_eq!(restored(&vault, &points[0], &src, &dir.path().join("r1")), digest(&src));
    // a run again finds nothing to do
    assert_eq!(request(&drives).uploaded, 0);

    // the next backup goes over the network, incrementally
    std::fs::write(src.join("d0/f0"), noise(1000, 96 * 1024)).expect("change a file");
    let item = find_item(&vault, "docs").expect("item");
    let (_, next) = backup_job(&vault, &env, &item, None, None, &NoProgress).expect("next job");
    let next = next.expect("next backup");
    assert_eq!(next.parent, Some(seeded.id));
    assert_eq!(next.stats.files_unchanged, 23, "only the changed file is read again");
    // the changed file and the trees above it, not the 2.3 MiB seeded
    assert!(next.stats.bytes_new < 2 * 96 * 1024, "{} new bytes", next.stats.bytes_new);
    assert_eq!(restored(&vault, &next, &src, &dir.path().join("r2")), digest(&src));
    let report = check(&vault, CheckOptions { read_data: true }, &|_| {}).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
}

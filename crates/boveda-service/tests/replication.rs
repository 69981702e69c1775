//! Geo-redundancy through the service's own functions, on real vaults in
//! local folders: the full copy, a backup replicated after the process's
//! work, a restore from the secondary alone, and the two secondaries a pass
//! must never write into (one holding another vault, one whose disk is not
//! mounted).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use boveda_engine::NoProgress;
use boveda_service::{
    FakeClock, JobEnv, Observers, Policy, add_files_item, backup_job, change_redundancy, create_policy,
    enable_protection, finish_replication, points_on_secondary, replication_job, restore,
};
use boveda_store::LocalStore;
use boveda_vault::{CreateOptions, Vault};
use common::{digest, new_vault, noise};

fn write_tree(src: &Path, seed: u64) {
    for i in 0..8 {
        std::fs::create_dir_all(src).expect("mkdir");
        std::fs::write(src.join(format!("f{i}")), noise(seed + i, 64 * 1024)).expect("write");
    }
}

#[test]
fn a_geo_redundant_vault_restores_from_its_secondary_and_a_pass_never_writes_into_a_wrong_secondary() {
    let dir = tempfile::tempdir().expect("tempdir");
    // SAFETY: the only test of this binary sets these before any thread
    // starts; the registry and caches stay inside the test's folder
    unsafe {
        std::env::set_var("BOVEDA_CONFIG_DIR", dir.path().join("config"));
        std::env::set_var("BOVEDA_CACHE_DIR", dir.path().join("cache"));
    }
    let mut vault = new_vault(dir.path());
    let clock = FakeClock::new("2026-03-02T10:00:00Z".parse().expect("time"));
    let env = JobEnv::new(&clock, Duration::from_millis(20), "test".into());
    let secondary = dir.path().join("secondary");
    std::fs::create_dir_all(&secondary).expect("secondary");
    let secondary_url = secondary.display().to_string();
    assert!(change_redundancy(&mut vault, "grs", Some(&secondary_url)).expect("becomes grs"));
    let (_, copied) = replication_job(&vault, &clock, Observers::default()).expect("full copy job");
    copied.expect("full copy");
    assert!(secondary.join("config").exists(), "the full copy ends with config");

    let src = dir.path().join("src");
    write_tree(&src, 1);
    let mut policy = Policy::default_policy();
    policy.name = "daily".into();
    create_policy(&vault, &policy).expect("policy");
    let item = add_files_item(&vault, "docs", std::slice::from_ref(&src), &[]).expect("item");
    let item = enable_protection(&vault, &env, &item, "daily").expect("protect");
    let (_, point) = backup_job(&vault, &env, &item, None, None, &NoProgress).expect("backup job");
    let point = point.expect("backup");
    assert_eq!(points_on_secondary(&vault, &[point.id]).expect("asked"), Some(vec![false]), "not copied yet");
    let outcome = finish_replication(&vault, &clock).expect("pass runs").expect("a pass is due after a backup");
    outcome.report.expect("pass succeeds");
    assert_eq!(points_on_secondary(&vault, &[point.id]).expect("asked"), Some(vec![true]));

    // the secondary alone: the point restores byte for byte
    let copy = Vault::open(Arc::new(LocalStore::new(secondary.clone())), b"pw").expect("secondary opens");
    let target = dir.path().join("restored");
    restore(&copy, &point, target.clone(), None, vec![], None, &NoProgress).expect("restore from secondary");
    assert_eq!(digest(&target.join(src.strip_prefix("/").expect("absolute"))), digest(&src));

    // a secondary whose disk is not mounted lists as an empty folder: the
    // pass refuses it rather than fill it as a new copy
    let away = dir.path().join("secondary-away");
    std::fs::rename(&secondary, &away).expect("unmount");
    std::fs::create_dir_all(&secondary).expect("empty mount point");
    write_tree(&src, 100);
    let (_, second) = backup_job(&vault, &env, &item, None, None, &NoProgress).expect("backup job");
    second.expect("backup while the secondary is away");
    let outcome = finish_replication(&vault, &clock).expect("pass runs").expect("a pass is due");
    let err = outcome.report.expect_err("an empty secondary is refused");
    assert!(err.contains("does not hold this vault"), "{err}");
    assert_eq!(std::fs::read_dir(&secondary).expect("list").count(), 0, "nothing written into the mount point");

    // a secondary that holds another vault is refused, and left as it is
    std::fs::remove_dir(&secondary).expect("rmdir");
    let other = Vault::create(Arc::new(LocalStore::new(secondary.clone())), b"other", CreateOptions::for_tests("x"))
        .expect("another vault");
    let other_config = std::fs::read(secondary.join("config")).expect("its config");
    drop(other);
    let outcome = finish_replication(&vault, &clock).expect("pass runs").expect("still due");
    let err = outcome.report.expect_err("another vault is refused");
    assert!(err.contains("holds another vault"), "{err}");
    assert_eq!(std::fs::read(secondary.join("config")).expect("config"), other_config);
    assert!(!secondary.join("points").exists(), "no point of this vault written into the other");

    // the disk back: the next pass catches up
    std::fs::remove_dir_all(&secondary).expect("remove the other vault");
    std::fs::rename(&away, &secondary).expect("mount again");
    let outcome = finish_replication(&vault, &clock).expect("pass runs").expect("still due");
    outcome.report.expect("the pass catches up");
    let points = boveda_service::list_item_points(&vault, &item).expect("points");
    let ids: Vec<_> = points.iter().map(|p| p.id).collect();
    assert_eq!(points_on_secondary(&vault, &ids).expect("asked"), Some(vec![true, true]));
}

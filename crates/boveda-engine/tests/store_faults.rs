//! A store that fills up mid-backup: the backup fails with a "no space"
//! error, the vault stays valid, and once there is room again the next
//! backup completes and restores byte for byte. (The end-to-end test does
//! the same on a real tmpfs; this one runs without root.)

mod common;

use std::fs;
use std::sync::Arc;

use boveda_engine::{FileBackupOptions, NoProgress, RestoreOptions, backup_files, restore_files};
use boveda_store::{FaultStore, LocalStore, Store};
use boveda_vault::{CheckOptions, VaultErrorKind, check};

#[test]
fn a_full_store_fails_the_backup_and_leaves_a_valid_vault() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    fs::create_dir_all(&src).expect("mkdir");
    for i in 0..8u8 {
        let data: Vec<u8> = (0..1_500_000u32).map(|j| (j.wrapping_mul(2_654_435_761) >> (i % 7)) as u8).collect();
        fs::write(src.join(format!("f{i}")), data).expect("write");
    }
    let local: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("vault")));
    let faulty = Arc::new(FaultStore::with_budget(local, u64::MAX));
    let vault = common::test_vault(faulty.clone(), 0);

    faulty.refill(4 << 20); // room for a few packs, not for 12 MB
    let index = vault.load_index().expect("index");
    let bopts = FileBackupOptions { paths: vec![src.clone()], excludes: vec![], parent_tree: None, cancel: None };
    let err = backup_files(&vault, &index, &bopts, &NoProgress).err().expect("must fail");
    assert_eq!(err.vault_kind(), Some(VaultErrorKind::NoSpace), "{err}");
    assert!(err.to_string().contains("no space left"), "{err}");

    let report = check(&vault, CheckOptions { read_data: true }, &|_| {}).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);

    faulty.refill(u64::MAX);
    let index = vault.load_index().expect("index");
    let stored_before = index.len();
    assert!(stored_before > 0, "the packs written before the failure are indexed");
    let out = backup_files(&vault, &index, &bopts, &NoProgress).expect("backup after freeing space");
    assert!((out.stats.chunks_new as usize) < 8 * 2, "chunks written before the failure are reused");
    let report = check(&vault, CheckOptions { read_data: true }, &|_| {}).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);

    let index = vault.load_index().expect("index");
    let target = dir.path().join("out");
    let ropts = RestoreOptions { target: target.clone(), within: None, paths: vec![], cancel: None };
    let r = restore_files(&vault, &index, &out.tree, &ropts, &NoProgress).expect("restore");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let restored = target.join(src.strip_prefix("/").expect("abs"));
    for i in 0..8u8 {
        let name = format!("f{i}");
        assert_eq!(fs::read(restored.join(&name)).expect("read"), fs::read(src.join(&name)).expect("read"), "{name}");
    }
}

//! Two writers changing one catalog record at once, on every kind of store:
//! changes go through a compare-and-swap (create-only put of the revision
//! that follows the one read), so neither writer loses the other's.

mod common;

use std::sync::Arc;

use boveda_vault::{RecordId, Vault};
use common::{remote, vault_in};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Counter {
    by_writer: [u32; 2],
    total: u32,
}

/// Two handles (as two machines) each add 15 to one counter record, one
/// step at a time, at the same moment: the total is 30.
fn no_change_is_lost(url: &str) {
    let first = vault_in(url);
    let store = first.store().clone();
    let id = RecordId::random();
    first.catalog_put("counters", &id, Some(&Counter::default())).expect("create");
    let writers = [Arc::new(first), Arc::new(Vault::open(store, b"pw").expect("open"))];
    std::thread::scope(|s| {
        for (w, vault) in writers.iter().enumerate() {
            s.spawn(move || {
                for _ in 0..15 {
                    vault
                        .catalog_update("counters", &id, |c: Option<Counter>| {
                            let mut c = c.unwrap_or_default();
                            c.by_writer[w] += 1;
                            c.total += 1;
                            Ok(Some(c))
                        })
                        .expect("update");
                }
            });
        }
    });
    let end: Counter = writers[0].catalog_get("counters", &id).expect("read").expect("there");
    assert_eq!(end.by_writer, [15, 15], "{end:?}");
    assert_eq!(end.total, 30, "{end:?}");
}

/// Settings changed by two processes at once: each keeps its change,
/// though each handle read the settings before the other wrote.
fn settings_changes_are_merged(url: &str) {
    let a = vault_in(url);
    let b = Vault::open(a.store().clone(), b"pw").expect("open");
    a.change_settings(|s| s.store.retries = Some(5)).expect("a");
    b.change_settings(|s| s.store.parallel_requests = Some(3)).expect("b");
    let fresh = Vault::open(a.store().clone(), b"pw").expect("open");
    assert_eq!(fresh.settings().store.retries, Some(5));
    assert_eq!(fresh.settings().store.parallel_requests, Some(3));
    assert_eq!(b.settings().store.retries, Some(5), "the handle sees what it wrote over");
}

#[test]
fn no_change_is_lost_in_a_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    no_change_is_lost(&dir.path().join("v").display().to_string());
    settings_changes_are_merged(&dir.path().join("w").display().to_string());
}

#[test]
fn no_change_is_lost_in_azurite() {
    no_change_is_lost(&remote("azblob", "BOVEDA_TEST_AZURITE"));
    settings_changes_are_merged(&remote("azblob", "BOVEDA_TEST_AZURITE"));
}

#[test]
fn no_change_is_lost_in_s3() {
    no_change_is_lost(&remote("s3", "BOVEDA_TEST_S3"));
    settings_changes_are_merged(&remote("s3", "BOVEDA_TEST_S3"));
}

//! `recoverypoint list ITEM` and a backup's search for its parent read only
//! the item's manifests: point ids start with a tag of their item, so the
//! cost does not grow with the other items' history.

mod common;

use std::sync::Arc;

use boveda_store::{LocalStore, MetricsStore, Store};
use boveda_vault::{ChunkId, CreateOptions, RecordId, RecoveryPoint, Vault};

fn point(vault: &Vault, item: RecordId, minute: i64) -> RecoveryPoint {
    common::a_point(vault, item, &format!("item {item}"), ChunkId([0; 32]), 1_800_000_000 + minute * 60)
}

#[test]
fn an_items_points_are_read_without_the_other_items_manifests() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("vault")));
    let vault = Vault::create(local.clone(), b"pw", CreateOptions::for_tests("tags")).expect("create");
    let (mine, others) = (RecordId::random(), RecordId::random());
    for m in 0..5 {
        vault.save_point(&point(&vault, mine, m)).expect("save");
    }
    for m in 0..200 {
        vault.save_point(&point(&vault, others, m)).expect("save");
    }
    let metered = Arc::new(MetricsStore::new(local));
    let metrics = metered.metrics();
    let reader = Vault::open(metered, b"pw").expect("open");
    let before = metrics.snapshot().gets;
    let points = reader.list_item_points(&mine).expect("list");
    assert_eq!(points.len(), 5);
    assert!(points.windows(2).all(|w| w[0].time < w[1].time), "oldest first");
    assert!(points.iter().all(|p| p.item_id == mine));
    assert_eq!(metrics.snapshot().gets - before, 5, "only the item's five manifests were read");
    // regression: with the tag first, an item's points shared their short
    // ids and `restore --point SHORT` was ambiguous
    let shorts: std::collections::HashSet<String> = points.iter().map(|p| p.id.short()).collect();
    assert_eq!(shorts.len(), 5, "short ids stay distinct");
    assert_eq!(reader.list_item_points(&others).expect("list").len(), 200);
    assert_eq!(reader.list_points().expect("list").len(), 205);
}

/// Rewrites a vault's config as a vault made before point tags has it.
fn drop_point_tags(store: &Arc<dyn Store>, vault: &Vault) {
    let stored = store.get("config").expect("config");
    let mut config = vault.config().clone();
    config.point_tags = false;
    let json = serde_json::to_vec(&config).expect("json");
    assert!(!String::from_utf8_lossy(&json).contains("point_tags"), "old configs serialize as before");
    let mut signed = stored[..8].to_vec();
    signed.extend_from_slice(&json);
    let mac = hex::encode(vault.key().config_mac(&signed));
    let mut value: serde_json::Value = serde_json::from_slice(&json).expect("value");
    value["mac"] = serde_json::Value::String(mac);
    let mut bytes = stored[..8].to_vec();
    bytes.extend_from_slice(&serde_json::to_vec(&value).expect("json"));
    store.delete("config").expect("delete");
    store.put_new("config", &bytes).expect("put");
}

/// A vault made before point tags (its config has no `point_tags`) keeps
/// opening, and an item's points are found by reading every manifest.
#[test]
fn a_vault_without_point_tags_lists_an_items_points_by_reading_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("vault")));
    let vault = Vault::create(local.clone(), b"pw", CreateOptions::for_tests("old")).expect("create");
    drop_point_tags(&local, &vault);
    let metered = Arc::new(MetricsStore::new(local));
    let metrics = metered.metrics();
    let old = Vault::open(metered, b"pw").expect("an old config opens");
    assert!(!old.config().point_tags);
    let (mine, others) = (RecordId::random(), RecordId::random());
    for m in 0..3 {
        old.save_point(&point(&old, mine, m)).expect("save");
        old.save_point(&point(&old, others, m)).expect("save");
    }
    let before = metrics.snapshot().gets;
    let points = old.list_item_points(&mine).expect("list");
    assert_eq!(points.len(), 3);
    assert!(points.iter().all(|p| p.item_id == mine));
    assert_eq!(metrics.snapshot().gets - before, 6, "every manifest was read");
}

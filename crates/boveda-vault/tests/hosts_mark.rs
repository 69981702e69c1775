//! The vault format's upgrade for hosts: before the first host registers,
//! the config object is rewritten with format version 3, the version that
//! builds older than the fleet refuse at open ("newer than this boveda
//! supports"), instead of meeting a host's object mid-way. The vault keeps
//! opening here; a secondary store's config gets the mark on the next
//! replication pass; a config whose version and mark disagree is damaged.

use std::sync::Arc;

use boveda_store::{LocalStore, PutMode, Store};
use boveda_vault::{CreateOptions, Replica, Vault, VaultError};

fn version(store: &dyn Store) -> u16 {
    let bytes = store.get("config").expect("config");
    u16::from_le_bytes([bytes[4], bytes[5]])
}

#[test]
fn marking_a_vault_for_hosts_makes_its_config_version_3_and_it_still_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("vault")));
    let vault = Vault::create(store.clone(), b"pw", CreateOptions::for_tests("fleet")).expect("create");
    assert_eq!(version(&*store), 2, "a vault without hosts stays readable by older builds");
    assert!(!vault.config().hosts);

    // a secondary holding the config as it was
    let secondary = LocalStore::new(dir.path().join("secondary"));
    assert_eq!(vault.copy_config_to(&secondary).expect("copy"), Some(store.get("config").expect("c").len() as u64));

    assert!(vault.mark_hosts_in_use().expect("mark"));
    assert_eq!(version(&*store), 3, "builds older than the fleet refuse version 3 at open");
    assert!(!vault.mark_hosts_in_use().expect("again"), "marked once");
    let reopened = Vault::open(store.clone(), b"pw").expect("the marked vault opens");
    assert!(reopened.config().hosts);
    assert_eq!(reopened.config().id, vault.config().id);

    // the secondary is still this vault's, and takes the mark
    assert_eq!(vault.replica_in(&secondary).expect("replica"), Replica::ThisVault);
    assert!(vault.copy_config_to(&secondary).expect("mark the secondary").is_some());
    assert_eq!(version(&secondary), 3);
    assert_eq!(vault.copy_config_to(&secondary).expect("nothing more"), None);

    // version 3 with a config that says "no hosts": refused as damaged
    let bytes = store.get("config").expect("config");
    let text = String::from_utf8_lossy(&bytes[8..]).replace("\"hosts\":true", "\"hosts\":false");
    let mut forged = bytes[..8].to_vec();
    forged.extend_from_slice(text.as_bytes());
    let tag = store.stat("config").expect("stat").etag.expect("etag");
    store.put("config", &forged, PutMode::ReplaceIfMatch(tag)).expect("forge");
    match Vault::open(store, b"pw") {
        Err(VaultError::Damaged { object, reason }) => {
            assert_eq!(object, "config");
            assert!(reason.contains("format version"), "{reason}");
        }
        Err(e) => panic!("forged config: {e}"),
        Ok(_) => panic!("forged config opened"),
    }
}

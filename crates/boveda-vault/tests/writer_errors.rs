//! Regression: when an upload failed, only the first caller of the writer
//! learned why; every later one was told "the upload thread stopped", and
//! a backup with several workers surfaced whichever came first (seen as a
//! registered host's backup whose server was killed).

use std::collections::HashSet;
use std::sync::Arc;

use boveda_store::{FaultPlan, FaultStore, LocalStore, Store};
use boveda_vault::{BlobKind, BlobWriter, CreateOptions, RecordId, Vault, WriterTarget};

#[test]
fn a_failed_upload_is_named_to_every_caller_not_as_the_upload_thread_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("vault")));
    let vault = Vault::create(store.clone(), b"pw", CreateOptions::for_tests("w")).expect("create");
    let keys = vault.host_keys(RecordId::random());
    // every write of a pack fails, the way a store (or a server) gone does
    let plan = FaultPlan::parse("budget=0,only=packs/").expect("plan");
    let failing: Arc<dyn Store> = Arc::new(FaultStore::new(store, plan));
    let target = WriterTarget { store: failing, compression_level: 0, pack_size: 1 << 16, parallel: 2 };
    let known = HashSet::new();
    let writer = BlobWriter::for_host(keys.clone(), keys.new_session().expect("session"), target, &known);
    let mut errors = Vec::new();
    for i in 0..200u32 {
        let mut chunk = vec![0u8; 40_000];
        chunk[..4].copy_from_slice(&i.to_le_bytes());
        if let Err(e) = writer.add(BlobKind::Data, &chunk) {
            errors.push(e.to_string());
        }
    }
    if let Err(e) = writer.flush() {
        errors.push(e.to_string());
    }
    assert!(errors.len() >= 2, "several callers saw the failure: {errors:?}");
    for e in &errors {
        assert!(e.contains("space"), "every caller learns what failed: {e}");
    }
}

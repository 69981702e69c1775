//! Regression: `vault check` beside a prune that merged small index objects
//! reported each merged-away object as "cannot be read: not found" (seen in
//! CI). Here the merge happens exactly between the check's listing of the
//! index objects and its first read of one, through a store wrapper that
//! runs it at that moment (fault injection over a real local folder).

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use boveda_store::{AbandonedUpload, Capabilities, LocalStore, ObjectInfo, PutMode, Store, StoreError};
use boveda_vault::{BlobKind, BlobWriter, CheckOptions, CreateOptions, Vault, check, consolidate_index};

type Hook = Box<dyn Fn() + Send + Sync>;

/// Runs `hook` once, right after the first listing of the index objects
/// (before any of them is read).
struct MergeAfterIndexListing {
    inner: Arc<dyn Store>,
    hook: OnceLock<Hook>,
    fired: AtomicBool,
}

impl Store for MergeAfterIndexListing {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.get(name)
    }
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        self.inner.get_range(name, offset, len)
    }
    fn put(&self, name: &str, data: &[u8], mode: PutMode) -> Result<ObjectInfo, StoreError> {
        self.inner.put(name, data, mode)
    }
    fn list_pages(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.inner.list_pages(prefix, visit)?;
        if prefix == "index"
            && let Some(hook) = self.hook.get()
            && !self.fired.swap(true, Ordering::SeqCst)
        {
            hook();
        }
        Ok(())
    }
    fn stat(&self, name: &str) -> Result<ObjectInfo, StoreError> {
        self.inner.stat(name)
    }
    fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.inner.delete(name)
    }
    fn abandoned_uploads(&self, before: SystemTime) -> Result<Vec<AbandonedUpload>, StoreError> {
        self.inner.abandoned_uploads(before)
    }
    fn discard_upload(&self, upload: &AbandonedUpload) -> Result<(), StoreError> {
        self.inner.discard_upload(upload)
    }
}

/// A vault over the wrapper with 20 small index objects (one per pack),
/// the wrapper armed to merge them, and whether the merge ran.
fn vault_about_to_merge(dir: &std::path::Path) -> (Vault, Arc<AtomicBool>) {
    let local: Arc<dyn Store> = Arc::new(LocalStore::new(dir.join("vault")));
    let wrapped = Arc::new(MergeAfterIndexListing { inner: local.clone(), hook: OnceLock::new(), fired: false.into() });
    let opts = CreateOptions::for_tests("merge");
    let vault = Vault::create(wrapped.clone(), b"pw", opts).expect("create");
    let index = vault.load_index().expect("index");
    for n in 0..20u32 {
        let writer = BlobWriter::new(&vault, &index);
        writer.add(BlobKind::Data, format!("blob {n}").as_bytes()).expect("add");
        writer.flush().expect("one pack, one index object");
    }
    let pruner = Vault::open(local, b"pw").expect("open");
    let merged = Arc::new(AtomicBool::new(false));
    let flag = merged.clone();
    let _ = wrapped.hook.set(Box::new(move || {
        let n = consolidate_index(&pruner).expect("merge");
        flag.store(n == 20, Ordering::SeqCst);
    }));
    (vault, merged)
}

#[test]
fn check_beside_a_prune_that_merges_index_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vault, merged) = vault_about_to_merge(dir.path());
    let report = check(&vault, CheckOptions { read_data: true }, &|_| {}).expect("check");
    assert!(merged.load(Ordering::SeqCst), "the merge ran between listing and reading");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.index_objects, 1, "the merged object was found by listing again");
}

/// A backup or restore reading the index beside the same merge finds every
/// chunk (through the merged object), so it neither stores chunks again
/// nor misses the parent's trees.
#[test]
fn index_read_beside_a_prune_that_merges_index_objects() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vault, merged) = vault_about_to_merge(dir.path());
    let index = vault.load_index().expect("index");
    assert!(merged.load(Ordering::SeqCst), "the merge ran between listing and reading");
    assert_eq!(index.len(), 20, "every chunk is indexed");
    assert!(vault.damage().entries().is_empty());
}

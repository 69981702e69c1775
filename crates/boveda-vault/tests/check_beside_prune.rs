//! Regression: `vault check` beside a prune that merged small index objects
//! reported each merged-away object as "cannot be read: not found" (seen in
//! CI). Here the merge happens exactly between the check's listing of the
//! index objects and its first read of one, through a store wrapper that
//! runs it at that moment (fault injection over a real local folder).

mod common;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use boveda_store::{AbandonedUpload, Capabilities, LocalStore, ObjectInfo, PutMode, Store, StoreError};
use boveda_vault::{
    BlobKind, BlobWriter, CheckOptions, ChunkId, ChunkIndex, CreateOptions, Node, NodeKind, RecordId, RecoveryPoint,
    Tree, Vault, check, consolidate_index,
};

type Hook = Box<dyn Fn() + Send + Sync>;

/// Runs `hook` once, right after the first listing of the index objects
/// (before any of them is read).
struct MergeAfterIndexListing {
    inner: Arc<dyn Store>,
    hook: OnceLock<Hook>,
    fired: AtomicBool,
    /// The folder whose first listing runs the hook.
    after: &'static str,
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
        if prefix == self.after
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
    let wrapped = Arc::new(MergeAfterIndexListing {
        inner: local.clone(),
        hook: OnceLock::new(),
        fired: false.into(),
        after: "index",
    });
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

/// A vault over the wrapper (armed after the first listing of the packs)
/// with one point whose root tree is alone in its pack; the wrapper, the
/// folder beneath it, the tree's bytes and the point.
fn one_point_vault(
    dir: &std::path::Path,
) -> (Vault, Arc<MergeAfterIndexListing>, Arc<dyn Store>, Vec<u8>, RecoveryPoint) {
    let local: Arc<dyn Store> = Arc::new(LocalStore::new(dir.join("vault")));
    let wrapped = Arc::new(MergeAfterIndexListing {
        inner: local.clone(),
        hook: OnceLock::new(),
        fired: false.into(),
        after: "packs",
    });
    let vault = Vault::create(wrapped.clone(), b"pw", CreateOptions::for_tests("move")).expect("create");
    let tree = Tree::new(vec![Node::new(b"empty".to_vec(), NodeKind::File)]).encode().expect("encode");
    let index = vault.load_index().expect("index");
    let writer = BlobWriter::new(&vault, &index);
    let root: ChunkId = writer.add(BlobKind::Tree, &tree).expect("add");
    writer.flush().expect("flush");
    drop(writer);
    let item = RecordId::random();
    let point = common::a_point(&vault, item, "docs", root, 1_800_000_000);
    vault.save_point(&point).expect("point");
    vault.catalog_put(boveda_vault::ITEMS_KIND, &item, Some(&serde_json::json!({"name": "docs"}))).expect("item");
    (vault, wrapped, local, tree, point)
}

fn sweep(local: &Arc<dyn Store>, folders: &[&str]) -> Vec<String> {
    folders.iter().flat_map(|f| local.list(f).expect("list")).map(|o| o.name).collect()
}

/// Regression: `vault check` beside a prune that repacked a tree and swept
/// its old pack (safety margin 0) reported the point's tree as "not found"
/// (seen in CI, against S3): the check walks trees with the index it read
/// at its start. Here the move happens exactly between the check's listing
/// of the packs and its walk of the trees.
#[test]
fn check_beside_a_prune_that_moves_a_tree_to_a_new_pack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vault, wrapped, local, tree, _) = one_point_vault(dir.path());
    // what a repack and a sweep do: the tree copied to a new pack with its
    // index object, then the old pack's index object and the old pack gone
    let pruner = Vault::open(local.clone(), b"pw").expect("open");
    let moved = Arc::new(AtomicBool::new(false));
    let flag = moved.clone();
    let _ = wrapped.hook.set(Box::new(move || {
        let old = sweep(&local, &["index", "packs"]);
        let empty = ChunkIndex::default();
        let copy = BlobWriter::new(&pruner, &empty);
        copy.add(BlobKind::Tree, &tree).expect("copy");
        copy.flush().expect("flush");
        for name in &old {
            local.delete(name).expect("sweep");
        }
        flag.store(true, Ordering::SeqCst);
    }));
    let report = check(&vault, CheckOptions { read_data: false }, &|_| {}).expect("check");
    assert!(moved.load(Ordering::SeqCst), "the move ran between listing the packs and walking the trees");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.trees, 1);
}

/// Regression: `vault check` beside a prune that deleted an expired point
/// and swept its trees reported the point's root as "not in any index of
/// the vault" (seen in CI, against S3): the check walked a point it had
/// listed before the prune deleted it. Here the deletion and the sweep
/// happen exactly between the check's listing of the packs and its walk.
#[test]
fn check_beside_a_prune_that_deletes_a_point_and_sweeps_its_trees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vault, wrapped, local, _, point) = one_point_vault(dir.path());
    let pruner = Vault::open(local.clone(), b"pw").expect("open");
    let deleted = Arc::new(AtomicBool::new(false));
    let flag = deleted.clone();
    let id = point.id;
    let _ = wrapped.hook.set(Box::new(move || {
        pruner.delete_point(&id, jiff::Timestamp::now()).expect("delete the point");
        for name in sweep(&local, &["index", "packs"]) {
            local.delete(&name).expect("sweep");
        }
        flag.store(true, Ordering::SeqCst);
    }));
    let report = check(&vault, CheckOptions { read_data: false }, &|_| {}).expect("check");
    assert!(deleted.load(Ordering::SeqCst), "the prune ran between listing the packs and walking the trees");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.notes.iter().any(|n| n.contains("deleted by a prune while checking")), "{:?}", report.notes);
}

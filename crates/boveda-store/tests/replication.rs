//! Replication to a secondary store: a pass copies what the secondary
//! lacks and deletes what the primary no longer has, on every pair of store
//! kinds (folders, Azurite to S3 and S3 to Azurite); a pass cut short by a
//! failing secondary is finished by the next one; the prune lease and
//! anything outside the vault's folders stays where it is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use boveda_store::{
    FaultStore, LocalStore, ObjectInfo, PutMode, ReplicationLag, Replicator, RetryPolicy, Store, StoreOptions,
    open_store_with,
};

const FOLDERS: [&str; 4] = ["packs", "index", "catalog", "points"];

fn open(url: &str) -> Arc<dyn Store> {
    let opts = StoreOptions { retry: RetryPolicy::default(), faults: None, create_container: true };
    open_store_with(url, &opts).expect("open store")
}

fn unique(kind: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("repl-{kind}-{}-{nanos:08x}", std::process::id())
}

fn remote(scheme: &str, var: &str) -> Arc<dyn Store> {
    assert!(
        std::env::var_os(var).is_some(),
        "{var} is not set: run the tests through scripts/test.sh (it starts Azurite and the S3 server)"
    );
    open(&format!("{scheme}://{}/vault", unique(scheme)))
}

/// Writes `n` objects spread over the folders (and the prune lease).
fn fill(store: &dyn Store, n: usize) -> u64 {
    let mut bytes = 0;
    for i in 0..n {
        let folder = FOLDERS[i % FOLDERS.len()];
        let data = format!("object {i} of the replication test ").repeat(i % 7 + 1).into_bytes();
        bytes += data.len() as u64;
        store.put(&format!("{folder}/{i:02x}/obj-{i:04}"), &data, PutMode::Create).expect("put");
    }
    store.put("locks/prune", b"held", PutMode::Create).expect("lease");
    bytes
}

fn names(store: &dyn Store) -> Vec<ObjectInfo> {
    let mut all = Vec::new();
    for f in FOLDERS {
        all.extend(store.list(f).expect("list"));
    }
    all
}

fn mirrors(primary: &dyn Store, secondary: &dyn Store) {
    let (p, s) = (names(primary), names(secondary));
    let pn: Vec<&str> = p.iter().map(|o| o.name.as_str()).collect();
    let sn: Vec<&str> = s.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(pn, sn, "the secondary lists what the primary lists");
    for name in pn {
        assert_eq!(secondary.get(name).expect("secondary copy"), primary.get(name).expect("primary"), "{name}");
    }
}

fn replicates(primary: Arc<dyn Store>, secondary: Arc<dyn Store>) {
    let bytes = fill(&*primary, 60);
    let repl = Replicator::new(primary.clone(), secondary.clone(), &FOLDERS, 4);
    let lag = repl.lag().expect("lag");
    assert_eq!((lag.objects, lag.bytes, lag.to_delete), (60, bytes, 0));
    assert!(lag.oldest.is_some(), "the store says when the oldest was written");
    let heard = AtomicU64::new(0);
    let report = repl
        .pass(&|n| {
            heard.fetch_add(n, Ordering::Relaxed);
        })
        .expect("pass");
    assert_eq!((report.copied, report.copied_bytes, report.deleted), (60, bytes, 0));
    assert_eq!(heard.into_inner(), bytes);
    assert_eq!(repl.lag().expect("lag"), ReplicationLag::default());
    mirrors(&*primary, &*secondary);
    assert!(secondary.get("locks/prune").is_err(), "the prune lease is not replicated");

    // deletions reach the secondary, only for what the primary lost
    for i in (0..60).step_by(6) {
        let folder = FOLDERS[i % FOLDERS.len()];
        primary.delete(&format!("{folder}/{i:02x}/obj-{i:04}")).expect("delete");
    }
    assert_eq!(repl.lag().expect("lag").to_delete, 10);
    let report = repl.pass(&|_| {}).expect("pass");
    assert_eq!((report.copied, report.deleted), (0, 10));
    mirrors(&*primary, &*secondary);
}

#[test]
fn a_pass_mirrors_a_folder_into_a_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let primary: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("primary")));
    let secondary: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("secondary")));
    replicates(primary, secondary);
}

#[test]
fn a_pass_mirrors_azurite_into_s3() {
    replicates(remote("azblob", "BOVEDA_TEST_AZURITE"), remote("s3", "BOVEDA_TEST_S3"));
}

#[test]
fn a_pass_mirrors_s3_into_azurite() {
    replicates(remote("s3", "BOVEDA_TEST_S3"), remote("azblob", "BOVEDA_TEST_AZURITE"));
}

/// The secondary runs out of space midway: the pass fails naming it, what
/// was copied stays, and the next pass (space back) copies only the rest.
#[test]
fn a_pass_cut_short_is_finished_by_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let primary: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("primary")));
    let secondary: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("secondary")));
    let bytes = fill(&*primary, 80);
    let full: Arc<dyn Store> = Arc::new(FaultStore::with_budget(secondary.clone(), bytes / 3));
    let err = Replicator::new(primary.clone(), full, &FOLDERS, 2).pass(&|_| {}).expect_err("no space");
    assert_eq!(err.kind(), boveda_store::StoreErrorKind::NoSpace, "{err}");
    let repl = Replicator::new(primary.clone(), secondary.clone(), &FOLDERS, 2);
    let left = repl.lag().expect("lag");
    assert!(left.objects > 0 && left.objects < 80, "part was copied: {left:?}");
    let report = repl.pass(&|_| {}).expect("pass");
    assert_eq!(report.copied, left.objects, "only the rest is copied");
    mirrors(&*primary, &*secondary);
}

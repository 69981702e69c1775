//! Replication to a secondary store: a pass copies what the secondary
//! lacks and deletes what the primary no longer has, on every pair of store
//! kinds (folders, Azurite to S3 and S3 to Azurite); a pass cut short by a
//! failing secondary is finished by the next one; the prune lease and
//! anything outside the vault's folders stays where it is.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use boveda_store::{
    FaultStore, LocalStore, ObjectInfo, PutMode, ReplicatingStore, ReplicationLag, Replicator, RetryPolicy, Store,
    StoreOptions, open_store_with,
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

/// The replicating layer over two folders, with the packs copied eagerly.
fn replicating(dir: &std::path::Path, host: &str) -> (Arc<dyn Store>, Arc<dyn Store>, ReplicatingStore) {
    let primary: Arc<dyn Store> = Arc::new(LocalStore::new(dir.join("p")));
    let secondary: Arc<dyn Store> = Arc::new(LocalStore::new(dir.join("s")));
    let layer = ReplicatingStore::new(primary.clone(), secondary.clone(), &FOLDERS, Some("packs"), 2, host);
    (primary, secondary, layer)
}

#[test]
fn a_write_leaves_a_pending_marker_until_a_pass_covers_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (primary, secondary, layer) = replicating(dir.path(), "host-a");
    assert!(!layer.is_due(), "nothing written, nothing due");
    layer.put("locks/prune", b"lease", PutMode::Create).expect("lease");
    assert!(layer.pending().expect("pending").is_empty(), "the lease is never replicated: no marker");
    layer.put("index/00/i1", b"index object", PutMode::Create).expect("put");
    layer.put("points/p1", b"manifest", PutMode::Create).expect("put");
    let markers = layer.pending().expect("pending");
    assert_eq!(markers.len(), 1, "one marker covers every write until the next pass: {markers:?}");
    assert!(layer.is_due());
    assert_eq!(secondary.list("points").expect("list").len(), 0, "manifests wait for the pass");

    // another process opening the vault sees the marker (its writer may be dead)
    let (_, _, other) = replicating(dir.path(), "host-b");
    assert!(other.look_for_pending().expect("look"), "another writer's marker makes a pass due");

    let report = layer.finish(&|_| {}).expect("pass");
    assert_eq!(report.copied, 2);
    assert!(layer.pending().expect("pending").is_empty(), "the pass removed the marker it covered");
    assert!(!layer.is_due());
    mirrors(&*primary, &*secondary);
    // a write after the pass is covered by a new marker
    layer.delete("points/p1").expect("delete");
    assert_eq!(layer.pending().expect("pending").len(), 1, "a deletion is marked too");
    layer.finish(&|_| {}).expect("pass");
    mirrors(&*primary, &*secondary);
}

#[test]
fn packs_reach_the_secondary_while_the_writer_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, secondary, layer) = replicating(dir.path(), "host-a");
    for i in 0..8u8 {
        layer.put(&format!("packs/0{i}/pack{i}"), &vec![i; 100_000], PutMode::Create).expect("put");
    }
    layer.put("index/00/i1", b"refers to the packs", PutMode::Create).expect("put");
    // the copiers are waited for by the pass; before it, what they copied
    // is on the secondary and no index object is
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while {
        let (copied, skipped) = layer.eager_copies();
        copied + skipped < 8
    } && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (copied, skipped) = layer.eager_copies();
    assert_eq!(copied + skipped, 8, "every pack was copied or left to the pass");
    assert!(copied > 0, "packs are copied as they are written");
    assert_eq!(secondary.list("packs").expect("list").len() as u64, copied);
    assert!(secondary.list("index").expect("list").is_empty(), "what refers to data waits for the pass");
    let report = layer.finish(&|_| {}).expect("pass");
    assert_eq!(report.copied, skipped + 1, "the pass copied what the copiers left, and the index object");
    assert_eq!(secondary.list("packs").expect("list").len(), 8);
}

#[test]
fn a_marker_of_a_writer_killed_on_this_host_is_cleared_by_the_next_pass() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (primary, secondary, layer) = replicating(dir.path(), "host-a");
    // a writer of this host whose process is gone (pid 0 is never a process
    // of ours; /proc/0 does not exist), and a live one of another host
    primary.put("replication/pending/host-a~999999999~00~1", b"", PutMode::Create).expect("dead marker");
    primary.put("replication/pending/host-b~42~00~1", b"", PutMode::Create).expect("live marker");
    primary.put("points/left-by-the-killed-writer", b"manifest", PutMode::Create).expect("put");
    assert!(layer.look_for_pending().expect("look"));
    layer.finish(&|_| {}).expect("pass");
    mirrors(&*primary, &*secondary);
    let left: Vec<String> = layer.pending().expect("pending").into_iter().map(|m| m.name).collect();
    assert_eq!(left, ["replication/pending/host-b~42~00~1"], "the dead writer's marker is gone, the live one stays");
}

//! The store contract, checked against every backend (a local folder,
//! Azurite, the moto S3 server) and every layer (retry and metrics as the
//! builder stacks them, and with faults injected underneath).
//!
//! Azurite and the S3 server are real processes that `scripts/stores.sh`
//! installs and starts; `scripts/test.sh` runs the tests with them.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use boveda_store::{
    FaultPlan, LIST_PAGE, LocalStore, MetricsStore, PutMode, RetryPolicy, Store, StoreErrorKind, StoreOptions, layer,
    open_store_with,
};

/// A store under test, and what keeps it alive.
struct Subject {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

fn unique(tag: &str) -> String {
    let mut raw = [0u8; 6];
    getrandom::fill(&mut raw).expect("random");
    format!("{tag}-{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn require(var: &str, what: &str) {
    assert!(
        std::env::var_os(var).is_some(),
        "{what} is not running: run the tests through scripts/test.sh (it installs and starts Azurite and the S3 server)"
    );
}

/// Fast retries, so injected faults cost little time.
fn quick_retry() -> RetryPolicy {
    RetryPolicy { attempts: 10, base_delay: Duration::from_millis(2), max_delay: Duration::from_millis(20) }
}

fn faults() -> FaultPlan {
    FaultPlan {
        fail: 0.15,
        lost_answer: 0.1,
        throttle: 0.05,
        throttle_wait: Duration::from_millis(5),
        seed: 11,
        ..FaultPlan::default()
    }
}

/// A fresh container or bucket per test, so tests run side by side.
fn remote(scheme: &str, var: &str, what: &str, faults: Option<FaultPlan>) -> Subject {
    require(var, what);
    let url = format!("{scheme}://{}/vault", unique("conf"));
    let opts = StoreOptions { retry: quick_retry(), faults, create_container: true };
    Subject { store: open_store_with(&url, &opts).expect("open the store"), _dir: None }
}

fn local_backend() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("vault")));
    (dir, store)
}

fn local() -> Subject {
    let (dir, backend) = local_backend();
    Subject { store: layer(backend, quick_retry(), None), _dir: Some(dir) }
}
fn local_bare() -> Subject {
    let (dir, backend) = local_backend();
    Subject { store: backend, _dir: Some(dir) }
}
fn local_metrics_only() -> Subject {
    let (dir, backend) = local_backend();
    Subject { store: Arc::new(MetricsStore::new(backend)), _dir: Some(dir) }
}
fn local_faulty() -> Subject {
    let (dir, backend) = local_backend();
    Subject { store: layer(backend, quick_retry(), Some(faults())), _dir: Some(dir) }
}
fn azurite() -> Subject {
    remote("azblob", "BOVEDA_TEST_AZURITE", "Azurite", None)
}
fn azurite_faulty() -> Subject {
    remote("azblob", "BOVEDA_TEST_AZURITE", "Azurite", Some(faults()))
}
fn s3() -> Subject {
    remote("s3", "BOVEDA_TEST_S3", "The S3 server", None)
}
fn s3_faulty() -> Subject {
    remote("s3", "BOVEDA_TEST_S3", "The S3 server", Some(faults()))
}

// ----- the cases -----

fn write_read_stat_delete(s: &dyn Store) {
    let info = s.put_new("packs/ab/abcd", b"hello world").expect("put");
    assert_eq!(info.size, 11);
    assert!(info.etag.is_some(), "a put names the version it stored");
    assert_eq!(s.get("packs/ab/abcd").expect("get"), b"hello world");
    assert_eq!(s.get_range("packs/ab/abcd", 6, 5).expect("range"), b"world");
    assert_eq!(s.get_range("packs/ab/abcd", 0, 0).expect("empty range"), b"");
    assert!(s.get_range("packs/ab/abcd", 8, 5).is_err(), "a range past the end is an error");
    let stat = s.stat("packs/ab/abcd").expect("stat");
    assert_eq!((stat.size, &stat.etag), (11, &info.etag));
    assert!(stat.modified.is_some());
    assert_eq!(s.get("packs/ab/none").expect_err("absent").kind(), StoreErrorKind::NotFound);
    assert_eq!(s.stat("packs/ab/none").expect_err("absent").kind(), StoreErrorKind::NotFound);
    s.delete("packs/ab/abcd").expect("delete");
    s.delete("packs/ab/abcd").expect("deleting an absent object succeeds");
    assert_eq!(s.get("packs/ab/abcd").expect_err("deleted").kind(), StoreErrorKind::NotFound);
    for bad in ["", "/abs", "a/../b", "a//b", "a/.tmp-1"] {
        assert_eq!(s.put_new(bad, b"x").expect_err(bad).kind(), StoreErrorKind::InvalidName, "{bad:?}");
    }
}

fn create_only_is_refused(s: &dyn Store) {
    s.put_new("config", b"first").expect("put");
    let err = s.put_new("config", b"second").expect_err("the name is taken");
    assert_eq!(err.kind(), StoreErrorKind::AlreadyExists, "{err}");
    assert_eq!(s.get("config").expect("get"), b"first");
}

fn conditional_replace(s: &dyn Store) {
    let first = s.put_new("catalog/head", b"v1").expect("put");
    if !s.capabilities().conditional_replace {
        let err = s.put("catalog/head", b"v2", PutMode::ReplaceIfMatch("x".into())).expect_err("unsupported");
        assert_eq!(err.kind(), StoreErrorKind::Unsupported);
        return;
    }
    let etag = first.etag.expect("etag");
    let second = s.put("catalog/head", b"v2", PutMode::ReplaceIfMatch(etag.clone())).expect("replace");
    assert_eq!(s.get("catalog/head").expect("get"), b"v2");
    assert_ne!(second.etag.as_deref(), Some(etag.as_str()), "a replace makes a new version");
    let stale = s.put("catalog/head", b"v3", PutMode::ReplaceIfMatch(etag)).expect_err("stale version");
    assert_eq!(stale.kind(), StoreErrorKind::ConditionNotMet, "{stale}");
    assert_eq!(s.get("catalog/head").expect("get"), b"v2");
    let gone = s.put("catalog/none", b"v1", PutMode::ReplaceIfMatch("\"0x0\"".into())).expect_err("absent");
    assert_eq!(gone.kind(), StoreErrorKind::ConditionNotMet, "{gone}");
    assert_eq!(s.get("catalog/none").expect_err("not created").kind(), StoreErrorKind::NotFound);
}

/// Every put's answer is lost after it landed: the retry finds its own
/// bytes and succeeds; a different object at the name is still refused.
fn retried_put_that_landed(s: Arc<dyn Store>) {
    let lossy = FaultPlan { lost_answer: 1.0, ..FaultPlan::default() };
    let stack = layer(s.clone(), quick_retry(), Some(lossy));
    let info = stack.put_new("index/aa", b"content-addressed bytes").expect("the retry finds its own write");
    assert_eq!(info.size, 23);
    assert_eq!(s.get("index/aa").expect("get"), b"content-addressed bytes");
    s.put_new("index/bb", b"someone else's").expect("put");
    let err = stack.put_new("index/bb", b"mine").expect_err("another object holds the name");
    assert_eq!(err.kind(), StoreErrorKind::AlreadyExists);
}

/// Writes `count` small objects below `prefix` from 8 threads.
fn put_many(s: &dyn Store, prefix: &str, count: usize) {
    std::thread::scope(|scope| {
        for t in 0..8 {
            scope.spawn(move || {
                for i in (t..count).step_by(8) {
                    s.put_new(&format!("{prefix}/{:02x}/{i:06}", i % 7), &i.to_le_bytes()).expect("put");
                }
            });
        }
    });
}

fn paged_listing(s: &dyn Store) {
    let count = 2 * LIST_PAGE + 500;
    put_many(s, "many", count);
    s.put_new("manyx/outside", b"x").expect("put");
    s.put_new("other/1", b"x").expect("put");
    let mut pages = Vec::new();
    s.list_pages("many", &mut |page| {
        pages.push(page);
        ControlFlow::Continue(())
    })
    .expect("list");
    assert!(pages.len() >= 3 && pages.iter().all(|p| p.len() <= LIST_PAGE), "paged: {:?}", pages.len());
    let names: Vec<String> = pages.into_iter().flatten().map(|o| o.name).collect();
    assert_eq!(names.len(), count, "every object, each once, none from beside the prefix");
    assert!(names.windows(2).all(|w| w[0] < w[1]), "ascending name order");
    assert!(names.iter().all(|n| n.starts_with("many/")));
    let mut first = 0;
    s.list_pages("many", &mut |page| {
        first += page.len();
        ControlFlow::Break(())
    })
    .expect("list");
    assert!(first > 0 && first <= LIST_PAGE, "a listing stops when asked");
    assert!(s.list("absent").expect("list").is_empty());
    assert!(s.is_empty_below("absent").expect("empty"));
    assert!(!s.is_empty_below("other").expect("not empty"));
    assert_eq!(s.list("").expect("all").len(), count + 2);
    let sizes: u64 = s.list("other").expect("list").iter().map(|o| o.size).sum();
    assert_eq!(sizes, 1);
}

fn large_object(s: &dyn Store) {
    let data: Vec<u8> = (0..40u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    s.put_new("packs/big", &data).expect("put 40 MiB");
    assert_eq!(s.stat("packs/big").expect("stat").size, data.len() as u64);
    let tail = s.get_range("packs/big", (data.len() - 4096) as u64, 4096).expect("range");
    assert_eq!(tail, data[data.len() - 4096..]);
    assert!(s.get("packs/big").expect("get") == data, "the whole object comes back");
}

/// Eight writers race for one name, ten rounds: one wins each round, and
/// the object is the winner's.
fn racing_writers(s: &dyn Store) {
    for round in 0..10 {
        let name = format!("points/race-{round}");
        let results: Vec<(usize, bool)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|w| {
                    let name = name.clone();
                    scope.spawn(move || {
                        let body = format!("writer {w}");
                        match s.put_new(&name, body.as_bytes()) {
                            Ok(_) => (w, true),
                            Err(e) if e.kind() == StoreErrorKind::AlreadyExists => (w, false),
                            Err(e) => panic!("writer {w}: {e}"),
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("join")).collect()
        });
        let winners: Vec<usize> = results.iter().filter(|r| r.1).map(|r| r.0).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert_eq!(s.get(&name).expect("get"), format!("writer {}", winners[0]).as_bytes());
    }
}

macro_rules! conformance {
    ($($backend:ident),* $(,)?) => {$(
        mod $backend {
            #[test]
            fn write_read_stat_delete() {
                super::write_read_stat_delete(&*super::$backend().store);
            }
            #[test]
            fn create_only_is_refused() {
                super::create_only_is_refused(&*super::$backend().store);
            }
            #[test]
            fn conditional_replace() {
                super::conditional_replace(&*super::$backend().store);
            }
            #[test]
            fn retried_put_that_landed() {
                super::retried_put_that_landed(super::$backend().store);
            }
            #[test]
            fn paged_listing() {
                super::paged_listing(&*super::$backend().store);
            }
            #[test]
            fn large_object() {
                super::large_object(&*super::$backend().store);
            }
            #[test]
            fn racing_writers() {
                super::racing_writers(&*super::$backend().store);
            }
        }
    )*};
}

conformance!(local, local_bare, local_metrics_only, local_faulty, azurite, azurite_faulty, s3, s3_faulty);

#[test]
fn metrics_count_each_request_and_byte() {
    let (_dir, backend) = local_backend();
    let metered = Arc::new(MetricsStore::new(backend));
    let m = metered.metrics();
    metered.put_new("a/1", b"12345").expect("put");
    metered.get("a/1").expect("get");
    metered.get_range("a/1", 1, 2).expect("range");
    let _ = metered.get("a/2");
    metered.list("a").expect("list");
    let snap = m.snapshot();
    assert_eq!((snap.puts, snap.gets, snap.range_gets, snap.list_pages, snap.errors), (1, 2, 1, 1, 1));
    assert_eq!((snap.bytes_written, snap.bytes_read), (5, 7));
}

#[test]
fn retries_give_up_after_the_limit_naming_the_error() {
    let (_dir, backend) = local_backend();
    let always = FaultPlan { fail: 1.0, ..FaultPlan::default() };
    let policy = RetryPolicy { attempts: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_millis(2) };
    let metered = Arc::new(MetricsStore::new(Arc::new(boveda_store::FaultStore::new(backend, always))));
    let stack = boveda_store::RetryStore::new(metered.clone(), policy);
    let err = stack.get("a/1").expect_err("every try fails");
    assert!(err.is_retryable() && err.to_string().contains("503"), "{err}");
    assert_eq!(metered.metrics().snapshot().gets, 3, "three tries, no more");
}

#[test]
fn throttling_waits_what_the_store_asked() {
    let (_dir, backend) = local_backend();
    backend.put_new("a/1", b"x").expect("put");
    let plan = FaultPlan { throttle: 1.0, throttle_wait: Duration::from_millis(40), ..FaultPlan::default() };
    let policy = RetryPolicy { attempts: 3, base_delay: Duration::from_millis(1), max_delay: Duration::from_secs(1) };
    let stack = boveda_store::RetryStore::new(Arc::new(boveda_store::FaultStore::new(backend, plan)), policy);
    let start = std::time::Instant::now();
    let err = stack.get("a/1").expect_err("always throttled");
    assert_eq!(err.kind(), StoreErrorKind::RateLimited);
    assert!(start.elapsed() >= Duration::from_millis(80), "two waits of at least 40 ms each");
}

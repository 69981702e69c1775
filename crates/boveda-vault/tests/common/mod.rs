//! Helpers shared by the vault's integration tests: a test vault on any
//! store URL, fresh URLs in Azurite and the S3 server that
//! scripts/test.sh starts, and a recovery point to save.
#![allow(dead_code)] // each test binary uses some of them

use boveda_store::{RetryPolicy, StoreOptions, open_store_with};
use boveda_vault::{CreateOptions, Vault};

/// A new test vault at `url` (its container or bucket created).
pub fn vault_in(url: &str) -> Vault {
    let opts = StoreOptions { retry: RetryPolicy::default(), faults: None, create_container: true };
    let store = open_store_with(url, &opts).expect("open store");
    Vault::create(store, b"pw", CreateOptions::for_tests("test")).expect("create")
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("vault-{}-{nanos:08x}", std::process::id())
}

/// A fresh vault URL in the store `scheme` (`azblob` or `s3`), which the
/// environment variable `var` says is running.
pub fn remote(scheme: &str, var: &str) -> String {
    assert!(
        std::env::var_os(var).is_some(),
        "{var} is not set: run the tests through scripts/test.sh (it starts Azurite and the S3 server)"
    );
    format!("{scheme}://{}/vault", unique())
}

/// An ad-hoc point of `item` (named `name`) whose root tree is `tree`,
/// taken at `second` (Unix time).
pub fn a_point(
    vault: &Vault,
    item: boveda_vault::RecordId,
    name: &str,
    tree: boveda_vault::ChunkId,
    second: i64,
) -> boveda_vault::RecoveryPoint {
    let time = jiff::Timestamp::from_second(second).expect("time");
    boveda_vault::RecoveryPoint {
        id: vault.new_point_id(&item),
        item_id: item,
        item_name: name.into(),
        started: time,
        time,
        tree,
        parent: None,
        hostname: "h".into(),
        sources: Vec::new(),
        consistency: boveda_vault::Consistency::CrashConsistent,
        retain_until: None,
        scheduled_for: None,
        kept_by: "ad-hoc".into(),
        stats: boveda_vault::PointStats::default(),
        warnings: Vec::new(),
        live_bitmap: None,
        freeze_ms: None,
    }
}

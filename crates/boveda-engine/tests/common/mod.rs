//! Helpers shared by the engine's integration tests.

use std::path::Path;
use std::sync::Arc;

use boveda_store::Store;
use boveda_vault::{CreateOptions, Vault};

/// A vault with 1 MiB packs and the cheapest key derivation, in `store`.
pub fn test_vault(store: Arc<dyn Store>, compression_level: i32) -> Vault {
    let mut opts = CreateOptions::for_tests("t");
    opts.settings.compression_level = compression_level;
    Vault::create(store, b"pw", opts).expect("create")
}

/// A vault in a local folder below `dir`.
#[allow(dead_code)]
pub fn local_vault(dir: &Path) -> Vault {
    test_vault(Arc::new(boveda_store::LocalStore::new(dir.join("vault"))), 3)
}

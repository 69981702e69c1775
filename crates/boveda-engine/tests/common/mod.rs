//! Helpers shared by the engine's integration tests.

use std::path::Path;
use std::sync::Arc;

use boveda_store::Store;
use boveda_vault::{ChunkerParams, CreateOptions, KdfParams, Vault, VaultSettings};

/// A vault with 1 MiB packs and the cheapest key derivation, in `store`.
pub fn test_vault(store: Arc<dyn Store>, compression_level: i32) -> Vault {
    let settings = VaultSettings {
        name: "t".into(),
        location: "test".into(),
        redundancy: "lrs".into(),
        secondary: None,
        pack_size: 1 << 20,
        compression_level,
        soft_delete_days: VaultSettings::DEFAULT_SOFT_DELETE_DAYS,
        webhook: None,
        store: boveda_vault::StoreSettings::default(),
    };
    let opts =
        CreateOptions { settings, kdf: KdfParams::TESTING, chunker: ChunkerParams::DEFAULT, hostname: "h".into() };
    Vault::create(store, b"pw", opts).expect("create")
}

/// A vault in a local folder below `dir`.
#[allow(dead_code)]
pub fn local_vault(dir: &Path) -> Vault {
    test_vault(Arc::new(boveda_store::LocalStore::new(dir.join("vault"))), 3)
}

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

/// Runs a tool the tests need (qemu-img, qemu-io...), which must succeed.
#[allow(dead_code)]
pub fn sh(cmd: &mut std::process::Command) {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A QEMU process a test started (qemu-nbd, qemu-storage-daemon), killed
/// when dropped.
#[allow(dead_code)]
pub struct Qemu(pub std::process::Child);

impl Qemu {
    /// Starts `cmd` and waits (at most 20 s) until `ready` holds.
    #[allow(dead_code)]
    pub fn start(cmd: &mut std::process::Command, ready: impl Fn() -> bool) -> Qemu {
        let q = Qemu(cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?} (qemu-utils) runs: {e}")));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !ready() {
            assert!(std::time::Instant::now() < deadline, "{cmd:?} never came up");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        q
    }
}

impl Drop for Qemu {
    /// SIGTERM first, so that QEMU ends cleanly (unmounting its FUSE
    /// exports); SIGKILL after 10 s.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{AbandonedUpload, ObjectInfo, Store, StoreError, StoreErrorKind};

/// A wrapper that makes `put` fail with `NoSpace` once a byte budget is
/// spent: fault injection for tests, on top of a real store.
pub struct FaultStore {
    inner: Arc<dyn Store>,
    budget: AtomicU64,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn Store>, put_budget_bytes: u64) -> Self {
        Self { inner, budget: AtomicU64::new(put_budget_bytes) }
    }

    /// Gives the store more room, as when a user frees disk space.
    pub fn refill(&self, bytes: u64) {
        self.budget.store(bytes, Ordering::SeqCst);
    }
}

impl Store for FaultStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.inner.get(name)
    }
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        self.inner.get_range(name, offset, len)
    }
    fn put(&self, name: &str, data: &[u8]) -> Result<(), StoreError> {
        let need = data.len() as u64;
        let took = self.budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(need));
        if took.is_err() {
            return Err(StoreError::new(StoreErrorKind::NoSpace, "write", name));
        }
        self.inner.put(name, data)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        self.inner.list(prefix)
    }
    fn stat(&self, name: &str) -> Result<ObjectInfo, StoreError> {
        self.inner.stat(name)
    }
    fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.inner.delete(name)
    }
    fn abandoned_uploads(&self, before: std::time::SystemTime) -> Result<Vec<AbandonedUpload>, StoreError> {
        self.inner.abandoned_uploads(before)
    }
    fn discard_upload(&self, upload: &AbandonedUpload) -> Result<(), StoreError> {
        self.inner.discard_upload(upload)
    }
}

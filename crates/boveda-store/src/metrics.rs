//! The metrics layer: counts the requests a store receives and the bytes
//! they move, per store and for the whole process.

use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::{AbandonedUpload, Capabilities, CreateGrant, ObjectInfo, PutMode, Store, StoreError};

/// Request and byte counters.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    pub gets: AtomicU64,
    pub range_gets: AtomicU64,
    pub puts: AtomicU64,
    pub list_pages: AtomicU64,
    pub stats: AtomicU64,
    pub deletes: AtomicU64,
    pub errors: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
}

/// A copy of the counters at one instant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub gets: u64,
    pub range_gets: u64,
    pub puts: u64,
    pub list_pages: u64,
    pub stats: u64,
    pub deletes: u64,
    pub errors: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

impl MetricsSnapshot {
    /// Requests of every kind.
    pub fn requests(&self) -> u64 {
        self.gets + self.range_gets + self.puts + self.list_pages + self.stats + self.deletes
    }
}

impl fmt::Display for MetricsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests (get {}, ranged get {}, put {}, list page {}, stat {}, delete {}; {} failed), {} bytes read, {} bytes written",
            self.requests(),
            self.gets,
            self.range_gets,
            self.puts,
            self.list_pages,
            self.stats,
            self.deletes,
            self.errors,
            self.bytes_read,
            self.bytes_written
        )
    }
}

impl StoreMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            gets: r(&self.gets),
            range_gets: r(&self.range_gets),
            puts: r(&self.puts),
            list_pages: r(&self.list_pages),
            stats: r(&self.stats),
            deletes: r(&self.deletes),
            errors: r(&self.errors),
            bytes_read: r(&self.bytes_read),
            bytes_written: r(&self.bytes_written),
        }
    }
}

static PROCESS: StoreMetrics = StoreMetrics {
    gets: AtomicU64::new(0),
    range_gets: AtomicU64::new(0),
    puts: AtomicU64::new(0),
    list_pages: AtomicU64::new(0),
    stats: AtomicU64::new(0),
    deletes: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    bytes_read: AtomicU64::new(0),
    bytes_written: AtomicU64::new(0),
};

/// What every store this process opened has received so far.
pub fn process_metrics() -> MetricsSnapshot {
    PROCESS.snapshot()
}

/// Counts the calls that reach another store.
pub struct MetricsStore {
    inner: Arc<dyn Store>,
    metrics: Arc<StoreMetrics>,
}

impl MetricsStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self { inner, metrics: Arc::default() }
    }

    /// This store's counters.
    pub fn metrics(&self) -> Arc<StoreMetrics> {
        self.metrics.clone()
    }

    fn count<T>(
        &self,
        counter: fn(&StoreMetrics) -> &AtomicU64,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        for m in [&*self.metrics, &PROCESS] {
            counter(m).fetch_add(1, Ordering::Relaxed);
            if result.is_err() {
                m.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    fn add_bytes(&self, counter: fn(&StoreMetrics) -> &AtomicU64, bytes: usize) {
        for m in [&*self.metrics, &PROCESS] {
            counter(m).fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }
}

impl Store for MetricsStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        let got = self.count(|m| &m.gets, self.inner.get(name))?;
        self.add_bytes(|m| &m.bytes_read, got.len());
        Ok(got)
    }
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let got = self.count(|m| &m.range_gets, self.inner.get_range(name, offset, len))?;
        self.add_bytes(|m| &m.bytes_read, got.len());
        Ok(got)
    }
    fn get_range_into(&self, name: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        self.count(|m| &m.range_gets, self.inner.get_range_into(name, offset, len, buf))?;
        self.add_bytes(|m| &m.bytes_read, buf.len());
        Ok(())
    }
    fn put(&self, name: &str, data: &[u8], mode: PutMode) -> Result<ObjectInfo, StoreError> {
        self.add_bytes(|m| &m.bytes_written, data.len());
        self.count(|m| &m.puts, self.inner.put(name, data, mode))
    }
    fn list_pages(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let mut pages = 0;
        let result = self.inner.list_pages(prefix, &mut |page| {
            pages += 1;
            visit(page)
        });
        for m in [&*self.metrics, &PROCESS] {
            // an empty listing is still one request
            m.list_pages.fetch_add(pages.max(1), Ordering::Relaxed);
            if result.is_err() {
                m.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }
    fn delete_version(&self, name: &str) -> Result<(), StoreError> {
        self.inner.delete_version(name)
    }

    fn lock_object(&self, name: &str, lock: &crate::store::ObjectLock) -> Result<bool, StoreError> {
        self.inner.lock_object(name, lock)
    }

    fn object_lock(&self, name: &str) -> Result<Option<crate::store::ObjectLock>, StoreError> {
        self.inner.object_lock(name)
    }

    fn can_lock(&self) -> Result<bool, StoreError> {
        self.inner.can_lock()
    }

    fn grant_create(&self, name: &str, len: u64, ttl: Duration) -> Result<Option<CreateGrant>, StoreError> {
        self.inner.grant_create(name, len, ttl)
    }

    fn stat(&self, name: &str) -> Result<ObjectInfo, StoreError> {
        self.count(|m| &m.stats, self.inner.stat(name))
    }
    fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.count(|m| &m.deletes, self.inner.delete(name))
    }
    fn abandoned_uploads(&self, before: SystemTime) -> Result<Vec<AbandonedUpload>, StoreError> {
        self.count(|m| &m.list_pages, self.inner.abandoned_uploads(before))
    }
    fn discard_upload(&self, upload: &AbandonedUpload) -> Result<(), StoreError> {
        self.count(|m| &m.deletes, self.inner.discard_upload(upload))
    }
}

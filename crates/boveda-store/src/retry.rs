//! The retry layer: transient failures (a server error, a timeout, a reset
//! connection, throttling) are tried again with exponential backoff and
//! full jitter, waiting at least what a store's `Retry-After` asked for.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::{AbandonedUpload, Capabilities, CreateGrant, ObjectInfo, PutMode, Store, StoreError, StoreErrorKind};

/// How hard the retry layer tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1 = never retry).
    pub attempts: u32,
    /// The first backoff; each later one doubles, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 8, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(20) }
    }
}

impl RetryPolicy {
    /// The wait before try number `attempt + 1` (attempt counts from 1):
    /// a random share of the doubled delay, or what the store asked for.
    fn backoff(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        let cap = self.base_delay.saturating_mul(1u32 << attempt.min(20)).min(self.max_delay);
        let jittered = cap.mul_f64(jitter());
        match asked {
            Some(wait) => wait.min(self.max_delay).max(jittered),
            None => jittered,
        }
    }
}

/// A number in [0.5, 1): enough spread that writers who failed together do
/// not retry together, never so little that a retry comes at once.
fn jitter() -> f64 {
    let mut raw = [0u8; 8];
    if getrandom::fill(&mut raw).is_err() {
        return 0.75;
    }
    0.5 + (u64::from_le_bytes(raw) >> 11) as f64 / (1u64 << 53) as f64 / 2.0
}

/// Store calls tried again, by every retry layer of the process.
static RETRIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many store calls this process has tried again since it started.
pub fn process_retries() -> u64 {
    RETRIES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Runs `call` until it succeeds, fails for good, or `policy`'s tries run
/// out, as the retry layer does; for requests made before a store's layers
/// exist (opening a container or bucket).
///
/// # Errors
/// The last error.
pub fn retrying<T>(policy: &RetryPolicy, mut call: impl FnMut(u32) -> Result<T, StoreError>) -> Result<T, StoreError> {
    let attempts = policy.attempts.max(1);
    let mut attempt = 1;
    loop {
        match call(attempt) {
            Err(e) if e.is_retryable() && attempt < attempts => {
                RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(policy.backoff(attempt, e.retry_after()));
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Retries the calls of another store.
pub struct RetryStore {
    inner: Arc<dyn Store>,
    policy: RetryPolicy,
}

impl RetryStore {
    pub fn new(inner: Arc<dyn Store>, policy: RetryPolicy) -> Self {
        Self { inner, policy: RetryPolicy { attempts: policy.attempts.max(1), ..policy } }
    }

    /// Runs `call` until it succeeds, fails for good, or the tries run out.
    /// `call` learns which try it is (from 1).
    fn retry<T>(&self, mut call: impl FnMut(u32) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut attempt = 1;
        loop {
            match call(attempt) {
                Err(e) if e.is_retryable() && attempt < self.policy.attempts => {
                    RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(self.policy.backoff(attempt, e.retry_after()));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// After a retried put was refused, whether what lies at `name` is
    /// exactly `data`: the first try landed and only its answer was lost.
    fn landed(&self, name: &str, data: &[u8]) -> Result<Option<ObjectInfo>, StoreError> {
        match self.retry(|_| self.inner.get(name)) {
            Ok(stored) if stored == data => Ok(Some(self.retry(|_| self.inner.stat(name))?)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == StoreErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Store for RetryStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.retry(|_| self.inner.get(name))
    }
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        self.retry(|_| self.inner.get_range(name, offset, len))
    }
    fn get_range_into(&self, name: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        self.retry(|_| self.inner.get_range_into(name, offset, len, buf))
    }
    fn put(&self, name: &str, data: &[u8], mode: PutMode) -> Result<ObjectInfo, StoreError> {
        let refused = |e: &StoreError| match mode {
            PutMode::Create => e.kind() == StoreErrorKind::AlreadyExists,
            PutMode::ReplaceIfMatch(_) => e.kind() == StoreErrorKind::ConditionNotMet,
        };
        let mut retried = false;
        let result = self.retry(|attempt| {
            retried = attempt > 1;
            self.inner.put(name, data, mode.clone())
        });
        match result {
            Err(e) if retried && refused(&e) => self.landed(name, data)?.ok_or(e),
            other => other,
        }
    }
    fn list_pages(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        // A listing that fails midway starts over and skips what was seen.
        let mut last: Option<String> = None;
        self.retry(|_| {
            self.inner.list_pages(prefix, &mut |mut page| {
                if let Some(seen) = &last {
                    page.retain(|o| o.name > *seen);
                    if page.is_empty() {
                        return ControlFlow::Continue(());
                    }
                }
                last = page.last().map(|o| o.name.clone());
                visit(page)
            })
        })
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
        self.retry(|_| self.inner.stat(name))
    }
    fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.retry(|_| self.inner.delete(name))
    }
    fn abandoned_uploads(&self, before: SystemTime) -> Result<Vec<AbandonedUpload>, StoreError> {
        self.retry(|_| self.inner.abandoned_uploads(before))
    }
    fn discard_upload(&self, upload: &AbandonedUpload) -> Result<(), StoreError> {
        self.retry(|_| self.inner.discard_upload(upload))
    }
}

//! The fault-injection layer, for tests on top of a real store: fails a
//! chosen share of calls, loses the answers of some writes that landed,
//! throttles, adds latency, and runs out of space after a byte budget.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::{AbandonedUpload, Capabilities, CreateGrant, ObjectInfo, PutMode, Store, StoreError, StoreErrorKind};

/// Which faults to inject, and how often (shares between 0 and 1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// Calls that fail, retryably, before reaching the store.
    pub fail: f64,
    /// Writes that reach the store and land, but whose answer is lost (a
    /// retryable error comes back instead).
    pub lost_answer: f64,
    /// Calls answered "slow down" with a `Retry-After` of `throttle_wait`.
    pub throttle: f64,
    pub throttle_wait: Duration,
    /// Added before every call.
    pub latency: Duration,
    /// Bytes that writes may store before the store is "full".
    pub put_budget: Option<u64>,
    /// Seed of the choice of failing calls.
    pub seed: u64,
    /// Fail and throttle only calls on objects whose names start with this
    /// (such as `packs/`: a store that fails uploads of data, not records).
    pub only: Option<String>,
    /// Range reads whose answer arrives with one bit flipped (damaged on
    /// the way; the stored object is intact).
    pub flip: f64,
}

impl FaultPlan {
    /// Parses `fail=0.05,lost=0.01,throttle=0.01,throttle-wait=50ms,latency=20ms,budget=1000000,seed=7,only=packs/,flip=0.1`
    /// (every part optional): the form of `BOVEDA_STORE_FAULTS`.
    ///
    /// # Errors
    /// A message naming the part that does not parse.
    pub fn parse(spec: &str) -> Result<FaultPlan, String> {
        let mut plan = FaultPlan { throttle_wait: Duration::from_millis(50), ..FaultPlan::default() };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| format!("fault {part:?} is not KEY=VALUE"))?;
            let bad = || format!("fault {part:?}: {value:?} does not parse");
            let share = || value.parse::<f64>().ok().filter(|v| (0.0..=1.0).contains(v)).ok_or_else(bad);
            let millis = || {
                value.strip_suffix("ms").and_then(|v| v.parse::<u64>().ok()).map(Duration::from_millis).ok_or_else(bad)
            };
            match key {
                "fail" => plan.fail = share()?,
                "lost" => plan.lost_answer = share()?,
                "throttle" => plan.throttle = share()?,
                "throttle-wait" => plan.throttle_wait = millis()?,
                "latency" => plan.latency = millis()?,
                "budget" => plan.put_budget = Some(value.parse().map_err(|_| bad())?),
                "seed" => plan.seed = value.parse().map_err(|_| bad())?,
                "only" => plan.only = Some(value.to_string()),
                "flip" => plan.flip = share()?,
                _ => {
                    return Err(format!(
                        "unknown fault {key:?} (fail, lost, throttle, throttle-wait, latency, budget, seed, only, flip)"
                    ));
                }
            }
        }
        Ok(plan)
    }
}

/// A store that misbehaves as its [`FaultPlan`] says.
pub struct FaultStore {
    inner: Arc<dyn Store>,
    plan: FaultPlan,
    budget: AtomicU64,
    calls: AtomicU64,
    injected: AtomicU64,
}

/// An injected transient failure.
#[derive(Debug)]
struct Injected(&'static str);

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "injected fault: {}", self.0)
    }
}

impl std::error::Error for Injected {}

/// A well-mixed 64-bit number from a counter (SplitMix64).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl FaultStore {
    pub fn new(inner: Arc<dyn Store>, plan: FaultPlan) -> Self {
        let budget = AtomicU64::new(plan.put_budget.unwrap_or(u64::MAX));
        Self { inner, plan, budget, calls: AtomicU64::new(0), injected: AtomicU64::new(0) }
    }

    /// A store that is "full" after `put_budget_bytes` bytes of writes.
    pub fn with_budget(inner: Arc<dyn Store>, put_budget_bytes: u64) -> Self {
        Self::new(inner, FaultPlan { put_budget: Some(put_budget_bytes), ..FaultPlan::default() })
    }

    /// Gives the store more room, as when a user frees disk space.
    pub fn refill(&self, bytes: u64) {
        self.budget.store(bytes, Ordering::SeqCst);
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// A number in [0, 1) for this call.
    fn roll(&self) -> f64 {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        (mix(self.plan.seed ^ mix(n)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Before a call: the latency, then perhaps a failure or throttling.
    fn before(&self, operation: &'static str, object: &str) -> Result<(), StoreError> {
        if !self.plan.latency.is_zero() {
            std::thread::sleep(self.plan.latency);
        }
        if self.plan.only.as_deref().is_some_and(|p| !object.starts_with(p)) {
            return Ok(());
        }
        let roll = self.roll();
        if roll < self.plan.fail {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::new(StoreErrorKind::Other, operation, object)
                .retryable(true)
                .with_source(Injected("503 Service Unavailable")));
        }
        if roll < self.plan.fail + self.plan.throttle {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::new(StoreErrorKind::RateLimited, operation, object)
                .with_retry_after(self.plan.throttle_wait)
                .with_source(Injected("429 Too Many Requests")));
        }
        Ok(())
    }
}

impl Store for FaultStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.before("read", name)?;
        self.inner.get(name)
    }
    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        self.before("read", name)?;
        let mut got = self.inner.get_range(name, offset, len)?;
        let targeted = self.plan.only.as_deref().is_none_or(|p| name.starts_with(p));
        if targeted && !got.is_empty() && self.plan.flip > 0.0 && self.roll() < self.plan.flip {
            self.injected.fetch_add(1, Ordering::Relaxed);
            let at = (mix(self.calls.load(Ordering::Relaxed)) % got.len() as u64) as usize;
            got[at] ^= 1;
        }
        Ok(got)
    }
    fn put(&self, name: &str, data: &[u8], mode: PutMode) -> Result<ObjectInfo, StoreError> {
        self.before("write", name)?;
        let need = data.len() as u64;
        if self.budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(need)).is_err() {
            return Err(StoreError::new(StoreErrorKind::NoSpace, "write", name));
        }
        let info = self.inner.put(name, data, mode)?;
        let targeted = self.plan.only.as_deref().is_none_or(|p| name.starts_with(p));
        if targeted && self.roll() < self.plan.lost_answer {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::new(StoreErrorKind::Other, "write", name)
                .retryable(true)
                .with_source(Injected("connection reset after the write landed")));
        }
        Ok(info)
    }
    fn list_pages(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.before("list", prefix)?;
        // a listing may also fail between pages, as a real one can
        let mut failed = None;
        self.inner.list_pages(prefix, &mut |page| match self.before("list", prefix) {
            Ok(()) => visit(page),
            Err(e) => {
                failed = Some(e);
                ControlFlow::Break(())
            }
        })?;
        failed.map_or(Ok(()), Err)
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
        self.before("stat", name)?;
        self.inner.stat(name)
    }
    fn delete(&self, name: &str) -> Result<(), StoreError> {
        self.before("delete", name)?;
        self.inner.delete(name)
    }
    fn abandoned_uploads(&self, before: SystemTime) -> Result<Vec<AbandonedUpload>, StoreError> {
        self.before("list uploads", "")?;
        self.inner.abandoned_uploads(before)
    }
    fn discard_upload(&self, upload: &AbandonedUpload) -> Result<(), StoreError> {
        self.before("discard", &upload.name)?;
        self.inner.discard_upload(upload)
    }
}

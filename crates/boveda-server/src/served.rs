//! A vault the server serves, with what it caches of it: its tokens, and
//! listings shared by the requests of the same moment (jobs, the item
//! overview, the usage report behind the dashboard), so that many clients
//! cost one read of the store.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use boveda_service::fleet::HostSet;
use boveda_service::fleet::intake::HostJobs;
use boveda_service::{ItemOverview, Job, JobFilter, ServiceError, TokenSet, Vault, item_overview, list_jobs};

use crate::{ApiError, ApiResult, blocking};

/// How long a vault's token list is trusted before it is read again: a
/// token revoked by another process is refused after at most this long.
const TOKENS_TTL: Duration = Duration::from_secs(2);
/// How long a vault's job list and item overview are shared between
/// requests.
const SHARED_TTL: Duration = Duration::from_millis(500);
/// How long the dashboard and usage report are shared between requests.
const REPORT_TTL: Duration = Duration::from_secs(10);

/// A listing as it was read at one time, and as JSON.
pub(crate) struct Entry<T> {
    at: Instant,
    /// How many of this process's jobs had ended when it was read: one
    /// ending since makes it stale at once (an item must not read
    /// InProgress after its job failed).
    ended: u64,
    pub value: Arc<T>,
    /// The whole listing as the API returns it, serialized once.
    pub json: axum::body::Bytes,
}

/// A listing shared by all requests: read at most once per `ttl`. When it
/// is older, requests get it as it is while one of them has it read again
/// in the background, so that a slow read (a busy store) never holds up
/// many clients; only the first read is waited for.
pub(crate) struct Shared<T> {
    slot: Arc<RwLock<Option<Arc<Entry<T>>>>>,
    loading: tokio::sync::Mutex<()>,
    refreshing: Arc<std::sync::atomic::AtomicBool>,
    /// Raised by each change, so that a read begun before it is not kept.
    generation: Arc<AtomicU64>,
    /// Read again at once when a job of this process ended since (jobs,
    /// items); the usage report waits for its time.
    follows_jobs: bool,
}

impl<T: serde::Serialize + Send + Sync + 'static> Shared<T> {
    fn new(follows_jobs: bool) -> Self {
        Shared {
            slot: Arc::default(),
            loading: tokio::sync::Mutex::new(()),
            refreshing: Arc::default(),
            generation: Arc::default(),
            follows_jobs,
        }
    }

    /// Whether `entry` may still be given: not when it follows jobs and
    /// one ended after it was read.
    fn usable(&self, entry: &Entry<T>) -> bool {
        !self.follows_jobs || entry.ended == boveda_service::jobs_ended()
    }

    fn current(&self) -> Option<Arc<Entry<T>>> {
        self.slot.read().ok().and_then(|s| s.clone())
    }

    fn read(load: impl FnOnce() -> Result<T, ServiceError>) -> Result<Entry<T>, ServiceError> {
        let ended = boveda_service::jobs_ended();
        let value = load()?;
        let json = serde_json::to_vec(&value).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(Entry { at: Instant::now(), ended, value: Arc::new(value), json: json.into() })
    }

    async fn get(
        &self,
        ttl: Duration,
        load: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
    ) -> ApiResult<Arc<Entry<T>>> {
        use std::sync::atomic::Ordering::SeqCst;
        if let Some(entry) = self.current().filter(|e| self.usable(e)) {
            if entry.at.elapsed() >= ttl && !self.refreshing.swap(true, SeqCst) {
                self.renew(load);
            }
            return Ok(entry);
        }
        let _one_reader = self.loading.lock().await;
        if let Some(entry) = self.current().filter(|e| self.usable(e)) {
            return Ok(entry);
        }
        let started = self.generation.load(SeqCst);
        let entry = Arc::new(blocking(move || Self::read(load)).await?);
        if self.generation.load(SeqCst) == started
            && let Ok(mut slot) = self.slot.write()
        {
            *slot = Some(entry.clone());
        }
        Ok(entry)
    }

    /// Reads the listing again in the background; kept unless a change
    /// came after the read began.
    fn renew(&self, load: impl FnOnce() -> Result<T, ServiceError> + Send + 'static) {
        use std::sync::atomic::Ordering::SeqCst;
        let (slot, refreshing, generation) = (self.slot.clone(), self.refreshing.clone(), self.generation.clone());
        let started = generation.load(SeqCst);
        refreshing.store(true, SeqCst);
        tokio::spawn(async move {
            if let Ok(fresh) = blocking(move || Self::read(load)).await
                && generation.load(SeqCst) == started
                && let Ok(mut slot) = slot.write()
            {
                *slot = Some(Arc::new(fresh));
            }
            refreshing.store(false, SeqCst);
        });
    }

    /// After a change: the listing is read again at once, and requests get
    /// the one they have until then (a read in progress is not kept).
    pub(crate) fn changed(&self, load: impl FnOnce() -> Result<T, ServiceError> + Send + 'static) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.current().is_some() {
            self.renew(load);
        }
    }
}

/// A vault the server serves, with what it caches of it.
pub struct Served {
    pub vault: Arc<Vault>,
    tokens: Mutex<Option<(Instant, Arc<TokenSet>)>>,
    tokens_refreshing: std::sync::atomic::AtomicBool,
    clock: Arc<dyn boveda_service::Clock>,
    jobs: Shared<Vec<Job>>,
    items: Shared<Vec<ItemOverview>>,
    /// The usage report walks every point's trees: shared like the
    /// listings, read at most once per [`REPORT_TTL`], so any number of
    /// clients cost one walk at a time. The dashboard is made per request
    /// from it and the catalog's listings, a few at once.
    usage: Shared<boveda_service::Usage>,
    dashboards: tokio::sync::Semaphore,
    /// The vault's registered hosts, read again after [`TOKENS_TTL`] (an
    /// unregistered host is refused within that long).
    hosts: Mutex<Option<(Instant, Arc<HostSet>)>>,
    /// When each host's last contact was recorded.
    contacts: Mutex<std::collections::HashMap<boveda_service::RecordId, Instant>>,
    /// Backups that registered hosts run now.
    pub host_jobs: Arc<HostJobs>,
    /// What the server asks of its hosts (scheduled slots, backup now).
    pub host_work: Arc<boveda_service::fleet::work::HostWork>,
}

/// How often a host's last contact is written to its record.
const CONTACT_EVERY: Duration = Duration::from_secs(60);

impl Served {
    pub fn new(vault: Arc<Vault>, clock: Arc<dyn boveda_service::Clock>) -> Arc<Served> {
        Arc::new(Served {
            vault,
            clock,
            tokens: Mutex::new(None),
            tokens_refreshing: std::sync::atomic::AtomicBool::new(false),
            jobs: Shared::new(true),
            items: Shared::new(true),
            usage: Shared::new(false),
            dashboards: tokio::sync::Semaphore::new(4),
            hosts: Mutex::new(None),
            contacts: Mutex::default(),
            host_jobs: Arc::default(),
            host_work: Arc::default(),
        })
    }

    pub fn name(&self) -> String {
        self.vault.settings().name.clone()
    }

    /// The vault's tokens as last read, without waiting: when older than
    /// [`TOKENS_TTL`] they are read again in the background. `None` before
    /// the first read. Runs inside the async runtime.
    pub(crate) fn cached_tokens(self: &Arc<Self>) -> Option<Arc<TokenSet>> {
        use std::sync::atomic::Ordering::SeqCst;
        let (at, set) = self.tokens.lock().ok()?.clone()?;
        if at.elapsed() >= TOKENS_TTL && !self.tokens_refreshing.swap(true, SeqCst) {
            let me = self.clone();
            tokio::task::spawn_blocking(move || {
                let _ = me.tokens(true);
                me.tokens_refreshing.store(false, SeqCst);
            });
        }
        Some(set)
    }

    /// The vault's tokens, read again when older than [`TOKENS_TTL`].
    /// Blocking.
    pub(crate) fn tokens(&self, fresh: bool) -> Result<Arc<TokenSet>, ServiceError> {
        if !fresh
            && let Ok(cached) = self.tokens.lock()
            && let Some((at, set)) = cached.as_ref()
            && at.elapsed() < TOKENS_TTL
        {
            return Ok(set.clone());
        }
        let set = Arc::new(TokenSet::load(&self.vault)?);
        if let Ok(mut cached) = self.tokens.lock() {
            *cached = Some((Instant::now(), set.clone()));
        }
        Ok(set)
    }

    /// The vault's hosts, read again when older than [`TOKENS_TTL`].
    /// Blocking.
    pub(crate) fn hosts(&self) -> Result<Arc<HostSet>, ServiceError> {
        if let Ok(cached) = self.hosts.lock()
            && let Some((at, set)) = cached.as_ref()
            && at.elapsed() < TOKENS_TTL
        {
            return Ok(set.clone());
        }
        let set = Arc::new(HostSet::load(&self.vault)?);
        if let Ok(mut cached) = self.hosts.lock() {
            *cached = Some((Instant::now(), set.clone()));
        }
        Ok(set)
    }

    /// Records that a host was heard from, at most once per
    /// [`CONTACT_EVERY`]. Blocking.
    pub(crate) fn heard_from(&self, host: &boveda_service::RecordId) {
        let due = self.contacts.lock().is_ok_and(|mut c| {
            let due = c.get(host).is_none_or(|at| at.elapsed() >= CONTACT_EVERY);
            if due {
                c.insert(*host, Instant::now());
            }
            due
        });
        if due {
            // a contact not recorded is recorded with the next one
            let _ = boveda_service::fleet::touch_host(&self.vault, host, self.clock.now());
        }
    }

    /// Every job of the vault, shared by the requests of the same instant:
    /// many clients watching jobs cost one listing per [`JOBS_TTL`].
    pub(crate) async fn jobs(&self) -> ApiResult<Arc<Vec<Job>>> {
        Ok(self.jobs_entry().await?.value.clone())
    }

    pub(crate) async fn jobs_entry(&self) -> ApiResult<Arc<Entry<Vec<Job>>>> {
        let vault = self.vault.clone();
        self.jobs.get(SHARED_TTL, move || list_jobs(&vault, &JobFilter::default())).await
    }

    /// The item overview, shared as [`Served::jobs`].
    pub(crate) async fn items(&self, now: jiff::Timestamp) -> ApiResult<Arc<Entry<Vec<ItemOverview>>>> {
        let vault = self.vault.clone();
        self.items.get(SHARED_TTL, move || item_overview(&vault, now)).await
    }

    /// The dashboard: the shared usage report and the catalog as it is
    /// now (jobs and alerts fresh), at most four made at once.
    pub(crate) async fn dashboard(&self) -> ApiResult<boveda_service::Dashboard> {
        let used = self.usage().await?;
        let _turn = self.dashboards.acquire().await.map_err(|e| ApiError::internal(e.to_string()))?;
        let (vault, now) = (self.vault.clone(), self.clock.now());
        blocking(move || boveda_service::dashboard_with(&vault, &used.value, now)).await
    }

    /// The usage report, shared as the dashboard.
    pub(crate) async fn usage(&self) -> ApiResult<Arc<Entry<boveda_service::Usage>>> {
        let vault = self.vault.clone();
        self.usage
            .get(REPORT_TTL, move || boveda_service::usage(&vault, &boveda_service::PriceTable::chosen(None)?))
            .await
    }

    /// After a change made through the server: tokens are read again
    /// before the next request is checked, the listings at once in the
    /// background.
    pub(crate) fn changed(&self) {
        if let Ok(mut t) = self.tokens.lock() {
            *t = None;
        }
        if let Ok(mut h) = self.hosts.lock() {
            *h = None;
        }
        let vault = self.vault.clone();
        self.jobs.changed(move || list_jobs(&vault, &JobFilter::default()));
        let (vault, clock) = (self.vault.clone(), self.clock.clone());
        self.items.changed(move || item_overview(&vault, clock.now()));
    }
}

//! # boveda-server: `boveda serve`
//!
//! The REST API under `/api/v1`, the web portal under `/`, Prometheus
//! metrics under `/metrics`, over the vaults one process serves. Every
//! handler is one call to `boveda-service`, the same functions the CLI
//! calls; this crate adds only what is the server's own: who is asking
//! (tokens, sessions, roles), HTTP, and the limits a server needs against
//! slow or hostile clients.
//!
//! The service's functions block (they read and write the store), so each
//! runs on tokio's blocking pool; long operations (backup now, restore)
//! run as background jobs and the client follows the job.

mod api;
mod auth;
mod error;
pub mod guard;
mod metrics;
mod openapi;
mod portal;
mod routes;
mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use boveda_service::{
    BackgroundEnv, ItemOverview, Job, JobFilter, KdfParams, ServiceError, TokenSet, Vault, item_overview, list_jobs,
};

pub use api::route_specs;
pub use auth::{FAILURE_WINDOW, MAX_FAILURES, MAX_SESSIONS_PER_TOKEN};
pub use error::{ApiError, ApiResult};
pub use routes::{RouteSpec, Scope};
pub use tls::{TlsListener, tls_config};

/// The OpenAPI document of every route (served at `/api/v1/openapi.json`).
pub fn openapi_document() -> serde_json::Value {
    openapi::document(&api::route_specs(), &routes::PUBLIC_ROUTES)
}

/// How the server runs.
pub struct ServerConfig {
    /// The passphrase the served vaults open with, and new vaults get.
    pub passphrase: Vec<u8>,
    /// The key derivation of vaults created through the API.
    pub kdf: KdfParams,
    /// The folders a restore through the API may write into.
    pub restore_roots: Vec<PathBuf>,
    /// Session cookies only over TLS (set when the server or its proxy
    /// speaks HTTPS).
    pub secure_cookies: bool,
    /// What jobs started through the API run with.
    pub jobs: BackgroundEnv,
    /// The largest request body accepted.
    pub body_limit: usize,
    /// How long a request (reading its body included) may take.
    pub request_timeout: Duration,
    /// How long an event stream stays open at most.
    pub stream_limit: Duration,
    /// Event streams open at once, over all clients.
    pub max_streams: usize,
    /// Event streams one token may hold open at once.
    pub max_streams_per_token: usize,
    /// How long a portal session lasts.
    pub session_life: Duration,
    /// Connections, per address and in all, and their time limits; `None`:
    /// fitted to the open-file limit ([`guard::Limits::for_this_process`]).
    pub connection_limits: Option<guard::Limits>,
}

impl ServerConfig {
    pub fn new(passphrase: Vec<u8>, jobs: BackgroundEnv) -> Self {
        ServerConfig {
            passphrase,
            kdf: KdfParams::DEFAULT,
            restore_roots: Vec::new(),
            secure_cookies: false,
            jobs,
            body_limit: 1 << 20,
            request_timeout: Duration::from_secs(30),
            stream_limit: Duration::from_secs(3600),
            max_streams: 256,
            max_streams_per_token: 16,
            connection_limits: None,
            session_life: Duration::from_secs(8 * 3600),
        }
    }
}

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
    pub value: Arc<T>,
    /// The whole listing as the API returns it, serialized once.
    pub json: axum::body::Bytes,
}

/// A listing shared by all requests: read at most once per `ttl`. When it
/// is older, requests get it as it is while one of them has it read again
/// in the background, so that a slow read (a busy store) never holds up
/// many clients; only the first read is waited for.
struct Shared<T> {
    slot: Arc<RwLock<Option<Arc<Entry<T>>>>>,
    loading: tokio::sync::Mutex<()>,
    refreshing: Arc<std::sync::atomic::AtomicBool>,
    /// Raised by each change, so that a read begun before it is not kept.
    generation: Arc<AtomicU64>,
}

impl<T: serde::Serialize + Send + Sync + 'static> Shared<T> {
    fn new() -> Self {
        Shared {
            slot: Arc::default(),
            loading: tokio::sync::Mutex::new(()),
            refreshing: Arc::default(),
            generation: Arc::default(),
        }
    }

    fn current(&self) -> Option<Arc<Entry<T>>> {
        self.slot.read().ok().and_then(|s| s.clone())
    }

    fn read(load: impl FnOnce() -> Result<T, ServiceError>) -> Result<Entry<T>, ServiceError> {
        let value = load()?;
        let json = serde_json::to_vec(&value).map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(Entry { at: Instant::now(), value: Arc::new(value), json: json.into() })
    }

    async fn get(
        &self,
        ttl: Duration,
        load: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
    ) -> ApiResult<Arc<Entry<T>>> {
        use std::sync::atomic::Ordering::SeqCst;
        if let Some(entry) = self.current() {
            if entry.at.elapsed() >= ttl && !self.refreshing.swap(true, SeqCst) {
                self.renew(load);
            }
            return Ok(entry);
        }
        let _one_reader = self.loading.lock().await;
        if let Some(entry) = self.current() {
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
    fn changed(&self, load: impl FnOnce() -> Result<T, ServiceError> + Send + 'static) {
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
}

impl Served {
    pub fn new(vault: Arc<Vault>, clock: Arc<dyn boveda_service::Clock>) -> Arc<Served> {
        Arc::new(Served {
            vault,
            clock,
            tokens: Mutex::new(None),
            tokens_refreshing: std::sync::atomic::AtomicBool::new(false),
            jobs: Shared::new(),
            items: Shared::new(),
            usage: Shared::new(),
            dashboards: tokio::sync::Semaphore::new(4),
        })
    }

    pub fn name(&self) -> String {
        self.vault.settings().name.clone()
    }

    /// The vault's tokens as last read, without waiting: when older than
    /// [`TOKENS_TTL`] they are read again in the background. `None` before
    /// the first read. Runs inside the async runtime.
    fn cached_tokens(self: &Arc<Self>) -> Option<Arc<TokenSet>> {
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
    fn tokens(&self, fresh: bool) -> Result<Arc<TokenSet>, ServiceError> {
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

    /// Every job of the vault, shared by the requests of the same instant:
    /// many clients watching jobs cost one listing per [`JOBS_TTL`].
    async fn jobs(&self) -> ApiResult<Arc<Vec<Job>>> {
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
    fn changed(&self) {
        if let Ok(mut t) = self.tokens.lock() {
            *t = None;
        }
        let vault = self.vault.clone();
        self.jobs.changed(move || list_jobs(&vault, &JobFilter::default()));
        let (vault, clock) = (self.vault.clone(), self.clock.clone());
        self.items.changed(move || item_overview(&vault, clock.now()));
    }
}

/// Counters of the server's own, for `/metrics`.
#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub denied: AtomicU64,
    pub unauthorized: AtomicU64,
    pub streams: AtomicUsize,
}

/// Told of each vault created through the API (the scheduler serves it).
pub type VaultHook = Box<dyn Fn(Arc<Vault>) + Send + Sync>;

/// The server's state, shared by all requests.
pub struct App {
    pub config: ServerConfig,
    vaults: RwLock<Vec<Arc<Served>>>,
    sessions: Mutex<auth::Sessions>,
    failures: Mutex<HashMap<String, auth::Failures>>,
    /// Event streams open, by the token that opened them.
    pub(crate) streams_by_token: Mutex<HashMap<boveda_service::RecordId, usize>>,
    pub counters: Counters,
    on_new_vault: Option<VaultHook>,
    /// Set when the server shuts down: event streams end.
    pub closing: std::sync::atomic::AtomicBool,
}

pub type AppState = Arc<App>;

impl App {
    pub fn new(config: ServerConfig, vaults: Vec<Arc<Vault>>, on_new_vault: Option<VaultHook>) -> AppState {
        let served = vaults.into_iter().map(|v| Served::new(v, config.jobs.clock.clone())).collect();
        Arc::new(App {
            config,
            vaults: RwLock::new(served),
            sessions: Mutex::default(),
            failures: Mutex::default(),
            streams_by_token: Mutex::default(),
            counters: Counters::default(),
            on_new_vault,
            closing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The vaults served now.
    pub fn served(&self) -> Vec<Arc<Served>> {
        self.vaults.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// The served vault of this name.
    pub fn find(&self, name: &str) -> Option<Arc<Served>> {
        self.served().into_iter().find(|s| s.name().eq_ignore_ascii_case(name))
    }

    fn add(&self, vault: Arc<Vault>) -> Arc<Served> {
        let served = Served::new(vault.clone(), self.config.jobs.clock.clone());
        if let Ok(mut v) = self.vaults.write() {
            v.push(served.clone());
        }
        if let Some(hook) = &self.on_new_vault {
            hook(vault);
        }
        served
    }
}

/// Runs a blocking service call on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> ApiResult<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("the request's work ended abnormally: {e}"))),
    }
}

/// The whole application: API, portal, metrics.
pub fn router(app: AppState) -> Router {
    Router::new()
        .merge(api::router(app.clone()))
        .merge(portal::router(app.clone()))
        .route("/metrics", axum::routing::get(metrics::metrics))
        .fallback(api::unknown_route)
        .layer(axum::middleware::from_fn_with_state(app.clone(), auth::limits))
        .with_state(app)
}

/// The address a connection comes from, over TCP or TLS.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl<L> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, guard::Guarded<L>>> for ClientAddr
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    L::Io: Unpin,
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, guard::Guarded<L>>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// Serves `router` on `listener` until `shutdown` completes.
///
/// # Errors
/// An I/O error of the listener.
pub async fn serve<L>(
    listener: L,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    ClientAddr: for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    axum::serve(listener, router.into_make_service_with_connect_info::<ClientAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// The scheduler of `boveda agent`, run for each served vault on a thread
/// of its own (a vault created through the API gets one at once).
pub struct Scheduler {
    pub clock: Arc<dyn boveda_service::Clock>,
    pub max_jobs: usize,
    pub heartbeat: Duration,
    pub safety_margin: jiff::SignedDuration,
    pub poll: Duration,
    pub stop: &'static std::sync::atomic::AtomicBool,
}

impl Scheduler {
    /// Starts the scheduler of one vault; it runs until `stop` is set.
    pub fn start(self: &Arc<Self>, vault: Arc<Vault>) -> std::thread::JoinHandle<()> {
        let me = self.clone();
        std::thread::spawn(move || {
            let name = vault.settings().name.clone();
            let opts = boveda_service::AgentOptions {
                max_jobs: me.max_jobs,
                heartbeat: me.heartbeat,
                safety_margin: me.safety_margin,
                until: None,
                poll: me.poll,
                hostname: boveda_service::hostname(),
            };
            let log = |line: &str| eprintln!("{} {line}", jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S"));
            if let Err(e) = boveda_service::run_agent(&[vault], me.clock.as_ref(), &opts, me.stop, &log) {
                eprintln!("the scheduler of vault {name} stopped: {e}");
            }
        })
    }
}

/// Serves `app` on `listen` until `stop` is set: the CLI's entry point,
/// which needs no async runtime of its own. Prints the address it listens
/// on (useful with port 0).
///
/// # Errors
/// The address cannot be bound, or the runtime cannot start.
pub fn run(
    app: AppState,
    listen: std::net::SocketAddr,
    tls_settings: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    stop: &'static std::sync::atomic::AtomicBool,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let limits = app.config.connection_limits.unwrap_or_else(guard::Limits::for_this_process);
        let scheme = if tls_settings.is_some() { "https" } else { "http" };
        eprintln!("boveda serve: listening on {scheme}://{}", listener.local_addr()?);
        let closing = app.clone();
        let shutdown = async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            closing.closing.store(true, std::sync::atomic::Ordering::Relaxed);
        };
        match tls_settings {
            Some(config) => {
                serve(guard::Guarded::new(TlsListener::new(listener, config)?, limits), router(app), shutdown).await
            }
            None => serve(guard::Guarded::new(listener, limits), router(app), shutdown).await,
        }
    })
}

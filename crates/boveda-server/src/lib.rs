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
mod host_room;
mod metrics;
mod openapi;
mod portal;
mod routes;
mod scheduler;
mod served;
mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use boveda_service::{BackgroundEnv, KdfParams, ServiceError, Vault};

pub use api::route_specs;
pub use auth::{FAILURE_WINDOW, MAX_FAILURES, MAX_SESSIONS_PER_TOKEN};
pub use error::{ApiError, ApiResult};
pub use routes::{RouteSpec, Scope};
pub use scheduler::Scheduler;
pub use served::Served;
pub use tls::{TlsListener, certificate_fingerprint_of, tls_config};

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
    /// Downloads of a point's files streaming at once, over all clients,
    /// and per token (each holds a thread while it streams).
    pub max_downloads: usize,
    pub max_downloads_per_token: usize,
    /// How long one download may stream at most.
    pub download_limit: Duration,
    /// How long a portal session lasts.
    pub session_life: Duration,
    /// Connections, per address and in all, and their time limits; `None`:
    /// fitted to the open-file limit ([`guard::Limits::for_this_process`]).
    pub connection_limits: Option<guard::Limits>,
    /// The SHA-256 fingerprint of the server's TLS certificate, named in
    /// the credentials hosts register with; `None` without TLS (hosts
    /// cannot register then).
    pub tls_fingerprint: Option<String>,
    /// The address hosts reach the server at (`https://name:port`), when
    /// it is not the one a credentials request came to.
    pub public_url: Option<String>,
    /// How long a host may stay silent during a backup before its job fails.
    pub host_silence: Duration,
    /// Bytes a host may upload in one backup job.
    pub host_quota: u64,
    /// Whether hosts upload packs straight to an S3 or Azure store with
    /// create-only grants (else everything passes through the server).
    pub host_direct: bool,
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
            max_downloads: 8,
            max_downloads_per_token: 2,
            download_limit: Duration::from_secs(6 * 3600),
            connection_limits: None,
            session_life: Duration::from_secs(8 * 3600),
            tls_fingerprint: None,
            public_url: None,
            host_silence: boveda_service::fleet::intake::DEFAULT_SILENCE,
            host_quota: boveda_service::fleet::intake::UPLOAD_QUOTA,
            host_direct: true,
        }
    }
}

/// Counters of the server's own, for `/metrics`.
#[derive(Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub denied: AtomicU64,
    pub unauthorized: AtomicU64,
    pub streams: AtomicUsize,
    /// Bytes of objects hosts uploaded through the server.
    pub host_bytes: AtomicU64,
    /// Packs hosts were granted to upload straight to the store, and
    /// their bytes.
    pub host_grants: AtomicU64,
    pub host_granted_bytes: AtomicU64,
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
    /// Downloads streaming, in all and by the token that asked.
    pub(crate) downloads: Mutex<(usize, HashMap<boveda_service::RecordId, usize>)>,
    pub counters: Counters,
    on_new_vault: Option<VaultHook>,
    /// Set when the server shuts down: event streams end.
    pub closing: std::sync::atomic::AtomicBool,
    /// Room for host uploads in memory (see `host_room`).
    pub(crate) host_room: Arc<host_room::HostRoom>,
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
            downloads: Mutex::default(),
            counters: Counters::default(),
            on_new_vault,
            closing: std::sync::atomic::AtomicBool::new(false),
            host_room: Arc::default(),
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

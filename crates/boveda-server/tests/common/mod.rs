//! What the server's tests share: a served vault with items and tokens of
//! every role, and calls through the router without a socket.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use boveda_server::{App, AppState, ServerConfig};
use boveda_service::{BackgroundEnv, Clock, FakeClock, KdfParams, NewToken, NewVault, Vault};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const PASS: &[u8] = b"server test passphrase";

pub struct Fixture {
    pub app: AppState,
    pub router: Router,
    pub dir: tempfile::TempDir,
    pub vault: Arc<Vault>,
    pub name: String,
    pub clock: Arc<FakeClock>,
    /// Tokens by "Reader", "Operator", "Contributor", "SecurityAdmin", and "Reader/docs"
    /// etc. for those scoped to the item `docs`.
    pub tokens: HashMap<String, String>,
    /// The folder the server may restore into.
    pub restores: PathBuf,
}

static ENV: Once = Once::new();
static COUNT: AtomicUsize = AtomicUsize::new(0);

/// A vault with two items (`docs`, a folder of files, and `other`), the
/// default policy, and a token of every role, unscoped and scoped to `docs`.
pub fn fixture() -> Fixture {
    fixture_with(|_| {})
}

pub fn fixture_with(tune: impl FnOnce(&mut ServerConfig)) -> Fixture {
    ENV.call_once(|| {
        // a folder of this run alone: one left by an earlier run whose
        // process had the same id would hold its vault names
        let home = tempfile::Builder::new().prefix("boveda-server-tests-").tempdir().expect("home").keep();
        // SAFETY: set once, before any test of this binary reads them
        unsafe {
            std::env::set_var("BOVEDA_CONFIG_DIR", home.join("config"));
            std::env::set_var("BOVEDA_CACHE_DIR", home.join("cache"));
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let name = format!("v{}-{}", std::process::id(), COUNT.fetch_add(1, Ordering::SeqCst));
    let req = NewVault {
        name: name.clone(),
        store: dir.path().join("store").display().to_string(),
        location: "local".into(),
        redundancy: "lrs".into(),
        secondary: None,
        pack_size_mib: 1,
        compression_level: 3,
        kdf: KdfParams::TESTING,
        create_container: false,
        object_lock: None,
        lock_margin_days: None,
    };
    let vault = Arc::new(boveda_service::create_vault(&req, PASS).expect("vault"));
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("sub")).expect("docs");
    std::fs::write(docs.join("a.txt"), b"first file\n").expect("write");
    let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(docs.join("sub/b.bin"), &big).expect("write");
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).expect("other");
    std::fs::write(other.join("c.txt"), b"other item\n").expect("write");
    boveda_service::add_files_item(&vault, "docs", &[docs], &[]).expect("docs item");
    boveda_service::add_files_item(&vault, "other", &[other], &[]).expect("other item");

    let clock = Arc::new(FakeClock::new(jiff::Timestamp::now()));
    let now = clock.now();
    let mut tokens = HashMap::new();
    for role in ["Reader", "Operator", "Contributor", "SecurityAdmin"] {
        for scoped in [false, true] {
            let req = NewToken {
                role: role.into(),
                items: if scoped { vec!["docs".into()] } else { vec![] },
                description: String::new(),
                expires: None,
            };
            let (_, secret) = boveda_service::create_token(&vault, &req, now, "test").expect("token");
            tokens.insert(if scoped { format!("{role}/docs") } else { role.to_string() }, secret);
        }
    }
    let restores = dir.path().join("restores");
    std::fs::create_dir_all(&restores).expect("restores");
    let jobs = BackgroundEnv::new(clock.clone() as Arc<dyn Clock>, Duration::from_millis(200), "test".into());
    let mut config = ServerConfig::new(PASS.to_vec(), jobs);
    config.kdf = KdfParams::TESTING;
    config.restore_roots = vec![restores.clone()];
    tune(&mut config);
    let app = App::new(config, vec![vault.clone()], None);
    let router = boveda_server::router(app.clone());
    Fixture { app, router, dir, vault, name, clock, tokens, restores }
}

/// A response: status, headers, body as JSON (or a string when it is not).
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub text: String,
    pub bytes: Vec<u8>,
}

impl Fixture {
    pub fn token(&self, key: &str) -> &str {
        &self.tokens[key]
    }

    /// `{vault}` in a path as this fixture's vault.
    pub fn path(&self, p: &str) -> String {
        p.replace("{vault}", &self.name)
    }

    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        call_router(&self.router, &self.path(path), method, token, body).await
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        send_router(&self.router, req).await
    }

    /// Waits for a job to end; the job.
    pub async fn wait_job(&self, id: &str, token: &str) -> Value {
        for _ in 0..600 {
            let r = self.call("GET", &format!("/api/v1/vaults/{{vault}}/jobs/{id}"), Some(token), None).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            let state = r.body["state"].as_str().unwrap_or_default().to_string();
            if !["Queued", "InProgress", "Cancelling"].contains(&state.as_str()) {
                return r.body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("job {id} did not end in a minute");
    }
}

impl Fixture {
    /// Records a job like `ended` (a job as the API returned it) that is
    /// still in progress in another process, its heartbeat fresh for an
    /// hour; its id.
    pub fn running_job_like(&self, ended: Value) -> String {
        let mut job: boveda_service::Job = serde_json::from_value(ended).expect("job");
        job.id = boveda_service::RecordId::random();
        job.state = boveda_service::JobState::InProgress;
        job.end = None;
        job.heartbeat = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1);
        self.vault.catalog_put("jobs", &job.id, Some(&job)).expect("record");
        job.id.to_hex()
    }
}

/// Another server over the same vault, opened afresh (nothing of it read
/// or cached yet), with the same tokens: as after a restart.
pub struct Replica {
    pub router: Router,
    name: String,
}

pub fn fixture_on(f: &Fixture) -> Replica {
    let vault = Arc::new(boveda_service::open_vault(Some(&f.name), PASS).expect("open again"));
    let jobs = BackgroundEnv::new(f.clock.clone() as Arc<dyn Clock>, Duration::from_millis(200), "test".into());
    let mut config = ServerConfig::new(PASS.to_vec(), jobs);
    config.kdf = KdfParams::TESTING;
    let app = App::new(config, vec![vault], None);
    Replica { router: boveda_server::router(app), name: f.name.clone() }
}

impl Replica {
    pub async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        call_router(&self.router, &path.replace("{vault}", &self.name), method, token, body).await
    }
}

/// A request through `router` to `uri`, with a bearer token and a JSON body.
async fn call_router(router: &Router, uri: &str, method: &str, token: Option<&str>, body: Option<Value>) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req.header(header::CONTENT_TYPE, "application/json").body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    };
    send_router(router, req.expect("request")).await
}

async fn send_router(router: &Router, req: Request<Body>) -> Reply {
    let response = router.clone().oneshot(req).await.expect("router answers");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).to_string();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply { status, headers, body, text, bytes: bytes.to_vec() }
}

//! Who is asking, and whether they may: tokens (bearer or through a
//! portal session), roles and item scope per route, CSRF protection of
//! sessions, and the limits every request runs under.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, RawPathParams, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use boveda_service::{AccessToken, Item, Role, TokenRefusal, find_item};

use crate::error::{ApiError, ApiResult};
use crate::routes::{RouteSpec, Scope};
use crate::{App, AppState, Served, blocking};

/// The portal's session cookie.
pub const SESSION_COOKIE: &str = "boveda_session";
/// The header a session's state-changing request carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Failed logins (or unknown tokens) from one client within
/// [`FAILURE_WINDOW`] before it is turned away until the window ends.
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// The served vaults a token is valid in, with its grant in each.
pub type Grants = Vec<(Arc<Served>, AccessToken)>;

pub struct Session {
    pub token: String,
    pub csrf: String,
    pub expires: Instant,
}

/// Portal sessions one token may hold at once: a new login beyond it ends
/// that token's oldest session, so logging in again and again cannot
/// grow the table (47 000 logins with one token slowed every login 4x).
pub const MAX_SESSIONS_PER_TOKEN: usize = 16;

/// The portal's sessions, by id and by token.
#[derive(Default)]
pub struct Sessions {
    by_id: std::collections::HashMap<String, Session>,
    /// Each token's session ids, oldest first.
    by_token: std::collections::HashMap<String, std::collections::VecDeque<String>>,
    /// Sessions opened since expired ones were last swept out.
    since_sweep: usize,
}

impl Sessions {
    fn open(&mut self, id: String, session: Session) {
        // expired sessions are swept out now and then, not at every login
        self.since_sweep += 1;
        if self.since_sweep >= 1024 {
            self.since_sweep = 0;
            let now = Instant::now();
            self.by_id.retain(|_, s| s.expires > now);
            let live = &self.by_id;
            self.by_token.retain(|_, ids| {
                ids.retain(|id| live.contains_key(id));
                !ids.is_empty()
            });
        }
        let ids = self.by_token.entry(session.token.clone()).or_default();
        ids.push_back(id.clone());
        while ids.len() > MAX_SESSIONS_PER_TOKEN {
            if let Some(oldest) = ids.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
        self.by_id.insert(id, session);
    }

    fn close(&mut self, id: &str) {
        if let Some(s) = self.by_id.remove(id)
            && let Some(ids) = self.by_token.get_mut(&s.token)
        {
            ids.retain(|i| i != id);
        }
    }

    fn get(&self, id: &str) -> Option<&Session> {
        self.by_id.get(id).filter(|s| s.expires > Instant::now())
    }
}

pub struct Failures {
    since: Instant,
    count: u32,
}

/// The token a request was let in with, and what it reached.
#[derive(Clone)]
pub struct Caller {
    /// The token as the vault of the request knows it (or, for a request
    /// of no vault, the token's most capable grant).
    pub token: AccessToken,
    /// Every served vault this token is valid in, with its grant there.
    pub grants: Grants,
    /// The vault the path names.
    pub served: Option<Arc<Served>>,
    /// The item the path names, when the token may see it.
    pub item: Option<Item>,
}

impl Caller {
    pub fn served(&self) -> ApiResult<&Arc<Served>> {
        self.served.as_ref().ok_or_else(|| ApiError::internal("a vault route without its vault"))
    }

    pub fn item(&self) -> ApiResult<&Item> {
        self.item.as_ref().ok_or_else(|| ApiError::internal("an item route without its item"))
    }
}

/// A random value for session ids and CSRF tokens.
pub fn random_hex() -> String {
    let mut seed = [0u8; 64];
    for chunk in seed.chunks_mut(16) {
        chunk.copy_from_slice(&boveda_service::RecordId::random().to_hex().as_bytes()[..16]);
    }
    blake3::hash(&seed).to_hex().to_string()
}

/// What a request says of who asks: kept apart from the request, whose
/// body cannot be shared across an await.
pub struct Asker {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    /// The client's address, for counting failures.
    pub client: String,
}

impl Asker {
    /// The same asker presenting `token` as a bearer token (a login, or a
    /// portal session's token checked again).
    pub fn with_bearer(mut self, token: &str) -> ApiResult<Asker> {
        let value =
            format!("Bearer {token}").parse().map_err(|_| ApiError::invalid(Some("token".into()), "not a token"))?;
        self.headers.insert(header::AUTHORIZATION, value);
        Ok(self)
    }

    pub fn of(req: &Request) -> Asker {
        Asker {
            method: req.method().clone(),
            path: req.uri().path().to_string(),
            headers: req.headers().clone(),
            client: req
                .extensions()
                .get::<ConnectInfo<crate::ClientAddr>>()
                .map_or("unknown".into(), |c| c.0.0.ip().to_string()),
        }
    }
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

impl App {
    /// Whether a client has failed too often; when, the seconds to wait.
    fn turned_away(&self, client: &str) -> Option<u64> {
        let failures = self.failures.lock().ok()?;
        let f = failures.get(client)?;
        let elapsed = f.since.elapsed();
        (f.count >= MAX_FAILURES && elapsed < FAILURE_WINDOW).then(|| (FAILURE_WINDOW - elapsed).as_secs().max(1))
    }

    fn failed(&self, client: &str) {
        self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut failures) = self.failures.lock() {
            if failures.len() > 100_000 {
                failures.retain(|_, f| f.since.elapsed() < FAILURE_WINDOW);
            }
            let f = failures.entry(client.to_string()).or_insert(Failures { since: Instant::now(), count: 0 });
            if f.since.elapsed() >= FAILURE_WINDOW {
                *f = Failures { since: Instant::now(), count: 0 };
            }
            f.count += 1;
        }
    }

    /// Starts a portal session for a token; its id and CSRF token.
    pub fn open_session(&self, token: String) -> (String, String) {
        let (id, csrf) = (random_hex(), random_hex());
        if let Ok(mut sessions) = self.sessions.lock() {
            let expires = Instant::now() + self.config.session_life;
            sessions.open(id.clone(), Session { token, csrf: csrf.clone(), expires });
        }
        (id, csrf)
    }

    pub fn close_session(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE)
            && let Ok(mut sessions) = self.sessions.lock()
        {
            sessions.close(id);
        }
    }

    /// The session a request's cookie names: its token and CSRF token.
    pub fn session(&self, headers: &HeaderMap) -> Option<(String, String)> {
        let id = cookie(headers, SESSION_COOKIE)?;
        let sessions = self.sessions.lock().ok()?;
        let s = sessions.get(id)?;
        Some((s.token.clone(), s.csrf.clone()))
    }

    /// The cookie that opens (or, with an empty id, ends) a session.
    pub fn session_cookie(&self, id: &str) -> String {
        let secure = if self.config.secure_cookies { "; Secure" } else { "" };
        let age = if id.is_empty() { 0 } else { self.config.session_life.as_secs() };
        format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={age}{secure}")
    }

    /// Every served vault a token is valid in. Blocking.
    pub(crate) fn grants(&self, presented: &str) -> Result<Grants, TokenRefusal> {
        let now = self.config.jobs.clock.now();
        let mut refusal = TokenRefusal::Unknown;
        for fresh in [false, true] {
            let mut grants = Vec::new();
            for served in self.served() {
                let Ok(set) = served.tokens(fresh) else { continue };
                match set.check(presented, now) {
                    Ok(t) => grants.push((served.clone(), t.clone())),
                    Err(r) if set.names(presented) || r == TokenRefusal::Malformed => refusal = r,
                    Err(_) => {}
                }
            }
            // a token created a moment ago by another process: read again
            if !grants.is_empty() || refusal != TokenRefusal::Unknown {
                return if grants.is_empty() { Err(refusal) } else { Ok(grants) };
            }
        }
        Err(refusal)
    }

    /// [`App::grants`] from the token sets as cached, without waiting for
    /// the store; `None` when that cannot say (a set not read yet, or a
    /// token none of them knows, which may be new).
    fn cached_grants(&self, presented: &str) -> Option<Result<Grants, TokenRefusal>> {
        let now = self.config.jobs.clock.now();
        let mut refusal = TokenRefusal::Unknown;
        let mut grants = Vec::new();
        for served in self.served() {
            let set = served.cached_tokens()?;
            match set.check(presented, now) {
                Ok(t) => grants.push((served.clone(), t.clone())),
                Err(r) if set.names(presented) || r == TokenRefusal::Malformed => refusal = r,
                Err(_) => {}
            }
        }
        match (grants.is_empty(), refusal) {
            (false, _) => Some(Ok(grants)),
            (true, TokenRefusal::Unknown) => None,
            (true, r) => Some(Err(r)),
        }
    }

    /// Checks the token a request presents; the grants and, for a session,
    /// its CSRF token.
    pub(crate) async fn authenticate(self: &Arc<Self>, req: &Asker) -> ApiResult<(String, Grants)> {
        let client = req.client.clone();
        if let Some(wait) = self.turned_away(&client) {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("too many failed logins from this client; try again in {wait} s"),
            );
            e.retry_after = Some(u16::try_from(wait.max(1)).unwrap_or(u16::MAX));
            return Err(e);
        }
        let headers = &req.headers;
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or("").trim().to_string());
        let presented = match bearer {
            Some(t) => t,
            None => match self.session(headers) {
                Some((token, csrf)) => {
                    let safe = matches!(req.method, Method::GET | Method::HEAD | Method::OPTIONS);
                    let sent = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
                    if !safe && sent != Some(csrf.as_str()) {
                        self.counters.denied.fetch_add(1, Ordering::Relaxed);
                        eprintln!("refused: {} {} from {client}: no valid CSRF token", req.method, req.path);
                        return Err(ApiError::new(
                            StatusCode::FORBIDDEN,
                            "csrf",
                            format!("a request of a portal session must carry the header {CSRF_HEADER}"),
                        ));
                    }
                    token
                }
                None if cookie(headers, SESSION_COOKIE).is_some() => {
                    self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                    return Err(ApiError::unauthorized("the session has ended: log in again"));
                }
                None => {
                    self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                    return Err(ApiError::unauthorized(
                        "no token given: send Authorization: Bearer <token>, or log in to the portal",
                    ));
                }
            },
        };
        let checked = match self.cached_grants(&presented) {
            Some(checked) => Ok(checked),
            None => {
                let app = self.clone();
                let token = presented.clone();
                tokio::task::spawn_blocking(move || app.grants(&token)).await
            }
        };
        match checked {
            Ok(Ok(grants)) => Ok((presented, grants)),
            Ok(Err(refusal)) => {
                if matches!(refusal, TokenRefusal::Unknown | TokenRefusal::Malformed) {
                    self.failed(&client);
                } else {
                    self.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                }
                eprintln!("refused: {} {} from {client}: {}", req.method, req.path, refusal.as_str());
                Err(ApiError::unauthorized(refusal.as_str()))
            }
            Err(e) => Err(ApiError::internal(format!("token check ended abnormally: {e}"))),
        }
    }
}

/// The most capable grant: the highest role, unscoped before scoped.
fn best(grants: &[(Arc<Served>, AccessToken)]) -> Option<&AccessToken> {
    grants.iter().map(|(_, t)| t).max_by_key(|t| (t.role, !t.is_scoped()))
}

/// A refusal that must look exactly like absence (an item, vault or job
/// outside a token's reach answers as one that does not exist, so a token
/// cannot enumerate names by trying them): logged and counted as denied,
/// answered as `missing`.
pub(crate) fn hidden(app: &App, req: &Asker, token: &AccessToken, why: String, missing: ApiError) -> ApiError {
    app.counters.denied.fetch_add(1, Ordering::Relaxed);
    eprintln!("denied: {} {} with token {} ({}): {why}", req.method, req.path, token.id.short(), token.role.as_str());
    missing
}

fn denied(app: &App, req: &Asker, token: &AccessToken, why: String) -> ApiError {
    app.counters.denied.fetch_add(1, Ordering::Relaxed);
    eprintln!("denied: {} {} with token {} ({}): {why}", req.method, req.path, token.id.short(), token.role.as_str());
    ApiError::forbidden(why)
}

/// Lets a request through to a route when its token may use it.
pub(crate) async fn authorize(
    State((app, spec)): State<(AppState, RouteSpec)>,
    params: RawPathParams,
    mut req: Request,
    next: Next,
) -> Response {
    let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    match check(&app, &spec, &params, &Asker::of(&req)).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn check(app: &AppState, spec: &RouteSpec, params: &[(String, String)], req: &Asker) -> ApiResult<Caller> {
    let (_, grants) = app.authenticate(req).await?;
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let (served, token) = match param("vault") {
        Some(name) => {
            let served =
                app.find(&name).ok_or_else(|| ApiError::not_found(format!("no vault {name:?} is served here")))?;
            let Some((_, token)) = grants.iter().find(|(s, _)| Arc::ptr_eq(s, &served)) else {
                let any = grants[0].1.clone();
                let missing = ApiError::not_found(format!("no vault {name:?} is served here"));
                return Err(hidden(
                    app,
                    req,
                    &any,
                    format!("this token has no access to vault {}", served.name()),
                    missing,
                ));
            };
            (Some(served), token.clone())
        }
        None => match best(&grants) {
            Some(t) => (None, t.clone()),
            None => return Err(ApiError::unauthorized(TokenRefusal::Unknown.as_str())),
        },
    };
    if !token.role.allows(spec.permission) {
        let needed = Role::ALL.into_iter().find(|r| r.allows(spec.permission)).unwrap_or(Role::Contributor);
        return Err(denied(
            app,
            req,
            &token,
            format!("the role {} may not do this; it needs {}", token.role.as_str(), needed.as_str()),
        ));
    }
    let mut item = None;
    match spec.scope {
        Scope::Vault if token.is_scoped() => {
            return Err(denied(app, req, &token, "a token scoped to items may not do this".into()));
        }
        Scope::Item => {
            let (Some(served), Some(name)) = (&served, param("item")) else {
                return Err(ApiError::internal("an item route without its vault or item"));
            };
            let vault = served.vault.clone();
            let asked = name.clone();
            let found = blocking(move || find_item(&vault, &name)).await?;
            if !token.sees_item(&found.id) {
                let missing = ApiError::from(boveda_service::ServiceError::refused(
                    boveda_service::ServiceErrorKind::NotFound,
                    format!("no item named {asked:?} in this vault"),
                    boveda_service::Remedy::ListItems,
                ));
                return Err(hidden(app, req, &token, format!("this token may not see item {}", found.name), missing));
            }
            item = Some(found);
        }
        _ => {}
    }
    Ok(Caller { token, grants, served, item })
}

/// What every request runs under: counted, and timed out when it (its
/// body included) takes longer than the server allows.
pub(crate) async fn limits(State(app): State<AppState>, req: Request, next: Next) -> Response {
    app.counters.requests.fetch_add(1, Ordering::Relaxed);
    // a path whose escapes decode to bytes that are not UTF-8 (or to a NUL)
    // is answered here, in JSON like every other error
    if let Some(why) = bad_path(req.uri().path()) {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", why);
        e.field = Some("path".into());
        return e.into_response();
    }
    match tokio::time::timeout(app.config.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request took longer than {} s", app.config.request_timeout.as_secs()),
        )
        .into_response(),
    }
}

/// Why a request path is refused before routing: percent-escapes that
/// decode to invalid UTF-8 or to a NUL byte.
fn bad_path(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    if out.contains(&0) {
        return Some("the request path holds a NUL byte".into());
    }
    std::str::from_utf8(&out).err().map(|_| "the request path is not valid UTF-8 once its %-escapes are decoded".into())
}

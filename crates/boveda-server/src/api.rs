//! The REST API: the route table (method, path, the permission and scope
//! it needs) and one handler per route, each one call to the service.
//!
//! The table is data: the router, the OpenAPI document and the role
//! matrix test are all made from it, so a route cannot be added without
//! saying who may use it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Extension, Json, Router};
use boveda_service as svc;
use boveda_service::{JobEnv, Permission};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::{Caller, authorize};
use crate::error::{ApiError, ApiResult};
use crate::routes::{PUBLIC_ROUTES, RouteSpec, Scope};
use crate::{AppState, Served, blocking};

type Route = (RouteSpec, MethodRouter<AppState>);

fn route<H, T>(
    method: Method,
    path: &'static str,
    permission: Permission,
    scope: Scope,
    summary: &'static str,
    body: Option<&'static str>,
    handler: H,
) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    (RouteSpec { method, path, permission, scope, summary, body }, on(filter, handler))
}

const V: &str = "/api/v1/vaults/{vault}";

fn table() -> Vec<Route> {
    use Permission::{Manage, Operate, Read};
    use Scope::{Any, Item, Vault};
    let (get, post, patch, delete) = (Method::GET, Method::POST, Method::PATCH, Method::DELETE);
    vec![
        route(get.clone(), "/api/v1/vaults", Read, Any, "The vaults this token may use", None, list_vaults),
        route(post.clone(), "/api/v1/vaults", Manage, Vault, "Create a vault", Some("NewVault"), create_vault),
        route(get.clone(), V, Read, Vault, "A vault's summary", None, show_vault),
        route(get.clone(), "/api/v1/vaults/{vault}/items", Read, Any, "Items with protection state", None, items),
        route(post.clone(), "/api/v1/vaults/{vault}/items", Manage, Vault, "Add an item", Some("NewItem"), add_item),
        route(get.clone(), "/api/v1/vaults/{vault}/discover", Manage, Vault, "VMs defined in a folder", None, discover),
        route(get.clone(), "/api/v1/vaults/{vault}/items/{item}", Read, Item, "One item", None, item),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/items/{item}/protection",
            Manage,
            Item,
            "Protect an item with a policy",
            Some("PolicyChoice"),
            enable,
        ),
        route(
            delete.clone(),
            "/api/v1/vaults/{vault}/items/{item}/protection",
            Manage,
            Item,
            "Stop protecting an item (?delete_data=true soft-deletes its points)",
            None,
            disable,
        ),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/items/{item}/protection/resume",
            Manage,
            Item,
            "Resume protection",
            Some("PolicyChoice"),
            resume,
        ),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/items/{item}/protection/undelete",
            Manage,
            Item,
            "Undelete soft-deleted backup data",
            None,
            undelete,
        ),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/items/{item}/backup",
            Operate,
            Item,
            "Back up now (a job)",
            Some("BackupNow"),
            backup_now,
        ),
        route(get.clone(), "/api/v1/vaults/{vault}/items/{item}/points", Read, Item, "Recovery points", None, points),
        route(
            get.clone(),
            "/api/v1/vaults/{vault}/items/{item}/points/{point}",
            Read,
            Item,
            "One recovery point",
            None,
            point,
        ),
        route(
            get.clone(),
            "/api/v1/vaults/{vault}/items/{item}/points/{point}/browse",
            Read,
            Item,
            "Files inside a point (?path=)",
            None,
            browse,
        ),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/items/{item}/restore",
            Operate,
            Item,
            "Restore (a job)",
            Some("RestoreTarget"),
            restore,
        ),
        route(get.clone(), "/api/v1/vaults/{vault}/policies", Read, Any, "Policies", None, policies),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/policies",
            Manage,
            Vault,
            "Create a policy",
            Some("PolicyPatch"),
            create_policy,
        ),
        route(get.clone(), "/api/v1/vaults/{vault}/policies/{policy}", Read, Any, "One policy", None, policy),
        route(
            patch,
            "/api/v1/vaults/{vault}/policies/{policy}",
            Manage,
            Vault,
            "Change a policy (?dry_run=true plans only)",
            Some("PolicyPatch"),
            update_policy,
        ),
        route(
            delete.clone(),
            "/api/v1/vaults/{vault}/policies/{policy}",
            Manage,
            Vault,
            "Delete an unused policy",
            None,
            delete_policy,
        ),
        route(
            get.clone(),
            "/api/v1/vaults/{vault}/jobs",
            Read,
            Any,
            "Jobs (?state=&operation=&item=&since=)",
            None,
            jobs,
        ),
        route(get.clone(), "/api/v1/vaults/{vault}/jobs/{job}", Read, Any, "One job", None, job),
        route(post.clone(), "/api/v1/vaults/{vault}/jobs/{job}/stop", Operate, Any, "Stop a running job", None, stop),
        route(
            get.clone(),
            "/api/v1/vaults/{vault}/jobs/{job}/events",
            Read,
            Any,
            "A job's progress as Server-Sent Events",
            None,
            job_events,
        ),
        route(get.clone(), "/api/v1/vaults/{vault}/alerts", Read, Any, "Alerts", None, alerts),
        route(get.clone(), "/api/v1/vaults/{vault}/usage", Read, Vault, "Stored bytes and estimated cost", None, usage),
        route(get.clone(), "/api/v1/vaults/{vault}/imports", Read, Vault, "Offline seeding import jobs", None, imports),
        route(get.clone(), "/api/v1/vaults/{vault}/tokens", Manage, Vault, "Access tokens", None, tokens),
        route(
            post,
            "/api/v1/vaults/{vault}/tokens",
            Manage,
            Vault,
            "Create an access token (shown once)",
            Some("NewToken"),
            create_token,
        ),
        route(delete, "/api/v1/vaults/{vault}/tokens/{token}", Manage, Vault, "Revoke a token", None, revoke_token),
        route(get, "/api/v1/vaults/{vault}/dashboard", Read, Vault, "The vault's dashboard", None, dashboard),
    ]
}

/// Every route that needs a token, as data.
pub fn route_specs() -> Vec<RouteSpec> {
    table().into_iter().map(|(spec, _)| spec).collect()
}

pub fn router(app: AppState) -> Router<AppState> {
    let mut paths: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for (spec, method_router) in table() {
        let guarded =
            method_router.route_layer(axum::middleware::from_fn_with_state((app.clone(), spec.clone()), authorize));
        let merged = match paths.remove(spec.path) {
            Some(existing) => existing.merge(guarded),
            None => guarded,
        };
        paths.insert(spec.path, merged);
    }
    let mut router = Router::new()
        .route("/api/v1/login", axum::routing::post(login))
        .route("/api/v1/logout", axum::routing::post(logout))
        .route("/api/v1/session", axum::routing::get(session))
        .route("/api/v1/openapi.json", axum::routing::get(openapi));
    for (path, method_router) in paths {
        router = router.route(path, method_router.fallback(method_not_allowed));
    }
    router.layer(axum::extract::DefaultBodyLimit::max(app.config.body_limit))
}

pub(crate) async fn unknown_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document(&route_specs(), &PUBLIC_ROUTES))
}

/// A JSON body: refused with 413 when larger than the server allows, and
/// with 400 naming the field at fault when it does not fit the request.
pub struct Body<T>(pub T);

/// `application/json`, in any case, with parameters or none: exactly
/// that type (`application/jsonfoo` is not JSON).
pub(crate) fn is_json_media_type(value: &str) -> bool {
    value.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json =
            req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(is_json_media_type);
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be JSON (Content-Type: application/json)",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large")
            } else {
                ApiError::invalid(None, format!("the request body could not be read: {e}"))
            }
        })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de).map(Body).map_err(|e| {
            let path = e.path().to_string();
            let field = (path != ".").then_some(path);
            ApiError::invalid(field, e.into_inner().to_string())
        })
    }
}

/// A query string: refused with 400 naming what does not parse.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> axum::extract::FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Q(q))
            .map_err(|e| ApiError::invalid(None, format!("the query string is at fault: {}", e.body_text())))
    }
}

/// The environment of a job the request runs in its own thread.
fn with_env<T>(app: &AppState, f: impl FnOnce(&JobEnv<'_>) -> T) -> T {
    let jobs = &app.config.jobs;
    f(&JobEnv::new(jobs.clock.as_ref(), jobs.heartbeat, jobs.hostname.clone()))
}

fn now(app: &AppState) -> jiff::Timestamp {
    app.config.jobs.clock.now()
}

/// A vault as the vault list shows it to a token.
#[derive(Serialize)]
struct VaultAccess {
    name: String,
    role: svc::Role,
    /// The items the token is scoped to (none: all).
    items: Vec<String>,
}

async fn list_vaults(Extension(caller): Extension<Caller>) -> Json<Vec<VaultAccess>> {
    Json(access(&caller.grants))
}

async fn create_vault(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(mut req): Body<svc::NewVault>,
) -> ApiResult<(StatusCode, Json<svc::VaultSummary>)> {
    // the token gets the same access to the new vault, from a vault where
    // it may manage everything
    let Some((from, _)) =
        caller.grants.iter().find(|(_, t)| t.role == svc::Role::Contributor && !t.is_scoped()).cloned()
    else {
        return Err(ApiError::forbidden("creating a vault needs an unscoped Contributor token"));
    };
    req.kdf = app.config.kdf;
    let pass = app.config.passphrase.clone();
    let token = caller.token.id;
    let (vault, summary) = blocking(move || {
        let vault = svc::create_vault(&req, &pass)?;
        svc::copy_token(&from.vault, &vault, &token)?;
        let summary = svc::summarize(&vault)?;
        Ok((vault, summary))
    })
    .await?;
    app.add(Arc::new(vault));
    Ok((StatusCode::CREATED, Json(summary)))
}

async fn show_vault(Extension(caller): Extension<Caller>) -> ApiResult<Json<svc::VaultSummary>> {
    let vault = caller.served()?.vault.clone();
    Ok(Json(blocking(move || svc::summarize(&vault)).await?))
}

async fn dashboard(Extension(caller): Extension<Caller>) -> ApiResult<Json<svc::Dashboard>> {
    Ok(Json(caller.served()?.dashboard().await?))
}

async fn items(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Response> {
    let all = caller.served()?.items(now(&app)).await?;
    if !caller.token.is_scoped() {
        return Ok(json_bytes(all.json.clone()));
    }
    let mine: Vec<&svc::ItemOverview> = all.value.iter().filter(|o| caller.token.sees_item(&o.item.id)).collect();
    Ok(Json(mine).into_response())
}

/// A listing already serialized.
fn json_bytes(body: axum::body::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn add_item(
    State(_): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<svc::NewItem>,
) -> ApiResult<(StatusCode, Json<svc::Item>)> {
    let served = caller.served()?.clone();
    let vault = served.vault.clone();
    let item = blocking(move || svc::add_item(&vault, &req)).await?;
    served.changed();
    Ok((StatusCode::CREATED, Json(item)))
}

#[derive(Deserialize)]
struct DirQuery {
    dir: std::path::PathBuf,
}

async fn discover(Extension(caller): Extension<Caller>, Q(q): Q<DirQuery>) -> ApiResult<Json<Vec<svc::DiscoveredVm>>> {
    let vault = caller.served()?.vault.clone();
    Ok(Json(blocking(move || svc::discover_vms(&vault, &q.dir)).await?))
}

async fn item(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Json<svc::ItemOverview>> {
    let vault = caller.served()?.vault.clone();
    let id = caller.item()?.id;
    let now = now(&app);
    let all = blocking(move || svc::item_overview(&vault, now)).await?;
    all.into_iter().find(|o| o.item.id == id).map(Json).ok_or_else(|| ApiError::not_found("the item was removed"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChoice {
    policy: String,
}

async fn enable(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<PolicyChoice>,
) -> ApiResult<Json<svc::Item>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let done = blocking(move || with_env(&app, |env| svc::enable_protection(&vault, env, &item, &req.policy))).await?;
    caller.served()?.changed();
    Ok(Json(done))
}

#[derive(Deserialize)]
struct DisableQuery {
    #[serde(default)]
    delete_data: bool,
}

async fn disable(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Q(q): Q<DisableQuery>,
) -> ApiResult<Json<svc::Item>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let done =
        blocking(move || with_env(&app, |env| svc::disable_protection(&vault, env, &item, q.delete_data))).await?;
    caller.served()?.changed();
    Ok(Json(done))
}

async fn resume(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<PolicyChoice>,
) -> ApiResult<Json<svc::Item>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let done = blocking(move || with_env(&app, |env| svc::resume_protection(&vault, env, &item, &req.policy))).await?;
    caller.served()?.changed();
    Ok(Json(done))
}

async fn undelete(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Json<svc::Item>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let done = blocking(move || with_env(&app, |env| svc::undelete_protection(&vault, env, &item))).await?;
    caller.served()?.changed();
    Ok(Json(done))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BackupNow {
    /// A date (`2027-01-31`, the end of that day) or a time; default: 30
    /// days from now.
    #[serde(default)]
    retain_until: Option<String>,
}

async fn backup_now(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<BackupNow>,
) -> ApiResult<(StatusCode, Json<svc::Job>)> {
    let served = caller.served()?.clone();
    let (vault, item) = (served.vault.clone(), caller.item()?.clone());
    let env = app.config.jobs.clone();
    let job = blocking(move || svc::start_backup(vault, &env, item, req.retain_until.as_deref())).await?;
    served.changed();
    Ok((StatusCode::ACCEPTED, Json(job)))
}

#[derive(Serialize)]
struct Points {
    points: Vec<svc::PointSummary>,
    /// Why the list may be incomplete, if it may.
    note: Option<String>,
}

async fn points(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Json<Points>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let now = now(&app);
    let (points, note) = blocking(move || svc::list_points(&vault, &item, now, false)).await?;
    Ok(Json(Points { points, note }))
}

async fn point(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Json<svc::PointSummary>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let selector = params.get("point").cloned().unwrap_or_default();
    let now = now(&app);
    Ok(Json(blocking(move || svc::show_point(&vault, &item, &selector, now)).await?))
}

#[derive(Deserialize)]
struct PathQuery {
    #[serde(default)]
    path: Option<String>,
}

async fn browse(
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
    Q(q): Q<PathQuery>,
) -> ApiResult<Json<Vec<svc::PointEntry>>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let selector = params.get("point").cloned().unwrap_or_default();
    let path = q.path.unwrap_or_else(|| "/".into());
    let entries = blocking(move || {
        let point = svc::find_point(&vault, &item, &selector)?;
        svc::browse_point(&vault, &item, &point, &path)
    })
    .await?;
    Ok(Json(entries))
}

async fn restore(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<svc::RestoreTarget>,
) -> ApiResult<(StatusCode, Json<svc::Job>)> {
    let served = caller.served()?.clone();
    let (vault, item) = (served.vault.clone(), caller.item()?.clone());
    let env = app.config.jobs.clone();
    let roots = app.config.restore_roots.clone();
    let job = blocking(move || svc::start_restore(vault, &env, item, req, &roots)).await?;
    served.changed();
    Ok((StatusCode::ACCEPTED, Json(job)))
}

async fn policies(Extension(caller): Extension<Caller>) -> ApiResult<Json<Vec<svc::Policy>>> {
    let vault = caller.served()?.vault.clone();
    Ok(Json(blocking(move || svc::list_policies(&vault)).await?))
}

async fn create_policy(
    Extension(caller): Extension<Caller>,
    Body(req): Body<svc::PolicyPatch>,
) -> ApiResult<(StatusCode, Json<svc::Policy>)> {
    let vault = caller.served()?.vault.clone();
    let policy = blocking(move || svc::create_policy_from(&vault, req)).await?;
    caller.served()?.changed();
    Ok((StatusCode::CREATED, Json(policy)))
}

fn param(params: &BTreeMap<String, String>, name: &str) -> String {
    params.get(name).cloned().unwrap_or_default()
}

async fn policy(
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Json<svc::Policy>> {
    let vault = caller.served()?.vault.clone();
    let name = param(&params, "policy");
    Ok(Json(blocking(move || svc::find_policy(&vault, &name)).await?))
}

#[derive(Deserialize)]
struct DryRun {
    #[serde(default)]
    dry_run: bool,
}

async fn update_policy(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
    Q(q): Q<DryRun>,
    Body(req): Body<svc::PolicyPatch>,
) -> ApiResult<Json<svc::PolicyUpdate>> {
    let vault = caller.served()?.vault.clone();
    let name = param(&params, "policy");
    let now = now(&app);
    let update = blocking(move || svc::update_policy(&vault, &name, req, now, !q.dry_run)).await?;
    caller.served()?.changed();
    Ok(Json(update))
}

async fn delete_policy(
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Json<svc::Policy>> {
    let vault = caller.served()?.vault.clone();
    let name = param(&params, "policy");
    let deleted = blocking(move || svc::delete_policy(&vault, &name)).await?;
    caller.served()?.changed();
    Ok(Json(deleted))
}

#[derive(Deserialize, Default)]
struct JobQuery {
    state: Option<String>,
    operation: Option<String>,
    item: Option<String>,
    since: Option<String>,
}

/// Whether a token may see a job: scoped tokens, only their items' jobs.
fn sees_job(token: &svc::AccessToken, job: &svc::Job) -> bool {
    !token.is_scoped() || job.item_id.is_some_and(|id| token.sees_item(&id))
}

async fn jobs(Extension(caller): Extension<Caller>, Q(q): Q<JobQuery>) -> ApiResult<Response> {
    let filter =
        svc::JobFilter::parse(q.state.as_deref(), q.operation.as_deref(), q.item.as_deref(), q.since.as_deref())?;
    let all = caller.served()?.jobs_entry().await?;
    let unfiltered = q.state.is_none() && q.operation.is_none() && q.item.is_none() && q.since.is_none();
    if unfiltered && !caller.token.is_scoped() {
        return Ok(json_bytes(all.json.clone()));
    }
    let shown: Vec<&svc::Job> = all.value.iter().filter(|j| filter.matches(j) && sees_job(&caller.token, j)).collect();
    Ok(Json(shown).into_response())
}

async fn visible_job(caller: &Caller, served: &Served, id: &str) -> ApiResult<svc::Job> {
    let vault = served.vault.clone();
    let id = id.to_string();
    let asked = id.clone();
    let job = blocking(move || svc::find_job(&vault, &id)).await?;
    if !sees_job(&caller.token, &job) {
        // as absent as a job that does not exist
        return Err(ApiError::from(svc::ServiceError::refused(
            svc::ServiceErrorKind::NotFound,
            format!("no job with id {asked:?} in this vault"),
            svc::Remedy::ListJobs,
        )));
    }
    Ok(job)
}

async fn job(
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Json<svc::Job>> {
    Ok(Json(visible_job(&caller, caller.served()?, &param(&params, "job")).await?))
}

async fn stop(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Json<svc::Job>> {
    let served = caller.served()?.clone();
    let job = visible_job(&caller, &served, &param(&params, "job")).await?;
    let vault = served.vault.clone();
    let host = app.config.jobs.hostname.clone();
    let stopped = blocking(move || svc::stop_job(&vault, &job.id.to_hex(), &host)).await?;
    served.changed();
    Ok(Json(stopped))
}

/// Ends an event stream's counts (in all, and its token's) when the
/// stream is dropped.
struct StreamSlot(AppState, svc::RecordId);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.counters.streams.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut by) = self.0.streams_by_token.lock()
            && let Some(n) = by.get_mut(&self.1)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by.remove(&self.1);
            }
        }
    }
}

/// A job's progress as Server-Sent Events: `progress` whenever the job's
/// record changes, then `end` with the final job. The stream ends with
/// the job, or after the server's stream limit; streams at once are
/// limited, and each polls the vault's shared job list, so a client that
/// never disconnects holds one small task and no thread.
async fn job_events(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    let served = caller.served()?.clone();
    let first = visible_job(&caller, &served, &param(&params, "job")).await?;
    let token = caller.token.id;
    {
        let Ok(mut by) = app.streams_by_token.lock() else {
            return Err(ApiError::internal("the stream table is unusable"));
        };
        let mine = by.entry(token).or_default();
        if *mine >= app.config.max_streams_per_token {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!(
                    "this token holds {} event streams, as many as one token may; close one first",
                    app.config.max_streams_per_token
                ),
            );
            e.retry_after = Some(5);
            return Err(e);
        }
        *mine += 1;
    }
    let slot = StreamSlot(app.clone(), token);
    if app.counters.streams.fetch_add(1, Ordering::Relaxed) >= app.config.max_streams {
        drop(slot); // gives both counts back (the total was counted once)
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "too many event streams open"));
    }
    let deadline = Instant::now() + app.config.stream_limit;
    let state = (Some(first), None::<svc::Job>, served, slot, false);
    let stream = futures::stream::unfold(state, move |(next, last, served, slot, ended)| async move {
        let over = |slot: &StreamSlot| Instant::now() >= deadline || slot.0.closing.load(Ordering::Relaxed);
        if ended || over(&slot) {
            return None;
        }
        let mut job = next;
        while job.is_none() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if over(&slot) {
                return None;
            }
            let id = last.as_ref().map(|j| j.id)?;
            let all = served.jobs().await.ok()?;
            let current = all.iter().find(|j| j.id == id).cloned()?;
            if last.as_ref() != Some(&current) {
                job = Some(current);
            }
        }
        let job = job?;
        let done = !job.state.is_running();
        let event = Event::default().event(if done { "end" } else { "progress" }).json_data(&job).ok()?;
        Some((Ok::<Event, Infallible>(event), (None, Some(job), served, slot, done)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

async fn alerts(Extension(caller): Extension<Caller>) -> ApiResult<Json<Vec<svc::Alert>>> {
    let vault = caller.served()?.vault.clone();
    let all = blocking(move || svc::list_alerts(&vault)).await?;
    let token = &caller.token;
    let names: Vec<&str> = token.items.iter().map(|i| i.name.as_str()).collect();
    let visible = |a: &svc::Alert| {
        !token.is_scoped() || a.item.as_deref().is_some_and(|n| names.iter().any(|m| m.eq_ignore_ascii_case(n)))
    };
    Ok(Json(all.into_iter().filter(visible).collect()))
}

async fn usage(Extension(caller): Extension<Caller>) -> ApiResult<Response> {
    Ok(json_bytes(caller.served()?.usage().await?.json.clone()))
}

async fn imports(Extension(caller): Extension<Caller>) -> ApiResult<Json<Vec<svc::ImportJob>>> {
    let vault = caller.served()?.vault.clone();
    Ok(Json(blocking(move || svc::list_import_jobs(&**vault.store())).await?))
}

async fn tokens(Extension(caller): Extension<Caller>) -> ApiResult<Json<Vec<svc::AccessToken>>> {
    let vault = caller.served()?.vault.clone();
    Ok(Json(blocking(move || svc::list_tokens(&vault)).await?))
}

/// A token just created: the only time its secret is shown.
#[derive(Serialize)]
struct CreatedToken {
    token: svc::AccessToken,
    secret: String,
}

async fn create_token(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<svc::NewToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let served = caller.served()?.clone();
    let vault = served.vault.clone();
    let (now, host) = (now(&app), app.config.jobs.hostname.clone());
    let (token, secret) = blocking(move || svc::create_token(&vault, &req, now, &host)).await?;
    served.changed();
    Ok((StatusCode::CREATED, Json(CreatedToken { token, secret })))
}

async fn revoke_token(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Json<svc::AccessToken>> {
    let served = caller.served()?.clone();
    let vault = served.vault.clone();
    let (id, now) = (param(&params, "token"), now(&app));
    let revoked = blocking(move || svc::revoke_token(&vault, &id, now)).await?;
    served.changed();
    Ok(Json(revoked))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
}

/// A portal session: the cookie carries its id, the CSRF token goes in
/// the header of every state-changing request.
#[derive(Serialize)]
struct SessionInfo {
    csrf: String,
    vaults: Vec<VaultAccess>,
}

async fn login(State(app): State<AppState>, req: Request) -> Response {
    let result = async {
        let (parts, body) = req.into_parts();
        let Body(login) = Body::<Login>::from_request(Request::from_parts(parts.clone(), body), &()).await?;
        let probe = crate::auth::Asker::of(&Request::from_parts(parts, axum::body::Body::empty()));
        let (token, grants) = app.authenticate(&probe.with_bearer(&login.token)?).await?;
        let (id, csrf) = app.open_session(token);
        Ok::<_, ApiError>((id, SessionInfo { csrf, vaults: access(&grants) }))
    }
    .await;
    match result {
        Ok((id, info)) => ([(header::SET_COOKIE, app.session_cookie(&id))], Json(info)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The portal session the cookie names: its CSRF token and vaults, so a
/// reloaded page goes on without logging in again.
async fn session(State(app): State<AppState>, req: Request) -> ApiResult<Json<SessionInfo>> {
    let asker = crate::auth::Asker::of(&req);
    let Some((token, csrf)) = app.session(&asker.headers) else {
        return Err(ApiError::unauthorized("no portal session: log in"));
    };
    let (_, grants) = app.authenticate(&asker.with_bearer(&token)?).await?;
    Ok(Json(SessionInfo { csrf, vaults: access(&grants) }))
}

fn access(grants: &[(Arc<Served>, svc::AccessToken)]) -> Vec<VaultAccess> {
    grants
        .iter()
        .map(|(s, t)| VaultAccess {
            name: s.name(),
            role: t.role,
            items: t.items.iter().map(|i| i.name.clone()).collect(),
        })
        .collect()
}

async fn logout(State(app): State<AppState>, headers: HeaderMap) -> Response {
    app.close_session(&headers);
    ([(header::SET_COOKIE, app.session_cookie(""))], StatusCode::NO_CONTENT).into_response()
}

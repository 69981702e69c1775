//! Handlers of items: listing, adding, discovering VMs, protection and
//! backing up now.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use boveda_service as svc;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::{AppState, blocking};

use super::extract::{Body, Q, json_bytes, now, with_env};

pub(super) async fn items(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Response> {
    let all = caller.served()?.items(now(&app)).await?;
    if !caller.token.is_scoped() {
        return Ok(json_bytes(all.json.clone()));
    }
    let mine: Vec<&svc::ItemOverview> = all.value.iter().filter(|o| caller.token.sees_item(&o.item.id)).collect();
    Ok(Json(mine).into_response())
}

#[derive(Deserialize, Default)]
pub(super) struct DryRun {
    #[serde(default)]
    dry_run: bool,
}

/// Adds an item; with `?dry_run=true` only checks it (name free, paths
/// absolute and, on this server, existing) and answers 200 `{"ok": true}`.
pub(super) async fn add_item(
    State(_): State<AppState>,
    Extension(caller): Extension<Caller>,
    Q(q): Q<DryRun>,
    Body(req): Body<svc::NewItem>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let served = caller.served()?.clone();
    let vault = served.vault.clone();
    if q.dry_run {
        blocking(move || svc::check_new_item(&vault, &req)).await?;
        return Ok(Json(serde_json::json!({ "ok": true })).into_response());
    }
    let item = blocking(move || svc::add_item(&vault, &req)).await?;
    served.changed();
    Ok((StatusCode::CREATED, Json(item)).into_response())
}

#[derive(Deserialize)]
pub(super) struct DirQuery {
    dir: std::path::PathBuf,
}

pub(super) async fn discover(
    Extension(caller): Extension<Caller>,
    Q(q): Q<DirQuery>,
) -> ApiResult<Json<Vec<svc::DiscoveredVm>>> {
    let vault = caller.served()?.vault.clone();
    Ok(Json(blocking(move || svc::discover_vms(&vault, &q.dir)).await?))
}

pub(super) async fn item(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<svc::ItemOverview>> {
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

pub(super) async fn enable(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<PolicyChoice>,
) -> ApiResult<Json<svc::Item>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let done = blocking(move || with_env(&app, |env| svc::enable_protection(&vault, env, &item, &req.policy))).await?;
    caller.served()?.changed();
    Ok(Json(done))
}

/// Changes a protected item's policy (a shorter retention: as changing
/// the policy's own).
pub(super) async fn change_policy(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<PolicyChoice>,
) -> ApiResult<Json<svc::Item>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let by = caller.token.by();
    let done = blocking(move || {
        super::extract::with_env_by(&app, by, |env| svc::change_item_policy(&vault, env, &item, &req.policy))
    })
    .await?;
    caller.served()?.changed();
    Ok(Json(done))
}

#[derive(Deserialize)]
pub(super) struct DisableQuery {
    #[serde(default)]
    delete_data: bool,
}

pub(super) async fn disable(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Q(q): Q<DisableQuery>,
) -> ApiResult<Json<svc::Item>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let by = caller.token.by();
    let done = blocking(move || {
        super::extract::with_env_by(&app, by, |env| svc::disable_protection(&vault, env, &item, q.delete_data))
    })
    .await?;
    caller.served()?.changed();
    Ok(Json(done))
}

pub(super) async fn resume(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<PolicyChoice>,
) -> ApiResult<Json<svc::Item>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let by = caller.token.by();
    let done = blocking(move || {
        super::extract::with_env_by(&app, by, |env| svc::resume_protection(&vault, env, &item, &req.policy))
    })
    .await?;
    caller.served()?.changed();
    Ok(Json(done))
}

pub(super) async fn undelete(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<svc::Item>> {
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

pub(super) async fn backup_now(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<BackupNow>,
) -> ApiResult<(StatusCode, Json<svc::Job>)> {
    let served = caller.served()?.clone();
    let (vault, item) = (served.vault.clone(), caller.item()?.clone());
    let env = app.config.jobs.clone();
    let job = if item.host.is_some() {
        // its host's agent runs it
        let work = served.host_work.clone();
        let wait = std::time::Duration::from_secs(15);
        blocking(move || svc::fleet::work::backup_now_on_host(&vault, &work, &item, req.retain_until, wait)).await?
    } else {
        blocking(move || svc::start_backup(vault, &env, item, req.retain_until.as_deref())).await?
    };
    served.changed();
    Ok((StatusCode::ACCEPTED, Json(job)))
}

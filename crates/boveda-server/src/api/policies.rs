//! Handlers of policies.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use boveda_service as svc;
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::{AppState, blocking};

use super::extract::{Body, Q, param};

pub(super) async fn policies(Extension(caller): Extension<Caller>) -> ApiResult<Json<Vec<svc::Policy>>> {
    let vault = caller.served()?.vault.clone();
    Ok(Json(blocking(move || svc::list_policies(&vault)).await?))
}

pub(super) async fn create_policy(
    Extension(caller): Extension<Caller>,
    Body(req): Body<svc::PolicyPatch>,
) -> ApiResult<(StatusCode, Json<svc::Policy>)> {
    let vault = caller.served()?.vault.clone();
    let policy = blocking(move || svc::create_policy_from(&vault, req)).await?;
    caller.served()?.changed();
    Ok((StatusCode::CREATED, Json(policy)))
}

pub(super) async fn policy(
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Json<svc::Policy>> {
    let vault = caller.served()?.vault.clone();
    let name = param(&params, "policy");
    Ok(Json(blocking(move || svc::find_policy(&vault, &name)).await?))
}

#[derive(Deserialize)]
pub(super) struct DryRun {
    #[serde(default)]
    dry_run: bool,
}

pub(super) async fn update_policy(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
    Q(q): Q<DryRun>,
    Body(req): Body<svc::PolicyPatch>,
) -> ApiResult<Json<svc::PolicyUpdate>> {
    let vault = caller.served()?.vault.clone();
    let name = param(&params, "policy");
    let by = caller.token.by();
    let clock = app.config.jobs.clock.clone();
    let update =
        blocking(move || svc::update_policy(&vault, &name, req, clock.as_ref(), (!q.dry_run).then_some(by.as_str())))
            .await?;
    caller.served()?.changed();
    Ok(Json(update))
}

pub(super) async fn delete_policy(
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Json<svc::Policy>> {
    let vault = caller.served()?.vault.clone();
    let name = param(&params, "policy");
    let deleted = blocking(move || svc::delete_policy(&vault, &name)).await?;
    caller.served()?.changed();
    Ok(Json(deleted))
}

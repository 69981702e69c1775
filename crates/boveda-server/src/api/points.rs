//! Handlers of recovery points: listing, browsing and restoring.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use boveda_service as svc;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::{AppState, blocking};

use super::extract::{Body, Q, now};

#[derive(Serialize)]
pub(super) struct Points {
    points: Vec<svc::PointSummary>,
    /// Why the list may be incomplete, if it may.
    note: Option<String>,
}

pub(super) async fn points(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Points>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let now = now(&app);
    let (points, note) = blocking(move || svc::list_points(&vault, &item, now, false)).await?;
    Ok(Json(Points { points, note }))
}

pub(super) async fn point(
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
pub(super) struct PathQuery {
    #[serde(default)]
    path: Option<String>,
}

pub(super) async fn browse(
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

pub(super) async fn restore(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<svc::RestoreTarget>,
) -> ApiResult<(StatusCode, Json<svc::Job>)> {
    let served = caller.served()?.clone();
    let (vault, item) = (served.vault.clone(), caller.item()?.clone());
    let env = app.config.jobs.clone();
    let roots = app.config.restore_roots.clone();
    let job = if item.host.is_some() {
        // onto the item's host: its agent restores, into a folder it allows
        let work = served.host_work.clone();
        let order = svc::fleet::restores::HostRestore { point: req.point, target: req.target, paths: req.paths };
        let wait = std::time::Duration::from_secs(15);
        blocking(move || svc::fleet::restores::restore_on_host(&vault, &work, &item, &order, wait)).await?
    } else {
        blocking(move || svc::start_restore(vault, &env, item, req, &roots)).await?
    };
    served.changed();
    Ok((StatusCode::ACCEPTED, Json(job)))
}

//! Handlers of access: tokens, and logging in and out of the portal.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use boveda_service as svc;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::{AppState, Served, blocking};

use super::extract::{Body, now, param};

pub(super) async fn tokens(Extension(caller): Extension<Caller>) -> ApiResult<Json<Vec<svc::AccessToken>>> {
    let vault = caller.served()?.vault.clone();
    Ok(Json(blocking(move || svc::list_tokens(&vault)).await?))
}

/// A token just created: the only time its secret is shown.
#[derive(Serialize)]
pub(super) struct CreatedToken {
    token: svc::AccessToken,
    secret: String,
}

pub(super) async fn create_token(
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

pub(super) async fn revoke_token(
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
pub(super) struct Login {
    token: String,
}

/// A portal session: the cookie carries its id, the CSRF token goes in
/// the header of every state-changing request.
#[derive(Serialize)]
pub(super) struct SessionInfo {
    csrf: String,
    vaults: Vec<VaultAccess>,
}

pub(super) async fn login(State(app): State<AppState>, req: Request) -> Response {
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
pub(super) async fn session(State(app): State<AppState>, req: Request) -> ApiResult<Json<SessionInfo>> {
    let asker = crate::auth::Asker::of(&req);
    let Some((token, csrf)) = app.session(&asker.headers) else {
        return Err(ApiError::unauthorized("no portal session: log in"));
    };
    let (_, grants) = app.authenticate(&asker.with_bearer(&token)?).await?;
    Ok(Json(SessionInfo { csrf, vaults: access(&grants) }))
}

pub(super) fn access(grants: &[(Arc<Served>, svc::AccessToken)]) -> Vec<VaultAccess> {
    grants
        .iter()
        .map(|(s, t)| VaultAccess {
            name: s.name(),
            role: t.role,
            items: t.items.iter().map(|i| i.name.clone()).collect(),
        })
        .collect()
}

pub(super) async fn logout(State(app): State<AppState>, headers: HeaderMap) -> Response {
    app.close_session(&headers);
    ([(header::SET_COOKIE, app.session_cookie(""))], StatusCode::NO_CONTENT).into_response()
}

#[derive(Serialize)]
pub(super) struct VaultAccess {
    name: String,
    role: svc::Role,
    /// The items the token is scoped to (none: all).
    items: Vec<String>,
}

//! Handlers of multi-user authorization: a vault's guard and its requests
//! (every role sees them), binding and unbinding (Contributor; unbinding
//! needs the guard's approval), and the guard's approvals and rejections
//! (SecurityAdmin only, each signed by the guard's passphrase).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::Method;
use axum::{Extension, Json};
use boveda_service::guard::{ApprovalCode, GuardView};
use boveda_service::{Permission, ServiceError};
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::routes::Scope;
use crate::{AppState, blocking};

use super::extract::{Body, param};
use super::{Route, route};

/// The guard's routes.
pub(super) fn guard_table() -> Vec<Route> {
    use Permission::{Guard, Manage, SeeGuard};
    const G: &str = "/api/v1/vaults/{vault}/guard";
    vec![
        route(Method::GET, G, SeeGuard, Scope::Vault, "The vault's guard and its requests", None, show),
        route(Method::PUT, G, Manage, Scope::Vault, "Bind the vault to a guard", Some("BindGuard"), bind),
        route(Method::DELETE, G, Manage, Scope::Vault, "Unbind the guard (needs its approval)", None, unbind),
        route(
            Method::POST,
            "/api/v1/vaults/{vault}/guard/requests/{request}/approve",
            Guard,
            Scope::Vault,
            "Submit the guard's signed approval of a request",
            Some("GuardApproval"),
            approve,
        ),
        route(
            Method::POST,
            "/api/v1/vaults/{vault}/guard/requests/{request}/reject",
            Guard,
            Scope::Vault,
            "Reject a request",
            None,
            reject,
        ),
    ]
}

async fn show(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Json<GuardView>> {
    let vault = caller.served()?.vault.clone();
    let now = super::extract::now(&app);
    Ok(Json(blocking(move || boveda_service::guard::guard_view(&vault, now)).await?))
}

#[derive(Deserialize)]
struct BindGuard {
    guard: String,
    name: String,
}

async fn bind(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<BindGuard>,
) -> ApiResult<Json<GuardView>> {
    let vault = caller.served()?.vault.clone();
    let by = caller.token.by();
    let clock = app.config.jobs.clock.clone();
    let view = blocking(move || {
        boveda_service::guard::bind_guard(&vault, &req.guard, &req.name, &by, clock.as_ref())?;
        boveda_service::guard::guard_view(&vault, clock.now())
    })
    .await?;
    caller.served()?.changed();
    Ok(Json(view))
}

async fn unbind(State(app): State<AppState>, Extension(caller): Extension<Caller>) -> ApiResult<Json<GuardView>> {
    let vault = caller.served()?.vault.clone();
    let by = caller.token.by();
    let clock = app.config.jobs.clock.clone();
    let view = blocking(move || {
        boveda_service::guard::unbind_guard(&vault, &by, clock.as_ref())?;
        boveda_service::guard::guard_view(&vault, clock.now())
    })
    .await?;
    caller.served()?.changed();
    Ok(Json(view))
}

/// Either the code `boveda guard approve` prints, or its two parts (what
/// a browser that signed it itself sends).
#[derive(Deserialize)]
struct Approve {
    #[serde(default)]
    approval: Option<String>,
    #[serde(default)]
    expires: Option<jiff::Timestamp>,
    #[serde(default)]
    signature: Option<String>,
}

async fn approve(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
    Body(req): Body<Approve>,
) -> ApiResult<Json<GuardView>> {
    let vault = caller.served()?.vault.clone();
    let request = param(&params, "request");
    let by = caller.token.by();
    let clock = app.config.jobs.clock.clone();
    let view = blocking(move || {
        let found = vault.guard_request(&request).map_err(ServiceError::from)?;
        let code = match (req.approval, req.expires, req.signature) {
            (Some(text), _, _) => ApprovalCode::decode(&text)?,
            (None, Some(expires), Some(signature)) => ApprovalCode { request: found.id, expires, signature },
            _ => {
                return Err(ServiceError::Field {
                    field: "approval",
                    message: "give the approval code, or expires and signature".into(),
                });
            }
        };
        if code.request != found.id {
            return Err(ServiceError::Field {
                field: "approval",
                message: format!("the approval is of request {}, not {}", code.request.short(), found.id.short()),
            });
        }
        boveda_service::guard::approve(&vault, &code, &by, clock.as_ref())?;
        boveda_service::guard::guard_view(&vault, clock.now())
    })
    .await?;
    Ok(Json(view))
}

async fn reject(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Json<GuardView>> {
    let vault = caller.served()?.vault.clone();
    let request = param(&params, "request");
    let by = caller.token.by();
    let clock = app.config.jobs.clock.clone();
    let view = blocking(move || {
        boveda_service::guard::reject(&vault, &request, &by, clock.as_ref())?;
        boveda_service::guard::guard_view(&vault, clock.now())
    })
    .await?;
    Ok(Json(view))
}

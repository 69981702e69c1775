//! Handlers of a vault's e-mail notifications: its SMTP settings (the
//! password is written, never read back) and a test message.

use axum::http::StatusCode;
use axum::{Extension, Json};
use boveda_service as svc;

use crate::auth::Caller;
use crate::blocking;
use crate::error::ApiResult;

use super::extract::Body;

pub(super) async fn email(Extension(caller): Extension<Caller>) -> ApiResult<Json<Option<svc::EmailView>>> {
    let vault = caller.served()?.vault.clone();
    Ok(Json(blocking(move || svc::email_settings(&vault)).await?))
}

pub(super) async fn set_email(
    Extension(caller): Extension<Caller>,
    Body(settings): Body<svc::EmailSettings>,
) -> ApiResult<Json<svc::EmailView>> {
    let vault = caller.served()?.vault.clone();
    Ok(Json(blocking(move || svc::set_email_settings(&vault, settings)).await?))
}

pub(super) async fn clear_email(Extension(caller): Extension<Caller>) -> ApiResult<StatusCode> {
    let vault = caller.served()?.vault.clone();
    blocking(move || svc::clear_email_settings(&vault)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Serialize)]
pub(super) struct Sent {
    to: Vec<String>,
}

pub(super) async fn test_email(Extension(caller): Extension<Caller>) -> ApiResult<Json<Sent>> {
    let vault = caller.served()?.vault.clone();
    Ok(Json(Sent { to: blocking(move || svc::send_test_email(&vault)).await? }))
}

//! Extractors and helpers every handler uses: JSON bodies and queries that
//! name the field at fault, the job environment, the clock.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Query, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use boveda_service::JobEnv;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

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
pub(super) fn with_env<T>(app: &AppState, f: impl FnOnce(&JobEnv<'_>) -> T) -> T {
    let jobs = &app.config.jobs;
    f(&JobEnv::new(jobs.clock.as_ref(), jobs.heartbeat, jobs.hostname.clone()))
}

/// [`with_env`] for a request whose token is `by` (what a request for
/// the guard's approval records).
pub(super) fn with_env_by<T>(app: &AppState, by: String, f: impl FnOnce(&JobEnv<'_>) -> T) -> T {
    let jobs = &app.config.jobs;
    f(&JobEnv::new(jobs.clock.as_ref(), jobs.heartbeat, jobs.hostname.clone()).by(by))
}

pub(super) fn now(app: &AppState) -> jiff::Timestamp {
    app.config.jobs.clock.now()
}

/// A listing already serialized.
pub(super) fn json_bytes(body: axum::body::Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(super) fn param(params: &BTreeMap<String, String>, name: &str) -> String {
    params.get(name).cloned().unwrap_or_default()
}

/// A blocking writer into a streamed response body.
pub(super) struct ToBody(pub tokio::sync::mpsc::Sender<Result<axum::body::Bytes, std::io::Error>>);

impl std::io::Write for ToBody {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(axum::body::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client hung up"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

//! Errors as the API returns them: a status, a stable `code`, a message,
//! and the request field at fault or what to do, when known.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use boveda_service::{Remedy, ServiceError, ServiceErrorKind};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// Stable, for programs: `invalid_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `payload_too_large`, `timeout`,
    /// `too_many_requests`, `csrf`, `damaged`, `no_space`, `cancelled`,
    /// `approval_needed` (the remedy names the request),
    /// `unavailable`, `internal`.
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<Remedy>,
    /// Seconds after which the client may try again (`Retry-After`).
    #[serde(skip)]
    pub retry_after: Option<u16>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None, remedy: None, retry_after: None }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn invalid(field: Option<String>, message: impl Into<String>) -> Self {
        ApiError { field, ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", message) }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let (status, code) = match e.kind() {
            ServiceErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid_request"),
            ServiceErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ServiceErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ServiceErrorKind::Cancelled => (StatusCode::CONFLICT, "cancelled"),
            ServiceErrorKind::Damaged => (StatusCode::INTERNAL_SERVER_ERROR, "damaged"),
            ServiceErrorKind::NoSpace => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
            ServiceErrorKind::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
            ServiceErrorKind::NeedsApproval => (StatusCode::FORBIDDEN, "approval_needed"),
            ServiceErrorKind::WrongPassphrase | ServiceErrorKind::Other => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let message = match &e {
            ServiceError::Field { message, .. } => message.clone(),
            other => other.to_string(),
        };
        ApiError {
            status,
            code,
            message,
            field: e.field().map(str::to_string),
            remedy: match &e {
                ServiceError::Vault(boveda_service::VaultError::NeedsApproval { request, .. }) => {
                    Some(Remedy::AskGuard { request: request.to_hex() })
                }
                _ => e.remedy().cloned(),
            },
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(&self)).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        r
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

//! The web portal.

use axum::Router;

use crate::AppState;

pub fn router(_app: AppState) -> Router<AppState> {
    Router::new()
}

//! The web portal: one page, its scripts and a style sheet, embedded in the
//! binary (no CDN, nothing fetched from elsewhere). The script is a client
//! of the same JSON API, so the portal adds no server logic of its own;
//! docs/SERVER.md says why it is built this way.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

const INDEX: &str = include_str!("../portal/index.html");
const STYLE: &str = include_str!("../portal/app.css");
/// The scripts, by name: app.js's helpers and routes, and the pages.
const SCRIPTS: [(&str, &str); 7] = [
    ("app.js", include_str!("../portal/app.js")),
    ("vault.js", include_str!("../portal/vault.js")),
    ("items.js", include_str!("../portal/items.js")),
    ("jobs.js", include_str!("../portal/jobs.js")),
    ("policies.js", include_str!("../portal/policies.js")),
    ("configure.js", include_str!("../portal/configure.js")),
    ("security.js", include_str!("../portal/security.js")),
];

/// Only the server's own assets and API; never framed.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub fn router(_app: AppState) -> Router<AppState> {
    let mut router = Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/portal/app.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }));
    for (name, body) in SCRIPTS {
        router = router.route(
            &format!("/portal/{name}"),
            get(move || async move { asset("text/javascript; charset=utf-8", body) }),
        );
    }
    router
}

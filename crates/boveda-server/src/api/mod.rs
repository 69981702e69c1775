//! The REST API: the route table (method, path, the permission and scope
//! it needs) and one handler per route, each one call to the service.
//!
//! The table is data: the router, the OpenAPI document and the role
//! matrix test are all made from it, so a route cannot be added without
//! saying who may use it.

mod access;
mod extract;
mod guard;
mod hosts;
mod items;
mod jobs;
mod notifications;
mod points;
mod policies;
mod vaults;

use std::collections::BTreeMap;

use axum::handler::Handler;
use axum::http::{Method, StatusCode};
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
use boveda_service::Permission;

use crate::AppState;
use crate::auth::authorize;
use crate::error::ApiError;
use crate::routes::{PUBLIC_ROUTES, RouteSpec, Scope};

use access::*;
use hosts::*;
use items::*;
use jobs::*;
use notifications::*;
use points::*;
use policies::*;
use vaults::*;

type Route = (RouteSpec, MethodRouter<AppState>);

fn route<H, T>(
    method: Method,
    path: &'static str,
    permission: Permission,
    scope: Scope,
    summary: &'static str,
    body: Option<&'static str>,
    handler: H,
) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
    (RouteSpec { method, path, permission, scope, summary, body }, on(filter, handler))
}

const V: &str = "/api/v1/vaults/{vault}";

fn table() -> Vec<Route> {
    use Permission::{Manage, Operate, Read, SeeGuard};
    use Scope::{Any, Item, Vault};
    let (get, post) = (Method::GET, Method::POST);
    let mut routes = vec![
        route(get.clone(), "/api/v1/vaults", SeeGuard, Any, "The vaults this token may see", None, list_vaults),
        route(post.clone(), "/api/v1/vaults", Manage, Vault, "Create a vault", Some("NewVault"), create_vault),
        route(
            get.clone(),
            "/api/v1/center",
            Read,
            Any,
            "The Backup center: items, recent jobs and alerts of every vault the token sees",
            None,
            center,
        ),
        route(get.clone(), V, Read, Vault, "A vault's summary", None, show_vault),
        route(get.clone(), "/api/v1/vaults/{vault}/items", Read, Any, "Items with protection state", None, items),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/items",
            Manage,
            Vault,
            "Add an item (?dry_run=true checks it only)",
            Some("NewItem"),
            add_item,
        ),
        route(get.clone(), "/api/v1/vaults/{vault}/discover", Manage, Vault, "VMs defined in a folder", None, discover),
        route(get.clone(), "/api/v1/vaults/{vault}/items/{item}", Read, Item, "One item", None, item),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/items/{item}/backup",
            Operate,
            Item,
            "Back up now (a job)",
            Some("BackupNow"),
            backup_now,
        ),
        route(get.clone(), "/api/v1/vaults/{vault}/items/{item}/points", Read, Item, "Recovery points", None, points),
        route(
            get.clone(),
            "/api/v1/vaults/{vault}/items/{item}/points/{point}",
            Read,
            Item,
            "One recovery point",
            None,
            point,
        ),
        route(
            get.clone(),
            "/api/v1/vaults/{vault}/items/{item}/points/{point}/browse",
            Read,
            Item,
            "Files inside a point (?path=)",
            None,
            browse,
        ),
        route(
            get.clone(),
            "/api/v1/vaults/{vault}/items/{item}/points/{point}/download",
            Operate,
            Item,
            "Chosen files and folders of a point as a tar stream (?path=, repeatable; none: all)",
            None,
            download,
        ),
        route(
            get.clone(),
            "/api/v1/vaults/{vault}/items/{item}/restore",
            Operate,
            Item,
            "Where a restore of the item may write",
            None,
            restore_options,
        ),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/items/{item}/restore",
            Operate,
            Item,
            "Restore (a job)",
            Some("RestoreTarget"),
            restore,
        ),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/items/{item}/verify",
            Operate,
            Item,
            "Verify a point now (a VM's booted, files and disks restored to scratch and compared; a job)",
            Some("VerifyNow"),
            verify,
        ),
    ];
    routes.extend(protection_table());
    routes.extend(policy_table());
    routes.extend(vault_table());
    routes.extend(notification_table());
    routes.extend(guard::guard_table());
    routes
}

/// The routes of the vault's settings, jobs, alerts, reports, tokens and
/// hosts.
fn vault_table() -> Vec<Route> {
    use Permission::{Manage, Operate, Read};
    use Scope::{Any, Vault};
    let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);
    vec![
        route(
            Method::PATCH,
            "/api/v1/vaults/{vault}/settings",
            Manage,
            Vault,
            "Change a vault's settings (soft delete, immutability, store limits)",
            Some("VaultUpdate"),
            update_settings,
        ),
        route(
            get.clone(),
            "/api/v1/vaults/{vault}/jobs",
            Read,
            Any,
            "Jobs (?state=&operation=&item=&since=)",
            None,
            jobs,
        ),
        route(get.clone(), "/api/v1/vaults/{vault}/jobs/{job}", Read, Any, "One job", None, job),
        route(post.clone(), "/api/v1/vaults/{vault}/jobs/{job}/stop", Operate, Any, "Stop a running job", None, stop),
        route(
            get.clone(),
            "/api/v1/vaults/{vault}/jobs/{job}/events",
            Read,
            Any,
            "A job's progress as Server-Sent Events",
            None,
            job_events,
        ),
        route(get.clone(), "/api/v1/vaults/{vault}/alerts", Read, Any, "Alerts, with their state", None, alerts),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/alerts/{alert}/acknowledge",
            Operate,
            Any,
            "Acknowledge an alert",
            None,
            acknowledge_alert,
        ),
        route(get.clone(), "/api/v1/vaults/{vault}/usage", Read, Vault, "Stored bytes and estimated cost", None, usage),
        route(
            get.clone(),
            "/api/v1/vaults/{vault}/reports",
            Read,
            Any,
            "Backup report per item (?days=7|30|90, ?format=csv)",
            None,
            report,
        ),
        route(get.clone(), "/api/v1/vaults/{vault}/imports", Read, Vault, "Offline seeding import jobs", None, imports),
        route(get.clone(), "/api/v1/vaults/{vault}/tokens", Manage, Vault, "Access tokens", None, tokens),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/tokens",
            Manage,
            Vault,
            "Create an access token (shown once)",
            Some("NewToken"),
            create_token,
        ),
        route(
            delete.clone(),
            "/api/v1/vaults/{vault}/tokens/{token}",
            Manage,
            Vault,
            "Revoke a token",
            None,
            revoke_token,
        ),
        route(get.clone(), "/api/v1/vaults/{vault}/dashboard", Read, Vault, "The vault's dashboard", None, dashboard),
        route(get, "/api/v1/vaults/{vault}/hosts", Read, Vault, "Registered hosts", None, hosts),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/hosts",
            Manage,
            Vault,
            "Vault credentials for one new host (single use, expiring)",
            Some("NewCredentials"),
            create_credentials,
        ),
        route(delete, "/api/v1/vaults/{vault}/hosts/{host}", Manage, Vault, "Unregister a host", None, unregister_host),
        route(
            post,
            "/api/v1/vaults/{vault}/hosts/{host}/discover",
            Manage,
            Vault,
            "What a registered host has in one of its folders, and its VMs (asked of its agent)",
            Some("DiscoverOrder"),
            discover_on_host,
        ),
    ]
}

/// The routes of an item's protection: enable, change, stop, resume,
/// undelete.
fn protection_table() -> Vec<Route> {
    use Permission::Manage;
    use Scope::Item;
    let (post, delete) = (Method::POST, Method::DELETE);
    vec![
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/items/{item}/protection",
            Manage,
            Item,
            "Protect an item with a policy",
            Some("PolicyChoice"),
            enable,
        ),
        route(
            delete.clone(),
            "/api/v1/vaults/{vault}/items/{item}/protection",
            Manage,
            Item,
            "Stop protecting an item (?delete_data=true soft-deletes its points)",
            None,
            disable,
        ),
        route(
            Method::PUT,
            "/api/v1/vaults/{vault}/items/{item}/protection",
            Manage,
            Item,
            "Change a protected item's policy",
            Some("PolicyChoice"),
            change_policy,
        ),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/items/{item}/protection/resume",
            Manage,
            Item,
            "Resume protection",
            Some("PolicyChoice"),
            resume,
        ),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/items/{item}/protection/undelete",
            Manage,
            Item,
            "Undelete soft-deleted backup data",
            None,
            undelete,
        ),
    ]
}

/// The routes of policies.
fn policy_table() -> Vec<Route> {
    use Permission::{Manage, Read};
    use Scope::{Any, Vault};
    let (get, post, patch, delete) = (Method::GET, Method::POST, Method::PATCH, Method::DELETE);
    vec![
        route(get.clone(), "/api/v1/vaults/{vault}/policies", Read, Any, "Policies", None, policies),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/policies",
            Manage,
            Vault,
            "Create a policy",
            Some("PolicyPatch"),
            create_policy,
        ),
        route(get.clone(), "/api/v1/vaults/{vault}/policies/{policy}", Read, Any, "One policy", None, policy),
        route(
            patch,
            "/api/v1/vaults/{vault}/policies/{policy}",
            Manage,
            Vault,
            "Change a policy (?dry_run=true plans only)",
            Some("PolicyPatch"),
            update_policy,
        ),
        route(
            delete.clone(),
            "/api/v1/vaults/{vault}/policies/{policy}",
            Manage,
            Vault,
            "Delete an unused policy",
            None,
            delete_policy,
        ),
    ]
}

/// The routes of a vault's notifications.
fn notification_table() -> Vec<Route> {
    use Permission::Manage;
    use Scope::Vault;
    let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);
    vec![
        route(
            get.clone(),
            "/api/v1/vaults/{vault}/notifications/email",
            Manage,
            Vault,
            "E-mail settings for alerts (never the password)",
            None,
            email,
        ),
        route(
            Method::PUT,
            "/api/v1/vaults/{vault}/notifications/email",
            Manage,
            Vault,
            "Send alerts by e-mail (a password left out is kept)",
            Some("EmailSettings"),
            set_email,
        ),
        route(
            delete.clone(),
            "/api/v1/vaults/{vault}/notifications/email",
            Manage,
            Vault,
            "Stop e-mails",
            None,
            clear_email,
        ),
        route(
            post.clone(),
            "/api/v1/vaults/{vault}/notifications/email/test",
            Manage,
            Vault,
            "Send a test e-mail",
            None,
            test_email,
        ),
    ]
}

/// Every route that needs a token, as data.
pub fn route_specs() -> Vec<RouteSpec> {
    table().into_iter().map(|(spec, _)| spec).collect()
}

pub fn router(app: AppState) -> Router<AppState> {
    let mut paths: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for (spec, method_router) in table() {
        let guarded =
            method_router.route_layer(axum::middleware::from_fn_with_state((app.clone(), spec.clone()), authorize));
        let merged = match paths.remove(spec.path) {
            Some(existing) => existing.merge(guarded),
            None => guarded,
        };
        paths.insert(spec.path, merged);
    }
    let mut router = Router::new()
        .route("/api/v1/login", axum::routing::post(login))
        .route("/api/v1/logout", axum::routing::post(logout))
        .route("/api/v1/session", axum::routing::get(session))
        .route("/api/v1/openapi.json", axum::routing::get(openapi));
    router = host_routes(router);
    for (path, method_router) in paths {
        router = router.route(path, method_router.fallback(method_not_allowed));
    }
    router.layer(axum::extract::DefaultBodyLimit::max(app.config.body_limit))
}

/// The largest object a host uploads: a pack of the largest size a vault
/// takes, and room.
pub(super) const HOST_OBJECT_LIMIT: usize = 160 << 20;

fn host_routes(router: Router<AppState>) -> Router<AppState> {
    use axum::routing::{get, post, put};
    const H: &str = "/api/v1/vaults/{vault}/host";
    router
        .route("/api/v1/vaults/{vault}/hosts/register", post(register))
        .route(&format!("{H}/items"), get(host_items))
        .route(&format!("{H}/work"), get(host_work))
        .route(&format!("{H}/jobs"), post(host_start_backup))
        .route(&format!("{H}/jobs/{{job}}/chunks"), get(host_chunks))
        .route(&format!("{H}/jobs/{{job}}/archive"), get(host_archive))
        .route(
            &format!("{H}/jobs/{{job}}/objects/{{*name}}"),
            put(host_upload).layer(axum::extract::DefaultBodyLimit::max(HOST_OBJECT_LIMIT)),
        )
        .route(&format!("{H}/jobs/{{job}}/grants"), post(host_grant))
        .route(&format!("{H}/discoveries/{{request}}"), post(host_found))
        .route(&format!("{H}/jobs/{{job}}/report"), post(host_report))
}

pub(crate) async fn unknown_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document(&route_specs(), &PUBLIC_ROUTES))
}

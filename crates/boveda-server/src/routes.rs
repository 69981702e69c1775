//! What a route is, as data: its method, path, the permission and the part
//! of a vault it needs. A leaf: the route table (`api`), the permission
//! check (`auth`) and the OpenAPI document (`openapi`) all read it.

use axum::http::Method;
use boveda_service::Permission;
use serde::Serialize;

/// Which part of a vault a route touches, for tokens scoped to items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Scope {
    /// Lists and jobs: a scoped token sees its items' entries only.
    Any,
    /// The vault as a whole: refused to scoped tokens.
    Vault,
    /// One item, named in the path: refused unless the token sees it.
    Item,
}

/// One route of the API.
#[derive(Debug, Clone, Serialize)]
pub struct RouteSpec {
    #[serde(serialize_with = "method_name")]
    pub method: Method,
    pub path: &'static str,
    pub permission: Permission,
    pub scope: Scope,
    pub summary: &'static str,
    /// The request body's shape, for the OpenAPI document.
    pub body: Option<&'static str>,
}

fn method_name<S: serde::Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

/// Routes that need no access token: logging in and out, the API's
/// description, and a registered host's routes (registering with the
/// credentials' secret; the others with the host's own token,
/// docs/FLEET.md).
pub const PUBLIC_ROUTES: [(&str, &str); 14] = [
    ("POST", "/api/v1/login"),
    ("GET", "/api/v1/session"),
    ("POST", "/api/v1/logout"),
    ("GET", "/api/v1/openapi.json"),
    ("POST", "/api/v1/vaults/{vault}/hosts/register"),
    ("GET", "/api/v1/vaults/{vault}/host/items"),
    ("GET", "/api/v1/vaults/{vault}/host/work"),
    ("POST", "/api/v1/vaults/{vault}/host/jobs"),
    ("GET", "/api/v1/vaults/{vault}/host/jobs/{job}/chunks"),
    ("GET", "/api/v1/vaults/{vault}/host/jobs/{job}/archive"),
    ("PUT", "/api/v1/vaults/{vault}/host/jobs/{job}/objects/{*name}"),
    ("POST", "/api/v1/vaults/{vault}/host/jobs/{job}/grants"),
    ("POST", "/api/v1/vaults/{vault}/host/discoveries/{request}"),
    ("POST", "/api/v1/vaults/{vault}/host/jobs/{job}/report"),
];

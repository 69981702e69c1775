//! The role matrix: every route × every role × a token for the whole
//! vault and one scoped to the item `docs`, allowed or denied. The matrix
//! is data; a route without an entry here (or an entry without a route)
//! fails the test.

mod common;

use axum::http::StatusCode;
use boveda_service::Role;
use serde_json::json;

/// What a token scoped to `docs` may do on a route its role allows.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scoped {
    /// Allowed (lists show only its items).
    Yes,
    /// Refused: the route concerns the vault as a whole.
    No,
    /// Allowed for `docs`, refused for `other`.
    OwnItem,
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Needs {
    /// This role or a more capable one (never SecurityAdmin).
    At(Role),
    /// Every role, SecurityAdmin too.
    AnyRole,
    /// SecurityAdmin alone: the guard's approvals.
    Guard,
}

impl Needs {
    fn allows(self, role: Role) -> bool {
        let rank = |r: Role| Role::ALL.iter().position(|a| *a == r);
        match self {
            Needs::AnyRole => true,
            Needs::Guard => role == SecurityAdmin,
            Needs::At(least) => role != SecurityAdmin && rank(role) >= rank(least),
        }
    }
}

use Needs::{AnyRole, At, Guard};
use Role::{Contributor, Operator, Reader, SecurityAdmin};
use Scoped::{No, OwnItem, Yes};

const MATRIX: &[(&str, &str, Needs, Scoped)] = &[
    ("GET", "/api/v1/vaults", AnyRole, Yes),
    ("POST", "/api/v1/vaults", At(Contributor), No),
    ("GET", "/api/v1/center", At(Reader), Yes),
    ("GET", "/api/v1/vaults/{vault}", At(Reader), No),
    ("PATCH", "/api/v1/vaults/{vault}/settings", At(Contributor), No),
    ("GET", "/api/v1/vaults/{vault}/dashboard", At(Reader), No),
    ("GET", "/api/v1/vaults/{vault}/items", At(Reader), Yes),
    ("POST", "/api/v1/vaults/{vault}/items", At(Contributor), No),
    ("GET", "/api/v1/vaults/{vault}/discover", At(Contributor), No),
    ("GET", "/api/v1/vaults/{vault}/items/{item}", At(Reader), OwnItem),
    ("POST", "/api/v1/vaults/{vault}/items/{item}/protection", At(Contributor), OwnItem),
    ("DELETE", "/api/v1/vaults/{vault}/items/{item}/protection", At(Contributor), OwnItem),
    ("PUT", "/api/v1/vaults/{vault}/items/{item}/protection", At(Contributor), OwnItem),
    ("POST", "/api/v1/vaults/{vault}/items/{item}/protection/resume", At(Contributor), OwnItem),
    ("POST", "/api/v1/vaults/{vault}/items/{item}/protection/undelete", At(Contributor), OwnItem),
    ("POST", "/api/v1/vaults/{vault}/items/{item}/backup", At(Operator), OwnItem),
    ("GET", "/api/v1/vaults/{vault}/items/{item}/points", At(Reader), OwnItem),
    ("GET", "/api/v1/vaults/{vault}/items/{item}/points/{point}", At(Reader), OwnItem),
    ("GET", "/api/v1/vaults/{vault}/items/{item}/points/{point}/browse", At(Reader), OwnItem),
    ("POST", "/api/v1/vaults/{vault}/items/{item}/restore", At(Operator), OwnItem),
    ("GET", "/api/v1/vaults/{vault}/items/{item}/restore", At(Operator), OwnItem),
    ("POST", "/api/v1/vaults/{vault}/items/{item}/verify", At(Operator), OwnItem),
    ("GET", "/api/v1/vaults/{vault}/items/{item}/points/{point}/download", At(Operator), OwnItem),
    ("GET", "/api/v1/vaults/{vault}/policies", At(Reader), Yes),
    ("POST", "/api/v1/vaults/{vault}/policies", At(Contributor), No),
    ("GET", "/api/v1/vaults/{vault}/policies/{policy}", At(Reader), Yes),
    ("PATCH", "/api/v1/vaults/{vault}/policies/{policy}", At(Contributor), No),
    ("DELETE", "/api/v1/vaults/{vault}/policies/{policy}", At(Contributor), No),
    ("GET", "/api/v1/vaults/{vault}/jobs", At(Reader), Yes),
    ("GET", "/api/v1/vaults/{vault}/jobs/{job}", At(Reader), Yes),
    ("POST", "/api/v1/vaults/{vault}/jobs/{job}/stop", At(Operator), Yes),
    ("GET", "/api/v1/vaults/{vault}/jobs/{job}/events", At(Reader), Yes),
    ("GET", "/api/v1/vaults/{vault}/alerts", At(Reader), Yes),
    ("POST", "/api/v1/vaults/{vault}/alerts/{alert}/acknowledge", At(Operator), Yes),
    ("GET", "/api/v1/vaults/{vault}/reports", At(Reader), Yes),
    ("GET", "/api/v1/vaults/{vault}/notifications/email", At(Contributor), No),
    ("PUT", "/api/v1/vaults/{vault}/notifications/email", At(Contributor), No),
    ("DELETE", "/api/v1/vaults/{vault}/notifications/email", At(Contributor), No),
    ("POST", "/api/v1/vaults/{vault}/notifications/email/test", At(Contributor), No),
    ("GET", "/api/v1/vaults/{vault}/usage", At(Reader), No),
    ("GET", "/api/v1/vaults/{vault}/imports", At(Reader), No),
    ("GET", "/api/v1/vaults/{vault}/tokens", At(Contributor), No),
    ("POST", "/api/v1/vaults/{vault}/tokens", At(Contributor), No),
    ("DELETE", "/api/v1/vaults/{vault}/tokens/{token}", At(Contributor), No),
    ("GET", "/api/v1/vaults/{vault}/hosts", At(Reader), No),
    ("POST", "/api/v1/vaults/{vault}/hosts", At(Contributor), No),
    ("DELETE", "/api/v1/vaults/{vault}/hosts/{host}", At(Contributor), No),
    ("POST", "/api/v1/vaults/{vault}/hosts/{host}/discover", At(Contributor), No),
    ("GET", "/api/v1/vaults/{vault}/guard", AnyRole, No),
    ("PUT", "/api/v1/vaults/{vault}/guard", At(Contributor), No),
    ("DELETE", "/api/v1/vaults/{vault}/guard", At(Contributor), No),
    ("POST", "/api/v1/vaults/{vault}/guard/requests/{request}/approve", Guard, No),
    ("POST", "/api/v1/vaults/{vault}/guard/requests/{request}/reject", Guard, No),
];

#[test]
fn every_route_has_an_entry_in_the_matrix_and_every_entry_a_route() {
    let routes: Vec<(String, String)> =
        boveda_server::route_specs().iter().map(|s| (s.method.to_string(), s.path.to_string())).collect();
    for (m, p) in &routes {
        assert!(
            MATRIX.iter().any(|(mm, pp, _, _)| mm == m && pp == p),
            "route {m} {p} has no entry in the role matrix"
        );
    }
    for (m, p, _, _) in MATRIX {
        assert!(routes.iter().any(|(mm, pp)| mm == m && pp == p), "matrix entry {m} {p} has no route");
    }
}

fn concrete(path: &str, item: &str) -> String {
    path.replace("{item}", item)
        .replace("{point}", "latest")
        .replace("{policy}", "no-such-policy")
        .replace("{job}", "ffffffff")
        .replace("{host}", "no-such-host")
        .replace("{token}", "ffffffff")
        .replace("{request}", "ffffffff")
        .replace("{alert}", "ffffffff")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_allows_and_denies_by_role_and_scope() {
    let f = common::fixture();
    // a point, so that routes of points get past their lookups
    let c = f.token("Contributor").to_string();
    let r = f.call("POST", "/api/v1/vaults/{vault}/items/docs/backup", Some(&c), Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    f.wait_job(r.body["id"].as_str().expect("id"), &c).await;

    let mut checked = 0;
    for (method, path, least, scoped) in MATRIX {
        for role in Role::ALL {
            for scope in [false, true] {
                let key = if scope { format!("{}/docs", role.as_str()) } else { role.as_str().to_string() };
                let token = f.token(&key).to_string();
                let items: &[&str] = if path.contains("{item}") { &["docs", "other"] } else { &["docs"] };
                for item in items {
                    let allowed = least.allows(role)
                        && match (scope, scoped) {
                            (false, _) => true,
                            (true, Yes) => true,
                            (true, No) => false,
                            (true, OwnItem) => *item == "docs",
                        };
                    let body = matches!(*method, "POST" | "PATCH" | "PUT").then(|| json!({}));
                    let r = f.call(method, &concrete(path, item), Some(&token), body).await;
                    let what = format!("{method} {path} as {key} on {item}: {} {}", r.status, r.text);
                    // out of an item-scoped token's reach looks exactly like absent
                    let hidden = least.allows(role) && scope && matches!(scoped, OwnItem) && *item != "docs";
                    if hidden {
                        assert_eq!(r.status, StatusCode::NOT_FOUND, "should look absent: {what}");
                        assert_eq!(r.body["message"], format!("no item named {item:?} in this vault"), "{what}");
                    } else if allowed {
                        assert!(
                            r.status != StatusCode::UNAUTHORIZED && r.status != StatusCode::FORBIDDEN,
                            "should be allowed: {what}"
                        );
                    } else {
                        assert_eq!(r.status, StatusCode::FORBIDDEN, "should be denied: {what}");
                        assert_eq!(r.body["code"], "forbidden", "{what}");
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= MATRIX.len() * 8);
    // lists show a scoped token its items only
    let r = f.call("GET", "/api/v1/vaults/{vault}/items", Some(f.token("Reader/docs")), None).await;
    let names: Vec<&str> = r.body.as_array().expect("items").iter().filter_map(|i| i["name"].as_str()).collect();
    assert_eq!(names, ["docs"], "{}", r.text);
    let r = f.call("GET", "/api/v1/vaults/{vault}/items", Some(f.token("Reader")), None).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(2), "{}", r.text);
    // denials are counted
    assert!(f.app.counters.denied.load(std::sync::atomic::Ordering::Relaxed) > 50);
}

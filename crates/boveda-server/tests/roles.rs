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

use Role::{Contributor, Operator, Reader};
use Scoped::{No, OwnItem, Yes};

const MATRIX: &[(&str, &str, Role, Scoped)] = &[
    ("GET", "/api/v1/vaults", Reader, Yes),
    ("POST", "/api/v1/vaults", Contributor, No),
    ("GET", "/api/v1/vaults/{vault}", Reader, No),
    ("PATCH", "/api/v1/vaults/{vault}/settings", Contributor, No),
    ("GET", "/api/v1/vaults/{vault}/dashboard", Reader, No),
    ("GET", "/api/v1/vaults/{vault}/items", Reader, Yes),
    ("POST", "/api/v1/vaults/{vault}/items", Contributor, No),
    ("GET", "/api/v1/vaults/{vault}/discover", Contributor, No),
    ("GET", "/api/v1/vaults/{vault}/items/{item}", Reader, OwnItem),
    ("POST", "/api/v1/vaults/{vault}/items/{item}/protection", Contributor, OwnItem),
    ("DELETE", "/api/v1/vaults/{vault}/items/{item}/protection", Contributor, OwnItem),
    ("POST", "/api/v1/vaults/{vault}/items/{item}/protection/resume", Contributor, OwnItem),
    ("POST", "/api/v1/vaults/{vault}/items/{item}/protection/undelete", Contributor, OwnItem),
    ("POST", "/api/v1/vaults/{vault}/items/{item}/backup", Operator, OwnItem),
    ("GET", "/api/v1/vaults/{vault}/items/{item}/points", Reader, OwnItem),
    ("GET", "/api/v1/vaults/{vault}/items/{item}/points/{point}", Reader, OwnItem),
    ("GET", "/api/v1/vaults/{vault}/items/{item}/points/{point}/browse", Reader, OwnItem),
    ("POST", "/api/v1/vaults/{vault}/items/{item}/restore", Operator, OwnItem),
    ("GET", "/api/v1/vaults/{vault}/policies", Reader, Yes),
    ("POST", "/api/v1/vaults/{vault}/policies", Contributor, No),
    ("GET", "/api/v1/vaults/{vault}/policies/{policy}", Reader, Yes),
    ("PATCH", "/api/v1/vaults/{vault}/policies/{policy}", Contributor, No),
    ("DELETE", "/api/v1/vaults/{vault}/policies/{policy}", Contributor, No),
    ("GET", "/api/v1/vaults/{vault}/jobs", Reader, Yes),
    ("GET", "/api/v1/vaults/{vault}/jobs/{job}", Reader, Yes),
    ("POST", "/api/v1/vaults/{vault}/jobs/{job}/stop", Operator, Yes),
    ("GET", "/api/v1/vaults/{vault}/jobs/{job}/events", Reader, Yes),
    ("GET", "/api/v1/vaults/{vault}/alerts", Reader, Yes),
    ("GET", "/api/v1/vaults/{vault}/usage", Reader, No),
    ("GET", "/api/v1/vaults/{vault}/imports", Reader, No),
    ("GET", "/api/v1/vaults/{vault}/tokens", Contributor, No),
    ("POST", "/api/v1/vaults/{vault}/tokens", Contributor, No),
    ("DELETE", "/api/v1/vaults/{vault}/tokens/{token}", Contributor, No),
    ("GET", "/api/v1/vaults/{vault}/hosts", Reader, No),
    ("POST", "/api/v1/vaults/{vault}/hosts", Contributor, No),
    ("DELETE", "/api/v1/vaults/{vault}/hosts/{host}", Contributor, No),
    ("POST", "/api/v1/vaults/{vault}/hosts/{host}/discover", Contributor, No),
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
                    let allowed = role >= *least
                        && match (scope, scoped) {
                            (false, _) => true,
                            (true, Yes) => true,
                            (true, No) => false,
                            (true, OwnItem) => *item == "docs",
                        };
                    let body = matches!(*method, "POST" | "PATCH").then(|| json!({}));
                    let r = f.call(method, &concrete(path, item), Some(&token), body).await;
                    let what = format!("{method} {path} as {key} on {item}: {} {}", r.status, r.text);
                    // out of an item-scoped token's reach looks exactly like absent
                    let hidden = role >= *least && scope && matches!(scoped, OwnItem) && *item != "docs";
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
    assert!(checked >= MATRIX.len() * 6);
    // lists show a scoped token its items only
    let r = f.call("GET", "/api/v1/vaults/{vault}/items", Some(f.token("Reader/docs")), None).await;
    let names: Vec<&str> = r.body.as_array().expect("items").iter().filter_map(|i| i["name"].as_str()).collect();
    assert_eq!(names, ["docs"], "{}", r.text);
    let r = f.call("GET", "/api/v1/vaults/{vault}/items", Some(f.token("Reader")), None).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(2), "{}", r.text);
    // denials are counted
    assert!(f.app.counters.denied.load(std::sync::atomic::Ordering::Relaxed) > 50);
}

//! The API through the router, without a socket: the whole workflow on
//! real data, and every bad input a client can send.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use boveda_service::Clock;
use common::{Fixture, fixture, fixture_with};
use serde_json::{Value, json};

const C: &str = "Contributor";

/// A date `n` days from now, as a user types it.
fn in_days(n: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * n))
        .to_zoned(jiff::tz::TimeZone::system())
        .date()
        .to_string()
}

async fn backup(f: &Fixture, token: &str, item: &str) -> Value {
    let r =
        f.call("POST", &format!("/api/v1/vaults/{{vault}}/items/{item}/backup"), Some(token), Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["operation"], "Backup");
    let id = r.body["id"].as_str().expect("job id").to_string();
    f.wait_job(&id, token).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configure_backup_then_restore_a_file_with_the_same_bytes() {
    let f = fixture();
    let c = f.token(C).to_string();
    // the vault as a token sees it
    let r = f.call("GET", "/api/v1/vaults", Some(&c), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body[0]["name"], f.name.as_str());
    assert_eq!(r.body[0]["role"], "Contributor");
    // a policy, then protection
    let policy = json!({"name": "nightly", "times": ["02:00"], "daily_keep": 14});
    let r = f.call("POST", "/api/v1/vaults/{vault}/policies", Some(&c), Some(policy)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = f
        .call("POST", "/api/v1/vaults/{vault}/items/docs/protection", Some(&c), Some(json!({"policy": "nightly"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = f.call("GET", "/api/v1/vaults/{vault}/items/docs", Some(&c), None).await;
    assert_eq!(r.body["protection"], "Protected - Warning (initial backup pending)", "{}", r.text);
    assert_eq!(r.body["policy"], "nightly");
    // back up now with a retain-until date
    let r = f
        .call("POST", "/api/v1/vaults/{vault}/items/docs/backup", Some(&c), Some(json!({"retain_until": in_days(60)})))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let job = f.wait_job(r.body["id"].as_str().expect("id"), &c).await;
    assert_eq!(job["state"], "Completed", "{job}");
    let r = f.call("GET", "/api/v1/vaults/{vault}/items/docs/points", Some(&c), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let points = r.body["points"].as_array().expect("points");
    assert_eq!(points.len(), 1, "{}", r.text);
    let point = points[0]["point"]["id"].as_str().expect("point id").to_string();
    assert!(points[0]["expires"].is_string(), "{}", r.text);
    // browse into the point
    let docs = f.dir.path().join("docs");
    let inside = format!("{}/sub", docs.display());
    let r = f
        .call(
            "GET",
            &format!("/api/v1/vaults/{{vault}}/items/docs/points/{point}/browse?path={inside}"),
            Some(&c),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(r.text.contains("b.bin"), "{}", r.text);
    // restore one file and compare its bytes
    let wanted = format!("{}/sub/b.bin", docs.display());
    let target = f.restores.join("one");
    let body = json!({"point": point, "target": target, "paths": [wanted]});
    let r = f.call("POST", "/api/v1/vaults/{vault}/items/docs/restore", Some(&c), Some(body)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let job = f.wait_job(r.body["id"].as_str().expect("id"), &c).await;
    assert_eq!(job["state"], "Completed", "{job}");
    let restored = target.join(wanted.trim_start_matches('/'));
    let original = std::fs::read(docs.join("sub/b.bin")).expect("original");
    assert_eq!(std::fs::read(&restored).expect("restored"), original);
    assert!(!target.join(docs.join("a.txt").display().to_string().trim_start_matches('/')).exists());
    // the dashboard counts what happened
    let r = f.call("GET", "/api/v1/vaults/{vault}/dashboard", Some(&c), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["items_by_state"]["Protected"], 1, "{}", r.text);
    assert_eq!(r.body["jobs_last_24h"]["Completed"].as_u64().map(|n| n >= 3), Some(true), "{}", r.text);
    assert!(r.body["stored_bytes"].as_u64().unwrap_or(0) > 0, "{}", r.text);
    assert_eq!(r.body["days"].as_array().map(Vec::len), Some(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_events_stream_progress_until_the_job_ends() {
    let f = fixture();
    let c = f.token(C).to_string();
    let r = f.call("POST", "/api/v1/vaults/{vault}/items/docs/backup", Some(&c), Some(json!({}))).await;
    let id = r.body["id"].as_str().expect("id").to_string();
    let r = f.call("GET", &format!("/api/v1/vaults/{{vault}}/jobs/{id}/events"), Some(&c), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "text/event-stream");
    assert!(r.text.contains("event: end"), "{}", r.text);
    let last = r.text.lines().rev().find_map(|l| l.strip_prefix("data: ")).expect("data");
    let job: Value = serde_json::from_str(last).expect("job json");
    assert_eq!(job["state"], "Completed", "{job}");
    assert_eq!(f.app.counters.streams.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_that_never_ends_is_closed_at_the_limit() {
    let f = fixture_with(|c| c.stream_limit = std::time::Duration::from_secs(1));
    let c = f.token(C).to_string();
    // a job that stays in progress: the record of a job another process
    // runs, with a heartbeat that stays fresh for an hour
    let done = backup(&f, &c, "docs").await;
    let id = f.running_job_like(done);
    let started = std::time::Instant::now();
    let r = f.call("GET", &format!("/api/v1/vaults/{{vault}}/jobs/{id}/events"), Some(&c), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("event: progress") && !r.text.contains("event: end"), "{}", r.text);
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_secs(1) && took < std::time::Duration::from_secs(10), "{took:?}");
    assert_eq!(f.app.counters.streams.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_with_401_and_counted() {
    let f = fixture();
    let path = "/api/v1/vaults/{vault}/items";
    let r = f.call("GET", path, None, None).await;
    assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{}", r.text);
    for bad in ["nonsense", "bvd_0123", &format!("bvd_{}", "0".repeat(96))] {
        let r = f.call("GET", path, Some(bad), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}: {}", r.text);
    }
    // the right id with a wrong secret
    let good = f.token("Reader").to_string();
    let forged = format!("{}{}", &good[..36], "0".repeat(64));
    let r = f.call("GET", path, Some(&forged), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    // revoked through the API: refused at once
    let c = f.token(C).to_string();
    let list = f.call("GET", "/api/v1/vaults/{vault}/tokens", Some(&c), None).await;
    let reader =
        list.body.as_array().expect("tokens").iter().find(|t| t["role"] == "Reader" && t["items"] == json!([]));
    let reader_id = reader.expect("reader token")["id"].as_str().expect("id").to_string();
    assert!(!list.text.contains(&good[36..]), "a token's secret is never listed");
    let r = f.call("DELETE", &format!("/api/v1/vaults/{{vault}}/tokens/{reader_id}"), Some(&c), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = f.call("GET", path, Some(&good), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("revoked"), "{}", r.text);
    // expired, when the clock passes its date
    let r = f
        .call("POST", "/api/v1/vaults/{vault}/tokens", Some(&c), Some(json!({"role": "Reader", "expires": in_days(1)})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let short = r.body["secret"].as_str().expect("secret").to_string();
    assert_eq!(f.call("GET", path, Some(&short), None).await.status, StatusCode::OK);
    f.clock.set(f.clock.now() + jiff::SignedDuration::from_hours(49));
    let r = f.call("GET", path, Some(&short), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("expired"), "{}", r.text);
    assert!(f.app.counters.unauthorized.load(std::sync::atomic::Ordering::Relaxed) >= 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_failed_logins_from_one_client_are_turned_away() {
    let f = fixture();
    let bad = format!("bvd_{}", "1".repeat(96));
    for _ in 0..boveda_server::MAX_FAILURES {
        let r = f.call("GET", "/api/v1/vaults", Some(&bad), None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    // now even a good token waits
    let r = f.call("GET", "/api/v1/vaults", Some(f.token(C)), None).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text);
    assert_eq!(r.body["code"], "too_many_requests");
    // issue 22, 7: it says when to come back
    let wait: u64 = r.headers[header::RETRY_AFTER].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&wait), "{wait}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field_and_change_nothing() {
    let f = fixture();
    let c = f.token(C).to_string();
    // unknown route and method: JSON errors
    let r = f.call("GET", "/api/v1/nothing/here", Some(&c), None).await;
    assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{}", r.text);
    let r = f.call("PUT", "/api/v1/vaults", Some(&c), None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text);
    assert_eq!(r.body["code"], "method_not_allowed");
    // malformed JSON, a wrong type, an unknown field
    let req = Request::post(f.path("/api/v1/vaults/{vault}/policies"))
        .header(header::AUTHORIZATION, format!("Bearer {c}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"name\": \"x\","))
        .expect("request");
    let r = f.send(req).await;
    assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")), "{}", r.text);
    let r = f
        .call("POST", "/api/v1/vaults/{vault}/policies", Some(&c), Some(json!({"name": "x", "daily_keep": "ten"})))
        .await;
    assert_eq!((r.status, r.body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("daily_keep")), "{}", r.text);
    let r = f
        .call("POST", "/api/v1/vaults/{vault}/policies", Some(&c), Some(json!({"name": "x", "times": ["25:00"]})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.body["field"].as_str().is_some_and(|f| f.contains("times")), "{}", r.text);
    assert!(!r.text.contains("--"), "no CLI flag in an API error: {}", r.text);
    let r = f.call("GET", "/api/v1/vaults/{vault}/policies", Some(&c), None).await;
    assert!(!r.text.contains("\"x\""), "nothing was created: {}", r.text);
    // not JSON at all
    let req = Request::post(f.path("/api/v1/vaults/{vault}/policies"))
        .header(header::AUTHORIZATION, format!("Bearer {c}"))
        .body(Body::from("name=x"))
        .expect("request");
    assert_eq!(f.send(req).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // too large
    let huge = json!({"name": "x".repeat(2 << 20)});
    let r = f.call("POST", "/api/v1/vaults/{vault}/policies", Some(&c), Some(huge)).await;
    assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
    // a retain-until date in the past
    let r = f
        .call("POST", "/api/v1/vaults/{vault}/items/docs/backup", Some(&c), Some(json!({"retain_until": "2001-01-01"})))
        .await;
    assert_eq!((r.status, r.body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("retain_until")), "{}", r.text);
    // an unknown item and policy
    let r = f.call("GET", "/api/v1/vaults/{vault}/items/nope", Some(&c), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(r.body["remedy"]["action"], "list-items", "{}", r.text);
    let r =
        f.call("POST", "/api/v1/vaults/{vault}/items/docs/protection", Some(&c), Some(json!({"policy": "nope"}))).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    // an unknown vault
    let r = f.call("GET", "/api/v1/vaults/elsewhere/items", Some(&c), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_outside_the_allowed_folders_are_refused() {
    let f = fixture();
    let c = f.token(C).to_string();
    let job = backup(&f, &c, "docs").await;
    assert_eq!(job["state"], "Completed", "{job}");
    let outside = f.dir.path().join("elsewhere");
    let sneaky = f.restores.join("../elsewhere");
    std::os::unix::fs::symlink(&outside, f.restores.join("link")).expect("symlink");
    let through_link = f.restores.join("link/x");
    for target in [outside.clone(), sneaky, through_link, "relative/path".into(), "/etc".into()] {
        let body = json!({"point": "latest", "target": target});
        let r = f.call("POST", "/api/v1/vaults/{vault}/items/docs/restore", Some(&c), Some(body)).await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("target")),
            "{target:?}: {}",
            r.text
        );
    }
    assert!(!outside.exists(), "nothing was written outside");
    let body = json!({"point": "ffffffff", "target": f.restores.join("x")});
    let r = f.call("POST", "/api/v1/vaults/{vault}/items/docs/restore", Some(&c), Some(body)).await;
    assert_eq!((r.status, r.body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("point")), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_sessions_need_their_csrf_token_to_change_anything() {
    let f = fixture();
    let login = json!({"token": f.token(C)});
    let r = f.call("POST", "/api/v1/login", None, Some(login)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let cookie = r.headers[header::SET_COOKIE].to_str().expect("cookie").to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().expect("pair").to_string();
    let csrf = r.body["csrf"].as_str().expect("csrf").to_string();
    let with_cookie = |method: &str, path: &str, csrf: Option<&str>| {
        let mut req = Request::builder()
            .method(method)
            .uri(f.path(path))
            .header(header::COOKIE, session.clone())
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        req.body(Body::from(json!({"name": "from-portal", "times": ["03:00"], "daily_keep": 7}).to_string()))
            .expect("request")
    };
    // reading needs the cookie only
    assert_eq!(f.send(with_cookie("GET", "/api/v1/vaults/{vault}/items", None)).await.status, StatusCode::OK);
    // changing needs the CSRF token too
    let r = f.send(with_cookie("POST", "/api/v1/vaults/{vault}/policies", None)).await;
    assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::FORBIDDEN, Some("csrf")), "{}", r.text);
    let r = f.send(with_cookie("POST", "/api/v1/vaults/{vault}/policies", Some("forged"))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = f.send(with_cookie("POST", "/api/v1/vaults/{vault}/policies", Some(&csrf))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // after logout the cookie opens nothing
    let out = Request::post("/api/v1/logout").header(header::COOKIE, session.clone()).body(Body::empty()).expect("req");
    assert_eq!(f.send(out).await.status, StatusCode::NO_CONTENT);
    assert_eq!(f.send(with_cookie("GET", "/api/v1/vaults/{vault}/items", None)).await.status, StatusCode::UNAUTHORIZED);
    // a bad token does not log in
    let r = f.call("POST", "/api/v1/login", None, Some(json!({"token": "bvd_nope"}))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.headers.get(header::SET_COOKIE).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_created_through_the_api_is_served_and_managed_by_its_creator() {
    let f = fixture();
    let c = f.token(C).to_string();
    let name = format!("{}-new", f.name);
    let store = f.dir.path().join("second");
    let r = f.call("POST", "/api/v1/vaults", Some(&c), Some(json!({"name": name, "store": store}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.body["name"], name.as_str());
    let r = f.call("GET", &format!("/api/v1/vaults/{name}/items"), Some(&c), None).await;
    assert_eq!((r.status, r.body.clone()), (StatusCode::OK, json!([])), "{}", r.text);
    let r = f.call("GET", "/api/v1/vaults", Some(&c), None).await;
    assert_eq!(r.body.as_array().map(Vec::len), Some(2), "{}", r.text);
    // others' tokens of the first vault have no access to it: it looks absent
    let r = f.call("GET", &format!("/api/v1/vaults/{name}/items"), Some(f.token("Reader")), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(r.body["message"], format!("no vault {name:?} is served here"), "{}", r.text);
    // a bad name is a field error
    let r = f.call("POST", "/api/v1/vaults", Some(&c), Some(json!({"name": "bad name!", "store": store}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_jobs_and_last_successful_backups() {
    let f = fixture();
    let c = f.token(C).to_string();
    assert_eq!(f.call("GET", "/metrics", None, None).await.status, StatusCode::UNAUTHORIZED);
    backup(&f, &c, "docs").await;
    let r = f.call("GET", "/metrics", Some(&c), None).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = &f.name;
    assert!(
        r.text.contains(&format!("boveda_jobs{{vault=\"{v}\",operation=\"Backup\",state=\"Completed\"}} 1")),
        "{}",
        r.text
    );
    assert!(
        r.text.contains(&format!("boveda_last_successful_backup_timestamp_seconds{{vault=\"{v}\",item=\"docs\"}}"))
    );
    assert!(r.text.contains("boveda_store_requests_total"));
    assert!(r.text.contains("# TYPE boveda_job_duration_seconds summary"));
    // a scoped token sees no vault-wide figures
    let r = f.call("GET", "/metrics", Some(f.token("Reader/docs")), None).await;
    assert!(!r.text.contains("boveda_jobs{"), "{}", r.text);
}

#[test]
fn the_openapi_document_in_docs_is_the_one_served() {
    let served = serde_json::to_string_pretty(&boveda_server::openapi_document()).expect("json") + "\n";
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var_os("BOVEDA_UPDATE_OPENAPI").is_some() {
        std::fs::write(&file, &served).expect("write docs/openapi.json");
    }
    let kept = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        kept == served,
        "docs/openapi.json differs from the served document: run BOVEDA_UPDATE_OPENAPI=1 cargo test -p boveda-server --test api"
    );
    let doc = boveda_server::openapi_document();
    for spec in boveda_server::route_specs() {
        assert!(
            doc["paths"][spec.path][spec.method.as_str().to_ascii_lowercase()].is_object(),
            "{} {}",
            spec.method,
            spec.path
        );
    }
}

/// Regression: two threads registering vaults at once wrote the same
/// temporary file, and one creation failed with "No such file or
/// directory" (or one registration was lost).
#[test]
fn vaults_created_at_once_are_all_registered() {
    let f = fixture();
    let names: Vec<String> = (0..8).map(|i| format!("{}-at-once-{i}", f.name)).collect();
    std::thread::scope(|s| {
        for name in &names {
            let store = f.dir.path().join(name);
            s.spawn(move || {
                let req = boveda_service::NewVault {
                    name: name.clone(),
                    store: store.display().to_string(),
                    location: "local".into(),
                    redundancy: "lrs".into(),
                    secondary: None,
                    pack_size_mib: 1,
                    compression_level: 3,
                    kdf: boveda_service::KdfParams::TESTING,
                    create_container: false,
                    object_lock: None,
                    lock_margin_days: None,
                };
                boveda_service::create_vault(&req, common::PASS).expect("created");
            });
        }
    });
    let registry = boveda_service::Registry::load().expect("registry");
    for name in &names {
        assert!(registry.find(name).is_some(), "{name} is registered");
    }
}

/// A client that sends its headers and never its whole body is answered
/// with 408 when the request time is up, over a real socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_never_finishes_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture_with(|c| c.request_timeout = std::time::Duration::from_secs(1));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = boveda_server::router(f.app.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(boveda_server::serve(listener, router, async move {
        let _ = rx.await;
    }));
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\":",
        f.path("/api/v1/vaults/{vault}/policies"),
        f.token(C)
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut answer))
        .await
        .expect("answered before 10 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"timeout\""), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let _ = tx.send(());
    server.await.expect("join").expect("served");
}

/// The id of a completed backup job.
async fn done_job_id(f: &Fixture, token: &str) -> String {
    let r = f.call("GET", "/api/v1/vaults/{vault}/jobs?operation=Backup&state=Completed", Some(token), None).await;
    r.body[0]["id"].as_str().expect("a completed backup").to_string()
}

/// Each endpoint the workflow test does not take, doing its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_other_endpoint_does_its_work() {
    let f = fixture();
    let c = f.token(C).to_string();
    let get = |path: String| {
        let c = c.clone();
        let f = &f;
        async move {
            let r = f.call("GET", &path, Some(&c), None).await;
            assert_eq!(r.status, StatusCode::OK, "GET {path}: {}", r.text);
            r.body
        }
    };
    // the vault's summary
    let summary = get("/api/v1/vaults/{vault}".into()).await;
    assert_eq!(summary["name"], f.name.as_str());
    assert_eq!(summary["items"], 2);
    // items of each kind; a bad kind names the field
    let disk = f.dir.path().join("disk.raw");
    std::fs::write(&disk, vec![7u8; 1 << 20]).expect("disk");
    let vms = f.dir.path().join("vms");
    std::fs::create_dir_all(&vms).expect("vms");
    let vm_disk = f.dir.path().join("vm.raw");
    std::fs::write(&vm_disk, vec![1u8; 1 << 20]).expect("vm disk");
    std::fs::write(
        vms.join("web.xml"),
        format!(
            "<domain type='kvm'><name>web</name><devices><disk type='file' device='disk'>\
             <driver name='qemu' type='raw'/><source file='{}'/><target dev='vda'/></disk></devices></domain>",
            vm_disk.display()
        ),
    )
    .expect("definition");
    let found = get(format!("/api/v1/vaults/{{vault}}/discover?dir={}", vms.display())).await;
    assert_eq!(found[0]["domain"], "web", "{found}");
    assert!(found[0]["item"].is_null());
    for body in [
        json!({"kind": "disk", "name": "img", "path": disk}),
        json!({"kind": "vm", "name": "web", "definition": vms.join("web.xml")}),
    ] {
        let r = f.call("POST", "/api/v1/vaults/{vault}/items", Some(&c), Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }
    let r = f.call("POST", "/api/v1/vaults/{vault}/items", Some(&c), Some(json!({"kind": "tape", "name": "t"}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let found = get(format!("/api/v1/vaults/{{vault}}/discover?dir={}", vms.display())).await;
    assert_eq!(found[0]["item"], "web", "discovery names the item protecting it: {found}");
    // a point of the disk item, shown by id
    let job = backup(&f, &c, "img").await;
    assert_eq!(job["state"], "Completed", "{job}");
    let point = job["point"].as_str().expect("point").to_string();
    let shown = get(format!("/api/v1/vaults/{{vault}}/items/img/points/{}", &point[..8])).await;
    assert_eq!(shown["point"]["id"], point.as_str());
    // policies: a change planned, then made; an unused one deleted
    let p = json!({"name": "weekly", "times": ["03:00"], "daily_keep": 7});
    assert_eq!(f.call("POST", "/api/v1/vaults/{vault}/policies", Some(&c), Some(p)).await.status, StatusCode::CREATED);
    let change = json!({"daily_keep": 9});
    let r =
        f.call("PATCH", "/api/v1/vaults/{vault}/policies/weekly?dry_run=true", Some(&c), Some(change.clone())).await;
    assert_eq!(
        (r.status, r.body["policy"]["retention"]["daily_days"].as_u64()),
        (StatusCode::OK, Some(9)),
        "{}",
        r.text
    );
    assert_eq!(
        get("/api/v1/vaults/{vault}/policies/weekly".into()).await["retention"]["daily_days"],
        7,
        "a dry run changes nothing"
    );
    let r = f.call("PATCH", "/api/v1/vaults/{vault}/policies/weekly", Some(&c), Some(change)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(get("/api/v1/vaults/{vault}/policies/weekly".into()).await["retention"]["daily_days"], 9);
    let r = f.call("DELETE", "/api/v1/vaults/{vault}/policies/weekly", Some(&c), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = f.call("GET", "/api/v1/vaults/{vault}/policies/weekly", Some(&c), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // protection: enable, soft-delete the data, undelete, resume
    let item = "/api/v1/vaults/{vault}/items/img";
    let policy = json!({"policy": "DefaultPolicy"});
    let r = f.call("POST", &format!("{item}/protection"), Some(&c), Some(policy.clone())).await;
    assert_eq!(r.body["protection"]["state"], "protected", "{}", r.text);
    let r = f.call("DELETE", &format!("{item}/protection?delete_data=true"), Some(&c), None).await;
    assert_eq!(r.body["protection"]["state"], "soft-deleted", "{}", r.text);
    let r = f.call("POST", &format!("{item}/backup"), Some(&c), Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "no backup of soft-deleted data: {}", r.text);
    assert_eq!(r.body["remedy"]["action"], "undelete", "{}", r.text);
    let r = f.call("POST", &format!("{item}/protection/undelete"), Some(&c), None).await;
    assert_eq!(r.body["protection"]["state"], "stopped", "{}", r.text);
    let r = f.call("POST", &format!("{item}/protection/resume"), Some(&c), Some(policy)).await;
    assert_eq!(r.body["protection"]["state"], "protected", "{}", r.text);
    // the soft delete raised an alert
    let alerts = get("/api/v1/vaults/{vault}/alerts".into()).await;
    assert!(alerts.as_array().is_some_and(|a| a.iter().any(|x| x["operation"] == "DeleteBackupData")), "{alerts}");
    // stop a running job: the record of one another process runs
    let running = f.running_job_like(job);
    let r = f.call("POST", &format!("/api/v1/vaults/{{vault}}/jobs/{running}/stop"), Some(&c), None).await;
    assert_eq!((r.status, r.body["state"].as_str()), (StatusCode::OK, Some("Cancelling")), "{}", r.text);
    let completed = done_job_id(&f, &c).await;
    let r = f.call("POST", &format!("/api/v1/vaults/{{vault}}/jobs/{completed}/stop"), Some(&c), None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "a job that ended cannot be stopped: {}", r.text);
    // filters of the job list
    let done = get("/api/v1/vaults/{vault}/jobs?operation=Backup&state=Completed&item=img".into()).await;
    assert_eq!(done.as_array().map(Vec::len), Some(1), "{done}");
    let r = f.call("GET", "/api/v1/vaults/{vault}/jobs?state=Sleeping", Some(&c), None).await;
    assert_eq!((r.status, r.body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("state")), "{}", r.text);
    // usage and import jobs
    let usage = get("/api/v1/vaults/{vault}/usage".into()).await;
    assert!(usage["stored_bytes"].as_u64().is_some_and(|b| b > 0), "{usage}");
    assert_eq!(get("/api/v1/vaults/{vault}/imports".into()).await, json!([]));
}

/// A token revoked by another process (here: straight through the
/// service, as `boveda token revoke` does) is refused within seconds,
/// without any change made through the server; one created there is
/// accepted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_changed_by_another_process_take_effect_within_seconds() {
    let f = fixture();
    let path = "/api/v1/vaults/{vault}/items";
    let req = boveda_service::NewToken { role: "Reader".into(), ..Default::default() };
    let (token, secret) = boveda_service::create_token(&f.vault, &req, f.clock.now(), "other").expect("token");
    assert_eq!(f.call("GET", path, Some(&secret), None).await.status, StatusCode::OK, "a new token works at once");
    boveda_service::revoke_token(&f.vault, &token.id.to_hex(), f.clock.now()).expect("revoke");
    let revoked = std::time::Instant::now();
    loop {
        let r = f.call("GET", path, Some(&secret), None).await;
        if r.status == StatusCode::UNAUTHORIZED {
            assert!(r.text.contains("revoked"), "{}", r.text);
            break;
        }
        assert!(revoked.elapsed() < std::time::Duration::from_secs(5), "still accepted 5 s after its revocation");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Issue 22, 8: an item-scoped token told "may not see item beta" (403)
/// from "not found" (404), so it could list every item's name by trying
/// id prefixes. Now both answers are the same, byte for byte but the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_scoped_token_cannot_tell_other_items_from_missing_ones() {
    let f = fixture();
    let scoped = f.token("Reader/docs").to_string();
    let other = f.call("GET", "/api/v1/vaults/{vault}/items/other", Some(&scoped), None).await;
    let missing = f.call("GET", "/api/v1/vaults/{vault}/items/nosuch", Some(&scoped), None).await;
    assert_eq!(other.status, missing.status);
    assert_eq!(other.text.replace("other", "X"), missing.text.replace("nosuch", "X"));
    // by id prefix too
    let all = f.call("GET", "/api/v1/vaults/{vault}/items", Some(f.token("Reader")), None).await;
    let entry =
        all.body.as_array().expect("items").iter().find(|i| i["name"] == "other" || i["item"]["name"] == "other");
    let entry = entry.expect("other");
    let other_id = entry["id"].as_str().or_else(|| entry["item"]["id"].as_str()).expect("id").to_string();
    let by_id = f.call("GET", &format!("/api/v1/vaults/{{vault}}/items/{}", &other_id[..8]), Some(&scoped), None).await;
    assert_eq!(by_id.status, StatusCode::NOT_FOUND, "{}", by_id.text);
    assert!(!by_id.text.contains("\"other\""), "{}", by_id.text);
}

/// Issue 22, 7: bad input is refused before any job exists, in JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_bad_paths_and_media_types_are_refused_before_any_job() {
    let f = fixture();
    let op = f.token("Operator").to_string();
    let jobs_before = f.call("GET", "/api/v1/vaults/{vault}/jobs", Some(&op), None).await.body.as_array().map(Vec::len);
    let nul_target = format!("{}/x\u{0}y", f.restores.display());
    for (body, field) in [
        (json!({"point": "latest", "target": nul_target}), "target"),
        (json!({"point": "latest", "target": f.restores.join("ok"), "paths": ["/a\u{0}b"]}), "paths"),
    ] {
        let r = f.call("POST", "/api/v1/vaults/{vault}/items/docs/restore", Some(&op), Some(body)).await;
        assert_eq!((r.status, r.body["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{}", r.text);
    }
    let jobs_after = f.call("GET", "/api/v1/vaults/{vault}/jobs", Some(&op), None).await.body.as_array().map(Vec::len);
    assert_eq!(jobs_before, jobs_after, "no job was started");
    let alerts = f.call("GET", "/api/v1/vaults/{vault}/alerts", Some(&op), None).await;
    assert_eq!(alerts.body.as_array().map(Vec::len), Some(0), "no alert raised: {}", alerts.text);
    // invalid UTF-8 (and NUL) in a path parameter: JSON like any error
    for path in ["/api/v1/vaults/{vault}/items/%FF%FE", "/api/v1/vaults/{vault}/items/a%00b"] {
        let r = f.call("GET", path, Some(&op), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(r.body["code"], "invalid_request", "{}", r.text);
    }
    // media types: exact, in any case
    for (ct, ok) in [("application/jsonfoo", false), ("APPLICATION/JSON; charset=utf-8", true), ("text/json", false)] {
        let req = axum::http::Request::builder()
            .method("POST")
            .uri(f.path("/api/v1/vaults/{vault}/policies"))
            .header(header::AUTHORIZATION, format!("Bearer {}", f.token(C)))
            .header(header::CONTENT_TYPE, ct)
            .body(Body::from(
                json!({"name": format!("p{}", ct.len()), "times": ["01:00"], "daily_keep": 7}).to_string(),
            ))
            .expect("request");
        let r = f.send(req).await;
        if ok {
            assert_eq!(r.status, StatusCode::CREATED, "{ct}: {}", r.text);
        } else {
            assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}: {}", r.text);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_settings_change_through_the_api_and_a_lock_is_for_good() {
    let f = fixture();
    let c = f.token(C).to_string();
    let patch = |body: Value| {
        let (f, c) = (&f, c.clone());
        async move { f.call("PATCH", "/api/v1/vaults/{vault}/settings", Some(&c), Some(body)).await }
    };
    let r = patch(json!({"soft_delete_days": 30, "immutability": "enabled"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!((r.body["soft_delete_days"].as_u64(), r.body["immutability"].as_str()), (Some(30), Some("enabled")));
    // what protects points is not weakened, and the refusal names why
    let r = patch(json!({"soft_delete_days": 14})).await;
    assert!(r.status.is_client_error() && r.text.contains("the vault's immutability is enabled"), "{}", r.text);
    // locked: only with the vault's name, then never undone
    let r = patch(json!({"immutability": "locked"})).await;
    assert!(r.status.is_client_error() && r.text.contains("confirm"), "{}", r.text);
    let r = patch(json!({"immutability": "locked", "confirm": f.name})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = patch(json!({"immutability": "disabled"})).await;
    assert!(r.status.is_client_error() && r.text.contains("immutability is locked"), "{}", r.text);
    let r = patch(json!({"immutability": "sometimes"})).await;
    assert!(r.status.is_client_error() && r.text.contains("immutability"), "{}", r.text);
    assert_eq!(f.call("GET", "/api/v1/vaults/{vault}", Some(&c), None).await.body["immutability"], "locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_approves_through_the_api_and_its_token_does_nothing_else() {
    use boveda_service::guard::{GuardKey, RequestCode, create_guard, sign_approval};
    use jiff::SignedDuration;
    let f = fixture();
    let (c, s) = (f.token(C).to_string(), f.token("SecurityAdmin").to_string());
    let pass = "the guard's own passphrase";
    let key = create_guard(pass).expect("guard");
    let r = f
        .call("PUT", "/api/v1/vaults/{vault}/guard", Some(&c), Some(json!({"guard": key.encode(), "name": "sec"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let patch = |body: Value| {
        let (f, c) = (&f, c.clone());
        async move { f.call("PATCH", "/api/v1/vaults/{vault}/settings", Some(&c), Some(body)).await }
    };
    assert_eq!(patch(json!({"immutability": "enabled"})).await.status, StatusCode::OK);
    let r = patch(json!({"immutability": "disabled"})).await;
    assert_eq!((r.status, r.body["code"].as_str()), (StatusCode::FORBIDDEN, Some("approval_needed")), "{}", r.text);
    let request = r.body["remedy"]["request"].as_str().expect("request id").to_string();

    // the guard's token sees the guard and nothing else of the vault
    for path in ["/api/v1/vaults/{vault}/items", "/api/v1/vaults/{vault}", "/api/v1/vaults/{vault}/jobs"] {
        assert_eq!(f.call("GET", path, Some(&s), None).await.status, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(patch(json!({})).await.status, StatusCode::OK);
    let r =
        f.call("PATCH", "/api/v1/vaults/{vault}/settings", Some(&s), Some(json!({"immutability": "disabled"}))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let view = f.call("GET", "/api/v1/vaults/{vault}/guard", Some(&s), None).await;
    let shown = &view.body["requests"][0];
    assert_eq!(
        (shown["id"].as_str(), shown["state"].as_str()),
        (Some(request.as_str()), Some("Pending")),
        "{}",
        view.text
    );
    let code = RequestCode::decode(shown["code"].as_str().expect("code")).expect("decode");
    assert!(code.operation.describe().contains("immutability enabled to disabled"));

    let approve = |who: String, body: Value| {
        let (f, request) = (&f, request.clone());
        async move {
            let path = format!("/api/v1/vaults/{{vault}}/guard/requests/{request}/approve");
            f.call("POST", &path, Some(&who), Some(body)).await
        }
    };
    let now = f.clock.now();
    let signed =
        sign_approval(&code, &GuardKey::parse(&key.encode()).expect("key"), pass, SignedDuration::from_hours(4), now)
            .expect("sign");
    // the admin's token cannot submit the guard's approval, even a signed one
    let r = approve(c.clone(), json!({"approval": signed.encode().expect("code")})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    // a signature of another key, or of another expiry, is refused
    let other = create_guard("somebody else entirely").expect("other");
    let mut forged = code.clone();
    forged.guard = other.id;
    let wrong =
        sign_approval(&forged, &other, "somebody else entirely", SignedDuration::from_hours(4), now).expect("sign");
    let r = approve(s.clone(), json!({"expires": wrong.expires, "signature": wrong.signature})).await;
    assert!(r.status == StatusCode::BAD_REQUEST && r.text.contains("not signed by guard sec"), "{}", r.text);
    let later = signed.expires + SignedDuration::from_hours(1);
    let r = approve(s.clone(), json!({"expires": later, "signature": signed.signature})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let r = approve(s.clone(), json!({"approval": signed.encode().expect("code")})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["requests"][0]["state"], "Approved");
    // the admin runs it again: once
    assert_eq!(patch(json!({"immutability": "disabled"})).await.status, StatusCode::OK);
    assert_eq!(f.call("GET", "/api/v1/vaults/{vault}", Some(&c), None).await.body["immutability"], "disabled");
    assert_eq!(patch(json!({"immutability": "enabled"})).await.status, StatusCode::OK);
    let r = patch(json!({"immutability": "disabled"})).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "replayed: {}", r.text);
    assert_ne!(r.body["remedy"]["request"].as_str(), Some(request.as_str()));
    let jobs = f.call("GET", "/api/v1/vaults/{vault}/jobs", Some(&c), None).await;
    let ops: Vec<&str> = jobs.body.as_array().expect("jobs").iter().filter_map(|j| j["operation"].as_str()).collect();
    for op in ["GuardRequest", "GuardApproval", "GuardUse"] {
        assert!(ops.contains(&op), "{op} in {ops:?}");
    }
}

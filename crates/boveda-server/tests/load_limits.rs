//! Issue 22, 4, 5, 6 and 9: what one client can make the server do. The
//! dashboard and usage report (which walk every point's trees) are shared
//! between requests and survive a damaged tree; jobs started through the
//! API beyond a per-vault limit wait `Queued`; sessions and event streams
//! are bounded per token.

mod common;

use std::collections::HashSet;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::fixture;
use serde_json::json;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_beyond_the_vaults_limit_wait_queued_and_all_complete() {
    let f = fixture();
    let op = f.token("Operator").to_string();
    let docs = f.dir.path().join("docs");
    for i in 0..300 {
        std::fs::write(docs.join(format!("f{i:03}")), format!("file {i}\n").repeat(200)).expect("write");
    }
    let r = f.call("POST", "/api/v1/vaults/{vault}/items/docs/backup", Some(&op), Some(json!({}))).await;
    f.wait_job(r.body["id"].as_str().expect("id"), &op).await;
    // eight restores at once
    let mut ids = Vec::new();
    let mut states = Vec::new();
    for i in 0..8 {
        let body = json!({"point": "latest", "target": f.restores.join(format!("r{i}"))});
        let r = f.call("POST", "/api/v1/vaults/{vault}/items/docs/restore", Some(&op), Some(body)).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        states.push(r.body["state"].as_str().expect("state").to_string());
        ids.push(r.body["id"].as_str().expect("id").to_string());
    }
    assert!(states.iter().any(|s| s == "Queued"), "some wait their turn: {states:?}");
    // never more than the limit running at once
    let mut most = 0;
    loop {
        let r = f.call("GET", "/api/v1/vaults/{vault}/jobs?operation=Restore", Some(&op), None).await;
        let jobs = r.body.as_array().expect("jobs").clone();
        let mine: Vec<_> = jobs.iter().filter(|j| ids.iter().any(|id| j["id"] == id.as_str())).collect();
        let running = mine.iter().filter(|j| j["state"] == "InProgress").count();
        most = most.max(running);
        if mine.len() == ids.len() && mine.iter().all(|j| j["state"] == "Completed") {
            break;
        }
        assert!(mine.iter().all(|j| j["state"] != "Failed"), "{mine:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(most <= boveda_service::DEFAULT_JOBS_PER_VAULT, "{most} ran at once");
    for i in 0..8 {
        let back = f.restores.join(format!("r{i}")).join(docs.strip_prefix("/").expect("abs")).join("f123");
        assert_eq!(std::fs::read(&back).expect("restored"), "file 123\n".repeat(200).into_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_can_be_stopped() {
    let slots = boveda_service::JobSlots::new(1);
    let mine = slots.clone();
    let f = common::fixture_with(move |c| c.jobs.slots = mine);
    let op = f.token("Operator").to_string();
    // the vault's one slot is busy
    let lane = f.vault.store().location();
    let busy = {
        let s = slots.clone();
        tokio::task::spawn_blocking(move || s.occupy(&lane)).await.expect("slot")
    };
    let r = f.call("POST", "/api/v1/vaults/{vault}/items/docs/backup", Some(&op), Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["state"], "Queued", "{}", r.text);
    let queued = r.body["id"].as_str().expect("id").to_string();
    let listed = f.call("GET", "/api/v1/vaults/{vault}/jobs?state=Queued", Some(&op), None).await;
    assert!(listed.text.contains(&queued), "visible while it waits: {}", listed.text);
    let r = f.call("POST", &format!("/api/v1/vaults/{{vault}}/jobs/{queued}/stop"), Some(&op), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let job = f.wait_job(&queued, &op).await;
    assert_eq!(job["state"], "Cancelled", "{job}");
    // once the slot is free, the next job runs
    let r = f.call("POST", "/api/v1/vaults/{vault}/items/docs/backup", Some(&op), Some(json!({}))).await;
    let next = r.body["id"].as_str().expect("id").to_string();
    drop(busy);
    assert_eq!(f.wait_job(&next, &op).await["state"], "Completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_event_streams_are_bounded_per_token() {
    let f = fixture();
    let reader = f.token("Reader").to_string();
    // sessions: logins beyond the limit end the oldest
    let mut cookies = Vec::new();
    for _ in 0..(boveda_server::MAX_SESSIONS_PER_TOKEN + 4) {
        let r = f.call("POST", "/api/v1/login", None, Some(json!({"token": reader}))).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let cookie =
            r.headers[header::SET_COOKIE].to_str().expect("cookie").split(';').next().expect("pair").to_string();
        cookies.push(cookie);
    }
    let with = |cookie: &str| {
        Request::builder()
            .uri(f.path("/api/v1/vaults/{vault}/items"))
            .header(header::COOKIE, cookie)
            .body(Body::empty())
            .expect("request")
    };
    assert_eq!(f.send(with(&cookies[0])).await.status, StatusCode::UNAUTHORIZED, "the oldest session ended");
    assert_eq!(f.send(with(cookies.last().expect("newest"))).await.status, StatusCode::OK);

    // event streams: one token holds at most its share
    let c = f.token("Contributor").to_string();
    let r = f.call("POST", "/api/v1/vaults/{vault}/items/docs/backup", Some(&c), Some(json!({}))).await;
    let ended = f.wait_job(r.body["id"].as_str().expect("id"), &c).await;
    let running = f.running_job_like(ended);
    let open = |token: &str| {
        Request::builder()
            .uri(f.path(&format!("/api/v1/vaults/{{vault}}/jobs/{running}/events")))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request")
    };
    let mut held = Vec::new();
    for _ in 0..16 {
        let resp = f.router.clone().oneshot(open(&reader)).await.expect("answer");
        assert_eq!(resp.status(), StatusCode::OK);
        held.push(resp); // the stream stays open while its body is held
    }
    let resp = f.router.clone().oneshot(open(&reader)).await.expect("answer");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key(header::RETRY_AFTER));
    // another token still gets one
    let other = f.router.clone().oneshot(open(&c)).await.expect("answer");
    assert_eq!(other.status(), StatusCode::OK);
    drop(held);
    let again = f.router.clone().oneshot(open(&reader)).await.expect("answer");
    assert_eq!(again.status(), StatusCode::OK, "a stream closed gives its place back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_usage_are_shared_and_survive_a_damaged_tree() {
    let f = fixture();
    let c = f.token("Contributor").to_string();
    let reader = f.token("Reader").to_string();
    let r = f.call("POST", "/api/v1/vaults/{vault}/items/docs/backup", Some(&c), Some(json!({}))).await;
    f.wait_job(r.body["id"].as_str().expect("id"), &c).await;
    // many readers at once: all answered, with one report
    let mut tasks = Vec::new();
    for i in 0..64 {
        let router = f.router.clone();
        let path = f.path(if i % 2 == 0 { "/api/v1/vaults/{vault}/usage" } else { "/api/v1/vaults/{vault}/dashboard" });
        let token = reader.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::builder()
                .uri(path)
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .expect("request");
            let resp = router.oneshot(req).await.expect("answer");
            let status = resp.status();
            let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
            (i % 2, status, bytes)
        }));
    }
    let mut bodies: [HashSet<Vec<u8>>; 2] = [HashSet::new(), HashSet::new()];
    for t in tasks {
        let (kind, status, bytes) = t.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        bodies[kind].insert(bytes.to_vec());
    }
    assert!(bodies.iter().all(|b| b.len() <= 2), "one shared report each (a refresh at most)");

    // 9: a damaged tree pack: both still answer, naming what they skipped,
    // on a server that had not read it before
    let trees = f.dir.path().join("store/packs/tree");
    let mut packs = Vec::new();
    for sub in std::fs::read_dir(&trees).expect("tree packs") {
        for p in std::fs::read_dir(sub.expect("dir").path()).expect("packs") {
            packs.push(p.expect("pack").path());
        }
    }
    for p in &packs {
        let mut bytes = std::fs::read(p).expect("read");
        for b in bytes.iter_mut().take(64) {
            *b ^= 0xff;
        }
        std::fs::write(p, bytes).expect("damage");
    }
    let fresh = common::fixture_on(&f);
    for path in ["/api/v1/vaults/{vault}/usage", "/api/v1/vaults/{vault}/dashboard"] {
        let r = fresh.call("GET", path, Some(&reader), None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert!(r.body["warnings"].to_string().contains("cannot be read"), "{path}: {}", r.text);
    }
}

//! Issue 22, 1: a restore through the API followed a symbolic link that a
//! second restore, running at the same time, put on its way: an Operator
//! wrote 40 000 files outside the restore root with nothing but the API.
//! Two restores race here on every attempt, started in both orders.

mod common;

use axum::http::StatusCode;
use common::fixture;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_restored_by_another_restore_never_leads_a_restore_out_of_its_root() {
    let f = fixture();
    let op = f.token("Operator").to_string();
    let docs = f.dir.path().join("docs");
    for d in 0..20 {
        let dir = docs.join(format!("many/d{d:02}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for i in 0..100 {
            std::fs::write(dir.join(format!("f{i:03}")), format!("file {d} {i}\n")).expect("write");
        }
    }
    let outside = f.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    let other = f.dir.path().join("other");
    std::os::unix::fs::symlink(&outside, other.join("door")).expect("symlink");
    for item in ["docs", "other"] {
        let r =
            f.call("POST", &format!("/api/v1/vaults/{{vault}}/items/{item}/backup"), Some(&op), Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
        let job = f.wait_job(r.body["id"].as_str().expect("id"), &op).await;
        assert_eq!(job["state"], "Completed", "{job}");
    }
    let rel_other = other.strip_prefix("/").expect("absolute");
    for attempt in 0..8 {
        let x = f.restores.join(format!("x{attempt}"));
        let through_door = x.join(rel_other).join("door/pwn");
        let link_restore = json!({"point": "latest", "target": x});
        let docs_restore = json!({"point": "latest", "target": through_door});
        let order = if attempt % 2 == 0 {
            [("other", link_restore), ("docs", docs_restore)]
        } else {
            [("docs", docs_restore), ("other", link_restore)]
        };
        let mut jobs = Vec::new();
        for (item, body) in order {
            let r =
                f.call("POST", &format!("/api/v1/vaults/{{vault}}/items/{item}/restore"), Some(&op), Some(body)).await;
            // a link already restored when the request comes is refused at once
            if r.status == StatusCode::BAD_REQUEST && item == "docs" {
                assert_eq!(r.body["field"], "target", "{}", r.text);
                continue;
            }
            assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
            jobs.push(r.body["id"].as_str().expect("id").to_string());
        }
        for id in jobs {
            let job = f.wait_job(&id, &op).await;
            assert_ne!(job["state"], "InProgress", "{job}");
        }
        let escaped: Vec<_> = std::fs::read_dir(&outside).expect("read_dir").collect();
        assert!(escaped.is_empty(), "attempt {attempt}: a restore wrote outside its root: {escaped:?}");
    }
}

//! A vault with S3 Object Lock against the S3 server: every object the
//! vault writes is locked in the bucket itself, packs and manifests past
//! their point's retention. A separate process holding the bucket's own
//! credentials (boto3) cannot delete a single version; what it hides
//! behind delete markers comes back once the markers are removed, and
//! the vault then checks clean and restores byte-exactly. A prune run with
//! its clock set ahead deletes nothing the store still locks.

use serde_json::Value;

use crate::common::{Env, StoreKind, noise};

fn python(script: &str, args: &[&str]) -> Value {
    let python = std::env::var("BOVEDA_TEST_S3_PYTHON").expect("BOVEDA_TEST_S3_PYTHON (scripts/stores.sh)");
    let out = std::process::Command::new(python).arg("-c").arg(script).args(args).output().expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

const PRELUDE: &str = r#"
import json, os, sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], config=Config(retries={"max_attempts": 1}))
bucket, prefix = sys.argv[1], sys.argv[2]
def versions():
    out, markers = [], []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        out += page.get("Versions", [])
        markers += page.get("DeleteMarkers", [])
    return out, markers
"#;

/// The attacker: deletes every version it can, then hides every object.
const ATTACK: &str = r#"
vs, _ = versions()
res = {"versions": len(vs), "deleted": [], "refused": 0, "data_locks": []}
for v in vs:
    key = v["Key"]
    if "/packs/" in key or "/points/" in key:
        h = s3.head_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])
        res["data_locks"].append(h["ObjectLockRetainUntilDate"].isoformat())
    try:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=v["VersionId"])
        res["deleted"].append(key)
    except Exception:
        res["refused"] += 1
for key in sorted({v["Key"] for v in vs}):
    s3.delete_object(Bucket=bucket, Key=key)
res["visible"] = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0)
print(json.dumps(res))
"#;

/// The recovery: the delete markers removed (the admin, with the bucket's keys).
const RECOVER: &str = r#"
_, ms = versions()
for m in ms:
    s3.delete_object(Bucket=bucket, Key=m["Key"], VersionId=m["VersionId"])
print(json.dumps({"markers": len(ms)}))
"#;

#[test]
fn an_object_locked_vault_survives_the_buckets_own_credentials_and_a_clock_set_ahead() {
    let env = Env::on(StoreKind::S3);
    let store = env.store.clone();
    let (bucket, prefix) = store.trim_start_matches("s3://").split_once('/').expect("bucket/prefix");
    env.ok(&[
        "vault",
        "create",
        "test-vault",
        "--store",
        &store,
        "--insecure-fast-kdf",
        "--pack-size-mib",
        "1",
        "--create-container",
        "--object-lock",
        "compliance",
        "--lock-margin-days",
        "1",
    ]);
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"kept in a locked bucket\n").expect("write");
    std::fs::write(src.join("sub/b.bin"), noise(7, 3 << 20)).expect("write");
    env.ok(&["item", "add", "files", "docs", "--path", src.to_str().expect("utf8")]);
    let until = (jiff::Zoned::now().date() + jiff::Span::new().days(3)).to_string();
    env.ok(&["protection", "backup-now", "docs", "--retain-until", &until]);
    let shown: Value = serde_json::from_str(&env.ok(&["--output", "json", "vault", "show"])).expect("json");
    assert!(shown["object_lock"].as_str().is_some_and(|l| l.starts_with("compliance")), "{shown}");

    let said = python(&format!("{PRELUDE}{ATTACK}"), &[bucket, prefix]);
    assert!(said["versions"].as_u64().is_some_and(|n| n > 5), "{said}");
    assert_eq!(said["deleted"], serde_json::json!([]), "the bucket's own keys deleted locked versions: {said}");
    assert_eq!(said["refused"], said["versions"]);
    assert_eq!(said["visible"], 0, "everything hidden behind delete markers");
    // packs and the manifest are locked past the point's retention
    for date in said["data_locks"].as_array().expect("locks") {
        let date = date.as_str().expect("date");
        assert!(&date[..10] > until.as_str(), "a pack or manifest locked only until {date} (retention {until})");
    }
    let hidden = env.run(&["recoverypoint", "list", "docs"]);
    assert!(!hidden.status.success(), "the vault is hidden until the markers go");

    let recovered = python(&format!("{PRELUDE}{RECOVER}"), &[bucket, prefix]);
    assert!(recovered["markers"].as_u64().is_some_and(|n| n > 5), "{recovered}");
    env.ok(&["vault", "check", "--read-data"]);
    let target = env.path("restored");
    env.ok(&["restore", "docs", "--target", target.to_str().expect("utf8")]);
    let restored = target.join(src.strip_prefix("/").expect("absolute"));
    assert_eq!(std::fs::read(restored.join("sub/b.bin")).expect("restored"), noise(7, 3 << 20));

    // just past the point's retention, within its margin: prune waits for
    // the lock and says so
    let past = (jiff::Zoned::now().date() + jiff::Span::new().days(4)).to_string() + "T06:00:00Z";
    let plan = env.cmd(&["prune", "--dry-run"]).env("BOVEDA_FAKE_NOW", &past).output().expect("dry run");
    let said = String::from_utf8_lossy(&plan.stdout);
    assert!(said.contains("locked in the store (Object Lock) until"), "{said}");
    // a clock set ahead past the point's retention: the store still locks it
    let ahead = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 10)).to_string();
    let pruned = env.cmd(&["prune", "--safety-margin", "0s"]).env("BOVEDA_FAKE_NOW", &ahead).output().expect("prune");
    let said = String::from_utf8_lossy(&pruned.stderr);
    assert!(!pruned.status.success() && said.contains("locked in the store"), "{said}");
    let points: Value =
        serde_json::from_str(&env.ok(&["--output", "json", "recoverypoint", "list", "docs"])).expect("json");
    assert_eq!(points.as_array().map(Vec::len), Some(1), "the point is still there");
    env.ok(&["vault", "check", "--read-data"]);
}

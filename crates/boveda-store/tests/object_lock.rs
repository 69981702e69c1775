//! S3 Object Lock against the S3 server: boveda locks an object and
//! extends the lock without rewriting it; then a separate process holding
//! the bucket's own credentials (boto3) tries to destroy it: deleting the
//! locked version is refused by the store, a plain delete only hides it
//! behind a delete marker, an overwrite only adds a version, and the
//! locked bytes stay readable.

use std::time::{Duration, SystemTime};

use boveda_store::{LockMode, ObjectLock, PutMode, Store, StoreOptions, create_locked_bucket, open_store_with};

fn unique(tag: &str) -> String {
    let mut raw = [0u8; 6];
    getrandom::fill(&mut raw).expect("random");
    format!("{tag}-{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn need_s3() {
    assert!(
        std::env::var_os("BOVEDA_TEST_S3").is_some(),
        "BOVEDA_TEST_S3 is not set: run the tests through scripts/test.sh (it starts the S3 server)"
    );
}

/// The attacker: a separate process with the bucket's credentials.
fn attack(bucket: &str, key: &str) -> serde_json::Value {
    let python = std::env::var("BOVEDA_TEST_S3_PYTHON").expect("BOVEDA_TEST_S3_PYTHON (scripts/stores.sh)");
    let script = r#"
import json, os, sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], config=Config(retries={"max_attempts": 1}))
bucket, key = sys.argv[1], sys.argv[2]
out = {"versions": [], "deleted": [], "refused": []}
for v in s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []):
    out["versions"].append(v["VersionId"])
for v in list(out["versions"]):
    try:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=v)
        out["deleted"].append(v)
    except Exception as e:
        out["refused"].append(str(e))
out["marker"] = bool(s3.delete_object(Bucket=bucket, Key=key).get("DeleteMarker"))
s3.put_object(Bucket=bucket, Key=key, Body=b"ransom note")
versions = s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
out["after"] = len(versions)
first = out["versions"][0]
out["locked_bytes"] = s3.get_object(Bucket=bucket, Key=key, VersionId=first)["Body"].read().decode()
print(json.dumps(out))
"#;
    let out = std::process::Command::new(python).args(["-c", script, bucket, key]).output().expect("run the attacker");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn a_locked_object_survives_the_buckets_own_credentials() {
    need_s3();
    let bucket = unique("locked");
    let url = format!("s3://{bucket}/vault");
    create_locked_bucket(&url).expect("a bucket with Object Lock");
    let store = open_store_with(&url, &StoreOptions::default()).expect("open");
    assert!(store.can_lock().expect("ask"), "the bucket has Object Lock");
    let name = "packs/data/ab/abcd";
    store.put(name, b"sealed pack bytes", PutMode::Create).expect("put");
    let soon = SystemTime::now() + Duration::from_secs(3600);
    assert!(store.lock_object(name, &ObjectLock { mode: LockMode::Compliance, until: soon }).expect("lock"));
    let later = soon + Duration::from_secs(86_400);
    assert!(store.lock_object(name, &ObjectLock { mode: LockMode::Compliance, until: later }).expect("extend"));
    let lock = store.object_lock(name).expect("read the lock").expect("locked");
    assert_eq!(lock.mode, LockMode::Compliance);
    let off = lock.until.duration_since(later).unwrap_or_else(|e| e.duration());
    assert!(off < Duration::from_secs(2), "locked until {:?}, asked {later:?}", lock.until);

    // boveda's own delete of the version itself is refused too
    let refused = store.delete_version(name).expect_err("a locked version deleted");
    assert_eq!(refused.kind(), boveda_store::StoreErrorKind::PermissionDenied, "{refused}");
    // an unlocked object's version really goes (no marker left over it)
    store.put("packs/data/cd/cdef", b"garbage", PutMode::Create).expect("put");
    store.delete_version("packs/data/cd/cdef").expect("delete the version");
    assert!(store.stat("packs/data/cd/cdef").is_err());

    let said = attack(&bucket, &format!("vault/{name}"));
    assert_eq!(said["versions"].as_array().map(Vec::len), Some(1), "extending rewrote nothing: {said}");
    assert_eq!(said["deleted"].as_array().map(Vec::len), Some(0), "the locked version was deleted: {said}");
    assert!(said["refused"][0].as_str().is_some_and(|e| e.contains("AccessDenied")), "{said}");
    assert_eq!(said["marker"], true);
    assert_eq!(said["after"], 2, "the overwrite added a version: {said}");
    assert_eq!(said["locked_bytes"], "sealed pack bytes");
}

#[test]
fn a_bucket_without_object_lock_says_so() {
    need_s3();
    let url = format!("s3://{}/vault", unique("plain"));
    let store =
        open_store_with(&url, &StoreOptions { create_container: true, ..StoreOptions::default() }).expect("open");
    assert!(!store.can_lock().expect("ask"));
}

/// A local folder locks with the file system's immutable attribute: as
/// root on a file system that has it, a locked file cannot be deleted by
/// another process (root's own `rm` included) until boveda lifts it;
/// without root, the folder says it cannot lock.
#[test]
fn a_local_folder_locks_with_the_immutable_attribute_only_as_root() {
    let dir = tempfile::tempdir().expect("dir");
    let local = boveda_store::LocalStore::new(dir.path().join("vault"));
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false);
    assert_eq!(local.can_lock().expect("ask"), root);
    if !root {
        return;
    }
    local.put("packs/data/ab/abcd", b"locked bytes", PutMode::Create).expect("put");
    let until = SystemTime::now() + Duration::from_secs(60);
    assert!(local.lock_object("packs/data/ab/abcd", &ObjectLock { mode: LockMode::Compliance, until }).expect("lock"));
    let path = dir.path().join("vault/packs/data/ab/abcd");
    let rm = std::process::Command::new("rm").arg("-f").arg(&path).output().expect("rm");
    assert!(!rm.status.success() && path.exists(), "root's rm deleted a locked file");
    local.delete_version("packs/data/ab/abcd").expect("boveda lifts its own lock to delete");
    assert!(!path.exists());
}

/// Azure Blob's version-level immutability, as far as the emulator goes:
/// Azurite answers the request with 501 (Not Implemented), so boveda's
/// request is shown to reach it and be refused as unsupported, and
/// nothing about Azure's enforcement is tested here.
#[test]
fn azurite_does_not_implement_immutability_policies() {
    assert!(
        std::env::var_os("BOVEDA_TEST_AZURITE").is_some(),
        "BOVEDA_TEST_AZURITE is not set: run the tests through scripts/test.sh"
    );
    let url = format!("azblob://{}/vault", unique("imm"));
    let store =
        open_store_with(&url, &StoreOptions { create_container: true, ..StoreOptions::default() }).expect("open");
    store.put("packs/data/ab/abcd", b"bytes", PutMode::Create).expect("put");
    let until = SystemTime::now() + Duration::from_secs(3600);
    let err =
        store.lock_object("packs/data/ab/abcd", &ObjectLock { mode: LockMode::Compliance, until }).expect_err("locked");
    assert_eq!(err.kind(), boveda_store::StoreErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("501"), "{err}");
}

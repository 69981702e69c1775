//! Create-only grants against the real stores: what a holder of a grant
//! (and nothing else) can and cannot do with it, as Azurite and the S3
//! server answer. Azurite checks a SAS's signature and permissions; the
//! moto S3 server does not check signatures at all, so on S3 these tests
//! show that the grant works and is create-only, and the unit tests in
//! `src/grant.rs` show what its signature covers (docs/FLEET.md).

use std::time::Duration;

use boveda_store::{CreateGrant, Store, StoreOptions, open_store_with};

fn unique(tag: &str) -> String {
    let mut raw = [0u8; 6];
    getrandom::fill(&mut raw).expect("random");
    format!("{tag}-{}", raw.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn remote(scheme: &str, var: &str) -> std::sync::Arc<dyn Store> {
    assert!(
        std::env::var_os(var).is_some(),
        "{var} is not set: run the tests through scripts/test.sh (it starts Azurite and the S3 server)"
    );
    let url = format!("{scheme}://{}/vault", unique("grant"));
    open_store_with(&url, &StoreOptions { create_container: true, ..StoreOptions::default() }).expect("open the store")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// Sends `body` as the grant says, with `url` in place of its own when
/// given, and headers left out when `drop` names them; the status.
fn send(grant: &CreateGrant, url: Option<&str>, body: &[u8], drop: &[&str]) -> u16 {
    let mut req = http::Request::put(url.unwrap_or(&grant.url));
    for (k, v) in &grant.headers {
        if !drop.contains(&k.as_str()) {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    let req = req.body(body.to_vec()).expect("request");
    agent().run(req).expect("the store answers").status().as_u16()
}

fn creates_once(store: &dyn Store) {
    let bytes = b"sealed pack bytes".to_vec();
    let grant = store.grant_create("packs/data/ab/abcd", bytes.len() as u64, Duration::from_secs(60)).expect("grant");
    let grant = grant.expect("a remote store grants");
    let status = send(&grant, None, &bytes, &[]);
    assert!((200..300).contains(&status), "the grant creates the object: {status}");
    assert_eq!(store.get("packs/data/ab/abcd").expect("stored"), bytes);
    let again = send(&grant, None, &b"other bytes, samelen!"[..17], &[]);
    assert!(matches!(again, 403 | 409 | 412), "the same grant again does not replace it: {again}");
    assert_eq!(store.get("packs/data/ab/abcd").expect("stored"), bytes, "the object is unchanged");
}

#[test]
fn a_grant_creates_its_object_once_in_azurite() {
    creates_once(remote("azblob", "BOVEDA_TEST_AZURITE").as_ref());
}

#[test]
fn a_grant_creates_its_object_once_in_s3() {
    creates_once(remote("s3", "BOVEDA_TEST_S3").as_ref());
}

#[test]
fn an_azure_grant_allows_nothing_but_its_one_create() {
    let store = remote("azblob", "BOVEDA_TEST_AZURITE");
    store.put_new("packs/data/cd/cdef", b"another host's pack").expect("an object already there");
    let grant = store.grant_create("packs/data/ab/abcd", 5, Duration::from_secs(60)).expect("grant").expect("granted");
    let other = grant.url.replace("packs/data/ab/abcd", "packs/data/cd/cdef");
    assert_eq!(send(&grant, Some(&other), b"xxxxx", &[]), 403, "another name: refused");
    let fresh = grant.url.replace("packs/data/ab/abcd", "index/ffff");
    assert_eq!(send(&grant, Some(&fresh), b"xxxxx", &[]), 403, "a new name of its choosing: refused");
    let read = agent().get(&grant.url).call().expect("answer").status().as_u16();
    assert_eq!(read, 403, "reading with a create grant: refused");
    let delete = agent().delete(other.as_str()).call().expect("answer").status().as_u16();
    assert_eq!(delete, 403, "deleting with a create grant: refused");
    let bare = store.grant_create("packs/data/cd/cdef", 19, Duration::from_secs(60)).expect("grant").expect("granted");
    let status = send(&bare, None, b"overwritten!!!!!!!!", &["if-none-match"]);
    assert_eq!(status, 403, "a create grant for a name taken, without If-None-Match: refused by the store itself");
    assert_eq!(store.get("packs/data/cd/cdef").expect("kept"), b"another host's pack");
    let expired = store.grant_create("packs/data/ee/eeee", 5, Duration::from_secs(1)).expect("grant").expect("granted");
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(send(&expired, None, b"late!", &[]), 403, "an expired grant: refused");
    assert!(store.stat("packs/data/ee/eeee").is_err(), "nothing created late");
}

/// Azure's create permission lets its holder snapshot the blob too; a
/// blob with snapshots refuses a plain delete. A prune must still delete
/// what a host snapshotted (regression: every prune of the vault failed).
#[test]
fn a_blob_a_host_snapshotted_with_its_create_grant_is_still_deleted() {
    let store = remote("azblob", "BOVEDA_TEST_AZURITE");
    let grant = store.grant_create("packs/data/ab/abcd", 5, Duration::from_secs(60)).expect("grant").expect("granted");
    assert!((200..300).contains(&send(&grant, None, b"12345", &[])));
    let snapshot = agent()
        .put(format!("{}&comp=snapshot", grant.url).as_str())
        .header("content-length", "0")
        .send_empty()
        .expect("answer")
        .status()
        .as_u16();
    assert_eq!(snapshot, 201, "Azure's create permission allows a snapshot");
    store.delete("packs/data/ab/abcd").expect("deleted, snapshots and all");
    assert!(store.stat("packs/data/ab/abcd").is_err(), "gone");
}

//! Create-only grants: what lets a holder without the store's keys (a
//! registered host) create one object straight in S3 or Azure Blob
//! Storage, signed by the store's own signature scheme so that the store,
//! not boveda, refuses anything else:
//! - S3: a presigned `PUT` (SigV4 in the query) whose signed headers are
//!   `If-None-Match: *` and `Content-Length`: leave either out, or change
//!   the name or the length, and the signature no longer matches;
//! - Azure: a service SAS for the one blob with the create permission
//!   only (`sp=c`), which writes a new blob and never an existing one.
//!   Azure does not sign the length: the server checks it when the object
//!   is used.

use std::time::{Duration, SystemTime};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::store::{CreateGrant, check_name};
use crate::{StoreError, StoreErrorKind};

/// The longest a grant may live.
pub const MAX_GRANT_TTL: Duration = Duration::from_secs(3600);

/// Where and as whom an S3 backend signs.
#[derive(Clone)]
pub(crate) struct S3Signing {
    pub endpoint: Option<String>,
    pub region: String,
    pub key_id: String,
    pub secret: String,
    pub token: Option<String>,
}

/// What a remote store signs grants with.
#[derive(Clone)]
pub(crate) enum Granter {
    S3 { access: S3Signing, bucket: String, prefix: String },
    Azure { endpoint: String, account: String, key: String, container: String, prefix: String },
}

fn failed(name: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Other, "grant", name).with_source(why.to_string())
}

pub(crate) fn key_of(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") }
}

impl Granter {
    pub(crate) fn grant(&self, name: &str, len: u64, ttl: Duration) -> Result<CreateGrant, StoreError> {
        check_name("grant", name)?;
        let ttl = ttl.clamp(Duration::from_secs(1), MAX_GRANT_TTL);
        let expires = SystemTime::now() + ttl;
        match self {
            Granter::S3 { access, bucket, prefix } => {
                let endpoint =
                    access.endpoint.clone().unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", access.region));
                let key = key_of(prefix, name);
                let url = format!("{}/{bucket}/{}", endpoint.trim_end_matches('/'), encode_path(&key));
                let headers =
                    vec![("if-none-match".to_string(), "*".to_string()), ("content-length".into(), len.to_string())];
                let url = presign_s3(access, &url, &headers, ttl).map_err(|e| failed(name, e))?;
                Ok(CreateGrant { url, headers, expires, length_bound: true })
            }
            Granter::Azure { endpoint, account, key, container, prefix } => {
                use reqsign_azure_storage::{ServiceSasResource, ServiceSharedAccessSignature};
                let blob = key_of(prefix, name);
                let expiry = reqsign_core::time::Timestamp::now() + ttl;
                let resource = ServiceSasResource::Blob { container: container.clone(), blob: blob.clone() };
                let sas = ServiceSharedAccessSignature::new(account.clone(), key.clone(), resource, "c".into(), expiry)
                    .token()
                    .map_err(|e| failed(name, e))?;
                let query: Vec<String> =
                    sas.iter().map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC))).collect();
                let url = format!(
                    "{}/{container}/{}?{}",
                    endpoint.trim_end_matches('/'),
                    encode_path(&blob),
                    query.join("&")
                );
                let headers = vec![
                    ("x-ms-blob-type".to_string(), "BlockBlob".to_string()),
                    ("if-none-match".into(), "*".into()),
                    ("content-length".into(), len.to_string()),
                ];
                Ok(CreateGrant { url, headers, expires, length_bound: false })
            }
        }
    }
}

impl Granter {
    /// Deletes a blob with its snapshots (`x-ms-delete-snapshots:
    /// include`), which the store's own delete does not ask for: Azure's
    /// create permission lets a grant's holder snapshot the blob it made.
    ///
    /// # Errors
    /// `Unsupported` for a store other than Azure; the service's answer.
    pub(crate) fn delete_with_snapshots(&self, name: &str) -> Result<(), StoreError> {
        let Granter::Azure { endpoint, account, key, container, prefix } = self else {
            return Err(StoreError::new(StoreErrorKind::Unsupported, "delete", name));
        };
        let blob = key_of(prefix, name);
        let url = format!("{}/{container}/{}", endpoint.trim_end_matches('/'), encode_path(&blob));
        delete_azure_blob_with_snapshots(&url, account, key, name)
    }
}

/// Deletes an Azure blob and its snapshots (`x-ms-delete-snapshots:
/// include`); a blob already gone is deleted.
///
/// # Errors
/// `PermissionDenied` or `Other` with the service's answer.
fn delete_azure_blob_with_snapshots(url: &str, account: &str, key: &str, name: &str) -> Result<(), StoreError> {
    let headers = [("x-ms-delete-snapshots", "include".to_string())];
    let status = send_azure(http::Method::DELETE, url, account, key, &headers, "delete", name)?;
    match status {
        200..=299 | 404 => Ok(()),
        401 | 403 => Err(StoreError::new(StoreErrorKind::PermissionDenied, "delete", name)),
        status => {
            Err(StoreError::new(StoreErrorKind::Other, "delete", name)
                .with_source(format!("the store answered {status}")))
        }
    }
}

/// One request to Azure Blob Storage signed with the account's shared
/// key (no body); the status it was answered with.
///
/// # Errors
/// `Other` when it cannot be signed or sent.
pub(crate) fn send_azure(
    method: http::Method,
    url: &str,
    account: &str,
    key: &str,
    headers: &[(&str, String)],
    op: &'static str,
    name: &str,
) -> Result<u16, StoreError> {
    use reqsign_azure_storage::{RequestSigner, StaticCredentialProvider};
    let failed = |why: String| StoreError::new(StoreErrorKind::Other, op, name).with_source(why);
    let provider = StaticCredentialProvider::new_shared_key(account, key);
    let signer = reqsign_core::Signer::new(reqsign_core::Context::new(), provider, RequestSigner::new());
    let mut builder = http::Request::builder()
        .method(method)
        .uri(url)
        .header("x-ms-version", "2022-11-02")
        .header("content-length", "0");
    for (k, v) in headers {
        builder = builder.header(*k, v.as_str());
    }
    let (mut parts, ()) = builder.body(()).map_err(|e| failed(e.to_string()))?.into_parts();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| failed(e.to_string()))?;
    rt.block_on(signer.sign(&mut parts, None)).map_err(|e| failed(e.to_string()))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let response = agent.run(http::Request::from_parts(parts, ())).map_err(|e| failed(e.to_string()))?;
    Ok(response.status().as_u16())
}

/// Percent-encodes each segment of an object's path (names are checked,
/// but a vault's prefix may hold spaces or other letters).
pub(crate) fn encode_path(path: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
    path.split('/').map(|seg| utf8_percent_encode(seg, SEGMENT).to_string()).collect::<Vec<_>>().join("/")
}

/// Signs a `PUT` of `url` with `headers` into a presigned URL (SigV4 in
/// the query, the headers among those signed).
fn presign_s3(access: &S3Signing, url: &str, headers: &[(String, String)], ttl: Duration) -> Result<String, String> {
    use reqsign_aws_v4::{RequestSigner, StaticCredentialProvider};
    let mut provider = StaticCredentialProvider::new(&access.key_id, &access.secret);
    if let Some(token) = &access.token {
        provider = provider.with_session_token(token);
    }
    let signer =
        reqsign_core::Signer::new(reqsign_core::Context::new(), provider, RequestSigner::new("s3", &access.region));
    let mut builder = http::Request::put(url);
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let (mut parts, ()) = builder.body(()).map_err(|e| e.to_string())?.into_parts();
    let rt = tokio::runtime::Builder::new_current_thread().build().map_err(|e| e.to_string())?;
    rt.block_on(signer.sign(&mut parts, Some(ttl))).map_err(|e| e.to_string())?;
    Ok(parts.uri.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_grant_signs_its_name_create_only_and_its_length() {
        let access = S3Signing {
            endpoint: Some("http://127.0.0.1:9".into()),
            region: "us-east-1".into(),
            key_id: "AKID".into(),
            secret: "secret".into(),
            token: None,
        };
        let granter = Granter::S3 { access, bucket: "b".into(), prefix: "v1".into() };
        let g = granter.grant("packs/data/ab/abcd", 42, Duration::from_secs(60)).expect("grant");
        assert!(g.url.starts_with("http://127.0.0.1:9/b/v1/packs/data/ab/abcd?"), "{}", g.url);
        assert!(g.url.contains("X-Amz-SignedHeaders=content-length%3Bhost%3Bif-none-match"), "{}", g.url);
        assert!(g.url.contains("X-Amz-Expires=60"), "{}", g.url);
        assert!(g.length_bound);
        assert!(!format!("{g:?}").contains("Signature"), "a grant's signature stays out of logs");
    }

    #[test]
    fn an_azure_grant_may_create_only() {
        let granter = Granter::Azure {
            endpoint: "http://127.0.0.1:9/acct".into(),
            account: "acct".into(),
            key: "a2V5".into(),
            container: "c".into(),
            prefix: String::new(),
        };
        let g = granter.grant("index/ab", 3, Duration::from_secs(60)).expect("grant");
        assert!(g.url.starts_with("http://127.0.0.1:9/acct/c/index/ab?"), "{}", g.url);
        assert!(g.url.contains("&sp=c&"), "{}", g.url);
        assert!(!g.length_bound, "Azure does not sign the length");
    }
}

//! Creating a missing container or bucket, only when a user asks for it
//! (`vault create --create-container`). OpenDAL works inside a container
//! and does not create one, so this is one signed request of boveda's own,
//! signed by the same signing crates OpenDAL uses.

use std::time::Duration;

use crate::{StoreError, StoreErrorKind};

fn failed(what: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Other, "create", what).with_source(why.to_string())
}

/// Sends an empty-bodied PUT after `sign` signed it; a 409 (the container
/// exists, and is ours) is success.
fn put_signed(
    what: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
    sign: impl AsyncFnOnce(&mut http::request::Parts) -> Result<(), String>,
) -> Result<(), StoreError> {
    let mut builder = http::Request::put(url).header("content-length", body.len().to_string());
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let (mut parts, ()) = builder.body(()).map_err(|e| failed(what, e))?.into_parts();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| failed(what, e))?;
    rt.block_on(sign(&mut parts)).map_err(|e| failed(what, e))?;
    let request = http::Request::from_parts(parts, body.to_string());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let response = agent.run(request).map_err(|e| failed(what, format!("{url} cannot be reached: {e}")))?;
    let status = response.status().as_u16();
    match status {
        200..=299 | 409 => Ok(()),
        401 | 403 => Err(StoreError::new(StoreErrorKind::PermissionDenied, "create", what)
            .with_source(format!("{url} answered {status}: the credentials may not create it"))),
        _ => Err(failed(what, format!("{url} answered {status}"))),
    }
}

/// Creates an Azure Blob container (an existing one is left as it is).
///
/// # Errors
/// `PermissionDenied` or `Other` with the service's answer.
pub(crate) fn create_azure_container(container: &str) -> Result<(), StoreError> {
    use reqsign_azure_storage::{RequestSigner, StaticCredentialProvider};
    let access = crate::azblob::access_from_env()?;
    let what = format!("container {container}");
    let provider = match (&access.key, &access.sas) {
        (Some(key), _) => StaticCredentialProvider::new_shared_key(&access.account, key),
        (None, Some(sas)) => StaticCredentialProvider::new_sas_token(sas.trim_start_matches('?')),
        (None, None) => return Err(StoreError::new(StoreErrorKind::PermissionDenied, "create", &what)),
    };
    let signer = reqsign_core::Signer::new(reqsign_core::Context::new(), provider, RequestSigner::new());
    let url = format!("{}/{container}?restype=container", access.endpoint);
    put_signed(&what, &url, &[("x-ms-version", "2022-11-02")], "", async |parts| {
        signer.sign(parts, None).await.map_err(|e| e.to_string())
    })
}

/// Creates an S3 bucket (an existing one of ours is left as it is), with
/// Object Lock enabled when `lock` (which also turns versioning on).
///
/// # Errors
/// `PermissionDenied` or `Other` with the service's answer.
pub(crate) fn create_s3_bucket(bucket: &str, lock: bool) -> Result<(), StoreError> {
    use reqsign_aws_v4::{RequestSigner, StaticCredentialProvider};
    let access = crate::s3::access_from_env()?;
    let what = format!("bucket {bucket}");
    let mut provider = StaticCredentialProvider::new(&access.key_id, &access.secret);
    if let Some(token) = &access.token {
        provider = provider.with_session_token(token);
    }
    let signer =
        reqsign_core::Signer::new(reqsign_core::Context::new(), provider, RequestSigner::new("s3", &access.region));
    let endpoint = access.endpoint.clone().unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", access.region));
    let url = format!("{}/{bucket}", endpoint.trim_end_matches('/'));
    // outside us-east-1, AWS wants the region named in the body
    let body = if access.region == "us-east-1" {
        String::new()
    } else {
        format!(
            "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
            access.region
        )
    };
    let mut headers = vec![("x-amz-content-sha256", "UNSIGNED-PAYLOAD")];
    if lock {
        headers.push(("x-amz-bucket-object-lock-enabled", "true"));
    }
    put_signed(&what, &url, &headers, &body, async |parts| signer.sign(parts, None).await.map_err(|e| e.to_string()))
}

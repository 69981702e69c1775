//! The S3 backend: `s3://BUCKET/PREFIX`, for AWS and any S3-compatible
//! service that honours conditional writes.
//!
//! Credentials, region and endpoint come from the environment, as AWS's
//! own tools read them: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
//! (`AWS_SESSION_TOKEN`), `AWS_REGION` (or `AWS_DEFAULT_REGION`), and
//! `AWS_ENDPOINT_URL` for a service other than AWS.

use opendal::Operator;

use crate::grant::{Granter, S3Signing};
use crate::opendal_store::{OpendalStore, map_err};
use crate::{StoreError, StoreErrorKind};

/// Where and as whom to reach the S3 service.
#[derive(Clone)]
pub(crate) struct S3Access {
    pub endpoint: Option<String>,
    pub region: String,
    pub key_id: String,
    pub secret: String,
    pub token: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The access the environment describes.
pub(crate) fn access_from_env() -> Result<S3Access, StoreError> {
    let (Some(key_id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) else {
        return Err(StoreError::new(StoreErrorKind::PermissionDenied, "open", "S3")
            .with_source("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"));
    };
    Ok(S3Access {
        endpoint: env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")),
        region: env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).unwrap_or_else(|| "us-east-1".into()),
        key_id,
        secret,
        token: env("AWS_SESSION_TOKEN"),
    })
}

/// Opens `s3://BUCKET/PREFIX` and checks that the bucket exists and the
/// credentials work.
///
/// # Errors
/// `NotFound` naming a missing bucket, `PermissionDenied` for missing or
/// wrong credentials, `Other` for an unreachable endpoint.
pub(crate) fn open(bucket: &str, prefix: &str, url: &str) -> Result<OpendalStore, StoreError> {
    let access = access_from_env()?;
    // a bucket with Object Lock takes no upload without Content-MD5 (its
    // default retention locks every version written): one question when
    // opening, and the MD5 only where it is needed
    let locked = granter(&access, bucket, prefix).lock_enabled().unwrap_or(false);
    let store = build_with(&access, bucket, prefix, url, locked)?;
    let endpoint = access.endpoint.as_deref().unwrap_or("AWS");
    store.check(&format!("bucket {bucket} at {endpoint}"))?;
    Ok(store)
}

fn build_with(access: &S3Access, bucket: &str, prefix: &str, url: &str, md5: bool) -> Result<OpendalStore, StoreError> {
    let mut builder = opendal::services::S3::default()
        .bucket(bucket)
        .root(&format!("/{prefix}"))
        .region(&access.region)
        .access_key_id(&access.key_id)
        .secret_access_key(&access.secret)
        .disable_config_load()
        .disable_ec2_metadata();
    if let Some(endpoint) = &access.endpoint {
        builder = builder.endpoint(endpoint);
    }
    if let Some(token) = &access.token {
        builder = builder.session_token(token);
    }
    if md5 {
        builder = builder.checksum_algorithm("md5");
    }
    let op = Operator::new(builder).map_err(|e| map_err("open", url, e))?;
    Ok(OpendalStore::new(op, url.to_string(), true).with_granter(Some(granter(access, bucket, prefix))))
}

/// What signs create-only grants for this bucket (docs/FLEET.md).
pub(crate) fn granter(access: &S3Access, bucket: &str, prefix: &str) -> Granter {
    let signing = S3Signing {
        endpoint: access.endpoint.clone(),
        region: access.region.clone(),
        key_id: access.key_id.clone(),
        secret: access.secret.clone(),
        token: access.token.clone(),
    };
    Granter::S3 { access: signing, bucket: bucket.into(), prefix: prefix.into() }
}

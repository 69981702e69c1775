//! S3 Object Lock: a retain-until date on an object's version that the
//! store itself enforces, against every credential (compliance mode) or
//! every credential without the bypass permission (governance mode). A
//! locked version cannot be deleted or replaced; a plain `DELETE` only
//! hides it behind a delete marker. Extending a lock (`PutObjectRetention`)
//! rewrites no data. See docs/SECURITY.md.

use std::time::{Duration, SystemTime};

use crate::grant::{Granter, S3Signing, encode_path, key_of};
use crate::store::{LockMode, ObjectLock};
use crate::{StoreError, StoreErrorKind};

fn failed(op: &'static str, name: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Other, op, name).with_source(why.to_string())
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t).map(|t| t.round(jiff::Unit::Second).unwrap_or(t).to_string()).unwrap_or_default()
}

fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    // S3 says `2026-12-06T19:18:10.565Z`; be lenient about the separator
    let t: jiff::Timestamp = text.trim().replacen(' ', "T", 1).parse().ok()?;
    Some(SystemTime::from(t))
}

/// One signed request to the S3 service, answered.
fn send(
    access: &S3Signing,
    method: http::Method,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
    op: &'static str,
    name: &str,
) -> Result<http::Response<ureq::Body>, StoreError> {
    use reqsign_aws_v4::{RequestSigner, StaticCredentialProvider};
    let mut provider = StaticCredentialProvider::new(&access.key_id, &access.secret);
    if let Some(token) = &access.token {
        provider = provider.with_session_token(token);
    }
    let signer =
        reqsign_core::Signer::new(reqsign_core::Context::new(), provider, RequestSigner::new("s3", &access.region));
    let mut builder = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, v.as_str());
    }
    let (mut parts, ()) = builder.body(()).map_err(|e| failed(op, name, e))?.into_parts();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| failed(op, name, e))?;
    rt.block_on(signer.sign(&mut parts, None)).map_err(|e| failed(op, name, e))?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let response = agent.run(http::Request::from_parts(parts, body)).map_err(|e| failed(op, name, e))?;
    match response.status().as_u16() {
        200..=299 => Ok(response),
        404 => Err(StoreError::new(StoreErrorKind::NotFound, op, name)),
        401 | 403 => Err(StoreError::new(StoreErrorKind::PermissionDenied, op, name)
            .with_source(format!("the store answered {}", response.status()))),
        501 => Err(StoreError::new(StoreErrorKind::Unsupported, op, name)),
        status => Err(failed(op, name, format!("the store answered {status}"))),
    }
}

impl Granter {
    fn s3_url(&self, name: &str, query: &str) -> Option<(&S3Signing, String)> {
        let Granter::S3 { access, bucket, prefix } = self else { return None };
        let endpoint = access.endpoint.clone().unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", access.region));
        let path = if name.is_empty() { String::new() } else { format!("/{}", encode_path(&key_of(prefix, name))) };
        Some((access, format!("{}/{bucket}{path}{query}", endpoint.trim_end_matches('/'))))
    }

    /// Locks `name`'s current version until `lock.until` (a lock only
    /// moves later in compliance mode: the store refuses an earlier date).
    ///
    /// # Errors
    /// `Unsupported` for a store other than S3; the service's answer.
    pub(crate) fn lock(&self, name: &str, lock: &ObjectLock) -> Result<(), StoreError> {
        let Some((access, url)) = self.s3_url(name, "?retention") else {
            return Err(StoreError::new(StoreErrorKind::Unsupported, "lock", name));
        };
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            lock.mode.as_str(),
            rfc3339(lock.until)
        )
        .into_bytes();
        use base64::Engine as _;
        use md5::Digest as _;
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        let headers = [("content-md5", md5), ("content-length", body.len().to_string())];
        send(access, http::Method::PUT, &url, &headers, body, "lock", name).map(|_| ())
    }

    /// `name`'s lock, if its current version has one.
    ///
    /// # Errors
    /// `Unsupported` for a store other than S3; `NotFound`; the service's
    /// answer.
    pub(crate) fn lock_of(&self, name: &str) -> Result<Option<ObjectLock>, StoreError> {
        let Some((access, url)) = self.s3_url(name, "") else {
            return Err(StoreError::new(StoreErrorKind::Unsupported, "lock", name));
        };
        let response = send(access, http::Method::HEAD, &url, &[], Vec::new(), "lock", name)?;
        let header = |h: &str| response.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (Some(mode), Some(until)) =
            (header("x-amz-object-lock-mode"), header("x-amz-object-lock-retain-until-date"))
        else {
            return Ok(None);
        };
        let mode = LockMode::parse(&mode)?;
        let until = parse_rfc3339(&until).ok_or_else(|| failed("lock", name, format!("a lock date {until:?}")))?;
        Ok(Some(ObjectLock { mode, until }))
    }

    /// Deletes `name`'s current version itself, not only hiding it behind a
    /// delete marker as a plain delete does in a versioned bucket: the
    /// store refuses it while the version is locked.
    ///
    /// # Errors
    /// `PermissionDenied` for a locked version; `Unsupported` for a store
    /// other than S3; the service's answer.
    pub(crate) fn delete_current_version(&self, name: &str) -> Result<(), StoreError> {
        let Some((access, url)) = self.s3_url(name, "") else {
            return Err(StoreError::new(StoreErrorKind::Unsupported, "delete", name));
        };
        let head = match send(access, http::Method::HEAD, &url, &[], Vec::new(), "delete", name) {
            Ok(r) => r,
            Err(e) if e.kind() == StoreErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let version = head.headers().get("x-amz-version-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let target = match version.filter(|v| v != "null") {
            Some(v) => {
                let v = percent_encoding::utf8_percent_encode(&v, percent_encoding::NON_ALPHANUMERIC).to_string();
                format!("{url}?versionId={v}")
            }
            None => url,
        };
        match send(access, http::Method::DELETE, &target, &[("content-length", "0".into())], Vec::new(), "delete", name)
        {
            Err(e) if e.kind() == StoreErrorKind::NotFound => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Azure Blob's version-level immutability: an immutability policy on
    /// `name` until `lock.until` (`Locked` for compliance, `Unlocked` for
    /// governance). Not offered by `vault create` (S3 only): Azurite
    /// answers 501 (Not Implemented), so nothing past the request is
    /// tested here (`tests/object_lock.rs`).
    ///
    /// # Errors
    /// `Unsupported` from a service that does not implement it (Azurite);
    /// the service's answer.
    pub(crate) fn lock_azure(&self, name: &str, lock: &ObjectLock) -> Result<(), StoreError> {
        let Granter::Azure { endpoint, account, key, container, prefix } = self else {
            return Err(StoreError::new(StoreErrorKind::Unsupported, "lock", name));
        };
        let url = format!(
            "{}/{container}/{}?comp=immutabilityPolicies",
            endpoint.trim_end_matches('/'),
            encode_path(&key_of(prefix, name))
        );
        let mode = if lock.mode == LockMode::Compliance { "Locked" } else { "Unlocked" };
        let until = jiff::Timestamp::try_from(lock.until)
            .map(|t| t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string())
            .map_err(|e| failed("lock", name, e))?;
        let headers =
            [("x-ms-immutability-policy-until-date", until), ("x-ms-immutability-policy-mode", mode.to_string())];
        match crate::grant::send_azure(http::Method::PUT, &url, account, key, &headers, "lock", name)? {
            200..=299 => Ok(()),
            501 => Err(StoreError::new(StoreErrorKind::Unsupported, "lock", name)
                .with_source("the service does not implement immutability policies (501)")),
            403 => Err(StoreError::new(StoreErrorKind::PermissionDenied, "lock", name)),
            status => Err(failed("lock", name, format!("the store answered {status}"))),
        }
    }

    /// Sets the bucket's default retention: every object version written
    /// from then on is locked `days` days in `mode` by the store itself.
    ///
    /// # Errors
    /// `Unsupported` for a store other than S3; the service's answer (a
    /// bucket without Object Lock).
    pub(crate) fn set_default_retention(&self, mode: LockMode, days: u32) -> Result<(), StoreError> {
        let Some((access, url)) = self.s3_url("", "?object-lock") else {
            return Err(StoreError::new(StoreErrorKind::Unsupported, "lock", "bucket"));
        };
        let body = format!(
            "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>{}</Mode><Days>{days}</Days></DefaultRetention></Rule></ObjectLockConfiguration>",
            mode.as_str()
        )
        .into_bytes();
        use base64::Engine as _;
        use md5::Digest as _;
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
        let headers = [("content-md5", md5), ("content-length", body.len().to_string())];
        send(access, http::Method::PUT, &url, &headers, body, "lock", "bucket").map(|_| ())
    }

    /// Whether the bucket has Object Lock enabled.
    ///
    /// # Errors
    /// `Unsupported` for a store other than S3; the service's answer.
    pub(crate) fn lock_enabled(&self) -> Result<bool, StoreError> {
        let Some((access, url)) = self.s3_url("", "?object-lock") else {
            return Err(StoreError::new(StoreErrorKind::Unsupported, "lock", "bucket"));
        };
        match send(access, http::Method::GET, &url, &[], Vec::new(), "lock", "bucket") {
            Ok(response) => {
                let text = response.into_body().read_to_string().map_err(|e| failed("lock", "bucket", e))?;
                Ok(text.contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>"))
            }
            // no configuration: a bucket made without Object Lock
            Err(e) if e.kind() == StoreErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_dates_round_trip() {
        for secs in [0u64, 951_782_400, 1_767_225_599, 1_800_000_000, 4_102_444_800] {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{}", rfc3339(t));
        }
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert!(parse_rfc3339("2026-12-06T19:18:10.565Z").is_some());
        assert!(parse_rfc3339("2026-12-06 19:18:10.565930+00:00").is_some());
    }
}

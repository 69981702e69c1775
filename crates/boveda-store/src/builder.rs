//! Opening a store from its URL: the one place that picks a backend and
//! stacks the layers around it.
//!
//! ```text
//!   retry  ->  metrics  ->  faults (tests only)  ->  backend
//! ```
//!
//! The retry layer is outermost, so every try is counted by the metrics
//! layer and may meet an injected fault; the backend sees only real calls.

use std::path::PathBuf;
use std::sync::Arc;

use crate::{
    FaultPlan, FaultStore, LocalStore, MetricsStore, RetryPolicy, RetryStore, Store, StoreError, StoreErrorKind,
};

/// Where a store lives, as its URL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A plain path or `file://PATH`.
    Local(PathBuf),
    /// `azblob://CONTAINER[/PREFIX]`
    Azblob { container: String, prefix: String },
    /// `s3://BUCKET[/PREFIX]`
    S3 { bucket: String, prefix: String },
}

impl StoreUrl {
    /// Reads a store URL.
    ///
    /// # Errors
    /// `InvalidName` for an unknown scheme or a URL without a container.
    pub fn parse(url: &str) -> Result<StoreUrl, StoreError> {
        let invalid =
            |why: &str| StoreError::new(StoreErrorKind::InvalidName, "open", url).with_source(why.to_string());
        let Some((scheme, rest)) = url.split_once("://") else {
            return Ok(StoreUrl::Local(PathBuf::from(url)));
        };
        let (container, prefix) = match rest.split_once('/') {
            Some((c, p)) => (c.to_string(), p.trim_matches('/').to_string()),
            None => (rest.to_string(), String::new()),
        };
        let container_ok = !container.is_empty()
            && container.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        let prefix_ok = prefix.is_empty() || crate::store::check_name("open", &prefix).is_ok();
        match scheme {
            "file" => Ok(StoreUrl::Local(PathBuf::from(rest))),
            "azblob" | "s3" if !container_ok => Err(invalid(
                "the container or bucket name must be lowercase letters, digits, '-' and '.' (azblob://CONTAINER/PREFIX, s3://BUCKET/PREFIX)",
            )),
            "azblob" | "s3" if !prefix_ok => {
                Err(invalid("the prefix must be a relative path without '.' or '..' parts"))
            }
            "azblob" => Ok(StoreUrl::Azblob { container, prefix }),
            "s3" => Ok(StoreUrl::S3 { bucket: container, prefix }),
            _ => Err(invalid(&format!(
                "unknown store scheme {scheme}:// (a folder path, file://PATH, azblob://CONTAINER/PREFIX or s3://BUCKET/PREFIX)"
            ))),
        }
    }

    /// The URL in its canonical form.
    pub fn to_url(&self) -> String {
        let join = |scheme: &str, c: &str, p: &str| {
            if p.is_empty() { format!("{scheme}://{c}") } else { format!("{scheme}://{c}/{p}") }
        };
        match self {
            StoreUrl::Local(path) => path.display().to_string(),
            StoreUrl::Azblob { container, prefix } => join("azblob", container, prefix),
            StoreUrl::S3 { bucket, prefix } => join("s3", bucket, prefix),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, StoreUrl::Local(_))
    }
}

/// How to open a store.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    pub retry: RetryPolicy,
    /// Faults to inject (tests); `None` reads `BOVEDA_STORE_FAULTS`.
    pub faults: Option<FaultPlan>,
    /// Create a missing container or bucket instead of refusing.
    pub create_container: bool,
}

/// The environment variable tests set to inject faults into every store a
/// process opens (the form of [`FaultPlan::parse`]).
pub const FAULTS_ENV: &str = "BOVEDA_STORE_FAULTS";

/// Opens a store from a URL with the default layers.
///
/// # Errors
/// As [`open_store_with`].
pub fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_store_with(url, &StoreOptions::default())
}

/// Opens a store from a URL: the backend, then the layers around it.
///
/// # Errors
/// `InvalidName` for a URL that does not parse; `NotFound` naming a missing
/// container or bucket; `PermissionDenied` for missing or wrong
/// credentials; `Other` for an endpoint that cannot be reached.
pub fn open_store_with(url: &str, opts: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    let backend = open_backend(url, opts.create_container)?;
    let faults = match &opts.faults {
        Some(plan) => Some(plan.clone()),
        None => faults_from_env()?,
    };
    Ok(layer(backend, opts.retry, faults))
}

/// Opens the backend a URL names, without layers: a caller that learns its
/// limits later (from the vault's settings) stacks them with [`layer`].
///
/// # Errors
/// As [`open_store_with`].
pub fn open_backend(url: &str, create_container: bool) -> Result<Arc<dyn Store>, StoreError> {
    let parsed = StoreUrl::parse(url)?;
    let location = parsed.to_url();
    Ok(match &parsed {
        StoreUrl::Local(path) => Arc::new(LocalStore::new(path.clone())),
        StoreUrl::Azblob { container, prefix } => {
            if create_container {
                crate::container::create_azure_container(container)?;
            }
            Arc::new(crate::azblob::open(container, prefix, &location)?)
        }
        StoreUrl::S3 { bucket, prefix } => {
            if create_container {
                crate::container::create_s3_bucket(bucket, false)?;
            }
            Arc::new(crate::s3::open(bucket, prefix, &location)?)
        }
    })
}

/// Creates the bucket of an `s3://` URL with Object Lock enabled (an
/// existing bucket of ours is left as it is: its lock is checked when the
/// vault is created).
///
/// # Errors
/// `Unsupported` for a URL other than S3; the service's refusal.
pub fn create_locked_bucket(url: &str) -> Result<(), StoreError> {
    match StoreUrl::parse(url)? {
        StoreUrl::S3 { bucket, .. } => crate::container::create_s3_bucket(&bucket, true),
        _ => Err(StoreError::new(crate::StoreErrorKind::Unsupported, "create", url)
            .with_source("object lock is S3's (an Azure or local vault cannot use it)")),
    }
}

/// Sets the default retention of the bucket of an `s3://` URL: every
/// object version written is locked `days` days in `mode` by the store.
///
/// # Errors
/// `Unsupported` for a URL other than S3; the service's refusal (a bucket
/// without Object Lock).
pub fn set_bucket_lock(url: &str, mode: crate::LockMode, days: u32) -> Result<(), StoreError> {
    match StoreUrl::parse(url)? {
        StoreUrl::S3 { bucket, prefix } => {
            let access = crate::s3::access_from_env()?;
            crate::s3::granter(&access, &bucket, &prefix).set_default_retention(mode, days)
        }
        _ => Err(StoreError::new(crate::StoreErrorKind::Unsupported, "lock", url)),
    }
}

/// The faults `BOVEDA_STORE_FAULTS` asks for, if any.
///
/// # Errors
/// `InvalidName` naming the part of the variable that does not parse.
pub fn faults_from_env() -> Result<Option<FaultPlan>, StoreError> {
    faults_from_var(FAULTS_ENV)
}

/// The faults an environment variable asks for, if any (the form of
/// `BOVEDA_STORE_FAULTS`).
///
/// # Errors
/// `InvalidName` naming the part of the variable that does not parse.
pub fn faults_from_var(var: &str) -> Result<Option<FaultPlan>, StoreError> {
    match std::env::var(var) {
        Ok(spec) if !spec.trim().is_empty() => FaultPlan::parse(&spec)
            .map(Some)
            .map_err(|e| StoreError::new(StoreErrorKind::InvalidName, "open", var).with_source(e)),
        _ => Ok(None),
    }
}

/// Stacks the layers around a backend (see the module docs).
pub fn layer(backend: Arc<dyn Store>, retry: RetryPolicy, faults: Option<FaultPlan>) -> Arc<dyn Store> {
    let below: Arc<dyn Store> = match faults {
        Some(plan) => Arc::new(FaultStore::new(backend, plan)),
        None => backend,
    };
    Arc::new(RetryStore::new(Arc::new(MetricsStore::new(below)), retry))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_to_their_backend() {
        assert_eq!(StoreUrl::parse("/v").expect("path"), StoreUrl::Local("/v".into()));
        assert_eq!(StoreUrl::parse("file:///v").expect("file"), StoreUrl::Local("/v".into()));
        let az = StoreUrl::parse("azblob://backups/team/a/").expect("azblob");
        assert_eq!(az, StoreUrl::Azblob { container: "backups".into(), prefix: "team/a".into() });
        assert_eq!(az.to_url(), "azblob://backups/team/a");
        assert_eq!(StoreUrl::parse("s3://b").expect("s3"), StoreUrl::S3 { bucket: "b".into(), prefix: String::new() });
        for bad in ["ftp://x", "s3://", "s3://Bucket", "azblob://c/../x"] {
            assert_eq!(StoreUrl::parse(bad).expect_err(bad).kind(), StoreErrorKind::InvalidName, "{bad}");
        }
    }
}

//! What the Azure Blob and S3 backends share: the [`Store`] contract over
//! an OpenDAL operator. OpenDAL speaks the protocols (signing, paging,
//! conditional headers); this file maps its answers to the contract and
//! runs its async calls on one process-wide runtime, so the vault's
//! threads call a store as they call a local folder.

use std::ops::ControlFlow;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use opendal::{ErrorKind, Operator};

use crate::grant::Granter;
use crate::store::{LIST_PAGE, check_name, check_prefix};
use crate::{AbandonedUpload, Capabilities, CreateGrant, ObjectInfo, PutMode, Store, StoreError, StoreErrorKind};

/// The runtime every object store's requests run on. Calls block the
/// calling thread (a vault's worker) until the request ends; requests
/// from many threads run at once.
fn runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            opendal::install_default();
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("store-io")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| StoreError::new(StoreErrorKind::Other, "start", "the store's I/O runtime").with_source(e.clone()))
}

/// A vault in an object store's container or bucket, below a prefix.
pub struct OpendalStore {
    op: Operator,
    location: String,
    conditional_replace: bool,
    granter: Option<Granter>,
}

impl OpendalStore {
    /// Wraps an operator built by a backend; `location` is the store's URL.
    pub(crate) fn new(op: Operator, location: String, conditional_replace: bool) -> Self {
        Self { op, location, conditional_replace, granter: None }
    }

    /// The same store, able to sign create-only grants.
    pub(crate) fn with_granter(mut self, granter: Option<Granter>) -> Self {
        self.granter = granter;
        self
    }

    /// Runs one request to its end, or until its time limit (see
    /// [`request_limit`]): a store that accepts a connection and never
    /// answers, or stops in the middle, fails the request with an error
    /// the retry layer tries again, instead of hanging boveda.
    fn request<T>(
        &self,
        operation: &'static str,
        object: &str,
        bytes: u64,
        fut: impl IntoFuture<Output = opendal::Result<T>>,
    ) -> Result<T, StoreError> {
        let limit = request_limit(bytes);
        match runtime()?.block_on(async { tokio::time::timeout(limit, fut.into_future()).await }) {
            Ok(answer) => answer.map_err(|e| map_err(operation, object, e)),
            Err(_) => Err(no_answer(operation, object, limit)),
        }
    }

    /// Checks that the container or bucket exists and the credentials
    /// work: one request, tried again like any other when it fails for a
    /// passing reason (a `503 SlowDown`, a reset, no answer in time).
    ///
    /// # Errors
    /// `NotFound` naming the container, `PermissionDenied`, or the
    /// endpoint's error once the tries are spent.
    pub(crate) fn check(&self, container: &str) -> Result<(), StoreError> {
        crate::retry::retrying(&crate::retry::RetryPolicy::default(), |_| self.check_once(container))
    }

    fn check_once(&self, container: &str) -> Result<(), StoreError> {
        let mut lister = self.request("open", container, 0, self.op.lister_with("/").limit(1))?;
        match self.request("open", container, 0, async { lister.next().await.transpose() })? {
            Some(_) | None => Ok(()),
        }
    }
}

/// The environment variable that sets the base time limit of one request,
/// in seconds (default 30).
pub const REQUEST_TIMEOUT_ENV: &str = "BOVEDA_STORE_REQUEST_TIMEOUT";

/// How long one request may take: a base (to connect and get a first
/// answer; 30 s, or `BOVEDA_STORE_REQUEST_TIMEOUT`) plus a second per MiB
/// it carries, so a large pack on a slow link still has time while a
/// stalled one is given up.
pub fn request_limit(bytes: u64) -> std::time::Duration {
    static BASE: OnceLock<u64> = OnceLock::new();
    let base = *BASE.get_or_init(|| {
        std::env::var(REQUEST_TIMEOUT_ENV).ok().and_then(|v| v.trim().parse().ok()).filter(|&s| s > 0).unwrap_or(30)
    });
    std::time::Duration::from_secs(base + bytes / (1 << 20))
}

/// The bytes a whole-object read is given time for (see [`request_limit`]).
const WHOLE_READ_ALLOWANCE: u64 = 96 << 20;

/// A request that got no (whole) answer within its time limit: transient.
fn no_answer(operation: &'static str, object: &str, limit: std::time::Duration) -> StoreError {
    StoreError::new(StoreErrorKind::Other, operation, object)
        .retryable(true)
        .with_detail(format!("the store did not answer within {} s", limit.as_secs()))
}

/// Maps OpenDAL's error to the contract: its kind, and its own judgement
/// of whether a retry may help (server errors, timeouts, resets).
pub(crate) fn map_err(operation: &'static str, object: &str, e: opendal::Error) -> StoreError {
    let (code, detail) = summarize(&e);
    let missing_container = matches!(code.as_deref(), Some("NoSuchBucket" | "ContainerNotFound"));
    let kind = match e.kind() {
        _ if missing_container => StoreErrorKind::NotFound,
        ErrorKind::NotFound => StoreErrorKind::NotFound,
        ErrorKind::AlreadyExists => StoreErrorKind::AlreadyExists,
        ErrorKind::ConditionNotMatch => StoreErrorKind::ConditionNotMet,
        ErrorKind::RateLimited => StoreErrorKind::RateLimited,
        ErrorKind::PermissionDenied => StoreErrorKind::PermissionDenied,
        ErrorKind::Unsupported => StoreErrorKind::Unsupported,
        ErrorKind::RangeNotSatisfied => StoreErrorKind::Other,
        _ => StoreErrorKind::Other,
    };
    // a connection cut before or during the answer is a passing fault too,
    // however the layers below word it
    let mut full = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        full.push_str(&c.to_string());
        cause = c.source();
    }
    let lower = full.to_ascii_lowercase();
    let cut = [
        "connection reset",
        "broken pipe",
        "connection closed before message completed",
        "incomplete",
        "error decoding response body",
        "unexpected eof",
        "end of file before message",
        "content length",
        "did not answer in time",
    ]
    .iter()
    .any(|w| lower.contains(w));
    let retryable = e.is_temporary() || kind == StoreErrorKind::RateLimited || (kind == StoreErrorKind::Other && cut);
    StoreError::new(kind, operation, object).retryable(retryable).with_detail(detail).with_source(e)
}

/// The service's error code, and one line for people: the code and
/// message the service answered, or what went wrong on the way to it.
fn summarize(e: &opendal::Error) -> (Option<String>, String) {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(" <- ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    let field = |key: &str| {
        let start = text.find(&format!("{key}: \""))? + key.len() + 3;
        let len = text[start..].find('"')?;
        Some(text[start..start + len].to_string()).filter(|v| !v.is_empty())
    };
    let code = field("code");
    if let Some(c) = &code {
        let message = field("message").map(|m| m.split(" RequestId:").next().unwrap_or(&m).trim().to_string());
        let line = match c.as_str() {
            "NoSuchBucket" | "ContainerNotFound" => "it does not exist; it is created only when asked".to_string(),
            _ => message.map_or_else(|| c.clone(), |m| format!("{c}: {m}")),
        };
        return (code, line);
    }
    let lower = text.to_ascii_lowercase();
    let line = if lower.contains("connection refused") {
        "connection refused: nothing answers at the endpoint".to_string()
    } else if lower.contains("dns error") || lower.contains("failed to lookup") {
        "the endpoint's host name does not resolve".to_string()
    } else if lower.contains("timed out") || lower.contains("timeout") {
        "the endpoint did not answer in time".to_string()
    } else if let Some(status) = text.find("status: ").map(|i| &text[i + 8..]).and_then(|t| t.split(',').next()) {
        format!("{} answered {status}", e.kind())
    } else {
        e.kind().to_string()
    };
    (None, line)
}

fn info(name: &str, meta: &opendal::Metadata) -> ObjectInfo {
    ObjectInfo {
        name: name.to_string(),
        size: meta.content_length(),
        etag: meta.etag().map(str::to_string),
        modified: meta.last_modified().map(SystemTime::from),
    }
}

impl Store for OpendalStore {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { conditional_replace: self.conditional_replace, parallel_requests: 8, remote: true }
    }

    fn lock_object(&self, name: &str, lock: &crate::store::ObjectLock) -> Result<bool, StoreError> {
        check_name("lock", name)?;
        match &self.granter {
            Some(g @ Granter::S3 { .. }) => g.lock(name, lock).map(|()| true),
            Some(g @ Granter::Azure { .. }) => g.lock_azure(name, lock).map(|()| true),
            None => Ok(false),
        }
    }

    fn object_lock(&self, name: &str) -> Result<Option<crate::store::ObjectLock>, StoreError> {
        check_name("lock", name)?;
        match &self.granter {
            Some(g @ Granter::S3 { .. }) => g.lock_of(name),
            _ => Ok(None),
        }
    }

    fn delete_version(&self, name: &str) -> Result<(), StoreError> {
        check_name("delete", name)?;
        match &self.granter {
            Some(g @ Granter::S3 { .. }) => g.delete_current_version(name),
            _ => self.delete(name),
        }
    }

    fn can_lock(&self) -> Result<bool, StoreError> {
        match &self.granter {
            Some(g @ Granter::S3 { .. }) => g.lock_enabled(),
            _ => Ok(false),
        }
    }

    fn grant_create(&self, name: &str, len: u64, ttl: Duration) -> Result<Option<CreateGrant>, StoreError> {
        self.granter.as_ref().map(|g| g.grant(name, len, ttl)).transpose()
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        check_name("read", name)?;
        // the size is not known before: whole-object reads are of catalog
        // objects and indexes (packs are read by range), given the time of
        // a large one
        let buf = self.request("read", name, WHOLE_READ_ALLOWANCE, self.op.read(name))?;
        Ok(buf.to_vec())
    }

    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        check_name("read", name)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = offset.checked_add(len).ok_or_else(|| StoreError::new(StoreErrorKind::Other, "read", name))?;
        let got = self.request("read", name, len, self.op.read_with(name).range(offset..end))?;
        if got.len() as u64 != len {
            // a cut answer is tried again; an object that really is shorter
            // is named as such, once
            let stored = self.stat(name).map(|i| i.size).ok();
            if stored.is_some_and(|size| size < end) {
                return Err(StoreError::new(StoreErrorKind::Other, "read", name).with_detail(format!(
                    "the object is shorter than its index says: {} bytes stored, bytes {offset}..{end} asked for",
                    stored.unwrap_or(0)
                )));
            }
            return Err(StoreError::new(StoreErrorKind::Other, "read", name)
                .retryable(true)
                .with_detail(format!("the answer was cut short: {} of {len} bytes came back", got.len())));
        }
        Ok(got.to_vec())
    }

    fn put(&self, name: &str, data: &[u8], mode: PutMode) -> Result<ObjectInfo, StoreError> {
        check_name("write", name)?;
        // one request: a killed writer leaves no partial upload behind
        let body = opendal::Buffer::from(data.to_vec());
        let limit = request_limit(data.len() as u64);
        let written = match &mode {
            PutMode::Create => {
                let fut = async {
                    tokio::time::timeout(limit, self.op.write_with(name, body).if_not_exists(true).into_future()).await
                };
                runtime()?.block_on(fut).map_err(|_| no_answer("write", name, limit))?.map_err(|e| {
                    let refused = e.kind() == ErrorKind::ConditionNotMatch || e.kind() == ErrorKind::AlreadyExists;
                    if refused {
                        StoreError::new(StoreErrorKind::AlreadyExists, "write", name).with_source(e)
                    } else {
                        map_err("write", name, e)
                    }
                })?
            }
            PutMode::ReplaceIfMatch(etag) => {
                if !self.conditional_replace {
                    return Err(StoreError::new(StoreErrorKind::Unsupported, "replace", name));
                }
                let fut = async {
                    tokio::time::timeout(limit, self.op.write_with(name, body).if_match(etag).into_future()).await
                };
                runtime()?.block_on(fut).map_err(|_| no_answer("replace", name, limit))?.map_err(|e| {
                    match e.kind() {
                        // a replace of an object that is gone did not find its version either
                        ErrorKind::NotFound => StoreError::new(StoreErrorKind::ConditionNotMet, "replace", name),
                        _ => map_err("replace", name, e),
                    }
                })?
            }
        };
        let mut out = info(name, &written);
        out.size = data.len() as u64;
        if out.etag.is_none() {
            return self.stat(name);
        }
        Ok(out)
    }

    fn list_pages(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        check_prefix(prefix)?;
        let dir = if prefix.is_empty() { "/".to_string() } else { format!("{prefix}/") };
        let mut lister = self.request("list", prefix, 0, self.op.lister_with(&dir).recursive(true))?;
        let mut page = Vec::with_capacity(LIST_PAGE);
        // entries arrive in the store's key order; a page is handed over
        // whenever one fills, so memory stays one page (each next entry,
        // which may fetch a page from the store, within the time limit)
        while let Some(entry) = self.request("list", prefix, 0, async { lister.next().await.transpose() })? {
            let path = entry.path().trim_start_matches('/');
            if path.is_empty() || path.ends_with('/') {
                continue;
            }
            page.push(info(path, entry.metadata()));
            if page.len() >= LIST_PAGE && visit(std::mem::take(&mut page)).is_break() {
                return Ok(());
            }
        }
        if !page.is_empty() {
            let _ = visit(page);
        }
        Ok(())
    }

    fn stat(&self, name: &str) -> Result<ObjectInfo, StoreError> {
        check_name("stat", name)?;
        let meta = self.request("stat", name, 0, self.op.stat(name))?;
        Ok(info(name, &meta))
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        check_name("delete", name)?;
        match self.request("delete", name, 0, self.op.delete(name)) {
            // a blob someone snapshotted (Azure's create grant allows it):
            // deleted with its snapshots
            Err(e) if e.to_string().contains("SnapshotsPresent") => match &self.granter {
                Some(g) => g.delete_with_snapshots(name),
                None => Err(e),
            },
            Err(e) if e.kind() != StoreErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn abandoned_uploads(&self, _before: SystemTime) -> Result<Vec<AbandonedUpload>, StoreError> {
        // every put is a single request, so a killed writer leaves nothing
        Ok(Vec::new())
    }

    fn discard_upload(&self, upload: &AbandonedUpload) -> Result<(), StoreError> {
        Err(StoreError::new(StoreErrorKind::InvalidName, "discard", &upload.name))
    }
}

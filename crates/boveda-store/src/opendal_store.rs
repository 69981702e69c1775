//! What the Azure Blob and S3 backends share: the [`Store`] contract over
//! an OpenDAL operator. OpenDAL speaks the protocols (signing, paging,
//! conditional headers); this file maps its answers to the contract and
//! runs its async calls on one process-wide runtime, so the vault's
//! threads call a store as they call a local folder.

use std::ops::ControlFlow;
use std::sync::OnceLock;
use std::time::SystemTime;

use futures::StreamExt;
use opendal::{ErrorKind, Operator};

use crate::store::{LIST_PAGE, check_name, check_prefix};
use crate::{AbandonedUpload, Capabilities, ObjectInfo, PutMode, Store, StoreError, StoreErrorKind};

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
}

impl OpendalStore {
    /// Wraps an operator built by a backend; `location` is the store's URL.
    pub(crate) fn new(op: Operator, location: String, conditional_replace: bool) -> Self {
        Self { op, location, conditional_replace }
    }

    fn block_on<T>(&self, fut: impl IntoFuture<Output = T>) -> Result<T, StoreError> {
        Ok(runtime()?.block_on(fut.into_future()))
    }

    /// Checks that the container or bucket exists and the credentials
    /// work, with one request.
    ///
    /// # Errors
    /// `NotFound` naming the container, `PermissionDenied`, or the
    /// endpoint's error.
    pub(crate) fn check(&self, container: &str) -> Result<(), StoreError> {
        let mut lister =
            self.block_on(self.op.lister_with("/").limit(1))?.map_err(|e| map_err("open", container, e))?;
        match self.block_on(lister.next())? {
            Some(Err(e)) => Err(map_err("open", container, e)),
            _ => Ok(()),
        }
    }
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
    let retryable = e.is_temporary() || kind == StoreErrorKind::RateLimited;
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

    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        check_name("read", name)?;
        let buf = self.block_on(self.op.read(name))?.map_err(|e| map_err("read", name, e))?;
        Ok(buf.to_vec())
    }

    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        check_name("read", name)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let end = offset.checked_add(len).ok_or_else(|| StoreError::new(StoreErrorKind::Other, "read", name))?;
        let got = self.block_on(self.op.read_with(name).range(offset..end))?.map_err(|e| map_err("read", name, e))?;
        if got.len() as u64 != len {
            return Err(StoreError::new(StoreErrorKind::Other, "read", name)
                .with_source(format!("range {offset}+{len} runs past the end ({} bytes came back)", got.len())));
        }
        Ok(got.to_vec())
    }

    fn put(&self, name: &str, data: &[u8], mode: PutMode) -> Result<ObjectInfo, StoreError> {
        check_name("write", name)?;
        // one request: a killed writer leaves no partial upload behind
        let body = opendal::Buffer::from(data.to_vec());
        let written = match &mode {
            PutMode::Create => self.block_on(self.op.write_with(name, body).if_not_exists(true))?.map_err(|e| {
                let refused = e.kind() == ErrorKind::ConditionNotMatch || e.kind() == ErrorKind::AlreadyExists;
                if refused {
                    StoreError::new(StoreErrorKind::AlreadyExists, "write", name).with_source(e)
                } else {
                    map_err("write", name, e)
                }
            })?,
            PutMode::ReplaceIfMatch(etag) => {
                if !self.conditional_replace {
                    return Err(StoreError::new(StoreErrorKind::Unsupported, "replace", name));
                }
                self.block_on(self.op.write_with(name, body).if_match(etag))?.map_err(|e| match e.kind() {
                    // a replace of an object that is gone did not find its version either
                    ErrorKind::NotFound => StoreError::new(StoreErrorKind::ConditionNotMet, "replace", name),
                    _ => map_err("replace", name, e),
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
        let rt = runtime()?;
        let mut lister = rt
            .block_on(self.op.lister_with(&dir).recursive(true).into_future())
            .map_err(|e| map_err("list", prefix, e))?;
        let mut page = Vec::with_capacity(LIST_PAGE);
        // entries arrive in the store's key order; a page is handed over
        // whenever one fills, so memory stays one page
        while let Some(entry) = rt.block_on(lister.next()) {
            let entry = entry.map_err(|e| map_err("list", prefix, e))?;
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
        let meta = self.block_on(self.op.stat(name))?.map_err(|e| map_err("stat", name, e))?;
        Ok(info(name, &meta))
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        check_name("delete", name)?;
        match self.block_on(self.op.delete(name))? {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(map_err("delete", name, e)),
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

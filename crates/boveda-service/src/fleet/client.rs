//! A registered host's side of the conversation with its vault's server:
//! HTTPS to the one certificate the credentials name (its SHA-256
//! fingerprint, whatever signed it), the host's token on every request,
//! and [`UploadStore`], the only "store" a host writes to: create-only
//! uploads, through the server or straight to the vault's store with a
//! grant the server signed for that one pack, and nothing else.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use boveda_store::{AbandonedUpload, Capabilities, ObjectInfo, PutMode, Store, StoreError, StoreErrorKind};
use boveda_vault::{ChunkId, RecordId};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Remedy, Result, ServiceError, ServiceErrorKind};
use crate::fleet::intake::{DirectGrant, HostReport, ReportReply, StartedJob, UploadAsk, UploadWay};
use crate::fleet::work::Assignment;
use crate::fleet::{Registered, Registration, certificate_fingerprint, normalize_fingerprint};
use crate::items::Item;

/// Trusts the one certificate whose SHA-256 fingerprint it was given.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let found = certificate_fingerprint(end_entity.as_ref());
        if found == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate has fingerprint {found}, not {} as the credentials say: refusing to talk to it",
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// An HTTP failure as the server described it.
#[derive(Debug, Deserialize)]
struct ApiFailure {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The HTTPS client of a host.
pub struct HostClient {
    http: reqwest::blocking::Client,
    /// For uploads straight to the vault's store, with the grants the
    /// server signs: the store's own certificate, checked as usual.
    direct: reqwest::blocking::Client,
    /// Set once a grant's upload could not reach the store.
    store_unreachable: AtomicBool,
    server: String,
    vault: String,
    token: Option<String>,
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

impl HostClient {
    /// A client of `server` that trusts only the certificate `fingerprint`
    /// names, for the vault named `vault`.
    ///
    /// # Errors
    /// `Invalid` for a bad address or fingerprint.
    pub fn new(server: &str, fingerprint: &str, vault: &str) -> Result<HostClient> {
        if !server.starts_with("https://") {
            return Err(ServiceError::Invalid(format!("{server:?} is not an https:// address")));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Pinned { fingerprint: normalize_fingerprint(fingerprint)?, provider: provider.clone() };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let http = reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| ServiceError::Internal(chain(&e)))?;
        let direct = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| ServiceError::Internal(chain(&e)))?;
        Ok(HostClient {
            http,
            direct,
            store_unreachable: AtomicBool::new(false),
            server: server.trim_end_matches('/').to_string(),
            vault: vault.to_string(),
            token: None,
        })
    }

    #[must_use]
    pub fn with_token(mut self, token: &str) -> HostClient {
        self.token = Some(token.to_string());
        self
    }

    fn url(&self, rest: &str) -> String {
        format!("{}/api/v1/vaults/{}/{rest}", self.server, self.vault)
    }

    fn send(&self, req: reqwest::blocking::RequestBuilder) -> Result<reqwest::blocking::Response> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().map_err(|e| {
            ServiceError::refused(
                ServiceErrorKind::Other,
                format!("cannot reach the vault's server {}: {}", self.server, chain(&e)),
                Remedy::ReachServer { server: self.server.clone() },
            )
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let failure: ApiFailure = resp
            .bytes()
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(ApiFailure { code: String::new(), message: format!("HTTP {status}") });
        let message = format!("the server refused: {} ({})", failure.message, failure.code);
        let kind = match status.as_u16() {
            401 => {
                return Err(ServiceError::refused(
                    ServiceErrorKind::PermissionDenied,
                    format!("the server does not accept this host's identity (unregistered?): {}", failure.message),
                    Remedy::RegisterHost,
                ));
            }
            403 => ServiceErrorKind::PermissionDenied,
            404 => return Err(ServiceError::NotFound(message)),
            409 => return Err(ServiceError::Conflict(message)),
            400 | 422 => return Err(ServiceError::Invalid(message)),
            507 => ServiceErrorKind::NoSpace,
            _ => ServiceErrorKind::Other,
        };
        Err(ServiceError::refused(kind, message, Remedy::AskAdmin))
    }

    fn json<T: DeserializeOwned>(&self, req: reqwest::blocking::RequestBuilder) -> Result<T> {
        let body = self.send(req)?.bytes().map_err(|e| ServiceError::Internal(chain(&e)))?;
        serde_json::from_slice(&body).map_err(|e| ServiceError::Internal(format!("the server's answer: {e}")))
    }

    fn post<B: Serialize, T: DeserializeOwned>(&self, url: String, body: &B) -> Result<T> {
        let bytes = serde_json::to_vec(body).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let req = self.http.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(bytes);
        self.json(req)
    }

    /// Redeems credentials.
    ///
    /// # Errors
    /// The server's refusal (used, expired or unknown credentials).
    pub fn register(&self, reg: &Registration) -> Result<Registered> {
        self.post(self.url("hosts/register"), reg)
    }

    /// This host's items.
    ///
    /// # Errors
    /// The server's refusal; a network error.
    pub fn items(&self) -> Result<Vec<Item>> {
        self.json(self.http.get(self.url("host/items")))
    }

    /// Asks the server to start the backup job it assigned (or one of the
    /// host's own asking: an item and nothing else).
    ///
    /// # Errors
    /// The server's refusal (not this host's item, protection stopped).
    pub fn start_backup(&self, work: &Assignment) -> Result<StartedJob> {
        self.post(self.url("host/jobs"), work)
    }

    /// The backups the server asks of this host, waiting up to `wait` for
    /// one.
    ///
    /// # Errors
    /// The server's refusal; a network error.
    pub fn work(&self, wait: Duration) -> Result<Vec<Assignment>> {
        self.json(self.http.get(self.url(&format!("host/work?wait={}", wait.as_secs()))))
    }

    /// The chunks the vault holds of this host's.
    ///
    /// # Errors
    /// The server's refusal; a network error.
    pub fn known_chunks(&self, job: &RecordId) -> Result<HashSet<ChunkId>> {
        let bytes = self
            .send(self.http.get(self.url(&format!("host/jobs/{}/chunks", job.to_hex()))))?
            .bytes()
            .map_err(|e| ServiceError::Internal(chain(&e)))?;
        if bytes.len() % 32 != 0 {
            return Err(ServiceError::Internal("the server's chunk list is cut short".into()));
        }
        Ok(bytes
            .chunks_exact(32)
            .map(|c| {
                let mut id = [0u8; 32];
                id.copy_from_slice(c);
                ChunkId(id)
            })
            .collect())
    }

    /// Reports on a job.
    ///
    /// # Errors
    /// The server's refusal (the point's check); a network error.
    pub fn report(&self, job: &RecordId, report: &HostReport) -> Result<ReportReply> {
        self.post(self.url(&format!("host/jobs/{}/report", job.to_hex())), report)
    }

    /// Answers a discovery the server asked under `request`.
    ///
    /// # Errors
    /// The server's refusal; a network error.
    pub fn found(&self, request: &RecordId, found: &crate::fleet::discover::Discovery) -> Result<()> {
        let bytes = serde_json::to_vec(found).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let url = self.url(&format!("host/discoveries/{}", request.to_hex()));
        self.send(self.http.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(bytes))?;
        Ok(())
    }

    /// The point a restore job was granted, as a tar stream.
    ///
    /// # Errors
    /// The server's refusal (not a restore, fetched already); a network
    /// error.
    pub fn archive(&self, job: &RecordId) -> Result<impl std::io::Read> {
        self.send(self.http.get(self.url(&format!("host/jobs/{}/archive", job.to_hex()))))
    }

    /// Uploads an object through the server, waiting and trying again
    /// while the server has no room for it (503).
    fn put_object(&self, job: &RecordId, name: &str, bytes: &[u8]) -> Result<()> {
        let url = self.url(&format!("host/jobs/{}/objects/{name}", job.to_hex()));
        let mut wait = Duration::from_millis(500);
        for _ in 0..BUSY_TRIES {
            match self.send(self.http.put(&url).body(bytes.to_vec())) {
                Err(e) if e.to_string().ends_with("(unavailable)") => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(8));
                }
                other => return other.map(|_| ()),
            }
        }
        self.send(self.http.put(url).body(bytes.to_vec())).map(|_| ())
    }

    /// Uploads a pack: straight to the store when the server grants it,
    /// else through the server. Returns whether it went straight.
    ///
    /// A try that may pass (no answer, a time-out, a server error) is made
    /// again with a fresh grant (the server gives one again for the same
    /// pack, and a store that finds it stored answers so); a pack the
    /// store refuses goes through the server, and after tries that all
    /// failed to reach the store, so does the rest of this backup.
    fn put_pack(&self, job: &RecordId, name: &str, bytes: &[u8]) -> Result<bool> {
        if self.store_unreachable.load(Ordering::Relaxed) {
            return self.put_object(job, name, bytes).map(|()| false);
        }
        let ask = UploadAsk { name: name.to_string(), size: bytes.len() as u64 };
        for attempt in 0..DIRECT_TRIES {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(250 << attempt));
            }
            let way: UploadWay = self.post(self.url(&format!("host/jobs/{}/grants", job.to_hex())), &ask)?;
            let grant = match way {
                UploadWay { stored: true, .. } => return Ok(true),
                UploadWay { grant: None, .. } => return self.put_object(job, name, bytes).map(|()| false),
                UploadWay { grant: Some(grant), .. } => grant,
            };
            match self.put_direct(&grant, bytes) {
                Direct::Stored => return Ok(true),
                Direct::TryAgain => {}
                Direct::Refused => return self.put_object(job, name, bytes).map(|()| false),
            }
        }
        self.store_unreachable.store(true, Ordering::Relaxed);
        self.put_object(job, name, bytes).map(|()| false)
    }

    /// Sends a pack to the store with a grant, once.
    fn put_direct(&self, grant: &DirectGrant, bytes: &[u8]) -> Direct {
        let mut req = self.direct.put(&grant.url).body(bytes.to_vec());
        // the body sets the length; a second header would conflict
        for (k, v) in grant.headers.iter().filter(|(k, _)| !k.eq_ignore_ascii_case("content-length")) {
            req = req.header(k.as_str(), v.as_str());
        }
        // the URL carries the grant's signature: kept out of any message
        let Ok(resp) = req.send().map_err(reqwest::Error::without_url) else {
            return Direct::TryAgain;
        };
        let status = resp.status().as_u16();
        let body = if resp.status().is_success() { String::new() } else { resp.text().unwrap_or_default() };
        match status {
            200..=299 => Direct::Stored,
            // created by an earlier try whose answer was lost (named after
            // its bytes: it is this pack)
            412 => Direct::Stored,
            409 if body.contains("BlobAlreadyExists") => Direct::Stored,
            408 | 429 | 500..=599 => Direct::TryAgain,
            400 if body.contains("RequestTimeout") => Direct::TryAgain,
            // refused (an Azure create grant on a blob that exists answers
            // 403 too): the server takes it and knows
            _ => Direct::Refused,
        }
    }
}

/// What became of one upload straight to the store.
enum Direct {
    Stored,
    TryAgain,
    Refused,
}

/// Tries of an upload the server had no room for, before the last.
const BUSY_TRIES: u32 = 8;

/// Tries of one upload straight to the store.
const DIRECT_TRIES: u32 = 4;

/// What a host writes its backup to: the server, create-only. It can read,
/// list and delete nothing.
pub struct UploadStore {
    client: Arc<HostClient>,
    job: RecordId,
    /// Bytes sent straight to the store, and through the server.
    pub direct: AtomicU64,
    pub through_server: AtomicU64,
}

impl UploadStore {
    pub fn new(client: Arc<HostClient>, job: RecordId) -> UploadStore {
        UploadStore { client, job, direct: AtomicU64::new(0), through_server: AtomicU64::new(0) }
    }
}

fn cannot(operation: &'static str, name: &str) -> StoreError {
    StoreError::new(StoreErrorKind::PermissionDenied, operation, name)
        .with_detail("a registered host adds objects through its server and reads none")
}

impl Store for UploadStore {
    fn location(&self) -> String {
        format!("{} (vault {}, through its server)", self.client.server, self.client.vault)
    }

    fn capabilities(&self) -> Capabilities {
        // packs go mostly straight to an object store: as many at once as
        // the server's own uploads to one (`OpendalStore`)
        Capabilities { conditional_replace: false, parallel_requests: 8, remote: true }
    }

    fn get(&self, name: &str) -> std::result::Result<Vec<u8>, StoreError> {
        Err(cannot("get", name))
    }

    fn get_range(&self, name: &str, _offset: u64, _len: u64) -> std::result::Result<Vec<u8>, StoreError> {
        Err(cannot("get", name))
    }

    fn put(&self, name: &str, data: &[u8], mode: PutMode) -> std::result::Result<ObjectInfo, StoreError> {
        if !matches!(mode, PutMode::Create) {
            return Err(cannot("put", name));
        }
        let sent = if boveda_vault::parse_pack_name(name).is_some() {
            self.client.put_pack(&self.job, name, data).map(|direct| {
                let counter = if direct { &self.direct } else { &self.through_server };
                counter.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            })
        } else {
            self.client.put_object(&self.job, name, data).map(|()| {
                self.through_server.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
            })
        };
        sent.map_err(|e| {
            let kind = match e.kind() {
                ServiceErrorKind::PermissionDenied => StoreErrorKind::PermissionDenied,
                ServiceErrorKind::NoSpace => StoreErrorKind::NoSpace,
                _ => StoreErrorKind::Other,
            };
            StoreError::new(kind, "put", name).with_detail(e.to_string())
        })?;
        Ok(ObjectInfo::new(name, data.len() as u64))
    }

    fn list_pages(
        &self,
        prefix: &str,
        _page: &mut dyn FnMut(Vec<ObjectInfo>) -> std::ops::ControlFlow<()>,
    ) -> std::result::Result<(), StoreError> {
        Err(cannot("list", prefix))
    }

    fn stat(&self, name: &str) -> std::result::Result<ObjectInfo, StoreError> {
        Err(cannot("stat", name))
    }

    fn delete(&self, name: &str) -> std::result::Result<(), StoreError> {
        Err(cannot("delete", name))
    }

    fn abandoned_uploads(&self, _before: SystemTime) -> std::result::Result<Vec<AbandonedUpload>, StoreError> {
        Ok(Vec::new())
    }

    fn discard_upload(&self, upload: &AbandonedUpload) -> std::result::Result<(), StoreError> {
        Err(cannot("delete", &upload.name))
    }
}

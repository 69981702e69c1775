//! Handlers of the fleet (docs/FLEET.md).
//!
//! An admin's, with an access token like every route of the table: list
//! the registered hosts, make credentials, unregister a host. A host's,
//! outside the table: registering (with the credentials' secret), and,
//! with the host's own token (`bvh_...`), what its backups need: its
//! items, a backup job, the chunks it need not send, uploads (create-only,
//! checked) and reports. A host token opens nothing else, and an access
//! token opens none of these.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use boveda_service as svc;
use boveda_service::fleet::intake::{HostReport, ReportReply, StartedJob};
use boveda_service::fleet::work::Assignment;
use boveda_service::fleet::{Host, HostCredentials, Registered, Registration};
use serde::Deserialize;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::{AppState, Served, blocking};

use super::extract::{Body, ToBody, now, param};

pub(super) async fn hosts(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<svc::fleet::HostOverview>>> {
    let (vault, now) = (caller.served()?.vault.clone(), now(&app));
    Ok(Json(blocking(move || svc::fleet::host_overview(&vault, now)).await?))
}

/// A request for credentials.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct NewCredentials {
    /// Hours they stay valid (default 48).
    #[serde(default)]
    expires_hours: Option<u32>,
    /// The address hosts reach this server at; default: the server's
    /// public address, or the one this request came to.
    #[serde(default)]
    server: Option<String>,
}

pub(super) async fn create_credentials(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Body(req): Body<NewCredentials>,
) -> ApiResult<(StatusCode, Json<HostCredentials>)> {
    let Some(fingerprint) = app.config.tls_fingerprint.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "hosts register over HTTPS only: start `boveda serve` with --tls-cert and --tls-key",
        ));
    };
    let server = match req.server.or_else(|| app.config.public_url.clone()) {
        Some(s) => s,
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).ok_or_else(|| {
                ApiError::invalid(Some("server".into()), "say which address hosts reach this server at")
            })?;
            format!("https://{host}")
        }
    };
    let life = jiff::SignedDuration::from_hours(i64::from(req.expires_hours.unwrap_or(48)));
    let vault = caller.served()?.vault.clone();
    let now = now(&app);
    let creds = blocking(move || svc::fleet::create_credentials(&vault, &server, &fingerprint, life, now)).await?;
    Ok((StatusCode::CREATED, Json(creds)))
}

pub(super) async fn unregister_host(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Json<Host>> {
    let served = caller.served()?.clone();
    let vault = served.vault.clone();
    let (name, now) = (param(&params, "host"), now(&app));
    let host = blocking(move || svc::fleet::unregister_host(&vault, &name, now)).await?;
    served.changed();
    Ok(Json(host))
}

/// How long a discovery waits for the host's answer.
const DISCOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(25);

/// `POST hosts/{host}/discover`: asks the host's agent what it has in a
/// folder (and its VMs), and answers with what it found.
pub(super) async fn discover_on_host(
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
    Body(order): Body<svc::fleet::discover::DiscoverOrder>,
) -> ApiResult<Json<svc::fleet::discover::Discovery>> {
    let served = caller.served()?.clone();
    let (vault, work, name) = (served.vault.clone(), served.host_work.clone(), param(&params, "host"));
    let found =
        blocking(move || svc::fleet::work::discover_on_host(&vault, &work, &name, order, DISCOVER_WAIT)).await?;
    Ok(Json(found))
}

/// `POST host/discoveries/{request}`: a host's answer to a discovery.
pub(super) async fn host_found(
    State(app): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    headers: HeaderMap,
    Body(found): Body<svc::fleet::discover::Discovery>,
) -> ApiResult<StatusCode> {
    let (served, host) = host_of(&app, &params, &headers).await?;
    let text = param(&params, "request");
    let request = svc::RecordId::from_hex(&text).ok_or_else(|| ApiError::not_found(format!("no request {text:?}")))?;
    let work = served.host_work.clone();
    let mut found = found;
    found.host = host.name.clone();
    blocking(move || work.found(&host, &request, found)).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn served_vault(app: &AppState, params: &BTreeMap<String, String>) -> ApiResult<Arc<Served>> {
    let name = param(params, "vault");
    app.find(&name).ok_or_else(|| ApiError::not_found(format!("no vault named {name:?} is served here")))
}

/// `POST /api/v1/vaults/{vault}/hosts/register`: the credentials' secret
/// is the authority.
pub(super) async fn register(
    State(app): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    Body(req): Body<Registration>,
) -> ApiResult<(StatusCode, Json<Registered>)> {
    let served = served_vault(&app, &params)?;
    let (vault, now) = (served.vault.clone(), now(&app));
    let registered = blocking(move || svc::fleet::register_host(&vault, &req, now)).await?;
    served.changed();
    Ok((StatusCode::CREATED, Json(registered)))
}

/// The host a request's bearer token belongs to.
async fn host_of(
    app: &AppState,
    params: &BTreeMap<String, String>,
    headers: &HeaderMap,
) -> ApiResult<(Arc<Served>, Host)> {
    let served = served_vault(app, params)?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::unauthorized("a host's token is needed (Authorization: Bearer bvh_...)"))?
        .to_string();
    let s = served.clone();
    let found = blocking(move || {
        let set = s.hosts()?;
        Ok(match set.check(&token) {
            Ok(host) => {
                s.heard_from(&host.id);
                Ok(host.clone())
            }
            Err(why) => Err(why),
        })
    })
    .await?;
    let host = found.map_err(|why| ApiError::unauthorized(format!("host token refused: {}", why.as_str())))?;
    Ok((served, host))
}

/// A host's request about one of its jobs: the served vault, the host, the
/// job's id, the vault and the server's host jobs.
type HostJobCall = (Arc<Served>, Host, svc::RecordId, Arc<svc::Vault>, Arc<svc::fleet::intake::HostJobs>);

async fn host_job_of(app: &AppState, params: &BTreeMap<String, String>, headers: &HeaderMap) -> ApiResult<HostJobCall> {
    let (served, host) = host_of(app, params, headers).await?;
    let job = job_param(params)?;
    let (vault, jobs) = (served.vault.clone(), served.host_jobs.clone());
    Ok((served, host, job, vault, jobs))
}

fn job_param(params: &BTreeMap<String, String>) -> ApiResult<svc::RecordId> {
    let text = param(params, "job");
    svc::RecordId::from_hex(&text).ok_or_else(|| ApiError::not_found(format!("no job {text:?}")))
}

pub(super) async fn host_items(
    State(app): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Json<Vec<svc::Item>>> {
    let (served, host) = host_of(&app, &params, &headers).await?;
    let vault = served.vault.clone();
    Ok(Json(blocking(move || svc::fleet::host_items(&vault, &host)).await?))
}

pub(super) async fn host_start_backup(
    State(app): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    headers: HeaderMap,
    Body(req): Body<Assignment>,
) -> ApiResult<(StatusCode, Json<StartedJob>)> {
    let (served, host) = host_of(&app, &params, &headers).await?;
    let (vault, jobs, work) = (served.vault.clone(), served.host_jobs.clone(), served.host_work.clone());
    let terms = svc::fleet::intake::HostJobTerms {
        clock: app.config.jobs.clock.clone(),
        heartbeat: app.config.jobs.heartbeat,
        silence: app.config.host_silence,
        quota: app.config.host_quota,
        direct: app.config.host_direct,
    };
    let started = blocking(move || jobs.start(vault, &terms, host, &req, &work)).await?;
    served.changed();
    Ok((StatusCode::CREATED, Json(started)))
}

#[derive(Deserialize)]
pub(super) struct WorkQuery {
    #[serde(default)]
    wait: u64,
}

/// The longest a host's request for work waits (within a request's limit).
const WORK_WAIT_LIMIT: u64 = 20;

pub(super) async fn host_work(
    State(app): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    headers: HeaderMap,
    super::extract::Q(q): super::extract::Q<WorkQuery>,
) -> ApiResult<Json<Vec<Assignment>>> {
    let (served, host) = host_of(&app, &params, &headers).await?;
    let (vault, work, now) = (served.vault.clone(), served.host_work.clone(), now(&app));
    let wait = std::time::Duration::from_secs(q.wait.min(WORK_WAIT_LIMIT));
    Ok(Json(blocking(move || work.take(&vault, &host, now, wait)).await?))
}

pub(super) async fn host_chunks(
    State(app): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (_, host, job, vault, jobs) = host_job_of(&app, &params, &headers).await?;
    let bytes = blocking(move || {
        // only during a job of its own: the list is what that backup needs
        jobs.check_running(&host, &job)?;
        svc::fleet::intake::known_chunks(&vault, &host)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

pub(super) async fn host_upload(
    State(app): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> ApiResult<StatusCode> {
    // the body is read only for a host with a job running: nobody else
    // makes the server hold up to a pack's size in memory
    let (_, host, job, vault, jobs) = host_job_of(&app, &params, &headers).await?;
    jobs.check_running(&host, &job).map_err(ApiError::from)?;
    // and only once there is room for it: uploads at once are bounded by
    // the server's budget, whatever the number of hosts
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| ApiError::new(StatusCode::LENGTH_REQUIRED, "length_required", "an upload says its length"))?;
    let name = param(&params, "name");
    let index = name.starts_with("index/");
    let limit = if index { crate::host_room::INDEX_LIMIT } else { super::HOST_OBJECT_LIMIT as u64 };
    if declared > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{declared} bytes: more than {limit} an object of this kind may be"),
        ));
    }
    let _room = app.host_room.take(host.id, index, declared).await?;
    let body = axum::body::to_bytes(body, declared as usize).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "an object larger than a pack may be, or cut short",
        )
    })?;
    let len = body.len() as u64;
    let added = blocking(move || jobs.upload(&vault, &host, &job, &name, &body)).await?;
    app.counters.host_bytes.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    Ok(match added {
        svc::HostObject::Added => StatusCode::CREATED,
        svc::HostObject::AlreadyStored => StatusCode::OK,
    })
}

pub(super) async fn host_grant(
    State(app): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    headers: HeaderMap,
    Body(ask): Body<svc::fleet::intake::UploadAsk>,
) -> ApiResult<Json<svc::fleet::intake::UploadWay>> {
    let (_, host, job, vault, jobs) = host_job_of(&app, &params, &headers).await?;
    let size = ask.size;
    let way = blocking(move || jobs.upload_way(&vault, &host, &job, &ask)).await?;
    if way.grant.is_some() {
        app.counters.host_grants.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        app.counters.host_granted_bytes.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(Json(way))
}

pub(super) async fn host_report(
    State(app): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    headers: HeaderMap,
    Body(report): Body<HostReport>,
) -> ApiResult<Json<ReportReply>> {
    let (served, host, job, _, jobs) = host_job_of(&app, &params, &headers).await?;
    let ends = !matches!(report, HostReport::Progress(_));
    let reply = blocking(move || jobs.report(&host, &job, report)).await?;
    if ends {
        served.changed();
    }
    Ok(Json(reply))
}

/// A writer that hands what it is given to a response body, a chunk at a
/// time (from a blocking thread).
/// `GET host/jobs/{job}/archive`: the point a restore job was granted, as
/// a tar stream, once.
pub(super) async fn host_archive(
    State(app): State<AppState>,
    Path(params): Path<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (_, host, job, vault, jobs) = host_job_of(&app, &params, &headers).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        // the refusals (not a restore, fetched already) come before any byte
        let first = std::cell::Cell::new(Some(first_tx));
        let out = std::io::BufWriter::with_capacity(256 << 10, ToBody(tx.clone()));
        let ready = || {
            if let Some(f) = first.take() {
                let _ = f.send(Ok(()));
            }
        };
        if let Err(e) = jobs.archive(&vault, &host, &job, out, &ready) {
            match first.take() {
                Some(f) => {
                    let _ = f.send(Err(e));
                }
                None => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                }
            }
        }
    });
    match first_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err(ApiError::internal("the archive ended before it began")),
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], axum::body::Body::from_stream(stream)).into_response())
}

//! Handlers of recovery points: listing, browsing, restoring (and where a
//! restore may write), and downloading.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use boveda_service as svc;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::{AppState, blocking};

use super::extract::{Body, Q, ToBody, now};

#[derive(Serialize)]
pub(super) struct Points {
    points: Vec<svc::PointSummary>,
    /// Why the list may be incomplete, if it may.
    note: Option<String>,
}

pub(super) async fn points(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Points>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let now = now(&app);
    let (points, note) = blocking(move || svc::list_points(&vault, &item, now, false)).await?;
    Ok(Json(Points { points, note }))
}

pub(super) async fn point(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Json<svc::PointSummary>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let selector = params.get("point").cloned().unwrap_or_default();
    let now = now(&app);
    Ok(Json(blocking(move || svc::show_point(&vault, &item, &selector, now)).await?))
}

#[derive(Deserialize)]
pub(super) struct PathQuery {
    #[serde(default)]
    path: Option<String>,
}

pub(super) async fn browse(
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
    Q(q): Q<PathQuery>,
) -> ApiResult<Json<Vec<svc::PointEntry>>> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let selector = params.get("point").cloned().unwrap_or_default();
    let path = q.path.unwrap_or_else(|| "/".into());
    let entries = blocking(move || {
        let point = svc::find_point(&vault, &item, &selector)?;
        svc::browse_point(&vault, &item, &point, &path)
    })
    .await?;
    Ok(Json(entries))
}

pub(super) async fn restore(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<svc::RestoreTarget>,
) -> ApiResult<(StatusCode, Json<svc::Job>)> {
    let served = caller.served()?.clone();
    let (vault, item) = (served.vault.clone(), caller.item()?.clone());
    let env = app.config.jobs.clone();
    let roots = app.config.restore_roots.clone();
    let job = if item.host.is_some() {
        // onto the item's host: its agent restores, into a folder it allows
        let work = served.host_work.clone();
        let order = svc::fleet::restores::HostRestore { point: req.point, target: req.target, paths: req.paths };
        let wait = std::time::Duration::from_secs(15);
        blocking(move || svc::fleet::restores::restore_on_host(&vault, &work, &item, &order, wait)).await?
    } else {
        blocking(move || svc::start_restore(vault, &env, item, req, &roots)).await?
    };
    served.changed();
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Verifies a point of the item now, with its saved settings.
pub(super) async fn verify(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<svc::VerifyNow>,
) -> ApiResult<(StatusCode, Json<svc::Job>)> {
    let served = caller.served()?.clone();
    let (vault, item) = (served.vault.clone(), caller.item()?.clone());
    let env = app.config.jobs.clone();
    let job = blocking(move || svc::start_verify(vault, &env, item, req)).await?;
    served.changed();
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Where a restore of an item may write.
#[derive(Serialize)]
pub(super) struct RestoreOptions {
    /// The registered host the item is on (its agent restores there, into
    /// the folders it allows); none: this server.
    host: Option<String>,
    /// The folders this server restores into (`serve --restore-root`);
    /// empty for an item on a host.
    roots: Vec<std::path::PathBuf>,
    /// What the target names: `folder` (files, a VM's disks and
    /// definition) or `image file` (a disk).
    target: &'static str,
}

pub(super) async fn restore_options(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<RestoreOptions>> {
    let served = caller.served()?.clone();
    let item = caller.item()?.clone();
    let host = match item.host {
        Some(_) => {
            let items = served.items(now(&app)).await?;
            Some(items.value.iter().find(|o| o.item.id == item.id).and_then(|o| o.host.clone()).unwrap_or_default())
        }
        None => None,
    };
    let target = if matches!(item.source, svc::ItemSource::Disk { .. }) { "image file" } else { "folder" };
    let roots = if host.is_some() { Vec::new() } else { app.config.restore_roots.clone() };
    Ok(Json(RestoreOptions { host, roots, target }))
}

/// Writes that say when the first byte was written: what fails before it
/// is an error status, not a cut archive.
struct FirstByte<W> {
    out: W,
    first: Option<tokio::sync::oneshot::Sender<Result<(), svc::ServiceError>>>,
}

impl<W: std::io::Write> std::io::Write for FirstByte<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !buf.is_empty()
            && let Some(f) = self.first.take()
        {
            let _ = f.send(Ok(()));
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A download's place among those streaming: given back when dropped.
struct DownloadSlot(AppState, svc::RecordId);

impl DownloadSlot {
    /// A place for `token`'s download, or 429 when the server's or the
    /// token's are taken (each download holds a thread while it streams).
    fn take(app: &AppState, token: svc::RecordId) -> ApiResult<DownloadSlot> {
        let Ok(mut d) = app.downloads.lock() else {
            return Err(crate::error::ApiError::internal("the download table is unusable"));
        };
        let mine = d.1.get(&token).copied().unwrap_or(0);
        if d.0 >= app.config.max_downloads || mine >= app.config.max_downloads_per_token {
            let mut e = crate::error::ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!(
                    "{} downloads stream at once ({} per token): wait for one to end",
                    app.config.max_downloads, app.config.max_downloads_per_token
                ),
            );
            e.retry_after = Some(10);
            return Err(e);
        }
        d.0 += 1;
        *d.1.entry(token).or_default() += 1;
        Ok(DownloadSlot(app.clone(), token))
    }
}

impl Drop for DownloadSlot {
    fn drop(&mut self) {
        if let Ok(mut d) = self.0.downloads.lock() {
            d.0 = d.0.saturating_sub(1);
            if let Some(n) = d.1.get_mut(&self.1) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    d.1.remove(&self.1);
                }
            }
        }
    }
}

/// Writes until a deadline: a download read too slowly ends there.
struct Until<W> {
    out: W,
    deadline: std::time::Instant,
}

impl<W: std::io::Write> std::io::Write for Until<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if std::time::Instant::now() > self.deadline {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the download ran past its time limit"));
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// `GET .../points/{point}/download?path=/a&path=/b`: the chosen files
/// and folders of a point (all of it without `path`) as a tar stream, a
/// few at once per server and per token, each for a limited time.
pub(super) async fn download(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> ApiResult<Response> {
    let (vault, item) = (caller.served()?.vault.clone(), caller.item()?.clone());
    let selector = params.get("point").cloned().unwrap_or_default();
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|e| crate::error::ApiError::invalid(Some("path".into()), format!("the query does not parse: {e}")))?;
    let paths: Vec<String> = pairs.into_iter().filter(|(k, _)| k == "path").map(|(_, v)| v).collect();
    let name = item.name.clone();
    let slot = DownloadSlot::take(&app, caller.token.id)?;
    let deadline = std::time::Instant::now() + app.config.download_limit;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let _slot = slot; // held while the archive streams
        let body = Until { out: ToBody(tx.clone()), deadline };
        let mut out = FirstByte { out: std::io::BufWriter::with_capacity(256 << 10, body), first: Some(first_tx) };
        let result = svc::download_point(&vault, &item, &selector, &paths, &mut out)
            .and_then(|_| std::io::Write::flush(&mut out).map_err(|e| svc::ServiceError::Internal(e.to_string())));
        if let Err(e) = result {
            match out.first.take() {
                Some(f) => {
                    let _ = f.send(Err(e));
                }
                None => {
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                }
            }
        } else if let Some(f) = out.first.take() {
            // an empty archive still has its end blocks; a point with nothing
            let _ = f.send(Ok(()));
        }
    });
    match first_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err(crate::error::ApiError::internal("the download ended before it began")),
    }
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    let disposition = format!("attachment; filename=\"{name}.tar\"");
    Ok((
        [(header::CONTENT_TYPE, "application/x-tar".to_string()), (header::CONTENT_DISPOSITION, disposition)],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

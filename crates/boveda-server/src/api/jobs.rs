//! Handlers of jobs: listing, one job, stopping, and a job's progress as
//! Server-Sent Events.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use boveda_service as svc;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::{AppState, Served, blocking};

use super::extract::{Q, json_bytes, param};

/// Whether a token may see a job: scoped tokens, only their items' jobs.
pub(super) fn sees_job(token: &svc::AccessToken, job: &svc::Job) -> bool {
    !token.is_scoped() || job.item_id.is_some_and(|id| token.sees_item(&id))
}

pub(super) async fn jobs(Extension(caller): Extension<Caller>, Q(q): Q<svc::JobQuery>) -> ApiResult<Response> {
    let filter = svc::JobFilter::parse(&q)?;
    let all = caller.served()?.jobs_entry().await?;
    let unfiltered = q.is_empty();
    let live = all.value.iter().any(|j| j.state.is_running() && svc::live_progress(&j.id).is_some());
    if unfiltered && !caller.token.is_scoped() && !live {
        return Ok(json_bytes(all.json.clone()));
    }
    let mut shown: Vec<svc::Job> =
        all.value.iter().filter(|j| filter.matches(j) && sees_job(&caller.token, j)).cloned().collect();
    svc::with_live_progress(&mut shown);
    Ok(Json(shown).into_response())
}

pub(super) async fn visible_job(caller: &Caller, served: &Served, id: &str) -> ApiResult<svc::Job> {
    let vault = served.vault.clone();
    let id = id.to_string();
    let asked = id.clone();
    let mut job = blocking(move || svc::find_job(&vault, &id)).await?;
    svc::with_live_progress(std::slice::from_mut(&mut job));
    if !sees_job(&caller.token, &job) {
        // as absent as a job that does not exist
        return Err(ApiError::from(svc::ServiceError::refused(
            svc::ServiceErrorKind::NotFound,
            format!("no job with id {asked:?} in this vault"),
            svc::Remedy::ListJobs,
        )));
    }
    Ok(job)
}

pub(super) async fn job(
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Json<svc::Job>> {
    Ok(Json(visible_job(&caller, caller.served()?, &param(&params, "job")).await?))
}

pub(super) async fn stop(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Json<svc::Job>> {
    let served = caller.served()?.clone();
    let job = visible_job(&caller, &served, &param(&params, "job")).await?;
    let vault = served.vault.clone();
    let host = app.config.jobs.hostname.clone();
    let stopped = blocking(move || svc::stop_job(&vault, &job.id.to_hex(), &host)).await?;
    served.changed();
    Ok(Json(stopped))
}

/// Ends an event stream's counts (in all, and its token's) when the
/// stream is dropped.
pub(super) struct StreamSlot(AppState, svc::RecordId);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.counters.streams.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut by) = self.0.streams_by_token.lock()
            && let Some(n) = by.get_mut(&self.1)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by.remove(&self.1);
            }
        }
    }
}

/// A job's progress as Server-Sent Events: `progress` whenever the job's
/// record changes, then `end` with the final job. The stream ends with
/// the job, or after the server's stream limit; streams at once are
/// limited, and each polls the vault's shared job list, so a client that
/// never disconnects holds one small task and no thread.
pub(super) async fn job_events(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(params): Path<BTreeMap<String, String>>,
) -> ApiResult<Response> {
    let served = caller.served()?.clone();
    let first = visible_job(&caller, &served, &param(&params, "job")).await?;
    let token = caller.token.id;
    {
        let Ok(mut by) = app.streams_by_token.lock() else {
            return Err(ApiError::internal("the stream table is unusable"));
        };
        let mine = by.entry(token).or_default();
        if *mine >= app.config.max_streams_per_token {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!(
                    "this token holds {} event streams, as many as one token may; close one first",
                    app.config.max_streams_per_token
                ),
            );
            e.retry_after = Some(5);
            return Err(e);
        }
        *mine += 1;
    }
    let slot = StreamSlot(app.clone(), token);
    if app.counters.streams.fetch_add(1, Ordering::Relaxed) >= app.config.max_streams {
        drop(slot); // gives both counts back (the total was counted once)
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "too many event streams open"));
    }
    let deadline = Instant::now() + app.config.stream_limit;
    let state = (Some(first), None::<svc::Job>, served, slot, false);
    let stream = futures::stream::unfold(state, move |(next, last, served, slot, ended)| async move {
        let over = |slot: &StreamSlot| Instant::now() >= deadline || slot.0.closing.load(Ordering::Relaxed);
        if ended || over(&slot) {
            return None;
        }
        let mut job = next;
        while job.is_none() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if over(&slot) {
                return None;
            }
            let id = last.as_ref().map(|j| j.id)?;
            let all = served.jobs().await.ok()?;
            let mut current = all.iter().find(|j| j.id == id).cloned()?;
            svc::with_live_progress(std::slice::from_mut(&mut current));
            if last.as_ref() != Some(&current) {
                job = Some(current);
            }
        }
        let job = job?;
        let done = !job.state.is_running();
        let event = Event::default().event(if done { "end" } else { "progress" }).json_data(&job).ok()?;
        Some((Ok::<Event, Infallible>(event), (None, Some(job), served, slot, done)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

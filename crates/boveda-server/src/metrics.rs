//! `/metrics` in Prometheus' text format: the jobs of every vault the
//! token may see as a whole, the process's store requests, errors and
//! retries, and the server's own counters.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use boveda_service as svc;

use crate::{AppState, blocking};

/// A label value as the text format writes it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Text(String);

impl Text {
    fn help(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))).collect();
        let braces = if labels.is_empty() { String::new() } else { format!("{{{}}}", labels.join(",")) };
        let _ = writeln!(self.0, "{name}{braces} {value}");
    }
}

pub(crate) async fn metrics(State(app): State<AppState>, req: Request) -> Response {
    let grants = match app.authenticate(&crate::auth::Asker::of(&req)).await {
        Ok((_, grants)) => grants,
        Err(e) => return e.into_response(),
    };
    let now = app.config.jobs.clock.now();
    let mut per_vault = Vec::new();
    for (served, _) in grants.iter().filter(|(_, t)| !t.is_scoped()) {
        let Ok(jobs) = served.jobs().await else { continue };
        let vault = served.vault.clone();
        if let Ok(m) = blocking(move || svc::vault_metrics(&vault, &jobs, now)).await {
            per_vault.push((served.name(), m));
        }
    }
    let mut t = Text(String::new());
    t.help("boveda_jobs", "gauge", "Jobs recorded in the vault, by operation and state.");
    for (v, m) in &per_vault {
        for ((op, state), n) in &m.jobs {
            t.sample("boveda_jobs", &[("vault", v), ("operation", op), ("state", state)], n);
        }
    }
    t.help("boveda_job_read_bytes", "gauge", "Bytes read by the vault's recorded jobs, by operation.");
    for (v, m) in &per_vault {
        for (op, n) in &m.bytes_read {
            t.sample("boveda_job_read_bytes", &[("vault", v), ("operation", op)], n);
        }
    }
    t.help("boveda_job_written_bytes", "gauge", "Bytes written by the vault's recorded jobs, by operation.");
    for (v, m) in &per_vault {
        for (op, n) in &m.bytes_written {
            t.sample("boveda_job_written_bytes", &[("vault", v), ("operation", op)], n);
        }
    }
    t.help("boveda_job_duration_seconds", "summary", "Durations of ended jobs, by operation.");
    for (v, m) in &per_vault {
        for (op, (sum, count)) in &m.durations {
            t.sample("boveda_job_duration_seconds_sum", &[("vault", v), ("operation", op)], sum);
            t.sample("boveda_job_duration_seconds_count", &[("vault", v), ("operation", op)], count);
        }
    }
    t.help(
        "boveda_last_successful_backup_timestamp_seconds",
        "gauge",
        "When each item's last successful backup ended (Unix time).",
    );
    for (v, m) in &per_vault {
        for (item, at) in &m.last_success {
            t.sample(
                "boveda_last_successful_backup_timestamp_seconds",
                &[("vault", v), ("item", item)],
                at.as_second(),
            );
        }
    }
    t.help("boveda_replication_lag_seconds", "gauge", "How long changes have waited to reach the secondary store.");
    for (v, m) in &per_vault {
        if let Some(lag) = m.replication_lag_secs {
            t.sample("boveda_replication_lag_seconds", &[("vault", v)], lag);
        }
    }
    let store = svc::store_requests();
    t.help("boveda_store_requests_total", "counter", "Requests this process sent to stores.");
    t.sample("boveda_store_requests_total", &[], store.requests());
    t.help("boveda_store_errors_total", "counter", "Store requests that failed.");
    t.sample("boveda_store_errors_total", &[], store.errors);
    t.help("boveda_store_retries_total", "counter", "Store calls tried again.");
    t.sample("boveda_store_retries_total", &[], svc::store_retries());
    t.help("boveda_store_read_bytes_total", "counter", "Bytes read from stores.");
    t.sample("boveda_store_read_bytes_total", &[], store.bytes_read);
    t.help("boveda_store_written_bytes_total", "counter", "Bytes written to stores.");
    t.sample("boveda_store_written_bytes_total", &[], store.bytes_written);
    let c = &app.counters;
    t.help("boveda_http_requests_total", "counter", "HTTP requests received.");
    t.sample("boveda_http_requests_total", &[], c.requests.load(Ordering::Relaxed));
    t.help("boveda_http_unauthorized_total", "counter", "Requests refused for a missing or bad token.");
    t.sample("boveda_http_unauthorized_total", &[], c.unauthorized.load(Ordering::Relaxed));
    t.help("boveda_http_denied_total", "counter", "Requests refused for a role or scope without the right.");
    t.sample("boveda_http_denied_total", &[], c.denied.load(Ordering::Relaxed));
    t.help(
        "boveda_host_upload_bytes_total",
        "counter",
        "Bytes of objects registered hosts uploaded through the server.",
    );
    t.sample("boveda_host_upload_bytes_total", &[], c.host_bytes.load(Ordering::Relaxed));
    t.help("boveda_host_grants_total", "counter", "Packs hosts were granted to upload straight to the store.");
    t.sample("boveda_host_grants_total", &[], c.host_grants.load(Ordering::Relaxed));
    t.help(
        "boveda_host_granted_bytes_total",
        "counter",
        "Bytes of the packs hosts were granted to upload straight to the store.",
    );
    t.sample("boveda_host_granted_bytes_total", &[], c.host_granted_bytes.load(Ordering::Relaxed));
    t.help("boveda_event_streams", "gauge", "Event streams open.");
    t.sample("boveda_event_streams", &[], c.streams.load(Ordering::Relaxed));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], t.0).into_response()
}

//! Handlers of the vault as a whole: the vaults a token sees, creating one,
//! its summary, dashboard, usage, alerts and import jobs.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Json};
use boveda_service as svc;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::{AppState, blocking};

use super::access::{VaultAccess, access};
use super::extract::{Body, json_bytes};

/// A vault as the vault list shows it to a token.
pub(super) async fn list_vaults(Extension(caller): Extension<Caller>) -> Json<Vec<VaultAccess>> {
    Json(access(&caller.grants))
}

pub(super) async fn create_vault(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(mut req): Body<svc::NewVault>,
) -> ApiResult<(StatusCode, Json<svc::VaultSummary>)> {
    // the token gets the same access to the new vault, from a vault where
    // it may manage everything
    let Some((from, _)) =
        caller.grants.iter().find(|(_, t)| t.role == svc::Role::Contributor && !t.is_scoped()).cloned()
    else {
        return Err(ApiError::forbidden("creating a vault needs an unscoped Contributor token"));
    };
    req.kdf = app.config.kdf;
    let pass = app.config.passphrase.clone();
    let token = caller.token.id;
    let (vault, summary) = blocking(move || {
        let vault = svc::create_vault(&req, &pass)?;
        svc::copy_token(&from.vault, &vault, &token)?;
        let summary = svc::summarize(&vault)?;
        Ok((vault, summary))
    })
    .await?;
    app.add(Arc::new(vault));
    Ok((StatusCode::CREATED, Json(summary)))
}

pub(super) async fn show_vault(Extension(caller): Extension<Caller>) -> ApiResult<Json<svc::VaultSummary>> {
    let vault = caller.served()?.vault.clone();
    let mut summary = blocking(move || svc::summarize(&vault)).await?;
    // a webhook's URL often carries its secret: only for those who may
    // change it; others learn that one is set
    if caller.token.role < svc::Role::Contributor {
        summary.webhook = summary.webhook.map(|_| "(set; a Contributor sees it)".into());
    }
    Ok(Json(summary))
}

/// `PATCH /vaults/{vault}/settings`: changes what `vault update` changes
/// (soft delete, immutability, store limits...); the summary after.
pub(super) async fn update_settings(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    Body(update): Body<svc::VaultUpdate>,
) -> ApiResult<Json<svc::VaultSummary>> {
    let vault = caller.served()?.vault.clone();
    let by = caller.token.by();
    let clock = app.config.jobs.clock.clone();
    let summary = blocking(move || {
        svc::update_vault(&vault, &update, &by, clock.as_ref())?;
        svc::summarize(&vault)
    })
    .await?;
    caller.served()?.changed();
    Ok(Json(summary))
}

pub(super) async fn dashboard(Extension(caller): Extension<Caller>) -> ApiResult<Json<svc::Dashboard>> {
    Ok(Json(caller.served()?.dashboard().await?))
}

/// Whether a token may see an alert: scoped tokens, only their items'.
fn sees_alert(token: &svc::AccessToken, a: &svc::Alert) -> bool {
    !token.is_scoped() || a.item.as_deref().is_some_and(|n| token.items.iter().any(|m| m.name.eq_ignore_ascii_case(n)))
}

pub(super) async fn alerts(Extension(caller): Extension<Caller>) -> ApiResult<Json<Vec<svc::Alert>>> {
    let vault = caller.served()?.vault.clone();
    let all = blocking(move || svc::list_alerts(&vault)).await?;
    let mut shown: Vec<svc::Alert> = all.into_iter().filter(|a| sees_alert(&caller.token, a)).collect();
    // why a webhook or mail failed names servers and ports: for those who
    // may change them
    if caller.token.role < svc::Role::Contributor {
        for a in &mut shown {
            if a.last_error.is_some() {
                a.last_error = Some("not delivered to the webhook (a Contributor sees why)".into());
            }
            if let Some(e) = a.email.as_mut().filter(|e| e.last_error.is_some()) {
                e.last_error = Some("not sent (a Contributor sees why)".into());
            }
        }
    }
    Ok(Json(shown))
}

/// Acknowledges an alert the token sees (one it does not see is as absent
/// as one that does not exist).
pub(super) async fn acknowledge_alert(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    axum::extract::Path(params): axum::extract::Path<std::collections::BTreeMap<String, String>>,
) -> ApiResult<Json<svc::Alert>> {
    let vault = caller.served()?.vault.clone();
    let id = super::extract::param(&params, "alert");
    let all = {
        let vault = vault.clone();
        blocking(move || svc::list_alerts(&vault)).await?
    };
    let absent = || {
        ApiError::from(svc::ServiceError::refused(
            svc::ServiceErrorKind::NotFound,
            format!("no alert with id {id:?} in this vault"),
            svc::Remedy::ListAlerts,
        ))
    };
    let found: Vec<&svc::Alert> = all.iter().filter(|a| !id.is_empty() && a.id.to_hex().starts_with(&id)).collect();
    let [one] = found.as_slice() else { return Err(absent()) };
    if !sees_alert(&caller.token, one) {
        return Err(absent());
    }
    let (full, by, now) = (one.id.to_hex(), caller.token.by(), app.config.jobs.clock.now());
    let alert = blocking(move || svc::acknowledge_alert(&vault, &full, &by, now)).await?;
    caller.served()?.changed();
    Ok(Json(alert))
}

pub(super) async fn usage(Extension(caller): Extension<Caller>) -> ApiResult<Response> {
    Ok(json_bytes(caller.served()?.usage().await?.json.clone()))
}

pub(super) async fn imports(Extension(caller): Extension<Caller>) -> ApiResult<Json<Vec<svc::ImportJob>>> {
    let vault = caller.served()?.vault.clone();
    Ok(Json(blocking(move || svc::list_import_jobs(&**vault.store())).await?))
}

/// One vault's row in the Backup center.
#[derive(serde::Serialize)]
pub(super) struct InVault<T> {
    vault: String,
    #[serde(flatten)]
    row: T,
}

/// Every vault the token sees, in one view: their items, the jobs of the
/// last 24 hours and the alerts still active or of the last 7 days.
#[derive(serde::Serialize)]
pub(super) struct Center {
    vaults: Vec<String>,
    items: Vec<InVault<svc::ItemOverview>>,
    jobs: Vec<InVault<svc::Job>>,
    alerts: Vec<InVault<svc::Alert>>,
    /// Vaults that could not be read now, with why; the rest is shown.
    unreadable: Vec<String>,
}

pub(super) async fn center(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Center>> {
    let now = app.config.jobs.clock.now();
    let day_ago = now - jiff::SignedDuration::from_hours(24);
    let week_ago = now - jiff::SignedDuration::from_hours(24 * 7);
    let mut center =
        Center { vaults: Vec::new(), items: Vec::new(), jobs: Vec::new(), alerts: Vec::new(), unreadable: Vec::new() };
    for (served, token) in &caller.grants {
        if token.role == svc::Role::SecurityAdmin {
            continue; // the guard's token sees its requests only
        }
        let name = served.name();
        let read = async {
            let items = served.items(now).await?;
            let jobs = served.jobs().await?;
            let vault = served.vault.clone();
            let alerts = blocking(move || svc::list_alerts(&vault)).await?;
            Ok::<_, ApiError>((items, jobs, alerts))
        };
        match read.await {
            Ok((items, jobs, alerts)) => {
                let items = items.value.iter().filter(|o| token.sees_item(&o.item.id)).cloned();
                center.items.extend(items.map(|row| InVault { vault: name.clone(), row }));
                let mut recent: Vec<svc::Job> =
                    jobs.iter().filter(|j| j.start >= day_ago && super::jobs::sees_job(token, j)).cloned().collect();
                svc::with_live_progress(&mut recent);
                center.jobs.extend(recent.into_iter().map(|row| InVault { vault: name.clone(), row }));
                center.alerts.extend(
                    alerts
                        .into_iter()
                        .filter(|a| sees_alert(token, a))
                        .filter(|a| a.state == svc::AlertState::Active || a.time >= week_ago)
                        .map(|row| InVault { vault: name.clone(), row }),
                );
                center.vaults.push(name);
            }
            Err(e) => center.unreadable.push(format!("{name}: {}", e.message)),
        }
    }
    center.jobs.sort_by_key(|j| std::cmp::Reverse(j.row.start));
    center.alerts.sort_by_key(|a| std::cmp::Reverse(a.row.time));
    Ok(Json(center))
}

#[derive(serde::Deserialize)]
pub(super) struct ReportQuery {
    #[serde(default = "thirty")]
    days: u32,
    /// `csv` for a CSV file; JSON otherwise.
    #[serde(default)]
    format: Option<String>,
}

fn thirty() -> u32 {
    30
}

/// The backup report of the last 7, 30 or 90 days (of the items the token
/// sees), as JSON or CSV.
pub(super) async fn report(
    State(app): State<AppState>,
    Extension(caller): Extension<Caller>,
    super::extract::Q(q): super::extract::Q<ReportQuery>,
) -> ApiResult<Response> {
    use axum::response::IntoResponse;
    let vault = caller.served()?.vault.clone();
    let now = app.config.jobs.clock.now();
    let mut report = blocking(move || svc::backup_report(&vault, q.days, now)).await?;
    let token = &caller.token;
    report.items.retain(|i| !token.is_scoped() || token.items.iter().any(|m| m.name.eq_ignore_ascii_case(&i.item)));
    match q.format.as_deref() {
        Some("csv") => {
            let name = format!("attachment; filename=\"boveda-{}-{}d.csv\"", caller.served()?.name(), report.days);
            Ok((
                [
                    (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (axum::http::header::CONTENT_DISPOSITION, name),
                ],
                report.to_csv(),
            )
                .into_response())
        }
        None | Some("json") => Ok(Json(report).into_response()),
        Some(other) => Err(ApiError::invalid(Some("format".into()), format!("{other:?} is not json or csv"))),
    }
}

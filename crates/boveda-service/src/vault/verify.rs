//! Verify: checking a vault's objects (and, on request, every chunk's
//! data) as a job.

use boveda_vault::{CheckOptions, CheckReport, Vault, check};

use crate::error::{Result, ServiceError};
use crate::runtime::job::JobEnv;
use crate::runtime::job::{Job, JobDone, Observers, Operation, run_job};

/// Checks `vault` as a `Verify` job: key slots, indexes, packs, points
/// and trees, and with `read_data` every chunk's data. `step` hears each
/// phase as it starts. The report comes back also when problems were
/// found; the job is then `Failed`, naming the first.
///
/// # Errors
/// A store error recording the job; inside the returned result, a check
/// that could not run (an unreachable store).
pub fn verify_job(
    vault: &Vault,
    env: &JobEnv<'_>,
    read_data: bool,
    step: &(dyn Fn(&str) + Sync),
) -> Result<(Job, Result<CheckReport>)> {
    let spec = env.vault_spec(Operation::Verify);
    let mut saved = None;
    let (job, result) = run_job(vault, env.clock, &spec, Observers::default(), |jctx| {
        let mut report = check(vault, CheckOptions { read_data }, &|phase| {
            jctx.set_phase(phase);
            step(phase);
        })?;
        jctx.set_phase("cross-references");
        step("cross-references");
        cross_reference(vault, &mut report)?;
        let held = check_holds(vault, env.clock.now(), &mut report)?;
        let problems = report.problems.len();
        let first = report.problems.first().map(|p| format!("{} {}", p.object, p.problem));
        saved = Some(report);
        match first {
            None => Ok(((), JobDone { details: vec!["no problems found".into(), held], ..JobDone::default() })),
            Some(first) => Err(ServiceError::Invalid(format!("{problems} problem(s) found, first: {first}"))),
        }
    })?;
    Ok((
        job,
        saved.ok_or_else(|| result.err().unwrap_or_else(|| ServiceError::Invalid("the check did not run".into()))),
    ))
}

/// What the catalog says exists, checked against what is there: every
/// point a completed backup job recorded is in the store or was deleted on
/// purpose (prune records each deletion); every policy a protected item
/// names exists. A manifest, record or policy deleted from the store is so
/// named, though every object left is intact.
///
/// # Errors
/// A store error listing the catalog.
pub fn cross_reference(vault: &Vault, report: &mut CheckReport) -> Result<()> {
    use boveda_vault::{Affected, PointId, Problem, point_name};
    // jobs first: a job completes after its point is written, so a point
    // a job listed here names is in the listing below, unless lost
    let jobs = crate::runtime::job::list_jobs(vault, &crate::runtime::job::JobFilter::default())?;
    let present: std::collections::HashSet<PointId> = vault
        .store()
        .list("points")
        .map_err(boveda_vault::VaultError::from)?
        .iter()
        .filter_map(|o| o.name.strip_prefix("points/").and_then(PointId::from_hex))
        .collect();
    // a prune records a deletion before it deletes the manifest
    let deleted = vault.deleted_points()?;
    for job in &jobs {
        let done = matches!(
            job.state,
            crate::runtime::job::JobState::Completed | crate::runtime::job::JobState::CompletedWithWarnings
        );
        let Some(point) = job.point.filter(|_| done && job.operation == Operation::Backup) else { continue };
        if present.contains(&point) || deleted.contains(&point) {
            continue;
        }
        let item = job.item.clone().unwrap_or_default();
        report.problems.push(Problem {
            object: point_name(&point),
            problem: format!(
                "is missing: backup job {} of item {item} recorded this point on {}, and no prune deleted it",
                job.id.short(),
                job.start.round(jiff::Unit::Second).unwrap_or(job.start)
            ),
            affects: vec![Affected { item, point: point.short(), path: "/".into() }],
            more_affected: 0,
        });
    }
    // alerts are written after their job's last record: a job an alert
    // names is listed above unless its record was lost
    let mut job_ids: std::collections::HashSet<_> = jobs.iter().map(|j| j.id).collect();
    let alerts = crate::runtime::alert::stored_alerts(vault)?;
    if alerts.iter().any(|a| !job_ids.contains(&a.job)) {
        // a job begun and ended between the two listings: listed again
        job_ids.extend(
            crate::runtime::job::list_jobs(vault, &crate::runtime::job::JobFilter::default())?.iter().map(|j| j.id),
        );
    }
    for alert in alerts {
        if !job_ids.contains(&alert.job) {
            report.problems.push(Problem {
                object: format!("catalog/jobs/{}", alert.job.to_hex()),
                problem: format!(
                    "is missing: alert {} ({} of item {}) names this job",
                    alert.id.short(),
                    alert.operation.as_str(),
                    alert.item.as_deref().unwrap_or("-")
                ),
                affects: Vec::new(),
                more_affected: 0,
            });
        }
    }
    let policies: std::collections::HashSet<_> = crate::policies::list_policies(vault)?.iter().map(|p| p.id).collect();
    for item in crate::items::list_items(vault)? {
        if let Some(policy) = item.protection.policy
            && !policies.contains(&policy)
        {
            report.problems.push(Problem {
                object: format!("catalog/policies/{}", policy.to_hex()),
                problem: format!("is missing: item {} is protected by this policy", item.name),
                affects: Vec::new(),
                more_affected: 0,
            });
        }
    }
    Ok(())
}

/// An immutable vault's holds, checked: every point its policy keeps past
/// `now` has a hold (a hold record deleted from the store is named: the
/// point could otherwise go before its retention ends). Says what it found.
///
/// # Errors
/// A store error listing the catalog.
fn check_holds(vault: &Vault, now: jiff::Timestamp, report: &mut CheckReport) -> Result<String> {
    use boveda_vault::{Affected, Problem, RecoveryPoint};
    let immutability = vault.settings().immutability;
    if immutability.is_disabled() {
        return Ok("immutability disabled".into());
    }
    let holds: std::collections::HashMap<_, _> = vault.point_holds()?.into_iter().map(|h| (h.point, h)).collect();
    let policies = crate::policies::list_policies(vault)?;
    let points = vault.list_points()?;
    for item in crate::items::list_items(vault)? {
        let mine: Vec<&RecoveryPoint> = points.iter().filter(|p| p.item_id == item.id).collect();
        let policy = policies.iter().find(|p| Some(p.id) == item.protection.policy);
        for e in crate::policies::retention::evaluate(&item, policy, &mine, now) {
            let kept = e.expires.is_some_and(|t| t > now);
            if kept && holds.get(&e.point).is_none_or(|h| h.retention_until.is_none()) {
                report.problems.push(Problem {
                    object: format!("catalog/point-holds/{}", e.point.to_hex()),
                    problem: format!(
                        "is missing: the vault's immutability is {} and item {}'s policy keeps point {} until {}, but nothing holds it",
                        immutability.as_str(),
                        item.name,
                        e.point.short(),
                        e.expires.map(|t| t.to_string()).unwrap_or_default()
                    ),
                    affects: vec![Affected { item: item.name.clone(), point: e.point.short(), path: "/".into() }],
                    more_affected: 0,
                });
            }
        }
    }
    Ok(format!("immutability {}: {} point(s) held", immutability.as_str(), holds.len()))
}

/// What `vault repair` did: the check it ran, what it dropped from the
/// index, and every point and file that can no longer be restored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepairReport {
    pub check: CheckReport,
    /// Packs the store lost, dropped from the index whole.
    pub packs_dropped: usize,
    /// Packs some of whose chunks do not decode: those chunks dropped.
    pub packs_trimmed: usize,
    /// Chunk entries dropped from the index.
    pub chunks_dropped: usize,
    /// Points and paths that used the lost data: they cannot be restored
    /// whole any more (the next backup of each item stores the data again
    /// from the source, if the source still has it).
    pub unrestorable: Vec<boveda_vault::Affected>,
    /// Uses beyond those listed.
    pub more_unrestorable: usize,
}

/// Repairs `vault` as a `Repair` job: checks it (with `read_data`, every
/// chunk's data too) and drops from the index what the store lost, so that
/// the next backup of each affected item reads the files again and stores
/// the data anew, instead of recording points that refer to data the store
/// does not have. Runs under the prune lease (no prune rewrites the index
/// meanwhile). The job completes with a warning per point that cannot be
/// restored whole.
///
/// # Errors
/// A store error recording the job; inside the returned result, a check or
/// a rewrite that could not run, or the prune lease held by another.
pub fn repair_job(
    vault: &Vault,
    env: &JobEnv<'_>,
    read_data: bool,
    step: &(dyn Fn(&str) + Sync),
) -> Result<(Job, Result<RepairReport>)> {
    let spec = env.vault_spec(Operation::Repair);
    let (job, result) = run_job(vault, env.clock, &spec, Observers::default(), |jctx| {
        let holder = format!("{} pid {} (repair)", env.hostname, std::process::id());
        let lease = vault.take_prune_lease(&holder, jiff::Timestamp::now(), jiff::SignedDuration::from_mins(30))?;
        let repaired = repair_holding_lease(vault, read_data, &|phase| {
            jctx.set_phase(phase);
            step(phase);
        });
        let released = vault.release_prune_lease(lease);
        let report = repaired?;
        released?;
        let mut points: Vec<String> =
            report.unrestorable.iter().map(|a| format!("item {} point {}", a.item, a.point)).collect();
        points.dedup();
        let warnings = points
            .iter()
            .map(|p| format!("{p} can no longer be restored whole: it used data the store lost"))
            .collect();
        let details = vec![format!(
            "dropped from the index: {} lost pack(s) whole, damaged chunks of {} other pack(s); {} entries in all",
            report.packs_dropped, report.packs_trimmed, report.chunks_dropped
        )];
        Ok((report, JobDone { details, warnings, ..JobDone::default() }))
    })?;
    Ok((job, result))
}

fn repair_holding_lease(vault: &Vault, read_data: bool, step: &(dyn Fn(&str) + Sync)) -> Result<RepairReport> {
    let report = check(vault, CheckOptions { read_data }, step)?;
    step("dropping lost data from the index");
    let lost_names: std::collections::HashSet<String> =
        report.lost.iter().map(|l| boveda_vault::pack_name(l.kind, &l.pack)).collect();
    let mut unrestorable = Vec::new();
    let mut more = 0;
    for p in report.problems.iter().filter(|p| lost_names.contains(&p.object)) {
        unrestorable.extend(p.affects.iter().cloned());
        more += p.more_affected;
    }
    unrestorable.sort();
    unrestorable.dedup();
    let chunks_dropped = boveda_vault::forget_lost(vault, &report.lost)?;
    Ok(RepairReport {
        packs_dropped: report.lost.iter().filter(|l| l.chunks.is_none()).count(),
        packs_trimmed: report.lost.iter().filter(|l| l.chunks.is_some()).count(),
        chunks_dropped,
        unrestorable,
        more_unrestorable: more,
        check: report,
    })
}

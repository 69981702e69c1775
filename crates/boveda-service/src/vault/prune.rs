//! `Prune` jobs: delete the points whose retention has run out, purge items
//! whose soft-delete window has passed, then reclaim the space no point
//! uses, in two phases (`boveda_vault::gc`), never blocking backups.

use boveda_vault::{GcPlan, GcRequest, PointId, RecoveryPoint, Vault, gc_execute, gc_plan};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::error::Result;
use crate::error::ServiceError;
use crate::items::{ProtectionState, list_items, remove_item};
use crate::policies::list_policies;
use crate::policies::retention::evaluate;
use crate::runtime::job::JobEnv;
use crate::runtime::job::{Job, JobDone, Observers, Operation, oldest_running_writer, run_job};

#[derive(Debug, Clone, Serialize)]
pub struct ExpiredPoint {
    pub item: String,
    pub point: PointId,
    pub time: Timestamp,
    pub expired: Option<Timestamp>,
    pub kept_by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PrunePlan {
    pub now: Timestamp,
    pub safety_margin: String,
    pub expired: Vec<ExpiredPoint>,
    /// Soft-deleted items whose window has passed: record and points go.
    pub purged_items: Vec<String>,
    /// Points that would expire but are held (soft delete, an immutable
    /// vault), each with why; kept, and tried again by the next prune.
    pub held: Vec<String>,
    pub points_kept: usize,
    pub packs: GcPlan,
    /// Superseded catalog revisions deleted (after the run).
    pub catalog_revisions_deleted: usize,
}

/// Works out what a prune at `now` does. Reads only.
///
/// # Errors
/// A store error or a damaged object.
pub fn plan_prune(vault: &Vault, now: Timestamp, margin: SignedDuration) -> Result<PrunePlan> {
    let items = list_items(vault)?;
    let policies = list_policies(vault)?;
    let points = vault.list_points()?;
    let mut expired = Vec::new();
    let mut purged_items = Vec::new();
    for item in &items {
        let mine: Vec<&RecoveryPoint> = points.iter().filter(|p| p.item_id == item.id).collect();
        let policy = policies.iter().find(|p| Some(p.id) == item.protection.policy);
        for e in evaluate(item, policy, &mine, now) {
            if e.is_expired(now)
                && let Some(p) = mine.iter().find(|p| p.id == e.point)
            {
                expired.push(ExpiredPoint {
                    item: item.name.clone(),
                    point: p.id,
                    time: p.time,
                    expired: e.expires,
                    kept_by: e.kept_by,
                });
            }
        }
        let purge = item.protection.state == ProtectionState::SoftDeleted
            && item.protection.purge_after.is_some_and(|t| t <= now);
        if purge {
            purged_items.push(item.name.clone());
        }
    }
    // what holds a point (holds.rs in the vault) keeps it, and its item
    let mut held = Vec::new();
    let mut kept_items = std::collections::HashSet::new();
    let mut deletable = Vec::new();
    // and a manifest the store still locks (Object Lock) waits for its date
    let locks = vault.store_locks(now)?;
    for e in expired {
        let locked = locks
            .get(&boveda_vault::point_name(&e.point))
            .filter(|t| **t > now)
            .map(|t| format!("point {}'s manifest is locked in the store (Object Lock) until {t}", e.point.short()));
        match locked.map_or_else(|| vault.point_held(&e.point, now), |why| Ok(Some(why)))? {
            Some(why) => {
                held.push(why);
                kept_items.insert(e.item.clone());
            }
            None => deletable.push(e),
        }
    }
    let expired = deletable;
    purged_items.retain(|name| !kept_items.contains(name));
    let gone: std::collections::HashSet<PointId> = expired.iter().map(|e| e.point).collect();
    let remaining: Vec<RecoveryPoint> = points.into_iter().filter(|p| !gone.contains(&p.id)).collect();
    let req = GcRequest { now, margin, points: &remaining, oldest_running_writer: oldest_running_writer(vault)? };
    let packs = gc_plan(vault, &req)?;
    // Reads skip damaged objects so that the rest of a vault stays usable;
    // a prune must not: a point it cannot read would have its data
    // collected, a job it cannot read would not hold back a sweep.
    if let Some((object, why)) = vault.damage().entries().into_iter().next() {
        return Err(ServiceError::refused(
            crate::error::ServiceErrorKind::Damaged,
            format!("prune deletes nothing while an object it must read is damaged: {object} ({why})"),
            crate::error::Remedy::CheckVault,
        ));
    }
    Ok(PrunePlan {
        now,
        safety_margin: format!("{margin:#}"),
        expired,
        purged_items,
        held,
        points_kept: remaining.len(),
        packs,
        catalog_revisions_deleted: 0,
    })
}

/// Runs a prune as a `Prune` job.
///
/// # Errors
/// A store error recording the job; the prune's own error is in the second
/// value. What a failed prune did stays done; the next one continues.
pub fn prune_job(vault: &Vault, env: &JobEnv<'_>, margin: SignedDuration) -> Result<(Job, Result<PrunePlan>)> {
    let spec = env.vault_spec(Operation::Prune);
    run_job(vault, env.clock, &spec, Observers::default(), |ctx| {
        let now = env.clock.now();
        let holder = format!("{} pid {}", env.hostname, std::process::id());
        let mut lease = vault.take_prune_lease(&holder, Timestamp::now(), LEASE_LENGTH)?;
        // a test hook: a pause while the lease is held, so a test can kill
        // the prune at that moment
        if let Some(pause) = std::env::var("BOVEDA_TEST_PRUNE_PAUSE_MS").ok().and_then(|v| v.parse().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(pause));
        }
        let result = prune_holding_lease(vault, ctx, now, margin, &mut lease);
        let released = vault.release_prune_lease(lease);
        let out = result?;
        released?;
        Ok(out)
    })
}

/// How long a prune's lease lasts before it must be renewed; a prune
/// killed while holding it blocks prunes of other hosts this long at most
/// (one on its own host takes it over at once: see `boveda_vault::lease`).
const LEASE_LENGTH: SignedDuration = SignedDuration::from_mins(30);

fn prune_holding_lease(
    vault: &Vault,
    ctx: &crate::runtime::job::JobCtx<'_>,
    now: Timestamp,
    margin: SignedDuration,
    lease: &mut boveda_vault::Lease,
) -> Result<(PrunePlan, JobDone)> {
    {
        // packs the store lost leave the index first, so that the next
        // backup stores their data again (and planning does not count on them)
        ctx.set_phase("dropping lost packs from the index");
        // hosts' uploads of failed jobs: what this prune reclaims, so their
        // count starts again (docs/FLEET.md)
        crate::fleet::forget_unreferenced(vault)?;
        let lost = boveda_vault::missing_packs(vault)?;
        let dropped = boveda_vault::forget_lost(vault, &lost)?;
        // an immutable vault's points held as long as retention now says
        // (a point promoted to a weekly one is held longer)
        crate::policies::holds::hold_by_retention(vault, now)?;
        ctx.set_phase("planning");
        let mut plan = plan_prune(vault, now, margin)?;
        // planning may take long on a big vault: the lease must still be
        // ours, for long enough, before anything is deleted
        vault.renew_prune_lease(lease, Timestamp::now() + LEASE_LENGTH)?;
        ctx.set_phase("deleting expired points");
        let mut deleted = Vec::new();
        for e in std::mem::take(&mut plan.expired) {
            // held since it was planned (a backup flagged the point after
            // it as suspicious, a soft delete): kept, and said so
            if let Some(why) = vault.point_held(&e.point, now)? {
                plan.held.push(why);
                plan.points_kept += 1;
                continue;
            }
            vault.delete_point(&e.point, now)?;
            deleted.push(e);
        }
        plan.expired = deleted;
        let items = list_items(vault)?;
        for name in &plan.purged_items {
            if let Some(item) = items.iter().find(|i| &i.name == name) {
                remove_item(vault, item)?;
            }
        }
        ctx.set_phase("reclaiming space");
        gc_execute(vault, &plan.packs, now)?;
        plan.catalog_revisions_deleted = vault.catalog_compact(Timestamp::now() - margin)?;
        // what the kept points need stays locked in the store past their
        // retention; the rest lapses
        ctx.set_phase("extending locks");
        let locks = crate::policies::locks::extend_locks(vault, now)?;
        let mut details = vec![
            format!("{} expired point(s) deleted, {} kept", plan.expired.len(), plan.points_kept),
            format!("{} item(s) purged after their soft-delete window", plan.purged_items.len()),
            format!("{} expired point(s) held and kept", plan.held.len()),
            format!(
                "{} pack(s) deleted ({} bytes), {} marked ({} bytes), {} mark(s) waiting",
                plan.packs.sweep.len(),
                plan.packs.sweep_bytes(),
                plan.packs.mark.len(),
                plan.packs.mark_bytes(),
                plan.packs.waiting.len()
            ),
            format!(
                "{} abandoned upload(s) of interrupted writers removed ({} bytes)",
                plan.packs.abandoned.len(),
                plan.packs.abandoned_bytes()
            ),
        ];
        if vault.settings().object_lock.is_some() {
            details.push(format!(
                "{} object lock(s) extended{}",
                locks.extended,
                locks.until.map(|t| format!(", until {t} at most")).unwrap_or_default()
            ));
        }
        let mut warnings: Vec<String> = lease.took_over().map(str::to_string).into_iter().collect();
        warnings.extend(plan.held.iter().take(5).cloned());
        if !lost.is_empty() {
            warnings.push(format!(
                "{} pack(s) the store lost were dropped from the index ({dropped} chunk entries): the next backup of each item stores their data again from its source; `boveda vault repair` names the points that can no longer be restored whole",
                lost.len()
            ));
        }
        Ok((plan, JobDone { details, warnings, ..JobDone::default() }))
    }
}

//! The vault's policies: listed, found, created, deleted and updated as
//! catalog records (`catalog/policies/...`); an update first works out
//! what it changes for the points of the items a policy protects.

pub mod holds;
pub mod locks;
pub(crate) mod retention;

use boveda_vault::Vault;
use jiff::Timestamp;
use serde::Serialize;

use crate::error::{Result, ServiceError};
use crate::items::ProtectionState;
use crate::model::policy::{Policy, PolicyPatch};
use crate::runtime::clock::Clock;

const POLICIES: &str = "policies";

/// Every policy of the vault, by name.
///
/// # Errors
/// A store error or a damaged record.
pub fn list_policies(vault: &Vault) -> Result<Vec<Policy>> {
    let mut all: Vec<Policy> = vault.catalog_list::<Policy>(POLICIES)?.into_iter().map(|(_, p)| p).collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// Finds a policy by name (case-insensitive).
///
/// # Errors
/// `NotFound`.
pub fn find_policy(vault: &Vault, name: &str) -> Result<Policy> {
    list_policies(vault)?.into_iter().find(|p| p.name.eq_ignore_ascii_case(name)).ok_or_else(|| {
        ServiceError::refused(
            crate::error::ServiceErrorKind::NotFound,
            format!("no policy named {name:?} in this vault"),
            crate::error::Remedy::ListPolicies,
        )
    })
}

/// Validates and stores a new policy.
///
/// # Errors
/// `Invalid` naming the field; `Conflict` when the name is taken.
pub fn create_policy(vault: &Vault, policy: &Policy) -> Result<()> {
    policy.validate()?;
    if list_policies(vault)?.iter().any(|p| p.name.eq_ignore_ascii_case(&policy.name)) {
        return Err(ServiceError::Conflict(format!("a policy named {:?} already exists", policy.name)));
    }
    vault.catalog_put(POLICIES, &policy.id, Some(policy))?;
    Ok(())
}

/// Deletes a policy (a tombstone revision); refused while it protects an
/// item.
///
/// # Errors
/// `NotFound`; `Conflict` naming the items it protects.
pub fn delete_policy(vault: &Vault, name: &str) -> Result<Policy> {
    let p = find_policy(vault, name)?;
    let users: Vec<String> = crate::items::list_items(vault)?
        .into_iter()
        .filter(|i| i.protection.policy == Some(p.id) && i.protection.state == ProtectionState::Protected)
        .map(|i| i.name)
        .collect();
    if !users.is_empty() {
        return Err(ServiceError::Conflict(format!(
            "policy {} protects {}: stop their protection or move them to another policy first",
            p.name,
            users.join(", ")
        )));
    }
    vault.catalog_put::<Policy>(POLICIES, &p.id, None)?;
    Ok(p)
}

/// One point whose expiry a policy change moves.
#[derive(Debug, Clone, Serialize)]
pub struct ExpiryChange {
    pub item: String,
    pub point: boveda_vault::PointId,
    pub time: Timestamp,
    pub before: Option<Timestamp>,
    pub after: Option<Timestamp>,
    pub kept_by: String,
}

/// What updating a policy changes for existing points.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyUpdate {
    pub policy: Policy,
    /// The policy as it was when the update was planned.
    #[serde(skip)]
    pub planned_from: Policy,
    /// Points the new rules let expire now: the next prune deletes them.
    pub deleted: Vec<ExpiryChange>,
    /// Points kept, with a new expiry.
    pub changed: Vec<ExpiryChange>,
}

/// Works out what replacing a policy's schedule and retention would do to
/// the points of the items it protects. Reads only.
///
/// # Errors
/// `Invalid` naming the field; `NotFound` for the policy.
pub fn plan_policy_update(vault: &Vault, name: &str, new: &Policy, now: Timestamp) -> Result<PolicyUpdate> {
    let old = find_policy(vault, name)?;
    let updated = Policy { id: old.id, name: old.name.clone(), created: old.created, ..new.clone() };
    updated.validate()?;
    let points = vault.list_points()?;
    let mut deleted = Vec::new();
    let mut changed = Vec::new();
    for item in crate::items::list_items(vault)?.iter().filter(|i| i.protection.policy == Some(old.id)) {
        let mine: Vec<&boveda_vault::RecoveryPoint> = points.iter().filter(|p| p.item_id == item.id).collect();
        let before = crate::policies::retention::evaluate(item, Some(&old), &mine, now);
        let after = crate::policies::retention::evaluate(item, Some(&updated), &mine, now);
        for ((b, a), p) in before.iter().zip(&after).zip(&mine) {
            if b.expires == a.expires {
                continue;
            }
            let change = ExpiryChange {
                item: item.name.clone(),
                point: p.id,
                time: p.time,
                before: b.expires,
                after: a.expires,
                kept_by: a.kept_by.clone(),
            };
            if a.is_expired(now) && !b.is_expired(now) { deleted.push(change) } else { changed.push(change) }
        }
    }
    Ok(PolicyUpdate { policy: updated, planned_from: old, deleted, changed })
}

/// Stores an updated policy (from [`plan_policy_update`]), asked for by
/// `by`: on a vault bound to a guard, a reduced retention only with the
/// guard's approval.
///
/// # Errors
/// A store error; `Conflict` for a shorter retention on an immutable
/// vault; `NeedsApproval`.
pub fn apply_policy_update(vault: &Vault, update: &PolicyUpdate, by: &str, clock: &dyn Clock) -> Result<()> {
    refuse_shorter_retention(vault, update)?;
    if retention_reduced(update) {
        let json = |r: &crate::model::policy::Retention| serde_json::to_string(r).unwrap_or_default();
        let op = boveda_vault::GuardedOp::new(
            "reduce retention",
            format!("policy {}", update.policy.name),
            format!("{} to {}", json(&update.planned_from.retention), json(&update.policy.retention)),
        );
        crate::guard::authorize(vault, &op, by, clock)?;
    }
    // compare-and-swap: the expiries shown were worked out from the policy
    // as planned; a policy changed meanwhile needs a new plan
    vault.catalog_update(POLICIES, &update.policy.id, |current: Option<Policy>| {
        if current.as_ref() != Some(&update.planned_from) {
            return Err(boveda_vault::VaultError::Busy(format!(
                "policy {} was changed or removed while this update was planned; plan it again",
                update.policy.name
            )));
        }
        Ok(Some(update.policy.clone()))
    })?;
    Ok(())
}

/// Whether an update keeps any point for less time than before: a rule
/// shortened, changed or removed, or a point's expiry moved earlier.
fn retention_reduced(update: &PolicyUpdate) -> bool {
    let (old, new) = (&update.planned_from.retention, &update.policy.retention);
    let fewer = |a: Option<u32>, b: Option<u32>| a.is_some_and(|a| b.is_none_or(|b| b < a));
    let rule_changed = fewer(old.daily_days, new.daily_days)
        || fewer(old.weekly.as_ref().map(|w| w.weeks), new.weekly.as_ref().map(|w| w.weeks))
        || fewer(old.monthly.as_ref().map(|m| m.months), new.monthly.as_ref().map(|m| m.months))
        || fewer(old.yearly.as_ref().map(|y| y.years), new.yearly.as_ref().map(|y| y.years))
        || old.weekly.as_ref().is_some_and(|w| new.weekly.as_ref().is_some_and(|n| n.days != w.days))
        || old.monthly.as_ref().is_some_and(|m| new.monthly.as_ref().is_some_and(|n| n.on != m.on))
        || old.yearly.as_ref().is_some_and(|y| new.yearly.as_ref().is_some_and(|n| n.on != y.on || n.month != y.month));
    let earlier = |c: &ExpiryChange| match (c.before, c.after) {
        (Some(b), Some(a)) => a < b,
        (None, Some(_)) => true,
        _ => false,
    };
    rule_changed || update.deleted.iter().chain(&update.changed).any(earlier)
}

/// On an immutable vault, refuses an update that would let a point expire
/// sooner than it does now, naming the points and the rule.
fn refuse_shorter_retention(vault: &Vault, update: &PolicyUpdate) -> Result<()> {
    let immutability = vault.settings().immutability;
    if immutability.is_disabled() {
        return Ok(());
    }
    let shorter = |c: &&ExpiryChange| match (c.before, c.after) {
        (Some(b), Some(a)) => a < b,
        (None, Some(_)) => true,
        _ => false,
    };
    let hit: Vec<&ExpiryChange> = update.deleted.iter().chain(&update.changed).filter(shorter).collect();
    if hit.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = hit
        .iter()
        .take(5)
        .map(|c| {
            let when = |t: Option<Timestamp>| t.map_or_else(|| "never".into(), |t| t.to_string());
            format!(
                "point {} of item {} ({}: {} would become {})",
                c.point.short(),
                c.item,
                c.kept_by,
                when(c.before),
                when(c.after)
            )
        })
        .collect();
    Err(ServiceError::Conflict(format!(
        "policy {} is not changed: the vault's immutability is {} and the change would shorten the retention of {} point(s): {}{}",
        update.policy.name,
        immutability.as_str(),
        hit.len(),
        named.join("; "),
        if hit.len() > 5 { "; ..." } else { "" }
    )))
}

/// Creates a policy from the fields a client gave, the rest defaulted.
///
/// # Errors
/// `Field` naming the field at fault; `Conflict` for a name in use.
pub fn create_policy_from(vault: &Vault, patch: PolicyPatch) -> Result<Policy> {
    let policy = Policy::patched(None, patch)?;
    create_policy(vault, &policy)?;
    Ok(policy)
}

/// Changes the fields a client gave of policy `name`, and with `apply`
/// stores it; the plan says what the change does to existing points.
///
/// # Errors
/// `NotFound`; `Field` naming the field at fault; `Conflict` when the
/// policy changed meanwhile; `NeedsApproval`. With `by` (who asks) it is
/// stored, without it only planned.
pub fn update_policy(
    vault: &Vault,
    name: &str,
    patch: PolicyPatch,
    clock: &dyn Clock,
    by: Option<&str>,
) -> Result<PolicyUpdate> {
    let now = clock.now();
    let base = find_policy(vault, name)?;
    let new = Policy::patched(Some(&base), PolicyPatch { name: base.name.clone(), ..patch })?;
    let plan = plan_policy_update(vault, &base.name, &new, now)?;
    if let Some(by) = by {
        apply_policy_update(vault, &plan, by, clock)?;
    }
    Ok(plan)
}

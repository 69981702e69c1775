//! `protection`: enable, stop, resume and undelete protection, back up now.

use std::time::Instant;

use anyhow::{Context, Result};
use boveda_service::{
    JobEnv, backup_job, disable_protection, enable_protection, find_item, parse_retain_until, resume_protection,
    undelete_protection,
};
use jiff::tz::TimeZone;

use super::Ctx;
use crate::Outcome;
use crate::args::ProtectionCmd;
use crate::output::{BackupBar, backup_summary, time};

pub fn protection(ctx: &Ctx, cmd: ProtectionCmd) -> Result<Outcome> {
    let vault = ctx.open()?;
    let clock = ctx.clock()?;
    let env = ctx.job_env(clock.as_ref());
    let (item, verb) = match cmd {
        ProtectionCmd::BackupNow { item, retain_until } => {
            return backup_now_cmd(ctx, &vault, &env, &item, retain_until);
        }
        ProtectionCmd::Enable { item, policy } => {
            let item = find_item(&vault, &item)?;
            (enable_protection(&vault, &env, &item, &policy)?, format!("protected with policy {policy}"))
        }
        ProtectionCmd::ChangePolicy { item, policy } => {
            let item = find_item(&vault, &item)?;
            (
                boveda_service::change_item_policy(&vault, &env, &item, &policy)?,
                format!("now protected with policy {policy}"),
            )
        }
        ProtectionCmd::Resume { item, policy } => {
            let item = find_item(&vault, &item)?;
            (resume_protection(&vault, &env, &item, &policy)?, format!("protection resumed with policy {policy}"))
        }
        ProtectionCmd::Disable { item, delete_data } => {
            let item = find_item(&vault, &item)?;
            let updated = disable_protection(&vault, &env, &item, delete_data)?;
            let verb = match updated.protection.purge_after {
                Some(t) if delete_data => format!(
                    "backup data soft deleted; `boveda protection undelete {}` brings it back until {}, then it is purged",
                    item.name,
                    time(t)
                ),
                _ => "protection stopped, data retained".into(),
            };
            (updated, verb)
        }
        ProtectionCmd::Undelete { item } => {
            let item = find_item(&vault, &item)?;
            (
                undelete_protection(&vault, &env, &item)?,
                "backup data undeleted; protection stopped, data retained".into(),
            )
        }
    };
    if ctx.json() {
        ctx.print_json(&item)?;
    } else {
        println!("item {}: {verb}", item.name);
    }
    Ok(Outcome::Ok)
}

pub(super) fn backup_now_cmd(
    ctx: &Ctx,
    vault: &boveda_service::Vault,
    env: &JobEnv<'_>,
    item: &str,
    retain_until: Option<String>,
) -> Result<Outcome> {
    let now = env.clock.now();
    let retain_until = retain_until.as_deref().map(|t| parse_retain_until(t, now, &TimeZone::system())).transpose()?;
    let item = find_item(vault, item)?;
    let started = Instant::now();
    let bar = BackupBar::new();
    let (job, result) = backup_job(vault, env, &item, retain_until, None, &bar)?;
    bar.finish();
    let point = result.with_context(|| format!("backup job {} {}", job.id.short(), job.state.as_str()))?;
    if ctx.json() {
        ctx.print_json(&point)?;
    } else {
        let secs = started.elapsed().as_secs_f64();
        println!("{}", backup_summary(&point.id.short(), &item.name, &point.stats, secs, &job.id.short()));
        if !point.warnings.is_empty() {
            println!("completed with {} warning(s)", point.warnings.len());
        }
    }
    Ok(if point.warnings.is_empty() { Outcome::Ok } else { Outcome::Warnings })
}

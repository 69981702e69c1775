//! `usage`: stored bytes and their cost; `report`: backups per item over
//! a period; `center`: every vault at a glance.

use std::path::Path;

use anyhow::Context;
use anyhow::Result;
use boveda_service::{PriceTable, usage as usage_of};

use super::Ctx;
use crate::Outcome;
use crate::output::{print_table, size};

pub fn usage(ctx: &Ctx, prices: Option<&Path>) -> Result<Outcome> {
    let table = PriceTable::chosen(prices)?;
    let vault = ctx.open()?;
    let u = usage_of(&vault, &table)?;
    for w in &u.warnings {
        eprintln!("warning: {w}");
    }
    if ctx.json() {
        ctx.print_json(&u)?;
        return Ok(Outcome::Ok);
    }
    let money = |v: f64| format!("{v:.2} {}", u.prices.currency);
    let rows: Vec<_> = u
        .items
        .iter()
        .map(|i| {
            vec![
                i.item.clone(),
                i.state.clone(),
                size(i.front_end_bytes),
                format!("{} ({})", i.instances, i.band),
                i.recovery_points.to_string(),
                size(i.stored_bytes),
                money(i.monthly_cost),
            ]
        })
        .collect();
    print_table(&["ITEM", "STATE", "FRONT-END", "INSTANCES", "POINTS", "STORED", "EST. MONTHLY"], &rows);
    println!(
        "vault stored (deduplicated, compressed): {}; estimated monthly total: {}",
        size(u.stored_bytes),
        money(u.monthly_cost)
    );
    Ok(Outcome::Ok)
}

pub fn report(ctx: &Ctx, days: u32, csv: bool) -> Result<Outcome> {
    let vault = ctx.open()?;
    let r = boveda_service::backup_report(&vault, days, ctx.clock()?.now())?;
    if csv {
        print!("{}", r.to_csv());
        return Ok(Outcome::Ok);
    }
    if ctx.json() {
        ctx.print_json(&r)?;
        return Ok(Outcome::Ok);
    }
    let pct = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{:.0}%", v * 100.0));
    let secs = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v:.1} s"));
    let rows: Vec<_> = r
        .items
        .iter()
        .map(|i| {
            vec![
                i.item.clone(),
                i.backups.to_string(),
                i.succeeded.to_string(),
                i.failed.to_string(),
                pct(i.success_rate),
                secs(i.average_seconds),
                size(i.stored_added_bytes),
                size(i.stored_bytes),
            ]
        })
        .collect();
    println!("backups of the last {days} days ({} to {})", crate::output::time(r.from), crate::output::time(r.to));
    print_table(&["ITEM", "BACKUPS", "SUCCEEDED", "FAILED", "SUCCESS", "AVERAGE", "STORED GROWTH", "STORED"], &rows);
    Ok(Outcome::Ok)
}

pub fn center(ctx: &Ctx, vaults: &[String]) -> Result<Outcome> {
    let pass = crate::passphrase::passphrase(ctx.password_file.as_deref(), false)?;
    let selectors = boveda_service::vaults_to_serve(vaults, ctx.vault.as_deref())?;
    let now = ctx.clock()?.now();
    let day_ago = now - jiff::SignedDuration::from_hours(24);
    let (mut items, mut jobs, mut alerts) = (Vec::new(), Vec::new(), Vec::new());
    for s in &selectors {
        let vault = boveda_service::open_vault(Some(s), &pass).with_context(|| format!("vault {s}"))?;
        let name = vault.settings().name.clone();
        for o in boveda_service::item_overview(&vault, now)? {
            items.push(vec![
                name.clone(),
                o.name.clone(),
                format!("{}{}", o.health.as_str(), o.health_reason.map(|r| format!(": {r}")).unwrap_or_default()),
                o.protection.clone(),
                o.last_backup.map(crate::output::time).unwrap_or_else(|| "-".into()),
            ]);
        }
        let recent = boveda_service::JobFilter { since: Some(day_ago), ..Default::default() };
        for j in boveda_service::list_jobs(&vault, &recent)? {
            jobs.push(vec![
                name.clone(),
                j.id.short(),
                j.operation.as_str().into(),
                j.item.clone().unwrap_or_else(|| "-".into()),
                j.state.as_str().into(),
                crate::output::time(j.start),
            ]);
        }
        for a in
            boveda_service::list_alerts(&vault)?.into_iter().filter(|a| a.state == boveda_service::AlertState::Active)
        {
            alerts.push(vec![
                name.clone(),
                a.id.short(),
                crate::output::time(a.time),
                a.item.unwrap_or_else(|| "-".into()),
                a.reason,
            ]);
        }
    }
    if ctx.json() {
        let json = serde_json::json!({ "items": items, "jobs": jobs, "alerts": alerts });
        ctx.print_json(&json)?;
        return Ok(Outcome::Ok);
    }
    println!("items");
    print_table(&["VAULT", "ITEM", "HEALTH", "PROTECTION", "LAST BACKUP"], &items);
    println!("\njobs, last 24 hours");
    print_table(&["VAULT", "JOB", "OPERATION", "ITEM", "STATE", "STARTED"], &jobs);
    println!("\nactive alerts");
    print_table(&["VAULT", "ALERT", "TIME", "ITEM", "REASON"], &alerts);
    Ok(Outcome::Ok)
}

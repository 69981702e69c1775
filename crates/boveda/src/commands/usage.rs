//! `usage`: stored bytes and their cost.

use std::path::Path;

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

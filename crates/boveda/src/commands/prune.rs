//! `prune`: apply retention and delete what no point uses.

use anyhow::Result;
use boveda_service::{plan_prune, prune_job};
use jiff::SignedDuration;

use super::Ctx;
use crate::Outcome;
use crate::output::{opt_time, print_table, size, time};

/// `--safety-margin`, as the service reads a duration.
pub fn parse_duration(s: &str) -> Result<SignedDuration> {
    Ok(boveda_service::parse_duration("safety_margin", s)?)
}

pub fn prune(ctx: &Ctx, dry_run: bool, margin: &str) -> Result<Outcome> {
    let margin = parse_duration(margin)?;
    let vault = ctx.open()?;
    let clock = ctx.clock()?;
    let plan = if dry_run {
        plan_prune(&vault, clock.now(), margin)?
    } else {
        let (job, result) = prune_job(&vault, &ctx.job_env(clock.as_ref()), margin)?;
        let plan = result?;
        if !ctx.json() {
            println!("prune job {}: {}", job.id.short(), job.state.as_str());
            for w in &job.warnings {
                println!("warning: {w}");
            }
        }
        plan
    };
    if ctx.json() {
        ctx.print_json(&plan)?;
        return Ok(Outcome::Ok);
    }
    let verb = if dry_run { "would delete" } else { "deleted" };
    println!("{verb} {} expired recovery point(s); {} kept", plan.expired.len(), plan.points_kept);
    let rows: Vec<_> = plan
        .expired
        .iter()
        .map(|e| vec![e.item.clone(), e.point.short(), time(e.time), opt_time(e.expired), e.kept_by.clone()])
        .collect();
    if !rows.is_empty() {
        print_table(&["ITEM", "POINT", "TIME", "EXPIRED", "RULE"], &rows);
    }
    for why in &plan.held {
        println!("kept, expired but held: {why}");
    }
    for i in &plan.purged_items {
        println!("{verb} item {i} (soft-delete window over)");
    }
    let g = &plan.packs;
    println!("{verb} {} pack(s) marked earlier ({})", g.sweep.len(), size(g.sweep_bytes()));
    if !g.unmark.is_empty() {
        println!("{} marked pack(s) are in use again and are kept", g.unmark.len());
    }
    let verb_mark = if dry_run { "would mark" } else { "marked" };
    println!(
        "{verb_mark} {} unused pack(s) ({}) for deletion after the safety margin ({})",
        g.mark.len(),
        size(g.mark_bytes()),
        plan.safety_margin
    );
    if !g.repack.is_empty() {
        let verb_repack = if dry_run { "would repack" } else { "repacked" };
        println!(
            "{verb_repack} {} mostly unused pack(s) ({}), copying {} still in use; they are marked too",
            g.repack.len(),
            size(g.repack_bytes()),
            size(g.repack_copy_bytes)
        );
    }
    for w in &g.waiting {
        println!("waiting: {} pack(s) ({}) marked at {}: {}", w.packs, size(w.bytes), time(w.marked_at), w.reason);
    }
    if !g.abandoned.is_empty() {
        let verb = if dry_run { "would remove" } else { "removed" };
        println!(
            "{verb} {} unfinished upload(s) ({}) left by interrupted writers",
            g.abandoned.len(),
            size(g.abandoned_bytes())
        );
    }
    Ok(Outcome::Ok)
}

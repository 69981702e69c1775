//! `recoverypoint` (list, show, browse points) and `mount`.

use anyhow::Result;
use boveda_service::{
    PointEntry, Verdict, browse_point, find_item, find_point, list_points, point_reviews, review_point, show_point,
};
use jiff::Timestamp;

use super::Ctx;
use crate::Outcome;
use crate::args::PointCmd;
use crate::output::{opt_time, print_table, size, time};

pub(super) fn mode_string(e: &PointEntry) -> String {
    let t = match e.kind.as_str() {
        "Dir" => 'd',
        "Symlink" => 'l',
        "Fifo" => 'p',
        "CharDevice" => 'c',
        "BlockDevice" => 'b',
        "Socket" => 's',
        _ => '-',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (e.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn status(s: &boveda_service::PointSummary) -> String {
    let p = &s.point;
    let mut text = if p.warnings.is_empty() {
        "Completed".into()
    } else {
        format!("CompletedWithWarnings ({})", p.warnings.len())
    };
    if let Some(r) = &s.suspicious {
        text.push_str(match r.verdict {
            None => ", SUSPICIOUS (review it)",
            Some(Verdict::Clean) => ", suspicious, reviewed clean",
            Some(Verdict::Confirmed) => ", suspicious, confirmed attack",
        });
    }
    if let Some(of) = s.held_for_review_of {
        text.push_str(&format!(", held until {} is reviewed", of.short()));
    }
    text
}

pub fn points(ctx: &Ctx, cmd: PointCmd) -> Result<Outcome> {
    if let PointCmd::Verify(args) = cmd {
        return super::verify::verify(ctx, args);
    }
    let cmd_from_secondary = matches!(cmd, PointCmd::List { from_secondary: true, .. });
    let vault = ctx.open_copy(cmd_from_secondary)?;
    match cmd {
        PointCmd::List { item, .. } => {
            let item = find_item(&vault, &item)?;
            let (points, unknown) = list_points(&vault, &item, ctx.clock()?.now(), !cmd_from_secondary)?;
            if let Some(why) = unknown
                && !ctx.json()
            {
                eprintln!("warning: {why}");
            }
            if ctx.json() {
                ctx.print_json(&points)?;
                return Ok(Outcome::Ok);
            }
            let geo = points.iter().any(|s| s.on_secondary.is_some());
            let rows: Vec<_> = points
                .iter()
                .map(|s| {
                    let p = &s.point;
                    let mut row = vec![
                        p.id.short(),
                        time(p.time),
                        p.consistency.as_str().into(),
                        size(p.stats.bytes),
                        p.stats.files.to_string(),
                        opt_time(s.expires),
                        s.kept_by.clone(),
                        status(s),
                    ];
                    if let Some(on) = s.on_secondary {
                        row.push(match on {
                            Some(true) => "replicated".into(),
                            Some(false) => "not yet replicated".into(),
                            None => "unknown".into(),
                        });
                    }
                    row
                })
                .collect();
            let mut header = vec!["ID", "TIME", "CONSISTENCY", "SIZE", "FILES", "EXPIRES", "KEPT BY", "STATUS"];
            if geo {
                header.push("SECONDARY");
            }
            print_table(&header, &rows);
        }
        PointCmd::Show { item, point } => {
            let item = find_item(&vault, &item)?;
            let shown = show_point(&vault, &item, &point, ctx.clock()?.now())?;
            if ctx.json() {
                ctx.print_json(&shown)?;
            } else {
                let p = &shown.point;
                let s = &p.stats;
                let mut rows = vec![
                    vec!["id".into(), p.id.to_hex()],
                    vec!["item".into(), p.item_name.clone()],
                    vec!["time".into(), time(p.time)],
                    vec!["started".into(), time(p.started)],
                    vec!["host".into(), p.hostname.clone()],
                    vec!["consistency".into(), p.consistency.as_str().into()],
                    vec!["scheduled for".into(), opt_time(p.scheduled_for)],
                    vec!["expires".into(), opt_time(shown.expires)],
                    vec!["kept by".into(), shown.kept_by.clone()],
                    vec!["parent".into(), p.parent.map(|x| x.short()).unwrap_or_else(|| "-".into())],
                    vec!["sources".into(), p.sources.join(", ")],
                    vec!["files / dirs / other".into(), format!("{} / {} / {}", s.files, s.dirs, s.other_nodes)],
                    vec!["size".into(), size(s.bytes)],
                    vec!["read".into(), format!("{} ({} files unchanged)", size(s.bytes_read), s.files_unchanged)],
                    vec![
                        "added to vault".into(),
                        format!("{} ({} new chunks, {} packs)", size(s.bytes_stored), s.chunks_new, s.packs_written),
                    ],
                    vec![
                        "files added / changed / removed".into(),
                        format!("{} / {} / {}", s.files_added, s.files_changed, s.files_removed),
                    ],
                    vec!["new, did not compress".into(), size(s.bytes_new_incompressible)],
                ];
                if let Some(ms) = p.freeze_ms {
                    rows.push(vec!["guest frozen".into(), format!("{ms} ms")]);
                }
                for w in &p.warnings {
                    rows.push(vec!["warning".into(), w.clone()]);
                }
                print_table(&["FIELD", "VALUE"], &rows);
            }
        }
        PointCmd::Verify(_) => {}
        PointCmd::SafetyCopies { remove } => safety_copies(ctx, &vault, remove.as_deref())?,
        PointCmd::Review { item, point, clean, confirm: _ } => review(ctx, &vault, &item, point.as_deref(), clean)?,
        PointCmd::Ls { item, point, path } => {
            let item = find_item(&vault, &item)?;
            let p = find_point(&vault, &item, &point)?;
            let entries = browse_point(&vault, &item, &p, &path)?;
            if ctx.json() {
                ctx.print_json(&entries)?;
                return Ok(Outcome::Ok);
            }
            for e in &entries {
                let mtime = e
                    .mtime_ns
                    .and_then(|ns| Timestamp::from_nanosecond(i128::from(ns)).ok())
                    .map(time)
                    .unwrap_or_default();
                let name = match &e.link_target {
                    Some(target) => format!("{} -> {target}", e.name),
                    None => e.name.clone(),
                };
                let row = format!("{} {:>5} {:>5} {:>12}", mode_string(e), e.uid, e.gid, e.size);
                if mtime.is_empty() { println!("{row} {name}") } else { println!("{row} {mtime} {name}") }
            }
        }
    }
    Ok(Outcome::Ok)
}

fn review(ctx: &Ctx, vault: &boveda_service::Vault, item: &str, point: Option<&str>, clean: bool) -> Result<()> {
    let item = find_item(vault, item)?;
    let Some(point) = point else {
        let mine: Vec<_> = point_reviews(vault)?.into_iter().filter(|r| r.item == item.id).collect();
        if ctx.json() {
            ctx.print_json(&mine)?;
            return Ok(());
        }
        let rows: Vec<_> = mine
            .iter()
            .map(|r| {
                let verdict = r.verdict.map_or("waiting for review".to_string(), |v| format!("{v:?}"));
                vec![r.point.short(), time(r.flagged), verdict, r.reasons.join("; ")]
            })
            .collect();
        print_table(&["POINT", "FLAGGED", "REVIEW", "WHAT JUMPED"], &rows);
        return Ok(());
    };
    let verdict = if clean { Verdict::Clean } else { Verdict::Confirmed };
    let clock = ctx.clock()?;
    let r = review_point(vault, &item, point, verdict, &ctx.by(), clock.as_ref())?;
    let p = &r;
    match (verdict, r.held) {
        (Verdict::Clean, Some(held)) => {
            println!("point {} reviewed clean: point {} is no longer held for it", p.point.short(), held.short())
        }
        (_, Some(held)) => println!(
            "point {} confirmed as an attack: point {} before it stays held; restore from it",
            p.point.short(),
            held.short()
        ),
        (_, None) => println!("point {} reviewed", p.point.short()),
    }
    Ok(())
}

fn safety_copies(ctx: &Ctx, vault: &boveda_service::Vault, remove: Option<&std::path::Path>) -> Result<()> {
    if let Some(path) = remove {
        let c = boveda_service::remove_safety_copy(vault, path)?;
        println!("removed {}, the disk {} of VM {} had before a replace", c.path.display(), c.disk, c.domain);
        return Ok(());
    }
    let all = boveda_service::list_safety_copies(vault)?;
    if ctx.json() {
        return ctx.print_json(&all);
    }
    let rows: Vec<_> = all
        .iter()
        .map(|c| vec![c.domain.clone(), c.disk.clone(), c.path.display().to_string(), time(c.made), c.point.short()])
        .collect();
    print_table(&["VM", "DISK", "SAFETY COPY", "MADE", "REPLACED BY POINT"], &rows);
    Ok(())
}

pub fn mount(ctx: &Ctx, item: &str, point: Option<&str>, dir: &std::path::Path) -> Result<Outcome> {
    let vault = ctx.open()?;
    let item = find_item(&vault, item)?;
    eprintln!(
        "serving the recovery points of item {} read-only at {}; unmount with `fusermount -u {}`",
        item.name,
        dir.display(),
        dir.display()
    );
    boveda_service::mount(vault.into_inner(), &item, point, dir)?;
    Ok(Outcome::Ok)
}

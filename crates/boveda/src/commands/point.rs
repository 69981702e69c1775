use std::time::Instant;

use anyhow::{Context, Result, bail};
use boveda_service::{
    DiskOutputFormat, JobEnv, PointEntry, RestoreReport, RestoreRequest, backup_job, browse_point, disable_protection,
    enable_protection, find_item, find_point, list_points, parse_retain_until, resume_protection, show_point,
    undelete_protection,
};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::Ctx;
use crate::Outcome;
use crate::args::{ImageFormat, PointCmd, ProtectionCmd, RestoreArgs};
use crate::output::{BackupBar, RestoreBar, opt_time, print_table, size, time};

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

fn backup_now_cmd(
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
        let s = &point.stats;
        println!(
            "recovery point {} of item {}: {} files, {} dirs, {}; read {} ({} files unchanged); added {} to the vault ({} new chunks) in {:.1}s (job {})",
            point.id.short(),
            item.name,
            s.files,
            s.dirs,
            size(s.bytes),
            size(s.bytes_read),
            s.files_unchanged,
            size(s.bytes_stored),
            s.chunks_new,
            started.elapsed().as_secs_f64(),
            job.id.short()
        );
        if !point.warnings.is_empty() {
            println!("completed with {} warning(s)", point.warnings.len());
        }
    }
    Ok(if point.warnings.is_empty() { Outcome::Ok } else { Outcome::Warnings })
}

fn mode_string(e: &PointEntry) -> String {
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

pub fn points(ctx: &Ctx, cmd: PointCmd) -> Result<Outcome> {
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
                        if p.warnings.is_empty() {
                            "Completed".into()
                        } else {
                            format!("CompletedWithWarnings ({})", p.warnings.len())
                        },
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

pub fn restore(ctx: &Ctx, args: RestoreArgs) -> Result<Outcome> {
    let vault = ctx.open_copy(args.from_secondary)?;
    let item = find_item(&vault, &args.item)?;
    let point = find_point(&vault, &item, &args.point)?;
    if let Some(socket) = &args.serve_nbd {
        return serve_nbd(ctx, &vault, &item, &point, socket);
    }
    let clock = ctx.clock()?;
    let env = ctx.job_env(clock.as_ref());
    let Some(target) = args.target else { bail!("a restore needs --target (or --serve-nbd SOCKET)") };
    let format = match args.format {
        ImageFormat::Raw => DiskOutputFormat::Raw,
        ImageFormat::Qcow2 => DiskOutputFormat::Qcow2,
    };
    let req = RestoreRequest { target, paths: args.paths, format, within: None };
    let bar = RestoreBar::new();
    let (job, result) = boveda_service::restore_job(&vault, &env, &item, &point, &req, Some(&bar))?;
    bar.finish();
    let report = result.with_context(|| format!("restore job {} {}", job.id.short(), job.state.as_str()))?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    print_restore_errors(&report.errors);
    if ctx.json() {
        ctx.print_json(&report)?;
    } else {
        print_restore(&report);
    }
    if !report.errors.is_empty() {
        bail!("restore job {} Failed: {}", job.id.short(), boveda_service::restore_failure(&report));
    }
    // the job's own warnings (a record it could not write, on a full or
    // read-only store)
    let job_only: Vec<&String> = job.warnings.iter().filter(|w| !report.warnings.contains(w)).collect();
    for w in &job_only {
        eprintln!("warning: {w}");
    }
    Ok(if report.warnings.is_empty() && job_only.is_empty() { Outcome::Ok } else { Outcome::Warnings })
}

fn print_restore(r: &RestoreReport) {
    let point = &r.point[..8.min(r.point.len())];
    if let Some(vm) = &r.vm {
        for (dev, p) in &vm.disks {
            println!("disk {dev}: {}", p.display());
        }
        println!("new VM {} defined in {} (define it with `virsh define`)", vm.domain, vm.definition.display());
    } else if !r.paths.is_empty() {
        println!("restored {} path(s) of point {point} of item {} into {}", r.paths.len(), r.item, r.target.display());
    } else {
        println!(
            "restored point {point} of item {} into {}: {} files ({} already complete), {} dirs, {} other, {} written in {:.1}s",
            r.item,
            r.target.display(),
            r.files,
            r.files_skipped,
            r.dirs,
            r.other,
            size(r.bytes_written),
            r.seconds
        );
    }
}

/// Instant restore: the point's disks over NBD until Ctrl-C.
fn serve_nbd(
    ctx: &Ctx,
    vault: &boveda_service::Vault,
    item: &boveda_service::Item,
    point: &boveda_service::RecoveryPoint,
    socket: &std::path::Path,
) -> Result<Outcome> {
    let stop = super::jobs::stop_on_signals();
    let ready = |disks: &[(String, u64)]| {
        if ctx.json() {
            let disks: Vec<_> =
                disks.iter().map(|(name, bytes)| serde_json::json!({"disk": name, "size": bytes})).collect();
            let _ = ctx.print_json(&serde_json::json!({"point": point.id.to_hex(), "socket": socket, "disks": disks}));
            return;
        }
        println!("serving point {} of item {} read-only on {}:", point.id.short(), item.name, socket.display());
        for (name, bytes) in disks {
            println!("  disk {name} ({}): nbd+unix:///{name}?socket={}", size(*bytes), socket.display());
        }
        println!("stop with Ctrl-C");
    };
    boveda_service::serve_point_disks(vault, item, point, socket, stop, ready)
        .with_context(|| format!("serving on {}", socket.display()))?;
    Ok(Outcome::Ok)
}

/// How many failed files are named one by one before only counts are given.
const ERRORS_LISTED: usize = 10;

/// A few failures by name; past that, one line per reason with its count
/// (a full disk fails every remaining file for the same reason).
fn print_restore_errors(errors: &[String]) {
    for e in errors.iter().take(ERRORS_LISTED) {
        eprintln!("error: {e}");
    }
    if errors.len() > ERRORS_LISTED {
        eprintln!(
            "error: ... and {} more file(s) not restored (`--output json` lists them all)",
            errors.len() - ERRORS_LISTED
        );
    }
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

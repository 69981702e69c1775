//! `job`, `alert`, `prune`, `usage` and `agent`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use boveda_service::{
    AgentOptions, DayBound, Job, JobFilter, JobState, Operation, PriceTable, find_job, hostname, list_alerts,
    list_jobs, open_vault, parse_time, plan_prune, prune_job, retry_alerts, run_agent, stop_job, usage as usage_of,
    wait_job,
};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::Ctx;
use crate::Outcome;
use crate::args::{AgentArgs, AlertCmd, JobCmd};
use crate::output::{opt_time, print_table, size, time};
use crate::passphrase::passphrase;

/// `--safety-margin`, as the service reads a duration.
pub fn parse_duration(s: &str) -> Result<SignedDuration> {
    Ok(boveda_service::parse_duration("safety_margin", s)?)
}

fn outcome_of(state: JobState) -> Outcome {
    match state {
        JobState::Completed => Outcome::Ok,
        JobState::CompletedWithWarnings => Outcome::Warnings,
        _ => Outcome::Failed,
    }
}

fn duration(j: &Job) -> String {
    match j.duration() {
        Some(d) => format!("{:.1}s", d.as_secs_f64()),
        None => "-".into(),
    }
}

fn progress(j: &Job) -> String {
    let p = &j.progress;
    let mut parts = Vec::new();
    if !p.phase.is_empty() && j.state.is_running() {
        parts.push(p.phase.clone());
    }
    if p.files > 0 {
        parts.push(format!("{} files", p.files));
    }
    if p.bytes_read > 0 {
        parts.push(format!("{} read", size(p.bytes_read)));
    }
    if p.bytes_written > 0 {
        match p.bytes_total {
            Some(t) if t > 0 => parts.push(format!("{} of {} written", size(p.bytes_written), size(t))),
            _ => parts.push(format!("{} written", size(p.bytes_written))),
        }
    }
    parts.join(", ")
}

fn print_job(j: &Job) {
    let mut rows = vec![
        vec!["id".into(), j.id.to_hex()],
        vec!["operation".into(), j.operation.as_str().into()],
        vec!["item".into(), j.item.clone().unwrap_or_else(|| "-".into())],
        vec!["status".into(), j.state.as_str().into()],
        vec!["start".into(), time(j.start)],
        vec!["end".into(), opt_time(j.end)],
        vec!["duration".into(), duration(j)],
        vec!["progress".into(), progress(j)],
        vec!["host".into(), format!("{} (pid {})", j.host, j.pid)],
        vec!["last heartbeat".into(), time(j.heartbeat)],
    ];
    if let Some(t) = j.scheduled_for {
        rows.push(vec!["scheduled for".into(), time(t)]);
    }
    if let Some(p) = j.point {
        rows.push(vec!["recovery point".into(), p.short()]);
    }
    for d in &j.details {
        rows.push(vec!["detail".into(), d.clone()]);
    }
    for w in &j.warnings {
        rows.push(vec!["warning".into(), w.clone()]);
    }
    if let Some(e) = &j.error {
        rows.push(vec!["error".into(), e.clone()]);
    }
    print_table(&["FIELD", "VALUE"], &rows);
}

pub fn job(ctx: &Ctx, cmd: JobCmd) -> Result<Outcome> {
    let vault = ctx.open()?;
    match cmd {
        JobCmd::List { status, operation, item, since } => {
            let filter = JobFilter {
                state: status.as_deref().map(JobState::parse).transpose()?,
                operation: operation.as_deref().map(Operation::parse).transpose()?,
                item,
                since: since.as_deref().map(|t| parse_time(t, &TimeZone::system(), DayBound::Start)).transpose()?,
            };
            let jobs = list_jobs(&vault, &filter)?;
            if ctx.json() {
                ctx.print_json(&jobs)?;
            } else {
                let rows: Vec<_> = jobs
                    .iter()
                    .map(|j| {
                        vec![
                            j.id.short(),
                            j.operation.as_str().into(),
                            j.item.clone().unwrap_or_else(|| "-".into()),
                            j.state.as_str().into(),
                            time(j.start),
                            duration(j),
                            progress(j),
                        ]
                    })
                    .collect();
                print_table(&["ID", "OPERATION", "ITEM", "STATUS", "START", "DURATION", "PROGRESS"], &rows);
            }
            Ok(Outcome::Ok)
        }
        JobCmd::Show { id } => {
            let j = find_job(&vault, &id)?;
            if ctx.json() {
                ctx.print_json(&j)?
            } else {
                print_job(&j)
            }
            Ok(Outcome::Ok)
        }
        JobCmd::Wait { id } => {
            let j = wait_job(&vault, &id, Duration::from_millis(500))?;
            if ctx.json() {
                ctx.print_json(&j)?
            } else {
                print_job(&j)
            }
            Ok(outcome_of(j.state))
        }
        JobCmd::Stop { id } => {
            let j = stop_job(&vault, &id, &hostname())?;
            if ctx.json() {
                ctx.print_json(&j)?;
            } else {
                println!(
                    "job {} ({} of {}): stop requested; it is {}",
                    j.id.short(),
                    j.operation.as_str(),
                    j.item.as_deref().unwrap_or("-"),
                    j.state.as_str()
                );
            }
            Ok(Outcome::Ok)
        }
    }
}

pub fn alert(ctx: &Ctx, cmd: AlertCmd) -> Result<Outcome> {
    let AlertCmd::List { retry } = cmd;
    let vault = ctx.open()?;
    if retry {
        let n = retry_alerts(&vault)?;
        if !ctx.json() {
            eprintln!("{n} alert(s) delivered to the webhook now");
        }
    }
    let alerts = list_alerts(&vault)?;
    if ctx.json() {
        ctx.print_json(&alerts)?;
    } else {
        let rows: Vec<_> = alerts
            .iter()
            .map(|a| {
                vec![
                    format!("{:?}", a.severity),
                    time(a.time),
                    a.item.clone().unwrap_or_else(|| "-".into()),
                    a.operation.as_str().into(),
                    a.job.short(),
                    if a.delivered { "yes".into() } else { format!("no ({} attempts)", a.attempts) },
                    a.reason.clone(),
                ]
            })
            .collect();
        print_table(&["SEVERITY", "TIME", "ITEM", "OPERATION", "JOB", "DELIVERED", "REASON"], &rows);
    }
    Ok(Outcome::Ok)
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

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// The flag SIGINT and SIGTERM set from now on: a long-running command
/// ends cleanly on Ctrl-C or a service manager's stop.
pub(crate) fn stop_on_signals() -> &'static AtomicBool {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    &STOP
}

pub fn agent(ctx: &Ctx, args: AgentArgs) -> Result<Outcome> {
    let clock = ctx.clock()?;
    let pass = passphrase(ctx.password_file.as_deref(), false)?;
    let selectors = boveda_service::vaults_to_serve(&args.vaults, ctx.vault.as_deref())?;
    let vaults = selectors
        .iter()
        .map(|s| open_vault(Some(s), &pass).with_context(|| format!("vault {s}")))
        .collect::<Result<Vec<_>>>()?;
    let until = args.until.as_deref().map(|t| parse_time(t, &TimeZone::system(), DayBound::End)).transpose()?;
    let opts = AgentOptions {
        max_jobs: args.max_jobs,
        heartbeat: ctx.heartbeat(),
        safety_margin: parse_duration(&args.safety_margin)?,
        until,
        poll: Duration::from_secs(args.poll_secs.max(1)),
        hostname: hostname(),
    };
    if args.max_jobs == 0 {
        bail!("--max-jobs must be at least 1");
    }
    let stop = stop_on_signals();
    let names: Vec<String> = vaults.iter().map(|v| v.settings().name.clone()).collect();
    eprintln!("boveda agent: serving {} with at most {} backup(s) at once", names.join(", "), opts.max_jobs);
    let log = |line: &str| eprintln!("{} {line}", Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S"));
    let report = run_agent(&vaults, clock.as_ref(), &opts, stop, &log)?;
    if ctx.json() {
        ctx.print_json(&report)?;
    } else {
        println!(
            "agent stopped: {} backup(s) ({} failed, {} cancelled), {} prune(s), at most {} at once",
            report.backups, report.failed, report.cancelled, report.prunes, report.peak_jobs
        );
    }
    Ok(Outcome::Ok)
}

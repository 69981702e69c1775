//! `job`: list, show, wait for and stop jobs.

use std::time::Duration;

use anyhow::Result;
use boveda_service::{Job, JobFilter, JobState, find_job, hostname, list_jobs, stop_job, wait_job};

use super::Ctx;
use crate::Outcome;
use crate::args::JobCmd;
use crate::output::{opt_time, print_table, size, time};

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
        JobCmd::List { status, operation, item, since, until, host } => {
            let filter =
                JobFilter::parse(&boveda_service::JobQuery { state: status, operation, item, since, until, host })?;
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
                            j.point.map_or_else(|| "-".into(), |p| p.short()),
                        ]
                    })
                    .collect();
                print_table(&["ID", "OPERATION", "ITEM", "STATUS", "START", "DURATION", "PROGRESS", "POINT"], &rows);
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

//! `agent`: the scheduler, in the foreground.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use boveda_service::{AgentOptions, DayBound, hostname, open_vault, parse_time, run_agent};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::Ctx;
use super::prune::parse_duration;
use super::signals::stop_on_signals;
use crate::Outcome;
use crate::args::AgentArgs;
use crate::passphrase::passphrase;

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

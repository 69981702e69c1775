//! Verify: checking a vault's objects (and, on request, every chunk's
//! data) as a job.

use boveda_vault::{CheckOptions, CheckReport, Vault, check};

use crate::error::{Result, ServiceError};
use crate::job::{Job, JobDone, Observers, Operation, run_job};
use crate::protection::JobEnv;

/// Checks `vault` as a `Verify` job: key slots, indexes, packs, points
/// and trees, and with `read_data` every chunk's data. `step` hears each
/// phase as it starts. The report comes back also when problems were
/// found; the job is then `Failed`, naming the first.
///
/// # Errors
/// A store error recording the job; inside the returned result, a check
/// that could not run (an unreachable store).
pub fn verify_job(
    vault: &Vault,
    env: &JobEnv<'_>,
    read_data: bool,
    step: &(dyn Fn(&str) + Sync),
) -> Result<(Job, Result<CheckReport>)> {
    let spec = env.vault_spec(Operation::Verify);
    let mut saved = None;
    let (job, result) = run_job(vault, env.clock, &spec, Observers::default(), |jctx| {
        let report = check(vault, CheckOptions { read_data }, &|phase| {
            jctx.set_phase(phase);
            step(phase);
        })?;
        let problems = report.problems.len();
        let first = report.problems.first().map(|p| format!("{} {}", p.object, p.problem));
        saved = Some(report);
        match first {
            None => Ok(((), JobDone { details: vec!["no problems found".into()], ..JobDone::default() })),
            Some(first) => Err(ServiceError::Invalid(format!("{problems} problem(s) found, first: {first}"))),
        }
    })?;
    Ok((
        job,
        saved.ok_or_else(|| result.err().unwrap_or_else(|| ServiceError::Invalid("the check did not run".into()))),
    ))
}

//! The scheduler (`boveda agent`): takes every protected item's backups
//! when its policy says, for all the vaults it is given, at most
//! `max_jobs` at once, then applies retention (a `Prune` job).
//!
//! - Each item's last handled slot comes from the vault (its newest
//!   scheduled point or scheduled `Backup` job), so a restarted agent
//!   neither repeats nor forgets a slot. After downtime an item gets one
//!   catch-up backup for its latest missed slot, not one per slot.
//! - A failed backup raises an alert (through its job) and is retried at
//!   the item's next slot.
//! - Time comes from a [`Clock`]: with a simulated clock the agent waits
//!   for the jobs of a slot before moving time on, so tests run a year of
//!   schedules in seconds.

pub(crate) mod background;

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use boveda_engine::NoProgress;
use boveda_vault::{RecordId, Vault};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::error::Result;
use crate::items::{Item, ProtectionState, list_items};
use crate::model::policy::Policy;
use crate::model::schedule::{latest_slot, next_slot};
use crate::policies::list_policies;
use crate::protection::backups::backup_job;
use crate::runtime::alert::retry_alerts;
use crate::runtime::clock::Clock;
use crate::runtime::job::JobEnv;
use crate::runtime::job::{JobFilter, JobState, Operation, list_jobs};
use crate::vault::prune::prune_job;

pub struct AgentOptions {
    /// Backups running at once, over all vaults.
    pub max_jobs: usize,
    pub heartbeat: Duration,
    pub safety_margin: SignedDuration,
    /// Stop when the clock reaches this time (tests and simulations).
    pub until: Option<Timestamp>,
    /// How often the catalog is read again for new items and policies.
    pub poll: Duration,
    pub hostname: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct AgentReport {
    pub backups: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub prunes: usize,
    /// The most backups that ran at once.
    pub peak_jobs: usize,
}

struct Task {
    vault: usize,
    item: Item,
    slot: Timestamp,
}

struct Done {
    vault: usize,
    item: RecordId,
    state: JobState,
}

type Key = (usize, RecordId);

fn handle(d: Done, running: &mut HashSet<Key>, dirty: &mut HashSet<usize>, r: &mut AgentReport) {
    running.remove(&(d.vault, d.item));
    dirty.insert(d.vault);
    r.backups += 1;
    match d.state {
        JobState::Failed => r.failed += 1,
        JobState::Cancelled => r.cancelled += 1,
        _ => {}
    }
}

/// The slot each item last had a backup for, from points and jobs.
fn last_slots<V: Borrow<Vault>>(vaults: &[V]) -> Result<HashMap<Key, Timestamp>> {
    let mut last: HashMap<Key, Timestamp> = HashMap::new();
    let mut note = |k: Key, t: Timestamp| {
        let e = last.entry(k).or_insert(t);
        *e = (*e).max(t);
    };
    for (vi, v) in vaults.iter().map(Borrow::borrow).enumerate() {
        for p in v.list_points()? {
            if let Some(t) = p.scheduled_for {
                note((vi, p.item_id), t);
            }
        }
        for j in list_jobs(v, &JobFilter { operation: Some(Operation::Backup), ..JobFilter::default() })? {
            if let (Some(t), Some(item)) = (j.scheduled_for, j.item_id) {
                note((vi, item), t);
            }
        }
    }
    Ok(last)
}

/// A replication pass when one is due; its failure is lag, logged.
fn replicate(vault: &Vault, clock: &dyn Clock, log: &(dyn Fn(&str) + Sync)) {
    let name = &vault.settings().name;
    match crate::replication::finish_replication(vault, clock) {
        Ok(Some(outcome)) => {
            if let Err(e) = &outcome.report {
                log(&format!("{name}: replication stopped ({e}); the next pass continues it"));
            }
            if let Some(alert) = &outcome.alert {
                log(&format!("{name}: alert: {alert}"));
            }
        }
        Ok(None) => {}
        Err(e) => log(&format!("{name}: replication status not recorded: {e}")),
    }
}

fn protected(v: &Vault) -> Result<Vec<(Item, Policy)>> {
    let policies = list_policies(v)?;
    Ok(list_items(v)?
        .into_iter()
        .filter(|i| i.protection.state == ProtectionState::Protected)
        // a registered host's items are backed up on that host
        .filter(|i| i.host.is_none())
        .filter_map(|i| {
            let p = policies.iter().find(|p| Some(p.id) == i.protection.policy)?.clone();
            Some((i, p))
        })
        .collect())
}

/// Runs the scheduler until `stop` is set or the clock reaches
/// `opts.until`.
///
/// # Errors
/// A store error reading a vault's catalog; a job's own failure is not
/// an error of the agent.
pub fn run_agent<V: Borrow<Vault> + Sync>(
    vaults: &[V],
    clock: &dyn Clock,
    opts: &AgentOptions,
    stop: &AtomicBool,
    log: &(dyn Fn(&str) + Sync),
) -> Result<AgentReport> {
    let mut last = last_slots(vaults)?;
    let mut report = AgentReport::default();
    let active = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let (task_tx, task_rx) = crossbeam_channel::unbounded::<Task>();
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
    let env = JobEnv::new(clock, opts.heartbeat, opts.hostname.clone());

    let verifying: Vec<AtomicBool> = vaults.iter().map(|_| AtomicBool::new(false)).collect();
    let result = std::thread::scope(|s| -> Result<()> {
        for _ in 0..opts.max_jobs.max(1) {
            let worker = Worker { vaults, env: &env, active: &active, peak: &peak, log };
            let (task_rx, done_tx) = (task_rx.clone(), done_tx.clone());
            s.spawn(move || worker.run(&task_rx, &done_tx));
        }
        drop(done_tx);

        let mut running: HashSet<Key> = HashSet::new();
        let mut dirty: HashSet<usize> = HashSet::new();
        let mut catalog: Vec<Vec<(Item, Policy)>> = Vec::new();
        let mut refresh_at = clock.now();
        loop {
            let now = clock.now();
            if stop.load(Ordering::Relaxed) || opts.until.is_some_and(|u| now >= u) {
                break;
            }
            if clock.is_simulated() || now >= refresh_at || catalog.is_empty() {
                catalog = reload(vaults, clock, log)?;
                refresh_at = now + SignedDuration::try_from(opts.poll).unwrap_or(SignedDuration::from_secs(30));
            }
            let mut next_wake: Option<Timestamp> = None;
            for (vi, protected) in catalog.iter().enumerate() {
                for (item, policy) in protected {
                    let key = (vi, item.id);
                    let since = item.protection.since.unwrap_or(now);
                    let after = last.get(&key).copied().map_or(since, |l| l.max(since));
                    if !running.contains(&key)
                        && let Some(slot) = latest_slot(policy, now, after)
                    {
                        running.insert(key);
                        last.insert(key, slot);
                        let _ = task_tx.send(Task { vault: vi, item: item.clone(), slot });
                    }
                    if let Some(n) = next_slot(policy, now) {
                        next_wake = Some(next_wake.map_or(n, |w: Timestamp| w.min(n)));
                    }
                }
            }
            if clock.is_simulated() {
                while !running.is_empty() {
                    match done_rx.recv() {
                        Ok(d) => handle(d, &mut running, &mut dirty, &mut report),
                        Err(_) => break,
                    }
                }
            }
            while let Ok(d) = done_rx.try_recv() {
                handle(d, &mut running, &mut dirty, &mut report);
            }
            for vi in std::mem::take(&mut dirty) {
                let v = vaults[vi].borrow();
                after_backups(v, &env, opts, &mut report, log);
                // the verifications the policies make due run beside the
                // scheduler (one batch per vault at a time), so backups due
                // meanwhile are not held up; under a simulated clock, in
                // turn, so that runs repeat
                if env.clock.is_simulated() {
                    verify_due(v, &env, log);
                } else if !verifying[vi].swap(true, Ordering::AcqRel) {
                    let (env, flag) = (&env, &verifying[vi]);
                    s.spawn(move || {
                        verify_due(v, env, log);
                        flag.store(false, Ordering::Release);
                    });
                }
            }
            if clock.is_simulated() {
                match next_wake {
                    Some(t) => clock.sleep_until(opts.until.map_or(t, |u| u.min(t)), stop),
                    None => break,
                }
            } else {
                let wake = next_wake.map_or(refresh_at, |t| t.min(refresh_at));
                // wake early when a job ends, to prune and free its slot
                let left = Duration::try_from(wake.duration_since(clock.now())).unwrap_or_default();
                // in steps of at most 500 ms, so a stop request is seen soon
                if let Ok(d) = done_rx.recv_timeout(left.min(Duration::from_millis(500))) {
                    handle(d, &mut running, &mut dirty, &mut report);
                }
            }
        }
        drop(task_tx);
        for d in done_rx.iter() {
            handle(d, &mut running, &mut dirty, &mut report);
        }
        Ok(())
    });
    result?;
    report.peak_jobs = peak.load(Ordering::SeqCst);
    Ok(report)
}

/// Reads the vaults' settings and protected items again (settings another
/// process changed, such as the webhook, compression or redundancy, apply
/// from this pass on), and runs the replication passes another process
/// left due (it was killed, or wrote without the agent).
fn reload<V: Borrow<Vault>>(
    vaults: &[V],
    clock: &dyn Clock,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Vec<Vec<(Item, Policy)>>> {
    for v in vaults.iter().map(Borrow::borrow) {
        if let Err(e) = v.refresh_settings() {
            log(&format!("{}: settings not read again: {e}", v.settings().name));
        }
    }
    let catalog = vaults.iter().map(|v| protected(v.borrow())).collect::<Result<_>>()?;
    for v in vaults.iter().map(Borrow::borrow) {
        if let Some(r) = v.replicating_store()
            && r.look_for_pending().unwrap_or(false)
        {
            replicate(v, clock, log);
        }
    }
    Ok(catalog)
}

/// After backups of a vault ended: a prune (retention), a replication
/// pass, and alerts whose webhook failed sent again.
fn after_backups(
    v: &Vault,
    env: &JobEnv<'_>,
    opts: &AgentOptions,
    report: &mut AgentReport,
    log: &(dyn Fn(&str) + Sync),
) {
    match prune_job(v, env, opts.safety_margin) {
        Ok((job, _)) => {
            report.prunes += 1;
            log(&format!("{}: prune: {} {}", v.settings().name, job.state.as_str(), job.details.join("; ")));
        }
        Err(e) => log(&format!("{}: prune could not start: {e}", v.settings().name)),
    }
    replicate(v, env.clock, log);
    if let Err(e) = retry_alerts(v) {
        log(&format!("{}: alerts: {e}", v.settings().name));
    }
}

/// The verifications the items' policies make due (the newest point,
/// every N days), at once within the default memory budget.
fn verify_due(v: &Vault, env: &JobEnv<'_>, log: &(dyn Fn(&str) + Sync)) {
    let name = &v.settings().name;
    let due = match crate::recovery::verify::due_verifications(v, env.clock.now()) {
        Ok(d) => d,
        Err(e) => return log(&format!("{name}: verifications not planned: {e}")),
    };
    let tasks: Vec<_> = due
        .iter()
        .map(|(item, settings)| crate::recovery::verify::VerifyTask { item, point: None, settings: settings.clone() })
        .collect();
    for (t, r) in tasks.iter().zip(crate::recovery::verify::verify_many(v, env, &tasks, VERIFY_BUDGET_MIB)) {
        match r {
            Ok((job, _)) => {
                log(&format!("{name}: verify {}: {} {}", t.item.name, job.state.as_str(), job.details.join("; ")))
            }
            Err(e) => log(&format!("{name}: verify {} could not start: {e}", t.item.name)),
        }
    }
}

/// The memory the verifications a policy schedules may use at once, MiB.
const VERIFY_BUDGET_MIB: u64 = 4096;

/// One of the agent's backup workers: takes due backups from the queue,
/// runs each as a job, and says how it ended.
struct Worker<'a, V> {
    vaults: &'a [V],
    env: &'a JobEnv<'a>,
    active: &'a AtomicUsize,
    peak: &'a AtomicUsize,
    log: &'a (dyn Fn(&str) + Sync),
}

impl<V: Borrow<Vault>> Worker<'_, V> {
    fn run(&self, tasks: &crossbeam_channel::Receiver<Task>, done: &crossbeam_channel::Sender<Done>) {
        for t in tasks {
            let now_active = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now_active, Ordering::SeqCst);
            let state = self.backup(&t);
            self.active.fetch_sub(1, Ordering::SeqCst);
            if done.send(Done { vault: t.vault, item: t.item.id, state }).is_err() {
                return;
            }
        }
    }

    fn backup(&self, t: &Task) -> JobState {
        let (vault, log): (&Vault, _) = (self.vaults[t.vault].borrow(), self.log);
        match backup_job(vault, self.env, &t.item, None, Some(t.slot), &NoProgress) {
            Ok((job, result)) => {
                let what = match &result {
                    Ok(p) => format!("point {}", p.id.short()),
                    Err(e) => e.to_string(),
                };
                log(&format!(
                    "{}: backup of {} for {}: {} ({what})",
                    vault.settings().name,
                    t.item.name,
                    t.slot,
                    job.state.as_str()
                ));
                replicate(vault, self.env.clock, log);
                job.state
            }
            Err(e) => {
                log(&format!("{}: backup of {} could not start: {e}", vault.settings().name, t.item.name));
                JobState::Failed
            }
        }
    }
}

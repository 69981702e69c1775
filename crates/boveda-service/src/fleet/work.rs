//! What the server asks of its registered hosts: the scheduled backups of
//! their protected items (each policy slot once), and "backup now"
//! requests made in the portal or the API, which a host's agent picks up
//! within a second (it waits on [`HostWork::take`], a long poll).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use boveda_vault::{RecordId, Vault};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};
use crate::fleet::discover::{DiscoverOrder, Discovery};
use crate::fleet::{Host, host_items};
use crate::items::{ItemSource, ProtectionState};
use crate::model::schedule::latest_slot;
use crate::policies::list_policies;

/// One backup a host is asked to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub item: String,
    /// The policy slot of a scheduled backup.
    #[serde(default)]
    pub scheduled_for: Option<Timestamp>,
    /// The date to keep an ad-hoc point until, as asked.
    #[serde(default)]
    pub retain_until: Option<String>,
    /// The request a "backup now" or a restore waits on, to be named when
    /// the job starts.
    #[serde(default)]
    pub request: Option<RecordId>,
    /// A restore an Operator started through the server: the host may
    /// restore just this point, once, for this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreOrder>,
    /// A look at the host's folders and VMs for "configure backup": the
    /// host answers with what it finds, and runs no job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discover: Option<DiscoverOrder>,
}

/// What a host's agent answers a request with.
#[derive(Debug)]
pub enum Answer {
    /// The job it started.
    Started(RecordId),
    /// What it found, for a discovery.
    Found(Box<Discovery>),
}

/// A restore onto a host, as the server orders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOrder {
    /// The point's id, in full.
    pub point: String,
    /// The folder on the host to restore into (its agent allows only its
    /// `--restore-root` folders).
    pub target: std::path::PathBuf,
    /// Only these paths of the point; none for all.
    #[serde(default)]
    pub paths: Vec<String>,
}

struct Request {
    assignment: Assignment,
    /// Told the host's answer.
    answer: crossbeam_channel::Sender<Answer>,
}

#[derive(Default)]
struct Queues {
    /// "Backup now" requests not yet taken, by host.
    waiting: HashMap<RecordId, Vec<Request>>,
    /// Requests taken by a host, until it starts their job: the host, what
    /// was asked, and who waits.
    taken: HashMap<RecordId, (RecordId, Assignment, crossbeam_channel::Sender<Answer>)>,
    /// The last slot given out, by item.
    slots: HashMap<RecordId, Timestamp>,
}

/// The work of a server's hosts.
#[derive(Default)]
pub struct HostWork {
    queues: Mutex<Queues>,
    arrived: Condvar,
}

fn poisoned() -> ServiceError {
    ServiceError::Internal("the host work queue is poisoned".into())
}

impl HostWork {
    /// Asks `host` to back up `item` now and waits (at most `wait`) until
    /// its agent started the job; returns the job's id.
    ///
    /// # Errors
    /// `Conflict` when the host did not take the request in time (its
    /// agent does not run, or it is unreachable).
    pub fn backup_now(
        &self,
        host: &Host,
        item: &str,
        retain_until: Option<String>,
        wait: Duration,
    ) -> Result<RecordId> {
        let assignment = Assignment { item: item.to_string(), retain_until, ..Assignment::default() };
        self.ask(host, assignment, wait, "backup")
    }

    /// Asks `host` to run `assignment` (given a request id here) and waits
    /// until its agent started the job.
    ///
    /// # Errors
    /// `Conflict` when the host did not take it in time.
    pub fn ask(&self, host: &Host, assignment: Assignment, wait: Duration, what: &str) -> Result<RecordId> {
        let item = assignment.item.clone();
        match self.request(host, assignment, wait) {
            Some(Answer::Started(job)) => Ok(job),
            _ => Err(ServiceError::Conflict(format!(
                "host {} did not start the {what} of {item} within {} s: is `boveda host agent` running there, and can it reach this server?",
                host.name,
                wait.as_secs()
            ))),
        }
    }

    /// Asks `host` what it has at `order` and waits (at most `wait`) for
    /// its answer.
    ///
    /// # Errors
    /// `Conflict` when the host did not answer in time.
    pub fn discover(&self, host: &Host, order: DiscoverOrder, wait: Duration) -> Result<Discovery> {
        let assignment = Assignment { discover: Some(order), ..Assignment::default() };
        match self.request(host, assignment, wait) {
            Some(Answer::Found(found)) => Ok(*found),
            _ => Err(ServiceError::Conflict(format!(
                "host {} did not answer within {} s: is `boveda host agent` running there, and can it reach this server?",
                host.name,
                wait.as_secs()
            ))),
        }
    }

    /// Queues `assignment` for `host` under a new request id, and waits
    /// for the answer; none in time takes the request back.
    fn request(&self, host: &Host, mut assignment: Assignment, wait: Duration) -> Option<Answer> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let id = RecordId::random();
        assignment.request = Some(id);
        self.queues.lock().ok()?.waiting.entry(host.id).or_default().push(Request { assignment, answer: tx });
        self.arrived.notify_all();
        let answer = rx.recv_timeout(wait).ok();
        if answer.is_none()
            && let Ok(mut q) = self.queues.lock()
        {
            if let Some(list) = q.waiting.get_mut(&host.id) {
                list.retain(|r| r.assignment.request != Some(id));
            }
            q.taken.remove(&id);
        }
        answer
    }

    /// What `host` found for the discovery it was asked under `request`:
    /// handed to whoever waits.
    ///
    /// # Errors
    /// `PermissionDenied` for a request that is not a discovery the server
    /// asked of this host (or was answered already).
    pub fn found(&self, host: &Host, request: &RecordId, found: Discovery) -> Result<()> {
        let mut q = self.queues.lock().map_err(|_| poisoned())?;
        match q.taken.get(request) {
            Some((h, a, _)) if *h == host.id && a.discover.is_some() => {}
            _ => {
                return Err(ServiceError::refused(
                    crate::error::ServiceErrorKind::PermissionDenied,
                    format!("host {}: the server asked no discovery {} of it", host.name, request.short()),
                    crate::error::Remedy::AskAdmin,
                ));
            }
        }
        if let Some((_, _, tx)) = q.taken.remove(request) {
            let _ = tx.send(Answer::Found(Box::new(found)));
        }
        Ok(())
    }

    /// What the server asked of `host` under `request` (a host names the
    /// request; what it may do comes from here, never from the host).
    pub fn asked(&self, host: &Host, request: &RecordId) -> Option<Assignment> {
        let q = self.queues.lock().ok()?;
        q.taken.get(request).filter(|(h, _, _)| *h == host.id).map(|(_, a, _)| a.clone())
    }

    /// What `host` should run now: "backup now" requests, and the policy
    /// slots of its protected items not given out yet. Waits up to `wait`
    /// for a request when there is nothing.
    ///
    /// # Errors
    /// A store error.
    pub fn take(&self, vault: &Vault, host: &Host, now: Timestamp, wait: Duration) -> Result<Vec<Assignment>> {
        let mut out = self.scheduled(vault, host, now)?;
        let deadline = Instant::now() + wait;
        let mut q = self.queues.lock().map_err(|_| poisoned())?;
        loop {
            let requests = q.waiting.remove(&host.id).unwrap_or_default();
            if !requests.is_empty() || !out.is_empty() || Instant::now() >= deadline {
                for r in requests {
                    if let Some(id) = r.assignment.request {
                        q.taken.insert(id, (host.id, r.assignment.clone(), r.answer));
                    }
                    out.push(r.assignment);
                }
                return Ok(out);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            q = self.arrived.wait_timeout(q, left).map_err(|_| poisoned())?.0;
        }
    }

    fn scheduled(&self, vault: &Vault, host: &Host, now: Timestamp) -> Result<Vec<Assignment>> {
        let items = host_items(vault, host)?;
        if !items.iter().any(|i| i.protection.state == ProtectionState::Protected) {
            return Ok(Vec::new());
        }
        let policies = list_policies(vault)?;
        let mut out = Vec::new();
        for item in items.iter().filter(|i| i.protection.state == ProtectionState::Protected) {
            let Some(policy) = policies.iter().find(|p| Some(p.id) == item.protection.policy) else {
                continue;
            };
            let given = self.queues.lock().map_err(|_| poisoned())?.slots.get(&item.id).copied();
            let after = match given {
                Some(t) => t,
                // since the server started: the slot of the newest scheduled point
                None => vault
                    .list_item_points(&item.id)?
                    .iter()
                    .filter_map(|p| p.scheduled_for)
                    .max()
                    .unwrap_or(Timestamp::MIN),
            };
            let after = after.max(item.protection.since.unwrap_or(now));
            if let Some(slot) = latest_slot(policy, now, after) {
                self.queues.lock().map_err(|_| poisoned())?.slots.insert(item.id, slot);
                out.push(Assignment { item: item.name.clone(), scheduled_for: Some(slot), ..Assignment::default() });
            }
        }
        Ok(out)
    }

    /// Whether `slot` is the one given out for `item` (a host may claim
    /// only that slot for a scheduled point).
    pub fn is_given(&self, item: &RecordId, slot: Timestamp) -> bool {
        self.queues.lock().is_ok_and(|q| q.slots.get(item) == Some(&slot))
    }

    /// The job of request `request` started: its asker is told.
    pub fn started(&self, request: &RecordId, job: RecordId) {
        if let Ok(mut q) = self.queues.lock()
            && let Some((_, _, tx)) = q.taken.remove(request)
        {
            let _ = tx.send(Answer::Started(job));
        }
    }
}

/// "Backup now" of an item that lives on a registered host: its agent
/// runs it; returns the job once the host started it (at most `wait`).
///
/// # Errors
/// `Conflict` when the host is unregistered or does not start the backup
/// in time; as [`crate::runtime::job::find_job`].
pub fn backup_now_on_host(
    vault: &Vault,
    work: &HostWork,
    item: &crate::items::Item,
    retain_until: Option<String>,
    wait: Duration,
) -> Result<crate::runtime::job::Job> {
    let hosts = crate::fleet::list_hosts(vault)?;
    let host = hosts
        .iter()
        .find(|h| Some(h.id) == item.host && h.unregistered.is_none())
        .ok_or_else(|| ServiceError::Conflict(format!("item {}'s host is not registered any more", item.name)))?;
    crate::protection::check_can_back_up(item)?;
    let job = work.backup_now(host, &item.name, retain_until, wait)?;
    crate::runtime::job::find_job(vault, &job.to_hex())
}

/// What registered host `name` has at `order` (asked of its agent, at
/// most `wait`), its VMs named with the item protecting each.
///
/// # Errors
/// `Invalid` for a relative path; `NotFound` for a host not registered;
/// `Conflict` when it does not answer in time.
pub fn discover_on_host(
    vault: &Vault,
    work: &HostWork,
    name: &str,
    order: DiscoverOrder,
    wait: Duration,
) -> Result<Discovery> {
    if !order.path.is_absolute() {
        return Err(ServiceError::field_error(
            "path",
            format!("{} is not an absolute path on the host", order.path.display()),
        ));
    }
    let host = crate::fleet::find_host(vault, name)?;
    let mut found = work.discover(&host, order, wait)?;
    // the host's VMs protected already, by the items of that host
    let items = host_items(vault, &host)?;
    for vm in &mut found.vms {
        vm.item = items
            .iter()
            .find(|i| matches!(&i.source, ItemSource::Vm { domain_xml, .. } if *domain_xml == vm.definition))
            .map(|i| i.name.clone());
    }
    Ok(found)
}

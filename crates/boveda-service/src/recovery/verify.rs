//! Proving points: a VM point booted in an isolated QEMU until its guest
//! answers (`boveda_engine::boot_check`), a file or disk point restored to
//! scratch and compared (`super::drill`). Each verification is a
//! `VerifyPoint` job, its result recorded on the point (the catalog kind
//! `point-verifications`, one record per point: the latest), and a failure
//! raises a critical alert. Several run at once within a memory budget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use boveda_engine::boot_check::{self, BootOutcome, BootSpec, WorkDir};
use boveda_vault::{PointId, RecordId, RecoveryPoint, Vault};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::drill::{DrillOutcome, drill};
use super::find_point;
use crate::error::{Result, ServiceError};
use crate::items::{Item, ItemSource};
pub use crate::model::verify_settings::VerifySettings;
use crate::protection::VM_FILES;
use crate::runtime::job::{Job, JobDone, JobEnv, Observers, Operation, run_job};

const VERIFICATIONS: &str = "point-verifications";

/// The memory a verification of `item` holds while it runs, MiB: the
/// VM's capped memory and QEMU's own; a drill none to speak of.
fn memory_mib(settings: &VerifySettings, item: &Item) -> u64 {
    match item.source {
        ItemSource::Vm { .. } => settings.limits.max_memory_mib + 64,
        _ => 64,
    }
}

/// How a point was proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerificationKind {
    /// Booted in an isolated QEMU.
    Boot,
    /// Restored to scratch and compared.
    Drill,
}

/// The latest verification of a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointVerification {
    pub point: PointId,
    pub item: RecordId,
    pub item_name: String,
    pub kind: VerificationKind,
    pub verified_at: Timestamp,
    pub passed: bool,
    /// Why it failed, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The whole verification, seconds.
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillOutcome>,
    /// Bytes this process read from the vault's store meanwhile (a boot
    /// reads only what the guest touches), and the disks' size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<RecordId>,
}

/// Every point's latest verification, newest first.
///
/// # Errors
/// A store error.
pub fn verifications(vault: &Vault) -> Result<Vec<PointVerification>> {
    let mut all: Vec<PointVerification> = vault.catalog_list(VERIFICATIONS)?.into_iter().map(|(_, v)| v).collect();
    all.sort_by_key(|v| std::cmp::Reverse(v.verified_at));
    Ok(all)
}

/// The latest verification of `point`, if any.
///
/// # Errors
/// A store error.
pub fn verification_of(vault: &Vault, point: &PointId) -> Result<Option<PointVerification>> {
    Ok(vault.catalog_get(VERIFICATIONS, &RecordId(point.0))?)
}

/// The newest verification of any point of `item`.
///
/// # Errors
/// A store error.
pub fn last_verification(vault: &Vault, item: &RecordId) -> Result<Option<PointVerification>> {
    Ok(verifications(vault)?.into_iter().find(|v| v.item == *item))
}

/// Boots a VM point as `settings` say and waits for its guest.
fn boot(
    vault: &Vault,
    item: &Item,
    point: &RecoveryPoint,
    settings: &VerifySettings,
    phase: &dyn Fn(&str),
) -> Result<(BootOutcome, u64, u64)> {
    let index = vault.load_index()?;
    let (domain, nvram, unread) = super::vm_restore::stored_vm(vault, &index, point)?;
    // a kernel booted directly is a file of this machine the definition
    // names: a registered host's definition could name any file here
    if item.host.is_some() && (domain.hardware.kernel.is_some() || domain.hardware.initrd.is_some()) {
        return Err(ServiceError::Invalid(format!(
            "item {}'s definition boots a kernel file of its host directly: only VMs that boot from their disks \
             are verified for registered hosts",
            item.name
        )));
    }
    let tmp = std::env::temp_dir();
    boot_check::remove_leftovers(&tmp);
    let work = WorkDir::new(&tmp)?;
    let socket = work.path().join("nbd.sock");
    let stop = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel();
    let accel = settings.accel.clone().unwrap_or_else(|| boot_check::default_accelerator().to_string());
    std::thread::scope(|s| {
        let server = s.spawn(|| {
            boveda_engine::serve_point_disks(vault, &point.tree, &VM_FILES, &socket, &stop, |disks| {
                let _ = tx.send(disks.iter().map(|(_, size)| *size).sum::<u64>());
            })
        });
        let disk_bytes = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(b) => b,
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                return match server.join() {
                    Ok(Err(e)) => Err(e.into()),
                    _ => Err(ServiceError::Invalid("the point's disks could not be served".into())),
                };
            }
        };
        phase("boot");
        let spec = BootSpec {
            domain: &domain,
            nbd_socket: &socket,
            work: work.path(),
            limits: settings.limits,
            marker: settings.marker.as_deref(),
            probe: settings.probe.as_ref(),
            accel: &accel,
            nvram: nvram.as_deref(),
        };
        let outcome = boot_check::boot_check(&spec).map(|mut o| {
            if let (Some(why), Some(_)) = (&unread, &o.firmware_vars) {
                o.firmware_vars = Some(format!("fresh: {why}"));
            }
            o
        });
        stop.store(true, Ordering::Relaxed);
        // what this boot's disks read from the store (others running at
        // once in this process count their own)
        let read = match server.join() {
            Ok(Ok(read)) => read,
            _ => 0,
        };
        Ok((outcome?, read, disk_bytes))
    })
}

/// Verifies `point` (or the newest) of `item` as a `VerifyPoint` job: a
/// VM boots, files and disks are drilled. The record comes back also when
/// the point failed; the job is then `Failed` with the reason, and raises
/// an alert.
///
/// # Errors
/// A store error recording the job; inside the returned result, a
/// verification that could not run (no point, QEMU missing).
pub fn verify_point_job(
    vault: &Vault,
    env: &JobEnv<'_>,
    item: &Item,
    selector: Option<&str>,
    settings: &VerifySettings,
) -> Result<(Job, Result<PointVerification>)> {
    settings.check()?;
    let spec = env.spec(Operation::VerifyPoint, item, None);
    let recorded = std::sync::Mutex::new(None);
    let (job, result) = run_job(vault, env.clock, &spec, Observers::default(), |jctx| {
        let point = find_point(vault, item, selector.unwrap_or("latest"))?;
        let started = std::time::Instant::now();
        let phase = |p: &str| jctx.set_phase(p);
        let mut v = PointVerification {
            point: point.id,
            item: item.id,
            item_name: item.name.clone(),
            kind: VerificationKind::Drill,
            verified_at: env.clock.now(),
            passed: false,
            reason: None,
            seconds: 0.0,
            boot: None,
            drill: None,
            bytes_read: None,
            disk_bytes: None,
            job: None,
        };
        let proven = if let ItemSource::Vm { .. } = item.source {
            v.kind = VerificationKind::Boot;
            boot(vault, item, &point, settings, &phase).map(|(outcome, read, disks)| {
                v.passed = outcome.verified;
                v.reason.clone_from(&outcome.reason);
                v.bytes_read = Some(read);
                v.disk_bytes = Some(disks);
                v.boot = Some(outcome);
            })
        } else {
            let scratch = settings.scratch.clone().unwrap_or_else(std::env::temp_dir);
            drill(vault, item, &point, settings.sample_percent, &scratch, &phase).map(|outcome| {
                v.passed = outcome.mismatches.is_empty();
                if let Some(first) = outcome.mismatches.first() {
                    v.reason = Some(format!("file(s) differ from the point, first: {first}"));
                }
                v.bytes_read = Some(outcome.stored_bytes);
                v.disk_bytes = Some(point.stats.bytes);
                v.drill = Some(outcome);
            })
        };
        v.seconds = started.elapsed().as_secs_f64();
        // a verification that could not finish (a damaged object, QEMU
        // missing) is a failed one, recorded as such
        if let Err(e) = proven {
            v.passed = false;
            v.reason = Some(e.to_string());
            *recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(v);
            return Err(e);
        }
        let details = details(&point, &v);
        let passed = v.passed;
        let reason = v.reason.clone().unwrap_or_default();
        *recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(v.clone());
        if passed {
            Ok((v, JobDone { details, point: Some(point.id), ..JobDone::default() }))
        } else {
            Err(ServiceError::Invalid(format!("the point of {} failed verification: {reason}", point.time)))
        }
    })?;
    // recorded once its job is known, whether it passed or not
    let recorded = recorded.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).map(|mut v| {
        v.job = Some(job.id);
        v
    });
    if let Some(v) = &recorded {
        vault.catalog_put(VERIFICATIONS, &RecordId(v.point.0), Some(v))?;
    }
    Ok((job, recorded.map_or(result, Ok)))
}

/// The job's details: what was proven and how long it took.
fn details(point: &RecoveryPoint, v: &PointVerification) -> Vec<String> {
    let time = point.time.round(jiff::Unit::Second).unwrap_or(point.time);
    let mut out = Vec::new();
    if let Some(b) = &v.boot {
        out.push(match (&b.answered_by, b.seconds_to_answer) {
            (Some(by), Some(s)) => format!(
                "the point of {time} booted: the {by} answered after {s:.1} s ({}, {} CPU, {} MiB)",
                b.accelerator, b.cpus, b.memory_mib
            ),
            _ => format!("the point of {time} did not boot: {}", b.reason.clone().unwrap_or_default()),
        });
        if let Some(p) = &b.probe {
            out.push(format!("probe {}: {}", p.probe, if p.passed { "passed" } else { "failed" }));
        }
        if let (Some(read), Some(disks)) = (v.bytes_read, v.disk_bytes) {
            out.push(format!("read {read} bytes from the vault for disks of {disks} bytes"));
        }
    }
    if let Some(d) = &v.drill {
        out.push(format!(
            "restored {} file(s), {} bytes, in {:.1} s ({:.1} MiB/s){}; {} chunk(s) compared",
            d.files,
            d.bytes,
            d.restore_seconds,
            d.bytes_per_second / f64::from(1 << 20),
            d.sample_percent.map(|p| format!(", a {p}% sample")).unwrap_or_default(),
            d.chunks_compared
        ));
        out.push(format!("a full restore takes about {:.1} s", d.full_restore_seconds));
    }
    out
}

/// Memory reserved from a budget, given back when dropped (also when
/// the verification holding it panics).
struct Reserved<'a> {
    used: &'a Mutex<u64>,
    freed: &'a Condvar,
    mib: u64,
}

impl<'a> Reserved<'a> {
    /// Waits until `mib` fit in `budget` (or nothing else runs).
    fn take(used: &'a Mutex<u64>, freed: &'a Condvar, mib: u64, budget: u64) -> Self {
        let mut u = used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *u > 0 && u.saturating_add(mib) > budget {
            u = freed.wait(u).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *u = u.saturating_add(mib);
        Self { used, freed, mib }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut u = self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *u = u.saturating_sub(self.mib);
        self.freed.notify_all();
    }
}

/// One verification to run with others.
pub struct VerifyTask<'a> {
    pub item: &'a Item,
    pub point: Option<&'a str>,
    pub settings: VerifySettings,
}

/// Runs several verifications at once, as many as fit in `budget_mib` of
/// memory (one always runs, however large); the results in the order
/// given.
pub fn verify_many(
    vault: &Vault,
    env: &JobEnv<'_>,
    tasks: &[VerifyTask<'_>],
    budget_mib: u64,
) -> Vec<Result<(Job, Result<PointVerification>)>> {
    let used = Mutex::new(0u64);
    let freed = Condvar::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = tasks
            .iter()
            .map(|t| {
                let (used, freed) = (&used, &freed);
                s.spawn(move || {
                    let need = memory_mib(&t.settings, t.item);
                    let _held = Reserved::take(used, freed, need, budget_mib);
                    verify_point_job(vault, env, t.item, t.point, &t.settings)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(ServiceError::Invalid("a verification panicked".into()))))
            .collect()
    })
}

/// Keeps `settings` on `item` for the verifications its policy schedules.
///
/// # Errors
/// `Invalid` settings; a store error.
pub fn save_verify_settings(vault: &Vault, item: &Item, settings: &VerifySettings) -> Result<Item> {
    settings.check()?;
    crate::items::update_item(vault, &item.id, |i| i.verify = Some(settings.clone()))
}

/// The items of `vault` whose policy verifies points every N days and
/// whose newest point is due: not verified, and no point of the item
/// verified in the last N days. Each with its saved settings.
///
/// # Errors
/// A store error.
pub fn due_verifications(vault: &Vault, now: Timestamp) -> Result<Vec<(Item, VerifySettings)>> {
    let policies = crate::policies::list_policies(vault)?;
    let done = verifications(vault)?;
    let mut due = Vec::new();
    for item in crate::items::list_items(vault)? {
        if item.protection.state != crate::items::ProtectionState::Protected {
            continue;
        }
        let Some(days) =
            policies.iter().find(|p| Some(p.id) == item.protection.policy).and_then(|p| p.verify_every_days)
        else {
            continue;
        };
        let Some(newest) = vault.list_item_points(&item.id)?.into_iter().max_by_key(|p| p.time) else { continue };
        let since = now - jiff::SignedDuration::from_hours(24 * i64::from(days));
        let recent = done.iter().any(|v| v.item == item.id && (v.point == newest.id || v.verified_at > since));
        if !recent {
            let settings = item.verify.clone().unwrap_or_default();
            due.push((item, settings));
        }
    }
    Ok(due)
}

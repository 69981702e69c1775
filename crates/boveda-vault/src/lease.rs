//! The prune lease: at most one prune works on a vault at a time, whichever
//! machine runs it.
//!
//! Backups only add objects, so any number run beside each other and beside
//! one prune (see docs/FORMAT.md). Two prunes must not: each plans from
//! what it read, and a sweep by one could delete what the other's plan
//! still counts on. The lease is the object `locks/prune`, sealed like any
//! other, naming its holder and when it ends. It is taken create-only (the
//! first prune on a vault) or, once ended, by a replace-only-if-unchanged
//! write (`If-Match` on the version read), so of two machines that find it
//! ended at the same moment exactly one takes it. It is renewed the same
//! way before a prune deletes anything, and released by writing it ended.
//!
//! A prune killed while holding it (`kill -9`, a crash) cannot release it.
//! The lease names the holder's process as the kernel knows it (boot id,
//! PID namespace, PID and the process's start time), so a prune on the
//! same machine and PID namespace sees at once that the holder no longer
//! runs and takes the lease over (the same replace-if-unchanged write, so
//! the dead holder could not renew it even if it woke). A lease held from
//! another machine, or another PID namespace, cannot be checked from here:
//! it is waited for until it ends, and the refusal says which case it is.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use boveda_store::{PutMode, StoreErrorKind};

use crate::error::{Result, VaultError};
use crate::object::{ObjectKind, open_json, seal_json};
use crate::vault::Removal;
use crate::vault::Vault;

/// The lease object's name.
pub const PRUNE_LEASE: &str = "locks/prune";

/// What the lease object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Who holds it: host, process and a random id of this holding.
    pub holder: String,
    pub taken: Timestamp,
    pub until: Timestamp,
    /// The holder's process, to tell a dead holder on this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<HolderProcess>,
}

/// A process as the kernel knows it: unique on one machine while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderProcess {
    /// `/proc/sys/kernel/random/boot_id`: this machine, this boot.
    pub boot_id: String,
    /// The PID namespace (`/proc/self/ns/pid`), where the PID means something.
    pub pid_ns: String,
    pub pid: u32,
    /// Clock ticks after boot the process started (`/proc/PID/stat`), so a
    /// reused PID is not taken for the holder.
    pub start: u64,
}

impl HolderProcess {
    /// This process; `None` where `/proc` does not tell.
    pub fn current() -> Option<Self> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?.trim().to_string();
        let pid_ns = std::fs::read_link("/proc/self/ns/pid").ok()?.to_string_lossy().into_owned();
        let pid = std::process::id();
        Some(Self { boot_id, pid_ns, pid, start: start_ticks(pid)? })
    }

    /// Whether this process can be checked from here (same boot, same PID
    /// namespace), and if so whether it still runs.
    fn liveness(&self) -> Liveness {
        let Some(me) = Self::current() else { return Liveness::Unknown };
        if me.boot_id != self.boot_id || me.pid_ns != self.pid_ns {
            return Liveness::Unknown;
        }
        if start_ticks(self.pid) == Some(self.start) { Liveness::Running } else { Liveness::Gone }
    }
}

enum Liveness {
    Running,
    Gone,
    /// On another machine or in another PID namespace.
    Unknown,
}

/// Field 22 of `/proc/PID/stat` (after the command name, which may hold
/// spaces and parentheses: read after its last `)`).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A lease this process holds.
#[derive(Debug)]
pub struct Lease {
    record: LeaseRecord,
    /// The store's version tag of the lease object as we wrote it.
    etag: Option<String>,
    /// The holder whose lease this one took over because its process no
    /// longer runs, when one did.
    took_over: Option<String>,
}

impl Lease {
    pub fn record(&self) -> &LeaseRecord {
        &self.record
    }

    /// A line for the job when this lease was taken over from a prune
    /// that no longer runs.
    pub fn took_over(&self) -> Option<&str> {
        self.took_over.as_deref()
    }
}

/// The lease is held by someone else.
fn busy(record: &LeaseRecord) -> VaultError {
    let whose = match record.process.as_ref().map(HolderProcess::liveness) {
        Some(Liveness::Running) => "running on this host",
        Some(Liveness::Gone) => "no longer running",
        _ => "on another host or PID namespace: it cannot be checked from here, so it is waited for",
    };
    VaultError::Busy(format!(
        "another prune is running on this vault ({}, {whose}, since {}); its lease ends at {} unless renewed",
        record.holder,
        record.taken.round(jiff::Unit::Second).unwrap_or(record.taken),
        record.until.round(jiff::Unit::Second).unwrap_or(record.until),
    ))
}

impl Vault {
    /// Takes the prune lease for `length`.
    ///
    /// # Errors
    /// `Busy` naming the holder when another prune holds it; a store error.
    pub fn take_prune_lease(&self, holder: &str, now: Timestamp, length: SignedDuration) -> Result<Lease> {
        let record = LeaseRecord {
            holder: holder.to_string(),
            taken: now,
            until: now + length,
            process: HolderProcess::current(),
        };
        let bytes = seal_json(self.key(), ObjectKind::Lease, PRUNE_LEASE, &record)?;
        match self.store().put_new(PRUNE_LEASE, &bytes) {
            Ok(info) => return Ok(Lease { record, etag: info.etag, took_over: None }),
            Err(e) if e.kind() == StoreErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        // It exists: read it with the version it was read at.
        let (current, etag) = self.read_lease()?;
        let mut took_over = None;
        if let Some(held) = &current
            && held.until > now
            && held.holder != holder
        {
            let gone = held.process.as_ref().is_some_and(|p| matches!(p.liveness(), Liveness::Gone));
            if !gone {
                return Err(busy(held));
            }
            took_over = Some(format!(
                "took over the prune lease of {}, which no longer runs on this host (its lease would have ended at {})",
                held.holder,
                held.until.round(jiff::Unit::Second).unwrap_or(held.until)
            ));
        }
        // Ended (or unreadable): take it over, only if nobody did meanwhile.
        let written = match (&etag, self.store().capabilities().conditional_replace) {
            (Some(tag), true) => self.store().put(PRUNE_LEASE, &bytes, PutMode::ReplaceIfMatch(tag.clone())),
            // a store without If-Match: remove the ended lease and create anew
            _ => {
                self.remove(PRUNE_LEASE, Removal::PruneLease)?;
                self.store().put_new(PRUNE_LEASE, &bytes)
            }
        };
        match written {
            Ok(info) => Ok(Lease { record, etag: info.etag, took_over }),
            Err(e) if matches!(e.kind(), StoreErrorKind::ConditionNotMet | StoreErrorKind::AlreadyExists) => {
                match self.read_lease()? {
                    (Some(winner), _) => Err(busy(&winner)),
                    (None, _) => Err(VaultError::Busy("another prune took the lease at the same moment".into())),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Extends a held lease to `until`, only if nobody took it meanwhile
    /// (it had ended and another prune took it over).
    ///
    /// # Errors
    /// `Busy` when the lease was lost; a store error.
    pub fn renew_prune_lease(&self, lease: &mut Lease, until: Timestamp) -> Result<()> {
        let record = LeaseRecord { until, ..lease.record.clone() };
        let bytes = seal_json(self.key(), ObjectKind::Lease, PRUNE_LEASE, &record)?;
        let info = match (&lease.etag, self.store().capabilities().conditional_replace) {
            (Some(tag), true) => match self.store().put(PRUNE_LEASE, &bytes, PutMode::ReplaceIfMatch(tag.clone())) {
                Ok(info) => info,
                Err(e) if e.kind() == StoreErrorKind::ConditionNotMet => {
                    return Err(VaultError::Busy(format!(
                        "the prune lease ended and was taken over (it was held until {}); this prune stops",
                        lease.record.until
                    )));
                }
                Err(e) => return Err(e.into()),
            },
            // without If-Match: check the holder, then rewrite
            _ => {
                match self.read_lease()? {
                    (Some(held), _) if held.holder == record.holder => {}
                    (Some(held), _) => return Err(busy(&held)),
                    (None, _) => {}
                }
                self.remove(PRUNE_LEASE, Removal::PruneLease)?;
                self.store().put_new(PRUNE_LEASE, &bytes)?
            }
        };
        lease.record = record;
        lease.etag = info.etag;
        Ok(())
    }

    /// Ends a held lease at once (writes it ended), unless it was taken over.
    ///
    /// # Errors
    /// A store error.
    pub fn release_prune_lease(&self, mut lease: Lease) -> Result<()> {
        let taken = lease.record.taken;
        match self.renew_prune_lease(&mut lease, taken) {
            Err(VaultError::Busy(_)) => Ok(()), // someone else's now: nothing of ours to release
            other => other,
        }
    }

    /// The lease as stored, with the version tag it was read at; `None`
    /// for a damaged lease (it counts as ended) or none at all.
    fn read_lease(&self) -> Result<(Option<LeaseRecord>, Option<String>)> {
        for _ in 0..8 {
            let before = match self.store().stat(PRUNE_LEASE) {
                Ok(info) => info.etag,
                Err(e) if e.kind() == StoreErrorKind::NotFound => return Ok((None, None)),
                Err(e) => return Err(e.into()),
            };
            let bytes = match self.store().get(PRUNE_LEASE) {
                Ok(b) => b,
                Err(e) if e.kind() == StoreErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            let after = self.store().stat(PRUNE_LEASE).ok().and_then(|i| i.etag);
            if before != after {
                continue; // replaced while we read it
            }
            let record = open_json(self.key(), PRUNE_LEASE, &bytes, ObjectKind::Lease).ok();
            return Ok((record, before));
        }
        Err(VaultError::Busy("the prune lease keeps changing while being read".into()))
    }
}

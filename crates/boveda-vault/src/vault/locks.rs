//! Locks in the store itself: on a vault made with S3 Object Lock, every
//! pack and every point manifest is locked in the bucket (compliance or
//! governance mode) until a date that covers the longest retention its
//! points can have, plus a margin. The store refuses to delete or replace
//! a locked version whoever asks, the bucket's own credentials included
//! (docs/SECURITY.md). The locks boveda set are recorded in the catalog
//! (`object-locks`, batches of names and their date) so that prune knows,
//! without asking the store for each object, which to extend before they
//! lapse and which it must wait for before deleting. Extending a lock is a
//! `PutObjectRetention`: no data is rewritten.

use std::collections::{HashMap, HashSet};

use boveda_store::{LockMode, ObjectLock};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{Result, VaultError};
use crate::ids::{PackId, RecordId};

use super::Vault;

const LOCKS_KIND: &str = "object-locks";

/// A vault's Object Lock: its mode and the margin added to every date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectLockSettings {
    /// `compliance` (nobody can shorten or lift a lock) or `governance`
    /// (a credential with the bypass permission can).
    pub mode: String,
    /// Days added to every lock past the retention it covers, and the
    /// window in which prune extends a lock before it lapses.
    pub margin_days: u32,
}

impl ObjectLockSettings {
    /// # Errors
    /// `Invalid` for a mode other than compliance or governance, or a
    /// margin of 0 or over 365 days.
    pub fn new(mode: &str, margin_days: u32) -> Result<ObjectLockSettings> {
        LockMode::parse(mode)
            .map_err(|_| VaultError::Invalid(format!("object lock is compliance or governance, not {mode:?}")))?;
        if !(1..=365).contains(&margin_days) {
            return Err(VaultError::Invalid(format!("the lock margin is 1 to 365 days, not {margin_days}")));
        }
        Ok(ObjectLockSettings { mode: mode.to_ascii_lowercase(), margin_days })
    }

    pub fn margin(&self) -> SignedDuration {
        SignedDuration::from_hours(24 * i64::from(self.margin_days))
    }

    fn lock_mode(&self) -> LockMode {
        LockMode::parse(&self.mode).unwrap_or(LockMode::Compliance)
    }
}

/// Names locked until one date (a catalog entity).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LockBatch {
    until: Timestamp,
    names: Vec<String>,
}

/// What extending locks did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LockReport {
    /// Locks extended before they lapsed or to cover a longer retention.
    pub extended: usize,
    /// Until when they hold now.
    pub until: Option<Timestamp>,
}

impl Vault {
    /// Whether the store locks every version written for the margin by
    /// itself (an S3 bucket's default retention, which `vault create` set):
    /// then an object boveda never locked is still locked from its write.
    fn locks_on_write(&self) -> bool {
        self.store.location().starts_with("s3://")
    }

    /// The date each object boveda locked holds until, by name.
    ///
    /// # Errors
    /// A store error.
    pub fn recorded_locks(&self) -> Result<HashMap<String, Timestamp>> {
        let mut out: HashMap<String, Timestamp> = HashMap::new();
        for (_, batch) in self.catalog_list::<LockBatch>(LOCKS_KIND)? {
            for name in batch.names {
                let slot = out.entry(name).or_insert(batch.until);
                *slot = (*slot).max(batch.until);
            }
        }
        Ok(out)
    }

    /// What the store locks past `now` among packs and point manifests,
    /// and until when: the locks boveda set (recorded), and the bucket's
    /// default retention from each object's write.
    ///
    /// # Errors
    /// A store error.
    pub fn store_locks(&self, now: Timestamp) -> Result<HashMap<String, Timestamp>> {
        let Some(settings) = self.settings().object_lock.clone() else { return Ok(HashMap::new()) };
        let mut out = self.recorded_locks()?;
        for folder in ["packs", "points"].into_iter().filter(|_| self.locks_on_write()) {
            for o in self.store.list(folder)? {
                if let Some(t) = o.modified.and_then(|m| Timestamp::try_from(m).ok()) {
                    let slot = out.entry(o.name).or_insert(t + settings.margin());
                    *slot = (*slot).max(t + settings.margin());
                }
            }
        }
        out.retain(|_, until| *until > now);
        Ok(out)
    }

    /// Packs locked in the store past `now`, and until when.
    ///
    /// # Errors
    /// A store error.
    pub fn locked_packs(&self, now: Timestamp) -> Result<HashMap<PackId, Timestamp>> {
        Ok(self
            .store_locks(now)?
            .into_iter()
            .filter_map(|(name, until)| crate::pack::parse_pack_name(&name).map(|(_, id)| (id, until)))
            .collect())
    }

    /// Locks `names` in the store until `until` and records it; nothing on
    /// a vault without Object Lock.
    ///
    /// # Errors
    /// A store error (the store refusing a lock: a bucket without Object
    /// Lock, an earlier date in compliance mode).
    pub fn lock_objects(&self, names: &[String], until: Timestamp) -> Result<usize> {
        let Some(settings) = self.settings().object_lock.clone() else { return Ok(0) };
        if names.is_empty() {
            return Ok(0);
        }
        let lock = ObjectLock { mode: settings.lock_mode(), until: std::time::SystemTime::from(until) };
        use rayon::prelude::*;
        names.par_iter().with_max_len(1).try_for_each(|name| -> Result<()> {
            if !self.store.lock_object(name, &lock)? {
                return Err(VaultError::Invalid(format!(
                    "the store of vault {} cannot lock objects (S3 Object Lock)",
                    self.settings().name
                )));
            }
            Ok(())
        })?;
        let batch = LockBatch { until, names: names.to_vec() };
        self.catalog_put(LOCKS_KIND, &RecordId::random(), Some(&batch))?;
        Ok(names.len())
    }

    /// Locks what no lock covers yet among packs and point manifests
    /// (what backups wrote since), until `until`: what a backup calls with
    /// its point's expiry plus the margin.
    ///
    /// # Errors
    /// A store error.
    pub fn lock_new_objects(&self, until: Timestamp) -> Result<usize> {
        if self.settings().object_lock.is_none() {
            return Ok(0);
        }
        let recorded = self.recorded_locks()?;
        let mut fresh = Vec::new();
        for folder in ["packs", "points"] {
            fresh.extend(self.store.list(folder)?.into_iter().map(|o| o.name).filter(|n| !recorded.contains_key(n)));
        }
        self.lock_objects(&fresh, until)
    }

    /// Extends, at `now`, the locks of what the vault still needs: every
    /// pack and manifest `needed` names, to cover the date it is needed
    /// until plus the margin (`None`: no end known), and every other object
    /// (config, key slots, index objects, catalog revisions), a margin
    /// ahead; a lock is extended once it would lapse within half the
    /// margin, or when it does not cover its retention. Packs and manifests
    /// not named (garbage prune deletes) are left to lapse.
    ///
    /// # Errors
    /// A store error.
    pub fn extend_locks(&self, now: Timestamp, needed: &HashMap<String, Option<Timestamp>>) -> Result<LockReport> {
        let Some(settings) = self.settings().object_lock.clone() else { return Ok(LockReport::default()) };
        let margin = settings.margin();
        let recorded = self.recorded_locks()?;
        let mut by_date: HashMap<Timestamp, Vec<String>> = HashMap::new();
        let mut live: HashSet<String> = HashSet::new();
        for o in self.store.list("")? {
            // the prune lease is replaced in place, never locked
            if o.name.starts_with("locks/") {
                continue;
            }
            let data = o.name.starts_with("packs/") || o.name.starts_with("points/");
            let need = match needed.get(&o.name) {
                Some(need) => *need,
                None if data => continue,
                None => None,
            };
            live.insert(o.name.clone());
            let written = o
                .modified
                .filter(|_| self.locks_on_write())
                .and_then(|m| Timestamp::try_from(m).ok())
                .map(|t| t + margin);
            let have = recorded.get(&o.name).copied().max(written).unwrap_or(now);
            let lapsing = have < now + margin / 2;
            let short = need.is_some_and(|t| have < t + margin);
            if !(lapsing || short) {
                continue;
            }
            let want = need.map_or(now + margin, |t| (t + margin).max(now + margin));
            // a day's dates share one batch
            let day = Timestamp::from_second(want.as_second().div_euclid(86_400) * 86_400 + 86_400).unwrap_or(want);
            by_date.entry(day).or_default().push(o.name);
        }
        let mut report = LockReport::default();
        for (until, names) in by_date {
            report.extended += self.lock_objects(&names, until)?;
            report.until = report.until.max(Some(until));
        }
        self.drop_superseded_batches(&live, now)?;
        Ok(report)
    }

    /// Drops batches that lapsed for objects no longer needed, or whose
    /// every name a later batch covers.
    fn drop_superseded_batches(&self, needed: &HashSet<String>, now: Timestamp) -> Result<()> {
        let batches = self.catalog_list::<LockBatch>(LOCKS_KIND)?;
        let newest = self.recorded_locks()?;
        for (id, batch) in batches {
            let useless = batch.names.iter().all(|n| {
                (batch.until <= now && !needed.contains(n)) || newest.get(n).is_some_and(|t| *t > batch.until)
            });
            if useless {
                self.catalog_put::<LockBatch>(LOCKS_KIND, &id, None)?;
            }
        }
        Ok(())
    }
}

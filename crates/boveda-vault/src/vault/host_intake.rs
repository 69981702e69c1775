//! What the server lets a registered host add to the vault: packs and
//! index objects it sealed itself, each named after its bytes, created
//! and never replaced. A host has no other way to write (docs/FLEET.md):
//! everything else (points, catalog records, the config) the server
//! writes under the master key once it has checked what the host claims.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use boveda_store::{PutMode, StoreErrorKind};

use crate::RecordId;
use crate::crypto::SealedBy;
use crate::error::{Result, VaultError};
use crate::index::{IndexObject, IndexPack};
use crate::object::{HEADER_LEN, ObjectKind, Sealing, parse_any_header};
use crate::pack::{pack_name, parse_pack_name};
use crate::vault::Vault;

/// The packs one backup job of a host uploaded: all that an index object
/// it sends may list.
#[derive(Debug, Default)]
pub struct JobPacks {
    /// Granted straight to the store and not yet found there: name, and
    /// the length granted.
    pub direct: HashMap<String, u64>,
    /// Stored and checked, with their lengths: received through the
    /// server, or granted and found stored as granted.
    pub checked: HashMap<String, u64>,
}

/// What became of an object a host sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostObject {
    /// Stored now.
    Added,
    /// Already stored with these very bytes (named after them): a retry.
    AlreadyStored,
}

const INDEX_PREFIX: &str = "index/";

fn refuse(name: &str, why: &str) -> VaultError {
    VaultError::Invalid(format!("object {name} refused: {why}"))
}

impl Vault {
    /// Marks the vault as one registered hosts write to, before the first
    /// host is registered: the config object is rewritten with format
    /// version 3 (compare-and-swap on its version), so that a build older
    /// than the fleet refuses the vault at open. Returns whether it was
    /// marked now (false: it was already).
    ///
    /// # Errors
    /// `Invalid` for a store that cannot replace an object only if it is
    /// unchanged; `Damaged` when the stored config fails authentication; a
    /// store error.
    pub fn mark_hosts_in_use(&self) -> Result<bool> {
        let store = self.store();
        if !store.capabilities().conditional_replace {
            return Err(VaultError::Invalid(format!(
                "{} cannot replace an object only if it is unchanged, which marking the vault for hosts needs",
                store.location()
            )));
        }
        for _ in 0..8 {
            let seen = store.stat("config")?;
            let bytes = store.get("config")?;
            let mut config = super::VaultConfig::parse(&store.location(), &bytes)?;
            if config.mac != config.config.mac(self.key())? {
                return Err(VaultError::damaged("config", "fails authentication"));
            }
            if config.config.hosts {
                return Ok(false);
            }
            config.config.hosts = true;
            let Some(tag) = seen.etag else {
                return Err(VaultError::Invalid(format!("{} gave the config no version", store.location())));
            };
            match store.put("config", &config.config.encode(self.key())?, PutMode::ReplaceIfMatch(tag)) {
                Ok(_) => return Ok(true),
                // changed between the read and the write: read it again
                Err(e) if e.kind() == StoreErrorKind::ConditionNotMet => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(VaultError::Busy("the config kept changing while it was marked for hosts".into()))
    }

    /// Adds an object a host sent for one of its jobs, after checking that
    /// it is a pack or an index object, named after its bytes, sealed by
    /// `host` for the vault, and (an index object) that every pack it
    /// lists is one this job uploaded, sealed by `host`. The write is
    /// create-only: nothing stored is ever replaced.
    ///
    /// A pack the job was granted straight to the store (in
    /// `packs.direct`) may be listed once it is found stored, of the length
    /// granted and listed, its header (read back) sealed by `host` and the
    /// session the index names; it is then `checked`. A pack received here
    /// is `checked` once stored.
    ///
    /// # Errors
    /// `Invalid` naming the object and why it is refused; `Damaged` for an
    /// index object that does not open; a store error.
    pub fn add_host_object(
        &self,
        host: &RecordId,
        name: &str,
        bytes: &[u8],
        packs: &mut JobPacks,
    ) -> Result<HostObject> {
        let hash = blake3::hash(bytes);
        let is_pack = parse_pack_name(name).is_some();
        if let Some((_, id)) = parse_pack_name(name) {
            if id.0 != *hash.as_bytes() {
                return Err(refuse(name, "a pack is named after the hash of its bytes, and these bytes differ"));
            }
            sealed_by_host(host, name, bytes, ObjectKind::Pack)?;
        } else if let Some(rest) = name.strip_prefix(INDEX_PREFIX) {
            if rest != hash.to_hex().as_str() {
                return Err(refuse(
                    name,
                    "an index object is named after the hash of its bytes, and these bytes differ",
                ));
            }
            sealed_by_host(host, name, bytes, ObjectKind::Index)?;
            let index = IndexObject::open(self.key(), name, bytes)?;
            if let Some(p) = index.packs.iter().find(|p| p.sealed_by.is_none_or(|b| b.host != *host)) {
                return Err(refuse(name, &format!("it lists pack {}, which this host did not seal", p.id)));
            }
            let mut to_check = Vec::new();
            for p in &index.packs {
                let pack = pack_name(p.kind, &p.id);
                if packs.checked.contains_key(&pack) {
                    continue;
                }
                let Some(&granted) = packs.direct.get(&pack) else {
                    return Err(refuse(name, &format!("it lists pack {pack}, which this job did not upload")));
                };
                to_check.push((pack, granted, p));
            }
            self.check_direct_packs(name, &to_check)?;
            for (pack, granted, _) in to_check {
                packs.direct.remove(&pack);
                packs.checked.insert(pack, granted);
            }
        } else {
            return Err(refuse(name, "a host may add only packs and index objects"));
        }
        let added = match self.store().put(name, bytes, PutMode::Create) {
            Ok(_) => HostObject::Added,
            // named after its bytes: the object stored is this one
            Err(e) if e.kind() == StoreErrorKind::AlreadyExists => HostObject::AlreadyStored,
            Err(e) => return Err(e.into()),
        };
        if is_pack {
            packs.checked.insert(name.to_string(), bytes.len() as u64);
        }
        Ok(added)
    }
}

impl Vault {
    /// Checks packs a host created straight in the store, as many at once
    /// as the store serves well (two requests each: the round trips, not
    /// the bytes, are what a check costs); the first refusal is returned.
    fn check_direct_packs(&self, index: &str, packs: &[(String, u64, &IndexPack)]) -> Result<()> {
        let workers = self.parallel_requests().clamp(1, 16).min(packs.len());
        if workers <= 1 {
            return packs
                .iter()
                .try_for_each(|(pack, granted, listed)| self.check_direct_pack(index, pack, *granted, listed));
        }
        let next = AtomicUsize::new(0);
        let failed: Mutex<Option<VaultError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    while let Some((pack, granted, listed)) = packs.get(next.fetch_add(1, Ordering::Relaxed)) {
                        if let Err(e) = self.check_direct_pack(index, pack, *granted, listed) {
                            failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(e);
                            next.store(packs.len(), Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        match failed.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Checks a pack a host created straight in the store against what it
    /// was granted and what its index object `index` says of it.
    fn check_direct_pack(&self, index: &str, pack: &str, granted: u64, listed: &IndexPack) -> Result<()> {
        let found = match self.store().stat(pack) {
            Ok(info) => info,
            Err(e) if e.kind() == StoreErrorKind::NotFound => {
                return Err(refuse(index, &format!("it lists pack {pack}, which was never stored")));
            }
            Err(e) => return Err(e.into()),
        };
        if found.size != granted || found.size != listed.size {
            return Err(refuse(
                index,
                &format!(
                    "pack {pack} is {} bytes in the store, where {granted} were granted and the index says {}",
                    found.size, listed.size
                ),
            ));
        }
        let head_len = (HEADER_LEN + SealedBy::LEN) as u64;
        if found.size < head_len {
            return Err(refuse(index, &format!("pack {pack} is too short to be one")));
        }
        let head = self.store().get_range(pack, 0, head_len)?;
        let (envelope, _) =
            parse_any_header(pack, &head, ObjectKind::Pack).map_err(|e| refuse(index, &e.to_string()))?;
        match (envelope.sealing, listed.sealed_by) {
            (Sealing::Host(by), Some(said)) if by == said => Ok(()),
            _ => Err(refuse(index, &format!("pack {pack} is not sealed as the index says"))),
        }
    }
}

fn sealed_by_host(host: &RecordId, name: &str, bytes: &[u8], kind: ObjectKind) -> Result<()> {
    let (envelope, _) = parse_any_header(name, bytes, kind).map_err(|e| refuse(name, &e.to_string()))?;
    match envelope.sealing {
        Sealing::Host(by) if by.host == *host => Ok(()),
        Sealing::Host(_) => Err(refuse(name, "it is sealed by another host")),
        Sealing::Master => Err(refuse(name, "it is sealed with the vault's key, which no host holds")),
    }
}

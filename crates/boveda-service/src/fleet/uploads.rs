//! What a host uploads during a backup job, as the server counts and
//! checks it: packs through the server or straight to the store with a
//! create-only grant, index objects through the server
//! (`Vault::add_host_object`), all against the host's quota of uploads no
//! point references; and, when the job ends, what it left unreferenced,
//! carried against its next jobs until a prune (docs/FLEET.md).

use std::collections::HashSet;
use std::time::Duration;

use boveda_store::StoreErrorKind;
use boveda_vault::{HostObject, JobPacks, RecordId, Vault};

use crate::error::{Remedy, Result, ServiceError, ServiceErrorKind};
use crate::fleet::Host;
use crate::fleet::protocol::{DirectGrant, UploadAsk, UploadWay};

fn refused(message: String) -> ServiceError {
    ServiceError::refused(ServiceErrorKind::PermissionDenied, message, Remedy::AskAdmin)
}

/// The largest object a host may upload (a pack, with room for a large
/// chunk on its own).
pub const MAX_HOST_OBJECT: u64 = 160 << 20;

/// The smallest pack there is: its header and who sealed it.
const MIN_PACK: u64 = 8 + 48;

/// Grants of one job not yet listed by an index object, at most: a host
/// uploads a couple of packs at once, each followed by its index object.
pub const MAX_OPEN_GRANTS: usize = 8;

/// How long a grant lives: a minute, and a second per MiB (a pack of
/// 160 MiB over 1 MiB/s).
pub fn grant_ttl(size: u64) -> Duration {
    Duration::from_secs(60 + size / (1 << 20))
}

/// The longest a grant lives.
pub const GRANT_TTL: Duration = Duration::from_secs(60 + (MAX_HOST_OBJECT >> 20));

/// What a running job has had a host upload: the bytes counted against
/// its quota, and its packs (see [`JobPacks`]).
#[derive(Default)]
pub struct Intake {
    pub uploaded: u64,
    pub packs: JobPacks,
}

/// What a job of a host may upload: the per-job quota, less what its
/// earlier jobs left unreferenced since the last prune.
#[derive(Debug, Clone, Copy)]
pub struct Quota {
    pub bytes: u64,
    pub carried: u64,
}

impl Intake {
    fn count(&mut self, host: &Host, name: &str, len: u64, quota: Quota) -> Result<()> {
        if quota.carried + self.uploaded + len > quota.bytes {
            let carried = if quota.carried > 0 {
                format!(" ({} MiB of it left by earlier jobs since the last prune)", quota.carried >> 20)
            } else {
                String::new()
            };
            return Err(refused(format!(
                "object {name} refused: host {} reached its quota of {} MiB of uploads no point references{carried}",
                host.name,
                quota.bytes >> 20
            )));
        }
        self.uploaded += len;
        Ok(())
    }
}

/// Adds an object `host` sent (see `Vault::add_host_object`), counting it
/// against the job's quota (a pack granted already is counted once).
///
/// # Errors
/// `PermissionDenied` naming the object and why; a store error.
pub fn add_object(
    vault: &Vault,
    host: &Host,
    name: &str,
    bytes: &[u8],
    intake: &mut Intake,
    quota: Quota,
) -> Result<HostObject> {
    let counted = !intake.packs.direct.contains_key(name) && !intake.packs.checked.contains_key(name);
    let len = if counted { bytes.len() as u64 } else { 0 };
    intake.count(host, name, len, quota)?;
    match vault.add_host_object(&host.id, name, bytes, &mut intake.packs) {
        Ok(added) => {
            // sent through the server after all: no grant waits for it
            intake.packs.direct.remove(name);
            Ok(added)
        }
        Err(e) => {
            intake.uploaded -= len;
            match e {
                boveda_vault::VaultError::Store(e) => Err(ServiceError::Vault(boveda_vault::VaultError::Store(e))),
                e => Err(refused(e.to_string())),
            }
        }
    }
}

/// How `host` is to upload pack `name` of `size` bytes: with a
/// create-only grant straight to the store where the store can sign one,
/// else through the server. The length is counted against the quota now
/// (once per name: asking again, after a lost answer, gives a new grant).
///
/// # Errors
/// `PermissionDenied` for a name that is not a pack's (as `pack_name`
/// makes them), a size out of bounds, a pack stored already that this job
/// did not upload, too many grants not used yet, past the quota; a store
/// error.
pub fn upload_way(vault: &Vault, host: &Host, ask: &UploadAsk, intake: &mut Intake, quota: Quota) -> Result<UploadWay> {
    if boveda_vault::parse_pack_name(&ask.name).is_none() {
        return Err(refused(format!(
            "object {} refused: only packs go straight to the store (index objects go through the server)",
            ask.name
        )));
    }
    if !(MIN_PACK..=MAX_HOST_OBJECT).contains(&ask.size) {
        return Err(refused(format!("pack {} refused: {} bytes is not the size of a pack", ask.name, ask.size)));
    }
    if intake.packs.checked.contains_key(&ask.name) {
        return Ok(UploadWay { grant: None, stored: true });
    }
    let again = intake.packs.direct.get(&ask.name).copied();
    if again.is_some_and(|granted| granted != ask.size) {
        return Err(refused(format!("pack {} refused: it was granted with another length", ask.name)));
    }
    if again.is_none() {
        match vault.store().stat(&ask.name) {
            Ok(_) => {
                return Err(refused(format!(
                    "pack {} refused: it is stored already, and this job did not upload it",
                    ask.name
                )));
            }
            Err(e) if e.kind() == StoreErrorKind::NotFound => {}
            Err(e) => return Err(ServiceError::Vault(e.into())),
        }
        if intake.packs.direct.len() >= MAX_OPEN_GRANTS {
            return Err(refused(format!(
                "pack {} refused: {MAX_OPEN_GRANTS} packs granted to this job are not listed by an index object yet",
                ask.name
            )));
        }
    }
    let ttl = grant_ttl(ask.size);
    let Some(grant) =
        vault.store().grant_create(&ask.name, ask.size, ttl).map_err(|e| ServiceError::Vault(e.into()))?
    else {
        return Ok(UploadWay::default());
    };
    if again.is_none() {
        intake.count(host, &ask.name, ask.size, quota)?;
        intake.packs.direct.insert(ask.name.clone(), ask.size);
    }
    Ok(UploadWay { grant: Some(DirectGrant { url: grant.url, headers: grant.headers }), stored: false })
}

/// What a job that ended leaves unreferenced: its packs the point does
/// not reach (all of them, for a job without a point), at their stored
/// length, and what was granted and never listed, at the length found in
/// the store (a store that does not sign lengths may hold more than was
/// granted).
pub fn left_unreferenced(vault: &Vault, intake: &Intake, reached: Option<&HashSet<String>>) -> u64 {
    let unreached: u64 = intake
        .packs
        .checked
        .iter()
        .filter(|(name, _)| reached.is_none_or(|r| !r.contains(*name)))
        .map(|(_, len)| len)
        .sum();
    let granted: u64 = intake
        .packs
        .direct
        .iter()
        .map(|(name, len)| match vault.store().stat(name) {
            Ok(found) => found.size,
            Err(e) if e.kind() == StoreErrorKind::NotFound => 0,
            // unknown: what was granted
            Err(_) => *len,
        })
        .sum();
    unreached + granted
}

/// Carries what a job of `host` left unreferenced against its next jobs.
pub(crate) fn carry(vault: &Vault, host: &RecordId, intake: &Intake, reached: Option<&HashSet<String>>) {
    let left = left_unreferenced(vault, intake, reached);
    if left > 0 {
        let _ = crate::fleet::add_unreferenced(vault, host, left);
    }
}

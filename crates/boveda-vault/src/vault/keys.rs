//! Key slots: the passphrases that open the vault.

use crate::RecordId;
use crate::crypto::KdfParams;
use crate::error::{Result, VaultError};
use crate::key_slot::{KeySlot, KeySlotInfo};

use super::{Removal, Vault};

impl Vault {
    /// Adds a key slot for another passphrase.
    ///
    /// # Errors
    /// A store error.
    pub fn add_key(&self, passphrase: &[u8], label: &str, kdf: KdfParams, hostname: &str) -> Result<RecordId> {
        let slot = KeySlot::create(&self.key, passphrase, kdf, label, hostname)?;
        self.store.put_new(&KeySlot::name(&slot.id), &slot.to_bytes()?)?;
        Ok(slot.id)
    }

    /// Lists key slots.
    ///
    /// # Errors
    /// A store error or a damaged slot.
    pub fn list_keys(&self) -> Result<Vec<KeySlotInfo>> {
        let mut out = Vec::new();
        for info in self.store.list("keys")? {
            let read = self.store.get(&info.name).map_err(VaultError::from);
            let Some(slot) = self.skip_damaged(read.and_then(|b| KeySlot::from_bytes(&info.name, &b))).transpose()?
            else {
                continue;
            };
            out.push(KeySlotInfo {
                id: slot.id,
                created: slot.created,
                hostname: slot.hostname,
                label: slot.label,
                current: slot.id == self.slot,
            });
        }
        out.sort_by_key(|k| k.created);
        Ok(out)
    }

    /// Removes a key slot, by `by` at `now`; never the last one, nor the
    /// one in use; on a vault bound to a guard, only with its approval.
    ///
    /// # Errors
    /// `NotFound` or `Invalid` with the reason; `NeedsApproval`.
    pub fn remove_key(
        &self,
        id_prefix: &str,
        by: &str,
        now: jiff::Timestamp,
    ) -> Result<(RecordId, super::GuardOutcome)> {
        let keys = self.list_keys()?;
        let matches: Vec<_> = keys.iter().filter(|k| k.id.to_hex().starts_with(id_prefix)).collect();
        let slot = match matches.as_slice() {
            [one] => *one,
            [] => return Err(VaultError::NotFound(format!("key slot {id_prefix}"))),
            _ => {
                return Err(VaultError::Invalid(format!("key slot prefix {id_prefix} is ambiguous")));
            }
        };
        if keys.len() == 1 {
            return Err(VaultError::Invalid("cannot remove the vault's last key slot".into()));
        }
        if slot.current {
            return Err(VaultError::Invalid(
                "cannot remove the key slot this passphrase opened; open the vault with another passphrase to remove it".into(),
            ));
        }
        let op =
            super::GuardedOp::new("remove a key slot", format!("vault {}", self.settings().name), slot.id.to_hex());
        let outcome = self.guard_authorize(&op, by, now)?;
        self.remove(&KeySlot::name(&slot.id), Removal::KeySlot)?;
        Ok((slot.id, outcome))
    }

    /// The keys of registered host `host`: what the server gives it when
    /// it registers (see `crate::host_keys`).
    pub fn host_keys(&self, host: crate::RecordId) -> crate::HostKeys {
        self.key.host_keys(self.config.id, self.config.chunker, host)
    }
}

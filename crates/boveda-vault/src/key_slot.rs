//! Key slots: `keys/<slot id>`, each wrapping the master key under a key
//! derived from one passphrase with Argon2id. Several may exist; any one
//! opens the vault. Slots are stored in the clear (header + JSON): they are
//! the minimum needed to open a vault, and hold nothing but ciphertext and
//! KDF parameters.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::RecordId;
use crate::crypto::{KdfParams, MasterKey, SEAL_OVERHEAD, Sealer};
use crate::error::{Result, VaultError};
use crate::ids::random_bytes;
use crate::object::{ObjectKind, header, parse_header};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeySlot {
    pub id: RecordId,
    pub created: Timestamp,
    pub hostname: String,
    pub label: String,
    pub kdf: KdfParams,
    salt: String,
    wrapped: String,
    /// A tag over all the above under the master key (see
    /// [`MasterKey::key_slot_mac`]); absent in slots made before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mac: Option<String>,
}

/// What `vault key list` shows.
#[derive(Debug, Clone, Serialize)]
pub struct KeySlotInfo {
    pub id: RecordId,
    pub created: Timestamp,
    pub hostname: String,
    pub label: String,
    pub current: bool,
}

const SALT_LEN: usize = 16;

fn aad(id: &RecordId) -> Vec<u8> {
    let mut a = header(ObjectKind::KeySlot).to_vec();
    a.extend_from_slice(&id.0);
    a
}

impl KeySlot {
    pub fn name(id: &RecordId) -> String {
        format!("keys/{}", id.to_hex())
    }

    /// Wraps `master` under `passphrase`.
    ///
    /// # Errors
    /// When the KDF parameters are invalid.
    pub fn create(master: &MasterKey, passphrase: &[u8], kdf: KdfParams, label: &str, hostname: &str) -> Result<Self> {
        let id = RecordId::random();
        let salt: [u8; SALT_LEN] = random_bytes();
        let kek = kdf.derive(passphrase, &salt).map_err(VaultError::Invalid)?;
        let wrapped = Sealer::new(&kek).seal(&aad(&id), master.as_bytes());
        let mut slot = Self {
            id,
            created: Timestamp::now(),
            hostname: hostname.to_string(),
            label: label.to_string(),
            kdf,
            salt: hex::encode(salt),
            wrapped: hex::encode(wrapped),
            mac: None,
        };
        slot.mac = Some(hex::encode(master.key_slot_mac(&slot.authenticated_bytes()?)));
        Ok(slot)
    }

    /// What the tag covers: the slot without its tag, as JSON.
    fn authenticated_bytes(&self) -> Result<Vec<u8>> {
        let bare = Self { mac: None, ..self.clone() };
        serde_json::to_vec(&bare).map_err(|e| VaultError::Invalid(e.to_string()))
    }

    /// Whether the slot is as it was made, judged with the master key (any
    /// passphrase's): `Ok(true)` intact, `Ok(false)` made before slots were
    /// authenticated.
    ///
    /// # Errors
    /// `Damaged` naming the slot when its content or tag was altered.
    pub fn verify(&self, master: &MasterKey) -> Result<bool> {
        let name = Self::name(&self.id);
        let Some(tag) = &self.mac else { return Ok(false) };
        let expected = hex::encode(master.key_slot_mac(&self.authenticated_bytes()?));
        if &expected != tag {
            return Err(VaultError::damaged(
                &name,
                "was altered (its salt, key derivation or wrapped key no longer match its authentication tag)",
            ));
        }
        Ok(true)
    }

    /// Returns the master key when `passphrase` is this slot's, else `None`.
    ///
    /// # Errors
    /// `Damaged` when the slot itself does not parse.
    pub fn unlock(&self, passphrase: &[u8]) -> Result<Option<MasterKey>> {
        let name = Self::name(&self.id);
        let salt = hex::decode(&self.salt).map_err(|e| VaultError::damaged(&name, e))?;
        let wrapped = hex::decode(&self.wrapped).map_err(|e| VaultError::damaged(&name, e))?;
        let kek = self.kdf.derive(passphrase, &salt).map_err(|e| VaultError::damaged(&name, e))?;
        let Ok(raw) = Sealer::new(&kek).open(&aad(&self.id), &wrapped) else {
            return Ok(None);
        };
        let raw: [u8; MasterKey::LEN] =
            raw.try_into().map_err(|_| VaultError::damaged(&name, "wrapped key has the wrong length"))?;
        Ok(Some(MasterKey::from_bytes(raw)))
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = header(ObjectKind::KeySlot).to_vec();
        serde_json::to_writer(&mut out, self).map_err(|e| VaultError::Invalid(e.to_string()))?;
        Ok(out)
    }

    /// Parses a key slot read from `name`, refusing one whose id is not its
    /// name's (a copy of another slot) or whose numbers are out of bounds.
    ///
    /// # Errors
    /// `Damaged`, naming the slot and what is wrong.
    pub fn from_bytes(name: &str, bytes: &[u8]) -> Result<Self> {
        let body = parse_header(name, bytes, ObjectKind::KeySlot)?;
        let slot: KeySlot = serde_json::from_slice(body).map_err(|e| VaultError::damaged(name, e))?;
        if Self::name(&slot.id) != name {
            return Err(VaultError::damaged(name, format!("holds key slot {} (a copy of another slot)", slot.id)));
        }
        slot.kdf.check_bounds().map_err(|e| VaultError::damaged(name, format!("key derivation {e}")))?;
        let hex_len = |s: &str| if s.bytes().all(|b| b.is_ascii_hexdigit()) { s.len() / 2 } else { 0 };
        if hex_len(&slot.salt) != SALT_LEN || hex_len(&slot.wrapped) != MasterKey::LEN + SEAL_OVERHEAD {
            return Err(VaultError::damaged(name, "salt or wrapped key has the wrong length"));
        }
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_unlocks_only_with_its_passphrase() {
        let master = MasterKey::generate();
        let slot = KeySlot::create(&master, b"right", KdfParams::TESTING, "main", "host").expect("slot");
        let bytes = slot.to_bytes().expect("bytes");
        let back = KeySlot::from_bytes(&KeySlot::name(&slot.id), &bytes).expect("parse");
        assert!(
            KeySlot::from_bytes("keys/00000000000000000000000000000000", &bytes).is_err(),
            "a copy under another name"
        );
        let key = back.unlock(b"right").expect("unlock").expect("opens");
        assert_eq!(key.as_bytes(), master.as_bytes());
        assert!(back.unlock(b"wrong").expect("unlock").is_none());
        assert!(back.verify(&master).expect("intact"));
    }

    #[test]
    fn an_altered_salt_is_named_by_the_master_key() {
        let master = MasterKey::generate();
        let slot = KeySlot::create(&master, b"right", KdfParams::TESTING, "main", "host").expect("slot");
        let altered = KeySlot { salt: "00".repeat(SALT_LEN), ..slot };
        let e = altered.verify(&master).expect_err("altered");
        assert!(e.to_string().contains("was altered"), "{e}");
    }
}

//! What a registered host holds instead of the vault's keys: enough to
//! write backups the vault can read, and nothing that reads them back.
//!
//! - **The vault key pair.** The master key derives an X25519 key pair;
//!   hosts hold only its public half. For each backup session a host makes
//!   an ephemeral key pair, and the X25519 secret it shares with the vault's
//!   public key derives the session key (XChaCha20-Poly1305, as every
//!   sealed object). The ephemeral secret is dropped with the session: the
//!   host cannot open what it sealed, and no other host can either. The
//!   vault derives the same session key from the ephemeral public key,
//!   which every object sealed for the vault carries ([`SealedBy`]).
//! - **Chunk ids.** A host names its chunks with a keyed BLAKE3 under a
//!   chunk key of its own, derived from the master key and the host's id,
//!   and cuts them with a chunker seed of its own: a host deduplicates its
//!   own data, learns nothing of another host's (it cannot test whether a
//!   given file is stored), and its compromise reveals no other host's
//!   chunk boundaries. The chunk key is what authenticates a host's blobs:
//!   whoever holds only the public key (the store's own keys) can seal
//!   objects for the vault, but cannot make a blob that passes its id.
//!
//! The derivations are in docs/FLEET.md.

use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::chunker::{Chunker, ChunkerParams};
pub use crate::crypto::SealedBy;
use crate::crypto::{MasterKey, Sealer};
use crate::error::{Result, VaultError};
use crate::ids::random_bytes;
use crate::{ChunkId, RecordId};

/// A registered host's keys (see the module's notes). Kept on the host,
/// readable by root only.
#[derive(Clone, Serialize, Deserialize)]
pub struct HostKeys {
    pub host: RecordId,
    pub vault_id: RecordId,
    #[serde(with = "hex32")]
    pub vault_public: [u8; 32],
    #[serde(with = "hex32")]
    chunk_key: [u8; 32],
    chunker_seed: u64,
    /// The vault's chunk size bounds.
    pub chunker: ChunkerParams,
}

impl std::fmt::Debug for HostKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKeys").field("host", &self.host).field("vault_id", &self.vault_id).finish_non_exhaustive()
    }
}

impl HostKeys {
    /// The keyed hash that names one of this host's chunks.
    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.chunk_key, plaintext).as_bytes())
    }

    /// The secret seed of this host's content-defined chunker.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// A chunker that cuts as this host does.
    pub fn chunker(&self) -> Chunker {
        Chunker::new(self.chunker, self.chunker_seed)
    }

    /// A new backup session: a fresh ephemeral key pair, and the key that
    /// seals for the vault under it.
    ///
    /// # Errors
    /// `Invalid` when the vault's public key is not a usable X25519 key
    /// (the shared secret would be all zeros).
    pub fn new_session(&self) -> Result<HostSession> {
        let secret = StaticSecret::from(random_bytes::<32>());
        let ephemeral = PublicKey::from(&secret).to_bytes();
        let shared = secret.diffie_hellman(&PublicKey::from(self.vault_public));
        if !shared.was_contributory() {
            return Err(VaultError::Invalid("the vault's public key is not a usable X25519 key".into()));
        }
        let by = SealedBy { host: self.host, ephemeral };
        let key = session_key(shared.as_bytes(), &by, &self.vault_public);
        Ok(HostSession { by, sealer: Sealer::new(&key) })
    }
}

/// One backup session of a host: what it seals for the vault.
#[derive(Clone)]
pub struct HostSession {
    by: SealedBy,
    sealer: Sealer,
}

impl HostSession {
    pub fn sealed_by(&self) -> SealedBy {
        self.by
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }
}

fn session_key(shared: &[u8; 32], by: &SealedBy, vault_public: &[u8; 32]) -> [u8; 32] {
    let mut material = Vec::with_capacity(32 + SealedBy::LEN + 32);
    material.extend_from_slice(shared);
    material.extend_from_slice(&by.to_bytes());
    material.extend_from_slice(vault_public);
    blake3::derive_key("boveda 2026 host session key", &material)
}

impl MasterKey {
    fn vault_secret(&self) -> StaticSecret {
        StaticSecret::from(blake3::derive_key("boveda 2026 vault key pair", self.as_bytes()))
    }

    /// The public half of the vault key pair: what hosts seal for.
    pub fn vault_public(&self) -> [u8; 32] {
        PublicKey::from(&self.vault_secret()).to_bytes()
    }

    fn host_secret(&self, context: &str, host: &RecordId) -> [u8; 32] {
        let key = blake3::derive_key(context, self.as_bytes());
        *blake3::keyed_hash(&key, &host.0).as_bytes()
    }

    /// A host's keys, given to it when it registers (`vault_id` and
    /// `chunker` are the vault's).
    pub fn host_keys(&self, vault_id: RecordId, chunker: ChunkerParams, host: RecordId) -> HostKeys {
        let seed = self.host_secret("boveda 2026 host chunker seed", &host);
        let mut seed8 = [0u8; 8];
        seed8.copy_from_slice(&seed[..8]);
        HostKeys {
            host,
            vault_id,
            vault_public: self.vault_public(),
            chunk_key: self.host_chunk_key(&host),
            chunker_seed: u64::from_le_bytes(seed8),
            chunker,
        }
    }

    /// The key a host's chunk ids are keyed with.
    pub(crate) fn host_chunk_key(&self, host: &RecordId) -> [u8; 32] {
        self.host_secret("boveda 2026 host chunk ids", host)
    }

    /// The id a host's chunk of `plaintext` has: what a blob the host wrote
    /// is checked against.
    pub fn host_chunk_id(&self, host: &RecordId, plaintext: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.host_chunk_key(host), plaintext).as_bytes())
    }

    /// The session key of what a host sealed for the vault.
    ///
    /// # Errors
    /// `Damaged`-worthy input: `Invalid` for an ephemeral key that gives no
    /// shared secret (a low-order point, never made by a host).
    pub fn session_sealer(&self, by: &SealedBy) -> Result<Sealer> {
        let shared = self.vault_secret().diffie_hellman(&PublicKey::from(by.ephemeral));
        if !shared.was_contributory() {
            return Err(VaultError::Invalid("an ephemeral key that gives no shared secret".into()));
        }
        Ok(Sealer::new(&session_key(shared.as_bytes(), by, &self.vault_public())))
    }
}

/// 32 bytes as 64 hex digits in JSON.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let bytes = hex::decode(&text).map_err(serde::de::Error::custom)?;
        bytes.try_into().map_err(|_| serde::de::Error::custom("expected 32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_host_seals_opens_with_the_master_key_and_not_with_what_hosts_hold() {
        let master = MasterKey::generate();
        let vault = RecordId::random();
        let host = master.host_keys(vault, ChunkerParams::DEFAULT, RecordId::random());
        let session = host.new_session().expect("session");
        let sealed = session.sealer().seal(b"aad", b"a host's data");
        let opened = master.session_sealer(&session.sealed_by()).expect("derive").open(b"aad", &sealed);
        assert_eq!(opened.expect("the vault opens it"), b"a host's data");
        // another session of the same host, or another host, has another key
        let other = host.new_session().expect("session");
        assert!(other.sealer().open(b"aad", &sealed).is_err());
        // the vault's own sealer and another vault's master key do not open it
        assert!(master.sealer().open(b"aad", &sealed).is_err());
        let stranger = MasterKey::generate();
        assert!(stranger.session_sealer(&session.sealed_by()).expect("derive").open(b"aad", &sealed).is_err());
        // a claimed other host changes the session key
        let mut by = session.sealed_by();
        by.host = RecordId::random();
        assert!(master.session_sealer(&by).expect("derive").open(b"aad", &sealed).is_err());
        // a low-order ephemeral key is refused, not used
        let zero = SealedBy { host: by.host, ephemeral: [0u8; 32] };
        assert!(master.session_sealer(&zero).is_err());
    }

    #[test]
    fn hosts_name_chunks_apart_and_the_vault_checks_each_hosts_ids() {
        let master = MasterKey::generate();
        let vault = RecordId::random();
        let (a, b) = (
            master.host_keys(vault, ChunkerParams::DEFAULT, RecordId::random()),
            master.host_keys(vault, ChunkerParams::DEFAULT, RecordId::random()),
        );
        let data = b"the same file on two hosts";
        assert_ne!(a.chunk_id(data), b.chunk_id(data));
        assert_ne!(a.chunk_id(data), master.chunk_id(data));
        assert_eq!(master.host_chunk_id(&a.host, data), a.chunk_id(data));
        assert_ne!(a.chunker_seed(), b.chunker_seed());
        assert_ne!(a.chunker_seed(), master.chunker_seed());
        // what a host keeps round-trips, and names no secret when printed
        let json = serde_json::to_string(&a).expect("json");
        let back: HostKeys = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.chunk_id(data), a.chunk_id(data));
        assert!(!format!("{a:?}").contains(&hex::encode(a.chunk_key)));
    }
}

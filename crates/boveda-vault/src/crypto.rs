//! Keys and authenticated encryption.
//!
//! One random master key per vault holds three secrets: the AEAD key that
//! seals every blob and object, the key of the keyed BLAKE3 hash that names
//! chunks, and the seed of the chunker's gear table, so that chunk boundaries
//! reveal nothing of content either. The master key never leaves the vault
//! unencrypted: key slots wrap it under keys derived from passphrases.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::ChunkId;
use crate::RecordId;
use crate::ids::random_bytes;

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

#[derive(Debug, thiserror::Error)]
#[error("authentication failed (wrong key, or the data was altered)")]
pub struct AuthError;

/// XChaCha20-Poly1305 with a fresh random 192-bit nonce per message: random
/// nonces of that size never collide in practice, whatever the vault's size.
#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Self {
        Self { cipher: XChaCha20Poly1305::new(&Key::from(*key)) }
    }

    /// Seals `plaintext` into `nonce || ciphertext || tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(aad, plaintext, &mut out);
        out
    }

    /// Appends the sealed form of `plaintext` to `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let nonce_bytes: [u8; NONCE_LEN] = random_bytes();
        let nonce = XNonce::from(nonce_bytes);
        out.extend_from_slice(&nonce_bytes);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_inout_detached(&nonce, aad, (&mut out[start..]).into())
            .unwrap_or_else(|_| unreachable_len());
        out.extend_from_slice(&tag);
    }

    /// Seals in place: `buf` holds `NONCE_LEN` bytes of room, then the
    /// plaintext; the nonce is filled in and the tag appended.
    pub fn seal_in_place(&self, aad: &[u8], buf: &mut Vec<u8>) {
        let nonce_bytes: [u8; NONCE_LEN] = random_bytes();
        buf[..NONCE_LEN].copy_from_slice(&nonce_bytes);
        let tag = self
            .cipher
            .encrypt_inout_detached(&XNonce::from(nonce_bytes), aad, (&mut buf[NONCE_LEN..]).into())
            .unwrap_or_else(|_| unreachable_len());
        buf.extend_from_slice(&tag);
    }

    /// Opens what [`Sealer::seal`] made.
    ///
    /// # Errors
    /// [`AuthError`] when the key is wrong or a single bit changed.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        let mut buf = sealed.to_vec();
        let len = self.open_in_place(aad, &mut buf)?.len();
        buf.drain(..NONCE_LEN);
        buf.truncate(len);
        Ok(buf)
    }

    /// Opens what [`Sealer::seal`] made where it lies, returning the
    /// plaintext's part of `sealed` (what it held is overwritten, also when
    /// opening fails).
    ///
    /// # Errors
    /// [`AuthError`] when the key is wrong or a single bit changed.
    pub fn open_in_place<'a>(&self, aad: &[u8], sealed: &'a mut [u8]) -> Result<&'a mut [u8], AuthError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(AuthError);
        }
        let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
        let (ct, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let nonce = XNonce::try_from(&*nonce).map_err(|_| AuthError)?;
        let tag = chacha20poly1305::aead::Tag::<XChaCha20Poly1305>::try_from(&*tag).map_err(|_| AuthError)?;
        self.cipher.decrypt_inout_detached(&nonce, aad, (&mut *ct).into(), &tag).map_err(|_| AuthError)?;
        Ok(ct)
    }
}

// The AEAD only refuses messages longer than 256 GiB; blobs are at most a
// pack's size, so this cannot be reached.
fn unreachable_len() -> chacha20poly1305::aead::Tag<XChaCha20Poly1305> {
    unreachable!("message longer than the AEAD's limit")
}

/// AES-256-GCM with a fresh random 96-bit nonce per message, for keys
/// that seal a bounded number of messages: offline seeding's drive keys
/// (a drive of 16 TiB sealed in 1 MiB messages is 2^24 of them, far below
/// the 2^32 that random 96-bit nonces allow a key). With AES-NI it seals at
/// twice [`Sealer`]'s speed here (2.2 GB/s against 1.2 GB/s per core).
/// A sealed message is `nonce (12 bytes) || ciphertext || tag (16 bytes)`.
#[derive(Clone)]
pub struct DriveSealer {
    cipher: aes_gcm::Aes256Gcm,
}

impl DriveSealer {
    pub const NONCE_LEN: usize = 12;
    /// Bytes a sealed message adds to its plaintext.
    pub const OVERHEAD: usize = Self::NONCE_LEN + TAG_LEN;

    pub fn new(key: &[u8; 32]) -> Self {
        Self { cipher: aes_gcm::Aes256Gcm::new(&(*key).into()) }
    }

    /// Seals in place: `buf` is [`Self::NONCE_LEN`] bytes of room, the
    /// plaintext, and [`TAG_LEN`] bytes of room; the nonce and the tag are
    /// filled in.
    ///
    /// # Errors
    /// [`AuthError`] when `buf` is shorter than the overhead, or the
    /// message longer than the cipher's limit of 64 GiB.
    pub fn seal_in_place(&self, aad: &[u8], buf: &mut [u8]) -> Result<(), AuthError> {
        if buf.len() < Self::OVERHEAD {
            return Err(AuthError);
        }
        let nonce: [u8; Self::NONCE_LEN] = random_bytes();
        let (head, rest) = buf.split_at_mut(Self::NONCE_LEN);
        let (body, tag_room) = rest.split_at_mut(rest.len() - TAG_LEN);
        head.copy_from_slice(&nonce);
        let tag = self.cipher.encrypt_inout_detached(&nonce.into(), aad, body.into()).map_err(|_| AuthError)?;
        tag_room.copy_from_slice(&tag);
        Ok(())
    }

    /// Opens, in place, what [`DriveSealer::seal_in_place`] made, and
    /// returns the plaintext (the middle of `sealed`).
    ///
    /// # Errors
    /// [`AuthError`] when the key is wrong or a single bit changed.
    pub fn open_in_place<'a>(&self, aad: &[u8], sealed: &'a mut [u8]) -> Result<&'a [u8], AuthError> {
        if sealed.len() < Self::OVERHEAD {
            return Err(AuthError);
        }
        let (nonce, rest) = sealed.split_at_mut(Self::NONCE_LEN);
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let nonce = aes_gcm::aead::Nonce::<aes_gcm::Aes256Gcm>::try_from(&*nonce).map_err(|_| AuthError)?;
        let tag = aes_gcm::aead::Tag::<aes_gcm::Aes256Gcm>::try_from(&*tag).map_err(|_| AuthError)?;
        self.cipher.decrypt_inout_detached(&nonce, aad, (&mut *body).into(), &tag).map_err(|_| AuthError)?;
        Ok(body)
    }
}

/// Who sealed an object for the vault: the host, and its session's
/// ephemeral public key. Carried in the clear by every such object (and
/// bound into its authentication).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SealedBy {
    pub host: RecordId,
    pub ephemeral: [u8; 32],
}

impl SealedBy {
    pub const LEN: usize = 16 + 32;

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..16].copy_from_slice(&self.host.0);
        out[16..].copy_from_slice(&self.ephemeral);
        out
    }

    /// The first [`SealedBy::LEN`] bytes of `bytes`, if there are as many.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let host = RecordId(bytes.get(..16)?.try_into().ok()?);
        let ephemeral = bytes.get(16..Self::LEN)?.try_into().ok()?;
        Some(SealedBy { host, ephemeral })
    }
}

/// What opens and checks a blob: the key it is sealed under, and the key
/// its id is a keyed hash under (the vault's, or the writing host's).
pub struct BlobKey {
    pub(crate) sealer: Sealer,
    pub(crate) id_key: [u8; 32],
}

impl BlobKey {
    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }
}

/// A vault's master key.
#[derive(Clone)]
pub struct MasterKey {
    raw: [u8; 64],
    sealer: Sealer,
    id_key: [u8; 32],
    chunker_seed: u64,
    own: Arc<BlobKey>,
    /// The blob keys of the host sessions met so far (an X25519 agreement
    /// each, made once).
    sessions: Arc<Mutex<HashMap<SealedBy, Arc<BlobKey>>>>,
}

impl MasterKey {
    pub const LEN: usize = 64;

    pub fn generate() -> Self {
        Self::from_bytes(random_bytes())
    }

    pub fn from_bytes(raw: [u8; 64]) -> Self {
        let mut enc = [0u8; 32];
        let mut id_key = [0u8; 32];
        enc.copy_from_slice(&raw[..32]);
        id_key.copy_from_slice(&raw[32..]);
        let seed_bytes = blake3::derive_key("boveda 2026 chunker gear seed", &id_key);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&seed_bytes[..8]);
        let own = Arc::new(BlobKey { sealer: Sealer::new(&enc), id_key });
        Self {
            raw,
            sealer: Sealer::new(&enc),
            id_key,
            chunker_seed: u64::from_le_bytes(seed),
            own,
            sessions: Arc::default(),
        }
    }

    /// The key that opens and checks a blob of a pack the vault sealed
    /// (`None`), or a host session sealed.
    ///
    /// # Errors
    /// `Invalid` for a session whose ephemeral key gives no shared secret.
    pub fn blob_key(&self, sealed_by: Option<&SealedBy>) -> crate::error::Result<Arc<BlobKey>> {
        let Some(by) = sealed_by else { return Ok(self.own.clone()) };
        if let Some(key) = self.sessions.lock().ok().and_then(|s| s.get(by).cloned()) {
            return Ok(key);
        }
        let key = Arc::new(BlobKey { sealer: self.session_sealer(by)?, id_key: self.host_chunk_key(&by.host) });
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(*by, key.clone());
        }
        Ok(key)
    }

    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.raw
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// The keyed hash that names a chunk.
    pub fn chunk_id(&self, plaintext: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.id_key, plaintext).as_bytes())
    }

    /// Authenticates the clear-text config with a key derived from the
    /// master key: whoever cannot open the vault cannot change its chunker
    /// sizes or id unnoticed.
    pub fn config_mac(&self, config_bytes: &[u8]) -> [u8; 32] {
        let mac_key = blake3::derive_key("boveda 2026 config authentication", &self.raw);
        *blake3::keyed_hash(&mac_key, config_bytes).as_bytes()
    }

    /// The key that authenticates local caches derived from the vault (the
    /// merged index): a cache file altered or damaged on disk is detected.
    /// Authenticates a key slot's content (everything but this tag), so a
    /// slot altered in the store (its salt, its KDF numbers, its wrapped
    /// key) is named by `vault check`, which any good passphrase opens.
    pub fn key_slot_mac(&self, slot_bytes: &[u8]) -> [u8; 32] {
        let mac_key = blake3::derive_key("boveda 2026 key slot authentication", &self.raw);
        *blake3::keyed_hash(&mac_key, slot_bytes).as_bytes()
    }

    pub fn cache_mac_key(&self) -> [u8; 32] {
        blake3::derive_key("boveda 2026 local cache authentication", &self.raw)
    }

    /// The tag that starts the ids of an item's points: a keyed hash of
    /// the item id, so that store names group an item's points without
    /// naming the item.
    pub fn item_tag(&self, item_id: &[u8]) -> [u8; 4] {
        let key = blake3::derive_key("boveda 2026 point tags", &self.raw);
        let mut tag = [0u8; 4];
        tag.copy_from_slice(&blake3::keyed_hash(&key, item_id).as_bytes()[..4]);
        tag
    }

    /// The secret seed of the content-defined chunker's gear table.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }
}

/// Argon2id cost parameters, stored in each key slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl KdfParams {
    /// 64 MiB and 3 passes: about a quarter of a second here, and well above
    /// the OWASP minimum for Argon2id.
    pub const DEFAULT: Self = Self { memory_kib: 64 * 1024, iterations: 3, parallelism: 1 };
    /// For tests only: the minimum the algorithm allows.
    pub const TESTING: Self = Self { memory_kib: 64, iterations: 1, parallelism: 1 };

    /// The most memory a key slot may ask for: 4 GiB. A slot's parameters
    /// are read in the clear, so they are bounded before any is used: a
    /// slot claiming terabytes would exhaust memory, and millions of passes
    /// would hang every command.
    pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
    pub const MAX_ITERATIONS: u32 = 64;
    pub const MAX_PARALLELISM: u32 = 64;

    /// Checks the parameters against the bounds above and Argon2's own.
    ///
    /// # Errors
    /// The first parameter out of bounds, named.
    pub fn check_bounds(&self) -> Result<(), String> {
        if !(1..=Self::MAX_PARALLELISM).contains(&self.parallelism) {
            return Err(format!("parallelism {} is outside 1..={}", self.parallelism, Self::MAX_PARALLELISM));
        }
        if !(1..=Self::MAX_ITERATIONS).contains(&self.iterations) {
            return Err(format!("iterations {} is outside 1..={}", self.iterations, Self::MAX_ITERATIONS));
        }
        let min_memory = 8 * self.parallelism;
        if !(min_memory..=Self::MAX_MEMORY_KIB).contains(&self.memory_kib) {
            return Err(format!(
                "memory {} KiB is outside {min_memory}..={} KiB",
                self.memory_kib,
                Self::MAX_MEMORY_KIB
            ));
        }
        Ok(())
    }

    /// Derives a 32-byte key from a passphrase.
    ///
    /// # Errors
    /// When the stored parameters are outside the bounds of
    /// [`KdfParams::check_bounds`].
    pub fn derive(&self, passphrase: &[u8], salt: &[u8]) -> Result<[u8; 32], String> {
        self.check_bounds()?;
        use argon2::{Algorithm, Argon2, Params, Version};
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| format!("invalid key derivation parameters: {e}"))?;
        let mut out = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into(passphrase, salt, &mut out)
            .map_err(|e| format!("key derivation failed: {e}"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096), aad in proptest::collection::vec(any::<u8>(), 0..32)) {
            let key = MasterKey::generate();
            let sealed = key.sealer().seal(&aad, &data);
            prop_assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
            prop_assert_eq!(key.sealer().open(&aad, &sealed).expect("open"), data);
        }

        #[test]
        fn any_flipped_bit_is_detected(data in proptest::collection::vec(any::<u8>(), 1..512), pos in any::<usize>(), bit in 0u8..8) {
            let key = MasterKey::generate();
            let mut sealed = key.sealer().seal(b"", &data);
            let i = pos % sealed.len();
            sealed[i] ^= 1 << bit;
            prop_assert!(key.sealer().open(b"", &sealed).is_err());
        }
    }

    proptest! {
        #[test]
        fn drive_seal_open_round_trip_and_any_flipped_bit_is_detected(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            pos in any::<usize>(),
            bit in 0u8..8,
        ) {
            let key: [u8; 32] = random_bytes();
            let sealer = DriveSealer::new(&key);
            let mut buf = vec![0u8; DriveSealer::NONCE_LEN];
            buf.extend_from_slice(&data);
            buf.extend_from_slice(&[0u8; TAG_LEN]);
            sealer.seal_in_place(b"aad", &mut buf).expect("seal");
            let mut flipped = buf.clone();
            prop_assert_eq!(sealer.open_in_place(b"aad", &mut buf).expect("open"), &data[..]);
            let i = pos % flipped.len();
            flipped[i] ^= 1 << bit;
            prop_assert!(sealer.open_in_place(b"aad", &mut flipped).is_err());
        }
    }

    #[test]
    fn drive_sealed_message_fails_with_another_key_or_aad() {
        let sealer = DriveSealer::new(&[1; 32]);
        let mut sealed = [0u8; DriveSealer::OVERHEAD + 6];
        sealed[DriveSealer::NONCE_LEN..DriveSealer::NONCE_LEN + 6].copy_from_slice(b"secret");
        sealer.seal_in_place(b"x", &mut sealed).expect("seal");
        let (mut a, mut b, mut c) = (sealed, sealed, sealed);
        assert!(DriveSealer::new(&[2; 32]).open_in_place(b"x", &mut a).is_err());
        assert!(sealer.open_in_place(b"y", &mut b).is_err());
        assert!(sealer.open_in_place(b"x", &mut c[..10]).is_err());
        assert!(sealer.seal_in_place(b"x", &mut [0u8; 10]).is_err());
        assert_eq!(sealer.open_in_place(b"x", &mut sealed).expect("open"), b"secret");
    }

    #[test]
    fn wrong_key_or_aad_fails() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        let sealed = a.sealer().seal(b"x", b"secret");
        assert!(b.sealer().open(b"x", &sealed).is_err());
        assert!(a.sealer().open(b"y", &sealed).is_err());
        assert!(a.sealer().open(b"x", &sealed[..10]).is_err());
    }

    #[test]
    fn chunk_ids_are_keyed() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        assert_eq!(a.chunk_id(b"data"), a.chunk_id(b"data"));
        assert_ne!(a.chunk_id(b"data"), b.chunk_id(b"data"));
        assert_ne!(a.chunker_seed(), b.chunker_seed());
    }

    #[test]
    fn kdf_parameters_out_of_bounds_are_refused_before_use() {
        let huge_memory = KdfParams { memory_kib: u32::MAX, ..KdfParams::TESTING };
        let no_lanes = KdfParams { parallelism: 0, ..KdfParams::TESTING };
        let endless = KdfParams { iterations: 10_000_000, ..KdfParams::TESTING };
        for bad in [huge_memory, no_lanes, endless] {
            let err = bad.derive(b"pw", b"saltsaltsaltsalt").expect_err("out of bounds");
            assert!(err.contains("outside"), "{err}");
        }
        assert!(KdfParams::DEFAULT.check_bounds().is_ok());
    }

    #[test]
    fn kdf_is_deterministic_per_salt() {
        let p = KdfParams::TESTING;
        let k1 = p.derive(b"pw", b"saltsaltsaltsalt").expect("kdf");
        assert_eq!(k1, p.derive(b"pw", b"saltsaltsaltsalt").expect("kdf"));
        assert_ne!(k1, p.derive(b"pw2", b"saltsaltsaltsalt").expect("kdf"));
    }
}

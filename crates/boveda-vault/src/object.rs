//! The envelope every stored object starts with.
//!
//! ```text
//! offset 0  magic  "BVDA"        (do not change)
//! offset 4  format version, u16 little-endian
//! offset 6  object kind, u8
//! offset 7  how it is sealed, u8: 0 under the master key, 1 by a host
//! ```
//! Encrypted objects continue with `nonce || ciphertext || tag`. The
//! associated data is the header followed by the object's name, so neither a
//! kind or version nor the name can be swapped: a sealed object copied under
//! another name fails authentication there (format version 2).
//!
//! Format version 3 adds what registered hosts write (see
//! `crate::host_keys`). An object a host sealed for the vault has 1 at
//! offset 7 and continues with who sealed it ([`SealedBy`]: the host's id
//! and its session's ephemeral public key), then `nonce || ciphertext ||
//! tag` under that session's key; its associated data is its header, who
//! sealed it, then the name. The vault writes version 3 only where the
//! payload names a host's objects (an index object listing a host's
//! packs); everything else stays version 2, readable by older builds.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypto::MasterKey;
use crate::error::{Result, VaultError};
use crate::host_keys::{HostSession, SealedBy};

/// Magic bytes of every boveda object. Do not change.
pub const MAGIC: [u8; 4] = *b"BVDA";
/// The format version this build writes under the master key. Version 1
/// (development builds before 2026-11-23) did not bind sealed objects to
/// their names nor authenticate the config; it is not read.
pub const FORMAT_VERSION: u16 = 2;
/// The format version of objects a registered host seals for the vault:
/// this build reads versions 2 and 3.
pub const HOST_FORMAT_VERSION: u16 = 3;
/// Offset 7 of the header: sealed under the master key, or by a host.
const SEALED_BY_MASTER: u8 = 0;
const SEALED_BY_HOST: u8 = 1;
pub const HEADER_LEN: usize = 8;
const _: () = assert!(HEADER_LEN == MAGIC.len() + 2 + 1 + 1);

/// Kinds of stored object. Values are part of the format: do not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectKind {
    Config = 1,
    KeySlot = 2,
    Pack = 3,
    Index = 4,
    Point = 5,
    Catalog = 6,
    Lease = 7,
}

pub fn header(kind: ObjectKind) -> [u8; HEADER_LEN] {
    let v = FORMAT_VERSION.to_le_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], kind as u8, SEALED_BY_MASTER]
}

/// Who sealed an object: the master key's holder, or a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing {
    Master,
    Host(SealedBy),
}

/// How an object is sealed, and the format version of its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    pub version: u16,
    pub sealing: Sealing,
}

impl Envelope {
    /// What the vault writes unless a payload needs version 3.
    pub const MASTER: Envelope = Envelope { version: FORMAT_VERSION, sealing: Sealing::Master };
    /// What the vault writes for a payload of version 3.
    pub const MASTER_V3: Envelope = Envelope { version: HOST_FORMAT_VERSION, sealing: Sealing::Master };

    pub fn host(by: SealedBy) -> Envelope {
        Envelope { version: HOST_FORMAT_VERSION, sealing: Sealing::Host(by) }
    }

    /// The header, then who sealed it for a host's object: what the object
    /// starts with, and the start of its associated data.
    pub fn prefix(&self, kind: ObjectKind) -> Vec<u8> {
        let v = self.version.to_le_bytes();
        let sealing = if matches!(self.sealing, Sealing::Host(_)) { SEALED_BY_HOST } else { SEALED_BY_MASTER };
        let mut out = vec![MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], kind as u8, sealing];
        if let Sealing::Host(by) = &self.sealing {
            out.extend_from_slice(&by.to_bytes());
        }
        out
    }

    /// The key that opens what is sealed in this envelope.
    ///
    /// # Errors
    /// `Invalid` for a host's ephemeral key that gives no shared secret.
    pub fn sealer(&self, key: &MasterKey) -> Result<crate::crypto::Sealer> {
        match &self.sealing {
            Sealing::Master => Ok(key.sealer().clone()),
            Sealing::Host(by) => key.session_sealer(by),
        }
    }
}

/// Checks an object's header and says how it is sealed; the rest of the
/// object (after who sealed it, for a host's).
///
/// # Errors
/// As [`parse_header`]; `Damaged` for a host's object whose header or
/// sealer is malformed.
pub fn parse_any_header<'a>(name: &str, bytes: &'a [u8], kind: ObjectKind) -> Result<(Envelope, &'a [u8])> {
    check_magic_and_version(name, bytes, kind)?;
    let body = &bytes[HEADER_LEN..];
    match (u16::from_le_bytes([bytes[4], bytes[5]]), bytes[7]) {
        (version @ (FORMAT_VERSION | HOST_FORMAT_VERSION), SEALED_BY_MASTER) => {
            Ok((Envelope { version, sealing: Sealing::Master }, body))
        }
        (HOST_FORMAT_VERSION, SEALED_BY_HOST) => {
            let by = SealedBy::from_bytes(body).ok_or_else(|| VaultError::damaged(name, "cut short"))?;
            Ok((Envelope::host(by), &body[SealedBy::LEN..]))
        }
        (version, sealing) => Err(VaultError::damaged(
            name,
            format!("format version {version} with sealing {sealing} (not an object any boveda writes)"),
        )),
    }
}

/// Checks an object's header and returns its body.
///
/// # Errors
/// `Damaged` for bad magic or kind, `NewerFormat` for a newer version.
pub fn parse_header<'a>(name: &str, bytes: &'a [u8], kind: ObjectKind) -> Result<&'a [u8]> {
    match parse_any_header(name, bytes, kind)? {
        (Envelope::MASTER, body) => Ok(body),
        (Envelope { sealing: Sealing::Host(_), .. }, _) => {
            Err(VaultError::damaged(name, "sealed by a host, where only the vault writes"))
        }
        (_, _) => Err(VaultError::damaged(name, "format version 3 where only version 2 is written")),
    }
}

fn check_magic_and_version(name: &str, bytes: &[u8], kind: ObjectKind) -> Result<()> {
    if bytes.len() < HEADER_LEN || bytes[..4] != MAGIC {
        return Err(VaultError::damaged(name, "not a boveda object (bad magic bytes)"));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version > HOST_FORMAT_VERSION {
        return Err(VaultError::NewerFormat {
            location: name.to_string(),
            found: version,
            supported: HOST_FORMAT_VERSION,
        });
    }
    if version < FORMAT_VERSION {
        return Err(VaultError::Invalid(format!(
            "{name} uses format version {version}, from a development build of boveda this one does not read; back it up again into a new vault"
        )));
    }
    if bytes[6] != kind as u8 {
        return Err(VaultError::damaged(name, format!("object kind {} where {:?} was expected", bytes[6], kind)));
    }
    Ok(())
}

/// The associated data of a sealed object: its header, then the name it is
/// bound to.
fn associated_data(kind: ObjectKind, bound_to: &str) -> Vec<u8> {
    let mut aad = header(kind).to_vec();
    aad.extend_from_slice(bound_to.as_bytes());
    aad
}

/// Serializes a value as JSON and seals it into the object named `name`.
///
/// # Errors
/// `Invalid` when the value does not serialize.
pub fn seal_json<T: Serialize>(key: &MasterKey, kind: ObjectKind, name: &str, value: &T) -> Result<Vec<u8>> {
    let payload = serde_json::to_vec(value).map_err(|e| VaultError::Invalid(e.to_string()))?;
    Ok(seal_bytes(key, kind, name, &payload))
}

/// Seals `payload` bound to `bound_to`: the object's name, or for objects
/// named after their own content (index objects) the folder they live in.
pub fn seal_bytes(key: &MasterKey, kind: ObjectKind, bound_to: &str, payload: &[u8]) -> Vec<u8> {
    let h = header(kind);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + crate::crypto::SEAL_OVERHEAD);
    out.extend_from_slice(&h);
    key.sealer().seal_into(&associated_data(kind, bound_to), payload, &mut out);
    out
}

/// Seals `payload` for the vault, as a host's `session` (see
/// `crate::host_keys`), bound to `bound_to` as [`seal_bytes`] binds.
pub fn seal_bytes_for_vault(session: &HostSession, kind: ObjectKind, bound_to: &str, payload: &[u8]) -> Vec<u8> {
    seal_enveloped(&Envelope::host(session.sealed_by()), session.sealer(), kind, bound_to, payload)
}

/// Seals `payload` under `sealer` in `envelope`.
pub fn seal_enveloped(
    envelope: &Envelope,
    sealer: &crate::crypto::Sealer,
    kind: ObjectKind,
    bound_to: &str,
    payload: &[u8],
) -> Vec<u8> {
    let mut aad = envelope.prefix(kind);
    let prefix = aad.len();
    aad.extend_from_slice(bound_to.as_bytes());
    let mut out = Vec::with_capacity(aad.len() + payload.len() + crate::crypto::SEAL_OVERHEAD);
    out.extend_from_slice(&aad[..prefix]);
    sealer.seal_into(&aad, payload, &mut out);
    out
}

/// Opens the sealed object `name`, bound to `bound_to` (see [`seal_bytes`]),
/// whether the vault or a host sealed it.
///
/// # Errors
/// `Damaged` when authentication fails (altered, or sealed under another
/// name), `NewerFormat` for a newer version.
pub fn open_bytes(key: &MasterKey, name: &str, bound_to: &str, bytes: &[u8], kind: ObjectKind) -> Result<Vec<u8>> {
    Ok(open_enveloped(key, name, bound_to, bytes, kind)?.1)
}

/// [`open_bytes`], saying how the object was sealed.
///
/// # Errors
/// As [`open_bytes`].
pub fn open_enveloped(
    key: &MasterKey,
    name: &str,
    bound_to: &str,
    bytes: &[u8],
    kind: ObjectKind,
) -> Result<(Envelope, Vec<u8>)> {
    let (envelope, body) = parse_any_header(name, bytes, kind)?;
    let sealer = envelope.sealer(key).map_err(|e| VaultError::damaged(name, e))?;
    let mut aad = envelope.prefix(kind);
    aad.extend_from_slice(bound_to.as_bytes());
    let payload = sealer.open(&aad, body).map_err(|_| {
        VaultError::damaged(name, "authentication failed (the object was altered, or is a copy of another object)")
    })?;
    Ok((envelope, payload))
}

/// Opens the sealed JSON object `name`.
///
/// # Errors
/// As [`open_bytes`]; `Damaged` when the payload does not parse.
pub fn open_json<T: DeserializeOwned>(key: &MasterKey, name: &str, bytes: &[u8], kind: ObjectKind) -> Result<T> {
    let payload = open_bytes(key, name, name, bytes, kind)?;
    serde_json::from_slice(&payload).map_err(|e| VaultError::damaged(name, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_kind_binding() {
        let key = MasterKey::generate();
        let obj = seal_json(&key, ObjectKind::Point, "p", &vec![1u32, 2, 3]).expect("seal");
        let back: Vec<u32> = open_json(&key, "p", &obj, ObjectKind::Point).expect("open");
        assert_eq!(back, vec![1, 2, 3]);
        assert!(open_json::<Vec<u32>>(&key, "p", &obj, ObjectKind::Index).is_err());
        // the same bytes under another name fail authentication
        let err = open_json::<Vec<u32>>(&key, "q", &obj, ObjectKind::Point);
        assert!(matches!(err, Err(VaultError::Damaged { .. })));
        // relabelling the kind in the header breaks authentication
        let mut relabelled = obj.clone();
        relabelled[6] = ObjectKind::Index as u8;
        let err = open_json::<Vec<u32>>(&key, "p", &relabelled, ObjectKind::Index);
        assert!(matches!(err, Err(VaultError::Damaged { .. })));
    }

    #[test]
    fn newer_version_is_refused_by_name() {
        let key = MasterKey::generate();
        let mut obj = seal_bytes(&key, ObjectKind::Config, "config", b"{}");
        obj[4] = 9;
        let err = parse_header("config", &obj, ObjectKind::Config).expect_err("newer");
        assert!(err.to_string().contains("format version 9"), "{err}");
        assert!(parse_header("x", b"NOPE0000", ObjectKind::Config).is_err());
    }

    #[test]
    fn what_a_host_seals_for_the_vault_opens_under_its_name_only_and_never_passes_as_the_vaults() {
        let key = MasterKey::generate();
        let host = key.host_keys(crate::RecordId::random(), crate::ChunkerParams::DEFAULT, crate::RecordId::random());
        let session = host.new_session().expect("session");
        let obj = seal_bytes_for_vault(&session, ObjectKind::Index, "index", b"entries");
        assert_eq!(open_bytes(&key, "index/x", "index", &obj, ObjectKind::Index).expect("open"), b"entries");
        assert_eq!(u16::from_le_bytes([obj[4], obj[5]]), HOST_FORMAT_VERSION);
        // bound to its folder and kind, like the vault's own
        assert!(open_bytes(&key, "points/x", "points", &obj, ObjectKind::Index).is_err());
        assert!(open_bytes(&key, "index/x", "index", &obj, ObjectKind::Point).is_err());
        // where only the vault writes (config, key slots), a host's object is refused
        let err = parse_header("config", &obj, ObjectKind::Index).expect_err("a host's object");
        assert!(err.to_string().contains("sealed by a host"), "{err}");
        // claiming another host, or another session, fails authentication
        let mut other_host = obj.clone();
        other_host[HEADER_LEN] ^= 1;
        assert!(open_bytes(&key, "index/x", "index", &other_host, ObjectKind::Index).is_err());
        let mut other_key = obj.clone();
        other_key[HEADER_LEN + 20] ^= 1;
        assert!(open_bytes(&key, "index/x", "index", &other_key, ObjectKind::Index).is_err());
        // relabelled as the vault's (version 2, sealing 0) or mixed: refused
        let mut relabelled = obj.clone();
        relabelled[4] = 2;
        relabelled[7] = 0;
        assert!(open_bytes(&key, "index/x", "index", &relabelled, ObjectKind::Index).is_err());
        let mut mixed = obj.clone();
        mixed[7] = 0;
        let err = open_bytes(&key, "index/x", "index", &mixed, ObjectKind::Index).expect_err("mixed");
        assert!(err.to_string().contains("authentication failed"), "{err}");
        let mut unknown = obj.clone();
        unknown[7] = 2;
        let err = open_bytes(&key, "index/x", "index", &unknown, ObjectKind::Index).expect_err("unknown sealing");
        assert!(err.to_string().contains("not an object any boveda writes"), "{err}");
        // cut short inside who sealed it
        assert!(open_bytes(&key, "index/x", "index", &obj[..HEADER_LEN + 10], ObjectKind::Index).is_err());
    }
}

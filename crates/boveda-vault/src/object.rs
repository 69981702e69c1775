//! The envelope every stored object starts with.
//!
//! ```text
//! offset 0  magic  "BVDA"        (do not change)
//! offset 4  format version, u16 little-endian
//! offset 6  object kind, u8
//! offset 7  reserved, 0
//! ```
//! Encrypted objects continue with `nonce || ciphertext || tag`. The
//! associated data is the header followed by the object's name, so neither a
//! kind or version nor the name can be swapped: a sealed object copied under
//! another name fails authentication there (format version 2).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crypto::MasterKey;
use crate::error::{Result, VaultError};

/// Magic bytes of every boveda object. Do not change.
pub const MAGIC: [u8; 4] = *b"BVDA";
/// The format version this build writes and the only one it reads.
/// Version 1 (development builds before 2026-11-23) did not bind sealed
/// objects to their names nor authenticate the config.
pub const FORMAT_VERSION: u16 = 2;
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
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], kind as u8, 0]
}

/// Checks an object's header and returns its body.
///
/// # Errors
/// `Damaged` for bad magic or kind, `NewerFormat` for a newer version.
pub fn parse_header<'a>(name: &str, bytes: &'a [u8], kind: ObjectKind) -> Result<&'a [u8]> {
    if bytes.len() < HEADER_LEN || bytes[..4] != MAGIC {
        return Err(VaultError::damaged(name, "not a boveda object (bad magic bytes)"));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version > FORMAT_VERSION {
        return Err(VaultError::NewerFormat { location: name.to_string(), found: version, supported: FORMAT_VERSION });
    }
    if version < FORMAT_VERSION {
        return Err(VaultError::Invalid(format!(
            "{name} uses format version {version}, from a development build of boveda this one does not read; back it up again into a new vault"
        )));
    }
    if bytes[6] != kind as u8 {
        return Err(VaultError::damaged(name, format!("object kind {} where {:?} was expected", bytes[6], kind)));
    }
    Ok(&bytes[HEADER_LEN..])
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

/// Opens the sealed object `name`, bound to `bound_to` (see [`seal_bytes`]).
///
/// # Errors
/// `Damaged` when authentication fails (altered, or sealed under another
/// name), `NewerFormat` for a newer version.
pub fn open_bytes(key: &MasterKey, name: &str, bound_to: &str, bytes: &[u8], kind: ObjectKind) -> Result<Vec<u8>> {
    let body = parse_header(name, bytes, kind)?;
    key.sealer().open(&associated_data(kind, bound_to), body).map_err(|_| {
        VaultError::damaged(name, "authentication failed (the object was altered, or is a copy of another object)")
    })
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
}

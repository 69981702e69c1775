//! What the server lets a registered host add to the vault: packs and
//! index objects it sealed itself, each named after its bytes, created
//! and never replaced. A host has no other way to write (docs/FLEET.md):
//! everything else (points, catalog records, the config) the server
//! writes under the master key once it has checked what the host claims.

use boveda_store::{PutMode, StoreErrorKind};

use crate::RecordId;
use crate::error::{Result, VaultError};
use crate::index::IndexObject;
use crate::object::{ObjectKind, Sealing, parse_any_header};
use crate::pack::parse_pack_name;
use crate::vault::Vault;

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
    /// Adds an object a host sent, after checking that it is a pack or an
    /// index object, named after its bytes, sealed by `host` for the vault,
    /// and (an index object) that every pack it lists is `host`'s. The
    /// write is create-only: nothing stored is ever replaced.
    ///
    /// # Errors
    /// `Invalid` naming the object and why it is refused; `Damaged` for an
    /// index object that does not open; a store error.
    pub fn add_host_object(&self, host: &RecordId, name: &str, bytes: &[u8]) -> Result<HostObject> {
        let hash = blake3::hash(bytes);
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
        } else {
            return Err(refuse(name, "a host may add only packs and index objects"));
        }
        match self.store().put(name, bytes, PutMode::Create) {
            Ok(_) => Ok(HostObject::Added),
            // named after its bytes: the object stored is this one
            Err(e) if e.kind() == StoreErrorKind::AlreadyExists => Ok(HostObject::AlreadyStored),
            Err(e) => Err(e.into()),
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

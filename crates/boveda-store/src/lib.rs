//! # boveda-store: where a vault's objects live
//!
//! This is the lowest layer. It knows nothing of encryption, chunks or
//! recovery points: it stores named, immutable byte objects. The vault format
//! above it relies on four promises every backend keeps:
//!
//! | promise | local folder | object stores (later) |
//! |---|---|---|
//! | a `put` is atomic: readers see all of an object or none of it | temp file, `fsync`, rename, `fsync` of the folder | single PUT |
//! | a `put` never replaces an object (create-only) | `renameat2(RENAME_NOREPLACE)`, or `link` where that is unsupported | `If-None-Match: *` |
//! | `list` shows every object whose `put` returned | `readdir` | LIST |
//! | ranged reads | `pread` | `Range:` GET |
//!
//! Object names are relative, `/`-separated paths such as
//! `packs/3f/3f9a…`. Names starting with `.tmp-` are a backend's own
//! in-flight files and never listed; those a killed writer left behind are
//! found with [`Store::abandoned_uploads`] and reclaimed by prune.
//!
//! Cross-cutting behaviour (retries, replication to a secondary store, fault
//! injection) is written as a wrapper implementing [`Store`] around another
//! [`Store`], never as flags inside a backend.

mod error;
mod fault_store;
mod local_store;
mod store;

pub use error::{StoreError, StoreErrorKind};
pub use fault_store::FaultStore;
pub use local_store::LocalStore;
pub use store::{AbandonedUpload, ObjectInfo, Store, open_store};

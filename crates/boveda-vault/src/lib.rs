//! # boveda-vault: the vault format
//!
//! A vault is a set of immutable objects in a store ([`boveda_store::Store`]).
//! This crate defines every object, seals and opens them, and checks them.
//! The full format is written down in `docs/FORMAT.md`; in short:
//!
//! | object | name | contents |
//! |---|---|---|
//! | config | `config` | clear: vault id, chunker sizes; its presence makes a vault |
//! | key slot | `keys/<id>` | clear: Argon2id parameters, salt, master key sealed under the derived key |
//! | pack | `packs/<data\|tree>/<xx>/<id>` | sealed blobs, then a sealed footer listing them |
//! | index | `index/<hash>` | sealed: which pack holds which blob |
//! | recovery point | `points/<id>` | sealed: item, time, root tree, stats, warnings |
//! | catalog record | `catalog/<kind>/<id>/<revision>` | sealed: items, settings; newest revision wins |
//!
//! ## Invariants
//! - **Never modify, only add.** Every object is written once, atomically,
//!   create-only. Two writers never replace each other's objects.
//! - **Order of durability.** Pack, then its index object; all packs of a
//!   backup, then the point manifest. A crash at any instant leaves only
//!   objects no point refers to, and indexed packs the next backup reuses.
//! - **Everything authenticated.** Blobs are checked against their keyed
//!   hash on every read; objects bind their header as associated data.
//!
//! ## Concurrency and space reclamation
//!
//! | operation | takes | may run beside |
//! |---|---|---|
//! | backup | nothing (adds objects only) | backups, restores, check |
//! | restore, ls, check | nothing (reads only) | everything |
//! | prune | two-phase (`gc`): mark unused packs with a time; delete them only after a safety margin, once no writer that predates the mark still runs, and only if no point has come to need them | backups, restores, check |

mod blob;
mod blob_writer;
mod catalog;
pub mod catalog_seen;
mod check;
mod chunker;
mod crypto;
pub mod drive_format;
mod error;
mod gc;
pub mod host_keys;
mod ids;
mod index;
mod key_slot;
mod lease;
mod object;
mod object_cache;
mod pack;
mod point;
pub mod store_side;
mod tree;
mod vault;

pub use blob::{BlobKind, decode_blob, encode_blob};
pub use blob_writer::{BlobWriter, KnownChunks, TreeSink, WriterKeys, WriterStats, WriterTarget};
pub use catalog::ITEMS_KIND;
pub use check::{Affected, CheckOptions, CheckReport, Problem, check};
pub use chunker::{Chunker, ChunkerParams};
pub use crypto::{AuthError, DriveSealer, KdfParams, MasterKey, Sealer};
pub use error::{Result, VaultError, VaultErrorKind};
pub use gc::{
    DEFAULT_SAFETY_MARGIN, Deletion, GcPlan, GcRequest, LostPack, MIN_WRITER_SLACK, PlannedPack, WaitingMark,
    abandoned_uploads, consolidate_index, deletions, execute as gc_execute, forget_lost, marked_packs, missing_packs,
    needed_until, plan as gc_plan, referenced_chunks, referenced_chunks_lenient, write_index,
};
pub use host_keys::{HostKeys, HostSession, SealedBy};
pub use ids::{ChunkId, PackId, PointId, RecordId};
pub use index::{BlobRef, ChunkIndex, IndexObject, IndexPack};
pub use key_slot::KeySlotInfo;
pub use lease::{Lease, LeaseRecord, PRUNE_LEASE};
pub use object::FORMAT_VERSION;
pub use object_cache::ObjectCache;
pub use pack::{PackEntry, pack_name, parse_pack_name};
pub use point::{Consistency, PointStats, RecoveryPoint, point_name};
pub use store_side::{Added, StoreSide};
pub use tree::{Node, NodeKind, Piece, Tree, is_safe_name};
pub use vault::{
    APPROVAL_DEFAULT, APPROVAL_MAX, CreateOptions, DamageLog, GuardApproval, GuardBinding, GuardOutcome, GuardRequest,
    GuardRequestState, GuardedOp, Hold, HostObject, Immutability, JobPacks, LockReport, ObjectLockSettings, PointHold,
    Replica, StoreSettings, Vault, VaultConfig, VaultSettings, approval_is_signed, approval_message,
    check_settings_change, guarded_changes,
};

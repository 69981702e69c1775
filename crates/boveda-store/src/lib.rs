//! # boveda-store: where a vault's objects live
//!
//! This is the lowest layer. It knows nothing of encryption, chunks or
//! recovery points: it stores named byte objects. The vault format above
//! it relies on these promises, which every backend keeps:
//!
//! | promise | local folder | Azure Blob, S3 |
//! |---|---|---|
//! | a `put` is atomic: readers see all of an object or none of it | temp file, `fsync`, rename, `fsync` of the folder | one PUT request |
//! | create-only `put` never replaces an object | `renameat2(RENAME_NOREPLACE)`, or `link` where that is unsupported | `If-None-Match: *` |
//! | replace-only-if-unchanged `put` | a lock on the current file, its tag checked, rename | `If-Match: ETAG` |
//! | a listing shows every object whose `put` returned, in name order, a page at a time | sorted `readdir` | LIST, paged |
//! | ranged reads | `pread` | `Range:` GET |
//!
//! A retried create-only `put` that finds its own first try already landed
//! (same name, same bytes) counts as success: see [`RetryStore`].
//!
//! Object names are relative, `/`-separated paths such as
//! `packs/3f/3f9a…`. Names with a part starting with `.tmp-` are a
//! backend's own in-flight files and never listed; those a killed writer
//! left behind are found with [`Store::abandoned_uploads`] and reclaimed
//! by prune.
//!
//! The crate's shape: the contract in `store.rs` and `error.rs`; one file
//! per backend (`local_store.rs`, `azblob.rs`, `s3.rs`, sharing
//! `opendal_store.rs`); one per layer (`retry.rs`, `metrics.rs`,
//! `fault.rs`); replication to a secondary store (`replication.rs`); and the builder that opens a URL and stacks the layers in
//! `builder.rs`. The conformance suite every backend and layer passes is
//! `tests/conformance.rs`.

mod azblob;
mod builder;
mod container;
mod error;
mod fault;
mod grant;
mod local_store;
mod metrics;
mod object_lock;
mod opendal_store;
mod replicating;
mod replication;
mod retry;
mod routed;
mod s3;
mod store;

pub use builder::{
    FAULTS_ENV, StoreOptions, StoreUrl, create_locked_bucket, faults_from_env, faults_from_var, layer, open_backend,
    open_store, open_store_with, set_bucket_lock,
};
pub use error::{StoreError, StoreErrorKind, io_in_words};
pub use fault::{FaultPlan, FaultStore};
pub use local_store::LocalStore;
pub use metrics::{MetricsSnapshot, MetricsStore, StoreMetrics, process_metrics};
pub use replicating::{PENDING, PendingMarker, ReplicatingStore, mark_pending};
pub use replication::{PassReport, ReplicationLag, Replicator};
pub use retry::{RetryPolicy, RetryStore, process_retries};
pub use routed::RoutedStore;
pub use store::{
    AbandonedUpload, Capabilities, CreateGrant, LIST_PAGE, LockMode, ObjectInfo, ObjectLock, PutMode, Store,
};

//! # boveda-engine: the data plane
//!
//! Sources become recovery points and points become files again. This
//! crate reads and writes the file system and calls the vault layer
//! (`boveda-vault`) for everything stored; it knows nothing of items,
//! policies or jobs, which live in the control plane above it.
//!
//! - [`backup_files`]: a file tree into a root tree id, with stats and
//!   warnings (unreadable, vanished or changing files never stop a backup).
//! - [`restore_files`]: a root tree, or chosen paths of it, into a target
//!   folder, never writing outside it.
//! - [`backup_disk`] / [`restore_disk`]: raw, qcow2 and block-device disk
//!   images in fixed-size chunks, reading only allocated data.
//! - [`list_point_path`]: browse a point.
//! - [`backup_files_to`] with a [`HostCache`]: a registered host's backup,
//!   sealed for the vault, its parent's trees read from its own cache.
//! - [`drive_files`]: offline seeding's drives as files (labels,
//!   journals, locks, sealed objects placed whole or not at all).

pub mod beneath;
pub mod boot_check;
mod chunk_fetch;
mod disk_backup;
mod disk_files;
mod disk_image;
mod disk_restore;
pub mod drive_files;
mod error;
mod exclude;
mod file_backup;
mod file_restore;
pub mod guest_agent;
mod host_cache;
mod libvirt_domain;
pub mod live;
mod metadata;
pub mod nbd;
mod nbd_server;
mod point_mount;
mod point_path;
mod point_reader;
mod point_tar;
mod progress;
pub mod qmp;
mod workers;

pub use disk_backup::{
    DISK_CHUNK, DISK_NODE, DiskBackupOptions, DiskSource, LiveSource, backup_disk, backup_disk_to, is_safe_disk_name,
};
pub use disk_files::{DiskEntry, MaterializedDisk, materialize_disk};
pub use disk_image::{DiskFormat, DiskImage};
pub use disk_restore::{DiskOutputFormat, DiskRestoreRequest, read_point_file, restore_disk};
pub use error::{EngineError, Result};
pub use exclude::Excludes;
pub use file_backup::{
    BackupDest, FileBackupOptions, FileBackupOutcome, ParentTrees, VaultTrees, backup_files, backup_files_to,
};
pub use file_restore::{RestoreOptions, RestoreOutcome, restore_files};
pub use host_cache::HostCache;
pub use libvirt_domain::{Domain, DomainDisk, GUEST_AGENT_CHANNEL, Hardware, MAX_FIRMWARE_VARS, is_firmware_vars};
pub use nbd_server::serve_point_disks;
pub use point_mount::{MountedPoint, mount_points};
pub use point_path::{list_point_path, split_point_path};
pub use point_tar::{TarStats, Unpacked, unpack_tar, write_point_tar};
pub use progress::{BackupProgress, NoProgress, RestoreProgress};
pub use workers::in_own_pool;

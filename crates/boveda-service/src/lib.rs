//! # boveda-service: the control plane
//!
//! Vaults, items, recovery points and (in later issues) policies, jobs and
//! the scheduler. The CLI and the server are thin layers over these
//! functions: each takes an open [`boveda_vault::Vault`] and plain request
//! values, and returns plain results that serialize to JSON.
//!
//! Everything lives in the vault's own store (catalog records and point
//! manifests); the user's registry of known vaults is a convenience only.

mod consistency;
mod error;
mod item;
mod names;
mod policy;
mod protection;
mod recovery;
mod registry;
mod vault_admin;

pub use boveda_engine::DiskEntry;
pub use boveda_engine::DiskOutputFormat;
pub use consistency::{ConsistencyConfig, MAX_SCRIPT_TIMEOUT_SECS, ScriptResult, run_script};
pub use error::{Result, ServiceError, ServiceErrorKind};
pub use item::{
    DiscoveredVm, Item, ItemSource, add_disk_item, add_files_item, add_vm_item, discover_vms, find_item, list_items,
};
pub use names::{ITEM_NAME_RULE, VAULT_NAME_RULE, validate_item_name, validate_vault_name};
pub use policy::{
    DEFAULT_POLICY, DaySpec, Frequency, MonthlyRule, Policy, Retention, Schedule, Weekday, WeeklyRule, YearlyRule,
    create_policy, delete_policy, find_policy, list_policies, parse_weekday,
};
pub use protection::{BackupRequest, DEFAULT_AD_HOC_RETENTION_DAYS, VM_DEFINITION, backup_now};
pub use recovery::{
    VmRestore, browse, browse_disk, find_point, list_item_points, mount, restore, restore_disk_files,
    restore_disk_image, restore_vm,
};
pub use registry::{KnownVault, Registry, config_dir};
pub use vault_admin::{NewVault, VaultSummary, create_vault, hostname, open_vault, resolve_vault, summarize};

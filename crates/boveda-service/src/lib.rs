//! # boveda-service: the control plane
//!
//! Vaults, items, recovery points, policies and retention, protection,
//! jobs, alerts, prune, usage and the scheduler (`agent`). The CLI and the server are thin layers over these
//! functions: each takes an open [`boveda_vault::Vault`] and plain request
//! values, and returns plain results that serialize to JSON.
//!
//! Everything lives in the vault's own store (catalog records and point
//! manifests); the user's registry of known vaults is a convenience only.
//!
//! Rooms, from the bottom up (docs/ARCHITECTURE.md): `model` (pure values:
//! policies, schedules, names, job records), `runtime` (the clock, jobs,
//! alerts, this host's facts, the registry), `items` (items, their
//! consistency scripts and running VMs), then one folder or file per
//! feature: `policies` (with retention), `offline` (import jobs, drives),
//! `protection` (backups and protection states), `recovery`,
//! `replication`, `access`, `guard` (multi-user authorization), `vault` (create, open, check, prune),
//! `reports` (read models: the item list, the dashboard, usage), and on
//! top `agent` (the scheduler and the job queue).

mod access;
mod agent;
mod error;
pub mod fleet;
pub mod guard;
mod items;
mod model;
mod offline;
mod policies;
mod protection;
mod recovery;
mod replication;
mod reports;
mod runtime;
mod vault;

pub use fleet::add_item;
pub use protection::backups::backup_job;
pub use protection::suspicion::{PointReview, Verdict, review as review_point, reviews as point_reviews};
pub use reports::overview::{Health, ItemOverview, item_overview};
pub use runtime::job::JobEnv;
pub use runtime::live::{jobs_ended, live_progress, with_live_progress};

pub use runtime::host::{hostname, retry_policy};

pub use access::{
    AccessToken, NewToken, Permission, Role, ScopedItem, TOKEN_PREFIX, TokenRefusal, TokenSet, copy_token,
    create_token, list_tokens, revoke_token,
};
pub use agent::{AgentOptions, AgentReport, run_agent};
pub use reports::alerts::{acknowledge_alert, list_alerts};
pub use runtime::alert::{Acknowledgement, Alert, AlertState, EmailOutcome, Severity, retry_alerts};
// the data the service's functions take and return, so that a front end
// (the CLI, the server) needs this crate alone
pub use agent::background::{
    BackgroundEnv, DEFAULT_JOBS_PER_VAULT, JobSlots, RestoreTarget, SlotGuard, VerifyNow, check_restore_target,
    start_backup, start_restore, start_verify,
};
pub use boveda_engine::boot_check::{BootLimits, BootOutcome, Probe, ProbeResult, printable};
pub use boveda_engine::{BackupProgress, DiskEntry, DiskOutputFormat, RestoreOutcome, RestoreProgress, TarStats};
pub use boveda_store::{
    MetricsSnapshot, StoreError, process_metrics as store_requests, process_retries as store_retries,
};
pub use boveda_vault::drive_format::DriveLabel;
pub use boveda_vault::{
    DamageLog, HostObject, KdfParams, Node, NodeKind, PointStats, RecordId, RecoveryPoint, Vault, VaultError,
    VaultSettings,
};
pub use error::{Remedy, Result, ServiceError, ServiceErrorKind};
pub use items::consistency::{ConsistencyConfig, MAX_SCRIPT_TIMEOUT_SECS, ScriptResult, run_script};
pub use items::{
    DiscoveredVm, Item, ItemSource, NewItem, Protection, ProtectionState, add_disk_item, add_files_item, add_vm_item,
    check_new_item, discover_vms, find_item, list_items, save_item, update_item,
};
pub use model::names::{ITEM_NAME_RULE, VAULT_NAME_RULE, validate_item_name, validate_vault_name};
pub use model::policy::{
    DEFAULT_POLICY, DaySpec, Frequency, HOURLY_INTERVALS, HourlyWindow, MonthlyRule, Policy, PolicyPatch, Retention,
    Schedule, Weekday, WeeklyRule, YearlyRule, parse_weekday,
};
pub use model::schedule::{latest_slot, next_slot};
pub use model::time_input::{
    DayBound, MAX_RETAIN_YEARS, TIME_FORMS, check_retain_until, parse_duration, parse_retain_until, parse_time,
};
pub use offline::diskprep::{DiskprepReport, PreparedDrive, diskprep};
pub use offline::import::{ImportReport, ImportRequest, import};
pub use offline::{
    DriveRecord, DriveState, ImportJob, ImportState, STAGING_JOURNAL, SeedEstimate, StagingJournal, find_import_job,
    find_seed, init_offline, item_import_job, list_import_jobs, record_shipping, seeding_status,
};
pub use policies::retention::{PointExpiry, evaluate as evaluate_retention};
pub use policies::{
    ExpiryChange, PolicyUpdate, apply_policy_update, create_policy, create_policy_from, delete_policy, find_policy,
    list_policies, plan_policy_update, update_policy,
};
pub use protection::{
    BackupRequest, DEFAULT_AD_HOC_RETENTION_DAYS, VM_DEFINITION, backup_now, change_item_policy, disable_protection,
    enable_protection, resume_protection, undelete_protection,
};
pub use recovery::drill::DrillOutcome;
pub use recovery::verify::{
    PointVerification, VerificationKind, VerifySettings, VerifyTask, last_verification, save_verify_settings,
    verification_of, verifications, verify_many, verify_point_job,
};
pub use recovery::vm_restore::{SafetyCopy, VmTarget, list_safety_copies, remove_safety_copy};
pub use recovery::{
    PointEntry, PointSummary, RestoreReport, RestoreRequest, VmRestore, browse, browse_disk, browse_point,
    download_point, find_point, list_item_points, list_points, mount, restore, restore_disk_files, restore_disk_image,
    restore_failure, restore_job, restore_vm, serve_point_disks, show_point,
};
pub use replication::{
    PassOutcome, PassRecord, ReplicationStatus, ReplicationSummary, change_redundancy, finish_replication,
    open_secondary, points_on_secondary, replicate, replication_job, replication_status, replication_summary,
};
pub use reports::backups::{BackupReport, DayDuration, ItemReport, REPORT_PERIODS, backup_report};
pub use reports::dashboard::{
    DASHBOARD_DAYS, Dashboard, DayStats, VaultMetrics, dashboard, dashboard_with, vault_metrics,
};
pub use reports::usage::{ItemUsage, PriceTable, Usage, instance_band, usage};
pub use runtime::clock::{Clock, FakeClock, SystemClock, clock_from_env};
pub use runtime::control::{
    VaultControl, clear_email_settings, email_settings, send_test_email, set_email_settings, vault_control,
};
pub use runtime::email::{EmailSecurity, EmailSettings, EmailView};
pub use runtime::job::{
    DEFAULT_HEARTBEAT, Job, JobCtx, JobDone, JobFilter, JobProgress, JobQuery, JobSpec, JobState, Observers, Operation,
    find_job, list_jobs, run_job, stop_job, wait_job,
};
pub use runtime::registry::{KnownVault, Registry, cache_dir, config_dir};
pub use vault::admin::{
    NewVault, VaultSummary, VaultUpdate, add_key_job, create_vault, open_secondary_vault, open_vault, open_vault_store,
    remove_key_job, resolve_vault, summarize, update_vault, vaults_to_serve,
};
pub use vault::prune::{ExpiredPoint, PrunePlan, plan_prune, prune_job};
pub use vault::verify::{RepairReport, repair_job, verify_job};

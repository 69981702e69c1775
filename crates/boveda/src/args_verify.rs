//! `boveda recoverypoint verify`: proving points (docs/VMS.md,
//! docs/OPERATIONS.md).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    Kvm,
    Tcg,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The items whose points to verify (several run at once, within
    /// --memory-budget-mib).
    #[arg(required = true)]
    pub items: Vec<String>,
    /// A point id (prefix) or `latest` (with one item only).
    #[arg(long)]
    pub point: Option<String>,
    /// VMs: at most this many CPUs (default 2, or the item's saved setting).
    #[arg(long)]
    pub max_cpus: Option<u32>,
    /// VMs: at most this much memory, MiB (default 1024).
    #[arg(long)]
    pub max_memory_mib: Option<u64>,
    /// VMs: seconds the guest has to answer (default 300).
    #[arg(long, value_name = "SECONDS")]
    pub time_limit: Option<u64>,
    /// VMs without a guest agent: text on the serial console that says the
    /// guest is up.
    #[arg(long)]
    pub marker: Option<String>,
    /// VMs: a command the guest agent runs once the guest is up; exit
    /// status 0 passes (words split on spaces).
    #[arg(long, value_name = "COMMAND", conflicts_with = "probe_port")]
    pub probe_command: Option<String>,
    /// VMs: a TCP port of the guest that must accept a connection (the
    /// guest gets a private network that reaches nothing outside).
    #[arg(long, value_name = "PORT")]
    pub probe_port: Option<u16>,
    /// VMs: the accelerator (default: KVM when /dev/kvm can be used).
    #[arg(long, value_enum)]
    pub accel: Option<Accel>,
    /// Files: restore this share of the point's files, `10%` or `10`.
    #[arg(long, value_name = "PERCENT")]
    pub sample: Option<String>,
    /// Drills: the folder to restore into (a scratch folder is made in it
    /// and removed); default the system's temporary folder.
    #[arg(long, value_name = "DIR")]
    pub scratch: Option<PathBuf>,
    /// How much memory the verifications running at once may use, MiB.
    #[arg(long, default_value_t = 4096)]
    pub memory_budget_mib: u64,
    /// Keep these settings on each item, for the verifications its
    /// policy schedules.
    #[arg(long)]
    pub save: bool,
}

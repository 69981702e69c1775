//! The record of a job: what it does, its state and its progress, as the
//! vault keeps it (`crate::runtime::job` runs jobs; alerts describe them).

use boveda_vault::{PointId, RecordId};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};

/// Finds a value by its name, case-insensitively, or lists the names.
fn parse_name<T: Copy>(s: &str, all: &[T], name: fn(&T) -> &'static str, what: &str) -> Result<T> {
    all.iter().find(|v| name(v).eq_ignore_ascii_case(s)).copied().ok_or_else(|| {
        let names: Vec<_> = all.iter().map(name).collect();
        ServiceError::Invalid(format!("unknown {what} {s:?}: one of {}", names.join(", ")))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    ConfigureBackup,
    Backup,
    Restore,
    DisableBackup,
    DeleteBackupData,
    Undelete,
    Prune,
    Verify,
    /// A replication pass to a geo-redundant vault's secondary store.
    Replication,
    /// An item's first backup written to a staging folder for shipping.
    OfflineSeed,
    /// A key slot added or removed (a passphrase given or taken away).
    UpdateKeys,
    /// Data the store lost dropped from the index (`vault repair`).
    Repair,
    /// A registered host's contact with its server: recorded, failed, when
    /// the host falls silent (docs/FLEET.md).
    HostContact,
    /// An operation refused until the vault's guard approves it: the
    /// request made (docs/SECURITY.md).
    GuardRequest,
    /// The guard's approval of a request.
    GuardApproval,
    /// An approved operation that went through (the approval used).
    GuardUse,
    /// A point proven: a VM's booted in an isolated QEMU, a file or disk
    /// item's restored to scratch and compared (docs/VMS.md, OPERATIONS.md).
    VerifyPoint,
}

impl Operation {
    pub const ALL: [Operation; 17] = [
        Operation::ConfigureBackup,
        Operation::Backup,
        Operation::Restore,
        Operation::DisableBackup,
        Operation::DeleteBackupData,
        Operation::Undelete,
        Operation::Prune,
        Operation::Verify,
        Operation::Replication,
        Operation::OfflineSeed,
        Operation::UpdateKeys,
        Operation::Repair,
        Operation::HostContact,
        Operation::GuardRequest,
        Operation::GuardApproval,
        Operation::GuardUse,
        Operation::VerifyPoint,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Operation::ConfigureBackup => "ConfigureBackup",
            Operation::Backup => "Backup",
            Operation::Restore => "Restore",
            Operation::DisableBackup => "DisableBackup",
            Operation::DeleteBackupData => "DeleteBackupData",
            Operation::Undelete => "Undelete",
            Operation::Prune => "Prune",
            Operation::Verify => "Verify",
            Operation::Replication => "Replication",
            Operation::OfflineSeed => "OfflineSeed",
            Operation::UpdateKeys => "UpdateKeys",
            Operation::Repair => "Repair",
            Operation::HostContact => "HostContact",
            Operation::GuardRequest => "GuardRequest",
            Operation::GuardApproval => "GuardApproval",
            Operation::GuardUse => "GuardUse",
            Operation::VerifyPoint => "VerifyPoint",
        }
    }

    /// Parses an operation name, case-insensitively.
    ///
    /// # Errors
    /// `Invalid` listing the names.
    pub fn parse(s: &str) -> Result<Self> {
        parse_name(s, &Self::ALL, Self::as_str, "operation")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Waiting for a free slot: the server runs a few jobs per vault at
    /// once and queues the others, in the order they came.
    Queued,
    InProgress,
    Completed,
    CompletedWithWarnings,
    Failed,
    Cancelling,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::InProgress,
        JobState::Completed,
        JobState::CompletedWithWarnings,
        JobState::Failed,
        JobState::Cancelling,
        JobState::Cancelled,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Queued => "Queued",
            JobState::InProgress => "InProgress",
            JobState::Completed => "Completed",
            JobState::CompletedWithWarnings => "CompletedWithWarnings",
            JobState::Failed => "Failed",
            JobState::Cancelling => "Cancelling",
            JobState::Cancelled => "Cancelled",
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(self, JobState::Queued | JobState::InProgress | JobState::Cancelling)
    }

    /// Parses a state name, case-insensitively.
    ///
    /// # Errors
    /// `Invalid` listing the names.
    pub fn parse(s: &str) -> Result<Self> {
        parse_name(s, &Self::ALL, Self::as_str, "job status")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobProgress {
    pub phase: String,
    pub files: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// What the job expects to process, when it knows.
    pub bytes_total: Option<u64>,
    pub files_total: Option<u64>,
    /// Bytes of the files done so far, read or taken unchanged from the
    /// previous point (a backup's counterpart of `bytes_total`).
    #[serde(default)]
    pub bytes_done: u64,
    /// The totals are the previous point's (a file tree's backup cannot
    /// know its own before it has walked it); at the end, the real ones.
    #[serde(default)]
    pub totals_estimated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: RecordId,
    pub operation: Operation,
    pub item: Option<String>,
    pub item_id: Option<RecordId>,
    pub state: JobState,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
    pub progress: JobProgress,
    pub warnings: Vec<String>,
    pub error: Option<String>,
    /// What the job did, in a few lines ("deleted 3 expired points").
    pub details: Vec<String>,
    pub point: Option<PointId>,
    /// The policy slot of a scheduled backup.
    pub scheduled_for: Option<Timestamp>,
    pub host: String,
    pub pid: u32,
    /// Wall-clock time of the last heartbeat, and the interval promised.
    pub heartbeat: Timestamp,
    pub heartbeat_secs: f64,
}

impl Job {
    pub fn duration(&self) -> Option<SignedDuration> {
        self.end.map(|e| e.duration_since(self.start))
    }

    /// Whether the process running it stopped beating.
    pub fn is_stale(&self, wall_now: Timestamp) -> bool {
        let allowed = SignedDuration::from_secs_f64(self.heartbeat_secs * 3.0 + 5.0);
        self.state.is_running() && wall_now.duration_since(self.heartbeat) > allowed
    }

    /// The job as a reader should see it: a stale running job is `Failed`.
    pub(crate) fn settle(mut self, wall_now: Timestamp, stop_requested: bool) -> Self {
        if self.is_stale(wall_now) {
            self.state = JobState::Failed;
            self.error = Some(format!(
                "the process running it (pid {} on {}) stopped: no heartbeat since {}",
                self.pid, self.host, self.heartbeat
            ));
        } else if self.state == JobState::InProgress && stop_requested {
            self.state = JobState::Cancelling;
        }
        self
    }
}

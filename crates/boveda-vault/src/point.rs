//! Recovery point manifests: `points/<point id>`, sealed JSON. A point
//! becomes visible only when its manifest is written, after every pack,
//! index and tree it needs.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{ChunkId, PointId, RecordId};

/// How consistent a point's data is, in Azure Backup's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    AppConsistent,
    FileSystemConsistent,
    CrashConsistent,
}

impl Consistency {
    pub fn as_str(&self) -> &'static str {
        match self {
            Consistency::AppConsistent => "app-consistent",
            Consistency::FileSystemConsistent => "file-system-consistent",
            Consistency::CrashConsistent => "crash-consistent",
        }
    }
}

/// Totals of one backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointStats {
    pub files: u64,
    pub dirs: u64,
    pub other_nodes: u64,
    /// Bytes of file content the point holds (front-end size).
    pub bytes: u64,
    /// Bytes read from files that changed since the parent point.
    pub bytes_read: u64,
    /// Files whose content was reused from the parent without reading.
    pub files_unchanged: u64,
    /// Plaintext bytes of chunks new to the vault.
    pub bytes_new: u64,
    /// Bytes added to the store (compressed, encrypted, packed).
    pub bytes_stored: u64,
    pub chunks_new: u64,
    pub packs_written: u64,
    /// Of `bytes_new`, those that did not compress (stored at 97% or more
    /// of their size: encrypted or already compressed data).
    #[serde(default)]
    pub bytes_new_incompressible: u64,
    /// Files the parent point did not have at their path.
    #[serde(default)]
    pub files_added: u64,
    /// Files the parent point had at their path that were read again.
    #[serde(default)]
    pub files_changed: u64,
    /// Files the parent point had in a folder this point has, gone from it.
    #[serde(default)]
    pub files_removed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryPoint {
    pub id: PointId,
    pub item_id: RecordId,
    pub item_name: String,
    pub started: Timestamp,
    pub time: Timestamp,
    pub tree: ChunkId,
    pub parent: Option<PointId>,
    pub hostname: String,
    pub sources: Vec<String>,
    pub consistency: Consistency,
    /// The point is kept at least until then (ad-hoc points), if set.
    pub retain_until: Option<Timestamp>,
    /// The policy's slot a scheduled point was taken for; its retention
    /// rules (daily, weekly, monthly, yearly) are matched on this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_for: Option<Timestamp>,
    /// Which rule keeps the point, such as "ad-hoc".
    pub kept_by: String,
    pub stats: PointStats,
    pub warnings: Vec<String>,
    /// For a VM backed up while it ran: the dirty bitmap started in QEMU
    /// at this point's snapshot, which the next live backup reads the
    /// changes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_bitmap: Option<String>,
    /// For a VM backed up while it ran with a guest agent: how long the
    /// guest's file systems were frozen for the snapshot, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_ms: Option<u64>,
}

pub fn point_name(id: &PointId) -> String {
    format!("points/{}", id.to_hex())
}

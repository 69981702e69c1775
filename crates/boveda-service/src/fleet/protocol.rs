//! What a registered host and its server say to each other during a job
//! (JSON over HTTPS): a leaf both sides' modules use.

use boveda_engine::TarStats;
use boveda_vault::{ChunkId, PointStats, RecordId};
use serde::{Deserialize, Serialize};

/// How far a host's backup is, as it reports (counts so far).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HostProgress {
    pub phase: String,
    pub files: u64,
    pub bytes_read: u64,
}

/// What a host says it backed up: the point's root tree and its numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostClaim {
    pub tree: ChunkId,
    pub sources: Vec<String>,
    pub stats: PointStats,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// A running VM's live snapshot.
    #[serde(default)]
    pub live: Option<LiveClaim>,
}

/// What a live backup of a running VM adds to a host's point.
pub use crate::items::live_vm::LiveOutcome as LiveClaim;

/// What a host reports during its backup job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "report", rename_all = "kebab-case")]
pub enum HostReport {
    Progress(HostProgress),
    Done(HostClaim),
    /// A restore's end.
    Restored(Restored),
    Failed {
        error: String,
    },
    /// Waits again for the answer to `done` (see [`ReportReply::pending`]).
    Await,
}

/// A job the server started for this host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartedJob {
    pub job: RecordId,
    /// How the vault compresses and packs (a host seals as the vault would).
    pub compression_level: i32,
    pub pack_size: u64,
}

/// What the server answers a report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReportReply {
    /// The job was stopped on the server: stop working on it.
    #[serde(default)]
    pub cancel: bool,
    /// The point written (to a `done` report).
    #[serde(default)]
    pub point: Option<String>,
    /// The point is still being checked: ask again with `await`.
    #[serde(default)]
    pub pending: bool,
}

/// What a host reports at the end of a restore.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Restored {
    pub stats: TarStats,
    /// Entries it could not write, each with why.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// A host's ask to upload one pack of `size` bytes named `name`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadAsk {
    pub name: String,
    pub size: u64,
}

/// A grant to create one object straight in the vault's store: the `PUT`
/// to send (with the pack as its body). Its signature is the store's.
#[derive(Clone, Serialize, Deserialize)]
pub struct DirectGrant {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for DirectGrant {
    // the url carries the signature: never in a log
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DirectGrant {{ {} }}", self.url.split('?').next().unwrap_or_default())
    }
}

/// How a host is to upload one pack.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UploadWay {
    /// Straight to the store with this grant; none: through the server.
    #[serde(default)]
    pub grant: Option<DirectGrant>,
    /// Stored already (a retry whose answer was lost): nothing to send.
    #[serde(default)]
    pub stored: bool,
}

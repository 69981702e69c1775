//! A backup as a registered host runs it: the server starts the job and
//! says which chunks the vault holds of the host's; the host reads its
//! files (parents from its own cache), seals what is new for the vault
//! and uploads it (each pack straight to the store where the server
//! grants it, the rest through the server); it reports progress every couple of
//! seconds, and finally the point's root tree, which the server checks
//! before it writes the point.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use boveda_engine::{
    BackupDest, BackupProgress, DISK_NODE, DiskBackupOptions, DiskSource, FileBackupOptions, HostCache, backup_disk_to,
    backup_files_to,
};
use boveda_vault::{BlobWriter, ChunkId, PointStats, RecordId, WriterTarget};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServiceError};
use crate::fleet::client::{HostClient, UploadStore};
use crate::fleet::host_vm::{HostVm, last_bitmap, remember_bitmap};
use crate::fleet::identity::HostIdentity;
use crate::fleet::intake::{HostClaim, HostProgress, HostReport};
use crate::fleet::protocol::LiveClaim;
use crate::fleet::work::Assignment;
use crate::items::ItemSource;

/// How often a host reports while it backs up.
const REPORT_EVERY: Duration = Duration::from_secs(2);

/// What a host's backup made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostBackupOutcome {
    pub item: String,
    pub job: RecordId,
    pub point: String,
    pub stats: PointStats,
    pub warnings: Vec<String>,
    /// Bytes uploaded straight to the vault's store, with grants.
    #[serde(default)]
    pub bytes_direct: u64,
    /// Bytes uploaded through the server.
    #[serde(default)]
    pub bytes_through_server: u64,
}

/// Counts what the engine reports, for the host's progress reports.
struct Counting<'a> {
    files: AtomicU64,
    bytes_read: AtomicU64,
    inner: &'a dyn BackupProgress,
}

impl BackupProgress for Counting<'_> {
    fn file_started(&self, path: &Path) {
        self.inner.file_started(path);
    }
    fn file_done(&self, path: &Path, size: u64, reused: bool) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.inner.file_done(path, size, reused);
    }
    fn bytes_read(&self, n: u64) {
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
        self.inner.bytes_read(n);
    }
    fn warning(&self, message: &str) {
        self.inner.warning(message);
    }
}

/// Reports the backup's progress every [`REPORT_EVERY`] until `stop`
/// closes; sets `cancel` when the server stopped the job.
fn report_progress(
    client: &HostClient,
    job: &RecordId,
    counting: &Counting<'_>,
    cancel: &AtomicBool,
    stop: &crossbeam_channel::Receiver<()>,
) {
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stop.recv_timeout(REPORT_EVERY) {
        let p = HostProgress {
            phase: "backing up".into(),
            files: counting.files.load(Ordering::Relaxed),
            bytes_read: counting.bytes_read.load(Ordering::Relaxed),
        };
        // a report lost is made good by the next one; a job stopped (or
        // failed) on the server is given up
        match client.report(job, &HostReport::Progress(p)) {
            Ok(reply) if reply.cancel => cancel.store(true, Ordering::Relaxed),
            Err(e) if e.kind() == crate::error::ServiceErrorKind::Conflict => cancel.store(true, Ordering::Relaxed),
            _ => {}
        }
    }
}

/// The newest point's root tree this host wrote for an item, as its cache
/// remembers it (the cache checks the tree itself when it is read).
fn last_tree(cache: &Path, item: &RecordId) -> Option<ChunkId> {
    let text = std::fs::read_to_string(cache.join("items").join(item.to_hex())).ok()?;
    ChunkId::from_hex(text.trim())
}

fn remember_tree(cache: &Path, item: &RecordId, tree: &ChunkId) -> Result<()> {
    let dir = cache.join("items");
    std::fs::create_dir_all(&dir).map_err(|source| ServiceError::Io { path: dir.clone(), source })?;
    boveda_engine::drive_files::write_atomically(&dir.join(item.to_hex()), tree.to_hex().as_bytes())?;
    Ok(())
}

/// Backs up one of this host's items now, through its server.
///
/// # Errors
/// The server's refusal (unknown item, stopped protection, the point's
/// check), a source that cannot be read, a network error. The job on the
/// server ends Failed with the same reason.
pub fn backup_item(
    dir: &Path,
    identity: &HostIdentity,
    client: Arc<HostClient>,
    work: &Assignment,
    progress: &dyn BackupProgress,
) -> Result<HostBackupOutcome> {
    let items = client.items()?;
    let item = items
        .iter()
        .find(|i| i.name.eq_ignore_ascii_case(&work.item))
        .ok_or_else(|| ServiceError::NotFound(format!("host {} has no item named {:?}", identity.name, work.item)))?;
    let started = client.start_backup(work)?;
    let job = started.job;
    let uploads = Arc::new(UploadStore::new(client.clone(), job));
    let cache_dir = HostIdentity::cache_dir(dir);
    let run = || -> Result<(boveda_engine::FileBackupOutcome, Option<LiveClaim>)> {
        let known = client.known_chunks(&job)?;
        let cache = HostCache::open(&cache_dir, identity.keys.clone())?;
        let target = WriterTarget {
            store: uploads.clone(),
            compression_level: started.compression_level,
            pack_size: started.pack_size as usize,
            // as many packs at once as the server's own backup sends
            parallel: boveda_store::Store::capabilities(&*uploads).parallel_requests,
        };
        let session = identity.keys.new_session()?;
        let writer =
            BlobWriter::for_host(identity.keys.clone(), session, target, &known).with_tree_sink(cache.tree_sink());
        let chunker = || identity.keys.chunker();
        let dest = BackupDest { writer, chunker: &chunker, parents: &cache };
        let parent_tree = last_tree(&cache_dir, &item.id);
        let counting = Counting { files: AtomicU64::new(0), bytes_read: AtomicU64::new(0), inner: progress };
        let cancel = AtomicBool::new(false);
        let (finished, stop) = crossbeam_channel::bounded::<()>(0);
        std::thread::scope(|s| {
            s.spawn(|| report_progress(&client, &job, &counting, &cancel, &stop));
            let result = match &item.source {
                ItemSource::Files { paths, excludes } => {
                    let opts = FileBackupOptions {
                        paths: paths.clone(),
                        excludes: excludes.clone(),
                        parent_tree,
                        cancel: Some(&cancel),
                    };
                    backup_files_to(dest, &opts, &counting).map(|o| (o, None)).map_err(ServiceError::from)
                }
                ItemSource::Disk { path } => {
                    let opts = DiskBackupOptions {
                        disks: vec![(DISK_NODE.to_string(), DiskSource::Image(path.clone()))],
                        extra_files: vec![],
                        parent_tree,
                        cancel: Some(&cancel),
                    };
                    backup_disk_to(dest, &opts, &counting).map(|o| (o, None)).map_err(ServiceError::from)
                }
                ItemSource::Vm { domain_xml, qmp, guest_agent, .. } => {
                    let vm =
                        HostVm { definition: domain_xml, qmp: qmp.as_deref(), guest_agent: guest_agent.as_deref() };
                    let previous = last_bitmap(&cache_dir, &item.id);
                    vm.backup(dest, previous.as_deref(), parent_tree, &cancel, &counting)
                }
            };
            drop(finished);
            result
        })
    };
    let (outcome, live) = match run() {
        Ok(o) => o,
        Err(e) => {
            // the server ends the job Failed with this reason (or, if this
            // report is lost too, when the host falls silent)
            let _ = client.report(&job, &HostReport::Failed { error: e.to_string() });
            return Err(e);
        }
    };
    let sources = match &item.source {
        ItemSource::Files { paths, .. } => paths.iter().map(|p| p.display().to_string()).collect(),
        ItemSource::Disk { path } => vec![path.display().to_string()],
        ItemSource::Vm { domain_xml, .. } => vec![domain_xml.display().to_string()],
    };
    let bitmap = live.as_ref().map(|l| l.bitmap.clone());
    let claim = HostClaim {
        tree: outcome.tree,
        sources,
        stats: outcome.stats.clone(),
        warnings: outcome.warnings.clone(),
        live,
    };
    let mut reply = client.report(&job, &HostReport::Done(claim))?;
    while reply.pending {
        reply = client.report(&job, &HostReport::Await)?;
    }
    remember_tree(&cache_dir, &item.id, &outcome.tree)?;
    if matches!(item.source, ItemSource::Vm { .. }) {
        remember_bitmap(&cache_dir, &item.id, bitmap.as_deref())?;
    }
    Ok(HostBackupOutcome {
        item: item.name.clone(),
        job,
        point: reply.point.unwrap_or_default(),
        stats: outcome.stats,
        warnings: outcome.warnings,
        bytes_direct: uploads.direct.load(Ordering::Relaxed),
        bytes_through_server: uploads.through_server.load(Ordering::Relaxed),
    })
}

//! The live side of a running job ([`JobCtx`]): its progress counters,
//! its phase and its cancel flag, fed by the engine's progress callbacks
//! and read by the job's heartbeat.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use boveda_engine::{BackupProgress, RestoreProgress};

use crate::model::job_record::JobProgress;

/// The live side of a running job: its progress counters and cancel flag.
/// Implements the engine's progress traits, forwarding to an inner
/// observer (a progress bar).
pub struct JobCtx<'a> {
    pub cancel: AtomicBool,
    files: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    bytes_total: AtomicU64,
    files_total: AtomicU64,
    bytes_done: AtomicU64,
    estimated: AtomicBool,
    phase: Mutex<String>,
    backup_inner: Option<&'a dyn BackupProgress>,
    restore_inner: Option<&'a dyn RestoreProgress>,
}

impl<'a> JobCtx<'a> {
    pub(crate) fn new(
        backup_inner: Option<&'a dyn BackupProgress>,
        restore_inner: Option<&'a dyn RestoreProgress>,
    ) -> Self {
        JobCtx {
            cancel: AtomicBool::new(false),
            files: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            bytes_total: AtomicU64::new(u64::MAX),
            files_total: AtomicU64::new(u64::MAX),
            bytes_done: AtomicU64::new(0),
            estimated: AtomicBool::new(false),
            phase: Mutex::new(String::new()),
            backup_inner,
            restore_inner,
        }
    }

    pub fn set_phase(&self, phase: &str) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase.to_string();
        }
    }

    /// Totals taken from the item's previous point, until the backup
    /// knows better.
    pub fn estimate(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
        self.estimated.store(true, Ordering::Relaxed);
    }

    /// A backup's real totals, from its point.
    pub fn finished_backup(&self, stats: &boveda_vault::PointStats) {
        self.files.store(stats.files, Ordering::Relaxed);
        self.files_total.store(stats.files, Ordering::Relaxed);
        self.bytes_done.store(stats.bytes, Ordering::Relaxed);
        self.bytes_total.store(stats.bytes, Ordering::Relaxed);
        self.bytes_written.store(stats.bytes_stored, Ordering::Relaxed);
        self.estimated.store(false, Ordering::Relaxed);
    }

    /// A restore that completed restored every file it planned.
    pub(crate) fn finished_restore(&self) {
        let total = self.files_total.load(Ordering::Relaxed);
        if total != u64::MAX {
            self.files.store(total, Ordering::Relaxed);
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> JobProgress {
        let opt = |v: u64| (v != u64::MAX).then_some(v);
        JobProgress {
            phase: self.phase.lock().map(|p| p.clone()).unwrap_or_default(),
            files: self.files.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            bytes_total: opt(self.bytes_total.load(Ordering::Relaxed)),
            files_total: opt(self.files_total.load(Ordering::Relaxed)),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            totals_estimated: self.estimated.load(Ordering::Relaxed),
        }
    }
}

impl BackupProgress for JobCtx<'_> {
    fn expected(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
        self.estimated.store(false, Ordering::Relaxed);
        if let Some(i) = self.backup_inner {
            i.expected(files, bytes);
        }
    }
    fn file_started(&self, path: &std::path::Path) {
        if let Some(i) = self.backup_inner {
            i.file_started(path);
        }
    }
    fn file_done(&self, path: &std::path::Path, size: u64, reused: bool) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes_done.fetch_add(size, Ordering::Relaxed);
        if let Some(i) = self.backup_inner {
            i.file_done(path, size, reused);
        }
    }
    fn bytes_read(&self, n: u64) {
        self.bytes_read.fetch_add(n, Ordering::Relaxed);
        if let Some(i) = self.backup_inner {
            i.bytes_read(n);
        }
    }
    fn warning(&self, message: &str) {
        if let Some(i) = self.backup_inner {
            i.warning(message);
        }
    }
}

impl RestoreProgress for JobCtx<'_> {
    fn planned(&self, files: u64, bytes: u64) {
        self.files_total.store(files, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
        if let Some(i) = self.restore_inner {
            i.planned(files, bytes);
        }
    }
    fn bytes_written(&self, n: u64) {
        self.bytes_written.fetch_add(n, Ordering::Relaxed);
        if let Some(i) = self.restore_inner {
            i.bytes_written(n);
        }
    }
}

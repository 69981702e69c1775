//! The replicating layer: the primary store of a geo-redundant vault as
//! the vault's writers see it.
//!
//! - **Pending markers.** Before the first write or deletion that must
//!   reach the secondary, the layer creates a marker object under
//!   `replication/pending/` (a folder that is itself never replicated),
//!   named after its writer. A marker says "a pass is due": whichever
//!   process next opens the vault sees it and runs the pass, so a write the
//!   primary accepted is replicated even when its writer was killed before
//!   its own pass. Markers only say *that* a pass is due; *what* to copy is
//!   always the difference of the two stores' listings (see
//!   [`Replicator`]), so nothing a crash interrupts is ever lost.
//! - **Eager copies.** Objects of the eager folder (the data packs, the bulk
//!   of every backup) are handed, as they are written, to background
//!   copiers that put them on the secondary while the backup goes on. The
//!   hand-over never waits: when the copiers are busy the object is left
//!   to the pass. Only data is copied eagerly: what refers to data (index
//!   objects, manifests) reaches the secondary only through a pass, after
//!   the data it refers to.
//! - **Finishing.** [`ReplicatingStore::finish`] waits for the copiers,
//!   runs a pass and, when it succeeded, removes the markers this process
//!   made before the pass began and those whose writer is gone.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crate::{AbandonedUpload, Capabilities, ObjectInfo, PassReport, PutMode, Replicator, Store, StoreError};

/// The folder of pending markers (never replicated).
pub const PENDING: &str = "replication/pending";

/// A marker of another host older than this is taken for one whose writer
/// is gone (its writer's own pass, if it still runs, is unaffected).
const ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Markers and eager copies for one process's writes to one vault.
pub struct ReplicatingStore {
    primary: Arc<dyn Store>,
    secondary: Arc<dyn Store>,
    replicator: Replicator,
    /// What this process writes that a pass must carry: objects of these
    /// top-level folders (and `config`).
    replicated: Vec<String>,
    eager: Option<String>,
    host: String,
    /// `<host>~<pid>~<random>`: this process's markers start with it.
    writer: String,
    markers: Mutex<Markers>,
    /// Held shared by every write from its marking to its end, and
    /// exclusively by `finish` while it takes the markers: no write is in
    /// flight under a marker `finish` is about to remove.
    writes: RwLock<()>,
    /// Set when a marker of another writer was seen: a pass is due.
    foreign_pending: AtomicBool,
    copier: Copier,
}

#[derive(Default)]
struct Markers {
    /// The marker that covers writes from now on, once one was made.
    current: Option<String>,
    /// Markers of this process still in the store.
    owned: Vec<String>,
    generation: u64,
}

/// A marker's name and when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMarker {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub since: Option<SystemTime>,
}

/// A marker's name part for a host: letters, digits, `-` and `.` kept.
fn marker_host(host: &str) -> String {
    let host: String =
        host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' }).collect();
    if host.is_empty() || host.starts_with('.') { format!("h{host}") } else { host }
}

/// Leaves a pending marker for a writer that does not go through a
/// [`ReplicatingStore`] (one that cannot open the vault, such as the
/// import of an offline seed): the next process that opens the vault
/// replicates what it wrote. Make it before writing.
///
/// # Errors
/// A store error.
pub fn mark_pending(store: &dyn Store, host: &str) -> Result<String, StoreError> {
    let mut raw = [0u8; 8];
    let _ = getrandom::fill(&mut raw);
    let name = format!("{PENDING}/{}~{}~{:016x}~1", marker_host(host), std::process::id(), u64::from_le_bytes(raw));
    store.put(&name, b"", PutMode::Create)?;
    Ok(name)
}

impl ReplicatingStore {
    /// `folders` as for [`Replicator::new`]; objects of `eager` (a folder)
    /// are copied in the background as they are written; `host` names
    /// this machine in the markers.
    pub fn new(
        primary: Arc<dyn Store>,
        secondary: Arc<dyn Store>,
        folders: &[&str],
        eager: Option<&str>,
        parallel: usize,
        host: &str,
    ) -> Self {
        let host = marker_host(host);
        let mut raw = [0u8; 8];
        // a failed fill leaves zeros: the pid still tells writers apart
        let _ = getrandom::fill(&mut raw);
        let writer = format!("{host}~{}~{:016x}", std::process::id(), u64::from_le_bytes(raw));
        let mut replicated: Vec<String> = folders.iter().map(|f| (*f).to_string()).collect();
        replicated.push("config".into());
        Self {
            replicator: Replicator::new(primary.clone(), secondary.clone(), folders, parallel),
            primary,
            copier: Copier::new(secondary.clone(), parallel.clamp(1, 4)),
            secondary,
            replicated,
            eager: eager.map(|e| format!("{e}/")),
            host,
            writer,
            markers: Mutex::default(),
            writes: RwLock::new(()),
            foreign_pending: AtomicBool::new(false),
        }
    }

    pub fn primary(&self) -> &Arc<dyn Store> {
        &self.primary
    }

    pub fn secondary(&self) -> &Arc<dyn Store> {
        &self.secondary
    }

    pub fn replicator(&self) -> &Replicator {
        &self.replicator
    }

    /// Every pending marker in the store, oldest first.
    ///
    /// # Errors
    /// A store error of the primary.
    pub fn pending(&self) -> Result<Vec<PendingMarker>, StoreError> {
        let mut markers: Vec<PendingMarker> = self
            .primary
            .list(PENDING)?
            .into_iter()
            .map(|o| {
                let base = o.name.rsplit('/').next().unwrap_or_default();
                let mut parts = base.split('~');
                let host = parts.next().unwrap_or_default().to_string();
                let pid = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
                PendingMarker { name: o.name, host, pid, since: o.modified }
            })
            .collect();
        markers.sort_by_key(|m| m.since);
        Ok(markers)
    }

    /// Looks for markers of other writers (a process that opens the vault
    /// calls it once): true when a pass is due.
    ///
    /// # Errors
    /// A store error of the primary.
    pub fn look_for_pending(&self) -> Result<bool, StoreError> {
        let foreign = self.pending()?.iter().any(|m| !self.is_own(&m.name));
        if foreign {
            self.foreign_pending.store(true, Ordering::Relaxed);
        }
        Ok(foreign)
    }

    /// Whether this process wrote since its last pass, or saw that another
    /// writer's pass is due.
    pub fn is_due(&self) -> bool {
        self.foreign_pending.load(Ordering::Relaxed) || self.markers.lock().map_or(true, |m| !m.owned.is_empty())
    }

    fn is_own(&self, marker: &str) -> bool {
        marker.rsplit('/').next().is_some_and(|base| base.starts_with(&format!("{}~", self.writer)))
    }

    /// A marker whose writer cannot write any more: a process of this host
    /// that is gone, or a marker of another host untouched for a day.
    fn is_abandoned(&self, m: &PendingMarker, now: SystemTime) -> bool {
        if m.host == self.host {
            m.pid != std::process::id() && !std::path::Path::new(&format!("/proc/{}", m.pid)).exists()
        } else {
            m.since.and_then(|t| now.duration_since(t).ok()).is_some_and(|age| age > ABANDONED_AFTER)
        }
    }

    /// Makes sure a marker covers a write of `name` about to happen.
    fn mark(&self, name: &str) -> Result<(), StoreError> {
        let top = name.split('/').next().unwrap_or_default();
        if !self.replicated.iter().any(|f| f == top) {
            return Ok(());
        }
        let Ok(mut markers) = self.markers.lock() else {
            return Err(StoreError::new(crate::StoreErrorKind::Other, "mark", name)
                .with_detail("a writer panicked while holding the replication markers"));
        };
        if markers.current.is_some() {
            return Ok(());
        }
        markers.generation += 1;
        let marker = format!("{PENDING}/{}~{}", self.writer, markers.generation);
        self.primary.put(&marker, self.writer.as_bytes(), PutMode::Create)?;
        markers.owned.push(marker.clone());
        markers.current = Some(marker);
        Ok(())
    }

    /// Waits for the eager copies, runs a pass and, when it succeeded,
    /// removes this process's markers made before it began and the
    /// abandoned markers of others. A write during the pass makes a new
    /// marker, so it stays due.
    ///
    /// # Errors
    /// The pass's first store error (the markers stay: the pass is still
    /// due).
    pub fn finish(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<PassReport, StoreError> {
        let owned = {
            let _no_write_in_flight = self.writes.write();
            self.copier.wait_idle();
            match self.markers.lock() {
                Ok(mut m) => {
                    m.current = None;
                    std::mem::take(&mut m.owned)
                }
                Err(_) => Vec::new(),
            }
        };
        let now = SystemTime::now();
        let others: Vec<PendingMarker> = self.pending()?.into_iter().filter(|m| !self.is_own(&m.name)).collect();
        let result = self.replicator.pass(progress).and_then(|report| {
            for name in &owned {
                self.primary.delete(name)?;
            }
            for m in others.iter().filter(|m| self.is_abandoned(m, now)) {
                self.primary.delete(&m.name)?;
            }
            Ok(report)
        });
        match result {
            Ok(report) => {
                if others.iter().all(|m| self.is_abandoned(m, now)) {
                    self.foreign_pending.store(false, Ordering::Relaxed);
                }
                Ok(report)
            }
            Err(e) => {
                if let Ok(mut m) = self.markers.lock() {
                    let mut kept = owned;
                    kept.append(&mut m.owned);
                    m.owned = kept;
                }
                Err(e)
            }
        }
    }

    /// Eager copies made and given up (left to the pass) so far.
    pub fn eager_copies(&self) -> (u64, u64) {
        (self.copier.copied.load(Ordering::Relaxed), self.copier.skipped.load(Ordering::Relaxed))
    }
}

impl Store for ReplicatingStore {
    fn location(&self) -> String {
        self.primary.location()
    }

    // locks are the primary's (a secondary in another locked bucket
    // locks its copies when the pass that carries them runs)
    fn lock_object(&self, name: &str, lock: &crate::store::ObjectLock) -> Result<bool, StoreError> {
        self.primary.lock_object(name, lock)
    }

    fn object_lock(&self, name: &str) -> Result<Option<crate::store::ObjectLock>, StoreError> {
        self.primary.object_lock(name)
    }

    fn can_lock(&self) -> Result<bool, StoreError> {
        self.primary.can_lock()
    }

    fn delete_version(&self, name: &str) -> Result<(), StoreError> {
        self.primary.delete_version(name)
    }

    fn capabilities(&self) -> Capabilities {
        self.primary.capabilities()
    }

    fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        self.primary.get(name)
    }

    fn get_range(&self, name: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        self.primary.get_range(name, offset, len)
    }

    fn get_range_into(&self, name: &str, offset: u64, len: u64, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        self.primary.get_range_into(name, offset, len, buf)
    }

    fn put(&self, name: &str, data: &[u8], mode: PutMode) -> Result<ObjectInfo, StoreError> {
        let _writing = self.writes.read();
        self.mark(name)?;
        let info = self.primary.put(name, data, mode)?;
        if self.eager.as_deref().is_some_and(|e| name.starts_with(e)) {
            self.copier.offer(name, data);
        }
        Ok(info)
    }

    fn list_pages(
        &self,
        prefix: &str,
        visit: &mut dyn FnMut(Vec<ObjectInfo>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.primary.list_pages(prefix, visit)
    }

    fn stat(&self, name: &str) -> Result<ObjectInfo, StoreError> {
        self.primary.stat(name)
    }

    fn delete(&self, name: &str) -> Result<(), StoreError> {
        let _writing = self.writes.read();
        self.mark(name)?;
        self.primary.delete(name)
    }

    fn abandoned_uploads(&self, before: SystemTime) -> Result<Vec<AbandonedUpload>, StoreError> {
        self.primary.abandoned_uploads(before)
    }

    fn discard_upload(&self, upload: &AbandonedUpload) -> Result<(), StoreError> {
        self.primary.discard_upload(upload)
    }
}

/// Puts the calling thread behind every other: it runs on CPU time and
/// disk time nobody else wants (SCHED_IDLE, the idle I/O class), so the
/// backup it copies for keeps its pace. On Linux both apply to the calling
/// thread alone. Where refused, the thread runs as it is.
fn background_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads the parameter struct it is given; pid
    // 0 is the calling thread.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_CLASS_IDLE: libc::c_long = 3;
    const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
    // SAFETY: ioprio_set takes three integers; who 0 is the calling thread.
    let _ = unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            0 as libc::c_long,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        )
    };
}

/// An object handed to the copiers: its name and bytes.
type Handed = (String, Vec<u8>);

/// Background copiers fed without waiting: an object offered while all
/// are busy is left to the pass.
struct Copier {
    secondary: Arc<dyn Store>,
    threads: usize,
    sender: Mutex<Option<SyncSender<Handed>>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// Objects handed over and not yet put.
    busy: Arc<(Mutex<usize>, Condvar)>,
    copied: Arc<AtomicU64>,
    skipped: Arc<AtomicU64>,
}

impl Copier {
    fn new(secondary: Arc<dyn Store>, threads: usize) -> Self {
        Self {
            secondary,
            threads,
            sender: Mutex::new(None),
            handles: Mutex::new(Vec::new()),
            busy: Arc::new((Mutex::new(0), Condvar::new())),
            copied: Arc::new(AtomicU64::new(0)),
            skipped: Arc::new(AtomicU64::new(0)),
        }
    }

    fn offer(&self, name: &str, data: &[u8]) {
        let Ok(mut sender) = self.sender.lock() else { return };
        if sender.is_none() {
            // started on the first offer: a command that writes no data
            // starts no thread
            let (tx, rx) = std::sync::mpsc::sync_channel(self.threads);
            let rx = Arc::new(Mutex::new(rx));
            if let Ok(mut handles) = self.handles.lock() {
                for _ in 0..self.threads {
                    handles.push(self.spawn(rx.clone()));
                }
            }
            *sender = Some(tx);
        }
        let Some(tx) = sender.as_ref() else { return };
        if let Ok(mut n) = self.busy.0.lock() {
            *n += 1;
        }
        match tx.try_send((name.to_string(), data.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                self.done_one();
            }
        }
    }

    fn spawn(&self, rx: Arc<Mutex<Receiver<Handed>>>) -> JoinHandle<()> {
        let (secondary, busy, copied, skipped) =
            (self.secondary.clone(), self.busy.clone(), self.copied.clone(), self.skipped.clone());
        std::thread::spawn(move || {
            background_priority();
            loop {
                let next = match rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((name, data)) = next else { return };
                // a failure is only lag: the pass copies what is missing
                match secondary.put(&name, &data, PutMode::Create) {
                    Ok(_) => copied.fetch_add(1, Ordering::Relaxed),
                    Err(e) if e.kind() == crate::StoreErrorKind::AlreadyExists => 0,
                    Err(_) => skipped.fetch_add(1, Ordering::Relaxed),
                };
                if let Ok(mut n) = busy.0.lock() {
                    *n = n.saturating_sub(1);
                    busy.1.notify_all();
                }
            }
        })
    }

    fn done_one(&self) {
        if let Ok(mut n) = self.busy.0.lock() {
            *n = n.saturating_sub(1);
            self.busy.1.notify_all();
        }
    }

    fn wait_idle(&self) {
        let (lock, cv) = &*self.busy;
        if let Ok(n) = lock.lock() {
            drop(cv.wait_while(n, |n| *n > 0));
        }
    }
}

impl Drop for Copier {
    /// Lets the copiers finish what they were handed, then stops them.
    fn drop(&mut self) {
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
        if let Ok(mut handles) = self.handles.lock() {
            for h in handles.drain(..) {
                let _ = h.join();
            }
        }
    }
}

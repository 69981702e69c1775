//! Replication of a primary store to a secondary one (geo-redundancy).
//!
//! What is still to copy is never written down: it is what the primary
//! lists and the secondary does not, and what is still to delete is what
//! the secondary lists and the primary does not. So nothing a crash or a
//! kill can interrupt is ever lost, and any process that opens the vault
//! can continue a pass another began. Every object is immutable but the
//! folders left out (the prune lease), so a name present on both sides is
//! the same object.
//!
//! A pass runs in the order the vault gives its folders, data before what
//! refers to it (packs, then index objects, catalog, point manifests):
//! it *lists* the folders last to first and *copies* them first to last,
//! so a manifest copied was listed before the packs were, and every pack
//! it refers to, written before it, is in the later listing of packs.
//! Deletions run last to first (manifests before the packs they use), only
//! for objects the primary no longer has (listed on the secondary first,
//! then missing from the primary's later listing, then checked once more),
//! and a pass stops at the first failed deletion: the secondary never holds
//! less than the primary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use crate::{ObjectInfo, PutMode, Store, StoreError, StoreErrorKind};

/// How far a secondary is behind its primary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationLag {
    /// Objects on the primary not yet on the secondary, and their bytes.
    pub objects: u64,
    pub bytes: u64,
    /// When the oldest of them was written on the primary, if known.
    pub oldest: Option<SystemTime>,
    /// Objects gone from the primary, still to delete on the secondary.
    pub to_delete: u64,
}

impl ReplicationLag {
    pub fn is_caught_up(&self) -> bool {
        self.objects == 0 && self.to_delete == 0
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    pub copied: u64,
    pub copied_bytes: u64,
    pub deleted: u64,
}

/// Copies a primary's objects to a secondary, folder by folder.
pub struct Replicator {
    primary: Arc<dyn Store>,
    secondary: Arc<dyn Store>,
    /// Folders in dependency order: each may refer to those before it.
    folders: Vec<String>,
    parallel: usize,
}

/// One folder's difference: to copy (on the primary only), to delete (on
/// the secondary only).
struct FolderDiff {
    copy: Vec<ObjectInfo>,
    delete: Vec<String>,
}

impl Replicator {
    /// `folders` in dependency order (what may be referred to first);
    /// objects outside them are never copied. `parallel` copies at once.
    pub fn new(primary: Arc<dyn Store>, secondary: Arc<dyn Store>, folders: &[&str], parallel: usize) -> Self {
        Self {
            primary,
            secondary,
            folders: folders.iter().map(|f| (*f).to_string()).collect(),
            parallel: parallel.max(1),
        }
    }

    /// Lists both sides, last folder first (see the module's notes).
    fn diff(&self) -> Result<Vec<FolderDiff>, StoreError> {
        let mut diffs = Vec::with_capacity(self.folders.len());
        for folder in self.folders.iter().rev() {
            // the secondary first: an object it has that the primary, listed
            // after, lacks was deleted from the primary (or is checked again)
            let secondary = self.secondary.list(folder)?;
            let primary = self.primary.list(folder)?;
            // both listings are in ascending name order: merge them
            let (mut copy, mut delete) = (Vec::new(), Vec::new());
            let mut s = secondary.into_iter().peekable();
            for p in primary {
                while let Some(extra) = s.next_if(|o| o.name < p.name) {
                    delete.push(extra.name);
                }
                if s.next_if(|o| o.name == p.name).is_none() {
                    copy.push(p);
                }
            }
            delete.extend(s.map(|o| o.name));
            diffs.push(FolderDiff { copy, delete });
        }
        diffs.reverse();
        Ok(diffs)
    }

    /// How far behind the secondary is now (two listings of each folder).
    ///
    /// # Errors
    /// A store error of either side.
    pub fn lag(&self) -> Result<ReplicationLag, StoreError> {
        let mut lag = ReplicationLag::default();
        for d in self.diff()? {
            lag.objects += d.copy.len() as u64;
            lag.bytes += d.copy.iter().map(|o| o.size).sum::<u64>();
            lag.to_delete += d.delete.len() as u64;
            for o in &d.copy {
                if let Some(m) = o.modified {
                    lag.oldest = Some(lag.oldest.map_or(m, |t: SystemTime| t.min(m)));
                }
            }
        }
        Ok(lag)
    }

    /// Copies one object (create-only on the secondary: one already there
    /// is the same object).
    ///
    /// # Errors
    /// A store error of either side; `NotFound` when the primary no longer
    /// has it.
    pub fn copy(&self, name: &str) -> Result<u64, StoreError> {
        let data = self.primary.get(name)?;
        match self.secondary.put(name, &data, PutMode::Create) {
            Ok(_) => Ok(data.len() as u64),
            Err(e) if e.kind() == StoreErrorKind::AlreadyExists => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// One pass: copies what the secondary lacks, in parallel, folder by
    /// folder in dependency order; then deletes what the primary no longer
    /// has, last folder first. `progress` hears of every object copied
    /// (its size). An object the primary deleted meanwhile is skipped.
    ///
    /// # Errors
    /// The first store error; what was copied stays copied, and the next
    /// pass continues from there.
    pub fn pass(&self, progress: &(dyn Fn(u64) + Sync)) -> Result<PassReport, StoreError> {
        let diffs = self.diff()?;
        let copied = AtomicU64::new(0);
        let copied_bytes = AtomicU64::new(0);
        for d in &diffs {
            let next = AtomicUsize::new(0);
            let failed: std::sync::Mutex<Option<StoreError>> = std::sync::Mutex::new(None);
            std::thread::scope(|scope| {
                for _ in 0..self.parallel.min(d.copy.len()) {
                    scope.spawn(|| {
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(o) = d.copy.get(i) else { return };
                            if failed.lock().map_or(true, |f| f.is_some()) {
                                return;
                            }
                            match self.copy(&o.name) {
                                Ok(n) => {
                                    copied.fetch_add(1, Ordering::Relaxed);
                                    copied_bytes.fetch_add(n, Ordering::Relaxed);
                                    progress(n);
                                }
                                Err(e) if e.kind() == StoreErrorKind::NotFound => {}
                                Err(e) => {
                                    if let Ok(mut f) = failed.lock() {
                                        f.get_or_insert(e);
                                    }
                                    return;
                                }
                            }
                        }
                    });
                }
            });
            if let Some(e) = failed.into_inner().ok().flatten() {
                return Err(e);
            }
        }
        let mut deleted = 0;
        for d in diffs.iter().rev() {
            for name in &d.delete {
                // only what the primary really no longer has
                match self.primary.stat(name) {
                    Err(e) if e.kind() == StoreErrorKind::NotFound => {}
                    Ok(_) => continue,
                    Err(e) => return Err(e),
                }
                self.secondary.delete(name)?;
                deleted += 1;
            }
        }
        Ok(PassReport { copied: copied.into_inner(), copied_bytes: copied_bytes.into_inner(), deleted })
    }
}

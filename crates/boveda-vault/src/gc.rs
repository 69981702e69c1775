//! Reclaiming space while others write: the two-phase pack collection that
//! prune runs (docs/FORMAT.md, "Concurrency and reclaiming space").
//!
//! 1. **Mark.** Packs that no remaining recovery point uses are listed in a
//!    deletion record (`catalog/deletions/<id>`) with the time of marking.
//!    From then on backups leave these packs out of their deduplication
//!    index, storing such chunks again if they meet them.
//! 2. **Sweep**, at a later prune, once the safety margin has passed since
//!    the mark *and* no writer that started before the mark is still
//!    running: each marked pack that the points of that moment still do not
//!    need is deleted (its index object first, then the pack). A marked pack
//!    a point has come to need (a backup that loaded its index before the
//!    mark) is kept and simply unmarked.

use std::collections::{HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::blob::BlobKind;
use crate::error::Result;
use crate::index::{IndexObject, IndexPack};
use crate::pack::{pack_name, parse_pack_name};
use crate::point::RecoveryPoint;
use crate::tree::{NodeKind, Piece};
use crate::vault::{Removal, Vault};
use crate::{ChunkId, PackId, RecordId};

const DELETIONS: &str = "deletions";

/// The default time between marking a pack and deleting it: longer than
/// any backup is expected to run with an index it loaded before the mark.
pub const DEFAULT_SAFETY_MARGIN: SignedDuration = SignedDuration::from_hours(24);

/// However short the margin, a sweep waits for writers that started less
/// than this after a mark: for clocks that differ between machines, and for
/// the moment a mark takes to be seen by a backup that is starting.
pub const MIN_WRITER_SLACK: SignedDuration = SignedDuration::from_mins(10);

/// Index objects with fewer entries than this are small: a backup writes
/// one per pack.
pub const SMALL_INDEX_ENTRIES: usize = 20_000;
/// Prune merges small index objects once there are this many...
pub const CONSOLIDATE_AT: usize = 16;
/// ...into objects of about this many entries (some 9 MB sealed).
pub const CONSOLIDATED_ENTRIES: usize = 200_000;

/// Writes an index object listing `packs` (create-only; the name is the
/// content's hash, so one already there holds the same).
///
/// # Errors
/// A store error.
pub fn write_index(vault: &Vault, packs: Vec<IndexPack>) -> Result<String> {
    let (name, bytes) = IndexObject { packs }.seal(vault.key())?;
    match vault.store().put_new(&name, &bytes) {
        Err(e) if e.kind() == boveda_store::StoreErrorKind::AlreadyExists => Ok(name),
        other => other.map(|_| name).map_err(Into::into),
    }
}

/// Data the store no longer has, as the check found it: a pack gone (or
/// of another size than its index says), or chunks in it that do not
/// decode. `vault repair` and prune drop these from the index, so the next
/// backup stores those chunks again from its source. A pack that could not
/// be read for another reason (the store did not answer) is not counted:
/// a passing fault must not make boveda forget data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostPack {
    pub pack: PackId,
    pub kind: BlobKind,
    /// The chunks lost; `None`: all of them (the pack itself is gone).
    pub chunks: Option<Vec<ChunkId>>,
}

/// Drops what the store lost from the index: packs that are gone (or of
/// the wrong size) and chunks that do not decode. Each index object that
/// lists one is replaced by one without it (written before the old one is
/// deleted, so every other pack stays indexed). A backup then finds those
/// chunks missing, reads the files that held them again and stores them
/// anew, so no later point refers to data the store does not have. Returns
/// how many chunk entries were dropped.
///
/// # Errors
/// A store error; a crash midway leaves an index that lists a pack twice
/// (or still lists a lost one), which the next repair or prune finishes.
pub fn forget_lost(vault: &Vault, lost: &[LostPack]) -> Result<usize> {
    if lost.is_empty() {
        return Ok(0);
    }
    let by_pack: HashMap<PackId, &LostPack> = lost.iter().map(|l| (l.pack, l)).collect();
    let mut dropped = 0;
    for (name, obj) in vault.index_objects()? {
        if !obj.packs.iter().any(|p| by_pack.contains_key(&p.id)) {
            continue;
        }
        let mut keep = Vec::with_capacity(obj.packs.len());
        for mut p in obj.packs {
            match by_pack.get(&p.id).map(|l| l.chunks.as_ref()) {
                None => keep.push(p),
                Some(None) => dropped += p.entries.len(),
                Some(Some(bad)) => {
                    let before = p.entries.len();
                    p.entries.retain(|e| !bad.contains(&e.id));
                    dropped += before - p.entries.len();
                    if !p.entries.is_empty() {
                        keep.push(p);
                    }
                }
            }
        }
        if !keep.is_empty() {
            write_index(vault, keep)?;
        }
        vault.remove(&name, Removal::IndexObject)?;
    }
    Ok(dropped)
}

/// Packs the index lists that the store does not have (a listing of
/// `packs/` against the index objects): what prune drops from the index.
///
/// # Errors
/// A store error.
pub fn missing_packs(vault: &Vault) -> Result<Vec<LostPack>> {
    // the index first: a backup writes a pack before the index object that
    // lists it, so every pack indexed here is listed below unless lost
    let indexed = vault.index_objects()?;
    let present: HashSet<PackId> = vault
        .store()
        .list("packs")?
        .iter()
        .filter_map(|o| crate::pack::parse_pack_name(&o.name))
        .map(|(_, id)| id)
        .collect();
    let mut lost = HashMap::new();
    for (_, obj) in indexed {
        for p in obj.packs {
            if !present.contains(&p.id) {
                lost.insert(p.id, LostPack { pack: p.id, kind: p.kind, chunks: None });
            }
        }
    }
    Ok(lost.into_values().collect())
}

/// Merges small index objects into few big ones, so that reading the
/// index costs requests in proportion to the vault's size, not to how
/// many backups made it. Runs under the prune lease: no other process
/// deletes index objects meanwhile, and readers that find a small object
/// gone list again and find the merged one. Returns how many small
/// objects were merged.
///
/// # Errors
/// A store error; a crash midway leaves packs listed twice, which readers
/// and the next prune take as they come.
pub fn consolidate_index(vault: &Vault) -> Result<usize> {
    let small: Vec<(String, IndexObject)> = vault
        .index_objects()?
        .into_iter()
        .filter(|(_, o)| o.packs.iter().map(|p| p.entries.len()).sum::<usize>() < SMALL_INDEX_ENTRIES)
        .collect();
    if small.len() < CONSOLIDATE_AT {
        return Ok(0);
    }
    let mut merged = 0;
    let mut batch: Vec<(String, IndexObject)> = Vec::new();
    let mut entries = 0;
    let mut flush = |batch: &mut Vec<(String, IndexObject)>| -> Result<()> {
        if batch.len() < 2 {
            batch.clear();
            return Ok(());
        }
        let mut ids = HashSet::new();
        let packs: Vec<IndexPack> =
            batch.iter().flat_map(|(_, o)| o.packs.iter()).filter(|p| ids.insert(p.id)).cloned().collect();
        write_index(vault, packs)?;
        for (name, _) in batch.drain(..) {
            vault.remove(&name, Removal::IndexObject)?;
            merged += 1;
        }
        Ok(())
    };
    for (name, obj) in small {
        let n: usize = obj.packs.iter().map(|p| p.entries.len()).sum();
        if entries + n > CONSOLIDATED_ENTRIES {
            flush(&mut batch)?;
            entries = 0;
        }
        entries += n;
        batch.push((name, obj));
    }
    flush(&mut batch)?;
    Ok(merged)
}

/// A pack at least this unused (by bytes) is repacked: the chunks points
/// still use are written to new packs and the old pack is marked.
pub const REPACK_UNUSED_PERCENT: u64 = 50;

/// A deletion record: packs marked unused at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    pub marked_at: Timestamp,
    pub packs: Vec<PackId>,
}

/// One pack in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedPack {
    pub pack: PackId,
    pub kind: BlobKind,
    pub size: u64,
}

/// Marks whose time has not come, and why.
#[derive(Debug, Clone, Serialize)]
pub struct WaitingMark {
    pub record: RecordId,
    pub marked_at: Timestamp,
    pub packs: usize,
    pub bytes: u64,
    pub reason: String,
}

/// What one prune does to packs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcPlan {
    /// Marked packs to delete now.
    pub sweep: Vec<PlannedPack>,
    /// Marked packs a point has come to need: unmarked, kept.
    pub unmark: Vec<PackId>,
    /// Deletion records consumed by this sweep.
    pub records_done: Vec<RecordId>,
    /// Deletion records still waiting for the margin or a writer.
    pub waiting: Vec<WaitingMark>,
    /// Packs no remaining point uses, to mark now.
    pub mark: Vec<PlannedPack>,
    /// Packs mostly unused: their used chunks are copied to new packs and
    /// they are marked with the others.
    pub repack: Vec<PlannedPack>,
    /// Bytes of the chunks repacking copies.
    pub repack_copy_bytes: u64,
    /// Uploads killed writers left unfinished, untouched for longer than
    /// the margin (and at least [`MIN_WRITER_SLACK`]): no live writer owns them.
    #[serde(serialize_with = "abandoned_summary")]
    pub abandoned: Vec<boveda_store::AbandonedUpload>,
    /// Index object names by pack, for deletion.
    #[serde(skip)]
    index_objects: HashMap<PackId, Vec<String>>,
    /// The used chunks of the packs to repack.
    #[serde(skip)]
    repack_chunks: Vec<ChunkId>,
}

fn abandoned_summary<S: serde::Serializer>(
    uploads: &[boveda_store::AbandonedUpload],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(uploads.len()))?;
    for u in uploads {
        seq.serialize_element(&serde_json::json!({ "name": u.name, "size": u.size }))?;
    }
    seq.end()
}

/// Uploads no live writer can own: untouched for longer than `margin`, and
/// at least [`MIN_WRITER_SLACK`]. Measured on the store's own clock (file
/// times), never on an injected one.
///
/// # Errors
/// A store error.
pub fn abandoned_uploads(vault: &Vault, margin: SignedDuration) -> Result<Vec<boveda_store::AbandonedUpload>> {
    let age = margin.max(MIN_WRITER_SLACK).unsigned_abs();
    let before = std::time::SystemTime::now().checked_sub(age).unwrap_or(std::time::UNIX_EPOCH);
    Ok(vault.store().abandoned_uploads(before)?)
}

impl GcPlan {
    pub fn abandoned_bytes(&self) -> u64 {
        self.abandoned.iter().map(|u| u.size).sum()
    }

    pub fn sweep_bytes(&self) -> u64 {
        self.sweep.iter().map(|p| p.size).sum()
    }

    pub fn mark_bytes(&self) -> u64 {
        self.mark.iter().map(|p| p.size).sum()
    }

    pub fn repack_bytes(&self) -> u64 {
        self.repack.iter().map(|p| p.size).sum()
    }
}

/// Every live deletion record.
///
/// # Errors
/// A store error or a damaged record.
pub fn deletions(vault: &Vault) -> Result<Vec<(RecordId, Deletion)>> {
    vault.catalog_list::<Deletion>(DELETIONS)
}

/// The packs currently marked for deletion, which backups must not
/// deduplicate against.
///
/// # Errors
/// As [`deletions`].
pub fn marked_packs(vault: &Vault) -> Result<HashSet<PackId>> {
    Ok(deletions(vault)?.into_iter().flat_map(|(_, d)| d.packs).collect())
}

/// Every chunk (data and tree) the given points use.
///
/// # Errors
/// A missing or damaged tree, named.
/// The chunks `points` use, as [`referenced_chunks`], for reports: a tree
/// that cannot be read is told to `damaged` (with the error) and skipped,
/// so one damaged tree does not take the report down for every user.
/// `index` is loaded once by the caller.
pub fn referenced_chunks_lenient(
    vault: &Vault,
    index: &crate::ChunkIndex,
    points: &[RecoveryPoint],
    damaged: &mut dyn FnMut(&RecoveryPoint, ChunkId, crate::VaultError),
) -> HashSet<ChunkId> {
    let mut seen: HashSet<ChunkId> = HashSet::new();
    for p in points {
        let mut stack = vec![p.tree];
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let tree = match vault.load_tree(index, &id) {
                Ok(t) => t,
                Err(e) => {
                    damaged(p, id, e);
                    continue;
                }
            };
            for node in &tree.nodes {
                match node.kind {
                    NodeKind::Dir => stack.extend(node.subtree.iter().filter(|s| !seen.contains(*s))),
                    NodeKind::File => {
                        for piece in &node.content {
                            if let Piece::Data { id, .. } = piece {
                                seen.insert(*id);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    seen
}

pub fn referenced_chunks(vault: &Vault, points: &[RecoveryPoint]) -> Result<HashSet<ChunkId>> {
    let index = vault.load_index()?;
    // strict: the first tree that cannot be read fails the whole walk
    let mut first = None;
    let seen = referenced_chunks_lenient(vault, &index, points, &mut |_, _, e| {
        first.get_or_insert(e);
    });
    first.map_or(Ok(seen), Err)
}

/// Until when each pack and point manifest is needed by the points given
/// with their expiry (`None`: no end known): what Object Lock must cover
/// (`vault/locks.rs`). Points are walked latest expiry first and every
/// tree once, so a chunk takes the expiry of the longest-kept point that
/// uses it.
///
/// # Errors
/// A missing or damaged tree, named.
pub fn needed_until(
    vault: &Vault,
    points: &[(RecoveryPoint, Option<Timestamp>)],
) -> Result<HashMap<String, Option<Timestamp>>> {
    let index = vault.load_index()?;
    let mut order: Vec<&(RecoveryPoint, Option<Timestamp>)> = points.iter().collect();
    // no end first, then the latest
    order.sort_by(|a, b| match (a.1, b.1) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x),
    });
    let mut out: HashMap<String, Option<Timestamp>> = HashMap::new();
    let mut seen: HashSet<ChunkId> = HashSet::new();
    let later = |a: Option<Timestamp>, b: Option<Timestamp>| match (a, b) {
        (None, _) | (_, None) => None,
        (Some(x), Some(y)) => Some(x.max(y)),
    };
    for (point, until) in order {
        out.insert(crate::point::point_name(&point.id), *until);
        let mut first_seen = Vec::new();
        let mut stack = vec![point.tree];
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            first_seen.push(id);
            let tree = vault.load_tree(&index, &id)?;
            for node in &tree.nodes {
                match node.kind {
                    NodeKind::Dir => stack.extend(node.subtree.iter().filter(|s| !seen.contains(*s))),
                    NodeKind::File => {
                        for piece in &node.content {
                            if let Piece::Data { id, .. } = piece
                                && seen.insert(*id)
                            {
                                first_seen.push(*id);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        for chunk in first_seen {
            if let Some(at) = index.get(&chunk) {
                let name = pack_name(at.kind, &at.pack);
                let slot = out.entry(name).or_insert(*until);
                *slot = later(*slot, *until);
            }
        }
    }
    Ok(out)
}

/// Inputs of a plan.
pub struct GcRequest<'a> {
    pub now: Timestamp,
    pub margin: SignedDuration,
    /// The points that remain after this prune.
    pub points: &'a [RecoveryPoint],
    /// When the oldest writer still running started, if any.
    pub oldest_running_writer: Option<Timestamp>,
}

/// Works out which packs to sweep, unmark and mark. Reads only.
///
/// # Errors
/// A store error, or a damaged tree of a remaining point.
pub fn plan(vault: &Vault, req: &GcRequest<'_>) -> Result<GcPlan> {
    let store = vault.store();
    let referenced = referenced_chunks(vault, req.points)?;
    let objects = vault.index_objects()?;
    let records = deletions(vault)?;
    let marked: HashSet<PackId> = records.iter().flat_map(|(_, d)| d.packs.iter().copied()).collect();

    let mut out = GcPlan::default();
    // pack -> (kind, size, chunks it holds that a point uses)
    let mut packs: HashMap<PackId, (BlobKind, u64, Vec<ChunkId>)> = HashMap::new();
    let mut used_bytes: HashMap<PackId, u64> = HashMap::new();
    let mut in_unmarked: HashSet<ChunkId> = HashSet::new();
    for (name, obj) in &objects {
        for p in &obj.packs {
            out.index_objects.entry(p.id).or_default().push(name.clone());
            let used: Vec<ChunkId> = p.entries.iter().map(|e| e.id).filter(|id| referenced.contains(id)).collect();
            let bytes: u64 = p.entries.iter().filter(|e| referenced.contains(&e.id)).map(|e| u64::from(e.length)).sum();
            *used_bytes.entry(p.id).or_default() += bytes;
            if !marked.contains(&p.id) {
                in_unmarked.extend(used.iter().copied());
            }
            let entry = packs.entry(p.id).or_insert((p.kind, p.size, Vec::new()));
            entry.2.extend(used);
        }
    }
    let mut present: HashMap<PackId, (BlobKind, u64)> = HashMap::new();
    for info in store.list("packs")? {
        if let Some((kind, id)) = parse_pack_name(&info.name) {
            present.insert(id, (kind, info.size));
        }
    }

    // Sweep: marks whose margin has passed and that no running writer
    // predates, and (on a vault with Object Lock) whose packs the store
    // no longer locks.
    let locked = vault.locked_packs(req.now)?;
    let mut swept_or_kept: HashSet<PackId> = HashSet::new();
    for (rid, d) in &records {
        let due = d.marked_at + req.margin;
        let lock = d.packs.iter().filter_map(|p| locked.get(p)).max();
        // (a pack the store no longer has needs no waiting)
        let reason = if due > req.now {
            Some(format!("safety margin until {due}"))
        } else if let Some(until) = lock {
            Some(format!("locked in the store (Object Lock) until {until}"))
        } else {
            let writers_until = d.marked_at + req.margin.max(MIN_WRITER_SLACK);
            req.oldest_running_writer
                .filter(|w| *w < writers_until)
                .map(|w| format!("a backup that started at {w}, near or before the mark, is still running"))
        };
        if let Some(reason) = reason {
            let bytes = d.packs.iter().filter_map(|p| present.get(p)).map(|(_, s)| s).sum();
            out.waiting.push(WaitingMark { record: *rid, marked_at: d.marked_at, packs: d.packs.len(), bytes, reason });
            continue;
        }
        out.records_done.push(*rid);
        for id in &d.packs {
            if !swept_or_kept.insert(*id) {
                continue;
            }
            let needed = packs.get(id).is_some_and(|(_, _, used)| used.iter().any(|c| !in_unmarked.contains(c)));
            if needed {
                out.unmark.push(*id);
            } else if let Some((kind, size)) = present.get(id) {
                out.sweep.push(PlannedPack { pack: *id, kind: *kind, size: *size });
            }
        }
    }

    // Mark: packs (indexed or not) that no remaining point uses.
    for (id, (kind, size)) in &present {
        if marked.contains(id) {
            continue;
        }
        let used = packs.get(id).is_some_and(|(_, _, used)| !used.is_empty());
        if !used {
            out.mark.push(PlannedPack { pack: *id, kind: *kind, size: *size });
            continue;
        }
        let in_use = used_bytes.get(id).copied().unwrap_or(*size);
        if in_use * 100 <= size * (100 - REPACK_UNUSED_PERCENT) {
            out.repack.push(PlannedPack { pack: *id, kind: *kind, size: *size });
            out.repack_copy_bytes += in_use;
            out.repack_chunks.extend(packs.get(id).map(|(_, _, used)| used.clone()).unwrap_or_default());
        }
    }
    out.abandoned = abandoned_uploads(vault, req.margin)?;
    out.repack.sort_by_key(|p| p.pack);
    out.mark.sort_by_key(|p| p.pack);
    out.sweep.sort_by_key(|p| p.pack);
    Ok(out)
}

/// Carries out a plan: deletes swept packs (index objects first), drops the
/// consumed deletion records and writes the new mark.
///
/// # Errors
/// A store error; what was done stays done and the next prune continues.
pub fn execute(vault: &Vault, plan: &GcPlan, now: Timestamp) -> Result<()> {
    let _store = vault.store();
    // Index objects that list a swept pack go first: deleted when they list
    // only swept packs, else replaced by one without them (written before
    // the old one is deleted, so every other pack stays indexed).
    let swept: HashSet<PackId> = plan.sweep.iter().map(|p| p.pack).collect();
    let touched: HashSet<&String> =
        plan.sweep.iter().flat_map(|p| plan.index_objects.get(&p.pack).into_iter().flatten()).collect();
    if !touched.is_empty() {
        for (name, obj) in vault.index_objects()?.into_iter().filter(|(n, _)| touched.contains(n)) {
            let keep: Vec<IndexPack> = obj.packs.into_iter().filter(|p| !swept.contains(&p.id)).collect();
            if !keep.is_empty() {
                write_index(vault, keep)?;
            }
            vault.remove(&name, Removal::IndexObject)?;
        }
    }
    plan.sweep.par_iter().try_for_each(|p| -> Result<()> {
        vault.remove(&pack_name(p.kind, &p.pack), Removal::Pack)?;
        Ok(())
    })?;
    consolidate_index(vault)?;
    for rid in &plan.records_done {
        vault.catalog_put::<Deletion>(DELETIONS, rid, None)?;
    }
    for upload in &plan.abandoned {
        vault.discard_upload(upload)?;
    }
    if !plan.repack.is_empty() {
        // copy the used chunks to new packs: the writer's index leaves out
        // the packs being repacked (and marked ones), so it stores them anew
        let full = vault.load_index()?;
        let mut skip = marked_packs(vault)?;
        skip.extend(plan.repack.iter().map(|p| p.pack));
        let rest = vault.load_index_without(&skip)?;
        // a host's chunks keep their ids only under that host's keys: each
        // writer copies the chunks of one writer of the packs repacked
        let mut by_host: std::collections::BTreeMap<Option<RecordId>, Vec<ChunkId>> = Default::default();
        for id in &plan.repack_chunks {
            by_host.entry(full.get(id).and_then(|r| r.sealed_by).map(|b| b.host)).or_default().push(*id);
        }
        for (host, ids) in by_host {
            let writer = match host {
                None => crate::BlobWriter::new(vault, &rest),
                Some(host) => {
                    let keys = vault.host_keys(host);
                    let session = keys.new_session()?;
                    crate::BlobWriter::for_host(keys, session, vault.writer_target(), &rest)
                }
            };
            for id in &ids {
                let kind = full.get(id).map_or(BlobKind::Data, |r| r.kind);
                if writer.add(kind, &vault.read_blob(&full, id)?)? != *id {
                    return Err(crate::VaultError::Invalid(format!(
                        "repacking chunk {id} would rename it: nothing deleted"
                    )));
                }
            }
            writer.flush()?;
        }
    }
    let to_mark: Vec<PackId> = plan.mark.iter().chain(&plan.repack).map(|p| p.pack).collect();
    if !to_mark.is_empty() {
        let d = Deletion { marked_at: now, packs: to_mark };
        vault.catalog_put(DELETIONS, &RecordId::random(), Some(&d))?;
    }
    Ok(())
}

//! `vault check`: verifies a vault's structure and, with `read_data`, every
//! byte of every pack. Every problem names the object at fault and the items,
//! recovery points and paths it affects.

use std::collections::{BTreeMap, HashMap, HashSet};

use boveda_store::StoreErrorKind::NotFound;
use rayon::prelude::*;
use serde::Serialize;

use crate::blob::BlobKind;
use crate::catalog::{CATALOG_FOLDER, CatalogRecord, ITEMS_KIND};
use crate::error::Result;
use crate::gc::LostPack;
use crate::index::{ChunkIndex, IndexObject};
use crate::key_slot::KeySlot;
use crate::object::{ObjectKind, open_json};
use crate::pack::{pack_name, parse_pack_name, read_footer};
use crate::point::RecoveryPoint;
use crate::tree::{NodeKind, Piece, Tree};
use crate::vault::Vault;
use crate::{ChunkId, PackId, RecordId};

/// How many affected paths a problem lists before it only counts them.
const MAX_AFFECTED_LISTED: usize = 20;

#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    pub read_data: bool,
}

/// One place a damaged or missing object is used.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Affected {
    pub item: String,
    pub point: String,
    pub path: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The object at fault, e.g. `packs/data/ab/ab12…` or `index/…`.
    pub object: String,
    pub problem: String,
    pub affects: Vec<Affected>,
    /// Uses beyond those listed in `affects`.
    pub more_affected: usize,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct CheckReport {
    pub problems: Vec<Problem>,
    /// What the store lost or damaged (see [`LostPack`]).
    #[serde(skip)]
    pub lost: Vec<LostPack>,
    pub notes: Vec<String>,
    pub key_slots: usize,
    pub catalog_records: usize,
    pub abandoned_uploads: usize,
    pub index_objects: usize,
    pub packs: usize,
    pub points: usize,
    pub trees: usize,
    pub chunks_read: u64,
    pub bytes_read: u64,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Default)]
struct Findings {
    /// (object, problem) -> affected uses
    problems: BTreeMap<(String, String), (Vec<Affected>, usize)>,
    /// chunk -> (object, problem) for chunks found bad or missing
    bad_chunks: HashMap<ChunkId, (String, String)>,
    /// pack -> its kind and the chunks lost (`None`: the whole pack)
    lost: BTreeMap<PackId, (BlobKind, Option<Vec<ChunkId>>)>,
}

impl Findings {
    fn add(&mut self, object: String, problem: String) {
        self.problems.entry((object, problem)).or_default();
    }

    fn affect(&mut self, key: (String, String), a: Affected) {
        let entry = self.problems.entry(key).or_default();
        if entry.0.len() < MAX_AFFECTED_LISTED {
            entry.0.push(a);
        } else {
            entry.1 += 1;
        }
    }
}

/// Runs the check.
///
/// # Errors
/// Only when the store cannot be listed at all; damage is reported in the
/// returned [`CheckReport`].
pub fn check(vault: &Vault, opts: CheckOptions, progress: &(dyn Fn(&str) + Sync)) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut f = Findings::default();

    progress("key slots");
    check_key_slots(vault, &mut report, &mut f)?;

    // Points are listed first: a point's manifest is written only after its
    // packs and index objects are durable, so every point listed here finds
    // its index objects in the listing below, while a backup still writing
    // has no manifest yet and is not mistaken for damage.
    progress("recovery points");
    let points = read_points(vault, &mut f)?;

    progress("catalog records");
    check_catalog(vault, &points, &mut report, &mut f)?;

    progress("index objects");
    let indexed = read_index(vault, &mut report, &mut f)?;

    progress("packs");
    let readable = check_packs(vault, &indexed, &mut report, &mut f)?;
    if opts.read_data {
        progress("reading packs");
        read_packs(vault, &readable, &mut report, &mut f);
    }

    progress("abandoned uploads");
    let abandoned = crate::gc::abandoned_uploads(vault, jiff::SignedDuration::ZERO)?;
    if !abandoned.is_empty() {
        let bytes: u64 = abandoned.iter().map(|u| u.size).sum();
        report.notes.push(format!(
            "{} unfinished upload(s) of {bytes} bytes left by interrupted writers (e.g. {}); `boveda prune` reclaims them",
            abandoned.len(),
            abandoned[0].name
        ));
    }
    report.abandoned_uploads = abandoned.len();

    progress("trees");
    report.points = points.len();
    let mut good_trees = HashSet::new();
    let mut fresh = None;
    let mut reloads = 0;
    for p in &points {
        // a point a prune deleted meanwhile takes its trees with it: no loss
        let before = f.problems.clone();
        let mut walker = Walker {
            vault,
            index: &indexed.index,
            fresh: &mut fresh,
            reloads: &mut reloads,
            point: p,
            good_trees: &mut good_trees,
            f: &mut f,
            trees: 0,
        };
        let sound = walker.walk(&p.tree, String::new());
        report.trees += walker.trees;
        if !sound && vault.deleted_points().is_ok_and(|d| d.contains(&p.id)) {
            f.problems = before;
            report.notes.push(format!("point {} was deleted by a prune while checking", p.id.short()));
        }
    }

    report.lost =
        std::mem::take(&mut f.lost).into_iter().map(|(pack, (kind, chunks))| LostPack { pack, kind, chunks }).collect();
    report.problems = f
        .problems
        .into_iter()
        .map(|((object, problem), (affects, more))| Problem { object, problem, affects, more_affected: more })
        .collect();
    Ok(report)
}

fn check_key_slots(vault: &Vault, report: &mut CheckReport, f: &mut Findings) -> Result<()> {
    let store = vault.store();
    for info in store.list("keys")? {
        report.key_slots += 1;
        let slot = store.get(&info.name).map_err(Into::into).and_then(|b| KeySlot::from_bytes(&info.name, &b));
        match slot.and_then(|s| s.verify(vault.key())) {
            Ok(true) => {}
            Ok(false) => report.notes.push(format!(
                "{} was made before key slots were authenticated: a change to it could not be detected (add a new passphrase and remove this one to replace it)",
                info.name
            )),
            Err(e) => f.add(
                info.name.clone(),
                format!("{e}; the passphrase of this slot may no longer open the vault (other slots still do)"),
            ),
        }
    }
    Ok(())
}

fn read_points(vault: &Vault, f: &mut Findings) -> Result<Vec<RecoveryPoint>> {
    let store = vault.store();
    let mut points = Vec::new();
    for info in store.list("points")? {
        let bytes = match store.get(&info.name) {
            Err(e) if e.kind() == NotFound => continue, // deleted by a concurrent prune
            other => other,
        };
        match bytes
            .map_err(Into::into)
            .and_then(|b| open_json::<RecoveryPoint>(vault.key(), &info.name, &b, ObjectKind::Point))
        {
            Ok(p) => points.push(p),
            Err(e) => f.add(info.name.clone(), format!("cannot be read: {e}")),
        }
    }
    Ok(points)
}

/// A pack as its index object lists it: kind, size, entries, and who
/// sealed it (a host's pack).
type PackListing = (BlobKind, u64, Vec<crate::pack::PackEntry>, Option<crate::SealedBy>);

/// What the index objects say: the merged index, each pack's entries and
/// the index object naming it.
#[derive(Default)]
struct Indexed {
    index: ChunkIndex,
    pack_entries: HashMap<PackId, PackListing>,
    index_of: HashMap<PackId, String>,
}

fn read_index(vault: &Vault, report: &mut CheckReport, f: &mut Findings) -> Result<Indexed> {
    let store = vault.store();
    // A prune may merge index objects, or rewrite one without the packs it
    // sweeps, while this runs: it writes the new object before deleting the
    // old, so an object listed and then gone is followed by listing again.
    let mut opened: Vec<(String, Result<IndexObject>)> = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for round in 0..4 {
        let fresh: Vec<String> =
            store.list("index")?.into_iter().map(|o| o.name).filter(|n| !seen.contains(n)).collect();
        seen.extend(fresh.iter().cloned());
        let read: Vec<(String, Result<IndexObject>)> = fresh
            .par_iter()
            .map(|name| {
                (
                    name.clone(),
                    store.get(name).map_err(Into::into).and_then(|b| IndexObject::open(vault.key(), name, &b)),
                )
            })
            .collect();
        let mut gone = 0;
        for (name, result) in read {
            match result {
                Err(crate::VaultError::Store(e)) if e.kind() == NotFound && round < 3 => gone += 1,
                Err(crate::VaultError::Store(e)) if e.kind() == NotFound => {
                    report.notes.push(format!("{name} was rewritten by a prune while checking"));
                }
                other => opened.push((name, other)),
            }
        }
        if gone == 0 {
            break;
        }
    }
    report.index_objects = opened.len();
    let mut indexed = Indexed::default();
    for (name, result) in opened {
        match result {
            Ok(obj) => {
                for p in &obj.packs {
                    indexed.index_of.insert(p.id, name.clone());
                    indexed.index.add_pack(p);
                    indexed
                        .pack_entries
                        .entry(p.id)
                        .or_insert_with(|| (p.kind, p.size, p.entries.clone(), p.sealed_by));
                }
            }
            Err(e) => f.add(name, format!("cannot be read: {e}")),
        }
    }
    Ok(indexed)
}

/// A pack present with the size its index says, to read.
type Readable<'a> = (PackId, BlobKind, &'a Vec<crate::pack::PackEntry>, Option<crate::SealedBy>);

/// Packs listed against the index: missing or of the wrong size is damage
/// (unless a concurrent prune collected them); the rest are returned.
fn check_packs<'a>(
    vault: &Vault,
    indexed: &'a Indexed,
    report: &mut CheckReport,
    f: &mut Findings,
) -> Result<Vec<Readable<'a>>> {
    let store = vault.store();
    let mut present: HashMap<PackId, u64> = HashMap::new();
    for info in store.list("packs")? {
        match parse_pack_name(&info.name) {
            Some((_, id)) => {
                present.insert(id, info.size);
            }
            None => report.notes.push(format!("{}: not a pack name; ignored", info.name)),
        }
    }
    report.packs = present.len();
    let unindexed = present.keys().filter(|id| !indexed.pack_entries.contains_key(id)).count();
    if unindexed > 0 {
        report.notes.push(format!(
            "{unindexed} pack(s) are listed by no index (left by an interrupted backup); they hold nothing any recovery point uses"
        ));
    }
    let mut readable = Vec::new();
    for (id, (kind, size, entries, sealed_by)) in &indexed.pack_entries {
        let name = pack_name(*kind, id);
        // prune deletes a pack's index object before the pack: both gone
        // means a concurrent prune collected it, not damage
        let swept = || indexed.index_of.get(id).is_some_and(|n| store.stat(n).is_err_and(|e| e.kind() == NotFound));
        let why = match present.get(id) {
            None if swept() => {
                report.notes.push(format!("{name} was collected by a prune while checking"));
                continue;
            }
            None => "is missing".to_string(),
            Some(actual) if actual != size => format!("has {actual} bytes where the index says {size}"),
            Some(_) => {
                readable.push((*id, *kind, entries, *sealed_by));
                continue;
            }
        };
        f.add(name.clone(), why.clone());
        f.lost.insert(*id, (*kind, None));
        for e in entries {
            f.bad_chunks.entry(e.id).or_insert((name.clone(), why.clone()));
        }
    }
    Ok(readable)
}

/// Reads every blob of the packs, in parallel; what fails is named.
fn read_packs(vault: &Vault, readable: &[Readable<'_>], report: &mut CheckReport, f: &mut Findings) {
    let results: Vec<_> =
        readable.par_iter().map(|(id, kind, entries, by)| read_pack(vault, id, *kind, entries, by.as_ref())).collect();
    for r in results {
        if let Some((id, kind)) = r.lost_whole {
            f.lost.insert(id, (kind, None));
        } else if !r.lost_chunks.is_empty() {
            let (id, kind) = r.pack;
            f.lost.insert(id, (kind, Some(r.lost_chunks.clone())));
        }
        report.chunks_read += r.chunks;
        report.bytes_read += r.bytes;
        for (object, why) in r.pack_problems {
            f.add(object, why);
        }
        for (chunk, object, why) in r.bad_chunks {
            f.add(object.clone(), why.clone());
            f.bad_chunks.entry(chunk).or_insert((object, why));
        }
    }
}

struct PackResult {
    pack: (PackId, BlobKind),
    chunks: u64,
    bytes: u64,
    pack_problems: Vec<(String, String)>,
    bad_chunks: Vec<(ChunkId, String, String)>,
    /// The pack was gone when read.
    lost_whole: Option<(PackId, BlobKind)>,
    /// Chunks whose data does not decode.
    lost_chunks: Vec<ChunkId>,
}

fn read_pack(
    vault: &Vault,
    id: &PackId,
    kind: BlobKind,
    entries: &[crate::pack::PackEntry],
    sealed_by: Option<&crate::SealedBy>,
) -> PackResult {
    let name = pack_name(kind, id);
    let mut r = PackResult {
        pack: (*id, kind),
        chunks: 0,
        bytes: 0,
        pack_problems: Vec::new(),
        bad_chunks: Vec::new(),
        lost_whole: None,
        lost_chunks: Vec::new(),
    };
    let bytes = match vault.store().get(&name) {
        Ok(b) => b,
        Err(e) => {
            if e.kind() == NotFound {
                r.lost_whole = Some((*id, kind));
            }
            r.pack_problems.push((name.clone(), format!("cannot be read: {e}")));
            for e in entries {
                r.bad_chunks.push((e.id, name.clone(), "pack cannot be read".into()));
            }
            return r;
        }
    };
    r.bytes = bytes.len() as u64;
    if blake3::hash(&bytes).as_bytes() != &id.0 {
        r.pack_problems.push((name.clone(), "content does not match its name (the file was altered)".into()));
    }
    match read_footer(vault.key(), &name, &bytes) {
        Ok(footer) if footer.entries.as_slice() != entries => {
            r.pack_problems.push((name.clone(), "footer and index disagree".into()));
        }
        Ok(_) => {}
        Err(e) => r.pack_problems.push((name.clone(), e.to_string())),
    }
    for e in entries {
        r.chunks += 1;
        let range = e.offset as usize..(e.offset as usize + e.length as usize);
        let Some(sealed) = bytes.get(range) else {
            r.bad_chunks.push((e.id, name.clone(), format!("chunk {} runs past the end", e.id)));
            r.lost_chunks.push(e.id);
            continue;
        };
        let decoded = vault.key().blob_key(sealed_by).map_err(|e| e.to_string()).and_then(|key| {
            crate::blob::decode_blob(&key, sealed, e.raw_len as usize, &e.id).map_err(|e| e.to_string())
        });
        if let Err(err) = decoded {
            r.bad_chunks.push((e.id, name.clone(), format!("chunk {}: {err}", e.id)));
            r.lost_chunks.push(e.id);
        }
    }
    r
}

struct Walker<'a> {
    vault: &'a Vault,
    index: &'a ChunkIndex,
    /// The index read again, once a tree's pack was gone: a prune moved
    /// live trees to a new pack and swept the old one while this check ran.
    fresh: &'a mut Option<ChunkIndex>,
    /// Times the index was read again for a chunk the copy lacked.
    reloads: &'a mut u32,
    point: &'a RecoveryPoint,
    good_trees: &'a mut HashSet<ChunkId>,
    f: &'a mut Findings,
    trees: usize,
}

impl Walker<'_> {
    /// A tree through the check's index; when its pack is gone or it is
    /// unlisted, through the index read again (up to three times in a
    /// check): a prune moved it meanwhile, and the check reports only real
    /// damage beside a prune.
    fn load_tree(&mut self, id: &ChunkId) -> Result<Tree> {
        let moved = |r: &Result<Tree>| match r {
            Err(crate::VaultError::Store(e)) => e.kind() == NotFound,
            Err(e) => matches!(e, crate::VaultError::MissingChunk { .. }),
            Ok(_) => false,
        };
        let mut result = self.vault.load_tree(self.index, id);
        if moved(&result)
            && let Some(fresh) = self.fresh.as_ref()
        {
            result = self.vault.load_tree(fresh, id);
        }
        while moved(&result) && *self.reloads < 3 {
            *self.reloads += 1;
            let index = self.vault.load_index()?;
            result = self.vault.load_tree(&index, id);
            *self.fresh = Some(index);
        }
        result
    }

    /// Reads the index again, once.
    fn fresh_index(&mut self) -> Result<()> {
        if self.fresh.is_none() {
            *self.fresh = Some(self.vault.load_index()?);
        }
        Ok(())
    }

    /// Whether the index as it is now holds a chunk the check's own lacks (a
    /// prune moved it to a new pack and swept the old one): read again up to
    /// three times in a check, as a prune may have moved it since.
    fn in_fresh_index(&mut self, id: &ChunkId) -> bool {
        if self.fresh_index().is_ok() && self.fresh.as_ref().is_some_and(|f| f.contains(id)) {
            return true;
        }
        while *self.reloads < 3 {
            *self.reloads += 1;
            match self.vault.load_index() {
                Ok(index) => {
                    let found = index.contains(id);
                    *self.fresh = Some(index);
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }

    fn affected(&self, path: &str) -> Affected {
        Affected {
            item: self.point.item_name.clone(),
            point: self.point.id.short(),
            path: if path.is_empty() { "/".into() } else { path.to_string() },
        }
    }

    fn chunk_problem(&mut self, id: &ChunkId, what: &str) -> Option<(String, String)> {
        if let Some(bad) = self.f.bad_chunks.get(id) {
            return Some(bad.clone());
        }
        if !self.index.contains(id) && !self.in_fresh_index(id) {
            return Some((format!("chunk {id}"), format!("{what} is referenced but listed by no index")));
        }
        None
    }

    /// Returns whether the tree and everything below it is sound.
    fn walk(&mut self, id: &ChunkId, path: String) -> bool {
        if self.good_trees.contains(id) {
            return true;
        }
        if let Some(key) = self.chunk_problem(id, "tree") {
            let a = self.affected(&path);
            self.f.affect(key, a);
            return false;
        }
        self.trees += 1;
        let tree: Tree = match self.load_tree(id) {
            Ok(t) => t,
            Err(e) => {
                let a = self.affected(&path);
                self.f.affect((format!("tree {id}"), e.to_string()), a);
                return false;
            }
        };
        let mut ok = true;
        for node in &tree.nodes {
            let child = format!("{path}/{}", node.name_lossy());
            match node.kind {
                NodeKind::Dir => match &node.subtree {
                    Some(sub) => ok &= self.walk(sub, child),
                    None => {
                        let a = self.affected(&child);
                        self.f.affect((format!("tree {id}"), "directory entry without a subtree".into()), a);
                        ok = false;
                    }
                },
                NodeKind::File => {
                    for piece in &node.content {
                        if let Piece::Data { id: cid, .. } = piece
                            && let Some(key) = self.chunk_problem(cid, "data chunk")
                        {
                            let a = self.affected(&child);
                            self.f.affect(key, a);
                            ok = false;
                        }
                    }
                }
                _ => {}
            }
        }
        if ok {
            self.good_trees.insert(*id);
        }
        ok
    }
}

/// Reads and authenticates every catalog record (every revision of every
/// item, policy, job, alert and the settings), and finds points whose item
/// has no record left.
fn check_catalog(vault: &Vault, points: &[RecoveryPoint], report: &mut CheckReport, f: &mut Findings) -> Result<()> {
    let names = vault.store().list(CATALOG_FOLDER)?;
    let opened: Vec<_> = names
        .par_iter()
        .map(|info| {
            let read = vault.store().get(&info.name);
            let r = match read {
                Err(e) if e.kind() == NotFound => None, // compacted or superseded meanwhile
                other => Some(other.map_err(Into::into).and_then(|b| {
                    open_json::<CatalogRecord<serde::de::IgnoredAny>>(vault.key(), &info.name, &b, ObjectKind::Catalog)
                })),
            };
            (info.name.clone(), r)
        })
        .collect();
    let mut items_with_records = HashSet::new();
    for (name, result) in opened {
        let Some(result) = result else { continue };
        report.catalog_records += 1;
        let entity = parse_entity(&name);
        if let Some((kind, id)) = &entity
            && kind == ITEMS_KIND
        {
            items_with_records.insert(*id);
        }
        let Err(e) = result else { continue };
        let what = match &entity {
            Some((kind, id)) if kind == ITEMS_KIND => {
                let item = item_label(points, id);
                let key = (
                    name.clone(),
                    format!("cannot be read: {e}; item {item} is skipped by every command until it is repaired"),
                );
                for p in points.iter().filter(|p| p.item_id == *id) {
                    f.affect(key.clone(), Affected { item: item.clone(), point: p.id.short(), path: "/".into() });
                }
                f.add(key.0, key.1);
                continue;
            }
            Some((kind, id)) => format!("the {} record {}", kind.trim_end_matches('s'), id.short()),
            None => "an unrecognised catalog name".into(),
        };
        f.add(name, format!("cannot be read: {e}; {what} is skipped by every command until it is repaired"));
    }
    for p in points.iter().filter(|p| !items_with_records.contains(&p.item_id)) {
        let key = (
            format!("{CATALOG_FOLDER}/{ITEMS_KIND}/{}", p.item_id.to_hex()),
            format!("is missing: item {} has recovery points but no record", p.item_name),
        );
        f.affect(key, Affected { item: p.item_name.clone(), point: p.id.short(), path: "/".into() });
    }
    if let Some(seen) = vault.seen_catalog() {
        let (problems, notes) = seen.compare(names.iter().map(|o| o.name.as_str()));
        problems.into_iter().for_each(|(entity, problem)| f.add(entity, problem));
        report.notes.extend(notes);
    }
    Ok(())
}

/// `catalog/<kind>/<id>/<revision>` into kind and id.
fn parse_entity(name: &str) -> Option<(String, RecordId)> {
    let mut parts = name.strip_prefix(CATALOG_FOLDER)?.strip_prefix('/')?.split('/');
    let kind = parts.next()?;
    let id = RecordId::from_hex(parts.next()?)?;
    Some((kind.to_string(), id))
}

/// An item's name as its points recorded it, else its id.
fn item_label(points: &[RecoveryPoint], id: &RecordId) -> String {
    points.iter().find(|p| p.item_id == *id).map_or_else(|| id.short(), |p| p.item_name.clone())
}

//! What this host saw of a vault's catalog, kept outside the store.
//!
//! Revisions of a catalog entity only ever grow: a change writes a newer
//! one, compaction keeps each entity's newest, and an entity disappears only
//! after a tombstone. So whoever deletes an entity's newest revision from
//! the store (a rollback of the settings, of an item, of a job) leaves a
//! catalog that is consistent in itself and that nothing inside the store
//! can tell from the real one. This host's memory can: the newest revision
//! of every entity it read or wrote is kept in a file beside its cache
//! (`<cache>/<vault id>/catalog-seen`), and `vault check` compares it with
//! the store (see [`crate::check`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a long-running process writes what it saw, at most.
const SAVE_EVERY: Duration = Duration::from_secs(10);

/// Catalog kinds whose entities are deleted on purpose (a tombstone, then
/// compaction): one of them this host saw alive may be gone because
/// another host deleted it.
pub const DELETABLE_KINDS: &[&str] = &["items", "policies", "deletions"];

/// The newest revision this host saw of one entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The revision's name, `catalog/<kind>/<id>/<revision>`.
    pub name: String,
    /// It was a tombstone (the entity deleted).
    pub tombstone: bool,
}

/// The entities seen, by `catalog/<kind>/<id>`.
pub type SeenMap = BTreeMap<String, Seen>;

pub struct SeenCatalog {
    path: PathBuf,
    /// The file as it was when this process opened the vault.
    at_open: SeenMap,
    state: Mutex<(SeenMap, bool, Instant)>,
}

fn entity(name: &str) -> Option<&str> {
    name.rsplit_once('/').map(|(e, _)| e)
}

impl SeenCatalog {
    pub fn open(path: PathBuf) -> Self {
        let at_open = Self::load(&path);
        SeenCatalog { path, state: Mutex::new((at_open.clone(), false, Instant::now())), at_open }
    }

    /// The file's entries; a missing or unreadable file is empty.
    pub fn load(path: &Path) -> SeenMap {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut out = SeenMap::new();
        for line in text.lines() {
            let (name, tombstone) = match line.strip_suffix(" deleted") {
                Some(n) => (n, true),
                None => (line, false),
            };
            if let Some(e) = entity(name) {
                merge(&mut out, e, Seen { name: name.to_string(), tombstone });
            }
        }
        out
    }

    /// What the file held when this process opened the vault: every
    /// revision in it existed in the store before anything this process
    /// lists afterwards.
    pub fn at_open(&self) -> &SeenMap {
        &self.at_open
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Notes a revision read or written; written out now and then.
    pub fn note(&self, name: &str, tombstone: bool) {
        let Some(e) = entity(name) else { return };
        let Ok(mut state) = self.state.lock() else { return };
        if merge(&mut state.0, e, Seen { name: name.to_string(), tombstone }) {
            state.1 = true;
        }
        if state.1 && state.2.elapsed() >= SAVE_EVERY {
            state.1 = false;
            state.2 = Instant::now();
            let _ = self.save(&state.0);
        }
    }

    /// Writes what was seen, merged with what other processes wrote
    /// meanwhile (the newer revision of each entity wins), atomically.
    fn save(&self, seen: &SeenMap) -> std::io::Result<()> {
        let mut all = Self::load(&self.path);
        for (e, s) in seen {
            merge(&mut all, e, s.clone());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension(format!("tmp-{}", std::process::id()));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for s in all.values() {
            writeln!(out, "{}{}", s.name, if s.tombstone { " deleted" } else { "" })?;
        }
        out.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

impl Drop for SeenCatalog {
    fn drop(&mut self) {
        if let Ok(state) = self.state.lock()
            && state.1
        {
            let _ = self.save(&state.0);
        }
    }
}

/// Keeps the newer of two revisions of entity `e`; whether it changed.
fn merge(map: &mut SeenMap, e: &str, s: Seen) -> bool {
    match map.get(e) {
        Some(old) if old.name >= s.name => false,
        _ => {
            map.insert(e.to_string(), s);
            true
        }
    }
}

impl SeenCatalog {
    /// Against the catalog as listed now: every entity whose newest
    /// revision in the store is older than the one this host saw (a
    /// rollback: a newer revision was deleted), and every entity this host
    /// saw that is gone although it is never deleted (the settings, jobs,
    /// alerts) or was alive when last seen. Returns the problems (entity,
    /// what) and notes for `vault check`.
    pub(crate) fn compare<'n>(&self, listed: impl Iterator<Item = &'n str>) -> (Vec<(String, String)>, Vec<String>) {
        let mut newest: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
        for name in listed {
            if let Some((entity, _)) = name.rsplit_once('/') {
                let n = newest.entry(entity).or_insert(name);
                if name > *n {
                    *n = name;
                }
            }
        }
        let when = |name: &str| {
            crate::catalog::revision_time(name).map_or_else(|| "an unknown time".to_string(), |t| t.to_string())
        };
        let (mut problems, mut notes) = (Vec::new(), Vec::new());
        for (entity, s) in self.at_open() {
            let kind = entity.strip_prefix(CATALOG_PREFIX).and_then(|k| k.split('/').next());
            match newest.get(entity.as_str()) {
                Some(n) if *n >= s.name.as_str() => {}
                Some(n) => problems.push((
                    entity.clone(),
                    format!(
                        "was rolled back: this host saw its revision of {}, the store's newest is of {}; the newer revisions were deleted from the store",
                        when(&s.name),
                        when(n)
                    ),
                )),
                None if s.tombstone => {}
                None if kind.is_some_and(|k| DELETABLE_KINDS.contains(&k)) => notes.push(format!(
                    "{entity}: this host last saw it on {} and it is gone (deleted by another host, or removed from the store)",
                    when(&s.name)
                )),
                None => problems.push((
                    entity.clone(),
                    format!(
                        "is missing: this host saw its revision of {} and such records are never deleted; it was removed from the store",
                        when(&s.name)
                    ),
                )),
            }
        }
        if !problems.is_empty() {
            notes.push(format!(
                "what this host saw of the catalog is kept in {}; if the store was restored from an older copy on purpose, delete that file to accept the catalog as it is",
                self.path().display()
            ));
        }
        (problems, notes)
    }
}

/// Where catalog entities' names begin.
const CATALOG_PREFIX: &str = "catalog/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_revision_of_each_entity_is_kept_across_processes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog-seen");
        {
            let a = SeenCatalog::open(path.clone());
            a.note("catalog/items/aa/000000000000000000000002", false);
            a.note("catalog/items/aa/000000000000000000000001", false);
            a.note("catalog/policies/bb/000000000000000000000005", true);
        }
        {
            let b = SeenCatalog::open(path.clone());
            b.note("catalog/items/aa/000000000000000000000003", false);
        }
        let seen = SeenCatalog::load(&path);
        assert_eq!(seen["catalog/items/aa"].name, "catalog/items/aa/000000000000000000000003");
        assert!(seen["catalog/policies/bb"].tombstone);
        assert_eq!(seen.len(), 2);
    }
}

//! The merged index file: a cache of every index object merged and sorted,
//! memory-mapped. It must find exactly what the index objects say, follow
//! the store as objects are added and merged away, and be rebuilt when it
//! is damaged, altered or deleted, losing nothing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use boveda_store::{LocalStore, Store};
use boveda_vault::{BlobKind, BlobWriter, ChunkId, CreateOptions, Vault, consolidate_index};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    cache: PathBuf,
    /// A handle with the merged index in `cache`.
    cached: Vault,
    /// A handle that merges index objects in memory, as the reference.
    plain: Vault,
    chunks: Vec<ChunkId>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("vault")));
        let plain = Vault::create(store.clone(), b"pw", CreateOptions::for_tests("merged")).expect("create");
        let cache = dir.path().join("cache");
        let mut cached = Vault::open(store.clone(), b"pw").expect("open");
        cached.use_index_cache(&cache);
        Self { _dir: dir, store, cache, cached, plain, chunks: Vec::new() }
    }

    /// Writes `packs` packs of `per_pack` blobs, one index object each.
    fn write_packs(&mut self, packs: usize, per_pack: usize) {
        let index = self.plain.load_index().expect("index");
        for _ in 0..packs {
            let writer = BlobWriter::new(&self.plain, &index);
            for _ in 0..per_pack {
                let n = self.chunks.len();
                let id =
                    writer.add(BlobKind::Data, format!("blob {n} of the merged index test").as_bytes()).expect("add");
                self.chunks.push(id);
            }
            writer.flush().expect("flush");
        }
    }

    fn file(&self) -> PathBuf {
        merged_file(&self.cache)
    }

    /// Asserts the cached index finds every chunk where the index objects say.
    fn assert_agrees(&self) {
        let reference = self.plain.load_index().expect("reference index");
        let index = self.cached.load_index().expect("cached index");
        for id in &self.chunks {
            assert_eq!(index.get(id), reference.get(id), "chunk {id}");
            assert!(index.contains(id), "chunk {id}");
            assert_eq!(self.cached.read_blob(&index, id).ok(), self.plain.read_blob(&reference, id).ok());
        }
        assert_eq!(index.len(), reference.len());
        let packs = |i: &boveda_vault::ChunkIndex| i.packs().map(|p| p.0).collect::<HashSet<_>>();
        assert_eq!(packs(&index), packs(&reference));
        assert!(!index.contains(&ChunkId([7; 32])));
        assert!(index.get(&ChunkId([7; 32])).is_none());
    }
}

fn merged_file(cache: &Path) -> PathBuf {
    let vault_dir = std::fs::read_dir(cache).expect("cache folder").flatten().next().expect("vault folder");
    vault_dir.path().join("index.merged")
}

fn inode(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).expect("merged index file"))
}

#[test]
fn the_merged_index_finds_what_the_index_objects_say() {
    let mut f = Fixture::new();
    f.write_packs(30, 50);
    f.assert_agrees();
    assert!(f.file().exists(), "the merged index file was written");
}

#[test]
fn objects_added_since_are_patched_in_and_many_rebuild_the_file() {
    let mut f = Fixture::new();
    f.write_packs(10, 20);
    f.assert_agrees();
    let first = inode(&f.file());
    f.write_packs(5, 20);
    f.assert_agrees();
    assert_eq!(inode(&f.file()), first, "a few new index objects are read, the file is kept");
    f.write_packs(300, 2);
    f.assert_agrees();
    assert_ne!(inode(&f.file()), first, "hundreds of new objects rebuild the file");
}

#[test]
fn packs_of_index_objects_no_longer_listed_are_left_out() {
    let mut f = Fixture::new();
    f.write_packs(20, 10);
    f.assert_agrees();
    // a prune merges the small objects into one: the same packs, new names
    assert_eq!(consolidate_index(&f.plain).expect("merge"), 20);
    f.assert_agrees();
    // an index object deleted outright takes its chunks out of the index
    let objects = f.store.list("index").expect("list");
    assert_eq!(objects.len(), 1);
    f.store.delete(&objects[0].name).expect("delete");
    let index = f.cached.load_index().expect("index");
    assert!(f.chunks.iter().all(|id| index.get(id).is_none() && !index.contains(id)));
    assert_eq!(index.len(), 0);
    assert_eq!(index.packs().count(), 0);
}

#[test]
fn a_damaged_altered_or_deleted_merged_index_is_rebuilt() {
    let mut f = Fixture::new();
    f.write_packs(10, 30);
    f.assert_agrees();
    let path = f.file();
    let mut bytes = std::fs::read(&path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&path, &bytes).expect("flip one bit");
    f.assert_agrees();
    assert_ne!(std::fs::read(&path).expect("read"), bytes, "the damaged file was replaced");

    std::fs::write(&path, &bytes[..bytes.len() - 10]).expect("truncate");
    f.assert_agrees();

    // a file of another vault (another key) is not taken for this one's
    let other = Fixture::new();
    let mut other = other;
    other.write_packs(3, 3);
    other.assert_agrees();
    std::fs::copy(other.file(), &path).expect("copy");
    f.assert_agrees();

    std::fs::remove_file(&path).expect("delete");
    f.assert_agrees();
    assert!(path.exists());
}

#[test]
fn packs_marked_for_deletion_are_read_but_not_deduplicated_against() {
    let mut f = Fixture::new();
    f.write_packs(4, 5);
    f.assert_agrees();
    let reference = f.plain.load_index().expect("index");
    let marked = reference.get(&f.chunks[0]).expect("located").pack;
    let index = f.cached.load_index_without(&HashSet::from([marked])).expect("index");
    let plain = f.plain.load_index_without(&HashSet::from([marked])).expect("index");
    for id in &f.chunks {
        assert_eq!(index.contains(id), plain.contains(id), "chunk {id}");
        assert_eq!(index.get(id), plain.get(id), "chunk {id}");
    }
    assert!(!index.contains(&f.chunks[0]));
    assert!(index.get(&f.chunks[0]).is_some());
}

/// A chunk stored twice (two writers raced, or a repack copied it) is
/// found in the first pack listed, as without the merged index.
#[test]
fn a_chunk_in_two_packs_is_found_in_the_first_listed() {
    let mut f = Fixture::new();
    f.write_packs(1, 3);
    let empty = boveda_vault::ChunkIndex::default();
    let writer = BlobWriter::new(&f.plain, &empty);
    for n in 0..3 {
        writer.add(BlobKind::Data, format!("blob {n} of the merged index test").as_bytes()).expect("add");
    }
    writer.flush().expect("flush");
    assert_eq!(f.store.list("index").expect("list").len(), 2);
    f.assert_agrees();
    let _ = std::fs::remove_file(f.file());
    f.assert_agrees();
}

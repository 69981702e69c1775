//! A registered host backs up files with its host keys alone: the vault
//! restores them byte for byte; its next backup reads its parent's trees
//! from its own cache and reads only what changed; a cached tree altered
//! on disk is refused (its files are read again), and chunks the vault no
//! longer holds are stored again rather than assumed.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use boveda_engine::{
    BackupDest, FileBackupOptions, FileBackupOutcome, HostCache, NoProgress, RestoreOptions, backup_files_to,
    restore_files,
};
use boveda_store::{LocalStore, Store};
use boveda_vault::{BlobWriter, ChunkId, CreateOptions, HostKeys, RecordId, Vault, WriterTarget};

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut out);
    out
}

fn digest(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).expect("below").display().to_string();
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

struct Host {
    keys: HostKeys,
    cache: HostCache,
    store: Arc<dyn Store>,
}

impl Host {
    /// One backup as the host runs it, deduplicating against `known` (what
    /// the vault says it holds of this host's chunks).
    fn backup(&self, src: &Path, parent: Option<ChunkId>, known: &HashSet<ChunkId>) -> FileBackupOutcome {
        let target = WriterTarget { store: self.store.clone(), compression_level: 1, pack_size: 1 << 20, parallel: 2 };
        let session = self.keys.new_session().expect("session");
        let writer =
            BlobWriter::for_host(self.keys.clone(), session, target, known).with_tree_sink(self.cache.tree_sink());
        let chunker = || self.keys.chunker();
        let dest = BackupDest { writer, chunker: &chunker, parents: &self.cache };
        let opts =
            FileBackupOptions { paths: vec![src.to_path_buf()], excludes: vec![], parent_tree: parent, cancel: None };
        backup_files_to(dest, &opts, &NoProgress).expect("host backup")
    }
}

fn restored(vault: &Vault, tree: &ChunkId, src: &Path, into: PathBuf) -> BTreeMap<String, Vec<u8>> {
    let index = vault.load_index().expect("index");
    let opts = RestoreOptions { target: into.clone(), within: None, paths: vec![], cancel: None };
    restore_files(vault, &index, tree, &opts, &NoProgress).expect("restore");
    digest(&into.join(src.strip_prefix("/").expect("absolute")))
}

/// A vault in `dir/vault`, and a host registered with it (its keys given,
/// its cache in `dir/host-cache`).
fn vault_and_host(dir: &Path) -> (Vault, RecordId, Host) {
    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.join("vault")));
    let vault = Vault::create(store.clone(), b"pw", CreateOptions::for_tests("fleet")).expect("create");
    let id = RecordId::random();
    let keys = vault.host_keys(id);
    let cache = HostCache::open(&dir.join("host-cache"), keys.clone()).expect("cache");
    (vault, id, Host { cache, keys, store })
}

#[test]
fn a_hosts_backups_restore_and_the_second_reads_only_what_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (vault, id, host) = vault_and_host(dir.path());
    let src = dir.path().join("src");
    for i in 0..30u64 {
        let sub = src.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join(format!("f{i}")), noise(i, 40_000 + i as usize * 1000)).expect("write");
    }

    let first = host.backup(&src, None, &HashSet::new());
    assert_eq!(first.stats.files, 30);
    assert_eq!(restored(&vault, &first.tree, &src, dir.path().join("r1")), digest(&src));

    // the next backup: parent trees from the host's cache, chunks the vault holds
    std::fs::write(src.join("d1/f5"), noise(999, 45_000)).expect("change one file");
    let known = vault.host_chunks(&id).expect("the host's chunks");
    assert!(!known.is_empty());
    let second = host.backup(&src, Some(first.tree), &known);
    assert_eq!(second.stats.files_unchanged, 29, "{:?}", second.warnings);
    assert!(second.stats.bytes_read <= 45_000, "read {}", second.stats.bytes_read);
    assert_eq!(restored(&vault, &second.tree, &src, dir.path().join("r2")), digest(&src));

    // a cached tree altered on disk: refused, its files read again, the backup right
    let cached = dir.path().join("host-cache/trees").join(second.tree.to_hex());
    let mut bytes = std::fs::read(&cached).expect("cached root");
    bytes[0] ^= 1;
    std::fs::write(&cached, &bytes).expect("alter");
    let known = vault.host_chunks(&id).expect("the host's chunks");
    let third = host.backup(&src, Some(second.tree), &known);
    assert!(third.warnings.iter().any(|w| w.contains("parent tree unreadable")), "{:?}", third.warnings);
    assert_eq!(third.stats.files_unchanged, 0);
    // every file read again is in the vault already: new are only the trees
    // above the source, whose folders the restores above changed
    assert!(third.stats.bytes_new < 10_000, "{} new bytes", third.stats.bytes_new);
    assert_eq!(restored(&vault, &third.tree, &src, dir.path().join("r3")), digest(&src));

    // chunks the vault does not hold (pruned) are stored again, not assumed
    let fourth = host.backup(&src, Some(first.tree), &HashSet::new());
    assert_eq!(fourth.stats.files_unchanged, 0, "nothing reused that the vault may not hold");
    assert!(fourth.stats.chunks_new > 0);
    assert_eq!(restored(&vault, &fourth.tree, &src, dir.path().join("r4")), digest(&src));
}

#[test]
fn a_hosts_disk_image_backups_restore_and_the_second_reads_only_what_changed() {
    use boveda_engine::{DISK_NODE, DiskBackupOptions, DiskOutputFormat, DiskRestoreRequest, DiskSource};
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().expect("tempdir");
    let (vault, id, host) = vault_and_host(dir.path());
    // a sparse 64 MiB image with data in three places
    let img = dir.path().join("disk.img");
    let mut f = std::fs::File::create(&img).expect("image");
    f.set_len(64 << 20).expect("size");
    for (at, seed) in [(0u64, 1u64), (20 << 20, 2), (63 << 20, 3)] {
        f.seek(SeekFrom::Start(at)).expect("seek");
        f.write_all(&noise(seed, 1 << 20)).expect("write");
    }
    f.sync_all().expect("sync");
    let backup = |parent: Option<ChunkId>, known: &HashSet<ChunkId>| {
        let target = WriterTarget { store: host.store.clone(), compression_level: 1, pack_size: 4 << 20, parallel: 2 };
        let session = host.keys.new_session().expect("session");
        let writer =
            BlobWriter::for_host(host.keys.clone(), session, target, known).with_tree_sink(host.cache.tree_sink());
        let chunker = || host.keys.chunker();
        let dest = BackupDest { writer, chunker: &chunker, parents: &host.cache };
        let opts = DiskBackupOptions {
            disks: vec![(DISK_NODE.to_string(), DiskSource::Image(img.clone()))],
            extra_files: vec![],
            parent_tree: parent,
            cancel: None,
        };
        boveda_engine::backup_disk_to(dest, &opts, &NoProgress).expect("host disk backup")
    };
    let restore = |tree: &ChunkId, name: &str| {
        let index = vault.load_index().expect("index");
        let out = dir.path().join(name);
        let req = DiskRestoreRequest {
            disk: DISK_NODE,
            target: &out,
            format: DiskOutputFormat::Raw,
            cancel: None,
            no_follow: false,
        };
        boveda_engine::restore_disk(&vault, &index, tree, &req, &NoProgress).expect("restore disk");
        std::fs::read(&out).expect("restored image")
    };
    let first = backup(None, &HashSet::new());
    assert_eq!(restore(&first.tree, "r1.img"), std::fs::read(&img).expect("source"));
    // one MiB changes: the next backup, parent from the host's cache, stores about that
    let mut f = std::fs::OpenOptions::new().write(true).open(&img).expect("open");
    f.seek(SeekFrom::Start(20 << 20)).expect("seek");
    f.write_all(&noise(4, 1 << 20)).expect("write");
    f.sync_all().expect("sync");
    drop(f);
    let known = vault.host_chunks(&id).expect("the host's chunks");
    let second = backup(Some(first.tree), &known);
    assert!(second.warnings.is_empty(), "{:?}", second.warnings);
    assert!(second.stats.bytes_new <= (1 << 20) + 4096, "{} new bytes", second.stats.bytes_new);
    assert_eq!(restore(&second.tree, "r2.img"), std::fs::read(&img).expect("source"));
}

/// What the server checks before it writes a host's point: a host may name
/// only chunks it wrote itself, never another host's or the vault's own
/// (a restore onto that host would hand them to it), nor missing ones.
#[test]
fn a_hosts_point_may_name_only_chunks_that_host_wrote() {
    use boveda_vault::{Node, NodeKind, Piece};
    let dir = tempfile::tempdir().expect("tempdir");
    let (vault, id, host) = vault_and_host(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("mine"), noise(1, 30_000)).expect("write");
    let mine = host.backup(&src, None, &HashSet::new());
    let reached = vault.check_host_tree(&id, &mine.tree).expect("a host's own backup passes");
    // the packs the point reaches, by name: its data pack and its tree pack
    let stored: HashSet<String> = host.store.list("packs").expect("list").into_iter().map(|o| o.name).collect();
    assert!(reached.len() >= 2 && reached.is_subset(&stored), "{reached:?} of {stored:?}");

    // another host claims it
    let other = RecordId::random();
    let err = vault.check_host_tree(&other, &mine.tree).expect_err("another host's chunks");
    assert!(err.to_string().contains("is another host's"), "{err}");

    // the vault's own data, named in a tree the host writes
    let theirs = dir.path().join("admin");
    std::fs::create_dir_all(&theirs).expect("mkdir");
    std::fs::write(theirs.join("secret"), noise(2, 30_000)).expect("write");
    let index = vault.load_index().expect("index");
    let opts = FileBackupOptions { paths: vec![theirs.clone()], excludes: vec![], parent_tree: None, cancel: None };
    let admin = boveda_engine::backup_files(&vault, &index, &opts, &NoProgress).expect("the vault's own backup");
    let err = vault.check_host_tree(&id, &admin.tree).expect_err("the vault's own tree");
    assert!(err.to_string().contains("was not written by this host"), "{err}");
    let admin_root = vault.load_tree(&vault.load_index().expect("index"), &admin.tree).expect("tree");
    let secret_chunk = find_data(&vault, &admin_root).expect("a data chunk of the vault's");
    let forged = |piece: Piece| {
        let mut node = Node::new(b"stolen".to_vec(), NodeKind::File);
        node.content = vec![piece];
        host_tree(&host, node)
    };
    let err = vault.check_host_tree(&id, &forged(Piece::Data { id: secret_chunk, len: 30_000 })).expect_err("stolen");
    assert!(err.to_string().contains(&secret_chunk.to_string()), "{err}");
    let missing = ChunkId([7; 32]);
    let err = vault.check_host_tree(&id, &forged(Piece::Data { id: missing, len: 1 })).expect_err("missing");
    assert!(err.to_string().contains("is not in the vault"), "{err}");
}

/// The first data chunk below `tree`.
fn find_data(vault: &Vault, tree: &boveda_vault::Tree) -> Option<ChunkId> {
    let index = vault.load_index().expect("index");
    for node in &tree.nodes {
        for piece in &node.content {
            if let boveda_vault::Piece::Data { id, .. } = piece {
                return Some(*id);
            }
        }
        if let Some(sub) = node.subtree
            && let Some(found) = find_data(vault, &vault.load_tree(&index, &sub).expect("tree"))
        {
            return Some(found);
        }
    }
    None
}

/// A host writes the trees of its points, sizes included. A file kept
/// beside a VM's disks (its definition, its UEFI variables) that claims a
/// terabyte is refused by its size, never given that much memory: the
/// server read such a file whole into a buffer of the size the tree gave,
/// and an allocation that large ends the process.
#[test]
fn a_hosts_point_whose_kept_file_claims_a_terabyte_is_refused_not_allocated() {
    use boveda_vault::{Node, NodeKind, Piece};
    let dir = tempfile::tempdir().expect("tempdir");
    let (vault, _id, host) = vault_and_host(dir.path());
    let written = |size: u64, hole: u64| {
        let mut node = Node::new(b"domain.xml".to_vec(), NodeKind::File);
        node.size = size;
        node.content = vec![Piece::Hole { len: hole }];
        host_tree(&host, node)
    };
    let read = |tree: &ChunkId| {
        let index = vault.load_index().expect("index");
        boveda_engine::read_point_file(&vault, &index, tree, "domain.xml", 16 << 20)
    };
    let err = read(&written(1 << 40, 1 << 40)).expect_err("a terabyte");
    assert!(err.to_string().contains("1099511627776 bytes in the point, more than the 16777216"), "{err}");
    // a size that lies low: what is read is counted as it comes
    let err = read(&written(10, 1 << 40)).expect_err("a terabyte said to be 10 bytes");
    assert!(err.to_string().contains("more than the 16777216"), "{err}");
    assert_eq!(read(&written(5, 5)).expect("within its bound"), vec![0; 5]);
    // a chunk of 20 MiB (of zeros: a few KiB stored) named as 10 bytes: its
    // size in the index is checked before it is decoded
    let target = WriterTarget { store: host.store.clone(), compression_level: 1, pack_size: 1 << 20, parallel: 1 };
    let known = HashSet::new();
    let writer = BlobWriter::for_host(host.keys.clone(), host.keys.new_session().expect("session"), target, &known);
    let zeros = writer.add(boveda_vault::BlobKind::Data, &vec![0u8; 20 << 20]).expect("add");
    writer.flush().expect("flush");
    let mut node = Node::new(b"domain.xml".to_vec(), NodeKind::File);
    node.size = 10;
    node.content = vec![Piece::Data { id: zeros, len: 10 }];
    let err = read(&host_tree(&host, node)).expect_err("20 MiB said to be 10 bytes");
    assert!(err.to_string().contains("more than the 16777216"), "{err}");
}

/// A root tree of the one `node`, written by `host` as it writes its
/// points' trees (so with whatever it says).
fn host_tree(host: &Host, node: boveda_vault::Node) -> ChunkId {
    let target = WriterTarget { store: host.store.clone(), compression_level: 1, pack_size: 1 << 20, parallel: 1 };
    let known = HashSet::new();
    let writer = BlobWriter::for_host(host.keys.clone(), host.keys.new_session().expect("session"), target, &known);
    let tree = boveda_vault::Tree::new(vec![node]).encode().expect("encode");
    let id = writer.add(boveda_vault::BlobKind::Tree, &tree).expect("add");
    writer.flush().expect("flush");
    id
}

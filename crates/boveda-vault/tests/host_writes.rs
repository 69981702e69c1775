//! A registered host writes with its host keys alone (no master key): the
//! vault reads every blob back byte for byte, through the index in memory
//! and through the merged index file, `check --read-data` finds nothing
//! wrong and names an altered host pack; whoever holds only the vault's
//! public key cannot make a blob the vault accepts; and a prune that
//! repacks a host's chunks keeps them under the host's ids.

use std::collections::HashSet;
use std::sync::Arc;

use boveda_store::{LocalStore, Store};
use boveda_vault::{
    BlobKind, BlobWriter, CheckOptions, ChunkIndex, CreateOptions, HostKeys, IndexObject, RecordId, Vault, VaultError,
    WriterTarget, check,
};

/// `len` bytes that do not compress, from `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut out);
    out
}

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    vault: Vault,
    host: HostKeys,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("vault")));
        let vault = Vault::create(store.clone(), b"pw", CreateOptions::for_tests("fleet")).expect("create");
        // what the server gives a host when it registers: no master key
        let host = vault.host_keys(RecordId::random());
        let host: HostKeys = serde_json::from_str(&serde_json::to_string(&host).expect("json")).expect("parse");
        Self { dir, store, vault, host }
    }

    /// Writes blobs as the host: what a host's backup session does.
    fn host_writes(&self, blobs: &[(BlobKind, Vec<u8>)]) -> Vec<boveda_vault::ChunkId> {
        let target =
            WriterTarget { store: self.store.clone(), compression_level: 1, pack_size: 256 << 10, parallel: 2 };
        let own = ChunkIndex::default();
        let session = self.host.new_session().expect("session");
        let writer = BlobWriter::for_host(self.host.clone(), session, target, &own);
        let ids = blobs.iter().map(|(kind, b)| writer.add(*kind, b).expect("add")).collect();
        writer.flush().expect("flush");
        ids
    }
}

#[test]
fn what_a_host_writes_the_vault_reads_and_checks_and_a_damaged_host_pack_is_named() {
    let f = Fixture::new();
    let blobs: Vec<(BlobKind, Vec<u8>)> = (0..40)
        .map(|i| (if i % 10 == 0 { BlobKind::Tree } else { BlobKind::Data }, noise(i, 20_000 + i as usize * 997)))
        .collect();
    let ids = f.host_writes(&blobs);
    assert_eq!(ids[3], f.host.chunk_id(&blobs[3].1), "named with the host's chunk key");
    assert_ne!(ids[3], f.vault.key().chunk_id(&blobs[3].1), "not with the vault's");

    // the vault reads them: the index merged in memory
    let index = f.vault.load_index().expect("index");
    for (id, (_, plain)) in ids.iter().zip(&blobs) {
        assert_eq!(&f.vault.read_blob(&index, id).expect("read"), plain);
    }
    assert!(index.get(&ids[0]).expect("indexed").sealed_by.is_some_and(|b| b.host == f.host.host));
    // through a merged index file, as it is built and as it is read back
    for _ in 0..2 {
        let mut cached = Vault::open(f.store.clone(), b"pw").expect("open");
        cached.use_index_cache(&f.dir.path().join("cache"));
        let merged = cached.load_index().expect("merged index");
        for (id, (_, plain)) in ids.iter().zip(&blobs) {
            assert_eq!(&cached.read_blob(&merged, id).expect("read"), plain);
        }
    }

    let report = check(&f.vault, CheckOptions { read_data: true }, &|_| {}).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.chunks_read, 40);

    // a host pack altered in the store is named
    let pack = f.store.list("packs/data").expect("list").into_iter().next().expect("a data pack");
    let mut bytes = f.store.get(&pack.name).expect("get");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let path = f.dir.path().join("vault").join(&pack.name);
    std::fs::write(&path, &bytes).expect("alter");
    let report = check(&f.vault, CheckOptions { read_data: true }, &|_| {}).expect("check");
    assert!(report.problems.iter().any(|p| p.object == pack.name), "{:?}", report.problems);
}

#[test]
fn whoever_holds_only_the_vaults_public_key_cannot_make_a_blob_the_vault_accepts() {
    let f = Fixture::new();
    let ids = f.host_writes(&[(BlobKind::Data, noise(1, 50_000))]);
    // an attacker with the public key (every host has it) and the store's
    // keys: they claim to be the host, seal their own data for the vault
    // under their own chunk key, and index it under the host's real id
    let forger =
        Vault::create(Arc::new(LocalStore::new(f.dir.path().join("other"))), b"x", CreateOptions::for_tests("forger"))
            .expect("another vault");
    let mut fake = forger.key().host_keys(f.vault.config().id, f.vault.config().chunker, f.host.host);
    fake.vault_public = f.host.vault_public;
    let scratch: Arc<dyn Store> = Arc::new(LocalStore::new(f.dir.path().join("scratch")));
    let target = WriterTarget { store: scratch.clone(), compression_level: 1, pack_size: 1 << 20, parallel: 1 };
    let own = ChunkIndex::default();
    let session = fake.new_session().expect("session");
    let by = session.sealed_by();
    let writer = BlobWriter::for_host(fake, session.clone(), target, &own);
    let forged_plain = b"attacker's bytes".to_vec();
    writer.add(BlobKind::Data, &forged_plain).expect("add");
    writer.flush().expect("flush");
    // the forged pack goes into the vault's store, indexed under the host's
    // id (the attacker knows the layout of what they wrote: the test reads it
    // with the vault's key for them)
    for o in scratch.list("packs").expect("packs") {
        f.store.put_new(&o.name, &scratch.get(&o.name).expect("get")).expect("put the forged pack");
    }
    let theirs = scratch.list("index").expect("index").remove(0);
    let mut index =
        IndexObject::open(f.vault.key(), &theirs.name, &scratch.get(&theirs.name).expect("get")).expect("layout");
    index.packs[0].entries[0].id = ids[0];
    let pack_name = boveda_vault::pack_name(index.packs[0].kind, &index.packs[0].id);
    let (name, bytes) = index.seal_for_vault(&session).expect("seal");
    f.store.put_new(&name, &bytes).expect("put the forged index object");
    assert_eq!(index.packs[0].sealed_by, Some(by));
    // a reader that finds the forged copy first refuses it
    let mut only_forged = ChunkIndex::default();
    only_forged.add_pack(&index.packs[0]);
    match f.vault.read_blob(&only_forged, &ids[0]) {
        Err(VaultError::Damaged { object, reason }) => {
            assert_eq!(object, pack_name);
            assert!(reason.contains(&ids[0].to_string()), "{reason}");
        }
        other => panic!("the forged blob was accepted: {:?}", other.map(|b| b.len())),
    }
    // and the check names the forged pack, while the host's own copy reads
    let report = check(&f.vault, CheckOptions { read_data: true }, &|_| {}).expect("check");
    assert!(report.problems.iter().any(|p| p.object == pack_name), "{:?}", report.problems);
    let _ = forged_plain;
}

#[test]
fn a_prune_that_repacks_a_hosts_chunks_keeps_them_under_the_hosts_ids() {
    let f = Fixture::new();
    let blobs: Vec<(BlobKind, Vec<u8>)> = (0..6).map(|i| (BlobKind::Data, noise(100 + i, 30_000))).collect();
    let ids = f.host_writes(&blobs);
    // the vault copies them as the repack of a prune does
    let full = f.vault.load_index().expect("index");
    let keys = f.vault.host_keys(f.host.host);
    let session = keys.new_session().expect("session");
    let empty = ChunkIndex::default();
    let writer = BlobWriter::for_host(keys, session, f.vault.writer_target(), &empty);
    for (id, _) in ids.iter().zip(&blobs) {
        let plain = f.vault.read_blob(&full, id).expect("read");
        assert_eq!(writer.add(BlobKind::Data, &plain).expect("add"), *id, "the same id under the host's keys");
    }
    writer.flush().expect("flush");
    let packs: HashSet<_> = f.store.list("packs/data").expect("list").into_iter().map(|o| o.name).collect();
    assert!(packs.len() >= 2, "the copies are in new packs");
    let report = check(&f.vault, CheckOptions { read_data: true }, &|_| {}).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn an_index_object_naming_a_pack_granted_straight_to_the_store_is_added_only_once_that_pack_is_found_as_it_says() {
    let f = Fixture::new();
    // what the host made, caught in a folder of its own
    let caught: Arc<dyn Store> = Arc::new(LocalStore::new(f.dir.path().join("host-side")));
    let target = WriterTarget { store: caught.clone(), compression_level: 1, pack_size: 256 << 10, parallel: 1 };
    let own = ChunkIndex::default();
    let writer = BlobWriter::for_host(f.host.clone(), f.host.new_session().expect("session"), target, &own);
    writer.add(BlobKind::Data, &noise(1, 50_000)).expect("add");
    writer.flush().expect("flush");
    let pack = caught.list("packs").expect("list").remove(0);
    let index = caught.list("index").expect("list").remove(0);
    let (pack_bytes, index_bytes) = (caught.get(&pack.name).expect("pack"), caught.get(&index.name).expect("index"));
    let granted = || boveda_vault::JobPacks {
        direct: std::collections::HashMap::from([(pack.name.clone(), pack.size)]),
        ..Default::default()
    };
    let add =
        |packs: &mut boveda_vault::JobPacks| f.vault.add_host_object(&f.host.host, &index.name, &index_bytes, packs);
    let refused = |direct: &mut boveda_vault::JobPacks, why: &str| {
        let err = add(direct).expect_err("refused").to_string();
        assert!(err.contains(why), "{err}");
        assert!(f.store.stat(&index.name).is_err(), "no index object was added");
    };

    // not uploaded by this job at all: neither granted nor received
    refused(&mut boveda_vault::JobPacks::default(), "which this job did not upload");
    // granted, never stored
    refused(&mut granted(), "never stored");
    // stored with other bytes of the same length (a host's garbage)
    f.store.put_new(&pack.name, &noise(9, pack_bytes.len())).expect("garbage");
    refused(&mut granted(), "not a boveda object");
    f.store.delete(&pack.name).expect("delete");
    // stored longer than granted
    let mut longer = pack_bytes.clone();
    longer.extend_from_slice(b"tail");
    f.store.put_new(&pack.name, &longer).expect("longer");
    refused(&mut granted(), "bytes in the store");
    f.store.delete(&pack.name).expect("delete");
    // another session's header (the host's ephemeral key differs)
    let mut other_session = pack_bytes.clone();
    other_session[8 + 16] ^= 1;
    f.store.put_new(&pack.name, &other_session).expect("other session");
    refused(&mut granted(), "not sealed as the index says");
    f.store.delete(&pack.name).expect("delete");

    // the pack as the host sealed it: the index object is added, the pack
    // leaves what is waiting, and the vault reads the blob
    f.store.put_new(&pack.name, &pack_bytes).expect("the pack");
    let mut direct = granted();
    add(&mut direct).expect("added");
    assert!(direct.direct.is_empty() && direct.checked.contains_key(&pack.name), "the pack was checked once");
    let loaded = f.vault.load_index().expect("index");
    let id = f.host.chunk_id(&noise(1, 50_000));
    assert_eq!(f.vault.read_blob(&loaded, &id).expect("read"), noise(1, 50_000));
}

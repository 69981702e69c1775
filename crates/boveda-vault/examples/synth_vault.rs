//! Benchmark helper: grows an existing vault's history without real
//! backups, so the requests a command makes on a long-lived vault can be
//! measured (bench/requests.sh). It adds PACKS packs of one small data blob
//! each, with their index objects, and POINTS copies of the vault's newest
//! point manifest under new ids, one minute apart. Every object is a real,
//! sealed vault object; `vault check` passes on the result (the copies
//! share their tree with the original).
//!
//! With ENTRIES, it also adds that many index entries of chunks that do
//! not exist, spread over the vault's real data packs, in index objects of
//! 200 000 entries (the size a prune consolidates to): a vault whose index
//! is as big as a 10 TB one's, to measure what opening it costs
//! (bench/index_scale.sh). `vault check` reports those chunks missing.
//!
//! cargo run --release -p boveda-vault --example synth_vault -- STORE_URL PASSPHRASE POINTS PACKS [ENTRIES]

use std::sync::atomic::{AtomicUsize, Ordering};

use boveda_vault::{BlobKind, BlobWriter, ChunkId, IndexPack, PackEntry, PointId, Vault, write_index};

/// Runs `task(0..count)` on eight threads; the first error stops it.
fn in_parallel(
    count: usize,
    task: impl Fn(usize) -> Result<(), boveda_vault::VaultError> + Sync,
) -> Result<(), boveda_vault::VaultError> {
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= count {
                            return Ok(());
                        }
                        task(n)?;
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| {
            w.join().unwrap_or_else(|_| Err(boveda_vault::VaultError::Invalid("a worker panicked".into())))
        })
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (url, pass, points, packs, entries) = match args.as_slice() {
        [_, url, pass, points, packs] => (url, pass, points, packs, "0"),
        [_, url, pass, points, packs, entries] => (url, pass, points, packs, entries.as_str()),
        _ => return Err("usage: synth_vault STORE_URL PASSPHRASE POINTS PACKS [ENTRIES]".into()),
    };
    let (points, packs, entries): (usize, usize, usize) = (points.parse()?, packs.parse()?, entries.parse()?);
    let vault = Vault::open(boveda_store::open_store(url)?, pass.as_bytes())?;
    let index = vault.load_index()?;
    in_parallel(packs, |n| {
        let writer = BlobWriter::new(&vault, &index);
        let mut blob = format!("synthetic pack {n} ").into_bytes();
        blob.extend_from_slice(&PointId::random().to_hex().into_bytes());
        writer.add(BlobKind::Data, &blob)?;
        writer.flush()
    })?;
    let newest = vault.list_points()?.pop().ok_or("the vault has no point to copy")?;
    in_parallel(points, |n| {
        let mut copy = newest.clone();
        copy.id = vault.new_point_id(&newest.item_id);
        let minutes = i64::try_from(points - n).unwrap_or(i64::MAX);
        copy.time = newest.time - jiff::SignedDuration::from_mins(minutes);
        copy.started = copy.time;
        copy.parent = None;
        vault.save_point(&copy)
    })?;
    add_index_entries(&vault, entries)?;
    println!("added {packs} packs, {points} points and {entries} index entries to {url}");
    Ok(())
}

/// Adds `entries` index entries of random chunk ids, spread over the
/// vault's data packs, in objects of 200 000 entries.
fn add_index_entries(vault: &Vault, entries: usize) -> Result<(), Box<dyn std::error::Error>> {
    const PER_OBJECT: usize = 200_000;
    let packs: Vec<_> = vault.load_index()?.packs().filter(|p| p.1 == BlobKind::Data).collect();
    if entries > 0 && packs.is_empty() {
        return Err("the vault has no data pack to point at".into());
    }
    let objects = entries.div_ceil(PER_OBJECT);
    in_parallel(objects, |n| {
        let count = PER_OBJECT.min(entries - n * PER_OBJECT);
        let mut by_pack: Vec<IndexPack> = packs
            .iter()
            .map(|&(id, kind, size)| IndexPack { id, kind, size, entries: Vec::new(), sealed_by: None })
            .collect();
        let slots = by_pack.len();
        for i in 0..count {
            let mut id = [0u8; 32];
            id[..16].copy_from_slice(&PointId::random().0);
            id[16..24].copy_from_slice(&(n as u64).to_le_bytes());
            id[24..32].copy_from_slice(&(i as u64).to_le_bytes());
            let entry = PackEntry { id: ChunkId(id), offset: 0, length: 1, raw_len: 1 };
            by_pack[i % slots].entries.push(entry);
        }
        by_pack.retain(|p| !p.entries.is_empty());
        write_index(vault, by_pack).map(|_| ())
    })
    .map_err(Into::into)
}

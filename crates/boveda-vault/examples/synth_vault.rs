//! Benchmark helper: grows an existing vault's history without real
//! backups, so the requests a command makes on a long-lived vault can be
//! measured (bench/requests.sh). It adds PACKS packs of one small data blob
//! each, with their index objects, and POINTS copies of the vault's newest
//! point manifest under new ids, one minute apart. Every object is a real,
//! sealed vault object; `vault check` passes on the result (the copies
//! share their tree with the original).
//!
//! cargo run --release -p boveda-vault --example synth_vault -- STORE_URL PASSPHRASE POINTS PACKS

use std::sync::atomic::{AtomicUsize, Ordering};

use boveda_vault::{BlobKind, BlobWriter, PointId, Vault};

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
    let [_, url, pass, points, packs] = args.as_slice() else {
        return Err("usage: synth_vault STORE_URL PASSPHRASE POINTS PACKS".into());
    };
    let (points, packs): (usize, usize) = (points.parse()?, packs.parse()?);
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
        copy.id = PointId::random();
        let minutes = i64::try_from(points - n).unwrap_or(i64::MAX);
        copy.time = newest.time - jiff::SignedDuration::from_mins(minutes);
        copy.started = copy.time;
        copy.parent = None;
        vault.save_point(&copy)
    })?;
    println!("added {packs} packs and {points} points to {url}");
    Ok(())
}

//! Reading many chunks for a restore: each pack once, in parallel.
//!
//! The chunks wanted are grouped by pack; within a pack, blobs close to each
//! other are fetched in one ranged read (a local `pread`, one ranged GET on
//! an object store), then decoded and handed to the caller once per use.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use boveda_vault::{BlobRef, ChunkId, ChunkIndex, PackId, Vault, pack_name};
use rayon::prelude::*;

use crate::error::{EngineError, Result};

/// Reads of one pack are merged when the gap between needed blobs is below this.
const MAX_READ_GAP: u64 = 1 << 20;
/// And one merged read holds at most this much.
const MAX_READ: u64 = 32 << 20;

/// What to do with fetched chunks. `State` lives for one merged read on one
/// thread (a cache of open files, say).
pub(crate) trait ChunkSink<U>: Sync {
    type State: Default;
    /// One use of a chunk's plaintext.
    fn deliver(&self, state: &mut Self::State, usage: &U, plain: &[u8]);
    /// A use that cannot be served, with the reason.
    fn fail(&self, usage: &U, why: String);
}

/// Fetches every chunk in `wanted` and delivers it to each of its uses.
///
/// # Errors
/// `Cancelled` when `cancel` is set; every other failure goes to
/// [`ChunkSink::fail`] for the uses it affects.
pub(crate) fn fetch_chunks<U: Sync, S: ChunkSink<U>>(
    vault: &Vault,
    index: &ChunkIndex,
    wanted: &HashMap<ChunkId, Vec<U>>,
    cancel: Option<&AtomicBool>,
    sink: &S,
) -> Result<()> {
    let mut by_pack: HashMap<PackId, Vec<(BlobRef, ChunkId)>> = HashMap::new();
    for (id, uses) in wanted {
        match index.get(id) {
            Some(r) => by_pack.entry(r.pack).or_default().push((r, *id)),
            None => uses.iter().for_each(|u| sink.fail(u, format!("chunk {id} is listed by no index"))),
        }
    }
    let cancelled = AtomicBool::new(false);
    let packs: Vec<_> = by_pack.into_values().collect();
    // as many reads at once as the vault's store serves well (on a store
    // with latency, threads wait on the network more than they compute),
    // and at least one per core for decoding
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(vault.parallel_requests().max(cores))
        .thread_name(|n| format!("pack-read-{n}"))
        .build()
        .map_err(|e| EngineError::Vault(boveda_vault::VaultError::Invalid(format!("cannot start readers: {e}"))))?;
    pool.install(|| {
        packs.into_par_iter().for_each(|mut blobs| {
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                cancelled.store(true, Ordering::Relaxed);
                return;
            }
            blobs.sort_by_key(|(r, _)| r.offset);
            let mut start = 0;
            while start < blobs.len() {
                let run_start = u64::from(blobs[start].0.offset);
                let mut run_end = run_start + u64::from(blobs[start].0.length);
                let mut end = start + 1;
                while let Some((r, _)) = blobs.get(end) {
                    let (o, l) = (u64::from(r.offset), u64::from(r.length));
                    if o > run_end + MAX_READ_GAP || o + l - run_start > MAX_READ {
                        break;
                    }
                    run_end = run_end.max(o + l);
                    end += 1;
                }
                read_run(vault, &blobs[start..end], run_start, run_end, wanted, sink);
                start = end;
            }
        })
    });
    if cancelled.into_inner() {
        return Err(EngineError::Cancelled);
    }
    Ok(())
}

fn read_run<U: Sync, S: ChunkSink<U>>(
    vault: &Vault,
    run: &[(BlobRef, ChunkId)],
    run_start: u64,
    run_end: u64,
    wanted: &HashMap<ChunkId, Vec<U>>,
    sink: &S,
) {
    let uses = |id: &ChunkId| wanted.get(id).map(Vec::as_slice).unwrap_or_default();
    let (first, _) = run[0];
    // one read buffer per reading thread, reused read after read
    thread_local!(static READ: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) });
    READ.with_borrow_mut(|bytes| {
        let name = pack_name(first.kind, &first.pack);
        match vault.store().get_range_into(&name, run_start, run_end - run_start, bytes) {
            Ok(()) => decode_run(vault, run, run_start, bytes, wanted, sink),
            Err(e) => {
                for (_, id) in run {
                    uses(id).iter().for_each(|u| sink.fail(u, e.to_string()));
                }
            }
        }
    });
}

fn decode_run<U: Sync, S: ChunkSink<U>>(
    vault: &Vault,
    run: &[(BlobRef, ChunkId)],
    run_start: u64,
    bytes: &mut [u8],
    wanted: &HashMap<ChunkId, Vec<U>>,
    sink: &S,
) {
    // decompressed chunks go into one buffer per thread, reused
    thread_local!(static PLAIN: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) });
    let uses = |id: &ChunkId| wanted.get(id).map(Vec::as_slice).unwrap_or_default();
    let mut state = S::State::default();
    PLAIN.with_borrow_mut(|out| {
        for (r, id) in run {
            let off = (u64::from(r.offset) - run_start) as usize;
            let Some(sealed) = bytes.get_mut(off..off + r.length as usize) else {
                let why = format!("chunk {id}: the read of its pack came back short");
                uses(id).iter().for_each(|u| sink.fail(u, why.clone()));
                continue;
            };
            // opened where it lies in the read buffer, no copy; a blob that
            // does not decode may have been damaged on the way: it is
            // fetched once more, alone, before it is called damaged
            let decoded = match vault.decode_blob_in_place(r, id, sealed, out) {
                Ok(plain) => Ok(Cow::Borrowed(plain)),
                Err(first) => {
                    let name = pack_name(r.kind, &r.pack);
                    match vault.store().get_range(&name, u64::from(r.offset), u64::from(r.length)) {
                        Ok(again) => vault
                            .decode_blob_at(r, id, &again)
                            .map(Cow::Owned)
                            .map_err(|e| format!("{e} (fetched twice)")),
                        Err(_) => Err(first.to_string()),
                    }
                }
            };
            match decoded {
                Ok(plain) => uses(id).iter().for_each(|u| sink.deliver(&mut state, u, &plain)),
                Err(e) => uses(id).iter().for_each(|u| sink.fail(u, e.clone())),
            }
        }
    });
}

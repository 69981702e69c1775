//! The merged index: every index object of a vault merged into one table
//! sorted by chunk id, in a local file that is memory-mapped rather than
//! read. Opening a vault with ten million indexed chunks then costs one
//! listing of `index/`, a pass over the file to authenticate it, and no
//! memory in proportion to the vault: a lookup touches the few pages its
//! binary search visits.
//!
//! It is only a cache, below the vault's cache folder: the file is
//! authenticated with a key derived from the master key, a file that is
//! missing, damaged, of another format or far behind the store is built
//! again from the index objects, and deleting it loses nothing. The file
//! names the index objects it merged; objects listed since are read and
//! added in memory, and packs of objects no longer listed are left out.
//!
//! Layout (little-endian): a header (magic, entry count, pack count, the
//! size of the names, the count of distinct chunk ids, the MAC), then the
//! entries sorted by chunk id (48 bytes each: id, pack position, offset,
//! length, raw length), the packs sorted by pack id (104 bytes each: id,
//! size, kind, whether a host sealed it, the index object that listed it,
//! its entry count, who sealed it), and the
//! merged objects' names, one a line. Entries for one chunk id keep the
//! order in which their index objects were listed: the first wins.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::object::IndexObject;
use crate::blob::BlobKind;
use crate::host_keys::SealedBy;
use crate::{ChunkId, PackId};

const MAGIC: &[u8; 8] = b"BVDMIX02";
const HEADER: usize = 80;
/// The header's bytes before its MAC, which the MAC covers.
const HEADER_FIELDS: usize = 48;
const ENTRY: usize = 48;
const PACK: usize = 104;
/// Entries a lookup reads at once (3 KiB); the first id of each block is
/// kept in memory (32 bytes per 64 entries: 5 MB for 10 million).
const BLOCK: usize = 64;
/// Entries are spread over this many files by their id's first byte while
/// a merged index is built, so that sorting needs memory for one bucket.
const BUCKETS: usize = 256;

/// One pack of the merged index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MergedPack {
    pub id: PackId,
    pub kind: BlobKind,
    pub size: u64,
    /// The index object that listed it, by its position in [`MergedIndex::names`].
    pub source: u32,
    pub entries: u32,
    pub sealed_by: Option<SealedBy>,
}

/// Where a chunk is: a pack by position, and the blob's place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub pack: u32,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
}

/// A merged index file, mapped.
pub(crate) struct MergedIndex {
    /// The entries are read with `pread`, a block at a time: a lookup
    /// costs one read of the page cache and no memory, where a mapping
    /// would keep every page it faulted in (and the pages around them).
    file: File,
    /// The first id of every block of [`BLOCK`] entries.
    fences: Vec<[u8; 32]>,
    /// The packs and names, mapped: small beside the entries.
    map: memmap2::Mmap,
    entries: usize,
    packs: usize,
    distinct: u64,
    names: Vec<String>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn id_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut x = [0u8; N];
    x.copy_from_slice(&b[at..at + N]);
    x
}

impl MergedIndex {
    /// Opens a merged index file and authenticates all of it (read in
    /// pieces, so the check costs no memory). `None` when the file is
    /// missing, damaged, altered or of another format: the caller builds
    /// it again.
    pub fn open(path: &Path, mac_key: &[u8; 32]) -> Option<Self> {
        let mut file = File::open(path).ok()?;
        let mut header = [0u8; HEADER];
        file.read_exact(&mut header).ok()?;
        if &header[..8] != MAGIC {
            return None;
        }
        let entries = usize::try_from(u64_at(&header, 8)).ok()?;
        let packs = usize::try_from(u64_at(&header, 16)).ok()?;
        let names_len = usize::try_from(u64_at(&header, 24)).ok()?;
        let distinct = u64_at(&header, 32);
        let body = entries.checked_mul(ENTRY)?.checked_add(packs.checked_mul(PACK)?)?.checked_add(names_len)?;
        if file.metadata().ok()?.len() != u64::try_from(HEADER.checked_add(body)?).ok()? {
            return None;
        }
        // One pass authenticates the file and notes the blocks' first ids.
        let mut body = blake3::Hasher::new();
        let mut fences = Vec::with_capacity(entries.div_ceil(BLOCK));
        let mut buf = vec![0u8; BLOCK * ENTRY * 256];
        let mut left = entries * ENTRY;
        while left > 0 {
            let n = left.min(buf.len());
            file.read_exact(&mut buf[..n]).ok()?;
            body.update(&buf[..n]);
            fences.extend(buf[..n].chunks(BLOCK * ENTRY).map(|block| id_at::<32>(block, 0)));
            left -= n;
        }
        loop {
            let n = file.read(&mut buf).ok()?;
            if n == 0 {
                break;
            }
            body.update(&buf[..n]);
        }
        if file_mac(mac_key, &header, &body.finalize()) != blake3::Hash::from_bytes(id_at(&header, HEADER_FIELDS)) {
            return None;
        }
        // SAFETY: the file is only ever replaced by a rename, never written
        // in place, so the mapped bytes are the ones just authenticated.
        let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let names_at = HEADER + entries * ENTRY + packs * PACK;
        let names = std::str::from_utf8(map.get(names_at..)?).ok()?.lines().map(str::to_string).collect();
        Some(Self { file, fences, map, entries, packs, distinct, names })
    }

    /// The index objects merged, in the order they were listed.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn pack_count(&self) -> usize {
        self.packs
    }

    /// Distinct chunk ids among all entries.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    pub fn pack(&self, pos: u32) -> MergedPack {
        let at = HEADER + self.entries * ENTRY + pos as usize * PACK;
        let b = &self.map[..];
        MergedPack {
            id: PackId(id_at(b, at)),
            size: u64_at(b, at + 32),
            kind: if b[at + 40] == BlobKind::Tree as u8 { BlobKind::Tree } else { BlobKind::Data },
            source: u32_at(b, at + 44),
            entries: u32_at(b, at + 48),
            sealed_by: if b[at + 41] == 1 { SealedBy::from_bytes(&b[at + 56..at + 104]) } else { None },
        }
    }

    /// The position of a pack, by binary search.
    pub fn find_pack(&self, id: &PackId) -> Option<u32> {
        let base = HEADER + self.entries * ENTRY;
        let key = |i: usize| &self.map[base + i * PACK..base + i * PACK + 32];
        let (mut lo, mut hi) = (0, self.packs);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match key(mid).cmp(&id.0[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return u32::try_from(mid).ok(),
            }
        }
        None
    }

    /// Every location of a chunk, first location first. A read error
    /// (the cache's disk failing) finds nothing.
    pub fn locations(&self, id: ChunkId) -> Vec<Loc> {
        // The first entry not below the id is in the last block that
        // starts below it (or at the start of the next one); the id's
        // entries may run on across blocks.
        let first = self.fences.partition_point(|f| f[..] < id.0[..]).saturating_sub(1);
        let mut found = Vec::new();
        let mut buf = [0u8; BLOCK * ENTRY];
        for block in first..self.fences.len() {
            let start = block * BLOCK;
            let n = BLOCK.min(self.entries - start);
            let at = (HEADER + start * ENTRY) as u64;
            if std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut buf[..n * ENTRY], at).is_err() {
                return Vec::new();
            }
            for e in buf[..n * ENTRY].chunks_exact(ENTRY) {
                match e[..32].cmp(&id.0[..]) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Equal => found.push(Loc {
                        pack: u32_at(e, 32),
                        offset: u32_at(e, 36),
                        length: u32_at(e, 40),
                        raw_len: u32_at(e, 44),
                    }),
                    std::cmp::Ordering::Greater => return found,
                }
            }
        }
        found
    }
}

/// Builds a merged index file from index objects given one at a time, in
/// memory for one bucket of entries at most.
pub(crate) struct MergedIndexBuilder {
    dir: PathBuf,
    buckets: Vec<BufWriter<File>>,
    /// Packs in the order they were added (their "order"), with their source.
    packs: Vec<MergedPack>,
    names: Vec<String>,
}

impl MergedIndexBuilder {
    /// Starts a build in a fresh temporary folder beside `path`.
    pub fn new(path: &Path) -> io::Result<Self> {
        let parent = path.parent().ok_or_else(|| io::Error::other("merged index path has no folder"))?;
        fs::create_dir_all(parent)?;
        let dir = parent.join(format!(".merging-{}-{}", std::process::id(), crate::RecordId::random().short()));
        fs::create_dir(&dir)?;
        let buckets = (0..BUCKETS)
            .map(|b| File::create(dir.join(format!("{b:02x}"))).map(|f| BufWriter::with_capacity(16 << 10, f)))
            .collect::<io::Result<_>>();
        match buckets {
            Ok(buckets) => Ok(Self { dir, buckets, packs: Vec::new(), names: Vec::new() }),
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Adds one index object; objects must come in listing order.
    pub fn add(&mut self, name: &str, object: &IndexObject) -> io::Result<()> {
        let source = u32::try_from(self.names.len()).map_err(io::Error::other)?;
        self.names.push(name.to_string());
        for pack in &object.packs {
            let order = u32::try_from(self.packs.len()).map_err(io::Error::other)?;
            let entries = u32::try_from(pack.entries.len()).map_err(io::Error::other)?;
            self.packs.push(MergedPack {
                id: pack.id,
                kind: pack.kind,
                size: pack.size,
                source,
                entries,
                sealed_by: pack.sealed_by,
            });
            for e in &pack.entries {
                let mut rec = [0u8; ENTRY];
                rec[..32].copy_from_slice(&e.id.0);
                rec[32..36].copy_from_slice(&order.to_le_bytes());
                rec[36..40].copy_from_slice(&e.offset.to_le_bytes());
                rec[40..44].copy_from_slice(&e.length.to_le_bytes());
                rec[44..48].copy_from_slice(&e.raw_len.to_le_bytes());
                self.buckets[usize::from(e.id.0[0])].write_all(&rec)?;
            }
        }
        Ok(())
    }

    /// Writes the merged index to `path` (through a temporary file and a
    /// rename, so a reader never maps half a file).
    pub fn finish(mut self, path: &Path, mac_key: &[u8; 32]) -> io::Result<()> {
        let result = self.write(path, mac_key);
        let _ = fs::remove_dir_all(&self.dir);
        result
    }

    fn write(&mut self, path: &Path, mac_key: &[u8; 32]) -> io::Result<()> {
        for b in &mut self.buckets {
            b.flush()?;
        }
        // Packs sorted by id; a pack listed twice (a prune wrote its new
        // index object before deleting the old one) keeps its first listing.
        let mut by_id: Vec<u32> = (0..u32::try_from(self.packs.len()).map_err(io::Error::other)?).collect();
        by_id.sort_unstable_by_key(|&o| (self.packs[o as usize].id, o));
        let mut position = vec![0u32; self.packs.len()];
        let mut unique: Vec<u32> = Vec::with_capacity(by_id.len());
        for &o in &by_id {
            if unique.last().is_none_or(|&u| self.packs[u as usize].id != self.packs[o as usize].id) {
                unique.push(o);
            }
            position[o as usize] = u32::try_from(unique.len() - 1).map_err(io::Error::other)?;
        }

        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let written = self.write_file(&tmp, &position, &unique, mac_key).and_then(|()| fs::rename(&tmp, path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    fn write_file(&self, tmp: &Path, position: &[u32], unique: &[u32], mac_key: &[u8; 32]) -> io::Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
        out.write_all(&[0u8; HEADER])?;
        let mut body = blake3::Hasher::new();
        let (mut entries, mut distinct) = (0u64, 0u64);
        for b in 0..BUCKETS {
            let mut bytes = Vec::new();
            BufReader::new(File::open(self.dir.join(format!("{b:02x}")))?).read_to_end(&mut bytes)?;
            let mut recs: Vec<[u8; ENTRY]> = bytes
                .chunks_exact(ENTRY)
                .map(|r| {
                    let mut rec = [0u8; ENTRY];
                    rec.copy_from_slice(r);
                    rec
                })
                .collect();
            // by id, then by the order the packs were listed in: first wins
            recs.sort_unstable_by(|x, y| x[..32].cmp(&y[..32]).then(u32_at(x, 32).cmp(&u32_at(y, 32))));
            for rec in &mut recs {
                let order = u32_at(rec, 32) as usize;
                rec[32..36].copy_from_slice(&position[order].to_le_bytes());
                body.update(rec);
                out.write_all(rec)?;
                entries += 1;
            }
            distinct += count_distinct(&recs);
        }
        for &o in unique {
            let p = &self.packs[o as usize];
            let mut rec = [0u8; PACK];
            rec[..32].copy_from_slice(&p.id.0);
            rec[32..40].copy_from_slice(&p.size.to_le_bytes());
            rec[40] = p.kind as u8;
            rec[44..48].copy_from_slice(&p.source.to_le_bytes());
            rec[48..52].copy_from_slice(&p.entries.to_le_bytes());
            if let Some(by) = &p.sealed_by {
                rec[41] = 1;
                rec[56..104].copy_from_slice(&by.to_bytes());
            }
            body.update(&rec);
            out.write_all(&rec)?;
        }
        let mut names = String::new();
        for n in &self.names {
            names.push_str(n);
            names.push('\n');
        }
        body.update(names.as_bytes());
        out.write_all(names.as_bytes())?;
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&entries.to_le_bytes());
        header[16..24].copy_from_slice(&(unique.len() as u64).to_le_bytes());
        header[24..32].copy_from_slice(&(names.len() as u64).to_le_bytes());
        header[32..40].copy_from_slice(&distinct.to_le_bytes());
        let mac = file_mac(mac_key, &header, &body.finalize());
        header[HEADER_FIELDS..].copy_from_slice(mac.as_bytes());
        let mut file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header)
    }
}

/// Distinct ids among records sorted by id.
fn count_distinct(recs: &[[u8; ENTRY]]) -> u64 {
    let mut n = 0;
    let mut last: Option<&[u8]> = None;
    for r in recs {
        if last != Some(&r[..32]) {
            n += 1;
        }
        last = Some(&r[..32]);
    }
    n
}

/// The file's MAC: its header fields and the hash of its body, keyed.
fn file_mac(mac_key: &[u8; 32], header: &[u8; HEADER], body: &blake3::Hash) -> blake3::Hash {
    let mut mac = blake3::Hasher::new_keyed(mac_key);
    mac.update(&header[..HEADER_FIELDS]);
    mac.update(body.as_bytes());
    mac.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::IndexPack;
    use crate::pack::PackEntry;

    fn id(n: u32) -> ChunkId {
        ChunkId(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    /// Every id's locations come back in listing order, also when one id
    /// has so many entries that they run across several blocks.
    #[test]
    fn lookups_find_every_location_across_blocks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("index.merged");
        let key = [7u8; 32];
        let mut builder = MergedIndexBuilder::new(&path).expect("builder");
        let mut expected: std::collections::HashMap<ChunkId, Vec<(PackId, u32)>> = Default::default();
        for obj in 0..30u32 {
            let packs = (0..10u32)
                .map(|p| {
                    let pack = PackId(*blake3::hash(&(obj * 10 + p).to_le_bytes()).as_bytes());
                    // 20 ids of their own, and id 0 and id 1 in every pack: 300 entries each
                    let entries: Vec<PackEntry> = (0..20u32)
                        .map(|e| id(1000 + obj * 1000 + p * 20 + e))
                        .chain([id(0), id(1)])
                        .enumerate()
                        .map(|(i, chunk)| PackEntry { id: chunk, offset: i as u32, length: 1, raw_len: 1 })
                        .collect();
                    for e in &entries {
                        expected.entry(e.id).or_default().push((pack, e.offset));
                    }
                    IndexPack { id: pack, kind: BlobKind::Data, size: 1, entries, sealed_by: None }
                })
                .collect();
            builder.add(&format!("index/{obj:064}"), &IndexObject { packs }).expect("add");
        }
        builder.finish(&path, &key).expect("finish");
        let merged = MergedIndex::open(&path, &key).expect("open");
        assert_eq!(merged.distinct(), expected.len() as u64);
        assert_eq!(merged.pack_count(), 300);
        for (chunk, want) in &expected {
            let got: Vec<(PackId, u32)> =
                merged.locations(*chunk).iter().map(|l| (merged.pack(l.pack).id, l.offset)).collect();
            assert_eq!(&got, want, "chunk {chunk}");
        }
        assert!(merged.locations(ChunkId([0; 32])).is_empty());
        assert!(merged.locations(ChunkId([0xff; 32])).is_empty());
        assert!(MergedIndex::open(&path, &[8u8; 32]).is_none(), "another key's file is refused");
    }
}

//! The drive format of offline seeding (docs/FORMAT.md, "Offline seeding
//! drives"): what a drive holds and how each vault object is sealed on it.
//!
//! A drive holds `boveda-drive.json` ([`DriveLabel`]), `objects/<name>`
//! (each vault object sealed under the drive's key in segments of
//! [`SEGMENT`] bytes) and `journal.jsonl` (one [`JournalEntry`] per object
//! placed). Every segment is sealed with AES-256-GCM under its own nonce;
//! its associated data ([`SegmentAad`]) names the import job, the object,
//! the segment's position and whether it is the last, so no segment opens
//! when moved to another object, job or position, and none can be cut
//! off the end. Placing files on drives is the service's work; this module
//! only knows bytes.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::crypto::DriveSealer;

/// The label's file name on a drive.
pub const DRIVE_LABEL: &str = "boveda-drive.json";
/// The journal's file name on a drive.
pub const DRIVE_JOURNAL: &str = "journal.jsonl";
/// The folder of sealed objects on a drive.
pub const DRIVE_OBJECTS: &str = "objects";
/// An object is sealed in segments of this many bytes (the last shorter),
/// each under its own nonce: one segment is read, hashed, sealed and
/// written while it stays in the CPU's cache.
pub const SEGMENT: usize = 1 << 20;
/// The drive format this version writes and reads: 2 seals with
/// AES-256-GCM (1, of development builds, with XChaCha20-Poly1305).
pub const DRIVE_FORMAT: u32 = 2;

/// What `boveda-drive.json` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriveLabel {
    pub format: u32,
    pub drive_id: String,
    pub import_job: String,
    pub import_job_id: String,
    pub vault_id: String,
    /// Keyed BLAKE3 of the drive id under the drive key: tells a wrong key
    /// from an altered object.
    #[serde(default)]
    pub key_check: String,
}

/// One line of a drive's journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub name: String,
    pub size: u64,
    pub blake3: String,
    pub import_job: String,
}

/// The label's key check: the drive id hashed under the drive key.
pub fn key_check(key: &[u8; 32], drive_id: &str) -> String {
    blake3::keyed_hash(key, format!("boveda drive key check\0{drive_id}").as_bytes()).to_hex().to_string()
}

/// Segments of an object of `size` bytes: at least one, so an empty
/// object has a tag too.
pub fn segments(size: u64) -> u64 {
    size.div_ceil(SEGMENT as u64).max(1)
}

/// Bytes an object of `size` bytes takes sealed on a drive.
pub fn sealed_len(size: u64) -> u64 {
    size + segments(size) * DriveSealer::OVERHEAD as u64
}

/// The associated data of one segment: the import job, the object's name,
/// the segment's position and whether it is the last.
pub struct SegmentAad(Vec<u8>, usize);

impl SegmentAad {
    pub fn new(job_id: &str, name: &str) -> Self {
        let base = format!("boveda-drive\0{job_id}\0{name}\0").into_bytes();
        let len = base.len();
        Self(base, len)
    }

    /// The associated data of segment `index`.
    pub fn of(&mut self, index: u64, last: bool) -> &[u8] {
        self.0.truncate(self.1);
        self.0.extend_from_slice(&index.to_le_bytes());
        self.0.push(u8::from(last));
        &self.0
    }
}

/// Why sealing one object stopped.
#[derive(Debug)]
pub enum SealError {
    /// Reading the object.
    Source(std::io::Error),
    /// The object is not of the size and BLAKE3 checksum it was said to be.
    Checksum,
    /// Writing the sealed segments.
    Drive(std::io::Error),
}

/// Reads an object of `size` bytes whose BLAKE3 checksum is `blake3` from
/// `input`, segment by segment, and writes each segment sealed to `out`,
/// hashing as it goes. `buf` is room for one sealed segment, reused. An
/// input shorter, longer or other than said is [`SealError::Checksum`].
///
/// # Errors
/// See [`SealError`].
pub fn seal_object(
    input: &mut impl Read,
    out: &mut impl Write,
    sealer: &DriveSealer,
    aad: &mut SegmentAad,
    (size, blake3): (u64, &str),
    buf: &mut Vec<u8>,
) -> Result<(), SealError> {
    let mut hasher = blake3::Hasher::new();
    let count = segments(size);
    let mut left = size;
    for index in 0..count {
        let len = left.min(SEGMENT as u64) as usize;
        left -= len as u64;
        buf.resize(len + DriveSealer::OVERHEAD, 0);
        let body = &mut buf[DriveSealer::NONCE_LEN..DriveSealer::NONCE_LEN + len];
        match input.read_exact(body) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(SealError::Checksum),
            Err(e) => return Err(SealError::Source(e)),
        }
        hasher.update(body);
        sealer.seal_in_place(aad.of(index, index + 1 == count), buf).map_err(|_| SealError::Checksum)?;
        out.write_all(buf).map_err(SealError::Drive)?;
    }
    // longer than said, or another content
    let mut byte = [0u8; 1];
    if input.read(&mut byte).map_err(SealError::Source)? != 0 || hasher.finalize().to_hex().as_str() != blake3 {
        return Err(SealError::Checksum);
    }
    Ok(())
}

/// A sealed object that does not open: altered, cut, moved, or sealed
/// under another key.
#[derive(Debug, PartialEq, Eq)]
pub struct NotAuthentic;

/// Opens a sealed object of `size` bytes in place, segment by segment,
/// and returns its bytes (moved to the head of `sealed`). A file of
/// another length than `size` sealed is an altered one.
///
/// # Errors
/// [`NotAuthentic`] when any segment does not open.
pub fn open_object<'a>(
    sealer: &DriveSealer,
    aad: &mut SegmentAad,
    size: u64,
    sealed: &'a mut [u8],
) -> Result<&'a [u8], NotAuthentic> {
    if sealed.len() as u64 != sealed_len(size) {
        return Err(NotAuthentic);
    }
    let count = segments(size);
    let (mut read, mut written) = (0usize, 0usize);
    for index in 0..count {
        let len = (size - written as u64).min(SEGMENT as u64) as usize;
        let end = read + len + DriveSealer::OVERHEAD;
        sealer.open_in_place(aad.of(index, index + 1 == count), &mut sealed[read..end]).map_err(|_| NotAuthentic)?;
        sealed.copy_within(read + DriveSealer::NONCE_LEN..read + DriveSealer::NONCE_LEN + len, written);
        read = end;
        written += len;
    }
    Ok(&sealed[..written])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seal(data: &[u8], claimed: (u64, &str), name: &str) -> Result<Vec<u8>, &'static str> {
        let mut out = Vec::new();
        let mut aad = SegmentAad::new("job", name);
        match seal_object(&mut &data[..], &mut out, &DriveSealer::new(&[9; 32]), &mut aad, claimed, &mut Vec::new()) {
            Ok(()) => Ok(out),
            Err(SealError::Checksum) => Err("checksum"),
            Err(_) => Err("io"),
        }
    }

    fn hash(data: &[u8]) -> String {
        blake3::hash(data).to_hex().to_string()
    }

    fn open(bytes: &mut [u8], size: u64, name: &str) -> Result<Vec<u8>, NotAuthentic> {
        let mut aad = SegmentAad::new("job", name);
        open_object(&DriveSealer::new(&[9; 32]), &mut aad, size, bytes).map(<[u8]>::to_vec)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn objects_round_trip_at_and_around_segment_boundaries(
            segs in 0usize..3, delta in -2i64..3, seed in any::<u8>()
        ) {
            let len = (segs as i64 * SEGMENT as i64 + delta).max(0) as usize;
            let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let mut bytes = seal(&data, (len as u64, &hash(&data)), "packs/x").expect("seal");
            prop_assert_eq!(bytes.len() as u64, sealed_len(len as u64));
            prop_assert_eq!(open(&mut bytes, len as u64, "packs/x"), Ok(data));
        }
    }

    #[test]
    fn a_segment_moved_cut_off_altered_or_renamed_does_not_open() {
        let data: Vec<u8> = (0..3 * SEGMENT).map(|i| (i * 7 % 253) as u8).collect();
        let good = seal(&data, (data.len() as u64, &hash(&data)), "packs/x").expect("seal");
        let seg = SEGMENT + DriveSealer::OVERHEAD;
        let size = data.len() as u64;

        let mut swapped = good.clone();
        swapped[..seg].copy_from_slice(&good[seg..2 * seg]);
        swapped[seg..2 * seg].copy_from_slice(&good[..seg]);
        assert!(open(&mut swapped, size, "packs/x").is_err(), "two segments swapped");
        // the last segment dropped, and the object claimed that much shorter
        let mut cut = good[..2 * seg].to_vec();
        assert!(open(&mut cut, 2 * SEGMENT as u64, "packs/x").is_err(), "the last segment cut off");
        let mut short = good[..good.len() - 1].to_vec();
        assert!(open(&mut short, size, "packs/x").is_err(), "one byte short");
        let mut flipped = good.clone();
        flipped[2 * seg + 100] ^= 0x20;
        assert!(open(&mut flipped, size, "packs/x").is_err(), "a bit flipped");
        let mut other_name = good.clone();
        assert!(open(&mut other_name, size, "packs/y").is_err(), "renamed");
        let mut intact = good;
        assert_eq!(open(&mut intact, size, "packs/x"), Ok(data));
    }

    #[test]
    fn an_object_longer_shorter_or_other_than_said_is_refused() {
        let data: Vec<u8> = (0..SEGMENT + 10).map(|i| (i % 256) as u8).collect();
        let claimed = (data.len() as u64, hash(&data));
        let said = (claimed.0, claimed.1.as_str());
        assert_eq!(seal(&data[..data.len() - 1], said, "packs/x"), Err("checksum"), "shorter");
        let mut longer = data.clone();
        longer.push(0);
        assert_eq!(seal(&longer, said, "packs/x"), Err("checksum"), "longer");
        let mut other = data.clone();
        other[5] ^= 1;
        assert_eq!(seal(&other, said, "packs/x"), Err("checksum"), "altered");
    }

    #[test]
    fn labels_and_journal_lines_round_trip_as_json() {
        let label = DriveLabel {
            format: DRIVE_FORMAT,
            drive_id: "0a1b2c3d".into(),
            import_job: "seed".into(),
            import_job_id: "00".into(),
            vault_id: "11".into(),
            key_check: key_check(&[3; 32], "0a1b2c3d"),
        };
        let back: DriveLabel = serde_json::from_slice(&serde_json::to_vec(&label).expect("json")).expect("parse");
        assert_eq!(back, label);
        assert_ne!(key_check(&[3; 32], "0a1b2c3d"), key_check(&[4; 32], "0a1b2c3d"), "another key, another check");
        let entry = JournalEntry { name: "packs/x".into(), size: 5, blake3: hash(b"hello"), import_job: "seed".into() };
        let back: JournalEntry = serde_json::from_str(&serde_json::to_string(&entry).expect("json")).expect("parse");
        assert_eq!(back, entry);
    }
}

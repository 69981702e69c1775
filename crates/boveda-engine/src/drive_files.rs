//! Offline seeding's drives as files: a drive's label and journal, the
//! lock a diskprep holds, and placing one sealed object on a drive so that
//! it appears whole or not at all. The bytes are
//! `boveda_vault::drive_format`; which object goes to which drive, and the
//! import job's records, are the control plane's.
//!
//! A drive (a mounted file system, or any folder) holds:
//! - `boveda-drive.json`: the drive's id, its import job (name and id) and
//!   the vault's id;
//! - `objects/<name>`: each vault object sealed under the drive's key in
//!   segments of 1 MiB;
//! - `journal.jsonl`: one line per object, appended once it is durable on
//!   the drive: name, size and BLAKE3 checksum of the vault object, and the
//!   import job.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use boveda_vault::DriveSealer;
use boveda_vault::drive_format::{
    self, DRIVE_FORMAT, DRIVE_LABEL, DRIVE_OBJECTS, DriveLabel, JournalEntry, SealError, SegmentAad,
};

use crate::error::{EngineError, Result};

/// A drive's label; `None` when the folder holds none (not a boveda drive
/// yet).
///
/// # Errors
/// `Drive` for a label that does not parse or is of another drive format
/// (naming the drive); `Io` when it cannot be read.
pub fn read_label(drive: &Path) -> Result<Option<DriveLabel>> {
    let bad = |reason: String| EngineError::Drive { path: drive.to_path_buf(), reason };
    match std::fs::read(drive.join(DRIVE_LABEL)) {
        Ok(bytes) => {
            let label: DriveLabel =
                serde_json::from_slice(&bytes).map_err(|e| bad(format!("{DRIVE_LABEL} does not parse: {e}")))?;
            if label.format != DRIVE_FORMAT {
                return Err(bad(format!(
                    "drive {} is in drive format {}, this boveda reads format {DRIVE_FORMAT}: prepare it again with this version",
                    label.drive_id, label.format
                )));
            }
            Ok(Some(label))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::io(drive, e)),
    }
}

/// The entries of a journal (none when it does not exist); a last line cut
/// short by a kill is ignored.
///
/// # Errors
/// `Io` when it cannot be read.
pub fn read_journal(path: &Path) -> Result<Vec<JournalEntry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EngineError::io(path, e)),
    };
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// Appends a journal line. Its object is durable before it; the line
/// itself is synced by [`sync_file`] at the end of a run (a line lost in a
/// crash only makes the re-run copy its object again).
///
/// # Errors
/// `Io` naming the journal.
pub fn append_journal_line(path: &Path, entry: &JournalEntry) -> Result<()> {
    let mut line = serde_json::to_vec(entry).map_err(|e| EngineError::io(path, std::io::Error::other(e)))?;
    line.push(b'\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(&line))
        .map_err(|e| EngineError::io(path, e))
}

/// Makes a file's data durable; a file that does not exist is left alone.
///
/// # Errors
/// `Io` naming it.
pub fn sync_file(path: &Path) -> Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_all().map_err(|e| EngineError::io(path, e)),
        Err(_) => Ok(()),
    }
}

/// Writes `body` at `path` whole or not at all: a temporary file beside
/// it, made durable, renamed over it.
///
/// # Errors
/// `Io` naming the path.
pub fn write_atomically(path: &Path, body: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, body)
        .and_then(|()| File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            EngineError::io(path, e)
        })
}

/// Bytes free for this user in the file system holding `dir`.
///
/// # Errors
/// `Io` when the file system cannot be asked.
pub fn free_space(dir: &Path) -> Result<u64> {
    rustix::fs::statvfs(dir).map(|s| s.f_bavail.saturating_mul(s.f_frsize)).map_err(|e| EngineError::io(dir, e.into()))
}

/// Why [`lock_exclusive`] did not take its lock.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it; its process id as it wrote it.
    Held(String),
    Io(std::io::Error),
}

/// Takes an exclusive lock (`flock`) on the file at `path`, made if
/// missing, and writes this process's id in it. Held until the file is
/// dropped, and let go by the kernel when the process dies, however.
///
/// # Errors
/// `Held` with the holder's process id; `Io`.
pub fn lock_exclusive(path: &Path) -> std::result::Result<File, LockError> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(LockError::Io)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => {
            return Err(LockError::Held(std::fs::read_to_string(path).unwrap_or_default().trim().to_string()));
        }
        Err(e) => return Err(LockError::Io(e.into())),
    }
    file.set_len(0).map_err(LockError::Io)?;
    file.write_all(std::process::id().to_string().as_bytes()).map_err(LockError::Io)?;
    Ok(file)
}

/// Why [`place_sealed`] did not place its object.
#[derive(Debug)]
pub enum PlaceError {
    /// The drive filled up: nothing of the object is left on it.
    Full,
    /// The drive's label is gone (unplugged, unmounted).
    Gone,
    /// The drive cannot be written.
    Drive(std::io::Error),
    /// The source object cannot be read.
    Source(PathBuf, std::io::Error),
    /// The source object is not what the journal says it is.
    Checksum(PathBuf),
}

/// One object to place on a drive.
pub struct Placement<'a> {
    /// The vault object, as a file.
    pub source: &'a Path,
    /// Its vault name (its path below the drive's `objects/`).
    pub name: &'a str,
    /// Its size and BLAKE3 checksum (hex), checked as it is read.
    pub size: u64,
    pub blake3: &'a str,
    /// The import job's id (hex), bound into every segment.
    pub job_id: &'a str,
}

/// Places one object on `drive`: read, checked, sealed under `sealer`
/// segment by segment into `objects/<name>.partial`, made durable, then
/// renamed to its name. Folders below `objects/` are made as needed, never
/// `objects/` itself, so a drive taken away meanwhile is not made again on
/// the mount point. The segments go through the page cache 1 MiB at a time
/// (docs/PERFORMANCE.md); `buf` is reused from one object to the next.
///
/// # Errors
/// See [`PlaceError`]; whatever the error, no partial file is left.
pub fn place_sealed(
    drive: &Path,
    sealer: &DriveSealer,
    object: &Placement<'_>,
    buf: &mut Vec<u8>,
) -> std::result::Result<(), PlaceError> {
    let gone = || !drive.join(DRIVE_LABEL).exists();
    if gone() {
        return Err(PlaceError::Gone);
    }
    let dest = drive.join(DRIVE_OBJECTS).join(object.name);
    let partial = dest.with_extension("partial");
    let drive_err = |e: std::io::Error| {
        let _ = std::fs::remove_file(&partial);
        if e.kind() == std::io::ErrorKind::StorageFull {
            PlaceError::Full
        } else if gone() {
            // taken away while this object was written
            PlaceError::Gone
        } else {
            PlaceError::Drive(e)
        }
    };
    let mut dir = drive.join(DRIVE_OBJECTS);
    for part in Path::new(object.name).parent().unwrap_or(Path::new("")).components() {
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(drive_err(e)),
            _ => {}
        }
    }
    let mut out = File::create(&partial).map_err(drive_err)?;
    let sealed = File::open(object.source).map_err(SealError::Source).and_then(|mut input| {
        let mut aad = SegmentAad::new(object.job_id, object.name);
        drive_format::seal_object(&mut input, &mut out, sealer, &mut aad, (object.size, object.blake3), buf)?;
        out.sync_data().map_err(SealError::Drive)
    });
    match sealed {
        Ok(()) => std::fs::rename(&partial, &dest).map_err(drive_err),
        Err(SealError::Drive(e)) => Err(drive_err(e)),
        Err(SealError::Source(e)) => {
            let _ = std::fs::remove_file(&partial);
            Err(PlaceError::Source(object.source.to_path_buf(), e))
        }
        Err(SealError::Checksum) => {
            let _ = std::fs::remove_file(&partial);
            Err(PlaceError::Checksum(object.source.to_path_buf()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drive_of_another_drive_format_is_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let label = DriveLabel {
            format: 1,
            drive_id: "0a1b2c3d".into(),
            import_job: "seed".into(),
            import_job_id: "00".into(),
            vault_id: "00".into(),
            key_check: String::new(),
        };
        std::fs::write(dir.path().join(DRIVE_LABEL), serde_json::to_vec(&label).expect("json")).expect("write");
        let err = read_label(dir.path()).expect_err("format 1").to_string();
        assert!(err.contains("drive 0a1b2c3d") && err.contains("drive format 1"), "{err}");
    }

    #[test]
    fn a_second_lock_names_the_process_holding_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("diskprep.lock");
        let _held = lock_exclusive(&path).expect("first");
        match lock_exclusive(&path) {
            Err(LockError::Held(pid)) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("second lock: {other:?}"),
        }
    }

    #[test]
    fn an_object_that_fails_its_checksum_leaves_nothing_on_the_drive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let drive = dir.path().join("drive");
        std::fs::create_dir_all(drive.join(DRIVE_OBJECTS)).expect("mkdir");
        std::fs::write(drive.join(DRIVE_LABEL), b"{}").expect("label");
        let source = dir.path().join("obj");
        std::fs::write(&source, b"hello").expect("source");
        let sealer = DriveSealer::new(&[7u8; 32]);
        let object = Placement { source: &source, name: "packs/ab/x", size: 5, blake3: "00", job_id: "00" };
        let err = place_sealed(&drive, &sealer, &object, &mut Vec::new()).expect_err("wrong checksum");
        assert!(matches!(err, PlaceError::Checksum(_)), "{err:?}");
        assert!(!drive.join(DRIVE_OBJECTS).join("packs/ab/x.partial").exists());
        assert!(!drive.join(DRIVE_OBJECTS).join("packs/ab/x").exists());
        let good = blake3::hash(b"hello").to_hex().to_string();
        let object = Placement { blake3: &good, ..object };
        place_sealed(&drive, &sealer, &object, &mut Vec::new()).expect("placed");
        assert!(drive.join(DRIVE_OBJECTS).join("packs/ab/x").exists());
        std::fs::remove_file(drive.join(DRIVE_LABEL)).expect("unplug");
        assert!(matches!(place_sealed(&drive, &sealer, &object, &mut Vec::new()), Err(PlaceError::Gone)));
    }
}

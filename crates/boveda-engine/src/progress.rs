use std::path::Path;

/// What a backup tells its observer (a progress bar, a job record, a test).
/// Every method has an empty default.
pub trait BackupProgress: Sync {
    /// The backup knows what it will read at most: `files` (disks) of
    /// `bytes` in all.
    fn expected(&self, _files: u64, _bytes: u64) {}
    /// A changed file is about to be read.
    fn file_started(&self, _path: &Path) {}
    /// A file is done; `reused` when its content came from the parent point.
    fn file_done(&self, _path: &Path, _size: u64, _reused: bool) {}
    /// Bytes were read from a source file.
    fn bytes_read(&self, _n: u64) {}
    /// Something was skipped or changed underfoot.
    fn warning(&self, _message: &str) {}
}

/// What a restore tells its observer.
pub trait RestoreProgress: Sync {
    /// The restore knows its totals.
    fn planned(&self, _files: u64, _bytes: u64) {}
    /// Bytes were written to restored files.
    fn bytes_written(&self, _n: u64) {}
}

/// An observer that ignores everything.
pub struct NoProgress;

impl BackupProgress for NoProgress {}
impl RestoreProgress for NoProgress {}

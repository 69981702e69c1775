//! Files that vanish or change while a backup reads them become warnings;
//! the backup goes on and the point holds what was read.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use boveda_engine::{BackupProgress, FileBackupOptions, NoProgress, RestoreOptions, backup_files, restore_files};

/// Deletes one file just before it is opened, and appends to another
/// once its first bytes have been read.
struct Saboteur {
    vanish: PathBuf,
    grow: PathBuf,
    armed: Mutex<bool>,
}

impl BackupProgress for Saboteur {
    fn file_started(&self, path: &Path) {
        if path == self.vanish {
            fs::remove_file(path).expect("remove");
        }
        if path == self.grow {
            *self.armed.lock().expect("lock") = true;
        }
    }
    fn bytes_read(&self, _n: u64) {
        let mut armed = self.armed.lock().expect("lock");
        if *armed {
            *armed = false;
            use std::io::Write;
            let mut f = fs::OpenOptions::new().append(true).open(&self.grow).expect("open");
            f.write_all(b"appended while read").expect("append");
        }
    }
}

#[test]
fn vanished_and_changing_files_are_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("gone"), b"soon gone").expect("write");
    let original: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(src.join("growing"), &original).expect("write");
    let v = common::local_vault(dir.path());
    let index = v.load_index().expect("index");
    let sab = Saboteur { vanish: src.join("gone"), grow: src.join("growing"), armed: Mutex::new(false) };
    let opts = FileBackupOptions { paths: vec![src.clone()], excludes: vec![], parent_tree: None, cancel: None };
    let out = backup_files(&v, &index, &opts, &sab).expect("backup");
    let w = out.warnings.join("\n");
    assert!(w.contains("gone: vanished before it could be read"), "{w}");
    assert!(w.contains("growing: changed while being read"), "{w}");
    assert_eq!(out.stats.files, 1);

    // the point holds the bytes as read: the original length
    let index = v.load_index().expect("index");
    let target = dir.path().join("out");
    let ropts = RestoreOptions { target: target.clone(), within: None, paths: vec![], cancel: None };
    let r = restore_files(&v, &index, &out.tree, &ropts, &NoProgress).expect("restore");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let restored = fs::read(target.join(src.strip_prefix("/").expect("abs")).join("growing")).expect("read");
    assert_eq!(restored.len(), original.len());
    assert_eq!(restored, original);
}

#[test]
fn a_cancelled_backup_stops_and_writes_no_point() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), b"a").expect("write");
    let v = common::local_vault(dir.path());
    let index = v.load_index().expect("index");
    let cancel = std::sync::atomic::AtomicBool::new(true);
    let opts = FileBackupOptions { paths: vec![src], excludes: vec![], parent_tree: None, cancel: Some(&cancel) };
    let err = backup_files(&v, &index, &opts, &NoProgress).err().expect("cancelled");
    assert!(matches!(err, boveda_engine::EngineError::Cancelled), "{err}");
    assert!(v.list_points().expect("points").is_empty());
}

//! A point as a tar stream and back (a restore onto a registered host):
//! files, holes, directories and links come back with their bytes, modes
//! and times to the nanosecond; an archive that tries to write through a
//! link, or outside its target, writes nothing outside it (a link in the
//! way of a directory is replaced by one; a path with `..` is named and
//! skipped).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use boveda_engine::{FileBackupOptions, NoProgress, backup_files, unpack_tar, write_point_tar};
use boveda_store::{LocalStore, Store};
use boveda_vault::{CreateOptions, Vault};

#[test]
fn a_point_goes_through_tar_and_comes_back_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).expect("mkdir");
    std::fs::write(src.join("sub/a.txt"), b"alpha\n").expect("write");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.join("sub/deeper/big.bin"), &big).expect("write");
    std::fs::set_permissions(src.join("sub/a.txt"), std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::os::unix::fs::symlink("a.txt", src.join("sub/link")).expect("symlink");
    let long = "n".repeat(180);
    std::fs::write(src.join("sub").join(&long), b"a long name").expect("write");

    let store: Arc<dyn Store> = Arc::new(LocalStore::new(dir.path().join("vault")));
    let vault = Vault::create(store, b"pw", CreateOptions::for_tests("tar")).expect("create");
    let index = vault.load_index().expect("index");
    let opts = FileBackupOptions { paths: vec![src.clone()], excludes: vec![], parent_tree: None, cancel: None };
    let point = backup_files(&vault, &index, &opts, &NoProgress).expect("backup");
    let index = vault.load_index().expect("index");

    let mut archive = Vec::new();
    let made = write_point_tar(&vault, &index, &point.tree, &[], &mut archive).expect("tar");
    assert_eq!(made.files, 3);
    assert_eq!(made.links, 1);
    let out = dir.path().join("out");
    let unpacked = unpack_tar(archive.as_slice(), &out, &|_| {}).expect("unpack");
    assert!(unpacked.errors.is_empty(), "{:?}", unpacked.errors);
    let back = out.join(src.strip_prefix("/").expect("absolute"));
    assert_eq!(std::fs::read(back.join("sub/deeper/big.bin")).expect("big"), big);
    assert_eq!(std::fs::read(back.join("sub").join(&long)).expect("long"), b"a long name");
    assert_eq!(std::fs::read_link(back.join("sub/link")).expect("link"), Path::new("a.txt"));
    let (was, now) =
        (std::fs::metadata(src.join("sub/a.txt")).expect("m"), std::fs::metadata(back.join("sub/a.txt")).expect("m"));
    assert_eq!(now.mode() & 0o7777, 0o640);
    assert_eq!((now.mtime(), now.mtime_nsec()), (was.mtime(), was.mtime_nsec()));

    // only some paths: the one file, with its folders above it
    let mut one = Vec::new();
    let wanted = format!("{}/sub/a.txt", src.display());
    let made = write_point_tar(&vault, &index, &point.tree, &[wanted], &mut one).expect("tar");
    assert_eq!((made.files, made.dirs), (1, 0));
    let err = write_point_tar(&vault, &index, &point.tree, &["/no/such".into()], Vec::new()).expect_err("missing");
    assert!(err.to_string().contains("/no/such"), "{err}");
}

#[test]
fn an_archive_that_writes_through_a_link_or_outside_writes_nothing_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "escape", &outside).expect("link");
    let mut file = |path: &str, body: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_cksum();
        // written raw: the tar crate itself refuses `..` when it sets a path
        let name = h.as_old_mut();
        name.name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, body).expect("append");
    };
    file("escape/owned", b"through the link");
    file("../up", b"above the target");
    file("fine", b"kept");
    let archive = b.into_inner().expect("tar");
    let target = dir.path().join("target");
    let unpacked = unpack_tar(archive.as_slice(), &target, &|_| {}).expect("unpack");
    assert!(!outside.join("owned").exists(), "written through a link");
    assert!(!dir.path().join("up").exists(), "written above the target");
    assert_eq!(std::fs::read(target.join("fine")).expect("fine"), b"kept");
    // the link in the way of a directory was replaced by one, inside the target
    assert!(std::fs::symlink_metadata(target.join("escape")).expect("escape").is_dir());
    assert_eq!(std::fs::read(target.join("escape/owned")).expect("owned"), b"through the link");
    assert_eq!(unpacked.errors.len(), 1, "{:?}", unpacked.errors);
    assert!(unpacked.errors[0].contains("../up"), "{:?}", unpacked.errors);
}

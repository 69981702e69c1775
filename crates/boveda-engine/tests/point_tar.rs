//! A point as a tar stream and back (a restore onto a registered host):
//! files, holes, directories and links come back with their bytes, modes
//! and times to the nanosecond, hard links as one file with two names,
//! extended attributes, FIFOs and (as root) device nodes; an archive that
//! tries to write through a link, or outside its target, writes nothing
//! outside it (a link in the way of a directory is replaced by one; a path
//! with `..` is named and skipped; a hard link through a link or by `..`
//! is refused).

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
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
    // a second name of a.txt, extended attributes (any bytes in a value),
    // a FIFO, and (as root) a device node
    std::fs::hard_link(src.join("sub/a.txt"), src.join("sub/deeper/a-again.txt")).expect("hard link");
    let value = b"bytes = \n and \0 all kept".to_vec();
    let xattrs = xattr::set(src.join("sub/a.txt"), "user.boveda", &value)
        .and_then(|()| xattr::set(src.join("sub"), "user.folder", b"f"))
        .is_ok();
    special(&src.join("sub/pipe"), &["p"]);
    let root = rustix::process::geteuid().is_root();
    if root {
        special(&src.join("sub/null"), &["c", "1", "3"]);
    }

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
    assert_eq!(made.hard_links, 1);
    assert_eq!(made.specials, if root { 2 } else { 1 });
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
    let again = std::fs::metadata(back.join("sub/deeper/a-again.txt")).expect("second name");
    assert_eq!((again.ino(), now.nlink()), (now.ino(), 2), "one file with two names");
    if xattrs {
        assert_eq!(xattr::get(back.join("sub/a.txt"), "user.boveda").expect("get"), Some(value));
        assert_eq!(xattr::get(back.join("sub"), "user.folder").expect("get"), Some(b"f".to_vec()));
    }
    let pipe = std::fs::symlink_metadata(back.join("sub/pipe")).expect("pipe");
    assert!(pipe.file_type().is_fifo(), "a FIFO again");
    if root {
        let null = std::fs::symlink_metadata(back.join("sub/null")).expect("device");
        assert!(null.file_type().is_char_device() && null.rdev() == std::fs::metadata("/dev/null").expect("m").rdev());
    }

    // only some paths: the one file, with its folders above it
    let mut one = Vec::new();
    let wanted = format!("{}/sub/a.txt", src.display());
    let made = write_point_tar(&vault, &index, &point.tree, &[wanted], &mut one).expect("tar");
    assert_eq!((made.files, made.dirs), (1, 0));
    let err = write_point_tar(&vault, &index, &point.tree, &["/no/such".into()], Vec::new()).expect_err("missing");
    assert!(err.to_string().contains("/no/such"), "{err}");
}

/// A FIFO or device node made by mknod(1).
fn special(path: &Path, kind: &[&str]) {
    let status = std::process::Command::new("mknod").arg(path).args(kind).status().expect("mknod");
    assert!(status.success(), "mknod {}", path.display());
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
    // a hard link to a file outside, through a link and by `..`
    std::fs::write(outside.join("secret"), b"not yours").expect("secret");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "escape2", &outside).expect("link");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "stolen", "escape2/secret").expect("hard link");
    let mut raw_link = |path: &str, to: &str| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        let old = h.as_old_mut();
        old.name[..path.len()].copy_from_slice(path.as_bytes());
        old.linkname[..to.len()].copy_from_slice(to.as_bytes());
        h.set_cksum();
        b.append(&h, std::io::empty()).expect("append");
    };
    raw_link("stolen-up", "../outside/secret");
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
    for stolen in ["stolen", "stolen-up"] {
        assert!(std::fs::symlink_metadata(target.join(stolen)).is_err(), "{stolen} made");
    }
    assert_eq!(std::fs::metadata(outside.join("secret")).expect("secret").nlink(), 1, "no name made for it");
    assert_eq!(unpacked.errors.len(), 3, "{:?}", unpacked.errors);
    assert!(unpacked.errors.iter().any(|e| e.contains("../up")), "{:?}", unpacked.errors);
    assert!(
        unpacked.errors.iter().any(|e| e.contains("stolen-up") && e.contains("outside the target")),
        "{:?}",
        unpacked.errors
    );
}

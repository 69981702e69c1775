//! `boveda mount`: points read-only through FUSE, read on demand.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{Env, StoreKind, make_full_tree, noise};

struct Mounted {
    dir: PathBuf,
    child: Child,
}

impl Mounted {
    fn start(env: &Env, args: &[&str], dir: &Path) -> Option<Mounted> {
        if !Path::new("/dev/fuse").exists() {
            eprintln!("no /dev/fuse here; the mount test did not run");
            return None;
        }
        fs::create_dir_all(dir).expect("mkdir");
        let mut all: Vec<&str> = vec!["mount"];
        all.extend_from_slice(args);
        all.push(dir.to_str().expect("utf8"));
        let child = env.cmd(&all).spawn().expect("spawn");
        let mut m = Mounted { dir: dir.to_path_buf(), child };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
            if mounts.lines().any(|l| l.split(' ').nth(1) == dir.to_str()) {
                return Some(m);
            }
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("boveda mount exited early: {status}");
            }
            assert!(Instant::now() < deadline, "the mount did not appear");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn unmount(mut self) {
        let ok = Command::new("fusermount").arg("-u").arg(&self.dir).status().is_ok_and(|s| s.success())
            || Command::new("umount").arg(&self.dir).status().is_ok_and(|s| s.success());
        assert!(ok, "unmount failed");
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "boveda mount ended with {status}");
    }
}

/// Every file's bytes, every symlink's target and every directory of `src`
/// are in `mounted` as well.
fn assert_visible(src: &Path, mounted: &Path) {
    let mut stack = vec![PathBuf::new()];
    let mut files = 0;
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(src.join(&rel)).expect("read_dir") {
            let e = e.expect("entry");
            let r = rel.join(e.file_name());
            let ft = e.file_type().expect("type");
            let m =
                fs::symlink_metadata(mounted.join(&r)).unwrap_or_else(|err| panic!("{} missing: {err}", r.display()));
            if ft.is_dir() {
                assert!(m.is_dir(), "{}", r.display());
                stack.push(r);
            } else if ft.is_symlink() {
                assert_eq!(fs::read_link(src.join(&r)).expect("link"), fs::read_link(mounted.join(&r)).expect("link"));
            } else if ft.is_file() {
                assert_eq!(
                    fs::read(src.join(&r)).expect("read"),
                    fs::read(mounted.join(&r)).expect("read"),
                    "{}",
                    r.display()
                );
                files += 1;
            }
        }
    }
    assert!(files > 1000, "only {files} files compared");
}

on_every_store!(file_and_disk_points_are_readable_through_fuse);

fn file_and_disk_points_are_readable_through_fuse(kind: StoreKind) {
    let env = Env::on(kind);
    let src = env.path("src");
    make_full_tree(&src);
    env.create_vault();
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    let p = env.backup("t", 0);
    let id = p["id"].as_str().expect("id")[..8].to_string();
    let dir = env.path("mnt");
    let Some(m) = Mounted::start(&env, &["t"], &dir) else { return };
    assert_visible(&src, &dir.join(&id).join(src.strip_prefix("/").expect("abs")));
    let err = fs::write(dir.join(&id).join("new-file"), b"x").expect_err("read-only");
    assert!(err.raw_os_error().is_some(), "{err}");
    m.unmount();

    let img = env.path("d.img");
    let f = fs::File::create(&img).expect("create");
    f.set_len(20 << 20).expect("size");
    std::os::unix::fs::FileExt::write_all_at(&f, &noise(5, 3 << 20), 7 << 20).expect("write");
    drop(f);
    env.ok(&["item", "add", "disk", "d", "--path", img.to_str().expect("utf8")]);
    env.backup("d", 0);
    let dir2 = env.path("mnt2");
    let Some(m) = Mounted::start(&env, &["d", "--point", "latest"], &dir2) else { return };
    assert_eq!(fs::read(dir2.join("disk")).expect("read"), fs::read(&img).expect("read"));
    m.unmount();
}

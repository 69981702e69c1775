//! Helpers for end-to-end tests: a private config dir and vault per test,
//! the real `boveda` binary, generated trees, and a tree comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Env {
    pub dir: tempfile::TempDir,
    /// The vault's folder when its store is a local folder.
    pub vault: PathBuf,
    /// The vault's store URL (the folder's path for a local vault).
    pub store: String,
}

/// Where a test's vault lives: the real stores `scripts/test.sh` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    Azurite,
    S3,
}

/// One test per kind of store for a function taking the kind: a module
/// named after the function, holding `in_a_folder`, `in_azurite`, `in_s3`.
#[macro_export]
macro_rules! on_every_store {
    ($($run:ident),+ $(,)?) => {$(
        mod $run {
            #[test]
            fn in_a_folder() {
                super::$run($crate::common::StoreKind::Local);
            }
            #[test]
            fn in_azurite() {
                super::$run($crate::common::StoreKind::Azurite);
            }
            #[test]
            fn in_s3() {
                super::$run($crate::common::StoreKind::S3);
            }
        }
    )+};
}

/// A name no other test uses (containers and buckets are shared by a run).
pub fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}-{}-{nanos:08x}-{n}", std::process::id())
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_boveda"))
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("boveda-e2e").tempdir().expect("tempdir");
        let vault = dir.path().join("vault");
        let store = vault.display().to_string();
        Env { dir, vault, store }
    }

    /// A test environment for hundreds of thousands of small files: on the
    /// memory file system `/dev/shm` when it has room, since each small file
    /// takes a whole block of a disk and a CI machine's disk may be nearly full.
    pub fn for_many_files(bytes_needed: u64) -> Self {
        let shm = Path::new("/dev/shm");
        if free_bytes(shm).is_some_and(|free| free >= bytes_needed) {
            let dir = tempfile::Builder::new().prefix("boveda-e2e").tempdir_in(shm).expect("tempdir in /dev/shm");
            let vault = dir.path().join("vault");
            let store = vault.display().to_string();
            return Env { dir, vault, store };
        }
        let env = Env::new();
        if let Some(free) = free_bytes(env.dir.path()) {
            assert!(
                free >= bytes_needed,
                "this test needs {} MiB free in {} (or in /dev/shm); it has {} MiB",
                bytes_needed >> 20,
                env.dir.path().display(),
                free >> 20
            );
        }
        env
    }

    /// A test environment whose vault will live in the given kind of store.
    pub fn on(kind: StoreKind) -> Self {
        let mut env = Env::new();
        let remote = |scheme: &str, var: &str, what: &str| {
            assert!(
                std::env::var_os(var).is_some(),
                "{what} is not running: run the tests through scripts/test.sh (it installs and starts Azurite and the S3 server)"
            );
            format!("{scheme}://{}/vault", unique("e2e"))
        };
        env.store = match kind {
            StoreKind::Local => env.store,
            StoreKind::Azurite => remote("azblob", "BOVEDA_TEST_AZURITE", "Azurite"),
            StoreKind::S3 => remote("s3", "BOVEDA_TEST_S3", "The S3 server"),
        };
        env
    }

    /// A command as another machine runs it: its own configuration folder,
    /// knowing the vault only by its store URL.
    pub fn machine(&self, n: u32, args: &[&str]) -> Command {
        let mut c = self.cmd(args);
        c.env("BOVEDA_CONFIG_DIR", self.path(&format!("config-machine-{n}")))
            .env("BOVEDA_CACHE_DIR", self.path(&format!("cache-machine-{n}")))
            .env("BOVEDA_VAULT", &self.store);
        c
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env("BOVEDA_CONFIG_DIR", self.path("config"))
            .env("BOVEDA_CACHE_DIR", self.path("cache"))
            .env("BOVEDA_PASSWORD", "correct horse")
            .env_remove("BOVEDA_VAULT")
            .env_remove("BOVEDA_PASSWORD_FILE");
        c
    }

    /// A command whose clock reads `now` (`BOVEDA_FAKE_NOW`).
    pub fn run_at(&self, now: &str, args: &[&str]) -> Output {
        self.cmd(args).env("BOVEDA_FAKE_NOW", now).output().expect("run boveda")
    }

    /// [`Env::run_at`] that must succeed; its stdout.
    pub fn ok_at(&self, now: &str, args: &[&str]) -> String {
        let out = self.run_at(now, args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`Env::run_at`] that must fail; its stderr.
    pub fn fails_at(&self, now: &str, args: &[&str]) -> String {
        let out = self.run_at(now, args);
        assert!(!out.status.success(), "{args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run boveda")
    }

    /// Runs and requires the given exit code; returns stdout.
    pub fn expect(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "boveda {args:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.expect(0, args)
    }

    /// Fails with exit code 1; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "boveda {args:?} should fail\nstdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn create_vault(&self) {
        let mut args = vec!["vault", "create", "test-vault", "--store", &self.store, "--insecure-fast-kdf"];
        args.extend(["--pack-size-mib", "1"]);
        if self.store.contains("://") {
            args.push("--create-container");
        }
        self.ok(&args);
    }

    /// `backup-now` as JSON; returns the point.
    pub fn backup(&self, item: &str, code: i32) -> serde_json::Value {
        let out = self.expect(code, &["--output", "json", "protection", "backup-now", item]);
        serde_json::from_str(&out).expect("point json")
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let t = rustix_times(secs, nsec);
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("cstring");
    // SAFETY: c is a valid C string and t a valid timespec pair.
    let rc = unsafe { libc_utimensat(c.as_ptr(), t.as_ptr()) };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

fn rustix_times(secs: i64, nsec: i64) -> [Timespec; 2] {
    [Timespec { sec: secs, nsec }, Timespec { sec: secs, nsec }]
}

unsafe extern "C" {
    fn utimensat(dirfd: i32, path: *const std::ffi::c_char, times: *const Timespec, flags: i32) -> i32;
}

unsafe fn libc_utimensat(path: *const std::ffi::c_char, t: *const Timespec) -> i32 {
    const AT_FDCWD: i32 = -100;
    const AT_SYMLINK_NOFOLLOW: i32 = 0x100;
    // SAFETY: forwarded from the caller.
    unsafe { utimensat(AT_FDCWD, path, t, AT_SYMLINK_NOFOLLOW) }
}

/// A small tmpfs mounted for a test (a disk that fills), unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).expect("mkdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs failed");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

pub fn is_root() -> bool {
    fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// A tree holding every case a file backup must keep.
pub fn make_full_tree(root: &Path) {
    fs::create_dir_all(root.join("docs/nested/deeper")).expect("mkdir");
    fs::write(root.join("docs/readme.txt"), b"hello boveda\n".repeat(1000)).expect("write");
    fs::write(root.join("docs/nested/random.bin"), noise(1, 3_500_000)).expect("write");
    fs::write(root.join("docs/nested/deeper/small.txt"), b"x").expect("write");
    fs::write(root.join("empty-file"), b"").expect("write");
    fs::create_dir(root.join("empty-dir")).expect("mkdir");
    // symlinks: relative, absolute pointing outside, dangling; never followed
    symlink("docs/readme.txt", root.join("link-rel")).expect("symlink");
    symlink("/etc/hostname", root.join("link-abs")).expect("symlink");
    symlink("does-not-exist", root.join("link-dangling")).expect("symlink");
    // hard links
    fs::write(root.join("hard-a"), noise(2, 10_000)).expect("write");
    fs::hard_link(root.join("hard-a"), root.join("docs/hard-b")).expect("link");
    // permissions
    fs::write(root.join("script.sh"), b"#!/bin/sh\necho hi\n").expect("write");
    fs::set_permissions(root.join("script.sh"), fs::Permissions::from_mode(0o750)).expect("chmod");
    fs::write(root.join("private"), b"secret").expect("write");
    fs::set_permissions(root.join("private"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(root.join("setgid-file"), b"g").expect("write");
    fs::set_permissions(root.join("setgid-file"), fs::Permissions::from_mode(0o2755)).expect("chmod");
    // read-only and no-permission files, small (written by one handle) and
    // large (written in several pieces)
    fs::write(root.join("read-only"), b"r").expect("write");
    fs::set_permissions(root.join("read-only"), fs::Permissions::from_mode(0o444)).expect("chmod");
    fs::write(root.join("no-permissions"), b"none").expect("write");
    fs::set_permissions(root.join("no-permissions"), fs::Permissions::from_mode(0o000)).expect("chmod");
    fs::write(root.join("docs/read-only-large.bin"), noise(4, 3_000_000)).expect("write");
    fs::set_permissions(root.join("docs/read-only-large.bin"), fs::Permissions::from_mode(0o444)).expect("chmod");
    fs::write(root.join("setuid-file"), b"u").expect("write");
    // ownership (as root only)
    if is_root() {
        std::os::unix::fs::lchown(root.join("private"), Some(1234), Some(5678)).expect("chown");
        std::os::unix::fs::lchown(root.join("link-rel"), Some(4321), Some(8765)).expect("lchown");
        std::os::unix::fs::lchown(root.join("setuid-file"), Some(1234), Some(0)).expect("chown");
        std::os::unix::fs::lchown(root.join("read-only"), Some(0), Some(5678)).expect("chown");
    }
    // after the owner, which clears it
    fs::set_permissions(root.join("setuid-file"), fs::Permissions::from_mode(0o4755)).expect("chmod");
    // xattrs
    let _ = xattr_set(&root.join("docs/readme.txt"), "user.boveda.test", b"value-1");
    // a sparse file: 64 MiB with data at two places
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(root.join("sparse.img")).expect("create");
        f.seek(SeekFrom::Start(10 << 20)).expect("seek");
        f.write_all(&noise(3, 100_000)).expect("write");
        f.seek(SeekFrom::Start(40 << 20)).expect("seek");
        f.write_all(b"middle").expect("write");
        f.set_len(64 << 20).expect("set_len");
    }
    // non-UTF-8 names
    let bad = OsStr::from_bytes(b"caf\xe9-latin1.txt");
    fs::write(root.join(bad), b"latin-1 name").expect("write");
    fs::create_dir(root.join(OsStr::from_bytes(b"dir-\xff\xfe"))).expect("mkdir");
    fs::write(root.join(OsStr::from_bytes(b"dir-\xff\xfe")).join("inner"), b"inner").expect("write");
    // a very long path (about 3000 bytes)
    let mut long = root.join("long");
    for i in 0..12 {
        long = long.join(format!("{i:02}-{}", "d".repeat(240)));
    }
    fs::create_dir_all(&long).expect("mkdir long");
    fs::write(long.join("leaf.txt"), b"deep").expect("write");
    // many small files
    fs::create_dir(root.join("many")).expect("mkdir");
    for i in 0..1500 {
        fs::write(root.join(format!("many/f{i:05}")), format!("file {i}\n").repeat(i % 7 + 1)).expect("write");
    }
    // a fifo
    let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_bytes()).expect("cstring");
    // SAFETY: a valid C string path.
    assert_eq!(unsafe { mkfifo(fifo.as_ptr(), 0o644) }, 0);
    // fixed mtimes, including before 1970 and with nanoseconds
    set_mtime(&root.join("docs/readme.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("empty-file"), -86_400, 0);
    set_mtime(&root.join("link-rel"), 1_500_000_000, 0);
    set_mtime(&root.join("docs/nested"), 1_400_000_000, 5);
}

unsafe extern "C" {
    fn mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}

pub fn xattr_set(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    xattr::set(path, name, value)
}

fn xattrs_of(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = xattr::list(path)
        .map(|names| {
            names
                .filter_map(|n| {
                    let v = xattr::get(path, &n).ok().flatten()?;
                    Some((n.to_string_lossy().into_owned(), v))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Everything a restore must reproduce about one entry.
#[derive(Debug, PartialEq)]
struct Entry {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: Option<(i64, i64)>,
    content: Option<[u8; 32]>,
    target: Option<PathBuf>,
    xattrs: Vec<(String, Vec<u8>)>,
    link_group: Option<usize>,
}

fn describe(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, usize> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir).expect("read_dir").map(|e| e.expect("entry").path()).collect();
        entries.sort();
        for p in entries {
            let m = fs::symlink_metadata(&p).expect("lstat");
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else {
                "other"
            };
            let content = ft.is_file().then(|| hash_file(&p));
            let link_group = (ft.is_file() && m.nlink() > 1).then(|| {
                let n = inodes.len();
                *inodes.entry(m.ino()).or_insert(n)
            });
            out.insert(
                p.strip_prefix(root).expect("prefix").to_path_buf(),
                Entry {
                    kind: kind.into(),
                    mode: if ft.is_symlink() { 0 } else { m.mode() },
                    uid: m.uid(),
                    gid: m.gid(),
                    size: if ft.is_file() { m.len() } else { 0 },
                    // directory mtimes are compared too (set after their content)
                    mtime: Some((m.mtime(), m.mtime_nsec())),
                    content,
                    target: ft.is_symlink().then(|| fs::read_link(&p).expect("readlink")),
                    xattrs: xattrs_of(&p),
                    link_group,
                },
            );
        }
    }
    out
}

fn hash_file(p: &Path) -> [u8; 32] {
    *blake3::hash(&fs::read(p).expect("read")).as_bytes()
}

/// Asserts that two trees hold the same entries, bytes and metadata.
pub fn assert_same_tree(original: &Path, restored: &Path) {
    let a = describe(original);
    let b = describe(restored);
    let names_a: Vec<_> = a.keys().collect();
    let names_b: Vec<_> = b.keys().collect();
    assert_eq!(names_a, names_b, "entry names differ");
    for (path, ea) in &a {
        let eb = &b[path];
        assert_eq!(ea, eb, "entry {} differs", path.display());
    }
}

/// Allocated bytes of a file.
pub fn allocated(p: &Path) -> u64 {
    fs::metadata(p).expect("stat").blocks() * 512
}

/// The files below `dir`, sorted, leaving out a store's temporary
/// `.tmp-*` files; none when `dir` does not exist.
pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else if !e.file_name().to_string_lossy().starts_with(".tmp-") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Waits until `ready` holds (at most a minute), then kills the child with
/// SIGKILL; false when the child ended first.
pub fn kill_when(child: &mut std::process::Child, ready: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if child.try_wait().expect("wait").is_some() {
            return false;
        }
        if ready() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("the condition never held");
}

/// Runs a tool the tests need (qemu-img, mkfs.ext4...); its output.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn domain_xml(name: &str, vda: &Path, vdb: &Path) -> String {
    format!(
        r#"<domain type='kvm'>
  <name>{name}</name>
  <uuid>2b8e5a4c-9d1f-4c2a-8f3e-6a7b8c9d0e1f</uuid>
  <memory unit='MiB'>512</memory>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{}'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <source file='/nonexistent/install.iso'/>
      <target dev='sda' bus='sata'/>
    </disk>
  </devices>
</domain>
"#,
        vda.display(),
        vdb.display()
    )
}

/// A libvirt VM of two disks: `vda` a qcow2 image holding an ext4 file
/// system of real files, `vdb` a sparse raw data disk with 300 kB written
/// at 4 MiB; its definition in `dir/<name>.xml`.
pub struct TwoDiskVm {
    pub xml: PathBuf,
    pub vda: PathBuf,
    pub vdb: PathBuf,
}

pub fn two_disk_vm(env: &Env, dir: &Path, name: &str) -> TwoDiskVm {
    use std::os::unix::fs::FileExt;
    fs::create_dir_all(dir).expect("mkdir");
    let files = env.path(&format!("{name}-guest-files"));
    fs::create_dir_all(&files).expect("mkdir");
    for i in 0..5 {
        fs::write(files.join(format!("f{i}")), noise(i, 400_000)).expect("write");
    }
    let raw_root = env.path(&format!("{name}-root.raw"));
    fs::File::create(&raw_root).expect("create").set_len(32 << 20).expect("size");
    sh(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&files).arg(&raw_root));
    let vda = env.path(&format!("{name}-vda.qcow2"));
    sh(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&raw_root).arg(&vda));
    let vdb = env.path(&format!("{name}-vdb.img"));
    let f = fs::File::create(&vdb).expect("create");
    f.set_len(16 << 20).expect("size");
    f.write_all_at(&noise(50, 300_000), 4 << 20).expect("write");
    let xml = dir.join(format!("{name}.xml"));
    fs::write(&xml, domain_xml(name, &vda, &vdb)).expect("write");
    TwoDiskVm { xml, vda, vdb }
}

/// How many objects the test's vault store holds below `folder`, whatever
/// kind of store it is.
pub fn store_objects(env: &Env, folder: &str) -> usize {
    let store = boveda_store::open_backend(&env.store, false).expect("open the test's store");
    match store.list(folder) {
        Ok(objects) => objects.len(),
        Err(e) if e.kind() == boveda_store::StoreErrorKind::NotFound => 0,
        Err(e) => panic!("listing {folder}: {e}"),
    }
}

/// Bytes free for an unprivileged writer in the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

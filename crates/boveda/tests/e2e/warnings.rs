//! Unreadable files become warnings; the backup goes on and exits 3.

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{Env, bin, is_root};

/// Runs boveda as an unprivileged user when the tests run as root, since
/// root reads files whatever their permissions.
fn run_unprivileged(env: &Env, args: &[&str]) -> std::process::Output {
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(bin());
        c
    } else {
        Command::new(bin())
    };
    c.args(args).env("BOVEDA_CONFIG_DIR", env.path("config")).env("BOVEDA_PASSWORD", "correct horse");
    c.output().expect("run boveda")
}

#[test]
fn unreadable_entries_are_warnings_and_the_rest_is_kept() {
    let env = Env::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod");
    let src = env.path("src");
    fs::create_dir_all(src.join("locked-dir")).expect("mkdir");
    fs::write(src.join("ok.txt"), b"readable").expect("write");
    fs::write(src.join("secret"), b"unreadable").expect("write");
    fs::write(src.join("locked-dir/inner"), b"hidden").expect("write");
    fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).expect("chmod");
    fs::set_permissions(src.join("locked-dir"), fs::Permissions::from_mode(0o000)).expect("chmod");

    let vault = env.path("vault");
    let s = |args: &[&str]| {
        let out = run_unprivileged(&env, args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) =
        s(&["vault", "create", "warn", "--store", vault.to_str().expect("utf8"), "--insecure-fast-kdf"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = s(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = s(&["--output", "json", "protection", "backup-now", "t"]);
    assert_eq!(code, Some(3), "completed with warnings exits 3: {err}");
    let point: serde_json::Value = serde_json::from_str(&out).expect("json");
    let warnings = point["warnings"].to_string();
    assert!(warnings.contains("secret") && warnings.contains("cannot read"), "{warnings}");
    assert!(warnings.contains("locked-dir"), "{warnings}");
    assert!(err.contains("warning:"), "warnings are shown as they happen: {err}");
    let (_, list, _) = s(&["recoverypoint", "list", "t"]);
    assert!(list.contains("CompletedWithWarnings"), "{list}");
    let (code, _, err) = s(&["restore", "t", "--target", env.path("out").to_str().expect("utf8")]);
    assert!(code == Some(0) || code == Some(3), "{err}");
    let restored = env.path("out").join(src.strip_prefix("/").expect("abs"));
    assert_eq!(fs::read(restored.join("ok.txt")).expect("read"), b"readable");
    assert!(!restored.join("secret").exists());
}

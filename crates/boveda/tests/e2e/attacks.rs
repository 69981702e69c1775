//! The attack suite: one test per attacker of a vault made to survive
//! them (immutable, always-on soft delete, bound to a guard whose
//! passphrase the attacker does not have). Each attack is made by a real
//! process (the CLI with the vault's passphrase, curl with a token against
//! a running `boveda serve`), and each test ends with `vault check
//! --read-data` clean and every point within its retention restoring
//! byte-exactly. The attackers of the store itself (its own credentials
//! against an Object-Locked bucket, a prune whose clock is set ahead) are
//! in `object_lock.rs`, which ends the same way; a registered host taken
//! over as root is in `fleet.rs`.

use serde_json::{Value, json};

use crate::common::Env;
use crate::serve::{Server, curl};

const GUARD_PASS: &str = "the guard's passphrase, not the admin's";

struct Fortified {
    env: Env,
    src: std::path::PathBuf,
    /// Each point's id and the bytes of the file it holds.
    points: Vec<(String, Vec<u8>)>,
}

fn fortified() -> Fortified {
    let env = Env::new();
    env.create_vault();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    env.ok(&["item", "add", "files", "docs", "--path", src.to_str().expect("utf8")]);
    env.ok(&["policy", "create", "daily", "--time", "02:00", "--time-zone", "UTC", "--daily-keep", "30"]);
    // two scheduled points of the last days (the agent on a simulated
    // clock), then two ad-hoc ones
    let now = jiff::Timestamp::now();
    let start = (now - jiff::SignedDuration::from_hours(49)).to_string();
    let end = (now - jiff::SignedDuration::from_hours(1)).to_string();
    let first = crate::common::noise(99, 40_000);
    std::fs::write(src.join("data.bin"), &first).expect("write");
    let out = env.cmd(&["protection", "enable", "docs", "--policy", "daily"]).env("BOVEDA_FAKE_NOW", &start).output();
    assert!(out.expect("enable").status.success());
    let out = env.cmd(&["agent", "--until", &end]).env("BOVEDA_FAKE_NOW", &start).output().expect("agent");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Value =
        serde_json::from_str(&env.ok(&["--output", "json", "recoverypoint", "list", "docs"])).expect("json");
    let mut points: Vec<(String, Vec<u8>)> = listed
        .as_array()
        .expect("points")
        .iter()
        .map(|p| (p["point"]["id"].as_str().expect("id").to_string(), first.clone()))
        .collect();
    assert_eq!(points.len(), 2, "{listed}");
    let until = (jiff::Zoned::now().date() + jiff::Span::new().days(20)).to_string();
    for n in 0..2u64 {
        let body = crate::common::noise(n, 50_000 + n as usize);
        std::fs::write(src.join("data.bin"), &body).expect("write");
        let out = env.ok(&["--output", "json", "protection", "backup-now", "docs", "--retain-until", &until]);
        let point: Value = serde_json::from_str(&out).expect("point");
        points.push((point["id"].as_str().expect("id").to_string(), body));
    }
    let guard = {
        let out = env.cmd(&["guard", "create"]).env("BOVEDA_GUARD_PASSPHRASE", GUARD_PASS).output().expect("run");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    env.ok(&["guard", "bind", &guard, "--name", "sec"]);
    env.ok(&[
        "vault",
        "update",
        "--immutability",
        "enabled",
        "--soft-delete-days",
        "30",
        "--soft-delete-always-on",
        "--confirm",
        "test-vault",
    ]);
    Fortified { env, src, points }
}

impl Fortified {
    /// Nothing lost: the vault checks clean reading every byte, and every
    /// point restores what it held.
    fn intact(&self) {
        self.env.ok(&["vault", "check", "--read-data"]);
        let listed: Value =
            serde_json::from_str(&self.env.ok(&["--output", "json", "recoverypoint", "list", "docs"])).expect("json");
        assert_eq!(listed.as_array().map(Vec::len), Some(self.points.len()), "{listed}");
        for (i, (id, body)) in self.points.iter().enumerate() {
            let target = self.env.path(&format!("restored-{i}-{}", crate::common::unique("r")));
            self.env.ok(&["restore", "docs", "--point", id, "--target", target.to_str().expect("utf8")]);
            let file = target.join(self.src.strip_prefix("/").expect("absolute")).join("data.bin");
            assert_eq!(&std::fs::read(&file).expect("restored"), body, "point {id}");
        }
        let items: Value = serde_json::from_str(&self.env.ok(&["--output", "json", "item", "list"])).expect("items");
        assert_eq!(items[0]["protection"], "Protected", "{items}");
    }

    fn serve(&self) -> Server {
        Server::start(&self.env, &["--vault", "test-vault", "serve", "--listen", "127.0.0.1:0", "--no-scheduler"])
    }

    fn token(&self, role: &str) -> String {
        self.env.ok(&["--vault", "test-vault", "token", "create", "--role", role]).trim().to_string()
    }
}

/// An API call with a token: the status and the body.
fn call(server: &Server, token: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}/api/v1/vaults/test-vault{path}", server.url);
    let auth = format!("authorization: Bearer {token}");
    let mut args = vec!["-X", method, "-H", &auth];
    let text = body.map(|b| b.to_string());
    if let Some(t) = &text {
        args.extend(["-H", "content-type: application/json", "--data", t]);
    }
    args.push(&url);
    let (head, body) = curl(&args);
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn a_stolen_contributor_token_destroys_nothing() {
    let f = fortified();
    let server = f.serve();
    let t = f.token("Contributor");
    let (s, b) = call(&server, &t, "DELETE", "/items/docs/protection?delete_data=true", None);
    assert_eq!((s, b["code"].as_str()), (403, Some("approval_needed")), "{b}");
    let (s, b) = call(&server, &t, "PATCH", "/settings", Some(json!({"immutability": "disabled"})));
    assert_eq!((s, b["code"].as_str()), (403, Some("approval_needed")), "{b}");
    let (s, b) = call(&server, &t, "PATCH", "/settings", Some(json!({"soft_delete_days": 14})));
    assert!(s == 400 && b["message"].as_str().is_some_and(|m| m.contains("always-on")), "{b}");
    let (s, b) = call(&server, &t, "PATCH", "/policies/daily", Some(json!({"daily_keep": 1})));
    assert!(s == 409 && b["message"].as_str().is_some_and(|m| m.contains("immutability")), "{b}");
    let (s, b) = call(&server, &t, "DELETE", "/guard", None);
    assert_eq!((s, b["code"].as_str()), (403, Some("approval_needed")), "{b}");
    // it cannot approve its own requests, even with a signature
    let request = b["remedy"]["request"].as_str().expect("request").to_string();
    let (s, _) = call(
        &server,
        &t,
        "POST",
        &format!("/guard/requests/{request}/approve"),
        Some(json!({"expires": jiff::Timestamp::now().to_string(), "signature": "00".repeat(64)})),
    );
    assert_eq!(s, 403);
    drop(server);
    f.intact();
}

#[test]
fn the_vault_passphrase_and_a_token_without_the_guard_destroy_nothing() {
    let f = fortified();
    let env = &f.env;
    for (args, refusal) in [
        (vec!["protection", "disable", "docs", "--delete-data"], "needs the approval of guard sec"),
        (vec!["vault", "update", "--immutability", "disabled"], "needs the approval of guard sec"),
        (vec!["vault", "update", "--soft-delete-days", "14"], "always-on"),
        (vec!["policy", "update", "daily", "--daily-keep", "1", "--yes"], "immutability is enabled"),
        (vec!["guard", "unbind"], "needs the approval of guard sec"),
    ] {
        let err = env.fails(&args);
        assert!(err.contains(refusal), "{args:?}: {err}");
    }
    // a second passphrase cannot be taken away either
    let added = env.cmd(&["vault", "key", "add"]).env("BOVEDA_NEW_PASSWORD", "another").output().expect("run");
    assert!(added.status.success());
    let keys: Value = serde_json::from_str(&env.ok(&["--output", "json", "vault", "key", "list"])).expect("keys");
    let other = keys.as_array().and_then(|k| k.iter().find(|k| k["current"] == false)).expect("second key");
    assert!(env.fails(&["vault", "key", "remove", other["id"].as_str().expect("id")]).contains("approval"));
    // an approval signed by a guard of the admin's own making is refused
    let err = env.fails(&["vault", "update", "--immutability", "disabled"]);
    let request = err.split("request ").nth(1).and_then(|r| r.split_whitespace().next()).expect("request");
    let shown: Value = serde_json::from_str(&env.ok(&["--output", "json", "guard", "show", request])).expect("json");
    let own = {
        let out = env.cmd(&["guard", "create"]).env("BOVEDA_GUARD_PASSPHRASE", "the admin's own guard").output();
        String::from_utf8_lossy(&out.expect("run").stdout).trim().to_string()
    };
    let forged = env
        .cmd(&["guard", "approve", shown["code"].as_str().expect("code"), "--guard", &own])
        .env("BOVEDA_GUARD_PASSPHRASE", "the admin's own guard")
        .output()
        .expect("run");
    assert!(!forged.status.success(), "signed for another guard");
    // and the token too, at once
    let server = f.serve();
    let t = f.token("Contributor");
    let (s, b) = call(&server, &t, "PATCH", "/settings", Some(json!({"immutability": "disabled"})));
    assert_eq!((s, b["code"].as_str()), (403, Some("approval_needed")), "{b}");
    drop(server);
    // prune deletes nothing within retention
    env.ok(&["prune", "--safety-margin", "0s"]);
    f.intact();
}

#[test]
fn the_guards_token_alone_destroys_nothing() {
    let f = fortified();
    // a request waiting for the guard
    f.env.fails(&["protection", "disable", "docs", "--delete-data"]);
    let server = f.serve();
    let g = f.token("SecurityAdmin");
    for (method, path, body) in [
        ("GET", "/items", None),
        ("GET", "", None),
        ("DELETE", "/items/docs/protection?delete_data=true", None),
        ("PATCH", "/settings", Some(json!({"immutability": "disabled"}))),
        ("PATCH", "/policies/daily", Some(json!({"daily_keep": 1}))),
        ("POST", "/tokens", Some(json!({"role": "Contributor"}))),
    ] {
        let (s, b) = call(&server, &g, method, path, body);
        assert_eq!(s, 403, "{method} {path}: {b}");
    }
    let (s, view) = call(&server, &g, "GET", "/guard", None);
    assert_eq!(s, 200);
    let request = view["requests"][0]["id"].as_str().expect("a request").to_string();
    // without the guard's passphrase its approval is no signature
    let (s, b) = call(
        &server,
        &g,
        "POST",
        &format!("/guard/requests/{request}/approve"),
        Some(
            json!({"expires": (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string(), "signature": "00".repeat(64)}),
        ),
    );
    assert!(s == 400 && b["message"].as_str().is_some_and(|m| m.contains("not signed by guard sec")), "{b}");
    drop(server);
    f.intact();
}

#[test]
fn a_policy_edited_to_keep_one_day_on_an_immutable_vault_deletes_nothing() {
    let f = fortified();
    let err = f.env.fails(&["policy", "update", "daily", "--daily-keep", "1", "--yes"]);
    assert!(err.contains("would shorten the retention of") && err.contains("immutability is enabled"), "{err}");
    // a week on, by the clock of the machine that prunes: still all there
    let later = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 7)).to_string();
    let out = f.env.cmd(&["prune", "--safety-margin", "0s"]).env("BOVEDA_FAKE_NOW", &later).output().expect("prune");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    f.intact();
}

/// A local folder vault is its owner's alone: another user (a real
/// process, `nobody`) can neither read nor delete any of it.
#[test]
fn another_user_of_the_machine_cannot_touch_a_local_vault() {
    use std::os::unix::fs::PermissionsExt;
    // a parent every user may pass through, as /srv would be
    let open = std::path::PathBuf::from(format!("/tmp/{}", crate::common::unique("boveda-open")));
    std::fs::create_dir_all(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let env = Env::new();
    let store = open.join("vault");
    env.ok(&["vault", "create", "local", "--store", store.to_str().expect("utf8"), "--insecure-fast-kdf"]);
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"the owner's\n").expect("write");
    env.ok(&["--vault", "local", "item", "add", "files", "docs", "--path", src.to_str().expect("utf8")]);
    env.ok(&["--vault", "local", "protection", "backup-now", "docs"]);
    let mode = std::fs::metadata(&store).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the vault's folder is {mode:o}");
    if crate::common::is_root() {
        let as_nobody = |cmd: &str| {
            std::process::Command::new("runuser")
                .args(["-u", "nobody", "--", "sh", "-c", cmd])
                .output()
                .expect("runuser")
        };
        let vault = store.to_str().expect("utf8");
        assert!(!as_nobody(&format!("ls {vault}")).status.success(), "nobody listed the vault");
        assert!(!as_nobody(&format!("cat {vault}/config")).status.success(), "nobody read the config");
        let _ = as_nobody(&format!("rm -rf {vault}/packs {vault}/points {vault}/config"));
        assert!(store.join("config").exists() && store.join("packs").exists(), "nobody deleted the vault");
    }
    env.ok(&["--vault", "local", "vault", "check", "--read-data"]);
    std::fs::remove_dir_all(&open).ok();
}

/// A local folder vault with its files locked by the file system's
/// immutable attribute: root's own `rm -rf` (a real process) deletes
/// nothing of it. Without root, boveda says it cannot lock there.
#[test]
fn root_cannot_rm_a_local_vault_whose_files_are_immutable() {
    let env = Env::new();
    let store = env.path("locked");
    let create = |extra: &[&str]| {
        let mut args = vec!["vault", "create", "lv", "--store", store.to_str().expect("utf8"), "--insecure-fast-kdf"];
        args.extend_from_slice(extra);
        env.run(&args)
    };
    let made = create(&["--object-lock", "compliance", "--lock-margin-days", "1"]);
    if !crate::common::is_root() {
        assert!(!made.status.success(), "locked without root");
        assert!(String::from_utf8_lossy(&made.stderr).contains("CAP_LINUX_IMMUTABLE"));
        return;
    }
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a.bin"), crate::common::noise(5, 200_000)).expect("write");
    env.ok(&["--vault", "lv", "item", "add", "files", "docs", "--path", src.to_str().expect("utf8")]);
    let until = (jiff::Zoned::now().date() + jiff::Span::new().days(3)).to_string();
    env.ok(&["--vault", "lv", "protection", "backup-now", "docs", "--retain-until", &until]);
    let files = crate::common::walk_files(&store);
    for folder in ["packs/", "points/", "keys/", "config"] {
        let file = files
            .iter()
            .find(|f| f.strip_prefix(&store).is_ok_and(|r| r.to_string_lossy().starts_with(folder)))
            .expect("a file");
        let out = std::process::Command::new("lsattr").arg("-d").arg(file).output().expect("lsattr");
        let flags = String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string();
        assert!(flags.contains('i'), "{} is not immutable: {flags}", file.display());
    }
    let rm = std::process::Command::new("rm").arg("-rf").arg(&store).output().expect("rm");
    assert!(!rm.status.success(), "root's rm -rf succeeded");
    assert!(store.join("config").exists());
    env.ok(&["--vault", "lv", "vault", "check", "--read-data"]);
    let target = env.path("restored");
    env.ok(&["--vault", "lv", "restore", "docs", "--target", target.to_str().expect("utf8")]);
    let restored = target.join(src.strip_prefix("/").expect("absolute")).join("a.bin");
    assert_eq!(std::fs::read(restored).expect("restored"), crate::common::noise(5, 200_000));
    // boveda itself keeps working on it: another backup, a prune
    std::fs::write(src.join("b.txt"), b"more").expect("write");
    env.ok(&["--vault", "lv", "protection", "backup-now", "docs", "--retain-until", &until]);
    env.ok(&["--vault", "lv", "prune", "--safety-margin", "0s"]);
    env.ok(&["--vault", "lv", "vault", "check"]);
    // the test's own cleanup lifts the attribute
    let _ = std::process::Command::new("chattr").arg("-R").arg("-i").arg(&store).output();
}

//! Bad input gets one clear line and loses nothing.

use crate::common;

use std::fs;

use common::Env;

#[test]
fn vault_names_follow_the_rule_and_are_unique() {
    let env = Env::new();
    for bad in ["x", "1abc", "has_underscore", "dot.ted", &"a".repeat(51)] {
        let err = env.fails(&[
            "vault",
            "create",
            bad,
            "--store",
            env.path("v").to_str().expect("utf8"),
            "--insecure-fast-kdf",
        ]);
        assert!(err.contains("2 to 50 characters, begins with a letter"), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    assert!(!env.path("v").exists(), "nothing is created for a bad name");
    env.create_vault();
    let err = env.fails(&[
        "vault",
        "create",
        "TEST-VAULT",
        "--store",
        env.path("v2").to_str().expect("utf8"),
        "--insecure-fast-kdf",
    ]);
    assert!(err.contains("already known"), "{err}");
    let listed = env.ok(&["vault", "list"]);
    assert!(listed.contains("test-vault"), "{listed}");
}

#[test]
fn creating_over_existing_data_is_refused() {
    let env = Env::new();
    let dir = env.path("busy");
    fs::create_dir_all(&dir).expect("mkdir");
    fs::write(dir.join("precious.txt"), b"keep me").expect("write");
    let err = env.fails(&["vault", "create", "busy", "--store", dir.to_str().expect("utf8"), "--insecure-fast-kdf"]);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(fs::read(dir.join("precious.txt")).expect("read"), b"keep me");
    env.create_vault();
    let err =
        env.fails(&["vault", "create", "again", "--store", env.vault.to_str().expect("utf8"), "--insecure-fast-kdf"]);
    assert!(err.contains("already holds a vault"), "{err}");
}

#[test]
fn wrong_passphrase_and_not_a_vault() {
    let env = Env::new();
    env.create_vault();
    let out = env.cmd(&["vault", "show"]).env("BOVEDA_PASSWORD", "wrong").output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("wrong passphrase"), "{err}");

    let pwfile = env.path("pw");
    fs::write(&pwfile, "correct horse\n").expect("write");
    let out = env
        .cmd(&["--password-file", pwfile.to_str().expect("utf8"), "vault", "show"])
        .env_remove("BOVEDA_PASSWORD")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let out = env.cmd(&["vault", "show"]).env_remove("BOVEDA_PASSWORD").output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no passphrase given"), "{err}");

    fs::create_dir_all(env.path("plain")).expect("mkdir");
    let err = env.fails(&["--vault", env.path("plain").to_str().expect("utf8"), "vault", "show"]);
    assert!(err.contains("is not a boveda vault"), "{err}");
}

#[test]
fn a_newer_format_is_refused_clearly() {
    let env = Env::new();
    env.create_vault();
    let cfg = env.vault.join("config");
    let mut bytes = fs::read(&cfg).expect("read");
    let original = bytes.clone();
    bytes[4] = 4; // format version, little-endian
    fs::write(&cfg, &bytes).expect("write");
    let err = env.fails(&["vault", "show"]);
    assert!(err.contains("format version 4, newer than this boveda supports (3)"), "{err}");
    // version 3 is what registered hosts write; a config is version 3 only
    // when it says the vault is marked for hosts (docs/FORMAT.md)
    bytes[4] = 3;
    fs::write(&cfg, &bytes).expect("write");
    let err = env.fails(&["vault", "show"]);
    assert!(err.contains("config is damaged") && err.contains("format version does not fit"), "{err}");
    // version 1, of development builds, is refused by name too
    bytes[4] = 1;
    fs::write(&cfg, &bytes).expect("write");
    let err = env.fails(&["vault", "show"]);
    assert!(err.contains("format version 1, from a development build"), "{err}");
    fs::write(&cfg, &original).expect("write");
    env.ok(&["vault", "show"]);
}

#[test]
fn items_need_valid_names_and_existing_paths() {
    let env = Env::new();
    env.create_vault();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let err = env.fails(&["item", "add", "files", "bad name", "--path", src.to_str().expect("utf8")]);
    assert!(err.contains("invalid item name"), "{err}");
    let err = env.fails(&["item", "add", "files", "ok", "--path", env.path("missing").to_str().expect("utf8")]);
    assert!(err.contains("does not exist"), "{err}");
    let err = env.fails(&["item", "add", "files", "ok", "--path", src.to_str().expect("utf8"), "--exclude", "a["]);
    assert!(err.contains("invalid exclude pattern"), "{err}");
    env.ok(&["item", "add", "files", "ok", "--path", src.to_str().expect("utf8")]);
    let err = env.fails(&["item", "add", "files", "OK", "--path", src.to_str().expect("utf8")]);
    assert!(err.contains("already exists"), "{err}");
    let listed = env.ok(&["item", "list"]);
    assert!(listed.contains("Warning (initial backup pending)"), "{listed}");

    // a source removed after the item was added fails the backup, writes no point
    fs::remove_dir(&src).expect("rm");
    let err = env.fails(&["protection", "backup-now", "ok"]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(env.ok(&["--output", "json", "recoverypoint", "list", "ok"]).trim() == "[]");
    let err = env.fails(&["protection", "backup-now", "nope"]);
    assert!(err.contains("no item named"), "{err}");
    let err = env.fails(&["protection", "backup-now", "ok", "--retain-until", "2001-01-01"]);
    assert!(err.contains("not in the future"), "{err}");
}

#[test]
fn key_slots_add_list_remove() {
    let env = Env::new();
    env.create_vault();
    let out = env
        .cmd(&["--output", "json", "vault", "key", "add", "--label", "backup-admin", "--insecure-fast-kdf"])
        .env("BOVEDA_NEW_PASSWORD", "second secret")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let added: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let new_id = added["id"].as_str().expect("id").to_string();

    // the new passphrase opens the vault; the list marks the slot in use
    let out = env
        .cmd(&["--output", "json", "vault", "key", "list"])
        .env("BOVEDA_PASSWORD", "second secret")
        .output()
        .expect("run");
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(keys.as_array().expect("list").len(), 2);
    let first_id = keys.as_array().expect("list").iter().find(|k| k["id"] != new_id.as_str()).expect("first")["id"]
        .as_str()
        .expect("id")
        .to_string();

    // the slot in use cannot be removed; another can
    let err = env.cmd(&["vault", "key", "remove", &first_id[..8]]).output().expect("run");
    assert!(String::from_utf8_lossy(&err.stderr).contains("this passphrase opened"));
    let out = env
        .cmd(&["vault", "key", "remove", &first_id[..8]])
        .env("BOVEDA_PASSWORD", "second secret")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let err = env.fails(&["vault", "show"]);
    assert!(err.contains("wrong passphrase"), "the removed passphrase must no longer open the vault: {err}");
    let out = env
        .cmd(&["vault", "key", "remove", &new_id[..8]])
        .env("BOVEDA_PASSWORD", "second secret")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("last key slot"));

    // every change of the key slots is a job: who changed what, and when
    let out = env
        .cmd(&["--output", "json", "job", "list", "--operation", "UpdateKeys"])
        .env("BOVEDA_PASSWORD", "second secret")
        .output()
        .expect("run");
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let states: Vec<_> = jobs.as_array().expect("jobs").iter().map(|j| j["state"].as_str().unwrap_or("")).collect();
    assert_eq!(states, ["Completed", "Failed", "Completed", "Failed"], "{jobs}");
    assert!(jobs[0]["details"].to_string().contains("added key slot"), "{jobs}");
}

#[test]
fn redundancy_is_checked_stored_and_shown() {
    let env = Env::new();
    let v = env.path("v");
    let err = env.fails(&[
        "vault",
        "create",
        "geo",
        "--store",
        v.to_str().expect("utf8"),
        "--redundancy",
        "grs",
        "--insecure-fast-kdf",
    ]);
    assert!(err.contains("--secondary: geo-redundant storage (grs) needs a secondary store"), "{err}");
    let err = env.fails(&[
        "vault",
        "create",
        "geo",
        "--store",
        v.to_str().expect("utf8"),
        "--secondary",
        "/x",
        "--insecure-fast-kdf",
    ]);
    assert!(err.contains("--secondary: a secondary store is only for geo-redundant storage"), "{err}");
    let second = env.path("second");
    env.ok(&[
        "vault",
        "create",
        "geo",
        "--store",
        v.to_str().expect("utf8"),
        "--redundancy",
        "grs",
        "--secondary",
        second.to_str().expect("utf8"),
        "--location",
        "west-rack",
        "--insecure-fast-kdf",
    ]);
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["--output", "json", "--vault", "geo", "vault", "show"])).expect("json");
    assert_eq!(shown["redundancy"], "grs");
    assert_eq!(shown["secondary"], second.to_str().expect("utf8"));
    assert_eq!(shown["location"], "west-rack");
    assert_eq!(shown["name"], "geo");
    // the vault is complete in its store: opening it by path needs no registry
    let out = env
        .cmd(&["--output", "json", "--vault", v.to_str().expect("utf8"), "vault", "show"])
        .env("BOVEDA_CONFIG_DIR", env.path("elsewhere"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
}

//! Geo-redundant vaults end to end with the real binary: every backup is
//! followed by a replication pass; the secondary holds a vault that lists
//! the same points, checks clean with data, and restores byte-exactly when
//! the primary is gone; a prune's deletions reach it.

mod common;

use std::path::Path;

use common::{Env, StoreKind, assert_same_tree, make_full_tree, unique};

fn url(kind: StoreKind, env: &Env, tag: &str) -> String {
    match kind {
        StoreKind::Local => env.path(tag).display().to_string(),
        StoreKind::Azurite => format!("azblob://{}/vault", unique(tag)),
        StoreKind::S3 => format!("s3://{}/vault", unique(tag)),
    }
}

fn behind(env: &Env) -> (u64, u64) {
    let s: serde_json::Value =
        serde_json::from_str(&env.ok(&["--output", "json", "vault", "replication", "status"])).expect("json");
    (s["objects_behind"].as_u64().expect("n"), s["to_delete"].as_u64().expect("n"))
}

fn grs_vault_survives_its_primary(primary: StoreKind, secondary: StoreKind) {
    let env = Env::new();
    let (p, s) = (url(primary, &env, "primary"), url(secondary, &env, "secondary"));
    let mut args = vec!["vault", "create", "geo", "--store", &p, "--redundancy", "grs", "--secondary", &s];
    args.extend(["--insecure-fast-kdf", "--pack-size-mib", "1", "--create-container"]);
    env.ok(&args);
    assert_eq!(behind(&env), (0, 0), "the secondary holds a vault from the start");

    let src = env.path("src");
    make_full_tree(&src);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    let point = env.backup("t", 0);
    assert_eq!(behind(&env), (0, 0), "the backup was replicated");
    let listed = |secondary: bool| -> String {
        let mut a = vec!["--output", "json", "recoverypoint", "list", "t"];
        if secondary {
            a.push("--from-secondary");
        }
        let v: serde_json::Value = serde_json::from_str(&env.ok(&a)).expect("json");
        v.as_array().expect("list").iter().map(|p| p["point"]["id"].as_str().unwrap_or_default().to_string()).collect()
    };
    assert_eq!(listed(true), listed(false));
    assert!(listed(true).contains(point["id"].as_str().expect("id")));
    env.ok(&["vault", "check", "--secondary", "--read-data"]);

    // a point that expires: prune deletes it from the primary, then the
    // pass after the prune from the secondary
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1)).to_string();
    let brief = env.ok(&["--output", "json", "protection", "backup-now", "t", "--retain-until", &soon]);
    let brief: serde_json::Value = serde_json::from_str(&brief).expect("json");
    let brief = brief["id"].as_str().expect("id").to_string();
    assert!(listed(true).contains(&brief), "replicated after the backup");
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    env.ok(&["prune"]);
    assert!(!listed(false).contains(&brief) && !listed(true).contains(&brief), "gone from both sides");
    assert_eq!(listed(true), listed(false));
    assert_eq!(behind(&env), (0, 0));

    // the primary gone: restore from the secondary, byte for byte
    if primary == StoreKind::Local {
        std::fs::rename(&p, env.path("primary-away")).expect("move the primary away");
        let err = env.fails(&["restore", "t", "--target", env.path("r0").to_str().expect("utf8")]);
        assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    }
    let target = env.path("r1");
    env.ok(&["restore", "t", "--from-secondary", "--target", target.to_str().expect("utf8")]);
    assert_same_tree(&src, &target.join(src.strip_prefix("/").expect("absolute")));
    if primary == StoreKind::Local {
        std::fs::rename(env.path("primary-away"), &p).expect("bring the primary back");
    }
}

#[test]
fn folder_to_folder() {
    grs_vault_survives_its_primary(StoreKind::Local, StoreKind::Local);
}

#[test]
fn azurite_to_s3() {
    grs_vault_survives_its_primary(StoreKind::Azurite, StoreKind::S3);
}

#[test]
fn s3_to_azurite() {
    grs_vault_survives_its_primary(StoreKind::S3, StoreKind::Azurite);
}

/// `vault create` refuses a secondary that already holds objects.
#[test]
fn a_secondary_that_is_not_empty_is_refused() {
    let env = Env::new();
    let s = env.path("secondary");
    std::fs::create_dir_all(s.join("packs")).expect("mkdir");
    std::fs::write(s.join("packs/x"), b"someone else's").expect("write");
    let p = env.path("primary");
    let err = env.fails(&[
        "vault",
        "create",
        "geo",
        "--store",
        p.to_str().expect("utf8"),
        "--redundancy",
        "grs",
        "--secondary",
        s.to_str().expect("utf8"),
        "--insecure-fast-kdf",
    ]);
    assert!(err.contains("not empty"), "{err}");
    assert!(!Path::new(&p).join("config").exists(), "no vault was made");
}

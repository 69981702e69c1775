//! Issue 22, 17: a data pack the store lost was never uploaded again: the
//! next backup of the unchanged source said Completed with 0 B added, and
//! its point could not be restored. Now prune and `vault repair` drop what
//! the store lost from the index, repair names what can no longer be
//! restored, and the next backup reads the affected files again; the data
//! stored again has the same chunk ids, so older points that used it are
//! whole again too. On a local folder and on the S3 server, through the
//! real binary.

use crate::common;

use std::fs;
use std::path::Path;

use common::{Env, StoreKind, assert_same_tree, noise};

/// Deletes one data pack from the vault's store; returns its name.
fn lose_a_data_pack(env: &Env) -> String {
    let store = boveda_store::open_store(&env.store).expect("open the store");
    let packs = store.list("packs/data").expect("list");
    let victim = packs.first().expect("a data pack").name.clone();
    store.delete(&victim).expect("delete");
    victim
}

fn restored(env: &Env, point: &str, target: &str, src: &Path) -> std::process::Output {
    let out = env.run(&["restore", "t", "--point", point, "--target", env.path(target).to_str().expect("utf8")]);
    if out.status.success() {
        assert_same_tree(src, &env.path(target).join(src.strip_prefix("/").expect("abs")));
    }
    out
}

fn a_pack_the_store_lost_is_stored_again(kind: StoreKind, by_prune: bool) {
    let env = Env::on(kind);
    env.create_vault();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    // one file per pack (packs are 1 MiB in the tests' vaults)
    for i in 0..3u64 {
        fs::write(src.join(format!("f{i}")), noise(i, 900_000)).expect("write");
    }
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    let p1 = env.backup("t", 0);
    let p1 = p1["id"].as_str().expect("id")[..8].to_string();
    let lost = lose_a_data_pack(&env);

    let check = env.run(&["vault", "check"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(!check.status.success() && said.contains(&lost) && said.contains("is missing"), "{said}");

    if by_prune {
        let out = env.run(&["prune", "--safety-margin", "0s"]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(matches!(out.status.code(), Some(0 | 3)), "{said}{}", String::from_utf8_lossy(&out.stderr));
        assert!(said.contains("the store lost were dropped from the index"), "{said}");
    } else {
        let out = env.run(&["vault", "repair"]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(3), "warnings: {said}{}", String::from_utf8_lossy(&out.stderr));
        assert!(said.contains("dropped from the index: 1 lost pack(s)"), "{said}");
        assert!(said.contains(&format!("point {p1}")), "names the point that cannot be restored: {said}");
        assert!(said.contains("/f"), "names the file: {said}");
    }
    // the source did not change; the next backup stores the lost data again
    let p2 = env.backup("t", 0);
    assert!(p2["stats"]["bytes_new"].as_u64().expect("bytes_new") > 0, "the lost data was stored again: {p2}");
    let p2 = p2["id"].as_str().expect("id")[..8].to_string();
    let out = restored(&env, &p2, "back2", &src);
    assert!(out.status.success(), "the new point restores: {}", String::from_utf8_lossy(&out.stderr));
    // the same data stored again has the same chunk ids: the old point is
    // whole again too, and the vault checks clean
    let report = env.ok(&["vault", "check", "--read-data"]);
    assert!(report.contains("no problems found"), "{report}");
    let out = restored(&env, &p1, "back1", &src);
    assert!(out.status.success(), "the old point is whole again: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_pack_the_store_lost_is_stored_again_after_repair_in_a_folder() {
    a_pack_the_store_lost_is_stored_again(StoreKind::Local, false);
}

#[test]
fn a_pack_the_store_lost_is_stored_again_after_prune_in_a_folder() {
    a_pack_the_store_lost_is_stored_again(StoreKind::Local, true);
}

#[test]
fn a_pack_the_store_lost_is_stored_again_after_repair_in_s3() {
    a_pack_the_store_lost_is_stored_again(StoreKind::S3, false);
}

//! A damaged or missing object is named, with what it affects.

use crate::common;

use std::fs;
use std::path::PathBuf;

use common::{Env, noise};

fn objects(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

fn setup() -> (Env, PathBuf, String) {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    for i in 0..6 {
        fs::write(src.join(format!("file{i}.bin")), noise(i, 700_000)).expect("write");
    }
    env.create_vault();
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    let p = env.backup("t", 0);
    let id = p["id"].as_str().expect("id")[..8].to_string();
    env.ok(&["vault", "check", "--read-data"]);
    (env, src, id)
}

#[test]
fn a_flipped_byte_in_a_pack_is_named_with_what_it_affects() {
    let (env, src, point) = setup();
    let data_packs = objects(&env.vault.join("packs/data"));
    assert!(data_packs.len() >= 2, "the test wants several packs");
    let victim = &data_packs[0];
    let mut bytes = fs::read(victim).expect("read");
    bytes[200] ^= 0x01;
    fs::write(victim, &bytes).expect("write");
    let pack_name = victim.strip_prefix(&env.vault).expect("prefix").to_str().expect("utf8").to_string();

    // structure alone does not read data; --read-data finds it
    env.ok(&["vault", "check"]);
    let out = env.run(&["vault", "check", "--read-data"]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains(&pack_name), "names the pack: {report}");
    assert!(report.contains("fails authentication") || report.contains("does not match"), "{report}");
    assert!(report.contains(&format!("affects item t point {point}")), "names the item and point: {report}");
    assert!(report.contains(&format!("{}/file", src.display())), "names the file: {report}");

    // restore reports the damaged file by path and pack, restores the others
    let out = env.run(&["restore", "t", "--target", env.path("out").to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&pack_name) && err.contains("file"), "{err}");
    let restored = env.path("out").join(src.strip_prefix("/").expect("abs"));
    let intact =
        (0..6).filter(|i| fs::read(restored.join(format!("file{i}.bin"))).ok() == Some(noise(*i, 700_000))).count();
    assert!(intact >= 4, "undamaged files are still restored ({intact} of 6)");
}

#[test]
fn a_missing_index_object_is_named_with_what_it_affects() {
    let (env, src, point) = setup();
    let indexes = objects(&env.vault.join("index"));
    // remove the index of a data pack (not of the tree pack)
    let data_packs = objects(&env.vault.join("packs/data"));
    assert!(!data_packs.is_empty());
    let before = indexes.len();
    fs::remove_file(&indexes[0]).expect("rm");
    let out = env.run(&["vault", "check"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("listed by no index"), "{report}");
    assert!(report.contains(&format!("point {point}")), "{report}");
    assert!(
        report.contains("listed by no index (left by an interrupted backup)")
            || report.contains("pack(s) are listed by no index"),
        "{report}"
    );
    assert!(report.contains(&src.display().to_string()) || report.contains("affects item t point"), "{report}");
    assert_eq!(objects(&env.vault.join("index")).len(), before - 1, "check changes nothing");
}

#[test]
fn a_missing_pack_is_named() {
    let (env, _src, point) = setup();
    let data_packs = objects(&env.vault.join("packs/data"));
    fs::remove_file(&data_packs[0]).expect("rm");
    let out = env.run(&["vault", "check"]);
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    let name = data_packs[0].file_name().expect("name").to_str().expect("utf8");
    assert!(report.contains(name) && report.contains("is missing"), "{report}");
    assert!(report.contains(&format!("point {point}")), "{report}");
}

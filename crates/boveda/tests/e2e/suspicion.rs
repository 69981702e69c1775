//! A warning when a backup looks like an attack, through the real CLI with
//! a simulated clock: a third of a tree's files encrypted (random bytes
//! of the same size, as ransomware leaves them) is flagged, raises a
//! Critical alert naming what jumped, and holds the point before it past
//! its retention until an admin reviews it; 30 rounds of ordinary change
//! and a large ordinary addition are never flagged.

use std::path::Path;

use serde_json::Value;

use crate::common::{Env, noise};

fn json(env: &Env, now: &str, args: &[&str]) -> Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&env.ok_at(now, &all)).expect("json")
}

/// Text the way source files are: compressible.
fn text(seed: u64, len: usize) -> Vec<u8> {
    let words = ["fn ", "let ", "match ", "return ", "value", "// note ", "{\n", "}\n", "self.", "Ok(()) "];
    let mut out = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    while out.len() < len {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        out.extend_from_slice(words[(x >> 33) as usize % words.len()].as_bytes());
    }
    out.truncate(len);
    out
}

/// 3000 files in 30 folders: two in three text, one in three media-like
/// random bytes.
fn make_tree(root: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for i in 0..3000u64 {
        let dir = root.join(format!("d{:02}", i % 30));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (name, body) = if i % 3 == 2 {
            (format!("m{i}.bin"), noise(i, 4000 + (i as usize * 37) % 12000))
        } else {
            (format!("f{i}.txt"), text(i, 2000 + (i as usize * 53) % 18000))
        };
        let path = dir.join(name);
        std::fs::write(&path, body).expect("write");
        files.push(path);
    }
    files
}

/// One round of ordinary change, about as `../shared/bench/mutate.py`
/// makes: 1% of text files appended to, a few media files rewritten
/// in part, 0.5% deleted and as many added (random bytes).
fn ordinary_change(root: &Path, files: &mut Vec<std::path::PathBuf>, round: u64) {
    use std::io::Write as _;
    let n = files.len() as u64;
    for k in 0..30u64 {
        let f = &files[((round * 7919 + k * 104729) % n) as usize];
        if let Ok(mut h) = std::fs::OpenOptions::new().append(true).open(f) {
            h.write_all(format!("\n// round {round} edit {k}\n").as_bytes()).expect("append");
        }
    }
    for k in 0..15u64 {
        let i = ((round * 31 + k * 977) % n) as usize;
        let f = files.remove(i);
        std::fs::remove_file(&f).ok();
    }
    for k in 0..15u64 {
        let path = root.join(format!("d{:02}", k % 30)).join(format!("new-r{round}-{k}.bin"));
        std::fs::write(&path, noise(round * 1000 + k, 200 + (k as usize * 997) % 20000)).expect("add");
        files.push(path);
    }
}

fn flagged(env: &Env, now: &str) -> Vec<Value> {
    json(env, now, &["recoverypoint", "review", "docs"]).as_array().cloned().unwrap_or_default()
}

#[test]
fn a_backup_that_encrypts_a_third_of_the_files_is_flagged_and_the_point_before_it_held() {
    let env = Env::new();
    env.create_vault();
    let src = env.path("src");
    let files = make_tree(&src);
    env.ok(&["item", "add", "files", "docs", "--path", src.to_str().expect("utf8")]);
    let day1 = "2026-03-01T10:00:00Z";
    env.ok_at(day1, &["protection", "backup-now", "docs", "--retain-until", "2026-03-03"]);
    let mut some = files.clone();
    ordinary_change(&src, &mut some, 1);
    let day2 = "2026-03-02T10:00:00Z";
    env.ok_at(day2, &["protection", "backup-now", "docs", "--retain-until", "2026-03-03"]);
    assert!(flagged(&env, day2).is_empty(), "an ordinary change flagged");
    let before: Vec<(std::path::PathBuf, Vec<u8>)> =
        some.iter().step_by(3).map(|f| (f.clone(), std::fs::read(f).expect("read"))).collect();

    // the attack: every third file replaced by random bytes of its size
    for (i, (f, body)) in before.iter().enumerate() {
        std::fs::write(f, noise(1_000_000 + i as u64, body.len())).expect("encrypt");
    }
    let attack = "2026-03-02T11:00:00Z";
    let out = env.ok_at(attack, &["protection", "backup-now", "docs", "--retain-until", "2026-03-03"]);
    let flags = flagged(&env, attack);
    assert_eq!(flags.len(), 1, "{out}");
    let reasons = flags[0]["reasons"].to_string();
    assert!(reasons.contains("files changed or removed: 3") && reasons.contains("did not compress"), "{reasons}");
    let alerts = json(&env, attack, &["alert", "list"]);
    let alert = alerts.as_array().and_then(|a| a.iter().find(|a| a["severity"] == "Critical")).expect("an alert");
    assert!(alert["reason"].as_str().is_some_and(|r| r.contains("looks like an attack")), "{alert}");
    let points = json(&env, attack, &["recoverypoint", "list", "docs"]);
    let ids: Vec<String> = points.as_array().expect("points").iter().map(|p| p["point"]["id"].to_string()).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(points[1]["held_for_review_of"].to_string(), ids[2], "the point before the attack is held");
    let listed = env.ok_at(attack, &["recoverypoint", "list", "docs"]);
    assert!(listed.contains("SUSPICIOUS (review it)") && listed.contains("held until"), "{listed}");

    // past every point's retention: prune keeps the held one, says why
    let later = "2026-03-10T10:00:00Z";
    let plan = env.ok_at(later, &["prune", "--dry-run", "--safety-margin", "0s"]);
    assert!(plan.contains("reviewed"), "{plan}");
    env.ok_at(later, &["prune", "--safety-margin", "0s"]);
    let left = json(&env, later, &["recoverypoint", "list", "docs"]);
    let left_ids: Vec<String> = left.as_array().expect("points").iter().map(|p| p["point"]["id"].to_string()).collect();
    assert_eq!(left_ids, [ids[1].clone()], "only the held point is kept");
    // and it restores the files as they were before the attack
    let target = env.path("restored");
    let point = ids[1].trim_matches('"').to_string();
    env.ok_at(later, &["restore", "docs", "--point", &point, "--target", target.to_str().expect("utf8")]);
    for (f, body) in &before {
        let restored = target.join(f.strip_prefix("/").expect("absolute"));
        assert_eq!(&std::fs::read(&restored).expect("restored"), body, "{}", f.display());
    }

    // reviewed: an attack keeps it; "clean" lets it go
    let suspicious = ids[2].trim_matches('"').to_string();
    env.ok_at(later, &["recoverypoint", "review", "docs", "--point", &suspicious, "--confirm"]);
    env.ok_at(later, &["prune", "--safety-margin", "0s"]);
    assert_eq!(json(&env, later, &["recoverypoint", "list", "docs"]).as_array().map(Vec::len), Some(1));
    let out = env.ok_at(later, &["recoverypoint", "review", "docs", "--point", &suspicious, "--clean"]);
    assert!(out.contains("no longer held"), "{out}");
    env.ok_at(later, &["prune", "--safety-margin", "0s"]);
    assert_eq!(json(&env, later, &["recoverypoint", "list", "docs"]).as_array().map(Vec::len), Some(0));
}

#[test]
fn thirty_rounds_of_ordinary_change_and_a_large_addition_are_never_flagged() {
    let env = Env::new();
    env.create_vault();
    let src = env.path("src");
    let mut files = make_tree(&src);
    env.ok(&["item", "add", "files", "docs", "--path", src.to_str().expect("utf8")]);
    env.ok_at("2026-03-01T00:00:00Z", &["protection", "backup-now", "docs"]);
    for round in 1..=30u64 {
        ordinary_change(&src, &mut files, round);
        let now = format!("2026-03-{:02}T{:02}:00:00Z", 1 + round / 24, round % 24);
        env.ok_at(&now, &["protection", "backup-now", "docs"]);
    }
    // a new folder of 2000 compressible files
    for i in 0..2000u64 {
        let dir = src.join("added").join(format!("a{:02}", i % 20));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("n{i}.txt")), text(50_000 + i, 3000)).expect("write");
    }
    let now = "2026-03-03T00:00:00Z";
    env.ok_at(now, &["protection", "backup-now", "docs"]);
    assert!(flagged(&env, now).is_empty(), "{:?}", flagged(&env, now));
    let alerts = json(&env, now, &["alert", "list"]);
    assert_eq!(alerts.as_array().map(Vec::len), Some(0), "{alerts}");
    // the signals were recorded: the last point added 2000 files
    let points = json(&env, now, &["recoverypoint", "list", "docs"]);
    let last = &points[points.as_array().expect("points").len() - 1]["point"]["stats"];
    assert_eq!(last["files_added"], 2000, "{last}");
    assert_eq!(last["files_changed"], 0, "{last}");
}

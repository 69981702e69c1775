//! Concurrent writers and prune (DESIGN.md principle 6), on every kind of
//! store: in every round two machines (processes with their own
//! configuration) back up into one vault at once, different items and the
//! same item, while a third process prunes (safety margin 0) and a fourth
//! runs `vault check`. One item's points expire seconds after they are
//! taken, so prunes delete points, mark packs and sweep them while backups
//! run. Afterwards every point that should exist restores byte-exactly and
//! `vault check --read-data` passes.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Env, StoreKind, noise};

const ROUNDS: u64 = 10;

fn digest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(root).expect("read dir") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().to_string();
        out.insert(name, blake3::hash(&std::fs::read(&p).expect("read")).to_hex().to_string());
    }
    out
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn boveda")
}

fn finish(child: Child, what: &str) -> String {
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what} failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write_round(dir: &Path, round: u64, seed: u64) {
    std::fs::write(dir.join(format!("new{round}")), noise(seed + round, 1_500_000)).expect("write");
    if round >= 2 {
        std::fs::remove_file(dir.join(format!("new{}", round - 2))).expect("remove");
    }
    if round.is_multiple_of(2) {
        // the same content in both items: deduplicated across them
        std::fs::write(dir.join("common"), noise(7_000 + round, 800_000)).expect("write");
    }
}

on_every_store!(backups_prune_and_check_run_together_and_lose_nothing);

fn backups_prune_and_check_run_together_and_lose_nothing(kind: StoreKind) {
    let env = Env::on(kind);
    env.create_vault();
    let (a, b) = (env.path("a"), env.path("b"));
    std::fs::create_dir(&a).expect("mkdir");
    std::fs::create_dir(&b).expect("mkdir");
    env.ok(&["item", "add", "files", "kept", "--path", a.to_str().expect("utf8")]);
    env.ok(&["item", "add", "files", "brief", "--path", b.to_str().expect("utf8")]);

    let mut expected: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let mut swept_packs = 0u64;
    for round in 0..ROUNDS {
        write_round(&a, round, 100);
        write_round(&b, round, 5_000);
        let (da, db) = (digest(&a), digest(&b));
        let brief_until = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2)).to_string();
        // machine 1 backs up both items, machine 2 the kept one too
        let backup_a = spawn(env.machine(1, &["--output", "json", "protection", "backup-now", "kept"]));
        let backup_b = spawn(
            env.machine(1, &["--output", "json", "protection", "backup-now", "brief", "--retain-until", &brief_until]),
        );
        let backup_a2 = spawn(env.machine(2, &["--output", "json", "protection", "backup-now", "kept"]));
        let prune = spawn(env.cmd(&["--output", "json", "prune", "--safety-margin", "0s"]));
        let check = spawn(env.cmd(&["vault", "check"]));
        let pa: serde_json::Value = serde_json::from_str(&finish(backup_a, "backup of kept")).expect("json");
        let pb: serde_json::Value = serde_json::from_str(&finish(backup_b, "backup of brief")).expect("json");
        let pa2: serde_json::Value =
            serde_json::from_str(&finish(backup_a2, "second machine's backup of kept")).expect("json");
        let plan: serde_json::Value = serde_json::from_str(&finish(prune, "prune")).expect("json");
        swept_packs += plan["packs"]["sweep"].as_array().expect("sweep").len() as u64;
        finish(check, "concurrent check");
        expected.push((pa["id"].as_str().expect("id").to_string(), da.clone()));
        expected.push((pa2["id"].as_str().expect("id").to_string(), da));
        // the brief point must restore now, before it expires
        let target = env.path(&format!("rb{round}"));
        let id = pb["id"].as_str().expect("id");
        env.ok(&["restore", "brief", "--point", id, "--target", target.to_str().expect("utf8")]);
        assert_eq!(digest(&target.join(b.strip_prefix("/").expect("abs"))), db, "brief point of round {round}");
        std::thread::sleep(Duration::from_millis(2_100));
    }
    // alone now: the last expired points go, their packs are marked, then swept
    for _ in 0..2 {
        let out = env.ok(&["--output", "json", "prune", "--safety-margin", "0s"]);
        let plan: serde_json::Value = serde_json::from_str(&out).expect("json");
        swept_packs += plan["packs"]["sweep"].as_array().expect("sweep").len() as u64;
    }
    assert!(swept_packs > 0, "prunes reclaimed packs");
    let points: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["--output", "json", "recoverypoint", "list", "brief"])).expect("json");
    assert!(points.is_empty(), "every brief point expired and was deleted");
    for (round, (id, want)) in expected.iter().enumerate() {
        let target = env.path(&format!("ra{round}"));
        env.ok(&["restore", "kept", "--point", id, "--target", target.to_str().expect("utf8")]);
        assert_eq!(&digest(&target.join(a.strip_prefix("/").expect("abs"))), want, "kept point of round {round}");
    }
    let report = env.ok(&["vault", "check", "--read-data"]);
    assert!(report.contains("no problems found"), "{report}");
}

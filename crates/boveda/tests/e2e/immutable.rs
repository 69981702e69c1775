//! An immutable vault and always-on soft delete, through the real CLI with
//! a simulated clock: points held until their retention ends (a policy
//! that would shorten it refused, naming the points; a soft-deleted
//! item's points kept past its window until then), settings that protect
//! points not weakened (each refusal naming the setting), locked for good.

use serde_json::Value;

use crate::common::Env;

fn points(env: &Env, now: &str) -> usize {
    let list: Value = serde_json::from_str(&env.ok_at(now, &["--output", "json", "recoverypoint", "list", "docs"]))
        .expect("points json");
    list.as_array().map_or(0, Vec::len)
}

#[test]
fn an_immutable_vault_keeps_every_point_until_its_retention_ends() {
    let env = Env::new();
    env.create_vault();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"kept\n").expect("write");
    env.ok(&["item", "add", "files", "docs", "--path", src.to_str().expect("utf8")]);
    env.ok(&["policy", "create", "daily", "--time", "02:00", "--time-zone", "UTC", "--daily-keep", "30"]);
    let start = "2026-01-01T00:00:00Z";
    env.ok_at(start, &["protection", "enable", "docs", "--policy", "daily"]);
    let out = env.ok_at(start, &["agent", "--until", "2026-01-10T12:00:00Z"]);
    assert!(out.contains("10 backup(s) (0 failed"), "{out}");
    let now = "2026-01-10T12:00:00Z";

    // always-on soft delete: confirmed by the vault's name, then it can be
    // neither shortened nor turned off
    let err = env.fails_at(now, &["vault", "update", "--soft-delete-always-on"]);
    assert!(err.contains("--confirm") && err.contains("test-vault"), "{err}");
    env.ok_at(
        now,
        &["vault", "update", "--soft-delete-days", "20", "--soft-delete-always-on", "--confirm", "test-vault"],
    );
    let err = env.fails_at(now, &["vault", "update", "--soft-delete-days", "15"]);
    assert!(err.contains("cannot be shortened from 20 to 15 days: soft delete is always-on"), "{err}");

    env.ok_at(now, &["vault", "update", "--immutability", "enabled"]);
    let shown: Value = serde_json::from_str(&env.ok_at(now, &["--output", "json", "vault", "show"])).expect("json");
    assert_eq!(
        (shown["immutability"].as_str(), shown["soft_delete_always_on"].as_bool()),
        (Some("enabled"), Some(true))
    );

    // `vault check` names a hold removed from the store behind boveda's back
    let check = env.ok_at(now, &["vault", "check"]);
    assert!(check.contains("no problems found"), "{check}");
    let holds = env.vault.join("catalog/point-holds");
    let first = std::fs::read_dir(&holds).expect("holds").next().expect("a hold").expect("entry").path();
    std::fs::remove_dir_all(&first).expect("remove a hold");
    let out = env.run_at(now, &["vault", "check"]);
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && said.contains("but nothing holds it"), "{said}");
    assert!(said.contains(&format!("catalog/point-holds/{}", first.file_name().expect("name").to_string_lossy())));
    env.ok_at(now, &["vault", "update", "--immutability", "enabled"]);
    env.ok_at(now, &["vault", "check"]);
    // a backup on the immutable vault holds its new point at once
    env.ok_at(now, &["protection", "backup-now", "docs"]);
    assert_eq!(std::fs::read_dir(&holds).expect("holds").count(), 11, "the new point is held");
    env.ok_at(now, &["vault", "check"]);

    // a policy change that would shorten retention: refused, naming points and the setting
    let err = env.fails_at(now, &["policy", "update", "daily", "--daily-keep", "3", "--yes"]);
    assert!(
        err.contains("immutability is enabled") && err.contains("would shorten the retention of 10 point(s)"),
        "{err}"
    );
    assert!(err.contains("of item docs"), "{err}");
    let policy: Value =
        serde_json::from_str(&env.ok_at(now, &["--output", "json", "policy", "show", "daily"])).expect("json");
    assert_eq!(policy["retention"]["daily_days"], 30, "unchanged");
    // a longer one is fine
    env.ok_at(now, &["policy", "update", "daily", "--daily-keep", "40", "--yes"]);

    // deleting the data: soft deleted, and after its 20-day window the
    // points are still held (immutability) until their retention ends
    // (30 days, as the policy said when the vault became immutable)
    env.ok_at(now, &["protection", "disable", "docs", "--delete-data"]);
    let after_window = "2026-02-01T00:00:00Z";
    let plan: Value = serde_json::from_str(
        &env.ok_at(after_window, &["--output", "json", "prune", "--dry-run", "--safety-margin", "0s"]),
    )
    .expect("plan");
    let held = plan["held"].as_array().expect("held");
    assert!(
        !held.is_empty() && held[0].as_str().is_some_and(|h| h.contains("by the vault's immutability (enabled)")),
        "{plan}"
    );
    env.ok_at(after_window, &["prune", "--safety-margin", "0s"]);
    assert_eq!(points(&env, after_window), 10, "only the point past its retention (January 1st's) is deleted");
    let err =
        env.fails_at(after_window, &["vault", "update", "--immutability", "disabled", "--soft-delete-days", "14"]);
    assert!(err.contains("soft delete is always-on"), "{err}");

    // locked: confirmed by name, and then nobody unlocks it
    let err = env.fails_at(now, &["vault", "update", "--immutability", "locked", "--confirm", "other"]);
    assert!(err.contains("cannot be undone") && err.contains("test-vault"), "{err}");
    env.ok_at(now, &["vault", "update", "--immutability", "locked", "--confirm", "test-vault"]);
    for back in ["disabled", "enabled"] {
        let err = env.fails_at(now, &["vault", "update", "--immutability", back]);
        assert!(err.contains("immutability is locked: it cannot be disabled or changed, by anyone"), "{err}");
    }

    // past every retention: deleted, and the item purged
    let later = "2026-03-01T00:00:00Z";
    env.ok_at(later, &["prune", "--safety-margin", "0s"]);
    let err = env.fails_at(later, &["recoverypoint", "list", "docs"]);
    assert!(err.contains("no item named \"docs\""), "the item is purged: {err}");
    let shown: Value = serde_json::from_str(&env.ok_at(later, &["--output", "json", "vault", "show"])).expect("json");
    assert_eq!(shown["recovery_points"], 0, "expired points stay past their retention");
    env.ok_at(later, &["vault", "check", "--read-data"]);
}

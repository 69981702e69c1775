//! Multi-user authorization through the real CLI: a vault bound to a guard
//! refuses each critical operation with a request; the guard approves it
//! with its passphrase alone (no vault); the admin's operation then goes
//! through once. An approval is not replayed, not used for another
//! operation, does not outlive its expiry, and is not forged by the
//! vault's passphrase; every request, approval and use is a job.

use serde_json::Value;

use crate::common::Env;

const GUARD_PASS: &str = "correct horse battery staple";

fn run(env: &Env, now: &str, args: &[&str]) -> std::process::Output {
    env.cmd(args).env("BOVEDA_FAKE_NOW", now).env("BOVEDA_GUARD_PASSPHRASE", GUARD_PASS).output().expect("run")
}

fn ok(env: &Env, now: &str, args: &[&str]) -> String {
    let out = run(env, now, args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(env: &Env, now: &str, args: &[&str]) -> String {
    let out = run(env, now, args);
    assert!(!out.status.success(), "{args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The request id a refusal names.
fn request_of(refusal: &str) -> String {
    assert!(refusal.contains("needs the approval of guard sec-team"), "{refusal}");
    let after = refusal.split("request ").nth(1).expect("a request id");
    after.split_whitespace().next().expect("id").to_string()
}

/// The guard's approval code of request `id`, signed with `pass`.
fn approve(env: &Env, now: &str, guard: &str, id: &str, pass: &str, valid_for: &str) -> std::process::Output {
    let shown: Value =
        serde_json::from_str(&ok(env, now, &["--output", "json", "guard", "show", id])).expect("request json");
    let code = shown["code"].as_str().expect("code").to_string();
    // the guard's machine: no vault, no vault passphrase
    let mut cmd = env.cmd(&["guard", "approve", &code, "--guard", guard, "--valid-for", valid_for]);
    cmd.env("BOVEDA_FAKE_NOW", now).env("BOVEDA_GUARD_PASSPHRASE", pass).env_remove("BOVEDA_PASSWORD");
    cmd.output().expect("approve")
}

fn approval(env: &Env, now: &str, guard: &str, id: &str) -> String {
    let out = approve(env, now, guard, id, GUARD_PASS, "4h");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn jobs(env: &Env, now: &str, operation: &str) -> Vec<Value> {
    let all: Value =
        serde_json::from_str(&ok(env, now, &["--output", "json", "job", "list", "--operation", operation]))
            .expect("jobs");
    all.as_array().cloned().unwrap_or_default()
}

#[test]
fn a_guarded_vault_runs_critical_operations_only_with_the_guards_approval() {
    let env = Env::new();
    env.create_vault();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"guarded\n").expect("write");
    env.ok(&["item", "add", "files", "docs", "--path", src.to_str().expect("utf8")]);
    env.ok(&["policy", "create", "daily", "--time", "02:00", "--time-zone", "UTC", "--daily-keep", "30"]);
    let now = "2026-03-01T10:00:00Z";
    ok(&env, now, &["protection", "enable", "docs", "--policy", "daily"]);
    ok(&env, now, &["protection", "backup-now", "docs"]);

    let short = env.cmd(&["guard", "create"]).env("BOVEDA_GUARD_PASSPHRASE", "short").output().expect("run");
    assert!(!short.status.success() && String::from_utf8_lossy(&short.stderr).contains("at least 12 characters"));
    let guard = ok(&env, now, &["guard", "create"]).trim().to_string();
    assert!(guard.starts_with("bvg_") && guard.len() == 100, "{guard}");
    ok(&env, now, &["guard", "bind", &guard, "--name", "sec-team"]);
    // strengthening needs no approval
    ok(&env, now, &["vault", "update", "--immutability", "enabled", "--soft-delete-days", "30"]);

    // weakening: refused with a request, recorded as a job; again: the same request
    let first = fails(&env, now, &["vault", "update", "--immutability", "disabled"]);
    let id = request_of(&first);
    assert!(first.contains("immutability enabled to disabled") && first.contains("was made"), "{first}");
    let again = fails(&env, now, &["vault", "update", "--immutability", "disabled"]);
    assert_eq!(request_of(&again), id, "{again}");
    assert!(again.contains("is waiting"), "{again}");
    assert_eq!(jobs(&env, now, "GuardRequest").len(), 1);

    // a wrong guard passphrase signs nothing
    let wrong = approve(&env, now, &guard, &id, "not the guard's passphrase", "4h");
    assert!(!wrong.status.success(), "wrong passphrase approved");
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong passphrase for guard"));
    // nor does an approval for longer than 24 hours
    assert!(!approve(&env, now, &guard, &id, GUARD_PASS, "25h").status.success());

    let code = approval(&env, now, &guard, &id);
    ok(&env, now, &["guard", "accept", &code]);
    // the same code twice: refused
    let err = fails(&env, now, &["guard", "accept", &code]);
    assert!(err.contains("not pending"), "{err}");

    ok(&env, now, &["vault", "update", "--immutability", "disabled"]);
    let shown: Value = serde_json::from_str(&ok(&env, now, &["--output", "json", "vault", "show"])).expect("json");
    assert_eq!(shown["immutability"].as_str(), Some("disabled"));
    assert_eq!(jobs(&env, now, "GuardApproval").len(), 1);
    let used = jobs(&env, now, "GuardUse");
    assert_eq!(used.len(), 1);
    assert!(used[0].to_string().contains(&format!("request {id} used")), "{used:?}");

    // not replayed: the same change again makes a new request
    ok(&env, now, &["vault", "update", "--immutability", "enabled"]);
    let replay = fails(&env, now, &["vault", "update", "--immutability", "disabled"]);
    let replay_id = request_of(&replay);
    assert_ne!(replay_id, id);

    // an approval of one operation is not one of another
    let delete = fails(&env, now, &["protection", "disable", "docs", "--delete-data"]);
    let delete_id = request_of(&delete);
    assert!(delete.contains("delete backup data of item docs"), "{delete}");
    ok(&env, now, &["guard", "accept", &approval(&env, now, &guard, &replay_id)]);
    let still = fails(&env, now, &["protection", "disable", "docs", "--delete-data"]);
    assert_eq!(request_of(&still), delete_id);
    let items: Value = serde_json::from_str(&ok(&env, now, &["--output", "json", "item", "list"])).expect("items");
    assert_eq!(items[0]["protection"].as_str(), Some("Protected"), "{items}");
    ok(&env, now, &["vault", "update", "--immutability", "disabled"]);

    // an approval does not outlive its expiry
    ok(&env, now, &["guard", "accept", &approval(&env, now, &guard, &delete_id)]);
    let later = "2026-03-01T14:30:00Z";
    let expired = fails(&env, later, &["protection", "disable", "docs", "--delete-data"]);
    assert_ne!(request_of(&expired), delete_id, "{expired}");
    let listed = ok(&env, later, &["guard", "requests"]);
    assert!(listed.contains("Expired") && listed.contains("Pending"), "{listed}");

    // reducing a policy's retention; removing a key; unbinding the guard
    let policy = fails(&env, later, &["policy", "update", "daily", "--daily-keep", "7", "--yes"]);
    assert!(policy.contains("reduce retention of policy daily"), "{policy}");
    let more = ok(&env, later, &["policy", "update", "daily", "--daily-keep", "60", "--yes"]);
    assert!(!more.contains("approval"), "{more}");
    let keys: Value =
        serde_json::from_str(&ok(&env, later, &["--output", "json", "vault", "key", "list"])).expect("keys");
    assert_eq!(keys.as_array().map(Vec::len), Some(1));
    let unbind = fails(&env, later, &["guard", "unbind"]);
    let unbind_id = request_of(&unbind);
    assert!(unbind.contains("guard unbound"), "{unbind}");

    // the vault's passphrase forges no approval: a record written with a
    // signature of another key is not taken
    let forged_guard = {
        let out = env.cmd(&["guard", "create"]).env("BOVEDA_GUARD_PASSPHRASE", "the admin's own guard").output();
        String::from_utf8_lossy(&out.expect("run").stdout).trim().to_string()
    };
    let forged = approve(&env, later, &forged_guard, &unbind_id, "the admin's own guard", "4h");
    assert!(!forged.status.success(), "signed for another guard");
    assert!(String::from_utf8_lossy(&forged.stderr).contains("another guard"));

    ok(&env, later, &["guard", "accept", &approval(&env, later, &guard, &unbind_id)]);
    ok(&env, later, &["guard", "unbind"]);
    ok(&env, later, &["vault", "update", "--soft-delete-days", "14"]);
}

/// The regression: changing an item to a shorter policy asked the guard,
/// but stopping its protection and resuming it with that policy did not,
/// and the next prune deleted points the guard was meant to protect.
#[test]
fn stopping_and_resuming_with_a_shorter_policy_needs_the_guard_as_changing_it_does() {
    let env = Env::new();
    env.create_vault();
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a.txt"), b"kept a year\n").expect("write");
    env.ok(&["item", "add", "files", "docs", "--path", src.to_str().expect("utf8")]);
    let now = "2026-03-01T10:00:00Z";
    ok(&env, now, &["policy", "create", "year", "--time", "02:00", "--time-zone", "UTC", "--daily-keep", "365"]);
    ok(&env, now, &["policy", "create", "short", "--time", "02:00", "--time-zone", "UTC", "--daily-keep", "1"]);
    ok(&env, now, &["protection", "enable", "docs", "--policy", "year"]);
    // the agent, its clock running from now: the slots of two nights
    ok(&env, now, &["agent", "--until", "2026-03-03T03:00:00Z"]);
    let guard = ok(&env, now, &["guard", "create"]).trim().to_string();
    ok(&env, now, &["guard", "bind", &guard, "--name", "sec-team"]);

    let direct = fails(&env, now, &["protection", "change-policy", "docs", "--policy", "short"]);
    request_of(&direct);
    // round the side: stop, then resume with the short policy
    ok(&env, now, &["protection", "disable", "docs"]);
    let resumed = fails(&env, now, &["protection", "resume", "docs", "--policy", "short"]);
    assert!(resumed.contains("reduce retention") || resumed.contains("needs the approval"), "{resumed}");
    request_of(&resumed);
    // resuming with the policy it had needs nothing; its points are kept
    ok(&env, now, &["protection", "resume", "docs", "--policy", "year"]);
    ok(&env, "2026-03-20T10:00:00Z", &["prune", "--safety-margin", "0s"]);
    let points: Value =
        serde_json::from_str(&ok(&env, "2026-03-20T10:00:00Z", &["--output", "json", "recoverypoint", "list", "docs"]))
            .expect("points");
    assert_eq!(points.as_array().map(Vec::len), Some(2), "{points}");
}

//! A registered host's uploads straight to the vault's store, attacked as
//! root on the host with what it holds and the grants the server gives it,
//! in Azurite (which checks a SAS's signature and permissions, as Azure
//! does). Every attempt is refused and named, nothing stored changes.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{Env, StoreKind, noise};
use crate::fleet::{
    admin, attack, backup_json, fleet_vault, host_fails, identity, restored, serve, two_hosts_with_items,
};
use crate::serve::curl;

/// Every object of the vault's store below `prefix`, with its bytes' hash.
fn objects(env: &Env, prefix: &str) -> BTreeMap<String, blake3::Hash> {
    let store = boveda_store::open_backend(&env.store, false).expect("open the store");
    let listed = store.list(prefix).expect("list");
    listed.into_iter().map(|o| (o.name.clone(), blake3::hash(&store.get(&o.name).expect("get")))).collect()
}

/// Sends `body` with a grant's request as curl would, to `url` (the
/// grant's own, or another), leaving out headers named in `drop`.
fn use_grant(grant: &serde_json::Value, url: &str, body: &std::path::Path, drop: &[&str]) -> u16 {
    // no `Expect: 100-continue`: the status read is the answer's
    let mut args: Vec<String> = vec!["-X".into(), "PUT".into(), url.into(), "-H".into(), "Expect:".into()];
    args.push("--data-binary".into());
    args.push(format!("@{}", body.display()));
    for pair in grant["headers"].as_array().expect("headers") {
        let (k, v) = (pair[0].as_str().expect("name"), pair[1].as_str().expect("value"));
        if !drop.contains(&k) && k != "content-length" {
            args.extend(["-H".into(), format!("{k}: {v}")]);
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (head, _) = curl(&args);
    head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn a_hosts_grants_create_its_own_new_packs_and_nothing_else() {
    let (env, cert, key, port) = fleet_vault(Env::on(StoreKind::Azurite));
    let server = serve(&env, port, &cert, &key, &["--host-quota-mib", "4"]);
    let url = server.url.clone();
    let (s1, s2) = two_hosts_with_items(&env, &url, &cert);
    let first = backup_json(&env, "web1", "web1-files");
    assert!(first["bytes_direct"].as_u64().expect("direct") > 0, "packs went straight to Azurite: {first}");
    backup_json(&env, "web2", "web2-files");
    let web2_packs: Vec<String> = {
        let web2 = identity(&env, "web2")["host"].as_str().expect("id").to_string();
        let store = boveda_store::open_backend(&env.store, false).expect("store");
        let needle: Vec<u8> =
            (0..32).step_by(2).map(|i| u8::from_str_radix(&web2[i..i + 2], 16).expect("hex")).collect();
        let packs = store.list("packs").expect("list");
        packs
            .into_iter()
            .filter(|o| store.get_range(&o.name, 8, 16).is_ok_and(|h| h == needle))
            .map(|o| o.name)
            .collect()
    };
    assert!(!web2_packs.is_empty(), "web2 sealed packs");
    let before = objects(&env, "packs");

    // the attacker: web1's root, its identity file, a job of its own
    let token = identity(&env, "web1")["token"].as_str().expect("token").to_string();
    let api = format!("{url}/api/v1/vaults/test-vault");
    let req = env.path("req.json");
    std::fs::write(&req, r#"{"item":"web1-files"}"#).expect("req");
    let (code, body) = attack("POST", &format!("{api}/host/jobs"), &token, Some(&req));
    assert_eq!(code, 201, "{body}");
    let job = serde_json::from_str::<serde_json::Value>(&body).expect("job")["job"].as_str().expect("id").to_string();
    let grants = format!("{api}/host/jobs/{job}/grants");
    let ask = |name: &str, size: u64| {
        std::fs::write(&req, serde_json::json!({"name": name, "size": size}).to_string()).expect("ask");
        attack("POST", &grants, &token, Some(&req))
    };

    // 1. anything but a pack: no grant (index objects pass the server's checks)
    for name in ["index/00", "config", "keys/00", "catalog/items/x", "points/x", "locks/prune"] {
        let (code, body) = ask(name, 100);
        assert_eq!(code, 403, "{name}: {body}");
        assert!(body.contains("only packs go straight to the store"), "{name}: {body}");
    }
    //    a pack's name but not as boveda writes it (another fan-out folder, a
    //    name S3 would read as another): refused
    for name in [format!("packs/data/zz/{}", "aa".repeat(32)), format!("packs/data/%61a/{}", "aa".repeat(32))] {
        let (code, body) = ask(&name, 100);
        assert_eq!(code, 403, "{name}: {body}");
    }
    // 2. a pack already stored (another host's, as if its name leaked): no grant
    let (code, body) = ask(&web2_packs[0], 100);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("stored already, and this job did not upload it"), "{body}");
    // 3. no bigger than a pack may be, no smaller than one is, within the quota
    for size in [1 << 30, 0] {
        let (code, body) = ask(&format!("packs/data/aa/{}", "aa".repeat(32)), size);
        assert!(code == 403 && body.contains("not the size of a pack"), "{code} {body}");
    }
    let (code, body) = ask(&format!("packs/data/ab/{}", "ab".repeat(32)), 5 << 20);
    assert!(code == 403 && body.contains("quota of 4 MiB"), "{code} {body}");

    // 4. a grant for 100 bytes, used for 3 MiB (Azure does not sign the
    //    length): counted at what the store holds when the job ends
    let (code, body) = ask(&format!("packs/data/dd/{}", "dd".repeat(32)), 100);
    assert_eq!(code, 200, "{body}");
    let longer = serde_json::from_str::<serde_json::Value>(&body).expect("way")["grant"].clone();
    let three = env.path("three-mib");
    std::fs::write(&three, noise(3, 3 << 20)).expect("3 MiB");
    assert_eq!(use_grant(&longer, longer["url"].as_str().expect("url"), &three, &[]), 201);
    //    a grant for one new pack
    let mine = format!("packs/data/cc/{}", "cc".repeat(32));
    let garbage = env.path("garbage");
    std::fs::write(&garbage, noise(5, 1000)).expect("garbage");
    let (code, body) = ask(&mine, 1000);
    assert_eq!(code, 200, "{body}");
    let grant = serde_json::from_str::<serde_json::Value>(&body).expect("way")["grant"].clone();
    let granted = grant["url"].as_str().expect("url").to_string();
    assert!(granted.contains("sp=c&"), "create permission only: {granted}");
    //    used for another host's pack, or for a name of its choosing: refused by the store
    for other in [web2_packs[0].as_str(), "index/dddd", "config"] {
        let status = use_grant(&grant, &granted.replace(&mine, other), &garbage, &[]);
        assert_eq!(status, 403, "{other}");
    }
    //    used to read or delete: refused by the store
    let (head, _) = curl(&["-X", "GET", &granted]);
    assert!(head.contains(" 403"), "{head}");
    let (head, _) = curl(&["-X", "DELETE", &granted.replace(&mine, &web2_packs[0])]);
    assert!(head.contains(" 403"), "{head}");
    //    used once: created; again, with or without If-None-Match: refused
    assert_eq!(use_grant(&grant, &granted, &garbage, &[]), 201);
    std::fs::write(&garbage, noise(6, 1000)).expect("garbage");
    for drop in [&[][..], &["if-none-match"][..]] {
        let status = use_grant(&grant, &granted, &garbage, drop);
        assert!(matches!(status, 403 | 409 | 412), "a second use replaced the object: {status}");
    }

    //    grants not listed by any index object yet: a bound
    for i in 0..6u8 {
        let (code, body) = ask(&format!("packs/data/e{i}/e{i}{}", "00".repeat(31)), 100);
        assert_eq!(code, 200, "{body}");
    }
    let (code, body) = ask(&format!("packs/data/f0/f0{}", "00".repeat(31)), 100);
    assert!(code == 403 && body.contains("not listed by an index object yet"), "{code} {body}");

    // 5. what it created is referenced by nothing; the server's grants end with the job
    let (code, body) = attack(
        "POST",
        &format!("{api}/host/jobs/{job}/report"),
        &token,
        Some(&{
            std::fs::write(&req, r#"{"report":"failed","error":"attack over"}"#).expect("req");
            req.clone()
        }),
    );
    assert!(matches!(code, 200 | 400 | 409), "{code} {body}");
    std::thread::sleep(Duration::from_millis(300));
    let (code, body) = ask(&format!("packs/data/ee/{}", "ee".repeat(32)), 10);
    assert_eq!(code, 409, "a grant after the job ended: {body}");

    // nothing stored changed but the one new pack; every point restores
    let mut after = objects(&env, "packs");
    assert!(after.remove(&mine).is_some(), "the granted pack");
    assert!(after.remove(&format!("packs/data/dd/{}", "dd".repeat(32))).is_some(), "the 3 MiB one");
    assert_eq!(after, before, "the attacks changed stored packs");
    let err = host_fails(&env, "web1", &["host", "backup", "web2-files"]);
    assert!(err.contains("no item named"), "{err}");
    restored(&env, "web2-files", &s2, "r2");
    restored(&env, "web1-files", &s1, "r1");
    let check = admin(&env, &["vault", "check", "--read-data"]);
    assert!(check.contains("listed by no index"), "the unreferenced pack is named, as harmless: {check}");

    // 6. what a failed job was granted counts against the host's next
    // jobs, until a prune reclaims it
    let start_job = || {
        std::fs::write(&req, r#"{"item":"web1-files"}"#).expect("req");
        let (code, body) = attack("POST", &format!("{api}/host/jobs"), &token, Some(&req));
        assert_eq!(code, 201, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("job")["job"].as_str().expect("id").to_string()
    };
    let ask_in = |job: &str, size: u64| {
        std::fs::write(
            &req,
            serde_json::json!({"name": format!("packs/data/f1/{}", "f1".repeat(32)), "size": size}).to_string(),
        )
        .expect("ask");
        attack("POST", &format!("{api}/host/jobs/{job}/grants"), &token, Some(&req))
    };
    let fail = |job: &str| {
        std::fs::write(&req, r#"{"report":"failed","error":"over"}"#).expect("req");
        attack("POST", &format!("{api}/host/jobs/{job}/report"), &token, Some(&req));
        std::thread::sleep(Duration::from_millis(300));
    };
    let next = start_job();
    let (code, body) = ask_in(&next, 2 << 20);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("3 MiB of it left by earlier jobs since the last prune"), "{body}");
    fail(&next);
    admin(&env, &["prune"]);
    let after_prune = start_job();
    let (code, body) = ask_in(&after_prune, 2 << 20);
    assert_eq!(code, 200, "counted again from nothing after a prune: {body}");
    fail(&after_prune);
    drop(server);

    // a server told to take every upload itself grants nothing
    let _server = serve(&env, port, &cert, &key, &["--host-uploads-through-server"]);
    std::fs::write(s1.join("d0/f3"), noise(1234, 300_000)).expect("change");
    let through = backup_json(&env, "web1", "web1-files");
    assert_eq!(through["bytes_direct"], 0, "{through}");
    assert!(through["bytes_through_server"].as_u64().expect("through") > 300_000, "{through}");
    restored(&env, "web1-files", &s1, "r1-through");
}

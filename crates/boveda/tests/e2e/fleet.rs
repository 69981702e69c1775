//! Many hosts, one vault (docs/FLEET.md), with real processes: `boveda
//! serve` over HTTPS with its own certificate, hosts registered with
//! single-use credentials, each with its own identity folder and no
//! passphrase, backing up through the server; the admin restores on the
//! server's side. Then a registered host attacks, as root, with all it
//! holds, and is refused each time, naming why, losing nothing.

use crate::common;
use crate::serve::{Server, curl};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Env, StoreKind, assert_same_tree, bin, noise};

/// A registered host's command: its own identity folder and config, no
/// passphrase, no vault.
pub(super) fn host_cmd(env: &Env, host: &str, args: &[&str]) -> Command {
    let dir = host_dir(env, host);
    let mut c = Command::new(bin());
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &dir)
        .env("BOVEDA_HOST_DIR", &dir)
        .env("BOVEDA_CONFIG_DIR", dir.join("config"))
        .env("BOVEDA_CACHE_DIR", dir.join("user-cache"));
    c
}

pub(super) fn host_dir(env: &Env, host: &str) -> PathBuf {
    env.path(&format!("host-{host}"))
}

pub(super) fn run(mut c: Command) -> Output {
    c.output().expect("run boveda")
}

pub(super) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(super) fn host_ok(env: &Env, host: &str, args: &[&str]) -> String {
    let out = run(host_cmd(env, host, args));
    assert!(out.status.success(), "host {host}: boveda {args:?}\n{}\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

pub(super) fn host_fails(env: &Env, host: &str, args: &[&str]) -> String {
    let out = run(host_cmd(env, host, args));
    assert_eq!(
        out.status.code(),
        Some(1),
        "host {host}: boveda {args:?}\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

pub(super) fn admin(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["--vault", "test-vault"];
    all.extend_from_slice(args);
    env.ok(&all)
}

/// A self-signed certificate for 127.0.0.1.
fn certificate(env: &Env) -> (String, String) {
    let (cert, key) = (env.path("cert.pem"), env.path("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=boveda-test", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", text(&made.stderr));
    (cert.display().to_string(), key.display().to_string())
}

/// A test vault, a certificate for its server, and a free port for it.
pub(super) fn fleet_vault(env: Env) -> (Env, String, String, u16) {
    env.create_vault();
    let (cert, key) = certificate(&env);
    (env, cert, key, free_port())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

pub(super) fn serve(env: &Env, port: u16, cert: &str, key: &str, extra: &[&str]) -> Server {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["serve", "test-vault", "--listen", &listen, "--tls-cert", cert, "--tls-key", key];
    args.extend_from_slice(&["--no-scheduler", "--host-silence-secs", "4"]);
    args.extend_from_slice(extra);
    Server::start(env, &args)
}

/// Credentials for one host, in a file.
pub(super) fn credentials(env: &Env, url: &str, cert: &str, name: &str, expires: &str) -> PathBuf {
    let out = admin(env, &["host", "credentials", "--server", url, "--tls-cert", cert, "--expires", expires]);
    let file = env.path(&format!("{name}.creds"));
    std::fs::write(&file, out).expect("credentials file");
    file
}

pub(super) fn register(env: &Env, host: &str, creds: &Path) -> String {
    host_ok(env, host, &["host", "register", "--credentials", creds.to_str().expect("utf8"), "--name", host])
}

pub(super) fn source(env: &Env, name: &str, files: u64) -> PathBuf {
    let src = env.path(name);
    for i in 0..files {
        let sub = src.join(format!("d{}", i % 3));
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join(format!("f{i}")), noise(i * 7 + name.len() as u64, 20_000 + i as usize * 700))
            .expect("write");
    }
    src
}

pub(super) fn restored(env: &Env, item: &str, src: &Path, name: &str) {
    let out = env.path(name);
    admin(env, &["restore", item, "--target", out.to_str().expect("utf8")]);
    assert_same_tree(src, &out.join(src.strip_prefix("/").expect("absolute")));
}

pub(super) fn backup_json(env: &Env, host: &str, item: &str) -> serde_json::Value {
    let out = host_ok(env, host, &["--output", "json", "host", "backup", item]);
    serde_json::from_str(&out).expect("backup json")
}

on_every_store!(two_hosts_register_back_up_through_the_server_and_are_restored_there);

fn two_hosts_register_back_up_through_the_server_and_are_restored_there(kind: StoreKind) {
    let (env, cert, key, port) = fleet_vault(Env::on(kind));
    let server = serve(&env, port, &cert, &key, &[]);
    let url = server.url.clone();

    let (c1, c2) = (credentials(&env, &url, &cert, "web1", "48h"), credentials(&env, &url, &cert, "web2", "48h"));
    assert!(register(&env, "web1", &c1).contains("registered host web1"));
    assert!(register(&env, "web2", &c2).contains("registered host web2"));
    // the vault is marked for hosts: builds older than the fleet refuse it at open
    if kind == StoreKind::Local {
        let config = std::fs::read(env.vault.join("config")).expect("config");
        assert_eq!(u16::from_le_bytes([config[4], config[5]]), 3, "the config's format version");
    }
    // credentials work once
    let again = host_fails(&env, "web3", &["host", "register", "--credentials", c1.to_str().expect("utf8")]);
    assert!(again.contains("used already"), "{again}");
    // what a host keeps: no passphrase, no store, nothing that opens the vault
    let identity = std::fs::read_to_string(host_dir(&env, "web1").join("host.json")).expect("identity");
    assert!(!identity.contains("correct horse") && !identity.contains(&env.store), "{identity}");
    let err = host_fails(&env, "web1", &["vault", "check"]);
    assert!(!err.is_empty());

    let (s1, s2) = (source(&env, "src1", 40), source(&env, "src2", 25));
    admin(&env, &["item", "add", "files", "web1-files", "--path", s1.to_str().expect("utf8"), "--host", "web1"]);
    admin(&env, &["item", "add", "files", "web2-files", "--path", s2.to_str().expect("utf8"), "--host", "web2"]);
    // the server's own backup of a host's item is refused: it runs on the host
    let err = env.fails(&["--vault", "test-vault", "protection", "backup-now", "web1-files"]);
    assert!(err.contains("registered host"), "{err}");
    let items = host_ok(&env, "web1", &["host", "items"]);
    assert!(items.contains("web1-files") && !items.contains("web2-files"), "{items}");

    let first = backup_json(&env, "web1", "web1-files");
    assert_eq!(first["stats"]["files"], 40, "{first}");
    // packs go straight to an object store with the server's grants (only
    // index objects pass through the server); a folder's, through it
    let direct = first["bytes_direct"].as_u64().expect("direct");
    let through = first["bytes_through_server"].as_u64().expect("through");
    if kind == StoreKind::Local {
        assert_eq!(direct, 0, "{first}");
    } else {
        assert!(direct > 0 && through * 20 < direct + through, "under 5% through the server: {first}");
    }
    backup_json(&env, "web2", "web2-files");
    // a host cannot back up another host's item
    let err = host_fails(&env, "web1", &["host", "backup", "web2-files"]);
    assert!(err.contains("no item named"), "{err}");

    // incremental: one file changes, the rest come from the host's cache
    std::fs::write(s1.join("d1/f4"), noise(999, 31_000)).expect("change");
    let second = backup_json(&env, "web1", "web1-files");
    assert_eq!(second["stats"]["files_unchanged"], 39, "{second}");
    assert!(second["stats"]["bytes_read"].as_u64().expect("read") <= 31_000, "{second}");

    restored(&env, "web1-files", &s1, "r1");
    restored(&env, "web2-files", &s2, "r2");
    let points = admin(&env, &["--output", "json", "recoverypoint", "list", "web1-files"]);
    let points: serde_json::Value = serde_json::from_str(&points).expect("json");
    assert_eq!(points.as_array().map(Vec::len), Some(2));
    assert_eq!(points[0]["point"]["hostname"], "web1");
    let jobs = admin(&env, &["--output", "json", "job", "list", "--item", "web1-files"]);
    assert!(jobs.contains("\"Completed\"") && jobs.contains("\"web1\""), "{jobs}");

    let hosts = admin(&env, &["host", "list"]);
    assert!(hosts.contains("web1") && hosts.contains("web2") && hosts.contains("Online"), "{hosts}");
    // unregistered: refused within seconds
    assert!(admin(&env, &["host", "unregister", "web2"]).contains("unregistered host web2"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = run(host_cmd(&env, "web2", &["host", "items"]));
        if !out.status.success() {
            assert!(text(&out.stderr).contains("does not accept this host"), "{}", text(&out.stderr));
            break;
        }
        assert!(Instant::now() < deadline, "an unregistered host is still served");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(admin(&env, &["host", "list"]).contains("Unregistered"));
    restored(&env, "web2-files", &s2, "r2-after");
    admin(&env, &["vault", "check", "--read-data"]);
    drop(server);
}

/// An Operator's restore of `item`'s latest point onto its host, into
/// `target`, through the server's API; the job once it ended.
pub(super) fn restore_on_host(url: &str, cert: &str, token: &str, item: &str, target: &Path) -> serde_json::Value {
    let api = format!("{url}/api/v1/vaults/test-vault");
    let bearer = format!("Authorization: Bearer {token}");
    let body = serde_json::json!({ "point": "latest", "target": target }).to_string();
    let order = format!("{api}/items/{item}/restore");
    let (head, body) =
        curl(&["--cacert", cert, "-H", &bearer, "-H", "Content-Type: application/json", "-d", &body, &order]);
    assert!(head.starts_with("HTTP/1.1 202"), "{head}\n{body}");
    let job: serde_json::Value = serde_json::from_str(&body).expect("job");
    let id = job["id"].as_str().expect("id").to_string();
    // follow the job to its end
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, body) = curl(&["--cacert", cert, "-H", &bearer, &format!("{api}/jobs/{id}")]);
        let job: serde_json::Value = serde_json::from_str(&body).expect("job");
        if job["state"] != "InProgress" && job["state"] != "Queued" {
            return job;
        }
        assert!(Instant::now() < deadline, "the restore never ended: {job}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The status code and body of a request made as an attacker would, with
/// curl (trusting any certificate: the attacker has no reason to check).
pub(super) fn attack(method: &str, url: &str, token: &str, body: Option<&Path>) -> (u16, String) {
    let bearer = format!("Authorization: Bearer {token}");
    let mut args = vec!["-k", "-X", method, "-H", &bearer, url];
    let data;
    if let Some(file) = body {
        data = format!("@{}", file.display());
        args.extend(["-H", "Content-Type: application/json", "--data-binary", &data]);
    }
    let (head, body) = curl(&args);
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, body)
}

pub(super) fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = common::walk_files(dir);
    out.sort();
    out
}

pub(super) fn digest(files: &[PathBuf]) -> Vec<(PathBuf, blake3::Hash)> {
    files.iter().map(|f| (f.clone(), blake3::hash(&std::fs::read(f).expect("read")))).collect()
}

pub(super) fn identity(env: &Env, host: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(host_dir(env, host).join("host.json")).expect("identity");
    serde_json::from_str(&text).expect("json")
}

/// A pack of `host`'s in the store, and one of its index objects.
fn objects_of(env: &Env, host_id: &str) -> (PathBuf, PathBuf) {
    let needle = hex_bytes(host_id);
    let find = |folder: &str| {
        files_below(&env.vault.join(folder))
            .into_iter()
            .find(|f| std::fs::read(f).expect("read").windows(16).take(64).any(|w| w == needle.as_slice()))
            .unwrap_or_else(|| panic!("no {folder} object sealed by {host_id}"))
    };
    (find("packs"), find("index"))
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

/// Hosts web1 and web2 registered, each with an item of 12 files
/// (`web1-files`, `web2-files`); their sources.
pub(super) fn two_hosts_with_items(env: &Env, url: &str, cert: &str) -> (PathBuf, PathBuf) {
    for h in ["web1", "web2"] {
        register(env, h, &credentials(env, url, cert, h, "48h"));
    }
    let (s1, s2) = (source(env, "src1", 12), source(env, "src2", 12));
    admin(env, &["item", "add", "files", "web1-files", "--path", s1.to_str().expect("utf8"), "--host", "web1"]);
    admin(env, &["item", "add", "files", "web2-files", "--path", s2.to_str().expect("utf8"), "--host", "web2"]);
    (s1, s2)
}

#[test]
fn a_registered_host_attacking_as_root_is_refused_and_nothing_is_lost() {
    let (env, cert, key, port) = fleet_vault(Env::new());
    let server = serve(&env, port, &cert, &key, &[]);
    let url = server.url.clone();
    let (s1, s2) = two_hosts_with_items(&env, &url, &cert);
    backup_json(&env, "web1", "web1-files");
    let web2_point = backup_json(&env, "web2", "web2-files");
    let before = digest(&files_below(&env.vault));

    // the attacker: web1's root, with web1's identity file and cache
    let me = identity(&env, "web1");
    let token = me["token"].as_str().expect("token").to_string();
    let (my_id, web2_id) = (me["host"].as_str().expect("id").to_string(), identity(&env, "web2")["host"].clone());
    let api = format!("{url}/api/v1/vaults/test-vault");

    // 0. without a token, a large upload is refused before it is read
    let big = env.path("big-body");
    std::fs::write(&big, vec![7u8; 20 << 20]).expect("big body");
    let (code, body) = attack(
        "PUT",
        &format!("{api}/host/jobs/00112233445566778899aabbccddeeff/objects/packs/x"),
        "bvh_nothing",
        Some(&big),
    );
    assert_eq!(code, 401, "{body}");

    // 1. the admin's API: a host token opens none of it
    for (m, path) in [
        ("GET", "/items"),
        ("GET", "/items/web2-files/points"),
        ("GET", "/items/web2-files/points/latest/browse?path=/"),
        ("DELETE", "/items/web2-files/protection?delete_data=true"),
        ("GET", "/hosts"),
        ("POST", "/hosts"),
    ] {
        let (code, body) = attack(m, &format!("{api}{path}"), &token, None);
        assert_eq!(code, 401, "{m} {path}: {body}");
    }
    // 2. another host's item: as if it did not exist
    let req = env.path("req.json");
    std::fs::write(&req, r#"{"item":"web2-files"}"#).expect("req");
    let (code, body) = attack("POST", &format!("{api}/host/jobs"), &token, Some(&req));
    assert_eq!(code, 404, "{body}");
    // 3. its own job, then objects it may not write
    std::fs::write(&req, r#"{"item":"web1-files"}"#).expect("req");
    let (code, body) = attack("POST", &format!("{api}/host/jobs"), &token, Some(&req));
    assert_eq!(code, 201, "{body}");
    let job = serde_json::from_str::<serde_json::Value>(&body).expect("job")["job"].as_str().expect("id").to_string();
    // jobs at once would multiply its quota: two at most
    let (code, body) = attack("POST", &format!("{api}/host/jobs"), &token, Some(&req));
    assert_eq!(code, 201, "a second job: {body}");
    let (code, body) = attack("POST", &format!("{api}/host/jobs"), &token, Some(&req));
    assert_eq!(code, 403, "a third job: {body}");
    assert!(body.contains("the most a host may run at once"), "{body}");
    let objects = format!("{api}/host/jobs/{job}/objects");
    let junk = env.path("junk");
    std::fs::write(&junk, b"{\"not\":\"a vault object\"}").expect("junk");
    for name in ["config", "keys/00", "catalog/items/x", "points/x", "locks/prune", "index/00"] {
        let (code, body) = attack("PUT", &format!("{objects}/{name}"), &token, Some(&junk));
        assert_eq!(code, 403, "{name}: {body}");
        assert!(body.contains("refused"), "{name}: {body}");
    }
    // 4. another host's pack and index object, sent as its own
    let (their_pack, their_index) = objects_of(&env, web2_id.as_str().expect("id"));
    for theirs in [&their_pack, &their_index] {
        let name = theirs.strip_prefix(&env.vault).expect("below").display().to_string();
        let (code, body) = attack("PUT", &format!("{objects}/{name}"), &token, Some(theirs));
        assert_eq!(code, 403, "{name}: {body}");
        assert!(body.contains("another host"), "{name}: {body}");
    }
    // 5. its own pack, altered, under the same name: never replaced
    let (my_pack, _) = objects_of(&env, &my_id);
    let mut altered = std::fs::read(&my_pack).expect("pack");
    let last = altered.len() - 1;
    altered[last] ^= 1;
    std::fs::write(&junk, &altered).expect("altered");
    let name = my_pack.strip_prefix(&env.vault).expect("below").display().to_string();
    let (code, body) = attack("PUT", &format!("{objects}/{name}"), &token, Some(&junk));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("hash of its bytes"), "{body}");
    // 6. a point of another host's data: web2's root tree claimed as web1's
    let claim = serde_json::json!({
        "report": "done",
        "tree": web2_point_tree(&env, &web2_point),
        "sources": ["/stolen"],
        "stats": web2_point["stats"],
    });
    std::fs::write(&req, claim.to_string()).expect("claim");
    let (code, body) = attack("POST", &format!("{api}/host/jobs/{job}/report"), &token, Some(&req));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("another host's"), "{body}");
    let jobs = admin(&env, &["--output", "json", "job", "list", "--item", "web1-files", "--status", "Failed"]);
    assert!(jobs.contains("another host's"), "the refused point's job failed, saying why: {jobs}");

    // nothing stored changed, nothing was added but job records
    let after: Vec<_> = digest(&files_below(&env.vault))
        .into_iter()
        .filter(|(p, _)| !p.starts_with(env.vault.join("catalog")))
        .collect();
    let kept: Vec<_> = before.iter().filter(|(p, _)| !p.starts_with(env.vault.join("catalog"))).cloned().collect();
    assert_eq!(after, kept, "the attacks changed stored objects");
    assert_eq!(admin(&env, &["--output", "json", "recoverypoint", "list", "web1-files"]).matches("\"id\"").count(), 1);

    // 7. credentials: expired, or naming another certificate
    let short = credentials(&env, &url, &cert, "late", "1s");
    std::thread::sleep(Duration::from_millis(1500));
    let err = host_fails(&env, "late", &["host", "register", "--credentials", short.to_str().expect("utf8")]);
    assert!(err.contains("expired"), "{err}");
    let good = credentials(&env, &url, &cert, "web3", "48h");
    let text_creds = std::fs::read_to_string(&good).expect("creds");
    let fp = serde_json::from_str::<serde_json::Value>(&text_creds).expect("json")["fingerprint"]
        .as_str()
        .expect("fp")
        .to_string();
    let forged = env.path("forged.creds");
    std::fs::write(&forged, text_creds.replace(&fp, &format!("sha256:{}", "ab".repeat(32)))).expect("forged");
    let err = host_fails(&env, "web3", &["host", "register", "--credentials", forged.to_str().expect("utf8")]);
    assert!(err.contains("fingerprint"), "{err}");
    // the pinned fingerprint refused the server before the secret was sent:
    // the credentials still work
    assert!(register(&env, "web3", &good).contains("registered host web3"));

    // 8. past the quota: a server that allows 1 MiB per job
    drop(server);
    let server = serve(&env, port, &cert, &key, &["--host-quota-mib", "1"]);
    let big = env.path("big");
    std::fs::create_dir_all(&big).expect("mkdir");
    std::fs::write(big.join("random"), noise(77, 3 << 20)).expect("big");
    admin(&env, &["item", "add", "files", "web1-big", "--path", big.to_str().expect("utf8"), "--host", "web1"]);
    let err = host_fails(&env, "web1", &["host", "backup", "web1-big"]);
    assert!(err.contains("quota of 1 MiB"), "{err}");
    drop(server);

    // nothing lost: every point restores, the vault checks clean
    let _server = serve(&env, port, &cert, &key, &[]);
    restored(&env, "web2-files", &s2, "r2");
    restored(&env, "web1-files", &s1, "r1");
    admin(&env, &["vault", "check", "--read-data"]);
}

/// A point's root tree, as the admin sees it.
fn web2_point_tree(env: &Env, point: &serde_json::Value) -> String {
    let id = point["point"].as_str().expect("point id");
    let list = admin(env, &["--output", "json", "recoverypoint", "list", "web2-files"]);
    let list: serde_json::Value = serde_json::from_str(&list).expect("json");
    list.as_array()
        .expect("points")
        .iter()
        .find(|p| p["point"]["id"].as_str().is_some_and(|x| x.starts_with(&id[..8])))
        .and_then(|p| p["point"]["tree"].as_str())
        .expect("tree")
        .to_string()
}

fn slow_server(env: &Env, port: u16, cert: &str, key: &str) -> Server {
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = env.cmd(&["serve", "test-vault", "--listen", &listen, "--tls-cert", cert, "--tls-key", key]);
    cmd.args(["--no-scheduler", "--host-silence-secs", "4"]).env("BOVEDA_STORE_FAULTS", "latency=50ms");
    Server::spawn(cmd)
}

/// Runs a host's backup and kills (`kill -9`) the server, when given, or
/// the host, once the backup has run for a while.
fn kill_during_backup(env: &Env, server: Option<&mut std::process::Child>) -> Output {
    let mut backup = host_cmd(env, "web1", &["host", "backup", "web1-files"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("host backup");
    // once its job runs on the server, and a little more
    let deadline = Instant::now() + Duration::from_secs(60);
    while !admin(env, &["job", "list", "--status", "InProgress"]).contains("web1-files") {
        assert!(backup.try_wait().expect("wait").is_none(), "the backup ended before it could be killed");
        assert!(Instant::now() < deadline, "the host's backup job never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(700));
    assert!(backup.try_wait().expect("wait").is_none(), "the backup ended before it could be killed");
    let victim = match server {
        Some(server) => server,
        None => &mut backup,
    };
    victim.kill().expect("kill -9");
    let _ = victim.wait();
    backup.wait_with_output().expect("backup output")
}

#[test]
fn kills_of_a_host_or_of_the_server_mid_backup_lose_nothing_and_the_next_backup_works() {
    let (env, cert, key, port) = fleet_vault(Env::new());
    let mut server = slow_server(&env, port, &cert, &key);
    register(&env, "web1", &credentials(&env, &server.url, &cert, "web1", "48h"));
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    for i in 0..40u64 {
        std::fs::write(src.join(format!("f{i}")), noise(i, 1 << 20)).expect("write");
    }
    admin(&env, &["item", "add", "files", "web1-files", "--path", src.to_str().expect("utf8"), "--host", "web1"]);

    // the host killed: its job fails once the host falls silent
    let out = kill_during_backup(&env, None);
    assert!(!out.status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jobs = admin(&env, &["--output", "json", "job", "list", "--item", "web1-files", "--status", "Failed"]);
        if jobs.contains("stopped reporting") {
            break;
        }
        assert!(Instant::now() < deadline, "the killed host's job never failed: {}", admin(&env, &["job", "list"]));
        std::thread::sleep(Duration::from_millis(300));
    }

    // the server killed: the host's backup fails, saying so
    let out = kill_during_backup(&env, Some(&mut server.child));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("server"), "{err}");
    drop(server);

    // the next backup, with a server again, works and restores
    let _server = serve(&env, port, &cert, &key, &[]);
    let point = backup_json(&env, "web1", "web1-files");
    assert_eq!(point["stats"]["files"], 40, "{point}");
    restored(&env, "web1-files", &src, "r");
    admin(&env, &["vault", "check", "--read-data"]);
}

#[test]
fn a_hosts_agent_runs_its_scheduled_slot_and_backup_now_from_the_api_and_rides_out_a_server_outage() {
    let (env, cert, key, port) = fleet_vault(Env::new());
    // the server's clock stands just after a nightly slot
    let start = |env: &Env| {
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = env.cmd(&["serve", "test-vault", "--listen", &listen, "--tls-cert", &cert, "--tls-key", &key]);
        cmd.args(["--no-scheduler"]).env("BOVEDA_FAKE_NOW", "2026-01-01T00:00:30Z");
        Server::spawn(cmd)
    };
    let server = start(&env);
    register(&env, "web1", &credentials(&env, &server.url, &cert, "web1", "48h"));
    let src = source(&env, "src", 10);
    admin(&env, &["item", "add", "files", "web1-files", "--path", src.to_str().expect("utf8"), "--host", "web1"]);
    let before_the_slot = |args: &[&str]| {
        let mut all = vec!["--vault", "test-vault"];
        all.extend_from_slice(args);
        let out = env.cmd(&all).env("BOVEDA_FAKE_NOW", "2025-12-31T23:00:00Z").output().expect("run");
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    before_the_slot(&["policy", "create", "nightly", "--time", "00:00", "--time-zone", "UTC", "--daily-keep", "7"]);
    before_the_slot(&["protection", "enable", "web1-files", "--policy", "nightly"]);
    let operator = admin(&env, &["token", "create", "--role", "Operator"]).trim().to_string();

    let log = env.path("agent.log");
    let mut agent = Reaped(
        host_cmd(&env, "web1", &["host", "agent"])
            .stderr(std::fs::File::create(&log).expect("log"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("agent"),
    );
    let points = |env: &Env| -> Vec<serde_json::Value> {
        let list = admin(env, &["--output", "json", "recoverypoint", "list", "web1-files"]);
        serde_json::from_str::<serde_json::Value>(&list).expect("json").as_array().cloned().unwrap_or_default()
    };
    let wait_for = |env: &Env, n: usize, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while points(env).len() < n {
            assert!(Instant::now() < deadline, "{what}: no point after 60 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for(&env, 1, "the scheduled slot");
    assert_eq!(points(&env)[0]["point"]["scheduled_for"], "2026-01-01T00:00:00Z");

    // backup now from the API: the job starts on the host within seconds
    let backup_now = |url: &str| {
        let bearer = format!("Authorization: Bearer {operator}");
        let api = format!("{url}/api/v1/vaults/test-vault/items/web1-files/backup");
        curl(&["--cacert", &cert, "-H", &bearer, "-H", "Content-Type: application/json", "-d", "{}", &api])
    };
    let asked = Instant::now();
    let (head, body) = backup_now(&server.url);
    assert!(head.starts_with("HTTP/1.1 202"), "{head}\n{body}");
    assert!(asked.elapsed() < Duration::from_secs(10), "the host took {:?}", asked.elapsed());
    assert!(body.contains("\"operation\":\"Backup\""), "{body}");
    wait_for(&env, 2, "backup now");

    // the server away for a while: the agent waits, then carries on
    drop(server);
    std::thread::sleep(Duration::from_secs(3));
    assert!(agent.0.try_wait().expect("wait").is_none(), "the agent gave up on an unreachable server");
    let server = start(&env);
    let (head, body) = backup_now(&server.url);
    assert!(head.starts_with("HTTP/1.1 202"), "{head}\n{body}");
    wait_for(&env, 3, "backup now after the outage");
    // the slot was run once, not again after the restart
    let scheduled = points(&env).iter().filter(|p| p["point"]["scheduled_for"].is_string()).count();
    assert_eq!(scheduled, 1);
    drop(agent);
    let said = std::fs::read_to_string(&log).expect("agent log");
    assert!(said.contains("trying again"), "{said}");
    restored(&env, "web1-files", &src, "r");
    admin(&env, &["vault", "check", "--read-data"]);
    drop(server);
}

#[test]
fn an_operator_restores_onto_a_host_through_the_server_and_only_into_its_restore_roots() {
    let (env, cert, key, port) = fleet_vault(Env::new());
    let server = serve(&env, port, &cert, &key, &[]);
    register(&env, "web1", &credentials(&env, &server.url, &cert, "web1", "48h"));
    let src = source(&env, "src", 15);
    std::os::unix::fs::symlink("d0/f0", src.join("link")).expect("symlink");
    admin(&env, &["item", "add", "files", "web1-files", "--path", src.to_str().expect("utf8"), "--host", "web1"]);
    backup_json(&env, "web1", "web1-files");
    let operator = admin(&env, &["token", "create", "--role", "Operator"]).trim().to_string();
    let (roots, _agent) = agent_restoring(&env, "web1");

    let api = format!("{}/api/v1/vaults/test-vault", server.url);
    let restore = |target: &Path| restore_on_host(&server.url, &cert, &operator, "web1-files", target);
    let into = roots.join("r1");
    let job = restore(&into);
    assert_eq!(job["state"], "Completed", "{job}");
    assert_eq!(job["host"], "web1", "{job}");
    assert_same_tree(&src, &into.join(src.strip_prefix("/").expect("absolute")));
    let link = into.join(src.strip_prefix("/").expect("absolute")).join("link");
    assert_eq!(std::fs::read_link(&link).expect("a link restored as a link"), Path::new("d0/f0"));

    // outside the host's restore roots: refused on the host, the job says why
    let elsewhere = env.path("elsewhere");
    let job = restore(&elsewhere);
    assert_eq!(job["state"], "Failed", "{job}");
    assert!(job.to_string().contains("restores only into"), "{job}");
    assert!(!elsewhere.exists(), "nothing written outside the roots");

    // the host cannot order a restore itself, nor claim a request never made
    let token = identity(&env, "web1")["token"].as_str().expect("token").to_string();
    let req = env.path("req.json");
    let order = serde_json::json!({"item": "web1-files", "restore": {"point": "latest", "target": roots.join("x")}});
    std::fs::write(&req, order.to_string()).expect("req");
    let (code, body) = attack("POST", &format!("{api}/host/jobs"), &token, Some(&req));
    assert_eq!(code, 403, "{body}");
    let claim = serde_json::json!({"item": "web1-files", "request": "00112233445566778899aabbccddeeff"});
    std::fs::write(&req, claim.to_string()).expect("req");
    let (code, body) = attack("POST", &format!("{api}/host/jobs"), &token, Some(&req));
    assert_eq!(code, 403, "{body}");
    // a backup job's archive: there is none to fetch
    std::fs::write(&req, r#"{"item":"web1-files"}"#).expect("req");
    let (_, body) = attack("POST", &format!("{api}/host/jobs"), &token, Some(&req));
    let job = serde_json::from_str::<serde_json::Value>(&body).expect("job")["job"].as_str().expect("id").to_string();
    let (code, body) = attack("GET", &format!("{api}/host/jobs/{job}/archive"), &token, None);
    assert_eq!(code, 403, "{body}");
    admin(&env, &["vault", "check", "--read-data"]);
}

/// A child killed and reaped when dropped, however the test ends.
/// `host`'s agent, running, restoring into `restores` in its folder.
pub(super) fn agent_restoring(env: &Env, host: &str) -> (PathBuf, Reaped) {
    let roots = host_dir(env, host).join("restores");
    std::fs::create_dir_all(&roots).expect("roots");
    let agent = host_cmd(env, host, &["host", "agent", "--restore-root", roots.to_str().expect("utf8")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("agent");
    (roots, Reaped(agent))
}

pub(super) struct Reaped(pub(super) std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
fn host_cmd(env: &Env, host: &str, args: &[&str]) -> Command {
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

fn host_dir(env: &Env, host: &str) -> PathBuf {
    env.path(&format!("host-{host}"))
}

fn run(mut c: Command) -> Output {
    c.output().expect("run boveda")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn host_ok(env: &Env, host: &str, args: &[&str]) -> String {
    let out = run(host_cmd(env, host, args));
    assert!(out.status.success(), "host {host}: boveda {args:?}\n{}\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

fn host_fails(env: &Env, host: &str, args: &[&str]) -> String {
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

fn admin(env: &Env, args: &[&str]) -> String {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn serve(env: &Env, port: u16, cert: &str, key: &str, extra: &[&str]) -> Server {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["serve", "test-vault", "--listen", &listen, "--tls-cert", cert, "--tls-key", key];
    args.extend_from_slice(&["--no-scheduler", "--host-silence-secs", "4"]);
    args.extend_from_slice(extra);
    Server::start(env, &args)
}

/// Credentials for one host, in a file.
fn credentials(env: &Env, url: &str, cert: &str, name: &str, expires: &str) -> PathBuf {
    let out = admin(env, &["host", "credentials", "--server", url, "--tls-cert", cert, "--expires", expires]);
    let file = env.path(&format!("{name}.creds"));
    std::fs::write(&file, out).expect("credentials file");
    file
}

fn register(env: &Env, host: &str, creds: &Path) -> String {
    host_ok(env, host, &["host", "register", "--credentials", creds.to_str().expect("utf8"), "--name", host])
}

fn source(env: &Env, name: &str, files: u64) -> PathBuf {
    let src = env.path(name);
    for i in 0..files {
        let sub = src.join(format!("d{}", i % 3));
        std::fs::create_dir_all(&sub).expect("mkdir");
        std::fs::write(sub.join(format!("f{i}")), noise(i * 7 + name.len() as u64, 20_000 + i as usize * 700))
            .expect("write");
    }
    src
}

fn restored(env: &Env, item: &str, src: &Path, name: &str) {
    let out = env.path(name);
    admin(env, &["restore", item, "--target", out.to_str().expect("utf8")]);
    assert_same_tree(src, &out.join(src.strip_prefix("/").expect("absolute")));
}

fn backup_json(env: &Env, host: &str, item: &str) -> serde_json::Value {
    let out = host_ok(env, host, &["--output", "json", "host", "backup", item]);
    serde_json::from_str(&out).expect("backup json")
}

on_every_store!(two_hosts_register_back_up_through_the_server_and_are_restored_there);

fn two_hosts_register_back_up_through_the_server_and_are_restored_there(kind: StoreKind) {
    let env = Env::on(kind);
    env.create_vault();
    let (cert, key) = certificate(&env);
    let port = free_port();
    let server = serve(&env, port, &cert, &key, &[]);
    let url = server.url.clone();

    let (c1, c2) = (credentials(&env, &url, &cert, "web1", "48h"), credentials(&env, &url, &cert, "web2", "48h"));
    assert!(register(&env, "web1", &c1).contains("registered host web1"));
    assert!(register(&env, "web2", &c2).contains("registered host web2"));
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
    assert!(hosts.contains("web1") && hosts.contains("web2") && hosts.contains("Registered"), "{hosts}");
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

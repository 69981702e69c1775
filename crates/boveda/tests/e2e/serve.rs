//! `boveda serve` as a process (HTTPS, the scheduler, stopping on SIGTERM)
//! and `boveda token`.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Env;

fn token(env: &Env, role: &str, extra: &[&str]) -> String {
    let mut args = vec!["--vault", "test-vault", "token", "create", "--role", role];
    args.extend_from_slice(extra);
    env.ok(&args).trim().to_string()
}

#[test]
fn tokens_are_shown_once_listed_without_secrets_and_revoked() {
    let env = Env::new();
    env.create_vault();
    let src = env.path("docs");
    std::fs::create_dir_all(&src).expect("docs");
    env.ok(&["--vault", "test-vault", "item", "add", "files", "docs", "--path", src.to_str().expect("utf8")]);
    let secret = token(&env, "Operator", &["--item", "docs", "--description", "ci"]);
    assert!(secret.starts_with("bvd_") && secret.len() == 100, "{secret}");
    let list = env.ok(&["--vault", "test-vault", "--output", "json", "token", "list"]);
    assert!(!list.contains(&secret[36..]), "a secret is never listed: {list}");
    let tokens: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(tokens[0]["role"], "Operator");
    assert_eq!(tokens[0]["items"][0]["name"], "docs");
    let id = tokens[0]["id"].as_str().expect("id").to_string();
    assert!(env.ok(&["--vault", "test-vault", "token", "revoke", &id[..8]]).contains("revoked"));
    let again = env.fails(&["--vault", "test-vault", "token", "revoke", &id[..8]]);
    assert!(again.contains("already revoked"), "{again}");
    // bad input names the flag
    let err = env.fails(&["--vault", "test-vault", "token", "create", "--role", "Owner"]);
    assert!(err.contains("--role") && err.contains("Reader, Operator, Contributor or SecurityAdmin"), "{err}");
    let err = env.fails(&["--vault", "test-vault", "token", "create", "--role", "Reader", "--item", "nope"]);
    assert!(err.contains("--item"), "{err}");
    let err = env.fails(&["--vault", "test-vault", "token", "create", "--role", "Reader", "--expires", "2001-01-01"]);
    assert!(err.contains("--expires") && err.contains("future"), "{err}");
    let err = env.fails(&["--vault", "test-vault", "token", "revoke", "ffff"]);
    assert!(err.contains("boveda token list"), "{err}");
}

/// A server started in the background; stopped (SIGTERM) when dropped.
pub(crate) struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    pub fn start(env: &Env, args: &[&str]) -> Server {
        Server::spawn(env.cmd(args))
    }

    pub fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd.stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("listening on ").nth(1) {
                    let _ = tx.send(url.to_string());
                }
                eprintln!("serve: {line}");
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(60)).expect("boveda serve listens");
        Server { child, url }
    }

    /// Stops it as systemd would; its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: a signal to the child this test started
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "boveda serve did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "30", "-D", "-"]).args(args).output().expect("curl");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_string(), body.to_string())
}

#[test]
fn serve_speaks_https_runs_the_scheduler_and_stops_on_sigterm() {
    let env = Env::new();
    env.create_vault();
    let src = env.path("docs");
    std::fs::create_dir_all(&src).expect("docs");
    std::fs::write(src.join("a.txt"), b"scheduled by the server\n").expect("write");
    env.ok(&["--vault", "test-vault", "item", "add", "files", "docs", "--path", src.to_str().expect("utf8")]);
    // a slot in the next minute or two, so that the server's scheduler takes it
    let now = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC);
    let ahead = if now.second() > 45 { 2 } else { 1 };
    let slot = now.checked_add(jiff::SignedDuration::from_mins(ahead)).expect("time");
    let at = format!("{:02}:{:02}", slot.hour(), slot.minute());
    env.ok(&[
        "--vault",
        "test-vault",
        "policy",
        "create",
        "soon",
        "--time",
        &at,
        "--time-zone",
        "UTC",
        "--daily-keep",
        "7",
    ]);
    env.ok(&["--vault", "test-vault", "protection", "enable", "docs", "--policy", "soon"]);
    let secret = token(&env, "Reader", &[]);

    let (cert, key) = (env.path("cert.pem"), env.path("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let (cert_s, key_s) = (cert.to_str().expect("utf8"), key.to_str().expect("utf8"));
    let server = Server::start(
        &env,
        &[
            "serve",
            "test-vault",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert_s,
            "--tls-key",
            key_s,
            "--poll-secs",
            "1",
        ],
    );
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    let bearer = format!("Authorization: Bearer {secret}");
    let (head, body) =
        curl(&["--cacert", cert_s, "-H", &bearer, &format!("{}/api/v1/vaults/test-vault/items", server.url)]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("\"name\":\"docs\""), "{body}");
    // the session cookie is Secure over TLS
    let login = format!("{{\"token\":\"{secret}\"}}");
    let (head, _) = curl(&[
        "--cacert",
        cert_s,
        "-H",
        "Content-Type: application/json",
        "-d",
        &login,
        &format!("{}/api/v1/login", server.url),
    ]);
    let cookie = head.lines().find(|l| l.to_ascii_lowercase().starts_with("set-cookie:")).expect("cookie");
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly"), "{cookie}");
    // plain HTTP is not answered as HTTP
    let plain = Command::new("curl")
        .args(["-sS", "--max-time", "5", &server.url.replace("https", "http")])
        .output()
        .expect("curl");
    assert!(!String::from_utf8_lossy(&plain.stdout).contains("docs"));

    // the scheduler of the served vault takes the slot
    let deadline = Instant::now() + Duration::from_secs(200);
    let jobs_url = format!("{}/api/v1/vaults/test-vault/jobs?operation=Backup&state=Completed", server.url);
    loop {
        let (_, body) = curl(&["--cacert", cert_s, "-H", &bearer, &jobs_url]);
        let jobs: serde_json::Value = serde_json::from_str(&body).expect("jobs json");
        if let Some(job) = jobs.as_array().and_then(|a| a.first()) {
            assert!(job["scheduled_for"].is_string(), "a scheduled backup: {job}");
            break;
        }
        assert!(Instant::now() < deadline, "no scheduled backup by {at} UTC: {body}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let status = server.stop();
    assert!(status.success(), "boveda serve exits 0 on SIGTERM: {status:?}");
}

/// Issue 22, 3: 1 050 connections that send nothing stopped all service of
/// `boveda serve` under `ulimit -n 1024`. Now connections are capped below
/// the open-file limit, and per address, so another client is still served.
#[test]
fn idle_connections_do_not_starve_serve_at_the_default_open_file_limit() {
    let env = Env::new();
    env.create_vault();
    let reader = token(&env, "Reader", &[]);
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("ulimit -n 1024 && exec \"$0\" \"$@\"").arg(common::bin());
    cmd.args(["--vault", "test-vault", "serve", "--listen", "127.0.0.1:0", "--no-scheduler"]);
    for (k, v) in env.cmd(&[]).get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let server = Server::spawn(cmd);
    let addr: std::net::SocketAddr = server.url.trim_start_matches("http://").parse().expect("address");
    // this test holds the connections: room for them
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: reads and sets this process's own limit
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max.min(4096);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let wanted = 1050.min(lim.rlim_cur.saturating_sub(64) as usize);
    let mut idle = Vec::new();
    for _ in 0..wanted {
        match std::net::TcpStream::connect(addr) {
            Ok(c) => idle.push(c),
            Err(e) => panic!("connection {} refused by the kernel: {e}", idle.len()),
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    // another client (another address) is served at once
    let started = Instant::now();
    let (head, body) = curl(&[
        "--interface",
        "127.0.0.2",
        "-H",
        &format!("Authorization: Bearer {reader}"),
        &format!("{}/api/v1/vaults", server.url),
    ]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    assert!(started.elapsed() < Duration::from_secs(5), "answered in {:?}", started.elapsed());
    // the idle connections beyond this address's share were answered 503 and closed
    use std::io::Read;
    let mut refused = 0;
    for c in &mut idle {
        c.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
        let mut buf = [0u8; 12];
        if c.read(&mut buf).is_ok_and(|n| n > 0) && buf.starts_with(b"HTTP/1.1 503") {
            refused += 1;
        }
    }
    assert!(refused > 0 && refused < wanted, "{refused} of {wanted} refused");
    drop(idle);
}

//! An S3 endpoint that misbehaves as real ones do, between boveda and the
//! real S3 server (started by `scripts/test.sh`): a TCP proxy on loopback
//! that answers `503 SlowDown` or `500 InternalError` to the first request,
//! cuts connections in the middle of their answers, or accepts connections
//! and never answers. Issue 22, 14, 15 and 18.

use crate::common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Env, StoreKind, assert_same_tree, noise};

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// Every connection piped to the S3 server as it is.
    Pass,
    /// The next `n` connections: their first request answered with this
    /// status and S3 error code, then closed.
    Refuse { n: usize, status: &'static str, code: &'static str },
    /// Every `every`-th connection is cut after `after` bytes of answers.
    Cut { every: usize, after: usize },
    /// Connections accepted, never read from nor answered.
    BlackHole,
}

struct Proxy {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let stop = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (m, s, c) = (mode.clone(), stop.clone(), cuts.clone());
        std::thread::spawn(move || {
            let held = Arc::new(Mutex::new(Vec::new()));
            for (n, conn) in listener.incoming().enumerate() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let mode = {
                    let mut guard = m.lock().expect("mode");
                    let now = *guard;
                    if let Mode::Refuse { n, status, code } = now {
                        *guard = if n > 1 { Mode::Refuse { n: n - 1, status, code } } else { Mode::Pass };
                    }
                    now
                };
                let (held, cuts) = (held.clone(), c.clone());
                std::thread::spawn(move || serve(client, upstream, mode, n, &held, &cuts));
            }
        });
        Proxy { addr, mode, stop, cuts }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    mode: Mode,
    n: usize,
    held: &Mutex<Vec<TcpStream>>,
    cuts: &AtomicUsize,
) {
    match mode {
        Mode::BlackHole => {
            if let Ok(mut h) = held.lock() {
                h.push(client);
            }
        }
        Mode::Refuse { status, code, .. } => {
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && client.read(&mut byte).is_ok_and(|k| k == 1) {
                head.push(byte[0]);
            }
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message><RequestId>1</RequestId></Error>"
            );
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.write_all(answer.as_bytes());
            let _ = client.shutdown(Shutdown::Both);
        }
        Mode::Pass | Mode::Cut { .. } => {
            let Ok(server) = TcpStream::connect(upstream) else { return };
            let limit = match mode {
                Mode::Cut { every, after } if n % every == every - 1 => Some(after),
                _ => None,
            };
            let (mut c2, mut s2) = (client.try_clone().expect("clone"), server.try_clone().expect("clone"));
            let up = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(Shutdown::Write);
            });
            let (mut server, mut client) = (server, client);
            let mut sent = 0usize;
            let mut buf = [0u8; 16 * 1024];
            loop {
                let k = match server.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => k,
                };
                let k = match limit {
                    Some(after) if sent + k >= after => {
                        let _ = client.write_all(&buf[..after - sent]);
                        cuts.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    _ => k,
                };
                if client.write_all(&buf[..k]).is_err() {
                    break;
                }
                sent += k;
            }
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            let _ = up.join();
        }
    }
}

fn s3_server() -> SocketAddr {
    let url = std::env::var("BOVEDA_TEST_S3")
        .expect("The S3 server is not running: run the tests through scripts/test.sh (it starts it)");
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    hostport.parse().expect("the S3 server's address")
}

fn files(root: &std::path::Path, round: u64) {
    for i in 0..24u64 {
        let dir = root.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join(format!("f{i}")), noise(i * 1000 + round, 150_000 + (i as usize) * 7_000))
            .expect("write");
    }
}

#[test]
fn a_flaky_s3_endpoint_is_retried_from_the_first_request_to_the_last() {
    let env = Env::on(StoreKind::S3);
    env.create_vault();
    let src = env.path("src");
    files(&src, 0);
    env.ok(&["item", "add", "files", "t", "--path", src.to_str().expect("utf8")]);
    let proxy = Proxy::start(s3_server());
    let through = |args: &[&str]| {
        env.cmd(args)
            .env("AWS_ENDPOINT_URL", proxy.url())
            .env("BOVEDA_STORE_REQUEST_TIMEOUT", "5")
            .output()
            .expect("run boveda")
    };

    // 14: the very first request (opening the bucket) gets a passing error
    for (status, code) in [("503 Slow Down", "SlowDown"), ("500 Internal Server Error", "InternalError")] {
        proxy.set(Mode::Refuse { n: 1, status, code });
        let out = through(&["protection", "backup-now", "t"]);
        assert!(out.status.success(), "{code} on the first request: {}", String::from_utf8_lossy(&out.stderr));
    }

    // 15: connections cut in the middle of their answers, backup after backup
    proxy.set(Mode::Cut { every: 3, after: 700 });
    for round in 1..=4 {
        files(&src, round);
        let out = through(&["protection", "backup-now", "t"]);
        assert!(out.status.success(), "backup {round}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = through(&["restore", "t", "--target", env.path("back").to_str().expect("utf8")]);
    assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
    assert_same_tree(&src, &env.path("back").join(src.strip_prefix("/").expect("abs")));
    assert!(proxy.cuts.load(Ordering::Relaxed) > 0, "no connection was cut");
    proxy.set(Mode::Pass);
    let report = env.ok(&["vault", "check", "--read-data"]);
    assert!(report.contains("no problems found"), "{report}");

    // 18: an endpoint that accepts connections and never answers
    proxy.set(Mode::BlackHole);
    let started = Instant::now();
    let out = env
        .cmd(&["protection", "backup-now", "t"])
        .env("AWS_ENDPOINT_URL", proxy.url())
        .env("BOVEDA_STORE_REQUEST_TIMEOUT", "1")
        .output()
        .expect("run boveda");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(120), "gave up in time: {:?}", started.elapsed());
    assert!(stderr.contains("did not answer within 1 s"), "names what did not answer: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

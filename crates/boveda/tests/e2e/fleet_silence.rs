//! A registered host that falls silent: it shows Unreachable, and one
//! alert is raised for each silence (with real processes, the server's
//! clock moved ahead by `BOVEDA_FAKE_NOW`).

use std::time::{Duration, Instant};

use crate::common::Env;
use crate::fleet::{admin, credentials, fleet_vault, host_ok, register, serve};
use crate::serve::Server;

/// The server, its clock at `now`, watching its hosts every 200 ms.
fn serve_at(env: &Env, port: u16, cert: &str, key: &str, now: &str) -> Server {
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = env.cmd(&["serve", "test-vault", "--listen", &listen, "--tls-cert", cert, "--tls-key", key]);
    cmd.arg("--no-scheduler").env("BOVEDA_FAKE_NOW", now).env("BOVEDA_HOST_WATCH_MS", "200");
    Server::spawn(cmd)
}

fn host_alerts(env: &Env) -> Vec<String> {
    let out = admin(env, &["--output", "json", "alert", "list"]);
    let all: serde_json::Value = serde_json::from_str(&out).expect("json");
    let reasons = all.as_array().expect("alerts").iter().filter_map(|a| a["reason"].as_str());
    reasons.filter(|r| r.starts_with("host ")).map(str::to_string).collect()
}

fn wait_for_alerts(env: &Env, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let alerts = host_alerts(env);
        if alerts.len() >= n || Instant::now() > deadline {
            return alerts;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_host_that_falls_silent_shows_unreachable_and_raises_one_alert_per_silence() {
    let (env, cert, key, port) = fleet_vault(Env::new());
    let server = serve(&env, port, &cert, &key, &[]);
    let url = server.url.clone();
    for h in ["web1", "web2"] {
        register(&env, h, &credentials(&env, &url, &cert, h, "48h"));
    }
    // an unregistered host is not watched
    admin(&env, &["host", "unregister", "web2"]);
    drop(server);

    // ten minutes on, as the server's clock says: web1 has been silent
    let t1 = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(10);
    let server = serve_at(&env, port, &cert, &key, &t1.to_string());
    let alerts = wait_for_alerts(&env, 1);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].contains("host web1 has not been heard from since") && alerts[0].contains("boveda agent"));
    // watched again and again: still one alert for this silence
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(host_alerts(&env).len(), 1);
    let jobs = admin(&env, &["--output", "json", "job", "list", "--operation", "HostContact"]);
    assert_eq!(jobs.matches("\"Failed\"").count(), 1, "one failed HostContact job says why: {jobs}");
    let list = env.cmd(&["--vault", "test-vault", "host", "list"]).env("BOVEDA_FAKE_NOW", t1.to_string()).output();
    let list = String::from_utf8_lossy(&list.expect("host list").stdout).into_owned();
    assert!(list.contains("Unreachable since"), "{list}");

    // heard from again, then silent again: the next silence, the next alert
    host_ok(&env, "web1", &["host", "items"]);
    drop(server);
    let t2 = t1 + jiff::SignedDuration::from_mins(10);
    let _server = serve_at(&env, port, &cert, &key, &t2.to_string());
    let alerts = wait_for_alerts(&env, 2);
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(host_alerts(&env).len(), 2);
}

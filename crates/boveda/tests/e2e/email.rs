//! Alerts by e-mail, against a real SMTP server the test starts (aiosmtpd,
//! STARTTLS required, a login checked): a test message, one message per
//! alert saying what happened and what to do, a wrong password recorded on
//! the alert and the message sent again by `alert list --retry`, and the
//! settings an attacker would want (a relay without TLS over the network,
//! the password read back) refused.
//!
//! Needs BOVEDA_TEST_PLAYWRIGHT: the test tools' Python, which has aiosmtpd
//! (scripts/test.sh installs it).

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Env;

struct Smtp {
    child: Child,
    port: u16,
    out: PathBuf,
    /// The private CA the server's certificate chains to.
    cert: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The SMTP server, with a certificate for 127.0.0.1 made for it.
fn smtp(env: &Env) -> Smtp {
    let python = std::env::var_os("BOVEDA_TEST_PLAYWRIGHT")
        .expect("BOVEDA_TEST_PLAYWRIGHT is not set: run the tests with scripts/test.sh, which installs aiosmtpd");
    let (ca, cert, key, out) =
        (env.path("smtp-ca.pem"), env.path("smtp-cert.pem"), env.path("smtp-key.pem"), env.path("mail"));
    // a private CA, and the server's certificate for 127.0.0.1 signed by it
    let ext = env.path("smtp-ext.cnf");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        .expect("ext");
    let p = |s: &Path| s.to_str().expect("utf8").to_string();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let steps: Vec<Vec<String>> = vec![
        [
            &["req", "-x509"][..],
            &ec,
            &["-days", "1", "-subj", "/CN=boveda test CA", "-addext", "basicConstraints=critical,CA:TRUE"],
        ]
        .concat()
        .iter()
        .map(|s| s.to_string())
        .chain([
            "-addext".into(),
            "keyUsage=critical,keyCertSign".into(),
            "-keyout".into(),
            p(&env.path("smtp-ca.key")),
            "-out".into(),
            p(&ca),
        ])
        .collect(),
        [&["req"][..], &ec, &["-subj", "/CN=127.0.0.1"]]
            .concat()
            .iter()
            .map(|s| s.to_string())
            .chain(["-keyout".into(), p(&key), "-out".into(), p(&env.path("smtp.csr"))])
            .collect(),
        [
            "x509",
            "-req",
            "-days",
            "1",
            "-in",
            &p(&env.path("smtp.csr")),
            "-CA",
            &p(&ca),
            "-CAkey",
            &p(&env.path("smtp-ca.key")),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["-CAcreateserial".into(), "-extfile".into(), p(&ext), "-out".into(), p(&cert)])
        .collect(),
    ];
    for args in steps {
        let made = Command::new("openssl").args(&args).output().expect("openssl");
        assert!(made.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&made.stderr));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/smtp/smtp_server.py");
    let mut child = Command::new(python)
        .arg(script)
        .args([out.as_os_str(), cert.as_os_str(), key.as_os_str()])
        .args(["alerts", "smtp secret"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the SMTP server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
    let port = line.trim().strip_prefix("ready ").and_then(|p| p.parse().ok()).expect("ready PORT");
    Smtp { child, port, out, cert: ca }
}

/// The messages received so far, oldest first, waiting up to 20 s for `n`.
fn messages(s: &Smtp, n: usize) -> Vec<String> {
    messages_within(s, n, Duration::from_secs(20))
}

fn messages_within(s: &Smtp, n: usize, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    loop {
        let mut found: Vec<(u32, String)> = std::fs::read_dir(&s.out)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| {
                        let n = e.path().file_stem()?.to_str()?.parse().ok()?;
                        Some((n, std::fs::read_to_string(e.path()).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        if found.len() >= n || Instant::now() > deadline {
            return found.into_iter().map(|(_, m)| m).collect();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn set(env: &Env, s: &Smtp, password: &str) -> std::process::Output {
    let port = s.port.to_string();
    env.cmd(&["vault", "email", "set", "--server", "127.0.0.1", "--port", &port, "--username", "alerts"])
        .args(["--from", "boveda@example.com", "--to", "ops@example.com", "--to", "oncall@example.com"])
        .arg("--ca-file")
        .arg(&s.cert)
        .env("BOVEDA_SMTP_PASSWORD", password)
        .output()
        .expect("run")
}

#[test]
fn alerts_arrive_by_email_one_message_each_saying_what_to_do() {
    let env = Env::new();
    env.create_vault();
    let s = smtp(&env);
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(src.join("a"), b"data").expect("write");
    env.ok(&["item", "add", "files", "docs", "--path", src.to_str().expect("utf8")]);

    // over the network without TLS: refused, nothing stored
    let port = s.port.to_string();
    let clear = env
        .cmd(&["vault", "email", "set", "--server", "mail.example.com", "--port", &port, "--security", "none"])
        .args(["--from", "boveda@example.com", "--to", "ops@example.com"])
        .output()
        .expect("run");
    assert!(!clear.status.success());
    assert!(
        String::from_utf8_lossy(&clear.stderr).contains("in the clear"),
        "{}",
        String::from_utf8_lossy(&clear.stderr)
    );
    assert!(env.ok(&["vault", "email", "show"]).contains("no e-mail"));

    // the right password: the test message arrives, over STARTTLS
    let out = set(&env, &s, "smtp secret");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = env.ok(&["--output", "json", "vault", "email", "show"]);
    assert!(shown.contains("\"password_set\": true") && !shown.contains("smtp secret"), "never read back: {shown}");
    // the regression: settings pointed at another server (here another
    // port) kept the stored password, so whoever may change them could have
    // it sent to a server of theirs
    let other = (s.port + 1).to_string();
    let moved = env
        .cmd(&["vault", "email", "set", "--server", "127.0.0.1", "--port", &other, "--username", "alerts"])
        .args(["--from", "boveda@example.com", "--to", "ops@example.com", "--ca-file"])
        .arg(&s.cert)
        .env_remove("BOVEDA_SMTP_PASSWORD")
        .output()
        .expect("run");
    assert!(moved.status.success(), "{}", String::from_utf8_lossy(&moved.stderr));
    let shown = env.ok(&["--output", "json", "vault", "email", "show"]);
    assert!(shown.contains("\"password_set\": false"), "the password stays with its server: {shown}");
    let out = set(&env, &s, "smtp secret");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.ok(&["vault", "email", "test"]);
    let got = messages(&s, 1);
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("Subject: [boveda] Test message"), "{}", got[0]);
    assert!(got[0].contains("X-Envelope-To: ops@example.com, oncall@example.com"), "{}", got[0]);

    // a failed backup: one message, what happened and what to do
    std::fs::rename(&src, env.path("src-away")).expect("move");
    env.expect(1, &["protection", "backup-now", "docs"]);
    let got = messages(&s, 2);
    assert_eq!(got.len(), 2, "one message for the alert");
    let m = &got[1];
    assert!(m.contains("Subject: [boveda] Critical: Backup of docs (vault test-vault)"), "{m}");
    assert!(m.contains("What happened:") && m.contains("does not exist"), "{m}");
    assert!(m.contains("What to do:") && m.contains("Backup now"), "{m}");

    // a wrong password: the backup fails as it would, the alert says the
    // e-mail did not go; with the password put right, --retry sends it
    let out = set(&env, &s, "not the password");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    env.expect(1, &["protection", "backup-now", "docs"]);
    let alerts: serde_json::Value =
        serde_json::from_str(&env.ok(&["--output", "json", "alert", "list"])).expect("json");
    let newest = &alerts[0];
    assert_eq!(newest["email"]["sent"], false, "{newest}");
    assert!(newest["email"]["last_error"].as_str().unwrap_or_default().contains("127.0.0.1"), "{newest}");
    // (the backup returned after its e-mail was refused: nothing is on its way)
    assert_eq!(messages_within(&s, 3, Duration::from_millis(500)).len(), 2, "nothing sent with a wrong password");
    let out = set(&env, &s, "smtp secret");
    assert!(out.status.success());
    env.ok(&["alert", "list", "--retry"]);
    let got = messages(&s, 3);
    assert_eq!(got.len(), 3, "the unsent alert, sent on retry (and only it)");
    let alerts: serde_json::Value =
        serde_json::from_str(&env.ok(&["--output", "json", "alert", "list"])).expect("json");
    assert_eq!(alerts[0]["email"]["sent"], true, "{}", alerts[0]);

    // and off
    env.ok(&["vault", "email", "off"]);
    assert!(env.ok(&["vault", "email", "show"]).contains("no e-mail"));
}

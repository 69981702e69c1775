//! A client of the QEMU guest agent (`qemu-ga`, running inside the VM and
//! reached through the VM's virtio-serial port `org.qemu.guest_agent.0`,
//! a UNIX socket on the host): enough to freeze the guest's file systems
//! for the instant of a snapshot and thaw them right after.
//!
//! The agent speaks QMP's JSON without a greeting; a session starts with
//! `guest-sync-delimited`, whose answer follows a 0xFF byte, so that
//! whatever an earlier client left unread is skipped.
//! The commands: <https://qemu-project.gitlab.io/qemu/interop/qemu-ga-ref.html>.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

pub struct GuestAgent {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
}

fn no_answer(what: &str, e: io::Error) -> io::Error {
    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
        io::Error::new(io::ErrorKind::TimedOut, format!("the guest agent did not answer {what} in time"))
    } else {
        io::Error::new(e.kind(), format!("guest agent, {what}: {e}"))
    }
}

impl GuestAgent {
    /// Connects to the agent's socket and checks that an agent answers
    /// within `timeout` (a VM whose guest runs no agent never does).
    ///
    /// # Errors
    /// The socket's errors; `TimedOut` when no agent answers.
    pub fn connect(socket: &Path, timeout: Duration) -> io::Result<Self> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| io::Error::new(e.kind(), format!("guest agent socket {}: {e}", socket.display())))?;
        stream.set_read_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        let mut agent = Self { writer, reader: BufReader::new(stream) };
        let id = u64::from(std::process::id()) << 20 | u64::from(rand_low());
        agent.send("guest-sync-delimited", json!({"id": id}))?;
        // skip what came before the delimiter, and answers to older syncs;
        // a guest that streams without end gets nowhere (1 MiB, 64 answers)
        for _ in 0..64 {
            let mut skipped = Vec::new();
            (&mut agent.reader)
                .take(1 << 20)
                .read_until(0xff, &mut skipped)
                .map_err(|e| no_answer("guest-sync-delimited", e))?;
            if skipped.last() != Some(&0xff) {
                return Err(no_answer("guest-sync-delimited", io::ErrorKind::UnexpectedEof.into()));
            }
            if agent.answer("guest-sync-delimited")?.as_u64() == Some(id) {
                return Ok(agent);
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "the guest agent never answered the sync"))
    }

    /// Sets how long each later command may take.
    ///
    /// # Errors
    /// The socket's.
    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(timeout))
    }

    fn send(&mut self, command: &str, arguments: Value) -> io::Result<()> {
        let mut line = serde_json::to_vec(&json!({"execute": command, "arguments": arguments}))?;
        line.push(b'\n');
        self.writer.write_all(&line)
    }

    /// The next answer's `return`, or its error as `Other`.
    fn answer(&mut self, command: &str) -> io::Result<Value> {
        let mut line = String::new();
        // at most 256 lines that are not the answer (events, noise)
        for _ in 0..256 {
            line.clear();
            let n = (&mut self.reader).take(1 << 20).read_line(&mut line).map_err(|e| no_answer(command, e))?;
            if n == 0 {
                return Err(no_answer(command, io::ErrorKind::UnexpectedEof.into()));
            }
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(line.trim_start_matches('\u{ff}'))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("guest agent: {e}")))?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let desc = e["desc"].as_str().unwrap_or("no reason given");
                return Err(io::Error::other(format!("the guest agent refused {command}: {desc}")));
            }
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, format!("the guest agent did not answer {command}")))
    }

    fn execute(&mut self, command: &str) -> io::Result<Value> {
        self.send(command, json!({}))?;
        self.answer(command)
    }

    /// Freezes the guest's file systems (flushing their caches first);
    /// how many it froze.
    ///
    /// # Errors
    /// `TimedOut`, or the agent's refusal (then nothing stays frozen).
    pub fn freeze(&mut self) -> io::Result<u64> {
        Ok(self.execute("guest-fsfreeze-freeze")?.as_u64().unwrap_or(0))
    }

    /// Thaws the guest's file systems; how many it thawed.
    ///
    /// # Errors
    /// `TimedOut`, or the agent's refusal.
    pub fn thaw(&mut self) -> io::Result<u64> {
        Ok(self.execute("guest-fsfreeze-thaw")?.as_u64().unwrap_or(0))
    }

    /// Whether the guest's file systems are frozen.
    ///
    /// # Errors
    /// `TimedOut`, or the agent's refusal.
    pub fn is_frozen(&mut self) -> io::Result<bool> {
        Ok(self.execute("guest-fsfreeze-status")?.as_str() == Some("frozen"))
    }
}

impl GuestAgent {
    /// `guest-ping`: the agent runs and answers.
    ///
    /// # Errors
    /// `TimedOut`, or the agent's refusal.
    pub fn ping(&mut self) -> io::Result<()> {
        self.execute("guest-ping").map(|_| ())
    }

    /// Runs `argv` in the guest (`guest-exec`) and waits up to `limit`
    /// for it to end: its exit status and what it printed (stdout then
    /// stderr, the first 2 KiB, lossy text).
    ///
    /// # Errors
    /// An empty `argv`; `TimedOut`; the agent's refusal (no such program).
    pub fn exec(&mut self, argv: &[String], limit: Duration) -> io::Result<(i64, String)> {
        use base64::Engine as _;
        let (path, args) =
            argv.split_first().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "an empty command"))?;
        self.send("guest-exec", json!({"path": path, "arg": args, "capture-output": true}))?;
        let pid = self.answer("guest-exec")?["pid"]
            .as_i64()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "guest-exec gave no pid"))?;
        let deadline = std::time::Instant::now() + limit;
        loop {
            self.send("guest-exec-status", json!({"pid": pid}))?;
            let status = self.answer("guest-exec-status")?;
            if status["exited"].as_bool() == Some(true) {
                let mut out = Vec::new();
                for stream in ["out-data", "err-data"] {
                    if let Some(b) = status[stream].as_str() {
                        out.extend(base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default());
                    }
                }
                out.truncate(2048);
                let code = status["exitcode"].as_i64().unwrap_or(-1);
                return Ok((code, String::from_utf8_lossy(&out).trim().to_string()));
            }
            if std::time::Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("{path} did not end in time")));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A few bits that differ between two sessions of one process.
fn rand_low() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() & 0xf_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// An agent that answers the sync, after some stale output, and then
    /// never answers a freeze: the freeze ends at the time limit.
    #[test]
    fn a_freeze_that_never_answers_ends_at_the_time_limit() {
        let dir = tempfile::tempdir().expect("tmp");
        let socket = dir.path().join("qga.sock");
        let listener = UnixListener::bind(&socket).expect("bind");
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut r = BufReader::new(stream.try_clone().expect("clone"));
            let mut w = stream;
            let mut line = String::new();
            r.read_line(&mut line).expect("sync");
            let v: Value = serde_json::from_str(&line).expect("json");
            let id = v["arguments"]["id"].as_u64().expect("id");
            w.write_all(b"{\"return\": 1}\n\xff{\"return\": 5}\n\xff").expect("stale");
            w.write_all(format!("{{\"return\": {id}}}\n").as_bytes()).expect("answer");
            line.clear();
            r.read_line(&mut line).expect("freeze");
            assert!(line.contains("guest-fsfreeze-freeze"), "{line}");
            // never answers; holds the connection until the client leaves
            let _ = r.read_line(&mut line);
        });
        let mut agent = GuestAgent::connect(&socket, Duration::from_secs(5)).expect("the agent answers the sync");
        agent.set_timeout(Duration::from_millis(300)).expect("timeout");
        let started = std::time::Instant::now();
        let e = agent.freeze().expect_err("no answer");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("did not answer guest-fsfreeze-freeze in time"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(agent);
        server.join().expect("server");
    }

    #[test]
    fn a_socket_without_an_agent_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let socket = dir.path().join("none.sock");
        let _listener = UnixListener::bind(&socket).expect("bind");
        let e = GuestAgent::connect(&socket, Duration::from_millis(200)).err().expect("nobody answers");
        assert!(e.to_string().contains("did not answer guest-sync-delimited"), "{e}");
    }
}

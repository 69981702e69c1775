//! A client of QMP, the QEMU Machine Protocol, on a UNIX socket: the
//! greeting, capabilities negotiation, commands with their JSON arguments
//! and results, and the events QEMU sends meanwhile. It speaks to a
//! running VM's QEMU and to `qemu-storage-daemon` alike.
//!
//! The protocol: <https://www.qemu.org/docs/master/interop/qmp-spec.html>.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A command QEMU refused: its error class and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpError {
    pub command: String,
    pub class: String,
    pub desc: String,
}

impl std::fmt::Display for QmpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QEMU refused {}: {} ({})", self.command, self.desc, self.class)
    }
}

impl std::error::Error for QmpError {}

/// An event QEMU sent: its name and data.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
}

/// Something that runs QMP commands in a VM's QEMU: a QMP socket of
/// boveda's own ([`QmpClient`]), or libvirt's monitor through `virsh`
/// ([`VirshMonitor`]).
pub trait Monitor {
    /// Runs `command` with `arguments` (an object) and returns its result.
    ///
    /// # Errors
    /// An `io::Error` wrapping a [`QmpError`] when QEMU refuses the command
    /// (see [`QmpClient::refusal`]); the transport's errors.
    fn execute(&mut self, command: &str, arguments: Value) -> io::Result<Value>;
}

impl Monitor for QmpClient {
    fn execute(&mut self, command: &str, arguments: Value) -> io::Result<Value> {
        QmpClient::execute(self, command, arguments)
    }
}

/// The monitor of a VM that libvirt runs: libvirt holds QEMU's monitor
/// socket, so each command goes through `virsh qemu-monitor-command`.
pub struct VirshMonitor {
    /// The libvirt domain's name.
    pub domain: String,
    /// The connection URI (`-c`), or virsh's default (`LIBVIRT_DEFAULT_URI`,
    /// `qemu:///system` for root).
    pub uri: Option<String>,
}

impl Monitor for VirshMonitor {
    fn execute(&mut self, command: &str, arguments: Value) -> io::Result<Value> {
        let msg = json!({"execute": command, "arguments": arguments});
        let mut virsh = std::process::Command::new("virsh");
        if let Some(uri) = &self.uri {
            virsh.args(["-c", uri]);
        }
        let out = virsh
            .args(["qemu-monitor-command", &self.domain, &msg.to_string()])
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run virsh (libvirt-clients): {e}")))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let desc = stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.trim_start_matches("error: "))
                .collect::<Vec<_>>()
                .join(": ");
            // libvirt passes QEMU's refusal on in its message
            return Err(io::Error::other(QmpError {
                command: command.to_string(),
                class: "GenericError".into(),
                desc,
            }));
        }
        let answer: Value =
            serde_json::from_slice(&out.stdout).map_err(|e| bad(format!("virsh printed no JSON: {e}")))?;
        if let Some(error) = answer.get("error") {
            let text = |k: &str| error.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            return Err(io::Error::other(QmpError {
                command: command.to_string(),
                class: text("class"),
                desc: text("desc"),
            }));
        }
        answer.get("return").cloned().ok_or_else(|| bad(format!("an answer of an unknown shape: {answer}")))
    }
}

pub struct QmpClient {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    /// Events read while waiting for a command's answer.
    events: VecDeque<QmpEvent>,
    /// How long a command may take.
    timeout: Duration,
    /// QEMU's version, from the greeting: (major, minor, micro).
    pub version: (u64, u64, u64),
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("QMP: {}", what.into()))
}

impl QmpClient {
    /// Connects to the monitor socket `socket` and leaves the capabilities
    /// negotiation mode, ready for commands.
    ///
    /// # Errors
    /// The socket's errors (QEMU allows one client per monitor: a second
    /// one waits, and times out after `timeout`); `InvalidData` when the
    /// other end does not speak QMP.
    pub fn connect(socket: &Path, timeout: Duration) -> io::Result<Self> {
        let stream = UnixStream::connect(socket)
            .map_err(|e| io::Error::new(e.kind(), format!("QMP socket {}: {e}", socket.display())))?;
        stream.set_read_timeout(Some(timeout))?;
        let writer = stream.try_clone()?;
        let mut c =
            Self { writer, reader: BufReader::new(stream), events: VecDeque::new(), timeout, version: (0, 0, 0) };
        let greeting = c.message().map_err(|e| {
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                io::Error::new(
                    e.kind(),
                    format!("QMP socket {}: no greeting (another client holds the monitor?)", socket.display()),
                )
            } else {
                e
            }
        })?;
        let v = greeting.pointer("/QMP/version/qemu").ok_or_else(|| bad("the socket did not greet with QMP"))?;
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        c.version = (n("major"), n("minor"), n("micro"));
        c.execute("qmp_capabilities", json!({})).map_err(|e| bad(e.to_string()))?;
        Ok(c)
    }

    /// Sets how long a command may take before the client gives up.
    ///
    /// # Errors
    /// The socket's error.
    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.timeout = timeout;
        self.reader.get_ref().set_read_timeout(Some(timeout))
    }

    fn message(&mut self) -> io::Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "QMP: QEMU closed the monitor"));
            }
            if !line.trim().is_empty() {
                return serde_json::from_str(&line).map_err(|e| bad(format!("a message that is not JSON: {e}")));
            }
        }
    }

    /// Runs `command` with `arguments` (an object) and returns its result.
    ///
    /// # Errors
    /// An `io::Error` wrapping a [`QmpError`] when QEMU refuses the command
    /// (see [`QmpClient::refusal`]); the socket's errors.
    pub fn execute(&mut self, command: &str, arguments: Value) -> io::Result<Value> {
        let msg = if arguments.as_object().is_some_and(|o| o.is_empty()) {
            json!({"execute": command})
        } else {
            json!({"execute": command, "arguments": arguments})
        };
        let mut line = serde_json::to_vec(&msg).map_err(|e| bad(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        loop {
            let answer = self.message()?;
            if let Some(name) = answer.get("event").and_then(Value::as_str) {
                let data = answer.get("data").cloned().unwrap_or(Value::Null);
                self.events.push_back(QmpEvent { name: name.to_string(), data });
                continue;
            }
            if let Some(result) = answer.get("return") {
                return Ok(result.clone());
            }
            if let Some(error) = answer.get("error") {
                let text = |k: &str| error.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                return Err(io::Error::other(QmpError {
                    command: command.to_string(),
                    class: text("class"),
                    desc: text("desc"),
                }));
            }
            return Err(bad(format!("an answer of an unknown shape: {answer}")));
        }
    }

    /// The QEMU refusal inside an error of [`QmpClient::execute`], if it is one.
    pub fn refusal(e: &io::Error) -> Option<&QmpError> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<QmpError>())
    }

    /// Waits up to `timeout` for an event that `matches`, and returns it;
    /// events already received count, and the others are kept.
    ///
    /// # Errors
    /// `TimedOut` when none came; the socket's errors.
    pub fn wait_event(&mut self, timeout: Duration, matches: impl Fn(&QmpEvent) -> bool) -> io::Result<QmpEvent> {
        if let Some(event) = self.events.iter().position(&matches).and_then(|i| self.events.remove(i)) {
            return Ok(event);
        }
        let deadline = Instant::now() + timeout;
        let found = self.next_event(deadline, &matches);
        self.reader.get_ref().set_read_timeout(Some(self.timeout))?;
        found
    }

    fn next_event(&mut self, deadline: Instant, matches: impl Fn(&QmpEvent) -> bool) -> io::Result<QmpEvent> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "QMP: the event never came"));
            }
            self.reader.get_ref().set_read_timeout(Some(left))?;
            let msg = match self.message() {
                Ok(m) => m,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(e) => return Err(e),
            };
            if let Some(name) = msg.get("event").and_then(Value::as_str) {
                let event = QmpEvent { name: name.to_string(), data: msg.get("data").cloned().unwrap_or(Value::Null) };
                if matches(&event) {
                    return Ok(event);
                }
                self.events.push_back(event);
            }
        }
    }
}

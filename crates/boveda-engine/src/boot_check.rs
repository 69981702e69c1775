//! Boot verification: a point's disks, served read-only over NBD, booted
//! in an isolated QEMU behind temporary overlays (QEMU's `snapshot=on`:
//! a qcow2 file it makes in the work folder and unlinks at once, so the
//! vault is never written and a kill leaves no overlay), with no network
//! (or, for a port probe, a restricted user-mode network that reaches
//! nothing outside), and the CPUs and memory of the definition capped.
//!
//! The point is verified when the guest agent answers `guest-ping` (or,
//! for a guest without an agent, when a marker appears on its serial
//! console) within the time limit; then an optional probe runs: a command
//! through the guest agent (`guest-exec`) or a TCP port that must answer.
//! QEMU is killed with its parent (`PR_SET_PDEATHSIG`): a boveda killed
//! with `kill -9` mid-verify leaves no QEMU running.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};
use crate::guest_agent::GuestAgent;
use crate::libvirt_domain::Domain;

/// The prefix of a verification's work folder in `$TMPDIR`:
/// `boveda-verify-<pid>-<n>`, removed by the next verification once the
/// process that made it is gone.
pub const WORK_PREFIX: &str = "boveda-verify-";

/// How much of the VM a verification may use, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootLimits {
    /// At most this many CPUs, whatever the definition says.
    pub max_cpus: u32,
    /// At most this much memory, MiB.
    pub max_memory_mib: u64,
    /// The guest agent (or the marker) must answer within this.
    pub time_limit_secs: u64,
}

impl Default for BootLimits {
    fn default() -> Self {
        Self { max_cpus: 2, max_memory_mib: 1024, time_limit_secs: 300 }
    }
}

/// What must answer once the guest is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Probe {
    /// A program and its arguments, run in the guest through the guest
    /// agent: exit status 0 passes.
    Command(Vec<String>),
    /// A TCP port of the guest that must accept a connection.
    Port(u16),
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Command(argv) => write!(f, "command `{}`", argv.join(" ")),
            Probe::Port(p) => write!(f, "TCP port {p}"),
        }
    }
}

/// A verification to run.
pub struct BootSpec<'a> {
    pub domain: &'a Domain,
    /// The NBD socket serving the point's disks, each under its target name.
    pub nbd_socket: &'a Path,
    /// An empty folder of this verification's own (sockets, console log,
    /// QEMU's temporary overlays).
    pub work: &'a Path,
    pub limits: BootLimits,
    /// Text on the serial console that says the guest is up (a guest
    /// without an agent).
    pub marker: Option<&'a str>,
    pub probe: Option<&'a Probe>,
    /// `kvm` when `/dev/kvm` can be used, else `tcg`; or forced.
    pub accel: &'a str,
    /// A UEFI VM's variables as its point holds them (boot entries, boot
    /// order); none: fresh ones.
    pub nvram: Option<&'a [u8]>,
}

/// How a probe went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    pub probe: String,
    pub passed: bool,
    /// What the command printed (its first 2 KiB), or why the port failed.
    pub output: String,
}

/// What a verification found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootOutcome {
    pub verified: bool,
    /// `guest agent` or `console marker`: what answered.
    pub answered_by: Option<String>,
    /// Seconds from QEMU's start until the agent (or the marker) answered.
    pub seconds_to_answer: Option<f64>,
    pub probe: Option<ProbeResult>,
    /// Why it failed, in one line.
    pub reason: Option<String>,
    /// The serial console's last lines (on failure, what to read first).
    pub console_tail: Vec<String>,
    pub accelerator: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// A UEFI guest's variables: `the point's`, or `fresh` and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_vars: Option<String>,
}

/// The accelerator QEMU can use here: `kvm` when `/dev/kvm` opens for
/// reading and writing, else `tcg` (software emulation).
#[must_use]
pub fn default_accelerator() -> &'static str {
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Ok(_) => "kvm",
        Err(_) => "tcg",
    }
}

/// Removes the work folders in `tmp` of verifications whose process is
/// gone (killed mid-verify). Returns how many.
pub fn remove_leftovers(tmp: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else { return 0 };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(WORK_PREFIX) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else { continue };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if std::fs::remove_dir_all(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A running QEMU, killed and reaped when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qemu_command(
    spec: &BootSpec<'_>,
    (cpus, memory_mib): (u32, u64),
    console: &Path,
    agent: &Path,
    forward: Option<(u16, u16)>,
) -> Command {
    let hw = &spec.domain.hardware;
    let machine = match hw.machine.as_deref() {
        Some(m) if m.contains("q35") => "q35",
        _ => "pc",
    };
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-name", "boveda-verify", "-nodefaults", "-no-user-config", "-display", "none"])
        // a guest that escapes into QEMU finds it unable to gain
        // privileges, start programs or change its limits (seccomp)
        .args(["-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"])
        .args(["-machine", machine, "-accel", spec.accel])
        .args(["-m", &memory_mib.to_string(), "-smp", &cpus.to_string()]);
    if spec.accel == "kvm" {
        c.args(["-cpu", "host"]);
    }
    match forward {
        // restrict=on: the guest reaches nothing, not even the host; only
        // the forwarded port comes in
        Some((host, guest)) => {
            c.arg("-nic").arg(format!("user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        None => {
            c.args(["-nic", "none"]);
        }
    }
    // the console through a socket boveda reads, keeping its last 64 KiB
    // (a file would grow as long as the guest prints); QEMU waits for
    // boveda to connect before it starts the guest, so nothing is lost
    c.arg("-chardev").arg(format!("socket,id=ser0,path={},server=on,wait=on", opt(&console.display().to_string())));
    c.args(["-serial", "chardev:ser0"]);
    c.arg("-chardev").arg(format!("socket,id=qga0,path={},server=on,wait=off", opt(&agent.display().to_string())));
    c.args(["-device", "virtio-serial", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]);
    for d in &spec.domain.disks {
        let iface = if d.bus == "virtio" { "virtio" } else { "ide" };
        c.arg("-drive").arg(format!(
            "file=nbd+unix:///{}?socket={},format=raw,if={iface},snapshot=on,cache=unsafe",
            d.target,
            opt(&spec.nbd_socket.display().to_string())
        ));
    }
    if let Some(k) = &hw.kernel {
        c.arg("-kernel").arg(k);
        if let Some(i) = &hw.initrd {
            c.arg("-initrd").arg(i);
        }
        if let Some(a) = &hw.cmdline {
            c.args(["-append", a]);
        }
    }
    // QEMU's temporary overlays (snapshot=on) go to TMPDIR, unlinked at once
    c.env("TMPDIR", spec.work).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs
    // between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // the parent died before the line above: do not outlive it
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::other("boveda ended"));
            }
            Ok(())
        });
    }
    c
}

/// A value inside a QEMU option list: its commas doubled (QEMU's escape).
fn opt(s: &str) -> String {
    s.replace(',', ",,")
}

/// A disk's name as it may stand in an NBD export's URL: letters and
/// digits only (`vda`, `sdb`, `hdc`).
fn plain_disk_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 16 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The serial console as the guest prints it: its last 64 KiB, and
/// whether the marker was seen.
#[derive(Default)]
struct Console {
    text: std::sync::Mutex<Vec<u8>>,
    marker_seen: std::sync::atomic::AtomicBool,
}

const CONSOLE_KEPT: usize = 64 << 10;

impl Console {
    fn read_from(&self, mut stream: UnixStream, marker: Option<&str>) {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut text = self.text.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            text.extend_from_slice(&buf[..n]);
            if let Some(m) = marker
                && text.windows(m.len()).any(|w| w == m.as_bytes())
            {
                self.marker_seen.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if text.len() > 2 * CONSOLE_KEPT {
                let cut = text.len() - CONSOLE_KEPT;
                text.drain(..cut);
            }
        }
    }

    fn text(&self) -> String {
        let text = self.text.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&text[text.len().saturating_sub(CONSOLE_KEPT)..]).into_owned()
    }
}

/// Text a guest wrote, safe to show: control characters (terminal escape
/// sequences among them) dropped but new lines and tabs.
#[must_use]
pub fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control() || *c == '\n' || *c == '\t').collect()
}

/// The console's last `n` non-empty lines, control characters removed.
#[must_use]
pub fn tail_lines(text: &str, n: usize) -> Vec<String> {
    let lines: Vec<String> = text
        .split(['\n', '\r'])
        .map(|l| l.chars().filter(|c| !c.is_control() || *c == '\t').collect::<String>())
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

fn stderr_of(q: &mut Qemu) -> String {
    let mut s = String::new();
    if let Some(mut e) = q.0.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s.trim().to_string()
}

/// Boots the point's disks as [`BootSpec`] says and waits for the guest.
/// A guest that never answers is an outcome (`verified: false`, with
/// the reason and the console's last lines), not an error.
///
/// # Errors
/// `Io` when QEMU cannot be started (not installed) or the work folder
/// cannot be used.
pub fn boot_check(spec: &BootSpec<'_>) -> Result<BootOutcome> {
    let hw = &spec.domain.hardware;
    if let Some(d) = spec.domain.disks.iter().find(|d| !plain_disk_name(&d.target)) {
        return Err(EngineError::Domain {
            path: PathBuf::from(&spec.domain.name),
            reason: format!("disk {:?}: only disks named with letters and digits (vda, sdb) are booted", d.target),
        });
    }
    let cpus = hw.cpus.unwrap_or(1).clamp(1, spec.limits.max_cpus.max(1));
    let memory_mib = hw.memory_mib.unwrap_or(512).clamp(64, spec.limits.max_memory_mib.max(64));
    let console = spec.work.join("console.sock");
    let agent_socket = spec.work.join("agent.sock");
    let mut outcome = BootOutcome {
        verified: false,
        answered_by: None,
        seconds_to_answer: None,
        probe: None,
        reason: None,
        console_tail: Vec::new(),
        accelerator: spec.accel.to_string(),
        cpus,
        memory_mib,
        firmware_vars: None,
    };
    let forward = match spec.probe {
        Some(Probe::Port(port)) => Some((free_port().map_err(|e| EngineError::io(spec.work, e))?, *port)),
        _ => None,
    };
    let firmware = if hw.uefi {
        let (code, vars, whose) = uefi_firmware(spec)?;
        outcome.firmware_vars = Some(whose);
        Some((code, vars))
    } else {
        None
    };
    let mut command = qemu_command(spec, (cpus, memory_mib), &console, &agent_socket, forward);
    if let Some((code, vars)) = &firmware {
        command
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,unit=0,readonly=on,file={}", opt(&code.display().to_string())));
        command.arg("-drive").arg(format!("if=pflash,format=raw,unit=1,file={}", opt(&vars.display().to_string())));
    }
    boot_and_wait(spec, command, &console, &agent_socket, forward.map(|f| f.0), outcome)
}

/// OVMF, the UEFI firmware a UEFI guest boots with here: its code and the
/// template of its variables (Debian's package `ovmf`), 4 MiB builds first.
const OVMF: [(&str, &str); 2] = [
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
];

/// This machine's UEFI firmware for a UEFI guest, with its variables in
/// the work folder: the point's own (its boot entries) when it holds a
/// variable store that fits a firmware build here (same size as its
/// template), else fresh ones, and the guest boots by its removable-media
/// path (`\EFI\BOOT\BOOTX64.EFI`). The definition's own loader and NVRAM
/// paths are never opened: a registered host writes definitions. Returns
/// the code, the variables' copy, and whose variables they are.
fn uefi_firmware(spec: &BootSpec<'_>) -> Result<(PathBuf, PathBuf, String)> {
    let present: Vec<(&str, &str)> =
        OVMF.iter().copied().filter(|(c, v)| Path::new(c).is_file() && Path::new(v).is_file()).collect();
    let Some(&(code, vars)) = present.first() else {
        return Err(EngineError::Domain {
            path: PathBuf::from(&spec.domain.name),
            reason: "the VM boots by UEFI and this machine has no OVMF firmware (Debian's package ovmf)".into(),
        });
    };
    let copy = spec.work.join("uefi-vars.fd");
    let fits = |n: usize| present.iter().find(|(_, v)| std::fs::metadata(v).is_ok_and(|m| m.len() == n as u64));
    match spec.nvram {
        Some(own)
            if crate::is_firmware_vars(own)
                && let Some(&(code, _)) = fits(own.len()) =>
        {
            std::fs::write(&copy, own).map_err(|e| EngineError::io(&copy, e))?;
            Ok((PathBuf::from(code), copy, "the point's".into()))
        }
        theirs => {
            std::fs::copy(vars, &copy).map_err(|e| EngineError::io(&copy, e))?;
            let why = match theirs {
                None => "fresh: the point holds none".to_string(),
                Some(own) => format!("fresh: the point's ({} bytes) fit no UEFI firmware here", own.len()),
            };
            Ok((PathBuf::from(code), copy, why))
        }
    }
}

fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn boot_and_wait(
    spec: &BootSpec<'_>,
    mut command: Command,
    console_socket: &Path,
    agent_socket: &Path,
    host_port: Option<u16>,
    mut outcome: BootOutcome,
) -> Result<BootOutcome> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(spec.limits.time_limit_secs);
    let child = command.spawn().map_err(|e| {
        EngineError::io(Path::new("qemu-system-x86_64"), io::Error::new(e.kind(), format!("cannot start QEMU: {e}")))
    })?;
    let mut qemu = Qemu(child);
    let console = Console::default();
    std::thread::scope(|s| {
        // QEMU waits for this connection before it starts the guest
        let mut stream = None;
        while stream.is_none() && Instant::now() < deadline && matches!(qemu.0.try_wait(), Ok(None)) {
            stream = UnixStream::connect(console_socket).ok();
            if stream.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if let Some(stream) = stream {
            let console = &console;
            let marker = spec.marker.filter(|m| !m.is_empty());
            s.spawn(move || console.read_from(stream, marker));
        }
        let mut agent = None;
        loop {
            if let Ok(Some(status)) = qemu.0.try_wait() {
                let err = stderr_of(&mut qemu);
                outcome.reason = Some(format!("QEMU ended ({status}) before the guest answered: {}", last_line(&err)));
                break;
            }
            if console.marker_seen.load(std::sync::atomic::Ordering::Relaxed) {
                outcome.answered_by = Some("console marker".into());
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if agent_socket.exists()
                && let Ok(mut a) = GuestAgent::connect(agent_socket, left.min(Duration::from_secs(1)))
                && a.ping().is_ok()
            {
                outcome.answered_by = Some("guest agent".into());
                agent = Some(a);
                break;
            }
            if Instant::now() >= deadline {
                outcome.reason = Some(match spec.marker {
                    Some(m) => format!(
                        "neither the guest agent nor the console marker {m:?} answered within {} s",
                        spec.limits.time_limit_secs
                    ),
                    None => format!("the guest agent did not answer within {} s", spec.limits.time_limit_secs),
                });
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if outcome.answered_by.is_some() {
            outcome.seconds_to_answer = Some(started.elapsed().as_secs_f64());
            outcome.verified = true;
            if let Some(probe) = spec.probe {
                let result = run_probe(probe, agent.as_mut(), agent_socket, host_port, deadline);
                if !result.passed {
                    outcome.verified = false;
                    outcome.reason = Some(format!(
                        "the guest is up, but the probe {} failed: {}",
                        result.probe,
                        last_line(&result.output)
                    ));
                }
                outcome.probe = Some(result);
            }
        }
        drop(agent);
        // killed: the console's reader sees the end of its stream
        let _ = qemu.0.kill();
        let _ = qemu.0.wait();
    });
    drop(qemu);
    outcome.console_tail = tail_lines(&console.text(), if outcome.verified { 5 } else { 25 });
    Ok(outcome)
}

fn last_line(s: &str) -> String {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim().to_string()
}

fn run_probe(
    probe: &Probe,
    agent: Option<&mut GuestAgent>,
    agent_socket: &Path,
    host_port: Option<u16>,
    deadline: Instant,
) -> ProbeResult {
    let name = probe.to_string();
    let fail = |output: String| ProbeResult { probe: name.clone(), passed: false, output };
    match probe {
        Probe::Command(argv) => {
            let mut fresh = None;
            let agent = match agent {
                Some(a) => a,
                None => match GuestAgent::connect(agent_socket, Duration::from_secs(5)) {
                    Ok(a) => fresh.insert(a),
                    Err(e) => return fail(format!("the guest agent is needed to run a command: {e}")),
                },
            };
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(10));
            match agent.exec(argv, left) {
                Ok((0, out)) => ProbeResult { probe: name.clone(), passed: true, output: printable(&out) },
                Ok((code, out)) => fail(format!("exit status {code}: {}", printable(&out))),
                Err(e) => fail(e.to_string()),
            }
        }
        Probe::Port(port) => {
            let Some(hp) = host_port else { return fail("no port forwarded".into()) };
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], hp));
            loop {
                // QEMU's forward accepts at once, whether or not the guest
                // does: the service must answer something (a banner, or a
                // reply to an empty line) to count as up
                if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                    let _ = s.write_all(b"\r\n");
                    let mut b = [0u8; 64];
                    if let Ok(n) = s.read(&mut b)
                        && n > 0
                    {
                        let said = printable(&String::from_utf8_lossy(&b[..n]));
                        return ProbeResult { probe: name, passed: true, output: said.trim().to_string() };
                    }
                }
                if Instant::now() >= deadline {
                    return fail(format!("port {port} did not accept a connection and answer in time"));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// A verification's own work folder, `$TMPDIR/boveda-verify-<pid>-<n>`,
/// removed when dropped.
pub struct WorkDir(PathBuf);

impl WorkDir {
    /// Makes a new work folder in `tmp` (mode 0700).
    ///
    /// # Errors
    /// `Io` when the folder cannot be made.
    pub fn new(tmp: &Path) -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = tmp.join(format!("{WORK_PREFIX}{}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&path).map_err(|e| EngineError::io(&path, e))?;
        Ok(Self(path))
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_tail_keeps_the_last_printable_lines() {
        let text = "SeaBIOS\r\nBooting from Hard Disk...\r\n\x1b[2Jboot: \r\n\r\nKernel panic - not syncing\n";
        assert_eq!(tail_lines(text, 2), vec!["[2Jboot:", "Kernel panic - not syncing"]);
        assert_eq!(tail_lines("", 5), Vec::<String>::new());
    }

    #[test]
    fn a_disk_name_or_path_cannot_add_options_to_qemu() {
        assert!(plain_disk_name("vda") && plain_disk_name("sdb1"));
        for bad in ["vda,file=/etc/shadow", "vda?socket=/x", "", "VDA", "vda#", "../vda"] {
            assert!(!plain_disk_name(bad), "{bad}");
        }
        assert_eq!(opt("/tmp/a,b/nbd.sock"), "/tmp/a,,b/nbd.sock");
        assert_eq!(printable("ok\x1b[2J\x07done\n"), "ok[2Jdone\n");
    }

    #[test]
    fn leftovers_of_a_live_process_are_kept_and_of_a_gone_one_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mine = tmp.path().join(format!("{WORK_PREFIX}{}-0", std::process::id()));
        // pid_max is at most 2^22: this process cannot exist
        let gone = tmp.path().join(format!("{WORK_PREFIX}{}-0", 1 << 23));
        std::fs::create_dir(&mine).expect("mkdir");
        std::fs::create_dir(&gone).expect("mkdir");
        assert_eq!(remove_leftovers(tmp.path()), 1);
        assert!(mine.exists() && !gone.exists());
    }
}

//! Backups of a VM while it runs: a snapshot of all its disks at one
//! instant through its QEMU's monitor, read over NBD (see
//! `boveda_engine::live`), incremental by the dirty bitmap the previous
//! live backup started.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boveda_engine::guest_agent::GuestAgent;
use boveda_engine::live::{self, LiveDisk, Quiesce};
use boveda_engine::qmp::{Monitor, QmpClient, VirshMonitor};
use boveda_engine::{DiskSource, Domain, LiveSource};
use boveda_vault::{Consistency, RecordId};

use crate::error::{Result, ServiceError};
use crate::items::consistency::{ConsistencyConfig, with_consistency};

/// The temporary folders of live backups: `boveda-live-<pid>-<bitmap>`,
/// holding the snapshot's temporary images and NBD socket.
const WORK_PREFIX: &str = "boveda-live-";

/// Removes the temporary folders of live backups whose process is gone
/// (killed): their images held the blocks the guest overwrote.
fn remove_stale_work() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(WORK_PREFIX).and_then(|r| r.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// How long the monitor may take to answer.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(60);

fn unreachable_monitor(socket: &Path, domain: &Domain, e: &std::io::Error) -> ServiceError {
    ServiceError::Invalid(format!(
        "VM {}: its QEMU monitor {} does not answer ({e}): is the VM running, and is that its QMP socket?",
        domain.name,
        socket.display()
    ))
}

/// The folder where libvirt keeps the status of the domains it runs.
const LIBVIRT_RUN: &str = "/run/libvirt/qemu";

/// How boveda reaches a running VM's QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reach {
    /// A QMP socket of boveda's own (`--qmp`, or the definition's
    /// `<qemu:commandline>`).
    Socket(PathBuf),
    /// libvirt's own monitor, through `virsh` (a domain libvirt runs).
    Libvirt(String),
}

/// A VM that runs: how its monitor is reached, and how its guest is
/// frozen (libvirt holds the guest agent's channel of the domains it
/// runs, so they are frozen through `virsh domfsfreeze`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunningVm {
    pub monitor: Reach,
    pub freeze: Freezer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Freezer {
    /// The guest agent's socket, when the VM has one.
    Agent(Option<PathBuf>),
    /// `virsh domfsfreeze` / `domfsthaw` of this domain.
    Libvirt(String),
}

/// Whether libvirt runs the domain `name` (its status file is in
/// libvirt's run folder, and `virsh domstate` says so).
fn libvirt_runs(name: &str) -> bool {
    if !Path::new(LIBVIRT_RUN).join(format!("{name}.xml")).exists() {
        return false;
    }
    std::process::Command::new("virsh")
        .args(["domstate", name])
        .output()
        .is_ok_and(|o| o.status.success() && matches!(String::from_utf8_lossy(&o.stdout).trim(), "running" | "paused"))
}

/// The VM of `domain` when it runs, and how to reach it: through the QMP
/// socket `qmp` (the item's, else the definition's) when a monitor listens
/// there, else through libvirt when libvirt runs it; `None` when it is
/// shut off.
pub(crate) fn find_running(qmp: Option<&Path>, agent: Option<&Path>, domain: &Domain) -> Option<RunningVm> {
    let under_libvirt = libvirt_runs(&domain.name);
    let freeze = if under_libvirt {
        Freezer::Libvirt(domain.name.clone())
    } else {
        Freezer::Agent(agent.map(Path::to_path_buf).or_else(|| domain.guest_agent.clone()))
    };
    match qmp.or(domain.qmp.as_deref()) {
        Some(socket) if monitor_listens(socket) => {
            Some(RunningVm { monitor: Reach::Socket(socket.to_path_buf()), freeze })
        }
        _ if under_libvirt => Some(RunningVm { monitor: Reach::Libvirt(domain.name.clone()), freeze }),
        _ => None,
    }
}

fn connect(reach: &Reach, domain: &Domain) -> Result<Box<dyn Monitor>> {
    match reach {
        Reach::Socket(socket) => match QmpClient::connect(socket, MONITOR_TIMEOUT) {
            Ok(c) => Ok(Box::new(c)),
            Err(e) => Err(unreachable_monitor(socket, domain, &e)),
        },
        Reach::Libvirt(name) => Ok(Box::new(VirshMonitor { domain: name.clone(), uri: None })),
    }
}

fn disk_files(domain: &Domain) -> Vec<(String, PathBuf)> {
    domain.disks.iter().map(|d| (d.target.clone(), d.path.clone())).collect()
}

/// Whether a monitor listens on `socket`: not when the VM is shut off
/// (its socket is gone, or nobody accepts on it).
pub(crate) fn monitor_listens(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Checks that the running VM has every disk of `domain` open; the disks
/// as an item records them.
///
/// # Errors
/// `Invalid` naming the VM: the monitor does not answer, or a disk is not
/// one the VM has open.
pub(crate) fn check_running(vm: &RunningVm, domain: &Domain) -> Result<Vec<(String, PathBuf)>> {
    let mut qmp = connect(&vm.monitor, domain)?;
    let files = disk_files(domain);
    live::find_disks(qmp.as_mut(), &files).map_err(|e| ServiceError::Invalid(format!("VM {}: {e}", domain.name)))?;
    Ok(files)
}

/// A live backup in progress: the snapshot, and the monitor that ends it.
pub(crate) struct LiveBackup {
    qmp: Box<dyn Monitor>,
    snapshot: live::Snapshot,
    pub disks: Vec<(String, DiskSource)>,
    /// Why the disks are read in full, when they are.
    pub warning: Option<String>,
}

impl LiveBackup {
    /// Cleans what an earlier, killed backup left in the VM, and takes
    /// the snapshot; `previous` is the bitmap the parent point started.
    ///
    /// # Errors
    /// `Invalid` naming the VM for a monitor that does not answer, a disk
    /// it does not have open, or a snapshot QEMU refuses.
    pub(crate) fn start(
        reach: &Reach,
        domain: &Domain,
        previous: Option<&str>,
        quiesce: &mut dyn Quiesce,
    ) -> Result<Self> {
        let mut qmp = connect(reach, domain)?;
        let fail = |e: std::io::Error| ServiceError::Invalid(format!("VM {}: live snapshot: {e}", domain.name));
        live::clean_leftovers(qmp.as_mut()).map_err(fail)?;
        remove_stale_work();
        let found: Vec<LiveDisk> = live::find_disks(qmp.as_mut(), &disk_files(domain)).map_err(fail)?;
        let new_bitmap = format!("{}{}", live::PREFIX, &RecordId::random().to_hex()[..16]);
        let work = std::env::temp_dir().join(format!("{WORK_PREFIX}{}-{}", std::process::id(), &new_bitmap));
        let snapshot = live::take(qmp.as_mut(), &found, &work, previous, &new_bitmap, quiesce).map_err(fail)?;
        let warning = match (previous, &snapshot.since_previous) {
            (Some(_), Some(_)) | (None, _) => None,
            (Some(p), None) => Some(format!(
                "the VM's dirty bitmap {p} is gone (the VM restarted?): every disk was read in full, and a new bitmap started"
            )),
        };
        let disks = snapshot
            .exports
            .iter()
            .map(|(d, export)| {
                let source = LiveSource {
                    socket: snapshot.socket.clone(),
                    export: export.clone(),
                    changed_since_parent: snapshot.since_previous.clone(),
                };
                (d.target.clone(), DiskSource::Live(source))
            })
            .collect();
        Ok(Self { qmp, snapshot, disks, warning })
    }

    /// The bitmap this backup started (recorded in its point).
    pub(crate) fn new_bitmap(&self) -> String {
        self.snapshot.new_bitmap.clone()
    }

    /// Removes everything the backup added to the VM; keeps the new bitmap
    /// when the backup `succeeded`.
    ///
    /// # Errors
    /// `Invalid` when the monitor fails the cleanup (the next backup
    /// cleans what is left).
    pub(crate) fn finish(mut self, succeeded: bool) -> Result<()> {
        live::finish(self.qmp.as_mut(), &self.snapshot, succeeded)
            .map_err(|e| ServiceError::Invalid(format!("live snapshot cleanup: {e}")))
    }
}

/// How long the guest agent may take to answer that it is there.
const AGENT_ANSWER: Duration = Duration::from_secs(5);
/// How long the guest may take to freeze or thaw its file systems.
const FREEZE_LIMIT: Duration = Duration::from_secs(10);

/// The guest's file systems frozen for the instant of the snapshot:
/// through its agent, or through libvirt (which holds the agent of the
/// domains it runs).
struct GuestFreeze {
    freezer: Freezer,
    agent: Option<GuestAgent>,
    /// Why the guest is not frozen (no agent, or it failed).
    not_frozen: Option<String>,
    frozen_at: Option<Instant>,
    /// From freeze to thaw.
    stall: Option<Duration>,
    /// A thaw that failed: the guest may still be frozen.
    thaw_failed: Option<String>,
}

/// Runs `virsh ARGS` for at most `limit`; its output, or why it failed.
pub(crate) fn virsh(args: &[&str], limit: Duration) -> std::result::Result<String, String> {
    run_bounded("virsh", args, limit).map_err(|e| e.replace("cannot run virsh", "cannot run virsh (libvirt-clients)"))
}

/// What a command may print that is kept (a domain's XML is far less).
const OUTPUT_KEPT: u64 = 16 << 20;

/// What a reader of a child's pipe found: which pipe, what it kept, and
/// whether more came than it keeps.
type Drained = (u8, Vec<u8>, bool);

/// Runs `program ARGS` for at most `limit`, its output included: what it
/// prints is read while it runs (output over a pipe's buffer would stall
/// it), and a pipe that something it started holds open ends the wait at
/// the limit too, with the whole process group killed. Its standard
/// output, or why it failed.
fn run_bounded(program: &str, args: &[&str], limit: Duration) -> std::result::Result<String, String> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // its own process group: a kill reaches what it started
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let group = rustix::process::Pid::from_child(&child);
    let kill = |child: &mut std::process::Child| {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = child.kill();
        let _ = child.wait();
    };
    let (tx, rx) = std::sync::mpsc::channel::<Drained>();
    let pipes: [(u8, Option<Box<dyn Read + Send>>); 2] = [
        (0, child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>)),
        (1, child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>)),
    ];
    for (which, pipe) in pipes {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let (mut kept, mut more) = (Vec::new(), false);
            if let Some(mut pipe) = pipe {
                let _ = (&mut pipe).take(OUTPUT_KEPT).read_to_end(&mut kept);
                // the rest is read and dropped: a closed pipe would end the
                // command with SIGPIPE, its output cut without a word
                more = std::io::copy(&mut pipe, &mut std::io::sink()).is_ok_and(|n| n > 0);
            }
            let _ = tx.send((which, kept, more));
        });
    }
    drop(tx);
    let deadline = Instant::now() + limit;
    let late = || format!("{program} {} did not end within {} s", args.join(" "), limit.as_secs());
    let (mut out, mut err, mut cut) = (Vec::new(), Vec::new(), false);
    for _ in 0..2 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((0, kept, more)) => (out, cut) = (kept, cut || more),
            Ok((_, kept, _)) => err = kept,
            Err(_) => {
                kill(&mut child);
                return Err(late());
            }
        }
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                kill(&mut child);
                return Err(late());
            }
        }
    };
    if cut {
        return Err(format!("{program} {} printed more than {OUTPUT_KEPT} bytes", args.join(" ")));
    }
    if status.success() {
        Ok(String::from_utf8_lossy(&out).into_owned())
    } else {
        let said = String::from_utf8_lossy(&err).trim().trim_start_matches("error: ").replace('\n', "; ");
        Err(if said.is_empty() { format!("{program} {} failed ({status})", args.join(" ")) } else { said })
    }
}

impl GuestFreeze {
    fn new(freezer: &Freezer) -> Self {
        let mut q = Self {
            freezer: freezer.clone(),
            agent: None,
            not_frozen: None,
            frozen_at: None,
            stall: None,
            thaw_failed: None,
        };
        match freezer {
            Freezer::Agent(None) => {
                q.not_frozen = Some(format!(
                    "the VM has no guest agent channel ({}) in its definition or item",
                    boveda_engine::GUEST_AGENT_CHANNEL
                ));
            }
            Freezer::Agent(Some(path)) => match GuestAgent::connect(path, AGENT_ANSWER) {
                Ok(mut a) => {
                    let _ = a.set_timeout(FREEZE_LIMIT);
                    q.agent = Some(a);
                }
                Err(e) => q.not_frozen = Some(format!("no guest agent answers on {} ({e})", path.display())),
            },
            Freezer::Libvirt(_) => {}
        }
        q
    }

    fn thaw_again(&self) -> std::result::Result<(), String> {
        match &self.freezer {
            Freezer::Agent(Some(path)) => GuestAgent::connect(path, AGENT_ANSWER)
                .and_then(|mut a| {
                    a.set_timeout(FREEZE_LIMIT)?;
                    a.thaw()
                })
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Freezer::Libvirt(name) => virsh(&["domfsthaw", name], FREEZE_LIMIT).map(|_| ()),
            Freezer::Agent(None) => Ok(()),
        }
    }
}

impl Quiesce for GuestFreeze {
    fn freeze(&mut self) {
        let started = Instant::now();
        let frozen = match (&self.freezer, &mut self.agent) {
            (Freezer::Libvirt(name), _) => virsh(&["domfsfreeze", name], FREEZE_LIMIT)
                .map_err(|e| format!("libvirt did not freeze the guest's file systems ({e})")),
            (_, Some(agent)) => agent
                .freeze()
                .map(|_| String::new())
                .map_err(|e| format!("the guest agent did not freeze the guest's file systems ({e})")),
            _ => return,
        };
        match frozen {
            Ok(_) => self.frozen_at = Some(started),
            Err(why) => self.not_frozen = Some(why),
        }
    }

    fn thaw(&mut self) {
        if matches!(self.freezer, Freezer::Agent(_)) && self.agent.is_none() {
            return;
        }
        // always, also after a failed freeze: a freeze that timed out may
        // still go through; a new agent session skips its late answer
        let thawed = match (&mut self.agent, self.frozen_at) {
            (Some(agent), Some(_)) => agent.thaw().map(|_| ()).map_err(|e| e.to_string()),
            _ => Err(String::new()),
        };
        let thawed = thawed.or_else(|_| self.thaw_again());
        self.stall = self.frozen_at.map(|t| t.elapsed());
        if let Err(e) = thawed
            && self.frozen_at.is_some()
        {
            self.thaw_failed = Some(format!(
                "the guest's file systems may still be frozen: they were not thawed ({e}); thaw them with guest-fsfreeze-thaw or virsh domfsthaw"
            ));
        }
    }
}

/// A live snapshot taken with the guest quiesced: the item's pre script,
/// the guest's file systems frozen through its agent for the instant of
/// the snapshot, the post script.
pub(crate) struct QuiescedBackup {
    pub live: LiveBackup,
    pub consistency: Consistency,
    pub warnings: Vec<String>,
    /// From freeze to thaw, when the guest was frozen.
    pub stall: Option<Duration>,
}

/// Starts a live backup quiesced as far as the VM allows: the point is
/// file-system-consistent when the guest agent froze the guest,
/// app-consistent when the item's pre/post scripts ran too, and
/// crash-consistent (with a warning) when no agent froze it.
///
/// # Errors
/// As [`LiveBackup::start`], or a failed pre script that stops the backup.
pub(crate) fn start_quiesced(
    vm: &RunningVm,
    domain: &Domain,
    previous: Option<&str>,
    cfg: Option<&ConsistencyConfig>,
) -> Result<QuiescedBackup> {
    let ((live, q), scripts, mut warnings) = with_consistency(cfg, || {
        let mut q = GuestFreeze::new(&vm.freeze);
        match LiveBackup::start(&vm.monitor, domain, previous, &mut q) {
            Ok(live) => Ok((live, q)),
            Err(e) => Err(match q.thaw_failed {
                Some(t) => ServiceError::Invalid(format!("{e}; {t}")),
                None => e,
            }),
        }
    })?;
    warnings.extend(q.thaw_failed.clone());
    let consistency = match (&q.not_frozen, scripts) {
        (None, Consistency::AppConsistent) => Consistency::AppConsistent,
        (None, _) => Consistency::FileSystemConsistent,
        (Some(why), c) => {
            if c == Consistency::CrashConsistent {
                warnings.push(format!("{why}: the point is crash-consistent"));
            }
            c
        }
    };
    Ok(QuiescedBackup { live, consistency, warnings, stall: q.stall })
}

/// What a live backup adds to its point.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LiveOutcome {
    /// The dirty bitmap this backup started (the next one reads from it).
    pub bitmap: String,
    pub consistency: Consistency,
    /// From freeze to thaw, when the guest was frozen.
    #[serde(default)]
    pub freeze_ms: Option<u64>,
}

/// Backs up a quiesced snapshot's disks (with `extra_files` beside them)
/// by `backup`, then ends the snapshot, keeping its new bitmap when the
/// backup succeeded: the outcome with the snapshot's warnings.
///
/// # Errors
/// The backup's error; a snapshot that cannot be ended.
pub(crate) fn back_up_snapshot(
    quiesced: QuiescedBackup,
    extra_files: Vec<(String, Vec<u8>)>,
    parent_tree: Option<boveda_vault::ChunkId>,
    cancel: Option<&std::sync::atomic::AtomicBool>,
    backup: impl FnOnce(&boveda_engine::DiskBackupOptions<'_>) -> boveda_engine::Result<boveda_engine::FileBackupOutcome>,
) -> Result<(boveda_engine::FileBackupOutcome, LiveOutcome)> {
    let live = quiesced.live;
    let opts = boveda_engine::DiskBackupOptions { disks: live.disks.clone(), extra_files, parent_tree, cancel };
    let result = backup(&opts);
    let bitmap = live.new_bitmap();
    let warning = live.warning.clone();
    let cleaned = live.finish(result.is_ok());
    let mut outcome = result?;
    cleaned?;
    outcome.warnings.extend(warning);
    outcome.warnings.extend(quiesced.warnings);
    let state = LiveOutcome {
        bitmap,
        consistency: quiesced.consistency,
        freeze_ms: quiesced.stall.map(|d| d.as_millis() as u64),
    };
    Ok((outcome, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The regression: output over a pipe's buffer (a huge `virsh dumpxml`)
    /// stalled the command until its time limit.
    #[test]
    fn output_over_a_pipe_buffer_is_read_without_waiting_for_the_limit() {
        let started = Instant::now();
        let out = run_bounded("sh", &["-c", "head -c 300000 /dev/zero | tr '\\0' x"], Duration::from_secs(60))
            .expect("the command ends");
        assert_eq!(out.len(), 300_000);
        assert!(out.bytes().all(|b| b == b'x'));
        assert!(started.elapsed() < Duration::from_secs(30), "it waited for the limit: {:?}", started.elapsed());
        let failed = run_bounded("sh", &["-c", "echo 'error: no domain' >&2; exit 1"], Duration::from_secs(20));
        assert_eq!(failed, Err("no domain".to_string()));
        let slow = run_bounded("sleep", &["5"], Duration::from_millis(300));
        assert!(slow.is_err_and(|e| e.contains("did not end within")));
        // a child it started holds the pipes open after it exits: the wait
        // still ends at the limit, and the child is killed with its group
        let started = Instant::now();
        let held = run_bounded("sh", &["-c", "sleep 30 & echo started"], Duration::from_secs(1));
        assert!(held.is_err_and(|e| e.contains("did not end within")));
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
        let huge = run_bounded("sh", &["-c", "head -c 17000000 /dev/zero"], Duration::from_secs(60));
        assert!(huge.is_err_and(|e| e.contains("printed more than 16777216 bytes")), "not cut off in silence");
        let silent = run_bounded("sh", &["-c", "exit 3"], Duration::from_secs(20));
        assert!(silent.is_err_and(|e| e.contains("failed") && e.contains('3')));
    }
}

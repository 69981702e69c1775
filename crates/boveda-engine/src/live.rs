//! A point-in-time image of a running VM's disks, taken through QEMU while
//! the guest keeps running ("image fleecing"), and read over NBD.
//!
//! For every disk at once, in one QMP transaction:
//! - a `blockdev-backup` job with `sync: none` from the disk's node into a
//!   temporary qcow2 node backed by the disk: from that instant, QEMU
//!   copies each block the guest is about to overwrite into the temporary
//!   node first, so the temporary node reads as the disk did at the
//!   instant;
//! - a new dirty bitmap on the disk, which records what the guest writes
//!   from that instant on (the next backup's changes); stored in the image
//!   for qcow2 disks, in QEMU's memory for raw ones;
//! - the previous backup's bitmap is disabled, so that it holds exactly
//!   the changes between the two instants.
//!
//! QEMU's NBD server then exports each temporary node read-only on a UNIX
//! socket, with the previous bitmap, and [`crate::nbd::NbdClient`] reads
//! it. Everything added to the VM is named `boveda-…`, removed at the end,
//! and found and removed by [`clean_leftovers`] after a kill.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::qmp::{Monitor, QmpClient};

/// The prefix of every node, job, export and bitmap boveda adds to a VM.
pub const PREFIX: &str = "boveda-";

/// How long QEMU may take to end a job or an export.
const QEMU_WAIT: Duration = Duration::from_secs(60);

fn err(what: impl Into<String>) -> std::io::Error {
    std::io::Error::other(what.into())
}

/// One disk of a running VM: its device name in the VM (`vda`) and the
/// node QEMU reads it through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveDisk {
    pub target: String,
    pub node: String,
    /// Guest size in bytes.
    pub size: u64,
    /// Whether its bitmaps can be stored in the image (qcow2); a raw disk's
    /// bitmaps live in QEMU's memory only, and a restarted VM has none.
    pub persistent_bitmaps: bool,
}

/// A snapshot in progress: its NBD socket and exports.
#[derive(Debug)]
pub struct Snapshot {
    /// The NBD server's socket.
    pub socket: PathBuf,
    /// The disks, in the order given.
    pub disks: Vec<LiveDisk>,
    /// Per disk: the disk and its export's name.
    pub exports: Vec<(LiveDisk, String)>,
    /// The bitmap that records what changed since this snapshot.
    pub new_bitmap: String,
    /// The previous backup's bitmap, exported with each disk when every
    /// disk had it: what changed between the two snapshots.
    pub since_previous: Option<String>,
    work: PathBuf,
}

/// What is done around the instant of a snapshot: the guest's file
/// systems frozen just before it and thawed right after, so that the
/// guest stalls only for the instant.
pub trait Quiesce {
    fn freeze(&mut self);
    /// Called after every `freeze`, also when the snapshot failed.
    fn thaw(&mut self);
}

/// Nothing is quiesced: the snapshot is crash-consistent.
pub struct NoQuiesce;

impl Quiesce for NoQuiesce {
    fn freeze(&mut self) {}
    fn thaw(&mut self) {}
}

/// The disks of the VM behind `qmp` whose image files are `files` (in the
/// order given), with the node each is read through.
///
/// # Errors
/// A file QEMU does not have open, or QMP's errors.
pub fn find_disks(qmp: &mut dyn Monitor, files: &[(String, PathBuf)]) -> std::io::Result<Vec<LiveDisk>> {
    let nodes = qmp.execute("query-named-block-nodes", json!({"flat": true}))?;
    let nodes = nodes.as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for (target, file) in files {
        let wanted = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
        // the format node over the file: the one a guest's writes go through
        let found = nodes.iter().find(|n| {
            n["drv"].as_str().is_some_and(|d| d != "file" && d != "host_device")
                && n["file"].as_str().is_some_and(|f| std::fs::canonicalize(f).unwrap_or_else(|_| f.into()) == wanted)
        });
        let Some(node) = found else {
            return Err(err(format!("the running VM does not have {} open as a disk", file.display())));
        };
        let name = node["node-name"].as_str().unwrap_or_default().to_string();
        let size = node["image"]["virtual-size"].as_u64().unwrap_or(0);
        let persistent_bitmaps = node["drv"] == "qcow2";
        out.push(LiveDisk { target: target.clone(), node: name, size, persistent_bitmaps });
    }
    Ok(out)
}

/// The bitmaps of `node` named by boveda, each with whether it can be
/// trusted: QEMU marks a stored bitmap inconsistent when it was not closed
/// cleanly (QEMU killed), and then it may only be removed.
fn our_bitmaps(qmp: &mut dyn Monitor, node: &str) -> std::io::Result<Vec<(String, bool)>> {
    let nodes = qmp.execute("query-named-block-nodes", json!({"flat": true}))?;
    let Some(n) = nodes.as_array().and_then(|a| a.iter().find(|n| n["node-name"] == node)) else {
        return Ok(Vec::new());
    };
    Ok(n["dirty-bitmaps"]
        .as_array()
        .map(|b| {
            b.iter()
                .filter_map(|b| {
                    let name = b["name"].as_str().filter(|n| n.starts_with(PREFIX))?;
                    Some((name.to_string(), b["inconsistent"].as_bool() != Some(true)))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Takes the snapshot of `disks` at one instant, and exports it on a
/// socket in `work` (a folder of its own). `previous` is the bitmap the
/// last backup started; `new_bitmap` the one to start now. `quiesce`
/// freezes and thaws the guest around the instant.
///
/// # Errors
/// QMP's errors; what was added before the error is removed (bitmaps
/// are left for the next snapshot to repair).
pub fn take(
    qmp: &mut dyn Monitor,
    disks: &[LiveDisk],
    work: &Path,
    previous: Option<&str>,
    new_bitmap: &str,
    quiesce: &mut dyn Quiesce,
) -> std::io::Result<Snapshot> {
    std::fs::create_dir_all(work)?;
    // the previous bitmap counts only when every disk still has it
    let mut since_previous = previous.map(str::to_string);
    for d in disks {
        if let Some(p) = &since_previous
            && !our_bitmaps(qmp, &d.node)?.iter().any(|(b, trusted)| b == p && *trusted)
        {
            since_previous = None;
        }
    }
    for d in disks {
        repair_bitmaps(qmp, &d.node, since_previous.as_deref())?;
    }
    let mut snapshot = Snapshot {
        socket: work.join("nbd.sock"),
        disks: disks.to_vec(),
        exports: Vec::new(),
        new_bitmap: new_bitmap.to_string(),
        since_previous,
        work: work.to_path_buf(),
    };
    match start(qmp, disks, &mut snapshot, quiesce) {
        Ok(()) => Ok(snapshot),
        Err(e) => {
            let _ = clean_leftovers(qmp);
            let _ = std::fs::remove_dir_all(work);
            Err(e)
        }
    }
}

/// Leaves on `node` at most `previous`, enabled and holding every change
/// since the previous point: a backup killed after its snapshot left the
/// previous bitmap disabled and a newer one holding the changes since,
/// which are merged back into it. Without `previous`, removes every bitmap
/// boveda left: the next backup reads the disk in full.
fn repair_bitmaps(qmp: &mut dyn Monitor, node: &str, previous: Option<&str>) -> std::io::Result<()> {
    if let Some(p) = previous {
        // enabled first: it records the writes from now on, the merge adds
        // those since it was disabled
        qmp.execute("block-dirty-bitmap-enable", json!({"node": node, "name": p}))?;
    }
    for (b, _) in our_bitmaps(qmp, node)? {
        if Some(b.as_str()) == previous {
            continue;
        }
        if let Some(p) = previous {
            qmp.execute("block-dirty-bitmap-merge", json!({"node": node, "target": p, "bitmaps": [b]}))?;
        }
        qmp.execute("block-dirty-bitmap-remove", json!({"node": node, "name": b}))?;
    }
    Ok(())
}

fn fleece_node(i: usize) -> String {
    format!("{PREFIX}fleece-{i}")
}

fn start(
    qmp: &mut dyn Monitor,
    disks: &[LiveDisk],
    s: &mut Snapshot,
    quiesce: &mut dyn Quiesce,
) -> std::io::Result<()> {
    for (i, d) in disks.iter().enumerate() {
        let file = s.work.join(format!("fleece-{i}.qcow2"));
        create_qcow2(&file, d.size)?;
        qmp.execute(
            "blockdev-add",
            json!({
                "driver": "qcow2",
                "node-name": fleece_node(i),
                "file": {"driver": "file", "filename": file},
                "backing": d.node,
            }),
        )?;
    }
    let mut actions = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        actions.push(json!({"type": "blockdev-backup", "data": {
            "job-id": fleece_node(i), "device": d.node, "target": fleece_node(i), "sync": "none",
        }}));
        actions.push(json!({"type": "block-dirty-bitmap-add", "data": {
            "node": d.node, "name": s.new_bitmap, "persistent": d.persistent_bitmaps,
        }}));
        if let Some(p) = &s.since_previous {
            actions.push(json!({"type": "block-dirty-bitmap-disable", "data": {"node": d.node, "name": p}}));
        }
    }
    // the instant of the snapshot, for every disk at once
    quiesce.freeze();
    let instant = qmp.execute("transaction", json!({"actions": actions}));
    quiesce.thaw();
    instant?;
    let server = json!({"addr": {"type": "unix", "data": {"path": s.socket}}});
    if let Err(e) = qmp.execute("nbd-server-start", server) {
        return Err(match QmpClient::refusal(&e) {
            Some(r) if r.desc.contains("already running") => err(
                "the VM's QEMU already runs an NBD server (a migration?): a live backup needs its own; try again once it ends",
            ),
            _ => e,
        });
    }
    for (i, d) in disks.iter().enumerate() {
        let name = d.target.clone();
        let mut export = json!({
            "type": "nbd", "id": format!("{PREFIX}export-{i}"), "node-name": fleece_node(i),
            "name": name, "writable": false,
        });
        if let Some(p) = &s.since_previous {
            export["bitmaps"] = json!([{"node": d.node, "name": p}]);
        }
        qmp.execute("block-export-add", export)?;
        s.exports.push((d.clone(), name));
    }
    Ok(())
}

fn create_qcow2(file: &Path, size: u64) -> std::io::Result<()> {
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(file)
        .arg(size.to_string())
        .output()
        .map_err(|e| err(format!("cannot run qemu-img (install qemu-utils): {e}")))?;
    if !out.status.success() {
        return Err(err(format!("qemu-img create {}: {}", file.display(), String::from_utf8_lossy(&out.stderr))));
    }
    Ok(())
}

/// Ends a snapshot: removes its exports, jobs, temporary nodes and files.
/// When the backup `succeeded`, the previous bitmap is removed and the new
/// one goes on. When it failed, the bitmaps stay as they are: the next
/// [`take`] with the same previous bitmap merges the new one back into it,
/// so that backup reads the changes of both periods.
///
/// # Errors
/// The first QMP error; everything that can be removed is.
pub fn finish(qmp: &mut dyn Monitor, s: &Snapshot, succeeded: bool) -> std::io::Result<()> {
    // the exports hold the previous bitmap: they go first
    let cleaned = clean_leftovers(qmp);
    let _ = std::fs::remove_dir_all(&s.work);
    cleaned?;
    if succeeded && let Some(p) = &s.since_previous {
        for d in &s.disks {
            qmp.execute("block-dirty-bitmap-remove", json!({"node": d.node, "name": p}))?;
        }
    }
    Ok(())
}

/// Waits until none of `ids` is listed by `query` (under `key`): QEMU ends
/// exports and jobs asynchronously. Polled, so that it works through
/// libvirt's monitor too, which passes no events on.
fn wait_gone(qmp: &mut dyn Monitor, query: &str, key: &str, ids: &[String]) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + QEMU_WAIT;
    loop {
        let listed = qmp.execute(query, json!({}))?;
        let left = listed
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x[key].as_str().is_some_and(|v| ids.iter().any(|i| i == v))));
        if !left {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(err(format!("QEMU did not end {} within {} s", ids.join(", "), QEMU_WAIT.as_secs())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes every export, job and temporary node boveda added to the VM
/// (by their names), and stops QEMU's NBD server when boveda's exports
/// were its only ones, or it has none: what a killed backup leaves.
///
/// # Errors
/// QMP's errors.
pub fn clean_leftovers(qmp: &mut dyn Monitor) -> std::io::Result<()> {
    let exports = qmp.execute("query-block-exports", json!({}))?;
    let nbd: Vec<String> = exports
        .as_array()
        .map(|a| a.iter().filter(|e| e["type"] == "nbd").filter_map(|e| e["id"].as_str()).map(String::from).collect())
        .unwrap_or_default();
    let ours: Vec<String> = nbd.iter().filter(|id| id.starts_with(PREFIX)).cloned().collect();
    for id in &ours {
        qmp.execute("block-export-del", json!({"id": id}))?;
    }
    wait_gone(qmp, "query-block-exports", "id", &ours)?;
    if ours.len() == nbd.len() {
        // ours were its only exports, or it has none (a backup killed
        // between starting it and adding its exports): the server was
        // started for them, or serves nobody
        match qmp.execute("nbd-server-stop", json!({})) {
            Ok(_) => {}
            Err(e) if QmpClient::refusal(&e).is_some() => {}
            Err(e) => return Err(e),
        }
    }
    let jobs = qmp.execute("query-block-jobs", json!({}))?;
    let ours: Vec<String> = jobs
        .as_array()
        .map(|a| {
            a.iter().filter_map(|j| j["device"].as_str()).filter(|d| d.starts_with(PREFIX)).map(String::from).collect()
        })
        .unwrap_or_default();
    for id in &ours {
        qmp.execute("block-job-cancel", json!({"device": id, "force": true}))?;
    }
    wait_gone(qmp, "query-block-jobs", "device", &ours)?;
    let nodes = qmp.execute("query-named-block-nodes", json!({"flat": true}))?;
    let ours: Vec<String> = nodes
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n["node-name"].as_str())
                .filter(|n| n.starts_with(PREFIX))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    for node in ours {
        match qmp.execute("blockdev-del", json!({"node-name": node})) {
            Ok(_) => {}
            // the protocol node under a format node goes with it
            Err(e) if QmpClient::refusal(&e).is_some_and(|r| r.desc.contains("not found")) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

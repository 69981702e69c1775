//! The QMP client against QEMU's own monitor, in `qemu-storage-daemon`
//! (qemu-utils): capabilities, commands and their results, refusals with
//! their class, and a block job's events.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use boveda_engine::qmp::QmpClient;
use common::{Qemu, sh};
use serde_json::json;

/// `qemu-storage-daemon` holding `image` as node `disk0`, its monitor on a
/// socket; stopped when dropped.
struct Daemon {
    _qemu: Qemu,
    socket: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, image: &Path) -> Daemon {
        let socket = dir.join("qmp.sock");
        let qemu = Qemu::start(
            Command::new("qemu-storage-daemon")
                .arg("--blockdev")
                .arg(format!("driver=file,node-name=file0,filename={}", image.display()))
                .args(["--blockdev", "driver=qcow2,node-name=disk0,file=file0"])
                .arg("--chardev")
                .arg(format!("socket,path={},server=on,wait=off,id=mon0", socket.display()))
                .args(["--monitor", "chardev=mon0"]),
            || socket.exists(),
        );
        Daemon { _qemu: qemu, socket }
    }
}

#[test]
fn commands_refusals_and_a_block_jobs_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("disk.qcow2");
    sh(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&image).arg("16M"));
    sh(Command::new("qemu-io").args(["-f", "qcow2", "-c", "write -P 0x7e 3M 2M"]).arg(&image));
    let daemon = Daemon::start(dir.path(), &image);
    let mut qmp = QmpClient::connect(&daemon.socket, Duration::from_secs(30)).expect("connect");
    assert!(qmp.version.0 >= 7, "QEMU {:?}", qmp.version);

    let nodes = qmp.execute("query-named-block-nodes", json!({})).expect("query");
    let names: Vec<&str> = nodes.as_array().expect("list").iter().filter_map(|n| n["node-name"].as_str()).collect();
    assert!(names.contains(&"disk0") && names.contains(&"file0"), "{names:?}");

    let err = qmp.execute("no-such-command", json!({})).expect_err("refused");
    let refusal = QmpClient::refusal(&err).expect("a QEMU refusal");
    assert_eq!(refusal.class, "CommandNotFound");
    assert!(err.to_string().contains("no-such-command"), "{err}");
    let err = qmp
        .execute("blockdev-add", json!({"driver": "null-co", "node-name": "disk0"}))
        .expect_err("a duplicate node name");
    assert_eq!(QmpClient::refusal(&err).map(|r| r.class.as_str()), Some("GenericError"), "{err}");

    // a full copy into a new node, followed by its job's events
    let copy = dir.path().join("copy.qcow2");
    sh(Command::new("qemu-img").args(["create", "-q", "-f", "qcow2"]).arg(&copy).arg("16M"));
    qmp.execute(
        "blockdev-add",
        json!({"driver": "qcow2", "node-name": "copy0", "file": {"driver": "file", "filename": copy}}),
    )
    .expect("add the target");
    qmp.execute("blockdev-backup", json!({"job-id": "j0", "device": "disk0", "target": "copy0", "sync": "full"}))
        .expect("start the copy");
    let done = qmp
        .wait_event(Duration::from_secs(30), |e| e.name == "BLOCK_JOB_COMPLETED" && e.data["device"] == "j0")
        .expect("the job completes");
    assert!(done.data.get("error").is_none(), "{done:?}");
    qmp.execute("blockdev-del", json!({"node-name": "copy0"})).expect("remove the target");
    sh(Command::new("qemu-img").args(["compare", "-U", "-f", "qcow2", "-F", "qcow2"]).arg(&image).arg(&copy));

    let err = qmp.wait_event(Duration::from_millis(200), |e| e.name == "NO_SUCH_EVENT").expect_err("no such event");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    // the monitor still answers after a wait that timed out
    qmp.execute("query-block-jobs", json!({})).expect("query after a timed-out wait");
}

//! Jobs end in a final state whatever their body does, without waiting for
//! a heartbeat.

mod common;

use std::time::{Duration, Instant};

use boveda_service::{
    JobDone, JobFilter, JobSpec, JobState, Observers, Operation, ServiceErrorKind, SystemClock, list_jobs, run_job,
};
use common::new_vault;

fn spec(heartbeat: Duration) -> JobSpec<'static> {
    JobSpec {
        operation: Operation::Verify,
        item: None,
        scheduled_for: None,
        heartbeat,
        hostname: "h".into(),
        started: None,
        id: None,
        // in a pool of its own, as a job that works on data runs
        workers: true,
    }
}

#[test]
fn a_panic_inside_a_job_leaves_the_process_hung_with_the_job_in_progress() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = new_vault(dir.path());
    // run on a thread so that a hang fails the test instead of blocking it
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let out = run_job::<()>(&vault, &SystemClock, &spec(Duration::from_millis(200)), Observers::default(), |_| {
            panic!("a bug inside the job body")
        });
        let _ = tx.send(out.map(|(job, result)| (job, result.map_err(|e| (e.kind(), e.to_string())))));
        vault
    });
    let (job, result) = rx.recv_timeout(Duration::from_secs(60)).expect("run_job returned").expect("job recorded");
    let vault = handle.join().expect("thread");
    let (kind, message) = result.expect_err("the panic is the job's error");
    assert_eq!(kind, ServiceErrorKind::Other);
    assert!(message.contains("a bug inside the job body"), "{message}");
    assert_eq!(job.state, JobState::Failed);
    let stored = list_jobs(&vault, &JobFilter::default()).expect("jobs");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].state, JobState::Failed, "the stored job is final, not InProgress");
    assert!(stored[0].error.as_deref().is_some_and(|e| e.contains("a bug inside the job body")));
}

#[test]
fn a_job_that_ends_at_once_waits_for_a_heartbeat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = new_vault(dir.path());
    // a heartbeat far longer than the test may take: ending must not wait for it
    let heartbeat = Duration::from_secs(30);
    let started = Instant::now();
    for _ in 0..20 {
        let (job, result) =
            run_job(&vault, &SystemClock, &spec(heartbeat), Observers::default(), |_| Ok(((), JobDone::default())))
                .expect("job");
        result.expect("body");
        assert_eq!(job.state, JobState::Completed);
    }
    assert!(started.elapsed() < Duration::from_secs(20), "20 instant jobs took {:?}", started.elapsed());
}

#[test]
fn a_backup_beside_a_prune_finds_its_parents_packs_marked_and_rereads_the_tree() {
    use boveda_engine::NoProgress;
    use boveda_service::{JobEnv, add_files_item, backup_job, plan_prune, prune_job};
    use boveda_vault::{CheckOptions, GcRequest, check, gc_execute, gc_plan};

    let dir = tempfile::tempdir().expect("tempdir");
    let vault = new_vault(dir.path());
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    for i in 0..20u8 {
        std::fs::write(src.join("sub").join(format!("f{i}")), vec![i; 50_000 + usize::from(i)]).expect("write");
    }
    let item = add_files_item(&vault, "t", std::slice::from_ref(&src), &[]).expect("item");
    let env = JobEnv::new(&SystemClock, Duration::from_secs(10), "h".into());
    let first = backup_job(&vault, &env, &item, None, None, &NoProgress).expect("job").1.expect("first point");

    // A prune that planned while this point was still being written saw its
    // packs used by no point, and marked them all.
    let now = jiff::Timestamp::now();
    let req = GcRequest { now, margin: jiff::SignedDuration::ZERO, points: &[], oldest_running_writer: None };
    let marking = gc_plan(&vault, &req).expect("plan");
    assert!(!marking.mark.is_empty());
    gc_execute(&vault, &marking, now).expect("mark");

    let second = backup_job(&vault, &env, &item, None, None, &NoProgress).expect("job").1.expect("second point");
    assert!(
        second.warnings.iter().all(|w| !w.contains("parent tree unreadable")),
        "the parent's trees are read from marked packs: {:?}",
        second.warnings
    );
    // the backed-up folder's own tree: the root's also records its
    // ancestors (/tmp), whose times other processes change meanwhile
    let src_tree = |root: &boveda_vault::ChunkId| {
        let index = vault.load_index().expect("index");
        let parent = src.parent().and_then(|p| p.to_str()).expect("utf8");
        let nodes = boveda_engine::list_point_path(&vault, &index, root, parent).expect("list");
        nodes.into_iter().find(|n| n.name == b"src").and_then(|n| n.subtree).expect("src is in the point")
    };
    assert_eq!(src_tree(&second.tree), src_tree(&first.tree), "the same tree, found through the parent");
    // nothing new depends on the marked packs: their data was stored again
    assert!(second.stats.chunks_new > 0);

    // the next prune sweeps the marks: packs the first point needs are kept
    let (_, swept) = prune_job(&vault, &env, jiff::SignedDuration::ZERO).expect("prune job");
    swept.expect("prune");
    let report = check(&vault, CheckOptions { read_data: true }, &|_| {}).expect("check");
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(plan_prune(&vault, jiff::Timestamp::now(), jiff::SignedDuration::ZERO).expect("plan").points_kept, 2);
}

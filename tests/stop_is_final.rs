//! End-to-end: a stop is final. Every write of a job is conditional on the version read, and a
//! firing or an automatic retry creates its execution only after its own write of the job won
//! (recording the run as pending, which a later stop takes and ends). So a firing or a retry
//! that read the job before a stop can neither undo the stop nor run after it.

mod common;

use common::{docker_hosts, image, path_of, running_containers, wait_until, Node};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TERMINAL: [&str; 5] = ["done", "failed", "timedout", "expired", "stopped"];

/// How long a stopped job is watched for anything new.
const WATCH: Duration = Duration::from_secs(6);

/// The job's execution count (`executionCount`, not capped like the listed executions).
async fn execution_count(node: &Node, job_url: &str) -> u64 {
    node.get_json(path_of(job_url)).await["job"]["executionCount"]
        .as_u64()
        .expect("executionCount")
}

/// (id → status) of the job's listed executions (its newest 20).
async fn statuses(node: &Node, job_url: &str) -> BTreeMap<String, String> {
    node.executions(job_url)
        .await
        .iter()
        .map(|execution| {
            (
                execution["executionId"].as_str().unwrap_or("").to_string(),
                execution["status"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Waits until the job has at least `count` executions, then `phase` more, and stops it;
/// returns what it had right after the stop answered.
async fn stop_after(
    node: &Node,
    job_url: &str,
    count: u64,
    phase: Duration,
) -> BTreeMap<String, String> {
    wait_until(
        Duration::from_secs(60),
        "executions before the stop",
        || async { execution_count(node, job_url).await >= count },
    )
    .await;
    tokio::time::sleep(phase).await;
    let (status, answer) = node.post_empty(&format!("{}stop", path_of(job_url))).await;
    assert_eq!(status, 200, "stop: {answer}");
    statuses(node, job_url).await
}

/// After the stop: no execution is created for [`WATCH`], every execution ends, those that
/// were still queued at the stop end `stopped` without ever starting, and no container of
/// the task is left running.
async fn assert_nothing_runs_after_stop(
    node: &Node,
    task: &str,
    job_url: &str,
    at_stop: &BTreeMap<String, String>,
) {
    let count = execution_count(node, job_url).await;
    let watched = Instant::now();
    while watched.elapsed() < WATCH {
        assert_eq!(
            execution_count(node, job_url).await,
            count,
            "an execution was created after the stop: {:?}\n{}",
            statuses(node, job_url).await,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_until(
        Duration::from_secs(60),
        "every execution to end",
        || async {
            statuses(node, job_url)
                .await
                .values()
                .all(|status| TERMINAL.contains(&status.as_str()))
        },
    )
    .await;
    let executions = node.executions(job_url).await;
    for execution in &executions {
        let id = execution["executionId"].as_str().unwrap_or("");
        if at_stop.get(id).map(String::as_str) == Some("enqueued") {
            assert_eq!(execution["status"], "stopped", "{execution}");
            assert_eq!(
                execution["startedAt"],
                Value::Null,
                "queued at the stop, it must never start: {execution}"
            );
        }
    }
    let job = node.get_json(path_of(job_url)).await;
    assert_eq!(job["job"]["schedule"], Value::Null, "{job}");
    assert_eq!(job["job"]["scheduled"], false);
    wait_until(
        Duration::from_secs(30),
        "no container of the task",
        || async { running_containers(&docker_hosts()[0], task) == 0 },
    )
    .await;
}

/// Cron jobs firing every second (overlapping runs allowed, so firings are in flight in every
/// state: deciding, queued, starting, running) are stopped at different phases of the second:
/// none fires again in the following 6 s, and every run that had not started never starts.
#[tokio::test]
async fn a_stopped_cron_job_never_fires_again() {
    let node = Node::start(&[]).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut jobs = Vec::new();
    for index in 0..4 {
        let task = format!("cron-final-{index}-{run}");
        let posted = node
            .post_job(
                &task,
                json!({"image": image(), "command": "sleep 2", "cron": "* * * * * *",
                       "overlap": "allow"}),
            )
            .await;
        jobs.push((task, posted["jobUrl"].as_str().unwrap().to_string()));
    }
    let mut stopped = Vec::new();
    for (index, (task, job_url)) in jobs.iter().enumerate() {
        let phase = Duration::from_millis(230 * index as u64);
        let at_stop = stop_after(&node, job_url, 3, phase).await;
        stopped.push((task, job_url, at_stop));
    }
    for (task, job_url, at_stop) in &stopped {
        assert_nothing_runs_after_stop(&node, task, job_url, at_stop).await;
    }
    assert!(!node.log().contains("panicked"), "{}", node.log());
}

/// Jobs whose every execution fails, with many retries 200 ms apart, are stopped while they
/// are being retried (at different phases of the failure → retry cycle): no retry is created
/// or runs after the stop, and the job's retries are used up for good.
#[tokio::test]
async fn a_stopped_job_is_not_retried() {
    let node = Node::start(&[]).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut jobs = Vec::new();
    for index in 0..3 {
        let task = format!("retry-final-{index}-{run}");
        let posted = node
            .post_job(
                &task,
                json!({"image": image(), "command": "sh -c 'exit 1'", "retries": 50,
                       "backoff": {"minMs": 200, "factor": 1, "maxMs": 200}}),
            )
            .await;
        jobs.push((task, posted["jobUrl"].as_str().unwrap().to_string()));
    }
    let mut stopped = Vec::new();
    for (index, (task, job_url)) in jobs.iter().enumerate() {
        let phase = Duration::from_millis(170 * index as u64);
        let at_stop = stop_after(&node, job_url, 3, phase).await;
        stopped.push((task, job_url, at_stop));
    }
    for (task, job_url, at_stop) in &stopped {
        assert_nothing_runs_after_stop(&node, task, job_url, at_stop).await;
        let job = node.get_json(path_of(job_url)).await;
        assert!(
            job["job"]["metadata"]["retry_count"].as_u64() > Some(50),
            "a stop uses up the retries: {job}"
        );
    }
    assert!(!node.log().contains("panicked"), "{}", node.log());
}

/// Records a pending firing on a stored job directly in the node's database, as a scheduler
/// that crashed right after its conditional write of the job left it: no execution exists. The
/// store's write of the job also moves the job's entry in the `schedules` index to the pending
/// run's grace (`Job::attention_at`), as done here: the scheduler reads that index.
fn leave_pending_firing(data_dir: &std::path::Path, job_id: &str, execution_id: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let connection = rusqlite::Connection::open(data_dir.join("fastlane.sqlite3")).unwrap();
    let run = json!([{"executionId": execution_id, "due": now, "scheduledAt": now,
                      "image": image(), "command": "echo recovered", "recordedAt": now}]);
    let changed = connection
        .execute(
            "UPDATE jobs SET record = json_set(record, '$.pending', json(?2)) WHERE job_id = ?1",
            rusqlite::params![job_id, run.to_string()],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let grace = 10_000_000;
    let indexed = connection
        .execute(
            "UPDATE schedules SET next_fire_at = ?2 WHERE job_id = ?1",
            rusqlite::params![job_id, now + grace],
        )
        .unwrap();
    assert_eq!(indexed, 1);
}

/// A firing decided (recorded pending on its job) by a node that died before creating its
/// execution is not lost: the restarted node's scheduler creates and runs it once the pending
/// grace has passed. A job whose pending firing is stopped before that never runs it: the stop
/// creates the execution `stopped`.
#[tokio::test]
async fn a_pending_firing_left_by_a_crash_is_completed_or_stopped() {
    let mut node = Node::start(&[]).await;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut jobs = Vec::new();
    for name in ["completed", "stopped"] {
        let task = format!("pending-{name}-{run}");
        let posted = node
            .post_job(
                &task,
                json!({"image": image(), "command": "echo later", "startIn": "1h"}),
            )
            .await;
        let job_id = posted["jobId"].as_str().unwrap().to_string();
        jobs.push((task, job_id, uuid::Uuid::new_v4().to_string()));
    }
    node.kill();
    for (_, job_id, execution_id) in &jobs {
        leave_pending_firing(&node.data_dir, job_id, execution_id);
    }
    node.start_again().await;
    let execution_url = |(task, job_id, execution_id): &(String, String, String)| {
        node.url(&format!(
            "/tasks/{task}/jobs/{job_id}/executions/{execution_id}/"
        ))
    };
    // Stopped within the grace, before the scheduler completes it.
    let (task, job_id, _) = &jobs[1];
    let (status, answer) = node
        .post_empty(&format!("/tasks/{task}/jobs/{job_id}/stop"))
        .await;
    assert_eq!(status, 200, "{answer}");
    let stopped = node.wait_finished(&execution_url(&jobs[1])).await;
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert_eq!(stopped["startedAt"], Value::Null, "{stopped}");
    // Completed after the grace (10 s) by the scheduler, and run once.
    let completed = node.wait_finished(&execution_url(&jobs[0])).await;
    assert_eq!(completed["status"], "done", "{completed}");
    let job_url = node.url(&format!("/tasks/{}/jobs/{}/", jobs[0].0, jobs[0].1));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(execution_count(&node, &job_url).await, 1);
    let job = node.get_json(path_of(&job_url)).await;
    assert_ne!(
        job["job"]["schedule"],
        Value::Null,
        "the job's own schedule stands: {job}"
    );
    let stopped_job = node.url(&format!("/tasks/{}/jobs/{}/", jobs[1].0, jobs[1].1));
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        statuses(&node, &stopped_job)
            .await
            .into_values()
            .collect::<Vec<_>>(),
        ["stopped"],
        "the stopped pending firing never runs"
    );
}

/// PUTs of a cron job firing every second race its firings (both write the job): each PUT is
/// read and built again after a lost race and answers 200, never 409; once the last PUT (a
/// schedule an hour away) is written, no firing of the old schedule is created.
#[tokio::test]
async fn puts_racing_firings_are_written_and_win() {
    let node = Node::start(&[]).await;
    let task = format!("put-race-{}", uuid::Uuid::new_v4().simple());
    let job_id = uuid::Uuid::new_v4().to_string();
    let every_second = json!({"image": image(), "command": "true", "cron": "* * * * * *",
                              "overlap": "allow"});
    node.put_job(&task, &job_id, every_second.clone()).await;
    let job_url = node.url(&format!("/tasks/{task}/jobs/{job_id}/"));
    for _ in 0..20 {
        // `put_job` asserts 200.
        node.put_job(&task, &job_id, every_second.clone()).await;
        tokio::time::sleep(Duration::from_millis(130)).await;
    }
    node.put_job(
        &task,
        &job_id,
        json!({"image": image(), "command": "true", "startIn": "1h"}),
    )
    .await;
    // A firing decided just before the last PUT is kept by it (a decided run is never lost)
    // and created by its scheduler right after: let it land, then nothing more may come.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let count = execution_count(&node, &job_url).await;
    assert!(count >= 1, "the cron fired while it was being replaced");
    let watched = Instant::now();
    while watched.elapsed() < WATCH {
        assert_eq!(execution_count(&node, &job_url).await, count);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let job = node.get_json(path_of(&job_url)).await;
    assert_eq!(job["job"]["scheduled"], false, "{job}");
    assert!(!node.log().contains("panicked"), "{}", node.log());
}

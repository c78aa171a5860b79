//! End-to-end: a job's whole life through HTTP against a real Docker engine: scheduling
//! (startAt, startIn, cron), update by PUT, stop, retry, automatic retries with back-off,
//! timeouts, expiration, and crashes of the node itself.

mod common;

use common::{docker, docker_hosts, image, path_of, wait_until, Node};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Seconds between two ISO timestamps of the API (naive UTC).
fn seconds_between(earlier: &Value, later: &Value) -> f64 {
    let parse = |value: &Value| {
        let text = value.as_str().unwrap();
        let (date, time) = text.split_once('T').unwrap();
        let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
        let parts: Vec<f64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
        let day: f64 = date.rsplit('-').next().unwrap().parse().unwrap();
        day * 86_400.0
            + parts[0] * 3600.0
            + parts[1] * 60.0
            + parts[2]
            + format!("0.{fraction}").parse::<f64>().unwrap()
    };
    parse(later) - parse(earlier)
}

/// `startAt` now and `startIn: "1s"` each produce exactly one execution, which ends `done`.
#[tokio::test]
async fn start_at_and_start_in_run_exactly_once() {
    let node = Node::start(&[]).await;
    for (task, schedule) in [
        ("start-at", json!({"startAt": now_seconds()})),
        ("start-in", json!({"startIn": "1s"})),
    ] {
        let mut body = json!({"image": image(), "command": "echo scheduled"});
        body.as_object_mut()
            .unwrap()
            .extend(schedule.as_object().unwrap().clone());
        let posted = node.post_job(task, body).await;
        assert_eq!(posted["executionId"], Value::Null);
        assert_eq!(posted["executionUrl"], Value::Null);
        let job_url = posted["jobUrl"].as_str().unwrap();
        let executions = node
            .wait_executions(job_url, 1, Duration::from_secs(20))
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let executions_later = node.executions(job_url).await;
        assert_eq!(executions_later.len(), 1, "{executions_later:?}");
        assert_eq!(executions[0]["status"], "done");
        assert_eq!(executions[0]["log"], "scheduled\n");
        assert_eq!(
            posted["queueJobId"], executions[0]["executionId"],
            "queueJobId names the firing"
        );
        let job = node.get_json(path_of(job_url)).await;
        assert_eq!(
            job["job"]["schedule"],
            Value::Null,
            "a one-off schedule is gone once fired"
        );
    }
}

/// A job scheduled far in the future and then PUT to run in 2 s runs once, with the new command.
#[tokio::test]
async fn a_put_replaces_the_pending_schedule() {
    let node = Node::start(&[]).await;
    let job_id = "6f1c2a52-1d0e-4b8e-9a57-0a2b6c1f3e10";
    let first = node
        .put_job(
            "put-task",
            job_id,
            json!({"image": image(), "command": "echo old", "startIn": "1h"}),
        )
        .await;
    assert_eq!(first["jobId"], job_id);
    let job = node
        .get_json(&format!("/tasks/put-task/jobs/{job_id}/"))
        .await;
    assert!(job["job"]["schedule"]["nextFireAt"].is_string(), "{job}");
    // Any textual UUID form is accepted and normalized.
    let second = node
        .put_job(
            "put-task",
            &job_id.replace('-', "").to_uppercase(),
            json!({"image": image(), "command": "echo new", "startIn": "2s"}),
        )
        .await;
    assert_eq!(second["jobId"], job_id);
    let job_url = second["jobUrl"].as_str().unwrap();
    let executions = node
        .wait_executions(job_url, 1, Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let executions_later = node.executions(job_url).await;
    assert_eq!(executions_later.len(), 1);
    assert_eq!(executions[0]["log"], "new\n");
    assert_eq!(
        node.get_json("/tasks/put-task/").await["jobs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// `cron: "* * * * *"` fires at two consecutive minute boundaries; the next firing time is shown
/// in the job details.
#[tokio::test]
async fn cron_fires_at_consecutive_minute_boundaries() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "cron-minutes",
            json!({"image": image(), "command": "echo tick", "cron": "* * * * *"}),
        )
        .await;
    let job_url = posted["jobUrl"].as_str().unwrap();
    let job = node.get_json(path_of(job_url)).await;
    let next = job["job"]["schedule"]["nextFireAt"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(next.ends_with(":00"), "fires on a minute boundary: {next}");
    assert_eq!(job["job"]["scheduled"], true);
    assert_eq!(job["job"]["metadata"]["cron"], "* * * * *");
    let executions = node
        .wait_executions(job_url, 2, Duration::from_secs(150))
        .await;
    let first = &executions[0]["metadata"]["scheduled_at"];
    let second = &executions[1]["metadata"]["scheduled_at"];
    assert!(first.as_str().unwrap().ends_with(":00") && second.as_str().unwrap().ends_with(":00"));
    assert_eq!(seconds_between(first, second), 60.0);
    let lag = seconds_between(first, &executions[0]["createdAt"]);
    assert!((0.0..1.0).contains(&lag), "firing lag {lag} s");
}

/// Stopping a cron job after its first firing cancels all later firings.
#[tokio::test]
async fn stopping_a_cron_job_stops_all_later_firings() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "cron-stop",
            json!({"image": image(), "command": "echo tick", "cron": "*/2 * * * * *"}),
        )
        .await;
    let job_url = posted["jobUrl"].as_str().unwrap().to_string();
    node.wait_executions(&job_url, 1, Duration::from_secs(20))
        .await;
    let (status, answer) = node.post_empty(&format!("{}stop", path_of(&job_url))).await;
    assert_eq!(status, 200);
    assert_eq!(answer["jobUrl"], job_url.as_str());
    let at_stop = node.executions(&job_url).await.len();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let later = node.executions(&job_url).await;
    assert_eq!(later.len(), at_stop, "no firing after the stop: {later:?}");
    let job = node.get_json(path_of(&job_url)).await;
    assert_eq!(job["job"]["schedule"], Value::Null);
    assert_eq!(job["job"]["scheduled"], false);
}

/// A failing job with `retries: 2` ends with exactly 3 failed executions spaced by the configured
/// back-off (500 ms × 2^n: 1 s, then 2 s); a success is never retried.
#[tokio::test]
async fn failures_are_retried_with_backoff_and_successes_are_not() {
    let node = Node::start(&[
        ("EXPONENTIAL_BACKOFF_MIN_MS", "500"),
        ("EXPONENTIAL_BACKOFF_FACTOR", "2"),
    ])
    .await;
    let posted = node
        .post_job(
            "retries",
            json!({"image": image(), "command": "bash -c 'exit 3'", "retries": 2}),
        )
        .await;
    let job_url = posted["jobUrl"].as_str().unwrap();
    let executions = node
        .wait_executions(job_url, 3, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let executions = {
        let later = node.executions(job_url).await;
        assert_eq!(later.len(), 3, "exactly three executions: {later:?}");
        let _ = executions;
        later
    };
    for execution in &executions {
        assert_eq!(execution["status"], "failed");
        assert_eq!(execution["exitCode"], 3);
    }
    let first_gap = seconds_between(&executions[0]["finishedAt"], &executions[1]["startedAt"]);
    let second_gap = seconds_between(&executions[1]["finishedAt"], &executions[2]["startedAt"]);
    assert!(
        (1.0..4.0).contains(&first_gap),
        "first retry after {first_gap} s"
    );
    assert!(
        (2.0..5.0).contains(&second_gap),
        "second retry after {second_gap} s"
    );
    let job = node.get_json(path_of(job_url)).await;
    assert_eq!(job["job"]["metadata"]["retry_count"], 2);

    let success = node
        .post_job(
            "retries-ok",
            json!({"image": image(), "command": "true", "retries": 3}),
        )
        .await;
    node.wait_finished(success["executionUrl"].as_str().unwrap())
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        node.executions(success["jobUrl"].as_str().unwrap())
            .await
            .len(),
        1
    );
}

/// `sleep 60` with `timeout: 2` ends `timedout` within ~3 s and its container is gone.
#[tokio::test]
async fn a_timeout_ends_the_execution_and_its_container() {
    let node = Node::start(&[]).await;
    let started = std::time::Instant::now();
    let posted = node
        .post_job(
            "timeouts",
            json!({"image": image(), "command": "sleep 60", "timeout": 2}),
        )
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(execution["status"], "timedout", "{execution}");
    assert!(elapsed < 4.0, "timed out after {elapsed} s");
    assert!(execution["error"]
        .as_str()
        .unwrap()
        .contains("timed out after 2 seconds"));
    let filter = format!(
        "label=fastlane.execution_id={}",
        posted["executionId"].as_str().unwrap()
    );
    wait_until(
        Duration::from_secs(15),
        "timed-out container removal",
        || async {
            docker(
                &docker_hosts()[0],
                &["ps", "-a", "--filter", &filter, "--format", "{{.ID}}"],
            )
            .trim()
            .is_empty()
        },
    )
    .await;
}

/// An execution due after its job's `expiration` ends `expired` and never runs.
#[tokio::test]
async fn an_expired_job_ends_expired() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "expired",
            json!({"image": image(), "command": "echo never", "expiration": now_seconds() - 10}),
        )
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "expired");
    assert_eq!(execution["log"], Value::Null);
    assert!(execution["error"]
        .as_str()
        .unwrap()
        .starts_with("Job was supposed to be done before"));
}

/// Stopping a running job stops its container and stores `stopped` with a message; retry answers
/// 200 with the stop JSON and runs a new execution; stopping one execution stops only it.
#[tokio::test]
async fn stop_and_retry_a_running_job() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "stop-retry",
            json!({"image": image(), "command": "sleep 60"}),
        )
        .await;
    let job_url = posted["jobUrl"].as_str().unwrap().to_string();
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(20), "running", || async {
        node.get_json(path_of(&execution_url)).await["execution"]["status"] == "running"
    })
    .await;
    let (status, answer) = node
        .post_empty(&format!("{}retry/", path_of(&job_url)))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["jobUrl"], job_url.as_str());
    let first = node.wait_finished(&execution_url).await;
    assert_eq!(first["status"], "stopped");
    let executions = node.executions(&job_url).await;
    assert_eq!(executions.len(), 2);
    let second_url = format!(
        "{}executions/{}/",
        job_url,
        executions[1]["executionId"].as_str().unwrap()
    );
    wait_until(Duration::from_secs(20), "retry running", || async {
        node.get_json(path_of(&second_url)).await["execution"]["status"] == "running"
    })
    .await;
    let (status, answer) = node
        .post_empty(&format!("{}stop", path_of(&second_url)))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["execution"]["url"], second_url.as_str());
    let second = node.wait_finished(&second_url).await;
    assert_eq!(second["status"], "stopped");
    assert!(second["error"]
        .as_str()
        .unwrap()
        .contains("User stopped job execution manually."));
    assert_eq!(
        node.post_empty("/tasks/stop-retry/jobs/00000000-0000-0000-0000-000000000000/stop/")
            .await
            .0,
        404
    );
}

/// The node killed with SIGKILL while a job runs: after a restart the execution ends `done` with
/// the right output, and the job has exactly one execution.
#[tokio::test]
async fn a_sigkilled_node_finishes_its_running_job_after_restart() {
    let mut node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "crash",
            json!({"image": image(), "command": "bash -c 'sleep 3; echo finished'"}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(20), "running", || async {
        node.get_json(path_of(&execution_url)).await["execution"]["status"] == "running"
    })
    .await;
    node.kill();
    node.start_again().await;
    let execution = node.wait_finished(&execution_url).await;
    assert_eq!(execution["status"], "done", "{execution}");
    assert_eq!(execution["log"], "finished\n");
    assert_eq!(
        node.executions(posted["jobUrl"].as_str().unwrap())
            .await
            .len(),
        1
    );
}

/// A job scheduled before a SIGKILL still fires after the restart.
#[tokio::test]
async fn a_schedule_survives_a_sigkill() {
    let mut node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "crash-schedule",
            json!({"image": image(), "command": "echo later", "startIn": "3s"}),
        )
        .await;
    node.kill();
    node.start_again().await;
    let executions = node
        .wait_executions(
            posted["jobUrl"].as_str().unwrap(),
            1,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0]["log"], "later\n");
}

/// SIGTERM while a job runs: the node exits 0, and the job completes after the restart.
#[tokio::test]
async fn sigterm_exits_cleanly_and_the_job_completes_after_restart() {
    let mut node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "sigterm",
            json!({"image": image(), "command": "bash -c 'sleep 2; echo survived'"}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(20), "running", || async {
        node.get_json(path_of(&execution_url)).await["execution"]["status"] == "running"
    })
    .await;
    let started = std::time::Instant::now();
    let status = node.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(15));
    node.start_again().await;
    let execution = node.wait_finished(&execution_url).await;
    assert_eq!(execution["status"], "done");
    assert_eq!(execution["log"], "survived\n");
}

/// `overlap: forbid` (the default for cron): a firing while the previous execution still runs is
/// skipped and recorded on the job's schedule.
#[tokio::test]
async fn overlapping_cron_firings_are_skipped_and_recorded() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "overlap",
            json!({"image": image(), "command": "sleep 5", "cron": "*/2 * * * * *"}),
        )
        .await;
    let job_url = posted["jobUrl"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(30), "a skipped firing", || async {
        node.get_json(path_of(&job_url)).await["job"]["schedule"]["missedCount"].as_u64() >= Some(1)
    })
    .await;
    let job = node.get_json(path_of(&job_url)).await;
    let missed = &job["job"]["schedule"]["missed"][0];
    assert!(
        missed["reason"].as_str().unwrap().contains("overlap"),
        "{missed}"
    );
    let running = job["job"]["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| ["enqueued", "pulling", "running"].contains(&e["status"].as_str().unwrap()))
        .count();
    assert!(running <= 1, "never two at once: {job}");
    node.post_empty(&format!("{}stop/", path_of(&job_url)))
        .await;
}

/// Firings missed while the node was down follow `misfire`: with `latest` the most recent one
/// runs after the restart and the older ones are recorded as missed.
#[tokio::test]
async fn firings_missed_while_down_are_recorded() {
    let mut node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "misfire",
            json!({"image": image(), "command": "echo caught-up", "cron": "*/5 * * * * *", "misfire": "latest"}),
        )
        .await;
    let job_url = posted["jobUrl"].as_str().unwrap().to_string();
    node.kill();
    tokio::time::sleep(Duration::from_secs(22)).await;
    node.start_again().await;
    wait_until(
        Duration::from_secs(20),
        "missed firings recorded",
        || async {
            node.get_json(path_of(&job_url)).await["job"]["schedule"]["missedCount"].as_u64()
                >= Some(1)
        },
    )
    .await;
    let job = node.get_json(path_of(&job_url)).await;
    let missed = job["job"]["schedule"]["missed"].as_array().unwrap();
    assert!(
        missed
            .iter()
            .any(|m| m["reason"].as_str().unwrap().contains("down")),
        "{job}"
    );
    node.wait_executions(&job_url, 1, Duration::from_secs(20))
        .await;
    node.post_empty(&format!("{}stop/", path_of(&job_url)))
        .await;
}

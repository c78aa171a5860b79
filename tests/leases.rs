//! End-to-end: leases and the node's ownership of its work, against real Docker engines.
//!
//! - A node paused (SIGSTOP) past its lease keeps the job it runs: on the embedded backend the
//!   re-lease goes to the running JobActor; on Redis + MongoDB another node takes the message
//!   over, fenced, and the paused one leaves it when it resumes. Either way the job ran once
//!   (one container created, counted from the engine's events) and ended `done` with its output.
//! - No head-of-line blocking: hundreds of jobs waiting for one task's `maxConcurrent` slot do
//!   not hold back another task's job.
//! - One node per data directory: a second node started on it exits at once, non-zero.

mod common;

use common::{docker, docker_hosts, image, path_of, wait_until, Node};
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh (or source the env of scripts/testenv.sh up)")
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signal(node: &Node, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(node.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

/// Containers created for `execution_id` on `host` since `since` (unix seconds), from the
/// engine's event log: a container removed since still counts.
fn creations(host: &str, execution_id: &str, since: u64) -> usize {
    docker(
        host,
        &[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &(unix_now() + 1).to_string(),
            "--filter",
            "event=create",
            "--filter",
            &format!("label=fastlane.execution_id={execution_id}"),
            "--format",
            "{{.ID}}",
        ],
    )
    .lines()
    .filter(|line| !line.trim().is_empty())
    .count()
}

/// A job posted by [`post_running_job`].
struct Posted {
    execution_url: String,
    execution_id: String,
    job_url: String,
    /// Unix seconds just before the post, for the engine's event log.
    since: u64,
}

/// Posts a job that runs for 20 s and then prints `once`, and waits until it runs.
async fn post_running_job(node: &Node) -> Posted {
    let since = unix_now().saturating_sub(1);
    let posted = node
        .post_job(
            "paused-lease",
            json!({"image": image(), "command": "sh -c 'sleep 20; echo once'"}),
        )
        .await;
    let text = |key: &str| posted[key].as_str().unwrap().to_string();
    let posted = Posted {
        execution_url: text("executionUrl"),
        execution_id: text("executionId"),
        job_url: text("jobUrl"),
        since,
    };
    wait_until(Duration::from_secs(30), "the job to run", || async {
        node.get_json(path_of(&posted.execution_url)).await["execution"]["status"] == "running"
    })
    .await;
    posted
}

/// Waits (90 s at most) until the job ended, asking `observer`; checks it ended `done` with
/// its output, ran in one container (the engines' events) and had one execution, and that no
/// message was dead-lettered.
async fn assert_ran_once(observer: &Node, posted: &Posted, logs: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let execution = loop {
        let execution =
            observer.get_json(path_of(&posted.execution_url)).await["execution"].clone();
        if !["enqueued", "pulling", "running"].contains(&execution["status"].as_str().unwrap()) {
            break execution;
        }
        assert!(Instant::now() < deadline, "never finished: {execution}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(execution["status"], "done", "{execution}\n{}", logs());
    assert_eq!(execution["log"], "once\n");
    let created: usize = docker_hosts()
        .iter()
        .map(|host| creations(host, &posted.execution_id, posted.since))
        .sum();
    assert_eq!(created, 1, "one container for the execution\n{}", logs());
    let executions = observer.executions(&posted.job_url).await;
    assert_eq!(executions.len(), 1, "{executions:?}");
    // Give a resumed node time to have looked at everything again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = observer.get_json("/status/").await;
    assert_eq!(status["queues"]["deadLetter"]["length"], 0, "{status}");
}

/// Embedded backend: the node paused for 15 s with a 5 s lease. On resume its poller leases
/// the message again (the lease expired) and the running JobActor keeps it — or the renewal
/// comes first and extends the lease: either way no second JobActor, no failed delivery
/// treated as a crash, and the job ends `done` once.
#[tokio::test]
async fn a_paused_node_keeps_its_running_job() {
    let node = Node::start(&[("QUEUE_LEASE_SECONDS", "5")]).await;
    let posted = post_running_job(&node).await;
    signal(&node, "STOP");
    tokio::time::sleep(Duration::from_secs(15)).await;
    signal(&node, "CONT");
    assert_ran_once(&node, &posted, &|| node.log()).await;
    let log = node.log();
    eprintln!(
        "re-leased while running: {}",
        log.contains("leased again while running here")
    );
    assert!(!log.contains("job actor failed"), "{log}");
    assert!(!log.contains("could not start job actor"), "{log}");
}

/// Redis + MongoDB, two nodes: the node running a job is paused (5 s leases). The other node
/// takes the message over when the lease expires, claims the execution and re-attaches to the
/// running container; the paused node, resumed, finds its lease gone (or its write refused)
/// and leaves the execution without touching the container. One container, `done`, once.
#[tokio::test]
async fn a_paused_node_loses_its_job_to_another_node_which_finishes_it_once() {
    let name = format!("lease{}", Uuid::new_v4().simple());
    let mongo = env("FASTLANE_TEST_SECANTUS_URL");
    let base = mongo
        .rsplit_once('/')
        .map_or(mongo.as_str(), |(base, _)| base);
    let farms = json!([{"match": "", "hosts": [docker_hosts()[0]], "maxRunning": 4}]).to_string();
    let vars = [
        ("REDIS_URL", env("FASTLANE_TEST_REDIS_URL")),
        ("REDIS_KEY_PREFIX", name.clone()),
        ("MONGODB_URL", format!("{base}/{name}")),
        ("DOCKER_HOSTS", farms),
        ("QUEUE_LEASE_SECONDS", "5".to_string()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let first = Node::start(&vars).await;
    // The second node starts after the post, so the first one leases the message.
    let posted = post_running_job(&first).await;
    let second = Node::start(&vars).await;
    signal(&first, "STOP");
    wait_until(
        Duration::from_secs(30),
        "the other node to take over",
        || async { second.log().contains("re-attaching to running container") },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    signal(&first, "CONT");
    let logs = || format!("{}\n{}", first.log(), second.log());
    assert_ran_once(&second, &posted, &logs).await;
    wait_until(
        Duration::from_secs(20),
        "the paused node to leave",
        || async {
            let log = first.log();
            log.contains("lease lost") || log.contains("taken over by another runner")
        },
    )
    .await;
    assert!(!first.log().contains("job actor failed"), "{}", first.log());
}

/// A node SIGKILLed while its executions hold every slot of the farm, started again at once
/// (within the slot lease): the executions it leases again still hold their slots under their
/// message ids (the lease renewals keep them), so the gate's counts say "full" — yet they must
/// finish and let the later jobs run, on the embedded and the shared backends. (Running ones are
/// re-attached; ones caught between placement and start go through the gate again, which now
/// asks the backend for each new waiter instead of trusting the counts — that stall was seen in
/// a chaos run, with executions left `pulling` on an engine killed under them.)
#[tokio::test]
async fn a_node_restarted_within_the_slot_lease_runs_what_held_its_slots() {
    for shared in [false, true] {
        let name = format!("relaunch{}", Uuid::new_v4().simple());
        let farms =
            json!([{"match": "", "hosts": [docker_hosts()[0]], "maxRunning": 2}]).to_string();
        let mut vars = vec![
            ("DOCKER_HOSTS", farms),
            ("QUEUE_LEASE_SECONDS", "5".to_string()),
        ];
        if shared {
            let mongo = env("FASTLANE_TEST_SECANTUS_URL");
            let base = mongo
                .rsplit_once('/')
                .map_or(mongo.as_str(), |(base, _)| base)
                .to_string();
            vars.extend([
                ("REDIS_URL", env("FASTLANE_TEST_REDIS_URL")),
                ("REDIS_KEY_PREFIX", name.clone()),
                ("MONGODB_URL", format!("{base}/{name}")),
            ]);
        }
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut node = Node::start(&vars).await;
        let mut holding = Vec::new();
        for _ in 0..2 {
            holding.push(
                node.post_job(
                    "relaunch",
                    json!({"image": image(), "command": "sh -c 'sleep 4; echo held'"}),
                )
                .await,
            );
        }
        wait_until(Duration::from_secs(30), "both slots taken", || async {
            let mut running = 0;
            for posted in &holding {
                let details = node
                    .get_json(path_of(posted["executionUrl"].as_str().unwrap()))
                    .await;
                if details["execution"]["status"] == "running" {
                    running += 1;
                }
            }
            running == 2
        })
        .await;
        node.kill();
        node.start_again().await;
        let later = node
            .post_job(
                "relaunch",
                json!({"image": image(), "command": "echo later"}),
            )
            .await;
        for posted in holding.iter().chain([&later]) {
            let execution = node
                .wait_finished(posted["executionUrl"].as_str().unwrap())
                .await;
            assert_eq!(
                execution["status"],
                "done",
                "shared {shared}: {execution}\n{}",
                node.log()
            );
        }
    }
}

/// 300 jobs of one task with `maxConcurrent: 1` — more than the node leases at once (the
/// farm's `maxRunning` plus 256) — then one job of another task: that job runs within
/// seconds, not after the 300. The waiting ones are given back to the queue, bounded.
#[tokio::test]
async fn jobs_waiting_for_a_full_task_do_not_block_another_task() {
    let node = Node::start(&[]).await;
    let client = reqwest::Client::new();
    let body = json!({"image": image(), "command": "sleep 1", "maxConcurrent": 1});
    let mut posts = Vec::new();
    for _ in 0..300 {
        let request = client.post(node.url("/tasks/hol-full/")).json(&body).send();
        posts.push(request);
        if posts.len() == 20 {
            for answer in futures_util::future::join_all(posts.drain(..)).await {
                assert_eq!(answer.unwrap().status(), 200);
            }
        }
    }
    for answer in futures_util::future::join_all(posts).await {
        assert_eq!(answer.unwrap().status(), 200);
    }
    let posted_at = Instant::now();
    let other = node
        .post_job(
            "hol-other",
            json!({"image": image(), "command": "echo other"}),
        )
        .await;
    let execution = node
        .wait_finished(other["executionUrl"].as_str().unwrap())
        .await;
    let waited = posted_at.elapsed();
    assert_eq!(execution["status"], "done", "{execution}");
    assert_eq!(execution["log"], "other\n");
    assert!(
        waited < Duration::from_secs(45),
        "the other task's job waited {waited:?} behind the full task"
    );
    eprintln!("the other task's job finished {waited:?} after it was posted");
    // The full task still runs one at a time, and its jobs are given back, not failed.
    let status = node.get_json("/status/").await;
    assert_eq!(status["queues"]["deadLetter"]["length"], 0, "{status}");
}

/// A second node started on the data directory of a running one exits non-zero within
/// seconds, saying why; the first one keeps serving.
#[tokio::test]
async fn a_second_node_on_the_same_data_directory_exits() {
    let node = Node::start(&[]).await;
    let farms = json!([{"match": "", "hosts": [docker_hosts()[0]], "maxRunning": 2}]).to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let mut second = Command::new(env!("CARGO_BIN_EXE_fastlane-node"))
        .args(["start", "-b", "127.0.0.1", "-p", &port.to_string()])
        .env("DATA_DIR", &node.data_dir)
        .env("DOCKER_HOSTS", farms)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = second.kill();
            panic!("the second node did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = second.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success());
    assert!(
        stderr.contains("in use by another fastlane-node"),
        "a clear message: {stderr}"
    );
    assert_eq!(node.get("/healthcheck").await.status(), 200);
    let consumer = std::fs::read_to_string(node.data_dir.join("consumer-id")).unwrap();
    let node_id = std::fs::read_to_string(node.data_dir.join("node-id")).unwrap();
    assert!(
        consumer.starts_with(&format!("{}.", node_id.trim())),
        "the consumer id is the node id and a suffix: {consumer}"
    );
    let _: Value = node.get_json("/status/").await;
}

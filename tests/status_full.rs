//! End-to-end: `/status/` is complete (the original's keys: `jobs.scheduled`, `queues.monitor`,
//! `queues.notify`, `queues.webhooks`) and fresh (a Docker engine that died shows unavailable
//! within 5 s, whatever the circuit breaker's settings).

mod common;

use common::{docker_hosts, image, path_of, wait_until, Engine, Node};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A cron job appears in `jobs.scheduled` with the original's fields, its env values and
/// webhook secrets redacted, and is counted in `jobs.scheduledCount`; a stopped one leaves.
#[tokio::test]
async fn a_cron_job_is_listed_in_jobs_scheduled() {
    let node = Node::start(&[]).await;
    let task = "status-cron";
    let answer = node
        .post_job(
            task,
            json!({"image": image(), "command": "echo hi", "cron": "0 0 1 1 *",
                   "envs": {"API_KEY": "s3cr3t", "COLOR": "blue"}, "metadata": {"owner": "me"}}),
        )
        .await;
    let job_id = answer["jobId"].as_str().unwrap();
    let job_url = answer["jobUrl"].as_str().unwrap();
    let status = node.get_json("/status/").await;
    let scheduled = status["jobs"]["scheduled"].as_array().unwrap();
    assert_eq!(scheduled.len(), 1, "{status}");
    let listed = &scheduled[0];
    assert_eq!(listed["id"], job_id);
    assert_eq!(listed["url"], job_url);
    assert_eq!(listed["stopUrl"], format!("{job_url}stop/"));
    assert_eq!(listed["task"]["id"], task);
    assert_eq!(listed["task"]["url"], answer["taskUrl"]);
    assert_eq!(listed["image"], image());
    assert_eq!(listed["command"], "echo hi");
    assert_eq!(listed["executionCount"], 0);
    assert!(listed["nextScheduledAt"]
        .as_str()
        .is_some_and(|next| next.contains("-01-01T00:00:00")));
    assert_eq!(listed["metadata"]["envs"]["API_KEY"], "***");
    assert_eq!(listed["metadata"]["envs"]["COLOR"], "blue");
    assert_eq!(listed["metadata"]["custom"]["owner"], "me");
    assert!(listed.get("taskId").is_none() && listed.get("executions").is_none());
    assert_eq!(status["jobs"]["scheduledCount"], 1);
    assert_eq!(status["queues"]["scheduled"]["length"], 1);

    let (code, _) = node.post_empty(&format!("{}stop/", path_of(job_url))).await;
    assert_eq!(code, 200);
    let status = node.get_json("/status/").await;
    assert_eq!(status["jobs"]["scheduled"], json!([]), "{status}");
    assert_eq!(status["jobs"]["scheduledCount"], 0);
}

/// `queues.monitor` counts the executions being run and watched, `queues.notify` the e-mails
/// and `queues.webhooks` the webhook calls still owed (the SMTP server and the receiver do not
/// answer; the hook's next attempt is 10 minutes away).
#[tokio::test]
async fn queue_keys_count_what_is_watched_and_owed() {
    let smtp_port = closed_port().to_string();
    let node = Node::start(&[
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", &smtp_port),
        ("SMTP_FROM", "fastlane@example.com"),
        ("WEBHOOKS_ALLOW_NETWORKS", "127.0.0.0/8"),
        ("WEBHOOKS_EXPONENTIAL_BACKOFF_MIN_MS", "600000"),
    ])
    .await;
    let queue_length = |status: &Value, queue: &str| status["queues"][queue]["length"].as_u64();
    let status = node.get_json("/status/").await;
    for queue in ["monitor", "notify", "webhooks", "jobs", "scheduled"] {
        assert_eq!(queue_length(&status, queue), Some(0), "{queue}: {status}");
    }

    let running = node
        .post_job(
            "status-queues",
            json!({"image": image(), "command": "sleep 60"}),
        )
        .await;
    wait_until(Duration::from_secs(60), "monitor length 1", || async {
        queue_length(&node.get_json("/status/").await, "monitor") == Some(1)
    })
    .await;
    let (code, _) = node
        .post_empty(&format!(
            "{}stop/",
            path_of(running["jobUrl"].as_str().unwrap())
        ))
        .await;
    assert_eq!(code, 200);
    wait_until(Duration::from_secs(30), "monitor length 0", || async {
        queue_length(&node.get_json("/status/").await, "monitor") == Some(0)
    })
    .await;

    let hook = format!("http://127.0.0.1:{}/hook", closed_port());
    let failing = node
        .post_job(
            "status-queues",
            json!({"image": image(), "command": "sh -c 'exit 1'",
                   "notify": {"fails": ["ops@example.com", "dev@example.com"]},
                   "webhooks": {"fails": [{"url": hook, "retries": 3}]}}),
        )
        .await;
    node.wait_finished(failing["executionUrl"].as_str().unwrap())
        .await;
    // The e-mails are retried for about 15 s (1, 2, 4, 8 s apart), the hook in 10 minutes.
    wait_until(
        Duration::from_secs(10),
        "2 e-mails and 1 webhook owed",
        || async {
            let status = node.get_json("/status/").await;
            queue_length(&status, "notify") == Some(2)
                && queue_length(&status, "webhooks") == Some(1)
        },
    )
    .await;
}

/// Of two engines, the one killed shows `available: false` within 5 s even though its circuit
/// breaker would need 100 faults to open; the other stays available.
#[tokio::test]
async fn a_dead_engine_is_unavailable_within_5_seconds() {
    let mut engine = Engine::start();
    let shared = docker_hosts()[0].clone();
    let farms = json!([{"match": "", "hosts": [shared, engine.address], "maxRunning": 4}]);
    let node = Node::start(&[
        ("DOCKER_HOSTS", &farms.to_string()),
        ("DOCKER_CIRCUIT_BREAKER_MAX_FAILS", "100"),
    ])
    .await;
    let available = |status: &Value, address: &str| {
        status["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|host| format!("{}:{}", host["host"].as_str().unwrap(), host["port"]) == address)
            .map(|host| host["available"] == true)
    };
    wait_until(
        Duration::from_secs(20),
        "both engines available",
        || async {
            let status = node.get_json("/status/").await;
            available(&status, &shared) == Some(true)
                && available(&status, &engine.address) == Some(true)
        },
    )
    .await;

    engine.kill();
    let killed = Instant::now();
    let address = engine.address.clone();
    wait_until(
        Duration::from_secs(5),
        "the killed engine to show unavailable",
        || async { available(&node.get_json("/status/").await, &address) == Some(false) },
    )
    .await;
    let elapsed = killed.elapsed();
    let status = node.get_json("/status/").await;
    assert_eq!(available(&status, &shared), Some(true), "{status}");
    let dead = status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|host| host["available"] == false)
        .unwrap();
    assert!(dead["error"].is_string(), "{dead}");
    assert_eq!(dead["circuit"], "closed", "{dead}");
    eprintln!("unavailable after {} ms", elapsed.as_millis());
}

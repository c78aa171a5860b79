//! End-to-end: work that no farm of `DOCKER_HOSTS` can run is refused at the door (400), and
//! work queued under an earlier configuration ends `failed`, notified and acknowledged, instead
//! of being released and leased again forever.

mod common;

use common::{docker_hosts, image, path_of, wait_until, Node};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

fn video_farm_only() -> String {
    json!([{"match": "video-", "hosts": [docker_hosts()[0]], "maxRunning": 2}]).to_string()
}

/// Sends `method` with a JSON body; returns status and answer.
async fn send(node: &Node, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method.clone(), node.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let response = common::openapi::checked(method.as_str(), response).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A POST and a PUT of a job whose task matches no farm get a 400 whose error JSON names the
/// task; nothing is stored; a task of the farm is accepted and runs.
#[tokio::test]
async fn jobs_no_farm_runs_are_refused_with_400() {
    let node = Node::start(&[("DOCKER_HOSTS", &video_farm_only())]).await;
    let body = json!({"image": image(), "command": "echo never"});
    let (status, answer) = send(
        &node,
        reqwest::Method::POST,
        "/tasks/report-1/",
        body.clone(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let error = answer["error"].as_str().expect("error JSON");
    assert!(
        error.contains("report-1") && error.contains("DOCKER_HOSTS"),
        "{error}"
    );
    let (status, answer) = send(
        &node,
        reqwest::Method::PUT,
        &format!("/tasks/report-2/jobs/{}/", uuid::Uuid::new_v4()),
        body.clone(),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap_or("").contains("report-2"),
        "{answer}"
    );
    for task in ["report-1", "report-2"] {
        assert_eq!(node.get(&format!("/tasks/{task}/")).await.status(), 404);
    }
    let posted = node
        .post_job(
            "video-1",
            json!({"image": image(), "command": "echo placed"}),
        )
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{execution}");
}

/// A webhook receiver on loopback that records the path of every request and answers 200
/// (one request per connection: it reads the head and the `Content-Length` body, then closes).
async fn hook_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let paths = Arc::new(Mutex::new(Vec::new()));
    let recorded = paths.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut head = Vec::new();
                let mut line = String::new();
                while reader.read_line(&mut line).await.unwrap_or(0) > 2 {
                    head.push(std::mem::take(&mut line));
                }
                let length = head
                    .iter()
                    .find_map(|header| {
                        let (name, value) = header.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body).await;
                if let Some(path) = head.first().and_then(|line| line.split(' ').nth(1)) {
                    recorded.lock().unwrap().push(path.to_string());
                }
                let _ = reader
                    .into_inner()
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (base, paths)
}

/// A job queued while its task had a farm (its only host blacklisted, so it waits), then the
/// node restarted over the same `DATA_DIR` with farms that no longer match the task: the
/// execution ends `failed` with an error saying no farm matches, its `fails` and `finishes`
/// webhooks are sent, and its message is acknowledged (nothing queued, leased or dead).
#[tokio::test]
async fn queued_work_the_new_configuration_cannot_place_fails_and_is_notified() {
    let (base, hits) = hook_receiver().await;
    let host = docker_hosts()[0].clone();
    let mut node = Node::start(&[("WEBHOOKS_ALLOW_NETWORKS", "127.0.0.0/8")]).await;
    node.set_blacklisted(&host, true).await;
    let posted = node
        .post_job(
            "report-moved",
            json!({"image": image(), "command": "echo never",
                   "webhooks": {"fails": [{"url": format!("{base}/fails")}],
                                "finishes": [{"url": format!("{base}/finishes")}],
                                "succeeds": [{"url": format!("{base}/succeeds")}]}}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    // Leased at least once and released (no host to place it on).
    wait_until(Duration::from_secs(20), "a placement attempt", || async {
        node.log().contains("no docker host available")
    })
    .await;
    let status = node.terminate();
    assert!(status.success(), "{status}");
    node.set_env("DOCKER_HOSTS", &video_farm_only());
    node.start_again().await;
    let execution = node.wait_finished(&execution_url).await;
    assert_eq!(execution["status"], "failed", "{execution}");
    let error = execution["error"].as_str().unwrap_or("");
    assert!(
        error.contains("No farm of DOCKER_HOSTS matches task 'report-moved'"),
        "{execution}"
    );
    wait_until(
        Duration::from_secs(30),
        "fails and finishes webhooks",
        || async {
            let hits = hits.lock().unwrap();
            ["/fails", "/finishes"]
                .iter()
                .all(|path| hits.iter().any(|hit| hit == path))
        },
    )
    .await;
    // The message is gone for good: nothing ready, delayed, leased or dead.
    wait_until(
        Duration::from_secs(20),
        "the message acknowledged",
        || async {
            let status = node.get_json("/status/").await;
            let queues = &status["queues"];
            ["jobs", "delayed", "running", "deadLetter"]
                .iter()
                .all(|queue| queues[*queue]["length"] == 0)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hits = hits.lock().unwrap().clone();
    assert!(hits.iter().all(|path| path != "/succeeds"), "{hits:?}");
    assert_eq!(
        hits.iter().filter(|path| *path == "/fails").count(),
        1,
        "{hits:?}"
    );
    assert_eq!(
        node.get_json(path_of(&execution_url)).await["execution"]["status"],
        "failed"
    );
}

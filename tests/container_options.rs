//! End-to-end: what a job may ask of its container (issue 15, point 5) — resources, labels,
//! working directory, user, stop grace period — reach Docker as asked, a farm's `defaults` fill
//! what a job leaves out and its `limits` refuse more, and a job that runs out of memory ends
//! `failed` saying so.

mod common;

use common::{docker, docker_hosts, image, path_of, wait_until, Node};
use serde_json::{json, Value};
use std::time::Duration;

fn container_of(execution_url: &str) -> String {
    let id = execution_url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap();
    format!("fastlane-job-{id}")
}

/// `docker inspect` of a container, parsed.
fn inspect(name: &str) -> Value {
    let text = docker(&docker_hosts()[0], &["inspect", name]);
    serde_json::from_str::<Value>(&text).unwrap()[0].clone()
}

async fn wait_running(node: &Node, execution_url: &str) {
    wait_until(Duration::from_secs(60), "running", || async {
        node.get_json(path_of(execution_url)).await["execution"]["status"] == "running"
    })
    .await;
}

#[tokio::test]
async fn options_reach_docker_as_asked() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "container-options",
            json!({
                "image": image(),
                "command": "sh -c 'pwd; id -u; id -g; sleep 600'",
                "resources": {"cpus": 0.5, "memoryMB": 64, "pidsLimit": 50},
                "labels": {"team": "video", "fastlane.task_id": "not-a-takeover"},
                "workingDir": "/tmp",
                "user": "1000:1001",
            }),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    wait_running(&node, &execution_url).await;
    let container = inspect(&container_of(&execution_url));
    let host_config = &container["HostConfig"];
    assert_eq!(host_config["NanoCpus"], 500_000_000);
    assert_eq!(host_config["Memory"], 64 * 1024 * 1024);
    assert_eq!(host_config["PidsLimit"], 50);
    let config = &container["Config"];
    assert_eq!(config["WorkingDir"], "/tmp");
    assert_eq!(config["User"], "1000:1001");
    let labels = &config["Labels"];
    assert_eq!(labels["fastlane.label.team"], "video");
    // A job's label never stands in for fastlane's own.
    assert_eq!(labels["fastlane.label.fastlane.task_id"], "not-a-takeover");
    assert_eq!(labels["fastlane.task_id"], "container-options");
    // The job shows what it asked for.
    let job = node
        .get_json(path_of(posted["jobUrl"].as_str().unwrap()))
        .await;
    let shown = &job["job"]["metadata"]["container"];
    assert_eq!(shown["resources"]["memoryMB"], 64, "{job}");
    assert_eq!(shown["user"], "1000:1001");
    node.post_empty(&format!("{}stop/", path_of(&execution_url)))
        .await;
    let execution = node.wait_finished(&execution_url).await;
    assert_eq!(execution["status"], "stopped");
    wait_until(Duration::from_secs(60), "the output", || async {
        let details = node.get_json(path_of(&execution_url)).await;
        details["execution"]["log"] == "/tmp\n1000\n1001\n"
    })
    .await;
}

#[tokio::test]
async fn farm_defaults_fill_and_farm_limits_refuse() {
    let farms = json!([{
        "match": "", "hosts": [docker_hosts()[0]], "maxRunning": 8,
        "defaults": {"memoryMB": 128, "pidsLimit": 64},
        "limits": {"memoryMB": 256, "cpus": 1},
    }])
    .to_string();
    let node = Node::start(&[("DOCKER_HOSTS", &farms)]).await;
    let posted = node
        .post_job(
            "farm-defaults",
            json!({"image": image(), "command": "sleep 600", "resources": {"pidsLimit": 10}}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    wait_running(&node, &execution_url).await;
    let host_config = inspect(&container_of(&execution_url))["HostConfig"].clone();
    assert_eq!(
        host_config["Memory"],
        128 * 1024 * 1024,
        "the farm's default"
    );
    assert_eq!(host_config["PidsLimit"], 10, "the job's own");
    assert_eq!(host_config["NanoCpus"], 0, "no default, no limit");
    node.post_empty(&format!("{}stop/", path_of(&execution_url)))
        .await;

    for resources in [json!({"memoryMB": 512}), json!({"cpus": 1.5})] {
        let response = reqwest::Client::new()
            .post(node.url("/tasks/farm-limits/"))
            .json(&json!({"image": image(), "command": "echo no", "resources": resources}))
            .send()
            .await
            .unwrap();
        let response = common::openapi::checked("POST", response).await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("above this farm's limit"),
            "{body}"
        );
    }
    // Nothing was written for the refused requests.
    assert_eq!(node.get("/tasks/farm-limits/").await.status(), 404);

    // A malformed farm is refused at start.
    let bad = json!([{"hosts": [docker_hosts()[0]], "defaults": {"memoryMB": 512}, "limits": {"memoryMB": 256}}]);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fastlane-node"))
        .args(["start", "-b", "127.0.0.1", "-p", "1"])
        .env("DATA_DIR", tempfile::tempdir().unwrap().path())
        .env("DOCKER_HOSTS", bad.to_string())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("'defaults' exceed 'limits'"));
}

#[tokio::test]
async fn bad_options_are_refused_before_anything_is_written() {
    let node = Node::start(&[]).await;
    for (body, expected) in [
        (
            json!({"resources": {"memoryMB": "lots"}}),
            "resources.memoryMB",
        ),
        (json!({"resources": {"cpus": -1}}), "resources.cpus"),
        (json!({"labels": {"bad key": "x"}}), "label"),
        (json!({"workingDir": "tmp"}), "absolute"),
        (json!({"user": "root;id"}), "'user'"),
        (
            json!({"stopGracePeriodSeconds": "soon"}),
            "stopGracePeriodSeconds",
        ),
    ] {
        let mut request = body.clone();
        request["image"] = json!(image());
        request["command"] = json!("echo no");
        let response = reqwest::Client::new()
            .post(node.url("/tasks/bad-options/"))
            .json(&request)
            .send()
            .await
            .unwrap();
        let response = common::openapi::checked("POST", response).await;
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer["error"].as_str().unwrap().contains(expected),
            "{answer}"
        );
    }
    assert_eq!(node.get("/tasks/bad-options/").await.status(), 404);
}

/// A job that goes over its memory limit is killed by the kernel: it ends `failed` with an error
/// saying it ran out of memory. Engines on cgroup v2 hosts do not always report `OOMKilled`; the
/// node then says the SIGKILL under a memory limit most likely was one (both name OOMKilled).
#[tokio::test]
async fn a_job_out_of_memory_fails_saying_so() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "out-of-memory",
            json!({
                "image": image(),
                "command": "sh -c 'x=$(head -c 300000000 /dev/zero | tr \"\\\\0\" a); echo ${#x}'",
                "resources": {"memoryMB": 16},
            }),
        )
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "failed", "{execution}");
    let error = execution["error"].as_str().unwrap();
    assert!(error.contains("OOMKilled"), "{execution}");
    assert!(error.contains("resources.memoryMB"), "{execution}");
}

/// `stopGracePeriodSeconds` holds the SIGKILL back: a container that ignores SIGTERM is still
/// running well past the default 5 s after a stop.
#[tokio::test]
async fn the_stop_grace_period_is_the_jobs() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "stop-grace",
            json!({"image": image(), "command": "sleep 600", "stopGracePeriodSeconds": 40}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    wait_running(&node, &execution_url).await;
    node.post_empty(&format!("{}stop/", path_of(&execution_url)))
        .await;
    // PID 1 ignores SIGTERM: only the SIGKILL after the grace period ends it.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let name = container_of(&execution_url);
    assert_eq!(
        inspect(&name)["State"]["Running"],
        true,
        "killed before its grace period"
    );
    docker(&docker_hosts()[0], &["rm", "-f", &name]);
}

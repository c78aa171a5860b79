//! End-to-end: a farm of several real Docker engines: routing by task pattern, exact
//! `maxRunning`, blacklisting, a host dying and coming back, leftovers pruned.

mod common;

use common::{docker_hosts, image, path_of, running_containers, wait_until, Engine, Node};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn farms(farms: Value) -> String {
    farms.to_string()
}

/// `host:port` of the Docker host an execution ran on.
fn ran_on(execution: &Value) -> String {
    format!(
        "{}:{}",
        execution["metadata"]["docker_host"].as_str().unwrap(),
        execution["metadata"]["docker_port"]
    )
}

/// Two farms routed by regex: each job lands on its farm's host.
#[tokio::test]
async fn farms_route_by_task_pattern() {
    let hosts = docker_hosts();
    let config = farms(json!([
        {"match": "video-", "hosts": [hosts[0]], "maxRunning": 2},
        {"match": "", "hosts": [hosts[1]], "maxRunning": 2},
    ]));
    let node = Node::start(&[("DOCKER_HOSTS", &config)]).await;
    for (task, expected) in [
        ("video-encode", &hosts[0]),
        ("report-video-", &hosts[1]),
        ("video-thumbs", &hosts[0]),
    ] {
        let posted = node
            .post_job(task, json!({"image": image(), "command": "echo routed"}))
            .await;
        let execution = node
            .wait_finished(posted["executionUrl"].as_str().unwrap())
            .await;
        assert_eq!(execution["status"], "done");
        assert_eq!(&ran_on(&execution), expected, "{task}");
    }
}

/// With `maxRunning: 2` over two hosts, six 3-second jobs never run more than two at once
/// (sampled from the engines), and all six finish.
#[tokio::test]
async fn max_running_is_exact() {
    let hosts = docker_hosts();
    let config = farms(json!([{"match": "", "hosts": [hosts[0], hosts[1]], "maxRunning": 2}]));
    let node = Node::start(&[("DOCKER_HOSTS", &config)]).await;
    let mut executions = Vec::new();
    for _ in 0..6 {
        let posted = node
            .post_job(
                "max-running",
                json!({"image": image(), "command": "sleep 3"}),
            )
            .await;
        executions.push(posted["executionUrl"].as_str().unwrap().to_string());
    }
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let running: usize = hosts
            .iter()
            .map(|host| running_containers(host, "max-running"))
            .sum();
        most = most.max(running);
        assert!(running <= 2, "{running} job containers running at once");
        let mut finished = 0;
        for url in &executions {
            let status = node.get_json(path_of(url)).await["execution"]["status"].clone();
            if status == "done" {
                finished += 1;
            }
        }
        if finished == executions.len() {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(most, 2, "the farm should run two at once");
    let status = node.get_json("/status/").await;
    assert_eq!(status["farms"][0]["maxRunning"], 2);
}

/// Blacklisting a host sends every new job to the other; removing it restores placement; any
/// valid `host:port` is accepted and bad ones are refused with a clear message.
#[tokio::test]
async fn blacklisted_hosts_get_no_new_work() {
    let hosts = docker_hosts();
    let config = farms(json!([{"match": "", "hosts": [hosts[0], hosts[1]], "maxRunning": 4}]));
    let node = Node::start(&[("DOCKER_HOSTS", &config)]).await;
    let client = reqwest::Client::new();
    let url = node.url("/docker-executor/blacklist");
    node.set_blacklisted(&hosts[0], true).await;
    let status = node.get_json("/status/").await;
    let blacklisted: Vec<&Value> = status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["blacklisted"] == true)
        .collect();
    assert_eq!(blacklisted.len(), 1);
    assert_eq!(blacklisted[0]["drained"], true);
    assert_eq!(blacklisted[0]["error"], "server is blacklisted");

    let mut urls = Vec::new();
    for _ in 0..4 {
        let posted = node
            .post_job("blacklist", json!({"image": image(), "command": "sleep 1"}))
            .await;
        urls.push(posted["executionUrl"].as_str().unwrap().to_string());
    }
    for url in &urls {
        let execution = node.wait_finished(url).await;
        assert_eq!(ran_on(&execution), hosts[1]);
    }

    node.set_blacklisted(&hosts[0], false).await;
    let mut urls = Vec::new();
    for _ in 0..4 {
        let posted = node
            .post_job("blacklist", json!({"image": image(), "command": "sleep 2"}))
            .await;
        urls.push(posted["executionUrl"].as_str().unwrap().to_string());
    }
    let mut used = std::collections::BTreeSet::new();
    for url in &urls {
        used.insert(ran_on(&node.wait_finished(url).await));
    }
    assert_eq!(used.len(), 2, "both hosts used again: {used:?}");

    for host in [
        "localhost:2375",
        "docker-host:1234",
        "10.0.0.1:2375",
        "Example.COM:1",
    ] {
        let response = client
            .put(&url)
            .json(&json!({"host": host}))
            .send()
            .await
            .unwrap();
        let response = common::openapi::checked("PUT", response).await;
        assert_eq!(response.status(), 200, "{host}");
        let removed = client
            .request(reqwest::Method::from_bytes(b"DEL").unwrap(), &url)
            .json(&json!({"host": host}))
            .send()
            .await
            .unwrap();
        assert_eq!(removed.status(), 200, "DEL {host}");
    }
    for (body, message) in [
        (
            json!({"host": "example.com"}),
            "'host' attribute had an invalid value",
        ),
        (
            json!({"host": "example.com:abcd"}),
            "'host' attribute had an invalid value",
        ),
        (json!({"host": 12}), "'host' attribute had an invalid value"),
        (json!({"name": "x"}), "'host' attribute was not found"),
        (json!([1]), "could not be parsed"),
    ] {
        let response = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(message),
            "{error}"
        );
    }
    let empty = client.post(&url).send().await.unwrap();
    assert_eq!(empty.status(), 400);
}

/// A host dies mid-test: jobs keep succeeding on the other one, `/status/` shows it unavailable
/// with an open circuit; once it is back and the reset timeout passed, it is closed and used.
#[tokio::test]
async fn a_dead_host_is_routed_around_and_comes_back() {
    let mut first = Engine::start();
    let second = Engine::start();
    let config =
        farms(json!([{"match": "", "hosts": [first.address, second.address], "maxRunning": 4}]));
    let node = Node::start(&[
        ("DOCKER_HOSTS", &config),
        ("DOCKER_CIRCUIT_BREAKER_MAX_FAILS", "1"),
        ("DOCKER_CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "3"),
        ("DOCKER_CALL_TIMEOUT_SECONDS", "3"),
    ])
    .await;
    first.kill();
    // Posted together, so that placement spreads them and the dead host is tried.
    let mut posted = Vec::new();
    for index in 0..4 {
        let command = format!("bash -c 'sleep 1; echo job-{index}'");
        posted.push(
            node.post_job("dead-host", json!({"image": image(), "command": command}))
                .await,
        );
    }
    for (index, posted) in posted.iter().enumerate() {
        let execution = node
            .wait_finished(posted["executionUrl"].as_str().unwrap())
            .await;
        assert_eq!(execution["status"], "done", "{execution}");
        assert_eq!(execution["log"], format!("job-{index}\n"));
        assert_eq!(ran_on(&execution), second.address);
        let job = node
            .get_json(path_of(posted["jobUrl"].as_str().unwrap()))
            .await;
        assert_eq!(
            job["job"]["executionCount"], 1,
            "a host fault does not create executions"
        );
    }
    let status = node.get_json("/status/").await;
    let dead = status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| format!("{}:{}", h["host"].as_str().unwrap(), h["port"]) == first.address)
        .unwrap()
        .clone();
    assert_eq!(dead["available"], false, "{status}");
    assert_ne!(dead["circuit"], "closed", "{status}");
    assert!(dead["error"].is_string());

    first.restart();
    wait_until(
        Duration::from_secs(30),
        "the circuit to close again",
        || async {
            let status = node.get_json("/status/").await;
            status["hosts"].as_array().unwrap().iter().any(|h| {
                format!("{}:{}", h["host"].as_str().unwrap(), h["port"]) == first.address
                    && h["circuit"] == "closed"
            })
        },
    )
    .await;
    // With the other host blacklisted, new work can only go to the restarted one.
    node.set_blacklisted(&second.address, true).await;
    let posted = node
        .post_job(
            "dead-host",
            json!({"image": image(), "command": "echo back"}),
        )
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{execution}");
    assert_eq!(ran_on(&execution), first.address);
}

/// A burst of 60 jobs over 5 tasks with `maxRunning: 6`: every output correct, nothing lost,
/// one execution each.
#[tokio::test]
async fn a_burst_of_sixty_jobs_all_finish_correctly() {
    let hosts = docker_hosts();
    let config = farms(json!([{"match": "", "hosts": [hosts[0], hosts[1]], "maxRunning": 6}]));
    let node = Node::start(&[("DOCKER_HOSTS", &config)]).await;
    let mut posted = Vec::new();
    for index in 0..60 {
        let task = format!("burst-{}", index % 5);
        let answer = node
            .post_job(
                &task,
                json!({"image": image(), "command": format!("echo output-{index}")}),
            )
            .await;
        posted.push((index, answer));
    }
    for (index, answer) in &posted {
        let execution = node
            .wait_finished(answer["executionUrl"].as_str().unwrap())
            .await;
        assert_eq!(execution["status"], "done");
        assert_eq!(execution["log"], format!("output-{index}\n"));
        let job = node
            .get_json(path_of(answer["jobUrl"].as_str().unwrap()))
            .await;
        assert_eq!(job["job"]["executionCount"], 1);
    }
    let tasks = node.get_json("/tasks/").await;
    assert_eq!(tasks["total"], 5);
}

/// A per-task `maxConcurrent` holds like a farm's `maxRunning`.
#[tokio::test]
async fn max_concurrent_limits_a_task() {
    let hosts = docker_hosts();
    let config = farms(json!([{"match": "", "hosts": [hosts[0], hosts[1]], "maxRunning": 8}]));
    let node = Node::start(&[("DOCKER_HOSTS", &config)]).await;
    let mut urls = Vec::new();
    for _ in 0..4 {
        let posted = node
            .post_job(
                "capped",
                json!({"image": image(), "command": "sleep 2", "maxConcurrent": 1}),
            )
            .await;
        urls.push(posted["executionUrl"].as_str().unwrap().to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let running: usize = hosts
            .iter()
            .map(|host| running_containers(host, "capped"))
            .sum();
        assert!(running <= 1, "{running} containers of a task capped at 1");
        let mut done = 0;
        for url in &urls {
            if node.get_json(path_of(url)).await["execution"]["status"] == "done" {
                done += 1;
            }
        }
        if done == urls.len() {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `fastlane-node prune` removes leftover job containers and keeps going past a dead host. It
/// runs on a private engine: on a shared one it would remove other tests' containers.
#[tokio::test]
async fn prune_removes_leftovers_and_survives_a_dead_host() {
    let engine = Engine::start();
    let name = format!("fastlane-job-prune-{}", std::process::id());
    let status = engine
        .cli()
        .args([
            "run",
            "--name",
            &name,
            "--label",
            "fastlane.execution_id=prune-test",
            &image(),
            "true",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let config = farms(json!([{"match": "", "hosts": ["127.0.0.1:9", engine.address]}]));
    let prune = |older_than: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fastlane-node"))
            .args(["prune", "--older-than", older_than])
            .env("DOCKER_HOSTS", &config)
            .env("DOCKER_CALL_TIMEOUT_SECONDS", "3")
            .output()
            .unwrap()
    };
    let young = prune("3600");
    assert!(
        !String::from_utf8_lossy(&young.stdout).contains(&name),
        "a young container is left alone"
    );
    let output = prune("0");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains(&name), "{stdout}\n{stderr}");
    assert!(stderr.contains("127.0.0.1:9"), "{stderr}");
    assert!(
        !output.status.success(),
        "a failed host makes the exit code non-zero"
    );
    let left = engine
        .cli()
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("name={name}"),
            "--format",
            "{{.ID}}",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "");
}

/// A Docker engine that requires TLS client certificates (`dockerd --tlsverify`) runs a job
/// when it is configured as `https://host:port` with `DOCKER_TLS_CA`/`_CERT`/`_KEY`.
#[tokio::test]
async fn a_tls_engine_runs_a_job() {
    let engine = Engine::start_tls();
    let certs = engine.tls.clone().unwrap();
    let config = farms(
        json!([{"match": "", "hosts": [format!("https://{}", engine.address)], "maxRunning": 2}]),
    );
    let ca = certs.join("ca.pem");
    let cert = certs.join("cert.pem");
    let key = certs.join("key.pem");
    let node = Node::start(&[
        ("DOCKER_HOSTS", &config),
        ("DOCKER_TLS_CA", ca.to_str().unwrap()),
        ("DOCKER_TLS_CERT", cert.to_str().unwrap()),
        ("DOCKER_TLS_KEY", key.to_str().unwrap()),
    ])
    .await;
    let posted = node
        .post_job("tls", json!({"image": image(), "command": "echo over tls"}))
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{execution}\n{}", node.log());
    assert_eq!(execution["log"], "over tls\n");
    assert_eq!(ran_on(&execution), engine.address);
}

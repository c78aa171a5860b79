//! End-to-end: node roles (`fastlane-node start --role api|worker`) over one Redis queue and one
//! MongoDB-compatible store (SecantusDB from `scripts/testenv.sh`) and the test engines: the api
//! node takes the jobs and runs none, the workers run each exactly once and serve only
//! `/healthcheck`, `/status/` and `/metrics`; without the shared backends a role is refused.

mod common;

use common::{docker, docker_hosts, image, path_of, Node};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh (or source the env of scripts/testenv.sh up)")
    })
}

/// The environment of the nodes of one deployment: the test Redis with a key prefix of its own,
/// a database of its own, both test engines.
fn deployment() -> Vec<(String, String)> {
    let name = format!("roles{}", Uuid::new_v4().simple());
    let mongo = env("FASTLANE_TEST_SECANTUS_URL");
    let base = mongo
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&mongo);
    let hosts = docker_hosts();
    vec![
        ("REDIS_URL".into(), env("FASTLANE_TEST_REDIS_URL")),
        ("REDIS_KEY_PREFIX".into(), name.clone()),
        ("MONGODB_URL".into(), format!("{base}/{name}")),
        (
            "DOCKER_HOSTS".into(),
            json!([{"match": "", "hosts": [hosts[0], hosts[1]], "maxRunning": 4}]).to_string(),
        ),
    ]
}

async fn node(vars: &[(String, String)], role: &str) -> Node {
    let vars: Vec<(&str, &str)> = vars
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    Node::start_with_args(&vars, &["--role", role]).await
}

/// Names of the containers of `task` created on `host` since `since` (unix seconds), from the
/// engine's events.
fn created_containers(host: &str, task: &str, since: u64) -> Vec<String> {
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    docker(
        host,
        &[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &until.to_string(),
            "--filter",
            "event=create",
            "--filter",
            &format!("label=fastlane.task_id={task}"),
            "--format",
            "{{.Actor.Attributes.name}}",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

/// One api node and two workers: 40 jobs posted to the api node each run exactly once, in
/// exactly one container, all on the workers (the api node's log shows no execution it ran);
/// the workers refuse the API's routes with 403 and serve health and status.
#[tokio::test]
async fn an_api_node_and_two_workers_run_each_job_once() {
    let vars = deployment();
    let api = node(&vars, "api").await;
    let workers = [node(&vars, "worker").await, node(&vars, "worker").await];
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;

    // The workers refuse the API, and say why.
    for worker in &workers {
        let refused = worker.get("/tasks/").await;
        assert_eq!(refused.status(), 403);
        let body: Value = refused.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("worker"), "{body}");
        assert_eq!(body["operation"], "route");
        let posted = reqwest::Client::new()
            .post(worker.url("/tasks/roles/"))
            .json(&json!({"image": image(), "command": "echo no"}))
            .send()
            .await
            .unwrap();
        assert_eq!(posted.status(), 403);
        assert_eq!(worker.get("/healthcheck").await.status(), 200);
        let status = worker.get_json("/status/").await;
        assert_eq!(status["fastlane"]["role"], "worker");
    }
    assert_eq!(api.get_json("/status/").await["fastlane"]["role"], "api");

    let task = "roles-burst";
    let mut posted = Vec::new();
    for n in 0..40 {
        let answer = api
            .post_job(
                task,
                json!({"image": image(), "command": format!("sh -c 'echo job-{n}'")}),
            )
            .await;
        posted.push((n, answer));
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut ran_by = BTreeMap::new();
    for (n, answer) in &posted {
        let job_url = answer["jobUrl"].as_str().unwrap();
        let executions = loop {
            let executions = api.executions(job_url).await;
            if executions.iter().all(|e| e["status"] == "done") && !executions.is_empty() {
                break executions;
            }
            assert!(
                Instant::now() < deadline,
                "job {n} did not finish: {executions:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(executions.len(), 1, "job {n} ran more than once");
        let execution_url = format!(
            "{}executions/{}/",
            job_url,
            executions[0]["executionId"].as_str().unwrap()
        );
        let stdout = api
            .get(&format!("{}stdout/", path_of(&execution_url)))
            .await
            .text()
            .await
            .unwrap();
        assert_eq!(stdout, format!("job-{n}\n"));
        ran_by.insert(
            executions[0]["executionId"].as_str().unwrap().to_string(),
            (),
        );
    }

    // Exactly one container per execution, across both engines.
    let mut created: BTreeMap<String, usize> = BTreeMap::new();
    for host in docker_hosts().iter().take(2) {
        for name in created_containers(host, task, since) {
            *created.entry(name).or_default() += 1;
        }
    }
    assert_eq!(created.len(), posted.len(), "{created:?}");
    for execution_id in ran_by.keys() {
        assert_eq!(
            created.get(&format!("fastlane-job-{execution_id}")),
            Some(&1),
            "{execution_id}: {created:?}"
        );
    }

    // The api node ran none of them; the workers did.
    let api_log = api.log();
    assert!(!api_log.contains("execution finished"), "{api_log}");
    let finished: usize = workers
        .iter()
        .map(|worker| worker.log().matches("execution finished").count())
        .sum();
    assert_eq!(finished, posted.len());
}

/// `--role api` or `worker` without Redis and MongoDB stops at once with a clear message: the
/// embedded store is one process's.
#[test]
fn a_role_needs_the_shared_backends() {
    let data_dir = tempfile::tempdir().unwrap();
    for role in ["api", "worker"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_fastlane-node"))
            .args(["start", "-b", "127.0.0.1", "-p", "0", "--role", role])
            .env("DATA_DIR", data_dir.path())
            .env(
                "DOCKER_HOSTS",
                json!([{"match": "", "hosts": [docker_hosts()[0]]}]).to_string(),
            )
            .env_remove("REDIS_URL")
            .env_remove("MONGODB_URL")
            .env_remove("MONGODB_CONFIG")
            .output()
            .unwrap();
        assert!(!output.status.success(), "--role {role} started");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("REDIS_URL") && stderr.contains("MONGODB_URL"),
            "{stderr}"
        );
    }
    // Nothing was made in the data directory.
    assert!(!data_dir.path().join("lock").exists());
}

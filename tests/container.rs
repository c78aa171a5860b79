//! End-to-end: one container per execution, ever, against the real Docker engines: a start that
//! times out (a slow engine, simulated by a proxy) is taken over rather than placed elsewhere;
//! the reaper removes this deployment's containers no execution owns and nothing else; a
//! container with an execution's name but another deployment's label is never touched.

mod common;

use common::{docker, docker_hosts, image, wait_until, Node};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Whether `chunk` begins a `POST /…/containers/{id}/start` request; returns its path.
fn start_request(chunk: &[u8]) -> Option<String> {
    let line_end = chunk.windows(2).position(|pair| pair == b"\r\n")?;
    let line = std::str::from_utf8(&chunk[..line_end]).ok()?;
    let path = line.strip_prefix("POST ")?.split(' ').next()?;
    let path = path.split('?').next()?;
    (path.contains("/containers/") && path.ends_with("/start")).then(|| path.to_string())
}

/// A TCP proxy in front of the Docker engine at `target` that holds the first start request of
/// each container for `delay` before passing it on: the node's call times out while the engine
/// creates the container and later starts it, as with a slow engine. The upstream connection
/// is kept open after the node gave up, so that the engine still serves the request.
async fn slow_start_proxy(target: String, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let delayed: Arc<Mutex<HashSet<String>>> = Arc::default();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&target).await else {
                continue;
            };
            let delayed = delayed.clone();
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let upstream = tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 * 1024];
                    loop {
                        let read = match client_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(read) => read,
                        };
                        let chunk = &buffer[..read];
                        if let Some(path) = start_request(chunk) {
                            if delayed.lock().unwrap().insert(path) {
                                tokio::time::sleep(delay).await;
                            }
                        }
                        if server_write.write_all(chunk).await.is_err() {
                            break;
                        }
                    }
                    server_write
                });
                let mut buffer = vec![0u8; 64 * 1024];
                let mut client_open = true;
                while let Ok(Ok(read @ 1..)) =
                    tokio::time::timeout(Duration::from_secs(60), server_read.read(&mut buffer))
                        .await
                {
                    if client_open && client_write.write_all(&buffer[..read]).await.is_err() {
                        client_open = false;
                    }
                }
                drop(upstream);
            });
        }
    });
    address
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Ids of the containers created for `execution_id` on `host` since `since` (the engine's
/// events, so removed containers count too).
fn creations(host: &str, execution_id: &str, since: u64) -> Vec<String> {
    docker(
        host,
        &[
            "events",
            "--since",
            &since.to_string(),
            "--until",
            &(unix_now() + 1).to_string(),
            "--filter",
            "type=container",
            "--filter",
            "event=create",
            "--filter",
            &format!("label=fastlane.execution_id={execution_id}"),
            "--format",
            "{{.Actor.ID}}",
        ],
    )
    .lines()
    .filter(|line| !line.trim().is_empty())
    .map(str::to_string)
    .collect()
}

/// A name no other test (or run) uses.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// Whether a container named `name` exists on `host`, and its state.
fn container_state(host: &str, name: &str) -> Option<String> {
    let state = docker(host, &["inspect", "--format", "{{.State.Status}}", name]);
    let state = state.trim();
    (!state.is_empty()).then(|| state.to_string())
}

/// Runs a detached `sleep 300` container named `name` with `labels` on `host`.
fn run_labelled(host: &str, name: &str, labels: &[(&str, &str)]) {
    let mut args = vec!["run", "-d", "--name", name];
    let labels: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    for label in &labels {
        args.extend(["--label", label.as_str()]);
    }
    let image = image();
    args.extend([image.as_str(), "sleep", "300"]);
    docker(host, &args);
    assert_eq!(
        container_state(host, name).as_deref(),
        Some("running"),
        "{name} runs"
    );
}

/// (a) A slow engine: both hosts of the farm sit behind a proxy that holds each container's
/// first start past `DOCKER_CALL_TIMEOUT_SECONDS`. The start times out after the create; the
/// node looks the container up by name on that host and takes it over instead of placing the
/// execution on the other host. Exactly one container is ever created for the execution
/// (counted from both engines' events), and the job ends `done` with its output.
#[tokio::test]
async fn a_start_that_times_out_creates_no_second_container() {
    let hosts = docker_hosts();
    let delay = Duration::from_secs(4);
    let proxies = [
        slow_start_proxy(hosts[0].clone(), delay).await,
        slow_start_proxy(hosts[1].clone(), delay).await,
    ];
    let farms = json!([{"match": "", "hosts": proxies, "maxRunning": 4}]).to_string();
    let node = Node::start(&[
        ("DOCKER_HOSTS", &farms),
        ("DOCKER_CALL_TIMEOUT_SECONDS", "2"),
    ])
    .await;
    let since = unix_now().saturating_sub(1);
    // It runs longer than the held start: the late start finds it running (a no-op).
    let posted = node
        .post_job(
            "slow-start",
            json!({"image": image(), "command": "sh -c 'sleep 6; echo slow-start-output'"}),
        )
        .await;
    let execution_id = posted["executionId"].as_str().unwrap().to_string();
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{execution}\n{}", node.log());
    assert_eq!(execution["log"], "slow-start-output\n", "{execution}");
    let log = node.log();
    assert!(
        log.contains("no answer within 2 seconds"),
        "the start timed out:\n{log}"
    );
    assert!(
        log.contains("taking over the container found by name"),
        "{log}"
    );
    let created: Vec<String> = hosts
        .iter()
        .flat_map(|host| creations(host, &execution_id, since))
        .collect();
    assert_eq!(created.len(), 1, "one container, ever: {created:?}\n{log}");
}

/// (b) The reaper (every second, one second's grace) removes a container labelled with this
/// deployment whose execution does not exist, within a few intervals, while a job of the same
/// deployment runs to `done` untouched and a container of another deployment stays.
#[tokio::test]
async fn the_reaper_removes_orphans_and_nothing_else() {
    let host = docker_hosts()[0].clone();
    let deployment = unique("reaper-test");
    let orphan_id = uuid::Uuid::new_v4().to_string();
    let orphan = format!("fastlane-job-{orphan_id}");
    let theirs = unique("fastlane-job-theirs");
    run_labelled(
        &host,
        &orphan,
        &[
            ("fastlane.deployment_id", &deployment),
            ("fastlane.execution_id", &orphan_id),
        ],
    );
    run_labelled(
        &host,
        &theirs,
        &[
            ("fastlane.deployment_id", "another-deployment"),
            ("fastlane.execution_id", &orphan_id),
        ],
    );
    // The node starts after both containers run: its reaper may remove the orphan at once, which
    // must not race with the check above that it runs.
    let node = Node::start(&[
        ("DEPLOYMENT_ID", &deployment),
        ("CONTAINER_REAPER_INTERVAL_SECONDS", "1"),
        ("CONTAINER_REAPER_GRACE_SECONDS", "1"),
    ])
    .await;
    let posted = node
        .post_job(
            "reaper-keeps",
            json!({"image": image(), "command": "sh -c 'sleep 4; echo kept'"}),
        )
        .await;

    wait_until(Duration::from_secs(30), "the orphan is reaped", || async {
        container_state(&host, &orphan).is_none()
    })
    .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{execution}\n{}", node.log());
    assert_eq!(execution["exitCode"], json!(0), "{execution}");
    assert_eq!(
        container_state(&host, &theirs).as_deref(),
        Some("running"),
        "another deployment's container is left alone"
    );
    docker(&host, &["rm", "-f", &theirs]);
}

/// (c) A container named after an execution (`fastlane-job-{id}`) but labelled with another
/// deployment: the execution fails with an error saying so, and the container keeps running,
/// untouched by the JobActor and by the reaper.
#[tokio::test]
async fn a_container_of_another_deployment_is_not_touched() {
    let host = docker_hosts()[0].clone();
    let farms = json!([{"match": "", "hosts": [host], "maxRunning": 1}]).to_string();
    let node = Node::start(&[
        ("DOCKER_HOSTS", &farms),
        ("DEPLOYMENT_ID", &unique("ours")),
        ("CONTAINER_REAPER_INTERVAL_SECONDS", "1"),
        ("CONTAINER_REAPER_GRACE_SECONDS", "1"),
    ])
    .await;
    // The farm's only slot is busy, so the second execution waits while its name is taken.
    let first = node
        .post_job(
            "foreign-name",
            json!({"image": image(), "command": "sleep 3"}),
        )
        .await;
    let first_path = common::path_of(first["executionUrl"].as_str().unwrap()).to_string();
    wait_until(Duration::from_secs(30), "the first job runs", || async {
        let details: Value = node.get_json(&first_path).await;
        details["execution"]["status"] == "running"
    })
    .await;
    let second = node
        .post_job(
            "foreign-name",
            json!({"image": image(), "command": "echo never"}),
        )
        .await;
    let execution_id = second["executionId"].as_str().unwrap().to_string();
    let name = format!("fastlane-job-{execution_id}");
    run_labelled(
        &host,
        &name,
        &[
            ("fastlane.deployment_id", "another-deployment"),
            ("fastlane.execution_id", &execution_id),
        ],
    );

    let execution = node
        .wait_finished(second["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "failed", "{execution}");
    let error = execution["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("belongs to another deployment (fastlane.deployment_id=another-deployment)"),
        "{error}"
    );
    // A few reaper rounds later it still runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(container_state(&host, &name).as_deref(), Some("running"));
    docker(&host, &["rm", "-f", &name]);
}

/// Without `DEPLOYMENT_ID` a node generates its deployment id once and keeps it in
/// `DATA_DIR/deployment-id` (the same after a restart); an invalid `DEPLOYMENT_ID` stops the
/// node at start with a message naming the option.
#[tokio::test]
async fn the_deployment_id_is_kept_in_the_data_dir_or_configured() {
    let mut node = Node::start(&[]).await;
    let path = node.data_dir.join("deployment-id");
    let generated = std::fs::read_to_string(&path).unwrap();
    assert!(generated.starts_with("deployment-"), "{generated}");
    node.restart().await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), generated);

    let data_dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fastlane-node"))
        .args(["start", "-b", "127.0.0.1", "-p", "0"])
        .env("DATA_DIR", data_dir.path())
        .env(
            "DOCKER_HOSTS",
            json!([{"match": "", "hosts": [docker_hosts()[0]]}]).to_string(),
        )
        .env("DEPLOYMENT_ID", "not a valid id!")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DEPLOYMENT_ID"), "{stderr}");
}

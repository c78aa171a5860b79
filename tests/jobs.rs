//! End-to-end: jobs posted over HTTP run as real containers on a real Docker engine, and their
//! results are read back through the original's API.

mod common;

use common::{docker, docker_hosts, image, path_of, wait_until, Node};
use serde_json::{json, Value};
use std::time::Duration;

/// A job printing a line ends `done` with that line as its log and exit code 0; its container is
/// removed once the result is stored; the output routes answer with `Fastlane-Exit-Code`.
#[tokio::test]
async fn a_job_printing_a_line_ends_done() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "hello-task",
            json!({"image": image(), "command": "echo hello from fastlane"}),
        )
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done");
    assert_eq!(execution["exitCode"], 0);
    assert_eq!(execution["log"], "hello from fastlane\n");
    assert!(execution["startedAt"].is_string() && execution["finishedAt"].is_string());
    assert_eq!(
        execution["metadata"]["docker_host"],
        docker_hosts()[0].split(':').next().unwrap()
    );

    // Removed once the result is stored (just after it becomes visible).
    let name = format!("fastlane-job-{}", posted["executionId"].as_str().unwrap());
    let filter = format!("name={name}");
    wait_until(Duration::from_secs(10), "container removal", || async {
        docker(
            &docker_hosts()[0],
            &["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
        )
        .trim()
        .is_empty()
    })
    .await;

    let job_path = path_of(posted["jobUrl"].as_str().unwrap());
    let stdout = node.get(&format!("{job_path}stdout/")).await;
    assert_eq!(stdout.headers()["fastlane-exit-code"], "0");
    assert_eq!(stdout.text().await.unwrap(), "hello from fastlane\n");
    let logs = node
        .get(&format!("{job_path}logs"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(logs, "hello from fastlane\n\n-=-\n");
}

/// `bash -c 'echo "it failed" && exit 123'` ends `failed` with log `it failed` and exit 123.
#[tokio::test]
async fn a_failing_command_ends_failed_with_its_exit_code() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "fail-task",
            json!({"image": image(), "command": "bash -c 'echo \"it failed\" && exit 123'"}),
        )
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "failed");
    assert_eq!(execution["exitCode"], 123);
    assert_eq!(execution["log"].as_str().unwrap().trim(), "it failed");
    let job_path = path_of(posted["jobUrl"].as_str().unwrap());
    let stdout = node.get(&format!("{job_path}stdout/")).await;
    assert_eq!(stdout.headers()["fastlane-exit-code"], "123");
}

/// A command that does not exist ends `failed` with exit code 127 and the reason in `error`,
/// both when Docker cannot execute it and when a shell cannot find it.
#[tokio::test]
async fn a_missing_command_exits_127_with_the_message() {
    let node = Node::start(&[]).await;
    for (task, command, expected) in [
        ("missing-exec", "no-such-command --flag", "no-such-command"),
        (
            "missing-shell",
            "bash -c 'no-such-command'",
            "command not found",
        ),
    ] {
        let posted = node
            .post_job(task, json!({"image": image(), "command": command}))
            .await;
        let execution = node
            .wait_finished(posted["executionUrl"].as_str().unwrap())
            .await;
        assert_eq!(execution["status"], "failed", "{command}");
        assert_eq!(execution["exitCode"], 127, "{command}");
        let error = execution["error"].as_str().unwrap();
        assert!(error.contains(expected), "{command}: {error}");
    }
}

/// `GET /tasks/` lists tasks in insertion order with the original's pagination fields, and
/// `/search/` matches whole words of task ids.
#[tokio::test]
async fn tasks_are_listed_with_pagination_and_searchable() {
    let node = Node::start(&[("PAGINATION_PER_PAGE", "2")]).await;
    let empty = node.get_json("/tasks/").await;
    assert_eq!(empty["items"], json!([]));
    assert_eq!(empty["pages"], 0);
    for task in ["alpha-report", "beta.search_job", "gamma"] {
        node.post_job(task, json!({"image": image(), "command": "true"}))
            .await;
    }
    node.post_job("gamma", json!({"image": image(), "command": "true"}))
        .await;

    let first = node.get_json("/tasks/").await;
    assert_eq!(first["total"], 3);
    assert_eq!(first["pages"], 2);
    assert_eq!(first["page"], 1);
    assert_eq!(first["perPage"], 2);
    assert_eq!(first["hasNext"], true);
    assert_eq!(first["hasPrev"], false);
    assert_eq!(first["prevUrl"], Value::Null);
    assert_eq!(first["nextUrl"], node.url("/tasks/?page=2"));
    let ids: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alpha-report", "beta.search_job"]);
    assert_eq!(first["items"][0]["url"], node.url("/tasks/alpha-report/"));
    assert_eq!(first["items"][0]["jobsCount"], 1);

    let second = node.get_json("/tasks/?page=2").await;
    assert_eq!(second["items"][0]["taskId"], "gamma");
    assert_eq!(second["items"][0]["jobsCount"], 2);
    assert_eq!(second["hasNext"], false);
    assert_eq!(second["prevUrl"], node.url("/tasks/?page=1"));
    assert_eq!(node.get("/tasks/?page=3").await.status(), 404);

    let found = node.get_json("/search/?query=search").await;
    assert_eq!(found["total"], 1);
    assert_eq!(found["items"][0]["taskId"], "beta.search_job");
    assert_eq!(node.get_json("/search/?query=sear").await["total"], 0);
    assert_eq!(node.get_json("/search/?query=REPORT").await["total"], 1);

    let task = node.get_json("/tasks/gamma/").await;
    assert_eq!(task["taskId"], "gamma");
    assert_eq!(task["jobs"].as_array().unwrap().len(), 2);
}

/// 10 MB of stdout that is not UTF-8 and 10 MB of stderr round-trip byte for byte through the
/// output routes, and the JSON views still render.
#[tokio::test]
async fn ten_megabytes_of_output_round_trip_byte_for_byte() {
    let node = Node::start(&[]).await;
    const SIZE: usize = 10 * 1024 * 1024;
    let command = format!(
        "bash -c \"head -c {SIZE} /dev/zero | tr '\\\\000' '\\\\377'; yes stderr-line | head -c {SIZE} >&2\""
    );
    let posted = node
        .post_job("big-output", json!({"image": image(), "command": command}))
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{}", execution["error"]);

    let execution_path = path_of(posted["executionUrl"].as_str().unwrap());
    let stdout = node
        .get(&format!("{execution_path}stdout/"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(stdout.len(), SIZE);
    assert!(stdout.iter().all(|byte| *byte == 0xFF));
    let stderr = node
        .get(&format!("{execution_path}stderr/"))
        .await
        .bytes()
        .await
        .unwrap();
    let expected: Vec<u8> = b"stderr-line\n"
        .iter()
        .copied()
        .cycle()
        .take(SIZE)
        .collect();
    assert!(stderr[..] == expected[..], "stderr differs");
    let job = node
        .get_json(path_of(posted["jobUrl"].as_str().unwrap()))
        .await;
    assert_eq!(job["job"]["executionCount"], 1);
}

/// The job details show envs redacted (`***`) while the container received the real value, and
/// `metadata`, `retries` and `additionalDNSEntries` are stored as the original stores them.
#[tokio::test]
async fn job_details_redact_secrets_and_keep_options() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "options",
            json!({
                "image": image(),
                "command": "bash -c 'echo $API_KEY $PLAIN; grep db.internal /etc/hosts'",
                "envs": {"API_KEY": "s3cr3t-value", "PLAIN": "visible"},
                "metadata": {"owner": "team-a"},
                "additionalDNSEntries": {"db.internal": "10.1.2.3"},
                "timeout": 99999,
            }),
        )
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    let log = execution["log"].as_str().unwrap();
    assert!(log.starts_with("s3cr3t-value visible\n"), "{log}");
    assert!(log.contains("10.1.2.3"), "{log}");
    let job = node
        .get_json(path_of(posted["jobUrl"].as_str().unwrap()))
        .await;
    let metadata = &job["job"]["metadata"];
    assert_eq!(
        metadata["envs"],
        json!({"API_KEY": "***", "PLAIN": "visible"})
    );
    assert_eq!(metadata["custom"], json!({"owner": "team-a"}));
    assert_eq!(
        metadata["additional_dns_entries"],
        json!([["db.internal", "10.1.2.3"]])
    );
    assert_eq!(metadata["timeout"], 1800);
    assert_eq!(job["task"]["url"], node.url("/tasks/options/"));
    assert_eq!(job["job"]["executions"][0]["url"], posted["executionUrl"]);
}

/// After the node is stopped (SIGTERM, exit 0) and started again on the same data directory,
/// tasks, jobs and executions are all still there, unchanged.
#[tokio::test]
async fn everything_survives_a_restart() {
    let mut node = Node::start(&[]).await;
    let posted = node
        .post_job("durable", json!({"image": image(), "command": "echo kept"}))
        .await;
    node.wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    let job_path = path_of(posted["jobUrl"].as_str().unwrap()).to_string();
    let execution_path = path_of(posted["executionUrl"].as_str().unwrap()).to_string();
    let before = (
        node.get_json("/tasks/").await,
        node.get_json(&job_path).await,
        node.get_json(&execution_path).await,
    );
    node.restart().await;
    let after = (
        node.get_json("/tasks/").await,
        node.get_json(&job_path).await,
        node.get_json(&execution_path).await,
    );
    assert_eq!(before, after);
    assert_eq!(after.2["execution"]["log"], "kept\n");
}

/// A job posted while the node is up but run after a restart still runs exactly once: the queue
/// is durable and reconciled with the store at start.
#[tokio::test]
async fn queued_work_survives_a_restart() {
    let mut node = Node::start(&[]).await;
    let posted = node
        .post_job("queued", json!({"image": image(), "command": "echo once"}))
        .await;
    node.restart().await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["log"], "once\n", "{execution}\n{}", node.log());
    let job = node
        .get_json(path_of(posted["jobUrl"].as_str().unwrap()))
        .await;
    assert_eq!(job["job"]["executionCount"], 1);
}

//! End-to-end: deleting jobs and tasks (issue 15, point 2). `DELETE …/jobs/{job}/` stops the job
//! (its running container is stopped, its schedule and retries cancelled), then removes it with
//! its executions, outputs, schedule and queue messages: every route of it answers 404 after,
//! and a second call too. `DELETE /tasks/{task}/` does the same for every job of the task.

mod common;

use common::{docker_hosts, image, path_of, running_containers, wait_until, Node};
use serde_json::{json, Value};
use std::time::Duration;

async fn delete(node: &Node, path: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .delete(node.url(path))
        .send()
        .await
        .unwrap();
    let response = common::openapi::checked("DELETE", response).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn queue_lengths(node: &Node) -> (u64, u64, u64) {
    let queues = node.get_json("/status/").await["queues"].clone();
    let length = |name: &str| queues[name]["length"].as_u64().unwrap_or(0);
    (length("jobs"), length("delayed"), length("deadLetter"))
}

#[tokio::test]
async fn a_deleted_job_is_gone_from_every_route() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "delete-done",
            json!({"image": image(), "command": "echo bye"}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    node.wait_finished(&execution_url).await;
    let job_path = path_of(posted["jobUrl"].as_str().unwrap()).to_string();
    let (status, answer) = delete(&node, &job_path).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["executionsDeleted"], 1);
    let execution_path = path_of(&execution_url).to_string();
    for path in [
        job_path.clone(),
        execution_path.clone(),
        format!("{job_path}stdout/"),
        format!("{execution_path}logs/"),
        "/tasks/delete-done/".to_string(),
    ] {
        assert_eq!(node.get(&path).await.status(), 404, "{path}");
    }
    let (status, again) = delete(&node, &job_path).await;
    assert_eq!(status, 404, "{again}");
    assert!(again["error"].is_string());
}

#[tokio::test]
async fn deleting_a_running_job_stops_its_container() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "delete-running",
            json!({"image": image(), "command": "sleep 600"}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(60), "running", || async {
        node.get_json(path_of(&execution_url)).await["execution"]["status"] == "running"
    })
    .await;
    let (status, _) = delete(&node, path_of(posted["jobUrl"].as_str().unwrap())).await;
    assert_eq!(status, 200);
    let host = docker_hosts()[0].clone();
    wait_until(Duration::from_secs(60), "the container stopped", || async {
        running_containers(&host, "delete-running") == 0
    })
    .await;
    // The node goes on: the next job runs, and nothing was dead-lettered.
    let next = node
        .post_job(
            "delete-running",
            json!({"image": image(), "command": "echo next"}),
        )
        .await;
    let execution = node
        .wait_finished(next["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done");
    assert_eq!(queue_lengths(&node).await.2, 0, "dead letters");
}

#[tokio::test]
async fn deleting_a_task_removes_waiting_and_scheduled_jobs() {
    let node = Node::start(&[]).await;
    let task = "delete-task";
    node.post_job(
        task,
        json!({"image": image(), "command": "echo later", "startIn": "1h"}),
    )
    .await;
    node.post_job(
        task,
        json!({"image": image(), "command": "echo tick", "cron": "*/2 * * * * *"}),
    )
    .await;
    // A job that waits for a slot that never frees: maxConcurrent 1 behind a long one.
    node.post_job(
        task,
        json!({"image": image(), "command": "sleep 600", "maxConcurrent": 1}),
    )
    .await;
    node.post_job(
        task,
        json!({"image": image(), "command": "echo waiting", "maxConcurrent": 1}),
    )
    .await;
    let (status, answer) = delete(&node, &format!("/tasks/{task}/")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["jobsDeleted"], 4);
    assert_eq!(node.get(&format!("/tasks/{task}/")).await.status(), 404);
    let host = docker_hosts()[0].clone();
    wait_until(
        Duration::from_secs(60),
        "nothing of the task runs",
        || async { running_containers(&host, task) == 0 },
    )
    .await;
    // A container created after the delete (its start was under way) is stopped as it comes up,
    // with the stop's grace period (5 s): then nothing fires or starts any more.
    tokio::time::sleep(Duration::from_secs(7)).await;
    wait_until(
        Duration::from_secs(30),
        "nothing of the task runs",
        || async { running_containers(&host, task) == 0 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        running_containers(&host, task),
        0,
        "something started after the delete"
    );
    assert_eq!(node.get(&format!("/tasks/{task}/")).await.status(), 404);
    wait_until(Duration::from_secs(30), "the queue emptied", || async {
        queue_lengths(&node).await == (0, 0, 0)
    })
    .await;
    let (status, _) = delete(&node, &format!("/tasks/{task}/")).await;
    assert_eq!(status, 404);
}

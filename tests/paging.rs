//! End-to-end: `GET /tasks/{task}/` answers one bounded page of the task's jobs (issue 17,
//! point 1), with the paging fields of `/tasks/` (`total`, `page`, `pages`, `perPage`,
//! `hasNext`, `hasPrev`, `nextUrl`, `prevUrl`) beside the original's `taskId` and `jobs`. A task
//! of a few thousand jobs is walked page by page: every job once, the last page partial, a page
//! past the end 404 and a bad page 400, as `/tasks/` does; `DELETE /tasks/{task}/` then removes
//! all of them, reading them a bounded batch at a time.

mod common;

use common::{image, Node};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;

/// Jobs in the task: not a multiple of the page size, so that the last page is partial.
const JOBS: usize = 2345;
/// `TASK_JOBS_PER_PAGE`'s default.
const PER_PAGE: usize = 100;

/// Posts `count` jobs scheduled two days ahead (nothing runs) to `task`, 16 at a time; returns
/// their ids.
async fn post_scheduled_jobs(node: &Arc<Node>, task: &str, count: usize) -> HashSet<String> {
    let client = reqwest::Client::new();
    let url = node.url(&format!("/tasks/{task}/"));
    let mut workers = tokio::task::JoinSet::new();
    let workers_count = 16;
    for worker in 0..workers_count {
        let client = client.clone();
        let url = url.clone();
        let share = count / workers_count + usize::from(worker < count % workers_count);
        workers.spawn(async move {
            let mut ids = Vec::with_capacity(share);
            for _ in 0..share {
                let answer: Value = client
                    .post(&url)
                    .json(&json!({"image": image(), "command": "true", "startIn": "48h"}))
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                ids.push(answer["jobId"].as_str().unwrap().to_string());
            }
            ids
        });
    }
    let mut ids = HashSet::new();
    while let Some(done) = workers.join_next().await {
        ids.extend(done.unwrap());
    }
    ids
}

async fn get(node: &Node, path: &str) -> (u16, Value, String) {
    let response = node.get(path).await;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        content_type,
    )
}

#[tokio::test]
async fn a_task_of_thousands_of_jobs_is_answered_page_by_page() {
    let node = Arc::new(Node::start(&[]).await);
    let task = "paging-many";
    let posted = post_scheduled_jobs(&node, task, JOBS).await;
    assert_eq!(posted.len(), JOBS);
    let pages = JOBS.div_ceil(PER_PAGE);
    let task_url = node.url(&format!("/tasks/{task}/"));

    // Without `page`: the first page, bounded.
    let (status, first, _) = get(&node, &format!("/tasks/{task}/")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["taskId"], task);
    assert_eq!(first["jobs"].as_array().unwrap().len(), PER_PAGE);
    assert_eq!(first["total"], JOBS);
    assert_eq!(first["page"], 1);
    assert_eq!(first["pages"], pages);
    assert_eq!(first["perPage"], PER_PAGE);
    assert_eq!(first["hasPrev"], false);
    assert_eq!(first["hasNext"], true);
    assert_eq!(first["prevUrl"], Value::Null);
    assert_eq!(first["nextUrl"], format!("{task_url}?page=2"));

    // Every page, by following `nextUrl`: every job exactly once.
    let mut seen = HashSet::new();
    let mut path = format!("/tasks/{task}/?page=1");
    let mut number = 0;
    loop {
        number += 1;
        let (status, page, _) = get(&node, &path).await;
        assert_eq!(status, 200, "{path}: {page}");
        assert_eq!(page["page"], number);
        let jobs = page["jobs"].as_array().unwrap();
        let expected = if number < pages {
            PER_PAGE
        } else {
            JOBS - (pages - 1) * PER_PAGE
        };
        assert_eq!(jobs.len(), expected, "page {number}");
        for job in jobs {
            let id = job["id"].as_str().unwrap().to_string();
            assert_eq!(
                job["url"],
                node.url(&format!("/tasks/{task}/jobs/{id}/")),
                "each job links to itself"
            );
            assert!(seen.insert(id), "a job on two pages");
        }
        match page["nextUrl"].as_str() {
            Some(next) => path = common::path_of(next).to_string(),
            None => break,
        }
    }
    assert_eq!(number, pages);
    assert_eq!(seen, posted, "the pages hold every job of the task");
    let (_, last, _) = get(&node, &format!("/tasks/{task}/?page={pages}")).await;
    assert_eq!(last["hasNext"], false);
    assert_eq!(last["prevUrl"], format!("{task_url}?page={}", pages - 1));

    // Past the last page: 404 JSON, as `/tasks/`.
    let (status, past, content_type) =
        get(&node, &format!("/tasks/{task}/?page={}", pages + 1)).await;
    assert_eq!(status, 404, "{past}");
    assert_eq!(past["operation"], "get_task");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );

    // Bad pages: 400 JSON.
    for bad in [
        "0",
        "-1",
        "abc",
        "1.5",
        "",
        "99999999999999999999",
        "1099511627777",
    ] {
        let (status, answer, content_type) =
            get(&node, &format!("/tasks/{task}/?page={bad}")).await;
        assert_eq!(status, 400, "page={bad}: {answer}");
        assert_eq!(answer["operation"], "get_task", "page={bad}");
        assert!(
            answer["error"].as_str().unwrap().contains("page"),
            "{answer}"
        );
        assert!(content_type.starts_with("application/json"));
    }
    // An unknown task is 404 whatever the page; a task's page 1 answers even when it is small.
    let (status, _, _) = get(&node, "/tasks/paging-none/?page=1").await;
    assert_eq!(status, 404);
    node.post_job(
        "paging-one",
        json!({"image": image(), "command": "true", "startIn": "48h"}),
    )
    .await;
    let (status, one, _) = get(&node, "/tasks/paging-one/").await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(
        (one["total"].clone(), one["pages"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(one["hasNext"], false);

    // DELETE /tasks/{task}/ goes through all of them, a bounded batch per round and a bounded
    // time per call: each call answers 200 with what it deleted and what is left.
    let mut total_deleted = 0;
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls <= 100, "DELETE makes no progress");
        let response = reqwest::Client::new()
            .delete(node.url(&format!("/tasks/{task}/")))
            .send()
            .await
            .unwrap();
        let response = common::openapi::checked("DELETE", response).await;
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        total_deleted += answer["jobsDeleted"].as_u64().unwrap();
        let left = answer["jobsLeft"].as_u64().unwrap();
        assert_eq!(total_deleted + left, JOBS as u64, "{answer}");
        if answer["deleted"] == true {
            assert_eq!(left, 0);
            break;
        }
        assert!(left > 0, "{answer}");
    }
    eprintln!("deleted {JOBS} jobs in {calls} DELETE calls");
    let (status, _, _) = get(&node, &format!("/tasks/{task}/")).await;
    assert_eq!(status, 404);
}

/// `TASK_JOBS_PER_PAGE` sets the page size; values out of 1..=10000 stop start-up (see the
/// config unit tests); here a page of 7.
#[tokio::test]
async fn the_page_size_is_configured() {
    let node = Arc::new(Node::start(&[("TASK_JOBS_PER_PAGE", "7")]).await);
    post_scheduled_jobs(&node, "paging-seven", 20).await;
    let (status, third, _) = get(&node, "/tasks/paging-seven/?page=3").await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(third["perPage"], 7);
    assert_eq!(third["pages"], 3);
    assert_eq!(third["jobs"].as_array().unwrap().len(), 6);
    assert_eq!(third["hasNext"], false);
}

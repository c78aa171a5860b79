//! End-to-end: execution history, pause and resume, retention (issue 15, points 1, 3 and 4), on
//! real engines, with the embedded backend and with Redis + a MongoDB-compatible store.
//!
//! - `GET …/jobs/{job}/executions/` and `GET /executions/` filter by status and time and page,
//!   newest first, without outputs; bad parameters are 400, a missing job 404.
//! - `POST …/pause/` fires nothing while paused and lists what fell due as skipped; `…/resume/`
//!   lets the `misfire` policy decide about those (`latest`: the newest runs, `skip`: none).
//! - Retention removes executions past `EXECUTIONS_KEPT_PER_JOB` and older than
//!   `EXECUTION_RETENTION_SECONDS`, with their outputs; `executionCount` keeps counting them.

mod common;

use common::openapi;
use common::{image, path_of, wait_until, Node};
use fastlane_proto::Timestamp;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

/// The environments of one node per backend: embedded, and Redis + SecantusDB (own prefix and
/// database).
fn backends() -> Vec<(&'static str, Vec<(String, String)>)> {
    let name = format!("hist{}", Uuid::new_v4().simple());
    let mongo = std::env::var("FASTLANE_TEST_SECANTUS_URL").expect("FASTLANE_TEST_SECANTUS_URL");
    let base = mongo
        .rsplit_once('/')
        .map_or(mongo.as_str(), |(base, _)| base)
        .to_string();
    let redis = std::env::var("FASTLANE_TEST_REDIS_URL").expect("FASTLANE_TEST_REDIS_URL");
    vec![
        ("embedded", Vec::new()),
        (
            "redis+mongodb",
            vec![
                ("REDIS_URL".into(), redis),
                ("REDIS_KEY_PREFIX".into(), name.clone()),
                ("MONGODB_URL".into(), format!("{base}/{name}")),
            ],
        ),
    ]
}

async fn start(backend: &[(String, String)], extra: &[(&str, &str)]) -> Node {
    let mut vars: Vec<(&str, &str)> = backend
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    vars.extend_from_slice(extra);
    Node::start(&vars).await
}

/// GET, checked against the OpenAPI description: (status, JSON body).
async fn get(node: &Node, path: &str) -> (u16, Value) {
    let response = reqwest::get(node.url(path)).await.unwrap();
    let response = openapi::checked("GET", response).await;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status >= 400 {
        assert!(
            content_type.starts_with("application/json"),
            "{path}: {content_type}"
        );
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    (status, body)
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["executionId"].as_str().unwrap().to_string())
        .collect()
}

/// A job that fails `runs` times in a row, quickly (retries with a 100 ms back-off).
fn failing(runs: u32) -> Value {
    json!({
        "image": image(), "command": "sh -c 'echo out; exit 3'", "retries": runs - 1,
        "backoff": {"minMs": 100, "factor": 1, "maxMs": 100},
    })
}

#[tokio::test]
async fn the_history_filters_and_pages_on_both_backends() {
    for (backend, vars) in backends() {
        let node = start(&vars, &[]).await;
        let task = format!("history-{}", Uuid::new_v4().simple());
        let posted = node.post_job(&task, failing(4)).await;
        let job_url = posted["jobUrl"].as_str().unwrap().to_string();
        node.wait_executions(&job_url, 4, Duration::from_secs(60))
            .await;
        let history = format!("{}executions/", path_of(&job_url));
        let other_task = format!("history-other-{}", Uuid::new_v4().simple());
        let running = node
            .post_job(
                &other_task,
                json!({"image": image(), "command": "sleep 30"}),
            )
            .await;
        wait_until(Duration::from_secs(30), "the sleeper runs", || async {
            let (_, page) = get(
                &node,
                &format!("/executions/?status=running&task={other_task}"),
            )
            .await;
            page["total"] == 1
        })
        .await;

        // Paging, newest first, without outputs.
        let (status, first) = get(&node, &format!("{history}?perPage=3")).await;
        assert_eq!(status, 200, "{backend}: {first}");
        assert_eq!(first["total"], 4, "{backend}: {first}");
        assert_eq!(first["pages"], 2);
        assert_eq!(first["perPage"], 3);
        assert_eq!(first["hasNext"], true);
        assert_eq!(first["hasPrev"], false);
        let next = first["nextUrl"].as_str().unwrap();
        let (_, second) = get(&node, path_of(next)).await;
        assert_eq!(second["page"], 2);
        assert_eq!(second["hasPrev"], true);
        assert_eq!(second["nextUrl"], Value::Null);
        let mut all = ids(&first);
        all.extend(ids(&second));
        assert_eq!(all.len(), 4, "{backend}: {all:?}");
        let created: Vec<String> = first["items"]
            .as_array()
            .unwrap()
            .iter()
            .chain(second["items"].as_array().unwrap())
            .map(|item| item["createdAt"].as_str().unwrap().to_string())
            .collect();
        let mut sorted = created.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(created, sorted, "{backend}: newest first");
        let item = &first["items"][0];
        assert!(
            item.get("log").is_none() && item.get("error").is_none(),
            "{item}"
        );
        assert_eq!(item["task"]["id"], task.as_str());
        let stdout = reqwest::get(item["stdoutUrl"].as_str().unwrap())
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(stdout, "out\n");
        let (_, past) = get(&node, &format!("{history}?page=9")).await;
        assert_eq!(past["items"], json!([]));

        // Filters: status, time.
        let (_, failed) = get(&node, &format!("{history}?status=failed&perPage=100")).await;
        assert_eq!(failed["total"], 4, "{backend}");
        let (_, done) = get(&node, &format!("{history}?status=done")).await;
        assert_eq!(done["total"], 0);
        let newest = &first["items"][0]["createdAt"].as_str().unwrap();
        let (_, since) = get(&node, &format!("{history}?since={newest}")).await;
        assert_eq!(since["total"], 1, "{backend}: since {newest}: {since}");
        let (_, until) = get(&node, &format!("{history}?until={newest}")).await;
        assert_eq!(until["total"], 3, "{backend}");
        let oldest = &second["items"][0]["createdAt"].as_str().unwrap();
        let (_, before) = get(&node, &format!("{history}?until={oldest}")).await;
        assert_eq!(before["total"], 0);
        let (_, future) = get(&node, "/executions/?since=4102444800").await;
        assert_eq!(future["total"], 0);

        // Across tasks.
        let (_, running_page) = get(
            &node,
            &format!("/executions/?status=running&task={other_task}"),
        )
        .await;
        assert_eq!(running_page["items"][0]["task"]["id"], other_task.as_str());
        assert_eq!(
            running_page["items"][0]["executionId"],
            running["executionId"]
        );
        let (_, everything) = get(&node, "/executions/?perPage=100").await;
        assert!(everything["total"].as_u64().unwrap() >= 5, "{everything}");
        let (_, of_task) = get(&node, &format!("/executions/?task={task}&status=failed")).await;
        assert_eq!(of_task["total"], 4);
        assert!(of_task["nextUrl"].is_null());

        // Bad input: 400 with an error; missing jobs: 404.
        for bad in [
            "status=nope",
            "perPage=0",
            "perPage=101",
            "page=0",
            "page=-1",
            "since=yesterday",
            "until=2026-13-01T00:00:00Z",
        ] {
            let (status, body) = get(&node, &format!("{history}?{bad}")).await;
            assert_eq!(status, 400, "{bad}: {body}");
            let (status, _) = get(&node, &format!("/executions/?{bad}")).await;
            assert_eq!(status, 400, "{bad}");
        }
        let (status, _) = get(
            &node,
            &format!("/tasks/{task}/jobs/{}/executions/", Uuid::new_v4()),
        )
        .await;
        assert_eq!(status, 404);
        let (status, _) = get(
            &node,
            &format!(
                "/tasks/{other_task}/jobs/{}/executions/",
                posted["jobId"].as_str().unwrap()
            ),
        )
        .await;
        assert_eq!(status, 404, "a job of another task");
        let (status, _) = get(&node, &format!("/tasks/{task}/jobs/not-a-uuid/executions/")).await;
        assert_eq!(status, 404);

        let (status, _) = node
            .post_empty(&format!(
                "{}stop/",
                path_of(running["jobUrl"].as_str().unwrap())
            ))
            .await;
        assert_eq!(status, 200);
    }
}

/// The executions of a job whose `metadata.scheduledAt` is within `[from, to]`.
fn fired_between(executions: &[Value], from: &str, to: &str) -> usize {
    executions
        .iter()
        .filter_map(|execution| execution["metadata"]["scheduled_at"].as_str())
        .filter(|at| *at >= from && *at <= to)
        .count()
}

#[tokio::test]
async fn a_paused_job_fires_nothing_and_its_misfire_policy_decides_at_the_resume() {
    let node = Node::start(&[]).await;
    let every_second = |misfire: &str| {
        json!({"image": image(), "command": "true", "cron": "* * * * * *",
               "misfire": misfire, "overlap": "allow"})
    };
    let latest = node.post_job("paused", every_second("latest")).await;
    let skip = node.post_job("paused", every_second("skip")).await;
    let jobs = [
        path_of(latest["jobUrl"].as_str().unwrap()).to_string(),
        path_of(skip["jobUrl"].as_str().unwrap()).to_string(),
    ];
    for job in &jobs {
        node.wait_executions(&node.url(job), 1, Duration::from_secs(30))
            .await;
    }
    let mut paused_at = Vec::new();
    for job in &jobs {
        let (status, details) = node.post_empty(&format!("{job}pause/")).await;
        assert_eq!(status, 200, "{details}");
        assert_eq!(details["job"]["schedule"]["paused"], true, "{details}");
        paused_at.push(
            details["job"]["schedule"]["pausedAt"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        // Pausing again changes nothing.
        let (status, again) = node.post_empty(&format!("{job}pause/")).await;
        assert_eq!(status, 200);
        assert_eq!(
            again["job"]["schedule"]["pausedAt"],
            details["job"]["schedule"]["pausedAt"]
        );
    }
    // In flight at the pause: a firing decided a moment before may still be created.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let counts: Vec<u64> = {
        let mut counts = Vec::new();
        for job in &jobs {
            counts.push(
                node.get_json(job).await["job"]["executionCount"]
                    .as_u64()
                    .unwrap(),
            );
        }
        counts
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (job, count) in jobs.iter().zip(&counts) {
        let details = node.get_json(job).await;
        let schedule = &details["job"]["schedule"];
        assert_eq!(
            details["job"]["executionCount"], *count,
            "nothing fired: {details}"
        );
        assert!(
            schedule["skippedCount"].as_u64().unwrap() >= 3,
            "{schedule}"
        );
        assert_eq!(
            schedule["skipped"][0]["reason"],
            "skipped: the job was paused"
        );
    }
    let mut resumed_at = Vec::new();
    for job in &jobs {
        let (status, details) = node.post_empty(&format!("{job}resume/")).await;
        assert_eq!(status, 200, "{details}");
        assert_eq!(details["job"]["schedule"]["paused"], false);
        assert_eq!(details["job"]["schedule"]["skippedCount"], 0);
        resumed_at.push(
            details["job"]["lastModifiedAt"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Firings go on after the resume.
    for (job, count) in jobs.iter().zip(&counts) {
        wait_until(
            Duration::from_secs(20),
            "firings after the resume",
            || async {
                node.get_json(job).await["job"]["executionCount"]
                    .as_u64()
                    .unwrap()
                    >= count + 2
            },
        )
        .await;
    }
    // `latest` ran the newest paused firing (and only it); `skip` none. Both list the others
    // as skipped because of the pause.
    for (index, expected) in [(0, 1), (1, 0)] {
        let job = &jobs[index];
        let (from, to) = (&paused_at[index], &resumed_at[index]);
        let (_, page) = get(&node, &format!("{job}executions/?perPage=100")).await;
        let executions = page["items"].as_array().unwrap();
        // Past the slot that may have been decided at the moment of the pause.
        let from_late = plus_seconds(from, 1);
        assert_eq!(
            fired_between(executions, &from_late, to),
            expected,
            "{job}: {from}..{to}: {page}"
        );
        let details = node.get_json(job).await;
        let missed = details["job"]["schedule"]["missed"].as_array().unwrap();
        assert!(
            missed
                .iter()
                .filter(|missed| missed["reason"] == "skipped: the job was paused")
                .count()
                >= 2,
            "{details}"
        );
    }
    // A job without a schedule cannot be paused: 409 with an error.
    let once = node
        .post_job("paused", json!({"image": image(), "command": "true"}))
        .await;
    let (status, body) = node
        .post_empty(&format!(
            "{}pause/",
            path_of(once["jobUrl"].as_str().unwrap())
        ))
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no schedule"),
        "{body}"
    );
    let (status, _) = node
        .post_empty(&format!("/tasks/paused/jobs/{}/pause/", Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
    for job in &jobs {
        node.post_empty(&format!("{job}stop/")).await;
    }
}

/// `at` (an API time, UTC without a zone) plus `seconds`, in the same format.
fn plus_seconds(at: &str, seconds: i64) -> String {
    let parsed = Timestamp::parse(at).unwrap();
    Timestamp(parsed.0 + seconds * 1_000_000).iso()
}

#[tokio::test]
async fn retention_removes_old_executions_and_their_outputs_but_keeps_the_count() {
    for (backend, vars) in backends() {
        let node = start(
            &vars,
            &[
                ("EXECUTIONS_KEPT_PER_JOB", "2"),
                ("RETENTION_INTERVAL_SECONDS", "1"),
                // Removable 6 s after finishing (stop grace + lease).
                ("STOP_GRACE_PERIOD_MAX_SECONDS", "1"),
                ("QUEUE_LEASE_SECONDS", "5"),
            ],
        )
        .await;
        let posted = node.post_job("retention", failing(5)).await;
        let job_url = posted["jobUrl"].as_str().unwrap().to_string();
        let history = format!("{}executions/", path_of(&job_url));
        let oldest = posted["executionUrl"].as_str().unwrap().to_string();
        wait_until(
            Duration::from_secs(60),
            "the job ran 5 times and 3 went",
            || async {
                let (_, page) = get(&node, &history).await;
                let details = node.get_json(path_of(&job_url)).await;
                let finished = page["items"]
                    .as_array()
                    .is_some_and(|items| items.iter().all(|item| item["status"] == "failed"));
                page["total"] == 2 && details["job"]["executionCount"] == 5 && finished
            },
        )
        .await;
        let (status, _) = get(&node, path_of(&oldest)).await;
        assert_eq!(status, 404, "{backend}: the oldest execution is gone");
        // The output routes answer as the original did for an execution they cannot find.
        let response = reqwest::get(format!("{oldest}stdout")).await.unwrap();
        assert_eq!(response.status(), 400, "{backend}: and its output");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("No executions found"),
            "{body}"
        );
        let (_, page) = get(&node, &history).await;
        for item in page["items"].as_array().unwrap() {
            let stdout = reqwest::get(item["stdoutUrl"].as_str().unwrap())
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert_eq!(
                stdout, "out\n",
                "{backend}: the kept ones keep their output"
            );
        }
        drop(node);

        // By age: every finished execution but the job's newest goes, the count stays.
        let node = start(
            &vars,
            &[
                ("EXECUTIONS_KEPT_PER_JOB", "0"),
                ("EXECUTION_RETENTION_SECONDS", "2"),
                ("RETENTION_INTERVAL_SECONDS", "1"),
            ],
        )
        .await;
        let posted = node.post_job("retention-age", failing(3)).await;
        let job_url = posted["jobUrl"].as_str().unwrap().to_string();
        wait_until(
            Duration::from_secs(60),
            "3 runs, of which 2 went",
            || async {
                // The job first, then the page: once the job shows its third run alone, the
                // state is final (read the other way round, the page could predate the last
                // retry's creation).
                let details = node.get_json(path_of(&job_url)).await;
                let (_, page) = get(&node, &format!("{}executions/", path_of(&job_url))).await;
                details["job"]["executionCount"] == 3
                    && details["job"]["executions"].as_array().map(Vec::len) == Some(1)
                    && details["job"]["executions"][0]["status"] == "failed"
                    && page["total"] == 1
                    && page["items"][0]["status"] == "failed"
            },
        )
        .await;
        let details = node.get_json(path_of(&job_url)).await;
        assert_eq!(details["job"]["executionCount"], 3, "{backend}: {details}");
        let executions = details["job"]["executions"].as_array().unwrap();
        assert_eq!(executions.len(), 1, "the newest stays: {details}");
        assert_eq!(executions[0]["log"], "out\n");
    }
}

//! Nothing a client sends can poison the node (issue 11, points 1 and 2): too deep or too many
//! is refused with a 400 before anything is written; a stored row that cannot be parsed is
//! skipped, not fatal; and a node whose actor system cannot start exits with the reason instead
//! of answering 503 forever.

mod common;

use common::{docker_hosts, image, path_of, Node};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

async fn post_raw(node: &Node, task: &str, body: String) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(node.url(&format!("/tasks/{task}/")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let response = common::openapi::checked("POST", response).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn nested(levels: usize) -> String {
    "[".repeat(levels) + &"]".repeat(levels)
}

/// Deep fields (33 levels, and 126 levels — just inside serde's own limit, the poisoned payload
/// of the issue), 21 webhooks in one list and 51 recipients in one list each get a 400 naming
/// the field, and nothing is created; 32 levels and 20 webhooks are accepted.
#[tokio::test]
async fn deep_and_long_payloads_get_400() {
    let node = Node::start(&[]).await;
    let image = image();
    let body = |extra: String| format!(r#"{{"image": "{image}", "command": "true", {extra}}}"#);
    let hook = r#"{"url": "http://127.0.0.1:9/"}"#;
    let refused = [
        (
            format!(r#""metadata": {{"a": {}}}"#, nested(125)),
            "'metadata'",
        ),
        (
            format!(r#""metadata": {{"a": {}}}"#, nested(32)),
            "'metadata'",
        ),
        (format!(r#""envs": {{"A": {}}}"#, nested(40)), "'envs'"),
        (
            format!(r#""webhooks": {{"fails": {}}}"#, nested(33)),
            "'webhooks'",
        ),
        (format!(r#""notify": {}"#, nested(33)), "'notify'"),
        (
            format!(
                r#""webhooks": {{"succeeds": [{}]}}"#,
                vec![hook; 21].join(",")
            ),
            "'webhooks.succeeds'",
        ),
        (
            format!(
                r#""notify": {{"fails": [{}]}}"#,
                vec![r#""a@b.c""#; 51].join(",")
            ),
            "'notify.fails'",
        ),
    ];
    for (extra, field) in refused {
        let (status, error) = post_raw(&node, "deep", body(extra)).await;
        assert_eq!(status, 400, "{field}: {error}");
        assert!(
            error["error"].as_str().unwrap_or("").contains(field),
            "{field}: {error}"
        );
        assert!(error["operation"].is_string(), "{error}");
    }
    // A whole body nested past serde's limit is a parse error: a 400 too, never a 500.
    let (status, _) = post_raw(&node, "deep", format!(r#"{{"a": {}}}"#, nested(200))).await;
    assert_eq!(status, 400);
    assert_eq!(node.get("/tasks/deep/").await.status(), 404);

    // At the bounds: accepted.
    let (status, answer) = post_raw(
        &node,
        "deep",
        body(format!(
            r#""metadata": {{"a": {}}}, "webhooks": {{"succeeds": [{}]}}, "notify": {{"fails": [{}]}}"#,
            nested(31),
            vec![hook; 20].join(","),
            vec![r#""a@b.c""#; 50].join(",")
        )),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

/// Overwrites the stored JSON record of `job_id` with garbage, the node being stopped.
fn corrupt_job_record(data_dir: &std::path::Path, job_id: &str) {
    let connection = rusqlite::Connection::open(data_dir.join("fastlane.sqlite3")).unwrap();
    let changed = connection
        .execute(
            "UPDATE jobs SET record = '{\"not\": a job' WHERE job_id = ?1",
            [job_id],
        )
        .unwrap();
    assert_eq!(changed, 1, "job {job_id} not found in the database");
}

/// A cron job's and an immediate job's stored records are overwritten with garbage while the
/// node is stopped: the node starts again, `/healthcheck` is 200, the task listing and the task
/// answer 200 with the good job, the broken job answers 404, and a new job still runs.
#[tokio::test]
async fn unreadable_rows_do_not_stop_listing_or_a_restart() {
    let mut node = Node::start(&[]).await;
    let good = node
        .post_job("T", json!({"image": image(), "command": "echo good"}))
        .await;
    let broken = node
        .post_job("T", json!({"image": image(), "command": "echo broken"}))
        .await;
    let cron = node
        .post_job(
            "T",
            json!({"image": image(), "command": "true", "cron": "0 0 1 1 *"}),
        )
        .await;
    for posted in [&good, &broken] {
        node.wait_finished(posted["executionUrl"].as_str().unwrap())
            .await;
    }
    let status = node.terminate();
    assert!(status.success(), "node exited with {status}");
    for posted in [&broken, &cron] {
        corrupt_job_record(&node.data_dir, posted["jobId"].as_str().unwrap());
    }

    node.start_again().await;
    assert_eq!(node.get("/healthcheck").await.status(), 200);
    node.get_json("/tasks/").await;
    let task = node.get_json("/tasks/T/").await;
    let jobs = task["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{task}");
    assert!(
        jobs[0]
            .to_string()
            .contains(good["jobId"].as_str().unwrap()),
        "{task}"
    );
    node.get_json(path_of(good["jobUrl"].as_str().unwrap()))
        .await;
    for posted in [&broken, &cron] {
        let path = path_of(posted["jobUrl"].as_str().unwrap());
        assert_eq!(node.get(path).await.status(), 404, "GET {path}");
    }
    assert!(
        node.log().contains("cannot be parsed"),
        "the skipped rows are not logged:\n{}",
        node.log()
    );

    let fresh = node
        .post_job("T", json!({"image": image(), "command": "echo fresh"}))
        .await;
    let execution = node
        .wait_finished(fresh["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{execution}");
}

/// Starts the binary on `data_dir` and waits (bounded) for it to exit; returns its exit status
/// and what it wrote to stderr.
fn run_until_exit(
    data_dir: &std::path::Path,
    within: Duration,
) -> (std::process::ExitStatus, String) {
    let farms = format!(
        r#"[{{"match": "", "hosts": ["{}"], "maxRunning": 8}}]"#,
        docker_hosts()[0]
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stderr_path = data_dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fastlane-node"))
        .args(["start", "-b", "127.0.0.1", "-p", &port.to_string()])
        .env("DATA_DIR", data_dir)
        .env("DOCKER_HOSTS", farms)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the node did not exit within {within:?}:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&stderr_path).unwrap())
}

/// A node whose actor system cannot start (reconciliation fails: the executions table lost its
/// status column, which opening the database does not read) exits non-zero within seconds, the
/// reason on stderr.
#[tokio::test]
async fn a_root_that_cannot_start_ends_the_process() {
    let mut node = Node::start(&[]).await;
    let status = node.terminate();
    assert!(status.success());
    let connection = rusqlite::Connection::open(node.data_dir.join("fastlane.sqlite3")).unwrap();
    connection
        .execute_batch("ALTER TABLE executions RENAME COLUMN status TO broken;")
        .unwrap();
    drop(connection);
    let (status, stderr) = run_until_exit(&node.data_dir, Duration::from_secs(20));
    assert!(!status.success(), "exited with {status}:\n{stderr}");
    assert!(
        stderr.contains("could not start the actors") && stderr.contains("status"),
        "no reason on stderr:\n{stderr}"
    );
}

/// A root that starts but dies right after (its scheduler cannot load: the schedules table lost
/// its next_fire_at column) ends the process non-zero with the reason, instead of a gateway answering 503
/// forever.
#[tokio::test]
async fn a_root_that_dies_ends_the_process() {
    let mut node = Node::start(&[]).await;
    let status = node.terminate();
    assert!(status.success());
    let connection = rusqlite::Connection::open(node.data_dir.join("fastlane.sqlite3")).unwrap();
    connection
        .execute_batch("ALTER TABLE schedules RENAME COLUMN next_fire_at TO broken;")
        .unwrap();
    drop(connection);
    let (status, stderr) = run_until_exit(&node.data_dir, Duration::from_secs(30));
    assert!(!status.success(), "exited with {status}:\n{stderr}");
    assert!(
        stderr.contains("the actor system ended"),
        "no reason on stderr:\n{stderr}"
    );
}

/// A cron job whose stored record is overwritten with garbage while the node runs leaves the
/// scheduler's index at its next firing: the unreadable row is logged once (not at every
/// 2-second sync), and the healthy cron job beside it keeps firing.
#[tokio::test]
async fn a_broken_cron_row_is_logged_once_and_others_keep_firing() {
    let node = Node::start(&[]).await;
    let healthy = node
        .post_job(
            "C",
            json!({"image": image(), "command": "true", "cron": "*/2 * * * * *"}),
        )
        .await;
    // Fires once a day, 6 s from now: time enough to break its row first.
    let at = time::OffsetDateTime::now_utc() + Duration::from_secs(6);
    let cron = format!("{} {} {} * * *", at.second(), at.minute(), at.hour());
    let broken = node
        .post_job(
            "C",
            json!({"image": image(), "command": "true", "cron": cron}),
        )
        .await;
    let broken_id = broken["jobId"].as_str().unwrap().to_string();
    corrupt_job_record(&node.data_dir, &broken_id);
    let healthy_path = path_of(healthy["jobUrl"].as_str().unwrap()).to_string();
    let runs = || async {
        node.get_json(&healthy_path).await["job"]["executionCount"]
            .as_u64()
            .unwrap_or(0)
    };
    let mentions = |log: &str| {
        log.lines()
            .filter(|line| line.contains(&broken_id) && line.contains("cannot be parsed"))
            .count()
    };
    // Its firing time passes, then several syncs (every 2 s) while the healthy job fires on.
    common::wait_until(
        Duration::from_secs(60),
        "the broken firing is logged",
        || async { mentions(&node.log()) >= 1 },
    )
    .await;
    let before = runs().await;
    common::wait_until(
        Duration::from_secs(90),
        "healthy cron fires 5 more times",
        || async { runs().await >= before + 5 },
    )
    .await;
    assert_eq!(
        mentions(&node.log()),
        1,
        "logged more than once:\n{}",
        node.log()
    );
}

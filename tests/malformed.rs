//! Bad input never panics and never yields a 5xx: every malformed request gets a 4xx with an
//! error JSON (`{"error", "operation"}`, `application/json`), and nothing is created.

mod common;

use common::{docker, docker_hosts, image, Node};
use reqwest::Method;

async fn assert_refused(
    node: &Node,
    method: Method,
    path: &str,
    body: Vec<u8>,
    content_type: Option<&str>,
) {
    let mut request = reqwest::Client::new()
        .request(method.clone(), node.url(path))
        .body(body.clone());
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.unwrap();
    let response = common::openapi::checked(method.as_str(), response).await;
    let status = response.status();
    let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).into_owned();
    assert!(
        status.is_client_error(),
        "{method} {path} {shown:?} answered {status}"
    );
    let headers = response.headers().clone();
    assert_eq!(
        headers["content-type"], "application/json",
        "{method} {path} {shown:?}"
    );
    let error: serde_json::Value = response.json().await.unwrap();
    assert!(
        error["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{error}"
    );
    assert!(error["operation"].is_string(), "{error}");
}

/// A corpus of malformed requests: bad JSON, wrong types, negative numbers, huge bodies, bad
/// paths, bad pages, wrong methods. All 4xx, and afterwards no task exists and no container ran.
#[tokio::test]
async fn malformed_requests_get_4xx_and_create_nothing() {
    let node = Node::start(&[]).await;
    let image = image();
    let valid = |extra: &str| format!(r#"{{"image": "{image}", "command": "echo x"{extra}}}"#);
    let mut bodies: Vec<Vec<u8>> = [
        "".to_string(),
        "{".to_string(),
        "[]".to_string(),
        "[1, 2]".to_string(),
        "123".to_string(),
        "\"\"".to_string(),
        "\"text\"".to_string(),
        "null".to_string(),
        "true".to_string(),
        r#"{"image": "x"}"#.to_string(),
        r#"{"command": "x"}"#.to_string(),
        r#"{"image": null, "command": "x"}"#.to_string(),
        r#"{"image": 1, "command": "x"}"#.to_string(),
        r#"{"image": "x", "command": 1}"#.to_string(),
        r#"{"image": "x", "command": ["echo"]}"#.to_string(),
        r#"{"image": "", "command": "x"}"#.to_string(),
        r#"{"image": "a b", "command": "x"}"#.to_string(),
        valid(r#", "command": "echo 'unbalanced""#).replace(r#""command": "echo x", "#, ""),
        valid(r#", "retries": -1"#),
        valid(r#", "retries": 1.5"#),
        valid(r#", "retries": "3""#),
        valid(r#", "retries": 100000"#),
        valid(r#", "timeout": -1"#),
        valid(r#", "timeout": 0"#),
        valid(r#", "timeout": "10""#),
        valid(r#", "timeout": [1]"#),
        valid(r#", "expiration": "tomorrow""#),
        valid(r#", "expiration": -5"#),
        valid(r#", "envs": []"#),
        valid(r#", "envs": "A=1""#),
        valid(r#", "envs": {"A": {"nested": 1}}"#),
        valid(r#", "envs": {"": "x"}"#),
        valid(r#", "envs": {"A=B": "x"}"#),
        valid(r#", "notify": "me@example.com""#),
        valid(r#", "notify": {"fails": "me@example.com"}"#),
        valid(r#", "notify": {"fails": [42]}"#),
        valid(r#", "webhooks": {"succeeds": [{"nourl": 1}]}"#),
        valid(r#", "webhooks": []"#),
        valid(r#", "additionalDNSEntries": {"db": "not-an-ip"}"#),
        valid(r#", "additionalDNSEntries": ["db"]"#),
        valid(r#", "startIn": "5 minutes""#),
        valid(r#", "startIn": 300"#),
        valid(r#", "cron": "every day""#),
        valid(r#", "cron": "* * * * *", "timezone": "Nowhere/City""#),
        valid(r#", "cron": "* * * * *", "overlap": "sometimes""#),
        valid(r#", "timezone": "UTC""#),
        valid(r#", "backoff": {"minMs": -1}"#),
        valid(r#", "startAt": 1, "cron": "* * * * *""#),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    bodies.push(vec![0xff, 0xfe, b'{', b'}']);
    bodies.push(
        format!(
            r#"{{"image": "{image}", "command": "{}"}}"#,
            "x".repeat(2 * 1024 * 1024)
        )
        .into_bytes(),
    );
    for body in bodies {
        assert_refused(
            &node,
            Method::POST,
            "/tasks/malformed/",
            body.clone(),
            Some("application/json"),
        )
        .await;
        assert_refused(&node, Method::POST, "/tasks/malformed", body, None).await;
    }
    let long_task = format!("/tasks/{}/", "t".repeat(300));
    assert_refused(
        &node,
        Method::POST,
        &long_task,
        valid("").into_bytes(),
        None,
    )
    .await;
    assert_refused(
        &node,
        Method::POST,
        "/tasks/bad%0Aid/",
        valid("").into_bytes(),
        None,
    )
    .await;
    assert_refused(
        &node,
        Method::POST,
        "/tasks/%ZZ/",
        valid("").into_bytes(),
        None,
    )
    .await;
    for path in [
        "/tasks/?page=0",
        "/tasks/?page=-1",
        "/tasks/?page=abc",
        "/tasks/?page=99999999999999999999",
        "/tasks/?page=2",
        "/search/",
        "/search/?query=",
        "/search/?query=x&page=0",
        "/tasks/unknown/",
        "/tasks/unknown/jobs/not-a-uuid/",
        "/tasks/unknown/jobs/00000000-0000-0000-0000-000000000000/",
        "/tasks/unknown/jobs/00000000-0000-0000-0000-000000000000/stdout/",
        "/tasks/unknown/jobs/not-a-uuid/executions/x/",
        "/tasks/unknown/jobs/00000000-0000-0000-0000-000000000000/executions/00000000-0000-0000-0000-000000000000/logs",
        "/no/such/route",
    ] {
        assert_refused(&node, Method::GET, path, Vec::new(), None).await;
    }
    assert_refused(&node, Method::DELETE, "/tasks/", Vec::new(), None).await;
    assert_refused(&node, Method::PATCH, "/tasks/x/", Vec::new(), None).await;

    let tasks = node.get_json("/tasks/").await;
    assert_eq!(tasks["total"], 0, "{tasks}");
    let status = node.get_json("/status/").await;
    assert_eq!(status["jobs"]["count"], 0);
    let containers = docker(
        &docker_hosts()[0],
        &[
            "ps",
            "-a",
            "--filter",
            "label=fastlane.task_id=malformed",
            "--format",
            "{{.ID}}",
        ],
    );
    assert_eq!(containers.trim(), "");
}

/// The shapes `tests/fuzz.rs` generates, pinned as fixed cases: nesting past serde_json's limit
/// (128) in the body and in a field, numbers beyond their field's range, duplicate keys with a
/// bad second value, strings that are not UTF-8 or hold a lone surrogate. All 4xx. (A huge
/// `timeout` is not among them: it is clamped to HARD_EXECUTION_TIMEOUT_SECONDS, as the
/// original.)
#[tokio::test]
async fn fuzz_shapes_get_4xx() {
    let node = Node::start(&[]).await;
    let image = image();
    let with = |field: &str, value: &str| {
        format!(r#"{{"image": "{image}", "command": "true", "startIn": "240h", {field}: {value}}}"#)
            .into_bytes()
    };
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let bodies: Vec<Vec<u8>> = vec![
        deep.clone().into_bytes(),
        "{\"a\":".repeat(3000).into_bytes(),
        with("\"envs\"", &deep),
        with("\"webhooks\"", &deep),
        with("\"retries\"", "1e400"),
        with("\"expiration\"", "-9223372036854775809"),
        with("\"maxConcurrent\"", "4294967296"),
        with("\"startIn\"", "\"99999999999h\""),
        with("\"image\"", "\"\\ud800\""),
        with("\"retries\": 1, \"retries\"", "\"x\""),
        with("\"backoff\"", r#"{"minMs": 1e400}"#),
        b"{\"image\": \"\xc0\xaf\", \"command\": \"\xed\xa0\x80\"}".to_vec(),
    ];
    for body in bodies {
        assert_refused(
            &node,
            Method::POST,
            "/tasks/fuzz-shapes/",
            body,
            Some("application/json"),
        )
        .await;
    }
    let tasks = node.get_json("/tasks/").await;
    assert_eq!(tasks["total"], 0, "{tasks}");
}

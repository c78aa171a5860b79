//! End-to-end: every request gets an id (`X-Request-ID`: the client's when it is safe to log,
//! else a new UUID), echoed in the response and carried by the request's access-log line, which
//! names the route pattern (not the raw path), the status, the time taken, the response bytes,
//! the client and the credential.

mod common;

use common::{wait_until, Node};
use serde_json::Value;
use std::time::Duration;

/// Sends GET `path` with `request_id` (if any) and returns the status and the echoed id.
async fn get_with_id(node: &Node, path: &str, request_id: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(node.url(path));
    if let Some(id) = request_id {
        request = request.header("X-Request-ID", id);
    }
    let response = request.send().await.unwrap();
    let echoed = response
        .headers()
        .get("x-request-id")
        .expect("X-Request-ID in every response")
        .to_str()
        .unwrap()
        .to_string();
    (response.status().as_u16(), echoed)
}

/// The node's JSON log lines that are access-log lines.
fn access_lines(node: &Node) -> Vec<Value> {
    node.log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["fields"]["message"] == "request")
        .collect()
}

/// The access-log line of the request with id `request_id`, waiting for it to be written.
async fn access_line(node: &Node, request_id: &str) -> Value {
    wait_until(Duration::from_secs(10), "the access-log line", || async {
        access_lines(node)
            .iter()
            .any(|line| line["span"]["request_id"] == request_id)
    })
    .await;
    access_lines(node)
        .into_iter()
        .find(|line| line["span"]["request_id"] == request_id)
        .unwrap()
}

/// A valid id is echoed and logged; a missing, too long or non-visible one is replaced by a new
/// UUID; the line names the route pattern, status, bytes, client and credential.
#[tokio::test]
async fn request_ids_are_echoed_and_logged() {
    let node = Node::start(&[("LOG_FORMAT", "json")]).await;

    let (status, echoed) = get_with_id(&node, "/status/", Some("client-id-42")).await;
    assert_eq!((status, echoed.as_str()), (200, "client-id-42"));
    let line = access_line(&node, "client-id-42").await;
    let fields = &line["fields"];
    assert_eq!(fields["method"], "GET", "{line}");
    assert_eq!(fields["route"], "/status", "{line}");
    assert_eq!(fields["status"], 200, "{line}");
    assert!(fields["elapsed_ms"].is_u64(), "{line}");
    assert!(
        fields["bytes"].as_u64().is_some_and(|bytes| bytes > 0),
        "{line}"
    );
    assert_eq!(fields["peer"], "127.0.0.1", "{line}");
    assert_eq!(fields["credential_kind"], "anonymous", "{line}");

    // A made-up job: the line names the pattern, never the path with its ids.
    let job_path = "/tasks/secret-looking-task/jobs/6f1c2a52-1d0e-4b8e-9a57-0a2b6c1f3e10/";
    let (status, echoed) = get_with_id(&node, job_path, Some("job-lookup")).await;
    assert_eq!((status, echoed.as_str()), (404, "job-lookup"));
    let line = access_line(&node, "job-lookup").await;
    assert_eq!(line["fields"]["route"], "/tasks/:task/jobs/:job", "{line}");
    assert_eq!(line["fields"]["status"], 404, "{line}");
    assert!(!line.to_string().contains("secret-looking-task"), "{line}");

    // Generated when missing; replaced when too long or not visible ASCII.
    let too_long = "a".repeat(129);
    for sent in [
        None,
        Some(too_long.as_str()),
        Some("has space"),
        Some("ünïcode"),
    ] {
        let (status, echoed) = get_with_id(&node, "/healthcheck", sent).await;
        assert_eq!(status, 200);
        assert!(
            uuid::Uuid::parse_str(&echoed).is_ok(),
            "{sent:?} → {echoed}"
        );
        let line = access_line(&node, &echoed).await;
        assert_eq!(line["fields"]["route"], "/healthcheck", "{line}");
    }
    let longest = "b".repeat(128);
    let (_, echoed) = get_with_id(&node, "/nowhere/at/all", Some(&longest)).await;
    assert_eq!(echoed, longest);
    let line = access_line(&node, &longest).await;
    assert_eq!(line["fields"]["route"], "unmatched", "{line}");
    assert_eq!(line["fields"]["status"], 404, "{line}");
}

/// In the default text format the line carries the request id too (as the span's field), and
/// a request refused for its credentials is logged with its id and no credential.
#[tokio::test]
async fn text_log_lines_carry_the_request_id() {
    let node = Node::start(&[
        ("BASIC_AUTH_USERNAME", "harness"),
        ("BASIC_AUTH_PASSWORD", "harness"),
    ])
    .await;
    let response = reqwest::Client::new()
        .get(node.url("/tasks/"))
        .header("X-Request-ID", "text-format-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["x-request-id"], "text-format-1");
    let response = reqwest::Client::new()
        .get(node.url("/tasks/"))
        .basic_auth("harness", Some("harness"))
        .header("X-Request-ID", "text-format-2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    wait_until(Duration::from_secs(10), "both access-log lines", || async {
        let log = node.log();
        log.lines()
            .filter(|line| line.contains("request_id=text-format-"))
            .count()
            >= 2
    })
    .await;
    let log = node.log();
    let line_of = |id: &str| {
        log.lines()
            .find(|line| line.contains(&format!("request_id={id}")) && line.contains("route="))
            .unwrap_or_else(|| panic!("no access line for {id}:\n{log}"))
            .to_string()
    };
    let refused = line_of("text-format-1");
    assert!(refused.contains("status=401"), "{refused}");
    assert!(refused.contains("credential_kind=\"none\""), "{refused}");
    let served = line_of("text-format-2");
    assert!(served.contains("status=200"), "{served}");
    assert!(served.contains("credential=\"harness\""), "{served}");
    assert!(served.contains("route=\"/tasks\""), "{served}");
    assert!(
        !served.contains('\u{1b}'),
        "no colours in a log file: {served}"
    );
}

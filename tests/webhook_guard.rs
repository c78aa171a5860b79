//! End-to-end: webhooks cannot reach the inside. Real executions call real HTTP receivers on
//! loopback addresses, which are forbidden unless `WEBHOOKS_ALLOW_NETWORKS` allows them; the
//! node's own Docker host stays forbidden even then; redirects are not followed; only 1 KiB of
//! an answer and none of its headers are kept; bad methods and headers are refused at enqueue.

mod common;

use common::{docker_hosts, image, path_of, wait_until, Node};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// What a receiver answers: status, headers and body.
type Answer = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// A receiver listening on `ip` that records the path of every request and answers each with
/// `answer(path)`. Returns its base URL and the recorded paths.
async fn receiver(
    ip: &str,
    answer: impl Fn(&str) -> Answer + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let paths = Arc::new(Mutex::new(Vec::new()));
    let recorded = paths.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (recorded, answer) = (recorded.clone(), answer.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let path = request.uri().path().to_string();
                        recorded.lock().unwrap().push(path.clone());
                        let (status, headers, body) = answer(&path);
                        let mut response = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body),
                        ));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        for (name, value) in headers {
                            response.headers_mut().insert(name, value.parse().unwrap());
                        }
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (base, paths)
}

fn ok(_path: &str) -> Answer {
    (200, Vec::new(), b"received".to_vec())
}

/// Runs a job with the `finishes` hooks given, waits until `count` webhook attempts are
/// recorded, then a little longer (retries, were any made, come 100 ms apart) and returns the
/// execution's `webhookDispatch`.
async fn dispatch_of(node: &Node, task: &str, hooks: Value, count: usize) -> Vec<Value> {
    let posted = node
        .post_job(
            task,
            json!({"image": image(), "command": "echo hi", "webhooks": {"finishes": hooks}}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    node.wait_finished(&execution_url).await;
    let path = path_of(&execution_url).to_string();
    let dispatch = || async {
        node.get_json(&path).await["execution"]["metadata"]["webhookDispatch"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    wait_until(Duration::from_secs(30), "the webhook attempts", || async {
        dispatch().await.len() >= count
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    dispatch().await
}

/// The one entry whose URL contains `part`.
fn entry<'a>(dispatch: &'a [Value], part: &str) -> &'a Value {
    let found: Vec<&Value> = dispatch
        .iter()
        .filter(|entry| entry["url"].as_str().unwrap_or_default().contains(part))
        .collect();
    assert_eq!(found.len(), 1, "{part} in {dispatch:?}");
    found[0]
}

/// By default a webhook to loopback (by address, by name, as an IPv4-mapped IPv6 address) or
/// to the link-local cloud metadata address is refused: recorded once with the reason, not
/// retried although it asks for retries, and the receiver gets nothing.
#[tokio::test]
async fn webhooks_to_the_inside_are_refused_once_and_recorded() {
    let (base, paths) = receiver("127.0.0.1", ok).await;
    let port = base.rsplit(':').next().unwrap().to_string();
    let node = Node::start(&[("WEBHOOKS_EXPONENTIAL_BACKOFF_MIN_MS", "100")]).await;
    let hooks = json!([
        {"url": format!("{base}/by-address"), "retries": 3},
        {"url": format!("http://localhost:{port}/by-name"), "retries": 3},
        {"url": format!("http://[::ffff:127.0.0.1]:{port}/mapped")},
        {"url": "http://169.254.169.254/latest/meta-data/"},
    ]);
    let dispatch = dispatch_of(&node, "refused-hooks", hooks, 4).await;
    assert_eq!(dispatch.len(), 4, "one attempt each: {dispatch:?}");
    for entry in &dispatch {
        assert_eq!(entry["refused"], true, "{entry}");
        assert_eq!(entry["attempt"], 1, "{entry}");
        assert!(entry["statusCode"].is_null(), "{entry}");
        let url = entry["url"].as_str().unwrap();
        let reason = if url.contains("169.254") {
            "is a link-local address"
        } else {
            "is a loopback address"
        };
        let error = entry["error"].as_str().unwrap();
        assert!(
            error.starts_with("refused: ") && error.contains(reason),
            "{entry}"
        );
    }
    assert!(
        paths.lock().unwrap().is_empty(),
        "{:?}",
        paths.lock().unwrap()
    );
}

/// `WEBHOOKS_ALLOW_NETWORKS=127.0.0.0/8` lets a hook reach a receiver on loopback, but the
/// node's own Docker host (an address and port in that network) stays refused.
#[tokio::test]
async fn allowed_networks_open_loopback_but_not_the_docker_host() {
    let (base, paths) = receiver("127.0.0.1", ok).await;
    let node = Node::start(&[("WEBHOOKS_ALLOW_NETWORKS", "127.0.0.0/8")]).await;
    let docker_host = docker_hosts()[0].clone();
    assert!(
        docker_host.starts_with("127."),
        "the test engines listen on loopback"
    );
    let hooks = json!([
        {"url": format!("{base}/allowed")},
        {"url": format!("http://{docker_host}/containers/create?name=from-a-hook"), "retries": 2},
    ]);
    let dispatch = dispatch_of(&node, "allowed-hooks", hooks, 2).await;
    assert_eq!(dispatch.len(), 2, "{dispatch:?}");
    let (to_receiver, to_docker) = (
        entry(&dispatch, "/allowed"),
        entry(&dispatch, "/containers/"),
    );
    assert_eq!(to_receiver["statusCode"], 200, "{to_receiver}");
    assert_eq!(to_receiver["body"], "received");
    assert!(to_receiver.get("refused").is_none(), "{to_receiver}");
    assert_eq!(*paths.lock().unwrap(), ["/allowed"]);
    assert_eq!(to_docker["refused"], true, "{to_docker}");
    let error = to_docker["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("the node's Docker host {docker_host}")),
        "{to_docker}"
    );
}

/// A receiver answering 302 to a forbidden address: the answer is recorded as it is (a 3xx is
/// not a failure, so no retry) and the redirect is not followed. The target is forbidden: a
/// hook straight to it is refused.
#[tokio::test]
async fn redirects_are_not_followed() {
    let (target, target_paths) = receiver("127.0.0.2", ok).await;
    let location = format!("{target}/stolen");
    let (base, paths) = receiver("127.0.0.1", move |_| {
        (302, vec![("location", location.clone())], Vec::new())
    })
    .await;
    let node = Node::start(&[("WEBHOOKS_ALLOW_NETWORKS", "127.0.0.1/32")]).await;
    let hooks = json!([
        {"url": format!("{base}/redirect"), "retries": 2},
        {"url": format!("{target}/direct")},
    ]);
    let dispatch = dispatch_of(&node, "redirect-hooks", hooks, 2).await;
    assert_eq!(dispatch.len(), 2, "{dispatch:?}");
    let (redirected, direct) = (entry(&dispatch, "/redirect"), entry(&dispatch, "/direct"));
    assert_eq!(redirected["statusCode"], 302, "{redirected}");
    assert_eq!(redirected["attempt"], 1);
    assert_eq!(*paths.lock().unwrap(), ["/redirect"]);
    assert_eq!(direct["refused"], true, "{direct}");
    assert!(
        target_paths.lock().unwrap().is_empty(),
        "{:?}",
        target_paths.lock().unwrap()
    );
}

/// A large answer: the record keeps at most 1 KiB of it, cut on a character boundary, and none
/// of the answer's headers.
#[tokio::test]
async fn answers_are_kept_short_and_without_headers() {
    // One ASCII byte, then two-byte characters: 1 KiB ends in the middle of one.
    let answer_body = format!("a{}", "é".repeat(100_000));
    let sent = answer_body.clone();
    let (base, _paths) = receiver("127.0.0.1", move |_| {
        (
            200,
            vec![("x-answer-secret", "s3cret".to_string())],
            sent.clone().into_bytes(),
        )
    })
    .await;
    let node = Node::start(&[("WEBHOOKS_ALLOW_NETWORKS", "127.0.0.0/8")]).await;
    let dispatch = dispatch_of(
        &node,
        "large-answer",
        json!([{"url": format!("{base}/big")}]),
        1,
    )
    .await;
    let entry = entry(&dispatch, "/big");
    assert_eq!(entry["statusCode"], 200);
    let body = entry["body"].as_str().unwrap();
    assert_eq!(body.len(), 1023, "1 + 511 × 2 bytes");
    assert!(answer_body.starts_with(body));
    assert!(entry.get("headers").is_none(), "{entry}");
    assert!(!entry.to_string().contains("s3cret"), "{entry}");
}

/// Enqueue refuses a hook with a method other than POST, PUT or PATCH, or with a `Host` or
/// hop-by-hop header: a 400 naming the field, on POST and PUT alike; PATCH is accepted.
#[tokio::test]
async fn bad_methods_and_headers_are_refused_at_enqueue() {
    let node = Node::start(&[]).await;
    let client = reqwest::Client::new();
    let job = |hook: Value| json!({"image": image(), "command": "true", "startIn": "1h", "webhooks": {"fails": [hook]}});
    for (hook, field) in [
        (
            json!({"url": "http://example.com/", "method": "GET"}),
            "'webhooks.fails[0].method'",
        ),
        (
            json!({"url": "http://example.com/", "headers": {"Host": "internal"}}),
            "'webhooks.fails[0].headers.Host'",
        ),
        (
            json!({"url": "http://example.com/", "headers": {"Transfer-Encoding": "chunked"}}),
            "'webhooks.fails[0].headers.Transfer-Encoding'",
        ),
    ] {
        for request in [
            client.post(node.url("/tasks/bad-hooks/")),
            client.put(node.url("/tasks/bad-hooks/jobs/7d1bbe55-4bb7-4e11-9d5c-2a1c8e5b9c01/")),
        ] {
            let response = request.json(&job(hook.clone())).send().await.unwrap();
            assert_eq!(response.status(), 400, "{hook}");
            let error: Value = response.json().await.unwrap();
            assert!(
                error["error"].as_str().unwrap().starts_with(field),
                "{hook}: {error}"
            );
            assert!(error["operation"].is_string(), "{error}");
        }
    }
    let accepted = client
        .post(node.url("/tasks/bad-hooks/"))
        .json(&job(
            json!({"url": "http://example.com/", "method": "patch"}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
}

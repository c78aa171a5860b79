//! Secure by default (issue 13, points 1–3), end to end against the real binary: a node
//! listens on loopback unless it has credentials or is told to accept anonymous requests;
//! basic auth and API tokens with scopes guard every route, WebSockets included; cross-site
//! state changes and WebSocket upgrades are refused; without credentials, a `Host` that could
//! be a rebound DNS name is refused.

mod common;

use common::{docker_hosts, image, listening_port, wait_until, Node};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

fn fastlane(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_fastlane-node"))
        .args(args)
        .env("DATA_DIR", dir.path())
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn farm() -> String {
    format!(
        r#"[{{"match": "", "hosts": ["{}"], "maxRunning": 4}}]"#,
        docker_hosts()[0]
    )
}

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Sends `request` as it is over a new connection and returns the status code.
async fn raw_status(port: u16, request: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answer in 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// `GET /healthcheck/` with `host` as the `Host` header.
async fn status_for_host(port: u16, host: &str) -> u16 {
    let request =
        format!("GET /healthcheck/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    raw_status(port, &request).await
}

/// The status of a WebSocket handshake on `path` with extra `headers` (101 when accepted).
async fn websocket_status(node: &Node, path: &str, headers: &[(&str, &str)]) -> u16 {
    let url = node.url(path).replace("http://", "ws://");
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(error) => panic!("websocket {path}: {error}"),
    }
}

/// `fastlane-node start` without `-b` listens on 127.0.0.1 only; a non-loopback address
/// without credentials is refused with a message saying how to configure them; with
/// `ALLOW_ANONYMOUS=true` it starts, warns in its log and in `/status/`.
#[tokio::test]
async fn safe_start() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fastlane-node"))
        .args(["start", "-p", "0"])
        .env("DATA_DIR", dir.path())
        .env("DOCKER_HOSTS", farm())
        // Its "listening" line, which says the port, is logged at info.
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let port = listening_port(&log_path, 0, &mut child).await;
    let url = format!("http://127.0.0.1:{port}/healthcheck");
    wait_until(Duration::from_secs(20), "default node", || async {
        reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(log.contains(&format!("127.0.0.1:{port}")), "{log}");

    let output = fastlane(&["start", "-b", "0.0.0.0", "-p", "0"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for hint in [
        "BASIC_AUTH_USERNAME",
        "API_TOKENS",
        "ALLOW_ANONYMOUS",
        "127.0.0.1",
    ] {
        assert!(stderr.contains(hint), "{hint} missing: {stderr}");
    }

    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("node.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fastlane-node"))
        .args(["start", "-b", "0.0.0.0", "-p", "0"])
        .env("DATA_DIR", dir.path())
        .env("DOCKER_HOSTS", farm())
        // Its "listening" line, which says the port, is logged at info.
        .env("RUST_LOG", "info")
        .env("ALLOW_ANONYMOUS", "true")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let port = listening_port(&log_path, 0, &mut child).await;
    let url = format!("http://127.0.0.1:{port}/status/");
    wait_until(Duration::from_secs(20), "anonymous node", || async {
        reqwest::get(&url).await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let status: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let warnings = status["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|warning| warning.as_str().unwrap().contains("anonymous")),
        "{status}"
    );
    assert!(status["hosts"].is_array() && status["queues"].is_object());
    assert!(log.contains("anonymous access"), "{log}");
}

/// A basic-auth name or password set to an empty value stops start-up (it must not leave the
/// node open), and so does one without the other.
#[test]
fn empty_basic_auth_is_a_start_up_error() {
    for env in [
        &[("BASIC_AUTH_USERNAME", ""), ("BASIC_AUTH_PASSWORD", "p")][..],
        &[("BASIC_AUTH_USERNAME", "u"), ("BASIC_AUTH_PASSWORD", "")],
        &[("BASIC_AUTH_USERNAME", "u")],
    ] {
        let output = fastlane(&["start", "-p", "0"], env);
        assert!(!output.status.success(), "{env:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("BASIC_AUTH_"), "{env:?}: {stderr}");
    }
    let output = fastlane(
        &["start", "-p", "0"],
        &[(
            "API_TOKENS",
            r#"[{"name": "a", "token": "s3cret", "scopes": ["read"]}]"#,
        )],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("API_TOKENS"), "{stderr}");
}

/// With basic auth every route needs the login (401 with the realm in `WWW-Authenticate`
/// otherwise, also for a wrong one); the right one has every scope; the access log names it;
/// the `Host` header is not restricted then.
#[tokio::test]
async fn basic_auth_guards_every_route() {
    let node = Node::start(&[
        ("BASIC_AUTH_USERNAME", "operator"),
        ("BASIC_AUTH_PASSWORD", "s3cret pass:word"),
        ("BASIC_AUTH_REALM", "fastlane"),
    ])
    .await;
    let client = reqwest::Client::new();
    for path in ["/status/", "/tasks/", "/healthcheck"] {
        let answer = client.get(node.url(path)).send().await.unwrap();
        assert_eq!(answer.status(), 401, "{path}");
        assert_eq!(
            answer.headers()["www-authenticate"],
            "Basic realm=\"fastlane\""
        );
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["operation"], "authorize");
    }
    let wrong = client
        .get(node.url("/status/"))
        .basic_auth("operator", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client
        .get(node.url("/status/"))
        .basic_auth("operator", Some("s3cret pass:word"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let blacklist = client
        .post(node.url("/docker-executor/blacklist"))
        .basic_auth("operator", Some("s3cret pass:word"))
        .json(&json!({"host": "127.0.0.1:9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(blacklist.status(), 200);
    let login = "Authorization: Basic b3BlcmF0b3I6czNjcmV0IHBhc3M6d29yZA==";
    let rebound = format!(
        "GET /healthcheck/ HTTP/1.1\r\nHost: evil.example\r\n{login}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_status(node.port, &rebound).await, 200);
    let log = node.log();
    assert!(
        log.lines()
            .any(|line| line.contains("request") && line.contains("operator")),
        "{log}"
    );
    assert!(!log.contains("s3cret"), "the password is never logged");
}

/// API tokens: `read` may GET and open a WebSocket but not POST; `submit` may create, stop
/// and retry jobs but not use the blacklist; `admin` may; an unknown token gets 401 with a
/// `Bearer` challenge; a missing scope is 403.
#[tokio::test]
async fn api_token_scopes() {
    let tokens = json!([
        {"name": "dashboard", "sha256": sha256_hex("read-token"), "scopes": ["read"]},
        {"name": "ci", "sha256": sha256_hex("submit-token"), "scopes": ["read", "submit"]},
        {"name": "ops", "sha256": sha256_hex("admin-token"), "scopes": ["admin"]},
    ]);
    let node = Node::start(&[
        ("API_TOKENS", &tokens.to_string()),
        ("BASIC_AUTH_USERNAME", "harness"),
        ("BASIC_AUTH_PASSWORD", "harness"),
    ])
    .await;
    let client = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let mut request = client
            .request(method.clone(), node.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            common::openapi::checked(method.as_str(), response).await
        }
    };
    use reqwest::Method;
    let job = json!({"image": image(), "command": "sleep 30"});

    let unknown = send(Method::GET, "/status/", "no-such-token", None).await;
    assert_eq!(unknown.status(), 401);
    let challenges: Vec<_> = unknown
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|value| value.to_str().unwrap().to_string())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Bearer")),
        "{challenges:?}"
    );

    assert_eq!(
        send(Method::GET, "/status/", "read-token", None)
            .await
            .status(),
        200
    );
    assert_eq!(
        send(Method::GET, "/tasks/", "read-token", None)
            .await
            .status(),
        200
    );
    let refused = send(
        Method::POST,
        "/tasks/security/",
        "read-token",
        Some(job.clone()),
    )
    .await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("submit"), "{body}");
    let ws = "/tasks/security/jobs/00000000-0000-0000-0000-000000000000/ws/";
    let bearer = |token: &str| format!("Bearer {token}");
    assert_eq!(
        websocket_status(&node, ws, &[("authorization", &bearer("read-token"))]).await,
        101
    );
    assert_eq!(websocket_status(&node, ws, &[]).await, 401);
    assert_eq!(
        websocket_status(&node, ws, &[("authorization", &bearer("admin-token"))]).await,
        403
    );

    let created = send(Method::POST, "/tasks/security/", "submit-token", Some(job)).await;
    assert_eq!(created.status(), 200);
    let created: Value = created.json().await.unwrap();
    let job_url = created["jobUrl"].as_str().unwrap();
    let job_path = common::path_of(job_url).to_string();
    for action in ["stop", "retry"] {
        let answer = send(
            Method::POST,
            &format!("{job_path}{action}/"),
            "submit-token",
            None,
        )
        .await;
        assert!(
            ![401, 403].contains(&answer.status().as_u16()),
            "{action}: {}",
            answer.status()
        );
    }
    let blacklist = json!({"host": "127.0.0.1:9"});
    let path = "/docker-executor/blacklist";
    let refused = send(Method::POST, path, "submit-token", Some(blacklist.clone())).await;
    assert_eq!(refused.status(), 403);
    assert_eq!(
        send(Method::POST, path, "admin-token", Some(blacklist.clone()))
            .await
            .status(),
        200
    );
    assert_eq!(
        send(Method::DELETE, path, "admin-token", Some(blacklist))
            .await
            .status(),
        200
    );
    assert_eq!(
        send(Method::GET, "/status/", "admin-token", None)
            .await
            .status(),
        403
    );
    let log = node.log();
    assert!(
        log.lines()
            .any(|line| line.contains("request") && line.contains("dashboard")),
        "{log}"
    );
    assert!(!log.contains("read-token"), "tokens are never logged");
}

/// State-changing requests and WebSocket upgrades from another site are refused: a foreign
/// `Origin` (even with `CORS_ORIGINS="*"`, which opens reads only) or `Sec-Fetch-Site:
/// cross-site`; the node's own origin, a listed one, or no `Origin` at all pass.
#[tokio::test]
async fn cross_site_requests_are_refused() {
    let open = Node::start(&[]).await;
    let listed = Node::start(&[("CORS_ORIGINS", "https://app.example")]).await;
    let client = reqwest::Client::new();
    // An invalid job: a request the guard lets through is answered 400 and starts nothing.
    let post = |node: &Node, headers: &[(&str, &str)]| {
        let mut request = client.post(node.url("/tasks/security/")).json(&json!({}));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let own = |node: &Node| format!("http://127.0.0.1:{}", node.port);
    for node in [&open, &listed] {
        assert_eq!(post(node, &[("origin", "https://evil.example")]).await, 403);
        assert_eq!(post(node, &[("origin", "null")]).await, 403);
        assert_eq!(post(node, &[("sec-fetch-site", "cross-site")]).await, 403);
        assert_eq!(post(node, &[]).await, 400);
        assert_eq!(post(node, &[("origin", &own(node))]).await, 400);
    }
    assert_eq!(
        post(
            &listed,
            &[
                ("origin", "https://app.example"),
                ("sec-fetch-site", "cross-site")
            ]
        )
        .await,
        400
    );
    let read = client
        .get(open.url("/tasks/"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(
        read.headers()["access-control-allow-origin"],
        "https://evil.example"
    );

    let ws = "/tasks/security/jobs/00000000-0000-0000-0000-000000000000/ws/";
    assert_eq!(
        websocket_status(&open, ws, &[("origin", "https://evil.example")]).await,
        403
    );
    assert_eq!(
        websocket_status(&open, ws, &[("origin", &own(&open))]).await,
        101
    );
    assert_eq!(websocket_status(&open, ws, &[]).await, 101);
    assert_eq!(
        websocket_status(&listed, ws, &[("origin", "https://app.example")]).await,
        101
    );
}

/// Without credentials, a request whose `Host` could be a rebound DNS name is refused (403):
/// loopback names and addresses pass, and so do `ALLOWED_HOSTS`.
#[tokio::test]
async fn rebinding_hosts_are_refused_without_auth() {
    let node = Node::start(&[("ALLOWED_HOSTS", "jobs.internal")]).await;
    let port = node.port;
    assert_eq!(status_for_host(port, "evil.example").await, 403);
    assert_eq!(
        status_for_host(port, &format!("evil.example:{port}")).await,
        403
    );
    assert_eq!(status_for_host(port, "localhost.evil.example").await, 403);
    assert_eq!(
        status_for_host(port, &format!("127.0.0.1:{port}")).await,
        200
    );
    assert_eq!(
        status_for_host(port, &format!("localhost:{port}")).await,
        200
    );
    assert_eq!(status_for_host(port, &format!("[::1]:{port}")).await, 200);
    assert_eq!(status_for_host(port, "jobs.internal").await, 200);
    assert_eq!(
        status_for_host(port, &format!("JOBS.internal:{port}")).await,
        200
    );
}

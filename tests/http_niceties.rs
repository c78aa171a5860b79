//! End-to-end over HTTP: gzip (reqwest sending `Accept-Encoding` itself and decoding with
//! flate2, reqwest without it, `curl --compressed`), CORS preflights and the requests after
//! them, basic auth, and `SERVER_NAME` in the URLs of the answers.

mod common;

use common::{image, path_of, Node};
use flate2::read::GzDecoder;
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, VARY};
use serde_json::{json, Value};
use std::io::Read;

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    GzDecoder::new(bytes)
        .read_to_end(&mut plain)
        .expect("a valid gzip stream");
    plain
}

/// A GET sending `accept_encoding` (none when `None`); reqwest decodes nothing itself here.
async fn get(url: &str, accept_encoding: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(url);
    if let Some(value) = accept_encoding {
        request = request.header(ACCEPT_ENCODING, value);
    }
    request.send().await.unwrap()
}

fn header(response: &reqwest::Response, name: impl reqwest::header::AsHeaderName) -> &str {
    response
        .headers()
        .get(name)
        .map_or("", |value| value.to_str().unwrap())
}

/// A JSON answer and a streamed output route of more than 1 KiB are sent gzipped to a client
/// that accepts it (no `Content-Length`, `Vary: Accept-Encoding`) and decode to exactly the
/// bytes sent to a client that does not; small answers, refused gzip (`q=0`), HEAD and curl
/// `--compressed` behave too.
#[tokio::test]
async fn large_answers_are_gzipped_for_clients_that_accept_it() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "gzip",
            json!({"image": image(), "command": "bash -c 'seq 1 20000; seq 1 500 >&2'"}),
        )
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{execution}");
    let execution_path = path_of(posted["executionUrl"].as_str().unwrap()).to_string();

    for route in ["stdout/", "logs/", ""] {
        let url = node.url(&format!("{execution_path}{route}"));
        let plain = get(&url, None).await;
        assert_eq!(plain.status(), 200, "{url}");
        assert_eq!(header(&plain, CONTENT_ENCODING), "", "{url}");
        let declared: usize = header(&plain, CONTENT_LENGTH).parse().unwrap();
        let plain_bytes = plain.bytes().await.unwrap();
        assert_eq!(declared, plain_bytes.len(), "{url}");
        assert!(
            plain_bytes.len() > 1024,
            "{url}: {} bytes",
            plain_bytes.len()
        );

        let compressed = get(&url, Some("br;q=1.0, gzip;q=0.8, *;q=0.1")).await;
        assert_eq!(compressed.status(), 200, "{url}");
        assert_eq!(header(&compressed, CONTENT_ENCODING), "gzip", "{url}");
        assert!(
            header(&compressed, VARY).contains("Accept-Encoding"),
            "{url}"
        );
        assert!(compressed.headers().get(CONTENT_LENGTH).is_none(), "{url}");
        let compressed_bytes = compressed.bytes().await.unwrap();
        assert!(compressed_bytes.len() < plain_bytes.len() / 2, "{url}");
        let decoded = gunzip(&compressed_bytes);
        if route.is_empty() {
            // The execution's JSON: the same document (its "now"-free fields are stable).
            let decoded: Value = serde_json::from_slice(&decoded).unwrap();
            let plain: Value = serde_json::from_slice(&plain_bytes).unwrap();
            assert_eq!(decoded, plain, "{url}");
        } else {
            assert_eq!(decoded, plain_bytes, "{url}");
        }

        let refused = get(&url, Some("gzip;q=0, identity")).await;
        assert_eq!(header(&refused, CONTENT_ENCODING), "", "{url}");
        assert_eq!(refused.bytes().await.unwrap().len(), plain_bytes.len());

        let head = reqwest::Client::new()
            .head(&url)
            .header(ACCEPT_ENCODING, "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200, "{url}");
        assert_eq!(header(&head, CONTENT_ENCODING), "", "HEAD {url}");
    }

    // A real client decoding gzip itself: curl --compressed.
    let url = node.url(&format!("{execution_path}stdout/"));
    let curl = std::process::Command::new("curl")
        .args(["-sS", "--compressed", "-D", "-", &url])
        .output()
        .expect("curl");
    assert!(curl.status.success(), "{curl:?}");
    let output = String::from_utf8(curl.stdout).unwrap();
    let (head, body) = output.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    let expected: String = (1..=20000).map(|n| format!("{n}\n")).collect();
    assert_eq!(body, expected);

    // Small answers stay as they are, with Vary for caches.
    let small = get(&node.url("/healthcheck"), Some("gzip")).await;
    assert_eq!(small.status(), 200);
    assert_eq!(header(&small, CONTENT_ENCODING), "");
    let _: Value = small.json().await.unwrap();
}

/// A browser's preflight for a JSON POST from an allowed origin learns the methods, the
/// headers (Content-Type, Authorization, X-Request-ID, Idempotency-Key) and how long to keep
/// the answer; the POST that follows succeeds with the origin echoed. Another origin gets no
/// CORS headers and its POST is refused. Without `Origin`, answers carry `*` by default.
#[tokio::test]
async fn cors_preflight_then_the_request() {
    let allowed = "http://app.example";
    let node = Node::start(&[("ENABLE_CORS", "true"), ("CORS_ORIGINS", allowed)]).await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, node.url("/tasks/cors/"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "content-type,x-request-id,idempotency-key",
            )
            .send()
    };
    let answer = preflight(allowed).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(header(&answer, "access-control-allow-origin"), allowed);
    assert!(header(&answer, "access-control-allow-methods").contains("POST"));
    let allowed_headers = header(&answer, "access-control-allow-headers").to_ascii_lowercase();
    for wanted in [
        "content-type",
        "authorization",
        "x-request-id",
        "idempotency-key",
    ] {
        assert!(
            allowed_headers.contains(wanted),
            "{wanted}: {allowed_headers}"
        );
    }
    let max_age: u64 = header(&answer, "access-control-max-age").parse().unwrap();
    assert!(max_age > 0);

    let posted = client
        .post(node.url("/tasks/cors/"))
        .header("Origin", allowed)
        .header("X-Request-ID", "cors-1")
        .json(&json!({"image": image(), "command": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    assert_eq!(header(&posted, "access-control-allow-origin"), allowed);
    assert!(header(&posted, VARY).contains("Origin"));

    let foreign = preflight("http://evil.example").await.unwrap();
    assert!(foreign
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert!(foreign
        .headers()
        .get("access-control-allow-headers")
        .is_none());
    let refused = client
        .post(node.url("/tasks/cors/"))
        .header("Origin", "http://evil.example")
        .json(&json!({"image": image(), "command": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["operation"], "check_origin");

    let open = Node::start(&[]).await;
    let answer = open.get("/healthcheck").await;
    assert_eq!(header(&answer, "access-control-allow-origin"), "*");
    let off = Node::start(&[("ENABLE_CORS", "false")]).await;
    let answer = off.get("/healthcheck").await;
    assert!(answer
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

/// With `BASIC_AUTH_USERNAME`/`BASIC_AUTH_PASSWORD`, every request needs them: none or wrong
/// ones get 401 with the realm's challenge and the error JSON; the right ones pass; a
/// preflight (which browsers send without credentials) is answered.
#[tokio::test]
async fn basic_auth_guards_every_route() {
    let node = Node::start(&[
        ("BASIC_AUTH_USERNAME", "ops"),
        ("BASIC_AUTH_PASSWORD", "s3cret pass"),
        ("BASIC_AUTH_REALM", "farm"),
    ])
    .await;
    let client = reqwest::Client::new();
    for path in ["/healthcheck", "/tasks/", "/status/", "/nothing-here/"] {
        let anonymous = client.get(node.url(path)).send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "{path}");
        let challenge = header(&anonymous, "www-authenticate").to_string();
        assert!(challenge.contains(r#"Basic realm="farm""#), "{challenge}");
        let body: Value = anonymous.json().await.unwrap();
        assert_eq!(body["operation"], "authorize");
        for (user, password) in [("ops", "wrong"), ("other", "s3cret pass"), ("ops", "")] {
            let wrong = client
                .get(node.url(path))
                .basic_auth(user, Some(password))
                .send()
                .await
                .unwrap();
            assert_eq!(wrong.status(), 401, "{path} as {user}:{password}");
        }
    }
    let right = client
        .get(node.url("/tasks/"))
        .basic_auth("ops", Some("s3cret pass"))
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let posted = client
        .post(node.url("/tasks/guarded/"))
        .basic_auth("ops", Some("s3cret pass"))
        .json(&json!({"image": image(), "command": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let unposted = client
        .post(node.url("/tasks/guarded/"))
        .json(&json!({"image": image(), "command": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unposted.status(), 401);
    let preflight = client
        .request(reqwest::Method::OPTIONS, node.url("/tasks/guarded/"))
        .header("Origin", "http://app.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert!(header(&preflight, "access-control-allow-headers")
        .to_ascii_lowercase()
        .contains("authorization"));
    // The garbled header that is no basic auth at all is a 401 too, not a 400 or a 500.
    let garbled = client
        .get(node.url("/tasks/"))
        .header("Authorization", "Basic !!!not-base64")
        .send()
        .await
        .unwrap();
    assert_eq!(garbled.status(), 401);
}

/// `SERVER_NAME` is the host of every absolute URL in the answers, whatever `Host` the
/// request carried.
#[tokio::test]
async fn server_name_names_the_urls() {
    let node = Node::start(&[("SERVER_NAME", "jobs.example:8080")]).await;
    let posted = node
        .post_job("named", json!({"image": image(), "command": "true"}))
        .await;
    for key in ["taskUrl", "jobUrl", "executionUrl"] {
        let url = posted[key].as_str().unwrap();
        assert!(url.starts_with("http://jobs.example:8080/"), "{key}: {url}");
    }
    let tasks = node.get_json("/tasks/").await;
    let text = tasks.to_string();
    assert!(
        text.contains("http://jobs.example:8080/tasks/named/"),
        "{text}"
    );
    assert!(!text.contains("127.0.0.1"), "{text}");
    let execution = node
        .get_json(path_of(posted["executionUrl"].as_str().unwrap()))
        .await;
    assert!(
        execution.to_string().contains("http://jobs.example:8080/"),
        "{execution}"
    );
}

//! End-to-end: e-mails to a local SMTP server and webhooks to a local HTTP server, both started
//! by the test, for real executions.

mod common;

use common::{image, path_of, wait_until, Node};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A message received by the test SMTP server.
#[derive(Clone, Debug)]
struct Mail {
    recipients: Vec<String>,
    data: String,
}

/// A minimal SMTP server (EHLO, MAIL, RCPT, DATA, QUIT) that records what it receives.
async fn smtp_server() -> (u16, Arc<Mutex<Vec<Mail>>>) {
    smtp_server_with(
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    )
    .await
}

/// [`smtp_server`], answering `421` (service not available) to every connection while `down`
/// is set, counted in `refused`.
async fn smtp_server_with(
    down: Arc<AtomicBool>,
    refused: Arc<AtomicUsize>,
) -> (u16, Arc<Mutex<Vec<Mail>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mails = Arc::new(Mutex::new(Vec::new()));
    let received = mails.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            if down.load(Ordering::SeqCst) {
                refused.fetch_add(1, Ordering::SeqCst);
                let _ = stream.write_all(b"421 down for a test\r\n").await;
                continue;
            }
            let received = received.clone();
            tokio::spawn(async move {
                let (reader, mut writer) = stream.into_split();
                let mut lines = BufReader::new(reader).lines();
                let _ = writer.write_all(b"220 test ESMTP\r\n").await;
                let mut recipients = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let upper = line.to_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250 test\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        recipients.push(line[8..].trim().trim_matches(['<', '>']).to_string());
                        b"250 OK\r\n"
                    } else if upper.starts_with("DATA") {
                        let _ = writer.write_all(b"354 go ahead\r\n").await;
                        let mut data = String::new();
                        while let Ok(Some(line)) = lines.next_line().await {
                            if line == "." {
                                break;
                            }
                            data.push_str(&line);
                            data.push('\n');
                        }
                        received.lock().unwrap().push(Mail {
                            recipients: std::mem::take(&mut recipients),
                            data,
                        });
                        b"250 OK\r\n"
                    } else if upper.starts_with("QUIT") {
                        let _ = writer.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        b"250 OK\r\n"
                    };
                    let _ = writer.write_all(reply).await;
                }
            });
        }
    });
    (port, mails)
}

/// A node sending its e-mails to the test SMTP server on `port`.
async fn node_mailing_to(port: u16) -> Node {
    let port = port.to_string();
    Node::start(&[
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", &port),
        ("SMTP_FROM", "fastlane@example.com"),
    ])
    .await
}

/// A request received by the test HTTP server.
#[derive(Clone, Debug)]
struct Hit {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
    raw: String,
    at: Instant,
}

/// An HTTP server that records every request (on arrival); paths ending in `/fail` answer 500,
/// in `/once` 500 to their first request, in `/hang-once` answer their first request after a
/// minute (longer than a webhook call may take); others 200.
async fn http_server() -> (String, Arc<Mutex<Vec<Hit>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(Mutex::new(Vec::new()));
    let recorded = hits.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let recorded = recorded.clone();
                        async move {
                            let method = request.method().to_string();
                            let path = request.uri().path().to_string();
                            let headers = request
                                .headers()
                                .iter()
                                .map(|(name, value)| {
                                    (name.to_string(), value.to_str().unwrap_or("").to_string())
                                })
                                .collect();
                            let body = request.into_body().collect().await.unwrap().to_bytes();
                            let raw = String::from_utf8_lossy(&body).into_owned();
                            let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            let earlier = recorded
                                .lock()
                                .unwrap()
                                .iter()
                                .filter(|hit: &&Hit| hit.path == path)
                                .count();
                            let failing = path.ends_with("/fail")
                                || (path.ends_with("/once") && earlier == 0);
                            let hanging = path.ends_with("/hang-once") && earlier == 0;
                            recorded.lock().unwrap().push(Hit {
                                method,
                                path,
                                headers,
                                body,
                                raw,
                                at: Instant::now(),
                            });
                            let mut response = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from_static(b"recorded"),
                            ));
                            if failing {
                                *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                            }
                            if hanging {
                                tokio::time::sleep(Duration::from_secs(60)).await;
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (base, hits)
}

fn hits_to(hits: &Arc<Mutex<Vec<Hit>>>, path: &str) -> Vec<Hit> {
    hits.lock()
        .unwrap()
        .iter()
        .filter(|hit| hit.path == path)
        .cloned()
        .collect()
}

/// A failing job with `notify` lists: each `fails` and `finishes` recipient gets one message
/// with the spec's subject and links to the task and the job; `succeeds` gets nothing.
#[tokio::test]
async fn failing_jobs_send_email_to_the_right_recipients() {
    let (port, mails) = smtp_server().await;
    let node = node_mailing_to(port).await;
    let posted = node
        .post_job(
            "mailing",
            json!({"image": image(), "command": "bash -c 'exit 3'",
                   "notify": {"fails": ["ops@example.com", "dev@example.com"], "succeeds": ["happy@example.com"],
                              "finishes": ["log@example.com"]}}),
        )
        .await;
    node.wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    wait_until(Duration::from_secs(20), "three e-mails", || async {
        mails.lock().unwrap().len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails = mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 3, "{mails:?}");
    let job = format!("mailing/{}", posted["jobId"].as_str().unwrap());
    for (to, subject) in [
        (
            "ops@example.com",
            format!("[Fastlane] Job {job} failed with exit code 3!"),
        ),
        (
            "dev@example.com",
            format!("[Fastlane] Job {job} failed with exit code 3!"),
        ),
        (
            "log@example.com",
            format!("[Fastlane] Job {job} finished with exit code 3!"),
        ),
    ] {
        let mail = mails
            .iter()
            .find(|mail| mail.recipients == [to])
            .unwrap_or_else(|| panic!("no mail to {to}"));
        // Unfold header lines and quoted-printable soft line breaks.
        let mail = Mail {
            recipients: mail.recipients.clone(),
            data: mail.data.replace("\n ", " ").replace("=\n", ""),
        };
        assert!(
            mail.data.contains(&format!("Subject: {subject}")),
            "{}",
            mail.data
        );
        assert!(mail
            .data
            .contains("Automatic message. Please do not reply to this!"));
        assert!(
            mail.data.contains(posted["jobUrl"].as_str().unwrap()),
            "job link in {}",
            mail.data
        );
        assert!(mail.data.contains("text/html"), "an HTML part");
    }
}

/// Webhooks: the success hook is called once with the documented payload and the custom headers;
/// a start hook is called; a hook answering 500 with `retries: 2` is called exactly three times
/// with growing delays; every attempt is recorded on the execution.
#[tokio::test]
async fn webhooks_are_called_retried_and_recorded() {
    let (base, hits) = http_server().await;
    let node = Node::start(&[
        ("WEBHOOKS_EXPONENTIAL_BACKOFF_MIN_MS", "300"),
        ("WEBHOOKS_EXPONENTIAL_BACKOFF_FACTOR", "2"),
        // The receiver listens on loopback, which webhooks may not reach by default.
        ("WEBHOOKS_ALLOW_NETWORKS", "127.0.0.0/8"),
    ])
    .await;
    let posted = node
        .post_job(
            "hooks",
            json!({"image": image(), "command": "echo hooked", "metadata": {"owner": "team-a"},
                   "webhooks": {
                       "succeeds": [{"url": format!("{base}/ok"), "headers": {"X-Token": "abc"}}],
                       "starts": [{"url": format!("{base}/started")}],
                       "fails": [{"url": format!("{base}/never")}],
                       "finishes": [{"url": format!("{base}/retry/fail"), "retries": 2, "method": "PUT"}]}}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    node.wait_finished(&execution_url).await;
    wait_until(
        Duration::from_secs(20),
        "three attempts of the failing hook",
        || async { hits_to(&hits, "/retry/fail").len() >= 3 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let ok = hits_to(&hits, "/ok");
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].method, "POST");
    assert!(ok[0]
        .headers
        .iter()
        .any(|(name, value)| name == "x-token" && value == "abc"));
    assert!(ok[0]
        .headers
        .iter()
        .any(|(name, value)| name == "content-type" && value == "application/json"));
    let payload = &ok[0].body;
    assert_eq!(payload["job_id"], posted["jobId"]);
    assert_eq!(payload["executionId"], posted["executionId"]);
    assert_eq!(payload["status"], "done");
    assert_eq!(payload["log"], "hooked\n");
    assert_eq!(payload["metadata"]["custom"], json!({"owner": "team-a"}));
    assert_eq!(hits_to(&hits, "/started").len(), 1);
    assert!(hits_to(&hits, "/never").is_empty());

    let retried = hits_to(&hits, "/retry/fail");
    assert_eq!(retried.len(), 3, "exactly three attempts");
    assert!(retried.iter().all(|hit| hit.method == "PUT"));
    let first_gap = retried[1].at - retried[0].at;
    let second_gap = retried[2].at - retried[1].at;
    assert!(first_gap >= Duration::from_millis(290), "{first_gap:?}");
    assert!(
        second_gap >= Duration::from_millis(590) && second_gap > first_gap,
        "{second_gap:?}"
    );

    let execution = node.get_json(path_of(&execution_url)).await;
    let dispatch = execution["execution"]["metadata"]["webhookDispatch"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(dispatch.len(), 5, "{dispatch:?}");
    assert_eq!(
        dispatch
            .iter()
            .filter(|entry| entry["statusCode"] == 500)
            .count(),
        3
    );
}

/// A failure before any container ran (the image cannot be pulled) still calls the `fails` hook.
#[tokio::test]
async fn failures_before_a_container_started_are_notified() {
    let (base, hits) = http_server().await;
    // The receiver listens on loopback, which webhooks may not reach by default.
    let node = Node::start(&[("WEBHOOKS_ALLOW_NETWORKS", "127.0.0.0/8")]).await;
    let posted = node
        .post_job(
            "no-image",
            json!({"image": "fastlane-no-such-image:1", "command": "true",
                   "webhooks": {"fails": [{"url": format!("{base}/failed")}]}}),
        )
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "failed");
    assert!(
        execution["error"].as_str().unwrap().contains("pull"),
        "{execution}"
    );
    wait_until(Duration::from_secs(20), "the fails hook", || async {
        !hits_to(&hits, "/failed").is_empty()
    })
    .await;
    assert_eq!(hits_to(&hits, "/failed")[0].body["status"], "failed");
}

/// `SENTRY_DSN` pointing at a local endpoint: a job whose image cannot be pulled produces an
/// event carrying its task, job and execution ids and the operation.
#[tokio::test]
async fn failures_are_reported_to_sentry() {
    let (base, hits) = http_server().await;
    let dsn = base.replace("http://", "http://publickey@") + "/42";
    let node = Node::start(&[("SENTRY_DSN", &dsn)]).await;
    let posted = node
        .post_job(
            "sentry-task",
            json!({"image": "fastlane-no-such-image:2", "command": "true"}),
        )
        .await;
    node.wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    wait_until(Duration::from_secs(20), "an envelope", || async {
        !hits_to(&hits, "/api/42/envelope/").is_empty()
    })
    .await;
    let envelope = &hits_to(&hits, "/api/42/envelope/")[0];
    assert!(envelope
        .headers
        .iter()
        .any(|(name, value)| name == "x-sentry-auth" && value.contains("sentry_key=publickey")));
    for id in [
        "sentry-task",
        posted["jobId"].as_str().unwrap(),
        posted["executionId"].as_str().unwrap(),
        "Downloading Image",
    ] {
        assert!(
            envelope.raw.contains(id),
            "{id} missing from {}",
            envelope.raw
        );
    }
}

/// Without `SENTRY_DSN` nothing is sent (the same failure, no envelope anywhere).
#[tokio::test]
async fn nothing_is_sent_without_a_dsn() {
    let (_, hits) = http_server().await;
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "no-sentry",
            json!({"image": "fastlane-no-such-image:3", "command": "true"}),
        )
        .await;
    node.wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(hits.lock().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Durable notifications: what is owed is in the store and survives the node.

/// The `Fastlane-Delivery-Id` of a call.
fn delivery_id(hit: &Hit) -> String {
    hit.headers
        .iter()
        .find(|(name, _)| name == "fastlane-delivery-id")
        .map(|(_, value)| value.clone())
        .unwrap_or_else(|| panic!("no delivery id on {hit:?}"))
}

/// The webhook attempts recorded on an execution.
async fn dispatch(node: &Node, execution_url: &str) -> Vec<Value> {
    let execution = node.get_json(path_of(execution_url)).await;
    execution["execution"]["metadata"]["webhookDispatch"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until a successful call (200) is recorded on the execution.
async fn wait_recorded_delivery(node: &Node, execution_url: &str) {
    wait_until(Duration::from_secs(60), "a delivery recorded", || async {
        dispatch(node, execution_url)
            .await
            .iter()
            .any(|entry| entry["statusCode"] == 200)
    })
    .await;
}

/// The environment of a node on Redis and SecantusDB (a key prefix and a database of its own).
fn shared_backends() -> Vec<(String, String)> {
    let name = format!("outbox{}", uuid::Uuid::new_v4().simple());
    let mongo = std::env::var("FASTLANE_TEST_SECANTUS_URL").expect("FASTLANE_TEST_SECANTUS_URL");
    let base = mongo
        .rsplit_once('/')
        .map_or(mongo.as_str(), |(base, _)| base);
    vec![
        (
            "REDIS_URL".into(),
            std::env::var("FASTLANE_TEST_REDIS_URL").expect("FASTLANE_TEST_REDIS_URL"),
        ),
        ("REDIS_KEY_PREFIX".into(), name.clone()),
        ("MONGODB_URL".into(), format!("{base}/{name}")),
    ]
}

/// Starts a node with `settings` plus `backends`.
async fn node_with(settings: &[(&str, &str)], backends: &[(String, String)]) -> Node {
    let mut env: Vec<(&str, &str)> = settings.to_vec();
    env.extend(
        backends
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str())),
    );
    Node::start(&env).await
}

/// A webhook whose receiver fails (500) is retried by the node that starts after a SIGKILL:
/// the retry was owed in the store, not in the dead process. Every call carries the same
/// `Fastlane-Delivery-Id`, and both attempts are recorded on the execution.
async fn webhook_retry_survives_sigkill(backends: &[(String, String)]) {
    let (base, hits) = http_server().await;
    let mut node = node_with(
        &[
            // Long enough that the retry is still waiting when the node is killed.
            ("WEBHOOKS_EXPONENTIAL_BACKOFF_MIN_MS", "8000"),
            ("WEBHOOKS_ALLOW_NETWORKS", "127.0.0.0/8"),
        ],
        backends,
    )
    .await;
    let posted = node
        .post_job(
            "durable-hooks",
            json!({"image": image(), "command": "echo durable",
                   "webhooks": {"finishes": [{"url": format!("{base}/crash/once"), "retries": 3}]}}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    node.wait_finished(&execution_url).await;
    wait_until(
        Duration::from_secs(30),
        "the failed first attempt recorded",
        || async { !dispatch(&node, &execution_url).await.is_empty() },
    )
    .await;
    node.kill();
    assert_eq!(
        hits_to(&hits, "/crash/once").len(),
        1,
        "the retry was owed, not made"
    );
    node.start_again().await;
    wait_until(
        Duration::from_secs(60),
        "the retry after the restart",
        || async { hits_to(&hits, "/crash/once").len() >= 2 },
    )
    .await;
    let calls = hits_to(&hits, "/crash/once");
    let ids: std::collections::HashSet<String> = calls.iter().map(delivery_id).collect();
    assert_eq!(ids.len(), 1, "one delivery id across retries: {ids:?}");
    uuid::Uuid::parse_str(ids.iter().next().unwrap()).expect("a uuid");
    assert_eq!(calls[1].body["log"], "durable\n");
    assert_eq!(calls[1].body["executionId"], posted["executionId"]);
    wait_recorded_delivery(&node, &execution_url).await;
    let recorded = dispatch(&node, &execution_url).await;
    assert_eq!(recorded[0]["statusCode"], 500, "{recorded:?}");
    assert_eq!(recorded[0]["attempt"], 1, "{recorded:?}");
}

#[tokio::test]
async fn webhook_retry_survives_sigkill_embedded() {
    webhook_retry_survives_sigkill(&[]).await;
}

#[tokio::test]
async fn webhook_retry_survives_sigkill_on_redis_and_mongodb() {
    webhook_retry_survives_sigkill(&shared_backends()).await;
}

/// An e-mail owed while the SMTP server refuses (421) is sent by the node that starts after a
/// SIGKILL, once the server is back.
#[tokio::test]
async fn email_retry_survives_sigkill() {
    let down = Arc::new(AtomicBool::new(true));
    let refused = Arc::new(AtomicUsize::new(0));
    let (port, mails) = smtp_server_with(down.clone(), refused.clone()).await;
    let mut node = node_mailing_to(port).await;
    let posted = node
        .post_job(
            "durable-mail",
            json!({"image": image(), "command": "bash -c 'exit 3'",
                   "notify": {"fails": ["ops@example.com"]}}),
        )
        .await;
    node.wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    wait_until(Duration::from_secs(30), "a refused attempt", || async {
        refused.load(Ordering::SeqCst) >= 1
    })
    .await;
    node.kill();
    down.store(false, Ordering::SeqCst);
    node.start_again().await;
    wait_until(
        Duration::from_secs(60),
        "the e-mail after the restart",
        || async { !mails.lock().unwrap().is_empty() },
    )
    .await;
    let mail = mails.lock().unwrap()[0].clone();
    assert_eq!(mail.recipients, ["ops@example.com"]);
    // The delivery's id names the message, the same for every attempt.
    let message_id = mail
        .data
        .lines()
        .find_map(|line| line.strip_prefix("Message-ID: <"))
        .unwrap_or_else(|| panic!("no Message-ID: {}", mail.data));
    let delivery = message_id
        .trim_end_matches('>')
        .trim_end_matches("@fastlane-node");
    assert!(uuid::Uuid::parse_str(delivery).is_ok(), "{message_id}");
    let job = format!("durable-mail/{}", posted["jobId"].as_str().unwrap());
    assert!(
        mail.data.replace("\n ", " ").contains(&format!(
            "Subject: [Fastlane] Job {job} failed with exit code 3!"
        )),
        "{}",
        mail.data
    );
}

/// A SIGTERM while a webhook call is in flight (its receiver holds the first call longer than a
/// call may take) loses nothing: the node that starts again makes the call once the claim of
/// the first one runs out, with the same delivery id.
#[tokio::test]
async fn webhook_in_flight_at_sigterm_is_delivered_after_restart() {
    let (base, hits) = http_server().await;
    let mut node = Node::start(&[("WEBHOOKS_ALLOW_NETWORKS", "127.0.0.0/8")]).await;
    let posted = node
        .post_job(
            "durable-term",
            json!({"image": image(), "command": "echo bye",
                   "webhooks": {"succeeds": [{"url": format!("{base}/term/hang-once")}]}}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    node.wait_finished(&execution_url).await;
    wait_until(Duration::from_secs(30), "the first call", || async {
        !hits_to(&hits, "/term/hang-once").is_empty()
    })
    .await;
    assert!(node.terminate().success(), "{}", node.log());
    node.start_again().await;
    wait_until(
        Duration::from_secs(90),
        "the call after the restart",
        || async { hits_to(&hits, "/term/hang-once").len() >= 2 },
    )
    .await;
    let calls = hits_to(&hits, "/term/hang-once");
    assert_eq!(delivery_id(&calls[0]), delivery_id(&calls[1]));
    assert_eq!(calls[1].body["status"], "done");
    wait_recorded_delivery(&node, &execution_url).await;
}

/// Two nodes on Redis and SecantusDB deliver from the same outboxes: each hook (failing once,
/// then retried after 300 ms) is called exactly twice, whichever node ran the job and however
/// the two notifiers' rounds interleave: a claim is a compare-and-set, one node sends.
#[tokio::test]
async fn two_nodes_send_each_delivery_once() {
    let (base, hits) = http_server().await;
    let backends = shared_backends();
    let settings = [
        ("WEBHOOKS_EXPONENTIAL_BACKOFF_MIN_MS", "300"),
        ("WEBHOOKS_ALLOW_NETWORKS", "127.0.0.0/8"),
    ];
    let first = node_with(&settings, &backends).await;
    let second = node_with(&settings, &backends).await;
    let mut executions = Vec::new();
    for n in 0..6 {
        let node = if n % 2 == 0 { &first } else { &second };
        let posted = node
            .post_job(
                "two-notifiers",
                json!({"image": image(), "command": "echo twice",
                       "webhooks": {"finishes": [{"url": format!("{base}/two/{n}/once"), "retries": 2}]}}),
            )
            .await;
        executions.push((n, posted["executionUrl"].as_str().unwrap().to_string()));
    }
    for (n, execution_url) in &executions {
        first.wait_finished(execution_url).await;
        wait_recorded_delivery(&first, execution_url).await;
        let calls = hits_to(&hits, &format!("/two/{n}/once"));
        assert_eq!(calls.len(), 2, "one failed call and one retry: {calls:?}");
        assert_eq!(delivery_id(&calls[0]), delivery_id(&calls[1]));
        assert_eq!(dispatch(&first, execution_url).await.len(), 2);
    }
}

/// The largest lists a client can send (20 hooks per list), on several executions at once: more
/// deliveries than the notifier sends at a time (64) are all made, each exactly once.
#[tokio::test]
async fn more_deliveries_than_sending_permits_are_all_made_once() {
    let (base, hits) = http_server().await;
    let node = Node::start(&[("WEBHOOKS_ALLOW_NETWORKS", "127.0.0.0/8")]).await;
    let jobs = 4;
    let hooks = |n: usize, list: &str| -> Vec<Value> {
        (0..20)
            .map(|i| json!({"url": format!("{base}/burst/{n}/{list}/{i}")}))
            .collect()
    };
    let started = Instant::now();
    for n in 0..jobs {
        let posted = node
            .post_job(
                "burst",
                json!({"image": image(), "command": "true",
                       "webhooks": {"succeeds": hooks(n, "s"), "finishes": hooks(n, "f")}}),
            )
            .await;
        node.wait_finished(posted["executionUrl"].as_str().unwrap())
            .await;
    }
    let expected = jobs * 40;
    wait_until(Duration::from_secs(60), "every hook called", || async {
        hits.lock().unwrap().len() >= expected
    })
    .await;
    eprintln!(
        "{expected} deliveries made {:?} after the first POST",
        started.elapsed()
    );
    let paths: std::collections::HashSet<String> = hits
        .lock()
        .unwrap()
        .iter()
        .map(|hit| hit.path.clone())
        .collect();
    assert_eq!(paths.len(), expected, "each hook called once");
    assert_eq!(hits.lock().unwrap().len(), expected);
}

//! End-to-end: watching an execution's output live over WebSocket, and the stream page.

mod common;

use common::{image, path_of, wait_until, Node};
use futures_util::StreamExt;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Everything a WebSocket client received: the text, and the close frame's code and reason.
struct Received {
    text: String,
    close: Option<(CloseCode, String)>,
    /// Whether the execution was still running when the first frame arrived.
    first_frame_while_running: Option<bool>,
}

async fn watch(node: &Node, ws_path: &str, execution_url: Option<&str>) -> Received {
    let url = node.url(ws_path).replace("http://", "ws://");
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("websocket handshake");
    let mut received = Received {
        text: String::new(),
        close: None,
        first_frame_while_running: None,
    };
    while let Some(message) = tokio::time::timeout(Duration::from_secs(30), socket.next())
        .await
        .expect("no frame in 30 s")
    {
        match message.expect("websocket error") {
            Message::Text(text) => {
                if received.first_frame_while_running.is_none() {
                    if let Some(execution_url) = execution_url {
                        let status = node.get_json(path_of(execution_url)).await["execution"]
                            ["status"]
                            .clone();
                        received.first_frame_while_running = Some(status == "running");
                    }
                }
                received.text.push_str(text.as_str());
            }
            Message::Close(frame) => {
                received.close = frame.map(|frame| (frame.code, frame.reason.as_str().to_string()));
                break;
            }
            _ => {}
        }
    }
    received
}

/// A job printing four lines a second apart: a client watching it receives the lines while it
/// runs, then a close with code 1000 and reason `done`; several clients watch at once; a client
/// connecting after the end gets the stored output, then `done`.
#[tokio::test]
async fn output_streams_live_then_replays() {
    let node = Node::start(&[]).await;
    let command = "bash -c 'for i in 1 2 3 4; do echo line-$i; sleep 1; done'";
    let posted = node
        .post_job("streaming", json!({"image": image(), "command": command}))
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(20), "running", || async {
        node.get_json(path_of(&execution_url)).await["execution"]["status"] == "running"
    })
    .await;
    let execution_ws = format!("{}ws/", path_of(&execution_url));
    let job_ws = format!("{}ws/", path_of(posted["jobUrl"].as_str().unwrap()));
    let (first, second, by_job) = tokio::join!(
        watch(&node, &execution_ws, Some(&execution_url)),
        watch(&node, &execution_ws, None),
        watch(&node, &job_ws, None),
    );
    for received in [&first, &second, &by_job] {
        assert_eq!(received.text, "line-1\nline-2\nline-3\nline-4\n");
        assert_eq!(
            received.close,
            Some((CloseCode::Normal, "done".to_string()))
        );
    }
    assert_eq!(
        first.first_frame_while_running,
        Some(true),
        "lines arrive while the job runs"
    );

    node.wait_finished(&execution_url).await;
    let replay = watch(&node, &execution_ws, None).await;
    assert!(replay.text.starts_with("EXIT CODE: 0\n"), "{}", replay.text);
    assert!(
        replay
            .text
            .contains("line-1\nline-2\nline-3\nline-4\n\n-=-\n"),
        "{}",
        replay.text
    );
    assert_eq!(replay.close, Some((CloseCode::Normal, "done".to_string())));
}

/// An execution that has not started closes with `retry`; a job that does not exist closes with
/// an empty reason; an ended one (timed out) says `done`, never an endless retry.
#[tokio::test]
async fn pending_missing_and_ended_executions() {
    let node = Node::start(&[]).await;
    let scheduled = node
        .post_job(
            "stream-later",
            json!({"image": image(), "command": "true", "startIn": "1h"}),
        )
        .await;
    let received = watch(
        &node,
        &format!("{}ws/", path_of(scheduled["jobUrl"].as_str().unwrap())),
        None,
    )
    .await;
    assert_eq!(
        received.close,
        Some((CloseCode::Normal, "retry".to_string()))
    );
    let missing = watch(
        &node,
        "/tasks/none/jobs/00000000-0000-0000-0000-000000000000/ws/",
        None,
    )
    .await;
    assert_eq!(missing.close, Some((CloseCode::Normal, String::new())));
    let timed_out = node
        .post_job(
            "stream-timeout",
            json!({"image": image(), "command": "sleep 30", "timeout": 1}),
        )
        .await;
    node.wait_finished(timed_out["executionUrl"].as_str().unwrap())
        .await;
    let received = watch(
        &node,
        &format!(
            "{}ws/",
            path_of(timed_out["executionUrl"].as_str().unwrap())
        ),
        None,
    )
    .await;
    assert!(received.text.contains("timed out"), "{}", received.text);
    assert_eq!(
        received.close,
        Some((CloseCode::Normal, "done".to_string()))
    );
}

/// The stream page is HTML with the original's title, connects to the matching WebSocket, and
/// shows output as text (the task id in the title is escaped).
#[tokio::test]
async fn stream_pages_are_html() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "<b>page<i>",
            json!({"image": image(), "command": "echo hi"}),
        )
        .await;
    let job_path = path_of(posted["jobUrl"].as_str().unwrap()).to_string();
    let response = node.get(&format!("{job_path}stream/")).await;
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let html = response.text().await.unwrap();
    let job_id = posted["jobId"].as_str().unwrap();
    assert!(
        html.contains(&format!(
            "<title>&lt;b&gt;page&lt;i&gt; - {job_id} - Fastlane</title>"
        )),
        "{html}"
    );
    assert!(html.contains(&format!("/jobs/{job_id}/ws/")));
    assert!(
        html.contains("createTextNode"),
        "output is inserted as text, not HTML"
    );
    let execution_page = node
        .get(&format!(
            "{}stream/",
            path_of(posted["executionUrl"].as_str().unwrap())
        ))
        .await;
    let html = execution_page.text().await.unwrap();
    assert!(html.contains(&format!(
        "{} - Fastlane</title>",
        posted["executionId"].as_str().unwrap()
    )));
}

/// The stream page opened in headless Chromium shows the job's lines (DOM check) and reaches
/// `done` instead of reconnecting forever.
#[tokio::test]
async fn the_stream_page_shows_the_lines_in_chromium() {
    let node = Node::start(&[]).await;
    let command = "bash -c 'for i in 1 2 3 4; do echo line-$i; done; echo \"<b>not bold</b>\"'";
    let posted = node
        .post_job("browser", json!({"image": image(), "command": command}))
        .await;
    node.wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    let page = node.url(&format!(
        "{}stream/",
        path_of(posted["jobUrl"].as_str().unwrap())
    ));
    // `--dump-dom` does not wait for WebSocket traffic: under load the page may be dumped before
    // the replay arrived. Each load is independent, so load it again until it reached `done`.
    let mut dom = String::new();
    for attempt in 0..10 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let output = tokio::process::Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--virtual-time-budget=10000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(&page)
            .output()
            .await
            .expect("chromium (installed by scripts/testenv.sh)");
        dom = String::from_utf8_lossy(&output.stdout).into_owned();
        if dom.contains(r#"data-state="done""#) {
            break;
        }
    }
    for line in ["line-1", "line-2", "line-3", "line-4"] {
        assert!(dom.contains(line), "{line} missing from the page: {dom}");
    }
    assert!(
        dom.contains("&lt;b&gt;not bold&lt;/b&gt;"),
        "output is shown as text: {dom}"
    );
    assert!(
        dom.contains(r#"data-state="done""#),
        "the page stops on done: {dom}"
    );
}

/// A job that printed 200,000 numbered lines before anyone watched: its first watcher gets the
/// recent lines first (the live stream starts from Docker's last lines, not the container's
/// start), so it is neither sent the whole history nor closed as `slow`.
#[tokio::test]
async fn a_first_watcher_of_a_chatty_job_gets_recent_output_first() {
    let node = Node::start(&[]).await;
    let posted = node
        .post_job(
            "chatty-first",
            json!({"image": image(), "command": "sh -c 'seq 1 200000; sleep 600'"}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    let execution_id = execution_url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap();
    let container = format!("fastlane-job-{execution_id}");
    let host = common::docker_hosts()[0].clone();
    wait_until(Duration::from_secs(60), "all lines printed", || async {
        common::docker(&host, &["logs", "--tail", "1", &container]).trim() == "200000"
    })
    .await;
    let url = node
        .url(&format!("{}ws/", path_of(&execution_url)))
        .replace("http://", "ws://");
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("websocket handshake");
    let first = loop {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .expect("no frame in 30 s")
            .expect("socket open")
            .expect("websocket error");
        match message {
            Message::Text(text) => break text.as_str().to_string(),
            Message::Close(frame) => panic!("closed before any output: {frame:?}"),
            _ => {}
        }
    };
    let first_line: u64 = first
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .expect("a number");
    assert!(
        first_line > 150_000,
        "the first watcher got old output first: line {first_line}"
    );
    drop(socket);
    node.post_empty(&format!("{}stop/", path_of(&execution_url)))
        .await;
}

/// A watched container that writes far faster than `LIVE_OUTPUT_MAX_BYTES_PER_SECOND`: its watcher
/// gets about that many bytes a second (the node reads Docker's stream no faster, so the engine
/// does not read a flood back for it), and a skip marker once the stream fell behind for 5 s.
/// (The stored output is read apart, by `collect`, whole.)
#[tokio::test]
async fn a_flooding_container_is_watched_at_the_live_pace() {
    const PACE: usize = 100_000;
    let node = Node::start(&[("LIVE_OUTPUT_MAX_BYTES_PER_SECOND", &PACE.to_string())]).await;
    let posted = node
        .post_job(
            "live-pace",
            json!({"image": image(), "command": "sh -c 'yes a line written as fast as possible'"}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(60), "running", || async {
        node.get_json(path_of(&execution_url)).await["execution"]["status"] == "running"
    })
    .await;
    let url = node
        .url(&format!("{}ws/", path_of(&execution_url)))
        .replace("http://", "ws://");
    let (mut socket, _) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("websocket handshake");
    let watched = Duration::from_secs(12);
    let deadline = tokio::time::Instant::now() + watched;
    let (mut received, mut markers) = (0usize, 0usize);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, socket.next()).await {
        match message.expect("websocket error") {
            Message::Text(text) => {
                received += text.len();
                markers += text.matches("[fastlane: live output skipped ahead").count();
            }
            Message::Close(frame) => panic!("closed while running: {frame:?}"),
            _ => {}
        }
    }
    drop(socket);
    // The first read starts with up to 10,000 earlier lines (~360 kB here), then the pace.
    let most = 400_000 + PACE * (watched.as_secs() as usize + 2);
    assert!(
        received <= most,
        "{received} bytes in {watched:?}, beyond the pace ({most})"
    );
    assert!(received >= PACE * 3, "only {received} bytes in {watched:?}");
    assert!(markers >= 1, "no skip marker in {received} bytes");
    node.post_empty(&format!("{}stop/", path_of(&execution_url)))
        .await;
    node.wait_finished(&execution_url).await;
}

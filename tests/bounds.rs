//! End-to-end: what a chatty job or a hostile client can make a node hold is bounded (issue 11,
//! points 5 and 6): live output (replay, slow watchers, one stream per watched container) and
//! connections (open connections, body timeout, requests in flight).

mod common;

use common::{image, path_of, wait_until, Node};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// VmRSS and VmHWM of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Opens a WebSocket with a raw TCP client that then never reads a byte.
async fn non_reading_watcher(node: &Node, ws_path: &str) -> TcpStream {
    let mut socket = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    let handshake = format!(
        "GET {ws_path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        node.port
    );
    socket.write_all(handshake.as_bytes()).await.unwrap();
    socket
}

/// Reads what the node sent until it closed the connection; `false` if it is still open after
/// `limit`.
async fn closed_by_node(socket: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = vec![0u8; 1 << 20];
    tokio::time::timeout(limit, async {
        loop {
            match socket.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Joins the WebSocket, reads text until `quiet` passes without a frame (or `limit` in all),
/// and returns the text frames.
async fn join(node: &Node, ws_path: &str, quiet: Duration, limit: Duration) -> Vec<String> {
    let url = node.url(ws_path).replace("http://", "ws://");
    let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&url).await else {
        return Vec::new();
    };
    let started = Instant::now();
    let mut frames = Vec::new();
    while started.elapsed() < limit {
        match tokio::time::timeout(quiet, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => frames.push(text.as_str().to_string()),
            Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => break,
            Ok(Some(Ok(_))) => {}
        }
    }
    frames
}

async fn start_job(node: &Node, task: &str, command: &str) -> (Value, String) {
    let posted = node
        .post_job(
            task,
            json!({"image": image(), "command": command, "timeout": 120}),
        )
        .await;
    let execution_url = posted["executionUrl"].as_str().unwrap().to_string();
    wait_until(Duration::from_secs(30), "running", || async {
        node.get_json(path_of(&execution_url)).await["execution"]["status"] == "running"
    })
    .await;
    let ws_path = format!("{}ws/", path_of(&execution_url));
    (posted, ws_path)
}

/// A job printing as fast as it can (`yes`), watched for 15 s by a WebSocket that joins and
/// leaves over and over and by one that never reads: the node stays under 256 MB, the
/// non-reading watcher is dropped (close 1008 `slow`), and once nobody watches the node closes
/// the container's log stream; a watcher coming after that gets output again (a new stream).
/// The live stream is read unpaced (`LIVE_OUTPUT_MAX_BYTES_PER_SECOND=0`): the most a node can
/// be sent.
#[tokio::test]
async fn a_chatty_watched_job_keeps_the_node_small() {
    let node = Node::start(&[("LIVE_OUTPUT_MAX_BYTES_PER_SECOND", "0")]).await;
    // Lines of 1000 bytes: the output reaches the watchers at megabytes a second (Docker hands
    // it over line by line, and `yes`'s 2-byte lines come at a few hundred kB/s), so the stuck
    // watcher's socket buffers fill in seconds.
    let command = format!("yes {}", "x".repeat(1000));
    let (posted, ws_path) = start_job(&node, "bounds-chatty", &command).await;
    let pid = node.pid();
    let mut stuck = non_reading_watcher(&node, &ws_path).await;
    let started = Instant::now();
    let mut joins = 0;
    let mut peak = 0;
    while started.elapsed() < Duration::from_secs(15) {
        let frames = join(
            &node,
            &ws_path,
            Duration::from_secs(2),
            Duration::from_millis(700),
        )
        .await;
        joins += usize::from(!frames.is_empty());
        let (rss, hwm) = memory(pid);
        peak = peak.max(rss);
        assert!(hwm < 256 << 20, "VmHWM {hwm} after {joins} joins");
    }
    assert!(joins > 3, "the joining watcher got output {joins} times");
    assert!(
        closed_by_node(&mut stuck, Duration::from_secs(30)).await,
        "the non-reading watcher is still connected"
    );
    assert!(node.log().contains("websocket watcher dropped"));
    let (_, hwm) = memory(pid);
    assert!(hwm < 256 << 20, "VmHWM {hwm}, VmRSS peak {peak}");

    // Nobody watches: the stream is closed; a new watcher starts a new one.
    wait_until(Duration::from_secs(20), "log stream closed", || async {
        node.log()
            .contains("live output stream closed: no watchers")
    })
    .await;
    let frames = join(
        &node,
        &ws_path,
        Duration::from_secs(5),
        Duration::from_millis(500),
    )
    .await;
    assert!(
        !frames.is_empty(),
        "a watcher after the stream closed gets output"
    );
    let job_path = path_of(posted["jobUrl"].as_str().unwrap()).to_string();
    assert_eq!(node.post_empty(&format!("{job_path}stop/")).await.0, 200);
}

/// A watcher joining after a job printed 3 MB gets one marker line saying how many bytes it
/// missed, then the last MiB (at most), which together account for every byte printed.
#[tokio::test]
async fn a_late_joiner_gets_a_bounded_replay_and_a_marker() {
    const TOTAL: usize = 3_000_000;
    let node = Node::start(&[]).await;
    // Lines of 1000 bytes: Docker serves a log line by line, and millions of short lines would
    // take minutes.
    let command = format!(
        "sh -c 'yes {} | head -c {TOTAL}; sleep 60'",
        "y".repeat(999)
    );
    let (posted, ws_path) = start_job(&node, "bounds-replay", &command).await;
    // Joining keeps the feed alive; once a join saw the output complete, the next join gets
    // only the replay.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut complete = false;
    let (skipped, replayed) = loop {
        assert!(Instant::now() < deadline, "no complete replay in 90 s");
        let frames = join(
            &node,
            &ws_path,
            Duration::from_millis(1500),
            Duration::from_secs(10),
        )
        .await;
        let Some(marker) = frames.first() else {
            continue;
        };
        let Some(skipped) = marker
            .strip_prefix("[fastlane: ")
            .and_then(|rest| rest.strip_suffix(" bytes of earlier output not shown]\n"))
            .and_then(|number| number.parse::<usize>().ok())
        else {
            continue;
        };
        let replayed: usize = frames[1..].iter().map(String::len).sum();
        if skipped + replayed == TOTAL {
            if complete {
                break (skipped, replayed);
            }
            complete = true;
        }
    };
    assert!(replayed <= 1 << 20, "replayed {replayed} bytes");
    assert!(
        replayed >= (1 << 20) - (128 << 10),
        "replayed {replayed} bytes"
    );
    assert_eq!(skipped, TOTAL - replayed);
    let job_path = path_of(posted["jobUrl"].as_str().unwrap()).to_string();
    assert_eq!(node.post_empty(&format!("{job_path}stop/")).await.0, 200);
}

/// With `MAX_CONNECTIONS=8` and eight idle connections open, a ninth client is not served until
/// one of them closes; then it is.
#[tokio::test]
async fn open_connections_are_capped() {
    let node = Node::start(&[("MAX_CONNECTIONS", "8")]).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(("127.0.0.1", node.port)).await.unwrap());
    }
    let url = node.url("/healthcheck");
    let mut ninth = tokio::spawn(async move {
        reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map(|response| response.status().as_u16())
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(2), &mut ninth)
            .await
            .is_err(),
        "a ninth connection was served while eight were open"
    );
    idle.pop();
    let status = tokio::time::timeout(Duration::from_secs(10), ninth)
        .await
        .expect("the ninth client is served once a connection closed")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200);
}

/// A body arriving slower than `REQUEST_BODY_TIMEOUT_SECONDS` gets a 408 with the error JSON,
/// and the connection is closed.
#[tokio::test]
async fn slow_bodies_time_out() {
    let node = Node::start(&[("REQUEST_BODY_TIMEOUT_SECONDS", "1")]).await;
    let mut socket = slow_post(&node).await;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer))
        .await
        .expect("the node answers and closes the connection")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error""#), "{answer}");
    assert!(answer.contains(r#""operation""#), "{answer}");
}

/// Sends a POST's headers and the first byte of its 100-byte body, then nothing.
async fn slow_post(node: &Node) -> TcpStream {
    let mut socket = TcpStream::connect(("127.0.0.1", node.port)).await.unwrap();
    let request = format!(
        "POST /tasks/slow-body/ HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        node.port
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    socket
}

/// With `MAX_IN_FLIGHT_REQUESTS=1`, a request arriving while another is being served (a body
/// still on its way) gets 503 with `Retry-After: 1` and the error JSON; once that one ends, the
/// node serves again.
#[tokio::test]
async fn requests_in_flight_are_bounded() {
    let node = Node::start(&[("MAX_IN_FLIGHT_REQUESTS", "1")]).await;
    let slow = slow_post(&node).await;
    let url = node.url("/healthcheck");
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let response = reqwest::get(&url).await.unwrap();
        if response.status() == 503 {
            break response;
        }
        assert!(
            Instant::now() < deadline,
            "no 503 while a request is in flight"
        );
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(body["operation"], "admit_request");
    drop(slow);
    wait_until(Duration::from_secs(10), "served again", || async {
        reqwest::get(&url).await.unwrap().status() == 200
    })
    .await;
}

/// A WebSocket client that answers pings stays connected to a quiet job; one that does not
/// read at all is dropped after `WEBSOCKET_IDLE_TIMEOUT_SECONDS`.
#[tokio::test]
async fn idle_websockets_are_closed() {
    let node = Node::start(&[
        ("WEBSOCKET_PING_INTERVAL_SECONDS", "1"),
        ("WEBSOCKET_IDLE_TIMEOUT_SECONDS", "3"),
    ])
    .await;
    let (posted, ws_path) = start_job(&node, "bounds-idle", "sleep 60").await;
    let mut silent = non_reading_watcher(&node, &ws_path).await;
    let url = node.url(&ws_path).replace("http://", "ws://");
    let (mut answering, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // Reading answers the pings: still open after more than the idle timeout.
    let answering = tokio::spawn(async move {
        let started = Instant::now();
        let mut pings = 0;
        while started.elapsed() < Duration::from_secs(6) {
            match tokio::time::timeout(Duration::from_secs(5), answering.next()).await {
                Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
                Ok(Some(Ok(Message::Text(_)))) => {}
                other => return Err(format!("the answering client was closed: {other:?}")),
            }
        }
        Ok(pings)
    });
    assert!(
        closed_by_node(&mut silent, Duration::from_secs(20)).await,
        "the silent client is still connected"
    );
    let pings = answering.await.unwrap().unwrap();
    assert!(pings >= 3, "{pings} pings");
    let job_path = path_of(posted["jobUrl"].as_str().unwrap()).to_string();
    assert_eq!(node.post_empty(&format!("{job_path}stop/")).await.0, 200);
}

//! End-to-end: what a job prints is stored within `EXECUTION_OUTPUT_MAX_BYTES` per stream (issue
//! 11, point 3): the head and the tail around one marker line counting the bytes left out, and
//! the execution record says so; output within the budget is stored unchanged.

mod common;

use common::{image, path_of, Node};
use serde_json::{json, Value};

const BUDGET: usize = 1024 * 1024;

/// The marker the node puts where it left bytes out.
fn marker(left_out: usize) -> String {
    format!("\n[fastlane: {left_out} bytes left out]\n")
}

async fn text(node: &Node, path: &str) -> String {
    let response = node.get(path).await;
    assert_eq!(response.status(), 200, "GET {path}");
    response.text().await.unwrap()
}

/// A job printing ~5 MB to stdout and 3 MB to stderr under a 1 MiB budget: `/stdout/` holds its
/// first half MiB (with the distinctive start), the marker with the exact count, and its last
/// half MiB (ending in `END`); `/stderr/` likewise; `/logs` joins both; the record carries
/// `metadata.outputTruncated` with both counts.
#[tokio::test]
async fn output_beyond_the_budget_keeps_head_marker_and_tail() {
    let node = Node::start(&[("EXECUTION_OUTPUT_MAX_BYTES", &BUDGET.to_string())]).await;
    // Lines rather than one 5 MB line: Docker's `local` log driver splits long lines and drops
    // a bare newline after one, which is not what this test is about.
    let command = "bash -c \"echo START-OF-OUTPUT; yes aaaaaaa | head -c 5000000; echo END; \
                   yes stderr-line | head -c 3000000 >&2\"";
    let posted = node
        .post_job("chatty", json!({"image": image(), "command": command}))
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{}", execution["error"]);

    let stdout_written = "START-OF-OUTPUT\n".len() + 5_000_000 + "END\n".len();
    let stdout_left_out = stdout_written - BUDGET;
    let stderr_left_out = 3_000_000 - BUDGET;
    assert_eq!(
        execution["metadata"]["outputTruncated"],
        json!({"stdout": stdout_left_out, "stderr": stderr_left_out})
    );

    let execution_path = path_of(posted["executionUrl"].as_str().unwrap());
    let stdout = text(&node, &format!("{execution_path}stdout/")).await;
    let stdout_marker = marker(stdout_left_out);
    assert_eq!(stdout.len(), BUDGET + stdout_marker.len());
    assert!(stdout.starts_with("START-OF-OUTPUT\naaaaaaa\n"));
    assert!(stdout.ends_with("aaaaaaa\naaaaaaa\nEND\n"));
    assert_eq!(
        &stdout[BUDGET / 2..BUDGET / 2 + stdout_marker.len()],
        stdout_marker
    );
    assert_eq!(stdout.matches("[fastlane:").count(), 1);

    let stderr = text(&node, &format!("{execution_path}stderr/")).await;
    let stderr_marker = marker(stderr_left_out);
    assert_eq!(stderr.len(), BUDGET + stderr_marker.len());
    assert!(stderr.starts_with("stderr-line\nstderr-line\n"));
    assert_eq!(
        &stderr[BUDGET / 2..BUDGET / 2 + stderr_marker.len()],
        stderr_marker
    );

    let logs = text(&node, &format!("{execution_path}logs")).await;
    assert!(logs.contains(&stdout_marker) && logs.contains(&stderr_marker));
    assert!(logs.contains("START-OF-OUTPUT") && logs.contains("END\n"));

    // The job's details show the same record.
    let job = node
        .get_json(path_of(posted["jobUrl"].as_str().unwrap()))
        .await;
    let executions = job["job"]["executions"].as_array().unwrap();
    assert_eq!(
        executions[0]["metadata"]["outputTruncated"]["stdout"],
        stdout_left_out
    );
}

/// Output within the budget is stored byte for byte and the record has no `outputTruncated`.
#[tokio::test]
async fn output_within_the_budget_is_unchanged() {
    let node = Node::start(&[("EXECUTION_OUTPUT_MAX_BYTES", &BUDGET.to_string())]).await;
    let command = "bash -c \"yes bbbbbbb | head -c 1000000; echo small >&2\"";
    let posted = node
        .post_job("quiet", json!({"image": image(), "command": command}))
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{}", execution["error"]);
    assert_eq!(execution["metadata"].get("outputTruncated"), None::<&Value>);
    let execution_path = path_of(posted["executionUrl"].as_str().unwrap());
    let stdout = text(&node, &format!("{execution_path}stdout/")).await;
    assert_eq!(stdout, "bbbbbbb\n".repeat(125_000));
    assert_eq!(
        text(&node, &format!("{execution_path}stderr/")).await,
        "small\n"
    );
}

/// Job details carry only the end of each execution's output, at most
/// `JOB_DETAILS_OUTPUT_MAX_BYTES`, with `logTruncated` when cut; the output route serves it whole.
#[tokio::test]
async fn job_details_carry_the_tail_of_the_output() {
    let node = Node::start(&[("JOB_DETAILS_OUTPUT_MAX_BYTES", "1000")]).await;
    let command = "bash -c \"echo FIRST-LINE; yes filler-line | head -c 49992; echo LAST-LINE\"";
    let posted = node
        .post_job("details", json!({"image": image(), "command": command}))
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{}", execution["error"]);
    let job = node
        .get_json(path_of(posted["jobUrl"].as_str().unwrap()))
        .await;
    let shown = &job["job"]["executions"][0];
    let log = shown["log"].as_str().unwrap();
    assert_eq!(log.len(), 1000);
    assert!(log.ends_with("filler-line\nLAST-LINE\n") && !log.contains("FIRST-LINE"));
    assert_eq!(shown["logTruncated"], true);
    assert_eq!(shown.get("errorTruncated"), None::<&Value>);
    let execution_path = path_of(posted["executionUrl"].as_str().unwrap());
    let whole = text(&node, &format!("{execution_path}stdout/")).await;
    assert!(whole.starts_with("FIRST-LINE\n") && whole.ends_with("LAST-LINE\n"));
    // The execution route carries the same tail, flagged, with a link to the whole output.
    assert_eq!(execution["log"], shown["log"]);
    assert_eq!(execution["logTruncated"], true);
    assert_eq!(execution.get("errorTruncated"), None::<&Value>);
    let log_url = execution["logUrl"].as_str().unwrap();
    assert_eq!(log_url, node.url(&format!("{execution_path}stdout/")));
    assert_eq!(shown["logUrl"], log_url);
    assert_eq!(text(&node, path_of(log_url)).await, whole);
}

/// VmHWM (peak resident memory) of a process, in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .unwrap();
    kib * 1024
}

/// A 100 MB stored output is sent by `/stdout/` and `/logs/` in pieces: fetching both at once
/// keeps the node's peak memory far below the output's size, and every byte arrives, with its
/// `Content-Length`. (The test grows a small job's stored stdout to 100 MB in the database
/// while the node is stopped: Docker would take minutes to log that much here.)
#[tokio::test]
async fn a_large_stored_output_is_streamed_in_pieces() {
    const SIZE: usize = 100_000_000;
    let mut node = Node::start(&[]).await;
    let posted = node
        .post_job("large", json!({"image": image(), "command": "echo small"}))
        .await;
    let execution = node
        .wait_finished(posted["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{}", execution["error"]);
    let status = node.terminate();
    assert!(status.success(), "node exited with {status}");
    let connection = rusqlite::Connection::open(node.data_dir.join("fastlane.sqlite3")).unwrap();
    let grown = connection
        .execute(
            "UPDATE outputs SET log = zeroblob(?1) WHERE execution_id = ?2",
            rusqlite::params![SIZE as i64, execution["executionId"].as_str().unwrap()],
        )
        .unwrap();
    assert_eq!(grown, 1);
    drop(connection);
    node.start_again().await;
    let execution_path = path_of(posted["executionUrl"].as_str().unwrap()).to_string();
    let fetch = |route: &'static str| {
        let url = node.url(&format!("{execution_path}{route}/"));
        async move {
            let mut response = reqwest::get(&url).await.unwrap();
            assert_eq!(response.status(), 200, "GET {url}");
            let declared = response.content_length();
            let (mut received, mut last) = (0_usize, Vec::new());
            while let Some(piece) = response.chunk().await.expect("body") {
                received += piece.len();
                last = piece.to_vec();
            }
            (declared, received, last)
        }
    };
    let started = std::time::Instant::now();
    let ((stdout_declared, stdout_len, _), (logs_declared, logs_len, logs_end)) =
        tokio::join!(fetch("stdout"), fetch("logs"));
    assert_eq!((stdout_declared, stdout_len), (Some(SIZE as u64), SIZE));
    let logs_size = SIZE + "\n-=-\n".len();
    assert_eq!(
        (logs_declared, logs_len),
        (Some(logs_size as u64), logs_size)
    );
    assert!(
        logs_end.ends_with(b"\n-=-\n"),
        "stdout, then the separator, then no stderr"
    );
    let peak = peak_memory(node.pid());
    eprintln!("2 × 100 MB served in {:?}, VmHWM {peak}", started.elapsed());
    assert!(peak < 64 << 20, "VmHWM {peak} serving two 100 MB outputs");
}

//! Memory benchmark (issue 11, point 7): a job writing output as fast as it can for 60 s with
//! 50 WebSocket watchers joining and leaving, 20 clients fetching job details and `/logs/` of
//! executions whose stored outputs are 200 MB each, and a trivial job posted every 5 s. Reports
//! the node's peak resident memory (VmHWM) and each trivial job's POST → `done` time.
//! Run through `scripts/bench.sh memory`, which starts the node between the three steps:
//!
//!     bench_memory seed NODE_URL IMAGE N FILE      N finished jobs; their paths into FILE
//!     bench_memory grow DATABASE SIZE FILE         (node stopped) their stdout grown to SIZE
//!     bench_memory run NODE_URL PID IMAGE FILE [SECONDS [ENGINE]]
//!
//! With ENGINE, each trivial job is followed, half-way to the next, by a `docker run --rm` of the
//! same command straight on that engine: what the engine itself needs under the same load.

use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

const WATCHERS: usize = 50;
/// Readers of large outputs; `FASTLANE_BENCH_READERS` changes it (0: the live load alone).
const READERS: usize = 20;

/// `(VmRSS, VmHWM)` of a process, in MB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        let kib: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0.0);
        kib * 1024.0 / 1e6
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn post_job(client: &reqwest::Client, url: &str, body: Value) -> Result<Value, Error> {
    Ok(client
        .post(format!("{url}/tasks/bench-memory/"))
        .json(&body)
        .send()
        .await?
        .json()
        .await?)
}

/// Polls the execution until it ends; its status.
async fn wait_end(client: &reqwest::Client, execution_url: &str) -> Result<String, Error> {
    Ok(
        wait_end_details(client, execution_url).await?["execution"]["status"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

/// The execution's details once it has ended.
async fn wait_end_details(client: &reqwest::Client, execution_url: &str) -> Result<Value, Error> {
    loop {
        let details: Value = client.get(execution_url).send().await?.json().await?;
        let status = details["execution"]["status"].as_str().unwrap_or("");
        if ["done", "failed", "timedout", "expired", "stopped"].contains(&status) {
            return Ok(details);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn seed(url: &str, image: &str, count: usize, file: &str) -> Result<(), Error> {
    let client = reqwest::Client::new();
    let mut lines = Vec::new();
    for _ in 0..count {
        let posted = post_job(
            &client,
            url,
            json!({"image": image, "command": "echo seed"}),
        )
        .await?;
        let execution_url = posted["executionUrl"].as_str().ok_or("no executionUrl")?;
        wait_end(&client, execution_url).await?;
        let path = |key: &str| posted[key].as_str().unwrap_or("").replace(url, "");
        lines.push(format!("{} {}", path("jobUrl"), path("executionUrl")));
    }
    std::fs::write(file, lines.join("\n"))?;
    Ok(())
}

/// Grows each seeded execution's stored stdout to `size` bytes, in the database of the stopped
/// node: Docker would take minutes per 200 MB here (vfs storage driver, 2 shared cores).
fn grow(database: &str, size: i64, file: &str) -> Result<(), Error> {
    let connection = rusqlite::Connection::open(database)?;
    for line in std::fs::read_to_string(file)?.lines() {
        let execution_path = line.split(' ').nth(1).ok_or("bad line")?;
        let execution_id = execution_path.trim_end_matches('/').rsplit('/').next();
        let changed = connection.execute(
            "UPDATE outputs SET log = zeroblob(?1) WHERE execution_id = ?2",
            rusqlite::params![size, execution_id],
        )?;
        if changed != 1 {
            return Err(format!("no output row for {execution_path}").into());
        }
    }
    Ok(())
}

/// One watcher: joins, reads for 1–4 s, leaves, again until `deadline`.
async fn watcher(ws_url: String, index: usize, deadline: Instant, stats: Arc<Stats>) {
    while Instant::now() < deadline {
        let Ok((mut socket, _)) = tokio_tungstenite::connect_async(&ws_url).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        stats.joins.fetch_add(1, Ordering::Relaxed);
        let stay = Duration::from_millis(1000 + (index as u64 * 61) % 3000);
        let leave_at = Instant::now() + stay;
        while let Ok(Some(Ok(message))) =
            tokio::time::timeout_at(leave_at.into(), socket.next()).await
        {
            if let tokio_tungstenite::tungstenite::Message::Close(frame) = message {
                if frame.is_some_and(|frame| frame.reason.as_str() == "slow") {
                    stats.slow_closes.fetch_add(1, Ordering::Relaxed);
                }
                break;
            }
            stats
                .ws_bytes
                .fetch_add(message.len() as u64, Ordering::Relaxed);
        }
    }
}

/// One reader: job details and `/logs/` of the large executions in turn, bodies read whole.
async fn reader(
    url: String,
    paths: Vec<(String, String)>,
    index: usize,
    deadline: Instant,
    stats: Arc<Stats>,
) {
    let client = reqwest::Client::new();
    let mut turn = index;
    while Instant::now() < deadline {
        let (job, execution) = &paths[turn % paths.len()];
        let target = if turn.is_multiple_of(2) {
            format!("{url}{job}")
        } else {
            format!("{url}{execution}logs/")
        };
        turn += 1;
        let Ok(mut response) = client.get(&target).send().await else {
            continue;
        };
        // Left at the deadline: a 200 MB body may take longer than the load lasts.
        while let Ok(Ok(Some(piece))) =
            tokio::time::timeout_at(deadline.into(), response.chunk()).await
        {
            stats
                .http_bytes
                .fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
        stats.requests.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct Stats {
    joins: AtomicU64,
    slow_closes: AtomicU64,
    ws_bytes: AtomicU64,
    requests: AtomicU64,
    http_bytes: AtomicU64,
}

/// `docker run --rm` of the trivial command on `engine`, in milliseconds: what the engine itself
/// needs under the same load, without the node.
async fn docker_run_ms(engine: &str, image: &str) -> Result<f64, Error> {
    let started = Instant::now();
    let status = tokio::process::Command::new("docker")
        .args([
            "-H",
            &format!("tcp://{engine}"),
            "run",
            "--rm",
            "--network",
            "none",
        ])
        .args(["--log-driver", "local", image, "echo", "ok"])
        .stdout(std::process::Stdio::null())
        .status()
        .await?;
    if !status.success() {
        return Err(format!("docker run failed: {status}").into());
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

async fn run(
    url: &str,
    pid: u32,
    image: &str,
    file: &str,
    seconds: u64,
    engine: Option<&str>,
) -> Result<(), Error> {
    let client = reqwest::Client::new();
    let paths: Vec<(String, String)> = std::fs::read_to_string(file)?
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(job, execution)| (job.to_string(), execution.to_string()))
        .collect();
    let (rss, hwm) = memory(pid);
    println!("before: VmRSS {rss:.1} MB, VmHWM {hwm:.1} MB");
    let command =
        "sh -c 'yes fastlane memory benchmark: a line of output written as fast as possible'";
    let chatty = post_job(&client, url, json!({"image": image, "command": command})).await?;
    let chatty_url = chatty["executionUrl"]
        .as_str()
        .ok_or("no executionUrl")?
        .to_string();
    loop {
        let details: Value = client.get(&chatty_url).send().await?.json().await?;
        if details["execution"]["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = Arc::new(Stats::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let ws_url = format!("{chatty_url}ws/").replace("http://", "ws://");
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..WATCHERS {
        tasks.spawn(watcher(ws_url.clone(), index, deadline, stats.clone()));
    }
    let readers = std::env::var("FASTLANE_BENCH_READERS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(READERS);
    for index in 0..readers {
        let (url, paths) = (url.to_string(), paths.clone());
        tasks.spawn(reader(url, paths, index, deadline, stats.clone()));
    }
    let mut trivial = Vec::new();
    let mut direct = Vec::new();
    let mut peak_rss: f64 = 0.0;
    let mut next_trivial = started + Duration::from_secs(2);
    while Instant::now() < deadline {
        if Instant::now() >= next_trivial {
            next_trivial += Duration::from_secs(5);
            let posted_at = Instant::now();
            let posted_wall = time::OffsetDateTime::now_utc().time();
            let posted =
                post_job(&client, url, json!({"image": image, "command": "echo ok"})).await?;
            let execution_url = posted["executionUrl"].as_str().ok_or("no executionUrl")?;
            let details = wait_end_details(&client, execution_url).await?;
            let execution = &details["execution"];
            let status = format!(
                "{} (posted {posted_wall}, created {}, started {}, finished {})",
                execution["status"].as_str().unwrap_or(""),
                execution["createdAt"].as_str().unwrap_or("-"),
                execution["startedAt"].as_str().unwrap_or("-"),
                execution["finishedAt"].as_str().unwrap_or("-"),
            );
            trivial.push((posted_at.elapsed().as_secs_f64() * 1000.0, status));
            if let Some(engine) = engine {
                // Half-way to the next trivial job: the same command straight on the engine.
                tokio::time::sleep_until((posted_at + Duration::from_millis(2500)).into()).await;
                direct.push(docker_run_ms(engine, image).await?);
            }
        }
        peak_rss = peak_rss.max(memory(pid).0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, hwm_under_load) = memory(pid);
    while tasks.join_next().await.is_some() {}
    let (_, hwm_after_readers) = memory(pid);
    client.post(format!("{chatty_url}stop/")).send().await?;
    wait_end(&client, &chatty_url).await?;
    let (rss, hwm_end) = memory(pid);
    let mb = |bytes: u64| bytes as f64 / 1e6;
    println!(
        "{} s: {} watcher joins ({} closed slow, {:.1} MB received), {} GETs ({:.1} MB received)",
        seconds,
        stats.joins.load(Ordering::Relaxed),
        stats.slow_closes.load(Ordering::Relaxed),
        mb(stats.ws_bytes.load(Ordering::Relaxed)),
        stats.requests.load(Ordering::Relaxed),
        mb(stats.http_bytes.load(Ordering::Relaxed)),
    );
    println!("peak VmRSS sampled under load: {peak_rss:.1} MB");
    println!("VmHWM under load: {hwm_under_load:.1} MB (after readers finished: {hwm_after_readers:.1} MB)");
    println!("VmHWM after the chatty job was stopped and its output stored: {hwm_end:.1} MB (VmRSS {rss:.1} MB)");
    for (ms, status) in &trivial {
        println!("trivial job: {ms:.0} ms, {status}");
    }
    let worst = trivial.iter().map(|(ms, _)| *ms).fold(0.0, f64::max);
    println!("trivial jobs: n={} max={worst:.0} ms", trivial.len());
    if !direct.is_empty() {
        let listed: Vec<String> = direct.iter().map(|ms| format!("{ms:.0}")).collect();
        let worst = direct.iter().copied().fold(0.0, f64::max);
        println!(
            "docker run --rm of the same command on the engine, under the same load (ms): {} (max {worst:.0})",
            listed.join(" ")
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let strings: Vec<&str> = args.iter().map(String::as_str).collect();
    match strings.as_slice() {
        ["seed", url, image, count, file] => seed(url, image, count.parse()?, file).await,
        ["grow", database, size, file] => grow(database, size.parse()?, file),
        ["run", url, pid, image, file, rest @ ..] => {
            let seconds = rest.first().map_or(Ok(60), |s| s.parse())?;
            let engine = rest.get(1).copied();
            run(url, pid.parse()?, image, file, seconds, engine).await
        }
        _ => Err("usage: bench_memory seed|grow|run … (see the file's doc)".into()),
    }
}

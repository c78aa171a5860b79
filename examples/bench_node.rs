//! Node-level scale benchmarks (issue 17, points 2 and 3), through the HTTP API of a running
//! node. Run through `scripts/bench.sh drain` and `scripts/bench.sh concurrency`, which start
//! the test environment and the node:
//!
//!     bench_node drain NODE_URL PID ENGINE IMAGE N WINDOW_SECONDS
//!     bench_node concurrency NODE_URL PID IMAGE N
//!
//! `drain`: the node's farm is ENGINE alone with `maxRunning: 4`. First about 100 trivial jobs
//! (`true`) are kept waiting (topped up every 200 ms) for WINDOW seconds; then N are posted at
//! once (64 in flight: the enqueue rate while the backlog grows) and the next WINDOW seconds
//! are measured with N waiting. For each window: executions started and finished in it (the
//! drain rate), the slot-to-start time (the finish that freed a slot → the start of the
//! execution that took it, from the executions' `finishedAt`/`startedAt`; it includes the
//! engine's create + start of the container), the node's CPU per started job
//! (`/proc/PID/stat`) and its RSS. Then 4 loops of `docker run --rm IMAGE true` on ENGINE for
//! WINDOW seconds: the engine's own drain rate.
//!
//! `concurrency`: N `sleep 900` jobs posted at once (32 in flight) to a farm of two engines;
//! the time from the last POST answered until all are `running`, then the node's RSS and CPU
//! over 20 s while they run, per running execution.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The node's CPU time (user + system) in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<f64>().ok())
    };
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}

/// `(VmRSS, VmHWM)` of a process in MB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Microseconds since the epoch of the node's `YYYY-MM-DDTHH:MM:SS[.ffffff]` (UTC).
fn micros(iso: &str) -> Option<i64> {
    let parsed = time::PrimitiveDateTime::parse(
        iso,
        &time::format_description::well_known::Iso8601::DEFAULT,
    )
    .ok()?;
    Some((parsed.assume_utc().unix_timestamp_nanos() / 1000) as i64)
}

fn now_micros() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * fraction).round() as usize]
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    task: &str,
    body: &Value,
) -> Result<String, Error> {
    for attempt in 0..20 {
        let response = client
            .post(format!("{url}/tasks/{task}/"))
            .json(body)
            .send()
            .await?;
        if response.status().as_u16() == 503 {
            // In-flight limit: back off and send it again.
            tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
            continue;
        }
        let answer: Value = response.json().await?;
        return Ok(answer["executionUrl"]
            .as_str()
            .ok_or_else(|| format!("no executionUrl: {answer}"))?
            .to_string());
    }
    Err("POST refused 20 times".into())
}

/// Posts `count` jobs with `body` to `task`, `in_flight` at once; their execution URLs in
/// posting order (by worker, interleaved), and the seconds it took.
async fn post_many(
    client: &reqwest::Client,
    url: &str,
    task: &str,
    body: Value,
    count: usize,
    in_flight: usize,
) -> Result<(Vec<String>, f64), Error> {
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slots = Arc::new(std::sync::Mutex::new(vec![String::new(); count]));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (client, url, task, body) = (
            client.clone(),
            url.to_string(),
            task.to_string(),
            body.clone(),
        );
        let (next, slots) = (next.clone(), slots.clone());
        workers.spawn(async move {
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= count {
                    return Ok::<(), Error>(());
                }
                let execution = post(&client, &url, &task, &body).await?;
                slots.lock().unwrap()[index] = execution;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let urls = std::mem::take(&mut *slots.lock().unwrap());
    Ok((urls, seconds))
}

/// What the bench reads of an execution.
struct Seen {
    status: String,
    container_id: Option<String>,
    started: Option<i64>,
    finished: Option<i64>,
}

async fn execution(client: &reqwest::Client, url: &str) -> Result<Seen, Error> {
    let details: Value = client.get(url).send().await?.json().await?;
    let execution = &details["execution"];
    let text = |field: &Value| field.as_str().map(str::to_string);
    Ok(Seen {
        status: text(&execution["status"]).unwrap_or_default(),
        container_id: text(&execution["metadata"]["container_id"]),
        started: execution["startedAt"].as_str().and_then(micros),
        finished: execution["finishedAt"].as_str().and_then(micros),
    })
}

/// What the engine saw of one container, in µs since the epoch: from its debug log (when a
/// call arrived) and its events (when it was done).
#[derive(Clone, Copy, Debug, Default)]
struct EngineSeen {
    create_call: Option<i64>,
    created: Option<i64>,
    start_call: Option<i64>,
    started: Option<i64>,
    died: Option<i64>,
    /// The node's first inspect call after `started`: the engine's answer to its wait came.
    exit_read: Option<i64>,
}

/// `docker events` of `engine`'s containers from `since` (unix seconds) on, recorded to a file
/// while a window runs: the engine answers a `--since` query from its last 256 events only.
struct EventsRecorder {
    child: std::process::Child,
    path: std::path::PathBuf,
}

impl EventsRecorder {
    fn start(engine: &str, since: i64) -> Option<EventsRecorder> {
        let path = std::env::temp_dir().join(format!(
            "fastlane-bench-events-{}-{since}",
            std::process::id()
        ));
        let file = std::fs::File::create(&path).ok()?;
        let child = std::process::Command::new("docker")
            .args(["-H", &format!("tcp://{engine}"), "events"])
            .args(["--filter", "type=container", "--since", &since.to_string()])
            .args(["--format", "{{json .}}"])
            .stdout(file)
            .spawn()
            .ok()?;
        Some(EventsRecorder { child, path })
    }

    /// Stops recording; the events, one JSON object per line.
    fn finish(mut self) -> String {
        // The last events of the window reach the file within a moment.
        std::thread::sleep(Duration::from_millis(500));
        let _ = self.child.kill();
        let _ = self.child.wait();
        let events = std::fs::read_to_string(&self.path).unwrap_or_default();
        let _ = std::fs::remove_file(&self.path);
        events
    }
}

/// The engine's view of every container in `events` (from [`EventsRecorder`]), by container
/// id, completed from its debug log at `log_path` (`dockerd --debug`: one `Calling METHOD
/// PATH` line per API call, with the daemon's clock).
fn engine_seen(events: &str, log_path: &str) -> HashMap<String, EngineSeen> {
    let mut seen: HashMap<String, EngineSeen> = HashMap::new();
    let mut ids_by_name: HashMap<String, String> = HashMap::new();
    for event in events
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
    {
        let (Some(id), Some(nanos)) = (event["Actor"]["ID"].as_str(), event["timeNano"].as_i64())
        else {
            continue;
        };
        let at = Some(nanos / 1000);
        let entry = seen.entry(id.to_string()).or_default();
        match event["Action"].as_str() {
            Some("create") => {
                entry.created = at;
                if let Some(name) = event["Actor"]["Attributes"]["name"].as_str() {
                    ids_by_name.insert(name.to_string(), id.to_string());
                }
            }
            Some("start") => entry.started = at,
            Some("die") => entry.died = at,
            _ => {}
        }
    }
    let log = std::fs::read_to_string(log_path).unwrap_or_default();
    for line in log.lines() {
        let Some((at, path)) = line
            .strip_prefix("time=\"")
            .and_then(|rest| rest.split_once('"'))
            .and_then(|(at, rest)| Some((at, rest.split_once("msg=\"Calling ")?.1)))
        else {
            continue;
        };
        let Some(at) =
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|at| (at.unix_timestamp_nanos() / 1000) as i64)
        else {
            continue;
        };
        let Some(call) = path
            .split_once("/containers/")
            .map(|(_, call)| call.trim_end_matches('"'))
        else {
            continue;
        };
        let method = path.split(' ').next().unwrap_or("");
        if method == "GET" && call.ends_with("/json") {
            // The node's first read of a container after it started: the engine had answered
            // its wait (no one watches these containers, so nothing else reads them). The die
            // event may be stamped a little after the wait's answer left.
            let id = call.trim_end_matches("/json");
            if let Some(entry) = seen.get_mut(id) {
                if entry.started.is_some_and(|started| started <= at) && entry.exit_read.is_none() {
                    entry.exit_read = Some(at);
                }
            }
        } else if method != "POST" {
            continue;
        } else if let Some(name) = call.strip_prefix("create?name=") {
            let name = name.split('&').next().unwrap_or(name);
            if let Some(entry) = ids_by_name.get(name).and_then(|id| seen.get_mut(id)) {
                entry.create_call = Some(at);
            }
        } else if let Some(id) = call.strip_suffix("/start") {
            if let Some(entry) = seen.get_mut(id) {
                entry.start_call = Some(at);
            }
        }
    }
    seen
}

/// The index of the first execution not started yet (binary search: the queue is first in,
/// first out, so the started ones are a prefix, give or take the posting workers' order).
async fn first_waiting(client: &reqwest::Client, urls: &[String]) -> Result<usize, Error> {
    let (mut low, mut high) = (0, urls.len());
    while low < high {
        let middle = (low + high) / 2;
        if execution(client, &urls[middle]).await?.status == "enqueued" {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    Ok(low)
}

/// What one window measured.
struct Window {
    waiting_at_start: u64,
    waiting_at_end: u64,
    started: usize,
    finished: usize,
    seconds: f64,
    gaps_ms: Vec<f64>,
    longest: Vec<(f64, f64)>,
    split: Split,
    cpu_seconds: f64,
    rss_mb: f64,
    hwm_mb: f64,
}

impl Window {
    fn print(&self, name: &str) {
        let mut gaps = self.gaps_ms.clone();
        gaps.sort_by(f64::total_cmp);
        println!(
            "{name:<24} waiting {:>6} → {:>6}  started {:>4} finished {:>4} in {:.0} s  drain {:.2} jobs/s  slot→start p50 {:.1} ms p99 {:.1} ms (n={})  CPU/start {:.2} ms  RSS {:.1} MB (peak {:.1})",
            self.waiting_at_start,
            self.waiting_at_end,
            self.started,
            self.finished,
            self.seconds,
            self.finished as f64 / self.seconds,
            percentile(&gaps, 0.5),
            percentile(&gaps, 0.99),
            gaps.len(),
            self.cpu_seconds * 1000.0 / self.started.max(1) as f64,
            self.rss_mb,
            self.hwm_mb,
        );
        let longest: Vec<String> = self
            .longest
            .iter()
            .map(|(gap, at)| format!("{gap:.0} ms at +{at:.1} s"))
            .collect();
        println!("    longest slot→start: {}", longest.join(", "));
        self.split.print();
    }
}

/// Slot-to-start split between the node and the engine, one entry per start that took a
/// freed slot. From the engine's clock: the container that freed the slot died; the engine
/// answered the node's wait, and the node read the container (`exit → read`, counted as the
/// engine's); the node read its output, stored the end, gave the slot to the next waiter,
/// which placed its container (`read → create call`, the node's, with the few engine reads it
/// makes); the engine created it (`create`); the node asked to start it (`created → start
/// call`); the engine started it (`start`); the node stored `running` (`started → stored`).
#[derive(Default)]
struct Split {
    exit_to_read: Vec<f64>,
    read_to_create_call: Vec<f64>,
    create: Vec<f64>,
    created_to_start_call: Vec<f64>,
    start: Vec<f64>,
    started_to_stored: Vec<f64>,
    node: Vec<f64>,
    engine: Vec<f64>,
}

impl Split {
    fn add(&mut self, engine: &HashMap<String, EngineSeen>, freed: &Seen, run: &Seen) {
        let seen = |seen: &Seen| {
            seen.container_id
                .as_ref()
                .and_then(|id| engine.get(id))
                .copied()
        };
        let (Some(before), Some(this), Some(stored)) = (seen(freed), seen(run), run.started) else {
            return;
        };
        let times = (
            before.died,
            before.exit_read,
            this.create_call,
            this.created,
            this.start_call,
            this.started,
        );
        let (
            Some(died),
            Some(read),
            Some(create_call),
            Some(created),
            Some(start_call),
            Some(started),
        ) = times
        else {
            return;
        };
        let ms = |from: i64, to: i64| (to - from) as f64 / 1000.0;
        let node = [
            ms(read, create_call),
            ms(created, start_call),
            ms(started, stored),
        ];
        let engine_parts = [
            ms(died, read),
            ms(create_call, created),
            ms(start_call, started),
        ];
        self.exit_to_read.push(engine_parts[0]);
        self.read_to_create_call.push(node[0]);
        self.create.push(engine_parts[1]);
        self.created_to_start_call.push(node[1]);
        self.start.push(engine_parts[2]);
        self.started_to_stored.push(node[2]);
        self.node.push(node.iter().sum());
        self.engine.push(engine_parts.iter().sum());
    }

    fn print(&self) {
        if self.node.is_empty() {
            return;
        }
        let line = |name: &str, values: &[f64]| {
            let mut sorted = values.to_vec();
            sorted.sort_by(f64::total_cmp);
            format!(
                "{name} p50 {:.1} p99 {:.1} max {:.1} ms",
                percentile(&sorted, 0.5),
                percentile(&sorted, 0.99),
                percentile(&sorted, 1.0)
            )
        };
        println!(
            "    split (n={}): {}, {} | parts: {}, {}, {}, {}, {}, {}",
            self.node.len(),
            line("node", &self.node),
            line("engine", &self.engine),
            line("exit→read", &self.exit_to_read),
            line("read→create call", &self.read_to_create_call),
            line("create", &self.create),
            line("created→start call", &self.created_to_start_call),
            line("start", &self.start),
            line("started→stored", &self.started_to_stored),
        );
    }
}

/// Executions of `urls` not started yet.
async fn waiting(
    client: &reqwest::Client,
    urls: &tokio::sync::Mutex<Vec<String>>,
) -> Result<u64, Error> {
    let urls = urls.lock().await.clone();
    Ok((urls.len() - first_waiting(client, &urls).await?) as u64)
}

/// Measures a window of `seconds` over the executions of `urls` (posting order); `feed`
/// tops the backlog up while it runs.
async fn window(
    client: &reqwest::Client,
    url: &str,
    pid: u32,
    urls: &tokio::sync::Mutex<Vec<String>>,
    seconds: u64,
    feed: Option<(&str, &Value, u64)>,
    engine_log: Option<(&str, &str)>,
) -> Result<Window, Error> {
    let first = first_waiting(client, &urls.lock().await.clone()).await?;
    let waiting_at_start = (urls.lock().await.len() - first) as u64;
    let (from, cpu_before) = (now_micros(), cpu_seconds(pid));
    // From a minute before: the first starts took slots freed before the window.
    let recorder =
        engine_log.and_then(|(engine, _)| EventsRecorder::start(engine, from / 1_000_000 - 60));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if let Some((task, body, level)) = feed {
            let missing = level.saturating_sub(waiting(client, urls).await?);
            for _ in 0..missing {
                let execution = post(client, url, task, body).await?;
                urls.lock().await.push(execution);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (to, cpu) = (now_micros(), cpu_seconds(pid) - cpu_before);
    let (rss_mb, hwm_mb) = memory(pid);
    let urls = urls.lock().await.clone();
    let last = first_waiting(client, &urls).await?;
    let waiting_at_end = (urls.len() - last) as u64;
    // Every execution around the window, with margins for the posting order.
    let range = first.saturating_sub(64)..(last + 64).min(urls.len());
    let mut runs = Vec::new();
    for execution_url in &urls[range] {
        runs.push(execution(client, execution_url).await?);
    }
    let mut by_start: Vec<&Seen> = runs.iter().filter(|run| run.started.is_some()).collect();
    by_start.sort_by_key(|run| run.started);
    let mut by_finish: Vec<&Seen> = runs.iter().filter(|run| run.finished.is_some()).collect();
    by_finish.sort_by_key(|run| run.finished);
    let starts: Vec<i64> = by_start.iter().filter_map(|run| run.started).collect();
    let finishes: Vec<i64> = by_finish.iter().filter_map(|run| run.finished).collect();
    let engine = recorder
        .map(|recorder| engine_seen(&recorder.finish(), engine_log.map_or("", |(_, log)| log)));
    // At maxRunning 4 with jobs waiting, the i-th start (0-based) took the slot of the
    // (i-4)-th finish: 3 were running just before it.
    let mut gaps_ms = Vec::new();
    // The longest slot-to-start gaps, with when in the window they ended (s).
    let mut longest: Vec<(f64, f64)> = Vec::new();
    let mut split = Split::default();
    for (index, run) in by_start.iter().enumerate().skip(4 + 8) {
        let start = run.started.unwrap_or_default();
        if start < from || start > to {
            continue;
        }
        let Some(freed) = by_finish.get(index - 4) else {
            continue;
        };
        let gap_ms = (start - freed.finished.unwrap_or_default()).max(0) as f64 / 1000.0;
        gaps_ms.push(gap_ms);
        longest.push((gap_ms, (start - from) as f64 / 1e6));
        if let Some(engine) = &engine {
            split.add(engine, freed, run);
        }
    }
    Ok(Window {
        waiting_at_start,
        waiting_at_end,
        started: starts.iter().filter(|at| (from..=to).contains(*at)).count(),
        finished: finishes
            .iter()
            .filter(|at| (from..=to).contains(*at))
            .count(),
        seconds: (to - from) as f64 / 1e6,
        gaps_ms,
        longest: {
            longest.sort_by(|a, b| b.0.total_cmp(&a.0));
            longest.truncate(3);
            longest
        },
        split,
        cpu_seconds: cpu,
        rss_mb,
        hwm_mb,
    })
}

/// `docker run --rm IMAGE true` in 4 loops on `engine` for `seconds`: containers per second.
fn docker_runs(engine: &str, image: &str, seconds: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let loops: Vec<_> = (0..4)
        .map(|_| {
            let (engine, image) = (engine.to_string(), image.to_string());
            std::thread::spawn(move || {
                let mut done = 0_u64;
                while Instant::now() < deadline {
                    let status = std::process::Command::new("docker")
                        .args([
                            "-H",
                            &format!("tcp://{engine}"),
                            "run",
                            "--rm",
                            &image,
                            "true",
                        ])
                        .output();
                    if status.is_ok_and(|output| output.status.success()) {
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let done: u64 = loops.into_iter().map(|run| run.join().unwrap_or(0)).sum();
    done as f64 / started.elapsed().as_secs_f64()
}

async fn drain(args: &[String]) -> Result<(), Error> {
    let [url, pid, engine, image, count, seconds] = args else {
        return Err("usage: bench_node drain NODE_URL PID ENGINE IMAGE N WINDOW_SECONDS".into());
    };
    let (pid, count, seconds): (u32, usize, u64) = (pid.parse()?, count.parse()?, seconds.parse()?);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()?;
    let body = json!({"image": image, "command": "true"});
    // The engine's debug log, for the split of slot-to-start between node and engine.
    let log_path = std::env::var("FASTLANE_BENCH_ENGINE_LOG")
        .ok()
        .filter(|path| !path.is_empty());
    let engine_log = log_path.as_deref().map(|log| (engine.as_str(), log));

    let (small, _) = post_many(&client, url, "bench-drain-small", body.clone(), 104, 8).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let small = tokio::sync::Mutex::new(small);
    let at_100 = window(
        &client,
        url,
        pid,
        &small,
        seconds,
        Some(("bench-drain-small", &body, 100)),
        engine_log,
    )
    .await?;
    at_100.print("~100 waiting");
    // The small backlog drains before the large one is posted.
    let limit = Instant::now() + Duration::from_secs(600);
    while waiting(&client, &small).await? > 0 && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let cpu_before = cpu_seconds(pid);
    let posting_from = now_micros();
    let (large, posting) = post_many(&client, url, "bench-drain-large", body, count, 64).await?;
    let posting_to = now_micros();
    println!(
        "posted {count} jobs in {posting:.1} s: {:.0} jobs/s (64 in flight), node CPU {:.0} µs/job, RSS {:.1} MB",
        count as f64 / posting,
        (cpu_seconds(pid) - cpu_before) * 1e6 / count as f64,
        memory(pid).0
    );
    // The jobs run while the flood of POSTs is stored: the first ones posted ran meanwhile.
    let ran = first_waiting(&client, &large).await?;
    let mut finishes = Vec::new();
    for execution_url in &large[..(ran + 64).min(large.len())] {
        let finished = execution(&client, execution_url).await?.finished;
        finishes.extend(finished.filter(|at| (posting_from..=posting_to).contains(at)));
    }
    finishes.sort_unstable();
    let longest = finishes
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();
    println!(
        "while posting: {} finished in {posting:.1} s ({:.2} jobs/s), longest gap between two finishes {:.1} s",
        finishes.len(),
        finishes.len() as f64 / posting,
        longest as f64 / 1e6
    );
    let large = tokio::sync::Mutex::new(large);
    // The window measures the node with N waiting, not the node catching up after the flood
    // of POSTs (starts made while posting wait behind it: see BENCHMARKS.md).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let at_n = window(&client, url, pid, &large, seconds, None, engine_log).await?;
    at_n.print(&format!("~{count} waiting"));
    let docker = docker_runs(engine, image, seconds);
    println!("docker run --rm, 4 loops: {docker:.2} containers/s");
    Ok(())
}

async fn concurrency(args: &[String]) -> Result<(), Error> {
    let [url, pid, image, count] = args else {
        return Err("usage: bench_node concurrency NODE_URL PID IMAGE N".into());
    };
    let (pid, count): (u32, usize) = (pid.parse()?, count.parse()?);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let (idle_rss, _) = memory(pid);
    let idle_cpu_before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cpu = (cpu_seconds(pid) - idle_cpu_before) / 10.0;
    // Long enough that none ends before the last one starts on loaded engines.
    let body = json!({"image": image, "command": "sleep 900"});
    let (urls, posting) = post_many(&client, url, "bench-concurrency", body, count, 32).await?;
    let last_post = Instant::now();
    let mut pending: Vec<String> = urls;
    let limit = Instant::now() + Duration::from_secs(800);
    while !pending.is_empty() && Instant::now() < limit {
        let mut still = Vec::new();
        for execution_url in pending {
            let status = execution(&client, &execution_url).await?.status;
            match status.as_str() {
                "running" => {}
                "enqueued" | "pulling" => still.push(execution_url),
                other => return Err(format!("{execution_url} ended {other}").into()),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let all_started = last_post.elapsed().as_secs_f64();
    println!(
        "posted {count} in {posting:.1} s; all running {all_started:.1} s after the last POST ({} not running)",
        pending.len()
    );
    let cpu_before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let cpu = (cpu_seconds(pid) - cpu_before) / 20.0;
    let (rss, hwm) = memory(pid);
    let running = count - pending.len();
    println!(
        "idle: RSS {idle_rss:.1} MB, CPU {:.3} % of a core; with {running} running: RSS {rss:.1} MB (peak {hwm:.1}), {:.3} MB per running execution above idle; CPU {:.3} % of a core, {:.4} % per running execution ({:.4} % above idle)",
        idle_cpu * 100.0,
        (rss - idle_rss) / running.max(1) as f64,
        cpu * 100.0,
        cpu * 100.0 / running.max(1) as f64,
        (cpu - idle_cpu) * 100.0 / running.max(1) as f64,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("drain") => drain(&args[1..]).await,
        Some("concurrency") => concurrency(&args[1..]).await,
        _ => Err("usage: bench_node drain … | concurrency … (see the module doc)".into()),
    }
}

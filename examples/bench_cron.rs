//! Scheduler benchmark: registers N cron jobs through the HTTP API, then measures the node's
//! resident memory, its CPU use while idle, and the lag between each firing's scheduled time
//! and the creation of its execution. Run through `scripts/bench.sh cron`.
//!
//!     cargo run --release --example bench_cron -- NODE_URL NODE_PID N FIRING
//!
//! N - FIRING jobs fire once a year (`0 0 1 1 *`): they only have to be held. FIRING jobs fire
//! once a minute each, at second `i % 60` (`S * * * * *`), spread over the minute; their
//! `expiration` is in the past so each firing's execution ends `expired` without a container:
//! what is measured is the scheduler, not Docker.

use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn proc_stat(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("node process");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0);
    (ticks / 100.0, rss_kb)
}

fn seconds_of(iso: &str) -> f64 {
    // Naive UTC "YYYY-MM-DDTHH:MM:SS[.ffffff]": day-of-month precision is enough here.
    let (date, time) = iso.split_once('T').unwrap();
    let day: f64 = date.rsplit('-').next().unwrap().parse().unwrap();
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let parts: Vec<f64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    day * 86_400.0
        + parts[0] * 3600.0
        + parts[1] * 60.0
        + parts[2]
        + format!("0.{fraction}").parse::<f64>().unwrap()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, pid, total, firing] = args.as_slice() else {
        return Err("usage: bench_cron NODE_URL NODE_PID N FIRING".into());
    };
    let (pid, total, firing): (u32, usize, usize) = (pid.parse()?, total.parse()?, firing.parse()?);
    let client = reqwest::Client::new();

    let started = Instant::now();
    let mut latencies: Vec<f64> = stream::iter(0..total)
        .map(|index| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let body = if index < firing {
                    json!({"image": "bench:1", "command": "true", "cron": format!("{} * * * * *", index % 60),
                           "expiration": 1, "overlap": "allow"})
                } else {
                    json!({"image": "bench:1", "command": "true", "cron": "0 0 1 1 *"})
                };
                let task = if index < firing { "bench-firing" } else { "bench-idle" };
                let sent = Instant::now();
                let response = client.post(format!("{url}/tasks/{task}-{}/", index % 1000)).json(&body).send().await;
                assert!(response.map(|r| r.status().is_success()).unwrap_or(false), "registration failed");
                sent.elapsed().as_secs_f64() * 1000.0
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    println!(
        "registered {total} cron jobs in {elapsed:.1} s: {:.0} jobs/s, request p50 {:.1} ms p99 {:.1} ms (32 concurrent)",
        total as f64 / elapsed,
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100]
    );

    // Let the firing jobs fire for two minutes.
    println!("letting {firing} jobs fire once a minute for 125 s ...");
    tokio::time::sleep(Duration::from_secs(125)).await;
    let mut lags = Vec::new();
    for prefix in 0..1000.min(firing) {
        let task: Value = client
            .get(format!("{url}/tasks/bench-firing-{prefix}/"))
            .send()
            .await?
            .json()
            .await?;
        for job in task["jobs"].as_array().cloned().unwrap_or_default() {
            let details: Value = client
                .get(job["url"].as_str().unwrap())
                .send()
                .await?
                .json()
                .await?;
            for execution in details["job"]["executions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                if let Some(scheduled) = execution["metadata"]["scheduled_at"].as_str() {
                    lags.push(
                        (seconds_of(execution["createdAt"].as_str().unwrap())
                            - seconds_of(scheduled))
                            * 1000.0,
                    );
                }
            }
            // Stop it, so that the idle measurement below is idle.
            client
                .post(format!("{}stop/", job["url"].as_str().unwrap()))
                .send()
                .await?;
        }
    }
    lags.sort_by(f64::total_cmp);
    if !lags.is_empty() {
        println!(
            "firing lag (execution created - scheduled): n={} p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
            lags.len(),
            lags[lags.len() / 2],
            lags[lags.len() * 99 / 100],
            lags[lags.len() - 1]
        );
    }

    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu_before, _) = proc_stat(pid);
    let window = 30.0;
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    let (cpu_after, rss_kb) = proc_stat(pid);
    println!(
        "idle with {} cron jobs registered: CPU {:.2} % of one core over {window:.0} s, resident memory {:.1} MB",
        total,
        (cpu_after - cpu_before) / window * 100.0,
        rss_kb as f64 / 1024.0
    );
    Ok(())
}

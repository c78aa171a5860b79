//! Enqueue benchmark: posts N scheduled jobs (`startIn: "1h"`, so no container runs) through
//! the HTTP API with C requests in flight, and prints jobs/s and the request latency. Run
//! through `scripts/bench.sh enqueue`.
//!
//!     cargo run --release --example bench_enqueue -- NODE_URL N C [NAME=PID ...]
//!
//! Jobs are spread over 100 task ids. Each of the C workers keeps one keep-alive connection and
//! posts its next job as soon as the previous answer arrived (closed loop). The first 2% of
//! the requests warm up and are not counted. Each NAME=PID (the node, the database servers) gets
//! its CPU time over the run printed, next to the client's own, so it is known where the two
//! cores went.

use futures_util::stream::{self, StreamExt};
use serde_json::json;
use std::time::Instant;

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}

fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bench_enqueue NODE_URL N C [NAME=PID ...]";
    let [url, total, concurrency, processes @ ..] = args.as_slice() else {
        return Err(usage.into());
    };
    let (total, concurrency): (usize, usize) = (total.parse()?, concurrency.parse()?);
    let processes = processes
        .iter()
        .map(|arg| {
            let (name, pid) = arg.split_once('=').ok_or(usage)?;
            Ok((name.to_string(), pid.parse::<u32>().map_err(|_| usage)?))
        })
        .collect::<Result<Vec<(String, u32)>, &str>>()?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let body = serde_json::to_vec(&json!({
        "image": "bench:1",
        "command": "true",
        "startIn": "1h",
    }))?;
    let post = |index: usize| {
        let (client, body) = (client.clone(), body.clone());
        let url = format!("{url}/tasks/bench-enqueue-{}/", index % 100);
        async move {
            let sent = Instant::now();
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            let ok = match response {
                Ok(response) => {
                    let ok = response.status().is_success();
                    let _ = response.bytes().await;
                    ok
                }
                Err(_) => false,
            };
            (ok, sent.elapsed().as_secs_f64() * 1000.0)
        }
    };

    let warmup = (total / 50).max(concurrency);
    let failed_warmup = stream::iter(0..warmup)
        .map(post)
        .buffer_unordered(concurrency)
        .filter(|(ok, _)| std::future::ready(!ok))
        .count()
        .await;
    if failed_warmup > 0 {
        return Err(format!("{failed_warmup} warm-up requests failed").into());
    }

    let cpu_before: Vec<f64> = processes.iter().map(|(_, pid)| cpu_seconds(*pid)).collect();
    let client_cpu = own_cpu_seconds();
    let started = Instant::now();
    let results: Vec<(bool, f64)> = stream::iter(warmup..warmup + total)
        .map(post)
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let client_cpu = own_cpu_seconds() - client_cpu;
    let failed = results.iter().filter(|(ok, _)| !ok).count();
    let mut latencies: Vec<f64> = results.iter().map(|(_, ms)| *ms).collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "{total} scheduled jobs in {elapsed:.2} s: {:.0} jobs/s, request p50 {:.2} ms p99 {:.2} ms \
         max {:.1} ms ({concurrency} in flight, {failed} failed)",
        total as f64 / elapsed,
        at(0.50),
        at(0.99),
        latencies.last().copied().unwrap_or_default(),
    );
    let per_job = |seconds: f64| {
        format!(
            "{seconds:.2} s ({:.0} µs per job)",
            seconds * 1e6 / total as f64
        )
    };
    let mut cpu: Vec<String> = processes
        .iter()
        .zip(cpu_before)
        .map(|((name, pid), before)| format!("{name} {}", per_job(cpu_seconds(*pid) - before)))
        .collect();
    cpu.push(format!("client {}", per_job(client_cpu)));
    println!("cpu over the run: {}", cpu.join(", "));
    if failed > 0 {
        return Err(format!("{failed} requests failed").into());
    }
    Ok(())
}

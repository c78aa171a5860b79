//! Latency benchmark: N trivial jobs one after another, time from POST to `done` visible in the
//! API, against `docker run --rm` of the same image and command on the same engine.
//! Run through `scripts/bench.sh`, which provisions the engine and starts the node.
//!
//!     cargo run --release --example bench_latency -- NODE_URL DOCKER_HOST IMAGE N

use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[index]
}

fn summary(name: &str, mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    println!(
        "{name:<22} n={:<4} p50={p50:7.1} ms  p99={p99:7.1} ms  mean={mean:7.1} ms  min={:7.1} ms  max={:7.1} ms",
        samples.len(),
        samples[0],
        samples[samples.len() - 1]
    );
    (p50, p99)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, docker_host, image, count] = args.as_slice() else {
        return Err("usage: bench_latency NODE_URL DOCKER_HOST IMAGE N".into());
    };
    let count: usize = count.parse()?;
    let command = "echo ok";
    let client = reqwest::Client::new();

    // Warm-up of both paths (first container start on an engine is slower).
    for _ in 0..3 {
        Command::new("docker")
            .args([
                "-H",
                &format!("tcp://{docker_host}"),
                "run",
                "--rm",
                image,
                "echo",
                "ok",
            ])
            .output()?;
    }

    let mut fastlane = Vec::with_capacity(count);
    for index in 0..count + 3 {
        let started = Instant::now();
        let posted: Value = client
            .post(format!("{url}/tasks/bench-latency/"))
            .json(&json!({"image": image, "command": command}))
            .send()
            .await?
            .json()
            .await?;
        let execution_url = posted["executionUrl"]
            .as_str()
            .ok_or("no executionUrl")?
            .to_string();
        loop {
            let details: Value = client.get(&execution_url).send().await?.json().await?;
            match details["execution"]["status"].as_str() {
                Some("done") => break,
                Some("enqueued" | "pulling" | "running") => {
                    tokio::time::sleep(Duration::from_millis(2)).await
                }
                other => return Err(format!("job ended {other:?}: {details}").into()),
            }
        }
        if index >= 3 {
            fastlane.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }

    let mut bare = Vec::with_capacity(count);
    for _ in 0..count {
        let started = Instant::now();
        let output = Command::new("docker")
            .args([
                "-H",
                &format!("tcp://{docker_host}"),
                "run",
                "--rm",
                image,
                "echo",
                "ok",
            ])
            .output()?;
        if !output.status.success() {
            return Err(format!(
                "docker run failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        bare.push(started.elapsed().as_secs_f64() * 1000.0);
    }

    let (fast_p50, fast_p99) = summary("fastlane POST->done", fastlane);
    let (bare_p50, bare_p99) = summary("docker run --rm", bare);
    println!(
        "ratio fastlane/docker: p50 {:.3}x (target <= 1.15x), p99 {:.3}x (target <= 1.5x)",
        fast_p50 / bare_p50,
        fast_p99 / bare_p99
    );
    Ok(())
}

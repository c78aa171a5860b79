//! Backlog benchmark of the queue port: what the queue costs per started job with 100, 10 000
//! or 100 000 executions waiting behind it. Run through `scripts/bench.sh backlog`.
//!
//!     cargo run --release --example bench_backlog -- N[,N…] [embedded|embedded-before|REDIS_URL]
//!
//! For each backlog size N, on a fresh queue (a new SQLite file, or a new Redis namespace):
//! 1. N messages are pushed one call at a time (the enqueue rate while the backlog grows);
//! 2. four are leased (a farm of one engine with `maxRunning: 4`);
//! 3. 1 000 times, one of the four is acknowledged and the next one leased, as a JobActor
//!    finishing and the poller filling the slot do: the time of that ack + lease pair is the
//!    queue's share of "slot to start" (p50/p99), and the pairs per second the queue's drain
//!    ceiling. Every 25th cycle also runs an idle poll (a lease of nothing when all four are
//!    held: what the poller does every 500 ms).
//!
//! `embedded-before` drops the lease-expiry and failure indexes after opening, which is the
//! schema before they existed (each lease then scanned the queue table twice). The process's
//! RSS and CPU time per cycle are printed too.

use fastlane_actors::ports::{Queue, QueueMessage};
use fastlane_node::adapters::embedded::Embedded;
use fastlane_node::adapters::redis::{parse_url, RedisBackend};
use fastlane_proto::Timestamp;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const RUNNING: usize = 4;
const CYCLES: usize = 1000;
const LEASE: Duration = Duration::from_secs(300);

fn self_stat() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let number = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
    let cpu = (number(11).unwrap_or(0.0) + number(12).unwrap_or(0.0)) / 100.0;
    let rss_pages = number(21).unwrap_or(0.0) as u64;
    (cpu, rss_pages * 4096 / (1024 * 1024))
}

fn message() -> QueueMessage {
    let execution_id = Uuid::new_v4();
    QueueMessage {
        id: execution_id.to_string(),
        task_id: "bench".into(),
        job_id: Uuid::new_v4(),
        execution_id,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn open(backend: &str) -> (Arc<dyn Queue>, Option<tempfile::TempDir>) {
    match backend {
        "embedded" | "embedded-before" => {
            let dir = tempfile::tempdir().expect("tempdir");
            let queue = Embedded::open(dir.path()).expect("open");
            if backend == "embedded-before" {
                let connection =
                    rusqlite::Connection::open(dir.path().join("fastlane.sqlite3")).expect("db");
                connection
                    .execute_batch(
                        "DROP INDEX IF EXISTS queue_by_lease; DROP INDEX IF EXISTS queue_by_failures;",
                    )
                    .expect("drop indexes");
            }
            (Arc::new(queue), Some(dir))
        }
        url => {
            let config = parse_url(url).expect("redis url");
            let namespace = format!("bench-{}", Uuid::new_v4().simple());
            let queue = RedisBackend::connect(config, &namespace)
                .await
                .expect("redis reachable");
            (Arc::new(queue), None)
        }
    }
}

async fn run(size: usize, backend: &str) {
    let (queue, _dir) = open(backend).await;
    let started = Instant::now();
    for _ in 0..size {
        queue
            .push(&message(), Timestamp::now())
            .await
            .expect("push");
    }
    let push_rate = size as f64 / started.elapsed().as_secs_f64();
    let mut held: Vec<String> = queue
        .lease("bench", RUNNING, LEASE)
        .await
        .expect("lease")
        .into_iter()
        .map(|delivery| delivery.message.id)
        .collect();
    assert_eq!(held.len(), RUNNING.min(size));
    let cycles = CYCLES.min(size.saturating_sub(RUNNING));
    let mut pairs = Vec::with_capacity(cycles);
    let mut idle = Vec::new();
    let (cpu_before, _) = self_stat();
    let drain = Instant::now();
    for cycle in 0..cycles {
        if cycle % 25 == 0 {
            let polled = Instant::now();
            let none = queue.lease("bench", 0, LEASE).await.expect("idle lease");
            assert!(none.is_empty());
            idle.push(polled.elapsed());
        }
        let finished = held.remove(0);
        let pair = Instant::now();
        queue.ack(&finished).await.expect("ack");
        let next = queue.lease("bench", 1, LEASE).await.expect("lease");
        pairs.push(pair.elapsed());
        held.extend(next.into_iter().map(|delivery| delivery.message.id));
    }
    let drain_rate = cycles as f64 / drain.elapsed().as_secs_f64();
    let (cpu_after, rss_mb) = self_stat();
    pairs.sort();
    idle.sort();
    println!(
        "{backend:>15} backlog {size:>6}: push {push_rate:>7.0}/s | ack+lease p50 {:>7.2?} p99 {:>7.2?} | idle poll p50 {:>7.2?} | {drain_rate:>6.0} starts/s | CPU {:.0} µs/start | RSS {rss_mb} MB",
        percentile(&pairs, 0.5),
        percentile(&pairs, 0.99),
        percentile(&idle, 0.5),
        (cpu_after - cpu_before) * 1e6 / cycles.max(1) as f64,
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let sizes: Vec<usize> = args
        .next()
        .unwrap_or_else(|| "100,10000,100000".into())
        .split(',')
        .map(|size| size.trim().parse().expect("N"))
        .collect();
    let backend = args.next().unwrap_or_else(|| "embedded".into());
    for size in sizes {
        run(size, &backend).await;
    }
}

//! The chaos suite (issue 12 point 8): a burst of jobs on the real `fastlane-node` binary while
//! the suite SIGKILLs and restarts the node at random points, pauses it (SIGSTOP/SIGCONT), kills a
//! Docker engine of the two in the farm and brings it back, restarts Redis, and makes the webhook
//! receiver fail and recover. Everything it breaks is private to the test: two dockerd engines,
//! a Redis, a SecantusDB database of its own, a webhook receiver on loopback.
//!
//! Once everything is quiet it checks the invariants (`verdict.rs`): every execution ended once
//! with the output its command dictates, no container is left on any engine, no execution had
//! two containers created (the engines' `create` events), every owed webhook was delivered (one
//! `Fastlane-Delivery-Id` per delivery once the node sends it), `maxRunning` was never exceeded
//! (sampled), no dead letter, no panic. It prints a summary and fails listing every violation.
//!
//! Environment: `FASTLANE_CHAOS_SOAK=1` (more jobs and faults, node pauses past the 60 s lease;
//! 20+ minutes), `FASTLANE_CHAOS_SEED` (replay a run; the seed is printed), `FASTLANE_CHAOS_JOBS`,
//! `FASTLANE_CHAOS_KILLS`, `FASTLANE_CHAOS_PAUSE_SECONDS` (length of the pauses),
//! `FASTLANE_CHAOS_KNOWN=class,class` (report those violation classes without failing),
//! `FASTLANE_CHAOS_BACKEND=embedded` (the embedded store and queue; no Redis restarts).

mod common;
#[path = "chaos/observe.rs"]
mod observe;
#[path = "chaos/verdict.rs"]
mod verdict;

use common::redis::PrivateRedis;
use common::{image, path_of, Engine, Node};
use observe::{EventLog, Receiver, Sampler};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// The farm's `maxRunning`.
const MAX_RUNNING: usize = 4;
/// Task of every job of the suite.
const TASK: &str = "chaos";

/// A small deterministic generator (splitmix64): a seed replays a run's choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low + 1))
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// How much of everything a run does.
struct Plan {
    seed: u64,
    soak: bool,
    jobs: usize,
    /// Jobs are posted and faults injected over this window.
    window: Duration,
    node_kills: usize,
    pauses: usize,
    pause: Duration,
    engine_kills: usize,
    redis_restarts: usize,
    /// The embedded store and queue instead of Redis and SecantusDB (no Redis to restart).
    embedded: bool,
    webhook_outages: usize,
    /// Longest `sleep` of a burst job, in milliseconds.
    max_sleep_ms: u64,
    /// How long the suite waits for every job to settle after the faults.
    settle_limit: Duration,
}

impl Plan {
    fn from_env() -> Plan {
        let soak = std::env::var("FASTLANE_CHAOS_SOAK").is_ok_and(|value| value == "1");
        let embedded =
            std::env::var("FASTLANE_CHAOS_BACKEND").is_ok_and(|value| value == "embedded");
        let seed = env_number("FASTLANE_CHAOS_SEED").unwrap_or_else(|| observe::now_nanos() as u64);
        let mut plan = if soak {
            Plan {
                seed,
                soak,
                jobs: 400,
                window: Duration::from_secs(900),
                node_kills: 20,
                pauses: 3,
                // Well past the lease (`QUEUE_LEASE_SECONDS`, below), as a VM pause or a
                // closed laptop.
                pause: Duration::from_secs(20),
                engine_kills: 4,
                redis_restarts: 4,
                embedded,
                webhook_outages: 8,
                max_sleep_ms: 5000,
                settle_limit: Duration::from_secs(400),
            }
        } else {
            Plan {
                seed,
                soak,
                jobs: 40,
                window: Duration::from_secs(60),
                node_kills: 3,
                pauses: 1,
                // Past the lease (`QUEUE_LEASE_SECONDS`, below): the node resumes to find its
                // leases expired.
                pause: Duration::from_secs(8),
                engine_kills: 1,
                redis_restarts: 1,
                embedded,
                webhook_outages: 2,
                max_sleep_ms: 1500,
                settle_limit: Duration::from_secs(100),
            }
        };
        if let Some(jobs) = env_number("FASTLANE_CHAOS_JOBS") {
            plan.jobs = jobs as usize;
        }
        if let Some(kills) = env_number("FASTLANE_CHAOS_KILLS") {
            plan.node_kills = kills as usize;
        }
        if let Some(seconds) = env_number("FASTLANE_CHAOS_PAUSE_SECONDS") {
            plan.pause = Duration::from_secs(seconds);
        }
        if plan.embedded {
            plan.redis_restarts = 0;
        }
        plan
    }
}

/// One job of the burst: `sh -c 'sleep S; echo chaos-N'`, exiting 0 or 3.
#[derive(Clone, Debug)]
pub struct JobSpec {
    pub n: usize,
    pub succeeds: bool,
    pub retries: u32,
    pub sleep_ms: u64,
    pub hooks: bool,
}

impl JobSpec {
    fn random(n: usize, rng: &mut Rng, max_sleep_ms: u64) -> JobSpec {
        let succeeds = rng.chance(60);
        JobSpec {
            n,
            succeeds,
            // A succeeding job gets one retry: an engine the suite kills under it fails it once.
            retries: if succeeds { 1 } else { 1 + rng.below(2) as u32 },
            sleep_ms: rng.below(max_sleep_ms + 1),
            hooks: rng.chance(40),
        }
    }

    pub fn output(&self) -> String {
        format!("chaos-{}\n", self.n)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} after {} ms, {} retries{}",
            if self.succeeds { "exits 0" } else { "exits 3" },
            self.sleep_ms,
            self.retries,
            if self.hooks { ", webhooks" } else { "" }
        )
    }

    fn body(&self, hooks_base: &str) -> Value {
        let exit = if self.succeeds { "" } else { "; exit 3" };
        let command = format!(
            "sh -c 'sleep {}.{:03}; echo chaos-{}{exit}'",
            self.sleep_ms / 1000,
            self.sleep_ms % 1000,
            self.n
        );
        let mut body = json!({"image": image(), "command": command, "retries": self.retries});
        if self.hooks {
            let hook = |list: &str| json!([{"url": format!("{hooks_base}/hook/{}/{list}", self.n), "retries": 8}]);
            body["webhooks"] = json!({"succeeds": hook("succeeds"), "fails": hook("fails"), "finishes": hook("finishes")});
        }
        body
    }
}

/// A job the node accepted.
struct Posted {
    spec: JobSpec,
    job_url: String,
}

/// The faults of a run.
#[derive(Clone, Copy, Debug)]
enum Fault {
    KillNode,
    PauseNode,
    KillEngine,
    RestartRedis,
    FailWebhooks,
}

/// Everything the suite started, shared by the posting loop and the fault injector.
struct World {
    /// Posts take it shared, node kills and pauses exclusively: a POST is never in flight when
    /// the node dies, so every job posted is known (the API has no idempotency key, and a
    /// retried POST whose answer was lost would create a second job).
    node: RwLock<Node>,
    engines: Vec<Mutex<Engine>>,
    redis: Mutex<PrivateRedis>,
    receiver: Receiver,
    posted: Mutex<Vec<Posted>>,
    /// What was done when, for the summary.
    log: Mutex<Vec<String>>,
    killed_engines: Mutex<BTreeSet<String>>,
    start: Instant,
}

impl World {
    fn note(&self, what: String) {
        let line = format!("{:>6.1}s {what}", self.start.elapsed().as_secs_f64());
        eprintln!("chaos: {line}");
        self.log.lock().unwrap().push(line);
    }

    /// Posts one job, retrying while the node answers 503 (Redis down). Any other refusal is a
    /// violation of its own.
    async fn post(&self, client: &reqwest::Client, spec: JobSpec) -> Result<(), String> {
        let body = spec.body(&self.receiver.base);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let node = self.node.read().await;
            let answer = client
                .post(node.url(&format!("/tasks/{TASK}/")))
                .json(&body)
                .send()
                .await;
            drop(node);
            match answer {
                Ok(response) if response.status() == 200 => {
                    let answer: Value = response.json().await.map_err(|e| e.to_string())?;
                    let job_url = answer["jobUrl"].as_str().unwrap_or_default().to_string();
                    self.posted.lock().unwrap().push(Posted { spec, job_url });
                    return Ok(());
                }
                Ok(response) if response.status() == 503 => {}
                Ok(response) => {
                    let status = response.status();
                    return Err(format!(
                        "job {}: POST answered {status}: {}",
                        spec.n,
                        response.text().await.unwrap_or_default()
                    ));
                }
                Err(error) => return Err(format!("job {}: POST failed: {error}", spec.n)),
            }
            if Instant::now() > deadline {
                return Err(format!("job {}: POST refused with 503 for 120 s", spec.n));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn inject(&self, fault: Fault, rng: &mut Rng, plan: &Plan, client: &reqwest::Client) {
        match fault {
            Fault::KillNode => {
                let mut node = self.node.write().await;
                node.kill();
                let down = rng.millis(0, 1500);
                self.note(format!("node SIGKILLed, restarting after {down:?}"));
                tokio::time::sleep(down).await;
                node.start_again().await;
                self.note("node answers again".into());
            }
            Fault::PauseNode => {
                // A job that runs through the pause, as in the report.
                let spec = JobSpec {
                    n: 100_000 + self.log.lock().unwrap().len(),
                    succeeds: true,
                    retries: 1,
                    sleep_ms: (plan.pause + Duration::from_secs(10)).as_millis() as u64,
                    hooks: true,
                };
                let n = spec.n;
                if let Err(refused) = self.post(client, spec).await {
                    self.note(format!("pause: job not posted: {refused}"));
                }
                self.wait_running(n).await;
                let node = self.node.write().await;
                let pid = node.pid().to_string();
                self.note(format!(
                    "node SIGSTOPped for {:?} while job {n} runs",
                    plan.pause
                ));
                signal("STOP", &pid);
                tokio::time::sleep(plan.pause).await;
                signal("CONT", &pid);
                self.note("node SIGCONTinued".into());
            }
            Fault::KillEngine => {
                let index = rng.below(self.engines.len() as u64) as usize;
                let down = rng.millis(3000, 8000);
                let address = self.engines[index].lock().unwrap().address.clone();
                self.killed_engines.lock().unwrap().insert(address.clone());
                tokio::task::block_in_place(|| self.engines[index].lock().unwrap().kill());
                self.note(format!("engine {address} killed for {down:?}"));
                tokio::time::sleep(down).await;
                tokio::task::block_in_place(|| self.engines[index].lock().unwrap().restart());
                self.note(format!("engine {address} back"));
            }
            Fault::RestartRedis => {
                let down = rng.millis(1000, 4000);
                let hard = rng.chance(50);
                tokio::task::block_in_place(|| {
                    let mut redis = self.redis.lock().unwrap();
                    if hard {
                        redis.kill()
                    } else {
                        redis.stop()
                    }
                });
                self.note(format!(
                    "redis {} for {down:?}",
                    if hard { "SIGKILLed" } else { "stopped" }
                ));
                tokio::time::sleep(down).await;
                tokio::task::block_in_place(|| self.redis.lock().unwrap().spawn());
                self.note("redis back".into());
            }
            Fault::FailWebhooks => {
                let down = rng.millis(2000, 6000);
                self.receiver.failing.store(true, Ordering::Relaxed);
                self.note(format!("webhook receiver answers 500 for {down:?}"));
                tokio::time::sleep(down).await;
                self.receiver.failing.store(false, Ordering::Relaxed);
                self.note("webhook receiver answers 200 again".into());
            }
        }
    }

    /// Waits (at most a minute) until job `n`'s first execution runs.
    async fn wait_running(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let url = {
                let posted = self.posted.lock().unwrap();
                posted
                    .iter()
                    .find(|job| job.spec.n == n)
                    .map(|job| job.job_url.clone())
            };
            if let Some(url) = url {
                let node = self.node.read().await;
                let executions = executions(&node, &url).await;
                if executions.first().is_some_and(|e| e["status"] == "running") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.note(format!("job {n} did not start running within a minute"));
    }
}

fn signal(name: &str, pid: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid)
        .status();
}

/// The job's executions, oldest first (empty if the node cannot answer).
async fn executions(node: &Node, job_url: &str) -> Vec<Value> {
    let Ok(response) = reqwest::get(node.url(path_of(job_url))).await else {
        return Vec::new();
    };
    let job: Value = response.json().await.unwrap_or(Value::Null);
    let mut executions = job["job"]["executions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    executions.reverse();
    executions
}

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: source the env of scripts/testenv.sh up"))
}

/// The schedule of faults: the plan's counts in a seeded random order at seeded random times of
/// the window.
fn schedule(plan: &Plan, rng: &mut Rng) -> Vec<(Duration, Fault)> {
    let mut faults = Vec::new();
    for (count, fault) in [
        (plan.node_kills, Fault::KillNode),
        (plan.pauses, Fault::PauseNode),
        (plan.engine_kills, Fault::KillEngine),
        (plan.redis_restarts, Fault::RestartRedis),
        (plan.webhook_outages, Fault::FailWebhooks),
    ] {
        for _ in 0..count {
            let at = plan
                .window
                .mul_f64(0.05 + 0.85 * rng.below(10_000) as f64 / 10_000.0);
            faults.push((at, fault));
        }
    }
    faults.sort_by_key(|(at, _)| *at);
    faults
}

/// Issue 12 point 8: jobs survive node SIGKILLs and pauses, an engine killed, Redis restarted
/// and failing webhook receivers — each ends once with its output, nothing runs twice, nothing
/// is left behind, every owed webhook arrives and `maxRunning` holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos() {
    let plan = Plan::from_env();
    let mut rng = Rng(plan.seed);
    eprintln!(
        "chaos: seed {} ({} mode, {}; replay with FASTLANE_CHAOS_SEED={})",
        plan.seed,
        if plan.soak { "soak" } else { "default" },
        if plan.embedded {
            "embedded store and queue"
        } else {
            "Redis queue, SecantusDB store"
        },
        plan.seed
    );
    let start = Instant::now();
    let engines: Vec<Engine> = {
        let threads: Vec<_> = (0..2).map(|_| std::thread::spawn(Engine::start)).collect();
        threads
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .collect()
    };
    let addresses: Vec<String> = engines
        .iter()
        .map(|engine| engine.address.clone())
        .collect();
    let redis = PrivateRedis::start();
    let name = format!("chaos{}", uuid::Uuid::new_v4().simple());
    let mongo = env("FASTLANE_TEST_SECANTUS_URL");
    let mongo_base = mongo
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&mongo);
    let farms = json!([{"match": "", "hosts": addresses, "maxRunning": MAX_RUNNING}]).to_string();
    let mut settings = vec![
        ("DOCKER_HOSTS", farms),
        ("WEBHOOKS_ALLOW_NETWORKS", "127.0.0.0/8".into()),
        ("WEBHOOKS_EXPONENTIAL_BACKOFF_MIN_MS", "500".into()),
        ("WEBHOOKS_EXPONENTIAL_BACKOFF_FACTOR", "1.5".into()),
        ("EXPONENTIAL_BACKOFF_MIN_MS", "300".into()),
        ("QUEUE_SWEEP_INTERVAL_SECONDS", "10".into()),
        ("DOCKER_CIRCUIT_BREAKER_RESET_TIMEOUT_SECONDS", "3".into()),
        ("DOCKER_CALL_TIMEOUT_SECONDS", "10".into()),
        // The shortest lease allowed, so a pause of a few seconds outlives it.
        ("QUEUE_LEASE_SECONDS", "5".into()),
        // Containers a killed node or engine left are reaped before the end checks.
        ("CONTAINER_REAPER_INTERVAL_SECONDS", "3".into()),
        ("CONTAINER_REAPER_GRACE_SECONDS", "5".into()),
    ];
    if !plan.embedded {
        settings.extend([
            ("REDIS_URL", redis.url()),
            ("REDIS_KEY_PREFIX", name.clone()),
            ("MONGODB_URL", format!("{mongo_base}/{name}")),
        ]);
    }
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let node = Node::start(&settings).await;
    let events = EventLog::start(&addresses);
    let sampler = Sampler::start(addresses.clone());
    let world = Arc::new(World {
        node: RwLock::new(node),
        engines: engines.into_iter().map(Mutex::new).collect(),
        redis: Mutex::new(redis),
        receiver: Receiver::start().await,
        posted: Mutex::new(Vec::new()),
        log: Mutex::new(Vec::new()),
        killed_engines: Mutex::new(BTreeSet::new()),
        start: Instant::now(),
    });
    world.note(format!(
        "set up in {:?}: engines {addresses:?}",
        start.elapsed()
    ));
    // A fresh connection per POST: a kept-alive one the node closes as it resumes from a pause
    // fails the request without telling whether the job was written.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let specs: Vec<JobSpec> = (0..plan.jobs)
        .map(|n| JobSpec::random(n, &mut rng, plan.max_sleep_ms))
        .collect();
    let faults = schedule(&plan, &mut rng);
    let mut violations: Vec<verdict::Violation> = Vec::new();

    // The burst and the faults, at once.
    let poster = {
        let (world, client, window) = (world.clone(), client.clone(), plan.window);
        tokio::spawn(async move {
            let mut refused = Vec::new();
            let step = window.div_f64(specs.len().max(1) as f64);
            for (index, spec) in specs.into_iter().enumerate() {
                tokio::time::sleep_until((world.start + step * index as u32).into()).await;
                if let Err(error) = world.post(&client, spec).await {
                    refused.push(error);
                }
            }
            refused
        })
    };
    let num_faults = faults.len();
    for (at, fault) in faults {
        tokio::time::sleep_until((world.start + at).into()).await;
        world.inject(fault, &mut rng, &plan, &client).await;
    }
    for refused in poster.await.unwrap() {
        violations.push(verdict::Violation {
            class: "post",
            detail: refused,
        });
    }
    world.note(format!(
        "{num_faults} faults injected, {} jobs posted; waiting for quiet",
        world.posted.lock().unwrap().len()
    ));

    // Quiet: every job settled, every owed webhook delivered, no container left.
    let node = world.node.read().await;
    let posted: Vec<(JobSpec, String)> = world
        .posted
        .lock()
        .unwrap()
        .iter()
        .map(|job| (job.spec.clone(), job.job_url.clone()))
        .collect();
    let settle_deadline = Instant::now() + plan.settle_limit;
    let mut results: Vec<(JobSpec, Vec<Value>)> = Vec::new();
    // A job that will never settle (its execution dead-lettered, no retry) must not hold the
    // run for the whole limit: once nothing changed for a minute with nothing running, it is
    // quiet.
    let (mut last_change, mut last_picture) = (Instant::now(), String::new());
    loop {
        results.clear();
        for (spec, url) in &posted {
            results.push((spec.clone(), executions(&node, url).await));
        }
        let waiting = results
            .iter()
            .filter(|(spec, executions)| !verdict::settled(spec, executions))
            .count();
        let picture: String = results
            .iter()
            .flat_map(|(_, executions)| executions.iter().map(|e| e["status"].to_string()))
            .collect();
        if picture != last_picture {
            (last_change, last_picture) = (Instant::now(), picture);
        }
        let still =
            last_change.elapsed() > Duration::from_secs(60) && !last_picture.contains("running");
        if waiting == 0 || still || Instant::now() > settle_deadline {
            world.note(format!("{waiting} jobs not settled"));
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let all_executions: Vec<Value> = results
        .iter()
        .flat_map(|(_, executions)| executions.clone())
        .collect();
    let hooked: Vec<(&JobSpec, Vec<Value>)> =
        results.iter().map(|(spec, e)| (spec, e.clone())).collect();
    // Webhook retries span about 25 s (8 retries from 500 ms, factor 1.5).
    let hooks_deadline = Instant::now() + Duration::from_secs(40);
    while !verdict::check_webhooks(&hooked, &world.receiver.by_path())
        .0
        .is_empty()
        && Instant::now() < hooks_deadline
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let leftovers_deadline = Instant::now() + Duration::from_secs(30);
    let mut leftovers;
    loop {
        leftovers = Vec::new();
        for address in &addresses {
            match observe::fastlane_containers(address) {
                Some(containers) => leftovers.extend(
                    containers
                        .into_iter()
                        .map(|(id, name)| format!("{id} {name} on {address}")),
                ),
                None => leftovers.push(format!("engine {address} unreachable")),
            }
        }
        if leftovers.is_empty() || Instant::now() > leftovers_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (max_running, worst_sample, num_samples) = sampler.finish();
    let events = tokio::task::block_in_place(|| events.finish());

    // The verdict.
    let killed_engines = world.killed_engines.lock().unwrap().clone();
    let mut num_excused = 0;
    for (spec, executions) in &results {
        let (found, excused) = verdict::check_job(spec, executions, &killed_engines);
        violations.extend(found);
        num_excused += excused;
    }
    let (twice, unseen) = verdict::check_creations(&all_executions, &events);
    violations.extend(twice);
    let (hook_violations, duplicate_deliveries) =
        verdict::check_webhooks(&hooked, &world.receiver.by_path());
    violations.extend(hook_violations);
    for leftover in leftovers {
        violations.push(verdict::Violation {
            class: "leftover",
            detail: format!("container left behind: {leftover}"),
        });
    }
    if max_running > MAX_RUNNING {
        violations.push(verdict::Violation {
            class: "max-running",
            detail: format!("{max_running} containers running at once (maxRunning {MAX_RUNNING}): {worst_sample:?}"),
        });
    }
    let status: Value = match reqwest::get(node.url("/status/")).await {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let dead_letters = &status["queues"]["deadLetter"]["length"];
    if dead_letters != 0 {
        violations.push(verdict::Violation {
            class: "dead-letter",
            detail: format!("dead letters: {dead_letters}"),
        });
    }
    let node_log = node.log();
    for line in node_log.lines().filter(|line| line.contains("panicked")) {
        violations.push(verdict::Violation {
            class: "panic",
            detail: line.to_string(),
        });
    }
    let num_hits = world.receiver.hits.lock().unwrap().len();
    let with_ids = world
        .receiver
        .hits
        .lock()
        .unwrap()
        .iter()
        .filter(|hit| hit.delivery_id.is_some())
        .count();

    let known: BTreeSet<String> = std::env::var("FASTLANE_CHAOS_KNOWN")
        .unwrap_or_default()
        .split(',')
        .map(|class| class.trim().to_string())
        .filter(|class| !class.is_empty())
        .collect();
    let mut by_class: std::collections::BTreeMap<&str, usize> = Default::default();
    for found in &violations {
        *by_class.entry(found.class).or_default() += 1;
    }
    let failing: Vec<&verdict::Violation> = violations
        .iter()
        .filter(|v| !known.contains(v.class))
        .collect();
    let faults = format!(
        "{num_faults} ({} node SIGKILLs, {} pauses of {:?}, {} engine kills, {} Redis restarts, {} webhook outages)",
        plan.node_kills, plan.pauses, plan.pause, plan.engine_kills, plan.redis_restarts, plan.webhook_outages
    );
    let summary = format!(
        "chaos summary: seed {seed}, {mode} mode, {duration:.0} s\n\
         jobs {jobs} posted ({executions} executions, {excused} excused: failed or output lost on a killed engine), \
         faults: {faults}\n\
         maxRunning {MAX_RUNNING}: at most {max_running} running seen in {num_samples} samples; \
         {creates} container creations seen ({unseen} finished executions without one); \
         webhook requests {num_hits} ({with_ids} with a delivery id, {duplicate_deliveries} duplicate deliveries)\n\
         violations: {total} {by_class:?} (known, not failing: {known:?})\n\
         timeline:\n  {timeline}",
        seed = plan.seed,
        mode = if plan.soak { "soak" } else { "default" },
        duration = start.elapsed().as_secs_f64(),
        jobs = posted.len(),
        executions = all_executions.len(),
        excused = num_excused,
        creates = events.iter().filter(|event| event.action == "create").count(),
        unseen = unseen.len(),
        total = violations.len(),
        timeline = world.log.lock().unwrap().join("\n  "),
    );
    eprintln!("{summary}");
    for found in &violations {
        eprintln!("VIOLATION [{}] {}", found.class, found.detail);
    }
    if !violations.is_empty() {
        // The node's data directory goes with the test: keep its log for the investigation.
        let kept = std::env::temp_dir().join(format!("fastlane-chaos-{}.log", plan.seed));
        let _ = std::fs::write(&kept, &node_log);
        eprintln!("node log kept in {}", kept.display());
    }
    if !failing.is_empty() {
        let warnings: Vec<&str> = node_log
            .lines()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .collect();
        let tail = warnings[warnings.len().saturating_sub(30)..].join("\n");
        panic!(
            "{} violations (seed {}); last warnings of the node:\n{tail}",
            failing.len(),
            plan.seed
        );
    }
}

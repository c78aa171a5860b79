//! End-to-end: several nodes sharing one Redis queue and one MongoDB-compatible store (SecantusDB
//! from `scripts/testenv.sh`) and one farm of real Docker engines. Each test uses its own Redis
//! key prefix and Mongo database.

mod common;

use common::redis::PrivateRedis;
use common::{docker_hosts, image, path_of, running_containers, wait_until, Node};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh (or source the env of scripts/testenv.sh up)")
    })
}

/// The environment of a node of one shared deployment: Redis at `redis_url`, a database and a
/// key prefix of its own, the given farms.
struct Deployment {
    vars: Vec<(String, String)>,
}

impl Deployment {
    fn new(redis_url: &str, farms: Value) -> Deployment {
        let name = format!("shared{}", Uuid::new_v4().simple());
        let mongo = env("FASTLANE_TEST_SECANTUS_URL");
        let base = mongo
            .rsplit_once('/')
            .map(|(base, _)| base)
            .unwrap_or(&mongo);
        Deployment {
            vars: vec![
                ("REDIS_URL".into(), redis_url.to_string()),
                ("REDIS_KEY_PREFIX".into(), name.clone()),
                ("MONGODB_URL".into(), format!("{base}/{name}")),
                ("DOCKER_HOSTS".into(), farms.to_string()),
            ],
        }
    }

    fn with(mut self, key: &str, value: &str) -> Deployment {
        self.vars.push((key.into(), value.into()));
        self
    }

    fn var(&self, key: &str) -> &str {
        let (_, value) = self.vars.iter().find(|(k, _)| k == key).unwrap();
        value
    }

    async fn node(&self) -> Node {
        let vars: Vec<(&str, &str)> = self
            .vars
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        Node::start(&vars).await
    }
}

fn ran_on(execution: &Value) -> String {
    format!(
        "{}:{}",
        execution["metadata"]["docker_host"].as_str().unwrap_or("?"),
        execution["metadata"]["docker_port"]
    )
}

/// Samples the number of running containers of `task` across `hosts` until dropped; keeps the
/// maximum.
struct Sampler {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(hosts: Vec<String>, task: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicUsize::new(0));
        let task = task.to_string();
        let thread = {
            let (stop, max) = (stop.clone(), max.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let running: usize = hosts
                        .iter()
                        .map(|host| running_containers(host, &task))
                        .sum();
                    max.fetch_max(running, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Sampler {
            stop,
            max,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        self.max.load(Ordering::Relaxed)
    }
}

/// 200 jobs posted round-robin to two nodes: each runs exactly once with the right output, and
/// the farm's `maxRunning: 3` holds across both nodes (sampled from the engines).
#[tokio::test]
async fn two_nodes_share_200_jobs_exactly_once_within_max_running() {
    let hosts = docker_hosts();
    let deployment = Deployment::new(
        &env("FASTLANE_TEST_REDIS_URL"),
        json!([{"match": "", "hosts": [hosts[0], hosts[1]], "maxRunning": 3}]),
    );
    let nodes = [deployment.node().await, deployment.node().await];
    let task = "shared-200";
    let sampler = Sampler::start(hosts.clone(), task);
    let mut posted = Vec::new();
    for batch in (0..200).collect::<Vec<_>>().chunks(20) {
        let answers = futures_util::future::join_all(batch.iter().map(|&n| {
            nodes[n % 2].post_job(
                task,
                // Long enough (0.3 s) for the sampler to see the farm's parallelism.
                json!({"image": image(), "command": format!("sh -c 'sleep 0.3; echo job-{n}'")}),
            )
        }))
        .await;
        posted.extend(batch.iter().copied().zip(answers));
    }
    let mut ran_by_host: BTreeMap<String, usize> = BTreeMap::new();
    // Each node grants the farm's slots to its own waiters first-come first-served, not the
    // two nodes' waiters together: an execution parked on one node may wait while the other
    // runs its own, up to the whole batch (about 150 s on a loaded machine). So the deadline
    // is the batch's, not one execution's.
    let deadline = std::time::Instant::now() + Duration::from_secs(420);
    for (n, answer) in &posted {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let execution = nodes[(n + 1) % 2]
            .wait_finished_within(answer["executionUrl"].as_str().unwrap(), left)
            .await;
        assert_eq!(execution["status"], "done", "job {n}: {execution}");
        assert_eq!(execution["log"], format!("job-{n}\n"), "job {n}");
        *ran_by_host.entry(ran_on(&execution)).or_default() += 1;
    }
    let max = sampler.finish();
    for (n, answer) in &posted {
        let executions = nodes[n % 2]
            .executions(answer["jobUrl"].as_str().unwrap())
            .await;
        assert_eq!(executions.len(), 1, "job {n} has exactly one execution");
    }
    eprintln!("at most {max} containers at once; per host {ran_by_host:?}");
    assert!(max <= 3, "maxRunning 3 exceeded across nodes: {max}");
    assert!(max >= 2, "the farm ran jobs in parallel: {max}");
    let status = nodes[0].get_json("/status/").await;
    assert_eq!(status["queues"]["deadLetter"]["length"], 0, "{status}");
    let health = nodes[1].get_json("/healthcheck").await;
    assert_eq!(
        health,
        json!({"redis": true, "mongo": true, "errors": [],
               "backends": {"queue": "redis", "store": "mongodb"}})
    );
}

/// A host blacklisted through one node gets nothing from the other.
#[tokio::test]
async fn blacklist_through_one_node_holds_on_the_other() {
    let hosts = docker_hosts();
    let deployment = Deployment::new(
        &env("FASTLANE_TEST_REDIS_URL"),
        json!([{"match": "", "hosts": [hosts[0], hosts[1]], "maxRunning": 6}]),
    );
    let (first, second) = (deployment.node().await, deployment.node().await);
    first.set_blacklisted(&hosts[0], true).await;
    let mut urls = Vec::new();
    for n in 0..10 {
        let answer = second
            .post_job(
                "shared-blacklist",
                json!({"image": image(), "command": format!("echo {n}")}),
            )
            .await;
        urls.push(answer["executionUrl"].as_str().unwrap().to_string());
    }
    for url in &urls {
        let execution = first.wait_finished(url).await;
        assert_eq!(execution["status"], "done");
        assert_eq!(ran_on(&execution), hosts[1], "blacklisted host used");
    }
    let status = second.get_json("/status/").await;
    let blacklisted: Vec<&Value> = status["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|host| host["blacklisted"] == true)
        .collect();
    assert_eq!(blacklisted.len(), 1, "{status}");
    second.set_blacklisted(&hosts[0], false).await;
    assert_eq!(
        first.get_json("/status/").await["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|host| host["blacklisted"] == true)
            .count(),
        0
    );
}

/// Without `DEPLOYMENT_ID`, the nodes of one queue label their containers alike: the first
/// node's generated id is stored in Redis and adopted by the others (kept in each `DATA_DIR`
/// for `prune`), so any node can take over a container another created; another deployment
/// (another key prefix) has its own.
#[tokio::test]
async fn nodes_of_one_queue_share_the_deployment_id() {
    let hosts = docker_hosts();
    let farms = json!([{"match": "", "hosts": [hosts[0]]}]);
    let deployment = Deployment::new(&env("FASTLANE_TEST_REDIS_URL"), farms.clone());
    let (first, second) = (deployment.node().await, deployment.node().await);
    let id_of = |node: &Node| std::fs::read_to_string(node.data_dir.join("deployment-id")).unwrap();
    assert!(
        id_of(&first).starts_with("deployment-"),
        "{}",
        id_of(&first)
    );
    assert_eq!(id_of(&first), id_of(&second));
    let other = Deployment::new(&env("FASTLANE_TEST_REDIS_URL"), farms)
        .node()
        .await;
    assert_ne!(id_of(&other), id_of(&first));
}

/// A node of a new deployment sweeping every `sweep_seconds`, whose farm's only host is
/// blacklisted, and the answer to a job posted to it: the job waits, its message going round
/// between leases and delays.
async fn waiting_job(sweep_seconds: &str, task: &str, command: &str) -> (Deployment, Node, Value) {
    let host = docker_hosts()[0].clone();
    let deployment = Deployment::new(
        &env("FASTLANE_TEST_REDIS_URL"),
        json!([{"match": "", "hosts": [host], "maxRunning": 2}]),
    )
    .with("QUEUE_SWEEP_INTERVAL_SECONDS", sweep_seconds);
    let node = deployment.node().await;
    node.set_blacklisted(&host, true).await;
    let answer = node
        .post_job(task, json!({"image": image(), "command": command}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    (deployment, node, answer)
}

/// Takes message `id` out of the deployment's Redis queue, as one script: lost when `bury` is
/// `None`, else moved to the dead-letter list with that reason (as the queue does after
/// five failed deliveries).
fn take_message(deployment: &Deployment, id: &str, bury: Option<&str>) {
    let script = r#"
local p, id, reason = '{' .. ARGV[1] .. '}:', ARGV[2], ARGV[3]
local m = p .. 'm:' .. id
local body, deliveries = redis.call('HGET', m, 'body'), redis.call('HGET', m, 'deliveries')
if not body then return 0 end
redis.call('LREM', p .. 'ready', 0, id)
redis.call('ZREM', p .. 'delayed', id)
redis.call('ZREM', p .. 'leased', id)
local owner = redis.call('HGET', m, 'owner')
if owner then redis.call('SREM', p .. 'owned:' .. owner, id) end
redis.call('DEL', m)
if reason ~= '' then
  redis.call('HSET', p .. 'd:' .. id, 'body', body, 'reason', reason, 'at', 0,
    'deliveries', deliveries or '0')
  redis.call('LPUSH', p .. 'dead', id)
end
return 1
"#;
    let output = Command::new("redis-cli")
        .args(["-u", deployment.var("REDIS_URL"), "EVAL", script, "0"])
        .args([deployment.var("REDIS_KEY_PREFIX"), id, bury.unwrap_or("")])
        .output()
        .unwrap();
    let taken = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        taken.trim(),
        "1",
        "message {id} was there to take: {output:?}"
    );
}

/// An execution whose message went to the dead-letter list ends `failed`, saying why, instead
/// of waiting forever; `/status/` lists the dead letter.
#[tokio::test]
async fn dead_lettered_execution_ends_failed() {
    let (deployment, node, answer) = waiting_job("1", "shared-dead", "echo never").await;
    let execution_id = answer["executionId"].as_str().unwrap();
    take_message(&deployment, execution_id, Some("crashed its runner"));
    let execution = node
        .wait_finished(answer["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "failed", "{execution}");
    let error = execution["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("dead-lettered after") && error.ends_with("crashed its runner"),
        "{execution}"
    );
    let status = node.get_json("/status/").await;
    assert_eq!(status["queues"]["deadLetter"]["length"], 1, "{status}");
    // Put back into service, the host still gets nothing of it.
    node.set_blacklisted(&docker_hosts()[0], false).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let executions = node.executions(answer["jobUrl"].as_str().unwrap()).await;
    assert_eq!(executions.len(), 1);
    assert_eq!(executions[0]["status"], "failed");
}

/// A queue message lost while its execution waits (as the last writes of a Sentinel primary are
/// lost in a failover) is pushed again by the nodes' periodic sweep: the job still runs, once.
#[tokio::test]
async fn lost_message_is_recovered_by_the_sweep() {
    let (deployment, node, answer) = waiting_job("2", "shared-lost", "echo found").await;
    // Lose it: gone from every list, as if Redis had never had it.
    take_message(&deployment, answer["executionId"].as_str().unwrap(), None);
    node.set_blacklisted(&docker_hosts()[0], false).await;
    let execution = node
        .wait_finished(answer["executionUrl"].as_str().unwrap())
        .await;
    assert_eq!(execution["status"], "done", "{execution}");
    assert_eq!(execution["log"], "found\n");
    let executions = node.executions(answer["jobUrl"].as_str().unwrap()).await;
    assert_eq!(executions.len(), 1);
}

/// A cron job fires once per slot with two nodes running; when the node that received it is
/// killed, the other goes on firing it.
#[tokio::test]
async fn cron_fires_once_per_slot_across_nodes_and_survives_a_node() {
    let hosts = docker_hosts();
    let deployment = Deployment::new(
        &env("FASTLANE_TEST_REDIS_URL"),
        json!([{"match": "", "hosts": [hosts[0], hosts[1]], "maxRunning": 6}]),
    );
    let (mut first, second) = (deployment.node().await, deployment.node().await);
    let posted = first
        .post_job(
            "shared-cron",
            json!({"image": image(), "command": "echo tick", "cron": "*/2 * * * * *",
                   "overlap": "allow"}),
        )
        .await;
    let job_path = path_of(posted["jobUrl"].as_str().unwrap()).to_string();
    tokio::time::sleep(Duration::from_secs(9)).await;
    first.kill();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let job = second.get_json(&job_path).await;
    let executions = job["job"]["executions"].as_array().unwrap().clone();
    let slots: Vec<&str> = executions
        .iter()
        .map(|execution| execution["metadata"]["scheduled_at"].as_str().unwrap_or(""))
        .collect();
    let distinct: HashSet<&&str> = slots.iter().collect();
    eprintln!("{} firings: {slots:?}", slots.len());
    assert_eq!(distinct.len(), slots.len(), "a slot fired twice: {slots:?}");
    // 16 s at one firing per 2 s: about 8 (the kill may cost one).
    assert!(
        (6..=9).contains(&slots.len()),
        "expected ~8 firings, got {}: {slots:?}",
        slots.len()
    );
    // Firings after the kill happened, through the second node.
    let after_kill = executions
        .iter()
        .filter(|execution| execution["status"] == "done")
        .count();
    assert!(after_kill >= 5, "{executions:?}");
}

/// A node killed with SIGKILL while it runs jobs: once it is back, everything completes, each
/// job once (it re-attaches to the containers it had started).
#[tokio::test]
async fn killed_node_work_completes_once() {
    let hosts = docker_hosts();
    let deployment = Deployment::new(
        &env("FASTLANE_TEST_REDIS_URL"),
        json!([{"match": "", "hosts": [hosts[0], hosts[1]], "maxRunning": 20}]),
    );
    let (mut first, second) = (deployment.node().await, deployment.node().await);
    let mut posted = Vec::new();
    for n in 0..12 {
        let node = if n % 2 == 0 { &first } else { &second };
        posted.push(
            node.post_job(
                "shared-kill",
                json!({"image": image(), "command": format!("sh -c 'sleep 3; echo survived-{n}'")}),
            )
            .await,
        );
    }
    // Wait until the first node runs some of them, then kill it.
    wait_until(Duration::from_secs(20), "jobs running", || async {
        hosts
            .iter()
            .map(|host| running_containers(host, "shared-kill"))
            .sum::<usize>()
            >= 6
    })
    .await;
    first.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    first.start_again().await;
    for (n, answer) in posted.iter().enumerate() {
        let execution = second
            .wait_finished(answer["executionUrl"].as_str().unwrap())
            .await;
        assert_eq!(execution["status"], "done", "job {n}: {execution}");
        assert_eq!(execution["log"], format!("survived-{n}\n"), "job {n}");
        let executions = second.executions(answer["jobUrl"].as_str().unwrap()).await;
        assert_eq!(executions.len(), 1, "job {n} ran once");
    }
    let status = second.get_json("/status/").await;
    assert_eq!(status["queues"]["deadLetter"]["length"], 0, "{status}");
}

/// Redis restarted in the middle of a burst: posts refused while it is down are retried by the
/// client; once it is back, every job posted completes exactly once.
#[tokio::test]
async fn redis_restart_during_a_burst() {
    let hosts = docker_hosts();
    let mut redis = PrivateRedis::start();
    let deployment = Deployment::new(
        &redis.url(),
        json!([{"match": "", "hosts": [hosts[0], hosts[1]], "maxRunning": 4}]),
    );
    let (first, second) = (deployment.node().await, deployment.node().await);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut posted = Vec::new();
    let mut refused = 0;
    // Redis goes away at post 20 and comes back 3 s later; meanwhile posts are refused (503)
    // and the client retries them, as a client of a production job runner would.
    let mut down_since = None;
    for n in 0..60 {
        if n == 20 {
            redis.stop();
            down_since = Some(std::time::Instant::now());
        }
        let node = if n % 2 == 0 { &first } else { &second };
        loop {
            let response = client
                .post(node.url("/tasks/shared-redis-restart/"))
                .json(&json!({"image": image(), "command": format!("echo burst-{n}")}))
                .send()
                .await
                .unwrap();
            let response = common::openapi::checked("POST", response).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            if status == 200 {
                posted.push((n, body));
                break;
            }
            assert!(
                status == 503 || status == 500,
                "unexpected answer {status}: {body}"
            );
            assert_ne!(status, 500, "a 500 while Redis is down: {body}");
            refused += 1;
            if down_since.is_some_and(|since| since.elapsed() > Duration::from_secs(3)) {
                redis.spawn();
                down_since = None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("{refused} posts refused while Redis was down");
    assert!(refused > 0, "Redis was down for some posts");
    for (n, answer) in &posted {
        let execution = second
            .wait_finished(answer["executionUrl"].as_str().unwrap())
            .await;
        assert_eq!(execution["status"], "done", "job {n}: {execution}");
        assert_eq!(execution["log"], format!("burst-{n}\n"));
        let executions = first.executions(answer["jobUrl"].as_str().unwrap()).await;
        assert_eq!(executions.len(), 1, "job {n} ran once");
    }
    let tasks = first.get_json("/tasks/shared-redis-restart/").await;
    assert_eq!(
        tasks["jobs"].as_array().map(Vec::len),
        Some(60),
        "no job left half-written by a refused post"
    );
}

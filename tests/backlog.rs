//! The reads that grow with the backlog are paged through a cursor, on every backend: the dead
//! letters (embedded queue, Redis standalone and Cluster) and the unfinished executions
//! (embedded store, MongoDB wire via SecantusDB). Each page is bounded, pages see every row
//! once, in order, and a cursor kept across calls sees only what came after it.

use fastlane_actors::ports::{Queue, QueueMessage, Store};
use fastlane_node::adapters::embedded::Embedded;
use fastlane_node::adapters::mongo::{MongoSettings, MongoStore};
use fastlane_node::adapters::redis::{parse_url, RedisBackend};
use fastlane_proto::model::{ExecutionMetadata, JobMetadata};
use fastlane_proto::{Execution, ExecutionStatus, Job, Timestamp};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: source the env of scripts/testenv.sh up"))
}

fn message() -> QueueMessage {
    let execution_id = Uuid::new_v4();
    QueueMessage {
        id: execution_id.to_string(),
        task_id: "backlog".into(),
        job_id: Uuid::new_v4(),
        execution_id,
    }
}

/// More than one page of the sweep (100) and than the old sweep looked at (the newest 100).
const BURIED: usize = 250;

/// 250 dead letters, buried three ways (a queued message, a leased one, one failed too often),
/// are all read, oldest first, in pages of at most 100; the cursor then waits at the end and
/// sees the next one buried, only it.
async fn dead_letters_page_through_all(queue: &dyn Queue) {
    let mut buried = Vec::new();
    for index in 0..BURIED {
        let message = message();
        queue.push(&message, Timestamp::now()).await.expect("push");
        match index % 3 {
            0 => queue
                .dead_letter(&message.id, "queued")
                .await
                .expect("bury"),
            1 => {
                let leased = queue
                    .lease("backlog", 1, Duration::from_secs(30))
                    .await
                    .expect("lease");
                assert_eq!(leased.len(), 1);
                queue
                    .dead_letter(&message.id, "leased")
                    .await
                    .expect("bury");
            }
            _ => {
                for _ in 0..fastlane_actors::ports::MAX_FAILED_DELIVERIES {
                    queue
                        .lease("backlog", 1, Duration::from_secs(30))
                        .await
                        .expect("lease");
                    queue
                        .fail(&message.id, Duration::ZERO, "failed")
                        .await
                        .expect("fail");
                }
            }
        }
        buried.push(message.id);
    }
    let stats = queue.stats().await.expect("stats");
    assert_eq!(stats.dead, BURIED as u64, "{stats:?}");
    assert_eq!(stats.ready + stats.delayed + stats.leased, 0, "{stats:?}");
    let mut seen = Vec::new();
    let mut cursor = 0;
    loop {
        let (page, next) = queue.dead_letters_after(cursor, 100).await.expect("page");
        assert!(page.len() <= 100);
        if page.is_empty() {
            assert_eq!(next, cursor, "an empty page leaves the cursor");
            break;
        }
        assert!(next > cursor);
        cursor = next;
        seen.extend(page.into_iter().map(|letter| letter.message.id));
    }
    assert_eq!(seen, buried, "every dead letter once, oldest first");
    let late = message();
    queue.push(&late, Timestamp::now()).await.expect("push");
    queue.dead_letter(&late.id, "late").await.expect("bury");
    let (page, _) = queue.dead_letters_after(cursor, 100).await.expect("page");
    let ids: Vec<&str> = page
        .iter()
        .map(|letter| letter.message.id.as_str())
        .collect();
    assert_eq!(ids, vec![late.id.as_str()]);
    assert_eq!(page[0].reason, "late");
}

#[tokio::test]
async fn dead_letters_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Embedded::open(dir.path()).expect("open");
    dead_letters_page_through_all(&queue).await;
}

async fn redis_backend(url: &str) -> RedisBackend {
    let config = parse_url(url).expect("valid url");
    RedisBackend::connect(config, &format!("test-{}", Uuid::new_v4().simple()))
        .await
        .expect("redis reachable")
}

#[tokio::test]
async fn dead_letters_redis_standalone() {
    let queue = redis_backend(&env("FASTLANE_TEST_REDIS_URL")).await;
    dead_letters_page_through_all(&queue).await;
}

#[tokio::test]
async fn dead_letters_redis_cluster() {
    let queue = redis_backend(&env("FASTLANE_TEST_REDIS_CLUSTER_URL")).await;
    dead_letters_page_through_all(&queue).await;
}

fn job() -> Job {
    let now = Timestamp::now();
    Job {
        task_id: "backlog".to_string(),
        job_id: Uuid::new_v4(),
        image: "fastlane-test:1".into(),
        command: "true".into(),
        request_ip: None,
        metadata: JobMetadata {
            retries: 0,
            retry_count: 0,
            emails: serde_json::json!({}),
            webhooks: serde_json::json!({}),
            expiration: None,
            timeout: 1800,
            envs: BTreeMap::new(),
            additional_dns_entries: Vec::new(),
            custom: None,
            enqueued_id: None,
            cron: None,
            max_concurrent: None,
            container: Default::default(),
            backoff: None,
        },
        scheduled: false,
        schedule: None,
        created_at: now,
        last_modified_at: now,
        version: 0,
        pending: Vec::new(),
    }
}

fn execution(job: &Job, status: ExecutionStatus) -> Execution {
    let now = Timestamp::now();
    Execution {
        execution_id: Uuid::new_v4(),
        task_id: job.task_id.clone(),
        job_id: job.job_id,
        image: job.image.clone(),
        command: job.command.clone(),
        request_ip: None,
        status,
        created_at: now,
        last_modified_at: now,
        started_at: None,
        finished_at: None,
        exit_code: None,
        metadata: ExecutionMetadata::default(),
        log: None,
        error: None,
        outbox: Vec::new(),
    }
}

/// 250 enqueued and 30 running executions among finished ones: paging each status by id in
/// pages of at most 100 returns each of its executions once, in id order, and none of another
/// status.
async fn unfinished_executions_page_by_id(store: &dyn Store) {
    let job = job();
    store.create_job(&job, None).await.expect("job");
    let mut expected: BTreeMap<&str, HashSet<Uuid>> = BTreeMap::new();
    for (status, count) in [
        (ExecutionStatus::Enqueued, BURIED),
        (ExecutionStatus::Running, 30),
        (ExecutionStatus::Done, 40),
    ] {
        for _ in 0..count {
            let run = execution(&job, status);
            store.create_execution(&run).await.expect("execution");
            expected
                .entry(status.as_str())
                .or_default()
                .insert(run.execution_id);
        }
    }
    for status in [ExecutionStatus::Enqueued, ExecutionStatus::Running] {
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.executions_in(status, after, 100).await.expect("page");
            assert!(page.len() <= 100);
            let Some(last) = page.last() else { break };
            after = Some(last.execution_id);
            assert!(page.iter().all(|run| run.status == status));
            seen.extend(page.iter().map(|run| run.execution_id));
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "{status:?}: in id order");
        let seen: HashSet<Uuid> = seen.into_iter().collect();
        assert_eq!(seen, expected[status.as_str()], "{status:?}: each once");
    }
}

#[tokio::test]
async fn unfinished_executions_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Embedded::open(dir.path()).expect("open");
    unfinished_executions_page_by_id(&store).await;
}

#[tokio::test]
async fn unfinished_executions_mongodb_secantus() {
    let url = env("FASTLANE_TEST_SECANTUS_URL");
    let database = format!("fastlane_{}", Uuid::new_v4().simple());
    let config = serde_json::json!({"host": url, "db": database, "serverSelectionTimeoutMS": 5000});
    let settings = MongoSettings::from_options(&config, None)
        .expect("valid")
        .expect("configured");
    let store = MongoStore::connect(&settings)
        .await
        .expect("mongo reachable");
    unfinished_executions_page_by_id(&store).await;
    store.drop_database().await.expect("drop");
}

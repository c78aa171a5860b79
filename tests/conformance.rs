//! One conformance suite per port, written once and run against every implementation:
//! - the queue, the slots and the host blacklist (three ports, one backend): embedded (SQLite),
//!   Redis standalone, Redis Sentinel (with a failover during the run) and Redis Cluster;
//! - the store: embedded (SQLite) and MongoDB (SecantusDB here; a real MongoDB too when
//!   `FASTLANE_TEST_MONGODB_URL` points at one).
//!
//! The backends come from `scripts/testenv.sh` (the README's test command starts them). Each run
//! uses its own Redis key prefix or Mongo database, so runs do not see each other.

use fastlane_actors::ports::{
    ExecutionFilter, HostBlacklist, OutputStream, Page, Paged, Queue, QueueError, QueueMessage,
    Slots, Store, StoreError,
};
use fastlane_node::adapters::embedded::Embedded;
use fastlane_node::adapters::mongo::{MongoSettings, MongoStore};
use fastlane_node::adapters::redis::{parse_url, RedisBackend};
use fastlane_proto::model::{ExecutionMetadata, JobMetadata, OutputTruncated};
use fastlane_proto::schedule::JobSchedule;
use fastlane_proto::{Execution, ExecutionStatus, Job, PendingRun, Timestamp};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through scripts/test.sh (or source the env of scripts/testenv.sh up)")
    })
}

fn namespace() -> String {
    format!("test-{}", Uuid::new_v4().simple())
}

async fn redis_backend(url: &str) -> RedisBackend {
    let config = parse_url(url).expect("valid url");
    RedisBackend::connect(config, &namespace())
        .await
        .expect("redis reachable")
}

// ---------------------------------------------------------------------------------------------
// Queue suite

fn message() -> QueueMessage {
    let execution_id = Uuid::new_v4();
    QueueMessage {
        id: execution_id.to_string(),
        task_id: "conformance".into(),
        job_id: Uuid::new_v4(),
        execution_id,
    }
}

fn now_plus(duration: Duration) -> Timestamp {
    Timestamp(Timestamp::now().0 + duration.as_micros() as i64)
}

const LEASE: Duration = Duration::from_secs(30);

/// Retries a queue call while the backend is unavailable (a failover in progress), up to 30 s.
async fn patiently<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match call().await {
            Ok(value) => return value,
            Err(error) if std::time::Instant::now() < deadline => {
                eprintln!("retrying: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("queue unavailable for 30 s: {error}"),
        }
    }
}

async fn queue_suite(queue: Arc<dyn Queue>) {
    fifo_and_idempotent_push(&*queue).await;
    delayed_messages(&*queue).await;
    ack_release_and_expiry(&*queue).await;
    renew_reports_lost_leases(&*queue).await;
    dead_letters(&*queue).await;
    dead_letter_retention(&*queue).await;
    release_all(&*queue).await;
    concurrent_consumers(queue.clone()).await;
    queue.ping().await.expect("ping");
}

async fn drain(queue: &dyn Queue) {
    loop {
        let leased = queue.lease("drain", 1000, LEASE).await.expect("lease");
        if leased.is_empty() {
            return;
        }
        for delivery in leased {
            queue.ack(&delivery.message.id).await.expect("ack");
        }
    }
}

async fn fifo_and_idempotent_push(queue: &dyn Queue) {
    drain(queue).await;
    let messages: Vec<QueueMessage> = (0..20).map(|_| message()).collect();
    let now = Timestamp::now();
    for message in &messages {
        queue.push(message, now).await.expect("push");
    }
    // Pushing again changes nothing.
    queue.push(&messages[3], now).await.expect("push again");
    let stats = queue.stats().await.expect("stats");
    assert_eq!(stats.ready, 20, "{stats:?}");
    let first = queue.lease("a", 5, LEASE).await.expect("lease");
    let second = queue.lease("b", 100, LEASE).await.expect("lease");
    let order: Vec<&QueueMessage> = first.iter().chain(&second).map(|d| &d.message).collect();
    assert_eq!(
        order,
        messages.iter().collect::<Vec<_>>(),
        "FIFO, each once"
    );
    assert!(first.iter().chain(&second).all(|d| d.deliveries == 1));
    assert!(queue.lease("c", 10, LEASE).await.expect("lease").is_empty());
    let stats = queue.stats().await.expect("stats");
    assert_eq!((stats.ready, stats.leased), (0, 20), "{stats:?}");
    // Pushing a leased message again does not duplicate it.
    queue.push(&messages[0], now).await.expect("push leased");
    assert!(queue.lease("c", 10, LEASE).await.expect("lease").is_empty());
    for message in &messages {
        queue.ack(&message.id).await.expect("ack");
    }
    assert_eq!(queue.stats().await.expect("stats").leased, 0);
}

async fn delayed_messages(queue: &dyn Queue) {
    let later = message();
    let sooner = message();
    queue
        .push(&later, now_plus(Duration::from_millis(900)))
        .await
        .expect("push");
    queue
        .push(&sooner, now_plus(Duration::from_millis(600)))
        .await
        .expect("push");
    let stats = queue.stats().await.expect("stats");
    assert_eq!((stats.ready, stats.delayed), (0, 2), "{stats:?}");
    assert!(queue.lease("a", 10, LEASE).await.expect("lease").is_empty());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let leased = queue.lease("a", 10, LEASE).await.expect("lease");
    let ids: Vec<&str> = leased.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![sooner.id.as_str(), later.id.as_str()],
        "due order"
    );
    for id in ids {
        queue.ack(id).await.expect("ack");
    }
}

/// Renewal tells a consumer which of its messages it lost: taken by another consumer after its
/// lease expired, or gone; a lease that expired but that nobody took is still renewed.
async fn renew_reports_lost_leases(queue: &dyn Queue) {
    let (kept, taken) = (message(), message());
    queue.push(&kept, Timestamp::now()).await.expect("push");
    queue.push(&taken, Timestamp::now()).await.expect("push");
    let short = Duration::from_millis(200);
    assert_eq!(queue.lease("a", 10, short).await.expect("lease").len(), 2);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Both expired; nobody leased since: renewing keeps them.
    let ids = vec![kept.id.clone(), taken.id.clone()];
    let lost = queue.renew("a", &ids, short).await.expect("renew");
    assert!(
        lost.is_empty(),
        "expired but untaken leases are renewed: {lost:?}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    queue
        .renew("a", std::slice::from_ref(&kept.id), LEASE)
        .await
        .expect("renew");
    // `taken` expired again and another consumer leases it.
    let other = queue.lease("b", 10, LEASE).await.expect("lease");
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].message.id, taken.id);
    let lost = queue.renew("a", &ids, LEASE).await.expect("renew");
    assert_eq!(lost, vec![taken.id.clone()]);
    let lost = queue
        .renew("b", std::slice::from_ref(&taken.id), LEASE)
        .await
        .expect("renew");
    assert!(lost.is_empty());
    // An acknowledged message is not held by anyone any more.
    queue.ack(&kept.id).await.expect("ack");
    let lost = queue
        .renew("a", std::slice::from_ref(&kept.id), LEASE)
        .await
        .expect("renew");
    assert_eq!(lost, vec![kept.id.clone()]);
    queue.ack(&taken.id).await.expect("ack");
}

async fn ack_release_and_expiry(queue: &dyn Queue) {
    let m = message();
    queue.push(&m, Timestamp::now()).await.expect("push");
    let leased = queue.lease("a", 10, LEASE).await.expect("lease");
    assert_eq!(leased.len(), 1);
    // Released with a delay: invisible, then delivered again (a voluntary release).
    queue
        .release(&m.id, Duration::from_millis(300))
        .await
        .expect("release");
    assert!(queue.lease("b", 10, LEASE).await.expect("lease").is_empty());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = queue.lease("b", 10, LEASE).await.expect("lease");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].deliveries, 2);
    // A lease that expires makes it visible to another consumer.
    queue.release(&m.id, Duration::ZERO).await.expect("release");
    let short = queue
        .lease("c", 10, Duration::from_millis(300))
        .await
        .expect("lease");
    assert_eq!(short.len(), 1);
    // …unless renewed.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let lost = queue
        .renew("c", std::slice::from_ref(&m.id), Duration::from_millis(600))
        .await
        .expect("renew");
    assert!(lost.is_empty(), "the holder keeps its lease: {lost:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(queue.lease("d", 10, LEASE).await.expect("lease").is_empty());
    // Renewing someone else's lease does nothing, and says it is not held.
    let lost = queue
        .renew("d", std::slice::from_ref(&m.id), LEASE)
        .await
        .expect("renew");
    assert_eq!(lost, vec![m.id.clone()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let taken = queue.lease("d", 10, LEASE).await.expect("lease");
    assert_eq!(taken.len(), 1, "expired lease delivered again");
    assert_eq!(taken[0].deliveries, 4);
    queue.ack(&m.id).await.expect("ack");
    assert!(queue.lease("d", 10, LEASE).await.expect("lease").is_empty());
    // An acknowledged message is gone: pushing its id again queues it anew.
    queue.push(&m, Timestamp::now()).await.expect("push");
    let anew = queue.lease("d", 10, LEASE).await.expect("lease");
    assert_eq!(anew.len(), 1);
    assert_eq!(anew[0].deliveries, 1);
    queue.ack(&m.id).await.expect("ack");
}

async fn dead_letters(queue: &dyn Queue) {
    let before = queue.stats().await.expect("stats").dead;
    let poisoned = message();
    queue.push(&poisoned, Timestamp::now()).await.expect("push");
    let limit = fastlane_actors::ports::MAX_FAILED_DELIVERIES;
    for attempt in 1..=limit {
        let leased = queue.lease("a", 10, LEASE).await.expect("lease");
        assert_eq!(leased.len(), 1, "attempt {attempt}");
        let buried = queue
            .fail(&poisoned.id, Duration::ZERO, "runner crashed")
            .await
            .expect("fail");
        assert_eq!(buried, attempt == limit, "attempt {attempt}");
    }
    assert!(queue.lease("a", 10, LEASE).await.expect("lease").is_empty());
    // Expired leases count as failed deliveries too.
    let abandoned = message();
    queue
        .push(&abandoned, Timestamp::now())
        .await
        .expect("push");
    for _ in 0..limit {
        let leased = queue
            .lease("a", 10, Duration::from_millis(50))
            .await
            .expect("lease");
        assert_eq!(leased.len(), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert!(queue.lease("a", 10, LEASE).await.expect("lease").is_empty());
    // And a message that can never run goes at once.
    let orphan = message();
    queue.push(&orphan, Timestamp::now()).await.expect("push");
    queue.lease("a", 10, LEASE).await.expect("lease");
    queue
        .dead_letter(&orphan.id, "refers to nothing")
        .await
        .expect("dead letter");
    let stats = queue.stats().await.expect("stats");
    assert_eq!(stats.dead, before + 3, "{stats:?}");
    assert_eq!(stats.leased, 0, "{stats:?}");
    let dead = queue.dead_letters(3).await.expect("dead letters");
    let reasons: Vec<(&str, &str)> = dead
        .iter()
        .map(|dead| (dead.message.id.as_str(), dead.reason.as_str()))
        .collect();
    assert_eq!(reasons[0], (orphan.id.as_str(), "refers to nothing"));
    assert_eq!(reasons[1].0, abandoned.id);
    assert!(reasons[1].1.contains("lease expired"), "{reasons:?}");
    assert_eq!(reasons[2], (poisoned.id.as_str(), "runner crashed"));
    assert_eq!(dead[2].message, poisoned, "the message is kept whole");
    assert_eq!(dead[2].deliveries, limit);
    // A dead-lettered message is not queued again by a push (reconciliation pushes blindly).
    queue.push(&poisoned, Timestamp::now()).await.expect("push");
    assert!(queue.lease("a", 10, LEASE).await.expect("lease").is_empty());
}

/// Retention removes the oldest dead letters buried before a time; a sweep's cursor taken
/// before still sees exactly the letters buried after it.
async fn dead_letter_retention(queue: &dyn Queue) {
    let before = queue.stats().await.expect("stats").dead;
    assert!(before >= 1, "the dead letters case ran first");
    let (_, cursor) = queue
        .dead_letters_after(0, 1_000)
        .await
        .expect("dead letters");
    let removed = queue
        .remove_dead_letters_before(Timestamp(0), 10)
        .await
        .expect("remove");
    assert_eq!(removed, 0, "none was buried before 1970");
    let removed = queue
        .remove_dead_letters_before(now_plus(Duration::from_secs(1)), 1)
        .await
        .expect("remove");
    assert_eq!(removed, 1, "the limit holds");
    assert_eq!(queue.stats().await.expect("stats").dead, before - 1);
    let (after, same) = queue
        .dead_letters_after(cursor, 10)
        .await
        .expect("dead letters");
    assert!(after.is_empty(), "{after:?}");
    assert_eq!(same, cursor);
    let buried = message();
    queue.push(&buried, Timestamp::now()).await.expect("push");
    queue.lease("a", 10, LEASE).await.expect("lease");
    queue
        .dead_letter(&buried.id, "later")
        .await
        .expect("dead letter");
    let (after, next) = queue
        .dead_letters_after(cursor, 10)
        .await
        .expect("dead letters");
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].message.id, buried.id);
    assert_eq!(next, cursor + 1);
    let (again, _) = queue
        .dead_letters_after(next, 10)
        .await
        .expect("dead letters");
    assert!(again.is_empty());
}

async fn release_all(queue: &dyn Queue) {
    let mine: Vec<QueueMessage> = (0..3).map(|_| message()).collect();
    for m in &mine {
        queue.push(m, Timestamp::now()).await.expect("push");
    }
    assert_eq!(
        queue.lease("node-1", 10, LEASE).await.expect("lease").len(),
        3
    );
    let other = message();
    queue.push(&other, Timestamp::now()).await.expect("push");
    assert_eq!(
        queue.lease("node-2", 10, LEASE).await.expect("lease").len(),
        1
    );
    assert_eq!(
        queue.release_all("node-1", false).await.expect("release"),
        3
    );
    assert_eq!(
        queue.release_all("node-1", false).await.expect("release"),
        0
    );
    let back = queue.lease("node-3", 10, LEASE).await.expect("lease");
    let ids: HashSet<&str> = back.iter().map(|d| d.message.id.as_str()).collect();
    assert_eq!(ids, mine.iter().map(|m| m.id.as_str()).collect());
    // At a restart, what the node held counts as failed deliveries.
    let limit = fastlane_actors::ports::MAX_FAILED_DELIVERIES;
    let before = queue.stats().await.expect("stats").dead;
    for round in 1..=limit {
        assert_eq!(
            queue.release_all("node-3", true).await.expect("release"),
            3,
            "round {round}"
        );
        let leased = queue.lease("node-3", 10, LEASE).await.expect("lease");
        assert_eq!(leased.len(), if round == limit { 0 } else { 3 });
    }
    assert_eq!(queue.stats().await.expect("stats").dead, before + 3);
    queue.ack(&other.id).await.expect("ack");
}

/// Two consumers leasing at once: every message is delivered exactly once.
async fn concurrent_consumers(queue: Arc<dyn Queue>) {
    let messages: Vec<QueueMessage> = (0..300).map(|_| message()).collect();
    for m in &messages {
        queue.push(m, Timestamp::now()).await.expect("push");
    }
    let consumer = |name: &'static str| {
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                let leased = queue.lease(name, 7, LEASE).await.expect("lease");
                if leased.is_empty() {
                    return seen;
                }
                for delivery in leased {
                    queue.ack(&delivery.message.id).await.expect("ack");
                    seen.push(delivery.message.id);
                }
            }
        })
    };
    let (a, b) = (consumer("x"), consumer("y"));
    let (a, b) = (a.await.expect("x"), b.await.expect("y"));
    assert_eq!(a.len() + b.len(), messages.len(), "each once");
    let all: HashSet<String> = a.into_iter().chain(b).collect();
    assert_eq!(all.len(), messages.len());
}

#[tokio::test]
async fn queue_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    queue_suite(Arc::new(Embedded::open(dir.path()).expect("open"))).await;
}

#[tokio::test]
async fn queue_redis_standalone() {
    let queue = redis_backend(&env("FASTLANE_TEST_REDIS_URL")).await;
    queue_suite(Arc::new(queue.clone())).await;
    queue.clear().await.expect("clear");
}

#[tokio::test]
async fn queue_redis_cluster() {
    let queue = redis_backend(&env("FASTLANE_TEST_REDIS_CLUSTER_URL")).await;
    queue_suite(Arc::new(queue.clone())).await;
    queue.clear().await.expect("clear");
}

/// The Sentinel run: the queue, slots and blacklist suites, then a failover with messages in
/// flight (none lost, none delivered twice), then the suites again against the new primary. One
/// test, so that no other suite runs on Sentinel while it fails over.
#[tokio::test]
async fn redis_sentinel_with_failover() {
    let url = env("FASTLANE_TEST_REDIS_SENTINEL_URL");
    let queue = Arc::new(redis_backend(&url).await);
    all_suites(queue.clone()).await;

    let messages: Vec<QueueMessage> = (0..50).map(|_| message()).collect();
    for m in &messages {
        queue.push(m, Timestamp::now()).await.expect("push");
    }
    let before = queue.lease("n", 10, LEASE).await.expect("lease");
    assert_eq!(before.len(), 10);
    // Wait until the replica has everything, then fail over.
    let sentinel_port = url
        .trim_start_matches("redis+sentinel://")
        .split(['/', ','])
        .next()
        .and_then(|host| host.rsplit_once(':'))
        .map(|(_, port)| port.to_string())
        .expect("sentinel port");
    let primary = |port: &str| {
        let output = std::process::Command::new("redis-cli")
            .args([
                "-p",
                port,
                "SENTINEL",
                "get-master-addr-by-name",
                "fastlane",
            ])
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    let old = primary(&sentinel_port);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Sentinel refuses while a previous failover settles or no replica is good yet: ask again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = std::process::Command::new("redis-cli")
            .args(["-p", &sentinel_port, "SENTINEL", "FAILOVER", "fastlane"])
            .output()
            .expect("redis-cli");
        let answer = String::from_utf8_lossy(&status.stdout).to_string();
        if answer.contains("OK") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "failover refused: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while primary(&sentinel_port) == old {
        assert!(std::time::Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("failed over from {old:?} to {:?}", primary(&sentinel_port));
    // The rest, leased from the new primary: nothing lost, nothing twice.
    let mut seen: Vec<String> = before.iter().map(|d| d.message.id.clone()).collect();
    loop {
        let leased = patiently(|| queue.lease("n", 10, LEASE)).await;
        if leased.is_empty() {
            break;
        }
        seen.extend(leased.into_iter().map(|d| d.message.id));
    }
    assert_eq!(seen.len(), messages.len(), "each message once");
    assert_eq!(
        seen.iter().collect::<HashSet<_>>(),
        messages.iter().map(|m| &m.id).collect::<HashSet<_>>()
    );
    for id in &seen {
        patiently(|| queue.ack(id)).await;
    }
    all_suites(queue.clone()).await;
    queue.clear().await.expect("clear");
}

/// The queue, slots and blacklist suites on one backend, in turn.
async fn all_suites<B: Queue + Slots + HostBlacklist>(backend: Arc<B>) {
    queue_suite(backend.clone()).await;
    slots_suite(&*backend, &*backend).await;
    blacklist_suite(&*backend).await;
}

// ---------------------------------------------------------------------------------------------
// Slots suite

/// Whether `holder` got a slot in every pool of `pools` (all or none).
async fn acquire(
    slots: &dyn Slots,
    holder: &str,
    pools: &[(String, u32)],
    lease: Duration,
) -> bool {
    slots.acquire(holder, pools, lease).await.expect("acquire")
}

/// Slots: all or none, leased, renewed by the queue's renew (`queue` is the same backend).
async fn slots_suite(queue: &dyn Queue, slots: &dyn Slots) {
    let farm = format!("farm:{}", Uuid::new_v4().simple());
    let task = format!("task:{}", Uuid::new_v4().simple());
    let both = vec![(farm.clone(), 2), (task.clone(), 1)];
    assert!(acquire(slots, "h1", &both, LEASE).await);
    assert!(
        acquire(slots, "h1", &both, LEASE).await,
        "a holder holding them already"
    );
    // The task pool is full: all or none, so the farm slot is not taken either.
    assert!(!acquire(slots, "h2", &both, LEASE).await);
    let farm_only = vec![(farm.clone(), 2)];
    assert!(acquire(slots, "h3", &farm_only, LEASE).await);
    assert!(!acquire(slots, "h4", &farm_only, LEASE).await);
    let used: BTreeMap<String, u64> = slots.in_use().await.expect("slots").into_iter().collect();
    assert_eq!(used.get(&farm), Some(&2));
    assert_eq!(used.get(&task), Some(&1));
    slots.release("h1").await.expect("release");
    // h4, refused the farm before h2 asked for it, gives up (a shared backend would keep the
    // farm's next slot for it otherwise: first come, first served).
    slots.release("h4").await.expect("release");
    assert!(acquire(slots, "h2", &both, LEASE).await);
    slots.release("h2").await.expect("release");
    slots.release("h3").await.expect("release");
    // Slots are leases too: an expired one frees its place; renew keeps it.
    let short = Duration::from_millis(300);
    assert!(acquire(slots, "h5", &farm_only, short).await);
    assert!(acquire(slots, "h6", &farm_only, short).await);
    tokio::time::sleep(Duration::from_millis(150)).await;
    queue
        .renew("nobody", &["h5".to_string()], Duration::from_secs(5))
        .await
        .expect("renew");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(acquire(slots, "h7", &farm_only, LEASE).await);
    assert!(!acquire(slots, "h8", &farm_only, LEASE).await);
    for holder in ["h5", "h7"] {
        slots.release(holder).await.expect("release");
    }
    let used: BTreeMap<String, u64> = slots.in_use().await.expect("slots").into_iter().collect();
    assert_eq!(used.get(&farm), None, "{used:?}");
}

#[tokio::test]
async fn slots_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = Embedded::open(dir.path()).expect("open");
    slots_suite(&embedded, &embedded).await;
}

/// A shared backend serves slots first come, first served across nodes: a holder refused a
/// pool keeps the next free slot while it asks again; one that stopped asking (its node died)
/// stops counting after a few seconds.
async fn slots_in_arrival_order(slots: &dyn Slots) {
    let pool = vec![(format!("farm:{}", Uuid::new_v4().simple()), 1)];
    assert!(acquire(slots, "a", &pool, LEASE).await);
    assert!(!acquire(slots, "b", &pool, LEASE).await, "full");
    slots.release("a").await.expect("release");
    assert!(
        !acquire(slots, "c", &pool, LEASE).await,
        "b waits for the slot c asks for"
    );
    assert!(acquire(slots, "b", &pool, LEASE).await, "b came first");
    slots.release("b").await.expect("release");
    assert!(acquire(slots, "c", &pool, LEASE).await, "then c");
    slots.release("c").await.expect("release");
    // A waiter that stops asking.
    assert!(acquire(slots, "d", &pool, LEASE).await);
    assert!(!acquire(slots, "e", &pool, LEASE).await);
    slots.release("d").await.expect("release");
    assert!(!acquire(slots, "f", &pool, LEASE).await, "e still counts");
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    assert!(acquire(slots, "f", &pool, LEASE).await, "e went quiet");
    slots.release("f").await.expect("release");
    // A waiter that gave up (released) stops counting at once.
    assert!(acquire(slots, "g", &pool, LEASE).await);
    assert!(!acquire(slots, "h", &pool, LEASE).await);
    slots.release("h").await.expect("release");
    slots.release("g").await.expect("release");
    assert!(acquire(slots, "i", &pool, LEASE).await, "h gave up");
    slots.release("i").await.expect("release");
}

#[tokio::test]
async fn slots_redis_standalone() {
    let redis = redis_backend(&env("FASTLANE_TEST_REDIS_URL")).await;
    slots_suite(&redis, &redis).await;
    slots_in_arrival_order(&redis).await;
    redis.clear().await.expect("clear");
}

#[tokio::test]
async fn slots_redis_cluster() {
    let redis = redis_backend(&env("FASTLANE_TEST_REDIS_CLUSTER_URL")).await;
    slots_suite(&redis, &redis).await;
    slots_in_arrival_order(&redis).await;
    redis.clear().await.expect("clear");
}

// ---------------------------------------------------------------------------------------------
// Host blacklist suite

async fn blacklist_suite(blacklist: &dyn HostBlacklist) {
    blacklist.add("10.0.0.2:2375").await.expect("add");
    blacklist.add("10.0.0.1:2375").await.expect("add");
    blacklist.add("10.0.0.1:2375").await.expect("add twice");
    assert_eq!(
        blacklist.list().await.expect("list"),
        vec!["10.0.0.1:2375", "10.0.0.2:2375"]
    );
    blacklist.remove("10.0.0.1:2375").await.expect("remove");
    blacklist
        .remove("10.0.0.9:2375")
        .await
        .expect("remove absent");
    assert_eq!(blacklist.list().await.expect("list"), vec!["10.0.0.2:2375"]);
    blacklist.remove("10.0.0.2:2375").await.expect("remove");
}

#[tokio::test]
async fn blacklist_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    blacklist_suite(&Embedded::open(dir.path()).expect("open")).await;
}

#[tokio::test]
async fn blacklist_redis_standalone() {
    let redis = redis_backend(&env("FASTLANE_TEST_REDIS_URL")).await;
    blacklist_suite(&redis).await;
    redis.clear().await.expect("clear");
}

#[tokio::test]
async fn blacklist_redis_cluster() {
    let redis = redis_backend(&env("FASTLANE_TEST_REDIS_CLUSTER_URL")).await;
    blacklist_suite(&redis).await;
    redis.clear().await.expect("clear");
}

// ---------------------------------------------------------------------------------------------
// Store suite

fn job(task_id: &str) -> Job {
    let now = Timestamp::now();
    Job {
        task_id: task_id.to_string(),
        job_id: Uuid::new_v4(),
        image: "fastlane-test:1".into(),
        command: "echo hi".into(),
        request_ip: Some("127.0.0.1".into()),
        metadata: JobMetadata {
            retries: 2,
            retry_count: 0,
            emails: serde_json::json!({}),
            webhooks: serde_json::json!({"succeeds": ["http://127.0.0.1:1/hook"]}),
            expiration: None,
            timeout: 1800,
            envs: BTreeMap::from([("A".to_string(), "1".to_string())]),
            additional_dns_entries: vec![("db".into(), "10.0.0.1".into())],
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

fn execution(job: &Job, at: i64) -> Execution {
    Execution {
        execution_id: Uuid::new_v4(),
        task_id: job.task_id.clone(),
        job_id: job.job_id,
        image: job.image.clone(),
        command: job.command.clone(),
        request_ip: None,
        status: ExecutionStatus::Enqueued,
        created_at: Timestamp(at),
        last_modified_at: Timestamp(at),
        started_at: None,
        finished_at: None,
        exit_code: None,
        metadata: ExecutionMetadata::default(),
        log: None,
        error: None,
        outbox: Vec::new(),
    }
}

fn page(number: u64) -> Page {
    Page {
        number,
        per_page: 2,
    }
}

async fn store_suite(store: Arc<dyn Store>) {
    tasks_and_jobs(&*store).await;
    executions_and_outputs(&*store).await;
    last_execution_without_output(&*store).await;
    fenced_writes(&*store).await;
    output_pieces(&*store).await;
    concurrent_output_reads(store.clone(), 128).await;
    webhook_dispatch(store.clone()).await;
    notification_outbox(store.clone()).await;
    schedules(&*store).await;
    job_versions(&*store).await;
    history_and_retention(&*store).await;
    store.ping().await.expect("ping");
}

async fn tasks_and_jobs(store: &dyn Store) {
    let run = Uuid::new_v4().simple().to_string();
    let names = [
        format!("alpha-{run}"),
        format!("beta-{run}"),
        format!("Gamma.Report-{run}"),
    ];
    let mut jobs = Vec::new();
    for name in &names {
        let job = job(name);
        let first = execution(&job, Timestamp::now().0);
        store.create_job(&job, Some(&first)).await.expect("create");
        jobs.push((job, first));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // A second job of the first task.
    let extra = job(&names[0]);
    store.create_job(&extra, None).await.expect("create");
    let task = store.get_task(&names[0]).await.expect("get").expect("task");
    assert_eq!(task.task_id, names[0]);
    assert!(store.get_task("no-such-task").await.expect("get").is_none());
    let all = Page {
        number: 1,
        per_page: 10,
    };
    let listed = store.list_jobs(&names[0], all).await.expect("jobs");
    assert_eq!((listed.items.len(), listed.total), (2, 2));
    // Pages of one: the newest change first, then the other; past the end, nothing.
    let mut paged = Vec::new();
    for number in 1..=3 {
        let page = Page {
            number,
            per_page: 1,
        };
        let one = store.list_jobs(&names[0], page).await.expect("jobs");
        assert_eq!(one.total, 2, "the total is the task's, whatever the page");
        paged.extend(one.items.into_iter().map(|job| job.job_id));
    }
    assert_eq!(paged, vec![extra.job_id, jobs[0].0.job_id]);
    assert_eq!(
        store
            .list_jobs("no-such-task", all)
            .await
            .expect("jobs")
            .total,
        0
    );
    assert_eq!(
        store
            .get_job(&names[0], jobs[0].0.job_id)
            .await
            .expect("get"),
        Some(jobs[0].0.clone()),
        "a job reads back as written"
    );
    assert!(
        store
            .get_job(&names[1], jobs[0].0.job_id)
            .await
            .expect("get")
            .is_none(),
        "a job is found under its own task only"
    );
    // The same job id under another task is refused.
    let mut stolen = jobs[0].0.clone();
    stolen.task_id = names[1].clone();
    assert!(matches!(
        store.create_job(&stolen, None).await,
        Err(StoreError::Conflict(_))
    ));
    // … also under a task that does not exist, which is not left behind, empty.
    stolen.task_id = format!("{run}-nowhere");
    assert!(matches!(
        store.create_job(&stolen, None).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(store
        .get_task(&stolen.task_id)
        .await
        .expect("get")
        .is_none());
    // Search: whole words, case-insensitive, in insertion order.
    let found = store
        .search_tasks(&["gamma".to_string(), run.clone()], page(1))
        .await
        .expect("search");
    assert_eq!(found.total, 3);
    let found = store
        .search_tasks(&["report".to_string()], page(1))
        .await
        .expect("search");
    let ids: Vec<&str> = found
        .items
        .iter()
        .map(|summary| summary.task.task_id.as_str())
        .filter(|id| id.ends_with(&run))
        .collect();
    assert_eq!(ids, vec![names[2].as_str()]);
    let first = store
        .search_tasks(std::slice::from_ref(&run), page(1))
        .await
        .expect("search");
    let second = store
        .search_tasks(std::slice::from_ref(&run), page(2))
        .await
        .expect("search");
    let ordered: Vec<&str> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|summary| summary.task.task_id.as_str())
        .collect();
    assert_eq!(
        ordered,
        names.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(first.items[0].jobs_count, 2);
    let counts = store.counts().await.expect("counts");
    assert!(counts.tasks >= 3 && counts.jobs >= 4, "{counts:?}");
    let listed = store.list_tasks(page(1)).await.expect("tasks");
    assert!(listed.total >= 3 && listed.items.len() <= 2);
    // PUT: the job is rewritten, with a new execution.
    let mut updated = jobs[1].0.clone();
    updated.command = "echo changed".into();
    updated.last_modified_at = Timestamp::now();
    let second_run = execution(&updated, Timestamp::now().0);
    store
        .create_job(&updated, Some(&second_run))
        .await
        .expect("update");
    let read = store
        .get_job(&names[1], updated.job_id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!(read.command, "echo changed");
    assert_eq!(
        store.count_executions(updated.job_id).await.expect("count"),
        2
    );
    let mut changed = read.clone();
    changed.image = "other:2".into();
    store.update_job(&changed).await.expect("update job");
    assert_eq!(
        store
            .get_job(&names[1], updated.job_id)
            .await
            .expect("get")
            .expect("job")
            .image,
        "other:2"
    );
    // Deleting the last job of a task removes the task.
    store.delete_job(jobs[2].0.job_id).await.expect("delete");
    assert!(store.get_task(&names[2]).await.expect("get").is_none());
    assert!(store
        .get_execution(jobs[2].1.execution_id)
        .await
        .expect("get")
        .is_none());
    store
        .delete_job(jobs[2].0.job_id)
        .await
        .expect("delete twice");
    store.delete_job(extra.job_id).await.expect("delete");
    assert_eq!(
        store
            .search_tasks(&["alpha".to_string(), run.clone()], page(1))
            .await
            .expect("search")
            .items
            .iter()
            .find(|summary| summary.task.task_id == names[0])
            .map(|summary| summary.jobs_count),
        Some(1)
    );
}

async fn executions_and_outputs(store: &dyn Store) {
    let job = job(&format!("outputs-{}", Uuid::new_v4().simple()));
    store.create_job(&job, None).await.expect("create");
    let base = Timestamp::now().0;
    let runs: Vec<Execution> = (0..4).map(|n| execution(&job, base + n)).collect();
    for run in &runs {
        assert!(store.create_execution(run).await.expect("create"));
    }
    assert!(!store.create_execution(&runs[0]).await.expect("again"));
    let newest: Vec<Uuid> = store
        .list_executions(job.job_id, 3)
        .await
        .expect("list")
        .iter()
        .map(|e| e.execution_id)
        .collect();
    assert_eq!(
        newest,
        vec![
            runs[3].execution_id,
            runs[2].execution_id,
            runs[1].execution_id
        ]
    );
    // Terminal statuses are final.
    let mut run = runs[0].clone();
    run.status = ExecutionStatus::Running;
    run.metadata.docker_host = Some("127.0.0.1".into());
    run.metadata.docker_port = Some(2375);
    store.update_execution(&run, None).await.expect("running");
    run.status = ExecutionStatus::Done;
    run.exit_code = Some(0);
    // 20 MiB of output with bytes that are not UTF-8: more than a document can hold.
    let log: Vec<u8> = (0..20 * 1024 * 1024).map(|n| (n % 251) as u8).collect();
    run.log = Some(log.clone());
    run.error = Some(Vec::new());
    store.update_execution(&run, None).await.expect("done");
    let read = store
        .get_execution(run.execution_id)
        .await
        .expect("get")
        .expect("execution");
    assert_eq!(read.status, ExecutionStatus::Done);
    assert_eq!(read.metadata.docker_port, Some(2375));
    assert!(
        read.log.as_deref() == Some(log.as_slice()),
        "log kept whole"
    );
    assert_eq!(read.error, Some(Vec::new()));
    // Tails span chunks: the last 5 MiB + 1 of the 20 MiB log, cut; the empty error whole.
    let keep = 5 * 1024 * 1024 + 1;
    let tails = store
        .list_execution_tails(job.job_id, 10, keep as u64)
        .await
        .expect("tails");
    let tail = tails
        .iter()
        .find(|tail| tail.execution.execution_id == run.execution_id)
        .expect("listed");
    assert!(
        tail.execution.log.as_deref() == Some(&log[log.len() - keep..]),
        "the tail"
    );
    assert!(tail.log_cut && !tail.error_cut);
    assert_eq!(tail.execution.error, Some(Vec::new()));
    assert_eq!(tail.execution.status, ExecutionStatus::Done);
    store
        .update_execution(&run, None)
        .await
        .expect("same status again");
    let mut late = run.clone();
    late.status = ExecutionStatus::Failed;
    late.log = Some(b"overwritten".to_vec());
    assert!(matches!(
        store.update_execution(&late, None).await,
        Err(StoreError::Conflict(_))
    ));
    let read = store
        .get_execution(run.execution_id)
        .await
        .expect("get")
        .expect("execution");
    assert_eq!(read.status, ExecutionStatus::Done);
    assert_eq!(read.log.map(|log| log.len()), Some(log.len()));
    // Smaller output replaces larger.
    run.log = Some(b"short".to_vec());
    store.update_execution(&run, None).await.expect("rewrite");
    let read = store
        .get_execution(run.execution_id)
        .await
        .expect("get")
        .expect("execution");
    assert_eq!(read.log.as_deref(), Some(&b"short"[..]));
    // Unfinished executions, for reconciliation.
    let mut second = runs[1].clone();
    second.status = ExecutionStatus::Running;
    store
        .update_execution(&second, None)
        .await
        .expect("running");
    let mut unfinished: HashSet<Uuid> = HashSet::new();
    for status in [ExecutionStatus::Running, ExecutionStatus::Enqueued] {
        let found = store.executions_in(status, None, 1000).await.expect("in");
        assert!(found.iter().all(|e| e.status == status), "{found:?}");
        unfinished.extend(found.into_iter().map(|e| e.execution_id));
    }
    assert!(unfinished.contains(&runs[1].execution_id));
    assert!(unfinished.contains(&runs[2].execution_id));
    assert!(!unfinished.contains(&runs[0].execution_id));
    // An update of an execution never created inserts it.
    let fresh = execution(&job, base + 10);
    store.update_execution(&fresh, None).await.expect("insert");
    assert_eq!(store.count_executions(job.job_id).await.expect("count"), 5);
    store.delete_job(job.job_id).await.expect("delete");
}

/// A runner's writes are fenced by its claim: once a newer runner claimed the execution, the
/// older one's writes are refused as `Fenced` (and change nothing), the newer one's pass, and
/// unfenced writes (a stop) always pass; a terminal status stays final for every writer.
async fn fenced_writes(store: &dyn Store) {
    let job = job(&format!("fenced-{}", Uuid::new_v4().simple()));
    let first = execution(&job, Timestamp::now().0);
    store.create_job(&job, Some(&first)).await.expect("create");
    let id = first.execution_id;
    assert_eq!(
        store.claim_execution(Uuid::new_v4()).await.expect("claim"),
        None
    );
    let old = store
        .claim_execution(id)
        .await
        .expect("claim")
        .expect("exists");
    let mut running = first.clone();
    running.status = ExecutionStatus::Running;
    store
        .update_execution(&running, Some(old))
        .await
        .expect("own claim");
    let new = store
        .claim_execution(id)
        .await
        .expect("claim")
        .expect("exists");
    assert!(new > old, "claims increase: {old} then {new}");
    let mut stale = running.clone();
    stale.status = ExecutionStatus::Done;
    stale.log = Some(b"from the old runner".to_vec());
    assert!(matches!(
        store.update_execution(&stale, Some(old)).await,
        Err(StoreError::Fenced(_))
    ));
    let read = store
        .get_execution(id)
        .await
        .expect("get")
        .expect("execution");
    assert_eq!(
        read.status,
        ExecutionStatus::Running,
        "the refused write changed nothing"
    );
    assert_eq!(read.log, None);
    let mut done = running.clone();
    done.status = ExecutionStatus::Done;
    done.log = Some(b"from the new runner".to_vec());
    store
        .update_execution(&done, Some(new))
        .await
        .expect("newest claim");
    // A stop is unfenced: it passes any claim, and the terminal rule still applies to it.
    let mut stopped = running.clone();
    stopped.status = ExecutionStatus::Stopped;
    assert!(matches!(
        store.update_execution(&stopped, None).await,
        Err(StoreError::Conflict(_))
    ));
    let read = store
        .get_execution(id)
        .await
        .expect("get")
        .expect("execution");
    assert_eq!(read.status, ExecutionStatus::Done);
    assert_eq!(read.log.as_deref(), Some(&b"from the new runner"[..]));
    // An unfenced write of an unfinished execution passes whoever claimed it.
    let second = execution(&job, Timestamp::now().0 + 1);
    assert!(store.create_execution(&second).await.expect("create"));
    store
        .claim_execution(second.execution_id)
        .await
        .expect("claim");
    let mut stop = second.clone();
    stop.status = ExecutionStatus::Stopped;
    store
        .update_execution(&stop, None)
        .await
        .expect("a stop always wins");
    store.delete_job(job.job_id).await.expect("delete");
}

/// `last_execution` is the newest record without its output (for status checks), and a
/// truncation note on the record round-trips.
async fn last_execution_without_output(store: &dyn Store) {
    let job = job(&format!("last-{}", Uuid::new_v4().simple()));
    store.create_job(&job, None).await.expect("create");
    assert_eq!(store.last_execution(job.job_id).await.expect("none"), None);
    let base = Timestamp::now().0;
    let older = execution(&job, base);
    let mut newest = execution(&job, base + 1);
    for run in [&older, &newest] {
        assert!(store.create_execution(run).await.expect("create"));
    }
    newest.status = ExecutionStatus::Failed;
    newest.exit_code = Some(1);
    newest.log = Some(b"head\n[fastlane: 10 bytes left out]\ntail".to_vec());
    newest.error = Some(b"oops".to_vec());
    newest.metadata.output_truncated = Some(OutputTruncated {
        stdout: 10,
        stderr: 0,
    });
    store.update_execution(&newest, None).await.expect("failed");
    let last = store
        .last_execution(job.job_id)
        .await
        .expect("last")
        .expect("an execution");
    assert_eq!(last.execution_id, newest.execution_id);
    assert_eq!(last.status, ExecutionStatus::Failed);
    assert_eq!((last.log, last.error), (None, None), "no output read");
    assert_eq!(
        last.metadata.output_truncated,
        newest.metadata.output_truncated
    );
    let read = store
        .get_execution(newest.execution_id)
        .await
        .expect("get")
        .expect("execution");
    assert_eq!(read.log, newest.log);
    assert_eq!(
        read.metadata.output_truncated,
        newest.metadata.output_truncated
    );
    // Job details read only the ends of outputs, newest first.
    let tails = store
        .list_execution_tails(job.job_id, 5, 4)
        .await
        .expect("tails");
    let ids: Vec<Uuid> = tails.iter().map(|t| t.execution.execution_id).collect();
    assert_eq!(ids, vec![newest.execution_id, older.execution_id]);
    assert_eq!(tails[0].execution.log.as_deref(), Some(&b"tail"[..]));
    assert_eq!(tails[0].execution.error.as_deref(), Some(&b"oops"[..]));
    assert!(tails[0].log_cut && !tails[0].error_cut);
    assert_eq!((tails[1].log_cut, tails[1].error_cut), (false, false));
    assert_eq!(tails[1].execution.log, None);
    let whole = store
        .list_execution_tails(job.job_id, 1, 0)
        .await
        .expect("whole");
    assert_eq!(whole[0].execution.log, newest.log);
    assert!(!whole[0].log_cut);
    store.delete_job(job.job_id).await.expect("delete");
}

/// `reads` reads of one output at once, more than any reader queue holds, with writes going on
/// meanwhile: every read answers with the right bytes, the writes complete, and a read right
/// after a write sees it.
async fn concurrent_output_reads(store: Arc<dyn Store>, reads: usize) {
    let job = job(&format!("readers-{}", Uuid::new_v4().simple()));
    let mut run = execution(&job, Timestamp::now().0);
    store.create_job(&job, Some(&run)).await.expect("create");
    let log: Vec<u8> = (0..3 * 1024 * 1024).map(|n| (n % 241) as u8).collect();
    run.status = ExecutionStatus::Done;
    run.log = Some(log.clone());
    run.error = Some(b"warning".to_vec());
    store.update_execution(&run, None).await.expect("done");
    let id = run.execution_id;
    let log = Arc::new(log);
    let piece = 64 * 1024;
    let reads: Vec<_> = (0..reads)
        .map(|n| {
            let (store, log) = (store.clone(), log.clone());
            tokio::spawn(async move {
                let offset = (n * 4099) % log.len();
                match n % 3 {
                    0 => {
                        let read = store
                            .read_output(id, OutputStream::Stdout, offset as u64, piece as u64)
                            .await
                            .expect("read");
                        let end = (offset + piece).min(log.len());
                        assert!(read == log[offset..end], "piece at {offset}");
                    }
                    1 => {
                        let len = store.output_len(id, OutputStream::Stdout).await;
                        assert_eq!(len.expect("len"), Some(log.len() as u64));
                    }
                    _ => {
                        let tail = store
                            .get_execution_tail(id, Some(1000))
                            .await
                            .expect("tail")
                            .expect("found");
                        assert!(tail.execution.log.as_deref() == Some(&log[log.len() - 1000..]));
                        assert!(tail.log_cut && !tail.error_cut);
                    }
                }
            })
        })
        .collect();
    // Writes beside the reads.
    let others: Vec<Job> = (0..20)
        .map(|n| crate::job(&format!("beside-{n}-{}", Uuid::new_v4().simple())))
        .collect();
    for other in &others {
        store
            .create_job(other, None)
            .await
            .expect("write beside reads");
    }
    for read in reads {
        read.await.expect("read task");
    }
    // A read right after a write sees it.
    let mut rewritten = run.clone();
    rewritten.log = Some(b"short".to_vec());
    store
        .update_execution(&rewritten, None)
        .await
        .expect("rewrite");
    let read = store
        .read_output(id, OutputStream::Stdout, 0, 1 << 20)
        .await
        .expect("read");
    assert_eq!(read, b"short");
    for other in others {
        store.delete_job(other.job_id).await.expect("delete");
    }
    store.delete_job(job.job_id).await.expect("delete");
}

/// The output routes read stored output in pieces (`output_len`, `read_output`), across
/// MongoDB's 4 MiB chunks, and one execution with the ends of its outputs or none of them
/// (`get_execution_tail`).
async fn output_pieces(store: &dyn Store) {
    let job = job(&format!("pieces-{}", Uuid::new_v4().simple()));
    store.create_job(&job, None).await.expect("create");
    let base = Timestamp::now().0;
    let bare = execution(&job, base);
    let mut run = execution(&job, base + 1);
    for execution in [&bare, &run] {
        assert!(store.create_execution(execution).await.expect("create"));
    }
    let log: Vec<u8> = (0..9 * 1024 * 1024 + 7).map(|n| (n % 253) as u8).collect();
    run.status = ExecutionStatus::Done;
    run.log = Some(log.clone());
    run.error = Some(Vec::new());
    store.update_execution(&run, None).await.expect("done");
    let id = run.execution_id;
    let (stdout, stderr) = (OutputStream::Stdout, OutputStream::Stderr);
    let len = |id, stream| async move { store.output_len(id, stream).await.expect("len") };
    assert_eq!(len(id, stdout).await, Some(log.len() as u64));
    assert_eq!(len(id, stderr).await, Some(0));
    assert_eq!(len(bare.execution_id, stdout).await, None);
    assert_eq!(len(Uuid::new_v4(), stdout).await, None);
    let read = |id, offset: usize, max_len: u64| async move {
        store
            .read_output(id, OutputStream::Stdout, offset as u64, max_len)
            .await
            .expect("read")
    };
    let chunk = 4 * 1024 * 1024;
    assert_eq!(read(id, 0, 1024).await, &log[..1024]);
    assert_eq!(read(id, chunk - 10, 20).await, &log[chunk - 10..chunk + 10]);
    assert_eq!(read(id, 2, 2 * chunk as u64).await, &log[2..2 + 2 * chunk]);
    assert_eq!(
        read(id, log.len() - 5, 1 << 20).await,
        &log[log.len() - 5..]
    );
    assert!(read(id, log.len(), 10).await.is_empty(), "past the end");
    assert!(read(id, 10, 0).await.is_empty(), "nothing asked");
    assert!(read(bare.execution_id, 0, 10).await.is_empty(), "no output");
    let mut whole = Vec::new();
    while whole.len() < log.len() {
        let piece = read(id, whole.len(), 1 << 20).await;
        assert!(!piece.is_empty() && piece.len() <= 1 << 20);
        whole.extend_from_slice(&piece);
    }
    assert!(whole == log, "the pieces make the output");
    let tail = |max_bytes| async move {
        store
            .get_execution_tail(id, max_bytes)
            .await
            .expect("tail")
            .expect("found")
    };
    let record = tail(None).await;
    assert_eq!((record.execution.log, record.execution.error), (None, None));
    assert_eq!(record.execution.status, ExecutionStatus::Done);
    let end = tail(Some(4)).await;
    assert_eq!(end.execution.log.as_deref(), Some(&log[log.len() - 4..]));
    assert_eq!(end.execution.error, Some(Vec::new()));
    assert!(end.log_cut && !end.error_cut);
    let all = tail(Some(0)).await;
    assert!(all.execution.log.as_deref() == Some(&log[..]) && !all.log_cut);
    let bare_tail = store
        .get_execution_tail(bare.execution_id, Some(4))
        .await
        .expect("bare")
        .expect("found");
    assert_eq!(bare_tail.execution.log, None);
    assert!(store
        .get_execution_tail(Uuid::new_v4(), Some(4))
        .await
        .expect("absent")
        .is_none());
    run.log = Some(b"short".to_vec());
    store.update_execution(&run, None).await.expect("rewrite");
    assert_eq!(len(id, stdout).await, Some(5));
    assert_eq!(read(id, 0, 1 << 20).await, b"short");
    store.delete_job(job.job_id).await.expect("delete");
}

async fn webhook_dispatch(store: Arc<dyn Store>) {
    let job = job(&format!("hooks-{}", Uuid::new_v4().simple()));
    let run = execution(&job, Timestamp::now().0);
    store.create_job(&job, Some(&run)).await.expect("create");
    let mut appends = Vec::new();
    for n in 0..5 {
        let store = store.clone();
        appends.push(tokio::spawn(async move {
            store
                .append_webhook_dispatch(run.execution_id, serde_json::json!({"n": n}), 3)
                .await
        }));
    }
    for append in appends {
        append.await.expect("join").expect("append");
    }
    // A writer's copy of the execution does not replace the attempts.
    let mut running = run.clone();
    running.status = ExecutionStatus::Running;
    store
        .update_execution(&running, None)
        .await
        .expect("update");
    let read = store
        .get_execution(run.execution_id)
        .await
        .expect("get")
        .expect("execution");
    assert_eq!(read.status, ExecutionStatus::Running);
    assert_eq!(read.metadata.webhook_dispatch.len(), 3, "newest 3 kept");
    store.delete_job(job.job_id).await.expect("delete");
}

/// The outbox: a status change records what it owes in the same write (the largest lists a
/// client can send: 20 hooks per list, 50 recipients per list), a write of the same status or
/// a refused one adds nothing and keeps progress, replaces are compare-and-set (of two
/// concurrent claims one wins), the due index lists due outboxes soonest first within a limit
/// and drops settled ones, and deleting the job removes it.
async fn notification_outbox(store: Arc<dyn Store>) {
    use fastlane_proto::limits::{MAX_RECIPIENTS_PER_LIST, MAX_WEBHOOKS_PER_LIST};
    use fastlane_proto::outbox::{owed, MAX_OWED};
    let hooks = |list: &str| -> Vec<serde_json::Value> {
        (0..MAX_WEBHOOKS_PER_LIST)
            .map(|n| serde_json::json!({"url": format!("http://127.0.0.1:1/{list}/{n}"), "retries": 3}))
            .collect()
    };
    let addresses: Vec<String> = (0..MAX_RECIPIENTS_PER_LIST)
        .map(|n| format!("user{n}@example.com"))
        .collect();
    let mut job = job(&format!("outbox-{}", Uuid::new_v4().simple()));
    job.metadata.webhooks =
        serde_json::json!({"starts": hooks("s"), "fails": hooks("f"), "finishes": hooks("e")});
    job.metadata.emails = serde_json::json!({"fails": addresses, "finishes": addresses});
    let run = execution(&job, Timestamp::now().0);
    let earlier = execution(&job, Timestamp::now().0);
    store.create_job(&job, Some(&run)).await.expect("create");
    assert!(store.create_execution(&earlier).await.expect("create"));
    assert_eq!(store.get_outbox(run.execution_id).await.expect("get"), None);
    let now = Timestamp::now();
    let ours = |found: Vec<fastlane_proto::outbox::Outbox>| -> Vec<Uuid> {
        found
            .into_iter()
            .map(|outbox| outbox.execution_id)
            .filter(|id| [run.execution_id, earlier.execution_id].contains(id))
            .collect()
    };
    assert!(ours(store.due_outboxes(now, 100).await.expect("due")).is_empty());

    // Running owes the `starts` hooks; the same write again adds nothing.
    let mut running = run.clone();
    running.status = ExecutionStatus::Running;
    running.outbox = owed(&job, &running, now);
    store
        .update_execution(&running, None)
        .await
        .expect("running");
    let stored = store
        .get_outbox(run.execution_id)
        .await
        .expect("get")
        .expect("outbox");
    assert_eq!(stored.entries.len(), MAX_WEBHOOKS_PER_LIST);
    assert_eq!(
        (stored.task_id.as_str(), stored.job_id),
        (job.task_id.as_str(), job.job_id)
    );
    store
        .update_execution(&running, None)
        .await
        .expect("running again");
    let again = store
        .get_outbox(run.execution_id)
        .await
        .expect("get")
        .expect("outbox");
    assert_eq!(
        again, stored,
        "a write of the same status leaves the outbox alone"
    );

    // Two claims from the same read: one wins.
    let far = Timestamp(now.0 + 3_600_000_000);
    let mut claimed = stored.entries.clone();
    for entry in &mut claimed {
        entry.attempts = 1;
        entry.next_at = Some(far);
    }
    let (first, second) = tokio::join!(
        store.replace_outbox(run.execution_id, stored.version, &claimed),
        store.replace_outbox(run.execution_id, stored.version, &claimed)
    );
    assert!(
        first.expect("claim") ^ second.expect("claim"),
        "exactly one claim wins"
    );
    assert!(
        ours(store.due_outboxes(now, 100).await.expect("due")).is_empty(),
        "claimed: not due"
    );

    // Failing owes `fails` and `finishes` in the same write; the claimed start hooks keep their
    // progress.
    let mut failed = running.clone();
    failed.status = ExecutionStatus::Failed;
    failed.finished_at = Some(now);
    failed.error = Some(b"boom".to_vec());
    failed.outbox = owed(&job, &failed, now);
    store.update_execution(&failed, None).await.expect("failed");
    let stored = store
        .get_outbox(run.execution_id)
        .await
        .expect("get")
        .expect("outbox");
    assert_eq!(stored.entries.len(), MAX_OWED);
    let starts: Vec<_> = stored
        .entries
        .iter()
        .filter(|entry| entry.list == "starts")
        .collect();
    assert!(starts
        .iter()
        .all(|entry| entry.attempts == 1 && entry.next_at == Some(far)));

    // A refused write (a terminal status is final) and a same-status rewrite add nothing.
    let mut done = failed.clone();
    done.status = ExecutionStatus::Done;
    done.outbox = owed(&job, &done, now);
    assert!(matches!(
        store.update_execution(&done, None).await,
        Err(StoreError::Conflict(_))
    ));
    failed.log = Some(b"output added later".to_vec());
    store
        .update_execution(&failed, None)
        .await
        .expect("same status");
    assert_eq!(
        store
            .get_outbox(run.execution_id)
            .await
            .expect("get")
            .expect("outbox"),
        stored
    );

    // Due soonest first, within the limit.
    let mut stopped = earlier.clone();
    stopped.status = ExecutionStatus::Stopped;
    stopped.outbox = owed(&job, &stopped, Timestamp(now.0 - 1_000_000));
    store
        .update_execution(&stopped, None)
        .await
        .expect("stopped");
    let due = ours(store.due_outboxes(now, 100).await.expect("due"));
    assert_eq!(due, vec![earlier.execution_id, run.execution_id]);
    let first_due = store
        .due_outboxes(Timestamp(now.0 - 1), 1)
        .await
        .expect("due");
    assert_eq!(ours(first_due), vec![earlier.execution_id]);

    // Settled entries stay but leave the due index; a stale replace loses.
    let mut settled = stored.entries.clone();
    for entry in &mut settled {
        entry.next_at = None;
        entry.outcome = Some("delivered".into());
    }
    assert!(store
        .replace_outbox(run.execution_id, stored.version, &settled)
        .await
        .expect("settle"));
    assert!(!store
        .replace_outbox(run.execution_id, stored.version, &stored.entries)
        .await
        .expect("stale"));
    assert_eq!(
        ours(store.due_outboxes(now, 100).await.expect("due")),
        vec![earlier.execution_id]
    );
    let kept = store
        .get_outbox(run.execution_id)
        .await
        .expect("get")
        .expect("outbox");
    assert_eq!(kept.entries, settled);
    store.delete_job(job.job_id).await.expect("delete");
    assert_eq!(store.get_outbox(run.execution_id).await.expect("get"), None);
    assert!(ours(store.due_outboxes(now, 100).await.expect("due")).is_empty());
}

/// The scheduled jobs of `task_id`, read a page of one at a time through `scheduled_page`
/// (bounded: at most 10 000 pages), each with the attention time of its job.
async fn scheduled_ids(store: &dyn Store, task_id: &str) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut after = None;
    for _ in 0..10_000 {
        let page = store.scheduled_page(after, 1).await.expect("scheduled");
        let Some((job_id, task, at)) = page.into_iter().next() else {
            return ids;
        };
        after = Some((at, job_id));
        if task == task_id {
            let job = store
                .get_job(task_id, job_id)
                .await
                .expect("get")
                .expect("job");
            assert_eq!(job.attention_at(), Some(at));
            ids.push(job_id);
        }
    }
    panic!("more than 10 000 scheduled jobs in the test store");
}

async fn schedules(store: &dyn Store) {
    let mut first = job(&format!("cron-{}", Uuid::new_v4().simple()));
    let mut second = job(&first.task_id);
    let soon = Timestamp(Timestamp::now().0 + 60_000_000);
    let later = Timestamp(soon.0 + 60_000_000);
    let schedule = |next: Timestamp| JobSchedule {
        cron: Some("* * * * *".into()),
        timezone: None,
        next_fire_at: Some(next),
        misfire: Default::default(),
        overlap: Default::default(),
        missed: Vec::new(),
        missed_count: 0,
        paused: false,
        paused_at: None,
        resumed_at: None,
    };
    first.schedule = Some(schedule(later));
    first.scheduled = true;
    second.schedule = Some(schedule(soon));
    second.scheduled = true;
    // A third firing at the same time as the first: pages of one must not lose a tie.
    let mut third = job(&first.task_id);
    third.schedule = Some(schedule(later));
    third.scheduled = true;
    store.create_job(&first, None).await.expect("create");
    store.create_job(&second, None).await.expect("create");
    store.create_job(&third, None).await.expect("create");
    let ties = if first.job_id < third.job_id {
        [first.job_id, third.job_id]
    } else {
        [third.job_id, first.job_id]
    };
    assert_eq!(
        scheduled_ids(store, &first.task_id).await,
        vec![second.job_id, ties[0], ties[1]],
        "soonest first, ties by job id, page by page"
    );
    let mut gone = third.clone();
    gone.schedule = None;
    gone.scheduled = false;
    store.update_job(&gone).await.expect("unschedule");
    // A stopped schedule leaves the index.
    let mut stopped = store
        .get_job(&second.task_id, second.job_id)
        .await
        .expect("get")
        .expect("job");
    stopped.schedule = None;
    stopped.scheduled = false;
    store.update_job(&stopped).await.expect("stop");
    assert_eq!(
        scheduled_ids(store, &first.task_id).await,
        vec![first.job_id]
    );
    // Pending runs bring a job without a schedule back into the index, at their grace. As many
    // as one write can record (every slot of a catch-up under `misfire: all`) round-trip.
    let recorded_at = Timestamp(Timestamp::now().0 - 60_000_000);
    let mut pending = store
        .get_job(&second.task_id, second.job_id)
        .await
        .expect("get")
        .expect("job");
    pending.pending = (0..fastlane_proto::schedule::MISFIRE_CAP as i64)
        .map(|slot| PendingRun {
            execution_id: Uuid::new_v4(),
            due: recorded_at,
            scheduled_at: Some(Timestamp(recorded_at.0 - slot * 1_000_000)),
            retry_of: None,
            image: pending.image.clone(),
            command: pending.command.clone(),
            recorded_at,
        })
        .collect();
    store.update_job(&pending).await.expect("pending");
    let attention = pending.attention_at().expect("pending run");
    let due: Vec<_> = store
        .scheduled_before(Timestamp::now(), 1_000)
        .await
        .expect("due")
        .into_iter()
        .filter(|(job_id, _, _)| *job_id == second.job_id)
        .collect();
    assert_eq!(
        due,
        vec![(second.job_id, second.task_id.clone(), attention)]
    );
    let read = store
        .get_job(&second.task_id, second.job_id)
        .await
        .expect("get")
        .expect("job");
    assert_eq!(read.pending, pending.pending, "pending runs round-trip");
    store.delete_job(first.job_id).await.expect("delete");
    store.delete_job(second.job_id).await.expect("delete");
}

/// The history's filters and order, and retention's reads and removal: only terminal
/// executions go, with their output, and `count_executions` keeps counting them.
async fn history_and_retention(store: &dyn Store) {
    let task = format!("history-{}", Uuid::new_v4().simple());
    let (first_job, other_job) = (job(&task), job(&task));
    // Times of 2001, before what any other case writes.
    let base = 978_307_200_000_000;
    let second = 1_000_000;
    let mut executions = Vec::new();
    for index in 0..5 {
        let mut execution = execution(&first_job, base + index * second);
        execution.status = if index == 4 {
            ExecutionStatus::Running
        } else {
            ExecutionStatus::Done
        };
        execution.log = Some(format!("run {index}").into_bytes());
        executions.push(execution);
    }
    store
        .create_job(&first_job, Some(&executions[0]))
        .await
        .expect("create");
    for execution in &executions {
        store
            .update_execution(execution, None)
            .await
            .expect("write");
    }
    let mut failed = execution(&other_job, base + 10 * second);
    failed.status = ExecutionStatus::Failed;
    store
        .create_job(&other_job, Some(&failed))
        .await
        .expect("create");
    let of = |job_id: Option<Uuid>, status: Option<ExecutionStatus>| ExecutionFilter {
        task_id: Some(task.clone()),
        job_id,
        status,
        ..Default::default()
    };
    let ids = |paged: &Paged<Execution>| -> Vec<Uuid> {
        paged.items.iter().map(|item| item.execution_id).collect()
    };
    let newest = store
        .find_executions(&of(Some(first_job.job_id), None), page(1))
        .await
        .expect("find");
    assert_eq!(newest.total, 5);
    assert_eq!(
        ids(&newest),
        [executions[4].execution_id, executions[3].execution_id]
    );
    assert!(
        newest.items.iter().all(|item| item.log.is_none()),
        "no outputs"
    );
    let last = store
        .find_executions(&of(Some(first_job.job_id), None), page(3))
        .await
        .expect("find");
    assert_eq!(ids(&last), [executions[0].execution_id]);
    let done = store
        .find_executions(
            &of(Some(first_job.job_id), Some(ExecutionStatus::Done)),
            page(1),
        )
        .await
        .expect("find");
    assert_eq!(done.total, 4);
    let whole_task = store
        .find_executions(&of(None, None), page(1))
        .await
        .expect("find");
    assert_eq!(whole_task.total, 6);
    assert_eq!(ids(&whole_task)[0], failed.execution_id);
    let task_failed = store
        .find_executions(&of(None, Some(ExecutionStatus::Failed)), page(1))
        .await
        .expect("find");
    assert_eq!(ids(&task_failed), [failed.execution_id]);
    let window = ExecutionFilter {
        since: Some(Timestamp(base + second)),
        until: Some(Timestamp(base + 3 * second)),
        ..of(Some(first_job.job_id), None)
    };
    let between = store.find_executions(&window, page(1)).await.expect("find");
    assert_eq!(
        ids(&between),
        [executions[2].execution_id, executions[1].execution_id]
    );

    // Retention: beyond the newest 2 (a running one among them), by age, then removal.
    let beyond = store
        .finished_beyond(first_job.job_id, 2, Timestamp::now(), 10)
        .await
        .expect("beyond");
    assert_eq!(
        beyond,
        [
            executions[0].execution_id,
            executions[1].execution_id,
            executions[2].execution_id
        ]
    );
    let old = store
        .finished_before(Timestamp(base + 2 * second + 1), 1_000)
        .await
        .expect("before");
    assert!(old.contains(&executions[2].execution_id), "{old:?}");
    assert!(!old.contains(&executions[3].execution_id), "{old:?}");
    let jobs = store.job_ids_after(None, 100_000).await.expect("jobs");
    assert!(jobs.contains(&first_job.job_id) && jobs.contains(&other_job.job_id));
    let removed = store
        .remove_executions(&[
            executions[0].execution_id,
            executions[1].execution_id,
            executions[4].execution_id,
        ])
        .await
        .expect("remove");
    assert_eq!(removed, 2, "the running one stays");
    assert_eq!(
        store
            .count_executions(first_job.job_id)
            .await
            .expect("count"),
        5
    );
    assert!(store
        .get_execution(executions[0].execution_id)
        .await
        .expect("get")
        .is_none());
    assert_eq!(
        store
            .output_len(executions[0].execution_id, OutputStream::Stdout)
            .await
            .expect("len"),
        None
    );
    assert!(store
        .get_execution(executions[4].execution_id)
        .await
        .expect("get")
        .is_some());
    let left = store
        .find_executions(&of(Some(first_job.job_id), None), page(1))
        .await
        .expect("find");
    assert_eq!(left.total, 3);
    // A runner's fenced write does not bring a removed execution back.
    let written = store.update_execution(&executions[0], Some(1)).await;
    assert!(matches!(written, Err(StoreError::Fenced(_))), "{written:?}");
    assert!(store
        .get_execution(executions[0].execution_id)
        .await
        .expect("get")
        .is_none());
    // Finished after `settled`: kept.
    let unsettled = store
        .finished_beyond(first_job.job_id, 0, Timestamp(0), 10)
        .await
        .expect("beyond");
    assert!(unsettled.is_empty(), "{unsettled:?}");
    // Removing again removes nothing.
    let again = store
        .remove_executions(&[executions[0].execution_id])
        .await
        .expect("remove");
    assert_eq!(again, 0);
    assert_eq!(
        store
            .count_executions(first_job.job_id)
            .await
            .expect("count"),
        5
    );
}

async fn stored_job(store: &dyn Store, job: &Job) -> Job {
    store
        .get_job(&job.task_id, job.job_id)
        .await
        .expect("get")
        .expect("job")
}

/// Every write of a job is conditional on the version read: a stale copy is refused with
/// `Conflict` and changes nothing, whether written by `update_job` or replaced by a PUT
/// (`create_job` of an existing job); each write stores the next version.
async fn job_versions(store: &dyn Store) {
    let job = job(&format!("versions-{}", Uuid::new_v4().simple()));
    store.create_job(&job, None).await.expect("create");
    let first = stored_job(store, &job).await;
    assert_eq!(first.version, 0);
    let mut stopped = first.clone();
    stopped.metadata.retry_count = 99;
    stopped.schedule = None;
    store.update_job(&stopped).await.expect("first writer");
    assert_eq!(stored_job(store, &job).await.version, 1);
    // A writer that read version 0 (a retry deciding before the stop) loses.
    let mut stale = first.clone();
    stale.metadata.retry_count = 1;
    match store.update_job(&stale).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("stale write must be refused, got {other:?}"),
    }
    let mut replaced = first.clone();
    replaced.command = "echo replaced".into();
    let replacing_run = execution(&replaced, Timestamp::now().0);
    match store.create_job(&replaced, Some(&replacing_run)).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("stale replacement must be refused, got {other:?}"),
    }
    assert_eq!(
        store.count_executions(job.job_id).await.expect("count"),
        0,
        "a refused replacement leaves no execution behind"
    );
    let now = stored_job(store, &job).await;
    assert_eq!(
        (now.version, now.metadata.retry_count, now.command.as_str()),
        (1, 99, "echo hi"),
        "nothing of the stale writes is stored"
    );
    // Read again, decided again: written.
    replaced.version = now.version;
    store
        .create_job(&replaced, None)
        .await
        .expect("current replacement");
    let after = stored_job(store, &job).await;
    assert_eq!(
        (after.version, after.command.as_str()),
        (2, "echo replaced")
    );
    store.update_job(&after).await.expect("current write");
    assert_eq!(stored_job(store, &job).await.version, 3);
    let mut gone = job.clone();
    gone.job_id = Uuid::new_v4();
    assert!(matches!(
        store.update_job(&gone).await,
        Err(StoreError::Conflict(_))
    ));
    store.delete_job(job.job_id).await.expect("delete");
}

#[tokio::test]
async fn store_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Embedded::open(dir.path()).expect("open"));
    store_suite(store.clone()).await;
    // As many as a node accepts connections (`MAX_CONNECTIONS`, default 1024): the embedded
    // store's bounded reader queue makes the extra callers wait, none fails. (SecantusDB, on a
    // loaded machine, lets some of 1024 simultaneous finds pass their 10 s timeout.)
    concurrent_output_reads(store, 1024).await;
}

async fn mongo_store(url: &str) -> MongoStore {
    mongo_store_named(url, &format!("fastlane_{}", Uuid::new_v4().simple())).await
}

async fn mongo_store_named(url: &str, database: &str) -> MongoStore {
    let config = serde_json::json!({"host": url, "db": database, "serverSelectionTimeoutMS": 5000});
    let settings = MongoSettings::from_options(&config, None)
        .expect("valid")
        .expect("configured");
    MongoStore::connect(&settings)
        .await
        .expect("mongo reachable")
}

#[tokio::test]
async fn store_mongodb_secantus() {
    let store = mongo_store(&env("FASTLANE_TEST_SECANTUS_URL")).await;
    store_suite(Arc::new(store.clone())).await;
    store.drop_database().await.expect("drop");
}

/// Against a real MongoDB, when one is given.
#[tokio::test]
async fn store_mongodb_real() {
    let Ok(url) = std::env::var("FASTLANE_TEST_MONGODB_URL") else {
        eprintln!("FASTLANE_TEST_MONGODB_URL not set: no real MongoDB to run the suite against");
        return;
    };
    let store = mongo_store(&url).await;
    store_suite(Arc::new(store.clone())).await;
    store.drop_database().await.expect("drop");
}

/// A job stored before versions existed reads as version 0, takes a write conditional on 0
/// (then has version 1) and refuses a stale one, like any other.
async fn unversioned_job_is_version_zero(store: &dyn Store, job: &Job) {
    let read = stored_job(store, job).await;
    assert_eq!(read.version, 0);
    store.update_job(&read).await.expect("write on version 0");
    assert_eq!(stored_job(store, job).await.version, 1);
    assert!(matches!(
        store.update_job(&read).await,
        Err(StoreError::Conflict(_))
    ));
}

/// Rows and documents written before job versions existed (no `version` anywhere) keep
/// working, on the embedded store and on MongoDB (SecantusDB).
#[tokio::test]
async fn jobs_stored_without_a_version_keep_working() {
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = Embedded::open(dir.path()).expect("open");
    let job = job(&format!("legacy-{}", Uuid::new_v4().simple()));
    embedded.create_job(&job, None).await.expect("create");
    let connection =
        rusqlite::Connection::open(dir.path().join("fastlane.sqlite3")).expect("sqlite");
    let stripped = connection
        .execute(
            "UPDATE jobs SET record = json_remove(record, '$.version') WHERE job_id = ?1",
            [job.job_id.to_string()],
        )
        .expect("strip the version");
    assert_eq!(stripped, 1);
    unversioned_job_is_version_zero(&embedded, &job).await;

    let url = env("FASTLANE_TEST_SECANTUS_URL");
    let database = format!("fastlane_{}", Uuid::new_v4().simple());
    let mongo = mongo_store_named(&url, &database).await;
    mongo.create_job(&job, None).await.expect("create");
    let client = mongodb::Client::with_uri_str(&url).await.expect("client");
    let jobs = client
        .database(&database)
        .collection::<mongodb::bson::Document>("jobs");
    let stripped = jobs
        .update_one(
            mongodb::bson::doc! {"_id": job.job_id.to_string()},
            mongodb::bson::doc! {"$unset": {"version": "", "record.version": ""}},
        )
        .await
        .expect("strip the version");
    assert_eq!(stripped.modified_count, 1);
    unversioned_job_is_version_zero(&mongo, &job).await;
    mongo.drop_database().await.expect("drop");
}

#[test]
fn redis_urls() {
    use fred::types::config::ServerConfig;
    let sentinel = parse_url("redis+sentinel://:secret@10.0.0.1:26379,10.0.0.2:26380/mymaster/2")
        .expect("sentinel");
    assert_eq!(sentinel.password.as_deref(), Some("secret"));
    assert_eq!(sentinel.database, Some(2));
    match &sentinel.server {
        ServerConfig::Sentinel {
            hosts,
            service_name,
        } => {
            assert_eq!(service_name, "mymaster");
            assert_eq!(hosts.len(), 2);
            assert_eq!(hosts[1].port, 26380);
        }
        other => panic!("{other:?}"),
    }
    let cluster = parse_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001").expect("cluster");
    assert!(
        matches!(cluster.server, ServerConfig::Clustered { ref hosts, .. } if hosts.len() == 2)
    );
    let plain = parse_url("redis://10.0.0.1:6380/3").expect("plain");
    assert!(matches!(plain.server, ServerConfig::Centralized { .. }));
    assert_eq!(plain.database, Some(3));
    assert!(parse_url("rediss://10.0.0.1:6380/0")
        .expect("tls")
        .tls
        .is_some());
    for bad in [
        "10.0.0.1:6379",
        "http://10.0.0.1",
        "redis+sentinel://10.0.0.1/mymaster",
        "redis+sentinel://10.0.0.1:notaport/mymaster",
        "redis+cluster://10.0.0.1:7000/3",
        "redis://10.0.0.1:1,10.0.0.2:2",
    ] {
        assert!(parse_url(bad).is_err(), "{bad} accepted");
    }
}

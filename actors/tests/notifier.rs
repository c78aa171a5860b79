//! The NotifierActor against the in-memory store and a scripted webhook client, on the real
//! clock (due times are wall-clock timestamps): retries with one delivery id until delivered or
//! out of attempts, a claim left by a crash on the last attempt, two notifiers on one store.
//!
//! `cargo test -p fastlane-actors --test notifier`

mod fakes;

use async_trait::async_trait;
use fakes::queue::FakeQueue;
use fakes::store::FakeStore;
use fakes::{job, FakeReporter};
use fastlane_actors::notifier::{NotifierActor, DELIVERY_ID_HEADER, UNSETTLED_CLAIMS};
use fastlane_actors::ports::{
    Email, Mailer, Store, WebhookClient, WebhookError, WebhookRequest, WebhookResponse,
};
use fastlane_actors::{Services, Settings};
use fastlane_proto::model::Backoff;
use fastlane_proto::outbox::{owed, OwedNotification};
use fastlane_proto::redact::Redactor;
use fastlane_proto::{Execution, ExecutionStatus, Timestamp};
use ractor::Actor;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Answers each call to a URL with the next status scripted for it (200 once that script is used
/// up) and records every request.
#[derive(Default)]
struct ScriptedWebhooks {
    statuses: Mutex<HashMap<String, VecDeque<u16>>>,
    calls: Mutex<Vec<WebhookRequest>>,
}

#[async_trait]
impl WebhookClient for ScriptedWebhooks {
    async fn send(&self, request: &WebhookRequest) -> Result<WebhookResponse, WebhookError> {
        self.calls.lock().unwrap().push(request.clone());
        let status = self
            .statuses
            .lock()
            .unwrap()
            .get_mut(&request.url)
            .and_then(VecDeque::pop_front)
            .unwrap_or(200);
        Ok(WebhookResponse {
            status,
            body: String::new(),
        })
    }
}

struct NoMailer;

#[async_trait]
impl Mailer for NoMailer {
    fn configured(&self) -> bool {
        false
    }

    async fn send(&self, _email: &Email) -> Result<(), String> {
        Err("no SMTP server in these tests".into())
    }
}

fn services(store: Arc<FakeStore>, webhooks: Arc<ScriptedWebhooks>) -> Services {
    let queue = Arc::new(FakeQueue::default());
    Services {
        store,
        slots: queue.slots.clone(),
        blacklist: queue.blacklist.clone(),
        queue,
        webhooks,
        mailer: Arc::new(NoMailer),
        reporter: Arc::new(FakeReporter::default()),
        settings: Arc::new(Settings {
            role: fastlane_actors::Role::All,
            node_id: "notifier-tests".into(),
            previous_consumers: Vec::new(),
            lease_duration: fastlane_actors::ports::LEASE_DURATION,
            deployment_id: "notifier-tests".into(),
            container_lookup_limit: std::time::Duration::from_secs(600),
            reaper_interval: None,
            reaper_grace: std::time::Duration::from_secs(60),
            max_stop_grace: std::time::Duration::from_secs(300),
            retention: Default::default(),
            push_unfinished_periodically: true,
            farms: Vec::new(),
            hard_timeout_seconds: 3_600,
            job_details_output_max_bytes: 0,
            redactor: Redactor::default(),
            max_in_flight: 1,
            default_backoff: Backoff {
                min_ms: 1_000,
                factor: 2.0,
                max_ms: 3_600_000,
            },
            webhook_backoff_min_ms: 50,
            webhook_backoff_factor: 2.0,
            public_url: "http://localhost:10000".into(),
            queue_sweep_interval: None,
        }),
    }
}

/// Stores a finished execution of a job with `hooks` as its `finishes` list, owing them.
async fn finished_with_hooks(store: &FakeStore, hooks: serde_json::Value) -> Execution {
    let mut job = job(60, 0, None);
    job.metadata.webhooks = serde_json::json!({ "finishes": hooks });
    let mut execution = Execution::new(&job, None, Timestamp::now());
    store.seed(&job, &[&execution]);
    execution.status = ExecutionStatus::Done;
    execution.outbox = owed(&job, &execution, Timestamp::now());
    store
        .update_execution(&execution, None)
        .await
        .expect("stored");
    execution
}

async fn outbox(store: &FakeStore, execution: &Execution) -> Vec<OwedNotification> {
    let outbox = store.get_outbox(execution.execution_id).await.unwrap();
    outbox.expect("an outbox").entries
}

/// Polls `condition` every 50 ms for up to 30 s of real time.
async fn within(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three cases in one test, so the 1 s rounds are waited for once: a hook answering 500, 503,
/// then 200 is called three times with one `Fastlane-Delivery-Id` (its entry's id), each attempt
/// recorded, and ends `delivered`; a delivery claimed by senders that died is sent again within
/// the allowance for unsettled claims and abandoned without a call after it; two notifiers on
/// one store call each of 20 hooks once.
#[tokio::test]
async fn deliveries_retry_settle_and_are_claimed_once() {
    let store = Arc::new(FakeStore::default());
    let webhooks = Arc::new(ScriptedWebhooks::default());
    // Two failures, then success: three calls of one delivery, one id.
    webhooks
        .statuses
        .lock()
        .unwrap()
        .insert("http://hooks/retried".into(), VecDeque::from([500, 503]));
    let retried = finished_with_hooks(
        &store,
        serde_json::json!([{"url": "http://hooks/retried", "retries": 5}]),
    )
    .await;
    // Claims of a delivery by senders that died: sent again while the allowance for unsettled
    // claims lasts, abandoned without a call after it.
    let crashed = finished_with_hooks(
        &store,
        serde_json::json!([{"url": "http://hooks/crashed"}, {"url": "http://hooks/crashed-once"}]),
    )
    .await;
    let mut entries = outbox(&store, &crashed).await;
    entries[0].attempts = entries[0].max_attempts + UNSETTLED_CLAIMS;
    entries[1].attempts = entries[1].max_attempts;
    let version = store
        .get_outbox(crashed.execution_id)
        .await
        .unwrap()
        .unwrap()
        .version;
    assert!(store
        .replace_outbox(crashed.execution_id, version, &entries)
        .await
        .unwrap());
    // Many deliveries, two notifiers: each delivery sent once.
    let hooks: Vec<_> = (0..20)
        .map(|n| serde_json::json!({"url": format!("http://hooks/many/{n}")}))
        .collect();
    let many = finished_with_hooks(&store, serde_json::Value::Array(hooks)).await;

    let (first, first_handle) = Actor::spawn(
        None,
        NotifierActor,
        services(store.clone(), webhooks.clone()),
    )
    .await
    .unwrap();
    let (second, second_handle) = Actor::spawn(
        None,
        NotifierActor,
        services(store.clone(), webhooks.clone()),
    )
    .await
    .unwrap();
    within("every delivery settled", async || {
        let mut settled = true;
        for execution in [&retried, &crashed, &many] {
            settled &= outbox(&store, execution)
                .await
                .iter()
                .all(|entry| entry.next_at.is_none());
        }
        settled
    })
    .await;
    first.stop(None);
    second.stop(None);
    let _ = (first_handle.await, second_handle.await);

    let calls = webhooks.calls.lock().unwrap().clone();
    let to = |url: &str| -> Vec<&WebhookRequest> {
        calls.iter().filter(|call| call.url == url).collect()
    };
    let retried_calls = to("http://hooks/retried");
    assert_eq!(retried_calls.len(), 3);
    let ids: Vec<&String> = retried_calls
        .iter()
        .map(|call| &call.headers[DELIVERY_ID_HEADER])
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let entry = &outbox(&store, &retried).await[0];
    assert_eq!(
        (entry.attempts, entry.outcome.as_deref()),
        (3, Some("delivered"))
    );
    assert_eq!(ids[0], &entry.id.to_string());
    let recorded = store
        .execution(retried.execution_id)
        .unwrap()
        .metadata
        .webhook_dispatch;
    let codes: Vec<_> = recorded
        .iter()
        .map(|attempt| (attempt["attempt"].clone(), attempt["statusCode"].clone()))
        .collect();
    assert_eq!(
        codes,
        [
            (1.into(), 500.into()),
            (2.into(), 503.into()),
            (3.into(), 200.into())
        ]
    );

    assert!(to("http://hooks/crashed").is_empty());
    let entries = outbox(&store, &crashed).await;
    assert_eq!(
        entries[0].outcome.as_deref(),
        Some("abandoned: no attempts left")
    );
    assert_eq!(to("http://hooks/crashed-once").len(), 1);
    assert_eq!(entries[1].outcome.as_deref(), Some("delivered"));

    for n in 0..20 {
        assert_eq!(to(&format!("http://hooks/many/{n}")).len(), 1, "hook {n}");
    }
}

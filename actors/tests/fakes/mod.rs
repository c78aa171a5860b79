//! In-memory ports and a harness that runs the real actors against them: a GateActor under its
//! registered name, one HostActor per fake Docker host, a probe in the NotifierActor's place,
//! and JobActors spawned per delivery as the RootActor spawns them (registered as
//! `job-{execution_id}`).
//!
//! ractor's registry is process-global, so [`scenario`] runs one test at a time and always
//! stops the actors it started, even when the test fails (the test body runs in a task of its
//! own, whose panic is caught, the actors stopped, and the panic resumed).

// Each test file uses part of the fakes; what one file leaves unused is not dead.
#![allow(dead_code)]

pub mod queue;
pub mod runtime;
pub mod store;

use async_trait::async_trait;
use fastlane_actors::gate::GateActor;
use fastlane_actors::host::{HostActor, HostArgs};
use fastlane_actors::job::{JobActor, JobArgs};
use fastlane_actors::messages::{
    job_actor_name, HostMessage, JobMessage, NotifierMessage, GATE_NAME, NOTIFIER_NAME,
};
use fastlane_actors::ports::{
    Delivery, Email, ErrorReporter, Mailer, QueueMessage, WebhookClient, WebhookError,
    WebhookRequest, WebhookResponse,
};
use fastlane_actors::{Services, Settings};
use fastlane_proto::farm::{DockerEndpoint, Farm};
use fastlane_proto::model::Backoff;
use fastlane_proto::redact::Redactor;
use fastlane_proto::{Execution, Job, JobMetadata, Timestamp};
use queue::FakeQueue;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use runtime::FakeRuntime;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::FakeStore;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The hard execution timeout of the harness's settings (the wait limit derives from it).
pub const HARD_TIMEOUT_SECONDS: u64 = 3_600;
/// The deployment id of the harness's settings (the label its containers carry).
pub const DEPLOYMENT_ID: &str = "jobtests-deployment";
/// How long a JobActor waits for a silent recorded host (`CONTAINER_LOOKUP_TIMEOUT_SECONDS`).
pub const CONTAINER_LOOKUP_LIMIT: Duration = Duration::from_secs(600);
/// The task every test job belongs to (the harness's one farm takes every task).
pub const TASK_ID: &str = "jobtests";
/// How long a test waits for a condition, in (paused) tokio time.
pub const PATIENCE: Duration = Duration::from_secs(600);

/// Webhooks go nowhere: no NotifierActor runs in these tests.
struct NoWebhooks;

#[async_trait]
impl WebhookClient for NoWebhooks {
    async fn send(&self, _request: &WebhookRequest) -> Result<WebhookResponse, WebhookError> {
        Err(WebhookError::Failed(
            "webhooks are not sent in these tests".into(),
        ))
    }
}

/// No SMTP server is configured.
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

/// Records what would have gone to the error tracker.
#[derive(Default)]
pub struct FakeReporter {
    reports: Mutex<Vec<(String, BTreeMap<String, String>)>>,
}

impl FakeReporter {
    pub fn reports(&self) -> Vec<(String, BTreeMap<String, String>)> {
        self.reports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl ErrorReporter for FakeReporter {
    fn report(&self, message: &str, extra: &BTreeMap<String, String>) {
        self.reports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((message.to_string(), extra.clone()));
    }
}

/// What a JobActor told the notifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    Started(Uuid),
    Ended(Uuid),
}

type Notices = Arc<Mutex<Vec<Notice>>>;

/// Stands in for the NotifierActor under its registered name: records what it is told.
struct NotifierProbe;

impl Actor for NotifierProbe {
    type Msg = NotifierMessage;
    type State = Notices;
    type Arguments = Notices;

    async fn pre_start(
        &self,
        _myself: ActorRef<NotifierMessage>,
        notices: Notices,
    ) -> Result<Notices, ActorProcessingErr> {
        Ok(notices)
    }

    async fn handle(
        &self,
        _myself: ActorRef<NotifierMessage>,
        message: NotifierMessage,
        notices: &mut Notices,
    ) -> Result<(), ActorProcessingErr> {
        let notice = match message {
            NotifierMessage::Started { execution_id, .. } => Notice::Started(execution_id),
            NotifierMessage::Ended { execution_id, .. } => Notice::Ended(execution_id),
            NotifierMessage::Deliver | NotifierMessage::Tick => return Ok(()),
        };
        notices
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(notice);
        Ok(())
    }
}

/// The actors of one test and the fakes behind them.
pub struct Harness {
    pub store: Arc<FakeStore>,
    pub queue: Arc<FakeQueue>,
    pub reporter: Arc<FakeReporter>,
    pub services: Services,
    /// The fake Docker hosts, in the farm's order.
    pub runtimes: Vec<Arc<FakeRuntime>>,
    hosts: Vec<(DockerEndpoint, ActorRef<HostMessage>)>,
    notices: Notices,
    /// Every actor started, to stop at the end.
    started: Mutex<Vec<(ractor::ActorCell, JoinHandle<()>)>>,
}

/// ractor names are process-global: one scenario at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `body` against a fresh harness with `runtimes` as the farm's hosts, then stops every
/// actor, whether `body` passed or panicked.
pub async fn scenario<Body, Fut>(runtimes: Vec<FakeRuntime>, body: Body)
where
    Body: FnOnce(Arc<Harness>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _serial = SERIAL.lock().await;
    let harness = Arc::new(Harness::start(runtimes).await);
    let outcome = tokio::spawn(body(harness.clone())).await;
    harness.shutdown().await;
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("test body did not finish: {error}"),
        }
    }
}

impl Harness {
    async fn start(runtimes: Vec<FakeRuntime>) -> Harness {
        let runtimes: Vec<Arc<FakeRuntime>> = runtimes.into_iter().map(Arc::new).collect();
        let endpoints: Vec<DockerEndpoint> = runtimes
            .iter()
            .map(|runtime| {
                fastlane_actors::ports::ContainerRuntime::endpoint(runtime.as_ref()).clone()
            })
            .collect();
        let settings = Settings {
            role: fastlane_actors::Role::All,
            node_id: "jobtests-node".into(),
            previous_consumers: vec!["jobtests-node".into()],
            lease_duration: fastlane_actors::ports::LEASE_DURATION,
            farms: vec![Farm::new("", endpoints.clone(), 10).expect("catch-all farm")],
            hard_timeout_seconds: HARD_TIMEOUT_SECONDS,
            job_details_output_max_bytes: 0,
            redactor: Redactor::default(),
            max_in_flight: 20,
            default_backoff: Backoff {
                min_ms: 1_000,
                factor: 2.0,
                max_ms: 3_600_000,
            },
            webhook_backoff_min_ms: 1_000,
            webhook_backoff_factor: 2.0,
            public_url: "http://localhost:10000".into(),
            queue_sweep_interval: None,
            deployment_id: DEPLOYMENT_ID.into(),
            container_lookup_limit: CONTAINER_LOOKUP_LIMIT,
            reaper_interval: None,
            reaper_grace: Duration::from_secs(60),
            max_stop_grace: Duration::from_secs(300),
            retention: Default::default(),
            push_unfinished_periodically: true,
        };
        let store = Arc::new(FakeStore::default());
        let queue = Arc::new(FakeQueue::default());
        let reporter = Arc::new(FakeReporter::default());
        let services = Services {
            store: store.clone(),
            queue: queue.clone(),
            slots: queue.slots.clone(),
            blacklist: queue.blacklist.clone(),
            webhooks: Arc::new(NoWebhooks),
            mailer: Arc::new(NoMailer),
            reporter: reporter.clone(),
            settings: Arc::new(settings),
        };
        let mut started = Vec::new();
        let (gate, gate_handle) =
            Actor::spawn(Some(GATE_NAME.to_string()), GateActor, services.clone())
                .await
                .expect("the gate starts (is a previous test's gate still registered?)");
        started.push((gate.get_cell(), gate_handle));
        let notices = Notices::default();
        let (notifier, notifier_handle) = Actor::spawn(
            Some(NOTIFIER_NAME.to_string()),
            NotifierProbe,
            notices.clone(),
        )
        .await
        .expect("the notifier probe starts");
        started.push((notifier.get_cell(), notifier_handle));
        let mut hosts = Vec::new();
        for (endpoint, runtime) in endpoints.into_iter().zip(&runtimes) {
            let args = HostArgs {
                runtime: runtime.clone(),
                breaker_max_fails: 3,
                breaker_reset_timeout: Duration::from_secs(30),
            };
            let (host, handle) = Actor::spawn(None, HostActor, args)
                .await
                .expect("a host actor starts");
            started.push((host.get_cell(), handle));
            hosts.push((endpoint, host));
        }
        Harness {
            store,
            queue,
            reporter,
            services,
            runtimes,
            hosts,
            notices,
            started: Mutex::new(started),
        }
    }

    /// Starts the JobActor of `execution_id`'s message, delivered for the `deliveries`-th time,
    /// registered under its name as the RootActor does it.
    pub async fn deliver(&self, execution: &Execution, deliveries: u32) -> JobRun {
        let delivery = Delivery {
            message: QueueMessage::run(execution),
            deliveries,
        };
        let args = JobArgs {
            services: self.services.clone(),
            delivery,
            hosts: self.hosts.clone(),
        };
        let name = job_actor_name(execution.execution_id);
        let (actor, handle) = Actor::spawn(Some(name), JobActor, args)
            .await
            .expect("the job actor starts");
        let shared = Arc::new(tokio::sync::Mutex::new(Some(handle)));
        self.started
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((actor.get_cell(), tokio::spawn(wait_for(shared.clone()))));
        JobRun {
            actor,
            handle: shared,
        }
    }

    /// What JobActors told the notifier so far, in order.
    pub fn notices(&self) -> Vec<Notice> {
        self.notices
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Stops every actor started and waits until each is gone (its name free again).
    async fn shutdown(&self) {
        let started: Vec<_> = self
            .started
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .drain(..)
            .collect();
        for (cell, _) in &started {
            cell.stop(Some("test over".into()));
        }
        for (cell, handle) in started {
            if tokio::time::timeout(PATIENCE, handle).await.is_err() {
                panic!("actor {:?} did not stop", cell.get_name());
            }
        }
    }
}

/// Awaits a JobActor's join handle, whoever gets to it first (the test or the shutdown).
async fn wait_for(handle: Arc<tokio::sync::Mutex<Option<JoinHandle<()>>>>) {
    let mut handle = handle.lock().await;
    if let Some(running) = handle.take() {
        let _ = running.await;
    }
}

/// A JobActor started by [`Harness::deliver`].
pub struct JobRun {
    pub actor: ActorRef<JobMessage>,
    handle: Arc<tokio::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl JobRun {
    /// Waits until the JobActor has stopped (it stops itself once it is done with its message).
    pub async fn finished(&self) {
        if tokio::time::timeout(PATIENCE, wait_for(self.handle.clone()))
            .await
            .is_err()
        {
            panic!("the job actor did not finish within {PATIENCE:?}");
        }
    }
}

/// Polls `condition` every 100 ms of tokio time until it holds; panics with `what` after
/// [`PATIENCE`]. Under a paused clock the runtime skips ahead whenever everything is idle, so
/// this costs no real time.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A job of [`TASK_ID`] with `timeout` seconds and `retries` retries.
pub fn job(timeout: u64, retries: u32, backoff: Option<Backoff>) -> Job {
    let now = Timestamp::now();
    Job {
        task_id: TASK_ID.into(),
        job_id: Uuid::new_v4(),
        image: "alpine:3".into(),
        command: "echo hello".into(),
        request_ip: None,
        metadata: JobMetadata {
            retries,
            retry_count: 0,
            emails: serde_json::Value::Null,
            webhooks: serde_json::Value::Null,
            expiration: None,
            timeout,
            envs: BTreeMap::new(),
            additional_dns_entries: Vec::new(),
            custom: None,
            enqueued_id: None,
            cron: None,
            max_concurrent: None,
            container: Default::default(),
            backoff,
        },
        scheduled: false,
        schedule: None,
        created_at: now,
        last_modified_at: now,
        version: 0,
        pending: Vec::new(),
    }
}

/// Stores `job` with a new enqueued execution, as an enqueue does, and returns the execution.
pub fn enqueue(store: &FakeStore, job: &Job) -> Execution {
    let execution = Execution::new(job, None, Timestamp::now());
    store.seed(job, &[&execution]);
    execution
}

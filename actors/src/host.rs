//! HostActor: owns one Docker host (its [`ContainerRuntime`]), its circuit breaker and its load.
//! Started by the RootActor, one per configured host, and restarted by it when it fails.
//!
//! In: `Run`, `Attach` and `Find` (from a JobActor), `StopContainer`, `Remove`, `Load`, `Status`.
//! Out: progress of each run to its JobActor (`ImageReady`, `Started`, `Exited`, `Failed`), and
//! the answer of a `Find` (`Found`).
//!
//! Container operations can take minutes, so each run is a spawned task that posts its progress
//! back as messages; the actor's own handlers never wait on Docker.

use crate::log_feed::LogFeed;
use crate::messages::{HostMessage, HostStatus, JobMessage, LogWatch};
use crate::placement::{CircuitBreaker, CircuitState, HostLoad};
use crate::ports::{ContainerRuntime, ContainerSpec, RuntimeError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct HostActor;

pub struct HostArgs {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub breaker_max_fails: u32,
    pub breaker_reset_timeout: Duration,
}

pub struct HostState {
    runtime: Arc<dyn ContainerRuntime>,
    breaker: CircuitBreaker,
    /// Keys (container names or ids) of the runs in progress.
    running: HashSet<String>,
    last_error: Option<String>,
    probing: bool,
    last_probe: Instant,
    /// Whether the engine answered its last liveness ping ([`LIVENESS_INTERVAL`]), and why not:
    /// `/status/` shows a dead engine within seconds, whatever the breaker's settings.
    reachable: Result<(), String>,
    pinging: bool,
    /// Log feeds of watched containers (`log_feed.rs`: each ends when its last watcher left).
    feeds: HashMap<String, Arc<LogFeed>>,
    /// Numbers the feeds, so that an old feed's end cannot remove its successor.
    feed_generation: u64,
}

/// How often a half-open circuit is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How often a host with a closed circuit is pinged.
const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
/// How often the engine is pinged for `/status/` (on the probe timer), and how long it may take
/// to answer: a dead or hung engine shows as unavailable within their sum (under 5 s). These
/// pings do not feed the breaker (a slow answer under load is not a host fault).
const LIVENESS_INTERVAL: Duration = PROBE_INTERVAL;
const LIVENESS_TIMEOUT: Duration = Duration::from_millis(2_500);

impl Actor for HostActor {
    type Msg = HostMessage;
    type State = HostState;
    type Arguments = HostArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HostMessage>,
        args: HostArgs,
    ) -> Result<HostState, ActorProcessingErr> {
        myself.send_interval(PROBE_INTERVAL, || HostMessage::Probe);
        debug_assert!(LIVENESS_INTERVAL + LIVENESS_TIMEOUT < Duration::from_secs(5));
        Ok(HostState {
            runtime: args.runtime,
            breaker: CircuitBreaker::new(args.breaker_max_fails, args.breaker_reset_timeout),
            running: HashSet::new(),
            last_error: None,
            probing: false,
            last_probe: Instant::now(),
            reachable: Ok(()),
            pinging: false,
            feeds: HashMap::new(),
            feed_generation: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<HostMessage>,
        message: HostMessage,
        state: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HostMessage::Run {
                spec,
                wait_limit,
                job,
            } => state.run(myself, *spec, wait_limit, job),
            HostMessage::Attach {
                container_id,
                wait_limit,
                job,
            } => state.attach(myself, container_id, wait_limit, job),
            HostMessage::Find { name, job } => state.find(myself, name, job),
            HostMessage::StopContainer {
                container_id,
                grace,
            } => state.stop(myself, container_id, grace),
            HostMessage::Remove { container_id } => state.remove(myself, container_id),
            HostMessage::RunEnded { key, fault } => {
                state.running.remove(&key);
                state.observe(fault);
            }
            HostMessage::Observed { fault } => state.observe(fault),
            HostMessage::Probed { fault } => {
                state.probing = false;
                state.observe(fault);
            }
            HostMessage::Load(reply) => {
                let _ = reply.send(state.load());
            }
            HostMessage::Status(reply) => {
                let _ = reply.send(state.status());
            }
            HostMessage::Probe => {
                state.ping(myself.clone());
                state.probe(myself)
            }
            HostMessage::Pinged { fault } => {
                state.pinging = false;
                if let (Some(error), Ok(())) = (&fault, &state.reachable) {
                    tracing::warn!(host = %state.runtime.endpoint(), %error, "docker host does not answer its ping");
                }
                state.reachable = fault.map_or(Ok(()), Err);
            }
            HostMessage::Watch {
                container_id,
                reply,
            } => state.watch(myself, container_id, reply).await,
            HostMessage::FeedEnded {
                container_id,
                generation,
            } => {
                if state
                    .feeds
                    .get(&container_id)
                    .is_some_and(|feed| feed.generation == generation)
                {
                    state.feeds.remove(&container_id);
                }
            }
        }
        Ok(())
    }
}

impl HostState {
    fn load(&self) -> HostLoad {
        HostLoad {
            available: self.breaker.state(Instant::now()) == CircuitState::Closed,
            running: self.running.len(),
        }
    }

    fn status(&self) -> HostStatus {
        let circuit = self.breaker.state(Instant::now());
        let mut containers: Vec<String> = self.running.iter().cloned().collect();
        containers.sort();
        let error = match (&self.reachable, circuit) {
            (Err(error), _) => Some(error.clone()),
            (Ok(()), CircuitState::Closed) => None,
            (Ok(()), _) => self.last_error.clone(),
        };
        HostStatus {
            endpoint: self.runtime.endpoint().clone(),
            containers,
            available: circuit == CircuitState::Closed && self.reachable.is_ok(),
            circuit,
            running: self.running.len(),
            error,
        }
    }

    async fn watch(
        &mut self,
        myself: ActorRef<HostMessage>,
        container_id: String,
        reply: RpcReplyPort<Result<LogWatch, RuntimeError>>,
    ) {
        // A feed given up for lack of watchers (its end message may still be on its way) is
        // replaced by a new stream.
        if let Some(watch) = self
            .feeds
            .get(&container_id)
            .and_then(|feed| feed.subscribe())
        {
            let _ = reply.send(Ok(watch));
            return;
        }
        // Starting the stream is quick (one inspect); the stream itself runs in a task.
        let chunks = match self.runtime.follow_logs(&container_id).await {
            Ok(chunks) => chunks,
            Err(error) => {
                let _ = reply.send(Err(error));
                return;
            }
        };
        self.feed_generation += 1;
        let (feed, watch) = LogFeed::new(self.feed_generation);
        self.feeds.insert(container_id.clone(), feed.clone());
        let _ = reply.send(Ok(watch));
        tokio::spawn(feed.run(chunks, myself, container_id));
    }

    /// Pings the engine for `/status/` (one ping at a time, [`LIVENESS_TIMEOUT`]).
    fn ping(&mut self, myself: ActorRef<HostMessage>) {
        if self.pinging {
            return;
        }
        self.pinging = true;
        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            let fault = match tokio::time::timeout(LIVENESS_TIMEOUT, runtime.ping()).await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(_) => Some(format!(
                    "the engine did not answer a ping within {} ms",
                    LIVENESS_TIMEOUT.as_millis()
                )),
            };
            let _ = myself.cast(HostMessage::Pinged { fault });
        });
    }

    /// A half-open circuit is probed at once; a closed one every [`HEALTH_INTERVAL`], so a host
    /// that died while idle shows as unavailable before a job finds out.
    fn probe(&mut self, myself: ActorRef<HostMessage>) {
        let now = Instant::now();
        let due = match self.breaker.state(now) {
            CircuitState::HalfOpen => true,
            CircuitState::Closed => now.duration_since(self.last_probe) >= HEALTH_INTERVAL,
            CircuitState::Open => false,
        };
        if !due || self.probing {
            return;
        }
        self.probing = true;
        self.last_probe = now;
        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            let fault = runtime.ping().await.err().map(|error| error.to_string());
            let _ = myself.cast(HostMessage::Probed { fault });
        });
    }

    fn observe(&mut self, fault: Option<String>) {
        match fault {
            None => self.breaker.record_success(),
            Some(error) => {
                tracing::warn!(host = %self.runtime.endpoint(), %error, "docker host fault");
                self.breaker.record_fault(Instant::now());
                self.last_error = Some(error);
            }
        }
    }

    fn run(
        &mut self,
        myself: ActorRef<HostMessage>,
        spec: ContainerSpec,
        wait_limit: Duration,
        job: ActorRef<JobMessage>,
    ) {
        let key = spec.name.clone();
        self.running.insert(key.clone());
        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            let result = run_container(runtime.as_ref(), &spec, wait_limit, &job).await;
            report(&myself, &job, key, result);
        });
    }

    fn attach(
        &mut self,
        myself: ActorRef<HostMessage>,
        container_id: String,
        wait_limit: Duration,
        job: ActorRef<JobMessage>,
    ) {
        self.running.insert(container_id.clone());
        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            let result = finish_container(runtime.as_ref(), &container_id, wait_limit, &job).await;
            report(&myself, &job, container_id, result);
        });
    }

    fn find(&self, myself: ActorRef<HostMessage>, name: String, job: ActorRef<JobMessage>) {
        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            let result = runtime.find(&name).await;
            let fault = result.as_ref().err().filter(|error| error.is_host_fault());
            let _ = myself.cast(HostMessage::Observed {
                fault: fault.map(ToString::to_string),
            });
            let _ = job.cast(JobMessage::Found(result));
        });
    }

    fn stop(&self, myself: ActorRef<HostMessage>, container_id: String, grace: Duration) {
        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            let result = runtime.stop(&container_id, grace).await;
            observe_result(&myself, "stop", &container_id, result);
        });
    }

    fn remove(&self, myself: ActorRef<HostMessage>, container_id: String) {
        let runtime = self.runtime.clone();
        tokio::spawn(async move {
            let result = runtime.remove(&container_id).await;
            observe_result(&myself, "remove", &container_id, result);
        });
    }
}

/// Logs a failed container operation and feeds its outcome to the breaker.
fn observe_result(
    host: &ActorRef<HostMessage>,
    operation: &str,
    container_id: &str,
    result: Result<(), RuntimeError>,
) {
    if let Err(error) = &result {
        tracing::warn!(container_id, operation, %error, "container operation failed");
    }
    let fault = result.err().filter(RuntimeError::is_host_fault);
    let _ = host.cast(HostMessage::Observed {
        fault: fault.map(|error| error.to_string()),
    });
}

fn report(
    host: &ActorRef<HostMessage>,
    job: &ActorRef<JobMessage>,
    key: String,
    result: Result<(), RuntimeError>,
) {
    let fault = match &result {
        Err(error) if error.is_host_fault() => Some(error.to_string()),
        _ => None,
    };
    if let Err(error) = result {
        let _ = job.cast(JobMessage::Failed(error));
    }
    let _ = host.cast(HostMessage::RunEnded { key, fault });
}

async fn run_container(
    runtime: &dyn ContainerRuntime,
    spec: &ContainerSpec,
    wait_limit: Duration,
    job: &ActorRef<JobMessage>,
) -> Result<(), RuntimeError> {
    let warnings = runtime.prepare_image(&spec.image).await?;
    let _ = job.cast(JobMessage::ImageReady { warnings });
    let started = runtime.start(spec).await?;
    let container_id = started.container_id.clone();
    let _ = job.cast(JobMessage::Started(started));
    finish_container(runtime, &container_id, wait_limit, job).await
}

async fn finish_container(
    runtime: &dyn ContainerRuntime,
    container_id: &str,
    wait_limit: Duration,
    job: &ActorRef<JobMessage>,
) -> Result<(), RuntimeError> {
    match tokio::time::timeout(wait_limit, runtime.wait(container_id)).await {
        Ok(waited) => waited?,
        Err(_) => {
            return Err(RuntimeError::Rejected(format!(
                "container did not exit within {} seconds",
                wait_limit.as_secs()
            )))
        }
    }
    let exit = runtime.collect(container_id).await?;
    let _ = job.cast(JobMessage::Exited(exit));
    Ok(())
}

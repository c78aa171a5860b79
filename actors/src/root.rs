//! RootActor: the supervisor of the node. Started by `run` in the node crate.
//!
//! The node's supervision tree (drawn here only):
//!
//! ```text
//! RootActor           started by `run`; reconciles the queue with the store before any child
//!                     (which children depends on the node's `Role`: `Api` runs no poller, gate,
//!                     notifier, reaper or sweep; `Worker` no scheduler)
//! ├── ApiActor        "fastlane-api"; answers the gateway's calls; restarted with back-off
//! ├── PollerActor     "fastlane-poller"; leases while there is capacity; restarted with
//! │                   back-off, keeping the in-flight set
//! ├── SchedulerActor  "fastlane-scheduler"; every future firing; restarted, rebuilds its index
//! ├── GateActor       "fastlane-gate"; farm and task slots, FIFO; restarted, waiters ask again
//! ├── NotifierActor   "fastlane-notifier"; webhooks and e-mails; restarted with back-off
//! ├── HostActor × N   one per configured Docker host; restarted with back-off
//! └── JobActor × M    "job-{execution_id}", one per leased message; never restarted: a failed
//!                     one's message is released for a later delivery
//! ```
//!
//! In: `SpawnJob` (from the poller), `Respawn` (its own timers), `HostStatuses`,
//! `PrepareShutdown` (from `run`, before it stops the children).
//! Before anything runs it reconciles the queue with the store (`sweep.rs`): this
//! node's stale leases are released and every unfinished execution is pushed again (pushes are
//! idempotent). The push is repeated every `queue_sweep_interval` while the node runs, in a task
//! of its own, which also ends as `failed` the executions whose messages were dead-lettered.
//! Another task reaps this deployment's containers no unfinished execution owns (`reaper.rs`), and
//! another removes what retention no longer keeps (`retention.rs`).
//!
//! ractor's default supervision stops the parent when any child exits; this actor handles every
//! child kind explicitly instead, so a JobActor finishing normally is just bookkeeping.

use crate::api::{ApiActor, ApiArgs};
use crate::gate::GateActor;
use crate::host::{HostActor, HostArgs};
use crate::job::{JobActor, JobArgs};
use crate::messages::{
    job_actor_name, slots_done, ChildKind, HostMessage, HostStatus, PollerMessage, RootMessage,
    API_NAME, GATE_NAME, LEFT_TO_ANOTHER_RUNNER, NOTIFIER_NAME, POLLER_NAME, SCHEDULER_NAME,
};
use crate::notifier::NotifierActor;
use crate::poller::{PollerActor, PollerArgs};
use crate::ports::{ContainerRuntime, Delivery};
use crate::scheduler::SchedulerActor;
use crate::Services;
use crate::{reaper, retention, sweep};
use fastlane_proto::backoff::capped_exponential;
use fastlane_proto::farm::DockerEndpoint;
use ractor::{
    call_t, Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub struct RootActor;

pub struct RootArgs {
    pub services: Services,
    pub runtimes: Vec<Arc<dyn ContainerRuntime>>,
    pub breaker_max_fails: u32,
    pub breaker_reset_timeout: Duration,
}

pub struct RootState {
    services: Services,
    runtimes: Vec<Arc<dyn ContainerRuntime>>,
    breaker_max_fails: u32,
    breaker_reset_timeout: Duration,
    hosts: Vec<Option<ActorRef<HostMessage>>>,
    poller: Option<ActorRef<PollerMessage>>,
    /// Long-lived children by actor id.
    children: HashMap<ActorId, ChildKind>,
    /// Restart attempts per child since it last ran for a while.
    attempts: HashMap<ChildKind, u32>,
    /// Running JobActors and the message each one owns.
    jobs: HashMap<ActorId, String>,
    stopping: bool,
    /// The periodic sweep (see [`push_unfinished`]), aborted when the root stops.
    sweeper: Option<tokio::task::JoinHandle<()>>,
    /// The container reaper (`reaper.rs`), aborted when the root stops.
    reaper: Option<tokio::task::JoinHandle<()>>,
    /// Retention (`retention.rs`), aborted when the root stops.
    retention: Option<tokio::task::JoinHandle<()>>,
}

const RESTART_MIN_MS: u64 = 100;
const RESTART_MAX_MS: u64 = 30_000;
/// Delay before a message whose JobActor crashed is delivered again.
const CRASHED_JOB_RETRY: Duration = Duration::from_secs(2);

impl Actor for RootActor {
    type Msg = RootMessage;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RootMessage>,
        args: RootArgs,
    ) -> Result<RootState, ActorProcessingErr> {
        sweep::reconcile(&args.services).await?;
        Ok(RootState {
            hosts: vec![None; args.runtimes.len()],
            services: args.services,
            runtimes: args.runtimes,
            breaker_max_fails: args.breaker_max_fails,
            breaker_reset_timeout: args.breaker_reset_timeout,
            poller: None,
            children: HashMap::new(),
            attempts: HashMap::new(),
            jobs: HashMap::new(),
            stopping: false,
            sweeper: None,
            reaper: None,
            retention: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<RootMessage>,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        for index in 0..state.runtimes.len() {
            state.spawn_child(&myself, ChildKind::Host(index)).await?;
        }
        state.spawn_child(&myself, ChildKind::Api).await?;
        let role = state.services.settings.role;
        // The role decides the rest (see `Role`): an api node fires schedules and leases
        // nothing; a worker runs containers and fires nothing.
        if role.serves_api() {
            state.spawn_child(&myself, ChildKind::Scheduler).await?;
        }
        if !role.runs_containers() {
            return Ok(());
        }
        state.spawn_child(&myself, ChildKind::Gate).await?;
        state.spawn_child(&myself, ChildKind::Notifier).await?;
        state.spawn_child(&myself, ChildKind::Poller).await?;
        // Now that the notifier runs: dead letters, then every interval the sweep.
        state.sweeper = Some(tokio::spawn(sweep::run(state.services.clone())));
        state.reaper = Some(tokio::spawn(reaper::run(
            state.services.clone(),
            state.runtimes.clone(),
        )));
        state.retention = Some(tokio::spawn(retention::run(state.services.clone())));
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RootMessage>,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        state.stopping = true;
        if let Some(sweeper) = state.sweeper.take() {
            sweeper.abort();
        }
        if let Some(reaper) = state.reaper.take() {
            reaper.abort();
        }
        if let Some(retention) = state.retention.take() {
            retention.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMessage>,
        message: RootMessage,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMessage::SpawnJob(delivery) => state.spawn_job(&myself, delivery).await,
            RootMessage::Respawn { .. } if state.stopping => {}
            RootMessage::Respawn { child, attempt } => {
                state.attempts.insert(child.clone(), attempt);
                if let Err(error) = state.spawn_child(&myself, child.clone()).await {
                    tracing::error!(?child, %error, "restart failed");
                    state.schedule_respawn(&myself, child);
                }
            }
            RootMessage::HostStatuses(reply) => state.host_statuses(reply),
            RootMessage::HostFor { host, port, reply } => {
                let actor = state
                    .runtimes
                    .iter()
                    .zip(&state.hosts)
                    .find(|(runtime, _)| {
                        runtime.endpoint().host() == host && runtime.endpoint().port() == port
                    })
                    .and_then(|(_, actor)| actor.clone());
                let _ = reply.send(actor);
            }
            RootMessage::PrepareShutdown(reply) => {
                state.stopping = true;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMessage>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if reason.as_deref() == Some(LEFT_TO_ANOTHER_RUNNER) {
                    state.job_left(&cell);
                } else {
                    state.child_ended(&myself, &cell, None)
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                state.child_ended(&myself, &cell, Some(error.to_string()))
            }
            _ => {}
        }
        Ok(())
    }
}

impl RootState {
    async fn spawn_child(
        &mut self,
        myself: &ActorRef<RootMessage>,
        child: ChildKind,
    ) -> Result<(), ActorProcessingErr> {
        let supervisor = myself.get_cell();
        let cell: ActorCell = match &child {
            ChildKind::Host(index) => {
                let args = HostArgs {
                    runtime: self.runtimes[*index].clone(),
                    breaker_max_fails: self.breaker_max_fails,
                    breaker_reset_timeout: self.breaker_reset_timeout,
                };
                let (actor, _) = Actor::spawn_linked(None, HostActor, args, supervisor).await?;
                self.hosts[*index] = Some(actor.clone());
                actor.get_cell()
            }
            ChildKind::Api => {
                let args = ApiArgs {
                    services: self.services.clone(),
                    root: myself.clone(),
                };
                let (actor, _) =
                    Actor::spawn_linked(Some(API_NAME.to_string()), ApiActor, args, supervisor)
                        .await?;
                actor.get_cell()
            }
            ChildKind::Scheduler => {
                let (actor, _) = Actor::spawn_linked(
                    Some(SCHEDULER_NAME.to_string()),
                    SchedulerActor,
                    self.services.clone(),
                    supervisor,
                )
                .await?;
                actor.get_cell()
            }
            ChildKind::Notifier => {
                let (actor, _) = Actor::spawn_linked(
                    Some(NOTIFIER_NAME.to_string()),
                    NotifierActor,
                    self.services.clone(),
                    supervisor,
                )
                .await?;
                actor.get_cell()
            }
            ChildKind::Gate => {
                let (actor, _) = Actor::spawn_linked(
                    Some(GATE_NAME.to_string()),
                    GateActor,
                    self.services.clone(),
                    supervisor,
                )
                .await?;
                actor.get_cell()
            }
            ChildKind::Poller => {
                let args = PollerArgs {
                    services: self.services.clone(),
                    root: myself.clone(),
                    in_flight: self.jobs.values().cloned().collect::<HashSet<_>>(),
                };
                let (actor, _) = Actor::spawn_linked(
                    Some(POLLER_NAME.to_string()),
                    PollerActor,
                    args,
                    supervisor,
                )
                .await?;
                self.poller = Some(actor.clone());
                actor.get_cell()
            }
        };
        self.children.insert(cell.get_id(), child);
        Ok(())
    }

    fn schedule_respawn(&mut self, myself: &ActorRef<RootMessage>, child: ChildKind) {
        let attempt = self.attempts.get(&child).copied().unwrap_or(0) + 1;
        let delay = capped_exponential(RESTART_MIN_MS, 2.0, attempt - 1, RESTART_MAX_MS);
        tracing::warn!(
            ?child,
            attempt,
            delay_ms = delay.as_millis() as u64,
            "restarting actor"
        );
        myself.send_after(delay, move || RootMessage::Respawn { child, attempt });
    }

    async fn spawn_job(&mut self, myself: &ActorRef<RootMessage>, delivery: Delivery) {
        let message_id = delivery.message.id.clone();
        let name = job_actor_name(delivery.message.execution_id);
        if ractor::registry::where_is(name.clone()).is_some() {
            // Leased again while its JobActor still runs it (this node was paused past the
            // lease): the lease is this node's again and the running JobActor keeps the
            // execution. Not a crash: no second JobActor, no failed delivery, no slot release.
            tracing::warn!(%message_id, deliveries = delivery.deliveries, "leased again while running here, keeping the running job actor");
            return;
        }
        let hosts: Vec<(DockerEndpoint, ActorRef<HostMessage>)> = self
            .runtimes
            .iter()
            .zip(&self.hosts)
            .filter_map(|(runtime, actor)| Some((runtime.endpoint().clone(), actor.clone()?)))
            .collect();
        let args = JobArgs {
            services: self.services.clone(),
            delivery,
            hosts,
        };
        match Actor::spawn_linked(Some(name), JobActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.jobs.insert(actor.get_id(), message_id);
            }
            Err(error) => {
                tracing::error!(%message_id, %error, "could not start job actor");
                self.job_gone(
                    message_id,
                    Some(format!("job actor could not start: {error}")),
                );
            }
        }
    }

    fn child_ended(
        &mut self,
        myself: &ActorRef<RootMessage>,
        cell: &ActorCell,
        error: Option<String>,
    ) {
        let id = cell.get_id();
        if let Some(message_id) = self.jobs.remove(&id) {
            if let Some(error) = &error {
                tracing::error!(%message_id, %error, "job actor failed");
                let extra = std::collections::BTreeMap::from([
                    ("operation".to_string(), "JobActor".to_string()),
                    ("execution_id".to_string(), message_id.clone()),
                ]);
                self.services
                    .reporter
                    .report(&format!("job actor failed: {error}"), &extra);
            }
            self.job_gone(message_id, error);
            return;
        }
        let Some(child) = self.children.remove(&id) else {
            return;
        };
        if self.stopping {
            return;
        }
        tracing::error!(
            ?child,
            error = error.as_deref().unwrap_or("stopped"),
            "actor ended"
        );
        if let Some(error) = &error {
            let extra = std::collections::BTreeMap::from([(
                "operation".to_string(),
                format!("actor {child:?}"),
            )]);
            self.services
                .reporter
                .report(&format!("actor {child:?} failed: {error}"), &extra);
        }
        if child == ChildKind::Poller {
            self.poller = None;
        }
        self.schedule_respawn(myself, child);
    }

    /// A JobActor left its execution to another runner (its lease or its claim is gone): the
    /// slots and the message are that runner's now, so neither is released here.
    fn job_left(&mut self, cell: &ActorCell) {
        if let Some(message_id) = self.jobs.remove(&cell.get_id()) {
            tracing::info!(%message_id, "job actor left its execution to another runner");
            if let Some(poller) = &self.poller {
                let _ = poller.cast(PollerMessage::Finished { message_id });
            }
        }
    }

    /// Bookkeeping when a JobActor is gone; a crashed one's message is given back to the queue.
    /// A JobActor ended; `crash` says why when it failed: a failed delivery, which after
    /// [`crate::ports::MAX_FAILED_DELIVERIES`] sends the message to the dead-letter list.
    fn job_gone(&mut self, message_id: String, crash: Option<String>) {
        slots_done(&message_id);
        if let Some(reason) = crash {
            let queue = self.services.queue.clone();
            let id = message_id.clone();
            tokio::spawn(async move {
                match queue.fail(&id, CRASHED_JOB_RETRY, &reason).await {
                    Ok(true) => tracing::error!(message_id = %id, %reason, "message dead-lettered"),
                    Ok(false) => {}
                    Err(error) => {
                        tracing::warn!(message_id = %id, %error, "could not release message")
                    }
                }
            });
        }
        if let Some(poller) = &self.poller {
            let _ = poller.cast(PollerMessage::Finished { message_id });
        }
    }

    fn host_statuses(&self, reply: RpcReplyPort<Vec<HostStatus>>) {
        let hosts: Vec<ActorRef<HostMessage>> = self.hosts.iter().flatten().cloned().collect();
        tokio::spawn(async move {
            let mut statuses = Vec::with_capacity(hosts.len());
            for host in hosts {
                if let Ok(status) = call_t!(host, HostMessage::Status, 2_000) {
                    statuses.push(status);
                }
            }
            let _ = reply.send(statuses);
        });
    }
}

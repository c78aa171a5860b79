//! JobActor: owns one execution from the moment its queue message is leased until its result is
//! stored and the message acknowledged. Spawned by the RootActor for each leased message and
//! registered as `job-{execution_id}`, so a stop request can find it.
//!
//! In: `Begin` (itself), `ImageReady`, `Started`, `Exited`, `Failed` (from its HostActor),
//! `Stop` (ApiActor, SchedulerActor), `Timeout` (its own timer).
//! Out: `Run`/`Attach`/`StopContainer`/`Remove` to a HostActor; store writes; queue ack/release;
//! a retry execution after a failure.
//!
//! Every state change is persisted before the next step, so a crash at any point leaves a record
//! the next delivery continues from (see `design.md`). A write the store refuses (the execution
//! was stopped meanwhile: terminal statuses are final) makes the actor clean up and leave.

use crate::host::HostMessage;
use crate::placement::{least_loaded, HostLoad};
use crate::ports::{
    ContainerExit, ContainerSpec, Delivery, QueueMessage, RuntimeError, StartedContainer,
    StoreError,
};
use crate::Services;
use fastlane_proto::backoff::capped_exponential;
use fastlane_proto::farm::{farm_for, DockerEndpoint};
use fastlane_proto::image::ImageRef;
use fastlane_proto::schedule::retry_execution_id;
use fastlane_proto::{command, Execution, ExecutionStatus, Job, Timestamp};
use ractor::{call_t, Actor, ActorProcessingErr, ActorRef};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::Instrument;
use uuid::Uuid;

/// Messages of the JobActor.
#[derive(Debug)]
pub enum JobMessage {
    /// Look at the execution and start, re-attach or finish it.
    Begin,
    ImageReady {
        warnings: Vec<String>,
    },
    Started(StartedContainer),
    Exited(ContainerExit),
    Failed(RuntimeError),
    /// Stop the execution (user request, replaced by a newer firing, …).
    Stop {
        reason: String,
    },
    /// The execution's timeout passed.
    Timeout,
    /// Look whether another node ended the execution (a stop request it received).
    CheckStore,
    /// The gate granted the execution's farm and task slots.
    SlotsGranted,
    /// Still waiting for slots: ask the gate again (it may have restarted).
    AskSlotsAgain,
}

/// The registered name of the JobActor of `execution_id`.
pub fn job_actor_name(execution_id: Uuid) -> String {
    format!("job-{execution_id}")
}

pub struct JobActor;

pub struct JobArgs {
    pub services: Services,
    pub delivery: Delivery,
    /// The node's hosts, with their actors.
    pub hosts: Vec<(DockerEndpoint, ActorRef<HostMessage>)>,
}

/// Why a running execution is being ended early.
#[derive(Clone, Debug, PartialEq)]
enum Ending {
    Stopped(String),
    TimedOut(String),
}

pub struct JobState {
    services: Services,
    delivery: Delivery,
    hosts: Vec<(DockerEndpoint, ActorRef<HostMessage>)>,
    /// `None` when the message refers to nothing any more (deleted job or execution).
    record: Option<(Job, Execution)>,
    host: Option<ActorRef<HostMessage>>,
    ending: Option<Ending>,
    /// Parked until the gate grants the slots.
    waiting_for_slots: bool,
    /// Hosts that failed this execution before its container existed (placement skips them).
    failed_hosts: Vec<DockerEndpoint>,
    /// The store refused a write: the execution is not ours any more; clean up and leave.
    abandoned: bool,
}

/// Extra time granted past the hard timeout before a wait is abandoned.
const WAIT_MARGIN: Duration = Duration::from_secs(60);
/// Delay before a message whose host failed is delivered again (then growing).
const HOST_RETRY_MIN_MS: u64 = 1_000;
const HOST_RETRY_MAX_MS: u64 = 30_000;
/// SIGTERM → SIGKILL grace for timed-out executions.
const TIMEOUT_GRACE: Duration = Duration::from_secs(1);
/// How often a parked JobActor asks the gate again.
const SLOT_REQUEST_INTERVAL: Duration = Duration::from_secs(5);
/// How often a running execution's stored status is checked for a stop made on another node.
const STORE_CHECK_INTERVAL: Duration = Duration::from_secs(3);
/// SIGTERM → SIGKILL grace for stopped executions.
const STOP_GRACE: Duration = Duration::from_secs(5);

impl Actor for JobActor {
    type Msg = JobMessage;
    type State = JobState;
    type Arguments = JobArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<JobMessage>,
        args: JobArgs,
    ) -> Result<JobState, ActorProcessingErr> {
        let message = &args.delivery.message;
        let store = &args.services.store;
        let record = match store.get_execution(message.execution_id).await? {
            Some(execution) => store
                .get_job(&execution.task_id, execution.job_id)
                .await?
                .map(|job| (job, execution)),
            None => None,
        };
        myself.cast(JobMessage::Begin)?;
        Ok(JobState {
            services: args.services,
            delivery: args.delivery,
            hosts: args.hosts,
            record,
            host: None,
            ending: None,
            waiting_for_slots: false,
            failed_hosts: Vec::new(),
            abandoned: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<JobMessage>,
        message: JobMessage,
        state: &mut JobState,
    ) -> Result<(), ActorProcessingErr> {
        let ids = &state.delivery.message;
        let span = tracing::info_span!("job", task_id = %ids.task_id, job_id = %ids.job_id, execution_id = %ids.execution_id);
        state.handle_message(myself, message).instrument(span).await
    }
}

impl JobState {
    /// One message, inside the span of this execution.
    async fn handle_message(
        &mut self,
        myself: ActorRef<JobMessage>,
        message: JobMessage,
    ) -> Result<(), ActorProcessingErr> {
        let result = if self.abandoned {
            self.abandoned_step(message).await
        } else {
            match message {
                JobMessage::Begin => self.begin(&myself).await,
                JobMessage::ImageReady { warnings } => Ok(self.image_ready(warnings)),
                JobMessage::Started(started) => self.started(&myself, started).await,
                JobMessage::Exited(exit) => self.exited(exit).await,
                JobMessage::Failed(error) => self.failed(&myself, error).await,
                JobMessage::Stop { reason } => self.end_early(Ending::Stopped(reason)).await,
                JobMessage::SlotsGranted if self.waiting_for_slots => {
                    self.waiting_for_slots = false;
                    self.start(&myself).await
                }
                JobMessage::SlotsGranted => Ok(false),
                JobMessage::AskSlotsAgain => Ok(self.ask_for_slots(&myself)),
                JobMessage::CheckStore => self.check_store().await,
                JobMessage::Timeout => {
                    let timeout = self
                        .record
                        .as_ref()
                        .map_or(0, |(job, _)| job.metadata.timeout);
                    self.end_early(Ending::TimedOut(format!(
                        "Job execution timed out after {timeout} seconds."
                    )))
                    .await
                }
            }
        };
        let done = match result {
            Ok(done) => done,
            Err(StepError::Store(StoreError::Conflict(reason))) => {
                tracing::info!(execution_id = %self.delivery.message.execution_id, %reason, "execution ended elsewhere, cleaning up");
                self.abandoned = true;
                self.abandon_now()
            }
            Err(StepError::Store(error)) => return Err(error.into()),
            Err(StepError::Other(error)) => return Err(error),
        };
        if done {
            myself.stop(None);
        }
        Ok(())
    }
}

/// Whether the actor is finished with its execution.
type Finished = bool;

#[derive(Debug)]
enum StepError {
    Store(StoreError),
    Other(ActorProcessingErr),
}

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> Self {
        StepError::Store(error)
    }
}

impl From<ActorProcessingErr> for StepError {
    fn from(error: ActorProcessingErr) -> Self {
        StepError::Other(error)
    }
}

impl From<crate::ports::QueueError> for StepError {
    fn from(error: crate::ports::QueueError) -> Self {
        StepError::Other(error.into())
    }
}

impl<T> From<ractor::MessagingErr<T>> for StepError {
    fn from(error: ractor::MessagingErr<T>) -> Self {
        StepError::Other(error.to_string().into())
    }
}

type Step = Result<Finished, StepError>;

impl JobState {
    fn execution(&mut self) -> &mut Execution {
        &mut self.record.as_mut().expect("record checked in begin").1
    }

    fn container_id(&self) -> Option<String> {
        self.record.as_ref()?.1.metadata.container_id.clone()
    }

    async fn persist(&mut self) -> Result<(), StepError> {
        let execution = self.execution();
        execution.last_modified_at = Timestamp::now();
        let execution = execution.clone();
        self.services.store.update_execution(&execution).await?;
        Ok(())
    }

    /// Reports a failure of this execution to the error tracker, with its context.
    fn report(&self, operation: &str, message: &str) {
        let execution = self.record.as_ref().map(|(_, execution)| execution);
        let extra = report_context(operation, &self.delivery.message, execution);
        self.services.reporter.report(message, &extra);
    }

    /// Tells the notifier the execution started (`true`) or ended.
    fn tell_notifier(&self, started: bool) {
        let message = &self.delivery.message;
        let (task_id, job_id, execution_id) = (
            message.task_id.clone(),
            message.job_id,
            message.execution_id,
        );
        crate::notifier::tell(if started {
            crate::notifier::NotifierMessage::Started {
                task_id,
                job_id,
                execution_id,
            }
        } else {
            crate::notifier::NotifierMessage::Ended {
                task_id,
                job_id,
                execution_id,
            }
        });
    }

    async fn ack(&self) -> Step {
        self.services.queue.ack(&self.delivery.message.id).await?;
        Ok(true)
    }

    /// Gives the message back to the queue for a later try, without consuming the job's retries.
    async fn release(&self) -> Step {
        let delay = capped_exponential(
            HOST_RETRY_MIN_MS,
            2.0,
            self.delivery.deliveries.saturating_sub(1),
            HOST_RETRY_MAX_MS,
        );
        self.services
            .queue
            .release(&self.delivery.message.id, delay)
            .await?;
        Ok(true)
    }

    fn wait_limit(&self) -> Duration {
        Duration::from_secs(self.services.settings.hard_timeout_seconds) + WAIT_MARGIN
    }

    fn host_for(&self, host: &str, port: u16) -> Option<ActorRef<HostMessage>> {
        self.hosts
            .iter()
            .find(|(endpoint, _)| endpoint.host() == host && endpoint.port() == port)
            .map(|(_, actor)| actor.clone())
    }

    fn remove_container(&self) {
        if let (Some(host), Some(container_id)) = (&self.host, self.container_id()) {
            let _ = host.cast(HostMessage::Remove { container_id });
        }
    }

    async fn begin(&mut self, myself: &ActorRef<JobMessage>) -> Step {
        let Some((job, execution)) = &self.record else {
            tracing::warn!(message_id = %self.delivery.message.id, "queue message refers to no execution, dead-lettering it");
            self.services
                .queue
                .dead_letter(
                    &self.delivery.message.id,
                    "the message refers to no stored execution",
                )
                .await?;
            return Ok(true);
        };
        let recorded_host = (
            execution.metadata.docker_host.clone(),
            execution.metadata.docker_port,
            execution.metadata.container_id.clone(),
        );
        if let (Some(host), Some(port)) = (&recorded_host.0, recorded_host.1) {
            self.host = self.host_for(host, port);
        }
        if execution.status.is_terminal() {
            // Finished (or stopped) before this delivery: make sure nothing is left behind.
            if execution.status == ExecutionStatus::Failed {
                self.retry_if_allowed().await?;
            }
            self.remove_container();
            return self.ack().await;
        }
        if execution.status == ExecutionStatus::Enqueued {
            if let Some(expiration) = job.metadata.expiration {
                let now = Timestamp::now();
                if expiration < now.unix_seconds() {
                    let message = format!(
                        "Job was supposed to be done before {}, but was started at {}.",
                        Timestamp::from_unix_seconds(expiration).iso(),
                        Timestamp::from_unix_seconds(now.unix_seconds()).iso()
                    );
                    return self
                        .finish_without_container(ExecutionStatus::Expired, message)
                        .await;
                }
            }
        }
        if let (Some(host), Some(port), Some(container_id)) = recorded_host {
            // Started before a restart: collect it where it runs.
            let Some(actor) = self.host.clone() else {
                return self
                    .finish_without_container(
                        ExecutionStatus::Failed,
                        format!(
                            "Docker host {host}:{port} of this execution is no longer configured."
                        ),
                    )
                    .await;
            };
            tracing::info!(%container_id, "re-attaching to running container");
            // It runs whatever the limits say now; count it.
            let (job, _) = self.record.as_ref().expect("record checked");
            let pools = slot_pools(&self.services.settings, job);
            self.services
                .slots
                .acquire(
                    &self.delivery.message.id,
                    &pools,
                    crate::ports::LEASE_DURATION,
                )
                .await?;
            actor.cast(HostMessage::Attach {
                container_id,
                wait_limit: self.wait_limit(),
                job: myself.clone(),
            })?;
            self.arm_timeout(myself);
            return Ok(false);
        }
        self.waiting_for_slots = true;
        Ok(self.ask_for_slots(myself))
    }

    /// Asks the gate for the farm and task slots, and again every 5 s while waiting.
    fn ask_for_slots(&mut self, myself: &ActorRef<JobMessage>) -> Finished {
        if !self.waiting_for_slots {
            return false;
        }
        let Some((job, _)) = &self.record else {
            return false;
        };
        let pools = slot_pools(&self.services.settings, job);
        if !crate::gate::request(&self.delivery.message.id, pools, myself.clone()) {
            tracing::debug!("gate not available, asking again");
        }
        myself.send_after(SLOT_REQUEST_INTERVAL, || JobMessage::AskSlotsAgain);
        false
    }

    async fn start(&mut self, myself: &ActorRef<JobMessage>) -> Step {
        self.host = None;
        let (job, execution) = self.record.as_ref().expect("record checked in begin");
        let spec = match container_spec(job, execution) {
            Ok(spec) => spec,
            Err(message) => {
                return self
                    .finish_without_container(ExecutionStatus::Failed, message)
                    .await
            }
        };
        let Some((endpoint, host)) = self.place(&job.task_id).await else {
            tracing::info!(task_id = %job.task_id, "no docker host available, will retry");
            return self.release().await;
        };
        let execution = self.execution();
        execution.status = ExecutionStatus::Pulling;
        execution.metadata.docker_host = Some(endpoint.host().to_string());
        execution.metadata.docker_port = Some(endpoint.port());
        self.persist().await?;
        host.cast(HostMessage::Run {
            spec,
            wait_limit: self.wait_limit(),
            job: myself.clone(),
        })?;
        self.host = Some(host);
        Ok(false)
    }

    /// The least loaded available host of the task's farm that is not blacklisted and has not
    /// failed this execution already.
    async fn place(&self, task_id: &str) -> Option<(DockerEndpoint, ActorRef<HostMessage>)> {
        let farm = farm_for(&self.services.settings.farms, task_id)?;
        let blacklist = match self.services.blacklist.list().await {
            Ok(blacklist) => blacklist,
            Err(error) => {
                tracing::warn!(%error, "could not read the blacklist");
                return None;
            }
        };
        let candidates: Vec<&(DockerEndpoint, ActorRef<HostMessage>)> = self
            .hosts
            .iter()
            .filter(|(endpoint, _)| farm.hosts.contains(endpoint))
            .filter(|(endpoint, _)| !blacklist.contains(&endpoint.to_string()))
            .filter(|(endpoint, _)| !self.failed_hosts.contains(endpoint))
            .collect();
        let mut loads = Vec::with_capacity(candidates.len());
        for (_, actor) in &candidates {
            let load = call_t!(actor, HostMessage::Load, 2_000).unwrap_or(HostLoad {
                available: false,
                running: 0,
            });
            loads.push(load);
        }
        least_loaded(&loads).map(|index| candidates[index].clone())
    }

    fn image_ready(&mut self, warnings: Vec<String>) -> Finished {
        self.execution().metadata.warnings.extend(warnings);
        false
    }

    /// Sends `Timeout` when the job's timeout (from the container's start) passes.
    fn arm_timeout(&mut self, myself: &ActorRef<JobMessage>) {
        let Some((job, execution)) = &self.record else {
            return;
        };
        let limit = Duration::from_secs(job.metadata.timeout);
        let started = execution.started_at.unwrap_or_else(Timestamp::now);
        let elapsed = Duration::from_micros((Timestamp::now().0 - started.0).max(0) as u64);
        myself.send_after(limit.saturating_sub(elapsed), || JobMessage::Timeout);
        myself.send_interval(STORE_CHECK_INTERVAL, || JobMessage::CheckStore);
    }

    /// A stop received by another node is written to the store only: end the run here too.
    async fn check_store(&mut self) -> Step {
        let running = self
            .record
            .as_ref()
            .is_some_and(|(_, execution)| !execution.status.is_terminal());
        if !running || self.ending.is_some() {
            return Ok(false);
        }
        let id = self.delivery.message.execution_id;
        let Some(stored) = self.services.store.get_execution(id).await? else {
            return Ok(false);
        };
        if !stored.status.is_terminal() {
            return Ok(false);
        }
        let reason = stored
            .error
            .map(|error| String::from_utf8_lossy(&error).into_owned())
            .unwrap_or_else(|| format!("Job execution was {} by another node.", stored.status));
        self.end_early(Ending::Stopped(reason)).await
    }

    async fn started(&mut self, myself: &ActorRef<JobMessage>, started: StartedContainer) -> Step {
        let execution = self.execution();
        execution.status = ExecutionStatus::Running;
        execution.started_at = Some(Timestamp::now());
        execution.metadata.container_id = Some(started.container_id.clone());
        if self.ending.is_none() {
            self.persist().await?;
            self.arm_timeout(myself);
            self.tell_notifier(true);
        } else if let Some(host) = &self.host {
            // Stopped or timed out while it was being created: stop it now.
            host.cast(HostMessage::StopContainer {
                container_id: started.container_id,
                grace: STOP_GRACE,
            })?;
        }
        Ok(false)
    }

    /// Ends a running execution early: the final status is stored at once, the container is
    /// stopped, and its output is added when it has exited.
    async fn end_early(&mut self, ending: Ending) -> Step {
        let Some((_, execution)) = &self.record else {
            return Ok(false);
        };
        if execution.status.is_terminal() || self.ending.is_some() {
            return Ok(false);
        }
        let (status, message, grace) = match &ending {
            Ending::Stopped(message) => (ExecutionStatus::Stopped, message.clone(), STOP_GRACE),
            Ending::TimedOut(message) => {
                (ExecutionStatus::Timedout, message.clone(), TIMEOUT_GRACE)
            }
        };
        tracing::info!(execution_id = %self.delivery.message.execution_id, %status, "ending execution early");
        self.ending = Some(ending);
        let container_id = self.container_id();
        let execution = self.execution();
        execution.status = status;
        execution.finished_at = Some(Timestamp::now());
        execution.error = Some(message.into_bytes());
        self.persist().await?;
        match (&self.host, container_id) {
            (Some(host), Some(container_id)) => {
                host.cast(HostMessage::StopContainer {
                    container_id,
                    grace,
                })?;
                Ok(false)
            }
            // Still pulling: `started` stops the container once it exists.
            (Some(_), None) => Ok(false),
            (None, _) => self.ack().await,
        }
    }

    async fn exited(&mut self, exit: ContainerExit) -> Step {
        let ending = self.ending.clone();
        let execution = self.execution();
        execution.exit_code = Some(exit.exit_code);
        execution.log = Some(exit.stdout);
        let mut error = match &ending {
            Some(Ending::Stopped(message) | Ending::TimedOut(message)) => {
                format!("{message}\n").into_bytes()
            }
            None => Vec::new(),
        };
        if let Some(state_error) = exit.state_error {
            error.extend_from_slice(state_error.as_bytes());
            if !exit.stderr.is_empty() {
                error.extend_from_slice(b"\n\nstderr:\n");
            }
        }
        error.extend_from_slice(&exit.stderr);
        execution.error = Some(error);
        if ending.is_none() {
            execution.status = if exit.exit_code == 0 {
                ExecutionStatus::Done
            } else {
                ExecutionStatus::Failed
            };
            execution.finished_at = Some(Timestamp::now());
        }
        let status = execution.status;
        self.persist().await?;
        tracing::info!(execution_id = %self.delivery.message.execution_id, exit_code = exit.exit_code, %status, "execution finished");
        self.remove_container();
        if status == ExecutionStatus::Failed {
            self.retry_if_allowed().await?;
        }
        self.tell_notifier(false);
        self.ack().await
    }

    async fn failed(&mut self, myself: &ActorRef<JobMessage>, error: RuntimeError) -> Step {
        if let Some(ending) = self.ending.clone() {
            // Already stored as stopped/timed out; nothing more to collect.
            tracing::info!(?ending, %error, "container gone after an early end");
            self.remove_container();
            return self.ack().await;
        }
        if error.is_host_fault() {
            tracing::warn!(execution_id = %self.delivery.message.execution_id, %error, "host fault, will retry");
            let execution = self.execution();
            if execution.metadata.container_id.is_none() {
                // Never started: try another host of the farm now; when none is left, wait in
                // the queue. Neither consumes the job's retries.
                let failed = (
                    execution.metadata.docker_host.take(),
                    execution.metadata.docker_port.take(),
                );
                execution.status = ExecutionStatus::Enqueued;
                self.persist().await?;
                if let (Some(host), Some(port)) = failed {
                    if let Some(endpoint) = self
                        .hosts
                        .iter()
                        .map(|(e, _)| e)
                        .find(|e| e.host() == host && e.port() == port)
                    {
                        self.failed_hosts.push(endpoint.clone());
                    }
                }
                return self.start(myself).await;
            }
            return self.release().await;
        }
        let message = match &error {
            RuntimeError::NotFound(_) => {
                "Job failed since container could not be found in docker host.".to_string()
            }
            other => other.to_string(),
        };
        let operation = match &error {
            RuntimeError::Image(_) => "Downloading Image",
            _ if self.container_id().is_some() => "Monitoring Job",
            _ => "Running Container",
        };
        self.report(operation, &message);
        self.finish_without_container(ExecutionStatus::Failed, message)
            .await
    }

    /// Ends the execution with `status` and `message` before or instead of a container result.
    async fn finish_without_container(&mut self, status: ExecutionStatus, message: String) -> Step {
        tracing::warn!(execution_id = %self.delivery.message.execution_id, %status, %message, "execution ended without a result");
        let execution = self.execution();
        execution.status = status;
        execution.finished_at = Some(Timestamp::now());
        execution.error = Some(message.into_bytes());
        self.persist().await?;
        self.remove_container();
        self.tell_notifier(false);
        self.ack().await
    }

    /// Creates the automatic retry of this failed execution if the job has retries left. The
    /// retry's id is derived from this execution's, so doing this twice (after a crash)
    /// creates one retry and counts it once.
    async fn retry_if_allowed(&mut self) -> Result<(), StepError> {
        let Some((job, execution)) = &self.record else {
            return Ok(());
        };
        let store = &self.services.store;
        let Some(mut job) = store.get_job(&job.task_id, job.job_id).await? else {
            return Ok(());
        };
        if job.metadata.retry_count >= job.metadata.retries {
            return Ok(());
        }
        let now = Timestamp::now();
        let retry_number = job.metadata.retry_count + 1;
        let mut retry =
            Execution::with_id(retry_execution_id(execution.execution_id), &job, None, now);
        retry.image = execution.image.clone();
        retry.command = execution.command.clone();
        retry.metadata.retry_of = Some(execution.execution_id);
        if !store.create_execution(&retry).await? {
            return Ok(());
        }
        let backoff = job
            .metadata
            .backoff
            .unwrap_or(self.services.settings.default_backoff);
        let delay = backoff.delay(retry_number);
        let due = Timestamp(now.0 + delay.as_micros() as i64);
        let message = QueueMessage::run(&retry);
        self.services.queue.push(&message, due).await?;
        job.metadata.retry_count = retry_number;
        job.metadata.enqueued_id = Some(message.id);
        job.last_modified_at = now;
        store.update_job(&job).await?;
        tracing::info!(job_id = %job.job_id, retry = retry_number, delay_ms = delay.as_millis() as u64, "retry scheduled");
        Ok(())
    }

    /// After a refused write: acknowledge (whoever ended the execution owns it now), remove
    /// any container, and leave, unless a run is still in flight (`self.host` is set only once
    /// `Run` was sent): then `abandoned_step` waits for it and removes what it created.
    fn abandon_now(&mut self) -> Finished {
        background_ack(&self.services, &self.delivery.message.id);
        if self.container_id().is_some() {
            self.remove_container();
            return true;
        }
        self.host.is_none()
    }

    async fn abandoned_step(&mut self, message: JobMessage) -> Step {
        match message {
            JobMessage::Started(started) => {
                self.execution().metadata.container_id = Some(started.container_id);
                self.remove_container();
                Ok(true)
            }
            JobMessage::Exited(_) | JobMessage::Failed(_) => {
                self.remove_container();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Acknowledges a message in the background (used on paths that cannot wait).
fn background_ack(services: &Services, id: &str) {
    let queue = services.queue.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        if let Err(error) = queue.ack(&id).await {
            tracing::warn!(message_id = %id, %error, "could not acknowledge message");
        }
    });
}

/// The slots an execution of `job` needs: its task's `maxConcurrent` (if set) and its farm's
/// `maxRunning`.
pub fn slot_pools(settings: &crate::Settings, job: &Job) -> Vec<(String, u32)> {
    let mut pools = Vec::new();
    if let Some(max) = job.metadata.max_concurrent {
        pools.push((format!("task:{}", job.task_id), max));
    }
    if let Some(index) = settings
        .farms
        .iter()
        .position(|farm| farm.matches(&job.task_id))
    {
        pools.push((format!("farm:{index}"), settings.farms[index].max_running));
    }
    pools
}

/// The container to run for `execution`, or why it cannot run.
pub fn container_spec(job: &Job, execution: &Execution) -> Result<ContainerSpec, String> {
    let image = ImageRef::parse(&execution.image)
        .ok_or_else(|| format!("Invalid image reference {:?}.", execution.image))?;
    let argv = command::split(&execution.command).ok_or_else(|| {
        format!(
            "Invalid command {:?}: unbalanced quotes.",
            execution.command
        )
    })?;
    let labels = BTreeMap::from([
        ("fastlane.task_id".to_string(), execution.task_id.clone()),
        ("fastlane.job_id".to_string(), execution.job_id.to_string()),
        (
            "fastlane.execution_id".to_string(),
            execution.execution_id.to_string(),
        ),
    ]);
    Ok(ContainerSpec {
        name: format!("fastlane-job-{}", execution.execution_id),
        image,
        argv,
        env: job
            .metadata
            .envs
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect(),
        extra_hosts: job
            .metadata
            .additional_dns_entries
            .iter()
            .map(|(host, ip)| format!("{host}:{ip}"))
            .collect(),
        labels,
    })
}

/// The context of an error report about the execution of `message`: the operation, the ids,
/// and the image and command when the execution is known.
pub(crate) fn report_context(
    operation: &str,
    message: &QueueMessage,
    execution: Option<&Execution>,
) -> std::collections::BTreeMap<String, String> {
    let mut extra = std::collections::BTreeMap::from([
        ("operation".to_string(), operation.to_string()),
        ("task_id".to_string(), message.task_id.clone()),
        ("job_id".to_string(), message.job_id.to_string()),
        ("execution_id".to_string(), message.execution_id.to_string()),
    ]);
    if let Some(execution) = execution {
        extra.insert("image".into(), execution.image.clone());
        extra.insert("command".into(), execution.command.clone());
    }
    extra
}

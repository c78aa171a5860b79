//! JobActor: owns one execution from the moment its queue message is leased until its result is
//! stored and the message acknowledged. Spawned by the RootActor for each leased message and
//! registered as `job-{execution_id}`, so a stop request can find it.
//!
//! In: `Begin` (itself), `ImageReady`, `Started`, `Exited`, `Failed`, `Found` (from its
//! HostActor), `Stop` (ApiActor, SchedulerActor), `Timeout` (its own timer),
//! `SlotsGranted`/`SlotsRefused` (GateActor), `LeaseLost` (PollerActor).
//! Out: `Find`/`Run`/`Attach`/`StopContainer`/`Remove` to a HostActor; store writes; queue
//! ack/release;
//! a retry execution after a failure.
//!
//! Every state change is persisted before the next step, so a crash at any point leaves a record
//! the next delivery continues from (see `design.md`). A write the store refuses (the execution
//! was stopped meanwhile: terminal statuses are final) makes the actor clean up and leave.
//! A JobActor claims its execution when it begins (a fencing counter in the store) and writes
//! only under that claim: one whose lease or claim is gone (refused as `Fenced`, or told
//! `LeaseLost`) leaves at once without touching the container, which the new runner owns.

mod finish;
mod lookup;
mod spec;
mod start;

pub(crate) use start::no_farm_message;

use crate::lifecycle::report_context;
use crate::messages::{
    tell_notifier, HostMessage, JobMessage, NotifierMessage, LEFT_TO_ANOTHER_RUNNER,
};
use crate::ports::{Delivery, StoreError};
use crate::Services;
use fastlane_proto::backoff::capped_exponential;
use fastlane_proto::farm::DockerEndpoint;
use fastlane_proto::{Execution, Job, Timestamp};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::time::Duration;
use tracing::Instrument;

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
    /// This runner's claim on the execution (`Store::claim_execution`): every write of it is
    /// conditional on the claim still being the newest.
    fence: u64,
    /// The image was ready, so the host was asked to create the container: a host fault from
    /// here on may come after the create happened (`lookup.rs`).
    create_attempted: bool,
    /// Lookups of the container by name made in this delivery.
    lookups: u32,
    /// Whether the lookup in flight follows a host fault (then the host is avoided if the
    /// container is not there).
    lookup_after_fault: bool,
    /// The recorded host where the container was not found on a redelivery: placed there again
    /// when it can take it, since a create a dead runner sent may still land there, and Docker
    /// refuses a second container of that name on the same host (the runtime takes it over).
    preferred_host: Option<DockerEndpoint>,
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
        // This actor is the execution's runner from now on: a runner before it (on a node
        // paused past its lease) has its next write refused. A finished one needs no claim.
        let mut fence = 0;
        if let Some((_, execution)) = &record {
            if !execution.status.is_terminal() {
                fence = store
                    .claim_execution(message.execution_id)
                    .await?
                    .unwrap_or_default();
            }
        }
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
            fence,
            create_attempted: false,
            lookups: 0,
            lookup_after_fault: false,
            preferred_host: None,
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
        let result = if matches!(message, JobMessage::LeaseLost) {
            Err(StepError::Store(StoreError::Fenced(
                "the message's lease is gone".to_string(),
            )))
        } else if self.abandoned {
            self.abandoned_step(message).await
        } else {
            match message {
                JobMessage::Begin => self.begin(&myself).await,
                JobMessage::ImageReady { warnings } => Ok(self.image_ready(warnings)),
                JobMessage::Started(started) => self.started(&myself, started).await,
                JobMessage::Exited(exit) => self.exited(exit).await,
                JobMessage::Failed(error) => self.failed(&myself, error).await,
                JobMessage::Found(result) => self.found(&myself, result).await,
                JobMessage::Stop { reason } => self.end_early(Ending::Stopped(reason)).await,
                JobMessage::SlotsGranted if self.waiting_for_slots => {
                    self.waiting_for_slots = false;
                    self.start(&myself).await
                }
                JobMessage::SlotsGranted => Ok(false),
                JobMessage::AskSlotsAgain => Ok(self.ask_for_slots(&myself)),
                JobMessage::SlotsRefused if self.waiting_for_slots => {
                    tracing::debug!("pool full with enough waiters here, giving the message back");
                    self.waiting_for_slots = false;
                    self.release().await
                }
                JobMessage::SlotsRefused | JobMessage::LeaseLost => Ok(false),
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
            Err(StepError::Store(StoreError::Fenced(reason))) => {
                // Another runner has the execution (this node was paused past its lease): its
                // container, slots and message are that runner's. Leave them all alone.
                tracing::warn!(execution_id = %self.delivery.message.execution_id, %reason, "execution taken over by another runner, leaving it");
                myself.stop(Some(LEFT_TO_ANOTHER_RUNNER.to_string()));
                return Ok(());
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

    /// Writes the execution under this runner's claim (refused once another runner claimed it).
    async fn persist(&mut self) -> Result<(), StepError> {
        let fence = Some(self.fence);
        self.persist_with(fence).await
    }

    /// Writes the execution with `fence` (`None`: whoever claimed it, for a stop or a timeout,
    /// which must win even from a runner that lost its claim), with the notifications its status
    /// owes: the store records them only with a status change, in the same write (see
    /// `fastlane_proto::outbox`).
    async fn persist_with(&mut self, fence: Option<u64>) -> Result<(), StepError> {
        let (job, execution) = self.record.as_mut().expect("record checked in begin");
        let now = Timestamp::now();
        execution.last_modified_at = now;
        execution.outbox = fastlane_proto::outbox::owed(job, execution, now);
        let execution = execution.clone();
        self.services
            .store
            .update_execution(&execution, fence)
            .await?;
        Ok(())
    }

    /// Reports a failure of this execution to the error tracker, with its context.
    fn report(&self, operation: &str, message: &str) {
        let execution = self.record.as_ref().map(|(_, execution)| execution);
        let extra = report_context(operation, &self.delivery.message, execution);
        self.services.reporter.report(message, &extra);
    }

    /// Wakes the notifier: the execution started (`true`) or ended, and what that owes was
    /// stored with the status. Also where the start and the end are counted in the metrics.
    fn tell_notifier(&self, started: bool) {
        if let Some((_, execution)) = &self.record {
            if started {
                crate::metrics::execution_started(execution);
            } else {
                crate::metrics::execution_ended(execution);
            }
        }
        let message = &self.delivery.message;
        let (task_id, job_id, execution_id) = (
            message.task_id.clone(),
            message.job_id,
            message.execution_id,
        );
        tell_notifier(if started {
            NotifierMessage::Started {
                task_id,
                job_id,
                execution_id,
            }
        } else {
            NotifierMessage::Ended {
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
}

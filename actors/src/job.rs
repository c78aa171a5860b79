//! JobActor: owns one execution from the moment its queue message is leased until its result is
//! stored and the message acknowledged. Spawned by the RootActor for each leased message.
//!
//! In: `ImageReady`, `Started`, `Exited`, `Failed` (from its HostActor).
//! Out: `Run`/`Attach`/`Remove` to a HostActor; store writes; queue ack/release.
//!
//! Every state change is persisted before the next step, so a crash at any point leaves a record
//! the next delivery can continue from: an execution with a container id is re-attached, one
//! without is (re)started under the same deterministic container name, which the runtime reuses.

use crate::host::HostMessage;
use crate::placement::{least_loaded, HostLoad};
use crate::ports::{ContainerExit, ContainerSpec, Delivery, RuntimeError, StartedContainer};
use crate::Services;
use fastlane_proto::backoff::capped_exponential;
use fastlane_proto::farm::{farm_for, DockerEndpoint};
use fastlane_proto::image::ImageRef;
use fastlane_proto::{command, Execution, ExecutionStatus, Job, Timestamp};
use ractor::{call_t, Actor, ActorProcessingErr, ActorRef};
use std::collections::BTreeMap;
use std::time::Duration;

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
}

pub struct JobActor;

pub struct JobArgs {
    pub services: Services,
    pub delivery: Delivery,
    /// The node's hosts, with their actors.
    pub hosts: Vec<(DockerEndpoint, ActorRef<HostMessage>)>,
}

pub struct JobState {
    services: Services,
    delivery: Delivery,
    hosts: Vec<(DockerEndpoint, ActorRef<HostMessage>)>,
    /// `None` when the message refers to nothing any more (deleted job or execution).
    record: Option<(Job, Execution)>,
    host: Option<ActorRef<HostMessage>>,
}

/// Extra time granted past the hard timeout before a wait is abandoned.
const WAIT_MARGIN: Duration = Duration::from_secs(60);
/// Delay before a message whose host failed is delivered again (then growing).
const HOST_RETRY_MIN_MS: u64 = 1_000;
const HOST_RETRY_MAX_MS: u64 = 30_000;

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
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<JobMessage>,
        message: JobMessage,
        state: &mut JobState,
    ) -> Result<(), ActorProcessingErr> {
        let done = match message {
            JobMessage::Begin => state.begin(&myself).await?,
            JobMessage::ImageReady { warnings } => state.image_ready(warnings),
            JobMessage::Started(started) => state.started(started).await?,
            JobMessage::Exited(exit) => state.exited(exit).await?,
            JobMessage::Failed(error) => state.failed(error).await?,
        };
        if done {
            myself.stop(None);
        }
        Ok(())
    }
}

/// Whether the actor is finished with its execution.
type Finished = bool;

impl JobState {
    fn execution(&mut self) -> &mut Execution {
        &mut self.record.as_mut().expect("record checked in begin").1
    }

    async fn persist(&mut self) -> Result<(), ActorProcessingErr> {
        let execution = self.execution();
        execution.last_modified_at = Timestamp::now();
        let execution = execution.clone();
        self.services.store.update_execution(&execution).await?;
        Ok(())
    }

    async fn ack(&self) -> Result<Finished, ActorProcessingErr> {
        self.services.queue.ack(&self.delivery.message.id).await?;
        Ok(true)
    }

    /// Gives the message back to the queue for a later try, without consuming the job's retries.
    async fn release(&self) -> Result<Finished, ActorProcessingErr> {
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

    async fn begin(
        &mut self,
        myself: &ActorRef<JobMessage>,
    ) -> Result<Finished, ActorProcessingErr> {
        let Some((_, execution)) = &self.record else {
            tracing::warn!(message_id = %self.delivery.message.id, "queue message refers to no execution, dropping it");
            return self.ack().await;
        };
        if execution.status.is_terminal() {
            return self.ack().await;
        }
        let recorded_host = (
            execution.metadata.docker_host.clone(),
            execution.metadata.docker_port,
            execution.metadata.container_id.clone(),
        );
        if let (Some(host), Some(port), Some(container_id)) = recorded_host {
            // Started before a restart: collect it where it runs.
            let Some(actor) = self.host_for(&host, port) else {
                return self
                    .fail(format!(
                        "Docker host {host}:{port} of this execution is no longer configured."
                    ))
                    .await;
            };
            tracing::info!(%container_id, "re-attaching to running container");
            actor.cast(HostMessage::Attach {
                container_id,
                wait_limit: self.wait_limit(),
                job: myself.clone(),
            })?;
            self.host = Some(actor);
            return Ok(false);
        }
        self.start(myself).await
    }

    async fn start(
        &mut self,
        myself: &ActorRef<JobMessage>,
    ) -> Result<Finished, ActorProcessingErr> {
        let (job, execution) = self.record.as_ref().expect("record checked in begin");
        let spec = match container_spec(job, execution) {
            Ok(spec) => spec,
            Err(message) => return self.fail(message).await,
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

    /// The least loaded available host of the task's farm.
    async fn place(&self, task_id: &str) -> Option<(DockerEndpoint, ActorRef<HostMessage>)> {
        let farm = farm_for(&self.services.settings.farms, task_id)?;
        let candidates: Vec<&(DockerEndpoint, ActorRef<HostMessage>)> = self
            .hosts
            .iter()
            .filter(|(endpoint, _)| farm.hosts.contains(endpoint))
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

    async fn started(&mut self, started: StartedContainer) -> Result<Finished, ActorProcessingErr> {
        let execution = self.execution();
        execution.status = ExecutionStatus::Running;
        execution.started_at = Some(Timestamp::now());
        execution.metadata.container_id = Some(started.container_id);
        self.persist().await?;
        Ok(false)
    }

    async fn exited(&mut self, exit: ContainerExit) -> Result<Finished, ActorProcessingErr> {
        let execution = self.execution();
        execution.status = if exit.exit_code == 0 {
            ExecutionStatus::Done
        } else {
            ExecutionStatus::Failed
        };
        execution.exit_code = Some(exit.exit_code);
        execution.finished_at = Some(Timestamp::now());
        execution.log = Some(exit.stdout);
        execution.error = Some(match exit.state_error {
            Some(state_error) if exit.stderr.is_empty() => state_error.into_bytes(),
            Some(state_error) => {
                let mut error = format!("{state_error}\n\nstderr:\n").into_bytes();
                error.extend_from_slice(&exit.stderr);
                error
            }
            None => exit.stderr,
        });
        let container_id = execution.metadata.container_id.clone();
        self.persist().await?;
        tracing::info!(
            execution_id = %self.delivery.message.execution_id,
            exit_code = exit.exit_code,
            "execution finished"
        );
        if let (Some(host), Some(container_id)) = (&self.host, container_id) {
            let _ = host.cast(HostMessage::Remove { container_id });
        }
        self.ack().await
    }

    async fn failed(&mut self, error: RuntimeError) -> Result<Finished, ActorProcessingErr> {
        if error.is_host_fault() {
            tracing::warn!(execution_id = %self.delivery.message.execution_id, %error, "host fault, will retry");
            let execution = self.execution();
            if execution.metadata.container_id.is_none() {
                // Never started: it may start anywhere next time.
                execution.status = ExecutionStatus::Enqueued;
                execution.metadata.docker_host = None;
                execution.metadata.docker_port = None;
                self.persist().await?;
            }
            return self.release().await;
        }
        let message = match &error {
            RuntimeError::NotFound(_) => {
                "Job failed since container could not be found in docker host.".to_string()
            }
            other => other.to_string(),
        };
        self.fail(message).await
    }

    /// Ends the execution as `failed` with `message`, before or instead of a container result.
    async fn fail(&mut self, message: String) -> Result<Finished, ActorProcessingErr> {
        tracing::warn!(execution_id = %self.delivery.message.execution_id, %message, "execution failed");
        let execution = self.execution();
        execution.status = ExecutionStatus::Failed;
        execution.finished_at = Some(Timestamp::now());
        execution.error = Some(message.into_bytes());
        let container_id = execution.metadata.container_id.clone();
        self.persist().await?;
        if let (Some(host), Some(container_id)) = (&self.host, container_id) {
            let _ = host.cast(HostMessage::Remove { container_id });
        }
        self.ack().await
    }
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

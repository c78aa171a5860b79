//! ApiActor: the front desk. The gateway turns each HTTP request into one call of this actor.
//! Started and restarted by the RootActor, registered under [`API_NAME`].
//!
//! In: `Enqueue` (POST and PUT), `StopJob`, `StopExecution`, `Retry`, `ListTasks`,
//! `SearchTasks`, `GetTask`, `GetJob`, `FindExecution`, `Health`, `Status`.
//! Out: store and queue operations; a wake-up to the poller after an enqueue; schedule changes
//! to the SchedulerActor; stop requests to JobActors.
//!
//! Each request is served by a spawned task that replies on the call's port, so a slow query
//! never holds up the mailbox; the handler itself only dispatches.

use crate::host::{HostMessage, HostStatus, LogWatch};
use crate::lifecycle::stop_execution;
use crate::ports::{DeadLetter, Page, Paged, QueueMessage, QueueStats, StoreCounts, StoreError};
use crate::root::RootMessage;
use crate::scheduler;
use crate::Services;
use fastlane_proto::payload::{EnqueueRequest, ScheduleRequest};
use fastlane_proto::schedule::{firing_execution_id, CronSchedule, JobSchedule};
use fastlane_proto::{ErrorKind, Execution, Job, JobMetadata, Task, TaskSummary, Timestamp};
use ractor::{call_t, Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::future::Future;
use uuid::Uuid;

/// The registered name of the ApiActor.
pub const API_NAME: &str = "fastlane-api";

/// A failed API call, mapped to an HTTP status by the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ApiError {
            kind: match error {
                StoreError::Unavailable(_) => ErrorKind::Unavailable,
                StoreError::Conflict(_) => ErrorKind::Conflict,
                StoreError::Internal(_) => ErrorKind::Internal,
            },
            message: error.to_string(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A job created by an enqueue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enqueued {
    pub task_id: String,
    pub job_id: Uuid,
    pub execution_id: Option<Uuid>,
    pub queue_message_id: String,
}

/// A task with its jobs, most recently modified first.
pub type TaskView = (Task, Vec<Job>);

/// A job with its newest executions, for the job details route.
#[derive(Clone, Debug, PartialEq)]
pub struct JobView {
    pub job: Job,
    pub executions: Vec<Execution>,
    pub execution_count: u64,
}

/// The outcome of looking an execution up.
#[derive(Clone, Debug, PartialEq)]
pub enum ExecutionLookup {
    NoJob,
    NoExecutions,
    NoSuchExecution,
    Found(Box<Execution>),
}

/// What `/healthcheck` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub store: Result<(), String>,
    pub queue: Result<(), String>,
}

/// What `/status/` reports, from the actors' live state.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStatus {
    pub hosts: Vec<HostStatus>,
    pub blacklist: Vec<String>,
    /// Slots in use per pool (`farm:N`, `task:ID`).
    pub slots: Vec<(String, u64)>,
    /// Scheduled jobs and the earliest firing.
    pub scheduled: (usize, Option<Timestamp>),
    pub queue: Result<QueueStats, String>,
    /// The newest dead letters.
    pub dead_letters: Vec<DeadLetter>,
    pub counts: Result<StoreCounts, String>,
}

/// Dead letters shown in `/status/`.
pub const DEAD_LETTERS_SHOWN: usize = 20;

/// Number of executions shown in the job details.
pub const JOB_EXECUTIONS_SHOWN: u64 = 20;

pub enum ApiMessage {
    /// Creates a job (`job_id` `None`) or creates/updates the job with that id (PUT).
    Enqueue {
        task_id: String,
        job_id: Option<Uuid>,
        request: Box<EnqueueRequest>,
        request_ip: Option<String>,
        reply: RpcReplyPort<ApiResult<Enqueued>>,
    },
    /// Stops the job: no more firings or retries; its last execution is stopped.
    StopJob {
        task_id: String,
        job_id: Uuid,
        reply: RpcReplyPort<ApiResult<Option<()>>>,
    },
    /// Stops one execution (no more retries of the job; the schedule stays).
    StopExecution {
        task_id: String,
        job_id: Uuid,
        execution_id: Uuid,
        reply: RpcReplyPort<ApiResult<ExecutionLookup>>,
    },
    /// Runs the job again now (stopping its last execution if it still runs).
    Retry {
        task_id: String,
        job_id: Uuid,
        reply: RpcReplyPort<ApiResult<Option<Enqueued>>>,
    },
    ListTasks {
        page: Page,
        reply: RpcReplyPort<ApiResult<Paged<TaskSummary>>>,
    },
    SearchTasks {
        words: Vec<String>,
        page: Page,
        reply: RpcReplyPort<ApiResult<Paged<TaskSummary>>>,
    },
    GetTask {
        task_id: String,
        reply: RpcReplyPort<ApiResult<Option<TaskView>>>,
    },
    GetJob {
        task_id: String,
        job_id: Uuid,
        reply: RpcReplyPort<ApiResult<Option<JobView>>>,
    },
    /// An execution of a job by id, or the job's last one when `execution_id` is `None`.
    FindExecution {
        task_id: String,
        job_id: Uuid,
        execution_id: Option<Uuid>,
        reply: RpcReplyPort<ApiResult<ExecutionLookup>>,
    },
    Health(RpcReplyPort<Health>),
    Status(RpcReplyPort<NodeStatus>),
    /// Watch an execution's output (the job's last one when `execution_id` is `None`).
    Watch {
        task_id: String,
        job_id: Uuid,
        execution_id: Option<Uuid>,
        reply: RpcReplyPort<ApiResult<WatchOutcome>>,
    },
    /// Adds (`add`) or removes a `host:port` from the blacklist.
    Blacklist {
        host: String,
        add: bool,
        reply: RpcReplyPort<ApiResult<()>>,
    },
}

pub struct ApiActor;

pub struct ApiArgs {
    pub services: Services,
    pub root: ActorRef<RootMessage>,
}

pub struct ApiState {
    services: Services,
    root: ActorRef<RootMessage>,
}

impl Actor for ApiActor {
    type Msg = ApiMessage;
    type State = ApiState;
    type Arguments = ApiArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ApiMessage>,
        args: ApiArgs,
    ) -> Result<ApiState, ActorProcessingErr> {
        Ok(ApiState {
            services: args.services,
            root: args.root,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ApiMessage>,
        message: ApiMessage,
        state: &mut ApiState,
    ) -> Result<(), ActorProcessingErr> {
        let services = state.services.clone();
        match message {
            ApiMessage::Enqueue {
                task_id,
                job_id,
                request,
                request_ip,
                reply,
            } => serve(
                reply,
                enqueue(services, task_id, job_id, *request, request_ip),
            ),
            ApiMessage::StopJob {
                task_id,
                job_id,
                reply,
            } => serve(reply, stop_job(services, task_id, job_id)),
            ApiMessage::StopExecution {
                task_id,
                job_id,
                execution_id,
                reply,
            } => serve(
                reply,
                stop_one_execution(services, task_id, job_id, execution_id),
            ),
            ApiMessage::Retry {
                task_id,
                job_id,
                reply,
            } => serve(reply, retry(services, task_id, job_id)),
            ApiMessage::ListTasks { page, reply } => {
                serve(
                    reply,
                    async move { Ok(services.store.list_tasks(page).await?) },
                )
            }
            ApiMessage::SearchTasks { words, page, reply } => serve(reply, async move {
                Ok(services.store.search_tasks(&words, page).await?)
            }),
            ApiMessage::GetTask { task_id, reply } => serve(reply, get_task(services, task_id)),
            ApiMessage::GetJob {
                task_id,
                job_id,
                reply,
            } => serve(reply, get_job(services, task_id, job_id)),
            ApiMessage::FindExecution {
                task_id,
                job_id,
                execution_id,
                reply,
            } => serve(
                reply,
                find_execution(services, task_id, job_id, execution_id),
            ),
            ApiMessage::Health(reply) => serve(reply, health(services)),
            ApiMessage::Status(reply) => serve(reply, status(services, state.root.clone())),
            ApiMessage::Watch {
                task_id,
                job_id,
                execution_id,
                reply,
            } => serve(
                reply,
                watch(services, state.root.clone(), task_id, job_id, execution_id),
            ),
            ApiMessage::Blacklist { host, add, reply } => serve(reply, async move {
                let result = if add {
                    services.blacklist.add(&host).await
                } else {
                    services.blacklist.remove(&host).await
                };
                tracing::info!(%host, add, "blacklist changed");
                result.map_err(|error| ApiError {
                    kind: ErrorKind::Unavailable,
                    message: error.to_string(),
                })
            }),
        }
        Ok(())
    }
}

/// Runs `work` in its own task and replies with its result.
fn serve<T: Send + 'static>(
    reply: RpcReplyPort<T>,
    work: impl Future<Output = T> + Send + 'static,
) {
    tokio::spawn(async move {
        let _ = reply.send(work.await);
    });
}

/// What replaced a job's queued execution.
const REPLACED: &str = "Job execution was replaced by an update of the job.";
const STOPPED: &str = "User stopped job execution manually.";

async fn enqueue(
    services: Services,
    task_id: String,
    job_id: Option<Uuid>,
    request: EnqueueRequest,
    request_ip: Option<String>,
) -> ApiResult<Enqueued> {
    let now = Timestamp::now();
    let hard_timeout = services.settings.hard_timeout_seconds;
    let existing = match job_id {
        Some(job_id) => services.store.get_job(&task_id, job_id).await?,
        None => None,
    };
    let schedule = request.schedule.as_ref().map(|requested| {
        let (cron, timezone, next) = match requested {
            ScheduleRequest::StartAt(at) => (None, None, Some(*at)),
            ScheduleRequest::StartIn(delay) => (
                None,
                None,
                Some(Timestamp(now.0 + delay.as_micros() as i64)),
            ),
            ScheduleRequest::Cron {
                expression,
                timezone,
            } => {
                let next = CronSchedule::parse(expression, timezone.as_deref())
                    .ok()
                    .and_then(|cron| cron.next_after(now));
                (Some(expression.clone()), timezone.clone(), next)
            }
        };
        JobSchedule {
            cron,
            timezone,
            next_fire_at: next,
            misfire: request.misfire,
            overlap: request.overlap,
            missed: Vec::new(),
            missed_count: 0,
        }
    });
    let cron = schedule.as_ref().and_then(|schedule| schedule.cron.clone());
    let job = Job {
        task_id: task_id.clone(),
        job_id: job_id.unwrap_or_else(Uuid::new_v4),
        image: request.image,
        command: request.command,
        request_ip: request_ip.clone(),
        metadata: JobMetadata {
            retries: request.retries,
            retry_count: 0,
            notify: request.notify,
            webhooks: request.webhooks,
            expiration: request.expiration,
            timeout: request.timeout.unwrap_or(hard_timeout).min(hard_timeout),
            envs: request.envs,
            additional_dns_entries: request.additional_dns_entries,
            custom: request.custom,
            enqueued_id: None,
            cron: cron.clone(),
            backoff: request.backoff,
            max_concurrent: request.max_concurrent,
        },
        scheduled: cron.is_some(),
        schedule,
        created_at: existing.as_ref().map_or(now, |job| job.created_at),
        last_modified_at: now,
    };
    let mut job = job;
    let execution = job
        .schedule
        .is_none()
        .then(|| Execution::new(&job, request_ip, now));
    // The queue message of an immediate job; the id of the next firing of a scheduled one.
    let queue_id = match (&execution, &job.schedule) {
        (Some(execution), _) => execution.execution_id.to_string(),
        (None, Some(schedule)) => {
            firing_execution_id(job.job_id, schedule.next_fire_at.unwrap_or(now)).to_string()
        }
        (None, None) => unreachable!("a job is either immediate or scheduled"),
    };
    job.metadata.enqueued_id = Some(queue_id.clone());
    if existing.is_some() {
        // An update replaces what the job had pending: its queued (not started) execution.
        if let Some(last) = services.store.list_executions(job.job_id, 1).await?.pop() {
            if last.status == fastlane_proto::ExecutionStatus::Enqueued {
                stop_execution(&services, last.execution_id, REPLACED).await?;
            }
        }
    }
    services.store.create_job(&job, execution.as_ref()).await?;
    if let Some(execution) = &execution {
        let message = QueueMessage::run(execution);
        if let Err(error) = services.queue.push(&message, now).await {
            // Undo a creation, so that nothing half-written is left behind (an update stays:
            // reconciliation at start queues its execution).
            if existing.is_none() {
                if let Err(undo) = services.store.delete_job(job.job_id).await {
                    tracing::error!(job_id = %job.job_id, %undo, "could not undo job after failed enqueue");
                }
            }
            return Err(ApiError {
                kind: ErrorKind::Unavailable,
                message: error.to_string(),
            });
        }
        crate::poller::wake();
    }
    scheduler::notify(&job);
    tracing::info!(%task_id, job_id = %job.job_id, updated = existing.is_some(), scheduled = job.schedule.is_some(), "job enqueued");
    Ok(Enqueued {
        task_id,
        job_id: job.job_id,
        execution_id: execution.map(|execution| execution.execution_id),
        queue_message_id: queue_id,
    })
}

async fn stop_job(services: Services, task_id: String, job_id: Uuid) -> ApiResult<Option<()>> {
    let Some(mut job) = services.store.get_job(&task_id, job_id).await? else {
        return Ok(None);
    };
    job.metadata.retry_count = job.metadata.retries + 1;
    job.schedule = None;
    job.scheduled = false;
    job.last_modified_at = Timestamp::now();
    services.store.update_job(&job).await?;
    scheduler::notify(&job);
    if let Some(last) = services.store.list_executions(job_id, 1).await?.pop() {
        stop_execution(&services, last.execution_id, STOPPED).await?;
    }
    Ok(Some(()))
}

async fn stop_one_execution(
    services: Services,
    task_id: String,
    job_id: Uuid,
    execution_id: Uuid,
) -> ApiResult<ExecutionLookup> {
    let Some(mut job) = services.store.get_job(&task_id, job_id).await? else {
        return Ok(ExecutionLookup::NoJob);
    };
    let Some(execution) = services
        .store
        .get_execution(execution_id)
        .await?
        .filter(|e| e.job_id == job_id)
    else {
        return Ok(ExecutionLookup::NoSuchExecution);
    };
    job.metadata.retry_count = job.metadata.retries + 1;
    job.last_modified_at = Timestamp::now();
    services.store.update_job(&job).await?;
    stop_execution(&services, execution_id, STOPPED).await?;
    Ok(ExecutionLookup::Found(Box::new(execution)))
}

async fn retry(services: Services, task_id: String, job_id: Uuid) -> ApiResult<Option<Enqueued>> {
    let Some(mut job) = services.store.get_job(&task_id, job_id).await? else {
        return Ok(None);
    };
    let Some(last) = services.store.list_executions(job_id, 1).await?.pop() else {
        return Err(ApiError {
            kind: ErrorKind::Invalid,
            message: "No execution yet to retry.".into(),
        });
    };
    if job
        .schedule
        .as_ref()
        .is_some_and(|schedule| schedule.cron.is_none())
    {
        return Err(ApiError {
            kind: ErrorKind::Invalid,
            message: "Can't retry a scheduled job.".into(),
        });
    }
    if !last.status.is_terminal() {
        stop_execution(
            &services,
            last.execution_id,
            "Job execution was stopped to be retried.",
        )
        .await?;
    }
    let now = Timestamp::now();
    let mut execution = Execution::new(&job, None, now);
    execution.image = last.image.clone();
    execution.command = last.command.clone();
    services.store.create_execution(&execution).await?;
    let message = QueueMessage::run(&execution);
    services
        .queue
        .push(&message, now)
        .await
        .map_err(|error| ApiError {
            kind: ErrorKind::Unavailable,
            message: error.to_string(),
        })?;
    crate::poller::wake();
    job.metadata.enqueued_id = Some(message.id.clone());
    job.last_modified_at = now;
    services.store.update_job(&job).await?;
    Ok(Some(Enqueued {
        task_id,
        job_id,
        execution_id: Some(execution.execution_id),
        queue_message_id: message.id,
    }))
}

async fn get_task(services: Services, task_id: String) -> ApiResult<Option<TaskView>> {
    let Some(task) = services.store.get_task(&task_id).await? else {
        return Ok(None);
    };
    let jobs = services.store.list_jobs(&task_id).await?;
    Ok(Some((task, jobs)))
}

async fn get_job(services: Services, task_id: String, job_id: Uuid) -> ApiResult<Option<JobView>> {
    let Some(job) = services.store.get_job(&task_id, job_id).await? else {
        return Ok(None);
    };
    let executions = services
        .store
        .list_executions(job_id, JOB_EXECUTIONS_SHOWN)
        .await?;
    let execution_count = services.store.count_executions(job_id).await?;
    Ok(Some(JobView {
        job,
        executions,
        execution_count,
    }))
}

async fn find_execution(
    services: Services,
    task_id: String,
    job_id: Uuid,
    execution_id: Option<Uuid>,
) -> ApiResult<ExecutionLookup> {
    if services.store.get_job(&task_id, job_id).await?.is_none() {
        return Ok(ExecutionLookup::NoJob);
    }
    let found = match execution_id {
        None => {
            let mut last = services.store.list_executions(job_id, 1).await?;
            if last.is_empty() {
                return Ok(ExecutionLookup::NoExecutions);
            }
            last.pop()
        }
        Some(execution_id) => services
            .store
            .get_execution(execution_id)
            .await?
            .filter(|execution| execution.job_id == job_id && execution.task_id == task_id),
    };
    Ok(match found {
        Some(execution) => ExecutionLookup::Found(Box::new(execution)),
        None if services.store.count_executions(job_id).await? == 0 => {
            ExecutionLookup::NoExecutions
        }
        None => ExecutionLookup::NoSuchExecution,
    })
}

/// What a watcher of an execution's output gets.
pub enum WatchOutcome {
    NoJob,
    NoExecution,
    /// Not started yet: come back later.
    Pending,
    /// Finished (or ended): its stored output.
    Finished(Box<Execution>),
    /// Running: its output so far and then live.
    Live(LogWatch),
}

async fn watch(
    services: Services,
    root: ActorRef<RootMessage>,
    task_id: String,
    job_id: Uuid,
    execution_id: Option<Uuid>,
) -> ApiResult<WatchOutcome> {
    let execution = match find_execution(services, task_id, job_id, execution_id).await? {
        ExecutionLookup::NoJob => return Ok(WatchOutcome::NoJob),
        ExecutionLookup::NoExecutions | ExecutionLookup::NoSuchExecution => {
            return Ok(WatchOutcome::NoExecution)
        }
        ExecutionLookup::Found(execution) => execution,
    };
    if execution.status.is_terminal() {
        return Ok(WatchOutcome::Finished(execution));
    }
    let metadata = &execution.metadata;
    let (Some(host), Some(port), Some(container_id)) = (
        metadata.docker_host.clone(),
        metadata.docker_port,
        metadata.container_id.clone(),
    ) else {
        return Ok(WatchOutcome::Pending);
    };
    let unavailable = |message: String| ApiError {
        kind: ErrorKind::Unavailable,
        message,
    };
    let host = call_t!(
        root,
        |reply| RootMessage::HostFor { host, port, reply },
        crate::CALL_TIMEOUT_MS
    )
    .map_err(|error| unavailable(error.to_string()))?
    .ok_or_else(|| unavailable("the execution's host is not configured".into()))?;
    match call_t!(
        host,
        |reply| HostMessage::Watch {
            container_id,
            reply
        },
        crate::CALL_TIMEOUT_MS
    ) {
        Ok(Ok(watch)) => Ok(WatchOutcome::Live(watch)),
        // The container just ended (or went away): tell the watcher to come back for the result.
        Ok(Err(_)) => Ok(WatchOutcome::Pending),
        Err(error) => Err(unavailable(error.to_string())),
    }
}

async fn health(services: Services) -> Health {
    Health {
        store: services
            .store
            .ping()
            .await
            .map_err(|error| error.to_string()),
        queue: services
            .queue
            .ping()
            .await
            .map_err(|error| error.to_string()),
    }
}

async fn status(services: Services, root: ActorRef<RootMessage>) -> NodeStatus {
    let hosts =
        call_t!(root, RootMessage::HostStatuses, crate::CALL_TIMEOUT_MS).unwrap_or_default();
    let scheduled =
        match ActorRef::<scheduler::SchedulerMessage>::where_is(scheduler::SCHEDULER_NAME) {
            Some(scheduler) => call_t!(
                scheduler,
                scheduler::SchedulerMessage::Next,
                crate::CALL_TIMEOUT_MS
            )
            .unwrap_or((0, None)),
            None => (0, None),
        };
    NodeStatus {
        hosts,
        blacklist: services.blacklist.list().await.unwrap_or_default(),
        slots: services.slots.in_use().await.unwrap_or_default(),
        scheduled,
        queue: services
            .queue
            .stats()
            .await
            .map_err(|error| error.to_string()),
        dead_letters: services
            .queue
            .dead_letters(DEAD_LETTERS_SHOWN)
            .await
            .unwrap_or_default(),
        counts: services
            .store
            .counts()
            .await
            .map_err(|error| error.to_string()),
    }
}

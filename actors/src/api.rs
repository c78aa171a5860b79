//! ApiActor: the front desk. The gateway turns each HTTP request into one call of this actor.
//! Started and restarted by the RootActor, registered under [`API_NAME`].
//!
//! In: `Enqueue`, `ListTasks`, `SearchTasks`, `GetTask`, `GetJob`, `FindExecution`, `Health`,
//! `Status`. Out: store and queue operations; a wake-up to the poller after an enqueue.
//!
//! Each request is served by a spawned task that replies on the call's port, so a slow query
//! never holds up the mailbox; the handler itself only dispatches.

use crate::host::HostStatus;
use crate::ports::{Page, Paged, QueueMessage, QueueStats, StoreCounts, StoreError};
use crate::root::RootMessage;
use crate::Services;
use fastlane_proto::payload::EnqueueRequest;
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
    pub queue: Result<QueueStats, String>,
    pub counts: Result<StoreCounts, String>,
}

/// Number of executions shown in the job details.
pub const JOB_EXECUTIONS_SHOWN: u64 = 20;

pub enum ApiMessage {
    Enqueue {
        task_id: String,
        request: Box<EnqueueRequest>,
        request_ip: Option<String>,
        reply: RpcReplyPort<ApiResult<Enqueued>>,
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
                request,
                request_ip,
                reply,
            } => serve(reply, enqueue(services, task_id, *request, request_ip)),
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

async fn enqueue(
    services: Services,
    task_id: String,
    request: EnqueueRequest,
    request_ip: Option<String>,
) -> ApiResult<Enqueued> {
    let now = Timestamp::now();
    let hard_timeout = services.settings.hard_timeout_seconds;
    let job = Job {
        task_id: task_id.clone(),
        job_id: Uuid::new_v4(),
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
            cron: None,
        },
        scheduled: false,
        created_at: now,
        last_modified_at: now,
    };
    let execution = Execution::new(&job, request_ip, now);
    let message = QueueMessage::run(&execution);
    let mut job = job;
    job.metadata.enqueued_id = Some(message.id.clone());
    services.store.create_job(&job, Some(&execution)).await?;
    if let Err(error) = services.queue.push(&message, now).await {
        // Undo, so that nothing half-written is left behind.
        if let Err(undo) = services.store.delete_job(job.job_id).await {
            tracing::error!(job_id = %job.job_id, %undo, "could not undo job after failed enqueue");
        }
        return Err(ApiError {
            kind: ErrorKind::Unavailable,
            message: error.to_string(),
        });
    }
    crate::poller::wake();
    tracing::info!(%task_id, job_id = %job.job_id, execution_id = %execution.execution_id, "job enqueued");
    Ok(Enqueued {
        task_id,
        job_id: job.job_id,
        execution_id: Some(execution.execution_id),
        queue_message_id: message.id,
    })
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
    NodeStatus {
        hosts,
        queue: services
            .queue
            .stats()
            .await
            .map_err(|error| error.to_string()),
        counts: services
            .store
            .counts()
            .await
            .map_err(|error| error.to_string()),
    }
}

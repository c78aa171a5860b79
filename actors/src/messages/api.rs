//! The ApiActor's calls (one per gateway route family) and the values they answer with.

use super::host::{HostStatus, LogWatch};
use crate::ports::{
    DeadLetter, ExecutionFilter, ExecutionTail, OutputStream, Page, Paged, QueueStats, StoreCounts,
    StoreError,
};
use fastlane_proto::payload::EnqueueRequest;
use fastlane_proto::{ErrorKind, Execution, Job, Task, TaskSummary, Timestamp};
use ractor::RpcReplyPort;
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
                StoreError::Conflict(_) | StoreError::Fenced(_) => ErrorKind::Conflict,
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

/// The `Idempotency-Key` of a POST, with what identifies its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    /// SHA-256 of the request body, in hex.
    pub body_sha256: String,
    /// How long the key holds (`IDEMPOTENCY_KEY_TTL_SECONDS`).
    pub ttl: std::time::Duration,
}

/// A task with its jobs, most recently modified first.
pub type TaskView = (Task, Paged<Job>);

/// What a `DELETE /tasks/{task}/` did: jobs deleted by this call, and jobs left in the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskDeletion {
    /// Jobs this call deleted.
    pub deleted: u64,
    /// Jobs still in the task (0: the task is gone).
    pub left: u64,
}

/// A job with its newest executions, for the job details route.
#[derive(Clone, Debug, PartialEq)]
pub struct JobView {
    pub job: Job,
    /// Each with at most `JOB_DETAILS_OUTPUT_MAX_BYTES` of its output, the end.
    pub executions: Vec<crate::ports::ExecutionTail>,
    pub execution_count: u64,
}

/// The outcome of looking an execution up.
#[derive(Clone, Debug, PartialEq)]
pub enum ExecutionLookup {
    NoJob,
    NoExecutions,
    NoSuchExecution,
    /// The execution, with the ends of its outputs or without them, as asked.
    Found(Box<ExecutionTail>),
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
    /// The soonest scheduled jobs (at most `api::SCHEDULED_JOBS_SHOWN`).
    pub scheduled_jobs: Vec<ScheduledJob>,
}

/// A scheduled job as `/status/` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledJob {
    pub job: fastlane_proto::Job,
    pub execution_count: u64,
}

pub enum ApiMessage {
    /// Creates a job (`job_id` `None`) or creates/updates the job with that id (PUT).
    Enqueue {
        task_id: String,
        job_id: Option<Uuid>,
        request: Box<EnqueueRequest>,
        request_ip: Option<String>,
        /// A POST's `Idempotency-Key`: the job is created once per key and body.
        idempotency: Option<Idempotency>,
        reply: RpcReplyPort<ApiResult<Enqueued>>,
    },
    /// Pauses (`pause: true`) or resumes a scheduled job; answers the job as written
    /// (`None`: no such job; `Conflict` when it has no schedule).
    PauseJob {
        task_id: String,
        job_id: Uuid,
        pause: bool,
        reply: RpcReplyPort<ApiResult<Option<()>>>,
    },
    /// A page of the executions `filter` matches, newest first, without outputs (`None`: the
    /// filter names a job that does not exist in its task).
    FindExecutions {
        filter: ExecutionFilter,
        page: Page,
        reply: RpcReplyPort<ApiResult<Option<Paged<Execution>>>>,
    },
    /// Stops the job: no more firings or retries; its last execution is stopped.
    StopJob {
        task_id: String,
        job_id: Uuid,
        reply: RpcReplyPort<ApiResult<Option<()>>>,
    },
    /// Stops the job as `StopJob` does, then removes it with its executions, outputs, schedule
    /// and queue messages; answers how many executions went (`None`: no such job).
    DeleteJob {
        task_id: String,
        job_id: Uuid,
        reply: RpcReplyPort<ApiResult<Option<u64>>>,
    },
    /// Deletes the jobs of the task for a bounded time; answers how many went and how many
    /// are left (`None`: no such task).
    DeleteTask {
        task_id: String,
        reply: RpcReplyPort<ApiResult<Option<TaskDeletion>>>,
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
    /// The task and one page of its jobs.
    GetTask {
        task_id: String,
        page: Page,
        reply: RpcReplyPort<ApiResult<Option<TaskView>>>,
    },
    GetJob {
        task_id: String,
        job_id: Uuid,
        reply: RpcReplyPort<ApiResult<Option<JobView>>>,
    },
    /// An execution of a job by id, or the job's last one when `execution_id` is `None`; with
    /// the ends of its outputs (`JOB_DETAILS_OUTPUT_MAX_BYTES`) when `tails`, else without.
    FindExecution {
        task_id: String,
        job_id: Uuid,
        execution_id: Option<Uuid>,
        tails: bool,
        reply: RpcReplyPort<ApiResult<ExecutionLookup>>,
    },
    /// The length of an execution's stored output (`None`: it has none).
    OutputLen {
        execution_id: Uuid,
        stream: OutputStream,
        reply: RpcReplyPort<ApiResult<Option<u64>>>,
    },
    /// A piece of an execution's stored output (`Store::read_output`).
    ReadOutput {
        execution_id: Uuid,
        stream: OutputStream,
        offset: u64,
        max_len: u64,
        reply: RpcReplyPort<ApiResult<Vec<u8>>>,
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

/// What a watcher of an execution's output gets.
pub enum WatchOutcome {
    NoJob,
    NoExecution,
    /// Not started yet: come back later.
    Pending,
    /// Finished (or ended): the record without output, which is read with `ReadOutput`.
    Finished(Box<Execution>),
    /// Running: its output so far and then live.
    Live(LogWatch),
}

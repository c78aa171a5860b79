//! The ports: everything the actors need from the outside world, as traits. Adapters in the
//! node crate implement them: the embedded SQLite database (store, queue, slots, blacklist),
//! Redis (queue, slots, blacklist), MongoDB (store), Docker via bollard, SMTP, webhooks, Sentry.
//! Nothing in this crate imports a database, HTTP or Docker crate.
//!
//! The store, queue, slots and blacklist ports are here; the container runtime's in
//! `ports/runtime.rs`, the notifications' (webhooks, e-mail, error tracker) in `ports/notify.rs`,
//! re-exported here.

mod notify;
mod runtime;

pub use notify::*;
pub use runtime::*;

use async_trait::async_trait;
use fastlane_proto::idempotency::IdempotencyRecord;
use fastlane_proto::outbox::{Outbox, OwedNotification};
use fastlane_proto::{Execution, ExecutionStatus, Job, Task, TaskSummary, Timestamp};
use std::time::Duration;
use uuid::Uuid;

/// A page request: 1-based page number and page size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    /// The 1-based page number, from the `page` query parameter.
    pub number: u64,
    /// Items per page: the node's configured page size (`perPage` in the answer).
    pub per_page: u64,
}

impl Page {
    /// How many items come before this page.
    pub fn offset(self) -> u64 {
        (self.number.saturating_sub(1)).saturating_mul(self.per_page)
    }
}

/// One page of results and the total number of matches.
#[derive(Clone, Debug, PartialEq)]
pub struct Paged<T> {
    /// The matches on this page, in the listing's order.
    pub items: Vec<T>,
    /// Matches across all pages.
    pub total: u64,
}

/// Which executions a history lists (`GET …/jobs/{job}/executions/`, `GET /executions/`):
/// every field set narrows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecutionFilter {
    /// Executions of this task only.
    pub task_id: Option<String>,
    /// Executions of this job only.
    pub job_id: Option<Uuid>,
    /// Executions in this status only.
    pub status: Option<ExecutionStatus>,
    /// Created at or after this time.
    pub since: Option<Timestamp>,
    /// Created before this time.
    pub until: Option<Timestamp>,
}

/// A store failure. Stores retry nothing themselves; callers decide.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or refused the operation for a transient reason.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The write conflicts with what is stored: a duplicate id, or an execution that already
    /// reached a terminal status.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A record violates an invariant (corrupt data).
    #[error("store error: {0}")]
    Internal(String),
    /// A fenced write was refused: another runner claimed the execution since (this one lost
    /// its lease, e.g. its node was paused past it). The writer must leave the execution.
    #[error("fenced: {0}")]
    Fenced(String),
}

/// Tasks, jobs and executions. Implementations must be safe to share between tasks.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates the task when absent (bumping its `last_modified_at` otherwise), then inserts the
    /// job and, when given, its first execution: all or nothing. When the job exists (a PUT)
    /// it is replaced only if its stored version is still `job.version`, as by `update_job`
    /// (`Conflict` otherwise, and when it belongs to another task).
    async fn create_job(&self, job: &Job, execution: Option<&Execution>) -> Result<(), StoreError>;
    /// Removes a job and its executions (used to undo a create whose enqueue failed).
    async fn delete_job(&self, job_id: Uuid) -> Result<(), StoreError>;
    /// Records an idempotency key unless a live one (expiring after `now`) holds its task and
    /// key: then writes nothing and returns that one. Expired records may be removed meanwhile
    /// (a bounded number per call).
    async fn claim_idempotency_key(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// The record of a task's key, expired or not.
    async fn get_idempotency_key(
        &self,
        task_id: &str,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;
    /// Replaces the record of `record`'s task and key if it still names `record.job_id` (its
    /// creator adds the answer); `false` when it does not.
    async fn complete_idempotency_key(
        &self,
        record: &IdempotencyRecord,
    ) -> Result<bool, StoreError>;
    /// Removes the record of a task's key if it still names `job_id` (its creation failed, so
    /// the key may be used again at once).
    async fn release_idempotency_key(
        &self,
        task_id: &str,
        key: &str,
        job_id: Uuid,
    ) -> Result<(), StoreError>;
    /// Tasks in insertion order.
    async fn list_tasks(&self, page: Page) -> Result<Paged<TaskSummary>, StoreError>;
    /// Tasks whose id contains any of `words` as a whole word (ids split at non-alphanumerics),
    /// case-insensitively, in insertion order.
    async fn search_tasks(
        &self,
        words: &[String],
        page: Page,
    ) -> Result<Paged<TaskSummary>, StoreError>;
    /// The task, or `None` when no job was ever posted to it.
    async fn get_task(&self, task_id: &str) -> Result<Option<Task>, StoreError>;
    /// One page of the task's jobs, most recently modified first (ties by job id), and how
    /// many the task has: an index-backed query, so a task of 100 000 jobs is never loaded whole.
    async fn list_jobs(&self, task_id: &str, page: Page) -> Result<Paged<Job>, StoreError>;
    /// The job, or `None` when no job has this id in this task.
    async fn get_job(&self, task_id: &str, job_id: Uuid) -> Result<Option<Job>, StoreError>;
    /// How many executions the job has had (`executionCount`), those retention removed
    /// included.
    async fn count_executions(&self, job_id: Uuid) -> Result<u64, StoreError>;
    /// The job's newest `limit` executions, newest first, with their output.
    async fn list_executions(&self, job_id: Uuid, limit: u64)
        -> Result<Vec<Execution>, StoreError>;
    /// The job's newest `limit` executions, newest first, each `log` and `error` cut to its
    /// last `max_bytes` (0 = whole) by the store itself, so a list never loads whole outputs.
    async fn list_execution_tails(
        &self,
        job_id: Uuid,
        limit: u64,
        max_bytes: u64,
    ) -> Result<Vec<ExecutionTail>, StoreError>;
    /// The job's newest execution without its output (`log` and `error` are `None`): what
    /// status checks need (overlap at a firing, PUT, stop, retry), without loading up to
    /// `EXECUTION_OUTPUT_MAX_BYTES` twice for nothing.
    async fn last_execution(&self, job_id: Uuid) -> Result<Option<Execution>, StoreError>;
    /// One execution with its output.
    async fn get_execution(&self, execution_id: Uuid) -> Result<Option<Execution>, StoreError>;
    /// One execution with at most the last `max_bytes` of each output (`Some(0)`: whole), or
    /// without output (`None`: `log` and `error` are `None`), cut by the store itself.
    async fn get_execution_tail(
        &self,
        execution_id: Uuid,
        max_bytes: Option<u64>,
    ) -> Result<Option<ExecutionTail>, StoreError>;
    /// The length in bytes of the execution's stored `stream` output; `None` when it has none.
    async fn output_len(
        &self,
        execution_id: Uuid,
        stream: OutputStream,
    ) -> Result<Option<u64>, StoreError>;
    /// At most `max_len` bytes of the execution's stored `stream` output from `offset`, fewer
    /// only at its end (none past it, or without output): what the output routes send, piece
    /// by piece, so that a whole output is never in memory.
    async fn read_output(
        &self,
        execution_id: Uuid,
        stream: OutputStream,
        offset: u64,
        max_len: u64,
    ) -> Result<Vec<u8>, StoreError>;
    /// Writes the execution record; its output too when `log` or `error` is set. Refused with
    /// `Conflict` when the stored execution is terminal and this write would change its status:
    /// a terminal status is final (a stop and a finishing run cannot overwrite each other).
    /// With `fence` (a runner's claim, see [`Store::claim_execution`]) it is refused with
    /// `Fenced` unless the stored claim is still that one (and when the execution is gone); `None` writes whoever claimed it
    /// (a stop, a timeout, a sweep: those must always win).
    /// A write that changes the status (or inserts) adds the entries of `execution.outbox` not
    /// stored yet, in the same atomic write; other writes leave the outbox alone.
    async fn update_execution(
        &self,
        execution: &Execution,
        fence: Option<u64>,
    ) -> Result<(), StoreError>;
    /// Claims the execution for a new runner (a JobActor beginning it): atomically increments
    /// its fencing counter and returns the new value, which that runner passes to each of its
    /// writes; a runner that claimed it before has its next write refused. `None` when the
    /// execution does not exist.
    async fn claim_execution(&self, execution_id: Uuid) -> Result<Option<u64>, StoreError>;
    /// Inserts the execution unless one with its id exists; `true` when inserted.
    async fn create_execution(&self, execution: &Execution) -> Result<bool, StoreError>;
    /// Writes the job record (image, command, metadata, schedule, pending runs) if the stored
    /// job's version is still `job.version` (a row without a version counts as 0), storing
    /// `job.version + 1`. Refused with `Conflict` when another write came first, or the job is
    /// gone: the caller reads again and decides again.
    async fn update_job(&self, job: &Job) -> Result<(), StoreError>;
    /// `(job id, task id, attention time)` of up to `limit` jobs with a future firing or a
    /// pending run, in ([`Job::attention_at`], job id) order, strictly after `after` (from the
    /// start when `None`): how the scheduler loads its index at start, a bounded page at a
    /// time, each an index range scan (keyset paging), never every record at once.
    async fn scheduled_page(
        &self,
        after: Option<(Timestamp, Uuid)>,
        limit: usize,
    ) -> Result<Vec<(Uuid, String, Timestamp)>, StoreError>;
    /// `(job id, task id, attention time)` of up to `limit` jobs whose [`Job::attention_at`] is
    /// at or before `before`, soonest first: how a node learns of schedules another node
    /// created or moved, and of pending runs a crashed writer left.
    async fn scheduled_before(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<(Uuid, String, Timestamp)>, StoreError>;
    /// Appends a webhook attempt to the execution's `webhookDispatch`, keeping the newest
    /// `keep` entries, atomically (several hooks of one execution are sent concurrently).
    async fn append_webhook_dispatch(
        &self,
        execution_id: Uuid,
        entry: serde_json::Value,
        keep: usize,
    ) -> Result<(), StoreError>;
    /// Up to `limit` outboxes with a delivery due at or before `now`, soonest due first (an
    /// indexed query: settled deliveries are not in the index).
    async fn due_outboxes(&self, now: Timestamp, limit: usize) -> Result<Vec<Outbox>, StoreError>;
    /// The execution's outbox; `None` when it owes or owed nothing.
    async fn get_outbox(&self, execution_id: Uuid) -> Result<Option<Outbox>, StoreError>;
    /// Replaces the outbox's entries and recomputes its due time, if its version is still
    /// `expected` (compare-and-set: a claim or a settlement made from a stale read loses);
    /// `true` when written.
    async fn replace_outbox(
        &self,
        execution_id: Uuid,
        expected: u64,
        entries: &[OwedNotification],
    ) -> Result<bool, StoreError>;
    /// Up to `limit` executions in `status` whose id is greater than `after`, by id, without
    /// their outputs: the sweeps page through them with the last id as the cursor (an index
    /// range read per page, whatever the number of executions).
    async fn executions_in(
        &self,
        status: ExecutionStatus,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Execution>, StoreError>;
    /// The executions `filter` matches, newest created first (ties in a fixed order),
    /// without their outputs (`log` and `error` are `None`), and how many match: index range
    /// reads, whatever the number of executions stored.
    async fn find_executions(
        &self,
        filter: &ExecutionFilter,
        page: Page,
    ) -> Result<Paged<Execution>, StoreError>;
    /// Up to `limit` ids of executions retention may remove because of their age: terminal,
    /// owing no notification, created and finished before `before`, and not the newest of their
    /// job (a job always shows its last run); oldest first.
    async fn finished_before(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError>;
    /// Up to `limit` ids of the job's terminal executions owing no notification, finished
    /// before `settled`, that come after its newest `keep` executions (of any status), oldest
    /// first.
    async fn finished_beyond(
        &self,
        job_id: Uuid,
        keep: u64,
        settled: Timestamp,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError>;
    /// Up to `limit` job ids greater than `after`, by id: retention pages through the jobs.
    async fn job_ids_after(
        &self,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<Uuid>, StoreError>;
    /// Removes these executions with their outputs and settled outboxes, each only if it is
    /// still terminal and owes nothing, and counts them as removed on their job so that
    /// [`Store::count_executions`] keeps counting every execution the job ever had. Returns how
    /// many went.
    async fn remove_executions(&self, ids: &[Uuid]) -> Result<u64, StoreError>;
    /// Counts for `/status/`.
    async fn counts(&self) -> Result<StoreCounts, StoreError>;
    /// A cheap round trip, for `/healthcheck`.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Record counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreCounts {
    /// Tasks stored (`tasks.count` in `/status/`).
    pub tasks: u64,
    /// Jobs stored (`jobs.count` in `/status/`).
    pub jobs: u64,
    /// Jobs with a future firing or a pending run (`jobs.scheduledCount`).
    pub scheduled: u64,
    /// E-mails owed: outbox entries not settled yet (`queues.notify`), counted over at most
    /// [`OUTBOXES_COUNTED`] executions that owe something.
    pub owed_emails: u64,
    /// Webhook calls owed, the same way (`queues.webhooks`).
    pub owed_webhooks: u64,
}

/// How many executions owing notifications [`Store::counts`] looks at, at most: `/status/`
/// stays cheap however large a backlog grows (the counts are then lower bounds).
pub const OUTBOXES_COUNTED: usize = 1_000;

/// A unit of work in the queue: run one execution. Its id is the execution id, which makes
/// pushing idempotent (reconciliation may push again what is already queued).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueMessage {
    /// The execution id as text: pushing the same execution twice queues it once.
    pub id: String,
    /// The task of the execution, carried for logs and dead letters.
    pub task_id: String,
    /// The job of the execution.
    pub job_id: Uuid,
    /// The execution to run.
    pub execution_id: Uuid,
}

impl QueueMessage {
    /// The message that runs `execution`.
    pub fn run(execution: &Execution) -> QueueMessage {
        QueueMessage {
            id: execution.execution_id.to_string(),
            task_id: execution.task_id.clone(),
            job_id: execution.job_id,
            execution_id: execution.execution_id,
        }
    }
}

/// A leased message and how many times it has been delivered (1 on the first lease).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The leased message.
    pub message: QueueMessage,
    /// Leases of the message so far, this one included.
    pub deliveries: u32,
}

/// Queue sizes for `/status/`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Due and not leased.
    pub ready: u64,
    /// Due in the future.
    pub delayed: u64,
    /// Leased by a consumer.
    pub leased: u64,
    /// In the dead-letter list.
    pub dead: u64,
}

/// A message taken out of circulation: it refers to nothing runnable, or every delivery of it
/// failed (its runner crashed or lost the lease) [`MAX_FAILED_DELIVERIES`] times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message as it was queued.
    pub message: QueueMessage,
    /// Why it left circulation, shown among the newest dead letters of `/status/`.
    pub reason: String,
    /// When it was dead-lettered.
    pub at: Timestamp,
    /// How many times it had been leased by then.
    pub deliveries: u32,
}

/// Failed deliveries (a crashed runner, an expired lease, a node restarting without having
/// finished it) after which a message goes to the dead-letter list instead of looping. Voluntary
/// releases (no host available, waiting out a host fault) do not count.
pub const MAX_FAILED_DELIVERIES: u32 = 5;

/// A failure of the queue's backend; [`Slots`] and [`HostBlacklist`], kept by the same backend,
/// fail with it too.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The backend cannot be reached or cannot take writes for now (e.g. a failover).
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug or corrupt data.
    #[error("queue error: {0}")]
    Internal(String),
}

/// A reliable FIFO queue with leases: a leased message is invisible to other consumers until it
/// is acknowledged (gone), released (visible again after a delay), failed, or its lease expires.
/// An expired lease counts as a failed delivery; a message failed [`MAX_FAILED_DELIVERIES`]
/// times is moved to the dead-letter list when it would next be delivered.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Adds a message due at `due`; a message with the same id already present (queued, leased
    /// or dead-lettered) is left as is.
    async fn push(&self, message: &QueueMessage, due: Timestamp) -> Result<(), QueueError>;
    /// Leases up to `max` due messages, oldest due first (FIFO among equal due times), for
    /// `lease_for`.
    async fn lease(
        &self,
        consumer: &str,
        max: usize,
        lease_for: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;
    /// Extends the leases `consumer` holds on `ids`, and the [`Slots`] held by `ids` (as
    /// holders, whoever the consumer), in one operation. Returns the ids among `ids` that
    /// `consumer` no longer holds (acknowledged, or expired and taken back or leased by another
    /// consumer): their runners have lost them. An expired lease nobody took yet is renewed.
    async fn renew(
        &self,
        consumer: &str,
        ids: &[String],
        lease_for: Duration,
    ) -> Result<Vec<String>, QueueError>;
    /// Removes a message for good.
    async fn ack(&self, id: &str) -> Result<(), QueueError>;
    /// Makes a leased message visible again after `delay` (not a failure).
    async fn release(&self, id: &str, delay: Duration) -> Result<(), QueueError>;
    /// Records a failed delivery (its runner crashed): visible again after `delay`, or moved to
    /// the dead-letter list with `reason` once it failed [`MAX_FAILED_DELIVERIES`] times.
    /// `true` when dead-lettered.
    async fn fail(&self, id: &str, delay: Duration, reason: &str) -> Result<bool, QueueError>;
    /// Moves a message to the dead-letter list at once (it can never run).
    async fn dead_letter(&self, id: &str, reason: &str) -> Result<(), QueueError>;
    /// The newest `limit` dead letters, newest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError>;
    /// Up to `limit` dead letters buried after position `after` (0: from the first), oldest
    /// first, and the position to continue after: the sweep pages through every dead letter
    /// with it. Positions only grow (retention removes the oldest letters without moving the
    /// others), so a cursor kept between sweeps sees each one once.
    async fn dead_letters_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, u64), QueueError>;
    /// Removes up to `limit` of the oldest dead letters buried before `before` (retention);
    /// positions of the others do not change. Returns how many went.
    async fn remove_dead_letters_before(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<u64, QueueError>;
    /// Releases every lease `consumer` holds: a node taking back its own work at start (`failed`:
    /// its previous life ended without finishing them) or giving it up as it stops.
    async fn release_all(&self, consumer: &str, failed: bool) -> Result<u64, QueueError>;
    /// Queue sizes.
    async fn stats(&self) -> Result<QueueStats, QueueError>;
    /// A cheap round trip, for `/healthcheck`.
    async fn ping(&self) -> Result<(), QueueError>;
}

/// Concurrency slots: the semaphore behind a farm's `maxRunning` and a task's `maxConcurrent`.
/// A slot is leased, like a queue message; in a shared backend the count holds across nodes.
///
/// A backend implements it together with [`Queue`], on the same data: [`Queue::renew`] extends
/// the slots of the holders it renews (a holder is a message id), in the same round trip, so a
/// JobActor's slots live exactly as long as its lease. Hence `Slots` has no renew of its own, and
/// the node takes its slots from the backend that serves its queue. Errors are [`QueueError`]s.
#[async_trait]
pub trait Slots: Send + Sync + 'static {
    /// Takes one slot of every `(pool, limit)` for `holder`, all or none, each leased for
    /// `lease_for`; `true` when held (also when `holder` held them already). A backend shared
    /// by several nodes serves them first come, first served: a holder refused a pool waits
    /// for it, and a freed slot goes to a newer holder only when more are free than waiters
    /// ahead of it that still ask (at least every few seconds).
    async fn acquire(
        &self,
        holder: &str,
        pools: &[(String, u32)],
        lease_for: Duration,
    ) -> Result<bool, QueueError>;
    /// Gives back every slot `holder` has.
    async fn release(&self, holder: &str) -> Result<(), QueueError>;
    /// Slots in use per pool, by pool name; pools with none in use are left out.
    async fn in_use(&self) -> Result<Vec<(String, u64)>, QueueError>;
}

/// The Docker hosts (`host:port`) taken out of placement: a blacklisted host gets no new
/// executions (those it runs finish). Kept by the queue's backend, so shared by every node that
/// shares the queue. Errors are [`QueueError`]s.
#[async_trait]
pub trait HostBlacklist: Send + Sync + 'static {
    /// Adds a host; adding it again changes nothing.
    async fn add(&self, host: &str) -> Result<(), QueueError>;
    /// Removes a host; removing an absent one changes nothing.
    async fn remove(&self, host: &str) -> Result<(), QueueError>;
    /// Every blacklisted host, sorted.
    async fn list(&self) -> Result<Vec<String>, QueueError>;
}

/// An execution whose `log` and `error` may hold only their ends (see
/// [`Store::list_execution_tails`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionTail {
    /// The record, with the ends of its outputs.
    pub execution: Execution,
    /// Whether `log` lost its beginning.
    pub log_cut: bool,
    /// Whether `error` lost its beginning.
    pub error_cut: bool,
}

impl ExecutionTail {
    /// Cuts a whole execution's outputs to their last `max_bytes` (0 = whole).
    pub fn of(mut execution: Execution, max_bytes: u64) -> ExecutionTail {
        let cut = |output: &mut Option<Vec<u8>>| match output {
            Some(bytes) if max_bytes > 0 && bytes.len() as u64 > max_bytes => {
                bytes.drain(..bytes.len() - max_bytes as usize);
                true
            }
            _ => false,
        };
        let log_cut = cut(&mut execution.log);
        let error_cut = cut(&mut execution.error);
        ExecutionTail {
            execution,
            log_cut,
            error_cut,
        }
    }
}

/// One of an execution's two stored outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputStream {
    /// The container's stdout: the execution's `log`.
    Stdout,
    /// The container's stderr: the execution's `error`.
    Stderr,
}

impl OutputStream {
    /// The name stores use for it: `log` or `error`, as the execution's fields.
    pub fn field(self) -> &'static str {
        match self {
            OutputStream::Stdout => "log",
            OutputStream::Stderr => "error",
        }
    }

    /// This output of a whole execution.
    pub fn of(self, execution: &Execution) -> Option<&[u8]> {
        match self {
            OutputStream::Stdout => execution.log.as_deref(),
            OutputStream::Stderr => execution.error.as_deref(),
        }
    }
}

/// How long a queue lease lasts before another consumer may take the message, by default
/// (`QUEUE_LEASE_SECONDS`).
pub const LEASE_DURATION: Duration = Duration::from_secs(60);

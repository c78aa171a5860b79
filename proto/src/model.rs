//! Tasks, jobs and executions: the records the store keeps.
//!
//! Task (user-chosen id) → Job (uuid; image, command, options) → Execution (uuid; one container
//! run). Retries and later firings create new executions of the same job.

use crate::schedule::JobSchedule;
use crate::status::ExecutionStatus;
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A group of jobs, created on the first job posted to its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The user-chosen id from the URL (`taskId` in the API).
    pub task_id: String,
    /// When the first job of the task was posted (`createdAt`).
    pub created_at: Timestamp,
    /// When a job of the task was last created or replaced (`lastModifiedAt`).
    pub last_modified_at: Timestamp,
}

/// A task with the number of its jobs, as listed by `/tasks/` and `/search/`.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSummary {
    /// The task itself.
    pub task: Task,
    /// How many jobs the task holds (`jobsCount`).
    pub jobs_count: u64,
}

/// A job: what to run and how. Field names of `metadata` are the original's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The task the job belongs to (`taskId`).
    pub task_id: String,
    /// The job's id: new for a POST, the URL's for a PUT.
    pub job_id: Uuid,
    /// The Docker image reference to run, as requested.
    pub image: String,
    /// The command line, split shell-style into the container's argv when it runs.
    pub command: String,
    /// The address of the client that posted the job (`requestIPAddress`).
    pub request_ip: Option<String>,
    /// The job's options and retry bookkeeping, shown as `metadata`.
    pub metadata: JobMetadata,
    /// Whether the job fires on a cron; cleared when the job is stopped.
    pub scheduled: bool,
    /// Future firings (`startAt`, `startIn`, `cron`), owned by the scheduler.
    #[serde(default)]
    pub schedule: Option<JobSchedule>,
    /// When the job was first created (`createdAt`); a PUT that replaces the job keeps it.
    pub created_at: Timestamp,
    /// When a request, a stop, a retry or a new schedule last changed the job (`lastModifiedAt`).
    pub last_modified_at: Timestamp,
    /// The version read: every store write of the job is conditional on it and stores it plus
    /// one, so a writer that read the job before another wrote it is refused (`Conflict`) and
    /// must read again. A stop, a PUT, a retry and a firing cannot overwrite each other. Rows
    /// stored before versions existed read as 0.
    #[serde(default)]
    pub version: u64,
    /// Runs decided by a write of this job whose executions may not exist yet (see
    /// [`PendingRun`]); at most one firing per due slot ([`crate::schedule::MISFIRE_CAP`]) and
    /// one retry, because each writer completes them before it decides anything new.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingRun>,
}

/// A firing or an automatic retry decided by a conditional write of its job, recorded on the
/// job in that same write, before its execution is created: a stop that wins afterwards takes
/// it off the job and ends it, and a crash before its execution exists loses nothing (the
/// scheduler finds jobs with pending runs [`PENDING_GRACE`] after they were recorded and
/// completes them). Creating it twice is harmless: its execution id is derived.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingRun {
    /// The execution to create (a firing's or a retry's derived id).
    pub execution_id: Uuid,
    /// When its queue message is due (a retry's back-off).
    pub due: Timestamp,
    /// For a firing: the slot it fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<Timestamp>,
    /// For a retry: the failed execution it retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<Uuid>,
    /// The image to run (a retry keeps its failed run's).
    pub image: String,
    /// The command to run (a retry keeps its failed run's).
    pub command: String,
    /// When the decision was written.
    pub recorded_at: Timestamp,
}

/// How long a pending run is left to the writer that recorded it before the scheduler
/// completes it (only after a crash, or a store fault, is it still pending then).
pub const PENDING_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl PendingRun {
    /// The run's execution of `job`, created at `now`, waiting in the queue.
    pub fn execution(&self, job: &Job, now: Timestamp) -> Execution {
        let mut execution = Execution::with_id(self.execution_id, job, None, now);
        execution.image = self.image.clone();
        execution.command = self.command.clone();
        execution.metadata.scheduled_at = self.scheduled_at.map(|slot| slot.iso());
        execution.metadata.retry_of = self.retry_of;
        execution
    }
}

impl Job {
    /// When the scheduler must look at the job: its next firing (none while paused), or earlier
    /// a while after a run was recorded pending (then it completes the run).
    pub fn attention_at(&self) -> Option<Timestamp> {
        let grace = PENDING_GRACE.as_micros() as i64;
        let pending = self
            .pending
            .iter()
            .map(|run| Timestamp(run.recorded_at.0.saturating_add(grace)))
            .min();
        let next = self
            .schedule
            .as_ref()
            .and_then(|schedule| schedule.due_at());
        match (next, pending) {
            (Some(next), Some(pending)) => Some(next.min(pending)),
            (next, pending) => next.or(pending),
        }
    }
}

/// Retry back-off of a job: `minMs × factor^n`, capped at `maxMs` (n = 1 for the first retry).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// The first retry's delay in milliseconds (`minMs`).
    pub min_ms: u64,
    /// The multiplier from one retry's delay to the next.
    pub factor: f64,
    /// The cap on any retry's delay in milliseconds (`maxMs`).
    pub max_ms: u64,
}

impl Backoff {
    /// The delay before retry number `retry` (1-based).
    pub fn delay(&self, retry: u32) -> std::time::Duration {
        crate::backoff::capped_exponential(self.min_ms, self.factor, retry, self.max_ms)
    }
}

/// The job's options, stored and shown under `metadata` with the original's key names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobMetadata {
    /// How many automatic retries a failed execution may have.
    pub retries: u32,
    /// Retries made so far; set past `retries` when the job is stopped, so nothing retries again.
    pub retry_count: u32,
    /// E-mail recipients per outcome list (`starts`, `succeeds`, `fails`, `finishes`); the
    /// original's `notify` field.
    #[serde(rename = "notify")]
    pub emails: Value,
    /// Webhooks per outcome list (`starts`, `succeeds`, `fails`, `finishes`), as `{url, ..}`.
    pub webhooks: Value,
    /// Unix time in seconds: an execution not started by then ends `expired` without running.
    pub expiration: Option<i64>,
    /// Effective timeout in seconds: `min(requested, HARD_EXECUTION_TIMEOUT_SECONDS)`.
    pub timeout: u64,
    /// Environment variables of the container by name; the API redacts secret-looking values.
    pub envs: BTreeMap<String, String>,
    /// Host name and IP pairs for the container's hosts file (`additionalDNSEntries` in requests).
    pub additional_dns_entries: Vec<(String, String)>,
    /// The request's own `metadata` object, kept as is; webhooks carry it as `metadata.custom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Map<String, Value>>,
    /// Id of the queue message the job last waited on: its execution's, a retry's or a firing's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_id: Option<String>,
    /// The cron expression of a cron job, as requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// At most this many executions of the task run at once (set by the job, applies to the
    /// whole task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Per-job retry back-off; the configured default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Resources, labels, working directory, user and stop grace period of its containers.
    #[serde(
        default,
        skip_serializing_if = "crate::container::ContainerOptions::is_default"
    )]
    pub container: crate::container::ContainerOptions,
}

/// One run of a job in one container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// The execution's id (`executionId`): random for a request; derived from the job and slot
    /// for a firing and from the failed execution for a retry, so every node derives the same.
    pub execution_id: Uuid,
    /// The task of the job, shown as `task.id` beside the execution.
    pub task_id: String,
    /// The job this execution runs.
    pub job_id: Uuid,
    /// The image this run uses, copied from the job (a retry keeps its failed run's).
    pub image: String,
    /// The command this run uses, copied from the job (a retry keeps its failed run's).
    pub command: String,
    /// The client that asked for this run (`requestIPAddress`); `None` for firings and retries.
    pub request_ip: Option<String>,
    /// Where the run stands; once terminal it never changes again.
    pub status: ExecutionStatus,
    /// When the execution was created, i.e. enqueued (`createdAt`).
    pub created_at: Timestamp,
    /// When the execution was last written to the store; not shown by the API.
    pub last_modified_at: Timestamp,
    /// When its container started (`startedAt`); `None` until then.
    pub started_at: Option<Timestamp>,
    /// When it reached a terminal status (`finishedAt`); `None` until then.
    pub finished_at: Option<Timestamp>,
    /// The container's exit code (`exitCode`); `None` when no container exited.
    pub exit_code: Option<i64>,
    /// Where it ran, its warnings, firing and retry links, webhook attempts.
    pub metadata: ExecutionMetadata,
    /// The container's whole stdout, bytes as written (not necessarily UTF-8). Kept apart from
    /// the record by the stores.
    #[serde(skip)]
    pub log: Option<Vec<u8>>,
    /// The container's whole stderr, or the message of a failure before it ran.
    #[serde(skip)]
    pub error: Option<Vec<u8>>,
    /// The notifications this write's status makes owed ([`crate::outbox::owed`]); the store
    /// adds them only when the write changes the status. Kept apart from the record: reads
    /// leave it empty (the stored outbox is read with the store's `get_outbox`).
    #[serde(skip)]
    pub outbox: Vec<crate::outbox::OwedNotification>,
}

/// Where and how an execution ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutionMetadata {
    /// The Docker host it was placed on, set at placement; a restarted node collects it there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_host: Option<String>,
    /// The Docker port of that host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_port: Option<u16>,
    /// The Docker container's id, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Things that went wrong but did not stop the run (e.g. a failed pull of a present image).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// For a scheduled firing: the time it was due (ISO, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    /// For an automatic retry: the execution it retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<Uuid>,
    /// Every webhook attempt for this execution (the newest [`WEBHOOK_DISPATCH_KEPT`]).
    #[serde(
        default,
        rename = "webhookDispatch",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub webhook_dispatch: Vec<serde_json::Value>,
    /// Set only when the stored output was cut to its head and tail: how many bytes of each
    /// stream were left out of the middle.
    #[serde(
        default,
        rename = "outputTruncated",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_truncated: Option<OutputTruncated>,
}

/// How many bytes of each stream were left out of a stored output (`EXECUTION_OUTPUT_MAX_BYTES`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTruncated {
    /// Bytes left out of the middle of stdout (the execution's `log`).
    pub stdout: u64,
    /// Bytes left out of the middle of stderr (the end of the execution's `error`).
    pub stderr: u64,
}

/// Webhook attempts kept on an execution.
pub const WEBHOOK_DISPATCH_KEPT: usize = 20;

impl Execution {
    /// A new execution of `job`, waiting in the queue.
    pub fn new(job: &Job, request_ip: Option<String>, now: Timestamp) -> Execution {
        Self::with_id(Uuid::new_v4(), job, request_ip, now)
    }

    /// A new execution of `job` with a chosen id (deterministic for firings and retries).
    pub fn with_id(
        execution_id: Uuid,
        job: &Job,
        request_ip: Option<String>,
        now: Timestamp,
    ) -> Execution {
        Execution {
            execution_id,
            task_id: job.task_id.clone(),
            job_id: job.job_id,
            image: job.image.clone(),
            command: job.command.clone(),
            request_ip,
            status: ExecutionStatus::Enqueued,
            created_at: now,
            last_modified_at: now,
            started_at: None,
            finished_at: None,
            exit_code: None,
            metadata: ExecutionMetadata::default(),
            log: None,
            error: None,
            outbox: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job_firing_at(next: Option<Timestamp>) -> Job {
        Job {
            task_id: "task".into(),
            job_id: Uuid::new_v4(),
            image: "image:1".into(),
            command: "true".into(),
            request_ip: None,
            metadata: JobMetadata {
                retries: 0,
                retry_count: 0,
                emails: Value::Null,
                webhooks: Value::Null,
                expiration: None,
                timeout: 60,
                envs: BTreeMap::new(),
                additional_dns_entries: Vec::new(),
                custom: None,
                enqueued_id: None,
                cron: None,
                max_concurrent: None,
                container: Default::default(),
                backoff: None,
            },
            scheduled: true,
            schedule: Some(schedule(Some("* * * * *"), next)),
            created_at: Timestamp(1),
            last_modified_at: Timestamp(1),
            version: 0,
            pending: Vec::new(),
        }
    }

    fn schedule(cron: Option<&str>, next: Option<Timestamp>) -> JobSchedule {
        JobSchedule {
            cron: cron.map(String::from),
            timezone: None,
            next_fire_at: next,
            misfire: Default::default(),
            overlap: Default::default(),
            missed: Vec::new(),
            missed_count: 0,
            paused: false,
            paused_at: None,
            resumed_at: None,
        }
    }

    /// A job stored before versions and pending runs existed reads as version 0 with none.
    #[test]
    fn rows_without_a_version_read_as_version_zero() {
        let job = job_firing_at(Some(Timestamp(100)));
        let mut row = serde_json::to_value(&job).expect("serializes");
        let fields = row.as_object_mut().expect("object");
        assert!(
            !fields.contains_key("pending"),
            "empty pending is not written"
        );
        fields.remove("version");
        let read: Job = serde_json::from_value(row).expect("parses");
        assert_eq!((read.version, read.pending.len()), (0, 0));
    }

    /// The scheduler looks at a job at its next firing, or earlier once a pending run has
    /// waited its grace; with neither, never.
    #[test]
    fn attention_at_takes_the_earliest_of_firing_and_pending_runs() {
        let mut job = job_firing_at(Some(Timestamp(100_000_000)));
        assert_eq!(job.attention_at(), Some(Timestamp(100_000_000)));
        let run = PendingRun {
            execution_id: Uuid::new_v4(),
            due: Timestamp(5),
            scheduled_at: Some(Timestamp(5)),
            retry_of: None,
            image: job.image.clone(),
            command: job.command.clone(),
            recorded_at: Timestamp(1_000_000),
        };
        job.pending.push(run.clone());
        assert_eq!(job.attention_at(), Some(Timestamp(11_000_000)));
        job.schedule = None;
        assert_eq!(job.attention_at(), Some(Timestamp(11_000_000)));
        let execution = run.execution(&job, Timestamp(7));
        assert_eq!(execution.execution_id, run.execution_id);
        assert_eq!(execution.metadata.scheduled_at, Some(Timestamp(5).iso()));
        job.pending.clear();
        assert_eq!(job.attention_at(), None);
    }
}

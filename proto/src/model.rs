//! Tasks, jobs and executions: the records the store keeps.
//!
//! Task (user-chosen id) → Job (uuid; image, command, options) → Execution (uuid; one container
//! run). Retries and later firings create new executions of the same job.

use crate::status::ExecutionStatus;
use crate::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A group of jobs, created on the first job posted to its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub task_id: String,
    pub created_at: Timestamp,
    pub last_modified_at: Timestamp,
}

/// A task with the number of its jobs, as listed by `/tasks/` and `/search/`.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSummary {
    pub task: Task,
    pub jobs_count: u64,
}

/// A job: what to run and how. Field names of `metadata` are the original's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub task_id: String,
    pub job_id: Uuid,
    pub image: String,
    pub command: String,
    pub request_ip: Option<String>,
    pub metadata: JobMetadata,
    pub scheduled: bool,
    pub created_at: Timestamp,
    pub last_modified_at: Timestamp,
}

/// The job's options, stored and shown under `metadata` with the original's key names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobMetadata {
    pub retries: u32,
    pub retry_count: u32,
    pub notify: Value,
    pub webhooks: Value,
    pub expiration: Option<i64>,
    /// Effective timeout in seconds: `min(requested, HARD_EXECUTION_TIMEOUT_SECONDS)`.
    pub timeout: u64,
    pub envs: BTreeMap<String, String>,
    pub additional_dns_entries: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
}

/// One run of a job in one container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub execution_id: Uuid,
    pub task_id: String,
    pub job_id: Uuid,
    pub image: String,
    pub command: String,
    pub request_ip: Option<String>,
    pub status: ExecutionStatus,
    pub created_at: Timestamp,
    pub last_modified_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: Option<i64>,
    pub metadata: ExecutionMetadata,
    /// The container's whole stdout, bytes as written (not necessarily UTF-8). Kept apart from
    /// the record by the stores.
    #[serde(skip)]
    pub log: Option<Vec<u8>>,
    /// The container's whole stderr, or the message of a failure before it ran.
    #[serde(skip)]
    pub error: Option<Vec<u8>>,
}

/// Where and how an execution ran.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecutionMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Things that went wrong but did not stop the run (e.g. a failed pull of a present image).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Execution {
    /// A new execution of `job`, waiting in the queue.
    pub fn new(job: &Job, request_ip: Option<String>, now: Timestamp) -> Execution {
        Execution {
            execution_id: Uuid::new_v4(),
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
        }
    }
}

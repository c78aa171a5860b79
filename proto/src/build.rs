//! Building a job, its schedule and its first execution from a validated request: what a POST
//! (new job) or a PUT (new or replaced job) stores. Pure: ids and times come from the caller.

use crate::model::{Execution, Job, JobMetadata};
use crate::payload::{EnqueueRequest, ScheduleRequest};
use crate::schedule::{firing_execution_id, CronSchedule, JobSchedule};
use crate::timestamp::Timestamp;
use uuid::Uuid;

/// What an enqueue stores: the job, the execution that runs now (`None` for a scheduled job),
/// and the id of the queue message it waits on (the execution's, or the next firing's).
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// The job record, with `metadata.enqueued_id` set to `queue_id`.
    pub job: Job,
    /// The execution that runs now; `None` when the job waits for its schedule.
    pub execution: Option<Execution>,
    /// The queue message the job waits on: its execution's id, or its next firing's.
    pub queue_id: String,
}

/// Where a job comes from: its ids, who asked, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct Origin {
    /// The task the job belongs to (created with the job when new).
    pub task_id: String,
    /// A new id for a POST; the id in the URL for a PUT.
    pub job_id: Uuid,
    /// The client's address, stored as `requestIPAddress`.
    pub request_ip: Option<String>,
    /// When the job was first created (kept by a PUT that replaces it).
    pub created_at: Timestamp,
    /// The time of the request: the job's `lastModifiedAt`, and where schedules count from.
    pub now: Timestamp,
}

/// Builds the job of `request`; its timeout is capped at `hard_timeout` seconds.
pub fn new_job(origin: Origin, request: EnqueueRequest, hard_timeout: u64) -> NewJob {
    let now = origin.now;
    let schedule = request
        .schedule
        .as_ref()
        .map(|requested| schedule(requested, &request, now));
    let cron = schedule.as_ref().and_then(|schedule| schedule.cron.clone());
    let mut job = Job {
        task_id: origin.task_id,
        job_id: origin.job_id,
        image: request.image,
        command: request.command,
        request_ip: origin.request_ip.clone(),
        metadata: JobMetadata {
            retries: request.retries,
            retry_count: 0,
            emails: request.emails,
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
            container: request.container,
        },
        scheduled: cron.is_some(),
        schedule,
        created_at: origin.created_at,
        last_modified_at: now,
        version: 0,
        pending: Vec::new(),
    };
    let (execution, queue_id) = match &job.schedule {
        None => {
            let execution = Execution::new(&job, origin.request_ip, now);
            let id = execution.execution_id.to_string();
            (Some(execution), id)
        }
        Some(schedule) => {
            let next = schedule.next_fire_at.unwrap_or(now);
            (None, firing_execution_id(job.job_id, next).to_string())
        }
    };
    job.metadata.enqueued_id = Some(queue_id.clone());
    NewJob {
        job,
        execution,
        queue_id,
    }
}

/// The schedule of a requested `startAt`, `startIn` or `cron`, with its first firing.
fn schedule(requested: &ScheduleRequest, request: &EnqueueRequest, now: Timestamp) -> JobSchedule {
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
        paused: false,
        paused_at: None,
        resumed_at: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::parse_enqueue;

    fn origin(now: Timestamp) -> Origin {
        Origin {
            task_id: "task".into(),
            job_id: Uuid::from_u128(7),
            request_ip: Some("10.0.0.1".into()),
            created_at: Timestamp(1),
            now,
        }
    }

    fn request(body: &str) -> EnqueueRequest {
        parse_enqueue(body.as_bytes()).expect("valid request")
    }

    /// A job without a schedule runs now: one execution, and the queue waits on its id.
    #[test]
    fn immediate_job_has_its_execution() {
        let now = Timestamp::from_unix_seconds(1_700_000_000);
        let built = new_job(
            origin(now),
            request(r#"{"image": "busybox", "command": "echo hi", "retries": 2}"#),
            3_600,
        );
        let execution = built.execution.expect("runs now");
        assert_eq!(built.queue_id, execution.execution_id.to_string());
        assert_eq!(built.job.metadata.enqueued_id, Some(built.queue_id.clone()));
        assert_eq!(execution.request_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(execution.command, "echo hi");
        assert_eq!(built.job.metadata.retries, 2);
        assert_eq!(built.job.created_at, Timestamp(1));
        assert_eq!(built.job.last_modified_at, now);
        assert!(built.job.schedule.is_none() && !built.job.scheduled);
    }

    /// The requested timeout is capped by the hard limit; absent, the hard limit applies.
    #[test]
    fn timeout_is_capped() {
        let now = Timestamp::from_unix_seconds(1_700_000_000);
        let capped = new_job(
            origin(now),
            request(r#"{"image": "a", "command": "x", "timeout": 9000}"#),
            600,
        );
        assert_eq!(capped.job.metadata.timeout, 600);
        let default = new_job(
            origin(now),
            request(r#"{"image": "a", "command": "x"}"#),
            600,
        );
        assert_eq!(default.job.metadata.timeout, 600);
        let short = new_job(
            origin(now),
            request(r#"{"image": "a", "command": "x", "timeout": 5}"#),
            600,
        );
        assert_eq!(short.job.metadata.timeout, 5);
    }

    /// `startIn` fires after the delay; the queue waits on the firing's derived id.
    #[test]
    fn start_in_fires_after_the_delay() {
        let now = Timestamp::from_unix_seconds(1_700_000_000);
        let built = new_job(
            origin(now),
            request(r#"{"image": "a", "command": "x", "startIn": "5m"}"#),
            600,
        );
        assert!(built.execution.is_none());
        let schedule = built.job.schedule.clone().expect("scheduled");
        let next = Timestamp::from_unix_seconds(1_700_000_300);
        assert_eq!(schedule.next_fire_at, Some(next));
        assert_eq!(schedule.cron, None);
        assert!(!built.job.scheduled, "only cron jobs count as scheduled");
        assert_eq!(
            built.queue_id,
            firing_execution_id(built.job.job_id, next).to_string()
        );
    }

    /// A cron job keeps its expression and time zone and fires at the next matching time.
    #[test]
    fn cron_job_fires_at_the_next_match() {
        let now = Timestamp::from_unix_seconds(1_700_000_000); // 2023-11-14T22:13:20Z
        let built = new_job(
            origin(now),
            request(r#"{"image": "a", "command": "x", "cron": "0 0 * * *", "timezone": "UTC"}"#),
            600,
        );
        let schedule = built.job.schedule.expect("scheduled");
        assert_eq!(schedule.cron.as_deref(), Some("0 0 * * *"));
        assert_eq!(schedule.timezone.as_deref(), Some("UTC"));
        assert_eq!(
            schedule.next_fire_at,
            Some(Timestamp::from_unix_seconds(1_700_006_400))
        );
        assert!(built.job.scheduled);
        assert_eq!(built.job.metadata.cron.as_deref(), Some("0 0 * * *"));
    }
}

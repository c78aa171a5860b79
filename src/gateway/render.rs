//! JSON DTOs: how tasks, jobs and executions look in the API. Field names, nesting and URLs are
//! the original's (spec §1); keys come out sorted, as Flask's `jsonify` sorted them.

use super::http::percent_encode;
use fastlane_actors::api::JobView;
use fastlane_actors::ports::Paged;
use fastlane_proto::redact::Redactor;
use fastlane_proto::schedule::JobSchedule;
use fastlane_proto::{Execution, Job, TaskSummary};
use serde_json::{json, Value};
use uuid::Uuid;

/// Builds absolute URLs from `http://{host}`.
pub struct Urls {
    pub base: String,
}

impl Urls {
    pub fn task(&self, task_id: &str) -> String {
        format!("{}/tasks/{}/", self.base, percent_encode(task_id))
    }

    pub fn job(&self, task_id: &str, job_id: Uuid) -> String {
        format!("{}jobs/{job_id}/", self.task(task_id))
    }

    pub fn execution(&self, task_id: &str, job_id: Uuid, execution_id: Uuid) -> String {
        format!("{}executions/{execution_id}/", self.job(task_id, job_id))
    }
}

pub use fastlane_proto::views::execution;
use fastlane_proto::views::iso;

/// The job's metadata with secret-looking env values redacted.
pub fn job_metadata(job: &Job, redactor: &Redactor) -> Value {
    let mut metadata = serde_json::to_value(&job.metadata).unwrap_or_default();
    metadata["envs"] =
        serde_json::to_value(redactor.redact(&job.metadata.envs)).unwrap_or_default();
    metadata
}

pub fn job_details(view: &JobView, urls: &Urls, redactor: &Redactor) -> Value {
    let job = &view.job;
    let executions: Vec<Value> = view
        .executions
        .iter()
        .map(|item| {
            let mut value = execution(item);
            value["url"] =
                Value::String(urls.execution(&job.task_id, job.job_id, item.execution_id));
            value
        })
        .collect();
    json!({
        "task": {"id": job.task_id, "url": urls.task(&job.task_id)},
        "job": {
            "createdAt": job.created_at.iso(),
            "lastModifiedAt": job.last_modified_at.iso(),
            "image": job.image,
            "command": job.command,
            "taskId": job.task_id,
            "scheduled": job.scheduled,
            "executionCount": view.execution_count,
            "requestIPAddress": job.request_ip,
            "metadata": job_metadata(job, redactor),
            "executions": executions,
            "schedule": job.schedule.as_ref().map(schedule),
        }
    })
}

/// A job's schedule: when it fires next, its policies, the firings it missed.
pub fn schedule(schedule: &JobSchedule) -> Value {
    let missed: Vec<Value> = schedule
        .missed
        .iter()
        .map(|missed| json!({"scheduledAt": missed.scheduled_at.iso(), "reason": missed.reason}))
        .collect();
    json!({
        "cron": schedule.cron,
        "timezone": schedule.timezone.as_deref().unwrap_or("UTC"),
        "nextFireAt": iso(schedule.next_fire_at),
        "misfire": schedule.misfire,
        "overlap": schedule.overlap,
        "missedCount": schedule.missed_count,
        "missed": missed,
    })
}

pub fn execution_details(item: &Execution, urls: &Urls) -> Value {
    json!({
        "task": {"id": item.task_id, "url": urls.task(&item.task_id)},
        "job": {"id": item.job_id.to_string(), "url": urls.job(&item.task_id, item.job_id)},
        "execution": execution(item),
    })
}

pub fn task_details(task_id: &str, jobs: &[Job], urls: &Urls) -> Value {
    let jobs: Vec<Value> = jobs
        .iter()
        .map(|job| {
            json!({
                "id": job.job_id.to_string(),
                "createdAt": job.created_at.iso(),
                "url": urls.job(task_id, job.job_id),
            })
        })
        .collect();
    json!({"taskId": task_id, "jobs": jobs})
}

/// A page of tasks; `page_url` builds the URL of another page.
pub fn task_page(
    paged: &Paged<TaskSummary>,
    page: u64,
    per_page: u64,
    urls: &Urls,
    page_url: impl Fn(u64) -> String,
) -> Value {
    let pages = paged.total.div_ceil(per_page);
    let items: Vec<Value> = paged
        .items
        .iter()
        .map(|summary| {
            json!({
                "taskId": summary.task.task_id,
                "createdAt": summary.task.created_at.iso(),
                "lastModifiedAt": summary.task.last_modified_at.iso(),
                "url": urls.task(&summary.task.task_id),
                "jobsCount": summary.jobs_count,
            })
        })
        .collect();
    let has_next = page < pages;
    let has_prev = page > 1;
    json!({
        "items": items,
        "total": paged.total,
        "page": page,
        "pages": pages,
        "perPage": per_page,
        "hasNext": has_next,
        "hasPrev": has_prev,
        "nextUrl": if has_next { Value::String(page_url(page + 1)) } else { Value::Null },
        "prevUrl": if has_prev { Value::String(page_url(page - 1)) } else { Value::Null },
    })
}

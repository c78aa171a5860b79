//! JSON DTOs: every JSON shape the API answers with (tasks, jobs, executions, enqueue and stop
//! answers, health and node status). Field names, nesting and URLs are the original's (spec §1);
//! keys come out sorted, as Flask's `jsonify` sorted them. Error bodies are `http::Failure`'s.

use super::http::percent_encode;
use fastlane_actors::messages::{Enqueued, Health, JobView, NodeStatus, ScheduledJob};
use fastlane_actors::ports::{DeadLetter, ExecutionTail, Paged};
use fastlane_proto::farm::Farm;
use fastlane_proto::redact::{redact_webhooks, Redactor};
use fastlane_proto::schedule::{CronSchedule, JobSchedule, SKIPPED_PAUSED};
use fastlane_proto::views::{execution, iso, mark_cut_outputs};
use fastlane_proto::Timestamp;
use fastlane_proto::{Execution, Job, TaskSummary};
use serde_json::{json, Value};
use uuid::Uuid;

/// Builds absolute URLs from `http://{host}`.
pub(crate) struct Urls {
    pub(crate) base: String,
}

impl Urls {
    pub(crate) fn task(&self, task_id: &str) -> String {
        format!("{}/tasks/{}/", self.base, percent_encode(task_id))
    }

    pub(crate) fn job(&self, task_id: &str, job_id: Uuid) -> String {
        format!("{}jobs/{job_id}/", self.task(task_id))
    }

    pub(crate) fn execution(&self, task_id: &str, job_id: Uuid, execution_id: Uuid) -> String {
        format!("{}executions/{execution_id}/", self.job(task_id, job_id))
    }
}

/// The job's metadata with secret-looking env values, every webhook header value and every
/// webhook URL's query values redacted.
fn job_metadata(job: &Job, redactor: &Redactor) -> Value {
    let mut metadata = serde_json::to_value(&job.metadata).unwrap_or_default();
    metadata["envs"] =
        serde_json::to_value(redactor.redact(&job.metadata.envs)).unwrap_or_default();
    metadata["webhooks"] = redact_webhooks(&job.metadata.webhooks);
    metadata
}

/// `GET …/jobs/{id}/`: the job, its metadata (envs redacted), newest executions and schedule.
pub(crate) fn job_details(view: &JobView, urls: &Urls, redactor: &Redactor) -> Value {
    let job = &view.job;
    let executions: Vec<Value> = view
        .executions
        .iter()
        .map(|item| {
            let mut value = execution(&item.execution);
            let url = urls.execution(&job.task_id, job.job_id, item.execution.execution_id);
            // Only when cut, so that details of small outputs keep the original's shape.
            mark_cut_outputs(&mut value, &url, item.log_cut, item.error_cut);
            value["url"] = Value::String(url);
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

/// A job's schedule: when it fires next, its policies, the firings it missed; whether it is
/// paused, and while it is, the firings that fell due since (`skipped`, `skippedCount`: the
/// `misfire` policy decides at the resume which of them run).
fn schedule(schedule: &JobSchedule) -> Value {
    let missed: Vec<Value> = schedule
        .missed
        .iter()
        .map(|missed| json!({"scheduledAt": missed.scheduled_at.iso(), "reason": missed.reason}))
        .collect();
    let cron = schedule
        .cron
        .as_deref()
        .and_then(|expression| CronSchedule::parse(expression, schedule.timezone.as_deref()).ok());
    let (skipped_count, skipped) = schedule.skipped_while_paused(cron.as_ref(), Timestamp::now());
    let skipped: Vec<Value> = skipped
        .iter()
        .map(|slot| json!({"scheduledAt": slot.iso(), "reason": SKIPPED_PAUSED}))
        .collect();
    json!({
        "cron": schedule.cron,
        "timezone": schedule.timezone.as_deref().unwrap_or("UTC"),
        "nextFireAt": iso(schedule.next_fire_at),
        "misfire": schedule.misfire,
        "overlap": schedule.overlap,
        "missedCount": schedule.missed_count,
        "missed": missed,
        "paused": schedule.paused,
        "pausedAt": iso(schedule.paused_at.filter(|_| schedule.paused)),
        "skippedCount": skipped_count,
        "skipped": skipped,
    })
}

/// `GET …/executions/{id}/`: the execution with links to its task and job; outputs longer
/// than `JOB_DETAILS_OUTPUT_MAX_BYTES` hold their ends, flagged and linked to the whole ones.
pub(crate) fn execution_details(found: &ExecutionTail, urls: &Urls) -> Value {
    let item = &found.execution;
    let mut shown = execution(item);
    let url = urls.execution(&item.task_id, item.job_id, item.execution_id);
    mark_cut_outputs(&mut shown, &url, found.log_cut, found.error_cut);
    json!({
        "task": {"id": item.task_id, "url": urls.task(&item.task_id)},
        "job": {"id": item.job_id.to_string(), "url": urls.job(&item.task_id, item.job_id)},
        "execution": shown,
    })
}

/// `GET /tasks/{id}/?page=N`: a page of the task's jobs with their links, and the paging
/// fields of [`task_page`]; `page_url` builds the URL of another page.
pub(crate) fn task_details(
    task_id: &str,
    jobs: &Paged<Job>,
    page: u64,
    per_page: u64,
    urls: &Urls,
    page_url: impl Fn(u64) -> String,
) -> Value {
    let items: Vec<Value> = jobs
        .items
        .iter()
        .map(|job| {
            json!({
                "id": job.job_id.to_string(),
                "createdAt": job.created_at.iso(),
                "url": urls.job(task_id, job.job_id),
            })
        })
        .collect();
    let mut answer = paging(jobs.total, page, per_page, page_url);
    answer["taskId"] = json!(task_id);
    answer["jobs"] = Value::Array(items);
    answer
}

/// The paging fields of a listing: `total`, `page`, `pages`, `perPage`, `hasNext`, `hasPrev`,
/// `nextUrl`, `prevUrl`.
fn paging(total: u64, page: u64, per_page: u64, page_url: impl Fn(u64) -> String) -> Value {
    let pages = total.div_ceil(per_page.max(1));
    let has_next = page < pages;
    let has_prev = page > 1;
    json!({
        "total": total,
        "page": page,
        "pages": pages,
        "perPage": per_page,
        "hasNext": has_next,
        "hasPrev": has_prev,
        "nextUrl": if has_next { Value::String(page_url(page + 1)) } else { Value::Null },
        "prevUrl": if has_prev { Value::String(page_url(page - 1)) } else { Value::Null },
    })
}

/// A page of tasks; `page_url` builds the URL of another page.
pub(crate) fn task_page(
    paged: &Paged<TaskSummary>,
    page: u64,
    per_page: u64,
    urls: &Urls,
    page_url: impl Fn(u64) -> String,
) -> Value {
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
    let mut answer = paging(paged.total, page, per_page, page_url);
    answer["items"] = Value::Array(items);
    answer
}

/// A page of an execution history (`GET …/jobs/{job}/executions/`, `GET /executions/`): each
/// execution as in the job details but without its output, with its links and its task and
/// job.
pub(crate) fn execution_page(
    paged: &Paged<Execution>,
    page: u64,
    per_page: u64,
    urls: &Urls,
    page_url: impl Fn(u64) -> String,
) -> Value {
    let items = paged
        .items
        .iter()
        .map(|item| {
            let mut value = execution(item);
            if let Some(fields) = value.as_object_mut() {
                fields.remove("log");
                fields.remove("error");
            }
            let url = urls.execution(&item.task_id, item.job_id, item.execution_id);
            value["stdoutUrl"] = Value::String(format!("{url}stdout"));
            value["stderrUrl"] = Value::String(format!("{url}stderr"));
            value["url"] = Value::String(url);
            value["task"] = json!({"id": item.task_id, "url": urls.task(&item.task_id)});
            value["job"] = json!({
                "id": item.job_id.to_string(),
                "url": urls.job(&item.task_id, item.job_id),
            });
            value
        })
        .collect();
    let mut answer = paging(paged.total, page, per_page, page_url);
    answer["items"] = Value::Array(items);
    answer
}

/// `/healthcheck`: whether the queue and the store answer (under the original's names `redis`
/// and `mongo`, whatever backs them), their errors, and what backs them.
pub(crate) fn health(health: &Health, backends: &(String, String)) -> Value {
    let mut errors = Vec::new();
    if let Err(message) = &health.queue {
        errors.push(json!({"source": "redis", "message": message}));
    }
    if let Err(message) = &health.store {
        errors.push(json!({"source": "mongo", "message": message}));
    }
    json!({
        "redis": health.queue.is_ok(),
        "mongo": health.store.is_ok(),
        "errors": errors,
        "backends": {"queue": backends.0, "store": backends.1},
    })
}

/// `/status/`: hosts (available ones first, as the original), their running containers, farm
/// slots, queue lengths with the newest dead letters, schedules and counts, and `warnings`
/// about the node's own configuration (e.g. anonymous access from the network).
pub(crate) fn node_status(
    node: &NodeStatus,
    farms: &[Farm],
    warnings: &[String],
    view: &StatusView<'_>,
) -> Value {
    let queue = node.queue.clone().unwrap_or_default();
    let counts = node.counts.clone().unwrap_or_default();
    let (scheduled, next) = node.scheduled;
    json!({
        "hosts": host_statuses(node),
        "containers": {"running": running_containers(node)},
        "farms": farm_usage(node, farms),
        "queues": {
            "jobs": {"length": queue.ready},
            "delayed": {"length": queue.delayed},
            "running": {"length": queue.leased},
            // The original's queues under their meaning here: executions a node holds and
            // watches (leased messages), e-mails and webhook calls owed (outbox entries).
            "monitor": {"length": queue.leased},
            "notify": {"length": counts.owed_emails},
            "webhooks": {"length": counts.owed_webhooks},
            "deadLetter": {
                "length": queue.dead,
                "newest": node.dead_letters.iter().map(dead_letter).collect::<Vec<_>>(),
            },
            "scheduled": {
                "length": scheduled,
                "nextTimeStamp": next.map(|next| next.0 as f64 / 1e6),
                "nextHumanReadableDate": next.map(|next| next.iso()),
            },
        },
        "tasks": {"count": counts.tasks},
        "jobs": {
            "count": counts.jobs,
            "scheduled": node
                .scheduled_jobs
                .iter()
                .map(|scheduled| scheduled_job(scheduled, view))
                .collect::<Vec<_>>(),
            "scheduledCount": counts.scheduled.max(node.scheduled_jobs.len() as u64),
        },
        "fastlane": {
            "version": env!("CARGO_PKG_VERSION"),
            "executor": "docker",
            "role": view.role.as_str(),
        },
        "warnings": warnings,
    })
}

/// What `/status/` needs beside the actors' answer.
pub(crate) struct StatusView<'a> {
    pub(crate) urls: &'a Urls,
    pub(crate) redactor: &'a Redactor,
    pub(crate) role: fastlane_actors::Role,
}

/// A scheduled job as the original's `/status/` lists it: the job without its executions and
/// task id, metadata redacted, its next firing and links.
fn scheduled_job(scheduled: &ScheduledJob, view: &StatusView<'_>) -> Value {
    let job = &scheduled.job;
    let url = view.urls.job(&job.task_id, job.job_id);
    json!({
        "id": job.job_id.to_string(),
        "createdAt": job.created_at.iso(),
        "lastModifiedAt": job.last_modified_at.iso(),
        "image": job.image,
        "command": job.command,
        "scheduled": job.scheduled,
        "executionCount": scheduled.execution_count,
        "requestIPAddress": job.request_ip,
        "metadata": job_metadata(job, view.redactor),
        "nextScheduledAt": iso(job.schedule.as_ref().and_then(|schedule| schedule.next_fire_at)),
        "stopUrl": format!("{url}stop/"),
        "url": url,
        "task": {"id": job.task_id, "url": view.urls.task(&job.task_id)},
    })
}

/// Each Docker host of the node; a blacklisted one is unavailable, draining while it still
/// runs containers and drained once it runs none.
fn host_statuses(node: &NodeStatus) -> Vec<Value> {
    let mut hosts: Vec<Value> = node
        .hosts
        .iter()
        .map(|host| {
            let name = host.endpoint.to_string();
            let blacklisted = node.blacklist.contains(&name);
            let error = if blacklisted {
                Some("server is blacklisted".to_string())
            } else {
                host.error.clone()
            };
            json!({
                "host": host.endpoint.host(),
                "port": host.endpoint.port(),
                "available": host.available && !blacklisted,
                "blacklisted": blacklisted,
                "draining": blacklisted && host.running > 0,
                "drained": blacklisted && host.running == 0,
                "circuit": host.circuit.as_str(),
                "error": error,
                "running": host.running,
            })
        })
        .collect();
    // Available hosts first, as the original.
    hosts.sort_by_key(|host| !host["available"].as_bool().unwrap_or(false));
    hosts
}

fn running_containers(node: &NodeStatus) -> Vec<Value> {
    node.hosts
        .iter()
        .flat_map(|host| {
            host.containers.iter().map(move |id| {
                json!({"host": host.endpoint.host(), "port": host.endpoint.port(), "id": id})
            })
        })
        .collect()
}

/// Each farm with the slots (`farm:{index}`) in use of its `maxRunning`.
fn farm_usage(node: &NodeStatus, farms: &[Farm]) -> Vec<Value> {
    let used = |pool: &str| {
        node.slots
            .iter()
            .find(|(name, _)| name == pool)
            .map_or(0, |(_, used)| *used)
    };
    farms
        .iter()
        .enumerate()
        .map(|(index, farm)| {
            json!({
                "match": farm.pattern,
                "hosts": farm.hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "maxRunning": farm.max_running,
                "running": used(&format!("farm:{index}")),
            })
        })
        .collect()
}

fn dead_letter(dead: &DeadLetter) -> Value {
    json!({
        "id": dead.message.id,
        "taskId": dead.message.task_id,
        "jobId": dead.message.job_id.to_string(),
        "executionId": dead.message.execution_id.to_string(),
        "reason": dead.reason,
        "at": dead.at.iso(),
        "deliveries": dead.deliveries,
    })
}

/// The answer to an enqueue (`POST /tasks/{id}/`, `PUT …/jobs/{id}/`).
pub(crate) fn enqueued(enqueued: &Enqueued, urls: &Urls) -> Value {
    let execution_url = enqueued
        .execution_id
        .map(|execution_id| urls.execution(&enqueued.task_id, enqueued.job_id, execution_id));
    json!({
        "taskId": enqueued.task_id,
        "jobId": enqueued.job_id.to_string(),
        "executionId": enqueued.execution_id.map(|id| id.to_string()),
        "executionUrl": execution_url,
        "queueJobId": enqueued.queue_message_id,
        "jobUrl": urls.job(&enqueued.task_id, enqueued.job_id),
        "taskUrl": urls.task(&enqueued.task_id),
    })
}

/// The answer to a job's `stop` and `retry`: the ids as they were written in the path, the
/// URLs from the parsed ids.
pub(crate) fn job_links(task_id: &str, job: (&str, Uuid), urls: &Urls) -> Value {
    let (job_id, job_uuid) = job;
    json!({
        "taskId": task_id,
        "jobId": job_id,
        "jobUrl": urls.job(task_id, job_uuid),
        "taskUrl": urls.task(task_id),
    })
}

/// The answer to an execution's `stop`: the ids as they were written in the path, the URLs
/// from the parsed ids.
pub(crate) fn execution_links(
    task_id: &str,
    job: (&str, Uuid),
    execution: (&str, Uuid),
    urls: &Urls,
) -> Value {
    let ((job_id, job_uuid), (execution_id, execution_uuid)) = (job, execution);
    json!({
        "task": {"id": task_id, "url": urls.task(task_id)},
        "job": {"id": job_id, "url": urls.job(task_id, job_uuid)},
        "execution": {"id": execution_id, "url": urls.execution(task_id, job_uuid, execution_uuid)},
    })
}

//! Task routes: `GET /tasks/` and `GET /search/` (pages of tasks), `GET /tasks/{task}/` (its
//! jobs), and the enqueue routes `POST /tasks/{task}/` and `PUT /tasks/{task}/jobs/{job}/`.

use crate::gateway::guard::read_body;
use crate::gateway::http::{percent_encode, query_param, request_ip, Failure, HttpResponse};
use crate::gateway::render::{self, Urls};
use crate::gateway::{api_failure, call, ok, GatewaySettings};
use fastlane_actors::messages::{ApiMessage, Idempotency};
use fastlane_actors::ports::Page;
use fastlane_proto::payload::parse_enqueue;
use hyper::body::Incoming;
use hyper::Request;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use uuid::Uuid;

/// `GET /tasks/?page=N`.
pub(crate) async fn list(
    settings: &GatewaySettings,
    urls: &Urls,
    query: Option<&str>,
) -> Result<HttpResponse, Failure> {
    list_tasks(settings, urls, query, None).await
}

/// `GET /search/?query=…&page=N`: tasks whose id has every word of the query.
pub(crate) async fn search(
    settings: &GatewaySettings,
    urls: &Urls,
    query: Option<&str>,
) -> Result<HttpResponse, Failure> {
    let text = query_param(query, "query").filter(|text| !text.trim().is_empty());
    let text =
        text.ok_or_else(|| Failure::invalid("search_tasks", "The query param is required."))?;
    list_tasks(settings, urls, query, Some(text)).await
}

fn page_number(query: Option<&str>) -> Result<u64, Failure> {
    page_param(
        query,
        "get_tasks",
        "Tasks pagination page param should be a positive integer.",
    )
}

/// The `page` query parameter: 1 when absent, else an integer from 1 to 2^40 (a 400 with
/// `message` otherwise).
fn page_param(
    query: Option<&str>,
    operation: &'static str,
    message: &'static str,
) -> Result<u64, Failure> {
    match query_param(query, "page") {
        None => Ok(1),
        Some(text) => text
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|page| *page >= 1 && *page <= 1 << 40)
            .ok_or_else(|| Failure::invalid(operation, message)),
    }
}

/// A page of all tasks, or of those `search` finds; a page past the last one is 404.
async fn list_tasks(
    settings: &GatewaySettings,
    urls: &Urls,
    query: Option<&str>,
    search: Option<String>,
) -> Result<HttpResponse, Failure> {
    let number = page_number(query)?;
    let page = Page {
        number,
        per_page: settings.per_page,
    };
    let (operation, paged) = match &search {
        None => (
            "get_tasks",
            call(settings, "get_tasks", |reply| ApiMessage::ListTasks {
                page,
                reply,
            })
            .await?,
        ),
        Some(text) => {
            let words = fastlane_proto::search::words(text);
            (
                "search_tasks",
                call(settings, "search_tasks", |reply| ApiMessage::SearchTasks {
                    words,
                    page,
                    reply,
                })
                .await?,
            )
        }
    };
    let paged = paged.map_err(api_failure(operation))?;
    if number > 1 && paged.items.is_empty() {
        return Err(Failure::not_found(
            operation,
            format!("Page {number} does not exist."),
        ));
    }
    let body = render::task_page(
        &paged,
        number,
        settings.per_page,
        urls,
        |page| match &search {
            None => format!("{}/tasks/?page={page}", urls.base),
            Some(text) => format!(
                "{}/search/?query={}&page={page}",
                urls.base,
                percent_encode(text)
            ),
        },
    );
    ok(settings, &body)
}

/// `GET /tasks/{task}/?page=N`: one page of the task's jobs (`TASK_JOBS_PER_PAGE`), newest
/// change first, with the paging fields of `/tasks/`; a page past the last one is 404.
pub(crate) async fn details(
    settings: &GatewaySettings,
    urls: &Urls,
    task_id: &str,
    query: Option<&str>,
) -> Result<HttpResponse, Failure> {
    const OPERATION: &str = "get_task";
    let number = page_param(
        query,
        OPERATION,
        "Task jobs pagination page param should be a positive integer.",
    )?;
    let page = Page {
        number,
        per_page: settings.task_jobs_per_page,
    };
    let owned = task_id.to_string();
    let found = call(settings, OPERATION, |reply| ApiMessage::GetTask {
        task_id: owned,
        page,
        reply,
    })
    .await?
    .map_err(api_failure(OPERATION))?;
    let (_, jobs) = found.ok_or_else(|| Failure::not_found(OPERATION, "Task not found."))?;
    if number > 1 && jobs.items.is_empty() {
        return Err(Failure::not_found(
            OPERATION,
            format!("Page {number} does not exist."),
        ));
    }
    let task_url = urls.task(task_id);
    ok(
        settings,
        &render::task_details(task_id, &jobs, number, page.per_page, urls, |page| {
            format!("{task_url}?page={page}")
        }),
    )
}

/// `POST /tasks/{task}/` (`job_id` `None`: a new job) and `PUT /tasks/{task}/jobs/{job}/`.
/// The ids are checked before the body is read, the body completely before anything is written.
pub(crate) async fn enqueue(
    settings: &GatewaySettings,
    urls: &Urls,
    request: Request<Incoming>,
    peer: SocketAddr,
    task_id: &str,
    job_id: Option<&str>,
) -> Result<HttpResponse, Failure> {
    const OPERATION: &str = "enqueue_job";
    let task_id = valid_task_id(task_id, OPERATION)?;
    let job_id = job_id
        .map(|job_id| {
            Uuid::parse_str(job_id).map_err(|_| {
                Failure::invalid(
                    OPERATION,
                    format!("The job_id {job_id} is not a valid UUID4. All job IDs must be UUID4."),
                )
            })
        })
        .transpose()?;
    let ip = request_ip(request.headers(), peer);
    // Only a POST takes one: a PUT names its job, so repeating it is harmless already.
    let key = match request.headers().get("idempotency-key") {
        Some(value) if job_id.is_none() => Some(
            value
                .to_str()
                .ok()
                .filter(|key| fastlane_proto::idempotency::valid_key(key))
                .ok_or_else(|| {
                    Failure::invalid(
                        OPERATION,
                        format!(
                            "The Idempotency-Key header must be 1 to {} visible ASCII characters.",
                            fastlane_proto::idempotency::MAX_KEY_LENGTH
                        ),
                    )
                })?
                .to_string(),
        ),
        _ => None,
    };
    let body = read_body(settings, request).await?;
    let parsed = parse_enqueue(&body).map_err(|error| Failure::invalid(OPERATION, error.0))?;
    let idempotency = key.map(|key| Idempotency {
        key,
        body_sha256: Sha256::digest(&body)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect(),
        ttl: settings.idempotency_ttl,
    });
    let task_id = task_id.to_string();
    let enqueued = call(settings, OPERATION, |reply| ApiMessage::Enqueue {
        task_id,
        job_id,
        request: Box::new(parsed),
        request_ip: Some(ip),
        idempotency,
        reply,
    })
    .await?
    .map_err(api_failure(OPERATION))?;
    ok(settings, &render::enqueued(&enqueued, urls))
}

fn valid_task_id<'a>(task_id: &'a str, operation: &'static str) -> Result<&'a str, Failure> {
    if task_id.chars().count() > 200 || task_id.chars().any(char::is_control) {
        return Err(Failure::invalid(
            operation,
            "The task id must be at most 200 characters with no control characters.",
        ));
    }
    Ok(task_id)
}

/// `DELETE /tasks/{task}/`: deletes the jobs of the task as `DELETE …/jobs/{job}/` does, for
/// a bounded time; the task goes with its last job (`deleted: true`), else `jobsLeft` says
/// how many a next call will delete. A call after the task is gone is 404.
pub(crate) async fn delete(
    settings: &GatewaySettings,
    urls: &Urls,
    task_id: &str,
) -> Result<HttpResponse, Failure> {
    const OPERATION: &str = "delete_task";
    let not_found = || Failure::not_found(OPERATION, "Task not found.");
    let owned = valid_task_id(task_id, OPERATION)?.to_string();
    let deletion = call(settings, OPERATION, |reply| ApiMessage::DeleteTask {
        task_id: owned,
        reply,
    })
    .await?
    .map_err(api_failure(OPERATION))?
    .ok_or_else(not_found)?;
    ok(
        settings,
        &serde_json::json!({
            "task": {"id": task_id, "url": urls.task(task_id)},
            "deleted": deletion.left == 0,
            "jobsDeleted": deletion.deleted,
            "jobsLeft": deletion.left,
        }),
    )
}
